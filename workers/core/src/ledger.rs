//! The ledger: an append-only log of events (`schema_migration_events`) and its projection,
//! `schema_migrations`, with the old runner's columns. The fold (event -> projection row)
//! lives once, in SQL (`ledger.sql`), where the database applies it in the same transaction
//! as the event; this module creates the ledger, reads the projection and writes events.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

use crate::error::{Error, SqlError};
use crate::migration::checksum;
use crate::sql::quote_literal;

/// The ledger's own DDL (migration 000), with its schema left open: see [`LedgerSchema::ddl`].
pub const LEDGER_SQL: &str = include_str!("ledger.sql");
pub const LEDGER_VERSION: &str = "000";
/// The ledger's schema version, in the name of its 000 row. Bump it when `ledger.sql` changes
/// what older code can't read; a ledger newer than the code (older code after a rollback) is
/// left alone.
/// v2: `notices` events and column (older code's fold would take a `notices` event for the
/// migration's latest state).
/// v3: `verified` events (older code's CHECK would refuse them, and its fold take them for
/// the migration's state).
/// v4: the down script kept on `applied`/`started` events, and the rollback events
/// (`rollback_started`, `rollback_failed`; older code's CHECK would refuse them).
/// v5: batch migrations' `batch` events and their `progress` (older code's CHECK would
/// refuse them, and its fold take one for the migration's state).
pub const LEDGER_SCHEMA_VERSION: u32 = 5;
pub const LEDGER_NAME: &str = "000_stepmigrate_ledger_v5";

/// The checksum recorded for migration 000: a ledger whose 000 row differs is upgraded.
pub fn ledger_checksum() -> String {
    checksum(LEDGER_SQL.as_bytes())
}

/// The schema the ledger lives in. Every statement of the runner names it, so that nothing a
/// migration does to `search_path`, and no schema named after the login user, redirects or
/// hides the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct LedgerSchema {
    name: String,
    quoted: String,
}

impl From<LedgerSchema> for String {
    fn from(s: LedgerSchema) -> String {
        s.name
    }
}

impl LedgerSchema {
    pub fn new(name: &str) -> LedgerSchema {
        LedgerSchema {
            name: name.to_owned(),
            quoted: format!("\"{}\"", name.replace('"', "\"\"")),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `"schema".object`
    pub fn qualify(&self, object: &str) -> String {
        format!("{}.{object}", self.quoted)
    }

    /// The ledger's DDL for this schema.
    pub fn ddl(&self) -> String {
        LEDGER_SQL
            .replace("@L@", &self.quoted)
            .replace("@N@", &quote_literal(&self.name))
    }

    /// Where the ledger is: `configured`, else the one schema that holds an event-sourced
    /// ledger, else the one that holds the old runner's `schema_migrations` (`public` first),
    /// else `public`. Several candidates and no setting is an error that lists them; so is a
    /// setting that would hide a ledger elsewhere, and another tool's `schema_migrations`
    /// where the ledger would go.
    pub async fn locate(
        conn: &mut PgConnection,
        configured: Option<&str>,
    ) -> Result<LedgerSchema, Error> {
        // The usual case, cheaply (a fresh session pays for each catalog it first reads): one
        // schema holding both tables and no other candidate is a ledger of ours.
        let names: Vec<(String, String)> = sqlx::query_as(
            "SELECT n.nspname::text, c.relname::text
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relname IN ('schema_migrations', 'schema_migration_events')
               AND c.relkind IN ('r', 'p') AND n.nspname NOT LIKE 'pg\\_%'",
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| Error::database("locating the ledger", e))?;
        if let [(a, _), (b, _)] = names.as_slice() {
            if a == b && configured.is_none_or(|c| c == a) {
                return Ok(LedgerSchema::new(a));
            }
        }
        if names.is_empty() {
            return choose_schema(&[], configured).map(|name| LedgerSchema::new(&name));
        }
        let rows: Vec<(String, bool, bool)> = sqlx::query_as(
            "SELECT n.nspname::text,
                    bool_or(c.relname = 'schema_migration_events'
                            AND EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
                                        WHERE p.pronamespace = n.oid AND p.proname = 'schema_migrations_row')),
                    bool_or(c.relname = 'schema_migrations'
                            AND (SELECT count(*) FROM pg_catalog.pg_attribute a
                                 WHERE a.attrelid = c.oid AND NOT a.attisdropped
                                   AND a.attname IN ('version', 'name', 'applied_at')) = 3)
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relname IN ('schema_migrations', 'schema_migration_events')
               AND c.relkind IN ('r', 'p') AND n.nspname NOT LIKE 'pg\\_%'
             GROUP BY n.nspname ORDER BY n.nspname",
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| Error::database("locating the ledger", e))?;
        let found: Vec<Found> = rows
            .into_iter()
            .map(|(schema, ours, old_runner)| Found {
                schema,
                ours,
                old_runner,
            })
            .collect();
        choose_schema(&found, configured).map(|name| LedgerSchema::new(&name))
    }
}

/// A schema holding a table named like the ledger's.
#[derive(Debug, Clone)]
struct Found {
    schema: String,
    /// A ledger of ours: the events and the fold's function (a table that merely has the
    /// name does not count).
    ours: bool,
    /// A `schema_migrations` with the old runner's columns.
    old_runner: bool,
}

/// The pure choice behind [`LedgerSchema::locate`].
fn choose_schema(found: &[Found], configured: Option<&str>) -> Result<String, Error> {
    let config = |reason: String| Error::Config {
        variable: crate::config::ENV_LEDGER_SCHEMA.to_owned(),
        reason,
    };
    let ours: Vec<&str> = found
        .iter()
        .filter(|f| f.ours)
        .map(|f| f.schema.as_str())
        .collect();
    let chosen = match configured {
        Some(name) => {
            if !ours.is_empty() && !ours.contains(&name) {
                return Err(config(format!(
                    "`{name}` holds no ledger, but {} does: a new ledger there would make every migration pending again. Unset it to use that one, or move the ledger first",
                    ours.join(", ")
                )));
            }
            // The old runner's table elsewhere is this database's history as much.
            let old_elsewhere: Vec<&str> = found
                .iter()
                .filter(|f| f.old_runner && f.schema != name)
                .map(|f| f.schema.as_str())
                .collect();
            let old_here = found.iter().any(|f| f.old_runner && f.schema == name);
            if ours.is_empty() && !old_here && !old_elsewhere.is_empty() {
                return Err(config(format!(
                    "`{name}` holds no ledger, but the old runner's schema_migrations in {} does: a new ledger in `{name}` would apply every migration it recorded again. Unset it to adopt that table where it is, or set it to {}",
                    old_elsewhere.join(", "),
                    old_elsewhere.join(" or ")
                )));
            }
            name.to_owned()
        }
        None => {
            let old: Vec<&str> = found
                .iter()
                .filter(|f| f.old_runner)
                .map(|f| f.schema.as_str())
                .collect();
            match (ours.as_slice(), old.as_slice()) {
                ([one], _) => (*one).to_owned(),
                ([], []) => "public".to_owned(),
                ([], [one]) => (*one).to_owned(),
                ([], many) if many.contains(&"public") => "public".to_owned(),
                (several, _) if !several.is_empty() => {
                    return Err(config(format!(
                        "not set, and ledgers exist in several schemas ({}): set it to the schema whose ledger this database's migrations are recorded in",
                        several.join(", ")
                    )))
                }
                (_, several) => {
                    return Err(config(format!(
                        "not set, and the old runner's schema_migrations exists in several schemas ({}): set it to the one to adopt",
                        several.join(", ")
                    )))
                }
            }
        }
    };
    // Where the ledger goes, another tool's table of the same name would be taken for it.
    if let Some(f) = found.iter().find(|f| f.schema == chosen) {
        if !f.ours && !f.old_runner {
            return Err(config(format!(
                "{chosen}.schema_migrations exists but is neither a stepmigrate ledger nor the old runner's table (another tool's?): set {} to another schema for stepmigrate's ledger",
                crate::config::ENV_LEDGER_SCHEMA
            )));
        }
    }
    Ok(chosen)
}

/// What happened to a migration, as the event log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Applied, with its ledger entry in the same transaction.
    Applied,
    /// Failed; a transactional migration rolled back, a non-transactional one is dirty.
    Failed,
    /// A non-transactional migration began: it stays dirty until an outcome follows.
    Started,
    /// An operator checked a dirty migration by hand and found it applied.
    ResolvedApplied,
    /// An operator checked a dirty migration by hand and found it not applied.
    ResolvedNotApplied,
    /// Its `schema_migrations` row was deleted by hand (to re-run it).
    Deleted,
    /// What PostgreSQL said while a transactional migration ran, after its `applied` event.
    Notices,
    /// `verify --in-transaction-only` ran it in a transaction that was rolled back (its
    /// outcome in `error` when it failed). Not a state: the fold skips it.
    Verified,
    /// Its down script ran: the migration is pending again.
    RolledBack,
    /// A down script outside a transaction began: dirty until an outcome follows.
    RollbackStarted,
    /// A down script failed: dirty if it ran outside a transaction, else the migration is
    /// still applied and the fold skips it.
    RollbackFailed,
    /// One batch of a batch migration committed, with its progress. Not a state: the
    /// migration stays pending until its `applied` event.
    Batch,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Applied => "applied",
            EventKind::Failed => "failed",
            EventKind::Started => "started",
            EventKind::ResolvedApplied => "resolved_applied",
            EventKind::ResolvedNotApplied => "resolved_not_applied",
            EventKind::Deleted => "deleted",
            EventKind::Notices => "notices",
            EventKind::Verified => "verified",
            EventKind::RolledBack => "rolled_back",
            EventKind::RollbackStarted => "rollback_started",
            EventKind::RollbackFailed => "rollback_failed",
            EventKind::Batch => "batch",
        }
    }
}

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub run_id: &'a str,
    pub version: &'a str,
    pub name: &'a str,
    pub kind: EventKind,
    pub checksum: Option<&'a str>,
    /// SQL expression for the duration, so a migration's own transaction can measure itself.
    pub execution_time_ms: Option<String>,
    pub dirty: bool,
    pub error: Option<&'a SqlError>,
    /// NOTICEs and WARNINGs the migration raised.
    pub notices: &'a [String],
    /// The down script kept with an `applied` or `started` event.
    pub down: Option<KeptDown<'a>>,
    /// A batch migration's progress, on its `batch` and `applied` events.
    pub progress: Option<BatchProgress>,
}

/// How far a batch migration has got, as its events record it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct BatchProgress {
    /// Batches committed so far, across runs.
    pub batches: u64,
    /// Rows those batches changed.
    pub rows: u64,
    /// Rows the latest batch changed.
    #[serde(default)]
    pub batch_rows: u64,
}

/// A batch migration with batches committed since it was last made pending from scratch and
/// no `applied` event after them (failed, or interrupted: pending): partly applied. Whatever
/// its state says, the rows those batches changed stay changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartlyApplied {
    pub version: String,
    pub name: String,
    /// The migration's checksum its batches ran with.
    pub checksum: Option<String>,
    pub progress: BatchProgress,
    /// Its latest `batch` event: where it stands in the order things ran.
    pub event_id: i64,
    /// The checksum of the file its batches hold to: they are going on, or were interrupted
    /// (no failure since), so only that file may resume them. None after a failure (the
    /// file may be the fix).
    pub holds_to: Option<String>,
}

/// What a rollback needs of a migration after its file is gone: its down script, and the
/// migrations it requires (which must not be reverted from under it).
#[derive(Debug, Clone, Copy)]
pub struct KeptDown<'a> {
    pub sql: &'a str,
    pub checksum: &'a str,
    pub requires: &'a [crate::migration::Version],
}

impl NewEvent<'_> {
    /// The `INSERT` statement, with values inlined so that it can share one round trip with
    /// the migration it records. Only the runner's own values are inlined (versions, names,
    /// checksums, run ids; `standard_conforming_strings` is checked to be on); a database's
    /// error text is bound as a parameter instead (see [`record_failure`]).
    /// A statement that fails (and so rolls the transaction back) unless the projection shows
    /// what this event (`applied`, `rolled_back`) made of the migration: a migration that
    /// dropped the ledger's trigger or its language (`DROP EXTENSION plpgsql CASCADE`) would
    /// otherwise commit with its event and no row, and be run again. Plain SQL: a value cast
    /// that fails carries the message (a function may be what is gone); the subquery keeps
    /// the cast from being folded at planning time.
    pub fn projection_check_sql(&self, schema: &LedgerSchema) -> Option<String> {
        let applied = match self.kind {
            EventKind::Applied => true,
            EventKind::RolledBack => false,
            _ => return None,
        };
        let message = format!(
            "stepmigrate: the ledger did not record {} {}: the migration changed the ledger's own objects (its trigger, its functions, their language); everything it did is rolled back",
            self.name,
            if applied { "as applied" } else { "as rolled back" }
        );
        Some(format!(
            "SELECT (SELECT {} WHERE {}EXISTS (SELECT 1 FROM {} WHERE version = {} AND success))::int AS stepmigrate_recorded",
            quote_literal(&message),
            if applied { "NOT " } else { "" },
            schema.qualify("schema_migrations"),
            quote_literal(self.version),
        ))
    }

    pub fn insert_sql(&self, schema: &LedgerSchema) -> String {
        let opt = |v: Option<&str>| v.map_or_else(|| "NULL".to_owned(), quote_literal);
        format!(
            "INSERT INTO {} (run_id, version, name, kind, checksum, execution_time_ms, dirty, notices, down_sql, down_checksum, down_requires, progress) VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
            schema.qualify("schema_migration_events"),
            quote_literal(self.run_id),
            quote_literal(self.version),
            quote_literal(self.name),
            quote_literal(self.kind.as_str()),
            opt(self.checksum),
            self.execution_time_ms.as_deref().unwrap_or("NULL"),
            self.dirty,
            notices_literal(self.notices),
            opt(self.down.map(|d| d.sql)),
            opt(self.down.map(|d| d.checksum)),
            match self.down {
                Some(d) if !d.requires.is_empty() => format!(
                    "ARRAY[{}]::text[]",
                    d.requires
                        .iter()
                        .map(|v| quote_literal(v.as_str()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => "NULL".to_owned(),
            },
            match &self.progress {
                Some(p) => format!(
                    "{}::jsonb",
                    quote_literal(&serde_json::to_string(p).unwrap_or_default())
                ),
                None => "NULL".to_owned(),
            },
        )
    }
}

/// The notices as a `jsonb` literal, or NULL when there are none.
fn notices_literal(notices: &[String]) -> String {
    if notices.is_empty() {
        return "NULL".to_owned();
    }
    format!(
        "{}::jsonb",
        quote_literal(&serde_json::to_string(notices).unwrap_or_default())
    )
}

/// The events of `version` (an SQL expression) since it was last made pending from scratch
/// (applied and deleted, rolled back, resolved), as the `WHERE` condition on `{alias}`: a
/// batch migration's totals count from there. `failed` events leave them as they were, and
/// so does the deletion of a row that was not applied (the README's "delete its row to run it
/// again" on a failed batch migration): its committed batches stay changed, so it stays
/// partly applied and its next run resumes after them. `ledger.sql`'s revert guard reads the
/// same "since" (it cannot call this: a ledger not yet upgraded is read too).
pub(crate) fn since_reset_sql(events: &str, alias: &str, version: &str) -> String {
    format!(
        "{alias}.version = {version} AND {alias}.id > (SELECT coalesce(max(r.id), 0) FROM {events} r
             WHERE r.version = {version} AND r.kind NOT IN ('batch', 'failed', 'notices', 'verified', 'rollback_started', 'rollback_failed')
               AND (r.kind <> 'deleted' OR (SELECT p.kind IN ('applied', 'resolved_applied') FROM {events} p
                    WHERE p.version = r.version AND p.id < r.id AND p.kind NOT IN ('batch', 'notices', 'verified')
                      AND NOT (p.kind = 'rollback_failed' AND NOT p.dirty)
                    ORDER BY p.id DESC LIMIT 1) IS NOT FALSE))"
    )
}

/// The progress of `version`'s latest committed batch since [`since_reset_sql`], as a scalar
/// subquery (NULL when none): a batch migration's totals so far.
pub(crate) fn batch_progress_sql(events: &str, version: &str) -> String {
    format!(
        "(SELECT b.progress FROM {events} b WHERE b.kind = 'batch' AND {} ORDER BY b.id DESC LIMIT 1)",
        since_reset_sql(events, "b", version)
    )
}

/// The SQLSTATE the runner records when a migration's transaction did not survive to its
/// ledger event.
pub const LOST_TRANSACTION_SQLSTATE: &str = "SM005";

/// A migration changed the ledger's own objects, so its event left no row: rolled back.
pub const LEDGER_BROKEN_SQLSTATE: &str = "SM016";

/// The words of [`NewEvent::projection_check_sql`]'s failure, out of the cast error that
/// carries them (`invalid input syntax for type integer: "stepmigrate: ..."`, SQLSTATE
/// 22P02); `None` for any other error.
pub fn ledger_broken(sqlstate: Option<&str>, message: &str) -> Option<String> {
    if sqlstate != Some("22P02") {
        return None;
    }
    message
        .split_once("\"stepmigrate: ")
        .map(|(_, rest)| rest.trim_end_matches('"').to_owned())
}
pub const LOST_TRANSACTION_MESSAGE: &str = "the migration's transaction ended before its ledger entry (transaction control inside the migration, e.g. a COMMIT the validator did not see): part of it may be committed";
pub const ROLLED_BACK_TRANSACTION_MESSAGE: &str = "the migration's transaction was rolled back inside it (a ROLLBACK the validator did not see): nothing of it remains";

/// Records a failure as an event (and a `success = false` row) in its own transaction, unless
/// the migration's row says it is applied: a late failure record (a retry of the record step,
/// a runner that lost a race) never overwrites a success. The error is bound, never inlined.
/// A failed batch migration's event carries the totals its committed batches reached.
pub async fn record_failure(
    conn: &mut PgConnection,
    schema: &LedgerSchema,
    event: &NewEvent<'_>,
) -> Result<(), Error> {
    let error = event
        .error
        .map(|e| serde_json::to_value(e).unwrap_or_default());
    // A failed down is recorded while the migration is still there to roll back (applied, or
    // dirty from this very down); a failed up while it is not applied.
    let events = schema.qualify("schema_migration_events");
    // A down of a partly applied batch migration fails while it has batches committed.
    let condition = if event.kind == EventKind::RollbackFailed {
        format!(
            "(EXISTS (SELECT 1 FROM {{}} WHERE version = $2 AND (success OR dirty)) OR EXISTS (SELECT 1 FROM {events} b WHERE b.kind = 'batch' AND {}))",
            since_reset_sql(&events, "b", "$2")
        )
    } else {
        "NOT EXISTS (SELECT 1 FROM {} WHERE version = $2 AND success)".to_owned()
    }
    .replace("{}", &schema.qualify("schema_migrations"));
    let progress = if event.kind == EventKind::Failed {
        batch_progress_sql(&events, "$2")
    } else {
        "NULL".to_owned()
    };
    let sql = format!(
        "INSERT INTO {events} (run_id, version, name, kind, checksum, execution_time_ms, dirty, error, notices, progress)
         SELECT $1, $2, $3, $4, coalesce($5, (SELECT checksum FROM {} WHERE version = $2)), NULL, $6, $7, $8, {progress}
         WHERE {condition}",
        schema.qualify("schema_migrations"),
    );
    sqlx::query(&sql)
        .bind(event.run_id)
        .bind(event.version)
        .bind(event.name)
        .bind(event.kind.as_str())
        .bind(event.checksum)
        .bind(event.dirty)
        .bind(error)
        .bind((!event.notices.is_empty()).then(|| serde_json::json!(event.notices)))
        .execute(&mut *conn)
        .await
        .map_err(|e| Error::database(format!("recording the failure of {}", event.name), e))?;
    Ok(())
}

/// The failure run `run_id` recorded for `version`, if nothing changed the migration since:
/// its error, whether it left the migration dirty, and its notices. Events that change no
/// state (`verified`, `notices`, `batch`) and other runs' failures may follow it.
pub async fn run_failure(
    conn: &mut PgConnection,
    schema: &LedgerSchema,
    version: &str,
    run_id: &str,
) -> Result<Option<(SqlError, bool, Vec<String>)>, Error> {
    let row: Option<(Option<serde_json::Value>, bool, Option<serde_json::Value>)> =
        sqlx::query_as(&format!(
            "SELECT error, dirty, notices FROM (
                 SELECT * FROM {} WHERE version = $1
                   AND kind NOT IN ('verified', 'notices', 'batch')
                   AND (kind NOT IN ('failed', 'rollback_failed') OR run_id = $2)
                 ORDER BY id DESC LIMIT 1) last
             WHERE last.kind = 'failed' AND last.run_id = $2",
            schema.qualify("schema_migration_events")
        ))
        .bind(version)
        .bind(run_id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| Error::database(format!("reading the failure of {version}"), e))?;
    Ok(row.map(|(error, dirty, notices)| {
        (
            error
                .and_then(|e| serde_json::from_value(e).ok())
                .unwrap_or_default(),
            dirty,
            notices
                .and_then(|n| serde_json::from_value(n).ok())
                .unwrap_or_default(),
        )
    }))
}

/// One row of `schema_migrations`. `version` is the text as stored (see
/// [`LedgerRow::parsed_version`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct LedgerRow {
    pub version: String,
    pub name: String,
    pub applied_at: Option<DateTime<Utc>>,
    pub checksum: Option<String>,
    pub execution_time_ms: Option<i64>,
    pub success: bool,
    pub dirty: bool,
    pub run_id: Option<String>,
    pub error: Option<String>,
    /// The event that left this row: the order migrations actually ran in.
    #[serde(skip)]
    pub event_id: Option<i64>,
}

/// Which ledger the database has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    /// No `schema_migrations` yet.
    Missing,
    /// The old runner's `schema_migrations`, not adopted yet.
    Legacy,
    /// An event-sourced ledger (maybe of an older stepmigrate; see [`Ledger::is_current`]).
    EventSourced,
}

/// The ledger as read: its kind and the projection's rows (migration 000 included).
#[derive(Debug, Clone, Serialize)]
pub struct Ledger {
    pub kind: LedgerKind,
    pub rows: Vec<LedgerRow>,
    /// The events are there but `schema_migrations` was dropped: the rows are the fold.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub projection_missing: bool,
    /// Versions that were applied once and made pending again (deleted by hand, resolved not
    /// applied, rolled back): running one again is a re-run, not an out-of-order arrival.
    #[serde(skip)]
    pub made_pending: std::collections::BTreeSet<String>,
    /// Dirty versions whose statements another session runs right now (it holds their build
    /// lock: see [`crate::lock::builds_in_progress`]): still changing, not to be resolved.
    #[serde(skip)]
    pub in_progress: std::collections::BTreeSet<String>,
}

impl Ledger {
    pub fn empty() -> Ledger {
        Ledger {
            kind: LedgerKind::Missing,
            rows: Vec::new(),
            projection_missing: false,
            made_pending: Default::default(),
            in_progress: Default::default(),
        }
    }

    /// Whether the ledger exists and its DDL is this version's: nothing to create or upgrade.
    pub fn is_current(&self) -> bool {
        if self.kind != LedgerKind::EventSourced || self.projection_missing {
            return false;
        }
        let Some(row) = self
            .rows
            .iter()
            .find(|r| r.version == LEDGER_VERSION && r.success)
        else {
            return false;
        };
        let version = row
            .name
            .rsplit_once("_v")
            .and_then(|(_, v)| v.parse::<u32>().ok())
            .unwrap_or(0);
        version > LEDGER_SCHEMA_VERSION
            || (version == LEDGER_SCHEMA_VERSION
                && row.checksum.as_deref() == Some(ledger_checksum().as_str()))
    }

    /// The rows of user migrations (000 excluded).
    pub fn migration_rows(&self) -> impl Iterator<Item = &LedgerRow> {
        self.rows.iter().filter(|r| r.version != LEDGER_VERSION)
    }
}

/// Reads the ledger without changing anything: read-only commands never create it. A
/// projection dropped by hand is read from the fold of the events (the next run that takes
/// the lock rebuilds it). Refuses a session whose `standard_conforming_strings` is off: the
/// runner's reading of the migrations' strings would not be PostgreSQL's.
pub async fn read(conn: &mut PgConnection, schema: &LedgerSchema) -> Result<Ledger, Error> {
    let (has_projection, has_events, conforming): (bool, bool, String) = sqlx::query_as(&format!(
        "SELECT to_regclass({}) IS NOT NULL, to_regclass({}) IS NOT NULL, current_setting('standard_conforming_strings')",
        quote_literal(&schema.qualify("schema_migrations")),
        quote_literal(&schema.qualify("schema_migration_events")),
    ))
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| Error::database("reading the ledger", e))?;
    if conforming != "on" {
        return Err(Error::Config {
            variable: "standard_conforming_strings".into(),
            reason: "is off for this database or role: backslashes in strings would then be read otherwise than the runner reads them, so it refuses to run. Turn it back on (the default since PostgreSQL 9.1): ALTER DATABASE ... RESET standard_conforming_strings".into(),
        });
    }
    let kind = match (has_projection, has_events) {
        (false, false) => return Ok(Ledger::empty()),
        (true, false) => LedgerKind::Legacy,
        (_, true) => LedgerKind::EventSourced,
    };
    let columns = "version::text AS version, name::text AS name, applied_at, checksum::text AS checksum, execution_time_ms, success, dirty, run_id, error, event_id";
    let query = match (kind, has_projection) {
        (LedgerKind::EventSourced, true) => format!(
            "SELECT {columns} FROM {}",
            schema.qualify("schema_migrations")
        ),
        (LedgerKind::EventSourced, false) => format!(
            "SELECT {columns} FROM {}",
            schema.qualify("schema_migrations_folded")
        ),
        // One row per version: a table with a key of its own may hold one per try, and a
        // success among them means the migration was applied (then the newest).
        _ => format!(
            "SELECT DISTINCT ON (version) version::text AS version, coalesce(name, version)::text AS name, applied_at::timestamptz AS applied_at, checksum::text AS checksum, execution_time_ms::bigint AS execution_time_ms, coalesce(success, true) AS success, false AS dirty, NULL::text AS run_id, NULL::text AS error, NULL::bigint AS event_id FROM {}
             ORDER BY version, coalesce(success, true) DESC, applied_at DESC NULLS LAST",
            schema.qualify("schema_migrations")
        ),
    };
    let rows = sqlx::query_as::<_, LedgerRow>(&query)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| Error::database("reading schema_migrations", e))?;
    let made_pending = if kind == LedgerKind::EventSourced {
        sqlx::query_scalar::<_, String>(&format!(
            "SELECT DISTINCT version::text FROM {} WHERE kind IN ('deleted', 'resolved_not_applied', 'rolled_back')",
            schema.qualify("schema_migration_events")
        ))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| Error::database("reading schema_migration_events", e))?
        .into_iter()
        .collect()
    } else {
        Default::default()
    };
    let dirty: Vec<String> = rows
        .iter()
        .filter(|r| r.dirty)
        .map(|r| r.version.clone())
        .collect();
    let in_progress = crate::lock::builds_in_progress(conn, schema, &dirty).await?;
    Ok(Ledger {
        kind,
        rows,
        projection_missing: kind == LedgerKind::EventSourced && !has_projection,
        made_pending,
        in_progress,
    })
}

/// The down script kept in the ledger for a migration as it was applied: `sql` is `None`
/// when it had no down file then (or was applied before the ledger kept them).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordedDown {
    pub sql: Option<String>,
    pub checksum: Option<String>,
    /// The migration's `requires` as it was applied.
    pub requires: Vec<String>,
}

/// The recorded down script of each applied version: the one on its latest `applied` or
/// `started` event.
pub async fn recorded_downs(
    conn: &mut PgConnection,
    schema: &LedgerSchema,
    versions: &[String],
) -> Result<std::collections::HashMap<String, RecordedDown>, Error> {
    if versions.is_empty() {
        return Ok(Default::default());
    }
    #[derive(sqlx::FromRow)]
    struct Row {
        version: String,
        down_sql: Option<String>,
        down_checksum: Option<String>,
        down_requires: Option<Vec<String>>,
    }
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT DISTINCT ON (version) version::text AS version, down_sql, down_checksum::text AS down_checksum, down_requires FROM {}
         WHERE version = ANY($1) AND kind IN ('applied', 'started') ORDER BY version, id DESC",
        schema.qualify("schema_migration_events")
    ))
    .bind(versions)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::database("reading the recorded down scripts", e))?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.version,
                RecordedDown {
                    sql: r.down_sql,
                    checksum: r.down_checksum,
                    requires: r.down_requires.unwrap_or_default(),
                },
            )
        })
        .collect())
}

/// Creates the ledger, adopts the old runner's table or upgrades an older ledger, in one
/// transaction. Call it holding the migration lock.
pub async fn install(
    conn: &mut PgConnection,
    schema: &LedgerSchema,
    run_id: &str,
) -> Result<(), Error> {
    let marker = NewEvent {
        run_id,
        version: LEDGER_VERSION,
        name: LEDGER_NAME,
        kind: EventKind::Applied,
        checksum: Some(&ledger_checksum()),
        execution_time_ms: None,
        dirty: false,
        error: None,
        notices: &[],
        down: None,
        progress: None,
    }
    .insert_sql(schema);
    ensure_no_other_ledger(conn, schema).await?;
    let script = format!("{}\n;{marker};\nCOMMIT;", schema.ddl());
    if let Err(e) = sqlx::raw_sql(&script).execute(&mut *conn).await {
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
        // The old runner's table holding a version more than once (a key of its own, one
        // row per try): its unique index cannot be made. Say which, and what to do.
        if let sqlx::Error::Database(db) = &e {
            if db.code().as_deref() == Some("23505") {
                let table = schema.qualify("schema_migrations");
                let twice: Option<String> = sqlx::query_scalar(&format!(
                    "SELECT string_agg(version, ', ' ORDER BY version) FROM (SELECT version FROM {table} GROUP BY version HAVING count(*) > 1) d"
                ))
                .fetch_one(&mut *conn)
                .await
                .ok()
                .flatten();
                if let Some(twice) = twice {
                    return Err(Error::InvalidInput(format!(
                        "{table} holds version(s) {twice} more than once (one row per try?): adopting it needs one row per version; delete the extra rows by hand (those of the failed tries, `success` false, or the older ones), then run again; nothing was changed"
                    )));
                }
            }
        }
        return Err(Error::database(
            "creating the ledger (schema_migrations)",
            e,
        ));
    }
    Ok(())
}

/// Begins the install's transaction: two first runs set to different schemas hold different
/// migration locks, so each would make a ledger of its own and apply every migration again.
/// One lock for the whole database, and under it: a new ledger only where no other schema
/// holds one (what [`LedgerSchema::locate`] refuses, checked again where it cannot race).
async fn ensure_no_other_ledger(
    conn: &mut PgConnection,
    schema: &LedgerSchema,
) -> Result<(), Error> {
    let context = "creating the ledger (schema_migrations)";
    sqlx::raw_sql(&format!(
        "BEGIN; SELECT pg_catalog.pg_advisory_xact_lock({INSTALL_LOCK_KEY})"
    ))
    .execute(&mut *conn)
    .await
    .map_err(|e| Error::database(context, e))?;
    let others: Result<Vec<String>, Error> = sqlx::query_scalar(
        "SELECT n.nspname::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relname = 'schema_migration_events' AND c.relkind IN ('r', 'p')
           AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> $1
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class o JOIN pg_catalog.pg_namespace on_ ON on_.oid = o.relnamespace
                           WHERE on_.nspname = $1 AND o.relname = 'schema_migration_events')
         ORDER BY 1",
    )
    .bind(schema.name())
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::database(context, e));
    match others {
        Ok(others) if others.is_empty() => Ok(()),
        result => {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
            let others = result?;
            Err(Error::Config {
                variable: crate::config::ENV_LEDGER_SCHEMA.to_owned(),
                reason: format!(
                    "`{}` holds no ledger, but {} does (made by a run at the same time): a new ledger there would make every migration pending again. Unset it to use that one, or move the ledger first",
                    schema.name(),
                    others.join(", ")
                ),
            })
        }
    }
}

/// The advisory lock of a ledger's creation, whatever its schema ("stepmigrate" in ASCII).
const INSTALL_LOCK_KEY: i64 = 0x7374_6570_6d69_6772;

/// Whether the event `event_id` is a down that began while its migration was not applied
/// (a partly applied batch migration: its down reverts the committed batches). Such a
/// migration left dirty by its down was never applied, so "resolved applied" would be false.
pub async fn down_of_an_unapplied_migration(
    conn: &mut PgConnection,
    schema: &LedgerSchema,
    event_id: i64,
) -> Result<bool, Error> {
    let events = schema.qualify("schema_migration_events");
    let unapplied: Option<bool> = sqlx::query_scalar(&format!(
        "SELECT e.kind IN ('rollback_started', 'rollback_failed')
                AND (SELECT p.kind IN ('applied', 'resolved_applied') FROM {events} p
                     WHERE p.version = e.version AND p.id < e.id
                       AND p.kind IN ('applied', 'resolved_applied', 'failed', 'started', 'rolled_back', 'resolved_not_applied', 'deleted')
                     ORDER BY p.id DESC LIMIT 1) IS NOT TRUE
         FROM {events} e WHERE e.id = $1"
    ))
    .bind(event_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| Error::database("reading what a dirty migration was before its down", e))?;
    Ok(unapplied.unwrap_or(false))
}

/// Appends one event in its own transaction (the projection follows in it).
pub async fn append(
    conn: &mut PgConnection,
    schema: &LedgerSchema,
    event: &NewEvent<'_>,
) -> Result<(), Error> {
    sqlx::raw_sql(&event.insert_sql(schema))
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            Error::database(
                format!(
                    "recording the {} event of {}",
                    event.kind.as_str(),
                    event.name
                ),
                e,
            )
        })?;
    Ok(())
}

/// Appends `events` in one transaction of their own, all or none, with every value bound (a
/// database's error text among them): for events that no migration's transaction carries
/// (`verify --in-transaction-only`'s `verified` events).
pub async fn append_all(
    conn: &mut PgConnection,
    schema: &LedgerSchema,
    events: &[NewEvent<'_>],
) -> Result<(), Error> {
    let Some(first) = events.first() else {
        return Ok(());
    };
    let table = schema.qualify("schema_migration_events");
    let record = async {
        sqlx::raw_sql("BEGIN").execute(&mut *conn).await?;
        for event in events {
            // The duration is the runner's own SQL expression (a number here), never input.
            let sql = format!(
                "INSERT INTO {table} (run_id, version, name, kind, checksum, execution_time_ms, dirty, error, notices)
                 VALUES ($1, $2, $3, $4, $5, {}, $6, $7, $8)",
                event.execution_time_ms.as_deref().unwrap_or("NULL")
            );
            sqlx::query(&sql)
                .bind(event.run_id)
                .bind(event.version)
                .bind(event.name)
                .bind(event.kind.as_str())
                .bind(event.checksum)
                .bind(event.dirty)
                .bind(event.error.map(|e| serde_json::to_value(e).unwrap_or_default()))
                .bind((!event.notices.is_empty()).then(|| serde_json::json!(event.notices)))
                .execute(&mut *conn)
                .await?;
        }
        sqlx::raw_sql("COMMIT").execute(&mut *conn).await?;
        Ok::<(), sqlx::Error>(())
    }
    .await;
    if let Err(e) = record {
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
        return Err(Error::database(
            format!("recording the {} events", first.kind.as_str()),
            e,
        ));
    }
    Ok(())
}

/// Differences between the projection and the fold of the events, one line each.
pub async fn check(conn: &mut PgConnection, schema: &LedgerSchema) -> Result<Vec<String>, Error> {
    let sql = format!(
        "SELECT coalesce(f.version, m.version)::text,
                CASE WHEN f.version IS NULL THEN 'has a row that no event explains'
                     WHEN m.version IS NULL THEN 'has no row, but its events leave one'
                     ELSE 'has a row that differs from its events' END,
                CASE WHEN f.version IS NOT NULL THEN row_to_json(f)::text END,
                CASE WHEN m.version IS NOT NULL THEN row_to_json(m)::text END
         FROM {folded} f
         FULL JOIN (SELECT version, name, applied_at, checksum, execution_time_ms, success, dirty, run_id, error, event_id
                    FROM {projection}) m ON m.version = f.version
         WHERE (f.version, f.name, f.applied_at, f.checksum, f.execution_time_ms, f.success, f.dirty, f.run_id, f.error, f.event_id)
               IS DISTINCT FROM
               (m.version, m.name, m.applied_at, m.checksum, m.execution_time_ms, m.success, m.dirty, m.run_id, m.error, m.event_id)
         ORDER BY 1",
        folded = schema.qualify("schema_migrations_folded"),
        projection = schema.qualify("schema_migrations"),
    );
    let rows: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(&sql)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| Error::database("checking the ledger", e))?;
    Ok(rows
        .into_iter()
        .map(|(version, what, expected, actual)| {
            format!(
                "  version {version} {what}: events say {}, schema_migrations has {}",
                expected.unwrap_or_else(|| "no row".into()),
                actual.unwrap_or_else(|| "no row".into())
            )
        })
        .collect())
}

/// Rewrites the projection from the events. Call it holding the migration lock.
pub async fn rebuild(conn: &mut PgConnection, schema: &LedgerSchema) -> Result<u64, Error> {
    let projection = schema.qualify("schema_migrations");
    let script = format!(
        "BEGIN;
        SET LOCAL stepmigrate.rebuilding = 'on';
        DELETE FROM {projection};
        INSERT INTO {projection} (version, name, applied_at, checksum, execution_time_ms, success, dirty, run_id, error, event_id)
        SELECT * FROM {};
        COMMIT;",
        schema.qualify("schema_migrations_folded")
    );
    if let Err(e) = sqlx::raw_sql(&script).execute(&mut *conn).await {
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
        return Err(Error::database("rebuilding schema_migrations", e));
    }
    let (rows,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {projection}"))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| Error::database("rebuilding schema_migrations", e))?;
    Ok(rows as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(name: &str, checksum: &str) -> Ledger {
        Ledger {
            kind: LedgerKind::EventSourced,
            rows: vec![LedgerRow {
                version: "000".into(),
                name: name.into(),
                applied_at: None,
                checksum: Some(checksum.into()),
                execution_time_ms: None,
                success: true,
                dirty: false,
                run_id: None,
                error: None,
                event_id: None,
            }],
            projection_missing: false,
            made_pending: Default::default(),
            in_progress: Default::default(),
        }
    }

    #[test]
    fn a_newer_ledger_is_left_alone_an_older_one_upgraded() {
        assert!(marker(LEDGER_NAME, &ledger_checksum()).is_current());
        assert!(
            !marker(LEDGER_NAME, "edited").is_current(),
            "same version, other DDL: reinstall"
        );
        assert!(
            marker("000_stepmigrate_ledger_v9", "whatever").is_current(),
            "newer code's ledger"
        );
        assert!(!marker("000_stepmigrate_ledger", "old").is_current());
        assert!(!Ledger::empty().is_current());
    }

    #[test]
    fn event_insert_quotes_every_value_and_names_the_schema() {
        let sql = NewEvent {
            run_id: "run'1",
            version: "004",
            name: "004_x",
            kind: EventKind::Failed,
            checksum: Some("ab"),
            execution_time_ms: Some("12".into()),
            dirty: true,
            error: None,
            notices: &[],
            down: None,
            progress: None,
        }
        .insert_sql(&LedgerSchema::new("my \"ledger\""));
        assert!(
            sql.starts_with("INSERT INTO \"my \"\"ledger\"\"\".schema_migration_events ("),
            "{sql}"
        );
        assert!(
            sql.contains(
                "'run''1', '004', '004_x', 'failed', 'ab', 12, true, NULL, NULL, NULL, NULL, NULL)"
            ),
            "{sql}"
        );
    }

    #[test]
    fn the_ddl_names_its_schema_everywhere() {
        let ddl = LedgerSchema::new("ledger").ddl();
        assert!(!ddl.contains("@L@") && !ddl.contains("@N@"));
        // Every mention of a ledger object outside comments and messages is qualified.
        for line in ddl.lines().filter(|l| !l.trim_start().starts_with("--")) {
            for object in ["schema_migrations", "schema_migration_events"] {
                for (at, _) in line.match_indices(object) {
                    let before = &line[..at];
                    let qualified = before.ends_with("\"ledger\".")
                        || before.ends_with("%I.")
                        || before.ends_with('\'')
                        || before.ends_with("TRIGGER ")
                        || before.ends_with("EXISTS ")
                        || before.ends_with("INDEX ")
                        || line[at..].starts_with(&format!("{object}_"))
                        || line.contains("RAISE")
                        || line.contains("HINT");
                    assert!(qualified, "unqualified `{object}` in: {line}");
                }
            }
        }
    }

    #[test]
    fn the_ledger_is_where_it_already_is() {
        let f = |v: &[(&str, bool, bool)], configured: Option<&str>| {
            let found: Vec<Found> = v
                .iter()
                .map(|(n, ours, old)| Found {
                    schema: n.to_string(),
                    ours: *ours,
                    old_runner: *old,
                })
                .collect();
            choose_schema(&found, configured)
        };
        assert_eq!(f(&[], None).unwrap(), "public");
        assert_eq!(f(&[("app", false, true)], None).unwrap(), "app");
        assert_eq!(
            f(&[("postgres", false, true), ("public", false, true)], None).unwrap(),
            "public"
        );
        assert_eq!(
            f(&[("ledger", true, true), ("public", false, true)], None).unwrap(),
            "ledger"
        );
        let err = f(&[("a", true, true), ("b", true, true)], None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("STEPMIGRATE_LEDGER_SCHEMA") && err.contains("a, b"),
            "{err}"
        );
        assert!(f(&[("a", false, true), ("b", false, true)], None).is_err());
        // Another tool's table where the ledger would go.
        let err = f(&[("public", false, false)], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("another tool"), "{err}");
        assert_eq!(
            f(&[("public", false, false)], Some("ledger")).unwrap(),
            "ledger"
        );
        // A setting that would hide the ledger.
        let err = f(&[("public", true, true)], Some("newsch"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no ledger, but public does"), "{err}");
        assert_eq!(
            f(&[("public", true, true)], Some("public")).unwrap(),
            "public"
        );
        // A setting that would hide the old runner's table: its history would run again.
        let err = f(&[("public", false, true)], Some("migrations"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("old runner's schema_migrations in public"),
            "{err}"
        );
        assert_eq!(
            f(
                &[("public", false, true), ("app", false, true)],
                Some("app")
            )
            .unwrap(),
            "app"
        );
    }
}
