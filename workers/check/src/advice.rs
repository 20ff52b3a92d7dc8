//! True words for three squawk rules whose messages are the same whatever the statement does:
//! `changing-column-type` (a table is not always rewritten), `constraint-missing-not-valid`
//! (the lock and the remedy depend on the kind of constraint: NOT VALID does not exist for an
//! EXCLUDE, a UNIQUE or a PRIMARY KEY) and `adding-field-with-default` (a volatile default is
//! not a generated column; a VIRTUAL generated column is not a rewrite).
//!
//! squawk decides where a finding is; this module reads the same statement with PostgreSQL's
//! grammar and says what it does. Each of squawk's findings is matched to the clause it is
//! about by offset within its statement.

use std::collections::BTreeMap;

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
pub(crate) fn facts(script: &str, columns: &mut Columns, target: Option<u32>) -> Vec<Fact> {
    let mut facts = Vec::new();
    // Constraints added NOT VALID in this file, by name: what a VALIDATE in the same
    // transaction validates under.
    let mut not_valid: BTreeMap<String, (i32, String)> = BTreeMap::new();
    for statement in sql::lex(script).statements {
        let Ok(parsed) = pg_query::parse(statement.text, 0) else {
            continue;
        };
        let span = (statement.offset, statement.offset + statement.text.len());
        let at = |location: i32| statement.offset + usize::try_from(location).unwrap_or(0);
        for raw in &parsed.protobuf.stmts {
            let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) else {
                continue;
            };
            if let N::AlterTableStmt(a) = node {
                let Some(r) = &a.relation else { continue };
                let foreign = ObjectType::try_from(a.objtype) == Ok(ObjectType::ObjectForeignTable);
                let table = table_name(r);
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
                            if c.skip_validation {
                                not_valid.insert(c.conname.clone(), (c.contype, table.clone()));
                            }
                            facts.push(Fact {
                                rule: CONSTRAINT_MISSING_NOT_VALID,
                                statement: span,
                                anchor: at(c.location),
                                says: constraint_message(c, &table),
                                own: false,
                            });
                        }
                        (Ok(AlterTableType::AtValidateConstraint), _) => {
                            let kind = not_valid.get(&cmd.name).map(|(k, _)| *k);
                            facts.push(Fact {
                                rule: CONSTRAINT_MISSING_NOT_VALID,
                                statement: span,
                                anchor: usize::MAX,
                                says: Some(validate_message(&cmd.name, &table, kind)),
                                own: false,
                            });
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
                            }
                        }
                        _ => {}
                    }
                }
            }
            columns.apply(node);
        }
    }
    facts
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
        _ => None,
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
        ", but the indexes on the column are rebuilt under it if its collation changes (here {collation}), which takes as long as they are large"
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
        Rewrite::No(why) => (
            format!(
                "{head}; the table is not rewritten ({why}){}. {clients}",
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
            let expr = c.raw_expr.as_deref()?;
            let mut functions = Vec::new();
            let json = serde_json::to_value(expr).unwrap_or_default();
            tree::visit(&json, &mut |kind, fields| {
                if kind == "FuncCall" {
                    if let Some(serde_json::Value::Array(names)) = fields.get("funcname") {
                        if let Some(name) = names
                            .last()
                            .and_then(|n| n.pointer("/node/String/sval"))
                            .and_then(|s| s.as_str())
                        {
                            functions.push(name.to_owned());
                        }
                    }
                }
            });
            // The node itself, when the expression is a call.
            if let Some(N::FuncCall(f)) = expr.node.as_ref() {
                if let Some(Some(N::String(s))) = f.funcname.last().map(|n| n.node.as_ref()) {
                    if !functions.contains(&s.sval) {
                        functions.push(s.sval.clone());
                    }
                }
            }
            let help = Some("Add the column without a default (or with a constant one), give it the volatile default with `ALTER COLUMN ... SET DEFAULT` (new rows only: no rewrite), and backfill the existing rows in batches.".to_owned());
            if let Some(v) = target.filter(|v| *v < 11) {
                return said(Some((
                    format!("Before PostgreSQL 11 (the target is {}), `ADD COLUMN {column}` with a DEFAULT {rewrites}.", crate::versions::name(v)),
                    help,
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
