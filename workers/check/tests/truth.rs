//! `check`'s words must be true of the statement: a type change that PostgreSQL does without
//! a rewrite is not called one, a constraint gets the advice its kind allows, a volatile
//! default is not called a generated column; and the statements that rewrite or empty a table
//! under an ACCESS EXCLUSIVE lock, or hide statements from the linter, are named.

use std::path::Path;

mod common;

use common::{of_rule, rules, set_findings};
use stepmigrate_check::{check_script, Finding, Script};
use stepmigrate_core::migration::Mode;

/// The `changing-column-type` message for a column created as `old` and changed to `new`.
fn type_change(old: &str, new: &str) -> String {
    let found = set_findings(
        &[
            &format!(
                "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, c {old});\n"
            ),
            &format!("ALTER TABLE t ALTER COLUMN c TYPE {new};\n"),
        ],
        &rules(),
    );
    let changes = of_rule(&found, "changing-column-type");
    assert_eq!(changes.len(), 1, "{old} -> {new}: {found:?}");
    changes[0].message.clone()
}

#[test]
fn a_binary_coercible_type_change_is_not_called_a_rewrite() {
    for (old, new) in [
        ("varchar(10)", "varchar(20)"),
        ("varchar", "text"),
        ("varchar(10)", "text"),
        ("text", "varchar"),
        ("numeric(10,2)", "numeric(12,2)"),
        ("numeric(10,2)", "numeric"),
        ("timestamp(3)", "timestamp(6)"),
        ("timestamptz(0)", "timestamptz"),
        ("varbit(4)", "bit varying(8)"),
        ("cidr", "inet"),
    ] {
        let message = type_change(old, new);
        assert!(
            message.contains("the table is not rewritten"),
            "{old} -> {new}: {message}"
        );
        assert!(
            !message.contains("while the table is rewritten"),
            "{message}"
        );
        assert!(message.contains("ACCESS EXCLUSIVE"), "{message}");
    }
}

/// A change that keeps the rows still rebuilds the column's indexes when its collation changes
/// (PostgreSQL's `CheckIndexCompatible`): check says so instead of "only the catalog changes".
#[test]
fn a_type_change_that_may_change_the_collation_says_the_indexes_are_rebuilt() {
    for (old, new, collation) in [
        ("varchar(10)", "text COLLATE \"C\"", "here to \"C\""),
        ("varchar(10)", "text", "here to the new type's default"),
        (
            "text COLLATE \"C\"",
            "text",
            "here to the new type's default",
        ),
        (
            "varchar(10)",
            "varchar(20) COLLATE \"en_US\"",
            "here to \"en_US\"",
        ),
    ] {
        let message = type_change(old, new);
        assert!(
            message.contains("the table is not rewritten"),
            "{old} -> {new}: {message}"
        );
        assert!(
            message.contains("and every index on the column if its collation changes"),
            "{old} -> {new}: {message}"
        );
        assert!(message.contains(collation), "{old} -> {new}: {message}");
        assert!(!message.contains("only the catalog"), "{message}");
    }
    for (old, new) in [
        ("numeric(10,2)", "numeric"),
        ("cidr", "inet"),
        ("bit(4)", "varbit"),
    ] {
        let message = type_change(old, new);
        assert!(!message.contains("collation"), "{old} -> {new}: {message}");
        // Not rewritten is not brief: CHECK constraints and dependent indexes are named.
        assert!(
            message.contains("check again each CHECK constraint that reads the column")
                && message.contains("each index whose expression or WHERE uses the column")
                && message.contains("operator class differs"),
            "{old} -> {new}: {message}"
        );
    }
}

#[test]
fn a_rewriting_type_change_says_so() {
    for (old, new) in [
        ("varchar(20)", "varchar(10)"),
        ("text", "varchar(10)"),
        ("numeric(10,2)", "numeric(12,3)"),
        ("numeric", "numeric(12,2)"),
        ("timestamp(6)", "timestamp(3)"),
        ("integer", "bigint"),
        ("char(5)", "text"),
    ] {
        let message = type_change(old, new);
        assert!(
            message.contains("rewrites the table under it"),
            "{old} -> {new}: {message}"
        );
    }
    // A USING expression is computed for every row, whatever the types.
    let found = set_findings(
        &[
            "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, c varchar(10));\n",
            "ALTER TABLE t ALTER COLUMN c TYPE varchar(20) USING lower(c);\n",
        ],
        &rules(),
    );
    let message = &of_rule(&found, "changing-column-type")[0].message;
    assert!(message.contains("USING expression"), "{message}");
    // The column itself as USING changes nothing.
    let found = set_findings(
        &[
            "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, c varchar(10));\n",
            "ALTER TABLE t ALTER COLUMN c TYPE text USING c::text;\n",
        ],
        &rules(),
    );
    let message = &of_rule(&found, "changing-column-type")[0].message;
    assert!(message.contains("not rewritten"), "{message}");
}

#[test]
fn what_check_cannot_know_is_said_to_depend() {
    // No migration says what the column was.
    let found = set_findings(
        &["ALTER TABLE elsewhere ALTER COLUMN c TYPE varchar(20);\n"],
        &rules(),
    );
    let message = &of_rule(&found, "changing-column-type")[0].message;
    assert!(
        message.contains("depends on the column's type before it"),
        "{message}"
    );
    assert!(!message.contains("not rewritten"), "{message}");
    // A type check cannot judge.
    let message = type_change("text", "citext");
    assert!(message.contains("depends on the type citext"), "{message}");
    // timestamp <-> timestamptz: the session's TimeZone.
    let message = type_change("timestamp", "timestamptz");
    assert!(message.contains("TimeZone"), "{message}");
    // A DO block between may have changed the column: what it was is no longer known.
    let found = set_findings(
        &[
            "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, c varchar(10));\n",
            "DO $$BEGIN EXECUTE 'ALTER TABLE t ALTER COLUMN c TYPE text'; END$$;\n",
            "ALTER TABLE t ALTER COLUMN c TYPE varchar(20);\n",
        ],
        &rules(),
    );
    let message = &of_rule(&found, "changing-column-type")[0].message;
    assert!(message.contains("depends on"), "{message}");
    // Earlier changes in the same file and the set are followed: text, then varchar(5).
    let found = set_findings(
        &[
            "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, c varchar(10));\nALTER TABLE t ALTER COLUMN c TYPE text;\n",
            "ALTER TABLE t RENAME COLUMN c TO d;\nALTER TABLE t ALTER COLUMN d TYPE varchar(5);\n",
        ],
        &rules(),
    );
    let changes = of_rule(&found, "changing-column-type");
    assert!(changes[0].message.contains("not rewritten"), "{changes:?}");
    assert!(
        changes[1].message.contains("from text to varchar(5)"),
        "{changes:?}"
    );
    assert!(
        changes[1].message.contains("rewrites the table"),
        "{changes:?}"
    );
}

fn messages(sql: &str, rule: &str) -> Vec<String> {
    let script = Script {
        path: Path::new("m.sql"),
        sql,
        mode: Mode::Transactional,
    };
    check_script(&script, &rules())
        .into_iter()
        .filter(|f| f.rule == rule)
        .map(|f| format!("{} | {}", f.message, f.help.unwrap_or_default()))
        .collect()
}

#[test]
fn constraint_advice_fits_the_kind_of_constraint() {
    let exclude = messages(
        "ALTER TABLE booking ADD CONSTRAINT no_overlap EXCLUDE USING gist (room WITH =, during WITH &&);",
        "constraint-missing-not-valid",
    );
    assert_eq!(exclude.len(), 1, "{exclude:?}");
    assert!(
        exclude[0].contains("cannot be added NOT VALID"),
        "{exclude:?}"
    );
    assert!(!exclude[0].contains("Add it NOT VALID"), "{exclude:?}");

    let check = messages(
        "ALTER TABLE t ADD CONSTRAINT c_pos CHECK (c > 0);",
        "constraint-missing-not-valid",
    );
    assert!(check[0].contains("ACCESS EXCLUSIVE"), "{check:?}");
    assert!(check[0].contains("reads and writes"), "{check:?}");
    assert!(check[0].contains("NOT VALID"), "{check:?}");

    let fk = messages(
        "ALTER TABLE t ADD CONSTRAINT t_u FOREIGN KEY (u) REFERENCES users (id);",
        "constraint-missing-not-valid",
    );
    assert!(
        fk[0].contains("SHARE ROW EXCLUSIVE locks on t and users"),
        "{fk:?}"
    );

    let unique = messages(
        "ALTER TABLE t ADD CONSTRAINT t_c UNIQUE (c);",
        "constraint-missing-not-valid",
    );
    assert!(unique[0].contains("USING INDEX"), "{unique:?}");
    assert!(unique[0].contains("NOT VALID does not apply"), "{unique:?}");

    // VALIDATE in the same transaction: a foreign key's locks block writes, not reads.
    let validate = messages(
        "ALTER TABLE t ADD CONSTRAINT t_u FOREIGN KEY (u) REFERENCES users (id) NOT VALID;\nALTER TABLE t VALIDATE CONSTRAINT t_u;",
        "constraint-missing-not-valid",
    );
    assert_eq!(validate.len(), 1, "{validate:?}");
    assert!(
        validate[0].contains("blocking writes to both"),
        "{validate:?}"
    );
    assert!(!validate[0].contains("block all reads"), "{validate:?}");
}

#[test]
fn a_volatile_default_is_not_a_generated_column() {
    let random = messages(
        "ALTER TABLE t ADD COLUMN r float8 DEFAULT random();",
        "adding-field-with-default",
    );
    assert_eq!(random.len(), 1, "{random:?}");
    assert!(!random[0].contains("generated column"), "{random:?}");
    assert!(
        random[0].contains("`DEFAULT random()` is volatile"),
        "{random:?}"
    );
    assert!(random[0].contains("rewrites t"), "{random:?}");

    let unknown = messages(
        "ALTER TABLE t ADD COLUMN r text DEFAULT my_func(1);",
        "adding-field-with-default",
    );
    assert!(
        unknown[0].contains("If its DEFAULT is volatile"),
        "{unknown:?}"
    );
    assert!(unknown[0].contains("my_func()"), "{unknown:?}");

    let stored = messages(
        "ALTER TABLE t ADD COLUMN d int GENERATED ALWAYS AS (c * 2) STORED;",
        "adding-field-with-default",
    );
    assert!(stored[0].contains("STORED"), "{stored:?}");
    // A VIRTUAL generated column is computed when read: nothing is rewritten.
    let virtual_column = messages(
        "ALTER TABLE t ADD COLUMN d int GENERATED ALWAYS AS (c * 2) VIRTUAL;",
        "adding-field-with-default",
    );
    assert!(virtual_column.is_empty(), "{virtual_column:?}");
}

#[test]
fn a_constant_default_is_cheap_from_11_on_even_written_as_11() {
    let sql = "ALTER TABLE t ADD COLUMN c text DEFAULT 'x';";
    let script = Script {
        path: Path::new("m.sql"),
        sql,
        mode: Mode::Transactional,
    };
    for (version, fires) in [("10", true), ("11", false), ("11.2", false), ("16", false)] {
        let mut rules = rules();
        rules.set_pg_version(version).unwrap();
        let found = check_script(&script, &rules);
        assert_eq!(
            found.iter().any(|f| f.rule == "adding-field-with-default"),
            fires,
            "{version}: {found:?}"
        );
    }
}

#[test]
fn rewrites_and_truncates_under_access_exclusive_are_named() {
    for (sql, rule, mode) in [
        (
            "CLUSTER t USING t_pkey;",
            "table-rewrite",
            Mode::Transactional,
        ),
        ("VACUUM FULL t;", "table-rewrite", Mode::NoTransaction),
        (
            "VACUUM (FULL, ANALYZE) t;",
            "table-rewrite",
            Mode::NoTransaction,
        ),
        (
            "ALTER TABLE t SET UNLOGGED;",
            "table-rewrite",
            Mode::Transactional,
        ),
        (
            "ALTER TABLE t SET LOGGED;",
            "table-rewrite",
            Mode::Transactional,
        ),
        (
            "ALTER TABLE t SET ACCESS METHOD heap2;",
            "table-rewrite",
            Mode::Transactional,
        ),
        (
            "ALTER TABLE t SET TABLESPACE fast;",
            "table-rewrite",
            Mode::Transactional,
        ),
        (
            "REFRESH MATERIALIZED VIEW v;",
            "require-concurrent-refresh",
            Mode::Transactional,
        ),
        ("TRUNCATE t;", "ban-truncate", Mode::Transactional),
        (
            "ALTER TABLE t ADD COLUMN n bigserial;",
            "adding-serial-field",
            Mode::Transactional,
        ),
        (
            "DO $$BEGIN EXECUTE 'TRUNCATE t'; END$$;",
            "do-block-not-linted",
            Mode::Transactional,
        ),
    ] {
        let script = Script {
            path: Path::new("m.sql"),
            sql,
            mode,
        };
        let found = check_script(&script, &rules());
        let hits: Vec<&Finding> = found.iter().filter(|f| f.rule == rule).collect();
        assert_eq!(hits.len(), 1, "{sql}: {found:?}");
        if rule != "do-block-not-linted" {
            assert!(
                hits[0].message.contains("ACCESS EXCLUSIVE"),
                "{sql}: {}",
                hits[0].message
            );
        }
    }
    for sql in [
        "REFRESH MATERIALIZED VIEW CONCURRENTLY v;",
        "VACUUM t;",
        "VACUUM (FULL false) t;",
        "ALTER TABLE t ADD COLUMN n bigint;",
        "-- squawk-ignore ban-truncate\nTRUNCATE t;",
    ] {
        let script = Script {
            path: Path::new("m.sql"),
            sql,
            mode: Mode::NoTransaction,
        };
        let ours: Vec<String> = check_script(&script, &rules())
            .into_iter()
            .map(|f| f.rule)
            .filter(|r| {
                [
                    "table-rewrite",
                    "require-concurrent-refresh",
                    "ban-truncate",
                    "adding-serial-field",
                ]
                .contains(&r.as_str())
            })
            .collect();
        assert!(ours.is_empty(), "{sql}: {ours:?}");
    }
    // A rollback may empty a table: not held to it, as DELETE without WHERE.
    assert_eq!(rules().for_down_migrations().severity("ban-truncate"), None);
}

/// squawk takes any `ARRAY[...]` default for a constant: a volatile call inside one still
/// computes the default for every row. And the sequence functions are volatile built-ins.
#[test]
fn a_volatile_call_anywhere_in_a_default_is_a_rewrite() {
    for (sql, function) in [
        (
            "ALTER TABLE t ADD COLUMN x int[] DEFAULT array[random()::int];",
            "random()",
        ),
        (
            "ALTER TABLE t ADD COLUMN x int[] DEFAULT array[1, random()::int];",
            "random()",
        ),
        (
            "ALTER TABLE t ADD COLUMN x int[] DEFAULT array[array[1], array[(random() * 10)::int]];",
            "random()",
        ),
        (
            "ALTER TABLE t ADD COLUMN x bigint DEFAULT currval('s');",
            "currval()",
        ),
        (
            "ALTER TABLE t ADD COLUMN x bigint DEFAULT lastval();",
            "lastval()",
        ),
        (
            "ALTER TABLE t ADD COLUMN x bigint DEFAULT setval('s', 1);",
            "setval()",
        ),
    ] {
        let found = messages(sql, "adding-field-with-default");
        assert_eq!(found.len(), 1, "{sql}: {found:?}");
        assert!(
            found[0].contains(&format!("`DEFAULT {function}` is volatile")),
            "{sql}: {found:?}"
        );
        assert!(found[0].contains("rewrites t"), "{sql}: {found:?}");
    }
    // A constant array is stored once.
    let constant = messages(
        "ALTER TABLE t ADD COLUMN x int[] DEFAULT array[1, 2];",
        "adding-field-with-default",
    );
    assert!(constant.is_empty(), "{constant:?}");
    // squawk-ignore silences the finding check makes where squawk makes none.
    let ignored = messages(
        "-- squawk-ignore adding-field-with-default\nALTER TABLE t ADD COLUMN x int[] DEFAULT array[random()::int];",
        "adding-field-with-default",
    );
    assert!(ignored.is_empty(), "{ignored:?}");
}

/// PostgreSQL (through 18) checks a domain's constraints for every existing row when a column
/// of it is added, default or not: a rewrite, which no advice may offer a way around that also
/// rewrites.
#[test]
fn a_column_of_a_domain_with_constraints_is_a_rewrite() {
    let domain = "CREATE DOMAIN posint AS int CHECK (VALUE > 0);\n";
    let rewrite_of = |sql: &str| -> Vec<String> {
        let sql = format!("{domain}{sql}");
        let mut found = messages(&sql, "adding-field-with-default");
        found.extend(messages(&sql, "table-rewrite"));
        found
    };
    for sql in [
        "ALTER TABLE t ADD COLUMN y posint DEFAULT 5;",
        "ALTER TABLE t ADD COLUMN y posint;",
        "ALTER TABLE t ADD COLUMN y posint NOT NULL DEFAULT 5;",
        "ALTER TABLE t ADD COLUMN y public.posint DEFAULT abs(-5);",
    ] {
        let found = rewrite_of(sql);
        assert_eq!(found.len(), 1, "{sql}: {found:?}");
        assert!(
            found[0].contains("posint is a domain with constraints"),
            "{sql}: {found:?}"
        );
        assert!(found[0].contains("rewrites t"), "{sql}: {found:?}");
        assert!(
            !found[0].contains("no row is rewritten"),
            "{sql}: {found:?}"
        );
        // Adding it without a default rewrites too: not the advice.
        assert!(
            !found[0].contains("Add the column without a default"),
            "{sql}: {found:?}"
        );
        assert!(found[0].contains("base type"), "{sql}: {found:?}");
    }
    // Without a default, the rule is table-rewrite.
    let none = messages(
        &format!("{domain}ALTER TABLE t ADD COLUMN y posint;"),
        "table-rewrite",
    );
    assert_eq!(none.len(), 1, "{none:?}");
    // A stable default is no way around it.
    let stable = messages(
        "CREATE DOMAIN since AS timestamptz CHECK (VALUE > '2000-01-01');\nALTER TABLE t ADD COLUMN y since DEFAULT now();",
        "adding-field-with-default",
    );
    assert_eq!(stable.len(), 1, "{stable:?}");
    assert!(
        stable[0].contains("since is a domain with constraints"),
        "{stable:?}"
    );
    // A constraint added later, a domain of a constrained domain, a NOT NULL domain; across
    // the files of a set.
    let found = set_findings(
        &[
            "CREATE DOMAIN d AS int;\nALTER DOMAIN d ADD CONSTRAINT d_pos CHECK (VALUE > 0);\nCREATE DOMAIN nn AS text NOT NULL;\n",
            "CREATE DOMAIN d2 AS d;\nALTER TABLE t ADD COLUMN a d, ADD COLUMN b d2, ADD COLUMN c nn DEFAULT '';\n",
        ],
        &rules(),
    );
    let rewrites: Vec<&str> = found
        .iter()
        .filter(|f| f.message.contains("is a domain with constraints"))
        .map(|f| f.rule.as_str())
        .collect();
    assert_eq!(
        rewrites,
        [
            "table-rewrite",
            "table-rewrite",
            "adding-field-with-default"
        ],
        "{found:?}"
    );
    // No constraint (or none left), an array of the domain, a target that stores the default.
    for sql in [
        "CREATE DOMAIN d AS int;\nALTER TABLE t ADD COLUMN y d;",
        "CREATE DOMAIN d AS int DEFAULT 1;\nALTER TABLE t ADD COLUMN y d;",
        "CREATE DOMAIN d AS int CONSTRAINT d_pos CHECK (VALUE > 0);\nALTER DOMAIN d DROP CONSTRAINT d_pos;\nALTER TABLE t ADD COLUMN y d;",
        "CREATE DOMAIN d AS int CHECK (VALUE > 0);\nDROP DOMAIN d;\nCREATE DOMAIN d AS int;\nALTER TABLE t ADD COLUMN y d;",
        "CREATE DOMAIN d AS int CHECK (VALUE > 0);\nALTER TABLE t ADD COLUMN y d[];",
    ] {
        let mut found = messages(sql, "table-rewrite");
        found.extend(messages(sql, "adding-field-with-default"));
        assert!(found.is_empty(), "{sql}: {found:?}");
    }
    let script = Script {
        path: Path::new("m.sql"),
        sql: "CREATE DOMAIN d AS int CHECK (VALUE > 0);\nALTER TABLE t ADD COLUMN y d DEFAULT 1;",
        mode: Mode::Transactional,
    };
    let mut on_19 = rules();
    on_19.set_pg_version("19").unwrap();
    let found = check_script(&script, &on_19);
    assert!(
        !found
            .iter()
            .any(|f| f.message.contains("is a domain with constraints")),
        "{found:?}"
    );
}

/// A function the migrations made may change any table when it is called (its body may
/// `ALTER TABLE`): after a call, as after `CALL` or a `DO` block, the column's type is not known.
#[test]
fn a_call_of_a_function_made_here_forgets_the_column_types() {
    let function = "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$BEGIN ALTER TABLE t ALTER COLUMN c TYPE int USING 0; END$$;\n";
    for call in [
        "SELECT f();\n",
        "SELECT public.f();\n",
        "SELECT 1 WHERE f() IS NULL;\n",
        "INSERT INTO log (x) SELECT f();\n",
    ] {
        let found = set_findings(
            &[
                "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, c varchar(10));\n",
                function,
                call,
                "ALTER TABLE t ALTER COLUMN c TYPE varchar(20);\n",
            ],
            &rules(),
        );
        let message = &of_rule(&found, "changing-column-type")[0].message;
        assert!(message.contains("depends on"), "{call}: {message}");
        assert!(!message.contains("not rewritten"), "{call}: {message}");
    }
    // A built-in function's call changes no table.
    let found = set_findings(
        &[
            "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, c varchar(10));\n",
            function,
            "SELECT now();\n",
            "ALTER TABLE t ALTER COLUMN c TYPE varchar(20);\n",
        ],
        &rules(),
    );
    let message = &of_rule(&found, "changing-column-type")[0].message;
    assert!(message.contains("not rewritten"), "{message}");
}

/// `set_config('search_path', ...)` moves unqualified names as `SET search_path` does; a
/// `SET LOCAL` (or a local `set_config`) in a migration outside a transaction does nothing.
#[test]
fn the_search_path_is_followed_through_set_config_and_not_through_a_lost_set_local() {
    let base =
        "CREATE SCHEMA a;\nCREATE TABLE public.p (x varchar(10));\nCREATE TABLE a.p (x integer);\n";
    let verdict = |second: &str| {
        let found = set_findings(&[base, second], &rules());
        of_rule(&found, "changing-column-type")
            .iter()
            .map(|f| f.message.clone())
            .collect::<Vec<_>>()
            .join("\n")
    };
    // a.p is an integer: to varchar it is rewritten.
    for call in [
        "SELECT set_config('search_path', 'a', false);",
        "SELECT pg_catalog.set_config('search_path', 'a', true);",
        "SELECT 1, set_config('search_path', 'a, public', false);",
    ] {
        let message = verdict(&format!(
            "{call}\nALTER TABLE p ALTER COLUMN x TYPE varchar(20);\n"
        ));
        assert!(!message.contains("not rewritten"), "{call}: {message}");
    }
    // Outside a transaction SET LOCAL does nothing: p is public.p, a varchar widened. (The
    // path is set first: under the default one, `"$user", public`, a may be the role's schema.)
    let message = verdict(
        "-- stepmigrate: no-transaction\nSET search_path = public;\nSET LOCAL search_path = a;\nALTER TABLE p ALTER COLUMN x TYPE varchar(20);\n",
    );
    assert!(message.contains("not rewritten"), "{message}");
    // A value not known here: unknown, never "not rewritten".
    let message = verdict(
        "SELECT set_config('search_path', current_setting('x.y'), false);\nALTER TABLE p ALTER COLUMN x TYPE varchar(20);\n",
    );
    assert!(!message.contains("not rewritten"), "{message}");
}

/// The query of a `PREPARE` runs at each `EXECUTE`: a DELETE or UPDATE in it is judged as one
/// written alone is (as one in `EXPLAIN ANALYZE`, a `WITH` or `COPY (...) TO` is).
#[test]
fn a_prepared_statement_is_judged_as_its_query() {
    for (sql, rule) in [
        ("PREPARE p AS DELETE FROM t;\nEXECUTE p;\n", "delete-without-where"),
        ("PREPARE p AS UPDATE t SET a = 1;\n", "update-without-where"),
        (
            "PREPARE p (bigint) AS WITH d AS (DELETE FROM t RETURNING id) SELECT count(*) FROM d;\n",
            "delete-without-where",
        ),
        ("EXPLAIN ANALYZE DELETE FROM t;\n", "delete-without-where"),
    ] {
        let found = set_findings(&[sql], &rules());
        assert_eq!(of_rule(&found, rule).len(), 1, "{sql}: {found:?}");
    }
    let found = set_findings(&["PREPARE p AS DELETE FROM t WHERE id = $1;\n"], &rules());
    assert!(
        of_rule(&found, "delete-without-where").is_empty(),
        "{found:?}"
    );
}

/// An unqualified column in a subquery is the innermost FROM's that has such a column: where
/// the migrations say the subquery's table has it, the WHERE reads nothing of the row. Where
/// they do not say, it may be the row's, as before.
#[test]
fn an_unqualified_column_is_the_innermost_tables_that_has_it() {
    let made = "CREATE TABLE t (id bigint, a bigint);\ncreate table o(id bigint, x bigint);\n";
    for (sql, rule) in [
        (
            "DELETE FROM t WHERE EXISTS (SELECT 1 FROM o WHERE o.id = id);\n",
            "delete-without-where",
        ),
        (
            "UPDATE t SET a = 1 WHERE EXISTS (SELECT 1 FROM o WHERE x = 1 AND id = o.id);\n",
            "update-without-where",
        ),
        (
            "DELETE FROM t WHERE EXISTS (SELECT 1 FROM o JOIN o AS o2 USING (x) WHERE id IS NULL);\n",
            "delete-without-where",
        ),
    ] {
        let found = set_findings(&[made, sql], &rules());
        let said = of_rule(&found, rule);
        assert!(
            said.len() == 1 && said[0].message.contains("does not depend on the row"),
            "{sql}: {found:?}"
        );
    }
    // A column of the row, a table not known, a WITH's name, a subquery, renamed columns:
    // the name may be the row's.
    for sql in [
        "DELETE FROM t WHERE EXISTS (SELECT 1 FROM o WHERE o.id = a);\n",
        "DELETE FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = id);\n",
        "DELETE FROM t WHERE EXISTS (SELECT 1 FROM o, u WHERE o.x = id);\n",
        "WITH o AS (SELECT 1 AS z) DELETE FROM t WHERE EXISTS (SELECT 1 FROM o WHERE z = id);\n",
        "DELETE FROM t WHERE EXISTS (SELECT 1 FROM (SELECT 1 AS k) s WHERE k = id);\n",
        "DELETE FROM t WHERE EXISTS (SELECT 1 FROM o AS q(i, j) WHERE i = id);\n",
        "DELETE FROM t WHERE EXISTS (SELECT 1 FROM o JOIN u ON u.k = id);\n",
    ] {
        let found = set_findings(&[made, sql], &rules());
        assert!(
            of_rule(&found, "delete-without-where").is_empty(),
            "{sql}: {found:?}"
        );
    }
    // A column the script itself drops from the subquery's table, before the statement.
    let found = set_findings(
        &[
            made,
            "ALTER TABLE o DROP COLUMN id;\nDELETE FROM t WHERE EXISTS (SELECT 1 FROM o WHERE x = id);\n",
        ],
        &rules(),
    );
    assert!(
        of_rule(&found, "delete-without-where").is_empty(),
        "{found:?}"
    );
}

/// On a partitioned table, the path the foreign key advice gives (the partitions keyed first)
/// scans nothing but takes an ACCESS EXCLUSIVE lock on the referenced table (PostgreSQL 15,
/// seen in `pg_locks`): the message and the help say so.
#[test]
fn the_partitioned_foreign_key_advice_says_what_its_path_locks() {
    let earlier = "CREATE TABLE t (id bigint PRIMARY KEY);\nCREATE TABLE p (id bigint, k bigint) PARTITION BY RANGE (id);\nCREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10);\n";
    let mut on_15 = rules();
    on_15.set_pg_version("15").unwrap();
    let found = set_findings(
        &[
            earlier,
            "ALTER TABLE p ADD CONSTRAINT p_k_fkey FOREIGN KEY (k) REFERENCES t(id);\n",
        ],
        &on_15,
    );
    for rule in [
        "constraint-missing-not-valid",
        "adding-foreign-key-constraint",
    ] {
        let hits = of_rule(&found, rule);
        assert_eq!(hits.len(), 1, "{rule}: {found:?}");
        let help = hits[0].help.as_deref().unwrap_or_default();
        assert!(
            hits[0]
                .message
                .contains("already has a matching foreign key")
                && hits[0].message.contains("ACCESS EXCLUSIVE lock on t"),
            "{hits:?}"
        );
        assert!(help.contains("each partition"), "{help}");
        assert!(
            help.contains("instead of scanning") && help.contains("ACCESS EXCLUSIVE lock on t"),
            "{help}"
        );
    }
}

/// On a partitioned table, a UNIQUE or PRIMARY KEY cannot be built from an index made
/// CONCURRENTLY on it (`USING INDEX` and `CONCURRENTLY` are refused there): the advice is what
/// PostgreSQL 15 accepts, with the lock it cannot avoid.
#[test]
fn a_unique_key_on_a_partitioned_table_gets_advice_postgresql_accepts() {
    let earlier = "CREATE TABLE p (id bigint NOT NULL, k bigint NOT NULL) PARTITION BY RANGE (k);\nCREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10);\n";
    for (sql, rules_hit) in [
        (
            "ALTER TABLE p ADD CONSTRAINT pu UNIQUE (id, k);\n",
            &[
                "constraint-missing-not-valid",
                "disallowed-unique-constraint",
            ][..],
        ),
        (
            "ALTER TABLE p ADD PRIMARY KEY (id, k);\n",
            &[
                "constraint-missing-not-valid",
                "adding-serial-primary-key-field",
            ][..],
        ),
    ] {
        let found = set_findings(&[earlier, sql], &rules());
        for rule in rules_hit {
            let hits = of_rule(&found, rule);
            assert_eq!(hits.len(), 1, "{sql} {rule}: {found:?}");
            let help = hits[0].help.as_deref().unwrap_or_default();
            assert!(hits[0].message.contains("partitioned table p"), "{hits:?}");
            assert!(help.starts_with("There is no way"), "{help}");
            assert!(
                help.contains("ALTER TABLE <partition> ADD CONSTRAINT"),
                "{help}"
            );
            assert!(help.contains("ON ONLY p"), "{help}");
            assert!(!help.starts_with("Build the index first"), "{help}");
        }
    }
    // A plain table keeps the USING INDEX advice.
    let found = set_findings(
        &[
            "CREATE TABLE u (id bigint NOT NULL);\n",
            "ALTER TABLE u ADD CONSTRAINT uu UNIQUE (id);\n",
        ],
        &rules(),
    );
    let hits = of_rule(&found, "constraint-missing-not-valid");
    assert!(
        hits[0].help.as_deref().unwrap().contains("USING INDEX"),
        "{hits:?}"
    );
}

/// The `changing-column-type` messages of a migration set, joined.
fn type_changes(files: &[&str]) -> String {
    let found = set_findings(files, &rules());
    let changes = of_rule(&found, "changing-column-type");
    assert!(!changes.is_empty(), "{files:?}: {found:?}");
    changes
        .iter()
        .map(|f| f.message.clone())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `ADD COLUMN IF NOT EXISTS` of a column that is there does nothing: its type stays.
#[test]
fn add_column_if_not_exists_of_a_column_there_keeps_its_type() {
    let message = type_changes(&[
        "CREATE TABLE t (c int);\nALTER TABLE t ADD COLUMN IF NOT EXISTS c varchar(10);\n",
        "ALTER TABLE t ALTER COLUMN c TYPE varchar(20);\n",
    ]);
    assert!(!message.contains("not rewritten"), "{message}");
    assert!(message.contains("integer"), "{message}");
    // A column not there is added with its type.
    let message = type_changes(&[
        "CREATE TABLE t (id int);\nALTER TABLE t ADD COLUMN IF NOT EXISTS c varchar(10);\n",
        "ALTER TABLE t ALTER COLUMN c TYPE varchar(20);\n",
    ]);
    assert!(message.contains("not rewritten"), "{message}");
    // A table whose columns are not all listed (LIKE) may have it: not known.
    let message = type_changes(&[
        "CREATE TABLE s (c int);\nCREATE TABLE t (LIKE s);\nALTER TABLE t ADD COLUMN IF NOT EXISTS c varchar(10);\n",
        "ALTER TABLE t ALTER COLUMN c TYPE varchar(20);\n",
    ]);
    assert!(!message.contains("not rewritten"), "{message}");
}

/// PostgreSQL's default `search_path` is `"$user", public`: a schema named like the role
/// (which check cannot know) comes first, so an unqualified name two schemas have is not judged.
#[test]
fn an_unqualified_name_in_two_schemas_under_the_default_search_path_is_not_judged() {
    let made =
        "CREATE TABLE t (c int);\nCREATE SCHEMA postgres;\nCREATE TABLE t (c varchar(10));\n";
    for sql in [
        "ALTER TABLE public.t ALTER COLUMN c TYPE varchar(20);\n",
        "ALTER TABLE t ALTER COLUMN c TYPE varchar(20);\n",
    ] {
        let message = type_changes(&[made, sql]);
        assert!(!message.contains("not rewritten"), "{sql}: {message}");
    }
    // Swapped: public.t is the varchar, the role's schema's t an integer.
    let made = "CREATE SCHEMA postgres;\nCREATE TABLE postgres.t (c int);\nCREATE TABLE public.t (c varchar(10));\n";
    let message = type_changes(&[made, "ALTER TABLE t ALTER COLUMN c TYPE varchar(20);\n"]);
    assert!(!message.contains("not rewritten"), "{message}");
    assert!(message.contains("depends"), "{message}");
    let message = type_changes(&[
        made,
        "ALTER TABLE public.t ALTER COLUMN c TYPE varchar(20);\n",
    ]);
    assert!(message.contains("not rewritten"), "{message}");
    // A change through the ambiguous name forgets both.
    let message = type_changes(&[
        made,
        "ALTER TABLE t ALTER COLUMN c TYPE bigint;\nALTER TABLE public.t ALTER COLUMN c TYPE varchar(20);\n",
    ]);
    assert!(!message.contains("not rewritten"), "{message}");
    // With a search_path set, the first schema that has it.
    let message = type_changes(&[
        made,
        "SET search_path = public;\nALTER TABLE t ALTER COLUMN c TYPE varchar(20);\n",
    ]);
    assert!(message.contains("not rewritten"), "{message}");
    // A name in one schema only is judged.
    let message = type_changes(&[
        "CREATE SCHEMA postgres;\nCREATE TABLE u (c varchar(10));\n",
        "ALTER TABLE u ALTER COLUMN c TYPE varchar(20);\n",
    ]);
    assert!(message.contains("not rewritten"), "{message}");
}

/// `ALTER SCHEMA s RENAME TO s2` moves its tables (a swap through a third name too), and
/// their DEFAULT partitions.
#[test]
fn a_schema_rename_moves_its_tables() {
    let made = "CREATE SCHEMA a;\nCREATE SCHEMA b;\nCREATE TABLE a.t (c int);\nCREATE TABLE b.t (c varchar(10));\n";
    let swap = "ALTER SCHEMA a RENAME TO tmp;\nALTER SCHEMA b RENAME TO a;\nALTER SCHEMA tmp RENAME TO b;\n";
    let message = type_changes(&[
        made,
        swap,
        "ALTER TABLE a.t ALTER COLUMN c TYPE varchar(20);\n",
    ]);
    assert!(message.contains("not rewritten"), "{message}");
    let message = type_changes(&[
        made,
        swap,
        "ALTER TABLE b.t ALTER COLUMN c TYPE varchar(20);\n",
    ]);
    assert!(!message.contains("not rewritten"), "{message}");
    assert!(message.contains("integer"), "{message}");
    let message = type_changes(&[
        made,
        "ALTER SCHEMA a RENAME TO s2;\n",
        "ALTER TABLE s2.t ALTER COLUMN c TYPE varchar(20);\n",
    ]);
    assert!(message.contains("integer"), "{message}");
    // The DEFAULT partition goes with its table.
    let found = set_findings(
        &[
            "CREATE SCHEMA s;\nCREATE TABLE s.p (k int) PARTITION BY RANGE (k);\nCREATE TABLE s.pd PARTITION OF s.p DEFAULT;\n",
            "ALTER SCHEMA s RENAME TO s2;\n",
            "CREATE TABLE s2.p2 PARTITION OF s2.p FOR VALUES FROM (0) TO (10);\n",
        ],
        &rules(),
    );
    assert!(
        found
            .iter()
            .any(|f| f.message.contains("DEFAULT partition (pd)")),
        "{found:?}"
    );
}

/// `ALTER INDEX`, `ALTER VIEW`, `ALTER SEQUENCE`, `ALTER MATERIALIZED VIEW ... RENAME` of a
/// table renames it, as `ALTER TABLE` does.
#[test]
fn a_table_renamed_through_another_kinds_alter_is_followed() {
    for kind in ["INDEX", "VIEW", "SEQUENCE", "MATERIALIZED VIEW"] {
        let message = type_changes(&[
            "CREATE TABLE t (c int);\nCREATE TABLE u (c varchar(10));\n",
            &format!(
                "ALTER {kind} t RENAME TO tmp;\nALTER TABLE u RENAME TO t;\nALTER TABLE tmp RENAME TO u;\n"
            ),
            "ALTER TABLE t ALTER COLUMN c TYPE varchar(20);\nALTER TABLE u ALTER COLUMN c TYPE varchar(20);\n",
        ]);
        let lines: Vec<&str> = message.lines().collect();
        assert_eq!(lines.len(), 2, "{kind}: {message}");
        assert!(lines[0].contains("not rewritten"), "{kind}: {message}");
        assert!(!lines[1].contains("not rewritten"), "{kind}: {message}");
    }
}
