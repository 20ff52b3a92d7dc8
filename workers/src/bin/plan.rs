//! The `plan` worker: validates the execution input, reads the ledger and plans.
use stepmigrate::lambda::{self, MessageFormat};
use stepmigrate::steps;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let init = async {
        Ok((
            lambda::migrator_from_env().await?,
            lambda::max_iterations()?,
        ))
    };
    lambda::serve(
        "plan",
        MessageFormat::Json,
        init,
        |state, request, _| async move { steps::plan(&state.0, request, state.1).await },
    )
    .await
}
