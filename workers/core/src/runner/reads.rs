//! Reading the state without changing it: the plan, the status, the ledger once no
//! migration's transaction is open on it, and the locks a command waits for.

use std::time::Duration;

use sqlx::PgConnection;
use tracing::info;

use super::{Migrator, Progress, Quiet};
use crate::batch::{self};
use crate::error::Error;
use crate::ledger::{self, Ledger, LedgerKind, LedgerSchema, PartlyApplied};
use crate::plan::{Plan, Scope, State};

/// How often a command watching its lock waits ([`Migrator::watching_locks`]) looks for the
/// sessions in its way: the first look comes after this long, so a wait of a moment says
/// nothing.
pub const LOCK_WATCH_EVERY: Duration = Duration::from_millis(1500);

/// The batch migrations that are partly applied ([`PartlyApplied`]): each version with `batch`
/// events and no applied row, with its totals as [`batch::recorded_progress`] reads them
/// (none since it was last made pending from scratch: not partly applied).
pub async fn partly_applied(
    conn: &mut PgConnection,
    schema: &LedgerSchema,
    ledger: &Ledger,
) -> Result<Vec<PartlyApplied>, Error> {
    if ledger.kind != LedgerKind::EventSourced {
        return Ok(Vec::new());
    }
    let latest: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(&format!(
        "SELECT DISTINCT ON (version) version::text, name::text, checksum::text, id FROM {}
         WHERE kind = 'batch' ORDER BY version, id DESC",
        schema.qualify("schema_migration_events")
    ))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::database("reading the batch migrations' progress", e))?;
    let mut partly = Vec::new();
    for (version, name, checksum, event_id) in latest {
        let applied = ledger
            .migration_rows()
            .any(|r| r.version == version && r.success);
        if applied {
            continue;
        }
        let (progress, _) = batch::recorded_progress(conn, schema, &version).await?;
        if progress.batches > 0 {
            let holds_to = match crate::migration::Version::parse(&version) {
                Some(v) => batch::file_batches_hold_to(conn, schema, &v).await?,
                None => None,
            };
            partly.push(PartlyApplied {
                version,
                name,
                checksum,
                progress,
                event_id,
                holds_to,
            });
        }
    }
    Ok(partly)
}

impl Migrator {
    /// Runs `work` (commands on this migrator's database) watching the locks it waits for:
    /// every [`LOCK_WATCH_EVERY`] while it runs, each session in the way of one of this
    /// process's backends is told to `progress` (once per relation); and a `lock_timeout`
    /// that `work` hits names the sessions that held it ([`Error::LockWaitTimeout`]).
    pub async fn watching_locks<T>(
        &self,
        progress: &mut dyn Progress,
        work: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let mut work = std::pin::pin!(work);
        let mut told = std::collections::BTreeSet::new();
        let start = tokio::time::Instant::now() + LOCK_WATCH_EVERY;
        let mut tick = tokio::time::interval_at(start, LOCK_WATCH_EVERY);
        let result = loop {
            tokio::select! {
                r = &mut work => break r,
                _ = tick.tick() => {
                    // Seen from a session of its own; a failure to look is no failure of the work.
                    for holder in self.db.blockers(None).await.unwrap_or_default() {
                        if told.insert((holder.pid, holder.relation.clone())) {
                            info!(pid = holder.pid, relation = %holder.relation, "waiting for a lock");
                            progress.waiting_for_session(&holder);
                        }
                    }
                }
            }
        };
        match result {
            Err(Error::LockWaitTimeout {
                context, holders, ..
            }) => {
                let schema = self
                    .ledger_schema
                    .get()
                    .map(|s| s.name().to_owned())
                    .or_else(|| self.settings.ledger_schema.clone());
                let holders = if holders.is_empty() {
                    self.db
                        .blockers(schema.as_deref())
                        .await
                        .unwrap_or_default()
                } else {
                    holders
                };
                Err(Error::LockWaitTimeout {
                    context,
                    lock_timeout: Some(self.settings.lock_timeout),
                    holders,
                })
            }
            other => other,
        }
    }

    /// The plan of `scope` as it stands, without taking the lock or writing anything; made
    /// once no migration's transaction is open (see [`Migrator::settled_ledger`]).
    pub async fn plan(&self, scope: &Scope) -> Result<(Ledger, Plan), Error> {
        self.plan_telling(scope, &mut Quiet).await
    }

    /// [`Migrator::plan`], telling `progress` what it waits for.
    pub async fn plan_telling(
        &self,
        scope: &Scope,
        progress: &mut dyn Progress,
    ) -> Result<(Ledger, Plan), Error> {
        let mut conn = self.db.connect().await?;
        let (schema, mut ledger) = self.settled_ledger(&mut conn, progress).await?;
        let mut plan = Plan::scoped(&self.set, &ledger, scope)?;
        let mut dirty = plan
            .entries
            .iter()
            .filter(|e| e.state == State::Dirty)
            .peekable();
        if dirty.peek().is_some() && dirty.all(|e| e.still_running) {
            // Another runner's statement outside a transaction runs right now: `up` waits
            // for that runner's turn to end, and so does its plan.
            ledger = self
                .ledger_after_the_runners_turn(&mut conn, &schema, progress)
                .await?;
            plan = Plan::scoped(&self.set, &ledger, scope)?;
        }
        plan.note_partly_applied(
            &partly_applied(&mut conn, &schema, &ledger).await?,
            &self.set,
        );
        Ok((ledger, plan))
    }

    /// The state as it stands, for `status`: read at once, never waiting; a migration's
    /// transaction open meanwhile (a runner at work, or a killed runner's backend that will
    /// still commit) is named in a warning, since the state shown may change when it ends.
    pub async fn status(&self) -> Result<(Ledger, Plan), Error> {
        let mut conn = self.db.connect().await?;
        let (schema, ledger) = self.read_ledger(&mut conn).await?;
        let mut plan = Plan::scoped(&self.set, &ledger, &Scope::default())?;
        plan.note_partly_applied(
            &partly_applied(&mut conn, &schema, &ledger).await?,
            &self.set,
        );
        if ledger.kind != LedgerKind::Missing {
            if let Some(pid) = crate::lock::migration_in_flight(&mut conn, &schema).await? {
                plan.warnings.push(format!(
                    "a migration's transaction is open in backend {pid} right now (a runner at work, or a killed one whose statement runs on): this state may change when it ends"
                ));
            }
        }
        Ok((ledger, plan))
    }

    /// The ledger once the runner holding the migration lock has let it go (waiting for it as
    /// `up` does, up to the lock wait): what another runner's statement outside a transaction,
    /// running now, leaves.
    pub(crate) async fn ledger_after_the_runners_turn(
        &self,
        conn: &mut PgConnection,
        schema: &LedgerSchema,
        progress: &mut dyn Progress,
    ) -> Result<Ledger, Error> {
        self.lock(schema, progress)
            .await?
            .hold(async |_| Ok(()))
            .await?;
        ledger::read(conn, schema).await
    }

    /// The ledger once no session is inside a migration's transaction on it (waiting up to
    /// the lock wait): what a plan may be made from. See
    /// [`crate::lock::wait_for_migration_in_flight`].
    pub(crate) async fn settled_ledger(
        &self,
        conn: &mut PgConnection,
        progress: &mut dyn Progress,
    ) -> Result<(LedgerSchema, Ledger), Error> {
        let schema = self.ledger_schema(conn).await?;
        crate::lock::wait_for_migration_in_flight(conn, &schema, self.settings.lock_wait, |pid| {
            progress.waiting_for_migration(pid)
        })
        .await?;
        let ledger = ledger::read(conn, &schema).await?;
        Ok((schema, ledger))
    }
}
