//! The NOTICEs and WARNINGs a migration's statements raise (`drop cascades to 29 other
//! objects`, `identifier ... will be truncated`, `... does not exist, skipping`): captured per
//! migration, shown under it and kept in the ledger.
//!
//! The driver reports them only as `tracing` events (target [`TARGET`]); [`NoticeLayer`]
//! catches those, and [`capture`] collects the ones raised while a future runs, whatever
//! thread polls it.

use std::cell::RefCell;
use std::future::Future;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// The target of the driver's notice events.
pub const TARGET: &str = "sqlx::postgres::notice";

tokio::task_local! {
    static NOTICES: RefCell<Vec<String>>;
}

/// Runs `fut`, returning its output and the notices raised while it ran, in order, each as
/// `NOTICE: message` or `WARNING: message`.
pub async fn capture<F: Future>(fut: F) -> (F::Output, Vec<String>) {
    NOTICES
        .scope(RefCell::new(Vec::new()), async {
            let output = fut.await;
            (output, NOTICES.with(|n| n.take()))
        })
        .await
}

/// The layer that hands notice events to [`capture`]. Add it to the subscriber with
/// [`NoticeLayer::filtered`], so that it sees notices whatever the log level.
pub struct NoticeLayer;

impl NoticeLayer {
    pub fn filtered<S>() -> impl Layer<S>
    where
        S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        NoticeLayer.with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.target() == TARGET
        }))
    }
}

impl<S: Subscriber> Layer<S> for NoticeLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != TARGET {
            return;
        }
        // The driver logs NOTICE at INFO, WARNING at WARN, INFO (`RAISE INFO`) at TRACE.
        let severity = match *event.metadata().level() {
            Level::ERROR | Level::WARN => "WARNING",
            Level::INFO => "NOTICE",
            Level::DEBUG => "DEBUG",
            Level::TRACE => "INFO",
        };
        let mut message = MessageField(String::new());
        event.record(&mut message);
        let _ = NOTICES.try_with(|n| n.borrow_mut().push(format!("{severity}: {}", message.0)));
    }
}

struct MessageField(String);

impl Visit for MessageField {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_owned();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" && self.0.is_empty() {
            self.0 = format!("{value:?}");
        }
    }
}
