//! The `record` worker: records a failure the migration's own transaction could not.
use stepmigrate_lambda::lambda::{self, LazyMigrator, MessageFormat};
use stepmigrate_lambda::steps;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::serve(
        "record",
        MessageFormat::Json,
        async { LazyMigrator::from_env() },
        |migrator, request, context| async move {
            steps::record(&*migrator.get(&context).await?, request).await
        },
    )
    .await
}
