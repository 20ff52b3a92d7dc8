//! The apply-one worker: an item's migrations applied in one invocation, a batch migration's
//! loop of invocations (each within a time budget, bounded by its share of the history
//! budget), the ECS task's run of a long migration, and the worker's one entry point.

use std::time::{Duration, Instant};

use super::contracts::{ApplyOneOutput, ApplyOneRequest, ApplyOutput, ApplyRequest, BatchLoop};
use super::revert::revert_one;
use super::task::{one_migration, task_outcome};
use super::verify::verify;
use crate::apply::Outcome;
use crate::error::Error;
use crate::ledger::BatchProgress;
use crate::metrics::{Metric, MetricLine};
use crate::runner::Migrator;

/// How the apply-one worker runs a batch migration (its environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSettings {
    /// `STEPMIGRATE_BATCH_BUDGET`: an invocation's time budget, below what the deadline
    /// leaves ([`batch_budget`]).
    pub budget: Option<Duration>,
    /// `STEPMIGRATE_BATCH_WAIT`: the definition's wait between invocations.
    pub wait: Duration,
}

impl Default for BatchSettings {
    fn default() -> BatchSettings {
        BatchSettings {
            budget: None,
            wait: DEFAULT_BATCH_WAIT,
        }
    }
}

/// What an invocation keeps of its Lambda deadline after its batches: answering, and a
/// batch that takes longer than the last one did.
pub const BATCH_DEADLINE_MARGIN: Duration = Duration::from_secs(30);
/// An invocation's budget with neither a deadline nor `STEPMIGRATE_BATCH_BUDGET`.
pub const DEFAULT_BATCH_BUDGET: Duration = Duration::from_secs(600);
pub const DEFAULT_BATCH_WAIT: Duration = Duration::from_secs(5);
/// The longest `STEPMIGRATE_BATCH_WAIT` accepted: the definition's BatchWait (a Wait state,
/// which takes no TimeoutSeconds) waits no longer.
pub const MAX_BATCH_WAIT: Duration = Duration::from_secs(15 * 60);

/// A batch migration fails with `BatchStalled` after this many invocations in a row that
/// changed no row.
pub const STALL_INVOCATIONS: u32 = 3;

/// The time one invocation runs batches: what the invocation has left (`remaining`) less
/// [`BATCH_DEADLINE_MARGIN`] (half of it when that leaves less than the margin itself), and
/// at most `configured`.
pub fn batch_budget(remaining: Option<Duration>, configured: Option<Duration>) -> Duration {
    let from_deadline = remaining.map(|r| {
        if r > BATCH_DEADLINE_MARGIN * 2 {
            r - BATCH_DEADLINE_MARGIN
        } else {
            r / 2
        }
    });
    match (from_deadline, configured) {
        (Some(d), Some(c)) => d.min(c),
        (Some(d), None) => d,
        (None, Some(c)) => c,
        (None, None) => DEFAULT_BATCH_BUDGET,
    }
}

/// The loop after an invocation that ended `done` (or not) at `progress`, having changed
/// `run_rows` rows: one more invocation, stalled once more if it changed none. An
/// unfinished migration that stalled [`STALL_INVOCATIONS`] times in a row is `BatchStalled`;
/// one that used `max_invocations` (its share of this execution's history budget) continues
/// in a new execution ([`BatchLoop::continue_execution`]): a backfill of any length ends.
pub fn next_loop(
    previous: Option<&BatchLoop>,
    name: &str,
    done: bool,
    progress: BatchProgress,
    run_rows: u64,
    max_invocations: Option<u32>,
    wait: Duration,
) -> Result<BatchLoop, Error> {
    let previous = previous.copied().unwrap_or_default();
    let next = BatchLoop {
        done,
        progress,
        invocations: previous.invocations.saturating_add(1),
        stalled: if !done && run_rows == 0 {
            previous.stalled + 1
        } else {
            0
        },
        wait_seconds: wait.as_millis().div_ceil(1000) as u64,
        continue_execution: false,
    };
    if done {
        return Ok(next);
    }
    if next.stalled >= STALL_INVOCATIONS {
        return Err(Error::BatchStalled {
            name: name.to_owned(),
            invocations: next.stalled,
            batches: progress.batches,
            rows: progress.rows,
        });
    }
    if max_invocations.is_some_and(|max| next.invocations >= max) {
        tracing::info!(
            invocations = next.invocations,
            batches = progress.batches,
            rows = progress.rows,
            "{name}: this execution's share of the history budget is used: it continues in a new execution"
        );
        return Ok(BatchLoop {
            continue_execution: true,
            ..next
        });
    }
    Ok(next)
}

/// What one invocation did to a batch migration: the last committed batch's report of this
/// run's batches and rows.
#[derive(Default)]
struct BatchObserver {
    batches: u64,
    rows: u64,
}

impl crate::runner::Progress for BatchObserver {
    fn batch(
        &mut self,
        _migration: &crate::migration::Migration,
        report: &crate::batch::BatchReport,
    ) {
        self.batches = report.run_batches;
        self.rows = report.run_rows;
    }
}

/// The apply-one step. A failed migration is an error (`SqlFailed`, or `LockTimeout` to be
/// retried) whose message carries the failure, for the record step. A batch item runs
/// batches until its time budget ([`batch_budget`] of `remaining`, the invocation's time
/// left) and answers `done: false` with its progress when batches are left.
#[tracing::instrument(name = "apply_one", skip_all, fields(execution = %request.execution, run_id = %request.run_id, first = %request.range.first, last = %request.range.last))]
pub async fn apply_one(
    migrator: &Migrator,
    request: ApplyRequest,
    batch: &BatchSettings,
    remaining: Option<Duration>,
) -> Result<ApplyOutput, Error> {
    if request.range.batch {
        check_batch_digest(migrator, &request)?;
        return apply_batch(migrator, request, batch, remaining).await;
    }
    check_digest(migrator, &request.set_digest)?;
    let results = migrator
        .apply_range(&request.range.first, &request.range.last, &request.run_id)
        .await?;
    applied_metrics(migrator, &results, &request.run_id);
    Ok(ApplyOutput::of(results))
}

/// The ECS task's step (apply-one's task mode, [`crate::lambda::run_task`]): the item's
/// migrations applied as [`apply_one`] would, with no deadline (a batch migration runs all
/// its batches). A failure is recorded in the ledger here, in the run's name: `runTask.sync`
/// hands Step Functions the container's end, not the error, so `TaskOutcome` reads it there
/// (and Record, handed it, does not record it again).
#[tracing::instrument(name = "apply_task", skip_all, fields(execution = %request.execution, run_id = %request.run_id, first = %request.range.first, last = %request.range.last))]
pub async fn apply_task(
    migrator: &Migrator,
    request: ApplyRequest,
) -> Result<Vec<crate::runner::MigrationResult>, Error> {
    check_digest(migrator, &request.set_digest)?;
    one_migration(&request.range)?;
    let applied = migrator
        .apply_range(&request.range.first, &request.range.last, &request.run_id)
        .await;
    match applied {
        Ok(results) => {
            for r in &results {
                tracing::info!(version = %r.version, outcome = ?r.outcome, "{}: done", r.name);
            }
            Ok(results)
        }
        Err(e) => {
            if let Some(failure) = e.report().details.migration {
                if let Err(not_recorded) = migrator.record_failure(&failure, &request.run_id).await
                {
                    tracing::error!(error = %not_recorded, "the failure could not be recorded: TaskOutcome will report the task stopped without a word");
                }
            }
            Err(e)
        }
    }
}

/// One invocation of a batch item's loop (see [`apply_one`]).
#[tracing::instrument(name = "batch", skip_all, fields(version = %request.range.first, invocation = tracing::field::Empty, budget_ms = tracing::field::Empty))]
async fn apply_batch(
    migrator: &Migrator,
    request: ApplyRequest,
    settings: &BatchSettings,
    remaining: Option<Duration>,
) -> Result<ApplyOutput, Error> {
    let budget = batch_budget(remaining, settings.budget);
    let invocation = request.batch.map_or(0, |b| b.invocations) + 1;
    let span = tracing::Span::current();
    span.record("invocation", invocation);
    span.record("budget_ms", budget.as_millis() as u64);
    let mut observer = BatchObserver::default();
    let results = migrator
        .apply_range_observed(
            &request.range.first,
            &request.range.last,
            &request.run_id,
            Some(Instant::now() + budget),
            &mut observer,
        )
        .await?;
    applied_metrics(migrator, &results, &request.run_id);
    let last = results.last();
    let (done, progress) = match last.map(|r| &r.outcome) {
        Some(Outcome::Unfinished { progress }) => (false, *progress),
        Some(Outcome::Applied {
            batches: Some(progress),
            ..
        }) => (true, *progress),
        _ => (true, BatchProgress::default()),
    };
    let name = last.map_or_else(|| request.range.first.to_string(), |r| r.name.clone());
    MetricLine::new(migrator.db.name())
        .with(Metric::BatchRows, observer.rows as f64)
        .with(Metric::Batches, observer.batches as f64)
        .property("version", request.range.first.as_str())
        .property("run_id", &request.run_id)
        .property("invocation", &invocation.to_string())
        .property("done", if done { "true" } else { "false" })
        .emit();
    tracing::info!(
        done,
        batches = observer.batches,
        rows = observer.rows,
        total_batches = progress.batches,
        total_rows = progress.rows,
        "{name}: {} rows in {} batches in this invocation",
        observer.rows,
        observer.batches
    );
    let next = next_loop(
        request.batch.as_ref(),
        &name,
        done,
        progress,
        observer.rows,
        request.range.max_invocations,
        settings.wait,
    )?;
    Ok(ApplyOutput {
        results,
        done,
        progress: Some(progress),
        invocations: Some(next.invocations),
        stalled: Some(next.stalled),
        wait_seconds: Some(next.wait_seconds),
        continue_execution: Some(next.continue_execution),
    })
}

fn applied_metrics(migrator: &Migrator, results: &[crate::runner::MigrationResult], run_id: &str) {
    for r in results {
        if let Outcome::Applied {
            execution_time_ms, ..
        } = r.outcome
        {
            MetricLine::new(migrator.db.name())
                .with(Metric::MigrationDuration, execution_time_ms as f64)
                .with(Metric::MigrationsApplied, 1.0)
                .property("version", r.version.as_str())
                .property("run_id", run_id)
                .emit();
        }
    }
}

/// The set-digest check of apply and revert: a worker updated during the run refuses to work
/// from another set than the plan's.
pub(super) fn check_digest(migrator: &Migrator, planned: &str) -> Result<(), Error> {
    let digest = migrator.set.digest();
    if digest != planned {
        return Err(Error::InvalidInput(format!(
            "the migrations packaged with this worker (set digest {digest}) are not the ones the plan saw ({planned}): the workers were updated during the run; start a new execution"
        )));
    }
    Ok(())
}

/// [`check_digest`] for a batch item: the workers updated during its loop (a deploy while
/// an after-deploy backfill runs) go on with it if its migration is the one planned, same
/// version and checksum; the ledger's lock and its own checks keep the rest in order.
fn check_batch_digest(migrator: &Migrator, request: &ApplyRequest) -> Result<(), Error> {
    let unchanged = || {
        let planned = request.range.checksum.as_deref()?;
        let now = migrator.set.get(&request.range.first)?;
        (now.checksum == planned).then_some(now)
    };
    match check_digest(migrator, &request.set_digest) {
        Ok(()) => Ok(()),
        Err(e) => match unchanged() {
            Some(m) => {
                tracing::info!(
                    planned = %request.set_digest,
                    now = %migrator.set.digest(),
                    "the workers were updated during the loop of {}; it is unchanged, so the loop goes on",
                    m.name
                );
                Ok(())
            }
            None => Err(e),
        },
    }
}

/// The apply-one worker's one entry point.
pub async fn apply_one_or_verify(
    migrator: &Migrator,
    request: ApplyOneRequest,
    batch: &BatchSettings,
    remaining: Option<Duration>,
) -> Result<ApplyOneOutput, Error> {
    match request {
        ApplyOneRequest::Apply(r) => apply_one(migrator, r, batch, remaining)
            .await
            .map(ApplyOneOutput::Applied),
        ApplyOneRequest::Revert(r) => revert_one(migrator, r).await.map(ApplyOneOutput::Applied),
        ApplyOneRequest::TaskOutcome(r) => {
            task_outcome(migrator, r).await.map(ApplyOneOutput::Applied)
        }
        ApplyOneRequest::Verify(r) => verify(migrator, r, remaining)
            .await
            .map(|s| ApplyOneOutput::Verified(Box::new(s))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::migration::Version;
    use crate::steps::MigrationRange;

    #[test]
    fn the_batch_budget_stays_well_under_the_deadline() {
        let s = Duration::from_secs;
        // The deadline less 30 s.
        assert_eq!(batch_budget(Some(s(900)), None), s(870));
        // The setting when shorter, the deadline's when not.
        assert_eq!(batch_budget(Some(s(900)), Some(s(5))), s(5));
        assert_eq!(batch_budget(Some(s(120)), Some(s(600))), s(90));
        // A deadline too close for the margin: half of what is left.
        assert_eq!(batch_budget(Some(s(40)), None), s(20));
        assert_eq!(
            batch_budget(Some(s(40)), Some(Duration::from_millis(500))),
            Duration::from_millis(500)
        );
        // No deadline (local runs).
        assert_eq!(batch_budget(None, Some(s(1))), s(1));
        assert_eq!(batch_budget(None, None), DEFAULT_BATCH_BUDGET);
    }

    #[test]
    fn a_batch_loop_counts_invocations_and_stalls() {
        let wait = Duration::from_millis(1500);
        let at = |rows| BatchProgress {
            batches: rows / 10,
            rows,
            batch_rows: 10,
        };
        let first = next_loop(None, "004_backfill", false, at(50), 50, Some(10), wait).unwrap();
        assert_eq!(
            first,
            BatchLoop {
                done: false,
                progress: at(50),
                invocations: 1,
                stalled: 0,
                wait_seconds: 2,
                continue_execution: false,
            }
        );
        // No row changed: stalled, twice is still fine, the third time fails.
        let one = next_loop(
            Some(&first),
            "004_backfill",
            false,
            at(50),
            0,
            Some(10),
            wait,
        )
        .unwrap();
        let two = next_loop(Some(&one), "004_backfill", false, at(50), 0, Some(10), wait).unwrap();
        assert_eq!((two.invocations, two.stalled), (3, 2));
        let err =
            next_loop(Some(&two), "004_backfill", false, at(50), 0, Some(10), wait).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BatchStalled);
        assert!(
            err.to_string()
                .contains("004_backfill made no progress in 3 invocations"),
            "{err}"
        );
        // Progress resets the count.
        let moved = next_loop(
            Some(&two),
            "004_backfill",
            false,
            at(60),
            10,
            Some(10),
            wait,
        )
        .unwrap();
        assert_eq!((moved.invocations, moved.stalled), (4, 0));
        // Done ends it, whatever the counts.
        let done = next_loop(Some(&two), "004_backfill", true, at(50), 0, Some(3), wait).unwrap();
        assert!(done.done);
        assert!(!moved.continue_execution && !done.continue_execution);
        // The cap: the invocation that reaches it, not done, continues in a new execution
        // (no error: nothing is recorded or alerted, the progress is in the ledger).
        let capped = BatchLoop {
            invocations: 9,
            ..moved
        };
        let next = next_loop(
            Some(&capped),
            "004_backfill",
            false,
            at(70),
            10,
            Some(10),
            wait,
        )
        .unwrap();
        assert!(next.continue_execution && !next.done, "{next:?}");
        assert_eq!(next.invocations, 10);
    }

    fn migrator_of(files: &[(&str, &str)]) -> Migrator {
        use crate::migration::{MigrationSet, SourceFile};
        let files = files
            .iter()
            .map(|(name, sql)| SourceFile {
                path: std::path::Path::new("m").join(name),
                bytes: sql.as_bytes().to_vec(),
            })
            .collect();
        let set = MigrationSet::from_files(std::path::Path::new("m"), files).unwrap();
        let db = crate::db::Database::from_url(
            "postgres://nobody@127.0.0.1:9/never",
            "DATABASE_URL",
            Duration::from_secs(1),
        )
        .unwrap();
        Migrator::new(db, set, Default::default())
    }

    #[test]
    fn a_batch_loop_goes_on_with_updated_workers_while_its_migration_is_unchanged() {
        const BACKFILL: &str = "-- stepmigrate: batch\nUPDATE t SET x = 1 WHERE id IN (SELECT id FROM t WHERE x IS NULL LIMIT :batch_size);";
        let planned = migrator_of(&[
            ("001_t.sql", "CREATE TABLE t (id int, x int);"),
            ("002_fill.sql", BACKFILL),
        ]);
        let request = |m: &Migrator| ApplyRequest {
            run_id: "r".into(),
            execution: String::new(),
            set_digest: planned.set.digest(),
            range: MigrationRange {
                first: Version::parse("002").unwrap(),
                last: Version::parse("002").unwrap(),
                name: Some("002_fill".into()),
                batch: true,
                task: false,
                max_invocations: Some(10),
                checksum: m
                    .set
                    .get(&Version::parse("002").unwrap())
                    .map(|m| m.checksum.clone()),
            },
            seen_event: None,
            batch: None,
        };
        let item = request(&planned);
        check_batch_digest(&planned, &item).unwrap();
        // A deploy added a migration: the set changed, the backfill did not.
        let deployed = migrator_of(&[
            ("001_t.sql", "CREATE TABLE t (id int, x int);"),
            ("002_fill.sql", BACKFILL),
            ("003_more.sql", "CREATE TABLE u (id int);"),
        ]);
        check_batch_digest(&deployed, &item).unwrap();
        assert!(
            check_digest(&deployed, &item.set_digest).is_err(),
            "a plain item is refused"
        );
        // The backfill itself was edited, or the item predates the checksum: refused.
        let edited = migrator_of(&[
            ("001_t.sql", "CREATE TABLE t (id int, x int);"),
            ("002_fill.sql", &BACKFILL.replace("x = 1", "x = 2")),
        ]);
        let err = check_batch_digest(&edited, &item).unwrap_err();
        assert!(
            err.to_string()
                .contains("workers were updated during the run"),
            "{err}"
        );
        let mut old = item.clone();
        old.range.checksum = None;
        assert!(check_batch_digest(&deployed, &old).is_err());
    }
}
