//! The catalog snapshot and the structural diff: what a database's schema is, read from the
//! system catalogs into a normalized, deterministic document ([`Snapshot`]), and what differs
//! between two of them ([`SchemaDiff`]).
//!
//! A snapshot names objects, never OIDs: two databases built by the same migrations give
//! byte-identical JSON, so a snapshot can be committed, compared across servers and diffed.
//! The diff is a pure function of two snapshots; renames show as a drop and an add (nothing in
//! the catalogs says that two objects are one renamed).

mod capture;
mod diff;
mod snapshot;

/// The event trigger (and its function, in `pg_catalog`) that `verify` installs on its
/// scratch or dev database: the runner's own, left out of every snapshot as the ledger is.
pub const VERIFY_GUARD: &str = "stepmigrate_verify_guard";

pub use diff::{diff, quote_ident, AttributeChange, Change, ChangeType, ObjectKind, SchemaDiff};
pub use snapshot::{
    Column, CompositeAttribute, CompositeType, Constraint, ConstraintKind, Domain,
    DomainConstraint, Enum, Extension, ForeignKeyAction, Function, FunctionKind, Grant, Identity,
    IdentitySequence, Index, LedgerFilter, Persistence, Policy, Schema, Scope, Sequence, Snapshot,
    SnapshotOptions, Statistics, Table, TableKind, Trigger, TriggerEnabled, View, ViewColumn,
    Volatility, FORMAT_VERSION, LEDGER_OBJECTS,
};
