//! The `verify` action's one step: the pending migrations tried on the target in a
//! transaction that is rolled back.

use std::time::{Duration, Instant};

use super::contracts::{Action, ExecutionInput, VerifyRequest, VERIFIED_LISTED};
use crate::error::Error;
use crate::runner::Migrator;

/// The `verify` action: under the migration lock, the pending migrations run on the target in
/// ONE transaction that is rolled back (lock_timeout at most 2 s), then one `verified` event
/// each. A migration that fails verification is the step's error (`SqlFailed`, or
/// `LockTimeout` when it waited too long for a lock), naming it, after its event is recorded.
#[tracing::instrument(name = "verify", skip_all, fields(execution = request.execution.as_deref().unwrap_or_default()))]
pub async fn verify(
    migrator: &Migrator,
    request: VerifyRequest,
    remaining: Option<Duration>,
) -> Result<crate::verify::VerifySummary, Error> {
    let input = ExecutionInput::parse(&request.verify)?;
    if input.action != Action::Verify {
        return Err(Error::InvalidInput(format!(
            "the verify step was given the action `{:?}`",
            input.action
        )));
    }
    if input.dry_run {
        return Err(Error::InvalidInput(
            "`dry_run` does not apply to verify: it never applies anything".into(),
        ));
    }
    let run_id = request
        .execution
        .as_deref()
        .and_then(|arn| arn.rsplit(':').next())
        .map(str::to_owned)
        .unwrap_or_else(|| crate::runner::new_run_id("verify"));
    let lock_timeout =
        crate::verify::IN_TRANSACTION_LOCK_TIMEOUT.min(migrator.settings.lock_timeout);
    // The verification stops on its own before the invocation's deadline (less the margin a
    // worker keeps for its bookkeeping: the `verified` events, the rollback, the answer): what
    // it could not verify in time is reported `skipped` with the reason, never cut off by
    // Lambda with nothing reported.
    let bounded;
    let migrator = match remaining {
        Some(left) => {
            let settings = crate::config::Settings {
                deadline: Some(
                    Instant::now() + left.saturating_sub(crate::lambda::deadline_margin(left)),
                ),
                ..migrator.settings.clone()
            };
            bounded = Migrator::new(migrator.db.clone(), migrator.set.clone(), settings);
            &bounded
        }
        None => migrator,
    };
    let report = migrator
        .verify_in_transaction(input.target.as_ref(), lock_timeout, &run_id)
        .await?;
    if let Some(e) = report.error() {
        return Err(e);
    }
    Ok(report.summary(VERIFIED_LISTED))
}
