//! True words for three squawk rules whose messages are the same whatever the statement does:
//! `changing-column-type` (a table is not always rewritten), `constraint-missing-not-valid`
//! (the lock and the remedy depend on the kind of constraint: NOT VALID does not exist for an
//! EXCLUDE, a UNIQUE or a PRIMARY KEY) and `adding-field-with-default` (a volatile default is
//! not a generated column; a VIRTUAL generated column is not a rewrite).
//!
//! squawk decides where a finding is; this module reads the same statement with PostgreSQL's
//! grammar and says what it does. Each of squawk's findings is matched to the clause it is
//! about by offset within its statement.

use std::collections::{BTreeMap, BTreeSet};

use pg_query::protobuf::node::Node as N;
use pg_query::protobuf::{self, AlterTableType, ConstrType, ObjectType};
use stepmigrate_core::sql;

use crate::tree;
use crate::types::{judge, ColumnType, Columns, Rewrite};

/// What a statement's clause does, for the squawk finding about it.
#[derive(Debug, Clone)]
pub(crate) struct Fact {
    rule: &'static str,
    /// The statement's span in the file, as byte offsets.
    statement: (usize, usize),
    /// Where the clause is (the new type's name, the constraint's start), in the file.
    anchor: usize,
    /// `None`: the finding is not so (a VIRTUAL generated column rewrites nothing).
    pub(crate) says: Option<(String, Option<String>)>,
    /// A finding to make even where squawk makes none (its rule misses a volatile call in an
    /// `ARRAY[...]`, a domain's constraints): what `says` is a rewrite for certain.
    pub(crate) own: bool,
}

impl Fact {
    pub(crate) fn rule(&self) -> &'static str {
        self.rule
    }

    /// Where the finding goes: the clause, else the statement's start.
    pub(crate) fn offset(&self) -> usize {
        if self.anchor == usize::MAX {
            self.statement.0
        } else {
            self.anchor
        }
    }

    pub(crate) fn statement_start(&self) -> usize {
        self.statement.0
    }
}

pub(crate) const CHANGING_COLUMN_TYPE: &str = "changing-column-type";
pub(crate) const CONSTRAINT_MISSING_NOT_VALID: &str = "constraint-missing-not-valid";
pub(crate) const ADDING_FIELD_WITH_DEFAULT: &str = "adding-field-with-default";
pub(crate) const ADDING_FOREIGN_KEY_CONSTRAINT: &str = "adding-foreign-key-constraint";
pub(crate) const REQUIRE_CONCURRENT_INDEX_CREATION: &str = "require-concurrent-index-creation";
pub(crate) const REQUIRE_CONCURRENT_PARTITION_DETACH: &str = "require-concurrent-partition-detach";

fn held(in_transaction: bool) -> &'static str {
    if in_transaction {
        "until the migration commits"
    } else {
        "until the statement ends"
    }
}

/// A partition added to a table with a DEFAULT partition: PostgreSQL locks the default one
/// ACCESS EXCLUSIVE and scans it for rows that belong to the new partition.
fn default_partition_scan(
    statement: (usize, usize),
    what: &str,
    table: &str,
    default: &str,
    held: &str,
) -> Fact {
    Fact {
        rule: crate::lint::DEFAULT_PARTITION_SCAN,
        statement,
        anchor: usize::MAX,
        says: Some((
            format!("{what}: {table} has a DEFAULT partition ({default}), which PostgreSQL locks ACCESS EXCLUSIVE (blocking its reads and writes {held}) and scans for rows that belong to the new partition (they must move first): as long as {default} is large."),
            Some(format!("Give {default} a CHECK constraint that excludes the new partition's bounds, added NOT VALID and validated in an earlier migration: PostgreSQL then skips the scan (the lock stays, briefly).")),
        )),
        own: true,
    }
}

/// `CREATE INDEX` of a partitioned table: every partition's index is built under a SHARE
/// lock, and CONCURRENTLY is refused.
fn partitioned_index_message(
    i: &protobuf::IndexStmt,
    r: &protobuf::RangeVar,
) -> (String, Option<String>) {
    let table = table_name(r);
    let index = if i.idxname.is_empty() {
        "the index".to_owned()
    } else {
        i.idxname.clone()
    };
    (
        format!("`CREATE INDEX` on the partitioned table {table} builds an index on every partition, each under a SHARE lock that blocks its writes until the migration commits; PostgreSQL refuses CONCURRENTLY on a partitioned table."),
        Some(format!("Create {index} on the parent alone with `CREATE INDEX ... ON ONLY {table} (...)` (invalid until every partition has one), build each partition's index with `CREATE INDEX CONCURRENTLY` in a no-transaction migration, then `ALTER INDEX {index} ATTACH PARTITION` each of them: {index} is valid once the last is attached.")),
    )
}

/// A foreign key added to a partitioned table: before PostgreSQL 18 it cannot be added NOT
/// VALID there.
fn partitioned_key_message(
    c: &protobuf::Constraint,
    table: &str,
    target: Option<u32>,
) -> (String, Option<String>) {
    let name = if c.conname.is_empty() {
        String::new()
    } else {
        format!("{} ", c.conname)
    };
    let referenced = c
        .pktable
        .as_ref()
        .map_or_else(|| "the referenced table".to_owned(), table_name);
    let refused = match target {
        Some(v) => format!("PostgreSQL {} refuses NOT VALID for a foreign key of a partitioned table (18 accepts it)", crate::versions::name(v)),
        None => "PostgreSQL before 18 refuses NOT VALID for a foreign key of a partitioned table".to_owned(),
    };
    (
        format!("`ADD CONSTRAINT {name}FOREIGN KEY` on the partitioned table {table} takes SHARE ROW EXCLUSIVE locks on its partitions and {referenced}, blocking writes to both until the migration commits, and scans every partition that has no matching key under them; where a partition already has a matching foreign key it takes that key as its own without scanning, but then takes an ACCESS EXCLUSIVE lock on {referenced} (blocking its reads too) until the migration commits; {refused}."),
        Some(format!("Add the foreign key to each partition NOT VALID and `VALIDATE CONSTRAINT` it there in a later migration (SHARE UPDATE EXCLUSIVE on the partition, ROW SHARE on {referenced}: writes go on); then adding it to {table} takes the partitions' validated keys as its own instead of scanning them, but holds an ACCESS EXCLUSIVE lock on {referenced}, blocking its reads and writes, from that `ADD` until the migration commits: put the `ADD` alone in its migration, with a `lock_timeout`, so the lock is brief. Adding it to {table} with no partition keyed scans instead, under SHARE ROW EXCLUSIVE locks that let {referenced} be read.")),
    )
}

/// A UNIQUE or PRIMARY KEY added to a partitioned table: PostgreSQL refuses both `CREATE
/// UNIQUE INDEX CONCURRENTLY` and `ADD CONSTRAINT ... USING INDEX` there, and builds the
/// partitions' indexes unless each partition has a matching constraint of its own, which it
/// then takes (an index alone, even one attached to the parent's, it does not).
fn partitioned_unique_message(c: &protobuf::Constraint, table: &str) -> (String, Option<String>) {
    let name = if c.conname.is_empty() {
        String::new()
    } else {
        format!("{} ", c.conname)
    };
    let kind = if c.contype == ConstrType::ConstrUnique as i32 {
        "UNIQUE"
    } else {
        "PRIMARY KEY"
    };
    let not_null = if kind == "PRIMARY KEY" {
        " (its columns NOT NULL first: setting them scans each partition)"
    } else {
        ""
    };
    (
        format!("`ADD CONSTRAINT {name}{kind}` on the partitioned table {table} takes an ACCESS EXCLUSIVE lock on {table}, {LOCK_UNTIL_COMMIT}, and builds an index on every partition under a SHARE lock that blocks its writes; PostgreSQL refuses `CREATE UNIQUE INDEX CONCURRENTLY` and `ADD CONSTRAINT ... USING INDEX` on a partitioned table."),
        Some(format!("There is no way to add a {kind} to a partitioned table without an ACCESS EXCLUSIVE lock on it, but the index builds can be taken out from under it: on each partition `CREATE UNIQUE INDEX CONCURRENTLY` in a no-transaction migration, then `ALTER TABLE <partition> ADD CONSTRAINT ... {kind} USING INDEX` (a brief ACCESS EXCLUSIVE lock on that partition){not_null}; then `ADD CONSTRAINT ... {kind}` on {table} takes the partitions' constraints as its own and builds nothing, holding its locks only briefly if it is alone in its migration. A unique index on the partitions alone (not a constraint, even one attached to an index `ON ONLY {table}`) is not taken: it is built again. If a unique index is enough (it enforces uniqueness and serves foreign keys and `ON CONFLICT`), `CREATE UNIQUE INDEX ... ON ONLY {table}`, each partition's `CREATE UNIQUE INDEX CONCURRENTLY` and `ALTER INDEX ... ATTACH PARTITION` make one without blocking writes.")),
    )
}

/// The name PostgreSQL gives an unnamed CHECK or foreign key of `table`, where it is sure:
/// `<table>_<column>_check` for a CHECK of one column (`<table>_check` for none or several),
/// `<table>_<columns>_fkey` for a foreign key; not when the name would be cut to 63 bytes.
fn chosen_name(c: &protobuf::Constraint, table: &str) -> Option<String> {
    let name = match ConstrType::try_from(c.contype).ok()? {
        ConstrType::ConstrCheck => {
            let json = serde_json::to_value(c.raw_expr.as_deref()?).unwrap_or_default();
            let mut columns: BTreeSet<String> = BTreeSet::new();
            let mut unsure = false;
            tree::visit(&json, &mut |kind, fields| {
                if kind == "ColumnRef" {
                    match fields
                        .get("fields")
                        .and_then(serde_json::Value::as_array)
                        .and_then(|f| f.last())
                        .and_then(|n| n.pointer("/node/String/sval"))
                        .and_then(serde_json::Value::as_str)
                    {
                        Some(column) => {
                            columns.insert(column.to_owned());
                        }
                        None => unsure = true,
                    }
                }
                // A subquery is refused in a CHECK; a whole-row reference is not a column.
                if kind == "SubLink" {
                    unsure = true;
                }
            });
            if unsure {
                return None;
            }
            match columns.len() {
                1 => format!("{table}_{}_check", columns.first()?),
                _ => format!("{table}_check"),
            }
        }
        ConstrType::ConstrForeign => {
            let columns: Vec<String> = c
                .fk_attrs
                .iter()
                .filter_map(|a| match a.node.as_ref()? {
                    N::String(s) => Some(s.sval.clone()),
                    _ => None,
                })
                .collect();
            if columns.is_empty() {
                return None;
            }
            format!("{table}_{}_fkey", columns.join("_"))
        }
        _ => return None,
    };
    (name.len() <= 63).then_some(name)
}

/// squawk's words for the findings it makes, for those it misses (its message, its help).
const SQUAWK_INDEX: (&str, &str) = (
    "During normal index creation, table updates are blocked, but reads are still allowed.",
    "Use `concurrently` to avoid blocking writes.",
);
const SQUAWK_FOREIGN_KEY: (&str, &str) = (
    "Adding a foreign key constraint requires a table scan and a `SHARE ROW EXCLUSIVE` lock on both tables, which blocks writes to each table.",
    "Add `NOT VALID` to the constraint in one transaction and then VALIDATE the constraint in a separate transaction.",
);

/// The tables squawk takes as made in the script's transaction: the last part of the name of
/// every `CREATE TABLE` inside a transaction, anywhere in the script.
fn squawk_new_tables(script: &str, in_transaction: bool) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut in_tx = in_transaction;
    for statement in sql::lex(script).statements {
        let Ok(parsed) = pg_query::parse(statement.text, 0) else {
            continue;
        };
        for raw in &parsed.protobuf.stmts {
            match raw.stmt.as_ref().and_then(|s| s.node.as_ref()) {
                Some(N::TransactionStmt(t)) => {
                    use protobuf::TransactionStmtKind as K;
                    match K::try_from(t.kind) {
                        Ok(K::TransStmtBegin | K::TransStmtStart) => in_tx = true,
                        Ok(K::TransStmtCommit) => in_tx = false,
                        _ => {}
                    }
                }
                Some(N::CreateStmt(c)) if in_tx => {
                    if let Some(r) = &c.relation {
                        names.insert(r.relname.clone());
                    }
                }
                _ => {}
            }
        }
    }
    names
}

/// Volatile functions a default is commonly made of: each gives every row its own value, so
/// PostgreSQL computes it for every existing row.
pub(crate) const VOLATILE: &[&str] = &[
    "random",
    "random_normal",
    "gen_random_uuid",
    "gen_random_bytes",
    "uuidv4",
    "uuidv7",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "clock_timestamp",
    "timeofday",
    "nextval",
    "currval",
    "setval",
    "lastval",
];

const LOCK_UNTIL_COMMIT: &str = "blocking its reads and writes until the migration commits";

fn table_name(r: &protobuf::RangeVar) -> String {
    if r.schemaname.is_empty() {
        r.relname.clone()
    } else {
        format!("{}.{}", r.schemaname, r.relname)
    }
}

/// The facts of a script, in order; `columns` is the set's knowledge of column types before
/// the script, and after it on return.
/// `in_transaction`: the runner wraps the script in a transaction.
pub(crate) fn facts(
    script: &str,
    in_transaction: bool,
    columns: &mut Columns,
    target: Option<u32>,
) -> Vec<Fact> {
    let mut facts = Vec::new();
    columns.start_script(in_transaction);
    // Constraints added NOT VALID in this file, by name: what a VALIDATE in the same
    // transaction validates under.
    let mut not_valid: BTreeMap<String, (i32, String)> = BTreeMap::new();
    // squawk takes a table named by a `CREATE TABLE` anywhere in the file's transaction as
    // new there, whatever its schema and whether it existed: the tables truly new here (by
    // schema and name) are known, and what squawk lets pass on the others is said here.
    let squawk_new = squawk_new_tables(script, in_transaction);
    let mut new_tables: BTreeSet<(String, String)> = BTreeSet::new();
    // The tables (not new) locked ACCESS EXCLUSIVE so far in the open transaction: by whom.
    let mut locked: BTreeMap<(String, String), (usize, String, String)> = BTreeMap::new();
    let mut in_tx = in_transaction;
    for statement in sql::lex(script).statements {
        let first_fact = facts.len();
        let Ok(parsed) = pg_query::parse(statement.text, 0) else {
            continue;
        };
        let span = (statement.offset, statement.offset + statement.text.len());
        let at = |location: i32| statement.offset + usize::try_from(location).unwrap_or(0);
        for raw in &parsed.protobuf.stmts {
            let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) else {
                continue;
            };
            // Whether squawk takes the table as made in this transaction, and it is not.
            let passed_as_new = |r: &protobuf::RangeVar,
                                 columns: &Columns,
                                 new: &BTreeSet<(String, String)>| {
                squawk_new.contains(&r.relname) && columns.key(r).is_none_or(|k| !new.contains(&k))
            };
            match node {
                N::TransactionStmt(t) => {
                    use protobuf::TransactionStmtKind as K;
                    match K::try_from(t.kind) {
                        Ok(K::TransStmtBegin | K::TransStmtStart) => {
                            if !in_tx {
                                not_valid.clear();
                            }
                            in_tx = true;
                        }
                        Ok(K::TransStmtCommit | K::TransStmtRollback) => {
                            in_tx = false;
                            not_valid.clear();
                            locked.clear();
                        }
                        _ => {}
                    }
                }
                N::CreateStmt(c) => {
                    if let Some(r) = c.relation.as_ref().filter(|_| in_tx) {
                        let (key, exists) = columns.created(r);
                        if !(c.if_not_exists && exists) {
                            new_tables.insert(key);
                        }
                    }
                    // A partition beside a DEFAULT one.
                    if let (Some(bound), Some(Some(N::RangeVar(parent)))) = (
                        &c.partbound,
                        c.inh_relations.first().map(|p| p.node.as_ref()),
                    ) {
                        // A DEFAULT partition made in this transaction is empty.
                        let default = columns
                            .partitioning(parent)
                            .flatten()
                            .filter(|d| !new_tables.iter().any(|(_, n)| n == d));
                        if let (false, Some(default)) = (bound.is_default, default) {
                            let new = c.relation.as_ref().map(table_name).unwrap_or_default();
                            facts.push(default_partition_scan(
                                span,
                                &format!(
                                    "`CREATE TABLE {new} PARTITION OF {}`",
                                    table_name(parent)
                                ),
                                &table_name(parent),
                                default,
                                held(in_tx),
                            ));
                        }
                    }
                }
                // An index of a partitioned table: PostgreSQL refuses CONCURRENTLY there.
                N::IndexStmt(i)
                    if !i.concurrent
                        && i.relation
                            .as_ref()
                            .is_some_and(|r| columns.partitioning(r).is_some()) =>
                {
                    let r = i.relation.as_ref().expect("checked above");
                    facts.push(Fact {
                        rule: REQUIRE_CONCURRENT_INDEX_CREATION,
                        statement: span,
                        anchor: usize::MAX,
                        // `ON ONLY`: the parent's index alone, built from nothing.
                        says: r.inh.then(|| partitioned_index_message(i, r)),
                        own: r.inh && passed_as_new(r, columns, &new_tables),
                    });
                }
                N::IndexStmt(i) if !i.concurrent => {
                    if let Some(r) = i
                        .relation
                        .as_ref()
                        .filter(|r| passed_as_new(r, columns, &new_tables))
                    {
                        facts.push(Fact {
                            rule: REQUIRE_CONCURRENT_INDEX_CREATION,
                            statement: span,
                            anchor: usize::MAX,
                            says: Some((
                                format!(
                                    "{} ({} is not known to be new: the CREATE TABLE of its name in this migration made another table, or none as one may have existed.)",
                                    SQUAWK_INDEX.0,
                                    table_name(r)
                                ),
                                Some(SQUAWK_INDEX.1.to_owned()),
                            )),
                            own: true,
                        });
                    }
                }
                // The name a constraint added NOT VALID here is validated by.
                N::RenameStmt(rename)
                    if ObjectType::try_from(rename.rename_type)
                        == Ok(ObjectType::ObjectTabconstraint) =>
                {
                    if let Some(kind) = not_valid.remove(&rename.subname) {
                        not_valid.insert(rename.newname.clone(), kind);
                    }
                }
                _ => {}
            }
            // Work over rows (of any table) while a table is held ACCESS EXCLUSIVE since an
            // earlier statement of the transaction, or by another clause of this ALTER: reads of
            // the held table wait throughout.
            if in_tx {
                if let Some((verb, r, same)) = works_over_rows(node) {
                    let key = columns.key(r).filter(|k| !new_tables.contains(k));
                    let table = table_name(r);
                    // The statement's own table first, else the first table held.
                    let held = match (&same, key.as_ref().and_then(|k| locked.get(k))) {
                        (Some(clause), _) => Some((
                            table.clone(),
                            format!("the {clause} of the same ALTER TABLE"),
                        )),
                        (None, Some((line, what, _))) => {
                            Some((table.clone(), format!("line {line} ({what})")))
                        }
                        (None, None) => locked
                            .iter()
                            .filter(|(k, _)| Some(*k) != key.as_ref())
                            .min_by_key(|(_, (line, _, _))| *line)
                            .map(|(_, (line, what, name))| {
                                (name.clone(), format!("line {line} ({what})"))
                            }),
                    };
                    if let Some((held_table, by)) = held {
                        facts.push(Fact {
                            rule: crate::lint::SCAN_UNDER_HELD_LOCK,
                            statement: span,
                            anchor: usize::MAX,
                            says: Some((
                                format!("{verb} works over the rows of {table} while {held_table} is locked ACCESS EXCLUSIVE by {by}, a lock held until the migration commits: every read and write of {held_table} waits for this statement too, as long as it takes"),
                                Some(format!("Move {verb} to a migration of its own, before the one that takes ACCESS EXCLUSIVE on {held_table} or after it, so that the lock is held only for the moment that statement takes.")),
                            )),
                            own: true,
                        });
                    }
                }
                if let Some(r) = takes_access_exclusive(node) {
                    if let Some(key) = columns.key(r).filter(|k| !new_tables.contains(k)) {
                        locked.entry(key).or_insert_with(|| {
                            let words: String = statement
                                .text
                                .split_whitespace()
                                .collect::<Vec<_>>()
                                .join(" ");
                            let short: String = words.chars().take(60).collect();
                            let more = if words.chars().count() > 60 {
                                "..."
                            } else {
                                ""
                            };
                            (statement.line, format!("`{short}{more}`"), table_name(r))
                        });
                    }
                }
            }
            // A function or procedure the migrations made runs its body here, which no rule
            // reads (as a DO block's).
            if columns.calls_a_function_made_here(node) {
                facts.push(Fact {
                    rule: crate::lint::DO_BLOCK_NOT_LINTED,
                    statement: span,
                    anchor: usize::MAX,
                    says: Some((
                        "this statement calls a function or procedure the migrations made: the statements in its body (their locks, rewrites and lost rows) are not judged by `check`".into(),
                        Some("Write the statements in the migration itself where they can be (check reads them then); `stepmigrate verify` runs the call and reports its locks and rewrites.".into()),
                    )),
                    own: true,
                });
            }
            // `REINDEX (CONCURRENTLY false)`: squawk sees the word; PostgreSQL, the value.
            if let N::ReindexStmt(_) = node {
                if statement.keywords.iter().any(|k| k == "CONCURRENTLY")
                    && !sql::reindexes_concurrently(&statement)
                {
                    facts.push(Fact {
                        rule: "require-concurrent-reindex",
                        statement: span,
                        anchor: usize::MAX,
                        says: Some((
                            "`REINDEX` with `CONCURRENTLY false` (or off, 0) in its option list is not concurrent: it rebuilds each index under a lock that blocks the table's writes and the index's reads.".into(),
                            Some("Say `REINDEX (CONCURRENTLY) ...` in a no-transaction migration.".into()),
                        )),
                        own: true,
                    });
                }
            }
            // squawk takes any clause of `CREATE DOMAIN` for a constraint: a DEFAULT alone
            // (or NULL) constrains nothing, and checks no row.
            if let N::CreateDomainStmt(d) = node {
                let constrains = d.constraints.iter().any(|c| {
                    !matches!(c.node.as_ref(), Some(N::Constraint(c))
                        if matches!(ConstrType::try_from(c.contype), Ok(ConstrType::ConstrDefault | ConstrType::ConstrNull)))
                });
                if !constrains {
                    facts.push(Fact {
                        rule: "ban-create-domain-with-constraint",
                        statement: span,
                        anchor: usize::MAX,
                        says: None,
                        own: false,
                    });
                }
            }
            if let N::AlterTableStmt(a) = node {
                let Some(r) = &a.relation else { continue };
                let foreign = ObjectType::try_from(a.objtype) == Ok(ObjectType::ObjectForeignTable);
                let table = table_name(r);
                let not_new = passed_as_new(r, columns, &new_tables);
                // A clause of this ALTER that locks the table ACCESS EXCLUSIVE: the whole
                // statement, a foreign key's check included, runs under it.
                let exclusive = a.cmds.iter().find_map(|c| match c.node.as_ref() {
                    Some(N::AlterTableCmd(c)) if cmd_takes_access_exclusive(c) => {
                        Some(clause_name(c))
                    }
                    _ => None,
                });
                for cmd in &a.cmds {
                    let Some(N::AlterTableCmd(cmd)) = cmd.node.as_ref() else {
                        continue;
                    };
                    let def = cmd.def.as_deref().and_then(|d| d.node.as_ref());
                    match (AlterTableType::try_from(cmd.subtype), def) {
                        (Ok(AlterTableType::AtAlterColumnType), Some(N::ColumnDef(d))) => {
                            let Some(type_name) = &d.type_name else {
                                continue;
                            };
                            let new = ColumnType::of(type_name);
                            // `ALTER TYPE t ALTER ATTRIBUTE a TYPE x`: the composite type
                            // changes, and with CASCADE every table of that type (and every
                            // column of it) with it, which are not named here.
                            if ObjectType::try_from(a.objtype) == Ok(ObjectType::ObjectType) {
                                let new = new
                                    .as_ref()
                                    .map_or_else(|| "...".to_owned(), ToString::to_string);
                                facts.push(Fact {
                                    rule: CHANGING_COLUMN_TYPE,
                                    statement: span,
                                    anchor: at(type_name.location),
                                    says: Some((
                                        format!(
                                            "`ALTER ATTRIBUTE {} TYPE {new}` of the composite type {table}: with CASCADE it changes every table made `OF {table}` and every column of type {table} too, each under an ACCESS EXCLUSIVE lock held until the migration commits, and may rewrite them (as `ALTER COLUMN ... TYPE` does); without CASCADE it fails if any table uses the type.",
                                            cmd.name
                                        ),
                                        Some("Find the tables that use the type first (`pg_class.reloftype`, `pg_attribute.atttypid`): on a large one, prefer a new column of the new type, backfilled in batches.".into()),
                                    )),
                                    own: false,
                                });
                                continue;
                            }
                            let old = columns.type_of(r, &cmd.name).cloned();
                            let rewrite = if foreign {
                                Rewrite::No("a foreign table keeps no rows here".into())
                            } else {
                                column_rewrite(&cmd.name, d, old.as_ref(), new.as_ref(), target)
                            };
                            facts.push(Fact {
                                rule: CHANGING_COLUMN_TYPE,
                                statement: span,
                                anchor: at(type_name.location),
                                says: Some(column_type_message(
                                    &cmd.name,
                                    &table,
                                    new.as_ref(),
                                    &rewrite,
                                    index_rebuild(d, new.as_ref()),
                                )),
                                own: false,
                            });
                        }
                        (Ok(AlterTableType::AtAddConstraint), Some(N::Constraint(c))) => {
                            if c.skip_validation && in_tx {
                                let name = if c.conname.is_empty() {
                                    chosen_name(c, &r.relname)
                                        .filter(|name| !not_valid.contains_key(name))
                                } else {
                                    Some(c.conname.clone())
                                };
                                if let Some(name) = name {
                                    not_valid.insert(name, (c.contype, table.clone()));
                                }
                            }
                            let partitioned_key = c.contype == ConstrType::ConstrForeign as i32
                                && columns.partitioning(r).is_some()
                                && target.is_none_or(|v| v < 18);
                            let partitioned_unique = (c.contype == ConstrType::ConstrUnique as i32
                                || c.contype == ConstrType::ConstrPrimary as i32)
                                && c.indexname.is_empty()
                                && columns.partitioning(r).is_some();
                            // What squawk lets pass as a table made here.
                            let missed = not_new && !c.skip_validation && c.indexname.is_empty();
                            facts.push(Fact {
                                rule: CONSTRAINT_MISSING_NOT_VALID,
                                statement: span,
                                anchor: at(c.location),
                                says: if partitioned_key {
                                    Some(partitioned_key_message(c, &table, target))
                                } else if partitioned_unique {
                                    Some(partitioned_unique_message(c, &table))
                                } else {
                                    constraint_message(c, &table)
                                },
                                own: missed,
                            });
                            // squawk's other rules on it advise `USING INDEX`, which
                            // PostgreSQL refuses on a partitioned table.
                            if partitioned_unique {
                                for rule in [
                                    "disallowed-unique-constraint",
                                    "adding-serial-primary-key-field",
                                ] {
                                    facts.push(Fact {
                                        rule,
                                        statement: span,
                                        anchor: at(c.location),
                                        says: Some(partitioned_unique_message(c, &table)),
                                        own: false,
                                    });
                                }
                            }
                            // Checked under the ACCESS EXCLUSIVE another clause takes: reads
                            // wait too, whatever the key's own lock.
                            let under_exclusive = exclusive
                                .as_ref()
                                .filter(|_| c.contype == ConstrType::ConstrForeign as i32 && !c.skip_validation)
                                .map(|clause| (
                                    format!("`ADD CONSTRAINT ... FOREIGN KEY` checks every row of {table} against the table it references, and the {clause} of the same ALTER TABLE locks {table} ACCESS EXCLUSIVE meanwhile, until the migration commits: its reads and writes wait for the whole check"),
                                    Some("Add the foreign key in an ALTER TABLE of its own, NOT VALID, and VALIDATE CONSTRAINT it in a later migration (SHARE UPDATE EXCLUSIVE on the table: reads and writes go on).".to_owned()),
                                ));
                            if let Some(says) = &under_exclusive {
                                if let Some(f) = facts.last_mut().filter(|f| {
                                    f.rule == CONSTRAINT_MISSING_NOT_VALID && f.statement == span
                                }) {
                                    f.says = Some(says.clone());
                                }
                            }
                            if c.contype == ConstrType::ConstrForeign as i32 {
                                facts.push(Fact {
                                    rule: ADDING_FOREIGN_KEY_CONSTRAINT,
                                    statement: span,
                                    anchor: at(c.location),
                                    says: Some(if partitioned_key {
                                        partitioned_key_message(c, &table, target)
                                    } else if let Some(says) = under_exclusive {
                                        says
                                    } else {
                                        (
                                            SQUAWK_FOREIGN_KEY.0.to_owned(),
                                            Some(SQUAWK_FOREIGN_KEY.1.to_owned()),
                                        )
                                    }),
                                    own: missed,
                                });
                            }
                        }
                        // A constraint added NOT VALID in this transaction, by the name it has
                        // (after a rename, or the one PostgreSQL chose): the validation runs under
                        // the lock that took. A name not known here (renamed since) is not one.
                        (Ok(AlterTableType::AtValidateConstraint), _) => {
                            let kind = not_valid.get(&cmd.name).map(|(k, _)| *k);
                            facts.push(Fact {
                                rule: CONSTRAINT_MISSING_NOT_VALID,
                                statement: span,
                                anchor: usize::MAX,
                                says: kind
                                    .map(|kind| validate_message(&cmd.name, &table, Some(kind))),
                                own: in_tx && kind.is_some(),
                            });
                        }
                        (Ok(AlterTableType::AtDetachPartition), Some(N::PartitionCmd(p)))
                            if !p.concurrent =>
                        {
                            let default = columns.partitioning(r).flatten();
                            let partition = p.name.as_ref().map(table_name).unwrap_or_default();
                            let head = format!("`DETACH PARTITION {partition}` takes an ACCESS EXCLUSIVE lock on {table}, {LOCK_UNTIL_COMMIT}");
                            let says = match (target.filter(|v| *v < 14), default) {
                                (Some(v), _) => Some((
                                    format!("{head}; DETACH PARTITION ... CONCURRENTLY, which does not, is PostgreSQL 14 syntax (the target is {}).", crate::versions::name(v)),
                                    Some("Before PostgreSQL 14 there is no online way to detach a partition: detach it when the table is quiet, and keep the migration short (the runner's lock_timeout bounds the wait).".to_owned()),
                                )),
                                (None, Some(default)) => Some((
                                    format!("{head}; PostgreSQL refuses DETACH PARTITION ... CONCURRENTLY while {table} has a DEFAULT partition ({default})."),
                                    Some(format!("Detach it when the table is quiet and keep the migration short, or detach the DEFAULT partition {default} first (which takes the same lock) so that the others can be detached CONCURRENTLY.")),
                                )),
                                // squawk's advice stands.
                                (None, None) => None,
                            };
                            if let Some(says) = says {
                                facts.push(Fact {
                                    rule: REQUIRE_CONCURRENT_PARTITION_DETACH,
                                    statement: span,
                                    anchor: usize::MAX,
                                    says: Some(says),
                                    own: false,
                                });
                            }
                        }
                        (Ok(AlterTableType::AtAttachPartition), Some(N::PartitionCmd(p))) => {
                            // The table attached: its every row is checked for the bounds.
                            let attached = p.name.as_ref().filter(|n| {
                                columns.key(n).is_none_or(|k| !new_tables.contains(&k))
                            });
                            if let (Some(attached), false) = (attached, foreign) {
                                let name = table_name(attached);
                                facts.push(Fact {
                                    rule: crate::lint::ATTACH_PARTITION_SCAN,
                                    statement: span,
                                    anchor: usize::MAX,
                                    says: Some((
                                        format!("`ATTACH PARTITION {name}` locks {name} ACCESS EXCLUSIVE (blocking its reads and writes {}) and scans every row of it for the partition's bounds, unless a valid CHECK constraint on it already implies them: as long as {name} is large.", held(in_tx)),
                                        Some(format!("In an earlier migration, add to {name} a CHECK constraint that matches the bounds, NOT VALID, and `VALIDATE CONSTRAINT` it (SHARE UPDATE EXCLUSIVE: reads and writes go on); the attach then skips the scan (drop the constraint after it).")),
                                    )),
                                    own: true,
                                });
                            }
                            let default = columns
                                .partitioning(r)
                                .flatten()
                                .filter(|d| !new_tables.iter().any(|(_, n)| n == d));
                            if let (Some(default), false) =
                                (default, p.bound.as_ref().is_some_and(|b| b.is_default))
                            {
                                let partition = p.name.as_ref().map(table_name).unwrap_or_default();
                                facts.push(default_partition_scan(
                                    span,
                                    &format!("`ATTACH PARTITION {partition}`"),
                                    &table,
                                    default,
                                    held(in_tx),
                                ));
                            }
                        }
                        (Ok(AlterTableType::AtAddColumn), Some(N::ColumnDef(d))) => {
                            // From PostgreSQL 19 a default that passes the domain's
                            // (non-volatile) constraints is stored without a rewrite.
                            let domain = d
                                .type_name
                                .as_ref()
                                .and_then(|t| columns.constrained_domain(t))
                                .filter(|_| !foreign && target.is_none_or(|v| v < 19));
                            let mut defaulted = false;
                            for c in &d.constraints {
                                let Some(N::Constraint(c)) = c.node.as_ref() else {
                                    continue;
                                };
                                // A column's REFERENCES: checked over every row under the
                                // ACCESS EXCLUSIVE of ADD COLUMN, and it cannot be NOT VALID.
                                if c.contype == ConstrType::ConstrForeign as i32 && !foreign {
                                    let referenced =
                                        c.pktable.as_ref().map(table_name).unwrap_or_default();
                                    facts.push(Fact {
                                        rule: ADDING_FOREIGN_KEY_CONSTRAINT,
                                        statement: span,
                                        anchor: at(c.location),
                                        says: Some((
                                            format!("`ADD COLUMN {} ... REFERENCES {referenced}` checks every existing row of {table} against {referenced} under the ACCESS EXCLUSIVE lock ADD COLUMN takes, until the migration commits: reads and writes of {table} wait for the whole check (a column's REFERENCES cannot be NOT VALID)", d.colname),
                                            Some("Add the column without REFERENCES, then `ADD CONSTRAINT ... FOREIGN KEY (...) REFERENCES ... NOT VALID` and `VALIDATE CONSTRAINT` in a later migration.".into()),
                                        )),
                                        own: true,
                                    });
                                    continue;
                                }
                                if let (Some(domain), Ok(ConstrType::ConstrDefault)) =
                                    (&domain, ConstrType::try_from(c.contype))
                                {
                                    defaulted = true;
                                    facts.push(Fact {
                                        rule: ADDING_FIELD_WITH_DEFAULT,
                                        statement: span,
                                        anchor: at(c.location),
                                        says: Some(domain_message(
                                            &d.colname, domain, &table, target,
                                        )),
                                        own: true,
                                    });
                                    continue;
                                }
                                if let Some((says, own)) =
                                    default_message(c, &d.colname, &table, target)
                                {
                                    facts.push(Fact {
                                        rule: ADDING_FIELD_WITH_DEFAULT,
                                        statement: span,
                                        anchor: at(c.location),
                                        says,
                                        // A foreign table keeps no rows here.
                                        own: own && !foreign,
                                    });
                                }
                            }
                            if let (Some(domain), false) = (&domain, defaulted) {
                                facts.push(Fact {
                                    rule: crate::lint::TABLE_REWRITE,
                                    statement: span,
                                    anchor: at(d.location),
                                    says: Some(domain_message(&d.colname, domain, &table, target)),
                                    own: true,
                                });
                            } else if !defaulted && !foreign && !has_default(d) {
                                // No DEFAULT given: the column gets its domain's.
                                let inherited =
                                    d.type_name.as_ref().and_then(|t| columns.domain_default(t));
                                if let Some((domain, calls)) = inherited {
                                    if let Some(says) = domain_default_message(
                                        &d.colname, &domain, &calls, &table, target,
                                    ) {
                                        facts.push(Fact {
                                            rule: crate::lint::TABLE_REWRITE,
                                            statement: span,
                                            anchor: at(d.location),
                                            says: Some(says),
                                            own: true,
                                        });
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            columns.apply(node);
        }
        // Outside a transaction block a lock ends with its statement, not with a commit.
        if !in_tx {
            for fact in &mut facts[first_fact..] {
                if let Some((says, _)) = &mut fact.says {
                    *says = says.replace("until the migration commits", "until the statement ends");
                }
            }
        }
    }
    facts
}

/// A statement that reads or writes every row it reaches of a table, which a lock held on it
/// makes everyone wait for: what it is, its table, and, for an `ALTER TABLE` that validates
/// while another of its clauses takes ACCESS EXCLUSIVE, that clause.
fn works_over_rows(node: &N) -> Option<(String, &protobuf::RangeVar, Option<String>)> {
    match node {
        N::UpdateStmt(u) => Some(("`UPDATE`".into(), u.relation.as_ref()?, None)),
        N::DeleteStmt(d) => Some(("`DELETE`".into(), d.relation.as_ref()?, None)),
        N::MergeStmt(m) => Some(("`MERGE`".into(), m.relation.as_ref()?, None)),
        N::InsertStmt(i)
            if matches!(i.select_stmt.as_deref().and_then(|s| s.node.as_ref()),
                Some(N::SelectStmt(s)) if !s.from_clause.is_empty()) =>
        {
            Some(("`INSERT ... SELECT`".into(), i.relation.as_ref()?, None))
        }
        N::IndexStmt(i) if !i.concurrent => {
            Some(("`CREATE INDEX`".into(), i.relation.as_ref()?, None))
        }
        // What a query reads: named by its first table (the lock held is what is said).
        N::CreateTableAsStmt(c) => {
            let from = match c.query.as_deref().and_then(|q| q.node.as_ref()) {
                Some(N::SelectStmt(s)) => first_table(&s.from_clause),
                _ => None,
            };
            Some((
                "`CREATE TABLE/MATERIALIZED VIEW ... AS`".into(),
                from.or(c.into.as_ref()?.rel.as_ref())?,
                None,
            ))
        }
        N::RefreshMatViewStmt(r) => Some((
            "`REFRESH MATERIALIZED VIEW`".into(),
            r.relation.as_ref()?,
            None,
        )),
        N::SelectStmt(s) if !s.from_clause.is_empty() => Some((
            "a `SELECT` that reads a table".into(),
            first_table(&s.from_clause)?,
            None,
        )),
        N::AlterTableStmt(a) => {
            let r = a.relation.as_ref()?;
            let cmds: Vec<&protobuf::AlterTableCmd> = a
                .cmds
                .iter()
                .filter_map(|c| match c.node.as_ref() {
                    Some(N::AlterTableCmd(c)) => Some(c.as_ref()),
                    _ => None,
                })
                .collect();
            if let Some(validate) = cmds.iter().find(|c| {
                AlterTableType::try_from(c.subtype) == Ok(AlterTableType::AtValidateConstraint)
            }) {
                let verb = format!("`VALIDATE CONSTRAINT {}`", validate.name);
                let exclusive = cmds
                    .iter()
                    .find(|c| cmd_takes_access_exclusive(c))
                    .map(|c| clause_name(c));
                return Some((verb, r, exclusive));
            }
            // A constraint added valid checks (or indexes) every row: under a lock an earlier
            // statement holds, reads wait for it. Its own clause's lock is its own finding.
            cmds.iter().find_map(|c| {
                let Some(N::Constraint(k)) = c.def.as_deref().and_then(|d| d.node.as_ref()) else {
                    return None;
                };
                (AlterTableType::try_from(c.subtype) == Ok(AlterTableType::AtAddConstraint)
                    && !k.skip_validation
                    && matches!(
                        ConstrType::try_from(k.contype),
                        Ok(ConstrType::ConstrForeign
                            | ConstrType::ConstrCheck
                            | ConstrType::ConstrUnique
                            | ConstrType::ConstrPrimary
                            | ConstrType::ConstrExclusion)
                    ))
                .then(|| ("`ADD CONSTRAINT`".to_owned(), r, None))
            })
        }
        _ => None,
    }
}

/// The first table a FROM list names (directly, or in a join).
fn first_table(from: &[protobuf::Node]) -> Option<&protobuf::RangeVar> {
    from.iter().find_map(|n| match n.node.as_ref()? {
        N::RangeVar(r) => Some(r),
        N::JoinExpr(j) => j
            .larg
            .as_deref()
            .and_then(|l| first_table(std::slice::from_ref(l)))
            .or_else(|| {
                j.rarg
                    .as_deref()
                    .and_then(|r| first_table(std::slice::from_ref(r)))
            }),
        _ => None,
    })
}

/// The table a statement locks ACCESS EXCLUSIVE (and keeps locked to the end of its
/// transaction), when it does.
fn takes_access_exclusive(node: &N) -> Option<&protobuf::RangeVar> {
    match node {
        N::AlterTableStmt(a)
            if matches!(ObjectType::try_from(a.objtype), Ok(ObjectType::ObjectTable))
                && a.cmds.iter().any(|c| {
                    matches!(c.node.as_ref(), Some(N::AlterTableCmd(c)) if cmd_takes_access_exclusive(c))
                }) =>
        {
            a.relation.as_ref()
        }
        N::RenameStmt(r)
            if matches!(
                ObjectType::try_from(r.rename_type),
                Ok(ObjectType::ObjectColumn | ObjectType::ObjectTable | ObjectType::ObjectTabconstraint)
            ) =>
        {
            r.relation.as_ref()
        }
        // LOCK TABLE without a mode is ACCESS EXCLUSIVE (mode 8).
        N::LockStmt(l) if l.mode == 8 => l.relations.iter().find_map(|r| match r.node.as_ref() {
            Some(N::RangeVar(r)) => Some(r),
            _ => None,
        }),
        _ => None,
    }
}

/// Whether an `ALTER TABLE` clause takes ACCESS EXCLUSIVE: all but those PostgreSQL runs
/// under a weaker lock (validating, statistics and options, clustering mark, triggers,
/// partitions attached or detached, a foreign key).
fn cmd_takes_access_exclusive(c: &protobuf::AlterTableCmd) -> bool {
    use AlterTableType as T;
    let foreign_key = matches!(c.def.as_deref().and_then(|d| d.node.as_ref()),
        Some(N::Constraint(k)) if k.contype == ConstrType::ConstrForeign as i32);
    match T::try_from(c.subtype) {
        Ok(
            T::AtValidateConstraint
            | T::AtSetStatistics
            | T::AtSetOptions
            | T::AtResetOptions
            | T::AtClusterOn
            | T::AtDropCluster
            | T::AtSetRelOptions
            | T::AtResetRelOptions
            | T::AtReplaceRelOptions
            | T::AtEnableTrig
            | T::AtEnableAlwaysTrig
            | T::AtEnableReplicaTrig
            | T::AtDisableTrig
            | T::AtEnableTrigAll
            | T::AtDisableTrigAll
            | T::AtEnableTrigUser
            | T::AtDisableTrigUser
            | T::AtAttachPartition
            | T::AtDetachPartition
            | T::AtDetachPartitionFinalize
            | T::AtChangeOwner,
        ) => false,
        Ok(T::AtAddConstraint) => !foreign_key,
        _ => true,
    }
}

/// An `ALTER TABLE` clause in words: `ADD COLUMN z`, `ALTER COLUMN a TYPE`.
fn clause_name(c: &protobuf::AlterTableCmd) -> String {
    use AlterTableType as T;
    let column = match c.def.as_deref().and_then(|d| d.node.as_ref()) {
        Some(N::ColumnDef(d)) => d.colname.clone(),
        _ => c.name.clone(),
    };
    match T::try_from(c.subtype) {
        Ok(T::AtAddColumn) => format!("`ADD COLUMN {column}`"),
        Ok(T::AtDropColumn) => format!("`DROP COLUMN {column}`"),
        Ok(T::AtAlterColumnType) => format!("`ALTER COLUMN {column} TYPE`"),
        Ok(T::AtAddConstraint) => "`ADD CONSTRAINT`".into(),
        Ok(T::AtDropConstraint) => format!("`DROP CONSTRAINT {column}`"),
        _ => "clause that takes ACCESS EXCLUSIVE".into(),
    }
}

/// Puts true words on a squawk finding of one of the three rules at `offset`: `None` to drop
/// it, `Some(None)` to leave it as squawk wrote it (no fact found: it never happens for a
/// statement libpg_query parses, but a misread must not lose a finding).
pub(crate) fn revise(
    facts: &[Fact],
    rule: &str,
    offset: usize,
    message: &str,
    used: &mut [bool],
) -> Option<Option<(String, Option<String>)>> {
    let here: Vec<&Fact> = facts
        .iter()
        .filter(|f| f.rule == rule && f.statement.0 <= offset && offset < f.statement.1)
        .collect();
    let fact = match rule {
        // squawk points at the clause's start (`TYPE`, `ADD`): the clause's anchor is after.
        CHANGING_COLUMN_TYPE if message.starts_with("Changing a column type") => here
            .iter()
            .filter(|f| f.anchor >= offset)
            .min_by_key(|f| f.anchor),
        CONSTRAINT_MISSING_NOT_VALID if message.starts_with("Using `NOT VALID`") => {
            here.iter().find(|f| f.anchor == usize::MAX)
        }
        CONSTRAINT_MISSING_NOT_VALID => here
            .iter()
            .filter(|f| f.anchor != usize::MAX && f.anchor >= offset)
            .min_by_key(|f| f.anchor),
        // squawk points at the default's expression, inside the constraint.
        ADDING_FIELD_WITH_DEFAULT => here
            .iter()
            .filter(|f| f.anchor <= offset)
            .max_by_key(|f| f.anchor),
        // The clause squawk points at, or the statement.
        _ => here
            .iter()
            .filter(|f| f.anchor >= offset)
            .min_by_key(|f| f.anchor),
    };
    match fact {
        Some(f) => {
            if let Some(i) = facts.iter().position(|g| std::ptr::eq(g, *f)) {
                used[i] = true;
            }
            f.says.clone().map(Some)
        }
        None => Some(None),
    }
}

fn column_rewrite(
    column: &str,
    def: &protobuf::ColumnDef,
    old: Option<&ColumnType>,
    new: Option<&ColumnType>,
    target: Option<u32>,
) -> Rewrite {
    // `USING expr` is `raw_default`: the column itself (or cast to the new type) is as if
    // there were none; anything else is computed for every row.
    if let Some(using) = def.raw_default.as_deref().and_then(|u| u.node.as_ref()) {
        let itself = |n: &N| matches!(n, N::ColumnRef(c) if column_ref_is(c, column));
        let trivial = itself(using)
            || matches!(using, N::TypeCast(c) if c.arg.as_deref().and_then(|a| a.node.as_ref()).is_some_and(itself)
                && c.type_name.as_ref().and_then(ColumnType::of).as_ref() == new);
        if !trivial {
            return Rewrite::Yes("the USING expression is computed for every row".into());
        }
    }
    match (old, new) {
        (Some(old), Some(new)) => judge(old, new, target),
        _ => Rewrite::Depends(
            "the column's type before it, which the migrations before this statement do not show"
                .into(),
        ),
    }
}

/// The rows stay in a change that is not a rewrite, but PostgreSQL rebuilds every index on
/// the column whose collation differs from the column's new one (`CheckIndexCompatible`),
/// under the same lock. Without a database the old collation is not always known, so the
/// words are conditional; the new one is the COLLATE given, or else the new type's default.
fn index_rebuild(def: &protobuf::ColumnDef, new: Option<&ColumnType>) -> Option<String> {
    if !new.is_some_and(ColumnType::collatable) {
        return None;
    }
    let collation = match def.coll_clause.as_deref() {
        Some(c) => format!("to {}", collation_name(c)),
        None => "to the new type's default, as no COLLATE is given".to_owned(),
    };
    Some(format!(
        "; and every index on the column if its collation changes (here {collation})"
    ))
}

fn collation_name(c: &protobuf::CollateClause) -> String {
    let parts: Vec<String> = c
        .collname
        .iter()
        .filter_map(|n| match n.node.as_ref()? {
            N::String(s) => Some(format!("\"{}\"", s.sval)),
            _ => None,
        })
        .collect();
    parts.join(".")
}

fn column_ref_is(c: &protobuf::ColumnRef, column: &str) -> bool {
    matches!(c.fields.as_slice(), [f] if matches!(f.node.as_ref(), Some(N::String(s)) if s.sval == column))
}

fn column_type_message(
    column: &str,
    table: &str,
    new: Option<&ColumnType>,
    rewrite: &Rewrite,
    indexes: Option<String>,
) -> (String, Option<String>) {
    let new = new.map_or_else(|| "...".to_owned(), ToString::to_string);
    let head = format!(
        "`ALTER COLUMN {column} TYPE {new}` takes an ACCESS EXCLUSIVE lock on {table}, {LOCK_UNTIL_COMMIT}"
    );
    let clients = "Changing a column's type may also break clients that read or write it.";
    let long_help = "On a large table, add a column of the new type, backfill it in batches and move readers and writers to it. `stepmigrate verify` shows whether the statement rewrites the table.";
    match rewrite {
        // Not rewritten is not brief: a CHECK that reads the column is checked again over
        // every row, and an index that depends on the type's details is built again.
        Rewrite::No(why) => (
            format!(
                "{head}; the table is not rewritten ({why}), but under the lock PostgreSQL still scans it to check again each CHECK constraint that reads the column, and builds again each index whose expression or WHERE uses the column, each index on it whose operator class differs for the new type{}: as long as the table and those indexes are large. {clients}",
                indexes.unwrap_or_default()
            ),
            Some("No row is rewritten, but the lock waits behind every open transaction on the table and then blocks everything queued behind it: keep the migration short (the runner's lock_timeout bounds the wait).".into()),
        ),
        Rewrite::Yes(why) => (
            format!("{head}, and rewrites the table under it ({why}): as long as the table is large. {clients}"),
            Some(long_help.into()),
        ),
        Rewrite::Depends(on) => (
            format!("{head}; whether the table is also rewritten under it depends on {on}. {clients}"),
            Some(long_help.into()),
        ),
    }
}

fn constraint_message(c: &protobuf::Constraint, table: &str) -> Option<(String, Option<String>)> {
    let name = if c.conname.is_empty() {
        String::new()
    } else {
        format!("{} ", c.conname)
    };
    let not_valid_help = "Add it NOT VALID (rows written from then on are checked), then `VALIDATE CONSTRAINT` in a later migration: validating takes a SHARE UPDATE EXCLUSIVE lock, which lets reads and writes go on.";
    let says = match ConstrType::try_from(c.contype).ok()? {
        ConstrType::ConstrCheck => (
            format!("`ADD CONSTRAINT {name}CHECK` takes an ACCESS EXCLUSIVE lock on {table}, {LOCK_UNTIL_COMMIT}, and scans every row under it."),
            not_valid_help.to_owned(),
        ),
        ConstrType::ConstrNotnull => (
            format!("`ADD CONSTRAINT {name}NOT NULL` takes an ACCESS EXCLUSIVE lock on {table}, {LOCK_UNTIL_COMMIT}, and scans every row under it."),
            "From PostgreSQL 18, add it NOT VALID and `VALIDATE CONSTRAINT` it in a later migration; before 18, add `CHECK (column IS NOT NULL) NOT VALID`, validate it in a later migration, then SET NOT NULL (which uses the validated check instead of scanning).".to_owned(),
        ),
        ConstrType::ConstrForeign => {
            let referenced = c.pktable.as_ref().map_or_else(|| "the referenced table".to_owned(), table_name);
            (
                format!("`ADD CONSTRAINT {name}FOREIGN KEY` takes SHARE ROW EXCLUSIVE locks on {table} and {referenced}, blocking writes to both until the migration commits, and scans every row of {table} under them."),
                "Add it NOT VALID (rows written from then on are checked), then `VALIDATE CONSTRAINT` in a later migration: validating takes SHARE UPDATE EXCLUSIVE on the table and ROW SHARE on the referenced one, which let writes go on.".to_owned(),
            )
        }
        ConstrType::ConstrUnique | ConstrType::ConstrPrimary => {
            let kind = if c.contype == ConstrType::ConstrUnique as i32 { "UNIQUE" } else { "PRIMARY KEY" };
            (
                format!("`ADD CONSTRAINT {name}{kind}` builds its index under an ACCESS EXCLUSIVE lock on {table}, {LOCK_UNTIL_COMMIT}; NOT VALID does not apply to it."),
                format!("Build the index first with `CREATE UNIQUE INDEX CONCURRENTLY` in a no-transaction migration, then `ADD CONSTRAINT ... {kind} USING INDEX`, which builds nothing."),
            )
        }
        ConstrType::ConstrExclusion => (
            format!("`ADD CONSTRAINT {name}EXCLUDE` builds its index under an ACCESS EXCLUSIVE lock on {table}, {LOCK_UNTIL_COMMIT}; an exclusion constraint cannot be added NOT VALID, nor from an index built CONCURRENTLY."),
            "There is no online way to add an exclusion constraint: add it when the table is created, small, or quiet, and expect reads and writes to wait for the index build.".to_owned(),
        ),
        _ => return None,
    };
    Some((says.0, Some(says.1)))
}

fn validate_message(name: &str, table: &str, kind: Option<i32>) -> (String, Option<String>) {
    let what = match kind.and_then(|k| ConstrType::try_from(k).ok()) {
        Some(ConstrType::ConstrForeign) => "the SHARE ROW EXCLUSIVE locks ADD CONSTRAINT took on both tables are held until the migration commits, so the validation scans every row under them, blocking writes to both".to_owned(),
        Some(ConstrType::ConstrCheck | ConstrType::ConstrNotnull) => format!("the ACCESS EXCLUSIVE lock ADD CONSTRAINT took on {table} is held until the migration commits, so the validation scans every row under it, blocking reads and writes"),
        _ => "the lock ADD CONSTRAINT took is held until the migration commits, so the validation scans every row under it (ACCESS EXCLUSIVE for a CHECK, which blocks reads and writes; SHARE ROW EXCLUSIVE for a foreign key, which blocks writes)".to_owned(),
    };
    (
        format!("`VALIDATE CONSTRAINT {name}` in the transaction that added it NOT VALID gains nothing: {what}."),
        Some("Add the constraint NOT VALID in one migration and `VALIDATE CONSTRAINT` in a later one (each migration is its own transaction).".into()),
    )
}

/// `ADD COLUMN` of a domain with constraints: PostgreSQL checks them for every existing row
/// (even of a NULL column), rewriting the table, whatever the default (through 18).
/// Whether the column is given a DEFAULT of its own.
fn has_default(d: &protobuf::ColumnDef) -> bool {
    d.constraints.iter().any(|c| {
        matches!(c.node.as_ref(), Some(N::Constraint(c))
            if ConstrType::try_from(c.contype) == Ok(ConstrType::ConstrDefault))
    })
}

/// `ADD COLUMN c d` where the domain `d` has a DEFAULT: one that calls a volatile function
/// gives every row its own value (a rewrite); one of a volatility not known here may; a
/// constant one rewrites only before PostgreSQL 11.
fn domain_default_message(
    column: &str,
    domain: &str,
    calls: &[String],
    table: &str,
    target: Option<u32>,
) -> Option<(String, Option<String>)> {
    let rewrites = format!("rewrites {table} under an ACCESS EXCLUSIVE lock, {LOCK_UNTIL_COMMIT}");
    let help = Some(format!("Add the column with {domain}'s base type, or give it `DEFAULT NULL` (no rewrite), set its default for new rows with `ALTER COLUMN ... SET DEFAULT`, and backfill the existing rows in batches."));
    if let Some(v) = target.filter(|v| *v < 11) {
        return Some((
            format!("Before PostgreSQL 11 (the target is {}), `ADD COLUMN {column} {domain}` with the domain's DEFAULT {rewrites}.", crate::versions::name(v)),
            help,
        ));
    }
    if calls.is_empty() {
        return None;
    }
    if let Some(volatile) = calls.iter().find(|f| VOLATILE.contains(&f.as_str())) {
        return Some((
            format!("`ADD COLUMN {column} {domain}` gives every existing row the domain's DEFAULT, and {volatile}() in it is volatile: computed for every row, it {rewrites}."),
            help,
        ));
    }
    let unknown = calls
        .iter()
        .map(|f| format!("{f}()"))
        .collect::<Vec<_>>()
        .join(", ");
    Some((
        format!("`ADD COLUMN {column} {domain}` gives every existing row the domain's DEFAULT: if it is volatile, it {rewrites}; a stable or immutable default is evaluated once and no row is rewritten. stepmigrate does not know the volatility of {unknown}."),
        help,
    ))
}

fn domain_message(
    column: &str,
    domain: &str,
    table: &str,
    target: Option<u32>,
) -> (String, Option<String>) {
    let later = if target.is_none() {
        " (through PostgreSQL 18; from 19, a default that passes non-volatile constraints is stored without one)"
    } else {
        ""
    };
    (
        format!("`ADD COLUMN {column} {domain}`: {domain} is a domain with constraints, which PostgreSQL checks for every existing row, so it rewrites {table} under an ACCESS EXCLUSIVE lock, {LOCK_UNTIL_COMMIT}, with or without a default{later}."),
        Some("Add the column with the domain's base type instead (nullable, or with a constant default: no rewrite), fill it in batches, and check it with a table constraint added NOT VALID and validated (`VALIDATE CONSTRAINT`) in a later migration. Changing the column's type to the domain afterwards rewrites the table too.".into()),
    )
}

/// `None`: not a constraint squawk reports on. `Some((None, _))`: squawk's finding is not so.
/// The flag: the finding is a rewrite for certain, to make where squawk makes none.
#[allow(clippy::type_complexity)]
fn default_message(
    c: &protobuf::Constraint,
    column: &str,
    table: &str,
    target: Option<u32>,
) -> Option<(Option<(String, Option<String>)>, bool)> {
    let rewrites = format!("rewrites {table} under an ACCESS EXCLUSIVE lock, {LOCK_UNTIL_COMMIT}");
    let said = |says| Some((says, false));
    match ConstrType::try_from(c.contype).ok()? {
        ConstrType::ConstrGenerated if c.generated_kind == "v" => said(None),
        ConstrType::ConstrGenerated => said(Some((
            format!("`ADD COLUMN {column} ... GENERATED ALWAYS AS (...) STORED` computes the column for every existing row: it {rewrites}."),
            Some("Add a plain nullable column, fill it in batches and keep it current with a trigger; or, from PostgreSQL 18, make it VIRTUAL (computed when read: nothing is rewritten).".into()),
        ))),
        ConstrType::ConstrIdentity => said(Some((
            format!("`ADD COLUMN {column} ... GENERATED AS IDENTITY` numbers every existing row: it {rewrites}."),
            Some("On a large table, add it while the table is small or quiet: there is no online way to add an identity column.".into()),
        ))),
        ConstrType::ConstrDefault => {
            let functions = crate::types::called_functions(c.raw_expr.as_deref()?);
            let help = Some("Add the column without a default (or with a constant one), give it the volatile default with `ALTER COLUMN ... SET DEFAULT` (new rows only: no rewrite), and backfill the existing rows in batches.".to_owned());
            if let Some(v) = target.filter(|v| *v < 11) {
                return said(Some((
                    format!("Before PostgreSQL 11 (the target is {}), `ADD COLUMN {column}` with a DEFAULT {rewrites}.", crate::versions::name(v)),
                    Some("Add the column without a default (before 11 any DEFAULT given with ADD COLUMN rewrites, even 0 or another literal), give it its default with `ALTER COLUMN ... SET DEFAULT` (new rows only: no rewrite), and backfill the existing rows in batches.".to_owned()),
                )));
            }
            // Anywhere in the expression (an `ARRAY[...]`, a row, a cast, an argument): squawk
            // misses some of these, so the finding is made where it does not.
            if let Some(volatile) = functions.iter().find(|f| VOLATILE.contains(&f.as_str())) {
                return Some((
                    Some((
                        format!("`DEFAULT {volatile}()` is volatile: `ADD COLUMN {column}` computes it for every existing row, and {rewrites}."),
                        help,
                    )),
                    true,
                ));
            }
            let unknown = if functions.is_empty() {
                "this expression".to_owned()
            } else {
                functions.iter().map(|f| format!("{f}()")).collect::<Vec<_>>().join(", ")
            };
            said(Some((
                format!("If its DEFAULT is volatile, `ADD COLUMN {column}` {rewrites}; a stable or immutable default is evaluated once and no row is rewritten. stepmigrate does not know the volatility of {unknown}."),
                help,
            )))
        }
        _ => None,
    }
}
