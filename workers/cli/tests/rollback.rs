//! Rollback (`down`), dependencies between migrations, out-of-order versions and
//! `migrations.sum`, against a real PostgreSQL: the real binary, a fresh database each.

mod common;

use common::{Dir, Run, TestDb};

/// Three reversible migrations: tables a, b, c.
fn reversible() -> Dir {
    Dir::new(&[
        ("001_a.sql", "CREATE TABLE a (id int);\n"),
        ("001_a.down.sql", "DROP TABLE a;\n"),
        ("002_b.sql", "CREATE TABLE b (id int);\n"),
        ("002_b.down.sql", "DROP TABLE b;\n"),
        ("003_c.sql", "CREATE TABLE c (id int);\n"),
        ("003_c.down.sql", "DROP TABLE c;\n"),
    ])
}

async fn events(db: &TestDb) -> Vec<String> {
    db.query("SELECT version || ':' || kind FROM schema_migration_events WHERE version <> '000' ORDER BY id")
        .await
}

#[tokio::test]
async fn down_reverts_newest_first_and_the_migrations_are_pending_again() {
    let db = TestDb::new().await;
    let dir = reversible();
    db.cli(dir.path(), &["up"]).assert_code(0);

    let dry = db.cli(dir.path(), &["--json", "down", "--to", "001", "--dry-run"]);
    dry.assert_code(0);
    let reverts: Vec<String> = dry.json()["reverts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(reverts, ["003_c", "002_b"]);
    assert_eq!(
        db.applied().await,
        ["001", "002", "003"],
        "a dry run changes nothing"
    );

    // Not on a terminal: --yes is required.
    let refused = db.cli(dir.path(), &["down", "--to", "001"]);
    refused.assert_code(2);
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    assert_eq!(db.applied().await, ["001", "002", "003"]);

    let run = db.cli(dir.path(), &["--json", "down", "--to", "001", "--yes"]);
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(doc["rolled_back"], 2);
    assert_eq!(doc["results"][0]["name"], "003_c");
    assert_eq!(doc["results"][0]["outcome"], "rolled_back");
    assert_eq!(db.applied().await, ["001"]);
    assert!(!db.table_exists("c").await && !db.table_exists("b").await);
    assert_eq!(
        events(&db).await,
        [
            "001:applied",
            "002:applied",
            "003:applied",
            "003:rolled_back",
            "002:rolled_back"
        ]
    );
    let status = db.cli(dir.path(), &["--json", "status"]).json();
    assert_eq!(status["migrations"][2]["state"], "pending");
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);

    // Pending again: `up` re-applies them in order (a re-run, not an out-of-order arrival).
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert_eq!(db.applied().await, ["001", "002", "003"]);
    // --last 1 reverts the last one applied; 000 reverts everything.
    db.cli(dir.path(), &["down", "--last", "1", "--yes"])
        .assert_code(0);
    assert_eq!(db.applied().await, ["001", "002"]);
    db.cli(dir.path(), &["down", "--to", "000", "--yes"])
        .assert_code(0);
    assert!(db.applied().await.is_empty());
    let nothing = db.cli(dir.path(), &["down", "--to", "000", "--yes"]);
    nothing.assert_code(0);
    assert!(
        nothing.stdout.contains("nothing to roll back"),
        "{}",
        nothing.stdout
    );
}

#[tokio::test]
async fn rollback_is_refused_naming_irreversible_and_missing_down_scripts() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_a.sql", "CREATE TABLE a (id int);\n"),
        ("001_a.down.sql", "DROP TABLE a;\n"),
        (
            "002_drop.sql",
            "-- stepmigrate: irreversible\nALTER TABLE a ADD COLUMN x int;\n",
        ),
        ("003_c.sql", "CREATE TABLE c (id int);\n"),
    ]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    let run = db.cli(dir.path(), &["--json", "down", "--to", "000", "--yes"]);
    run.assert_code(11);
    let doc = run.json();
    assert_eq!(doc["error"]["name"], "RollbackRefused");
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(message.contains("002_drop: irreversible"), "{message}");
    assert!(message.contains("003_c: has no down script"), "{message}");
    assert_eq!(
        db.applied().await,
        ["001", "002", "003"],
        "nothing was reverted"
    );

    // `check` warns about 003 (no down file, not marked), not about 002.
    let check = db.cli(dir.path(), &["--json", "check"]);
    let findings = check.json()["findings"].clone();
    let missing: Vec<&str> = findings
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule"] == "missing-down")
        .map(|f| f["file"].as_str().unwrap())
        .collect();
    assert_eq!(missing.len(), 1, "{findings}");
    assert!(missing[0].ends_with("003_c.sql"));
}

#[tokio::test]
async fn a_failing_down_stops_there_is_recorded_and_the_migration_stays_applied() {
    let db = TestDb::new().await;
    let dir = reversible();
    dir.write(
        "002_b.down.sql",
        "DROP TABLE b;\nDROP TABLE no_such_table;\n",
    );
    db.cli(dir.path(), &["up"]).assert_code(0);
    let run = db.cli(dir.path(), &["down", "--to", "000", "--yes"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("the rollback of 002_b failed"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("no_such_table"), "{}", run.stderr);
    // 003 reverted; 002's down rolled back whole; 001 not tried.
    assert_eq!(db.applied().await, ["001", "002"]);
    assert!(db.table_exists("b").await);
    let kinds = events(&db).await;
    assert_eq!(&kinds[3..], ["003:rolled_back", "002:rollback_failed"]);
    let status = db.cli(dir.path(), &["--json", "status"]).json();
    assert_eq!(status["migrations"][1]["state"], "applied", "{status}");
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
}

#[tokio::test]
async fn a_failing_no_transaction_down_is_dirty_and_resolved_like_an_up() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_t.sql", "CREATE TABLE t (id int);\n"),
        ("001_t.down.sql", "DROP TABLE t;\n"),
        ("002_index.sql", "-- stepmigrate: no-transaction\nCREATE INDEX CONCURRENTLY t_id_idx ON t (id);\n"),
        (
            "002_index.down.sql",
            "-- stepmigrate: no-transaction\nDROP INDEX CONCURRENTLY t_id_idx;\nDROP INDEX CONCURRENTLY no_such_index;\n",
        ),
    ]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    let run = db.cli(dir.path(), &["--json", "down", "--last", "1", "--yes"]);
    run.assert_code(1);
    assert_eq!(
        run.json()["error"]["details"]["migration"]["rollback"],
        true
    );
    let status = db.cli(dir.path(), &["--json", "status"]);
    status.assert_code(4);
    assert_eq!(status.json()["migrations"][1]["state"], "dirty");
    // Everything refuses until resolved: up, and another down.
    db.cli(dir.path(), &["up"]).assert_code(4);
    db.cli(dir.path(), &["down", "--last", "1", "--yes"])
        .assert_code(4);
    // The index is gone: the down did its part; the operator says it is rolled back.
    db.cli(dir.path(), &["resolve", "002", "--not-applied"])
        .assert_code(0);
    assert_eq!(db.applied().await, ["001"]);
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
}

#[tokio::test]
async fn the_down_script_kept_in_the_ledger_runs_when_the_file_is_gone_or_changed() {
    let db = TestDb::new().await;
    let dir = reversible();
    dir.write(
        "003_c.down.sql",
        "DROP TABLE c;\nCREATE TABLE c_was_reverted (id int);\n",
    );
    db.cli(dir.path(), &["up"]).assert_code(0);

    // A changed down file: reported, and the kept copy runs unless --use-file.
    dir.write(
        "002_b.down.sql",
        "DROP TABLE b;\nCREATE TABLE b_from_the_file (id int);\n",
    );
    // Older code: its files stop at 002 (003 is unknown to it).
    let older = Dir::new(&[]);
    for name in ["001_a.sql", "001_a.down.sql", "002_b.sql", "002_b.down.sql"] {
        older.write(name, &std::fs::read_to_string(dir.file(name)).unwrap());
    }
    let dry = db.cli(
        older.path(),
        &["--json", "down", "--to", "001", "--dry-run"],
    );
    dry.assert_code(0);
    let doc = dry.json();
    assert_eq!(doc["reverts"][0]["name"], "003_c");
    assert_eq!(doc["reverts"][0]["source"], "ledger");
    assert_eq!(doc["reverts"][1]["source"], "ledger");
    assert_eq!(doc["reverts"][1]["file_changed"], true);
    assert!(
        doc["warnings"][0]
            .as_str()
            .unwrap()
            .contains("002_b: the down file changed"),
        "{doc}"
    );

    db.cli(older.path(), &["down", "--to", "001", "--yes"])
        .assert_code(0);
    assert!(
        db.table_exists("c_was_reverted").await,
        "003's kept script ran"
    );
    assert!(
        !db.table_exists("b_from_the_file").await,
        "002's kept copy ran, not the file"
    );
    assert_eq!(db.applied().await, ["001"]);

    // --use-file runs the file instead.
    db.exec("DROP TABLE c_was_reverted").await;
    db.cli(dir.path(), &["up"]).assert_code(0);
    db.cli(dir.path(), &["down", "--to", "001", "--yes", "--use-file"])
        .assert_code(0);
    assert!(db.table_exists("b_from_the_file").await);
}

#[tokio::test]
async fn four_concurrent_downs_revert_each_migration_once() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[]);
    for i in 1..=30 {
        dir.write(
            &format!("{i:03}_t{i}.sql"),
            &format!("CREATE TABLE t{i} (id int);\n"),
        );
        dir.write(
            &format!("{i:03}_t{i}.down.sql"),
            &format!("DROP TABLE t{i};\n"),
        );
    }
    db.cli(dir.path(), &["up"]).assert_code(0);
    let children: Vec<_> = (0..4)
        .map(|_| db.spawn_cli(dir.path(), &["--json", "down", "--to", "005", "--yes"]))
        .collect();
    let mut total = 0;
    for c in children {
        let run = Run::from(c.wait_with_output().unwrap());
        run.assert_code(0);
        total += run.json()["rolled_back"].as_u64().unwrap_or(0);
    }
    assert_eq!(total, 25, "each of 006..030 reverted exactly once");
    assert_eq!(db.applied().await.len(), 5);
    let reverted = db
        .query("SELECT count(*)::text FROM schema_migration_events WHERE kind = 'rolled_back'")
        .await;
    assert_eq!(reverted, ["25"]);
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
}

#[tokio::test]
async fn sigkill_during_a_rollback_leaves_schema_and_ledger_consistent() {
    let db = TestDb::new().await;
    let dir = reversible();
    dir.write("002_b.down.sql", "DROP TABLE b;\nSELECT pg_sleep(2);\n");
    db.cli(dir.path(), &["up"]).assert_code(0);
    let mut child = db.spawn_cli(dir.path(), &["down", "--to", "000", "--yes"]);
    db.wait_for_active_query("pg_sleep(2)").await;
    child.kill().unwrap();
    let _ = child.wait();
    // The killed session's transaction rolls back: 002 and its table are still there.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(db.applied().await, ["001", "002"]);
    assert!(db.table_exists("b").await);
    assert!(!db.table_exists("c").await);
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
    // The next run finishes the job.
    dir.write("002_b.down.sql", "DROP TABLE b;\n");
    db.cli(dir.path(), &["down", "--to", "000", "--yes", "--use-file"])
        .assert_code(0);
    assert!(db.applied().await.is_empty());
}

#[tokio::test]
async fn requires_and_conflicts_are_checked_before_anything_runs() {
    let db = TestDb::new().await;
    // A requirement must exist and sort earlier: both files named.
    let bad = Dir::new(&[
        (
            "001_a.sql",
            "-- stepmigrate: requires = 002\nCREATE TABLE a (id int);\n",
        ),
        ("002_b.sql", "CREATE TABLE b (id int);\n"),
        (
            "003_c.sql",
            "-- stepmigrate: conflicts = 002\nCREATE TABLE c (id int);\n",
        ),
    ]);
    let run = db.cli(bad.path(), &["up"]);
    run.assert_code(3);
    assert!(
        run.stderr
            .contains("001_a.sql: requires 002_b.sql, which does not sort before it"),
        "{}",
        run.stderr
    );
    // Two migrations of one set that conflict could never both be applied: the set is
    // refused, by `up` and by `check`, naming the file and line.
    assert!(
        run.stderr
            .contains("003_c.sql:1: conflicts with 002_b.sql, a migration of this set"),
        "{}",
        run.stderr
    );
    let check = db.cli(bad.path(), &["check"]);
    assert_ne!(check.code, 0);
    assert!(
        format!("{}{}", check.stdout, check.stderr).contains("conflicts with 002_b.sql"),
        "{check:?}"
    );

    let dir = Dir::new(&[
        ("001_a.sql", "CREATE TABLE a (id int);\n"),
        ("001_a.down.sql", "DROP TABLE a;\n"),
        ("002_b.sql", "CREATE TABLE b (id int);\n"),
        ("002_b.down.sql", "DROP TABLE b;\n"),
        (
            "003_c.sql",
            "-- stepmigrate: requires = 001\nCREATE TABLE c (id int);\n",
        ),
        ("003_c.down.sql", "DROP TABLE c;\n"),
        (
            "004_d.sql",
            "-- stepmigrate: conflicts = 009\nCREATE TABLE d (id int);\n",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "003"]).assert_code(0);
    // 009, another line of code's migration, applied to this database (as far as the ledger
    // says): 004 conflicts with it, so the run is refused, nothing applied.
    db.tamper("INSERT INTO schema_migrations (version, name, checksum, success) VALUES ('009', '009_other', 'x', true)")
        .await;
    let run = db.cli(dir.path(), &["--json", "up", "--allow-out-of-order"]);
    run.assert_code(12);
    let doc = run.json();
    assert_eq!(doc["error"]["name"], "DependencyNotMet");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("004_d conflicts with 009_other, which is applied"),
        "{doc}"
    );
    assert_eq!(db.applied().await, ["001", "002", "003", "009"]);
    db.tamper("DELETE FROM schema_migrations WHERE version = '009'")
        .await;
    let status = db.cli(dir.path(), &["--json", "status"]).json();
    assert_eq!(status["migrations"][2]["requires"][0], "001");
    assert_eq!(status["migrations"][3]["conflicts"][0], "009");

    // 001 re-applied last (deleted by hand, re-run): reverting only it would pull it from
    // under 003, which stays applied.
    db.exec("DELETE FROM schema_migrations WHERE version = '001'; DROP TABLE a;")
        .await;
    db.cli(dir.path(), &["up", "--to", "003"]).assert_code(0);
    let run = db.cli(dir.path(), &["--json", "down", "--last", "1", "--yes"]);
    run.assert_code(11);
    let message = run.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("001_a: required by 003_c, which stays applied"),
        "{message}"
    );

    // With 009 gone, 004 applies.
    db.cli(dir.path(), &["down", "--to", "001", "--yes"])
        .assert_code(0);
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert_eq!(db.applied().await, ["001", "002", "003", "004"]);
}

#[tokio::test]
async fn a_new_migration_below_the_newest_applied_is_refused_unless_allowed() {
    let db = TestDb::new().await;
    let dir = reversible();
    // 001 applied; then 003 applied by a deploy whose code did not have 002 yet (a branch
    // merged late brings it).
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    // Simulate: 003 applied by a deploy that did not have 002 yet.
    db.exec("CREATE TABLE c (id int)").await;
    let mut c = db.conn().await;
    sqlx::raw_sql("INSERT INTO schema_migration_events (run_id, version, name, kind, checksum) VALUES ('other', '003', '003_c', 'applied', encode(sha256('CREATE TABLE c (id int);\n'::bytea), 'hex'))")
        .execute(&mut c)
        .await
        .unwrap();
    let run = dir.path();
    let refused = db.cli(run, &["--json", "up"]);
    refused.assert_code(13);
    let doc = refused.json();
    assert_eq!(doc["error"]["name"], "OutOfOrder");
    assert!(
        doc["error"]["message"].as_str().unwrap().contains("002_b"),
        "{doc}"
    );
    assert_eq!(db.applied().await, ["001", "003"]);
    // Allowed: applied, and recorded in the order it actually ran (after 003).
    db.cli(run, &["up", "--allow-out-of-order"]).assert_code(0);
    assert_eq!(db.applied().await, ["001", "002", "003"]);
    assert_eq!(
        events(&db).await,
        ["001:applied", "003:applied", "002:applied"]
    );
    // The rollback follows the order they ran: 002 first.
    let dry = db
        .cli(run, &["--json", "down", "--last", "1", "--dry-run"])
        .json();
    assert_eq!(dry["reverts"][0]["name"], "002_b");
}

#[tokio::test]
async fn a_stale_migrations_sum_is_refused_by_up_and_check() {
    let db = TestDb::new().await;
    let dir = reversible();
    let hashed = db.cli(dir.path(), &["hash"]);
    hashed.assert_code(0);
    assert!(dir.file("migrations.sum").exists());
    db.cli(dir.path(), &["check"]).assert_code(0);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);

    // Added, edited, renamed: each is named, and up applies nothing.
    for (change, needle) in [
        ("add", "004_d.sql is not in it"),
        ("edit", "002_b.sql changed"),
        ("rename", "lists 003_c.sql, which is not in the directory"),
    ] {
        let d = reversible();
        std::fs::copy(dir.file("migrations.sum"), d.file("migrations.sum")).unwrap();
        match change {
            "add" => d.write("004_d.sql", "CREATE TABLE d (id int);\n"),
            "edit" => d.write("002_b.sql", "CREATE TABLE b (id bigint);\n"),
            _ => {
                d.remove("003_c.sql");
                d.remove("003_c.down.sql");
                d.write("003_cee.sql", "CREATE TABLE c (id int);\n");
            }
        }
        let up = db.cli(d.path(), &["up"]);
        up.assert_code(3);
        assert!(up.stderr.contains(needle), "{change}: {}", up.stderr);
        assert!(up.stderr.contains("stepmigrate hash"), "{}", up.stderr);
        let check = db.cli(d.path(), &["check"]);
        assert_ne!(check.code, 0, "{change}: {check:?}");
        assert!(
            check.stdout.contains("migrations-sum") || check.stderr.contains("migrations-sum"),
            "{check:?}"
        );
    }
    assert_eq!(db.applied().await, ["001"]);

    // Two branches, each adding a migration: git cannot merge their sums.
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "base"]);
    git(&["checkout", "-qb", "one"]);
    dir.write("004_one.sql", "CREATE TABLE one (id int);\n");
    db.cli(dir.path(), &["hash"]).assert_code(0);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "one"]);
    git(&["checkout", "-q", "main"]);
    git(&["checkout", "-qb", "two"]);
    dir.write("004_two.sql", "CREATE TABLE two (id int);\n");
    db.cli(dir.path(), &["hash"]).assert_code(0);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "two"]);
    let (merged, _) = git(&["merge", "-q", "one"]);
    assert!(!merged, "the second branch's merge must conflict");
    let (_, conflicted) = git(&["diff", "--name-only", "--diff-filter=U"]);
    assert!(conflicted.contains("migrations.sum"), "{conflicted}");
}

#[tokio::test]
async fn a_migration_applied_after_the_rollback_was_planned_stops_it_before_anything_runs() {
    use stepmigrate_core::rollback::RollbackTarget;
    use stepmigrate_core::runner::Quiet;
    let db = TestDb::new().await;
    let dir = reversible();
    db.cli(dir.path(), &["up", "--to", "002"]).assert_code(0);
    let m = db.migrator(dir.path(), common::settings());
    // Planned (and confirmed) while 002 was the newest...
    let plan = m
        .rollback_plan(&RollbackTarget::Last(1), false, &mut Quiet)
        .await
        .unwrap();
    assert_eq!(plan.reverts[0].name, "002_b");
    // ...then a deploy applies 003 before the rollback takes the lock.
    db.cli(dir.path(), &["up"]).assert_code(0);
    let err = m
        .down_planned(&plan, false, "run-x", &mut Quiet)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), stepmigrate_core::ErrorKind::RollbackRefused);
    assert!(
        err.to_string()
            .contains("003_c applied since the rollback was planned"),
        "{err}"
    );
    assert_eq!(
        db.applied().await,
        ["001", "002", "003"],
        "nothing was rolled back"
    );
    // The same from the command line: --to plans, then refuses under the lock if needed;
    // here nothing changed in between, so it runs.
    db.cli(dir.path(), &["down", "--to", "001", "--yes"])
        .assert_code(0);
    assert_eq!(db.applied().await, ["001"]);
}

/// A batch migration's batches committed between the plan (or its confirmation) and the lock
/// are a migration applied in part since: the rollback stops before anything runs, rather
/// than report done with those rows above its target.
#[tokio::test]
async fn batches_committed_after_the_rollback_was_planned_stop_it_before_anything_runs() {
    use stepmigrate_core::rollback::RollbackTarget;
    use stepmigrate_core::runner::Quiet;
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            "CREATE TABLE t (id int PRIMARY KEY, v int);\nINSERT INTO t SELECT g, NULL FROM generate_series(1, 50) g;\n",
        ),
        ("001_t.down.sql", "DROP TABLE t;\n"),
        ("002_e.sql", "CREATE TABLE e (id int);\n"),
        ("002_e.down.sql", "DROP TABLE e;\n"),
    ]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    let m = db.migrator(dir.path(), common::settings());
    let plan = m
        .rollback_plan(
            &RollbackTarget::To(stepmigrate_core::migration::Version::parse("001").unwrap()),
            false,
            &mut Quiet,
        )
        .await
        .unwrap();
    assert_eq!(plan.reverts.len(), 1, "{plan:?}");
    // Meanwhile a deploy adds a batch migration and its run commits two batches, then stops.
    let fill = "-- stepmigrate: batch\n-- stepmigrate: batch_size = 10\nUPDATE t SET v = 1 WHERE id IN (SELECT id FROM t WHERE v IS NULL ORDER BY id LIMIT :batch_size);\n";
    dir.write("003_fill.sql", fill);
    dir.write("003_fill.down.sql", "UPDATE t SET v = NULL;\n");
    db.exec("UPDATE t SET v = 1 WHERE id <= 20").await;
    let checksum = stepmigrate_core::migration::checksum(fill.as_bytes());
    for (n, rows) in [(1, 10), (2, 20)] {
        db.exec(&format!(
            "INSERT INTO schema_migration_events (run_id, version, name, kind, checksum, progress) VALUES ('r', '003', '003_fill', 'batch', '{checksum}', '{{\"batches\": {n}, \"rows\": {rows}, \"batch_rows\": 10}}')"
        ))
        .await;
    }
    let m = db.migrator(dir.path(), common::settings());
    let err = m
        .down_planned(&plan, false, "run-x", &mut Quiet)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), stepmigrate_core::ErrorKind::RollbackRefused);
    assert!(err.to_string().contains("003_fill (in part"), "{err}");
    assert_eq!(
        db.applied().await,
        ["001", "002"],
        "nothing was rolled back"
    );
}

#[tokio::test]
async fn older_code_still_refuses_to_revert_a_requirement_and_reverts_dependents_first() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_r.sql", "CREATE TABLE r (id int);\n"),
        ("001_r.down.sql", "DROP TABLE r;\n"),
        (
            "002_x.sql",
            "-- stepmigrate: requires = 001\nCREATE TABLE x (id int);\n",
        ),
        (
            "002_x.down.sql",
            "DELETE FROM r WHERE id IN (SELECT id FROM x);\nDROP TABLE x;\n",
        ),
    ]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    // 001 re-run after 002 (the documented recipe): it ran last.
    db.exec("DELETE FROM schema_migrations WHERE version = '001'; DROP TABLE r;")
        .await;
    db.cli(dir.path(), &["up"]).assert_code(0);
    // Older code knows only 001: the ledger kept 002's `requires`.
    let older = Dir::new(&[
        ("001_r.sql", "CREATE TABLE r (id int);\n"),
        ("001_r.down.sql", "DROP TABLE r;\n"),
    ]);
    let run = db.cli(older.path(), &["--json", "down", "--last", "1", "--yes"]);
    run.assert_code(11);
    assert!(
        run.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("001_r: required by 002_x"),
        "{}",
        run.stdout
    );
    // All of it: 002 (the dependent) is reverted before 001, although 001 ran last.
    let dry = db
        .cli(
            older.path(),
            &["--json", "down", "--to", "000", "--dry-run"],
        )
        .json();
    assert_eq!(dry["reverts"][0]["name"], "002_x");
    assert_eq!(dry["reverts"][1]["name"], "001_r");
    db.cli(older.path(), &["down", "--to", "000", "--yes"])
        .assert_code(0);
    assert!(db.applied().await.is_empty());
}

#[tokio::test]
async fn a_down_right_after_a_killed_up_waits_for_the_migration_still_committing() {
    let db = TestDb::new().await;
    let dir = reversible();
    std::fs::remove_file(dir.path().join("003_c.sql")).unwrap();
    std::fs::remove_file(dir.path().join("003_c.down.sql")).unwrap();
    dir.write(
        "002_b.sql",
        "CREATE TABLE b (id int);\nSELECT pg_sleep(3);\n",
    );
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    let mut child = db.spawn_cli(dir.path(), &["up"]);
    db.wait_for_active_query("pg_sleep(3)").await;
    child.kill().unwrap();
    let _ = child.wait();
    // The killed client's backend commits 002 a moment later: `status` says so meanwhile...
    let status = db.cli(dir.path(), &["status"]);
    assert!(
        status.stderr.contains("transaction is open in backend")
            || status.stdout.contains("transaction is open in backend"),
        "{}{}",
        status.stdout,
        status.stderr
    );
    // ... and `down` plans from the state after it, not before.
    let run = db.cli(dir.path(), &["--json", "down", "--to", "001", "--yes"]);
    run.assert_code(0);
    assert_eq!(run.json()["rolled_back"], 1, "{}", run.stdout);
    assert_eq!(db.applied().await, ["001"]);
    assert!(!db.table_exists("b").await);
}

#[tokio::test]
async fn ctrl_c_during_a_down_cancels_the_revert_on_the_server_and_says_so() {
    let db = TestDb::new().await;
    let dir = reversible();
    dir.write("003_c.down.sql", "DROP TABLE c;\nSELECT pg_sleep(3);\n");
    db.cli(dir.path(), &["up"]).assert_code(0);
    let child = db.spawn_cli(dir.path(), &["down", "--to", "002", "--yes"]);
    db.wait_for_active_query("pg_sleep(3)").await;
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let run = Run::from(child.wait_with_output().unwrap());
    // Not "bad input" (2): a code of its own, as a shell reports Ctrl-C.
    assert_eq!(run.code, 130, "{}", run.stderr);
    assert!(
        run.stderr.contains("interrupted"),
        "code {}: {}",
        run.code,
        run.stderr
    );
    assert!(run.stderr.contains("cancelled"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("this run rolled back nothing before the interrupt"),
        "{}",
        run.stderr
    );
    // Nothing of the revert committed after the interrupt: `plan` reads the ledger once no
    // migration's transaction is open, and 003 is still applied, its table there.
    db.cli(dir.path(), &["plan"]).assert_code(0);
    assert_eq!(db.applied().await, ["001", "002", "003"]);
    assert!(db.table_exists("c").await);
    // The next `up` has nothing to do and records nothing failed.
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert!(!events(&db).await.iter().any(|e| e.ends_with(":failed")));
}

/// The files of `dir` rewritten as a checkout with `core.autocrlf` has them.
fn to_crlf(dir: &Dir) {
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sql") {
            let text = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, text.replace('\n', "\r\n")).unwrap();
        }
    }
}

#[tokio::test]
async fn migrations_sum_takes_line_endings_as_the_ledger_does() {
    let db = TestDb::new().await;
    // Written on an LF checkout (CI, the Lambda bundle), used on a CRLF one.
    let dir = reversible();
    db.cli(dir.path(), &["hash"]).assert_code(0);
    to_crlf(&dir);
    db.cli(dir.path(), &["check"]).assert_code(0);
    db.cli(dir.path(), &["plan"]).assert_code(0);
    db.cli(dir.path(), &["up"]).assert_code(0);
    db.cli(dir.path(), &["down", "--to", "001", "--yes"])
        .assert_code(0);
    // Written on the CRLF checkout, used on an LF one: the same sum.
    db.cli(dir.path(), &["hash"]).assert_code(0);
    let lf = reversible();
    std::fs::copy(dir.file("migrations.sum"), lf.file("migrations.sum")).unwrap();
    db.cli(lf.path(), &["up"]).assert_code(0);
    db.cli(lf.path(), &["check"]).assert_code(0);
    // A real edit on the CRLF checkout is still refused.
    dir.write("002_b.sql", "CREATE TABLE b (id bigint);\r\n");
    let run = db.cli(dir.path(), &["plan"]);
    run.assert_code(3);
    assert!(run.stderr.contains("002_b.sql changed"), "{}", run.stderr);
}

#[tokio::test]
async fn down_dry_run_refuses_a_stale_sum_as_down_does() {
    let db = TestDb::new().await;
    let dir = reversible();
    db.cli(dir.path(), &["hash"]).assert_code(0);
    db.cli(dir.path(), &["up"]).assert_code(0);
    dir.write("003_c.down.sql", "DROP TABLE c CASCADE;\n");
    let real = db.cli(dir.path(), &["down", "--to", "001", "--yes"]);
    real.assert_code(3);
    let dry = db.cli(dir.path(), &["down", "--to", "001", "--dry-run"]);
    dry.assert_code(3);
    assert!(
        dry.stderr.contains("003_c.down.sql changed"),
        "{}",
        dry.stderr
    );
    assert_eq!(db.applied().await, ["001", "002", "003"]);
}

#[tokio::test]
async fn the_first_down_on_a_database_of_the_old_runner_adopts_its_ledger_and_reverts() {
    let db = TestDb::new().await;
    let dir = reversible();
    let sum =
        |name: &str| stepmigrate_core::migration::checksum(&std::fs::read(dir.file(name)).unwrap());
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
             ('001', '001_a', '2026-01-05 10:00:01', '{}', 12, true),
             ('002', '002_b', '2026-02-01 09:30:00', '{}', 7, true);
         CREATE TABLE a (id int); CREATE TABLE b (id int);",
        sum("001_a.sql"),
        sum("002_b.sql")
    ))
    .await;
    let run = db.cli(dir.path(), &["--json", "down", "--to", "000", "--yes"]);
    run.assert_code(0);
    assert_eq!(run.json()["rolled_back"], 2, "{}", run.stdout);
    assert!(db.applied().await.is_empty());
    assert!(!db.table_exists("a").await && !db.table_exists("b").await);
}

#[tokio::test]
async fn a_down_file_deleted_since_the_apply_is_refused_as_check_says() {
    let db = TestDb::new().await;
    let dir = reversible();
    db.cli(dir.path(), &["up"]).assert_code(0);
    dir.remove("002_b.down.sql");
    for args in [
        &["down", "--to", "001", "--dry-run"][..],
        &["down", "--to", "001", "--yes"][..],
    ] {
        let run = db.cli(dir.path(), args);
        run.assert_code(11);
        assert!(
            run.stderr
                .contains("002_b.down.sql was deleted since it was applied"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(db.applied().await, ["001", "002", "003"]);
    let check = db.cli(dir.path(), &["check"]);
    assert!(
        format!("{}{}", check.stdout, check.stderr).contains("would refuse"),
        "{check:?}"
    );
}

#[tokio::test]
async fn a_requirement_re_run_last_is_reverted_after_its_dependents_and_what_ran_after_them() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_a.sql", "CREATE TABLE a (id int);\n"),
        ("001_a.down.sql", "DROP TABLE a;\n"),
        (
            "002_b.sql",
            "-- stepmigrate: requires = 001\nCREATE TABLE b (id int);\n",
        ),
        ("002_b.down.sql", "DROP TABLE b;\n"),
        ("003_v.sql", "CREATE VIEW v AS SELECT id FROM b;\n"),
        ("003_v.down.sql", "DROP VIEW v;\n"),
    ]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    // 001 re-run (the documented recipe): runs 001, 002, 003, 001.
    db.exec("DELETE FROM schema_migrations WHERE version = '001'; DROP TABLE a;")
        .await;
    db.cli(dir.path(), &["up"]).assert_code(0);
    let dry = db
        .cli(dir.path(), &["--json", "down", "--to", "000", "--dry-run"])
        .json();
    let order: Vec<&str> = dry["reverts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["003_v", "002_b", "001_a"]);
    db.cli(dir.path(), &["down", "--to", "000", "--yes"])
        .assert_code(0);
    assert!(db.applied().await.is_empty());
}

#[tokio::test]
async fn an_up_right_after_a_killed_down_waits_for_the_revert_still_committing() {
    let db = TestDb::new().await;
    let dir = reversible();
    dir.write("003_c.down.sql", "SELECT pg_sleep(3);\nDROP TABLE c;\n");
    db.cli(dir.path(), &["up"]).assert_code(0);
    let mut child = db.spawn_cli(dir.path(), &["down", "--last", "1", "--yes"]);
    db.wait_for_active_query("pg_sleep(3)").await;
    child.kill().unwrap();
    let _ = child.wait();
    // The killed client's backend commits the revert of 003 a moment later: `up` must not
    // call the database up to date from the ledger before that commit.
    let run = db.cli(dir.path(), &["--json", "up"]);
    run.assert_code(0);
    assert_eq!(db.applied().await, ["001", "002", "003"], "{}", run.stdout);
    assert!(db.table_exists("c").await);
    assert_eq!(run.json()["applied"], 1, "{}", run.stdout);
}

/// `items` with 5,000 rows and a batch backfill that fails at its fourth batch (id 3500):
/// batches 1-3 (3,000 rows) commit, the migration is `failed`.
fn failed_backfill(with_down: bool) -> Dir {
    let dir = Dir::new(&[
        (
            "001_items.sql",
            "CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, done int);\n\
             INSERT INTO items (id, v) SELECT g, g % 100 FROM generate_series(1, 5000) g;\n",
        ),
        ("001_items.down.sql", "DROP TABLE items;\n"),
        (
            "002_backfill.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 1000\n\
             UPDATE items SET done = 100 / (id - 3500)\n\
             WHERE id IN (SELECT id FROM items WHERE done IS NULL ORDER BY id LIMIT :batch_size);\n",
        ),
    ]);
    if with_down {
        dir.write("002_backfill.down.sql", "UPDATE items SET done = NULL;\n");
    }
    dir
}

#[tokio::test]
async fn down_reverts_the_committed_batches_of_a_failed_batch_migration() {
    let db = TestDb::new().await;
    let dir = failed_backfill(true);
    db.cli(dir.path(), &["up"]).assert_code(1);
    let changed = "SELECT count(*)::text FROM items WHERE done IS NOT NULL";
    assert_eq!(db.query(changed).await, ["3000"]);

    let dry = db.cli(dir.path(), &["--json", "down", "--to", "001", "--dry-run"]);
    dry.assert_code(0);
    let doc = dry.json();
    assert_eq!(doc["reverts"][0]["name"], "002_backfill", "{doc}");
    assert_eq!(doc["reverts"][0]["source"], "file", "{doc}");
    assert_eq!(doc["reverts"][0]["batches"]["batches"], 3, "{doc}");
    assert_eq!(doc["reverts"][0]["batches"]["rows"], 3_000, "{doc}");
    let dry = db.cli(dir.path(), &["down", "--to", "001", "--dry-run"]);
    assert!(
        dry.stdout.contains("002_backfill")
            && dry
                .stdout
                .contains("partly applied: 3 batches, 3,000 rows committed")
            && !dry.stdout.contains("nothing to roll back"),
        "{}",
        dry.stdout
    );

    let run = db.cli(dir.path(), &["--json", "down", "--to", "001", "--yes"]);
    run.assert_code(0);
    assert_eq!(run.json()["rolled_back"], 1, "{}", run.stdout);
    assert_eq!(db.query(changed).await, ["0"], "its rows are reverted");
    assert_eq!(db.applied().await, ["001"]);
    let status = db.cli(dir.path(), &["--json", "status"]).json();
    assert_eq!(status["migrations"][1]["state"], "pending", "{status}");
    assert!(
        status["migrations"][1].get("batches").is_none(),
        "its progress starts over: {status}"
    );
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
    // Nothing is partly applied any more.
    let dry = db.cli(dir.path(), &["down", "--to", "001", "--dry-run"]);
    assert!(
        dry.stdout.contains("nothing to roll back"),
        "{}",
        dry.stdout
    );

    // Fixed, it runs again from its first batch.
    db.exec("DELETE FROM items WHERE id = 3500").await;
    let up = db.cli(dir.path(), &["--json", "up"]);
    up.assert_code(0);
    assert_eq!(
        up.json()["results"][0]["batches"]["batches"],
        5,
        "{}",
        up.stdout
    );
    assert_eq!(up.json()["results"][0]["batches"]["rows"], 4_999);
    assert_eq!(db.query(changed).await, ["4999"]);
}

/// The README's "delete its row to run it again" on a failed batch migration makes it pending,
/// not pending from scratch: the rows its committed batches changed stay changed, so it stays
/// partly applied in `status`, `plan` and `down`, and its next run resumes after them.
#[tokio::test]
async fn deleting_the_row_of_a_failed_batch_migration_keeps_it_partly_applied() {
    let db = TestDb::new().await;
    let dir = failed_backfill(true);
    db.cli(dir.path(), &["up"]).assert_code(1);
    db.exec("DELETE FROM schema_migrations WHERE version = '002'")
        .await;
    let changed = "SELECT count(*)::text FROM items WHERE done IS NOT NULL";
    assert_eq!(db.query(changed).await, ["3000"]);

    let status = db.cli(dir.path(), &["--json", "status"]).json();
    assert_eq!(status["migrations"][1]["state"], "pending", "{status}");
    assert_eq!(status["migrations"][1]["batches"]["batches"], 3, "{status}");
    assert_eq!(
        status["migrations"][1]["batches"]["rows"], 3_000,
        "{status}"
    );
    let plan = db.cli(dir.path(), &["plan"]);
    assert!(
        plan.stdout
            .contains("resumes after 3 batches (3,000 rows committed)"),
        "{}",
        plan.stdout
    );
    let dry = db.cli(dir.path(), &["down", "--to", "001", "--dry-run"]);
    dry.assert_code(0);
    assert!(
        dry.stdout
            .contains("partly applied: 3 batches, 3,000 rows committed")
            && !dry.stdout.contains("nothing to roll back"),
        "{}",
        dry.stdout
    );
    let run = db.cli(dir.path(), &["--json", "down", "--to", "001", "--yes"]);
    run.assert_code(0);
    assert_eq!(run.json()["rolled_back"], 1, "{}", run.stdout);
    assert_eq!(db.query(changed).await, ["0"], "its rows are reverted");
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
}

/// `up --json` of the set, which must succeed: the first result's batches and rows.
fn up_totals(db: &TestDb, dir: &Dir) -> (u64, u64) {
    let up = db.cli(dir.path(), &["--json", "up"]);
    up.assert_code(0);
    let batches = &up.json()["results"][0]["batches"];
    (
        batches["batches"].as_u64().unwrap_or_default(),
        batches["rows"].as_u64().unwrap_or_default(),
    )
}

/// Deleted again after a failure, the row leaves the progress as it was: the next run resumes
/// after the committed batches (their numbers continue); deleted once applied, the migration
/// runs again from its first batch.
#[tokio::test]
async fn after_its_row_is_deleted_a_failed_batch_migration_resumes_and_an_applied_one_starts_over()
{
    let db = TestDb::new().await;
    let dir = failed_backfill(true);
    db.cli(dir.path(), &["up"]).assert_code(1);
    db.exec("DELETE FROM schema_migrations WHERE version = '002'")
        .await;
    db.exec("DELETE FROM items WHERE id = 3500").await;
    assert_eq!(up_totals(&db, &dir), (5, 4_999));

    db.exec("DELETE FROM schema_migrations WHERE version = '002'")
        .await;
    db.exec("UPDATE items SET done = NULL").await;
    assert_eq!(up_totals(&db, &dir), (5, 4_999));
}

/// A partly applied batch migration whose down (outside a transaction) fails part way is
/// dirty, with its committed batches still shown. It was never applied, so `resolve
/// --applied` ("its down did not take effect") makes it partly applied again, never applied:
/// `status` and `down` show its batches, `down` reverts them, `up` would resume. A dirty down
/// of an applied migration still resolves `--applied` to applied.
#[tokio::test]
async fn resolve_applied_after_a_failed_down_of_a_partly_applied_batch_migration_is_partly_applied()
{
    let db = TestDb::new().await;
    let dir = failed_backfill(false);
    dir.write(
        "002_backfill.down.sql",
        "-- stepmigrate: no-transaction\nUPDATE items SET done = NULL WHERE id <= 1000;\nSELECT 1 / 0;\nUPDATE items SET done = NULL;\n",
    );
    db.cli(dir.path(), &["up"]).assert_code(1);
    let run = db.cli(dir.path(), &["down", "--to", "001", "--yes"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("partly applied for a batch migration"),
        "{}",
        run.stderr
    );
    let status = db.cli(dir.path(), &["--json", "status"]);
    assert_eq!(
        status.json()["migrations"][1]["state"],
        "dirty",
        "{}",
        status.stdout
    );
    assert!(
        !status.stdout.contains("no file any more"),
        "{}",
        status.stdout
    );
    let changed = "SELECT count(*)::text FROM items WHERE done IS NOT NULL";
    assert_eq!(db.query(changed).await, ["2000"], "the down reverted 1,000");
    let resolved = db.cli(dir.path(), &["--json", "resolve", "002", "--applied"]);
    resolved.assert_code(0);
    assert_eq!(
        resolved.json()["resolution"],
        "partly_applied",
        "{}",
        resolved.stdout
    );
    assert_eq!(db.applied().await, ["001"], "never recorded applied");
    assert_eq!(
        db.query("SELECT concat_ws(',', error->>'sqlstate', progress->>'batches') FROM schema_migration_events WHERE version = '002' ORDER BY id DESC LIMIT 1")
            .await,
        ["SM015,3"]
    );
    let status = db.cli(dir.path(), &["--json", "status"]).json();
    assert_eq!(status["migrations"][1]["batches"]["batches"], 3, "{status}");
    let dry = db.cli(dir.path(), &["down", "--to", "001", "--dry-run"]);
    assert!(
        dry.stdout
            .contains("partly applied: 3 batches, 3,000 rows committed")
            && !dry.stdout.contains("nothing to roll back"),
        "{}",
        dry.stdout
    );
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
    // Its down fixed, it reverts what remains.
    dir.write(
        "002_backfill.down.sql",
        "-- stepmigrate: no-transaction\nUPDATE items SET done = NULL;\n",
    );
    db.cli(dir.path(), &["down", "--to", "001", "--yes"])
        .assert_code(0);
    assert_eq!(db.query(changed).await, ["0"]);
    assert_eq!(
        db.cli(dir.path(), &["--json", "status"]).json()["migrations"][1]
            .get("batches")
            .cloned(),
        None,
        "reverted: its progress starts over"
    );

    // Applied, then dirty from a failing down (kept in the ledger when applied):
    // `--applied` is applied, as it was.
    db.exec("DELETE FROM items WHERE id = 3500").await;
    dir.write(
        "002_backfill.down.sql",
        "-- stepmigrate: no-transaction\nSELECT 1 / 0;\n",
    );
    db.cli(dir.path(), &["up"]).assert_code(0);
    db.cli(dir.path(), &["down", "--to", "001", "--yes"])
        .assert_code(1);
    db.cli(dir.path(), &["resolve", "002", "--applied"])
        .assert_code(0);
    assert_eq!(db.applied().await, ["001", "002"]);
}

/// A transactional down of a partly applied batch migration that fails rolls back whole and
/// is recorded (`rollback_failed`), as for an applied one; it stays partly applied.
#[tokio::test]
async fn a_failed_transactional_down_of_a_partly_applied_batch_migration_is_recorded() {
    let db = TestDb::new().await;
    let dir = failed_backfill(false);
    dir.write(
        "002_backfill.down.sql",
        "UPDATE items SET done = NULL;\nSELECT 1 / 0;\n",
    );
    db.cli(dir.path(), &["up"]).assert_code(1);
    let run = db.cli(dir.path(), &["down", "--to", "001", "--yes"]);
    run.assert_code(1);
    assert!(
        run.stderr.contains("is as it was before its down"),
        "{}",
        run.stderr
    );
    assert_eq!(
        db.query("SELECT kind FROM schema_migration_events WHERE version = '002' ORDER BY id DESC LIMIT 1")
            .await,
        ["rollback_failed"]
    );
    let status = db.cli(dir.path(), &["--json", "status"]);
    assert_eq!(
        status.json()["migrations"][1]["batches"]["batches"],
        3,
        "{}",
        status.stdout
    );
    assert!(
        status.json()["warnings"]
            .as_array()
            .is_none_or(|w| w.is_empty()),
        "{}",
        status.stdout
    );
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
}

#[tokio::test]
async fn down_refuses_to_pass_over_the_committed_batches_of_a_batch_migration_without_a_down() {
    let db = TestDb::new().await;
    let dir = failed_backfill(false);
    db.cli(dir.path(), &["up"]).assert_code(1);
    for args in [
        &["down", "--to", "001", "--dry-run"][..],
        &["down", "--to", "001", "--yes"][..],
    ] {
        let run = db.cli(dir.path(), args);
        run.assert_code(11);
        assert!(
            run.stderr.contains("002_backfill")
                && run
                    .stderr
                    .contains("partly applied: 3 batch(es) committed, 3000 rows changed")
                && !run.stdout.contains("nothing to roll back"),
            "{args:?}: {}{}",
            run.stdout,
            run.stderr
        );
    }
    assert_eq!(
        db.query("SELECT count(*)::text FROM items WHERE done IS NOT NULL")
            .await,
        ["3000"]
    );
    // Above it, the rollback goes on without it: the rows it changed stay, as they were.
    let run = db.cli(dir.path(), &["down", "--to", "002", "--dry-run"]);
    run.assert_code(0);
    assert!(
        run.stdout.contains("nothing to roll back"),
        "{}",
        run.stdout
    );
}

/// A second `down` started while the first one's `no-transaction` revert runs waits for it,
/// as two `up`s do, and finds the work done (it was refused as dirty).
#[tokio::test]
async fn a_second_down_waits_for_a_no_transaction_revert_at_work() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_t.sql", "CREATE TABLE t (id int);\n"),
        (
            "001_t.down.sql",
            "-- stepmigrate: no-transaction\nSELECT pg_sleep(1.5);\nDROP TABLE t;\n",
        ),
    ]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    let first = db.spawn_cli(dir.path(), &["down", "--to", "000", "--yes"]);
    db.wait_for_active_query("pg_sleep(1.5)").await;
    let second = db.cli(dir.path(), &["down", "--to", "000", "--yes"]);
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success(), "{first:?}");
    second.assert_code(0);
    assert!(!db.table_exists("t").await);
    assert_eq!(db.applied().await, Vec::<String>::new());
}

/// An interrupted `up --json` still names what the run committed before the interrupt (the
/// run's report is dropped with it): the error document says which migrations it applied.
#[tokio::test]
async fn an_interrupted_up_names_what_it_applied_before() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_a.sql", "CREATE TABLE a (id int);\n"),
        (
            "002_b.sql",
            "CREATE TABLE b (id int);\nSELECT pg_sleep(30);\n",
        ),
    ]);
    let child = db.spawn_cli(dir.path(), &["--json", "up"]);
    db.wait_for_active_query("pg_sleep(30)").await;
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let run = Run::from(child.wait_with_output().unwrap());
    assert_eq!(run.code, 130, "{}", run.stdout);
    let doc = run.json();
    let message = doc["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("this run applied 1 before the interrupt (001_a)"),
        "{doc:#}"
    );
    assert_eq!(db.applied().await, ["001"]);
}

/// A batch migration killed part way, whose files are then deleted: `down` refuses it and
/// says what to restore (it guessed the migration was applied by newer code).
#[tokio::test]
async fn a_partly_applied_batch_migration_without_files_says_what_to_restore() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_items.sql",
            "CREATE TABLE items (id int PRIMARY KEY, v int);\nINSERT INTO items SELECT g, NULL FROM generate_series(1, 20) g;\n",
        ),
        (
            "002_bf.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 2\n-- stepmigrate: pause = 10s\nUPDATE items SET v = id WHERE id IN (SELECT id FROM items WHERE v IS NULL ORDER BY id LIMIT :batch_size);\n",
        ),
        ("002_bf.down.sql", "UPDATE items SET v = NULL;\n"),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    let mut child = db.spawn_cli(dir.path(), &["up"]);
    let started = std::time::Instant::now();
    while db
        .query("SELECT count(*)::text FROM schema_migration_events WHERE version = '002' AND kind = 'batch'")
        .await[0]
        == "0"
    {
        assert!(started.elapsed().as_secs() < 60, "the backfill did not get going");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_file(dir.path().join("002_bf.sql")).unwrap();
    std::fs::remove_file(dir.path().join("002_bf.down.sql")).unwrap();
    let run = db.cli(dir.path(), &["down", "--to", "001", "--yes"]);
    run.assert_code(11);
    assert!(
        run.stderr.contains("restore its file and its down file")
            && !run.stderr.contains("newer code"),
        "{}",
        run.stderr
    );
}
