//! `stepmigrate verify` against a real PostgreSQL: each kind of finding reported as such, and
//! the target left as it was (in scratch mode not a byte of it written; with
//! `--in-transaction-only` only its `verified` events).

mod common;

use common::{Dir, TestDb};
use serde_json::Value;

const TABLE: &str = "CREATE TABLE t (id int PRIMARY KEY, c int);\nINSERT INTO t SELECT g, g FROM generate_series(1, 500) g;\nCREATE TABLE s (id int);\n";
const REWRITE: &str = "ALTER TABLE t ALTER COLUMN c TYPE bigint;\n";
const ACCESS_EXCLUSIVE: &str = "-- no rewrite, but every query on s waits for it\nALTER TABLE s ADD COLUMN d int;\nCREATE TABLE u (id int);\n";
const CONCURRENT_INDEX: &str =
    "-- stepmigrate: no-transaction\nCREATE INDEX CONCURRENTLY t_c_idx ON t (c);\n";
const FAILING: &str = "UPDATE t SET c = c + 1;\n\nSELECT * FROM missing_table;\n";

/// The catalog of the user schemas (relations, their storage, columns, indexes and their
/// validity), t's rows and the whole ledger: what "unchanged" means here.
async fn fingerprint(db: &TestDb) -> Vec<String> {
    let user = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'";
    let mut all = Vec::new();
    for sql in [
        format!("SELECT string_agg(format('%s %s %s %s', c.oid, c.relname, c.relkind, c.relfilenode), ',' ORDER BY c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {user}"),
        format!("SELECT string_agg(format('%s %s %s', a.attrelid, a.attname, a.atttypid), ',' ORDER BY a.attrelid, a.attnum) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {user} AND a.attnum > 0"),
        format!("SELECT string_agg(format('%s %s %s', i.indexrelid, i.indrelid, i.indisvalid), ',' ORDER BY i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {user}"),
        "SELECT string_agg(t::text, ',' ORDER BY id) FROM t".to_owned(),
        "SELECT string_agg(m::text, ',' ORDER BY version) FROM schema_migrations m".to_owned(),
        "SELECT string_agg(e::text, ',' ORDER BY id) FROM schema_migration_events e WHERE kind <> 'verified'".to_owned(),
    ] {
        all.extend(db.query(&sql).await);
    }
    all
}

async fn verified_events(db: &TestDb) -> Vec<String> {
    db.query("SELECT version || ' ' || coalesce(error ->> 'sqlstate', 'ok') FROM schema_migration_events WHERE kind = 'verified' ORDER BY id").await
}

fn migration<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["report"]["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {doc:#}"))
}

fn locks(m: &Value) -> Vec<(String, String, bool)> {
    m["statements"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["locks"].as_array().unwrap())
        .map(|l| {
            (
                l["relation"].as_str().unwrap().to_owned(),
                l["mode"].as_str().unwrap().to_owned(),
                l["existing"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// 001 applied; 002 rewrites t, 003 locks it ACCESS EXCLUSIVE without a rewrite, 004 builds
/// an index concurrently, 005 fails on its line 3.
async fn fixture() -> (TestDb, Dir) {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_t.sql", TABLE),
        ("002_rewrite.sql", REWRITE),
        ("003_lock.sql", ACCESS_EXCLUSIVE),
        ("004_index.sql", CONCURRENT_INDEX),
        ("005_fail.sql", FAILING),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    (db, dir)
}

#[tokio::test]
async fn scratch_mode_reports_each_finding_and_never_writes_to_the_target() {
    let (db, dir) = fixture().await;
    let before = fingerprint(&db).await;
    let run = db.cli(dir.path(), &["--json", "verify"]);
    run.assert_code(1);
    let doc = run.json();
    assert_eq!(doc["error"]["name"], "SqlFailed", "{doc:#}");
    assert_eq!(doc["report"]["method"], "scratch");

    let rewrite = migration(&doc, "002_rewrite");
    assert_eq!(rewrite["outcome"], "ok");
    assert_eq!(rewrite["flags"]["rewrites"], true);
    let rewritten: Vec<&str> = rewrite["rewrites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["relation"].as_str().unwrap())
        .collect();
    assert_eq!(rewritten, ["public.t", "public.t_pkey"]);

    let lock = migration(&doc, "003_lock");
    assert_eq!(lock["outcome"], "ok");
    assert_eq!(lock["flags"]["access_exclusive_on_existing"], true);
    assert_eq!(lock["flags"]["rewrites"], false);
    let taken = locks(lock);
    assert!(taken.contains(&("public.s".into(), "AccessExclusiveLock".into(), true)));
    assert!(
        taken.contains(&("public.u".into(), "AccessExclusiveLock".into(), false)),
        "a table the migration creates is not existing: {taken:?}"
    );
    let first = &lock["statements"][0];
    assert_eq!(first["line"], 2);
    assert!(first["locks"][0]["blocks"]
        .as_str()
        .unwrap()
        .contains("reads and writes"));

    let index = migration(&doc, "004_index");
    assert_eq!(index["outcome"], "ok");
    assert_eq!(index["mode"], "no_transaction");
    assert_eq!(index["flags"]["non_transactional"], true);
    assert_eq!(index["new_indexes"][0]["name"], "public.t_c_idx");
    assert_eq!(index["new_indexes"][0]["valid"], true);

    let failing = migration(&doc, "005_fail");
    assert_eq!(failing["outcome"], "failed");
    assert_eq!(failing["error"]["sqlstate"], "42P01");
    assert_eq!(failing["error"]["line"], 3);
    assert_eq!(failing["error"]["statement"], "SELECT * FROM missing_table");

    assert_eq!(fingerprint(&db).await, before, "the target was only read");
    assert!(verified_events(&db).await.is_empty());
    let scratch = doc["report"]["verified_on"].as_str().unwrap();
    let scratch = scratch.rsplit('/').next().unwrap();
    assert!(scratch.starts_with("stepmigrate_verify_"));
    let left = db
        .query(&format!(
            "SELECT count(*)::text FROM pg_database WHERE datname = '{scratch}'"
        ))
        .await;
    assert_eq!(left, ["0"], "the scratch database is dropped");

    // Human output: the marks and the flag. t holds rows on the target: the type change's
    // outcome there is unknown on the empty copy.
    let run = db.cli(dir.path(), &["verify", "--to", "004"]);
    run.assert_code(0);
    assert!(run.stdout.contains("? 002_rewrite"), "{}", run.stdout);
    assert!(run
        .stdout
        .contains("ACCESS EXCLUSIVE on an existing relation"));
    assert!(run.stdout.contains("rewrites table public.t"));
    assert!(run
        .stdout
        .contains("new index public.t_c_idx on public.t (valid)"));
    assert_eq!(fingerprint(&db).await, before);
}

#[tokio::test]
async fn in_transaction_only_rolls_everything_back_and_records_only_verified_events() {
    let (db, dir) = fixture().await;
    // Without the migration outside a transaction, so that the failure is reached.
    dir.remove("004_index.sql");
    dir.write("004_index.sql", "CREATE INDEX s_d_idx ON s (d);\n");
    let before = fingerprint(&db).await;
    let run = db.cli(dir.path(), &["--json", "verify", "--in-transaction-only"]);
    run.assert_code(1);
    let doc = run.json();
    assert_eq!(doc["report"]["method"], "in_transaction");
    // Later migrations see the earlier ones: 004 indexes the column 003 adds.
    assert_eq!(migration(&doc, "002_rewrite")["flags"]["rewrites"], true);
    assert_eq!(
        migration(&doc, "003_lock")["flags"]["access_exclusive_on_existing"],
        true
    );
    let index = migration(&doc, "004_index");
    assert_eq!(index["new_indexes"][0]["valid"], true);
    assert!(locks(index).contains(&("public.s".into(), "ShareLock".into(), true)));
    assert_eq!(migration(&doc, "005_fail")["error"]["line"], 3);

    assert_eq!(fingerprint(&db).await, before, "nothing but events");
    assert_eq!(
        verified_events(&db).await,
        ["002 ok", "003 ok", "004 ok", "005 42P01"]
    );
    db.cli(dir.path(), &["ledger", "check"]).assert_code(0);
    assert_eq!(db.applied().await, ["001"]);
    // The events change no state: `up` still applies what verify ran.
    dir.write("005_fail.sql", "SELECT 1;\n");
    db.cli(dir.path(), &["up"]).assert_code(0);
    assert_eq!(db.applied().await, ["001", "002", "003", "004", "005"]);
}

#[tokio::test]
async fn in_transaction_only_skips_what_runs_outside_a_transaction_and_waits_briefly_for_locks() {
    let (db, dir) = fixture().await;
    let run = db.cli(
        dir.path(),
        &["--json", "verify", "--in-transaction-only", "--to", "004"],
    );
    run.assert_code(0);
    let doc = run.json();
    let index = migration(&doc, "004_index");
    assert_eq!(index["outcome"], "skipped");
    assert!(index["reason"]
        .as_str()
        .unwrap()
        .contains("outside a transaction"));
    assert_eq!(verified_events(&db).await, ["002 ok", "003 ok"]);

    // A session holding t: the rewrite gives up after the short lock_timeout, reported.
    let mut holder = db.conn().await;
    sqlx::raw_sql("BEGIN; LOCK TABLE t IN ACCESS SHARE MODE;")
        .execute(&mut holder)
        .await
        .unwrap();
    let run = db.cli(
        dir.path(),
        &[
            "--json",
            "verify",
            "--in-transaction-only",
            "--to",
            "002",
            "--lock-timeout",
            "200ms",
        ],
    );
    run.assert_code(6);
    assert_eq!(run.json()["error"]["name"], "LockTimeout");
    assert_eq!(
        migration(&run.json(), "002_rewrite")["error"]["sqlstate"],
        "55P03"
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_dev_database_must_be_empty_and_is_emptied_again() {
    let (db, dir) = fixture().await;
    let dev = TestDb::new().await;
    let used = TestDb::new().await;
    used.exec("CREATE TABLE t (id int)").await;
    let run = db.cli(
        dir.path(),
        &["--json", "verify", "--to", "003", "--dev-url", &used.url],
    );
    run.assert_code(2);
    assert!(
        run.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is not empty (relation public."),
        "{}",
        run.stdout
    );
    let run = db.cli(
        dir.path(),
        &["--json", "verify", "--to", "003", "--dev-url", &dev.url],
    );
    run.assert_code(0);
    assert_eq!(
        run.json()["report"]["migrations"].as_array().unwrap().len(),
        2
    );
    assert_eq!(
        dev.query("SELECT count(*)::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'")
            .await,
        ["0"]
    );
    // Empty again: it can be used again.
    db.cli(
        dir.path(),
        &["verify", "--to", "003", "--dev-url", &dev.url],
    )
    .assert_code(0);
}

/// What a hostile review found, each kept fixed.
#[tokio::test]
async fn what_belongs_to_the_server_is_not_run_on_a_scratch_database_of_it() {
    let (db, dir) = fixture().await;
    let role = format!("sm_verify_role_{}", &db.name[8..]);
    dir.write(
        "002_rewrite.sql",
        &format!("CREATE TABLE before_role (id int);\nCREATE ROLE {role};\n"),
    );
    let run = db.cli(dir.path(), &["--json", "verify", "--to", "003"]);
    // Not run, and not passed either: it touches the server (exit 1, like a failure).
    run.assert_code(1);
    let doc = run.json();
    let skipped = migration(&doc, "002_rewrite");
    assert_eq!(skipped["outcome"], "skipped", "{doc:#}");
    assert_eq!(skipped["touches_server"], "roles", "{doc:#}");
    assert!(
        skipped["reason"]
            .as_str()
            .unwrap()
            .contains("line 2 changes roles"),
        "{doc:#}"
    );
    assert_eq!(migration(&doc, "003_lock")["outcome"], "skipped");
    let roles = db
        .query(&format!(
            "SELECT rolname::text FROM pg_roles WHERE rolname = '{role}'"
        ))
        .await;
    assert!(
        roles.is_empty(),
        "the role was created on the server: {roles:?}"
    );

    // In the applied history: refused before anything runs, naming the file and line.
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            &format!(
                "CREATE TABLE t0 (id int);\nCOMMENT ON DATABASE {} IS 'ours';\n",
                db.name
            ),
        ),
        ("002_u.sql", "CREATE TABLE t1 (id int);\n"),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    let run = db.cli(dir.path(), &["--json", "verify"]);
    run.assert_code(2);
    let message = run.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("001_t.sql:2 changes comments on roles, databases"),
        "{message}"
    );
}

#[tokio::test]
async fn in_transaction_only_keeps_session_state_within_each_migration() {
    let (db, dir) = fixture().await;
    let role = format!("sm_low_{}", &db.name[8..]);
    db.exec(&format!("CREATE ROLE {role}")).await;
    dir.write(
        "002_rewrite.sql",
        &format!("CREATE TABLE a1 (id int);\nSET SESSION AUTHORIZATION {role};\nSET search_path = pg_temp;\n"),
    );
    dir.write("003_lock.sql", "CREATE TABLE a2 (id int);\n");
    let run = db.cli(
        dir.path(),
        &["--json", "verify", "--in-transaction-only", "--to", "003"],
    );
    let doc = run.json();
    db.exec(&format!("DROP ROLE {role}")).await;
    run.assert_code(0);
    let a2 = migration(&doc, "003_lock");
    assert_eq!(a2["outcome"], "ok", "{doc:#}");
    // A table of public, made as the runner's user, locked as such.
    assert!(locks(a2).iter().any(|l| l.0 == "public.a2"), "{a2:#}");
}

#[tokio::test]
async fn in_transaction_only_does_not_queue_behind_a_locked_ledger() {
    let (db, dir) = fixture().await;
    let mut holder = db.conn().await;
    sqlx::raw_sql("BEGIN; LOCK TABLE schema_migration_events;")
        .execute(&mut holder)
        .await
        .unwrap();
    let run = db.cli(
        dir.path(),
        &[
            "--json",
            "verify",
            "--in-transaction-only",
            "--to",
            "002",
            "--lock-timeout",
            "300ms",
        ],
    );
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut holder)
        .await
        .unwrap();
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stdout.contains("55P03") || run.stdout.contains("LockTimeout"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn a_dev_database_with_types_is_refused_and_everything_is_emptied() {
    let (db, dir) = fixture().await;
    let dev = TestDb::new().await;
    dev.exec("CREATE TYPE precious AS ENUM ('keep'); CREATE DOMAIN precious_dom AS int;")
        .await;
    let run = db.cli(
        dir.path(),
        &["--json", "verify", "--to", "002", "--dev-url", &dev.url],
    );
    run.assert_code(2);
    assert!(run.stdout.contains("type precious"), "{}", run.stdout);
    assert_eq!(
        dev.query("SELECT count(*)::text FROM pg_type WHERE typname = 'precious'")
            .await,
        ["1"]
    );

    // Objects of the kinds only a catalog of their own lists: refused, and kept.
    for object in [
        "CREATE TEXT SEARCH DICTIONARY public.mydict (TEMPLATE = simple)",
        "CREATE TEXT SEARCH TEMPLATE public.mytmpl (LEXIZE = dsimple_lexize)",
        "CREATE CONVERSION public.myconv FOR 'LATIN1' TO 'UTF8' FROM iso8859_1_to_utf8",
        "CREATE OPERATOR FAMILY public.myfam USING btree",
    ] {
        let dev = TestDb::new().await;
        dev.exec(object).await;
        let run = db.cli(
            dir.path(),
            &["--json", "verify", "--to", "002", "--dev-url", &dev.url],
        );
        assert_eq!(run.code, 2, "{object}: {}", run.stdout);
        assert!(
            run.stdout.contains("must hold no user objects") || run.stdout.contains("my"),
            "{object}: {}",
            run.stdout
        );
    }

    let dev = TestDb::new().await;
    dir.write(
        "002_rewrite.sql",
        "CREATE COLLATION c2 (provider = icu, locale = 'und');\nCREATE TEXT SEARCH CONFIGURATION tsc2 (COPY = english);\nCREATE PUBLICATION pub2;\nCREATE TYPE mood AS ENUM ('ok');\nCREATE TABLE w (id int GENERATED ALWAYS AS IDENTITY, m mood);\nCOMMENT ON SCHEMA public IS 'changed';\nCREATE TRANSFORM FOR point LANGUAGE plpgsql (FROM SQL WITH FUNCTION gist_point_compress(internal));\n",
    );
    for _ in 0..2 {
        db.cli(
            dir.path(),
            &["verify", "--to", "002", "--dev-url", &dev.url],
        )
        .assert_code(0);
    }
    assert_eq!(
        dev.query("SELECT ((SELECT count(*) FROM pg_publication) + (SELECT count(*) FROM pg_collation WHERE collname = 'c2') + (SELECT count(*) FROM pg_type WHERE typname = 'mood') + (SELECT count(*) FROM pg_transform))::text").await,
        ["0"]
    );
}

/// The first migration run on the scratch database makes the ledger there: when it runs
/// outside a transaction (observed from the catalog), the ledger's indexes are not reported
/// as its own.
#[tokio::test]
async fn the_ledgers_indexes_are_not_the_first_migrations() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[(
        "001_x.sql",
        "-- stepmigrate: no-transaction\n-- stepmigrate: irreversible\nCREATE TABLE x (id bigint);\nCREATE INDEX x_id_idx ON x (id);\n",
    )]);
    let doc = db.cli(dir.path(), &["--json", "verify"]).json();
    let m = migration(&doc, "001_x");
    assert_eq!(m["outcome"], "ok", "{doc:#}");
    let names: Vec<&str> = m["new_indexes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["public.x_id_idx"], "{doc:#}");
}

/// The role's own settings in the target (`ALTER ROLE ... IN DATABASE ... SET search_path`)
/// are the copy's too: a migration meets them there as `up` will on the target.
#[tokio::test]
async fn the_roles_settings_in_the_target_are_the_copys() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_base.sql",
            "-- stepmigrate: irreversible\nCREATE SCHEMA app;\nCREATE TABLE app.items (id int PRIMARY KEY);\n",
        ),
        (
            "002_items.sql",
            "-- stepmigrate: irreversible\nCREATE TABLE items (id int PRIMARY KEY, name text);\n",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    db.exec(&format!(
        "ALTER ROLE CURRENT_USER IN DATABASE \"{}\" SET search_path = app, public",
        db.name
    ))
    .await;
    let run = db.cli(dir.path(), &["verify"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stdout.contains("already exists"), "{}", run.stdout);
    // As `up` finds it.
    db.cli(dir.path(), &["up"]).assert_code(1);
}

/// A migration that puts a schema holding a type named `int8` ahead of `pg_catalog`: the
/// verification's own reads name every type and function with its schema, so the lock and
/// catalog readers read what they always read, and verify agrees with `up`.
#[tokio::test]
async fn a_type_that_shadows_a_built_in_one_does_not_break_the_readers() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_base.sql",
            "CREATE TABLE t (a int PRIMARY KEY, b text);\nCREATE DOMAIN public.int8 AS bigint CHECK (value > 0);\nCREATE DOMAIN public.text AS varchar(3);\n",
        ),
        (
            "002_x.sql",
            "SET LOCAL search_path = public, pg_catalog;\nALTER TABLE t ADD COLUMN x int;\n",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    for mode in [&[][..], &["--in-transaction-only"][..]] {
        let mut args = vec!["verify"];
        args.extend(mode);
        let run = db.cli(dir.path(), &args);
        assert_eq!(run.code, 0, "{mode:?}: {}{}", run.stdout, run.stderr);
    }
    db.cli(dir.path(), &["up"]).assert_code(0);
}

/// A batch migration is one statement per batch: `--in-transaction-only` could run only its
/// first batch, so it is never ✓ there (a later batch may fail or never end): skipped,
/// naming why, and so is what comes after it.
#[tokio::test]
async fn in_transaction_only_does_not_pass_a_batch_migration_on_its_first_batch() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            "CREATE TABLE t (id int PRIMARY KEY, w text);\nINSERT INTO t SELECT g, NULL FROM generate_series(1, 1000) g;\n",
        ),
        (
            "002_bf.sql",
            "-- stepmigrate: batch\n-- stepmigrate: batch_size = 100\n\
             UPDATE t SET w = (1000 / (id - 500))::text WHERE id IN (SELECT id FROM t WHERE w IS NULL ORDER BY id LIMIT :batch_size);\n",
        ),
        ("003_after.sql", "CREATE TABLE after_it (id int);\n"),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    let run = db.cli(dir.path(), &["--json", "verify", "--in-transaction-only"]);
    let doc = run.json();
    let m = migration(&doc, "002_bf");
    assert_eq!(m["outcome"], "skipped", "{doc:#}");
    assert!(
        m["reason"].as_str().unwrap().contains("a batch migration"),
        "{doc:#}"
    );
    assert_eq!(
        migration(&doc, "003_after")["outcome"],
        "skipped",
        "{doc:#}"
    );
    let run = db.cli(dir.path(), &["verify", "--in-transaction-only"]);
    assert!(!run.stdout.contains("\u{2713} 002_bf"), "{}", run.stdout);
    // Scratch mode runs every batch: the failing one is found.
    let run = db.cli(dir.path(), &["verify"]);
    assert!(!run.stdout.contains("\u{2713} 002_bf"), "{}", run.stdout);
}

/// Scratch verify refuses what `up` refuses on the target, and nothing else: the copy's ledger
/// has none of the target's history, so its judgement of order and dependencies is not the
/// target's.
#[tokio::test]
async fn scratch_mode_refuses_what_up_refuses_on_the_target_and_nothing_else() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_t.sql", "CREATE TABLE t (id int);\n"),
        ("002_a.sql", "SELECT 2;\n"),
        ("003_b.sql", "SELECT 3;\n"),
        ("004_c.sql", "SELECT 4;\n"),
    ]);
    db.cli(dir.path(), &["up"]).assert_code(0);
    // A re-run (its row deleted on purpose) is always allowed: `up` and verify agree.
    db.exec("DELETE FROM schema_migrations WHERE version = '002'")
        .await;
    let run = db.cli(dir.path(), &["--json", "verify"]);
    run.assert_code(0);
    assert_eq!(migration(&run.json(), "002_a")["outcome"], "ok");
    // 002 now conflicts with 004, applied and with no file here: the copy cannot have 004,
    // the target has it, and `up` refuses.
    dir.write("002_a.sql", "-- stepmigrate: conflicts = 004\nSELECT 2;\n");
    dir.remove("004_c.sql");
    let up = db.cli(dir.path(), &["up", "--dry-run"]);
    up.assert_code(12);
    let run = db.cli(dir.path(), &["--json", "verify"]);
    run.assert_code(12);
    assert_eq!(
        run.json()["error"]["name"],
        "DependencyNotMet",
        "{}",
        run.stdout
    );
    db.cli(dir.path(), &["verify", "--in-transaction-only"])
        .assert_code(12);
}

/// SIGTERM at any moment of a verify, the first milliseconds too, is handled (exit 130 and the
/// scratch database dropped), never the process's default death with its scratch database
/// left on the server.
#[tokio::test]
async fn a_signal_at_once_is_handled_not_fatal() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[("001_a.sql", "SELECT pg_sleep(1);\n")]);
    for delay_ms in [15, 40, 80] {
        let child = db.spawn_cli(dir.path(), &["verify"]);
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(130),
            "after {delay_ms} ms: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `--in-transaction-only` runs the pending migrations in one transaction: what reads the
/// time there reads one value for all, and the run says so; a set of which nothing could be
/// verified says that too.
#[tokio::test]
async fn in_transaction_only_says_what_one_transaction_cannot_tell() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            "CREATE TABLE b (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());\n",
        ),
        ("002_row.sql", "INSERT INTO b (id) VALUES (1);\n"),
        (
            "003_c.sql",
            "ALTER TABLE b ADD CONSTRAINT recent CHECK (at >= now());\n",
        ),
        (
            "004_defer.sql",
            "SET CONSTRAINTS ALL DEFERRED;\nCREATE TABLE x (id int);\n",
        ),
        ("005_nt.sql", "-- stepmigrate: no-transaction\nSELECT 1;\n"),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    let run = db.cli(dir.path(), &["verify", "--in-transaction-only"]);
    assert!(
        run.stderr.contains("003_c read the time"),
        "{}{}",
        run.stdout,
        run.stderr
    );
    assert!(
        run.stderr.contains("004_defer set constraints"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("NOT verified"), "{}", run.stdout);
}

/// The session the target's URL gives (`options=-c search_path=app`) is compared with the
/// copy's: a --dev-url without it resolves the migration's names elsewhere, and says so
/// rather than give a check mark.
#[tokio::test]
async fn a_dev_database_whose_sessions_differ_from_the_targets_says_so() {
    let db = TestDb::new().await;
    let dev = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_base.sql",
            "CREATE SCHEMA app;\nCREATE TABLE app.t (id int, x int);\nCREATE TABLE public.t (id int);\n",
        ),
        ("002_next.sql", "ALTER TABLE t ADD COLUMN x int;\n"),
    ]);
    let join = if db.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{join}options=-c%20search_path%3Dapp", db.url);
    common::run_cli(&url, dir.path(), &["up", "--to", "001"]).assert_code(0);
    let run = common::run_cli(
        &url,
        dir.path(),
        &["--json", "verify", "--dev-url", &dev.url],
    );
    let doc = run.json();
    assert!(
        doc["report"]["copy_differs"]
            .to_string()
            .contains("search_path"),
        "{doc:#}"
    );
}

/// A --dev-url that is the target itself (any spelling of its URL) is refused before anything
/// runs there: verify would apply the migrations on it and empty it afterwards.
#[tokio::test]
async fn a_dev_url_that_is_the_target_is_refused_and_the_target_untouched() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[("001_a.sql", "CREATE TABLE a (id int);\n")]);
    db.exec(&format!(
        "COMMENT ON DATABASE {} IS 'prod db'; ALTER DATABASE {} SET statement_timeout = '7s'",
        db.name, db.name
    ))
    .await;
    let other_spelling = db.url.replace("127.0.0.1", "localhost");
    for dev in [db.url.as_str(), other_spelling.as_str()] {
        let run = db.cli(dir.path(), &["verify", "--dev-url", dev]);
        run.assert_code(2);
        assert!(
            run.stderr.contains("the target database itself"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(
        db.query("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = current_database()")
            .await,
        ["prod db"]
    );
    assert_eq!(
        db.query("SELECT count(*)::text FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = current_database()")
            .await,
        ["1"]
    );
}

/// A migration the deploy's run applies before a pending after-deploy one that comes first
/// in version order: verify (which runs them in version order) says so, in both modes.
#[tokio::test]
async fn verify_names_what_the_deploys_run_applies_in_another_order() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_t.sql", "CREATE TABLE t (id int PRIMARY KEY, a int);\n"),
        (
            "002_ad.sql",
            "-- stepmigrate: after-deploy\n-- stepmigrate: irreversible\nCREATE INDEX ta ON t (a);\n",
        ),
        (
            "003_use.sql",
            "-- stepmigrate: irreversible\nALTER INDEX ta RENAME TO ta2;\n",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    for mode in [
        &["--json", "verify"][..],
        &["--json", "verify", "--in-transaction-only"],
    ] {
        let doc = db.cli(dir.path(), mode).json();
        let warnings = doc["report"]["warnings"].to_string();
        assert!(
            warnings
                .contains("the deploy's run (--skip-after-deploy) applies 003_use before 002_ad"),
            "{mode:?}: {doc:#}"
        );
    }
}

/// `--in-transaction-only` makes, after each migration, the ledger write `up` makes at its
/// end (rolled back): a migration that drops the ledger's tables or machinery fails here as
/// it fails in `up` (it got a ✓).
#[tokio::test]
async fn in_one_transaction_a_migration_that_breaks_the_ledger_fails() {
    for (breaks, says) in [
        (
            "DROP SCHEMA public CASCADE;\nCREATE SCHEMA public;\n",
            "schema_migration_events",
        ),
        (
            "DROP EXTENSION plpgsql CASCADE;\n",
            "the ledger did not record",
        ),
    ] {
        let db = TestDb::new().await;
        let dir = Dir::new(&[
            ("001_base.sql", "CREATE TABLE t (id int);\n"),
            (
                "002_reset.sql",
                &format!("-- stepmigrate: irreversible\n{breaks}CREATE TABLE t2 (id int);\n"),
            ),
            (
                "003_after.sql",
                "-- stepmigrate: irreversible\nCREATE TABLE t3 (id int);\n",
            ),
        ]);
        db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
        let run = db.cli(dir.path(), &["--json", "verify", "--in-transaction-only"]);
        assert_eq!(run.code, 1, "{breaks}: {}", run.stdout);
        let doc = run.json();
        let m = migration(&doc, "002_reset");
        assert_eq!(m["outcome"], "failed", "{breaks}: {doc:#}");
        assert!(
            m["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains(says),
            "{breaks}: {doc:#}"
        );
        assert_eq!(
            migration(&doc, "003_after")["outcome"],
            "skipped",
            "{doc:#}"
        );
        // Nothing of it stayed, and `up` agrees.
        assert!(!db.table_exists("t2").await);
        db.cli(dir.path(), &["up"]).assert_code(1);
    }
}

/// A relation's name holds what the migration put in it: in the human report it is escaped,
/// so it cannot forge a line (`✓ 009_fake`) or move the cursor.
#[tokio::test]
async fn names_from_the_database_cannot_forge_a_line_of_the_report() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[(
        "001_odd.sql",
        "-- stepmigrate: irreversible\nCREATE TABLE \"a\n  \u{2713} 009_fake  1.0 ms\u{1b}[2K\" (id int);\n",
    )]);
    let run = db.cli(dir.path(), &["verify"]);
    run.assert_code(0);
    assert!(
        !run.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("\u{2713} 009_fake")),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains('\u{1b}'), "{}", run.stdout);
}

/// STEPMIGRATE_DEV_URL (exported for preview and scratch verify) does not stop
/// `--in-transaction-only`, which has no use for it (clap took it for a `--dev-url`).
#[tokio::test]
async fn the_dev_url_variable_does_not_block_the_in_transaction_check() {
    let db = TestDb::new().await;
    let dev = TestDb::new().await;
    let dir = Dir::new(&[("001_t.sql", "CREATE TABLE t (id int);\n")]);
    let run = common::run_cli_env(
        &db.url,
        dir.path(),
        &["verify", "--in-transaction-only"],
        &[("STEPMIGRATE_DEV_URL", dev.url.as_str())],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
}
