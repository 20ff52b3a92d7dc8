//! Rollback: `down` and the rollback execution's steps.

use std::time::Instant;

use sqlx::PgConnection;
use tracing::{info, info_span, Instrument};

use super::{partly_applied, Applied, MigrationResult, Migrator, Progress, Quiet, UpReport};
use crate::apply::{Direction, Outcome};
use crate::error::Error;
use crate::ledger::{self, Ledger, LedgerKind, LedgerSchema};
use crate::lock::MigrationLock;
use crate::migration::{Migration, Version};
use crate::rollback::{self, RollbackPlan, RollbackTarget};

/// Rollback: `down` and the rollback execution's steps.
impl Migrator {
    /// The rollback as it stands, without taking the lock or writing anything: refused as
    /// the rollback itself would be (a stale `migrations.sum` too), so a dry run and the
    /// confirmation show what `down` would do.
    pub async fn rollback_plan(
        &self,
        target: &RollbackTarget,
        use_file: bool,
        progress: &mut dyn Progress,
    ) -> Result<RollbackPlan, Error> {
        self.set.ensure_sum_current()?;
        let mut conn = self.db.connect().await?;
        let (schema, ledger) = self.settled_ledger(&mut conn, progress).await?;
        match self
            .plan_rollback(&mut conn, &schema, &ledger, target, use_file)
            .await
        {
            // Another runner's statement outside a transaction runs right now (the down of
            // a `no-transaction` migration, say): wait for that runner's turn to end, as two
            // `up`s do, then plan from what it left.
            Err(Error::Dirty { migrations }) if migrations.iter().all(|m| m.still_running) => {
                let ledger = self
                    .ledger_after_the_runners_turn(&mut conn, &schema, progress)
                    .await?;
                self.plan_rollback(&mut conn, &schema, &ledger, target, use_file)
                    .await
            }
            other => other,
        }
    }

    pub(super) async fn plan_rollback(
        &self,
        conn: &mut PgConnection,
        schema: &LedgerSchema,
        ledger: &Ledger,
        target: &RollbackTarget,
        use_file: bool,
    ) -> Result<RollbackPlan, Error> {
        let applied: Vec<String> = ledger
            .migration_rows()
            .filter(|r| r.success)
            .map(|r| r.version.clone())
            .collect();
        let recorded = if ledger.kind == LedgerKind::EventSourced {
            ledger::recorded_downs(conn, schema, &applied).await?
        } else {
            Default::default()
        };
        let partly = partly_applied(conn, schema, ledger).await?;
        rollback::plan(&self.set, ledger, &recorded, &partly, target, use_file)
    }

    /// Reverts applied migrations, newest applied first, each with its down script under the
    /// lock, in one transaction with its `rolled_back` event (or, outside a transaction,
    /// between `rollback_started` and its outcome). Stops at the first failure, which is
    /// recorded before this returns. Refusals come before anything runs.
    pub async fn down(
        &self,
        target: &RollbackTarget,
        use_file: bool,
        run_id: &str,
        progress: &mut dyn Progress,
    ) -> Result<UpReport, Error> {
        let planned = self.rollback_plan(target, use_file, progress).await?;
        self.down_planned(&planned, use_file, run_id, progress)
            .await
    }

    /// Carries out a rollback planned (and shown, or confirmed) earlier: under the lock, the
    /// planned migrations still applied (another runner may have reverted some meanwhile),
    /// refused if any migration was applied since the plan was made.
    pub async fn down_planned(
        &self,
        planned: &RollbackPlan,
        use_file: bool,
        run_id: &str,
        progress: &mut dyn Progress,
    ) -> Result<UpReport, Error> {
        let span = info_span!("rollback", run_id, database = %self.db);
        async {
            let started = Instant::now();
            let mut report = UpReport {
                warnings: planned.warnings.clone(),
                ..self.new_report(run_id)
            };
            self.set.ensure_sum_current()?;
            if planned.reverts.is_empty() {
                report.elapsed_ms = started.elapsed().as_millis() as u64;
                return Ok(report);
            }
            let mut conn = self.db.connect().await?;
            let (schema, seen) = self.read_ledger(&mut conn).await?;
            let only =
                RollbackTarget::Only(planned.reverts.iter().map(|r| r.version.clone()).collect());
            let lock = self.lock(&schema, progress).await?;
            lock.hold(async |lock| {
                let ledger = self
                    .ledger_locked(&mut conn, &schema, &seen, run_id)
                    .await?;
                let partly = partly_applied(&mut conn, &schema, &ledger).await?;
                rollback::ensure_nothing_applied_since(&ledger, &partly, planned.seen_event)?;
                let plan = self
                    .plan_rollback(&mut conn, &schema, &ledger, &only, use_file)
                    .await?;
                report.pending = plan.reverts.len();
                info!(to_revert = plan.reverts.len(), "planned the rollback");
                let end = self
                    .revert_in_order(&mut conn, &schema, lock, &plan, run_id, progress)
                    .await?;
                report.results = end.results;
                report.lock_lost = end.lock_lost;
                if let Some(failure) = end.failure {
                    self.record_run_failure(&mut conn, &schema, &mut report, failure, None, run_id)
                        .await;
                }
                Ok(())
            })
            .await?;
            report.elapsed_ms = started.elapsed().as_millis() as u64;
            Ok(report)
        }
        .instrument(span)
        .await
    }

    pub(super) async fn revert_in_order(
        &self,
        conn: &mut PgConnection,
        schema: &LedgerSchema,
        lock: &MigrationLock,
        plan: &RollbackPlan,
        run_id: &str,
        progress: &mut dyn Progress,
    ) -> Result<Applied, Error> {
        let scripts: Vec<Migration> = plan.reverts.iter().map(|r| r.as_migration()).collect();
        let scripts: Vec<&Migration> = scripts.iter().collect();
        self.apply_in_order(
            conn,
            schema,
            lock,
            &scripts,
            |_| false,
            Direction::Down,
            run_id,
            None,
            progress,
        )
        .await
    }

    /// The revert-one step of a rollback execution: under the lock, reverts `version` if it is
    /// still applied (one reverted by another runner is reported so), refused if a migration
    /// was applied since the plan (`planned_event`: its [`RollbackPlan::seen_event`]). A failure is returned as
    /// the error, not recorded (the record step does).
    pub async fn revert_one(
        &self,
        version: &Version,
        planned_event: Option<i64>,
        run_id: &str,
    ) -> Result<MigrationResult, Error> {
        let mut conn = self.db.connect().await?;
        let (schema, seen) = self.read_ledger(&mut conn).await?;
        let lock = self.lock(&schema, &mut Quiet).await?;
        let end = lock
            .hold(async |lock| {
                let ledger = self
                    .ledger_locked(&mut conn, &schema, &seen, run_id)
                    .await?;
                let only = RollbackTarget::Only(vec![version.clone()]);
                let plan = self
                    .plan_rollback(&mut conn, &schema, &ledger, &only, false)
                    .await?;
                let partly = partly_applied(&mut conn, &schema, &ledger).await?;
                rollback::ensure_nothing_applied_since(&ledger, &partly, planned_event)?;
                self.revert_in_order(&mut conn, &schema, lock, &plan, run_id, &mut Quiet)
                    .await
            })
            .await?;
        if end.lock_lost {
            return Err(Error::LockLost { applied: 0 });
        }
        if let Some(failure) = end.failure {
            return Err(Error::MigrationFailed { failure });
        }
        Ok(end.results.into_iter().next().unwrap_or(MigrationResult {
            version: version.clone(),
            name: self
                .set
                .get(version)
                .map_or_else(|| version.to_string(), |m| m.name.clone()),
            outcome: Outcome::AlreadyRolledBack,
        }))
    }
}
