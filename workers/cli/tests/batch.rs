//! Batch migrations (`-- stepmigrate: batch`) against a real PostgreSQL: the real binary and
//! the library's budgeted run, a fresh database each.

mod common;

use std::time::{Duration, Instant};

use common::{with_items, Dir, TestDb};
use stepmigrate_core::apply::Outcome;
use stepmigrate_core::migration::Version;

const BACKFILL: &str = "-- stepmigrate: batch\n\
-- stepmigrate: batch_size = 1000\n\
UPDATE items SET done = v * 2, touched = touched + 1\n\
WHERE id IN (SELECT id FROM items WHERE done IS NULL ORDER BY id LIMIT :batch_size);\n";

async fn batch_events(db: &TestDb, version: &str) -> Vec<(u64, u64, u64)> {
    db.query(&format!(
        "SELECT concat_ws(',', progress->>'batches', progress->>'rows', progress->>'batch_rows') FROM schema_migration_events WHERE version = '{version}' AND kind = 'batch' ORDER BY id"
    ))
    .await
    .iter()
    .map(|t| {
        let v: Vec<u64> = t.split(',').map(|x| x.parse().unwrap()).collect();
        (v[0], v[1], v[2])
    })
    .collect()
}

#[tokio::test]
async fn a_backfill_runs_in_batches_until_a_batch_changes_nothing() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_items.sql", &with_items(25_500)),
        ("002_backfill.sql", BACKFILL),
        ("003_after.sql", "CREATE TABLE after_backfill (id int);\n"),
    ]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(0);
    let doc = run.json();
    let backfill = &doc["results"][1];
    assert_eq!(backfill["outcome"], "applied", "{doc}");
    assert_eq!(backfill["batches"]["batches"], 26);
    assert_eq!(backfill["batches"]["rows"], 25_500);
    assert_eq!(db.applied().await, ["001", "002", "003"]);
    assert_eq!(
        db.query(
            "SELECT count(*)::text FROM items WHERE done IS NULL OR done <> v * 2 OR touched <> 1"
        )
        .await,
        ["0"],
        "every row backfilled exactly once"
    );
    let events = batch_events(&db, "002").await;
    assert_eq!(events.len(), 26);
    assert_eq!(events.iter().map(|e| e.2).sum::<u64>(), 25_500);
    for (i, (batches, rows, _)) in events.iter().enumerate() {
        assert_eq!(*batches, i as u64 + 1);
        assert_eq!(
            *rows,
            events[..=i].iter().map(|e| e.2).sum::<u64>(),
            "each event's total is the sum of the batches so far"
        );
    }
    assert_eq!(events[25].2, 500, "the last batch holds the rest");
    let kinds = db
        .query("SELECT kind FROM schema_migration_events WHERE version = '002' AND kind <> 'batch' ORDER BY id")
        .await;
    assert_eq!(kinds, ["applied"]);
    assert_eq!(
        db.query("SELECT progress->>'rows' FROM schema_migration_events WHERE version = '002' AND kind = 'applied'")
            .await,
        ["25500"]
    );
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);

    // Human output, not on a terminal: the outcome with its totals.
    let db2 = TestDb::new().await;
    let human = db2.cli(dir.path(), &["up"]);
    human.assert_code(0);
    assert!(
        human.stdout.contains("002_backfill ... ok (")
            && human.stdout.contains("25,500 rows in 26 batches"),
        "{}",
        human.stdout
    );
}

#[tokio::test]
async fn a_failing_batch_keeps_the_batches_before_it_and_the_next_run_resumes() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_items.sql", &with_items(5_000)),
        (
            "002_backfill.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 1000\n\n\
             UPDATE items SET done = 100 / (id - 3500), touched = touched + 1\n\
             WHERE id IN (SELECT id FROM items WHERE done IS NULL ORDER BY id LIMIT :batch_size);\n",
        ),
    ]);
    let run = db.cli(dir.path(), &["up"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("002_backfill.sql") && run.stderr.contains("division by zero"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("at line 4"),
        "names the statement's line: {}",
        run.stderr
    );
    assert_eq!(db.applied().await, ["001"]);
    assert_eq!(
        batch_events(&db, "002").await.len(),
        3,
        "batches 1-3 committed"
    );
    assert_eq!(
        db.query("SELECT count(*)::text FROM items WHERE done IS NOT NULL")
            .await,
        ["3000"],
        "the failed batch left nothing"
    );
    assert_eq!(
        db.query("SELECT progress::text FROM schema_migration_events WHERE version = '002' AND kind = 'failed'")
            .await,
        [r#"{"rows": 3000, "batches": 3, "batch_rows": 1000}"#],
        "the failed event carries the committed batches' totals"
    );
    let status = db.cli(dir.path(), &["--json", "status"]).json();
    assert_eq!(status["migrations"][1]["state"], "failed", "{status}");
    assert!(
        !status["migrations"][1]["dirty"].as_bool().unwrap_or(false),
        "a failed batch is never dirty"
    );

    // Fix the data; the next run resumes at batch 4.
    db.exec("UPDATE items SET v = v WHERE id = 3500; DELETE FROM items WHERE id = 3500")
        .await;
    db.cli(dir.path(), &["up"]).assert_code(0);
    let events = batch_events(&db, "002").await;
    let numbers: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5], "resumed, never redone");
    assert_eq!(events.last().unwrap().1, 4_999);
    assert_eq!(
        db.query("SELECT count(*)::text FROM items WHERE done IS NULL OR touched <> 1")
            .await,
        ["0"]
    );
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
}

#[tokio::test]
async fn a_time_budget_stops_between_batches_and_the_next_call_resumes() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_items.sql", &with_items(4_000)),
        (
            "002_backfill.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 500\n-- stepmigrate: pause = 150ms\n\
             UPDATE items SET done = v, touched = touched + 1\n\
             WHERE id IN (SELECT id FROM items WHERE done IS NULL ORDER BY id LIMIT :batch_size);\n",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    let migrator = db.migrator(dir.path(), common::settings());
    let v = Version::parse("002").unwrap();
    let mut calls = 0;
    let mut unfinished = 0;
    loop {
        calls += 1;
        assert!(calls < 20, "never finished");
        let results = migrator
            .apply_range_until(
                &v,
                &v,
                "budget-test",
                Some(Instant::now() + Duration::from_millis(400)),
            )
            .await
            .unwrap();
        match &results[0].outcome {
            Outcome::Unfinished { progress } => {
                unfinished += 1;
                // Cumulative: all 8 batches of rows may be in before the empty one that
                // ends the migration.
                assert!(
                    progress.batches > 0 && progress.batches <= 8,
                    "{progress:?}"
                );
                assert_eq!(db.applied().await, ["001"], "still pending");
            }
            Outcome::Applied { batches, .. } => {
                assert_eq!(batches.unwrap().rows, 4_000);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        unfinished >= 2,
        "the budget cut the run {unfinished} time(s)"
    );
    let numbers: Vec<u64> = batch_events(&db, "002").await.iter().map(|e| e.0).collect();
    assert_eq!(numbers, (1..=8).collect::<Vec<_>>());
    assert_eq!(
        db.query("SELECT count(*)::text FROM items WHERE touched <> 1")
            .await,
        ["0"]
    );
}

#[tokio::test]
async fn sigkill_mid_backfill_then_up_finishes_every_row_once() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_items.sql", &with_items(1_000_000)),
        (
            "002_backfill.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 10000\n\
             UPDATE items SET done = v * 2, touched = touched + 1\n\
             WHERE id IN (SELECT id FROM items WHERE done IS NULL ORDER BY id LIMIT :batch_size);\n",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    let mut child = db.spawn_cli(dir.path(), &["up"]);
    // A concurrent writer: each of its updates waits at most for the batch holding the row.
    let writer = {
        let url = db.url.clone();
        tokio::spawn(async move {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
            let mut slowest = Duration::ZERO;
            for i in 0..150u64 {
                let started = Instant::now();
                sqlx::query("UPDATE items SET v = v WHERE id = $1")
                    .bind(((i * 7_919) % 1_000_000 + 1) as i64)
                    .execute(&mut conn)
                    .await
                    .unwrap();
                slowest = slowest.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            slowest
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while batch_events(&db, "002").await.len() < 20 {
        assert!(Instant::now() < deadline, "no batch committed in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = batch_events(&db, "002").await.len();
    assert!(before < 100, "killed mid-way ({before} batches)");
    assert_eq!(db.applied().await, ["001"]);

    db.cli(dir.path(), &["up"]).assert_code(0);
    let slowest_write = writer.await.unwrap();
    let events = batch_events(&db, "002").await;
    let numbers: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(
        numbers,
        (1..=100).collect::<Vec<_>>(),
        "resumed where it was"
    );
    assert_eq!(
        events.iter().map(|e| e.2).sum::<u64>(),
        1_000_000,
        "the events add up"
    );
    assert_eq!(
        db.query(
            "SELECT count(*)::text FROM items WHERE done IS DISTINCT FROM v * 2 OR touched <> 1"
        )
        .await,
        ["0"],
        "every row done once"
    );
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
    let longest_batch: u64 = db
        .query("SELECT max(execution_time_ms)::text FROM schema_migration_events WHERE version = '002' AND kind = 'batch'")
        .await[0]
        .parse()
        .unwrap();
    // A figure, not a timing target (those live in the benchmarks): on a loaded 2-core
    // machine a writer's wait also holds scheduling delays. The bound only catches a writer
    // held for the whole backfill.
    eprintln!("slowest concurrent write: {slowest_write:?}; longest batch: {longest_batch} ms");
    assert!(
        slowest_write <= Duration::from_millis(longest_batch * 2 + 30_000),
        "a writer waited {slowest_write:?}; the longest batch took {longest_batch} ms"
    );
}

#[tokio::test]
async fn a_lock_timeout_is_retried_batch_by_batch() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_items.sql", &with_items(3_000)),
        (
            "002_backfill.sql",
            "-- stepmigrate: batch\n-- stepmigrate: lock_timeout = 200ms\n\
             UPDATE items SET done = v, touched = touched + 1\n\
             WHERE id IN (SELECT id FROM items WHERE done IS NULL ORDER BY id LIMIT :batch_size);\n",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    // Another session holds an exclusive lock on the table for a while.
    let mut holder = db.conn().await;
    sqlx::raw_sql("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    let child = db.spawn_cli(dir.path(), &["up"]);
    tokio::time::sleep(Duration::from_millis(900)).await;
    sqlx::raw_sql("COMMIT").execute(&mut holder).await.unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("lock_timeout"), "{stderr}");
    assert_eq!(db.applied().await, ["001", "002"]);
    assert_eq!(
        db.query("SELECT count(*)::text FROM items WHERE touched <> 1")
            .await,
        ["0"]
    );
}

#[tokio::test]
async fn a_malformed_batch_migration_is_refused_with_its_file_and_line() {
    let db = TestDb::new().await;
    let cases: &[(&str, &str, &str)] = &[
        (
            "-- stepmigrate: batch\nUPDATE t SET a = 1 WHERE id IN (SELECT id FROM t LIMIT :batch_size);\nUPDATE t SET b = 1;\n",
            ":3",
            "one statement",
        ),
        (
            "-- stepmigrate: batch\nUPDATE t SET a = 1 WHERE a IS NULL;\n",
            ":2",
            "`:batch_size`",
        ),
        (
            "-- stepmigrate: batch\nSELECT * FROM t LIMIT :batch_size;\n",
            ":2",
            "changes data",
        ),
        (
            "-- stepmigrate: batch\nWITH d AS (UPDATE t SET a = 1 WHERE id IN (SELECT id FROM t WHERE a IS NULL LIMIT :batch_size) RETURNING 1) SELECT count(*) FROM d;\n",
            ":2",
            "changes data",
        ),
        (
            "-- stepmigrate: batch\n-- stepmigrate: no-transaction\nDELETE FROM t WHERE id IN (SELECT id FROM t LIMIT :batch_size);\n",
            ":2",
            "exclude each other",
        ),
        (
            "-- stepmigrate: batch_size = 100\nCREATE TABLE x (id int);\n",
            ":1",
            "add the header line `-- stepmigrate: batch`",
        ),
        (
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 0\nDELETE FROM t WHERE id IN (SELECT id FROM t LIMIT :batch_size);\n",
            ":2",
            "out of range",
        ),
        (
            "DELETE FROM t WHERE id IN (SELECT id FROM t LIMIT :batch_size);\n",
            ":1",
            "not a batch migration",
        ),
    ];
    for (sql, line, words) in cases {
        let dir = Dir::new(&[
            ("001_t.sql", "CREATE TABLE t (id int, a int, b int);\n"),
            ("002_x.sql", sql),
        ]);
        let run = db.cli(dir.path(), &["up"]);
        run.assert_code(3);
        assert!(
            run.stderr.contains(&format!("002_x.sql{line}")) && run.stderr.contains(words),
            "{sql}\n{}",
            run.stderr
        );
    }
    let dir = Dir::new(&[
        ("001_t.sql", "CREATE TABLE t (id int);\n"),
        ("001_t.down.sql", "-- stepmigrate: batch\nDELETE FROM t WHERE id IN (SELECT id FROM t LIMIT :batch_size);\n"),
    ]);
    let run = db.cli(dir.path(), &["up"]);
    run.assert_code(3);
    assert!(
        run.stderr.contains("001_t.down.sql") && run.stderr.contains("`batch`"),
        "{}",
        run.stderr
    );
    assert!(db.applied().await.is_empty(), "nothing ran");
}

#[tokio::test]
async fn check_catches_a_batch_statement_that_selects_done_rows_again() {
    let dir = Dir::new(&[
        (
            "001_items.sql",
            "CREATE TABLE items (id bigint PRIMARY KEY, v int, done int);\n",
        ),
        (
            "002_backfill.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 5000\n\n\
             UPDATE items SET done = v\n\
             WHERE id IN (SELECT id FROM items ORDER BY id LIMIT :batch_size);\n",
        ),
    ]);
    let run = common::run_cli(
        "postgres://nobody@127.0.0.1:1/none",
        dir.path(),
        &["check", "--disable", "missing-down", "--json"],
    );
    run.assert_code(1);
    let doc = run.json();
    let findings = doc["findings"].as_array().unwrap();
    let finding = findings
        .iter()
        .find(|f| f["rule"] == "batch-not-idempotent")
        .unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(finding["severity"], "error");
    assert_eq!(finding["line"], 4);
    assert!(finding["file"]
        .as_str()
        .unwrap()
        .ends_with("002_backfill.sql"));
    assert!(
        finding["message"].as_str().unwrap().contains("(done)"),
        "{finding}"
    );

    dir.write(
        "002_backfill.sql",
        "-- stepmigrate: batch\n-- stepmigrate: batch_size = 5000\n\n\
         UPDATE items SET done = v\n\
         WHERE id IN (SELECT id FROM items WHERE done IS NULL ORDER BY id LIMIT :batch_size);\n",
    );
    common::run_cli(
        "postgres://nobody@127.0.0.1:1/none",
        dir.path(),
        &["check", "--disable", "missing-down"],
    )
    .assert_code(0);
}

#[tokio::test]
async fn a_runaway_statement_stops_and_notices_are_kept() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_items.sql",
            "CREATE TABLE items (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0);\n\
             INSERT INTO items (id) SELECT g FROM generate_series(1, 2000) g;\n\
             ANALYZE items;\n\
             CREATE FUNCTION items_say() RETURNS trigger LANGUAGE plpgsql AS $$\n\
             BEGIN RAISE NOTICE 'items touched'; RETURN NULL; END $$;\n\
             CREATE TRIGGER items_say AFTER UPDATE ON items FOR EACH STATEMENT EXECUTE FUNCTION items_say();\n",
        ),
        (
            "002_runaway.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 100\n\
             UPDATE items SET n = n + 1\n\
             WHERE id IN (SELECT id FROM items WHERE n >= 0 ORDER BY id LIMIT :batch_size);\n",
        ),
    ]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(1);
    let doc = run.json();
    let text = doc.to_string();
    assert!(text.contains("selects rows it already did"), "{text}");
    assert!(text.contains("SM011"), "{text}");
    assert!(
        text.contains("items touched"),
        "the batches' notices are kept: {text}"
    );
    let batches = batch_events(&db, "002").await;
    let rows = batches.last().unwrap().1;
    assert!((6_000..=7_200).contains(&rows), "stopped at {rows} rows");
    let status = db.cli(dir.path(), &["--json", "status"]).json();
    assert_eq!(status["migrations"][1]["state"], "failed", "{status}");
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
}

#[tokio::test]
async fn a_pause_longer_than_the_servers_idle_session_timeout_still_finishes() {
    let db = TestDb::new().await;
    db.exec(&format!(
        "ALTER DATABASE {} SET idle_session_timeout = '300ms'",
        db.name
    ))
    .await;
    let dir = Dir::new(&[
        ("001_items.sql", &with_items(300)),
        (
            "002_backfill.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 100\n-- stepmigrate: pause = 600ms\n\
             UPDATE items SET done = v, touched = touched + 1\n\
             WHERE id IN (SELECT id FROM items WHERE done IS NULL ORDER BY id LIMIT :batch_size);\n",
        ),
    ]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert_eq!(batch_events(&db, "002").await.len(), 3);
}

#[tokio::test]
async fn a_concurrent_index_build_drops_the_invalid_leftover_and_logs_its_progress() {
    let db = TestDb::new().await;
    db.exec(
        "CREATE TABLE big (id bigint PRIMARY KEY, c int);\n\
         INSERT INTO big SELECT g, g % 1000 FROM generate_series(1, 400000) g;",
    )
    .await;
    // A unique build over duplicates fails and leaves an INVALID index behind, which `IF NOT
    // EXISTS` would take for done.
    let mut conn = db.conn().await;
    assert!(
        sqlx::raw_sql("CREATE UNIQUE INDEX CONCURRENTLY big_c_key ON big (c)")
            .execute(&mut conn)
            .await
            .is_err()
    );
    assert_eq!(
        db.query("SELECT indisvalid::text FROM pg_index WHERE indexrelid = 'big_c_key'::regclass")
            .await,
        ["false"]
    );
    db.exec("UPDATE big SET c = id").await;
    let dir = Dir::new(&[(
        "001_index.sql",
        "-- stepmigrate: no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS big_c_key ON big (c);\n",
    )]);
    let run = db.cli_env(
        dir.path(),
        &["-v", "--json", "up"],
        &[("STEPMIGRATE_PROGRESS_INTERVAL", "20ms")],
    );
    run.assert_code(0);
    assert!(
        run.json()
            .to_string()
            .contains("dropped the INVALID index public.big_c_key"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("index build"),
        "progress lines: {}",
        run.stderr
    );
    assert_eq!(
        db.query("SELECT indisvalid::text FROM pg_index WHERE indexrelid = 'big_c_key'::regclass")
            .await,
        ["true"]
    );
}

#[tokio::test]
async fn the_deploys_run_leaves_after_deploy_migrations_and_a_plain_up_applies_them_later() {
    let db = TestDb::new().await;
    let after_deploy = format!("-- stepmigrate: after-deploy\n{BACKFILL}");
    let dir = Dir::new(&[
        ("001_items.sql", &with_items(2_500)),
        ("002_backfill.sql", &after_deploy),
        ("003_after.sql", "CREATE TABLE after_backfill (id int);\n"),
        (
            "004_not_null.sql",
            "-- stepmigrate: requires = 002\nALTER TABLE items ALTER done SET NOT NULL;\n",
        ),
    ]);
    let plan = db.cli(dir.path(), &["plan", "--skip-after-deploy"]);
    plan.assert_code(0);
    assert!(
        plan.stdout.contains("left for the run after the deploy (2 migration(s), after-deploy or requiring one): 002_backfill, 004_not_null"),
        "{}",
        plan.stdout
    );
    let run = db.cli(dir.path(), &["--json", "up", "--skip-after-deploy"]);
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(doc["applied"], 2, "{doc}");
    assert_eq!(
        doc["deferred"],
        serde_json::json!(["002_backfill", "004_not_null"])
    );
    assert_eq!(db.applied().await, ["001", "003"]);

    // The next deploy brings a newer migration: applied past the waiting ones.
    dir.write("005_more.sql", "CREATE TABLE more (id int);\n");
    db.cli(dir.path(), &["up", "--skip-after-deploy"])
        .assert_code(0);
    assert_eq!(db.applied().await, ["001", "003", "005"]);
    let status = db.cli(dir.path(), &["--json", "status"]);
    let entries = status.json()["migrations"].clone();
    assert_eq!(entries[1]["after_deploy"], true, "{entries}");
    assert_eq!(entries[1]["state"], "pending");

    // The run after the deploy: they are applied, not refused as out of order.
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(0);
    assert_eq!(run.json()["applied"], 2, "{}", run.stdout);
    assert_eq!(
        db.query("SELECT version::text FROM schema_migration_events WHERE kind = 'applied' AND version <> '000' ORDER BY id")
            .await,
        ["001", "003", "005", "002", "004"],
        "recorded in the order they ran"
    );
    assert_eq!(
        db.query("SELECT count(*)::text FROM items WHERE done IS NULL")
            .await,
        ["0"]
    );
}

/// Fails at its fourth batch (a division by zero at id 3500): batches 1-3 commit first.
const FAILS_AT_BATCH_4: &str = "-- stepmigrate: batch\n-- stepmigrate: batch_size = 1000\n\n\
UPDATE items SET done = 100 / (id - 3500), touched = touched + 1\n\
WHERE id IN (SELECT id FROM items WHERE done IS NULL ORDER BY id LIMIT :batch_size);\n";

#[tokio::test]
async fn a_failed_batch_migration_shows_the_batches_it_committed_in_up_and_status() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_items.sql", &with_items(5_000)),
        ("002_backfill.sql", FAILS_AT_BATCH_4),
    ]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(1);
    let doc = run.json();
    let failed = &doc["results"][1];
    assert_eq!(failed["outcome"], "failed", "{doc}");
    assert_eq!(failed["batches"]["batches"], 3, "{doc}");
    assert_eq!(failed["batches"]["rows"], 3_000, "{doc}");

    // The next run fails at the same batch: the three before it are still there.
    let human = db.cli(dir.path(), &["up"]);
    human.assert_code(1);
    assert!(
        human
            .stderr
            .contains("the 3 batches committed before it stay (3,000 rows changed)")
            && human.stderr.contains("it resumes after them"),
        "{}",
        human.stderr
    );

    let status = db.cli(dir.path(), &["--json", "status"]).json();
    assert_eq!(status["migrations"][1]["state"], "failed", "{status}");
    assert_eq!(status["migrations"][1]["batches"]["batches"], 3, "{status}");
    assert_eq!(
        status["migrations"][1]["batches"]["rows"], 3_000,
        "{status}"
    );
    assert!(status["migrations"][0].get("batches").is_none(), "{status}");
    let status = db.cli(dir.path(), &["status"]);
    status.assert_code(0);
    assert!(
        status
            .stdout
            .contains("after 3 batches (3,000 rows committed; `up` resumes)"),
        "{}",
        status.stdout
    );
    // `plan` (and the Step Functions status, which reads the same plan) says it too.
    let plan = db.cli(dir.path(), &["plan"]);
    assert!(
        plan.stdout.contains(
            "002_backfill  (retry after a failure, resumes after 3 batches (3,000 rows committed))"
        ),
        "{}",
        plan.stdout
    );
    let plan = db.cli(dir.path(), &["--json", "plan"]).json();
    assert_eq!(plan["pending"][0]["batches"]["rows"], 3_000, "{plan}");
}

#[tokio::test]
async fn an_interrupted_batch_migration_is_pending_with_its_committed_batches() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_items.sql", &with_items(5_000)),
        (
            "002_backfill.sql",
            &BACKFILL.replace(
                "-- stepmigrate: batch\n",
                "-- stepmigrate: batch\n-- stepmigrate: pause = 1h\n",
            ),
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    // Killed in the pause after its first batch.
    let mut child = db.spawn_cli(dir.path(), &["up"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while batch_events(&db, "002").await.is_empty() {
        assert!(Instant::now() < deadline, "no batch committed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let status = db.cli(dir.path(), &["--json", "status"]).json();
    assert_eq!(status["migrations"][1]["state"], "pending", "{status}");
    assert_eq!(status["migrations"][1]["batches"]["batches"], 1, "{status}");
    assert_eq!(
        status["migrations"][1]["batches"]["rows"], 1_000,
        "{status}"
    );
    let status = db.cli(dir.path(), &["status"]);
    assert!(
        status
            .stdout
            .contains("1 batch, 1,000 rows committed; `up` resumes"),
        "{}",
        status.stdout
    );

    // Pending, never failed: `down` below it still reverts its batch.
    dir.write(
        "002_backfill.down.sql",
        "UPDATE items SET done = NULL, touched = 0;\n",
    );
    let run = db.cli(dir.path(), &["--json", "down", "--to", "001", "--yes"]);
    run.assert_code(0);
    assert_eq!(run.json()["rolled_back"], 1, "{}", run.stdout);
    assert_eq!(
        db.query("SELECT count(*)::text FROM items WHERE done IS NOT NULL")
            .await,
        ["0"]
    );
    let status = db.cli(dir.path(), &["--json", "status"]).json();
    assert!(status["migrations"][1].get("batches").is_none(), "{status}");
}

#[tokio::test]
async fn a_batch_whose_backend_is_terminated_keeps_the_batches_before_it_and_says_so() {
    let db = TestDb::new().await;
    // The third batch (ids 2001-3000) sleeps at id 2500, where it is terminated.
    let dir = Dir::new(&[
        ("001_items.sql", &with_items(5_000)),
        (
            "002_backfill.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 1000\n\
             UPDATE items SET done = v + CASE WHEN id = 2500 THEN (SELECT 0 FROM pg_sleep(60)) ELSE 0 END,\n\
             touched = touched + 1\n\
             WHERE id IN (SELECT id FROM items WHERE done IS NULL ORDER BY id LIMIT :batch_size);\n",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    let child = db.spawn_cli(dir.path(), &["up"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while batch_events(&db, "002").await.len() < 2 {
        assert!(Instant::now() < deadline, "no two batches committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    db.wait_for_active_query("pg_sleep(60)").await;
    db.exec(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
         AND state = 'active' AND strpos(query, 'pg_sleep(60)') > 0",
    )
    .await;
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        !stderr.contains("nothing of it remains"),
        "2,000 rows remain changed: {stderr}"
    );
    assert!(
        stderr.contains("the 2 batches committed before it stay (2,000 rows changed)"),
        "{stderr}"
    );
    assert_eq!(
        db.query("SELECT count(*)::text FROM items WHERE done IS NOT NULL")
            .await,
        ["2000"]
    );
}

#[tokio::test]
async fn with_a_target_only_what_the_run_would_apply_is_deferred() {
    let db = TestDb::new().await;
    let after_deploy = format!("-- stepmigrate: after-deploy\n{BACKFILL}");
    let dir = Dir::new(&[
        ("001_items.sql", &with_items(100)),
        ("002_a.sql", "CREATE TABLE a (id int);\n"),
        ("003_b.sql", "CREATE TABLE b (id int);\n"),
        ("004_backfill.sql", &after_deploy),
    ]);
    let plan = db.cli(dir.path(), &["plan", "--skip-after-deploy", "--to", "003"]);
    plan.assert_code(0);
    assert!(
        !plan.stdout.contains("left for the run after the deploy"),
        "{}",
        plan.stdout
    );
    let plan = db.cli(
        dir.path(),
        &["--json", "plan", "--skip-after-deploy", "--to", "003"],
    );
    assert_eq!(
        plan.json()["deferred"],
        serde_json::json!([]),
        "{}",
        plan.stdout
    );
    let run = db.cli(
        dir.path(),
        &["--json", "up", "--skip-after-deploy", "--to", "003"],
    );
    run.assert_code(0);
    let doc = run.json();
    assert!(doc.get("deferred").is_none(), "{doc}");
    assert_eq!(db.applied().await, ["001", "002", "003"]);
    // Up to date to 003: still nothing deferred.
    let again = db.cli(dir.path(), &["up", "--skip-after-deploy", "--to", "003"]);
    again.assert_code(0);
    assert!(
        !again.stdout.contains("left for the run after the deploy"),
        "{}",
        again.stdout
    );
    // Without the target it is.
    let run = db.cli(dir.path(), &["--json", "up", "--skip-after-deploy"]);
    assert_eq!(run.json()["deferred"], serde_json::json!(["004_backfill"]));
}

/// A statement-level trigger on `table` (after `events`) that fails a batch once `batches`
/// batches have run: a statement the guard misses ends there with `tripwire`, instead of
/// running until the test harness gives up.
fn tripwire(table: &str, events: &str, batches: u32) -> String {
    format!(
        "CREATE SEQUENCE IF NOT EXISTS tripwire_batches;\n\
         CREATE OR REPLACE FUNCTION tripwire() RETURNS trigger LANGUAGE plpgsql AS $$\n\
         BEGIN IF nextval('public.tripwire_batches') > {batches} THEN RAISE EXCEPTION 'tripwire: never stopped'; END IF; RETURN NULL; END $$;\n\
         CREATE TRIGGER tripwire AFTER {events} ON {table} FOR EACH STATEMENT EXECUTE FUNCTION tripwire();\n"
    )
}

/// `up` of a set whose batch migration 002 runs away: stopped as runaway, its committed
/// batches kept, its `failed` event carrying their totals. Returns the message.
async fn stopped_as_runaway(db: &TestDb, dir: &Dir) -> String {
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(1);
    let text = run.json().to_string();
    assert!(
        text.contains("SM011") && text.contains("selects rows it already did"),
        "{text}"
    );
    assert!(!text.contains("tripwire"), "never stopped: {text}");
    let batches = batch_events(db, "002").await;
    assert!(!batches.is_empty(), "{text}");
    let last = *batches.last().unwrap();
    assert_eq!(last.0, batches.len() as u64, "the batches stay committed");
    assert_eq!(
        db.query("SELECT concat_ws(',', progress->>'batches', progress->>'rows', error->>'sqlstate') FROM schema_migration_events WHERE version = '002' AND kind = 'failed' ORDER BY id DESC LIMIT 1")
            .await,
        [format!("{},{},SM011", last.0, last.1)],
        "the failed event carries the committed totals"
    );
    let status = db.cli(dir.path(), &["--json", "status"]).json();
    assert_eq!(status["migrations"][1]["state"], "failed", "{status}");
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
    text
}

/// `t` with `n` rows, `x` to filter on and `y` to set, analyzed.
fn with_t(n: u64) -> String {
    format!(
        "CREATE TABLE t (id bigint PRIMARY KEY, x int, y int);\n\
         INSERT INTO t (id) SELECT g FROM generate_series(1, {n}) g;\n\
         ANALYZE t;\n"
    )
}

#[tokio::test]
async fn a_with_update_that_sets_another_column_than_it_filters_on_is_stopped() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            &format!("{}{}", with_t(1_000), tripwire("t", "UPDATE", 200)),
        ),
        (
            "002_runaway.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 50\n\
             WITH b AS (SELECT id FROM t WHERE x IS NULL ORDER BY id LIMIT :batch_size)\n\
             UPDATE t SET y = 1 FROM b WHERE t.id = b.id;\n",
        ),
    ]);
    let text = stopped_as_runaway(&db, &dir).await;
    // 3 x 1,000 rows + 10 batches of 50: stopped at the first batch past 3,500.
    assert_eq!(batch_events(&db, "002").await.last().unwrap().1, 3_550);
    assert!(
        text.contains("since its first batch the statement reported 3550 rows in 71 batches")
            && text.contains("public.t (1000 rows)")
            && text.contains("counted exactly")
            && text.contains("the 71 batches committed so far stay committed")
            && text.contains("the next run judges it afresh"),
        "{text}"
    );
    assert_eq!(
        db.query("SELECT count(*)::text FROM t WHERE y = 1").await,
        ["50"],
        "the committed batches' rows stay (the same 50, again and again)"
    );
}

#[tokio::test]
async fn a_move_within_one_table_is_stopped() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_q.sql",
            &format!(
                "CREATE TABLE q (id bigint, v int);\n\
                 INSERT INTO q SELECT g, g FROM generate_series(1, 1000) g;\n\
                 ANALYZE q;\n{}",
                tripwire("q", "INSERT", 200)
            ),
        ),
        (
            "002_runaway.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 50\n\
             WITH moved AS (DELETE FROM q WHERE id IN (SELECT id FROM q ORDER BY id LIMIT :batch_size) RETURNING *)\n\
             INSERT INTO q SELECT * FROM moved;\n",
        ),
    ]);
    let text = stopped_as_runaway(&db, &dir).await;
    assert!(text.contains("public.q (1000 rows)"), "{text}");
    assert_eq!(db.query("SELECT count(*)::text FROM q").await, ["1000"]);
}

#[tokio::test]
async fn a_runaway_on_a_table_never_analyzed_is_stopped() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            &format!(
                "CREATE TABLE t (id bigint PRIMARY KEY, n int NOT NULL DEFAULT 0) WITH (autovacuum_enabled = false);\n\
                 INSERT INTO t (id) SELECT g FROM generate_series(1, 1000) g;\n{}",
                tripwire("t", "UPDATE", 200)
            ),
        ),
        (
            "002_runaway.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 50\n\
             UPDATE t SET n = n + 1 WHERE id IN (SELECT id FROM t WHERE n >= 0 ORDER BY id LIMIT :batch_size);\n",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    assert_eq!(
        db.query("SELECT reltuples::text FROM pg_class WHERE oid = 't'::regclass")
            .await,
        ["-1"]
    );
    let text = stopped_as_runaway(&db, &dir).await;
    assert!(text.contains("public.t (1000 rows)"), "{text}");
}

/// `p`, partitioned in `parts` partitions of 100 ids each, with `rows` rows; only the
/// partitions analyzed (its parent's `reltuples` stays -1).
fn partitioned(parts: u64, rows: u64) -> String {
    let mut sql =
        "CREATE TABLE p (id bigint NOT NULL, x int, y int) PARTITION BY RANGE (id);\n".to_owned();
    for i in 0..parts {
        sql.push_str(&format!(
            "CREATE TABLE p{i} PARTITION OF p FOR VALUES FROM ({}) TO ({});\n",
            i * 100,
            (i + 1) * 100
        ));
    }
    sql.push_str(&format!(
        "INSERT INTO p (id) SELECT g % {} FROM generate_series(1, {rows}) g;\n",
        parts * 100
    ));
    for i in 0..parts {
        sql.push_str(&format!("ANALYZE p{i};\n"));
    }
    sql
}

#[tokio::test]
async fn a_runaway_on_a_partitioned_table_is_stopped_and_a_backfill_over_many_partitions_is_not() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_p.sql",
            &format!("{}{}", partitioned(4, 400), tripwire("p", "UPDATE", 200)),
        ),
        (
            "002_runaway.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 20\n\
             UPDATE p SET y = 1 WHERE id IN (SELECT id FROM p WHERE x IS NULL ORDER BY id LIMIT :batch_size);\n",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    assert_eq!(
        db.query("SELECT reltuples::text FROM pg_class WHERE oid = 'p'::regclass")
            .await,
        ["-1"]
    );
    let text = stopped_as_runaway(&db, &dir).await;
    assert!(text.contains("public.p (400 rows)"), "{text}");

    // A correct backfill over 30 partitions, none of them analyzed: 3,000 rows in 30 batches.
    let db = TestDb::new().await;
    let setup: String = partitioned(30, 3_000)
        .lines()
        .filter(|l| !l.starts_with("ANALYZE"))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = Dir::new(&[
        ("001_p.sql", &setup),
        (
            "002_backfill.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 100\n\
             UPDATE p SET x = 1 WHERE id IN (SELECT id FROM p WHERE x IS NULL ORDER BY id LIMIT :batch_size);\n",
        ),
    ]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(0);
    assert_eq!(
        run.json()["results"][1]["batches"]["rows"],
        3_000,
        "{}",
        run.stdout
    );
    assert_eq!(
        db.query("SELECT count(*)::text FROM p WHERE x IS NULL")
            .await,
        ["0"]
    );
}

#[tokio::test]
async fn a_runaway_through_an_updatable_view_is_stopped() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            &format!(
                "{}CREATE VIEW tv AS SELECT id, x, y FROM t;\n{}",
                with_t(1_000),
                tripwire("t", "UPDATE", 200)
            ),
        ),
        (
            "002_runaway.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 50\n\
             UPDATE tv SET y = 1 WHERE id IN (SELECT id FROM tv WHERE x IS NULL ORDER BY id LIMIT :batch_size);\n",
        ),
    ]);
    let text = stopped_as_runaway(&db, &dir).await;
    assert!(
        text.contains("public.t (1000 rows)"),
        "judged against the view's table: {text}"
    );
}

#[tokio::test]
async fn an_insert_into_a_small_table_from_a_big_one_completes() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_tables.sql",
            "CREATE TABLE small (id bigint PRIMARY KEY);\n\
             INSERT INTO small SELECT g FROM generate_series(1, 100) g;\n\
             CREATE TABLE big (id bigint PRIMARY KEY);\n\
             INSERT INTO big SELECT g FROM generate_series(1, 20000) g;\n\
             ANALYZE small, big;\n",
        ),
        (
            "002_copy.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 500\n\
             INSERT INTO small SELECT id FROM big b\n\
             WHERE NOT EXISTS (SELECT 1 FROM small s WHERE s.id = b.id) ORDER BY id LIMIT :batch_size;\n",
        ),
    ]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(doc["results"][1]["batches"]["rows"], 19_900, "{doc}");
    assert_eq!(
        db.query("SELECT count(*)::text FROM small").await,
        ["20000"]
    );
}

/// An `INSERT` whose only source is its own target, selecting the copies it made: judged
/// against the rows the table held before it (100), not left unjudged for reading no other
/// table.
#[tokio::test]
async fn an_insert_that_copies_its_own_copies_within_one_table_is_stopped() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            &format!(
                "CREATE TABLE t (id bigint PRIMARY KEY);
                 INSERT INTO t SELECT g FROM generate_series(1, 100) g;
                 ANALYZE t;
{}",
                tripwire("t", "INSERT", 200)
            ),
        ),
        (
            "002_runaway.sql",
            "-- stepmigrate: batch
-- stepmigrate: batch_size = 10
             INSERT INTO t SELECT a.id + 1000000 FROM t a
             WHERE NOT EXISTS (SELECT 1 FROM t b WHERE b.id = a.id + 1000000) LIMIT :batch_size;
",
        ),
    ]);
    let text = stopped_as_runaway(&db, &dir).await;
    // 3 x 100 rows + 10 batches of 10: stopped at the first batch past 400.
    assert_eq!(batch_events(&db, "002").await.last().unwrap().1, 410);
    assert!(
        text.contains("public.t (100 rows)") && text.contains("generate_series"),
        "{text}"
    );
    assert_eq!(db.query("SELECT count(*)::text FROM t").await, ["510"]);
}

/// With `track_counts` off PostgreSQL counts nothing, so the effect shows no table: the
/// table the statement names is judged instead, and a runaway still stops.
#[tokio::test]
async fn a_runaway_with_track_counts_off_is_stopped_by_the_table_it_names() {
    let db = TestDb::new().await;
    db.exec(&format!(
        "ALTER DATABASE {} SET track_counts = off",
        db.name
    ))
    .await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            &format!("{}{}", with_t(1_000), tripwire("t", "UPDATE", 300)),
        ),
        (
            "002_runaway.sql",
            "-- stepmigrate: batch
-- stepmigrate: batch_size = 50
             UPDATE t SET y = 1 WHERE id IN (SELECT id FROM t WHERE x IS NULL ORDER BY id LIMIT :batch_size);
",
        ),
    ]);
    let text = stopped_as_runaway(&db, &dir).await;
    assert!(
        text.contains("public.t (1000 rows)") && text.contains("track_counts off"),
        "{text}"
    );
    assert_eq!(batch_events(&db, "002").await.last().unwrap().1, 3_550);
}

/// A foreign table has no counters: a runaway `UPDATE` of one is judged against the table
/// it names, counted on its server.
#[tokio::test]
async fn a_runaway_on_a_foreign_table_is_stopped() {
    let remote = TestDb::new().await;
    // postgres_fdw updates row by row: each row is a statement there.
    remote
        .exec(&format!(
            "{}{}",
            with_t(1_000),
            tripwire("t", "UPDATE", 20_000)
        ))
        .await;
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_fdw.sql",
            &format!(
                "CREATE EXTENSION postgres_fdw;
                 CREATE SERVER remote FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', dbname '{}');
                 CREATE USER MAPPING FOR CURRENT_USER SERVER remote OPTIONS (user 'postgres');
                 CREATE FOREIGN TABLE t (id bigint, x int, y int) SERVER remote;
",
                remote.name
            ),
        ),
        (
            "002_runaway.sql",
            "-- stepmigrate: batch
-- stepmigrate: batch_size = 50
             UPDATE t SET y = 1 WHERE id IN (SELECT id FROM t WHERE x IS NULL ORDER BY id LIMIT :batch_size);
",
        ),
    ]);
    let text = stopped_as_runaway(&db, &dir).await;
    assert!(text.contains("public.t (1000 rows)"), "{text}");
    // A backfill of it that ends is not stopped.
    dir.write(
        "002_runaway.sql",
        "-- stepmigrate: batch
-- stepmigrate: batch_size = 50
         UPDATE t SET x = 1 WHERE id IN (SELECT id FROM t WHERE x IS NULL ORDER BY id LIMIT :batch_size);
",
    );
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(0);
    assert_eq!(
        remote
            .query("SELECT count(*)::text FROM t WHERE x IS NULL")
            .await,
        ["0"]
    );
}

/// Blind counters and a statement that names no table (a `WITH` first): stopped past the
/// slack, saying why.
#[tokio::test]
async fn a_blind_statement_that_names_no_table_is_stopped_past_the_slack() {
    let db = TestDb::new().await;
    db.exec(&format!(
        "ALTER DATABASE {} SET track_counts = off",
        db.name
    ))
    .await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            &format!("{}{}", with_t(1_000), tripwire("t", "UPDATE", 300)),
        ),
        (
            "002_runaway.sql",
            "-- stepmigrate: batch
-- stepmigrate: batch_size = 50
             WITH b AS (SELECT id FROM t WHERE x IS NULL ORDER BY id LIMIT :batch_size)
             UPDATE t SET y = 1 FROM b WHERE t.id = b.id;
",
        ),
    ]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(1);
    let text = run.json().to_string();
    assert!(
        text.contains("SM011") && text.contains("nothing can tell that it ends"),
        "{text}"
    );
    assert_eq!(batch_events(&db, "002").await.last().unwrap().1, 550);
}

/// A `WITH` that deletes, whose final `INSERT` keeps only some rows: batches that archive
/// none still deleted rows, so the migration goes on until a batch changes nothing at all
/// (it was recorded applied after its first batch, "0 rows", with 900 rows never done).
#[tokio::test]
async fn a_purge_whose_final_insert_reports_no_row_goes_on_until_nothing_is_deleted() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            "CREATE TABLE events (id bigint PRIMARY KEY, important bool NOT NULL);\n\
             CREATE TABLE archive (id bigint PRIMARY KEY, important bool NOT NULL);\n\
             INSERT INTO events SELECT g, g > 200 AND g % 10 = 0 FROM generate_series(1, 1000) g;\n",
        ),
        (
            "002_purge.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 100\n\
             WITH gone AS (DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT :batch_size) RETURNING *)\n\
             INSERT INTO archive SELECT * FROM gone WHERE important;\n",
        ),
    ]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(0);
    assert_eq!(db.query("SELECT count(*)::text FROM events").await, ["0"]);
    assert_eq!(db.query("SELECT count(*)::text FROM archive").await, ["80"]);
    let batches = &run.json()["results"][1]["batches"];
    assert_eq!(batches["batches"], 10, "{}", run.stdout);
    assert_eq!(batches["rows"], 280, "{}", run.stdout);
}

/// Its only table is its target, but the target was empty: the rows come from
/// `generate_series`, which nothing bounds, so the statement is not stopped.
#[tokio::test]
async fn a_fill_from_generate_series_into_an_empty_table_completes() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_g.sql",
            "CREATE TABLE g (id bigint PRIMARY KEY);
",
        ),
        (
            "002_fill.sql",
            "-- stepmigrate: batch
-- stepmigrate: batch_size = 100
             INSERT INTO g SELECT x FROM generate_series(1, 5000) x
             WHERE NOT EXISTS (SELECT 1 FROM g WHERE g.id = x) ORDER BY x LIMIT :batch_size;
",
        ),
    ]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(0);
    assert_eq!(
        run.json()["results"][1]["batches"]["rows"],
        5_000,
        "{}",
        run.stdout
    );
    assert_eq!(db.query("SELECT count(*)::text FROM g").await, ["5000"]);
}

#[tokio::test]
async fn an_update_of_a_table_analyzed_while_empty_then_filled_completes() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            "CREATE TABLE t (id bigint PRIMARY KEY, x int) WITH (autovacuum_enabled = false);\n\
             ANALYZE t;\n\
             INSERT INTO t (id) SELECT g FROM generate_series(1, 3000) g;\n",
        ),
        (
            "002_backfill.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 100\n\
             UPDATE t SET x = 1 WHERE id IN (SELECT id FROM t WHERE x IS NULL ORDER BY id LIMIT :batch_size);\n",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    assert_eq!(
        db.query("SELECT reltuples::text FROM pg_class WHERE oid = 't'::regclass")
            .await,
        ["0"]
    );
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(0);
    assert_eq!(
        run.json()["results"][0]["batches"]["batches"],
        30,
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn a_trigger_that_bumps_a_one_row_counter_is_no_runaway() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            &format!(
                "{}CREATE TABLE counter (n bigint NOT NULL);\n\
                 INSERT INTO counter VALUES (0);\n\
                 CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$\n\
                 BEGIN UPDATE counter SET n = n + 1; RETURN NULL; END $$;\n\
                 CREATE TRIGGER bump AFTER UPDATE ON t FOR EACH ROW EXECUTE FUNCTION bump();\n",
                with_t(2_000)
            ),
        ),
        (
            "002_backfill.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 50\n\
             WITH b AS (SELECT id FROM t WHERE x IS NULL ORDER BY id LIMIT :batch_size)\n\
             UPDATE t SET x = 1 FROM b WHERE t.id = b.id;\n",
        ),
    ]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert_eq!(db.query("SELECT n::text FROM counter").await, ["2000"]);
}

#[tokio::test]
async fn after_a_runaway_stop_the_corrected_statement_is_judged_afresh() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_t.sql", &with_t(1_000)),
        (
            "002_backfill.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 100\n\
             UPDATE t SET y = 1 WHERE id IN (SELECT id FROM t WHERE x IS NULL ORDER BY id LIMIT :batch_size);\n",
        ),
    ]);
    let text = stopped_as_runaway(&db, &dir).await;
    assert!(text.contains("reported 4100 rows in 41 batches"), "{text}");
    // Run again as it is: still runaway, and judged from the stop, not stopped at once.
    let again = db.cli(dir.path(), &["--json", "up"]);
    again.assert_code(1);
    let again = again.json().to_string();
    assert!(
        again.contains("since its stop as runaway at ")
            && again.contains("reported 4100 rows in 41 batches"),
        "{again}"
    );
    assert_eq!(batch_events(&db, "002").await.len(), 82);

    dir.write(
        "002_backfill.sql",
        "-- stepmigrate: batch\n-- stepmigrate: batch_size = 100\n\
         UPDATE t SET x = 1, y = 2 WHERE id IN (SELECT id FROM t WHERE x IS NULL ORDER BY id LIMIT :batch_size);\n",
    );
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(0);
    assert_eq!(
        run.json()["results"][0]["batches"]["batches"],
        92,
        "{}",
        run.stdout
    );
    assert_eq!(
        db.query("SELECT count(*)::text FROM t WHERE y = 2").await,
        ["1000"]
    );
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
}

#[tokio::test]
async fn a_terminated_batch_is_recorded_failed_with_the_committed_totals() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_items.sql",
            &format!(
                "{}CREATE SEQUENCE slow_batches;\n\
                 CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$\n\
                 BEGIN IF nextval('slow_batches') > 2 THEN PERFORM pg_sleep(60); END IF; RETURN NULL; END $$;\n\
                 CREATE TRIGGER slow AFTER UPDATE ON items FOR EACH STATEMENT EXECUTE FUNCTION slow();\n",
                with_items(1_000)
            ),
        ),
        (
            "002_backfill.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 100\n\
             UPDATE items SET done = v, touched = touched + 1\n\
             WHERE id IN (SELECT id FROM items WHERE done IS NULL ORDER BY id LIMIT :batch_size);\n",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    let child = db.spawn_cli(dir.path(), &["--json", "up"]);
    // The third batch sleeps in its trigger: the first two are committed by then.
    let deadline = Instant::now() + Duration::from_secs(60);
    while batch_events(&db, "002").await.len() < 2 {
        assert!(Instant::now() < deadline, "no batch committed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    db.wait_for_active_query("UPDATE items SET done").await;
    assert_eq!(batch_events(&db, "002").await.len(), 2);
    db.exec(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE strpos(query, 'UPDATE items SET done') > 0 AND state = 'active' AND pid <> pg_backend_pid() AND datname = current_database()",
    )
    .await;
    let out = child.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(
        db.query("SELECT progress::text FROM schema_migration_events WHERE version = '002' AND kind = 'failed'")
            .await,
        [r#"{"rows": 200, "batches": 2, "batch_rows": 100}"#],
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn an_edited_statement_is_judged_from_its_first_batch_not_the_old_files() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            &format!(
                "{}CREATE SEQUENCE statements;\n\
                 CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$\n\
                 BEGIN IF nextval('statements') = 36 THEN RAISE EXCEPTION 'the 36th statement fails'; END IF; RETURN NULL; END $$;\n\
                 CREATE TRIGGER fail_once AFTER UPDATE ON t FOR EACH STATEMENT EXECUTE FUNCTION fail_once();\n",
                with_t(100)
            ),
        ),
        (
            "002_backfill.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 10\n\
             UPDATE t SET y = 1 WHERE id IN (SELECT id FROM t WHERE x IS NULL ORDER BY id LIMIT :batch_size);\n",
        ),
    ]);
    // Runaway, but failing for another reason first: 35 batches, 350 rows of a 100-row table.
    let run = db.cli(dir.path(), &["up"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("the 36th statement fails"),
        "{}",
        run.stderr
    );
    assert_eq!(batch_events(&db, "002").await.len(), 35);

    // Fixed: its 100 rows are judged alone (the old file's 350 would pass 3 x 100 + 10 batches).
    dir.write(
        "002_backfill.sql",
        "-- stepmigrate: batch\n-- stepmigrate: batch_size = 10\n\
         UPDATE t SET x = 1 WHERE id IN (SELECT id FROM t WHERE x IS NULL ORDER BY id LIMIT :batch_size);\n",
    );
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(0);
    assert_eq!(
        run.json()["results"][0]["batches"]["rows"],
        450,
        "{}",
        run.stdout
    );
}

/// An INSERT whose rows a trigger stores elsewhere and returns NULL for (inheritance
/// routing; a view's INSTEAD OF trigger) reports `INSERT 0 0`: the rows it inserted count,
/// so it runs until every row is copied, not one batch.
#[tokio::test]
async fn an_insert_routed_by_a_trigger_goes_on_until_every_row_is_copied() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            "CREATE TABLE src (id int PRIMARY KEY);\n\
             INSERT INTO src SELECT g FROM generate_series(1, 50) g;\n\
             CREATE TABLE events (id int);\n\
             CREATE TABLE events_child (CHECK (id > 0)) INHERITS (events);\n\
             CREATE FUNCTION route() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO events_child VALUES (NEW.*); RETURN NULL; END $$;\n\
             CREATE TRIGGER route BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION route();\n\
             CREATE TABLE base (id int);\n\
             CREATE VIEW v AS SELECT id FROM base;\n\
             CREATE FUNCTION into_base() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO base VALUES (NEW.id); RETURN NULL; END $$;\n\
             CREATE TRIGGER into_base INSTEAD OF INSERT ON v FOR EACH ROW EXECUTE FUNCTION into_base();\n",
        ),
        (
            "002_copy.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 10\n\
             INSERT INTO events SELECT s.id FROM src s WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.id = s.id) ORDER BY s.id LIMIT :batch_size;\n",
        ),
        (
            "003_view.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 10\n\
             INSERT INTO v SELECT s.id FROM src s WHERE NOT EXISTS (SELECT 1 FROM v WHERE v.id = s.id) ORDER BY s.id LIMIT :batch_size;\n",
        ),
    ]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(0);
    assert_eq!(db.query("SELECT count(*)::text FROM events").await, ["50"]);
    assert_eq!(db.query("SELECT count(*)::text FROM base").await, ["50"]);
    let doc = run.json();
    for i in [1, 2] {
        assert_eq!(doc["results"][i]["batches"]["rows"], 50, "{doc}");
        assert_eq!(doc["results"][i]["batches"]["batches"], 5, "{doc}");
    }
}

/// An INSERT into a view whose INSTEAD OF trigger writes to a foreign table: no counter
/// sees its rows and its count says none, so the rows the view holds are counted: it goes
/// on until every row is copied.
#[tokio::test]
async fn an_insert_through_a_view_into_a_foreign_table_copies_every_row() {
    let remote = TestDb::new().await;
    remote
        .exec("CREATE TABLE dst_real (id int PRIMARY KEY)")
        .await;
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_setup.sql",
            &format!(
                "CREATE EXTENSION postgres_fdw;
                 CREATE SERVER arch FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', dbname '{}');
                 CREATE USER MAPPING FOR CURRENT_USER SERVER arch OPTIONS (user 'postgres');
                 CREATE TABLE src (id int PRIMARY KEY);
                 INSERT INTO src SELECT generate_series(1, 50);
                 CREATE FOREIGN TABLE dst_f (id int) SERVER arch OPTIONS (table_name 'dst_real');
                 CREATE VIEW dst AS SELECT id FROM dst_f;
                 CREATE FUNCTION route() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO dst_f VALUES (NEW.id); RETURN NULL; END $$;
                 CREATE TRIGGER tr INSTEAD OF INSERT ON dst FOR EACH ROW EXECUTE FUNCTION route();
",
                remote.name
            ),
        ),
        (
            "002_copy.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 10\n\
             INSERT INTO dst SELECT s.id FROM src s WHERE NOT EXISTS (SELECT 1 FROM dst d WHERE d.id = s.id) ORDER BY s.id LIMIT :batch_size;\n",
        ),
    ]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(0);
    assert_eq!(
        remote.query("SELECT count(*)::text FROM dst_real").await,
        ["50"]
    );
    let batches = &run.json()["results"][1]["batches"];
    assert_eq!(batches["rows"], 50, "{}", run.stdout);
    assert_eq!(batches["batches"], 5, "{}", run.stdout);
}

/// A statement-level trigger that bumps a counter on every UPDATE is not the batch's work:
/// the UPDATE's own count ends it once no row is left; a soft delete (a BEFORE DELETE
/// trigger that updates the row and returns NULL) counts as the rows it changed.
#[tokio::test]
async fn a_statement_trigger_does_not_keep_a_finished_batch_running() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            "CREATE TABLE t (id int PRIMARY KEY, v int, deleted_at timestamptz);\n\
             INSERT INTO t SELECT g, NULL FROM generate_series(1, 50) g;\n\
             CREATE TABLE stmt_audit (n int);\nINSERT INTO stmt_audit VALUES (0);\n\
             CREATE FUNCTION bump() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN UPDATE stmt_audit SET n = n + 1; RETURN NULL; END $$;\n\
             CREATE TRIGGER tr AFTER UPDATE ON t FOR EACH STATEMENT EXECUTE FUNCTION bump();\n\
             CREATE FUNCTION soft() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN UPDATE t SET deleted_at = now() WHERE id = OLD.id; RETURN NULL; END $$;\n\
             CREATE TRIGGER soft BEFORE DELETE ON t FOR EACH ROW EXECUTE FUNCTION soft();\n",
        ),
        (
            "002_fill.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 10\n\
             UPDATE t SET v = 1 WHERE id IN (SELECT id FROM t WHERE v IS NULL ORDER BY id LIMIT :batch_size);\n",
        ),
        (
            "003_purge.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 10\n\
             DELETE FROM t WHERE id IN (SELECT id FROM t WHERE deleted_at IS NULL ORDER BY id LIMIT :batch_size);\n",
        ),
    ]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(doc["results"][1]["batches"]["batches"], 5, "{doc}");
    assert_eq!(doc["results"][1]["batches"]["rows"], 50, "{doc}");
    assert_eq!(
        db.query("SELECT count(*)::text FROM t WHERE deleted_at IS NULL")
            .await,
        ["0"]
    );
}

/// What a batch changed through triggers counts where its own count says none: a soft
/// delete on a table that inherits from the target, a DELETE through a view's INSTEAD OF
/// trigger, and an INSERT in a WITH whose RETURNING a routing trigger left empty.
#[tokio::test]
async fn changes_made_through_triggers_keep_the_batch_going() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            "CREATE TABLE parent (id int PRIMARY KEY, deleted_at timestamptz);\n\
             CREATE TABLE child () INHERITS (parent);\n\
             INSERT INTO child SELECT g FROM generate_series(1, 50) g;\n\
             CREATE FUNCTION soft() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN UPDATE child SET deleted_at = now() WHERE id = OLD.id; RETURN NULL; END $$;\n\
             CREATE TRIGGER soft BEFORE DELETE ON child FOR EACH ROW EXECUTE FUNCTION soft();\n\
             CREATE TABLE base (id int PRIMARY KEY, deleted_at timestamptz);\n\
             INSERT INTO base SELECT g FROM generate_series(1, 50) g;\n\
             CREATE VIEW live AS SELECT id FROM base WHERE deleted_at IS NULL;\n\
             CREATE FUNCTION soft_view() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN UPDATE base SET deleted_at = now() WHERE id = OLD.id; RETURN NULL; END $$;\n\
             CREATE TRIGGER soft_view INSTEAD OF DELETE ON live FOR EACH ROW EXECUTE FUNCTION soft_view();\n\
             CREATE TABLE src (id int PRIMARY KEY, copied bool NOT NULL DEFAULT false);\n\
             INSERT INTO src SELECT g FROM generate_series(1, 50) g;\n\
             CREATE TABLE m (id int);\nCREATE TABLE m_a () INHERITS (m);\n\
             CREATE FUNCTION route() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO m_a VALUES (NEW.*); RETURN NULL; END $$;\n\
             CREATE TRIGGER route BEFORE INSERT ON m FOR EACH ROW EXECUTE FUNCTION route();\n",
        ),
        (
            "002_purge.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 10\n\
             DELETE FROM parent WHERE id IN (SELECT id FROM parent WHERE deleted_at IS NULL ORDER BY id LIMIT :batch_size);\n",
        ),
        (
            "003_view.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 10\n\
             DELETE FROM live WHERE id IN (SELECT id FROM live ORDER BY id LIMIT :batch_size);\n",
        ),
        (
            "004_copy.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 10\n\
             WITH ins AS (INSERT INTO m SELECT s.id FROM src s WHERE NOT EXISTS (SELECT 1 FROM m WHERE m.id = s.id) ORDER BY s.id LIMIT :batch_size RETURNING id)\n\
             UPDATE src SET copied = true WHERE id IN (SELECT id FROM ins);\n",
        ),
    ]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert_eq!(
        db.query("SELECT concat_ws(',', (SELECT count(*) FROM parent WHERE deleted_at IS NULL), (SELECT count(*) FROM live), (SELECT count(*) FROM m))")
            .await,
        ["0,0,50"]
    );
}

/// An INSERT into a view whose rule turns it into an UPDATE (`DO INSTEAD UPDATE`) says it
/// inserted nothing, and the view holds fewer rows after each batch (the rows it updated
/// leave it): a change either way is progress, so it goes on until no row is left.
#[tokio::test]
async fn an_insert_that_a_rule_turns_into_an_update_goes_on_until_done() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            "CREATE TABLE items (id int PRIMARY KEY, done boolean NOT NULL DEFAULT false);\n\
             INSERT INTO items SELECT g FROM generate_series(1, 50) g;\n\
             CREATE VIEW pending AS SELECT id FROM items WHERE NOT done;\n\
             CREATE RULE finish AS ON INSERT TO pending DO INSTEAD UPDATE items SET done = true WHERE id = NEW.id;\n",
        ),
        (
            "002_finish.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 10\n\
             INSERT INTO pending SELECT id FROM pending ORDER BY id LIMIT :batch_size;\n",
        ),
    ]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(0);
    assert_eq!(
        db.query("SELECT count(*)::text FROM items WHERE NOT done")
            .await,
        ["0"],
        "{}",
        run.stdout
    );
    assert_eq!(
        run.json()["results"][1]["batches"]["rows"],
        50,
        "{}",
        run.stdout
    );
}

/// An INSERT into a plain table whose BEFORE trigger stores each row in a foreign table and
/// returns NULL: its count says none and no counter here sees the rows, so the batch cannot
/// tell whether it copied any. It is never recorded applied with rows left: the batch is
/// rolled back and the migration fails, naming the foreign table.
#[tokio::test]
async fn a_trigger_that_writes_a_foreign_table_never_ends_a_batch_as_applied() {
    let remote = TestDb::new().await;
    remote.exec("CREATE TABLE store (id int PRIMARY KEY)").await;
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_setup.sql",
            &format!(
                "CREATE EXTENSION postgres_fdw;
                 CREATE SERVER arch FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', dbname '{}');
                 CREATE USER MAPPING FOR CURRENT_USER SERVER arch OPTIONS (user 'postgres');
                 CREATE TABLE src (id int PRIMARY KEY);
                 INSERT INTO src SELECT generate_series(1, 50);
                 CREATE FOREIGN TABLE remote_store (id int) SERVER arch OPTIONS (table_name 'store');
                 CREATE TABLE dst (id int PRIMARY KEY);
                 CREATE FUNCTION route() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO remote_store VALUES (NEW.id); RETURN NULL; END $$;
                 CREATE TRIGGER tr BEFORE INSERT ON dst FOR EACH ROW EXECUTE FUNCTION route();
",
                remote.name
            ),
        ),
        (
            "002_copy.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 10\n\
             INSERT INTO dst SELECT s.id FROM src s WHERE NOT EXISTS (SELECT 1 FROM remote_store d WHERE d.id = s.id) ORDER BY s.id LIMIT :batch_size;\n",
        ),
    ]);
    let run = db.cli(dir.path(), &["up"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        format!("{}{}", run.stdout, run.stderr).contains("wrote through the foreign table")
            && format!("{}{}", run.stdout, run.stderr).contains("remote_store"),
        "{}{}",
        run.stdout,
        run.stderr
    );
    assert!(!db.applied().await.contains(&"002".to_owned()));
    // The batch was rolled back: nothing reached the foreign server.
    assert_eq!(
        remote.query("SELECT count(*)::text FROM store").await,
        ["0"]
    );
}

/// A batch that breaks a deferred constraint fails as the migration, not at the runner's
/// COMMIT of its event: recorded `failed` with the batches committed before it, exit 1.
#[tokio::test]
async fn a_batch_that_breaks_a_deferred_constraint_is_recorded_failed() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_a.sql",
            "CREATE TABLE p (id int PRIMARY KEY);\nINSERT INTO p SELECT g FROM generate_series(1, 100) g;\n\
             CREATE TABLE c (id int PRIMARY KEY, pid int REFERENCES p DEFERRABLE INITIALLY DEFERRED);\n\
             INSERT INTO c SELECT g, NULL FROM generate_series(1, 100) g;\n",
        ),
        (
            "002_fill.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 10\n\
             UPDATE c SET pid = CASE WHEN id = 35 THEN 999 ELSE id END WHERE id IN (SELECT id FROM c WHERE pid IS NULL ORDER BY id LIMIT :batch_size);\n",
        ),
    ]);
    let run = db.cli(dir.path(), &["--json", "up"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let doc = run.json();
    assert_eq!(doc["error"]["name"], "SqlFailed", "{doc:#}");
    let failed = db
        .query("SELECT (progress->>'batches') || '/' || (progress->>'rows') FROM schema_migration_events WHERE version = '002' AND kind = 'failed'")
        .await;
    assert_eq!(failed, ["3/30"], "{doc:#}");
}

/// Batches committed from one version of the file are not finished by another (a second
/// runner with an edited file): refused, naming both checksums, and no row of the other
/// version is written.
#[tokio::test]
async fn batches_from_another_version_of_the_file_are_not_finished_by_this_one() {
    let db = TestDb::new().await;
    let fill = |v: u32| {
        format!(
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 10\n\
             UPDATE t SET v = {v} WHERE id IN (SELECT id FROM t WHERE v IS NULL ORDER BY id LIMIT :batch_size);\n"
        )
    };
    let dir = Dir::new(&[
        (
            "001_t.sql",
            "CREATE TABLE t (id int PRIMARY KEY, v int);\nINSERT INTO t SELECT g, NULL FROM generate_series(1, 50) g;\n",
        ),
        ("002_fill.sql", &fill(1)),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    // Two batches of version 1 committed, then the run stopped (a time budget).
    db.exec("UPDATE t SET v = 1 WHERE id <= 20").await;
    let checksum = stepmigrate_core::migration::checksum(fill(1).as_bytes());
    for (n, rows) in [(1, 10), (2, 20)] {
        db.exec(&format!(
            "INSERT INTO schema_migration_events (run_id, version, name, kind, checksum, progress) VALUES ('r', '002', '002_fill', 'batch', '{checksum}', '{{\"batches\": {n}, \"rows\": {rows}, \"batch_rows\": 10}}')"
        ))
        .await;
    }
    // The same SQL with other line endings is the same file: it resumes them.
    dir.write("002_fill.sql", &fill(1).replace('\n', "\r\n"));
    let plan = db.cli(dir.path(), &["plan"]);
    plan.assert_code(0);
    assert!(
        plan.stdout.contains("resumes after 2 batches"),
        "{}",
        plan.stdout
    );
    dir.write("002_fill.sql", &fill(2));
    // The review commands say what `up` does: it refuses.
    let status = db.cli(dir.path(), &["status"]);
    assert!(
        status.stdout.contains("from another version of its file")
            && !status.stdout.contains("`up` resumes"),
        "{}",
        status.stdout
    );
    for args in [&["plan"][..], &["up", "--dry-run"], &["up"]] {
        let run = db.cli(dir.path(), args);
        run.assert_code(2);
        assert!(
            run.stderr.contains("another version of its file"),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert_eq!(
        db.query("SELECT count(*)::text FROM t WHERE v = 2").await,
        ["0"]
    );
    // Nor by a file that is no batch migration any more: `up` refuses what `plan` refuses,
    // rather than apply it and lose sight of the committed batches.
    dir.write("002_fill.sql", "CREATE TABLE marker (id int);\n");
    for args in [&["plan"][..], &["up"]] {
        let run = db.cli(dir.path(), args);
        run.assert_code(2);
        assert!(
            run.stderr.contains("another version of its file"),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert!(!db.table_exists("marker").await);
}

/// Interrupted in a backfill's pause, `up` says the batches it committed stay (it said the
/// run applied nothing).
#[tokio::test]
async fn an_interrupted_backfill_names_the_batches_it_committed() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_items.sql", &with_items(5_000)),
        (
            "002_backfill.sql",
            &BACKFILL.replace(
                "-- stepmigrate: batch\n",
                "-- stepmigrate: batch\n-- stepmigrate: pause = 1h\n",
            ),
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    let child = db.spawn_cli(dir.path(), &["--json", "up"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while batch_events(&db, "002").await.is_empty() {
        assert!(Instant::now() < deadline, "no batch committed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let run = common::Run::from(child.wait_with_output().unwrap());
    assert_eq!(run.code, 130, "{}", run.stdout);
    let message = run.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("committed 1 batch(es) of 002_backfill (1000 rows), which stay changed"),
        "{message}"
    );
}
