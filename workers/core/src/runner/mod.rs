//! The steps, wired to a database: status, plan, up, apply-one, record, resolve and the
//! ledger's maintenance. Each reads the ledger, plans with the pure planner and applies with
//! the applier; the CLI and the Lambda workers call these and only format the result.

mod down;
mod progress;
mod reads;
mod record;
mod resolve;
mod up;

use std::sync::OnceLock;

use sqlx::PgConnection;
use tracing::{info, warn};

use crate::config::Settings;
use crate::db::Database;
use crate::error::{Error, MigrationFailure};
use crate::ledger::{self, Ledger, LedgerKind, LedgerSchema};
use crate::lock::MigrationLock;
use crate::migration::MigrationSet;
use crate::plan::{Plan, Scope};

pub use progress::{MigrationResult, Progress, Quiet, UpReport};
pub use reads::{partly_applied, LOCK_WATCH_EVERY};
pub use record::RecordedOutcome;
pub use resolve::{Resolution, Resolved, RESOLVED_PARTLY_APPLIED_SQLSTATE};

/// A database, a migration set and the settings to apply one to the other.
pub struct Migrator {
    pub db: Database,
    pub set: MigrationSet,
    pub settings: Settings,
    /// Located on first use, then kept: the ledger does not move during a process's life.
    ledger_schema: OnceLock<LedgerSchema>,
}

/// A run id for a run that has no execution to name it.
pub fn new_run_id(prefix: &str) -> String {
    use rand::Rng;
    format!(
        "{prefix}-{}-{:06x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        rand::thread_rng().gen_range(0..0xFF_FFFF)
    )
}

/// How the apply loop ended.
struct Applied {
    results: Vec<MigrationResult>,
    /// The migration that failed and stopped the loop (not recorded yet).
    failure: Option<Box<MigrationFailure>>,
    /// The lock's session ended: the loop stopped before the next migration.
    lock_lost: bool,
    /// A build yielded the lock (see [`crate::lock`]) and more migrations were to follow:
    /// the loop stopped after it, and the caller plans again from the ledger as it is now.
    replan: bool,
}

impl Migrator {
    pub fn new(db: Database, set: MigrationSet, settings: Settings) -> Migrator {
        Migrator {
            db,
            set,
            settings,
            ledger_schema: OnceLock::new(),
        }
    }

    /// The schema the ledger lives in (see [`LedgerSchema::locate`]).
    pub async fn ledger_schema(&self, conn: &mut PgConnection) -> Result<LedgerSchema, Error> {
        if let Some(schema) = self.ledger_schema.get() {
            return Ok(schema.clone());
        }
        let schema = LedgerSchema::locate(conn, self.settings.ledger_schema.as_deref()).await?;
        Ok(self.ledger_schema.get_or_init(|| schema).clone())
    }

    pub(crate) async fn read_ledger(
        &self,
        conn: &mut PgConnection,
    ) -> Result<(LedgerSchema, Ledger), Error> {
        let schema = self.ledger_schema(conn).await?;
        let ledger = ledger::read(conn, &schema).await?;
        Ok((schema, ledger))
    }

    /// The same migrator for a command that only reads the target (`status`, `plan`, `verify`
    /// on a scratch database): every session of it waits at most the `lock_timeout` for a
    /// lock, the ledger's reads included, instead of hanging behind a session that locked the
    /// ledger. `0` is no limit, as for the migrations.
    pub fn reading_only(self) -> Migrator {
        let db = self.db.with_session_setting(
            "lock_timeout",
            &crate::config::pg_interval(self.settings.lock_timeout),
        );
        Migrator::new(db, self.set, self.settings)
    }

    pub(crate) async fn lock(
        &self,
        schema: &LedgerSchema,
        progress: &mut dyn Progress,
    ) -> Result<MigrationLock, Error> {
        let conn = self.db.connect().await?;
        MigrationLock::acquire(conn, schema, self.settings.lock_wait, || {
            info!("another runner holds the migration lock; waiting");
            progress.waiting_for_lock()
        })
        .await
    }

    /// Under the lock: installs or upgrades the ledger if needed, then plans again from a
    /// fresh read (another runner may have moved on while this one waited).
    pub(crate) async fn prepare_locked(
        &self,
        conn: &mut PgConnection,
        schema: &LedgerSchema,
        seen: Ledger,
        scope: &Scope,
        run_id: &str,
    ) -> Result<Plan, Error> {
        let ledger = self.ledger_locked(conn, schema, &seen, run_id).await?;
        let mut plan = Plan::scoped(&self.set, &ledger, scope)?;
        // What `plan` refuses, refused here too: batches committed from another file at a
        // version whose file is no longer a batch migration would otherwise be passed over.
        plan.note_partly_applied(&partly_applied(conn, schema, &ledger).await?, &self.set);
        plan.ensure_applicable(self.settings.allow_out_of_order)?;
        Ok(plan)
    }

    /// Under the lock: the ledger, installed or upgraded first if needed.
    pub(super) async fn ledger_locked(
        &self,
        conn: &mut PgConnection,
        schema: &LedgerSchema,
        seen: &Ledger,
        run_id: &str,
    ) -> Result<Ledger, Error> {
        // Under the lock, a session inside a migration's transaction is a runner that lost
        // its lock (killed, interrupted): its commit would void a plan made now.
        crate::lock::wait_for_migration_in_flight(conn, schema, self.settings.lock_wait, |_| {})
            .await?;
        let mut ledger = ledger::read(conn, schema).await?;
        if !ledger.is_current() {
            if seen.kind == LedgerKind::Legacy || ledger.kind == LedgerKind::Legacy {
                info!("adopting the old runner's schema_migrations");
            }
            if ledger.projection_missing {
                warn!("schema_migrations was dropped; rebuilding it from its events");
            }
            ledger::install(conn, schema, run_id).await?;
            ledger = ledger::read(conn, schema).await?;
        }
        Ok(ledger)
    }
}
