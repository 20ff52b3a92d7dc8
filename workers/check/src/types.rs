//! Whether `ALTER COLUMN ... TYPE` rewrites the table: PostgreSQL skips the rewrite when the old
//! type converts to the new one without touching a value (a binary-coercible cast whose length
//! or precision check the planner drops: `varchar(10)` to `varchar(20)`, `varchar` to `text`,
//! `numeric(10,2)` to `numeric(12,2)`). The rules below are those of PostgreSQL's
//! `ATColumnChangeRequiresRewrite` and the `*_support` functions that drop a widening length
//! check (`varchar_support`, `numeric_support`, `timestamp_support`, `time_support`,
//! `varbit_support`); what they do not settle is said to depend.
//!
//! The old type is read from the migrations before the statement ([`Columns`]): `check` has no
//! database, so where the migrations do not say (a table made elsewhere, a column changed in a
//! `DO` block) the judgement is that it depends.

use std::collections::{BTreeMap, BTreeSet};

use pg_query::protobuf::node::Node as N;
use pg_query::protobuf::{self, AlterTableType, ObjectType};

/// A column's type, as far as the judgement needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnType {
    /// The canonical name of a built-in type (`varchar`, `int4`, `timestamptz`), or the name
    /// as written for any other type (a domain, an enum, an extension's type).
    pub name: String,
    pub builtin: bool,
    /// The type modifiers as written: `varchar(20)` → `[20]`, `numeric(12,2)` → `[12, 2]`.
    pub mods: Vec<i64>,
    pub array: bool,
}

impl std::fmt::Display for ColumnType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.name.as_str() {
            "int2" => "smallint",
            "int4" => "integer",
            "int8" => "bigint",
            "bpchar" => "char",
            "float4" => "real",
            "float8" => "double precision",
            "varbit" => "bit varying",
            "bool" => "boolean",
            other => other,
        };
        f.write_str(name)?;
        if !self.mods.is_empty() && self.name != "interval" {
            let mods: Vec<String> = self.mods.iter().map(i64::to_string).collect();
            write!(f, "({})", mods.join(","))?;
        }
        if self.array {
            f.write_str("[]")?;
        }
        Ok(())
    }
}

/// Built-in types by the names the grammar gives them (`pg_catalog.int4` for `integer`) or a
/// user writes (`int4`, `timestamptz`). `"char"` (quoted, the one-byte type) is left out: only
/// `pg_catalog.bpchar` is `char(n)`.
const BUILTIN: &[(&str, &str)] = &[
    ("int2", "int2"),
    ("smallint", "int2"),
    ("int4", "int4"),
    ("int", "int4"),
    ("integer", "int4"),
    ("int8", "int8"),
    ("bigint", "int8"),
    ("serial", "int4"),
    ("serial4", "int4"),
    ("bigserial", "int8"),
    ("serial8", "int8"),
    ("smallserial", "int2"),
    ("serial2", "int2"),
    ("float4", "float4"),
    ("real", "float4"),
    ("float8", "float8"),
    ("numeric", "numeric"),
    ("decimal", "numeric"),
    ("text", "text"),
    ("varchar", "varchar"),
    ("bpchar", "bpchar"),
    ("bool", "bool"),
    ("boolean", "bool"),
    ("date", "date"),
    ("timestamp", "timestamp"),
    ("timestamptz", "timestamptz"),
    ("time", "time"),
    ("timetz", "timetz"),
    ("interval", "interval"),
    ("bit", "bit"),
    ("varbit", "varbit"),
    ("uuid", "uuid"),
    ("json", "json"),
    ("jsonb", "jsonb"),
    ("bytea", "bytea"),
    ("inet", "inet"),
    ("cidr", "cidr"),
    ("macaddr", "macaddr"),
    ("money", "money"),
];

impl ColumnType {
    /// The type a `TypeName` names, or `None` for `%TYPE` and the like.
    pub fn of(type_name: &protobuf::TypeName) -> Option<ColumnType> {
        if type_name.pct_type || type_name.setof {
            return None;
        }
        let names: Vec<&str> = type_name
            .names
            .iter()
            .filter_map(|n| match n.node.as_ref()? {
                N::String(s) => Some(s.sval.as_str()),
                _ => None,
            })
            .collect();
        let (schema, last) = match names.as_slice() {
            [name] => (None, *name),
            [schema, name] => (Some(*schema), *name),
            _ => return None,
        };
        let mut mods = Vec::new();
        for m in &type_name.typmods {
            match m.node.as_ref()? {
                N::AConst(c) => match c.val.as_ref()? {
                    protobuf::a_const::Val::Ival(i) => mods.push(i64::from(i.ival)),
                    _ => return None,
                },
                _ => return None,
            }
        }
        let canonical = match schema {
            None | Some("pg_catalog") => BUILTIN
                .iter()
                .find(|(n, _)| *n == last)
                .map(|(_, c)| *c)
                .or_else(|| (schema == Some("pg_catalog") && last == "bpchar").then_some("bpchar")),
            Some(_) => None,
        };
        Some(ColumnType {
            name: canonical.map_or_else(|| names.join("."), str::to_owned),
            builtin: canonical.is_some(),
            mods,
            array: !type_name.array_bounds.is_empty(),
        })
    }
}

impl ColumnType {
    /// Whether the type has a collation (and so its indexes depend on it). Of the types whose
    /// change is judged not to rewrite, only the character types have one.
    pub fn collatable(&self) -> bool {
        self.builtin && matches!(self.name.as_str(), "text" | "varchar" | "bpchar")
    }
}

/// What happens to the table's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewrite {
    /// Not rewritten: why.
    No(String),
    /// Rewritten: why.
    Yes(String),
    /// It depends: on what.
    Depends(String),
}

/// Whether changing a column from `old` to `new` (no USING, or one that is the column itself)
/// rewrites the table. `target` is the server's major version, when known.
pub fn judge(old: &ColumnType, new: &ColumnType, target: Option<u32>) -> Rewrite {
    let change = format!("from {old} to {new}");
    let no = || {
        Rewrite::No(format!(
            "{change} is binary coercible: no value is converted"
        ))
    };
    let yes = |why: &str| Rewrite::Yes(format!("{change} {why}"));
    if old == new {
        return Rewrite::No(format!("the type stays {new}"));
    }
    if old.array || new.array {
        return Rewrite::Depends(format!(
            "the element types {change}: stepmigrate does not judge array type changes"
        ));
    }
    if !old.builtin || !new.builtin {
        let other = if old.builtin { new } else { old };
        return Rewrite::Depends(format!(
            "the type {}: stepmigrate does not know whether {change} is binary coercible (a domain's constraints, an extension's casts)",
            other.name
        ));
    }
    // A widening length or precision check the planner drops (the `*_support` functions):
    // no new limit, or one at least as large as the old one.
    let widens = |max: Option<i64>| -> bool {
        match (old.mods.first(), new.mods.first()) {
            (_, None) => true,
            (_, Some(n)) if max.is_some_and(|m| *n >= m) => true,
            (Some(o), Some(n)) => o <= n,
            (None, Some(_)) => false,
        }
    };
    let checks_every_value = "checks or converts every value: the table is rewritten";
    match (old.name.as_str(), new.name.as_str()) {
        ("varchar", "varchar") | ("varbit", "varbit") => {
            if widens(None) {
                no()
            } else {
                yes(checks_every_value)
            }
        }
        ("varchar", "text") | ("cidr", "inet") => no(),
        ("text", "varchar") => {
            if new.mods.is_empty() {
                no()
            } else {
                yes(checks_every_value)
            }
        }
        ("numeric", "numeric") => {
            let scale = |m: &[i64]| m.get(1).copied().unwrap_or(0);
            let same_scale_wider = match (old.mods.first(), new.mods.first()) {
                (_, None) => true,
                (Some(p), Some(q)) => scale(&old.mods) == scale(&new.mods) && p <= q,
                (None, Some(_)) => false,
            };
            if same_scale_wider {
                no()
            } else {
                yes(checks_every_value)
            }
        }
        ("timestamp", "timestamp")
        | ("timestamptz", "timestamptz")
        | ("time", "time")
        | ("timetz", "timetz") => {
            // Precision 6 is the most there is: a limit of 6 or more changes no value.
            if widens(Some(6)) {
                no()
            } else {
                yes("rounds every value: the table is rewritten")
            }
        }
        ("interval", "interval") => {
            if new.mods.is_empty() {
                no()
            } else {
                Rewrite::Depends(format!(
                    "the interval's fields and precision {change}: stepmigrate does not judge them"
                ))
            }
        }
        ("bit", "varbit") if new.mods.is_empty() => no(),
        ("timestamp", "timestamptz") | ("timestamptz", "timestamp") => match target {
            Some(v) if v < 12 => yes("converts every value before PostgreSQL 12: the table is rewritten"),
            _ => Rewrite::Depends(format!(
                "the session's TimeZone: {change} the table is not rewritten when it is UTC (PostgreSQL 12 and later), and is otherwise"
            )),
        },
        _ => yes("converts every value: the table and its indexes are rewritten"),
    }
}

/// The columns of the tables the migrations made, as far as they say: enough to know a
/// column's type before an `ALTER COLUMN ... TYPE`.
#[derive(Debug, Clone, Default)]
pub struct Columns {
    /// By schema and name (an unqualified name in the schema `search_path` gives it): its
    /// columns' types and partitioning.
    tables: BTreeMap<(String, String), Table>,
    /// The script's `search_path` as far as it set one (`public` until it does): the runner
    /// resets the session after each migration.
    search_path: Vec<String>,
    /// The script runs in one transaction (`SET LOCAL` lasts to its end; outside one it does
    /// nothing).
    in_transaction: bool,
    /// The domains the migrations made, by name (its last part, as renamed since), with their
    /// CHECK and NOT NULL constraints and their base domain: adding a column of one that has
    /// any (its base's included) makes PostgreSQL check every existing row, a rewrite.
    domains: BTreeMap<String, Domain>,
    /// The functions and procedures the migrations made, by name (its last part): a statement
    /// that calls one may change any table, as a `DO` block may.
    functions: BTreeSet<String>,
    /// The migrations made or renamed a schema: it may be the one named like the role.
    schema_made: bool,
    /// Tables the migrations dropped (and did not make again): `CREATE TABLE IF NOT EXISTS`
    /// of one makes it. Of any other table not known here, it may find one there already,
    /// whose columns are not known.
    absent: BTreeSet<(String, String)>,
    /// The migrations made a trigger or a rule: an `INSERT`, `UPDATE`, `DELETE` may then run
    /// any statement (a trigger's function may change a table).
    triggers: bool,
    /// The migrations made an event trigger: any statement may then run any other.
    event_triggers: bool,
}

/// A domain the migrations made.
#[derive(Debug, Clone, Default)]
struct Domain {
    /// The domain it is made over, when that is one the migrations made.
    base: Option<String>,
    /// Its CHECK constraints by name (PostgreSQL's name for an unnamed one, `<domain>_check`).
    checks: BTreeSet<String>,
    not_null: bool,
    /// Its DEFAULT, when it has one: the functions the expression calls (none: a constant).
    default_calls: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default)]
struct Table {
    /// `None` for a column whose type is not known.
    columns: BTreeMap<String, Option<ColumnType>>,
    /// Made with `PARTITION BY`.
    partitioned: bool,
    /// Of a partitioned table: the name of its DEFAULT partition, when it has one.
    default_partition: Option<String>,
    /// Its columns are all listed (made from a column list alone, without LIKE, INHERITS,
    /// OF or PARTITION OF): a column not listed is not there.
    complete: bool,
    /// The tables it inherits from or is a partition of: dropping one drops it, and a
    /// column type changed on one changes here.
    parents: Vec<(String, String)>,
}

/// The schema temporary tables are in: searched first for an unqualified name.
const TEMP: &str = "pg_temp";

/// The schema named like the role, which PostgreSQL's default `search_path`
/// (`"$user", public`) puts before `public` where it exists: its name is not known here. A
/// table made with an unqualified name under the default `search_path` while `public` has
/// one of that name is there (PostgreSQL made it, so it is not in `public`).
const USER: &str = "$user";

impl Columns {
    /// The type of `table.column` before the statement being judged, if the migrations say.
    pub fn type_of(&self, table: &protobuf::RangeVar, column: &str) -> Option<&ColumnType> {
        self.tables
            .get(&self.key(table)?)?
            .columns
            .get(column)?
            .as_ref()
    }

    /// The names of a table's columns, if the migrations made it (and say what they are).
    pub(crate) fn columns_of(&self, table: &protobuf::RangeVar) -> Option<BTreeSet<String>> {
        let t = self.tables.get(&self.key(table)?)?;
        Some(t.columns.keys().cloned().collect())
    }

    /// Where a new table of this name goes: its schema, else the first of `search_path`.
    fn creates(&self, r: &protobuf::RangeVar) -> (String, String) {
        let schema = if r.relpersistence == "t" {
            TEMP.to_owned()
        } else if r.schemaname.is_empty() {
            match self.search_path.first() {
                Some(first) => first.clone(),
                // The default `"$user", public`: where `public` has the name already, or
                // the role's schema is known to be there, the table is made in that one.
                None if self
                    .tables
                    .keys()
                    .any(|(s, n)| s == USER || (s == "public" && *n == r.relname)) =>
                {
                    USER.to_owned()
                }
                None => "public".to_owned(),
            }
        } else {
            r.schemaname.clone()
        };
        (schema, r.relname.clone())
    }

    /// The table a name refers to: its schema, else the first schema of `search_path` (after
    /// the temporary tables) that has a table of that name the migrations made, else the
    /// first schema of `search_path`. `None` for an unqualified name under the default
    /// `search_path` (`"$user", public`) that tables in two schemas have: the one named like
    /// the role, whose name is not known here, may be either.
    pub(crate) fn key(&self, r: &protobuf::RangeVar) -> Option<(String, String)> {
        if !r.schemaname.is_empty() {
            return Some((r.schemaname.clone(), r.relname.clone()));
        }
        let temp = (TEMP.to_owned(), r.relname.clone());
        if self.tables.contains_key(&temp) {
            return Some(temp);
        }
        if self.search_path.is_empty() {
            let homes: Vec<&String> = self
                .tables
                .keys()
                .filter(|(s, n)| *n == r.relname && s != TEMP)
                .map(|(s, _)| s)
                .collect();
            return match homes.as_slice() {
                [_, _, ..] => None,
                [home] if *home == USER => Some((USER.to_owned(), r.relname.clone())),
                _ => Some(("public".to_owned(), r.relname.clone())),
            };
        }
        let path = &self.search_path[..];
        Some(
            path.iter()
                .map(|schema| (schema.clone(), r.relname.clone()))
                .find(|key| self.tables.contains_key(key))
                .unwrap_or_else(|| (path[0].clone(), r.relname.clone())),
        )
    }

    /// As [`Columns::key`], for a statement that changes the table: where the name is
    /// ambiguous, the tables it may be are forgotten.
    fn key_or_forget(&mut self, r: &protobuf::RangeVar) -> Option<(String, String)> {
        let key = self.key(r);
        if key.is_none() {
            self.tables.retain(|(s, n), _| *n != r.relname || s == TEMP);
        }
        key
    }

    /// The table a `CREATE TABLE` of this name makes, and whether a table of that name may
    /// be there already (the migrations made it, or they do not say it is not there).
    pub(crate) fn created(&self, r: &protobuf::RangeVar) -> ((String, String), bool) {
        let key = self.creates(r);
        let may_exist = self.may_exist(r, &key);
        (key, may_exist)
    }

    /// Whether the table is partitioned, and the name of its DEFAULT partition.
    pub(crate) fn partitioning(&self, r: &protobuf::RangeVar) -> Option<Option<&str>> {
        let t = self.tables.get(&self.key(r)?)?;
        t.partitioned.then_some(t.default_partition.as_deref())
    }

    fn table_mut(&mut self, r: &protobuf::RangeVar) -> Option<&mut Table> {
        let key = self.key_or_forget(r)?;
        self.tables.get_mut(&key)
    }

    /// Whether `CREATE TABLE IF NOT EXISTS` of `r`, made as `key`, may find a table there:
    /// one the migrations made, or one they do not know of (a table made before them, by a
    /// statement not followed here), unless they dropped it. Under the default
    /// `search_path`, of a name `public` has: unless the migrations made a schema since (it
    /// may be the role's, where the table is then made), it is that one.
    fn may_exist(&self, r: &protobuf::RangeVar, key: &(String, String)) -> bool {
        !self.absent.contains(key)
            || (key.0 == USER
                && !self.schema_made
                && !self.tables.keys().any(|(s, _)| s == USER)
                && self
                    .tables
                    .contains_key(&("public".to_owned(), r.relname.clone())))
    }

    /// `ALTER SCHEMA old RENAME TO new`: the tables of `old` are `new`'s. Where the role's
    /// schema has tables, `old` or `new` may be it (its name is not known here): the tables
    /// of those names are forgotten.
    fn rename_schema(&mut self, old: &str, new: &str) {
        self.schema_made = true;
        let in_user: BTreeSet<String> = self
            .tables
            .keys()
            .filter(|(s, _)| s == USER)
            .map(|(_, n)| n.clone())
            .collect();
        let moved: Vec<(String, String)> = self
            .tables
            .keys()
            .filter(|(s, _)| s == old)
            .cloned()
            .collect();
        // What was dropped from `old` is not in `new` (rekey then marks the old names).
        self.absent = std::mem::take(&mut self.absent)
            .into_iter()
            .map(|(s, n)| {
                if s == old {
                    (new.to_owned(), n)
                } else {
                    (s, n)
                }
            })
            .collect();
        for key in moved {
            let to = (new.to_owned(), key.1.clone());
            self.rekey(&key, to);
        }
        self.tables.retain(|(_, n), _| !in_user.contains(n));
    }

    /// A new script: the session's settings are the runner's again.
    pub(crate) fn start_script(&mut self, in_transaction: bool) {
        self.search_path.clear();
        self.in_transaction = in_transaction;
    }

    /// Forgets everything: after a statement whose effect is unknown (a `DO` block). The
    /// functions made stay made.
    pub fn forget(&mut self) {
        self.tables.clear();
        self.domains.clear();
        self.absent.clear();
    }

    /// Drops a table and every table that inherits from it or is its partition (PostgreSQL
    /// drops partitions with their table; inheriting tables go with CASCADE).
    fn drop_table(&mut self, key: &(String, String)) {
        let mut gone = vec![key.clone()];
        while let Some(next) = gone.pop() {
            self.tables.remove(&next);
            for other in self.tables.values_mut() {
                if other.default_partition.as_deref() == Some(next.1.as_str()) {
                    other.default_partition = None;
                }
            }
            gone.extend(
                self.tables
                    .iter()
                    .filter(|(_, t)| t.parents.contains(&next))
                    .map(|(k, _)| k.clone()),
            );
            self.absent.insert(next);
        }
    }

    /// The tables that inherit from `key` or are its partitions, at any depth.
    fn descendants(&self, key: &(String, String)) -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = Vec::new();
        let mut next = vec![key.clone()];
        while let Some(parent) = next.pop() {
            for (k, t) in &self.tables {
                if t.parents.contains(&parent) && !found.contains(k) {
                    found.push(k.clone());
                    next.push(k.clone());
                }
            }
        }
        found
    }

    /// A table known here renamed or moved: its partitions and children follow it.
    fn rekey(&mut self, old: &(String, String), new: (String, String)) {
        if let Some(t) = self.tables.remove(old) {
            for other in self.tables.values_mut() {
                for parent in &mut other.parents {
                    if parent == old {
                        *parent = new.clone();
                    }
                }
            }
            self.absent.remove(&new);
            self.absent.insert(old.clone());
            self.tables.insert(new, t);
        }
    }

    /// The name of the domain `type_name` is, when the migrations made it with constraints
    /// (CHECK or NOT NULL) that it still has. Not for an array of it: its values are not
    /// checked when a column is added.
    pub fn constrained_domain(&self, type_name: &protobuf::TypeName) -> Option<String> {
        if !type_name.array_bounds.is_empty() || type_name.pct_type || type_name.setof {
            return None;
        }
        let name = last_name(&type_name.names)?;
        self.domain_checks(&name).then_some(name)
    }

    /// The DEFAULT a column of `type_name` gets when `ADD COLUMN` gives none: the domain's
    /// own, else its base domain's, when the migrations made it. The domain's name and the
    /// functions the default calls.
    pub fn domain_default(&self, type_name: &protobuf::TypeName) -> Option<(String, Vec<String>)> {
        if !type_name.array_bounds.is_empty() || type_name.pct_type || type_name.setof {
            return None;
        }
        let mut next = last_name(&type_name.names);
        for _ in 0..=self.domains.len() {
            let name = next?;
            let d = self.domains.get(&name)?;
            if let Some(calls) = &d.default_calls {
                return Some((name, calls.clone()));
            }
            next = d.base.clone();
        }
        None
    }

    /// Whether the domain `name` (or a domain it is made over) has a CHECK or NOT NULL.
    fn domain_checks(&self, name: &str) -> bool {
        let mut next = Some(name);
        // A chain of bases is finite; the bound guards against a cycle a rename could make.
        for _ in 0..=self.domains.len() {
            let Some(d) = next.and_then(|n| self.domains.get(n)) else {
                return false;
            };
            if d.not_null || !d.checks.is_empty() {
                return true;
            }
            next = d.base.as_deref();
        }
        false
    }

    /// Whether the statement calls a function or procedure the migrations made (beside
    /// making it): its body may have changed any table.
    pub(crate) fn calls_a_function_made_here(&self, statement: &N) -> bool {
        if self.functions.is_empty() || matches!(statement, N::CreateFunctionStmt(_)) {
            return false;
        }
        // `CALL p()`: its call is a field of the statement, not a node of the tree.
        if let N::CallStmt(c) = statement {
            if c.funccall
                .as_ref()
                .and_then(|f| last_name(&f.funcname))
                .is_some_and(|name| self.functions.contains(&name))
            {
                return true;
            }
        }
        let json = serde_json::to_value(statement).unwrap_or_default();
        let mut found = false;
        crate::tree::visit(&json, &mut |kind, fields| {
            if kind == "FuncCall" {
                let name = fields
                    .get("funcname")
                    .and_then(serde_json::Value::as_array)
                    .and_then(|names| names.last())
                    .and_then(|n| n.pointer("/node/String/sval"))
                    .and_then(serde_json::Value::as_str);
                if name.is_some_and(|n| self.functions.contains(n)) {
                    found = true;
                }
            }
        });
        found
    }

    /// `set_config('search_path', value, is_local)` called by `statement`: the schemas it
    /// sets (`None` where the value is not a constant) and whether only for the transaction.
    fn search_path_by_call(statement: &N) -> Vec<(Option<Vec<String>>, bool)> {
        let json = serde_json::to_value(statement).unwrap_or_default();
        fn string_in(v: &serde_json::Value) -> Option<String> {
            match v {
                serde_json::Value::Object(o) => o
                    .get("sval")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
                    .or_else(|| o.values().find_map(string_in)),
                serde_json::Value::Array(a) => a.iter().find_map(string_in),
                _ => None,
            }
        }
        fn is_constant(v: &serde_json::Value) -> bool {
            v.to_string().contains("\"AConst\"")
                && !v.to_string().contains("ColumnRef")
                && !v.to_string().contains("FuncCall")
        }
        let mut found = Vec::new();
        crate::tree::visit(&json, &mut |kind, fields| {
            if kind != "FuncCall" {
                return;
            }
            let name = fields
                .get("funcname")
                .and_then(serde_json::Value::as_array)
                .and_then(|names| names.last())
                .and_then(string_in);
            if !name.is_some_and(|n| n.eq_ignore_ascii_case("set_config")) {
                return;
            }
            let args: Vec<serde_json::Value> = fields
                .get("args")
                .and_then(serde_json::Value::as_array)
                .cloned()
                .unwrap_or_default();
            let setting = args.first().filter(|a| is_constant(a)).and_then(string_in);
            match &setting {
                Some(s) if s.eq_ignore_ascii_case("search_path") => {}
                // A setting named at run time may be the search_path too.
                None if !args.is_empty() => {}
                _ => return,
            }
            let value = args
                .get(1)
                .filter(|a| is_constant(a))
                .and_then(string_in)
                .filter(|_| setting.is_some())
                .map(|v| {
                    v.split(',')
                        .map(|p| p.trim().trim_matches('"').to_owned())
                        .filter(|p| !p.is_empty() && p != "$user" && p != "pg_catalog")
                        .collect()
                });
            fn bool_in(v: &serde_json::Value) -> Option<bool> {
                match v {
                    serde_json::Value::Object(o) => match o.get("boolval") {
                        Some(serde_json::Value::Bool(b)) => Some(*b),
                        // Protobuf's default (false) may be left out.
                        Some(serde_json::Value::Object(inner)) => Some(
                            inner
                                .get("boolval")
                                .and_then(serde_json::Value::as_bool)
                                .unwrap_or(false),
                        ),
                        _ => o.values().find_map(bool_in),
                    },
                    serde_json::Value::Array(a) => a.iter().find_map(bool_in),
                    _ => None,
                }
            }
            // Only a constant false (or `'off'`) is not local; anything else may be.
            let local = args.get(2).is_none_or(|a| {
                bool_in(a) != Some(false)
                    && !string_in(a).is_some_and(|t| {
                        ["false", "off", "f", "no", "0"].contains(&t.to_ascii_lowercase().as_str())
                    })
            });
            found.push((value, local));
        });
        found
    }

    /// Takes in what one parsed statement does to tables and columns.
    pub fn apply(&mut self, statement: &N) {
        // A function made by the migrations may do anything (`ALTER TABLE` in its body): after
        // a call to one, as after a `DO` block or a `CALL`, what the tables are is not known.
        if self.calls_a_function_made_here(statement) {
            self.forget();
        }
        // `SELECT set_config('search_path', ...)`: as `SET`; a value not known here leaves
        // every unqualified name unknown.
        for (value, local) in Self::search_path_by_call(statement) {
            if local && !self.in_transaction {
                continue;
            }
            match value {
                Some(path) => self.search_path = path,
                None => self.forget(),
            }
        }
        match statement {
            N::CreateStmt(c) => {
                let Some(r) = &c.relation else { return };
                // Columns from LIKE, INHERITS or OF are not listed: their types stay unknown.
                let mut columns = BTreeMap::new();
                for element in &c.table_elts {
                    if let Some(N::ColumnDef(d)) = element.node.as_ref() {
                        columns.insert(
                            d.colname.clone(),
                            d.type_name.as_ref().and_then(ColumnType::of),
                        );
                    }
                }
                let key = self.creates(r);
                // `IF NOT EXISTS` of a table that is there does nothing; of one that may be
                // (not made here, nor dropped), what the table is is not known.
                if c.if_not_exists && self.may_exist(r, &key) {
                    return;
                }
                let parents = c
                    .inh_relations
                    .iter()
                    .filter_map(|p| match p.node.as_ref() {
                        Some(N::RangeVar(p)) => self.key(p),
                        _ => None,
                    })
                    .collect();
                // A partition: the DEFAULT one of its parent.
                if let (Some(bound), Some(parent)) = (&c.partbound, c.inh_relations.first()) {
                    if let Some(N::RangeVar(parent)) = parent.node.as_ref() {
                        if bound.is_default {
                            if let Some(p) = self.table_mut(parent) {
                                p.default_partition = Some(r.relname.clone());
                            }
                        }
                    }
                }
                self.absent.remove(&key);
                self.tables.insert(
                    key,
                    Table {
                        columns,
                        parents,
                        partitioned: c.partspec.is_some(),
                        default_partition: None,
                        complete: c.inh_relations.is_empty()
                            && c.of_typename.is_none()
                            && c.partbound.is_none()
                            && c.table_elts
                                .iter()
                                .all(|e| !matches!(e.node.as_ref(), Some(N::TableLikeClause(_)))),
                    },
                );
            }
            N::AlterTableStmt(a) => {
                let Some(r) = &a.relation else { return };
                // `ALTER TYPE t ALTER ATTRIBUTE ...`: a composite type, not a table of its
                // name (the tables made `OF` it list no column types here).
                if ObjectType::try_from(a.objtype) == Ok(ObjectType::ObjectType) {
                    return;
                }
                // A column's type changed or a column dropped on a table changes its
                // partitions and children too (unless `ONLY`): they are no longer known.
                if r.inh && self.changes_columns(a) {
                    if let Some(key) = self.key(r) {
                        for child in self.descendants(&key) {
                            self.tables.remove(&child);
                        }
                    }
                }
                let Some(t) = self.table_mut(r) else { return };
                for cmd in &a.cmds {
                    let Some(N::AlterTableCmd(cmd)) = cmd.node.as_ref() else {
                        continue;
                    };
                    let def = match cmd.def.as_deref().and_then(|d| d.node.as_ref()) {
                        Some(N::ColumnDef(d)) => Some(d),
                        // Its DEFAULT partition attached or detached.
                        Some(N::PartitionCmd(p)) => {
                            let name = p.name.as_ref().map(|n| n.relname.clone());
                            match AlterTableType::try_from(cmd.subtype) {
                                Ok(AlterTableType::AtAttachPartition)
                                    if p.bound.as_ref().is_some_and(|b| b.is_default) =>
                                {
                                    t.default_partition = name;
                                }
                                Ok(AlterTableType::AtDetachPartition)
                                    if t.default_partition == name =>
                                {
                                    t.default_partition = None;
                                }
                                _ => {}
                            }
                            None
                        }
                        _ => None,
                    };
                    match AlterTableType::try_from(cmd.subtype) {
                        Ok(AlterTableType::AtAddColumn) => {
                            if let Some(d) = def {
                                // `ADD COLUMN IF NOT EXISTS` of a column that is there does
                                // nothing; of one that may be (not listed), it is not known.
                                let ty = if !cmd.missing_ok {
                                    d.type_name.as_ref().and_then(ColumnType::of)
                                } else if t.columns.contains_key(&d.colname) {
                                    continue;
                                } else if t.complete {
                                    d.type_name.as_ref().and_then(ColumnType::of)
                                } else {
                                    None
                                };
                                t.columns.insert(d.colname.clone(), ty);
                            }
                        }
                        Ok(AlterTableType::AtAlterColumnType) => {
                            let new = def
                                .and_then(|d| d.type_name.as_ref())
                                .and_then(ColumnType::of);
                            t.columns.insert(cmd.name.clone(), new);
                        }
                        Ok(AlterTableType::AtDropColumn) => {
                            t.columns.remove(&cmd.name);
                        }
                        _ => {}
                    }
                }
            }
            N::RenameStmt(rename) => {
                let object = match rename.object.as_deref().and_then(|o| o.node.as_ref()) {
                    Some(N::List(l)) => last_name(&l.items),
                    Some(N::TypeName(t)) => last_name(&t.names),
                    _ => None,
                };
                match (ObjectType::try_from(rename.rename_type), object) {
                    // `ALTER DOMAIN d RENAME TO e`, `ALTER TYPE d RENAME TO e`: its constraints
                    // keep their names.
                    (Ok(ObjectType::ObjectDomain | ObjectType::ObjectType), Some(old)) => {
                        if let Some(domain) = self.domains.remove(&old) {
                            for other in self.domains.values_mut() {
                                if other.base.as_deref() == Some(old.as_str()) {
                                    other.base = Some(rename.newname.clone());
                                }
                            }
                            self.domains.insert(rename.newname.clone(), domain);
                        }
                        return;
                    }
                    (Ok(ObjectType::ObjectDomconstraint), Some(domain)) => {
                        if let Some(d) = self.domains.get_mut(&domain) {
                            if d.checks.remove(&rename.subname) {
                                d.checks.insert(rename.newname.clone());
                            }
                        }
                        return;
                    }
                    _ => {}
                }
                // `ALTER SCHEMA s RENAME TO s2`: its tables are s2's.
                if ObjectType::try_from(rename.rename_type) == Ok(ObjectType::ObjectSchema) {
                    self.rename_schema(&rename.subname, &rename.newname);
                    return;
                }
                let Some(r) = &rename.relation else { return };
                match ObjectType::try_from(rename.rename_type) {
                    Ok(ObjectType::ObjectColumn) => {
                        if let Some(t) = self.table_mut(r) {
                            let column = t.columns.remove(&rename.subname).flatten();
                            t.columns.insert(rename.newname.clone(), column);
                        }
                    }
                    // PostgreSQL renames a table named in `ALTER INDEX`, `ALTER VIEW`,
                    // `ALTER SEQUENCE` or `ALTER MATERIALIZED VIEW ... RENAME` as in `ALTER
                    // TABLE`.
                    Ok(
                        ObjectType::ObjectTable
                        | ObjectType::ObjectIndex
                        | ObjectType::ObjectView
                        | ObjectType::ObjectSequence
                        | ObjectType::ObjectMatview
                        | ObjectType::ObjectForeignTable,
                    ) => {
                        let Some(key) = self.key_or_forget(r) else {
                            return;
                        };
                        if self.tables.contains_key(&key) {
                            for other in self.tables.values_mut() {
                                if other.default_partition.as_deref() == Some(r.relname.as_str()) {
                                    other.default_partition = Some(rename.newname.clone());
                                }
                            }
                            let new = (key.0.clone(), rename.newname.clone());
                            self.rekey(&key, new);
                        } else {
                            // Renamed from a table not known here: the new name is not known.
                            self.tables.remove(&(key.0.clone(), rename.newname.clone()));
                            self.absent.insert(key);
                        }
                    }
                    _ => {}
                }
            }
            N::DropStmt(d) => self.drop(d),
            // Moved to another schema, or made from a query: its columns are not known here.
            N::AlterObjectSchemaStmt(s) => {
                if let Some(key) = s.relation.as_ref().and_then(|r| self.key_or_forget(r)) {
                    let new = (s.newschema.clone(), key.1.clone());
                    if self.tables.contains_key(&key) {
                        self.rekey(&key, new);
                    } else {
                        self.tables.remove(&new);
                        self.absent.insert(key);
                    }
                }
            }
            N::CreateTableAsStmt(c) => {
                if let Some(r) = c.into.as_ref().and_then(|i| i.rel.as_ref()) {
                    let key = self.creates(r);
                    if !(c.if_not_exists && self.may_exist(r, &key)) {
                        self.absent.remove(&key);
                        self.tables.insert(key, Table::default());
                    }
                }
            }
            // `SET [LOCAL] search_path TO a, b`; `RESET search_path`, `SET ... TO DEFAULT`.
            // `SET LOCAL` outside a transaction block does nothing (PostgreSQL warns).
            N::VariableSetStmt(v) if v.is_local && !self.in_transaction => {}
            N::VariableSetStmt(v) if v.name.eq_ignore_ascii_case("search_path") => {
                self.search_path = v
                    .args
                    .iter()
                    .filter_map(|a| match a.node.as_ref()? {
                        N::AConst(c) => match c.val.as_ref()? {
                            protobuf::a_const::Val::Sval(s) => Some(s.sval.clone()),
                            _ => None,
                        },
                        _ => None,
                    })
                    // `$user` is a schema only where one has the role's name.
                    .filter(|s| s != "$user" && s != "pg_catalog")
                    .collect();
            }
            N::CreateSchemaStmt(c) => {
                self.schema_made = true;
                self.create_schema_elements(c);
            }
            N::CreateTrigStmt(_) | N::RuleStmt(_) => self.triggers = true,
            N::CreateEventTrigStmt(_) => self.event_triggers = true,
            // A change of rows changes no column, unless a trigger or rule the migrations made
            // runs on it: that may run any statement.
            N::InsertStmt(_)
            | N::UpdateStmt(_)
            | N::DeleteStmt(_)
            | N::MergeStmt(_)
            | N::CopyStmt(_)
            | N::TruncateStmt(_)
            | N::ExecuteStmt(_)
            | N::ExplainStmt(_) => {
                if self.triggers {
                    self.forget();
                }
            }
            // A DO block or a procedure may change any table.
            N::DoStmt(_) | N::CallStmt(_) => self.forget(),
            N::CreateFunctionStmt(f) => {
                if let Some(name) = last_name(&f.funcname) {
                    self.functions.insert(name);
                }
            }
            N::CreateDomainStmt(d) => {
                let Some(name) = last_name(&d.domainname) else {
                    return;
                };
                let mut domain = Domain {
                    base: d
                        .type_name
                        .as_ref()
                        .filter(|t| t.array_bounds.is_empty())
                        .and_then(|t| last_name(&t.names))
                        .filter(|base| self.domains.contains_key(base)),
                    ..Domain::default()
                };
                for c in &d.constraints {
                    domain.add(&name, c);
                }
                self.domains.insert(name, domain);
            }
            N::AlterDomainStmt(a) => {
                let Some(name) = last_name(&a.type_name) else {
                    return;
                };
                let Some(domain) = self.domains.get_mut(&name) else {
                    return;
                };
                match a.subtype.as_str() {
                    // ADD CONSTRAINT
                    "C" => {
                        if let Some(c) = a.def.as_deref() {
                            domain.add(&name, c);
                        }
                    }
                    // SET DEFAULT, DROP DEFAULT
                    "T" => domain.default_calls = a.def.as_deref().map(called_functions),
                    // SET NOT NULL, DROP NOT NULL
                    "O" => domain.not_null = true,
                    "N" => domain.not_null = false,
                    // DROP CONSTRAINT [IF EXISTS]: one not known here lowers nothing (from 17
                    // its NOT NULL is a constraint too, named `<domain>_not_null`).
                    "X" if !domain.checks.remove(&a.name)
                        && a.name == format!("{name}_not_null") =>
                    {
                        domain.not_null = false;
                    }
                    _ => {}
                }
            }
            // What follows here is known not to change a table's columns; any other
            // statement may (an extension's script, `DROP OWNED`, `IMPORT FOREIGN SCHEMA`, a
            // statement this model does not follow): what the tables are is then not known.
            N::SelectStmt(_)
            | N::PrepareStmt(_)
            | N::DeallocateStmt(_)
            | N::IndexStmt(_)
            | N::ReindexStmt(_)
            | N::ClusterStmt(_)
            | N::VacuumStmt(_)
            | N::LockStmt(_)
            | N::CommentStmt(_)
            | N::SecLabelStmt(_)
            | N::GrantStmt(_)
            | N::GrantRoleStmt(_)
            | N::AlterDefaultPrivilegesStmt(_)
            | N::AlterOwnerStmt(_)
            | N::CreateRoleStmt(_)
            | N::AlterRoleStmt(_)
            | N::AlterRoleSetStmt(_)
            | N::DropRoleStmt(_)
            | N::CreateSeqStmt(_)
            | N::AlterSeqStmt(_)
            | N::ViewStmt(_)
            | N::RefreshMatViewStmt(_)
            | N::CreateEnumStmt(_)
            | N::AlterEnumStmt(_)
            | N::CompositeTypeStmt(_)
            | N::CreateRangeStmt(_)
            | N::DefineStmt(_)
            | N::CreateCastStmt(_)
            | N::CreateOpClassStmt(_)
            | N::CreateOpFamilyStmt(_)
            | N::AlterOpFamilyStmt(_)
            | N::AlterOperatorStmt(_)
            | N::CreateConversionStmt(_)
            | N::CreatePolicyStmt(_)
            | N::AlterPolicyStmt(_)
            | N::CreateStatsStmt(_)
            | N::AlterStatsStmt(_)
            | N::AlterFunctionStmt(_)
            | N::AlterCollationStmt(_)
            | N::AlterTableMoveAllStmt(_)
            | N::ReplicaIdentityStmt(_)
            | N::CreatePublicationStmt(_)
            | N::AlterPublicationStmt(_)
            | N::TransactionStmt(_)
            | N::VariableSetStmt(_)
            | N::VariableShowStmt(_)
            | N::ConstraintsSetStmt(_)
            | N::DeclareCursorStmt(_)
            | N::FetchStmt(_)
            | N::ClosePortalStmt(_)
            | N::NotifyStmt(_)
            | N::ListenStmt(_)
            | N::UnlistenStmt(_)
            | N::CheckPointStmt(_)
            | N::DiscardStmt(_)
            | N::AlterTsdictionaryStmt(_)
            | N::AlterTsconfigurationStmt(_) => {}
            _ => self.forget(),
        }
        // An event trigger the migrations made may run any statement after any other.
        if self.event_triggers {
            self.forget();
        }
    }

    /// Whether an `ALTER TABLE` changes a column's type or drops a column.
    fn changes_columns(&self, a: &protobuf::AlterTableStmt) -> bool {
        a.cmds.iter().any(|cmd| {
            matches!(
                cmd.node.as_ref(),
                Some(N::AlterTableCmd(c)) if matches!(
                    AlterTableType::try_from(c.subtype),
                    Ok(AlterTableType::AtAlterColumnType | AlterTableType::AtDropColumn)
                )
            )
        })
    }

    /// `DROP ...`: a table (with its partitions, and with CASCADE its children) or a
    /// domain is gone; with CASCADE anything else may take columns with it (`DROP TYPE`,
    /// `DROP COLLATION`, `DROP FUNCTION` of a column's default or generated expression), and
    /// `DROP SCHEMA` or `DROP EXTENSION` take their tables: what the tables are is then not
    /// known.
    fn drop(&mut self, d: &protobuf::DropStmt) {
        let cascade = d.behavior == protobuf::DropBehavior::DropCascade as i32;
        match ObjectType::try_from(d.remove_type) {
            Ok(
                ObjectType::ObjectTable
                | ObjectType::ObjectMatview
                | ObjectType::ObjectForeignTable
                | ObjectType::ObjectView,
            ) => {
                if cascade {
                    self.forget();
                }
                for object in &d.objects {
                    let Some(N::List(l)) = object.node.as_ref() else {
                        continue;
                    };
                    let names: Vec<&str> = l
                        .items
                        .iter()
                        .filter_map(|n| match n.node.as_ref() {
                            Some(N::String(s)) => Some(s.sval.as_str()),
                            _ => None,
                        })
                        .collect();
                    let r = match names.as_slice() {
                        [name] => range_var("", name),
                        [.., schema, name] => range_var(schema, name),
                        [] => continue,
                    };
                    match self.key_or_forget(&r) {
                        Some(key) => self.drop_table(&key),
                        // Which table is dropped is not known: nor are its partitions.
                        None => self.forget(),
                    }
                }
            }
            Ok(ObjectType::ObjectDomain) if !cascade => {
                for object in &d.objects {
                    if let Some(N::TypeName(t)) = object.node.as_ref() {
                        if let Some(name) = last_name(&t.names) {
                            self.domains.remove(&name);
                        }
                    }
                }
            }
            Ok(ObjectType::ObjectSchema | ObjectType::ObjectExtension) => self.forget(),
            _ if cascade => self.forget(),
            // Anything else dropped without CASCADE: nothing that holds a column depends on it.
            _ => {}
        }
    }

    /// `CREATE SCHEMA s CREATE TABLE t ...`: the elements are made in `s`.
    fn create_schema_elements(&mut self, c: &protobuf::CreateSchemaStmt) {
        if c.schema_elts.is_empty() {
            return;
        }
        // `CREATE SCHEMA AUTHORIZATION role`: the schema is named like a role not known here.
        if c.schemaname.is_empty() {
            self.forget();
            return;
        }
        let path = std::mem::replace(&mut self.search_path, vec![c.schemaname.clone()]);
        for element in &c.schema_elts {
            if let Some(node) = element.node.as_ref() {
                self.apply(node);
            }
        }
        self.search_path = path;
    }
}

/// A table's name as a statement would give it.
fn range_var(schema: &str, name: &str) -> protobuf::RangeVar {
    protobuf::RangeVar {
        schemaname: schema.to_owned(),
        relname: name.to_owned(),
        inh: true,
        relpersistence: "p".to_owned(),
        ..protobuf::RangeVar::default()
    }
}

/// The last part of a qualified name (`s.name`).
fn last_name(names: &[protobuf::Node]) -> Option<String> {
    match names.last()?.node.as_ref()? {
        N::String(s) => Some(s.sval.clone()),
        _ => None,
    }
}

impl Domain {
    /// Takes in one of its constraints: a CHECK under its name (PostgreSQL's
    /// `<domain>_check`, `<domain>_check1`, ... for an unnamed one), a NOT NULL.
    fn add(&mut self, domain: &str, node: &protobuf::Node) {
        use protobuf::ConstrType;
        let Some(N::Constraint(c)) = node.node.as_ref() else {
            return;
        };
        match ConstrType::try_from(c.contype) {
            Ok(ConstrType::ConstrCheck) => {
                let name = if c.conname.is_empty() {
                    let mut name = format!("{domain}_check");
                    let mut n = 0;
                    while self.checks.contains(&name) {
                        n += 1;
                        name = format!("{domain}_check{n}");
                    }
                    name
                } else {
                    c.conname.clone()
                };
                self.checks.insert(name);
            }
            Ok(ConstrType::ConstrNotnull) => self.not_null = true,
            Ok(ConstrType::ConstrDefault) => {
                self.default_calls = c.raw_expr.as_deref().map(called_functions);
            }
            _ => {}
        }
    }
}

/// The names (last part) of the functions an expression calls, at any depth.
pub(crate) fn called_functions(expr: &protobuf::Node) -> Vec<String> {
    let mut functions = Vec::new();
    let json = serde_json::to_value(expr).unwrap_or_default();
    crate::tree::visit(&json, &mut |kind, fields| {
        if kind == "FuncCall" {
            if let Some(name) = fields
                .get("funcname")
                .and_then(serde_json::Value::as_array)
                .and_then(|names| names.last())
                .and_then(|n| n.pointer("/node/String/sval"))
                .and_then(serde_json::Value::as_str)
            {
                if !functions.iter().any(|f| f == name) {
                    functions.push(name.to_owned());
                }
            }
        }
    });
    // The node itself, when the expression is a call.
    if let Some(N::FuncCall(f)) = expr.node.as_ref() {
        if let Some(N::String(s)) = f.funcname.last().and_then(|n| n.node.as_ref()) {
            if !functions.contains(&s.sval) {
                functions.push(s.sval.clone());
            }
        }
    }
    functions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(sql_type: &str) -> ColumnType {
        let parsed = pg_query::parse(&format!("CREATE TABLE t (c {sql_type})"), 0).unwrap();
        let Some(N::CreateStmt(c)) = parsed.protobuf.stmts[0]
            .stmt
            .as_ref()
            .and_then(|s| s.node.as_ref())
        else {
            panic!()
        };
        let Some(N::ColumnDef(d)) = c.table_elts[0].node.as_ref() else {
            panic!()
        };
        ColumnType::of(d.type_name.as_ref().unwrap()).unwrap()
    }

    fn verdict(old: &str, new: &str) -> &'static str {
        match judge(&ty(old), &ty(new), None) {
            Rewrite::No(_) => "no",
            Rewrite::Yes(_) => "yes",
            Rewrite::Depends(_) => "depends",
        }
    }

    #[test]
    fn binary_coercible_changes_are_not_rewrites() {
        for (old, new) in [
            ("varchar(10)", "varchar(20)"),
            ("character varying(10)", "varchar"),
            ("varchar", "text"),
            ("varchar(10)", "text"),
            ("text", "varchar"),
            ("text", "character varying"),
            ("numeric(10,2)", "numeric(12,2)"),
            ("decimal(10,2)", "numeric"),
            ("numeric(10)", "numeric(12,0)"),
            ("timestamp(3)", "timestamp(6)"),
            ("timestamp", "timestamp(6)"),
            ("timestamptz(0)", "timestamp(2) with time zone"),
            ("time(2)", "time"),
            ("bit varying(5)", "varbit(10)"),
            ("varbit(5)", "bit varying"),
            ("cidr", "inet"),
            ("int", "integer"),
        ] {
            assert_eq!(verdict(old, new), "no", "{old} -> {new}");
        }
    }

    #[test]
    fn narrowing_or_converting_changes_are_rewrites() {
        for (old, new) in [
            ("varchar(20)", "varchar(10)"),
            ("varchar", "varchar(10)"),
            ("text", "varchar(10)"),
            ("numeric(10,2)", "numeric(12,3)"),
            ("numeric(12,2)", "numeric(10,2)"),
            ("numeric", "numeric(12,2)"),
            ("timestamp(6)", "timestamp(3)"),
            ("timestamp", "timestamp(3)"),
            ("int", "bigint"),
            ("smallint", "int"),
            ("text", "jsonb"),
            ("char(5)", "char(10)"),
            ("char(5)", "text"),
            ("varchar(5)", "char(5)"),
            ("bit varying(10)", "varbit(5)"),
        ] {
            assert_eq!(verdict(old, new), "yes", "{old} -> {new}");
        }
    }

    #[test]
    fn what_cannot_be_known_depends() {
        for (old, new) in [
            ("text", "citext"),
            ("email_address", "text"),
            ("timestamp", "timestamptz"),
            ("int[]", "bigint[]"),
            ("interval", "interval day"),
        ] {
            assert_eq!(verdict(old, new), "depends", "{old} -> {new}");
        }
        assert!(matches!(
            judge(&ty("timestamp"), &ty("timestamptz"), Some(11)),
            Rewrite::Yes(_)
        ));
    }
}
