//! Bad input gets a clear error naming the file (and line), and nothing is applied.

mod common;

use common::{Dir, TestDb};

const GOOD: (&str, &str) = ("001_good.sql", "CREATE TABLE good (id int);");

async fn assert_rejected(files: &[(&str, &[u8])], needle: &str) {
    let db = TestDb::new().await;
    let dir = Dir::new(&[GOOD]);
    for (name, bytes) in files {
        dir.write_bytes(name, bytes);
    }
    for command in ["up", "plan", "status"] {
        let run = db.cli(dir.path(), &[command]);
        run.assert_code(3);
        assert!(
            run.stderr.contains(needle),
            "{command}: expected {needle:?} in:\n{}",
            run.stderr
        );
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
    let json = db.cli(dir.path(), &["--json", "up"]);
    assert_eq!(json.json()["error"]["name"], "InvalidMigrationSet");
    assert!(!db.table_exists("good").await, "nothing applied");
    assert!(
        !db.table_exists("schema_migrations").await,
        "not even the ledger"
    );
}

#[tokio::test]
async fn malformed_names() {
    assert_rejected(
        &[("002-add-thing.sql", b"SELECT 1")],
        "002-add-thing.sql: malformed",
    )
    .await;
    assert_rejected(
        &[("02_short.sql", b"SELECT 1")],
        "02_short.sql: malformed version `02`",
    )
    .await;
    assert_rejected(
        &[("002_CamelCase.sql", b"SELECT 1")],
        "002_CamelCase.sql: malformed description",
    )
    .await;
}

#[tokio::test]
async fn duplicate_versions_also_with_other_padding() {
    assert_rejected(
        &[("002_a.sql", b"SELECT 1"), ("002_b.sql", b"SELECT 1")],
        "duplicate version 2",
    )
    .await;
    assert_rejected(
        &[
            ("004_a.sql", b"SELECT 1"),
            ("0004_b.sql", b"SELECT 1"),
            ("002_x.sql", b"SELECT 1"),
            ("003_y.sql", b"SELECT 1"),
        ],
        "0004_b.sql: duplicate version 4",
    )
    .await;
}

#[tokio::test]
async fn gaps() {
    assert_rejected(
        &[("003_c.sql", b"SELECT 1")],
        "003_c.sql: gap in the sequence: version 2 is missing",
    )
    .await;
}

#[tokio::test]
async fn reserved_zero() {
    assert_rejected(
        &[("000_mine.sql", b"SELECT 1")],
        "000_mine.sql: version 000 is reserved",
    )
    .await;
}

#[tokio::test]
async fn not_utf8() {
    assert_rejected(
        &[("002_latin1.sql", b"-- caf\xe9\nSELECT 1")],
        "002_latin1.sql:1: the file is not valid UTF-8",
    )
    .await;
}

#[tokio::test]
async fn empty_files() {
    assert_rejected(
        &[("002_empty.sql", b"")],
        "002_empty.sql: the migration is empty",
    )
    .await;
    assert_rejected(
        &[("002_comments.sql", b"-- TODO\n/* later */\n")],
        "002_comments.sql: the migration is empty",
    )
    .await;
}

#[tokio::test]
async fn unknown_directives() {
    assert_rejected(
        &[("002_d.sql", b"-- stepmigrate: no-transactions\nSELECT 1")],
        "002_d.sql:1: unknown directive `no-transactions`",
    )
    .await;
    assert_rejected(
        &[(
            "002_d.sql",
            b"-- stepmigrate: lock_timeout = soon\nSELECT 1",
        )],
        "002_d.sql:1: lock_timeout: `soon` is not a duration",
    )
    .await;
}

#[tokio::test]
async fn every_problem_is_reported_at_once() {
    assert_rejected(
        &[
            ("002_a.sql", b""),
            ("003_b.sql", b"-- stepmigrate: bogus\nSELECT 1"),
            ("005_c.sql", b"SELECT 1"),
        ],
        "",
    )
    .await;
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        GOOD,
        ("002_a.sql", ""),
        ("003_b.sql", "-- stepmigrate: bogus\nSELECT 1"),
        ("005_c.sql", "SELECT 1"),
    ]);
    let run = db.cli(dir.path(), &["--json", "plan"]);
    let problems = run.json()["error"]["details"]["problems"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(problems, 3, "{}", run.stdout);
}

#[tokio::test]
async fn statements_that_cannot_run_in_a_transaction() {
    assert_rejected(
        &[("002_i.sql", b"CREATE INDEX CONCURRENTLY i ON good (id);")],
        "002_i.sql:1: an index built or dropped CONCURRENTLY cannot run inside a transaction block",
    )
    .await;
    assert_rejected(
        &[("002_c.sql", b"CREATE TABLE x (id int);\nCOMMIT;")],
        "002_c.sql:2: `COMMIT` ends or starts a transaction",
    )
    .await;
}

#[tokio::test]
async fn bad_settings_name_the_variable() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[GOOD]);
    let run = common::Run::from(
        common::cli_command(&db.url, dir.path(), &["up"])
            .env("STEPMIGRATE_LOCK_TIMEOUT", "fast")
            .output()
            .unwrap(),
    );
    run.assert_code(2);
    assert!(
        run.stderr.contains("STEPMIGRATE_LOCK_TIMEOUT"),
        "{}",
        run.stderr
    );
    let run = common::Run::from(
        common::cli_command("", dir.path(), &["up"])
            .env_remove("DATABASE_URL")
            .output()
            .unwrap(),
    );
    run.assert_code(2);
    assert!(run.stderr.contains("DATABASE_URL"), "{}", run.stderr);
    let run = common::run_cli("postgres://u:pw@host:99999/db", dir.path(), &["up"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("DATABASE_URL") && !run.stderr.contains("pw@"),
        "{}",
        run.stderr
    );
    assert!(!db.table_exists("good").await);
}

#[tokio::test]
async fn missing_directory() {
    let run = common::run_cli(
        "postgres://u@127.0.0.1/db",
        std::path::Path::new("/nonexistent/migrations"),
        &["plan"],
    );
    run.assert_code(3);
    assert!(
        run.stderr.contains("/nonexistent/migrations"),
        "{}",
        run.stderr
    );
}

/// `resolve VERSION` with neither finding names both: the usage must not steer an operator
/// towards recording a dirty migration applied.
#[test]
fn resolve_without_a_finding_names_both() {
    let run = common::run_cli(
        "postgres://u@127.0.0.1/db",
        std::path::Path::new("/nonexistent/migrations"),
        &["resolve", "002"],
    );
    run.assert_code(2);
    assert!(
        run.stderr.contains("--applied") && run.stderr.contains("--not-applied"),
        "{}",
        run.stderr
    );
}

/// A malformed `--database-url` is named as the flag it came from (the variable is named
/// when the value is the variable's), once, and its password never shows.
#[test]
fn a_bad_database_url_flag_is_named_as_the_flag() {
    let dir = Dir::new(&[GOOD]);
    let run = common::Run::from(
        common::cli_command(
            "postgres://u@127.0.0.1/db",
            dir.path(),
            &[
                "--database-url",
                "postgres://u:s3cretpw@127.0.0.1:5432/x?sslmode=bogus",
                "status",
            ],
        )
        .output()
        .unwrap(),
    );
    run.assert_code(2);
    assert!(run.stderr.contains("--database-url"), "{}", run.stderr);
    assert!(!run.stderr.contains("s3cretpw"), "{}", run.stderr);
    assert_eq!(
        run.stderr.matches("error with configuration").count(),
        1,
        "{}",
        run.stderr
    );
}
