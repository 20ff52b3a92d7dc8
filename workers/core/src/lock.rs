//! The runners' mutual exclusion: a session-level advisory lock, taken by polling
//! `pg_try_advisory_lock` on a connection of its own. A runner never waits inside
//! PostgreSQL: a backend blocked in `pg_advisory_lock` holds a snapshot that
//! `CREATE INDEX CONCURRENTLY` waits for, which deadlocks the runner that holds the lock
//! (flyway#1654, golang-migrate#960).
//!
//! **The build lock.** Every `no-transaction` migration's session claims a second,
//! per-migration *build lock* (a session lock keyed on the ledger and the version) before its
//! `started` event commits and lets go of it once its outcome is recorded. It lives exactly as
//! long as the session running the statements, which outlives a killed client: while it is
//! held, the dirty row is still changing and `resolve` refuses to settle it.
//!
//! **A long after-deploy build yields the migration lock.** A `no-transaction` migration of
//! the after-deploy chain (an index built concurrently for hours, in an ECS task) would
//! otherwise hold the migration lock for as long as it builds, and every deploy meanwhile
//! would wait for it and fail. Under its build lock its runner releases the migration lock for
//! the build ([`MigrationLock::yield_while`]), takes it again (polling, as ever) and records
//! the outcome under it, and only then lets go of the build lock. Why that keeps the
//! invariants:
//! - *Never two runners on one migration.* Its row is dirty from the `started` event on, and
//!   every guard refuses a dirty migration; the build lock only tells the plans that this
//!   dirty row is a build at work ([`builds_in_progress`]), never that it may run again. It
//!   lives exactly as long as the building session: a task killed, a backend ended, and the
//!   row is plainly dirty again, for an operator to resolve.
//! - *In order.* Only the after-deploy chain yields, which may run after newer migrations
//!   anyway; the guard's predecessor passes over that chain, so nothing that requires the
//!   build can be applied before its `applied` event (and the plans leave such migrations to
//!   the runner at work).
//! - *Never a plan from a stale state.* The ledger still changes only under the migration
//!   lock: the build's outcome is recorded once the lock is taken again, and the runner plans
//!   again from the ledger before it applies anything after the build.

use std::future::Future;
use std::time::{Duration, Instant};

use rand::Rng;
use sqlx::PgConnection;

use crate::db::Connection;
use crate::error::Error;
use crate::ledger::LedgerSchema;

// The key is the ledger's schema: one lock per ledger (`schema_migrations_guard` checks the
// same key, by the holder's backend).
const TRY_LOCK: &str = "SELECT pg_try_advisory_lock(hashtextextended('stepmigrate.runner.' || $1, 0)), pg_backend_pid()";
const UNLOCK: &str = "SELECT pg_advisory_unlock(hashtextextended('stepmigrate.runner.' || $1, 0))";

/// The sessions of this database other than this one that hold the int8 advisory lock `key`
/// (an SQL expression), as a `FROM ... WHERE` over `pg_locks l`. pg_locks shows such a key as
/// its high half in `classid` and its low half in `objid`, `objsubid` 1.
fn holders_of(key: &str) -> String {
    format!(
        "FROM pg_catalog.pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
         AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) \
         AND ((l.classid::bigint << 32) | l.objid::bigint) = {key} AND l.pid <> pg_backend_pid()"
    )
}

/// The transaction-scoped lock every migration's guard takes (`schema_migrations_guard`):
/// its holder is a session inside a migration's transaction on the ledger `$1`.
const APPLY_KEY: &str = "hashtextextended('stepmigrate.apply.' || $1, 0)";

/// A build lock's key: the ledger's schema (`$1`) and the migration's version (an SQL
/// expression).
fn build_key(version: &str) -> String {
    format!("hashtextextended('stepmigrate.build.' || $1 || '.' || {version}, 0)")
}

// The sessions in the way of `$1` (backends of this process): those that `pg_blocking_pids`
// names for a lock one of them waits for, and, with a ledger schema `$2`, those that hold or
// queue for an ACCESS EXCLUSIVE lock (the one mode a read conflicts with) on one of the
// ledger's relations (`schema_migration*`, not the application's tables beside it): a wait
// that timed out waits no more, and only that second part still finds who was in its way.
// Never the query text: it may hold a secret.
const BLOCKERS: &str = "WITH ours AS (SELECT unnest($1::int[]) AS pid),
     blocking AS (
         SELECT b.pid AS holder, w.relation
         FROM pg_catalog.pg_locks w CROSS JOIN LATERAL unnest(pg_catalog.pg_blocking_pids(w.pid)) AS b(pid)
         WHERE NOT w.granted AND w.pid IN (SELECT pid FROM ours)),
     ledger AS (
         SELECT l.pid AS holder, l.relation
         FROM pg_catalog.pg_locks l
         JOIN pg_catalog.pg_class c ON c.oid = l.relation
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock'
           AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
           AND n.nspname = $2 AND c.relname LIKE 'schema\\_migration%'
           AND l.pid NOT IN (SELECT pid FROM ours) AND l.pid <> pg_backend_pid()),
     found AS (SELECT * FROM blocking UNION SELECT * FROM ledger)
SELECT coalesce(format('%I.%I', n.nspname, c.relname), 'a row or transaction')::pg_catalog.text,
       a.pid, coalesce(a.application_name, '')::pg_catalog.text, coalesce(a.state, 'unknown')::pg_catalog.text,
       coalesce(extract(epoch FROM now() - coalesce(a.xact_start, a.backend_start)), 0)::pg_catalog.int8
FROM found f
JOIN pg_catalog.pg_stat_activity a ON a.pid = f.holder
LEFT JOIN pg_catalog.pg_class c ON c.oid = f.relation
LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
ORDER BY 2, 1";

/// A session in the way of one of the runner's: the relation it locks (or queues for ahead
/// of the runner) and who it is, without its query.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LockHolder {
    /// Schema-qualified, or `a row or transaction` for a lock that is not a relation's.
    pub relation: String,
    pub pid: i32,
    pub application_name: String,
    /// As `pg_stat_activity` has it: `idle in transaction`, `active`, ...
    pub state: String,
    /// How long its transaction has been open (its session, outside one).
    pub seconds: u64,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is locked by backend {} (application_name {:?}, {}, its transaction open for {} s)",
            self.relation, self.pid, self.application_name, self.state, self.seconds
        )
    }
}

/// The sessions in the way of `ours` (see `BLOCKERS`); `ledger_schema` adds those that lock
/// the ledger against reading.
pub async fn blockers(
    conn: &mut PgConnection,
    ours: &[i32],
    ledger_schema: Option<&str>,
) -> Result<Vec<LockHolder>, Error> {
    let rows: Vec<(String, i32, String, String, i64)> = sqlx::query_as(BLOCKERS)
        .bind(ours)
        .bind(ledger_schema)
        .fetch_all(conn)
        .await
        .map_err(|e| Error::database("looking for the sessions in the way", e))?;
    Ok(rows
        .into_iter()
        .map(
            |(relation, pid, application_name, state, seconds)| LockHolder {
                relation,
                pid,
                application_name,
                state,
                seconds: seconds.max(0) as u64,
            },
        )
        .collect())
}

/// The held migration lock: see [`MigrationLock::hold`]. Dropped unreleased (a panic, a
/// release that failed), its session is closed rather than returned to the pool, which
/// releases the lock too.
pub struct MigrationLock {
    // Behind a mutex so that a build can yield the lock through the shared reference the
    // apply loop holds; never held across an await (the session is taken out and put back).
    conn: std::sync::Mutex<Option<Connection>>,
    key: String,
    backend_pid: i32,
    /// The wait it was taken with: also the wait to take it back after a yield.
    wait: Duration,
    released: bool,
}

impl Drop for MigrationLock {
    fn drop(&mut self) {
        if !self.released {
            if let Some(conn) = self.session().as_mut() {
                conn.close_on_drop();
            }
        }
    }
}

/// The longest a waiting runner sleeps between two tries of the lock.
pub const POLL_CAP: Duration = Duration::from_millis(500);

/// How long a runner that lets go of the lock for a moment (a long batch migration between
/// two budgets) waits before it tries again: longer than a waiting runner sleeps between its
/// tries, so that one finds the lock free and takes it.
pub const HANDOVER: Duration = Duration::from_millis(2 * POLL_CAP.as_millis() as u64);

/// Exponential back-off with jitter, from 10 ms up to `cap`.
pub fn backoff(attempt: u32, cap: Duration) -> Duration {
    let base = Duration::from_millis(10).saturating_mul(1u32 << attempt.min(16));
    let ceiling = base.min(cap);
    let half = ceiling / 2;
    half + Duration::from_micros(rand::thread_rng().gen_range(0..=half.as_micros().max(1) as u64))
}

impl MigrationLock {
    /// Takes the lock on `conn`, polling until `wait` has passed. `on_wait` is told once
    /// when another runner holds it, so the caller can say so.
    pub async fn acquire(
        mut conn: Connection,
        schema: &LedgerSchema,
        wait: Duration,
        on_wait: impl FnMut(),
    ) -> Result<MigrationLock, Error> {
        let key = schema.name().to_owned();
        let backend_pid = poll(&mut conn, &key, wait, on_wait).await?;
        Ok(MigrationLock {
            conn: std::sync::Mutex::new(Some(conn)),
            key,
            backend_pid,
            wait,
            released: false,
        })
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Option<Connection>> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Releases the lock while `work` runs (a long after-deploy build: see the module's
    /// docs), then takes it back, polling up to the wait it was first taken with. `work`'s
    /// result comes back only with the lock held again; past the wait,
    /// [`Error::LockNotAcquired`] (the caller's work is then unrecorded).
    pub async fn yield_while<T>(&self, work: impl Future<Output = T>) -> Result<T, Error> {
        let mut conn = self.session().take().ok_or_else(|| {
            Error::database(
                "yielding the migration lock",
                sqlx::Error::Protocol("the lock's session is in use".into()),
            )
        })?;
        let outcome = async {
            sqlx::query(UNLOCK)
                .bind(&self.key)
                .execute(&mut *conn)
                .await
                .map_err(|e| Error::database("releasing the migration lock for a build", e))?;
            tracing::info!("released the migration lock while an after-deploy build runs");
            let result = work.await;
            poll(&mut conn, &self.key, self.wait, || {
                tracing::info!("the build ended; waiting for the migration lock to record it")
            })
            .await?;
            Ok(result)
        }
        .await;
        *self.session() = Some(conn);
        outcome
    }

    /// The backend that holds the lock: each migration's guard checks it still does, so a
    /// lost lock session (terminated, timed out) stops the run before the next migration.
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// Runs `work` holding the lock, then releases it, whatever `work` returned: the one way
    /// the runner holds it, so no path forgets to let go. A release that fails (the session
    /// is gone) closes the session instead, which releases the lock just as well.
    pub async fn hold<T>(
        mut self,
        work: impl AsyncFnOnce(&MigrationLock) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let result = work(&self).await;
        let session = self.session().take();
        if let Some(mut conn) = session {
            match sqlx::query(UNLOCK)
                .bind(&self.key)
                .execute(&mut *conn)
                .await
            {
                Ok(_) => self.released = true,
                Err(e) => {
                    tracing::warn!(error = %e, "could not release the migration lock; closing its session");
                    conn.close_on_drop();
                }
            }
        }
        result
    }
}

/// Polls `pg_try_advisory_lock` for the migration lock `key` on `conn` until `wait` has
/// passed; the backend's pid once it holds it. `on_wait` is told once, at the first refusal.
async fn poll(
    conn: &mut PgConnection,
    key: &str,
    wait: Duration,
    mut on_wait: impl FnMut(),
) -> Result<i32, Error> {
    let started = Instant::now();
    let mut attempt = 0;
    loop {
        let (got, backend_pid): (bool, i32) = sqlx::query_as(TRY_LOCK)
            .bind(key)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| Error::database("taking the migration lock", e))?;
        if got {
            return Ok(backend_pid);
        }
        if attempt == 0 {
            on_wait();
        }
        let elapsed = started.elapsed();
        if elapsed >= wait {
            return Err(Error::LockNotAcquired { waited: elapsed });
        }
        tokio::time::sleep(backoff(attempt, POLL_CAP).min(wait - elapsed)).await;
        attempt += 1;
    }
}

/// Claims the build lock of `version` on `conn`, the session that runs the migration: false
/// if another session holds it (that runner is applying it). Never waits.
pub async fn claim_build(
    conn: &mut PgConnection,
    schema: &LedgerSchema,
    version: &str,
) -> Result<bool, Error> {
    sqlx::query_scalar(&format!("SELECT pg_try_advisory_lock({})", build_key("$2")))
        .bind(schema.name())
        .bind(version)
        .fetch_one(conn)
        .await
        .map_err(|e| Error::database("claiming the migration's build lock", e))
}

/// Lets go of the build lock of `version` that `conn` holds (see [`claim_build`]).
pub async fn release_build(
    conn: &mut PgConnection,
    schema: &LedgerSchema,
    version: &str,
) -> Result<(), Error> {
    sqlx::query(&format!("SELECT pg_advisory_unlock({})", build_key("$2")))
        .bind(schema.name())
        .bind(version)
        .execute(conn)
        .await
        .map(drop)
        .map_err(|e| Error::database("releasing the migration's build lock", e))
}

/// Of the `dirty` versions, those whose build lock another session holds: a session is
/// running each one's statements right now (an after-deploy build that yielded the migration
/// lock, or a killed runner's backend running its statement on), so the row is still
/// changing. A session lock dies with its session: once it ends, the row is plainly dirty.
pub async fn builds_in_progress(
    conn: &mut PgConnection,
    schema: &LedgerSchema,
    dirty: &[String],
) -> Result<std::collections::BTreeSet<String>, Error> {
    if dirty.is_empty() {
        return Ok(Default::default());
    }
    let found: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT v FROM unnest($2::pg_catalog.text[]) v WHERE EXISTS (SELECT 1 {})",
        holders_of(&build_key("v"))
    ))
    .bind(schema.name())
    .bind(dirty)
    .fetch_all(conn)
    .await
    .map_err(|e| Error::database("looking for builds in progress", e))?;
    Ok(found.into_iter().collect())
}

/// The backend inside a migration's transaction on this ledger right now, if any.
pub async fn migration_in_flight(
    conn: &mut PgConnection,
    schema: &LedgerSchema,
) -> Result<Option<i32>, Error> {
    sqlx::query_scalar(&format!("SELECT l.pid {} LIMIT 1", holders_of(APPLY_KEY)))
        .bind(schema.name())
        .fetch_optional(conn)
        .await
        .map_err(|e| Error::database("looking for a migration in flight", e))
}

/// Waits (polling, up to `wait`) until no session is inside a migration's transaction on this
/// ledger, so that the ledger read next is final. A killed or interrupted runner's backend
/// runs its migration on and commits it, with its ledger event, seconds later and outside any
/// lock: a plan (a rollback's above all) made from the ledger before that commit is made from
/// a state that is about to change. `up` meets the same backend in its guard (busy, retried);
/// every command that reads the ledger as final waits here first. `on_wait` is told once,
/// with the backend's pid. Past `wait`: [`Error::MigrationInFlight`].
pub async fn wait_for_migration_in_flight(
    conn: &mut PgConnection,
    schema: &LedgerSchema,
    wait: Duration,
    mut on_wait: impl FnMut(i32),
) -> Result<(), Error> {
    let started = Instant::now();
    let mut attempt = 0;
    while let Some(pid) = migration_in_flight(conn, schema).await? {
        if attempt == 0 {
            tracing::info!(
                pid,
                "a migration's transaction is open in another backend; waiting for it to end"
            );
            on_wait(pid);
        }
        let elapsed = started.elapsed();
        if elapsed >= wait {
            return Err(Error::MigrationInFlight {
                pid,
                waited: elapsed,
            });
        }
        tokio::time::sleep(backoff(attempt, POLL_CAP).min(wait - elapsed)).await;
        attempt += 1;
    }
    Ok(())
}

/// Up to 1 s, 2 s, 4 s ... (capped at 30 s; each with jitter in its upper half) between tries
/// of a migration that hit its lock_timeout: the application's queries get the table between
/// tries.
pub(crate) fn lock_retry_delay(attempt: u32) -> Duration {
    let ceiling = Duration::from_secs(1)
        .saturating_mul(1 << attempt.saturating_sub(1).min(5))
        .min(Duration::from_secs(30));
    let half = ceiling / 2;
    half + half.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_retries_wait_up_to_one_two_four_seconds() {
        for (attempt, ceiling) in [(1, 1000), (2, 2000), (3, 4000), (6, 30_000), (40, 30_000)] {
            let d = lock_retry_delay(attempt).as_millis() as u64;
            assert!(d >= ceiling / 2 && d <= ceiling, "{attempt}: {d} ms");
        }
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let cap = Duration::from_millis(500);
        for attempt in 0..20 {
            let d = backoff(attempt, cap);
            assert!(d <= cap, "{d:?}");
            assert!(d >= Duration::from_millis(5).min(cap / 2), "{d:?}");
        }
        assert!(backoff(10, cap) >= cap / 2);
    }
}
