//! What the ledger says a run did, and the failure records the steps write after it.

use sqlx::PgConnection;

use super::{Migrator, Quiet};
use crate::apply::{self};
use crate::batch::{self};
use crate::error::{Error, ErrorKind, MigrationFailure};
use crate::ledger::{self, BatchProgress, LedgerKind, LedgerSchema};
use crate::migration::Version;

/// What the ledger says a run did to one migration ([`Migrator::recorded_outcome`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordedOutcome {
    /// Applied, by the run `run_id` (another than the asking one if a runner was first).
    Applied {
        execution_time_ms: Option<i64>,
        run_id: Option<String>,
    },
    /// The run recorded this failure (its latest event).
    Failed(Box<MigrationFailure>),
    /// Started outside a transaction and never finished: dirty, no failure recorded.
    Dirty,
    NotApplied,
}

impl Migrator {
    /// The record step: records a failure the migration's own transaction could not.
    pub async fn record_failure(
        &self,
        failure: &MigrationFailure,
        run_id: &str,
    ) -> Result<(), Error> {
        let mut conn = self.db.connect().await?;
        let schema = self.ledger_schema(&mut conn).await?;
        // Under the lock: another runner may be applying this very migration right now.
        let checksum = self.set.get(&failure.version).map(|m| m.checksum.as_str());
        self.lock(&schema, &mut Quiet)
            .await?
            .hold(async |_| {
                self.record_with(&mut conn, &schema, failure, checksum, run_id)
                    .await
            })
            .await
    }

    /// What the ledger says run `run_id` did to the migration `version`: how a runner that
    /// cannot answer for itself (the ECS task of a long migration) is heard. Applied, or a
    /// failure of the run, is final. Neither is read again under the migration lock: a runner
    /// still at work (a task started by a retried RunTask that nobody watches) holds it, and
    /// the answer waits for it (`LockNotAcquired` past the lock wait); one that yielded it for
    /// an after-deploy build holds that migration's build lock instead (`BuildInProgress`,
    /// retried like a lock wait).
    pub async fn recorded_outcome(
        &self,
        version: &Version,
        run_id: &str,
    ) -> Result<RecordedOutcome, Error> {
        let outcome = self.read_outcome(version, run_id).await?;
        if !matches!(
            outcome,
            RecordedOutcome::NotApplied | RecordedOutcome::Dirty
        ) {
            return Ok(outcome);
        }
        let mut conn = self.db.connect().await?;
        let schema = self.ledger_schema(&mut conn).await?;
        self.lock(&schema, &mut Quiet)
            .await?
            .hold(async |_| self.read_outcome(version, run_id).await)
            .await
    }

    pub(super) async fn read_outcome(
        &self,
        version: &Version,
        run_id: &str,
    ) -> Result<RecordedOutcome, Error> {
        let mut conn = self.db.connect().await?;
        let (schema, ledger) = self.read_ledger(&mut conn).await?;
        // No ledger yet (a task that never started on a fresh database): nothing recorded.
        if ledger.kind != LedgerKind::EventSourced {
            return Ok(RecordedOutcome::NotApplied);
        }
        let row = ledger
            .migration_rows()
            .find(|r| Version::parse(&r.version).is_some_and(|v| v.number() == version.number()));
        if let Some(row) = row.filter(|r| r.success) {
            return Ok(RecordedOutcome::Applied {
                execution_time_ms: row.execution_time_ms,
                run_id: row.run_id.clone(),
            });
        }
        let migration = self.set.get(version);
        let name = migration.map_or_else(|| version.to_string(), |m| m.name.clone());
        if let Some((error, dirty, notices)) =
            ledger::run_failure(&mut conn, &schema, version.as_str(), run_id).await?
        {
            return Ok(RecordedOutcome::Failed(Box::new(MigrationFailure {
                version: version.clone(),
                name,
                file: migration.map(|m| m.path.clone()).unwrap_or_default(),
                transactional: migration.is_none_or(|m| m.transactional()),
                dirty,
                error,
                notices,
                rollback: false,
                recorded: true,
            })));
        }
        // A runner at work that yielded the migration lock for its build (see
        // [`crate::lock`]) is still at work: the answer waits for it, as for one holding the lock.
        if let Some(row) = row.filter(|r| ledger.in_progress.contains(&r.version)) {
            return Err(Error::BuildInProgress {
                name: row.name.clone(),
                waits: false,
            });
        }
        Ok(if row.is_some_and(|r| r.dirty) {
            RecordedOutcome::Dirty
        } else {
            RecordedOutcome::NotApplied
        })
    }

    /// The batches of a batch migration committed before it failed, read from its events on
    /// `conn`, or on a new connection when that one broke with the batch (a terminated
    /// backend). `None` when neither can read them: the failure itself is what matters then.
    pub(super) async fn committed_progress(
        &self,
        conn: &mut PgConnection,
        schema: &LedgerSchema,
        version: &Version,
    ) -> Option<BatchProgress> {
        if let Ok((progress, _)) = batch::recorded_progress(conn, schema, version.as_str()).await {
            return Some(progress);
        }
        let mut fresh = self.db.connect().await.ok()?;
        batch::recorded_progress(&mut fresh, schema, version.as_str())
            .await
            .ok()
            .map(|(progress, _)| progress)
    }

    /// Records a failure on `conn`, or, when that connection broke with the migration (a
    /// migration that ended its own session), on a new one.
    pub(super) async fn record_with(
        &self,
        conn: &mut PgConnection,
        schema: &LedgerSchema,
        failure: &MigrationFailure,
        checksum: Option<&str>,
        run_id: &str,
    ) -> Result<(), Error> {
        match apply::record_failure(conn, schema, failure, checksum, run_id).await {
            Err(e) if e.kind() == ErrorKind::ConnectionFailed => {
                let mut fresh = self.db.connect().await?;
                apply::record_failure(&mut fresh, schema, failure, checksum, run_id).await
            }
            other => other,
        }
    }
}
