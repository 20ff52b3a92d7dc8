//! The promises a hostile test of the tool broke once (issue 8, section 1): each test here
//! failed before its fix.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{cli_command, settings, Dir, TestDb};
use stepmigrate_core::apply::{self, Attempt, Commit, Outcome};
use stepmigrate_core::ledger::LedgerSchema;
use stepmigrate_core::migration::{Directives, Migration, Mode, Version};
use stepmigrate_core::runner::Quiet;

/// A migration built by hand, past the validator: what the runtime checks must catch when
/// the lexer and PostgreSQL disagree.
fn unvalidated(version: &str, sql: &str, no_transaction: bool) -> Migration {
    Migration {
        version: Version::parse(version).unwrap(),
        name: format!("{version}_unvalidated"),
        path: PathBuf::from(format!("{version}_unvalidated.sql")),
        sql: sql.to_owned(),
        as_written: None,
        checksum: stepmigrate_core::migration::checksum(sql.as_bytes()),
        directives: Directives {
            mode: if no_transaction {
                Mode::NoTransaction
            } else {
                Mode::Transactional
            },
            ..Directives::default()
        },
        down: None,
    }
}

/// Applies `m` (whose predecessor is 001, applied first) outside the validator.
async fn apply_unvalidated(db: &TestDb, m: &Migration) -> Outcome {
    let dir = Dir::new(&[("001_first.sql", "CREATE TABLE first (id int);")]);
    let migrator = db.migrator(dir.path(), settings());
    migrator
        .up(&Default::default(), "test", &mut Quiet)
        .await
        .unwrap();
    let mut conn = db.conn().await;
    let schema = LedgerSchema::new("public");
    let first = Version::parse("001").unwrap();
    let attempt = Attempt::new(
        m,
        Some(&first),
        "test",
        &schema,
        None,
        &settings(),
        Commit::Durable,
    );
    apply::apply(&mut conn, &attempt).await.unwrap()
}

fn failure_of(outcome: Outcome) -> Box<stepmigrate_core::error::MigrationFailure> {
    match outcome {
        Outcome::Failed { failure } => failure,
        other => panic!("expected a failure, got {other:?}"),
    }
}

// --- The ledger's location -------------------------------------------------------------------

#[tokio::test]
async fn a_schema_named_after_the_user_does_not_hide_the_ledger() {
    let db = TestDb::new().await;
    // The old runner's table in public, and a schema first in the default search_path.
    let first = "CREATE TABLE t1 (id int);";
    db.exec(&format!(
        "CREATE TABLE public.schema_migrations (version varchar(255) PRIMARY KEY, name varchar(255), applied_at timestamp DEFAULT now(), checksum varchar(64), execution_time_ms integer, success boolean DEFAULT true);
         CREATE TABLE t1 (id int);
         INSERT INTO public.schema_migrations (version, name, checksum) VALUES ('001', '001_create_t1', '{}');
         CREATE SCHEMA postgres;",
        stepmigrate_core::migration::checksum(first.as_bytes())
    ))
    .await;
    let dir = Dir::new(&[
        ("001_create_t1.sql", first),
        ("002_create_t2.sql", "CREATE TABLE t2 (id int);"),
    ]);
    // 001 stays applied: never re-run into a second, empty ledger in schema `postgres`.
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert_eq!(db.applied().await, vec!["001", "002"]);
    assert!(!db.table_exists("postgres.schema_migrations").await);
}

#[tokio::test]
async fn a_migration_changing_search_path_cannot_redirect_the_ledger() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_other.sql",
            "CREATE SCHEMA other;\nCREATE TABLE other.schema_migration_events (id int);\nCREATE TABLE other.schema_migrations (version text);",
        ),
        (
            "002_local.sql",
            "SET LOCAL search_path = other, public;\nCREATE TABLE in_other (id int);",
        ),
        (
            "003_session.sql",
            "SET search_path = other;\nCREATE TABLE also_in_other (id int);",
        ),
        ("004_after.sql", "CREATE TABLE after_all (id int);"),
    ]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert_eq!(db.applied().await, vec!["001", "002", "003", "004"]);
    assert_eq!(
        db.query("SELECT count(*)::text FROM other.schema_migration_events")
            .await,
        vec!["0"]
    );
    assert!(db.table_exists("other.in_other").await);
    assert!(
        db.table_exists("public.after_all").await,
        "the session's search_path was reset"
    );
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
}

#[tokio::test]
async fn the_ledger_schema_can_be_configured() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[("001_t.sql", "CREATE TABLE t (id int);")]);
    let run = |args: &[&str]| {
        db.cli_env(
            dir.path(),
            args,
            &[("STEPMIGRATE_LEDGER_SCHEMA", "Ledger Schema")],
        )
    };
    run(&["up"]).assert_code(0);
    assert!(db.table_exists("\"Ledger Schema\".schema_migrations").await);
    assert!(!db.table_exists("public.schema_migrations").await);
    assert_eq!(run(&["--json", "status"]).json()["summary"]["applied"], 1);
    // Found where it is even without the setting.
    assert_eq!(
        db.cli(dir.path(), &["--json", "status"]).json()["summary"]["applied"],
        1
    );
}

#[tokio::test]
async fn a_dropped_projection_is_rebuilt_from_its_events() {
    let db = TestDb::new().await;
    let dir = common::numbered_tables(3);
    db.cli(dir.path(), &["up"]).assert_code(0);
    db.exec("DROP TABLE schema_migrations").await;
    let status = db.cli(dir.path(), &["--json", "status"]);
    assert_eq!(status.json()["summary"]["applied"], 3, "{}", status.stdout);
    let up = db.cli(dir.path(), &["--json", "up"]);
    up.assert_code(0);
    assert_eq!(up.json()["applied"], 0, "nothing re-run");
    assert_eq!(db.applied().await, vec!["001", "002", "003"]);
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
}

// --- Transaction control the validator misses ------------------------------------------------

#[tokio::test]
async fn lexer_cases_postgresql_reads_as_transaction_control_are_refused() {
    let db = TestDb::new().await;
    for sql in [
        "CREATE TABLE t (a int, b int);\nCREATE INDEX i ON t (begin, atomic);\nCOMMIT;\nCREATE TABLE u (id int);",
        "CREATE TABLE t (id int); -- a comment ended by a carriage return\rCOMMIT;\rCREATE TABLE u (id int);",
    ] {
        let dir = Dir::new(&[("001_hidden.sql", sql)]);
        let run = db.cli(dir.path(), &["up"]);
        run.assert_code(3);
        assert!(run.stderr.contains("`COMMIT` ends or starts a transaction"), "{}", run.stderr);
    }
    assert!(!db.table_exists("t").await);
}

#[tokio::test]
async fn a_database_without_standard_conforming_strings_is_refused() {
    let db = TestDb::new().await;
    db.exec(&format!(
        "ALTER DATABASE {} SET standard_conforming_strings = off",
        db.name
    ))
    .await;
    let dir = Dir::new(&[("001_t.sql", "SELECT 'x\\''; COMMIT; --';")]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(2);
    let error = &run.json()["error"];
    assert_eq!(error["name"], "ConfigError");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("standard_conforming_strings: is off"),
        "{error}"
    );
    assert!(!db.table_exists("schema_migrations").await);
}

#[tokio::test]
async fn a_transaction_ended_inside_a_migration_is_recorded_dirty_not_failed() {
    let record = |db: &TestDb, failure: Box<stepmigrate_core::error::MigrationFailure>| {
        let url = db.url.clone();
        async move {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
                .await
                .unwrap();
            apply::record_failure(&mut conn, &LedgerSchema::new("public"), &failure, None, "t")
                .await
                .unwrap();
        }
    };
    // COMMIT then success: what ran before the COMMIT is committed, the rest is not, and no
    // `applied` event is written outside the guard's transaction.
    let db = TestDb::new().await;
    let m = unvalidated(
        "002",
        "CREATE TABLE a (id int);\nCOMMIT;\nCREATE TABLE b (id int);",
        false,
    );
    let failure = failure_of(apply_unvalidated(&db, &m).await);
    assert!(failure.dirty);
    assert_eq!(failure.error.sqlstate, "SM005");
    assert!(db.table_exists("a").await && !db.table_exists("b").await);
    record(&db, failure).await;
    assert_eq!(
        db.query(
            "SELECT dirty::text || success::text FROM schema_migrations WHERE version = '002'"
        )
        .await,
        vec!["truefalse"]
    );

    // COMMIT then a failure: half of it committed, so dirty (the ledger said `failed`).
    let db = TestDb::new().await;
    let m = unvalidated(
        "002",
        "CREATE TABLE a (id int);\nCOMMIT;\nSELECT 1/0;",
        false,
    );
    let failure = failure_of(apply_unvalidated(&db, &m).await);
    assert!(failure.dirty, "{failure:?}");
    assert_eq!(failure.error.sqlstate, "22012");
    assert!(db.table_exists("a").await);
    record(&db, failure).await;
    assert_eq!(
        db.query("SELECT dirty::text FROM schema_migrations WHERE version = '002'")
            .await,
        vec!["true"]
    );

    // ROLLBACK then more: nothing of it remains (the rest is aborted with the release of the
    // savepoint), so a plain failure, never `applied`.
    let db = TestDb::new().await;
    let m = unvalidated(
        "002",
        "CREATE TABLE a (id int);\nROLLBACK;\nCREATE TABLE b (id int);",
        false,
    );
    let failure = failure_of(apply_unvalidated(&db, &m).await);
    assert!(!failure.dirty);
    assert_eq!(failure.error.sqlstate, "SM005");
    assert!(failure.error.message.contains("nothing of it remains"));
    assert!(!db.table_exists("a").await && !db.table_exists("b").await);

    // An ordinary failure is not dirty: nothing of it remains.
    let db = TestDb::new().await;
    let m = unvalidated("002", "CREATE TABLE a (id int);\nSELECT 1/0;", false);
    let failure = failure_of(apply_unvalidated(&db, &m).await);
    assert!(!failure.dirty);
    assert!(!db.table_exists("a").await);
}

#[tokio::test]
async fn a_no_transaction_statement_that_leaves_a_transaction_open_fails_dirty() {
    let db = TestDb::new().await;
    let m = unvalidated("002", "BEGIN;\nCREATE TABLE x (id int);", true);
    let failure = failure_of(apply_unvalidated(&db, &m).await);
    assert_eq!(failure.error.sqlstate, "SM007");
    assert_eq!(failure.error.line, Some(1));
    assert!(failure.is_dirty());
    assert!(!db.table_exists("x").await, "rolled back");
    // The outcome is the ledger's: dirty, never applied.
    assert_eq!(
        db.query(
            "SELECT dirty::text || success::text FROM schema_migrations WHERE version = '002'"
        )
        .await,
        vec!["truefalse"]
    );
}

// --- Session state -----------------------------------------------------------------------------

#[tokio::test]
async fn set_role_and_session_authorization_do_not_leak_into_the_next_migration() {
    let db = TestDb::new().await;
    let role = format!("{}_role", db.name);
    let dir = Dir::new(&[
        ("001_role.sql", &format!("CREATE ROLE {role} NOLOGIN;")),
        ("002_set_role.sql", &format!("SET ROLE {role};\nSELECT 1;")),
        ("003_owned.sql", "CREATE TABLE owned_a (id int);"),
        (
            "004_set_auth.sql",
            &format!("SET SESSION AUTHORIZATION {role};\nSELECT 1;"),
        ),
        ("005_owned.sql", "CREATE TABLE owned_b (id int);"),
    ]);
    let run = db.cli(dir.path(), &["up"]);
    let owners = db
        .query("SELECT tableowner::text FROM pg_tables WHERE tablename IN ('owned_a', 'owned_b')")
        .await;
    let actors = db
        .query("SELECT DISTINCT actor FROM schema_migration_events")
        .await;
    db.exec(&format!("DROP ROLE {role}")).await;
    run.assert_code(0);
    assert_eq!(owners, vec!["postgres", "postgres"]);
    assert_eq!(actors, vec!["postgres"]);
}

// --- The lock ------------------------------------------------------------------------------------

/// 001, then 002 that ends the runner's lock session (waiting up to 5 s until its backend is
/// gone), then 003.
fn lock_killing_migrations() -> Dir {
    Dir::new(&[
        ("001_a.sql", "CREATE TABLE a (id int);"),
        (
            "002_kill_lock.sql",
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_locks WHERE locktype = 'advisory' AND pid <> pg_backend_pid() AND database = (SELECT oid FROM pg_database WHERE datname = current_database());",
        ),
        ("003_c.sql", "CREATE TABLE c (id int);"),
    ])
}

#[tokio::test]
async fn losing_the_lock_session_stops_the_run_before_the_next_migration() {
    let db = TestDb::new().await;
    let dir = lock_killing_migrations();
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(5);
    let doc = run.json();
    assert_eq!(doc["error"]["name"], "ConnectionFailed");
    let listed: Vec<&str> = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec!["001_a", "002_kill_lock"]);
    assert!(!db.table_exists("c").await);
    assert_eq!(db.applied().await, vec!["001", "002"]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert_eq!(db.applied().await, vec!["001", "002", "003"]);
}

#[tokio::test]
async fn idle_session_timeout_does_not_end_the_lock_session() {
    let db = TestDb::new().await;
    db.exec(&format!(
        "ALTER DATABASE {} SET idle_session_timeout = '300ms'",
        db.name
    ))
    .await;
    let dir = Dir::new(&[
        ("001_slow.sql", "SELECT pg_sleep(1);"),
        ("002_t.sql", "CREATE TABLE t (id int);"),
    ]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert_eq!(db.applied().await, vec!["001", "002"]);
}

// --- Settings ------------------------------------------------------------------------------------

#[tokio::test]
async fn durations_beyond_what_postgresql_takes_are_refused_naming_them() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[("001_t.sql", "CREATE TABLE t (id int);")]);
    let run = db.cli(dir.path(), &["--json", "--lock-timeout", "597h", "up"]);
    run.assert_code(2);
    let error = &run.json()["error"];
    assert_eq!(error["name"], "ConfigError");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("--lock-timeout"),
        "{error}"
    );

    let run = db.cli_env(
        dir.path(),
        &["up"],
        &[("STEPMIGRATE_STATEMENT_TIMEOUT", "99999999999999999999h")],
    );
    run.assert_code(2);
    assert!(
        run.stderr.contains("STEPMIGRATE_STATEMENT_TIMEOUT"),
        "{}",
        run.stderr
    );

    let dir = Dir::new(&[(
        "001_t.sql",
        "-- stepmigrate: no-transaction\n-- stepmigrate: statement_timeout = 1000h\nCREATE TABLE t (id int);",
    )]);
    let run = db.cli(dir.path(), &["up"]);
    run.assert_code(3);
    assert!(
        run.stderr.contains("001_t.sql:2: statement_timeout"),
        "{}",
        run.stderr
    );
    assert!(!db.table_exists("t").await);
}

// --- Failures and how they are reported --------------------------------------------------------

#[tokio::test]
async fn a_migration_that_ends_its_own_session_is_reported_and_recorded() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_a.sql", "CREATE TABLE a (id int);"),
        (
            "002_suicide.sql",
            "CREATE TABLE b (id int);\nSELECT pg_terminate_backend(pg_backend_pid());",
        ),
    ]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    // Not the file's fault, and rolled back whole: transient, as a lost connection is.
    run.assert_code(5);
    let doc = run.json();
    assert_eq!(doc["error"]["name"], "ConnectionFailed");
    assert_eq!(
        doc["error"]["details"]["migration"]["error"]["sqlstate"],
        "57P01"
    );
    assert!(doc.get("record_error").is_none(), "{doc}");
    assert!(!db.table_exists("b").await);
    assert_eq!(
        db.query("SELECT success::text FROM schema_migrations WHERE version = '002'")
            .await,
        vec!["false"]
    );
}

#[tokio::test]
async fn a_failure_message_with_quotes_and_backslashes_is_recorded_as_it_is() {
    let db = TestDb::new().await;
    let message = r#"it's a "quote", a \ backslash and a ' lone quote"#;
    let dir = Dir::new(&[(
        "001_raise.sql",
        &format!(
            "DO $body$ BEGIN RAISE EXCEPTION '%', {}; END $body$;",
            stepmigrate_core::sql::quote_literal(message)
        ),
    )]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(1);
    assert_eq!(
        run.json()["error"]["details"]["migration"]["error"]["message"],
        message
    );
    assert_eq!(
        db.query("SELECT error FROM schema_migrations WHERE version = '001'")
            .await,
        vec![message]
    );
}

#[tokio::test]
async fn statements_the_runner_cannot_carry_are_refused_before_anything_runs() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_t.sql", "CREATE TABLE t (a int, b int);"),
        (
            "002_copy.sql",
            "CREATE TABLE u (id int);\nCOPY t (a, b) FROM STDIN;",
        ),
        (
            "003_encoding.sql",
            "SET client_encoding = 'LATIN1';\nSELECT 1;",
        ),
    ]);
    dir.write_bytes("004_nul.sql", b"SELECT 1;\nSELECT '\0';\n");
    let run = db.cli(dir.path(), &["up"]);
    run.assert_code(3);
    for needle in [
        "002_copy.sql:2: `COPY T A B`: COPY FROM STDIN",
        "003_encoding.sql:1: `SET CLIENT_ENCODING`",
        "004_nul.sql:2: the file holds a NUL byte",
    ] {
        assert!(
            run.stderr.contains(needle),
            "missing {needle:?}:\n{}",
            run.stderr
        );
    }
    assert!(!db.table_exists("t").await);
}

// --- Crashes, hangs, leaks ---------------------------------------------------------------------

#[tokio::test]
async fn non_utf8_file_names_still_give_one_json_document() {
    use std::os::unix::ffi::OsStrExt;
    let db = TestDb::new().await;
    let dir = Dir::new(&[("001_t.sql", "SELECT 1;")]);
    std::fs::write(
        dir.path()
            .join(std::ffi::OsStr::from_bytes(b"002_caf\xe9.sql")),
        "SELECT 2;",
    )
    .unwrap();
    let run = db.cli(dir.path(), &["--json", "status"]);
    run.assert_code(3);
    let problems = run.json()["error"]["details"]["problems"].clone();
    assert!(
        problems.to_string().contains("002_caf\u{fffd}.sql"),
        "{problems}"
    );
}

#[tokio::test]
async fn a_closed_or_full_stdout_ends_quietly() {
    let db = TestDb::new().await;
    let dir = common::numbered_tables(50);
    db.cli(dir.path(), &["up"]).assert_code(0);
    // `stepmigrate status | head -0`: the reader is gone before the first line.
    let mut child = cli_command(&db.url, dir.path(), &["status"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    // A full disk.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = cli_command(&db.url, dir.path(), &["status"])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

#[tokio::test]
async fn verify_ca_does_not_panic() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[("001_t.sql", "SELECT 1;")]);
    let cert = dir.path().join("root.crt");
    std::fs::write(&cert, "not a certificate").unwrap();
    let url = format!(
        "{}?sslmode=verify-ca&sslrootcert={}",
        db.url,
        cert.display()
    );
    let run = common::run_cli(&url, dir.path(), &["status"]);
    assert!(matches!(run.code, 2 | 5), "{run:?}");
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
}

#[tokio::test]
async fn fifos_and_devices_in_the_directory_are_named_not_read() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[("001_t.sql", "SELECT 1;")]);
    let fifo = dir.path().join("002_fifo.sql");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("003_zero.sql")).unwrap();
    let run = db.cli(dir.path(), &["status"]);
    run.assert_code(3);
    assert!(
        run.stderr.contains("002_fifo.sql: not a regular file"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("003_zero.sql: not a regular file"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn a_password_with_a_slash_is_never_shown() {
    let dir = Dir::new(&[("001_t.sql", "SELECT 1;")]);
    for args in [&["status"][..], &["--json", "status"][..]] {
        let run = common::run_cli(
            "postgres://app:1234/s3cretPW@127.0.0.1:5432/db",
            dir.path(),
            args,
        );
        run.assert_code(2);
        let all = format!("{}{}", run.stdout, run.stderr);
        assert!(all.contains("DATABASE_URL"), "{all}");
        assert!(!all.contains("s3cret") && !all.contains("1234"), "{all}");
    }
}

#[tokio::test]
async fn bad_arguments_with_json_give_one_json_document() {
    let dir = Dir::new(&[]);
    let run = common::run_cli(
        "postgres://x@127.0.0.1/x",
        dir.path(),
        &["--json", "frobnicate"],
    );
    run.assert_code(2);
    assert_eq!(run.json()["error"]["name"], "InvalidInput");
    assert_eq!(run.json()["ok"], false);
}

#[tokio::test]
async fn connect_timeouts_mean_what_they_say() {
    let dir = Dir::new(&[("001_t.sql", "SELECT 1;")]);
    // A server that accepts and never answers: the whole attempt takes the timeout, once.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let run = common::run_cli(
        &format!("postgres://x@127.0.0.1:{port}/x"),
        dir.path(),
        &["--connect-timeout", "2s", "status"],
    );
    let took = started.elapsed();
    run.assert_code(5);
    assert!(
        took < Duration::from_millis(3500),
        "took {took:?}: {}",
        run.stderr
    );
    drop(silent);
    // Refused on IPv6 loopback: at once, not after the timeout.
    let started = Instant::now();
    let run = common::run_cli(
        "postgres://x@[::1]:1/x",
        dir.path(),
        &["--connect-timeout", "20s", "status"],
    );
    run.assert_code(5);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{}",
        run.stderr
    );
    // 0 means no limit, as for the other durations.
    let db = TestDb::new().await;
    let run = db.cli_env(
        dir.path(),
        &["status"],
        &[("STEPMIGRATE_CONNECT_TIMEOUT", "0")],
    );
    run.assert_code(0);
}

// --- Found by a hostile review of the above ----------------------------------------------------

#[tokio::test]
async fn session_replication_role_cannot_switch_the_ledger_off() {
    for at_database_level in [false, true] {
        let db = TestDb::new().await;
        if at_database_level {
            db.exec(&format!(
                "ALTER DATABASE {} SET session_replication_role = replica",
                db.name
            ))
            .await;
        }
        let dir = Dir::new(&[
            ("001_log.sql", "CREATE TABLE log (i int);"),
            (
                "002_replica.sql",
                "SET LOCAL session_replication_role = replica;\nINSERT INTO log VALUES (2);",
            ),
        ]);
        for _ in 0..3 {
            db.cli(dir.path(), &["up"]).assert_code(0);
        }
        assert_eq!(db.query("SELECT count(*)::text FROM log").await, vec!["1"]);
        assert_eq!(db.applied().await, vec!["001", "002"]);
    }
}

#[tokio::test]
async fn reset_all_in_a_migration_does_not_make_it_dirty() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[("001_a.sql", "CREATE TABLE a (i int);\nRESET ALL;")]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert_eq!(db.applied().await, vec!["001"]);
    db.cli(dir.path(), &["status"]).assert_code(0);
}

#[tokio::test]
async fn settings_changed_in_ways_the_validator_cannot_see_stop_before_the_next_statement() {
    // Quoted, the setting is still refused by the validator.
    let db = TestDb::new().await;
    let dir = Dir::new(&[(
        "001_scs.sql",
        "CREATE TABLE half_applied (i int);\nSET \"standard_conforming_strings\" = off;\nSELECT 1;",
    )]);
    let run = db.cli(dir.path(), &["up"]);
    run.assert_code(3);
    assert!(run.stderr.contains("001_scs.sql:2:"), "{}", run.stderr);

    // Through set_config, named: refused before anything runs, like SET.
    let dir = Dir::new(&[(
        "001_scs.sql",
        "CREATE TABLE half_applied (i int);\nSELECT set_config('standard_conforming_strings', 'off', true);\n",
    )]);
    let run = db.cli(dir.path(), &["up"]);
    run.assert_code(3);
    assert!(run.stderr.contains("001_scs.sql:2:"), "{}", run.stderr);

    // Through set_config with a name the words do not show, in a failing transactional
    // migration: the replay that locates the failure stops where the strings would be read
    // otherwise, and rolls back.
    let dir = Dir::new(&[(
        "001_scs.sql",
        "CREATE TABLE half_applied (i int);\nSELECT set_config('standard_' || 'conforming_strings', 'off', true);\nSELECT 'a\\' , ' ; COMMIT; SELECT E' AS p -- ' AS q;\nINSERT INTO half_applied VALUES (1), (1);\nCREATE UNIQUE INDEX ON half_applied (i);",
    )]);
    let run = db.cli(dir.path(), &["up"]);
    run.assert_code(1);
    assert!(!db.table_exists("half_applied").await, "{run:?}");
    assert_eq!(
        db.query("SELECT dirty::text FROM schema_migrations WHERE version = '001'")
            .await,
        vec!["false"]
    );

    // Outside a transaction: the statement after it is not sent.
    let db = TestDb::new().await;
    let dir = Dir::new(&[(
        "001_enc.sql",
        "-- stepmigrate: no-transaction\nSELECT set_config('client_' || 'encoding', 'LATIN1', false);\nCREATE TABLE \"t\u{fc}be\" (i int);",
    )]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(1);
    let error = &run.json()["error"]["details"]["migration"]["error"];
    assert_eq!(error["sqlstate"], "SM008", "{error}");
    assert_eq!(error["line"], 2, "{error}");
    assert_eq!(
        db.query("SELECT count(*)::text FROM pg_tables WHERE tablename LIKE 't%be'")
            .await,
        vec!["0"]
    );
}

#[tokio::test]
async fn the_projection_cannot_be_written_by_hand() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_log.sql", "CREATE TABLE log (i int);"),
        ("002_insert.sql", "INSERT INTO log VALUES (2);"),
    ]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    let mut conn = db.conn().await;
    for sql in [
        "UPDATE schema_migrations SET success = false WHERE version = '002'",
        "INSERT INTO schema_migrations (version, name) VALUES ('003', '003_fake')",
    ] {
        let err = sqlx::raw_sql(sql).execute(&mut conn).await.unwrap_err();
        assert!(
            err.to_string().contains("is the projection"),
            "{sql}: {err}"
        );
    }
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert_eq!(db.query("SELECT count(*)::text FROM log").await, vec!["1"]);
    // The documented recipe still works.
    db.exec("DELETE FROM schema_migrations WHERE version = '002'")
        .await;
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert_eq!(db.query("SELECT count(*)::text FROM log").await, vec!["2"]);
}

#[tokio::test]
async fn a_ledger_schema_setting_that_would_hide_the_ledger_is_refused() {
    let db = TestDb::new().await;
    let dir = common::numbered_tables(2);
    db.cli(dir.path(), &["up"]).assert_code(0);
    let run = db.cli_env(
        dir.path(),
        &["up"],
        &[("STEPMIGRATE_LEDGER_SCHEMA", "newsch")],
    );
    run.assert_code(2);
    assert!(
        run.stderr.contains("holds no ledger, but public does"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn another_tools_schema_migrations_is_named_not_misread() {
    let db = TestDb::new().await;
    db.exec("CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL)")
        .await;
    let dir = common::numbered_tables(1);
    let run = db.cli(dir.path(), &["up"]);
    run.assert_code(2);
    assert!(run.stderr.contains("another tool"), "{}", run.stderr);
    let run = db.cli_env(
        dir.path(),
        &["up"],
        &[("STEPMIGRATE_LEDGER_SCHEMA", "stepmigrate")],
    );
    run.assert_code(0);
}

#[tokio::test]
async fn idle_session_timeout_does_not_end_a_runner_waiting_its_turn() {
    let db = TestDb::new().await;
    db.exec(&format!(
        "ALTER DATABASE {} SET idle_session_timeout = '300ms'",
        db.name
    ))
    .await;
    let dir = Dir::new(&[
        ("001_slow.sql", "SELECT pg_sleep(1.5);"),
        ("002_t.sql", "CREATE TABLE t (id int);"),
    ]);
    let first = db.spawn_cli(dir.path(), &["up"]);
    db.wait_for_active_query("pg_sleep(1.5)").await;
    let second = db.cli(dir.path(), &["up"]);
    let first = common::Run::from(first.wait_with_output().unwrap());
    first.assert_code(0);
    second.assert_code(0);
    assert_eq!(db.applied().await, vec!["001", "002"]);
}

#[tokio::test]
async fn what_the_validator_now_sees() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_copy.sql",
            "CREATE TABLE t (i int);\nCOPY t FROM /* x */ STDIN;",
        ),
        ("002_string.sql", "SELECT 1;\nSELECT 'x"),
        ("003_dollar.sql", "SELECT 1;\n\nSELECT $$abc"),
        ("004_comment.sql", "SELECT 1; /* open"),
        ("005_cluster.sql", "CLUSTER;"),
        (
            "006_cr.sql",
            "-- stepmigrate: no-transaction\rCREATE INDEX CONCURRENTLY i ON t (i);\r",
        ),
    ]);
    std::fs::create_dir(dir.path().join("007_dir.sql")).unwrap();
    let run = db.cli(dir.path(), &["up"]);
    run.assert_code(3);
    for needle in [
        "001_copy.sql:2: `COPY T FROM STDIN`: COPY FROM STDIN",
        "002_string.sql:2: unterminated quoted string",
        "003_dollar.sql:3: unterminated dollar-quoted string",
        "004_comment.sql:1: unterminated /* comment",
        "005_cluster.sql:1: CLUSTER of the whole database cannot run inside a transaction block",
        "007_dir.sql: a directory named like a migration",
    ] {
        assert!(
            run.stderr.contains(needle),
            "missing {needle:?}:\n{}",
            run.stderr
        );
    }
    assert!(!run.stderr.contains("006_cr.sql"), "{}", run.stderr);
}

#[tokio::test]
async fn a_cr_only_rewrite_of_an_applied_file_is_not_drift() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[("001_t.sql", "CREATE TABLE t (i int);\nSELECT 1;\n")]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    dir.write("001_t.sql", "CREATE TABLE t (i int);\rSELECT 1;\r");
    let run = db.cli(dir.path(), &["status"]);
    run.assert_code(0);
}

#[tokio::test]
async fn the_user_name_is_never_shown_and_empty_variables_are_unset() {
    let dir = Dir::new(&[("001_t.sql", "SELECT 1;")]);
    let run = common::run_cli(
        "postgres://s3cr3tPW@127.0.0.1:5432/nosuchdb",
        dir.path(),
        &["status"],
    );
    run.assert_code(5);
    assert!(!run.stderr.contains("s3cr3tPW"), "{}", run.stderr);
    assert!(
        run.stderr.contains("role \"<user>\" does not exist"),
        "{}",
        run.stderr
    );
    let db = TestDb::new().await;
    let run = db.cli_env(
        std::path::Path::new("/nonexistent"),
        &[
            "--migrations-dir",
            dir.path().to_str().unwrap(),
            "--lock-timeout",
            "1s",
            "status",
        ],
        &[
            ("STEPMIGRATE_MIGRATIONS_DIR", ""),
            ("STEPMIGRATE_LOCK_TIMEOUT", ""),
            ("STEPMIGRATE_STATEMENT_TIMEOUT", ""),
        ],
    );
    run.assert_code(0);
    // A flag wins over a malformed variable, which is not even read.
    let run = db.cli_env(
        dir.path(),
        &["--lock-timeout", "1s", "status"],
        &[("STEPMIGRATE_LOCK_TIMEOUT", "soon")],
    );
    run.assert_code(0);
}

#[tokio::test]
async fn a_lost_lock_says_so_in_both_outputs() {
    let db = TestDb::new().await;
    let dir = lock_killing_migrations();
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(5);
    assert_eq!(run.json()["lock_lost"], true);
    db.exec("DELETE FROM schema_migrations WHERE version IN ('001', '002'); DROP TABLE a;")
        .await;
    let run = db.cli(dir.path(), &["up"]);
    run.assert_code(5);
    assert!(
        run.stderr
            .contains("error[ConnectionFailed]: the migration lock was lost"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn raise_info_is_shown_like_psql_shows_it() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[(
        "001_info.sql",
        "DO $$ BEGIN RAISE INFO 'for your information'; END $$;",
    )]);
    let run = db.cli(dir.path(), &["up"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("INFO: for your information"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn a_temporary_table_does_not_outlive_its_migration() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_a.sql", "CREATE TABLE t1 (id int);\n"),
        // A temporary table of the same name comes first on the search_path: left in the
        // session, it would take 003's insert and its new column.
        ("002_b.sql", "CREATE TEMP TABLE t1 (id int);\n"),
        (
            "003_c.sql",
            "INSERT INTO t1 VALUES (42);\nALTER TABLE t1 ADD COLUMN v int NOT NULL DEFAULT 1;\n",
        ),
    ]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert_eq!(
        db.query("SELECT id || ':' || v FROM public.t1").await,
        ["42:1"]
    );
}

#[tokio::test]
async fn an_invalid_index_that_cannot_be_dropped_fails_the_build_instead_of_passing_for_done() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[(
        "001_a.sql",
        "CREATE TABLE t1 (id int, v int);\nINSERT INTO t1 SELECT g, g % 10 FROM generate_series(1, 100) g;\n",
    )]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    // A unique build over duplicates fails and leaves an INVALID index behind.
    let mut conn = db.conn().await;
    assert!(
        sqlx::raw_sql("CREATE UNIQUE INDEX CONCURRENTLY t1_v_idx ON t1 (v)")
            .execute(&mut conn)
            .await
            .is_err()
    );
    // An ordinary reader in a long transaction: the leftover's DROP INDEX CONCURRENTLY
    // waits for it, past the migration's lock_timeout.
    let mut reader = db.conn().await;
    sqlx::raw_sql("BEGIN; SELECT count(*) FROM t1;")
        .execute(&mut reader)
        .await
        .unwrap();
    dir.write(
        "002_b.sql",
        "-- stepmigrate: no-transaction\n-- stepmigrate: lock_timeout = 1s\nCREATE INDEX CONCURRENTLY IF NOT EXISTS t1_v_idx ON t1 (v);\n",
    );
    let run = db.cli_env(
        dir.path(),
        &["--json", "up"],
        &[("STEPMIGRATE_LOCK_RETRIES", "0")],
    );
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stdout.contains("dropping the INVALID index t1_v_idx"),
        "{}",
        run.stdout
    );
    assert_eq!(db.applied().await, ["001"]);
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut reader)
        .await
        .unwrap();
}

/// A failed migration's line is found from the run itself (the server answers statement by
/// statement), nothing run again: a `dblink_exec` that commits elsewhere runs once, not
/// twice, and the failing line is still named.
#[tokio::test]
async fn a_failed_migration_that_acts_outside_its_transaction_is_not_replayed() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_setup.sql",
            "CREATE EXTENSION IF NOT EXISTS dblink;\nCREATE TABLE remote_log (msg text);\nCREATE TABLE t (id int PRIMARY KEY);\nINSERT INTO t VALUES (1);\n",
        ),
        (
            "002_work.sql",
            &format!(
                "SELECT dblink_exec('dbname={} user=postgres host=127.0.0.1', 'INSERT INTO remote_log VALUES (''notified'')');\nINSERT INTO t VALUES (1);\n",
                db.name
            ),
        ),
    ]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(1);
    assert_eq!(
        db.query("SELECT count(*)::text FROM remote_log").await,
        ["1"]
    );
    let doc = run.json();
    assert_eq!(
        doc["error"]["details"]["migration"]["error"]["line"], 2,
        "{doc:#}"
    );
}

/// A migration outside a transaction that leaves `default_transaction_read_only` on: the
/// session is reset before its outcome is written (in a query of its own: in one with the
/// reset, the write's transaction would start read-only), so it is recorded applied, not
/// left dirty, and the next migration runs.
#[tokio::test]
async fn a_read_only_default_left_by_a_migration_does_not_leave_it_dirty() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_x.sql",
            "-- stepmigrate: no-transaction\nCREATE TABLE x (id int);\nSET default_transaction_read_only = on;\n",
        ),
        ("002_y.sql", "CREATE TABLE y (id int);\n"),
    ]);
    let run = db.cli(dir.path(), &["up"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert_eq!(db.applied().await, ["001", "002"]);
    db.cli(dir.path(), &["status"]).assert_code(0);
}

/// `ledger check` compares the ledger with its own events: it needs no migration files, and a
/// missing directory is no reason to refuse it.
#[tokio::test]
async fn the_ledger_check_needs_no_migration_files() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[("001_a.sql", "CREATE TABLE a (id int);\n")]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    let missing = dir.path().join("gone");
    let run = common::run_cli(&db.url, &missing, &["ledger", "check"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("the ledger is consistent"),
        "{}",
        run.stdout
    );
    // Commands that read the files still refuse it.
    common::run_cli(&db.url, &missing, &["status"]).assert_code(3);
}

/// A migration that drops the ledger's own machinery with it (`DROP EXTENSION plpgsql
/// CASCADE` takes the trigger that keeps `schema_migrations`): its event would commit with no
/// row, and the next run apply it again. The runner checks the row in the same transaction:
/// nothing of it commits, and the failure says why (SM016).
#[tokio::test]
async fn a_migration_that_breaks_the_ledger_is_rolled_back_whole() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[(
        "001_base.sql",
        "-- stepmigrate: irreversible\nDROP EXTENSION plpgsql CASCADE;\nCREATE TABLE t (id int);\n",
    )]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let doc = run.json();
    assert_eq!(
        doc["error"]["details"]["migration"]["error"]["sqlstate"], "SM016",
        "{doc:#}"
    );
    assert!(!db.table_exists("t").await);
    assert_eq!(
        db.query("SELECT count(*)::text FROM pg_extension WHERE extname = 'plpgsql'")
            .await,
        ["1"]
    );
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
}
