//! Executions of the state machine, as the deploy-time trigger and `stepmigrate remote` see
//! them: start one idempotently by name, read how it ended, and follow its history migration
//! by migration. The reading is pure ([`Summary`], [`Milestone::from_event`]); [`Executions`]
//! only moves those values to and from the Step Functions API.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::apply::Outcome;
use crate::error::Error;
use crate::runner::MigrationResult;
use crate::steps::{ApplyOutput, PlanOutput, RunOutput};

/// How an execution stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Aborted,
    PendingRedrive,
}

impl Status {
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "RUNNING" => Status::Running,
            "SUCCEEDED" => Status::Succeeded,
            "FAILED" => Status::Failed,
            "TIMED_OUT" => Status::TimedOut,
            "ABORTED" => Status::Aborted,
            "PENDING_REDRIVE" => Status::PendingRedrive,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "RUNNING",
            Status::Succeeded => "SUCCEEDED",
            Status::Failed => "FAILED",
            Status::TimedOut => "TIMED_OUT",
            Status::Aborted => "ABORTED",
            Status::PendingRedrive => "PENDING_REDRIVE",
        }
    }

    pub fn is_running(self) -> bool {
        self == Status::Running
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What DescribeExecution says of an execution.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub arn: String,
    pub name: String,
    pub status: Status,
    /// The execution's input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// The execution's output (the `Done` or `Report` state's document), when it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
}

impl Summary {
    /// `Ok(None)` while it runs, `Ok(Some(output))` when it succeeded, and an
    /// [`Error::ExecutionFailed`] naming the migration and the database's error otherwise.
    pub fn outcome(&self) -> Result<Option<&Value>, Error> {
        match self.status {
            Status::Running => Ok(None),
            Status::Succeeded => Ok(Some(self.output.as_ref().unwrap_or(&Value::Null))),
            status => Err(Error::ExecutionFailed {
                execution: self.arn.clone(),
                status: status.as_str().to_owned(),
                error: self.error.clone().unwrap_or_default(),
                message: self.failure_message(),
            }),
        }
    }

    /// One line a person can act on: the Fail state's error name and its cause, which names
    /// the migration and carries the database's error (SQLSTATE, message, line).
    pub fn failure_message(&self) -> String {
        let error = self.error.as_deref().unwrap_or("").trim();
        let cause = self
            .cause
            .as_deref()
            .map(crate::steps::cause_message)
            .unwrap_or_default();
        let cause = cause.trim();
        let what = match self.status {
            Status::TimedOut => "the migration run timed out",
            Status::Aborted => "the migration run was stopped",
            _ => "the migration run failed",
        };
        let text = match (error.is_empty(), cause.is_empty()) {
            (true, true) => what.to_owned(),
            (false, true) => format!("{what}: {error}"),
            (true, false) => cause.to_owned(),
            (false, false) => format!("{error}: {cause}"),
        };
        truncate_bytes(&text, 1000)
    }

    /// `applied_count` of the `Done` state's output (0 for a report or an empty run).
    pub fn applied_count(&self) -> u64 {
        self.run_output().applied_count
    }

    /// The `Done` state's output (empty for a report).
    pub fn run_output(&self) -> RunOutput {
        self.output
            .as_ref()
            .and_then(|o| RunOutput::deserialize(o).ok())
            .unwrap_or_default()
    }
}

/// At most `max` bytes (on a character boundary): CloudFormation keeps a custom resource's
/// whole response under 4 KB, and the Provider adds to the message.
fn truncate_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// The ARN an execution of `state_machine_arn` named `name` has.
pub fn execution_arn(state_machine_arn: &str, name: &str) -> String {
    format!(
        "{}:{name}",
        state_machine_arn.replacen(":stateMachine:", ":execution:", 1)
    )
}

/// The Step Functions console page of an execution.
pub fn console_url(execution_arn: &str) -> String {
    let region = execution_arn
        .split(':')
        .nth(3)
        .filter(|r| !r.is_empty())
        .unwrap_or("us-east-1");
    format!("https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/{execution_arn}")
}

/// One event of an execution's history, reduced to what [`Milestone`]s are read from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryEvent {
    pub id: i64,
    /// The event type, e.g. `LambdaFunctionSucceeded`.
    pub kind: String,
    pub timestamp: String,
    /// The state's name (`...StateEntered` events).
    pub state: Option<String>,
    pub input: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub cause: Option<String>,
}

/// What a person following a run wants to see, in history order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Milestone {
    Started,
    /// The plan step finished.
    Planned {
        database: String,
        /// How many migrations this execution applies (0 when it only reports).
        to_apply: u64,
        /// How many migrations are pending.
        pending: u64,
        dry_run: bool,
        /// A status or dry-run execution reports and stops.
        report_only: bool,
        /// A rollback: `to_apply` and `pending` count migrations to revert.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        rollback: bool,
    },
    /// One migration an apply-one step applied (or found applied).
    Migration {
        version: String,
        name: String,
        outcome: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        execution_time_ms: Option<u64>,
    },
    /// A step failed; Step Functions may retry it (LockTimeout, ConnectionFailed).
    StepFailed {
        error: String,
        message: String,
    },
    Succeeded {
        applied_count: u64,
        /// A rollback's.
        #[serde(default, skip_serializing_if = "is_zero")]
        rolled_back_count: u64,
    },
    Failed {
        error: String,
        message: String,
    },
    TimedOut,
    Aborted,
}

impl Milestone {
    /// The milestones one history event stands for (most stand for none).
    pub fn from_event(event: &HistoryEvent) -> Vec<Milestone> {
        fn output<T: serde::de::DeserializeOwned>(event: &HistoryEvent) -> Option<T> {
            serde_json::from_str(event.output.as_deref()?).ok()
        }
        let message = || {
            event
                .cause
                .as_deref()
                .map(crate::steps::cause_message)
                .unwrap_or_default()
        };
        match event.kind.as_str() {
            "ExecutionStarted" => vec![Milestone::Started],
            "LambdaFunctionSucceeded" | "TaskSucceeded" => {
                if let Some(applied) = output::<ApplyOutput>(event) {
                    applied.results.iter().map(migration_milestone).collect()
                } else if let Some(plan) = output::<PlanOutput>(event) {
                    vec![Milestone::Planned {
                        database: plan.database.clone(),
                        to_apply: plan.to_apply as u64,
                        pending: plan.pending_count() as u64,
                        dry_run: plan.dry_run,
                        report_only: plan.report_only(),
                        rollback: plan.action == crate::steps::Action::Rollback,
                    }]
                } else {
                    Vec::new()
                }
            }
            "LambdaFunctionFailed" | "LambdaFunctionTimedOut" | "TaskFailed" | "TaskTimedOut" => {
                vec![Milestone::StepFailed {
                    error: event.error.clone().unwrap_or_default(),
                    message: message(),
                }]
            }
            "ExecutionSucceeded" => {
                let run = output::<RunOutput>(event).unwrap_or_default();
                vec![Milestone::Succeeded {
                    applied_count: run.applied_count,
                    rolled_back_count: run.rolled_back_count,
                }]
            }
            "ExecutionFailed" => vec![Milestone::Failed {
                error: event.error.clone().unwrap_or_default(),
                message: message(),
            }],
            "ExecutionTimedOut" => vec![Milestone::TimedOut],
            "ExecutionAborted" => vec![Milestone::Aborted],
            _ => Vec::new(),
        }
    }

    /// Whether the execution ended with this milestone.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Milestone::Succeeded { .. }
                | Milestone::Failed { .. }
                | Milestone::TimedOut
                | Milestone::Aborted
        )
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn migration_milestone(result: &MigrationResult) -> Milestone {
    Milestone::Migration {
        version: result.version.to_string(),
        name: result.name.clone(),
        outcome: result.outcome.name().to_owned(),
        execution_time_ms: match result.outcome {
            Outcome::Applied {
                execution_time_ms, ..
            }
            | Outcome::RolledBack {
                execution_time_ms, ..
            } => Some(execution_time_ms),
            _ => None,
        },
    }
}

pub use client::{DescribeFailure, Executions};

/// Whether a Step Functions error may go away by itself (throttling, a 5xx, a timeout), from
/// its error code and HTTP status: then the caller asks again later. Anything else (an
/// execution that does not exist, a missing permission, a malformed ARN) is permanent.
pub fn is_transient_error(code: Option<&str>, http_status: Option<u16>) -> bool {
    const TRANSIENT_CODES: [&str; 12] = [
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalServerError",
        "InternalFailure",
        "RequestTimeoutException",
    ];
    code.is_some_and(|c| TRANSIENT_CODES.contains(&c))
        || http_status.is_some_and(|s| s == 429 || s >= 500)
}

mod client {
    use aws_sdk_sfn::error::DisplayErrorContext;

    use super::{execution_arn, HistoryEvent, Status, Summary};
    use crate::error::Error;

    fn service_error(e: impl std::error::Error) -> Error {
        Error::Service {
            service: "Step Functions".into(),
            message: DisplayErrorContext(e).to_string(),
        }
    }

    /// A failed DescribeExecution: the error, and whether it may go away by itself
    /// ([`super::is_transient_error`]; timeouts and failed connections are transient too).
    #[derive(Debug)]
    pub struct DescribeFailure {
        pub error: Error,
        pub transient: bool,
    }

    fn describe_failure(
        e: aws_sdk_sfn::error::SdkError<
            aws_sdk_sfn::operation::describe_execution::DescribeExecutionError,
            aws_sdk_sfn::config::http::HttpResponse,
        >,
    ) -> DescribeFailure {
        use aws_sdk_sfn::error::{ProvideErrorMetadata, SdkError};
        let transient = match &e {
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => true,
            SdkError::ServiceError(context) => super::is_transient_error(
                context.err().code(),
                Some(context.raw().status().as_u16()),
            ),
            _ => false,
        };
        DescribeFailure {
            error: service_error(e),
            transient,
        }
    }

    /// The Step Functions calls of the trigger and `stepmigrate remote`.
    #[derive(Clone, Debug)]
    pub struct Executions {
        client: aws_sdk_sfn::Client,
    }

    impl Executions {
        /// With the credentials and region the AWS CLI would use.
        pub async fn from_default_config() -> Executions {
            let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            Executions::new(&config)
        }

        pub fn new(config: &aws_config::SdkConfig) -> Executions {
            Executions {
                client: aws_sdk_sfn::Client::new(config),
            }
        }

        /// Starts an execution named `name`, or finds the one a retried request already
        /// started: a Standard workflow answers a running execution's name and input with
        /// that execution, and a closed one's with ExecutionAlreadyExists, which is that
        /// execution too when its input is the same and `reuse_closed` allows it (the trigger's
        /// redelivered request); otherwise it is an error naming the conflict.
        pub async fn start(
            &self,
            state_machine_arn: &str,
            name: &str,
            input: &str,
            reuse_closed: bool,
        ) -> Result<String, Error> {
            let started = self
                .client
                .start_execution()
                .state_machine_arn(state_machine_arn)
                .name(name)
                .input(input)
                .send()
                .await;
            match started {
                Ok(out) => Ok(out.execution_arn().to_owned()),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_execution_already_exists()) =>
                {
                    let arn = execution_arn(state_machine_arn, name);
                    let existing = self.describe(&arn).await?;
                    let wanted: Option<serde_json::Value> = serde_json::from_str(input).ok();
                    if existing.input != wanted {
                        return Err(Error::InvalidInput(format!(
                            "an execution named `{name}` already exists with another input ({}); choose another name",
                            existing.input.map_or("none".to_owned(), |i| i.to_string())
                        )));
                    }
                    if !reuse_closed && !existing.status.is_running() {
                        return Err(Error::InvalidInput(format!(
                            "an execution named `{name}` already ran ({}); names are unique for 90 days: choose another name",
                            existing.status
                        )));
                    }
                    tracing::info!(execution = %arn, "the execution was already started by an earlier delivery of this request");
                    Ok(arn)
                }
                Err(e) => Err(service_error(e)),
            }
        }

        pub async fn describe(&self, arn: &str) -> Result<Summary, Error> {
            self.describe_classified(arn).await.map_err(|f| f.error)
        }

        /// [`Executions::describe`], telling a transient failure from a permanent one.
        pub async fn describe_classified(&self, arn: &str) -> Result<Summary, DescribeFailure> {
            let out = self
                .client
                .describe_execution()
                .execution_arn(arn)
                .send()
                .await
                .map_err(describe_failure)?;
            Ok(Summary {
                arn: out.execution_arn().to_owned(),
                name: out.name().unwrap_or_default().to_owned(),
                status: Status::parse(out.status().as_str()).unwrap_or(Status::Running),
                input: out.input().and_then(|i| serde_json::from_str(i).ok()),
                output: out.output().and_then(|o| serde_json::from_str(o).ok()),
                error: out.error().map(str::to_owned),
                cause: out.cause().map(str::to_owned),
                started_at: out.start_date().to_string(),
                stopped_at: out.stop_date().map(|d| d.to_string()),
            })
        }

        /// The newest execution of the state machine, if it has any.
        pub async fn latest(&self, state_machine_arn: &str) -> Result<Option<String>, Error> {
            let out = self
                .client
                .list_executions()
                .state_machine_arn(state_machine_arn)
                .max_results(1)
                .send()
                .await
                .map_err(service_error)?;
            Ok(out
                .executions()
                .first()
                .map(|e| e.execution_arn().to_owned()))
        }

        /// The history events after `after` (an event id), oldest first. Asks for the newest
        /// first and stops paging at the first event already seen, so following a long run
        /// reads one page per poll, not the whole history again.
        pub async fn history_since(
            &self,
            arn: &str,
            after: i64,
        ) -> Result<Vec<HistoryEvent>, Error> {
            let mut events = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let page = self
                    .client
                    .get_execution_history()
                    .execution_arn(arn)
                    .reverse_order(true)
                    .max_results(1000)
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(service_error)?;
                let ids: Vec<i64> = page.events().iter().map(|e| e.id()).collect();
                events.extend(
                    page.events()
                        .iter()
                        .filter(|e| e.id() > after)
                        .map(history_event),
                );
                // An endpoint that ignores reverseOrder (moto) pages oldest first: only a
                // newest-first page that reached a seen event ends the reading early.
                let newest_first = ids.first() > ids.last();
                let reached_seen = ids.iter().any(|&id| id <= after);
                match page.next_token() {
                    Some(t) if !(newest_first && reached_seen) => token = Some(t.to_owned()),
                    _ => break,
                }
            }
            events.sort_by_key(|e| e.id);
            Ok(events)
        }

        /// Polls the history every `interval` until the execution ends, handing each
        /// milestone to `seen` as it appears; returns how the execution ended.
        pub async fn follow(
            &self,
            arn: &str,
            interval: std::time::Duration,
            mut seen: impl FnMut(&super::Milestone),
        ) -> Result<Summary, Error> {
            let mut last = 0;
            let mut quiet_looks = 0;
            loop {
                let events = self.history_since(arn, last).await?;
                let mut ended = false;
                for event in &events {
                    last = last.max(event.id);
                    for milestone in super::Milestone::from_event(event) {
                        ended |= milestone.is_final();
                        seen(&milestone);
                    }
                }
                if ended {
                    return self.describe(arn).await;
                }
                let summary = self.describe(arn).await?;
                // The status can change before the history shows the final events (moto
                // does this; the API is eventually consistent): give the history a few
                // more looks before answering from the status alone.
                if !summary.status.is_running() {
                    quiet_looks += 1;
                    if quiet_looks > 5 {
                        return Ok(summary);
                    }
                }
                tokio::time::sleep(interval).await;
            }
        }
    }

    fn history_event(e: &aws_sdk_sfn::types::HistoryEvent) -> HistoryEvent {
        let mut event = HistoryEvent {
            id: e.id(),
            kind: e.r#type().as_str().to_owned(),
            timestamp: e.timestamp().to_string(),
            ..HistoryEvent::default()
        };
        let owned = |s: Option<&str>| s.map(str::to_owned);
        if let Some(d) = e.state_entered_event_details() {
            event.state = Some(d.name().to_owned());
            event.input = owned(d.input());
        }
        if let Some(d) = e.lambda_function_succeeded_event_details() {
            event.output = owned(d.output());
        }
        if let Some(d) = e.task_succeeded_event_details() {
            event.output = owned(d.output());
        }
        if let Some(d) = e.lambda_function_failed_event_details() {
            event.error = owned(d.error());
            event.cause = owned(d.cause());
        }
        if let Some(d) = e.lambda_function_timed_out_event_details() {
            event.error = owned(d.error());
            event.cause = owned(d.cause());
        }
        if let Some(d) = e.task_failed_event_details() {
            event.error = owned(d.error());
            event.cause = owned(d.cause());
        }
        if let Some(d) = e.execution_succeeded_event_details() {
            event.output = owned(d.output());
        }
        if let Some(d) = e.execution_failed_event_details() {
            event.error = owned(d.error());
            event.cause = owned(d.cause());
        }
        event
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn throttling_server_errors_are_transient_missing_executions_and_denials_are_not() {
        for code in [
            "ThrottlingException",
            "TooManyRequestsException",
            "ServiceUnavailable",
            "InternalFailure",
        ] {
            assert!(is_transient_error(Some(code), Some(400)), "{code}");
        }
        assert!(is_transient_error(None, Some(503)));
        assert!(is_transient_error(Some("Whatever"), Some(500)));
        assert!(is_transient_error(None, Some(429)));
        for code in [
            "ExecutionDoesNotExist",
            "AccessDeniedException",
            "InvalidArn",
        ] {
            assert!(!is_transient_error(Some(code), Some(400)), "{code}");
        }
        assert!(!is_transient_error(None, None));
    }

    use super::*;
    use serde_json::json;

    fn summary(status: Status, error: Option<&str>, cause: Option<&str>) -> Summary {
        Summary {
            arn: "arn:aws:states:eu-west-1:1:execution:sm:run".into(),
            name: "run".into(),
            status,
            input: None,
            output: None,
            error: error.map(Into::into),
            cause: cause.map(Into::into),
            started_at: "t0".into(),
            stopped_at: None,
        }
    }

    #[test]
    fn execution_arn_follows_the_state_machine_arn() {
        assert_eq!(
            execution_arn(
                "arn:aws:states:eu-west-1:123:stateMachine:Migrations",
                "run-1"
            ),
            "arn:aws:states:eu-west-1:123:execution:Migrations:run-1"
        );
        assert!(console_url("arn:aws:states:eu-west-1:123:execution:M:r")
            .starts_with("https://eu-west-1.console.aws.amazon.com/states/"));
    }

    #[test]
    fn a_failed_migration_names_itself_and_the_database_error() {
        let s = summary(
            Status::Failed,
            Some("SqlFailed"),
            Some(
                "002_add_email failed: column \"email\" already exists (SQLSTATE 42701) at line 3",
            ),
        );
        let err = s.outcome().unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::ExecutionFailed);
        let text = err.to_string();
        assert!(text.starts_with("SqlFailed: 002_add_email failed: column \"email\" already exists (SQLSTATE 42701) at line 3"), "{text}");
        assert!(text.contains("execution FAILED: arn:aws:states"), "{text}");
    }

    #[test]
    fn a_plan_failure_cause_is_unwrapped_from_the_lambda_error() {
        let inner = json!({"name": "ChecksumMismatch", "message": "applied migrations changed: 001_a.sql", "details": {}}).to_string();
        let cause = json!({"errorType": "ChecksumMismatch", "errorMessage": inner}).to_string();
        let s = summary(Status::Failed, Some("ChecksumMismatch"), Some(&cause));
        assert_eq!(
            s.failure_message(),
            "ChecksumMismatch: applied migrations changed: 001_a.sql"
        );
    }

    #[test]
    fn long_messages_are_cut_in_bytes_on_a_character_boundary() {
        let cause = format!("001_a failed: {}", "é".repeat(2000));
        let message = summary(Status::Failed, Some("SqlFailed"), Some(&cause)).failure_message();
        assert!(message.len() <= 1003, "{}", message.len());
        assert!(message.starts_with("SqlFailed: 001_a failed: é") && message.ends_with("..."));
    }

    #[test]
    fn timed_out_and_aborted_say_so() {
        assert_eq!(
            summary(Status::TimedOut, None, None).failure_message(),
            "the migration run timed out"
        );
        assert!(summary(Status::Aborted, None, None).outcome().is_err());
        assert_eq!(
            summary(Status::Running, None, None).outcome().unwrap(),
            None
        );
    }

    #[test]
    fn success_reports_the_applied_count() {
        let mut s = summary(Status::Succeeded, None, None);
        s.output = Some(json!({"status": "SUCCEEDED", "applied_count": 3}));
        assert_eq!(s.outcome().unwrap().unwrap()["applied_count"], 3);
        assert_eq!(s.applied_count(), 3);
    }

    /// A Lambda task's success event with that output.
    fn succeeded(output: Value) -> HistoryEvent {
        HistoryEvent {
            kind: "LambdaFunctionSucceeded".into(),
            output: Some(output.to_string()),
            ..HistoryEvent::default()
        }
    }

    #[test]
    fn milestones_follow_plan_migrations_and_the_end() {
        let plan = succeeded(
            json!({"run_id": "r", "action": "migrate", "dry_run": false, "database": "tutor", "to_apply": 2, "pending": []}),
        );
        assert_eq!(
            Milestone::from_event(&plan),
            vec![Milestone::Planned {
                database: "tutor".into(),
                to_apply: 2,
                pending: 2,
                dry_run: false,
                report_only: false,
                rollback: false,
            }]
        );
        let dry_run = succeeded(
            json!({"action": "migrate", "dry_run": true, "database": "tutor", "to_apply": 0, "per_iteration": 1,
                                "pending": [{"first": "003", "last": "003"}]}),
        );
        assert!(matches!(
            Milestone::from_event(&dry_run)[0],
            Milestone::Planned {
                to_apply: 0,
                pending: 1,
                report_only: true,
                ..
            }
        ));
        let rollback = succeeded(
            json!({"action": "rollback", "database": "tutor", "to_apply": 2, "pending": [{"first": "005", "last": "005"}, {"first": "004", "last": "004"}]}),
        );
        assert!(matches!(
            Milestone::from_event(&rollback)[0],
            Milestone::Planned {
                to_apply: 2,
                report_only: false,
                rollback: true,
                ..
            }
        ));
        let rolled_back = HistoryEvent {
            kind: "ExecutionSucceeded".into(),
            output: Some(json!({"status": "SUCCEEDED", "rolled_back_count": 2}).to_string()),
            ..HistoryEvent::default()
        };
        assert_eq!(
            Milestone::from_event(&rolled_back),
            vec![Milestone::Succeeded {
                applied_count: 0,
                rolled_back_count: 2
            }]
        );
        let applied = succeeded(json!({"results": [
            {"version": "001", "name": "001_a", "outcome": "applied", "execution_time_ms": 12},
            {"version": "002", "name": "002_b", "outcome": "already_applied"}
        ]}));
        let m = Milestone::from_event(&applied);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0],
            Milestone::Migration {
                version: "001".into(),
                name: "001_a".into(),
                outcome: "applied".into(),
                execution_time_ms: Some(12)
            }
        );
        let failed = HistoryEvent {
            kind: "ExecutionFailed".into(),
            error: Some("SqlFailed".into()),
            cause: Some("002_b failed: boom (SQLSTATE 42601) at line 1".into()),
            ..HistoryEvent::default()
        };
        let end = Milestone::from_event(&failed);
        assert!(end[0].is_final());
        assert!(!m[0].is_final());
        let ignored = HistoryEvent {
            kind: "MapIterationStarted".into(),
            ..HistoryEvent::default()
        };
        assert!(Milestone::from_event(&ignored).is_empty());
    }
}
