//! The record step, and reading a worker's error back out of what Step Functions caught: the
//! failure travels from apply-one to record (and the alert, and `stepmigrate remote`) only as
//! the text of a caught error's `Cause`.

use serde::Deserialize;

use super::contracts::{FailureReport, RecordRequest};
use crate::error::{Error, ErrorReport, MigrationFailure};
use crate::metrics::{Metric, MetricLine};
use crate::runner::Migrator;

/// The record step: records a migration's failure in the ledger (when the error carries
/// one) and reports the failure metric. Returns the report the alert and the execution's
/// error show.
#[tracing::instrument(name = "record", skip_all, fields(execution = %request.execution, run_id = %request.run_id, first = %request.range.first))]
pub async fn record(migrator: &Migrator, request: RecordRequest) -> Result<FailureReport, Error> {
    let failure = failure_from_cause(&request.error.cause);
    // The failed migration is in the error; an error before any migration ran (a lost
    // connection) is the item's first one.
    let (version, name) = match &failure {
        Some(f) => (f.version.to_string(), f.name.clone()),
        None => {
            let first = &request.range.first;
            (
                first.to_string(),
                migrator
                    .set
                    .get(first)
                    .map_or_else(|| first.to_string(), |m| m.name.clone()),
            )
        }
    };
    let rollback = request.rollback || failure.as_ref().is_some_and(|f| f.rollback);
    let what = |name: &str| {
        if rollback {
            format!("rollback of {name}")
        } else {
            name.to_owned()
        }
    };
    let mut report = FailureReport {
        run_id: request.run_id.clone(),
        database: migrator.db.name().to_owned(),
        version: version.clone(),
        name: name.clone(),
        error: request.error.error.clone(),
        message: format!(
            "{} failed: {}",
            what(&name),
            cause_message(&request.error.cause)
        ),
        sqlstate: None,
        line: None,
        statement: None,
        recorded: false,
        dirty: false,
        rollback,
    };
    if let Some(failure) = failure {
        // A long migration's task recorded its own (TaskOutcome read it back).
        if !failure.recorded {
            migrator.record_failure(&failure, &request.run_id).await?;
        }
        report.message = format!("{} failed: {}", what(&failure.name), failure.error);
        report.sqlstate = Some(failure.error.sqlstate.clone());
        report.line = failure.error.line;
        report.statement = failure.error.statement.clone();
        report.recorded = true;
        report.dirty = failure.is_dirty();
    }
    MetricLine::new(migrator.db.name())
        .with(Metric::MigrationsFailed, 1.0)
        .property("version", &version)
        .property("run_id", &request.run_id)
        .property("error", &request.error.error)
        .property("direction", if rollback { "down" } else { "up" })
        .emit();
    Ok(report)
}

/// The message of an error as a Lambda reports it: the one error document
/// ([`crate::error::ErrorReport`]) that the CLI's `--json` prints too.
pub fn error_message(error: &Error) -> String {
    serde_json::to_string(&error.report()).unwrap_or_else(|_| error.to_string())
}

/// The worker's error document inside a caught error's `Cause`. Step Functions wraps a Lambda
/// function error as `{"errorType": ..., "errorMessage": ...}`, whose message is the document.
fn report_from_cause(cause: &str) -> Option<ErrorReport> {
    #[derive(Deserialize)]
    struct Wrapped {
        #[serde(rename = "errorMessage")]
        error_message: String,
    }
    match serde_json::from_str::<Wrapped>(cause) {
        Ok(wrapped) => serde_json::from_str(&wrapped.error_message).ok(),
        Err(_) => serde_json::from_str(cause).ok(),
    }
}

/// The failure inside a caught apply-one error, if it carries one (whatever its name: a
/// migration whose session was ended is `ConnectionFailed`, and still recorded).
fn failure_from_cause(cause: &str) -> Option<MigrationFailure> {
    report_from_cause(cause)?.details.migration.map(|f| *f)
}

pub(crate) fn cause_message(cause: &str) -> String {
    report_from_cause(cause).map_or_else(|| cause.to_owned(), |r| r.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::migration::Version;

    #[test]
    fn a_failure_survives_the_round_trip_through_step_functions() {
        let failure = MigrationFailure {
            version: Version::parse("004").unwrap(),
            name: "004_x".into(),
            file: "migrations/004_x.sql".into(),
            dirty: false,
            notices: Vec::new(),
            rollback: false,
            recorded: false,
            transactional: true,
            error: crate::error::SqlError {
                sqlstate: "42P01".into(),
                message: "no".into(),
                line: Some(3),
                ..Default::default()
            },
        };
        let cause = error_message(&Error::MigrationFailed {
            failure: Box::new(failure.clone()),
        });
        assert_eq!(failure_from_cause(&cause), Some(failure.clone()));
        // Wrapped by Lambda, and whatever its name: a migration whose session was ended is
        // ConnectionFailed (retried), and its failure is still recorded.
        let ended = MigrationFailure {
            error: crate::error::SqlError {
                sqlstate: "57P01".into(),
                message: "terminating connection due to administrator command".into(),
                ..Default::default()
            },
            ..failure
        };
        let error = Error::MigrationFailed {
            failure: Box::new(ended.clone()),
        };
        assert_eq!(error.kind(), ErrorKind::ConnectionFailed);
        let ended_cause = serde_json::json!({"errorType": "ConnectionFailed", "errorMessage": error_message(&error)}).to_string();
        assert_eq!(failure_from_cause(&ended_cause), Some(ended));
        let report: serde_json::Value = serde_json::from_str(&error_message(&error)).unwrap();
        assert_eq!(report["name"], "ConnectionFailed");
        assert_eq!(report["details"]["migration"]["version"], "004");
        assert_eq!(failure_from_cause("not json"), None);
        let wrapped =
            serde_json::json!({"errorType": "SqlFailed", "errorMessage": cause}).to_string();
        assert_eq!(
            failure_from_cause(&wrapped).map(|f| f.version),
            Version::parse("004")
        );
        assert!(cause_message(&wrapped).starts_with("migration 004_x failed"));
        assert!(cause_message(&cause).starts_with("migration 004_x failed"));
    }
}
