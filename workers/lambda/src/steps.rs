//! The state machine's steps as plain functions with typed (serde) inputs and outputs:
//! `plan`, `apply-one` and `record`. The Lambda binaries deserialize, call and serialize;
//! `statemachine/README.md` documents each shape with an example.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::apply::Outcome;
use crate::error::{Error, ErrorReport, MigrationFailure};
use crate::metrics::{Metric, MetricLine};
use crate::migration::Version;
use crate::plan::{Entry, State};
use crate::runner::Migrator;

/// The actions an execution accepts.
pub const ACTIONS: [&str; 3] = ["status", "migrate", "verify"];
/// The fields an execution input accepts.
pub const INPUT_FIELDS: [&str; 4] = ["action", "dry_run", "target", "source"];

/// An execution's input, as a person types it in the console: `{}` means migrate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecutionInput {
    pub action: Action,
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Version>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Status,
    #[default]
    Migrate,
    /// Run the pending migrations in a transaction that is rolled back, on the target itself
    /// (see [`verify`]).
    Verify,
}

impl ExecutionInput {
    /// Validates a raw execution input; the error lists what is accepted.
    pub fn parse(raw: &Value) -> Result<ExecutionInput, Error> {
        const ACCEPTED: &str = "accepted input: {\"action\": \"status\" | \"migrate\" (default) | \"verify\", \"dry_run\": true | false, \"target\": \"VERSION\", \"source\": \"TEXT\"}, e.g. {\"action\": \"migrate\", \"dry_run\": true}";
        let invalid = |why: String| Error::InvalidInput(format!("{why}; {ACCEPTED}"));
        let object = match raw {
            Value::Null => {
                return Ok(ExecutionInput {
                    action: Action::Migrate,
                    dry_run: false,
                    target: None,
                    source: None,
                })
            }
            Value::Object(o) => o,
            other => {
                return Err(invalid(format!(
                    "the input must be a JSON object, not {other}"
                )))
            }
        };
        if let Some(unknown) = object.keys().find(|k| !INPUT_FIELDS.contains(&k.as_str())) {
            return Err(invalid(format!("unknown field `{unknown}`")));
        }
        let action = match object.get("action") {
            None | Some(Value::Null) => Action::Migrate,
            Some(Value::String(a)) if a == "status" => Action::Status,
            Some(Value::String(a)) if a == "migrate" => Action::Migrate,
            Some(Value::String(a)) if a == "verify" => Action::Verify,
            Some(other) => {
                return Err(invalid(format!(
                    "unknown action {other}: the action must be one of {}",
                    ACTIONS.join(", ")
                )))
            }
        };
        let dry_run = match object.get("dry_run") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(invalid(format!(
                    "`dry_run` must be true or false, not {other}"
                )))
            }
        };
        let target = match object.get("target") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) if Version::parse(t).is_some() => Version::parse(t),
            Some(other) => {
                return Err(invalid(format!(
                    "`target` must be a version such as \"004\", not {other}"
                )))
            }
        };
        let source = match object.get("source") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => return Err(invalid(format!("`source` must be a string, not {other}"))),
        };
        Ok(ExecutionInput {
            action,
            dry_run,
            target,
            source,
        })
    }
}

/// The plan step's input: the execution's input and who runs it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PlanRequest {
    #[serde(default)]
    pub input: Value,
    /// The execution ARN (`$$.Execution.Id`); the run id is its name.
    #[serde(default)]
    pub execution: Option<String>,
}

/// One Map item: the migrations one apply-one invocation applies, `first..=last` in the
/// set's order. Usually one migration (then `name` says which); past
/// `STEPMIGRATE_MAX_ITERATIONS` pending migrations the plan groups them, so that a backlog of
/// any size completes in one execution under the history limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationRange {
    pub first: Version,
    pub last: Version,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The plan step's output: what the state machine routes on and hands the Map, and what
/// `stepmigrate remote` and the trigger read back from the history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanOutput {
    #[serde(default)]
    pub run_id: String,
    #[serde(default)]
    pub action: Action,
    #[serde(default)]
    pub dry_run: bool,
    #[serde(default)]
    pub database: String,
    /// The digest of the packaged migration set the plan was made with; apply-one refuses
    /// to work from another.
    #[serde(default)]
    pub set_digest: String,
    /// What this execution applies, in order: the Map's items.
    #[serde(default)]
    pub pending: Vec<MigrationRange>,
    /// How many migrations that is.
    pub to_apply: usize,
    /// How many migrations each item holds (1 unless the backlog is large).
    #[serde(default = "one")]
    pub per_iteration: usize,
    #[serde(default)]
    pub applied: usize,
    #[serde(default)]
    pub unknown_applied: Vec<String>,
    /// Every migration and its state (for `status` and dry runs): all of them up to
    /// [`LISTED_MIGRATIONS`], else those not applied and the newest applied ones, with
    /// `truncated` set, so the output stays far below the 256 KB payload limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<Entry>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl PlanOutput {
    /// How many migrations the plan found pending: `to_apply` when it applies them; for a
    /// report, its Map items (one per migration unless the backlog is grouped) or else its
    /// listed entries not applied.
    pub fn pending_count(&self) -> usize {
        if self.to_apply > 0 {
            return self.to_apply;
        }
        if self.per_iteration <= 1 {
            return self.pending.len();
        }
        self.migrations
            .iter()
            .filter(|e| matches!(e.state, State::Pending | State::Failed))
            .count()
    }

    /// A status or dry-run execution reports and stops.
    pub fn report_only(&self) -> bool {
        self.dry_run || self.action != Action::Migrate
    }
}

fn one() -> usize {
    1
}

/// The output of a run that succeeded (the definition's `Done` state): the part its readers
/// use.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunOutput {
    #[serde(default)]
    pub applied_count: u64,
}

/// How many Map iterations one execution runs at most. An inline Map iteration with one Task
/// costs 7 history events; 2,500 of them (17,500) leave room for retries and the rest of the
/// run under the 25,000-event limit.
pub const DEFAULT_MAX_ITERATIONS: usize = 2500;

/// How many migrations a status lists in full before it truncates.
pub const LISTED_MIGRATIONS: usize = 500;

/// The plan step: validates the input, reads the ledger and plans. A `migrate` plan refuses
/// drift and dirty migrations; `status` and dry runs report them.
#[tracing::instrument(name = "plan", skip_all, fields(execution = request.execution.as_deref().unwrap_or_default()))]
pub async fn plan(
    migrator: &Migrator,
    request: PlanRequest,
    max_iterations: usize,
) -> Result<PlanOutput, Error> {
    let input = ExecutionInput::parse(&request.input)?;
    let run_id = request
        .execution
        .as_deref()
        .and_then(|arn| arn.rsplit(':').next())
        .map(str::to_owned)
        .unwrap_or_else(|| crate::runner::new_run_id("run"));
    let (_, plan) = migrator.plan(input.target.as_ref()).await?;
    let report_only = input.action != Action::Migrate || input.dry_run;
    if !report_only {
        plan.ensure_runnable()?;
    }
    let pending: Vec<&Entry> = plan.pending().collect();
    let per_iteration = pending.len().div_ceil(max_iterations.max(1)).max(1);
    let items: Vec<MigrationRange> = pending
        .chunks(per_iteration)
        .map(|group| MigrationRange {
            first: group[0].version.clone(),
            last: group[group.len() - 1].version.clone(),
            // Names make the console's Map view readable; a long backlog leaves them out to
            // keep the payload small.
            name: (group.len() == 1 && pending.len() <= LISTED_MIGRATIONS)
                .then(|| group[0].name.clone()),
        })
        .collect();
    MetricLine::new(migrator.db.name())
        .with(Metric::PendingMigrations, pending.len() as f64)
        .property("run_id", &run_id)
        .emit();
    let (migrations, truncated) = if report_only {
        listed(&plan.entries)
    } else {
        (Vec::new(), false)
    };
    Ok(PlanOutput {
        run_id,
        action: input.action,
        dry_run: input.dry_run,
        database: migrator.db.name().to_owned(),
        set_digest: migrator.set.digest(),
        to_apply: if report_only { 0 } else { pending.len() },
        per_iteration,
        pending: items,
        applied: plan.count(State::Applied),
        unknown_applied: plan
            .entries
            .iter()
            .filter(|e| e.state == State::UnknownApplied)
            .map(|e| e.name.clone())
            .collect(),
        migrations,
        truncated,
        warnings: plan.warnings,
    })
}

fn listed(entries: &[Entry]) -> (Vec<Entry>, bool) {
    if entries.len() <= LISTED_MIGRATIONS {
        return (entries.to_vec(), false);
    }
    let newest_applied: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.state == State::Applied)
        .map(|(i, _)| i)
        .rev()
        .take(20)
        .collect();
    let kept = entries
        .iter()
        .enumerate()
        .filter(|(i, e)| e.state != State::Applied || newest_applied.contains(i))
        .map(|(_, e)| e.clone())
        .take(LISTED_MIGRATIONS)
        .collect();
    (kept, true)
}

/// The apply-one step's input: one item of the plan and the run.
#[derive(Debug, Clone, Deserialize)]
pub struct ApplyRequest {
    pub run_id: String,
    /// The execution ARN, for the logs.
    #[serde(default)]
    pub execution: String,
    pub set_digest: String,
    pub range: MigrationRange,
}

/// The apply-one step's output (the Map keeps none of it: the definition discards it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyOutput {
    pub results: Vec<crate::runner::MigrationResult>,
}

/// The apply-one step. A failed migration is an error (`SqlFailed`, or `LockTimeout` to be
/// retried) whose message carries the failure, for the record step.
#[tracing::instrument(name = "apply_one", skip_all, fields(execution = %request.execution, run_id = %request.run_id, first = %request.range.first, last = %request.range.last))]
pub async fn apply_one(migrator: &Migrator, request: ApplyRequest) -> Result<ApplyOutput, Error> {
    let digest = migrator.set.digest();
    if digest != request.set_digest {
        return Err(Error::InvalidInput(format!(
            "the migrations packaged with this worker (set digest {digest}) are not the ones the plan saw ({}): the workers were updated during the run; start a new execution",
            request.set_digest
        )));
    }
    let results = migrator
        .apply_range(&request.range.first, &request.range.last, &request.run_id)
        .await?;
    for r in &results {
        if let Outcome::Applied {
            execution_time_ms, ..
        } = r.outcome
        {
            MetricLine::new(migrator.db.name())
                .with(Metric::MigrationDuration, execution_time_ms as f64)
                .with(Metric::MigrationsApplied, 1.0)
                .property("version", r.version.as_str())
                .property("run_id", &request.run_id)
                .emit();
        }
    }
    Ok(ApplyOutput { results })
}

/// What the apply-one worker is asked: apply a range (the Map's items), or verify (the
/// `verify` action's one Task, which needs the same database access, lock and timeouts).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ApplyOneRequest {
    Verify(VerifyRequest),
    Apply(ApplyRequest),
}

/// The verify Task's input: the execution input and who runs it.
#[derive(Debug, Clone, Deserialize)]
pub struct VerifyRequest {
    /// The execution's input (`{"action": "verify", "target": ...}`).
    pub verify: Value,
    #[serde(default)]
    pub execution: Option<String>,
}

/// What the apply-one worker answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ApplyOneOutput {
    Verified(Box<crate::verify::VerifySummary>),
    Applied(ApplyOutput),
}

/// How many migrations a verify output lists: each is a few hundred bytes, far below the
/// 256 KB a state may output.
pub const VERIFIED_LISTED: usize = 200;

/// The `verify` action: under the migration lock, the pending migrations run on the target in
/// ONE transaction that is rolled back (lock_timeout at most 2 s), then one `verified` event
/// each. A migration that fails verification is the step's error (`SqlFailed`, or
/// `LockTimeout` when it waited too long for a lock), naming it, after its event is recorded.
#[tracing::instrument(name = "verify", skip_all, fields(execution = request.execution.as_deref().unwrap_or_default()))]
pub async fn verify(
    migrator: &Migrator,
    request: VerifyRequest,
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
    let report = migrator
        .verify_in_transaction(input.target.as_ref(), lock_timeout, &run_id)
        .await?;
    if let Some(e) = report.error() {
        return Err(e);
    }
    Ok(report.summary(VERIFIED_LISTED))
}

/// The apply-one worker's one entry point.
pub async fn apply_one_or_verify(
    migrator: &Migrator,
    request: ApplyOneRequest,
) -> Result<ApplyOneOutput, Error> {
    match request {
        ApplyOneRequest::Apply(r) => apply_one(migrator, r).await.map(ApplyOneOutput::Applied),
        ApplyOneRequest::Verify(r) => verify(migrator, r)
            .await
            .map(|s| ApplyOneOutput::Verified(Box::new(s))),
    }
}

/// What a caught error looks like in Step Functions: `{"Error": ..., "Cause": ...}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaughtError {
    #[serde(rename = "Error", default)]
    pub error: String,
    #[serde(rename = "Cause", default)]
    pub cause: String,
}

/// The record step's input: the item whose migration failed and the error Step Functions
/// caught.
#[derive(Debug, Clone, Deserialize)]
pub struct RecordRequest {
    pub run_id: String,
    #[serde(default)]
    pub execution: String,
    pub range: MigrationRange,
    pub error: CaughtError,
}

/// A failure as the alert and the execution's error present it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureReport {
    pub run_id: String,
    /// The database; absent (empty) in a plan failure, which `notify` completes from its
    /// configuration (`DB_NAME`).
    #[serde(default)]
    pub database: String,
    pub version: String,
    pub name: String,
    /// The error name (`SqlFailed`, `LockTimeout`, ...).
    pub error: String,
    /// One line: the migration and the database's error.
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlstate: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub statement: Option<String>,
    /// Whether the ledger now holds the failure (false when the error came before the
    /// migration ran, e.g. a connection failure).
    pub recorded: bool,
    /// Dirty: a migration outside a transaction failed part way.
    pub dirty: bool,
}

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
    let mut report = FailureReport {
        run_id: request.run_id.clone(),
        database: migrator.db.name().to_owned(),
        version: version.clone(),
        name: name.clone(),
        error: request.error.error.clone(),
        message: format!("{name} failed: {}", cause_message(&request.error.cause)),
        sqlstate: None,
        line: None,
        statement: None,
        recorded: false,
        dirty: false,
    };
    if let Some(failure) = failure {
        migrator.record_failure(&failure, &request.run_id).await?;
        report.message = format!("{} failed: {}", failure.name, failure.error);
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
pub(crate) fn report_from_cause(cause: &str) -> Option<ErrorReport> {
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
pub(crate) fn failure_from_cause(cause: &str) -> Option<MigrationFailure> {
    report_from_cause(cause)?.details.migration.map(|f| *f)
}

pub(crate) fn cause_message(cause: &str) -> String {
    report_from_cause(cause).map_or_else(|| cause.to_owned(), |r| r.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use serde_json::json;

    #[test]
    fn empty_input_means_migrate() {
        let input = ExecutionInput::parse(&json!({})).unwrap();
        assert_eq!(input.action, Action::Migrate);
        assert!(!input.dry_run);
        assert_eq!(
            ExecutionInput::parse(&Value::Null).unwrap().action,
            Action::Migrate
        );
    }

    #[test]
    fn the_seed_inputs_are_accepted() {
        assert_eq!(
            ExecutionInput::parse(&json!({"action": "status"}))
                .unwrap()
                .action,
            Action::Status
        );
        let dry = ExecutionInput::parse(&json!({"action": "migrate", "dry_run": true})).unwrap();
        assert!(dry.dry_run);
        let cdk =
            ExecutionInput::parse(&json!({"action": "migrate", "source": "cdk", "target": "004"}))
                .unwrap();
        assert_eq!(cdk.target.as_ref().map(Version::as_str), Some("004"));
    }

    #[test]
    fn bad_input_says_what_is_accepted() {
        for bad in [
            json!({"action": "rollback"}),
            json!({"dry_run": "yes"}),
            json!({"actoin": "status"}),
            json!([1]),
            json!({"target": "four"}),
        ] {
            let err = ExecutionInput::parse(&bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
            assert!(err.to_string().contains("accepted input"), "{err}");
        }
        let err = ExecutionInput::parse(&json!({"action": "rollback"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("status, migrate"), "{err}");
    }

    #[test]
    fn a_failure_survives_the_round_trip_through_step_functions() {
        let failure = MigrationFailure {
            version: Version::parse("004").unwrap(),
            name: "004_x".into(),
            file: "migrations/004_x.sql".into(),
            dirty: false,
            notices: Vec::new(),
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

#[cfg(test)]
mod definition_tests {
    use crate::error::ErrorKind;
    use serde_json::Value;

    /// Every error name the state machine matches is one the workers raise (or one of Step
    /// Functions' own): a renamed error cannot silently stop matching.
    #[test]
    fn the_definition_matches_only_known_error_names() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../statemachine/stepmigrate.asl.json"
        ))
        .unwrap();
        let definition: Value = serde_json::from_str(&text).unwrap();
        let mut names = Vec::new();
        collect(&definition, &mut names);
        assert!(names.iter().any(|n| n == "LockTimeout"), "{names:?}");
        for name in names {
            let known = ErrorKind::ALL.iter().any(|k| k.as_str() == name)
                || name.starts_with("Lambda.")
                || name.starts_with("States.");
            assert!(known, "the definition matches unknown error {name}");
        }
    }

    fn collect(v: &Value, names: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::Array(errors)) = o.get("ErrorEquals") {
                    names.extend(errors.iter().filter_map(|e| e.as_str().map(str::to_owned)));
                }
                if let Some(Value::String(e)) = o.get("Error") {
                    names.push(e.clone());
                }
                o.values().for_each(|x| collect(x, names));
            }
            Value::Array(a) => a.iter().for_each(|x| collect(x, names)),
            _ => {}
        }
    }
}
