//! The runaway guard of batch migrations. A batch statement that selects rows it already did
//! would run forever; nothing in its words tells (a `WITH` first, a view, a partitioned
//! table, a table never analyzed), so it is judged by its effect. Each batch's transaction
//! reads `pg_stat_xact_user_tables` right before and right after the statement, in the
//! batch's one round trip; the difference is what the statement did to each table (those
//! counters also hold the backend's unflushed counts of earlier transactions, hence the
//! difference), grouped by partition root, so a partition counts as its table and a view as
//! the table it writes.
//!
//! The judged quantity is the rows the statement reported since a baseline kept in the
//! ledger: the migration's latest stop as runaway (so the run after a stop judges afresh),
//! or its latest batch run from a different file (an edited statement is judged afresh).
//! It may be at most [`RUNAWAY_FACTOR`] times the rows of the tables it changes, plus
//! [`RUNAWAY_BATCHES`] batches of slack. An insert-only statement is judged against the
//! tables it reads other than its targets (its source) as well; one that reads no table but
//! its targets copies rows within them, and is judged against their rows as of the baseline
//! (else `INSERT INTO t SELECT ... FROM t` that selects its own copies would never stop),
//! unless they held none: then its rows come from no table (`generate_series`) and it
//! cannot be judged. PostgreSQL's estimate
//! (`reltuples`, a partitioned table's leaves summed, never analyzed counting as 0) is the
//! first measure; only when the rows exceed the bound it gives are the tables counted
//! exactly (outside the batch's transaction, once per exceedance), and the statement is
//! stopped only if the rows still exceed the bound the count gives (or if the count fails:
//! then nothing can tell that it ends, and the error says why). Rows the migration
//! deleted from a table count as its rows, and rows it inserted into one do not, so a move
//! within one table is judged against that table. The rows are summed over the tables, so a
//! trigger that keeps a one-row counter adds a table, never a stop.
//!
//! The counters can be blind: a foreign table has none, and with `track_counts` off none
//! count. A statement that reports rows while no table shows a change is then judged against
//! the table its words name (`UPDATE t`, `DELETE FROM t`, `INSERT INTO t`), counted exactly
//! (a foreign table's count runs on its server); one that names none (a `WITH` first) is
//! stopped past the slack, since nothing can tell that it ends.

use std::collections::BTreeMap;

use sqlx::PgConnection;

use crate::error::{Error, SqlError};
use crate::ledger::{self, BatchProgress, LedgerSchema};
use crate::sql;

/// A batch migration stops when it has reported more rows than this many times the rows of
/// the tables it changes, plus [`RUNAWAY_BATCHES`] batches of slack (rows added meanwhile).
pub const RUNAWAY_FACTOR: u64 = 3;
pub const RUNAWAY_BATCHES: u64 = 10;
/// The SQLSTATE recorded when a batch migration was stopped as runaway.
pub const RUNAWAY_SQLSTATE: &str = "SM011";

/// This transaction's counters per partition root, as one JSON text in a column of its own
/// name. Everything is qualified: the session's `search_path` is the migration's business.
pub(crate) const EFFECT_SQL: &str = "SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_array(s.root, s.ins, s.upd, s.del, s.reads))::pg_catalog.text, '[]') AS stepmigrate_effect FROM (\
SELECT coalesce(pg_catalog.pg_partition_root(t.relid), t.relid)::pg_catalog.int8 AS root, pg_catalog.sum(t.n_tup_ins)::pg_catalog.int8 AS ins, pg_catalog.sum(t.n_tup_upd)::pg_catalog.int8 AS upd, pg_catalog.sum(t.n_tup_del)::pg_catalog.int8 AS del, pg_catalog.sum(coalesce(t.seq_scan, 0) + coalesce(t.idx_scan, 0))::pg_catalog.int8 AS reads \
FROM pg_catalog.pg_stat_xact_user_tables t \
WHERE t.n_tup_ins + t.n_tup_upd + t.n_tup_del + coalesce(t.seq_scan, 0) + coalesce(t.idx_scan, 0) > 0 GROUP BY 1) s";

/// The column [`EFFECT_SQL`] answers in.
pub(crate) const EFFECT_COLUMN: &str = "stepmigrate_effect";

/// Counters of one partition root: inserted, updated, deleted, scans.
type Counters = [i64; 4];

/// What a statement did to each table, from [`EFFECT_SQL`] before and after it.
fn effect(before: &str, after: &str) -> BTreeMap<u32, Counters> {
    let parse = |text: &str| -> BTreeMap<u32, Counters> {
        serde_json::from_str::<Vec<[i64; 5]>>(text)
            .unwrap_or_default()
            .into_iter()
            .map(|[root, ins, upd, del, reads]| (root as u32, [ins, upd, del, reads]))
            .collect()
    };
    let before = parse(before);
    parse(after)
        .into_iter()
        .filter_map(|(root, after)| {
            let was = before.get(&root).copied().unwrap_or_default();
            let d: Counters = std::array::from_fn(|i| (after[i] - was[i]).max(0));
            d.iter().any(|&n| n > 0).then_some((root, d))
        })
        .collect()
}

/// What a batch changed when its own count says none, from [`EFFECT_SQL`] before and after
/// it, as [`Counted`] says which changes count.
pub(crate) fn changed_in_place(before: &str, after: &str, counted: &Counted) -> u64 {
    effect(before, after)
        .iter()
        .map(|(root, &[ins, upd, del, _])| {
            let ins = if counted.inserts { ins } else { 0 };
            let in_place = if counted.updates_and_deletes
                && counted.only.as_ref().is_none_or(|own| own.contains(root))
            {
                upd + del
            } else {
                0
            };
            (ins + in_place).max(0) as u64
        })
        .sum()
}

/// Which of the rows a batch changed count when its statement's count says none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Counted {
    /// An INSERT or MERGE, whose count says none when a trigger stores each row elsewhere
    /// and returns NULL (inheritance routing, a view's INSTEAD OF trigger).
    pub inserts: bool,
    /// Rows updated or deleted: after a `WITH`, whose final command's count is the
    /// statement's (`WITH gone AS (DELETE ... RETURNING *) INSERT INTO archive SELECT * FROM
    /// gone WHERE important` deletes while it reports none), in every table; for an UPDATE or
    /// DELETE, in its own table and the tables that inherit from it only ([`Counted::only`]: a
    /// BEFORE trigger that turns a DELETE into an UPDATE and returns NULL), never in another:
    /// a counter a trigger bumps on each statement would keep a finished migration running;
    /// of a view, in every table (its INSTEAD OF trigger writes where it writes).
    pub updates_and_deletes: bool,
    /// The tables (partition root oids) whose updates and deletes count, if not all do.
    pub only: Option<std::collections::BTreeSet<u32>>,
}

impl Counted {
    /// What counts for `statement`, whose target (as its words name it) is `target`.
    pub(crate) fn of(statement: &crate::sql::Statement<'_>, target: &Target) -> Counted {
        let verb = statement.main_verb.as_deref().unwrap_or_default();
        // After a WITH, any of its commands may be the one that changed rows (an INSERT in a
        // CTE whose RETURNING a routing trigger left empty, under a final UPDATE).
        let with = statement.keywords.first().map(String::as_str) == Some("WITH");
        let in_place = matches!(verb, "UPDATE" | "DELETE");
        Counted {
            inserts: with || matches!(verb, "INSERT" | "MERGE"),
            updates_and_deletes: with || (in_place && !matches!(target, Target::Unknown)),
            only: match target {
                Target::Tables(own) if !with => Some(own.clone()),
                _ => None,
            },
        }
    }
}

/// What a batch statement's target is, as the catalog has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A table (or foreign table), with the tables that inherit from it (partition root oids).
    Tables(std::collections::BTreeSet<u32>),
    /// A view: where its rows go is its triggers' business.
    View,
    /// Not named (a `WITH` first) or not found.
    Unknown,
}

impl Target {
    /// `table` as written in the statement, resolved on `conn`.
    pub(crate) async fn of(conn: &mut sqlx::PgConnection, table: Option<&str>) -> Target {
        let Some(table) = table else {
            return Target::Unknown;
        };
        let rows: Result<Vec<(i64, String)>, _> = sqlx::query_as(
            "WITH RECURSIVE own(oid) AS (SELECT pg_catalog.to_regclass($1)::pg_catalog.oid
                 UNION SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN own ON i.inhparent = own.oid)
             SELECT c.oid::pg_catalog.int8, c.relkind::pg_catalog.text FROM own JOIN pg_catalog.pg_class c ON c.oid = own.oid",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await;
        match rows {
            Ok(rows) if rows.iter().any(|(_, kind)| kind == "v") => Target::View,
            Ok(rows) if !rows.is_empty() => {
                Target::Tables(rows.into_iter().map(|(oid, _)| oid as u32).collect())
            }
            _ => Target::Unknown,
        }
    }
}

/// Where the judged rows count from.
#[derive(Debug, Clone, Default)]
struct Baseline {
    progress: BatchProgress,
    /// Why the count starts there, for the message; `None`: the migration's first batch.
    since: Option<String>,
}

/// A table (partition root) the statement touched.
#[derive(Debug, Clone, Default)]
struct Table {
    name: String,
    partitioned: bool,
    inserted: bool,
    deleted: bool,
    updated: bool,
    read: bool,
    /// `reltuples` (≥ 0), once read.
    estimate: Option<u64>,
    /// Its rows as of the baseline, from an exact count.
    counted: Option<u64>,
}

impl Table {
    fn changed(&self) -> bool {
        self.inserted || self.deleted || self.updated
    }
}

/// The guard of one batch run.
pub(crate) struct Guard {
    baseline: Baseline,
    batch_size: u64,
    tables: BTreeMap<u32, Table>,
    /// An insert that reads only its targets, which held no rows as of the baseline: its rows
    /// come from no table, so nothing bounds them.
    unjudgeable: bool,
    /// The table the statement's words name, and whether it inserts (for blind counters).
    named: Option<(String, bool)>,
    /// The counters showed no change while the statement reported rows.
    blind: bool,
}

impl Guard {
    /// The guard of `version`'s run, its baseline read from the ledger.
    pub(crate) async fn new(
        conn: &mut PgConnection,
        schema: &LedgerSchema,
        version: &str,
        checksum: &str,
        batch_size: u64,
        statement: &str,
    ) -> Result<Guard, Error> {
        let events = schema.qualify("schema_migration_events");
        // The latest stop as runaway, or the latest batch run from another file; the totals
        // of the latest batch committed up to it.
        let row: Option<(String, String, Option<serde_json::Value>)> = sqlx::query_as(&format!(
            "SELECT e.kind, pg_catalog.to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"'),
                    (SELECT b.progress FROM {events} b WHERE b.kind = 'batch' AND b.id <= e.id AND {} ORDER BY b.id DESC LIMIT 1)
             FROM {events} e
             WHERE {} AND ((e.kind = 'failed' AND e.error->>'sqlstate' = $2)
                        OR (e.kind = 'batch' AND e.checksum IS DISTINCT FROM $3))
             ORDER BY e.id DESC LIMIT 1",
            ledger::since_reset_sql(&events, "b", "$1"),
            ledger::since_reset_sql(&events, "e", "$1"),
        ))
        .bind(version)
        .bind(RUNAWAY_SQLSTATE)
        .bind(checksum)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| Error::database(format!("reading the runaway baseline of {version}"), e))?;
        let baseline = row.map_or_else(Baseline::default, |(kind, at, progress)| Baseline {
            progress: progress
                .and_then(|p| serde_json::from_value(p).ok())
                .unwrap_or_default(),
            since: Some(if kind == "failed" {
                format!("its stop as runaway at {at}")
            } else {
                format!("its file changed (the last batch of the old file committed at {at})")
            }),
        });
        let inserts = sql::Tokens(statement)
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("INSERT"));
        Ok(Guard {
            baseline,
            batch_size,
            tables: BTreeMap::new(),
            unjudgeable: false,
            named: crate::batch::target_table(statement).map(|t| (t, inserts)),
            blind: false,
        })
    }

    /// Takes in what a batch's statement did ([`EFFECT_SQL`] before and after it), and reads
    /// the estimate of each table seen for the first time.
    pub(crate) async fn observe(
        &mut self,
        conn: &mut PgConnection,
        before: &str,
        after: &str,
    ) -> Result<(), Error> {
        let mut new = Vec::new();
        for (root, [ins, upd, del, reads]) in effect(before, after) {
            let table = self.tables.entry(root).or_insert_with(|| {
                new.push(root as i64);
                Table::default()
            });
            table.inserted |= ins > 0;
            table.updated |= upd > 0;
            table.deleted |= del > 0;
            table.read |= reads > 0;
        }
        if new.is_empty() {
            return Ok(());
        }
        let rows: Vec<(i64, String, bool, f64)> = sqlx::query_as(
            "SELECT c.oid::pg_catalog.int8, pg_catalog.format('%I.%I', n.nspname, c.relname), c.relkind = 'p',
                    coalesce(CASE WHEN c.relkind = 'p'
                        THEN (SELECT pg_catalog.sum(greatest(l.reltuples, 0)) FROM pg_catalog.pg_partition_tree(c.oid) p
                              JOIN pg_catalog.pg_class l ON l.oid = p.relid WHERE p.isleaf)
                        ELSE greatest(c.reltuples, 0) END, 0)::float8
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid::pg_catalog.int8 = ANY($1)",
        )
        .bind(&new)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| Error::database("reading the estimated rows of a batch's tables", e))?;
        for (oid, name, partitioned, estimate) in rows {
            if let Some(t) = self.tables.get_mut(&(oid as u32)) {
                t.name = name;
                t.partitioned = partitioned;
                t.estimate = Some(estimate as u64);
            }
        }
        Ok(())
    }

    /// The counters are blind: the table the statement's words name stands for what it
    /// changes (none found: [`Guard::tables`] stays empty).
    async fn judge_the_named_table(&mut self, conn: &mut PgConnection) -> Result<(), Error> {
        let Some((name, inserts)) = self.named.clone() else {
            return Ok(());
        };
        let row: Option<(i64, String, bool, f64)> = sqlx::query_as(
            "SELECT c.oid::pg_catalog.int8, pg_catalog.format('%I.%I', n.nspname, c.relname), c.relkind = 'p', greatest(c.reltuples, 0)::float8
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = pg_catalog.to_regclass($1)",
        )
        .bind(&name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| Error::database("reading the table a batch statement names", e))?;
        if let Some((oid, name, partitioned, estimate)) = row {
            self.tables.insert(
                oid as u32,
                Table {
                    name,
                    partitioned,
                    inserted: inserts,
                    updated: !inserts,
                    read: true,
                    estimate: Some(estimate as u64),
                    ..Default::default()
                },
            );
        }
        Ok(())
    }

    /// Blind counters and no table named: stopped past the slack.
    fn blind_stop(&self, progress: BatchProgress, judged_rows: u64) -> SqlError {
        SqlError {
            sqlstate: RUNAWAY_SQLSTATE.to_owned(),
            message: format!(
                "stopped: since {} the statement reported {judged_rows} rows in {} batches, and nothing can tell that it ends: PostgreSQL counted no change on any table (track_counts is off, or it writes a foreign table), and its words name no table to count (a WITH first)",
                self.since(),
                progress.batches.saturating_sub(self.baseline.progress.batches),
            ),
            hint: Some(format!(
                "the {} batches committed so far stay committed. Turn track_counts on for the runner's role, or write the statement as `UPDATE <table> ...` / `DELETE FROM <table> ...` / `INSERT INTO <table> ...`, then run again",
                progress.batches
            )),
            ..Default::default()
        }
    }

    /// The tables the rows are judged against: those the statement changes, and for a
    /// statement that inserts, those it reads too (its source, which may be its target).
    /// `None`: an insert that reads no table (its rows come from `generate_series`,
    /// `VALUES`), or reads only targets that held no rows, which cannot be judged.
    fn judged(&self) -> Option<Vec<u32>> {
        if self.unjudgeable {
            return None;
        }
        let inserts = self.tables.values().any(|t| t.inserted);
        let changes_in_place = self.tables.values().any(|t| t.updated || t.deleted);
        let judged: Vec<u32> = self
            .tables
            .iter()
            .filter(|(_, t)| t.changed() || (inserts && t.read))
            .map(|(&oid, _)| oid)
            .collect();
        let source = judged.iter().any(|oid| !self.tables[oid].changed());
        let reads_its_target = self.tables.values().any(|t| t.inserted && t.read);
        (!judged.is_empty() && (changes_in_place || source || reads_its_target)).then_some(judged)
    }

    /// Whether the statement only inserts into `judged`, reading no other table: a copy
    /// within its targets, bounded by the rows they held as of the baseline.
    fn copies_within_its_targets(&self, judged: &[u32]) -> bool {
        judged.iter().all(|oid| {
            let t = &self.tables[oid];
            t.inserted && !t.updated && !t.deleted
        })
    }

    /// A table's rows as of the baseline, from its count now and the rows the statement
    /// reported since (`judged_rows`): they were its rows when it deletes from it, and are
    /// its own when it inserts into it.
    fn as_of_baseline(t: &Table, count: u64, judged_rows: u64) -> u64 {
        let mut n = count;
        if t.deleted {
            n = n.saturating_add(judged_rows);
        }
        if t.inserted {
            n = n.saturating_sub(judged_rows);
        }
        n
    }

    fn bound(&self, rows: u64) -> u64 {
        rows.saturating_mul(RUNAWAY_FACTOR)
            .saturating_add(self.batch_size.saturating_mul(RUNAWAY_BATCHES))
    }

    /// The rows of `judged`: counted where counted, else estimated.
    fn rows(&self, judged: &[u32]) -> u64 {
        judged
            .iter()
            .map(|oid| &self.tables[oid])
            .map(|t| t.counted.or(t.estimate).unwrap_or(0))
            .fold(0, u64::saturating_add)
    }

    /// After a committed batch whose totals are `progress`: the error that stops the
    /// migration when the statement has reported more rows since the baseline than its
    /// tables can hold (or when they could not be counted to tell). `limits`: the batch's
    /// `SET LOCAL`s, which the count runs with too.
    pub(crate) async fn judge(
        &mut self,
        conn: &mut PgConnection,
        progress: BatchProgress,
        limits: &str,
    ) -> Result<Option<SqlError>, Error> {
        let judged_rows = progress.rows.saturating_sub(self.baseline.progress.rows);
        if judged_rows > 0 && !self.tables.values().any(Table::changed) && !self.blind {
            self.blind = true;
            self.judge_the_named_table(conn).await?;
        }
        if self.blind && self.tables.is_empty() {
            // Nothing to count: past the slack nothing can tell that it ends.
            if judged_rows > self.bound(0) {
                return Ok(Some(self.blind_stop(progress, judged_rows)));
            }
            return Ok(None);
        }
        let Some(judged) = self.judged() else {
            return Ok(None);
        };
        let estimated = self.rows(&judged);
        if judged_rows <= self.bound(estimated) {
            return Ok(None);
        }
        // Over the bound the estimate (or an older count) gives: count, and judge by that.
        let counts = judged
            .iter()
            .map(|oid| {
                let t = &self.tables[oid];
                // A partitioned table's rows are its partitions'; another table's are its
                // own, not its inheritance children's.
                let only = if t.partitioned { "" } else { "ONLY " };
                format!("(SELECT pg_catalog.count(*) FROM {only}{})", t.name)
            })
            .collect::<Vec<_>>()
            .join(", ");
        let script =
            format!("BEGIN;{limits}SELECT ARRAY[{counts}]::pg_catalog.int8[] AS counts;COMMIT");
        let counted = match sqlx::raw_sql(&script).fetch_all(&mut *conn).await {
            Ok(rows) => rows
                .first()
                .and_then(|r| sqlx::Row::try_get::<Vec<i64>, _>(r, 0).ok())
                .unwrap_or_default(),
            Err(e) => {
                let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
                let sqlx::Error::Database(db) = e else {
                    return Err(Error::database("counting the rows of a batch's tables", e));
                };
                return Ok(Some(self.uncounted(
                    &judged,
                    progress,
                    judged_rows,
                    estimated,
                    &*db,
                )));
            }
        };
        for (oid, count) in judged.iter().zip(counted) {
            if let Some(t) = self.tables.get_mut(oid) {
                t.counted = Some(Self::as_of_baseline(t, count.max(0) as u64, judged_rows));
            }
        }
        let rows = self.rows(&judged);
        if rows == 0 && self.copies_within_its_targets(&judged) {
            // Nothing to copy from as of the baseline: its rows come from no table.
            self.unjudgeable = true;
            return Ok(None);
        }
        if judged_rows <= self.bound(rows) {
            return Ok(None);
        }
        Ok(Some(self.runaway(&judged, progress, judged_rows, rows)))
    }

    fn since(&self) -> String {
        self.baseline
            .since
            .clone()
            .unwrap_or_else(|| "its first batch".to_owned())
    }

    fn names(&self, judged: &[u32]) -> String {
        judged
            .iter()
            .map(|oid| self.tables[oid].name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The tables could not be counted (a `statement_timeout`, a lock): the statement
    /// stops all the same, for that reason, since nothing else can tell it ends.
    fn uncounted(
        &self,
        judged: &[u32],
        progress: BatchProgress,
        judged_rows: u64,
        estimated: u64,
        db: &dyn sqlx::error::DatabaseError,
    ) -> SqlError {
        SqlError {
            sqlstate: db.code().map_or_else(|| RUNAWAY_SQLSTATE.to_owned(), |c| c.into_owned()),
            message: format!(
                "since {} the statement reported {judged_rows} rows in {} batches, more than {RUNAWAY_FACTOR} times PostgreSQL's estimate of {estimated} rows for {} plus {RUNAWAY_BATCHES} batches of {}, and counting their rows to tell whether it runs away failed: {}",
                self.since(),
                progress.batches.saturating_sub(self.baseline.progress.batches),
                self.names(judged),
                self.batch_size,
                db.message(),
            ),
            hint: Some(format!(
                "the {} batches committed so far stay committed. If the statement selects only rows not done yet, ANALYZE its tables (so the estimate is current) or give the migration a longer statement_timeout, and run again",
                progress.batches
            )),
            ..Default::default()
        }
    }

    fn runaway(
        &self,
        judged: &[u32],
        progress: BatchProgress,
        judged_rows: u64,
        rows: u64,
    ) -> SqlError {
        let names: Vec<String> = judged
            .iter()
            .map(|oid| {
                let t = &self.tables[oid];
                let n = t.counted.unwrap_or_default();
                let role = if t.changed() { "" } else { ", read" };
                format!("{} ({n} rows{role})", t.name)
            })
            .collect();
        let since = self.since();
        let copy = if self.copies_within_its_targets(judged) {
            " If its rows come from a function (`generate_series`) rather than from the table it reads, generate them into a table of their own in an earlier migration and insert from that table."
        } else {
            ""
        };
        SqlError {
            sqlstate: RUNAWAY_SQLSTATE.to_owned(),
            message: format!(
                "stopped as runaway: since {since} the statement reported {judged_rows} rows in {} batches, more than {RUNAWAY_FACTOR} times the {rows} rows of {} (counted exactly, rows it deleted added back and rows it inserted left out{blind}) plus {RUNAWAY_BATCHES} batches of {}: most likely it selects rows it already did, so it would never end (a statement that selects only rows not done yet reports that many only if each row of its tables makes more than {RUNAWAY_FACTOR})",
                progress.batches.saturating_sub(self.baseline.progress.batches),
                names.join(", "),
                self.batch_size,
                blind = if self.blind {
                    "; PostgreSQL counted no change on any table (track_counts off, or a foreign table), so the table its words name stands for what it changes"
                } else {
                    ""
                },
            ),
            hint: Some(format!(
                "the {} batches committed so far stay committed. Fix the statement so that it selects only rows not done yet (e.g. `WHERE <column it sets> IS NULL`, `WHERE NOT EXISTS (...)`), then run again: the next run judges it afresh. If it is right and each row makes more than {RUNAWAY_FACTOR} (a fan-out, e.g. 12 rows per order), run `up` again: each run goes on from the stop, by {RUNAWAY_FACTOR} times the rows again.{copy}",
                progress.batches
            )),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effect_is_the_difference_of_the_counters() {
        let d = effect(
            "[[10, 5, 0, 0, 2], [11, 0, 0, 0, 1]]",
            "[[10, 5, 100, 0, 4], [11, 0, 0, 0, 1], [12, 7, 0, 0, 0]]",
        );
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[&10], [0, 100, 0, 2]);
        assert_eq!(d[&12], [7, 0, 0, 0]);
    }

    fn guard(tables: &[(u32, Table)]) -> Guard {
        Guard {
            baseline: Baseline::default(),
            batch_size: 100,
            tables: tables.iter().cloned().collect(),
            unjudgeable: false,
            named: None,
            blind: false,
        }
    }

    #[test]
    fn an_insert_is_judged_against_its_source_and_one_from_nowhere_is_not_judged() {
        let target = Table {
            inserted: true,
            read: true,
            ..Default::default()
        };
        let source = Table {
            read: true,
            ..Default::default()
        };
        assert_eq!(
            guard(&[(1, target.clone()), (2, source.clone())]).judged(),
            Some(vec![1, 2])
        );
        assert_eq!(
            guard(&[(1, target.clone())]).judged(),
            Some(vec![1]),
            "an insert that reads only its target copies within it"
        );
        let blind = Table {
            inserted: true,
            ..Default::default()
        };
        assert_eq!(guard(&[(1, blind)]).judged(), None, "rows from no table");
        let mut empty = guard(&[(1, target.clone())]);
        empty.unjudgeable = true;
        assert_eq!(empty.judged(), None);
        let updated = Table {
            updated: true,
            read: true,
            ..Default::default()
        };
        assert_eq!(
            guard(&[(1, updated.clone()), (2, source)]).judged(),
            Some(vec![1]),
            "an update is judged against the tables it changes"
        );
    }

    #[test]
    fn rows_changed_in_place_are_the_updates_and_deletes() {
        let with = Counted {
            inserts: false,
            updates_and_deletes: true,
            only: None,
        };
        assert_eq!(
            changed_in_place(
                "[[10, 5, 0, 0, 2]]",
                "[[10, 5, 0, 100, 4], [11, 7, 3, 0, 0]]",
                &with
            ),
            103
        );
        assert_eq!(changed_in_place("[]", "[[12, 9, 0, 0, 1]]", &with), 0);
        // An INSERT whose rows a trigger stored elsewhere.
        let insert = Counted {
            inserts: true,
            updates_and_deletes: false,
            only: None,
        };
        assert_eq!(changed_in_place("[]", "[[12, 9, 0, 0, 1]]", &insert), 9);
        // A plain UPDATE's or DELETE's count is the truth but for its own table: a counter
        // its trigger bumps (12) is not its work, a soft delete of its own rows (11) is.
        let delete = Counted {
            inserts: false,
            updates_and_deletes: true,
            only: Some([11].into()),
        };
        assert_eq!(
            changed_in_place("[]", "[[12, 0, 1, 0, 1], [11, 0, 7, 0, 1]]", &delete),
            7
        );
    }

    #[test]
    fn deleted_rows_count_and_inserted_rows_do_not() {
        let moved = Table {
            inserted: true,
            deleted: true,
            ..Default::default()
        };
        assert_eq!(Guard::as_of_baseline(&moved, 1_000, 5_000), 1_000);
        let deleted = Table {
            deleted: true,
            ..Default::default()
        };
        assert_eq!(Guard::as_of_baseline(&deleted, 0, 5_000), 5_000);
        let inserted = Table {
            inserted: true,
            ..Default::default()
        };
        assert_eq!(Guard::as_of_baseline(&inserted, 20_100, 20_000), 100);
    }
}
