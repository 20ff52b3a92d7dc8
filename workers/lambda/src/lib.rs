//! stepmigrate's AWS side: the Lambda workers' runtime and configuration ([`lambda`]), the
//! typed step contracts ([`steps`]) that the state machine, the trigger and `stepmigrate
//! remote` share, the alert ([`alert`]) and metrics ([`metrics`]), and starting and following
//! executions ([`execution`], [`trigger`]). The domain is `stepmigrate-core`, re-exported
//! here under its own module names.

pub use stepmigrate_core::{
    apply, batch, config, db, error, ledger, lock, migration, notices, plan, rollback, runner, sql,
    verify, Error, ErrorKind,
};

pub mod alert;
pub mod execution;
pub mod lambda;
pub mod metrics;
pub mod steps;
pub mod trigger;
