//! Planner statistics that a rolled-back verification leaves behind.
//!
//! `ANALYZE`, `CREATE INDEX` and `REINDEX` write a table's `reltuples`, `relpages` and
//! `relallvisible` (and its indexes') *in place*: PostgreSQL does not roll them back. Run in
//! `verify --in-transaction-only`'s transaction after a statement that changed the table's
//! rows (a `DELETE` before an `ANALYZE`), they describe rows that the rollback restores: the
//! target's planner would then estimate an emptied table with 100,000 rows as empty. So the
//! verification compares the statistics of the relations that existed before it with those at
//! its end, among the tables whose rows it changed, and after the rollback analyzes those
//! tables again, so that their statistics describe their rows; the report says so. A table
//! whose rows it did not change gets from an index build what `ANALYZE` would give it, and is
//! left alone.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::PgConnection;

/// Statistics per relation (a table, an index, a materialized view): `reltuples`, `relpages`,
/// and the table it belongs to (itself for a table).
type Stats = BTreeMap<i64, (f64, i64, i64)>;

/// Rows inserted, updated or deleted per table, as this backend counts them.
type RowChanges = BTreeMap<i64, i64>;

const STATS_SQL: &str =
    "SELECT c.oid::pg_catalog.int8, c.reltuples::pg_catalog.float8, c.relpages::pg_catalog.int8, coalesce(i.indrelid, c.oid)::pg_catalog.int8
     FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid
     WHERE c.oid >= 16384 AND c.relpersistence <> 't' AND c.relkind IN ('r', 'm', 'i')";

const ROW_CHANGES_SQL: &str =
    "SELECT relid::pg_catalog.int8, (n_tup_ins + n_tup_upd + n_tup_del)::pg_catalog.int8
     FROM pg_catalog.pg_stat_xact_user_tables WHERE n_tup_ins + n_tup_upd + n_tup_del > 0";

/// What the statistics and the row counts were when the verification's transaction began.
pub struct Before {
    stats: Stats,
    rows: RowChanges,
}

/// A table whose statistics the verification wrote from rows it rolled back.
#[derive(Debug, Clone, PartialEq)]
pub struct Overwritten {
    pub oid: i64,
    /// `schema.table`, quoted where needed.
    pub name: String,
    pub reltuples_before: f64,
    pub reltuples_after: f64,
}

/// Reads [`Before`]; inside the verification's transaction, before its first statement.
pub async fn before(conn: &mut PgConnection) -> Result<Before, sqlx::Error> {
    Ok(Before {
        stats: read_stats(conn).await?,
        rows: read_rows(conn).await?,
    })
}

async fn read_stats(conn: &mut PgConnection) -> Result<Stats, sqlx::Error> {
    let rows: Vec<(i64, f64, i64, i64)> = sqlx::query_as(STATS_SQL).fetch_all(&mut *conn).await?;
    Ok(rows
        .into_iter()
        .map(|(oid, tuples, pages, table)| (oid, (tuples, pages, table)))
        .collect())
}

async fn read_rows(conn: &mut PgConnection) -> Result<RowChanges, sqlx::Error> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(ROW_CHANGES_SQL)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.into_iter().collect())
}

/// The tables whose statistics changed since `before` and whose rows the transaction changed;
/// inside the verification's transaction, before its rollback.
pub async fn overwritten(
    conn: &mut PgConnection,
    before: &Before,
) -> Result<Vec<Overwritten>, sqlx::Error> {
    let now = read_stats(conn).await?;
    let rows = read_rows(conn).await?;
    let tables = judge(before, &now, &rows);
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let oids: Vec<i64> = tables.iter().copied().collect();
    let names: Vec<(i64, String)> = sqlx::query_as(
        "SELECT c.oid::pg_catalog.int8, pg_catalog.format('%I.%I', n.nspname, c.relname)
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid::pg_catalog.int8 = ANY($1) ORDER BY 2",
    )
    .bind(&oids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(names
        .into_iter()
        .map(|(oid, name)| Overwritten {
            oid,
            name,
            reltuples_before: before.stats.get(&oid).map_or(-1.0, |s| s.0),
            reltuples_after: now.get(&oid).map_or(-1.0, |s| s.0),
        })
        .collect())
}

/// The tables (by oid) whose own or whose indexes' statistics differ between `before` and
/// `now`, among those whose rows changed since `before` (a relation made by the transaction
/// is not in `before`, and goes with it).
fn judge(before: &Before, now: &Stats, rows: &RowChanges) -> BTreeSet<i64> {
    let changed_rows = |table: &i64| {
        rows.get(table).copied().unwrap_or(0) > before.rows.get(table).copied().unwrap_or(0)
    };
    now.iter()
        .filter_map(|(oid, &(tuples, pages, table))| {
            let &(was_tuples, was_pages, _) = before.stats.get(oid)?;
            let differs = tuples != was_tuples || pages != was_pages;
            (differs && changed_rows(&table)).then_some(table)
        })
        .filter(|table| before.stats.contains_key(table))
        .collect()
}

/// After the rollback: `ANALYZE` of `tables`, so that their statistics describe their rows
/// again, under `lock_timeout` (it waits only for a vacuum or DDL on them). The error, if it
/// failed, for the report.
pub async fn analyze_again(
    conn: &mut PgConnection,
    tables: &[Overwritten],
    lock_timeout: &str,
) -> Option<String> {
    if tables.is_empty() {
        return None;
    }
    let names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    let script = format!(
        "SET lock_timeout = '{lock_timeout}';ANALYZE {};RESET lock_timeout",
        names.join(", ")
    );
    match sqlx::raw_sql(&script).execute(&mut *conn).await {
        Ok(_) => None,
        Err(e) => {
            let _ = sqlx::raw_sql("RESET lock_timeout")
                .execute(&mut *conn)
                .await;
            Some(match e {
                sqlx::Error::Database(db) => db.message().to_owned(),
                other => other.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tables_whose_rows_changed_and_whose_statistics_moved_are_named() {
        let before = Before {
            // 1: a table, 2: its index, 3: a table whose stats an index build refreshed,
            // 4: a table whose rows changed but whose stats did not move.
            stats: [
                (1, (100_000.0, 443, 1)),
                (2, (100_000.0, 276, 1)),
                (3, (90.0, 1, 3)),
                (4, (10.0, 1, 4)),
            ]
            .into(),
            rows: [(1, 5), (4, 1)].into(),
        };
        let now: Stats = [
            (1, (100_000.0, 443, 1)),
            (2, (0.0, 276, 1)),
            (3, (100.0, 1, 3)),
            (4, (10.0, 1, 4)),
            // Made by the transaction.
            (5, (0.0, 0, 5)),
        ]
        .into();
        let rows: RowChanges = [(1, 100_005), (4, 2), (5, 10)].into();
        assert_eq!(
            judge(&before, &now, &rows).into_iter().collect::<Vec<_>>(),
            [1]
        );
        // The counts carried over from earlier transactions are no change of this one.
        let unchanged: RowChanges = [(1, 5), (4, 1)].into();
        assert!(judge(&before, &now, &unchanged).is_empty());
    }
}
