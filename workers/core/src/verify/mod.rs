//! `verify`: runs pending migrations on a real database inside a transaction that is rolled
//! back, one statement at a time, and reports what each statement did to the database: how
//! long it took, the relation locks it took (read from `pg_locks` before the rollback),
//! tables and indexes it rewrote (their `relfilenode` changed), the indexes it built and
//! whether they are valid.
//!
//! Two ways to run it:
//! - on a **scratch database** ([`ScratchDatabase`]: created on the target's server, or a
//!   given empty one), brought to the target's applied history through the normal runner;
//!   each pending migration is verified (rolled back) and then applied for real so the next
//!   one sees its effects. The target is only read.
//! - **in the target's own transaction** ([`Migrator::verify_in_transaction`], for staging):
//!   every pending transactional migration in ONE transaction, each between savepoints, all
//!   rolled back; then one `verified` event per verified migration, which the fold skips.
//!
//! The pure parts (what a lock mode blocks, the lock and catalog differences, the flags, the
//! bounded summary) are separate from the database I/O and tested without a database.

mod catalog;
mod empty_copy;
mod in_transaction;
mod locks;
mod on_scratch;
mod report;
mod round_trip;
mod scratch;
mod statements;

use std::time::Duration;

pub use catalog::{compare_catalogs, relkind_name, Catalog, Relation};
pub use empty_copy::{depends_on_data, DataDependence, DataKind, TargetTable};
pub use locks::{blocks, blocks_together, lock_level, mode_words, new_locks, HeldLock};
pub use on_scratch::{verify_pending, verify_pending_with};
pub use report::{
    Flags, LockHeld, LockTaken, Method, MigrationDigest, MigrationVerification, NewIndex, Rewrite,
    RoundTrip, RoundTripStep, StatementReport, StatisticsRestored, VerifyOptions, VerifyOutcome,
    VerifyReport, VerifySummary, ROUND_TRIP_SQLSTATE,
};
pub use scratch::ScratchDatabase;
pub use statements::DEFERRED_STATEMENT;

/// The SQLSTATE reported for a statement that verify refuses to send because it would end
/// the transaction that keeps the verification from committing.
/// Not SM009: that is the revert guard's "already rolled back", which the applier reads as
/// another runner's work, not as a failure.
pub const TRANSACTION_CONTROL_SQLSTATE: &str = "SM013";

/// The SQLSTATE reported for a migration that verify does not run because a statement of it
/// acts outside its transaction.
pub use crate::server_guard::OUTSIDE_TRANSACTION_SQLSTATE;

/// The default `lock_timeout` of `verify --in-transaction-only`: it runs on a live database,
/// and every lock it takes is held until the rollback.
pub const IN_TRANSACTION_LOCK_TIMEOUT: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    /// Each SQLSTATE of the runner's own means one thing: none is also one that the ledger's
    /// guards raise (which the applier reads as an outcome, e.g. SM009 as "already rolled
    /// back"), and no two of the runner's are the same.
    #[test]
    fn the_runners_own_sqlstates_are_distinct_from_each_other_and_the_guards() {
        let ours = [
            TRANSACTION_CONTROL_SQLSTATE,
            OUTSIDE_TRANSACTION_SQLSTATE,
            ROUND_TRIP_SQLSTATE,
            crate::ledger::LOST_TRANSACTION_SQLSTATE,
            crate::apply::OPEN_TRANSACTION_SQLSTATE,
            crate::apply::SESSION_CHANGED_SQLSTATE,
            crate::batch::RUNAWAY_SQLSTATE,
            crate::server_guard::SERVER_CHANGE_SQLSTATE,
        ];
        let guards = include_str!("../ledger.sql");
        for (i, code) in ours.iter().enumerate() {
            assert!(
                !guards.contains(&format!("ERRCODE = '{code}'")),
                "{code} is also raised by the ledger's guards"
            );
            assert!(!ours[i + 1..].contains(code), "{code} is used twice");
        }
    }
}
