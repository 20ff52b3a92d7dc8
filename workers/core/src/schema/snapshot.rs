//! The snapshot document: its types, its options, and reading it back from a file.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The snapshot document's format. Bump it when a field changes meaning or a kind of object
/// is added: a snapshot of another format is refused rather than diffed into noise (or, worse,
/// into silence: a file that never recorded an attribute cannot say it differs).
/// 2 added identity sequences' options, sequences' persistence, grants on types and columns,
/// views' result columns, statistics objects, column statistics targets and policies.
pub const FORMAT_VERSION: u32 = 2;

/// What each older format lacks, for the error that refuses it.
const OLDER_FORMATS: &[(u64, &str)] = &[(
    1,
    "identity sequences' options, sequences' persistence, grants on types and columns, views' result columns, statistics objects and row-level security policies",
)];

/// Every object of the ledger is named with this prefix (tables, their indexes, sequence,
/// triggers, functions, view): see `ledger.sql`.
/// The ledger's own objects, by name, as every version of its installer made them: tables,
/// view, sequence and functions. Only these are left out of a ledger schema's snapshot: a
/// user's `schema_migrations_archive` is the user's.
pub const LEDGER_OBJECTS: &[&str] = &[
    "schema_migrations",
    "schema_migration_events",
    "schema_migration_events_id_seq",
    "schema_migrations_folded",
    "schema_migration_event_is_state",
    "schema_migration_events_append_only",
    "schema_migration_events_project",
    "schema_migrations_guard",
    "schema_migrations_in_guarded_transaction",
    "schema_migrations_record_delete",
    "schema_migrations_record_truncate",
    "schema_migrations_revert_guard",
    "schema_migrations_row",
    "schema_migrations_written_by_the_fold",
];

/// Which schemas hold the ledger, whose objects a snapshot leaves out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LedgerFilter {
    /// Every schema that holds a table named `schema_migrations` or
    /// `schema_migration_events` (ours, or the old runner's that ours adopts).
    #[default]
    Auto,
    /// This schema only (`STEPMIGRATE_LEDGER_SCHEMA`).
    Schema(String),
    /// Leave the ledger in the snapshot.
    Keep,
}

/// What a snapshot covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotOptions {
    /// Only these schemas (empty: every schema but the system's).
    pub include_schemas: Vec<String>,
    /// Never these schemas.
    pub exclude_schemas: Vec<String>,
    /// Privileges (`aclexplode`) of schemas, tables, views, sequences and functions. Off by
    /// default: roles differ between environments more often than schemas do.
    pub grants: bool,
    /// `COMMENT ON` texts.
    pub comments: bool,
    pub ledger: LedgerFilter,
}

impl Default for SnapshotOptions {
    fn default() -> Self {
        SnapshotOptions {
            include_schemas: Vec::new(),
            exclude_schemas: Vec::new(),
            grants: false,
            comments: true,
            ledger: LedgerFilter::Auto,
        }
    }
}

impl SnapshotOptions {
    /// Whether objects of `schema` belong in the snapshot (the system's schemas never do).
    pub fn wants_schema(&self, schema: &str) -> bool {
        !is_system_schema(schema)
            && (self.include_schemas.is_empty() || self.include_schemas.iter().any(|s| s == schema))
            && !self.exclude_schemas.iter().any(|s| s == schema)
    }
}

/// pg_catalog, information_schema, pg_toast and the temporary schemas.
pub fn is_system_schema(schema: &str) -> bool {
    schema == "pg_catalog"
        || schema == "information_schema"
        || schema.starts_with("pg_toast")
        || schema.starts_with("pg_temp_")
}

/// A database's schema. Every list is sorted by schema and name (byte order), columns and
/// labels keep their order in the database. A key a snapshot of this format does not have is
/// refused (here and in every part): a misspelt attribute would otherwise compare as absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub format: u32,
    /// What it was taken with; absent from files written before it was recorded (read as
    /// taken without grants).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Scope>,
    #[serde(default)]
    pub schemas: Vec<Schema>,
    #[serde(default)]
    pub extensions: Vec<Extension>,
    #[serde(default)]
    pub enums: Vec<Enum>,
    #[serde(default)]
    pub domains: Vec<Domain>,
    #[serde(default)]
    pub composite_types: Vec<CompositeType>,
    #[serde(default)]
    pub sequences: Vec<Sequence>,
    #[serde(default)]
    pub tables: Vec<Table>,
    #[serde(default)]
    pub views: Vec<View>,
    #[serde(default)]
    pub functions: Vec<Function>,
    /// The objects of the kinds above have a structure of their own; every other user object
    /// (collations, operators and their classes and families, casts, text search objects,
    /// languages, foreign-data wrappers, servers and tables, event triggers, access methods,
    /// publications, transforms, rules, default privileges) is here, by identity and
    /// definition. Absent from files written before it was captured (see
    /// [`Scope::objects`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<CatalogObject>,
}

/// A user object of a kind the snapshot has no structure for: what `pg_identify_object`
/// calls it, and its defining attributes as the catalog has them (names, never OIDs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogObject {
    /// `collation`, `operator family`, `text search dictionary`, `foreign table`, ...
    pub kind: String,
    /// Its schema, for a kind that has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Qualified, as `pg_identify_object` writes it: `public.c_de`,
    /// `public.===(integer,integer)`, `(integer AS text)`.
    pub identity: String,
    /// Its definition: one JSON text, keys sorted.
    pub definition: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The schema a `--schema` scope keeps it with when it has none of its own: a rule's
    /// table's, `ALTER DEFAULT PRIVILEGES IN SCHEMA`'s. Not written to the file.
    #[serde(default, skip_serializing)]
    pub scope: Option<String>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            format: FORMAT_VERSION,
            options: None,
            schemas: Vec::new(),
            extensions: Vec::new(),
            enums: Vec::new(),
            domains: Vec::new(),
            composite_types: Vec::new(),
            sequences: Vec::new(),
            tables: Vec::new(),
            views: Vec::new(),
            functions: Vec::new(),
            objects: Vec::new(),
        }
    }
}

/// A closed set of names, as the snapshot writes them: an unknown name in a file is an error.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named_enum!(
    /// A table's kind.
    TableKind { Table = "table", Partitioned = "partitioned" }
);
named_enum!(
    /// `permanent` or `unlogged`.
    Persistence { Permanent = "permanent", Unlogged = "unlogged" }
);

/// What a document that does not say reads as.
fn permanent() -> Persistence {
    Persistence::Permanent
}

fn is_permanent(p: &Persistence) -> bool {
    *p == Persistence::Permanent
}
named_enum!(
    /// An identity column's `GENERATED ALWAYS` or `GENERATED BY DEFAULT`.
    Identity { Always = "always", ByDefault = "by default" }
);
named_enum!(
    ConstraintKind {
        PrimaryKey = "primary_key",
        Unique = "unique",
        ForeignKey = "foreign_key",
        Check = "check",
        Exclusion = "exclusion",
        Trigger = "trigger",
    }
);
named_enum!(
    /// A foreign key's `ON UPDATE` / `ON DELETE`.
    ForeignKeyAction {
        NoAction = "no action",
        Restrict = "restrict",
        Cascade = "cascade",
        SetNull = "set null",
        SetDefault = "set default",
    }
);
named_enum!(
    /// `tgenabled`.
    TriggerEnabled {
        Enabled = "enabled",
        Disabled = "disabled",
        Replica = "replica",
        Always = "always",
    }
);
named_enum!(
    FunctionKind {
        Function = "function",
        Procedure = "procedure",
        Aggregate = "aggregate",
        Window = "window",
    }
);
named_enum!(
    Volatility { Immutable = "immutable", Stable = "stable", Volatile = "volatile" }
);

/// What a snapshot file was taken with (`options` in the document): a diff that asks for
/// more than a file holds (grants, comments) must not read the absence as a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    pub grants: bool,
    pub comments: bool,
    /// `--schema` (empty: every schema but the system's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schemas: Vec<String>,
    /// `--exclude-schema`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_schemas: Vec<String>,
    /// It holds [`Snapshot::objects`]: false in files written before they were captured,
    /// where their absence says nothing.
    #[serde(default, skip_serializing_if = "is_false")]
    pub objects: bool,
}

impl From<&SnapshotOptions> for Scope {
    fn from(o: &SnapshotOptions) -> Self {
        Scope {
            grants: o.grants,
            comments: o.comments,
            schemas: o.include_schemas.clone(),
            exclude_schemas: o.exclude_schemas.clone(),
            objects: true,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// A role name, or `PUBLIC`.
    pub grantee: String,
    /// `SELECT`, `USAGE`, `EXECUTE`, ...
    pub privilege: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub grantable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<Grant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Extension {
    pub name: String,
    pub version: String,
    pub schema: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enum {
    pub schema: String,
    pub name: String,
    /// In their sort order.
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<Grant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainConstraint {
    pub name: String,
    pub definition: String,
    #[serde(default = "yes")]
    pub validated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Domain {
    pub schema: String,
    pub name: String,
    /// The base type, as `format_type` writes it.
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub not_null: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collation: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<DomainConstraint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<Grant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompositeAttribute {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collation: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompositeType {
    pub schema: String,
    pub name: String,
    pub attributes: Vec<CompositeAttribute>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<Grant>,
}

/// A sequence's definition; never its current value (that is data, and differs between any
/// two databases that were ever used).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sequence {
    pub schema: String,
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub start: i64,
    pub increment: i64,
    pub min: i64,
    pub max: i64,
    pub cache: i64,
    #[serde(default)]
    pub cycle: bool,
    /// `UNLOGGED` (PostgreSQL 15 and later).
    #[serde(default = "permanent", skip_serializing_if = "is_permanent")]
    pub persistence: Persistence,
    /// `schema.table.column` of an `OWNED BY` (serial) sequence, each part `quote_ident`ed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<Grant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub schema: String,
    pub name: String,
    pub kind: TableKind,
    pub persistence: Persistence,
    /// `PARTITION BY` of a partitioned table (`pg_get_partkeydef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_key: Option<String>,
    /// The parent of a partition, qualified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_of: Option<String>,
    /// `FOR VALUES ...` of a partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_bound: Option<String>,
    /// Parents by plain (not partition) inheritance, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inherits: Vec<String>,
    /// The composite type of a typed table (`CREATE TABLE ... OF type`), as `regtype` names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of_type: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub row_security: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub force_row_security: bool,
    /// Storage parameters (`fillfactor=70`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// `USING` another table access method than `heap`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_method: Option<String>,
    /// `REPLICA IDENTITY` other than the default: `nothing`, `full`, `using index i`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_identity: Option<String>,
    /// The index of `CLUSTER ... USING` / `CLUSTER ON`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clustered_on: Option<String>,
    /// Its TOAST table's storage parameters (`toast.autovacuum_enabled = false` as
    /// `autovacuum_enabled=false`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub toast_options: Vec<String>,
    /// In the table's column order.
    #[serde(default)]
    pub columns: Vec<Column>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<Index>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<Trigger>,
    /// Extended statistics objects (`CREATE STATISTICS`) on the table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statistics: Vec<Statistics>,
    /// Row-level security policies (`CREATE POLICY`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<Policy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<Grant>,
}

/// The sequence behind an identity column: its options are the column's (`GENERATED ... AS
/// IDENTITY (MAXVALUE 100 CYCLE)`, `ALTER COLUMN ... SET INCREMENT BY 5`), never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySequence {
    /// Qualified, each part `quote_ident`ed (`SEQUENCE NAME`).
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub start: i64,
    pub increment: i64,
    pub min: i64,
    pub max: i64,
    pub cache: i64,
    #[serde(default)]
    pub cycle: bool,
    #[serde(default = "permanent", skip_serializing_if = "is_permanent")]
    pub persistence: Persistence,
}

/// An extended statistics object (`CREATE STATISTICS`), under the table (or materialized
/// view) it is on; its name is unique in its own schema, which may be another than the
/// table's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statistics {
    pub schema: String,
    pub name: String,
    /// `pg_get_statisticsobjdef`: kinds, columns and expressions, table.
    pub definition: String,
    /// `ALTER STATISTICS ... SET STATISTICS n`; absent when it is the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A row-level security policy of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub name: String,
    /// `ALL`, `SELECT`, `INSERT`, `UPDATE` or `DELETE`.
    pub command: String,
    /// False for `AS RESTRICTIVE`.
    pub permissive: bool,
    /// `TO` roles, sorted (`PUBLIC` for none).
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub using: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_check: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A view's result column, from the view's own `pg_attribute`: what it returns, whichever
/// schema the tables it reads are in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    /// Only where it differs from the type's default collation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collation: Option<String>,
    /// Column privileges (`GRANT UPDATE (a) ON v ...`); none by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<Grant>,
    /// A materialized view's column settings, as a table's (`ALTER MATERIALIZED VIEW ...
    /// ALTER COLUMN ... SET STATISTICS / STORAGE / COMPRESSION / (n_distinct = ...)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    /// As `format_type` writes it: `character varying(320)`, `public.mood`.
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default)]
    pub not_null: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// `always` or `by default` for an identity column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// An identity column's sequence options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_sequence: Option<IdentitySequence>,
    /// The expression of a `GENERATED ALWAYS AS (...) STORED` column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated: Option<String>,
    /// Only where it differs from the type's default collation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collation: Option<String>,
    /// `ALTER COLUMN ... SET STATISTICS n`; absent when it is the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistics: Option<i32>,
    /// `SET STORAGE` (`plain`, `external`, `main`, `extended`), where it differs from its
    /// type's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// `SET COMPRESSION` (`pglz`, `lz4`); absent for the server's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
    /// Attribute options (`SET (n_distinct = 100)`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Column privileges (`GRANT SELECT (email) ON ...`); none by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<Grant>,
    /// Inherited only, not also declared on this table (`CREATE TABLE c () INHERITS (p)`
    /// rather than `CREATE TABLE c (a int) INHERITS (p)`): dropping it from the parent drops
    /// it here too. A partition's columns are always so, and are not marked.
    #[serde(default, skip_serializing_if = "is_false")]
    pub inherited_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraint {
    pub name: String,
    pub kind: ConstraintKind,
    /// `pg_get_constraintdef`: `FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE`.
    pub definition: String,
    /// False for a `NOT VALID` constraint not validated since.
    pub validated: bool,
    /// A foreign key's referenced table, qualified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub references: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_update: Option<ForeignKeyAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_delete: Option<ForeignKeyAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Inherited only, not also declared on this table (as for a column).
    #[serde(default, skip_serializing_if = "is_false")]
    pub inherited_only: bool,
    /// How the internal triggers that enforce it (a foreign key's, on both tables; a
    /// deferrable key's) fire, when not as usual: `disabled` after `ALTER TABLE ... DISABLE
    /// TRIGGER ALL` (the constraint is then not enforced), `replica`, `always`. Absent when
    /// they all fire as usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// Unique within the schema.
    pub name: String,
    /// `pg_get_indexdef`.
    pub definition: String,
    #[serde(default)]
    pub unique: bool,
    #[serde(default)]
    pub primary: bool,
    /// False for an index whose `CREATE INDEX CONCURRENTLY` failed (`indisvalid`).
    pub valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// The partitioned table's index it is a partition of (`ALTER INDEX ... ATTACH
    /// PARTITION`, or made with the partition): it cannot be dropped alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_to: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    pub name: String,
    /// `pg_get_triggerdef`.
    pub definition: String,
    pub enabled: TriggerEnabled,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// A view or a materialized view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct View {
    pub schema: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub materialized: bool,
    /// A materialized view made `WITH NO DATA` and not refreshed since: reading it fails.
    #[serde(default, skip_serializing_if = "is_false")]
    pub not_populated: bool,
    /// SHA-256 of `definition`, lowercase hex.
    #[serde(default)]
    pub definition_hash: String,
    /// `pg_get_viewdef(view, true)`.
    pub definition: String,
    /// What it returns, in order: a change of a column's type in a table it reads (another
    /// schema's, out of the snapshot's scope, too) shows here when the text is the same.
    #[serde(default)]
    pub columns: Vec<ViewColumn>,
    /// `check_option=local`, `security_barrier=true`, ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// A materialized view's indexes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<Index>,
    /// A materialized view's index marked for `CLUSTER` (`ALTER MATERIALIZED VIEW ... CLUSTER
    /// ON`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clustered_on: Option<String>,
    /// A materialized view's TOAST table's storage parameters (`SET (toast.autovacuum_enabled
    /// = false)`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub toast_options: Vec<String>,
    /// A view's `INSTEAD OF` triggers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<Trigger>,
    /// A materialized view's statistics objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statistics: Vec<Statistics>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<Grant>,
}

/// A function, procedure, aggregate or window function. Its identity is its name and input
/// argument types (`public.add(integer, integer)`), as in PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Function {
    pub schema: String,
    pub name: String,
    pub kind: FunctionKind,
    /// The input argument types: the identity.
    pub argument_types: String,
    /// `pg_get_function_identity_arguments` (names and modes too).
    pub arguments: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    pub language: String,
    pub volatility: Volatility,
    #[serde(default, skip_serializing_if = "is_false")]
    pub security_definer: bool,
    /// SHA-256 of `pg_get_functiondef` (of the aggregate's parts for an aggregate): the body,
    /// its settings and attributes.
    pub definition_hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<Grant>,
    /// The extensions it depends on (`ALTER FUNCTION ... DEPENDS ON EXTENSION`): dropping
    /// one drops it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on_extensions: Vec<String>,
}

impl Function {
    /// `schema.name(argument types)`.
    pub fn signature(&self) -> String {
        format!("{}.{}({})", self.schema, self.name, self.argument_types)
    }
}

/// `pg_get_constraintdef` ends an unvalidated constraint with ` NOT VALID`: `validated` says
/// so already, and one change (a `VALIDATE CONSTRAINT`) must be one changed attribute.
fn strip_not_valid(definition: &mut String) {
    if let Some(rest) = definition.strip_suffix(" NOT VALID") {
        definition.truncate(rest.len());
    }
}

/// SHA-256, lowercase hex.
pub(crate) fn sha256_hex(text: &str) -> String {
    crate::migration::checksum(text.as_bytes())
}

impl Snapshot {
    /// The document, pretty-printed, with a final newline: what `stepmigrate snapshot` writes
    /// and a golden file holds.
    pub fn to_json_pretty(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Reads a snapshot document; `source` (a file name) names it in the errors.
    pub fn from_json(text: &str, source: &Path) -> Result<Snapshot, Error> {
        let invalid = |reason: String| Error::InvalidSnapshot {
            file: source.to_owned(),
            reason,
        };
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            invalid(format!(
                "not JSON ({e}); expected the output of `stepmigrate snapshot`"
            ))
        })?;
        match value.get("format") {
            Some(serde_json::Value::Number(n)) if n.as_u64() == Some(u64::from(FORMAT_VERSION)) => {}
            Some(serde_json::Value::Number(n))
                if OLDER_FORMATS.iter().any(|(v, _)| n.as_u64() == Some(*v)) =>
            {
                let lacks = OLDER_FORMATS
                    .iter()
                    .find(|(v, _)| n.as_u64() == Some(*v))
                    .map_or("", |(_, l)| l);
                return Err(invalid(format!(
                    "snapshot format {n}, written by an older stepmigrate that did not record {lacks}; this stepmigrate reads format {FORMAT_VERSION}: take the snapshot again with this version"
                )));
            }
            Some(other) => {
                return Err(invalid(format!(
                    "snapshot format {other}, but this stepmigrate reads format {FORMAT_VERSION}; take the snapshot again with this version"
                )))
            }
            None => {
                return Err(invalid(
                    "no `format` field: not a snapshot written by `stepmigrate snapshot`".into(),
                ))
            }
        }
        // From the text again (not the value): serde_json's error then says where.
        let snapshot: Snapshot =
            serde_json::from_str(text).map_err(|e| invalid(format!("malformed snapshot: {e}")))?;
        snapshot.validate().map_err(invalid)?;
        Ok(snapshot)
    }

    /// What a well-formed document cannot hold: two objects of one name (the second would
    /// silently stand for both in a diff).
    pub fn validate(&self) -> Result<(), String> {
        fn unique(what: &str, names: impl IntoIterator<Item = String>) -> Result<(), String> {
            let mut seen = BTreeSet::new();
            for name in names {
                if !seen.insert(name.clone()) {
                    return Err(format!("{what} {name} appears twice"));
                }
            }
            Ok(())
        }
        let q = |schema: &str, name: &str| {
            format!(
                "{}.{}",
                super::diff::quote_ident(schema),
                super::diff::quote_ident(name)
            )
        };
        unique(
            "schema",
            self.schemas
                .iter()
                .map(|o| super::diff::quote_ident(&o.name)),
        )?;
        unique(
            "extension",
            self.extensions
                .iter()
                .map(|o| super::diff::quote_ident(&o.name)),
        )?;
        // Types share a namespace, and so do relations (a table's type too, but a
        // snapshot does not say which).
        unique(
            "type",
            self.enums
                .iter()
                .map(|o| q(&o.schema, &o.name))
                .chain(self.domains.iter().map(|o| q(&o.schema, &o.name)))
                .chain(self.composite_types.iter().map(|o| q(&o.schema, &o.name))),
        )?;
        unique(
            "relation",
            self.sequences
                .iter()
                .map(|o| q(&o.schema, &o.name))
                .chain(self.tables.iter().map(|o| q(&o.schema, &o.name)))
                .chain(self.views.iter().map(|o| q(&o.schema, &o.name))),
        )?;
        unique(
            "function",
            self.functions
                .iter()
                .map(|f| format!("{}({})", q(&f.schema, &f.name), f.argument_types)),
        )?;
        unique(
            "index",
            self.tables
                .iter()
                .flat_map(|t| t.indexes.iter().map(|i| q(&t.schema, &i.name)))
                .chain(
                    self.views
                        .iter()
                        .flat_map(|v| v.indexes.iter().map(|i| q(&v.schema, &i.name))),
                ),
        )?;
        unique(
            "statistics object",
            self.tables
                .iter()
                .flat_map(|t| t.statistics.iter())
                .chain(self.views.iter().flat_map(|v| v.statistics.iter()))
                .map(|x| q(&x.schema, &x.name)),
        )?;
        for e in &self.enums {
            unique(
                &format!("in enum {}, label", q(&e.schema, &e.name)),
                e.labels
                    .iter()
                    .map(|l| format!("'{}'", l.replace('\'', "''"))),
            )?;
        }
        for c in &self.composite_types {
            unique(
                &format!("in composite type {}, attribute", q(&c.schema, &c.name)),
                c.attributes
                    .iter()
                    .map(|a| super::diff::quote_ident(&a.name)),
            )?;
        }
        for d in &self.domains {
            unique(
                &format!("in domain {}, constraint", q(&d.schema, &d.name)),
                d.constraints
                    .iter()
                    .map(|c| super::diff::quote_ident(&c.name)),
            )?;
        }
        for t in &self.tables {
            let table = q(&t.schema, &t.name);
            let names = |v: Vec<&String>| {
                v.into_iter()
                    .map(|n| super::diff::quote_ident(n))
                    .collect::<Vec<_>>()
            };
            unique(
                &format!("in table {table}, column"),
                names(t.columns.iter().map(|c| &c.name).collect()),
            )?;
            unique(
                &format!("in table {table}, constraint"),
                names(t.constraints.iter().map(|c| &c.name).collect()),
            )?;
            unique(
                &format!("in table {table}, trigger"),
                names(t.triggers.iter().map(|c| &c.name).collect()),
            )?;
            unique(
                &format!("in table {table}, policy"),
                names(t.policies.iter().map(|c| &c.name).collect()),
            )?;
        }
        for v in &self.views {
            unique(
                &format!("in view {}, trigger", q(&v.schema, &v.name)),
                v.triggers.iter().map(|c| super::diff::quote_ident(&c.name)),
            )?;
            unique(
                &format!("in view {}, column", q(&v.schema, &v.name)),
                v.columns.iter().map(|c| super::diff::quote_ident(&c.name)),
            )?;
        }
        Ok(())
    }

    /// Reads a snapshot file.
    pub fn read(path: &Path) -> Result<Snapshot, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::InvalidSnapshot {
            file: path.to_owned(),
            reason: format!("cannot read it: {e}"),
        })?;
        Snapshot::from_json(&text, path)
    }

    /// Narrows a snapshot to what `options` would have captured: its schemas, and grants and
    /// comments only if asked for. Diffing a file taken with other options against a live
    /// database then compares like with like.
    pub fn restrict(&mut self, options: &SnapshotOptions) {
        let keep = |schema: &str| options.wants_schema(schema);
        self.schemas.retain(|s| keep(&s.name));
        self.extensions.retain(|e| {
            options.include_schemas.is_empty() || options.include_schemas.contains(&e.schema)
        });
        self.enums.retain(|o| keep(&o.schema));
        self.domains.retain(|o| keep(&o.schema));
        self.composite_types.retain(|o| keep(&o.schema));
        self.sequences.retain(|o| keep(&o.schema));
        self.tables.retain(|o| keep(&o.schema));
        self.views.retain(|o| keep(&o.schema));
        self.functions.retain(|o| keep(&o.schema));
        self.objects.retain(|o| match &o.schema {
            Some(schema) => keep(schema),
            None => options.include_schemas.is_empty(),
        });
        if !options.grants {
            self.schemas.iter_mut().for_each(|o| o.grants.clear());
            self.enums.iter_mut().for_each(|o| o.grants.clear());
            self.domains.iter_mut().for_each(|o| o.grants.clear());
            self.composite_types
                .iter_mut()
                .for_each(|o| o.grants.clear());
            self.sequences.iter_mut().for_each(|o| o.grants.clear());
            for t in &mut self.tables {
                t.grants.clear();
                t.columns.iter_mut().for_each(|c| c.grants.clear());
            }
            for v in &mut self.views {
                v.grants.clear();
                v.columns.iter_mut().for_each(|c| c.grants.clear());
            }
            self.functions.iter_mut().for_each(|o| o.grants.clear());
        }
        if !options.comments {
            self.strip_comments();
        }
        if let Some(scope) = &mut self.options {
            scope.grants &= options.grants;
            scope.comments &= options.comments;
        }
    }

    fn strip_comments(&mut self) {
        self.schemas.iter_mut().for_each(|o| o.comment = None);
        self.enums.iter_mut().for_each(|o| o.comment = None);
        for d in &mut self.domains {
            d.comment = None;
            d.constraints.iter_mut().for_each(|o| o.comment = None);
        }
        self.composite_types
            .iter_mut()
            .for_each(|o| o.comment = None);
        self.sequences.iter_mut().for_each(|o| o.comment = None);
        self.functions.iter_mut().for_each(|o| o.comment = None);
        self.objects.iter_mut().for_each(|o| o.comment = None);
        for t in &mut self.tables {
            t.comment = None;
            t.columns.iter_mut().for_each(|o| o.comment = None);
            t.constraints.iter_mut().for_each(|o| o.comment = None);
            t.indexes.iter_mut().for_each(|o| o.comment = None);
            t.triggers.iter_mut().for_each(|o| o.comment = None);
            t.statistics.iter_mut().for_each(|o| o.comment = None);
            t.policies.iter_mut().for_each(|o| o.comment = None);
        }
        for v in &mut self.views {
            v.comment = None;
            v.indexes.iter_mut().for_each(|o| o.comment = None);
            v.triggers.iter_mut().for_each(|o| o.comment = None);
            v.statistics.iter_mut().for_each(|o| o.comment = None);
        }
    }

    /// Puts every list in its canonical order (schema, then name, byte order; a table's
    /// columns stay in their order) and every derived field in place: what makes two
    /// snapshots of equal schemas equal documents.
    pub fn normalize(&mut self) {
        fn by<T, K: Ord>(list: &mut [T], key: impl Fn(&T) -> K) {
            list.sort_by_key(|o| key(o));
        }
        by(&mut self.schemas, |o| o.name.clone());
        by(&mut self.extensions, |o| o.name.clone());
        by(&mut self.enums, |o| (o.schema.clone(), o.name.clone()));
        by(&mut self.domains, |o| (o.schema.clone(), o.name.clone()));
        by(&mut self.composite_types, |o| {
            (o.schema.clone(), o.name.clone())
        });
        by(&mut self.sequences, |o| (o.schema.clone(), o.name.clone()));
        by(&mut self.tables, |o| (o.schema.clone(), o.name.clone()));
        by(&mut self.views, |o| (o.schema.clone(), o.name.clone()));
        by(&mut self.functions, |o| {
            (o.schema.clone(), o.name.clone(), o.argument_types.clone())
        });
        by(&mut self.objects, |o| (o.kind.clone(), o.identity.clone()));
        for d in &mut self.domains {
            by(&mut d.constraints, |o| o.name.clone());
            for c in &mut d.constraints {
                strip_not_valid(&mut c.definition);
            }
        }
        for t in &mut self.tables {
            by(&mut t.constraints, |o| o.name.clone());
            for c in &mut t.constraints {
                strip_not_valid(&mut c.definition);
            }
            by(&mut t.indexes, |o| o.name.clone());
            by(&mut t.triggers, |o| o.name.clone());
            by(&mut t.statistics, |o| (o.schema.clone(), o.name.clone()));
            by(&mut t.policies, |o| o.name.clone());
            t.policies.iter_mut().for_each(|p| p.roles.sort());
            t.options.sort();
            t.grants.sort();
            t.grants.dedup();
            for c in &mut t.columns {
                c.grants.sort();
                c.grants.dedup();
            }
        }
        for v in &mut self.views {
            by(&mut v.indexes, |o| o.name.clone());
            by(&mut v.triggers, |o| o.name.clone());
            by(&mut v.statistics, |o| (o.schema.clone(), o.name.clone()));
            v.options.sort();
            v.definition_hash = sha256_hex(&v.definition);
            v.grants.sort();
            v.grants.dedup();
            for c in &mut v.columns {
                c.grants.sort();
                c.grants.dedup();
            }
        }
        for g in self
            .schemas
            .iter_mut()
            .map(|o| &mut o.grants)
            .chain(self.enums.iter_mut().map(|o| &mut o.grants))
            .chain(self.domains.iter_mut().map(|o| &mut o.grants))
            .chain(self.composite_types.iter_mut().map(|o| &mut o.grants))
            .chain(self.sequences.iter_mut().map(|o| &mut o.grants))
            .chain(self.functions.iter_mut().map(|o| &mut o.grants))
        {
            g.sort();
            g.dedup();
        }
    }

    /// Leaves out the ledger's objects ([`LEDGER_OBJECTS`] in a ledger schema), and a
    /// ledger schema other than `public` that holds nothing else: a database before its
    /// first run and after it differ by what the migrations did, not by the ledger.
    pub(crate) fn remove_ledger(&mut self, filter: &LedgerFilter) {
        let schemas: BTreeSet<String> = match filter {
            LedgerFilter::Keep => return,
            LedgerFilter::Schema(s) => [s.clone()].into(),
            LedgerFilter::Auto => self
                .tables
                .iter()
                .filter(|t| t.name == "schema_migrations" || t.name == "schema_migration_events")
                .map(|t| t.schema.clone())
                .collect(),
        };
        let ledger =
            |schema: &str, name: &str| schemas.contains(schema) && LEDGER_OBJECTS.contains(&name);
        self.tables.retain(|o| !ledger(&o.schema, &o.name));
        self.views.retain(|o| !ledger(&o.schema, &o.name));
        self.sequences.retain(|o| !ledger(&o.schema, &o.name));
        self.functions.retain(|o| !ledger(&o.schema, &o.name));
        let used: BTreeSet<&str> = self
            .enums
            .iter()
            .map(|o| o.schema.as_str())
            .chain(self.domains.iter().map(|o| o.schema.as_str()))
            .chain(self.composite_types.iter().map(|o| o.schema.as_str()))
            .chain(self.sequences.iter().map(|o| o.schema.as_str()))
            .chain(self.tables.iter().map(|o| o.schema.as_str()))
            .chain(self.views.iter().map(|o| o.schema.as_str()))
            .chain(self.functions.iter().map(|o| o.schema.as_str()))
            .chain(self.extensions.iter().map(|o| o.schema.as_str()))
            .collect();
        let empty_ledger_schemas: BTreeSet<String> = schemas
            .iter()
            .filter(|s| s.as_str() != "public" && !used.contains(s.as_str()))
            .cloned()
            .collect();
        self.schemas
            .retain(|s| !empty_ledger_schemas.contains(&s.name));
    }

    /// How many objects (top-level and within tables and views) the snapshot holds.
    pub fn object_count(&self) -> usize {
        self.schemas.len()
            + self.extensions.len()
            + self.enums.len()
            + self.domains.len()
            + self.composite_types.len()
            + self.sequences.len()
            + self.functions.len()
            + self.objects.len()
            + self
                .tables
                .iter()
                .map(|t| {
                    1 + t.columns.len()
                        + t.constraints.len()
                        + t.indexes.len()
                        + t.triggers.len()
                        + t.statistics.len()
                        + t.policies.len()
                })
                .sum::<usize>()
            + self
                .views
                .iter()
                .map(|v| 1 + v.indexes.len() + v.triggers.len() + v.statistics.len())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_snapshot_is_named_in_the_error() {
        let path = Path::new("before.json");
        let err = Snapshot::from_json("not json", path).unwrap_err();
        assert!(
            err.to_string().starts_with("before.json: not JSON"),
            "{err}"
        );
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
        let err = Snapshot::from_json(r#"{"format": 99, "tables": []}"#, path).unwrap_err();
        assert!(
            err.to_string().contains("snapshot format 99")
                && err.to_string().contains("before.json"),
            "{err}"
        );
        // A file of the format before: what it lacks is said, and what to do.
        let err = Snapshot::from_json(r#"{"format": 1, "tables": []}"#, path).unwrap_err();
        assert!(
            err.to_string()
                .contains("snapshot format 1, written by an older stepmigrate")
                && err.to_string().contains("statistics objects")
                && err.to_string().contains("take the snapshot again"),
            "{err}"
        );
        let err = Snapshot::from_json(r#"{"tables": []}"#, path).unwrap_err();
        assert!(err.to_string().contains("no `format` field"), "{err}");
        let err =
            Snapshot::from_json(r#"{"format": 2, "tables": [{"name": 3}]}"#, path).unwrap_err();
        assert!(err.to_string().contains("malformed snapshot"), "{err}");
    }

    #[test]
    fn round_trips_through_json() {
        let mut s = Snapshot::default();
        s.schemas.push(Schema {
            name: "public".into(),
            comment: None,
            grants: vec![],
        });
        let text = s.to_json_pretty();
        assert_eq!(Snapshot::from_json(&text, Path::new("x")).unwrap(), s);
    }

    #[test]
    fn restrict_drops_other_schemas_and_grants() {
        let mut s = Snapshot::default();
        for name in ["app", "audit"] {
            s.schemas.push(Schema {
                name: name.into(),
                comment: Some("c".into()),
                grants: vec![Grant {
                    grantee: "PUBLIC".into(),
                    privilege: "USAGE".into(),
                    grantable: false,
                }],
            });
        }
        s.restrict(&SnapshotOptions {
            include_schemas: vec!["app".into()],
            ..SnapshotOptions::default()
        });
        assert_eq!(s.schemas.len(), 1);
        assert_eq!(s.schemas[0].name, "app");
        assert!(s.schemas[0].grants.is_empty());
        assert_eq!(s.schemas[0].comment.as_deref(), Some("c"));
    }

    fn named_table(schema: &str, name: &str) -> Table {
        Table {
            schema: schema.into(),
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
            columns: vec![],
            constraints: vec![],
            indexes: vec![],
            triggers: vec![],
            statistics: vec![],
            policies: vec![],
            comment: None,
            grants: vec![],
        }
    }

    fn schema(name: &str) -> Schema {
        Schema {
            name: name.into(),
            comment: None,
            grants: vec![],
        }
    }

    fn names(s: &Snapshot) -> Vec<String> {
        s.schemas
            .iter()
            .map(|x| x.name.clone())
            .chain(s.tables.iter().map(|t| format!("{}.{}", t.schema, t.name)))
            .collect()
    }

    #[test]
    fn the_ledger_and_its_own_schema_are_left_out() {
        let mut s = Snapshot {
            schemas: vec![schema("ops"), schema("public")],
            tables: vec![
                named_table("ops", "schema_migrations"),
                named_table("ops", "schema_migration_events"),
                // Not a ledger schema: a table of the application that happens to match.
                named_table("public", "schema_migrations_archive"),
                named_table("public", "users"),
            ],
            ..Snapshot::default()
        };
        let mut auto = s.clone();
        auto.remove_ledger(&LedgerFilter::Auto);
        assert_eq!(
            names(&auto),
            ["public", "public.schema_migrations_archive", "public.users"]
        );
        let mut keep = s.clone();
        keep.remove_ledger(&LedgerFilter::Keep);
        assert_eq!(keep, s);
        // The ledger in public: public stays, and so does the application's table whose
        // name begins like the ledger's (only the ledger's own objects are left out).
        s.tables[0].schema = "public".into();
        s.tables[1].schema = "public".into();
        s.remove_ledger(&LedgerFilter::Schema("public".into()));
        assert_eq!(
            names(&s),
            [
                "ops",
                "public",
                "public.schema_migrations_archive",
                "public.users"
            ]
        );
    }

    #[test]
    fn normalize_sorts_and_moves_not_valid_into_validated() {
        let mut t = named_table("public", "orders");
        for name in ["b_check", "a_check"] {
            t.constraints.push(Constraint {
                inherited_only: false,
                triggers: None,
                name: name.into(),
                kind: ConstraintKind::Check,
                definition: "CHECK ((total >= 0)) NOT VALID".into(),
                validated: false,
                references: None,
                on_update: None,
                on_delete: None,
                comment: None,
            });
        }
        let mut s = Snapshot {
            tables: vec![t, named_table("app", "z"), named_table("Public", "a")],
            ..Snapshot::default()
        };
        s.normalize();
        assert_eq!(names(&s), ["Public.a", "app.z", "public.orders"]);
        let orders = &s.tables[2];
        assert_eq!(orders.constraints[0].name, "a_check");
        assert_eq!(orders.constraints[0].definition, "CHECK ((total >= 0))");
    }

    fn table_json(extra: &str) -> String {
        format!(
            r#"{{"schema": "public", "name": "t", "kind": "table", "persistence": "permanent", "columns": [{{"name": "a", "type": "integer"}}]{extra}}}"#
        )
    }

    #[test]
    fn a_malformed_snapshot_is_refused_naming_what_and_where() {
        let path = Path::new("s.json");
        let read = |text: String| Snapshot::from_json(&text, path).map(|_| ());
        let doc =
            |tables: &[String]| format!("{{\"format\": 2,\n\"tables\": [{}]}}", tables.join(",\n"));
        assert!(read(doc(&[table_json("")])).is_ok());
        // A key this format does not have (a misspelt attribute) would compare as if the
        // attribute were absent: refused, named with its place.
        let err = read(doc(&[table_json(r#", "comemnt": "x""#)]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown field `comemnt`") && err.contains("line 2"),
            "{err}"
        );
        let err = read("{\"format\": 2, \"tabels\": []}".to_owned())
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `tabels`"), "{err}");
        let t = table_json("");
        let err = read(doc(&[t.clone(), t])).unwrap_err().to_string();
        assert_eq!(err, "s.json: relation public.t appears twice");
        let twice = table_json("").replace(
            r#"{"name": "a", "type": "integer"}"#,
            r#"{"name": "a", "type": "integer"}, {"name": "a", "type": "text"}"#,
        );
        let err = read(doc(&[twice])).unwrap_err().to_string();
        assert!(
            err.contains("in table public.t, column a appears twice"),
            "{err}"
        );
        for bad in [r#"{"kind": "banana"}"#, r#"{"persistence": "zzz"}"#] {
            let value: serde_json::Value = serde_json::from_str(bad).unwrap();
            let (field, v) = value.as_object().unwrap().iter().next().unwrap();
            let text = table_json("").replace(
                &format!(
                    "\"{field}\": \"{}\"",
                    if field == "kind" {
                        "table"
                    } else {
                        "permanent"
                    }
                ),
                &format!("\"{field}\": {v}"),
            );
            let err = read(doc(&[text])).unwrap_err().to_string();
            assert!(
                err.starts_with("s.json: malformed snapshot: unknown variant")
                    && err.contains(v.as_str().unwrap())
                    && err.contains("at line 2 column"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_scope_is_recorded_and_an_old_file_has_none() {
        let options = SnapshotOptions {
            include_schemas: vec!["app".into()],
            ..SnapshotOptions::default()
        };
        let s = Snapshot {
            options: Some(Scope::from(&options)),
            ..Snapshot::default()
        };
        let text = s.to_json_pretty();
        assert!(
            text.contains("\"options\": {\n    \"grants\": false,\n    \"comments\": true,\n    \"schemas\": [\n      \"app\"\n    ],\n    \"objects\": true\n  }"),
            "{text}"
        );
        assert_eq!(Snapshot::from_json(&text, Path::new("x")).unwrap(), s);
        let old = Snapshot::from_json(r#"{"format": 2}"#, Path::new("x")).unwrap();
        assert_eq!(old.options, None);
    }
}
