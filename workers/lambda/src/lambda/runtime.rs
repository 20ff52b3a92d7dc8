//! The runtime loop every worker is: stable error names for Step Functions, JSON logs in
//! `tracing` spans, and [`serve`] around a plain async handler.

use super::*;

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
        diagnostic(&e.error, e.format)
    }
}

/// An error as Lambda reports it: its stable name as `errorType`, the message in `format`.
pub fn diagnostic(error: &Error, format: MessageFormat) -> Diagnostic {
    Diagnostic {
        error_type: error.kind().as_str().to_owned(),
        error_message: match format {
            MessageFormat::Json => steps::error_message(error),
            MessageFormat::Text => error.to_string(),
        },
    }
}

/// JSON logs on stdout (CloudWatch Logs), one object per event, with the span's fields
/// (execution, run id, step, version). `RUST_LOG` tunes the level; default `info`.
pub fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .flatten_event(true)
                .without_time()
                .with_filter(filter),
        )
        .with(crate::notices::NoticeLayer::filtered())
        .try_init();
}

/// Runs a worker: builds its state once per instance with `init` (an error there, a
/// malformed setting or packaged migration set, cannot change during the instance's life: it
/// is logged at start and answered to every invocation under its own stable name, e.g.
/// `ConfigError` or `InvalidMigrationSet`), then serves `handler` for each event in a span
/// naming the step; errors reach Lambda with their stable name and a message in `format`.
/// What may succeed later (reading the database's secret) belongs in the handler, not in
/// `init`: see [`LazyMigrator`].
pub async fn serve<S, Req, Resp, Init, Handler, Fut>(
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
    Handler: Fn(Arc<S>, Req, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, Error>>,
{
    init_logging();
    let state: Result<Arc<S>, Arc<Diagnostic>> = match init.await {
        Ok(s) => Ok(Arc::new(s)),
        Err(e) => {
            error!(step, error = %e, error_name = e.kind().as_str(), "the worker cannot start");
            Err(Arc::new(init_failure(&e, format)))
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
                    Err(d) => return Err(Diagnostic::clone(&d)),
                };
                let result = handler(state, event.payload, event.context).await;
                if let Err(e) = &result {
                    error!(error_name = e.kind().as_str(), error = %e, "step failed");
                }
                result.map_err(|error| diagnostic(&error, format))
            }
            .instrument(span)
            .await
        }
    }))
    .await
}

/// What every invocation of a worker that could not start answers: the start's error under
/// its own stable name (a malformed packaged migration set is `InvalidMigrationSet`).
pub(super) fn init_failure(error: &Error, format: MessageFormat) -> Diagnostic {
    diagnostic(error, format)
}
