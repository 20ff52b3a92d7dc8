//! Nothing waits silently or for ever behind a lock: the read-only commands against a ledger
//! another session locked, a signal while they wait, and a deploy's run while a plain `up`
//! runs a long backfill. The real binary against a real PostgreSQL, a fresh database each.

mod common;

use std::process::{Child, Command};
use std::str::FromStr;
use std::time::{Duration, Instant};

use common::{cli_command, with_items, Dir, Run, TestDb};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, PgConnection};

/// What a hung command is given before the test calls it hung: a bound on the test, not
/// something the test measures.
const HUNG: Duration = Duration::from_secs(90);

/// Waits for `child`, killing it (and failing) if it is still running after [`HUNG`].
fn finish(mut child: Child, what: &str) -> Run {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > HUNG {
            child.kill().unwrap();
            let run = Run::from(child.wait_with_output().unwrap());
            panic!("{what} still waited after {HUNG:?}: {}", run.stderr);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Run::from(child.wait_with_output().unwrap())
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn stepmigrate")
}

/// A session named `ledger-holder` that holds the ledger's events table in ACCESS EXCLUSIVE
/// mode, in a transaction left open (as an `ALTER` on the ledger would); with its pid.
async fn lock_the_ledger(db: &TestDb) -> (PgConnection, i32) {
    let options = PgConnectOptions::from_str(&db.url)
        .unwrap()
        .application_name("ledger-holder");
    let mut holder = options.connect().await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE public.schema_migration_events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut holder)
        .await
        .unwrap();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut holder)
        .await
        .unwrap();
    (holder, pid)
}

/// One migration applied (so the ledger exists) and one pending (so `verify` has work).
async fn applied_and_pending(db: &TestDb) -> Dir {
    let dir = Dir::new(&[("001_a.sql", "CREATE TABLE a (id int);\n")]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    dir.write("002_b.sql", "CREATE TABLE b (id int);\n");
    dir
}

/// The sessions of stepmigrate in this database that wait for a lock.
async fn stepmigrate_waiting(db: &TestDb) -> usize {
    db.query("SELECT count(*)::text FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'stepmigrate' AND wait_event_type = 'Lock'")
        .await[0]
        .parse()
        .unwrap()
}

#[tokio::test]
async fn status_and_verify_on_a_locked_ledger_fail_within_the_lock_timeout_naming_the_holder() {
    let db = TestDb::new().await;
    let dir = applied_and_pending(&db).await;
    let (_holder, pid) = lock_the_ledger(&db).await;
    // A lock on an application's table beside the ledger is in nobody's way: not named.
    let mut bystander = db.conn().await;
    sqlx::raw_sql("BEGIN; LOCK TABLE public.a IN ACCESS EXCLUSIVE MODE")
        .execute(&mut bystander)
        .await
        .unwrap();
    for args in [
        &["--json", "--lock-timeout", "1s", "status"][..],
        &["--json", "--lock-timeout", "1s", "plan"][..],
        &["--json", "--lock-timeout", "1s", "verify"][..],
        &["--json", "--lock-timeout", "1s", "ledger", "check"][..],
        &["--json", "--lock-timeout", "1s", "ledger", "rebuild"][..],
        &[
            "--json",
            "--lock-timeout",
            "1s",
            "resolve",
            "001",
            "--not-applied",
        ][..],
        &[
            "--json",
            "--lock-timeout",
            "1s",
            "down",
            "--to",
            "000",
            "--dry-run",
        ][..],
    ] {
        let run = finish(
            spawn(&mut cli_command(&db.url, dir.path(), args)),
            &args.join(" "),
        );
        run.assert_code(6);
        let doc = run.json();
        let error = &doc["error"];
        assert_eq!(error["name"], "LockTimeout", "{args:?}: {doc}");
        let message = error["message"].as_str().unwrap();
        for words in [
            "public.schema_migration_events",
            &format!("backend {pid}"),
            "\"ledger-holder\"",
            "idle in transaction",
            "pg_terminate_backend",
        ] {
            assert!(message.contains(words), "{args:?}: {words} in {message}");
        }
        let holders = error["details"]["holders"].as_array().unwrap();
        assert_eq!(holders.len(), 1, "{doc}");
        assert_eq!(holders[0]["pid"], pid);
        assert_eq!(holders[0]["relation"], "public.schema_migration_events");
    }
    // Waiting, the human output says on stderr what for before it gives up.
    let run = finish(
        spawn(&mut cli_command(
            &db.url,
            dir.path(),
            &["--lock-timeout", "6s", "status"],
        )),
        "status",
    );
    run.assert_code(6);
    let waiting = run.stderr.lines().next().unwrap_or_default();
    assert!(
        waiting.starts_with("waiting for a lock on"),
        "{}",
        run.stderr
    );
    assert!(
        waiting.contains(&format!("backend {pid}")) && waiting.contains("ledger-holder"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("error[LockTimeout]"), "{}", run.stderr);
    // Once the holder lets go, the same commands work.
    drop(_holder);
    db.cli(dir.path(), &["status"]).assert_code(0);
}

#[tokio::test]
async fn a_signal_ends_status_and_verify_waiting_on_a_locked_ledger_and_cancels_their_reads() {
    let db = TestDb::new().await;
    let dir = applied_and_pending(&db).await;
    let (_holder, _) = lock_the_ledger(&db).await;
    for (signal, args) in [
        ("-TERM", &["--lock-timeout", "0", "status"][..]),
        ("-INT", &["--lock-timeout", "0", "verify"][..]),
        (
            "-TERM",
            &["--lock-timeout", "0", "verify", "--in-transaction-only"][..],
        ),
        (
            "-TERM",
            &["--lock-timeout", "0", "down", "--to", "000", "--yes"][..],
        ),
    ] {
        let child = spawn(&mut cli_command(&db.url, dir.path(), args));
        let started = Instant::now();
        while stepmigrate_waiting(&db).await == 0 {
            assert!(started.elapsed() < HUNG, "{args:?} never waited");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sent = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let run = finish(child, &args.join(" "));
        // As `up` ends when interrupted: its own error and exit code, the read cancelled.
        run.assert_code(130);
        assert!(run.stderr.contains("interrupted"), "{}", run.stderr);
        // (`--in-transaction-only` waits for the migration lock, not in a read: nothing of
        // it ran.)
        assert!(
            run.stderr.contains("cancelled the read")
                || run.stderr.contains("interrupted: nothing was changed"),
            "{}",
            run.stderr
        );
        assert_eq!(
            stepmigrate_waiting(&db).await,
            0,
            "{args:?} left its read waiting on the server"
        );
    }
}

const AFTER_DEPLOY_BACKFILL: &str = "-- stepmigrate: after-deploy\n\
-- stepmigrate: batch\n\
-- stepmigrate: batch_size = 100\n\
-- stepmigrate: lock_timeout = 300ms\n\
UPDATE items SET done = v * 2, touched = touched + 1\n\
WHERE id IN (SELECT id FROM items WHERE done IS NULL ORDER BY id LIMIT :batch_size);\n";

#[tokio::test]
async fn a_deploy_runs_while_a_plain_up_backfills_and_the_backfill_then_finishes_once() {
    let db = TestDb::new().await;
    let rows = 2_000u64;
    let dir = Dir::new(&[("001_items.sql", &with_items(rows))]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    dir.write("002_backfill.sql", AFTER_DEPLOY_BACKFILL);
    // The last row stays locked by another session: the backfill goes up to its batch and
    // then keeps running (each try of that batch hits its lock_timeout and is tried again)
    // for as long as the test wants it to.
    let mut row_holder = db.conn().await;
    sqlx::raw_sql(&format!(
        "BEGIN; SELECT id FROM items WHERE id = {rows} FOR UPDATE"
    ))
    .execute(&mut row_holder)
    .await
    .unwrap();
    let backfill = spawn(
        cli_command(&db.url, dir.path(), &["--lock-retries", "1000", "up"])
            .env("STEPMIGRATE_BATCH_BUDGET", "1s"),
    );
    let started = Instant::now();
    let all_but_the_last = rows / 100 - 1;
    loop {
        let done: u64 = db
            .query("SELECT count(*)::text FROM schema_migration_events WHERE version = '002' AND kind = 'batch'")
            .await[0]
            .parse()
            .unwrap();
        if done == all_but_the_last {
            break;
        }
        assert!(started.elapsed() < HUNG, "the backfill did not get going");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The next deploy brings a new migration; its run leaves the backfill to the other run
    // and applies the new one while the backfill is still going.
    dir.write("003_new.sql", "CREATE TABLE deployed (id int);\n");
    let deploy = finish(
        spawn(&mut cli_command(
            &db.url,
            dir.path(),
            &["--json", "--lock-wait", "60s", "up", "--skip-after-deploy"],
        )),
        "the deploy's run",
    );
    deploy.assert_code(0);
    assert_eq!(deploy.json()["applied"], 1, "{}", deploy.stdout);
    assert!(db.table_exists("deployed").await);
    assert_eq!(
        db.applied().await,
        ["001", "003"],
        "the backfill is not done yet"
    );
    let mut backfill = backfill;
    assert!(
        backfill.try_wait().unwrap().is_none(),
        "the backfill is still running"
    );

    // Let the last batch through: the backfill finishes, every row done once.
    sqlx::raw_sql("COMMIT")
        .execute(&mut row_holder)
        .await
        .unwrap();
    let run = finish(backfill, "the backfill");
    run.assert_code(0);
    assert!(
        run.stderr.contains("letting go of the migration lock"),
        "{}",
        run.stderr
    );
    assert_eq!(db.applied().await, ["001", "002", "003"]);
    assert_eq!(
        db.query(
            "SELECT count(*)::text FROM items WHERE done IS NULL OR done <> v * 2 OR touched <> 1"
        )
        .await,
        ["0"]
    );
    // Each batch recorded once, numbered in order, their rows adding up to the table.
    let batches = db
        .query("SELECT concat_ws(',', progress->>'batches', progress->>'batch_rows') FROM schema_migration_events WHERE version = '002' AND kind = 'batch' ORDER BY id")
        .await;
    assert_eq!(batches.len() as u64, rows / 100, "{batches:?}");
    for (i, b) in batches.iter().enumerate() {
        assert_eq!(b, &format!("{},100", i + 1));
    }
    assert_eq!(
        db.query("SELECT concat_ws(',', progress->>'batches', progress->>'rows') FROM schema_migration_events WHERE version = '002' AND kind = 'applied'")
            .await,
        [format!("{},{rows}", rows / 100)]
    );
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
}

#[tokio::test]
async fn resolve_and_ledger_rebuild_say_they_wait_for_another_runner() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[(
        "001_a.sql",
        "-- stepmigrate: no-transaction\nCREATE TABLE a (id int);\n",
    )]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    // Another runner at work: it holds the migration lock of the ledger in `public`.
    let mut runner = db.conn().await;
    sqlx::raw_sql(
        "SELECT pg_advisory_lock(hashtextextended('stepmigrate.runner.' || 'public', 0))",
    )
    .execute(&mut runner)
    .await
    .unwrap();
    for args in [
        &["--lock-wait", "1s", "resolve", "001", "--applied"][..],
        &["--lock-wait", "1s", "ledger", "rebuild"][..],
    ] {
        let run = finish(
            spawn(&mut cli_command(&db.url, dir.path(), args)),
            &args.join(" "),
        );
        run.assert_code(6);
        assert!(
            run.stderr.contains("another runner is applying migrations"),
            "{args:?}: {}",
            run.stderr
        );
    }
}

/// `plan` and `down` behind a live runner's migration say what they wait for, and that it
/// may be a runner at work, then answer once it ends.
#[tokio::test]
async fn plan_and_down_say_they_wait_for_a_migration_in_flight() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_a.sql", "CREATE TABLE a (id int);\n"),
        ("001_a.down.sql", "DROP TABLE a;\n"),
    ]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    dir.write("002_slow.sql", "SELECT pg_sleep(4);\n");
    dir.write("002_slow.down.sql", "SELECT 1;\n");
    let runner = spawn(&mut cli_command(&db.url, dir.path(), &["up"]));
    let started = Instant::now();
    while db
        .query("SELECT count(*)::text FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%pg_sleep(4)%' AND pid <> pg_backend_pid()")
        .await[0]
        == "0"
    {
        assert!(started.elapsed() < HUNG, "the runner never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiting: Vec<(&[&str], Child)> = [&["plan"][..], &["down", "--to", "000", "--dry-run"][..]]
        .into_iter()
        .map(|args| (args, spawn(&mut cli_command(&db.url, dir.path(), args))))
        .collect();
    for (args, child) in waiting {
        let run = finish(child, &args.join(" "));
        run.assert_code(0);
        assert!(
            run.stderr
                .contains("a migration's transaction is open in backend")
                && run.stderr.contains("another runner at work"),
            "{args:?}: {}",
            run.stderr
        );
    }
    finish(runner, "up").assert_code(0);
}

/// A batch migration's pause longer than the batch budget is waited without the migration
/// lock: a deploy's run that waits less than the pause gets the lock and applies its
/// migration, and the backfill then finishes, each row once.
#[tokio::test]
async fn a_pause_longer_than_the_budget_is_waited_without_the_lock() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[(
        "001_items.sql",
        "CREATE TABLE items (id int PRIMARY KEY, v int);\nINSERT INTO items SELECT g, NULL FROM generate_series(1, 4) g;\n",
    )]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    dir.write(
        "002_backfill.sql",
        "-- stepmigrate: after-deploy\n-- stepmigrate: batch\n-- stepmigrate: batch_size = 2\n-- stepmigrate: pause = 3s\n\
         UPDATE items SET v = id WHERE id IN (SELECT id FROM items WHERE v IS NULL ORDER BY id LIMIT :batch_size);\n",
    );
    let backfill =
        spawn(cli_command(&db.url, dir.path(), &["up"]).env("STEPMIGRATE_BATCH_BUDGET", "1s"));
    let started = Instant::now();
    while db
        .query("SELECT count(*)::text FROM schema_migration_events WHERE version = '002' AND kind = 'batch'")
        .await[0]
        == "0"
    {
        assert!(started.elapsed() < HUNG, "the backfill did not get going");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    dir.write("003_new.sql", "CREATE TABLE deployed (id int);\n");
    let deploy = finish(
        spawn(&mut cli_command(
            &db.url,
            dir.path(),
            &["--json", "--lock-wait", "2s", "up", "--skip-after-deploy"],
        )),
        "the deploy's run",
    );
    deploy.assert_code(0);
    assert_eq!(deploy.json()["applied"], 1, "{}", deploy.stdout);
    let run = finish(backfill, "the backfill");
    run.assert_code(0);
    assert_eq!(
        db.query("SELECT count(*)::text FROM items WHERE v = id")
            .await,
        ["4"]
    );
    assert_eq!(db.applied().await, ["001", "002", "003"]);
}

/// A `down` that reverts a backfill while its `up` waits out a pause without the lock: the
/// `up` takes the lock again, finds the migration rolled back and stops, saying so (it
/// applied it again, undoing the rollback without a word).
#[tokio::test]
async fn a_backfill_rolled_back_during_its_pause_is_not_applied_again() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[(
        "001_items.sql",
        "CREATE TABLE items (id int PRIMARY KEY, v int);\nINSERT INTO items SELECT g, NULL FROM generate_series(1, 8) g;\n",
    )]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    dir.write(
        "002_backfill.sql",
        "-- stepmigrate: batch\n-- stepmigrate: batch_size = 2\n-- stepmigrate: pause = 3s\n\
         UPDATE items SET v = id WHERE id IN (SELECT id FROM items WHERE v IS NULL ORDER BY id LIMIT :batch_size);\n",
    );
    dir.write("002_backfill.down.sql", "UPDATE items SET v = NULL;\n");
    let backfill = spawn(
        cli_command(&db.url, dir.path(), &["--json", "up"]).env("STEPMIGRATE_BATCH_BUDGET", "1s"),
    );
    let started = Instant::now();
    while db
        .query("SELECT count(*)::text FROM schema_migration_events WHERE version = '002' AND kind = 'batch'")
        .await[0]
        == "0"
    {
        assert!(started.elapsed() < HUNG, "the backfill did not get going");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let down = finish(
        spawn(&mut cli_command(
            &db.url,
            dir.path(),
            &["--lock-wait", "2s", "down", "--to", "001", "--yes"],
        )),
        "the down",
    );
    down.assert_code(0);
    let run = finish(backfill, "the backfill");
    run.assert_code(0);
    let doc = run.json();
    assert!(
        doc["warnings"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w
                .as_str()
                .is_some_and(|w| w.contains("was rolled back by another runner")))),
        "{doc:#}"
    );
    assert_eq!(db.applied().await, ["001"]);
    assert_eq!(db.query("SELECT count(v)::text FROM items").await, ["0"]);
}
