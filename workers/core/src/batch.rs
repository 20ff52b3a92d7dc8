//! Batch migrations: one idempotent statement that changes at most `batch_size` rows (its
//! `:batch_size`), run again and again until a batch changes no row. Each batch commits in
//! its own short transaction together with a `batch` event carrying the totals so far, so a
//! concurrent writer waits at most one batch for a row, and an interrupted run resumes from
//! the ledger: the batches its events record are never run again. The batch that finds
//! nothing left commits the `applied` event. A batch cut short (a killed runner, a
//! terminated backend) rolls back whole with its event; the statement's idempotence (it
//! selects only rows not done yet) is what makes running it again right. A statement that
//! is not (it selects rows it already did) is stopped by the runaway guard
//! ([`crate::runaway`]), judged after each committed batch; a failed batch migration's
//! `failed` event carries the totals its committed batches reached.

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::postgres::{PgDatabaseError, PgErrorPosition};
use sqlx::PgConnection;

use crate::apply::{self, Attempt, Outcome, RESET_SESSION};
use crate::config::pg_interval;
use crate::error::Error;
use crate::ledger::{self, BatchProgress, EventKind, LedgerSchema};
use crate::migration::{Migration, Version, DEFAULT_BATCH_SIZE};
use crate::runaway::{self, Guard};
use crate::sql::{self, quote_literal};

/// Where a batch run is after a batch, for progress output and metrics.
#[derive(Debug, Clone, Serialize)]
pub struct BatchReport {
    /// The totals across runs, as the ledger now records them.
    pub progress: BatchProgress,
    /// Batches and rows of this run alone.
    pub run_batches: u64,
    pub run_rows: u64,
    /// Since this run's first batch began.
    pub elapsed_ms: u64,
    /// The batch's duration.
    pub batch_ms: u64,
    /// PostgreSQL's estimate of the rows of the table the statement changes
    /// (`pg_class.reltuples`), when the statement names one and it has been analyzed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table_rows_estimate: Option<u64>,
}

impl BatchReport {
    /// Rows per second in this run.
    pub fn rate(&self) -> Option<f64> {
        (self.elapsed_ms > 0 && self.run_rows > 0)
            .then(|| self.run_rows as f64 * 1000.0 / self.elapsed_ms as f64)
    }

    /// Rows left and the time they should take at this run's rate, when the table's size is
    /// known: an estimate (the statement may change only some of its rows).
    pub fn remaining(&self) -> Option<(u64, Duration)> {
        let estimate = self.table_rows_estimate?;
        let left = estimate.saturating_sub(self.progress.rows);
        let rate = self.rate()?;
        Some((left, Duration::from_secs_f64(left as f64 / rate)))
    }
}

/// The table a batch statement changes, as written (`UPDATE [ONLY] name`, `DELETE FROM
/// [ONLY] name`, `INSERT INTO name`, `MERGE INTO name`): for the progress estimate only, so a
/// statement it cannot read (a `WITH` first) just has no estimate.
pub fn target_table(statement: &str) -> Option<String> {
    let mut words = sql::Tokens(statement);
    let verb = words.next()?.to_ascii_uppercase();
    let mut next_is = |expected: &str| {
        words
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case(expected))
    };
    let introduced = match verb.as_str() {
        "UPDATE" => true,
        "DELETE" => next_is("FROM"),
        "INSERT" | "MERGE" => next_is("INTO"),
        _ => false,
    };
    if !introduced {
        return None;
    }
    let mut table = words.next()?;
    if table.eq_ignore_ascii_case("ONLY") {
        table = words.next()?;
    }
    table
        .starts_with(|c: char| c == '"' || c == '_' || c.is_alphanumeric())
        .then(|| table.to_owned())
}

/// The batch migration's totals so far: the latest `batch` event since it was last made
/// pending from scratch (applied and deleted, rolled back, resolved). A failed batch leaves
/// the totals as they were: the run resumes after it.
pub async fn recorded_progress(
    conn: &mut PgConnection,
    schema: &LedgerSchema,
    version: &str,
) -> Result<(BatchProgress, u64), Error> {
    let events = schema.qualify("schema_migration_events");
    let row: (Option<serde_json::Value>, i64) = sqlx::query_as(&format!(
        "SELECT {},
                (SELECT coalesce(sum(e.execution_time_ms), 0)::bigint FROM {events} e WHERE e.kind = 'batch' AND {})",
        ledger::batch_progress_sql(&events, "$1"),
        ledger::since_reset_sql(&events, "e", "$1"),
    ))
    .bind(version)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| Error::database(format!("reading the progress of {version}"), e))?;
    let progress = row
        .0
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    Ok((progress, row.1.max(0) as u64))
}

/// The runner's own stop of a batch migration (a runaway, a write it cannot count), at its
/// statement.
fn stopped(m: &Migration, error: crate::error::SqlError, notices: Vec<String>) -> Outcome {
    let mut failure = apply::failure_of(m, error);
    failure.notices = notices;
    if let Some(s) = sql::split_statements(&m.sql).first() {
        failure.error.line = Some(s.line);
        failure.error.statement = Some(s.text.to_owned());
    }
    Outcome::Failed {
        failure: Box::new(failure),
    }
}

/// Refuses to go on with batches committed from another version of the file (another
/// runner's, or the file edited since an interruption): finished with other SQL, the rows
/// would hold both. After a failure the edit is the fix, and goes on.
async fn ensure_same_file(conn: &mut PgConnection, attempt: &Attempt<'_>) -> Result<(), Error> {
    let m = attempt.migration;
    match file_batches_hold_to(conn, attempt.schema, &m.version).await? {
        Some(ran) if ran_from_another_file(&ran, m) => {
            Err(ran_from_another_file_error(&m.path, &ran, &m.checksum))
        }
        _ => Ok(()),
    }
}

/// The checksum of the file the committed batches of `version` hold to: after a failure the
/// file may be the fix (`up` retries a failed migration once its file is fixed), so only
/// batches still going on, or interrupted, hold to their version.
pub(crate) async fn file_batches_hold_to(
    conn: &mut PgConnection,
    schema: &LedgerSchema,
    version: &Version,
) -> Result<Option<String>, Error> {
    let events = schema.qualify("schema_migration_events");
    Ok(sqlx::query_scalar(&format!(
        "SELECT CASE WHEN e.kind = 'batch' THEN e.checksum::text END FROM {events} e
         WHERE e.kind IN ('batch', 'failed') AND {} ORDER BY e.id DESC LIMIT 1",
        ledger::since_reset_sql(&events, "e", "$1"),
    ))
    .bind(version.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| Error::database(format!("reading the batches of {version}"), e))?
    .flatten())
}

/// Whether batches that ran with checksum `ran` ran from SQL other than `m`'s (a change of
/// line endings or a byte-order mark alone is the same SQL, as for the ledger's drift).
pub fn ran_from_another_file(ran: &str, m: &Migration) -> bool {
    !ran.eq_ignore_ascii_case(&m.checksum)
        && !crate::migration::differs_only_in_line_endings(m.text_as_written().as_bytes(), ran)
}

/// The refusal to go on with batches from another version of their file.
pub fn ran_from_another_file_error(path: &std::path::Path, ran: &str, now: &str) -> Error {
    Error::InvalidInput(format!(
        "{}: its committed batches ran from another version of its file (checksum {ran}; this one's is {now}): going on with other SQL would leave rows of both; run the version they ran from (or roll them back with its down file)",
        path.display()
    ))
}

/// What a batch run is allowed and told.
pub struct BatchRun<'a> {
    /// Stop before a batch that would likely end after this instant (a Lambda's time
    /// budget); `None`: until done.
    pub deadline: Option<Instant>,
    /// How many lock timeouts in a row a batch may hit before the migration fails.
    pub lock_retries: u32,
    pub observe: &'a mut dyn FnMut(BatchEvent<'_>),
}

/// What a batch run tells its caller as it goes.
pub enum BatchEvent<'a> {
    /// A batch committed.
    Committed(&'a BatchReport),
    /// A batch hit its lock_timeout and is tried again after the delay.
    Retrying { attempt: u32, delay: Duration },
}

/// Runs the batches of `attempt`'s migration (see the module's documentation).
pub async fn run(
    conn: &mut PgConnection,
    attempt: &Attempt<'_>,
    run: BatchRun<'_>,
) -> Result<Outcome, Error> {
    let m = attempt.migration;
    let (mut progress, mut execution_ms) =
        recorded_progress(conn, attempt.schema, m.version.as_str()).await?;
    ensure_same_file(conn, attempt).await?;
    let statement = statement_text(m);
    let table = target_table(&statement);
    let statement_target = table.clone();
    let table_rows_estimate = match &table {
        Some(table) => estimate_rows(conn, table).await,
        None => None,
    };
    let mut guard = Guard::new(
        conn,
        attempt.schema,
        m.version.as_str(),
        &m.checksum,
        batch_size(m),
        &statement,
    )
    .await?;
    let pause = m.directives.pause.unwrap_or_default();
    let target = runaway::Target::of(conn, table.as_deref()).await;
    let counted_changes = sql::split_statements(&m.sql)
        .first()
        .map(|s| runaway::Counted::of(s, &target))
        .unwrap_or(runaway::Counted {
            inserts: false,
            updates_and_deletes: false,
            only: None,
        });
    let inserts = counted_changes.inserts;
    // An INSERT into a view: where its rows go (an INSTEAD OF trigger's table, a foreign
    // server) no counter may see, so its count, when it says none, is checked against the
    // rows the view holds. (A foreign table's own count is right: postgres_fdw reports it.)
    let mut counted = match (inserts, &target, table) {
        (true, runaway::Target::View, Some(view)) => counted_view(conn, view).await,
        _ => None,
    };
    let mut execution = Duration::from_millis(execution_ms);
    let mut notices: Vec<String> = Vec::new();
    let started = Instant::now();
    let (mut run_batches, mut run_rows) = (0u64, 0u64);
    let mut last_batch = Duration::ZERO;
    let mut lock_timeouts = 0u32;
    loop {
        if let Some(deadline) = run.deadline {
            // Room for one more batch like the last, and half as much again.
            if Instant::now() + last_batch.mul_f64(1.5) >= deadline {
                return Ok(Outcome::Unfinished { progress });
            }
        }
        let batch_started = Instant::now();
        let (result, raised) = crate::notices::capture(one_batch(conn, attempt)).await;
        keep_notices(&mut notices, raised);
        let (rows, effect) = match result? {
            Ok(done) => done,
            Err(Outcome::Failed { failure })
                if failure.error.is_lock_timeout() && lock_timeouts < run.lock_retries =>
            {
                lock_timeouts += 1;
                let delay = crate::lock::lock_retry_delay(lock_timeouts);
                tracing::warn!(
                    reason = "lock_timeout",
                    delay_ms = delay.as_millis() as u64,
                    "retrying the batch"
                );
                (run.observe)(BatchEvent::Retrying {
                    attempt: lock_timeouts,
                    delay,
                });
                tokio::time::sleep(delay).await;
                continue;
            }
            Err(Outcome::Failed { mut failure }) => {
                failure.notices = notices;
                return Ok(Outcome::Failed { failure });
            }
            Err(outcome) => return Ok(outcome),
        };
        // A statement whose count says no row while it deleted or updated some (its final
        // command's count, after a `WITH` that changes rows), or an INSERT whose rows a
        // trigger stored elsewhere, is not done: those rows count.
        let rows = match (&effect, rows) {
            (Some((before, after)), 0) => {
                runaway::changed_in_place(before, after, &counted_changes)
            }
            _ => rows,
        };
        // A rule may turn the INSERT into an UPDATE or a DELETE, which moves rows out of the
        // view: a change either way is progress.
        let rows = match &mut counted {
            Some((view, last)) => match count_rows(conn, view).await {
                Some(now) => {
                    let changed = (now - *last).unsigned_abs();
                    *last = now;
                    if rows == 0 {
                        changed
                    } else {
                        rows
                    }
                }
                None => rows,
            },
            None => rows,
        };
        // A trigger that stored the rows in a foreign table (its server counts them, not
        // ours): a batch that says it changed nothing may have copied rows, and recording
        // the migration applied would leave the rest undone. Not committed: failed, naming it.
        if rows == 0 {
            if let Some(foreign) = foreign_tables_written(conn, statement_target.as_deref()).await {
                let _ = sqlx::raw_sql(&format!("ROLLBACK;{RESET_SESSION}"))
                    .execute(&mut *conn)
                    .await;
                let error = crate::error::SqlError {
                    sqlstate: RUNAWAY_SQLSTATE.to_owned(),
                    message: format!(
                        "batch {} says it changed no row, but it wrote through the foreign table {foreign} (a trigger's write: the foreign server counts those rows, not this one), so whether rows remain cannot be told; that batch is rolled back and the migration is not recorded applied (write the statement so that its own count tells: INSERT into the foreign table itself, or a view over it)",
                        progress.batches + 1
                    ),
                    ..Default::default()
                };
                return Ok(stopped(m, error, notices));
            }
        }
        lock_timeouts = 0;
        last_batch = batch_started.elapsed();
        let batch_ms = last_batch.as_millis() as u64;
        execution += last_batch;
        execution_ms = execution.as_millis() as u64;
        if rows > 0 {
            progress = BatchProgress {
                batches: progress.batches + 1,
                rows: progress.rows + rows,
                batch_rows: rows,
            };
        }
        let mut event = attempt.event(
            if rows == 0 {
                EventKind::Applied
            } else {
                EventKind::Batch
            },
            Some(if rows == 0 {
                execution_ms.to_string()
            } else {
                batch_ms.to_string()
            }),
            if rows == 0 { &notices } else { &[] },
        );
        event.progress = Some(if rows == 0 {
            BatchProgress {
                batch_rows: 0,
                ..progress
            }
        } else {
            progress
        });
        // Each batch need not wait for the disk: a server crash loses only the newest
        // batches, each whole with its event. The `applied` event does.
        let durability = if rows == 0 {
            ""
        } else {
            "SET LOCAL synchronous_commit = off;"
        };
        // `RESET ALL` would give the pause the server's `idle_session_timeout` back.
        let finish = format!(
            "{durability}{};COMMIT;{RESET_SESSION}{};",
            event.insert_sql(attempt.schema),
            crate::db::KEEP_ALIVE
        );
        if let Err(e) = sqlx::raw_sql(&finish).execute(&mut *conn).await {
            let _ = sqlx::raw_sql(&format!("ROLLBACK;{RESET_SESSION}"))
                .execute(&mut *conn)
                .await;
            return Err(Error::database(
                format!(
                    "recording batch {} of {} (that batch rolled back; the {} before it are committed, and the next run resumes after them)",
                    progress.batches,
                    m.name,
                    progress.batches.saturating_sub(1)
                ),
                e,
            ));
        }
        if rows == 0 {
            tracing::info!(
                batches = progress.batches,
                rows = progress.rows,
                execution_time_ms = execution_ms,
                "applied {}",
                m.name
            );
            return Ok(Outcome::Applied {
                execution_time_ms: execution_ms,
                notices,
                batches: Some(BatchProgress {
                    batch_rows: 0,
                    ..progress
                }),
            });
        }
        run_batches += 1;
        run_rows += rows;
        let report = BatchReport {
            progress,
            run_batches,
            run_rows,
            elapsed_ms: started.elapsed().as_millis() as u64,
            batch_ms,
            table_rows_estimate,
        };
        tracing::info!(
            batch = progress.batches,
            rows = rows,
            total_rows = progress.rows,
            batch_ms,
            "batch committed"
        );
        (run.observe)(BatchEvent::Committed(&report));
        if let Some((before, after)) = &effect {
            guard.observe(conn, before, after).await?;
        }
        if let Some(error) = guard.judge(conn, progress, &limits(attempt)).await? {
            return Ok(stopped(m, error, notices));
        }
        if !pause.is_zero() {
            // A pause that would run past the budget is taken without the migration lock:
            // the runner lets go of it and waits the pause before it takes it again.
            if run
                .deadline
                .is_some_and(|deadline| Instant::now() + pause >= deadline)
            {
                return Ok(Outcome::Unfinished { progress });
            }
            tokio::time::sleep(pause).await;
        }
    }
}

pub use crate::runaway::{RUNAWAY_BATCHES, RUNAWAY_FACTOR, RUNAWAY_SQLSTATE};
/// The notices a batch migration keeps (a trigger may say something for every row).
const KEPT_NOTICES: usize = 100;

fn keep_notices(kept: &mut Vec<String>, raised: Vec<String>) {
    for n in raised {
        if kept.len() < KEPT_NOTICES && !kept.contains(&n) {
            kept.push(n);
        }
    }
}

/// The statement of a batch migration (its one statement, as it runs).
fn statement_text(m: &Migration) -> String {
    sql::split_statements(&m.sql)
        .first()
        .map(|s| s.text.to_owned())
        .unwrap_or_default()
}

/// The `SET LOCAL`s of a batch's transaction: the migration's limits.
fn limits(attempt: &Attempt<'_>) -> String {
    format!(
        "SET LOCAL lock_timeout = '{}';SET LOCAL statement_timeout = '{}';",
        pg_interval(attempt.lock_timeout),
        pg_interval(attempt.statement_timeout),
    )
}

/// What a batch's statement did to the tables: [`runaway::EFFECT_SQL`] before and after it.
type Effect = Option<(String, String)>;

/// One batch, up to its statement: the transaction is left open for its event when it
/// succeeds (the rows it changed, and its effect), and rolled back when it fails (the
/// outcome).
async fn one_batch(
    conn: &mut PgConnection,
    attempt: &Attempt<'_>,
) -> Result<Result<(u64, Effect), Outcome>, Error> {
    use futures_util::TryStreamExt;
    use sqlx::{Column, Row};
    let m = attempt.migration;
    let prefix = format!(
        "BEGIN;{}{};{};\n",
        limits(attempt),
        attempt.guard(),
        runaway::EFFECT_SQL,
    );
    // The newline ends a last line comment; an empty statement after the migration's own
    // semicolon is nothing.
    // Deferred constraints are checked inside the batch (after its effect is read, whose
    // count must stay the statement's): one the batch breaks fails the migration, recorded
    // `failed` with the batches before it, not the runner's COMMIT of its own event.
    let script = format!(
        "{prefix}{}\n;{};SET CONSTRAINTS ALL IMMEDIATE",
        m.sql,
        runaway::EFFECT_SQL
    );
    let (mut count, mut rows) = (0u64, 0u64);
    let mut effects: Vec<String> = Vec::with_capacity(2);
    let sent = {
        let mut results = sqlx::raw_sql(&script).fetch_many(&mut *conn);
        loop {
            match results.try_next().await {
                Ok(Some(sqlx::Either::Left(done))) => count = done.rows_affected(),
                Ok(Some(sqlx::Either::Right(row)))
                    if row
                        .columns()
                        .first()
                        .is_some_and(|c| c.name() == runaway::EFFECT_COLUMN) =>
                {
                    // The statement's count is the one just before the effect after it.
                    if effects.len() == 1 {
                        rows = count;
                    }
                    effects.push(row.try_get::<String, _>(0).unwrap_or_default());
                }
                Ok(Some(sqlx::Either::Right(_))) => {}
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        }
    };
    match sent {
        Ok(()) => {
            let mut effects = effects.into_iter();
            let effect = effects.next().zip(effects.next());
            Ok(Ok((rows, effect)))
        }
        Err(sqlx::Error::Database(db)) => {
            let _ = sqlx::raw_sql(&format!("ROLLBACK;{RESET_SESSION}"))
                .execute(&mut *conn)
                .await;
            let pg = db.try_downcast_ref::<PgDatabaseError>();
            let offset = prefix.chars().count();
            let position = pg.and_then(|e| match e.position() {
                Some(PgErrorPosition::Original(p)) => p.checked_sub(1 + offset).map(|p| (p, 0)),
                _ => None,
            });
            let mut outcome = apply::classify(m, pg, db.message(), db.code().as_deref(), position);
            if let Outcome::Failed { failure } = &mut outcome {
                if let Some(s) = sql::split_statements(&m.sql).first() {
                    failure.error.line.get_or_insert(s.line);
                    failure
                        .error
                        .statement
                        .get_or_insert_with(|| s.text.to_owned());
                }
            }
            Ok(Err(outcome))
        }
        Err(e) => {
            let _ = sqlx::raw_sql(&format!("ROLLBACK;{RESET_SESSION}"))
                .execute(&mut *conn)
                .await;
            Err(Error::database(
                format!(
                    "running a batch of {} (that batch rolled back; the batches before it are committed, and the next run resumes after them)",
                    m.name
                ),
                e,
            ))
        }
    }
}

/// The foreign tables this transaction wrote (it holds `ROW EXCLUSIVE` on them) other than
/// the statement's own target and the tables under it, whose writes its count includes. A
/// target name `to_regclass` cannot read is taken as no foreign table.
async fn foreign_tables_written(conn: &mut PgConnection, target: Option<&str>) -> Option<String> {
    in_savepoint(conn, async |conn| {
        sqlx::query_scalar::<_, Option<String>>(
            "WITH RECURSIVE own(oid) AS (
                 SELECT pg_catalog.to_regclass($1)::oid WHERE pg_catalog.to_regclass($1) IS NOT NULL
                 UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN own ON i.inhparent = own.oid)
             SELECT pg_catalog.string_agg(l.relation::regclass::text, ', ' ORDER BY l.relation::regclass::text)
             FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_class c ON c.oid = l.relation
             WHERE l.pid = pg_catalog.pg_backend_pid() AND l.locktype = 'relation' AND l.mode = 'RowExclusiveLock'
               AND c.relkind = 'f' AND l.relation NOT IN (SELECT oid FROM own)",
        )
        .bind(target)
        .fetch_one(conn)
        .await
    })
    .await
    .flatten()
}

/// `view` (as written in the statement) and the rows it holds, when it can be counted.
async fn counted_view(conn: &mut PgConnection, view: String) -> Option<(String, i64)> {
    let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {view}"))
        .fetch_one(&mut *conn)
        .await
        .ok()?;
    Some((view, rows))
}

/// The rows `table` holds now, counted inside the batch's transaction (its own rows too).
async fn count_rows(conn: &mut PgConnection, table: &str) -> Option<i64> {
    in_savepoint(conn, async |conn| {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(conn)
            .await
    })
    .await
}

/// A read inside the batch's transaction, in a savepoint: a failure leaves the batch as it
/// was (and is `None`).
async fn in_savepoint<T>(
    conn: &mut PgConnection,
    read: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
) -> Option<T> {
    sqlx::raw_sql("SAVEPOINT stepmigrate_read")
        .execute(&mut *conn)
        .await
        .ok()?;
    let result = read(&mut *conn).await;
    let end = if result.is_ok() {
        "RELEASE SAVEPOINT stepmigrate_read"
    } else {
        "ROLLBACK TO SAVEPOINT stepmigrate_read; RELEASE SAVEPOINT stepmigrate_read"
    };
    sqlx::raw_sql(end).execute(&mut *conn).await.ok()?;
    result.ok()
}

/// `pg_class.reltuples` of `table` (as written in the statement), when it has been analyzed.
async fn estimate_rows(conn: &mut PgConnection, table: &str) -> Option<u64> {
    let row: Option<(f32,)> = sqlx::query_as(&format!(
        "SELECT reltuples FROM pg_catalog.pg_class WHERE oid = to_regclass({})",
        quote_literal(table)
    ))
    .fetch_optional(&mut *conn)
    .await
    .ok()
    .flatten();
    row.and_then(|(n,)| (n >= 0.0).then_some(n as u64))
}

/// The batch size a migration runs with.
pub fn batch_size(m: &Migration) -> u64 {
    m.directives.batch_size.unwrap_or(DEFAULT_BATCH_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_table_is_read_from_the_statement() {
        for (statement, table) in [
            ("UPDATE users SET a = 1", Some("users")),
            ("update ONLY public.users set a = 1", Some("public.users")),
            (
                "DELETE FROM \"My Schema\".\"Events\" WHERE id IN (SELECT 1)",
                Some("\"My Schema\".\"Events\""),
            ),
            ("INSERT INTO t2 (a) SELECT 1", Some("t2")),
            ("MERGE INTO t USING s ON true", Some("t")),
            ("UPDATE only_table SET a = 1", Some("only_table")),
            ("WITH b AS (SELECT 1) UPDATE t SET a = 1", None),
            ("SELECT 1", None),
            ("DELETE t", None),
        ] {
            assert_eq!(target_table(statement).as_deref(), table, "{statement}");
        }
    }

    #[test]
    fn the_remaining_time_follows_the_rate() {
        let report = BatchReport {
            progress: BatchProgress {
                batches: 10,
                rows: 100_000,
                batch_rows: 10_000,
            },
            run_batches: 5,
            run_rows: 50_000,
            elapsed_ms: 5_000,
            batch_ms: 1_000,
            table_rows_estimate: Some(1_000_000),
        };
        assert_eq!(report.rate(), Some(10_000.0));
        assert_eq!(report.remaining(), Some((900_000, Duration::from_secs(90))));
        let unknown = BatchReport {
            table_rows_estimate: None,
            ..report
        };
        assert_eq!(unknown.remaining(), None);
    }
}
