//! The `verify` action in a Lambda invocation (the apply-one worker's `Verify` Task) stops on
//! its own before the invocation's deadline and reports what it did not verify, instead of
//! being stopped by Lambda after 15 minutes with nothing reported.
#![cfg(feature = "remote")]

mod common;

use std::time::Duration;

use common::{settings, Dir, TestDb};
use serde_json::json;
use stepmigrate_lambda::steps::{
    apply_one_or_verify, ApplyOneOutput, ApplyOneRequest, BatchSettings,
};

fn set() -> Dir {
    Dir::new(&[
        ("001_items.sql", "CREATE TABLE items (id int);\n"),
        ("002_slow.sql", "SELECT pg_sleep(4);\n"),
        ("003_note.sql", "ALTER TABLE items ADD COLUMN note text;\n"),
    ])
}

async fn verify(db: &TestDb, dir: &Dir, remaining: Option<Duration>) -> serde_json::Value {
    let migrator = db.migrator(dir.path(), settings());
    let request: ApplyOneRequest = serde_json::from_value(json!({
        "verify": {"action": "verify"},
        "execution": "arn:aws:states:eu-west-1:123456789012:execution:Migrations:verify-1"
    }))
    .unwrap();
    match apply_one_or_verify(&migrator, request, &BatchSettings::default(), remaining).await {
        Ok(ApplyOneOutput::Verified(summary)) => serde_json::to_value(summary).unwrap(),
        other => panic!("not a verification: {other:?}"),
    }
}

#[tokio::test]
async fn verify_stops_before_the_invocations_deadline_and_says_what_it_did_not_verify() {
    let db = TestDb::new().await;
    let dir = set();
    // 10 s left: the worker keeps 5 s for itself, so the verification has 5. 002's statement
    // (lock_timeout 2 s first) is capped to about 3 s, and its 4 s do not fit.
    let summary = verify(&db, &dir, Some(Duration::from_secs(10))).await;
    assert_eq!(
        (summary["verified"].as_u64(), summary["skipped"].as_u64()),
        (Some(1), Some(2)),
        "{summary}"
    );
    assert_eq!(
        summary["failed"], 0,
        "running out of time is no finding about the migration: {summary}"
    );
    let outcomes: Vec<(&str, &str)> = summary["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["name"].as_str().unwrap(), m["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("001_items", "ok"),
            ("002_slow", "skipped"),
            ("003_note", "skipped")
        ]
    );
    let text = summary.to_string();
    assert!(text.contains("the time to verify ran out"), "{text}");
    // Nothing was applied, and the rolled-back transaction left no table behind.
    assert!(!db.table_exists("items").await);
}

#[tokio::test]
async fn without_a_deadline_every_migration_is_verified() {
    let db = TestDb::new().await;
    let summary = verify(&db, &set(), None).await;
    assert_eq!(
        (summary["verified"].as_u64(), summary["skipped"].as_u64()),
        (Some(3), Some(0)),
        "{summary}"
    );
}
