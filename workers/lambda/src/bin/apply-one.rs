//! The `apply-one` worker: applies one migration under the lock, with its ledger entry; and
//! the `verify` action's Task (the same database access, lock and timeouts).
use stepmigrate_lambda::lambda::{self, LazyMigrator, MessageFormat};
use stepmigrate_lambda::steps;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::serve(
        "apply-one",
        MessageFormat::Json,
        async { LazyMigrator::from_env() },
        |migrator, request, context| async move {
            steps::apply_one_or_verify(&*migrator.get(&context).await?, request).await
        },
    )
    .await
}
