//! The second round of places where `check` said "safe" and PostgreSQL does not agree: what a
//! migration set makes (a renamed domain, a table that already exists, a partitioned table) is
//! followed across statements and files, and the advice given is one PostgreSQL accepts.

use std::path::Path;

mod common;

use common::{of_rule, rules, set_findings};
use stepmigrate_check::{check_dir, check_script, Finding, LintRules, Script};
use stepmigrate_core::migration::Mode;

fn script_findings(sql: &str, mode: Mode, rules: &LintRules) -> Vec<Finding> {
    let script = Script {
        path: Path::new("m.sql"),
        sql,
        mode,
    };
    check_script(&script, rules)
}

/// The rules found in one transactional file.
fn rules_in(sql: &str) -> Vec<String> {
    script_findings(sql, Mode::Transactional, &rules())
        .into_iter()
        .map(|f| f.rule)
        .collect()
}

#[test]
fn a_renamed_domain_keeps_its_constraints() {
    let domain = "CREATE DOMAIN d2 AS text CHECK (VALUE <> '');\n";
    for rename in [
        "ALTER DOMAIN d2 RENAME TO d3;\n",
        "ALTER TYPE d2 RENAME TO d3;\n",
        "ALTER DOMAIN d2 RENAME TO d9;\nALTER TYPE public.d9 RENAME TO d3;\n",
        // Unknown constraints dropped IF EXISTS lower nothing; the renamed one is still there.
        "ALTER DOMAIN d2 DROP CONSTRAINT IF EXISTS nope;\nALTER DOMAIN d2 RENAME CONSTRAINT d2_check TO d2_nonempty;\nALTER DOMAIN d2 RENAME TO d3;\n",
    ] {
        for (add, rule) in [
            ("ALTER TABLE t ADD COLUMN c3 d3;\n", "table-rewrite"),
            (
                "ALTER TABLE t ADD COLUMN c3 d3 DEFAULT 'x';\n",
                "adding-field-with-default",
            ),
        ] {
            // In one file, and across the files of a set.
            let found = script_findings(
                &format!("{domain}{rename}{add}"),
                Mode::Transactional,
                &rules(),
            );
            let rewrites = of_rule(&found, rule);
            assert_eq!(rewrites.len(), 1, "{rename}{add}: {found:?}");
            assert!(
                rewrites[0].message.contains("d3 is a domain with constraints"),
                "{rewrites:?}"
            );
            let found = set_findings(&[domain, rename, add], &rules());
            assert_eq!(of_rule(&found, rule).len(), 1, "{rename}{add}: {found:?}");
        }
    }
    // A domain over a renamed constrained domain; the old name is no longer it.
    let found = rules_in(&format!(
        "{domain}CREATE DOMAIN e AS d2;\nALTER DOMAIN d2 RENAME TO d3;\nCREATE DOMAIN d2 AS text;\nALTER TABLE t ADD COLUMN a e, ADD COLUMN b d2;\n"
    ));
    assert_eq!(
        found.iter().filter(|r| *r == "table-rewrite").count(),
        1,
        "{found:?}"
    );
    // Its auto-named constraint dropped by PostgreSQL's name: no constraint left.
    for drop in [
        "ALTER DOMAIN d2 DROP CONSTRAINT d2_check;\n",
        "ALTER DOMAIN d2 RENAME CONSTRAINT d2_check TO x;\nALTER DOMAIN d2 DROP CONSTRAINT x;\n",
    ] {
        let found = rules_in(&format!("{domain}{drop}ALTER TABLE t ADD COLUMN c d2;\n"));
        assert!(
            !found.contains(&"table-rewrite".to_owned()),
            "{drop}: {found:?}"
        );
    }
}

/// A table is new in a migration only if it did not exist before it: `CREATE TABLE IF NOT
/// EXISTS` of a table an earlier migration made, or a table of the same name in another
/// schema, does not make the statements on it safe.
#[test]
fn a_table_is_new_only_if_it_did_not_exist() {
    let earlier = "CREATE TABLE t (id bigint PRIMARY KEY, u bigint, n int, name varchar(10));\nCREATE TABLE u (id bigint PRIMARY KEY, n int);\n";
    let statements = [
        (
            "CREATE INDEX ti ON t (n);\n",
            "require-concurrent-index-creation",
        ),
        (
            "ALTER TABLE t ADD CONSTRAINT t_pos CHECK (n > 0);\n",
            "constraint-missing-not-valid",
        ),
        (
            "ALTER TABLE t ADD CONSTRAINT t_u FOREIGN KEY (u) REFERENCES u (id);\n",
            "adding-foreign-key-constraint",
        ),
        (
            "ALTER TABLE t ADD CONSTRAINT t_name UNIQUE (name);\n",
            "constraint-missing-not-valid",
        ),
    ];
    for (statement, rule) in statements {
        let found = set_findings(
            &[
                earlier,
                &format!("CREATE TABLE IF NOT EXISTS t (id bigint PRIMARY KEY);\n{statement}"),
            ],
            &rules(),
        );
        assert_eq!(of_rule(&found, rule).len(), 1, "{statement}: {found:?}");
        // Another schema's table of the name does not make public's new.
        for other in [
            "CREATE SCHEMA s;\nCREATE TABLE s.t (id bigint PRIMARY KEY);\n",
            "CREATE SCHEMA s;\nSET search_path TO s, public;\nCREATE TABLE t (id bigint PRIMARY KEY);\nRESET search_path;\n",
        ] {
            let found = set_findings(&[earlier, &format!("{other}{statement}")], &rules());
            assert_eq!(of_rule(&found, rule).len(), 1, "{other}{statement}: {found:?}");
            let qualified = statement.replacen(" t ", " public.t ", 1);
            let found = set_findings(&[earlier, &format!("{other}{qualified}")], &rules());
            assert_eq!(of_rule(&found, rule).len(), 1, "{other}{qualified}: {found:?}");
        }
        // A table this migration made is new: nothing to say (squawk's judgement).
        for made in [
            "CREATE TABLE t (id bigint PRIMARY KEY, u bigint, n int, name text);",
            "DROP TABLE IF EXISTS t;\nCREATE TABLE IF NOT EXISTS t (id bigint PRIMARY KEY, u bigint, n int, name text);",
        ] {
            let found = set_findings(
                &[&format!(
                    "CREATE TABLE u (id bigint PRIMARY KEY);\n{made}\n{statement}"
                )],
                &rules(),
            );
            assert!(of_rule(&found, rule).is_empty(), "{made}{statement}: {found:?}");
        }
        // `IF NOT EXISTS` of a table the migrations neither made nor dropped: it may be
        // there already, made before them, with rows.
        let found = set_findings(
            &[&format!(
                "CREATE TABLE u (id bigint PRIMARY KEY);\nCREATE TABLE IF NOT EXISTS t (id bigint PRIMARY KEY, u bigint, n int, name text);\n{statement}"
            )],
            &rules(),
        );
        assert_eq!(of_rule(&found, rule).len(), 1, "{statement}: {found:?}");
        let found = set_findings(
            &[
                earlier,
                &format!(
                    "CREATE SCHEMA s;\nCREATE TABLE s.t (id bigint PRIMARY KEY, u bigint, n int, name text);\n{}",
                    statement.replacen(" t ", " s.t ", 1)
                ),
            ],
            &rules(),
        );
        assert!(of_rule(&found, rule).is_empty(), "{statement}: {found:?}");
    }
    // After the IF NOT EXISTS, t's columns are the ones it had.
    let found = set_findings(
        &[
            earlier,
            "CREATE TABLE IF NOT EXISTS t (id bigint PRIMARY KEY, name text);\nALTER TABLE t ALTER COLUMN name TYPE varchar(20);\n",
        ],
        &rules(),
    );
    let change = of_rule(&found, "changing-column-type");
    assert!(
        change[0].message.contains("the table is not rewritten"),
        "{change:?}"
    );
}

/// `ALTER ... ALL IN TABLESPACE x SET TABLESPACE y` copies every such relation under ACCESS
/// EXCLUSIVE; `SET TABLESPACE` moves the relation named, not its indexes.
#[test]
fn moving_to_a_tablespace_is_named_for_what_it_copies() {
    for (sql, says) in [
        (
            "ALTER TABLE ALL IN TABLESPACE slow SET TABLESPACE fast;",
            "every table in tablespace slow",
        ),
        (
            "ALTER TABLE ALL IN TABLESPACE slow OWNED BY app SET TABLESPACE fast NOWAIT;",
            "every table in tablespace slow owned by app",
        ),
        (
            "ALTER INDEX ALL IN TABLESPACE slow SET TABLESPACE fast;",
            "every index in tablespace slow",
        ),
        (
            "ALTER MATERIALIZED VIEW ALL IN TABLESPACE slow SET TABLESPACE fast;",
            "every materialized view in tablespace slow",
        ),
        ("ALTER TABLE t SET TABLESPACE fast;", "copies t under"),
        (
            "ALTER INDEX ti SET TABLESPACE fast;",
            "copies the index ti under",
        ),
        (
            "ALTER MATERIALIZED VIEW mv SET TABLESPACE fast;",
            "copies the materialized view mv under",
        ),
    ] {
        let found = script_findings(sql, Mode::Transactional, &rules());
        let rewrites = of_rule(&found, "table-rewrite");
        assert_eq!(rewrites.len(), 1, "{sql}: {found:?}");
        let message = &rewrites[0].message;
        assert!(message.contains(says), "{sql}: {message}");
        assert!(message.contains("ACCESS EXCLUSIVE"), "{sql}: {message}");
        assert!(!message.contains("and its indexes"), "{sql}: {message}");
    }
    let found = script_findings(
        "ALTER TABLE t SET TABLESPACE fast;",
        Mode::Transactional,
        &rules(),
    );
    let message = &of_rule(&found, "table-rewrite")[0].message;
    assert!(message.contains("its indexes stay"), "{message}");
}

/// A batch UPDATE's filter must read the column it sets of its own table: another table's
/// column of the same name does not change as the batches go.
#[test]
fn a_batch_filter_must_read_the_set_column_of_its_own_table() {
    let batch = |sql: &str| {
        of_rule(
            &script_findings(sql, Mode::Batch, &rules()),
            "batch-not-idempotent",
        )
        .len()
    };
    for bad in [
        "UPDATE t SET a = 'x' WHERE id IN (SELECT id FROM u WHERE u.a IS NULL LIMIT 1000);",
        "UPDATE t SET a = 'x' WHERE id IN (SELECT id FROM u WHERE a IS NULL LIMIT 1000);",
        "UPDATE t SET a = 'x' WHERE id IN (SELECT u.id FROM u JOIN v ON v.id = u.id WHERE v.a IS NULL LIMIT 1000);",
        "UPDATE t AS x SET a = 'x' WHERE id IN (SELECT id FROM t WHERE EXISTS (SELECT 1 FROM u t WHERE t.a IS NULL) LIMIT 1000);",
        "UPDATE t SET a = 'x' FROM u WHERE t.id = u.id AND u.a IS NULL;",
    ] {
        assert_eq!(batch(bad), 1, "{bad}");
    }
    for good in [
        "UPDATE t SET a = 'x' WHERE id IN (SELECT id FROM t WHERE a IS NULL LIMIT 1000);",
        "UPDATE t SET a = 'x' WHERE id IN (SELECT id FROM t WHERE t.a IS NULL LIMIT 1000);",
        "UPDATE t SET a = 'x' WHERE id IN (SELECT s.id FROM public.t s WHERE s.a IS NULL LIMIT 1000);",
        "UPDATE t SET a = 'x' WHERE id IN (SELECT id FROM u WHERE u.id = t.id AND t.a IS NULL LIMIT 1000);",
        "UPDATE t x SET a = 'x' FROM u WHERE x.id = u.id AND x.a IS NULL;",
        "UPDATE t SET a = 'x' WHERE a IS NULL AND id < 1000;",
    ] {
        assert_eq!(batch(good), 0, "{good}");
    }
}

/// `VALIDATE CONSTRAINT` in the transaction that added the constraint NOT VALID, found by the
/// name PostgreSQL gives it: after a rename, or the one it chooses for an unnamed constraint.
#[test]
fn validating_in_the_same_transaction_is_found_by_the_constraints_real_name() {
    let table = "CREATE TABLE IF NOT EXISTS t (id bigint, n int, m int, u bigint);\n";
    let validates = |sql: &str, mode: Mode| -> usize {
        script_findings(sql, mode, &rules())
            .iter()
            .filter(|f| {
                f.rule == "constraint-missing-not-valid"
                    && f.message
                        .contains("in the transaction that added it NOT VALID")
            })
            .count()
    };
    for sql in [
        "ALTER TABLE t ADD CONSTRAINT n_pos CHECK (n > 0) NOT VALID;\nALTER TABLE t RENAME CONSTRAINT n_pos TO n_positive;\nALTER TABLE t VALIDATE CONSTRAINT n_positive;\n",
        "ALTER TABLE t ADD CHECK (n < 1000) NOT VALID;\nALTER TABLE t VALIDATE CONSTRAINT t_n_check;\n",
        "ALTER TABLE t ADD CHECK (n > 0 AND n < 1000) NOT VALID;\nALTER TABLE t VALIDATE CONSTRAINT t_n_check;\n",
        "ALTER TABLE t ADD CHECK (n > m) NOT VALID;\nALTER TABLE t VALIDATE CONSTRAINT t_check;\n",
        "ALTER TABLE t ADD FOREIGN KEY (u) REFERENCES users (id) NOT VALID;\nALTER TABLE t VALIDATE CONSTRAINT t_u_fkey;\n",
        "ALTER TABLE t ADD FOREIGN KEY (u, m) REFERENCES users (id, x) NOT VALID;\nALTER TABLE t VALIDATE CONSTRAINT t_u_m_fkey;\n",
    ] {
        let sql = format!("{table}{sql}");
        assert_eq!(validates(&sql, Mode::Transactional), 1, "{sql}");
        // Each statement its own transaction: nothing to say.
        assert_eq!(validates(&sql, Mode::NoTransaction), 0, "{sql}");
    }
    // Another constraint's name, the old name after a rename.
    for sql in [
        "ALTER TABLE t ADD CHECK (n < 1000) NOT VALID;\nALTER TABLE t VALIDATE CONSTRAINT t_m_check;\n",
        "ALTER TABLE t ADD CONSTRAINT n_pos CHECK (n > 0) NOT VALID;\nALTER TABLE t RENAME CONSTRAINT n_pos TO n_positive;\nALTER TABLE t VALIDATE CONSTRAINT n_pos;\n",
    ] {
        let sql = format!("{table}{sql}");
        assert_eq!(validates(&sql, Mode::Transactional), 0, "{sql}");
    }
}

/// What PostgreSQL refuses on a partitioned table is not the advice: NOT VALID foreign keys
/// (before 18), CREATE INDEX CONCURRENTLY, DETACH CONCURRENTLY with a DEFAULT partition (or
/// before 14). A DEFAULT partition is locked and scanned when a partition is added.
#[test]
fn advice_for_a_partitioned_table_is_what_postgresql_accepts() {
    let earlier = "CREATE TABLE u (id bigint PRIMARY KEY);\nCREATE TABLE pt (id bigint, a bigint) PARTITION BY RANGE (id);\nCREATE TABLE p1 PARTITION OF pt FOR VALUES FROM (0) TO (10);\n";
    let with_default = "CREATE TABLE pd PARTITION OF pt DEFAULT;\n";
    let on = |version: Option<&str>| {
        let mut rules = rules();
        if let Some(v) = version {
            rules.set_pg_version(v).unwrap();
        }
        rules
    };
    // A foreign key: not "add it NOT VALID" before 18.
    for version in [None, Some("15"), Some("11")] {
        let found = set_findings(
            &[
                earlier,
                "ALTER TABLE pt ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES u (id);\n",
            ],
            &on(version),
        );
        for rule in [
            "constraint-missing-not-valid",
            "adding-foreign-key-constraint",
        ] {
            let hits = of_rule(&found, rule);
            assert_eq!(hits.len(), 1, "{version:?} {rule}: {found:?}");
            let help = hits[0].help.as_deref().unwrap_or_default();
            assert!(hits[0].message.contains("partitioned"), "{hits:?}");
            assert!(help.contains("each partition"), "{help}");
            assert!(!help.starts_with("Add it NOT VALID"), "{help}");
            assert!(!help.starts_with("Add `NOT VALID`"), "{help}");
        }
    }
    // On 18 NOT VALID is accepted: squawk's advice stands.
    let found = set_findings(
        &[
            earlier,
            "ALTER TABLE pt ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES u (id);\n",
        ],
        &on(Some("18")),
    );
    let hits = of_rule(&found, "constraint-missing-not-valid");
    assert!(
        hits[0].help.as_deref().unwrap().contains("NOT VALID"),
        "{hits:?}"
    );
    // An index: not "use CONCURRENTLY"; ON ONLY builds nothing.
    let found = set_findings(&[earlier, "CREATE INDEX pti ON pt (id);\n"], &rules());
    let hits = of_rule(&found, "require-concurrent-index-creation");
    assert_eq!(hits.len(), 1, "{found:?}");
    let help = hits[0].help.as_deref().unwrap();
    assert!(hits[0].message.contains("refuses CONCURRENTLY"), "{hits:?}");
    assert!(help.contains("ON ONLY pt"), "{help}");
    assert!(help.contains("ATTACH PARTITION"), "{help}");
    let found = set_findings(&[earlier, "CREATE INDEX pti ON ONLY pt (id);\n"], &rules());
    assert!(
        of_rule(&found, "require-concurrent-index-creation").is_empty(),
        "{found:?}"
    );
    // A plain table's index keeps squawk's advice.
    let found = set_findings(&[earlier, "CREATE INDEX ui ON u (id);\n"], &rules());
    let hits = of_rule(&found, "require-concurrent-index-creation");
    assert!(hits[0].help.as_deref().unwrap().contains("concurrently"));
    // DETACH: CONCURRENTLY is refused with a DEFAULT partition, and is 14's.
    let detach = "ALTER TABLE pt DETACH PARTITION p1;\n";
    let found = set_findings(&[earlier, with_default, detach], &rules());
    let hits = of_rule(&found, "require-concurrent-partition-detach");
    assert_eq!(hits.len(), 1, "{found:?}");
    assert!(
        hits[0].message.contains("DEFAULT partition (pd)"),
        "{hits:?}"
    );
    let found = set_findings(&[earlier, detach], &on(Some("13")));
    let hits = of_rule(&found, "require-concurrent-partition-detach");
    assert_eq!(hits.len(), 1, "{found:?}");
    assert!(hits[0].message.contains("PostgreSQL 14"), "{hits:?}");
    assert!(
        !hits[0]
            .help
            .as_deref()
            .unwrap()
            .starts_with("Detach the partition `CONCURRENTLY`"),
        "{hits:?}"
    );
    let found = set_findings(&[earlier, detach], &on(Some("14")));
    let hits = of_rule(&found, "require-concurrent-partition-detach");
    assert!(hits[0].help.as_deref().unwrap().contains("CONCURRENTLY"));
    // A new partition beside a DEFAULT one: the default partition is locked and scanned.
    for add in [
        "CREATE TABLE p3 PARTITION OF pt FOR VALUES FROM (20) TO (30);\n",
        "CREATE TABLE p2 (id bigint, a bigint);\nALTER TABLE pt ATTACH PARTITION p2 FOR VALUES FROM (10) TO (20);\n",
    ] {
        let found = set_findings(&[earlier, with_default, add], &rules());
        let hits = of_rule(&found, "default-partition-scan");
        assert_eq!(hits.len(), 1, "{add}: {found:?}");
        assert!(hits[0].message.contains("pd"), "{hits:?}");
        assert!(hits[0].message.contains("ACCESS EXCLUSIVE"), "{hits:?}");
        // Without a default partition (or after it is detached), nothing.
        let found = set_findings(&[earlier, add], &rules());
        assert!(of_rule(&found, "default-partition-scan").is_empty(), "{found:?}");
        let found = set_findings(
            &[earlier, with_default, "ALTER TABLE pt DETACH PARTITION pd;\n", add],
            &rules(),
        );
        assert!(of_rule(&found, "default-partition-scan").is_empty(), "{found:?}");
    }
}

/// Before PostgreSQL 11 any DEFAULT rewrites: the help does not offer a constant one, nor call
/// it volatile.
#[test]
fn the_help_for_a_default_before_11_offers_no_constant_default() {
    for version in ["9.6", "10"] {
        let mut on = rules();
        on.set_pg_version(version).unwrap();
        let found = script_findings(
            "ALTER TABLE t ADD COLUMN x bigint DEFAULT 0;",
            Mode::Transactional,
            &on,
        );
        let hits = of_rule(&found, "adding-field-with-default");
        assert_eq!(hits.len(), 1, "{version}: {found:?}");
        let help = hits[0].help.as_deref().unwrap();
        assert!(hits[0].message.contains("Before PostgreSQL 11"), "{hits:?}");
        assert!(!help.contains("constant one"), "{version}: {help}");
        assert!(!help.contains("volatile"), "{version}: {help}");
        assert!(help.contains("SET DEFAULT"), "{version}: {help}");
    }
}

/// Before PostgreSQL 12, `ALTER TYPE ... ADD VALUE` is refused inside a transaction block
/// (unless the type was made in it).
#[test]
fn adding_an_enum_value_in_a_transaction_before_12_is_an_error() {
    let add = "ALTER TYPE mood ADD VALUE 'c';";
    let found_on = |version: Option<&str>, sql: &str, mode: Mode| -> Vec<Finding> {
        let mut on = rules();
        if let Some(v) = version {
            on.set_pg_version(v).unwrap();
        }
        script_findings(sql, mode, &on)
            .into_iter()
            .filter(|f| f.rule == "enum-value-in-transaction")
            .collect()
    };
    for version in ["9.6", "10", "11"] {
        let found = found_on(Some(version), add, Mode::Transactional);
        assert_eq!(found.len(), 1, "{version}: {found:?}");
        assert_eq!(found[0].severity, stepmigrate_check::Severity::Error);
        assert!(
            found[0].message.contains(&format!("PostgreSQL {version}")),
            "{found:?}"
        );
        assert!(
            found[0].help.as_deref().unwrap().contains("no-transaction"),
            "{found:?}"
        );
        // Outside a transaction, or for a type made in the same transaction: accepted.
        assert!(found_on(Some(version), add, Mode::NoTransaction).is_empty());
        assert!(found_on(
            Some(version),
            &format!("CREATE TYPE mood AS ENUM ('a');\n{add}"),
            Mode::Transactional
        )
        .is_empty());
        // A BEGIN in a no-transaction file is a transaction block.
        assert_eq!(
            found_on(
                Some(version),
                &format!("BEGIN;\n{add}\nCOMMIT;"),
                Mode::NoTransaction
            )
            .len(),
            1
        );
    }
    for version in [None, Some("12"), Some("15")] {
        assert!(found_on(version, add, Mode::Transactional).is_empty());
    }
}

/// A down file drops what its up file made; DROP OWNED BY, DELETE without WHERE and a
/// CASCADE of what the up file did not make lose what it did not make, and are findings.
#[test]
fn a_down_file_is_held_to_what_it_did_not_make() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("001_app.sql"),
        "CREATE SCHEMA app;\nCREATE TABLE app.t (id int);\nCREATE TYPE mood AS ENUM ('a');\nALTER TABLE u ADD COLUMN c int;\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("001_app.down.sql"),
        "DROP SCHEMA app CASCADE;\nDROP TYPE mood CASCADE;\nALTER TABLE u DROP COLUMN c CASCADE;\nDROP SCHEMA public CASCADE;\nDROP OWNED BY postgres;\nDELETE FROM u;\nDROP TABLE app.t;\nTRUNCATE u;\n",
    )
    .unwrap();
    let found: Vec<(usize, String)> = check_dir(dir.path(), &rules())
        .unwrap()
        .findings
        .into_iter()
        .filter(|f| f.file.to_string_lossy().ends_with(".down.sql"))
        .map(|f| (f.line, f.rule))
        .collect();
    assert_eq!(
        found,
        [
            (4, "ban-drop-cascade".to_owned()),
            (5, "ban-drop-owned".to_owned()),
            // DELETE under the ACCESS EXCLUSIVE lock of line 3's DROP COLUMN.
            (6, "scan-under-held-lock".to_owned()),
            (6, "delete-without-where".to_owned()),
        ],
        "{found:?}"
    );
    let down = rules().for_down_migrations();
    for rule in ["delete-without-where", "ban-drop-owned", "ban-drop-cascade"] {
        assert!(down.severity(rule).is_some(), "{rule}");
    }
    for rule in [
        "ban-drop-table",
        "ban-drop-schema",
        "ban-truncate",
        "renaming-table",
    ] {
        assert!(down.severity(rule).is_none(), "{rule}");
    }
}

/// A target version that is no PostgreSQL release (`95` for 9.5) is refused.
#[test]
fn a_version_that_is_no_release_is_refused() {
    for bad in ["95", "20", "96", "25.1"] {
        let err = LintRules::default().set_pg_version(bad).unwrap_err();
        assert!(err.contains(bad), "{bad}: {err}");
    }
    for good in ["9.6", "10", "14.0", "18", "19"] {
        LintRules::default().set_pg_version(good).unwrap();
    }
}

/// An ignore comment naming no rule silences nothing: it is named, with the nearest rule.
#[test]
fn an_ignore_comment_of_an_unknown_rule_is_a_warning() {
    let found = script_findings(
        "-- squawk-ignore ban-drop-columns\nALTER TABLE t DROP COLUMN c;\n-- squawk-ignore-file update-without-where, ban-truncat\nSELECT 1;\n",
        Mode::Transactional,
        &rules(),
    );
    let unknown = of_rule(&found, "unknown-ignored-rule");
    assert_eq!(unknown.len(), 2, "{found:?}");
    assert_eq!((unknown[0].line, unknown[0].column), (1, 18), "{unknown:?}");
    assert!(
        unknown[0]
            .message
            .contains("did you mean \"ban-drop-column\""),
        "{unknown:?}"
    );
    assert_eq!(unknown[1].line, 3, "{unknown:?}");
    assert!(
        unknown[1].message.contains("\"ban-truncat\""),
        "{unknown:?}"
    );
    // The typo silenced nothing.
    assert_eq!(of_rule(&found, "ban-drop-column").len(), 1, "{found:?}");
    assert!(of_rule(
        &script_findings(
            "-- squawk-ignore\n-- squawk-ignore-file\nSELECT 1;\n",
            Mode::Transactional,
            &rules()
        ),
        "unknown-ignored-rule"
    )
    .is_empty());
}

/// What a statement does to tables the model does not follow (a CASCADE, a schema's
/// elements, a trigger's function) leaves their columns unknown: a type change after it is
/// not judged from what the table was before. Each case makes `s.t` with `c varchar(10)`,
/// does something that drops or remakes it out of the model's sight, makes it again with
/// `IF NOT EXISTS` as `c int`, and widens `c` to varchar(20): from int that rewrites.
#[test]
fn a_table_changed_out_of_sight_is_not_judged_from_what_it_was() {
    let earlier = "CREATE SCHEMA s;\nCREATE TABLE s.t (c varchar(10));\n";
    let widen = "CREATE TABLE IF NOT EXISTS s.t (c int);\nALTER TABLE s.t ALTER COLUMN c TYPE varchar(20);\n";
    for between in [
        "DROP SCHEMA s CASCADE;\nCREATE SCHEMA s;\n",
        "CREATE TABLE s.p (id int);\nDROP TABLE s.t;\nCREATE TABLE s.t (c varchar(10)) INHERITS (s.p);\nDROP TABLE s.p CASCADE;\n",
        "CREATE COLLATION s.k (provider = icu, locale = 'und');\nALTER TABLE s.t ALTER COLUMN c TYPE varchar(10) COLLATE s.k;\nDROP COLLATION s.k CASCADE;\nALTER TABLE s.t DROP COLUMN IF EXISTS c;\nALTER TABLE s.t ADD COLUMN IF NOT EXISTS c int;\n",
        "CREATE FUNCTION s.f() RETURNS int LANGUAGE sql AS 'SELECT 1';\nALTER TABLE s.t ADD COLUMN d int DEFAULT s.f();\nDROP FUNCTION s.f() CASCADE;\nDROP TABLE s.t;\nSELECT 1;\n",
        "DROP SCHEMA s CASCADE;\nCREATE SCHEMA s CREATE TABLE t (c int);\n",
        "CREATE TABLE s.log (x int);\nCREATE FUNCTION s.g() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN DROP TABLE s.t; CREATE TABLE s.t (c int); RETURN NEW; END$$;\nCREATE TRIGGER tg AFTER INSERT ON s.log FOR EACH ROW EXECUTE FUNCTION s.g();\nINSERT INTO s.log VALUES (1);\n",
        "DROP OWNED BY CURRENT_USER;\nCREATE SCHEMA s;\n",
        "CREATE EXTENSION IF NOT EXISTS some_extension SCHEMA s;\n",
    ] {
        let found = set_findings(&[earlier, &format!("{between}{widen}")], &rules());
        let change = of_rule(&found, "changing-column-type");
        let widened = change.last().expect("the widening is judged");
        assert!(widened.message.contains("varchar(20)"), "{between}: {found:?}");
        assert!(
            !widened.message.contains("not rewritten"),
            "{between}: {widened:?}"
        );
    }
    // Partitions go with their table, without CASCADE.
    let found = set_findings(
        &[
            "CREATE SCHEMA s;\nCREATE TABLE s.p (c varchar(10)) PARTITION BY LIST (c);\nCREATE TABLE s.t (c varchar(10), d varchar(10));\nALTER TABLE s.p ATTACH PARTITION s.t FOR VALUES IN ('a');\n",
            "CREATE TABLE s.q (c varchar(10)) PARTITION BY LIST (c);\nCREATE TABLE s.u PARTITION OF s.q (c) FOR VALUES IN ('a');\nALTER TABLE s.u ADD COLUMN d varchar(10);\nDROP TABLE s.q;\nCREATE TABLE IF NOT EXISTS s.u (c int, d int);\nALTER TABLE s.u ALTER COLUMN d TYPE varchar(20);\n",
        ],
        &rules(),
    );
    let change = of_rule(&found, "changing-column-type");
    assert!(
        change.iter().all(|f| !f.message.contains("not rewritten")),
        "{change:?}"
    );
    // What the model follows stays known: a plain widening after a DROP TABLE and CREATE.
    let found = set_findings(
        &[
            earlier,
            "DROP TABLE s.t;\nCREATE TABLE IF NOT EXISTS s.t (c varchar(10));\nINSERT INTO s.t VALUES ('x');\nALTER TABLE s.t ALTER COLUMN c TYPE varchar(20);\n",
        ],
        &rules(),
    );
    let change = of_rule(&found, "changing-column-type");
    assert!(change[0].message.contains("not rewritten"), "{change:?}");
}

/// `ALTER TYPE ... ALTER ATTRIBUTE ... TYPE`: the finding is about the tables of that type,
/// which CASCADE changes with it, not a lock on the type as if it were a table.
#[test]
fn altering_a_composite_types_attribute_names_the_tables_of_that_type() {
    let found = set_findings(
        &["CREATE TYPE pair AS (a varchar(10), b int);\nCREATE TABLE t OF pair;\nALTER TYPE pair ALTER ATTRIBUTE a TYPE varchar(20) CASCADE;\n"],
        &rules(),
    );
    let change = of_rule(&found, "changing-column-type");
    assert_eq!(change.len(), 1, "{found:?}");
    assert!(
        change[0].message.contains("every table made `OF pair`")
            && !change[0].message.contains("not rewritten"),
        "{change:?}"
    );
    // A table named like the type, elsewhere on the search_path, is not the type.
    let found = set_findings(
        &[
            "CREATE SCHEMA s;\nCREATE TABLE s.comp (a varchar(10));\nCREATE TYPE public.comp AS (a integer);\nCREATE TABLE t OF public.comp;\n",
            "SET search_path = public, s;\nALTER TYPE comp ALTER ATTRIBUTE a TYPE varchar(20) CASCADE;\nALTER TABLE comp ALTER COLUMN a TYPE varchar(30);\n",
        ],
        &rules(),
    );
    let change = of_rule(&found, "changing-column-type");
    assert!(
        change[0].message.contains("of the composite type comp")
            && !change[0].message.contains("not rewritten"),
        "{change:?}"
    );
}

/// A column added without a DEFAULT of its own gets its domain's: a volatile one is computed
/// for every existing row (a rewrite), one of unknown volatility may be; a constant one, or
/// the column's own `DEFAULT NULL`, is not.
#[test]
fn a_columns_default_from_its_domain_is_judged() {
    let finding = |domain: &str, add: &str| -> Vec<String> {
        let found = set_findings(
            &[
                &format!("CREATE TABLE t (c text);\n{domain}\n"),
                &format!("ALTER TABLE t ADD COLUMN {add};\n"),
            ],
            &rules(),
        );
        found
            .iter()
            .filter(|f| f.file.ends_with("002_m1.sql") && f.rule == "table-rewrite")
            .map(|f| f.message.clone())
            .collect()
    };
    let volatile = finding("CREATE DOMAIN d AS float8 DEFAULT random();", "x d");
    assert!(
        volatile.len() == 1 && volatile[0].contains("random() in it is volatile"),
        "{volatile:?}"
    );
    // Set later, through a base domain.
    let later = finding(
        "CREATE DOMAIN b AS float8;\nALTER DOMAIN b SET DEFAULT clock_timestamp();\nCREATE DOMAIN d AS b;",
        "x d",
    );
    assert!(
        later.len() == 1 && later[0].contains("volatile"),
        "{later:?}"
    );
    let unknown = finding("CREATE DOMAIN d AS int DEFAULT my_counter();", "x d");
    assert!(
        unknown.len() == 1 && unknown[0].contains("does not know the volatility of my_counter()"),
        "{unknown:?}"
    );
    for (domain, add) in [
        ("CREATE DOMAIN d AS int DEFAULT 0;", "x d"),
        (
            "CREATE DOMAIN d AS float8 DEFAULT random();",
            "x d DEFAULT NULL",
        ),
        (
            "CREATE DOMAIN d AS float8 DEFAULT random();\nALTER DOMAIN d DROP DEFAULT;",
            "x d",
        ),
    ] {
        assert!(finding(domain, add).is_empty(), "{domain} {add}");
    }
}

/// `ATTACH PARTITION` of an existing table locks it and scans every row; of a table made in
/// the same transaction (empty), nothing to say.
#[test]
fn attaching_an_existing_table_as_a_partition_is_a_scan() {
    let base =
        "CREATE TABLE t (c integer) PARTITION BY RANGE (c);\nCREATE TABLE big (c integer);\n";
    for attach in [
        "ALTER TABLE t ATTACH PARTITION big FOR VALUES FROM (0) TO (100);\n",
        "ALTER TABLE t ATTACH PARTITION big DEFAULT;\n",
    ] {
        let found = set_findings(&[base, attach], &rules());
        let scan = of_rule(&found, "attach-partition-scan");
        assert!(
            scan.len() == 1 && scan[0].message.contains("scans every row of it"),
            "{attach}: {found:?}"
        );
    }
    let found = set_findings(
        &[&format!("{base}CREATE TABLE small (c integer);\nALTER TABLE t ATTACH PARTITION small FOR VALUES FROM (0) TO (100);\n")],
        &rules(),
    );
    assert!(
        of_rule(&found, "attach-partition-scan").is_empty(),
        "{found:?}"
    );
}

/// An ignore comment is a comment: the same words inside a string, a quoted identifier or a
/// function's body silence nothing.
#[test]
fn an_ignore_comment_inside_a_string_or_a_body_silences_nothing() {
    let base = "CREATE TABLE t (id bigint PRIMARY KEY, a int NOT NULL);\nCREATE TABLE p (id bigint PRIMARY KEY);\n";
    for fake in [
        "COMMENT ON TABLE t IS '\n-- squawk-ignore-file\n';\n",
        "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$\nBEGIN\n-- squawk-ignore-file table-rewrite, ban-truncate, ban-drop-cascade\nRETURN 1;\nEND $$;\n",
        "COMMENT ON TABLE t IS '\n-- squawk-ignore table-rewrite\n';\n",
    ] {
        let found = set_findings(
            &[
                base,
                &format!("{fake}ALTER TABLE t ADD COLUMN s bigserial;\nCLUSTER t USING t_pkey;\nTRUNCATE t;\nDROP TABLE p CASCADE;\n"),
            ],
            &rules(),
        );
        for rule in ["table-rewrite", "ban-truncate", "ban-drop-cascade"] {
            assert!(!of_rule(&found, rule).is_empty(), "{fake} {rule}: {found:?}");
        }
    }
    // A real one still does.
    let found = set_findings(
        &[
            base,
            "-- squawk-ignore-file table-rewrite\nCLUSTER t USING t_pkey;\n",
        ],
        &rules(),
    );
    assert!(of_rule(&found, "table-rewrite").is_empty(), "{found:?}");
}

/// What reads every row under a lock that blocks writes, with no rewrite: a finding each.
#[test]
fn a_scan_under_a_blocking_lock_is_a_finding() {
    let base = "CREATE DOMAIN posint AS int;\nCREATE TABLE t (id bigint PRIMARY KEY, b text, v posint);\nCREATE UNIQUE INDEX t_b_idx ON t (b);\nALTER DOMAIN posint ADD CONSTRAINT posint_check CHECK (VALUE > 0) NOT VALID;\n";
    for (statement, says) in [
        ("ALTER DOMAIN posint SET NOT NULL;", "SHARE lock"),
        ("ALTER DOMAIN posint VALIDATE CONSTRAINT posint_check;", "SHARE lock"),
        ("ALTER TABLE t ADD COLUMN f bigint CHECK (f >= 0);", "full scan of t"),
        ("ALTER TABLE t ADD COLUMN f bigint NOT NULL DEFAULT 0 CONSTRAINT f_pos CHECK (f >= 0);", "full scan of t"),
        ("ALTER TABLE t DROP CONSTRAINT t_pkey;\nALTER TABLE t ADD CONSTRAINT t_pk2 PRIMARY KEY USING INDEX t_b_idx;", "NOT NULL"),
    ] {
        let found = set_findings(&[base, &format!("{statement}\n")], &rules());
        let scan = of_rule(&found, "blocking-scan");
        assert!(
            scan.len() == 1 && scan[0].message.contains(says),
            "{statement}: {found:?}"
        );
    }
}

/// In a no-transaction migration a lock ends with its statement: the words say so.
#[test]
fn outside_a_transaction_a_lock_lasts_the_statement() {
    let found = set_findings(
        &[
            "CREATE TABLE t (id bigint PRIMARY KEY, c varchar(10));\n",
            "-- stepmigrate: no-transaction\nALTER TABLE t ALTER COLUMN c TYPE varchar(20);\n",
        ],
        &rules(),
    );
    let change = of_rule(&found, "changing-column-type");
    assert!(
        change.len() == 1
            && change[0].message.contains("until the statement ends")
            && !change[0].message.contains("until the migration commits"),
        "{change:?}"
    );
}

/// A domain with a DEFAULT alone has no constraint: squawk's finding about constraints is
/// not made; one with a CHECK still is.
#[test]
fn a_domain_with_only_a_default_is_not_a_constrained_domain() {
    let found = set_findings(&["CREATE DOMAIN d AS float8 DEFAULT 0;\n"], &rules());
    assert!(
        of_rule(&found, "ban-create-domain-with-constraint").is_empty(),
        "{found:?}"
    );
    let found = set_findings(
        &["CREATE DOMAIN d AS float8 DEFAULT 0 CHECK (VALUE > 0);\n"],
        &rules(),
    );
    assert_eq!(
        of_rule(&found, "ban-create-domain-with-constraint").len(),
        1,
        "{found:?}"
    );
}

/// `REINDEX (CONCURRENTLY false)` is a blocking reindex: a finding, and no refusal in a
/// transaction (PostgreSQL runs it there).
#[test]
fn reindex_with_concurrently_false_is_not_concurrent() {
    for option in ["false", "0", "off"] {
        let found = set_findings(
            &[
                "CREATE TABLE t (id bigint PRIMARY KEY);\n",
                &format!("REINDEX (CONCURRENTLY {option}) TABLE t;\n"),
            ],
            &rules(),
        );
        assert!(
            !of_rule(&found, "require-concurrent-reindex").is_empty()
                && of_rule(&found, "migration-set").is_empty(),
            "{option}: {found:?}"
        );
    }
}

/// `SET EXPRESSION` of a stored generated column rewrites the table (PostgreSQL 17).
#[test]
fn setting_a_generated_columns_expression_rewrites() {
    let found = set_findings(
        &[
            "CREATE TABLE o (id bigint PRIMARY KEY, amount int, g int GENERATED ALWAYS AS (amount * 2) STORED);\n",
            "ALTER TABLE o ALTER COLUMN g SET EXPRESSION AS (amount * 3);\n",
        ],
        &rules(),
    );
    let rewrite = of_rule(&found, "table-rewrite");
    assert!(
        rewrite.len() == 1 && rewrite[0].message.contains("SET EXPRESSION"),
        "{found:?}"
    );
}

/// A call of a function or procedure the migrations made runs a body no rule reads: said,
/// as for a DO block.
#[test]
fn calling_code_the_migrations_made_is_not_linted_and_says_so() {
    for call in ["CALL widen();", "SELECT widen2();"] {
        let found = set_findings(
            &[
                "CREATE TABLE users (id bigint PRIMARY KEY, a int);\n",
                &format!("CREATE PROCEDURE widen() LANGUAGE sql AS $$ ALTER TABLE users ALTER COLUMN a TYPE bigint $$;\nCREATE FUNCTION widen2() RETURNS void LANGUAGE plpgsql AS $$ BEGIN ALTER TABLE users ALTER COLUMN a TYPE bigint; END $$;\n{call}\n"),
            ],
            &rules(),
        );
        assert_eq!(
            of_rule(&found, "do-block-not-linted").len(),
            1,
            "{call}: {found:?}"
        );
    }
}

/// A statement that works over the rows of a table an earlier statement of the transaction
/// locked ACCESS EXCLUSIVE (or the same ALTER TABLE does) runs under that lock: reads wait for
/// it too. Not in another transaction, not on a new table, not before the lock.
#[test]
fn work_over_rows_under_a_held_lock_is_a_finding() {
    let base = "CREATE TABLE users (id bigint PRIMARY KEY, a int, t text);\nCREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint);\nALTER TABLE users ADD CONSTRAINT a_pos CHECK (a > 0) NOT VALID;\n";
    for (statements, says) in [
        ("ALTER TABLE users VALIDATE CONSTRAINT a_pos, ADD COLUMN z int;", "the `ADD COLUMN z` of the same ALTER TABLE"),
        ("ALTER TABLE users ADD COLUMN z int;\nALTER TABLE users VALIDATE CONSTRAINT a_pos;", "line 1"),
        ("LOCK TABLE users IN ACCESS EXCLUSIVE MODE;\nALTER TABLE users VALIDATE CONSTRAINT a_pos;", "line 1"),
        ("ALTER TABLE users ADD COLUMN z int;\nUPDATE users SET z = a WHERE z IS NULL;", "line 1"),
        ("ALTER TABLE users RENAME COLUMN t TO t2;\nCREATE INDEX ua ON users (a);", "line 1"),
        ("ALTER TABLE users ADD COLUMN z int;\nINSERT INTO orders SELECT id, id FROM users;\nDELETE FROM users WHERE a < 0;", "line 1"),
        ("ALTER TABLE users ALTER COLUMN t SET DEFAULT 'a';\nALTER TABLE users ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES orders (id);", "line 1"),
        // Work on another table, or a read of the held one, while it is held.
        ("ALTER TABLE users ADD COLUMN x bigint;\nUPDATE orders SET user_id = user_id + 1 WHERE id > 0;", "while users is locked ACCESS EXCLUSIVE by line 1"),
        ("ALTER TABLE users ADD COLUMN q bigint;\nCREATE TABLE users_copy AS SELECT * FROM users;", "while users is locked"),
        ("ALTER TABLE users ADD COLUMN x2 bigint;\nCREATE INDEX orders_u ON orders (user_id);", "while users is locked"),
        ("ALTER TABLE users ADD COLUMN x3 bigint;\nSELECT count(*) FROM orders JOIN users ON users.id = orders.user_id;", "while users is locked"),
    ] {
        let found = set_findings(&[base, &format!("{statements}\n")], &rules());
        let held = of_rule(&found, "scan-under-held-lock");
        assert!(
            !held.is_empty() && held[0].message.contains(says),
            "{statements}: {found:?}"
        );
    }
    for statements in [
        "UPDATE users SET a = 1 WHERE id > 5;\nALTER TABLE users ADD COLUMN z int;",
        "CREATE TABLE fresh (id int);\nALTER TABLE fresh ADD COLUMN z int;\nUPDATE fresh SET z = 1 WHERE id > 0;",
        "ALTER TABLE users ADD CONSTRAINT fk FOREIGN KEY (a) REFERENCES orders (id) NOT VALID;\nUPDATE users SET a = 1 WHERE id > 5;",
        "-- stepmigrate: no-transaction\nALTER TABLE users ADD COLUMN z int;\nUPDATE users SET z = 1 WHERE id > 0;",
        "SELECT setval('s', 5);\nALTER TABLE users ADD COLUMN z int;\nSELECT pg_catalog.set_config('a.b', 'c', true);",
    ] {
        let found = set_findings(&[base, &format!("{statements}\n")], &rules());
        assert!(of_rule(&found, "scan-under-held-lock").is_empty(), "{statements}: {found:?}");
    }
}

/// A foreign key checked under the ACCESS EXCLUSIVE lock another clause of the same ALTER
/// takes (or ADD COLUMN's, for a column's REFERENCES) blocks reads too: the words say so, and
/// the advice is one PostgreSQL accepts.
#[test]
fn a_foreign_key_checked_under_access_exclusive_says_so() {
    let base = "CREATE TABLE users (id bigint PRIMARY KEY);\nCREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint, amount int);\n";
    let found = set_findings(
        &[base, "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id), ALTER COLUMN amount SET DEFAULT 0;\n"],
        &rules(),
    );
    for rule in [
        "adding-foreign-key-constraint",
        "constraint-missing-not-valid",
    ] {
        let f = of_rule(&found, rule);
        assert!(
            !f.is_empty()
                && f.iter().all(|f| f.message.contains("ACCESS EXCLUSIVE")
                    && !f.message.contains("SHARE ROW EXCLUSIVE")),
            "{rule}: {found:?}"
        );
    }
    let found = set_findings(
        &[
            base,
            "ALTER TABLE orders ADD COLUMN g bigint DEFAULT 1 REFERENCES users (id);\n",
        ],
        &rules(),
    );
    let f = of_rule(&found, "adding-foreign-key-constraint");
    assert!(
        f.len() == 1
            && f[0]
                .message
                .contains("under the ACCESS EXCLUSIVE lock ADD COLUMN takes")
            && f[0]
                .help
                .as_deref()
                .is_some_and(|h| h.contains("without REFERENCES")),
        "{found:?}"
    );
}
