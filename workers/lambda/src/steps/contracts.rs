//! What each step is handed and answers, as the state machine's definition passes it, and what
//! the trigger and `stepmigrate remote` read back from an execution's history. Field names,
//! order and serde attributes are the contract: the definition's paths and older executions'
//! outputs name them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;
use crate::ledger::BatchProgress;
use crate::migration::Version;
use crate::plan::{Entry, State};

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
    /// (see [`verify`](super::verify())).
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
    /// history budget, [`batch_invocation_cap`](super::batch_invocation_cap)); past it, the
    /// migrate continues in a new execution ([`BatchLoop::continue_execution`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_invocations: Option<u32>,
    /// A batch item's: its migration's checksum when planned. A batch loop may outlast a
    /// deploy that updates the workers under it; it goes on with the new ones as long as this
    /// migration is unchanged (`check_batch_digest`).
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

/// How many migrations a status lists in full before it truncates.
pub const LISTED_MIGRATIONS: usize = 500;

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
    pub(super) fn of(results: Vec<crate::runner::MigrationResult>) -> ApplyOutput {
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

/// A rollback execution's Map item, as the `RevertOne` Task sends it:
/// `{"revert": {"run_id", "execution", "set_digest", "range"}}`, the same fields as an apply
/// item under `revert` (the range holds one migration: `first` = `last`).
#[derive(Debug, Clone, Deserialize)]
pub struct RevertRequest {
    pub revert: ApplyRequest,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use serde_json::json;

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
