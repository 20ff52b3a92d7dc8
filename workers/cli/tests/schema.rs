//! `stepmigrate snapshot` and `stepmigrate diff` on real databases: a schema with every kind
//! of object against its golden snapshot, a set of changes against its golden diff, two
//! databases built alike giving byte-identical snapshots (no OIDs, no ledger), and the exit
//! codes. Regenerate the golden files with `UPDATE_GOLDEN=1`.

mod common;

use std::path::{Path, PathBuf};

use common::{run_cli, Dir, TestDb};

const ALL_KINDS: &str = include_str!("fixtures/schema/all_kinds.sql");
const CHANGES: &str = include_str!("fixtures/schema/changes.sql");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/schema")
        .join(name)
}

/// Compares with a golden file, or rewrites it when `UPDATE_GOLDEN` is set.
#[track_caller]
fn assert_golden(name: &str, actual: &str) {
    let path = fixture(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(
        actual == expected,
        "{} differs (UPDATE_GOLDEN=1 accepts the new output):\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

/// The owner's implicit grants name the role the tests connect as: golden files say
/// `<owner>` so that they hold for any such role.
async fn owner_neutral(db: &TestDb, snapshot: &str) -> String {
    let user = db.query("SELECT current_user::text").await.remove(0);
    snapshot.replace(
        &format!("\"grantee\": \"{user}\""),
        "\"grantee\": \"<owner>\"",
    )
}

fn migrations() -> Dir {
    Dir::new(&[("001_all_kinds.sql", ALL_KINDS)])
}

#[tokio::test]
async fn snapshot_of_every_kind_matches_the_golden_file() {
    let db = TestDb::new().await;
    let dir = migrations();
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert!(db.table_exists("schema_migration_events").await);

    let run = db.cli(dir.path(), &["snapshot", "--grants"]);
    run.assert_code(0);
    assert!(
        !run.stdout.contains("schema_migration"),
        "the ledger is left out:\n{}",
        run.stdout
    );
    assert_golden(
        "all_kinds.golden.json",
        &owner_neutral(&db, &run.stdout).await,
    );

    // --output writes the same document; --schema narrows it.
    let file = dir.file("snapshot.json");
    let run = db.cli(
        dir.path(),
        &[
            "--json",
            "snapshot",
            "--schema",
            "public",
            "--output",
            file.to_str().unwrap(),
        ],
    );
    run.assert_code(0);
    assert_eq!(run.json()["command"], "snapshot");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let tables: Vec<&str> = written["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(tables, ["notes"]);
    assert!(written["tables"][0].get("grants").is_none(), "no --grants");
}

#[tokio::test]
async fn databases_built_alike_give_identical_snapshots() {
    // One through the runner with its ledger in a schema of its own, one by hand with no
    // ledger and its OIDs shifted by objects created and dropped first.
    let with_ledger = TestDb::new().await;
    let dir = migrations();
    let ledger = [("STEPMIGRATE_LEDGER_SCHEMA", "stepmigrate")];
    with_ledger
        .cli_env(dir.path(), &["up"], &ledger)
        .assert_code(0);
    assert!(
        with_ledger
            .table_exists("stepmigrate.schema_migrations")
            .await
    );
    let by_hand = TestDb::new().await;
    by_hand
        .exec("CREATE TABLE shift (id int); CREATE TYPE shift_t AS (a int); DROP TABLE shift; DROP TYPE shift_t;")
        .await;
    by_hand.exec(ALL_KINDS).await;

    // Settings that change how definitions are written, for the database and for the
    // connection: the snapshot pins them.
    by_hand
        .exec(&format!(
            "ALTER DATABASE {0} SET quote_all_identifiers = on; ALTER DATABASE {0} SET IntervalStyle = sql_standard;
             ALTER DATABASE {0} SET bytea_output = escape; ALTER DATABASE {0} SET DateStyle = 'SQL, DMY';
             ALTER DATABASE {0} SET TimeZone = 'Asia/Tokyo'; ALTER DATABASE {0} SET extra_float_digits = -3;",
            by_hand.name
        ))
        .await;
    let sep = if by_hand.url.contains('?') { '&' } else { '?' };
    let by_hand_url = format!(
        "{}{sep}options=-c%20quote_all_identifiers%3Don%20-c%20standard_conforming_strings%3Doff",
        by_hand.url
    );

    let a = with_ledger.cli_env(dir.path(), &["snapshot", "--grants"], &ledger);
    let b = run_cli(&by_hand_url, dir.path(), &["snapshot", "--grants"]);
    a.assert_code(0);
    b.assert_code(0);
    assert!(!a.stdout.contains("stepmigrate"), "{}", a.stdout);
    assert!(
        a.stdout == b.stdout,
        "snapshots differ:\n{}\n---\n{}",
        a.stdout,
        b.stdout
    );
    run_cli(
        &with_ledger.url,
        dir.path(),
        &["diff", &with_ledger.url, &by_hand_url],
    )
    .assert_code(0);
}

#[tokio::test]
async fn diff_of_changes_matches_the_golden_text() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[]);
    db.exec(ALL_KINDS).await;
    let before = dir.file("before.json");
    let before = before.to_str().unwrap();
    db.cli(dir.path(), &["snapshot", "--output", before])
        .assert_code(0);
    // Identical: exit 0 and nothing printed, file against database and file against file.
    let same = db.cli(dir.path(), &["diff", before, &db.url]);
    same.assert_code(0);
    assert_eq!(same.stdout, "");
    db.cli(dir.path(), &["diff", before, before]).assert_code(0);

    db.exec(CHANGES).await;
    let run = db.cli(dir.path(), &["diff", before, &db.url]);
    run.assert_code(1);
    assert_golden("changes.golden.txt", &run.stdout);

    let json = db.cli(dir.path(), &["--json", "diff", before, &db.url]);
    json.assert_code(1);
    let doc = json.json();
    let changes = doc["changes"].as_array().unwrap();
    let lines: usize = changes
        .iter()
        .map(|c| c["attributes"].as_array().map_or(1, Vec::len))
        .sum();
    assert_eq!(lines, run.stdout.lines().count(), "one line per attribute");
    let validated = changes
        .iter()
        .find(|c| c["name"] == "app.orders.orders_total_positive")
        .unwrap();
    assert_eq!(validated["kind"], "constraint");
    assert_eq!(validated["parent"], "app.orders");
    assert_eq!(validated["change"], "changed");
    assert_eq!(
        validated["attributes"],
        serde_json::json!([{"attribute": "validated", "old": "false", "new": "true"}])
    );
    // The other way round, what was added is dropped.
    let back = db.cli(dir.path(), &["diff", &db.url, before]);
    back.assert_code(1);
    assert!(
        back.stdout.contains("+ table app.sessions\n"),
        "{}",
        back.stdout
    );
    assert!(
        back.stdout.contains("- table app.audit\n"),
        "{}",
        back.stdout
    );
}

#[test]
fn bad_snapshot_files_are_input_errors_naming_the_file() {
    let dir = Dir::new(&[]);
    dir.write("garbage.json", "{ not json");
    dir.write("future.json", r#"{"format": 99}"#);
    dir.write("empty.json", r#"{"format": 1}"#);
    let url = "postgres://nobody@127.0.0.1:1/none";
    let file = |name: &str| dir.file(name).to_string_lossy().into_owned();
    for (name, needle) in [
        ("garbage.json", "not JSON"),
        ("future.json", "snapshot format 99"),
        ("missing.json", "cannot read it"),
    ] {
        let run = run_cli(url, dir.path(), &["diff", &file(name), &file("empty.json")]);
        run.assert_code(2);
        assert!(
            run.stderr.contains(&file(name)) && run.stderr.contains(needle),
            "{name}: {}",
            run.stderr
        );
        let json = run_cli(
            url,
            dir.path(),
            &["--json", "diff", &file("empty.json"), &file(name)],
        );
        json.assert_code(2);
        assert_eq!(json.json()["error"]["name"], "InvalidInput");
    }
    // Two files need no database at all.
    run_cli(
        url,
        dir.path(),
        &["diff", &file("empty.json"), &file("empty.json")],
    )
    .assert_code(0);
}

#[tokio::test]
async fn capture_inside_a_transaction_sees_it_and_leaves_it_open() {
    use sqlx::Connection;
    use stepmigrate_core::schema::{diff, ChangeType, ObjectKind, Snapshot, SnapshotOptions};

    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let options = SnapshotOptions::default();
    let before = Snapshot::capture(&mut conn, &options).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::raw_sql("CREATE TABLE pending (id int)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let during = Snapshot::capture(&mut tx, &options).await.unwrap();
    // Still the caller's transaction: it can go on, and roll back.
    sqlx::raw_sql("ALTER TABLE pending ADD COLUMN name text")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let after = Snapshot::capture(&mut conn, &options).await.unwrap();

    let changes = diff(&before, &during);
    let added: Vec<_> = changes
        .changes()
        .map(|c| (c.kind, c.name.as_str(), c.change))
        .collect();
    assert_eq!(
        added,
        [(ObjectKind::Table, "public.pending", ChangeType::Added)]
    );
    assert!(diff(&before, &after).is_empty());
    assert_eq!(before.to_json_pretty(), after.to_json_pretty());
}

#[test]
fn an_operand_that_may_hold_a_password_is_never_repeated() {
    let dir = Dir::new(&[]);
    dir.write("empty.json", r#"{"format": 1}"#);
    dir.write("me@host.json", "{ not json");
    let empty = dir.file("empty.json").to_string_lossy().into_owned();
    let url = "postgres://nobody@127.0.0.1:1/none";
    for operand in [
        " postgres:/u:S3cretPw@127.0.0.1/db",
        "mysql://u:S3cretPw@127.0.0.1/db",
        "host=127.0.0.1 password=S3cretPw dbname=db",
        "u:S3cretPw@127.0.0.1",
    ] {
        let run = run_cli(url, dir.path(), &["diff", operand, &empty]);
        run.assert_code(2);
        assert!(
            run.stderr
                .contains("FROM is neither a postgres:// URL nor a snapshot file")
                && !run.stderr.contains("S3cretPw"),
            "{operand}: {}",
            run.stderr
        );
    }
    // A URL in capitals or after a space is a URL (here, of no server): the password is
    // not printed either.
    for operand in [
        "POSTGRES://u:S3cretPw@127.0.0.1:1/db",
        " postgresql://u:S3cretPw@127.0.0.1:1/db",
    ] {
        let run = run_cli(url, dir.path(), &["diff", &empty, operand]);
        assert_eq!(run.code, 5, "{operand}: {}", run.stderr);
        assert!(!run.stderr.contains("S3cretPw"), "{}", run.stderr);
    }
    // A file whose name has an @ is read, but not named.
    let named = dir.file("me@host.json").to_string_lossy().into_owned();
    let run = run_cli(url, dir.path(), &["diff", &named, &empty]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("the FROM file: not JSON") && !run.stderr.contains("me@host"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn grants_are_the_effective_ones_and_the_scope_is_checked() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[]);
    db.exec("CREATE TABLE t (id int); CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';")
        .await;
    let user = db.query("SELECT current_user::text").await.remove(0);
    let file = |name: &str| dir.file(name).to_string_lossy().into_owned();
    db.cli(
        dir.path(),
        &["snapshot", "--grants", "--output", &file("grants.json")],
    )
    .assert_code(0);
    db.cli(dir.path(), &["snapshot", "--output", &file("plain.json")])
        .assert_code(0);

    // Granting what the default privileges hold already changes nothing.
    db.exec(&format!(
        "GRANT EXECUTE ON FUNCTION f() TO PUBLIC; GRANT SELECT ON t TO {user};"
    ))
    .await;
    db.cli(
        dir.path(),
        &["diff", "--grants", &file("grants.json"), &db.url],
    )
    .assert_code(0);
    // Revoking from PUBLIC shows what it removed.
    db.exec("REVOKE EXECUTE ON FUNCTION f() FROM PUBLIC").await;
    let run = db.cli(
        dir.path(),
        &["diff", "--grants", &file("grants.json"), &db.url],
    );
    run.assert_code(1);
    assert_eq!(
        run.stdout,
        format!("~ function public.f(): grants PUBLIC EXECUTE, {user} EXECUTE → {user} EXECUTE\n")
    );

    // A file taken without --grants cannot be compared with grants.
    let run = db.cli(
        dir.path(),
        &["diff", "--grants", &db.url, &file("plain.json")],
    );
    run.assert_code(2);
    assert!(
        run.stderr.contains(&file("plain.json")) && run.stderr.contains("taken without --grants"),
        "{}",
        run.stderr
    );
    db.cli(
        dir.path(),
        &["diff", &file("grants.json"), &file("plain.json")],
    )
    .assert_code(0);

    // The snapshot is the command's product: a full disk is an error, not an empty success.
    let full = common::cli_command(&db.url, dir.path(), &["snapshot"])
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    assert_eq!(full.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&full.stderr)
        .contains("cannot write the snapshot to stdout: No space left on device"));
}
