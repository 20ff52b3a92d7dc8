//! Rollback planning, pure: which applied migrations a `down` reverts, in which order, with
//! which down script, and why it refuses. The runner reads the ledger (and the down scripts
//! it kept) and runs the plan under the migration lock.
//!
//! A batch migration that failed or was interrupted after some batches committed is partly
//! applied: its state says pending or failed, but the rows of those batches stay changed. A
//! rollback below it reverts it like an applied one, in the order its batches ran, with its
//! down file (nothing was kept in the ledger: it was never applied); its `rolled_back` event
//! makes its progress start over. Without a down script it is refused like an irreversible
//! one, naming the committed batches: never "nothing to roll back" while its rows remain.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::error::{DirtyMigration, Error};
use crate::ledger::{BatchProgress, Ledger, LedgerRow, PartlyApplied, RecordedDown};
use crate::migration::{validate_script, Directives, Migration, MigrationSet, Script, Version};

/// How far back a rollback goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackTarget {
    /// Revert every applied migration above this version (`000`: all of them).
    To(Version),
    /// Revert the last N migrations applied.
    Last(usize),
    /// Revert these migrations, those of them still applied (a plan made before the lock,
    /// carried out under it; one step of a rollback execution).
    Only(Vec<Version>),
}

/// Where a revert's down script comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScriptSource {
    /// The down file of the migration set.
    File,
    /// The copy the ledger kept when the migration was applied.
    Ledger,
}

/// One migration to revert, with the script that reverts it.
#[derive(Debug, Clone, Serialize)]
pub struct Revert {
    pub version: Version,
    pub name: String,
    pub source: ScriptSource,
    /// The down file, or where it would be for a script from the ledger.
    #[serde(serialize_with = "crate::error::lossy_path")]
    pub path: PathBuf,
    #[serde(skip)]
    pub sql: String,
    /// The checksum of the script that runs.
    pub checksum: String,
    pub transactional: bool,
    /// The down file differs from the copy kept when the migration was applied.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub file_changed: bool,
    #[serde(skip)]
    pub directives: Directives,
    /// The migration's checksum as the ledger recorded it (kept on the rollback's events).
    #[serde(skip)]
    pub recorded_checksum: String,
    /// A partly applied batch migration (failed or interrupted, never applied): the batches
    /// it committed, which this revert undoes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batches: Option<BatchProgress>,
}

impl Revert {
    /// The down script as the applier runs a migration: under the migration's version and
    /// name, with the script's own header, and the recorded checksum for its events.
    pub fn as_migration(&self) -> Migration {
        Migration {
            version: self.version.clone(),
            name: self.name.clone(),
            path: self.path.clone(),
            sql: self.sql.clone(),
            as_written: None,
            checksum: self.recorded_checksum.clone(),
            directives: self.directives.clone(),
            down: None,
        }
    }
}

/// What a rollback would do: the reverts, newest applied first.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackPlan {
    pub target: RollbackTarget,
    pub reverts: Vec<Revert>,
    pub warnings: Vec<String>,
    /// The ledger's newest applied event when it was planned (see
    /// [`ensure_nothing_applied_since`]).
    pub seen_event: Option<i64>,
}

/// The applied rows in the order they ran (the ledger's event order; rows adopted from the
/// old runner by their time, then version), with the rows of the partly applied batch
/// migrations ([`partly_applied_rows`]).
fn applied_in_order<'a>(
    ledger: &'a Ledger,
    partly: &'a [LedgerRow],
) -> Vec<(Version, &'a LedgerRow)> {
    let mut applied: Vec<(Version, &LedgerRow)> = ledger
        .migration_rows()
        .filter(|r| r.success && !r.dirty)
        .chain(partly)
        .filter_map(|r| Version::parse(&r.version).map(|v| (v, r)))
        .collect();
    applied.sort_by(|(va, a), (vb, b)| {
        a.event_id
            .cmp(&b.event_id)
            .then(a.applied_at.cmp(&b.applied_at))
            .then(va.cmp(vb))
    });
    applied
}

/// A partly applied batch migration as the row of an applied one: placed by its latest batch,
/// with the checksum its batches ran with.
fn partly_applied_rows(ledger: &Ledger, partly: &[PartlyApplied]) -> Vec<LedgerRow> {
    partly
        .iter()
        .map(|p| {
            let row = ledger.migration_rows().find(|r| r.version == p.version);
            LedgerRow {
                version: p.version.clone(),
                name: p.name.clone(),
                applied_at: row.and_then(|r| r.applied_at),
                checksum: p
                    .checksum
                    .clone()
                    .or_else(|| row.and_then(|r| r.checksum.clone())),
                execution_time_ms: None,
                success: false,
                dirty: false,
                run_id: row.and_then(|r| r.run_id.clone()),
                error: row.and_then(|r| r.error.clone()),
                event_id: Some(p.event_id),
            }
        })
        .collect()
}

/// The run id of the events that adopt the old runner's rows (`ledger.sql`).
const ADOPTED_RUN: &str = "adopted";

/// The newest applied event a plan saw: what it must still be under the lock.
fn newest_event(ledger: &Ledger) -> Option<i64> {
    ledger
        .migration_rows()
        .filter(|r| r.success)
        .filter_map(|r| r.event_id)
        .max()
}

/// Under the lock: nothing may have been applied since a plan made earlier (`seen_event`, its
/// [`RollbackPlan::seen_event`]): an `up` between the plan, or its confirmation, and the lock
/// would leave a migration applied above a reverted one. Refused, nothing reverted.
pub fn ensure_nothing_applied_since(
    ledger: &Ledger,
    partly: &[PartlyApplied],
    seen_event: Option<i64>,
) -> Result<(), Error> {
    // The old runner's rows become events (run `adopted`) when the ledger is first upgraded,
    // which may be under this very lock: applied before the plan, not since.
    let since: Vec<String> = ledger
        .migration_rows()
        .filter(|r| r.success && r.event_id > seen_event)
        .filter(|r| r.run_id.as_deref() != Some(ADOPTED_RUN))
        .map(|r| r.name.clone())
        // A batch committed since is applied in part: the plan did not see its rows.
        .chain(
            partly
                .iter()
                .filter(|p| Some(p.event_id) > seen_event)
                .map(|p| format!("{} (in part: batches committed)", p.name)),
        )
        .collect();
    if since.is_empty() {
        return Ok(());
    }
    Err(Error::RollbackRefused {
        reasons: vec![format!(
            "{} applied since the rollback was planned; nothing was rolled back: plan it again",
            since.join(", ")
        )],
    })
}

/// Plans a rollback. Refuses (naming every migration and why) when one to revert is
/// irreversible or has no down script, when one is required by a migration that stays
/// applied, and when any migration is dirty. `use_file` runs the down files even where the
/// ledger kept another script. `partly` are the partly applied batch migrations (see the
/// module's documentation).
pub fn plan(
    set: &MigrationSet,
    ledger: &Ledger,
    recorded: &HashMap<String, RecordedDown>,
    partly: &[PartlyApplied],
    target: &RollbackTarget,
    use_file: bool,
) -> Result<RollbackPlan, Error> {
    // A build at work (it yielded the migration lock) is not dirty: the rollback waits for
    // it, as `up` would.
    if let Some(row) = ledger.migration_rows().find(|r| {
        r.dirty
            && ledger.in_progress.contains(&r.version)
            && Version::parse(&r.version)
                .and_then(|v| set.get(&v))
                .is_some_and(|m| set.yields_lock_for_build(m))
    }) {
        return Err(Error::BuildInProgress {
            name: row.name.clone(),
            waits: false,
        });
    }
    let dirty: Vec<DirtyMigration> = ledger
        .migration_rows()
        .filter(|r| r.dirty)
        .filter_map(|r| {
            Some(DirtyMigration {
                version: Version::parse(&r.version)?,
                name: r.name.clone(),
                error: r.error.clone(),
                still_running: ledger.in_progress.contains(&r.version),
            })
        })
        .collect();
    if !dirty.is_empty() {
        return Err(Error::Dirty { migrations: dirty });
    }
    let partly_rows = partly_applied_rows(ledger, partly);
    let applied = applied_in_order(ledger, &partly_rows);
    let progress_of = |row: &LedgerRow| {
        partly
            .iter()
            .find(|p| p.version == row.version && !row.success)
            .map(|p| p.progress)
    };
    let selected: Vec<usize> = match target {
        RollbackTarget::To(to) => {
            let known = to.number() == 0
                || set.get(to).is_some()
                || applied.iter().any(|(v, _)| v.number() == to.number());
            if !known {
                return Err(Error::InvalidInput(format!(
                    "target version `{to}` is neither in the migration set nor applied (use 000 to roll back everything)"
                )));
            }
            (0..applied.len())
                .filter(|&i| applied[i].0.number() > to.number())
                .collect()
        }
        RollbackTarget::Last(0) => {
            return Err(Error::InvalidInput(
                "--last needs at least 1 migration".into(),
            ))
        }
        RollbackTarget::Last(n) => (applied.len().saturating_sub(*n)..applied.len()).collect(),
        RollbackTarget::Only(versions) => (0..applied.len())
            .filter(|&i| versions.iter().any(|v| v.number() == applied[i].0.number()))
            .collect(),
    };

    let mut reasons = Vec::new();
    let mut warnings = Vec::new();
    let mut reverts = Vec::new();
    for &i in selected.iter().rev() {
        let (version, row) = &applied[i];
        let file = set
            .get(version)
            .filter(|m| m.version.as_str() == version.as_str());
        let batches = progress_of(row);
        // Never applied, so nothing was kept: its down file is what reverts its batches.
        let kept = recorded.get(&row.version).filter(|_| batches.is_none());
        match revert_of(version, row, file, kept, use_file, &mut warnings) {
            Ok(r) => reverts.push(Revert { batches, ..r }),
            Err(why) => reasons.push(match batches {
                Some(b) => format!(
                    "{}: {why}; it is partly applied: {} batch(es) committed, {} rows changed, which stay until a down script reverts them (or roll back only to {})",
                    row.name, b.batches, b.rows, row.version
                ),
                None => format!("{}: {why}", row.name),
            }),
        }
    }
    // What each applied migration requires: its file's header, else (older code, no file)
    // what the ledger kept when it was applied.
    let requires_of = |version: &Version, row: &LedgerRow| -> Vec<u64> {
        match set
            .get(version)
            .filter(|m| m.version.as_str() == row.version)
        {
            Some(m) => m.directives.requires.iter().map(Version::number).collect(),
            None => recorded
                .get(&row.version)
                .map(|r| {
                    r.requires
                        .iter()
                        .filter_map(|v| Version::parse(v))
                        .map(|v| v.number())
                        .collect()
                })
                .unwrap_or_default(),
        }
    };
    // A requirement reverted under a migration that stays applied.
    for (i, (version, row)) in applied.iter().enumerate() {
        if selected.contains(&i) {
            continue;
        }
        for required in requires_of(version, row) {
            if let Some(r) = reverts.iter().find(|r| r.version.number() == required) {
                reasons.push(format!(
                    "{}: required by {}, which stays applied (`requires = {}` in its header); roll that one back too, or keep {}",
                    r.name, row.name, r.version, r.name
                ));
            }
        }
    }
    // A migration is reverted before the ones it requires, whatever order they ran in; and
    // otherwise newest applied first. A requirement re-run after its dependents moves after
    // them, not the dependents before everything that ran after them: each step takes the
    // newest applied migration that nothing left to revert requires. (With 002 requiring
    // 001, 003 built on 002, and 001 re-run last: 003, 002, 001; moving 002 to the front
    // would revert it under 003.)
    let requirements: Vec<Vec<u64>> = reverts
        .iter()
        .map(|r| {
            applied
                .iter()
                .find(|(v, _)| v.number() == r.version.number())
                .map_or_else(Vec::new, |(v, row)| requires_of(v, row))
        })
        .collect();
    let mut remaining: Vec<usize> = (0..reverts.len()).collect();
    let mut order: Vec<usize> = Vec::with_capacity(reverts.len());
    while !remaining.is_empty() {
        let free = remaining.iter().position(|&k| {
            let version = reverts[k].version.number();
            !remaining
                .iter()
                .any(|&other| other != k && requirements[other].contains(&version))
        });
        // A requirement sorts earlier (validated at load), so there is no cycle; an old
        // ledger's kept requirements could make one: newest first then.
        order.push(remaining.remove(free.unwrap_or(0)));
    }
    let mut slots: Vec<Option<Revert>> = reverts.into_iter().map(Some).collect();
    let reverts: Vec<Revert> = order.iter().filter_map(|&k| slots[k].take()).collect();
    if !reasons.is_empty() {
        return Err(Error::RollbackRefused { reasons });
    }
    Ok(RollbackPlan {
        target: target.clone(),
        reverts,
        warnings,
        // The batches it saw count as seen: only those committed later stop the rollback.
        seen_event: newest_event(ledger).max(partly.iter().map(|p| p.event_id).max()),
    })
}

/// The revert of one applied migration, or why there is none.
fn revert_of(
    version: &Version,
    row: &LedgerRow,
    file: Option<&Migration>,
    recorded: Option<&RecordedDown>,
    use_file: bool,
    warnings: &mut Vec<String>,
) -> Result<Revert, String> {
    if file.is_some_and(|m| m.directives.irreversible) {
        return Err("irreversible (its header says `irreversible`)".into());
    }
    let file_down = file.and_then(|m| m.down.as_ref());
    let kept = recorded.and_then(|r| Some((r.sql.as_deref()?, r.checksum.as_deref()?)));
    // Errors must not point at a file that holds another text.
    let ledger_path = || {
        PathBuf::from(format!(
            "{}.down.sql (the copy kept in the ledger)",
            row.name
        ))
    };
    let (source, path, sql, checksum) = match (file_down, kept) {
        (Some(d), _) if use_file => (
            ScriptSource::File,
            d.path.clone(),
            d.sql.clone(),
            d.checksum.clone(),
        ),
        (None, _) if use_file => return Err("has no down file (--use-file)".into()),
        // The migration's file is there and its down file is not: deleted since it was
        // applied (on purpose, or by mistake). Running the kept copy without a word would go
        // against the set as it stands, and against `check`, which says `down` refuses a
        // migration without a down file.
        (None, Some(_)) if file.is_some() => {
            return Err(format!(
                "its down file {}.down.sql was deleted since it was applied: restore it (the copy kept when it was applied is the `down_sql` of its `applied` event in schema_migration_events), or keep the migration applied",
                row.name
            ))
        }
        (file_down, Some((sql, checksum))) => {
            let changed = file_down.is_some_and(|d| d.checksum != checksum);
            if changed {
                warnings.push(format!(
                    "{}: the down file changed since the migration was applied; the copy kept in the ledger runs (--use-file runs the file)",
                    row.name
                ));
            }
            (
                ScriptSource::Ledger,
                ledger_path(),
                sql.to_owned(),
                checksum.to_owned(),
            )
        }
        (Some(d), None) => (
            ScriptSource::File,
            d.path.clone(),
            d.sql.clone(),
            d.checksum.clone(),
        ),
        (None, None) => {
            return Err(if file.is_some() {
                "has no down script: no down file, and none was kept when it was applied (write one, or mark it `irreversible`)".into()
            } else if !row.success {
                // Batches committed, never applied: the down is kept only when it is applied.
                "has no file any more and no down script kept in the ledger (a batch migration not yet applied keeps none): restore its file and its down file to roll back its committed batches".into()
            } else {
                "has no file and no down script kept in the ledger (applied by newer code before it kept them?)".into()
            })
        }
    };
    let directives = validate_script(&path, &sql, Script::Down).map_err(|problems| {
        problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    if let Some(m) = file {
        if row
            .checksum
            .as_deref()
            .is_some_and(|c| !c.eq_ignore_ascii_case(&m.checksum))
        {
            warnings.push(format!(
                "{}: its file changed since it ran here; the down it runs ({}) must revert what ran then",
                row.name,
                path.display()
            ));
        }
    }
    Ok(Revert {
        version: version.clone(),
        name: row.name.clone(),
        file_changed: source == ScriptSource::Ledger
            && file_down.is_some_and(|d| d.checksum != checksum),
        source,
        path,
        sql,
        checksum,
        transactional: directives.mode == crate::migration::Mode::Transactional,
        directives,
        recorded_checksum: row.checksum.clone().unwrap_or_default(),
        batches: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::LedgerKind;
    use crate::migration::checksum;

    use crate::migration::test_set as set;

    fn ledger(set: &MigrationSet, applied: &[(&str, i64)]) -> Ledger {
        Ledger {
            kind: LedgerKind::EventSourced,
            rows: applied
                .iter()
                .map(|(v, id)| {
                    let m = set.get(&Version::parse(v).unwrap());
                    LedgerRow {
                        version: (*v).into(),
                        name: m.map_or_else(|| format!("{v}_gone"), |m| m.name.clone()),
                        applied_at: None,
                        checksum: Some(m.map_or_else(|| "x".into(), |m| m.checksum.clone())),
                        execution_time_ms: Some(1),
                        success: true,
                        dirty: false,
                        run_id: None,
                        error: None,
                        event_id: Some(*id),
                    }
                })
                .collect(),
            projection_missing: false,
            made_pending: Default::default(),
            in_progress: Default::default(),
        }
    }

    fn names(p: &RollbackPlan) -> Vec<&str> {
        p.reverts.iter().map(|r| r.name.as_str()).collect()
    }

    const FILES: [(&str, &str); 6] = [
        ("001_a.sql", "CREATE TABLE a (x int);"),
        ("001_a.down.sql", "DROP TABLE a;"),
        ("002_b.sql", "CREATE TABLE b (x int);"),
        ("002_b.down.sql", "DROP TABLE b;"),
        (
            "003_c.sql",
            "-- stepmigrate: requires = 001\nCREATE TABLE c (x int);",
        ),
        ("003_c.down.sql", ""),
    ];

    #[test]
    fn reverts_above_the_target_newest_applied_first() {
        let s = set(&FILES);
        let l = ledger(&s, &[("001", 1), ("002", 2), ("003", 3)]);
        let none = HashMap::new();
        let to = |v: &str| RollbackTarget::To(Version::parse(v).unwrap());
        let p = plan(&s, &l, &none, &[], &to("001"), false).unwrap();
        assert_eq!(names(&p), ["003_c", "002_b"]);
        assert_eq!(p.reverts[0].source, ScriptSource::File);
        let p = plan(&s, &l, &none, &[], &RollbackTarget::Last(1), false).unwrap();
        assert_eq!(names(&p), ["003_c"]);
        assert!(plan(&s, &l, &none, &[], &to("003"), false)
            .unwrap()
            .reverts
            .is_empty());
        // 002 re-applied last (after a re-run): reverted first.
        let l = ledger(&s, &[("001", 1), ("002", 9), ("003", 3)]);
        let p = plan(&s, &l, &none, &[], &RollbackTarget::Last(2), false).unwrap();
        assert_eq!(names(&p), ["002_b", "003_c"]);
    }

    #[test]
    fn refuses_irreversible_missing_scripts_and_kept_requirements() {
        let s = set(&[
            ("001_a.sql", "CREATE TABLE a (x int);"),
            ("001_a.down.sql", "DROP TABLE a;"),
            ("002_b.sql", "-- stepmigrate: irreversible\nDROP TABLE a;"),
            ("003_c.sql", "CREATE TABLE c (x int);"),
        ]);
        let l = ledger(&s, &[("001", 1), ("002", 2), ("003", 3)]);
        let err = plan(
            &s,
            &l,
            &HashMap::new(),
            &[],
            &RollbackTarget::Last(3),
            false,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::RollbackRefused { .. }));
        assert!(text.contains("002_b: irreversible"), "{text}");
        assert!(text.contains("003_c: has no down script"), "{text}");

        // 003 requires 001; 001 re-run last: reverting only 001 would pull it from under 003.
        let s = set(&FILES);
        let l = ledger(&s, &[("001", 7), ("002", 2), ("003", 3)]);
        let text = plan(
            &s,
            &l,
            &HashMap::new(),
            &[],
            &RollbackTarget::Last(1),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(
            text.contains("001_a: required by 003_c, which stays applied"),
            "{text}"
        );
    }

    /// The ledger's copy of `version`'s down script, as kept when it was applied.
    fn kept_down(version: &str, sql: &str) -> HashMap<String, RecordedDown> {
        [(
            version.to_owned(),
            RecordedDown {
                sql: Some(sql.into()),
                checksum: Some(checksum(sql.as_bytes())),
                requires: Vec::new(),
            },
        )]
        .into()
    }

    #[test]
    fn the_ledgers_copy_runs_unless_the_file_is_asked_for() {
        let s = set(&FILES);
        let l = ledger(&s, &[("001", 1), ("002", 2)]);
        let kept = "DROP TABLE b; -- as applied";
        let recorded = kept_down("002", kept);
        let p = plan(&s, &l, &recorded, &[], &RollbackTarget::Last(1), false).unwrap();
        assert_eq!(p.reverts[0].source, ScriptSource::Ledger);
        assert_eq!(p.reverts[0].sql, kept);
        assert!(p.reverts[0].file_changed);
        assert!(
            p.warnings[0].contains("the down file changed"),
            "{:?}",
            p.warnings
        );
        let p = plan(&s, &l, &recorded, &[], &RollbackTarget::Last(1), true).unwrap();
        assert_eq!(p.reverts[0].source, ScriptSource::File);
        assert_eq!(p.reverts[0].sql, "DROP TABLE b;");
    }

    #[test]
    fn older_code_reverts_with_the_kept_script() {
        // The running code's files stop at 001; 002 was applied by newer code.
        let s = set(&FILES[..2]);
        let l = ledger(&s, &[("001", 1), ("002", 2)]);
        let kept = "-- stepmigrate: no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS i;";
        let recorded = kept_down("002", kept);
        let p = plan(
            &s,
            &l,
            &recorded,
            &[],
            &RollbackTarget::To(Version::parse("001").unwrap()),
            false,
        )
        .unwrap();
        assert_eq!(names(&p), ["002_gone"]);
        assert!(
            !p.reverts[0].transactional,
            "the kept script's header is read"
        );
        let err = plan(
            &s,
            &l,
            &HashMap::new(),
            &[],
            &RollbackTarget::Last(1),
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no down script kept"), "{err}");
    }

    #[test]
    fn a_requirement_re_run_last_moves_after_its_dependents_not_before_the_newer_ones() {
        // 002 requires 001; 003 is built on 002 (a view); runs: 001, 002, 003, 001.
        let s = set(&[
            ("001_a.sql", "CREATE TABLE a (x int);"),
            ("001_a.down.sql", "DROP TABLE a;"),
            (
                "002_b.sql",
                "-- stepmigrate: requires = 001\nCREATE TABLE b (x int);",
            ),
            ("002_b.down.sql", "DROP TABLE b;"),
            ("003_v.sql", "CREATE VIEW v AS SELECT * FROM b;"),
            ("003_v.down.sql", "DROP VIEW v;"),
        ]);
        let l = ledger(&s, &[("001", 4), ("002", 2), ("003", 3)]);
        let to = RollbackTarget::To(Version::parse("000").unwrap());
        let p = plan(&s, &l, &HashMap::new(), &[], &to, false).unwrap();
        assert_eq!(names(&p), ["003_v", "002_b", "001_a"]);
    }

    #[test]
    fn a_down_file_deleted_since_the_apply_is_refused_not_silently_replaced() {
        let s = set(&FILES[..3]); // 002_b.sql without its down file
        let l = ledger(&s, &[("001", 1), ("002", 2)]);
        let kept = "DROP TABLE b;";
        let recorded = kept_down("002", kept);
        let err = plan(&s, &l, &recorded, &[], &RollbackTarget::Last(1), false).unwrap_err();
        assert!(matches!(err, Error::RollbackRefused { .. }));
        assert!(
            err.to_string()
                .contains("002_b: its down file 002_b.down.sql was deleted"),
            "{err}"
        );
    }

    #[test]
    fn a_partly_applied_batch_migration_is_reverted_in_the_order_it_ran_or_refused() {
        let backfill = "-- stepmigrate: batch\nUPDATE a SET x = 1 WHERE x IS NULL AND ctid IN (SELECT ctid FROM a WHERE x IS NULL LIMIT :batch_size);";
        let files = [
            ("001_a.sql", "CREATE TABLE a (x int);"),
            ("001_a.down.sql", "DROP TABLE a;"),
            ("002_fill.sql", backfill),
            ("002_fill.down.sql", "UPDATE a SET x = NULL;"),
            ("003_b.sql", "CREATE TABLE b (x int);"),
            ("003_b.down.sql", "DROP TABLE b;"),
        ];
        let s = set(&files);
        // 002 failed after 003 was applied (after the deploy): its batches ran last.
        let l = ledger(&s, &[("001", 1), ("003", 3)]);
        let progress = BatchProgress {
            batches: 6,
            rows: 6_000,
            batch_rows: 1_000,
        };
        let partly = [PartlyApplied {
            version: "002".into(),
            name: "002_fill".into(),
            checksum: Some(checksum(backfill.as_bytes())),
            progress,
            event_id: 9,
            holds_to: None,
        }];
        // A copy kept by an earlier apply (since rolled back) is not what reverts it.
        let recorded: HashMap<String, RecordedDown> = [(
            "002".to_owned(),
            RecordedDown {
                sql: Some("SELECT 'stale';".into()),
                checksum: Some(checksum(b"SELECT 'stale';")),
                requires: Vec::new(),
            },
        )]
        .into();
        let to = RollbackTarget::To(Version::parse("000").unwrap());
        let p = plan(&s, &l, &recorded, &partly, &to, false).unwrap();
        assert_eq!(names(&p), ["002_fill", "003_b", "001_a"]);
        assert_eq!(p.reverts[0].batches, Some(progress));
        assert_eq!(p.reverts[0].source, ScriptSource::File);
        assert_eq!(p.reverts[0].sql, "UPDATE a SET x = NULL;");
        assert_eq!(p.reverts[1].batches, None);
        let p = plan(&s, &l, &recorded, &partly, &RollbackTarget::Last(1), false).unwrap();
        assert_eq!(names(&p), ["002_fill"]);
        let p = plan(
            &s,
            &l,
            &recorded,
            &partly,
            &RollbackTarget::To(Version::parse("002").unwrap()),
            false,
        )
        .unwrap();
        assert_eq!(names(&p), ["003_b"], "above its own version it stays");

        let irreversible = format!("-- stepmigrate: irreversible\n{backfill}");
        let s = set(&[
            files[0],
            files[1],
            ("002_fill.sql", irreversible.as_str()),
            files[4],
            files[5],
        ]);
        let err = plan(&s, &l, &HashMap::new(), &partly, &to, false).unwrap_err();
        assert!(matches!(err, Error::RollbackRefused { .. }));
        assert!(
            err.to_string().contains(
                "002_fill: irreversible (its header says `irreversible`); it is partly applied: 6 batch(es) committed, 6000 rows changed"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_dirty_migration_blocks_any_rollback() {
        let s = set(&FILES);
        let mut l = ledger(&s, &[("001", 1), ("002", 2)]);
        l.rows[1].dirty = true;
        l.rows[1].success = false;
        assert!(matches!(
            plan(
                &s,
                &l,
                &HashMap::new(),
                &[],
                &RollbackTarget::Last(1),
                false
            ),
            Err(Error::Dirty { .. })
        ));
    }
}
