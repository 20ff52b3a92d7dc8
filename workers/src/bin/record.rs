//! The `record` worker: records a failure the migration's own transaction could not.
use stepmigrate::lambda::{self, MessageFormat};
use stepmigrate::steps;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::serve(
        "record",
        MessageFormat::Json,
        lambda::migrator_from_env(),
        |migrator, request, _| async move { steps::record(&migrator, request).await },
    )
    .await
}
