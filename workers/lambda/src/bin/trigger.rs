//! The `trigger` worker: the CDK custom resource's onEvent or isComplete function
//! (`STEPMIGRATE_TRIGGER_HANDLER`), which starts the migration run on deploy and waits for it.
use stepmigrate_lambda::lambda::{self, MessageFormat};
use stepmigrate_lambda::trigger::Trigger;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::serve(
        "trigger",
        MessageFormat::Text,
        Trigger::from_env(),
        |trigger, event, _| async move { trigger.handle(event).await },
    )
    .await
}
