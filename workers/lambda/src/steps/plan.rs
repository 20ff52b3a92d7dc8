//! The plan step: what one execution runs, as Map items, from the ledger and the execution's
//! input; and the continuation that carries a migrate past one execution's history budget.

use std::time::Duration;

use super::contracts::{
    Action, Continuation, ExecutionInput, MigrationRange, PlanOutput, PlanRequest, RevertItem,
    LISTED_MIGRATIONS,
};
use super::history::{batch_invocation_cap, DEFAULT_MAX_ITERATIONS};
use crate::error::Error;
use crate::metrics::{Metric, MetricLine};
use crate::plan::route::{route, Route};
use crate::plan::{Entry, Scope, State};
use crate::rollback::{RollbackTarget, ScriptSource};
use crate::runner::{Migrator, Quiet};

/// How the plan step plans (its environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSettings {
    /// `STEPMIGRATE_MAX_ITERATIONS`: the Map items one execution runs at most.
    pub max_iterations: usize,
    /// `STEPMIGRATE_TASK_THRESHOLD`: the longest statement the apply-one Lambda runs (its
    /// statement timeout); a migration whose own `statement_timeout` is longer runs as an
    /// ECS task.
    pub task_threshold: Duration,
    /// `STEPMIGRATE_MAX_BATCH_INVOCATIONS`: a lower cap on a batch migration's invocations
    /// per execution than its share of the history budget (the end-to-end tests make it
    /// small to see an execution continue in a new one).
    pub max_batch_invocations: Option<u32>,
}

/// The task threshold without `STEPMIGRATE_TASK_THRESHOLD`: what Lambda's 15-minute maximum
/// leaves a statement after the connect timeout, a lock wait and the deadline margin.
pub const DEFAULT_TASK_THRESHOLD: Duration = Duration::from_secs(10 * 60);

impl Default for PlanSettings {
    fn default() -> PlanSettings {
        PlanSettings {
            max_iterations: DEFAULT_MAX_ITERATIONS,
            task_threshold: DEFAULT_TASK_THRESHOLD,
            max_batch_invocations: None,
        }
    }
}

/// The plan step: validates the input, reads the ledger and plans. A `migrate` plan refuses
/// drift and dirty migrations; `status` and dry runs report them.
#[tracing::instrument(name = "plan", skip_all, fields(execution = request.execution.as_deref().unwrap_or_default()))]
pub async fn plan(
    migrator: &Migrator,
    request: PlanRequest,
    settings: &PlanSettings,
) -> Result<PlanOutput, Error> {
    let max_iterations = settings.max_iterations;
    let input = ExecutionInput::parse(&request.input)?;
    let run_id = request
        .execution
        .as_deref()
        .and_then(|arn| arn.rsplit(':').next())
        .map(str::to_owned)
        .unwrap_or_else(|| crate::runner::new_run_id("run"));
    if input.action == Action::Rollback {
        return plan_rollback(migrator, &input, run_id, max_iterations).await;
    }
    let scope = Scope {
        target: input.target.clone(),
        skip_after_deploy: input.skip_after_deploy,
    };
    // A migration another runner is building right now (it yielded the migration lock) is
    // in progress, not dirty: the plan leaves it, and what requires it, to that runner.
    let (_, plan) = migrator.plan(&scope).await?;
    let report_only = input.action != Action::Migrate || input.dry_run;
    if !report_only {
        migrator.set.ensure_sum_current()?;
        plan.ensure_applicable(migrator.settings.allow_out_of_order)?;
    }
    let pending: Vec<&Entry> = plan.pending().collect();
    let routing = route(
        &migrator.set,
        &pending,
        settings.task_threshold,
        max_iterations,
    )
    .map_err(|too_many| {
        Error::InvalidInput(format!(
            "{} batch and long migrations are pending, more than the {} Map items one execution may run (each is an item of its own): migrate up to a `target` in steps",
            too_many.alone,
            max_iterations.max(1)
        ))
    })?;
    let max_invocations = batch_invocation_cap(
        routing.items.len(),
        routing.count(Route::Batch),
        routing.count(Route::Task),
    )
    .min(settings.max_batch_invocations.unwrap_or(u32::MAX))
    .max(1);
    let items: Vec<MigrationRange> = routing
        .items
        .iter()
        .map(|item| {
            let group = &pending[item.range.clone()];
            let batch = item.route == Route::Batch;
            MigrationRange {
                first: group[0].version.clone(),
                last: group[group.len() - 1].version.clone(),
                // Names make the console's Map view readable; a long backlog leaves them out
                // to keep the payload small (an item alone keeps its own).
                name: (group.len() == 1
                    && (item.route.alone() || pending.len() <= LISTED_MIGRATIONS))
                    .then(|| group[0].name.clone()),
                batch,
                task: item.route == Route::Task,
                max_invocations: batch.then_some(max_invocations),
                checksum: batch
                    .then(|| {
                        migrator
                            .set
                            .get(&group[0].version)
                            .map(|m| m.checksum.clone())
                    })
                    .flatten(),
            }
        })
        .collect();
    MetricLine::new(migrator.db.name())
        .with(Metric::PendingMigrations, pending.len() as f64)
        .property("run_id", &run_id)
        .emit();
    let (migrations, truncated) = if report_only {
        listed(&plan.entries)
    } else {
        (Vec::new(), false)
    };
    Ok(PlanOutput {
        run_id,
        action: input.action,
        dry_run: input.dry_run,
        database: migrator.db.name().to_owned(),
        set_digest: migrator.set.digest(),
        to_apply: if report_only { 0 } else { pending.len() },
        per_iteration: routing.per_item,
        pending: items,
        applied: plan.count(State::Applied),
        unknown_applied: plan
            .entries
            .iter()
            .filter(|e| e.state == State::UnknownApplied)
            .map(|e| e.name.clone())
            .collect(),
        migrations,
        truncated,
        reverts: Vec::new(),
        seen_event: None,
        deferred: plan.deferred().map(|e| e.name.clone()).collect(),
        warnings: plan.warnings,
        continuation: if report_only {
            None
        } else {
            request
                .execution
                .as_deref()
                .and_then(|arn| continuation_of(&input, arn))
        },
    })
}

/// The plan of a rollback execution: the reverts, newest applied first, one Map item each
/// (`first` = `last`: a revert is never grouped). Refusals (`RollbackRefused`, `Dirty`) and an
/// unknown target (`InvalidInput`) are errors, so nothing is reverted.
async fn plan_rollback(
    migrator: &Migrator,
    input: &ExecutionInput,
    run_id: String,
    max_iterations: usize,
) -> Result<PlanOutput, Error> {
    let target = input
        .target
        .clone()
        .ok_or_else(|| Error::InvalidInput("a rollback needs `target`".into()))?;
    let plan = migrator
        .rollback_plan(&RollbackTarget::To(target.clone()), false, &mut Quiet)
        .await?;
    let count = plan.reverts.len();
    if count > max_iterations.max(1) {
        return Err(Error::InvalidInput(format!(
            "rolling back to {target} reverts {count} migrations, more than the {} one execution may (one Map iteration each, under the history limit): roll back in steps, to a newer target first",
            max_iterations.max(1)
        )));
    }
    MetricLine::new(migrator.db.name())
        .with(Metric::PendingMigrations, count as f64)
        .property("run_id", &run_id)
        .property("action", "rollback")
        .emit();
    let applied = migrator
        .plan(&Scope::default())
        .await
        .map_or(0, |(_, p)| p.count(State::Applied));
    Ok(PlanOutput {
        run_id,
        action: Action::Rollback,
        dry_run: input.dry_run,
        database: migrator.db.name().to_owned(),
        set_digest: migrator.set.digest(),
        pending: plan
            .reverts
            .iter()
            .map(|r| MigrationRange {
                first: r.version.clone(),
                last: r.version.clone(),
                name: Some(r.name.clone()),
                batch: false,
                task: false,
                max_invocations: None,
                checksum: None,
            })
            .collect(),
        to_apply: if input.dry_run { 0 } else { count },
        per_iteration: 1,
        applied,
        unknown_applied: Vec::new(),
        migrations: Vec::new(),
        truncated: false,
        seen_event: plan.seen_event,
        reverts: if input.dry_run {
            plan.reverts
                .iter()
                .map(|r| RevertItem {
                    version: r.version.clone(),
                    name: r.name.clone(),
                    source: match r.source {
                        ScriptSource::File => "file",
                        ScriptSource::Ledger => "ledger",
                    }
                    .to_owned(),
                    checksum: r.checksum.clone(),
                    transactional: r.transactional,
                    file_changed: r.file_changed,
                    batches: r.batches,
                })
                .collect()
        } else {
            Vec::new()
        },
        deferred: Vec::new(),
        warnings: plan.warnings,
        continuation: None,
    })
}

fn listed(entries: &[Entry]) -> (Vec<Entry>, bool) {
    if entries.len() <= LISTED_MIGRATIONS {
        return (entries.to_vec(), false);
    }
    let newest_applied: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.state == State::Applied)
        .map(|(i, _)| i)
        .rev()
        .take(20)
        .collect();
    let kept = entries
        .iter()
        .enumerate()
        .filter(|(i, e)| e.state != State::Applied || newest_applied.contains(i))
        .map(|(_, e)| e.clone())
        .take(LISTED_MIGRATIONS)
        .collect();
    (kept, true)
}

/// Step Functions' limit on an execution's name.
const EXECUTION_NAME_MAX: usize = 80;

/// The continuation of the migrate `input` run by `execution_arn`
/// (`arn:<partition>:states:<region>:<account>:execution:<state machine>:<name>`); None for
/// anything else.
pub fn continuation_of(input: &ExecutionInput, execution_arn: &str) -> Option<Continuation> {
    let (prefix, name) = execution_arn.rsplit_once(':')?;
    let (head, state_machine) = prefix.rsplit_once(':')?;
    let account_part = head.strip_suffix(":execution")?;
    let number = input.continuation.saturating_add(1);
    // The chain keeps the first execution's name: `deploy-42-c1`, `deploy-42-c2`, ...
    let base = match name.rsplit_once("-c") {
        Some((base, n)) if input.continuation > 0 && n.parse::<u32>().is_ok() => base,
        _ => name,
    };
    let suffix = format!("-c{number}");
    let mut base = base.to_owned();
    while base.len() + suffix.len() > EXECUTION_NAME_MAX {
        base.pop();
    }
    let mut next = input.clone();
    next.continuation = number;
    next.continued_from = Some(execution_arn.to_owned());
    Some(Continuation {
        state_machine: format!("{account_part}:stateMachine:{state_machine}"),
        name: format!("{base}{suffix}"),
        input: serde_json::to_value(&next).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_migrate_continues_as_the_same_input_numbered_in_a_new_execution() {
        let arn = "arn:aws:states:eu-west-1:123456789012:execution:Migrations-1AB:after-deploy-7";
        let input = ExecutionInput::parse(&json!({"source": "after-deploy"})).unwrap();
        let first = continuation_of(&input, arn).unwrap();
        assert_eq!(
            first.state_machine,
            "arn:aws:states:eu-west-1:123456789012:stateMachine:Migrations-1AB"
        );
        assert_eq!(first.name, "after-deploy-7-c1");
        assert_eq!(
            first.input,
            json!({"action": "migrate", "dry_run": false, "source": "after-deploy", "continuation": 1,
                   "continued_from": arn})
        );
        // The next one parses, and its own continuation keeps the chain's first name.
        let second_input = ExecutionInput::parse(&first.input).unwrap();
        let second_arn = format!(
            "arn:aws:states:eu-west-1:123456789012:execution:Migrations-1AB:{}",
            first.name
        );
        let second = continuation_of(&second_input, &second_arn).unwrap();
        assert_eq!(second.name, "after-deploy-7-c2");
        assert_eq!(second.input["continuation"], 2);
        // A name at Step Functions' 80 characters still fits with its suffix.
        let long = format!("arn:aws:states:r:1:execution:M:{}", "n".repeat(80));
        assert_eq!(continuation_of(&input, &long).unwrap().name.len(), 80);
        assert!(continuation_of(&input, "not an arn").is_none());
        // Only a migrate continues.
        assert!(ExecutionInput::parse(&json!({"action": "status", "continuation": 1})).is_err());
    }
}
