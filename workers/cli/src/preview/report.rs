//! The pull-request preview as data: what changed, and for each new migration its lint
//! findings and what running it on a scratch database showed, plus the schema diff. The
//! `preview` command fills it from `check`, `verify` and `diff`; [`super::markdown`] renders
//! it, and `--format json` serializes it as it is.

use serde::Serialize;
use stepmigrate_core::migration::Version;

use super::changes::MigrationChanges;

/// How much a finding counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingSeverity {
    Error,
    Warning,
}

/// One lint finding in a migration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LintFinding {
    /// The path relative to the repository's root, as the pull request shows it.
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub rule: String,
    pub severity: FindingSeverity,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

/// A lock a migration held, read before its transaction was rolled back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct LockReport {
    /// `schema.name` of the table, index or sequence.
    pub relation: String,
    /// PostgreSQL's name, e.g. `AccessExclusiveLock`, `ShareLock`.
    pub mode: String,
    /// The relation existed before the migration (a lock on a new one blocks nobody).
    pub existing: bool,
}

impl LockReport {
    pub fn is_access_exclusive(&self) -> bool {
        self.mode == "AccessExclusiveLock"
    }

    /// The lock that blocks every reader and writer of a table the application uses.
    pub fn blocks_everyone(&self) -> bool {
        self.existing && self.is_access_exclusive()
    }
}

/// An index the migration created.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct NewIndex {
    pub name: String,
    pub table: String,
    /// `pg_index.indisvalid`: an invalid index (a failed `CREATE INDEX CONCURRENTLY`) is
    /// still maintained on writes but never used.
    pub valid: bool,
}

/// How running a migration on the scratch database went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum VerifyOutcome {
    Ok,
    Failed { error: String },
}

/// The up/down round trip of a new migration on the scratch database: its down must give
/// back the schema before it, and applied again it must make the same schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RoundTripReport {
    Ok,
    /// The schema came back, but the down drops and makes again what held data: the
    /// tables, columns and sequences named.
    LosesData {
        what: Vec<String>,
    },
    /// Ok on the empty copy, but a statement of the down depends on the target's rows.
    UnknownOnTarget {
        reason: String,
    },
    /// `irreversible`, or not run (the migration failed).
    Skipped {
        reason: String,
    },
    /// Names the objects that differ, or why the down could not run.
    Failed {
        message: String,
    },
    /// Neither a down file nor `irreversible`: a rollback of it would be refused (a warning
    /// here; `verify --round-trip` fails on it).
    NoDownFile {
        message: String,
    },
}

/// What `verify` saw for one migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub outcome: VerifyOutcome,
    pub duration_ms: u64,
    pub statements: usize,
    pub locks: Vec<LockReport>,
    /// Any lock is an `AccessExclusiveLock` on a relation that existed before.
    pub access_exclusive_on_existing: bool,
    /// Tables and indexes rewritten (their relfilenode changed), `schema.name`.
    pub rewrites: Vec<String>,
    pub new_indexes: Vec<NewIndex>,
    /// It ran outside a transaction (`-- stepmigrate: no-transaction`): on the scratch
    /// database it ran for real, and in production a failure part way leaves it dirty.
    pub non_transactional: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round_trip: Option<RoundTripReport>,
    /// What a statement of it does depends on rows the scratch database does not hold (a
    /// `DO` block that branches on them, a `NOT NULL` over them): its locks, rewrites and
    /// schema changes here are an empty table's, not the target's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub depends_on_data: bool,
}

impl Verification {
    /// A verification with its lists in stable order and its flag derived from its locks.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        outcome: VerifyOutcome,
        duration_ms: u64,
        statements: usize,
        mut locks: Vec<LockReport>,
        mut rewrites: Vec<String>,
        mut new_indexes: Vec<NewIndex>,
        non_transactional: bool,
    ) -> Verification {
        locks.sort();
        locks.dedup();
        rewrites.sort();
        rewrites.dedup();
        new_indexes.sort();
        let access_exclusive_on_existing = locks.iter().any(LockReport::blocks_everyone);
        Verification {
            outcome,
            duration_ms,
            statements,
            locks,
            access_exclusive_on_existing,
            rewrites,
            new_indexes,
            non_transactional,
            round_trip: None,
            depends_on_data: false,
        }
    }

    pub fn depending_on_data(self, depends_on_data: bool) -> Verification {
        Verification {
            depends_on_data,
            ..self
        }
    }

    pub fn with_round_trip(self, round_trip: Option<RoundTripReport>) -> Verification {
        Verification { round_trip, ..self }
    }

    pub fn failed(&self) -> bool {
        matches!(self.outcome, VerifyOutcome::Failed { .. })
    }

    pub fn round_trip_failed(&self) -> bool {
        matches!(self.round_trip, Some(RoundTripReport::Failed { .. }))
    }
}

/// One new (or edited) migration of the pull request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileReport {
    pub version: Version,
    pub name: String,
    /// The path relative to the repository's root.
    pub file: String,
    pub findings: Vec<LintFinding>,
    /// `None` when it was not run (e.g. an earlier migration failed).
    pub verification: Option<Verification>,
    /// Its header's `requires`, `conflicts` and `irreversible`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<Version>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Version>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub irreversible: bool,
}

impl FileReport {
    pub fn count(&self, severity: FindingSeverity) -> usize {
        let lint = self
            .findings
            .iter()
            .filter(|f| f.severity == severity)
            .count();
        let failed = usize::from(
            severity == FindingSeverity::Error
                && self.verification.as_ref().is_some_and(Verification::failed),
        );
        let round_trip = usize::from(
            severity == FindingSeverity::Error
                && self
                    .verification
                    .as_ref()
                    .is_some_and(Verification::round_trip_failed),
        );
        let no_down = usize::from(
            severity == FindingSeverity::Warning
                && self.verification.as_ref().is_some_and(|v| {
                    matches!(v.round_trip, Some(RoundTripReport::NoDownFile { .. }))
                }),
        );
        lint + failed + round_trip + no_down
    }
}

/// Added, dropped or changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaChangeKind {
    Added,
    Dropped,
    Changed,
}

/// One object of the structural schema diff, base → branch.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SchemaChange {
    pub change: SchemaChangeKind,
    /// `table`, `column`, `index`, `constraint`, `function`, ...
    pub kind: String,
    /// The object's qualified name, e.g. `public.users.email`.
    pub name: String,
    /// What changed, for `changed` (e.g. `type text → varchar(255)`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Time spent on the scratch database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ScratchTiming {
    /// Creating it and bringing it to the base's schema.
    pub setup_ms: u64,
    /// Verifying the new migrations on it.
    pub verify_ms: u64,
    /// Everything, snapshots and diff included.
    pub total_ms: u64,
}

/// The whole preview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreviewReport {
    pub changes: MigrationChanges,
    /// One per new migration, in version order.
    pub files: Vec<FileReport>,
    pub schema_diff: Vec<SchemaChange>,
    pub scratch: ScratchTiming,
    /// How the base's migrations were applied to the scratch database (how many).
    pub base_migrations_applied: usize,
}

/// The preview's one-word answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Something must change before merging: an error finding, a failed migration, drift
    /// in the making.
    Errors,
    /// Nothing fails, but a reviewer should look (warnings, blocking locks, rewrites).
    Review,
    /// Nothing found.
    Clean,
}

/// Totals over the report, as the summary shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub errors: usize,
    pub warnings: usize,
    pub locks: usize,
    /// `relation` of each AccessExclusive lock on an existing relation, sorted, unique.
    pub access_exclusive_on_existing: Vec<String>,
    pub rewrites: Vec<String>,
    pub failed: usize,
    /// Names of the migrations that run outside a transaction.
    pub non_transactional: Vec<String>,
    pub new_indexes_invalid: usize,
    /// Round trips tried (passed, failed, or impossible without a down file), failed, and
    /// impossible.
    pub round_trips: usize,
    pub round_trips_failed: usize,
    pub round_trips_without_down: usize,
    /// Passed on the empty copy, but their down depends on the target's rows.
    pub round_trips_unknown: usize,
    /// The schema came back, but their down drops and makes again what held data.
    pub round_trips_losing_data: usize,
    /// Names of the migrations whose outcome depends on rows the scratch database lacks.
    pub depends_on_data: Vec<String>,
}

impl PreviewReport {
    /// Puts every list in its stable order: files by version; findings by place and rule;
    /// the schema diff by object name, kind and change.
    pub fn normalize(&mut self) {
        self.changes.findings.sort_by(|a, b| {
            (&a.version, a.kind, &a.name, &a.message)
                .cmp(&(&b.version, b.kind, &b.name, &b.message))
        });
        self.files.sort_by(|a, b| a.version.cmp(&b.version));
        for f in &mut self.files {
            f.findings.sort_by(|a, b| {
                (a.line, a.column, &a.rule, a.severity, &a.message)
                    .cmp(&(b.line, b.column, &b.rule, b.severity, &b.message))
            });
        }
        self.schema_diff.sort_by(|a, b| {
            (&a.name, &a.kind, a.change, &a.detail).cmp(&(&b.name, &b.kind, b.change, &b.detail))
        });
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for f in &self.changes.findings {
            match f.severity {
                FindingSeverity::Error => s.errors += 1,
                FindingSeverity::Warning => s.warnings += 1,
            }
        }
        for f in &self.files {
            s.errors += f.count(FindingSeverity::Error);
            s.warnings += f.count(FindingSeverity::Warning);
            if let Some(v) = &f.verification {
                s.locks += v.locks.len();
                s.access_exclusive_on_existing.extend(
                    v.locks
                        .iter()
                        .filter(|l| l.blocks_everyone())
                        .map(|l| l.relation.clone()),
                );
                s.rewrites.extend(v.rewrites.iter().cloned());
                if v.depends_on_data {
                    s.depends_on_data.push(f.name.clone());
                }
                s.failed += usize::from(v.failed());
                if v.non_transactional {
                    s.non_transactional.push(f.name.clone());
                }
                s.new_indexes_invalid += v.new_indexes.iter().filter(|i| !i.valid).count();
                match &v.round_trip {
                    Some(RoundTripReport::Ok) => s.round_trips += 1,
                    Some(RoundTripReport::LosesData { .. }) => {
                        s.round_trips += 1;
                        s.round_trips_losing_data += 1;
                    }
                    Some(RoundTripReport::UnknownOnTarget { .. }) => {
                        s.round_trips += 1;
                        s.round_trips_unknown += 1;
                    }
                    Some(RoundTripReport::Failed { .. }) => {
                        s.round_trips += 1;
                        s.round_trips_failed += 1;
                    }
                    Some(RoundTripReport::NoDownFile { .. }) => {
                        s.round_trips += 1;
                        s.round_trips_without_down += 1;
                    }
                    _ => {}
                }
            }
        }
        s.access_exclusive_on_existing.sort();
        s.access_exclusive_on_existing.dedup();
        s.rewrites.sort();
        s.rewrites.dedup();
        s
    }

    pub fn verdict(&self) -> Verdict {
        let s = self.summary();
        if s.errors > 0 {
            Verdict::Errors
        } else if s.warnings > 0
            || !s.access_exclusive_on_existing.is_empty()
            || !s.rewrites.is_empty()
            || s.new_indexes_invalid > 0
        {
            Verdict::Review
        } else {
            Verdict::Clean
        }
    }
}
