//! Runner settings: timeouts and retry policy, read from environment variables with errors
//! that name the variable.

use std::time::Duration;

use serde::Serialize;

use crate::error::Error;

/// How the runner treats the live database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settings {
    /// `lock_timeout` of each migration: a migration waiting for a table lock fails fast
    /// instead of queueing the application's queries behind it.
    #[serde(with = "duration")]
    pub lock_timeout: Duration,
    /// `statement_timeout` of each migration.
    #[serde(with = "duration")]
    pub statement_timeout: Duration,
    /// How many times a migration that hit its `lock_timeout` is tried again, with back-off.
    pub lock_retries: u32,
    /// How long a runner waits for another runner to finish before giving up.
    #[serde(with = "duration")]
    pub lock_wait: Duration,
    /// How long to wait for a database connection.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// The longest `lock_timeout` / `statement_timeout` any migration gets, its own header
    /// directives included (a Lambda worker sets it from its function's timeout).
    #[serde(skip_serializing_if = "Option::is_none", with = "duration_opt")]
    pub timeout_ceiling: Option<Duration>,
    /// The schema the ledger lives in; `None`: where an existing ledger (or the old runner's
    /// table) is, else `public`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger_schema: Option<String>,
    /// Apply a new migration that sorts below one already applied (a branch merged late)
    /// instead of refusing it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_out_of_order: bool,
    /// How often a long statement's progress is logged (an index build's phase and blocks).
    #[serde(with = "duration")]
    pub progress_interval: Duration,
    /// When a run that can stop part way and say so (verify) must be done: it starts no
    /// migration whose statements cannot end by then, and caps their statement_timeout to
    /// it ([`crate::deadline`]). A Lambda worker sets it per invocation from the invocation's
    /// deadline (less its margin); `None`: no deadline.
    #[serde(skip)]
    pub deadline: Option<std::time::Instant>,
    /// Only on a database that verify or preview works on, never on a target: before each
    /// COMMIT the runner checks that the transaction changed nothing that belongs to the
    /// whole server (see [`crate::server_guard`]), and runs each statement of a migration
    /// outside a transaction that can run in one inside a transaction of its own, so that
    /// the check comes before it commits.
    #[serde(skip)]
    pub guard_server: bool,
    /// How long `up` holds the migration lock over a batch migration before it lets go
    /// between two batches, so that another runner waiting for the lock (a deploy's run) goes
    /// first; then it takes the lock again and goes on ([`crate::runner::Migrator::up`]). The
    /// Step Functions route bounds each batch invocation the same way.
    #[serde(skip)]
    pub batch_budget: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lock_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(15 * 60),
            lock_retries: 3,
            lock_wait: Duration::from_secs(10 * 60),
            connect_timeout: Duration::from_secs(5),
            timeout_ceiling: None,
            ledger_schema: None,
            allow_out_of_order: false,
            progress_interval: Duration::from_secs(10),
            deadline: None,
            guard_server: false,
            batch_budget: Duration::from_secs(2 * 60),
        }
    }
}

pub const ENV_LOCK_TIMEOUT: &str = "STEPMIGRATE_LOCK_TIMEOUT";
pub const ENV_STATEMENT_TIMEOUT: &str = "STEPMIGRATE_STATEMENT_TIMEOUT";
pub const ENV_LOCK_RETRIES: &str = "STEPMIGRATE_LOCK_RETRIES";
pub const ENV_LOCK_WAIT: &str = "STEPMIGRATE_LOCK_WAIT";
pub const ENV_CONNECT_TIMEOUT: &str = "STEPMIGRATE_CONNECT_TIMEOUT";
pub const ENV_LEDGER_SCHEMA: &str = "STEPMIGRATE_LEDGER_SCHEMA";
pub const ENV_ALLOW_OUT_OF_ORDER: &str = "STEPMIGRATE_ALLOW_OUT_OF_ORDER";
pub const ENV_PROGRESS_INTERVAL: &str = "STEPMIGRATE_PROGRESS_INTERVAL";
pub const ENV_BATCH_BUDGET: &str = "STEPMIGRATE_BATCH_BUDGET";

impl Settings {
    /// Defaults overridden by the `STEPMIGRATE_*` variables that `lookup` finds.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, Error> {
        let mut s = Settings::default();
        let duration = |var: &str, target: &mut Duration| -> Result<(), Error> {
            if let Some(v) = lookup(var) {
                *target = parse_duration(&v).map_err(|reason| Error::Config {
                    variable: var.to_owned(),
                    reason,
                })?;
            }
            Ok(())
        };
        duration(ENV_LOCK_TIMEOUT, &mut s.lock_timeout)?;
        duration(ENV_STATEMENT_TIMEOUT, &mut s.statement_timeout)?;
        duration(ENV_LOCK_WAIT, &mut s.lock_wait)?;
        duration(ENV_CONNECT_TIMEOUT, &mut s.connect_timeout)?;
        duration(ENV_PROGRESS_INTERVAL, &mut s.progress_interval)?;
        duration(ENV_BATCH_BUDGET, &mut s.batch_budget)?;
        if s.batch_budget.is_zero() {
            return Err(Error::Config {
                variable: ENV_BATCH_BUDGET.to_owned(),
                reason: "0 leaves no time for a batch: write e.g. 30s or 10min".to_owned(),
            });
        }
        if s.progress_interval.is_zero() {
            return Err(Error::Config {
                variable: ENV_PROGRESS_INTERVAL.to_owned(),
                reason: "must be more than 0 (e.g. 10s)".to_owned(),
            });
        }
        if let Some(v) = lookup(ENV_LEDGER_SCHEMA) {
            s.ledger_schema = Some(parse_schema_name(&v).map_err(|reason| Error::Config {
                variable: ENV_LEDGER_SCHEMA.to_owned(),
                reason,
            })?);
        }
        if let Some(v) = lookup(ENV_ALLOW_OUT_OF_ORDER) {
            s.allow_out_of_order = match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" | "" => false,
                _ => {
                    return Err(Error::Config {
                        variable: ENV_ALLOW_OUT_OF_ORDER.to_owned(),
                        reason: format!("`{v}` is not true or false"),
                    })
                }
            };
        }
        if let Some(v) = lookup(ENV_LOCK_RETRIES) {
            s.lock_retries = v.trim().parse().map_err(|_| Error::Config {
                variable: ENV_LOCK_RETRIES.to_owned(),
                reason: format!("`{v}` is not a whole number of retries"),
            })?;
        }
        Ok(s)
    }
}

/// The longest duration PostgreSQL's `lock_timeout` and `statement_timeout` take.
pub const MAX_DURATION_MS: u64 = i32::MAX as u64;

/// Parses `500ms`, `5s`, `15min`, `1h` or `0` (no limit), as PostgreSQL spells them.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = match digits.parse() {
        Ok(n) => n,
        Err(_) if !digits.is_empty() => u64::MAX, // all digits, too many of them
        Err(_) => {
            return Err(format!(
                "`{text}` is not a duration; write e.g. 500ms, 5s, 15min, 1h, or 0 for no limit"
            ))
        }
    };
    let unit_ms: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1000,
        "min" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err(format!(
                "`{text}` has no known unit; write e.g. 500ms, 5s, 15min, 1h, or 0 for no limit"
            ))
        }
    };
    // PostgreSQL's timeouts are int milliseconds: a longer one would wrap or be refused
    // mid-run, failing an innocent migration.
    match n.checked_mul(unit_ms) {
        Some(ms) if ms <= MAX_DURATION_MS => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "`{text}` is too long: at most {MAX_DURATION_MS}ms (24 days), or 0 for no limit"
        )),
    }
}

/// A schema name as written (it is quoted wherever it is used, so any name works).
pub fn parse_schema_name(text: &str) -> Result<String, String> {
    let name = text.trim();
    if name.is_empty() || name.len() > 63 || name.contains(['\0', '$']) {
        return Err(format!(
            "`{text}` is not a schema name: 1 to 63 bytes without `$`, e.g. public or migrations"
        ));
    }
    if name.to_ascii_lowercase().starts_with("pg_") {
        return Err(format!(
            "`{text}`: names starting with pg_ are PostgreSQL's own (pg_catalog, pg_temp); choose another, e.g. migrations"
        ));
    }
    Ok(name.to_owned())
}

/// The value PostgreSQL's `SET lock_timeout`/`statement_timeout` take.
pub fn pg_interval(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Durations serialize as PostgreSQL-style strings, e.g. `"5000ms"`.
pub(crate) mod duration {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::pg_interval(*d))
    }
}

pub(crate) mod duration_opt {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::pg_interval(*d)),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration(" 5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("15min"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(
            parse_duration("2147483647ms"),
            Ok(Duration::from_millis(2_147_483_647))
        );
        for too_long in [
            "2147483648ms",
            "597h",
            "99999999999999999999h",
            "18446744073709551615s",
        ] {
            let err = parse_duration(too_long).unwrap_err();
            assert!(err.contains("too long"), "{too_long}: {err}");
        }
    }

    #[test]
    fn env_errors_name_the_variable() {
        let err =
            Settings::from_env(|k| (k == ENV_LOCK_TIMEOUT).then(|| "soon".to_owned())).unwrap_err();
        assert!(
            err.to_string().contains("STEPMIGRATE_LOCK_TIMEOUT"),
            "{err}"
        );
        let err =
            Settings::from_env(|k| (k == ENV_LOCK_RETRIES).then(|| "-1".to_owned())).unwrap_err();
        assert!(
            err.to_string().contains("STEPMIGRATE_LOCK_RETRIES"),
            "{err}"
        );
        let s =
            Settings::from_env(|k| (k == ENV_STATEMENT_TIMEOUT).then(|| "1h".to_owned())).unwrap();
        assert_eq!(s.statement_timeout, Duration::from_secs(3600));
    }

    #[test]
    fn the_batch_budget_is_two_minutes_unless_set_and_never_zero() {
        let budget = |v: &str| Settings::from_env(|k| (k == ENV_BATCH_BUDGET).then(|| v.into()));
        assert_eq!(
            Settings::from_env(|_| None).unwrap().batch_budget,
            Duration::from_secs(120)
        );
        assert_eq!(budget("30s").unwrap().batch_budget, Duration::from_secs(30));
        for bad in ["0", "soon"] {
            let err = budget(bad).unwrap_err();
            assert!(err.to_string().contains(ENV_BATCH_BUDGET), "{bad}: {err}");
        }
    }
}
