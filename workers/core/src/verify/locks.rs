//! Relation locks: what each mode blocks, in words, the locks a statement took (read from
//! `pg_locks`), and what a migration's transaction holds on each relation until its COMMIT.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::PgConnection;

use super::catalog::{relkind_name, Catalog, USER_NAMESPACE};
use super::report::{LockHeld, LockTaken, StatementReport};

/// What a relation lock mode keeps other sessions from doing (PostgreSQL's conflict table, in
/// plain words).
pub fn blocks(mode: &str) -> &'static str {
    match mode {
        "AccessShareLock" => "only ACCESS EXCLUSIVE locks (DROP, most ALTER TABLE); reads and writes go on",
        "RowShareLock" => "EXCLUSIVE and ACCESS EXCLUSIVE locks; reads go on, and writes of the rows it locks (SELECT ... FOR UPDATE/SHARE) wait until its COMMIT",
        "RowExclusiveLock" => "SHARE and stronger locks (CREATE INDEX without CONCURRENTLY, most ALTER TABLE); reads go on, and writes of the rows it changes wait until its COMMIT",
        "ShareUpdateExclusiveLock" => "schema changes, VACUUM, ANALYZE and CREATE INDEX CONCURRENTLY on it; reads and writes go on",
        "ShareLock" => "writes (INSERT, UPDATE, DELETE); reads go on",
        "ShareRowExclusiveLock" => "writes (INSERT, UPDATE, DELETE) and SHARE locks; reads go on",
        "ExclusiveLock" => "writes and SELECT ... FOR UPDATE/SHARE; plain reads go on",
        "AccessExclusiveLock" => "reads and writes: every query on it waits",
        _ => "unknown lock mode",
    }
}

/// A relation lock mode's level (1: ACCESS SHARE ... 8: ACCESS EXCLUSIVE), 0 if unknown.
pub fn lock_level(mode: &str) -> u8 {
    match mode {
        "AccessShareLock" => 1,
        "RowShareLock" => 2,
        "RowExclusiveLock" => 3,
        "ShareUpdateExclusiveLock" => 4,
        "ShareLock" => 5,
        "ShareRowExclusiveLock" => 6,
        "ExclusiveLock" => 7,
        "AccessExclusiveLock" => 8,
        _ => 0,
    }
}

const MODES: [&str; 8] = [
    "AccessShareLock",
    "RowShareLock",
    "RowExclusiveLock",
    "ShareUpdateExclusiveLock",
    "ShareLock",
    "ShareRowExclusiveLock",
    "ExclusiveLock",
    "AccessExclusiveLock",
];

/// The modes a mode conflicts with, as bits (bit `level - 1`): PostgreSQL's conflict table.
fn conflicts(mode: &str) -> u8 {
    match lock_level(mode) {
        1 => 0b1000_0000,
        2 => 0b1100_0000,
        3 => 0b1111_0000,
        4 => 0b1111_1000,
        5 => 0b1111_0100,
        6 => 0b1111_1100,
        7 => 0b1111_1110,
        8 => 0b1111_1111,
        _ => 0,
    }
}

/// What holding all of `modes` at once blocks, in words: the description of the weakest
/// mode that blocks at least as much (ROW EXCLUSIVE and SHARE together block what SHARE ROW
/// EXCLUSIVE does).
pub fn blocks_together<'a>(modes: impl IntoIterator<Item = &'a str>) -> &'static str {
    let all = modes.into_iter().fold(0u8, |acc, m| acc | conflicts(m));
    MODES
        .iter()
        .find(|m| conflicts(m) & all == all)
        .map_or("unknown lock mode", |m| blocks(m))
}

/// Per relation, the modes the migration's transaction has taken so far, with the line of
/// the statement that took each: what a statement's lock line and the summary are read from.
#[derive(Debug, Default)]
pub(super) struct LocksSoFar(BTreeMap<String, Vec<(String, usize, usize)>>);

impl LocksSoFar {
    /// Records the locks statement number `index` (at `line`) took, and rewrites their
    /// `blocks` to what the transaction's locks on the relation block together: a weak lock
    /// taken after a strong one does not let reads and writes go on.
    pub(super) fn take(
        &mut self,
        locks: &mut [LockTaken],
        line: usize,
        index: usize,
        tables: &BTreeMap<String, String>,
    ) {
        for l in locks.iter() {
            self.0
                .entry(l.relation.clone())
                .or_default()
                .push((l.mode.clone(), line, index));
        }
        for l in locks.iter_mut() {
            let held = &self.0[&l.relation];
            let together = blocks_together(held.iter().map(|(m, _, _)| m.as_str()));
            if together != l.blocks {
                let (strongest, since, _) = strongest(held).expect("recorded above");
                l.blocks = format!(
                    "{together} (the transaction holds {} on it since line {since}, until its COMMIT)",
                    mode_words(strongest)
                );
            }
            // An index is read and written through its table: a weak lock on the index of a
            // table held strongly lets nothing go on.
            let Some((table, held)) = tables
                .get(&l.relation)
                .and_then(|t| Some((t, self.0.get(t)?)))
            else {
                continue;
            };
            let (strongest, since, _) = strongest(held).expect("not empty");
            if lock_level(strongest) > lock_level(&l.mode) {
                l.blocks = format!(
                    "{} (through its table {table}, which the transaction holds {} since line {since}, until its COMMIT)",
                    blocks_together(held.iter().map(|(m, _, _)| m.as_str())),
                    mode_words(strongest)
                );
            }
        }
    }

    /// The summary: per existing relation, its strongest mode (the first statement that took
    /// it), what all its modes block together, and the time from that statement's start
    /// (`starts[index]`, ms from the migration's start) to `end_ms`.
    pub(super) fn held(
        &self,
        statements: &[StatementReport],
        starts: &[f64],
        end_ms: f64,
    ) -> Vec<LockHeld> {
        let existing: BTreeMap<&str, &LockTaken> = statements
            .iter()
            .flat_map(|s| &s.locks)
            .filter(|l| l.existing)
            .map(|l| (l.relation.as_str(), l))
            .collect();
        self.0
            .iter()
            .filter_map(|(relation, modes)| {
                let l = existing.get(relation.as_str())?;
                let (mode, line, index) = strongest(modes)?;
                let start = starts.get(*index).copied().unwrap_or(0.0);
                Some(LockHeld {
                    relation: relation.clone(),
                    relkind: l.relkind.clone(),
                    mode: mode.clone(),
                    blocks: blocks_together(modes.iter().map(|(m, _, _)| m.as_str())).to_owned(),
                    from_line: *line,
                    held_ms: ((end_ms - start).max(0.0) * 100.0).round() / 100.0,
                })
            })
            .collect()
    }
}

/// The strongest of the modes taken, the first statement that took it.
pub(super) fn strongest(modes: &[(String, usize, usize)]) -> Option<&(String, usize, usize)> {
    modes
        .iter()
        .max_by_key(|(m, _, i)| (lock_level(m), std::cmp::Reverse(*i)))
}

/// `AccessExclusiveLock` as people write it: `ACCESS EXCLUSIVE`.
pub fn mode_words(mode: &str) -> String {
    let base = mode.strip_suffix("Lock").unwrap_or(mode);
    let mut out = String::new();
    for (i, c) in base.char_indices() {
        if i > 0 && c.is_ascii_uppercase() {
            out.push(' ');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The relations, each once and in order, on which `locks` holds a mode that `baseline` did not.
pub(super) fn locked_since(baseline: &BTreeSet<(i64, String)>, locks: &[HeldLock]) -> Vec<i64> {
    locks
        .iter()
        .filter(|l| !baseline.contains(&(l.oid, l.mode.clone())))
        .map(|l| l.oid)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// A relation lock this backend holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HeldLock {
    pub oid: i64,
    pub mode: String,
    /// Name and relkind, when the relation is still in the catalog (not dropped).
    pub relation: Option<(String, String)>,
}

/// The locks in `after` that were not in `before`, described against the catalog as it was
/// before the migration (`existing`, and the name of a relation the statement dropped).
pub fn new_locks(
    before: &[HeldLock],
    after: &[HeldLock],
    catalog_before: &Catalog,
) -> Vec<LockTaken> {
    let held: BTreeSet<(i64, &str)> = before.iter().map(|l| (l.oid, l.mode.as_str())).collect();
    let mut taken: Vec<LockTaken> = after
        .iter()
        .filter(|l| !held.contains(&(l.oid, l.mode.as_str())))
        .filter_map(|l| {
            let known = catalog_before.get(&l.oid);
            let (relation, relkind) = match (&l.relation, known) {
                (Some((name, kind)), _) => (name.clone(), relkind_name(kind).to_owned()),
                (None, Some(r)) => (
                    format!("{} (dropped)", r.name),
                    relkind_name(&r.relkind).to_owned(),
                ),
                // Neither before nor after: a relation the statement made and dropped itself
                // (the new heap of a table rewrite), locked by nobody else.
                (None, None) => return None,
            };
            // A TOAST table or index is locked with its table, which the report names: its
            // own name (with an OID in it) says nothing more.
            if relation.starts_with("pg_toast.") {
                return None;
            }
            Some(LockTaken {
                relation,
                relkind,
                blocks: blocks(&l.mode).to_owned(),
                mode: l.mode.clone(),
                existing: known.is_some(),
            })
        })
        .collect();
    taken.sort_by(|a, b| a.relation.cmp(&b.relation).then(a.mode.cmp(&b.mode)));
    taken
}

/// This backend's relation locks on user relations (oids from `FirstNormalObjectId`, 16384:
/// the catalogs, which every query locks, are left out cheaply), the ones not in `held` named
/// from the catalog (none when `held` is `None`: a baseline): reading names for every held
/// lock costs milliseconds once a transaction holds hundreds.
pub(super) async fn read_locks(
    conn: &mut PgConnection,
    held: Option<&[HeldLock]>,
) -> Result<Vec<HeldLock>, sqlx::Error> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT l.relation::pg_catalog.int8, l.mode FROM pg_catalog.pg_locks l
         WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted AND l.relation >= 16384
           AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())",
    )
    .fetch_all(&mut *conn)
    .await?;
    let known: Option<BTreeSet<(i64, &str)>> =
        held.map(|h| h.iter().map(|l| (l.oid, l.mode.as_str())).collect());
    let unknown: Vec<i64> = rows
        .iter()
        .filter(|(oid, mode)| {
            known
                .as_ref()
                .is_some_and(|k| !k.contains(&(*oid, mode.as_str())))
        })
        .map(|(oid, _)| *oid)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let names: BTreeMap<i64, (String, String)> = if unknown.is_empty() {
        BTreeMap::new()
    } else {
        let sql = format!(
            "SELECT c.oid::pg_catalog.int8, pg_catalog.format('%I.%I', n.nspname, c.relname), c.relkind::pg_catalog.text
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid::pg_catalog.int8 = ANY($1) AND {USER_NAMESPACE}"
        );
        let named: Vec<(i64, String, String)> = sqlx::query_as(&sql)
            .bind(&unknown)
            .fetch_all(&mut *conn)
            .await?;
        named
            .into_iter()
            .map(|(oid, name, kind)| (oid, (name, kind)))
            .collect()
    };
    let mut locks: Vec<HeldLock> = rows
        .into_iter()
        .map(|(oid, mode)| HeldLock {
            relation: names.get(&oid).cloned(),
            oid,
            mode,
        })
        .collect();
    locks.sort();
    Ok(locks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::catalog::rel;

    fn lock(oid: i64, mode: &str, name: Option<(&str, &str)>) -> HeldLock {
        HeldLock {
            oid,
            mode: mode.into(),
            relation: name.map(|(n, k)| (n.into(), k.into())),
        }
    }

    #[test]
    fn every_lock_mode_says_what_it_blocks() {
        assert!(blocks("AccessExclusiveLock").contains("reads and writes"));
        assert!(blocks("ShareLock").starts_with("writes"));
        assert!(blocks("ShareRowExclusiveLock").starts_with("writes"));
        assert!(blocks("AccessShareLock").contains("reads and writes go on"));
        assert_eq!(blocks("Nonsense"), "unknown lock mode");
    }

    #[test]
    fn only_new_locks_count_and_existing_is_from_before_the_migration() {
        let catalog: Catalog = [(1, rel("public.t", "r", 10, None))].into();
        let before = vec![lock(1, "AccessShareLock", Some(("public.t", "r")))];
        let after = vec![
            lock(1, "AccessShareLock", Some(("public.t", "r"))),
            lock(1, "AccessExclusiveLock", Some(("public.t", "r"))),
            lock(2, "AccessExclusiveLock", Some(("public.new", "r"))),
            lock(3, "AccessExclusiveLock", None),
        ];
        let taken = new_locks(&before, &after, &catalog);
        assert_eq!(taken.len(), 2, "{taken:?}");
        let t = taken.iter().find(|l| l.relation == "public.t").unwrap();
        assert!(t.existing && t.access_exclusive_on_existing());
        assert_eq!(t.relkind, "table");
        let new = taken.iter().find(|l| l.relation == "public.new").unwrap();
        assert!(!new.existing && !new.access_exclusive_on_existing());
        // Made and dropped by the statement itself (a rewrite's new heap): left out. Dropped
        // by it, having existed before: named from before.
        assert!(!taken.iter().any(|l| l.relation.contains("oid 3")));
        let catalog: Catalog = [(4, rel("public.gone", "r", 10, None))].into();
        let taken = new_locks(&[], &[lock(4, "AccessExclusiveLock", None)], &catalog);
        assert_eq!(taken[0].relation, "public.gone (dropped)");
        assert!(taken[0].access_exclusive_on_existing());
    }

    #[test]
    fn toast_relations_are_left_to_their_table() {
        let catalog: Catalog = [(5, rel("pg_toast.pg_toast_16390_index", "i", 10, None))].into();
        let after = [
            lock(5, "AccessExclusiveLock", None),
            lock(
                6,
                "AccessExclusiveLock",
                Some(("pg_toast.pg_toast_16390", "t")),
            ),
        ];
        assert!(new_locks(&[], &after, &catalog).is_empty());
    }
}
