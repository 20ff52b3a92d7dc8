//! Every lint rule that is on by default fires on a bad example and not on its fixed form, as
//! `check` runs it (the file's transaction mode included).

use std::path::Path;

use stepmigrate_check::{check_script, LintRules, Script};
use stepmigrate_core::migration::Mode;

use Mode::{NoTransaction as OUT, Transactional as TX};

/// (rule, mode the file runs in, bad example, fixed form)
const CASES: &[(&str, Mode, &str, &str)] = &[
    ("batch-not-idempotent", Mode::Batch,
        "UPDATE t SET c = lower(b) WHERE id IN (SELECT id FROM t ORDER BY id LIMIT 1000);",
        "UPDATE t SET c = lower(b) WHERE id IN (SELECT id FROM t WHERE c IS NULL ORDER BY id LIMIT 1000);"),
    ("adding-field-with-default", TX,
        "ALTER TABLE t ADD COLUMN c timestamptz DEFAULT clock_timestamp();",
        "ALTER TABLE t ADD COLUMN c timestamptz DEFAULT now();"),
    ("adding-foreign-key-constraint", TX,
        "ALTER TABLE t ADD CONSTRAINT t_u FOREIGN KEY (u) REFERENCES users (id);",
        "ALTER TABLE t ADD CONSTRAINT t_u FOREIGN KEY (u) REFERENCES users (id) NOT VALID;"),
    ("adding-not-nullable-field", TX,
        "ALTER TABLE t ALTER COLUMN c SET NOT NULL;",
        "ALTER TABLE t ADD CONSTRAINT c_not_null CHECK (c IS NOT NULL) NOT VALID;"),
    ("adding-required-field", TX,
        "ALTER TABLE t ADD COLUMN c text NOT NULL;",
        "ALTER TABLE t ADD COLUMN c text NOT NULL DEFAULT '';"),
    ("adding-serial-primary-key-field", TX,
        "ALTER TABLE t ADD PRIMARY KEY (id);",
        "ALTER TABLE t ADD CONSTRAINT t_pk PRIMARY KEY USING INDEX t_pk_idx;"),
    ("ban-alter-domain-with-add-constraint", TX,
        "ALTER DOMAIN d ADD CONSTRAINT d_positive CHECK (VALUE > 0);",
        "ALTER DOMAIN d OWNER TO app;"),
    ("ban-alter-identity", TX,
        "ALTER TABLE t ALTER COLUMN id DROP IDENTITY;",
        "ALTER TABLE t ALTER COLUMN id SET STATISTICS 100;"),
    ("ban-char-field", TX,
        "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY, code char(2));",
        "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY, code text);"),
    ("ban-concurrent-index-creation-in-transaction", TX,
        "SELECT 1;\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (c);",
        "SELECT 1;\nCREATE INDEX IF NOT EXISTS i ON t (c);"),
    ("ban-create-domain-with-constraint", TX,
        "CREATE DOMAIN d AS int CHECK (VALUE > 0);",
        "CREATE DOMAIN d AS int;"),
    ("ban-drop-column", TX,
        "ALTER TABLE t DROP COLUMN c;",
        "ALTER TABLE t ALTER COLUMN c DROP DEFAULT;"),
    ("ban-drop-constraint", TX,
        "ALTER TABLE t DROP CONSTRAINT t_check;",
        "ALTER TABLE t VALIDATE CONSTRAINT t_check;"),
    ("ban-drop-database", TX, "DROP DATABASE d;", "SELECT 1;"),
    ("ban-drop-default", TX,
        "ALTER TABLE t ALTER COLUMN c DROP DEFAULT;",
        "ALTER TABLE t ALTER COLUMN c SET STATISTICS 10;"),
    ("ban-drop-domain", TX, "DROP DOMAIN d;", "ALTER DOMAIN d OWNER TO app;"),
    ("ban-drop-extension", TX, "DROP EXTENSION pgcrypto;", "CREATE EXTENSION IF NOT EXISTS pgcrypto;"),
    ("ban-drop-function", TX, "DROP FUNCTION f();", "ALTER FUNCTION f() OWNER TO app;"),
    ("ban-drop-generated-expression", TX,
        "ALTER TABLE t ALTER COLUMN c DROP EXPRESSION;",
        "ALTER TABLE t ALTER COLUMN c SET STATISTICS 10;"),
    ("ban-drop-not-null", TX,
        "ALTER TABLE t ALTER COLUMN c DROP NOT NULL;",
        "ALTER TABLE t ALTER COLUMN c SET STATISTICS 10;"),
    ("ban-drop-schema", TX, "DROP SCHEMA s;", "CREATE SCHEMA IF NOT EXISTS s;"),
    ("ban-drop-sequence", TX, "DROP SEQUENCE s;", "ALTER SEQUENCE s OWNER TO app;"),
    ("ban-drop-table", TX, "DROP TABLE t;", "ALTER TABLE t OWNER TO app;"),
    ("ban-drop-type", TX, "DROP TYPE mood;", "ALTER TYPE mood OWNER TO app;"),
    ("ban-drop-view", TX, "DROP VIEW v;", "ALTER VIEW v OWNER TO app;"),
    ("ban-duplicate-column-assignments", TX,
        "UPDATE t SET a = 1, a = 2 WHERE id = 1;",
        "UPDATE t SET a = 1, b = 2 WHERE id = 1;"),
    ("ban-set-schema", TX, "ALTER TABLE t SET SCHEMA archive;", "ALTER TABLE t OWNER TO app;"),
    ("ban-truncate-cascade", TX, "TRUNCATE t CASCADE;", "TRUNCATE t;"),
    ("ban-uncommitted-transaction", OUT, "BEGIN;\nALTER TABLE t ADD COLUMN IF NOT EXISTS c text;", "SELECT 1;"),
    ("changing-column-type", TX,
        "ALTER TABLE t ALTER COLUMN c TYPE bigint;",
        "ALTER TABLE t ADD COLUMN c_new bigint;"),
    ("default-partition-scan", OUT,
        "CREATE TABLE pt (id int) PARTITION BY RANGE (id);\nCREATE TABLE pd PARTITION OF pt DEFAULT;\nCREATE TABLE p1 PARTITION OF pt FOR VALUES FROM (0) TO (10);",
        "CREATE TABLE pt (id int) PARTITION BY RANGE (id);\nCREATE TABLE p1 PARTITION OF pt FOR VALUES FROM (0) TO (10);\nCREATE TABLE pd PARTITION OF pt DEFAULT;"),
    ("blocking-scan", TX,
        "ALTER TABLE t ADD COLUMN f bigint CHECK (f >= 0);",
        "ALTER TABLE t ADD COLUMN f bigint;"),
    ("scan-under-held-lock", TX,
        "ALTER TABLE t ADD COLUMN z int;\nUPDATE t SET z = 1 WHERE id > 0;",
        "UPDATE t SET c = 1 WHERE id > 0;\nALTER TABLE t ADD COLUMN z int;"),
    ("attach-partition-scan", TX,
        "ALTER TABLE pt ATTACH PARTITION old FOR VALUES FROM (0) TO (10);",
        "ALTER TABLE pt DETACH PARTITION old;"),
    ("unknown-ignored-rule", TX,
        "-- squawk-ignore ban-drop-columns\nSELECT 1;",
        "-- squawk-ignore ban-drop-column\nSELECT 1;"),
    ("constraint-missing-not-valid", TX,
        "ALTER TABLE t ADD CONSTRAINT t_c CHECK (c > 0);",
        "ALTER TABLE t ADD CONSTRAINT t_c CHECK (c > 0) NOT VALID;"),
    ("delete-without-where", TX, "DELETE FROM t;", "DELETE FROM t WHERE id < 100;"),
    ("disallowed-unique-constraint", TX,
        "ALTER TABLE t ADD CONSTRAINT t_u UNIQUE (c);",
        "ALTER TABLE t ADD CONSTRAINT t_u UNIQUE USING INDEX t_u_idx;"),
    ("identifier-too-long", TX,
        "CREATE TABLE this_table_name_is_far_too_long_for_postgresql_which_cuts_it_at_63_bytes (id bigint GENERATED ALWAYS AS IDENTITY);",
        "CREATE TABLE a_short_name (id bigint GENERATED ALWAYS AS IDENTITY);"),
    ("prefer-bigint-over-int", TX,
        "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY, n int);",
        "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY, n bigint);"),
    ("prefer-bigint-over-smallint", TX,
        "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY, n smallint);",
        "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY, n bigint);"),
    ("prefer-identity", TX,
        "CREATE TABLE t (id bigserial);",
        "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY);"),
    ("prefer-robust-stmts", OUT,
        "CREATE INDEX CONCURRENTLY i ON t (c);",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (c);"),
    ("prefer-text-field", TX,
        "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY, name varchar(100));",
        "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY, name text);"),
    ("prefer-timestamp-tz", TX,
        "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY, at timestamp);",
        "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY, at timestamptz);"),
    ("renaming-column", TX, "ALTER TABLE t RENAME COLUMN a TO b;", "ALTER TABLE t ADD COLUMN b text;"),
    ("renaming-object", TX, "ALTER VIEW v RENAME TO w;", "ALTER VIEW v OWNER TO app;"),
    ("renaming-table", TX, "ALTER TABLE t RENAME TO u;", "ALTER TABLE t OWNER TO app;"),
    ("require-concurrent-index-creation", OUT,
        "CREATE INDEX IF NOT EXISTS i ON t (c);",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (c);"),
    ("require-concurrent-index-deletion", OUT,
        "DROP INDEX IF EXISTS i;",
        "DROP INDEX CONCURRENTLY IF EXISTS i;"),
    ("require-concurrent-partition-detach", TX,
        "ALTER TABLE p DETACH PARTITION p1;",
        "SELECT 1;"),
    ("require-concurrent-reindex", OUT,
        "REINDEX INDEX i;",
        "REINDEX INDEX CONCURRENTLY i;"),
    ("require-enum-value-ordering", TX,
        "ALTER TYPE mood ADD VALUE 'meh';",
        "ALTER TYPE mood ADD VALUE 'meh' AFTER 'ok';"),
    ("transaction-nesting", TX, "BEGIN;\nSELECT 1;\nCOMMIT;", "SELECT 1;"),
    ("table-rewrite", TX, "ALTER TABLE t SET UNLOGGED;", "ALTER TABLE t SET (fillfactor = 90);"),
    ("adding-serial-field", TX,
        "ALTER TABLE t ADD COLUMN n bigserial;",
        "ALTER TABLE t ADD COLUMN n bigint;"),
    ("require-concurrent-refresh", TX,
        "REFRESH MATERIALIZED VIEW v;",
        "REFRESH MATERIALIZED VIEW CONCURRENTLY v;"),
    ("ban-truncate", TX, "TRUNCATE t;", "DELETE FROM t WHERE id < 100;"),
    ("do-block-not-linted", TX, "DO $$BEGIN PERFORM 1; END$$;", "SELECT 1;"),
    ("update-without-where", TX, "UPDATE t SET a = 1;", "UPDATE t SET a = 1 WHERE id < 100;"),
    ("ban-drop-cascade", TX, "DROP SCHEMA s CASCADE;", "DROP SCHEMA s;"),
    ("ban-drop-cascade", TX, "DROP FUNCTION f(bigint) CASCADE;", "DROP FUNCTION f(bigint);"),
    ("ban-drop-owned", TX, "DROP OWNED BY r;", "REASSIGN OWNED BY r TO app;"),
];

/// README: the rules that lose data are errors by default. Each statement here drops tables,
/// columns or rows (the last ones every row, as a WHERE that is always true does); an operator
/// class or family, the indexes and constraints that use it.
#[test]
fn data_losing_statements_are_errors_or_named_as_every_row() {
    use stepmigrate_check::Severity;
    let findings = |sql: &str| {
        let script = Script {
            path: Path::new("m.sql"),
            sql,
            mode: TX,
        };
        check_script(&script, &LintRules::default())
    };
    for (sql, rule) in [
        ("DROP SCHEMA s CASCADE;", "ban-drop-cascade"),
        ("DROP TYPE e CASCADE;", "ban-drop-cascade"),
        ("DROP DOMAIN d CASCADE;", "ban-drop-cascade"),
        ("DROP EXTENSION x CASCADE;", "ban-drop-cascade"),
        ("DROP COLLATION c CASCADE;", "ban-drop-cascade"),
        ("DROP ACCESS METHOD am CASCADE;", "ban-drop-cascade"),
        ("DROP FUNCTION f(bigint) CASCADE;", "ban-drop-cascade"),
        (
            "DROP FUNCTION IF EXISTS f, g(int) CASCADE;",
            "ban-drop-cascade",
        ),
        ("DROP PROCEDURE p(int) CASCADE;", "ban-drop-cascade"),
        ("DROP ROUTINE r CASCADE;", "ban-drop-cascade"),
        ("DROP AGGREGATE a(int) CASCADE;", "ban-drop-cascade"),
        ("DROP OPERATOR === (int, int) CASCADE;", "ban-drop-cascade"),
        (
            "DROP OPERATOR CLASS oc USING btree CASCADE;",
            "ban-drop-cascade",
        ),
        (
            "DROP OPERATOR FAMILY fam USING btree CASCADE;",
            "ban-drop-cascade",
        ),
        ("DROP OWNED BY r;", "ban-drop-owned"),
        ("DROP OWNED BY r CASCADE;", "ban-drop-owned"),
        // Any DROP ... CASCADE: what goes with it is not named.
        (
            "DROP TEXT SEARCH CONFIGURATION c CASCADE;",
            "ban-drop-cascade",
        ),
        ("DROP TEXT SEARCH DICTIONARY d CASCADE;", "ban-drop-cascade"),
        ("DROP TEXT SEARCH PARSER p CASCADE;", "ban-drop-cascade"),
        ("DROP TEXT SEARCH TEMPLATE t CASCADE;", "ban-drop-cascade"),
        ("DROP SERVER s CASCADE;", "ban-drop-cascade"),
        ("DROP FOREIGN DATA WRAPPER w CASCADE;", "ban-drop-cascade"),
        ("DROP CAST (text AS int) CASCADE;", "ban-drop-cascade"),
        ("DROP LANGUAGE plperl CASCADE;", "ban-drop-cascade"),
        ("DROP VIEW v CASCADE;", "ban-drop-cascade"),
        ("DROP TABLE t CASCADE;", "ban-drop-cascade"),
        ("DROP SEQUENCE s CASCADE;", "ban-drop-cascade"),
        ("DROP POLICY p ON t CASCADE;", "ban-drop-cascade"),
        (
            "ALTER TABLE t DROP CONSTRAINT c CASCADE;",
            "ban-drop-cascade",
        ),
        ("ALTER TABLE t DROP COLUMN c CASCADE;", "ban-drop-cascade"),
        (
            "ALTER TYPE comp DROP ATTRIBUTE a CASCADE;",
            "ban-drop-cascade",
        ),
    ] {
        let found = findings(sql);
        assert!(
            found
                .iter()
                .any(|f| f.rule == rule && f.severity == Severity::Error),
            "{sql}: {found:?}"
        );
    }
    for (sql, rule) in [
        ("UPDATE t SET a = 1 WHERE true;", "update-without-where"),
        ("UPDATE t SET a = 1 WHERE 1 = 1;", "update-without-where"),
        ("UPDATE t SET a = 1 WHERE 2 > 1;", "update-without-where"),
        (
            "UPDATE t SET a = 1 WHERE NULL IS NULL;",
            "update-without-where",
        ),
        (
            "UPDATE t SET a = 1 WHERE true IS TRUE;",
            "update-without-where",
        ),
        (
            "UPDATE t SET a = 1 WHERE coalesce(true, a > 0);",
            "update-without-where",
        ),
        (
            "UPDATE t SET a = 1 WHERE a IS NULL OR a IS NOT NULL;",
            "update-without-where",
        ),
        (
            "DELETE FROM t WHERE EXISTS (SELECT 1);",
            "delete-without-where",
        ),
        (
            "UPDATE t SET a = 1 WHERE 'x' = 'x' AND NOT false;",
            "update-without-where",
        ),
        (
            "UPDATE t SET a = 1 WHERE 't'::boolean;",
            "update-without-where",
        ),
        ("DELETE FROM t WHERE true;", "delete-without-where"),
        (
            "DELETE FROM t WHERE id = 1 OR 1 = 1;",
            "delete-without-where",
        ),
    ] {
        let found = findings(sql);
        assert!(
            found
                .iter()
                .any(|f| f.rule == rule && f.message.contains("whose WHERE is always true")),
            "{sql}: {found:?}"
        );
    }
    for sql in [
        "UPDATE t SET a = 1 WHERE false;",
        "UPDATE t SET a = 1 WHERE 1 = 2;",
        "DELETE FROM t WHERE id = 1 AND true;",
        "DELETE FROM t WHERE a = a;",
        "UPDATE t SET a = 1 WHERE 1 > 2;",
        "UPDATE t SET a = 1 WHERE NULL IS NOT NULL;",
        "UPDATE t SET a = 1 WHERE a IS NULL OR b IS NOT NULL;",
        "DELETE FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id);",
        "UPDATE t SET a = 1 WHERE coalesce(a > 0, true);",
        "DROP SCHEMA s;",
        "DROP VIEW v;",
        "DROP SERVER s;",
        "DROP TEXT SEARCH CONFIGURATION c RESTRICT;",
        "ALTER TABLE t DROP CONSTRAINT c;",
        "ALTER TABLE t DROP COLUMN c;",
        "DROP FUNCTION f(bigint);",
        "DROP FUNCTION f(bigint) RESTRICT;",
        "DROP PROCEDURE p(int);",
        "DROP ROUTINE r;",
        "DROP AGGREGATE a(int);",
        "DROP OPERATOR === (int, int);",
        "DROP OPERATOR CLASS oc USING btree;",
        "DROP OPERATOR FAMILY fam USING btree;",
    ] {
        let found = findings(sql);
        assert!(
            !found.iter().any(|f| [
                "update-without-where",
                "delete-without-where",
                "ban-drop-cascade",
                "ban-drop-owned"
            ]
            .contains(&f.rule.as_str())),
            "{sql}: {found:?}"
        );
    }
}

/// A WHERE that reads nothing of the row is the same for every row: the statement changes
/// every row or none, like one without WHERE. Comparing an expression with itself by `IS NOT
/// DISTINCT FROM` is true of every row.
#[test]
fn a_where_that_does_not_depend_on_the_row_selects_every_row_or_none() {
    let ours = |sql: &str| -> Vec<(String, String)> {
        let script = Script {
            path: Path::new("m.sql"),
            sql,
            mode: TX,
        };
        check_script(&script, &LintRules::default())
            .into_iter()
            .filter(|f| f.rule == "update-without-where" || f.rule == "delete-without-where")
            .map(|f| (f.rule, f.message))
            .collect()
    };
    for (sql, rule, says) in [
        (
            "UPDATE t SET a = 1 WHERE null IS NOT DISTINCT FROM null;",
            "update-without-where",
            "whose WHERE is always true",
        ),
        (
            "UPDATE t SET a = 1 WHERE x IS NOT DISTINCT FROM x;",
            "update-without-where",
            "whose WHERE is always true",
        ),
        (
            "DELETE FROM t WHERE t IS NOT DISTINCT FROM t;",
            "delete-without-where",
            "whose WHERE is always true",
        ),
        (
            "DELETE FROM t WHERE NOT (t.a IS DISTINCT FROM t.a);",
            "delete-without-where",
            "whose WHERE is always true",
        ),
        (
            "UPDATE t SET a = 1 WHERE coalesce(null, true);",
            "update-without-where",
            "does not depend on the row",
        ),
        (
            "DELETE FROM t WHERE EXISTS (VALUES (1));",
            "delete-without-where",
            "does not depend on the row",
        ),
        (
            "UPDATE t SET a = 1 WHERE 1 IN (1);",
            "update-without-where",
            "does not depend on the row",
        ),
        (
            "UPDATE t SET a = 1 WHERE 1 BETWEEN 0 AND 2;",
            "update-without-where",
            "does not depend on the row",
        ),
        (
            "UPDATE t SET a = 1 WHERE 1::int = 1;",
            "update-without-where",
            "does not depend on the row",
        ),
        (
            "DELETE FROM t WHERE CASE WHEN true THEN true END;",
            "delete-without-where",
            "does not depend on the row",
        ),
        (
            "DELETE FROM t WHERE current_setting('app.env') = 'test';",
            "delete-without-where",
            "does not depend on the row",
        ),
        (
            "DELETE FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.done);",
            "delete-without-where",
            "does not depend on the row",
        ),
        (
            "UPDATE t AS x SET a = 1 FROM u WHERE u.id = 1;",
            "update-without-where",
            "does not depend on the row",
        ),
        (
            "WITH d AS (DELETE FROM t WHERE 2 > (SELECT count(*) FROM u) RETURNING id) SELECT 1;",
            "delete-without-where",
            "does not depend on the row",
        ),
    ] {
        let found = ours(sql);
        assert!(
            found.len() == 1 && found[0].0 == rule && found[0].1.contains(says),
            "{sql}: {found:?}"
        );
        if says == "does not depend on the row" {
            assert!(
                found[0].1.contains("it selects every row or none"),
                "{sql}: {found:?}"
            );
        }
    }
    for sql in [
        "DELETE FROM t WHERE id IN (SELECT id FROM other);",
        "DELETE FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id);",
        "DELETE FROM t AS x WHERE EXISTS (SELECT 1 FROM u WHERE u.id = x.id);",
        "DELETE FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = id);",
        "DELETE FROM t WHERE public.t.a > 0;",
        "UPDATE t SET a = 1 FROM u WHERE u.id = t.id;",
        "UPDATE t SET a = 1 WHERE (t).a > 0;",
        "DELETE FROM t WHERE t IS NULL;",
        "UPDATE t SET a = 1 WHERE CURRENT OF c;",
        "DELETE FROM t WHERE random() < 0.1;",
        "DELETE FROM t WHERE a = a;",
        "DELETE FROM t WHERE x IS NOT DISTINCT FROM y;",
        "DELETE FROM t WHERE random() IS NOT DISTINCT FROM random();",
        "UPDATE t SET a = 1 WHERE false;",
        "UPDATE t SET a = 1 WHERE 1 = 2;",
    ] {
        let found = ours(sql);
        assert!(found.is_empty(), "{sql}: {found:?}");
    }
}

/// `DROP FUNCTION ... CASCADE` and its kin say what goes with them: not tables, but a generated
/// column using the function (with its values) and the indexes using an operator class.
#[test]
fn drop_cascade_of_a_routine_or_operator_class_names_what_goes() {
    let message = |sql: &str| {
        let script = Script {
            path: Path::new("m.sql"),
            sql,
            mode: TX,
        };
        check_script(&script, &LintRules::default())
            .into_iter()
            .find(|f| f.rule == "ban-drop-cascade")
            .map(|f| f.message)
            .unwrap_or_default()
    };
    for (sql, what, goes) in [
        (
            "DROP FUNCTION f(bigint) CASCADE;",
            "`DROP FUNCTION ... CASCADE`",
            "a generated column",
        ),
        (
            "DROP ROUTINE r CASCADE;",
            "`DROP ROUTINE ... CASCADE`",
            "a generated column",
        ),
        (
            "DROP OPERATOR CLASS oc USING btree CASCADE;",
            "`DROP OPERATOR CLASS ... CASCADE`",
            "the indexes",
        ),
        (
            "DROP SCHEMA s CASCADE;",
            "`DROP SCHEMA ... CASCADE`",
            "tables and columns",
        ),
        (
            "DROP TEXT SEARCH CONFIGURATION c CASCADE;",
            "`DROP TEXT SEARCH CONFIGURATION ... CASCADE`",
            "a generated column",
        ),
        (
            "DROP CAST (text AS int) CASCADE;",
            "`DROP CAST ... CASCADE`",
            "a generated column",
        ),
        (
            "DROP SERVER s CASCADE;",
            "`DROP SERVER ... CASCADE`",
            "foreign tables",
        ),
        (
            "ALTER TABLE t DROP CONSTRAINT t_pkey CASCADE;",
            "`DROP CONSTRAINT t_pkey ... CASCADE`",
            "the foreign keys of other tables",
        ),
        (
            "DROP POLICY p ON t CASCADE;",
            "`DROP POLICY ... CASCADE`",
            "what depends on it goes",
        ),
    ] {
        let message = message(sql);
        assert!(
            message.contains(what) && message.contains(goes),
            "{sql}: {message}"
        );
    }
}

fn rules_of(sql: &str, mode: Mode) -> Vec<String> {
    let script = Script {
        path: Path::new("m.sql"),
        sql,
        mode,
    };
    check_script(&script, &LintRules::default())
        .into_iter()
        .map(|f| f.rule)
        .collect()
}

#[test]
fn every_default_rule_fires_on_its_bad_example_and_not_on_the_fixed_one() {
    let mut problems = Vec::new();
    for (rule, mode, bad, fixed) in CASES {
        let on_bad = rules_of(bad, *mode);
        if !on_bad.iter().any(|r| r == rule) {
            problems.push(format!("{rule} did not fire on {bad:?} (found {on_bad:?})"));
        }
        let on_fixed = rules_of(fixed, *mode);
        if on_fixed.iter().any(|r| r == rule) {
            problems.push(format!("{rule} fired on the fixed {fixed:?}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_rule_on_by_default_has_a_case() {
    let defaults = LintRules::default();
    let missing: Vec<String> = LintRules::known_rules()
        .into_iter()
        .filter(|r| defaults.severity(r).is_some())
        .filter(|r| {
            !CASES.iter().any(|(rule, ..)| rule == r)
                && r != "prefer-repack"
                && r != "missing-down"
                && r != "after-deploy-schema-change"
                // Fires only for a target before 12: tests/hazards.rs.
                && r != "enum-value-in-transaction"
        })
        .collect();
    assert!(missing.is_empty(), "rules without a case: {missing:?}");
}

/// REPACK exists from PostgreSQL 19 on: before, VACUUM FULL is the only way and not advice.
#[test]
fn prefer_repack_depends_on_the_postgresql_version() {
    let script = Script {
        path: Path::new("m.sql"),
        sql: "VACUUM FULL t;",
        mode: OUT,
    };
    let rules_on = |version: &str| {
        let mut rules = LintRules::default();
        rules.set_pg_version(version).unwrap();
        check_script(&script, &rules)
            .into_iter()
            .map(|f| f.rule)
            .collect::<Vec<_>>()
    };
    // table-rewrite names the lock and rewrite on every version.
    assert_eq!(rules_on("19"), ["prefer-repack", "table-rewrite"]);
    assert_eq!(rules_on("15"), ["table-rewrite"]);
}
