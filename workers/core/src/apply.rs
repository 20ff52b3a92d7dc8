//! Applying one migration, and recording a failure. The caller holds the migration lock;
//! the database re-checks inside the migration's own transaction (`schema_migrations_guard`)
//! that the migration is still pending and that the one before it is applied.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgDatabaseError, PgErrorPosition};
use sqlx::PgConnection;

use crate::config::{pg_interval, Settings};
use crate::error::{Error, MigrationFailure, SqlError};
use crate::ledger::{
    self, BatchProgress, EventKind, KeptDown, LedgerSchema, NewEvent, LOST_TRANSACTION_MESSAGE,
    LOST_TRANSACTION_SQLSTATE, ROLLED_BACK_TRANSACTION_MESSAGE,
};
use crate::migration::{Migration, Version};
use crate::notices;
use crate::sql::{self, quote_literal, Statement};

/// What applying one migration came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Applied {
        execution_time_ms: u64,
        /// What PostgreSQL said while it ran (NOTICEs, WARNINGs).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        notices: Vec<String>,
        /// A batch migration's totals (across runs).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batches: Option<BatchProgress>,
    },
    /// A batch migration stopped before its time budget ran out, with batches left: still
    /// pending, its progress recorded; the next run resumes it.
    Unfinished { progress: BatchProgress },
    /// Another runner applied it first: not an error.
    AlreadyApplied,
    /// The database refused it; nothing of a transactional migration remains. Not recorded
    /// yet: see [`record_failure`].
    Failed { failure: Box<MigrationFailure> },
    /// Another session is inside a migration's transaction (e.g. an orphaned backend of a
    /// killed runner): try again shortly.
    Busy,
    /// The ledger says it is dirty: a run outside a transaction failed or was interrupted.
    Dirty,
    /// The runner's migration lock is gone (its session ended): nothing was applied, and the
    /// run must stop.
    LockLost,
    /// Its down script ran, with its `rolled_back` event: the migration is pending again.
    RolledBack {
        execution_time_ms: u64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        notices: Vec<String>,
    },
    /// Another runner rolled it back first: not an error.
    AlreadyRolledBack,
}

impl Outcome {
    /// Its name in outputs (`applied`, `already_applied`, `failed`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "applied",
            Outcome::AlreadyApplied => "already_applied",
            Outcome::Failed { .. } => "failed",
            Outcome::Busy => "busy",
            Outcome::Dirty => "dirty",
            Outcome::LockLost => "lock_lost",
            Outcome::RolledBack { .. } => "rolled_back",
            Outcome::AlreadyRolledBack => "already_rolled_back",
            Outcome::Unfinished { .. } => "unfinished",
        }
    }
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

/// The savepoint a transactional migration runs in (see [`Attempt::transaction`]).
pub const MIGRATION_SAVEPOINT: &str = "stepmigrate_migration";

/// The runner's own role back (`RESET ALL` leaves the role alone): before a migration's
/// ledger event, and in [`RESET_SESSION`].
macro_rules! reset_role {
    () => {
        "RESET SESSION AUTHORIZATION;RESET ROLE;"
    };
}

/// Session state a migration may change that `RESET ALL` leaves alone (the role, temporary
/// tables), reset after every migration so that the next one starts as the runner: a
/// temporary table left by one migration would otherwise hide the table of that name from
/// the next (`pg_temp` comes first on the `search_path`), which would change it instead.
pub const RESET_SESSION: &str = concat!(reset_role!(), "RESET ALL;DISCARD TEMP;");

/// Which way an attempt goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// The migration itself.
    #[default]
    Up,
    /// Its down script (the attempt's `migration` is then the down script, under the
    /// migration's version and name: see [`crate::rollback::Revert::as_migration`]).
    Down,
}

/// One attempt at one migration: everything the SQL it sends depends on. Building the text is
/// pure ([`Attempt::transaction`], [`Attempt::start_outside`], [`Attempt::finish_outside`]),
/// so it can be tested without a database, and wrapped (e.g. in a transaction that is
/// rolled back) without touching how it is sent.
pub struct Attempt<'a> {
    pub migration: &'a Migration,
    /// The migration before it in the set, which must be applied.
    pub previous: Option<&'a Version>,
    pub run_id: &'a str,
    pub schema: &'a LedgerSchema,
    /// The backend holding the runner's migration lock: the guard checks it still does.
    pub lock_pid: Option<i32>,
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
    pub commit: Commit,
    pub direction: Direction,
    /// On a verification database: nothing that touches the whole server may commit
    /// ([`Settings::guard_server`]).
    pub guard_server: bool,
    /// Outside a transaction: the runner's migration lock, to yield while the statements run
    /// under the migration's build lock (a long after-deploy build: see [`crate::lock`]).
    pub yield_lock: Option<&'a crate::lock::MigrationLock>,
}

/// A transactional attempt's text, and where the migration's own text starts in it (in
/// characters, as PostgreSQL counts error positions).
pub struct Transaction {
    pub script: String,
    pub migration_offset_chars: usize,
    /// How many statements come before the migration's own: the server answers each
    /// statement of the script in turn, so the answers before an error tell which
    /// statement of the migration failed.
    pub prefix_statements: usize,
}

impl<'a> Attempt<'a> {
    pub fn new(
        migration: &'a Migration,
        previous: Option<&'a Version>,
        run_id: &'a str,
        schema: &'a LedgerSchema,
        lock_pid: Option<i32>,
        settings: &Settings,
        commit: Commit,
    ) -> Attempt<'a> {
        // 0 means no limit: under a ceiling, the ceiling.
        let ceiling = |d: Duration| match settings.timeout_ceiling {
            Some(c) if d.is_zero() || d > c => c,
            _ => d,
        };
        Attempt {
            migration,
            previous,
            run_id,
            schema,
            lock_pid,
            lock_timeout: ceiling(
                migration
                    .directives
                    .lock_timeout
                    .unwrap_or(settings.lock_timeout),
            ),
            statement_timeout: ceiling(
                migration
                    .directives
                    .statement_timeout
                    .unwrap_or(settings.statement_timeout),
            ),
            commit,
            direction: Direction::Up,
            guard_server: settings.guard_server,
            yield_lock: None,
        }
    }

    /// The event that ends the attempt well, and the one a script outside a transaction
    /// starts with.
    fn done_kind(&self) -> EventKind {
        match self.direction {
            Direction::Up => EventKind::Applied,
            Direction::Down => EventKind::RolledBack,
        }
    }

    fn started_kind(&self) -> EventKind {
        match self.direction {
            Direction::Up => EventKind::Started,
            Direction::Down => EventKind::RollbackStarted,
        }
    }

    /// The outcome of a script that ran to its end.
    fn done(&self, execution_time_ms: u64, notices: Vec<String>) -> Outcome {
        match self.direction {
            Direction::Up => Outcome::Applied {
                execution_time_ms,
                notices,
                batches: None,
            },
            Direction::Down => Outcome::RolledBack {
                execution_time_ms,
                notices,
            },
        }
    }

    /// The guard's call; its one row, `stepmigrate_guard`, is its transaction's id.
    pub(crate) fn guard(&self) -> String {
        if self.direction == Direction::Down {
            return format!(
                "SELECT {}({}, {}) AS stepmigrate_guard",
                self.schema.qualify("schema_migrations_revert_guard"),
                quote_literal(self.migration.version.as_str()),
                self.lock_pid
                    .map_or_else(|| "NULL".to_owned(), |p| p.to_string()),
            );
        }
        format!(
            "SELECT {}({}, {}, {}) AS stepmigrate_guard",
            self.schema.qualify("schema_migrations_guard"),
            quote_literal(self.migration.version.as_str()),
            self.previous
                .map_or_else(|| "NULL".to_owned(), |v| quote_literal(v.as_str())),
            self.lock_pid
                .map_or_else(|| "NULL".to_owned(), |p| p.to_string()),
        )
    }

    pub(crate) fn event<'e>(
        &'e self,
        kind: EventKind,
        execution_time_ms: Option<String>,
        notices: &'e [String],
    ) -> NewEvent<'e> {
        NewEvent {
            run_id: self.run_id,
            version: self.migration.version.as_str(),
            name: &self.migration.name,
            kind,
            checksum: Some(&self.migration.checksum),
            execution_time_ms,
            dirty: kind == EventKind::Started || kind == EventKind::RollbackStarted,
            error: None,
            notices,
            // Kept with the migration as applied: what a later rollback runs.
            down: match (self.direction, kind) {
                (Direction::Up, EventKind::Applied | EventKind::Started) => {
                    self.migration.down.as_ref().map(|d| KeptDown {
                        sql: &d.sql,
                        checksum: &d.checksum,
                        requires: &self.migration.directives.requires,
                    })
                }
                _ => None,
            },
            progress: None,
        }
    }

    /// The whole transactional attempt as one simple query: the transaction, its timeouts,
    /// the guard, the migration inside a savepoint, the runner's role back, the ledger event,
    /// the commit and the session reset. Releasing the savepoint fails if transaction control
    /// inside the migration ended the transaction (whatever the migration did to its
    /// settings), which aborts what ran after it: the event is never written outside the
    /// guard's transaction. The server measures the duration itself (`statement_timestamp()`
    /// is when the query arrived).
    pub fn transaction(&self) -> Transaction {
        let deferred = if self.commit == Commit::Deferred {
            "SET LOCAL synchronous_commit = off;"
        } else {
            ""
        };
        let flush = if self.guard_server {
            format!("{};", crate::server_guard::FLUSH_SQL)
        } else {
            String::new()
        };
        let prefix = format!(
            "BEGIN;{flush}SET LOCAL lock_timeout = '{}';SET LOCAL statement_timeout = '{}';{deferred}{};SAVEPOINT {MIGRATION_SAVEPOINT};\n",
            pg_interval(self.lock_timeout),
            pg_interval(self.statement_timeout),
            self.guard()
        );
        let event = self.event(
            self.done_kind(),
            Some(
                "(extract(epoch FROM clock_timestamp() - statement_timestamp()) * 1000)::bigint"
                    .into(),
            ),
            &[],
        );
        let recorded = event
            .projection_check_sql(self.schema)
            .map(|check| format!(";{check}"))
            .unwrap_or_default();
        let event = format!("{}{recorded}", event.insert_sql(self.schema));
        let guard = self.server_guard();
        // The newline ends a trailing `--` comment of the file; the `;` a last statement
        // written without one.
        Transaction {
            migration_offset_chars: prefix.chars().count(),
            prefix_statements: sql::split_statements(&prefix).len(),
            script: format!(
                "{prefix}{}\n;RELEASE SAVEPOINT {MIGRATION_SAVEPOINT};{}{event};{guard}COMMIT;{RESET_SESSION}",
                self.migration.sql,
                reset_role!()
            ),
        }
    }

    /// On a verification database, the check before COMMIT that the transaction changed
    /// nothing of the whole server and wrote through no foreign table (it raises, and the
    /// transaction rolls back); else nothing.
    pub fn server_guard(&self) -> String {
        if self.guard_server {
            format!("{};", crate::server_guard::guard_sql())
        } else {
            String::new()
        }
    }

    /// Outside a transaction: the guard and a `started` event, committed first (the migration
    /// is dirty until its outcome is recorded), then the session's timeouts.
    pub fn start_outside(&self) -> String {
        format!(
            "BEGIN;{};{};COMMIT;SET lock_timeout = '{}';SET statement_timeout = '{}';",
            self.guard(),
            self.event(self.started_kind(), None, &[])
                .insert_sql(self.schema),
            pg_interval(self.lock_timeout),
            pg_interval(self.statement_timeout),
        )
    }

    /// Outside a transaction, after the last statement and the session's reset (sent on its
    /// own: in one query with it, the event's implicit transaction would start under what
    /// the migration set, `default_transaction_read_only` for one): the outcome.
    pub fn finish_outside(&self, elapsed_ms: u64, notices: &[String]) -> String {
        self.event(self.done_kind(), Some(elapsed_ms.to_string()), notices)
            .insert_sql(self.schema)
    }

    /// After a transactional migration that raised notices: they follow its `applied` event.
    pub fn notices_event(&self, notices: &[String]) -> String {
        self.event(EventKind::Notices, None, notices)
            .insert_sql(self.schema)
    }
}

/// Applies one attempt, writing its ledger event in the same transaction (or, outside a
/// transaction, a `started` event before and the outcome after).
pub async fn apply(conn: &mut PgConnection, attempt: &Attempt<'_>) -> Result<Outcome, Error> {
    let mut outcome = if attempt.migration.transactional() {
        apply_in_transaction(conn, attempt).await?
    } else {
        apply_outside_transaction(conn, attempt).await?
    };
    if let Outcome::Failed { failure } = &mut outcome {
        failure.rollback = attempt.direction == Direction::Down;
    }
    Ok(outcome)
}

async fn apply_in_transaction(
    conn: &mut PgConnection,
    attempt: &Attempt<'_>,
) -> Result<Outcome, Error> {
    use futures_util::TryStreamExt;
    use sqlx::Row;
    let m = attempt.migration;
    let tx = attempt.transaction();
    let started = Instant::now();
    // The guard's transaction id comes back as a row among the migration's own, as they are
    // produced: an error later in the script keeps it.
    let ((sent, guard_xid, completed), notices) = notices::capture(async {
        let mut guard_xid: Option<String> = None;
        let mut completed = 0usize;
        let mut results = sqlx::raw_sql(&tx.script).fetch_many(&mut *conn);
        let sent = loop {
            match results.try_next().await {
                Ok(Some(sqlx::Either::Right(row))) if guard_xid.is_none() => {
                    guard_xid = row.try_get::<String, _>("stepmigrate_guard").ok();
                }
                Ok(Some(sqlx::Either::Left(_))) => completed += 1,
                Ok(Some(_)) => {}
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        (sent, guard_xid, completed)
    })
    .await;
    match sent {
        Ok(()) => {
            let execution_time_ms = started.elapsed().as_millis() as u64;
            if !notices.is_empty() {
                sqlx::raw_sql(&attempt.notices_event(&notices))
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| {
                        Error::database(format!("recording the notices of {}", m.name), e)
                    })?;
            }
            Ok(attempt.done(execution_time_ms, notices))
        }
        Err(sqlx::Error::Database(db)) => {
            // A syntax error aborts the script before BEGIN runs; ROLLBACK then only warns.
            // Whether the guard's transaction committed anyway (a COMMIT inside the migration)
            // is in the session: then part of the migration may remain, and it is dirty.
            let committed = after_failure(conn, guard_xid.as_deref()).await;
            let pg = db.try_downcast_ref::<PgDatabaseError>();
            let position = pg.and_then(|e| match e.position() {
                Some(PgErrorPosition::Original(p)) => p.checked_sub(1 + tx.migration_offset_chars),
                _ => None,
            });
            if ended_inside(db.code().as_deref(), db.message()) {
                // Transaction control inside the migration ended its transaction; the
                // release of its savepoint said so. Dirty if any of it committed.
                let mut failure = failure_of(m, lost_transaction_error(committed));
                failure.dirty = committed;
                failure.notices = notices;
                return Ok(Outcome::Failed {
                    failure: Box::new(failure),
                });
            }
            let mut outcome = classify(
                m,
                pg,
                db.message(),
                db.code().as_deref(),
                position.map(|p| (p, 0)),
            );
            if let Outcome::Failed { failure } = &mut outcome {
                failure.dirty = committed;
                failure.notices = notices;
                if failure.error.line.is_none() {
                    let failed = completed.checked_sub(tx.prefix_statements);
                    let statements = sql::split_statements(&m.sql);
                    if let Some(statement) = failed.and_then(|i| statements.get(i)) {
                        failure.error.line = Some(statement.line);
                        failure
                            .error
                            .statement
                            .get_or_insert_with(|| statement.text.to_owned());
                    }
                }
            }
            Ok(outcome)
        }
        Err(e) => Err(Error::database(format!("applying {}", m.name), e)),
    }
}

/// After a failed attempt: rolls back, tells whether the attempt's guard committed (its
/// transaction, whose id the guard returned, is committed although the script failed), and
/// resets the session. A connection too broken to answer has rolled back whatever was open.
async fn after_failure(conn: &mut PgConnection, guard_xid: Option<&str>) -> bool {
    use sqlx::Row;
    let committed = match guard_xid.and_then(|x| x.parse::<i64>().ok()) {
        Some(xid) => format!("txid_status({xid}) = 'committed'"),
        None => "false".to_owned(),
    };
    let sql = format!("ROLLBACK;SELECT {committed} AS committed;{RESET_SESSION}");
    match sqlx::raw_sql(&sql).fetch_all(&mut *conn).await {
        Ok(rows) => rows
            .iter()
            .any(|r| r.try_get::<bool, _>("committed").unwrap_or(false)),
        Err(_) => false,
    }
}

/// Whether an error is the runner's savepoint release finding the migration's transaction
/// gone (`savepoint ... does not exist`, or no transaction block at all).
fn ended_inside(code: Option<&str>, message: &str) -> bool {
    match code {
        Some("3B001") => message.contains(MIGRATION_SAVEPOINT),
        Some("25P01") => true,
        _ => false,
    }
}

fn lost_transaction_error(committed: bool) -> SqlError {
    SqlError {
        sqlstate: LOST_TRANSACTION_SQLSTATE.to_owned(),
        message: if committed {
            LOST_TRANSACTION_MESSAGE
        } else {
            ROLLED_BACK_TRANSACTION_MESSAGE
        }
        .to_owned(),
        ..SqlError::default()
    }
}

/// Outside a transaction PostgreSQL needs one statement per query (a multi-statement query is
/// an implicit transaction block, where `CREATE INDEX CONCURRENTLY` is refused). A `started`
/// event, committed first, leaves the migration dirty until its outcome is recorded. After
/// each statement the session must be idle again: a statement that left a transaction open
/// would hold the rest (and the outcome event) uncommitted.
async fn apply_outside_transaction(
    conn: &mut PgConnection,
    attempt: &Attempt<'_>,
) -> Result<Outcome, Error> {
    let version = attempt.migration.version.as_str();
    // Claimed before the `started` event commits, so that no plan ever sees this migration
    // dirty without its build lock while a session runs its statements: a killed runner's
    // backend runs its statement on, and `resolve` must not settle a migration still running
    // (every migration outside a transaction claims it; only an after-deploy build also
    // yields the migration lock). Held by another session: that runner is applying it (its
    // guard would say so too).
    if !crate::lock::claim_build(conn, attempt.schema, version).await? {
        return Ok(Outcome::Busy);
    }
    let outcome = start_and_run_outside(conn, attempt, attempt.yield_lock).await;
    // Whatever happened, the outcome is recorded (or left to the caller, under the lock taken
    // back): the build is no longer at work. A session that broke took its lock with it.
    if let Err(e) = crate::lock::release_build(conn, attempt.schema, version).await {
        tracing::warn!(error = %e, "could not release the build lock of {}", attempt.migration.name);
    }
    outcome
}

/// The `started` event, then the statements (yielding `lock` while they run), then the
/// outcome.
async fn start_and_run_outside(
    conn: &mut PgConnection,
    attempt: &Attempt<'_>,
    lock: Option<&crate::lock::MigrationLock>,
) -> Result<Outcome, Error> {
    let m = attempt.migration;
    if let Err(e) = sqlx::raw_sql(&attempt.start_outside())
        .execute(&mut *conn)
        .await
    {
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
    let mut notices = Vec::new();
    let ran = match lock {
        Some(lock) => lock
            .yield_while(run_statements_outside(conn, attempt, &mut notices))
            .await
            .map_err(|e| match e {
                Error::LockNotAcquired { waited } => Error::BuildUnrecorded {
                    name: m.name.clone(),
                    waited,
                },
                other => other,
            })??,
        None => run_statements_outside(conn, attempt, &mut notices).await?,
    };
    if let Some(outcome) = ran {
        return Ok(outcome);
    }
    let elapsed = started.elapsed().as_millis() as u64;
    let recorded = match sqlx::raw_sql(RESET_SESSION).execute(&mut *conn).await {
        Ok(_) => sqlx::raw_sql(&attempt.finish_outside(elapsed, &notices))
            .execute(&mut *conn)
            .await
            .map(drop),
        Err(e) => Err(e),
    };
    if let Err(e) = recorded {
        let _ = sqlx::raw_sql(RESET_SESSION).execute(&mut *conn).await;
        return Err(Error::database(
            format!(
                "recording {} as {} (its statements ran; its row stays dirty where the ledger can still be written)",
                m.name,
                match attempt.direction {
                    Direction::Up => "applied",
                    Direction::Down => "rolled back",
                }
            ),
            e,
        ));
    }
    Ok(attempt.done(elapsed, notices))
}

/// The statements of a migration outside a transaction, one at a time: `None` when all ran,
/// else the outcome that stopped them (a failure, rolled back to an idle session).
async fn run_statements_outside(
    conn: &mut PgConnection,
    attempt: &Attempt<'_>,
    notices: &mut Vec<String>,
) -> Result<Option<Outcome>, Error> {
    let m = attempt.migration;
    for statement in sql::split_statements(&m.sql) {
        let build = crate::index_build::concurrent_index(&statement);
        // What failed, when not the statement itself: said before the database's message.
        let mut context: Option<String> = None;
        let result = match &build {
            Some(build) => crate::index_build::drop_invalid_leftover(conn, build)
                .await
                .map(|dropped| {
                    if let Some(dropped) = dropped {
                        notices.push(format!(
                            "stepmigrate: dropped the INVALID index {dropped} that an interrupted build left, before building it again"
                        ));
                    }
                })
                // A leftover that could not be dropped would be taken for done by `IF NOT
                // EXISTS`: the drop's failure is the migration's, at this statement.
                .inspect_err(|_| {
                    context = Some(format!(
                        "dropping the INVALID index {} that an interrupted build left, before building it again",
                        build.name
                    ))
                }),
            None => Ok(()),
        };
        let result = match result {
            Ok(()) => run_outside(conn, attempt, &statement, notices).await,
            Err(e) => Err(e),
        };
        let result = match (result, &build) {
            // `IF NOT EXISTS` skips an index that is there but INVALID (another session's
            // build, failed or still running): built, it must be valid.
            (Ok(None), Some(build)) => crate::index_build::invalid_after_build(conn, build).await,
            (result, _) => result,
        };
        let failed = match result {
            Ok(None) => continue,
            Ok(Some(error)) => failure_of(m, error),
            Err(sqlx::Error::Database(db)) => {
                let pg = db.try_downcast_ref::<PgDatabaseError>();
                let position = pg.and_then(|e| match e.position() {
                    Some(PgErrorPosition::Original(p)) if context.is_none() => {
                        Some((p.saturating_sub(1), statement.offset))
                    }
                    _ => None,
                });
                let message = match &context {
                    Some(context) => format!("{context}: {}", db.message()),
                    None => db.message().to_owned(),
                };
                match classify(m, pg, &message, db.code().as_deref(), position) {
                    Outcome::Failed { failure } => *failure,
                    other => return Ok(Some(other)),
                }
            }
            Err(e) => {
                return Err(Error::database(
                    format!("applying {} (left dirty)", m.name),
                    e,
                ))
            }
        };
        let mut failure = failed;
        failure
            .error
            .statement
            .get_or_insert_with(|| statement.text.to_owned());
        failure.error.line.get_or_insert(statement.line);
        failure.notices = std::mem::take(notices);
        let _ = sqlx::raw_sql(&format!("ROLLBACK;{RESET_SESSION}"))
            .execute(&mut *conn)
            .await;
        return Ok(Some(Outcome::Failed {
            failure: Box::new(failure),
        }));
    }
    Ok(None)
}

/// One statement of a migration outside a transaction, then the session it left: an error
/// of the statement, or what is wrong with the session (a transaction left open, strings or
/// encoding changed under the lexer).
async fn run_outside(
    conn: &mut PgConnection,
    attempt: &Attempt<'_>,
    statement: &Statement<'_>,
    notices: &mut Vec<String>,
) -> Result<Option<SqlError>, sqlx::Error> {
    // On a verification database, a statement that can run in a transaction runs in one of
    // its own, so that the server guard comes before its COMMIT.
    let wrapped = attempt.guard_server && sql::requires_no_transaction(statement).is_none();
    let (executed, raised) = if wrapped {
        notices::capture(run_guarded(conn, statement.text, &attempt.server_guard())).await
    } else {
        notices::capture(sqlx::raw_sql(statement.text).execute(&mut *conn)).await
    };
    notices.extend(raised);
    executed?;
    let state = session_state(conn).await?;
    Ok(if state.in_transaction {
        Some(SqlError {
            sqlstate: OPEN_TRANSACTION_SQLSTATE.to_owned(),
            message: "the statement left a transaction open (transaction control the validator did not see); it was rolled back".to_owned(),
            ..SqlError::default()
        })
    } else {
        state.problem()
    })
}

/// A statement of a migration outside a transaction, on a verification database: `BEGIN`,
/// the statement, the server guard, `COMMIT`. Sent apart, so that an error position is the
/// statement's own. A statement that turns out not to run in a transaction block (SQLSTATE
/// 25001, raised before it does anything) runs again alone. A failure rolls back.
async fn run_guarded(
    conn: &mut PgConnection,
    statement: &str,
    guard: &str,
) -> Result<sqlx::postgres::PgQueryResult, sqlx::Error> {
    sqlx::raw_sql(&format!("BEGIN;{}", crate::server_guard::FLUSH_SQL))
        .execute(&mut *conn)
        .await?;
    let result = match sqlx::raw_sql(statement).execute(&mut *conn).await {
        Ok(r) => sqlx::raw_sql(&format!("{guard}COMMIT"))
            .execute(&mut *conn)
            .await
            .map(|_| r),
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("25001") => {
            sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await?;
            return sqlx::raw_sql(statement).execute(&mut *conn).await;
        }
        Err(e) => Err(e),
    };
    if result.is_err() {
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
    }
    result
}

/// The SQLSTATE recorded when a statement outside a transaction left one open.
pub const OPEN_TRANSACTION_SQLSTATE: &str = "SM007";

/// The SQLSTATE recorded when a statement changed how the rest would be read.
pub const SESSION_CHANGED_SQLSTATE: &str = "SM008";

/// What a statement may have left behind that changes how the next one is read.
struct SessionState {
    /// Inside a transaction block: there, `now()` is the block's start, earlier than this
    /// query's own arrival.
    in_transaction: bool,
    standard_conforming_strings: String,
    client_encoding: String,
}

impl SessionState {
    /// Why the runner cannot send the next statement as its lexer read it, if it cannot.
    fn problem(&self) -> Option<SqlError> {
        let what = if self.standard_conforming_strings != "on" {
            "standard_conforming_strings"
        } else if !self.client_encoding.eq_ignore_ascii_case("UTF8") {
            "client_encoding"
        } else {
            return None;
        };
        Some(SqlError {
            sqlstate: SESSION_CHANGED_SQLSTATE.to_owned(),
            message: format!("the statement changed {what}, so the rest of the migration would not be read as the runner reads it; nothing after it was run"),
            ..SqlError::default()
        })
    }
}

async fn session_state(conn: &mut PgConnection) -> Result<SessionState, sqlx::Error> {
    use sqlx::Row;
    // A simple query: the extended protocol restamps the statement at each message.
    let row = sqlx::raw_sql(
        "SELECT now() <> statement_timestamp(), current_setting('standard_conforming_strings'), current_setting('client_encoding')",
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(SessionState {
        in_transaction: row.try_get(0)?,
        standard_conforming_strings: row.try_get(1)?,
        client_encoding: row.try_get(2)?,
    })
}

pub(crate) fn failure_of(m: &Migration, error: SqlError) -> MigrationFailure {
    MigrationFailure {
        version: m.version.clone(),
        name: m.name.clone(),
        file: m.path.clone(),
        transactional: m.transactional(),
        // Outside a transaction part of it may have run: dirty, and said so in its JSON.
        dirty: !m.transactional(),
        error,
        notices: Vec::new(),
        rollback: false,
        recorded: false,
    }
}

/// Turns the database's answer into an outcome. `position` is PostgreSQL's 0-based character
/// position in the text that was sent, and the byte offset of that text in the file.
pub(crate) fn classify(
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
        Some("SM006") => return Outcome::LockLost,
        Some("SM009") => return Outcome::AlreadyRolledBack,
        _ => {}
    }
    // The ledger's own check after the migration fails as a cast of its message (see
    // `Event::projection_check_sql`): said as itself, under the runner's own SQLSTATE.
    let ledger_broken = crate::ledger::ledger_broken(code, message);
    let (code, message) = match &ledger_broken {
        Some(said) => (Some(crate::ledger::LEDGER_BROKEN_SQLSTATE), said.as_str()),
        None => (code, message),
    };
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
        failure: Box::new(failure_of(m, error)),
    }
}

/// Records a failure as an event (and a `success = false` row) in its own transaction, after
/// the migration's transaction rolled back. A non-transactional migration, or one whose
/// transaction did not survive, stays dirty.
pub async fn record_failure(
    conn: &mut PgConnection,
    schema: &LedgerSchema,
    failure: &MigrationFailure,
    checksum: Option<&str>,
    run_id: &str,
) -> Result<(), Error> {
    let event = NewEvent {
        run_id,
        version: failure.version.as_str(),
        name: &failure.name,
        kind: if failure.rollback {
            EventKind::RollbackFailed
        } else {
            EventKind::Failed
        },
        checksum,
        execution_time_ms: None,
        dirty: failure.is_dirty(),
        error: Some(&failure.error),
        notices: &failure.notices,
        down: None,
        progress: None,
    };
    ledger::record_failure(conn, schema, &event).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::{Directives, Mode};

    fn migration(directives: Directives) -> Migration {
        Migration {
            version: Version::parse("002").unwrap(),
            name: "002_x".into(),
            path: "002_x.sql".into(),
            sql: "CREATE TABLE x (id int);".into(),
            as_written: None,
            checksum: "c".into(),
            directives,
            down: None,
        }
    }

    #[test]
    fn the_transaction_is_one_script_around_the_migration() {
        let m = migration(Directives::default());
        let previous = Version::parse("001").unwrap();
        let schema = LedgerSchema::new("public");
        let attempt = Attempt::new(
            &m,
            Some(&previous),
            "run-1",
            &schema,
            Some(42),
            &Settings::default(),
            Commit::Deferred,
        );
        let tx = attempt.transaction();
        assert!(tx.script.starts_with("BEGIN;SET LOCAL lock_timeout = '5000ms';SET LOCAL statement_timeout = '900000ms';SET LOCAL synchronous_commit = off;SELECT \"public\".schema_migrations_guard('002', '001', 42) AS stepmigrate_guard;SAVEPOINT stepmigrate_migration;\n"), "{}", tx.script);
        assert_eq!(
            &tx.script[tx
                .script
                .char_indices()
                .nth(tx.migration_offset_chars)
                .unwrap()
                .0..][..m.sql.len()],
            m.sql
        );
        assert!(tx.script.contains("\n;RELEASE SAVEPOINT stepmigrate_migration;RESET SESSION AUTHORIZATION;RESET ROLE;INSERT INTO \"public\".schema_migration_events"));
        assert!(tx.script.ends_with(&format!(";COMMIT;{RESET_SESSION}")));
        let outside = Attempt::new(
            &migration(Directives {
                mode: Mode::NoTransaction,
                ..Directives::default()
            }),
            None,
            "run-1",
            &schema,
            None,
            &Settings::default(),
            Commit::Durable,
        )
        .start_outside();
        assert!(
            outside
                .starts_with("BEGIN;SELECT \"public\".schema_migrations_guard('002', NULL, NULL)"),
            "{outside}"
        );
    }

    #[test]
    fn a_ceiling_caps_the_migrations_own_timeouts_too() {
        let m = migration(Directives {
            statement_timeout: Some(Duration::from_secs(3600)),
            lock_timeout: Some(Duration::ZERO),
            ..Directives::default()
        });
        let schema = LedgerSchema::new("public");
        let settings = Settings {
            timeout_ceiling: Some(Duration::from_secs(600)),
            ..Settings::default()
        };
        let a = Attempt::new(&m, None, "r", &schema, None, &settings, Commit::Durable);
        assert_eq!(a.statement_timeout, Duration::from_secs(600));
        assert_eq!(
            a.lock_timeout,
            Duration::from_secs(600),
            "0 (no limit) is capped too"
        );
        let a = Attempt::new(
            &m,
            None,
            "r",
            &schema,
            None,
            &Settings::default(),
            Commit::Durable,
        );
        assert_eq!(a.statement_timeout, Duration::from_secs(3600));
    }
}
