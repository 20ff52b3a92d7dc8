//! The `apply-one` worker: applies one migration under the lock, with its ledger entry; and
//! the `verify` action's Task (the same database access, lock and timeouts).
//! A batch migration runs batches until its time budget (`STEPMIGRATE_BATCH_BUDGET`, below
//! the invocation's deadline) and answers `done: false`: the definition invokes it again.
//! `apply-one task` is the ECS task of a long migration: one item, no deadline.
use std::process::ExitCode;
use std::time::SystemTime;

use stepmigrate_lambda::lambda::{self, LazyMigrator, MessageFormat};
use stepmigrate_lambda::steps;

#[tokio::main]
async fn main() -> Result<ExitCode, lambda_runtime::Error> {
    if lambda::task_mode() {
        return Ok(lambda::run_task().await);
    }
    let init = async { Ok((LazyMigrator::from_env()?, lambda::batch_settings()?)) };
    lambda::serve(
        "apply-one",
        MessageFormat::Json,
        init,
        |state, request, context| async move {
            let remaining = lambda::remaining(context.deadline, SystemTime::now());
            let migrator = state.0.get(&context).await?;
            // Boxed: the step's future nests too deep for the compiler's layout depth inside
            // the runtime's.
            Box::pin(steps::apply_one_or_verify(
                &migrator, request, &state.1, remaining,
            ))
            .await
        },
    )
    .await
    .map(|()| ExitCode::SUCCESS)
}
