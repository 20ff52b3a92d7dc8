//! DESIGN.md's invariants under stress: concurrent runners, SIGKILL at any point,
//! non-transactional migrations, and the CREATE INDEX CONCURRENTLY deadlock.

mod common;

use std::time::{Duration, Instant};

use common::{numbered_tables, Dir, Run, TestDb};

/// Every migration's table exists exactly when the ledger says it is applied, and the
/// projection equals the fold of the events.
async fn assert_consistent(db: &TestDb, dir: &Dir, n: usize) {
    let applied = db.applied().await;
    for i in 1..=n {
        let version = format!("{i:03}");
        let exists = db.table_exists(&format!("t{i}")).await;
        assert_eq!(
            exists,
            applied.contains(&version),
            "migration {version}: table exists = {exists}, ledger = {applied:?}"
        );
    }
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
}

#[tokio::test]
async fn eight_concurrent_runners_apply_each_migration_exactly_once_in_order() {
    let db = TestDb::new().await;
    let dir = numbered_tables(200);
    let children: Vec<_> = (0..8)
        .map(|_| db.spawn_cli(dir.path(), &["--json", "up"]))
        .collect();
    let runs: Vec<Run> = children
        .into_iter()
        .map(|c| Run::from(c.wait_with_output().unwrap()))
        .collect();
    let mut applied_total = 0;
    for run in &runs {
        run.assert_code(0);
        applied_total += run.json()["applied"].as_u64().unwrap();
    }
    assert_eq!(
        applied_total, 200,
        "each migration applied by exactly one runner"
    );
    let per_version = db
        .query("SELECT count(*)::text FROM schema_migration_events WHERE kind = 'applied' AND version <> '000' GROUP BY version HAVING count(*) <> 1")
        .await;
    assert!(per_version.is_empty(), "applied twice: {per_version:?}");
    let order = db
        .query("SELECT bool_and(ordered)::text FROM (SELECT version > lag(version) OVER (ORDER BY id) AS ordered FROM schema_migration_events WHERE kind = 'applied' AND version <> '000') s")
        .await;
    assert_eq!(order[0], "true", "applied in version order");
    assert_eq!(db.query("SELECT count(*)::text FROM schema_migration_events WHERE kind = 'applied' AND version = '000'").await[0], "1", "the ledger is created once");
    assert_consistent(&db, &dir, 200).await;
}

#[tokio::test]
async fn sigkill_during_a_long_migration_leaves_a_consistent_ledger() {
    let db = TestDb::new().await;
    let dir = numbered_tables(3);
    dir.write(
        "002_create_t2.sql",
        "CREATE TABLE t2 (id int);\nSELECT pg_sleep(2);\n",
    );
    let mut child = db.spawn_cli(dir.path(), &["up"]);
    // Wait until the migration is running inside the server, then kill the runner.
    db.wait_for_active_query("pg_sleep(2)").await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_consistent(&db, &dir, 3).await;
    // The next run finishes the job (waiting for the orphaned backend if it still runs).
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert_eq!(db.applied().await, vec!["001", "002", "003"]);
    assert_consistent(&db, &dir, 3).await;
    let twice = db.query("SELECT count(*)::text FROM schema_migration_events WHERE kind = 'applied' AND version = '002'").await;
    assert_eq!(twice[0], "1");
}

#[tokio::test]
async fn sigkill_between_migrations_at_several_points_never_loses_or_invents_an_entry() {
    let db = TestDb::new().await;
    let n = 150;
    let dir = numbered_tables(n);
    for delay_ms in [40u64, 120, 250, 400] {
        let mut child = db.spawn_cli(dir.path(), &["up"]);
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let _ = child.kill(); // SIGKILL
        child.wait().unwrap();
        // The orphaned backend (if any) finishes or aborts its one transaction.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_consistent(&db, &dir, n).await;
    }
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert_eq!(db.applied().await.len(), n);
    assert_consistent(&db, &dir, n).await;
}

#[tokio::test]
async fn a_failed_non_transactional_migration_is_dirty_until_resolved() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_t.sql", "CREATE TABLE t (id int, email text);"),
        ("002_index.sql", "-- stepmigrate: no-transaction\nCREATE INDEX CONCURRENTLY t_id_idx ON t (id);\nCREATE INDEX CONCURRENTLY t_email_idx ON t (no_such_column);\n"),
        ("003_after.sql", "CREATE TABLE after (id int);"),
    ]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(1);
    let failure = &run.json()["error"]["details"]["migration"];
    assert_eq!(failure["transactional"], false);
    assert_eq!(failure["error"]["line"], 3);
    assert!(
        db.table_exists("t_id_idx").await,
        "its first statement ran: half-applied"
    );
    assert!(!db.table_exists("after").await);

    for command in ["up", "plan", "status"] {
        let run = db.cli(dir.path(), &[command]);
        run.assert_code(4);
        assert!(
            run.stderr.contains("002_index") && run.stderr.contains("resolve"),
            "{command}: {}",
            run.stderr
        );
    }
    let run = db.cli(dir.path(), &["resolve", "003"]);
    run.assert_code(2);
    let run = db.cli(dir.path(), &["resolve", "003", "--applied"]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("nothing to resolve") && run.stderr.contains("pending"),
        "{}",
        run.stderr
    );

    // The operator undoes the half and makes it pending; the fixed file then runs.
    db.exec("DROP INDEX t_id_idx").await;
    db.cli(dir.path(), &["resolve", "002", "--not-applied"])
        .assert_code(0);
    dir.write("002_index.sql", "-- stepmigrate: no-transaction\nCREATE INDEX CONCURRENTLY t_id_idx ON t (id);\nCREATE INDEX CONCURRENTLY t_email_idx ON t (email);\n");
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert_eq!(db.applied().await, vec!["001", "002", "003"]);
    let kinds = db
        .query("SELECT kind FROM schema_migration_events WHERE version = '002' ORDER BY id")
        .await;
    assert_eq!(
        kinds,
        vec![
            "started",
            "failed",
            "resolved_not_applied",
            "started",
            "applied"
        ]
    );
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
}

#[tokio::test]
async fn a_killed_non_transactional_migration_is_dirty_and_resolve_applied_continues() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_t.sql", "CREATE TABLE t (id int);"),
        ("002_slow.sql", "-- stepmigrate: no-transaction\nCREATE INDEX CONCURRENTLY t_id_idx ON t (id);\nSELECT pg_sleep(4);\n"),
        ("003_after.sql", "CREATE TABLE after (id int);"),
    ]);
    let mut child = db.spawn_cli(dir.path(), &["up"]);
    db.wait_for_active_query("pg_sleep(4)").await;
    child.kill().unwrap();
    child.wait().unwrap();
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(4);
    assert_eq!(run.json()["error"]["name"], "Dirty");
    assert_eq!(
        run.json()["error"]["details"]["dirty"][0]["name"],
        "002_slow"
    );

    // The killed runner's backend still runs its statement: `status` says so, and `resolve`
    // refuses to settle what is still changing (it would race it).
    let status = db.cli(dir.path(), &["status"]);
    assert!(
        status.stdout.contains("a session still runs its statement")
            || status.stderr.contains("a session still runs its statement"),
        "{status:?}"
    );
    // Its row cannot be deleted by hand meanwhile: the next `up` would run it again beside it.
    let mut conn = db.conn().await;
    let deleted = sqlx::raw_sql("DELETE FROM schema_migrations WHERE version = '002'")
        .execute(&mut conn)
        .await;
    let refused = deleted.expect_err("the delete of a running migration's row was accepted");
    assert!(
        refused.to_string().contains("still runs its statement"),
        "{refused}"
    );
    drop(conn);
    // `plan` says it too, in its refusal (human and --json).
    let plan = db.cli(dir.path(), &["--json", "plan"]);
    assert_eq!(
        plan.json()["error"]["details"]["dirty"][0]["still_running"],
        true,
        "{}",
        plan.stdout
    );
    let plan = db.cli(dir.path(), &["plan"]);
    assert!(
        plan.stderr
            .contains("a session still runs the statement of 002_slow"),
        "{}{}",
        plan.stdout,
        plan.stderr
    );
    let early = db.cli(dir.path(), &["resolve", "002", "--applied"]);
    early.assert_code(2);
    assert!(
        early.stderr.contains("a session still runs a statement of"),
        "{}",
        early.stderr
    );
    // Once it ended, the operator resolves it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.cli(dir.path(), &["resolve", "002", "--applied"]).code != 0 {
        assert!(Instant::now() < deadline, "resolve never accepted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert_eq!(db.applied().await, vec!["001", "002", "003"]);
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
}

#[tokio::test]
async fn create_index_concurrently_does_not_deadlock_with_a_waiting_runner() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_t.sql", "CREATE TABLE t (id int);\nINSERT INTO t SELECT generate_series(1, 50000);"),
        // The sleep lets the second runner start polling while this one holds the lock;
        // the index build then waits for every transaction that holds a snapshot.
        ("002_index.sql", "-- stepmigrate: no-transaction\nSELECT pg_sleep(1);\nCREATE INDEX CONCURRENTLY t_id_idx ON t (id);\n"),
    ]);
    let first = db.spawn_cli(dir.path(), &["--json", "up"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = db.spawn_cli(dir.path(), &["--json", "up"]);
    let started = Instant::now();
    let (a, b) = tokio::task::spawn_blocking(move || {
        (
            Run::from(first.wait_with_output().unwrap()),
            Run::from(second.wait_with_output().unwrap()),
        )
    })
    .await
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    a.assert_code(0);
    b.assert_code(0);
    assert_eq!(
        a.json()["applied"].as_u64().unwrap() + b.json()["applied"].as_u64().unwrap(),
        2
    );
    assert!(
        b.stderr.contains("waiting") || a.stderr.contains("waiting") || b.json()["applied"] == 0,
        "the second runner waited"
    );
    assert_eq!(
        db.query("SELECT indisvalid::text FROM pg_index WHERE indexrelid = 't_id_idx'::regclass")
            .await[0],
        "true"
    );
}

#[tokio::test]
async fn a_non_transactional_migration_that_hits_its_lock_timeout_is_dirty_not_retried() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_t.sql", "CREATE TABLE t (id int);"),
        (
            "002_index.sql",
            "-- stepmigrate: no-transaction\nCREATE INDEX CONCURRENTLY t_id_idx ON t (id);\n",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    let mut holder = db.conn().await;
    sqlx::raw_sql("BEGIN; LOCK TABLE t IN SHARE MODE;")
        .execute(&mut holder)
        .await
        .unwrap();
    let run = db.cli(
        dir.path(),
        &[
            "--json",
            "up",
            "--lock-timeout",
            "300ms",
            "--lock-retries",
            "3",
        ],
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    // Retrying would find its own `started` row and call it applied: it must fail, dirty.
    run.assert_code(1);
    let doc = run.json();
    assert_eq!(
        doc["error"]["name"], "SqlFailed",
        "not LockTimeout: a retry is not safe outside a transaction"
    );
    assert_eq!(
        doc["error"]["details"]["migration"]["error"]["sqlstate"],
        "55P03"
    );
    db.cli(dir.path(), &["up"]).assert_code(4);
    assert_eq!(db.applied().await, vec!["001"]);
}

#[tokio::test]
async fn a_late_failure_record_never_overwrites_an_applied_migration() {
    let db = TestDb::new().await;
    let dir = numbered_tables(1);
    let m = db.migrator(dir.path(), common::settings());
    m.apply_range(&"001".parse().unwrap(), &"001".parse().unwrap(), "run-1")
        .await
        .unwrap();
    let failure = stepmigrate_core::error::MigrationFailure {
        version: "001".parse().unwrap(),
        name: "001_create_t1".into(),
        file: dir.file("001_create_t1.sql"),
        dirty: false,
        notices: Vec::new(),
        rollback: false,
        recorded: false,
        transactional: true,
        error: stepmigrate_core::error::SqlError {
            sqlstate: "40P01".into(),
            message: "deadlock detected".into(),
            ..Default::default()
        },
    };
    m.record_failure(&failure, "run-0").await.unwrap();
    assert_eq!(db.applied().await, vec!["001"], "still applied");
    assert_eq!(
        db.query("SELECT count(*)::text FROM schema_migration_events WHERE kind = 'failed'")
            .await[0],
        "0"
    );
}
