//! The review of a migration set before anything runs: every statement read by PostgreSQL's own
//! grammar (libpg_query, PL/pgSQL bodies included), then squawk's lint rules and a few of our
//! own, each knowing whether its file runs inside a transaction. No database.
//!
//! The result is a list of [`Finding`]s; how they are shown (human, JSON, GitHub annotations)
//! is the caller's business.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;
use stepmigrate_core::migration::{MigrationSet, Mode};
use stepmigrate_core::Error;

mod advice;
pub mod lint;
pub mod syntax;
mod tree;
pub mod types;
pub mod versions;

pub use lint::{LintRules, RuleSetting};
pub use types::Columns;

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Severity, String> {
        match s {
            "warning" => Ok(Severity::Warning),
            "error" => Ok(Severity::Error),
            other => Err(format!("unknown severity {other:?}: use error or warning")),
        }
    }
}

/// The rule name of a problem the migration set's own loader found (naming, gaps, directives,
/// statements the runner refuses): the same problems `up` would stop on.
pub const SET_RULE: &str = "migration-set";
/// The rule name of a stale or malformed `migrations.sum`.
pub const SUM_RULE: &str = "migrations-sum";
/// The rule name of a statement PostgreSQL's grammar rejects.
pub const SYNTAX_RULE: &str = "syntax";

/// One thing worth a reviewer's attention, at a place in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    #[serde(serialize_with = "path_text")]
    pub file: PathBuf,
    /// 1-based; 0 when the finding is about the whole file.
    pub line: usize,
    /// 1-based, in characters; 0 when unknown.
    pub column: usize,
    pub rule: String,
    pub severity: Severity,
    pub message: String,
    /// How to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

fn path_text<S: serde::Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

/// What `check` found in a migration set.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// The files checked: every migration file read (up and down), and every other file a
    /// finding is about (a file the loader refused, `migrations.sum`).
    pub files: usize,
    pub findings: Vec<Finding>,
}

impl CheckReport {
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    /// The most severe finding's severity, if any.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }
}

/// One file to review: its text and whether the runner wraps it in a transaction.
#[derive(Debug, Clone)]
pub struct Script<'a> {
    pub path: &'a Path,
    pub sql: &'a str,
    pub mode: Mode,
}

/// Reviews one script: syntax first; the lint rules only read a script PostgreSQL can parse
/// (squawk's own parser is more forgiving, and a finding on a misread statement misleads).
pub fn check_script(script: &Script<'_>, rules: &LintRules) -> Vec<Finding> {
    check_script_with(script, rules, &mut Columns::default())
}

/// [`check_script`] for a script of a set: `columns` holds the column types the migrations
/// before it made (for whether a type change rewrites a table), and takes in this script's.
pub fn check_script_with(
    script: &Script<'_>,
    rules: &LintRules,
    columns: &mut Columns,
) -> Vec<Finding> {
    let mut findings = syntax::check_for(script.path, script.sql, rules.pg_major());
    // A function or DO body's error, or syntax too new for the target, leaves the statements
    // themselves readable.
    let readable =
        |f: &Finding| syntax::in_body(&f.message) || f.message.contains(syntax::NEWER_SYNTAX);
    if findings.iter().all(readable) {
        findings.extend(lint::lint_with(script, rules, columns));
        findings.sort_by_key(|f| (f.line, f.column));
    } else {
        // Its statements' effect on the set's tables is not known.
        columns.forget();
    }
    findings
}

/// Takes in the column types `script` makes, without reviewing it: a migration before the ones
/// a review is about (the preview's base), as [`check_script_with`] would have left them.
pub fn learn_columns(script: &Script<'_>, rules: &LintRules, columns: &mut Columns) {
    let readable =
        |f: &Finding| syntax::in_body(&f.message) || f.message.contains(syntax::NEWER_SYNTAX);
    if syntax::check_for(script.path, script.sql, rules.pg_major())
        .iter()
        .all(readable)
    {
        advice::facts(
            script.sql,
            script.mode != Mode::NoTransaction,
            columns,
            rules.pg_major(),
        );
    } else {
        columns.forget();
    }
}

/// Reviews every migration of `dir`: the loader's problems (what `up` would refuse), then each
/// up and down file's syntax and lint findings, in file order. A set the loader refuses is
/// still read file by file, so one bad name does not hide the other files' findings.
pub fn check_dir(dir: &Path, rules: &LintRules) -> Result<CheckReport, Error> {
    with_deep_stack(|| check_dir_here(dir, rules))
}

/// Runs `work` on a thread with a stack deep enough for any statement libpg_query accepts:
/// its own depth check stops a deeper one, but squawk's recursive parser and the tree walks
/// go deeper per level than it does, and a main thread's 8 MiB overflow on a few thousand
/// nested parentheses (an abort, not an error).
pub fn with_deep_stack<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    const STACK: usize = 1 << 30;
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("check".into())
            .stack_size(STACK)
            .spawn_scoped(scope, work)
            .map(|handle| handle.join())
    })
    .unwrap_or_else(|spawn_error| panic!("cannot start the check thread: {spawn_error}"))
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

fn check_dir_here(dir: &Path, rules: &LintRules) -> Result<CheckReport, Error> {
    let mut report = CheckReport::default();
    // The files read; with the files findings are about, what "checked N files" counts.
    let mut files: BTreeSet<PathBuf> = BTreeSet::new();
    // The column types the migrations make, in the order they run.
    let mut columns = Columns::default();
    match MigrationSet::load(dir) {
        Ok(set) => {
            for m in set.migrations() {
                let up = Script {
                    path: &m.path,
                    sql: &m.sql,
                    mode: m.directives.mode,
                };
                files.insert(m.path.clone());
                report
                    .findings
                    .extend(check_script_with(&up, rules, &mut columns));
                report
                    .findings
                    .extend(lint::after_deploy_findings(m, rules));
                if let Some(down) = &m.down {
                    files.insert(down.path.clone());
                    let rules = &rules.for_down_of(&m.sql);
                    let down = Script {
                        path: &down.path,
                        sql: &down.sql,
                        mode: down.directives.mode,
                    };
                    // A rollback runs after its up file: judged on the columns it left.
                    report
                        .findings
                        .extend(check_script_with(&down, rules, &mut columns.clone()));
                } else if let (false, Some(severity)) = (
                    m.directives.irreversible,
                    rules.severity(lint::MISSING_DOWN),
                ) {
                    report.findings.push(Finding {
                        file: m.path.clone(),
                        line: 0,
                        column: 0,
                        rule: lint::MISSING_DOWN.into(),
                        severity,
                        message: "no down file: `stepmigrate down` would refuse to roll it back".into(),
                        help: Some(format!(
                            "write {}.down.sql (an empty one means nothing to undo), or add the header line `-- stepmigrate: irreversible`",
                            m.name
                        )),
                    });
                }
            }
            // A stale migrations.sum: `up` would refuse the set.
            if let Err(Error::InvalidMigrationSet { problems, .. }) = set.ensure_sum_current() {
                for p in problems {
                    report.findings.push(Finding {
                        file: p.file,
                        line: p.line.unwrap_or(0),
                        column: 0,
                        rule: SUM_RULE.into(),
                        severity: Severity::Error,
                        message: p.message,
                        help: None,
                    });
                }
            }
        }
        Err(Error::InvalidMigrationSet { problems, .. }) => {
            let broken: Vec<&Path> = problems.iter().map(|p| p.file.as_path()).collect();
            for p in &problems {
                report.findings.push(Finding {
                    file: p.file.clone(),
                    line: p.line.unwrap_or(0),
                    column: 0,
                    rule: SET_RULE.into(),
                    severity: Severity::Error,
                    message: p.message.clone(),
                    help: None,
                });
            }
            // The files the loader had nothing against still get their syntax and lint
            // review, as transactional files unless they say otherwise.
            for path in sql_files(dir) {
                if broken.contains(&path.as_path()) {
                    continue;
                }
                let Ok(sql) = std::fs::read_to_string(&path) else {
                    continue;
                };
                files.insert(path.clone());
                // Read as the loader would have: without a byte-order mark, and a batch
                // migration with its `:batch_size` bound.
                let sql = sql.strip_prefix('\u{feff}').unwrap_or(&sql).to_owned();
                let mode = stepmigrate_core::migration::mode_of(&sql);
                let sql = if mode == Mode::Batch {
                    stepmigrate_core::migration::bind_batch_size(
                        &sql,
                        &stepmigrate_core::sql::lex(&sql).placeholders,
                        stepmigrate_core::migration::DEFAULT_BATCH_SIZE,
                    )
                } else {
                    sql
                };
                let script = Script {
                    path: &path,
                    sql: &sql,
                    mode,
                };
                let down = path
                    .to_string_lossy()
                    .strip_suffix(".down.sql")
                    .map(|stem| std::fs::read_to_string(format!("{stem}.sql")).unwrap_or_default());
                let rules = match &down {
                    Some(up) => &rules.for_down_of(up),
                    None => rules,
                };
                report
                    .findings
                    .extend(check_script_with(&script, rules, &mut columns));
            }
        }
        Err(other) => return Err(other),
    }
    files.extend(report.findings.iter().map(|f| f.file.clone()));
    report.files = files.len();
    report
        .findings
        .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    Ok(report)
}

fn sql_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql") && p.is_file())
        .collect();
    files.sort();
    files
}

/// Line and column of byte offsets in one text, lines ended as PostgreSQL and the runner's
/// lexer end them (`\n`, `\r\n` or a lone `\r`), so every finding of a file agrees with
/// `up`'s error lines. Built once per text: each lookup is a binary search, not a scan.
pub(crate) struct Lines<'a> {
    text: &'a str,
    /// Byte offset where each line starts.
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    pub(crate) fn new(text: &'a str) -> Lines<'a> {
        let bytes = text.as_bytes();
        let mut starts = vec![0];
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\r' if bytes.get(i + 1) == Some(&b'\n') => {
                    starts.push(i + 2);
                    i += 2;
                    continue;
                }
                b'\r' | b'\n' => starts.push(i + 1),
                _ => {}
            }
            i += 1;
        }
        Lines { text, starts }
    }

    /// The text's lines, ended as [`Lines::new`] ends them.
    pub(crate) fn split(text: &'a str) -> Vec<&'a str> {
        let lines = Lines::new(text);
        let mut out = Vec::with_capacity(lines.starts.len());
        for (i, start) in lines.starts.iter().enumerate() {
            let end = lines.starts.get(i + 1).copied().unwrap_or(text.len());
            out.push(text[*start..end].trim_end_matches(['\r', '\n']));
        }
        out
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub(crate) fn at(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(self.text, offset.min(self.text.len()));
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        (line, self.text[start..offset].chars().count() + 1)
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_count_characters_and_every_line_break() {
        let text = "ab\ncé d\n";
        let lines = Lines::new(text);
        assert_eq!(lines.at(0), (1, 1));
        assert_eq!(lines.at(3), (2, 1));
        // 'd' is after a two-byte character.
        assert_eq!(lines.at(7), (2, 4));
        assert_eq!(lines.at(999), (3, 1));
        // A lone CR and CRLF end lines as they do for PostgreSQL and the runner.
        let text = "a\rb\r\nc";
        let lines = Lines::new(text);
        assert_eq!(lines.at(2), (2, 1));
        assert_eq!(lines.at(5), (3, 1));
        let offset = text.find('c').unwrap();
        assert_eq!(
            lines.at(offset).0,
            stepmigrate_core::sql::line_of_byte(text, offset)
        );
    }
}
