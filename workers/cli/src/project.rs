//! The project file, `stepmigrate.toml`: optional, found by walking upward from the working
//! directory (or named by `--config FILE` / `STEPMIGRATE_CONFIG`). It sits under flags and
//! environment variables: flags > environment > file > defaults.
//!
//! Every value is parsed by the same function as its environment variable
//! ([`parse_duration`], [`parse_schema_name`]), so a duration means the same everywhere, and
//! every error names the file, the key and the line.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stepmigrate_core::config::{
    parse_duration, parse_schema_name, Settings, ENV_BATCH_BUDGET, ENV_CONNECT_TIMEOUT,
    ENV_LEDGER_SCHEMA, ENV_LOCK_RETRIES, ENV_LOCK_TIMEOUT, ENV_LOCK_WAIT, ENV_STATEMENT_TIMEOUT,
};
use stepmigrate_core::db::Database;
use stepmigrate_core::Error;
use toml::Spanned;

/// The file looked for in the working directory and each of its parents.
pub const FILE_NAME: &str = "stepmigrate.toml";
/// Names the project file explicitly (as `--config` does); a missing one is then an error.
pub const ENV_CONFIG: &str = "STEPMIGRATE_CONFIG";
/// The scratch database server that `verify` and `preview` create databases on.
pub const ENV_DEV_URL: &str = "STEPMIGRATE_DEV_URL";

/// An error in the project file: the file, where (1-based line and column, when the error is
/// at a place in it), the key and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", self.location())]
pub struct ProjectError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The dotted key at fault (`lock_timeout`, `lint.severity.ban-drop-column`), or what
    /// named the file (`--config`, `STEPMIGRATE_CONFIG`) when it cannot be read.
    pub key: String,
    pub reason: String,
}

impl ProjectError {
    /// `file:line:column: key`, the way compilers point at a place.
    pub fn location(&self) -> String {
        match (self.line, self.column) {
            (Some(l), Some(c)) => format!("{}:{l}:{c}: {}", self.file.display(), self.key),
            (Some(l), None) => format!("{}:{l}: {}", self.file.display(), self.key),
            _ => format!("{}: {}", self.file.display(), self.key),
        }
    }
}

/// A setting error like any other (`ConfigError`, exit 2), naming file, line and key where
/// an environment variable's would name the variable.
impl From<ProjectError> for Error {
    fn from(e: ProjectError) -> Error {
        Error::Config {
            variable: e.location(),
            reason: e.reason,
        }
    }
}

/// A database URL that may hold a password: its `Debug` and `Display` show neither the user
/// nor the password, and [`SecretUrl::expose`] is the one way to the text.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> SecretUrl {
        SecretUrl(url.into())
    }

    /// The URL itself, to connect with. Never log or print it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SecretUrl {
    /// `postgres://host:port/db`: what is after the last `@` of the authority, so any user
    /// information (even a malformed one) stays hidden.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("", &self.0));
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let tail = tail.split(['?', '#']).next().unwrap_or_default();
        if scheme.is_empty() {
            write!(f, "{host}{tail}")
        } else {
            write!(f, "{scheme}://{host}{tail}")
        }
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretUrl({self})")
    }
}

/// A rule named in the project file, kept with where it was written so the lint can report
/// an unknown name with the file and line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    pub name: String,
    #[serde(serialize_with = "stepmigrate_core::error::lossy_path")]
    pub file: PathBuf,
    pub line: usize,
}

/// What a lint rule's finding counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Error,
    Warning,
    /// The rule does not run.
    Off,
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Severity, String> {
        match s {
            "error" => Ok(Severity::Error),
            "warning" => Ok(Severity::Warning),
            "off" => Ok(Severity::Off),
            other => Err(format!(
                "`{other}` is not a severity; write error, warning or off"
            )),
        }
    }
}

/// A PostgreSQL version the lint assumes (`pg_version = "15"` or `"13.4"`): some rules depend
/// on it (e.g. a volatile default rewrites the table before 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PgVersion {
    pub major: u32,
    pub minor: u32,
}

impl std::str::FromStr for PgVersion {
    type Err = String;
    fn from_str(text: &str) -> Result<PgVersion, String> {
        let bad = || {
            format!("`{text}` is not a PostgreSQL version; write the major version, e.g. \"15\" or \"13.4\"")
        };
        let (major, minor) = text.trim().split_once('.').unwrap_or((text.trim(), "0"));
        let number = |s: &str| -> Option<u32> {
            (!s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        match (number(major), number(minor)) {
            (Some(major), Some(minor)) if (9..=99).contains(&major) => {
                Ok(PgVersion { major, minor })
            }
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for PgVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The `[lint]` section, typed but not checked against the rules (the lint knows them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LintConfig {
    pub pg_version: Option<PgVersion>,
    /// Opt-in rules to switch on.
    pub enable: Vec<RuleRef>,
    /// Rules to switch off.
    pub disable: Vec<RuleRef>,
    /// Rules whose findings count as another severity, in the file's order.
    pub severity: Vec<(RuleRef, Severity)>,
}

/// A parsed project file. Paths in it are resolved against the file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    /// The file, as an absolute path.
    pub file: PathBuf,
    pub migrations_dir: Option<PathBuf>,
    pub ledger_schema: Option<String>,
    /// `FILE:LINE:COLUMN: ledger_schema`, for the library's errors about that schema.
    pub ledger_schema_source: Option<String>,
    pub lock_timeout: Option<Duration>,
    pub statement_timeout: Option<Duration>,
    pub lock_retries: Option<u32>,
    pub lock_wait: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    /// `allow_out_of_order = true`: apply new migrations below the newest applied one.
    pub allow_out_of_order: Option<bool>,
    pub dev_url: Option<Located<SecretUrl>>,
    pub lint: LintConfig,
}

/// A value with the line it was written on (for errors found later, e.g. a refused URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub line: usize,
    pub column: usize,
}

/// Where the project file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--config FILE`.
    Flag(PathBuf),
    /// `STEPMIGRATE_CONFIG=FILE`.
    Env(PathBuf),
    /// Look for `stepmigrate.toml` upward from the working directory.
    Discover,
}

impl Source {
    /// `--config` wins over `STEPMIGRATE_CONFIG`; an empty variable is an unset one.
    pub fn from_args(flag: Option<PathBuf>, env: Option<std::ffi::OsString>) -> Source {
        match (flag, env) {
            (Some(f), _) => Source::Flag(f),
            (None, Some(v)) if !v.to_string_lossy().trim().is_empty() => {
                Source::Env(PathBuf::from(v))
            }
            _ => Source::Discover,
        }
    }
}

impl Project {
    /// The project file for `source`, relative paths taken from `cwd`: `None` when none is
    /// named and none is found up to the filesystem root.
    #[tracing::instrument(level = "debug", skip_all)]
    pub fn locate(source: &Source, cwd: &Path) -> Result<Option<Project>, ProjectError> {
        let (file, named_by) = match source {
            Source::Flag(f) => (cwd.join(f), "--config"),
            Source::Env(f) => (cwd.join(f), ENV_CONFIG),
            Source::Discover => match find_upward(cwd) {
                Some(f) => (f, ""),
                None => {
                    tracing::debug!(from = %cwd.display(), "no {FILE_NAME} found");
                    return Ok(None);
                }
            },
        };
        let text = std::fs::read(&file).map_err(|e| {
            let reason = if e.kind() == std::io::ErrorKind::NotFound {
                "no such file".to_owned()
            } else {
                format!("cannot read the project file: {e}")
            };
            ProjectError {
                file: file.clone(),
                line: None,
                column: None,
                key: if named_by.is_empty() {
                    FILE_NAME.into()
                } else {
                    named_by.into()
                },
                reason,
            }
        })?;
        let text = String::from_utf8(text).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            let (line, column) = line_column(&String::from_utf8_lossy(e.as_bytes()), at);
            ProjectError {
                file: file.clone(),
                line: Some(line),
                column: Some(column),
                key: FILE_NAME.into(),
                reason: "not valid UTF-8 (TOML files are UTF-8)".into(),
            }
        })?;
        let project = Project::parse(&file, &text)?;
        tracing::info!(file = %file.display(), "project file");
        Ok(Some(project))
    }

    /// Parses the text of the project file `file` (absolute: relative paths in it are taken
    /// from its directory).
    pub fn parse(file: &Path, text: &str) -> Result<Project, ProjectError> {
        let here = |span: Range<usize>, reason: String| {
            let (line, column) = line_column(text, span.start);
            ProjectError {
                file: file.to_owned(),
                line: Some(line),
                column: Some(column),
                key: key_at(text, span.start),
                reason,
            }
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            here(span, tidy_toml_message(e.message()))
        })?;
        let dir = file.parent().unwrap_or(Path::new(""));

        let duration = |v: Option<Spanned<String>>| -> Result<Option<Duration>, ProjectError> {
            v.map(|v| parse_duration(v.get_ref()).map_err(|reason| here(v.span(), reason)))
                .transpose()
        };
        let migrations_dir = match raw.migrations_dir {
            Some(v) if v.get_ref().trim().is_empty() => {
                return Err(here(
                    v.span(),
                    "empty; write a directory, e.g. \"migrations\" (relative to this file)".into(),
                ))
            }
            Some(v) => Some(dir.join(v.get_ref())),
            None => None,
        };
        let ledger_schema_source = raw.ledger_schema.as_ref().map(|v| {
            let (line, column) = line_column(text, v.span().start);
            format!("{}:{line}:{column}: ledger_schema", file.display())
        });
        let ledger_schema = raw
            .ledger_schema
            .map(|v| parse_schema_name(v.get_ref()).map_err(|reason| here(v.span(), reason)))
            .transpose()?;
        let lock_retries = raw
            .lock_retries
            .map(|v| {
                u32::try_from(*v.get_ref()).map_err(|_| {
                    here(
                        v.span(),
                        format!("`{}` is not a whole number of retries", v.get_ref()),
                    )
                })
            })
            .transpose()?;
        let dev_url = match raw.dev_url {
            Some(v) => {
                let (line, column) = line_column(text, v.span().start);
                let url = v.get_ref();
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(here(
                        v.span(),
                        "not a PostgreSQL URL; write postgres://USER@HOST:PORT/DATABASE".into(),
                    ));
                }
                // The library's URL check: its errors never repeat the user or password.
                Database::from_url(v.get_ref(), "dev_url", Duration::ZERO).map_err(
                    |e| match e {
                        Error::Config { reason, .. } => here(v.span(), reason),
                        other => here(v.span(), other.to_string()),
                    },
                )?;
                Some(Located {
                    value: SecretUrl::new(v.into_inner()),
                    line,
                    column,
                })
            }
            None => None,
        };
        let lint = match raw.lint {
            Some(l) => lint_config(file, text, l, &here)?,
            None => LintConfig::default(),
        };
        Ok(Project {
            file: file.to_owned(),
            migrations_dir,
            ledger_schema,
            ledger_schema_source,
            lock_timeout: duration(raw.lock_timeout)?,
            statement_timeout: duration(raw.statement_timeout)?,
            lock_retries,
            lock_wait: duration(raw.lock_wait)?,
            connect_timeout: duration(raw.connect_timeout)?,
            allow_out_of_order: raw.allow_out_of_order.map(Spanned::into_inner),
            dev_url,
            lint,
        })
    }

    /// The directory the project file is in (the project's root).
    pub fn dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new(""))
    }

    /// Where `dev_url` was written, as errors about it should name it.
    pub fn dev_url_source(&self) -> Option<String> {
        self.dev_url
            .as_ref()
            .map(|u| format!("{}:{}:{}: dev_url", self.file.display(), u.line, u.column))
    }
}

fn lint_config(
    file: &Path,
    text: &str,
    raw: RawLint,
    here: &impl Fn(Range<usize>, String) -> ProjectError,
) -> Result<LintConfig, ProjectError> {
    let rule = |name: &Spanned<String>| -> Result<RuleRef, ProjectError> {
        let n = name.get_ref().trim();
        if n.is_empty() {
            return Err(here(
                name.span(),
                "an empty rule name; write a rule's name, e.g. \"ban-drop-column\"".into(),
            ));
        }
        Ok(RuleRef {
            name: n.to_owned(),
            file: file.to_owned(),
            line: line_column(text, name.span().start).0,
        })
    };
    let pg_version = raw
        .pg_version
        .map(|v| {
            let text = match v.get_ref() {
                RawPgVersion::Text(t) => t.clone(),
                RawPgVersion::Number(n) => n.to_string(),
                // A float prints its shortest form: 14.0 as "14", 9.6 as "9.6".
                RawPgVersion::Float(f) => f.to_string(),
            };
            text.parse::<PgVersion>()
                .map_err(|reason| here(v.span(), reason))
        })
        .transpose()?;
    let enable = raw.enable.iter().map(rule).collect::<Result<Vec<_>, _>>()?;
    let disable = raw
        .disable
        .iter()
        .map(rule)
        .collect::<Result<Vec<_>, _>>()?;
    for d in &raw.disable {
        if let Some(e) = raw
            .enable
            .iter()
            .find(|e| e.get_ref().trim() == d.get_ref().trim())
        {
            let line = line_column(text, e.span().start).0;
            return Err(here(
                d.span(),
                format!(
                    "rule `{}` is both enabled (line {line}) and disabled; keep one",
                    d.get_ref().trim()
                ),
            ));
        }
    }
    let mut severity = Vec::new();
    let mut entries: Vec<_> = raw.severity.into_iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    for (name, level) in entries {
        let level_parsed = level
            .get_ref()
            .parse::<Severity>()
            .map_err(|reason| here(level.span(), reason))?;
        severity.push((rule(&name)?, level_parsed));
    }
    Ok(LintConfig {
        pg_version,
        enable,
        disable,
        severity,
    })
}

/// The file as written, every value with its place.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    migrations_dir: Option<Spanned<String>>,
    ledger_schema: Option<Spanned<String>>,
    lock_timeout: Option<Spanned<String>>,
    statement_timeout: Option<Spanned<String>>,
    lock_retries: Option<Spanned<i64>>,
    lock_wait: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
    allow_out_of_order: Option<Spanned<bool>>,
    dev_url: Option<Spanned<String>>,
    lint: Option<RawLint>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLint {
    pg_version: Option<Spanned<RawPgVersion>>,
    #[serde(default)]
    enable: Vec<Spanned<String>>,
    #[serde(default)]
    disable: Vec<Spanned<String>>,
    #[serde(default)]
    severity: std::collections::BTreeMap<Spanned<String>, Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPgVersion {
    Text(String),
    Number(u32),
    /// `14.0` or `9.6` written as a TOML float.
    Float(f64),
}

/// The nearest `stepmigrate.toml` in `start` or a parent, up to the filesystem root.
pub fn find_upward(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(FILE_NAME))
        .find(|candidate| candidate.is_file())
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The dotted key that the byte at `offset` belongs to: the nearest `key =` at or above it,
/// under the nearest `[table]` header above that. Good enough for the file's flat shape, and
/// it never fails: at worst it names the table, or the file's top.
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let upto = &text[..line_end];
    let mut key: Option<String> = None;
    for line in upto.lines().rev() {
        let t = line.trim();
        if t.starts_with('[') {
            let table = t
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            return match key {
                Some(k) => format!("{table}.{k}"),
                None => table,
            };
        }
        if key.is_none() && !t.starts_with('#') {
            if let Some((k, _)) = t.split_once('=') {
                let k = k.trim().trim_matches(['"', '\'']).trim();
                if !k.is_empty() && !k.contains([' ', ',', '[', '{']) {
                    key = Some(k.to_owned());
                }
            }
        }
    }
    key.unwrap_or_else(|| FILE_NAME.to_owned())
}

/// toml's messages are good but end in a newline and sometimes lead with "TOML parse error".
fn tidy_toml_message(message: &str) -> String {
    let m = message.trim();
    let m = m.strip_prefix("TOML parse error").unwrap_or(m).trim();
    m.replace('\n', " ")
}

/// Runner settings with every layer in place: flags > environment variables > project file >
/// defaults. A flag given means its variable is not even read (a malformed variable under a
/// flag is no error), and so on down.
pub fn layered_settings(
    flags: &FlagSettings,
    env: impl Fn(&str) -> Option<String>,
    project: Option<&Project>,
) -> Result<Settings, Error> {
    let env = |var: &str| env(var).filter(|v| !v.trim().is_empty());
    let flag_given = |var: &str| match var {
        ENV_LOCK_TIMEOUT => flags.lock_timeout.is_some(),
        ENV_STATEMENT_TIMEOUT => flags.statement_timeout.is_some(),
        ENV_LOCK_RETRIES => flags.lock_retries.is_some(),
        ENV_LOCK_WAIT => flags.lock_wait.is_some(),
        ENV_CONNECT_TIMEOUT => flags.connect_timeout.is_some(),
        ENV_BATCH_BUDGET => flags.batch_budget.is_some(),
        _ => false,
    };
    let mut s = Settings::from_env(|var| if flag_given(var) { None } else { env(var) })?;
    if let Some(p) = project {
        let from_file = |var: &str| !flag_given(var) && env(var).is_none();
        let set = |var: &str, value: Option<Duration>, target: &mut Duration| {
            if let (true, Some(v)) = (from_file(var), value) {
                *target = v;
            }
        };
        set(ENV_LOCK_TIMEOUT, p.lock_timeout, &mut s.lock_timeout);
        set(
            ENV_STATEMENT_TIMEOUT,
            p.statement_timeout,
            &mut s.statement_timeout,
        );
        set(ENV_LOCK_WAIT, p.lock_wait, &mut s.lock_wait);
        set(
            ENV_CONNECT_TIMEOUT,
            p.connect_timeout,
            &mut s.connect_timeout,
        );
        if let (true, Some(n)) = (from_file(ENV_LOCK_RETRIES), p.lock_retries) {
            s.lock_retries = n;
        }
        // The library reads it from Settings, wherever it came from: the same path as
        // STEPMIGRATE_LEDGER_SCHEMA.
        if from_file(ENV_LEDGER_SCHEMA) {
            if let Some(schema) = &p.ledger_schema {
                s.ledger_schema = Some(schema.clone());
            }
        }
        if let (true, Some(allow)) = (
            from_file(stepmigrate_core::config::ENV_ALLOW_OUT_OF_ORDER),
            p.allow_out_of_order,
        ) {
            s.allow_out_of_order = allow;
        }
    }
    s.allow_out_of_order |= flags.allow_out_of_order;
    s.lock_timeout = flags.lock_timeout.unwrap_or(s.lock_timeout);
    s.statement_timeout = flags.statement_timeout.unwrap_or(s.statement_timeout);
    s.lock_retries = flags.lock_retries.unwrap_or(s.lock_retries);
    s.lock_wait = flags.lock_wait.unwrap_or(s.lock_wait);
    s.connect_timeout = flags.connect_timeout.unwrap_or(s.connect_timeout);
    match flags.batch_budget {
        Some(b) if b.is_zero() => {
            return Err(Error::InvalidInput(
                "--batch-budget 0 leaves no time for a batch: write e.g. 30s or 10min".into(),
            ))
        }
        Some(b) => s.batch_budget = b,
        None => {}
    }
    Ok(s)
}

/// Points an error about the ledger's schema at the file when the file chose the schema: the
/// library names `STEPMIGRATE_LEDGER_SCHEMA`, wherever the setting came from.
pub fn attribute_error(
    error: Error,
    project: Option<&Project>,
    env: impl Fn(&str) -> Option<String>,
) -> Error {
    let from_file = env(ENV_LEDGER_SCHEMA)
        .filter(|v| !v.trim().is_empty())
        .is_none();
    match (error, project.and_then(|p| p.ledger_schema_source.clone())) {
        (Error::Config { variable, reason }, Some(source))
            if from_file && variable == ENV_LEDGER_SCHEMA =>
        {
            Error::Config {
                variable: source,
                reason,
            }
        }
        (error, _) => error,
    }
}

/// The settings given as flags.
#[derive(Debug, Clone, Default)]
pub struct FlagSettings {
    pub lock_timeout: Option<Duration>,
    pub statement_timeout: Option<Duration>,
    pub lock_retries: Option<u32>,
    pub lock_wait: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub batch_budget: Option<Duration>,
    /// `--allow-out-of-order` (only ever turns it on).
    pub allow_out_of_order: bool,
}

/// The migrations directory: the flag or `STEPMIGRATE_MIGRATIONS_DIR` (`given`), else the
/// file's `migrations_dir`, else `migrations` beside the project file, else `migrations` in
/// the working directory.
pub fn migrations_dir(given: Option<&Path>, project: Option<&Project>) -> PathBuf {
    match (given, project) {
        (Some(dir), _) => dir.to_owned(),
        (None, Some(p)) => p
            .migrations_dir
            .clone()
            .unwrap_or_else(|| p.dir().join("migrations")),
        (None, None) => PathBuf::from("migrations"),
    }
}

/// The scratch database server for `verify` and `preview`, with where it came from (for
/// errors, which name the source and never the URL's user or password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevUrl {
    pub url: SecretUrl,
    /// `--dev-url`, `STEPMIGRATE_DEV_URL`, or `FILE:LINE:COLUMN: dev_url`.
    pub source: String,
}

/// `--dev-url` > `STEPMIGRATE_DEV_URL` > the file's `dev_url`.
pub fn dev_url(
    flag: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
    project: Option<&Project>,
) -> Option<DevUrl> {
    if let Some(f) = flag.filter(|f| !f.trim().is_empty()) {
        return Some(DevUrl {
            url: SecretUrl::new(f),
            source: "--dev-url".into(),
        });
    }
    if let Some(v) = env(ENV_DEV_URL).filter(|v| !v.trim().is_empty()) {
        return Some(DevUrl {
            url: SecretUrl::new(v),
            source: ENV_DEV_URL.into(),
        });
    }
    let p = project?;
    Some(DevUrl {
        url: p.dev_url.as_ref()?.value.clone(),
        source: p.dev_url_source()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/repo/stepmigrate.toml";

    fn parse(text: &str) -> Result<Project, ProjectError> {
        Project::parse(Path::new(FILE), text)
    }

    fn err(text: &str) -> ProjectError {
        parse(text).expect_err("should be refused")
    }

    #[test]
    fn the_full_example_parses() {
        let p = parse(
            r#"
migrations_dir = "db/migrations"
ledger_schema = "public"
lock_timeout = "5s"
statement_timeout = "15min"
lock_retries = 3
lock_wait = "10min"
connect_timeout = "5s"
dev_url = "postgres://postgres:hunter2@localhost:5432/postgres"

[lint]
pg_version = "15"
enable = ["require-timeout-settings"]
disable = ["prefer-robust-stmts"]

[lint.severity]
"ban-drop-column" = "error"
adding-not-nullable-field = "off"
"#,
        )
        .unwrap();
        assert_eq!(p.migrations_dir, Some(PathBuf::from("/repo/db/migrations")));
        assert_eq!(p.ledger_schema.as_deref(), Some("public"));
        assert_eq!(p.lock_timeout, Some(Duration::from_secs(5)));
        assert_eq!(p.statement_timeout, Some(Duration::from_secs(900)));
        assert_eq!(p.lock_retries, Some(3));
        assert_eq!(p.lock_wait, Some(Duration::from_secs(600)));
        let url = p.dev_url.as_ref().unwrap();
        assert_eq!(url.line, 9);
        assert_eq!(url.value.to_string(), "postgres://localhost:5432/postgres");
        assert!(!format!("{p:?}").contains("hunter2"));
        assert_eq!(
            p.lint.pg_version,
            Some(PgVersion {
                major: 15,
                minor: 0
            })
        );
        assert_eq!(p.lint.enable[0].name, "require-timeout-settings");
        assert_eq!(p.lint.enable[0].line, 13);
        assert_eq!(p.lint.disable[0].line, 14);
        let sev: Vec<_> = p
            .lint
            .severity
            .iter()
            .map(|(r, s)| (r.name.as_str(), r.line, *s))
            .collect();
        assert_eq!(
            sev,
            [
                ("ban-drop-column", 17, Severity::Error),
                ("adding-not-nullable-field", 18, Severity::Off)
            ]
        );
    }

    #[test]
    fn an_empty_file_is_all_defaults() {
        let p = parse("# nothing yet\n").unwrap();
        assert_eq!(p.migrations_dir, None);
        assert_eq!(p.lint, LintConfig::default());
        assert_eq!(
            migrations_dir(None, Some(&p)),
            Path::new("/repo/migrations")
        );
    }

    #[test]
    fn errors_name_file_key_line_and_column() {
        let e = err("lock_timeout = \"5s\"\nstatement_timeout = \"soon\"\n");
        assert_eq!(
            (e.line, e.column, e.key.as_str()),
            (Some(2), Some(21), "statement_timeout")
        );
        assert!(e.reason.contains("`soon` is not a duration"), "{e}");
        assert!(
            e.to_string()
                .starts_with("/repo/stepmigrate.toml:2:21: statement_timeout: "),
            "{e}"
        );

        let e = err("lock_timeout = \"5s\"\n\n[lint]\nenabel = [\"x\"]\n");
        assert_eq!((e.line, e.key.as_str()), (Some(4), "lint.enabel"), "{e}");
        assert!(e.reason.contains("unknown field `enabel`"), "{e}");

        let e = err("lock_timeout = \"5s\"\nlock_wait = 10min\n");
        assert_eq!((e.line, e.key.as_str()), (Some(2), "lock_wait"), "{e}");

        let e = err("lock_retries = -1\n");
        assert_eq!((e.line, e.key.as_str()), (Some(1), "lock_retries"));
        let e = err("lock_retries = \"3\"\n");
        assert!(e.reason.contains("invalid type"), "{e}");
        let e = err("ledger_schema = \"pg_mine\"\n");
        assert_eq!(e.key, "ledger_schema");
        let e = err("[lint.severity]\n\"ban-drop-column\" = \"fatal\"\n");
        assert_eq!(
            (e.line, e.key.as_str()),
            (Some(2), "lint.severity.ban-drop-column"),
            "{e}"
        );
        let e = err("[lint]\nenable = [\"a\"]\ndisable = [\"b\", \"a\"]\n");
        assert_eq!(e.line, Some(3));
        assert!(
            e.reason.contains("both enabled (line 2) and disabled"),
            "{e}"
        );
        let e = err("[lint]\npg_version = \"fifteen\"\n");
        assert_eq!(e.key, "lint.pg_version");
        assert_eq!(
            parse("[lint]\npg_version = 13\n").unwrap().lint.pg_version,
            Some(PgVersion {
                major: 13,
                minor: 0
            })
        );
    }

    #[test]
    fn a_bad_dev_url_is_refused_without_its_secret() {
        let e = err("dev_url = \"mysql://root:s3cret@db/x\"\n");
        assert_eq!(e.key, "dev_url");
        let e2 = err("dev_url = \"postgres://u:pa/ss@db/x\"\n");
        for e in [e, e2] {
            assert!(!e.to_string().contains("s3cret"), "{e}");
            assert!(!e.to_string().contains("pa/ss"), "{e}");
        }
    }

    #[test]
    fn secret_urls_never_show_user_or_password() {
        for (url, shown) in [
            (
                "postgres://u:p@h:5432/db?sslmode=require",
                "postgres://h:5432/db",
            ),
            ("postgres://h/db", "postgres://h/db"),
            ("postgresql://a@b:c@h/db", "postgresql://h/db"),
            ("u:p@h", "h"),
        ] {
            assert_eq!(SecretUrl::new(url).to_string(), shown);
            assert!(!format!("{:?}", SecretUrl::new(url)).contains(":p@"));
        }
    }

    #[test]
    fn layers_flags_over_env_over_file_over_defaults() {
        let p = parse("lock_timeout = \"7s\"\nlock_retries = 9\nlock_wait = \"1min\"\nledger_schema = \"from_file\"\n").unwrap();
        let none = |_: &str| None;
        let s = layered_settings(&FlagSettings::default(), none, Some(&p)).unwrap();
        assert_eq!(s.lock_timeout, Duration::from_secs(7));
        assert_eq!(s.lock_retries, 9);
        assert_eq!(s.ledger_schema.as_deref(), Some("from_file"));
        assert_eq!(s.statement_timeout, Settings::default().statement_timeout);

        let env = |v: &str| match v {
            ENV_LOCK_TIMEOUT => Some("8s".to_owned()),
            ENV_LEDGER_SCHEMA => Some("from_env".to_owned()),
            ENV_LOCK_WAIT => Some(" ".to_owned()),
            _ => None,
        };
        let s = layered_settings(&FlagSettings::default(), env, Some(&p)).unwrap();
        assert_eq!(s.lock_timeout, Duration::from_secs(8));
        assert_eq!(s.ledger_schema.as_deref(), Some("from_env"));
        assert_eq!(
            s.lock_wait,
            Duration::from_secs(60),
            "an empty variable is unset"
        );

        let flags = FlagSettings {
            lock_timeout: Some(Duration::from_secs(9)),
            ..FlagSettings::default()
        };
        let bad_env = |v: &str| (v == ENV_LOCK_TIMEOUT).then(|| "soon".to_owned());
        let s = layered_settings(&flags, bad_env, Some(&p)).unwrap();
        assert_eq!(s.lock_timeout, Duration::from_secs(9));
    }

    #[test]
    fn dev_url_layers() {
        let p = parse("\ndev_url = \"postgres://x:pw@h/db\"\n").unwrap();
        let d = dev_url(None, |_| None, Some(&p)).unwrap();
        assert_eq!(d.source, "/repo/stepmigrate.toml:2:11: dev_url");
        assert_eq!(d.url.expose(), "postgres://x:pw@h/db");
        let d = dev_url(
            None,
            |v| (v == ENV_DEV_URL).then(|| "postgres://e/db".into()),
            Some(&p),
        )
        .unwrap();
        assert_eq!(d.source, ENV_DEV_URL);
        let d = dev_url(Some("postgres://f/db"), |_| None, Some(&p)).unwrap();
        assert_eq!(d.source, "--dev-url");
        assert!(dev_url(None, |_| None, None).is_none());
    }

    #[test]
    fn found_upward_and_named_files_must_exist() {
        let tmp = tempfile::tempdir().unwrap();
        let sub = tmp.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        assert_eq!(Project::locate(&Source::Discover, &sub).unwrap(), None);
        std::fs::write(tmp.path().join(FILE_NAME), "migrations_dir = \"db\"\n").unwrap();
        let p = Project::locate(&Source::Discover, &sub).unwrap().unwrap();
        assert_eq!(p.migrations_dir, Some(tmp.path().join("db")));
        let e = Project::locate(&Source::Flag("nope.toml".into()), &sub).unwrap_err();
        assert_eq!(e.key, "--config");
        assert_eq!(e.file, sub.join("nope.toml"));
        let e = Project::locate(&Source::Env("nope.toml".into()), &sub).unwrap_err();
        assert_eq!(e.key, ENV_CONFIG);
        assert_eq!(
            Source::from_args(None, Some("".into())),
            Source::Discover,
            "an empty STEPMIGRATE_CONFIG is unset"
        );
    }

    #[test]
    fn line_columns_count_characters() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é\nx", 3), (2, 1));
        assert_eq!(line_column("éx", 2), (1, 2));
    }
}
