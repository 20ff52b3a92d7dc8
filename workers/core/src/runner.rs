//! The steps, wired to a database: status, plan, up, apply-one, record, resolve and the
//! ledger's maintenance. Each reads the ledger, plans with the pure planner and applies with
//! the applier; the CLI and the Lambda workers call these and only format the result.

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::PgConnection;
use tracing::{info, info_span, warn, Instrument};

use std::sync::OnceLock;

use crate::apply::{self, Attempt, Commit, Outcome};
use crate::config::Settings;
use crate::db::Database;
use crate::error::{Error, ErrorKind, MigrationFailure, SqlError};
use crate::ledger::{self, EventKind, Ledger, LedgerKind, LedgerSchema, NewEvent};
use crate::lock::{backoff, MigrationLock};
use crate::migration::{Migration, MigrationSet, Version};
use crate::plan::{Plan, State};

/// Live progress of a run, for the human output of the CLI.
pub trait Progress {
    fn waiting_for_lock(&mut self) {}
    fn starting(&mut self, _index: usize, _total: usize, _migration: &Migration) {}
    fn retrying(&mut self, _migration: &Migration, _attempt: u32, _delay: Duration, _reason: &str) {
    }
    fn finished(&mut self, _index: usize, _total: usize, _result: &MigrationResult) {}
}

/// Progress nobody watches.
pub struct Quiet;
impl Progress for Quiet {}

/// The result of one migration in a run.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct MigrationResult {
    pub version: Version,
    pub name: String,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// What `up` did.
#[derive(Debug, Clone, Serialize)]
pub struct UpReport {
    pub run_id: String,
    pub database: String,
    /// How many migrations were pending when the run began (under the lock).
    pub pending: usize,
    pub results: Vec<MigrationResult>,
    pub warnings: Vec<String>,
    /// The migration that failed and stopped the run, recorded in the ledger (unless
    /// `record_error` says why it could not be).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Box<MigrationFailure>>,
    /// Why recording the failure failed, beside the failure itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_error: Option<String>,
    /// The migration lock was lost: the run stopped before the next migration.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub lock_lost: bool,
    pub elapsed_ms: u64,
}

impl UpReport {
    pub fn applied(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Applied { .. }))
            .count()
    }

    /// The run's failure as an error, for exit codes and error names.
    pub fn error(&self) -> Option<Error> {
        if let Some(f) = &self.failure {
            return Some(Error::MigrationFailed { failure: f.clone() });
        }
        self.lock_lost.then(|| Error::LockLost {
            applied: self.applied(),
        })
    }
}

/// How an operator resolved a dirty migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    Applied,
    NotApplied,
}

/// A database, a migration set and the settings to apply one to the other.
pub struct Migrator {
    pub db: Database,
    pub set: MigrationSet,
    pub settings: Settings,
    /// Located on first use, then kept: the ledger does not move during a process's life.
    ledger_schema: OnceLock<LedgerSchema>,
}

/// A run id for a run that has no execution to name it.
pub fn new_run_id(prefix: &str) -> String {
    use rand::Rng;
    format!(
        "{prefix}-{}-{:06x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        rand::thread_rng().gen_range(0..0xFF_FFFF)
    )
}

/// How the apply loop ended.
struct Applied {
    results: Vec<MigrationResult>,
    /// The migration that failed and stopped the loop (not recorded yet).
    failure: Option<Box<MigrationFailure>>,
    /// The lock's session ended: the loop stopped before the next migration.
    lock_lost: bool,
}

impl Migrator {
    pub fn new(db: Database, set: MigrationSet, settings: Settings) -> Migrator {
        Migrator {
            db,
            set,
            settings,
            ledger_schema: OnceLock::new(),
        }
    }

    /// The schema the ledger lives in (see [`LedgerSchema::locate`]).
    pub async fn ledger_schema(&self, conn: &mut PgConnection) -> Result<LedgerSchema, Error> {
        if let Some(schema) = self.ledger_schema.get() {
            return Ok(schema.clone());
        }
        let schema = LedgerSchema::locate(conn, self.settings.ledger_schema.as_deref()).await?;
        Ok(self.ledger_schema.get_or_init(|| schema).clone())
    }

    pub(crate) async fn read_ledger(
        &self,
        conn: &mut PgConnection,
    ) -> Result<(LedgerSchema, Ledger), Error> {
        let schema = self.ledger_schema(conn).await?;
        let ledger = ledger::read(conn, &schema).await?;
        Ok((schema, ledger))
    }

    /// The plan as it stands, without taking the lock or writing anything.
    pub async fn plan(&self, target: Option<&Version>) -> Result<(Ledger, Plan), Error> {
        let mut conn = self.db.connect().await?;
        let (_, ledger) = self.read_ledger(&mut conn).await?;
        let plan = Plan::new(&self.set, &ledger, target)?;
        Ok((ledger, plan))
    }

    /// Applies the pending migrations in order, up to `target`, stopping at the first failure
    /// (which is recorded before this returns).
    pub async fn up(
        &self,
        target: Option<&Version>,
        run_id: &str,
        progress: &mut dyn Progress,
    ) -> Result<UpReport, Error> {
        let span = info_span!("run", run_id, database = %self.db);
        async {
            let started = Instant::now();
            let mut report = UpReport {
                run_id: run_id.to_owned(),
                database: self.db.to_string(),
                pending: 0,
                results: Vec::new(),
                warnings: Vec::new(),
                failure: None,
                record_error: None,
                lock_lost: false,
                elapsed_ms: 0,
            };
            let mut conn = self.db.connect().await?;
            let (schema, ledger) = self.read_ledger(&mut conn).await?;
            let plan = Plan::new(&self.set, &ledger, target)?;
            // A dirty row seen without the lock may be a migration another runner is running
            // right now: only the plan made under the lock may call it dirty.
            if plan.count(State::Dirty) == 0 {
                plan.ensure_runnable()?;
            }
            if plan.pending().next().is_none()
                && plan.count(State::Dirty) == 0
                && ledger.is_current()
            {
                // Nothing to do: no lock, no write.
                report.warnings = plan.warnings;
                report.elapsed_ms = started.elapsed().as_millis() as u64;
                return Ok(report);
            }

            let lock = self.lock(&schema, progress).await?;
            lock.hold(async |lock| {
                let plan = self
                    .prepare_locked(&mut conn, &schema, ledger, target, run_id)
                    .await?;
                report.warnings = plan.warnings.clone();
                let pending: Vec<&Migration> = plan
                    .pending()
                    .filter_map(|e| self.set.get(&e.version))
                    .collect();
                report.pending = pending.len();
                info!(pending = pending.len(), "planned");

                let applied = self
                    .apply_in_order(
                        &mut conn,
                        &schema,
                        lock,
                        &pending,
                        |_| false,
                        run_id,
                        progress,
                    )
                    .await?;
                report.results = applied.results;
                report.lock_lost = applied.lock_lost;
                if let Some(failure) = applied.failure {
                    let checksum = self.set.get(&failure.version).map(|m| m.checksum.as_str());
                    if let Err(e) = self
                        .record_with(&mut conn, &schema, &failure, checksum, run_id)
                        .await
                    {
                        // The migration's own error stays the run's error; this goes beside it.
                        warn!(error = %e, "could not record the failure of {}", failure.name);
                        report.record_error = Some(e.to_string());
                    }
                    report.failure = Some(failure);
                }
                Ok(())
            })
            .await?;
            report.elapsed_ms = started.elapsed().as_millis() as u64;
            Ok(report)
        }
        .instrument(span)
        .await
    }

    /// The one apply loop, under the lock: applies `migrations` in order (those for which
    /// `applied` holds are reported already applied), each checked by the database to be still
    /// pending with its predecessor applied and the lock still held. Stops at the first
    /// failure, which the caller records, or when the lock is lost.
    #[allow(clippy::too_many_arguments)]
    async fn apply_in_order(
        &self,
        conn: &mut PgConnection,
        schema: &LedgerSchema,
        lock: &MigrationLock,
        migrations: &[&Migration],
        applied: impl Fn(&Migration) -> bool,
        run_id: &str,
        progress: &mut dyn Progress,
    ) -> Result<Applied, Error> {
        let mut end = Applied {
            results: Vec::with_capacity(migrations.len()),
            failure: None,
            lock_lost: false,
        };
        let last_pending = migrations.iter().rposition(|m| !applied(m));
        for (index, m) in migrations.iter().enumerate() {
            let outcome = if applied(m) {
                Outcome::AlreadyApplied
            } else {
                progress.starting(index, migrations.len(), m);
                // Deferred durability for all but the last: see `Commit`.
                let commit = if Some(index) == last_pending {
                    Commit::Durable
                } else {
                    Commit::Deferred
                };
                self.apply_with_retries(conn, schema, lock, m, run_id, commit, progress)
                    .await?
            };
            if outcome == Outcome::LockLost {
                warn!("the migration lock was lost; stopping before {}", m.name);
                end.lock_lost = true;
                break;
            }
            let result = MigrationResult {
                version: m.version.clone(),
                name: m.name.clone(),
                outcome,
            };
            progress.finished(index, migrations.len(), &result);
            if let Outcome::Failed { failure } = &result.outcome {
                end.failure = Some(failure.clone());
            }
            end.results.push(result);
            if end.failure.is_some() {
                break;
            }
        }
        Ok(end)
    }

    /// Applies one migration, as the apply-one step does; `checksum` is the one the plan
    /// saw. See [`Migrator::apply_range`].
    pub async fn apply_one(
        &self,
        version: &Version,
        checksum: &str,
        run_id: &str,
    ) -> Result<MigrationResult, Error> {
        let m = self.set.get(version).ok_or_else(|| {
            Error::InvalidInput(format!("version `{version}` is not in the migration set"))
        })?;
        if m.checksum != checksum {
            return Err(Error::ChecksumMismatch {
                drift: vec![crate::error::Drift {
                    version: m.version.clone(),
                    name: m.name.clone(),
                    file: m.path.clone(),
                    recorded: checksum.to_owned(),
                    actual: m.checksum.clone(),
                }],
            });
        }
        let mut results = self.apply_range(version, version, run_id).await?;
        Ok(results.remove(0))
    }

    /// The apply-one step: under the lock, re-reads the ledger and applies the migrations
    /// `first..=last` of the set in order, each checked to be still pending with everything
    /// before it applied (one already applied by another runner is skipped). The first
    /// failure stops it and is returned as the error, not recorded (the record step does).
    pub async fn apply_range(
        &self,
        first: &Version,
        last: &Version,
        run_id: &str,
    ) -> Result<Vec<MigrationResult>, Error> {
        let position = |v: &Version| {
            self.set.position(v).ok_or_else(|| {
                Error::InvalidInput(format!("version `{v}` is not in the migration set"))
            })
        };
        let (from, to) = (position(first)?, position(last)?);
        if from > to {
            return Err(Error::InvalidInput(format!(
                "the range {first}..{last} is empty"
            )));
        }
        let range: Vec<&Migration> = self.set.migrations()[from..=to].iter().collect();
        let mut conn = self.db.connect().await?;
        let (schema, ledger) = self.read_ledger(&mut conn).await?;
        let lock = self.lock(&schema, &mut Quiet).await?;
        let end = lock
            .hold(async |lock| {
                let plan = self
                    .prepare_locked(&mut conn, &schema, ledger, None, run_id)
                    .await?;
                if let Some(blocker) = plan.pending().find(|e| e.version < range[0].version) {
                    return Err(Error::InvalidInput(format!(
                        "{} cannot run before {}, which is pending",
                        range[0].name, blocker.name
                    )));
                }
                let applied = |m: &Migration| {
                    plan.entries
                        .iter()
                        .any(|e| e.version == m.version && e.state == State::Applied)
                };
                self.apply_in_order(
                    &mut conn, &schema, lock, &range, applied, run_id, &mut Quiet,
                )
                .await
            })
            .await?;
        if end.lock_lost {
            return Err(Error::LockLost {
                applied: end.results.len(),
            });
        }
        match end.failure {
            Some(failure) => Err(Error::MigrationFailed { failure }),
            None => Ok(end.results),
        }
    }

    /// The record step: records a failure the migration's own transaction could not.
    pub async fn record_failure(
        &self,
        failure: &MigrationFailure,
        run_id: &str,
    ) -> Result<(), Error> {
        let mut conn = self.db.connect().await?;
        let schema = self.ledger_schema(&mut conn).await?;
        // Under the lock: another runner may be applying this very migration right now.
        let checksum = self.set.get(&failure.version).map(|m| m.checksum.as_str());
        self.lock(&schema, &mut Quiet)
            .await?
            .hold(async |_| {
                self.record_with(&mut conn, &schema, failure, checksum, run_id)
                    .await
            })
            .await
    }

    /// Records a failure on `conn`, or, when that connection broke with the migration (a
    /// migration that ended its own session), on a new one.
    async fn record_with(
        &self,
        conn: &mut PgConnection,
        schema: &LedgerSchema,
        failure: &MigrationFailure,
        checksum: Option<&str>,
        run_id: &str,
    ) -> Result<(), Error> {
        match apply::record_failure(conn, schema, failure, checksum, run_id).await {
            Err(e) if e.kind() == ErrorKind::ConnectionFailed => {
                let mut fresh = self.db.connect().await?;
                apply::record_failure(&mut fresh, schema, failure, checksum, run_id).await
            }
            other => other,
        }
    }

    /// Records what an operator found when checking a dirty migration by hand.
    pub async fn resolve(
        &self,
        version: &Version,
        resolution: Resolution,
        run_id: &str,
    ) -> Result<String, Error> {
        let mut conn = self.db.connect().await?;
        let schema = self.ledger_schema(&mut conn).await?;
        let lock = self.lock(&schema, &mut Quiet).await?;
        lock.hold(async |_| {
            let ledger = ledger::read(&mut conn, &schema).await?;
            let row = ledger
                .migration_rows()
                .find(|r| {
                    Version::parse(&r.version).is_some_and(|v| v.number() == version.number())
                })
                .filter(|r| r.dirty)
                .ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "migration {version} is not dirty: there is nothing to resolve"
                    ))
                })?
                .clone();
            let kind = match resolution {
                Resolution::Applied => EventKind::ResolvedApplied,
                Resolution::NotApplied => EventKind::ResolvedNotApplied,
            };
            ledger::append(
                &mut conn,
                &schema,
                &NewEvent {
                    run_id,
                    version: &row.version,
                    name: &row.name,
                    kind,
                    checksum: row.checksum.as_deref(),
                    execution_time_ms: None,
                    dirty: false,
                    error: None,
                    notices: &[],
                },
            )
            .await?;
            Ok(row.name)
        })
        .await
    }

    /// Differences between the projection and its events (empty: consistent). A database
    /// without an event-sourced ledger yet has nothing to differ.
    pub async fn ledger_check(&self) -> Result<(LedgerKind, Vec<String>), Error> {
        let mut conn = self.db.connect().await?;
        let (schema, ledger) = self.read_ledger(&mut conn).await?;
        let differences = match ledger.kind {
            LedgerKind::EventSourced if ledger.projection_missing => vec![format!(
                "  {} is missing; its events are there (the next `stepmigrate up`, or `stepmigrate ledger rebuild`, restores it)",
                schema.qualify("schema_migrations")
            )],
            LedgerKind::EventSourced => ledger::check(&mut conn, &schema).await?,
            LedgerKind::Missing | LedgerKind::Legacy => Vec::new(),
        };
        Ok((ledger.kind, differences))
    }

    /// Rewrites the projection from the events; returns the number of rows.
    pub async fn ledger_rebuild(&self, run_id: &str) -> Result<u64, Error> {
        let mut conn = self.db.connect().await?;
        let (schema, ledger) = self.read_ledger(&mut conn).await?;
        self.lock(&schema, &mut Quiet)
            .await?
            .hold(async |_| {
                if !ledger.is_current() {
                    ledger::install(&mut conn, &schema, run_id).await?;
                }
                ledger::rebuild(&mut conn, &schema).await
            })
            .await
    }

    pub(crate) async fn lock(
        &self,
        schema: &LedgerSchema,
        progress: &mut dyn Progress,
    ) -> Result<MigrationLock, Error> {
        let conn = self.db.connect().await?;
        MigrationLock::acquire(conn, schema, self.settings.lock_wait, || {
            info!("another runner holds the migration lock; waiting");
            progress.waiting_for_lock()
        })
        .await
    }

    /// Under the lock: installs or upgrades the ledger if needed, then plans again from a
    /// fresh read (another runner may have moved on while this one waited).
    pub(crate) async fn prepare_locked(
        &self,
        conn: &mut PgConnection,
        schema: &LedgerSchema,
        seen: Ledger,
        target: Option<&Version>,
        run_id: &str,
    ) -> Result<Plan, Error> {
        let mut ledger = ledger::read(conn, schema).await?;
        if !ledger.is_current() {
            if seen.kind == LedgerKind::Legacy || ledger.kind == LedgerKind::Legacy {
                info!("adopting the old runner's schema_migrations");
            }
            if ledger.projection_missing {
                warn!("schema_migrations was dropped; rebuilding it from its events");
            }
            ledger::install(conn, schema, run_id).await?;
            ledger = ledger::read(conn, schema).await?;
        }
        let plan = Plan::new(&self.set, &ledger, target)?;
        plan.ensure_runnable()?;
        Ok(plan)
    }

    /// Applies one migration; a lock timeout is retried with back-off (`lock_retries`), and
    /// a busy guard until the lock wait runs out.
    #[allow(clippy::too_many_arguments)]
    async fn apply_with_retries(
        &self,
        conn: &mut PgConnection,
        schema: &LedgerSchema,
        lock: &MigrationLock,
        m: &Migration,
        run_id: &str,
        commit: Commit,
        progress: &mut dyn Progress,
    ) -> Result<Outcome, Error> {
        let span = info_span!("migration", version = m.version.as_str(), name = %m.name, transactional = m.transactional());
        async {
            let previous = self.set.previous(&m.version).map(|p| &p.version);
            let started = Instant::now();
            let mut lock_timeouts = 0u32;
            let mut busy = 0u32;
            loop {
                let attempt = Attempt::new(
                    m,
                    previous,
                    run_id,
                    schema,
                    Some(lock.backend_pid()),
                    &self.settings,
                    commit,
                );
                let outcome = apply::apply(conn, &attempt).await?;
                let (reason, delay) = match &outcome {
                    Outcome::Failed { failure }
                        if failure.error.is_lock_timeout()
                            && !failure.is_dirty()
                            && lock_timeouts < self.settings.lock_retries =>
                    {
                        lock_timeouts += 1;
                        ("lock_timeout", lock_retry_delay(lock_timeouts))
                    }
                    Outcome::Busy if started.elapsed() < self.settings.lock_wait => {
                        busy += 1;
                        (
                            "another session is inside a migration",
                            backoff(busy, Duration::from_secs(1)),
                        )
                    }
                    Outcome::Busy => {
                        return Err(Error::LockNotAcquired {
                            waited: started.elapsed(),
                        });
                    }
                    Outcome::Dirty => {
                        return Err(Error::Dirty {
                            migrations: vec![crate::error::DirtyMigration {
                                version: m.version.clone(),
                                name: m.name.clone(),
                                error: None,
                            }],
                        });
                    }
                    _ => {
                        log_outcome(m, &outcome);
                        return Ok(outcome);
                    }
                };
                warn!(reason, delay_ms = delay.as_millis() as u64, "retrying");
                progress.retrying(m, lock_timeouts + busy, delay, reason);
                tokio::time::sleep(delay).await;
            }
        }
        .instrument(span)
        .await
    }
}

/// Up to 1 s, 2 s, 4 s ... (capped at 30 s; each with jitter in its upper half) between tries
/// of a migration that hit its lock_timeout: the application's queries get the table between
/// tries.
fn lock_retry_delay(attempt: u32) -> Duration {
    let ceiling = Duration::from_secs(1)
        .saturating_mul(1 << attempt.saturating_sub(1).min(5))
        .min(Duration::from_secs(30));
    let half = ceiling / 2;
    half + half.mul_f64(rand::random::<f64>())
}

fn log_outcome(m: &Migration, outcome: &Outcome) {
    match outcome {
        Outcome::Applied {
            execution_time_ms,
            notices,
        } => {
            info!(execution_time_ms, "applied {}", m.name);
            for notice in notices {
                info!(notice = %notice, "{} said", m.name);
            }
        }
        Outcome::AlreadyApplied => info!("{} was applied by another runner", m.name),
        Outcome::Failed { failure } => {
            let SqlError {
                sqlstate,
                message,
                line,
                ..
            } = &failure.error;
            warn!(sqlstate, line, "{} failed: {message}", m.name)
        }
        Outcome::Busy | Outcome::Dirty | Outcome::LockLost => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_retries_wait_up_to_one_two_four_seconds() {
        for (attempt, ceiling) in [(1, 1000), (2, 2000), (3, 4000), (6, 30_000), (40, 30_000)] {
            let d = lock_retry_delay(attempt).as_millis() as u64;
            assert!(d >= ceiling / 2 && d <= ceiling, "{attempt}: {d} ms");
        }
    }
}
