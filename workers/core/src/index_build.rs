//! Concurrent index builds, which outlast everything else a migration does: a killed or
//! failed `CREATE INDEX CONCURRENTLY` leaves an INVALID index behind (which `IF NOT EXISTS`
//! then takes for done, and which every write keeps maintaining), so a build first drops
//! such a leftover of its own name; and while one runs its progress
//! (`pg_stat_progress_create_index`) goes to the log.

use std::time::Duration;

use sqlx::PgConnection;
use tracing::info;

use crate::db::Database;
use crate::error::{Error, SqlError};
use crate::sql::{self, quote_literal, Statement};

/// What a `CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS] name ON [ONLY] table` builds:
/// the index's name as PostgreSQL stores it (unquoted, a bare name folded to lower case) and
/// the table as written. `None` for other statements, and for an unnamed index (PostgreSQL
/// picks a new name on each try, so there is no leftover to find by name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConcurrentIndex {
    pub name: String,
    pub table: String,
}

/// Reads a statement's concurrent index build, if it is one.
pub fn concurrent_index(statement: &Statement<'_>) -> Option<ConcurrentIndex> {
    let k: Vec<&str> = statement.keywords.iter().map(String::as_str).collect();
    if !matches!(
        k.as_slice(),
        ["CREATE", "INDEX", "CONCURRENTLY", ..] | ["CREATE", "UNIQUE", "INDEX", "CONCURRENTLY", ..]
    ) {
        return None;
    }
    let mut tokens = sql::Tokens(statement.text);
    for t in tokens.by_ref() {
        if t.eq_ignore_ascii_case("CONCURRENTLY") {
            break;
        }
    }
    let mut name = tokens.next()?;
    if name.eq_ignore_ascii_case("IF") {
        tokens.next()?; // NOT
        tokens.next()?; // EXISTS
        name = tokens.next()?;
    }
    if name.eq_ignore_ascii_case("ON") {
        return None;
    }
    if !tokens.next()?.eq_ignore_ascii_case("ON") {
        return None;
    }
    let mut table = tokens.next()?;
    if table.eq_ignore_ascii_case("ONLY") {
        table = tokens.next()?;
    }
    let name = match name.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?.replace("\"\"", "\""),
        None => name.to_ascii_lowercase(),
    };
    Some(ConcurrentIndex {
        name,
        table: table.to_owned(),
    })
}

/// Drops the INVALID index named like `build`'s in its table's schema, if an earlier build
/// left one and no session is building it now. Returns what was dropped. Outside a
/// transaction (`DROP INDEX CONCURRENTLY`).
pub async fn drop_invalid_leftover(
    conn: &mut PgConnection,
    build: &ConcurrentIndex,
) -> Result<Option<String>, sqlx::Error> {
    let leftover: Option<(String,)> = sqlx::query_as(&format!(
        "SELECT format('%I.%I', n.nspname, c.relname)
         FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relname = $1 AND NOT i.indisvalid
           AND c.relnamespace = (SELECT relnamespace FROM pg_catalog.pg_class WHERE oid = to_regclass({}))
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_progress_create_index p WHERE p.index_relid = c.oid)",
        quote_literal(&build.table)
    ))
    .bind(&build.name)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((qualified,)) = leftover else {
        return Ok(None);
    };
    sqlx::raw_sql(&format!("DROP INDEX CONCURRENTLY IF EXISTS {qualified}"))
        .execute(&mut *conn)
        .await?;
    info!(index = %qualified, "dropped the INVALID index an interrupted build left");
    Ok(Some(qualified))
}

/// After `build`'s statement succeeded: the index it names must be there and valid. `IF NOT
/// EXISTS` skips an index of that name that is INVALID (a build that failed, or another
/// session's still running), which must not be recorded as built. `None` when valid, or when
/// the index is not where the table is (a name that is not the index's own).
pub async fn invalid_after_build(
    conn: &mut PgConnection,
    build: &ConcurrentIndex,
) -> Result<Option<SqlError>, sqlx::Error> {
    let invalid: Option<(String, bool)> = sqlx::query_as(&format!(
        "SELECT format('%I.%I', n.nspname, c.relname),
                EXISTS (SELECT 1 FROM pg_catalog.pg_stat_progress_create_index p WHERE p.index_relid = c.oid)
         FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relname = $1 AND NOT i.indisvalid
           AND c.relnamespace = (SELECT relnamespace FROM pg_catalog.pg_class WHERE oid = to_regclass({}))",
        quote_literal(&build.table)
    ))
    .bind(&build.name)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(invalid.map(|(index, building)| SqlError {
        sqlstate: INVALID_INDEX_SQLSTATE.to_owned(),
        message: if building {
            format!("the index {index} exists but is INVALID: another session is building it right now (IF NOT EXISTS skipped it). Wait for that build to end, then run again")
        } else {
            format!("the index {index} exists but is INVALID (a build that failed or was interrupted; IF NOT EXISTS skipped it): drop it (DROP INDEX CONCURRENTLY {index}) and run again")
        },
        ..SqlError::default()
    }))
}

/// The SQLSTATE of an index left INVALID where a build said it was done:
/// `object_not_in_prerequisite_state`.
pub const INVALID_INDEX_SQLSTATE: &str = "55000";

/// Whether a script builds or rebuilds an index concurrently (what the watcher watches).
pub fn builds_indexes(script: &str) -> bool {
    sql::split_statements(script).iter().any(|s| {
        let k: Vec<&str> = s.keywords.iter().map(String::as_str).collect();
        concurrent_index(s).is_some()
            || matches!(
                k.as_slice(),
                ["CREATE", "INDEX", ..] | ["CREATE", "UNIQUE", "INDEX", ..] | ["REINDEX", ..]
            )
    })
}

/// Logs the progress of the index builds of backend `pid` every `interval` until dropped
/// (a task of its own, on a connection of its own).
pub struct Watcher(tokio::task::JoinHandle<()>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One row of `pg_stat_progress_create_index`: index, phase, blocks done and total, tuples
/// done and total.
type BuildProgress = (String, String, i64, i64, i64, i64);

pub fn watch(db: &Database, pid: i32, interval: Duration) -> Watcher {
    let db = db.clone();
    Watcher(tokio::spawn(async move {
        let Ok(mut conn) = db.connect().await else {
            return;
        };
        loop {
            tokio::time::sleep(interval).await;
            let row: Result<Option<BuildProgress>, _> = sqlx::query_as(
                "SELECT coalesce(to_regclass(p.index_relid::text)::text, p.index_relid::text), p.phase,
                        p.blocks_done, p.blocks_total, p.tuples_done, p.tuples_total
                 FROM pg_catalog.pg_stat_progress_create_index p WHERE p.pid = $1",
            )
            .bind(pid)
            .fetch_optional(&mut *conn)
            .await;
            match row {
                Ok(Some((index, phase, blocks_done, blocks_total, tuples_done, tuples_total))) => {
                    let percent = |done: i64, total: i64| {
                        (total > 0).then(|| (done as f64 * 100.0 / total as f64).round() as i64)
                    };
                    info!(
                        index = %index,
                        phase = %phase,
                        blocks_done,
                        blocks_total,
                        tuples_done,
                        tuples_total,
                        blocks_percent = percent(blocks_done, blocks_total),
                        "index build: {phase}"
                    );
                }
                Ok(None) => {}
                Err(_) => return,
            }
        }
    }))
}

/// The backend of a connection (what the watcher looks for).
pub async fn backend_pid(conn: &mut PgConnection) -> Result<i32, Error> {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| Error::database("reading the session's backend", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(sql: &str) -> Option<ConcurrentIndex> {
        concurrent_index(&sql::split_statements(sql)[0])
    }

    #[test]
    fn the_index_and_its_table_are_read_from_the_statement() {
        let some = |name: &str, table: &str| {
            Some(ConcurrentIndex {
                name: name.into(),
                table: table.into(),
            })
        };
        assert_eq!(
            index("CREATE INDEX CONCURRENTLY answers_q_idx ON answers (question_id);"),
            some("answers_q_idx", "answers")
        );
        assert_eq!(
            index("create unique index concurrently if not exists Users_Email ON ONLY public.users USING btree (email)"),
            some("users_email", "public.users")
        );
        assert_eq!(
            index("CREATE INDEX CONCURRENTLY \"My \"\"Idx\"\"\" ON \"S\".\"T\"(c)"),
            some("My \"Idx\"", "\"S\".\"T\"")
        );
        assert_eq!(index("CREATE INDEX CONCURRENTLY ON t (c)"), None);
        assert_eq!(index("CREATE INDEX t_idx ON t (c)"), None);
        assert_eq!(index("DROP INDEX CONCURRENTLY t_idx"), None);
    }
}
