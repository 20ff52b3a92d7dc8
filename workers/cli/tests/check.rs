//! (The lint tests switch `missing-down` off: their fixtures have no down files; tests/rollback.rs covers it.)
//! `stepmigrate check`: no database, findings with file, line and column, three renderings,
//! exit codes by severity.

mod common;

use common::{run_cli, run_cli_env, Dir};

/// No database is read: the URL points nowhere.
const NOWHERE: &str = "postgres://nobody@127.0.0.1:1/none";

fn set() -> Dir {
    Dir::new(&[
        ("001_create_users.sql", "CREATE TABLE users (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email text);\n"),
        ("002_backfill.sql", "-- every row on purpose? no\nUPDATE users SET email = lower(email);\n"),
        ("003_bad.sql", "ALTER TABLE users\n  ADD COLUMN note text DEFALT 'x';\n"),
        ("004_drop.sql", "ALTER TABLE users DROP COLUMN email;\n"),
    ])
}

#[test]
fn findings_name_file_line_column_rule_and_fix() {
    let dir = set();
    let run = run_cli(NOWHERE, dir.path(), &["check", "--disable", "missing-down"]);
    run.assert_code(1);
    let out = &run.stdout;
    assert!(
        out.contains("003_bad.sql:2:24: error[syntax] syntax error at or near \"DEFALT\""),
        "{out}"
    );
    assert!(
        out.contains("002_backfill.sql:2:1: warning[update-without-where]"),
        "{out}"
    );
    assert!(out.contains("004_drop.sql:1:"), "{out}");
    assert!(out.contains("error[ban-drop-column]"), "{out}");
    assert!(out.contains("    help: "), "{out}");
    assert!(
        out.contains("checked 4 files: 2 errors, 1 warning"),
        "{out}"
    );
}

#[test]
fn json_and_exit_codes_follow_the_severity() {
    let dir = set();
    let doc = run_cli(
        NOWHERE,
        dir.path(),
        &["check", "--disable", "missing-down", "--json"],
    )
    .assert_code(1)
    .json();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["errors"], 2);
    assert_eq!(doc["warnings"], 1);
    let syntax = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["rule"] == "syntax")
        .unwrap();
    assert_eq!(syntax["line"], 2);
    assert_eq!(syntax["column"], 24);
    assert!(syntax["file"].as_str().unwrap().ends_with("003_bad.sql"));

    // Only warnings left: success, unless warnings fail too.
    dir.remove("003_bad.sql");
    dir.remove("004_drop.sql");
    run_cli(NOWHERE, dir.path(), &["check", "--disable", "missing-down"]).assert_code(0);
    run_cli(
        NOWHERE,
        dir.path(),
        &["check", "--disable", "missing-down", "--fail-on", "warning"],
    )
    .assert_code(1);
    // Raised to an error by a flag; or switched off.
    run_cli(
        NOWHERE,
        dir.path(),
        &[
            "check",
            "--disable",
            "missing-down",
            "--rule",
            "update-without-where=error",
        ],
    )
    .assert_code(1);
    let clean = run_cli(
        NOWHERE,
        dir.path(),
        &[
            "check",
            "--disable",
            "missing-down",
            "--json",
            "--disable",
            "update-without-where",
        ],
    );
    assert_eq!(
        clean.assert_code(0).json()["findings"],
        serde_json::json!([])
    );
}

#[test]
fn github_actions_get_annotations() {
    let dir = set();
    let run = run_cli_env(
        NOWHERE,
        dir.path(),
        &["check", "--disable", "missing-down"],
        &[("GITHUB_ACTIONS", "true")],
    );
    run.assert_code(1);
    let annotations: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("::")).collect();
    assert_eq!(annotations.len(), 3, "{}", run.stdout);
    assert!(
        annotations.iter().any(|a| a.starts_with("::error file=")
            && a.contains("003_bad.sql,line=2,col=24,title=stepmigrate syntax::syntax error")),
        "{annotations:?}"
    );
    assert!(
        annotations.iter().any(|a| a.starts_with("::warning ")),
        "{annotations:?}"
    );
}

/// A file name is text from outside: a newline in it must not start a line of its own, where
/// GitHub Actions would read a workflow command (`::error ...`) the file's author wrote.
#[test]
fn a_file_name_cannot_inject_a_workflow_command() {
    let dir = set();
    dir.write(
        "002_b\n::error file=evil.sql::x\u{1b}[2J.sql",
        "UPDATE users SET a = 1;\n",
    );
    let run = run_cli_env(
        NOWHERE,
        dir.path(),
        &["check", "--disable", "missing-down"],
        &[("GITHUB_ACTIONS", "true")],
    );
    for line in run.stdout.lines() {
        assert!(!line.starts_with("::error file=evil.sql"), "{}", run.stdout);
        assert!(!line.contains('\u{1b}'), "{}", run.stdout);
    }
    assert!(
        run.stdout
            .contains("002_b\\n::error file=evil.sql::x\\u{1b}[2J.sql"),
        "{}",
        run.stdout
    );
}

#[test]
fn the_loaders_problems_are_findings_and_do_not_hide_the_other_files() {
    let dir = set();
    dir.write("5_badly_named.sql", "SELECT 1;\n");
    dir.write(
        "005_concurrently.sql",
        "CREATE INDEX CONCURRENTLY users_email ON users (email);\n",
    );
    let doc = run_cli(
        NOWHERE,
        dir.path(),
        &["check", "--disable", "missing-down", "--json"],
    )
    .assert_code(1)
    .json();
    let rules: Vec<(String, String)> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let file = f["file"].as_str().unwrap();
            let name = file.rsplit('/').next().unwrap().to_owned();
            (name, f["rule"].as_str().unwrap().to_owned())
        })
        .collect();
    assert!(
        rules.contains(&("5_badly_named.sql".into(), "migration-set".into())),
        "{rules:?}"
    );
    assert!(
        rules.contains(&("005_concurrently.sql".into(), "migration-set".into())),
        "{rules:?}"
    );
    // The other files were still read.
    assert!(
        rules.contains(&("003_bad.sql".into(), "syntax".into())),
        "{rules:?}"
    );
    assert!(
        rules.contains(&("004_drop.sql".into(), "ban-drop-column".into())),
        "{rules:?}"
    );
}

#[test]
fn a_bad_rule_setting_names_the_flag_and_suggests() {
    let dir = set();
    let run = run_cli(
        NOWHERE,
        dir.path(),
        &[
            "check",
            "--disable",
            "missing-down",
            "--disable",
            "ban-drop-colum",
        ],
    );
    run.assert_code(2);
    assert!(run.stderr.contains("--disable"), "{}", run.stderr);
    assert!(
        run.stderr.contains("did you mean \"ban-drop-column\""),
        "{}",
        run.stderr
    );
    let run = run_cli(
        NOWHERE,
        dir.path(),
        &[
            "check",
            "--disable",
            "missing-down",
            "--rule",
            "ban-drop-column=fatal",
        ],
    );
    run.assert_code(2);
    assert!(run.stderr.contains("unknown severity"), "{}", run.stderr);
}

#[test]
fn the_shipped_migrations_have_no_error() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let doc = run_cli(
        NOWHERE,
        &dir,
        &["check", "--disable", "missing-down", "--json"],
    )
    .assert_code(0)
    .json();
    assert_eq!(doc["errors"], 0, "{doc}");
    // Seven migrations and their down files.
    assert_eq!(doc["files"], 14);
}

/// Deep nesting that PostgreSQL's grammar accepts must be checked, not overflow a stack (an
/// abort, which loses every other finding); a PL/pgSQL body too deep to render is still fine.
#[test]
fn deeply_nested_statements_are_checked_not_crashed() {
    let dir = Dir::new(&[
        (
            "001_parentheses.sql",
            &format!("SELECT {}1{};\n", "(".repeat(3000), ")".repeat(3000)),
        ),
        (
            "002_plpgsql.sql",
            &format!(
                "DO $$BEGIN {} NULL; {} END$$;\n",
                "IF true THEN ".repeat(2000),
                "END IF; ".repeat(2000)
            ),
        ),
        (
            "003_too_deep.sql",
            &format!("SELECT {}1{};\n", "1+".repeat(20000), ""),
        ),
        // PostgreSQL accepts this one; libpg_query's stack limit does not.
        (
            "004_and.sql",
            &format!(
                "SELECT 1 WHERE true{}{};\n",
                " AND (true".repeat(2000),
                ")".repeat(2000)
            ),
        ),
    ]);
    let doc = run_cli(
        NOWHERE,
        dir.path(),
        &[
            "check",
            "--disable",
            "missing-down",
            "--disable",
            "do-block-not-linted",
            "--json",
        ],
    )
    .assert_code(0)
    .json();
    // The checker's own limit is not a syntax error of the migration: a warning says it gave
    // up, and does not fail the check.
    let findings = doc["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 2, "{doc}");
    for (finding, file) in findings.iter().zip(["003_too_deep.sql", "004_and.sql"]) {
        assert!(finding["file"].as_str().unwrap().ends_with(file), "{doc}");
        assert_eq!(finding["severity"], "warning", "{doc}");
        assert!(
            finding["message"]
                .as_str()
                .unwrap()
                .starts_with("not checked: the checker's parser (libpg_query) gave up"),
            "{doc}"
        );
    }
}

/// The project file's `[lint]` section sets the rules; flags come after it; an unknown rule in
/// it names the file and line.
#[test]
fn the_project_files_lint_section_configures_the_rules() {
    let dir = set();
    dir.write("003_bad.sql", "SELECT 1;\n");
    let project = dir.file("stepmigrate.toml");
    std::fs::write(
        &project,
        "migrations_dir = \".\"\n[lint]\npg_version = \"15\"\ndisable = [\"update-without-where\"]\n[lint.severity]\n\"ban-drop-column\" = \"warning\"\n",
    )
    .unwrap();
    let config = project.to_str().unwrap();
    let doc = run_cli(
        NOWHERE,
        dir.path(),
        &[
            "--config",
            config,
            "check",
            "--disable",
            "missing-down",
            "--json",
        ],
    )
    .assert_code(0)
    .json();
    let rules: Vec<&str> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["ban-drop-column"], "{doc}");
    assert_eq!(doc["findings"][0]["severity"], "warning");
    // A flag wins over the file.
    run_cli(
        NOWHERE,
        dir.path(),
        &[
            "--config",
            config,
            "check",
            "--disable",
            "missing-down",
            "--rule",
            "ban-drop-column=error",
        ],
    )
    .assert_code(1);

    std::fs::write(
        &project,
        "[lint]\nenable = [\n  \"require-timeout-setting\",\n]\n",
    )
    .unwrap();
    let run = run_cli(
        NOWHERE,
        dir.path(),
        &["--config", config, "check", "--disable", "missing-down"],
    );
    run.assert_code(2);
    assert!(
        run.stderr.contains("stepmigrate.toml:3: lint.enable"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("did you mean \"require-timeout-settings\""),
        "{}",
        run.stderr
    );
}

/// What a hostile review found, each kept fixed.
#[test]
fn hostile_review_findings_stay_fixed() {
    // --json under GitHub Actions is still one JSON document.
    let dir = set();
    let run = run_cli_env(
        NOWHERE,
        dir.path(),
        &["check", "--disable", "missing-down", "--json"],
        &[("GITHUB_ACTIONS", "true")],
    );
    run.assert_code(1).json();
    // -q shows only what fails the check.
    let run = run_cli(
        NOWHERE,
        dir.path(),
        &["check", "--disable", "missing-down", "-q"],
    );
    assert!(run.stdout.contains("error[syntax]"), "{}", run.stdout);
    assert!(!run.stdout.contains("warning["), "{}", run.stdout);
    assert!(
        !run.stdout.contains("help:") && !run.stdout.contains("checked "),
        "{}",
        run.stdout
    );
    // A malformed setting is an error here too.
    let run = run_cli_env(
        NOWHERE,
        dir.path(),
        &["check", "--disable", "missing-down"],
        &[("STEPMIGRATE_LOCK_TIMEOUT", "xyz")],
    );
    run.assert_code(2);
    assert!(
        run.stderr.contains("STEPMIGRATE_LOCK_TIMEOUT"),
        "{}",
        run.stderr
    );

    let dir = Dir::new(&[
        (
            "001_create.sql",
            "CREATE TABLE r (id bigint GENERATED ALWAYS AS IDENTITY);\n",
        ),
        // A down file drops what its up file made: no error for that.
        ("001_create.down.sql", "DROP TABLE r;\n"),
        // A PL/pgSQL error does not hide the file's lint findings.
        (
            "002_body.sql",
            "DO $$ BEGIN PERFORM 1 + ; END $$;\nALTER TABLE r DROP COLUMN id;\n",
        ),
        // Lone CRs end lines for the syntax check as for the runner.
        ("003_cr.sql", "SELECT 1;\r\rSELEC 1;\r"),
        // An index named "concurrently" is built in a transaction like any other.
        (
            "004_quoted.sql",
            "CREATE INDEX \"concurrently\" ON r (id);\n",
        ),
        // SET TRANSACTION always fails after the runner's own first statement.
        (
            "005_isolation.sql",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE;\nSELECT 1;\n",
        ),
    ]);
    let doc = run_cli(
        NOWHERE,
        dir.path(),
        &["check", "--disable", "missing-down", "--json"],
    )
    .assert_code(1)
    .json();
    let found: Vec<(String, u64, String)> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let file = f["file"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_owned();
            (
                file,
                f["line"].as_u64().unwrap(),
                f["rule"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(!found.iter().any(|f| f.0.starts_with("001")), "{found:?}");
    assert!(
        found.contains(&("002_body.sql".into(), 1, "syntax".into())),
        "{found:?}"
    );
    assert!(
        found.contains(&("002_body.sql".into(), 2, "ban-drop-column".into())),
        "{found:?}"
    );
    assert!(
        found.contains(&("003_cr.sql".into(), 3, "syntax".into())),
        "{found:?}"
    );
    assert!(
        !found
            .iter()
            .any(|f| f.0.starts_with("004") && f.2 == "migration-set"),
        "{found:?}"
    );
    assert!(
        found.contains(&("005_isolation.sql".into(), 1, "migration-set".into())),
        "{found:?}"
    );
}

#[test]
fn deallocate_all_is_refused_by_the_loader() {
    let dir = Dir::new(&[(
        "001_a.sql",
        "CREATE TABLE a (id bigint);\nDEALLOCATE ALL;\n",
    )]);
    let doc = run_cli(
        NOWHERE,
        dir.path(),
        &["check", "--disable", "missing-down", "--json"],
    )
    .assert_code(1)
    .json();
    assert_eq!(doc["findings"][0]["rule"], "migration-set", "{doc}");
    assert!(
        doc["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("DEALLOCATE ALL"),
        "{doc}"
    );
}

#[test]
fn an_after_deploy_migration_that_changes_the_schema_is_pointed_out() {
    let dir = Dir::new(&[
        ("001_items.sql", "CREATE TABLE items (id int PRIMARY KEY, flag int);\n"),
        (
            "002_fill.sql",
            "-- stepmigrate: after-deploy\n-- stepmigrate: no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS items_flag ON items (flag);\nALTER TABLE items ADD COLUMN note text;\nUPDATE items SET flag = 0 WHERE flag IS NULL;\nCREATE TEMP TABLE scratch (id int);\nALTER TABLE items VALIDATE CONSTRAINT items_flag_check;\nSELECT id INTO items_copy FROM items;\n",
        ),
        (
            "003_ok.sql",
            "-- stepmigrate: after-deploy\n-- squawk-ignore after-deploy-schema-change\nDROP TABLE IF EXISTS items_old;\nDROP INDEX IF EXISTS items_flag_old;\n",
        ),
        ("004_plain.sql", "ALTER TABLE items ADD COLUMN other text;\n"),
    ]);
    let doc = run_cli(
        NOWHERE,
        dir.path(),
        &[
            "check",
            "--disable",
            "missing-down",
            "--disable",
            "ban-drop-table",
            "--json",
        ],
    )
    .json();
    let ours: Vec<(String, u64)> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule"] == "after-deploy-schema-change")
        .map(|f| {
            (
                f["file"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned(),
                f["line"].as_u64().unwrap(),
            )
        })
        .collect();
    // Only the ALTER of the after-deploy file: not its index build or data change, not the
    // statement marked ignored, not a deploy-time migration's ALTER.
    // Not the temporary table or the validation either; a SELECT INTO creates a table.
    assert_eq!(
        ours,
        [
            ("002_fill.sql".to_owned(), 4),
            ("002_fill.sql".to_owned(), 8)
        ],
        "{doc}"
    );
    assert!(
        doc.to_string()
            .contains("`ALTER TABLE items ADD COLUMN note text` changes the schema"),
        "{doc}"
    );
    assert_eq!(
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["rule"] == "after-deploy-schema-change")
            .unwrap()["severity"],
        "warning"
    );
}

/// `--pg-version` (and the project file's `pg_version`) holds syntax to the target: CI must not
/// go green on what `up` then fails on.
#[test]
fn syntax_newer_than_the_target_fails_the_check() {
    let dir = Dir::new(&[
        (
            "001_t.sql",
            "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, n bigint);\n",
        ),
        ("002_literal.sql", "UPDATE t SET n = 1_000 WHERE id = 1;\n"),
    ]);
    let args = ["check", "--disable", "missing-down"];
    // No target: the embedded grammar's (18) syntax passes.
    run_cli(NOWHERE, dir.path(), &args).assert_code(0);
    let run = run_cli(
        NOWHERE,
        dir.path(),
        &[&args[..], &["--pg-version", "15"]].concat(),
    );
    run.assert_code(1);
    assert!(
        run.stdout.contains("002_literal.sql:1:18: error[syntax] underscores in a numeric literal is PostgreSQL 16 syntax: the target, PostgreSQL 15, rejects it"),
        "{}",
        run.stdout
    );
    run_cli(
        NOWHERE,
        dir.path(),
        &[&args[..], &["--pg-version", "16"]].concat(),
    )
    .assert_code(0);
    // The project file's setting, and the flag over it.
    let project = dir.file("stepmigrate.toml");
    std::fs::write(
        &project,
        "migrations_dir = \".\"\n[lint]\npg_version = \"14.9\"\n",
    )
    .unwrap();
    let config = project.to_str().unwrap();
    let doc = run_cli(
        NOWHERE,
        dir.path(),
        &[&["--config", config][..], &args[..], &["--json"]].concat(),
    )
    .assert_code(1)
    .json();
    assert!(
        doc["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("PostgreSQL 14, rejects it"),
        "{doc}"
    );
    run_cli(
        NOWHERE,
        dir.path(),
        &[
            &["--config", config][..],
            &args[..],
            &["--pg-version", "17"],
        ]
        .concat(),
    )
    .assert_code(0);
}

/// Before 10 a major version had two parts: the target 9.6 is named so, and an older one
/// (whose syntax check does not know) is refused naming the flag.
#[test]
fn a_target_before_10_is_named_by_both_its_parts() {
    let dir = Dir::new(&[(
        "001_t.sql",
        "CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY);
",
    )]);
    let args = ["check", "--disable", "missing-down"];
    let run = run_cli(
        NOWHERE,
        dir.path(),
        &[&args[..], &["--pg-version", "9.6"]].concat(),
    );
    run.assert_code(1);
    assert!(
        run.stdout
            .contains("is PostgreSQL 10 syntax: the target, PostgreSQL 9.6, rejects it"),
        "{}",
        run.stdout
    );
    for old in ["9.5", "9"] {
        let run = run_cli(
            NOWHERE,
            dir.path(),
            &[&args[..], &["--json", "--pg-version", old]].concat(),
        );
        run.assert_code(2);
        let message = run.json()["error"]["message"].to_string();
        assert!(
            message.contains("--pg-version") && message.contains("older than 9.6"),
            "{old}: {message}"
        );
    }
}

/// "checked N files" counts the files whose findings it shows: a file the loader refused is
/// one of them.
#[test]
fn the_file_count_covers_every_file_with_a_finding() {
    let dir = set();
    dir.write("5_badly_named.sql", "SELECT 1;\n");
    dir.write("001_create_users.down.sql", "DROP TABLE users;\n");
    let doc = run_cli(
        NOWHERE,
        dir.path(),
        &["check", "--disable", "missing-down", "--json"],
    )
    .assert_code(1)
    .json();
    let mut with_findings: Vec<&str> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file"].as_str().unwrap())
        .collect();
    with_findings.sort();
    with_findings.dedup();
    assert!(
        with_findings
            .iter()
            .any(|f| f.ends_with("5_badly_named.sql")),
        "{doc}"
    );
    // 4 up files, 1 down file, 1 refused file.
    assert_eq!(doc["files"], 6, "{doc}");
    let run = run_cli(NOWHERE, dir.path(), &["check", "--disable", "missing-down"]);
    assert!(run.stdout.contains("checked 6 files:"), "{}", run.stdout);
}

/// The edges: a bad --pg-version under --json is one JSON document with exit 2; a file name
/// that is not UTF-8 is named, not a crash; a closed stdout loses output, not the exit code.
#[test]
fn check_at_the_edges_of_input_and_output() {
    let dir = set();
    let run = run_cli(
        NOWHERE,
        dir.path(),
        &[
            "check",
            "--disable",
            "missing-down",
            "--json",
            "--pg-version",
            "fifteen",
        ],
    );
    run.assert_code(2);
    let doc = run.json();
    assert_eq!(doc["ok"], false);
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--pg-version"),
        "{doc}"
    );

    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"006_caf\xe9.sql");
        std::fs::write(dir.path().join(name), "SELECT 1;\n").unwrap();
        let run = run_cli(
            NOWHERE,
            dir.path(),
            &["check", "--disable", "missing-down", "--json"],
        );
        run.assert_code(1);
        let doc = run.json();
        let named = doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["file"].as_str().unwrap().contains("006_caf"));
        assert!(named, "{doc}");
        std::fs::remove_file(dir.path().join(name)).unwrap();
    }

    // stdout closed before anything is written: the exit code still says what was found.
    let mut command =
        common::cli_command(NOWHERE, dir.path(), &["check", "--disable", "missing-down"]);
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
}

/// A down file may drop what its up file made, but DROP OWNED BY, DELETE without WHERE and
/// DROP SCHEMA ... CASCADE of a schema its up file did not make are findings there too.
#[test]
fn a_down_file_is_held_to_what_its_up_file_did_not_make() {
    let dir = Dir::new(&[
        (
            "001_app.sql",
            "CREATE SCHEMA app;\nCREATE TABLE app.t (id bigint GENERATED ALWAYS AS IDENTITY);\n",
        ),
        (
            "001_app.down.sql",
            "DROP SCHEMA app CASCADE;\nDROP SCHEMA public CASCADE;\nDROP OWNED BY postgres;\nDELETE FROM u;\n",
        ),
    ]);
    let doc = run_cli(NOWHERE, dir.path(), &["check", "--json"])
        .assert_code(1)
        .json();
    let found: Vec<(u64, String)> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["file"].as_str().unwrap().ends_with(".down.sql"))
        .map(|f| {
            (
                f["line"].as_u64().unwrap(),
                f["rule"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (2, "ban-drop-cascade".to_owned()),
            (3, "ban-drop-owned".to_owned()),
            (4, "delete-without-where".to_owned()),
        ],
        "{doc}"
    );
}
