//! The preview comment: a golden rendering of a hand-built report (`UPDATE_GOLDEN=1`
//! rewrites the golden file), and the fallback that keeps a huge one under GitHub's limit.

use std::path::{Path, PathBuf};

use stepmigrate_cli::preview::changes::{
    AddedMigration, ChangeFinding, ChangeFindingKind, EditedMigration, MigrationChanges,
    MigrationRef,
};
use stepmigrate_cli::preview::report::{
    FileReport, FindingSeverity, LintFinding, LockReport, NewIndex, PreviewReport, SchemaChange,
    SchemaChangeKind, ScratchTiming, Verdict, Verification, VerifyOutcome,
};
use stepmigrate_cli::preview::{render, RenderOptions, MARKER, MAX_CHARS};
use stepmigrate_core::migration::Version;

/// A relation name with what breaks Markdown tables and code spans: `|`, backticks, HTML.
const WEIRD: &str = "public.\"we|ird`</details>```x\"";

fn v(text: &str) -> Version {
    text.parse().unwrap()
}

fn mref(version: &str, name: &str) -> MigrationRef {
    MigrationRef {
        version: v(version),
        name: name.into(),
        file: format!("migrations/{name}.sql"),
        checksum: format!("{:0<64}", name.len()),
    }
}

fn lint(
    file: &str,
    line: usize,
    rule: &str,
    severity: FindingSeverity,
    message: &str,
) -> LintFinding {
    LintFinding {
        file: format!("migrations/{file}.sql"),
        line,
        column: 1,
        rule: rule.into(),
        severity,
        message: message.into(),
        help: None,
    }
}

fn lock(relation: &str, mode: &str, existing: bool) -> LockReport {
    LockReport {
        relation: relation.into(),
        mode: mode.into(),
        existing,
    }
}

fn schema(change: SchemaChangeKind, kind: &str, name: &str, detail: Option<&str>) -> SchemaChange {
    SchemaChange {
        change,
        kind: kind.into(),
        name: name.into(),
        detail: detail.map(Into::into),
    }
}

/// A pull request that edits an applied migration, adds one below the base's newest version,
/// one that locks and rewrites `users`, one built concurrently and one that fails.
fn sample() -> PreviewReport {
    let added = |version: &str, name: &str, transactional: bool| AddedMigration {
        migration: mref(version, name),
        path: PathBuf::from(format!("/repo/migrations/{name}.sql")),
        transactional,
    };
    let changes = MigrationChanges {
        base: "origin/main".into(),
        base_commit: "0123456789abcdef0123456789abcdef01234567".into(),
        dir: "migrations".into(),
        base_newest: Some(v("008")),
        added: vec![
            added("007", "007_add_grades", true),
            added("009", "009_index_answers", false),
            added("010", "010_drop_legacy", true),
        ],
        edited: vec![EditedMigration {
            migration: mref("002", "002_create_courses"),
            base_name: "002_create_courses".into(),
            base_checksum: "f".repeat(64),
            line_endings_only: false,
        }],
        deleted: vec![mref("007", "007_old_grades")],
        renamed: vec![],
        renumbered: vec![],
        unchanged: 6,
        findings: vec![
            ChangeFinding {
                kind: ChangeFindingKind::OutOfOrder,
                severity: FindingSeverity::Error,
                version: v("007"),
                name: "007_add_grades".into(),
                file: "migrations/007_add_grades.sql".into(),
                message: "version 007 is not above the base's newest, 008: renumber it above 008"
                    .into(),
            },
            ChangeFinding {
                kind: ChangeFindingKind::Edited,
                severity: FindingSeverity::Error,
                version: v("002"),
                name: "002_create_courses".into(),
                file: "migrations/002_create_courses.sql".into(),
                message:
                    "edits a migration that exists on origin/main: drift wherever it was applied"
                        .into(),
            },
            ChangeFinding {
                kind: ChangeFindingKind::Deleted,
                severity: FindingSeverity::Warning,
                version: v("007"),
                name: "007_old_grades".into(),
                file: "migrations/007_old_grades.sql".into(),
                message: "deletes a migration of origin/main".into(),
            },
        ],
    };
    let mut drop_finding = lint(
        "010_drop_legacy",
        3,
        "ban-drop-column",
        FindingSeverity::Error,
        "Dropping a column may break existing clients.",
    );
    drop_finding.help =
        Some("Stop reading the column in the application first, then drop it <later>.".into());
    let files = vec![
        FileReport {
            requires: vec![],
            conflicts: vec![],
            irreversible: false,
            version: v("010"),
            name: "010_drop_legacy".into(),
            file: "migrations/010_drop_legacy.sql".into(),
            findings: vec![drop_finding],
            verification: Some(Verification::new(
                VerifyOutcome::Failed {
                    error: "column \"legacy\" of relation \"users\" does not exist (SQLSTATE 42703) at line 3".into(),
                },
                4,
                1,
                vec![lock("public.users", "AccessExclusiveLock", true)],
                vec![],
                vec![],
                false,
            )),
        },
        FileReport {
            requires: vec![],
            conflicts: vec![],
            irreversible: false,
            version: v("007"),
            name: "007_add_grades".into(),
            file: "migrations/007_add_grades.sql".into(),
            findings: vec![
                lint("007_add_grades", 4, "require-timeout-settings", FindingSeverity::Warning, "Missing `SET lock_timeout` before | the statement."),
                lint("007_add_grades", 2, "adding-field-with-default", FindingSeverity::Warning, "Adding a field with a volatile default rewrites the table."),
            ],
            verification: Some(Verification::new(
                VerifyOutcome::Ok,
                37,
                2,
                vec![
                    lock("public.users", "AccessExclusiveLock", true),
                    lock("public.grades", "AccessExclusiveLock", false),
                    lock("public.users", "AccessExclusiveLock", true),
                    // A name made to break the table: a pipe, a backtick run, HTML.
                    lock(WEIRD, "RowExclusiveLock", true),
                ],
                vec!["public.users".into()],
                vec![],
                false,
            )),
        },
        FileReport {
            requires: vec![],
            conflicts: vec![],
            irreversible: false,
            version: v("009"),
            name: "009_index_answers".into(),
            file: "migrations/009_index_answers.sql".into(),
            findings: vec![],
            verification: Some(Verification::new(
                VerifyOutcome::Ok,
                12,
                1,
                // Outside a transaction verify observes no lock (each statement releases
                // its own as it ends): the comment must not read that as "none".
                vec![],
                vec![],
                vec![NewIndex {
                    name: "public.attempt_answers_question_id_idx".into(),
                    table: "public.attempt_answers".into(),
                    valid: true,
                }],
                true,
            )),
        },
    ];
    PreviewReport {
        changes,
        files,
        schema_diff: vec![
            schema(
                SchemaChangeKind::Dropped,
                "table",
                "public.legacy_scores",
                None,
            ),
            schema(
                SchemaChangeKind::Added,
                "column",
                "public.users.grade",
                Some("numeric(4,1) DEFAULT random()"),
            ),
            schema(
                SchemaChangeKind::Added,
                "index",
                "public.attempt_answers_question_id_idx",
                Some("btree (question_id)"),
            ),
            schema(
                SchemaChangeKind::Changed,
                "column",
                "public.courses.title",
                Some("type text → varchar(200)"),
            ),
            schema(SchemaChangeKind::Added, "table", "public.grades", None),
        ],
        scratch: ScratchTiming {
            setup_ms: 812,
            verify_ms: 53,
            total_ms: 1204,
        },
        base_migrations_applied: 8,
    }
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the rendering at line {} (UPDATE_GOLDEN=1 rewrites it after review):\n--- rendered\n{actual}",
            path.display(),
            first + 1
        );
    }
}

#[test]
fn golden_comment() {
    let report = sample();
    assert_eq!(report.verdict(), Verdict::Errors);
    let md = render(&report, RenderOptions::default());
    assert!(md.starts_with(&format!("{MARKER}\n")));
    golden("preview.md", &md);
}

#[test]
fn the_rendering_does_not_depend_on_input_order() {
    let mut shuffled = sample();
    shuffled.files.reverse();
    shuffled.schema_diff.reverse();
    for f in &mut shuffled.files {
        f.findings.reverse();
    }
    assert_eq!(
        render(&shuffled, RenderOptions::default()),
        render(&sample(), RenderOptions::default())
    );
}

#[test]
fn without_timings_no_duration_is_shown() {
    let md = render(
        &sample(),
        RenderOptions {
            timings: false,
            ..RenderOptions::default()
        },
    );
    assert!(!md.contains(" ms"), "{md}");
    assert!(!md.contains("Time on the scratch database"), "{md}");
    let with = render(&sample(), RenderOptions::default());
    assert!(
        with.contains("| Time on the scratch database | 1204 ms (setup 812 ms, verify 53 ms) |")
    );
}

#[test]
fn user_text_cannot_break_the_markup() {
    let mut r = sample();
    r.files[0].findings[0].message = "</details></summary>```| <script>".into();
    r.schema_diff[0].detail = Some("```\nnot the end".into());
    // Only the text under test may hold HTML (the odd name's `</details>` is literal in its
    // code span, and tested on its own).
    for f in &mut r.files {
        if let Some(v) = &mut f.verification {
            v.locks.retain(|l| l.relation != WEIRD);
        }
    }
    let md = render(&r, RenderOptions::default());
    assert_eq!(
        md.matches("<details>").count(),
        md.matches("</details>").count()
    );
    assert!(!md.contains("<script>"));
    let diff_start = md.find("diff\n").unwrap();
    assert!(
        md[..diff_start].ends_with("````"),
        "the fence outgrows the backticks inside"
    );
}

#[test]
fn odd_identifiers_keep_their_name_and_the_table() {
    let mut r = sample();
    r.files[1]
        .verification
        .as_mut()
        .unwrap()
        .rewrites
        .push(WEIRD.into());
    let md = render(&r, RenderOptions::default());
    // In a table: `|` escaped (GitHub reads `\|` in a code span as `|`), a fence longer than
    // the backtick run inside, the HTML left literal inside the code span.
    assert!(
        md.contains("| RowExclusiveLock | ````public.\"we\\|ird`</details>```x\"```` | yes |"),
        "{md}"
    );
    assert!(
        md.contains("| Rewrites | ⚠️ ````public.\"we\\|ird`</details>```x\"````, `public.users` |"),
        "{md}"
    );
    // Outside a table: the same span without the escape.
    assert!(
        md.contains("meanwhile): `public.users`, ````public.\"we|ird`</details>```x\"````\n"),
        "{md}"
    );
    // Every table row still has its columns: no unescaped `|` inside a cell.
    for line in md.lines().filter(|l| l.starts_with("| ")) {
        let cells = line.replace("\\|", "").matches('|').count();
        assert!(cells == 3 || cells == 4, "{line}");
    }
    // A name starting with a backtick is padded, as CommonMark requires.
    r.files[1].verification.as_mut().unwrap().rewrites = vec!["`x".into()];
    let md = render(&r, RenderOptions::default());
    assert!(md.contains("`` `x ``"), "{md}");
}

#[test]
fn non_transactional_locks_are_not_claimed_absent() {
    let md = render(&sample(), RenderOptions::default());
    assert!(
        md.contains("| Locks | 4 taken (not observed for `009_index_answers`: it runs outside a transaction); ⚠️ ACCESS EXCLUSIVE on existing "),
        "{md}"
    );
    assert!(
        md.contains("· no transaction · locks not observed ·"),
        "{md}"
    );
    assert!(md.contains("**Locks not observed:**"), "{md}");

    let mut r = sample();
    r.files.retain(|f| f.name == "009_index_answers");
    let md = render(&r, RenderOptions::default());
    assert!(
        md.contains("| Locks | 0 taken (not observed for `009_index_answers`: it runs outside a transaction); no ACCESS EXCLUSIVE observed on existing tables |"),
        "{md}"
    );
    assert!(
        !md.contains("no ACCESS EXCLUSIVE on existing tables"),
        "{md}"
    );
}

#[test]
fn json_is_the_report_as_it_is() {
    let doc = serde_json::to_value(sample()).unwrap();
    assert_eq!(doc["changes"]["base"], "origin/main");
    assert_eq!(doc["changes"]["findings"][0]["kind"], "out_of_order");
    assert_eq!(
        doc["files"][1]["verification"]["access_exclusive_on_existing"],
        true
    );
    assert_eq!(
        doc["files"][0]["verification"]["outcome"]["status"],
        "failed"
    );
    assert_eq!(doc["schema_diff"][0]["change"], "dropped");
    assert_eq!(
        doc["files"][1]["verification"]["locks"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "deduplicated"
    );
}

#[test]
fn a_clean_preview_says_so() {
    let mut r = sample();
    r.changes.findings.clear();
    r.changes.edited.clear();
    r.changes.deleted.clear();
    r.files.truncate(0);
    r.schema_diff.clear();
    assert_eq!(r.verdict(), Verdict::Clean);
    let md = render(&r, RenderOptions::default());
    assert!(
        md.contains("## ✅ Migration preview: nothing found"),
        "{md}"
    );
    assert!(md.contains("No change to the schema."));
    assert!(!md.contains("<details>"));
}

/// Hundreds of files with hundreds of long findings each, and thousands of schema changes:
/// the comment falls back to the summary and cuts the details file by file.
#[test]
fn a_huge_report_falls_back_under_the_limit() {
    let mut r = sample();
    let long = "x".repeat(300);
    r.files = (100..400)
        .map(|i| {
            let name = format!("{i:03}_generated_{i}");
            FileReport {
                requires: vec![],
                conflicts: vec![],
                irreversible: false,
                version: v(&format!("{i:03}")),
                name: name.clone(),
                file: format!("migrations/{name}.sql"),
                findings: (1..=200)
                    .map(|l| {
                        lint(
                            &name,
                            l,
                            "prefer-robust-stmts",
                            FindingSeverity::Warning,
                            &long,
                        )
                    })
                    .collect(),
                verification: Some(Verification::new(
                    VerifyOutcome::Ok,
                    1,
                    1,
                    vec![lock(&format!("public.t{i}"), "AccessExclusiveLock", true)],
                    vec![],
                    vec![],
                    false,
                )),
            }
        })
        .collect();
    r.schema_diff = (0..5000)
        .map(|i| {
            schema(
                SchemaChangeKind::Added,
                "table",
                &format!("public.t{i}"),
                None,
            )
        })
        .collect();
    let full_size: usize = r.files.iter().map(|f| f.findings.len() * 300).sum();
    assert!(full_size > 10 * MAX_CHARS, "the report is huge");

    let md = render(&r, RenderOptions::default());
    let n = md.chars().count();
    assert!(n <= MAX_CHARS, "{n} characters");
    assert!(n > MAX_CHARS / 2, "the budget is used, not wasted: {n}");
    assert!(md.starts_with(MARKER));
    assert!(md.contains("Details were cut"));
    let start: String = md.chars().take(2000).collect();
    assert!(
        md.contains("| Findings | ❌ 2 errors, 60001 warnings |"),
        "{start}"
    );
    assert!(
        md.contains("`public.t109` and 290 more |"),
        "the summary names at most ten: {start}"
    );
    assert!(md.contains("### What this preview cannot know"));
    assert!(
        md.contains("<code>migrations/100_generated_100.sql</code>"),
        "the first files are shown"
    );
    assert!(md.contains("more finding(s), not shown"));
    assert!(md.contains("more, not shown"), "the schema diff is cut too");
    assert_eq!(
        md.matches("<details>").count(),
        md.matches("</details>").count()
    );

    // Just under the limit: the full comment, no note.
    let small = render(&sample(), RenderOptions::default());
    assert!(!small.contains("Details were cut"));
    let tight = render(
        &sample(),
        RenderOptions {
            max_chars: small.chars().count(),
            ..RenderOptions::default()
        },
    );
    assert_eq!(tight, small);
    let cut = render(
        &sample(),
        RenderOptions {
            max_chars: small.chars().count() - 1,
            ..RenderOptions::default()
        },
    );
    assert!(cut.contains("Details were cut") && cut.chars().count() < small.chars().count());
}
