//! An operator's word on a dirty migration (`resolve`), and the ledger's maintenance
//! (`ledger check`, `ledger rebuild`).

use serde::Serialize;

use super::{Migrator, Progress};
use crate::error::{Error, SqlError};
use crate::ledger::{self, EventKind, LedgerKind, NewEvent};
use crate::migration::Version;

/// The SQLSTATE of the `failed` event that `resolve --applied` records for a batch migration
/// whose down began while it was partly applied: partly applied again.
pub const RESOLVED_PARTLY_APPLIED_SQLSTATE: &str = "SM015";

/// How an operator resolved a dirty migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    Applied,
    NotApplied,
}

/// What a resolved migration is now: what the operator said, except that `--applied` on a
/// batch migration whose down began while it was partly applied makes it partly applied
/// again (never applied: its batches did not all run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolved {
    Applied,
    PartlyApplied,
    NotApplied,
}

impl Migrator {
    /// Records what an operator found when checking a dirty migration by hand.
    pub async fn resolve(
        &self,
        version: &Version,
        resolution: Resolution,
        run_id: &str,
        progress: &mut dyn Progress,
    ) -> Result<(String, Resolved), Error> {
        let mut conn = self.db.connect().await?;
        let schema = self.ledger_schema(&mut conn).await?;
        let lock = self.lock(&schema, progress).await?;
        lock.hold(async |_| {
            let ledger = ledger::read(&mut conn, &schema).await?;
            let found = ledger.migration_rows().find(|r| {
                Version::parse(&r.version).is_some_and(|v| v.number() == version.number())
            });
            let row = match found {
                Some(row) if row.dirty => row.clone(),
                Some(_) => {
                    return Err(Error::InvalidInput(format!(
                        "migration {version} is not dirty: there is nothing to resolve"
                    )))
                }
                None => {
                    let known = if self.set.get(version).is_some() {
                        "it is in the migration set but the ledger has no row of it (pending)"
                    } else {
                        "it is neither in the migration set nor in the ledger"
                    };
                    return Err(Error::InvalidInput(format!(
                        "migration {version}: {known}: there is nothing to resolve"
                    )));
                }
            };
            if ledger.in_progress.contains(&row.version) {
                return Err(Error::InvalidInput(format!(
                    "a session still runs a statement of {} (a runner at work, or a killed runner's backend running on; it holds the migration's build lock): there is nothing to resolve until it ends",
                    row.name
                )));
            }
            // A batch migration whose down began while it was partly applied was never
            // applied: "as it was before its down" is partly applied, which a `failed` event
            // records (its committed batches stay counted; `up` resumes, `down` reverts).
            let partly = match (resolution, row.event_id) {
                (Resolution::Applied, Some(event)) => {
                    ledger::down_of_an_unapplied_migration(&mut conn, &schema, event).await?
                }
                _ => false,
            };
            let back_to_partly = SqlError {
                sqlstate: RESOLVED_PARTLY_APPLIED_SQLSTATE.to_owned(),
                message: "resolved by hand: its down did not take effect, and it is partly applied as before it (its committed batches stay)".to_owned(),
                ..SqlError::default()
            };
            let (kind, error) = match resolution {
                Resolution::Applied if partly => (EventKind::Failed, Some(&back_to_partly)),
                Resolution::Applied => (EventKind::ResolvedApplied, None),
                Resolution::NotApplied => (EventKind::ResolvedNotApplied, None),
            };
            let event = NewEvent {
                run_id,
                version: &row.version,
                name: &row.name,
                kind,
                checksum: row.checksum.as_deref(),
                execution_time_ms: None,
                dirty: false,
                error,
                notices: &[],
                down: None,
                progress: None,
            };
            if partly {
                // With its error, and the totals its committed batches reached.
                ledger::record_failure(&mut conn, &schema, &event).await?;
            } else {
                ledger::append(&mut conn, &schema, &event).await?;
            }
            let resolved = match resolution {
                Resolution::Applied if partly => Resolved::PartlyApplied,
                Resolution::Applied => Resolved::Applied,
                Resolution::NotApplied => Resolved::NotApplied,
            };
            Ok((row.name, resolved))
        })
        .await
    }

    /// Differences between the projection and its events (empty: consistent). A database
    /// without an event-sourced ledger yet has nothing to differ.
    pub async fn ledger_check(&self) -> Result<(LedgerKind, Vec<String>), Error> {
        let mut conn = self.db.connect().await?;
        let (schema, ledger) = self.read_ledger(&mut conn).await?;
        let differences = match ledger.kind {
            LedgerKind::EventSourced if ledger.projection_missing => vec![format!(
                "  {} is missing; its events are there (the next `stepmigrate up`, or `stepmigrate ledger rebuild`, restores it)",
                schema.qualify("schema_migrations")
            )],
            LedgerKind::EventSourced => ledger::check(&mut conn, &schema).await?,
            LedgerKind::Missing | LedgerKind::Legacy => Vec::new(),
        };
        Ok((ledger.kind, differences))
    }

    /// Rewrites the projection from the events; returns the number of rows.
    pub async fn ledger_rebuild(
        &self,
        run_id: &str,
        progress: &mut dyn Progress,
    ) -> Result<u64, Error> {
        let mut conn = self.db.connect().await?;
        let (schema, ledger) = self.read_ledger(&mut conn).await?;
        self.lock(&schema, progress)
            .await?
            .hold(async |_| {
                if !ledger.is_current() {
                    ledger::install(&mut conn, &schema, run_id).await?;
                }
                ledger::rebuild(&mut conn, &schema).await
            })
            .await
    }
}
