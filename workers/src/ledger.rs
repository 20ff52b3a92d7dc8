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

/// The ledger's own DDL: migration 000.
pub const LEDGER_SQL: &str = include_str!("ledger.sql");
pub const LEDGER_VERSION: &str = "000";
/// The ledger's schema version, in the name of its 000 row. Bump it when `ledger.sql` changes
/// what older code can't read; a ledger newer than the code (older code after a rollback) is
/// left alone.
pub const LEDGER_SCHEMA_VERSION: u32 = 1;
pub const LEDGER_NAME: &str = "000_stepmigrate_ledger_v1";

/// The checksum recorded for migration 000: a ledger whose 000 row differs is upgraded.
pub fn ledger_checksum() -> String {
    checksum(LEDGER_SQL.as_bytes())
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
}

impl NewEvent<'_> {
    /// The `INSERT` statement, with values inlined so that it can share one round trip with
    /// the migration it records.
    pub fn insert_sql(&self) -> String {
        let opt = |v: Option<&str>| v.map_or_else(|| "NULL".to_owned(), quote_literal);
        let error = self.error.map_or_else(
            || "NULL".to_owned(),
            |e| {
                format!(
                    "{}::jsonb",
                    quote_literal(&serde_json::to_string(e).unwrap_or_default())
                )
            },
        );
        format!(
            "INSERT INTO schema_migration_events (run_id, version, name, kind, checksum, execution_time_ms, dirty, error) VALUES ({}, {}, {}, {}, {}, {}, {}, {})",
            quote_literal(self.run_id),
            quote_literal(self.version),
            quote_literal(self.name),
            quote_literal(self.kind.as_str()),
            opt(self.checksum),
            self.execution_time_ms.as_deref().unwrap_or("NULL"),
            self.dirty,
            error,
        )
    }
    /// The `INSERT`, unless the migration's row says it is applied: a late failure record
    /// (a retry of the record step, a runner that lost a race) never overwrites a success.
    pub fn insert_unless_applied_sql(&self) -> String {
        let insert = self.insert_sql();
        let (head, values) = insert
            .split_once(" VALUES (")
            .expect("insert_sql writes VALUES");
        format!(
            "{head} SELECT {} WHERE NOT EXISTS (SELECT 1 FROM schema_migrations WHERE version = {} AND success)",
            values.strip_suffix(')').unwrap_or(values),
            quote_literal(self.version)
        )
    }
}

/// One row of `schema_migrations`.
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
}

impl Ledger {
    pub fn empty() -> Ledger {
        Ledger {
            kind: LedgerKind::Missing,
            rows: Vec::new(),
        }
    }

    /// Whether the ledger exists and its DDL is this version's: nothing to create or upgrade.
    pub fn is_current(&self) -> bool {
        if self.kind != LedgerKind::EventSourced {
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

/// Reads the ledger without changing anything: read-only commands never create it.
pub async fn read(conn: &mut PgConnection) -> Result<Ledger, Error> {
    let (has_projection, has_events): (bool, bool) = sqlx::query_as(
        "SELECT to_regclass('schema_migrations') IS NOT NULL, to_regclass('schema_migration_events') IS NOT NULL",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| Error::database("reading the ledger", e))?;
    let kind = match (has_projection, has_events) {
        (false, _) => return Ok(Ledger::empty()),
        (true, false) => LedgerKind::Legacy,
        (true, true) => LedgerKind::EventSourced,
    };
    let query = match kind {
        LedgerKind::EventSourced => {
            "SELECT version::text AS version, name::text AS name, applied_at, checksum::text AS checksum, execution_time_ms, success, dirty, run_id, error FROM schema_migrations"
        }
        _ => {
            "SELECT version::text AS version, coalesce(name, version)::text AS name, applied_at::timestamptz AS applied_at, checksum::text AS checksum, execution_time_ms::bigint AS execution_time_ms, coalesce(success, true) AS success, false AS dirty, NULL::text AS run_id, NULL::text AS error FROM schema_migrations"
        }
    };
    let rows = sqlx::query_as::<_, LedgerRow>(query)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| Error::database("reading schema_migrations", e))?;
    Ok(Ledger { kind, rows })
}

/// Creates the ledger, adopts the old runner's table or upgrades an older ledger, in one
/// transaction. Call it holding the migration lock.
pub async fn install(conn: &mut PgConnection, run_id: &str) -> Result<(), Error> {
    let marker = NewEvent {
        run_id,
        version: LEDGER_VERSION,
        name: LEDGER_NAME,
        kind: EventKind::Applied,
        checksum: Some(&ledger_checksum()),
        execution_time_ms: None,
        dirty: false,
        error: None,
    }
    .insert_sql();
    let script = format!("BEGIN;\n{LEDGER_SQL}\n;{marker};\nCOMMIT;");
    if let Err(e) = sqlx::raw_sql(&script).execute(&mut *conn).await {
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
        return Err(Error::database(
            "creating the ledger (schema_migrations)",
            e,
        ));
    }
    Ok(())
}

/// Appends one event in its own transaction (the projection follows in it).
pub async fn append(conn: &mut PgConnection, event: &NewEvent<'_>) -> Result<(), Error> {
    sqlx::raw_sql(&event.insert_sql())
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

/// Differences between the projection and the fold of the events, one line each.
pub async fn check(conn: &mut PgConnection) -> Result<Vec<String>, Error> {
    let rows: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT coalesce(f.version, m.version)::text,
                CASE WHEN f.version IS NULL THEN 'has a row that no event explains'
                     WHEN m.version IS NULL THEN 'has no row, but its events leave one'
                     ELSE 'has a row that differs from its events' END,
                CASE WHEN f.version IS NOT NULL THEN row_to_json(f)::text END,
                CASE WHEN m.version IS NOT NULL THEN row_to_json(m)::text END
         FROM schema_migrations_folded f
         FULL JOIN (SELECT version, name, applied_at, checksum, execution_time_ms, success, dirty, run_id, error, event_id
                    FROM schema_migrations) m ON m.version = f.version
         WHERE (f.version, f.name, f.applied_at, f.checksum, f.execution_time_ms, f.success, f.dirty, f.run_id, f.error, f.event_id)
               IS DISTINCT FROM
               (m.version, m.name, m.applied_at, m.checksum, m.execution_time_ms, m.success, m.dirty, m.run_id, m.error, m.event_id)
         ORDER BY 1",
    )
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
pub async fn rebuild(conn: &mut PgConnection) -> Result<u64, Error> {
    let script = "BEGIN;
        SET LOCAL stepmigrate.rebuilding = 'on';
        DELETE FROM schema_migrations;
        INSERT INTO schema_migrations (version, name, applied_at, checksum, execution_time_ms, success, dirty, run_id, error, event_id)
        SELECT * FROM schema_migrations_folded;
        COMMIT;";
    if let Err(e) = sqlx::raw_sql(script).execute(&mut *conn).await {
        let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
        return Err(Error::database("rebuilding schema_migrations", e));
    }
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM schema_migrations")
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
            }],
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
    fn event_insert_quotes_every_value() {
        let error = SqlError {
            sqlstate: "42P01".into(),
            message: "relation \"x\" doesn't exist".into(),
            ..Default::default()
        };
        let sql = NewEvent {
            run_id: "run'1",
            version: "004",
            name: "004_x",
            kind: EventKind::Failed,
            checksum: Some("ab"),
            execution_time_ms: Some("12".into()),
            dirty: true,
            error: Some(&error),
        }
        .insert_sql();
        assert!(
            sql.contains("'run''1', '004', '004_x', 'failed', 'ab', 12, true, '{"),
            "{sql}"
        );
        assert!(sql.contains("doesn''t exist"), "{sql}");
        assert!(sql.ends_with("'::jsonb)"), "{sql}");
    }
}
