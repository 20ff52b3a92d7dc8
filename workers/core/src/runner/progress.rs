//! What a run tells its caller as it goes ([`Progress`]), and what it reports at its end.

use std::time::Duration;

use serde::Serialize;

use crate::apply::Outcome;
use crate::batch::BatchReport;
use crate::error::{Error, MigrationFailure};
use crate::ledger::BatchProgress;
use crate::migration::{Migration, Version};

/// Live progress of a run, for the human output of the CLI.
pub trait Progress {
    fn waiting_for_lock(&mut self) {}
    /// A migration's transaction is open in backend `pid` (a killed runner's, still running):
    /// the command waits for it to end before it reads the ledger as final.
    fn waiting_for_migration(&mut self, _pid: i32) {}
    /// A statement of this process waits for a lock that `holder` holds (or queues for ahead
    /// of it): told once per holder and relation, while the wait lasts.
    fn waiting_for_session(&mut self, _holder: &crate::lock::LockHolder) {}
    /// A batch migration used its time budget: the run lets go of the migration lock for a
    /// moment (a waiting runner goes first), then takes it again and goes on.
    fn handing_over(&mut self, _migration: &Migration) {}
    fn starting(&mut self, _index: usize, _total: usize, _migration: &Migration) {}
    fn retrying(&mut self, _migration: &Migration, _attempt: u32, _delay: Duration, _reason: &str) {
    }
    fn finished(&mut self, _index: usize, _total: usize, _result: &MigrationResult) {}
    /// A batch of a batch migration committed.
    fn batch(&mut self, _migration: &Migration, _report: &BatchReport) {}
}

/// Progress nobody watches.
pub struct Quiet;
impl Progress for Quiet {}

/// The result of one migration in a run.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct MigrationResult {
    pub version: Version,
    pub name: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// What `up` (or `down`) did.
#[derive(Debug, Clone, Serialize)]
pub struct UpReport {
    pub run_id: String,
    pub database: String,
    /// How many migrations were pending (for `down`: to revert) when the run began (under
    /// the lock).
    pub pending: usize,
    pub results: Vec<MigrationResult>,
    pub warnings: Vec<String>,
    /// The migration that failed and stopped the run, recorded in the ledger (unless
    /// `record_error` says why it could not be).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Box<MigrationFailure>>,
    /// Why recording the failure failed, beside the failure itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_error: Option<String>,
    /// The failed migration is a batch migration: the totals of its batches committed before
    /// the failure (they stay; the next run resumes after them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_progress: Option<BatchProgress>,
    /// The migration lock was lost: the run stopped before the next migration.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub lock_lost: bool,
    /// The deploy's own run (`--skip-after-deploy`): the pending migrations it left for the
    /// run after the deploy, by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deferred: Vec<String>,
    /// What another runner has in hand ([`crate::plan::Plan::left_to_another_runner`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left_to_another_runner: Vec<String>,
    pub elapsed_ms: u64,
}

impl UpReport {
    pub fn applied(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Applied { .. }))
            .count()
    }

    pub fn rolled_back(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::RolledBack { .. }))
            .count()
    }

    /// The run's failure as an error, for exit codes and error names.
    pub fn error(&self) -> Option<Error> {
        if let Some(f) = &self.failure {
            return Some(Error::MigrationFailed { failure: f.clone() });
        }
        self.lock_lost.then(|| Error::LockLost {
            applied: self.applied(),
        })
    }
}
