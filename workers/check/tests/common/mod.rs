//! What the check crate's integration tests share: the rules they run with and the findings
//! of a migration set.

#![allow(dead_code)]

use stepmigrate_check::{check_dir, Finding, LintRules};

/// The default rules but `missing-down` (the sets here have no down files).
pub fn rules() -> LintRules {
    let mut rules = LintRules::default();
    rules.disable("missing-down").unwrap();
    rules
}

/// The findings of a migration set made of `files`, in order.
pub fn set_findings(files: &[&str], rules: &LintRules) -> Vec<Finding> {
    let dir = tempfile::tempdir().unwrap();
    for (i, sql) in files.iter().enumerate() {
        std::fs::write(dir.path().join(format!("{:03}_m{i}.sql", i + 1)), sql).unwrap();
    }
    check_dir(dir.path(), rules).unwrap().findings
}

pub fn of_rule<'a>(findings: &'a [Finding], rule: &str) -> Vec<&'a Finding> {
    findings.iter().filter(|f| f.rule == rule).collect()
}
