//! The plan: a pure function of the migration set and the ledger that says, for every
//! version, what state it is in and what `up` would do.
//! [`route`] says how a runner that applies them item by item takes the pending ones.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{DirtyMigration, Drift, Error, SetProblem};
use crate::ledger::{BatchProgress, Ledger, LedgerRow, PartlyApplied};
use crate::migration::{differs_only_in_line_endings, Migration, MigrationSet, Version};

pub mod route;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Applied,
    Pending,
    /// Failed before; pending again (retried by the next run, once the file is fixed).
    Failed,
    /// Interrupted or failed outside a transaction: runs refuse to continue.
    Dirty,
    /// Started outside a transaction and being applied right now by another runner, which
    /// yielded the migration lock for its build (see [`crate::lock`]): neither run again nor
    /// dirty; what requires it waits for that runner.
    InProgress,
    /// Applied, but the file changed since.
    Drift,
    /// Applied, but no file knows it (e.g. older code after a rollback): reported only.
    UnknownApplied,
}

/// One version's line in the plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub version: Version,
    pub name: String,
    pub state: State,
    /// The migration's file, when the set has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "lossy_opt_path")]
    pub file: Option<std::path::PathBuf>,
    /// The file's checksum (the ledger's for unknown-applied migrations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_checksum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_time_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Pending, but newer migrations are applied already (a re-run, or a merged branch).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub out_of_order: bool,
    /// Pending again after it was applied once (deleted by hand, resolved not applied,
    /// rolled back) or failed before: running it is a re-run, allowed in any order.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rerun: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transactional_off: bool,
    /// Dirty, and a session still runs its statement (a killed runner's backend): nothing
    /// to check or resolve before it ends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub still_running: bool,
    /// Its header's `requires` and `conflicts`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<Version>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Version>,
    /// Whether it can be rolled back: a down file, or `irreversible` (unknown for a
    /// migration without a file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reversible: Option<bool>,
    /// Its header says `after-deploy`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_deploy: bool,
    /// Pending, and left for the run after the deploy by this one (the deploy's own run):
    /// `after-deploy`, or it requires a migration that is (see [`Plan::defer_after_deploy`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deferred: bool,
    /// It says `after-deploy` or requires (transitively) one that does
    /// ([`MigrationSet::in_after_deploy_chain`]): it may run after newer migrations, which is
    /// not out of order.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub runs_after_deploy: bool,
    /// A batch migration not applied (pending, or failed) with batches committed: their
    /// totals. Those rows stay changed; the next run resumes after them (see
    /// [`Plan::note_partly_applied`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batches: Option<BatchProgress>,
    /// Its committed batches hold to another version of its file (they were going on, or
    /// were interrupted): the checksum they ran with. `up` refuses to resume them with this
    /// file ([`Plan::ensure_applicable`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batches_ran_from: Option<String>,
    /// Pending, but it requires (transitively) a migration in progress: left to the runner
    /// applying that one, which plans again once it is recorded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub waits_for_build: bool,
}

/// Which of the pending migrations a run takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Up to this version only.
    pub target: Option<Version>,
    /// The deploy's own run: `after-deploy` migrations wait (see [`Plan::defer_after_deploy`]).
    pub skip_after_deploy: bool,
}

impl Scope {
    /// Every pending migration up to `target` (all without one).
    pub fn up_to(target: Option<&Version>) -> Scope {
        Scope {
            target: target.cloned(),
            skip_after_deploy: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub entries: Vec<Entry>,
    pub warnings: Vec<String>,
    /// Apply pending migrations up to this version only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<Version>,
}

impl Plan {
    /// Compares the set with the ledger. Fails only on what makes the comparison itself
    /// meaningless (an unknown target, a version renumbered under an applied row).
    pub fn new(
        set: &MigrationSet,
        ledger: &Ledger,
        target: Option<&Version>,
    ) -> Result<Plan, Error> {
        let target = match target {
            None => None,
            Some(t) => Some(set.get(t).map(|m| m.version.clone()).ok_or_else(|| {
                Error::InvalidInput(format!("target version `{t}` is not in the migration set"))
            })?),
        };
        let mut by_number: HashMap<u64, (Version, &LedgerRow)> = HashMap::new();
        let mut unparsable = Vec::new();
        for row in ledger.migration_rows() {
            match Version::parse(&row.version) {
                Some(v) => {
                    by_number.insert(v.number(), (v, row));
                }
                None => unparsable.push(row),
            }
        }

        let mut entries = Vec::new();
        let mut warnings = Vec::new();
        let mut renumbered = Vec::new();
        let newest_applied = by_number
            .values()
            .filter(|(_, r)| r.success)
            .map(|(v, _)| v.number())
            .max();

        for m in set.migrations() {
            let row = by_number.remove(&m.version.number()).map(|(_, row)| row);
            if let Some(row) = row {
                if row.version != m.version.as_str() {
                    renumbered.push(SetProblem::new(
                        &m.path,
                        None,
                        format!(
                            "the ledger recorded this migration as version {}; rename the file back so that versions match as text",
                            row.version
                        ),
                    ));
                    continue;
                }
                // Applied under another name: the version and checksum are what match, but
                // what the ledger and the alerts call it is the old name.
                if row.success && row.name != m.name {
                    warnings.push(format!(
                        "{}: the ledger records it as {} (the file was renamed since it was applied; its version and checksum are what count)",
                        m.name, row.name
                    ));
                }
            }
            let mut entry = entry_for(
                m,
                row,
                newest_applied,
                set.in_after_deploy_chain(m),
                &mut warnings,
            );
            entry.rerun = entry.out_of_order
                && (row.is_some() || ledger.made_pending.contains(m.version.as_str()));
            entries.push(entry);
        }
        if !renumbered.is_empty() {
            return Err(Error::InvalidMigrationSet {
                dir: set.dir.clone(),
                problems: renumbered,
            });
        }

        for row in unparsable {
            warnings.push(format!(
                "the ledger has a row with version `{}` ({}), which is not a version: ignored",
                row.version, row.name
            ));
        }
        let mut unknown: Vec<(Version, &LedgerRow)> = by_number.into_values().collect();
        unknown.sort_by(|a, b| a.0.cmp(&b.0));
        for (version, row) in unknown {
            if row.success || row.dirty {
                entries.push(Entry {
                    version,
                    name: row.name.clone(),
                    state: if row.dirty {
                        State::Dirty
                    } else {
                        State::UnknownApplied
                    },
                    file: None,
                    checksum: row.checksum.clone(),
                    recorded_checksum: row.checksum.clone(),
                    applied_at: row.applied_at,
                    execution_time_ms: row.execution_time_ms,
                    error: row.error.clone(),
                    out_of_order: false,
                    rerun: false,
                    transactional_off: false,
                    requires: Vec::new(),
                    conflicts: Vec::new(),
                    reversible: None,
                    after_deploy: false,
                    deferred: false,
                    runs_after_deploy: false,
                    batches: None,
                    batches_ran_from: None,
                    waits_for_build: false,
                    still_running: false,
                });
            } else {
                warnings.push(format!(
                    "{} failed in an earlier run and has no file any more",
                    row.name
                ));
            }
        }
        entries.sort_by(|a, b| a.version.cmp(&b.version));
        let mut building = std::collections::HashSet::new();
        let mut still_running = Vec::new();
        for e in &mut entries {
            let claimed =
                e.state == State::Dirty && ledger.in_progress.contains(e.version.as_str());
            // Only an after-deploy build yields the migration lock and goes on beside other
            // runs; any other migration whose build lock is held is a killed runner's backend
            // running its statement on: dirty, and not to be resolved before it ends.
            let yielded = set
                .get(&e.version)
                .is_some_and(|m| set.yields_lock_for_build(m));
            if claimed && yielded {
                e.state = State::InProgress;
                building.insert(e.version.number());
            } else if claimed {
                e.still_running = true;
                still_running.push(e.name.clone());
            } else if matches!(e.state, State::Pending | State::Failed)
                && e.requires.iter().any(|r| building.contains(&r.number()))
            {
                e.waits_for_build = true;
                building.insert(e.version.number());
            }
        }
        let in_progress: Vec<&str> = entries
            .iter()
            .filter(|e| e.state == State::InProgress)
            .map(|e| e.name.as_str())
            .collect();
        if !in_progress.is_empty() {
            let waiting: Vec<&str> = entries
                .iter()
                .filter(|e| e.waits_for_build)
                .map(|e| e.name.as_str())
                .collect();
            warnings.push(format!(
                "another runner is applying {} right now (it holds the migration's build lock){}",
                in_progress.join(", "),
                if waiting.is_empty() {
                    String::new()
                } else {
                    format!("; left to it: {}, which require(s) it", waiting.join(", "))
                }
            ));
        }
        if !still_running.is_empty() {
            warnings.push(format!(
                "{} {} dirty and a session still runs {} statement (a runner at work on it, or one killed mid-migration whose backend runs on): wait for it to end before you check the database and `resolve` it",
                still_running.join(", "),
                if still_running.len() == 1 { "is" } else { "are" },
                if still_running.len() == 1 { "its" } else { "their" },
            ));
        }
        Ok(Plan {
            entries,
            warnings,
            target,
        })
    }

    /// [`Plan::new`] for a run's scope.
    pub fn scoped(set: &MigrationSet, ledger: &Ledger, scope: &Scope) -> Result<Plan, Error> {
        let mut plan = Plan::new(set, ledger, scope.target.as_ref())?;
        if scope.skip_after_deploy {
            plan.defer_after_deploy();
        }
        Ok(plan)
    }

    /// The migrations `up` would apply, in order, respecting the target and what this run
    /// defers.
    pub fn pending(&self) -> impl Iterator<Item = &Entry> {
        let limit = self.target.as_ref().map_or(u64::MAX, Version::number);
        self.entries.iter().filter(move |e| {
            matches!(e.state, State::Pending | State::Failed)
                && e.version.number() <= limit
                && !e.deferred
                && !e.waits_for_build
        })
    }

    /// Makes this the deploy's own run: each pending `after-deploy` migration, each one that
    /// requires a deferred one (transitively), and each one of the after-deploy chain that
    /// failed before, waits for the run started after the deploy. Whatever else is pending,
    /// newer migrations included, is applied now. Only what the run would apply can wait:
    /// a migration above the target is not deferred, the target leaves it out anyway.
    pub fn defer_after_deploy(&mut self) {
        let limit = self.target.as_ref().map_or(u64::MAX, Version::number);
        let mut deferred = std::collections::HashSet::new();
        for e in &mut self.entries {
            let pending =
                matches!(e.state, State::Pending | State::Failed) && e.version.number() <= limit;
            // One of the chain that failed (in a run after a deploy) is retried there, not by
            // the next deploy, which it would stop. One in progress (built by the run after an
            // earlier deploy) is as much left by this deploy as one still pending.
            if (e.state == State::InProgress && e.version.number() <= limit)
                || (pending
                    && (e.after_deploy
                        || (e.runs_after_deploy && e.state == State::Failed)
                        || e.requires.iter().any(|r| deferred.contains(&r.number()))))
            {
                e.deferred = true;
                deferred.insert(e.version.number());
            }
        }
    }

    /// What the deploy's own run (`--skip-after-deploy`, the CDK trigger's) applies in another
    /// order than this plan: each pending migration it applies before a pending after-deploy
    /// one (or one that requires it) that comes first here, in words. A review that runs them
    /// in version order says nothing of that order.
    pub fn deploy_order_warnings(&self) -> Vec<String> {
        let mut deploy = self.clone();
        deploy.defer_after_deploy();
        let deferred: Vec<&Entry> = deploy.entries.iter().filter(|e| e.deferred).collect();
        deploy
            .pending()
            .filter_map(|e| {
                let before: Vec<&str> = deferred
                    .iter()
                    .filter(|d| d.version < e.version)
                    .map(|d| d.name.as_str())
                    .collect();
                (!before.is_empty()).then(|| {
                    format!(
                        "the deploy's run (--skip-after-deploy) applies {} before {}, which it leaves for the run after the deploy: checked here in version order, after {}; if it needs {}, give it `requires`",
                        e.name,
                        before.join(", "),
                        if before.len() == 1 { "it" } else { "them" },
                        if before.len() == 1 { "it" } else { "them" },
                    )
                })
            })
            .collect()
    }

    /// Notes the committed batches of each partly applied batch migration on its entry. One
    /// that no file knows any more (older code) is named in a warning: its rows stay changed.
    pub fn note_partly_applied(&mut self, partly: &[PartlyApplied], set: &MigrationSet) {
        for p in partly {
            let number = Version::parse(&p.version).map(|v| v.number());
            let entry = self
                .entries
                .iter_mut()
                .find(|e| Some(e.version.number()) == number);
            match entry {
                Some(e) if matches!(e.state, State::Pending | State::Failed) => {
                    e.batches = Some(p.progress);
                    e.batches_ran_from = p.holds_to.clone().filter(|ran| {
                        set.get(&e.version)
                            .is_some_and(|m| crate::batch::ran_from_another_file(ran, m))
                    });
                }
                // Dirty from a down that began on it: what its batches changed is now the
                // down's business, and `resolve` says what it is.
                Some(_) => {}
                None => self.warnings.push(format!(
                    "{} has {} batch(es) committed ({} rows) and no file any more: those rows stay changed",
                    p.name, p.progress.batches, p.progress.rows
                )),
            }
        }
    }

    /// The migrations this run leaves for the run after the deploy, in order.
    pub fn deferred(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.deferred)
    }

    /// What another runner has in hand, by name: the migrations it is applying (an
    /// after-deploy build) and the pending ones that require them, which this run leaves to
    /// it. A set with any is not up to date, though this run has nothing to apply.
    pub fn left_to_another_runner(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|e| e.state == State::InProgress || e.waits_for_build)
            .map(|e| e.name.clone())
            .collect()
    }

    /// A pending migration that sorts before `version` and must run before it: one not
    /// deferred and not in the after-deploy chain (which the plan puts in order, or leaves
    /// for after the deploy). Apply steps refuse to run past one.
    pub fn blocker_before(&self, version: &Version) -> Option<&Entry> {
        self.pending()
            .find(|e| e.version < *version && !e.runs_after_deploy)
    }

    pub fn count(&self, state: State) -> usize {
        self.entries.iter().filter(|e| e.state == state).count()
    }

    /// Refuses to run on drift or dirty migrations, naming each.
    pub fn ensure_runnable(&self) -> Result<(), Error> {
        let dirty: Vec<DirtyMigration> = self
            .entries
            .iter()
            .filter(|e| e.state == State::Dirty)
            .map(|e| DirtyMigration {
                version: e.version.clone(),
                name: e.name.clone(),
                error: e.error.clone(),
                still_running: e.still_running,
            })
            .collect();
        if !dirty.is_empty() {
            return Err(Error::Dirty { migrations: dirty });
        }
        let drift: Vec<Drift> = self.drift().collect();
        if !drift.is_empty() {
            return Err(Error::ChecksumMismatch { drift });
        }
        Ok(())
    }

    /// Everything that must hold before applying the pending migrations: nothing dirty or
    /// drifted, each requirement applied (or applied earlier in this run) and no conflict
    /// applied, and no new migration below the newest applied unless that is allowed.
    pub fn ensure_applicable(&self, allow_out_of_order: bool) -> Result<(), Error> {
        self.ensure_runnable()?;
        if !allow_out_of_order {
            let late: Vec<&Entry> = self
                .pending()
                .filter(|e| e.out_of_order && !e.rerun)
                .collect();
            if !late.is_empty() {
                let newest = self
                    .entries
                    .iter()
                    .filter(|e| {
                        matches!(
                            e.state,
                            State::Applied | State::UnknownApplied | State::Drift
                        )
                    })
                    .map(|e| e.name.clone())
                    .next_back()
                    .unwrap_or_default();
                return Err(Error::OutOfOrder {
                    newest,
                    migrations: late.iter().map(|e| e.name.clone()).collect(),
                });
            }
        }
        self.ensure_dependencies()?;
        if let Some(e) = self.pending().find(|e| e.batches_ran_from.is_some()) {
            return Err(crate::batch::ran_from_another_file_error(
                e.file.as_deref().unwrap_or(std::path::Path::new(&e.name)),
                e.batches_ran_from.as_deref().unwrap_or_default(),
                e.checksum.as_deref().unwrap_or_default(),
            ));
        }
        Ok(())
    }

    /// Walks the pending migrations in order over what is applied: a requirement must be
    /// applied by the time its migration runs (Sqitch's meaning), and two migrations that
    /// conflict (declared by either) are never applied together.
    pub fn ensure_dependencies(&self) -> Result<(), Error> {
        use std::collections::BTreeMap;
        let mut applied: BTreeMap<u64, &Entry> = self
            .entries
            .iter()
            .filter(|e| {
                matches!(
                    e.state,
                    State::Applied | State::Drift | State::UnknownApplied
                )
            })
            .map(|e| (e.version.number(), e))
            .collect();
        let name_of = |v: &Version| {
            self.entries
                .iter()
                .find(|e| e.version.number() == v.number())
                .map_or_else(|| v.to_string(), |e| e.name.clone())
        };
        let already: std::collections::BTreeSet<u64> = applied.keys().copied().collect();
        let how = |v: u64| {
            if already.contains(&v) {
                "which is applied: roll it back first"
            } else {
                "which this run applies before it"
            }
        };
        // Who declares a conflict with a version.
        let mut conflicts_with: BTreeMap<u64, Vec<&Entry>> = BTreeMap::new();
        for x in &self.entries {
            for c in &x.conflicts {
                conflicts_with.entry(c.number()).or_default().push(x);
            }
        }
        let mut reasons = Vec::new();
        // Applied now, a migration that conflicts with one left for after the deploy would
        // keep that one from ever being applied.
        let left: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|d| d.deferred || d.waits_for_build || d.state == State::InProgress)
            .collect();
        for e in self.pending() {
            for d in &left {
                if e.conflicts.iter().any(|c| c.number() == d.version.number())
                    || d.conflicts.iter().any(|c| c.number() == e.version.number())
                {
                    reasons.push(format!(
                        "{} conflicts with {}, which this run leaves pending (for the run after the deploy, or the runner applying it): applying {} now would keep {} from ever being applied",
                        e.name, d.name, e.name, d.name
                    ));
                }
            }
        }
        for e in self.pending() {
            for r in &e.requires {
                if !applied.contains_key(&r.number()) {
                    reasons.push(format!(
                        "{} requires {}, which is not applied (and does not run before it)",
                        e.name,
                        name_of(r)
                    ));
                }
            }
            for c in &e.conflicts {
                if applied.contains_key(&c.number()) {
                    reasons.push(format!(
                        "{} conflicts with {}, {}",
                        e.name,
                        name_of(c),
                        how(c.number())
                    ));
                }
            }
            // Either way round: an applied migration may declare the conflict (looked up by
            // the version it names: a set of 10,000 must not compare every pair).
            let mut declared: Vec<&Entry> = conflicts_with
                .get(&e.version.number())
                .into_iter()
                .flatten()
                .copied()
                .filter(|other| {
                    applied
                        .get(&other.version.number())
                        .is_some_and(|a| std::ptr::eq(*a, *other))
                })
                .collect();
            declared.sort_by_key(|other| other.version.number());
            declared.dedup_by(|a, b| std::ptr::eq(*a, *b));
            for other in declared {
                reasons.push(format!(
                    "{} conflicts with {}, {}",
                    e.name,
                    other.name,
                    how(other.version.number())
                ));
            }
            applied.insert(e.version.number(), e);
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(Error::DependencyNotMet { reasons })
        }
    }

    fn drift(&self) -> impl Iterator<Item = Drift> + '_ {
        self.entries
            .iter()
            .filter(|e| e.state == State::Drift)
            .map(|e| Drift {
                version: e.version.clone(),
                name: e.name.clone(),
                file: e
                    .file
                    .clone()
                    .unwrap_or_else(|| format!("{}.sql", e.name).into()),
                recorded: e.recorded_checksum.clone().unwrap_or_default(),
                actual: e.checksum.clone().unwrap_or_default(),
            })
    }
}

fn entry_for(
    m: &Migration,
    row: Option<&LedgerRow>,
    newest_applied: Option<u64>,
    runs_after_deploy: bool,
    warnings: &mut Vec<String>,
) -> Entry {
    let mut entry = Entry {
        version: m.version.clone(),
        name: m.name.clone(),
        state: State::Pending,
        file: Some(m.path.clone()),
        checksum: Some(m.checksum.clone()),
        recorded_checksum: row.and_then(|r| r.checksum.clone()),
        applied_at: row.and_then(|r| r.applied_at),
        execution_time_ms: row.and_then(|r| r.execution_time_ms),
        error: row.and_then(|r| r.error.clone()),
        out_of_order: false,
        rerun: false,
        transactional_off: !m.transactional(),
        requires: m.directives.requires.clone(),
        conflicts: m.directives.conflicts.clone(),
        reversible: Some(m.down.is_some()),
        after_deploy: m.directives.after_deploy,
        deferred: false,
        runs_after_deploy,
        batches: None,
        batches_ran_from: None,
        waits_for_build: false,
        still_running: false,
    };
    entry.state = match row {
        None => State::Pending,
        Some(r) if r.dirty => State::Dirty,
        Some(r) if !r.success => State::Failed,
        Some(r) => match r.checksum.as_deref() {
            // Hex is hex in either case (a runner that wrote it upper-case).
            Some(recorded) if recorded.eq_ignore_ascii_case(&m.checksum) => State::Applied,
            Some(recorded)
                if differs_only_in_line_endings(m.text_as_written().as_bytes(), recorded) =>
            {
                warnings.push(format!(
                    "{}: only line endings or a byte-order mark changed since it was applied (recorded checksum {recorded}, file now {}); not treated as drift",
                    m.path.display(),
                    m.checksum
                ));
                State::Applied
            }
            Some(_) => State::Drift,
            None => {
                warnings.push(format!(
                    "{}: the ledger recorded no checksum, so changes cannot be detected",
                    m.path.display()
                ));
                State::Applied
            }
        },
    };
    // Newer migrations applied before it is what after-deploy means, not out of order.
    if matches!(entry.state, State::Pending | State::Failed) && !runs_after_deploy {
        entry.out_of_order = newest_applied.is_some_and(|n| n > m.version.number());
        if entry.out_of_order {
            warnings.push(format!(
                "{} is pending although newer migrations are applied",
                m.name
            ));
        }
    }
    entry
}

fn lossy_opt_path<S: serde::Serializer>(
    path: &Option<std::path::PathBuf>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match path {
        Some(p) => crate::error::lossy_path(p, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::LedgerKind;
    use crate::migration::checksum;
    use std::path::PathBuf;

    use crate::migration::test_set as set;

    fn row(version: &str, sql: &str, success: bool, dirty: bool) -> LedgerRow {
        LedgerRow {
            version: version.into(),
            name: format!("{version}_x"),
            applied_at: None,
            checksum: Some(checksum(sql.as_bytes())),
            execution_time_ms: Some(1),
            success,
            dirty,
            run_id: None,
            error: (!success).then(|| "boom".into()),
            event_id: None,
        }
    }

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    fn ledger(rows: Vec<LedgerRow>) -> Ledger {
        Ledger {
            kind: LedgerKind::EventSourced,
            rows,
            projection_missing: false,
            made_pending: Default::default(),
            in_progress: Default::default(),
        }
    }

    fn states(p: &Plan) -> Vec<(String, State)> {
        p.entries
            .iter()
            .map(|e| (e.version.to_string(), e.state))
            .collect()
    }

    const A: &str = "CREATE TABLE a (x int);";
    const B: &str = "CREATE TABLE b (x int);";
    const C: &str = "CREATE TABLE c (x int);";

    #[test]
    fn fresh_database_has_everything_pending() {
        let s = set(&[("001_a.sql", A), ("002_b.sql", B)]);
        let p = Plan::new(&s, &Ledger::empty(), None).unwrap();
        assert_eq!(
            p.pending().map(|e| e.version.as_str()).collect::<Vec<_>>(),
            vec!["001", "002"]
        );
        p.ensure_runnable().unwrap();
    }

    #[test]
    fn applied_failed_and_target() {
        let s = set(&[("001_a.sql", A), ("002_b.sql", B), ("003_c.sql", C)]);
        let l = ledger(vec![
            row("001", A, true, false),
            row("002", B, false, false),
        ]);
        let p = Plan::new(&s, &l, None).unwrap();
        assert_eq!(
            states(&p),
            vec![
                ("001".into(), State::Applied),
                ("002".into(), State::Failed),
                ("003".into(), State::Pending)
            ]
        );
        assert_eq!(p.pending().count(), 2, "a failed migration is retried");
        let to_two = Plan::new(&s, &l, Some(&v("002"))).unwrap();
        assert_eq!(
            to_two
                .pending()
                .map(|e| e.version.as_str())
                .collect::<Vec<_>>(),
            vec!["002"]
        );
        assert!(matches!(
            Plan::new(&s, &l, Some(&v("009"))),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn drift_blocks_with_both_checksums() {
        let s = set(&[
            ("001_a.sql", "CREATE TABLE a (x bigint);"),
            ("002_b.sql", B),
        ]);
        let l = ledger(vec![row("001", A, true, false)]);
        let p = Plan::new(&s, &l, None).unwrap();
        assert_eq!(p.entries[0].state, State::Drift);
        match p.ensure_runnable() {
            Err(Error::ChecksumMismatch { drift }) => {
                assert_eq!(drift[0].recorded, checksum(A.as_bytes()));
                assert_eq!(drift[0].actual, checksum(b"CREATE TABLE a (x bigint);"));
                assert_eq!(drift[0].file, PathBuf::from("m/001_a.sql"));
            }
            other => panic!("expected drift, got {other:?}"),
        }
    }

    #[test]
    fn line_endings_only_is_a_warning() {
        let s = set(&[("001_a.sql", "CREATE TABLE a (x int);\r\nSELECT 1;\r\n")]);
        let l = ledger(vec![row(
            "001",
            "CREATE TABLE a (x int);\nSELECT 1;\n",
            true,
            false,
        )]);
        let p = Plan::new(&s, &l, None).unwrap();
        assert_eq!(p.entries[0].state, State::Applied);
        assert!(
            p.warnings.iter().any(|w| w.contains("line endings")),
            "{:?}",
            p.warnings
        );
        p.ensure_runnable().unwrap();
    }

    #[test]
    fn a_file_renamed_since_it_was_applied_is_named_with_its_recorded_name() {
        let s = set(&[
            ("001_x.sql", "SELECT 1;\n"),
            ("002_new_name.sql", "SELECT 2;\n"),
        ]);
        let l = ledger(vec![
            row("001", "SELECT 1;\n", true, false),
            row("002", "SELECT 2;\n", true, false),
        ]);
        let p = Plan::new(&s, &l, None).unwrap();
        assert_eq!(
            p.warnings,
            ["002_new_name: the ledger records it as 002_x (the file was renamed since it was applied; its version and checksum are what count)"]
        );
    }

    #[test]
    fn dirty_blocks_and_names_the_migration() {
        let s = set(&[("001_a.sql", A), ("002_b.sql", B)]);
        let l = ledger(vec![row("001", A, false, true)]);
        let p = Plan::new(&s, &l, None).unwrap();
        let err = p.ensure_runnable().unwrap_err();
        assert!(matches!(err, Error::Dirty { .. }));
        assert!(err.to_string().contains("001_a"), "{err}");
    }

    #[test]
    fn unknown_applied_is_reported_not_an_error() {
        let s = set(&[("001_a.sql", A)]);
        let l = ledger(vec![
            row("001", A, true, false),
            row("002", B, true, false),
            row("000", "ledger", true, false),
        ]);
        let p = Plan::new(&s, &l, None).unwrap();
        assert_eq!(
            states(&p),
            vec![
                ("001".into(), State::Applied),
                ("002".into(), State::UnknownApplied)
            ]
        );
        p.ensure_runnable().unwrap();
        assert_eq!(p.pending().count(), 0);
    }

    #[test]
    fn re_run_after_deleting_a_row_is_out_of_order_but_pending() {
        let s = set(&[("001_a.sql", A), ("002_b.sql", B), ("003_c.sql", C)]);
        let l = ledger(vec![row("001", A, true, false), row("003", C, true, false)]);
        let p = Plan::new(&s, &l, None).unwrap();
        let pending: Vec<&Entry> = p.pending().collect();
        assert_eq!(pending.len(), 1);
        assert!(pending[0].out_of_order);
    }

    #[test]
    fn a_new_migration_below_the_newest_applied_is_out_of_order_a_rerun_is_not() {
        let s = set(&[("001_a.sql", A), ("002_b.sql", B), ("003_c.sql", C)]);
        let mut l = ledger(vec![row("001", A, true, false), row("003", C, true, false)]);
        let p = Plan::new(&s, &l, None).unwrap();
        match p.ensure_applicable(false) {
            Err(Error::OutOfOrder { newest, migrations }) => {
                assert_eq!(newest, "003_c");
                assert_eq!(migrations, ["002_b"]);
            }
            other => panic!("expected OutOfOrder, got {other:?}"),
        }
        p.ensure_applicable(true).unwrap();
        // Applied once and made pending again (row deleted, rolled back): a re-run.
        l.made_pending.insert("002".into());
        let p = Plan::new(&s, &l, None).unwrap();
        assert!(p.entries[1].rerun);
        p.ensure_applicable(false).unwrap();
    }

    const BACKFILL: &str = "-- stepmigrate: after-deploy\n-- stepmigrate: batch\nUPDATE a SET x = 0 WHERE ctid IN (SELECT ctid FROM a WHERE x IS NULL LIMIT :batch_size);";

    fn names<'a>(entries: impl Iterator<Item = &'a Entry>) -> Vec<&'a str> {
        entries.map(|e| e.version.as_str()).collect()
    }

    #[test]
    fn the_deploys_run_defers_after_deploy_migrations_and_what_requires_them() {
        let s = set(&[
            ("001_a.sql", A),
            ("002_backfill.sql", BACKFILL),
            ("003_b.sql", B),
            (
                "004_not_null.sql",
                "-- stepmigrate: requires = 002\nALTER TABLE a ALTER x SET NOT NULL;",
            ),
            (
                "005_needs_4.sql",
                "-- stepmigrate: requires = 004\nSELECT 1;",
            ),
            ("006_c.sql", C),
        ]);
        let l = ledger(vec![row("001", A, true, false)]);
        let scope = Scope {
            target: None,
            skip_after_deploy: true,
        };
        let p = Plan::scoped(&s, &l, &scope).unwrap();
        assert_eq!(names(p.pending()), ["003", "006"]);
        assert_eq!(names(p.deferred()), ["002", "004", "005"]);
        assert!(p.entries[1].after_deploy && !p.entries[2].after_deploy);
        p.ensure_applicable(false).unwrap();
        // Without the scope (the run after the deploy, a plain `up`) everything, in order.
        let all = Plan::new(&s, &l, None).unwrap();
        assert_eq!(names(all.pending()), ["002", "003", "004", "005", "006"]);
        assert_eq!(all.deferred().count(), 0);
    }

    #[test]
    fn a_target_below_an_after_deploy_migration_defers_nothing() {
        let s = set(&[
            ("001_a.sql", A),
            ("002_b.sql", B),
            ("003_backfill.sql", BACKFILL),
            (
                "004_not_null.sql",
                "-- stepmigrate: requires = 003\nALTER TABLE a ALTER x SET NOT NULL;",
            ),
        ]);
        let l = ledger(vec![row("001", A, true, false)]);
        let scope = |to: &str| Scope {
            target: Some(v(to)),
            skip_after_deploy: true,
        };
        let p = Plan::scoped(&s, &l, &scope("002")).unwrap();
        assert_eq!(names(p.pending()), ["002"]);
        assert_eq!(p.deferred().count(), 0, "the target leaves them out anyway");
        let p = Plan::scoped(&s, &l, &scope("003")).unwrap();
        assert_eq!(names(p.deferred()), ["003"]);
        let p = Plan::scoped(&s, &l, &scope("004")).unwrap();
        assert_eq!(names(p.deferred()), ["003", "004"]);
    }

    #[test]
    fn after_the_deploy_its_migrations_run_after_newer_ones_without_being_out_of_order() {
        let s = set(&[
            ("001_a.sql", A),
            ("002_backfill.sql", BACKFILL),
            ("003_b.sql", B),
            (
                "004_not_null.sql",
                "-- stepmigrate: requires = 002\nALTER TABLE a ALTER x SET NOT NULL;",
            ),
            ("005_late.sql", "SELECT 1;"),
            ("006_c.sql", C),
        ]);
        // The deploy applied 003 and 006; 005 came from a branch merged late.
        let l = ledger(vec![
            row("001", A, true, false),
            row("003", B, true, false),
            row("006", C, true, false),
        ]);
        let p = Plan::new(&s, &l, None).unwrap();
        match p.ensure_applicable(false) {
            Err(Error::OutOfOrder { migrations, .. }) => assert_eq!(migrations, ["005_late"]),
            other => panic!("expected only 005 out of order, got {other:?}"),
        }
        let s = set(&[
            ("001_a.sql", A),
            ("002_backfill.sql", BACKFILL),
            ("003_b.sql", B),
            (
                "004_not_null.sql",
                "-- stepmigrate: requires = 002\nALTER TABLE a ALTER x SET NOT NULL;",
            ),
            ("005_c.sql", C),
        ]);
        let l = ledger(vec![
            row("001", A, true, false),
            row("003", B, true, false),
            row("005", C, true, false),
        ]);
        let p = Plan::new(&s, &l, None).unwrap();
        p.ensure_applicable(false).unwrap();
        assert_eq!(names(p.pending()), ["002", "004"]);
        // An apply step past them is not blocked by them; a plain pending one blocks.
        assert!(p.blocker_before(&v("006")).is_none());
        let l = ledger(vec![row("003", B, true, false)]);
        let p = Plan::new(&s, &l, None).unwrap();
        assert_eq!(
            p.blocker_before(&v("005")).map(|e| e.version.as_str()),
            Some("001")
        );
    }

    #[test]
    fn the_deploys_run_refuses_a_conflict_with_what_it_defers_and_defers_a_failed_dependent() {
        // A conflict between two migrations of the set is refused with the set itself (see
        // `migration::check_dependencies`): the deploy's run never meets one.
        let deploy = Scope {
            target: None,
            skip_after_deploy: true,
        };
        // A dependent of an applied backfill that failed (in the run after a deploy) is
        // retried there: the next deploy goes on without it.
        let s = set(&[
            ("001_a.sql", A),
            ("002_backfill.sql", BACKFILL),
            (
                "003_not_null.sql",
                "-- stepmigrate: requires = 002\nALTER TABLE a ALTER x SET NOT NULL;",
            ),
            ("004_b.sql", B),
        ]);
        let l = ledger(vec![
            row("001", A, true, false),
            row("002", BACKFILL, true, false),
            row(
                "003",
                "-- stepmigrate: requires = 002\nALTER TABLE a ALTER x SET NOT NULL;",
                false,
                false,
            ),
        ]);
        let p = Plan::scoped(&s, &l, &deploy).unwrap();
        assert_eq!(names(p.pending()), ["004"]);
        assert_eq!(names(p.deferred()), ["003"]);
        p.ensure_applicable(false).unwrap();
        assert!(!p.entries[2].out_of_order && p.entries[2].runs_after_deploy);
        // (The helper's rows are named `<version>_x`: renamed, for the plan.)
        assert!(
            p.warnings
                .iter()
                .all(|w| w.contains("the file was renamed")),
            "{:?}",
            p.warnings
        );
        assert_eq!(
            names(Plan::new(&s, &l, None).unwrap().pending()),
            ["003", "004"]
        );
    }

    #[test]
    fn a_migration_that_requires_an_applied_after_deploy_one_runs_with_the_deploy() {
        let s = set(&[
            ("001_a.sql", A),
            ("002_backfill.sql", BACKFILL),
            (
                "003_not_null.sql",
                "-- stepmigrate: requires = 002\nALTER TABLE a ALTER x SET NOT NULL;",
            ),
        ]);
        let l = ledger(vec![
            row("001", A, true, false),
            row("002", BACKFILL, true, false),
        ]);
        let mut p = Plan::new(&s, &l, None).unwrap();
        p.defer_after_deploy();
        assert_eq!(names(p.pending()), ["003"]);
        assert_eq!(p.deferred().count(), 0);
    }

    #[test]
    fn requirements_must_be_applied_first_and_conflicts_not_applied() {
        let s = set(&[
            ("001_a.sql", A),
            (
                "002_b.sql",
                "-- stepmigrate: requires = 001\nCREATE TABLE b (x int);",
            ),
            (
                "003_c.sql",
                "-- stepmigrate: conflicts = 009\nCREATE TABLE c (x int);",
            ),
        ]);
        let p = Plan::new(&s, &Ledger::empty(), Some(&v("002"))).unwrap();
        p.ensure_applicable(false).unwrap();
        Plan::new(&s, &Ledger::empty(), None)
            .unwrap()
            .ensure_applicable(false)
            .unwrap();
        // 009, another release's migration, applied: 003 must wait until it is rolled back.
        let l = ledger(vec![row("001", A, true, false), row("009", C, true, false)]);
        let err = Plan::new(&s, &l, None)
            .unwrap()
            .ensure_applicable(true)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("003_c conflicts with 009_x, which is applied: roll it back first"),
            "{err}"
        );
        assert_eq!(err.kind(), crate::ErrorKind::DependencyNotMet);
    }

    #[test]
    fn renumbered_file_is_an_invalid_set() {
        let s = set(&[("0001_a.sql", A)]);
        let l = ledger(vec![row("001", A, true, false)]);
        assert!(matches!(
            Plan::new(&s, &l, None),
            Err(Error::InvalidMigrationSet { .. })
        ));
    }
}
