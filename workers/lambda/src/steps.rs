//! The state machine's steps as plain functions with typed (serde) inputs and outputs:
//! `plan`, `apply-one` (which also reverts one migration of a rollback execution) and `record`. The Lambda binaries deserialize, call and serialize;
//! `statemachine/README.md` documents each shape with an example.

use std::ops::Range;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::apply::Outcome;
use crate::error::{Error, ErrorReport, MigrationFailure};
use crate::ledger::BatchProgress;
use crate::metrics::{Metric, MetricLine};
use crate::migration::Version;
use crate::plan::{Entry, Scope, State};
use crate::rollback::{RollbackTarget, ScriptSource};
use crate::runner::{Migrator, RecordedOutcome};

/// The actions an execution accepts.
pub const ACTIONS: [&str; 4] = ["status", "migrate", "verify", "rollback"];
/// The fields an execution input accepts.
pub const INPUT_FIELDS: [&str; 7] = [
    "action",
    "dry_run",
    "target",
    "skip_after_deploy",
    "source",
    "continuation",
    "continued_from",
];

/// An execution's input, as a person types it in the console: `{}` means migrate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecutionInput {
    pub action: Action,
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Version>,
    /// The deploy's own run (the CDK trigger's): `after-deploy` migrations, and those that
    /// require one, wait for the execution started after the deploy completes.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skip_after_deploy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A migrate the workflow started to continue one whose history budget ran out (a long
    /// batch migration): how many executions came before it in the chain (0: none).
    #[serde(skip_serializing_if = "is_zero")]
    pub continuation: u32,
    /// The execution it continues (its ARN), for the console and the logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continued_from: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Status,
    #[default]
    Migrate,
    /// Run the pending migrations in a transaction that is rolled back, on the target itself
    /// (see [`verify`]).
    Verify,
    /// Revert the applied migrations above `target` (required; `"000"` reverts all), newest
    /// applied first, one Map iteration each. An operator's action: nothing starts it on its
    /// own (a CloudFormation rollback never does).
    Rollback,
}

impl ExecutionInput {
    /// Validates a raw execution input; the error lists what is accepted.
    pub fn parse(raw: &Value) -> Result<ExecutionInput, Error> {
        const ACCEPTED: &str = "accepted input: {\"action\": \"status\" | \"migrate\" (default) | \"verify\" | \"rollback\", \"dry_run\": true | false, \"target\": \"VERSION\" (required for rollback: the version to roll back to, \"000\" for all), \"skip_after_deploy\": true | false (migrate: leave after-deploy migrations for a later run), \"source\": \"TEXT\", \"continuation\": N and \"continued_from\": \"ARN\" (set by the workflow when it continues a migrate in a new execution)}, e.g. {\"action\": \"migrate\", \"dry_run\": true} or {\"action\": \"rollback\", \"target\": \"004\"}";
        let invalid = |why: String| Error::InvalidInput(format!("{why}; {ACCEPTED}"));
        let object = match raw {
            Value::Null => {
                return Ok(ExecutionInput {
                    action: Action::Migrate,
                    dry_run: false,
                    target: None,
                    skip_after_deploy: false,
                    source: None,
                    continuation: 0,
                    continued_from: None,
                })
            }
            Value::Object(o) => o,
            other => {
                return Err(invalid(format!(
                    "the input must be a JSON object, not {other}"
                )))
            }
        };
        if let Some(unknown) = object.keys().find(|k| !INPUT_FIELDS.contains(&k.as_str())) {
            return Err(invalid(format!("unknown field `{unknown}`")));
        }
        let action = match object.get("action") {
            None | Some(Value::Null) => Action::Migrate,
            Some(Value::String(a)) if a == "status" => Action::Status,
            Some(Value::String(a)) if a == "migrate" => Action::Migrate,
            Some(Value::String(a)) if a == "verify" => Action::Verify,
            Some(Value::String(a)) if a == "rollback" => Action::Rollback,
            Some(other) => {
                return Err(invalid(format!(
                    "unknown action {other}: the action must be one of {}",
                    ACTIONS.join(", ")
                )))
            }
        };
        let dry_run = match object.get("dry_run") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(invalid(format!(
                    "`dry_run` must be true or false, not {other}"
                )))
            }
        };
        let target = match object.get("target") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) if Version::parse(t).is_some() => Version::parse(t),
            Some(other) => {
                return Err(invalid(format!(
                    "`target` must be a version such as \"004\", not {other}"
                )))
            }
        };
        let skip_after_deploy = match object.get("skip_after_deploy") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(invalid(format!(
                    "`skip_after_deploy` must be true or false, not {other}"
                )))
            }
        };
        if skip_after_deploy && action != Action::Migrate {
            return Err(invalid(
                "`skip_after_deploy` belongs to a migrate (the deploy's own run)".into(),
            ));
        }
        let source = match object.get("source") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => return Err(invalid(format!("`source` must be a string, not {other}"))),
        };
        let continuation = match object.get("continuation") {
            None | Some(Value::Null) => 0,
            Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= u64::from(u32::MAX)) => {
                n.as_u64().unwrap_or_default() as u32
            }
            Some(other) => {
                return Err(invalid(format!(
                    "`continuation` must be a whole number, not {other}"
                )))
            }
        };
        let continued_from = match object.get("continued_from") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(invalid(format!(
                    "`continued_from` must be a string, not {other}"
                )))
            }
        };
        if (continuation > 0 || continued_from.is_some()) && (action != Action::Migrate || dry_run)
        {
            return Err(invalid(
                "`continuation` belongs to a migrate the workflow continues in a new execution"
                    .into(),
            ));
        }
        if action == Action::Rollback && target.is_none() {
            return Err(invalid(
                "a rollback needs `target`: the version to roll back to (the migrations applied above it are reverted; \"000\" reverts all)".into(),
            ));
        }
        Ok(ExecutionInput {
            action,
            dry_run,
            target,
            skip_after_deploy,
            source,
            continuation,
            continued_from,
        })
    }
}

/// The plan step's input: the execution's input and who runs it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PlanRequest {
    #[serde(default)]
    pub input: Value,
    /// The execution ARN (`$$.Execution.Id`); the run id is its name.
    #[serde(default)]
    pub execution: Option<String>,
}

/// One Map item: the migrations one apply-one invocation applies, `first..=last` in the
/// set's order. Usually one migration (then `name` says which); past
/// `STEPMIGRATE_MAX_ITERATIONS` pending migrations the plan groups them, so that a backlog of
/// any size completes in one execution under the history limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationRange {
    pub first: Version,
    pub last: Version,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A batch migration's item (always alone in it): the definition's `ApplyBatch` loop runs
    /// it invocation after invocation, each within a time budget, until it is done.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub batch: bool,
    /// A long migration's item (always alone in it): the definition runs it as an ECS
    /// Fargate task (`ApplyTask`), with no Lambda deadline, then reads its outcome from the
    /// ledger (`TaskOutcome`). See [`crate::migration::Migration::runs_as_task`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub task: bool,
    /// A batch item's: how many invocations this execution allows it (its share of the
    /// history budget, [`batch_invocation_cap`]); past it, the migrate continues in a new
    /// execution ([`BatchLoop::continue_execution`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_invocations: Option<u32>,
    /// A batch item's: its migration's checksum when planned. A batch loop may outlast a
    /// deploy that updates the workers under it; it goes on with the new ones as long as this
    /// migration is unchanged ([`check_batch_digest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// The plan step's output: what the state machine routes on and hands the Map, and what
/// `stepmigrate remote` and the trigger read back from the history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanOutput {
    #[serde(default)]
    pub run_id: String,
    #[serde(default)]
    pub action: Action,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub database: String,
    /// The digest of the packaged migration set the plan was made with; apply-one refuses
    /// to work from another.
    #[serde(default)]
    pub set_digest: String,
    /// What this execution applies, in order: the Map's items.
    #[serde(default)]
    pub pending: Vec<MigrationRange>,
    /// How many migrations that is.
    pub to_apply: usize,
    /// How many migrations each item holds (1 unless the backlog is large).
    #[serde(default = "one")]
    pub per_iteration: usize,
    #[serde(default)]
    pub applied: usize,
    #[serde(default)]
    pub unknown_applied: Vec<String>,
    /// Every migration and its state (for `status` and dry runs): all of them up to
    /// [`LISTED_MIGRATIONS`], else those not applied and the newest applied ones, with
    /// `truncated` set, so the output stays far below the 256 KB payload limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<Entry>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// A rollback's dry run: what would be reverted, in order, and with which script.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reverts: Vec<RevertItem>,
    /// A rollback's: the ledger's newest applied event when it was planned. Each revert
    /// refuses if a migration was applied since (an `up` during the rollback).
    #[serde(default)]
    pub seen_event: Option<i64>,
    /// The deploy's own run: the pending migrations it leaves for the execution started
    /// after the deploy (`after-deploy`, or requiring one), by name. Always present: the
    /// definition's `Done` state reads it.
    #[serde(default)]
    pub deferred: Vec<String>,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// How the workflow continues this migrate in a new execution when a batch migration
    /// uses its share of the history budget (`StartContinuation`: `states:startExecution`
    /// with these); absent without an execution (a local run) or for a report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation: Option<Continuation>,
}

/// The next execution of a migrate that continues in a new one: the same input, numbered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Continuation {
    /// This state machine's ARN (from the execution's).
    pub state_machine: String,
    /// `<execution name>-c<N>`: stable for this execution (a retried start starts nothing
    /// new), at most 80 characters.
    pub name: String,
    /// The execution's input with `continuation` = N and `continued_from` = this execution.
    pub input: Value,
}

/// The error `ContinueInNewExecution` stops the Map with, which `ApplyEach` catches to start
/// the continuation: the definition's own, never a worker's.
pub const CONTINUE_ERROR: &str = "BatchContinues";

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

/// One migration a rollback reverts, as its dry run lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevertItem {
    pub version: Version,
    pub name: String,
    /// Where the down script comes from: `file` (the packaged `.down.sql`) or `ledger` (the
    /// copy kept when the migration was applied).
    pub source: String,
    /// The checksum of the down script that would run.
    pub checksum: String,
    pub transactional: bool,
    /// The packaged down file differs from the copy kept when it was applied (the kept one
    /// runs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub file_changed: bool,
    /// A partly applied batch migration (failed or interrupted): the batches its revert undoes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batches: Option<BatchProgress>,
}

impl PlanOutput {
    /// How many migrations the plan found pending: `to_apply` when it applies them; for a
    /// report, its Map items (one per migration unless the backlog is grouped) or else its
    /// listed entries not applied.
    pub fn pending_count(&self) -> usize {
        if self.to_apply > 0 {
            return self.to_apply;
        }
        if self.per_iteration <= 1 {
            return self.pending.len();
        }
        self.migrations
            .iter()
            .filter(|e| matches!(e.state, State::Pending | State::Failed))
            .count()
    }

    /// A status or dry-run execution reports and stops.
    pub fn report_only(&self) -> bool {
        self.dry_run || !matches!(self.action, Action::Migrate | Action::Rollback)
    }
}

fn one() -> usize {
    1
}

/// The output of a run that succeeded (the definition's `Done` state): the part its readers
/// use.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunOutput {
    #[serde(default)]
    pub applied_count: u64,
    /// A rollback's (the definition's `RolledBack` state).
    #[serde(default)]
    pub rolled_back_count: u64,
    /// The migrations the deploy's own run left for the execution after the deploy.
    #[serde(default)]
    pub deferred: Vec<String>,
}

/// How many Map iterations one execution runs at most. An inline Map iteration of an item
/// that is not a batch migration costs [`ITEM_EVENTS`] history events; 2,000 of them (18,000)
/// leave [`HISTORY_RESERVE`] for retries, the rest of the run and batch loops under the
/// 25,000-event limit.
pub const DEFAULT_MAX_ITERATIONS: usize = 2000;

/// Step Functions' limit on the events of one (Standard) execution's history.
pub const HISTORY_LIMIT: usize = 25_000;
/// The events of one Map iteration that is not a batch migration's: MapIterationStarted, the
/// `Batch?` Choice (entered, exited), `ApplyOne` (TaskStateEntered, LambdaFunctionScheduled,
/// LambdaFunctionStarted, LambdaFunctionSucceeded, TaskStateExited), MapIterationSucceeded
/// (counted by the end-to-end tests).
pub const ITEM_EVENTS: usize = 9;
/// The events one more invocation of a batch migration adds: `ApplyBatch` (5), the
/// `BatchDone?` Choice (2), `BatchWait` (2) (counted by `tests/e2e/test_batch.py`).
pub const BATCH_LOOP_EVENTS: usize = 9;
/// The events of a run outside its Map iterations (about 20: start, plan, the Map's own, the
/// end), rounded up.
pub const RUN_EVENTS: usize = 50;
/// Kept free for retries (3 events each) and failure handling.
pub const HISTORY_RESERVE: usize = 2_500;
/// A batch migration fails with `BatchStalled` after this many invocations in a row that
/// changed no row.
pub const STALL_INVOCATIONS: u32 = 3;

/// The events of an item on the task route: `ApplyTask` (TaskStateEntered, TaskScheduled,
/// TaskStarted, TaskSubmitted, TaskSucceeded, TaskStateExited) and `TaskOutcome` (5), on top
/// of what [`ITEM_EVENTS`] counts for the iteration and `Batch?`, less ApplyOne's 5.
pub const TASK_ITEM_EVENTS: usize = ITEM_EVENTS + 6;

/// How many invocations each batch item of a plan of `items` Map items, `batch_items` of them
/// batch migrations and `task_items` on the task route, may take: what the history budget
/// leaves after every item's own events, the run's and the reserve, shared equally; at least 1.
pub fn batch_invocation_cap(items: usize, batch_items: usize, task_items: usize) -> u32 {
    if batch_items == 0 {
        return 0;
    }
    let used = HISTORY_RESERVE
        + RUN_EVENTS
        + items * ITEM_EVENTS
        + task_items * (TASK_ITEM_EVENTS - ITEM_EVENTS);
    let left = HISTORY_LIMIT.saturating_sub(used);
    (left / BATCH_LOOP_EVENTS / batch_items).clamp(1, u32::MAX as usize) as u32
}

/// The Map items of `pending` migrations (`batch[i]`: the i-th is a batch migration), as
/// index ranges, at most `max_items` of them, and how many migrations an item holds at most:
/// consecutive migrations grouped `per_iteration` at a time (1 unless the backlog is longer
/// than `max_items`), a batch migration always alone in its item. None when even that cannot
/// fit (more batch migrations pending than items allowed).
pub fn group_pending(batch: &[bool], max_items: usize) -> Option<(usize, Vec<Range<usize>>)> {
    let n = batch.len();
    let max_items = max_items.max(1);
    let fits = |per: usize| groups_of(batch, per).len() <= max_items;
    let mut low = n.div_ceil(max_items).max(1);
    if !fits(low) {
        // The count only falls as items grow: the smallest that fits, by bisection.
        let mut high = n.max(1);
        if !fits(high) {
            return None;
        }
        while low + 1 < high {
            let mid = (low + high) / 2;
            if fits(mid) {
                high = mid;
            } else {
                low = mid;
            }
        }
        low = high;
    }
    Some((low, groups_of(batch, low)))
}

fn groups_of(batch: &[bool], per: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, &is_batch) in batch.iter().enumerate() {
        if is_batch {
            if let Some(s) = start.take() {
                out.push(s..i);
            }
            out.push(i..i + 1);
            continue;
        }
        let s = *start.get_or_insert(i);
        if i + 1 - s == per {
            out.push(s..i + 1);
            start = None;
        }
    }
    if let Some(s) = start {
        out.push(s..batch.len());
    }
    out
}

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

/// How many migrations a status lists in full before it truncates.
pub const LISTED_MIGRATIONS: usize = 500;

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
    let migration = |e: &&Entry| migrator.set.get(&e.version);
    let is_task: Vec<bool> = pending
        .iter()
        .map(|e| migration(e).is_some_and(|m| m.runs_as_task(settings.task_threshold)))
        .collect();
    // A batch migration run as a task runs all its batches there: no ApplyBatch loop.
    let is_batch: Vec<bool> = pending
        .iter()
        .zip(&is_task)
        .map(|(e, task)| !task && migration(e).is_some_and(|m| m.is_batch()))
        .collect();
    let alone: Vec<bool> = is_batch
        .iter()
        .zip(&is_task)
        .map(|(b, t)| *b || *t)
        .collect();
    let (per_iteration, groups) = group_pending(&alone, max_iterations).ok_or_else(|| {
        Error::InvalidInput(format!(
            "{} batch and long migrations are pending, more than the {} Map items one execution may run (each is an item of its own): migrate up to a `target` in steps",
            alone.iter().filter(|b| **b).count(),
            max_iterations.max(1)
        ))
    })?;
    let batch_items = groups.iter().filter(|g| is_batch[g.start]).count();
    let task_items = groups.iter().filter(|g| is_task[g.start]).count();
    let max_invocations = batch_invocation_cap(groups.len(), batch_items, task_items)
        .min(settings.max_batch_invocations.unwrap_or(u32::MAX))
        .max(1);
    let items: Vec<MigrationRange> = groups
        .iter()
        .map(|g| {
            let group = &pending[g.clone()];
            let batch = is_batch[g.start];
            MigrationRange {
                first: group[0].version.clone(),
                last: group[group.len() - 1].version.clone(),
                // Names make the console's Map view readable; a long backlog leaves them out
                // to keep the payload small (an item alone keeps its own).
                name: (group.len() == 1 && (alone[g.start] || pending.len() <= LISTED_MIGRATIONS))
                    .then(|| group[0].name.clone()),
                batch,
                task: is_task[g.start],
                max_invocations: batch.then_some(max_invocations),
                checksum: batch
                    .then(|| migration(&group[0]).map(|m| m.checksum.clone()))
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
        per_iteration,
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
        .rollback_plan(&RollbackTarget::To(target.clone()), false)
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

/// The apply-one step's input: one item of the plan and the run.
#[derive(Debug, Clone, Deserialize)]
pub struct ApplyRequest {
    pub run_id: String,
    /// The execution ARN, for the logs.
    #[serde(default)]
    pub execution: String,
    pub set_digest: String,
    pub range: MigrationRange,
    /// A revert's: the plan's [`PlanOutput::seen_event`].
    #[serde(default)]
    pub seen_event: Option<i64>,
    /// A batch item's loop so far: the previous invocation's output, as the definition's
    /// `ApplyBatch` keeps it (`$.batch`); absent at the first invocation.
    #[serde(default)]
    pub batch: Option<BatchLoop>,
}

/// A batch item's loop between invocations (`$.batch` in the definition).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchLoop {
    /// The migration is applied: the loop ends.
    pub done: bool,
    /// Its totals, across invocations and executions, as the ledger records them.
    pub progress: BatchProgress,
    /// The invocations this execution ran for it so far.
    pub invocations: u32,
    /// How many invocations in a row changed no row.
    pub stalled: u32,
    /// How long the definition's `BatchWait` waits before the next invocation.
    pub wait_seconds: u64,
    /// The migration used this execution's share of the history budget (`max_invocations`)
    /// unfinished: the workflow continues in a new execution (`BatchDone?` ->
    /// `ContinueInNewExecution`), which resumes it from the ledger.
    pub continue_execution: bool,
}

/// The apply-one step's output (the Map keeps none of it: the definition discards it, but
/// for a batch item's loop fields, which `ApplyBatch` keeps in `$.batch`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyOutput {
    pub results: Vec<crate::runner::MigrationResult>,
    /// False only when a batch migration stopped unfinished (`outcome: "unfinished"`): the
    /// definition invokes it again.
    #[serde(default = "yes")]
    pub done: bool,
    /// A batch item's: the migration's totals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<BatchProgress>,
    /// A batch item's: see [`BatchLoop`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocations: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_seconds: Option<u64>,
    /// A batch item's (always present: `ApplyBatch`'s ResultSelector reads it): see
    /// [`BatchLoop::continue_execution`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_execution: Option<bool>,
}

fn yes() -> bool {
    true
}

impl ApplyOutput {
    fn of(results: Vec<crate::runner::MigrationResult>) -> ApplyOutput {
        ApplyOutput {
            results,
            done: true,
            progress: None,
            invocations: None,
            stalled: None,
            wait_seconds: None,
            continue_execution: None,
        }
    }
}

/// How the apply-one worker runs a batch migration (its environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSettings {
    /// `STEPMIGRATE_BATCH_BUDGET`: an invocation's time budget, below what the deadline
    /// leaves ([`batch_budget`]).
    pub budget: Option<Duration>,
    /// `STEPMIGRATE_BATCH_WAIT`: the definition's wait between invocations.
    pub wait: Duration,
}

impl Default for BatchSettings {
    fn default() -> BatchSettings {
        BatchSettings {
            budget: None,
            wait: DEFAULT_BATCH_WAIT,
        }
    }
}

/// What an invocation keeps of its Lambda deadline after its batches: answering, and a
/// batch that takes longer than the last one did.
pub const BATCH_DEADLINE_MARGIN: Duration = Duration::from_secs(30);
/// An invocation's budget with neither a deadline nor `STEPMIGRATE_BATCH_BUDGET`.
pub const DEFAULT_BATCH_BUDGET: Duration = Duration::from_secs(600);
pub const DEFAULT_BATCH_WAIT: Duration = Duration::from_secs(5);
/// The longest `STEPMIGRATE_BATCH_WAIT` accepted: the definition's BatchWait (a Wait state,
/// which takes no TimeoutSeconds) waits no longer.
pub const MAX_BATCH_WAIT: Duration = Duration::from_secs(15 * 60);

/// The time one invocation runs batches: what the invocation has left (`remaining`) less
/// [`BATCH_DEADLINE_MARGIN`] (half of it when that leaves less than the margin itself), and
/// at most `configured`.
pub fn batch_budget(remaining: Option<Duration>, configured: Option<Duration>) -> Duration {
    let from_deadline = remaining.map(|r| {
        if r > BATCH_DEADLINE_MARGIN * 2 {
            r - BATCH_DEADLINE_MARGIN
        } else {
            r / 2
        }
    });
    match (from_deadline, configured) {
        (Some(d), Some(c)) => d.min(c),
        (Some(d), None) => d,
        (None, Some(c)) => c,
        (None, None) => DEFAULT_BATCH_BUDGET,
    }
}

/// The loop after an invocation that ended `done` (or not) at `progress`, having changed
/// `run_rows` rows: one more invocation, stalled once more if it changed none. An
/// unfinished migration that stalled [`STALL_INVOCATIONS`] times in a row is `BatchStalled`;
/// one that used `max_invocations` (its share of this execution's history budget) continues
/// in a new execution ([`BatchLoop::continue_execution`]): a backfill of any length ends.
pub fn next_loop(
    previous: Option<&BatchLoop>,
    name: &str,
    done: bool,
    progress: BatchProgress,
    run_rows: u64,
    max_invocations: Option<u32>,
    wait: Duration,
) -> Result<BatchLoop, Error> {
    let previous = previous.copied().unwrap_or_default();
    let next = BatchLoop {
        done,
        progress,
        invocations: previous.invocations.saturating_add(1),
        stalled: if !done && run_rows == 0 {
            previous.stalled + 1
        } else {
            0
        },
        wait_seconds: wait.as_millis().div_ceil(1000) as u64,
        continue_execution: false,
    };
    if done {
        return Ok(next);
    }
    if next.stalled >= STALL_INVOCATIONS {
        return Err(Error::BatchStalled {
            name: name.to_owned(),
            invocations: next.stalled,
            batches: progress.batches,
            rows: progress.rows,
        });
    }
    if max_invocations.is_some_and(|max| next.invocations >= max) {
        tracing::info!(
            invocations = next.invocations,
            batches = progress.batches,
            rows = progress.rows,
            "{name}: this execution's share of the history budget is used: it continues in a new execution"
        );
        return Ok(BatchLoop {
            continue_execution: true,
            ..next
        });
    }
    Ok(next)
}

/// What one invocation did to a batch migration: the last committed batch's report of this
/// run's batches and rows.
#[derive(Default)]
struct BatchObserver {
    batches: u64,
    rows: u64,
}

impl crate::runner::Progress for BatchObserver {
    fn batch(
        &mut self,
        _migration: &crate::migration::Migration,
        report: &crate::batch::BatchReport,
    ) {
        self.batches = report.run_batches;
        self.rows = report.run_rows;
    }
}

/// The apply-one step. A failed migration is an error (`SqlFailed`, or `LockTimeout` to be
/// retried) whose message carries the failure, for the record step. A batch item runs
/// batches until its time budget ([`batch_budget`] of `remaining`, the invocation's time
/// left) and answers `done: false` with its progress when batches are left.
#[tracing::instrument(name = "apply_one", skip_all, fields(execution = %request.execution, run_id = %request.run_id, first = %request.range.first, last = %request.range.last))]
pub async fn apply_one(
    migrator: &Migrator,
    request: ApplyRequest,
    batch: &BatchSettings,
    remaining: Option<Duration>,
) -> Result<ApplyOutput, Error> {
    if request.range.batch {
        check_batch_digest(migrator, &request)?;
        return apply_batch(migrator, request, batch, remaining).await;
    }
    check_digest(migrator, &request.set_digest)?;
    let results = migrator
        .apply_range(&request.range.first, &request.range.last, &request.run_id)
        .await?;
    applied_metrics(migrator, &results, &request.run_id);
    Ok(ApplyOutput::of(results))
}

/// The ECS task's step (apply-one's task mode, [`crate::lambda::run_task`]): the item's
/// migrations applied as [`apply_one`] would, with no deadline (a batch migration runs all
/// its batches). A failure is recorded in the ledger here, in the run's name: `runTask.sync`
/// hands Step Functions the container's end, not the error, so `TaskOutcome` reads it there
/// (and Record, handed it, does not record it again).
#[tracing::instrument(name = "apply_task", skip_all, fields(execution = %request.execution, run_id = %request.run_id, first = %request.range.first, last = %request.range.last))]
pub async fn apply_task(
    migrator: &Migrator,
    request: ApplyRequest,
) -> Result<Vec<crate::runner::MigrationResult>, Error> {
    check_digest(migrator, &request.set_digest)?;
    one_migration(&request.range)?;
    let applied = migrator
        .apply_range(&request.range.first, &request.range.last, &request.run_id)
        .await;
    match applied {
        Ok(results) => {
            for r in &results {
                tracing::info!(version = %r.version, outcome = ?r.outcome, "{}: done", r.name);
            }
            Ok(results)
        }
        Err(e) => {
            if let Some(failure) = e.report().details.migration {
                if let Err(not_recorded) = migrator.record_failure(&failure, &request.run_id).await
                {
                    tracing::error!(error = %not_recorded, "the failure could not be recorded: TaskOutcome will report the task stopped without a word");
                }
            }
            Err(e)
        }
    }
}

/// One invocation of a batch item's loop (see [`apply_one`]).
#[tracing::instrument(name = "batch", skip_all, fields(version = %request.range.first, invocation = tracing::field::Empty, budget_ms = tracing::field::Empty))]
async fn apply_batch(
    migrator: &Migrator,
    request: ApplyRequest,
    settings: &BatchSettings,
    remaining: Option<Duration>,
) -> Result<ApplyOutput, Error> {
    let budget = batch_budget(remaining, settings.budget);
    let invocation = request.batch.map_or(0, |b| b.invocations) + 1;
    let span = tracing::Span::current();
    span.record("invocation", invocation);
    span.record("budget_ms", budget.as_millis() as u64);
    let mut observer = BatchObserver::default();
    let results = migrator
        .apply_range_observed(
            &request.range.first,
            &request.range.last,
            &request.run_id,
            Some(Instant::now() + budget),
            &mut observer,
        )
        .await?;
    applied_metrics(migrator, &results, &request.run_id);
    let last = results.last();
    let (done, progress) = match last.map(|r| &r.outcome) {
        Some(Outcome::Unfinished { progress }) => (false, *progress),
        Some(Outcome::Applied {
            batches: Some(progress),
            ..
        }) => (true, *progress),
        _ => (true, BatchProgress::default()),
    };
    let name = last.map_or_else(|| request.range.first.to_string(), |r| r.name.clone());
    MetricLine::new(migrator.db.name())
        .with(Metric::BatchRows, observer.rows as f64)
        .with(Metric::Batches, observer.batches as f64)
        .property("version", request.range.first.as_str())
        .property("run_id", &request.run_id)
        .property("invocation", &invocation.to_string())
        .property("done", if done { "true" } else { "false" })
        .emit();
    tracing::info!(
        done,
        batches = observer.batches,
        rows = observer.rows,
        total_batches = progress.batches,
        total_rows = progress.rows,
        "{name}: {} rows in {} batches in this invocation",
        observer.rows,
        observer.batches
    );
    let next = next_loop(
        request.batch.as_ref(),
        &name,
        done,
        progress,
        observer.rows,
        request.range.max_invocations,
        settings.wait,
    )?;
    Ok(ApplyOutput {
        results,
        done,
        progress: Some(progress),
        invocations: Some(next.invocations),
        stalled: Some(next.stalled),
        wait_seconds: Some(next.wait_seconds),
        continue_execution: Some(next.continue_execution),
    })
}

fn applied_metrics(migrator: &Migrator, results: &[crate::runner::MigrationResult], run_id: &str) {
    for r in results {
        if let Outcome::Applied {
            execution_time_ms, ..
        } = r.outcome
        {
            MetricLine::new(migrator.db.name())
                .with(Metric::MigrationDuration, execution_time_ms as f64)
                .with(Metric::MigrationsApplied, 1.0)
                .property("version", r.version.as_str())
                .property("run_id", run_id)
                .emit();
        }
    }
}

/// The set-digest check of apply and revert: a worker updated during the run refuses to work
/// from another set than the plan's.
fn check_digest(migrator: &Migrator, planned: &str) -> Result<(), Error> {
    let digest = migrator.set.digest();
    if digest != planned {
        return Err(Error::InvalidInput(format!(
            "the migrations packaged with this worker (set digest {digest}) are not the ones the plan saw ({planned}): the workers were updated during the run; start a new execution"
        )));
    }
    Ok(())
}

/// [`check_digest`] for a batch item: the workers updated during its loop (a deploy while
/// an after-deploy backfill runs) go on with it if its migration is the one planned, same
/// version and checksum; the ledger's lock and its own checks keep the rest in order.
fn check_batch_digest(migrator: &Migrator, request: &ApplyRequest) -> Result<(), Error> {
    let unchanged = || {
        let planned = request.range.checksum.as_deref()?;
        let now = migrator.set.get(&request.range.first)?;
        (now.checksum == planned).then_some(now)
    };
    match check_digest(migrator, &request.set_digest) {
        Ok(()) => Ok(()),
        Err(e) => match unchanged() {
            Some(m) => {
                tracing::info!(
                    planned = %request.set_digest,
                    now = %migrator.set.digest(),
                    "the workers were updated during the loop of {}; it is unchanged, so the loop goes on",
                    m.name
                );
                Ok(())
            }
            None => Err(e),
        },
    }
}

/// A rollback execution's Map item, as the `RevertOne` Task sends it:
/// `{"revert": {"run_id", "execution", "set_digest", "range"}}`, the same fields as an apply
/// item under `revert` (the range holds one migration: `first` = `last`).
#[derive(Debug, Clone, Deserialize)]
pub struct RevertRequest {
    pub revert: ApplyRequest,
}

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

/// What the apply-one worker is asked: apply a range (the Map's items), revert one migration
/// (a rollback's Map items), or verify (the `verify` action's one Task, which needs the same
/// database access, lock and timeouts).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ApplyOneRequest {
    Verify(VerifyRequest),
    Revert(RevertRequest),
    TaskOutcome(TaskOutcomeRequest),
    Apply(ApplyRequest),
}

/// The verify Task's input: the execution input and who runs it.
#[derive(Debug, Clone, Deserialize)]
pub struct VerifyRequest {
    /// The execution's input (`{"action": "verify", "target": ...}`).
    pub verify: Value,
    #[serde(default)]
    pub execution: Option<String>,
}

/// What the apply-one worker answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ApplyOneOutput {
    Verified(Box<crate::verify::VerifySummary>),
    Applied(ApplyOutput),
}

/// How many migrations a verify output lists: each is a few hundred bytes, far below the
/// 256 KB a state may output.
pub const VERIFIED_LISTED: usize = 200;

/// The `verify` action: under the migration lock, the pending migrations run on the target in
/// ONE transaction that is rolled back (lock_timeout at most 2 s), then one `verified` event
/// each. A migration that fails verification is the step's error (`SqlFailed`, or
/// `LockTimeout` when it waited too long for a lock), naming it, after its event is recorded.
#[tracing::instrument(name = "verify", skip_all, fields(execution = request.execution.as_deref().unwrap_or_default()))]
pub async fn verify(
    migrator: &Migrator,
    request: VerifyRequest,
    remaining: Option<Duration>,
) -> Result<crate::verify::VerifySummary, Error> {
    let input = ExecutionInput::parse(&request.verify)?;
    if input.action != Action::Verify {
        return Err(Error::InvalidInput(format!(
            "the verify step was given the action `{:?}`",
            input.action
        )));
    }
    if input.dry_run {
        return Err(Error::InvalidInput(
            "`dry_run` does not apply to verify: it never applies anything".into(),
        ));
    }
    let run_id = request
        .execution
        .as_deref()
        .and_then(|arn| arn.rsplit(':').next())
        .map(str::to_owned)
        .unwrap_or_else(|| crate::runner::new_run_id("verify"));
    let lock_timeout =
        crate::verify::IN_TRANSACTION_LOCK_TIMEOUT.min(migrator.settings.lock_timeout);
    // The verification stops on its own before the invocation's deadline (less the margin a
    // worker keeps for its bookkeeping: the `verified` events, the rollback, the answer): what
    // it could not verify in time is reported `skipped` with the reason, never cut off by
    // Lambda with nothing reported.
    let bounded;
    let migrator = match remaining {
        Some(left) => {
            let settings = crate::config::Settings {
                deadline: Some(
                    Instant::now() + left.saturating_sub(crate::lambda::deadline_margin(left)),
                ),
                ..migrator.settings.clone()
            };
            bounded = Migrator::new(migrator.db.clone(), migrator.set.clone(), settings);
            &bounded
        }
        None => migrator,
    };
    let report = migrator
        .verify_in_transaction(input.target.as_ref(), lock_timeout, &run_id)
        .await?;
    if let Some(e) = report.error() {
        return Err(e);
    }
    Ok(report.summary(VERIFIED_LISTED))
}

/// The apply-one worker's one entry point.
pub async fn apply_one_or_verify(
    migrator: &Migrator,
    request: ApplyOneRequest,
    batch: &BatchSettings,
    remaining: Option<Duration>,
) -> Result<ApplyOneOutput, Error> {
    match request {
        ApplyOneRequest::Apply(r) => apply_one(migrator, r, batch, remaining)
            .await
            .map(ApplyOneOutput::Applied),
        ApplyOneRequest::Revert(r) => revert_one(migrator, r).await.map(ApplyOneOutput::Applied),
        ApplyOneRequest::TaskOutcome(r) => {
            task_outcome(migrator, r).await.map(ApplyOneOutput::Applied)
        }
        ApplyOneRequest::Verify(r) => verify(migrator, r, remaining)
            .await
            .map(|s| ApplyOneOutput::Verified(Box::new(s))),
    }
}

/// The `TaskOutcome` Task's input, `{"task_outcome": $}`: the Map item as `ApplyTask` left
/// it, with `task` (the stopped task, as ApplyTask's ResultSelector keeps it) when the task
/// state ended, or `error` when Step Functions caught one (the task could not start, or ECS
/// reported it failed).
#[derive(Debug, Clone, Deserialize)]
pub struct TaskOutcomeRequest {
    pub task_outcome: TaskOutcomeItem,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TaskOutcomeItem {
    #[serde(flatten)]
    pub item: ApplyRequest,
    #[serde(default)]
    pub task: Option<Value>,
    #[serde(default)]
    pub error: Option<CaughtError>,
}

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
fn one_migration(range: &MigrationRange) -> Result<(), Error> {
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

/// What a caught error looks like in Step Functions: `{"Error": ..., "Cause": ...}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaughtError {
    #[serde(rename = "Error", default)]
    pub error: String,
    #[serde(rename = "Cause", default)]
    pub cause: String,
}

/// The record step's input: the item whose migration failed and the error Step Functions
/// caught.
#[derive(Debug, Clone, Deserialize)]
pub struct RecordRequest {
    pub run_id: String,
    #[serde(default)]
    pub execution: String,
    pub range: MigrationRange,
    pub error: CaughtError,
    /// The item was a rollback's revert (the `RecordRevertFailure` Task says so): the report
    /// says "rollback of ... failed" even when the error carries no failure.
    #[serde(default)]
    pub rollback: bool,
}

/// A failure as the alert and the execution's error present it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureReport {
    pub run_id: String,
    /// The database; absent (empty) in a plan failure, which `notify` completes from its
    /// configuration (`DB_NAME`).
    #[serde(default)]
    pub database: String,
    pub version: String,
    pub name: String,
    /// The error name (`SqlFailed`, `LockTimeout`, ...).
    pub error: String,
    /// One line: the migration and the database's error.
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    /// Whether the ledger now holds the failure (false when the error came before the
    /// migration ran, e.g. a connection failure).
    pub recorded: bool,
    /// Dirty: a migration outside a transaction failed part way.
    pub dirty: bool,
    /// It was a rollback that failed (the migration's down script): the migration is still
    /// applied.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
}

/// The record step: records a migration's failure in the ledger (when the error carries
/// one) and reports the failure metric. Returns the report the alert and the execution's
/// error show.
#[tracing::instrument(name = "record", skip_all, fields(execution = %request.execution, run_id = %request.run_id, first = %request.range.first))]
pub async fn record(migrator: &Migrator, request: RecordRequest) -> Result<FailureReport, Error> {
    let failure = failure_from_cause(&request.error.cause);
    // The failed migration is in the error; an error before any migration ran (a lost
    // connection) is the item's first one.
    let (version, name) = match &failure {
        Some(f) => (f.version.to_string(), f.name.clone()),
        None => {
            let first = &request.range.first;
            (
                first.to_string(),
                migrator
                    .set
                    .get(first)
                    .map_or_else(|| first.to_string(), |m| m.name.clone()),
            )
        }
    };
    let rollback = request.rollback || failure.as_ref().is_some_and(|f| f.rollback);
    let what = |name: &str| {
        if rollback {
            format!("rollback of {name}")
        } else {
            name.to_owned()
        }
    };
    let mut report = FailureReport {
        run_id: request.run_id.clone(),
        database: migrator.db.name().to_owned(),
        version: version.clone(),
        name: name.clone(),
        error: request.error.error.clone(),
        message: format!(
            "{} failed: {}",
            what(&name),
            cause_message(&request.error.cause)
        ),
        sqlstate: None,
        line: None,
        statement: None,
        recorded: false,
        dirty: false,
        rollback,
    };
    if let Some(failure) = failure {
        // A long migration's task recorded its own (TaskOutcome read it back).
        if !failure.recorded {
            migrator.record_failure(&failure, &request.run_id).await?;
        }
        report.message = format!("{} failed: {}", what(&failure.name), failure.error);
        report.sqlstate = Some(failure.error.sqlstate.clone());
        report.line = failure.error.line;
        report.statement = failure.error.statement.clone();
        report.recorded = true;
        report.dirty = failure.is_dirty();
    }
    MetricLine::new(migrator.db.name())
        .with(Metric::MigrationsFailed, 1.0)
        .property("version", &version)
        .property("run_id", &request.run_id)
        .property("error", &request.error.error)
        .property("direction", if rollback { "down" } else { "up" })
        .emit();
    Ok(report)
}

/// The message of an error as a Lambda reports it: the one error document
/// ([`crate::error::ErrorReport`]) that the CLI's `--json` prints too.
pub fn error_message(error: &Error) -> String {
    serde_json::to_string(&error.report()).unwrap_or_else(|_| error.to_string())
}

/// The worker's error document inside a caught error's `Cause`. Step Functions wraps a Lambda
/// function error as `{"errorType": ..., "errorMessage": ...}`, whose message is the document.
pub(crate) fn report_from_cause(cause: &str) -> Option<ErrorReport> {
    #[derive(Deserialize)]
    struct Wrapped {
        #[serde(rename = "errorMessage")]
        error_message: String,
    }
    match serde_json::from_str::<Wrapped>(cause) {
        Ok(wrapped) => serde_json::from_str(&wrapped.error_message).ok(),
        Err(_) => serde_json::from_str(cause).ok(),
    }
}

/// The failure inside a caught apply-one error, if it carries one (whatever its name: a
/// migration whose session was ended is `ConnectionFailed`, and still recorded).
pub(crate) fn failure_from_cause(cause: &str) -> Option<MigrationFailure> {
    report_from_cause(cause)?.details.migration.map(|f| *f)
}

pub(crate) fn cause_message(cause: &str) -> String {
    report_from_cause(cause).map_or_else(|| cause.to_owned(), |r| r.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use serde_json::json;

    fn ranges(batch: &[bool], max: usize) -> (usize, Vec<(usize, usize)>) {
        let (per, groups) = group_pending(batch, max).unwrap();
        (per, groups.iter().map(|g| (g.start, g.end)).collect())
    }

    #[test]
    fn a_batch_migration_is_alone_in_its_item() {
        // One item each below the limit, as before.
        assert_eq!(
            ranges(&[false, true, false], 10),
            (1, vec![(0, 1), (1, 2), (2, 3)])
        );
        // Grouped past it (3 at a time here), but never with a batch migration: the group
        // before it ends there.
        let batch = [false, false, true, false, false, false, false, false];
        assert_eq!(ranges(&batch, 4), (3, vec![(0, 2), (2, 3), (3, 6), (6, 8)]));
        // Without batch migrations, the same chunks as ever.
        let plain = vec![false; 10_000];
        let (per, groups) = group_pending(&plain, DEFAULT_MAX_ITERATIONS).unwrap();
        assert_eq!((per, groups.len()), (5, 2000));
        assert!(groups.iter().all(|g| g.len() == 5));
        // Batch migrations split groups: items grow until the count fits again.
        let mut mixed = vec![false; 10_000];
        for i in (0..10_000).step_by(100) {
            mixed[i] = true;
        }
        let (per, groups) = group_pending(&mixed, DEFAULT_MAX_ITERATIONS).unwrap();
        assert!(groups.len() <= DEFAULT_MAX_ITERATIONS, "{}", groups.len());
        assert_eq!(per, 6);
        assert_eq!(groups.iter().map(|g| g.len()).sum::<usize>(), 10_000);
        for g in &groups {
            if g.clone().any(|i| mixed[i]) {
                assert_eq!(g.len(), 1, "{g:?}");
            }
        }
        // More batch migrations than items allowed cannot be planned; none pending is none.
        assert!(group_pending(&[true, true, true], 2).is_none());
        assert_eq!(ranges(&[], 5), (1, vec![]));
    }

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

    #[test]
    fn the_batch_loop_shares_what_the_history_budget_leaves() {
        assert_eq!(batch_invocation_cap(5, 0, 0), 0);
        // A run of a few items: thousands of invocations.
        let few = batch_invocation_cap(3, 1, 0) as usize;
        assert_eq!(
            few,
            (HISTORY_LIMIT - HISTORY_RESERVE - RUN_EVENTS - 3 * ITEM_EVENTS) / BATCH_LOOP_EVENTS
        );
        assert!(few > 2000, "{few}");
        // The largest plan still leaves each of two batch items hundreds, and the whole run
        // stays under the limit even if every one of them loops to its cap.
        let items = DEFAULT_MAX_ITERATIONS;
        let cap = batch_invocation_cap(items, 2, 0) as usize;
        assert!(cap >= 200, "{cap}");
        let worst = RUN_EVENTS + items * ITEM_EVENTS + 2 * cap * BATCH_LOOP_EVENTS;
        assert!(worst + HISTORY_RESERVE <= HISTORY_LIMIT, "{worst}");
        // Items on the task route cost more, and leave the batch items less.
        let with_tasks = batch_invocation_cap(items, 2, 100) as usize;
        assert!(with_tasks < cap, "{with_tasks} {cap}");
        let worst = RUN_EVENTS
            + (items - 100) * ITEM_EVENTS
            + 100 * TASK_ITEM_EVENTS
            + 2 * with_tasks * BATCH_LOOP_EVENTS;
        assert!(worst + HISTORY_RESERVE <= HISTORY_LIMIT, "{worst}");
        // Past what the budget allows (a larger STEPMIGRATE_MAX_ITERATIONS), still one.
        assert_eq!(batch_invocation_cap(3000, 1, 0), 1);
    }

    #[test]
    fn the_batch_budget_stays_well_under_the_deadline() {
        let s = Duration::from_secs;
        // The deadline less 30 s.
        assert_eq!(batch_budget(Some(s(900)), None), s(870));
        // The setting when shorter, the deadline's when not.
        assert_eq!(batch_budget(Some(s(900)), Some(s(5))), s(5));
        assert_eq!(batch_budget(Some(s(120)), Some(s(600))), s(90));
        // A deadline too close for the margin: half of what is left.
        assert_eq!(batch_budget(Some(s(40)), None), s(20));
        assert_eq!(
            batch_budget(Some(s(40)), Some(Duration::from_millis(500))),
            Duration::from_millis(500)
        );
        // No deadline (local runs).
        assert_eq!(batch_budget(None, Some(s(1))), s(1));
        assert_eq!(batch_budget(None, None), DEFAULT_BATCH_BUDGET);
    }

    #[test]
    fn a_batch_loop_counts_invocations_and_stalls() {
        let wait = Duration::from_millis(1500);
        let at = |rows| BatchProgress {
            batches: rows / 10,
            rows,
            batch_rows: 10,
        };
        let first = next_loop(None, "004_backfill", false, at(50), 50, Some(10), wait).unwrap();
        assert_eq!(
            first,
            BatchLoop {
                done: false,
                progress: at(50),
                invocations: 1,
                stalled: 0,
                wait_seconds: 2,
                continue_execution: false,
            }
        );
        // No row changed: stalled, twice is still fine, the third time fails.
        let one = next_loop(
            Some(&first),
            "004_backfill",
            false,
            at(50),
            0,
            Some(10),
            wait,
        )
        .unwrap();
        let two = next_loop(Some(&one), "004_backfill", false, at(50), 0, Some(10), wait).unwrap();
        assert_eq!((two.invocations, two.stalled), (3, 2));
        let err =
            next_loop(Some(&two), "004_backfill", false, at(50), 0, Some(10), wait).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BatchStalled);
        assert!(
            err.to_string()
                .contains("004_backfill made no progress in 3 invocations"),
            "{err}"
        );
        // Progress resets the count.
        let moved = next_loop(
            Some(&two),
            "004_backfill",
            false,
            at(60),
            10,
            Some(10),
            wait,
        )
        .unwrap();
        assert_eq!((moved.invocations, moved.stalled), (4, 0));
        // Done ends it, whatever the counts.
        let done = next_loop(Some(&two), "004_backfill", true, at(50), 0, Some(3), wait).unwrap();
        assert!(done.done);
        assert!(!moved.continue_execution && !done.continue_execution);
        // The cap: the invocation that reaches it, not done, continues in a new execution
        // (no error: nothing is recorded or alerted, the progress is in the ledger).
        let capped = BatchLoop {
            invocations: 9,
            ..moved
        };
        let next = next_loop(
            Some(&capped),
            "004_backfill",
            false,
            at(70),
            10,
            Some(10),
            wait,
        )
        .unwrap();
        assert!(next.continue_execution && !next.done, "{next:?}");
        assert_eq!(next.invocations, 10);
    }

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

    #[test]
    fn a_batch_item_and_its_loop_survive_the_definition() {
        // The plan's item, then ApplyBatch's ResultSelector output ($.batch) next to it.
        let state = json!({"run_id": "r", "execution": "arn:x", "set_digest": "d",
            "range": {"first": "004", "last": "004", "name": "004_backfill", "batch": true, "max_invocations": 500},
            "batch": {"done": false, "progress": {"batches": 3, "rows": 30, "batch_rows": 10}, "invocations": 2, "stalled": 0, "wait_seconds": 5}});
        let ApplyOneRequest::Apply(r) = serde_json::from_value(state).unwrap() else {
            panic!("not an apply")
        };
        assert!(r.range.batch);
        assert_eq!(r.range.max_invocations, Some(500));
        assert_eq!(
            r.batch.map(|b| (b.invocations, b.progress.rows)),
            Some((2, 30))
        );
        // A plain item says nothing of batches, and its output only `done`.
        let plain = MigrationRange {
            first: Version::parse("001").unwrap(),
            last: Version::parse("002").unwrap(),
            name: None,
            batch: false,
            task: false,
            max_invocations: None,
            checksum: None,
        };
        assert_eq!(
            serde_json::to_value(&plain).unwrap(),
            json!({"first": "001", "last": "002"})
        );
        assert_eq!(
            serde_json::to_value(ApplyOutput::of(Vec::new())).unwrap(),
            json!({"results": [], "done": true})
        );
        // An older output (no `done`) reads as done.
        let old: ApplyOutput = serde_json::from_value(json!({"results": []})).unwrap();
        assert!(old.done);
    }

    fn migrator_of(files: &[(&str, &str)]) -> Migrator {
        use crate::migration::{MigrationSet, SourceFile};
        let files = files
            .iter()
            .map(|(name, sql)| SourceFile {
                path: std::path::Path::new("m").join(name),
                bytes: sql.as_bytes().to_vec(),
            })
            .collect();
        let set = MigrationSet::from_files(std::path::Path::new("m"), files).unwrap();
        let db = crate::db::Database::from_url(
            "postgres://nobody@127.0.0.1:9/never",
            "DATABASE_URL",
            Duration::from_secs(1),
        )
        .unwrap();
        Migrator::new(db, set, Default::default())
    }

    #[test]
    fn a_batch_loop_goes_on_with_updated_workers_while_its_migration_is_unchanged() {
        const BACKFILL: &str = "-- stepmigrate: batch\nUPDATE t SET x = 1 WHERE id IN (SELECT id FROM t WHERE x IS NULL LIMIT :batch_size);";
        let planned = migrator_of(&[
            ("001_t.sql", "CREATE TABLE t (id int, x int);"),
            ("002_fill.sql", BACKFILL),
        ]);
        let request = |m: &Migrator| ApplyRequest {
            run_id: "r".into(),
            execution: String::new(),
            set_digest: planned.set.digest(),
            range: MigrationRange {
                first: Version::parse("002").unwrap(),
                last: Version::parse("002").unwrap(),
                name: Some("002_fill".into()),
                batch: true,
                task: false,
                max_invocations: Some(10),
                checksum: m
                    .set
                    .get(&Version::parse("002").unwrap())
                    .map(|m| m.checksum.clone()),
            },
            seen_event: None,
            batch: None,
        };
        let item = request(&planned);
        check_batch_digest(&planned, &item).unwrap();
        // A deploy added a migration: the set changed, the backfill did not.
        let deployed = migrator_of(&[
            ("001_t.sql", "CREATE TABLE t (id int, x int);"),
            ("002_fill.sql", BACKFILL),
            ("003_more.sql", "CREATE TABLE u (id int);"),
        ]);
        check_batch_digest(&deployed, &item).unwrap();
        assert!(
            check_digest(&deployed, &item.set_digest).is_err(),
            "a plain item is refused"
        );
        // The backfill itself was edited, or the item predates the checksum: refused.
        let edited = migrator_of(&[
            ("001_t.sql", "CREATE TABLE t (id int, x int);"),
            ("002_fill.sql", &BACKFILL.replace("x = 1", "x = 2")),
        ]);
        let err = check_batch_digest(&edited, &item).unwrap_err();
        assert!(
            err.to_string()
                .contains("workers were updated during the run"),
            "{err}"
        );
        let mut old = item.clone();
        old.range.checksum = None;
        assert!(check_batch_digest(&deployed, &old).is_err());
    }

    #[test]
    fn empty_input_means_migrate() {
        let input = ExecutionInput::parse(&json!({})).unwrap();
        assert_eq!(input.action, Action::Migrate);
        assert!(!input.dry_run);
        assert_eq!(
            ExecutionInput::parse(&Value::Null).unwrap().action,
            Action::Migrate
        );
    }

    #[test]
    fn the_seed_inputs_are_accepted() {
        assert_eq!(
            ExecutionInput::parse(&json!({"action": "status"}))
                .unwrap()
                .action,
            Action::Status
        );
        let dry = ExecutionInput::parse(&json!({"action": "migrate", "dry_run": true})).unwrap();
        assert!(dry.dry_run);
        let cdk =
            ExecutionInput::parse(&json!({"action": "migrate", "source": "cdk", "target": "004"}))
                .unwrap();
        assert_eq!(cdk.target.as_ref().map(Version::as_str), Some("004"));
    }

    #[test]
    fn bad_input_says_what_is_accepted() {
        for bad in [
            json!({"action": "rollback"}),
            json!({"action": "rollback", "target": "four"}),
            json!({"action": "revert", "target": "004"}),
            json!({"dry_run": "yes"}),
            json!({"actoin": "status"}),
            json!([1]),
            json!({"target": "four"}),
            json!({"skip_after_deploy": "yes"}),
            json!({"action": "rollback", "target": "004", "skip_after_deploy": true}),
        ] {
            let err = ExecutionInput::parse(&bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
            assert!(err.to_string().contains("accepted input"), "{err}");
        }
        let err = ExecutionInput::parse(&json!({"action": "undo"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("status, migrate, verify, rollback"), "{err}");
        let err = ExecutionInput::parse(&json!({"action": "rollback"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("a rollback needs `target`"), "{err}");
    }

    #[test]
    fn the_triggers_input_is_the_deploys_own_run() {
        let deploy: Value = serde_json::from_str(crate::trigger::EXECUTION_INPUT).unwrap();
        let input = ExecutionInput::parse(&deploy).unwrap();
        assert_eq!(input.action, Action::Migrate);
        assert!(input.skip_after_deploy && !input.dry_run);
        // The after-deploy run (the construct's rule) is a plain migrate.
        let after =
            ExecutionInput::parse(&json!({"action": "migrate", "source": "after-deploy"})).unwrap();
        assert!(!after.skip_after_deploy);
    }

    #[test]
    fn a_rollback_names_its_target_and_may_be_a_dry_run() {
        let input = ExecutionInput::parse(&json!({"action": "rollback", "target": "004"})).unwrap();
        assert_eq!(input.action, Action::Rollback);
        assert_eq!(input.target.as_ref().map(Version::as_str), Some("004"));
        assert!(!input.dry_run);
        let all = ExecutionInput::parse(
            &json!({"action": "rollback", "target": "000", "dry_run": true, "source": "console"}),
        )
        .unwrap();
        assert!(all.dry_run);
        assert_eq!(all.target.as_ref().map(Version::as_str), Some("000"));
        // What `stepmigrate remote start --action rollback --to 004` sends parses back.
        let sent = serde_json::to_value(&input).unwrap();
        assert_eq!(
            sent,
            json!({"action": "rollback", "dry_run": false, "target": "004"})
        );
        assert_eq!(ExecutionInput::parse(&sent).unwrap(), input);
    }

    #[test]
    fn a_rollback_plan_runs_and_its_dry_run_reports() {
        let mut plan: PlanOutput = serde_json::from_value(json!({
            "action": "rollback", "to_apply": 2,
            "pending": [{"first": "005", "last": "005", "name": "005_b"}, {"first": "004", "last": "004", "name": "004_a"}],
        }))
        .unwrap();
        assert!(!plan.report_only());
        assert_eq!(plan.pending_count(), 2);
        assert!(plan.reverts.is_empty(), "an older plan output has none");
        plan.dry_run = true;
        plan.to_apply = 0;
        assert!(plan.report_only());
        assert_eq!(plan.pending_count(), 2);
        let run: RunOutput =
            serde_json::from_value(json!({"status": "SUCCEEDED", "rolled_back_count": 2})).unwrap();
        assert_eq!((run.applied_count, run.rolled_back_count), (0, 2));
    }

    #[test]
    fn the_apply_one_worker_tells_a_revert_from_an_apply() {
        let item = json!({"run_id": "r", "execution": "arn:x", "set_digest": "d", "range": {"first": "004", "last": "004", "name": "004_a"}});
        let apply: ApplyOneRequest = serde_json::from_value(item.clone()).unwrap();
        assert!(matches!(apply, ApplyOneRequest::Apply(_)));
        let revert: ApplyOneRequest = serde_json::from_value(json!({ "revert": item })).unwrap();
        let ApplyOneRequest::Revert(r) = revert else {
            panic!("not a revert: {revert:?}")
        };
        assert_eq!(r.revert.range.first.as_str(), "004");
        assert_eq!(r.revert.run_id, "r");
        let verify: ApplyOneRequest =
            serde_json::from_value(json!({"verify": {"action": "verify"}})).unwrap();
        assert!(matches!(verify, ApplyOneRequest::Verify(_)));
        // The record step's input: `rollback` is optional (the apply path sends none).
        let record: RecordRequest = serde_json::from_value(json!({"run_id": "r", "range": {"first": "004", "last": "004"}, "error": {"Error": "SqlFailed", "Cause": "x"}, "rollback": true})).unwrap();
        assert!(record.rollback);
        let record: RecordRequest = serde_json::from_value(json!({"run_id": "r", "set_digest": "d", "range": {"first": "004", "last": "004"}, "error": {"Error": "SqlFailed", "Cause": "x"}})).unwrap();
        assert!(!record.rollback);
    }

    #[test]
    fn a_failure_survives_the_round_trip_through_step_functions() {
        let failure = MigrationFailure {
            version: Version::parse("004").unwrap(),
            name: "004_x".into(),
            file: "migrations/004_x.sql".into(),
            dirty: false,
            notices: Vec::new(),
            rollback: false,
            recorded: false,
            transactional: true,
            error: crate::error::SqlError {
                sqlstate: "42P01".into(),
                message: "no".into(),
                line: Some(3),
                ..Default::default()
            },
        };
        let cause = error_message(&Error::MigrationFailed {
            failure: Box::new(failure.clone()),
        });
        assert_eq!(failure_from_cause(&cause), Some(failure.clone()));
        // Wrapped by Lambda, and whatever its name: a migration whose session was ended is
        // ConnectionFailed (retried), and its failure is still recorded.
        let ended = MigrationFailure {
            error: crate::error::SqlError {
                sqlstate: "57P01".into(),
                message: "terminating connection due to administrator command".into(),
                ..Default::default()
            },
            ..failure
        };
        let error = Error::MigrationFailed {
            failure: Box::new(ended.clone()),
        };
        assert_eq!(error.kind(), ErrorKind::ConnectionFailed);
        let ended_cause = serde_json::json!({"errorType": "ConnectionFailed", "errorMessage": error_message(&error)}).to_string();
        assert_eq!(failure_from_cause(&ended_cause), Some(ended));
        let report: serde_json::Value = serde_json::from_str(&error_message(&error)).unwrap();
        assert_eq!(report["name"], "ConnectionFailed");
        assert_eq!(report["details"]["migration"]["version"], "004");
        assert_eq!(failure_from_cause("not json"), None);
        let wrapped =
            serde_json::json!({"errorType": "SqlFailed", "errorMessage": cause}).to_string();
        assert_eq!(
            failure_from_cause(&wrapped).map(|f| f.version),
            Version::parse("004")
        );
        assert!(cause_message(&wrapped).starts_with("migration 004_x failed"));
        assert!(cause_message(&cause).starts_with("migration 004_x failed"));
    }
}

#[cfg(test)]
mod definition_tests {
    use super::CONTINUE_ERROR;
    use crate::error::ErrorKind;
    use serde_json::Value;

    /// Every error name the state machine matches is one the workers raise (or one of Step
    /// Functions' own): a renamed error cannot silently stop matching.
    #[test]
    fn the_definition_matches_only_known_error_names() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../statemachine/stepmigrate.asl.json"
        ))
        .unwrap();
        let definition: Value = serde_json::from_str(&text).unwrap();
        let mut names = Vec::new();
        collect(&definition, &mut names);
        assert!(names.iter().any(|n| n == "LockTimeout"), "{names:?}");
        for name in names {
            let known = ErrorKind::ALL.iter().any(|k| k.as_str() == name)
                || name.starts_with("Lambda.")
                || name.starts_with("States.")
                // ECS's own, for the task route (RunTask refused, no capacity).
                || ["ECS.AmazonECSException", "AmazonECS.Unknown"].contains(&name.as_str())
                // The definition's own, not a worker's: a batch loop that continues in a
                // new execution stops the Map with it, and the Map catches it.
                || name == CONTINUE_ERROR;
            assert!(known, "the definition matches unknown error {name}");
        }
    }

    /// Every console example in `statemachine/examples/` is an input the plan step accepts,
    /// and the rollback examples are there.
    #[test]
    fn the_examples_are_accepted_inputs() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../statemachine/examples");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let input: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            crate::steps::ExecutionInput::parse(&input)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            names.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
        for wanted in ["rollback-to-004.json", "rollback-dry-run.json"] {
            assert!(names.iter().any(|n| n == wanted), "{names:?}");
        }
    }

    fn collect(v: &Value, names: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::Array(errors)) = o.get("ErrorEquals") {
                    names.extend(errors.iter().filter_map(|e| e.as_str().map(str::to_owned)));
                }
                if let Some(Value::String(e)) = o.get("Error") {
                    names.push(e.clone());
                }
                o.values().for_each(|x| collect(x, names));
            }
            Value::Array(a) => a.iter().for_each(|x| collect(x, names)),
            _ => {}
        }
    }
}
