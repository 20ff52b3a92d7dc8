//! The workers' plan judges a dirty row as `up` does: a no-transaction after-deploy migration
//! that another runner is running right now (it holds the migration's build lock; e.g. a
//! `CREATE INDEX CONCURRENTLY` run as an ECS task, for hours) is dirty in the ledger until it
//! ends, and is "in progress", not `Dirty`. The deploy's own run leaves it, and what requires
//! it, for the run after the deploy instead of failing the deploy.
#![cfg(feature = "remote")]

mod common;

use common::{settings, Dir, TestDb};
use serde_json::{json, Value};
use stepmigrate_lambda::steps::{plan, PlanRequest, PlanSettings};
use stepmigrate_lambda::ErrorKind;

fn set() -> Dir {
    Dir::new(&[
        ("001_items.sql", "CREATE TABLE items (id int);\n"),
        (
            "002_items_index.sql",
            "-- stepmigrate: no-transaction\n-- stepmigrate: after-deploy\nSELECT pg_sleep(4);\nCREATE INDEX CONCURRENTLY items_id ON items (id);\n",
        ),
        ("003_needs_index.sql", "-- stepmigrate: requires = 002\nALTER TABLE items ADD COLUMN a int;\n"),
        ("004_add_b.sql", "ALTER TABLE items ADD COLUMN b int;\n"),
    ])
}

async fn plan_of(db: &TestDb, dir: &Dir, input: Value) -> Result<Value, stepmigrate_lambda::Error> {
    let migrator = db.migrator(dir.path(), settings());
    let request: PlanRequest = serde_json::from_value(json!({
        "input": input, "execution": "arn:aws:states:eu-west-1:123456789012:execution:Migrations:deploy-7"
    }))
    .unwrap();
    plan(&migrator, request, &PlanSettings::default())
        .await
        .map(|out| serde_json::to_value(out).unwrap())
}

fn firsts(plan: &Value) -> Vec<&str> {
    plan["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["first"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_deploy_defers_a_migration_another_runner_is_running_and_what_requires_it() {
    let db = TestDb::new().await;
    let dir = set();
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    // Another runner (the after-deploy run's task) applies 002: dirty in the ledger until it ends.
    let mut runner = db.spawn_cli(dir.path(), &["up", "--to", "002"]);
    db.wait_for_active_query("pg_sleep(4)").await;
    let status = plan_of(&db, &dir, json!({"action": "status"}))
        .await
        .unwrap();
    let state = |v: &str| {
        status["migrations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["version"] == v)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(
        state("002"),
        "in_progress",
        "a running no-transaction after-deploy migration's row is in progress"
    );

    let deploy = plan_of(
        &db,
        &dir,
        json!({"action": "migrate", "skip_after_deploy": true, "source": "cdk"}),
    )
    .await
    .expect("the deploy's run is not failed by a migration another runner is running");
    assert_eq!(firsts(&deploy), ["004"], "{deploy}");
    assert_eq!(
        deploy["deferred"],
        json!(["002_items_index", "003_needs_index"]),
        "{deploy}"
    );

    // Any other run plans past it too, and leaves what requires it to the runner at work.
    let after = plan_of(
        &db,
        &dir,
        json!({"action": "migrate", "source": "after-deploy"}),
    )
    .await
    .unwrap();
    assert_eq!(firsts(&after), ["004"], "{after}");

    assert!(runner.wait().unwrap().success());
    assert_eq!(db.applied().await, ["001", "002"]);
}

#[tokio::test]
async fn a_dirty_migration_nobody_is_running_still_stops_the_plan() {
    let db = TestDb::new().await;
    let dir = set();
    dir.write(
        "002_items_index.sql",
        "-- stepmigrate: no-transaction\n-- stepmigrate: after-deploy\nCREATE INDEX CONCURRENTLY items_id ON items (id);\nSELECT 1/0;\n",
    );
    db.cli(dir.path(), &["up", "--to", "002"]);
    let err = plan_of(
        &db,
        &dir,
        json!({"action": "migrate", "skip_after_deploy": true}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Dirty, "{err}");
}
