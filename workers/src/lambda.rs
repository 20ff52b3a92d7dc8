//! What the Lambda workers share: configuration from the environment (checked once per
//! instance), stable error names for Step Functions, JSON logs in `tracing` spans, and the
//! runtime loop. Each binary is one call to [`serve`].

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use tracing::{error, info_span, Instrument};

use crate::config::Settings;
use crate::db::Database;
use crate::error::Error;
use crate::migration::MigrationSet;
use crate::runner::Migrator;
use crate::steps;

pub const ENV_DATABASE_URL: &str = "DATABASE_URL";
pub const ENV_DB_SECRET_ARN: &str = "DB_SECRET_ARN";
pub const ENV_DB_CA_BUNDLE: &str = "DB_CA_BUNDLE";
pub const ENV_MIGRATIONS_DIR: &str = "STEPMIGRATE_MIGRATIONS_DIR";
pub const ENV_MAX_ITERATIONS: &str = "STEPMIGRATE_MAX_ITERATIONS";
pub const ENV_TOPIC_ARN: &str = "SNS_TOPIC_ARN";

/// A library error as Lambda reports it: `errorType` is the stable name Step Functions
/// matches in Retry and Catch; `errorMessage` is JSON with the message and details, which the
/// next steps read ([`MessageFormat::Json`]), or the message alone where a person reads it
/// ([`MessageFormat::Text`]: CloudFormation shows the trigger's errors as they are).
#[derive(Debug)]
pub struct StepError {
    pub error: Error,
    pub format: MessageFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageFormat {
    Json,
    Text,
}

impl From<StepError> for Diagnostic {
    fn from(e: StepError) -> Diagnostic {
        Diagnostic {
            error_type: e.error.kind().as_str().to_owned(),
            error_message: match e.format {
                MessageFormat::Json => steps::error_message(&e.error),
                MessageFormat::Text => e.error.to_string(),
            },
        }
    }
}

/// JSON logs on stdout (CloudWatch Logs), one object per event, with the span's fields
/// (execution, run id, step, version). `RUST_LOG` tunes the level; default `info`.
pub fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .without_time()
        .try_init();
}

/// Runs a worker: builds its state once per instance with `init` (a configuration error is
/// logged at start and answered to every invocation as `ConfigError`, so the execution says
/// what is wrong), then serves `handler` for each event in a span naming the step.
pub async fn serve<S, Req, Resp, Init, Handler, Fut>(
    step: &'static str,
    init: Init,
    handler: Handler,
) -> Result<(), lambda_runtime::Error>
where
    S: Send + Sync + 'static,
    Init: Future<Output = Result<S, Error>>,
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    Handler: Fn(Arc<S>, Req, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, Error>>,
{
    serve_with(step, MessageFormat::Json, init, handler).await
}

/// [`serve`], with error messages in the given format.
pub async fn serve_with<S, Req, Resp, Init, Handler, Fut>(
    step: &'static str,
    format: MessageFormat,
    init: Init,
    handler: Handler,
) -> Result<(), lambda_runtime::Error>
where
    S: Send + Sync + 'static,
    Init: Future<Output = Result<S, Error>>,
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    Handler: Fn(Arc<S>, Req, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, Error>>,
{
    init_logging();
    let state = match init.await {
        Ok(s) => Ok(Arc::new(s)),
        Err(e) => {
            error!(step, error = %e, error_name = e.kind().as_str(), "configuration error");
            Err(Arc::new(e))
        }
    };
    let handler = Arc::new(handler);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Req>| {
        let state = state.clone();
        let handler = handler.clone();
        async move {
            let trace = event.context.xray_trace_id.clone().unwrap_or_default();
            let span = info_span!("step", step, request_id = %event.context.request_id, xray_trace_id = %trace);
            async move {
                let state = match state {
                    Ok(s) => s,
                    Err(e) => return Err(StepError { error: Error::Config { variable: config_variable(&e), reason: config_reason(&e) }, format }),
                };
                let result = handler(state, event.payload, event.context.request_id.clone()).await;
                if let Err(e) = &result {
                    error!(error_name = e.kind().as_str(), error = %e, "step failed");
                }
                result.map_err(|error| StepError { error, format })
            }
            .instrument(span)
            .await
        }
    }))
    .await
}

fn config_variable(e: &Error) -> String {
    match e {
        Error::Config { variable, .. } => variable.clone(),
        _ => "configuration".to_owned(),
    }
}

fn config_reason(e: &Error) -> String {
    match e {
        Error::Config { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Where the package keeps its files: `$LAMBDA_TASK_ROOT`, else the binary's directory.
fn package_dir() -> PathBuf {
    env("LAMBDA_TASK_ROOT")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(PathBuf::from))
        })
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The migrator of a database worker: settings, the migrations packaged next to the binary
/// (or `STEPMIGRATE_MIGRATIONS_DIR`), and the database from `DATABASE_URL` or, in AWS, the
/// Secrets Manager secret `DB_SECRET_ARN` (RDS format, TLS verify-full with the RDS CA
/// bundle packaged as `rds-ca-bundle.pem` or at `DB_CA_BUNDLE`).
pub async fn migrator_from_env() -> Result<Migrator, Error> {
    let settings = Settings::from_env(env)?;
    let dir = env(ENV_MIGRATIONS_DIR)
        .map(PathBuf::from)
        .unwrap_or_else(|| package_dir().join("migrations"));
    let set = MigrationSet::load(&dir)?;
    let db = match (env(ENV_DATABASE_URL), env(ENV_DB_SECRET_ARN)) {
        (Some(url), _) => Database::from_url(&url, ENV_DATABASE_URL, settings.connect_timeout)?,
        (None, Some(arn)) => Database::from_options(options_from_secret(&arn).await?, settings.connect_timeout),
        (None, None) => {
            return Err(Error::Config {
                variable: ENV_DB_SECRET_ARN.into(),
                reason: format!("not set (nor {ENV_DATABASE_URL}): the workers need the database's Secrets Manager secret"),
            })
        }
    };
    Ok(Migrator { db, set, settings })
}

/// How many Map iterations one execution runs at most (`STEPMIGRATE_MAX_ITERATIONS`).
pub fn max_iterations() -> Result<usize, Error> {
    match env(ENV_MAX_ITERATIONS) {
        None => Ok(steps::DEFAULT_MAX_ITERATIONS),
        Some(v) => v
            .trim()
            .parse()
            .ok()
            .filter(|n: &usize| *n > 0)
            .ok_or_else(|| Error::Config {
                variable: ENV_MAX_ITERATIONS.into(),
                reason: format!("`{v}` is not a positive number of iterations"),
            }),
    }
}

#[derive(serde::Deserialize)]
struct RdsSecret {
    username: String,
    password: String,
    host: String,
    #[serde(default)]
    port: Option<serde_json::Value>,
    #[serde(default)]
    dbname: Option<String>,
}

async fn options_from_secret(arn: &str) -> Result<PgConnectOptions, Error> {
    let ca = env(ENV_DB_CA_BUNDLE)
        .map(PathBuf::from)
        .unwrap_or_else(|| package_dir().join("rds-ca-bundle.pem"));
    if !ca.is_file() {
        return Err(Error::Config {
            variable: ENV_DB_CA_BUNDLE.into(),
            reason: format!(
                "the RDS CA bundle {} is missing; TLS to the database is verified against it",
                ca.display()
            ),
        });
    }
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let secret = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| Error::Config {
            variable: ENV_DB_SECRET_ARN.into(),
            reason: format!(
                "cannot read the secret: {}",
                aws_sdk_secretsmanager::error::DisplayErrorContext(&e)
            ),
        })?;
    let text = secret.secret_string().unwrap_or_default();
    let parsed: RdsSecret = serde_json::from_str(text).map_err(|e| Error::Config {
        variable: ENV_DB_SECRET_ARN.into(),
        // Never echo the secret: only the shape is wrong.
        reason: format!(
            "the secret is not in the RDS format (username, password, host, port, dbname): {}",
            e.classify_name()
        ),
    })?;
    let port = match parsed.port {
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(5432) as u16,
        Some(serde_json::Value::String(s)) => s.parse().unwrap_or(5432),
        _ => 5432,
    };
    Ok(PgConnectOptions::new()
        .host(&parsed.host)
        .port(port)
        .username(&parsed.username)
        .password(&parsed.password)
        .database(parsed.dbname.as_deref().unwrap_or("postgres"))
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert(ca))
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "not JSON",
            serde_json::error::Category::Data => "a field is missing or has the wrong type",
        }
    }
}

/// The notify worker's clients: SNS for the alert, CloudWatch for the failure metric.
pub struct Notifier {
    pub topic_arn: String,
    pub sns: aws_sdk_sns::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
}

impl Notifier {
    pub async fn from_env() -> Result<Notifier, Error> {
        let topic_arn = env(ENV_TOPIC_ARN).ok_or_else(|| Error::Config {
            variable: ENV_TOPIC_ARN.into(),
            reason: "not set: the ARN of the topic that alerts go to".into(),
        })?;
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Ok(Notifier {
            topic_arn,
            sns: aws_sdk_sns::Client::new(&config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(&config),
        })
    }

    /// Publishes the alert and the `MigrationFailures` metric. The X-Ray trace header of the
    /// invocation (`_X_AMZN_TRACE_ID`) travels with both calls.
    pub async fn notify(
        &self,
        request: crate::alert::NotifyRequest,
    ) -> Result<NotifyOutput, Error> {
        use aws_sdk_sns::types::MessageAttributeValue;
        let alert = crate::alert::Alert::new(&request);
        let mut publish = self
            .sns
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(&alert.subject)
            .message_structure("json")
            .message(alert.sns_message());
        for (key, value) in alert.attributes.iter().filter(|(_, v)| !v.is_empty()) {
            let attribute = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| Error::InvalidInput(format!("message attribute {key}: {e}")))?;
            publish = publish.message_attributes(key, attribute);
        }
        let sent = publish.send().await.map_err(|e| Error::Service {
            service: "SNS".into(),
            message: aws_sdk_sns::error::DisplayErrorContext(&e).to_string(),
        })?;
        let datum = aws_sdk_cloudwatch::types::MetricDatum::builder()
            .metric_name(crate::metrics::Metric::MigrationFailures.name())
            .dimensions(
                aws_sdk_cloudwatch::types::Dimension::builder()
                    .name("Database")
                    .value(&request.failure.database)
                    .build(),
            )
            .unit(aws_sdk_cloudwatch::types::StandardUnit::Count)
            .value(1.0)
            .build();
        self.cloudwatch
            .put_metric_data()
            .namespace(crate::metrics::namespace())
            .metric_data(datum)
            .send()
            .await
            .map_err(|e| Error::Service {
                service: "CloudWatch".into(),
                message: aws_sdk_cloudwatch::error::DisplayErrorContext(&e).to_string(),
            })?;
        Ok(NotifyOutput {
            message_id: sent.message_id().unwrap_or_default().to_owned(),
            subject: alert.subject,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct NotifyOutput {
    pub message_id: String,
    pub subject: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_reach_step_functions_by_their_stable_name() {
        let json = |error| StepError {
            error,
            format: MessageFormat::Json,
        };
        let d: Diagnostic = json(Error::InvalidInput("bad".into())).into();
        assert_eq!(d.error_type, "InvalidInput");
        let message: serde_json::Value = serde_json::from_str(&d.error_message).unwrap();
        assert_eq!(message["message"], "bad");
        let d: Diagnostic = json(Error::LockNotAcquired {
            waited: std::time::Duration::from_secs(3),
        })
        .into();
        assert_eq!(d.error_type, "LockTimeout");
    }

    #[test]
    fn text_messages_are_for_people() {
        let d: Diagnostic = StepError {
            error: Error::InvalidInput("bad input".into()),
            format: MessageFormat::Text,
        }
        .into();
        assert_eq!(d.error_type, "InvalidInput");
        assert_eq!(d.error_message, "bad input");
    }
}
