//! Applying one migration, and recording a failure. The caller holds the migration lock;
//! the database re-checks inside the migration's own transaction (`schema_migrations_guard`)
//! that the migration is still pending and that the one before it is applied.

use std::time::Instant;

use serde::Serialize;
use sqlx::postgres::{PgDatabaseError, PgErrorPosition};
use sqlx::PgConnection;

use crate::config::{pg_interval, Settings};
use crate::error::{Error, MigrationFailure, SqlError};
use crate::ledger::{EventKind, NewEvent};
use crate::migration::Migration;
use crate::sql::{self, quote_literal};

/// What applying one migration came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Applied {
        execution_time_ms: u64,
    },
    /// Another runner applied it first: not an error.
    AlreadyApplied,
    /// The database refused it; nothing of a transactional migration remains. Not recorded
    /// yet: see [`record_failure`].
    Failed {
        failure: Box<MigrationFailure>,
    },
    /// Another session is inside a migration's transaction (e.g. an orphaned backend of a
    /// killed runner): try again shortly.
    Busy,
    /// The ledger says it is dirty: a run outside a transaction failed or was interrupted.
    Dirty,
}

/// How a transactional migration's commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Wait for the WAL flush: the migration is durable when `apply` returns.
    Durable,
    /// Don't wait (`synchronous_commit = off`): for all but the last migration of a run. A
    /// server crash can then lose only the newest commits, each whole with its ledger event
    /// and in order; the run's last, durable commit flushes all of them before it reports.
    Deferred,
}

/// Applies `m`, whose predecessor in the set is `previous`, writing its ledger event in the
/// same transaction (or, outside a transaction, a `started` event before and the outcome
/// after).
pub async fn apply(
    conn: &mut PgConnection,
    m: &Migration,
    previous: Option<&str>,
    run_id: &str,
    settings: &Settings,
    commit: Commit,
) -> Result<Outcome, Error> {
    let lock_timeout = pg_interval(m.directives.lock_timeout.unwrap_or(settings.lock_timeout));
    let statement_timeout = pg_interval(
        m.directives
            .statement_timeout
            .unwrap_or(settings.statement_timeout),
    );
    let guard = format!(
        "SELECT schema_migrations_guard({}, {})",
        quote_literal(m.version.as_str()),
        previous.map_or_else(|| "NULL".to_owned(), quote_literal)
    );
    if m.transactional() {
        apply_in_transaction(
            conn,
            m,
            run_id,
            &guard,
            &lock_timeout,
            &statement_timeout,
            commit,
        )
        .await
    } else {
        apply_outside_transaction(conn, m, run_id, &guard, &lock_timeout, &statement_timeout).await
    }
}

/// One round trip: the transaction, its timeouts, the guard, the migration, its event and
/// the commit travel as one simple query. The duration is measured by the server itself
/// (`statement_timestamp()` is when the query arrived).
async fn apply_in_transaction(
    conn: &mut PgConnection,
    m: &Migration,
    run_id: &str,
    guard: &str,
    lock_timeout: &str,
    statement_timeout: &str,
    commit: Commit,
) -> Result<Outcome, Error> {
    let deferred = if commit == Commit::Deferred {
        "SET LOCAL synchronous_commit = off;"
    } else {
        ""
    };
    let prefix = format!(
        "BEGIN;SET LOCAL lock_timeout = '{lock_timeout}';SET LOCAL statement_timeout = '{statement_timeout}';{deferred}{guard};\n"
    );
    let event = NewEvent {
        run_id,
        version: m.version.as_str(),
        name: &m.name,
        kind: EventKind::Applied,
        checksum: Some(&m.checksum),
        execution_time_ms: Some(
            "(extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000)::bigint".into(),
        ),
        dirty: false,
        error: None,
    };
    // The newline ends a trailing `--` comment of the file; the `;` a last statement
    // written without one.
    // RESET ALL: a migration's own `SET` must not outlive it on a pooled connection.
    let script = format!(
        "{prefix}{}\n;{};COMMIT;RESET ALL;",
        m.sql,
        event.insert_sql()
    );
    let started = Instant::now();
    match sqlx::raw_sql(&script).execute(&mut *conn).await {
        Ok(_) => Ok(Outcome::Applied {
            execution_time_ms: started.elapsed().as_millis() as u64,
        }),
        Err(sqlx::Error::Database(db)) => {
            // A syntax error aborts the script before BEGIN runs; ROLLBACK then only warns.
            let _ = sqlx::raw_sql("ROLLBACK;RESET ALL")
                .execute(&mut *conn)
                .await;
            let pg = db.try_downcast_ref::<PgDatabaseError>();
            let position = pg.and_then(|e| match e.position() {
                Some(PgErrorPosition::Original(p)) => p.checked_sub(1 + prefix.chars().count()),
                _ => None,
            });
            Ok(classify(
                m,
                pg,
                db.message(),
                db.code().as_deref(),
                position.map(|p| (p, 0)),
            ))
        }
        Err(e) => Err(Error::database(format!("applying {}", m.name), e)),
    }
}

/// Outside a transaction PostgreSQL needs one statement per query (a multi-statement query is
/// an implicit transaction block, where `CREATE INDEX CONCURRENTLY` is refused). A `started`
/// event, committed first, leaves the migration dirty until its outcome is recorded.
async fn apply_outside_transaction(
    conn: &mut PgConnection,
    m: &Migration,
    run_id: &str,
    guard: &str,
    lock_timeout: &str,
    statement_timeout: &str,
) -> Result<Outcome, Error> {
    let event = |kind, execution_time_ms: Option<u64>, error: Option<&SqlError>| {
        NewEvent {
            run_id,
            version: m.version.as_str(),
            name: &m.name,
            kind,
            checksum: Some(&m.checksum),
            execution_time_ms: execution_time_ms.map(|ms| ms.to_string()),
            dirty: kind != EventKind::Applied,
            error,
        }
        .insert_sql()
    };
    let start = format!(
        "BEGIN;{guard};{};COMMIT;SET lock_timeout = '{lock_timeout}';SET statement_timeout = '{statement_timeout}';",
        event(EventKind::Started, None, None)
    );
    if let Err(e) = sqlx::raw_sql(&start).execute(&mut *conn).await {
        return match e {
            sqlx::Error::Database(db) => {
                let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
                Ok(classify(
                    m,
                    db.try_downcast_ref::<PgDatabaseError>(),
                    db.message(),
                    db.code().as_deref(),
                    None,
                ))
            }
            other => Err(Error::database(format!("starting {}", m.name), other)),
        };
    }
    let started = Instant::now();
    for statement in sql::split_statements(&m.sql) {
        if let Err(e) = sqlx::raw_sql(statement.text).execute(&mut *conn).await {
            let sqlx::Error::Database(db) = e else {
                return Err(Error::database(
                    format!("applying {} (left dirty)", m.name),
                    e,
                ));
            };
            let pg = db.try_downcast_ref::<PgDatabaseError>();
            let position = pg.and_then(|e| match e.position() {
                Some(PgErrorPosition::Original(p)) => Some((p.saturating_sub(1), statement.offset)),
                _ => None,
            });
            let mut outcome = classify(m, pg, db.message(), db.code().as_deref(), position);
            if let Outcome::Failed { failure } = &mut outcome {
                failure
                    .error
                    .statement
                    .get_or_insert_with(|| statement.text.to_owned());
                failure.error.line.get_or_insert(statement.line);
            }
            let _ = sqlx::raw_sql("ROLLBACK;RESET ALL")
                .execute(&mut *conn)
                .await;
            return Ok(outcome);
        }
    }
    let elapsed = started.elapsed().as_millis() as u64;
    let finish = format!(
        "RESET ALL;{}",
        event(EventKind::Applied, Some(elapsed), None)
    );
    if let Err(e) = sqlx::raw_sql(&finish).execute(&mut *conn).await {
        let _ = sqlx::raw_sql("RESET ALL").execute(&mut *conn).await;
        return Err(Error::database(
            format!("recording {} as applied (left dirty)", m.name),
            e,
        ));
    }
    Ok(Outcome::Applied {
        execution_time_ms: elapsed,
    })
}

/// Turns the database's answer into an outcome. `position` is PostgreSQL's 0-based character
/// position in the text that was sent, and the byte offset of that text in the file.
fn classify(
    m: &Migration,
    pg: Option<&PgDatabaseError>,
    message: &str,
    code: Option<&str>,
    position: Option<(usize, usize)>,
) -> Outcome {
    match code {
        Some("SM001") => return Outcome::AlreadyApplied,
        Some("SM002") => return Outcome::Busy,
        Some("SM004") => return Outcome::Dirty,
        _ => {}
    }
    let mut error = SqlError {
        sqlstate: code.unwrap_or("XX000").to_owned(),
        message: message.to_owned(),
        detail: pg.and_then(|e| e.detail()).map(str::to_owned),
        hint: pg.and_then(|e| e.hint()).map(str::to_owned),
        line: None,
        statement: None,
        where_: pg.and_then(|e| e.r#where()).map(str::to_owned),
    };
    if let Some((chars, base)) = position {
        let text = &m.sql[base..];
        let byte = base + sql::byte_of_char(text, chars);
        // A position past the file is in the runner's own statements: no line of the file.
        if chars < text.chars().count() {
            error.line = Some(sql::line_of_byte(&m.sql, byte));
            error.statement = sql::statement_at(&m.sql, byte).map(|s| s.text.to_owned());
        }
    }
    Outcome::Failed {
        failure: Box::new(MigrationFailure {
            version: m.version.as_str().to_owned(),
            name: m.name.clone(),
            file: m.path.clone(),
            transactional: m.transactional(),
            error,
        }),
    }
}

/// Records a failure as an event (and a `success = false` row) in its own transaction, after
/// the migration's transaction rolled back. A non-transactional migration stays dirty.
pub async fn record_failure(
    conn: &mut PgConnection,
    failure: &MigrationFailure,
    checksum: Option<&str>,
    run_id: &str,
) -> Result<(), Error> {
    let event = NewEvent {
        run_id,
        version: &failure.version,
        name: &failure.name,
        kind: EventKind::Failed,
        checksum,
        execution_time_ms: None,
        dirty: !failure.transactional,
        error: Some(&failure.error),
    };
    sqlx::raw_sql(&event.insert_unless_applied_sql())
        .execute(&mut *conn)
        .await
        .map_err(|e| Error::database(format!("recording the failure of {}", failure.name), e))?;
    Ok(())
}
