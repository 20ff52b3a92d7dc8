//! The pull-request workflow (.github/workflows/migration-preview.yml) agrees with the code:
//! the marker it looks for is the one the renderer writes, the variables it sets are the ones
//! the command reads, and its `stepmigrate preview` flags exist. actionlint checks the rest
//! (scripts/lint-workflows).

mod common;

use std::path::Path;

use stepmigrate_cli::preview::MARKER;
use stepmigrate_cli::project::ENV_DEV_URL;

fn workflow() -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.github/workflows/migration-preview.yml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `--flags` of the workflow's `stepmigrate preview` command line.
fn preview_flags(workflow: &str) -> Vec<String> {
    let line = workflow
        .lines()
        .find(|l| l.trim_start().starts_with("stepmigrate preview"))
        .expect("the workflow runs `stepmigrate preview`");
    line.split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_workflow_matches_the_code() {
    let w = workflow();
    assert!(
        w.contains(
            "stepmigrate preview --base \"origin/$BASE_REF\" --format markdown > preview.md"
        ),
        "the invocation changed: update this test and the README"
    );
    assert!(w.contains("BASE_REF: ${{ github.base_ref }}"));
    assert_eq!(preview_flags(&w), ["--base", "--format"]);
    assert!(
        w.matches(MARKER).count() >= 2,
        "the comment is found by the renderer's marker {MARKER}"
    );
    assert!(w.contains(&format!("{ENV_DEV_URL}: postgres://")));
    for needle in [
        "fetch-depth: 0",
        "image: postgres:15",
        "pull-requests: write",
        "GITHUB_STEP_SUMMARY",
        "- \"migrations/**\"",
    ] {
        assert!(w.contains(needle), "the workflow lost {needle:?}");
    }
}

/// The workflow's `stepmigrate preview` flags are the command's.
#[test]
fn the_workflow_flags_exist() {
    let help = std::process::Command::new(common::bin())
        .args(["preview", "--help"])
        .output()
        .expect("run stepmigrate");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{text}");
    for flag in preview_flags(&workflow()) {
        assert!(
            text.contains(&flag),
            "`stepmigrate preview` has no {flag}:\n{text}"
        );
    }
    assert!(text.contains("markdown"), "--format markdown:\n{text}");
}
