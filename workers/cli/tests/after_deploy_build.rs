//! A long after-deploy build (a `no-transaction` migration of the after-deploy chain, e.g. a
//! `CREATE INDEX CONCURRENTLY` run as an ECS task for hours) yields the migration lock while
//! it builds, under a build lock of its own: a deploy meanwhile applies its other migrations
//! instead of waiting for the lock and failing; no runner runs the build again or applies
//! what requires it before it is recorded; a build whose session ended is plainly dirty.
//!
//! The build is held by the test, not timed: its first statement waits for an advisory lock
//! the test holds, and goes on when the test lets go.
#![cfg(feature = "remote")]

mod common;

use std::time::Duration;

use common::{settings, Dir, TestDb};
use serde_json::{json, Value};
use sqlx::PgConnection;
use stepmigrate_core::config::Settings;
use stepmigrate_lambda::steps::{
    apply_one, apply_task, plan, ApplyRequest, BatchSettings, PlanRequest, PlanSettings,
};
use stepmigrate_lambda::ErrorKind;

const HELD: &str = "pg_advisory_xact_lock(4242)";

fn set() -> Dir {
    Dir::new(&[
        ("001_items.sql", "CREATE TABLE items (id int);\n"),
        (
            "002_items_index.sql",
            "-- stepmigrate: no-transaction\n-- stepmigrate: after-deploy\n-- stepmigrate: lock_timeout = 0\nSELECT pg_advisory_xact_lock(4242);\nCREATE INDEX CONCURRENTLY items_id ON items (id);\n",
        ),
        (
            "003_needs_index.sql",
            "-- stepmigrate: requires = 002\nALTER TABLE items ADD COLUMN a int;\n",
        ),
        ("004_add_b.sql", "ALTER TABLE items ADD COLUMN b int;\n"),
    ])
}

/// Holds the advisory lock the build's first statement waits for, until dropped.
async fn hold_the_build(db: &TestDb) -> PgConnection {
    let mut conn = db.conn().await;
    sqlx::raw_sql("SELECT pg_advisory_lock(4242)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// Short: with the build holding the migration lock, as before, a runner gives up quickly.
fn short_wait() -> Settings {
    Settings {
        lock_wait: Duration::from_secs(2),
        ..settings()
    }
}

/// How many events of `kind` the ledger holds for `version`.
async fn events(db: &TestDb, version: &str, kind: &str) -> usize {
    db.query(&format!(
        "SELECT count(*)::text FROM schema_migration_events WHERE version = '{version}' AND kind = '{kind}'"
    ))
    .await[0]
        .parse()
        .unwrap()
}

async fn plan_of(db: &TestDb, dir: &Dir, input: Value) -> Value {
    let migrator = db.migrator(dir.path(), short_wait());
    let request: PlanRequest = serde_json::from_value(json!({
        "input": input, "execution": "arn:aws:states:eu-west-1:123456789012:execution:Migrations:deploy-8"
    }))
    .unwrap();
    serde_json::to_value(
        plan(&migrator, request, &PlanSettings::default())
            .await
            .unwrap(),
    )
    .unwrap()
}

fn request(plan: &Value, item: &Value) -> ApplyRequest {
    serde_json::from_value(json!({
        "run_id": plan["run_id"], "set_digest": plan["set_digest"], "range": item,
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_applies_a_newer_migration_while_an_after_deploy_task_builds() {
    let db = TestDb::new().await;
    let dir = set();
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    let holder = hold_the_build(&db).await;

    // The run after an earlier deploy: 002 as an ECS task (apply-one's task mode).
    let after = plan_of(&db, &dir, json!({"action": "migrate"})).await;
    let item = after["pending"][0].clone();
    assert_eq!(item["first"], "002", "{after}");
    let task_migrator = db.migrator(dir.path(), settings());
    let task = apply_task(&task_migrator, request(&after, &item));
    // The task's future is not Send: it runs beside the deploy in this test's own task.
    let deploy = async {
        db.wait_for_active_query(HELD).await;

        // The next deploy's run, meanwhile: it plans past the build and its ApplyOne applies 004
        // at once (it used to wait for the migration lock the task held, and give up).
        let deploy = plan_of(
            &db,
            &dir,
            json!({"action": "migrate", "skip_after_deploy": true, "source": "cdk"}),
        )
        .await;
        assert_eq!(
            deploy["deferred"],
            json!(["002_items_index", "003_needs_index"]),
            "{deploy}"
        );
        let items = deploy["pending"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{deploy}");
        assert_eq!(items[0]["first"], "004", "{deploy}");
        let migrator = db.migrator(dir.path(), short_wait());
        let out = apply_one(
            &migrator,
            request(&deploy, &items[0]),
            &BatchSettings::default(),
            None,
        )
        .await
        .expect("the deploy's ApplyOne is not held off by the after-deploy build");
        let out = serde_json::to_value(out).unwrap();
        assert!(out.to_string().contains("004"), "{out}");
        assert_eq!(db.applied().await, ["001", "004"]);

        // The build ends and is recorded; the ledger holds each migration once.
        drop(holder);
    };
    let (results, ()) = tokio::join!(task, deploy);
    let results = results.expect("the task applies 002");
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].outcome.name(), "applied");
    assert_eq!(db.applied().await, ["001", "002", "004"]);
    for version in ["001", "002", "004"] {
        assert_eq!(events(&db, version, "applied").await, 1, "{version}");
    }
    assert_eq!(events(&db, "002", "started").await, 1);
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
    // What requires the build follows it (here, the next plain run).
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert_eq!(db.applied().await, ["001", "002", "003", "004"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_runner_neither_reruns_the_build_nor_applies_what_requires_it() {
    let db = TestDb::new().await;
    let dir = set();
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    let holder = hold_the_build(&db).await;
    // A CLI runner after the deploy: 002 (the build), then 003 and 004.
    let runner = db.spawn_cli(dir.path(), &["up", "--json"]);
    db.wait_for_active_query(HELD).await;

    let status = db.cli(dir.path(), &["status", "--json"]).json();
    let state = |v: &str| {
        status["migrations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["version"] == v)
            .unwrap_or_else(|| panic!("{status}"))["state"]
            .clone()
    };
    assert_eq!(state("002"), "in_progress", "{status}");
    // A rollback planned meanwhile says the same as `status`: in progress, not dirty.
    let dry = db.cli(dir.path(), &["--json", "down", "--last", "1", "--dry-run"]);
    dry.assert_code(6);
    assert_eq!(dry.json()["error"]["name"], "LockTimeout", "{}", dry.stdout);
    assert!(
        dry.stdout.contains("is being applied right now"),
        "{}",
        dry.stdout
    );

    let versions = |run: &Value| -> Vec<String> {
        run["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["version"].as_str().unwrap().to_owned())
            .collect()
    };
    // A deploy's run through the CLI applies the newer migration at once.
    let deploy = db.cli_env(
        dir.path(),
        &["up", "--skip-after-deploy", "--json"],
        &[("STEPMIGRATE_LOCK_WAIT", "2s")],
    );
    deploy.assert_code(0);
    let deploy = deploy.json();
    assert_eq!(versions(&deploy), ["004"], "{deploy}");
    assert_eq!(
        deploy["deferred"],
        json!(["002_items_index", "003_needs_index"]),
        "{deploy}"
    );

    // A third, plain runner neither runs the build again nor applies what requires it.
    let third = db.cli_env(
        dir.path(),
        &["up", "--json"],
        &[("STEPMIGRATE_LOCK_WAIT", "2s")],
    );
    third.assert_code(0);
    let third = third.json();
    assert!(versions(&third).is_empty(), "{third}");
    assert!(third.to_string().contains("003_needs_index"), "{third}");
    assert_eq!(
        third["left_to_another_runner"],
        json!(["002_items_index", "003_needs_index"]),
        "{third}"
    );
    // Nothing to apply, but never "up to date": another runner has two migrations in hand.
    for args in [&["up"][..], &["plan"][..]] {
        let run = db.cli_env(dir.path(), args, &[("STEPMIGRATE_LOCK_WAIT", "2s")]);
        run.assert_code(0);
        assert!(
            !run.stdout.contains("is up to date"),
            "{args:?}: {}",
            run.stdout
        );
        assert!(
            run.stdout.contains("NOT up to date")
                && run.stdout.contains("002_items_index, 003_needs_index"),
            "{args:?}: {}",
            run.stdout
        );
    }
    let planned = db.cli(dir.path(), &["--json", "plan"]).json();
    assert_eq!(planned["summary"]["pending"], 1, "{planned}");
    assert_eq!(
        planned["left_to_another_runner"],
        json!(["002_items_index", "003_needs_index"]),
        "{planned}"
    );

    // Asked for them by name (a retried ApplyTask, an ApplyOne of an older plan): refused,
    // nothing run.
    let migrator = db.migrator(dir.path(), short_wait());
    for version in ["002", "003"] {
        let v = stepmigrate_core::migration::Version::parse(version).unwrap();
        let err = migrator.apply_range(&v, &v, "third").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::LockTimeout, "{err}");
        assert!(err.to_string().contains("another runner"), "{err}");
    }
    // TaskOutcome asking about the build waits for it, as for a runner holding the lock.
    let v002 = stepmigrate_core::migration::Version::parse("002").unwrap();
    let err = migrator.recorded_outcome(&v002, "third").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LockTimeout, "{err}");
    // Nor may an operator settle it while it builds.
    db.cli(dir.path(), &["resolve", "002", "--applied"])
        .assert_code(2);

    drop(holder);
    let first = common::Run::from(runner.wait_with_output().unwrap());
    first.assert_code(0);
    let first = first.json();
    let applied: Vec<&str> = first["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap())
        .collect();
    // Planned again after the build: 004 was applied meanwhile, 003 follows the build.
    assert_eq!(applied, ["002", "003"], "{first}");
    assert_eq!(db.applied().await, ["001", "002", "003", "004"]);
    for version in ["002", "003", "004"] {
        assert_eq!(events(&db, version, "applied").await, 1, "{version}");
    }
    assert_eq!(events(&db, "002", "started").await, 1);
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_whose_session_ended_is_dirty_not_in_progress() {
    let db = TestDb::new().await;
    let dir = set();
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    let holder = hold_the_build(&db).await;
    let runner = db.spawn_cli(dir.path(), &["up"]);
    db.wait_for_active_query(HELD).await;
    // The build's backend ends (a failover, an operator): its build lock goes with it.
    db.exec(&format!(
        "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE strpos(query, '{HELD}') > 0 AND pid <> pg_backend_pid() AND datname = current_database()"
    ))
    .await;
    let _ = runner.wait_with_output().unwrap();
    drop(holder);
    db.cli(dir.path(), &["up", "--skip-after-deploy"])
        .assert_code(4);
    let status = db.cli(dir.path(), &["status", "--json"]).json();
    assert!(status.to_string().contains("\"dirty\""), "{status}");
}
