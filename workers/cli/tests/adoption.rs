//! A database migrated by the old Python runner is adopted in place on first use.

mod common;

use common::{Dir, TestDb};
use stepmigrate_core::migration::checksum;

const A: &str = "CREATE TABLE a (id int);\n";
const B: &str = "CREATE TABLE b (id int);\n";
const C: &str = "CREATE TABLE c (id int);\n";

/// The old runner's table, as its README describes it.
async fn old_runner_database() -> TestDb {
    let db = TestDb::new().await;
    db.exec(&format!(
        "CREATE TABLE schema_migrations (
             version VARCHAR(255) PRIMARY KEY,
             name VARCHAR(255) NOT NULL,
             applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
             checksum VARCHAR(64),
             execution_time_ms INTEGER,
             success BOOLEAN DEFAULT TRUE
         );
         INSERT INTO schema_migrations VALUES
             ('000', '000_create_schema_migrations', '2026-01-05 10:00:00', NULL, 3, true),
             ('001', '001_a', '2026-01-05 10:00:01', '{}', 12, true),
             ('002', '002_b', '2026-02-01 09:30:00', '{}', 7, false);
         CREATE TABLE a (id int);",
        checksum(A.as_bytes()),
        checksum(B.as_bytes())
    ))
    .await;
    db
}

#[tokio::test]
async fn old_runner_table_is_adopted_without_re_running_or_losing_a_row() {
    let db = old_runner_database().await;
    let dir = Dir::new(&[("001_a.sql", A), ("002_b.sql", B), ("003_c.sql", C)]);

    // Read-only commands read the old table as it is, and change nothing.
    let status = db.cli(dir.path(), &["--json", "status"]);
    status.assert_code(0);
    let doc = status.json();
    assert_eq!(doc["ledger"], "legacy");
    assert_eq!(doc["migrations"][0]["state"], "applied");
    assert_eq!(doc["migrations"][1]["state"], "failed");
    assert!(!db.table_exists("schema_migration_events").await);

    // 001 would fail if it ran again (table a exists): it must not.
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(0);
    assert_eq!(
        run.json()["applied"],
        2,
        "the failed 002 is retried, 003 applied"
    );
    assert_eq!(db.applied().await, vec!["001", "002", "003"]);

    // The history became events, with the original times; the old row of 001 is intact.
    let adopted = db
        .query("SELECT concat_ws('|', version, kind, to_char(occurred_at AT TIME ZONE current_setting('TimeZone'), 'YYYY-MM-DD HH24:MI:SS')) FROM schema_migration_events WHERE run_id = 'adopted' ORDER BY id")
        .await;
    assert_eq!(
        adopted,
        vec![
            "000|applied|2026-01-05 10:00:00",
            "001|applied|2026-01-05 10:00:01",
            "002|failed|2026-02-01 09:30:00"
        ]
    );
    let row = db
        .query("SELECT concat_ws('|', name, to_char(applied_at AT TIME ZONE current_setting('TimeZone'), 'YYYY-MM-DD HH24:MI:SS'), execution_time_ms, success::text) FROM schema_migrations WHERE version = '001'")
        .await;
    assert_eq!(row[0], "001_a|2026-01-05 10:00:01|12|true");
    let types = db
        .query("SELECT string_agg(column_name || ':' || data_type, ',' ORDER BY column_name) FROM information_schema.columns WHERE table_name = 'schema_migrations' AND column_name IN ('applied_at', 'execution_time_ms')")
        .await;
    assert_eq!(
        types[0],
        "applied_at:timestamp with time zone,execution_time_ms:bigint"
    );
    // The seed's query still works, and the ledger is consistent.
    assert_eq!(
        db.query("SELECT version::text FROM schema_migrations ORDER BY applied_at DESC LIMIT 1")
            .await
            .len(),
        1
    );
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
    // Adoption happens once.
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert_eq!(
        db.query("SELECT count(*)::text FROM schema_migration_events WHERE run_id = 'adopted'")
            .await[0],
        "3"
    );
}

#[tokio::test]
async fn concurrent_first_runs_adopt_once() {
    let db = old_runner_database().await;
    let dir = Dir::new(&[("001_a.sql", A), ("002_b.sql", B), ("003_c.sql", C)]);
    let children: Vec<_> = (0..4).map(|_| db.spawn_cli(dir.path(), &["up"])).collect();
    for c in children {
        common::Run::from(c.wait_with_output().unwrap()).assert_code(0);
    }
    assert_eq!(
        db.query("SELECT count(*)::text FROM schema_migration_events WHERE run_id = 'adopted'")
            .await[0],
        "3"
    );
    assert_eq!(db.applied().await, vec!["001", "002", "003"]);
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
}

#[tokio::test]
async fn drift_against_the_old_runner_checksums_is_detected() {
    let db = old_runner_database().await;
    let dir = Dir::new(&[
        ("001_a.sql", "CREATE TABLE a (id bigint);\n"),
        ("002_b.sql", B),
    ]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(3);
    assert_eq!(
        run.json()["error"]["details"]["drift"][0]["recorded"],
        checksum(A.as_bytes())
    );
    assert!(!db.table_exists("b").await);
}

/// An old table with a key of its own that holds a version more than once (a failed try,
/// then a success): not adoptable as it is. The error names the versions and what to do,
/// and nothing changes.
#[tokio::test]
async fn an_old_table_with_a_version_twice_is_refused_naming_it() {
    let db = TestDb::new().await;
    db.exec(&format!(
        "CREATE TABLE schema_migrations (id SERIAL PRIMARY KEY, version VARCHAR(255) NOT NULL, name VARCHAR(255) NOT NULL,
             applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, checksum VARCHAR(64), execution_time_ms INTEGER, success BOOLEAN DEFAULT TRUE);
         INSERT INTO schema_migrations (version, name, checksum, success) VALUES
             ('001', '001_a', '{}', true), ('002', '002_b', '{}', true), ('002', '002_b', 'x', false);
         CREATE TABLE a (id int); CREATE TABLE b (id int);",
        checksum(A.as_bytes()),
        checksum(B.as_bytes())
    ))
    .await;
    let dir = Dir::new(&[("001_a.sql", A), ("002_b.sql", B)]);
    // Read as it is: the try that succeeded is the state, whatever row came last.
    let status = db.cli(dir.path(), &["--json", "status"]).json();
    assert_eq!(status["migrations"][1]["state"], "applied", "{status}");
    let run = db.cli(dir.path(), &["up"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("version(s) 002 more than once")
            && run.stderr.contains("nothing was changed"),
        "{}",
        run.stderr
    );
    assert!(!db.table_exists("schema_migration_events").await);
}

/// A checksum the old runner wrote in upper-case hex is the same checksum: no drift.
#[tokio::test]
async fn an_upper_case_checksum_is_not_drift() {
    let db = TestDb::new().await;
    db.exec(&format!(
        "CREATE TABLE schema_migrations (version VARCHAR(255) PRIMARY KEY, name VARCHAR(255) NOT NULL,
             applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, checksum VARCHAR(64), execution_time_ms INTEGER, success BOOLEAN DEFAULT TRUE);
         INSERT INTO schema_migrations VALUES ('001', '001_a', now(), upper('{}'), 5, true);
         CREATE TABLE a (id int);",
        checksum(A.as_bytes())
    ))
    .await;
    let dir = Dir::new(&[("001_a.sql", A), ("002_b.sql", B)]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert_eq!(db.applied().await, ["001", "002"]);
}
