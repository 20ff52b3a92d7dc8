//! `stepmigrate verify --round-trip` against a real PostgreSQL: on the scratch database each
//! pending migration is applied, reverted with its down file (the schema must be the one
//! before it) and applied again (the schema must be the first apply's); a failure names the
//! objects that differ and stops the run.

mod common;

use common::{Dir, TestDb};
use serde_json::Value;

fn migration<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["report"]["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {doc:#}"))
}

fn round_trip<'a>(doc: &'a Value, name: &str) -> &'a Value {
    &migration(doc, name)["round_trip"]
}

/// Every migration of `doc` passed its round trip.
fn all_ok(doc: &Value) -> usize {
    let migrations = doc["report"]["migrations"].as_array().unwrap();
    for m in migrations {
        assert_eq!(m["outcome"], "ok", "{m:#}");
        assert_eq!(m["round_trip"]["result"], "ok", "{m:#}");
    }
    migrations.len()
}

#[tokio::test]
async fn the_shipped_migrations_round_trip() {
    let db = TestDb::new().await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let run = db.cli(&dir, &["--json", "verify", "--round-trip"]);
    let doc = run.assert_code(0).json();
    assert_eq!(all_ok(&doc), 7, "{doc:#}");
    // The non-transactional one too: DROP INDEX CONCURRENTLY in a no-transaction down file.
    assert_eq!(
        migration(&doc, "007_index_attempt_answers_question_id")["mode"],
        "no_transaction"
    );
    // The target was only read.
    assert!(db.query("SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relname NOT LIKE 'schema\\_migration%'").await.is_empty());

    // The human output says it per migration.
    let run = db.cli(&dir, &["verify", "--round-trip"]);
    run.assert_code(0);
    assert!(
        run.stdout
            .contains("round trip: ok: the down restored the schema"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            // 005's down deletes the seeded rows: what it does to the target's is unknown.
            .contains("round trip: 6 ok, 0 losing data, 1 unknown on the target's rows, 0 failed, 0 skipped"),
        "{}",
        run.stdout
    );
}

/// Schemas, enums, domains, composite types, sequences, tables, columns, identity and
/// serial, defaults, constraints (check, unique, foreign key, NOT VALID), indexes, comments,
/// grants, functions, triggers, views, materialized views and their indexes, row security
/// and policies, an extension, column type changes and altered sequences: each created (or
/// changed) and undone by its down file.
fn every_kind() -> Dir {
    Dir::new(&[
        (
            "001_types.sql",
            "CREATE SCHEMA app;\nCOMMENT ON SCHEMA app IS 'the application';\n\
             CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy');\n\
             CREATE DOMAIN app.email AS text CHECK (VALUE LIKE '%@%');\n\
             CREATE TYPE app.pair AS (a int, b text);\n\
             CREATE SEQUENCE app.counter START 10;\n\
             COMMENT ON TYPE app.mood IS 'how it feels';\n",
        ),
        (
            "001_types.down.sql",
            "DROP SEQUENCE app.counter;\nDROP TYPE app.pair;\nDROP DOMAIN app.email;\nDROP TYPE app.mood;\nDROP SCHEMA app;\n",
        ),
        (
            "002_tables.sql",
            "CREATE TABLE app.users (\n  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,\n  email app.email NOT NULL,\n  mood app.mood DEFAULT 'ok',\n  created timestamptz DEFAULT now()\n);\n\
             CREATE TABLE app.posts (\n  id serial PRIMARY KEY,\n  user_id bigint REFERENCES app.users (id) ON DELETE CASCADE,\n  body text CHECK (length(body) > 0)\n);\n\
             CREATE INDEX posts_user_idx ON app.posts (user_id);\n\
             COMMENT ON TABLE app.users IS 'people';\nCOMMENT ON COLUMN app.users.email IS 'where to write';\n\
             GRANT SELECT ON app.users TO PUBLIC;\nGRANT USAGE ON SCHEMA app TO PUBLIC;\n",
        ),
        (
            "002_tables.down.sql",
            "REVOKE USAGE ON SCHEMA app FROM PUBLIC;\nDROP TABLE app.posts;\nDROP TABLE app.users;\n",
        ),
        (
            "003_columns_and_constraints.sql",
            "ALTER TABLE app.users ADD COLUMN name text DEFAULT 'anonymous';\n\
             ALTER TABLE app.users ADD CONSTRAINT users_email_key UNIQUE (email);\n\
             ALTER TABLE app.posts ADD CONSTRAINT body_short CHECK (length(body) < 1000) NOT VALID;\n\
             ALTER TABLE app.users ALTER COLUMN created SET NOT NULL;\n\
             ALTER TABLE app.posts ALTER COLUMN body TYPE varchar(2000);\n\
             ALTER SEQUENCE app.counter INCREMENT 5;\n\
             COMMENT ON CONSTRAINT users_email_key ON app.users IS 'one account each';\n",
        ),
        (
            "003_columns_and_constraints.down.sql",
            "ALTER SEQUENCE app.counter INCREMENT 1;\n\
             ALTER TABLE app.posts ALTER COLUMN body TYPE text;\n\
             ALTER TABLE app.users ALTER COLUMN created DROP NOT NULL;\n\
             ALTER TABLE app.posts DROP CONSTRAINT body_short;\n\
             ALTER TABLE app.users DROP CONSTRAINT users_email_key;\n\
             ALTER TABLE app.users DROP COLUMN name;\n",
        ),
        (
            "004_code.sql",
            "CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.created := now(); RETURN NEW; END$$;\n\
             CREATE TRIGGER users_touch BEFORE UPDATE ON app.users FOR EACH ROW EXECUTE FUNCTION app.touch();\n\
             CREATE FUNCTION app.add(a int, b int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT a + b';\n\
             REVOKE EXECUTE ON FUNCTION app.add(int, int) FROM PUBLIC;\n\
             CREATE VIEW app.active AS SELECT id, email FROM app.users WHERE mood <> 'sad';\n\
             COMMENT ON VIEW app.active IS 'the others';\n\
             CREATE MATERIALIZED VIEW app.post_counts AS SELECT user_id, count(*) AS n FROM app.posts GROUP BY user_id;\n\
             CREATE UNIQUE INDEX post_counts_user ON app.post_counts (user_id);\n",
        ),
        (
            "004_code.down.sql",
            "DROP MATERIALIZED VIEW app.post_counts;\nDROP VIEW app.active;\nDROP FUNCTION app.add(int, int);\n\
             DROP TRIGGER users_touch ON app.users;\nDROP FUNCTION app.touch();\n",
        ),
        (
            "005_security.sql",
            "ALTER TABLE app.posts ENABLE ROW LEVEL SECURITY;\n\
             CREATE POLICY own_posts ON app.posts USING (user_id > 0);\n\
             CREATE EXTENSION IF NOT EXISTS citext SCHEMA app;\n\
             ALTER TABLE app.users ADD COLUMN handle app.citext;\n",
        ),
        (
            "005_security.down.sql",
            "ALTER TABLE app.users DROP COLUMN handle;\nDROP EXTENSION citext;\n\
             DROP POLICY own_posts ON app.posts;\nALTER TABLE app.posts DISABLE ROW LEVEL SECURITY;\n",
        ),
        // An enum value cannot be removed: irreversible, skipped with a note, and the run
        // goes on.
        (
            "006_more_moods.sql",
            "-- stepmigrate: irreversible\nALTER TYPE app.mood ADD VALUE 'thrilled';\n",
        ),
        (
            "007_index_concurrently.sql",
            "-- stepmigrate: no-transaction\nCREATE INDEX CONCURRENTLY posts_body_idx ON app.posts (body);\n",
        ),
        (
            "007_index_concurrently.down.sql",
            "-- stepmigrate: no-transaction\nDROP INDEX CONCURRENTLY app.posts_body_idx;\n",
        ),
    ])
}

#[tokio::test]
async fn every_kind_of_object_round_trips_and_irreversible_is_skipped() {
    let db = TestDb::new().await;
    let dir = every_kind();
    let doc = db
        .cli(dir.path(), &["--json", "verify", "--round-trip"])
        .assert_code(0)
        .json();
    for name in [
        "001_types",
        "002_tables",
        "003_columns_and_constraints",
        "004_code",
        "005_security",
        "007_index_concurrently",
    ] {
        assert_eq!(migration(&doc, name)["outcome"], "ok", "{doc:#}");
        assert_eq!(round_trip(&doc, name)["result"], "ok", "{name}: {doc:#}");
    }
    let irreversible = round_trip(&doc, "006_more_moods");
    assert_eq!(irreversible["result"], "skipped", "{doc:#}");
    assert_eq!(irreversible["reason"], "irreversible");
    assert_eq!(migration(&doc, "006_more_moods")["outcome"], "ok");

    // With the history applied to the target, only the new ones are round-tripped.
    db.cli(dir.path(), &["up", "--to", "003"]).assert_code(0);
    let doc = db
        .cli(dir.path(), &["--json", "verify", "--round-trip"])
        .assert_code(0)
        .json();
    let names: Vec<&str> = doc["report"]["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "004_code",
            "005_security",
            "006_more_moods",
            "007_index_concurrently"
        ]
    );
    assert_eq!(round_trip(&doc, "007_index_concurrently")["result"], "ok");
}

/// `001` makes t with an index; the rest are named by the test.
fn base() -> Vec<(&'static str, &'static str)> {
    vec![(
        "001_t.sql",
        "CREATE TABLE t (id int PRIMARY KEY, a int);\nCREATE INDEX t_a_idx ON t (a);\n",
    )]
}

/// `001`, `extra`, then `NNN_later` (a pass) after them.
fn dir_with(extra: &[(&'static str, &'static str)]) -> Dir {
    let mut files = base();
    files.push(("001_t.down.sql", "DROP TABLE t;\n"));
    files.extend_from_slice(extra);
    let dir = Dir::new(&files);
    let last: u32 = files
        .iter()
        .map(|(name, _)| name[..3].parse::<u32>().unwrap())
        .max()
        .unwrap();
    dir.write(
        &format!("{:03}_later.sql", last + 1),
        "CREATE TABLE later (id int);\n",
    );
    dir.write(
        &format!("{:03}_later.down.sql", last + 1),
        "DROP TABLE later;\n",
    );
    dir
}

#[tokio::test]
async fn a_down_that_leaves_an_index_behind_is_caught_and_named() {
    let db = TestDb::new().await;
    let dir = dir_with(&[
        (
            "002_add_index.sql",
            "ALTER TABLE t ADD COLUMN email text;\nCREATE INDEX users_email_idx ON t (email);\n",
        ),
        (
            "002_add_index.down.sql",
            "ALTER TABLE t DROP COLUMN email;\n",
        ),
    ]);
    // Dropping the column drops its index with it: this down is right.
    let doc = db
        .cli(dir.path(), &["--json", "verify", "--round-trip"])
        .assert_code(0)
        .json();
    assert_eq!(round_trip(&doc, "002_add_index")["result"], "ok", "{doc:#}");

    // An index on columns the down keeps: forgotten.
    dir.write(
        "002_add_index.sql",
        "CREATE INDEX t_id_a_idx ON t (id, a);\nALTER TABLE t ADD COLUMN email text;\n",
    );
    let run = db.cli(dir.path(), &["--json", "verify", "--round-trip"]);
    let doc = run.assert_code(1).json();
    assert_eq!(doc["error"]["name"], "SqlFailed", "{doc:#}");
    let rt = round_trip(&doc, "002_add_index");
    assert_eq!(rt["result"], "failed", "{doc:#}");
    assert_eq!(rt["step"], "down_differs");
    assert_eq!(
        rt["message"],
        "002_add_index: the down left index public.t_id_a_idx behind"
    );
    assert_eq!(rt["differences"][0]["kind"], "index");
    assert_eq!(rt["differences"][0]["change"], "added");
    assert!(doc["error"]["message"]
        .as_str()
        .unwrap()
        .contains("public.t_id_a_idx"));
    // The rest are reported not run.
    let later = migration(&doc, "003_later");
    assert_eq!(later["outcome"], "skipped");
    assert_eq!(later["round_trip"]["result"], "skipped");
    assert!(later["round_trip"]["reason"]
        .as_str()
        .unwrap()
        .starts_with("not run"));

    // People read the same.
    let run = db.cli(dir.path(), &["verify", "--round-trip"]);
    run.assert_code(1);
    assert!(
        run.stdout.contains(
            "round trip: FAILED: 002_add_index: the down left index public.t_id_a_idx behind"
        ),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("public.t_id_a_idx"), "{}", run.stderr);
    // Without --round-trip nothing of it is checked.
    db.cli(dir.path(), &["verify"]).assert_code(0);
}

#[tokio::test]
async fn a_down_that_drops_too_much_or_changes_a_column_is_caught() {
    let db = TestDb::new().await;
    let dir = dir_with(&[
        ("002_b.sql", "ALTER TABLE t ADD COLUMN b int;\n"),
        (
            "002_b.down.sql",
            "ALTER TABLE t DROP COLUMN b;\nDROP INDEX t_a_idx;\nALTER TABLE t ALTER COLUMN a TYPE bigint;\n",
        ),
    ]);
    let doc = db
        .cli(dir.path(), &["--json", "verify", "--round-trip"])
        .assert_code(1)
        .json();
    let rt = round_trip(&doc, "002_b");
    assert_eq!(rt["step"], "down_differs", "{doc:#}");
    let message = rt["message"].as_str().unwrap();
    assert!(
        message.contains("the down dropped index public.t_a_idx, which was there before the up"),
        "{message}"
    );
    assert!(
        message.contains(
            "the down left column public.t.a different from before the up (type integer → bigint)"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn an_up_that_makes_another_schema_when_applied_again_is_caught() {
    let db = TestDb::new().await;
    // Data the down does not undo (a row in runs) makes the second apply take another path.
    let dir = dir_with(&[
        (
            "002_runs.sql",
            "CREATE TABLE IF NOT EXISTS runs (n int);\n",
        ),
        (
            "002_runs.down.sql",
            "-- the table stays: it is data\n",
        ),
        (
            "003_branch.sql",
            "INSERT INTO runs VALUES (1);\nDO $$BEGIN IF (SELECT count(*) FROM runs) > 1 THEN CREATE TABLE second_time (id int); ELSE CREATE TABLE first_time (id int); END IF; END$$;\n",
        ),
        (
            "003_branch.down.sql",
            "DROP TABLE IF EXISTS first_time;\nDROP TABLE IF EXISTS second_time;\n",
        ),
    ]);
    let doc = db
        .cli(dir.path(), &["--json", "verify", "--round-trip"])
        .assert_code(1)
        .json();
    // 002's down leaves the table it made behind.
    let rt = round_trip(&doc, "002_runs");
    assert_eq!(rt["step"], "down_differs", "{doc:#}");
    assert_eq!(
        rt["message"],
        "002_runs: the down left table public.runs behind"
    );
    assert_eq!(migration(&doc, "003_branch")["outcome"], "skipped");

    // With 002 applied to the target, 003 is the one round-tripped.
    db.cli(dir.path(), &["up", "--to", "002"]).assert_code(0);
    let doc = db
        .cli(dir.path(), &["--json", "verify", "--round-trip"])
        .assert_code(1)
        .json();
    let rt = round_trip(&doc, "003_branch");
    assert_eq!(rt["step"], "reapply_differs", "{doc:#}");
    let message = rt["message"].as_str().unwrap();
    assert!(
        message.contains(
            "applied again, it made table public.second_time, which the first apply did not"
        ),
        "{message}"
    );
    assert!(
        message.contains(
            "applied again, it did not make table public.first_time, which the first apply did"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn no_down_file_fails_and_a_failing_down_is_reported() {
    let db = TestDb::new().await;
    let dir = dir_with(&[("002_c.sql", "ALTER TABLE t ADD COLUMN c int;\n")]);
    let doc = db
        .cli(dir.path(), &["--json", "verify", "--round-trip"])
        .assert_code(1)
        .json();
    let rt = round_trip(&doc, "002_c");
    assert_eq!(rt["step"], "no_down_file", "{doc:#}");
    assert!(rt["message"]
        .as_str()
        .unwrap()
        .starts_with("002_c: no down file"));

    dir.write("002_c.down.sql", "ALTER TABLE t DROP COLUMN nope;\n");
    let doc = db
        .cli(dir.path(), &["--json", "verify", "--round-trip"])
        .assert_code(1)
        .json();
    let rt = round_trip(&doc, "002_c");
    assert_eq!(rt["step"], "down", "{doc:#}");
    assert!(rt["message"].as_str().unwrap().contains("nope"), "{rt}");

    dir.write("002_c.down.sql", "ALTER TABLE t DROP COLUMN c;\n");
    let doc = db
        .cli(dir.path(), &["--json", "verify", "--round-trip"])
        .assert_code(0)
        .json();
    assert_eq!(all_ok(&doc), 3);
}

#[tokio::test]
async fn a_non_transactional_pair_round_trips() {
    let db = TestDb::new().await;
    let dir = dir_with(&[
        (
            "002_concurrently.sql",
            "-- stepmigrate: no-transaction\nCREATE INDEX CONCURRENTLY t_id_a_idx ON t (id, a);\n",
        ),
        (
            "002_concurrently.down.sql",
            "-- stepmigrate: no-transaction\nDROP INDEX CONCURRENTLY t_id_a_idx;\n",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    let doc = db
        .cli(dir.path(), &["--json", "verify", "--round-trip"])
        .assert_code(0)
        .json();
    assert_eq!(all_ok(&doc), 2, "{doc:#}");
    assert_eq!(
        migration(&doc, "002_concurrently")["mode"],
        "no_transaction"
    );

    // The same pair whose down forgets CONCURRENTLY's index.
    dir.write(
        "002_concurrently.down.sql",
        "-- stepmigrate: no-transaction\nSELECT 1;\n",
    );
    let doc = db
        .cli(dir.path(), &["--json", "verify", "--round-trip"])
        .assert_code(1)
        .json();
    assert_eq!(
        round_trip(&doc, "002_concurrently")["message"],
        "002_concurrently: the down left index public.t_id_a_idx behind"
    );
}

#[tokio::test]
async fn round_trip_and_in_transaction_only_exclude_each_other() {
    let db = TestDb::new().await;
    let dir = dir_with(&[]);
    let run = db.cli(
        dir.path(),
        &["verify", "--round-trip", "--in-transaction-only"],
    );
    run.assert_code(2);
}

/// The down that restored nothing: an identity column's sequence options, a
/// sequence made UNLOGGED, a type's USAGE revoked, a column privilege and a statistics
/// object, all left as the up made them, were "the down restored the schema". Each is named;
/// a down that undoes each of them (by other statements than the up's opposites where it
/// can) passes.
#[tokio::test]
async fn a_down_that_leaves_sequence_options_type_grants_or_statistics_is_caught() {
    let db = TestDb::new().await;
    let dir = dir_with(&[
        (
            "002_objects.sql",
            "CREATE TABLE ids (id bigint GENERATED ALWAYS AS IDENTITY, v int, w int);\n\
             CREATE SEQUENCE counter;\nCREATE TYPE mood AS ENUM ('ok');\n",
        ),
        (
            "002_objects.down.sql",
            "DROP TYPE mood;\nDROP SEQUENCE counter;\nDROP TABLE ids;\n",
        ),
        (
            "003_options.sql",
            "ALTER TABLE ids ALTER COLUMN id SET MAXVALUE 100 SET CYCLE;\n\
             ALTER SEQUENCE counter SET UNLOGGED;\n\
             REVOKE USAGE ON TYPE mood FROM PUBLIC;\n\
             GRANT SELECT (v) ON ids TO pg_monitor;\n\
             CREATE STATISTICS ids_v_w (dependencies) ON v, w FROM ids;\n\
             CREATE POLICY positive ON ids USING (v > 0);\n",
        ),
        ("003_options.down.sql", "-- nothing to undo, it says\n"),
    ]);
    let doc = db
        .cli(dir.path(), &["--json", "verify", "--round-trip"])
        .assert_code(1)
        .json();
    let rt = round_trip(&doc, "003_options");
    assert_eq!(rt["result"], "failed", "{doc:#}");
    assert_eq!(rt["step"], "down_differs", "{doc:#}");
    let message = rt["message"].as_str().unwrap();
    for needle in [
        "the down left column public.ids.id different from before the up (identity_max 9223372036854775807 → 100, identity_cycle false → true)",
        "the down left column public.ids.v different from before the up (grants (none) → pg_monitor SELECT)",
        "the down left sequence public.counter different from before the up (persistence permanent → unlogged)",
        "the down left statistics public.ids_v_w behind",
        "the down left policy public.ids.positive behind",
        "the down left enum public.mood different from before the up (grants",
    ] {
        assert!(message.contains(needle), "{needle}\nnot in: {message}");
    }

    dir.write(
        "003_options.down.sql",
        "ALTER TABLE ids ALTER COLUMN id SET NO MAXVALUE SET NO CYCLE;\n\
         ALTER SEQUENCE counter SET LOGGED;\n\
         GRANT USAGE ON TYPE mood TO PUBLIC;\n\
         REVOKE ALL (v) ON ids FROM pg_monitor;\n\
         DROP STATISTICS ids_v_w;\n\
         DROP POLICY positive ON ids;\n",
    );
    let doc = db
        .cli(dir.path(), &["--json", "verify", "--round-trip"])
        .assert_code(0)
        .json();
    assert_eq!(all_ok(&doc), 4, "{doc:#}");
}

/// A down whose outcome depends on the target's rows (`SET NOT NULL` after the up made rows
/// NULL) restores the schema on the empty copy: never a plain "ok", but unknown on the
/// target's rows, naming the down's line.
#[tokio::test]
async fn a_down_that_depends_on_the_targets_rows_is_unknown_not_ok() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            "-- stepmigrate: irreversible\nCREATE TABLE t (id bigint PRIMARY KEY, v int NOT NULL);\n",
        ),
        (
            "002_relax.sql",
            "ALTER TABLE t ALTER COLUMN v DROP NOT NULL;\nUPDATE t SET v = NULL WHERE v > 500;\n",
        ),
        ("002_relax.down.sql", "ALTER TABLE t ALTER COLUMN v SET NOT NULL;\n"),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    db.exec("INSERT INTO t SELECT g, g FROM generate_series(1, 1000) g")
        .await;
    let doc = db
        .cli(dir.path(), &["--json", "verify", "--round-trip"])
        .json();
    let rt = round_trip(&doc, "002_relax");
    assert!(
        rt["unknown_on_target"]
            .as_str()
            .is_some_and(|w| w.contains("line 1") && w.contains("SET NOT NULL")),
        "{doc:#}"
    );
    let run = db.cli(dir.path(), &["verify", "--round-trip"]);
    assert!(
        run.stdout.contains("? unknown on the target's rows")
            && run
                .stdout
                .contains("round trip: 0 ok, 0 losing data, 1 unknown on the target's rows"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("round trip: ok"), "{}", run.stdout);
}

/// A down is judged by the target's rows as an up is: one that changes a column's type, or
/// builds an index, on a table holding rows there is unknown on the target, not "ok".
#[tokio::test]
async fn a_down_on_a_table_holding_rows_is_unknown_on_the_target() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_base.sql",
            "CREATE TABLE t (id int PRIMARY KEY, c text NOT NULL);\n",
        ),
        ("001_base.down.sql", "DROP TABLE t;\n"),
        (
            "002_widen.sql",
            "ALTER TABLE t ALTER COLUMN id TYPE bigint;\n",
        ),
        (
            "002_widen.down.sql",
            "ALTER TABLE t ALTER COLUMN id TYPE int;\n",
        ),
        ("003_note.sql", "CREATE TABLE other (id int);\n"),
        (
            "003_note.down.sql",
            "CREATE INDEX t_e ON t ((10 / (id - 1)));\nDROP INDEX t_e;\nDROP TABLE other;\n",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    db.exec("INSERT INTO t VALUES (1, 'x'), (2, 'y'); ANALYZE t")
        .await;
    let doc = db
        .cli(dir.path(), &["--json", "verify", "--round-trip"])
        .json();
    for name in ["002_widen", "003_note"] {
        let m = doc["report"]["migrations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap();
        assert!(
            m["round_trip"]["unknown_on_target"].is_string(),
            "{name}: {m:#}"
        );
    }
}

/// A down that drops a table which was there before the up and makes it again, or drops and
/// adds again a column, gives back the schema and loses what they held: never a plain "ok".
#[tokio::test]
async fn a_down_that_drops_and_makes_again_what_holds_rows_loses_data() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            "-- stepmigrate: irreversible\nCREATE TABLE t (id bigint PRIMARY KEY, note text);\nCREATE TABLE u (id bigint PRIMARY KEY, tag text);\n",
        ),
        ("002_idx.sql", "CREATE INDEX t_note ON t (note);\nALTER TABLE u ALTER COLUMN tag SET DEFAULT 'x';\n"),
        (
            "002_idx.down.sql",
            "DROP TABLE t;\nCREATE TABLE t (id bigint PRIMARY KEY, note text);\nALTER TABLE u DROP COLUMN tag;\nALTER TABLE u ADD COLUMN tag text;\n",
        ),
        ("003_plain.sql", "CREATE INDEX u_tag ON u (tag);\n"),
        ("003_plain.down.sql", "DROP INDEX u_tag;\n"),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    db.exec("INSERT INTO t VALUES (1, 'kept'); INSERT INTO u VALUES (1, 'kept')")
        .await;
    let doc = db
        .cli(dir.path(), &["--json", "verify", "--round-trip"])
        .json();
    let rt = round_trip(&doc, "002_idx");
    let lost: Vec<&str> = rt["loses_data"]
        .as_array()
        .unwrap_or_else(|| panic!("{doc:#}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        lost,
        [
            "table public.t is made again",
            "column public.u.tag is added again"
        ],
        "{doc:#}"
    );
    assert!(
        round_trip(&doc, "003_plain").get("loses_data").is_none(),
        "{doc:#}"
    );
    let run = db.cli(dir.path(), &["verify", "--round-trip"]);
    assert!(
        run.stdout.contains("loses data: after the up and its down, table public.t is made again, column public.u.tag is added again")
            && run.stdout.contains("round trip: 1 ok, 1 losing data,")
            // What the copy cannot stand for is named in the header.
            && run.stdout.contains("(grants, owners and the README's other uncaptured attributes unchecked"),
        "{}",
        run.stdout
    );
}

/// What the round trip loses is judged against the database before the up, object by
/// object, whatever the up did to it (renamed, dropped) and whatever a later migration's down
/// does to the same name: a renamed column dropped and added again, a dropped column added
/// again, a renamed table made again, a TRUNCATE (even of a table a later down makes again)
/// all lose data; a down that makes a table again and copies the rows is unknown on the
/// target, not a loss.
#[tokio::test]
async fn what_a_round_trip_loses_is_judged_against_the_database_before_the_up() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_base.sql",
            "-- stepmigrate: irreversible\nCREATE TABLE t (id int PRIMARY KEY, c text, d text);\nCREATE TABLE o2 (id int PRIMARY KEY);\nCREATE TABLE r (id int PRIMARY KEY);\n",
        ),
        ("002_rename.sql", "ALTER TABLE t RENAME COLUMN c TO c2;\n"),
        (
            "002_rename.down.sql",
            "ALTER TABLE t DROP COLUMN c2;\nALTER TABLE t ADD COLUMN c text;\n",
        ),
        ("003_drop.sql", "ALTER TABLE t DROP COLUMN d;\n"),
        ("003_drop.down.sql", "ALTER TABLE t ADD COLUMN d text;\n"),
        ("004_trunc.sql", "CREATE INDEX t_id ON t (id);\n"),
        ("004_trunc.down.sql", "DROP INDEX t_id;\nTRUNCATE o2;\n"),
        ("005_o2_q.sql", "ALTER TABLE o2 ADD COLUMN q int;\n"),
        (
            "005_o2_q.down.sql",
            "ALTER TABLE o2 RENAME TO o2_old;\nALTER INDEX o2_pkey RENAME TO o2_old_pkey;\nCREATE TABLE o2 (id int PRIMARY KEY);\nINSERT INTO o2 SELECT id FROM o2_old;\nDROP TABLE o2_old;\n",
        ),
        ("006_rt.sql", "ALTER TABLE r RENAME TO r2;\n"),
        (
            "006_rt.down.sql",
            "DROP TABLE r2;\nCREATE TABLE r (id int PRIMARY KEY);\n",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    db.exec("INSERT INTO t VALUES (1, 'x', 'y'); INSERT INTO o2 VALUES (1), (2); INSERT INTO r VALUES (1); ANALYZE")
        .await;
    let doc = db
        .cli(dir.path(), &["--json", "verify", "--round-trip"])
        .json();
    let lost = |name: &str| -> Vec<String> {
        round_trip(&doc, name)["loses_data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        lost("002_rename"),
        ["column public.t.c is added again"],
        "{doc:#}"
    );
    assert_eq!(
        lost("003_drop"),
        ["column public.t.d is added again"],
        "{doc:#}"
    );
    assert_eq!(
        lost("004_trunc"),
        ["line 2: TRUNCATE empties table public.o2"],
        "{doc:#}"
    );
    assert_eq!(lost("006_rt"), ["table public.r is made again"], "{doc:#}");
    assert!(lost("005_o2_q").is_empty(), "{doc:#}");
    assert!(
        round_trip(&doc, "005_o2_q")["unknown_on_target"]
            .as_str()
            .is_some_and(|w| w.contains("line 4") && w.contains("fills it with INSERT")),
        "{doc:#}"
    );
}

/// A table of the application named like the ledger's is the application's: a down that
/// leaves it behind fails the round trip (the snapshot left every `schema_migration*` out).
#[tokio::test]
async fn a_table_named_like_the_ledger_is_compared() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            "-- stepmigrate: irreversible\nCREATE TABLE t (id int PRIMARY KEY);\n",
        ),
        (
            "002_x.sql",
            "CREATE TABLE IF NOT EXISTS schema_migrations_archive (id int, payload text);\n",
        ),
        ("002_x.down.sql", "SELECT 1;\n"),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    let run = db.cli(dir.path(), &["--json", "verify", "--round-trip"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let doc = run.json();
    assert!(
        round_trip(&doc, "002_x")["message"]
            .as_str()
            .is_some_and(|m| m.contains("schema_migrations_archive")),
        "{doc:#}"
    );
}
