//! apply-one's task mode (`bootstrap task`): the ECS Fargate task the state machine starts
//! for a long migration (`ApplyTask`). The same binary, package, settings and database secret
//! as the Lambda worker; the item from `STEPMIGRATE_TASK_INPUT`; no deadline.

use std::process::ExitCode;

use super::*;

/// Whether the binary was started as the ECS task: `bootstrap task`.
pub fn task_mode() -> bool {
    std::env::args().nth(1).as_deref() == Some("task")
}

/// Runs the task's one item ([`steps::apply_task`]) and exits: 0 when its migrations are
/// applied, 1 otherwise, with the error document in the log. What the state machine goes by
/// is the ledger, which `TaskOutcome` reads, not the exit code.
pub async fn run_task() -> ExitCode {
    init_logging();
    let span = info_span!("task", step = "apply-one-task");
    match apply_from_env().instrument(span).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(
                error = e.kind().as_str(),
                report = %steps::error_message(&e),
                "{e}"
            );
            ExitCode::FAILURE
        }
    }
}

async fn apply_from_env() -> Result<(), Error> {
    let raw = env(ENV_TASK_INPUT).ok_or_else(|| Error::Config {
        variable: ENV_TASK_INPUT.into(),
        reason: "not set: the state machine's ApplyTask sets it to the Map item".into(),
    })?;
    let request = task_request(&raw)?;
    let migrator = LazyMigrator::from_env()?.get_within(None).await?;
    // Boxed: the step's future nests deep (see apply-one's main).
    Box::pin(steps::apply_task(&migrator, request)).await?;
    Ok(())
}

/// The Map item the task applies, as `STEPMIGRATE_TASK_INPUT` holds it.
pub fn task_request(raw: &str) -> Result<steps::ApplyRequest, Error> {
    serde_json::from_str(raw).map_err(|e| Error::Config {
        variable: ENV_TASK_INPUT.into(),
        reason: format!("not a Map item ({{\"run_id\", \"set_digest\", \"range\": {{\"first\", \"last\"}}}}): {e}"),
    })
}
