//! The runners' mutual exclusion: a session-level advisory lock, taken by polling
//! `pg_try_advisory_lock` on a connection of its own. A runner never waits inside
//! PostgreSQL: a backend blocked in `pg_advisory_lock` holds a snapshot that
//! `CREATE INDEX CONCURRENTLY` waits for, which deadlocks the runner that holds the lock
//! (flyway#1654, golang-migrate#960).

use std::time::{Duration, Instant};

use rand::Rng;
use sqlx::PgConnection;

use crate::db::Connection;
use crate::error::Error;
use crate::ledger::LedgerSchema;

// The key is the ledger's schema: one lock per ledger (`schema_migrations_guard` checks the
// same key, by the holder's backend).
const TRY_LOCK: &str = "SELECT pg_try_advisory_lock(hashtextextended('stepmigrate.runner.' || $1, 0)), pg_backend_pid()";
// Who holds the transaction-scoped lock that every migration's guard takes
// (`schema_migrations_guard`): a session inside a migration's transaction. An int8 advisory
// key shows in pg_locks as its high half in `classid` and its low half in `objid`.
const IN_FLIGHT: &str = "SELECT l.pid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended('stepmigrate.apply.' || $1, 0) AND l.pid <> pg_backend_pid() LIMIT 1";
const UNLOCK: &str = "SELECT pg_advisory_unlock(hashtextextended('stepmigrate.runner.' || $1, 0))";

// pg_locks shows a bigint advisory key as classid (its high 32 bits) and objid (its low 32
// bits), objsubid 1 (https://www.postgresql.org/docs/current/view-pg-locks.html).
const HELD_BY_ANOTHER: &str = "SELECT EXISTS (
    SELECT 1 FROM pg_locks l,
        (SELECT hashtextextended('stepmigrate.runner.' || $1, 0) AS k) key
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid::bigint = ((key.k >> 32) & 4294967295)
      AND l.objid::bigint = (key.k & 4294967295)
      AND l.pid <> pg_backend_pid())";

// The sessions in the way of `$1` (backends of this process): those that `pg_blocking_pids`
// names for a lock one of them waits for, and, with a ledger schema `$2`, those that hold or
// queue for an ACCESS EXCLUSIVE lock (the one mode a read conflicts with) on one of the
// ledger's relations (`schema_migration*`, not the application's tables beside it): a wait that timed out waits no more, and only that second part still finds who was in
// its way. Never the query text: it may hold a secret.
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
SELECT coalesce(format('%I.%I', n.nspname, c.relname), 'a row or transaction')::text,
       a.pid, coalesce(a.application_name, '')::text, coalesce(a.state, 'unknown')::text,
       coalesce(extract(epoch FROM now() - coalesce(a.xact_start, a.backend_start)), 0)::int8
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

/// Whether another session holds the migration lock of `schema` now: a runner at work. A
/// dirty row seen without the lock may be that runner's migration in progress (a
/// no-transaction migration is dirty until it ends), not one left half done.
pub async fn held_by_another(
    conn: &mut sqlx::PgConnection,
    schema: &LedgerSchema,
) -> Result<bool, Error> {
    sqlx::query_scalar(HELD_BY_ANOTHER)
        .bind(schema.name())
        .fetch_one(conn)
        .await
        .map_err(|e| Error::database("reading whether another runner holds the migration lock", e))
}

/// The held migration lock: see [`MigrationLock::hold`]. Dropped unreleased (a panic, a
/// release that failed), its session is closed rather than returned to the pool, which
/// releases the lock too.
pub struct MigrationLock {
    conn: Connection,
    key: String,
    backend_pid: i32,
    released: bool,
}

impl Drop for MigrationLock {
    fn drop(&mut self) {
        if !self.released {
            self.conn.close_on_drop();
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
        mut on_wait: impl FnMut(),
    ) -> Result<MigrationLock, Error> {
        let started = Instant::now();
        let mut attempt = 0;
        let key = schema.name().to_owned();
        loop {
            let (got, backend_pid): (bool, i32) = sqlx::query_as(TRY_LOCK)
                .bind(&key)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| Error::database("taking the migration lock", e))?;
            if got {
                return Ok(MigrationLock {
                    conn,
                    key,
                    backend_pid,
                    released: false,
                });
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
        match sqlx::query(UNLOCK)
            .bind(&self.key)
            .execute(&mut *self.conn)
            .await
        {
            Ok(_) => self.released = true,
            Err(e) => {
                tracing::warn!(error = %e, "could not release the migration lock; closing its session")
            }
        }
        result
    }
}

/// The backend inside a migration's transaction on this ledger right now, if any.
pub async fn migration_in_flight(
    conn: &mut PgConnection,
    schema: &LedgerSchema,
) -> Result<Option<i32>, Error> {
    sqlx::query_scalar(IN_FLIGHT)
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
        tokio::time::sleep(backoff(attempt, Duration::from_millis(500)).min(wait - elapsed)).await;
        attempt += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
