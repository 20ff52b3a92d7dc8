//! A run with a deadline (verify in a Lambda invocation) stops on its own before it: it
//! starts no migration whose statements cannot end by then, caps their `statement_timeout` so
//! they do, and reports what it did not verify, instead of Lambda stopping it with nothing
//! reported (`Lambda.Unknown`) and its locks held until the connection dies.

use std::time::{Duration, Instant};

use crate::verify::VerifyOutcome;

/// The reason a migration verify did not start (or stopped, capped) is reported `skipped`.
pub const OUT_OF_TIME: &str =
    "not verified: the time to verify ran out (the Lambda invocation's deadline); verify it in another execution, or with the CLI";
/// The reason of each migration after it.
pub const OUT_OF_TIME_AFTER: &str =
    "not verified: the time to verify ran out before it (the Lambda invocation's deadline)";

/// The least a statement is given: less is not worth starting.
pub const MIN_STATEMENT_TIME: Duration = Duration::from_secs(1);

/// What a deadline leaves a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// No deadline, or the migration's own limits end before it.
    Unchanged,
    /// Its statement_timeout, shortened so that every statement (each waiting its
    /// lock_timeout first) ends before the deadline.
    Capped(Duration),
    /// Not even [`MIN_STATEMENT_TIME`] a statement: do not start it.
    OutOfTime,
}

/// How a migration of `statements` statements with `(lock_timeout, statement_timeout)`
/// (0: none) fits before `deadline`, at `now`. Each statement may wait its lock_timeout and
/// then run its statement_timeout (PostgreSQL's timeouts are per statement).
pub fn fit(
    deadline: Option<Instant>,
    now: Instant,
    statements: usize,
    (lock_timeout, statement_timeout): (Duration, Duration),
) -> Fit {
    let Some(deadline) = deadline else {
        return Fit::Unchanged;
    };
    let left = deadline.saturating_duration_since(now);
    let per_statement = left / u32::try_from(statements.max(1)).unwrap_or(u32::MAX);
    let run = per_statement.saturating_sub(lock_timeout);
    if run < MIN_STATEMENT_TIME {
        Fit::OutOfTime
    } else if !statement_timeout.is_zero() && statement_timeout <= run {
        Fit::Unchanged
    } else {
        Fit::Capped(run)
    }
}

/// Whether a verification whose statement_timeout was capped failed on that cap (SQLSTATE
/// 57014, "canceling statement due to statement timeout"): not a finding about the migration,
/// which its own statement_timeout might have let finish; it was not verified.
pub fn stopped_by_cap(outcome: &VerifyOutcome) -> bool {
    matches!(outcome, VerifyOutcome::Failed { error }
        if error.sqlstate == "57014" && error.message.contains("statement timeout"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn no_deadline_changes_nothing() {
        assert_eq!(fit(None, Instant::now(), 3, (S(2), S(0))), Fit::Unchanged);
    }

    #[test]
    fn limits_that_end_in_time_are_kept() {
        let now = Instant::now();
        assert_eq!(
            fit(Some(now + S(100)), now, 2, (S(2), S(40))),
            Fit::Unchanged
        );
    }

    #[test]
    fn each_statement_gets_its_share_less_its_lock_wait() {
        let now = Instant::now();
        // 100 s for 4 statements: 25 s each, 2 of them waiting for the lock.
        assert_eq!(
            fit(Some(now + S(100)), now, 4, (S(2), S(600))),
            Fit::Capped(S(23))
        );
        // No limit of its own: capped too.
        assert_eq!(
            fit(Some(now + S(100)), now, 1, (S(2), S(0))),
            Fit::Capped(S(98))
        );
    }

    #[test]
    fn nothing_starts_past_the_deadline() {
        let now = Instant::now();
        assert_eq!(
            fit(Some(now), now + S(1), 1, (S(2), S(600))),
            Fit::OutOfTime
        );
        assert_eq!(
            fit(Some(now + S(10)), now, 5, (S(2), S(600))),
            Fit::OutOfTime
        );
    }

    #[test]
    fn only_a_statement_timeout_is_the_caps_doing() {
        let failed = |sqlstate: &str, message: &str| VerifyOutcome::Failed {
            error: crate::error::SqlError {
                sqlstate: sqlstate.into(),
                message: message.into(),
                ..Default::default()
            },
        };
        assert!(stopped_by_cap(&failed(
            "57014",
            "canceling statement due to statement timeout"
        )));
        assert!(!stopped_by_cap(&failed(
            "57014",
            "canceling statement due to user request"
        )));
        assert!(!stopped_by_cap(&failed(
            "55P03",
            "canceling statement due to lock timeout"
        )));
        assert!(!stopped_by_cap(&VerifyOutcome::Ok));
    }
}
