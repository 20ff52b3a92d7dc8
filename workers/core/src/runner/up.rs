//! `up` and the steps that apply: the apply loop in order, one migration or a range (the
//! Lambda workers' steps), with its retries on `lock_timeout`.

use std::time::{Duration, Instant};

use sqlx::PgConnection;
use tracing::{info, info_span, warn, Instrument};

use super::{Applied, MigrationResult, Migrator, Progress, Quiet, UpReport};
use crate::apply::{self, Attempt, Commit, Direction, Outcome};
use crate::batch::{self, BatchEvent, BatchRun};
use crate::error::{Error, MigrationFailure, SqlError};
use crate::ledger::{BatchProgress, Ledger, LedgerSchema};
use crate::lock::{backoff, lock_retry_delay, MigrationLock};
use crate::migration::{Migration, Version};
use crate::plan::{Plan, Scope, State};

pub(super) fn log_outcome(m: &Migration, outcome: &Outcome) {
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

impl Migrator {
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
                report.left_to_another_runner = plan.left_to_another_runner();
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
            let mut paused_at: Option<(Version, BatchProgress)> = None;
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
                            report.left_to_another_runner = plan.left_to_another_runner();
                            let pending: Vec<&Migration> = plan
                                .pending()
                                .filter_map(|e| self.set.get(&e.version))
                                .collect();
                            match &paused_at {
                                None if report.results.is_empty() => report.pending = pending.len(),
                                None => {}
                                // The runner that went first may have finished the backfill,
                                // or rolled it back: its down ran, and its batches are gone
                                // from the ledger. Applied again here, the rollback would be
                                // undone without a word: the run stops, and says so.
                                Some((version, at)) if first => {
                                    let rolled_back = plan.entries.iter().any(|e| {
                                        &e.version == version
                                            && e.state == State::Pending
                                            && e.batches.is_none_or(|b| b.batches < at.batches)
                                    });
                                    if let (true, Some(m)) = (rolled_back, self.set.get(version)) {
                                        report.warnings.push(format!(
                                            "{} was rolled back by another runner while this run let go of the migration lock (after {} batch(es)): not applied again; run `up` again to apply it",
                                            m.name, at.batches
                                        ));
                                        return Ok(None);
                                    }
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
                // Its pause between batches is waited here, without the lock, when it is
                // longer than the moment a waiting runner needs.
                let mut away = crate::lock::HANDOVER;
                if let Some(m) = self.set.get(&version) {
                    progress.handing_over(m);
                    away = away.max(m.directives.pause.unwrap_or_default());
                }
                info!(
                    version = version.as_str(),
                    away_ms = away.as_millis() as u64,
                    "batch budget used: letting go of the migration lock"
                );
                tokio::time::sleep(away).await;
            }
            report.elapsed_ms = started.elapsed().as_millis() as u64;
            Ok(report)
        }
        .instrument(span)
        .await
    }

    /// An empty report of the run `run_id` on this database.
    pub(super) fn new_report(&self, run_id: &str) -> UpReport {
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
            left_to_another_runner: Vec::new(),
            elapsed_ms: 0,
        }
    }

    /// Records the failure that stopped a run (`up` or `down`) and puts it in its report. The
    /// migration's own error stays the run's error; a failure to record it goes beside it.
    pub(super) async fn record_run_failure(
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
    pub(super) async fn apply_in_order(
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

    /// Whether `m`, applied this way, yields the migration lock while it runs: a
    /// `no-transaction` migration of the after-deploy chain (see [`crate::lock`]), which may
    /// run after newer migrations anyway, so that a deploy is not held up by its build.
    pub(super) fn yields_lock(&self, m: &Migration, direction: Direction) -> bool {
        direction == Direction::Up && self.set.yields_lock_for_build(m)
    }

    /// Applies one migration; a lock timeout is retried with back-off (`lock_retries`), and
    /// a busy guard until the lock wait runs out.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn apply_with_retries(
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
