//! What the Lambda workers share, one module a job: the runtime loop ([`runtime`]), their
//! configuration from the environment ([`env`]), the database workers' lazily built migrator
//! with timeouts fitted to the deadline ([`worker`]), the database's secret ([`secret`]) and
//! the notifier ([`notify`]), and apply-one's ECS task mode ([`run_task`]). Each binary is
//! one call to [`serve`].
//!
//! The database workers read their secret lazily, at the first invocation that needs it
//! ([`LazyMigrator`]), and fit their lock wait and statement timeout into the invocation's
//! deadline ([`fit_to_deadline`]), so Lambda never stops a worker before PostgreSQL's own
//! timeouts answer.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lambda_runtime::{service_fn, Context, Diagnostic, LambdaEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use tracing::{error, info, info_span, warn, Instrument};

use crate::config::Settings;
use crate::db::Database;
use crate::error::Error;
use crate::migration::MigrationSet;
use crate::runner::Migrator;
use crate::steps;

mod env;
mod notify;
mod runtime;
mod secret;
mod task;
mod worker;

pub use env::*;
pub use notify::*;
pub use runtime::*;
use secret::*;
pub use task::*;
pub use worker::*;

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

    #[test]
    fn errors_at_start_keep_their_names() {
        let set = Error::InvalidMigrationSet {
            dir: "migrations".into(),
            problems: Vec::new(),
        };
        let d = init_failure(&set, MessageFormat::Json);
        assert_eq!(d.error_type, "InvalidMigrationSet");
        let d = init_failure(
            &Error::Config {
                variable: ENV_TOPIC_ARN.into(),
                reason: "not set".into(),
            },
            MessageFormat::Json,
        );
        assert_eq!(d.error_type, "ConfigError");
        assert!(
            d.error_message.contains(ENV_TOPIC_ARN),
            "{}",
            d.error_message
        );
    }

    #[test]
    fn batch_settings_parse_like_the_other_durations() {
        let from = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            batch_settings_from(move |name| {
                pairs
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            })
        };
        assert_eq!(from(&[]).unwrap(), steps::BatchSettings::default());
        let s = from(&[(ENV_BATCH_BUDGET, "5s"), (ENV_BATCH_WAIT, "0")]).unwrap();
        assert_eq!(s.budget, Some(Duration::from_secs(5)));
        assert_eq!(s.wait, Duration::ZERO);
        for bad in [
            (ENV_BATCH_BUDGET, "5 parsecs"),
            (ENV_BATCH_BUDGET, "0"),
            (ENV_BATCH_WAIT, "soon"),
            // BatchWait is a Wait state, which takes no TimeoutSeconds: the worker bounds it.
            (ENV_BATCH_WAIT, "16min"),
        ] {
            let err = from(&[bad]).unwrap_err();
            assert_eq!(err.kind(), crate::error::ErrorKind::ConfigError);
            assert!(err.to_string().contains(bad.0), "{err}");
        }
    }

    #[test]
    fn a_failed_secret_read_is_a_retryable_service_error() {
        let e = secret_read_error("arn:aws:secretsmanager:eu-west-1:1:secret:db", "timed out");
        assert_eq!(e.kind(), crate::error::ErrorKind::ServiceError);
        assert!(e.to_string().contains(ENV_DB_SECRET_ARN), "{e}");
    }

    #[tokio::test]
    async fn a_failed_initialisation_is_never_cached() {
        let cell: Mutex<Option<Arc<u32>>> = Mutex::new(None);
        let failed = get_or_try_init(&cell, async {
            Err::<u32, _>(secret_read_error("arn", "unreachable"))
        })
        .await;
        assert_eq!(
            failed.unwrap_err().kind(),
            crate::error::ErrorKind::ServiceError
        );
        assert!(cell.lock().unwrap().is_none(), "the failure is not kept");
        assert_eq!(*get_or_try_init(&cell, async { Ok(7) }).await.unwrap(), 7);
        let kept = get_or_try_init(&cell, async { panic!("built twice") }).await;
        assert_eq!(*kept.unwrap(), 7);
    }

    fn nests(s: &Settings, function_timeout: Duration) -> bool {
        s.connect_timeout + s.lock_wait + s.statement_timeout + deadline_margin(function_timeout)
            <= function_timeout
    }

    #[test]
    fn the_default_timeouts_are_fitted_into_each_function_timeout() {
        let defaults = Settings::default();
        // The construct's functions: apply-one 15 min, plan and record 2 min. The defaults
        // (10 min lock wait, 15 min statement timeout) fit neither.
        for seconds in [900, 120] {
            let timeout = Duration::from_secs(seconds);
            assert!(!nests(&defaults, timeout));
            let fitted = fit_to_deadline(&defaults, timeout);
            assert!(nests(&fitted, timeout), "{seconds}s: {fitted:?}");
            assert!(
                fitted.lock_timeout <= fitted.statement_timeout,
                "{fitted:?}"
            );
            assert!(!fitted.statement_timeout.is_zero() && !fitted.lock_wait.is_zero());
            assert_eq!(fitted.lock_retries, defaults.lock_retries);
            assert_eq!(fitted.connect_timeout, defaults.connect_timeout);
        }
        let apply_one = fit_to_deadline(&defaults, Duration::from_secs(900));
        assert!(
            apply_one.statement_timeout >= Duration::from_secs(9 * 60),
            "{apply_one:?}"
        );
    }

    #[test]
    fn timeouts_that_fit_are_kept_and_no_limit_becomes_the_cap() {
        let small = Settings {
            lock_wait: Duration::from_secs(30),
            statement_timeout: Duration::from_secs(60),
            ..Settings::default()
        };
        assert_eq!(
            fit_to_deadline(&small, Duration::from_secs(900)),
            Settings {
                timeout_ceiling: Some(small.statement_timeout),
                ..small.clone()
            }
        );
        let unlimited = Settings {
            statement_timeout: Duration::ZERO,
            lock_timeout: Duration::ZERO,
            ..small
        };
        let fitted = fit_to_deadline(&unlimited, Duration::from_secs(120));
        assert!(!fitted.statement_timeout.is_zero(), "0 would be no limit");
        assert!(nests(&fitted, Duration::from_secs(120)), "{fitted:?}");
        assert_eq!(fitted.lock_timeout, fitted.statement_timeout);
        // Even a deadline already almost gone gives PostgreSQL a limit, never 0.
        let late = fit_to_deadline(&Settings::default(), Duration::from_millis(300));
        assert!(!late.statement_timeout.is_zero() && !late.lock_wait.is_zero());
    }

    #[test]
    fn remaining_time_comes_from_the_deadline() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert_eq!(remaining(1_900_000, now), Some(Duration::from_secs(900)));
        assert_eq!(remaining(0, now), None, "no deadline");
        assert_eq!(remaining(999_000, now), None, "already passed");
    }

    #[test]
    fn the_alert_names_the_configured_database_when_the_failure_does_not() {
        assert_eq!(
            alert_database("", Some("tutor_system")).as_deref(),
            Some("tutor_system")
        );
        assert_eq!(
            alert_database("other", Some("tutor_system")).as_deref(),
            Some("other")
        );
        assert_eq!(alert_database(" ", None), None);
        assert_eq!(alert_database("", Some("")), None);
    }

    #[test]
    fn migrations_whose_own_statement_timeout_outlasts_the_function_are_named() {
        use crate::migration::SourceFile;
        let file = |name: &str, sql: &str| SourceFile {
            path: format!("migrations/{name}").into(),
            bytes: sql.as_bytes().to_vec(),
        };
        let set = MigrationSet::from_files(
            std::path::Path::new("migrations"),
            vec![
                file("001_plain.sql", "CREATE TABLE a (id int);\n"),
                file(
                    "002_long.sql",
                    "-- stepmigrate: statement_timeout = 1h\nCREATE TABLE b (id int);\n",
                ),
                file(
                    "003_short.sql",
                    "-- stepmigrate: statement_timeout = 2min\nCREATE TABLE c (id int);\n",
                ),
            ],
        )
        .unwrap();
        assert_eq!(
            outlasting_migrations(&set, Duration::from_secs(600)),
            vec!["002_long"]
        );
    }
}
