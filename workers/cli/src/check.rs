//! `stepmigrate check`: the review of the migration files without a database, and its three
//! renderings (people, `--json`, GitHub annotations).

use std::path::Path;
use std::process::ExitCode;

use clap::Args as ClapArgs;
use serde_json::json;
use stepmigrate_check::{CheckReport, Finding, LintRules, RuleSetting, Severity};
use stepmigrate_cli::project::{self, Project, RuleRef};
use stepmigrate_core::Error;

use crate::output::{outln, shown, shown_path, Output};

#[derive(ClapArgs, Clone)]
pub struct CheckArgs {
    /// Exit with 1 when a finding is at least this severe.
    #[arg(long, value_name = "SEVERITY", default_value = "error", value_parser = ["error", "warning"])]
    pub fail_on: String,
    /// Switch a lint rule on (opt-in squawk rules, e.g. require-timeout-settings).
    #[arg(long, value_name = "RULE")]
    pub enable: Vec<String>,
    /// Switch a lint rule off.
    #[arg(long, value_name = "RULE")]
    pub disable: Vec<String>,
    /// Set a rule's severity: RULE=error|warning|off.
    #[arg(long, value_name = "RULE=SEVERITY")]
    pub rule: Vec<String>,
    /// The PostgreSQL version the migrations run on (e.g. 15), for version-dependent advice.
    #[arg(long, value_name = "VERSION")]
    pub pg_version: Option<String>,
    /// List the lint rules and whether each is on, then exit.
    #[arg(long)]
    pub list_rules: bool,
}

impl CheckArgs {
    /// The rules after the flags (which come after the project file's settings).
    pub fn apply_to(&self, rules: &mut LintRules) -> Result<(), Error> {
        let bad = |flag: &str, reason: String| Error::Config {
            variable: flag.to_owned(),
            reason,
        };
        for name in &self.enable {
            rules.enable(name).map_err(|e| bad("--enable", e))?;
        }
        for name in &self.disable {
            rules.disable(name).map_err(|e| bad("--disable", e))?;
        }
        for setting in &self.rule {
            let (name, value) = setting.split_once('=').ok_or_else(|| {
                bad(
                    "--rule",
                    format!("{setting:?} is not RULE=SEVERITY, e.g. ban-drop-column=warning"),
                )
            })?;
            let value: RuleSetting = value.trim().parse().map_err(|e| bad("--rule", e))?;
            rules
                .set(name.trim(), value)
                .map_err(|e| bad("--rule", e))?;
        }
        if let Some(version) = &self.pg_version {
            rules
                .set_pg_version(version)
                .map_err(|e| bad("--pg-version", e))?;
        }
        Ok(())
    }

    fn fail_on(&self) -> Severity {
        self.fail_on.parse().unwrap_or(Severity::Error)
    }
}

/// The rules of the project file's `[lint]` section over the defaults; an unknown rule names
/// the file and line it is written on.
pub fn project_rules(project: Option<&Project>) -> Result<LintRules, Error> {
    let mut rules = LintRules::default();
    let Some(project) = project else {
        return Ok(rules);
    };
    let lint = &project.lint;
    let at = |r: &RuleRef, key: &str, reason: String| Error::Config {
        variable: format!("{}:{}: lint.{key}", r.file.display(), r.line),
        reason,
    };
    if let Some(v) = lint.pg_version {
        rules
            .set_pg_version(&format!("{}.{}", v.major, v.minor))
            .map_err(|reason| Error::Config {
                variable: format!("{}: lint.pg_version", project.file.display()),
                reason,
            })?;
    }
    for r in &lint.enable {
        rules.enable(&r.name).map_err(|e| at(r, "enable", e))?;
    }
    for r in &lint.disable {
        rules.disable(&r.name).map_err(|e| at(r, "disable", e))?;
    }
    for (r, severity) in &lint.severity {
        let setting = match severity {
            project::Severity::Off => RuleSetting::Off,
            project::Severity::Warning => RuleSetting::On(Severity::Warning),
            project::Severity::Error => RuleSetting::On(Severity::Error),
        };
        rules
            .set(&r.name, setting)
            .map_err(|e| at(r, &format!("severity.{}", r.name), e))?;
    }
    Ok(rules)
}

pub fn run(
    args: &CheckArgs,
    dir: &Path,
    mut rules: LintRules,
    out: &Output,
) -> Result<ExitCode, Error> {
    args.apply_to(&mut rules)?;
    if args.list_rules {
        list_rules(&rules, out);
        return Ok(ExitCode::SUCCESS);
    }
    let report = stepmigrate_check::check_dir(dir, &rules)?;
    let failed = report.worst().is_some_and(|w| w >= args.fail_on());
    if out.json() {
        out.emit(json!({
            "command": "check",
            "ok": !failed,
            "directory": dir.to_string_lossy(),
            "files": report.files,
            "errors": report.count(Severity::Error),
            "warnings": report.count(Severity::Warning),
            "findings": report.findings,
        }));
    } else {
        human(&report, args.fail_on(), out);
    }
    // Annotations go beside human output only: `--json` is one document.
    if !out.json() && std::env::var_os("GITHUB_ACTIONS").is_some_and(|v| v == "true") {
        for finding in &report.findings {
            outln!("{}", annotation(finding));
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn human(report: &CheckReport, fail_on: Severity, out: &Output) {
    for f in &report.findings {
        // -q shows what fails the check, like an error; nothing else.
        if out.quiet() && f.severity < fail_on {
            continue;
        }
        outln!(
            "{}: {}[{}] {}",
            location(f),
            f.severity.as_str(),
            f.rule,
            shown(&f.message)
        );
        if let Some(help) = &f.help {
            if !out.quiet() {
                outln!("    help: {}", shown(help));
            }
        }
    }
    if !out.quiet() {
        let errors = report.count(Severity::Error);
        let warnings = report.count(Severity::Warning);
        outln!(
            "checked {} file{}: {} error{}, {} warning{}",
            report.files,
            plural(report.files),
            errors,
            plural(errors),
            warnings,
            plural(warnings)
        );
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn location(f: &Finding) -> String {
    match (f.line, f.column) {
        (0, _) => shown_path(&f.file),
        (line, 0) => format!("{}:{line}", shown_path(&f.file)),
        (line, column) => format!("{}:{line}:{column}", shown_path(&f.file)),
    }
}

/// A GitHub Actions workflow command: the finding appears on the pull request's diff.
/// https://docs.github.com/actions/reference/workflow-commands-for-github-actions
fn annotation(f: &Finding) -> String {
    let level = match f.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    let mut properties = vec![format!("file={}", escape_property(&shown_path(&f.file)))];
    if f.line > 0 {
        properties.push(format!("line={}", f.line));
    }
    if f.column > 0 {
        properties.push(format!("col={}", f.column));
    }
    properties.push(format!(
        "title={}",
        escape_property(&format!("stepmigrate {}", f.rule))
    ));
    // Newlines are GitHub's to show (escaped below as %0A); other control characters are
    // shown escaped, not sent to the log viewer.
    let mut message = f.message.clone();
    if let Some(help) = &f.help {
        message.push('\n');
        message.push_str(help);
    }
    let message = message
        .split('\n')
        .map(shown)
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        "::{level} {}::{}",
        properties.join(","),
        escape_data(&message)
    )
}

fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

fn list_rules(rules: &LintRules, out: &Output) {
    let all = LintRules::known_rules();
    if out.json() {
        let list: Vec<_> = all
            .iter()
            .map(|r| json!({ "rule": r, "severity": rules.severity(r).map(Severity::as_str) }))
            .collect();
        out.emit(json!({ "command": "check", "ok": true, "rules": list }));
        return;
    }
    let width = all.iter().map(String::len).max().unwrap_or(0);
    for rule in &all {
        let state = rules.severity(rule).map_or("off", Severity::as_str);
        outln!("{rule:<width$}  {state}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn annotations_escape_what_github_reads_as_syntax() {
        let f = Finding {
            file: PathBuf::from("migrations/001_a,b.sql"),
            line: 3,
            column: 7,
            rule: "ban-drop-column".into(),
            severity: Severity::Error,
            message: "100% sure:\nno\u{1b}[2J".into(),
            help: None,
        };
        assert_eq!(
            annotation(&f),
            "::error file=migrations/001_a%2Cb.sql,line=3,col=7,title=stepmigrate ban-drop-column::100%25 sure:%0Ano\\u{1b}[2J"
        );
    }
}
