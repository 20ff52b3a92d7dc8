//! Errors of the library, and their stable names: the names Step Functions' Retry and Catch
//! match, the CLI's `--json` output carries and the exit codes derive from. This is the one
//! list of them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::migration::Version;

/// The stable name of an error, as Step Functions and scripts see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum ErrorKind {
    /// A migration waited longer than its `lock_timeout` (SQLSTATE 55P03), or another runner
    /// held the migration lock for longer than the wait allowed. Transient: retry.
    LockTimeout,
    /// The database could not be reached, or the connection broke. Transient: retry.
    ConnectionFailed,
    /// A migration's SQL failed. Not retried: the file needs fixing.
    SqlFailed,
    /// An applied migration's file changed.
    ChecksumMismatch,
    /// The migrations directory is malformed.
    InvalidMigrationSet,
    /// A migration that runs outside a transaction failed or was interrupted part way;
    /// an operator must resolve it.
    Dirty,
    /// The request (CLI arguments, execution input) is not valid.
    InvalidInput,
    /// A setting (environment variable) is missing or malformed.
    ConfigError,
    /// The ledger's projection differs from the fold of its events.
    LedgerInconsistent,
    /// The database answered the runner's own bookkeeping with an unexpected error.
    DatabaseError,
    /// An AWS service (SNS, CloudWatch, Secrets Manager, Step Functions) refused a call.
    ServiceError,
    /// A state machine execution that the trigger or `stepmigrate remote` waited for
    /// failed, timed out or was aborted.
    ExecutionFailed,
    /// A rollback would revert an irreversible migration, one without a down script, or a
    /// requirement of a migration that stays applied. Nothing was reverted.
    RollbackRefused,
    /// A migration's `requires` is not applied, or its `conflicts` is. Nothing was applied.
    DependencyNotMet,
    /// A new migration sorts below one already applied (a branch merged late) and
    /// out-of-order applies are not allowed. Nothing was applied.
    OutOfOrder,
    /// A batch migration run in Step Functions made no progress (no row changed) in several
    /// consecutive invocations (e.g. a lock it never gets). Its progress is kept: a new run
    /// resumes it.
    BatchStalled,
    /// A batch migration run in Step Functions used every invocation one execution allows it
    /// (the history budget) without finishing. Its progress is kept: a new execution resumes
    /// it.
    BatchLoopLimit,
    TaskFailed,
    /// The command was asked to stop (Ctrl-C, SIGTERM) before it finished; its message says
    /// what it stopped on the server.
    Interrupted,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 19] = [
        ErrorKind::LockTimeout,
        ErrorKind::ConnectionFailed,
        ErrorKind::SqlFailed,
        ErrorKind::ChecksumMismatch,
        ErrorKind::InvalidMigrationSet,
        ErrorKind::Dirty,
        ErrorKind::InvalidInput,
        ErrorKind::ConfigError,
        ErrorKind::LedgerInconsistent,
        ErrorKind::DatabaseError,
        ErrorKind::ServiceError,
        ErrorKind::ExecutionFailed,
        ErrorKind::RollbackRefused,
        ErrorKind::DependencyNotMet,
        ErrorKind::OutOfOrder,
        ErrorKind::BatchStalled,
        ErrorKind::BatchLoopLimit,
        ErrorKind::TaskFailed,
        ErrorKind::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::LockTimeout => "LockTimeout",
            ErrorKind::ConnectionFailed => "ConnectionFailed",
            ErrorKind::SqlFailed => "SqlFailed",
            ErrorKind::ChecksumMismatch => "ChecksumMismatch",
            ErrorKind::InvalidMigrationSet => "InvalidMigrationSet",
            ErrorKind::Dirty => "Dirty",
            ErrorKind::InvalidInput => "InvalidInput",
            ErrorKind::ConfigError => "ConfigError",
            ErrorKind::LedgerInconsistent => "LedgerInconsistent",
            ErrorKind::DatabaseError => "DatabaseError",
            ErrorKind::ServiceError => "ServiceError",
            ErrorKind::ExecutionFailed => "ExecutionFailed",
            ErrorKind::RollbackRefused => "RollbackRefused",
            ErrorKind::DependencyNotMet => "DependencyNotMet",
            ErrorKind::OutOfOrder => "OutOfOrder",
            ErrorKind::BatchStalled => "BatchStalled",
            ErrorKind::BatchLoopLimit => "BatchLoopLimit",
            ErrorKind::TaskFailed => "TaskFailed",
            ErrorKind::Interrupted => "Interrupted",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem of a migration set, naming the file (and line, where there is one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SetProblem {
    #[serde(serialize_with = "lossy_path")]
    pub file: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub message: String,
}

impl SetProblem {
    pub fn new(file: &std::path::Path, line: Option<usize>, message: String) -> SetProblem {
        SetProblem {
            file: file.to_owned(),
            line,
            message,
        }
    }
}

impl fmt::Display for SetProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// An applied migration whose file changed since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Drift {
    pub version: Version,
    pub name: String,
    #[serde(serialize_with = "lossy_path")]
    pub file: PathBuf,
    /// The checksum the ledger recorded when the migration was applied.
    pub recorded: String,
    /// The checksum of the file now.
    pub actual: String,
}

/// A migration left half-done outside a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DirtyMigration {
    pub version: Version,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A session still runs its statement (a killed runner's backend).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub still_running: bool,
}

/// What to do about dirty migrations: wait for those whose statement still runs, then check
/// and resolve.
fn dirty_advice(migrations: &[DirtyMigration]) -> String {
    let running: Vec<&str> = migrations
        .iter()
        .filter(|m| m.still_running)
        .map(|m| m.name.as_str())
        .collect();
    let resolve = "check the database by hand, then run `stepmigrate resolve VERSION --applied` or `--not-applied`";
    if running.is_empty() {
        resolve.to_owned()
    } else {
        format!(
            "a session still runs the statement of {} (a runner at work on it, or one killed mid-migration whose backend runs on): wait for it to end, then, if it is still dirty, {resolve}",
            running.join(", ")
        )
    }
}

/// What PostgreSQL said about a failed migration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SqlError {
    pub sqlstate: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// 1-based line in the migration file, where PostgreSQL gave a position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The statement that failed, where it is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    /// PostgreSQL's context (e.g. the PL/pgSQL line), where given.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_: Option<String>,
}

impl SqlError {
    /// SQLSTATE 55P03: `lock_timeout` expired.
    pub fn is_lock_timeout(&self) -> bool {
        self.sqlstate == LOCK_NOT_AVAILABLE
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.sqlstate)?;
        if let Some(line) = self.line {
            write!(f, " at line {line}")?;
        }
        if let Some(detail) = &self.detail {
            write!(f, "; detail: {detail}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "; hint: {hint}")?;
        }
        Ok(())
    }
}

/// A migration that failed, with the database's error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MigrationFailure {
    pub version: Version,
    pub name: String,
    #[serde(serialize_with = "lossy_path")]
    pub file: PathBuf,
    pub transactional: bool,
    /// Part of a transactional migration may be committed: its transaction ended early.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dirty: bool,
    pub error: SqlError,
    /// What PostgreSQL said before the error (NOTICEs, WARNINGs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
    /// It was the migration's down script that failed (a rollback).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
    /// The ledger holds it already, recorded by the runner that hit it (a long migration's
    /// ECS task): read back, it is final (never retried) and the record step does not record
    /// it again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recorded: bool,
}

impl MigrationFailure {
    /// Whether the failure leaves the migration dirty (possibly half-applied).
    pub fn is_dirty(&self) -> bool {
        !self.transactional || self.dirty
    }
}

/// Paths as text, with anything that is not UTF-8 replaced: a file name must never make the
/// output fail.
pub fn lossy_path<S: serde::Serializer>(path: &std::path::Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid migration set in {}:\n{}", dir.display(), join_lines(problems))]
    InvalidMigrationSet {
        dir: PathBuf,
        problems: Vec<SetProblem>,
    },

    #[error("applied migrations changed since they were applied; nothing was applied:\n{}", drift.iter().map(|d| format!("  {}: recorded checksum {}, file now {}", d.file.display(), d.recorded, d.actual)).collect::<Vec<_>>().join("\n"))]
    ChecksumMismatch { drift: Vec<Drift> },

    #[error("dirty migrations: {} failed or was interrupted outside a transaction and may be half-applied; {}", migrations.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", "), dirty_advice(migrations))]
    Dirty { migrations: Vec<DirtyMigration> },

    #[error("{} {} failed: {}{}", if failure.rollback { "the rollback of" } else { "migration" }, failure.name, failure.error, if failure.is_dirty() { "; it may be half-applied and is now dirty: check the database, then run `stepmigrate resolve VERSION --applied` or `--not-applied`" } else { "" })]
    MigrationFailed { failure: Box<MigrationFailure> },

    #[error("the migration lock was lost (its database session ended) after {applied} migration(s) of this run were applied; nothing more was applied. Run again to continue")]
    LockLost { applied: usize },

    #[error("another runner held the migration lock for {}s; gave up waiting (STEPMIGRATE_LOCK_WAIT)", waited.as_secs())]
    LockNotAcquired { waited: Duration },

    #[error("{name} {}: nothing was run; try again once that build is recorded", if *waits { "requires a migration another runner is applying right now (it yielded the migration lock for the build)" } else { "is being applied right now by another runner, which yielded the migration lock for the build" })]
    BuildInProgress { name: String, waits: bool },

    #[error("{name} ran to its end with the migration lock yielded for the build, but the lock was not free again within {}s to record it (STEPMIGRATE_LOCK_WAIT): it is dirty; check the database, then run `stepmigrate resolve VERSION --applied` or `--not-applied`", waited.as_secs())]
    BuildUnrecorded { name: String, waited: Duration },

    #[error("a migration's transaction is still open in backend {pid} (another runner at work, or one killed or interrupted mid-migration whose statement runs on); waited {}s for it to end, and planned nothing from a state it may still change (STEPMIGRATE_LOCK_WAIT). Wait for it, or, if no runner is at work, cancel it: SELECT pg_cancel_backend({pid})", waited.as_secs())]
    MigrationInFlight { pid: i32, waited: Duration },

    /// One of the runner's own statements waited longer than its `lock_timeout` (SQLSTATE
    /// 55P03) for a lock another session holds; `holders` are the sessions in the way, when
    /// they could be found.
    #[error("{context}: {}", lock_wait_words(lock_timeout, holders))]
    LockWaitTimeout {
        context: String,
        lock_timeout: Option<Duration>,
        holders: Vec<crate::lock::LockHolder>,
    },

    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    ConnectionFailed { target: String, reason: String },

    #[error("{variable}: {reason}")]
    Config { variable: String, reason: String },

    #[error("{0}")]
    InvalidInput(String),

    /// Ctrl-C or SIGTERM: what the command stopped, and what may still commit.
    #[error("{0}")]
    Interrupted(String),

    /// A snapshot file (`stepmigrate diff`) that cannot be read, is not JSON, or is of
    /// another format.
    #[error("{}: {reason}", file.display())]
    InvalidSnapshot { file: PathBuf, reason: String },

    #[error("the ledger's schema_migrations differs from the fold of its events (run `stepmigrate ledger rebuild` to restore it):\n{}", differences.join("\n"))]
    LedgerInconsistent { differences: Vec<String> },

    #[error(
        "the rollback is refused; nothing was reverted:\n{}",
        join_lines(reasons)
    )]
    RollbackRefused { reasons: Vec<String> },

    #[error(
        "dependencies between migrations are not met; nothing was applied:\n{}",
        join_lines(reasons)
    )]
    DependencyNotMet { reasons: Vec<String> },

    #[error("migrations sort below the newest applied one ({newest}) and out-of-order applies are not allowed; nothing was applied:\n{}\nRenumber them above {newest} (then `stepmigrate hash`), or allow it once with --allow-out-of-order (allow_out_of_order = true in stepmigrate.toml, STEPMIGRATE_ALLOW_OUT_OF_ORDER=true for the workers)", join_lines(migrations))]
    OutOfOrder {
        newest: String,
        migrations: Vec<String>,
    },

    #[error("batch migration {name} made no progress in {invocations} invocations in a row (still at {rows} rows after {batches} batches; is a lock held on its table?); its progress is kept: a new run resumes it")]
    BatchStalled {
        name: String,
        invocations: u32,
        batches: u64,
        rows: u64,
    },

    #[error("batch migration {name} is not done after {invocations} invocations, as many as one execution allows it (the history budget): {rows} rows in {batches} batches so far, kept; start a new execution to resume it")]
    BatchLoopLimit {
        name: String,
        invocations: u32,
        batches: u64,
        rows: u64,
    },

    /// The ECS task of a long migration stopped without applying it and without recording a
    /// failure (killed, out of memory, never started): `reason` is what ECS or Step Functions
    /// said.
    #[error("{name}: its ECS task stopped without applying it or recording a failure ({reason}); {}", if *dirty { "it is dirty (a no-transaction migration stopped part way): check it by hand, then `stepmigrate resolve`" } else { "it is not applied" })]
    TaskFailed {
        name: String,
        reason: String,
        dirty: bool,
    },

    #[error("{context}: {message}")]
    Database { context: String, message: String },

    #[error("{service} refused the call: {message}")]
    Service { service: String, message: String },

    /// `message` names the failed migration and the database's error when the execution
    /// failed on one (its Fail state's Cause), else what ended it.
    #[error("{message} (execution {status}: {execution})")]
    ExecutionFailed {
        execution: String,
        status: String,
        error: String,
        message: String,
    },
}

/// `lock_timeout` expired (`lock_not_available`).
pub const LOCK_NOT_AVAILABLE: &str = "55P03";

/// SQLSTATEs that say the session ended (an operator or a timeout terminated it, the server
/// is shutting down, the connection broke): nothing about the SQL, so transient.
pub fn is_session_ended(sqlstate: &str) -> bool {
    sqlstate.starts_with("57P") || sqlstate.starts_with("08")
}

/// What a lock wait that timed out waited for, and what to do about it.
fn lock_wait_words(lock_timeout: &Option<Duration>, holders: &[crate::lock::LockHolder]) -> String {
    let waited = match lock_timeout {
        Some(d) => format!(
            "waited {}, its lock_timeout (--lock-timeout, STEPMIGRATE_LOCK_TIMEOUT),",
            crate::config::pg_interval(*d)
        ),
        None => "waited longer than its lock_timeout (--lock-timeout, STEPMIGRATE_LOCK_TIMEOUT)"
            .to_owned(),
    };
    if holders.is_empty() {
        return format!("{waited} for a lock another session held, and gave up (SQLSTATE 55P03); that session had let go by the time it was looked for: run again");
    }
    let pids: Vec<String> = holders.iter().map(|h| h.pid.to_string()).collect();
    format!(
        "{waited} for a lock another session holds, and gave up (SQLSTATE 55P03): {}. End that transaction (COMMIT or ROLLBACK in that session), or stop it with SELECT pg_terminate_backend(PID) (PID: {}); then run again, or give it longer with --lock-timeout",
        holders.iter().map(|h| h.to_string()).collect::<Vec<_>>().join("; "),
        pids.join(", ")
    )
}

fn join_lines<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| format!("  {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidMigrationSet { .. } => ErrorKind::InvalidMigrationSet,
            Error::ChecksumMismatch { .. } => ErrorKind::ChecksumMismatch,
            Error::Dirty { .. } | Error::BuildUnrecorded { .. } => ErrorKind::Dirty,
            // Read back from the ledger: the runner that hit it already tried again.
            Error::MigrationFailed { failure } if failure.recorded => ErrorKind::SqlFailed,
            // Retrying is safe only where the migration rolled back whole.
            Error::MigrationFailed { failure }
                if failure.error.is_lock_timeout() && !failure.is_dirty() =>
            {
                ErrorKind::LockTimeout
            }
            // Its session was ended under it (by an operator, a failover, a timeout, or the
            // migration itself): it rolled back whole, so a new run may try again.
            Error::MigrationFailed { failure }
                if is_session_ended(&failure.error.sqlstate) && !failure.is_dirty() =>
            {
                ErrorKind::ConnectionFailed
            }
            Error::MigrationFailed { .. } => ErrorKind::SqlFailed,
            // Another runner at work, as when it holds the migration lock: retried.
            Error::LockNotAcquired { .. }
            | Error::MigrationInFlight { .. }
            | Error::BuildInProgress { .. }
            | Error::LockWaitTimeout { .. } => ErrorKind::LockTimeout,
            // Transient: a new run takes the lock again and finds where this one stopped.
            Error::LockLost { .. } => ErrorKind::ConnectionFailed,
            Error::ConnectionFailed { .. } => ErrorKind::ConnectionFailed,
            Error::Config { .. } => ErrorKind::ConfigError,
            Error::InvalidInput(_) | Error::InvalidSnapshot { .. } => ErrorKind::InvalidInput,
            Error::LedgerInconsistent { .. } => ErrorKind::LedgerInconsistent,
            Error::Database { .. } => ErrorKind::DatabaseError,
            Error::Service { .. } => ErrorKind::ServiceError,
            Error::ExecutionFailed { .. } => ErrorKind::ExecutionFailed,
            Error::RollbackRefused { .. } => ErrorKind::RollbackRefused,
            Error::DependencyNotMet { .. } => ErrorKind::DependencyNotMet,
            Error::OutOfOrder { .. } => ErrorKind::OutOfOrder,
            Error::BatchStalled { .. } => ErrorKind::BatchStalled,
            Error::BatchLoopLimit { .. } => ErrorKind::BatchLoopLimit,
            Error::TaskFailed { .. } => ErrorKind::TaskFailed,
            Error::Interrupted(_) => ErrorKind::Interrupted,
        }
    }

    /// Wraps an error of the runner's own queries. A broken connection is `ConnectionFailed`
    /// (transient), anything else `DatabaseError`; the message never carries the URL.
    pub fn database(context: impl Into<String>, err: sqlx::Error) -> Error {
        let context = context.into();
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Protocol(_) => Error::ConnectionFailed {
                target: context,
                reason: err.to_string(),
            },
            sqlx::Error::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                let message = format!("{} (SQLSTATE {code})", db.message());
                if code == LOCK_NOT_AVAILABLE {
                    Error::LockWaitTimeout {
                        context,
                        lock_timeout: None,
                        holders: Vec::new(),
                    }
                } else if is_session_ended(&code) {
                    Error::ConnectionFailed {
                        target: context,
                        reason: message,
                    }
                } else {
                    Error::Database { context, message }
                }
            }
            other => Error::Database {
                context,
                message: other.to_string(),
            },
        }
    }

    /// The error as every output shows it: the CLI's `--json`, a worker's `errorMessage`.
    pub fn report(&self) -> ErrorReport {
        ErrorReport {
            name: self.kind(),
            message: self.to_string(),
            details: self.details(),
            exit_code: None,
        }
    }

    /// The structured part of [`Error::report`].
    pub fn details(&self) -> ErrorDetails {
        let mut d = ErrorDetails::default();
        match self {
            Error::InvalidMigrationSet { problems, .. } => d.problems = Some(problems.clone()),
            Error::ChecksumMismatch { drift } => d.drift = Some(drift.clone()),
            Error::Dirty { migrations } => d.dirty = Some(migrations.clone()),
            Error::MigrationFailed { failure } => d.migration = Some(failure.clone()),
            Error::LedgerInconsistent { differences } => d.differences = Some(differences.clone()),
            Error::RollbackRefused { reasons } | Error::DependencyNotMet { reasons } => {
                d.differences = Some(reasons.clone())
            }
            Error::OutOfOrder { migrations, .. } => d.differences = Some(migrations.clone()),
            Error::Config { variable, .. } => d.variable = Some(variable.clone()),
            Error::LockWaitTimeout { holders, .. } => d.holders = Some(holders.clone()),
            Error::ExecutionFailed {
                execution,
                status,
                error,
                ..
            } => {
                d.execution = Some(execution.clone());
                d.status = Some(status.clone());
                d.error = Some(error.clone());
            }
            _ => {}
        }
        d
    }
}

/// One error, in the one JSON shape every output uses: `{"name", "message", "details"}`
/// (and, from the CLI, `exit_code`). A worker's `errorMessage` is this document, which the
/// record step reads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ErrorReport {
    /// The stable name: Step Functions' `Error`, the CLI's exit code.
    pub name: ErrorKind,
    pub message: String,
    #[serde(default)]
    pub details: ErrorDetails,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<u8>,
}

/// What an error carries beyond its message, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ErrorDetails {
    /// `InvalidMigrationSet`: every problem, with file and line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<SetProblem>>,
    /// `ChecksumMismatch`: each changed file with both checksums.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<Vec<Drift>>,
    /// `Dirty`: the migrations to resolve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirty: Option<Vec<DirtyMigration>>,
    /// A failed migration (`SqlFailed`, `LockTimeout`, `ConnectionFailed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<Box<MigrationFailure>>,
    /// `LedgerInconsistent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub differences: Option<Vec<String>>,
    /// `LockTimeout` of a lock the runner's own statement waited for: the sessions in its
    /// way (no query text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holders: Option<Vec<crate::lock::LockHolder>>,
    /// `ConfigError`: the variable (or setting) at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variable: Option<String>,
    /// `ExecutionFailed`: the execution, its status and its error name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
