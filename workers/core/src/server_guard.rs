//! What belongs to the whole server, and how verify keeps its hands off it.
//!
//! Databases, roles, role memberships, tablespaces, role and database settings, parameter
//! privileges, comments and security labels on those, subscriptions and replication origins
//! live in *shared* catalogs (`pg_class.relisshared`): every database of the server sees the
//! same rows. A scratch database created on the target's server is therefore not isolated
//! from `REVOKE CONNECT ON DATABASE <target>`, `GRANT role`, `ALTER ROLE` or `ALTER DATABASE
//! <target> SET ...`, and no lexer sees them inside `DO`, a function or `EXECUTE format(...)`.
//!
//! So verify judges by effect, inside the transaction, before it can commit: what the
//! transaction wrote in a shared catalog. Two readings, because neither is complete alone:
//! - `pg_stat_get_xact_tuples_{inserted,updated,deleted}`: this transaction's own counts per
//!   table, the only trace of a deleted row (`DROP ROLE`, `REVOKE role`, `ALTER ROLE ...
//!   RESET`); they stay zero when `track_counts` is off. `pg_shdepend` is left out: every
//!   object owned by or granted to a role other than the bootstrap superuser writes rows there
//!   for its own database, which are that database's business.
//! - the visible rows whose `xmin` is a transaction of ours (at or after our top-level
//!   transaction id and still in progress: another session's in-progress rows are never
//!   visible). For `pg_shdepend`, only the rows of shared objects (`dbid = 0`). This reading
//!   needs no statistics, and concurrent sessions (a parallel `CREATE DATABASE`) do not
//!   disturb it.
//!
//! The same test runs as SQL in the runner's own scripts on a verification database (see
//! [`guard_sql`]): before each COMMIT, so that nothing that touches the server commits there,
//! whatever verify's rolled-back run saw. Deferred triggers are fired before it (they would
//! otherwise run at COMMIT, after any check), and a foreign table reached in any way is
//! refused there too: its commit would commit a remote write or `TRUNCATE` (`postgres_fdw`
//! into the target itself), and a read may run a program (`file_fdw`). A lock tells, in any
//! mode: which statement took it cannot be told apart there.
//!
//! Since PostgreSQL 15 a backend's `pg_stat_get_xact_*` counts also hold its earlier
//! transactions' counts until they are flushed (at most once a second, when idle): each
//! guarded script asks for the flush ([`FLUSH_SQL`]), so the next one counts its own writes
//! only, and a change committed by one migration is never blamed on the next.

use std::collections::BTreeMap;

use sqlx::PgConnection;

/// The SQLSTATE of a migration that changed what belongs to the whole server.
pub const SERVER_CHANGE_SQLSTATE: &str = "SM012";
/// The SQLSTATE of a migration that acts outside its transaction.
pub const OUTSIDE_TRANSACTION_SQLSTATE: &str = "SM014";

/// Asks the backend to flush its pending statistics when it next goes idle (PostgreSQL 15+,
/// where they outlive their transaction; earlier versions need nothing).
pub const FLUSH_SQL: &str = "DO $stepmigrate_flush$ BEGIN IF pg_catalog.current_setting('server_version_num')::int >= 150000 THEN EXECUTE 'SELECT pg_catalog.pg_stat_force_next_flush()'; END IF; END $stepmigrate_flush$";

/// What each shared catalog holds, in words.
pub fn catalog_words(catalog: &str) -> &'static str {
    match catalog {
        "pg_authid" => "roles",
        "pg_auth_members" => "role memberships",
        "pg_database" => "databases (their owners, privileges, settings)",
        "pg_db_role_setting" => "role and database settings",
        "pg_tablespace" => "tablespaces",
        "pg_shdepend" => "what depends on roles, databases or tablespaces",
        "pg_shdescription" => "comments on databases, roles or tablespaces",
        "pg_shseclabel" => "security labels on databases, roles or tablespaces",
        "pg_parameter_acl" => "parameter privileges (GRANT SET ON PARAMETER)",
        "pg_subscription" => "subscriptions",
        "pg_replication_origin" => "replication origins",
        _ => "a catalog shared by the whole server",
    }
}

/// The words of the changed catalogs, with their names: `roles (pg_authid), ...`.
pub fn describe(catalogs: &[String]) -> String {
    catalogs
        .iter()
        .map(|c| format!("{} ({c})", catalog_words(c)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The message of a migration that touches the server (its detail is [`describe`]'s list).
pub fn message(catalogs: &[String]) -> String {
    message_with(&describe(catalogs))
}

fn message_with(what: &str) -> String {
    format!(
        "the migration touches the server: it changed {what}, which belong to the whole server, not to one database; rolled back before anything committed (verify never lets such a change commit: verify it where the server is yours to change, or keep such changes out of migrations)"
    )
}

/// Writes of this transaction, per shared catalog: the counts and the visible rows of ours.
/// Compared with a baseline taken earlier in the same transaction, it tells what happened in
/// between.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedWrites(BTreeMap<String, i64>);

impl SharedWrites {
    /// The catalogs written since `before` (sorted).
    pub fn since(&self, before: &SharedWrites) -> Vec<String> {
        self.0
            .iter()
            .filter(|(catalog, n)| **n > before.0.get(*catalog).copied().unwrap_or(0))
            .map(|(catalog, _)| catalog.clone())
            .collect()
    }
}

/// The rows of ours in a shared catalog, as a boolean SQL condition on `x` given `me` (our
/// full top-level transaction id `top` and its `age`). A row is ours when its xmin is at or
/// after our top-level id (our subtransactions' ids come later) and that transaction is still
/// in progress: the only in-progress transaction whose rows this session sees is its own.
const OURS: &str = "pg_catalog.age(x.xmin) <= me.top_age AND pg_catalog.txid_status(me.top + (me.top_age - pg_catalog.age(x.xmin))) = 'in progress'";

/// `me`: our top-level transaction id (assigned here if it was not) and its age.
const ME: &str = "SELECT t AS top, pg_catalog.age(((t % 4294967296)::pg_catalog.text)::pg_catalog.xid)::pg_catalog.int8 AS top_age FROM pg_catalog.txid_current() t";

/// The extra condition for one catalog: in `pg_shdepend` only shared objects' rows.
fn only_shared_objects(catalog: &str) -> &'static str {
    if catalog == "pg_shdepend" {
        " AND x.dbid = 0"
    } else {
        ""
    }
}

/// Reads this transaction's writes to the shared catalogs (see the module's comment). Must
/// run inside the transaction it judges.
pub async fn read(conn: &mut PgConnection) -> Result<SharedWrites, sqlx::Error> {
    // pg_authid is the superuser's alone: a catalog this role cannot read has only its
    // counts.
    let catalogs: Vec<(String, bool)> = sqlx::query_as(
        "SELECT c.relname::pg_catalog.text, pg_catalog.has_table_privilege(c.oid, 'SELECT') FROM pg_catalog.pg_class c
         WHERE c.relisshared AND c.relkind = 'r' AND c.relnamespace = 'pg_catalog'::pg_catalog.regnamespace
         ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    let parts: Vec<String> = catalogs
        .iter()
        .map(|(c, readable)| {
            let counted = if c == "pg_shdepend" {
                "0".to_owned()
            } else {
                format!(
                    "pg_catalog.pg_stat_get_xact_tuples_inserted('pg_catalog.{c}'::pg_catalog.regclass) + pg_catalog.pg_stat_get_xact_tuples_updated('pg_catalog.{c}'::pg_catalog.regclass) + pg_catalog.pg_stat_get_xact_tuples_deleted('pg_catalog.{c}'::pg_catalog.regclass)"
                )
            };
            let seen = if *readable {
                format!(
                    "(SELECT count(*) FROM pg_catalog.{c} x, me WHERE {OURS}{})",
                    only_shared_objects(c)
                )
            } else {
                "0".to_owned()
            };
            format!("SELECT '{c}'::pg_catalog.text, (({counted}) + {seen})::pg_catalog.int8")
        })
        .collect();
    let sql = format!("WITH me AS ({ME}) {}", parts.join(" UNION ALL "));
    let rows: Vec<(String, i64)> = sqlx::query_as(&sql).fetch_all(&mut *conn).await?;
    Ok(SharedWrites(rows.into_iter().collect()))
}

/// The statements that raise [`SERVER_CHANGE_SQLSTATE`] when the transaction they run in
/// wrote a shared catalog (after firing its deferred triggers), or
/// [`OUTSIDE_TRANSACTION_SQLSTATE`] when it reached a foreign table: the runner's last
/// word before COMMIT on a verification database. Needs a fresh transaction in a script
/// that asked for [`FLUSH_SQL`], as did the one before (the counts are since its start).
pub fn guard_sql() -> String {
    let words = crate::sql::SHARED_CATALOGS
        .iter()
        .map(|c| format!("WHEN '{c}' THEN '{}'", catalog_words(c)))
        .collect::<Vec<_>>()
        .join(" ");
    let message = message_with("%s");
    let me_into = format!("{ME} INTO me");
    format!(
        r#"SET CONSTRAINTS ALL IMMEDIATE;DO $stepmigrate_server_guard$
DECLARE
    r record;
    n pg_catalog.int8;
    found pg_catalog.text[] := '{{}}';
    me record;
    foreign_written pg_catalog.text;
    outside pg_catalog.text;
BEGIN
    SELECT pg_catalog.string_agg(l.relation::regclass::pg_catalog.text, ', ') INTO foreign_written
    FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_class c ON c.oid = l.relation
    WHERE l.pid = pg_catalog.pg_backend_pid() AND l.locktype = 'relation' AND c.relkind = 'f';
    IF foreign_written IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '{OUTSIDE}',
            MESSAGE = pg_catalog.format('the migration acts outside its transaction: it reaches the foreign table %s, whose server commits what it writes or truncates with this COMMIT (another database, perhaps the target itself) and may run a program when read; rolled back before anything committed (verify a set with foreign tables with --in-transaction-only)', foreign_written),
            DETAIL = pg_catalog.format('reaches the foreign table %s', foreign_written);
    END IF;
    {ME_INTO};
    -- Verify's own guard (an event trigger) turned off, dropped or replaced: no event trigger
    -- fires for a change to an event trigger, so it is judged here, by effect. The counts
    -- hold attempts undone by a subtransaction too.
    IF pg_catalog.pg_stat_get_xact_tuples_updated('pg_catalog.pg_event_trigger'::pg_catalog.regclass)
         + pg_catalog.pg_stat_get_xact_tuples_deleted('pg_catalog.pg_event_trigger'::pg_catalog.regclass) > 0
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger x WHERE x.evtname = '{GUARD}' AND (x.evtenabled <> 'A' OR {OURS_RAW}))
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_proc x WHERE x.proname = '{GUARD}' AND x.pronamespace = 'pg_catalog'::pg_catalog.regnamespace AND {OURS_RAW})
       OR (pg_catalog.current_setting('is_superuser') = 'on' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_event_trigger x WHERE x.evtname = '{GUARD}')) THEN
        RAISE EXCEPTION USING ERRCODE = '{OUTSIDE}',
            MESSAGE = 'the migration altered, disabled or dropped an event trigger: verify''s own guard against acting outside the transaction ({GUARD}) is one, and no event trigger fires for such a change, so what the migration did outside its transaction while the guard was off is unknown and NOT undone (a write through dblink into another database, the target too, commits on its own: check the target); rolled back here (verify a set that changes event triggers with --in-transaction-only)',
            DETAIL = 'alters, disables or drops an event trigger (verify''s guard is one)';
    END IF;
    -- What the guard refuses, made while it was off.
    SELECT x.extname::pg_catalog.text INTO outside FROM pg_catalog.pg_extension x WHERE x.extname IN ({REMOTE}) AND {OURS_RAW};
    IF outside IS NULL THEN
        SELECT x.oid::pg_catalog.regprocedure::pg_catalog.text || ' (LANGUAGE ' || l.lanname || ')' INTO outside
        FROM pg_catalog.pg_proc x JOIN pg_catalog.pg_language l ON l.oid = x.prolang
        -- A built-in's row written by GRANT or REVOKE is not a function made (its oid is below
        -- the first a database object gets).
        WHERE NOT l.lanpltrusted AND x.prokind <> 'a' AND {OURS_RAW} AND x.oid >= 16384
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = x.oid AND d.deptype IN ('e', 'i'))
        LIMIT 1;
    END IF;
    IF outside IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = '{OUTSIDE}',
            MESSAGE = pg_catalog.format('the migration acts outside its transaction: it made %s (an extension that runs SQL in a session of its own, or a function in an untrusted language made outside an extension), which can act where no rollback reaches; rolled back here', outside),
            DETAIL = 'made ' || outside;
    END IF;
    FOR r IN SELECT c.oid, c.relname::pg_catalog.text AS relname FROM pg_catalog.pg_class c
             WHERE c.relisshared AND c.relkind = 'r' AND c.relnamespace = 'pg_catalog'::pg_catalog.regnamespace ORDER BY 2 LOOP
        n := 0;
        IF r.relname <> 'pg_shdepend' THEN
            n := pg_catalog.pg_stat_get_xact_tuples_inserted(r.oid) + pg_catalog.pg_stat_get_xact_tuples_updated(r.oid) + pg_catalog.pg_stat_get_xact_tuples_deleted(r.oid);
        END IF;
        IF n = 0 AND pg_catalog.has_table_privilege(r.oid, 'SELECT') THEN
            EXECUTE pg_catalog.format('SELECT count(*) FROM pg_catalog.%I x, (SELECT $1::pg_catalog.int8 AS top, $2::pg_catalog.int8 AS top_age) me WHERE {OURS}%s',
                r.relname, CASE WHEN r.relname = 'pg_shdepend' THEN ' AND x.dbid = 0' ELSE '' END)
                INTO n USING me.top, me.top_age;
        END IF;
        IF n > 0 THEN
            found := found || (CASE r.relname {words} ELSE 'a catalog shared by the whole server' END || ' (' || r.relname || ')');
        END IF;
    END LOOP;
    IF found <> '{{}}' THEN
        RAISE EXCEPTION USING ERRCODE = '{SERVER_CHANGE_SQLSTATE}',
            MESSAGE = pg_catalog.format('{message}', pg_catalog.array_to_string(found, ', ')),
            DETAIL = pg_catalog.array_to_string(found, ', ');
    END IF;
END
$stepmigrate_server_guard$"#,
        ME_INTO = me_into,
        OUTSIDE = OUTSIDE_TRANSACTION_SQLSTATE,
        OURS = OURS.replace('\'', "''"),
        OURS_RAW = OURS,
        GUARD = crate::schema::VERIFY_GUARD,
        REMOTE = crate::sql::REMOTE_EXTENSIONS
            .map(|e| format!("'{e}'"))
            .join(", "),
        message = message.replace('\'', "''"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_since_a_baseline_name_only_the_catalogs_written_in_between() {
        let before =
            SharedWrites([("pg_authid".to_owned(), 1), ("pg_database".to_owned(), 0)].into());
        let after = SharedWrites(
            [
                ("pg_authid".to_owned(), 1),
                ("pg_database".to_owned(), 2),
                ("pg_shdepend".to_owned(), 0),
            ]
            .into(),
        );
        assert_eq!(after.since(&before), ["pg_database"]);
        assert!(before.since(&before).is_empty());
        assert!(describe(&after.since(&SharedWrites::default())).starts_with("roles (pg_authid)"));
    }

    #[test]
    fn the_guard_is_one_statement_with_its_message_quoted() {
        let sql = guard_sql();
        let statements = crate::sql::split_statements(&sql);
        assert_eq!(statements.len(), 2);
        assert_eq!(statements[0].text, "SET CONSTRAINTS ALL IMMEDIATE");
        assert!(statements[1]
            .text
            .starts_with("DO $stepmigrate_server_guard$"));
        assert!(sql.ends_with("$stepmigrate_server_guard$"));
        assert!(sql.contains("touches the server"));
        assert_eq!(crate::sql::split_statements(FLUSH_SQL).len(), 1);
    }
}
