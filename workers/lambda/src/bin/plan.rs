//! The `plan` worker: validates the execution input, reads the ledger and plans.
use stepmigrate_lambda::lambda::{self, LazyMigrator, MessageFormat};
use stepmigrate_lambda::steps;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let init = async { Ok((LazyMigrator::from_env()?, lambda::plan_settings()?)) };
    lambda::serve(
        "plan",
        MessageFormat::Json,
        init,
        |state, request, context| async move {
            steps::plan(&*state.0.get(&context).await?, request, &state.1).await
        },
    )
    .await
}
