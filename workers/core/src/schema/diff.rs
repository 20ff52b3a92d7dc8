//! The structural diff of two snapshots: which objects were added, dropped or changed, and
//! for a changed one which attributes, old and new.
//!
//! Objects are matched by kind and the parts of their name, compared one by one (schema and
//! name; columns, constraints and triggers by schema, table and name; functions by schema,
//! name and argument types), never by a joined string that two objects could share. Nothing in the catalogs tells a rename from a drop and
//! an add, so a renamed object shows as both. A table (or view) added or dropped is one
//! change: its columns, constraints, indexes and triggers go with it unlisted. Columns are
//! matched by name, so a change of column order alone is not reported.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::snapshot::{
    CatalogObject, FunctionKind, Grant, IdentitySequence, Snapshot, Table, View,
};

/// The kinds of object, in the order a diff lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Schema,
    Extension,
    Enum,
    Domain,
    CompositeType,
    Sequence,
    Table,
    Column,
    Constraint,
    Index,
    Trigger,
    Statistics,
    Policy,
    View,
    MaterializedView,
    Function,
    Procedure,
    Aggregate,
    Collation,
    Conversion,
    Language,
    TextSearchParser,
    TextSearchTemplate,
    TextSearchDictionary,
    TextSearchConfiguration,
    ForeignDataWrapper,
    Server,
    ForeignTable,
    Operator,
    OperatorClass,
    OperatorFamily,
    Cast,
    EventTrigger,
    AccessMethod,
    Publication,
    Transform,
    Rule,
    DefaultPrivileges,
    /// A catalog object of a kind not named above (one a later PostgreSQL adds).
    Other,
}

impl ObjectKind {
    /// As the human output names it: `materialized view`.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Schema => "schema",
            ObjectKind::Extension => "extension",
            ObjectKind::Enum => "enum",
            ObjectKind::Domain => "domain",
            ObjectKind::CompositeType => "composite type",
            ObjectKind::Sequence => "sequence",
            ObjectKind::Table => "table",
            ObjectKind::Column => "column",
            ObjectKind::Constraint => "constraint",
            ObjectKind::Index => "index",
            ObjectKind::Trigger => "trigger",
            ObjectKind::Statistics => "statistics",
            ObjectKind::Policy => "policy",
            ObjectKind::View => "view",
            ObjectKind::MaterializedView => "materialized view",
            ObjectKind::Function => "function",
            ObjectKind::Procedure => "procedure",
            ObjectKind::Aggregate => "aggregate",
            ObjectKind::Collation => "collation",
            ObjectKind::Conversion => "conversion",
            ObjectKind::Language => "language",
            ObjectKind::TextSearchParser => "text search parser",
            ObjectKind::TextSearchTemplate => "text search template",
            ObjectKind::TextSearchDictionary => "text search dictionary",
            ObjectKind::TextSearchConfiguration => "text search configuration",
            ObjectKind::ForeignDataWrapper => "foreign-data wrapper",
            ObjectKind::Server => "server",
            ObjectKind::ForeignTable => "foreign table",
            ObjectKind::Operator => "operator",
            ObjectKind::OperatorClass => "operator class",
            ObjectKind::OperatorFamily => "operator family",
            ObjectKind::Cast => "cast",
            ObjectKind::EventTrigger => "event trigger",
            ObjectKind::AccessMethod => "access method",
            ObjectKind::Publication => "publication",
            ObjectKind::Transform => "transform",
            ObjectKind::Rule => "rule",
            ObjectKind::DefaultPrivileges => "default privileges",
            ObjectKind::Other => "object",
        }
    }
}

impl ObjectKind {
    /// The kind of a [`CatalogObject`], from what `pg_identify_object` calls it.
    pub fn of_catalog_object(kind: &str) -> ObjectKind {
        match kind {
            "default acl" => ObjectKind::DefaultPrivileges,
            "collation" => ObjectKind::Collation,
            "conversion" => ObjectKind::Conversion,
            "language" => ObjectKind::Language,
            "text search parser" => ObjectKind::TextSearchParser,
            "text search template" => ObjectKind::TextSearchTemplate,
            "text search dictionary" => ObjectKind::TextSearchDictionary,
            "text search configuration" => ObjectKind::TextSearchConfiguration,
            "foreign-data wrapper" => ObjectKind::ForeignDataWrapper,
            "server" => ObjectKind::Server,
            "foreign table" => ObjectKind::ForeignTable,
            "operator" => ObjectKind::Operator,
            "operator class" => ObjectKind::OperatorClass,
            "operator family" => ObjectKind::OperatorFamily,
            "cast" => ObjectKind::Cast,
            "event trigger" => ObjectKind::EventTrigger,
            "access method" => ObjectKind::AccessMethod,
            "publication" => ObjectKind::Publication,
            "transform" => ObjectKind::Transform,
            "rule" => ObjectKind::Rule,
            _ => ObjectKind::Other,
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeType {
    Added,
    Dropped,
    Changed,
}

impl ChangeType {
    /// `+`, `-` or `~`.
    pub fn sign(self) -> char {
        match self {
            ChangeType::Added => '+',
            ChangeType::Dropped => '-',
            ChangeType::Changed => '~',
        }
    }
}

/// One attribute of a changed object; `None` is "not set" (no default, no comment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeChange {
    pub attribute: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// One object added, dropped or changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub kind: ObjectKind,
    /// Qualified, identifiers quoted where `quote_ident` would: `public.users`,
    /// `public.users.email` (a column), `public.users_email_idx` (an index: its name is
    /// unique in its schema), `public.add(integer, integer)`, `app."b.c"`.
    pub name: String,
    /// The table (or view) of a column, constraint, index or trigger: `public.users`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    pub change: ChangeType,
    /// What changed, for [`ChangeType::Changed`]; empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeChange>,
}

/// Everything that differs between two snapshots, ordered by kind, then name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaDiff {
    pub changes: Vec<Change>,
}

impl SchemaDiff {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn changes(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter()
    }

    /// How many objects were added, dropped and changed.
    pub fn counts(&self) -> (usize, usize, usize) {
        let count = |t| self.changes.iter().filter(|c| c.change == t).count();
        (
            count(ChangeType::Added),
            count(ChangeType::Dropped),
            count(ChangeType::Changed),
        )
    }

    /// The human text: one line per added or dropped object, one per changed attribute:
    /// `+ table public.users`, `~ column public.users.email: type text → character varying(320)`,
    /// `- index public.users_email_idx`. Empty when nothing differs.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for c in &self.changes {
            if c.attributes.is_empty() {
                out.push_str(&format!("{} {} {}\n", c.change.sign(), c.kind, c.name));
            }
            for a in &c.attributes {
                out.push_str(&format!(
                    "{} {} {}: {}\n",
                    c.change.sign(),
                    c.kind,
                    c.name,
                    a.render()
                ));
            }
        }
        out
    }
}

impl fmt::Display for SchemaDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render_text())
    }
}

/// Values longer than this, or of several lines (a view's definition), are not repeated in
/// the human text; the JSON has them whole.
const LONG_VALUE: usize = 100;

impl AttributeChange {
    /// `type text → character varying(320)`; `definition changed` for long values; hashes
    /// shortened to 12 digits.
    pub fn render(&self) -> String {
        let long = |v: &Option<String>| {
            v.as_ref()
                .is_some_and(|v| v.len() > LONG_VALUE || v.contains('\n'))
        };
        if long(&self.old) || long(&self.new) {
            return format!("{} changed", self.attribute);
        }
        let hash = self.attribute.ends_with("_hash");
        let show = |v: &Option<String>| match v {
            None => "(none)".to_owned(),
            Some(v) if hash => v.chars().take(12).collect(),
            Some(v) if v.is_empty() => "''".to_owned(),
            Some(v) => v.clone(),
        };
        format!(
            "{} {} → {}",
            self.attribute,
            show(&self.old),
            show(&self.new)
        )
    }
}

/// An attribute's value: a text, or a list compared item by item (an enum's labels, a
/// composite type's attributes), never one joined string that two lists could share.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Text(String),
    /// Items rendered unambiguously (labels as SQL literals, names as identifiers).
    List(Vec<String>),
}

impl Value {
    fn render(&self) -> String {
        match self {
            Value::Text(t) => t.clone(),
            Value::List(items) => items.join(", "),
        }
    }
}

/// An object's identity: its kind and its name's components (schema, table, name; a
/// function's argument types), compared component by component.
type Key = (ObjectKind, Vec<String>);

/// One object of a snapshot, flattened for matching.
struct Entry {
    /// The qualified name as shown, identifiers quoted where needed.
    display: String,
    parent: Option<(Key, String)>,
    attributes: Vec<(&'static str, Option<Value>)>,
}

type Flat = BTreeMap<Key, Entry>;

/// `name` as PostgreSQL's `quote_ident` would write it: bare when it is lower case
/// (`[a-z_][a-z0-9_$]*`) and not a reserved word, in double quotes (doubled inside) otherwise.
pub fn quote_ident(name: &str) -> String {
    let mut chars = name.chars();
    let plain = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
        && !KEYWORDS.contains(&name);
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// A text as an SQL string literal: `'it''s'`.
fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The reserved (and column-name / type-function-name) key words that `quote_ident` quotes.
const KEYWORDS: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "between",
    "bigint",
    "binary",
    "bit",
    "boolean",
    "both",
    "case",
    "cast",
    "char",
    "character",
    "check",
    "coalesce",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "dec",
    "decimal",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "exists",
    "extract",
    "false",
    "fetch",
    "float",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "greatest",
    "group",
    "grouping",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "inout",
    "int",
    "integer",
    "intersect",
    "interval",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "least",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "national",
    "natural",
    "nchar",
    "none",
    "normalize",
    "not",
    "notnull",
    "null",
    "nullif",
    "numeric",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "out",
    "outer",
    "overlaps",
    "overlay",
    "placing",
    "position",
    "precision",
    "primary",
    "real",
    "references",
    "returning",
    "right",
    "row",
    "select",
    "session_user",
    "setof",
    "similar",
    "smallint",
    "some",
    "substring",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "time",
    "timestamp",
    "to",
    "trailing",
    "treat",
    "trim",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "values",
    "varchar",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
];

/// Components quoted and joined by dots: `app."b.c"`.
fn qualified(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| quote_ident(p))
        .collect::<Vec<_>>()
        .join(".")
}

/// What differs from `from` to `to`.
pub fn diff(from: &Snapshot, to: &Snapshot) -> SchemaDiff {
    let old = flatten(from);
    let new = flatten(to);
    let mut changes = Vec::new();
    // Merge the two ordered maps: the result is in (kind, components) order.
    let mut keys: Vec<&Key> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let parent_name = |e: &Entry| e.parent.as_ref().map(|(_, n)| n.clone());
        match (old.get(key), new.get(key)) {
            (Some(o), Some(n)) => {
                let attributes = changed_attributes(&o.attributes, &n.attributes);
                if !attributes.is_empty() {
                    changes.push(Change {
                        kind: key.0,
                        name: n.display.clone(),
                        parent: parent_name(n),
                        change: ChangeType::Changed,
                        attributes,
                    });
                }
            }
            (None, Some(n)) => {
                // A new table's columns come with it.
                if n.parent.as_ref().is_none_or(|(p, _)| old.contains_key(p)) {
                    changes.push(Change {
                        kind: key.0,
                        name: n.display.clone(),
                        parent: parent_name(n),
                        change: ChangeType::Added,
                        attributes: Vec::new(),
                    });
                }
            }
            (Some(o), None) => {
                if o.parent.as_ref().is_none_or(|(p, _)| new.contains_key(p)) {
                    changes.push(Change {
                        kind: key.0,
                        name: o.display.clone(),
                        parent: parent_name(o),
                        change: ChangeType::Dropped,
                        attributes: Vec::new(),
                    });
                }
            }
            (None, None) => {}
        }
    }
    SchemaDiff { changes }
}

fn changed_attributes(
    old: &[(&'static str, Option<Value>)],
    new: &[(&'static str, Option<Value>)],
) -> Vec<AttributeChange> {
    // Both lists come from the same code for the same kind: same names, same order.
    old.iter()
        .zip(new)
        .filter(|((_, o), (_, n))| o != n)
        .map(|((name, o), (_, n))| AttributeChange {
            attribute: (*name).to_owned(),
            old: o.as_ref().map(Value::render),
            new: n.as_ref().map(Value::render),
        })
        .collect()
}

fn some(s: &str) -> Option<Value> {
    Some(Value::Text(s.to_owned()))
}

fn text(s: &Option<String>) -> Option<Value> {
    s.clone().map(Value::Text)
}

fn flag(b: bool) -> Option<Value> {
    Some(Value::Text(b.to_string()))
}

fn list(items: Vec<String>) -> Option<Value> {
    (!items.is_empty()).then_some(Value::List(items))
}

fn grants(g: &[Grant]) -> Option<Value> {
    list(
        g.iter()
            .map(|g| {
                let grantee = if g.grantee == "PUBLIC" {
                    g.grantee.clone()
                } else {
                    quote_ident(&g.grantee)
                };
                format!(
                    "{grantee} {}{}",
                    g.privilege,
                    if g.grantable {
                        " WITH GRANT OPTION"
                    } else {
                        ""
                    }
                )
            })
            .collect(),
    )
}

type Attributes = Vec<(&'static str, Option<Value>)>;

type Put<'a> = dyn FnMut(ObjectKind, Vec<String>, String, Option<(Key, String)>, Attributes) + 'a;

fn flatten(s: &Snapshot) -> Flat {
    let mut flat = Flat::new();
    let mut put = |kind: ObjectKind,
                   key: Vec<String>,
                   display: String,
                   parent: Option<(Key, String)>,
                   attributes: Attributes| {
        flat.insert(
            (kind, key),
            Entry {
                display,
                parent,
                attributes,
            },
        );
    };
    let two = |a: &str, b: &str| (vec![a.to_owned(), b.to_owned()], qualified(&[a, b]));
    for x in &s.schemas {
        put(
            ObjectKind::Schema,
            vec![x.name.clone()],
            quote_ident(&x.name),
            None,
            vec![("comment", text(&x.comment)), ("grants", grants(&x.grants))],
        );
    }
    for x in &s.extensions {
        put(
            ObjectKind::Extension,
            vec![x.name.clone()],
            quote_ident(&x.name),
            None,
            vec![("version", some(&x.version)), ("schema", some(&x.schema))],
        );
    }
    for x in &s.enums {
        let (key, display) = two(&x.schema, &x.name);
        put(
            ObjectKind::Enum,
            key,
            display,
            None,
            vec![
                (
                    "labels",
                    list(x.labels.iter().map(|l| quote_literal(l)).collect()),
                ),
                ("comment", text(&x.comment)),
                ("grants", grants(&x.grants)),
            ],
        );
    }
    for x in &s.domains {
        let constraints: Vec<String> = x
            .constraints
            .iter()
            .map(|c| {
                format!(
                    "{} {}{}{}",
                    quote_ident(&c.name),
                    c.definition,
                    if c.validated { "" } else { " (not validated)" },
                    c.comment
                        .as_deref()
                        .map(|t| format!(" (comment {})", quote_literal(t)))
                        .unwrap_or_default()
                )
            })
            .collect();
        let (key, display) = two(&x.schema, &x.name);
        put(
            ObjectKind::Domain,
            key,
            display,
            None,
            vec![
                ("type", some(&x.type_)),
                ("not_null", flag(x.not_null)),
                ("default", text(&x.default)),
                ("collation", text(&x.collation)),
                ("constraints", list(constraints)),
                ("comment", text(&x.comment)),
                ("grants", grants(&x.grants)),
            ],
        );
    }
    for x in &s.composite_types {
        let attributes: Vec<String> = x
            .attributes
            .iter()
            .map(|a| typed_name(&a.name, &a.type_, &a.collation))
            .collect();
        let (key, display) = two(&x.schema, &x.name);
        put(
            ObjectKind::CompositeType,
            key,
            display,
            None,
            vec![
                ("attributes", list(attributes)),
                ("comment", text(&x.comment)),
                ("grants", grants(&x.grants)),
            ],
        );
    }
    for x in &s.sequences {
        let (key, display) = two(&x.schema, &x.name);
        put(
            ObjectKind::Sequence,
            key,
            display,
            None,
            vec![
                ("type", some(&x.type_)),
                ("start", some(&x.start.to_string())),
                ("increment", some(&x.increment.to_string())),
                ("min", some(&x.min.to_string())),
                ("max", some(&x.max.to_string())),
                ("cache", some(&x.cache.to_string())),
                ("cycle", flag(x.cycle)),
                ("persistence", some(x.persistence.as_str())),
                ("owned_by", text(&x.owned_by)),
                ("comment", text(&x.comment)),
                ("grants", grants(&x.grants)),
            ],
        );
    }
    for t in &s.tables {
        flatten_table(t, &mut put);
    }
    for v in &s.views {
        flatten_view(v, &mut put);
    }
    for f in &s.functions {
        let kind = match f.kind {
            FunctionKind::Procedure => ObjectKind::Procedure,
            FunctionKind::Aggregate => ObjectKind::Aggregate,
            FunctionKind::Function | FunctionKind::Window => ObjectKind::Function,
        };
        put(
            kind,
            vec![f.schema.clone(), f.name.clone(), f.argument_types.clone()],
            format!("{}({})", qualified(&[&f.schema, &f.name]), f.argument_types),
            None,
            vec![
                ("kind", some(f.kind.as_str())),
                ("arguments", some(&f.arguments)),
                ("result", text(&f.result)),
                ("language", some(&f.language)),
                ("volatility", some(f.volatility.as_str())),
                ("security_definer", flag(f.security_definer)),
                (
                    "depends_on_extensions",
                    list(f.depends_on_extensions.clone()),
                ),
                ("definition_hash", some(&f.definition_hash)),
                ("comment", text(&f.comment)),
                ("grants", grants(&f.grants)),
            ],
        );
    }
    for o in &s.objects {
        flatten_object(o, &mut put);
    }
    flat
}

/// `name type [COLLATE c]`: a composite type's attribute, a view's column.
fn typed_name(name: &str, type_: &str, collation: &Option<String>) -> String {
    match collation {
        Some(c) => format!("{} {type_} COLLATE {c}", quote_ident(name)),
        None => format!("{} {type_}", quote_ident(name)),
    }
}

/// An identity column's sequence options, one attribute each (`identity_max 100 → 200`);
/// all unset for any other column.
fn identity_attributes(s: Option<&IdentitySequence>) -> Attributes {
    let num = |f: fn(&IdentitySequence) -> i64| s.map(|s| Value::Text(f(s).to_string()));
    vec![
        ("identity_sequence", s.map(|s| Value::Text(s.name.clone()))),
        ("identity_type", s.map(|s| Value::Text(s.type_.clone()))),
        ("identity_start", num(|s| s.start)),
        ("identity_increment", num(|s| s.increment)),
        ("identity_min", num(|s| s.min)),
        ("identity_max", num(|s| s.max)),
        ("identity_cache", num(|s| s.cache)),
        (
            "identity_cycle",
            s.map(|s| Value::Text(s.cycle.to_string())),
        ),
        (
            "identity_persistence",
            s.map(|s| Value::Text(s.persistence.as_str().into())),
        ),
    ]
}

/// The key and display name of a table's (or view's) child, and of an index (named within
/// its schema).
fn child(schema: &str, table: &str, name: &str) -> (Vec<String>, String) {
    (
        vec![schema.to_owned(), table.to_owned(), name.to_owned()],
        qualified(&[schema, table, name]),
    )
}

fn index_key(schema: &str, name: &str) -> (Vec<String>, String) {
    (
        vec![schema.to_owned(), name.to_owned()],
        qualified(&[schema, name]),
    )
}

/// A catalog object: matched by kind and identity, compared by its whole definition.
fn flatten_object(o: &CatalogObject, put: &mut Put<'_>) {
    let kind = ObjectKind::of_catalog_object(&o.kind);
    let (key, display) = if kind == ObjectKind::Other {
        (
            vec![o.kind.clone(), o.identity.clone()],
            format!("{} {}", o.kind, o.identity),
        )
    } else {
        (vec![o.identity.clone()], o.identity.clone())
    };
    put(
        kind,
        key,
        display,
        None,
        vec![
            ("definition", some(&o.definition)),
            ("comment", text(&o.comment)),
        ],
    );
}

fn flatten_table(t: &Table, put: &mut Put<'_>) {
    let key = vec![t.schema.clone(), t.name.clone()];
    let name = qualified(&[&t.schema, &t.name]);
    let parent = Some(((ObjectKind::Table, key.clone()), name.clone()));
    put(
        ObjectKind::Table,
        key,
        name.clone(),
        None,
        vec![
            ("kind", some(t.kind.as_str())),
            ("persistence", some(t.persistence.as_str())),
            ("partition_key", text(&t.partition_key)),
            ("partition_of", text(&t.partition_of)),
            ("partition_bound", text(&t.partition_bound)),
            ("inherits", list(t.inherits.clone())),
            ("of_type", text(&t.of_type)),
            ("row_security", flag(t.row_security)),
            ("force_row_security", flag(t.force_row_security)),
            ("options", list(t.options.clone())),
            ("access_method", text(&t.access_method)),
            ("replica_identity", text(&t.replica_identity)),
            ("clustered_on", text(&t.clustered_on)),
            ("toast_options", list(t.toast_options.clone())),
            ("comment", text(&t.comment)),
            ("grants", grants(&t.grants)),
        ],
    );
    for c in &t.columns {
        let (key, display) = child(&t.schema, &t.name, &c.name);
        let mut attributes = vec![
            ("type", some(&c.type_)),
            ("not_null", flag(c.not_null)),
            ("default", text(&c.default)),
            (
                "identity",
                c.identity.map(|i| Value::Text(i.as_str().into())),
            ),
        ];
        attributes.extend(identity_attributes(c.identity_sequence.as_ref()));
        attributes.extend([
            ("generated", text(&c.generated)),
            ("collation", text(&c.collation)),
            (
                "statistics",
                c.statistics.map(|n| Value::Text(n.to_string())),
            ),
            ("storage", text(&c.storage)),
            ("compression", text(&c.compression)),
            ("options", list(c.options.clone())),
            ("inherited_only", flag(c.inherited_only)),
            ("comment", text(&c.comment)),
            ("grants", grants(&c.grants)),
        ]);
        put(ObjectKind::Column, key, display, parent.clone(), attributes);
    }
    for c in &t.constraints {
        let (key, display) = child(&t.schema, &t.name, &c.name);
        put(
            ObjectKind::Constraint,
            key,
            display,
            parent.clone(),
            vec![
                ("kind", some(c.kind.as_str())),
                ("definition", some(&c.definition)),
                ("validated", flag(c.validated)),
                ("inherited_only", flag(c.inherited_only)),
                ("triggers", text(&c.triggers)),
                ("comment", text(&c.comment)),
            ],
        );
    }
    for p in &t.policies {
        let (key, display) = child(&t.schema, &t.name, &p.name);
        put(
            ObjectKind::Policy,
            key,
            display,
            parent.clone(),
            vec![
                ("command", some(&p.command)),
                ("permissive", flag(p.permissive)),
                (
                    "roles",
                    list(
                        p.roles
                            .iter()
                            .map(|r| {
                                if r == "PUBLIC" {
                                    r.clone()
                                } else {
                                    quote_ident(r)
                                }
                            })
                            .collect(),
                    ),
                ),
                ("using", text(&p.using)),
                ("with_check", text(&p.with_check)),
                ("comment", text(&p.comment)),
            ],
        );
    }
    flatten_children(t.schema.as_str(), &t.name, children(t), &parent, put);
}

/// The indexes, triggers and statistics objects of a table or a (materialized) view.
struct Children<'a> {
    indexes: &'a [super::snapshot::Index],
    triggers: &'a [super::snapshot::Trigger],
    statistics: &'a [super::snapshot::Statistics],
}

fn children(t: &Table) -> Children<'_> {
    Children {
        indexes: &t.indexes,
        triggers: &t.triggers,
        statistics: &t.statistics,
    }
}

fn view_children(v: &View) -> Children<'_> {
    Children {
        indexes: &v.indexes,
        triggers: &v.triggers,
        statistics: &v.statistics,
    }
}

/// The indexes, triggers and statistics objects of a table or a (materialized) view, under
/// it.
fn flatten_children(
    schema: &str,
    name: &str,
    Children {
        indexes,
        triggers,
        statistics,
    }: Children<'_>,
    parent: &Option<(Key, String)>,
    put: &mut Put<'_>,
) {
    // A statistics object's name is unique in its own schema (which may be another than
    // the table's).
    for x in statistics {
        let (key, display) = index_key(&x.schema, &x.name);
        put(
            ObjectKind::Statistics,
            key,
            display,
            parent.clone(),
            vec![
                ("definition", some(&x.definition)),
                ("target", x.target.map(|n| Value::Text(n.to_string()))),
                ("comment", text(&x.comment)),
            ],
        );
    }
    for i in indexes {
        let (key, display) = index_key(schema, &i.name);
        put(
            ObjectKind::Index,
            key,
            display,
            parent.clone(),
            index_attributes(i),
        );
    }
    for tr in triggers {
        let (key, display) = child(schema, name, &tr.name);
        put(
            ObjectKind::Trigger,
            key,
            display,
            parent.clone(),
            trigger_attributes(tr),
        );
    }
}

fn index_attributes(i: &super::snapshot::Index) -> Attributes {
    // Unique and primary are part of the definition (and of the constraint, if any).
    vec![
        ("definition", some(&i.definition)),
        ("valid", flag(i.valid)),
        ("attached_to", text(&i.attached_to)),
        ("comment", text(&i.comment)),
    ]
}

fn trigger_attributes(t: &super::snapshot::Trigger) -> Attributes {
    vec![
        ("definition", some(&t.definition)),
        ("enabled", some(t.enabled.as_str())),
        ("comment", text(&t.comment)),
    ]
}

fn flatten_view(v: &View, put: &mut Put<'_>) {
    let kind = if v.materialized {
        ObjectKind::MaterializedView
    } else {
        ObjectKind::View
    };
    let key = vec![v.schema.clone(), v.name.clone()];
    let name = qualified(&[&v.schema, &v.name]);
    let parent = Some(((kind, key.clone()), name.clone()));
    put(
        kind,
        key,
        name.clone(),
        None,
        vec![
            ("definition", some(&v.definition)),
            ("not_populated", flag(v.not_populated)),
            (
                "columns",
                list(
                    v.columns
                        .iter()
                        .map(|c| typed_name(&c.name, &c.type_, &c.collation))
                        .collect(),
                ),
            ),
            (
                "column_settings",
                list(
                    v.columns
                        .iter()
                        .filter_map(|c| {
                            let mut parts = Vec::new();
                            if let Some(n) = c.statistics {
                                parts.push(format!("statistics={n}"));
                            }
                            if let Some(s) = &c.storage {
                                parts.push(format!("storage={s}"));
                            }
                            if let Some(s) = &c.compression {
                                parts.push(format!("compression={s}"));
                            }
                            parts.extend(c.options.iter().cloned());
                            (!parts.is_empty())
                                .then(|| format!("{}: {}", quote_ident(&c.name), parts.join(" ")))
                        })
                        .collect(),
                ),
            ),
            ("clustered_on", text(&v.clustered_on)),
            ("toast_options", list(v.toast_options.clone())),
            ("options", list(v.options.clone())),
            ("comment", text(&v.comment)),
            ("grants", grants(&v.grants)),
            (
                "column_grants",
                list(
                    v.columns
                        .iter()
                        .flat_map(|c| {
                            let column = quote_ident(&c.name);
                            match grants(&c.grants) {
                                Some(Value::List(items)) => items,
                                _ => Vec::new(),
                            }
                            .into_iter()
                            .map(move |g| format!("{column}: {g}"))
                        })
                        .collect(),
                ),
            ),
        ],
    );
    flatten_children(&v.schema, &v.name, view_children(v), &parent, put);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::snapshot::*;

    fn column(name: &str, type_: &str) -> Column {
        Column {
            inherited_only: false,
            name: name.into(),
            type_: type_.into(),
            not_null: false,
            default: None,
            identity: None,
            identity_sequence: None,
            generated: None,
            collation: None,
            statistics: None,
            storage: None,
            compression: None,
            options: vec![],
            comment: None,
            grants: vec![],
        }
    }

    fn table(name: &str, columns: Vec<Column>) -> Table {
        Table {
            schema: "public".into(),
            name: name.into(),
            kind: TableKind::Table,
            persistence: Persistence::Permanent,
            partition_key: None,
            partition_of: None,
            partition_bound: None,
            inherits: vec![],
            row_security: false,
            force_row_security: false,
            of_type: None,
            options: vec![],
            access_method: None,
            replica_identity: None,
            clustered_on: None,
            toast_options: vec![],
            columns,
            constraints: vec![],
            indexes: vec![],
            triggers: vec![],
            statistics: vec![],
            policies: vec![],
            comment: None,
            grants: vec![],
        }
    }

    fn index(name: &str, definition: &str) -> Index {
        Index {
            attached_to: None,
            name: name.into(),
            definition: definition.into(),
            unique: false,
            primary: false,
            valid: true,
            comment: None,
        }
    }

    fn base() -> Snapshot {
        let mut users = table(
            "users",
            vec![column("id", "bigint"), column("email", "text")],
        );
        users.indexes.push(index(
            "users_email_idx",
            "CREATE INDEX users_email_idx ON public.users USING btree (email)",
        ));
        users.constraints.push(Constraint {
            inherited_only: false,
            triggers: None,
            name: "users_email_check".into(),
            kind: ConstraintKind::Check,
            definition: "CHECK ((email <> ''::text))".into(),
            validated: false,
            references: None,
            on_update: None,
            on_delete: None,
            comment: None,
        });
        Snapshot {
            schemas: vec![Schema {
                name: "public".into(),
                comment: None,
                grants: vec![],
            }],
            enums: vec![Enum {
                schema: "public".into(),
                name: "mood".into(),
                labels: vec!["sad".into(), "happy".into()],
                comment: None,
                grants: vec![],
            }],
            tables: vec![
                users,
                table("audit", vec![column("at", "timestamp with time zone")]),
            ],
            functions: vec![Function {
                depends_on_extensions: Vec::new(),
                schema: "public".into(),
                name: "add".into(),
                kind: FunctionKind::Function,
                argument_types: "integer, integer".into(),
                arguments: "a integer, b integer".into(),
                result: Some("integer".into()),
                language: "sql".into(),
                volatility: Volatility::Immutable,
                security_definer: false,
                definition_hash: "a".repeat(64),
                comment: None,
                grants: vec![],
            }],
            ..Snapshot::default()
        }
    }

    #[test]
    fn equal_snapshots_have_an_empty_diff() {
        let d = diff(&base(), &base());
        assert!(d.is_empty());
        assert_eq!(d.render_text(), "");
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!({"changes": []})
        );
    }

    #[test]
    fn added_dropped_and_changed_in_kind_then_name_order() {
        let old = base();
        let mut new = base();
        let users = &mut new.tables[0];
        users.columns[1].type_ = "character varying(320)".into();
        users.columns[1].not_null = true;
        users.columns.push(column("name", "text"));
        users.indexes.clear();
        users.constraints[0].validated = true;
        new.tables.remove(1); // audit
        new.tables
            .push(table("orders", vec![column("id", "bigint")]));
        new.enums[0].labels.push("ok".into());
        new.functions[0].definition_hash = "b".repeat(64);
        let d = diff(&old, &new);
        assert_eq!(
            d.render_text(),
            "\
~ enum public.mood: labels 'sad', 'happy' → 'sad', 'happy', 'ok'
- table public.audit
+ table public.orders
~ column public.users.email: type text → character varying(320)
~ column public.users.email: not_null false → true
+ column public.users.name
~ constraint public.users.users_email_check: validated false → true
- index public.users_email_idx
~ function public.add(integer, integer): definition_hash aaaaaaaaaaaa → bbbbbbbbbbbb
"
        );
        assert_eq!(d.counts(), (2, 2, 4));
        // The columns of a table added or dropped go with it, unlisted.
        assert!(!d.changes().any(|c| c.name.starts_with("public.orders.")));
        assert!(!d.changes().any(|c| c.name.starts_with("public.audit.")));
        let index = d.changes().find(|c| c.kind == ObjectKind::Index).unwrap();
        assert_eq!(index.parent.as_deref(), Some("public.users"));
        assert_eq!(index.change, ChangeType::Dropped);
    }

    #[test]
    fn a_rename_is_a_drop_and_an_add() {
        let old = base();
        let mut new = base();
        new.tables[0].columns[1].name = "mail".into();
        let d = diff(&old, &new);
        assert_eq!(
            d.render_text(),
            "- column public.users.email\n+ column public.users.mail\n"
        );
    }

    #[test]
    fn json_names_kind_change_and_attributes() {
        let old = base();
        let mut new = base();
        new.tables[0].columns[0].default = Some("nextval('users_id_seq'::regclass)".into());
        let d = diff(&old, &new);
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!({"changes": [{
                "kind": "column",
                "name": "public.users.id",
                "parent": "public.users",
                "change": "changed",
                "attributes": [{"attribute": "default", "old": null, "new": "nextval('users_id_seq'::regclass)"}],
            }]})
        );
        assert_eq!(
            d.render_text(),
            "~ column public.users.id: default (none) → nextval('users_id_seq'::regclass)\n"
        );
    }

    #[test]
    fn long_definitions_are_named_not_repeated() {
        let view = |definition: &str| View {
            schema: "public".into(),
            name: "active_users".into(),
            materialized: false,
            not_populated: false,
            clustered_on: None,
            toast_options: Vec::new(),
            definition_hash: String::new(),
            definition: definition.into(),
            columns: vec![],
            options: vec![],
            indexes: vec![],
            triggers: vec![],
            statistics: vec![],
            comment: None,
            grants: vec![],
        };
        let mut old = base();
        old.views.push(view(" SELECT users.id\n   FROM users;"));
        let mut new = base();
        new.views
            .push(view(" SELECT users.id,\n    users.email\n   FROM users;"));
        let d = diff(&old, &new);
        assert_eq!(
            d.render_text(),
            "~ view public.active_users: definition changed\n"
        );
        assert_eq!(
            d.changes[0].attributes[0].new.as_deref(),
            Some(" SELECT users.id,\n    users.email\n   FROM users;")
        );
    }

    #[test]
    fn a_view_that_becomes_materialized_is_dropped_and_added() {
        let v = View {
            schema: "public".into(),
            name: "totals".into(),
            materialized: false,
            not_populated: false,
            clustered_on: None,
            toast_options: Vec::new(),
            definition_hash: String::new(),
            definition: "SELECT 1".into(),
            columns: vec![],
            options: vec![],
            indexes: vec![],
            triggers: vec![],
            statistics: vec![],
            comment: None,
            grants: vec![],
        };
        let mut old = base();
        old.views.push(v.clone());
        let mut new = base();
        new.views.push(View {
            materialized: true,
            indexes: vec![index(
                "totals_idx",
                "CREATE INDEX totals_idx ON public.totals",
            )],
            ..v
        });
        assert_eq!(
            diff(&old, &new).render_text(),
            "- view public.totals\n+ materialized view public.totals\n"
        );
    }

    #[test]
    fn lists_are_compared_item_by_item_and_shown_quoted() {
        // ENUM ('a','b') against ENUM ($$a', 'b$$); (x integer, y text) against
        // ("x integer, y" text): joined into one string, each pair was the same.
        let mut old = base();
        old.enums[0].labels = vec!["a".into(), "b".into()];
        let attribute = |name: &str, type_: &str| CompositeAttribute {
            name: name.into(),
            type_: type_.into(),
            collation: None,
        };
        let composite = |attributes| CompositeType {
            schema: "public".into(),
            name: "ct".into(),
            attributes,
            comment: None,
            grants: vec![],
        };
        old.composite_types.push(composite(vec![
            attribute("x", "integer"),
            attribute("y", "text"),
        ]));
        let mut new = base();
        new.enums[0].labels = vec!["a', 'b".into()];
        new.composite_types
            .push(composite(vec![attribute("x integer, y", "text")]));
        let d = diff(&old, &new);
        assert_eq!(
            d.render_text(),
            "\
~ enum public.mood: labels 'a', 'b' → 'a'', ''b'
~ composite type public.ct: attributes x integer, y text → \"x integer, y\" text
"
        );
    }

    #[test]
    fn objects_are_matched_by_their_name_parts_and_shown_quoted() {
        // a."b.c" and "a.b".c were both `a.b.c`: one table with a changed column.
        let mut old = base();
        let mut t = table("b.c", vec![column("x", "integer")]);
        t.schema = "a".into();
        old.tables.push(t);
        let mut new = base();
        let mut t = table("c", vec![column("x", "bigint")]);
        t.schema = "a.b".into();
        new.tables.push(t);
        assert_eq!(
            diff(&old, &new).render_text(),
            "- table a.\"b.c\"\n+ table \"a.b\".c\n"
        );
    }

    #[test]
    fn quote_ident_follows_postgres() {
        assert_eq!(quote_ident("users"), "users");
        assert_eq!(quote_ident("_a$1"), "_a$1");
        assert_eq!(quote_ident("Users"), "\"Users\"");
        assert_eq!(quote_ident("a.b"), "\"a.b\"");
        assert_eq!(quote_ident("1a"), "\"1a\"");
        assert_eq!(quote_ident("user"), "\"user\"");
        assert_eq!(quote_ident("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(quote_ident(""), "\"\"");
    }
}
