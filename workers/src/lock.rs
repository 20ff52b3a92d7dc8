//! The runners' mutual exclusion: a session-level advisory lock, taken by polling
//! `pg_try_advisory_lock` on a connection of its own. A runner never waits inside
//! PostgreSQL: a backend blocked in `pg_advisory_lock` holds a snapshot that
//! `CREATE INDEX CONCURRENTLY` waits for, which deadlocks the runner that holds the lock
//! (flyway#1654, golang-migrate#960).

use std::time::{Duration, Instant};

use rand::Rng;

use crate::db::Connection;
use crate::error::Error;

const TRY_LOCK: &str = "SELECT pg_try_advisory_lock(hashtextextended('stepmigrate.runner.' || coalesce(current_schema(), ''), 0))";
const UNLOCK: &str = "SELECT pg_advisory_unlock(hashtextextended('stepmigrate.runner.' || coalesce(current_schema(), ''), 0))";

/// The held migration lock. Dropped without [`MigrationLock::release`] (an error path), its
/// session is closed rather than returned to the pool, which releases the lock too.
pub struct MigrationLock {
    conn: Connection,
    released: bool,
}

impl Drop for MigrationLock {
    fn drop(&mut self) {
        if !self.released {
            self.conn.close_on_drop();
        }
    }
}

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
        wait: Duration,
        mut on_wait: impl FnMut(),
    ) -> Result<MigrationLock, Error> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            let (got,): (bool,) = sqlx::query_as(TRY_LOCK)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| Error::database("taking the migration lock", e))?;
            if got {
                return Ok(MigrationLock {
                    conn,
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
            tokio::time::sleep(backoff(attempt, Duration::from_millis(500)).min(wait - elapsed))
                .await;
            attempt += 1;
        }
    }

    pub async fn release(mut self) -> Result<(), Error> {
        sqlx::query(UNLOCK)
            .execute(&mut *self.conn)
            .await
            .map_err(|e| Error::database("releasing the migration lock", e))?;
        self.released = true;
        Ok(())
    }
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
