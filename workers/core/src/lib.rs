//! stepmigrate's domain, as DESIGN.md names it, with no AWS and no command line: a
//! [`migration::MigrationSet`] loaded and validated from a directory (with its [`sql`]
//! lexing), the event-sourced [`ledger`], the pure [`plan`], the [`apply`]er that runs one
//! migration's [`apply::Attempt`], the runners' [`lock`], [`config`] settings and [`error`]s,
//! and the [`runner`] that wires them to a [`db::Database`] as the steps (status, plan, up,
//! apply a range, record, resolve). [`notices`] carries what PostgreSQL says along the way. [`schema`] snapshots a
//! database's schema from its catalogs and diffs two snapshots. [`rollback`] plans reverting
//! applied migrations with their down scripts; [`integrity`] is the checked-in `migrations.sum`.

pub mod apply;
pub mod batch;
pub mod config;
pub mod db;
pub mod deadline;
pub mod error;
pub mod index_build;
pub mod integrity;
pub mod ledger;
pub mod lock;
pub mod migration;
pub mod notices;
pub mod plan;
pub mod planner_stats;
pub mod rollback;
pub mod runaway;
pub mod runner;
pub mod schema;
pub mod server_guard;
pub mod sql;
pub mod verify;

pub use error::{Error, ErrorKind};
