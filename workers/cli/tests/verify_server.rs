//! `stepmigrate verify` and what belongs to the whole server (databases, roles, memberships,
//! tablespaces, role settings, parameter privileges): a migration that changes any of them is
//! caught by its effect, inside the transaction, before anything commits, whatever words it
//! hides them in; it is reported as touching the server, verify exits non-zero, and the
//! server's catalogs are as they were.

mod common;

use common::{admin_url, Dir, TestDb};
use serde_json::Value;
use sqlx::Connection;

const TABLE: &str = "CREATE TABLE t (id int PRIMARY KEY, c int);\n";

/// Roles made for one test, dropped at its end whatever happens.
struct Roles(Vec<String>);

impl Roles {
    async fn new(db: &TestDb, names: &[&str]) -> Roles {
        let suffix = &db.name[8..];
        let roles: Vec<String> = names.iter().map(|n| format!("{n}_{suffix}")).collect();
        for r in &roles {
            db.exec(&format!("CREATE ROLE {r}")).await;
        }
        Roles(roles)
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        let roles = std::mem::take(&mut self.0);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url()).await {
                    for r in roles {
                        let _ = sqlx::raw_sql(&format!("DROP ROLE IF EXISTS {r}"))
                            .execute(&mut admin)
                            .await;
                    }
                }
            });
        })
        .join();
    }
}

/// What the server holds about the target database and the test's roles: its ACL and
/// settings, the roles' attributes, settings and memberships.
async fn server_catalog(db: &TestDb, roles: &[String]) -> Vec<String> {
    let names = roles
        .iter()
        .map(|r| format!("'{r}'"))
        .collect::<Vec<_>>()
        .join(",");
    let names = if names.is_empty() {
        "''".to_owned()
    } else {
        names
    };
    let mut all = Vec::new();
    for sql in [
        format!("SELECT format('%s %s %s', datname, datacl, datconnlimit) FROM pg_database WHERE datname = '{}'", db.name),
        format!("SELECT coalesce(string_agg(format('%s %s', setrole, setconfig), ';' ORDER BY setrole), 'none') FROM pg_db_role_setting s LEFT JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = '{}' OR s.setrole IN (SELECT oid FROM pg_roles WHERE rolname IN ({names}))", db.name),
        format!("SELECT coalesce(string_agg(format('%s %s %s %s', rolname, rolcanlogin, rolcreatedb, rolconfig), ';' ORDER BY rolname), 'none') FROM pg_roles WHERE rolname IN ({names})"),
        format!("SELECT coalesce(string_agg(format('%s %s', roleid::regrole, member::regrole), ';' ORDER BY roleid, member), 'none') FROM pg_auth_members WHERE roleid IN (SELECT oid FROM pg_roles WHERE rolname IN ({names})) OR member IN (SELECT oid FROM pg_roles WHERE rolname IN ({names}))"),
    ] {
        all.extend(db.query(&sql).await);
    }
    all
}

fn migration<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["report"]["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {doc:#}"))
}

/// The three ways to verify: a scratch database of the target's server, a dev database (on
/// the same server here: its catalogs are shared too), and the target's own transaction.
async fn modes() -> (Vec<Vec<String>>, TestDb) {
    let dev = TestDb::new().await;
    let modes = vec![
        vec![],
        vec!["--dev-url".to_owned(), dev.url.clone()],
        vec!["--in-transaction-only".to_owned()],
    ];
    (modes, dev)
}

/// Verifies `sql` as migration 002 in every mode: each run fails, says the migration touches
/// the server, and leaves the server's catalogs as they were.
async fn refused_in_every_mode(db: &TestDb, dir: &Dir, roles: &[String], what: &str) {
    let before = server_catalog(db, roles).await;
    let (modes, _dev) = modes().await;
    for mode in modes {
        let mut args = vec!["--json", "verify"];
        args.extend(mode.iter().map(String::as_str));
        let run = db.cli(dir.path(), &args);
        let doc = run.json();
        assert_eq!(run.code, 1, "{mode:?}: {doc:#}");
        let m = migration(&doc, "002_server");
        assert_eq!(m["outcome"], "failed", "{mode:?}: {doc:#}");
        assert_eq!(m["error"]["sqlstate"], "SM012", "{mode:?}: {doc:#}");
        let touches = m["touches_server"].as_str().unwrap_or_default();
        assert!(touches.contains(what), "{mode:?}: {what} not in {doc:#}");
        assert!(
            doc["error"]["message"]
                .as_str()
                .unwrap()
                .contains("touches the server"),
            "{mode:?}: {doc:#}"
        );
        assert_eq!(
            server_catalog(db, roles).await,
            before,
            "{mode:?}: the server's catalogs changed"
        );

        let mut args = vec!["verify"];
        args.extend(mode.iter().map(String::as_str));
        let run = db.cli(dir.path(), &args);
        assert_eq!(run.code, 1, "{mode:?}: {}", run.stdout);
        assert!(
            run.stdout.contains("touches the server"),
            "{mode:?}: {}",
            run.stdout
        );
        assert!(
            !run.stdout.contains("\u{2713} 002_server"),
            "{mode:?}: {}",
            run.stdout
        );
        assert_eq!(server_catalog(db, roles).await, before, "{mode:?}");
    }
    assert!(db.applied().await == ["001"]);
}

async fn fixture(server_sql: &str) -> (TestDb, Dir) {
    let db = TestDb::new().await;
    let sql = server_sql.replace("{db}", &db.name);
    let dir = Dir::new(&[("001_t.sql", TABLE), ("002_server.sql", &sql)]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    (db, dir)
}

#[tokio::test]
async fn revoke_connect_on_the_target_database_is_caught_and_not_committed() {
    let (db, dir) =
        fixture("CREATE TABLE u (id int);\nREVOKE CONNECT ON DATABASE {db} FROM PUBLIC;\n").await;
    refused_in_every_mode(&db, &dir, &[], "databases").await;
    // The line that did it.
    let run = db.cli(dir.path(), &["--json", "verify"]);
    assert_eq!(migration(&run.json(), "002_server")["error"]["line"], 2);
}

#[tokio::test]
async fn grant_role_is_caught_and_not_committed() {
    let db = TestDb::new().await;
    let roles = Roles::new(&db, &["sm_granted", "sm_member"]).await;
    let dir = Dir::new(&[
        ("001_t.sql", TABLE),
        (
            "002_server.sql",
            &format!("GRANT {} TO {};\n", roles.0[0], roles.0[1]),
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    refused_in_every_mode(&db, &dir, &roles.0, "role memberships").await;
}

#[tokio::test]
async fn alter_database_set_inside_do_is_caught_and_not_committed() {
    let (db, dir) = fixture(
        "DO $$\nBEGIN\n    EXECUTE format('ALTER DATABASE %I SET statement_timeout = %L', '{db}', '1ms');\nEND\n$$;\n",
    )
    .await;
    refused_in_every_mode(&db, &dir, &[], "settings").await;
    assert_eq!(
        db.query(&format!("SELECT count(*)::text FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = '{}'", db.name)).await,
        ["0"]
    );
}

#[tokio::test]
async fn alter_role_inside_execute_format_is_caught_and_not_committed() {
    let db = TestDb::new().await;
    let roles = Roles::new(&db, &["sm_tuned"]).await;
    let dir = Dir::new(&[
        ("001_t.sql", TABLE),
        (
            "002_server.sql",
            &format!(
                "CREATE FUNCTION tune(r text) RETURNS void LANGUAGE plpgsql AS $$\nBEGIN\n    EXECUTE format('ALTER ROLE %I CREATEDB', r);\nEND\n$$;\nSELECT tune('{}');\n",
                roles.0[0]
            ),
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    refused_in_every_mode(&db, &dir, &roles.0, "roles").await;
}

#[tokio::test]
async fn a_no_transaction_migration_is_caught_before_its_statement_commits() {
    let (db, dir) = fixture(
        "-- stepmigrate: no-transaction\nCREATE INDEX CONCURRENTLY t_c_idx ON t (c);\nDO $$ BEGIN EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', '{db}'); END $$;\n",
    )
    .await;
    let before = server_catalog(&db, &[]).await;
    let dev = TestDb::new().await;
    for mode in [vec![], vec!["--dev-url", dev.url.as_str()]] {
        let mut args = vec!["--json", "verify"];
        args.extend(mode.iter());
        let run = db.cli(dir.path(), &args);
        let doc = run.json();
        assert_eq!(run.code, 1, "{doc:#}");
        let m = migration(&doc, "002_server");
        assert_eq!(m["outcome"], "failed", "{doc:#}");
        assert!(
            m["touches_server"]
                .as_str()
                .unwrap_or_default()
                .contains("databases"),
            "{doc:#}"
        );
        assert_eq!(server_catalog(&db, &[]).await, before);
    }
}

#[tokio::test]
async fn an_applied_migration_that_touches_the_server_is_not_replayed_on_a_scratch_database() {
    let db = TestDb::new().await;
    let roles = Roles::new(&db, &["sm_hist"]).await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            &format!(
                "CREATE TABLE t (id int);\nDO $$ BEGIN EXECUTE 'ALTER ROLE {} SET work_mem = ''2MB'''; END $$;\n",
                roles.0[0]
            ),
        ),
        ("002_u.sql", "CREATE TABLE u (id int);\n"),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    // Changed behind the migration's back: a replay would put it back.
    db.exec(&format!("ALTER ROLE {} SET work_mem = '3MB'", roles.0[0]))
        .await;
    let before = server_catalog(&db, &roles.0).await;
    let run = db.cli(dir.path(), &["--json", "verify"]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.contains("touches the server"), "{}", run.stdout);
    assert_eq!(server_catalog(&db, &roles.0).await, before);
}

/// Verifies `sql` as migration 002 (after 001 applied) with `mode`: refused before it runs,
/// named as acting outside its transaction by `what`, exit 1, and the run's last line true.
fn refused_as_outside(db: &TestDb, dir: &Dir, mode: &[&str], what: &str) {
    let mut args = vec!["--json", "verify"];
    args.extend(mode);
    let run = db.cli(dir.path(), &args);
    let doc = run.json();
    assert_eq!(run.code, 1, "{mode:?}: {doc:#}");
    let m = migration(&doc, "002_outside");
    assert_eq!(m["outcome"], "skipped", "{mode:?}: {doc:#}");
    assert_eq!(m["acts_outside_transaction"], what, "{mode:?}: {doc:#}");
    assert_eq!(
        doc["error"]["details"]["migration"]["error"]["sqlstate"], "SM014",
        "{mode:?}: {doc:#}"
    );
    assert!(
        m["reason"]
            .as_str()
            .unwrap()
            .contains("acts outside its transaction"),
        "{doc:#}"
    );
    let mut args = vec!["verify"];
    args.extend(mode);
    let run = db.cli(dir.path(), &args);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout
            .contains(&format!("acts outside its transaction ({what})")),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("\u{2713} 002_outside"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("nothing was written"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn setval_on_the_target_is_not_run_by_in_transaction_verify() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            "CREATE TABLE t1 (id serial PRIMARY KEY);\nINSERT INTO t1 SELECT FROM generate_series(1, 5);\n",
        ),
        ("002_outside.sql", "SELECT setval('t1_id_seq', 1);\n"),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    refused_as_outside(&db, &dir, &["--in-transaction-only"], "setval");
    // The production sequence did not move back.
    assert_eq!(
        db.query("SELECT last_value::text FROM t1_id_seq").await,
        ["5"]
    );
    // On a scratch database the sequence is the copy's: verified there.
    let run = db.cli(dir.path(), &["--json", "verify"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
}

/// `setval` and `pg_terminate_backend` under another name (a function `LANGUAGE internal`
/// made by the migration): on the target, where no guard judges what it calls, such a
/// function is not run at all, and the sequence does not move.
#[tokio::test]
async fn an_internal_function_alias_is_not_run_by_in_transaction_verify() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            "CREATE TABLE t1 (id serial PRIMARY KEY);
INSERT INTO t1 SELECT FROM generate_series(1, 5);
",
        ),
        (
            "002_outside.sql",
            "CREATE FUNCTION app_reset(regclass, bigint) RETURNS bigint LANGUAGE internal STRICT AS 'setval_oid';
SELECT app_reset('t1_id_seq', 1000000);
",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    refused_as_outside(
        &db,
        &dir,
        &["--in-transaction-only"],
        "code in the untrusted language internal, which can call anything under any name",
    );
    assert_eq!(
        db.query("SELECT last_value::text FROM t1_id_seq").await,
        ["5"]
    );
}

#[tokio::test]
async fn copy_to_a_server_file_is_not_run_on_a_scratch_database() {
    let db = TestDb::new().await;
    let file = format!("/tmp/{}_copied", db.name);
    let dir = Dir::new(&[
        ("001_t.sql", TABLE),
        (
            "002_outside.sql",
            &format!("CREATE TABLE u (id int);\nCOPY (SELECT 1) TO '{file}';\n"),
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    refused_as_outside(&db, &dir, &[], "COPY to or from a server file or program");
    // The server wrote no file.
    assert_eq!(
        db.query(&format!(
            "SELECT (pg_stat_file('{file}', true) IS NULL)::text"
        ))
        .await,
        ["true"]
    );
}

#[tokio::test]
async fn a_replication_slot_inside_an_execute_string_is_not_made_by_scratch_verify() {
    let db = TestDb::new().await;
    let slot = format!("{}_slot", db.name);
    let dir = Dir::new(&[
        ("001_t.sql", TABLE),
        (
            "002_outside.sql",
            &format!("DO $$ BEGIN EXECUTE 'SELECT pg_create_physical_replication_slot(''{slot}'')'; END $$;\n"),
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    let made =
        format!("SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = '{slot}'");
    refused_as_outside(&db, &dir, &[], "pg_create_physical_replication_slot");
    let count = db.query(&made).await;
    if count != ["0"] {
        db.exec(&format!("SELECT pg_drop_replication_slot('{slot}')"))
            .await;
    }
    assert_eq!(count, ["0"], "the slot was made for real");
}

#[tokio::test]
async fn an_applied_migration_that_acts_outside_its_transaction_is_not_replayed() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        (
            "001_t.sql",
            "CREATE TABLE t (id int);\nDO $$ BEGIN PERFORM pg_cancel_backend(0); END $$;\n",
        ),
        ("002_u.sql", "CREATE TABLE u (id int);\n"),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    let run = db.cli(dir.path(), &["verify"]);
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("acts outside its transaction"),
        "{}",
        run.stderr
    );
}

/// A deferred constraint trigger fires at COMMIT, after any check before it: the server guard
/// fires deferred triggers first. Here the trigger acts only on its second run (a sequence
/// is never rolled back), so verify's rolled-back run sees nothing and the scratch database's
/// real apply is where it would create the role.
#[tokio::test]
async fn a_deferred_trigger_that_touches_the_server_at_commit_is_caught_before_it() {
    let db = TestDb::new().await;
    let roles = Roles::new(&db, &["sm_defer"]).await;
    let role = roles.0[0].clone();
    db.exec(&format!("DROP ROLE {role}")).await;
    let dir = Dir::new(&[
        ("001_t.sql", "CREATE SEQUENCE gate;\nCREATE TABLE t (id int);\n"),
        (
            "002_server.sql",
            &format!(
                "CREATE FUNCTION sneaky() RETURNS trigger LANGUAGE plpgsql AS $$\n\
                 BEGIN IF nextval('gate') > 1 THEN EXECUTE 'CREATE ' || 'ROLE {role}'; END IF; RETURN NULL; END $$;\n\
                 CREATE CONSTRAINT TRIGGER sneaky AFTER INSERT ON t DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION sneaky();\n\
                 INSERT INTO t VALUES (1);\n"
            ),
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    let run = db.cli(dir.path(), &["--json", "verify"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let doc = run.json();
    assert_eq!(
        migration(&doc, "002_server")["error"]["sqlstate"],
        "SM012",
        "{doc:#}"
    );
    assert_eq!(
        db.query(&format!(
            "SELECT count(*)::text FROM pg_roles WHERE rolname = '{role}'"
        ))
        .await,
        ["0"],
        "the role was not created"
    );
}

/// Replaying an applied migration whose deferred trigger touches the server is caught at its
/// own replay (not committed), and the next migration is not blamed for it.
#[tokio::test]
async fn a_replayed_deferred_trigger_that_touches_the_server_is_caught_and_named() {
    let db = TestDb::new().await;
    let roles = Roles::new(&db, &["sm_replay"]).await;
    let role = roles.0[0].clone();
    let dir = Dir::new(&[(
        "001_t.sql",
        &format!(
            "CREATE TABLE t (id int);\n\
             CREATE FUNCTION sneaky() RETURNS trigger LANGUAGE plpgsql AS $$\n\
             BEGIN EXECUTE 'CREATE ' || 'ROLE {role}'; RETURN NULL; END $$;\n\
             CREATE CONSTRAINT TRIGGER sneaky AFTER INSERT ON t DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION sneaky();\n\
             INSERT INTO t VALUES (1);\n"
        ),
    )]);
    db.exec(&format!("DROP ROLE {role}")).await;
    db.cli(dir.path(), &["up"]).assert_code(0);
    db.exec(&format!("DROP ROLE {role}")).await;
    dir.write("002_u.sql", "CREATE TABLE u (id int);\n");
    let run = db.cli(dir.path(), &["verify"]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stderr.contains("001_t") && run.stderr.contains("touches the server"),
        "{}{}",
        run.stdout,
        run.stderr
    );
    assert!(!run.stdout.contains("002_u"), "{}", run.stdout);
    assert_eq!(
        db.query(&format!(
            "SELECT count(*)::text FROM pg_roles WHERE rolname = '{role}'"
        ))
        .await,
        ["0"],
        "the replay did not create the role"
    );
}

/// A write or TRUNCATE through a foreign table commits on its server with the local COMMIT:
/// on a scratch database that would empty the target's own table (postgres_fdw pointed at
/// it). Refused before the COMMIT (SM014), and the target's table is as it was.
#[tokio::test]
async fn a_truncate_through_a_foreign_table_into_the_target_is_not_committed_by_scratch_verify() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_t.sql", "CREATE TABLE victim (id int);\n"),
        (
            "002_fdw.sql",
            &format!(
                "CREATE EXTENSION IF NOT EXISTS postgres_fdw;\n\
                 CREATE SERVER tgt FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '127.0.0.1', dbname '{}');\n\
                 CREATE USER MAPPING FOR CURRENT_USER SERVER tgt OPTIONS (user 'postgres');\n\
                 CREATE FOREIGN TABLE remote_victim (id int) SERVER tgt OPTIONS (table_name 'victim');\n\
                 TRUNCATE remote_victim;\n",
                db.name
            ),
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    db.exec("INSERT INTO victim VALUES (1), (2)").await;
    let run = db.cli(dir.path(), &["--json", "verify"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let doc = run.json();
    let m = migration(&doc, "002_fdw");
    assert_eq!(m["error"]["sqlstate"], "SM014", "{doc:#}");
    assert!(
        m["acts_outside_transaction"]
            .as_str()
            .unwrap_or_default()
            .contains("the foreign table remote_victim"),
        "{doc:#}"
    );
    assert_eq!(db.query("SELECT count(*)::text FROM victim").await, ["2"]);
}

/// `ANALYZE` after a `DELETE` in `--in-transaction-only` writes the target's planner
/// statistics in place from rows the rollback restores: verify says so and analyzes the
/// table again after the rollback.
#[tokio::test]
async fn planner_statistics_written_in_place_by_in_transaction_verify_are_restored_and_reported() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_t.sql", "CREATE TABLE t (id int);\n"),
        ("002_an.sql", "DELETE FROM t WHERE id > 0;\nANALYZE t;\n"),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    db.exec("INSERT INTO t SELECT generate_series(1, 10000); ANALYZE t")
        .await;
    let reltuples = "SELECT reltuples::int8::text FROM pg_class WHERE oid = 't'::regclass";
    assert_eq!(db.query(reltuples).await, ["10000"]);
    let run = db.cli(dir.path(), &["--json", "verify", "--in-transaction-only"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let doc = run.json();
    let stats = &doc["report"]["statistics"];
    assert_eq!(stats["analyzed"], true, "{doc:#}");
    assert!(
        stats["tables"][0]
            .as_str()
            .unwrap_or_default()
            .starts_with("public.t (reltuples written: 0"),
        "{doc:#}"
    );
    assert_eq!(db.query(reltuples).await, ["10000"], "restored");
    let run = db.cli(dir.path(), &["verify", "--in-transaction-only"]);
    assert!(
        run.stdout
            .contains("planner statistics were written in place")
            && run
                .stdout
                .contains("verify ran ANALYZE on them after the rollback")
            && run.stdout.contains("and ANALYZE of the tables above"),
        "{}",
        run.stdout
    );
    // A migration that changes no rows leaves the statistics alone and says nothing of them.
    dir.write("002_an.sql", "CREATE INDEX t_id ON t (id);\n");
    let run = db.cli(dir.path(), &["--json", "verify", "--in-transaction-only"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(
        run.json()["report"].get("statistics").is_none(),
        "{}",
        run.stdout
    );
}

/// A file_fdw foreign table with a `program` runs it on the server when read: refused by its
/// words in every mode, never run.
#[tokio::test]
async fn a_foreign_table_that_runs_a_program_is_not_run_by_verify() {
    let db = TestDb::new().await;
    let file = format!("/tmp/{}_pwned", db.name);
    let dir = Dir::new(&[
        ("001_t.sql", "CREATE TABLE t (id int);\n"),
        (
            "002_outside.sql",
            &format!(
                "CREATE EXTENSION IF NOT EXISTS file_fdw;\n\
                 CREATE SERVER ffs FOREIGN DATA WRAPPER file_fdw;\n\
                 CREATE FOREIGN TABLE ff (x text) SERVER ffs OPTIONS (program 'touch {file}; echo hi');\n\
                 CREATE TABLE copied AS SELECT * FROM ff;\n"
            ),
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    for mode in [&[][..], &["--in-transaction-only"][..]] {
        refused_as_outside(
            &db,
            &dir,
            mode,
            "a foreign table's server program (file_fdw's program option)",
        );
    }
    assert!(!std::path::Path::new(&file).exists(), "the program ran");
}

/// `--round-trip` runs the down file for real on the scratch database: what would act
/// outside its transaction there is not run either.
#[tokio::test]
async fn a_down_file_that_acts_outside_its_transaction_is_not_run_by_the_round_trip() {
    let db = TestDb::new().await;
    let file = format!("/tmp/{}_down", db.name);
    let dir = Dir::new(&[
        ("001_t.sql", "CREATE TABLE t (id int);\n"),
        ("002_n.sql", "CREATE TABLE n (id int);\n"),
        (
            "002_n.down.sql",
            &format!("DROP TABLE n;\nCOPY (SELECT 1) TO '{file}';\n"),
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    let run = db.cli(dir.path(), &["--json", "verify", "--round-trip"]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    let doc = run.json();
    let rt = &migration(&doc, "002_n")["round_trip"];
    assert!(
        rt.to_string().contains("its down file, line 2")
            && rt.to_string().contains("acts outside its transaction"),
        "{doc:#}"
    );
    assert!(!std::path::Path::new(&file).exists(), "the down ran");
}

/// pg_surgery writes heap pages in place, and a LOCK of a shared catalog holds every login of
/// the server: neither is run by verify, in either mode.
#[tokio::test]
async fn heap_surgery_and_a_lock_of_a_shared_catalog_are_not_run_by_verify() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[
        ("001_t.sql", "CREATE TABLE t (id int PRIMARY KEY);\n"),
        (
            "002_outside.sql",
            "SELECT heap_force_kill('t'::regclass, ARRAY['(0,1)']::tid[]);\n",
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    db.exec("INSERT INTO t SELECT generate_series(1, 10)").await;
    refused_as_outside(&db, &dir, &["--in-transaction-only"], "heap_force_kill");
    assert_eq!(db.query("SELECT count(*)::text FROM t").await, ["10"]);
    dir.write(
        "002_outside.sql",
        "LOCK TABLE pg_catalog.pg_authid IN ACCESS EXCLUSIVE MODE;\n",
    );
    for mode in [&[][..], &["--in-transaction-only"][..]] {
        refused_as_outside(
            &db,
            &dir,
            mode,
            "LOCK of a system catalog (every session of the database, or of the server for a shared catalog, waits for it: logins too)",
        );
    }
}

/// A `VACUUM FULL` of a shared catalog rebuilds it for the whole server (every login waits
/// for it): in a migration outside a transaction only its words can tell, and they do.
#[tokio::test]
async fn vacuum_full_of_a_shared_catalog_is_not_run_by_verify() {
    let (db, dir) = fixture(
        "-- stepmigrate: no-transaction\n-- stepmigrate: irreversible\nVACUUM FULL pg_catalog.pg_shdescription;\n",
    )
    .await;
    let node = "SELECT pg_relation_filenode('pg_catalog.pg_shdescription')::text";
    let before = db.query(node).await;
    let dev = TestDb::new().await;
    for mode in [vec![], vec!["--dev-url", dev.url.as_str()]] {
        let mut args = vec!["--json", "verify"];
        args.extend(mode.iter());
        let run = db.cli(dir.path(), &args);
        let doc = run.json();
        assert_eq!(run.code, 1, "{doc:#}");
        let m = migration(&doc, "002_server");
        assert!(
            m["touches_server"]
                .as_str()
                .unwrap_or_default()
                .contains("the storage of catalogs the whole server shares"),
            "{doc:#}"
        );
        assert_eq!(db.query(node).await, before);
    }
}

/// dblink runs SQL in a session of its own, which commits on its own: a migration that
/// installs it is not run on the scratch database, nor anything once it is installed there
/// (a name built at run time reaches it too), and the target gets nothing.
#[tokio::test]
async fn nothing_runs_on_a_scratch_database_where_dblink_is_installed() {
    let db = TestDb::new().await;
    db.exec("CREATE TABLE remote_log (msg text)").await;
    let call = format!(
        "DO $f$ BEGIN EXECUTE 'SELECT dbl' || 'ink_exec($1, $2)' USING 'host=127.0.0.1 user=postgres dbname={}', 'INSERT INTO remote_log VALUES (''written'')'; END $f$;\n",
        db.name
    );
    let dir = Dir::new(&[
        ("001_t.sql", TABLE),
        (
            "002_outside.sql",
            &format!("CREATE EXTENSION IF NOT EXISTS dblink;\n{call}"),
        ),
    ]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    refused_as_outside(
        &db,
        &dir,
        &[],
        "dblink: an extension whose functions run SQL in another session, which commits whatever this transaction does",
    );
    // Installed and called under names built at run time, in one DO block: the guard on
    // the verification database refuses the CREATE EXTENSION before the call.
    dir.write(
        "002_outside.sql",
        &format!("DO $g$ BEGIN EXECUTE 'CREATE EXTENSION ' || 'dbl' || 'ink'; END $g$;\n{call}"),
    );
    let dev = TestDb::new().await;
    for mode in [vec![], vec!["--dev-url", dev.url.as_str()]] {
        let mut args = vec!["--json", "verify"];
        args.extend(mode.iter());
        let run = db.cli(dir.path(), &args);
        assert_eq!(run.code, 1, "{}", run.stdout);
        let doc = run.json();
        let m = migration(&doc, "002_outside");
        assert_eq!(m["outcome"], "failed", "{doc:#}");
        assert!(
            m["acts_outside_transaction"]
                .as_str()
                .unwrap_or_default()
                .starts_with("dblink"),
            "{doc:#}"
        );
    }
    // The guard is the verification's own: the dev database is empty again.
    assert_eq!(
        dev.query("SELECT count(*)::text FROM pg_event_trigger")
            .await,
        ["0"]
    );
    // Installed by an applied migration under a name its words do not show: the replay
    // stops there, and nothing of the pending migration runs.
    let dir = Dir::new(&[
        ("001_t.sql", TABLE),
        (
            "002_ext.sql",
            "DO $f$ BEGIN EXECUTE 'CREATE EXTENSION IF NOT EXISTS dbl' || 'ink'; END $f$;\n",
        ),
        ("003_outside.sql", &call),
    ]);
    db.cli(dir.path(), &["up", "--to", "002"]).assert_code(0);
    let run = db.cli(dir.path(), &["verify"]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(
        format!("{}{}", run.stdout, run.stderr).contains("dblink"),
        "{}{}",
        run.stdout,
        run.stderr
    );
    assert_eq!(
        db.query("SELECT count(*)::text FROM remote_log").await,
        ["0"]
    );
}

/// A function in an untrusted language made by a migration (dblink's library under another
/// name, `lo_export` as `internal`) is refused on the verification database by its guard,
/// and a migration that names the guard (to disable it) is not run.
#[tokio::test]
async fn untrusted_functions_and_the_guard_itself_are_refused_on_scratch() {
    let db = TestDb::new().await;
    db.exec("CREATE TABLE remote_log (msg text)").await;
    let c_function = format!(
        "CREATE FUNCTION f(text, text) RETURNS text LANGUAGE c STRICT AS '$libdir/dblink', 'dblink_exec';\n\
         SELECT f('host=127.0.0.1 user=postgres dbname={}', 'INSERT INTO remote_log VALUES (''written'')');\n",
        db.name
    );
    let dir = Dir::new(&[("001_t.sql", TABLE), ("002_outside.sql", &c_function)]);
    db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
    let doc = db.cli(dir.path(), &["--json", "verify"]).json();
    let m = migration(&doc, "002_outside");
    assert_eq!(m["outcome"], "failed", "{doc:#}");
    assert!(
        m["acts_outside_transaction"]
            .as_str()
            .unwrap_or_default()
            .contains("untrusted language"),
        "{doc:#}"
    );
    dir.write(
        "002_outside.sql",
        &format!("ALTER EVENT TRIGGER stepmigrate_verify_guard DISABLE;\n{c_function}"),
    );
    refused_as_outside(
        &db,
        &dir,
        &[],
        "verify's own guard (the stepmigrate_verify_guard event trigger), which it would turn off",
    );
    assert_eq!(
        db.query("SELECT count(*)::text FROM remote_log").await,
        ["0"]
    );
}

/// No event trigger fires for a change to an event trigger: a migration that turns verify's
/// guard off under a name read at run time (and then installs dblink and writes through it)
/// gets past the guard, so the server guard judges by effect before COMMIT. Verify must fail
/// and say that what ran outside the transaction is not undone, never pass: disabled,
/// disabled and enabled again, disabled inside a subtransaction that is undone, or its
/// function replaced.
#[tokio::test]
async fn a_guard_turned_off_by_a_name_read_at_run_time_fails_verify() {
    let db = TestDb::new().await;
    db.exec("CREATE TABLE remote_log (msg text)").await;
    let write = format!(
        "EXECUTE 'CREATE EXTENSION dbl' || 'ink'; EXECUTE 'SELECT dbl' || 'ink_exec($1, $2)' USING 'host=127.0.0.1 user=postgres dbname={}', 'INSERT INTO remote_log VALUES (''written'')';",
        db.name
    );
    let off = "FOR r IN SELECT evtname FROM pg_event_trigger LOOP EXECUTE format('ALTER EVENT TRIGGER %I DISABLE', r.evtname); END LOOP;";
    let on = "FOR r IN SELECT evtname FROM pg_event_trigger LOOP EXECUTE format('ALTER EVENT TRIGGER %I ENABLE ALWAYS', r.evtname); END LOOP;";
    let replaced = "FOR r IN SELECT evtfoid FROM pg_event_trigger LOOP EXECUTE format('CREATE OR REPLACE FUNCTION %s() RETURNS event_trigger LANGUAGE plpgsql AS $b$ BEGIN END $b$', r.evtfoid::regproc); END LOOP;";
    let bodies = [
        format!("{off} {write}"),
        format!("{off} {write} {on}"),
        format!("BEGIN {off} {write} RAISE EXCEPTION 'undo'; EXCEPTION WHEN raise_exception THEN NULL; END;"),
        format!("{replaced} {write}"),
    ];
    for body in bodies {
        let dir = Dir::new(&[
            ("001_t.sql", TABLE),
            (
                "002_escape.sql",
                &format!("DO $d$ DECLARE r record; BEGIN {body} END $d$;\n"),
            ),
        ]);
        db.cli(dir.path(), &["up", "--to", "001"]).assert_code(0);
        let run = db.cli(dir.path(), &["--json", "verify"]);
        assert_eq!(run.code, 1, "{body}\n{}{}", run.stdout, run.stderr);
        let doc = run.json();
        let m = migration(&doc, "002_escape");
        assert_eq!(m["outcome"], "failed", "{body}\n{doc:#}");
        let said = m.to_string();
        assert!(
            said.contains("event trigger") || said.contains("dblink"),
            "{body}\n{doc:#}"
        );
        // Nothing of it on the target's own ledger.
        assert_eq!(
            db.query("SELECT count(*)::text FROM schema_migrations WHERE version = '002'")
                .await,
            ["0"],
            "{body}"
        );
        db.exec("DELETE FROM remote_log").await;
    }
}

/// Hardening a built-in function (REVOKE EXECUTE ... FROM PUBLIC) makes no function: verify
/// passes it, as `up` does (it was refused as a function made in an untrusted language).
#[tokio::test]
async fn revoking_a_builtin_function_is_not_making_one() {
    let db = TestDb::new().await;
    let dir = Dir::new(&[(
        "001_harden.sql",
        "-- stepmigrate: irreversible\nREVOKE EXECUTE ON FUNCTION pg_catalog.pg_sleep(double precision) FROM PUBLIC;\n",
    )]);
    let run = db.cli(dir.path(), &["--json", "verify"]);
    run.assert_code(0);
    assert_eq!(
        run.json()["report"]["migrations"][0]["outcome"],
        "ok",
        "{}",
        run.stdout
    );
}
