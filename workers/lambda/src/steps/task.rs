//! The task route's outcome: a long migration runs in an ECS task that cannot answer Step
//! Functions, so `TaskOutcome` reads what it did from the ledger, or else what ECS said.

use serde_json::Value;

use super::contracts::{
    ApplyOutput, CaughtError, MigrationRange, TaskOutcomeItem, TaskOutcomeRequest,
};
use crate::apply::Outcome;
use crate::error::Error;
use crate::metrics::{Metric, MetricLine};
use crate::runner::{Migrator, RecordedOutcome};

/// The outcome of a long migration's ECS task, read from the ledger: the task cannot hand
/// Step Functions an answer (`runTask.sync` reports the container, not the migration), so it
/// records what happened (applied, or its failure) and this step reads it. Applied: the
/// iteration ends, with the metrics apply-one reports. A failure the run recorded: that
/// failure again (`SqlFailed`, ...), for Record, which does not record it twice. Neither
/// (the task was killed, ran out of memory, never started): `TaskFailed` with what ECS said.
#[tracing::instrument(name = "task_outcome", skip_all, fields(execution = %request.task_outcome.item.execution, run_id = %request.task_outcome.item.run_id, version = %request.task_outcome.item.range.first))]
pub async fn task_outcome(
    migrator: &Migrator,
    request: TaskOutcomeRequest,
) -> Result<ApplyOutput, Error> {
    // No set-digest check: this step only reads, and a deploy during an hours-long task may
    // have updated the worker since the plan.
    let TaskOutcomeItem { item, task, error } = request.task_outcome;
    one_migration(&item.range)?;
    let version = &item.range.first;
    let name = migrator
        .set
        .get(version)
        .map_or_else(|| version.to_string(), |m| m.name.clone());
    match migrator.recorded_outcome(version, &item.run_id).await? {
        RecordedOutcome::Applied {
            execution_time_ms,
            run_id,
        } => {
            // Applied by this run's task; or by another runner before it (nothing to count).
            if run_id.as_deref() == Some(item.run_id.as_str()) {
                MetricLine::new(migrator.db.name())
                    .with(
                        Metric::MigrationDuration,
                        execution_time_ms.unwrap_or(0) as f64,
                    )
                    .with(Metric::MigrationsApplied, 1.0)
                    .property("version", version.as_str())
                    .property("run_id", &item.run_id)
                    .property("runner", "task")
                    .emit();
            }
            let by_this_run = run_id.as_deref() == Some(item.run_id.as_str());
            tracing::info!(task = ?task.as_ref().and_then(|t| t.get("TaskArn")), by_this_run, "{name}: applied");
            Ok(ApplyOutput::of(vec![crate::runner::MigrationResult {
                version: version.clone(),
                name,
                outcome: if by_this_run {
                    Outcome::Applied {
                        execution_time_ms: execution_time_ms.unwrap_or(0).max(0) as u64,
                        notices: Vec::new(),
                        batches: None,
                    }
                } else {
                    Outcome::AlreadyApplied
                },
            }]))
        }
        RecordedOutcome::Failed(failure) => Err(Error::MigrationFailed { failure }),
        outcome => Err(Error::TaskFailed {
            name,
            reason: task_stop_reason(task.as_ref(), error.as_ref()),
            dirty: outcome == RecordedOutcome::Dirty,
        }),
    }
}

/// A task item holds one migration (the plan never groups one): its outcome is that
/// migration's, which a range of several could not tell.
pub(super) fn one_migration(range: &MigrationRange) -> Result<(), Error> {
    if range.first != range.last {
        return Err(Error::InvalidInput(format!(
            "a task item holds one migration; this one is {}..{}",
            range.first, range.last
        )));
    }
    Ok(())
}

/// What ECS or Step Functions said of a task that stopped without a word in the ledger: from
/// the task's description (`ApplyTask`'s result, or the cause of the error it caught, which
/// for a failed task is the same description) its stop code and reason, each container's exit
/// code and reason, and where its log is; else the caught error as it came.
pub fn task_stop_reason(task: Option<&Value>, error: Option<&CaughtError>) -> String {
    let parsed = error.and_then(|e| serde_json::from_str::<Value>(&e.cause).ok());
    let description = task.or(parsed.as_ref().filter(|v| v.get("TaskArn").is_some()));
    let mut parts = Vec::new();
    if let Some(e) = error {
        parts.push(e.error.clone());
    }
    match description {
        Some(t) => {
            let text = |key: &str| t.get(key).and_then(Value::as_str).filter(|v| !v.is_empty());
            parts.extend(
                ["StopCode", "StoppedReason"]
                    .into_iter()
                    .filter_map(text)
                    .map(str::to_owned),
            );
            for c in t
                .get("Containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(code) = c.get("ExitCode").and_then(Value::as_i64) {
                    parts.push(format!("exit code {code}"));
                }
                if let Some(r) = c.get("Reason").and_then(Value::as_str) {
                    parts.push(r.to_owned());
                }
            }
            if let Some(id) = text("TaskArn").and_then(|arn| arn.rsplit('/').next()) {
                parts.push(format!(
                    "its log: stream task/stepmigrate/{id} of the task log group"
                ));
            }
        }
        None => {
            if let Some(e) = error {
                parts.push(e.cause.chars().take(300).collect());
            }
        }
    }
    if parts.is_empty() {
        "the task ended with no report".to_owned()
    } else {
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_stopped_task_is_described_by_what_ecs_said() {
        let task = json!({
            "TaskArn": "arn:aws:ecs:us-east-1:1:task/c/0f1e2d",
            "LastStatus": "STOPPED",
            "StopCode": "EssentialContainerExited",
            "StoppedReason": "Essential container in task exited",
            "Containers": [{"Name": "stepmigrate", "ExitCode": 137, "Reason": "OutOfMemoryError: Container killed due to memory usage"}]
        });
        let reason = task_stop_reason(Some(&task), None);
        for needle in [
            "EssentialContainerExited",
            "exit code 137",
            "OutOfMemoryError",
            "stream task/stepmigrate/0f1e2d",
        ] {
            assert!(reason.contains(needle), "{needle}: {reason}");
        }
        // Caught: ECS's description is the cause of a failed task; any other cause as it came.
        let caught = CaughtError {
            error: "States.TaskFailed".into(),
            cause: task.to_string(),
        };
        let reason = task_stop_reason(None, Some(&caught));
        assert!(
            reason.starts_with("States.TaskFailed; EssentialContainerExited"),
            "{reason}"
        );
        let refused = CaughtError {
            error: "ECS.AmazonECSException".into(),
            cause: "Capacity is unavailable at this time".into(),
        };
        assert_eq!(
            task_stop_reason(None, Some(&refused)),
            "ECS.AmazonECSException; Capacity is unavailable at this time"
        );
        assert_eq!(
            task_stop_reason(None, None),
            "the task ended with no report"
        );
    }
}
