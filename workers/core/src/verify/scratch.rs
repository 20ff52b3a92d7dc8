//! The database verify may change at will: a scratch database created on the target's
//! server with the target's encoding, locale and settings (dropped afterwards), or an empty
//! `--dev-url` database (emptied afterwards), and where the copy differs from the target.

use std::collections::BTreeSet;

use tracing::info;

use super::on_scratch::migrator_apply;
use crate::config::Settings;
use crate::db::Database;
use crate::error::Error;
use crate::migration::{Migration, Version};
use crate::plan::{Scope, State};
use crate::runner::Migrator;
use crate::schema::{ChangeType, LedgerFilter, Snapshot, SnapshotOptions};
use crate::sql;

/// The first statement of `m` that changes the whole server: its line and what it changes.
fn server_wide(m: &Migration) -> Option<(usize, &'static str)> {
    sql::split_statements(&m.sql)
        .iter()
        .find_map(|s| sql::touches_the_server(s).map(|what| (s.line, what)))
}

/// A database that verify may change at will: one it created on the target's server (dropped
/// by [`ScratchDatabase::drop`]), or an empty one the user gave (`--dev-url`; emptied again
/// afterwards).
pub struct ScratchDatabase {
    /// A session on the server it was created from, to drop it.
    server: Option<Database>,
    db: Database,
    name: String,
}

/// On the target: the clauses that give a new database the target's encoding and locale
/// (none when `template1` has them already), and its own settings (`ALTER DATABASE ... SET`).
const DATABASE_LIKE_SQL: &str = "SELECT CASE WHEN (t.encoding, t.datcollate, t.datctype, to_jsonb(t)->>'datlocprovider', coalesce(to_jsonb(t)->>'datlocale', to_jsonb(t)->>'daticulocale'))
          IS DISTINCT FROM (d.encoding, d.datcollate, d.datctype, to_jsonb(d)->>'datlocprovider', coalesce(to_jsonb(d)->>'datlocale', to_jsonb(d)->>'daticulocale'))
     THEN pg_catalog.format(' TEMPLATE template0 ENCODING %L LC_COLLATE %L LC_CTYPE %L', pg_catalog.pg_encoding_to_char(d.encoding), d.datcollate, d.datctype)
          || CASE to_jsonb(d)->>'datlocprovider'
                 WHEN 'i' THEN pg_catalog.format(' LOCALE_PROVIDER icu ICU_LOCALE %L', coalesce(to_jsonb(d)->>'datlocale', to_jsonb(d)->>'daticulocale'))
                 WHEN 'b' THEN pg_catalog.format(' LOCALE_PROVIDER builtin BUILTIN_LOCALE %L', to_jsonb(d)->>'datlocale')
                 ELSE '' END
     ELSE '' END,
     coalesce((SELECT s.setconfig FROM pg_catalog.pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0), '{}'),
     coalesce((SELECT s.setconfig FROM pg_catalog.pg_db_role_setting s, pg_catalog.pg_roles r
               WHERE s.setdatabase = d.oid AND s.setrole = r.oid AND r.rolname = current_user), '{}')
FROM pg_catalog.pg_database d, pg_catalog.pg_database t WHERE d.datname = pg_catalog.current_database() AND t.datname = 'template1'";

/// A database's encoding and locale, and its own settings, in words: what the copy must share
/// with the target beyond the schema.
const DATABASE_TRAITS_SQL: &str = "SELECT pg_catalog.format('encoding %s, LC_COLLATE %s, LC_CTYPE %s%s', pg_catalog.pg_encoding_to_char(d.encoding), d.datcollate, d.datctype,
            CASE to_jsonb(d)->>'datlocprovider' WHEN 'i' THEN ', ICU locale ' || coalesce(to_jsonb(d)->>'datlocale', to_jsonb(d)->>'daticulocale')
                 WHEN 'b' THEN ', builtin locale ' || (to_jsonb(d)->>'datlocale') ELSE '' END),
       coalesce((SELECT pg_catalog.array_to_string(s.setconfig, '; ') FROM pg_catalog.pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0), '')
       || coalesce((SELECT ' (for ' || current_user || ' in it: ' || pg_catalog.array_to_string(s.setconfig, '; ') || ')'
                    FROM pg_catalog.pg_db_role_setting s, pg_catalog.pg_roles r
                    WHERE s.setdatabase = d.oid AND s.setrole = r.oid AND r.rolname = current_user), '')
FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()";

/// The settings of a session that change what a migration's statements mean.
const SESSION_SETTINGS_SQL: &str = "SELECT pg_catalog.string_agg(name || '=' || setting, '; ' ORDER BY name)
FROM pg_catalog.pg_settings WHERE name IN ('search_path', 'TimeZone', 'DateStyle', 'IntervalStyle',
    'default_table_access_method', 'default_toast_compression', 'default_tablespace', 'check_function_bodies')";

/// What a migration made in `pg_catalog` or `information_schema` (a superuser may): objects from
/// `FirstNormalObjectId` (16384) on that no extension owns, as `(classid, objid)`.
macro_rules! catalog_objects {
    () => {
        "SELECT x.classid, x.objid FROM (
        SELECT 'pg_catalog.pg_proc'::regclass AS classid, oid AS objid, pronamespace AS nsp FROM pg_catalog.pg_proc
        UNION ALL SELECT 'pg_catalog.pg_type'::regclass, oid, typnamespace FROM pg_catalog.pg_type WHERE typrelid = 0 AND typcategory <> 'A'
        UNION ALL SELECT 'pg_catalog.pg_operator'::regclass, oid, oprnamespace FROM pg_catalog.pg_operator
        UNION ALL SELECT 'pg_catalog.pg_collation'::regclass, oid, collnamespace FROM pg_catalog.pg_collation
        UNION ALL SELECT 'pg_catalog.pg_conversion'::regclass, oid, connamespace FROM pg_catalog.pg_conversion
        UNION ALL SELECT 'pg_catalog.pg_opclass'::regclass, oid, opcnamespace FROM pg_catalog.pg_opclass
        UNION ALL SELECT 'pg_catalog.pg_opfamily'::regclass, oid, opfnamespace FROM pg_catalog.pg_opfamily
        UNION ALL SELECT 'pg_catalog.pg_ts_config'::regclass, oid, cfgnamespace FROM pg_catalog.pg_ts_config
        UNION ALL SELECT 'pg_catalog.pg_ts_dict'::regclass, oid, dictnamespace FROM pg_catalog.pg_ts_dict
        UNION ALL SELECT 'pg_catalog.pg_ts_parser'::regclass, oid, prsnamespace FROM pg_catalog.pg_ts_parser
        UNION ALL SELECT 'pg_catalog.pg_ts_template'::regclass, oid, tmplnamespace FROM pg_catalog.pg_ts_template
        UNION ALL SELECT 'pg_catalog.pg_class'::regclass, oid, relnamespace FROM pg_catalog.pg_class WHERE relkind IN ('r', 'p', 'v', 'm', 'S', 'f')) x
        WHERE x.nsp IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace) AND x.objid >= 16384
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = x.classid AND d.objid = x.objid AND d.deptype = 'e')"
    };
}

/// The verification database's guard against an extension whose functions run SQL in a
/// session of their own ([`sql::REMOTE_EXTENSIONS`]), and against a function in an
/// untrusted language made outside an extension (`LANGUAGE c AS '$libdir/dblink'`): its
/// `CREATE` fails at once (SQLSTATE SM014), whatever words it was built from, before anything
/// can call it. Enabled ALWAYS: `session_replication_role` does not turn it off; a migration
/// that names it (to disable it) is refused by its words ([`sql::acts_outside_transaction`]).
const GUARD_SQL: &str = r#"
CREATE FUNCTION pg_catalog.stepmigrate_verify_guard() RETURNS event_trigger LANGUAGE plpgsql
    SET search_path = pg_catalog AS $guard$
DECLARE name pg_catalog.text;
BEGIN
    SELECT e.extname INTO name FROM pg_catalog.pg_event_trigger_ddl_commands() c
      JOIN pg_catalog.pg_extension e ON e.oid = c.objid
     WHERE c.classid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND e.extname IN ('dblink', 'pg_background');
    IF name IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'SM014',
            MESSAGE = pg_catalog.format('the %s extension runs SQL in a session of its own, which commits whatever this transaction does: not installed on the verification database', name),
            DETAIL = name || ': an extension whose functions run SQL in another session, which commits whatever this transaction does';
    END IF;
    -- A function in an untrusted language (C, internal, plpython3u...) made outside an
    -- extension can call anything under any name: dblink's library, lo_export, a program.
    SELECT p.oid::pg_catalog.regprocedure::text || ' (LANGUAGE ' || l.lanname || ')' INTO name
      FROM pg_catalog.pg_event_trigger_ddl_commands() c
      JOIN pg_catalog.pg_proc p ON p.oid = c.objid
      JOIN pg_catalog.pg_language l ON l.oid = p.prolang
     WHERE c.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND NOT c.in_extension AND NOT l.lanpltrusted;
    IF name IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'SM014',
            MESSAGE = pg_catalog.format('the function %s is in an untrusted language: it can act outside this transaction under any name, so it is not made on the verification database', name),
            DETAIL = 'a function in an untrusted language: ' || name;
    END IF;
END $guard$;
CREATE EVENT TRIGGER stepmigrate_verify_guard ON ddl_command_end
    WHEN TAG IN ('CREATE EXTENSION', 'CREATE FUNCTION', 'CREATE PROCEDURE', 'ALTER FUNCTION', 'ALTER PROCEDURE')
    EXECUTE FUNCTION pg_catalog.stepmigrate_verify_guard();
ALTER EVENT TRIGGER stepmigrate_verify_guard ENABLE ALWAYS;
"#;

/// Installs [`GUARD_SQL`] on the verification database. A role that may not make event
/// triggers (not a superuser) may not install those extensions either (they are not trusted).
async fn install_guard(db: &Database) -> Result<(), Error> {
    let mut conn = db.connect().await?;
    // Its `ALTER EVENT TRIGGER` is counted against this backend until the counts are flushed:
    // the server guard must not blame it on the first migration run in this session.
    let script = format!(
        "BEGIN;{GUARD_SQL};COMMIT;{};",
        crate::server_guard::FLUSH_SQL
    );
    match sqlx::raw_sql(&script).execute(&mut *conn).await {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
            Ok(())
        }
        Err(e) => {
            let _ = sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await;
            Err(Error::database(
                "installing the verification database's guard",
                e,
            ))
        }
    }
}

/// `ALTER <what> SET key = value` with a value as the catalog keeps it: a list
/// (`search_path`) as written, which a quoted string would make one element; a value that is
/// not a word or list (`America/New_York`, `all`) as a quoted string. Best effort: a setting
/// the copy does not get is reported by the copy's comparison.
async fn set_like_target(conn: &mut sqlx::PgConnection, what: &str, key: &str, value: &str) {
    let quoted = format!("'{}'", value.replace('\'', "''"));
    for value in [value, quoted.as_str()] {
        let statement = format!("ALTER {what} SET {key} = {value}");
        if sqlx::raw_sql(&statement).execute(&mut *conn).await.is_ok() {
            return;
        }
    }
}

/// Counts and names user objects: a dev database must have none.
const USER_OBJECTS: &str = concat!("SELECT coalesce(string_agg(what, ', '), '') FROM (
    SELECT 'relation ' || format('%I.%I', n.nspname, c.relname) AS what FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
    UNION ALL SELECT 'function ' || p.oid::regprocedure::text FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
    UNION ALL SELECT 'type ' || t.oid::regtype::text FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
        AND t.typrelid = 0 AND t.typcategory <> 'A'
    UNION ALL SELECT 'collation ' || c.oid::regcollation::text FROM pg_catalog.pg_collation c JOIN pg_catalog.pg_namespace n ON n.oid = c.collnamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
    UNION ALL SELECT 'text search configuration ' || c.oid::regconfig::text FROM pg_catalog.pg_ts_config c JOIN pg_catalog.pg_namespace n ON n.oid = c.cfgnamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
    UNION ALL SELECT 'operator ' || o.oid::regoperator::text FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
    UNION ALL SELECT o.type || ' ' || o.identity FROM (
        SELECT 'pg_catalog.pg_conversion'::regclass AS classid, oid AS objid, connamespace AS nsp FROM pg_catalog.pg_conversion
        UNION ALL SELECT 'pg_catalog.pg_opclass'::regclass, oid, opcnamespace FROM pg_catalog.pg_opclass
        UNION ALL SELECT 'pg_catalog.pg_opfamily'::regclass, oid, opfnamespace FROM pg_catalog.pg_opfamily
        UNION ALL SELECT 'pg_catalog.pg_ts_dict'::regclass, oid, dictnamespace FROM pg_catalog.pg_ts_dict
        UNION ALL SELECT 'pg_catalog.pg_ts_parser'::regclass, oid, prsnamespace FROM pg_catalog.pg_ts_parser
        UNION ALL SELECT 'pg_catalog.pg_ts_template'::regclass, oid, tmplnamespace FROM pg_catalog.pg_ts_template
        UNION ALL SELECT 'pg_catalog.pg_statistic_ext'::regclass, oid, stxnamespace FROM pg_catalog.pg_statistic_ext) x
      JOIN pg_catalog.pg_namespace n ON n.oid = x.nsp, pg_catalog.pg_identify_object(x.classid, x.objid, 0) o
      WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
    UNION ALL SELECT 'schema ' || quote_ident(nspname) FROM pg_catalog.pg_namespace
      WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'public') AND nspname NOT LIKE 'pg\\_%'
    UNION ALL SELECT 'extension ' || quote_ident(extname) FROM pg_catalog.pg_extension WHERE extname <> 'plpgsql'
    UNION ALL SELECT 'publication ' || quote_ident(pubname) FROM pg_catalog.pg_publication
    UNION ALL SELECT 'foreign-data wrapper ' || quote_ident(fdwname) FROM pg_catalog.pg_foreign_data_wrapper
    UNION ALL SELECT 'event trigger ' || quote_ident(evtname) FROM pg_catalog.pg_event_trigger
    UNION ALL SELECT 'cast ' || format('(%s AS %s)', castsource::regtype, casttarget::regtype) FROM pg_catalog.pg_cast WHERE oid >= 16384
    UNION ALL SELECT o.type || ' ' || o.identity FROM (", catalog_objects!(), ") c, pg_catalog.pg_identify_object(c.classid, c.objid, 0) o
    UNION ALL SELECT 'access method ' || quote_ident(amname) FROM pg_catalog.pg_am WHERE oid >= 16384
    UNION ALL SELECT 'language ' || quote_ident(l.lanname) FROM pg_catalog.pg_language l WHERE l.oid >= 16384
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_language'::regclass AND d.objid = l.oid AND d.deptype = 'e')
    UNION ALL SELECT 'default privileges of ' || defaclrole::regrole::text FROM pg_catalog.pg_default_acl
    UNION ALL SELECT 'large object ' || oid::text FROM pg_catalog.pg_largeobject_metadata
    UNION ALL SELECT 'transform for ' || t.trftype::regtype::text || ' language ' || quote_ident(l.lanname)
      FROM pg_catalog.pg_transform t JOIN pg_catalog.pg_language l ON l.oid = t.trflang
    LIMIT 5) objects");

/// Empties a dev database again: everything verify's migrations may have made in it, and
/// `public` as a new database has it.
const EMPTY_DEV: &str = concat!(
    r#"DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT extname FROM pg_catalog.pg_extension WHERE extname <> 'plpgsql' LOOP
        EXECUTE format('DROP EXTENSION IF EXISTS %I CASCADE', r.extname);
    END LOOP;
    FOR r IN SELECT evtname FROM pg_catalog.pg_event_trigger LOOP
        EXECUTE format('DROP EVENT TRIGGER IF EXISTS %I', r.evtname);
    END LOOP;
    FOR r IN SELECT oid FROM pg_catalog.pg_largeobject_metadata LOOP
        PERFORM pg_catalog.lo_unlink(r.oid);
    END LOOP;
    FOR r IN SELECT t.trftype::regtype::text AS typ, l.lanname FROM pg_catalog.pg_transform t
             JOIN pg_catalog.pg_language l ON l.oid = t.trflang LOOP
        EXECUTE format('DROP TRANSFORM IF EXISTS FOR %s LANGUAGE %I CASCADE', r.typ, r.lanname);
    END LOOP;
    FOR r IN SELECT l.lanname FROM pg_catalog.pg_language l WHERE l.oid >= 16384
             AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_language'::regclass AND d.objid = l.oid AND d.deptype = 'e') LOOP
        EXECUTE format('DROP LANGUAGE IF EXISTS %I CASCADE', r.lanname);
    END LOOP;
    FOR r IN SELECT amname FROM pg_catalog.pg_am WHERE oid >= 16384 LOOP
        EXECUTE format('DROP ACCESS METHOD IF EXISTS %I CASCADE', r.amname);
    END LOOP;
    -- What a migration made in pg_catalog or information_schema, by its identity.
    FOR r IN SELECT o.type, o.identity, c.classid, c.objid FROM ("#,
    catalog_objects!(),
    r#") c,
                    pg_catalog.pg_identify_object(c.classid, c.objid, 0) o LOOP
        BEGIN
            EXECUTE format('DROP %s IF EXISTS %s CASCADE',
                CASE WHEN r.classid = 'pg_catalog.pg_type'::regclass
                          AND (SELECT typtype FROM pg_catalog.pg_type WHERE oid = r.objid) = 'd' THEN 'DOMAIN'
                     WHEN r.classid = 'pg_catalog.pg_proc'::regclass THEN
                          CASE (SELECT prokind FROM pg_catalog.pg_proc WHERE oid = r.objid)
                              WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END
                     ELSE upper(r.type) END,
                r.identity);
        EXCEPTION WHEN undefined_object OR undefined_function OR dependent_objects_still_exist THEN
            NULL;
        END;
    END LOOP;
    -- Default privileges back to the built-in ones (PostgreSQL then drops the entry): all
    -- revoked, then the owner's, and PUBLIC's on functions and types.
    BEGIN
        FOR r IN SELECT d.defaclrole::regrole::text AS role, d.defaclnamespace::regnamespace::text AS nsp,
                        d.defaclnamespace AS nspoid, d.defaclobjtype AS t, a.grantee
                 FROM pg_catalog.pg_default_acl d, pg_catalog.aclexplode(d.defaclacl) a LOOP
            EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %s %s REVOKE ALL ON %s FROM %s', r.role,
                CASE WHEN r.nspoid = 0 THEN '' ELSE 'IN SCHEMA ' || r.nsp END,
                CASE r.t WHEN 'r' THEN 'TABLES' WHEN 'S' THEN 'SEQUENCES' WHEN 'f' THEN 'FUNCTIONS' WHEN 'T' THEN 'TYPES' ELSE 'SCHEMAS' END,
                CASE WHEN r.grantee = 0 THEN 'PUBLIC' ELSE r.grantee::regrole::text END);
        END LOOP;
        FOR r IN SELECT DISTINCT d.defaclrole::regrole::text AS role, d.defaclobjtype AS t
                 FROM pg_catalog.pg_default_acl d WHERE d.defaclnamespace = 0 LOOP
            EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %s GRANT ALL ON %s TO %s', r.role,
                CASE r.t WHEN 'r' THEN 'TABLES' WHEN 'S' THEN 'SEQUENCES' WHEN 'f' THEN 'FUNCTIONS' WHEN 'T' THEN 'TYPES' ELSE 'SCHEMAS' END, r.role);
            IF r.t IN ('f', 'T') THEN
                EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE %s GRANT ALL ON %s TO PUBLIC', r.role,
                    CASE r.t WHEN 'f' THEN 'FUNCTIONS' ELSE 'TYPES' END);
            END IF;
        END LOOP;
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;
    END;
    FOR r IN SELECT pubname FROM pg_catalog.pg_publication LOOP
        EXECUTE format('DROP PUBLICATION IF EXISTS %I', r.pubname);
    END LOOP;
    FOR r IN SELECT fdwname FROM pg_catalog.pg_foreign_data_wrapper LOOP
        EXECUTE format('DROP FOREIGN DATA WRAPPER IF EXISTS %I CASCADE', r.fdwname);
    END LOOP;
    FOR r IN SELECT castsource::regtype AS s, casttarget::regtype AS t FROM pg_catalog.pg_cast WHERE oid >= 16384 LOOP
        EXECUTE format('DROP CAST IF EXISTS (%s AS %s) CASCADE', r.s, r.t);
    END LOOP;
    FOR r IN SELECT nspname FROM pg_catalog.pg_namespace
             WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'public') AND nspname NOT LIKE 'pg\_%' LOOP
        EXECUTE format('DROP SCHEMA IF EXISTS %I CASCADE', r.nspname);
    END LOOP;
    -- public, as a new database has it. Only the database's owner may make it again: for
    -- anyone else (the block is undone) it is emptied object by object.
    BEGIN
        DROP SCHEMA IF EXISTS public CASCADE;
        IF current_setting('server_version_num')::int >= 150000 THEN
            EXECUTE 'CREATE SCHEMA public AUTHORIZATION pg_database_owner';
            GRANT USAGE ON SCHEMA public TO PUBLIC;
        ELSE
            CREATE SCHEMA public;
            GRANT ALL ON SCHEMA public TO PUBLIC;
        END IF;
        COMMENT ON SCHEMA public IS 'standard public schema';
    EXCEPTION WHEN insufficient_privilege THEN
        -- A sequence owned by a column (serial, identity) goes with its table.
        FOR r IN SELECT relname, relkind FROM pg_catalog.pg_class c
                 WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
                   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                                   WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                                     AND d.deptype IN ('a', 'i'))
                 ORDER BY relkind = 'S' LOOP
            EXECUTE format('DROP %s IF EXISTS public.%I CASCADE',
                CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
                               WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'c' THEN 'TYPE' ELSE 'TABLE' END, r.relname);
        END LOOP;
        FOR r IN SELECT oid::regprocedure AS f, prokind FROM pg_catalog.pg_proc WHERE pronamespace = 'public'::regnamespace LOOP
            EXECUTE format('DROP %s IF EXISTS %s CASCADE',
                CASE r.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END, r.f);
        END LOOP;
        FOR r IN SELECT t.oid::regtype AS t, t.typtype FROM pg_catalog.pg_type t
                 WHERE t.typnamespace = 'public'::regnamespace AND t.typrelid = 0 AND t.typcategory <> 'A' LOOP
            EXECUTE format('DROP %s IF EXISTS %s CASCADE', CASE r.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, r.t);
        END LOOP;
        FOR r IN SELECT oid::regcollation AS c FROM pg_catalog.pg_collation WHERE collnamespace = 'public'::regnamespace LOOP
            EXECUTE format('DROP COLLATION IF EXISTS %s', r.c);
        END LOOP;
        FOR r IN SELECT oid::regconfig AS c FROM pg_catalog.pg_ts_config WHERE cfgnamespace = 'public'::regnamespace LOOP
            EXECUTE format('DROP TEXT SEARCH CONFIGURATION IF EXISTS %s CASCADE', r.c);
        END LOOP;
        FOR r IN SELECT oid::regoperator AS o FROM pg_catalog.pg_operator WHERE oprnamespace = 'public'::regnamespace LOOP
            EXECUTE format('DROP OPERATOR IF EXISTS %s CASCADE', r.o);
        END LOOP;
    END;
    BEGIN
        EXECUTE format('ALTER DATABASE %I RESET ALL', current_database());
        EXECUTE format('COMMENT ON DATABASE %I IS NULL', current_database());
    EXCEPTION WHEN insufficient_privilege THEN
        NULL;
    END;
END $$"#
);

impl ScratchDatabase {
    /// Creates `<prefix>_<random>` on `server`'s server (needs `CREATEDB`).
    pub async fn create(server: &Database, prefix: &str) -> Result<ScratchDatabase, Error> {
        let name = format!("{prefix}_{:08x}", rand::random::<u32>());
        let mut conn = server.connect().await?;
        // The target's encoding, locale and settings are the copy's too: a migration's
        // outcome depends on them (`search_path`, a collation's order, a character the
        // encoding lacks).
        let (like, settings, role_settings): (String, Vec<String>, Vec<String>) =
            sqlx::query_as(DATABASE_LIKE_SQL)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| {
                    Error::database("reading the target database's encoding and settings", e)
                })?;
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\"{like}"))
            .execute(&mut *conn)
            .await
            .map_err(|e| {
                Error::database(
                    format!("creating the scratch database {name} on {server}'s server (the role needs CREATEDB; or pass --dev-url with an empty database)"),
                    e,
                )
            })?;
        for setting in settings {
            if let Some((key, value)) = setting.split_once('=') {
                // One that cannot be set here is reported by the copy's comparison.
                set_like_target(&mut conn, &format!("DATABASE \"{name}\""), key, value).await;
            }
        }
        // The role's own settings in the target (`ALTER ROLE ... IN DATABASE ... SET`), which
        // its sessions there meet: for the copy too (dropped with it).
        for setting in role_settings {
            if let Some((key, value)) = setting.split_once('=') {
                let what = format!("ROLE CURRENT_USER IN DATABASE \"{name}\"");
                set_like_target(&mut conn, &what, key, value).await;
            }
        }
        info!(scratch = %name, "created the scratch database");
        let scratch = ScratchDatabase {
            server: Some(server.clone()),
            db: server.with_database(&name),
            name,
        };
        if let Err(e) = install_guard(&scratch.db).await {
            let _ = scratch.drop().await;
            return Err(e);
        }
        Ok(scratch)
    }

    /// A database the user gave, which must hold no user objects (like Atlas' dev database).
    pub async fn dev(db: Database) -> Result<ScratchDatabase, Error> {
        let mut conn = db.connect().await?;
        let (objects,): (String,) = sqlx::query_as(USER_OBJECTS)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| Error::database("checking that the dev database is empty", e))?;
        drop(conn);
        if !objects.is_empty() {
            db.close().await;
            return Err(Error::InvalidInput(format!(
                "--dev-url: {db} is not empty ({objects}); verify applies migrations there and empties it afterwards, so give it an empty database of its own"
            )));
        }
        install_guard(&db).await?;
        Ok(ScratchDatabase {
            server: None,
            name: db.name().to_owned(),
            db,
        })
    }

    /// [`ScratchDatabase::dev`] for verifying `target`: refused when it is the target itself
    /// (another spelling of its URL: `localhost` for `127.0.0.1`, a socket), which verify
    /// would change and then empty. Told apart by a session: the target's, seen from the
    /// dev database's `pg_stat_activity` in that very database.
    pub async fn dev_for(db: Database, target: &Database) -> Result<ScratchDatabase, Error> {
        let context = "checking that the dev database is not the target";
        let mut on_target = target.connect().await?;
        let (pid, started): (i32, String) =
            sqlx::query_as("SELECT pg_catalog.pg_backend_pid(), pg_catalog.now()::text")
                .fetch_one(&mut *on_target)
                .await
                .map_err(|e| Error::database(context, e))?;
        let mut on_dev = db.connect().await?;
        let same: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity
                            WHERE pid = $1 AND backend_start <= $2::timestamptz
                              AND datname = pg_catalog.current_database())",
        )
        .bind(pid)
        .bind(&started)
        .fetch_one(&mut *on_dev)
        .await
        .map_err(|e| Error::database(context, e))?;
        drop(on_dev);
        drop(on_target);
        if same {
            db.close().await;
            return Err(Error::InvalidInput(format!(
                "--dev-url: {db} is the target database itself (DATABASE_URL's); the migrations would be applied there and it emptied afterwards: give it an empty database of its own"
            )));
        }
        ScratchDatabase::dev(db).await
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Why `m` must not run here, if it must not: on a scratch database created on the
    /// target's server, a statement that changes the whole server (a role, a database) would
    /// change it for real. A `--dev-url` database is the user's choice of server.
    pub fn cannot_run(&self, m: &Migration) -> Option<(String, &'static str)> {
        let (line, what) = self.refused_by_words(m)?;
        Some((
            format!(
                "not verified: the migration touches the server: line {line} changes {what}, which belong to the whole server: run here it would change them for real"
            ),
            what,
        ))
    }

    /// The first statement of `m` that changes the whole server by its words, where words
    /// decide: anywhere on a scratch database of the target's server; on a dev database only
    /// in a migration outside a transaction (in a transaction, the server guard judges by
    /// effect before anything commits).
    fn refused_by_words(&self, m: &Migration) -> Option<(usize, &'static str)> {
        if self.server.is_none() && m.transactional() {
            return None;
        }
        server_wide(m)
    }

    /// Refuses, before anything runs, a history that cannot be replayed here: the target's
    /// applied migrations up to (not including) `first_pending` that change the whole server
    /// (replayed on the same server, they would act on it for real, or fail as already done).
    pub fn ensure_replayable(
        &self,
        set: &crate::migration::MigrationSet,
        first_pending: Option<&Version>,
    ) -> Result<(), Error> {
        let history = set
            .migrations()
            .iter()
            .take_while(|m| first_pending.is_none_or(|v| m.version.number() < v.number()));
        for m in history {
            if let Some((line, what)) = self.refused_by_words(m) {
                return Err(Error::InvalidInput(format!(
                    "{}:{line} changes {what}, which belong to the whole server (the migration touches the server): replaying it on the verification database would change the server for real (or fail as already done); verify with --in-transaction-only",
                    m.path.display()
                )));
            }
            let outside = sql::split_statements(&m.sql)
                .into_iter()
                .find_map(|s| sql::acts_outside_transaction(&s, false).map(|what| (s.line, what)));
            if let Some((line, what)) = outside {
                return Err(Error::InvalidInput(format!(
                    "{}:{line} acts outside its transaction ({what}): replaying it on the verification database would act for real; verify with --in-transaction-only",
                    m.path.display()
                )));
            }
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A migrator of `set` on the scratch database, to apply to it through the normal runner.
    pub fn migrator(&self, set: &crate::migration::MigrationSet, settings: &Settings) -> Migrator {
        // Whatever the runner commits here, nothing of the whole server may change. The order
        // was judged on the target's ledger (`pending_for_verify`): the copy's ledger lacks its
        // history (a re-run there looks like a new migration below the newest applied one).
        let settings = Settings {
            guard_server: true,
            allow_out_of_order: true,
            ..settings.clone()
        };
        Migrator::new(self.db.clone(), set.clone(), settings)
    }

    /// Applies `set` up to `to` (inclusive) through the normal runner; a failure is an error.
    pub async fn apply(
        &self,
        migrator: &Migrator,
        to: &Version,
        run_id: &str,
    ) -> Result<(), Error> {
        migrator_apply(migrator, to, run_id).await
    }

    /// Drops a created scratch database (ending any session still in it), or empties a dev
    /// database. Call it on every path, failures included.
    pub async fn drop(self) -> Result<(), Error> {
        match &self.server {
            Some(server) => {
                self.db.close().await;
                let mut conn = server.connect().await?;
                sqlx::raw_sql(&format!(
                    "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                    self.name
                ))
                .execute(&mut *conn)
                .await
                .map_err(|e| {
                    Error::database(format!("dropping the scratch database {}", self.name), e)
                })?;
                info!(scratch = %self.name, "dropped the scratch database");
            }
            None => {
                let mut conn = self.db.connect().await?;
                let result = sqlx::raw_sql(EMPTY_DEV).execute(&mut *conn).await;
                drop(conn);
                self.db.close().await;
                result.map_err(|e| Error::database("emptying the dev database", e))?;
            }
        }
        Ok(())
    }
}

/// Where the copy, brought to the target's applied history by replaying the files of the
/// migrations the target has applied, differs from the target: one snapshot of each, compared (grants left out:
/// the copy's objects are the verifying role's). Each difference in words, from the
/// target's side.
pub(super) async fn copy_differences(
    target: &Migrator,
    copy: &Migrator,
    run_id: &str,
) -> Result<Vec<String>, Error> {
    // The copy gets what the target has applied, whatever its place: an after-deploy
    // migration still pending there comes before migrations applied after it, which the
    // pending ones must find on the copy as they will on the target.
    let (_, plan) = target.plan(&Scope::up_to(None)).await?;
    let applied: BTreeSet<u64> = plan
        .entries
        .iter()
        .filter(|e| e.state == State::Applied)
        .map(|e| e.version.number())
        .collect();
    let replay = Migrator::new(
        copy.db.clone(),
        copy.set.only(&applied),
        copy.settings.clone(),
    );
    if let Some(last) = replay.set.migrations().last() {
        migrator_apply(&replay, &last.version.clone(), run_id).await?;
    }
    let options = |m: &Migrator| SnapshotOptions {
        ledger: match &m.settings.ledger_schema {
            Some(schema) => LedgerFilter::Schema(schema.clone()),
            None => LedgerFilter::Auto,
        },
        ..SnapshotOptions::default()
    };
    let on_target = Snapshot::capture_database(&target.db, &options(target)).await?;
    let on_copy = Snapshot::capture_database(&copy.db, &options(copy)).await?;
    let traits = async |db: &Database| -> Result<(String, String), Error> {
        let mut conn = db.connect().await?;
        sqlx::query_as(DATABASE_TRAITS_SQL)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| Error::database("reading the database's encoding and settings", e))
    };
    let (target_locale, target_settings) = traits(&target.db).await?;
    let (copy_locale, copy_settings) = traits(&copy.db).await?;
    let mut differs = Vec::new();
    if target_locale != copy_locale {
        differs.push(format!(
            "the database's encoding and locale differ: the target's {target_locale}, the copy's {copy_locale}"
        ));
    }
    if target_settings != copy_settings {
        let shown = |s: &str| {
            if s.is_empty() {
                "none".to_owned()
            } else {
                s.to_owned()
            }
        };
        differs.push(format!(
            "the database's own settings (ALTER DATABASE ... SET) differ: the target's {}, the copy's {}",
            shown(&target_settings),
            shown(&copy_settings)
        ));
    }
    // What a session sees, whatever set it (the URL's `options`, the role's or the database's
    // settings): the names a migration's statements resolve and how its values read.
    let session = async |db: &Database| -> Result<String, Error> {
        let mut conn = db.connect().await?;
        sqlx::query_scalar(SESSION_SETTINGS_SQL)
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| Error::database("reading the session's settings", e))
    };
    let (target_session, copy_session) = (session(&target.db).await?, session(&copy.db).await?);
    if target_session != copy_session {
        differs.push(format!(
            "a session's settings differ (the connection's options, the role's or the database's settings): the target's {target_session}, the copy's {copy_session}"
        ));
    }
    Ok(differs
        .into_iter()
        .chain(
            crate::schema::diff(&on_copy, &on_target)
                .changes()
                .map(|c| {
                    let object = format!("{} {}", c.kind, c.name);
                    match c.change {
                        ChangeType::Added => format!("{object} is on the target only"),
                        ChangeType::Dropped => format!("{object} is on the copy only"),
                        ChangeType::Changed => format!(
                            "{object} differs ({})",
                            c.attributes
                                .iter()
                                .map(|a| a.render())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    }
                }),
        )
        .collect())
}
