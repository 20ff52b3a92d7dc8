//! `stepmigrate` against a real PostgreSQL: applying, failing, drift, the ledger and its
//! recipes. Each test has a fresh database.

mod common;

use common::{numbered_tables, settings, Dir, TestDb};
use stepmigrate_core::apply::Outcome;
use stepmigrate_core::migration::checksum;
use stepmigrate_core::Error;

#[tokio::test]
async fn applies_everything_in_order_then_nothing() {
    let db = TestDb::new().await;
    let dir = numbered_tables(5);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(doc["applied"], 5);
    assert_eq!(db.applied().await, vec!["001", "002", "003", "004", "005"]);
    for i in 1..=5 {
        assert!(db.table_exists(&format!("t{i}")).await);
    }
    // The seed's columns, as its README's query shows them.
    let row = db
        .query("SELECT concat_ws('|', version, name, checksum, success::text, (execution_time_ms IS NOT NULL)::text, (applied_at IS NOT NULL)::text) FROM schema_migrations WHERE version = '002'")
        .await;
    assert_eq!(
        row[0],
        format!(
            "002|002_create_t2|{}|true|true|true",
            checksum(b"CREATE TABLE t2 (id int);\n")
        )
    );
    // Applied in version order, each once.
    let order = db.query("SELECT string_agg(version, ',' ORDER BY id) FROM schema_migration_events WHERE kind = 'applied' AND version <> '000'").await;
    assert_eq!(order[0], "001,002,003,004,005");

    let again = db.cli(dir.path(), &["--json", "up"]);
    again.assert_code(0);
    assert_eq!(again.json()["applied"], 0);
    assert_eq!(
        db.query("SELECT count(*)::text FROM schema_migration_events WHERE kind = 'applied'")
            .await[0],
        "6"
    );
}

#[tokio::test]
async fn plan_and_dry_run_apply_nothing() {
    let db = TestDb::new().await;
    let dir = numbered_tables(3);
    for args in [&["--json", "plan"][..], &["--json", "up", "--dry-run"][..]] {
        let run = db.cli(dir.path(), args);
        run.assert_code(0);
        let pending: Vec<String> = run.json()["pending"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            pending,
            vec!["001_create_t1", "002_create_t2", "003_create_t3"]
        );
    }
    assert!(
        !db.table_exists("schema_migrations").await,
        "a dry run must not even create the ledger"
    );
    assert!(!db.table_exists("t1").await);
}

#[tokio::test]
async fn up_to_a_target_stops_there() {
    let db = TestDb::new().await;
    let dir = numbered_tables(4);
    db.cli(dir.path(), &["up", "--to", "002"]).assert_code(0);
    assert_eq!(db.applied().await, vec!["001", "002"]);
    let run = db.cli(dir.path(), &["up", "--to", "009"]);
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("target version `009` is not in the migration set"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_failure_stops_the_run_rolls_back_and_is_recorded() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_ok.sql", "CREATE TABLE ok (id int);"),
        ("002_broken.sql", "-- Migration: broken\nCREATE TABLE half (id int);\nINSERT INTO ok VALUES (1);\nINSERT INTO missing_table VALUES (1);\n"),
        ("003_after.sql", "CREATE TABLE after (id int);"),
    ]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(1);
    let doc = run.json();
    assert_eq!(doc["error"]["name"], "SqlFailed");
    let failure = &doc["error"]["details"]["migration"];
    assert_eq!(failure["name"], "002_broken");
    assert_eq!(failure["error"]["sqlstate"], "42P01");
    assert_eq!(failure["error"]["line"], 4);
    assert_eq!(
        failure["error"]["statement"],
        "INSERT INTO missing_table VALUES (1)"
    );

    // Atomic: nothing of 002 remains; nothing after it ran.
    assert!(!db.table_exists("half").await);
    assert_eq!(db.query("SELECT count(*)::text FROM ok").await[0], "0");
    assert!(!db.table_exists("after").await);
    assert_eq!(db.applied().await, vec!["001"]);
    let row = db.query("SELECT concat_ws('|', success::text, dirty::text, error) FROM schema_migrations WHERE version = '002'").await;
    assert_eq!(
        row[0],
        "false|false|relation \"missing_table\" does not exist"
    );
    let event = db.query("SELECT error->>'sqlstate' FROM schema_migration_events WHERE version = '002' AND kind = 'failed'").await;
    assert_eq!(event, vec!["42P01"]);

    // Fixed, it is retried and the run goes on.
    dir.write("002_broken.sql", "CREATE TABLE half (id int);");
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert_eq!(db.applied().await, vec!["001", "002", "003"]);
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
}

#[tokio::test]
async fn syntax_errors_point_at_the_line() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[(
        "001_typo.sql",
        "-- a comment\nCREATE TABLE a (id int);\n\nCREAT TABLE b (id int);\n",
    )]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(1);
    let error = &run.json()["error"]["details"]["migration"]["error"];
    assert_eq!(error["sqlstate"], "42601");
    assert_eq!(error["line"], 4);
    assert_eq!(error["statement"], "CREAT TABLE b (id int)");
}

#[tokio::test]
async fn drift_stops_everything_and_names_both_checksums() {
    let db = TestDb::new().await;
    let dir = numbered_tables(2);
    db.cli(dir.path(), &["up"]).assert_code(0);
    let old = checksum(b"CREATE TABLE t1 (id int);\n");
    dir.write("001_create_t1.sql", "CREATE TABLE t1 (id bigint);\n");
    dir.write("003_create_t3.sql", "CREATE TABLE t3 (id int);\n");
    let new = checksum(b"CREATE TABLE t1 (id bigint);\n");
    for command in ["up", "plan", "status"] {
        let run = db.cli(dir.path(), &[command]);
        run.assert_code(3);
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(
            all.contains("001_create_t1.sql") && all.contains(&old) && all.contains(&new),
            "{command}: {all}"
        );
    }
    let json = db.cli(dir.path(), &["--json", "up"]);
    assert_eq!(json.json()["error"]["name"], "ChecksumMismatch");
    assert!(!db.table_exists("t3").await, "nothing is applied on drift");
}

#[tokio::test]
async fn line_ending_changes_are_a_warning_not_drift() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[(
        "001_a.sql",
        "CREATE TABLE a (id int);\nCREATE TABLE b (id int);\n",
    )]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    dir.write_bytes(
        "001_a.sql",
        b"\xEF\xBB\xBFCREATE TABLE a (id int);\r\nCREATE TABLE b (id int);\r\n",
    );
    dir.write("002_c.sql", "CREATE TABLE c (id int);");
    let run = db.cli(dir.path(), &["up"]);
    run.assert_code(0);
    assert!(run.stderr.contains("only line endings"), "{}", run.stderr);
    assert_eq!(db.applied().await, vec!["001", "002"]);
}

#[tokio::test]
async fn applied_migrations_unknown_to_the_files_are_reported_not_an_error() {
    let db = TestDb::new().await;
    let dir = numbered_tables(3);
    db.cli(dir.path(), &["up"]).assert_code(0);
    // Older code, after a CloudFormation rollback, knows only 001-002.
    dir.remove("003_create_t3.sql");
    let status = db.cli(dir.path(), &["--json", "status"]);
    status.assert_code(0);
    let doc = status.json();
    assert_eq!(doc["summary"]["unknown_applied"], 1);
    assert_eq!(doc["migrations"][2]["state"], "unknown_applied");
    db.cli(dir.path(), &["up"]).assert_code(0);
    db.cli(dir.path(), &["plan"]).assert_code(0);
}

#[tokio::test]
async fn deleting_a_row_re_runs_the_migration_and_is_an_event() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_a.sql", "CREATE TABLE a (id int);"),
        ("002_seed.sql", "INSERT INTO a VALUES (1);"),
        ("003_b.sql", "CREATE TABLE b (id int);"),
    ]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    // The seed README's recipe.
    db.exec("DELETE FROM schema_migrations WHERE version = '002'")
        .await;
    let events = db
        .query("SELECT kind FROM schema_migration_events WHERE version = '002' ORDER BY id")
        .await;
    assert_eq!(events, vec!["applied", "deleted"]);
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert_eq!(
        db.query("SELECT count(*)::text FROM a").await[0],
        "2",
        "002 ran again"
    );
    assert_eq!(db.applied().await, vec!["001", "002", "003"]);
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
}

#[tokio::test]
async fn ledger_check_finds_tampering_and_rebuild_restores() {
    let db = TestDb::new().await;
    let dir = numbered_tables(3);
    db.cli(dir.path(), &["up"]).assert_code(0);
    db.tamper(
        "UPDATE schema_migrations SET checksum = 'edited', success = false WHERE version = '002'",
    )
    .await;
    let check = db.cli(dir.path(), &["--json", "ledger", "check"]);
    check.assert_code(7);
    let doc = check.json();
    assert_eq!(doc["error"]["name"], "LedgerInconsistent");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("version 002"),
        "{doc}"
    );
    db.cli(dir.path(), &["ledger", "rebuild"]).assert_code(0);
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
    assert_eq!(
        db.query("SELECT checksum FROM schema_migrations WHERE version = '002'")
            .await[0],
        checksum(b"CREATE TABLE t2 (id int);\n")
    );
    // The event log is append-only.
    let mut c = db.conn().await;
    let err = sqlx::raw_sql("DELETE FROM schema_migration_events")
        .execute(&mut c)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
}

#[tokio::test]
async fn a_migration_blocked_by_a_lock_fails_within_its_lock_timeout() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_users.sql", "CREATE TABLE users (id int);"),
        ("002_alter.sql", "ALTER TABLE users ADD COLUMN email text;"),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);

    let mut holder = db.conn().await;
    sqlx::raw_sql("BEGIN; LOCK TABLE users IN ACCESS SHARE MODE;")
        .execute(&mut holder)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let run = db.cli(
        dir.path(),
        &[
            "--json",
            "up",
            "--lock-timeout",
            "300ms",
            "--lock-retries",
            "0",
        ],
    );
    let elapsed = started.elapsed();
    run.assert_code(6);
    let doc = run.json();
    assert_eq!(doc["error"]["name"], "LockTimeout");
    assert_eq!(
        doc["error"]["details"]["migration"]["error"]["sqlstate"],
        "55P03"
    );
    assert!(
        elapsed < std::time::Duration::from_secs(3),
        "took {elapsed:?}"
    );
    assert_eq!(db.query("SELECT count(*)::text FROM information_schema.columns WHERE table_name = 'users' AND column_name = 'email'").await[0], "0");
    assert_eq!(db.applied().await, vec!["001"]);

    // With retries, it succeeds once the lock is released.
    let child = db.spawn_cli(
        dir.path(),
        &["up", "--lock-timeout", "200ms", "--lock-retries", "5"],
    );
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    sqlx::raw_sql("COMMIT").execute(&mut holder).await.unwrap();
    let out = common::Run::from(child.wait_with_output().unwrap());
    out.assert_code(0);
    assert!(
        out.stderr.contains("lock_timeout"),
        "the retry is shown: {}",
        out.stderr
    );
    assert_eq!(db.applied().await, vec!["001", "002"]);
}

#[tokio::test]
async fn unreachable_database_fails_fast_naming_the_host_without_the_password() {
    // A socket that accepts connections but never speaks PostgreSQL.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = numbered_tables(1);
    let url = format!("postgres://app:s3cret-pw@127.0.0.1:{port}/tutor");
    let started = std::time::Instant::now();
    let run = common::run_cli(&url, dir.path(), &["up", "--connect-timeout", "1s"]);
    run.assert_code(5);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(
        run.stderr.contains(&format!("127.0.0.1:{port}/tutor")),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("s3cret") && !run.stdout.contains("s3cret"),
        "{}",
        run.stderr
    );

    // Nothing listening at all: refused at once, not after the connect timeout.
    drop(listener);
    let started = std::time::Instant::now();
    let run = common::run_cli(&url, dir.path(), &["--json", "status"]);
    run.assert_code(5);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        run.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{}",
        run.stdout
    );
    assert_eq!(run.json()["error"]["name"], "ConnectionFailed");
    assert!(!run.stdout.contains("s3cret"));
}

#[tokio::test]
async fn apply_one_rechecks_under_the_lock() {
    let db = TestDb::new().await;
    let dir = numbered_tables(3);
    let m = db.migrator(dir.path(), settings());
    let sum = |i: u32| checksum(format!("CREATE TABLE t{i} (id int);\n").as_bytes());

    let err = m
        .apply_one(&"002".parse().unwrap(), &sum(2), "run-1")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("002_create_t2 cannot run before 001_create_t1"),
        "{err}"
    );
    let err = m
        .apply_one(&"001".parse().unwrap(), &sum(9), "run-1")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");

    let first = m
        .apply_one(&"001".parse().unwrap(), &sum(1), "run-1")
        .await
        .unwrap();
    assert!(
        matches!(first.outcome, Outcome::Applied { .. }),
        "{first:?}"
    );
    let again = m
        .apply_one(&"001".parse().unwrap(), &sum(1), "run-2")
        .await
        .unwrap();
    assert_eq!(again.outcome, Outcome::AlreadyApplied);
    assert_eq!(db.applied().await, vec!["001"]);
}

#[tokio::test]
async fn new_writes_the_next_numbered_file() {
    let dir = numbered_tables(9);
    let run = common::run_cli(
        "postgres://unused@127.0.0.1:1/x",
        dir.path(),
        &["new", "add_user_email"],
    );
    run.assert_code(0);
    assert!(
        dir.file("010_add_user_email.sql").exists(),
        "{}",
        run.stdout
    );
    let bad = common::run_cli(
        "postgres://unused@127.0.0.1:1/x",
        dir.path(),
        &["new", "Add-Email"],
    );
    bad.assert_code(3); // the empty 010 makes the set invalid until it is written
    dir.write("010_add_user_email.sql", "SELECT 1;");
    let bad = common::run_cli(
        "postgres://unused@127.0.0.1:1/x",
        dir.path(),
        &["new", "Add-Email"],
    );
    bad.assert_code(2);
    assert!(
        bad.stderr.contains("malformed description"),
        "{}",
        bad.stderr
    );
    // `x.down` would write a down file with no migration, and break the whole set.
    let bad = common::run_cli(
        "postgres://unused@127.0.0.1:1/x",
        dir.path(),
        &["new", "x.down"],
    );
    bad.assert_code(2);
    assert!(
        bad.stderr.contains("down file with no migration"),
        "{}",
        bad.stderr
    );
    assert!(!dir.file("011_x.down.sql").exists());
}

/// `status` and `plan` say what `up` does: a stale `migrations.sum` is refused by `status` too
/// (`up`'s exit code), and a migration made pending again on purpose is a re-run, not "out of
/// order".
#[tokio::test]
async fn status_and_plan_say_what_up_does() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_a.sql", "CREATE TABLE a (id int);\n"),
        ("002_b.sql", "CREATE TABLE b (id int);\n"),
    ]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    db.exec("DELETE FROM schema_migrations WHERE version = '001'; DROP TABLE a")
        .await;
    let plan = db.cli(dir.path(), &["plan"]);
    plan.assert_code(0);
    assert!(
        plan.stdout.contains("001_a  (re-run)") && !plan.stdout.contains("out of order"),
        "{}",
        plan.stdout
    );
    db.cli(dir.path(), &["hash"]).assert_code(0);
    dir.write("003_c.sql", "CREATE TABLE c (id int);\n");
    let up = db.cli(dir.path(), &["up", "--dry-run"]);
    assert_ne!(up.code, 0);
    let status = db.cli(dir.path(), &["status"]);
    assert_eq!(status.code, up.code, "{}{}", status.stdout, status.stderr);
    // Its warning keeps its own line breaks (it printed `\n`).
    assert!(!status.stderr.contains("\\n"), "{}", status.stderr);
}

/// Two first runs at once, set to different ledger schemas, make one ledger and apply each
/// migration once: the other is refused as a ledger elsewhere would refuse it.
#[tokio::test]
async fn concurrent_first_runs_with_different_ledger_schemas_make_one_ledger() {
    for _ in 0..3 {
        let db = TestDb::new().await;
        let dir = Dir::new(&[(
            "001_a.sql",
            "CREATE TABLE IF NOT EXISTS t (id int);\nINSERT INTO t VALUES (1);\n",
        )]);
        let mut a = common::cli_command(&db.url, dir.path(), &["up"]);
        let mut b = common::cli_command(&db.url, dir.path(), &["up"]);
        b.env("STEPMIGRATE_LEDGER_SCHEMA", "lb");
        let quiet = |c: &mut std::process::Command| {
            c.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        };
        let (mut a, mut b) = (quiet(&mut a), quiet(&mut b));
        let codes = (a.wait().unwrap().code(), b.wait().unwrap().code());
        assert!(codes.0 == Some(0) || codes.1 == Some(0), "{codes:?}");
        assert_eq!(db.query("SELECT count(*)::text FROM t").await, ["1"]);
        assert_eq!(
            db.query(
                "SELECT count(*)::text FROM pg_class WHERE relname = 'schema_migration_events'"
            )
            .await,
            ["1"]
        );
    }
}

/// While another runner applies a `no-transaction` migration, `plan` waits for its turn to
/// end, as `up` does, rather than call the migration dirty (exit 4).
#[tokio::test]
async fn plan_waits_for_a_no_transaction_migration_at_work() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_a.sql", "CREATE TABLE t1 (id int);\n"),
        (
            "002_idx.sql",
            "-- stepmigrate: no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i1 ON t1 (id);\nSELECT pg_sleep(1.5);\n",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    let up = db.spawn_cli(dir.path(), &["up"]);
    db.wait_for_active_query("pg_sleep(1.5)").await;
    let plan = db.cli(dir.path(), &["plan"]);
    assert!(up.wait_with_output().unwrap().status.success());
    plan.assert_code(0);
    assert!(plan.stdout.contains("up to date"), "{}", plan.stdout);
}
