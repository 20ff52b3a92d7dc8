//! `stepmigrate preview`, end to end: a git repository with a base commit and a branch that
//! adds two migrations (one dangerous) and edits an old one; the comment is compared with a
//! golden file (no timings), the JSON report is read, and the scratch database is gone.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{run_cli, run_cli_env, TestDb};

/// A repository with `migrations/` committed on `main` (fixed dates: the base commit's hash is
/// part of the golden comment), then changed in the working tree.
struct Repo {
    tmp: tempfile::TempDir,
}

impl Repo {
    fn new(files: &[(&str, &str)]) -> Repo {
        let repo = Repo {
            tmp: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir(repo.dir()).unwrap();
        for (name, sql) in files {
            repo.write(name, sql);
        }
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["add", "-A"]);
        repo.git(&["commit", "-q", "-m", "base"]);
        repo
    }

    /// A base with no `migrations/` at all (the pull request that adds the first ones).
    fn without_migrations() -> Repo {
        let repo = Repo {
            tmp: tempfile::tempdir().unwrap(),
        };
        std::fs::write(repo.tmp.path().join("README.md"), "no migrations yet\n").unwrap();
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["add", "-A"]);
        repo.git(&["commit", "-q", "-m", "base"]);
        std::fs::create_dir(repo.dir()).unwrap();
        repo
    }

    fn dir(&self) -> PathBuf {
        self.tmp.path().join("migrations")
    }

    fn write(&self, name: &str, sql: &str) {
        std::fs::write(self.dir().join(name), sql).unwrap();
    }

    fn git(&self, args: &[&str]) {
        let status = Command::new("git")
            .current_dir(self.tmp.path())
            .args(args)
            .env("GIT_AUTHOR_NAME", "test")
            .env("GIT_AUTHOR_EMAIL", "test@example.com")
            .env("GIT_COMMITTER_NAME", "test")
            .env("GIT_COMMITTER_EMAIL", "test@example.com")
            .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }
}

fn pull_request() -> Repo {
    let repo = Repo::new(&[
        (
            "001_create_users.sql",
            "CREATE TABLE users (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email text NOT NULL);\n",
        ),
        (
            "002_create_orders.sql",
            "CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, user_id int NOT NULL REFERENCES users (id));\n",
        ),
        (
            "003_index_orders_user.sql",
            "CREATE INDEX orders_user_id_idx ON orders (user_id);\n",
        ),
    ]);
    // The branch: a dangerous migration (a rewrite under ACCESS EXCLUSIVE), an index built
    // concurrently outside a transaction, and an edit of a migration the base has.
    repo.write(
        "004_widen_user_ids.sql",
        "ALTER TABLE users ALTER COLUMN id TYPE bigint;\nALTER TABLE orders ALTER COLUMN user_id TYPE bigint;\n",
    );
    repo.write(
        "005_index_users_email.sql",
        "-- stepmigrate: no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS users_email_idx ON users (email);\n",
    );
    // Their down files: the preview checks each one's up/down round trip.
    repo.write(
        "004_widen_user_ids.down.sql",
        "ALTER TABLE orders ALTER COLUMN user_id TYPE int;\nALTER TABLE users ALTER COLUMN id TYPE int;\n",
    );
    repo.write(
        "005_index_users_email.down.sql",
        "-- stepmigrate: no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS users_email_idx;\n",
    );
    repo.write(
        "002_create_orders.sql",
        "CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, user_id int NOT NULL REFERENCES users (id), note text);\n",
    );
    repo
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(
        actual,
        expected,
        "{} differs (UPDATE_GOLDEN=1 rewrites it)",
        path.display()
    );
}

#[tokio::test]
async fn the_comment_of_a_pull_request() {
    let server = TestDb::new().await;
    let repo = pull_request();
    let run = run_cli(
        &server.url,
        &repo.dir(),
        &["preview", "--base", "main", "--no-timings"],
    );
    // The edit of 002 is an error: exit 1, comment printed all the same.
    run.assert_code(1);
    golden("preview_command.md", &run.stdout);
    // Its database was only a server to make the scratch database on.
    assert!(server
        .query("SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace")
        .await
        .is_empty());
}

#[tokio::test]
async fn the_json_report_and_the_dev_database_left_empty() {
    let dev = TestDb::new().await;
    let repo = pull_request();
    let run = run_cli_env(
        "",
        &repo.dir(),
        &["preview", "--base", "main", "--format", "json"],
        &[("STEPMIGRATE_DEV_URL", &dev.url)],
    );
    let doc = run.assert_code(1).json();
    assert_eq!(doc["verdict"], "errors");
    let summary = &doc["summary"];
    assert_eq!(
        summary["access_exclusive_on_existing"][0], "public.orders",
        "{summary}"
    );
    let rewrites = summary["rewrites"].as_array().unwrap();
    assert!(rewrites.iter().any(|r| r == "public.users"), "{summary}");
    assert_eq!(summary["non_transactional"][0], "005_index_users_email");
    let files = doc["report"]["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[1]["verification"]["new_indexes"][0]["valid"], true);
    for f in files {
        assert_eq!(f["verification"]["round_trip"]["status"], "ok", "{f:#}");
    }
    assert_eq!(
        doc["report"]["changes"]["edited"][0]["name"],
        "002_create_orders"
    );
    // The dev database is empty again.
    assert!(dev
        .query("SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace")
        .await
        .is_empty());
    // Once the edit is undone: warnings only, exit 0.
    repo.git(&["checkout", "-q", "--", "migrations/002_create_orders.sql"]);
    let run = run_cli_env(
        "",
        &repo.dir(),
        &["preview", "--base", "main", "--format", "json"],
        &[("STEPMIGRATE_DEV_URL", &dev.url)],
    );
    assert_eq!(run.assert_code(0).json()["verdict"], "review");
}

#[tokio::test]
async fn a_failing_migration_and_bad_input() {
    let server = TestDb::new().await;
    let repo = pull_request();
    repo.git(&["checkout", "-q", "--", "migrations/002_create_orders.sql"]);
    repo.write("006_broken.sql", "ALTER TABLE nowhere ADD COLUMN x int;\n");
    let doc = run_cli(
        &server.url,
        &repo.dir(),
        &["preview", "--base", "main", "--json"],
    )
    .assert_code(1)
    .json();
    let broken = &doc["report"]["files"][2]["verification"]["outcome"];
    assert_eq!(broken["status"], "failed", "{doc}");
    assert!(
        broken["error"].as_str().unwrap().contains("nowhere"),
        "{broken}"
    );

    let run = run_cli(
        &server.url,
        &repo.dir(),
        &["preview", "--base", "no-such-branch"],
    );
    run.assert_code(2);
    assert!(run.stderr.contains("no-such-branch"), "{}", run.stderr);
    // Asked for JSON by its own flag, its error is one JSON document too.
    let run = run_cli(
        &server.url,
        &repo.dir(),
        &["preview", "--base", "no-such-branch", "--format", "json"],
    );
    run.assert_code(2);
    let doc = run.json();
    assert_eq!(doc["ok"], false, "{doc}");
    assert!(doc["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no-such-branch"));
    let run = run_cli("", &repo.dir(), &["preview", "--base", "main"]);
    run.assert_code(2);
    assert!(run.stderr.contains("DATABASE_URL"), "{}", run.stderr);
}

/// Two versions swap their files: each name keeps its content, but where the base was applied
/// versions 003 and 004 now have other content (the runner stops on their checksums).
#[tokio::test]
async fn swapped_versions_are_drift_not_renames() {
    let server = TestDb::new().await;
    let repo = Repo::new(&[
        ("001_a.sql", "CREATE TABLE a (id int);\n"),
        ("002_b.sql", "CREATE TABLE b (id int);\n"),
        ("003_c.sql", "CREATE TABLE c (id int);\n"),
        ("004_e.sql", "CREATE TABLE e (id int);\n"),
    ]);
    repo.git(&["mv", "migrations/004_e.sql", "migrations/tmp"]);
    repo.git(&["mv", "migrations/003_c.sql", "migrations/004_c.sql"]);
    repo.git(&["mv", "migrations/tmp", "migrations/003_e.sql"]);
    let run = run_cli(
        &server.url,
        &repo.dir(),
        &["preview", "--base", "main", "--json"],
    );
    run.assert_code(1);
    let doc = run.json();
    let findings = doc["report"]["changes"]["findings"].as_array().unwrap();
    let kinds: Vec<_> = findings
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), f["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, [("003_e", "edited"), ("004_c", "edited")], "{doc}");
    assert!(doc["report"]["changes"]["renamed"]
        .as_array()
        .unwrap()
        .is_empty());
}

/// The first pull request that adds `migrations/`: an empty base, every migration added.
#[tokio::test]
async fn a_base_without_the_migrations_directory_is_empty() {
    let server = TestDb::new().await;
    let repo = Repo::without_migrations();
    repo.write("001_a.sql", "CREATE TABLE a (id int);\n");
    repo.write("002_b.sql", "CREATE TABLE b (id int);\n");
    let run = run_cli(
        &server.url,
        &repo.dir(),
        &["preview", "--base", "main", "--json"],
    );
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(
        doc["report"]["changes"]["added"].as_array().unwrap().len(),
        2,
        "{doc}"
    );
    assert_eq!(doc["report"]["base_migrations_applied"], 0, "{doc}");
    assert!(doc["report"]["changes"]["base_newest"].is_null(), "{doc}");
    // Without down files their round trip is impossible: a warning, not an error.
    assert_eq!(doc["verdict"], "review", "{doc}");
    let round_trip = &doc["report"]["files"][0]["verification"]["round_trip"];
    assert_eq!(round_trip["status"], "no_down_file", "{doc}");
    assert!(round_trip["message"]
        .as_str()
        .unwrap()
        .starts_with("001_a: no down file"));
}

/// A new migration whose down file forgets an index: an error that names the index.
#[tokio::test]
async fn a_down_that_does_not_undo_its_up_is_an_error() {
    let server = TestDb::new().await;
    let repo = Repo::new(&[("001_a.sql", "CREATE TABLE a (id int, b int);\n")]);
    repo.write(
        "002_index.sql",
        "CREATE INDEX a_b_idx ON a (b);\nCREATE TABLE c (id int);\n",
    );
    repo.write("002_index.down.sql", "DROP TABLE c;\n");
    let run = run_cli(&server.url, &repo.dir(), &["preview", "--base", "main"]);
    run.assert_code(1);
    assert!(
        run.stdout
            .contains("| Round trip (up, down, up) | 0 of 1 passed; ❌ 1 failed |"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(
            "**❌ Round trip failed:** 002_index: the down left index public.a_b_idx behind"
        ),
        "{}",
        run.stdout
    );
}

/// What `verify` refuses to run (it touches the server, or acts outside its transaction) is
/// an error in the preview too, with its reason; the schema diff says it covers only what
/// applied.
#[tokio::test]
async fn a_migration_verify_refuses_is_an_error_not_a_pass() {
    let server = TestDb::new().await;
    let repo = Repo::new(&[(
        "001_a.sql",
        "-- stepmigrate: irreversible\nCREATE TABLE a (id int);\n",
    )]);
    repo.write(
        "002_role.sql",
        "-- stepmigrate: irreversible\nCREATE ROLE preview_never_made;\n",
    );
    repo.write(
        "003_later.sql",
        "-- stepmigrate: irreversible\nCREATE TABLE later (id int);\n",
    );
    let run = run_cli(&server.url, &repo.dir(), &["preview", "--base", "main"]);
    run.assert_code(1);
    assert!(!run.stdout.contains("nothing found"), "{}", run.stdout);
    assert!(run.stdout.contains("touches the server"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("Of the 2 new migration(s), 0 applied on the scratch database"),
        "{}",
        run.stdout
    );
    let doc = run_cli(
        &server.url,
        &repo.dir(),
        &["preview", "--base", "main", "--json"],
    )
    .assert_code(1)
    .json();
    assert_eq!(doc["verdict"], "errors", "{doc}");
    assert_eq!(
        doc["report"]["files"][0]["verification"]["outcome"]["status"], "failed",
        "{doc}"
    );

    // Acting outside its transaction (a statistics reset of the whole server) likewise.
    std::fs::remove_file(repo.dir().join("002_role.sql")).unwrap();
    repo.write(
        "002_reset.sql",
        "-- stepmigrate: irreversible\nSELECT pg_stat_reset_shared('bgwriter');\n",
    );
    let run = run_cli(&server.url, &repo.dir(), &["preview", "--base", "main"]);
    run.assert_code(1);
    assert!(
        run.stdout.contains("acts outside its transaction"),
        "{}",
        run.stdout
    );
}

/// A stale `migrations.sum` (a branch that added a migration without `stepmigrate hash`) is
/// refused as `up` and `check` refuse it.
#[tokio::test]
async fn a_stale_sum_is_refused_as_up_refuses_it() {
    let server = TestDb::new().await;
    let repo = Repo::new(&[("001_a.sql", "CREATE TABLE a (id int);\n")]);
    run_cli("", &repo.dir(), &["hash"]).assert_code(0);
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", "sum"]);
    repo.write(
        "002_b.sql",
        "-- stepmigrate: irreversible\nCREATE TABLE b (id int);\n",
    );
    let run = run_cli(&server.url, &repo.dir(), &["preview", "--base", "main"]);
    run.assert_code(3);
    assert!(run.stderr.contains("migrations.sum"), "{}", run.stderr);
}

/// A pull request that moves the migrations directory and edits an applied migration: the
/// base is read where it kept them, and the edit is an error, not an addition.
#[tokio::test]
async fn an_edit_under_a_moved_directory_is_still_an_edit() {
    let server = TestDb::new().await;
    let repo = Repo::new(&[(
        "001_init.sql",
        "-- stepmigrate: irreversible\nCREATE TABLE t (id int PRIMARY KEY);\n",
    )]);
    let root = repo.tmp.path();
    std::fs::create_dir(root.join("db")).unwrap();
    repo.git(&["mv", "migrations", "db/migrations"]);
    std::fs::write(
        root.join("db/migrations/001_init.sql"),
        "-- stepmigrate: irreversible\nCREATE TABLE t (id int PRIMARY KEY, secret text);\n",
    )
    .unwrap();
    let doc = run_cli(
        &server.url,
        &root.join("db/migrations"),
        &["preview", "--base", "main", "--json"],
    )
    .assert_code(1)
    .json();
    let findings = doc["report"]["changes"]["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{doc}");
    assert_eq!(findings[0]["kind"], "edited", "{doc}");
    assert_eq!(doc["report"]["base_migrations_applied"], 1, "{doc}");

    // Copied rather than moved (the old directory stays), the project file pointed at the
    // copy: the base is read where it kept them all the same.
    repo.git(&["reset", "-q", "--hard", "main"]);
    std::fs::create_dir_all(root.join("db/migrations")).unwrap();
    std::fs::write(
        root.join("db/migrations/001_init.sql"),
        "-- stepmigrate: irreversible\nCREATE TABLE t (id int PRIMARY KEY, secret text);\n",
    )
    .unwrap();
    std::fs::write(
        root.join("stepmigrate.toml"),
        "migrations_dir = \"db/migrations\"\n",
    )
    .unwrap();
    repo.git(&["add", "-A"]);
    let doc = run_cli(
        &server.url,
        &root.join("db/migrations"),
        &["preview", "--base", "main", "--json"],
    )
    .assert_code(1)
    .json();
    let findings = doc["report"]["changes"]["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{doc}");
    assert_eq!(findings[0]["kind"], "edited", "{doc}");
}

/// A migration that is a symbolic link on the base (the loader follows it on disk) is read
/// from its target there too, not run as the link's text.
#[tokio::test]
async fn a_symbolic_link_on_the_base_is_read_from_its_target() {
    let server = TestDb::new().await;
    let repo = Repo::without_migrations();
    let root = repo.tmp.path();
    std::fs::create_dir(root.join("sql")).unwrap();
    std::fs::write(
        root.join("sql/one.sql"),
        "-- stepmigrate: irreversible\nCREATE TABLE t (id int PRIMARY KEY);\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("../sql/one.sql", repo.dir().join("001_one.sql")).unwrap();
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", "linked"]);
    repo.write(
        "002_u.sql",
        "-- stepmigrate: irreversible\nCREATE TABLE u (id int REFERENCES t);\n",
    );
    let doc = run_cli(
        &server.url,
        &repo.dir(),
        &["preview", "--base", "HEAD", "--json"],
    )
    .assert_code(0)
    .json();
    assert_eq!(doc["report"]["base_migrations_applied"], 1, "{doc}");
    assert_eq!(
        doc["report"]["files"][0]["verification"]["outcome"]["status"], "ok",
        "{doc}"
    );
}

/// After a round trip whose down left the schema different, the schema diff is still what
/// the migration makes (its column), not what its down left.
#[tokio::test]
async fn the_schema_diff_after_a_failed_round_trip_is_the_migrations() {
    let server = TestDb::new().await;
    let repo = Repo::new(&[
        ("001_init.sql", "CREATE TABLE t (id bigint PRIMARY KEY);\n"),
        ("001_init.down.sql", "DROP TABLE t;\n"),
    ]);
    repo.write(
        "002_rt.sql",
        "ALTER TABLE t ADD COLUMN c bigint DEFAULT 5;\nCOMMENT ON TABLE t IS 'hello';\n",
    );
    repo.write("002_rt.down.sql", "ALTER TABLE t DROP COLUMN c;\n");
    let doc = run_cli(
        &server.url,
        &repo.dir(),
        &["preview", "--base", "main", "--json"],
    )
    .assert_code(1)
    .json();
    let changes: Vec<String> = doc["report"]["schema_diff"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{} {} {}", c["change"], c["kind"], c["name"]))
        .collect();
    assert!(
        changes.contains(&"\"added\" \"column\" \"public.t.c\"".to_owned()),
        "{changes:?}"
    );
}

/// A pull request that only deletes or edits the down file of a base's migration is not
/// "no migration changed": each is a warning that says what a rollback will then do.
#[tokio::test]
async fn a_changed_or_deleted_down_file_is_reported() {
    let server = TestDb::new().await;
    let repo = Repo::new(&[
        ("001_init.sql", "CREATE TABLE t (id bigint PRIMARY KEY);\n"),
        ("001_init.down.sql", "DROP TABLE t;\n"),
    ]);
    std::fs::remove_file(repo.dir().join("001_init.down.sql")).unwrap();
    let doc = run_cli(
        &server.url,
        &repo.dir(),
        &["preview", "--base", "main", "--json"],
    )
    .assert_code(0)
    .json();
    assert_eq!(doc["verdict"], "review", "{doc}");
    let finding = &doc["report"]["changes"]["findings"][0];
    assert_eq!(finding["kind"], "down_changed", "{doc}");
    assert_eq!(finding["file"], "migrations/001_init.down.sql", "{doc}");
    assert!(finding["message"]
        .as_str()
        .unwrap()
        .contains("deletes the down file"));
    repo.write("001_init.down.sql", "DROP TABLE t CASCADE;\n");
    let run = run_cli(&server.url, &repo.dir(), &["preview", "--base", "main"]);
    run.assert_code(0);
    assert!(
        run.stdout
            .contains("**down file** `migrations/001_init.down.sql`: changes the down file"),
        "{}",
        run.stdout
    );
}

/// A link through a linked directory on the base is followed as the file system does.
#[tokio::test]
async fn a_link_through_a_linked_directory_on_the_base_is_followed() {
    let server = TestDb::new().await;
    let repo = Repo::without_migrations();
    let root = repo.tmp.path();
    std::fs::create_dir(root.join("sub")).unwrap();
    std::fs::write(
        root.join("sub/x.sql"),
        "-- stepmigrate: irreversible\nCREATE TABLE t (id int PRIMARY KEY);\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("../sub", repo.dir().join("lnk")).unwrap();
    std::os::unix::fs::symlink("lnk/x.sql", repo.dir().join("001_base.sql")).unwrap();
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "-m", "linked"]);
    repo.write(
        "002_u.sql",
        "-- stepmigrate: irreversible\nCREATE TABLE u (id int REFERENCES t);\n",
    );
    let doc = run_cli(
        &server.url,
        &repo.dir(),
        &["preview", "--base", "HEAD", "--json"],
    )
    .assert_code(0)
    .json();
    assert_eq!(doc["report"]["base_migrations_applied"], 1, "{doc}");
}

/// A new migration is linted on the column types its base's migrations made, as `check` of the
/// whole directory does: widening a varchar the base created is not "unknown".
#[tokio::test]
async fn a_new_migration_is_linted_on_the_bases_columns() {
    let server = TestDb::new().await;
    let repo = Repo::new(&[(
        "001_users.sql",
        "-- stepmigrate: irreversible\nCREATE TABLE users (id int PRIMARY KEY, email varchar(50));\n",
    )]);
    repo.write(
        "002_widen.sql",
        "-- stepmigrate: irreversible\nALTER TABLE users ALTER COLUMN email TYPE varchar(100);\n",
    );
    let run = run_cli(
        &server.url,
        &repo.dir(),
        &["--json", "preview", "--base", "main"],
    );
    let doc = run.json();
    let text = doc.to_string();
    assert!(
        !text.contains("do not show"),
        "the base's column type is known: {doc:#}"
    );
    let check = run_cli("", &repo.dir(), &["--json", "check"]).json();
    let findings = |d: &serde_json::Value| d.to_string().contains("changing-column-type");
    assert_eq!(findings(&doc), findings(&check), "{doc:#}\n{check:#}");
}

/// The summary claims no more than the details: a round trip unknown on the target's rows is
/// not counted as passed, and "no ACCESS EXCLUSIVE" is not "no locks".
#[tokio::test]
async fn the_summary_claims_no_more_than_the_details() {
    let server = TestDb::new().await;
    let repo = Repo::new(&[(
        "001_t.sql",
        "-- stepmigrate: irreversible\nCREATE TABLE t (id int PRIMARY KEY);\n",
    )]);
    repo.write(
        "002_u.sql",
        "CREATE TABLE u (id int PRIMARY KEY REFERENCES t (id));\n",
    );
    repo.write("002_u.down.sql", "DROP TABLE u;\n");
    repo.write("003_fill.sql", "INSERT INTO u SELECT id FROM t;\n");
    repo.write("003_fill.down.sql", "DELETE FROM u;\n");
    let run = run_cli(&server.url, &repo.dir(), &["preview", "--base", "main"]);
    let md = &run.stdout;
    assert!(md.contains("1 of 2 passed; ❔ 1 unknown"), "{md}");
    assert!(!md.contains("none on existing tables"), "{md}");
}

/// Code that branches on rows (a `DO` block) does on the empty scratch database what it
/// does on no rows: "Rewrites: none" and "No change to the schema" are then the empty copy's,
/// and the preview says which migration they are unknown for.
#[tokio::test]
async fn code_that_branches_on_rows_is_unknown_not_none() {
    let server = TestDb::new().await;
    let repo = Repo::new(&[(
        "001_u.sql",
        "-- stepmigrate: irreversible\nCREATE TABLE u (id int PRIMARY KEY, c text);\n",
    )]);
    repo.write(
        "002_maybe.sql",
        "-- stepmigrate: irreversible\nDO $$ BEGIN IF (SELECT count(*) FROM u) > 0 THEN ALTER TABLE u ALTER COLUMN c TYPE integer USING length(c); END IF; END $$;\n",
    );
    let run = run_cli(&server.url, &repo.dir(), &["preview", "--base", "main"]);
    let md = &run.stdout;
    assert!(
        md.contains("| Rewrites | none on the empty copy; ❔ unknown for `002_maybe`"),
        "{md}"
    );
    assert!(
        md.contains(
            "❔ What `002_maybe` changes depends on rows the scratch database does not hold"
        ),
        "{md}"
    );
}

/// `--dev-url` naming DATABASE_URL's own database is refused before anything runs there (the
/// preview emptied it: its tables, settings and comment gone).
#[tokio::test]
async fn a_dev_url_that_is_the_database_urls_own_database_is_refused() {
    let server = TestDb::new().await;
    server.exec("CREATE TABLE precious (id int)").await;
    let repo = pull_request();
    let run = run_cli(
        &server.url,
        &repo.dir(),
        &["preview", "--base", "main", "--dev-url", &server.url],
    );
    assert_eq!(run.code, 2, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("is the target database itself"),
        "{}",
        run.stderr
    );
    assert_eq!(
        server
            .query("SELECT count(*)::text FROM pg_tables WHERE tablename = 'precious'")
            .await,
        ["1"]
    );
}

/// New migrations the deploy's run applies in another order than the preview ran them (a
/// new after-deploy one first in version order): a warning on the later one.
#[tokio::test]
async fn a_new_migration_the_deploy_runs_before_an_after_deploy_one_is_named() {
    let server = TestDb::new().await;
    let repo = Repo::new(&[(
        "001_t.sql",
        "-- stepmigrate: irreversible\nCREATE TABLE t (id int PRIMARY KEY, a int);\n",
    )]);
    repo.write(
        "002_ad.sql",
        "-- stepmigrate: after-deploy\n-- stepmigrate: irreversible\nCREATE INDEX ta ON t (a);\n",
    );
    repo.write(
        "003_use.sql",
        "-- stepmigrate: irreversible\nALTER INDEX ta RENAME TO ta2;\n",
    );
    let run = run_cli(&server.url, &repo.dir(), &["preview", "--base", "main"]);
    assert!(
        run.stdout
            .contains("**deploy order** `migrations/003_use.sql`"),
        "{}",
        run.stdout
    );
}
