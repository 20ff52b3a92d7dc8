//! The user relations as the catalog has them at one moment, and what changed between two
//! moments: rewrites (a new file node) and new indexes with their validity.

use std::collections::BTreeMap;

use sqlx::PgConnection;

use super::report::{NewIndex, Rewrite};
use crate::error::Error;

/// `pg_class.relkind` in words.
pub fn relkind_name(relkind: &str) -> &'static str {
    match relkind {
        "r" => "table",
        "p" => "partitioned table",
        "i" => "index",
        "I" => "partitioned index",
        "S" => "sequence",
        "v" => "view",
        "m" => "materialized view",
        "f" => "foreign table",
        "t" => "TOAST table",
        "c" => "composite type",
        _ => "relation",
    }
}

/// A user relation as the catalog has it at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub name: String,
    pub relkind: String,
    pub relfilenode: i64,
    /// For an index: `indisvalid`, and its table.
    pub index: Option<(bool, String)>,
    /// For an index, its table's oid.
    pub table_oid: Option<i64>,
}

/// The user relations by oid: the before/after that rewrites and new indexes are read from.
pub type Catalog = BTreeMap<i64, Relation>;

/// Relations whose storage changed, and indexes that did not exist before.
pub fn compare_catalogs(before: &Catalog, after: &Catalog) -> (Vec<Rewrite>, Vec<NewIndex>) {
    let mut rewrites = Vec::new();
    let mut new_indexes = Vec::new();
    for (oid, rel) in after {
        match before.get(oid) {
            // Mapped and partitioned relations have relfilenode 0.
            Some(old) if old.relfilenode != 0 && rel.relfilenode != old.relfilenode => rewrites
                .push(Rewrite {
                    relation: rel.name.clone(),
                    relkind: relkind_name(&rel.relkind).to_owned(),
                }),
            Some(_) => {}
            None => {
                if let Some((valid, table)) = &rel.index {
                    new_indexes.push(NewIndex {
                        name: rel.name.clone(),
                        table: table.clone(),
                        valid: *valid,
                    });
                }
            }
        }
    }
    rewrites.sort_by(|a, b| a.relation.cmp(&b.relation));
    new_indexes.sort_by(|a, b| a.name.cmp(&b.name));
    (rewrites, new_indexes)
}

// User relations only: the catalogs (which the observation queries lock themselves), TOAST
// and temporary schemas are left out.
pub(super) const USER_NAMESPACE: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'";

/// A row of [`read_catalog`]'s query: oid, name, relkind, relfilenode, indisvalid, table.
type CatalogRow = (
    i64,
    String,
    String,
    i64,
    Option<bool>,
    Option<String>,
    Option<i64>,
);

/// The user relations with their storage, or (`only`) just those oids, with index validity
/// and table. User relations have oids from `FirstNormalObjectId` (16384) on; temporary ones
/// are left out.
pub(super) async fn read_catalog(
    conn: &mut PgConnection,
    only: Option<&[i64]>,
) -> Result<Catalog, Error> {
    let sql = format!(
        "SELECT c.oid::pg_catalog.int8, pg_catalog.format('%I.%I', n.nspname, c.relname), c.relkind::pg_catalog.text, c.relfilenode::pg_catalog.int8,
                i.indisvalid, CASE WHEN t.oid IS NOT NULL THEN pg_catalog.format('%I.%I', tn.nspname, t.relname) END, i.indrelid::pg_catalog.int8
         FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid
         LEFT JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
         LEFT JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
         WHERE {USER_NAMESPACE} AND c.relkind IN ('r', 'p', 'i', 'I', 'S', 'm', 'v', 'f'){}",
        if only.is_some() { " AND c.oid::pg_catalog.int8 = ANY($1)" } else { "" }
    );
    let mut query = sqlx::query_as::<_, CatalogRow>(&sql);
    if let Some(oids) = only {
        query = query.bind(oids);
    }
    let rows: Vec<CatalogRow> = query
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| Error::database("reading the catalog", e))?;
    Ok(to_catalog(rows))
}

/// Before a migration, cheaply: every user relation's name, kind and storage, without the
/// joins (a migration late in a long `--in-transaction-only` run sees thousands).
pub(super) async fn read_storage(conn: &mut PgConnection) -> Result<Catalog, Error> {
    let rows: Vec<CatalogRow> = sqlx::query_as(
        "SELECT c.oid::pg_catalog.int8, c.relnamespace::pg_catalog.regnamespace::pg_catalog.text || '.' || pg_catalog.quote_ident(c.relname), c.relkind::pg_catalog.text,
                c.relfilenode::pg_catalog.int8, NULL::pg_catalog.bool, NULL::pg_catalog.text, i.indrelid::pg_catalog.int8
         FROM pg_catalog.pg_class c LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid
         WHERE c.oid >= 16384 AND c.relpersistence <> 't' AND c.relkind IN ('r', 'p', 'i', 'I', 'S', 'm', 'v', 'f')",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::database("reading the catalog", e))?;
    Ok(to_catalog(rows))
}

fn to_catalog(rows: Vec<CatalogRow>) -> Catalog {
    rows.into_iter()
        .map(
            |(oid, name, relkind, relfilenode, valid, table, table_oid)| {
                (
                    oid,
                    Relation {
                        name,
                        relkind,
                        relfilenode,
                        index: valid.map(|v| (v, table.unwrap_or_default())),
                        table_oid,
                    },
                )
            },
        )
        .collect()
}

/// The relations among `locked` whose storage changed since `storage` last saw it (which it
/// then records); relations the migration made itself are recorded, not reported.
pub(super) async fn statement_rewrites(
    conn: &mut PgConnection,
    locked: &[i64],
    before: &Catalog,
    storage: &mut BTreeMap<i64, i64>,
) -> Result<Vec<Rewrite>, Error> {
    if locked.is_empty() {
        return Ok(Vec::new());
    }
    let now: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT c.oid::pg_catalog.int8, c.relfilenode::pg_catalog.int8 FROM pg_catalog.pg_class c WHERE c.oid::pg_catalog.int8 = ANY($1)",
    )
    .bind(locked)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::database("reading the catalog", e))?;
    let mut rewrites = Vec::new();
    for (oid, node) in now {
        match storage.insert(oid, node) {
            // Mapped and partitioned relations have relfilenode 0.
            Some(old) if old != 0 && old != node => {
                if let Some(r) = before
                    .get(&oid)
                    .filter(|r| !r.name.starts_with("pg_toast."))
                {
                    rewrites.push(Rewrite {
                        relation: r.name.clone(),
                        relkind: relkind_name(&r.relkind).to_owned(),
                    });
                }
            }
            _ => {}
        }
    }
    rewrites.sort_by(|a, b| a.relation.cmp(&b.relation));
    Ok(rewrites)
}

/// A relation of a test catalog.
#[cfg(test)]
pub(super) fn rel(
    name: &str,
    relkind: &str,
    relfilenode: i64,
    index: Option<(bool, &str)>,
) -> Relation {
    Relation {
        name: name.into(),
        relkind: relkind.into(),
        relfilenode,
        index: index.map(|(v, t)| (v, t.into())),
        table_oid: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_relfilenode_is_a_rewrite_and_a_new_index_carries_its_validity() {
        let before: Catalog = [
            (1, rel("public.t", "r", 10, None)),
            (2, rel("public.t_pkey", "i", 11, Some((true, "public.t")))),
            (3, rel("public.p", "p", 0, None)),
        ]
        .into();
        let after: Catalog = [
            (1, rel("public.t", "r", 20, None)),
            (2, rel("public.t_pkey", "i", 21, Some((true, "public.t")))),
            (3, rel("public.p", "p", 0, None)),
            (4, rel("public.t_c_idx", "i", 30, Some((false, "public.t")))),
        ]
        .into();
        let (rewrites, new_indexes) = compare_catalogs(&before, &after);
        assert_eq!(
            rewrites
                .iter()
                .map(|r| r.relation.as_str())
                .collect::<Vec<_>>(),
            ["public.t", "public.t_pkey"]
        );
        assert_eq!(
            new_indexes,
            [NewIndex {
                name: "public.t_c_idx".into(),
                table: "public.t".into(),
                valid: false
            }]
        );
        let (rewrites, new_indexes) = compare_catalogs(&before, &before);
        assert!(rewrites.is_empty() && new_indexes.is_empty());
    }
}
