//! Database connections: parsed once, pooled (a Lambda instance reuses them across warm
//! invocations), opened with a deadline, described without secrets.

use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Postgres};

use crate::error::Error;

/// Where the migrations go. Its `Display` names host, port, database and user, never the
/// password; so does its `Debug` (the connect options' own would show it).
#[derive(Clone)]
pub struct Database {
    options: PgConnectOptions,
    connect_timeout: Duration,
    // Created on first use, inside the async runtime; two sessions at most: the migration
    // session and the lock's.
    pool: Arc<OnceLock<PgPool>>,
    /// The backends this process opened (their pids), so that an interrupted command can
    /// cancel the statement its own session left running on the server
    /// ([`Database::cancel_own_work`]), and nobody else's.
    backends: Arc<std::sync::Mutex<Vec<i32>>>,
}

/// A connection from the database's pool.
pub type Connection = PoolConnection<Postgres>;

impl Database {
    /// Parses a `postgres://` URL. `source` names where it came from (e.g. `DATABASE_URL`)
    /// for the error message, which never repeats any part of the URL's user information.
    pub fn from_url(url: &str, source: &str, connect_timeout: Duration) -> Result<Database, Error> {
        let invalid = |reason: String| Error::Config {
            variable: source.to_owned(),
            reason,
        };
        if url.trim().is_empty() {
            return Err(invalid(
                "empty; set it to postgres://USER@HOST:PORT/DATABASE".into(),
            ));
        }
        check_userinfo(url).map_err(invalid)?;
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            invalid(format!(
                "not a valid PostgreSQL URL ({}); expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
                // sqlx says "error with configuration:" once per layer.
                redact_reason(&e.to_string(), url).replace(
                    "error with configuration: error with configuration: ",
                    "error with configuration: "
                )
            ))
        })?;
        Ok(Database::from_options(options, connect_timeout))
    }

    /// `connect_timeout` zero means no limit.
    pub fn from_options(options: PgConnectOptions, connect_timeout: Duration) -> Database {
        install_crypto_provider();
        let options = options
            .application_name("stepmigrate")
            // Migration SQL may hold secrets (CREATE ROLE ... PASSWORD): never log statements.
            .disable_statement_logging();
        Database {
            options,
            connect_timeout: if connect_timeout.is_zero() {
                NO_LIMIT
            } else {
                connect_timeout
            },
            pool: Arc::new(OnceLock::new()),
            backends: Arc::default(),
        }
    }

    /// A connection from the pool (opened if needed), failing within the connect timeout
    /// (all of it: the probe, the handshake and the wait for a free connection) with the
    /// host named.
    pub async fn connect(&self) -> Result<Connection, Error> {
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let pool = self.pool.get_or_init(|| {
            let backends = self.backends.clone();
            PgPoolOptions::new()
                .max_connections(4)
                .min_connections(0)
                .acquire_timeout(self.connect_timeout)
                .idle_timeout(Duration::from_secs(300))
                .after_connect(move |conn, _| {
                    let backends = backends.clone();
                    Box::pin(async move {
                        sqlx::query(KEEP_ALIVE).execute(&mut *conn).await?;
                        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                            .fetch_one(&mut *conn)
                            .await?;
                        if let Ok(mut b) = backends.lock() {
                            b.push(pid);
                        }
                        Ok(())
                    })
                })
                .connect_lazy_with(self.options.clone())
        });
        if pool.size() == 0 {
            self.probe(deadline).await?;
        }
        match tokio::time::timeout_at(deadline, pool.acquire()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(sqlx::Error::PoolTimedOut)) | Err(_) => Err(self.no_answer()),
            Ok(Err(e)) => Err(Error::ConnectionFailed {
                target: self.to_string(),
                reason: self.describe(&e),
            }),
        }
    }

    /// The pool retries a failed connection until its deadline (a server still starting)
    /// and then says only that it timed out: a runner wants to hear at once that the name
    /// does not resolve or nothing listens. One TCP connect tells.
    async fn probe(&self, deadline: tokio::time::Instant) -> Result<(), Error> {
        let host = self.options.get_host();
        if host.starts_with('/') {
            return Ok(()); // a Unix socket directory: nothing to probe cheaply
        }
        // `[::1]` as written in a URL is `::1` to the resolver.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let connecting = tokio::net::TcpStream::connect((host, self.options.get_port()));
        match tokio::time::timeout_at(deadline, connecting).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                Err(Error::ConnectionFailed {
                    target: self.to_string(),
                    reason: format!("{e}: is PostgreSQL running and listening there?"),
                })
            }
            Ok(Err(e)) => Err(Error::ConnectionFailed {
                target: self.to_string(),
                reason: e.to_string(),
            }),
            Err(_) => Err(self.no_answer()),
        }
    }

    /// Why a connection failed, without the user name (PostgreSQL quotes it in `role "x"
    /// does not exist`; a password typed into its place must not be shown).
    fn describe(&self, e: &sqlx::Error) -> String {
        let text = match e {
            sqlx::Error::Database(db) => db.message().to_owned(),
            other => other.to_string(),
        };
        let user = self.options.get_username();
        if user.is_empty() {
            text
        } else {
            text.replace(&format!("\"{user}\""), "\"<user>\"")
        }
    }

    fn no_answer(&self) -> Error {
        Error::ConnectionFailed {
            target: self.to_string(),
            reason: format!(
                "no answer within {} s (STEPMIGRATE_CONNECT_TIMEOUT); check the host, port, security group and that the server is up",
                self.connect_timeout.as_secs_f32()
            ),
        }
    }

    /// Closes the pool's sessions properly (a Terminate each): call it before the process
    /// ends.
    pub async fn close(&self) {
        if let Some(pool) = self.pool.get() {
            pool.close().await;
        }
    }

    /// After the command was interrupted (Ctrl-C, SIGTERM), with its futures dropped: a
    /// statement its sessions sent runs on in the server, and would commit (a migration, a
    /// revert, with its ledger event) outside any lock, unseen. Cancels what this process's
    /// own backends are running (`pg_cancel_backend`, from a session of its own) and waits, up
    /// to `wait`, until none of them runs a statement. A transaction the cancel left open
    /// (aborted) rolls back when the session closes, as the process ends. Returns the
    /// backends cancelled, and those still running when the wait ran out.
    pub async fn cancel_own_work(&self, wait: Duration) -> Result<(Vec<i32>, Vec<i32>), Error> {
        use sqlx::Connection as _;
        let ours: Vec<i32> = self.backends.lock().map(|b| b.clone()).unwrap_or_default();
        if ours.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut conn = tokio::time::timeout(
            self.connect_timeout,
            sqlx::PgConnection::connect_with(&self.options),
        )
        .await
        .map_err(|_| self.no_answer())?
        .map_err(|e| Error::database("connecting to cancel the interrupted work", e))?;
        async fn busy(conn: &mut sqlx::PgConnection, ours: &[i32]) -> Result<Vec<i32>, Error> {
            sqlx::query_scalar::<_, i32>("SELECT pid FROM pg_stat_activity WHERE pid = ANY($1) AND state = 'active' AND pid <> pg_backend_pid()")
                .bind(ours)
                .fetch_all(conn)
                .await
                .map_err(|e| Error::database("looking for the interrupted work", e))
        }
        let cancelled = busy(&mut conn, &ours).await?;
        for pid in &cancelled {
            sqlx::query("SELECT pg_cancel_backend($1)")
                .bind(pid)
                .execute(&mut conn)
                .await
                .map_err(|e| Error::database("cancelling the interrupted work", e))?;
        }
        let started = std::time::Instant::now();
        let mut still = busy(&mut conn, &ours).await?;
        let mut attempt = 0;
        while !still.is_empty() && started.elapsed() < wait {
            tokio::time::sleep(crate::lock::backoff(attempt, Duration::from_millis(200))).await;
            attempt += 1;
            still = busy(&mut conn, &ours).await?;
        }
        let _ = conn.close().await;
        Ok((cancelled, still))
    }

    /// The sessions in the way of this process's own (see [`crate::lock::blockers`]):
    /// asked from a session of the pool, never from one that may be the one waiting.
    pub async fn blockers(
        &self,
        ledger_schema: Option<&str>,
    ) -> Result<Vec<crate::lock::LockHolder>, Error> {
        let ours: Vec<i32> = self.backends.lock().map(|b| b.clone()).unwrap_or_default();
        if ours.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.connect().await?;
        crate::lock::blockers(&mut conn, &ours, ledger_schema).await
    }

    /// Another database on the same server, with the same credentials and settings (and a
    /// pool of its own): for a scratch database.
    pub fn with_database(&self, name: &str) -> Database {
        Database::from_options(self.options.clone().database(name), self.connect_timeout)
    }

    /// The same database with a setting every session of it starts with (a pool of its own),
    /// e.g. a `lock_timeout` that must hold for every statement a command sends.
    pub fn with_session_setting(&self, name: &str, value: &str) -> Database {
        Database {
            // Its sessions are this process's too: an interrupted command cancels them.
            backends: self.backends.clone(),
            ..Database::from_options(
                self.options.clone().options([(name, value)]),
                self.connect_timeout,
            )
        }
    }

    /// The database's name, for metrics and messages.
    pub fn name(&self) -> &str {
        self.options.get_database().unwrap_or("postgres")
    }
}

/// Host, port and database: never any part of the user information (a password typed into
/// the user name's place would be shown).
impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}/{}",
            self.options.get_host(),
            self.options.get_port(),
            self.name()
        )
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Database({self})")
    }
}

/// A runner's sessions idle by design: the lock's while the migrations run on another, both
/// while a runner waits its turn. A server-wide `idle_session_timeout` must not end them (and
/// the lock with them) half-way through a run.
/// And a runner that dies (SIGKILL, a stopped ECS task) must not leave its statement running
/// on: `client_connection_check_interval` has the server cancel it within 10 s of the client
/// going away (a `CREATE INDEX CONCURRENTLY` then leaves the INVALID index the next build
/// drops), instead of an index build running for hours after its runner, unseen by the ledger.
/// (Not through `pg_settings`, which costs a fresh session milliseconds; both settings are new
/// in PostgreSQL 14.)
pub(crate) const KEEP_ALIVE: &str = "SELECT CASE WHEN current_setting('server_version_num')::int >= 140000 THEN set_config('idle_session_timeout', '0', false) || set_config('client_connection_check_interval', '10s', false) END, set_config('idle_in_transaction_session_timeout', '0', false)";

/// What "no limit" waits: long enough never to matter, short enough for any clock.
const NO_LIMIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// sqlx's rustls needs a process-wide crypto provider for some modes (`sslmode=verify-ca`
/// asks for one and panics without it).
fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A `/`, `?` or `#` in the user name or password ends the URL's authority early: the rest
/// of the password would become the database name, and be shown. Refused before parsing,
/// naming the character, never the text.
fn check_userinfo(url: &str) -> Result<(), String> {
    let Some((_, rest)) = url.split_once("://") else {
        return Ok(());
    };
    let Some(at) = rest.rfind('@') else {
        return Ok(());
    };
    let userinfo = &rest[..at];
    if let Some(c) = userinfo.chars().find(|c| matches!(c, '/' | '?' | '#')) {
        return Err(format!(
            "the user name or password holds a `{c}`, which must be percent-encoded in a URL (`/` is %2F, `?` %3F, `#` %23, `@` %40); the URL is not shown"
        ));
    }
    Ok(())
}

/// An error about a URL must not echo it back.
fn redact_reason(reason: &str, url: &str) -> String {
    if reason.contains(url) {
        reason.replace(url, "<url>")
    } else {
        reason.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_never_shows_the_password() {
        let db = Database::from_url(
            "postgres://app:s3cret@db.example.com:6543/tutor",
            "DATABASE_URL",
            Duration::from_secs(1),
        )
        .unwrap();
        let shown = db.to_string();
        assert_eq!(shown, "db.example.com:6543/tutor");
        assert!(!format!("{db:?}").contains("s3cret"));
    }

    #[test]
    fn bad_urls_name_the_variable_not_the_secret() {
        let err = Database::from_url(
            "postgres://app:s3cret@host:notaport/db",
            "DATABASE_URL",
            Duration::from_secs(1),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("DATABASE_URL"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        let err = Database::from_url(
            "postgres://u:1234/s3cretPW@host/db",
            "DATABASE_URL",
            Duration::from_secs(1),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("percent-encoded"), "{text}");
        assert!(!text.contains("s3cret") && !text.contains("1234"), "{text}");
        let err = Database::from_url("", "DATABASE_URL", Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL: empty"), "{err}");
    }
}
