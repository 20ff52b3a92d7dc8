//! `verify`: runs pending migrations on a real database inside a transaction that is rolled
//! back, one statement at a time, and reports what each statement did to the database: how
//! long it took, the relation locks it took (read from `pg_locks` before the rollback),
//! tables and indexes it rewrote (their `relfilenode` changed), the indexes it built and
//! whether they are valid.
//!
//! Two ways to run it:
//! - on a **scratch database** ([`ScratchDatabase`]: created on the target's server, or a
//!   given empty one), brought to the target's applied history through the normal runner;
//!   each pending migration is verified (rolled back) and then applied for real so the next
//!   one sees its effects. The target is only read.
//! - **in the target's own transaction** ([`Migrator::verify_in_transaction`], for staging):
//!   every pending transactional migration in ONE transaction, each between savepoints, all
//!   rolled back; then one `verified` event per verified migration, which the fold skips.
//!
//! The pure parts (what a lock mode blocks, the lock and catalog differences, the flags, the
//! bounded summary) are separate from the database I/O and tested without a database.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgDatabaseError, PgErrorPosition};
use sqlx::PgConnection;
use tracing::{info, info_span, warn, Instrument};

use crate::apply::{Attempt, Commit, RESET_SESSION};
use crate::config::{pg_interval, Settings};
use crate::db::Database;
use crate::error::{lossy_path, Error, ErrorKind, MigrationFailure, SqlError};
use crate::ledger::{EventKind, LedgerSchema};
use crate::migration::{Migration, Mode, Version};
use crate::plan::{Scope, State};
use crate::rollback::RollbackTarget;
use crate::runner::{Migrator, Quiet};
use crate::schema::{Change, ChangeType, LedgerFilter, SchemaDiff, Snapshot, SnapshotOptions};
use crate::server_guard;
use crate::sql::{self, quote_literal, Statement};

/// The SQLSTATE reported for a statement that verify refuses to send because it would end
/// the transaction that keeps the verification from committing.
/// Not SM009: that is the revert guard's "already rolled back", which the applier reads as
/// another runner's work, not as a failure.
pub const TRANSACTION_CONTROL_SQLSTATE: &str = "SM013";

/// The SQLSTATE reported for a migration that verify does not run because a statement of it
/// acts outside its transaction.
pub use crate::server_guard::OUTSIDE_TRANSACTION_SQLSTATE;

/// PostgreSQL's `invalid_transaction_termination`: a COMMIT inside a procedure called in a
/// transaction block.
const INVALID_TRANSACTION_TERMINATION: &str = "2D000";

/// The default `lock_timeout` of `verify --in-transaction-only`: it runs on a live database,
/// and every lock it takes is held until the rollback.
pub const IN_TRANSACTION_LOCK_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the migrations were verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// On a scratch database with the target's history applied.
    Scratch,
    /// In one rolled-back transaction on the target itself.
    InTransaction,
}

/// What `verify` found, migration by migration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyReport {
    pub run_id: String,
    pub method: Method,
    /// The database whose pending migrations were verified (host, port, name; no secret).
    pub database: String,
    /// Where they ran: the scratch database, or the target itself.
    pub verified_on: String,
    pub migrations: Vec<MigrationVerification>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub elapsed_ms: u64,
    /// Verified on a database with the target's schema and none of its data (scratch or
    /// `--dev-url`): what depends on the rows (a NOT NULL, a unique index, a validated
    /// constraint, the rows an UPDATE changes, a rewrite's time) is unknown there; see each
    /// statement's `depends_on_data` and each migration's `target_tables`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_copy: bool,
    /// Scratch mode: where the copy's schema, built by replaying the applied migrations'
    /// files, differs from the target's (a hotfix by hand, an edited history): the results
    /// are the replayed schema's, not the target's. Empty when they agree.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_differs: Vec<String>,
    /// `--in-transaction-only`: tables whose planner statistics a statement wrote in place
    /// from rows the verification changed (PostgreSQL does not roll them back), analyzed
    /// again after the rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics: Option<StatisticsRestored>,
}

/// Planner statistics the verification wrote in place on the target, and their repair.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatisticsRestored {
    /// `schema.table (reltuples written: 0, before: 100000)` per table.
    pub tables: Vec<String>,
    /// Whether the `ANALYZE` after the rollback succeeded; its error otherwise.
    pub analyzed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One migration's verification.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MigrationVerification {
    pub version: Version,
    pub name: String,
    #[serde(serialize_with = "lossy_path")]
    pub file: PathBuf,
    pub mode: Mode,
    #[serde(flatten)]
    pub outcome: VerifyOutcome,
    pub duration_ms: f64,
    pub statements: Vec<StatementReport>,
    /// Tables, indexes, materialized views and sequences whose storage was replaced.
    pub rewrites: Vec<Rewrite>,
    pub new_indexes: Vec<NewIndex>,
    pub flags: Flags,
    /// The up/down round trip (`verify --round-trip`, `preview`); absent when not asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_trip: Option<RoundTrip>,
    /// Per existing relation, the strongest lock the migration's transaction holds on it and
    /// for how long: a lock is held from the statement that takes it to the COMMIT, whatever
    /// runs in between. Empty for a migration outside a transaction (not observed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locks_held: Vec<LockHeld>,
    /// On an empty copy: a statement's outcome depends on the target's rows, so the `ok` says
    /// nothing about what `up` will do on the target (not shown with a ✓).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unknown_on_empty_copy: bool,
    /// On an empty copy: the existing tables the migration rewrites or scans, with what the
    /// target's statistics say they hold, for the real cost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_tables: Vec<TargetTable>,
    /// What of the whole server (roles, databases, memberships, settings...) it changes, when
    /// it does: such a migration is failed (or, caught by its words before running, skipped)
    /// and verify exits non-zero; nothing of it committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub touches_server: Option<String>,
    /// The function or command by which it acts outside its transaction (a sequence's
    /// `setval` on the target, `dblink`, a replication slot, a server file...), when it names
    /// one: such a migration is not run (a rollback would not undo it), reported skipped, and
    /// verify exits non-zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acts_outside_transaction: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum VerifyOutcome {
    Ok,
    Failed { error: SqlError },
    Skipped { reason: String },
}

impl VerifyOutcome {
    pub fn name(&self) -> &'static str {
        match self {
            VerifyOutcome::Ok => "ok",
            VerifyOutcome::Failed { .. } => "failed",
            VerifyOutcome::Skipped { .. } => "skipped",
        }
    }
}

impl MigrationVerification {
    /// A failure raised by the runner's server guard (its detail names what changed) marks
    /// the migration as touching the server.
    fn with_server_failure(mut self) -> Self {
        if let VerifyOutcome::Failed { error } = &self.outcome {
            if error.sqlstate == server_guard::SERVER_CHANGE_SQLSTATE
                && self.touches_server.is_none()
            {
                self.touches_server = Some(error.detail.clone().unwrap_or_default());
            }
            if error.sqlstate == OUTSIDE_TRANSACTION_SQLSTATE
                && self.acts_outside_transaction.is_none()
            {
                self.acts_outside_transaction = Some(error.detail.clone().unwrap_or_default());
            }
        }
        self
    }
}

/// One statement of a migration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatementReport {
    /// 1-based line of its first token in the file.
    pub line: usize,
    /// Its first words, on one line.
    pub summary: String,
    /// Round trip, in milliseconds; absent where it was not run on its own (a migration
    /// outside a transaction runs through the runner, which times it whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// Relation locks it took that the transaction did not hold before it.
    pub locks: Vec<LockTaken>,
    /// Tables, indexes, materialized views and sequences whose storage this statement
    /// replaced (their file node changed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rewrites: Vec<Rewrite>,
    /// On an empty copy: why what this statement did here says little about the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on_data: Option<DataDependence>,
}

/// How a statement's result depends on the rows it meets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataDependence {
    pub kind: DataKind,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    /// It may fail on the target's rows (or change another number of them): unknown on an
    /// empty copy.
    Outcome,
    /// Its time (and the rows it reads or writes) is the target's rows': the copy's is not.
    Cost,
}

/// An existing table a migration rewrites or scans, as the target's statistics have it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetTable {
    pub relation: String,
    /// `pg_class.reltuples` on the target (an estimate; the leaves' sum for a partitioned
    /// table); absent when never analyzed or not found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<i64>,
    /// `pg_total_relation_size` on the target: table, indexes and TOAST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    /// Why a figure is missing, if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Why a statement's result depends on the rows it meets, if it does (by its words: enough
/// to warn, never to pass).
pub fn depends_on_data(statement: &Statement<'_>) -> Option<DataDependence> {
    let words: Vec<String> = sql::Tokens(statement.text)
        .filter(|w| {
            w.chars()
                .next()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
        .map(str::to_ascii_uppercase)
        .collect();
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let has = |seq: &[&str]| w.windows(seq.len()).any(|x| x == seq);
    let outcome = |reason: &str| {
        Some(DataDependence {
            kind: DataKind::Outcome,
            reason: reason.to_owned(),
        })
    };
    let cost = |reason: &str| {
        Some(DataDependence {
            kind: DataKind::Cost,
            reason: reason.to_owned(),
        })
    };
    let verb = statement.main_verb.as_deref().unwrap_or_default();
    // Large objects are the target's data, which the copy does not have.
    let large_objects = w.iter().any(|x| {
        matches!(
            *x,
            "LO_CREATE"
                | "LO_CREAT"
                | "LO_FROM_BYTEA"
                | "LO_UNLINK"
                | "LO_OPEN"
                | "LO_PUT"
                | "LO_GET"
                | "LO_TRUNCATE"
        )
    }) || has(&["LARGE", "OBJECT"]);
    match (w.first().copied(), w.get(1).copied()) {
        _ if large_objects => outcome(
            "large objects are the target's data, which the copy does not have: whether an OID is taken, or exists, is unknown there",
        ),
        _ if matches!(verb, "UPDATE" | "DELETE" | "MERGE") => {
            outcome("the rows it changes are the target's: how many, and whether a constraint or trigger stops it, is unknown on an empty copy")
        }
        (Some("ALTER"), Some("TABLE")) => {
            if has(&["SET", "NOT", "NULL"]) {
                outcome("SET NOT NULL fails on any NULL among the target's rows")
            } else if has(&["VALIDATE", "CONSTRAINT"]) {
                outcome("validating a constraint fails on the target's rows that break it")
            } else if has(&["ADD"])
                && !has(&["NOT", "VALID"])
                && w.iter().any(|x| {
                    matches!(
                        *x,
                        "CONSTRAINT" | "CHECK" | "UNIQUE" | "PRIMARY" | "FOREIGN" | "EXCLUDE" | "REFERENCES"
                    )
                })
            {
                outcome("a constraint added without NOT VALID is checked against the target's rows, and fails on those that break it")
            } else if has(&["ADD"]) && has(&["NOT", "NULL"]) && !has(&["DEFAULT"]) {
                outcome("a NOT NULL column without a default fails on a table that has rows")
            } else if w.contains(&"TYPE") && w.contains(&"USING") {
                outcome("a type change USING an expression converts the target's values, and fails on those it cannot")
            } else if w.contains(&"TYPE") {
                cost("a type change rewrites the table (or checks every row): its time is the target's rows'")
            } else {
                None
            }
        }
        (Some("CREATE"), Some("UNIQUE")) => {
            outcome("a unique index fails on duplicates among the target's rows")
        }
        (Some("CREATE"), Some("INDEX")) => cost("an index build reads every row of the target's table"),
        (Some("CLUSTER" | "VACUUM"), _) | (Some("REFRESH"), Some("MATERIALIZED")) => {
            cost("it reads and writes every row: its time is the target's rows'")
        }
        _ => None,
    }
}

/// A relation lock a statement took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockTaken {
    /// `schema.name`, quoted where needed.
    pub relation: String,
    /// `table`, `index`, `sequence`, `view`, ...
    pub relkind: String,
    /// As `pg_locks` names it, e.g. `AccessExclusiveLock`.
    pub mode: String,
    /// The relation existed before the migration (a lock on a table the migration created is
    /// nobody's problem).
    pub existing: bool,
    /// What the lock keeps other sessions from doing until the transaction ends.
    pub blocks: String,
}

impl LockTaken {
    pub fn access_exclusive_on_existing(&self) -> bool {
        self.existing && self.mode == "AccessExclusiveLock"
    }
}

/// The strongest lock a migration's transaction holds on an existing relation, from the
/// statement that takes it to the end of the transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockHeld {
    pub relation: String,
    pub relkind: String,
    /// The strongest mode held, as `pg_locks` names it.
    pub mode: String,
    /// What the locks held on it keep other sessions from doing, until the COMMIT.
    pub blocks: String,
    /// The line of the statement that took the strongest mode.
    pub from_line: usize,
    /// From that statement's start to the end of the migration (its last statement, and the
    /// check of its deferred constraints), in milliseconds.
    pub held_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rewrite {
    pub relation: String,
    pub relkind: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewIndex {
    pub name: String,
    pub table: String,
    /// `pg_index.indisvalid`: an index a failed `CREATE INDEX CONCURRENTLY` left behind is
    /// invalid (not used by queries, still maintained by writes).
    pub valid: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flags {
    pub access_exclusive_on_existing: bool,
    pub rewrites: bool,
    pub non_transactional: bool,
}

/// The SQLSTATE of a failed round trip in the verify error (no statement of it failed as such).
pub const ROUND_TRIP_SQLSTATE: &str = "SM010";

/// The up/down round trip of one migration on the scratch database: schema before, up
/// (snapshot A), its down file (must give back the schema before), up again (must give A).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum RoundTrip {
    /// The down restored the schema before the up, and the up applied again made the same
    /// schema as the first time.
    Ok { down_ms: f64, reapply_ms: f64 },
    /// Not tried: the migration is `irreversible`, failed its verification, or comes after a
    /// failure.
    Skipped { reason: String },
    /// `message` names the objects that differ; `differences` has them as the schema diff does
    /// (before → after the down, or first apply → second apply).
    Failed {
        step: RoundTripStep,
        message: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        differences: Vec<crate::schema::Change>,
    },
}

/// Where a round trip failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundTripStep {
    /// No down file, and not `irreversible`: a rollback would be refused.
    NoDownFile,
    /// The down was refused or failed.
    Down,
    /// The down ran, but the schema is not the one before the up.
    DownDiffers,
    /// The up failed when applied again after its down.
    Reapply,
    /// The up applied again made another schema than the first time.
    ReapplyDiffers,
}

impl RoundTrip {
    pub fn failed(&self) -> bool {
        matches!(self, RoundTrip::Failed { .. })
    }

    /// One line for people: `ok`, `skipped: irreversible`, or the failure's message.
    pub fn describe(&self) -> String {
        match self {
            RoundTrip::Ok { down_ms, reapply_ms } => format!(
                "ok: the down restored the schema ({down_ms:.1} ms), applied again it made the same schema ({reapply_ms:.1} ms)"
            ),
            RoundTrip::Skipped { reason } => format!("skipped: {reason}"),
            RoundTrip::Failed { message, .. } => format!("FAILED: {message}"),
        }
    }
}

/// Options of a scratch verification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// After each migration is applied: revert it with its down file, compare the schema with
    /// the one before it, apply it again and compare with the first apply.
    pub round_trip: bool,
}

impl VerifyReport {
    /// The first migration whose round trip failed.
    pub fn round_trip_failed(&self) -> Option<&MigrationVerification> {
        self.migrations
            .iter()
            .find(|m| m.round_trip.as_ref().is_some_and(RoundTrip::failed))
    }

    /// The first migration that failed verification.
    pub fn failed(&self) -> Option<&MigrationVerification> {
        self.migrations
            .iter()
            .find(|m| matches!(m.outcome, VerifyOutcome::Failed { .. }))
    }

    /// The failed verification as the error commands and steps report (`SqlFailed`): a
    /// failed migration, else one that touches the server (not run), else a failed round
    /// trip.
    pub fn error(&self) -> Option<Error> {
        let refused = || {
            self.migrations
                .iter()
                .find(|m| m.touches_server.is_some() || m.acts_outside_transaction.is_some())
        };
        if let (None, Some(m)) = (self.failed(), refused()) {
            let error = match (&m.touches_server, &m.acts_outside_transaction) {
                (Some(what), _) => SqlError {
                    sqlstate: crate::server_guard::SERVER_CHANGE_SQLSTATE.to_owned(),
                    message: format!("the migration touches the server: it changes {what}, which belong to the whole server; it was not run"),
                    detail: Some(what.clone()),
                    ..SqlError::default()
                },
                (None, what) => {
                    let what = what.clone().unwrap_or_default();
                    let reason = match &m.outcome {
                        VerifyOutcome::Skipped { reason } => reason.clone(),
                        _ => format!("it acts outside its transaction ({what})"),
                    };
                    SqlError {
                        sqlstate: OUTSIDE_TRANSACTION_SQLSTATE.to_owned(),
                        message: reason,
                        detail: Some(what),
                        ..SqlError::default()
                    }
                }
            };
            return Some(Error::MigrationFailed {
                failure: Box::new(MigrationFailure {
                    version: m.version.clone(),
                    name: m.name.clone(),
                    file: m.file.clone(),
                    transactional: m.mode != Mode::NoTransaction,
                    dirty: false,
                    error,
                    notices: Vec::new(),
                    rollback: false,
                    recorded: false,
                }),
            });
        }
        let Some(m) = self.failed() else {
            let m = self.round_trip_failed()?;
            let Some(RoundTrip::Failed { message, .. }) = &m.round_trip else {
                return None;
            };
            return Some(Error::MigrationFailed {
                failure: Box::new(MigrationFailure {
                    version: m.version.clone(),
                    name: m.name.clone(),
                    file: m.file.clone(),
                    transactional: true,
                    dirty: false,
                    error: SqlError {
                        sqlstate: ROUND_TRIP_SQLSTATE.to_owned(),
                        message: format!("the up/down round trip failed: {message}"),
                        ..SqlError::default()
                    },
                    notices: Vec::new(),
                    rollback: false,
                    recorded: false,
                }),
            });
        };
        let VerifyOutcome::Failed { error } = &m.outcome else {
            return None;
        };
        Some(Error::MigrationFailed {
            failure: Box::new(MigrationFailure {
                version: m.version.clone(),
                name: m.name.clone(),
                file: m.file.clone(),
                transactional: true,
                dirty: false,
                error: error.clone(),
                notices: Vec::new(),
                rollback: false,
                recorded: false,
            }),
        })
    }

    pub fn count(&self, outcome: &str) -> usize {
        self.migrations
            .iter()
            .filter(|m| m.outcome.name() == outcome)
            .count()
    }

    /// A bounded digest for places with a size limit (a Step Functions state output): per
    /// migration its name, outcome, duration and counts, at most `max_migrations` of them.
    pub fn summary(&self, max_migrations: usize) -> VerifySummary {
        const MAX_TEXT: usize = 500;
        let migrations = self
            .migrations
            .iter()
            .take(max_migrations)
            .map(|m| MigrationDigest {
                version: m.version.clone(),
                name: m.name.clone(),
                outcome: m.outcome.name().to_owned(),
                error: match &m.outcome {
                    VerifyOutcome::Failed { error } => Some(truncate(&error.to_string(), MAX_TEXT)),
                    VerifyOutcome::Skipped { reason } => Some(truncate(reason, MAX_TEXT)),
                    VerifyOutcome::Ok => None,
                },
                duration_ms: m.duration_ms.round() as u64,
                statements: m.statements.len(),
                locks: m.statements.iter().map(|s| s.locks.len()).sum(),
                access_exclusive_on_existing: m
                    .statements
                    .iter()
                    .flat_map(|s| &s.locks)
                    .filter(|l| l.access_exclusive_on_existing())
                    .map(|l| l.relation.clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .take(10)
                    .collect(),
                rewrites: m.rewrites.len(),
                new_indexes: m.new_indexes.len(),
                invalid_indexes: m.new_indexes.iter().filter(|i| !i.valid).count(),
            })
            .collect();
        VerifySummary {
            run_id: self.run_id.clone(),
            method: self.method,
            verified: self.count("ok"),
            failed: self.count("failed"),
            skipped: self.count("skipped"),
            truncated: self.migrations.len() > max_migrations,
            migrations,
            elapsed_ms: self.elapsed_ms,
        }
    }
}

/// [`VerifyReport::summary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifySummary {
    pub run_id: String,
    pub method: Method,
    pub verified: usize,
    pub failed: usize,
    pub skipped: usize,
    /// More migrations were verified than are listed.
    pub truncated: bool,
    pub migrations: Vec<MigrationDigest>,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationDigest {
    pub version: Version,
    pub name: String,
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
    pub statements: usize,
    pub locks: usize,
    /// Existing relations it would lock against reads and writes (at most 10).
    pub access_exclusive_on_existing: Vec<String>,
    pub rewrites: usize,
    pub new_indexes: usize,
    pub invalid_indexes: usize,
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}...", text.chars().take(max).collect::<String>())
    }
}

/// What a relation lock mode keeps other sessions from doing (PostgreSQL's conflict table, in
/// plain words).
pub fn blocks(mode: &str) -> &'static str {
    match mode {
        "AccessShareLock" => "only ACCESS EXCLUSIVE locks (DROP, most ALTER TABLE); reads and writes go on",
        "RowShareLock" => "EXCLUSIVE and ACCESS EXCLUSIVE locks; reads go on, and writes of the rows it locks (SELECT ... FOR UPDATE/SHARE) wait until its COMMIT",
        "RowExclusiveLock" => "SHARE and stronger locks (CREATE INDEX without CONCURRENTLY, most ALTER TABLE); reads go on, and writes of the rows it changes wait until its COMMIT",
        "ShareUpdateExclusiveLock" => "schema changes, VACUUM, ANALYZE and CREATE INDEX CONCURRENTLY on it; reads and writes go on",
        "ShareLock" => "writes (INSERT, UPDATE, DELETE); reads go on",
        "ShareRowExclusiveLock" => "writes (INSERT, UPDATE, DELETE) and SHARE locks; reads go on",
        "ExclusiveLock" => "writes and SELECT ... FOR UPDATE/SHARE; plain reads go on",
        "AccessExclusiveLock" => "reads and writes: every query on it waits",
        _ => "unknown lock mode",
    }
}

/// A relation lock mode's level (1: ACCESS SHARE ... 8: ACCESS EXCLUSIVE), 0 if unknown.
pub fn lock_level(mode: &str) -> u8 {
    match mode {
        "AccessShareLock" => 1,
        "RowShareLock" => 2,
        "RowExclusiveLock" => 3,
        "ShareUpdateExclusiveLock" => 4,
        "ShareLock" => 5,
        "ShareRowExclusiveLock" => 6,
        "ExclusiveLock" => 7,
        "AccessExclusiveLock" => 8,
        _ => 0,
    }
}

const MODES: [&str; 8] = [
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
];

/// The modes a mode conflicts with, as bits (bit `level - 1`): PostgreSQL's conflict table.
fn conflicts(mode: &str) -> u8 {
    match lock_level(mode) {
        1 => 0b1000_0000,
        2 => 0b1100_0000,
        3 => 0b1111_0000,
        4 => 0b1111_1000,
        5 => 0b1111_0100,
        6 => 0b1111_1100,
        7 => 0b1111_1110,
        8 => 0b1111_1111,
        _ => 0,
    }
}

/// What holding all of `modes` at once blocks, in words: the description of the weakest
/// mode that blocks at least as much (ROW EXCLUSIVE and SHARE together block what SHARE ROW
/// EXCLUSIVE does).
pub fn blocks_together<'a>(modes: impl IntoIterator<Item = &'a str>) -> &'static str {
    let all = modes.into_iter().fold(0u8, |acc, m| acc | conflicts(m));
    MODES
        .iter()
        .find(|m| conflicts(m) & all == all)
        .map_or("unknown lock mode", |m| blocks(m))
}

/// Per relation, the modes the migration's transaction has taken so far, with the line of
/// the statement that took each: what a statement's lock line and the summary are read from.
#[derive(Debug, Default)]
struct LocksSoFar(BTreeMap<String, Vec<(String, usize, usize)>>);

impl LocksSoFar {
    /// Records the locks statement number `index` (at `line`) took, and rewrites their
    /// `blocks` to what the transaction's locks on the relation block together: a weak lock
    /// taken after a strong one does not let reads and writes go on.
    fn take(
        &mut self,
        locks: &mut [LockTaken],
        line: usize,
        index: usize,
        tables: &BTreeMap<String, String>,
    ) {
        for l in locks.iter() {
            self.0
                .entry(l.relation.clone())
                .or_default()
                .push((l.mode.clone(), line, index));
        }
        for l in locks.iter_mut() {
            let held = &self.0[&l.relation];
            let together = blocks_together(held.iter().map(|(m, _, _)| m.as_str()));
            if together != l.blocks {
                let (strongest, since, _) = strongest(held).expect("recorded above");
                l.blocks = format!(
                    "{together} (the transaction holds {} on it since line {since}, until its COMMIT)",
                    mode_words(strongest)
                );
            }
            // An index is read and written through its table: a weak lock on the index of a
            // table held strongly lets nothing go on.
            let Some((table, held)) = tables
                .get(&l.relation)
                .and_then(|t| Some((t, self.0.get(t)?)))
            else {
                continue;
            };
            let (strongest, since, _) = strongest(held).expect("not empty");
            if lock_level(strongest) > lock_level(&l.mode) {
                l.blocks = format!(
                    "{} (through its table {table}, which the transaction holds {} since line {since}, until its COMMIT)",
                    blocks_together(held.iter().map(|(m, _, _)| m.as_str())),
                    mode_words(strongest)
                );
            }
        }
    }

    /// The summary: per existing relation, its strongest mode (the first statement that took
    /// it), what all its modes block together, and the time from that statement's start
    /// (`starts[index]`, ms from the migration's start) to `end_ms`.
    fn held(&self, statements: &[StatementReport], starts: &[f64], end_ms: f64) -> Vec<LockHeld> {
        let existing: BTreeMap<&str, &LockTaken> = statements
            .iter()
            .flat_map(|s| &s.locks)
            .filter(|l| l.existing)
            .map(|l| (l.relation.as_str(), l))
            .collect();
        self.0
            .iter()
            .filter_map(|(relation, modes)| {
                let l = existing.get(relation.as_str())?;
                let (mode, line, index) = strongest(modes)?;
                let start = starts.get(*index).copied().unwrap_or(0.0);
                Some(LockHeld {
                    relation: relation.clone(),
                    relkind: l.relkind.clone(),
                    mode: mode.clone(),
                    blocks: blocks_together(modes.iter().map(|(m, _, _)| m.as_str())).to_owned(),
                    from_line: *line,
                    held_ms: ((end_ms - start).max(0.0) * 100.0).round() / 100.0,
                })
            })
            .collect()
    }
}

/// The strongest of the modes taken, the first statement that took it.
fn strongest(modes: &[(String, usize, usize)]) -> Option<&(String, usize, usize)> {
    modes
        .iter()
        .max_by_key(|(m, _, i)| (lock_level(m), std::cmp::Reverse(*i)))
}

/// `AccessExclusiveLock` as people write it: `ACCESS EXCLUSIVE`.
pub fn mode_words(mode: &str) -> String {
    let base = mode.strip_suffix("Lock").unwrap_or(mode);
    let mut out = String::new();
    for (i, c) in base.char_indices() {
        if i > 0 && c.is_ascii_uppercase() {
            out.push(' ');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// `pg_class.relkind` in words.
pub fn relkind_name(relkind: &str) -> &'static str {
    match relkind {
        "r" => "table",
        "p" => "partitioned table",
        "i" => "index",
        "I" => "partitioned index",
        "S" => "sequence",
        "v" => "view",
        "m" => "materialized view",
        "f" => "foreign table",
        "t" => "TOAST table",
        "c" => "composite type",
        _ => "relation",
    }
}

/// A user relation as the catalog has it at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub name: String,
    pub relkind: String,
    pub relfilenode: i64,
    /// For an index: `indisvalid`, and its table.
    pub index: Option<(bool, String)>,
    /// For an index, its table's oid.
    pub table_oid: Option<i64>,
}

/// The user relations by oid: the before/after that rewrites and new indexes are read from.
pub type Catalog = BTreeMap<i64, Relation>;

/// The relations, each once and in order, on which `locks` holds a mode that `baseline` did not.
fn locked_since(baseline: &BTreeSet<(i64, String)>, locks: &[HeldLock]) -> Vec<i64> {
    locks
        .iter()
        .filter(|l| !baseline.contains(&(l.oid, l.mode.clone())))
        .map(|l| l.oid)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// A relation lock this backend holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HeldLock {
    pub oid: i64,
    pub mode: String,
    /// Name and relkind, when the relation is still in the catalog (not dropped).
    pub relation: Option<(String, String)>,
}

/// The locks in `after` that were not in `before`, described against the catalog as it was
/// before the migration (`existing`, and the name of a relation the statement dropped).
pub fn new_locks(
    before: &[HeldLock],
    after: &[HeldLock],
    catalog_before: &Catalog,
) -> Vec<LockTaken> {
    let held: BTreeSet<(i64, &str)> = before.iter().map(|l| (l.oid, l.mode.as_str())).collect();
    let mut taken: Vec<LockTaken> = after
        .iter()
        .filter(|l| !held.contains(&(l.oid, l.mode.as_str())))
        .filter_map(|l| {
            let known = catalog_before.get(&l.oid);
            let (relation, relkind) = match (&l.relation, known) {
                (Some((name, kind)), _) => (name.clone(), relkind_name(kind).to_owned()),
                (None, Some(r)) => (
                    format!("{} (dropped)", r.name),
                    relkind_name(&r.relkind).to_owned(),
                ),
                // Neither before nor after: a relation the statement made and dropped itself
                // (the new heap of a table rewrite), locked by nobody else.
                (None, None) => return None,
            };
            // A TOAST table or index is locked with its table, which the report names: its
            // own name (with an OID in it) says nothing more.
            if relation.starts_with("pg_toast.") {
                return None;
            }
            Some(LockTaken {
                relation,
                relkind,
                blocks: blocks(&l.mode).to_owned(),
                mode: l.mode.clone(),
                existing: known.is_some(),
            })
        })
        .collect();
    taken.sort_by(|a, b| a.relation.cmp(&b.relation).then(a.mode.cmp(&b.mode)));
    taken
}

/// Relations whose storage changed, and indexes that did not exist before.
pub fn compare_catalogs(before: &Catalog, after: &Catalog) -> (Vec<Rewrite>, Vec<NewIndex>) {
    let mut rewrites = Vec::new();
    let mut new_indexes = Vec::new();
    for (oid, rel) in after {
        match before.get(oid) {
            // Mapped and partitioned relations have relfilenode 0.
            Some(old) if old.relfilenode != 0 && rel.relfilenode != old.relfilenode => rewrites
                .push(Rewrite {
                    relation: rel.name.clone(),
                    relkind: relkind_name(&rel.relkind).to_owned(),
                }),
            Some(_) => {}
            None => {
                if let Some((valid, table)) = &rel.index {
                    new_indexes.push(NewIndex {
                        name: rel.name.clone(),
                        table: table.clone(),
                        valid: *valid,
                    });
                }
            }
        }
    }
    rewrites.sort_by(|a, b| a.relation.cmp(&b.relation));
    new_indexes.sort_by(|a, b| a.name.cmp(&b.name));
    (rewrites, new_indexes)
}

fn flags(m: &Migration, statements: &[StatementReport], rewrites: &[Rewrite]) -> Flags {
    Flags {
        access_exclusive_on_existing: statements
            .iter()
            .flat_map(|s| &s.locks)
            .any(LockTaken::access_exclusive_on_existing),
        rewrites: !rewrites.is_empty(),
        non_transactional: !m.transactional(),
    }
}

/// A statement's first words, on one line.
fn summary_of(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    truncate(&flat, 80)
}

/// The first statement of `m` that changes the whole server: its line and what it changes.
fn server_wide(m: &Migration) -> Option<(usize, &'static str)> {
    sql::split_statements(&m.sql)
        .iter()
        .find_map(|s| sql::touches_the_server(s).map(|what| (s.line, what)))
}

fn skipped(m: &Migration, reason: String) -> MigrationVerification {
    MigrationVerification {
        version: m.version.clone(),
        name: m.name.clone(),
        file: m.path.clone(),
        mode: m.directives.mode,
        outcome: VerifyOutcome::Skipped { reason },
        duration_ms: 0.0,
        statements: Vec::new(),
        rewrites: Vec::new(),
        new_indexes: Vec::new(),
        flags: Flags {
            non_transactional: !m.transactional(),
            ..Flags::default()
        },
        round_trip: None,
        locks_held: Vec::new(),
        unknown_on_empty_copy: false,
        target_tables: Vec::new(),
        touches_server: None,
        acts_outside_transaction: None,
    }
}

/// `m`, not run because a statement of it acts outside its transaction (`on_target`: it would
/// run on the target itself), if one does: rolled back or not, its effect would stay.
fn refused_outside_transaction(m: &Migration, on_target: bool) -> Option<MigrationVerification> {
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

// User relations only: the catalogs (which the observation queries lock themselves), TOAST
// and temporary schemas are left out.
const USER_NAMESPACE: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'";

/// A row of [`read_catalog`]'s query: oid, name, relkind, relfilenode, indisvalid, table.
type CatalogRow = (
    i64,
    String,
    String,
    i64,
    Option<bool>,
    Option<String>,
    Option<i64>,
);

/// The user relations with their storage, or (`only`) just those oids, with index validity
/// and table. User relations have oids from `FirstNormalObjectId` (16384) on; temporary ones
/// are left out.
async fn read_catalog(conn: &mut PgConnection, only: Option<&[i64]>) -> Result<Catalog, Error> {
    let sql = format!(
        "SELECT c.oid::int8, format('%I.%I', n.nspname, c.relname), c.relkind::text, c.relfilenode::int8,
                i.indisvalid, CASE WHEN t.oid IS NOT NULL THEN format('%I.%I', tn.nspname, t.relname) END, i.indrelid::int8
         FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid
         LEFT JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
         LEFT JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
         WHERE {USER_NAMESPACE} AND c.relkind IN ('r', 'p', 'i', 'I', 'S', 'm', 'v', 'f'){}",
        if only.is_some() { " AND c.oid::int8 = ANY($1)" } else { "" }
    );
    let mut query = sqlx::query_as::<_, CatalogRow>(&sql);
    if let Some(oids) = only {
        query = query.bind(oids);
    }
    let rows: Vec<CatalogRow> = query
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| Error::database("reading the catalog", e))?;
    Ok(to_catalog(rows))
}

/// Before a migration, cheaply: every user relation's name, kind and storage, without the
/// joins (a migration late in a long `--in-transaction-only` run sees thousands).
async fn read_storage(conn: &mut PgConnection) -> Result<Catalog, Error> {
    let rows: Vec<CatalogRow> = sqlx::query_as(
        "SELECT c.oid::int8, c.relnamespace::regnamespace::text || '.' || quote_ident(c.relname), c.relkind::text,
                c.relfilenode::int8, NULL::bool, NULL::text, i.indrelid::int8
         FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid
         WHERE c.oid >= 16384 AND c.relpersistence <> 't' AND c.relkind IN ('r', 'p', 'i', 'I', 'S', 'm', 'v', 'f')",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::database("reading the catalog", e))?;
    Ok(to_catalog(rows))
}

fn to_catalog(rows: Vec<CatalogRow>) -> Catalog {
    rows.into_iter()
        .map(
            |(oid, name, relkind, relfilenode, valid, table, table_oid)| {
                (
                    oid,
                    Relation {
                        name,
                        relkind,
                        relfilenode,
                        index: valid.map(|v| (v, table.unwrap_or_default())),
                        table_oid,
                    },
                )
            },
        )
        .collect()
}

/// This backend's relation locks on user relations (oids from `FirstNormalObjectId`, 16384:
/// the catalogs, which every query locks, are left out cheaply), the ones not in `held` named
/// from the catalog (none when `held` is `None`: a baseline): reading names for every held
/// lock costs milliseconds once a transaction holds hundreds.
async fn read_locks(
    conn: &mut PgConnection,
    held: Option<&[HeldLock]>,
) -> Result<Vec<HeldLock>, sqlx::Error> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT l.relation::int8, l.mode FROM pg_catalog.pg_locks l
         WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted AND l.relation >= 16384
           AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())",
    )
    .fetch_all(&mut *conn)
    .await?;
    let known: Option<BTreeSet<(i64, &str)>> =
        held.map(|h| h.iter().map(|l| (l.oid, l.mode.as_str())).collect());
    let unknown: Vec<i64> = rows
        .iter()
        .filter(|(oid, mode)| {
            known
                .as_ref()
                .is_some_and(|k| !k.contains(&(*oid, mode.as_str())))
        })
        .map(|(oid, _)| *oid)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let names: BTreeMap<i64, (String, String)> = if unknown.is_empty() {
        BTreeMap::new()
    } else {
        let sql = format!(
            "SELECT c.oid::int8, format('%I.%I', n.nspname, c.relname), c.relkind::text
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid::int8 = ANY($1) AND {USER_NAMESPACE}"
        );
        let named: Vec<(i64, String, String)> = sqlx::query_as(&sql)
            .bind(&unknown)
            .fetch_all(&mut *conn)
            .await?;
        named
            .into_iter()
            .map(|(oid, name, kind)| (oid, (name, kind)))
            .collect()
    };
    let mut locks: Vec<HeldLock> = rows
        .into_iter()
        .map(|(oid, mode)| HeldLock {
            relation: names.get(&oid).cloned(),
            oid,
            mode,
        })
        .collect();
    locks.sort();
    Ok(locks)
}

/// The timeouts a migration gets, as `up` would give it, with the lock wait capped (0, no
/// limit, capped too) where verify runs on a live database.
fn timeouts(
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
    SqlError {
        sqlstate: db
            .code()
            .map(|c| c.into_owned())
            .unwrap_or_else(|| "XX000".into()),
        message: db.message().to_owned(),
        detail: pg.and_then(|e| e.detail()).map(str::to_owned),
        hint: pg.and_then(|e| e.hint()).map(str::to_owned),
        line: Some(line),
        statement: Some(statement.text.to_owned()),
        where_: pg.and_then(|e| e.r#where()).map(str::to_owned),
    }
}

const SAVEPOINT: &str = "stepmigrate_verify";

/// Verifies one transactional migration inside the transaction open on `conn`, in a
/// savepoint: statement by statement, reading this backend's locks after each, and the
/// catalog before and after. A failure rolls back to the savepoint; success releases it when
/// `keep` (the next migration sees this one's effects), else rolls back to it too.
async fn verify_in_open_transaction(
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
        touches_server,
        acts_outside_transaction: None,
    })
}

/// The relations among `locked` whose storage changed since `storage` last saw it (which it
/// then records); relations the migration made itself are recorded, not reported.
async fn statement_rewrites(
    conn: &mut PgConnection,
    locked: &[i64],
    before: &Catalog,
    storage: &mut BTreeMap<i64, i64>,
) -> Result<Vec<Rewrite>, Error> {
    if locked.is_empty() {
        return Ok(Vec::new());
    }
    let now: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT c.oid::int8, c.relfilenode::int8 FROM pg_catalog.pg_class c WHERE c.oid::int8 = ANY($1)",
    )
    .bind(locked)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::database("reading the catalog", e))?;
    let mut rewrites = Vec::new();
    for (oid, node) in now {
        match storage.insert(oid, node) {
            // Mapped and partitioned relations have relfilenode 0.
            Some(old) if old != 0 && old != node => {
                if let Some(r) = before
                    .get(&oid)
                    .filter(|r| !r.name.starts_with("pg_toast."))
                {
                    rewrites.push(Rewrite {
                        relation: r.name.clone(),
                        relkind: relkind_name(&r.relkind).to_owned(),
                    });
                }
            }
            _ => {}
        }
    }
    rewrites.sort_by(|a, b| a.relation.cmp(&b.relation));
    Ok(rewrites)
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
            let pg = db.try_downcast_ref::<PgDatabaseError>();
            Some(SqlError {
                sqlstate: db
                    .code()
                    .map(|c| c.into_owned())
                    .unwrap_or_else(|| "XX000".into()),
                message: db.message().to_owned(),
                detail: pg.and_then(|e| e.detail()).map(str::to_owned),
                hint: pg.and_then(|e| e.hint()).map(str::to_owned),
                line: Some(last_line(&m.sql)),
                statement: Some(DEFERRED_STATEMENT.to_owned()),
                where_: pg.and_then(|e| e.r#where()).map(str::to_owned),
            })
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

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

/// A database that verify may change at will: one it created on the target's server (dropped
/// by [`ScratchDatabase::drop`]), or an empty one the user gave (`--dev-url`; emptied again
/// afterwards).
pub struct ScratchDatabase {
    /// A session on the server it was created from, to drop it.
    server: Option<Database>,
    db: Database,
    name: String,
}

/// Counts and names user objects: a dev database must have none.
/// On the target: the clauses that give a new database the target's encoding and locale
/// (none when `template1` has them already), and its own settings (`ALTER DATABASE ... SET`).
const DATABASE_LIKE_SQL: &str = "SELECT CASE WHEN (t.encoding, t.datcollate, t.datctype, to_jsonb(t)->>'datlocprovider', coalesce(to_jsonb(t)->>'datlocale', to_jsonb(t)->>'daticulocale'))
          IS DISTINCT FROM (d.encoding, d.datcollate, d.datctype, to_jsonb(d)->>'datlocprovider', coalesce(to_jsonb(d)->>'datlocale', to_jsonb(d)->>'daticulocale'))
     THEN pg_catalog.format(' TEMPLATE template0 ENCODING %L LC_COLLATE %L LC_CTYPE %L', pg_catalog.pg_encoding_to_char(d.encoding), d.datcollate, d.datctype)
          || CASE to_jsonb(d)->>'datlocprovider'
                 WHEN 'i' THEN pg_catalog.format(' LOCALE_PROVIDER icu ICU_LOCALE %L', coalesce(to_jsonb(d)->>'datlocale', to_jsonb(d)->>'daticulocale'))
                 WHEN 'b' THEN pg_catalog.format(' LOCALE_PROVIDER builtin BUILTIN_LOCALE %L', to_jsonb(d)->>'datlocale')
                 ELSE '' END
     ELSE '' END,
     coalesce((SELECT s.setconfig FROM pg_catalog.pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0), '{}')
FROM pg_catalog.pg_database d, pg_catalog.pg_database t WHERE d.datname = pg_catalog.current_database() AND t.datname = 'template1'";

/// A database's encoding and locale, and its own settings, in words: what the copy must share
/// with the target beyond the schema.
const DATABASE_TRAITS_SQL: &str = "SELECT pg_catalog.format('encoding %s, LC_COLLATE %s, LC_CTYPE %s%s', pg_catalog.pg_encoding_to_char(d.encoding), d.datcollate, d.datctype,
            CASE to_jsonb(d)->>'datlocprovider' WHEN 'i' THEN ', ICU locale ' || coalesce(to_jsonb(d)->>'datlocale', to_jsonb(d)->>'daticulocale')
                 WHEN 'b' THEN ', builtin locale ' || (to_jsonb(d)->>'datlocale') ELSE '' END),
       coalesce((SELECT pg_catalog.array_to_string(s.setconfig, '; ') FROM pg_catalog.pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0), '')
FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()";

/// What a migration made in `pg_catalog` itself (a superuser may): objects from
/// `FirstNormalObjectId` (16384) on that no extension owns, as `(classid, objid)`.
macro_rules! catalog_objects {
    () => {
        "SELECT x.classid, x.objid FROM (
        SELECT 'pg_catalog.pg_proc'::regclass AS classid, oid AS objid, pronamespace AS nsp FROM pg_catalog.pg_proc
        UNION ALL SELECT 'pg_catalog.pg_type'::regclass, oid, typnamespace FROM pg_catalog.pg_type WHERE typrelid = 0 AND typcategory <> 'A'
        UNION ALL SELECT 'pg_catalog.pg_operator'::regclass, oid, oprnamespace FROM pg_catalog.pg_operator
        UNION ALL SELECT 'pg_catalog.pg_collation'::regclass, oid, collnamespace FROM pg_catalog.pg_collation
        UNION ALL SELECT 'pg_catalog.pg_conversion'::regclass, oid, connamespace FROM pg_catalog.pg_conversion
        UNION ALL SELECT 'pg_catalog.pg_opclass'::regclass, oid, opcnamespace FROM pg_catalog.pg_opclass
        UNION ALL SELECT 'pg_catalog.pg_opfamily'::regclass, oid, opfnamespace FROM pg_catalog.pg_opfamily
        UNION ALL SELECT 'pg_catalog.pg_ts_config'::regclass, oid, cfgnamespace FROM pg_catalog.pg_ts_config
        UNION ALL SELECT 'pg_catalog.pg_ts_dict'::regclass, oid, dictnamespace FROM pg_catalog.pg_ts_dict
        UNION ALL SELECT 'pg_catalog.pg_ts_parser'::regclass, oid, prsnamespace FROM pg_catalog.pg_ts_parser
        UNION ALL SELECT 'pg_catalog.pg_ts_template'::regclass, oid, tmplnamespace FROM pg_catalog.pg_ts_template) x
        WHERE x.nsp = 'pg_catalog'::regnamespace AND x.objid >= 16384
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = x.classid AND d.objid = x.objid AND d.deptype = 'e')"
    };
}

const USER_OBJECTS: &str = concat!("SELECT coalesce(string_agg(what, ', '), '') FROM (
    SELECT 'relation ' || format('%I.%I', n.nspname, c.relname) AS what FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
    UNION ALL SELECT 'function ' || p.oid::regprocedure::text FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
    UNION ALL SELECT 'type ' || t.oid::regtype::text FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
        AND t.typrelid = 0 AND t.typcategory <> 'A'
    UNION ALL SELECT 'collation ' || c.oid::regcollation::text FROM pg_catalog.pg_collation c JOIN pg_catalog.pg_namespace n ON n.oid = c.collnamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
    UNION ALL SELECT 'text search configuration ' || c.oid::regconfig::text FROM pg_catalog.pg_ts_config c JOIN pg_catalog.pg_namespace n ON n.oid = c.cfgnamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
    UNION ALL SELECT 'operator ' || o.oid::regoperator::text FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
    UNION ALL SELECT 'schema ' || quote_ident(nspname) FROM pg_catalog.pg_namespace
      WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'public') AND nspname NOT LIKE 'pg\\_%'
    UNION ALL SELECT 'extension ' || quote_ident(extname) FROM pg_catalog.pg_extension WHERE extname <> 'plpgsql'
    UNION ALL SELECT 'publication ' || quote_ident(pubname) FROM pg_catalog.pg_publication
    UNION ALL SELECT 'foreign-data wrapper ' || quote_ident(fdwname) FROM pg_catalog.pg_foreign_data_wrapper
    UNION ALL SELECT 'event trigger ' || quote_ident(evtname) FROM pg_catalog.pg_event_trigger
    UNION ALL SELECT 'cast ' || format('(%s AS %s)', castsource::regtype, casttarget::regtype) FROM pg_catalog.pg_cast WHERE oid >= 16384
    UNION ALL SELECT o.type || ' ' || o.identity FROM (", catalog_objects!(), ") c, pg_catalog.pg_identify_object(c.classid, c.objid, 0) o
    UNION ALL SELECT 'access method ' || quote_ident(amname) FROM pg_catalog.pg_am WHERE oid >= 16384
    UNION ALL SELECT 'default privileges of ' || defaclrole::regrole::text FROM pg_catalog.pg_default_acl
    UNION ALL SELECT 'large object ' || oid::text FROM pg_catalog.pg_largeobject_metadata
    LIMIT 5) objects");

/// Empties a dev database again: everything verify's migrations may have made in it, and
/// `public` as a new database has it.
const EMPTY_DEV: &str = concat!(
    r#"DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT extname FROM pg_catalog.pg_extension WHERE extname <> 'plpgsql' LOOP
        EXECUTE format('DROP EXTENSION IF EXISTS %I CASCADE', r.extname);
    END LOOP;
    FOR r IN SELECT evtname FROM pg_catalog.pg_event_trigger LOOP
        EXECUTE format('DROP EVENT TRIGGER IF EXISTS %I', r.evtname);
    END LOOP;
    FOR r IN SELECT oid FROM pg_catalog.pg_largeobject_metadata LOOP
        PERFORM pg_catalog.lo_unlink(r.oid);
    END LOOP;
    FOR r IN SELECT amname FROM pg_catalog.pg_am WHERE oid >= 16384 LOOP
        EXECUTE format('DROP ACCESS METHOD IF EXISTS %I CASCADE', r.amname);
    END LOOP;
    -- What a migration made in pg_catalog itself, by its identity.
    FOR r IN SELECT o.type, o.identity, c.classid, c.objid FROM ("#,
    catalog_objects!(),
    r#") c,
                    pg_catalog.pg_identify_object(c.classid, c.objid, 0) o LOOP
        BEGIN
            EXECUTE format('DROP %s IF EXISTS %s CASCADE',
                CASE WHEN r.classid = 'pg_catalog.pg_type'::regclass
                          AND (SELECT typtype FROM pg_catalog.pg_type WHERE oid = r.objid) = 'd' THEN 'DOMAIN'
                     WHEN r.classid = 'pg_catalog.pg_proc'::regclass THEN
                          CASE (SELECT prokind FROM pg_catalog.pg_proc WHERE oid = r.objid)
                              WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END
                     ELSE upper(r.type) END,
                r.identity);
        EXCEPTION WHEN undefined_object OR undefined_function OR dependent_objects_still_exist THEN
            NULL;
        END;
    END LOOP;
    -- Default privileges back to the built-in ones (PostgreSQL then drops the entry): all
    -- revoked, then the owner's, and PUBLIC's on functions and types.
    BEGIN
        FOR r IN SELECT d.defaclrole::regrole::text AS role, d.defaclnamespace::regnamespace::text AS nsp,
                        d.defaclnamespace AS nspoid, d.defaclobjtype AS t, a.grantee
                 FROM pg_catalog.pg_default_acl d, pg_catalog.aclexplode(d.defaclacl) a LOOP
            EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %s %s REVOKE ALL ON %s FROM %s', r.role,
                CASE WHEN r.nspoid = 0 THEN '' ELSE 'IN SCHEMA ' || r.nsp END,
                CASE r.t WHEN 'r' THEN 'TABLES' WHEN 'S' THEN 'SEQUENCES' WHEN 'f' THEN 'FUNCTIONS' WHEN 'T' THEN 'TYPES' ELSE 'SCHEMAS' END,
                CASE WHEN r.grantee = 0 THEN 'PUBLIC' ELSE r.grantee::regrole::text END);
        END LOOP;
        FOR r IN SELECT DISTINCT d.defaclrole::regrole::text AS role, d.defaclobjtype AS t
                 FROM pg_catalog.pg_default_acl d WHERE d.defaclnamespace = 0 LOOP
            EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %s GRANT ALL ON %s TO %s', r.role,
                CASE r.t WHEN 'r' THEN 'TABLES' WHEN 'S' THEN 'SEQUENCES' WHEN 'f' THEN 'FUNCTIONS' WHEN 'T' THEN 'TYPES' ELSE 'SCHEMAS' END, r.role);
            IF r.t IN ('f', 'T') THEN
                EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %s GRANT ALL ON %s TO PUBLIC', r.role,
                    CASE r.t WHEN 'f' THEN 'FUNCTIONS' ELSE 'TYPES' END);
            END IF;
        END LOOP;
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;
    END;
    FOR r IN SELECT pubname FROM pg_catalog.pg_publication LOOP
        EXECUTE format('DROP PUBLICATION IF EXISTS %I', r.pubname);
    END LOOP;
    FOR r IN SELECT fdwname FROM pg_catalog.pg_foreign_data_wrapper LOOP
        EXECUTE format('DROP FOREIGN DATA WRAPPER IF EXISTS %I CASCADE', r.fdwname);
    END LOOP;
    FOR r IN SELECT castsource::regtype AS s, casttarget::regtype AS t FROM pg_catalog.pg_cast WHERE oid >= 16384 LOOP
        EXECUTE format('DROP CAST IF EXISTS (%s AS %s) CASCADE', r.s, r.t);
    END LOOP;
    FOR r IN SELECT nspname FROM pg_catalog.pg_namespace
             WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'public') AND nspname NOT LIKE 'pg\_%' LOOP
        EXECUTE format('DROP SCHEMA IF EXISTS %I CASCADE', r.nspname);
    END LOOP;
    -- public, as a new database has it. Only the database's owner may make it again: for
    -- anyone else (the block is undone) it is emptied object by object.
    BEGIN
        DROP SCHEMA IF EXISTS public CASCADE;
        IF current_setting('server_version_num')::int >= 150000 THEN
            EXECUTE 'CREATE SCHEMA public AUTHORIZATION pg_database_owner';
            GRANT USAGE ON SCHEMA public TO PUBLIC;
        ELSE
            CREATE SCHEMA public;
            GRANT ALL ON SCHEMA public TO PUBLIC;
        END IF;
        COMMENT ON SCHEMA public IS 'standard public schema';
    EXCEPTION WHEN insufficient_privilege THEN
        -- A sequence owned by a column (serial, identity) goes with its table.
        FOR r IN SELECT relname, relkind FROM pg_catalog.pg_class c
                 WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
                   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                                   WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                                     AND d.deptype IN ('a', 'i'))
                 ORDER BY relkind = 'S' LOOP
            EXECUTE format('DROP %s IF EXISTS public.%I CASCADE',
                CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
                               WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'c' THEN 'TYPE' ELSE 'TABLE' END, r.relname);
        END LOOP;
        FOR r IN SELECT oid::regprocedure AS f, prokind FROM pg_catalog.pg_proc WHERE pronamespace = 'public'::regnamespace LOOP
            EXECUTE format('DROP %s IF EXISTS %s CASCADE',
                CASE r.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END, r.f);
        END LOOP;
        FOR r IN SELECT t.oid::regtype AS t, t.typtype FROM pg_catalog.pg_type t
                 WHERE t.typnamespace = 'public'::regnamespace AND t.typrelid = 0 AND t.typcategory <> 'A' LOOP
            EXECUTE format('DROP %s IF EXISTS %s CASCADE', CASE r.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, r.t);
        END LOOP;
        FOR r IN SELECT oid::regcollation AS c FROM pg_catalog.pg_collation WHERE collnamespace = 'public'::regnamespace LOOP
            EXECUTE format('DROP COLLATION IF EXISTS %s', r.c);
        END LOOP;
        FOR r IN SELECT oid::regconfig AS c FROM pg_catalog.pg_ts_config WHERE cfgnamespace = 'public'::regnamespace LOOP
            EXECUTE format('DROP TEXT SEARCH CONFIGURATION IF EXISTS %s CASCADE', r.c);
        END LOOP;
        FOR r IN SELECT oid::regoperator AS o FROM pg_catalog.pg_operator WHERE oprnamespace = 'public'::regnamespace LOOP
            EXECUTE format('DROP OPERATOR IF EXISTS %s CASCADE', r.o);
        END LOOP;
    END;
    BEGIN
        EXECUTE format('ALTER DATABASE %I RESET ALL', current_database());
        EXECUTE format('COMMENT ON DATABASE %I IS NULL', current_database());
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;
    END;
END $$"#
);

impl ScratchDatabase {
    /// Creates `<prefix>_<random>` on `server`'s server (needs `CREATEDB`).
    pub async fn create(server: &Database, prefix: &str) -> Result<ScratchDatabase, Error> {
        let name = format!("{prefix}_{:08x}", rand::random::<u32>());
        let mut conn = server.connect().await?;
        // The target's encoding, locale and settings are the copy's too: a migration's
        // outcome depends on them (`search_path`, a collation's order, a character the
        // encoding lacks).
        let (like, settings): (String, Vec<String>) = sqlx::query_as(DATABASE_LIKE_SQL)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| {
                Error::database("reading the target database's encoding and settings", e)
            })?;
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\"{like}"))
            .execute(&mut *conn)
            .await
            .map_err(|e| {
                Error::database(
                    format!("creating the scratch database {name} on {server}'s server (the role needs CREATEDB; or pass --dev-url with an empty database)"),
                    e,
                )
            })?;
        for setting in settings {
            if let Some((key, value)) = setting.split_once('=') {
                // One that cannot be set here is reported by the copy's comparison.
                let _ = sqlx::raw_sql(&format!("ALTER DATABASE \"{name}\" SET {key} = {value}"))
                    .execute(&mut *conn)
                    .await;
            }
        }
        info!(scratch = %name, "created the scratch database");
        Ok(ScratchDatabase {
            server: Some(server.clone()),
            db: server.with_database(&name),
            name,
        })
    }

    /// A database the user gave, which must hold no user objects (like Atlas' dev database).
    pub async fn dev(db: Database) -> Result<ScratchDatabase, Error> {
        let mut conn = db.connect().await?;
        let (objects,): (String,) = sqlx::query_as(USER_OBJECTS)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| Error::database("checking that the dev database is empty", e))?;
        drop(conn);
        if !objects.is_empty() {
            db.close().await;
            return Err(Error::InvalidInput(format!(
                "--dev-url: {db} is not empty ({objects}); verify applies migrations there and empties it afterwards, so give it an empty database of its own"
            )));
        }
        Ok(ScratchDatabase {
            server: None,
            name: db.name().to_owned(),
            db,
        })
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Why `m` must not run here, if it must not: on a scratch database created on the
    /// target's server, a statement that changes the whole server (a role, a database) would
    /// change it for real. A `--dev-url` database is the user's choice of server.
    pub fn cannot_run(&self, m: &Migration) -> Option<(String, &'static str)> {
        let (line, what) = self.refused_by_words(m)?;
        Some((
            format!(
                "not verified: the migration touches the server: line {line} changes {what}, which belong to the whole server: run here it would change them for real"
            ),
            what,
        ))
    }

    /// The first statement of `m` that changes the whole server by its words, where words
    /// decide: anywhere on a scratch database of the target's server; on a dev database only
    /// in a migration outside a transaction (in a transaction, the server guard judges by
    /// effect before anything commits).
    fn refused_by_words(&self, m: &Migration) -> Option<(usize, &'static str)> {
        if self.server.is_none() && m.transactional() {
            return None;
        }
        server_wide(m)
    }

    /// Refuses, before anything runs, a history that cannot be replayed here: the target's
    /// applied migrations up to (not including) `first_pending` that change the whole server
    /// (replayed on the same server, they would act on it for real, or fail as already done).
    pub fn ensure_replayable(
        &self,
        set: &crate::migration::MigrationSet,
        first_pending: Option<&Version>,
    ) -> Result<(), Error> {
        let history = set
            .migrations()
            .iter()
            .take_while(|m| first_pending.is_none_or(|v| m.version.number() < v.number()));
        for m in history {
            if let Some((line, what)) = self.refused_by_words(m) {
                return Err(Error::InvalidInput(format!(
                    "{}:{line} changes {what}, which belong to the whole server (the migration touches the server): replaying it on the verification database would change the server for real (or fail as already done); verify with --in-transaction-only",
                    m.path.display()
                )));
            }
            let outside = sql::split_statements(&m.sql)
                .into_iter()
                .find_map(|s| sql::acts_outside_transaction(&s, false).map(|what| (s.line, what)));
            if let Some((line, what)) = outside {
                return Err(Error::InvalidInput(format!(
                    "{}:{line} acts outside its transaction ({what}): replaying it on the verification database would act for real; verify with --in-transaction-only",
                    m.path.display()
                )));
            }
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A migrator of `set` on the scratch database, to apply to it through the normal runner.
    pub fn migrator(&self, set: &crate::migration::MigrationSet, settings: &Settings) -> Migrator {
        // Whatever the runner commits here, nothing of the whole server may change.
        let settings = Settings {
            guard_server: true,
            ..settings.clone()
        };
        Migrator::new(self.db.clone(), set.clone(), settings)
    }

    /// Applies `set` up to `to` (inclusive) through the normal runner; a failure is an error.
    pub async fn apply(
        &self,
        migrator: &Migrator,
        to: &Version,
        run_id: &str,
    ) -> Result<(), Error> {
        migrator_apply(migrator, to, run_id).await
    }

    /// Drops a created scratch database (ending any session still in it), or empties a dev
    /// database. Call it on every path, failures included.
    pub async fn drop(self) -> Result<(), Error> {
        match &self.server {
            Some(server) => {
                self.db.close().await;
                let mut conn = server.connect().await?;
                sqlx::raw_sql(&format!(
                    "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                    self.name
                ))
                .execute(&mut *conn)
                .await
                .map_err(|e| {
                    Error::database(format!("dropping the scratch database {}", self.name), e)
                })?;
                info!(scratch = %self.name, "dropped the scratch database");
            }
            None => {
                let mut conn = self.db.connect().await?;
                let result = sqlx::raw_sql(EMPTY_DEV).execute(&mut *conn).await;
                drop(conn);
                self.db.close().await;
                result.map_err(|e| Error::database("emptying the dev database", e))?;
            }
        }
        Ok(())
    }
}

/// Verifies `pending` (in order) on a scratch database that `migrator` applies to: before
/// each, everything before it in the set is applied through the runner; a transactional
/// migration is verified in a transaction that is rolled back, then applied for real; a
/// migration outside a transaction is applied for real and observed from the catalog. After
/// a failure the rest are skipped. The lead's `preview` uses it the same way.
pub async fn verify_pending(
    migrator: &Migrator,
    scratch: &ScratchDatabase,
    pending: &[&Migration],
    run_id: &str,
) -> Result<Vec<MigrationVerification>, Error> {
    verify_pending_with(
        migrator,
        scratch,
        pending,
        run_id,
        &VerifyOptions::default(),
    )
    .await
}

/// [`verify_pending`], with the up/down round trip of each migration when
/// `options.round_trip`: a failed round trip stops the run like a failed verification (the
/// rest are reported not run).
pub async fn verify_pending_with(
    migrator: &Migrator,
    scratch: &ScratchDatabase,
    pending: &[&Migration],
    run_id: &str,
    options: &VerifyOptions,
) -> Result<Vec<MigrationVerification>, Error> {
    let mut results = Vec::with_capacity(pending.len());
    let mut failed: Option<String> = None;
    let not_run = |reason: &str| {
        options.round_trip.then(|| RoundTrip::Skipped {
            reason: format!("not run: {reason}"),
        })
    };
    for m in pending {
        if let Some(name) = &failed {
            let reason = format!("{name} failed before it");
            results.push(MigrationVerification {
                round_trip: not_run(&reason),
                ..skipped(m, format!("not verified: {reason}"))
            });
            continue;
        }
        if let Some((why, what)) = scratch.cannot_run(m) {
            results.push(MigrationVerification {
                round_trip: not_run("not verified"),
                touches_server: Some(what.to_owned()),
                ..skipped(m, why)
            });
            failed = Some(format!("{} (not verified)", m.name));
            continue;
        }
        if let Some(refused) = refused_outside_transaction(m, false) {
            results.push(MigrationVerification {
                round_trip: not_run("not verified"),
                ..refused
            });
            failed = Some(format!("{} (not verified)", m.name));
            continue;
        }
        let span = info_span!("verify", version = m.version.as_str(), name = %m.name);
        let before = if options.round_trip {
            if let Some(previous) = migrator.set.previous(&m.version) {
                migrator_apply(migrator, &previous.version, run_id).await?;
            }
            Some(round_trip_snapshot(migrator).await?)
        } else {
            None
        };
        let mut result = verify_one_on_scratch(migrator, m, run_id)
            .instrument(span.clone())
            .await?;
        mark_empty_copy(&mut result, m);
        if matches!(result.outcome, VerifyOutcome::Failed { .. }) {
            failed = Some(m.name.clone());
            result.round_trip = not_run("the migration failed");
        } else if matches!(result.outcome, VerifyOutcome::Skipped { .. }) {
            // Not applied on the copy: what follows cannot be verified on it.
            failed = Some(format!("{} (not verified)", m.name));
            result.round_trip = not_run("not verified");
        } else if let Some(before) = before {
            let round_trip = round_trip(migrator, m, &before, run_id)
                .instrument(span)
                .await?;
            if round_trip.failed() {
                failed = Some(format!("the round trip of {}", m.name));
            }
            result.round_trip = Some(round_trip);
        }
        results.push(result);
    }
    Ok(results)
}

/// On an empty copy: each statement's dependence on data, and whether the migration's `ok`
/// says anything about the target.
fn mark_empty_copy(v: &mut MigrationVerification, m: &Migration) {
    let lexed = sql::split_statements(&m.sql);
    for st in &mut v.statements {
        let statement = lexed.iter().find(|s| s.line == st.line);
        let by_words = statement.and_then(depends_on_data);
        // A TRUNCATE gives its table new, empty storage, and a sequence's is one row: neither
        // takes the time of the target's rows.
        let truncates =
            statement.is_some_and(|s| s.keywords.first().map(String::as_str) == Some("TRUNCATE"));
        let costly = !truncates && st.rewrites.iter().any(|r| r.relkind != "sequence");
        st.depends_on_data = by_words.or_else(|| {
            costly.then(|| DataDependence {
                kind: DataKind::Cost,
                reason: "it rewrites the table: its time is the target's rows'".to_owned(),
            })
        });
    }
    v.unknown_on_empty_copy = v.outcome == VerifyOutcome::Ok
        && v.statements.iter().any(|s| {
            s.depends_on_data
                .as_ref()
                .is_some_and(|d| d.kind == DataKind::Outcome)
        });
}

/// A statement that locks an existing relation holding rows on the target (`holding`) is
/// unknown on an empty copy unless it is of a kind known not to read or check rows
/// ([`sql::reads_no_rows`]): the words list what is known to be safe, not what is risky.
fn mark_by_target_rows(v: &mut MigrationVerification, m: &Migration, holding: &BTreeSet<String>) {
    let lexed = sql::split_statements(&m.sql);
    for st in &mut v.statements {
        if st
            .depends_on_data
            .as_ref()
            .is_some_and(|d| d.kind == DataKind::Outcome)
        {
            continue;
        }
        let Some(statement) = lexed.iter().find(|s| s.line == st.line) else {
            continue;
        };
        let held: Vec<&str> = st
            .locks
            .iter()
            .filter(|l| l.existing && holding.contains(&l.relation))
            .map(|l| l.relation.as_str())
            .collect();
        if held.is_empty() || sql::reads_no_rows(statement) {
            continue;
        }
        st.depends_on_data = Some(DataDependence {
            kind: DataKind::Outcome,
            reason: format!(
                "it reads or checks the rows of {}, which hold rows on the target: whether it succeeds there is unknown on an empty copy",
                held.join(", ")
            ),
        });
    }
    v.unknown_on_empty_copy = v.outcome == VerifyOutcome::Ok
        && v.statements.iter().any(|s| {
            s.depends_on_data
                .as_ref()
                .is_some_and(|d| d.kind == DataKind::Outcome)
        });
}

/// The tables each migration rewrites or scans, as the target's statistics have them, for
/// the migrations whose result depends on data. Read by name (the scratch database's oids
/// are not the target's), in a transaction with a short lock_timeout (the sizes take a
/// share lock); a failure is a warning, not the verification's.
async fn fill_target_tables(
    target: &Database,
    pending: &[&Migration],
    migrations: &mut [MigrationVerification],
    warnings: &mut Vec<String>,
) {
    // A sequence's value is data too: `ALTER SEQUENCE ... MAXVALUE` or a CHECK over
    // `nextval` depends on where the target's sequence stands.
    let data_kinds = [
        "table",
        "partitioned table",
        "materialized view",
        "sequence",
    ];
    let candidates = |m: &MigrationVerification| -> BTreeSet<String> {
        let locked = m
            .locks_held
            .iter()
            .filter(|l| data_kinds.contains(&l.relkind.as_str()))
            .map(|l| l.relation.clone());
        let rewritten = m
            .rewrites
            .iter()
            .filter(|r| data_kinds.contains(&r.relkind.as_str()))
            .map(|r| r.relation.clone());
        let indexed = m.new_indexes.iter().map(|i| i.table.clone());
        locked
            .chain(rewritten)
            .chain(indexed)
            .map(|n| n.trim_end_matches(" (dropped)").to_owned())
            .collect()
    };
    let wanted = |m: &MigrationVerification| -> BTreeSet<String> {
        if !m.statements.iter().any(|s| s.depends_on_data.is_some()) && m.rewrites.is_empty() {
            return BTreeSet::new();
        }
        candidates(m)
    };
    let names: Vec<String> = migrations
        .iter()
        .flat_map(candidates)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if names.is_empty() {
        return;
    }
    type Row = (
        String,
        Option<f64>,
        Option<i64>,
        Option<String>,
        Option<i64>,
    );
    let read = async {
        let mut conn = target.connect().await?;
        sqlx::raw_sql(&format!(
            "BEGIN READ ONLY;SET LOCAL lock_timeout = '{}'",
            pg_interval(IN_TRANSACTION_LOCK_TIMEOUT)
        ))
        .execute(&mut *conn)
        .await
        .map_err(|e| Error::database("reading the target's statistics", e))?;
        let rows: Result<Vec<Row>, _> = sqlx::query_as(
            "SELECT n, CASE WHEN c.relkind = 'p' THEN
                        (SELECT sum(pc.reltuples) FROM pg_catalog.pg_partition_tree(c.oid) pt
                         JOIN pg_catalog.pg_class pc ON pc.oid = pt.relid WHERE pt.isleaf AND pc.reltuples >= 0)
                    ELSE c.reltuples END::float8,
                    CASE WHEN c.relkind = 'p' THEN
                        (SELECT sum(pg_catalog.pg_total_relation_size(pt.relid)) FROM pg_catalog.pg_partition_tree(c.oid) pt)
                    WHEN c.oid IS NOT NULL THEN pg_catalog.pg_total_relation_size(c.oid) END::int8,
                    c.relkind::text,
                    CASE WHEN c.relkind = 'p' THEN
                        (SELECT sum(pg_catalog.pg_relation_size(pt.relid)) FROM pg_catalog.pg_partition_tree(c.oid) pt)
                    WHEN c.oid IS NOT NULL THEN pg_catalog.pg_relation_size(c.oid) END::int8
             FROM unnest($1::text[]) n LEFT JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(n)",
        )
        .bind(&names)
        .fetch_all(&mut *conn)
        .await;
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
        rows.map_err(|e| Error::database("reading the target's statistics", e))
    };
    let rows = match read.await {
        Ok(rows) => rows,
        Err(e) => {
            warnings.push(format!(
                "could not read the sizes of the tables the migrations rewrite or scan on the target (so each is taken to hold rows): {e}"
            ));
            // Unknown is not empty: a statement that reads them is unknown too.
            let all: BTreeSet<String> = names.into_iter().collect();
            for m in migrations.iter_mut() {
                if let Some(migration) = pending.iter().find(|p| p.version == m.version) {
                    mark_by_target_rows(m, migration, &all);
                }
            }
            return;
        }
    };
    // A table holds rows when its statistics say so or its heap has pages (statistics can be
    // stale or missing; pages stay until a vacuum truncates them): either way the copy's
    // empty table answers nothing about it.
    let holding: BTreeSet<String> = rows
        .iter()
        .filter(|(_, rows, _, _, heap)| {
            rows.is_some_and(|r| r > 0.0) || heap.is_some_and(|h| h > 0)
        })
        .map(|(name, ..)| name.clone())
        .collect();
    let stats: BTreeMap<String, TargetTable> = rows
        .into_iter()
        .map(|(name, rows, bytes, relkind, _)| {
            let note = match (&relkind, rows) {
                (None, _) => Some("not on the target".to_owned()),
                (Some(_), Some(r)) if r < 0.0 => {
                    Some("never analyzed on the target: its row count is unknown".to_owned())
                }
                _ => None,
            };
            let table = TargetTable {
                relation: name.clone(),
                rows: rows.filter(|r| *r >= 0.0).map(|r| r.round() as i64),
                bytes,
                note,
            };
            (name, table)
        })
        .collect();
    for m in migrations.iter_mut() {
        if let Some(migration) = pending.iter().find(|p| p.version == m.version) {
            mark_by_target_rows(m, migration, &holding);
        }
        m.target_tables = wanted(m)
            .into_iter()
            .filter_map(|n| stats.get(&n).cloned())
            .collect();
    }
}

/// Where the copy, brought to the target's applied history by replaying the files of the
/// migrations the target has applied, differs from the target: one snapshot of each, compared (grants left out:
/// the copy's objects are the verifying role's). Each difference in words, from the
/// target's side.
async fn copy_differences(
    target: &Migrator,
    copy: &Migrator,
    run_id: &str,
) -> Result<Vec<String>, Error> {
    // The copy gets what the target has applied, whatever its place: an after-deploy
    // migration still pending there comes before migrations applied after it, which the
    // pending ones must find on the copy as they will on the target.
    let (_, plan) = target.plan(&Scope::up_to(None)).await?;
    let applied: BTreeSet<u64> = plan
        .entries
        .iter()
        .filter(|e| e.state == State::Applied)
        .map(|e| e.version.number())
        .collect();
    let replay = Migrator::new(
        copy.db.clone(),
        copy.set.only(&applied),
        copy.settings.clone(),
    );
    if let Some(last) = replay.set.migrations().last() {
        migrator_apply(&replay, &last.version.clone(), run_id).await?;
    }
    let options = |m: &Migrator| SnapshotOptions {
        ledger: match &m.settings.ledger_schema {
            Some(schema) => LedgerFilter::Schema(schema.clone()),
            None => LedgerFilter::Auto,
        },
        ..SnapshotOptions::default()
    };
    let on_target = Snapshot::capture_database(&target.db, &options(target)).await?;
    let on_copy = Snapshot::capture_database(&copy.db, &options(copy)).await?;
    let traits = async |db: &Database| -> Result<(String, String), Error> {
        let mut conn = db.connect().await?;
        sqlx::query_as(DATABASE_TRAITS_SQL)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| Error::database("reading the database's encoding and settings", e))
    };
    let (target_locale, target_settings) = traits(&target.db).await?;
    let (copy_locale, copy_settings) = traits(&copy.db).await?;
    let mut differs = Vec::new();
    if target_locale != copy_locale {
        differs.push(format!(
            "the database's encoding and locale differ: the target's {target_locale}, the copy's {copy_locale}"
        ));
    }
    if target_settings != copy_settings {
        let shown = |s: &str| {
            if s.is_empty() {
                "none".to_owned()
            } else {
                s.to_owned()
            }
        };
        differs.push(format!(
            "the database's own settings (ALTER DATABASE ... SET) differ: the target's {}, the copy's {}",
            shown(&target_settings),
            shown(&copy_settings)
        ));
    }
    Ok(differs
        .into_iter()
        .chain(
            crate::schema::diff(&on_copy, &on_target)
                .changes()
                .map(|c| {
                    let object = format!("{} {}", c.kind, c.name);
                    match c.change {
                        ChangeType::Added => format!("{object} is on the target only"),
                        ChangeType::Dropped => format!("{object} is on the copy only"),
                        ChangeType::Changed => format!(
                            "{object} differs ({})",
                            c.attributes
                                .iter()
                                .map(|a| a.render())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    }
                }),
        )
        .collect())
}

/// The schema as the round trip compares it: comments and grants included, the ledger left
/// out.
async fn round_trip_snapshot(migrator: &Migrator) -> Result<Snapshot, Error> {
    let options = SnapshotOptions {
        grants: true,
        comments: true,
        ledger: match &migrator.settings.ledger_schema {
            Some(schema) => LedgerFilter::Schema(schema.clone()),
            None => LedgerFilter::Auto,
        },
        ..SnapshotOptions::default()
    };
    Snapshot::capture_database(&migrator.db, &options).await
}

/// The round trip of `m`, applied on the scratch database with `before` the schema before
/// it: down (its down file), compare with `before`, up again, compare with the first apply.
async fn round_trip(
    migrator: &Migrator,
    m: &Migration,
    before: &Snapshot,
    run_id: &str,
) -> Result<RoundTrip, Error> {
    let failed = |step, message: String, differences: Vec<Change>| RoundTrip::Failed {
        step,
        message: format!("{}: {message}", m.name),
        differences,
    };
    if m.down.is_none() {
        if m.directives.irreversible {
            return Ok(RoundTrip::Skipped {
                reason: "irreversible".into(),
            });
        }
        return Ok(failed(
            RoundTripStep::NoDownFile,
            format!("no down file, so a rollback of it would be refused (write {}.down.sql, or mark it `irreversible`)", m.name),
            Vec::new(),
        ));
    }
    // The down runs for real on the scratch database: what would act outside it is not run,
    // as for an up.
    if let Some(down) = &m.down {
        let outside = sql::split_statements(&down.sql)
            .into_iter()
            .find_map(|s| sql::acts_outside_transaction(&s, false).map(|what| (s, what)));
        if let Some((statement, what)) = outside {
            return Ok(failed(
                RoundTripStep::Down,
                format!(
                    "its down file, line {}: {} acts outside its transaction ({what}): not run (SQLSTATE {OUTSIDE_TRANSACTION_SQLSTATE})",
                    statement.line,
                    summary_of(statement.text)
                ),
                Vec::new(),
            ));
        }
    }
    let applied = round_trip_snapshot(migrator).await?;
    let started = Instant::now();
    let target = RollbackTarget::Only(vec![m.version.clone()]);
    let report = match migrator.down(&target, true, run_id, &mut Quiet).await {
        Ok(report) => report,
        Err(e) if e.kind() == ErrorKind::RollbackRefused => {
            return Ok(failed(
                RoundTripStep::Down,
                format!("the rollback was refused: {e}"),
                Vec::new(),
            ))
        }
        Err(e) => return Err(e),
    };
    let down_ms = ms(started.elapsed());
    if let Some(e) = report.error() {
        return Ok(failed(
            RoundTripStep::Down,
            format!("its down failed: {e}"),
            Vec::new(),
        ));
    }
    if report.rolled_back() != 1 {
        return Ok(failed(
            RoundTripStep::Down,
            "the rollback did not revert it".into(),
            Vec::new(),
        ));
    }
    let reverted = round_trip_snapshot(migrator).await?;
    let differences = crate::schema::diff(before, &reverted);
    if !differences.is_empty() {
        return Ok(failed(
            RoundTripStep::DownDiffers,
            describe_differences(&differences, Side::Down),
            differences.changes,
        ));
    }
    let started = Instant::now();
    let report = migrator
        .up(&Scope::up_to(Some(&m.version)), run_id, &mut Quiet)
        .await?;
    let reapply_ms = ms(started.elapsed());
    if let Some(e) = report.error() {
        return Ok(failed(
            RoundTripStep::Reapply,
            format!("applied again after its down, it failed: {e}"),
            Vec::new(),
        ));
    }
    if report.applied() != 1 {
        return Ok(failed(
            RoundTripStep::Reapply,
            "after its down, the runner did not apply it again".into(),
            Vec::new(),
        ));
    }
    let again = round_trip_snapshot(migrator).await?;
    let differences = crate::schema::diff(&applied, &again);
    if !differences.is_empty() {
        return Ok(failed(
            RoundTripStep::ReapplyDiffers,
            describe_differences(&differences, Side::Reapply),
            differences.changes,
        ));
    }
    Ok(RoundTrip::Ok {
        down_ms,
        reapply_ms,
    })
}

/// Which comparison a difference comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Before the up → after its down.
    Down,
    /// After the first up → after the second.
    Reapply,
}

/// The differences in words, each object named: `the down left index public.x_idx behind`.
/// At most 10, then how many more.
fn describe_differences(differences: &SchemaDiff, side: Side) -> String {
    const MAX: usize = 10;
    let mut parts: Vec<String> = differences
        .changes()
        .take(MAX)
        .map(|c| {
            let object = format!("{} {}", c.kind, c.name);
            let attributes = c
                .attributes
                .iter()
                .map(|a| a.render())
                .collect::<Vec<_>>()
                .join(", ");
            match (side, c.change) {
                (Side::Down, ChangeType::Added) => format!("the down left {object} behind"),
                (Side::Down, ChangeType::Dropped) => {
                    format!("the down dropped {object}, which was there before the up")
                }
                (Side::Down, ChangeType::Changed) => {
                    format!("the down left {object} different from before the up ({attributes})")
                }
                (Side::Reapply, ChangeType::Added) => {
                    format!("applied again, it made {object}, which the first apply did not")
                }
                (Side::Reapply, ChangeType::Dropped) => {
                    format!("applied again, it did not make {object}, which the first apply did")
                }
                (Side::Reapply, ChangeType::Changed) => format!(
                    "applied again, it made {object} differently from the first apply ({attributes})"
                ),
            }
        })
        .collect();
    if differences.len() > MAX {
        parts.push(format!(
            "and {} more difference(s)",
            differences.len() - MAX
        ));
    }
    parts.join("; ")
}

async fn verify_one_on_scratch(
    migrator: &Migrator,
    m: &Migration,
    run_id: &str,
) -> Result<MigrationVerification, Error> {
    if let Some(previous) = migrator.set.previous(&m.version) {
        migrator_apply(migrator, &previous.version, run_id).await?;
    }
    let mut conn = migrator.db.connect().await?;
    if m.transactional() {
        sqlx::raw_sql("BEGIN")
            .execute(&mut *conn)
            .await
            .map_err(|e| Error::database("starting the verification", e))?;
        let verified =
            verify_in_open_transaction(&mut conn, m, timeouts(m, &migrator.settings, None), false)
                .await;
        // Whatever happened, nothing of it stays.
        let rolled_back = sqlx::raw_sql(&format!("ROLLBACK;{RESET_SESSION}"))
            .execute(&mut *conn)
            .await;
        let verified = verified?;
        rolled_back.map_err(|e| Error::database("rolling back the verification", e))?;
        drop(conn);
        if verified.outcome == VerifyOutcome::Ok {
            // For real, so the next migration sees it.
            let report = migrator
                .up(&Scope::up_to(Some(&m.version)), run_id, &mut Quiet)
                .await?;
            if let Some(f) = &report.failure {
                return Ok(MigrationVerification {
                    outcome: VerifyOutcome::Failed {
                        error: f.error.clone(),
                    },
                    ..verified
                }
                .with_server_failure());
            }
        }
        return Ok(verified);
    }
    // Outside a transaction it can only run for real: through the runner, on the scratch
    // database, observed from the catalog.
    let before = read_storage(&mut conn).await?;
    drop(conn);
    let started = Instant::now();
    let report = migrator
        .up(&Scope::up_to(Some(&m.version)), run_id, &mut Quiet)
        .await?;
    let duration_ms = ms(started.elapsed());
    let mut conn = migrator.db.connect().await?;
    let after = read_catalog(&mut conn, None).await?;
    let (rewrites, new_indexes) = compare_catalogs(&before, &after);
    let statements: Vec<StatementReport> = sql::split_statements(&m.sql)
        .iter()
        .map(|s| StatementReport {
            line: s.line,
            summary: summary_of(s.text),
            duration_ms: None,
            locks: Vec::new(),
            rewrites: Vec::new(),
            depends_on_data: None,
        })
        .collect();
    let outcome = match (&report.failure, report.applied()) {
        // The runner wraps each statement in a transaction of its own here, so that the
        // server guard comes before its COMMIT: a procedure that commits cannot run so, and
        // is not known to fail where `up` runs it bare.
        (Some(f), _) if f.error.sqlstate == INVALID_TRANSACTION_TERMINATION => {
            VerifyOutcome::Skipped {
                reason: format!(
                    "not verified: line {} ends transactions (a procedure that COMMITs), which cannot run inside the transaction that keeps a change of the whole server from committing on the scratch database; `up` runs it outside one",
                    f.error.line.unwrap_or_default()
                ),
            }
        }
        (Some(f), _) => VerifyOutcome::Failed {
            error: f.error.clone(),
        },
        (None, 1) => VerifyOutcome::Ok,
        (None, _) => VerifyOutcome::Failed {
            error: SqlError {
                sqlstate: "XX000".into(),
                message: "the runner did not apply it on the scratch database".into(),
                ..SqlError::default()
            },
        },
    };
    let flags = flags(m, &statements, &rewrites);
    Ok(MigrationVerification {
        version: m.version.clone(),
        name: m.name.clone(),
        file: m.path.clone(),
        mode: m.directives.mode,
        outcome,
        duration_ms,
        statements,
        rewrites,
        new_indexes,
        flags,
        round_trip: None,
        locks_held: Vec::new(),
        unknown_on_empty_copy: false,
        target_tables: Vec::new(),
        touches_server: None,
        acts_outside_transaction: None,
    }
    .with_server_failure())
}

async fn migrator_apply(migrator: &Migrator, to: &Version, run_id: &str) -> Result<(), Error> {
    let report = migrator
        .up(&Scope::up_to(Some(to)), run_id, &mut Quiet)
        .await?;
    match report.error() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

impl Migrator {
    /// The pending migrations up to `to`, as the target's ledger has them (read only; drift
    /// and dirty migrations refuse, as `up` would).
    async fn pending_for_verify(
        &self,
        to: Option<&Version>,
    ) -> Result<(Vec<&Migration>, Vec<String>), Error> {
        let (_, plan) = self.plan(&Scope::up_to(to)).await?;
        plan.ensure_runnable()?;
        let mut warnings = plan.warnings.clone();
        let unknown = plan.count(State::UnknownApplied);
        if unknown > 0 {
            warnings.push(format!("{unknown} applied migration(s) have no file here: the scratch database cannot have them"));
        }
        let pending = plan
            .pending()
            .filter_map(|e| self.set.get(&e.version))
            .collect();
        Ok((pending, warnings))
    }

    /// Scratch mode: verifies the target's pending migrations (up to `to`) on `scratch`,
    /// which the caller created and drops. The target is only read.
    pub async fn verify_on_scratch(
        &self,
        scratch: &ScratchDatabase,
        to: Option<&Version>,
        run_id: &str,
    ) -> Result<VerifyReport, Error> {
        self.verify_on_scratch_with(scratch, to, run_id, &VerifyOptions::default())
            .await
    }

    /// [`Migrator::verify_on_scratch`] with options (the up/down round trip).
    pub async fn verify_on_scratch_with(
        &self,
        scratch: &ScratchDatabase,
        to: Option<&Version>,
        run_id: &str,
        options: &VerifyOptions,
    ) -> Result<VerifyReport, Error> {
        let started = Instant::now();
        let (pending, warnings) = self.pending_for_verify(to).await?;
        let migrator = scratch.migrator(&self.set, &self.settings);
        // The scratch database's sessions end with `ScratchDatabase::drop`.
        scratch.ensure_replayable(&self.set, pending.first().map(|m| &m.version))?;
        let copy_differs = if pending.is_empty() {
            Vec::new()
        } else {
            copy_differences(self, &migrator, run_id).await?
        };
        let mut migrations =
            verify_pending_with(&migrator, scratch, &pending, run_id, options).await?;
        let mut warnings = warnings;
        fill_target_tables(&self.db, &pending, &mut migrations, &mut warnings).await;
        Ok(VerifyReport {
            run_id: run_id.to_owned(),
            method: Method::Scratch,
            database: self.db.to_string(),
            verified_on: scratch.database().to_string(),
            migrations,
            warnings,
            elapsed_ms: started.elapsed().as_millis() as u64,
            empty_copy: true,
            copy_differs,
            statistics: None,
        })
    }

    /// On the target itself (meant for staging): under the migration lock, every pending
    /// transactional migration (up to `to`) in ONE transaction, each between savepoints so the
    /// later ones see the earlier ones, all rolled back; `lock_timeout` caps each one's lock
    /// wait. A migration outside a transaction, and everything after it, is skipped. Then one
    /// `verified` event per verified migration (the fold skips them). The ledger is created or
    /// upgraded first if it is not current, as `up` would.
    pub async fn verify_in_transaction(
        &self,
        to: Option<&Version>,
        lock_timeout: Duration,
        run_id: &str,
    ) -> Result<VerifyReport, Error> {
        // On a live database nothing of verify's may queue behind another session's lock for
        // long, the ledger's own reads and writes included: the short lock_timeout is every
        // session's (each migration still sets its own, no longer), on a pool of its own that
        // ends with the verification.
        let db = self
            .db
            .with_session_setting("lock_timeout", &pg_interval(lock_timeout));
        let bounded = Migrator::new(db, self.set.clone(), self.settings.clone());
        let result = bounded
            .verify_in_one_transaction(to, lock_timeout, run_id)
            .await;
        bounded.db.close().await;
        result
    }

    async fn verify_in_one_transaction(
        &self,
        to: Option<&Version>,
        lock_timeout: Duration,
        run_id: &str,
    ) -> Result<VerifyReport, Error> {
        let span = info_span!("verify", run_id, database = %self.db, method = "in_transaction");
        async {
            let started = Instant::now();
            let mut conn = self.db.connect().await?;
            let (schema, ledger) = self.read_ledger(&mut conn).await?;
            let plan = crate::plan::Plan::new(&self.set, &ledger, to)?;
            if plan.count(State::Dirty) == 0 {
                plan.ensure_runnable()?;
            }
            let lock = self.lock(&schema, &mut Quiet).await?;
            let (migrations, warnings, statistics) = lock
                .hold(async |_| {
                    let plan = self
                        .prepare_locked(&mut conn, &schema, ledger, &Scope::up_to(to), run_id)
                        .await?;
                    let pending: Vec<&Migration> = plan
                        .pending()
                        .filter_map(|e| self.set.get(&e.version))
                        .collect();
                    let (migrations, statistics) = self
                        .verify_pending_in_one_transaction(&mut conn, &pending, lock_timeout)
                        .await?;
                    record_verified(&mut conn, &schema, &migrations, &pending, run_id).await?;
                    Ok((migrations, plan.warnings, statistics))
                })
                .await?;
            Ok(VerifyReport {
                run_id: run_id.to_owned(),
                method: Method::InTransaction,
                database: self.db.to_string(),
                verified_on: self.db.to_string(),
                migrations,
                warnings,
                elapsed_ms: started.elapsed().as_millis() as u64,
                empty_copy: false,
                copy_differs: Vec::new(),
                statistics,
            })
        }
        .instrument(span)
        .await
    }

    async fn verify_pending_in_one_transaction(
        &self,
        conn: &mut PgConnection,
        pending: &[&Migration],
        lock_timeout: Duration,
    ) -> Result<(Vec<MigrationVerification>, Option<StatisticsRestored>), Error> {
        sqlx::raw_sql("BEGIN")
            .execute(&mut *conn)
            .await
            .map_err(|e| Error::database("starting the verification", e))?;
        let stats_before = crate::planner_stats::before(conn)
            .await
            .map_err(|e| Error::database("reading the planner statistics", e))?;
        let mut results = Vec::with_capacity(pending.len());
        let mut stop: Option<String> = None;
        let mut outcome = Ok(());
        for m in pending {
            if let Some(reason) = &stop {
                results.push(skipped(m, reason.clone()));
                continue;
            }
            if !m.transactional() {
                results.push(skipped(m, "runs outside a transaction: --in-transaction-only cannot verify it without running it for real (verify it on a scratch database)".into()));
                stop = Some(format!(
                    "not verified: it comes after {}, which runs outside a transaction",
                    m.name
                ));
                continue;
            }
            if let Some(refused) = refused_outside_transaction(m, true) {
                results.push(refused);
                stop = Some(format!(
                    "not verified: it comes after {}, which was not verified",
                    m.name
                ));
                continue;
            }
            let mut limits = timeouts(m, &self.settings, Some(lock_timeout));
            // A deadline (a Lambda invocation's): start nothing that cannot end before it, and
            // report what was not verified rather than be stopped with nothing reported.
            let statements = sql::split_statements(&m.sql).len();
            let fit =
                crate::deadline::fit(self.settings.deadline, Instant::now(), statements, limits);
            let capped = match fit {
                crate::deadline::Fit::Unchanged => false,
                crate::deadline::Fit::Capped(statement_timeout) => {
                    limits.1 = statement_timeout;
                    true
                }
                crate::deadline::Fit::OutOfTime => {
                    results.push(skipped(m, crate::deadline::OUT_OF_TIME.into()));
                    stop = Some(crate::deadline::OUT_OF_TIME_AFTER.into());
                    continue;
                }
            };
            match verify_in_open_transaction(conn, m, limits, true).await {
                Ok(v) if capped && crate::deadline::stopped_by_cap(&v.outcome) => {
                    results.push(skipped(m, crate::deadline::OUT_OF_TIME.into()));
                    stop = Some(crate::deadline::OUT_OF_TIME_AFTER.into());
                }
                Ok(v) => {
                    if matches!(v.outcome, VerifyOutcome::Failed { .. }) {
                        stop = Some(format!("not verified: {} failed before it", m.name));
                    }
                    results.push(v);
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        let overwritten = match outcome {
            Ok(()) => crate::planner_stats::overwritten(conn, &stats_before)
                .await
                .map_err(|e| Error::database("reading the planner statistics", e)),
            Err(e) => Err(e),
        };
        // Nothing of it commits, whatever happened.
        let rolled_back = sqlx::raw_sql(&format!("ROLLBACK;{RESET_SESSION}"))
            .execute(&mut *conn)
            .await;
        let overwritten = overwritten?;
        rolled_back.map_err(|e| Error::database("rolling back the verification", e))?;
        let statistics = if overwritten.is_empty() {
            None
        } else {
            let error =
                crate::planner_stats::analyze_again(conn, &overwritten, &pg_interval(lock_timeout))
                    .await;
            Some(StatisticsRestored {
                tables: overwritten
                    .iter()
                    .map(|t| {
                        format!(
                            "{} (reltuples written: {}, before: {})",
                            t.name, t.reltuples_after, t.reltuples_before
                        )
                    })
                    .collect(),
                analyzed: error.is_none(),
                error,
            })
        };
        Ok((results, statistics))
    }
}

/// One `verified` event per migration that ran (skipped ones have none), in one transaction.
async fn record_verified(
    conn: &mut PgConnection,
    schema: &LedgerSchema,
    migrations: &[MigrationVerification],
    pending: &[&Migration],
    run_id: &str,
) -> Result<(), Error> {
    let sql = format!(
        "INSERT INTO {} (run_id, version, name, kind, checksum, execution_time_ms, dirty, error)
         VALUES ($1, $2, $3, {}, $4, $5, false, $6)",
        schema.qualify("schema_migration_events"),
        quote_literal(EventKind::Verified.as_str()),
    );
    let record = async {
        sqlx::raw_sql("BEGIN").execute(&mut *conn).await?;
        for v in migrations {
            let error = match &v.outcome {
                VerifyOutcome::Ok => None,
                VerifyOutcome::Failed { error } => serde_json::to_value(error).ok(),
                VerifyOutcome::Skipped { .. } => continue,
            };
            let checksum = pending
                .iter()
                .find(|m| m.version == v.version)
                .map(|m| m.checksum.as_str());
            sqlx::query(&sql)
                .bind(run_id)
                .bind(v.version.as_str())
                .bind(&v.name)
                .bind(checksum)
                .bind(v.duration_ms.round() as i64)
                .bind(error)
                .execute(&mut *conn)
                .await?;
        }
        sqlx::raw_sql("COMMIT").execute(&mut *conn).await?;
        Ok::<(), sqlx::Error>(())
    }
    .await;
    if let Err(e) = record {
        warn!(error = %e, "could not record the verified events");
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
        return Err(Error::database("recording the verified events", e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each SQLSTATE of the runner's own means one thing: none is also one that the ledger's
    /// guards raise (which the applier reads as an outcome, e.g. SM009 as "already rolled
    /// back"), and no two of the runner's are the same.
    #[test]
    fn the_runners_own_sqlstates_are_distinct_from_each_other_and_the_guards() {
        let ours = [
            TRANSACTION_CONTROL_SQLSTATE,
            OUTSIDE_TRANSACTION_SQLSTATE,
            ROUND_TRIP_SQLSTATE,
            crate::ledger::LOST_TRANSACTION_SQLSTATE,
            crate::apply::OPEN_TRANSACTION_SQLSTATE,
            crate::apply::SESSION_CHANGED_SQLSTATE,
            crate::batch::RUNAWAY_SQLSTATE,
            crate::server_guard::SERVER_CHANGE_SQLSTATE,
        ];
        let guards = include_str!("ledger.sql");
        for (i, code) in ours.iter().enumerate() {
            assert!(
                !guards.contains(&format!("ERRCODE = '{code}'")),
                "{code} is also raised by the ledger's guards"
            );
            assert!(!ours[i + 1..].contains(code), "{code} is used twice");
        }
    }

    fn rel(name: &str, relkind: &str, relfilenode: i64, index: Option<(bool, &str)>) -> Relation {
        Relation {
            name: name.into(),
            relkind: relkind.into(),
            relfilenode,
            index: index.map(|(v, t)| (v, t.into())),
            table_oid: None,
        }
    }

    fn lock(oid: i64, mode: &str, name: Option<(&str, &str)>) -> HeldLock {
        HeldLock {
            oid,
            mode: mode.into(),
            relation: name.map(|(n, k)| (n.into(), k.into())),
        }
    }

    #[test]
    fn every_lock_mode_says_what_it_blocks() {
        assert!(blocks("AccessExclusiveLock").contains("reads and writes"));
        assert!(blocks("ShareLock").starts_with("writes"));
        assert!(blocks("ShareRowExclusiveLock").starts_with("writes"));
        assert!(blocks("AccessShareLock").contains("reads and writes go on"));
        assert_eq!(blocks("Nonsense"), "unknown lock mode");
    }

    #[test]
    fn only_new_locks_count_and_existing_is_from_before_the_migration() {
        let catalog: Catalog = [(1, rel("public.t", "r", 10, None))].into();
        let before = vec![lock(1, "AccessShareLock", Some(("public.t", "r")))];
        let after = vec![
            lock(1, "AccessShareLock", Some(("public.t", "r"))),
            lock(1, "AccessExclusiveLock", Some(("public.t", "r"))),
            lock(2, "AccessExclusiveLock", Some(("public.new", "r"))),
            lock(3, "AccessExclusiveLock", None),
        ];
        let taken = new_locks(&before, &after, &catalog);
        assert_eq!(taken.len(), 2, "{taken:?}");
        let t = taken.iter().find(|l| l.relation == "public.t").unwrap();
        assert!(t.existing && t.access_exclusive_on_existing());
        assert_eq!(t.relkind, "table");
        let new = taken.iter().find(|l| l.relation == "public.new").unwrap();
        assert!(!new.existing && !new.access_exclusive_on_existing());
        // Made and dropped by the statement itself (a rewrite's new heap): left out. Dropped
        // by it, having existed before: named from before.
        assert!(!taken.iter().any(|l| l.relation.contains("oid 3")));
        let catalog: Catalog = [(4, rel("public.gone", "r", 10, None))].into();
        let taken = new_locks(&[], &[lock(4, "AccessExclusiveLock", None)], &catalog);
        assert_eq!(taken[0].relation, "public.gone (dropped)");
        assert!(taken[0].access_exclusive_on_existing());
    }

    #[test]
    fn toast_relations_are_left_to_their_table() {
        let catalog: Catalog = [(5, rel("pg_toast.pg_toast_16390_index", "i", 10, None))].into();
        let after = [
            lock(5, "AccessExclusiveLock", None),
            lock(
                6,
                "AccessExclusiveLock",
                Some(("pg_toast.pg_toast_16390", "t")),
            ),
        ];
        assert!(new_locks(&[], &after, &catalog).is_empty());
    }

    #[test]
    fn a_changed_relfilenode_is_a_rewrite_and_a_new_index_carries_its_validity() {
        let before: Catalog = [
            (1, rel("public.t", "r", 10, None)),
            (2, rel("public.t_pkey", "i", 11, Some((true, "public.t")))),
            (3, rel("public.p", "p", 0, None)),
        ]
        .into();
        let after: Catalog = [
            (1, rel("public.t", "r", 20, None)),
            (2, rel("public.t_pkey", "i", 21, Some((true, "public.t")))),
            (3, rel("public.p", "p", 0, None)),
            (4, rel("public.t_c_idx", "i", 30, Some((false, "public.t")))),
        ]
        .into();
        let (rewrites, new_indexes) = compare_catalogs(&before, &after);
        assert_eq!(
            rewrites
                .iter()
                .map(|r| r.relation.as_str())
                .collect::<Vec<_>>(),
            ["public.t", "public.t_pkey"]
        );
        assert_eq!(
            new_indexes,
            [NewIndex {
                name: "public.t_c_idx".into(),
                table: "public.t".into(),
                valid: false
            }]
        );
        let (rewrites, new_indexes) = compare_catalogs(&before, &before);
        assert!(rewrites.is_empty() && new_indexes.is_empty());
    }

    #[test]
    fn the_summary_is_bounded() {
        let m = |i: usize| MigrationVerification {
            version: Version::parse(&format!("{i:03}")).unwrap(),
            name: format!("{i:03}_m"),
            file: PathBuf::from("x.sql"),
            mode: Mode::Transactional,
            outcome: if i == 2 {
                VerifyOutcome::Failed {
                    error: SqlError {
                        sqlstate: "42P01".into(),
                        message: "x".repeat(5000),
                        ..SqlError::default()
                    },
                }
            } else {
                VerifyOutcome::Ok
            },
            duration_ms: 1.4,
            statements: vec![StatementReport {
                line: 1,
                summary: "ALTER TABLE t".into(),
                duration_ms: Some(1.0),
                locks: vec![LockTaken {
                    relation: "public.t".into(),
                    relkind: "table".into(),
                    mode: "AccessExclusiveLock".into(),
                    existing: true,
                    blocks: blocks("AccessExclusiveLock").into(),
                }],
                rewrites: Vec::new(),
                depends_on_data: None,
            }],
            rewrites: Vec::new(),
            new_indexes: Vec::new(),
            flags: Flags::default(),
            round_trip: None,
            locks_held: Vec::new(),
            unknown_on_empty_copy: false,
            target_tables: Vec::new(),
            touches_server: None,
            acts_outside_transaction: None,
        };
        let report = VerifyReport {
            run_id: "r".into(),
            method: Method::InTransaction,
            database: "d".into(),
            verified_on: "d".into(),
            migrations: (1..=300).map(m).collect(),
            warnings: Vec::new(),
            elapsed_ms: 5,
            empty_copy: false,
            copy_differs: Vec::new(),
            statistics: None,
        };
        let s = report.summary(50);
        assert_eq!((s.verified, s.failed, s.migrations.len()), (299, 1, 50));
        assert!(s.truncated);
        assert_eq!(s.migrations[0].access_exclusive_on_existing, ["public.t"]);
        assert!(s.migrations[1].error.as_ref().unwrap().len() < 600);
        assert!(serde_json::to_string(&s).unwrap().len() < 30_000);
        assert_eq!(report.error().unwrap().kind(), crate::ErrorKind::SqlFailed);
    }

    #[test]
    fn round_trip_differences_name_each_object() {
        use crate::schema::{AttributeChange, ObjectKind};
        let change = |kind, name: &str, change, attributes: Vec<AttributeChange>| Change {
            kind,
            name: name.into(),
            parent: None,
            change,
            attributes,
        };
        let diff = SchemaDiff {
            changes: vec![
                change(
                    ObjectKind::Column,
                    "public.t.a",
                    ChangeType::Changed,
                    vec![AttributeChange {
                        attribute: "type".into(),
                        old: Some("integer".into()),
                        new: Some("bigint".into()),
                    }],
                ),
                change(
                    ObjectKind::Index,
                    "public.t_a_idx",
                    ChangeType::Added,
                    Vec::new(),
                ),
                change(
                    ObjectKind::View,
                    "public.v",
                    ChangeType::Dropped,
                    Vec::new(),
                ),
            ],
        };
        assert_eq!(
            describe_differences(&diff, Side::Down),
            "the down left column public.t.a different from before the up (type integer → bigint); the down left index public.t_a_idx behind; the down dropped view public.v, which was there before the up"
        );
        let text = describe_differences(&diff, Side::Reapply);
        assert!(
            text.contains(
                "applied again, it made index public.t_a_idx, which the first apply did not"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "applied again, it did not make view public.v, which the first apply did"
            ),
            "{text}"
        );
        let many = SchemaDiff {
            changes: (0..15)
                .map(|i| {
                    change(
                        ObjectKind::Table,
                        &format!("public.t{i}"),
                        ChangeType::Added,
                        Vec::new(),
                    )
                })
                .collect(),
        };
        assert!(describe_differences(&many, Side::Down).ends_with("; and 5 more difference(s)"));
    }

    #[test]
    fn a_cap_limits_the_lock_wait_even_of_a_migration_asking_for_none() {
        let mut m = Migration {
            version: Version::parse("001").unwrap(),
            name: "001_x".into(),
            path: "001_x.sql".into(),
            sql: "SELECT 1".into(),
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
