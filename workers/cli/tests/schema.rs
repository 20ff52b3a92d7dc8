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
    dir.write("old.json", r#"{"format": 1}"#);
    dir.write("empty.json", r#"{"format": 2}"#);
    let url = "postgres://nobody@127.0.0.1:1/none";
    let file = |name: &str| dir.file(name).to_string_lossy().into_owned();
    for (name, needle) in [
        ("garbage.json", "not JSON"),
        ("future.json", "snapshot format 99"),
        // A file from before identity options, type grants, statistics...: refused, not
        // read as if the live side had them all added.
        ("old.json", "take the snapshot again"),
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
    dir.write("empty.json", r#"{"format": 2}"#);
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

/// One attribute, both ways: `a` and `b` run (after `setup`) in schemas `app` and `ext` made
/// afresh, and the snapshots (with grants and comments, through their JSON file form) are
/// diffed. `Some(line)`: they differ in exactly that attribute, and the diff must have a line
/// that starts with `line`. `None`: the same schema built two ways, and the diff must be
/// empty. `outside` is a schema the snapshot does not cover.
struct Case {
    setup: &'static str,
    a: &'static str,
    b: &'static str,
    expect: Option<&'static str>,
}

const fn differs(
    setup: &'static str,
    a: &'static str,
    b: &'static str,
    line: &'static str,
) -> Case {
    Case {
        setup,
        a,
        b,
        expect: Some(line),
    }
}

const fn same(setup: &'static str, a: &'static str, b: &'static str) -> Case {
    Case {
        setup,
        a,
        b,
        expect: None,
    }
}

const T: &str = "CREATE TABLE t (id int PRIMARY KEY, a int, b text);";

/// Every attribute the README says a snapshot holds (see "What a snapshot holds").
const CASES: &[Case] = &[
    // Schemas.
    differs("", "", "COMMENT ON SCHEMA app IS 'x';", "~ schema app: comment"),
    differs("", "", "GRANT USAGE ON SCHEMA app TO pg_monitor;", "~ schema app: grants"),
    differs("", "", "REVOKE ALL ON SCHEMA app FROM CURRENT_USER;", "~ schema app: grants"),
    same("", "GRANT USAGE ON SCHEMA app TO pg_monitor; REVOKE USAGE ON SCHEMA app FROM pg_monitor;", ""),
    // Extensions.
    differs("", "CREATE EXTENSION citext SCHEMA app;", "CREATE EXTENSION citext SCHEMA ext;", "~ extension citext: schema app → ext"),
    same("", "CREATE EXTENSION citext SCHEMA ext;", "CREATE EXTENSION citext SCHEMA app; ALTER EXTENSION citext SET SCHEMA ext;"),
    differs("", "CREATE EXTENSION citext VERSION '1.4' SCHEMA app;", "CREATE EXTENSION citext SCHEMA app;", "~ extension citext: version 1.4 → 1.6"),
    same("", "CREATE EXTENSION citext SCHEMA app;", "CREATE EXTENSION citext VERSION '1.4' SCHEMA app; ALTER EXTENSION citext UPDATE;"),
    // Enums.
    differs("", "CREATE TYPE e AS ENUM ('a', 'b');", "CREATE TYPE e AS ENUM ('b', 'a');", "~ enum app.e: labels 'a', 'b' → 'b', 'a'"),
    differs("CREATE TYPE e AS ENUM ('a');", "", "COMMENT ON TYPE e IS 'x';", "~ enum app.e: comment"),
    differs("CREATE TYPE e AS ENUM ('a');", "", "REVOKE USAGE ON TYPE e FROM PUBLIC;", "~ enum app.e: grants"),
    differs("CREATE TYPE e AS ENUM ('a');", "", "GRANT USAGE ON TYPE e TO pg_monitor;", "~ enum app.e: grants"),
    same("", "CREATE TYPE e AS ENUM ('a', 'b', 'c');", "CREATE TYPE e AS ENUM ('c'); ALTER TYPE e ADD VALUE 'a' BEFORE 'c'; ALTER TYPE e ADD VALUE 'b' AFTER 'a';"),
    same("CREATE TYPE e AS ENUM ('a');", "", "REVOKE USAGE ON TYPE e FROM PUBLIC; GRANT USAGE ON TYPE e TO PUBLIC;"),
    // Domains.
    differs("", "CREATE DOMAIN d AS int;", "CREATE DOMAIN d AS bigint;", "~ domain app.d: type integer → bigint"),
    differs("", "CREATE DOMAIN d AS varchar(10);", "CREATE DOMAIN d AS varchar(20);", "~ domain app.d: type character varying(10) → character varying(20)"),
    differs("", "CREATE DOMAIN d AS int;", "CREATE DOMAIN d AS int NOT NULL;", "~ domain app.d: not_null false → true"),
    differs("", "CREATE DOMAIN d AS int;", "CREATE DOMAIN d AS int DEFAULT 1;", "~ domain app.d: default (none) → 1"),
    differs("", "CREATE DOMAIN d AS text;", "CREATE DOMAIN d AS text COLLATE \"C\";", "~ domain app.d: collation (none) → \"C\""),
    differs("", "CREATE DOMAIN d AS int CONSTRAINT pos CHECK (VALUE > 0);", "CREATE DOMAIN d AS int CONSTRAINT pos CHECK (VALUE >= 0);", "~ domain app.d: constraints"),
    differs("CREATE DOMAIN d AS int;", "ALTER DOMAIN d ADD CONSTRAINT pos CHECK (VALUE > 0);", "ALTER DOMAIN d ADD CONSTRAINT pos CHECK (VALUE > 0) NOT VALID;", "~ domain app.d: constraints pos CHECK ((VALUE > 0)) → pos CHECK ((VALUE > 0)) (not validated)"),
    differs("CREATE DOMAIN d AS int;", "", "COMMENT ON DOMAIN d IS 'x';", "~ domain app.d: comment"),
    differs("CREATE DOMAIN d AS int CONSTRAINT pos CHECK (VALUE > 0);", "", "COMMENT ON CONSTRAINT pos ON DOMAIN d IS 'x';", "~ domain app.d: constraints pos CHECK ((VALUE > 0)) → pos CHECK ((VALUE > 0)) (comment 'x')"),
    same("CREATE DOMAIN d AS int CONSTRAINT pos CHECK (VALUE > 0);", "", "COMMENT ON CONSTRAINT pos ON DOMAIN d IS 'x'; COMMENT ON CONSTRAINT pos ON DOMAIN d IS NULL;"),
    differs("CREATE DOMAIN d AS int;", "", "REVOKE USAGE ON DOMAIN d FROM PUBLIC;", "~ domain app.d: grants"),
    same("", "CREATE DOMAIN d AS int NOT NULL DEFAULT 1 CONSTRAINT pos CHECK (VALUE > 0);", "CREATE DOMAIN d AS int; ALTER DOMAIN d SET NOT NULL; ALTER DOMAIN d SET DEFAULT 1; ALTER DOMAIN d ADD CONSTRAINT pos CHECK (VALUE > 0) NOT VALID; ALTER DOMAIN d VALIDATE CONSTRAINT pos;"),
    // Composite types.
    differs("", "CREATE TYPE c AS (x int, y text);", "CREATE TYPE c AS (x int, y varchar);", "~ composite type app.c: attributes x integer, y text → x integer, y character varying"),
    differs("", "CREATE TYPE c AS (x int, y text);", "CREATE TYPE c AS (x int, y text COLLATE \"C\");", "~ composite type app.c: attributes"),
    differs("CREATE TYPE c AS (x int);", "", "COMMENT ON TYPE c IS 'x';", "~ composite type app.c: comment"),
    differs("CREATE TYPE c AS (x int);", "", "REVOKE USAGE ON TYPE c FROM PUBLIC;", "~ composite type app.c: grants"),
    same("", "CREATE TYPE c AS (x int, y text);", "CREATE TYPE c AS (x int, z int); ALTER TYPE c DROP ATTRIBUTE z, ADD ATTRIBUTE y text;"),
    // Sequences.
    differs("", "CREATE SEQUENCE s AS int;", "CREATE SEQUENCE s AS bigint MAXVALUE 2147483647;", "~ sequence app.s: type integer → bigint"),
    differs("", "CREATE SEQUENCE s;", "CREATE SEQUENCE s START 5;", "~ sequence app.s: start 1 → 5"),
    differs("", "CREATE SEQUENCE s;", "CREATE SEQUENCE s INCREMENT 2;", "~ sequence app.s: increment 1 → 2"),
    differs("", "CREATE SEQUENCE s;", "CREATE SEQUENCE s MINVALUE 0 START 1;", "~ sequence app.s: min 1 → 0"),
    differs("", "CREATE SEQUENCE s;", "CREATE SEQUENCE s MAXVALUE 100;", "~ sequence app.s: max 9223372036854775807 → 100"),
    differs("", "CREATE SEQUENCE s;", "CREATE SEQUENCE s CACHE 20;", "~ sequence app.s: cache 1 → 20"),
    differs("", "CREATE SEQUENCE s;", "CREATE SEQUENCE s CYCLE;", "~ sequence app.s: cycle false → true"),
    differs("", "CREATE SEQUENCE s;", "CREATE UNLOGGED SEQUENCE s;", "~ sequence app.s: persistence permanent → unlogged"),
    differs(T, "CREATE SEQUENCE s;", "CREATE SEQUENCE s OWNED BY t.a;", "~ sequence app.s: owned_by (none) → app.t.a"),
    differs("CREATE SEQUENCE s;", "", "COMMENT ON SEQUENCE s IS 'x';", "~ sequence app.s: comment"),
    differs("CREATE SEQUENCE s;", "", "GRANT USAGE ON SEQUENCE s TO pg_monitor;", "~ sequence app.s: grants"),
    same("", "CREATE UNLOGGED SEQUENCE s AS int START 5 INCREMENT 2 MINVALUE 0 MAXVALUE 100 CACHE 3 CYCLE;",
         "CREATE SEQUENCE s; ALTER SEQUENCE s AS int START 5 INCREMENT 2 MINVALUE 0 MAXVALUE 100 CACHE 3 CYCLE; ALTER SEQUENCE s SET UNLOGGED; SELECT nextval('s');"),
    // Tables.
    differs("", "CREATE TABLE p (at date);", "CREATE TABLE p (at date) PARTITION BY RANGE (at);", "~ table app.p: kind table → partitioned"),
    differs("", "CREATE TABLE p (at date, n int) PARTITION BY RANGE (at);", "CREATE TABLE p (at date, n int) PARTITION BY RANGE (n);", "~ table app.p: partition_key RANGE (at) → RANGE (n)"),
    differs("CREATE TABLE p (at date) PARTITION BY RANGE (at);", "CREATE TABLE c (at date);", "CREATE TABLE c PARTITION OF p DEFAULT;", "~ table app.c: partition_of (none) → app.p"),
    differs("CREATE TABLE p (n int) PARTITION BY RANGE (n);", "CREATE TABLE c PARTITION OF p FOR VALUES FROM (0) TO (10);", "CREATE TABLE c PARTITION OF p FOR VALUES FROM (0) TO (20);", "~ table app.c: partition_bound FOR VALUES FROM (0) TO (10) → FOR VALUES FROM (0) TO (20)"),
    differs("CREATE TABLE p (n int); CREATE TABLE q (n int);", "CREATE TABLE c (n int) INHERITS (p);", "CREATE TABLE c (n int) INHERITS (q);", "~ table app.c: inherits app.p → app.q"),
    differs(T, "", "ALTER TABLE t SET UNLOGGED;", "~ table app.t: persistence permanent → unlogged"),
    differs(T, "", "ALTER TABLE t ENABLE ROW LEVEL SECURITY;", "~ table app.t: row_security false → true"),
    differs(T, "", "ALTER TABLE t FORCE ROW LEVEL SECURITY;", "~ table app.t: force_row_security false → true"),
    differs(T, "", "ALTER TABLE t SET (fillfactor = 70);", "~ table app.t: options (none) → fillfactor=70"),
    differs(T, "", "COMMENT ON TABLE t IS 'x';", "~ table app.t: comment"),
    differs("CREATE TYPE ty AS (id int, a int);", "CREATE TABLE t OF ty;", "CREATE TABLE t (id int, a int);", "~ table app.t: of_type app.ty → (none)"),
    same("CREATE TYPE ty AS (id int, a int);", "CREATE TABLE t OF ty;", "CREATE TABLE t (id int, a int); ALTER TABLE t OF ty;"),
    differs(T, "", "GRANT SELECT ON t TO pg_monitor;", "~ table app.t: grants"),
    same("CREATE TABLE p (n int) PARTITION BY RANGE (n);",
         "CREATE UNLOGGED TABLE c PARTITION OF p FOR VALUES FROM (0) TO (10) WITH (fillfactor = 70);",
         "CREATE TABLE c (n int) WITH (fillfactor = 50); ALTER TABLE c SET (fillfactor = 70); ALTER TABLE c SET UNLOGGED; ALTER TABLE p ATTACH PARTITION c FOR VALUES FROM (0) TO (10);"),
    same(T, "GRANT SELECT ON t TO pg_monitor;", "GRANT SELECT, INSERT ON t TO pg_monitor; REVOKE INSERT ON t FROM pg_monitor;"),
    // Columns.
    // Inherited only, or declared on the child too: dropped from the parent, they go or stay.
    differs("CREATE TABLE p (a int, CONSTRAINT ck CHECK (a > 0));", "CREATE TABLE c (a int, CONSTRAINT ck CHECK (a > 0)) INHERITS (p);", "CREATE TABLE c () INHERITS (p);", "~ column app.c.a: inherited_only false → true"),
    differs("CREATE TABLE p (a int, CONSTRAINT ck CHECK (a > 0));", "CREATE TABLE c (a int, CONSTRAINT ck CHECK (a > 0)) INHERITS (p);", "CREATE TABLE c () INHERITS (p);", "~ constraint app.c.ck: inherited_only false → true"),
    same("CREATE TABLE p (k int) PARTITION BY RANGE (k);", "CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10);", "CREATE TABLE p1 (k int); ALTER TABLE p ATTACH PARTITION p1 FOR VALUES FROM (0) TO (10);"),
    // A partition's index attached to its parent's, or not: one cannot be dropped alone.
    differs("CREATE TABLE p (a int) PARTITION BY RANGE (a); CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10); CREATE INDEX pi ON ONLY p (a); CREATE INDEX p1i ON p1 (a);",
            "", "ALTER INDEX pi ATTACH PARTITION p1i;", "~ index app.p1i: attached_to (none) → app.pi"),
    same("CREATE TABLE p (a int) PARTITION BY RANGE (a); CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10);",
         "CREATE INDEX pi ON p (a);", "CREATE INDEX pi ON ONLY p (a); CREATE INDEX p1_a_idx ON p1 (a); ALTER INDEX pi ATTACH PARTITION p1_a_idx;"),
    // Under a `--schema` scope: a rule on one of its tables, its default privileges.
    differs("CREATE TABLE t (a int); CREATE TABLE l (a int);", "", "CREATE RULE r AS ON INSERT TO t DO ALSO INSERT INTO l VALUES (new.a);", "+ rule r on app.t"),
    differs("", "", "ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO pg_monitor;", "+ default privileges "),
    // A function that depends on an extension goes when it does.
    differs("CREATE EXTENSION citext SCHEMA ext; CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1';", "", "ALTER FUNCTION f() DEPENDS ON EXTENSION citext;", "~ function app.f(): depends_on_extensions"),
    differs("", "CREATE TABLE t (a int);", "CREATE TABLE t (a bigint);", "~ column app.t.a: type integer → bigint"),
    differs("", "CREATE TABLE t (a numeric(10,2));", "CREATE TABLE t (a numeric(12,2));", "~ column app.t.a: type numeric(10,2) → numeric(12,2)"),
    differs("", "CREATE TABLE t (a int);", "CREATE TABLE t (a int NOT NULL);", "~ column app.t.a: not_null false → true"),
    differs("", "CREATE TABLE t (a int);", "CREATE TABLE t (a int DEFAULT 1);", "~ column app.t.a: default (none) → 1"),
    differs("", "CREATE TABLE t (a int GENERATED ALWAYS AS IDENTITY);", "CREATE TABLE t (a int GENERATED BY DEFAULT AS IDENTITY);", "~ column app.t.a: identity always → by default"),
    differs("", "CREATE TABLE t (a int GENERATED ALWAYS AS IDENTITY);", "CREATE TABLE t (a int GENERATED ALWAYS AS IDENTITY (START 10));", "~ column app.t.a: identity_start 1 → 10"),
    differs("", "CREATE TABLE t (a int GENERATED ALWAYS AS IDENTITY);", "CREATE TABLE t (a int GENERATED ALWAYS AS IDENTITY (INCREMENT 5));", "~ column app.t.a: identity_increment 1 → 5"),
    differs("", "CREATE TABLE t (a int GENERATED ALWAYS AS IDENTITY);", "CREATE TABLE t (a int GENERATED ALWAYS AS IDENTITY (MINVALUE 0));", "~ column app.t.a: identity_min 1 → 0"),
    differs("", "CREATE TABLE t (a int GENERATED ALWAYS AS IDENTITY);", "CREATE TABLE t (a int GENERATED ALWAYS AS IDENTITY (MAXVALUE 100));", "~ column app.t.a: identity_max 2147483647 → 100"),
    differs("", "CREATE TABLE t (a int GENERATED ALWAYS AS IDENTITY);", "CREATE TABLE t (a int GENERATED ALWAYS AS IDENTITY (CACHE 20));", "~ column app.t.a: identity_cache 1 → 20"),
    differs("", "CREATE TABLE t (a int GENERATED ALWAYS AS IDENTITY);", "CREATE TABLE t (a int GENERATED ALWAYS AS IDENTITY (CYCLE));", "~ column app.t.a: identity_cycle false → true"),
    differs("", "CREATE TABLE t (a int GENERATED ALWAYS AS IDENTITY);", "CREATE TABLE t (a int GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME t_a_seq2));", "~ column app.t.a: identity_sequence app.t_a_seq → app.t_a_seq2"),
    differs("", "CREATE TABLE t (a int GENERATED ALWAYS AS IDENTITY);", "CREATE TABLE t (a int GENERATED ALWAYS AS IDENTITY); ALTER SEQUENCE t_a_seq SET UNLOGGED;", "~ column app.t.a: identity_persistence permanent → unlogged"),
    differs("", "CREATE TABLE t (a int, b int GENERATED ALWAYS AS (a * 2) STORED);", "CREATE TABLE t (a int, b int GENERATED ALWAYS AS (a * 3) STORED);", "~ column app.t.b: generated (a * 2) → (a * 3)"),
    differs("", "CREATE TABLE t (a text);", "CREATE TABLE t (a text COLLATE \"C\");", "~ column app.t.a: collation (none) → \"C\""),
    differs(T, "", "ALTER TABLE t ALTER COLUMN a SET STATISTICS 500;", "~ column app.t.a: statistics (none) → 500"),
    differs(T, "", "COMMENT ON COLUMN t.a IS 'x';", "~ column app.t.a: comment"),
    differs(T, "", "GRANT SELECT (a) ON t TO pg_monitor;", "~ column app.t.a: grants (none) → pg_monitor SELECT"),
    same("", "CREATE TABLE t (a bigint GENERATED BY DEFAULT AS IDENTITY (START 5 INCREMENT 2 MINVALUE 0 MAXVALUE 100 CACHE 3 CYCLE));",
         "CREATE TABLE t (a bigint NOT NULL); ALTER TABLE t ALTER COLUMN a ADD GENERATED ALWAYS AS IDENTITY; ALTER TABLE t ALTER COLUMN a SET GENERATED BY DEFAULT SET START 5 SET INCREMENT 2 SET MINVALUE 0 SET MAXVALUE 100 SET CACHE 3 SET CYCLE; SELECT nextval('t_a_seq');"),
    same("", "CREATE TABLE t (a int NOT NULL DEFAULT 1, b text COLLATE \"C\");",
         "CREATE TABLE t (a int); ALTER TABLE t ADD COLUMN b text COLLATE \"C\"; ALTER TABLE t ALTER COLUMN a SET NOT NULL, ALTER COLUMN a SET DEFAULT 1; ALTER TABLE t ALTER COLUMN a SET STATISTICS 500; ALTER TABLE t ALTER COLUMN a SET STATISTICS -1;"),
    same(T, "", "GRANT SELECT (a) ON t TO pg_monitor; REVOKE SELECT (a) ON t FROM pg_monitor; COMMENT ON COLUMN t.a IS 'x'; COMMENT ON COLUMN t.a IS NULL;"),
    // Constraints.
    differs("CREATE TABLE t (a int, b int);", "ALTER TABLE t ADD CONSTRAINT k UNIQUE (a);", "ALTER TABLE t ADD CONSTRAINT k PRIMARY KEY (a);", "~ constraint app.t.k: kind unique → primary_key"),
    differs("CREATE TABLE t (a int, b int);", "ALTER TABLE t ADD CONSTRAINT k CHECK (a > 0);", "ALTER TABLE t ADD CONSTRAINT k CHECK (a > 1);", "~ constraint app.t.k: definition CHECK ((a > 0)) → CHECK ((a > 1))"),
    differs(T, "CREATE TABLE r (t_id int CONSTRAINT fk REFERENCES t ON DELETE CASCADE);", "CREATE TABLE r (t_id int CONSTRAINT fk REFERENCES t ON DELETE SET NULL);", "~ constraint app.r.fk: definition"),
    differs(T, "CREATE TABLE r (t_id int CONSTRAINT fk REFERENCES t);", "CREATE TABLE r (t_id int CONSTRAINT fk REFERENCES t DEFERRABLE INITIALLY DEFERRED);", "~ constraint app.r.fk: definition"),
    differs(T, "ALTER TABLE t ADD CONSTRAINT k CHECK (a > 0);", "ALTER TABLE t ADD CONSTRAINT k CHECK (a > 0) NOT VALID;", "~ constraint app.t.k: validated true → false"),
    differs("CREATE TABLE t (a int CONSTRAINT k CHECK (a > 0));", "", "COMMENT ON CONSTRAINT k ON t IS 'x';", "~ constraint app.t.k: comment"),
    same("", "CREATE TABLE t (a int CONSTRAINT k CHECK (a > 0));", "CREATE TABLE t (a int); ALTER TABLE t ADD CONSTRAINT k CHECK (a > 0) NOT VALID; ALTER TABLE t VALIDATE CONSTRAINT k;"),
    // Indexes.
    differs(T, "CREATE INDEX i ON t (a);", "CREATE INDEX i ON t (a DESC);", "~ index app.i: definition"),
    differs(T, "CREATE INDEX i ON t (a);", "CREATE UNIQUE INDEX i ON t (a);", "~ index app.i: definition"),
    differs(T, "CREATE INDEX i ON t (a);", "CREATE INDEX i ON t (a); UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'app.i'::regclass;", "~ index app.i: valid true → false"),
    differs(T, "CREATE INDEX i ON t (a);", "CREATE INDEX i ON t (a); COMMENT ON INDEX i IS 'x';", "~ index app.i: comment"),
    same(T, "CREATE INDEX i ON t (a) WHERE b <> '';", "CREATE INDEX j ON t (b); ALTER INDEX j RENAME TO k; DROP INDEX k; CREATE INDEX i ON t (a) WHERE b <> '';"),
    // Triggers.
    differs("CREATE TABLE t (a int); CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';",
            "CREATE TRIGGER g BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f();", "CREATE TRIGGER g BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION f();", "~ trigger app.t.g: definition"),
    differs("CREATE TABLE t (a int); CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'; CREATE TRIGGER g BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f();",
            "", "ALTER TABLE t ENABLE REPLICA TRIGGER g;", "~ trigger app.t.g: enabled enabled → replica"),
    differs("CREATE TABLE t (a int); CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'; CREATE TRIGGER g BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f();",
            "", "COMMENT ON TRIGGER g ON t IS 'x';", "~ trigger app.t.g: comment"),
    // Storage: replica identity, CLUSTER ON, a column's storage, compression and options,
    // TOAST storage parameters.
    differs(T, "", "ALTER TABLE t REPLICA IDENTITY FULL;", "~ table app.t: replica_identity (none) → full"),
    differs("CREATE TABLE t (a int NOT NULL); CREATE UNIQUE INDEX ui ON t (a);", "", "ALTER TABLE t REPLICA IDENTITY USING INDEX ui;", "~ table app.t: replica_identity (none) → using index ui"),
    differs("CREATE TABLE t (a int); CREATE INDEX ci ON t (a);", "", "ALTER TABLE t CLUSTER ON ci;", "~ table app.t: clustered_on (none) → ci"),
    differs(T, "", "ALTER TABLE t SET (toast.autovacuum_enabled = false);", "~ table app.t: toast_options"),
    differs("CREATE TABLE t (a int, s text);", "", "ALTER TABLE t ALTER s SET STORAGE EXTERNAL;", "~ column app.t.s: storage (none) → external"),
    differs("CREATE TABLE t (a int, s text);", "", "ALTER TABLE t ALTER s SET COMPRESSION pglz;", "~ column app.t.s: compression (none) → pglz"),
    differs(T, "", "ALTER TABLE t ALTER a SET (n_distinct = 100);", "~ column app.t.a: options (none) → n_distinct=100"),
    same("CREATE TABLE t (a int, s text);", "ALTER TABLE t ALTER s SET STORAGE EXTERNAL; ALTER TABLE t REPLICA IDENTITY FULL;",
         "ALTER TABLE t ALTER s SET STORAGE MAIN; ALTER TABLE t ALTER s SET STORAGE EXTERNAL; ALTER TABLE t REPLICA IDENTITY NOTHING; ALTER TABLE t REPLICA IDENTITY FULL;"),
    same("CREATE TABLE t (a int, s text);", "", "ALTER TABLE t ALTER s SET STORAGE EXTENDED; ALTER TABLE t REPLICA IDENTITY DEFAULT; ALTER TABLE t ALTER a SET (n_distinct = 5); ALTER TABLE t ALTER a RESET (n_distinct);"),
    // A materialized view's column settings and CLUSTER ON, as a table's.
    differs(T, "CREATE MATERIALIZED VIEW m AS SELECT a, b FROM t; CREATE UNIQUE INDEX mi ON m (a);", "CREATE MATERIALIZED VIEW m AS SELECT a, b FROM t; CREATE UNIQUE INDEX mi ON m (a); ALTER MATERIALIZED VIEW m CLUSTER ON mi;", "~ materialized view app.m: clustered_on (none) → mi"),
    differs(T, "CREATE MATERIALIZED VIEW m AS SELECT a, b FROM t;", "CREATE MATERIALIZED VIEW m AS SELECT a, b FROM t; ALTER MATERIALIZED VIEW m ALTER COLUMN b SET STATISTICS 500;", "~ materialized view app.m: column_settings (none) → b: statistics=500"),
    differs("CREATE TABLE t (a int, c text);", "CREATE MATERIALIZED VIEW m AS SELECT a, c FROM t;", "CREATE MATERIALIZED VIEW m AS SELECT a, c FROM t; ALTER MATERIALIZED VIEW m ALTER COLUMN c SET STORAGE MAIN; ALTER MATERIALIZED VIEW m ALTER COLUMN c SET COMPRESSION pglz; ALTER MATERIALIZED VIEW m ALTER COLUMN c SET (n_distinct = 5);", "~ materialized view app.m: column_settings (none) → c: storage=main compression=pglz n_distinct=5"),
    same(T, "CREATE MATERIALIZED VIEW m AS SELECT a, b FROM t;", "CREATE MATERIALIZED VIEW m AS SELECT a, b FROM t; ALTER MATERIALIZED VIEW m ALTER COLUMN b SET STATISTICS 500; ALTER MATERIALIZED VIEW m ALTER COLUMN b SET STATISTICS -1;"),
    differs("CREATE TABLE t (a int, b text);", "CREATE MATERIALIZED VIEW m AS SELECT a, b FROM t;", "CREATE MATERIALIZED VIEW m AS SELECT a, b FROM t; ALTER MATERIALIZED VIEW m SET (toast.autovacuum_enabled = false);", "~ materialized view app.m: toast_options (none) → autovacuum_enabled=false"),
    // A foreign key to a partitioned table, its clone on a partition not enforcing it.
    differs("CREATE TABLE pt (id int, k int, PRIMARY KEY (id, k)) PARTITION BY RANGE (k); CREATE TABLE pt1 PARTITION OF pt FOR VALUES FROM (0) TO (10); CREATE TABLE r (id int PRIMARY KEY, pid int, pk int, CONSTRAINT fk FOREIGN KEY (pid, pk) REFERENCES pt (id, k));",
            "", "ALTER TABLE pt1 DISABLE TRIGGER ALL;", "~ constraint app.r.fk: triggers (none) → disabled"),
    // A materialized view never filled: reading it fails.
    differs(T, "CREATE MATERIALIZED VIEW m AS SELECT a FROM t;", "CREATE MATERIALIZED VIEW m AS SELECT a FROM t WITH NO DATA;", "~ materialized view app.m: not_populated false → true"),
    // A base type's subscripting handler.
    differs("CREATE TYPE b; CREATE FUNCTION b_in(cstring) RETURNS b LANGUAGE internal IMMUTABLE STRICT AS 'int4in'; CREATE FUNCTION b_out(b) RETURNS cstring LANGUAGE internal IMMUTABLE STRICT AS 'int4out';",
            "CREATE TYPE b (input = b_in, output = b_out, internallength = 4, passedbyvalue, alignment = int4);",
            "CREATE TYPE b (input = b_in, output = b_out, internallength = 4, passedbyvalue, alignment = int4, subscript = jsonb_subscript_handler);",
            "~ object type app.b: definition"),
    // A constraint whose internal triggers do not fire (`DISABLE TRIGGER ALL`): not enforced.
    differs("CREATE TABLE p (c int PRIMARY KEY); CREATE TABLE k (id int, p_c int CONSTRAINT fk REFERENCES p (c));", "",
            "ALTER TABLE k DISABLE TRIGGER ALL;", "~ constraint app.k.fk: triggers (none) → disabled"),
    differs("CREATE TABLE p (c int PRIMARY KEY); CREATE TABLE k (id int, p_c int CONSTRAINT fk REFERENCES p (c));", "",
            "ALTER TABLE p DISABLE TRIGGER ALL;", "~ constraint app.k.fk: triggers (none) → disabled"),
    same("CREATE TABLE p (c int PRIMARY KEY); CREATE TABLE k (id int, p_c int CONSTRAINT fk REFERENCES p (c));", "",
         "ALTER TABLE k DISABLE TRIGGER ALL; ALTER TABLE p DISABLE TRIGGER ALL; ALTER TABLE k ENABLE TRIGGER ALL; ALTER TABLE p ENABLE TRIGGER ALL;"),
    // Statistics objects.
    differs(T, "", "CREATE STATISTICS st ON a, b FROM t;", "+ statistics app.st"),
    differs(T, "CREATE STATISTICS st (ndistinct) ON a, b FROM t;", "CREATE STATISTICS st (dependencies) ON a, b FROM t;", "~ statistics app.st: definition CREATE STATISTICS app.st (ndistinct) ON a, b FROM app.t → CREATE STATISTICS app.st (dependencies) ON a, b FROM app.t"),
    differs(T, "CREATE STATISTICS st ON a, b FROM t;", "CREATE STATISTICS st ON a, (b || '') FROM t;", "~ statistics app.st: definition"),
    differs(T, "CREATE STATISTICS st ON a, b FROM t;", "CREATE STATISTICS st ON a, b FROM t; ALTER STATISTICS st SET STATISTICS 500;", "~ statistics app.st: target (none) → 500"),
    differs(T, "CREATE STATISTICS st ON a, b FROM t;", "CREATE STATISTICS st ON a, b FROM t; COMMENT ON STATISTICS st IS 'x';", "~ statistics app.st: comment"),
    differs(T, "CREATE STATISTICS st ON a, b FROM t;", "CREATE STATISTICS ext.st ON a, b FROM t;", "- statistics app.st"),
    differs("CREATE MATERIALIZED VIEW m AS SELECT 1 AS a, 2 AS b;", "", "CREATE STATISTICS st ON a, b FROM m;", "+ statistics app.st"),
    same(T, "CREATE STATISTICS st (ndistinct, dependencies) ON a, b FROM t;",
         "CREATE STATISTICS x ON a, b FROM t; ALTER STATISTICS x SET STATISTICS 5; ALTER STATISTICS x SET STATISTICS -1; DROP STATISTICS x; CREATE STATISTICS st (dependencies, ndistinct) ON b, a FROM t;"),
    // Row-level security policies.
    differs(T, "", "CREATE POLICY p ON t USING (a > 0);", "+ policy app.t.p"),
    differs(T, "CREATE POLICY p ON t USING (a > 0);", "CREATE POLICY p ON t FOR SELECT USING (a > 0);", "~ policy app.t.p: command ALL → SELECT"),
    differs(T, "CREATE POLICY p ON t USING (a > 0);", "CREATE POLICY p ON t AS RESTRICTIVE USING (a > 0);", "~ policy app.t.p: permissive true → false"),
    differs(T, "CREATE POLICY p ON t USING (a > 0);", "CREATE POLICY p ON t TO pg_monitor USING (a > 0);", "~ policy app.t.p: roles PUBLIC → pg_monitor"),
    differs(T, "CREATE POLICY p ON t USING (a > 0);", "CREATE POLICY p ON t USING (a > 1);", "~ policy app.t.p: using (a > 0) → (a > 1)"),
    differs(T, "CREATE POLICY p ON t USING (a > 0);", "CREATE POLICY p ON t USING (a > 0) WITH CHECK (a < 10);", "~ policy app.t.p: with_check (none) → (a < 10)"),
    differs(T, "CREATE POLICY p ON t USING (a > 0);", "CREATE POLICY p ON t USING (a > 0); COMMENT ON POLICY p ON t IS 'x';", "~ policy app.t.p: comment"),
    same(T, "CREATE POLICY p ON t FOR UPDATE TO pg_monitor, pg_read_all_data USING (a > 0) WITH CHECK (a < 10);",
         "CREATE POLICY p ON t FOR UPDATE USING (true); ALTER POLICY p ON t TO pg_read_all_data, pg_monitor USING (a > 0) WITH CHECK (a < 10);"),
    // Views and materialized views.
    differs(T, "CREATE VIEW v AS SELECT a FROM t;", "CREATE VIEW v AS SELECT a FROM t WHERE a > 0;", "~ view app.v: definition"),
    differs("CREATE TABLE outside.t (a varchar(100));", "CREATE VIEW v AS SELECT a FROM outside.t;",
            "DROP TABLE outside.t; CREATE TABLE outside.t (a varchar(200)); CREATE VIEW v AS SELECT a FROM outside.t;",
            "~ view app.v: columns a character varying(100) → a character varying(200)"),
    differs("CREATE TABLE outside.t (a varchar(100));", "CREATE MATERIALIZED VIEW m AS SELECT a FROM outside.t;",
            "DROP TABLE outside.t; CREATE TABLE outside.t (a varchar(200)); CREATE MATERIALIZED VIEW m AS SELECT a FROM outside.t;",
            "~ materialized view app.m: columns a character varying(100) → a character varying(200)"),
    differs("CREATE TABLE outside.t (a text);", "CREATE VIEW v AS SELECT a FROM outside.t;",
            "DROP TABLE outside.t; CREATE TABLE outside.t (a text COLLATE \"C\"); CREATE VIEW v AS SELECT a FROM outside.t;",
            "~ view app.v: columns a text → a text COLLATE \"C\""),
    differs(T, "CREATE VIEW v AS SELECT a FROM t;", "CREATE VIEW v AS SELECT a FROM t WITH CASCADED CHECK OPTION;", "~ view app.v: options (none) → check_option=cascaded"),
    differs(T, "CREATE VIEW v AS SELECT a FROM t;", "CREATE VIEW v AS SELECT a FROM t; COMMENT ON VIEW v IS 'x';", "~ view app.v: comment"),
    differs(T, "CREATE VIEW v AS SELECT a FROM t;", "CREATE VIEW v AS SELECT a FROM t; GRANT SELECT ON v TO pg_monitor;", "~ view app.v: grants"),
    differs(T, "CREATE VIEW v AS SELECT a FROM t;", "CREATE VIEW v AS SELECT a FROM t; GRANT UPDATE (a) ON v TO pg_monitor;", "~ view app.v: column_grants (none) → a: pg_monitor UPDATE"),
    differs(T, "CREATE MATERIALIZED VIEW m AS SELECT a FROM t;", "CREATE MATERIALIZED VIEW m AS SELECT a FROM t; GRANT SELECT (a) ON m TO pg_monitor;", "~ materialized view app.m: column_grants"),
    same(T, "CREATE VIEW v AS SELECT a FROM t; GRANT UPDATE (a) ON v TO pg_monitor;",
         "CREATE VIEW v AS SELECT a FROM t; GRANT UPDATE (a), SELECT (a) ON v TO pg_monitor; REVOKE SELECT (a) ON v FROM pg_monitor;"),
    differs(T, "CREATE MATERIALIZED VIEW m AS SELECT a FROM t;", "CREATE MATERIALIZED VIEW m AS SELECT a FROM t; CREATE INDEX mi ON m (a);", "+ index app.mi"),
    differs(T, "CREATE VIEW m AS SELECT a FROM t;", "CREATE MATERIALIZED VIEW m AS SELECT a FROM t;", "+ materialized view app.m"),
    same(T, "CREATE VIEW v AS SELECT a, b FROM t;", "CREATE VIEW v AS SELECT a FROM t; CREATE OR REPLACE VIEW v AS SELECT a, b FROM t;"),
    same("CREATE TABLE outside.t (a varchar(100));", "CREATE VIEW v AS SELECT a FROM outside.t;",
         "DROP TABLE outside.t; CREATE TABLE outside.t (a varchar(100)); CREATE VIEW v AS SELECT a FROM outside.t;"),
    // Functions, procedures, aggregates.
    differs("", "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql AS 'SELECT a';", "CREATE PROCEDURE f(a int) LANGUAGE sql AS 'SELECT a';", "+ procedure app.f(integer)"),
    differs("", "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql AS 'SELECT a';", "CREATE FUNCTION f(b int) RETURNS int LANGUAGE sql AS 'SELECT b';", "~ function app.f(integer): arguments a integer → b integer"),
    differs("", "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql AS 'SELECT a';", "CREATE FUNCTION f(a int) RETURNS bigint LANGUAGE sql AS 'SELECT a::bigint';", "~ function app.f(integer): result integer → bigint"),
    differs("", "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql AS 'SELECT a';", "CREATE FUNCTION f(a int) RETURNS int LANGUAGE plpgsql AS 'BEGIN RETURN a; END';", "~ function app.f(integer): language sql → plpgsql"),
    differs("", "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql AS 'SELECT a';", "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql STABLE AS 'SELECT a';", "~ function app.f(integer): volatility volatile → stable"),
    differs("", "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql AS 'SELECT a';", "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT a';", "~ function app.f(integer): security_definer false → true"),
    differs("", "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql AS 'SELECT a';", "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql AS 'SELECT a + 0';", "~ function app.f(integer): definition_hash"),
    differs("", "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql AS 'SELECT a';", "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql SET work_mem = '1MB' AS 'SELECT a';", "~ function app.f(integer): definition_hash"),
    differs("CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql AS 'SELECT a';", "", "COMMENT ON FUNCTION f(int) IS 'x';", "~ function app.f(integer): comment"),
    differs("CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql AS 'SELECT a';", "", "REVOKE EXECUTE ON FUNCTION f(int) FROM PUBLIC;", "~ function app.f(integer): grants"),
    differs("CREATE FUNCTION f(s bigint, x int) RETURNS bigint LANGUAGE sql AS 'SELECT s + x';",
            "CREATE AGGREGATE ag(int) (sfunc = f, stype = bigint, initcond = '0');", "CREATE AGGREGATE ag(int) (sfunc = f, stype = bigint, initcond = '1');", "~ aggregate app.ag(integer): definition_hash"),
    differs("CREATE FUNCTION f(s bigint, x int) RETURNS bigint LANGUAGE sql AS 'SELECT s + x'; CREATE FUNCTION g(s bigint, x int) RETURNS bigint LANGUAGE sql AS 'SELECT s - x';",
            "CREATE AGGREGATE ag(int) (sfunc = f, stype = bigint);", "CREATE AGGREGATE ag(int) (sfunc = f, stype = bigint, msfunc = f, minvfunc = g, mstype = bigint);", "~ aggregate app.ag(integer): definition_hash"),
    differs("CREATE FUNCTION f(s bigint, x int) RETURNS bigint LANGUAGE sql AS 'SELECT s + x';",
            "CREATE AGGREGATE ag(int) (sfunc = f, stype = bigint);", "CREATE AGGREGATE ag(int) (sfunc = f, stype = bigint, parallel = safe);", "~ aggregate app.ag(integer): definition_hash"),
    differs("CREATE FUNCTION f(s bigint, x int) RETURNS bigint LANGUAGE sql AS 'SELECT s + x';",
            "CREATE AGGREGATE ag(int) (sfunc = f, stype = bigint);", "CREATE AGGREGATE ag(int) (sfunc = f, stype = bigint, sspace = 100);", "~ aggregate app.ag(integer): definition_hash"),
    differs("CREATE FUNCTION f(s bigint, x int) RETURNS bigint LANGUAGE sql AS 'SELECT s + x'; CREATE FUNCTION fin(s bigint) RETURNS bigint LANGUAGE sql AS 'SELECT s';",
            "CREATE AGGREGATE ag(int) (sfunc = f, stype = bigint, finalfunc = fin);", "CREATE AGGREGATE ag(int) (sfunc = f, stype = bigint, finalfunc = fin, finalfunc_modify = read_write);", "~ aggregate app.ag(integer): definition_hash"),
    same("CREATE FUNCTION f(s bigint, x int) RETURNS bigint LANGUAGE sql AS 'SELECT s + x'; CREATE FUNCTION fin(s bigint) RETURNS bigint LANGUAGE sql AS 'SELECT s';",
         "CREATE AGGREGATE ag(int) (sfunc = f, stype = bigint, finalfunc = fin);", "CREATE AGGREGATE ag(int) (sfunc = f, stype = bigint, finalfunc = fin, finalfunc_modify = read_only, sspace = 0);"),
    same("", "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql STABLE AS 'SELECT a';",
         "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql AS 'SELECT 0'; CREATE OR REPLACE FUNCTION f(a int) RETURNS int LANGUAGE sql STABLE AS 'SELECT a'; GRANT EXECUTE ON FUNCTION f(int) TO PUBLIC;"),
];

/// More schemas built two ways, so that each attribute has one that must be identical.
const SAME_BUILT_ANOTHER_WAY: &[Case] = &[
    same("", "COMMENT ON SCHEMA app IS 'x';", "COMMENT ON SCHEMA app IS 'y'; COMMENT ON SCHEMA app IS 'x';"),
    same("CREATE TYPE e AS ENUM ('a'); CREATE DOMAIN d AS int; CREATE TYPE c AS (x int);",
         "COMMENT ON TYPE e IS 'x'; COMMENT ON DOMAIN d IS 'y'; COMMENT ON TYPE c IS 'z';",
         "COMMENT ON TYPE e IS 'x'; COMMENT ON TYPE d IS 'y'; COMMENT ON TYPE c IS 'z';"),
    same("", "CREATE DOMAIN d AS text COLLATE \"C\"; CREATE TYPE c AS (x text COLLATE \"C\");",
         "CREATE DOMAIN d AS text COLLATE \"C\"; CREATE TYPE c AS (y int); ALTER TYPE c ADD ATTRIBUTE x text COLLATE \"C\", DROP ATTRIBUTE y;"),
    same("CREATE DOMAIN d AS int; CREATE TYPE c AS (x int);", "REVOKE USAGE ON DOMAIN d FROM PUBLIC; REVOKE USAGE ON TYPE c FROM PUBLIC;",
         "REVOKE ALL ON TYPE d FROM PUBLIC; REVOKE ALL ON TYPE c FROM PUBLIC;"),
    same(T, "CREATE SEQUENCE s OWNED BY t.a; COMMENT ON SEQUENCE s IS 'x'; GRANT USAGE ON SEQUENCE s TO pg_monitor;",
         "CREATE SEQUENCE s; ALTER SEQUENCE s OWNED BY t.a; COMMENT ON SEQUENCE s IS 'x'; GRANT USAGE, SELECT ON SEQUENCE s TO pg_monitor; REVOKE SELECT ON SEQUENCE s FROM pg_monitor;"),
    same("CREATE TABLE p (n int);", "CREATE TABLE c (n int) INHERITS (p);", "CREATE TABLE c (n int); ALTER TABLE c INHERIT p;"),
    same(T, "ALTER TABLE t ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY; COMMENT ON TABLE t IS 'x';",
         "ALTER TABLE t FORCE ROW LEVEL SECURITY; ALTER TABLE t ENABLE ROW LEVEL SECURITY; ALTER TABLE t DISABLE ROW LEVEL SECURITY; ALTER TABLE t ENABLE ROW LEVEL SECURITY; COMMENT ON TABLE t IS 'x';"),
    same("", "CREATE TABLE t (a int, b int GENERATED ALWAYS AS (a * 2) STORED, c int GENERATED ALWAYS AS IDENTITY);",
         "CREATE TABLE t (a int); ALTER TABLE t ADD COLUMN b int GENERATED ALWAYS AS (a * 2) STORED; ALTER TABLE t ADD COLUMN c int GENERATED ALWAYS AS IDENTITY;"),
    same("", "CREATE TABLE t (a varchar(20));", "CREATE TABLE t (a varchar(10)); ALTER TABLE t ALTER COLUMN a TYPE varchar(20);"),
    same(T, "CREATE TABLE r (t_id int CONSTRAINT fk REFERENCES t ON DELETE CASCADE DEFERRABLE); COMMENT ON CONSTRAINT fk ON r IS 'x';",
         "CREATE TABLE r (t_id int); ALTER TABLE r ADD CONSTRAINT fk FOREIGN KEY (t_id) REFERENCES t (id) ON DELETE CASCADE DEFERRABLE INITIALLY IMMEDIATE NOT VALID; ALTER TABLE r VALIDATE CONSTRAINT fk; COMMENT ON CONSTRAINT fk ON r IS 'x';"),
    same(T, "CREATE UNIQUE INDEX i ON t (a); COMMENT ON INDEX i IS 'x';",
         "CREATE UNIQUE INDEX i ON t (a); UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'app.i'::regclass; REINDEX INDEX i; COMMENT ON INDEX i IS 'x';"),
    same("CREATE TABLE t (a int); CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';",
         "CREATE TRIGGER g BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f(); COMMENT ON TRIGGER g ON t IS 'x';",
         "CREATE TRIGGER g BEFORE INSERT ON t FOR EACH ROW EXECUTE PROCEDURE f(); ALTER TABLE t DISABLE TRIGGER g; ALTER TABLE t ENABLE TRIGGER g; COMMENT ON TRIGGER g ON t IS 'x';"),
    same(T, "CREATE STATISTICS st ON a, b FROM t; ALTER STATISTICS st SET STATISTICS 50; COMMENT ON STATISTICS st IS 'x';",
         "CREATE STATISTICS ext.st ON a, b FROM t; ALTER STATISTICS ext.st SET SCHEMA app; ALTER STATISTICS st SET STATISTICS 50; COMMENT ON STATISTICS st IS 'x';"),
    same(T, "CREATE MATERIALIZED VIEW m AS SELECT a, b FROM t; CREATE INDEX mi ON m (a); GRANT SELECT ON m TO pg_monitor; COMMENT ON MATERIALIZED VIEW m IS 'x';",
         "CREATE MATERIALIZED VIEW m AS SELECT a, b FROM t WITH NO DATA; CREATE INDEX mi ON m (a); REFRESH MATERIALIZED VIEW m; GRANT SELECT ON m TO pg_monitor; COMMENT ON MATERIALIZED VIEW m IS 'x';"),
    same(T, "CREATE VIEW v WITH (check_option = cascaded) AS SELECT a FROM t;",
         "CREATE VIEW v AS SELECT a FROM t; ALTER VIEW v SET (check_option = cascaded);"),
    same("", "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql SECURITY DEFINER AS 'SELECT a'; COMMENT ON FUNCTION f(int) IS 'x'; REVOKE EXECUTE ON FUNCTION f(int) FROM PUBLIC;",
         "CREATE FUNCTION f(a int) RETURNS int LANGUAGE sql AS 'SELECT a'; ALTER FUNCTION f(int) SECURITY DEFINER; COMMENT ON FUNCTION f(int) IS 'x'; REVOKE ALL ON FUNCTION f(int) FROM PUBLIC;"),
];

/// Runs each case (after `reset` and its setup, `a` then `b`), snapshots both through the
/// file form with `options`, and says which cases the diff got wrong.
async fn wrong_cases<'a>(
    conn: &mut sqlx::PgConnection,
    cases: impl IntoIterator<Item = &'a Case>,
    options: &stepmigrate_core::schema::SnapshotOptions,
    reset: &str,
) -> Vec<String> {
    use sqlx::Executor;
    use stepmigrate_core::schema::{diff, Snapshot};

    let mut failures = Vec::new();
    for (n, case) in cases.into_iter().enumerate() {
        let mut snapshots = Vec::new();
        for sql in [case.a, case.b] {
            let script = format!("{reset}\n{}\n{sql}", case.setup);
            conn.execute(sqlx::raw_sql(&script))
                .await
                .unwrap_or_else(|e| panic!("case {n}: {script}: {e}"));
            let s = Snapshot::capture(&mut *conn, options).await.unwrap();
            // Through the file form: every new field survives it.
            let s = Snapshot::from_json(&s.to_json_pretty(), Path::new("case.json")).unwrap();
            snapshots.push(s);
        }
        let text = diff(&snapshots[0], &snapshots[1]).render_text();
        let ok = match case.expect {
            Some(line) => text.lines().any(|l| l.starts_with(line)),
            None => text.is_empty(),
        };
        if !ok {
            failures.push(format!(
                "case {n}: expected {:?}\n  a: {}\n  b: {}\n  diff:\n{text}",
                case.expect.unwrap_or("no difference"),
                case.a,
                case.b
            ));
        }
    }
    failures
}

#[tokio::test]
async fn each_attribute_is_compared_both_ways() {
    use stepmigrate_core::schema::SnapshotOptions;

    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let options = SnapshotOptions {
        include_schemas: vec!["app".into(), "ext".into()],
        grants: true,
        ..SnapshotOptions::default()
    };
    let failures = wrong_cases(
        &mut conn,
        CASES.iter().chain(SAME_BUILT_ANOTHER_WAY),
        &options,
        "DROP EXTENSION IF EXISTS citext; DROP SCHEMA IF EXISTS app, ext, outside CASCADE;
         CREATE SCHEMA app; CREATE SCHEMA ext; CREATE SCHEMA outside; SET search_path = app;",
    )
    .await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The `pg_dump` of the server's major version (or `STEPMIGRATE_TEST_PG_DUMP`).
async fn pg_dump_path(db: &TestDb) -> PathBuf {
    if let Some(path) = std::env::var_os("STEPMIGRATE_TEST_PG_DUMP") {
        return PathBuf::from(path);
    }
    let version: u32 = db.query("SHOW server_version_num").await[0]
        .parse()
        .unwrap();
    let path = PathBuf::from(format!(
        "/usr/lib/postgresql/{}/bin/pg_dump",
        version / 10000
    ));
    assert!(
        path.exists(),
        "{} is missing: install the server's client tools or set STEPMIGRATE_TEST_PG_DUMP",
        path.display()
    );
    path
}

/// A libpq URL of `db` (the test's URL carries sqlx's own parameters, which libpq refuses).
fn libpq_url(db: &TestDb) -> String {
    let admin = common::admin_url();
    let (server, _) = admin.rsplit_once('/').unwrap();
    format!("{server}/{}", db.name)
}

/// `pg_dump --schema-only` of each database, at once, normalized: its comment lines,
/// settings, `\restrict` keys and blank lines left out, its statements sorted (the order of
/// objects of equal rank may follow their OIDs).
fn pg_dumps(pg_dump: &Path, dbs: &[&TestDb]) -> Vec<Vec<String>> {
    let children: Vec<_> = dbs
        .iter()
        .map(|db| {
            std::process::Command::new(pg_dump)
                .args(["--schema-only", "--dbname", &libpq_url(db)])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "pg_dump: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| {
                    !(l.is_empty()
                        || l.starts_with("--")
                        || l.starts_with("\\restrict")
                        || l.starts_with("\\unrestrict")
                        || l.starts_with("SET ")
                        || l.starts_with("SELECT pg_catalog.set_config"))
                })
                .collect();
            let mut statements: Vec<String> =
                kept.join("\n").split(";\n").map(str::to_owned).collect();
            statements.sort();
            statements
        })
        .collect()
}

/// A differential test against `pg_dump --schema-only`, over a migration set of a helpdesk
/// application (`fixtures/schema/differential/`: 39 migrations, every kind of object the
/// snapshot holds, data-only and maintenance migrations, and changes undone within one
/// migration). Database A takes them one at a time; database B too, with its OIDs shifted
/// by objects made and dropped between them. At every step: where pg_dump's output changed
/// from the step before, `diff` reports a change, and where it did not, `diff` says
/// identical; and A and B, whose pg_dump outputs are the same, `diff` says identical.
/// (The set leaves out what README lists as not captured, e.g. rules and owners.)
#[tokio::test]
async fn diff_agrees_with_pg_dump_at_every_step_of_a_migration_set() {
    use stepmigrate_core::schema::{diff, LedgerFilter, Snapshot, SnapshotOptions};

    let a = TestDb::new().await;
    let b = TestDb::new().await;
    let pg_dump = pg_dump_path(&a).await;
    let options = SnapshotOptions {
        grants: true,
        ledger: LedgerFilter::Keep,
        ..SnapshotOptions::default()
    };
    let dir = fixture("differential");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "{} migrations", files.len());

    let mut before: Option<(Vec<String>, Snapshot)> = None;
    let (mut changed_steps, mut unchanged_steps) = (0, 0);
    let mut failures = Vec::new();
    for (n, file) in files.iter().enumerate() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let sql = std::fs::read_to_string(file).unwrap();
        a.exec(&sql).await;
        b.exec(&format!(
            "CREATE TABLE shift_{n} (id int); CREATE TYPE shift_t_{n} AS (a int); DROP TABLE shift_{n}; DROP TYPE shift_t_{n};"
        ))
        .await;
        b.exec(&sql).await;
        let dumps = pg_dumps(&pg_dump, &[&a, &b]);
        let snap_a = Snapshot::capture(&mut a.conn().await, &options)
            .await
            .unwrap();
        let snap_b = Snapshot::capture(&mut b.conn().await, &options)
            .await
            .unwrap();

        let between = diff(&snap_a, &snap_b);
        if (dumps[0] != dumps[1]) == between.is_empty() {
            failures.push(format!(
                "{name}: A and B: pg_dump {}, diff:\n{between}",
                if dumps[0] == dumps[1] {
                    "identical"
                } else {
                    "differs"
                }
            ));
        }
        if let Some((dump_before, snap_before)) = &before {
            let dump_changed = *dump_before != dumps[0];
            let step = diff(snap_before, &snap_a);
            if dump_changed {
                changed_steps += 1;
            } else {
                unchanged_steps += 1;
            }
            if dump_changed == step.is_empty() {
                let gone: Vec<&String> = dump_before
                    .iter()
                    .filter(|s| !dumps[0].contains(s))
                    .collect();
                let new: Vec<&String> = dumps[0]
                    .iter()
                    .filter(|s| !dump_before.contains(s))
                    .collect();
                failures.push(format!(
                    "{name}: pg_dump {}, diff:\n{step}\n  pg_dump before: {gone:#?}\n  pg_dump after: {new:#?}",
                    if dump_changed { "changed" } else { "unchanged" }
                ));
            }
        }
        before = Some((dumps[0].clone(), snap_a));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Both directions were put to the test.
    assert!(
        changed_steps >= 25 && unchanged_steps >= 5,
        "{changed_steps} steps changed the schema, {unchanged_steps} did not"
    );
}

/// The catalog objects a snapshot holds by identity and definition (README: "Catalog
/// objects"), each both ways over a whole database: one that differs is named, and the
/// same objects made again (new OIDs) are identical.
const CATALOG_OBJECT_CASES: &[Case] = &[
    differs("", "", "CREATE COLLATION c FROM \"C\";", "+ collation app.c"),
    differs("", "CREATE COLLATION c (provider = libc, locale = 'C');", "CREATE COLLATION c (provider = libc, locale = 'POSIX');", "~ collation app.c: definition"),
    differs("CREATE COLLATION c FROM \"C\";", "", "COMMENT ON COLLATION c IS 'x';", "~ collation app.c: comment"),
    differs("", "", "CREATE CONVERSION cv FOR 'LATIN1' TO 'UTF8' FROM iso8859_1_to_utf8;", "+ conversion app.cv"),
    differs("", "", "CREATE TRUSTED LANGUAGE lang_x HANDLER plpgsql_call_handler;", "+ language lang_x"),
    differs("", "CREATE TEXT SEARCH DICTIONARY dct (TEMPLATE = simple);", "CREATE TEXT SEARCH DICTIONARY dct (TEMPLATE = simple, STOPWORDS = english);", "~ text search dictionary app.dct: definition"),
    differs("", "CREATE TEXT SEARCH CONFIGURATION cfg (COPY = english);", "CREATE TEXT SEARCH CONFIGURATION cfg (COPY = simple);", "~ text search configuration app.cfg: definition"),
    differs("", "", "CREATE FOREIGN DATA WRAPPER fdw_x;", "+ foreign-data wrapper fdw_x"),
    differs("CREATE FOREIGN DATA WRAPPER fdw_x;", "CREATE SERVER srv_x FOREIGN DATA WRAPPER fdw_x OPTIONS (host 'a');", "CREATE SERVER srv_x FOREIGN DATA WRAPPER fdw_x OPTIONS (host 'b');", "~ server srv_x: definition"),
    differs("CREATE FOREIGN DATA WRAPPER fdw_x; CREATE SERVER srv_x FOREIGN DATA WRAPPER fdw_x;", "CREATE FOREIGN TABLE ft (a int) SERVER srv_x;", "CREATE FOREIGN TABLE ft (a bigint) SERVER srv_x;", "~ foreign table app.ft: definition"),
    differs("", "", "CREATE OPERATOR FAMILY fam USING btree;", "+ operator family app.fam"),
    differs("", "CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = int4eq);", "CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = int4ne);", "~ operator app.===(integer,integer): definition"),
    differs("CREATE TYPE e AS ENUM ('a');", "", "CREATE CAST (e AS int) WITH INOUT;", "+ cast (app.e AS integer)"),
    differs("", "", "CREATE ACCESS METHOD heap2 TYPE TABLE HANDLER heap_tableam_handler;", "+ access method heap2"),
    differs("CREATE ACCESS METHOD heap2 TYPE TABLE HANDLER heap_tableam_handler;", "CREATE TABLE t2 (a int);", "CREATE TABLE t2 (a int) USING heap2;", "~ table app.t2: access_method (none) → heap2"),
    differs(T, "CREATE PUBLICATION pub_x FOR TABLE t;", "CREATE PUBLICATION pub_x FOR TABLE t WITH (publish = 'insert');", "~ publication pub_x: definition"),
    differs(T, "", "CREATE RULE r AS ON DELETE TO t DO INSTEAD NOTHING;", "+ rule r on app.t"),
    differs("CREATE TABLE t (id int PRIMARY KEY, a int, b text); CREATE RULE r AS ON DELETE TO t DO INSTEAD NOTHING;", "", "ALTER TABLE t DISABLE RULE r;", "~ rule r on app.t: definition"),
    differs(T, "CREATE PUBLICATION pub_x FOR TABLE t;", "CREATE PUBLICATION pub_x FOR TABLE t (id, a);", "~ publication pub_x: definition"),
    differs(T, "CREATE PUBLICATION pub_x FOR TABLE t;", "CREATE PUBLICATION pub_x FOR TABLE t WHERE (a > 100);", "~ publication pub_x: definition"),
    // What a publication was declared for, where today's tables look alike.
    differs(T, "CREATE PUBLICATION pub_x FOR TABLE t;", "CREATE PUBLICATION pub_x FOR TABLE t (id, a, b);", "~ publication pub_x: definition"),
    differs(T, "CREATE PUBLICATION pub_x FOR TABLE t;", "CREATE PUBLICATION pub_x FOR TABLES IN SCHEMA app;", "~ publication pub_x: definition"),
    differs("CREATE TABLE p (id int) PARTITION BY RANGE (id); CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10);",
            "CREATE PUBLICATION pub_x FOR TABLE p;", "CREATE PUBLICATION pub_x FOR TABLE p1;", "~ publication pub_x: definition"),
    same(T, "CREATE PUBLICATION pub_x FOR TABLE t (id, a);", "CREATE PUBLICATION pub_x; ALTER PUBLICATION pub_x ADD TABLE t (id, a);"),
    same(T, "CREATE PUBLICATION pub_x FOR TABLES IN SCHEMA app;", "CREATE PUBLICATION pub_x; ALTER PUBLICATION pub_x ADD TABLES IN SCHEMA app;"),
    // An ordering operator's sort family; a foreign table column's collation.
    differs("CREATE OPERATOR FAMILY fam USING gist;",
            "ALTER OPERATOR FAMILY fam USING gist ADD OPERATOR 15 <-> (point, point) FOR ORDER BY float_ops;",
            "ALTER OPERATOR FAMILY fam USING gist ADD OPERATOR 15 <-> (point, point) FOR ORDER BY integer_ops;",
            "~ operator family app.fam"),
    differs("CREATE FOREIGN DATA WRAPPER fdw_x; CREATE SERVER srv_x FOREIGN DATA WRAPPER fdw_x;",
            "CREATE FOREIGN TABLE ft (a text) SERVER srv_x;", "CREATE FOREIGN TABLE ft (a text COLLATE \"C\") SERVER srv_x;",
            "~ foreign table app.ft: definition"),
    same("CREATE FOREIGN DATA WRAPPER fdw_x; CREATE SERVER srv_x FOREIGN DATA WRAPPER fdw_x;",
         "CREATE FOREIGN TABLE ft (a text COLLATE \"C\") SERVER srv_x;", "CREATE FOREIGN TABLE ft (a text) SERVER srv_x; ALTER FOREIGN TABLE ft ALTER a TYPE text COLLATE \"C\";"),
    same("CREATE FOREIGN DATA WRAPPER fdw_x;", "CREATE SERVER srv_x FOREIGN DATA WRAPPER fdw_x OPTIONS (a '1', b '2');",
         "CREATE SERVER srv_x FOREIGN DATA WRAPPER fdw_x OPTIONS (b '2', a '1');"),
    differs("", "", "ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO pg_monitor;", "+ default privileges "),
    differs("CREATE FUNCTION evf() RETURNS event_trigger LANGUAGE plpgsql AS 'BEGIN END';", "", "CREATE EVENT TRIGGER evt_x ON sql_drop EXECUTE FUNCTION evf();", "+ event trigger evt_x"),
    same("", "CREATE COLLATION c FROM \"C\"; CREATE OPERATOR FAMILY fam USING btree; CREATE TEXT SEARCH CONFIGURATION cfg (COPY = english);",
         "CREATE TEXT SEARCH CONFIGURATION cfg (COPY = english); CREATE OPERATOR FAMILY fam USING btree; CREATE COLLATION c FROM \"C\";"),
    same("CREATE FOREIGN DATA WRAPPER fdw_x;", "CREATE SERVER srv_x FOREIGN DATA WRAPPER fdw_x OPTIONS (host 'a');",
         "CREATE SERVER srv_x FOREIGN DATA WRAPPER fdw_x; ALTER SERVER srv_x OPTIONS (ADD host 'a');"),
    same("", "CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = int4eq);",
         "CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = int4ne); DROP OPERATOR === (int, int); CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = int4eq);"),
];

#[tokio::test]
async fn catalog_objects_are_compared_both_ways() {
    use sqlx::Executor;
    use stepmigrate_core::schema::SnapshotOptions;

    let db = TestDb::new().await;
    let mut conn = db.conn().await;
    let options = SnapshotOptions {
        comments: true,
        ..SnapshotOptions::default()
    };
    let failures = wrong_cases(
        &mut conn,
        CATALOG_OBJECT_CASES,
        &options,
        "DROP EVENT TRIGGER IF EXISTS evt_x; DROP PUBLICATION IF EXISTS pub_x;
         DROP SCHEMA IF EXISTS app CASCADE; DROP SERVER IF EXISTS srv_x CASCADE;
         DROP FOREIGN DATA WRAPPER IF EXISTS fdw_x CASCADE; DROP LANGUAGE IF EXISTS lang_x CASCADE;
         DROP ACCESS METHOD IF EXISTS heap2 CASCADE;
         CREATE SCHEMA app; SET search_path = app;",
    )
    .await;
    conn.execute(sqlx::raw_sql("DROP EVENT TRIGGER IF EXISTS evt_x"))
        .await
        .unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Two snapshots taken with scopes that share no schema compare nothing: an error, never
/// "identical"; a `--schema` that names no schema on either side is an error naming it; what
/// one side's scope leaves out of the other is said.
#[tokio::test]
async fn diff_never_calls_identical_what_it_did_not_compare() {
    let a = TestDb::new().await;
    let b = TestDb::new().await;
    let dir = Dir::new(&[]);
    a.exec("CREATE SCHEMA a; CREATE TABLE a.t (x int); CREATE SCHEMA b; CREATE TABLE b.u (y int);")
        .await;
    b.exec("CREATE SCHEMA a; CREATE TABLE a.t (x bigint); CREATE SCHEMA b; CREATE TABLE b.u (y bigint);")
        .await;
    let (fa, fb) = (dir.file("a.json"), dir.file("b.json"));
    let (fa, fb) = (fa.to_str().unwrap(), fb.to_str().unwrap());
    a.cli(dir.path(), &["snapshot", "--schema", "a", "--output", fa])
        .assert_code(0);
    b.cli(dir.path(), &["snapshot", "--schema", "b", "--output", fb])
        .assert_code(0);
    let run = a.cli(dir.path(), &["diff", fa, fb]);
    run.assert_code(2);
    assert!(run.stderr.contains("share no schema"), "{}", run.stderr);
    // A misspelt --schema matches nothing: named, not "identical".
    let run = a.cli(dir.path(), &["diff", &a.url, &b.url, "--schema", "A"]);
    run.assert_code(2);
    assert!(run.stderr.contains("--schema"), "{}", run.stderr);
    // A file of schema a against a whole database compares a alone, and says so.
    let run = a.cli(dir.path(), &["--json", "diff", fa, &b.url]);
    run.assert_code(1);
    let doc = run.json();
    assert!(
        doc["warnings"][0].as_str().unwrap().contains("schema(s) b"),
        "{doc:#}"
    );
    assert_eq!(doc["warnings"].as_array().unwrap().len(), 1, "{doc:#}");
    // Two databases: everything compared, nothing to warn of.
    let run = a.cli(dir.path(), &["--json", "diff", &a.url, &b.url]);
    run.assert_code(1);
    assert!(run.json().get("warnings").is_none(), "{}", run.stdout);
    // A file written before catalog objects were captured: said, not silently identical.
    let mut old: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fa).unwrap()).unwrap();
    old["options"].as_object_mut().unwrap().remove("objects");
    std::fs::write(fa, old.to_string()).unwrap();
    let run = a.cli(dir.path(), &["--json", "diff", fa, &a.url]);
    run.assert_code(0);
    assert!(
        run.json()["warnings"]
            .to_string()
            .contains("catalog objects"),
        "{}",
        run.stdout
    );
}

/// Base, shell and range types are catalog objects: a difference in one is reported, and
/// the same type made alike is identical.
#[tokio::test]
async fn base_shell_and_range_types_are_compared() {
    const BT: &str = "CREATE TYPE bt;
        CREATE FUNCTION bt_in(cstring) RETURNS bt LANGUAGE internal IMMUTABLE STRICT AS 'int4in';
        CREATE FUNCTION bt_out(bt) RETURNS cstring LANGUAGE internal IMMUTABLE STRICT AS 'int4out';";
    let dir = Dir::new(&[]);
    for (a, b) in [
        ("", "CREATE TYPE s;"),
        (
            "CREATE TYPE bt (input = bt_in, output = bt_out, internallength = 4, passedbyvalue, alignment = int4);",
            "CREATE TYPE bt (input = bt_in, output = bt_out, internallength = 4, passedbyvalue, alignment = int4, category = 'N');",
        ),
        (
            "CREATE TYPE bt (input = bt_in, output = bt_out, internallength = 4, passedbyvalue, alignment = int4);",
            "CREATE TYPE bt (input = bt_in, output = bt_out, internallength = 4, passedbyvalue, alignment = int4); COMMENT ON TYPE bt IS 'x';",
        ),
        ("CREATE TYPE r AS RANGE (subtype = int4);", "CREATE TYPE r AS RANGE (subtype = int8);"),
    ] {
        let (da, db) = (TestDb::new().await, TestDb::new().await);
        da.exec(&format!("{BT}\n{a}")).await;
        db.exec(&format!("{BT}\n{b}")).await;
        da.cli(dir.path(), &["diff", &da.url, &db.url]).assert_code(1);
        da.cli(dir.path(), &["diff", &da.url, &da.url]).assert_code(0);
    }
}
