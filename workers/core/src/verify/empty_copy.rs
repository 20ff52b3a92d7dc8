//! An empty copy's results are not the target's: which statements depend on the rows they
//! meet (by their words, and by the target's tables that hold rows), and what the target's
//! statistics say of the tables a migration rewrites or scans.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::report::{MigrationVerification, VerifyOutcome};
use super::IN_TRANSACTION_LOCK_TIMEOUT;
use crate::config::pg_interval;
use crate::db::Database;
use crate::error::Error;
use crate::migration::Migration;
use crate::sql::{self, Statement};

/// How a statement's result depends on the rows it meets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataDependence {
    pub kind: DataKind,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataKind {
    /// It may fail on the target's rows (or change another number of them): unknown on an
    /// empty copy.
    Outcome,
    /// Its time (and the rows it reads or writes) is the target's rows': the copy's is not.
    Cost,
}

/// An existing table a migration rewrites or scans, as the target's statistics have it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetTable {
    pub relation: String,
    /// `pg_class.reltuples` on the target (an estimate; the leaves' sum for a partitioned
    /// table); absent when never analyzed or not found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<i64>,
    /// `pg_total_relation_size` on the target: table, indexes and TOAST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    /// Why a figure is missing, if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Why a statement's result depends on the rows it meets, if it does (by its words: enough
/// to warn, never to pass).
pub fn depends_on_data(statement: &Statement<'_>) -> Option<DataDependence> {
    let words: Vec<String> = sql::Tokens(statement.text)
        .filter(|w| {
            w.chars()
                .next()
                .is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
        .map(str::to_ascii_uppercase)
        .collect();
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let has = |seq: &[&str]| w.windows(seq.len()).any(|x| x == seq);
    let outcome = |reason: &str| {
        Some(DataDependence {
            kind: DataKind::Outcome,
            reason: reason.to_owned(),
        })
    };
    let cost = |reason: &str| {
        Some(DataDependence {
            kind: DataKind::Cost,
            reason: reason.to_owned(),
        })
    };
    let verb = statement.main_verb.as_deref().unwrap_or_default();
    // Large objects are the target's data, which the copy does not have.
    let large_objects = w.iter().any(|x| {
        matches!(
            *x,
            "LO_CREATE"
                | "LO_CREAT"
                | "LO_FROM_BYTEA"
                | "LO_UNLINK"
                | "LO_OPEN"
                | "LO_PUT"
                | "LO_GET"
                | "LO_TRUNCATE"
        )
    }) || has(&["LARGE", "OBJECT"]);
    match (w.first().copied(), w.get(1).copied()) {
        _ if large_objects => outcome(
            "large objects are the target's data, which the copy does not have: whether an OID is taken, or exists, is unknown there",
        ),
        _ if matches!(verb, "UPDATE" | "DELETE" | "MERGE") => {
            outcome("the rows it changes are the target's: how many, and whether a constraint or trigger stops it, is unknown on an empty copy")
        }
        (Some("ALTER"), Some("TABLE")) => {
            if has(&["SET", "NOT", "NULL"]) {
                outcome("SET NOT NULL fails on any NULL among the target's rows")
            } else if has(&["VALIDATE", "CONSTRAINT"]) {
                outcome("validating a constraint fails on the target's rows that break it")
            } else if has(&["ADD"])
                && !has(&["NOT", "VALID"])
                && w.iter().any(|x| {
                    matches!(
                        *x,
                        "CONSTRAINT" | "CHECK" | "UNIQUE" | "PRIMARY" | "FOREIGN" | "EXCLUDE" | "REFERENCES"
                    )
                })
            {
                outcome("a constraint added without NOT VALID is checked against the target's rows, and fails on those that break it")
            } else if has(&["ADD"]) && has(&["NOT", "NULL"]) && !has(&["DEFAULT"]) {
                outcome("a NOT NULL column without a default fails on a table that has rows")
            } else if w.contains(&"TYPE") && w.contains(&"USING") {
                outcome("a type change USING an expression converts the target's values, and fails on those it cannot")
            } else if w.contains(&"TYPE") {
                cost("a type change rewrites the table (or checks every row): its time is the target's rows'")
            } else {
                None
            }
        }
        (Some("CREATE"), Some("UNIQUE")) => {
            outcome("a unique index fails on duplicates among the target's rows")
        }
        (Some("CREATE"), Some("INDEX")) => cost("an index build reads every row of the target's table"),
        (Some("CLUSTER" | "VACUUM"), _) | (Some("REFRESH"), Some("MATERIALIZED")) => {
            cost("it reads and writes every row: its time is the target's rows'")
        }
        _ => None,
    }
}

/// On an empty copy: each statement's dependence on data, and whether the migration's `ok`
/// says anything about the target.
pub(super) fn mark_empty_copy(v: &mut MigrationVerification, m: &Migration) {
    let lexed = sql::split_statements(&m.sql);
    for st in &mut v.statements {
        let statement = lexed.iter().find(|s| s.line == st.line);
        let by_words = statement.and_then(depends_on_data);
        // A TRUNCATE gives its table new, empty storage, and a sequence's is one row: neither
        // takes the time of the target's rows.
        let truncates =
            statement.is_some_and(|s| s.keywords.first().map(String::as_str) == Some("TRUNCATE"));
        let costly = !truncates && st.rewrites.iter().any(|r| r.relkind != "sequence");
        // Outside a transaction no lock is seen, so which tables it reads is not known: code,
        // and a query or DML that reads a table, may meet rows on the target that fail it.
        let reads_outside_transaction = !m.transactional()
            && statement.is_some_and(|s| {
                matches!(s.keywords.first().map(String::as_str), Some("DO" | "CALL"))
                    || (sql::acts_on_rows(s)
                        && s.text
                            .split(|c: char| !c.is_alphanumeric() && c != '_')
                            .any(|w| {
                                ["FROM", "UPDATE", "DELETE", "MERGE", "USING"]
                                    .iter()
                                    .any(|k| w.eq_ignore_ascii_case(k))
                            }))
            });
        st.depends_on_data = by_words
            .or_else(|| {
                reads_outside_transaction.then(|| DataDependence {
                    kind: DataKind::Outcome,
                    reason: "it runs outside a transaction, where the tables it reads are not seen, and reads or changes rows (or runs code): whether it succeeds on the target's rows is unknown on an empty copy".to_owned(),
                })
            })
            .or_else(|| {
                costly.then(|| DataDependence {
                    kind: DataKind::Cost,
                    reason: "it rewrites the table: its time is the target's rows'".to_owned(),
                })
            });
    }
    v.unknown_on_empty_copy = v.outcome == VerifyOutcome::Ok
        && v.statements.iter().any(|s| {
            s.depends_on_data
                .as_ref()
                .is_some_and(|d| d.kind == DataKind::Outcome)
        });
}

/// A statement that locks an existing relation holding rows on the target (`holding`) is
/// unknown on an empty copy unless it is of a kind known not to read or check rows
/// ([`sql::reads_no_rows`]): the words list what is known to be safe, not what is risky.
fn mark_by_target_rows(v: &mut MigrationVerification, m: &Migration, holding: &BTreeSet<String>) {
    let lexed = sql::split_statements(&m.sql);
    // Outside a transaction no lock is seen: the tables it built an index on or rewrote
    // (read from the catalog) stand for what its index builds and rewrites read. An index
    // build over rows can fail on them (an expression, a duplicate, a value too large).
    if !m.transactional() {
        let touched: Vec<&str> = v
            .new_indexes
            .iter()
            .map(|i| i.table.as_str())
            .chain(v.rewrites.iter().map(|r| r.relation.as_str()))
            .filter(|t| holding.contains(*t))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !touched.is_empty() {
            for st in &mut v.statements {
                if st
                    .depends_on_data
                    .as_ref()
                    .is_some_and(|d| d.kind == DataKind::Cost)
                {
                    st.depends_on_data = Some(DataDependence {
                        kind: DataKind::Outcome,
                        reason: format!(
                            "it reads every row of {}, which hold rows on the target (an index expression, a duplicate or a value may fail there): whether it succeeds there is unknown on an empty copy",
                            touched.join(", ")
                        ),
                    });
                }
            }
        }
    }
    let mut unseen: BTreeSet<String> = BTreeSet::new();
    // Relations holding rows on the target that earlier statements of this transaction
    // locked: a later statement taking no stronger lock on one adds no row to `pg_locks`,
    // so what it reads of them is found by its words (it names the relation).
    let mut locked_before: BTreeSet<String> = BTreeSet::new();
    for st in &mut v.statements {
        let Some(statement) = lexed.iter().find(|s| s.line == st.line) else {
            continue;
        };
        let names_it = |relation: &str| mentions_relation(statement.text, relation);
        let held_already: Vec<String> = locked_before
            .iter()
            .filter(|r| names_it(r))
            .cloned()
            .collect();
        locked_before.extend(
            st.locks
                .iter()
                .filter(|l| l.existing && holding.contains(&l.relation))
                .map(|l| l.relation.clone()),
        );
        // Row-level triggers, rules' actions and foreign keys' actions run per row: on the
        // empty copy none ran, so neither did the locks they take on the target.
        let code = matches!(
            statement.keywords.first().map(String::as_str),
            Some("DO" | "CALL")
        );
        if code && !holding.is_empty() {
            unseen.insert("any table its code reaches".to_owned());
        } else if sql::acts_on_rows(statement) {
            unseen.extend(
                st.locks
                    .iter()
                    .filter(|l| l.existing && holding.contains(&l.relation))
                    .map(|l| l.relation.clone()),
            );
        }
        if st
            .depends_on_data
            .as_ref()
            .is_some_and(|d| d.kind == DataKind::Outcome)
        {
            continue;
        }
        // Each relation once: a statement may take several locks on one.
        let held: Vec<&str> = st
            .locks
            .iter()
            .filter(|l| l.existing && holding.contains(&l.relation))
            .map(|l| l.relation.as_str())
            .chain(held_already.iter().map(String::as_str))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // Code (`DO`, `CALL`) may read any table's rows or statistics without a lock on it
        // (`SELECT reltuples FROM pg_class`): with rows on the target, unknown.
        if held.is_empty() && code && !holding.is_empty() {
            st.depends_on_data = Some(DataDependence {
                kind: DataKind::Outcome,
                reason: format!(
                    "it runs code, which may read the rows or statistics of any table ({} hold rows on the target): whether it succeeds there is unknown on an empty copy",
                    holding.len()
                ),
            });
            continue;
        }
        if held.is_empty() || sql::reads_no_rows(statement) {
            continue;
        }
        st.depends_on_data = Some(DataDependence {
            kind: DataKind::Outcome,
            reason: format!(
                "it reads or checks the rows of {}, which hold rows on the target: whether it succeeds there is unknown on an empty copy",
                held.join(", ")
            ),
        });
    }
    v.unknown_on_empty_copy = v.outcome == VerifyOutcome::Ok
        && v.statements.iter().any(|s| {
            s.depends_on_data
                .as_ref()
                .is_some_and(|d| d.kind == DataKind::Outcome)
        });
    if !unseen.is_empty() {
        v.locks_unseen = Some(format!(
            "row-level triggers, rules and foreign-key actions run for each row it changes in {}, which hold rows on the target and none here: the locks they take there are not in this report",
            unseen.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
}

/// Whether `text` names `relation` (`schema.name` as the lock report writes it, quoted where
/// needed): by its bare name as a word, case-insensitively unless quoted. A word that is also
/// a column's name counts too: unknown is the safe answer.
pub(super) fn mentions_relation(text: &str, relation: &str) -> bool {
    let bare = relation
        .rsplit_once('.')
        .map_or(relation, |(_, name)| name)
        .trim_matches('"');
    let quoted = relation.ends_with('"');
    let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
    let hay = if quoted {
        text.to_owned()
    } else {
        text.to_lowercase()
    };
    let needle = if quoted {
        bare.to_owned()
    } else {
        bare.to_lowercase()
    };
    hay.match_indices(&needle).any(|(at, _)| {
        let before = hay[..at].chars().next_back();
        let after = hay[at + needle.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// The copy's relations by name before the pending migrations ran and after, matched by oid:
/// what a relation renamed or moved by a pending migration is called on the target, and which
/// relations the pending migrations made (none of the target's rows).
#[derive(Debug, Default)]
pub(super) struct CopyNames {
    /// Its name on the copy now → its name before the pending migrations (the target's).
    target_name: BTreeMap<String, String>,
    /// Every name before the pending migrations.
    before: BTreeSet<String>,
    /// Made by the pending migrations.
    made: BTreeSet<String>,
}

/// A relation of the copy as the target knows it.
enum OnTarget {
    Named(String),
    /// Made by a pending migration: empty on the target, unless rows of the target's went in.
    Made,
    /// Renamed, then renamed or dropped again: which of the target's it is, is not known.
    Unknown,
}

impl CopyNames {
    /// `before` and `after`: (oid, qualified name) of the copy's relations.
    pub(super) fn new(before: &[(u32, String)], after: &[(u32, String)]) -> CopyNames {
        let by_oid: BTreeMap<u32, &String> = before.iter().map(|(o, n)| (*o, n)).collect();
        let mut names = CopyNames {
            before: before.iter().map(|(_, n)| n.clone()).collect(),
            ..CopyNames::default()
        };
        for (oid, name) in after {
            match by_oid.get(oid) {
                Some(old) => {
                    names.target_name.insert(name.clone(), (*old).clone());
                }
                None => {
                    names.made.insert(name.clone());
                }
            }
        }
        names
    }

    fn on_target(&self, name: &str) -> OnTarget {
        if let Some(old) = self.target_name.get(name) {
            OnTarget::Named(old.clone())
        } else if self.made.contains(name) {
            OnTarget::Made
        } else if self.before.contains(name) || self.before.is_empty() {
            OnTarget::Named(name.to_owned())
        } else {
            OnTarget::Unknown
        }
    }
}

/// The copy's relations, (oid, qualified name), to match before and after with [`CopyNames`].
pub(super) async fn copy_relations(copy: &Database) -> Result<Vec<(u32, String)>, Error> {
    let mut conn = copy.connect().await?;
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT c.oid::int8, pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p', 'm', 'S', 'i', 'I', 'v', 'f')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::database("reading the copy's relations", e))?;
    Ok(rows.into_iter().map(|(o, n)| (o as u32, n)).collect())
}

/// The tables each migration rewrites or scans, as the target's statistics have them, for
/// the migrations whose result depends on data. Read by name (the scratch database's oids
/// are not the target's), in a transaction with a short lock_timeout (the sizes take a
/// share lock); a failure is a warning, not the verification's.
pub(super) async fn fill_target_tables(
    target: &Database,
    pending: &[&Migration],
    migrations: &mut [MigrationVerification],
    warnings: &mut Vec<String>,
    copy_names: &CopyNames,
) {
    // A sequence's value is data too: `ALTER SEQUENCE ... MAXVALUE` or a CHECK over
    // `nextval` depends on where the target's sequence stands.
    let data_kinds = [
        "table",
        "partitioned table",
        "materialized view",
        "sequence",
    ];
    let candidates = |m: &MigrationVerification| -> BTreeSet<String> {
        let locked = m
            .locks_held
            .iter()
            .filter(|l| data_kinds.contains(&l.relkind.as_str()))
            .map(|l| l.relation.clone());
        let rewritten = m
            .rewrites
            .iter()
            .filter(|r| data_kinds.contains(&r.relkind.as_str()))
            .map(|r| r.relation.clone());
        let indexed = m.new_indexes.iter().map(|i| i.table.clone());
        locked
            .chain(rewritten)
            .chain(indexed)
            .map(|n| n.trim_end_matches(" (dropped)").to_owned())
            .collect()
    };
    let wanted = |m: &MigrationVerification| -> BTreeSet<String> {
        if !m.statements.iter().any(|s| s.depends_on_data.is_some()) && m.rewrites.is_empty() {
            return BTreeSet::new();
        }
        candidates(m)
    };
    // The down files whose round trip passed on the copy: each statement that may read rows,
    // with the copy's relations it names (their rows on the target decide it, as for an up).
    let mut downs: BTreeMap<String, Vec<(usize, String, Vec<String>)>> = BTreeMap::new();
    for m in migrations.iter() {
        let Some(super::RoundTrip::Ok {
            unknown_on_target: None,
            ..
        }) = &m.round_trip
        else {
            continue;
        };
        let Some(down) = pending
            .iter()
            .find(|p| p.version == m.version)
            .and_then(|p| p.down.as_ref())
        else {
            continue;
        };
        let reads: Vec<(usize, String, Vec<String>)> = sql::split_statements(&down.sql)
            .iter()
            .filter(|st| !sql::reads_no_rows(st))
            .filter_map(|st| {
                let named: Vec<String> = copy_names
                    .before
                    .iter()
                    .chain(&copy_names.made)
                    .filter(|r| mentions_relation(st.text, r))
                    .cloned()
                    .collect();
                (!named.is_empty()).then(|| (st.line, super::report::summary_of(st.text), named))
            })
            .collect();
        if !reads.is_empty() {
            downs.insert(m.version.to_string(), reads);
        }
    }
    let copy_side: BTreeSet<String> = migrations
        .iter()
        .flat_map(candidates)
        .chain(
            downs
                .values()
                .flatten()
                .flat_map(|(_, _, n)| n.iter().cloned()),
        )
        .collect();
    if copy_side.is_empty() {
        return;
    }
    // Each is read on the target under the name it has there (before the pending migrations
    // renamed or moved it); a relation they made holds none of the target's rows.
    let mut unknown: BTreeSet<String> = BTreeSet::new();
    let mut made: BTreeSet<String> = BTreeSet::new();
    let mut target_name: BTreeMap<String, String> = BTreeMap::new();
    for n in &copy_side {
        match copy_names.on_target(n) {
            OnTarget::Named(t) => {
                target_name.insert(n.clone(), t);
            }
            OnTarget::Made => {
                made.insert(n.clone());
            }
            OnTarget::Unknown => {
                unknown.insert(n.clone());
            }
        }
    }
    let names: Vec<String> = target_name
        .values()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    type Row = (
        String,
        Option<f64>,
        Option<i64>,
        Option<String>,
        Option<i64>,
    );
    let read = async {
        let mut conn = target.connect().await?;
        sqlx::raw_sql(&format!(
            "BEGIN READ ONLY;SET LOCAL lock_timeout = '{}'",
            pg_interval(IN_TRANSACTION_LOCK_TIMEOUT)
        ))
        .execute(&mut *conn)
        .await
        .map_err(|e| Error::database("reading the target's statistics", e))?;
        let rows: Result<Vec<Row>, _> = sqlx::query_as(
            "SELECT n, CASE WHEN c.relkind = 'p' THEN
                        (SELECT sum(pc.reltuples) FROM pg_catalog.pg_partition_tree(c.oid) pt
                         JOIN pg_catalog.pg_class pc ON pc.oid = pt.relid WHERE pt.isleaf AND pc.reltuples >= 0)
                    ELSE c.reltuples END::float8,
                    CASE WHEN c.relkind = 'p' THEN
                        (SELECT sum(pg_catalog.pg_total_relation_size(pt.relid)) FROM pg_catalog.pg_partition_tree(c.oid) pt)
                    WHEN c.oid IS NOT NULL THEN pg_catalog.pg_total_relation_size(c.oid) END::int8,
                    c.relkind::text,
                    CASE WHEN c.relkind = 'p' THEN
                        (SELECT sum(pg_catalog.pg_relation_size(pt.relid)) FROM pg_catalog.pg_partition_tree(c.oid) pt)
                    WHEN c.oid IS NOT NULL THEN pg_catalog.pg_relation_size(c.oid) END::int8
             FROM unnest($1::text[]) n LEFT JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(n)",
        )
        .bind(&names)
        .fetch_all(&mut *conn)
        .await;
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
        rows.map_err(|e| Error::database("reading the target's statistics", e))
    };
    let rows = match read.await {
        Ok(rows) => rows,
        Err(e) => {
            warnings.push(format!(
                "could not read the sizes of the tables the migrations rewrite or scan on the target (so each is taken to hold rows): {e}"
            ));
            // Unknown is not empty: a statement that reads them is unknown too.
            let all: BTreeSet<String> = copy_side;
            for m in migrations.iter_mut() {
                if let Some(migration) = pending.iter().find(|p| p.version == m.version) {
                    mark_by_target_rows(m, migration, &all);
                }
            }
            return;
        }
    };
    // A table holds rows when its statistics say so or its heap has pages (statistics can be
    // stale or missing; pages stay until a vacuum truncates them): either way the copy's
    // empty table answers nothing about it.
    let holding_on_target: BTreeSet<String> = rows
        .iter()
        .filter(|(_, rows, _, _, heap)| {
            rows.is_some_and(|r| r > 0.0) || heap.is_some_and(|h| h > 0)
        })
        .map(|(name, ..)| name.clone())
        .collect();
    // In the copy's names: what holds rows on the target, and what cannot be told apart.
    let mut holding: BTreeSet<String> = target_name
        .iter()
        .filter(|(_, t)| holding_on_target.contains(*t))
        .map(|(copy, _)| copy.clone())
        .chain(unknown.iter().cloned())
        .collect();
    let by_target: BTreeMap<String, TargetTable> = rows
        .into_iter()
        .map(|(name, rows, bytes, relkind, _)| {
            let note = match (&relkind, rows) {
                (None, _) => Some("not on the target".to_owned()),
                (Some(_), Some(r)) if r < 0.0 => {
                    Some("never analyzed on the target: its row count is unknown".to_owned())
                }
                _ => None,
            };
            let table = TargetTable {
                relation: name.clone(),
                rows: rows.filter(|r| *r >= 0.0).map(|r| r.round() as i64),
                bytes,
                note,
            };
            (name, table)
        })
        .collect();
    let stats = |copy: &str| -> Option<TargetTable> {
        if unknown.contains(copy) {
            return Some(TargetTable {
                relation: copy.to_owned(),
                rows: None,
                bytes: None,
                note: Some("renamed by the pending migrations more than once (or dropped since): which of the target's tables it is, and its rows, are unknown".to_owned()),
            });
        }
        if made.contains(copy) {
            return Some(TargetTable {
                relation: copy.to_owned(),
                rows: None,
                bytes: None,
                note: Some(
                    "made by a pending migration: none of its rows are on the target yet"
                        .to_owned(),
                ),
            });
        }
        let target = target_name.get(copy)?;
        let mut table = by_target.get(target)?.clone();
        if target != copy {
            table.note = Some(match table.note {
                Some(n) => format!("{copy} on the copy; {n}"),
                None => format!("{copy} on the copy"),
            });
        }
        Some(table)
    };
    for m in migrations.iter_mut() {
        if let Some(migration) = pending.iter().find(|p| p.version == m.version) {
            // Rows of the target's that a statement put in a table a pending migration made
            // (an INSERT ... SELECT, a CREATE TABLE AS, unknown on an empty copy) are on the
            // target too: that table holds rows for what follows.
            loop {
                mark_by_target_rows(m, migration, &holding);
                let filled: Vec<String> = m
                    .statements
                    .iter()
                    .filter(|s| {
                        s.depends_on_data
                            .as_ref()
                            .is_some_and(|d| d.kind == DataKind::Outcome)
                    })
                    .flat_map(|s| &s.locks)
                    .filter(|l| {
                        matches!(
                            l.mode.as_str(),
                            "RowExclusiveLock"
                                | "ShareRowExclusiveLock"
                                | "ExclusiveLock"
                                | "AccessExclusiveLock"
                        )
                    })
                    .map(|l| l.relation.trim_end_matches(" (dropped)").to_owned())
                    .filter(|r| !holding.contains(r) && copy_names.made.contains(r))
                    .collect();
                if filled.is_empty() {
                    break;
                }
                holding.extend(filled);
            }
        }
        m.target_tables = wanted(m).into_iter().filter_map(|n| stats(&n)).collect();
    }
    // A down that reads a table holding rows on the target proved nothing on the copy.
    for m in migrations.iter_mut() {
        let Some(reads) = downs.get(&m.version.to_string()) else {
            continue;
        };
        let Some(super::RoundTrip::Ok {
            unknown_on_target, ..
        }) = &mut m.round_trip
        else {
            continue;
        };
        *unknown_on_target = reads.iter().find_map(|(line, summary, named)| {
            let held: Vec<&str> = named
                .iter()
                .filter(|n| holding.contains(*n))
                .map(String::as_str)
                .collect();
            (!held.is_empty()).then(|| {
                format!(
                    "its down file, line {line}: {summary}: it reads or checks the rows of {}, which hold rows on the target: whether it succeeds there is unknown on an empty copy",
                    held.join(", ")
                )
            })
        });
    }
}
