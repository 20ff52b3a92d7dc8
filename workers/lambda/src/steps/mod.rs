//! The state machine's steps as plain functions with typed (serde) inputs and outputs:
//! `plan`, `apply-one` (which also reverts one migration of a rollback execution, verifies,
//! and reads a task's outcome) and `record`. The Lambda binaries deserialize, call and
//! serialize; `statemachine/README.md` documents each shape with an example.
//!
//! The shapes (`contracts.rs`) live apart from the step bodies: the definition, the trigger
//! and `stepmigrate remote` depend on them field by field, so a change to a body must not move
//! them. The history budget (`history.rs`) has a file of its own because the plan and the
//! batch loop both spend it.

mod apply;
mod contracts;
mod history;
mod plan;
mod record;
mod revert;
mod task;
mod verify;

pub use apply::{
    apply_one, apply_one_or_verify, apply_task, batch_budget, next_loop, BatchSettings,
    BATCH_DEADLINE_MARGIN, DEFAULT_BATCH_BUDGET, DEFAULT_BATCH_WAIT, MAX_BATCH_WAIT,
    STALL_INVOCATIONS,
};
pub use contracts::{
    Action, ApplyOneOutput, ApplyOneRequest, ApplyOutput, ApplyRequest, BatchLoop, CaughtError,
    Continuation, ExecutionInput, FailureReport, MigrationRange, PlanOutput, PlanRequest,
    RecordRequest, RevertItem, RevertRequest, RunOutput, TaskOutcomeItem, TaskOutcomeRequest,
    VerifyRequest, ACTIONS, CONTINUE_ERROR, INPUT_FIELDS, LISTED_MIGRATIONS, VERIFIED_LISTED,
};
pub use history::{
    batch_invocation_cap, BATCH_LOOP_EVENTS, DEFAULT_MAX_ITERATIONS, HISTORY_LIMIT,
    HISTORY_RESERVE, ITEM_EVENTS, RUN_EVENTS, TASK_ITEM_EVENTS,
};
pub use plan::{continuation_of, plan, PlanSettings, DEFAULT_TASK_THRESHOLD};
pub(crate) use record::cause_message;
pub use record::{error_message, record};
pub use revert::revert_one;
pub use task::{task_outcome, task_stop_reason};
pub use verify::verify;
