//! Reading a snapshot from the system catalogs: one query per kind of object, all sent in
//! one round trip inside one read-only transaction, each answering one JSON document.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use sqlx::{Connection as _, PgConnection, Row};

use super::snapshot::{
    sha256_hex, CatalogObject, Column, CompositeType, Constraint, Domain, Enum, Extension,
    Function, FunctionKind, Grant, Index, Policy, Schema, Scope, Sequence, Snapshot,
    SnapshotOptions, Statistics, Table, Trigger, View, Volatility, FORMAT_VERSION,
};
use crate::db::Database;
use crate::error::Error;

/// The system's schemas, left out in SQL already (the options narrow further in Rust).
const USER_SCHEMA: &str =
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'";

/// Objects that belong to an extension come and go with it: its row stands for them.
fn not_in_extension(catalog: &str, oid: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM pg_depend dep WHERE dep.classid = '{catalog}'::regclass AND dep.objid = {oid} AND dep.deptype = 'e')"
    )
}

fn comment(enabled: bool, catalog: &str, oid: &str, subid: &str) -> String {
    if !enabled {
        return "NULL::text".into();
    }
    format!(
        "(SELECT d.description FROM pg_description d WHERE d.classoid = '{catalog}'::regclass AND d.objoid = {oid} AND d.objsubid = {subid})"
    )
}

/// Grantee, privilege and grant option of an ACL; the grantor is left out (who granted is
/// history, not structure). Sorted and deduplicated in Rust. A NULL ACL (never granted nor
/// revoked) is the object kind's default privileges (`acldefault`: the owner's, and
/// PUBLIC's `EXECUTE` on a function): written out, so that a `REVOKE ... FROM PUBLIC` shows
/// as what it removed and a `GRANT` of what was granted already as nothing.
fn grants(enabled: bool, acl: &str, kind: char, owner: &str) -> String {
    if !enabled {
        return "'[]'::json".into();
    }
    format!(
        "coalesce((SELECT json_agg(json_build_object(
             'grantee', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)::text END,
             'privilege', a.privilege_type, 'grantable', a.is_grantable))
          FROM aclexplode(coalesce({acl}, acldefault('{kind}', {owner}))) a), '[]')"
    )
}

/// A collation other than the type's default, named as `COLLATE` takes it.
// What a table's and a materialized view's columns and storage share (`a` the attribute,
// `at` its type, `cl` the relation).
const COLUMN_STATISTICS: &str = "nullif(a.attstattarget, -1)";
const COLUMN_STORAGE: &str = "CASE WHEN a.attstorage <> at.typstorage THEN CASE a.attstorage WHEN 'p' THEN 'plain' WHEN 'e' THEN 'external' WHEN 'm' THEN 'main' WHEN 'x' THEN 'extended' END END";
/// `attcompression` is PostgreSQL 14's: read by name, absent before.
const COLUMN_COMPRESSION: &str =
    "CASE to_jsonb(a) ->> 'attcompression' WHEN 'p' THEN 'pglz' WHEN 'l' THEN 'lz4' END";
/// The attribute options PostgreSQL defines (a server may keep others of its own); NULL for
/// none.
const COLUMN_OPTIONS: &str = "(SELECT json_agg(o ORDER BY o) FROM unnest(a.attoptions) o WHERE o ~ '^n_distinct(_inherited)?=')";
const CLUSTERED_ON: &str = "(SELECT ic.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = cl.oid AND i.indisclustered)";
const TOAST_OPTIONS: &str = "coalesce((SELECT to_json(tc.reloptions) FROM pg_class tc WHERE tc.oid = cl.reltoastrelid AND tc.reloptions IS NOT NULL), '[]')";

fn collation(coll: &str, type_coll: &str) -> String {
    format!(
        "(SELECT CASE WHEN cn.nspname = 'pg_catalog' THEN quote_ident(co.collname)
                      ELSE quote_ident(cn.nspname) || '.' || quote_ident(co.collname) END
          FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace
          WHERE co.oid = {coll} AND {coll} <> {type_coll})"
    )
}

/// The settings that change how `pg_get_*def`, `format_type` and the deparsed defaults and
/// constants are written, pinned for the snapshot's transaction whatever the server's,
/// the database's, the role's or the connection's (`?options=-c ...`) values: the same
/// schema gives the same document. `search_path` empty of user schemas qualifies every name.
pub(crate) const PINNED_SETTINGS: &str = "\
SET LOCAL search_path = pg_catalog;
SET LOCAL quote_all_identifiers = off;
SET LOCAL standard_conforming_strings = on;
SET LOCAL IntervalStyle = postgres;
SET LOCAL DateStyle = 'ISO, MDY';
SET LOCAL TimeZone = 'UTC';
SET LOCAL bytea_output = hex;
SET LOCAL extra_float_digits = 1;
SET LOCAL lc_monetary = 'C';
SET LOCAL lc_numeric = 'C';
SET LOCAL xmloption = content;
";

fn queries(o: &SnapshotOptions) -> Vec<(&'static str, String)> {
    let (g, c) = (o.grants, o.comments);
    let rel_comment = comment(c, "pg_class", "cl.oid", "0");
    let wrap = |kind: &'static str, select: String| {
        (
            kind,
            format!(
                "SELECT '{kind}'::text, coalesce(json_agg(x), '[]'::json)::text FROM ({select}) x"
            ),
        )
    };
    vec![
        wrap(
            "schemas",
            format!(
                "SELECT n.nspname AS name, {} AS comment, {} AS grants
                 FROM pg_namespace n WHERE {USER_SCHEMA} AND {}",
                comment(c, "pg_namespace", "n.oid", "0"),
                grants(g, "n.nspacl", 'n', "n.nspowner"),
                not_in_extension("pg_namespace", "n.oid"),
            ),
        ),
        wrap(
            "extensions",
            "SELECT e.extname AS name, e.extversion AS version, n.nspname AS schema
             FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
                .into(),
        ),
        wrap(
            "enums",
            format!(
                "SELECT n.nspname AS schema, t.typname AS name,
                        coalesce((SELECT json_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid), '[]') AS labels,
                        {} AS comment, {} AS grants
                 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                 WHERE t.typtype = 'e' AND {USER_SCHEMA} AND {}",
                comment(c, "pg_type", "t.oid", "0"),
                type_grants(g),
                not_in_extension("pg_type", "t.oid"),
            ),
        ),
        wrap(
            "domains",
            format!(
                "SELECT n.nspname AS schema, t.typname AS name, format_type(t.typbasetype, t.typtypmod) AS type,
                        t.typnotnull AS not_null, t.typdefault AS default,
                        {} AS collation,
                        coalesce((SELECT json_agg(json_build_object('name', con.conname, 'definition', pg_get_constraintdef(con.oid), 'validated', con.convalidated, 'comment', {}))
                         FROM pg_constraint con WHERE con.contypid = t.oid), '[]') AS constraints,
                        {} AS comment, {} AS grants
                 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                 WHERE t.typtype = 'd' AND {USER_SCHEMA} AND {}",
                collation("t.typcollation", "(SELECT b.typcollation FROM pg_type b WHERE b.oid = t.typbasetype)"),
                comment(c, "pg_constraint", "con.oid", "0"),
                comment(c, "pg_type", "t.oid", "0"),
                type_grants(g),
                not_in_extension("pg_type", "t.oid"),
            ),
        ),
        wrap(
            "composite_types",
            format!(
                "SELECT n.nspname AS schema, t.typname AS name,
                        coalesce((SELECT json_agg(json_build_object('name', a.attname, 'type', format_type(a.atttypid, a.atttypmod),
                                                           'collation', {}) ORDER BY a.attnum)
                         FROM pg_attribute a JOIN pg_type at ON at.oid = a.atttypid
                         WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped), '[]') AS attributes,
                        {} AS comment, {} AS grants
                 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace JOIN pg_class cl ON cl.oid = t.typrelid
                 WHERE t.typtype = 'c' AND cl.relkind = 'c' AND {USER_SCHEMA} AND {}",
                collation("a.attcollation", "at.typcollation"),
                comment(c, "pg_type", "t.oid", "0"),
                type_grants(g),
                not_in_extension("pg_type", "t.oid"),
            ),
        ),
        wrap(
            "sequences",
            // Identity columns' sequences are the column's business (deptype 'i').
            format!(
                "SELECT n.nspname AS schema, cl.relname AS name, format_type(s.seqtypid, NULL) AS type,
                        s.seqstart AS start, s.seqincrement AS increment, s.seqmin AS min, s.seqmax AS max,
                        s.seqcache AS cache, s.seqcycle AS cycle, {} AS persistence,
                        (SELECT quote_ident(tn.nspname) || '.' || quote_ident(tc.relname) || '.' || quote_ident(a.attname)
                         FROM pg_depend d JOIN pg_class tc ON tc.oid = d.refobjid
                         JOIN pg_namespace tn ON tn.oid = tc.relnamespace
                         JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                         WHERE d.classid = 'pg_class'::regclass AND d.objid = cl.oid
                           AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'a') AS owned_by,
                        {rel_comment} AS comment, {} AS grants
                 FROM pg_sequence s JOIN pg_class cl ON cl.oid = s.seqrelid JOIN pg_namespace n ON n.oid = cl.relnamespace
                 WHERE {USER_SCHEMA}
                   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = cl.oid AND d.deptype IN ('i', 'e'))",
                persistence("cl.relpersistence"),
                grants(g, "cl.relacl", 's', "cl.relowner"),
            ),
        ),
        wrap(
            "tables",
            format!(
                "SELECT n.nspname AS schema, cl.relname AS name,
                        CASE cl.relkind WHEN 'p' THEN 'partitioned' ELSE 'table' END AS kind,
                        CASE cl.relpersistence WHEN 'u' THEN 'unlogged' ELSE 'permanent' END AS persistence,
                        CASE WHEN cl.relkind = 'p' THEN pg_get_partkeydef(cl.oid) END AS partition_key,
                        (SELECT i.inhparent::regclass::text FROM pg_inherits i WHERE i.inhrelid = cl.oid AND cl.relispartition) AS partition_of,
                        CASE WHEN cl.relispartition THEN pg_get_expr(cl.relpartbound, cl.oid) END AS partition_bound,
                        coalesce((SELECT json_agg(i.inhparent::regclass::text ORDER BY i.inhseqno) FROM pg_inherits i
                                  WHERE i.inhrelid = cl.oid AND NOT cl.relispartition), '[]') AS inherits,
                        CASE WHEN cl.reloftype <> 0 THEN cl.reloftype::regtype::text END AS of_type,
                        cl.relrowsecurity AS row_security, cl.relforcerowsecurity AS force_row_security,
                        coalesce(to_json(cl.reloptions), '[]') AS options,
                        (SELECT am.amname FROM pg_am am WHERE am.oid = cl.relam AND am.amname <> 'heap') AS access_method,
                        CASE cl.relreplident WHEN 'n' THEN 'nothing' WHEN 'f' THEN 'full'
                             WHEN 'i' THEN 'using index ' || coalesce((SELECT quote_ident(ic.relname) FROM pg_index i
                                  JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = cl.oid AND i.indisreplident), '?') END AS replica_identity,
                        {CLUSTERED_ON} AS clustered_on, {TOAST_OPTIONS} AS toast_options,
                        {rel_comment} AS comment, {} AS grants
                 FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace
                 WHERE cl.relkind IN ('r', 'p') AND {USER_SCHEMA} AND {}",
                grants(g, "cl.relacl", 'r', "cl.relowner"),
                not_in_extension("pg_class", "cl.oid"),
            ),
        ),
        wrap(
            "columns",
            format!(
                "SELECT n.nspname AS schema, cl.relname AS table, a.attnum AS position, a.attname AS name,
                        format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
                        CASE WHEN a.attgenerated = '' THEN pg_get_expr(ad.adbin, ad.adrelid) END AS default,
                        CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END AS identity,
                        CASE WHEN a.attgenerated = 's' THEN pg_get_expr(ad.adbin, ad.adrelid) END AS generated,
                        {} AS identity_sequence,
                        {} AS collation,
                        {COLUMN_STATISTICS} AS statistics, {COLUMN_STORAGE} AS storage,
                        {COLUMN_COMPRESSION} AS compression, coalesce({COLUMN_OPTIONS}, '[]') AS options,
                        (a.attinhcount > 0 AND NOT a.attislocal AND NOT cl.relispartition) AS inherited_only,
                        {} AS comment, {} AS grants
                 FROM pg_attribute a JOIN pg_class cl ON cl.oid = a.attrelid
                 JOIN pg_namespace n ON n.oid = cl.relnamespace JOIN pg_type at ON at.oid = a.atttypid
                 LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                 WHERE cl.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped AND {USER_SCHEMA}
                 ORDER BY a.attrelid, a.attnum",
                identity_sequence(),
                collation("a.attcollation", "at.typcollation"),
                comment(c, "pg_class", "cl.oid", "a.attnum"),
                // No column privileges unless granted (acldefault of a column is empty).
                grants(g, "a.attacl", 'c', "cl.relowner"),
            ),
        ),
        wrap(
            "constraints",
            // A foreign key to a partitioned table has a clone per partition on the same
            // table (conparentid): the parent constraint stands for them.
            format!(
                "SELECT n.nspname AS schema, cl.relname AS table, con.conname AS name,
                        CASE con.contype WHEN 'p' THEN 'primary_key' WHEN 'u' THEN 'unique' WHEN 'f' THEN 'foreign_key'
                             WHEN 'c' THEN 'check' WHEN 'x' THEN 'exclusion' ELSE 'trigger' END AS kind,
                        pg_get_constraintdef(con.oid) AS definition, con.convalidated AS validated,
                        CASE WHEN con.contype = 'f' THEN con.confrelid::regclass::text END AS references,
                        CASE WHEN con.contype = 'f' THEN {} END AS on_update,
                        CASE WHEN con.contype = 'f' THEN {} END AS on_delete,
                        (con.coninhcount > 0 AND NOT con.conislocal AND NOT cl.relispartition) AS inherited_only,
                        -- Its clones' too (a foreign key to a partitioned table has one per
                        -- partition, whose triggers enforce it there).
                        (SELECT string_agg(DISTINCT CASE tg.tgenabled WHEN 'D' THEN 'disabled' WHEN 'R' THEN 'replica' ELSE 'always' END, ', ')
                           FROM pg_trigger tg
                          WHERE tg.tgconstraint IN (WITH RECURSIVE clones(oid) AS (
                                    SELECT con.oid
                                    UNION ALL SELECT c2.oid FROM pg_constraint c2 JOIN clones ON c2.conparentid = clones.oid)
                                SELECT oid FROM clones)
                            AND tg.tgisinternal AND tg.tgenabled <> 'O') AS triggers,
                        {} AS comment
                 FROM pg_constraint con JOIN pg_class cl ON cl.oid = con.conrelid JOIN pg_namespace n ON n.oid = cl.relnamespace
                 WHERE cl.relkind IN ('r', 'p') AND {USER_SCHEMA}
                   AND NOT (con.conparentid <> 0 AND EXISTS (SELECT 1 FROM pg_constraint p WHERE p.oid = con.conparentid AND p.conrelid = con.conrelid))",
                fk_action("con.confupdtype"),
                fk_action("con.confdeltype"),
                comment(c, "pg_constraint", "con.oid", "0"),
            ),
        ),
        wrap(
            "indexes",
            format!(
                "SELECT n.nspname AS schema, cl.relname AS table, ic.relname AS name,
                        pg_get_indexdef(i.indexrelid) AS definition, i.indisunique AS unique,
                        i.indisprimary AS primary, i.indisvalid AS valid,
                        (SELECT format('%I.%I', pn.nspname, pc.relname) FROM pg_inherits ih
                         JOIN pg_class pc ON pc.oid = ih.inhparent JOIN pg_namespace pn ON pn.oid = pc.relnamespace
                         WHERE ih.inhrelid = i.indexrelid) AS attached_to,
                        {} AS comment
                 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class cl ON cl.oid = i.indrelid
                 JOIN pg_namespace n ON n.oid = cl.relnamespace
                 WHERE cl.relkind IN ('r', 'p', 'm') AND {USER_SCHEMA}",
                comment(c, "pg_class", "ic.oid", "0"),
            ),
        ),
        wrap(
            "triggers",
            format!(
                "SELECT n.nspname AS schema, cl.relname AS table, t.tgname AS name,
                        pg_get_triggerdef(t.oid) AS definition,
                        CASE t.tgenabled WHEN 'O' THEN 'enabled' WHEN 'D' THEN 'disabled'
                                         WHEN 'R' THEN 'replica' ELSE 'always' END AS enabled,
                        {} AS comment
                 FROM pg_trigger t JOIN pg_class cl ON cl.oid = t.tgrelid JOIN pg_namespace n ON n.oid = cl.relnamespace
                 WHERE NOT t.tgisinternal AND {USER_SCHEMA}",
                comment(c, "pg_trigger", "t.oid", "0"),
            ),
        ),
        wrap(
            "views",
            format!(
                "SELECT n.nspname AS schema, cl.relname AS name, cl.relkind = 'm' AS materialized,
                        NOT cl.relispopulated AS not_populated,
                        pg_get_viewdef(cl.oid, true) AS definition,
                        coalesce((SELECT json_agg(json_strip_nulls(json_build_object('name', a.attname, 'type', format_type(a.atttypid, a.atttypmod),
                                                           'collation', {}, 'grants', {},
                                                           'statistics', {COLUMN_STATISTICS}, 'storage', {COLUMN_STORAGE},
                                                           'compression', {COLUMN_COMPRESSION}, 'options', {COLUMN_OPTIONS})) ORDER BY a.attnum)
                         FROM pg_attribute a JOIN pg_type at ON at.oid = a.atttypid
                         WHERE a.attrelid = cl.oid AND a.attnum > 0 AND NOT a.attisdropped), '[]') AS columns,
                        {CLUSTERED_ON} AS clustered_on, {TOAST_OPTIONS} AS toast_options,
                        coalesce(to_json(cl.reloptions), '[]') AS options,
                        {rel_comment} AS comment, {} AS grants
                 FROM pg_class cl JOIN pg_namespace n ON n.oid = cl.relnamespace
                 WHERE cl.relkind IN ('v', 'm') AND {USER_SCHEMA} AND {}",
                collation("a.attcollation", "at.typcollation"),
                // No column privileges unless granted (acldefault of a column is empty).
                grants(g, "a.attacl", 'c', "cl.relowner"),
                grants(g, "cl.relacl", 'r', "cl.relowner"),
                not_in_extension("pg_class", "cl.oid"),
            ),
        ),
        wrap(
            "statistics",
            // Under the relation they are on, found by its schema and name.
            format!(
                "SELECT tn.nspname AS table_schema, tc.relname AS table, n.nspname AS schema, s.stxname AS name,
                        pg_get_statisticsobjdef(s.oid) AS definition, nullif(s.stxstattarget, -1) AS target,
                        {} AS comment
                 FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace
                 JOIN pg_class tc ON tc.oid = s.stxrelid JOIN pg_namespace tn ON tn.oid = tc.relnamespace
                 WHERE {USER_SCHEMA} AND {}",
                comment(c, "pg_statistic_ext", "s.oid", "0"),
                not_in_extension("pg_statistic_ext", "s.oid"),
            ),
        ),
        wrap(
            "policies",
            format!(
                "SELECT n.nspname AS schema, cl.relname AS table, p.polname AS name,
                        CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                                      WHEN 'd' THEN 'DELETE' ELSE 'ALL' END AS command,
                        p.polpermissive AS permissive,
                        coalesce((SELECT json_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r)::text END)
                                  FROM unnest(p.polroles) r), '[]') AS roles,
                        pg_get_expr(p.polqual, p.polrelid) AS using,
                        pg_get_expr(p.polwithcheck, p.polrelid) AS with_check,
                        {} AS comment
                 FROM pg_policy p JOIN pg_class cl ON cl.oid = p.polrelid JOIN pg_namespace n ON n.oid = cl.relnamespace
                 WHERE {USER_SCHEMA}",
                comment(c, "pg_policy", "p.oid", "0"),
            ),
        ),
        wrap(
            "functions",
            // pg_get_functiondef refuses aggregates: their parts stand for the definition.
            format!(
                "SELECT n.nspname AS schema, p.proname AS name,
                        CASE p.prokind WHEN 'f' THEN 'function' WHEN 'p' THEN 'procedure'
                                       WHEN 'a' THEN 'aggregate' ELSE 'window' END AS kind,
                        oidvectortypes(p.proargtypes) AS argument_types,
                        pg_get_function_identity_arguments(p.oid) AS arguments,
                        pg_get_function_result(p.oid) AS result,
                        l.lanname AS language,
                        CASE p.provolatile WHEN 'i' THEN 'immutable' WHEN 's' THEN 'stable' ELSE 'volatile' END AS volatility,
                        p.prosecdef AS security_definer,
                        coalesce((SELECT json_agg(e.extname::text ORDER BY e.extname) FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
                                  WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                                    AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'x'), '[]') AS depends_on_extensions,
                        CASE WHEN p.prokind = 'a' THEN
                            (SELECT format('aggregate sfunc=%s stype=%s finalfunc=%s combinefunc=%s initcond=%s sortop=%s',
                                           ag.aggtransfn::regproc, format_type(ag.aggtranstype, NULL), ag.aggfinalfn::regproc,
                                           ag.aggcombinefn::regproc, ag.agginitval, ag.aggsortop::regoperator)
                                    -- The other parts only where they are not the default, so
                                    -- that an older snapshot's aggregate stays identical.
                                    || CASE WHEN ag.aggmtransfn <> 0 THEN format(' msfunc=%s minvfunc=%s mstype=%s mfinalfunc=%s minitcond=%s',
                                           ag.aggmtransfn::regproc, ag.aggminvtransfn::regproc, format_type(ag.aggmtranstype, NULL),
                                           ag.aggmfinalfn::regproc, ag.aggminitval) ELSE '' END
                                    || CASE WHEN ag.aggserialfn <> 0 THEN format(' serialfunc=%s deserialfunc=%s',
                                           ag.aggserialfn::regproc, ag.aggdeserialfn::regproc) ELSE '' END
                                    || CASE WHEN ag.aggfinalextra THEN ' finalfunc_extra' ELSE '' END
                                    -- READ_ONLY is the default, READ_WRITE for ordered-set ones.
                                    || CASE WHEN ag.aggfinalmodify <> CASE WHEN ag.aggkind = 'n' THEN 'r' ELSE 'w' END
                                            THEN ' finalfunc_modify=' || ag.aggfinalmodify::text ELSE '' END
                                    || CASE WHEN ag.aggmtransfn <> 0 AND ag.aggmfinalmodify <> CASE WHEN ag.aggkind = 'n' THEN 'r' ELSE 'w' END
                                            THEN ' mfinalfunc_modify=' || ag.aggmfinalmodify::text ELSE '' END
                                    || CASE WHEN ag.aggtransspace <> 0 THEN ' sspace=' || ag.aggtransspace ELSE '' END
                                    || CASE WHEN ag.aggmtransspace <> 0 THEN ' msspace=' || ag.aggmtransspace ELSE '' END
                                    || CASE WHEN ag.aggkind <> 'n' THEN ' kind=' || ag.aggkind::text ELSE '' END
                                    || CASE WHEN p.proparallel <> 'u' THEN ' parallel=' || p.proparallel::text ELSE '' END
                             FROM pg_aggregate ag WHERE ag.aggfnoid = p.oid)
                        ELSE pg_get_functiondef(p.oid) END AS definition,
                        {} AS comment, {} AS grants
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
                 WHERE {USER_SCHEMA} AND {}",
                comment(c, "pg_proc", "p.oid", "0"),
                grants(g, "p.proacl", 'f', "p.proowner"),
                not_in_extension("pg_proc", "p.oid"),
            ),
        ),
        wrap(
            "objects",
            format!(
                "SELECT o.type AS kind, o.schema AS schema, o.identity AS identity, x.definition::text AS definition,
                        CASE x.classid
                            WHEN 'pg_rewrite'::regclass THEN (SELECT n.nspname FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
                                                              JOIN pg_namespace n ON n.oid = c.relnamespace WHERE r.oid = x.objid)
                            WHEN 'pg_default_acl'::regclass THEN (SELECT n.nspname FROM pg_default_acl d
                                                                  JOIN pg_namespace n ON n.oid = d.defaclnamespace WHERE d.oid = x.objid)
                        END AS scope,
                        {} AS comment
                 FROM ({CATALOG_OBJECTS}) x, pg_identify_object(x.classid, x.objid, 0) o
                 WHERE x.objid >= 16384
                   AND NOT EXISTS (SELECT 1 FROM pg_depend dep WHERE dep.classid = x.classid AND dep.objid = x.objid AND dep.deptype = 'e')
                   AND (o.schema IS NULL OR (o.schema NOT IN ('pg_catalog', 'information_schema') AND o.schema !~ '^pg_(toast|temp_)'))",
                if c {
                    "(SELECT d.description FROM pg_description d WHERE d.classoid = x.classid AND d.objoid = x.objid AND d.objsubid = 0)"
                } else {
                    "NULL::text"
                },
            ),
        ),
    ]
}

/// Every user object of the kinds the snapshot has no structure for, as `(classid, objid,
/// definition)`: each definition names what it refers to (`regprocedure`, `regtype`,
/// qualified names), never an OID, so that two databases built alike define them alike.
/// `verify`'s own event trigger ([`super::VERIFY_GUARD`]) is left out, as the ledger is.
const CATALOG_OBJECTS: &str = "
SELECT 'pg_collation'::regclass AS classid, c.oid AS objid,
       to_jsonb(c) - ARRAY['oid', 'collname', 'collnamespace', 'collowner', 'collversion'] AS definition
  FROM pg_collation c
UNION ALL SELECT 'pg_conversion'::regclass, c.oid,
       jsonb_build_object('from', pg_encoding_to_char(c.conforencoding), 'to', pg_encoding_to_char(c.contoencoding),
                          'function', c.conproc::regprocedure::text, 'default', c.condefault)
  FROM pg_conversion c
UNION ALL SELECT 'pg_language'::regclass, l.oid,
       jsonb_build_object('trusted', l.lanpltrusted, 'procedural', l.lanispl, 'handler', l.lanplcallfoid::regprocedure::text,
                          'inline', l.laninline::regprocedure::text, 'validator', l.lanvalidator::regprocedure::text)
  FROM pg_language l
UNION ALL SELECT 'pg_ts_parser'::regclass, p.oid,
       jsonb_build_object('start', p.prsstart::regprocedure::text, 'gettoken', p.prstoken::regprocedure::text,
                          'end', p.prsend::regprocedure::text, 'headline', p.prsheadline::regprocedure::text,
                          'lextypes', p.prslextype::regprocedure::text)
  FROM pg_ts_parser p
UNION ALL SELECT 'pg_ts_template'::regclass, t.oid,
       jsonb_build_object('init', t.tmplinit::regprocedure::text, 'lexize', t.tmpllexize::regprocedure::text)
  FROM pg_ts_template t
UNION ALL SELECT 'pg_ts_dict'::regclass, d.oid,
       jsonb_build_object('template', (SELECT format('%I.%I', n.nspname, t.tmplname) FROM pg_ts_template t
                                       JOIN pg_namespace n ON n.oid = t.tmplnamespace WHERE t.oid = d.dicttemplate),
                          'options', d.dictinitoption)
  FROM pg_ts_dict d
UNION ALL SELECT 'pg_ts_config'::regclass, c.oid,
       jsonb_build_object('parser', (SELECT format('%I.%I', n.nspname, p.prsname) FROM pg_ts_parser p
                                     JOIN pg_namespace n ON n.oid = p.prsnamespace WHERE p.oid = c.cfgparser),
                          'mapping', (SELECT jsonb_agg(s.m ORDER BY s.m) FROM (
                              SELECT format('%s %s %s', m.maptokentype, m.mapseqno, m.mapdict::regdictionary) AS m
                              FROM pg_ts_config_map m WHERE m.mapcfg = c.oid) s))
  FROM pg_ts_config c
UNION ALL SELECT 'pg_foreign_data_wrapper'::regclass, w.oid,
       jsonb_build_object('handler', w.fdwhandler::regproc::text, 'validator', w.fdwvalidator::regproc::text,
                          'options', (SELECT jsonb_agg(o ORDER BY o) FROM unnest(w.fdwoptions) o))
  FROM pg_foreign_data_wrapper w
UNION ALL SELECT 'pg_foreign_server'::regclass, s.oid,
       jsonb_build_object('wrapper', (SELECT w.fdwname FROM pg_foreign_data_wrapper w WHERE w.oid = s.srvfdw),
                          'type', s.srvtype, 'version', s.srvversion,
                          'options', (SELECT jsonb_agg(o ORDER BY o) FROM unnest(s.srvoptions) o))
  FROM pg_foreign_server s
UNION ALL SELECT 'pg_class'::regclass, c.oid,
       jsonb_build_object('server', (SELECT s.srvname FROM pg_foreign_table ft JOIN pg_foreign_server s ON s.oid = ft.ftserver
                                     WHERE ft.ftrelid = c.oid),
                          'options', (SELECT jsonb_agg(o ORDER BY o) FROM pg_foreign_table ft, unnest(ft.ftoptions) o
                                      WHERE ft.ftrelid = c.oid),
                          'columns', (SELECT jsonb_agg(jsonb_build_array(a.attname, format_type(a.atttypid, a.atttypmod),
                                                                         a.attnotnull, (SELECT jsonb_agg(o ORDER BY o) FROM unnest(a.attfdwoptions) o))
                                                       -- A collation other than its type's, named.
                                                       || CASE WHEN a.attcollation <> (SELECT ty.typcollation FROM pg_type ty WHERE ty.oid = a.atttypid)
                                                               THEN jsonb_build_array((SELECT format('%I.%I', cn.nspname, co.collname) FROM pg_collation co
                                                                                       JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = a.attcollation))
                                                               ELSE '[]'::jsonb END
                                                        ORDER BY a.attnum)
                                      FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped))
  FROM pg_class c WHERE c.relkind = 'f'
UNION ALL SELECT 'pg_operator'::regclass, o.oid,
       jsonb_build_object('left', o.oprleft::regtype::text, 'right', o.oprright::regtype::text,
                          'result', o.oprresult::regtype::text, 'function', o.oprcode::regprocedure::text,
                          'commutator', o.oprcom::regoperator::text, 'negator', o.oprnegate::regoperator::text,
                          'restrict', o.oprrest::regprocedure::text, 'join', o.oprjoin::regprocedure::text,
                          'merges', o.oprcanmerge, 'hashes', o.oprcanhash)
  FROM pg_operator o
UNION ALL SELECT 'pg_opfamily'::regclass, f.oid,
       jsonb_build_object('method', (SELECT am.amname FROM pg_am am WHERE am.oid = f.opfmethod),
                          'operators', (SELECT jsonb_agg(s.m ORDER BY s.m) FROM (
                              SELECT format('%s %s (%s, %s)%s', a.amopstrategy, a.amopopr::regoperator,
                                            a.amoplefttype::regtype, a.amoprighttype::regtype,
                                            -- An ordering operator's sort family (`FOR ORDER BY`); a
                                            -- search operator's entry is as it always was.
                                            CASE WHEN a.amoppurpose = 'o' THEN ' FOR ORDER BY ' ||
                                                 (SELECT format('%I.%I', sn.nspname, sf.opfname) FROM pg_opfamily sf
                                                  JOIN pg_namespace sn ON sn.oid = sf.opfnamespace WHERE sf.oid = a.amopsortfamily)
                                                 ELSE '' END) AS m
                              FROM pg_amop a WHERE a.amopfamily = f.oid) s),
                          'functions', (SELECT jsonb_agg(s.m ORDER BY s.m) FROM (
                              SELECT format('%s %s (%s, %s)', p.amprocnum, p.amproc::regprocedure,
                                            p.amproclefttype::regtype, p.amprocrighttype::regtype) AS m
                              FROM pg_amproc p WHERE p.amprocfamily = f.oid) s))
  FROM pg_opfamily f
UNION ALL SELECT 'pg_opclass'::regclass, c.oid,
       jsonb_build_object('method', (SELECT am.amname FROM pg_am am WHERE am.oid = c.opcmethod),
                          'type', c.opcintype::regtype::text, 'default', c.opcdefault,
                          'storage', c.opckeytype::regtype::text,
                          'family', (SELECT format('%I.%I', n.nspname, f.opfname) FROM pg_opfamily f
                                     JOIN pg_namespace n ON n.oid = f.opfnamespace WHERE f.oid = c.opcfamily))
  FROM pg_opclass c
UNION ALL SELECT 'pg_cast'::regclass, c.oid,
       jsonb_build_object('function', c.castfunc::regprocedure::text, 'context', c.castcontext, 'method', c.castmethod)
  FROM pg_cast c
UNION ALL SELECT 'pg_event_trigger'::regclass, e.oid,
       jsonb_build_object('event', e.evtevent, 'function', e.evtfoid::regprocedure::text, 'enabled', e.evtenabled,
                          'tags', (SELECT jsonb_agg(g ORDER BY g) FROM unnest(e.evttags) g))
  FROM pg_event_trigger e WHERE e.evtname <> 'stepmigrate_verify_guard'
UNION ALL SELECT 'pg_am'::regclass, a.oid,
       jsonb_build_object('type', a.amtype, 'handler', a.amhandler::regproc::text)
  FROM pg_am a
UNION ALL SELECT 'pg_publication'::regclass, p.oid,
       (to_jsonb(p) - ARRAY['oid', 'pubname', 'pubowner'])
       || jsonb_build_object('tables', (SELECT jsonb_agg(to_jsonb(pt) - 'pubname' ORDER BY pt.schemaname, pt.tablename)
                                        FROM pg_publication_tables pt WHERE pt.pubname = p.pubname))
       -- What it was declared for, where the tables it publishes today do not tell: schemas
       -- (`FOR TABLES IN SCHEMA`, PostgreSQL 15+, found through their dependencies so that the
       -- query runs on every version), and its tables when one is partitioned or has a column
       -- list. Absent otherwise, as in snapshots taken before.
       || jsonb_strip_nulls(jsonb_build_object(
              'schemas', (SELECT jsonb_agg(d.refobjid::regnamespace::text ORDER BY d.refobjid::regnamespace::text)
                          FROM pg_depend d
                          WHERE d.classid = to_regclass('pg_catalog.pg_publication_namespace') AND d.refclassid = 'pg_namespace'::regclass
                            AND EXISTS (SELECT 1 FROM pg_depend d2 WHERE d2.classid = d.classid AND d2.objid = d.objid
                                        AND d2.refclassid = 'pg_publication'::regclass AND d2.refobjid = p.oid)),
              'declared', (SELECT CASE WHEN bool_or(c.relkind = 'p' OR to_jsonb(pr)->>'prattrs' IS NOT NULL) THEN
                                  jsonb_agg(jsonb_build_array(pr.prrelid::regclass::text,
                                      (SELECT jsonb_agg(a.attname ORDER BY a.attnum) FROM pg_attribute a
                                       WHERE a.attrelid = pr.prrelid AND a.attnum::text = ANY (string_to_array(to_jsonb(pr)->>'prattrs', ' '))))
                                  ORDER BY pr.prrelid::regclass::text) END
                           FROM pg_publication_rel pr JOIN pg_class c ON c.oid = pr.prrelid WHERE pr.prpubid = p.oid)))
  FROM pg_publication p
UNION ALL SELECT 'pg_transform'::regclass, t.oid,
       jsonb_build_object('language', (SELECT l.lanname FROM pg_language l WHERE l.oid = t.trflang),
                          'from_sql', t.trffromsql::regprocedure::text, 'to_sql', t.trftosql::regprocedure::text)
  FROM pg_transform t
UNION ALL SELECT 'pg_rewrite'::regclass, r.oid,
       jsonb_build_object('definition', pg_get_ruledef(r.oid), 'enabled', r.ev_enabled)
  FROM pg_rewrite r WHERE r.rulename <> '_RETURN'
UNION ALL SELECT 'pg_default_acl'::regclass, d.oid, to_jsonb(d.defaclacl::text)
  FROM pg_default_acl d
UNION ALL SELECT 'pg_type'::regclass, t.oid,
       jsonb_build_object('type', t.typtype, 'input', t.typinput::regprocedure::text, 'output', t.typoutput::regprocedure::text,
                          'receive', t.typreceive::regprocedure::text, 'send', t.typsend::regprocedure::text,
                          'typmod_in', t.typmodin::regprocedure::text, 'typmod_out', t.typmodout::regprocedure::text,
                          'analyze', t.typanalyze::regprocedure::text, 'length', t.typlen, 'by_value', t.typbyval,
                          'align', t.typalign, 'storage', t.typstorage, 'category', t.typcategory,
                          'preferred', t.typispreferred, 'delimiter', t.typdelim,
                          'element', CASE WHEN t.typelem <> 0 THEN t.typelem::regtype::text END,
                          'default', t.typdefault, 'collatable', t.typcollation <> 0,
                          'range', (SELECT jsonb_build_object('subtype', r.rngsubtype::regtype::text,
                                       'opclass', (SELECT format('%I.%I', n.nspname, c.opcname) FROM pg_opclass c
                                                   JOIN pg_namespace n ON n.oid = c.opcnamespace WHERE c.oid = r.rngsubopc),
                                       'collation', (SELECT format('%I.%I', n.nspname, c.collname) FROM pg_collation c
                                                     JOIN pg_namespace n ON n.oid = c.collnamespace WHERE c.oid = r.rngcollation),
                                       'canonical', r.rngcanonical::regprocedure::text, 'subdiff', r.rngsubdiff::regprocedure::text)
                                    FROM pg_range r WHERE r.rngtypid = t.oid))
       -- Its subscripting handler (PostgreSQL 14 and later; read through the row so that the
       -- query runs on older servers), only where it has one.
       || CASE WHEN coalesce(to_jsonb(t) ->> 'typsubscript', '-') NOT IN ('-', '0')
               THEN jsonb_build_object('subscript', to_jsonb(t) ->> 'typsubscript') ELSE '{}'::jsonb END
  -- Base, shell and range types (enums, domains and composites have their own sections; an
  -- array or a multirange type comes with the type it is of).
  FROM pg_type t WHERE t.typtype IN ('b', 'p', 'r')
   AND NOT EXISTS (SELECT 1 FROM pg_type e WHERE e.typarray = t.oid)";

/// Grants on a type (enum, domain, composite): `acldefault` gives PUBLIC's `USAGE`, so a
/// `REVOKE USAGE ON TYPE ... FROM PUBLIC` shows as what it removed.
fn type_grants(enabled: bool) -> String {
    grants(enabled, "t.typacl", 'T', "t.typowner")
}

fn persistence(column: &str) -> String {
    format!("CASE {column} WHEN 'u' THEN 'unlogged' ELSE 'permanent' END")
}

/// The options of an identity column's sequence (found by its internal dependency on the
/// column), as one JSON object; NULL for any other column.
fn identity_sequence() -> String {
    format!(
        "(SELECT json_build_object('name', quote_ident(sn.nspname) || '.' || quote_ident(sc.relname),
                 'type', format_type(s.seqtypid, NULL), 'start', s.seqstart, 'increment', s.seqincrement,
                 'min', s.seqmin, 'max', s.seqmax, 'cache', s.seqcache, 'cycle', s.seqcycle,
                 'persistence', {})
          FROM pg_depend d JOIN pg_class sc ON sc.oid = d.objid JOIN pg_namespace sn ON sn.oid = sc.relnamespace
          JOIN pg_sequence s ON s.seqrelid = sc.oid
          WHERE a.attidentity <> '' AND d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
            AND d.refobjid = a.attrelid AND d.refobjsubid = a.attnum AND d.deptype = 'i' AND sc.relkind = 'S')",
        persistence("sc.relpersistence")
    )
}

fn fk_action(column: &str) -> String {
    format!(
        "CASE {column} WHEN 'a' THEN 'no action' WHEN 'r' THEN 'restrict' WHEN 'c' THEN 'cascade'
                       WHEN 'n' THEN 'set null' ELSE 'set default' END"
    )
}

/// A row of an object that lives under a table (or view).
#[derive(Deserialize)]
struct Owned<T> {
    schema: String,
    table: String,
    #[serde(flatten)]
    item: T,
}

/// A statistics object, with the relation it is on.
#[derive(Deserialize)]
struct StatisticsRow {
    table_schema: String,
    table: String,
    #[serde(flatten)]
    item: Statistics,
}

/// A function as the catalog query answers it, before its definition becomes a hash.
#[derive(Deserialize)]
struct FunctionRow {
    schema: String,
    name: String,
    kind: FunctionKind,
    argument_types: String,
    arguments: String,
    result: Option<String>,
    language: String,
    volatility: Volatility,
    security_definer: bool,
    #[serde(default)]
    depends_on_extensions: Vec<String>,
    definition: Option<String>,
    comment: Option<String>,
    grants: Vec<Grant>,
}

impl Snapshot {
    /// Reads the schema of the database `conn` is connected to. One round trip, inside a
    /// read-only repeatable-read transaction (one consistent view) whose `search_path` is
    /// `pg_catalog` alone, so that every name the catalog functions print is qualified the
    /// same way, and whose other rendering settings are pinned ([`PINNED_SETTINGS`]), whatever
    /// the session's. Within a transaction begun through sqlx
    /// (`conn.begin()`), it reads in a savepoint and sees that transaction's changes; a
    /// transaction begun by a raw `BEGIN` is not known to sqlx and must not be open.
    #[tracing::instrument(name = "snapshot", skip_all)]
    pub async fn capture(
        conn: &mut PgConnection,
        options: &SnapshotOptions,
    ) -> Result<Snapshot, Error> {
        let context = "reading the schema from the catalogs";
        // Inside a caller's transaction, a savepoint: its view of the schema (e.g. a
        // migration not yet committed) is the one to read, and it stays the caller's to end.
        let mut tx = if conn.is_in_transaction() {
            conn.begin().await
        } else {
            conn.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .await
        }
        .map_err(|e| Error::database(context, e))?;
        let mut sql = String::from(PINNED_SETTINGS);
        for (_, query) in queries(options) {
            sql.push_str(&query);
            sql.push_str(";\n");
        }
        let rows = sqlx::raw_sql(&sql)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| Error::database(context, e))?;
        tx.rollback()
            .await
            .map_err(|e| Error::database(context, e))?;
        let mut docs: HashMap<String, String> = HashMap::new();
        for row in rows {
            let kind: String = row.try_get(0).map_err(|e| Error::database(context, e))?;
            let doc: String = row.try_get(1).map_err(|e| Error::database(context, e))?;
            docs.insert(kind, doc);
        }
        let snapshot = assemble(&docs, options)?;
        tracing::debug!(objects = snapshot.object_count(), "snapshot taken");
        Ok(snapshot)
    }

    /// [`Snapshot::capture`] on a connection of `db`.
    pub async fn capture_database(
        db: &Database,
        options: &SnapshotOptions,
    ) -> Result<Snapshot, Error> {
        let mut conn = db.connect().await?;
        Snapshot::capture(&mut conn, options).await
    }
}

fn parse<T: DeserializeOwned>(docs: &HashMap<String, String>, kind: &str) -> Result<Vec<T>, Error> {
    let text = docs.get(kind).map(String::as_str).unwrap_or("[]");
    serde_json::from_str(text).map_err(|e| Error::Database {
        context: format!("reading {kind} from the catalogs"),
        message: format!("unexpected answer: {e}"),
    })
}

fn assemble(docs: &HashMap<String, String>, o: &SnapshotOptions) -> Result<Snapshot, Error> {
    let wants = |schema: &str| o.wants_schema(schema);
    let mut schemas: Vec<Schema> = parse(docs, "schemas")?;
    schemas.retain(|s| wants(&s.name));
    let mut extensions: Vec<Extension> = parse(docs, "extensions")?;
    extensions.retain(|e| o.include_schemas.is_empty() || o.include_schemas.contains(&e.schema));
    let mut enums: Vec<Enum> = parse(docs, "enums")?;
    enums.retain(|x| wants(&x.schema));
    let mut domains: Vec<Domain> = parse(docs, "domains")?;
    domains.retain(|x| wants(&x.schema));
    let mut composite_types: Vec<CompositeType> = parse(docs, "composite_types")?;
    composite_types.retain(|x| wants(&x.schema));
    let mut sequences: Vec<Sequence> = parse(docs, "sequences")?;
    sequences.retain(|x| wants(&x.schema));
    let mut tables: Vec<Table> = parse(docs, "tables")?;
    tables.retain(|x| wants(&x.schema));
    let mut views: Vec<View> = parse(docs, "views")?;
    views.retain(|x| wants(&x.schema));
    let functions: Vec<Function> = parse::<FunctionRow>(docs, "functions")?
        .into_iter()
        .filter(|f| wants(&f.schema))
        .map(|f| Function {
            definition_hash: sha256_hex(f.definition.as_deref().unwrap_or("")),
            schema: f.schema,
            name: f.name,
            kind: f.kind,
            argument_types: f.argument_types,
            arguments: f.arguments,
            result: f.result,
            language: f.language,
            volatility: f.volatility,
            security_definer: f.security_definer,
            depends_on_extensions: f.depends_on_extensions,
            comment: f.comment,
            grants: f.grants,
        })
        .collect();

    let mut objects: Vec<CatalogObject> = parse(docs, "objects")?;
    // Objects of the whole database (a cast, a language) go with the whole database, not
    // with a `--schema` scope.
    objects.retain(|x| match x.schema.as_ref().or(x.scope.as_ref()) {
        Some(schema) => wants(schema),
        None => o.include_schemas.is_empty(),
    });

    // Children go to their table (or view); those of relations left out are dropped.
    let table_at: HashMap<(String, String), usize> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| ((t.schema.clone(), t.name.clone()), i))
        .collect();
    let view_at: HashMap<(String, String), usize> = views
        .iter()
        .enumerate()
        .map(|(i, v)| ((v.schema.clone(), v.name.clone()), i))
        .collect();
    // Columns arrive in attnum order, which the push keeps.
    for c in parse::<Owned<Column>>(docs, "columns")? {
        if let Some(&i) = table_at.get(&(c.schema, c.table)) {
            tables[i].columns.push(c.item);
        }
    }
    for c in parse::<Owned<Constraint>>(docs, "constraints")? {
        if let Some(&i) = table_at.get(&(c.schema, c.table)) {
            tables[i].constraints.push(c.item);
        }
    }
    for x in parse::<Owned<Index>>(docs, "indexes")? {
        let key = (x.schema, x.table);
        if let Some(&i) = table_at.get(&key) {
            tables[i].indexes.push(x.item);
        } else if let Some(&i) = view_at.get(&key) {
            views[i].indexes.push(x.item);
        }
    }
    for p in parse::<Owned<Policy>>(docs, "policies")? {
        if let Some(&i) = table_at.get(&(p.schema, p.table)) {
            tables[i].policies.push(p.item);
        }
    }
    for x in parse::<StatisticsRow>(docs, "statistics")? {
        let key = (x.table_schema, x.table);
        if let Some(&i) = table_at.get(&key) {
            tables[i].statistics.push(x.item);
        } else if let Some(&i) = view_at.get(&key) {
            views[i].statistics.push(x.item);
        }
    }
    for t in parse::<Owned<Trigger>>(docs, "triggers")? {
        let key = (t.schema, t.table);
        if let Some(&i) = table_at.get(&key) {
            tables[i].triggers.push(t.item);
        } else if let Some(&i) = view_at.get(&key) {
            views[i].triggers.push(t.item);
        }
    }

    let mut snapshot = Snapshot {
        format: FORMAT_VERSION,
        options: Some(Scope::from(o)),
        schemas,
        extensions,
        enums,
        domains,
        composite_types,
        sequences,
        tables,
        views,
        functions,
        objects,
    };
    snapshot.remove_ledger(&o.ledger);
    snapshot.normalize();
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verify_guard_is_left_out() {
        assert!(
            CATALOG_OBJECTS.contains(&format!("e.evtname <> '{}'", crate::schema::VERIFY_GUARD))
        );
    }
}
