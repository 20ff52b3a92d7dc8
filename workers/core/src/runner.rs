//! The steps, wired to a database: status, plan, up, apply-one, record, resolve and the
//! ledger's maintenance. Each reads the ledger, plans with the pure planner and applies with
//! the applier; the CLI and the Lambda workers call these and only format the result.

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::PgConnection;
use tracing::{info, info_span, warn, Instrument};

use std::sync::OnceLock;

use crate::apply::{self, Attempt, Commit, Direction, Outcome};
use crate::batch::{self, BatchEvent, BatchReport, BatchRun};
use crate::config::Settings;
use crate::db::Database;
use crate::error::{Error, ErrorKind, MigrationFailure, SqlError};
use crate::ledger::{
    self, BatchProgress, EventKind, Ledger, LedgerKind, LedgerSchema, NewEvent, PartlyApplied,
};
use crate::lock::{backoff, MigrationLock};
use crate::migration::{Migration, MigrationSet, Version};
use crate::plan::{Plan, Scope, State};
use crate::rollback::{self, RollbackPlan, RollbackTarget};

/// Live progress of a run, for the human output of the CLI.
pub trait Progress {
    fn waiting_for_lock(&mut self) {}
    /// A migration's transaction is open in backend `pid` (a killed runner's, still running):
    /// the command waits for it to end before it reads the ledger as final.
    fn waiting_for_migration(&mut self, _pid: i32) {}
    /// A statement of this process waits for a lock that `holder` holds (or queues for ahead
    /// of it): told once per holder and relation, while the wait lasts.
    fn waiting_for_session(&mut self, _holder: &crate::lock::LockHolder) {}
    /// A batch migration used its time budget: the run lets go of the migration lock for a
    /// moment (a waiting runner goes first), then takes it again and goes on.
    fn handing_over(&mut self, _migration: &Migration) {}
    fn starting(&mut self, _index: usize, _total: usize, _migration: &Migration) {}
    fn retrying(&mut self, _migration: &Migration, _attempt: u32, _delay: Duration, _reason: &str) {
    }
    fn finished(&mut self, _index: usize, _total: usize, _result: &MigrationResult) {}
    /// A batch of a batch migration committed.
    fn batch(&mut self, _migration: &Migration, _report: &BatchReport) {}
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

/// What `up` (or `down`) did.
#[derive(Debug, Clone, Serialize)]
pub struct UpReport {
    pub run_id: String,
    pub database: String,
    /// How many migrations were pending (for `down`: to revert) when the run began (under
    /// the lock).
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
    /// The failed migration is a batch migration: the totals of its batches committed before
    /// the failure (they stay; the next run resumes after them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_progress: Option<BatchProgress>,
    /// The migration lock was lost: the run stopped before the next migration.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub lock_lost: bool,
    /// The deploy's own run (`--skip-after-deploy`): the pending migrations it left for the
    /// run after the deploy, by name.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deferred: Vec<String>,
    pub elapsed_ms: u64,
}

impl UpReport {
    pub fn applied(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Applied { .. }))
            .count()
    }

    pub fn rolled_back(&self) -> usize {
        self.results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::RolledBack { .. }))
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

/// The SQLSTATE of the `failed` event that `resolve --applied` records for a batch migration
/// whose down began while it was partly applied: partly applied again.
pub const RESOLVED_PARTLY_APPLIED_SQLSTATE: &str = "SM015";

/// How an operator resolved a dirty migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    Applied,
    NotApplied,
}

/// What a resolved migration is now: what the operator said, except that `--applied` on a
/// batch migration whose down began while it was partly applied makes it partly applied
/// again (never applied: its batches did not all run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolved {
    Applied,
    PartlyApplied,
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
    /// A build yielded the lock (see [`crate::lock`]) and more migrations were to follow:
    /// the loop stopped after it, and the caller plans again from the ledger as it is now.
    replan: bool,
}

/// What the ledger says a run did to one migration ([`Migrator::recorded_outcome`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordedOutcome {
    /// Applied, by the run `run_id` (another than the asking one if a runner was first).
    Applied {
        execution_time_ms: Option<i64>,
        run_id: Option<String>,
    },
    /// The run recorded this failure (its latest event).
    Failed(Box<MigrationFailure>),
    /// Started outside a transaction and never finished: dirty, no failure recorded.
    Dirty,
    NotApplied,
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

    /// The same migrator for a command that only reads the target (`status`, `plan`, `verify`
    /// on a scratch database): every session of it waits at most the `lock_timeout` for a
    /// lock, the ledger's reads included, instead of hanging behind a session that locked the
    /// ledger. `0` is no limit, as for the migrations.
    pub fn reading_only(self) -> Migrator {
        let db = self.db.with_session_setting(
            "lock_timeout",
            &crate::config::pg_interval(self.settings.lock_timeout),
        );
        Migrator::new(db, self.set, self.settings)
    }

    /// Runs `work` (commands on this migrator's database) watching the locks it waits for:
    /// every [`LOCK_WATCH_EVERY`] while it runs, each session in the way of one of this
    /// process's backends is told to `progress` (once per relation); and a `lock_timeout`
    /// that `work` hits names the sessions that held it ([`Error::LockWaitTimeout`]).
    pub async fn watching_locks<T>(
        &self,
        progress: &mut dyn Progress,
        work: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let mut work = std::pin::pin!(work);
        let mut told = std::collections::BTreeSet::new();
        let start = tokio::time::Instant::now() + LOCK_WATCH_EVERY;
        let mut tick = tokio::time::interval_at(start, LOCK_WATCH_EVERY);
        let result = loop {
            tokio::select! {
                r = &mut work => break r,
                _ = tick.tick() => {
                    // Seen from a session of its own; a failure to look is no failure of the work.
                    for holder in self.db.blockers(None).await.unwrap_or_default() {
                        if told.insert((holder.pid, holder.relation.clone())) {
                            info!(pid = holder.pid, relation = %holder.relation, "waiting for a lock");
                            progress.waiting_for_session(&holder);
                        }
                    }
                }
            }
        };
        match result {
            Err(Error::LockWaitTimeout {
                context, holders, ..
            }) => {
                let schema = self
                    .ledger_schema
                    .get()
                    .map(|s| s.name().to_owned())
                    .or_else(|| self.settings.ledger_schema.clone());
                let holders = if holders.is_empty() {
                    self.db
                        .blockers(schema.as_deref())
                        .await
                        .unwrap_or_default()
                } else {
                    holders
                };
                Err(Error::LockWaitTimeout {
                    context,
                    lock_timeout: Some(self.settings.lock_timeout),
                    holders,
                })
            }
            other => other,
        }
    }

    /// The plan of `scope` as it stands, without taking the lock or writing anything; made
    /// once no migration's transaction is open (see [`Migrator::settled_ledger`]).
    pub async fn plan(&self, scope: &Scope) -> Result<(Ledger, Plan), Error> {
        let mut conn = self.db.connect().await?;
        let (schema, ledger) = self.settled_ledger(&mut conn, &mut Quiet).await?;
        let mut plan = Plan::scoped(&self.set, &ledger, scope)?;
        plan.note_partly_applied(&partly_applied(&mut conn, &schema, &ledger).await?);
        Ok((ledger, plan))
    }

    /// The state as it stands, for `status`: read at once, never waiting; a migration's
    /// transaction open meanwhile (a runner at work, or a killed runner's backend that will
    /// still commit) is named in a warning, since the state shown may change when it ends.
    pub async fn status(&self) -> Result<(Ledger, Plan), Error> {
        let mut conn = self.db.connect().await?;
        let (schema, ledger) = self.read_ledger(&mut conn).await?;
        let mut plan = Plan::scoped(&self.set, &ledger, &Scope::default())?;
        plan.note_partly_applied(&partly_applied(&mut conn, &schema, &ledger).await?);
        if ledger.kind != LedgerKind::Missing {
            if let Some(pid) = crate::lock::migration_in_flight(&mut conn, &schema).await? {
                plan.warnings.push(format!(
                    "a migration's transaction is open in backend {pid} right now (a runner at work, or a killed one whose statement runs on): this state may change when it ends"
                ));
            }
        }
        Ok((ledger, plan))
    }

    /// The ledger once no session is inside a migration's transaction on it (waiting up to
    /// the lock wait): what a plan may be made from. See
    /// [`crate::lock::wait_for_migration_in_flight`].
    pub(crate) async fn settled_ledger(
        &self,
        conn: &mut PgConnection,
        progress: &mut dyn Progress,
    ) -> Result<(LedgerSchema, Ledger), Error> {
        let schema = self.ledger_schema(conn).await?;
        crate::lock::wait_for_migration_in_flight(conn, &schema, self.settings.lock_wait, |pid| {
            progress.waiting_for_migration(pid)
        })
        .await?;
        let ledger = ledger::read(conn, &schema).await?;
        Ok((schema, ledger))
    }

    /// Applies the pending migrations of `scope` in order, stopping at the first failure
    /// (which is recorded before this returns).
    pub async fn up(
        &self,
        scope: &Scope,
        run_id: &str,
        progress: &mut dyn Progress,
    ) -> Result<UpReport, Error> {
        let span = info_span!("run", run_id, database = %self.db);
        async {
            let started = Instant::now();
            let mut report = self.new_report(run_id);
            self.set.ensure_sum_current()?;
            let mut conn = self.db.connect().await?;
            // Settled first: "up to date" must not be read from a ledger that a killed
            // runner's backend (an `up`'s or a `down`'s) is about to change.
            let (schema, ledger) = self.settled_ledger(&mut conn, progress).await?;
            let plan = Plan::scoped(&self.set, &ledger, scope)?;
            // A dirty row seen without the lock may be a migration another runner is running
            // right now: only the plan made under the lock may call it dirty.
            if plan.count(State::Dirty) == 0 {
                plan.ensure_applicable(self.settings.allow_out_of_order)?;
            }
            if plan.pending().next().is_none()
                && plan.count(State::Dirty) == 0
                && ledger.is_current()
            {
                // Nothing to do: no lock, no write.
                report.deferred = plan.deferred().map(|e| e.name.clone()).collect();
                report.warnings = plan.warnings;
                report.elapsed_ms = started.elapsed().as_millis() as u64;
                return Ok(report);
            }

            // A batch migration holds the lock for at most a budget at a time: past it, the
            // run lets go between two batches, so that a runner waiting for the lock (the
            // next deploy's) is not held off by a backfill; then it takes the lock again,
            // plans again (that runner may have applied anything meanwhile, the backfill
            // included) and goes on where the events say.
            let mut seen = Some(ledger);
            let mut budget = self.settings.batch_budget;
            let mut paused_at = None;
            loop {
                let seen_now = match seen.take() {
                    Some(ledger) => ledger,
                    None => self.read_ledger(&mut conn).await?.1,
                };
                let lock = self.lock(&schema, progress).await?;
                let paused = lock
                    .hold(async |lock| {
                        // An after-deploy build that yielded the lock asks for a new plan
                        // once it is recorded: the ledger may have moved meanwhile.
                        let mut seen = seen_now;
                        let mut first = true;
                        loop {
                            let plan = self
                                .prepare_locked(&mut conn, &schema, seen, scope, run_id)
                                .await?;
                            report.warnings = plan.warnings.clone();
                            report.deferred = plan.deferred().map(|e| e.name.clone()).collect();
                            let pending: Vec<&Migration> = plan
                                .pending()
                                .filter_map(|e| self.set.get(&e.version))
                                .collect();
                            match &paused_at {
                                None if report.results.is_empty() => report.pending = pending.len(),
                                None => {}
                                // The runner that went first may have finished the backfill.
                                Some((version, _)) if first => {
                                    let finished = plan.entries.iter().any(|e| {
                                        &e.version == version && e.state == State::Applied
                                    });
                                    if let (true, Some(m)) = (finished, self.set.get(version)) {
                                        report.results.push(MigrationResult {
                                            version: version.clone(),
                                            name: m.name.clone(),
                                            outcome: Outcome::AlreadyApplied,
                                        });
                                    }
                                }
                                Some(_) => {}
                            }
                            first = false;
                            info!(pending = pending.len(), "planned");

                            let applied = self
                                .apply_in_order(
                                    &mut conn,
                                    &schema,
                                    lock,
                                    &pending,
                                    |_| false,
                                    Direction::Up,
                                    run_id,
                                    Some(Instant::now() + budget),
                                    progress,
                                )
                                .await?;
                            let mut results = applied.results;
                            let paused = match results.last() {
                                Some(MigrationResult {
                                    version,
                                    outcome: Outcome::Unfinished { progress: at },
                                    ..
                                }) => Some((version.clone(), *at)),
                                _ => None,
                            };
                            if paused.is_some() {
                                results.pop();
                            }
                            report.results.extend(results);
                            report.lock_lost = applied.lock_lost;
                            if let Some(failure) = applied.failure {
                                let migration = self.set.get(&failure.version);
                                if migration.is_some_and(Migration::is_batch) {
                                    report.failure_progress = self
                                        .committed_progress(&mut conn, &schema, &failure.version)
                                        .await;
                                }
                                let checksum = migration.map(|m| m.checksum.as_str());
                                self.record_run_failure(
                                    &mut conn,
                                    &schema,
                                    &mut report,
                                    failure,
                                    checksum,
                                    run_id,
                                )
                                .await;
                                return Ok(None);
                            }
                            if paused.is_some() || !applied.replan {
                                return Ok(paused);
                            }
                            seen = Ledger::empty();
                        }
                    })
                    .await?;
                let Some((version, at)) = paused else {
                    break;
                };
                // A budget that ended before a batch could run (the migrations before it took
                // it all) is doubled for the next turn: every turn moves the backfill on.
                budget = if paused_at == Some((version.clone(), at)) {
                    budget.saturating_mul(2)
                } else {
                    self.settings.batch_budget
                };
                paused_at = Some((version.clone(), at));
                if let Some(m) = self.set.get(&version) {
                    progress.handing_over(m);
                }
                info!(
                    version = version.as_str(),
                    "batch budget used: letting go of the migration lock for a moment"
                );
                tokio::time::sleep(crate::lock::HANDOVER).await;
            }
            report.elapsed_ms = started.elapsed().as_millis() as u64;
            Ok(report)
        }
        .instrument(span)
        .await
    }

    /// An empty report of the run `run_id` on this database.
    fn new_report(&self, run_id: &str) -> UpReport {
        UpReport {
            run_id: run_id.to_owned(),
            database: self.db.to_string(),
            pending: 0,
            results: Vec::new(),
            warnings: Vec::new(),
            failure: None,
            record_error: None,
            failure_progress: None,
            lock_lost: false,
            deferred: Vec::new(),
            elapsed_ms: 0,
        }
    }

    /// Records the failure that stopped a run (`up` or `down`) and puts it in its report. The
    /// migration's own error stays the run's error; a failure to record it goes beside it.
    async fn record_run_failure(
        &self,
        conn: &mut PgConnection,
        schema: &LedgerSchema,
        report: &mut UpReport,
        failure: Box<MigrationFailure>,
        checksum: Option<&str>,
        run_id: &str,
    ) {
        if let Err(e) = self
            .record_with(conn, schema, &failure, checksum, run_id)
            .await
        {
            warn!(error = %e, "could not record the failure of {}", failure.name);
            report.record_error = Some(e.to_string());
        }
        report.failure = Some(failure);
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
        direction: Direction,
        run_id: &str,
        deadline: Option<Instant>,
        progress: &mut dyn Progress,
    ) -> Result<Applied, Error> {
        let mut end = Applied {
            results: Vec::with_capacity(migrations.len()),
            failure: None,
            lock_lost: false,
            replan: false,
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
                self.apply_with_retries(
                    conn, schema, lock, m, direction, run_id, commit, deadline, progress,
                )
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
            // A batch migration out of time: what follows it waits for the next run.
            let unfinished = matches!(result.outcome, Outcome::Unfinished { .. });
            // Other runners went on while the build ran: what follows is planned again.
            end.replan = matches!(result.outcome, Outcome::Applied { .. })
                && self.yields_lock(m, direction)
                && index + 1 < migrations.len();
            end.results.push(result);
            if end.failure.is_some() || unfinished || end.replan {
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
        self.apply_range_until(first, last, run_id, None).await
    }

    /// [`Migrator::apply_range`] within a time budget: a batch migration stops before a
    /// batch that would end after `deadline`, as [`Outcome::Unfinished`] (the last result;
    /// nothing after it ran).
    pub async fn apply_range_until(
        &self,
        first: &Version,
        last: &Version,
        run_id: &str,
        deadline: Option<Instant>,
    ) -> Result<Vec<MigrationResult>, Error> {
        self.apply_range_observed(first, last, run_id, deadline, &mut Quiet)
            .await
    }

    /// [`Migrator::apply_range_until`], telling `progress` what happens (each committed batch
    /// of a batch migration, with this run's batches and rows: what the apply-one worker
    /// reports as one invocation's work).
    pub async fn apply_range_observed(
        &self,
        first: &Version,
        last: &Version,
        run_id: &str,
        deadline: Option<Instant>,
        progress: &mut dyn Progress,
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
                let mut seen = ledger;
                let mut results = Vec::new();
                loop {
                    let rest = &range[results.len()..];
                    let plan = self
                        .prepare_locked(&mut conn, &schema, seen, &Scope::default(), run_id)
                        .await?;
                    // The database's guard refuses the one in progress (it is dirty), but not
                    // what requires it: that waits for the runner building it.
                    if let Some(e) = plan.entries.iter().find(|e| {
                        (e.state == State::InProgress || e.waits_for_build)
                            && rest.iter().any(|m| m.version == e.version)
                    }) {
                        return Err(Error::BuildInProgress {
                            name: e.name.clone(),
                            waits: e.waits_for_build,
                        });
                    }
                    if let Some(blocker) = plan.blocker_before(&rest[0].version) {
                        return Err(Error::InvalidInput(format!(
                            "{} cannot run before {}, which is pending",
                            rest[0].name, blocker.name
                        )));
                    }
                    let applied = |m: &Migration| {
                        plan.entries
                            .iter()
                            .any(|e| e.version == m.version && e.state == State::Applied)
                    };
                    let mut end = self
                        .apply_in_order(
                            &mut conn,
                            &schema,
                            lock,
                            rest,
                            applied,
                            Direction::Up,
                            run_id,
                            deadline,
                            progress,
                        )
                        .await?;
                    results.append(&mut end.results);
                    if !end.replan {
                        end.results = results;
                        return Ok(end);
                    }
                    seen = Ledger::empty();
                }
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

    /// What the ledger says run `run_id` did to the migration `version`: how a runner that
    /// cannot answer for itself (the ECS task of a long migration) is heard. Applied, or a
    /// failure of the run, is final. Neither is read again under the migration lock: a runner
    /// still at work (a task started by a retried RunTask that nobody watches) holds it, and
    /// the answer waits for it (`LockNotAcquired` past the lock wait); one that yielded it for
    /// an after-deploy build holds that migration's build lock instead (`BuildInProgress`,
    /// retried like a lock wait).
    pub async fn recorded_outcome(
        &self,
        version: &Version,
        run_id: &str,
    ) -> Result<RecordedOutcome, Error> {
        let outcome = self.read_outcome(version, run_id).await?;
        if !matches!(
            outcome,
            RecordedOutcome::NotApplied | RecordedOutcome::Dirty
        ) {
            return Ok(outcome);
        }
        let mut conn = self.db.connect().await?;
        let schema = self.ledger_schema(&mut conn).await?;
        self.lock(&schema, &mut Quiet)
            .await?
            .hold(async |_| self.read_outcome(version, run_id).await)
            .await
    }

    async fn read_outcome(
        &self,
        version: &Version,
        run_id: &str,
    ) -> Result<RecordedOutcome, Error> {
        let mut conn = self.db.connect().await?;
        let (schema, ledger) = self.read_ledger(&mut conn).await?;
        // No ledger yet (a task that never started on a fresh database): nothing recorded.
        if ledger.kind != LedgerKind::EventSourced {
            return Ok(RecordedOutcome::NotApplied);
        }
        let row = ledger
            .migration_rows()
            .find(|r| Version::parse(&r.version).is_some_and(|v| v.number() == version.number()));
        if let Some(row) = row.filter(|r| r.success) {
            return Ok(RecordedOutcome::Applied {
                execution_time_ms: row.execution_time_ms,
                run_id: row.run_id.clone(),
            });
        }
        let migration = self.set.get(version);
        let name = migration.map_or_else(|| version.to_string(), |m| m.name.clone());
        if let Some((error, dirty, notices)) =
            ledger::run_failure(&mut conn, &schema, version.as_str(), run_id).await?
        {
            return Ok(RecordedOutcome::Failed(Box::new(MigrationFailure {
                version: version.clone(),
                name,
                file: migration.map(|m| m.path.clone()).unwrap_or_default(),
                transactional: migration.is_none_or(|m| m.transactional()),
                dirty,
                error,
                notices,
                rollback: false,
                recorded: true,
            })));
        }
        // A runner at work that yielded the migration lock for its build (see
        // [`crate::lock`]) is still at work: the answer waits for it, as for one holding the lock.
        if let Some(row) = row.filter(|r| ledger.in_progress.contains(&r.version)) {
            return Err(Error::BuildInProgress {
                name: row.name.clone(),
                waits: false,
            });
        }
        Ok(if row.is_some_and(|r| r.dirty) {
            RecordedOutcome::Dirty
        } else {
            RecordedOutcome::NotApplied
        })
    }

    /// The batches of a batch migration committed before it failed, read from its events on
    /// `conn`, or on a new connection when that one broke with the batch (a terminated
    /// backend). `None` when neither can read them: the failure itself is what matters then.
    async fn committed_progress(
        &self,
        conn: &mut PgConnection,
        schema: &LedgerSchema,
        version: &Version,
    ) -> Option<BatchProgress> {
        if let Ok((progress, _)) = batch::recorded_progress(conn, schema, version.as_str()).await {
            return Some(progress);
        }
        let mut fresh = self.db.connect().await.ok()?;
        batch::recorded_progress(&mut fresh, schema, version.as_str())
            .await
            .ok()
            .map(|(progress, _)| progress)
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
        progress: &mut dyn Progress,
    ) -> Result<(String, Resolved), Error> {
        let mut conn = self.db.connect().await?;
        let schema = self.ledger_schema(&mut conn).await?;
        let lock = self.lock(&schema, progress).await?;
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
            if ledger.in_progress.contains(&row.version) {
                return Err(Error::InvalidInput(format!(
                    "a session still runs a statement of {} (a runner at work, or a killed runner's backend running on; it holds the migration's build lock): there is nothing to resolve until it ends",
                    row.name
                )));
            }
            // A batch migration whose down began while it was partly applied was never
            // applied: "as it was before its down" is partly applied, which a `failed` event
            // records (its committed batches stay counted; `up` resumes, `down` reverts).
            let partly = match (resolution, row.event_id) {
                (Resolution::Applied, Some(event)) => {
                    ledger::down_of_an_unapplied_migration(&mut conn, &schema, event).await?
                }
                _ => false,
            };
            let back_to_partly = SqlError {
                sqlstate: RESOLVED_PARTLY_APPLIED_SQLSTATE.to_owned(),
                message: "resolved by hand: its down did not take effect, and it is partly applied as before it (its committed batches stay)".to_owned(),
                ..SqlError::default()
            };
            let (kind, error) = match resolution {
                Resolution::Applied if partly => (EventKind::Failed, Some(&back_to_partly)),
                Resolution::Applied => (EventKind::ResolvedApplied, None),
                Resolution::NotApplied => (EventKind::ResolvedNotApplied, None),
            };
            let event = NewEvent {
                run_id,
                version: &row.version,
                name: &row.name,
                kind,
                checksum: row.checksum.as_deref(),
                execution_time_ms: None,
                dirty: false,
                error,
                notices: &[],
                down: None,
                progress: None,
            };
            if partly {
                // With its error, and the totals its committed batches reached.
                ledger::record_failure(&mut conn, &schema, &event).await?;
            } else {
                ledger::append(&mut conn, &schema, &event).await?;
            }
            let resolved = match resolution {
                Resolution::Applied if partly => Resolved::PartlyApplied,
                Resolution::Applied => Resolved::Applied,
                Resolution::NotApplied => Resolved::NotApplied,
            };
            Ok((row.name, resolved))
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
    pub async fn ledger_rebuild(
        &self,
        run_id: &str,
        progress: &mut dyn Progress,
    ) -> Result<u64, Error> {
        let mut conn = self.db.connect().await?;
        let (schema, ledger) = self.read_ledger(&mut conn).await?;
        self.lock(&schema, progress)
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
        scope: &Scope,
        run_id: &str,
    ) -> Result<Plan, Error> {
        let ledger = self.ledger_locked(conn, schema, &seen, run_id).await?;
        let plan = Plan::scoped(&self.set, &ledger, scope)?;
        plan.ensure_applicable(self.settings.allow_out_of_order)?;
        Ok(plan)
    }

    /// Under the lock: the ledger, installed or upgraded first if needed.
    async fn ledger_locked(
        &self,
        conn: &mut PgConnection,
        schema: &LedgerSchema,
        seen: &Ledger,
        run_id: &str,
    ) -> Result<Ledger, Error> {
        // Under the lock, a session inside a migration's transaction is a runner that lost
        // its lock (killed, interrupted): its commit would void a plan made now.
        crate::lock::wait_for_migration_in_flight(conn, schema, self.settings.lock_wait, |_| {})
            .await?;
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
        Ok(ledger)
    }

    /// Whether `m`, applied this way, yields the migration lock while it runs: a
    /// `no-transaction` migration of the after-deploy chain (see [`crate::lock`]), which may
    /// run after newer migrations anyway, so that a deploy is not held up by its build.
    fn yields_lock(&self, m: &Migration, direction: Direction) -> bool {
        direction == Direction::Up && self.set.yields_lock_for_build(m)
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
        direction: Direction,
        run_id: &str,
        commit: Commit,
        deadline: Option<Instant>,
        progress: &mut dyn Progress,
    ) -> Result<Outcome, Error> {
        let span = match direction {
            Direction::Up => {
                info_span!("migration", version = m.version.as_str(), name = %m.name, transactional = m.transactional())
            }
            Direction::Down => {
                info_span!("revert", version = m.version.as_str(), name = %m.name, transactional = m.transactional())
            }
        };
        async {
            let previous = match direction {
                Direction::Up => self.set.predecessor(&m.version).map(|p| &p.version),
                Direction::Down => None,
            };
            let started = Instant::now();
            let mut lock_timeouts = 0u32;
            let mut busy = 0u32;
            loop {
                let mut attempt = Attempt::new(
                    m,
                    previous,
                    run_id,
                    schema,
                    Some(lock.backend_pid()),
                    &self.settings,
                    commit,
                );
                attempt.direction = direction;
                if self.yields_lock(m, direction) {
                    attempt.yield_lock = Some(lock);
                }
                let outcome = if m.is_batch() && direction == Direction::Up {
                    // Its own lock_timeout retries, batch by batch.
                    lock_timeouts = self.settings.lock_retries;
                    let mut observe = |event: BatchEvent<'_>| match event {
                        BatchEvent::Committed(report) => progress.batch(m, report),
                        BatchEvent::Retrying { attempt, delay } => {
                            progress.retrying(m, attempt, delay, "lock_timeout")
                        }
                    };
                    batch::run(
                        conn,
                        &attempt,
                        BatchRun {
                            deadline,
                            lock_retries: self.settings.lock_retries,
                            observe: &mut observe,
                        },
                    )
                    .await?
                } else {
                    // A long index build's progress goes to the log while it runs.
                    let _watcher =
                        if !m.transactional() && crate::index_build::builds_indexes(&m.sql) {
                            let pid = crate::index_build::backend_pid(conn).await?;
                            Some(crate::index_build::watch(
                                &self.db,
                                pid,
                                self.settings.progress_interval,
                            ))
                        } else {
                            None
                        };
                    apply::apply(conn, &attempt).await?
                };
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
                                still_running: false,
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

/// Rollback: `down` and the rollback execution's steps.
impl Migrator {
    /// The rollback as it stands, without taking the lock or writing anything: refused as
    /// the rollback itself would be (a stale `migrations.sum` too), so a dry run and the
    /// confirmation show what `down` would do.
    pub async fn rollback_plan(
        &self,
        target: &RollbackTarget,
        use_file: bool,
    ) -> Result<RollbackPlan, Error> {
        self.set.ensure_sum_current()?;
        let mut conn = self.db.connect().await?;
        let (schema, ledger) = self.settled_ledger(&mut conn, &mut Quiet).await?;
        self.plan_rollback(&mut conn, &schema, &ledger, target, use_file)
            .await
    }

    async fn plan_rollback(
        &self,
        conn: &mut PgConnection,
        schema: &LedgerSchema,
        ledger: &Ledger,
        target: &RollbackTarget,
        use_file: bool,
    ) -> Result<RollbackPlan, Error> {
        let applied: Vec<String> = ledger
            .migration_rows()
            .filter(|r| r.success)
            .map(|r| r.version.clone())
            .collect();
        let recorded = if ledger.kind == LedgerKind::EventSourced {
            ledger::recorded_downs(conn, schema, &applied).await?
        } else {
            Default::default()
        };
        let partly = partly_applied(conn, schema, ledger).await?;
        rollback::plan(&self.set, ledger, &recorded, &partly, target, use_file)
    }

    /// Reverts applied migrations, newest applied first, each with its down script under the
    /// lock, in one transaction with its `rolled_back` event (or, outside a transaction,
    /// between `rollback_started` and its outcome). Stops at the first failure, which is
    /// recorded before this returns. Refusals come before anything runs.
    pub async fn down(
        &self,
        target: &RollbackTarget,
        use_file: bool,
        run_id: &str,
        progress: &mut dyn Progress,
    ) -> Result<UpReport, Error> {
        let planned = self.rollback_plan(target, use_file).await?;
        self.down_planned(&planned, use_file, run_id, progress)
            .await
    }

    /// Carries out a rollback planned (and shown, or confirmed) earlier: under the lock, the
    /// planned migrations still applied (another runner may have reverted some meanwhile),
    /// refused if any migration was applied since the plan was made.
    pub async fn down_planned(
        &self,
        planned: &RollbackPlan,
        use_file: bool,
        run_id: &str,
        progress: &mut dyn Progress,
    ) -> Result<UpReport, Error> {
        let span = info_span!("rollback", run_id, database = %self.db);
        async {
            let started = Instant::now();
            let mut report = UpReport {
                warnings: planned.warnings.clone(),
                ..self.new_report(run_id)
            };
            self.set.ensure_sum_current()?;
            if planned.reverts.is_empty() {
                report.elapsed_ms = started.elapsed().as_millis() as u64;
                return Ok(report);
            }
            let mut conn = self.db.connect().await?;
            let (schema, seen) = self.read_ledger(&mut conn).await?;
            let only =
                RollbackTarget::Only(planned.reverts.iter().map(|r| r.version.clone()).collect());
            let lock = self.lock(&schema, progress).await?;
            lock.hold(async |lock| {
                let ledger = self
                    .ledger_locked(&mut conn, &schema, &seen, run_id)
                    .await?;
                rollback::ensure_nothing_applied_since(&ledger, planned.seen_event)?;
                let plan = self
                    .plan_rollback(&mut conn, &schema, &ledger, &only, use_file)
                    .await?;
                report.pending = plan.reverts.len();
                info!(to_revert = plan.reverts.len(), "planned the rollback");
                let end = self
                    .revert_in_order(&mut conn, &schema, lock, &plan, run_id, progress)
                    .await?;
                report.results = end.results;
                report.lock_lost = end.lock_lost;
                if let Some(failure) = end.failure {
                    self.record_run_failure(&mut conn, &schema, &mut report, failure, None, run_id)
                        .await;
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

    async fn revert_in_order(
        &self,
        conn: &mut PgConnection,
        schema: &LedgerSchema,
        lock: &MigrationLock,
        plan: &RollbackPlan,
        run_id: &str,
        progress: &mut dyn Progress,
    ) -> Result<Applied, Error> {
        let scripts: Vec<Migration> = plan.reverts.iter().map(|r| r.as_migration()).collect();
        let scripts: Vec<&Migration> = scripts.iter().collect();
        self.apply_in_order(
            conn,
            schema,
            lock,
            &scripts,
            |_| false,
            Direction::Down,
            run_id,
            None,
            progress,
        )
        .await
    }

    /// The revert-one step of a rollback execution: under the lock, reverts `version` if it is
    /// still applied (one reverted by another runner is reported so), refused if a migration
    /// was applied since the plan (`planned_event`: its [`RollbackPlan::seen_event`]). A failure is returned as
    /// the error, not recorded (the record step does).
    pub async fn revert_one(
        &self,
        version: &Version,
        planned_event: Option<i64>,
        run_id: &str,
    ) -> Result<MigrationResult, Error> {
        let mut conn = self.db.connect().await?;
        let (schema, seen) = self.read_ledger(&mut conn).await?;
        let lock = self.lock(&schema, &mut Quiet).await?;
        let end = lock
            .hold(async |lock| {
                let ledger = self
                    .ledger_locked(&mut conn, &schema, &seen, run_id)
                    .await?;
                let only = RollbackTarget::Only(vec![version.clone()]);
                let plan = self
                    .plan_rollback(&mut conn, &schema, &ledger, &only, false)
                    .await?;
                rollback::ensure_nothing_applied_since(&ledger, planned_event)?;
                self.revert_in_order(&mut conn, &schema, lock, &plan, run_id, &mut Quiet)
                    .await
            })
            .await?;
        if end.lock_lost {
            return Err(Error::LockLost { applied: 0 });
        }
        if let Some(failure) = end.failure {
            return Err(Error::MigrationFailed { failure });
        }
        Ok(end.results.into_iter().next().unwrap_or(MigrationResult {
            version: version.clone(),
            name: self
                .set
                .get(version)
                .map_or_else(|| version.to_string(), |m| m.name.clone()),
            outcome: Outcome::AlreadyRolledBack,
        }))
    }
}

/// The batch migrations that are partly applied ([`PartlyApplied`]): each version with `batch`
/// events and no applied row, with its totals as [`batch::recorded_progress`] reads them
/// (none since it was last made pending from scratch: not partly applied).
pub async fn partly_applied(
    conn: &mut PgConnection,
    schema: &LedgerSchema,
    ledger: &Ledger,
) -> Result<Vec<PartlyApplied>, Error> {
    if ledger.kind != LedgerKind::EventSourced {
        return Ok(Vec::new());
    }
    let latest: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(&format!(
        "SELECT DISTINCT ON (version) version::text, name::text, checksum::text, id FROM {}
         WHERE kind = 'batch' ORDER BY version, id DESC",
        schema.qualify("schema_migration_events")
    ))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::database("reading the batch migrations' progress", e))?;
    let mut partly = Vec::new();
    for (version, name, checksum, event_id) in latest {
        let applied = ledger
            .migration_rows()
            .any(|r| r.version == version && r.success);
        if applied {
            continue;
        }
        let (progress, _) = batch::recorded_progress(conn, schema, &version).await?;
        if progress.batches > 0 {
            partly.push(PartlyApplied {
                version,
                name,
                checksum,
                progress,
                event_id,
            });
        }
    }
    Ok(partly)
}

/// How often a command watching its lock waits ([`Migrator::watching_locks`]) looks for the
/// sessions in its way: the first look comes after this long, so a wait of a moment says
/// nothing.
pub const LOCK_WATCH_EVERY: Duration = Duration::from_millis(1500);

/// Up to 1 s, 2 s, 4 s ... (capped at 30 s; each with jitter in its upper half) between tries
/// of a migration that hit its lock_timeout: the application's queries get the table between
/// tries.
pub(crate) fn lock_retry_delay(attempt: u32) -> Duration {
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
            ..
        } => {
            info!(execution_time_ms, "applied {}", m.name);
            for notice in notices {
                info!(notice = %notice, "{} said", m.name);
            }
        }
        Outcome::AlreadyApplied => info!("{} was applied by another runner", m.name),
        Outcome::RolledBack {
            execution_time_ms,
            notices,
        } => {
            info!(execution_time_ms, "rolled back {}", m.name);
            for notice in notices {
                info!(notice = %notice, "{} said", m.name);
            }
        }
        Outcome::AlreadyRolledBack => info!("{} was rolled back by another runner", m.name),
        Outcome::Failed { failure } => {
            let SqlError {
                sqlstate,
                message,
                line,
                ..
            } = &failure.error;
            warn!(sqlstate, line, "{} failed: {message}", m.name)
        }
        Outcome::Unfinished { progress } => info!(
            batches = progress.batches,
            rows = progress.rows,
            "{} is not finished: its time budget ran out; the next run resumes it",
            m.name
        ),
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
