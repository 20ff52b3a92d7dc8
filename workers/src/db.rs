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
}

/// A connection from the database's pool.
pub type Connection = PoolConnection<Postgres>;

impl Database {
    /// Parses a `postgres://` URL. `source` names where it came from (e.g. `DATABASE_URL`)
    /// for the error message, which never repeats the URL (it may hold a password).
    pub fn from_url(url: &str, source: &str, connect_timeout: Duration) -> Result<Database, Error> {
        if url.trim().is_empty() {
            return Err(Error::Config {
                variable: source.to_owned(),
                reason: "empty; set it to postgres://USER@HOST:PORT/DATABASE".into(),
            });
        }
        let options = PgConnectOptions::from_str(url).map_err(|e| Error::Config {
            variable: source.to_owned(),
            reason: format!("not a valid PostgreSQL URL ({}); expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE", redact_reason(&e.to_string(), url)),
        })?;
        Ok(Database::from_options(options, connect_timeout))
    }

    pub fn from_options(options: PgConnectOptions, connect_timeout: Duration) -> Database {
        let options = options
            .application_name("stepmigrate")
            // Migration SQL may hold secrets (CREATE ROLE ... PASSWORD): never log statements.
            .disable_statement_logging();
        Database {
            options,
            connect_timeout,
            pool: Arc::new(OnceLock::new()),
        }
    }

    /// A connection from the pool (opened if needed), failing within the connect timeout
    /// with the host named.
    pub async fn connect(&self) -> Result<Connection, Error> {
        let pool = self.pool.get_or_init(|| {
            PgPoolOptions::new()
                .max_connections(4)
                .min_connections(0)
                .acquire_timeout(self.connect_timeout)
                .idle_timeout(Duration::from_secs(300))
                .connect_lazy_with(self.options.clone())
        });
        if pool.size() == 0 {
            self.probe().await?;
        }
        match pool.acquire().await {
            Ok(conn) => Ok(conn),
            // The pool retries a refused connection until its deadline and then says only
            // that it timed out: one direct attempt tells why.
            Err(sqlx::Error::PoolTimedOut) => Err(self.diagnose().await),
            Err(e) => Err(Error::ConnectionFailed {
                target: self.to_string(),
                reason: describe(&e),
            }),
        }
    }

    /// The pool retries a refused connection until its deadline (a server still starting);
    /// a runner wants to hear at once that nothing listens. One TCP connect tells.
    async fn probe(&self) -> Result<(), Error> {
        let host = self.options.get_host();
        if host.starts_with('/') {
            return Ok(()); // a Unix socket directory: nothing to probe cheaply
        }
        let connecting = tokio::net::TcpStream::connect((host, self.options.get_port()));
        match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                Err(Error::ConnectionFailed {
                    target: self.to_string(),
                    reason: format!("{e}: is PostgreSQL running and listening there?"),
                })
            }
            // Anything else (a timeout, a name that does not resolve) the real connect reports.
            _ => Ok(()),
        }
    }

    async fn diagnose(&self) -> Error {
        let connecting = self.options.connect();
        match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(_)) => Error::ConnectionFailed {
                target: self.to_string(),
                reason: format!("no connection became available within {} s", self.connect_timeout.as_secs_f32()),
            },
            Ok(Err(e)) => Error::ConnectionFailed { target: self.to_string(), reason: describe(&e) },
            Err(_) => Error::ConnectionFailed {
                target: self.to_string(),
                reason: format!(
                    "no answer within {} s (STEPMIGRATE_CONNECT_TIMEOUT); check the host, port, security group and that the server is up",
                    self.connect_timeout.as_secs_f32()
                ),
            },
        }
    }

    /// The database's name, for metrics and messages.
    pub fn name(&self) -> &str {
        self.options.get_database().unwrap_or("postgres")
    }
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}/{} as {}",
            self.options.get_host(),
            self.options.get_port(),
            self.name(),
            self.options.get_username()
        )
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Database({self})")
    }
}

fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
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
        assert_eq!(shown, "db.example.com:6543/tutor as app");
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
        let err = Database::from_url("", "DATABASE_URL", Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL: empty"), "{err}");
    }
}
