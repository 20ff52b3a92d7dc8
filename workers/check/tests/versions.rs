//! `--pg-version` holds syntax to the target: what the embedded grammar (PostgreSQL 18's)
//! accepts but the target's rejects is an error naming the version that introduced it.

use std::path::Path;

use stepmigrate_check::{check_script, Finding, LintRules, Script};
use stepmigrate_core::migration::Mode;

fn syntax_on(sql: &str, version: Option<&str>) -> Vec<Finding> {
    let mut rules = LintRules::default();
    if let Some(v) = version {
        rules.set_pg_version(v).unwrap();
    }
    let script = Script {
        path: Path::new("m.sql"),
        sql,
        mode: Mode::Transactional,
    };
    check_script(&script, &rules)
        .into_iter()
        .filter(|f| f.rule == "syntax")
        .collect()
}

/// (statement, the version that introduced its syntax)
const NEWER: &[(&str, u32)] = &[
    ("SELECT 1_000;", 16),
    ("ALTER TABLE t ADD COLUMN c int DEFAULT 0x1F;", 16),
    ("ALTER TABLE t ALTER COLUMN c SET EXPRESSION AS (a * 2);", 17),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE WHEN NOT MATCHED BY SOURCE THEN DELETE;", 17),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE;", 15),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE RETURNING t.id;", 17),
    ("CREATE TABLE t (a int, b int GENERATED ALWAYS AS (a * 2) VIRTUAL);", 18),
    ("CREATE TABLE t (a int, b int GENERATED ALWAYS AS (a * 2));", 18),
    ("ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0) NOT ENFORCED;", 18),
    ("CREATE TABLE t (a int CHECK (a > 0) NOT ENFORCED);", 18),
    ("CREATE TABLE t (id int, valid tstzrange, PRIMARY KEY (id, valid WITHOUT OVERLAPS));", 18),
    ("CREATE UNIQUE INDEX i ON t (a) NULLS NOT DISTINCT;", 15),
    ("ALTER TABLE t ADD CONSTRAINT u UNIQUE NULLS NOT DISTINCT (a);", 15),
    ("SELECT * FROM JSON_TABLE('[1]'::jsonb, '$[*]' COLUMNS (x int PATH '$')) AS jt;", 17),
    ("SELECT JSON_OBJECT('a': 1);", 16),
    ("SELECT '{}' IS JSON;", 16),
    ("GRANT SET ON PARAMETER work_mem TO app;", 15),
    ("COPY t FROM '/tmp/x' WITH (FORMAT csv, DEFAULT '\\D');", 16),
    ("ALTER TABLE t SET ACCESS METHOD heap;", 15),
    ("ALTER TABLE t ALTER COLUMN c SET STATISTICS DEFAULT;", 17),
    ("CREATE OR REPLACE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f();", 14),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql RETURN 1;", 14),
    ("SELECT * FROM t ORDER BY a FETCH FIRST 3 ROWS WITH TIES;", 13),
    ("ALTER TABLE t ALTER COLUMN c DROP EXPRESSION;", 13),
    ("UPDATE t SET a = 1 WHERE id = 1 RETURNING old.a, new.a;", 18),
    ("ALTER TABLE t ADD CONSTRAINT nn NOT NULL a;", 18),
    ("GRANT MAINTAIN ON t TO app;", 17),
    ("GRANT admin TO app WITH INHERIT TRUE;", 16),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE RETURNING old.id;", 18),
    ("CREATE TABLE t (a int, b int, PRIMARY KEY (a) INCLUDE (b));", 11),
    ("ALTER TABLE t ADD CONSTRAINT u UNIQUE (a) INCLUDE (b);", 11),
    ("CREATE UNLOGGED SEQUENCE s;", 15),
    ("ALTER SEQUENCE s SET UNLOGGED;", 15),
    ("ALTER SEQUENCE s SET LOGGED;", 15),
    ("WITH x AS MATERIALIZED (SELECT 1) SELECT * FROM x;", 12),
    ("WITH x AS NOT MATERIALIZED (SELECT 1) SELECT * FROM x;", 12),
    ("CREATE STATISTICS st ON (a + b) FROM t;", 14),
    ("CREATE STATISTICS st ON a, (a + b) FROM t;", 14),
    ("CREATE PUBLICATION p FOR TABLES IN SCHEMA s;", 15),
    ("CREATE PUBLICATION p FOR TABLE t WHERE (a > 0);", 15),
    ("CREATE PUBLICATION p FOR TABLE t (a, b);", 15),
    ("ALTER PUBLICATION p ADD TABLES IN SCHEMA s;", 15),
    ("CREATE TABLE t2 (LIKE t INCLUDING COMPRESSION);", 14),
    ("REINDEX (TABLESPACE x) TABLE t;", 14),
    ("SELECT * FROM a JOIN b USING (id) AS j;", 14),
    ("CREATE TABLE t (a int) PARTITION BY HASH (a);", 11),
    ("CREATE TABLE t_d PARTITION OF t DEFAULT;", 11),
    ("CREATE TABLE t (a int) USING heap;", 12),
    ("CREATE TABLE t USING heap AS SELECT 1 AS a;", 12),
    ("CREATE MATERIALIZED VIEW mv USING heap AS SELECT 1 AS a;", 12),
    ("ALTER TABLE t ATTACH PARTITION t_d DEFAULT;", 11),
    ("SELECT sum(a) OVER w FROM t WINDOW w AS (ORDER BY a GROUPS 1 PRECEDING);", 11),
    ("COPY t FROM '/tmp/x' WHERE a > 0;", 12),
    ("SELECT sum(a) OVER (ORDER BY a GROUPS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM t;", 11),
    ("SELECT sum(a) OVER (ORDER BY a ROWS UNBOUNDED PRECEDING EXCLUDE CURRENT ROW) FROM t;", 11),
    ("SELECT sum(a) OVER (ORDER BY a RANGE BETWEEN 1 PRECEDING AND CURRENT ROW) FROM t;", 11),
    ("ALTER STATISTICS st SET STATISTICS 100;", 13),
    ("CREATE TABLE t (a int COMPRESSION lz4);", 14),
    ("CREATE TABLE t (a int, b int GENERATED ALWAYS AS (a * 2) STORED);", 12),
    ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SEARCH DEPTH FIRST BY n SET o SELECT * FROM r;", 14),
    ("CREATE TABLE t (a int UNIQUE NULLS NOT DISTINCT);", 15),
    ("ALTER VIEW v RENAME COLUMN a TO a2;", 13),
    ("ALTER TABLE t OWNER TO CURRENT_ROLE;", 14),
    ("GRANT SELECT ON t TO CURRENT_ROLE;", 14),
    ("REINDEX DATABASE;", 16),
    ("REINDEX SYSTEM;", 16),
    ("CREATE STATISTICS ON a, b FROM t;", 16),
    ("ALTER TABLE t ALTER COLUMN a SET STORAGE DEFAULT;", 16),
    ("ANALYZE ONLY t;", 18),
    ("VACUUM ONLY t;", 18),
    ("INSERT INTO t (id) SELECT x FROM (SELECT 1 AS x);", 16),
    ("SELECT * FROM (VALUES (1));", 16),
    ("GRANT r TO u WITH ADMIN TRUE;", 16),
    ("ALTER DEFAULT PRIVILEGES GRANT SELECT ON LARGE OBJECTS TO PUBLIC;", 18),
    ("ALTER INDEX i ATTACH PARTITION j;", 11),
    ("CREATE ACCESS METHOD heap2 TYPE TABLE HANDLER h;", 12),
    ("CREATE OR REPLACE AGGREGATE a(int) (SFUNC = f, STYPE = int);", 12),
    ("ALTER FUNCTION f() NO DEPENDS ON EXTENSION e;", 13),
    ("GRANT SELECT ON t TO u GRANTED BY CURRENT_USER;", 14),
    ("REVOKE SELECT ON t FROM u GRANTED BY CURRENT_USER;", 14),
    ("ALTER SUBSCRIPTION s ADD PUBLICATION p;", 14),
    ("ALTER SUBSCRIPTION s DROP PUBLICATION p;", 14),
    ("ALTER DATABASE d REFRESH COLLATION VERSION;", 15),
    ("ALTER SUBSCRIPTION s SKIP (lsn = '0/0');", 15),
    ("SELECT xmlserialize(DOCUMENT '<a/>'::xml AS text INDENT);", 16),
    ("SELECT now() AT LOCAL;", 17),
    ("CREATE FOREIGN TABLE ft (LIKE t) SERVER s;", 18),
    ("CREATE TABLE p1 PARTITION OF pt FOR VALUES FROM (1+1) TO (10);", 12),
    ("CREATE TABLE p1 PARTITION OF pt FOR VALUES IN (lower('A'));", 12),
    ("CREATE TABLE p1 PARTITION OF pt FOR VALUES FROM ('2020-01-01'::date) TO (MAXVALUE);", 12),
    ("ALTER TABLE pt ATTACH PARTITION p1 FOR VALUES IN (1 + 1);", 12),
    ("CREATE TABLE t2 (LIKE t INCLUDING GENERATED);", 12),
    ("CREATE INDEX i ON t USING gist (a gist_trgm_ops(siglen=32));", 13),
    ("ANALYZE t, u;", 11),
    ("VACUUM t, u;", 11),
    ("ANALYZE (VERBOSE) t;", 11),
    ("ANALYZE /* options */ (VERBOSE) t;", 11),
    ("CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f();", 11),
    ("CREATE EVENT TRIGGER et ON ddl_command_start EXECUTE FUNCTION f();", 11),
    ("CREATE TABLE t (a int) PARTITION BY RANGE (a);", 10),
    ("CREATE TABLE t (a int) PARTITION BY LIST (a);", 10),
    ("CREATE TABLE p1 PARTITION OF pt FOR VALUES IN (1);", 10),
    ("ALTER TABLE pt DETACH PARTITION p1;", 10),
    ("CREATE STATISTICS s ON a, b FROM t;", 10),
    ("CREATE TABLE t (id int GENERATED ALWAYS AS IDENTITY);", 10),
    // Spellings of the default that parse to its tree: the words are the newer syntax.
    ("MERGE INTO t USING s ON t.id = s.id WHEN NOT MATCHED BY TARGET THEN INSERT VALUES (s.id);", 17),
    ("MERGE INTO t USING s ON t.id = s.id WHEN NOT MATCHED /* by */ BY TARGET THEN DO NOTHING;", 17),
    ("CREATE TABLE t (a int NOT NULL NO INHERIT);", 18),
    ("ALTER TABLE x ADD COLUMN b int NOT NULL NO INHERIT;", 18),
    ("CREATE TABLE t (a int UNIQUE NULLS DISTINCT);", 15),
    ("ALTER TABLE t ADD CONSTRAINT u UNIQUE NULLS DISTINCT (a);", 15),
    ("CREATE UNIQUE INDEX i ON t (a) NULLS DISTINCT;", 15),
    ("DROP PROCEDURE p;", 11),
    ("DROP ROUTINE r(int);", 11),
    ("ALTER PROCEDURE p() SET search_path = public;", 11),
    ("ALTER ROUTINE r RENAME TO r2;", 11),
    ("ALTER PROCEDURE p() OWNER TO app;", 11),
    ("COMMENT ON ROUTINE r IS 'x';", 11),
    ("COMMENT ON PROCEDURE p() IS 'x';", 11),
    ("GRANT EXECUTE ON ALL PROCEDURES IN SCHEMA s TO app;", 11),
    ("GRANT EXECUTE ON ALL ROUTINES IN SCHEMA s TO app;", 11),
    ("REVOKE EXECUTE ON PROCEDURE p() FROM app;", 11),
    ("ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON ROUTINES TO app;", 11),
    ("CREATE INDEX i ON ONLY t (a);", 11),
    ("ALTER INDEX i ALTER COLUMN 1 SET STATISTICS 100;", 11),
    ("REINDEX (CONCURRENTLY) INDEX i;", 14),
    ("REINDEX (VERBOSE, CONCURRENTLY) TABLE t;", 14),
    // Inside a LANGUAGE sql body, which PostgreSQL parses at CREATE FUNCTION.
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE; SELECT 1 $$;", 15),
];

#[test]
fn syntax_newer_than_the_target_is_an_error_naming_its_version() {
    let mut problems = Vec::new();
    for (sql, since) in NEWER {
        // Accepted by the embedded grammar, with no version or a new enough one.
        for version in [None, Some(since.to_string())] {
            let found = syntax_on(sql, version.as_deref());
            if !found.is_empty() {
                problems.push(format!("{sql} on {version:?}: {found:?}"));
            }
        }
        // Before 10, a major version had two parts: the one before 10 is 9.6, and the
        // message names it so (not "PostgreSQL 9").
        let before = if *since == 10 {
            "9.6".to_owned()
        } else {
            (since - 1).to_string()
        };
        let found = syntax_on(sql, Some(&before));
        let named = found.iter().any(|f| {
            f.message.contains(&format!("is PostgreSQL {since} syntax"))
                && f.message
                    .contains(&format!("the target, PostgreSQL {before}, rejects it"))
        });
        if !named {
            problems.push(format!("{sql} on {before}: {found:?}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn older_syntax_passes_and_the_finding_points_at_the_construct() {
    for sql in [
        "CREATE TABLE t (a int, b int GENERATED ALWAYS AS (a * 2) STORED);",
        "SELECT 1000, 1.5e3, 'x_y', t_1 FROM t_2;",
        "ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0);",
        "CREATE TABLE t (a int NOT NULL);",
        "INSERT INTO t VALUES (1) RETURNING *;",
        "CREATE TABLE t2 (LIKE t INCLUDING ALL);",
        "CREATE TABLE t2 (LIKE t INCLUDING ALL EXCLUDING COMMENTS);",
        "CREATE PUBLICATION p FOR TABLE t, u;",
        "SELECT * FROM (SELECT 1 AS x) s;",
        "SELECT * FROM (VALUES (1)) v (a);",
        "GRANT r TO u WITH ADMIN OPTION;",
        "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC;",
        "CREATE SEQUENCE s;",
        "ALTER TABLE t SET UNLOGGED;",
        "CREATE STATISTICS st ON a, b FROM t;",
        "WITH x AS (SELECT 1) SELECT * FROM x;",
        "REINDEX (VERBOSE) TABLE t;",
        "REINDEX DATABASE d;",
        "ALTER TABLE t RENAME COLUMN a TO b;",
        "ALTER MATERIALIZED VIEW mv RENAME COLUMN a TO b;",
        "ALTER TABLE t OWNER TO CURRENT_USER;",
        "SELECT CURRENT_ROLE;",
        "CREATE STATISTICS st ON a, b FROM t;",
        "ALTER TABLE t ALTER COLUMN a SET STORAGE EXTERNAL;",
        "ANALYZE t;",
        "VACUUM t;",
        "ANALYZE;",
        "CREATE TABLE t (a int) PARTITION BY LIST (a);",
        "SELECT sum(a) OVER (ORDER BY a ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM t;",
        "SELECT sum(a) OVER (ORDER BY a RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) FROM t;",
        "ALTER TABLE t ATTACH PARTITION p FOR VALUES IN (1);",
        "CREATE ACCESS METHOD b2 TYPE INDEX HANDLER h;",
        "CREATE AGGREGATE a(int) (SFUNC = f, STYPE = int);",
        "ALTER FUNCTION f() DEPENDS ON EXTENSION e;",
        "GRANT SELECT ON t TO u;",
        "GRANT r TO u GRANTED BY CURRENT_USER;",
        "ALTER SUBSCRIPTION s SET PUBLICATION p;",
        "ALTER SUBSCRIPTION s REFRESH PUBLICATION;",
        "ALTER DATABASE d SET work_mem = '64MB';",
        "SELECT xmlserialize(DOCUMENT '<a/>'::xml AS text);",
        "SELECT now() AT TIME ZONE 'UTC';",
        "SELECT pg_catalog.timezone(now());",
        "CREATE FOREIGN TABLE ft (a int) SERVER s;",
        "CREATE TABLE t2 (LIKE t);",
        "CREATE TABLE p1 PARTITION OF pt FOR VALUES FROM (MINVALUE, -1, +2, -1.5) TO (MAXVALUE, 'x', true, NULL);",
        "CREATE TABLE p1 PARTITION OF pt FOR VALUES IN (1, -2, 'a', NULL);",
        "ALTER TABLE pt ATTACH PARTITION p1 FOR VALUES FROM (1) TO (10);",
        "CREATE TABLE t2 (LIKE t INCLUDING ALL EXCLUDING GENERATED);",
        "CREATE TABLE t2 (LIKE t INCLUDING DEFAULTS INCLUDING CONSTRAINTS);",
        "CREATE INDEX i ON t USING gist (a gist_trgm_ops);",
        "ANALYZE VERBOSE t;",
        "ANALYZE t (a, b);",
        "VACUUM (VERBOSE, ANALYZE) t;",
        "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE PROCEDURE f('execute function');",
        "CREATE EVENT TRIGGER et ON ddl_command_start EXECUTE PROCEDURE f();",
    ] {
        assert!(
            syntax_on(sql, Some("13")).is_empty(),
            "{sql}: {:?}",
            syntax_on(sql, Some("13"))
        );
    }
    let found = syntax_on("SELECT 1;\nSELECT a,\n  1_000 FROM t;", Some("15"));
    assert_eq!((found[0].line, found[0].column), (3, 3), "{found:?}");
}

/// The default left unsaid, or said the old way, passes the versions that know it.
#[test]
fn the_old_spelling_of_a_default_passes() {
    for (sql, version) in [
        ("MERGE INTO t USING s ON t.id = s.id WHEN NOT MATCHED THEN INSERT VALUES (s.id);", "15"),
        ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET target = 1 WHEN NOT MATCHED THEN DO NOTHING;", "15"),
        ("SELECT 1 FROM t ORDER BY target;", "10"),
        ("CREATE TABLE t (a int NOT NULL, CHECK (a > 0) NO INHERIT);", "17"),
        ("CREATE TABLE t (a int UNIQUE);", "14"),
        ("CREATE UNIQUE INDEX i ON t (a);", "14"),
        ("SELECT DISTINCT a FROM t ORDER BY a NULLS FIRST;", "14"),
        ("DROP FUNCTION f();", "10"),
        ("ALTER FUNCTION f() OWNER TO app;", "10"),
        ("COMMENT ON FUNCTION f() IS 'x';", "10"),
        ("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA s TO app;", "10"),
        ("ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO app;", "10"),
        ("CREATE INDEX i ON t (a);", "10"),
        ("REINDEX (VERBOSE) INDEX CONCURRENTLY i;", "13"),
        ("REINDEX INDEX CONCURRENTLY i;", "12"),
    ] {
        let found = syntax_on(sql, Some(version));
        assert!(found.is_empty(), "{sql} on {version}: {found:?}");
    }
}

#[test]
fn a_syntax_error_says_which_grammar_read_it_when_the_target_may_be_newer() {
    let help = |version: Option<&str>| syntax_on("SELEC 1;", version)[0].help.clone();
    for version in [None, Some("19")] {
        let help = help(version).unwrap_or_default();
        assert!(
            help.contains("PostgreSQL 18's grammar"),
            "{version:?}: {help}"
        );
    }
    assert_eq!(help(Some("16")), None);
}
