//! The statement loop: one transactional migration verified inside an open transaction,
//! statement by statement, with its locks, rewrites and server effects read after each and
//! its deferred constraints checked where COMMIT would check them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgDatabaseError, PgErrorPosition};
use sqlx::PgConnection;

use super::catalog::{compare_catalogs, read_catalog, read_storage, statement_rewrites};
use super::locks::{locked_since, new_locks, read_locks, HeldLock, LocksSoFar};
use super::report::{
    flags, ms, skipped, summary_of, MigrationVerification, StatementReport, VerifyOutcome,
};
use super::TRANSACTION_CONTROL_SQLSTATE;
use crate::apply::{Attempt, Commit, RESET_SESSION};
use crate::config::{pg_interval, Settings};
use crate::error::{Error, SqlError};
use crate::ledger::LedgerSchema;
use crate::migration::Migration;
use crate::server_guard;
use crate::sql::{self, Statement};

/// `m`, not run because a statement of it acts outside its transaction (`on_target`: it would
/// run on the target itself), if one does: rolled back or not, its effect would stay.
pub(super) fn refused_outside_transaction(
    m: &Migration,
    on_target: bool,
) -> Option<MigrationVerification> {
    let (statement, what) = sql::split_statements(&m.sql)
        .into_iter()
        .find_map(|s| sql::acts_outside_transaction(&s, on_target).map(|what| (s, what)))?;
    let reason = format!(
        "not verified: line {}: {} acts outside its transaction ({what}): rolled back or not, its effect would stay, so it was not run{}",
        statement.line,
        summary_of(statement.text),
        if on_target && what == "setval" {
            " (verify it on a scratch database, where the sequence is the copy's)"
        } else {
            ""
        }
    );
    Some(MigrationVerification {
        acts_outside_transaction: Some(what),
        ..skipped(m, reason)
    })
}

/// The timeouts a migration gets, as `up` would give it, with the lock wait capped (0, no
/// limit, capped too) where verify runs on a live database.
pub(super) fn timeouts(
    m: &Migration,
    settings: &Settings,
    lock_cap: Option<Duration>,
) -> (Duration, Duration) {
    let schema = LedgerSchema::new("public");
    let a = Attempt::new(m, None, "", &schema, None, settings, Commit::Durable);
    let lock = match lock_cap {
        Some(cap) if a.lock_timeout.is_zero() || a.lock_timeout > cap => cap,
        _ => a.lock_timeout,
    };
    (lock, a.statement_timeout)
}

fn sql_error(db: &dyn sqlx::error::DatabaseError, statement: &Statement<'_>) -> SqlError {
    let pg = db.try_downcast_ref::<PgDatabaseError>();
    // A position inside the statement moves the line down to where it points.
    let line = match pg.and_then(|e| e.position()) {
        Some(PgErrorPosition::Original(p)) => {
            let byte = sql::byte_of_char(statement.text, p.saturating_sub(1));
            statement.line + statement.text[..byte].matches('\n').count()
        }
        _ => statement.line,
    };
    error_at(db, line, statement.text)
}

/// PostgreSQL's error, reported at `line` of the file, for `statement` (as shown).
fn error_at(db: &dyn sqlx::error::DatabaseError, line: usize, statement: &str) -> SqlError {
    let pg = db.try_downcast_ref::<PgDatabaseError>();
    SqlError {
        sqlstate: db
            .code()
            .map(|c| c.into_owned())
            .unwrap_or_else(|| "XX000".into()),
        message: db.message().to_owned(),
        detail: pg.and_then(|e| e.detail()).map(str::to_owned),
        hint: pg.and_then(|e| e.hint()).map(str::to_owned),
        line: Some(line),
        statement: Some(statement.to_owned()),
        where_: pg.and_then(|e| e.r#where()).map(str::to_owned),
    }
}

const SAVEPOINT: &str = "stepmigrate_verify";

/// Verifies one transactional migration inside the transaction open on `conn`, in a
/// savepoint: statement by statement, reading this backend's locks after each, and the
/// catalog before and after. A failure rolls back to the savepoint; success releases it when
/// `keep` (the next migration sees this one's effects), else rolls back to it too.
pub(super) async fn verify_in_open_transaction(
    conn: &mut PgConnection,
    m: &Migration,
    (lock_timeout, statement_timeout): (Duration, Duration),
    keep: bool,
) -> Result<MigrationVerification, Error> {
    let setup = format!(
        "SAVEPOINT {SAVEPOINT};SET LOCAL lock_timeout = '{}';SET LOCAL statement_timeout = '{}';",
        pg_interval(lock_timeout),
        pg_interval(statement_timeout)
    );
    sqlx::raw_sql(&setup)
        .execute(&mut *conn)
        .await
        .map_err(|e| Error::database(format!("starting the verification of {}", m.name), e))?;
    let shared_before = read_shared(conn).await?;
    let mut touches_server = None;
    let before = read_storage(conn).await?;
    let mut held = read_locks(conn, None)
        .await
        .map_err(|e| Error::database("reading pg_locks", e))?;
    let baseline: BTreeSet<(i64, String)> = held.iter().map(|l| (l.oid, l.mode.clone())).collect();
    // Each relation's storage as last seen: a statement that changes it rewrote it.
    let mut storage: BTreeMap<i64, i64> = before
        .iter()
        .map(|(oid, r)| (*oid, r.relfilenode))
        .collect();
    let mut so_far = LocksSoFar::default();
    // Index → its table, by name, for the lock lines.
    let tables: BTreeMap<String, String> = before
        .values()
        .filter_map(|r| Some((r.name.clone(), before.get(&r.table_oid?)?.name.clone())))
        .collect();
    let mut starts = Vec::new();
    let started = Instant::now();
    let mut statements = Vec::new();
    let mut failure = None;
    for statement in sql::split_statements(&m.sql) {
        if sql::is_transaction_control(&statement.keywords) {
            failure = Some(SqlError {
                sqlstate: TRANSACTION_CONTROL_SQLSTATE.to_owned(),
                message: "transaction control would end the transaction that keeps the verification from committing; not run".to_owned(),
                line: Some(statement.line),
                statement: Some(statement.text.to_owned()),
                ..SqlError::default()
            });
            break;
        }
        let t = Instant::now();
        starts.push(ms(t - started));
        let result = sqlx::raw_sql(statement.text).execute(&mut *conn).await;
        let duration_ms = Some(ms(t.elapsed()));
        match result {
            Ok(_) => {}
            Err(sqlx::Error::Database(db)) => {
                statements.push(StatementReport {
                    line: statement.line,
                    summary: summary_of(statement.text),
                    duration_ms,
                    locks: Vec::new(),
                    rewrites: Vec::new(),
                    depends_on_data: None,
                });
                failure = Some(sql_error(db.as_ref(), &statement));
                break;
            }
            Err(e) => return Err(Error::database(format!("verifying {}", m.name), e)),
        }
        let now = read_locks(conn, Some(&held))
            .await
            .map_err(|e| Error::database("reading pg_locks", e))?;
        let mut locks = new_locks(&held, &now, &before);
        so_far.take(&mut locks, statement.line, statements.len(), &tables);
        // A rewrite locks the relation: only the relations this migration locked can have
        // been rewritten (again) by this statement.
        let locked = locked_since(&baseline, &now);
        let rewrites = statement_rewrites(conn, &locked, &before, &mut storage).await?;
        statements.push(StatementReport {
            line: statement.line,
            summary: summary_of(statement.text),
            duration_ms,
            locks,
            rewrites,
            depends_on_data: None,
        });
        held = now;
        // Judged by effect after each statement, so that the line is known.
        let touched = read_shared(conn).await?.since(&shared_before);
        if !touched.is_empty() {
            touches_server = Some(server_guard::describe(&touched));
            failure = Some(server_change(&touched, Some(&statement)));
            break;
        }
    }
    if failure.is_none() {
        // What COMMIT would check, which a rolled-back verification never reaches, and the
        // locks its deferred triggers take there.
        let (deferred, at_commit) = check_deferred(conn, m, &held).await?;
        failure = deferred;
        let mut locks = new_locks(&held, &at_commit, &before);
        if !locks.is_empty() {
            let line = last_line(&m.sql);
            so_far.take(&mut locks, line, statements.len(), &tables);
            starts.push(ms(started.elapsed()));
            statements.push(StatementReport {
                line,
                summary: "COMMIT (its deferred constraint triggers)".to_owned(),
                duration_ms: None,
                locks,
                rewrites: Vec::new(),
                depends_on_data: None,
            });
            held = at_commit;
        }
        // A deferred trigger may have touched the server too.
        let touched = read_shared(conn).await?.since(&shared_before);
        if failure.is_none() && !touched.is_empty() {
            touches_server = Some(server_guard::describe(&touched));
            failure = Some(server_change(&touched, None));
        }
    }
    let duration_ms = ms(started.elapsed());
    let locks_held = so_far.held(&statements, &starts, duration_ms);
    let (rewrites, new_indexes) = if failure.is_none() {
        // A rewrite and a new index both lock the relation: only those need reading again.
        let locked = locked_since(&baseline, &held);
        let after = read_catalog(conn, Some(&locked)).await?;
        compare_catalogs(&before, &after)
    } else {
        (Vec::new(), Vec::new())
    };
    let end = if failure.is_none() && keep {
        // Kept for the next migration to see, but not its session state: a role or a setting
        // it set ends with it, as it does after `up` applies it.
        format!("RELEASE SAVEPOINT {SAVEPOINT};{RESET_SESSION}")
    } else {
        format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}; RELEASE SAVEPOINT {SAVEPOINT}")
    };
    sqlx::raw_sql(&end)
        .execute(&mut *conn)
        .await
        .map_err(|e| Error::database(format!("ending the verification of {}", m.name), e))?;
    let flags = flags(m, &statements, &rewrites);
    Ok(MigrationVerification {
        version: m.version.clone(),
        name: m.name.clone(),
        file: m.path.clone(),
        mode: m.directives.mode,
        outcome: failure.map_or(VerifyOutcome::Ok, |error| VerifyOutcome::Failed { error }),
        duration_ms,
        statements,
        rewrites,
        new_indexes,
        flags,
        round_trip: None,
        locks_held,
        unknown_on_empty_copy: false,
        target_tables: Vec::new(),
        locks_unseen: None,
        touches_server,
        acts_outside_transaction: None,
    })
}

/// This transaction's writes to the shared catalogs so far.
async fn read_shared(conn: &mut PgConnection) -> Result<server_guard::SharedWrites, Error> {
    server_guard::read(conn)
        .await
        .map_err(|e| Error::database("reading the catalogs shared by the whole server", e))
}

/// The failure of a migration that touched the server: at the statement after which it was
/// seen, or (`None`) at the migration's end (a deferred trigger).
fn server_change(catalogs: &[String], statement: Option<&Statement<'_>>) -> SqlError {
    SqlError {
        sqlstate: server_guard::SERVER_CHANGE_SQLSTATE.to_owned(),
        message: server_guard::message(catalogs),
        detail: Some(server_guard::describe(catalogs)),
        line: statement.map(|s| s.line),
        statement: statement.map(|s| s.text.to_owned()),
        ..SqlError::default()
    }
}

/// The savepoint of the deferred-constraint check.
const DEFERRED_SAVEPOINT: &str = "stepmigrate_deferred";

/// What COMMIT would do that a rolled-back verification never reaches: the deferred
/// constraints (a `DEFERRABLE INITIALLY DEFERRED` foreign key, unique or exclusion
/// constraint) and deferred constraint triggers, fired by `SET CONSTRAINTS ALL IMMEDIATE`.
/// Inside a savepoint that is rolled back: the events are marked pending again and the
/// constraints' modes restored, so that a migration verified after this one in the same
/// transaction runs as it would after this one's COMMIT. A violation is the migration's
/// failure at its end, where `up` would fail.
async fn check_deferred(
    conn: &mut PgConnection,
    m: &Migration,
    held: &[HeldLock],
) -> Result<(Option<SqlError>, Vec<HeldLock>), Error> {
    let ending = |e| {
        Error::database(
            format!("checking the deferred constraints of {}", m.name),
            e,
        )
    };
    sqlx::raw_sql(&format!("SAVEPOINT {DEFERRED_SAVEPOINT}"))
        .execute(&mut *conn)
        .await
        .map_err(ending)?;
    let mut locks = Vec::new();
    let failure = match sqlx::raw_sql("SET CONSTRAINTS ALL IMMEDIATE")
        .execute(&mut *conn)
        .await
    {
        // The locks its triggers took, before the savepoint's rollback releases them: COMMIT
        // takes them too.
        Ok(_) => {
            locks = read_locks(conn, Some(held))
                .await
                .map_err(|e| Error::database("reading pg_locks", e))?;
            None
        }
        Err(sqlx::Error::Database(db)) => {
            Some(error_at(db.as_ref(), last_line(&m.sql), DEFERRED_STATEMENT))
        }
        Err(e) => return Err(ending(e)),
    };
    sqlx::raw_sql(&format!(
        "ROLLBACK TO SAVEPOINT {DEFERRED_SAVEPOINT}; RELEASE SAVEPOINT {DEFERRED_SAVEPOINT}"
    ))
    .execute(&mut *conn)
    .await
    .map_err(ending)?;
    Ok((failure, locks))
}

/// The statement a deferred-constraint failure is reported at.
pub const DEFERRED_STATEMENT: &str =
    "COMMIT (the deferred constraints and constraint triggers, checked at the migration's end, where its transaction commits)";

/// The last line of a file (1-based), counted as the lexer counts them.
fn last_line(text: &str) -> usize {
    let trimmed = text.trim_end();
    1 + trimmed.matches('\n').count() + trimmed.matches('\r').count()
        - trimmed.matches("\r\n").count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::Version;

    #[test]
    fn a_cap_limits_the_lock_wait_even_of_a_migration_asking_for_none() {
        let mut m = Migration {
            version: Version::parse("001").unwrap(),
            name: "001_x".into(),
            path: "001_x.sql".into(),
            sql: "SELECT 1".into(),
            as_written: None,
            checksum: "c".into(),
            directives: Default::default(),
            down: None,
        };
        let s = Settings::default();
        assert_eq!(
            timeouts(&m, &s, Some(Duration::from_secs(2))).0,
            Duration::from_secs(2)
        );
        assert_eq!(timeouts(&m, &s, None).0, s.lock_timeout);
        m.directives.lock_timeout = Some(Duration::ZERO);
        assert_eq!(
            timeouts(&m, &s, Some(Duration::from_secs(2))).0,
            Duration::from_secs(2)
        );
        m.directives.lock_timeout = Some(Duration::from_millis(500));
        assert_eq!(
            timeouts(&m, &s, Some(Duration::from_secs(2))).0,
            Duration::from_millis(500)
        );
    }
}
