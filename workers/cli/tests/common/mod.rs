//! Shared test support: a fresh PostgreSQL database per test, migration directories, and the
//! real `stepmigrate` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use stepmigrate_core::config::Settings;
use stepmigrate_core::db::Database;
use stepmigrate_core::migration::MigrationSet;
use stepmigrate_core::runner::Migrator;

/// The server the tests use; CI starts it (see .ci/run).
pub fn admin_url() -> String {
    std::env::var("STEPMIGRATE_TEST_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own for one test, dropped at the end.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        use rand::Rng;
        let name = format!("sm_test_{:016x}", rand::thread_rng().gen::<u64>());
        let mut admin = PgConnection::connect(&admin_url())
            .await
            .expect("the test PostgreSQL server is reachable");
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let opts = PgConnectOptions::from_str(&admin_url())
            .unwrap()
            .database(&name);
        let url = opts.to_url_lossy().to_string();
        TestDb { name, url }
    }

    pub async fn conn(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .expect("connect to test database")
    }

    /// Runs SQL and returns the first column of each row as text.
    pub async fn query(&self, sql: &str) -> Vec<String> {
        let mut c = self.conn().await;
        let rows: Vec<(Option<String>,)> = sqlx::query_as(sql)
            .fetch_all(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.into_iter()
            .map(|(v,)| v.unwrap_or_else(|| "NULL".into()))
            .collect()
    }

    /// Writes to `schema_migrations` behind the ledger's back (its triggers refuse UPDATE and
    /// INSERT by hand): what a tampering superuser could do.
    pub async fn tamper(&self, sql: &str) {
        self.exec(&format!(
            "BEGIN; ALTER TABLE schema_migrations DISABLE TRIGGER schema_migrations_written_by_the_fold; {sql}; ALTER TABLE schema_migrations ENABLE ALWAYS TRIGGER schema_migrations_written_by_the_fold; COMMIT;"
        ))
        .await;
    }

    pub async fn exec(&self, sql: &str) {
        let mut c = self.conn().await;
        sqlx::raw_sql(sql)
            .execute(&mut c)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Waits (up to 20 s) until another session of this database (not another test's) runs a
    /// query containing `fragment`.
    pub async fn wait_for_active_query(&self, fragment: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let sql = format!(
            "SELECT count(*)::text FROM pg_stat_activity WHERE strpos(query, '{}') > 0 AND state = 'active' AND pid <> pg_backend_pid() AND datname = current_database()",
            fragment.replace('\'', "''")
        );
        while self.query(&sql).await[0] == "0" {
            assert!(
                std::time::Instant::now() < deadline,
                "no session ran {fragment} within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn table_exists(&self, table: &str) -> bool {
        self.query(&format!(
            "SELECT (to_regclass('{table}') IS NOT NULL)::text"
        ))
        .await[0]
            == "true"
    }

    /// Versions applied according to the ledger (000 excluded).
    pub async fn applied(&self) -> Vec<String> {
        if !self.table_exists("schema_migrations").await {
            return vec![];
        }
        self.query("SELECT version::text FROM schema_migrations WHERE success AND version <> '000' ORDER BY version").await
    }

    pub fn migrator(&self, dir: &Path, settings: Settings) -> Migrator {
        Migrator::new(
            Database::from_url(&self.url, "DATABASE_URL", settings.connect_timeout).unwrap(),
            MigrationSet::load(dir).unwrap(),
            settings,
        )
    }

    /// Runs the real `stepmigrate` binary against this database.
    pub fn cli(&self, dir: &Path, args: &[&str]) -> Run {
        run_cli(&self.url, dir, args)
    }

    /// Runs the real `stepmigrate` binary with extra environment variables.
    pub fn cli_env(&self, dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Run {
        run_cli_env(&self.url, dir, args, vars)
    }

    pub fn spawn_cli(&self, dir: &Path, args: &[&str]) -> std::process::Child {
        cli_command(&self.url, dir, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn stepmigrate")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any runtime; a thread of its own keeps it simple.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&admin_url()).await {
                    let _ = sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_stepmigrate")
}

pub fn cli_command(url: &str, dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.env("DATABASE_URL", url)
        .env("STEPMIGRATE_MIGRATIONS_DIR", dir)
        .env_remove("RUST_LOG")
        .args(args)
        .stdin(Stdio::null());
    cmd
}

pub fn run_cli(url: &str, dir: &Path, args: &[&str]) -> Run {
    Run::from(
        cli_command(url, dir, args)
            .output()
            .expect("run stepmigrate"),
    )
}

pub fn run_cli_env(url: &str, dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Run {
    let mut cmd = cli_command(url, dir, args);
    cmd.envs(vars.iter().copied());
    Run::from(cmd.output().expect("run stepmigrate"))
}

/// A finished CLI run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{self:?}"))
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code, code,
            "unexpected exit code:\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A temporary migrations directory.
pub struct Dir {
    pub tmp: tempfile::TempDir,
}

impl Dir {
    pub fn new(files: &[(&str, &str)]) -> Dir {
        let d = Dir {
            tmp: tempfile::tempdir().unwrap(),
        };
        for (name, sql) in files {
            d.write(name, sql);
        }
        d
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn write(&self, name: &str, sql: &str) {
        std::fs::write(self.tmp.path().join(name), sql).unwrap();
    }

    pub fn write_bytes(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.tmp.path().join(name), bytes).unwrap();
    }

    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.tmp.path().join(name)).unwrap();
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

/// `n` migrations `001_create_t1` ... each creating table `t{i}`.
pub fn numbered_tables(n: usize) -> Dir {
    let d = Dir::new(&[]);
    for i in 1..=n {
        d.write(
            &format!("{i:03}_create_t{i}.sql"),
            &format!("CREATE TABLE t{i} (id int);\n"),
        );
    }
    d
}

pub fn settings() -> Settings {
    Settings {
        lock_wait: Duration::from_secs(60),
        ..Settings::default()
    }
}

/// `items` with `n` rows to backfill (`done` NULL), and `touched` counting how often a row
/// was changed: an idempotent batch changes each row once. The partial index is what a real
/// backfill needs too: without it each batch scans past every row done before it.
pub fn with_items(n: u64) -> String {
    format!(
        "CREATE TABLE items (id bigint PRIMARY KEY, v int NOT NULL, done int, touched int NOT NULL DEFAULT 0);\n\
         INSERT INTO items (id, v) SELECT g, g % 100 FROM generate_series(1, {n}) g;\n\
         CREATE INDEX items_todo ON items (id) WHERE done IS NULL;\n\
         ANALYZE items;\n"
    )
}
