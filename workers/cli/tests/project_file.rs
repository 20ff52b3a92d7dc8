//! The project file, `stepmigrate.toml`, as the command reads it: found upward from the
//! working directory, its paths taken from its own directory, under environment variables
//! and flags, and every error naming the file, the key and the line.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{bin, Run, TestDb};

/// A project: a root holding `stepmigrate.toml` and `db/migrations`, and a subdirectory to
/// run from.
struct ProjectDir {
    tmp: tempfile::TempDir,
}

impl ProjectDir {
    fn new(toml: &str) -> ProjectDir {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("db/migrations")).unwrap();
        std::fs::create_dir_all(tmp.path().join("src/deeper")).unwrap();
        let p = ProjectDir { tmp };
        p.write_toml(toml);
        p.migration(
            "db/migrations",
            "001_create_a.sql",
            "CREATE TABLE a (id int);\n",
        );
        p
    }

    fn root(&self) -> &Path {
        self.tmp.path()
    }

    fn write_toml(&self, toml: &str) {
        std::fs::write(self.root().join("stepmigrate.toml"), toml).unwrap();
    }

    fn migration(&self, dir: &str, name: &str, sql: &str) {
        let dir = self.root().join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), sql).unwrap();
    }

    /// Runs the binary in `src/deeper`, with none of the caller's STEPMIGRATE_* variables.
    fn run(&self, url: Option<&str>, args: &[&str], vars: &[(&str, &str)]) -> Run {
        let mut cmd = Command::new(bin());
        cmd.current_dir(self.root().join("src/deeper"))
            .env_remove("RUST_LOG")
            .env_remove("DATABASE_URL")
            .args(args)
            .stdin(Stdio::null());
        for (name, _) in std::env::vars() {
            if name.starts_with("STEPMIGRATE_") {
                cmd.env_remove(name);
            }
        }
        if let Some(url) = url {
            cmd.env("DATABASE_URL", url);
        }
        cmd.envs(vars.iter().copied());
        Run::from(cmd.output().expect("run stepmigrate"))
    }
}

fn pending(run: &Run) -> Vec<String> {
    run.json()["pending"]
        .as_array()
        .unwrap_or_else(|| panic!("no pending list: {run:?}"))
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn status_finds_the_file_upward_and_takes_its_directory_and_ledger_schema() {
    let db = TestDb::new().await;
    let p = ProjectDir::new(
        "# the project's settings\nmigrations_dir = \"db/migrations\"\nledger_schema = \"ledger_x\"\n",
    );
    p.run(Some(&db.url), &["up"], &[]).assert_code(0);
    assert!(db.table_exists("a").await);
    assert_eq!(
        db.query("SELECT (to_regclass('ledger_x.schema_migrations') IS NOT NULL)::text")
            .await,
        ["true"],
        "the ledger is in the file's schema"
    );
    let status = p.run(Some(&db.url), &["--json", "status"], &[]);
    status.assert_code(0);
    let doc = status.json();
    assert_eq!(doc["migrations"][0]["name"], "001_create_a");
    assert_eq!(doc["migrations"][0]["state"], "applied");
    assert!(
        doc["migrations"][0]["file"]
            .as_str()
            .unwrap()
            .ends_with("db/migrations/001_create_a.sql"),
        "{doc}"
    );

    // Status looks for the ledger where the file says: in another schema there is none,
    // and the library refuses to start a second one beside it.
    p.write_toml("migrations_dir = \"db/migrations\"\nledger_schema = \"elsewhere\"\n");
    let doc = p.run(Some(&db.url), &["--json", "status"], &[]).json();
    assert_eq!(doc["error"]["name"], "ConfigError", "{doc}");
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`elsewhere` holds no ledger, but ledger_x does"),
        "{doc}"
    );
    assert!(
        message.contains("stepmigrate.toml:2:17: ledger_schema: "),
        "the error points at the file, not the variable: {doc}"
    );
    // ... unless the variable says otherwise: environment over file.
    let doc = p
        .run(
            Some(&db.url),
            &["--json", "status"],
            &[("STEPMIGRATE_LEDGER_SCHEMA", "ledger_x")],
        )
        .json();
    assert_eq!(doc["migrations"][0]["state"], "applied", "{doc}");
}

#[tokio::test]
async fn environment_overrides_the_file_and_flags_override_the_environment() {
    let db = TestDb::new().await;
    let p = ProjectDir::new("migrations_dir = \"db/migrations\"\nlock_timeout = \"2s\"\n");
    p.migration("from_env", "001_e.sql", "SELECT 1;\n");
    p.migration("from_env", "002_e.sql", "SELECT 2;\n");
    p.migration("from_flag", "001_f.sql", "SELECT 1;\n");
    p.migration("from_flag", "002_f.sql", "SELECT 2;\n");
    p.migration("from_flag", "003_f.sql", "SELECT 3;\n");
    let env_dir = p.root().join("from_env");
    let env_dir = env_dir.to_str().unwrap();
    let flag_dir = p.root().join("from_flag");
    let flag_dir = flag_dir.to_str().unwrap();

    let file = p.run(Some(&db.url), &["--json", "plan"], &[]);
    assert_eq!(pending(&file), ["001_create_a"]);
    let env = p.run(
        Some(&db.url),
        &["--json", "plan"],
        &[("STEPMIGRATE_MIGRATIONS_DIR", env_dir)],
    );
    assert_eq!(pending(&env), ["001_e", "002_e"]);
    let flag = p.run(
        Some(&db.url),
        &["--json", "plan", "--migrations-dir", flag_dir],
        &[("STEPMIGRATE_MIGRATIONS_DIR", env_dir)],
    );
    assert_eq!(pending(&flag), ["001_f", "002_f", "003_f"]);

    // A setting: the variable is read over the file (a bad one fails naming the variable),
    // and not read at all under its flag.
    let bad_env = [("STEPMIGRATE_LOCK_TIMEOUT", "soon")];
    let run = p.run(Some(&db.url), &["plan"], &bad_env);
    run.assert_code(2);
    assert!(run.stderr.contains("STEPMIGRATE_LOCK_TIMEOUT"), "{run:?}");
    p.run(Some(&db.url), &["plan", "--lock-timeout", "3s"], &bad_env)
        .assert_code(0);
    // An empty variable is an unset one: the file's value stands.
    p.run(
        Some(&db.url),
        &["plan"],
        &[("STEPMIGRATE_LOCK_TIMEOUT", "")],
    )
    .assert_code(0);
}

/// Each malformed file fails before any database is touched, naming file, line and key.
#[test]
fn malformed_files_name_file_key_and_line() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "lock_timeout = \"5s\"\n\nstatement_timeout = \"soon\"\n",
            "stepmigrate.toml:3:21: statement_timeout: ",
            "is not a duration",
        ),
        (
            "migrations_dir = \"db/migrations\"\nmigration_dir = \"x\"\n",
            "stepmigrate.toml:2:1: migration_dir: ",
            "unknown field `migration_dir`",
        ),
        (
            "lock_retries = 3\nlock_wait = 10min\n",
            "stepmigrate.toml:2:",
            "lock_wait",
        ),
        (
            "[lint]\nenable = [\"a\"]\n[lint.severity]\nban-drop-column = \"fatal\"\n",
            "stepmigrate.toml:4:19: lint.severity.ban-drop-column: ",
            "`fatal` is not a severity",
        ),
        (
            "[lint]\nenable = [\"a\"]\nrules = []\n",
            "stepmigrate.toml:3:1: lint.rules: ",
            "unknown field `rules`",
        ),
    ];
    for (toml, location, reason) in cases {
        let p = ProjectDir::new(toml);
        for command in ["status", "plan", "new"] {
            let args: &[&str] = if command == "new" {
                &["new", "add_b"]
            } else {
                &[command]
            };
            let run = p.run(Some("postgres://nobody@127.0.0.1:1/none"), args, &[]);
            run.assert_code(2);
            assert!(
                run.stderr.contains(location) && run.stderr.contains(reason),
                "{command} with {toml:?}: expected {location:?} and {reason:?} in:\n{}",
                run.stderr
            );
            assert!(run.stderr.contains("error[ConfigError]"), "{}", run.stderr);
        }
        let json = p.run(None, &["--json", "status"], &[]).json();
        assert_eq!(json["error"]["name"], "ConfigError");
        assert!(
            json["error"]["details"]["variable"]
                .as_str()
                .unwrap()
                .contains(location.trim_end_matches(": ")),
            "{json}"
        );
    }
}

#[test]
fn a_named_file_must_exist_and_wins_over_discovery() {
    let p = ProjectDir::new("migrations_dir = \"db/migrations\"\n");
    let run = p.run(None, &["status", "--config", "missing.toml"], &[]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("missing.toml: --config: no such file"),
        "{}",
        run.stderr
    );
    let run = p.run(None, &["status"], &[("STEPMIGRATE_CONFIG", "gone.toml")]);
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("gone.toml: STEPMIGRATE_CONFIG: no such file"),
        "{}",
        run.stderr
    );
    // A named file is read instead of the one found upward: this one is malformed.
    std::fs::write(p.root().join("other.toml"), "lock_wait = \"forever\"\n").unwrap();
    let other = p.root().join("other.toml");
    let run = p.run(None, &["status", "--config", other.to_str().unwrap()], &[]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("other.toml:1:13: lock_wait"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_dev_url_password_is_never_shown() {
    let p = ProjectDir::new(
        "migrations_dir = \"db/migrations\"\ndev_url = \"postgres://admin:hunter2@db.internal:notaport/postgres\"\n",
    );
    for args in [&["status"][..], &["--json", "status"], &["-vv", "status"]] {
        let run = p.run(None, args, &[]);
        run.assert_code(2);
        assert!(
            run.stderr.contains("dev_url") || run.stdout.contains("dev_url"),
            "{run:?}"
        );
        assert!(
            !run.stderr.contains("hunter2") && !run.stdout.contains("hunter2"),
            "{run:?}"
        );
        assert!(!run.stderr.contains("admin"), "{run:?}");
    }
}

/// `pg_version` written as a TOML float is the version it reads as (`14.0` is 14, `9.6` is
/// 9.6), and a number that is no release is refused naming the key.
#[test]
fn pg_version_may_be_a_float_and_must_be_a_release() {
    for (value, ok) in [
        ("14.0", true),
        ("9.6", true),
        ("\"15\"", true),
        ("95", false),
    ] {
        let p = ProjectDir::new(&format!(
            "migrations_dir = \"db/migrations\"\n[lint]\npg_version = {value}\n"
        ));
        let run = p.run(None, &["check"], &[]);
        if ok {
            assert!(
                !run.stderr.contains("ConfigError"),
                "{value}: {}",
                run.stderr
            );
        } else {
            run.assert_code(2);
            assert!(
                run.stderr.contains("lint.pg_version"),
                "{value}: {}",
                run.stderr
            );
        }
    }
}
