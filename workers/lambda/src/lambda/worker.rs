//! The database workers' migrator: built lazily (the secret at the first invocation that
//! needs it, never a failure kept), its timeouts fitted into the invocation's deadline.

use super::*;

/// The migrator of a database worker, built at the first invocation that needs it: the
/// settings and the migrations packaged next to the binary (or `STEPMIGRATE_MIGRATIONS_DIR`)
/// are read at start ([`LazyMigrator::from_env`]: a malformed one is permanent), the database
/// from `DATABASE_URL` or, in AWS, the Secrets Manager secret `DB_SECRET_ARN` (RDS format,
/// TLS verify-full with the RDS CA bundle packaged as `rds-ca-bundle.pem` or at
/// `DB_CA_BUNDLE`) at the first invocation ([`LazyMigrator::get`]). A failed read of the
/// secret (Secrets Manager unreachable, an endpoint still starting) is `ServiceError`, which
/// the state machine retries, and is never kept: the next invocation reads it again.
pub struct LazyMigrator {
    settings: Settings,
    set: MigrationSet,
    source: DatabaseSource,
    ready: Mutex<Option<Arc<Migrator>>>,
}

pub(super) enum DatabaseSource {
    Url(Box<Database>),
    Secret { arn: String, ca_bundle: PathBuf },
}

impl LazyMigrator {
    pub fn from_env() -> Result<LazyMigrator, Error> {
        let settings = Settings::from_env(env)?;
        let dir = env(ENV_MIGRATIONS_DIR)
            .map(PathBuf::from)
            .unwrap_or_else(|| package_dir().join("migrations"));
        let set = MigrationSet::load(&dir)?;
        let source = match (env(ENV_DATABASE_URL), env(ENV_DB_SECRET_ARN)) {
            (Some(url), _) => DatabaseSource::Url(Box::new(Database::from_url(
                &url,
                ENV_DATABASE_URL,
                settings.connect_timeout,
            )?)),
            (None, Some(arn)) => DatabaseSource::Secret {
                arn,
                ca_bundle: ca_bundle()?,
            },
            (None, None) => {
                return Err(Error::Config {
                    variable: ENV_DB_SECRET_ARN.into(),
                    reason: format!("not set (nor {ENV_DATABASE_URL}): the workers need the database's Secrets Manager secret"),
                })
            }
        };
        Ok(LazyMigrator {
            settings,
            set,
            source,
            ready: Mutex::new(None),
        })
    }

    /// The migrator, built at the first call that succeeds and kept for the instance's life.
    /// Its lock wait and statement timeout are fitted into this invocation's deadline (every
    /// invocation of a function has the same timeout).
    pub async fn get(&self, context: &Context) -> Result<Arc<Migrator>, Error> {
        self.get_within(remaining(context.deadline, SystemTime::now()))
            .await
    }

    /// The migrator, its timeouts fitted into `remaining` (None: the settings as configured,
    /// for the ECS task, which has no deadline).
    pub async fn get_within(&self, remaining: Option<Duration>) -> Result<Arc<Migrator>, Error> {
        // Boxed: the SDK's futures nest deep enough to overflow the compiler's layout depth
        // inside the handlers' futures.
        get_or_try_init(&self.ready, Box::pin(async {
            let db = match &self.source {
                DatabaseSource::Url(db) => Database::clone(db),
                DatabaseSource::Secret { arn, ca_bundle } => Database::from_options(
                    Box::pin(options_from_secret(arn, ca_bundle)).await?,
                    self.settings.connect_timeout,
                ),
            };
            let settings = match remaining {
                Some(left) => fit_to_deadline(&self.settings, left),
                None => self.settings.clone(),
            };
            let changed = (settings.lock_wait, settings.statement_timeout, settings.lock_timeout)
                != (self.settings.lock_wait, self.settings.statement_timeout, self.settings.lock_timeout);
            if changed {
                info!(configured = ?self.settings, fitted = ?settings, "timeouts fitted into the function's timeout");
            }
            let outlasting = outlasting_migrations(&self.set, settings.statement_timeout);
            if !outlasting.is_empty() {
                warn!(migrations = ?outlasting, limit = ?settings.statement_timeout, "these migrations' own statement_timeout directive is longer than the function's timeout leaves: capped to the limit (run them outside Lambda if they need longer)");
            }
            Ok(Migrator::new(db, self.set.clone(), settings))
        }))
        .await
    }
}

/// The migrations whose header directive sets a statement timeout (0: none) longer than
/// `limit`, which the worker's timeouts do not cap.
pub fn outlasting_migrations(set: &MigrationSet, limit: Duration) -> Vec<&str> {
    set.migrations()
        .iter()
        .filter(|m| {
            m.directives
                .statement_timeout
                .is_some_and(|t| t.is_zero() || t > limit)
        })
        .map(|m| m.name.as_str())
        .collect()
}

/// The value in `cell`, or `init`'s, kept in `cell` only when it succeeded: a failure is
/// answered once and tried again by the next caller, never cached.
pub(super) async fn get_or_try_init<T>(
    cell: &Mutex<Option<Arc<T>>>,
    init: impl Future<Output = Result<T, Error>>,
) -> Result<Arc<T>, Error> {
    if let Some(ready) = cell.lock().unwrap_or_else(|p| p.into_inner()).clone() {
        return Ok(ready);
    }
    let value = Arc::new(init.await?);
    let mut slot = cell.lock().unwrap_or_else(|p| p.into_inner());
    Ok(slot.get_or_insert(value).clone())
}

/// What is left of an invocation whose deadline is `deadline_ms` (milliseconds since the
/// epoch, as Lambda gives it); None when there is no deadline (0) or it already passed.
pub fn remaining(deadline_ms: u64, now: SystemTime) -> Option<Duration> {
    if deadline_ms == 0 {
        return None;
    }
    let deadline = SystemTime::UNIX_EPOCH + Duration::from_millis(deadline_ms);
    deadline.duration_since(now).ok().filter(|d| !d.is_zero())
}

/// What a worker keeps of its time for itself: answering, recording, logging after
/// PostgreSQL's timeouts fired. A tenth of the time, at least [`MIN_DEADLINE_MARGIN`].
pub fn deadline_margin(remaining: Duration) -> Duration {
    (remaining / 10).max(MIN_DEADLINE_MARGIN)
}

pub const MIN_DEADLINE_MARGIN: Duration = Duration::from_secs(5);

/// The shortest timeout a fitted setting gets: PostgreSQL reads 0 as no limit at all.
pub(super) const MIN_FITTED: Duration = Duration::from_secs(1);

/// The settings with their timeouts capped so that they nest in `remaining`, the time left of
/// the invocation: connect timeout + lock wait (at most a quarter of what is left) + statement
/// timeout (the rest) + [`deadline_margin`] fit in it. A timeout that already fits is kept; 0
/// (no limit) becomes the cap. So a migration that runs too long fails with PostgreSQL's
/// error (recorded, alerted) and a runner that waits too long for another one with
/// `LockTimeout` (retried), instead of Lambda stopping the worker with nothing recorded.
/// Each try of each migration gets the statement timeout: the caps bound one try.
pub fn fit_to_deadline(settings: &Settings, remaining: Duration) -> Settings {
    let budget = remaining
        .saturating_sub(deadline_margin(remaining))
        .saturating_sub(settings.connect_timeout);
    let cap = |configured: Duration, limit: Duration| {
        let limit = limit.max(MIN_FITTED);
        if configured.is_zero() {
            limit
        } else {
            configured.min(limit)
        }
    };
    let lock_wait = cap(settings.lock_wait, budget / 4);
    let statement_timeout = cap(settings.statement_timeout, budget.saturating_sub(lock_wait));
    let lock_timeout = cap(settings.lock_timeout, statement_timeout);
    Settings {
        lock_wait,
        statement_timeout,
        lock_timeout,
        // A migration's own directive may not outlast the function either.
        timeout_ceiling: Some(statement_timeout),
        ..settings.clone()
    }
}
