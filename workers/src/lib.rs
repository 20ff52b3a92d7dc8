//! stepmigrate: PostgreSQL migrations applied step by step.
//!
//! The domain, as DESIGN.md names it: a [`migration::MigrationSet`] loaded and validated from
//! a directory, the event-sourced [`ledger`], the pure [`plan`], the [`apply`]er that runs one
//! migration under the [`lock`], and the [`runner`] that wires them to a [`db::Database`] as
//! the steps (status, plan, up, apply-one, record, resolve); [`execution`] and [`trigger`] start
//! and follow the state machine's executions. Binaries only parse and call.

pub mod alert;
pub mod apply;
pub mod config;
pub mod db;
pub mod error;
pub mod execution;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod ledger;
pub mod lock;
pub mod metrics;
pub mod migration;
pub mod notices;
pub mod plan;
pub mod runner;
pub mod sql;
pub mod steps;
#[cfg(feature = "lambda")]
pub mod trigger;

pub use error::{Error, ErrorKind};
