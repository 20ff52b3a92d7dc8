//! The revert step: one migration of a rollback execution reverted with its down script.

use super::apply::check_digest;
use super::contracts::{ApplyOutput, RevertRequest};
use crate::apply::Outcome;
use crate::error::Error;
use crate::metrics::{Metric, MetricLine};
use crate::runner::Migrator;

/// The revert step: reverts the item's migration with its down script, under the lock, in one
/// transaction with its `rolled_back` event (the runner's `revert_one`). One already reverted
/// (by another runner) is `already_rolled_back`, not an error. A failed down script is an
/// error (`SqlFailed`, or `LockTimeout` to be retried) whose failure has `rollback: true`, for
/// the record step, which records it as a `rollback_failed` event.
#[tracing::instrument(name = "revert_one", skip_all, fields(execution = %request.revert.execution, run_id = %request.revert.run_id, version = %request.revert.range.first))]
pub async fn revert_one(migrator: &Migrator, request: RevertRequest) -> Result<ApplyOutput, Error> {
    let request = request.revert;
    check_digest(migrator, &request.set_digest)?;
    if request.range.first != request.range.last {
        return Err(Error::InvalidInput(format!(
            "a revert item holds one migration, not {}..{}",
            request.range.first, request.range.last
        )));
    }
    let result = migrator
        .revert_one(&request.range.first, request.seen_event, &request.run_id)
        .await?;
    if let Outcome::RolledBack {
        execution_time_ms, ..
    } = result.outcome
    {
        MetricLine::new(migrator.db.name())
            .with(Metric::MigrationsRolledBack, 1.0)
            .property("version", result.version.as_str())
            .property("run_id", &request.run_id)
            .property("execution_time_ms", &execution_time_ms.to_string())
            .emit();
    }
    Ok(ApplyOutput::of(vec![result]))
}
