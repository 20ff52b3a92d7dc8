//! What verify reports: per migration its outcome, per statement its time, locks and
//! rewrites, the locks held to the COMMIT, the round trip, and a bounded digest.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::empty_copy::{DataDependence, TargetTable};
use super::OUTSIDE_TRANSACTION_SQLSTATE;
use crate::error::{lossy_path, Error, MigrationFailure, SqlError};
use crate::migration::{Migration, Mode, Version};
use crate::server_guard;

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
    /// On an empty copy: why `locks_held` and the statements' locks may lack locks the target
    /// will see (what runs per row ran for no row here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locks_unseen: Option<String>,
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
    pub(super) fn with_server_failure(mut self) -> Self {
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
    Ok {
        down_ms: f64,
        reapply_ms: f64,
        /// A statement of the down whose outcome depends on the target's rows (`SET NOT
        /// NULL` over rows the up made NULL): ok on the empty copy says nothing of the target.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unknown_on_target: Option<String>,
        /// What was there before the up and is not the same after its down (a table, a
        /// column, a sequence made again; a table the down truncates): the schema is
        /// restored, but what it held is lost, on the target as on the copy.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        loses_data: Vec<String>,
    },
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

    /// Ok on the empty copy, with a down whose outcome on the target's rows is unknown.
    pub fn unknown_on_target(&self) -> bool {
        matches!(
            self,
            RoundTrip::Ok {
                unknown_on_target: Some(_),
                ..
            }
        )
    }

    /// Ok on the schema, with a down that drops and makes again what held data.
    pub fn loses_data(&self) -> bool {
        matches!(self, RoundTrip::Ok { loses_data, .. } if !loses_data.is_empty())
    }

    /// One line for people: `ok`, `skipped: irreversible`, or the failure's message.
    pub fn describe(&self) -> String {
        match self {
            RoundTrip::Ok {
                down_ms,
                reapply_ms,
                unknown_on_target,
                loses_data,
            } => {
                let mut parts = Vec::new();
                if !loses_data.is_empty() {
                    parts.push(format!(
                        "\u{26a0} loses data: after the up and its down, {}: the schema comes back, the rows and values do not (on the target too)",
                        loses_data.join(", ")
                    ));
                }
                if let Some(why) = unknown_on_target {
                    parts.push(format!("? unknown on the target's rows: {why}"));
                }
                let restored = format!(
                    "the down restored the schema ({down_ms:.1} ms), applied again it made the same schema ({reapply_ms:.1} ms)"
                );
                if parts.is_empty() {
                    format!("ok: {restored}")
                } else if unknown_on_target.is_some() {
                    format!("{}; on the empty copy {restored}", parts.join("; "))
                } else {
                    format!("{}; {restored}", parts.join("; "))
                }
            }
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
                    // Not run, so nothing of it is dirty anywhere (as for every failure
                    // verify reports: its work is rolled back or on a copy).
                    transactional: true,
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

pub(super) fn flags(m: &Migration, statements: &[StatementReport], rewrites: &[Rewrite]) -> Flags {
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
pub(super) fn summary_of(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    truncate(&flat, 80)
}

pub(super) fn skipped(m: &Migration, reason: String) -> MigrationVerification {
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
        locks_unseen: None,
        touches_server: None,
        acts_outside_transaction: None,
    }
}

pub(super) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::blocks;

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
            locks_unseen: None,
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
}
