//! The `apply-one` worker: applies one migration under the lock, with its ledger entry.
use stepmigrate::lambda::{self, MessageFormat};
use stepmigrate::steps;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::serve(
        "apply-one",
        MessageFormat::Json,
        lambda::migrator_from_env(),
        |migrator, request, _| async move { steps::apply_one(&migrator, request).await },
    )
    .await
}
