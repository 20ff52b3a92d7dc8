//! `stepmigrate verify`'s report must be true, not merely plausible: what COMMIT checks is
//! checked, a lock is reported for as long as it is held, and an empty copy's results are not
//! presented as the target's.

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

const DEFERRED: &str = "CREATE TABLE p (id int PRIMARY KEY);
CREATE TABLE c (id int, p int REFERENCES p DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE q (v int);
CREATE FUNCTION no_negatives() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.v < 0 THEN RAISE EXCEPTION 'negative value %', NEW.v; END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER q_no_negatives AFTER INSERT ON q DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION no_negatives();
";

#[tokio::test]
async fn deferred_constraints_and_constraint_triggers_are_checked_at_each_migrations_end() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_schema.sql", DEFERRED),
        // Valid at COMMIT: the parent comes after the child.
        (
            "002_ok.sql",
            "INSERT INTO c VALUES (1, 1);\nINSERT INTO p VALUES (1);\n",
        ),
        // And so here, after 002's check: its constraints are deferred again.
        (
            "003_ok_too.sql",
            "INSERT INTO c VALUES (2, 2);\nINSERT INTO p VALUES (2);\n",
        ),
        ("004_orphan.sql", "INSERT INTO c VALUES (3, 42);\n\n"),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    for mode in [&["--in-transaction-only"][..], &[][..]] {
        let mut args = vec!["--json", "verify"];
        args.extend(mode);
        let run = db.cli(dir.path(), &args);
        let doc = run.json();
        assert_eq!(run.code, 1, "{mode:?}: {doc:#}");
        assert_eq!(
            migration(&doc, "002_ok")["outcome"],
            "ok",
            "{mode:?}: {doc:#}"
        );
        assert_eq!(
            migration(&doc, "003_ok_too")["outcome"],
            "ok",
            "{mode:?}: {doc:#}"
        );
        let orphan = migration(&doc, "004_orphan");
        assert_eq!(orphan["outcome"], "failed", "{mode:?}: {doc:#}");
        assert_eq!(orphan["error"]["sqlstate"], "23503", "{mode:?}: {doc:#}");
    }
    // In the target's transaction, at the migration's end: its last line, at COMMIT.
    let run = db.cli(dir.path(), &["--json", "verify", "--in-transaction-only"]);
    let orphan = migration(&run.json(), "004_orphan").clone();
    assert_eq!(orphan["error"]["line"], 1, "{orphan:#}");
    assert!(orphan["error"]["statement"]
        .as_str()
        .unwrap()
        .starts_with("COMMIT"));

    // A deferred constraint trigger.
    dir.remove("004_orphan.sql");
    dir.write(
        "004_negative.sql",
        "INSERT INTO q VALUES (1);\nINSERT INTO q VALUES (-5);\n",
    );
    let run = db.cli(dir.path(), &["--json", "verify", "--in-transaction-only"]);
    let doc = run.json();
    assert_eq!(run.code, 1, "{doc:#}");
    let negative = migration(&doc, "004_negative");
    assert_eq!(negative["error"]["sqlstate"], "P0001", "{doc:#}");
    assert_eq!(negative["error"]["line"], 2, "{doc:#}");
    assert_eq!(db.applied().await, ["001"]);
}

#[tokio::test]
async fn a_lock_is_reported_from_the_statement_that_takes_it_to_the_commit() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            "CREATE TABLE t (id int PRIMARY KEY, c int);\nINSERT INTO t SELECT g, g FROM generate_series(1, 2000) g;\nCREATE TABLE other (id int);\n",
        ),
        (
            "002_add_and_fill.sql",
            "ALTER TABLE t ADD COLUMN d int;\nUPDATE t SET d = c;\nINSERT INTO other VALUES (1);\nALTER TABLE t ALTER COLUMN c TYPE bigint;\nALTER TABLE t ALTER COLUMN c TYPE int;\n",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    for mode in [&["--in-transaction-only"][..], &[][..]] {
        let mut args = vec!["--json", "verify"];
        args.extend(mode);
        let run = db.cli(dir.path(), &args);
        let doc = run.json();
        assert_eq!(run.code, 0, "{mode:?}: {doc:#}");
        let m = migration(&doc, "002_add_and_fill");
        // The summary: t is held ACCESS EXCLUSIVE from line 1 to the end; other only
        // ROW EXCLUSIVE, from line 3.
        let held = m["locks_held"].as_array().unwrap();
        let t = held
            .iter()
            .find(|l| l["relation"] == "public.t")
            .unwrap_or_else(|| panic!("{m:#}"));
        assert_eq!(t["mode"], "AccessExclusiveLock");
        assert_eq!(t["from_line"], 1);
        assert!(t["blocks"]
            .as_str()
            .unwrap()
            .contains("every query on it waits"));
        let held_ms = t["held_ms"].as_f64().unwrap();
        let statements_ms: f64 = m["statements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["duration_ms"].as_f64().unwrap())
            .sum();
        assert!(
            held_ms >= statements_ms,
            "{held_ms} < {statements_ms}: {m:#}"
        );
        let other = held
            .iter()
            .find(|l| l["relation"] == "public.other")
            .unwrap();
        assert_eq!(other["mode"], "RowExclusiveLock");
        assert_eq!(other["from_line"], 3);
        // No statement's line says reads and writes go on for t, held ACCESS EXCLUSIVE.
        for s in m["statements"].as_array().unwrap() {
            for l in s["locks"].as_array().unwrap() {
                if l["relation"] == "public.t" {
                    assert!(
                        !l["blocks"].as_str().unwrap().contains("go on"),
                        "line {}: {l:#}",
                        s["line"]
                    );
                }
            }
        }
        // Rewrites, per statement: lines 4 and 5 both rewrite t, line 1 does not.
        let rewrites_at = |line: u64| -> Vec<String> {
            m["statements"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["line"] == line)
                .map(|s| {
                    s["rewrites"]
                        .as_array()
                        .map(|r| {
                            r.iter()
                                .map(|r| r["relation"].as_str().unwrap().to_owned())
                                .collect()
                        })
                        .unwrap_or_default()
                })
                .unwrap()
        };
        assert!(rewrites_at(1).is_empty(), "{m:#}");
        assert!(rewrites_at(4).contains(&"public.t".to_owned()), "{m:#}");
        assert!(rewrites_at(5).contains(&"public.t".to_owned()), "{m:#}");
    }
    let run = db.cli(dir.path(), &["verify", "--in-transaction-only"]);
    run.assert_code(0);
    assert!(
        run.stdout
            .contains("held until COMMIT: AccessExclusiveLock on table public.t from line 1"),
        "{}",
        run.stdout
    );
    let update = run
        .stdout
        .lines()
        .skip_while(|l| !l.contains("line 2: UPDATE"))
        .take_while(|l| !l.contains("line 3:"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!update.contains("go on"), "{update}");
}

#[tokio::test]
async fn an_empty_copys_results_are_not_presented_as_the_targets() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_t.sql", "CREATE TABLE t (id int PRIMARY KEY, c int);\n"),
        (
            "002_not_null.sql",
            "ALTER TABLE t ALTER COLUMN c SET NOT NULL;\n",
        ),
        ("003_unique.sql", "CREATE UNIQUE INDEX t_c_key ON t (c);\n"),
        (
            "004_widen.sql",
            "ALTER TABLE t ALTER COLUMN id TYPE bigint;\n",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    // The application's rows: NULLs and duplicates, only on the target.
    db.exec("INSERT INTO t SELECT g, CASE WHEN g % 10 = 0 THEN NULL ELSE g % 100 END FROM generate_series(1, 20000) g; ANALYZE t;")
        .await;
    let run = db.cli(dir.path(), &["--json", "verify"]);
    let doc = run.json();
    assert_eq!(run.code, 0, "{doc:#}");
    assert_eq!(doc["report"]["empty_copy"], true, "{doc:#}");
    for name in ["002_not_null", "003_unique"] {
        let m = migration(&doc, name);
        assert_eq!(m["unknown_on_empty_copy"], true, "{name}: {m:#}");
        assert_eq!(
            m["statements"][0]["depends_on_data"]["kind"], "outcome",
            "{m:#}"
        );
        let t = &m["target_tables"][0];
        assert_eq!(t["relation"], "public.t", "{m:#}");
        assert_eq!(t["rows"], 20000, "{m:#}");
        assert!(t["bytes"].as_i64().unwrap() > 100_000, "{m:#}");
    }
    // A type change converts every value of a table that holds rows: verify does not tell a
    // widening from a narrowing, so it is unknown on an empty copy too.
    let widen = migration(&doc, "004_widen");
    assert_eq!(widen["unknown_on_empty_copy"], true, "{widen:#}");
    assert_eq!(
        widen["statements"][0]["depends_on_data"]["kind"], "outcome",
        "{widen:#}"
    );
    assert_eq!(widen["target_tables"][0]["rows"], 20000, "{widen:#}");

    let run = db.cli(dir.path(), &["verify"]);
    run.assert_code(0);
    assert!(run.stdout.contains("none of its data"), "{}", run.stdout);
    assert!(
        !run.stdout.contains("\u{2713} 002_not_null"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("\u{2713} 003_unique"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("? 002_not_null"), "{}", run.stdout);
    assert!(
        run.stdout.contains("SET NOT NULL fails on any NULL"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("on the target: public.t: about 20,000 rows"),
        "{}",
        run.stdout
    );
    // On the target's own rows the answer is known: it fails.
    let run = db.cli(dir.path(), &["--json", "verify", "--in-transaction-only"]);
    assert_eq!(run.code, 1);
    assert_eq!(
        migration(&run.json(), "002_not_null")["error"]["sqlstate"],
        "23502"
    );
}

#[tokio::test]
async fn what_reads_the_targets_rows_is_unknown_on_an_empty_copy_unless_known_not_to() {
    let db = TestDb::new().await;
    let risky: &[(&str, &str)] = &[
        ("002_shorter", "ALTER TABLE t ALTER b TYPE varchar(5);\n"),
        ("003_narrower", "ALTER TABLE t ALTER c TYPE int;\n"),
        ("004_domain_not_null", "ALTER DOMAIN d SET NOT NULL;\n"),
        (
            "005_domain_check",
            "ALTER DOMAIN d ADD CONSTRAINT d_pos CHECK (VALUE > 0);\n",
        ),
        (
            "006_partition",
            "CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (1) TO (10);\n",
        ),
        (
            "007_attach",
            "ALTER TABLE p ATTACH PARTITION loose FOR VALUES FROM (10) TO (20);\n",
        ),
        ("008_insert", "INSERT INTO t2 SELECT 1;\n"),
        ("009_refresh", "REFRESH MATERIALIZED VIEW mv;\n"),
        ("010_ctas", "CREATE TABLE t3 AS SELECT 1 / a AS x FROM t;\n"),
        (
            "011_generated",
            "ALTER TABLE t ADD COLUMN g int GENERATED ALWAYS AS (10 / a) STORED;\n",
        ),
        ("012_index", "CREATE INDEX ON t ((10 / a));\n"),
    ];
    let mut files = vec![(
        "001_schema.sql".to_owned(),
        "CREATE TABLE t (a int, b text, c bigint);\nCREATE DOMAIN d AS int;\nCREATE TABLE td (x d);\nCREATE TABLE p (k int) PARTITION BY RANGE (k);\nCREATE TABLE p_default PARTITION OF p DEFAULT;\nCREATE TABLE loose (k int);\nCREATE TABLE t2 (id int PRIMARY KEY);\nCREATE MATERIALIZED VIEW mv AS SELECT 1 / a AS x FROM t;\n".to_owned(),
    )];
    files.extend(
        risky
            .iter()
            .map(|(n, s)| (format!("{n}.sql"), (*s).to_owned())),
    );
    files.push((
        "013_catalog_only.sql".to_owned(),
        "ALTER TABLE t ADD COLUMN e int DEFAULT 0, ALTER COLUMN b SET DEFAULT 'x';\nCOMMENT ON TABLE t IS 'rows';\nALTER TABLE t2 ADD CONSTRAINT t2_pos CHECK (id > 0) NOT VALID;\n".to_owned(),
    ));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_str()))
        .collect();
    let dir = Dir::new(&refs);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    // The target's rows, each of which breaks one statement; never analyzed.
    db.exec("INSERT INTO t VALUES (0, 'longer than five', 99999999999); INSERT INTO td VALUES (NULL), (-1); INSERT INTO p VALUES (5); INSERT INTO loose VALUES (1); INSERT INTO t2 VALUES (1);")
        .await;
    let run = db.cli(dir.path(), &["--json", "verify"]);
    let doc = run.json();
    assert_eq!(run.code, 0, "{doc:#}");
    for (name, _) in risky {
        let m = migration(&doc, name);
        assert_eq!(m["outcome"], "ok", "{name}: {m:#}");
        assert_eq!(m["unknown_on_empty_copy"], true, "{name}: {m:#}");
        assert_eq!(
            m["statements"][0]["depends_on_data"]["kind"], "outcome",
            "{name}: {m:#}"
        );
    }
    let safe = migration(&doc, "013_catalog_only");
    assert!(safe.get("unknown_on_empty_copy").is_none(), "{safe:#}");
    let run = db.cli(dir.path(), &["verify"]);
    run.assert_code(0);
    for (name, _) in risky {
        assert!(
            run.stdout.contains(&format!("? {name}")),
            "{name}: {}",
            run.stdout
        );
    }
    assert!(
        run.stdout.contains("\u{2713} 013_catalog_only"),
        "{}",
        run.stdout
    );
}

/// After the deploy's run, an after-deploy migration is pending below a migration applied
/// after it: the copy is built from everything the target applied, so it has the target's
/// schema (no invented difference) and the pending one is verified against it.
#[tokio::test]
async fn the_copy_has_what_was_applied_after_a_pending_after_deploy_migration() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_t.sql", "CREATE TABLE t (id int, v int);\n"),
        (
            "002_idx.sql",
            "-- stepmigrate: after-deploy\nCREATE INDEX t_v ON t (v);\n",
        ),
        ("003_z.sql", "CREATE TABLE z (id int);\n"),
        ("004_z.sql", "ALTER TABLE z ADD COLUMN n int;\n"),
    ]);
    db.cli(dir.path(), &["up", "--skip-after-deploy", "--to", "003"])
        .assert_code(0);
    assert_eq!(db.applied().await, ["001", "003"]);
    let run = db.cli(dir.path(), &["--json", "verify"]);
    run.assert_code(0);
    let doc = run.json();
    assert!(doc["report"].get("copy_differs").is_none(), "{doc:#}");
    assert_eq!(doc["report"]["migrations"][0]["outcome"], "ok", "{doc:#}");
    // 004 changes z, which only the replay of 003 made.
    assert_eq!(doc["report"]["migrations"][1]["name"], "004_z", "{doc:#}");
    assert_eq!(doc["report"]["migrations"][1]["outcome"], "ok", "{doc:#}");
}

/// A procedure that COMMITs, in a migration outside a transaction: `up` runs it bare, but on
/// the scratch database each statement runs in a transaction of its own (so that nothing of
/// the whole server commits there), where it cannot run. Not verified, never "failed".
#[tokio::test]
async fn a_procedure_that_commits_is_not_verified_rather_than_failed() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_t.sql", "CREATE TABLE t (id int);\n"),
        (
            "002_proc.sql",
            "-- stepmigrate: no-transaction\n\
             CREATE PROCEDURE p() LANGUAGE plpgsql AS $$\n\
             BEGIN INSERT INTO t VALUES (1); COMMIT; INSERT INTO t VALUES (2); END $$;\n\
             CALL p();\n",
        ),
        ("003_u.sql", "CREATE TABLE u (id int);\n"),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    let run = db.cli(dir.path(), &["--json", "verify"]);
    run.assert_code(0);
    let doc = run.json();
    let m = &doc["report"]["migrations"];
    assert_eq!(m[0]["outcome"], "skipped", "{doc:#}");
    assert!(
        m[0]["reason"]
            .as_str()
            .unwrap()
            .contains("line 4 ends transactions"),
        "{doc:#}"
    );
    assert_eq!(m[1]["outcome"], "skipped", "{doc:#}");
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert_eq!(db.query("SELECT count(*)::text FROM t").await, ["2"]);
}

/// A deferred constraint trigger takes its locks at COMMIT: verify reads them where it fires
/// the deferred triggers, and reports them held until COMMIT (ACCESS EXCLUSIVE on an
/// existing table here), in both modes.
#[tokio::test]
async fn a_lock_taken_by_a_deferred_trigger_at_commit_is_reported() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            "CREATE TABLE big (id int);\nCREATE TABLE t (id int);\n\
             CREATE FUNCTION lk() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN LOCK TABLE big IN ACCESS EXCLUSIVE MODE; RETURN NULL; END $$;\n\
             CREATE CONSTRAINT TRIGGER t_lk AFTER INSERT ON t DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION lk();\n",
        ),
        ("002_ins.sql", "INSERT INTO t VALUES (1);\n"),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    for mode in [&[][..], &["--in-transaction-only"][..]] {
        let mut args = vec!["--json", "verify"];
        args.extend(mode);
        let run = db.cli(dir.path(), &args);
        let doc = run.json();
        let m = &doc["report"]["migrations"][0];
        assert_eq!(
            m["flags"]["access_exclusive_on_existing"], true,
            "{mode:?}: {doc:#}"
        );
        assert!(
            m["locks_held"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l["relation"] == "public.big" && l["mode"] == "AccessExclusiveLock"),
            "{mode:?}: {doc:#}"
        );
    }
}

/// Where the target's sequence stands is data the empty copy does not have: a statement
/// that uses or changes an existing sequence is unknown there.
#[tokio::test]
async fn a_statement_on_an_existing_sequence_is_unknown_on_an_empty_copy() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_s.sql", "CREATE SEQUENCE s;\n"),
        ("002_s.sql", "ALTER SEQUENCE s MAXVALUE 100;\n"),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    db.exec("SELECT setval('s', 500)").await;
    let run = db.cli(dir.path(), &["verify"]);
    run.assert_code(0);
    assert!(run.stdout.contains("? 002_s"), "{}", run.stdout);
    dir.write(
        "002_s.sql",
        "CREATE TABLE n (id int DEFAULT nextval('s') CHECK (id < 100));\nINSERT INTO n DEFAULT VALUES;\n",
    );
    let run = db.cli(dir.path(), &["verify"]);
    run.assert_code(0);
    assert!(run.stdout.contains("? 002_s"), "{}", run.stdout);
}

/// A `--dev-url` database is emptied of what the migrations left beyond schemas too (default
/// privileges, large objects, functions in pg_catalog, access methods), and such leftovers
/// are refused at the start.
#[tokio::test]
async fn a_dev_database_is_emptied_of_default_privileges_large_objects_and_catalog_functions() {
    let db = TestDb::new().await;
    let dev = TestDb::new().await;
    let am = format!("am_{}", &db.name[8..]);
    let dir = Dir::new(&[
        ("001_t.sql", "CREATE TABLE t (id int);\n"),
        (
            "002_x.sql",
            &format!(
                "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC;\n\
                 SELECT lo_from_bytea(0, 'hello');\n\
                 CREATE FUNCTION pg_catalog.upper(varchar) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT 'HIJACKED' $$;\n\
                 CREATE ACCESS METHOD {am} TYPE TABLE HANDLER heap_tableam_handler;\n\
                 CREATE DOMAIN pg_catalog.left_dom AS int CHECK (VALUE > 0);\n\
                 CREATE COLLATION pg_catalog.left_coll FROM \"C\";\n\
                 CREATE OPERATOR pg_catalog.=== (LEFTARG = int, RIGHTARG = int, FUNCTION = int4eq);\n\
                 CREATE TRUSTED LANGUAGE left_lang HANDLER plpgsql_call_handler;\n\
                 CREATE TABLE information_schema.left_tab (id int);\n"
            ),
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    db.cli(dir.path(), &["verify", "--dev-url", &dev.url])
        .assert_code(0);
    assert_eq!(
        dev.query(
            "SELECT concat_ws(',', (SELECT count(*) FROM pg_default_acl), (SELECT count(*) FROM pg_largeobject_metadata), upper('abc'::varchar), (SELECT count(*) FROM pg_am WHERE oid >= 16384), (SELECT count(*) FROM pg_type WHERE oid >= 16384 AND typnamespace = 'pg_catalog'::regnamespace), (SELECT count(*) FROM pg_collation WHERE oid >= 16384), (SELECT count(*) FROM pg_operator WHERE oid >= 16384), (SELECT count(*) FROM pg_language WHERE lanname = 'left_lang'), (SELECT count(*) FROM pg_class WHERE relnamespace = 'information_schema'::regnamespace AND oid >= 16384))"
        )
        .await,
        ["0,0,ABC,0,0,0,0,0,0"]
    );
    db.cli(dir.path(), &["verify", "--dev-url", &dev.url])
        .assert_code(0);
    dev.exec("SELECT lo_from_bytea(0, 'left')").await;
    let run = db.cli(dir.path(), &["verify", "--dev-url", &dev.url]);
    run.assert_code(2);
    assert!(run.stderr.contains("large object"), "{}", run.stderr);
    dev.exec("SELECT lo_unlink(oid) FROM pg_largeobject_metadata")
        .await;
    dev.exec("CREATE TRUSTED LANGUAGE left_lang HANDLER plpgsql_call_handler")
        .await;
    let run = db.cli(dir.path(), &["verify", "--dev-url", &dev.url]);
    run.assert_code(2);
    assert!(run.stderr.contains("language left_lang"), "{}", run.stderr);
    dev.exec("DROP LANGUAGE left_lang; CREATE TABLE information_schema.left_tab (id int)")
        .await;
    let run = db.cli(dir.path(), &["verify", "--dev-url", &dev.url]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("information_schema.left_tab"),
        "{}",
        run.stderr
    );
}

/// Large objects are the target's data: a fixed OID taken there is unknown on the copy.
#[tokio::test]
async fn a_large_object_is_unknown_on_an_empty_copy() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_t.sql", "CREATE TABLE t (id int);\n"),
        ("002_lo.sql", "SELECT lo_create(4242);\n"),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    db.exec("SELECT lo_create(4242)").await;
    let run = db.cli(dir.path(), &["verify"]);
    run.assert_code(0);
    assert!(run.stdout.contains("? 002_lo"), "{}", run.stdout);
}

/// The target database's own settings are the copy's too: with `search_path = app, public`
/// set on the target, `CREATE TABLE users` meets `app.users` there as on the target.
#[tokio::test]
async fn the_copy_has_the_target_databases_own_settings() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_app.sql",
            "CREATE SCHEMA app;\nCREATE TABLE app.users (id int PRIMARY KEY);\n",
        ),
        (
            "002_users.sql",
            "CREATE TABLE users (id bigint PRIMARY KEY);\n",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    // A list, and values that are not words (they must be quoted to be set again).
    db.exec(&format!(
        "ALTER DATABASE {0} SET search_path = app, public; ALTER DATABASE {0} SET TimeZone = 'America/New_York'; ALTER DATABASE {0} SET log_statement = 'all'",
        db.name
    ))
    .await;
    let run = db.cli(dir.path(), &["--json", "verify"]);
    let doc = run.json();
    assert_eq!(
        doc["report"]["migrations"][0]["outcome"], "failed",
        "{doc:#}"
    );
    assert_eq!(
        doc["report"]["migrations"][0]["error"]["sqlstate"], "42P07",
        "{doc:#}"
    );
    assert!(doc["report"].get("copy_differs").is_none(), "{doc:#}");
}

#[tokio::test]
async fn a_copy_that_differs_from_the_target_says_so_and_gives_no_check_mark() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_t.sql", "CREATE TABLE t (id int);\n"),
        ("002_t2.sql", "CREATE TABLE t2 (id int);\n"),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    // A hotfix by hand: `up` of 002 would fail with 42P07.
    db.exec("CREATE TABLE t2 (id int)").await;
    let run = db.cli(dir.path(), &["--json", "verify"]);
    let doc = run.json();
    let differs: Vec<&str> = doc["report"]["copy_differs"]
        .as_array()
        .unwrap_or_else(|| panic!("no copy_differs: {doc:#}"))
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(
        differs,
        ["table public.t2 is on the target only"],
        "{doc:#}"
    );
    let run = db.cli(dir.path(), &["verify"]);
    assert!(
        run.stdout.contains("does NOT have the target's schema"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("table public.t2 is on the target only"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("\u{2713} 002_t2"), "{}", run.stdout);
    assert!(run.stdout.contains("? 002_t2"), "{}", run.stdout);

    // Without the hotfix the copy is the target's schema: nothing reported.
    db.exec("DROP TABLE t2").await;
    let run = db.cli(dir.path(), &["--json", "verify"]);
    assert_eq!(run.code, 0);
    assert!(
        run.json()["report"].get("copy_differs").is_none(),
        "{}",
        run.stdout
    );
    let run = db.cli(dir.path(), &["verify"]);
    assert!(run.stdout.contains("\u{2713} 002_t2"), "{}", run.stdout);
}

/// A `DO` block may read a table's rows or statistics without locking it (`SELECT reltuples
/// FROM pg_class`), so its ok on an empty copy says nothing of the target where tables hold
/// rows: unknown, never ✓.
#[tokio::test]
async fn a_do_block_is_unknown_on_an_empty_copy_where_the_target_holds_rows() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            "-- stepmigrate: irreversible\nCREATE TABLE t (id bigint PRIMARY KEY, v int);\n",
        ),
        (
            "002_guard.sql",
            "-- stepmigrate: irreversible\nDO $$\nBEGIN\n  IF (SELECT reltuples FROM pg_class WHERE oid = 'public.t'::regclass) > 0 THEN\n    RAISE EXCEPTION 'public.t must be empty';\n  END IF;\nEND $$;\nDROP TABLE t;\n",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    db.exec("INSERT INTO t SELECT g, 1 FROM generate_series(1, 1000) g; ANALYZE t")
        .await;
    let doc = db.cli(dir.path(), &["--json", "verify"]).json();
    let m = migration(&doc, "002_guard");
    assert_eq!(m["unknown_on_empty_copy"], true, "{doc:#}");
    assert!(
        m["statements"][0]["depends_on_data"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("it runs code")),
        "{doc:#}"
    );
}

/// Outside a transaction no lock is seen, but the index a migration built is: one built on
/// a table that holds rows on the target is unknown on an empty copy (its expression may
/// fail on them), never ✓, as `up` then fails on the target's row.
#[tokio::test]
async fn an_index_built_outside_a_transaction_on_a_table_with_rows_is_unknown() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_base.sql",
            "-- stepmigrate: irreversible\nCREATE TABLE t (a int PRIMARY KEY, b text);\n",
        ),
        (
            "002_nt.sql",
            "-- stepmigrate: no-transaction\n-- stepmigrate: irreversible\nCREATE INDEX CONCURRENTLY t_inv_idx ON t ((1 / (a - 1)));\n",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    db.exec("INSERT INTO t VALUES (1, 'abc'); ANALYZE t").await;
    let doc = db.cli(dir.path(), &["--json", "verify"]).json();
    let m = migration(&doc, "002_nt");
    assert_eq!(m["unknown_on_empty_copy"], true, "{doc:#}");
    let run = db.cli(dir.path(), &["verify"]);
    assert!(!run.stdout.contains("\u{2713} 002_nt"), "{}", run.stdout);
    db.cli(dir.path(), &["up"]).assert_code(1);
}

/// What runs per row (a row trigger, a foreign key's action) ran for no row on the empty copy,
/// so the locks it takes on the target are not in the report: it says so, where the target's
/// table holds rows, and only there.
#[tokio::test]
async fn locks_that_run_per_row_are_said_unknown_on_an_empty_copy() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            "CREATE TABLE t (id int PRIMARY KEY, v int);\nINSERT INTO t SELECT g, g FROM generate_series(1, 50) g;\nCREATE TABLE u (id int);\nCREATE TABLE empty (id int);\n",
        ),
        (
            "002_trigger.sql",
            "CREATE FUNCTION lk() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN LOCK TABLE u IN ACCESS EXCLUSIVE MODE; RETURN NEW; END$$;\n\
             CREATE TRIGGER t_lk BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION lk();\n\
             UPDATE t SET v = v WHERE id = 1;\n",
        ),
        ("003_ddl.sql", "ALTER TABLE t ADD COLUMN w int;\nUPDATE empty SET id = id;\n"),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    db.exec("ANALYZE t; ANALYZE empty").await;
    let doc = db.cli(dir.path(), &["--json", "verify"]).json();
    let why = migration(&doc, "002_trigger")["locks_unseen"]
        .as_str()
        .unwrap_or_else(|| panic!("{doc:#}"));
    assert!(
        why.contains("public.t") || why.contains(" t,") || why.contains(" t "),
        "{why}"
    );
    // Not a row of `empty` on the target, and ADD COLUMN runs nothing per row.
    assert!(
        migration(&doc, "003_ddl").get("locks_unseen").is_none(),
        "{doc:#}"
    );
    let human = db.cli(dir.path(), &["verify"]);
    assert!(
        human.stdout.contains("? locks unknown on an empty copy"),
        "{}",
        human.stdout
    );
}

/// Outside a transaction no lock is seen: a statement of a no-transaction migration that reads
/// rows (a query, DML, code) is unknown on an empty copy, not ✓ (`up` then fails on the
/// target's rows and leaves it dirty).
#[tokio::test]
async fn a_no_transaction_statement_that_reads_rows_is_unknown_on_an_empty_copy() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_t.sql", "CREATE TABLE t (x int);\n"),
        (
            "002_check.sql",
            "-- stepmigrate: no-transaction\nDO $$ BEGIN PERFORM 1/x FROM t; END $$;\nSELECT 1/x FROM t;\n",
        ),
        ("003_plain.sql", "-- stepmigrate: no-transaction\nSELECT 1;\n"),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    db.exec("INSERT INTO t VALUES (0); ANALYZE t").await;
    let doc = db.cli(dir.path(), &["--json", "verify"]).json();
    let m = migration(&doc, "002_check");
    assert_eq!(m["unknown_on_empty_copy"], true, "{doc:#}");
    assert!(
        migration(&doc, "003_plain")
            .get("unknown_on_empty_copy")
            .is_none(),
        "{doc:#}"
    );
}

/// A table renamed or moved by a pending migration is judged by the target's rows under its
/// name there; a table that a pending migration filled from the target's rows holds rows too.
#[tokio::test]
async fn a_renamed_or_filled_table_is_judged_by_the_targets_rows() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_src.sql",
            "CREATE TABLE src (x bigint);\nCREATE TABLE other (x bigint);\n",
        ),
        ("002_rename.sql", "ALTER TABLE src RENAME TO t;\n"),
        ("003_narrow.sql", "ALTER TABLE t ALTER COLUMN x TYPE int;\n"),
        (
            "004_copy.sql",
            "CREATE TABLE t2 AS SELECT x FROM other;\nALTER TABLE t2 ALTER COLUMN x TYPE int;\n",
        ),
        (
            "005_later.sql",
            "ALTER TABLE t2 ALTER COLUMN x TYPE smallint;\n",
        ),
        (
            "006_fresh.sql",
            "CREATE TABLE fresh (x bigint);\nALTER TABLE fresh ALTER COLUMN x TYPE int;\n",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    db.exec("INSERT INTO src VALUES (5000000000); INSERT INTO other VALUES (5000000000); ANALYZE src; ANALYZE other")
        .await;
    let doc = db.cli(dir.path(), &["--json", "verify"]).json();
    for name in ["003_narrow", "004_copy", "005_later"] {
        assert_eq!(
            migration(&doc, name)["unknown_on_empty_copy"],
            true,
            "{name}: {doc:#}"
        );
    }
    let narrow = migration(&doc, "003_narrow");
    assert!(
        narrow["target_tables"].to_string().contains("public.src"),
        "{narrow:#}"
    );
    // A table made and changed by the pending migrations, filled from nothing of the target's.
    assert!(
        migration(&doc, "006_fresh")
            .get("unknown_on_empty_copy")
            .is_none(),
        "{doc:#}"
    );
}

/// A statement that takes no lock an earlier statement of its migration did not take already
/// adds nothing to `pg_locks`: what it reads of a table holding rows is found by its words.
#[tokio::test]
async fn a_lock_taken_before_in_the_same_migration_does_not_hide_a_read() {
    for body in [
        "CREATE VIEW v AS SELECT x FROM t;\nCREATE TABLE t2 AS SELECT 1/x AS y FROM t;\n",
        "ALTER TABLE t ADD COLUMN note text;\nALTER TABLE t ADD COLUMN g int NOT NULL DEFAULT NULL::int;\n",
        "LOCK TABLE t IN ACCESS SHARE MODE;\nSELECT 1/x FROM t;\n",
    ] {
        let db = TestDb::new().await;
        let dir = Dir::new(&[("001_t.sql", "CREATE TABLE t (x int);\n"), ("002_s.sql", body)]);
        db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
        db.exec("INSERT INTO t VALUES (0); ANALYZE t").await;
        let doc = db.cli(dir.path(), &["--json", "verify"]).json();
        assert_eq!(
            migration(&doc, "002_s")["unknown_on_empty_copy"],
            true,
            "{body}: {doc:#}"
        );
    }
}
