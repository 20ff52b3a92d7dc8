//! The `notify` worker: publishes the failure alert to SNS and the failure metric.
use stepmigrate_lambda::lambda::{self, MessageFormat, Notifier};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::serve(
        "notify",
        MessageFormat::Json,
        Notifier::from_env(),
        |notifier, request, _| async move { notifier.notify(request).await },
    )
    .await
}
