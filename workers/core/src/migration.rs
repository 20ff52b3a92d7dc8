//! The migration set: the `.sql` files of a directory, validated as a whole. Pure: reading the
//! directory is the only I/O, and [`MigrationSet::from_files`] takes the files in memory.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{Error, SetProblem};
use crate::sql;

/// A migration version: the decimal number of the file name, ordered numerically, and the
/// digits as written (the ledger stores them as text, e.g. `"004"`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version {
    number: u64,
    text: String,
}

impl Version {
    /// Parses the digits of a version; `None` if they are not 1..=19 decimal digits.
    pub fn parse(text: &str) -> Option<Version> {
        if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Version {
            number: text.parse().ok()?,
            text: text.to_owned(),
        })
    }

    pub fn number(&self) -> u64 {
        self.number
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.number
            .cmp(&other.number)
            .then_with(|| self.text.cmp(&other.text))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl std::str::FromStr for Version {
    type Err = String;

    fn from_str(text: &str) -> Result<Version, String> {
        Version::parse(text).ok_or_else(|| {
            format!("`{text}` is not a version: decimal digits (at most 19), e.g. 004")
        })
    }
}

impl<'de> serde::Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Lowercase hex SHA-256 of a file's raw bytes: the old runner's checksum, so its ledger rows
/// compare as they are.
pub fn checksum(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in digest {
        use fmt::Write;
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// A file's content without what is not an edit: a leading byte-order mark, and the kind of
/// line break (`\r\n` and a lone `\r` become `\n`). The one rule for "the same file": the
/// ledger's comparison ([`differs_only_in_line_endings`]) and `migrations.sum`
/// ([`content_checksum`]) both use it, so a checkout with `core.autocrlf` is neither drift nor
/// a stale sum, and a sum written on one checkout holds on every other.
pub fn canonical_content(bytes: &[u8]) -> Vec<u8> {
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut lf = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i] == b'\r' {
            lf.push(b'\n');
            i += if body.get(i + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
        } else {
            lf.push(body[i]);
            i += 1;
        }
    }
    lf
}

/// The checksum of a file's [`canonical_content`]: what `migrations.sum` chains. (The
/// ledger keeps [`checksum`], of the raw bytes, as the old runner did.) For a file with LF
/// line breaks and no byte-order mark the two are equal.
pub fn content_checksum(bytes: &[u8]) -> String {
    checksum(&canonical_content(bytes))
}

/// Whether `recorded` is the checksum of `bytes` with other line endings or a byte-order mark:
/// such a change (a checkout with `core.autocrlf`, an editor adding a BOM) leaves the SQL the
/// same, so it is a warning, not drift.
pub fn differs_only_in_line_endings(bytes: &[u8], recorded: &str) -> bool {
    // The text with every line break (`\r\n`, `\n`, a lone `\r`) as `\n`...
    let lf = canonical_content(bytes);
    // ...then as `\r\n` and as `\r`, each with and without a byte-order mark.
    let with_breaks = |newline: &[u8]| -> Vec<u8> {
        let mut out = Vec::with_capacity(lf.len() + lf.len() / 16);
        for &b in &lf {
            if b == b'\n' {
                out.extend_from_slice(newline);
            } else {
                out.push(b);
            }
        }
        out
    };
    let bom = |v: &[u8]| [b"\xEF\xBB\xBF".as_slice(), v].concat();
    let (crlf, cr) = (with_breaks(b"\r\n"), with_breaks(b"\r"));
    [&lf, &crlf, &cr]
        .iter()
        .any(|v| checksum(v) == recorded || checksum(&bom(v)) == recorded)
}

/// How a migration runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// In one transaction with its ledger event: all of it or nothing.
    #[default]
    Transactional,
    /// Outside a transaction, one statement at a time (for `CREATE INDEX CONCURRENTLY`); a
    /// failure part way leaves it dirty.
    NoTransaction,
    /// One idempotent statement that processes at most `batch_size` rows, run again and again,
    /// each batch in its own transaction with a `batch` progress event, until a batch changes
    /// no row (see [`crate::batch`]).
    Batch,
}

/// Settings a migration's header may override.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Directives {
    pub mode: Mode,
    /// `irreversible`: the migration has no down file on purpose (a rollback refuses it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub irreversible: bool,
    /// `requires = 012, 015`: migrations that must be applied before this one (and stay
    /// applied while it is). Each sorts earlier in the set.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<Version>,
    /// `conflicts = 020`: migrations that must not be applied while this one is.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Version>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::config::duration_opt"
    )]
    pub lock_timeout: Option<Duration>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::config::duration_opt"
    )]
    pub statement_timeout: Option<Duration>,
    /// `batch_size = 10000` (batch migrations): what `:batch_size` stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u64>,
    /// `pause = 100ms` (batch migrations): the wait between two batches, for replicas and
    /// autovacuum to keep up.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::config::duration_opt"
    )]
    pub pause: Option<Duration>,
    /// `runner = task` / `runner = lambda`: where Step Functions runs the migration (see
    /// [`Migration::runs_as_task`]); the CLI runs every migration itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner: Option<Runner>,
    /// `after-deploy`: the deploy's own run leaves it (and whatever requires it) pending; the
    /// run started after the deploy completes applies it, so a deploy never waits for a long
    /// data migration. It may then run after newer migrations: not an out-of-order apply.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub after_deploy: bool,
}

/// Where the state machine runs a migration: in the apply-one Lambda (at most its 15
/// minutes) or in an ECS Fargate task started by the state machine (no deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runner {
    Lambda,
    Task,
}

/// A batch migration's `batch_size` when its header gives none.
pub const DEFAULT_BATCH_SIZE: u64 = 1000;

/// The largest `batch_size`: its digits must fit where `:batch_size` was written (see
/// [`bind_batch_size`]), and a batch that large is no longer a batch.
pub const MAX_BATCH_SIZE: u64 = 100_000_000;

/// The prefix that marks a header directive line.
pub const DIRECTIVE_PREFIX: &str = "stepmigrate:";

/// A rollback script paired with its migration. Empty (or only comments) means there is
/// nothing to undo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownMigration {
    pub path: PathBuf,
    pub sql: String,
    pub checksum: String,
    /// Its own header: `no-transaction` and the timeouts (for `DROP INDEX CONCURRENTLY`).
    pub directives: Directives,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub version: Version,
    /// The file name without `.sql`, e.g. `004_add_new_feature`: the ledger's `name` column.
    pub name: String,
    pub path: PathBuf,
    /// The text that runs: the file's, except that a batch migration's `:batch_size` is
    /// bound (padded to the placeholder's width, so every line and column is the file's).
    pub sql: String,
    /// The file's text where it differs from `sql` (a batch migration's, before
    /// `:batch_size` is bound): what line-ending comparisons read.
    pub as_written: Option<String>,
    pub checksum: String,
    pub directives: Directives,
    pub down: Option<DownMigration>,
}

impl Migration {
    /// The file's text as written (see [`differs_only_in_line_endings`]).
    pub fn text_as_written(&self) -> &str {
        self.as_written.as_deref().unwrap_or(&self.sql)
    }

    /// Whether what it runs is inside a transaction (each batch of a batch migration is): a
    /// failure leaves nothing behind, so it is never dirty.
    pub fn transactional(&self) -> bool {
        self.directives.mode != Mode::NoTransaction
    }

    pub fn is_batch(&self) -> bool {
        self.directives.mode == Mode::Batch
    }

    /// Whether the state machine runs this migration as an ECS task rather than in Lambda:
    /// it says `runner = task`, or its own `statement_timeout` (0: none) is longer than
    /// `lambda_limit`, the longest statement the apply-one Lambda gives. `runner = lambda`
    /// keeps it in Lambda (its timeout then capped to the limit).
    pub fn runs_as_task(&self, lambda_limit: Duration) -> bool {
        match self.directives.runner {
            Some(runner) => runner == Runner::Task,
            None => self
                .directives
                .statement_timeout
                .is_some_and(|t| t.is_zero() || t > lambda_limit),
        }
    }
}

/// A set of `(file name, text)` under `m/`, for the unit tests.
#[cfg(test)]
pub(crate) fn test_set(files: &[(&str, &str)]) -> MigrationSet {
    MigrationSet::from_files(
        Path::new("m"),
        files
            .iter()
            .map(|(name, sql)| SourceFile {
                path: PathBuf::from("m").join(name),
                bytes: sql.as_bytes().to_vec(),
            })
            .collect(),
    )
    .unwrap()
}

/// The versions that say `after-deploy` or require (transitively) one that does, in one pass:
/// a requirement sorts earlier (validated at load).
fn after_deploy_chain(migrations: &[Migration]) -> std::collections::HashSet<u64> {
    let mut chain = std::collections::HashSet::new();
    for m in migrations {
        if m.directives.after_deploy
            || m.directives
                .requires
                .iter()
                .any(|r| chain.contains(&r.number()))
        {
            chain.insert(m.version.number());
        }
    }
    chain
}

/// `text` with every `:batch_size` at `placeholders` replaced by `size`, padded with spaces to
/// the placeholder's width: error positions and lines stay those of the file.
pub fn bind_batch_size(text: &str, placeholders: &[usize], size: u64) -> String {
    let digits = format!("{size:<width$}", width = sql::BATCH_SIZE_PLACEHOLDER.len());
    debug_assert_eq!(digits.len(), sql::BATCH_SIZE_PLACEHOLDER.len());
    let mut out = text.to_owned();
    for &at in placeholders {
        out.replace_range(at..at + sql::BATCH_SIZE_PLACEHOLDER.len(), &digits);
    }
    out
}

/// A validated, ordered set of migrations.
#[derive(Debug, Clone, Default)]
pub struct MigrationSet {
    pub dir: PathBuf,
    migrations: Vec<Migration>,
    /// The text of the directory's `migrations.sum`, when it has one (see [`crate::integrity`]).
    pub sum: Option<String>,
    /// The versions of [`MigrationSet::in_after_deploy_chain`], computed with the set.
    after_deploy_chain: std::collections::HashSet<u64>,
    /// Each file's [`content_checksum`] (migrations and down files), by path: what
    /// `migrations.sum` covers.
    content_checksums: std::collections::HashMap<PathBuf, String>,
    /// [`MigrationSet::digest`], computed once: a warm worker asks for it on every
    /// invocation, and it hashes the whole set.
    digest: std::sync::OnceLock<String>,
}

/// One file as read from disk.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

impl MigrationSet {
    /// Loads and validates the `.sql` files of `dir` (not recursive; other files are ignored).
    pub fn load(dir: &Path) -> Result<MigrationSet, Error> {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::InvalidMigrationSet {
            dir: dir.to_owned(),
            problems: vec![SetProblem::new(
                dir,
                None,
                format!("cannot read the migrations directory: {e}"),
            )],
        })?;
        let mut paths = Vec::new();
        let mut problems = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    problems.push(SetProblem::new(
                        dir,
                        None,
                        format!("cannot list the directory: {e}"),
                    ));
                    continue;
                }
            };
            let path = entry.path();
            let looks_like_sql = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case("sql"));
            if !looks_like_sql {
                continue;
            }
            // The directory entry knows its type: no stat per regular file. Anything else (a
            // FIFO would block the read forever, a device never end) is named, not read.
            match entry.file_type() {
                Ok(t) if t.is_file() => paths.push(path),
                Ok(t) if t.is_dir() => problems.push(directory_problem(&path)),
                _ => match std::fs::metadata(&path) {
                    Ok(m) if m.is_file() => paths.push(path),
                    Ok(m) if m.is_dir() => problems.push(directory_problem(&path)),
                    Ok(_) => problems.push(SetProblem::new(
                        &path,
                        None,
                        "not a regular file (a FIFO, socket or device, or a link to one): a migration must be a file".into(),
                    )),
                    Err(e) => problems.push(SetProblem::new(
                        &path,
                        None,
                        format!("cannot read the file: {e}"),
                    )),
                },
            }
        }
        let (files, mut unreadable) = read_all(paths);
        problems.append(&mut unreadable);
        let sum_path = crate::integrity::sum_path(dir);
        let sum = match std::fs::read(&sum_path) {
            Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                problems.push(SetProblem::new(
                    &sum_path,
                    None,
                    format!("cannot read the file: {e}"),
                ));
                None
            }
        };
        let result = MigrationSet::from_files(dir, files).map(|mut set| {
            set.sum = sum;
            set
        });
        match (result, problems.is_empty()) {
            (Ok(set), true) => Ok(set),
            (Ok(_), false) => Err(Error::InvalidMigrationSet {
                dir: dir.to_owned(),
                problems,
            }),
            (
                Err(Error::InvalidMigrationSet {
                    problems: mut more, ..
                }),
                _,
            ) => {
                problems.append(&mut more);
                Err(Error::InvalidMigrationSet {
                    dir: dir.to_owned(),
                    problems,
                })
            }
            (Err(e), _) => Err(e),
        }
    }

    /// Validates a set from files in memory; every problem is reported at once.
    pub fn from_files(dir: &Path, mut files: Vec<SourceFile>) -> Result<MigrationSet, Error> {
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut problems = Vec::new();
        let mut ups: BTreeMap<u64, Vec<Migration>> = BTreeMap::new();
        let mut downs: Vec<(Version, String, DownMigration)> = Vec::new();
        // Every well-named migration counts for gaps, even one with other problems: a gap
        // report must not follow from a file that is reported already.
        let mut numbered: BTreeMap<u64, PathBuf> = BTreeMap::new();
        let mut content_checksums = std::collections::HashMap::new();

        for file in files {
            let Some(file_name) = file
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_owned)
            else {
                problems.push(SetProblem::new(
                    &file.path,
                    None,
                    "the file name is not valid UTF-8".into(),
                ));
                continue;
            };
            let (name, is_down) = match parse_file_name(&file_name) {
                Ok(parsed) => parsed,
                Err(why) => {
                    problems.push(SetProblem::new(&file.path, None, why));
                    continue;
                }
            };
            let version = Version::parse(name.split('_').next().unwrap_or_default())
                .expect("checked by parse_file_name");
            if version.number() == 0 {
                problems.push(SetProblem::new(
                    &file.path,
                    None,
                    "version 000 is reserved for the ledger itself (schema_migrations); number your migrations from 001".into(),
                ));
                continue;
            }
            if !is_down {
                numbered
                    .entry(version.number())
                    .or_insert_with(|| file.path.clone());
            }
            let sql = match String::from_utf8(file.bytes.clone()) {
                Ok(s) => s,
                Err(e) => {
                    let at = e.utf8_error().valid_up_to();
                    let line =
                        sql::line_of_byte(std::str::from_utf8(&file.bytes[..at]).unwrap_or(""), at);
                    problems.push(SetProblem::new(
                        &file.path,
                        Some(line),
                        format!("the file is not valid UTF-8 (byte {at})"),
                    ));
                    continue;
                }
            };
            let sql_body = sql.strip_prefix('\u{feff}').unwrap_or(&sql);
            if let Some(at) = sql_body.find('\0') {
                problems.push(SetProblem::new(
                    &file.path,
                    Some(sql::line_of_byte(sql_body, at)),
                    "the file holds a NUL byte, which PostgreSQL cannot receive in a query; is it a binary file?".into(),
                ));
                continue;
            }
            let file_checksum = checksum(&file.bytes);
            content_checksums.insert(file.path.clone(), content_checksum(&file.bytes));
            let script = if is_down { Script::Down } else { Script::Up };
            let directives = match validate_script(&file.path, sql_body, script) {
                Ok(d) => d,
                Err(mut found) => {
                    problems.append(&mut found);
                    continue;
                }
            };
            if is_down {
                downs.push((
                    version,
                    name,
                    DownMigration {
                        path: file.path,
                        sql: sql_body.to_owned(),
                        checksum: file_checksum,
                        directives,
                    },
                ));
                continue;
            }
            let runnable = if directives.mode == Mode::Batch {
                bind_batch_size(
                    sql_body,
                    &sql::lex(sql_body).placeholders,
                    directives.batch_size.unwrap_or(DEFAULT_BATCH_SIZE),
                )
            } else {
                sql_body.to_owned()
            };
            let as_written = (runnable != sql_body).then(|| sql_body.to_owned());
            ups.entry(version.number()).or_default().push(Migration {
                version,
                name,
                path: file.path,
                sql: runnable,
                as_written,
                checksum: file_checksum,
                directives,
                down: None,
            });
        }

        // Duplicates (also `004` against `0004`), then gaps, on the numeric order.
        let mut migrations = Vec::new();
        for (_, group) in ups {
            if group.len() > 1 {
                let names: Vec<String> = group.iter().map(|m| display_name(&m.path)).collect();
                for m in &group {
                    problems.push(SetProblem::new(
                        &m.path,
                        None,
                        format!(
                            "duplicate version {}: {} share it",
                            m.version.number(),
                            names.join(", ")
                        ),
                    ));
                }
                continue;
            }
            migrations.extend(group);
        }
        let mut expected = 1u64;
        for (&number, path) in &numbered {
            if number != expected {
                let missing = if number == expected + 1 {
                    format!("{expected}")
                } else {
                    format!("{expected} to {}", number - 1)
                };
                problems.push(SetProblem::new(
                    path,
                    None,
                    format!("gap in the sequence: version {missing} is missing before this file"),
                ));
            }
            expected = number + 1;
        }

        for (version, name, down) in downs {
            match migrations
                .iter_mut()
                .find(|m| m.version.number() == version.number())
            {
                Some(m) if m.name == name => m.down = Some(down),
                Some(m) => problems.push(SetProblem::new(
                    &down.path,
                    None,
                    format!(
                        "the down migration's name does not match its migration {}",
                        display_name(&m.path)
                    ),
                )),
                // Its migration has problems of its own, reported already.
                None if numbered.contains_key(&version.number()) => {}
                None => problems.push(SetProblem::new(
                    &down.path,
                    None,
                    format!("down migration without a migration {name}.sql"),
                )),
            }
        }

        check_dependencies(&migrations, &numbered, &mut problems);

        if problems.is_empty() {
            let after_deploy_chain = after_deploy_chain(&migrations);
            Ok(MigrationSet {
                dir: dir.to_owned(),
                migrations,
                sum: None,
                after_deploy_chain,
                content_checksums,
                digest: std::sync::OnceLock::new(),
            })
        } else {
            problems.sort_by(|a, b| a.file.cmp(&b.file).then(a.line.cmp(&b.line)));
            Err(Error::InvalidMigrationSet {
                dir: dir.to_owned(),
                problems,
            })
        }
    }

    /// The [`content_checksum`] of the file at `path` as loaded (a migration added later, by
    /// [`MigrationSet::with_migrations`], has none).
    pub fn content_checksum(&self, path: &Path) -> Option<&str> {
        self.content_checksums.get(path).map(String::as_str)
    }

    pub fn migrations(&self) -> &[Migration] {
        &self.migrations
    }

    /// The migration of a version (by number: `4` finds `004`).
    pub fn get(&self, version: &Version) -> Option<&Migration> {
        self.position(version).map(|i| &self.migrations[i])
    }

    /// Where a version is in the set's order.
    pub fn position(&self, version: &Version) -> Option<usize> {
        self.migrations
            .binary_search_by_key(&version.number(), |m| m.version.number())
            .ok()
    }

    /// The migration before `version` in the set: the one that must be applied first.
    pub fn previous(&self, version: &Version) -> Option<&Migration> {
        let i = self.position(version)?;
        i.checked_sub(1).map(|p| &self.migrations[p])
    }

    /// Whether `m` may run after newer migrations without being out of order: it says
    /// `after-deploy`, or requires (transitively) one that does. A deploy's run applies the
    /// migrations after it first (see [`crate::plan::Plan::defer_after_deploy`]).
    pub fn in_after_deploy_chain(&self, m: &Migration) -> bool {
        self.after_deploy_chain.contains(&m.version.number())
    }

    /// Whether `m`'s runner yields the migration lock while its statements run under its
    /// build lock (see [`crate::lock`]): a `no-transaction`, non-batch migration of the
    /// after-deploy chain. A dirty row of any other migration whose build lock is held is a
    /// killed runner's statement running on.
    pub fn yields_lock_for_build(&self, m: &Migration) -> bool {
        !m.transactional() && !m.is_batch() && self.in_after_deploy_chain(m)
    }

    /// The migration that must be applied before `version` runs, as the database's guard
    /// checks it: the one before it, passing over the after-deploy chain (which a deploy's
    /// run leaves pending behind newer migrations).
    pub fn predecessor(&self, version: &Version) -> Option<&Migration> {
        let i = self.position(version)?;
        self.migrations[..i]
            .iter()
            .rev()
            .find(|m| !self.in_after_deploy_chain(m))
    }

    /// This set with `more` added in version order (a pull request's new migrations on top of
    /// its base): each was validated in its own set already. One whose version this set holds
    /// is not added but returned.
    pub fn with_migrations(
        &self,
        more: impl IntoIterator<Item = Migration>,
    ) -> (MigrationSet, Vec<Migration>) {
        let mut set = self.clone();
        let mut refused = Vec::new();
        for m in more {
            match set
                .migrations
                .binary_search_by_key(&m.version.number(), |x| x.version.number())
            {
                Ok(_) => refused.push(m),
                Err(at) => set.migrations.insert(at, m),
            }
        }
        set.after_deploy_chain = after_deploy_chain(&set.migrations);
        set.digest = std::sync::OnceLock::new();
        (set, refused)
    }

    /// This set with only the migrations whose version numbers `keep` holds (what a database
    /// has applied, to replay it elsewhere); without its `migrations.sum`, which covers the
    /// whole set.
    pub fn only(&self, keep: &std::collections::BTreeSet<u64>) -> MigrationSet {
        let mut set = self.clone();
        set.migrations
            .retain(|m| keep.contains(&m.version.number()));
        set.sum = None;
        set.after_deploy_chain = after_deploy_chain(&set.migrations);
        set.digest = std::sync::OnceLock::new();
        set
    }

    /// Refuses a set whose `migrations.sum` does not match it (none: nothing to check).
    pub fn ensure_sum_current(&self) -> Result<(), Error> {
        match &self.sum {
            Some(text) => {
                crate::integrity::verify(self, &crate::integrity::sum_path(&self.dir), text)
            }
            None => Ok(()),
        }
    }

    /// A digest of the whole set: changes when any migration is added, removed or edited.
    /// Down files do not count (the CDK construct computes the same digest; a rollback
    /// execution runs the down scripts the ledger kept, not the packaged files).
    pub fn digest(&self) -> String {
        self.digest
            .get_or_init(|| {
                let mut all = String::new();
                for m in &self.migrations {
                    all.push_str(&m.name);
                    all.push(':');
                    all.push_str(&m.checksum);
                    all.push('\n');
                }
                checksum(all.as_bytes())
            })
            .clone()
    }
}

/// Which side of a migration a script is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    Up,
    /// A `.down.sql` file: may be empty; takes only the directives of how it runs.
    Down,
}

/// Checks one script on its own: its header, that PostgreSQL can read it whole, and the
/// statements the runner refuses (transaction control; CONCURRENTLY and the like inside a
/// transaction). Returns its directives.
pub fn validate_script(
    path: &Path,
    sql: &str,
    script: Script,
) -> Result<Directives, Vec<SetProblem>> {
    let directives = parse_directives(sql).map_err(|errs| {
        errs.into_iter()
            .map(|(line, why)| SetProblem::new(path, Some(line), why))
            .collect::<Vec<_>>()
    })?;
    let mut problems = Vec::new();
    if script == Script::Down {
        for (set, what) in [
            (directives.mode == Mode::Batch, "batch"),
            (directives.irreversible, "irreversible"),
            (directives.runner.is_some(), "runner"),
            (directives.after_deploy, "after-deploy"),
            (!directives.requires.is_empty(), "requires"),
            (!directives.conflicts.is_empty(), "conflicts"),
        ] {
            if set {
                problems.push(SetProblem::new(
                    path,
                    None,
                    format!("`{what}` belongs in the migration's own file, not in its down file"),
                ));
            }
        }
    }
    let sql::Lexed {
        statements,
        unterminated,
        placeholders,
    } = sql::lex(sql);
    if let Some(open) = unterminated {
        problems.push(SetProblem::new(
            path,
            Some(open.line),
            format!(
                "unterminated {} starting here: PostgreSQL would refuse the file",
                open.what
            ),
        ));
        return Err(problems);
    }
    if statements.is_empty() && script == Script::Up {
        problems.push(SetProblem::new(
            path,
            None,
            "the migration is empty: it holds no SQL statement".into(),
        ));
    }
    if directives.mode == Mode::Batch {
        problems.extend(batch_problems(path, &statements, &placeholders));
    } else if let Some(&at) = placeholders.first() {
        problems.push(SetProblem::new(
            path,
            Some(sql::line_of_byte(sql, at)),
            format!("`{}` is a batch migration's placeholder, but this is not a batch migration: add the header line `-- {DIRECTIVE_PREFIX} batch`", sql::BATCH_SIZE_PLACEHOLDER),
        ));
    }
    for s in &statements {
        if sql::is_transaction_control(&s.keywords) {
            // Inside the runner's transaction it breaks atomicity; outside one it hides
            // a half-done migration from the dirty tracking.
            let remedy = if directives.mode == Mode::NoTransaction {
                "a script that runs outside a transaction runs each statement on its own; remove it"
            } else {
                "the runner wraps each script in its own transaction; remove it"
            };
            problems.push(SetProblem::new(
                path,
                Some(s.line),
                format!(
                    "`{}` ends or starts a transaction: {remedy}",
                    s.keywords.join(" ")
                ),
            ));
        } else if let Some(why) = sql::unsupported(s) {
            problems.push(SetProblem::new(
                path,
                Some(s.line),
                format!("`{}`: {why}", s.keywords.join(" ")),
            ));
        } else if directives.mode == Mode::Transactional {
            if let Some(what) = sql::requires_no_transaction(s) {
                problems.push(SetProblem::new(
                    path,
                    Some(s.line),
                    format!("{what} cannot run inside a transaction block: add the header line `-- {DIRECTIVE_PREFIX} no-transaction`"),
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(directives)
    } else {
        Err(problems)
    }
}

/// A batch migration is one data-changing statement that names `:batch_size`: the runner
/// repeats it until it changes no row, so more statements (which of them decides when it
/// is done?) or none of the placeholder (every batch the whole table) cannot work.
fn batch_problems(
    path: &Path,
    statements: &[sql::Statement<'_>],
    placeholders: &[usize],
) -> Vec<SetProblem> {
    let mut problems = Vec::new();
    if let Some(second) = statements.get(1) {
        problems.push(SetProblem::new(
            path,
            Some(second.line),
            format!("a batch migration is one statement, run again until it changes no row; this is statement {} of {}: put other changes in a migration of their own", 2, statements.len()),
        ));
    }
    if let Some(first) = statements.first() {
        let verb = first.main_verb.as_deref().unwrap_or_default();
        if !matches!(verb, "UPDATE" | "DELETE" | "INSERT" | "MERGE") {
            problems.push(SetProblem::new(
                path,
                Some(first.line),
                format!("a batch migration's statement changes data, and the count of rows it changed is what ends it (UPDATE, DELETE, INSERT or MERGE, also after WITH; e.g. `UPDATE t SET c = ... WHERE id IN (SELECT id FROM t WHERE c IS NULL ORDER BY id LIMIT {})`); `{verb}` does not", sql::BATCH_SIZE_PLACEHOLDER),
            ));
        }
        if placeholders.is_empty() {
            problems.push(SetProblem::new(
                path,
                Some(first.line),
                format!("a batch migration must limit each batch with `{}` (e.g. `... LIMIT {}`): without it one batch is the whole table", sql::BATCH_SIZE_PLACEHOLDER, sql::BATCH_SIZE_PLACEHOLDER),
            ));
        }
    }
    problems
}

/// The set-wide rules of the header: `irreversible` with a down file contradicts itself; a
/// requirement exists and sorts earlier (Sqitch's rule: the order of the set is the order
/// they apply in); a conflict names another migration of the set.
fn check_dependencies(
    migrations: &[Migration],
    numbered: &BTreeMap<u64, PathBuf>,
    problems: &mut Vec<SetProblem>,
) {
    let find = |v: &Version| {
        migrations
            .binary_search_by_key(&v.number(), |m| m.version.number())
            .ok()
            .map(|i| &migrations[i])
    };
    for m in migrations {
        if m.directives.irreversible {
            if let Some(down) = &m.down {
                problems.push(SetProblem::new(
                    &m.path,
                    None,
                    format!(
                        "says `irreversible` but has a down file {}: remove one of them",
                        display_name(&down.path)
                    ),
                ));
            }
        }
        for required in &m.directives.requires {
            match find(required) {
                // Its file is there but has problems of its own, reported already.
                None if numbered.contains_key(&required.number()) => {}
                None => problems.push(SetProblem::new(
                    &m.path,
                    None,
                    format!("requires {required}, which is not a migration of the set"),
                )),
                Some(r) if r.version.number() >= m.version.number() => {
                    problems.push(SetProblem::new(
                        &m.path,
                        None,
                        format!(
                            "requires {}, which does not sort before it: a requirement must be an earlier migration",
                            display_name(&r.path)
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        // `conflicts` names a version outside the set: a migration of another branch or
        // release, known to the database only, which must not be applied while this one is.
        // Within one set it is a dead end: every migration of a set is applied, in version
        // order, with no gaps, so two of them that conflict can never both be, and the set
        // could never be brought up to date (rolling one back only makes it pending again).
        let line = directive_line(&m.sql, "conflicts");
        for conflict in &m.directives.conflicts {
            match find(conflict) {
                None => {
                    // Its file is there, with problems of its own (reported already).
                    if let Some(path) = numbered.get(&conflict.number()) {
                        problems.push(SetProblem::new(
                            &m.path,
                            line,
                            in_set_conflict(&display_name(path)),
                        ))
                    }
                }
                Some(c) if c.version.number() == m.version.number() => problems.push(
                    SetProblem::new(&m.path, None, "conflicts with itself".into()),
                ),
                Some(c)
                    if m.directives
                        .requires
                        .iter()
                        .any(|r| r.number() == c.version.number()) =>
                {
                    problems.push(SetProblem::new(
                        &m.path,
                        None,
                        format!("both requires and conflicts with {}", display_name(&c.path)),
                    ))
                }
                Some(c) => problems.push(SetProblem::new(
                    &m.path,
                    line,
                    in_set_conflict(&display_name(&c.path)),
                )),
            }
        }
    }
}

fn in_set_conflict(other: &str) -> String {
    format!(
        "conflicts with {other}, a migration of this set: every migration of a set is applied, in version order, so the two could never both be and the set could never be brought up to date; `conflicts` is for a version outside the set (another branch's or release's migration, known to the database only): remove the directive, or {other} from the set"
    )
}

/// The line (1-based) of a script's header directive `key`, for messages.
fn directive_line(sql: &str, key: &str) -> Option<usize> {
    sql.lines()
        .position(|l| {
            let l = l.trim_start();
            l.starts_with("--")
                && l.split_once("stepmigrate:").is_some_and(|(_, body)| {
                    body.trim_start().to_ascii_lowercase().starts_with(key)
                })
        })
        .map(|i| i + 1)
}

fn directory_problem(path: &Path) -> SetProblem {
    SetProblem::new(
        path,
        None,
        "a directory named like a migration: migrations are files (the directory is not searched recursively)".into(),
    )
}

/// Reads the files on two threads: a no-op run over a thousand migrations is mostly this.
fn read_all(paths: Vec<PathBuf>) -> (Vec<SourceFile>, Vec<SetProblem>) {
    fn read(path: PathBuf) -> Result<SourceFile, SetProblem> {
        use std::io::Read;
        let mut bytes = Vec::with_capacity(4096);
        std::fs::File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| SetProblem::new(&path, None, format!("cannot read the file: {e}")))?;
        Ok(SourceFile { path, bytes })
    }
    let half = paths.len() / 2;
    let mut second = paths;
    let first: Vec<PathBuf> = second.drain(..half).collect();
    let (a, b) = std::thread::scope(|s| {
        let other = s.spawn(|| first.into_iter().map(read).collect::<Vec<_>>());
        let mine: Vec<_> = second.into_iter().map(read).collect();
        (other.join().unwrap_or_default(), mine)
    });
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for r in a.into_iter().chain(b) {
        match r {
            Ok(f) => files.push(f),
            Err(p) => problems.push(p),
        }
    }
    (files, problems)
}

/// Writes the next-numbered migration file for `description` (snake_case) in `dir`, holding
/// only a header comment: an empty migration is rejected until its SQL is written.
pub fn create_next(dir: &Path, description: &str) -> Result<PathBuf, Error> {
    let set = if dir.exists() {
        MigrationSet::load(dir)?
    } else {
        MigrationSet::default()
    };
    let (next, width) = set.migrations().last().map_or((1, 3), |m| {
        (m.version.number() + 1, m.version.as_str().len().max(3))
    });
    let name = format!("{next:0width$}_{description}");
    // `x.down` would make `002_x.down.sql`: a down file with no migration.
    match parse_file_name(&format!("{name}.sql")) {
        Ok((_, false)) => {}
        Ok((_, true)) => {
            return Err(Error::InvalidInput(format!(
                "description `{description}`: `.down` would make a down file with no migration; give the migration's own description, then write its down file beside it"
            )))
        }
        Err(why) => {
            return Err(Error::InvalidInput(format!(
                "description `{description}`: {why}"
            )))
        }
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::InvalidInput(format!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join(format!("{name}.sql"));
    let header = format!(
        "-- Migration: {}\n-- Date: {}\n--\n-- Header directives, if needed:\n--   -- {DIRECTIVE_PREFIX} no-transaction   (for CREATE INDEX CONCURRENTLY)\n--   -- {DIRECTIVE_PREFIX} lock_timeout = 10s\n--   -- {DIRECTIVE_PREFIX} requires = 003, 005   (migrations this one needs)\n--   -- {DIRECTIVE_PREFIX} irreversible   (no {name}.down.sql on purpose)\n--\n-- Its rollback goes in {name}.down.sql (an empty one means nothing to undo).\n\n",
        description.replace('_', " "),
        chrono::Utc::now().format("%Y-%m-%d")
    );
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, header.as_bytes()))
        .map_err(|e| Error::InvalidInput(format!("cannot create {}: {e}", path.display())))?;
    Ok(path)
}

fn display_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// `004_add_new_feature.sql` -> (`004_add_new_feature`, false); `.down.sql` -> (.., true).
fn parse_file_name(file_name: &str) -> Result<(String, bool), String> {
    const FORMAT: &str = "expected {version}_{description}.sql: a version of at least three digits, then a snake_case description (lowercase letters, digits, underscores), e.g. 004_add_new_feature.sql";
    let Some(stem) = file_name.strip_suffix(".sql") else {
        return Err(format!("the extension must be a lowercase .sql; {FORMAT}"));
    };
    let (stem, is_down) = match stem.strip_suffix(".down") {
        Some(s) => (s, true),
        None => (stem, false),
    };
    let Some((digits, description)) = stem.split_once('_') else {
        return Err(format!("malformed migration file name; {FORMAT}"));
    };
    if digits.len() < 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("malformed version `{digits}`; {FORMAT}"));
    }
    if Version::parse(digits).is_none() {
        return Err(format!(
            "version `{digits}` is too long (at most 19 digits)"
        ));
    }
    let snake = !description.is_empty()
        && description.split('_').all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    if !snake {
        return Err(format!("malformed description `{description}`; {FORMAT}"));
    }
    Ok((stem.to_owned(), is_down))
}

/// The mode a script's header asks for; transactional when its header is malformed (the
/// loader reports that), which is the runner's default.
pub fn mode_of(sql: &str) -> Mode {
    parse_directives(sql).map(|d| d.mode).unwrap_or_default()
}

/// Reads the directives of the leading comment block: `-- stepmigrate: KEY [= VALUE]` lines.
/// A directive anywhere after the header would be silently ignored, so it is an error too.
fn parse_directives(sql: &str) -> Result<Directives, Vec<(usize, String)>> {
    let mut directives = Directives::default();
    let mut errors = Vec::new();
    let mut in_header = true;
    let mut in_block_comment = false;
    let mut batch_setting_line = None;
    for (index, line) in lines(sql).enumerate() {
        let line_no = index + 1;
        let trimmed = line.trim();
        // `---` is a line comment as `--` is: the dashes after the first two are its text.
        let comment = trimmed
            .strip_prefix("--")
            .map(|c| c.trim_start_matches('-').trim());
        // A block comment in the header is a comment too; a directive is never one.
        let block = in_block_comment || trimmed.starts_with("/*");
        if block {
            let text = trimmed.trim_start_matches("/*").trim_start();
            if in_header && directive_like(text) {
                errors.push((
                    line_no,
                    format!("a directive is a line comment: write it `-- {DIRECTIVE_PREFIX} ...` (in a /* */ comment it would be ignored)"),
                ));
            } else if in_header && trailing_directive(trimmed) {
                errors.push((line_no, DIRECTIVE_NOT_ALONE.to_owned()));
            }
            in_block_comment = !trimmed.ends_with("*/") || (trimmed == "/*");
            continue;
        }
        if in_header && !trimmed.is_empty() && comment.is_none() {
            in_header = false;
            // `SELECT 1; -- stepmigrate: batch`: read as the statement's comment, ignored.
            if trailing_directive(trimmed) {
                errors.push((line_no, DIRECTIVE_NOT_ALONE.to_owned()));
            }
        }
        if let Some(text) = comment.filter(|c| directive_body(c).is_none() && directive_like(c)) {
            errors.push((
                line_no,
                format!("`{text}` looks like a directive but is not one: write `-- {DIRECTIVE_PREFIX} KEY [= VALUE]`"),
            ));
            continue;
        }
        let Some(body) = comment.and_then(directive_body) else {
            continue;
        };
        if !in_header {
            errors.push((
                line_no,
                "directive after the first SQL statement: directives go in the leading comment block".to_owned(),
            ));
            continue;
        }
        let had_batch_setting = directives.batch_size.is_some() || directives.pause.is_some();
        if let Err(why) = apply_directive(&mut directives, body.trim()) {
            errors.push((line_no, why));
        } else if !had_batch_setting
            && (directives.batch_size.is_some() || directives.pause.is_some())
        {
            batch_setting_line.get_or_insert(line_no);
        }
    }
    if let (Some(line), false) = (batch_setting_line, directives.mode == Mode::Batch) {
        errors.push((
            line,
            format!("`batch_size` and `pause` are settings of a batch migration: add the header line `-- {DIRECTIVE_PREFIX} batch`, or remove this one"),
        ));
    }
    if errors.is_empty() {
        Ok(directives)
    } else {
        Err(errors)
    }
}

/// The lines of a text as PostgreSQL counts them: ended by `\n`, `\r\n` or a lone `\r`.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let t = rest?;
        match t.find(['\n', '\r']) {
            Some(i) => {
                let skip = if t[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&t[i + skip..]);
                Some(&t[..i])
            }
            None => {
                rest = None;
                Some(t)
            }
        }
    })
}

/// `stepmigrate: KEY ...` (or `stepmigrate : KEY`, any case) -> `KEY ...`: a directive
/// written a little off must not pass for a plain comment and be silently ignored.
fn directive_body(comment: &str) -> Option<&str> {
    let name = DIRECTIVE_PREFIX.trim_end_matches(':');
    strip_prefix_ignore_case(comment, name)?
        .trim_start()
        .strip_prefix(':')
}

const DIRECTIVE_NOT_ALONE: &str = "a directive is a line of its own: after a /* */ comment or SQL on the same line it would be ignored; put it on a line that starts with `--`";

/// A line that ends with a directive (or what looks like one) after something else: `/*
/// backfill */ -- stepmigrate: after-deploy`.
fn trailing_directive(line: &str) -> bool {
    line.match_indices("--").any(|(at, _)| {
        at > 0 && {
            let text = line[at..].trim_start_matches('-').trim();
            directive_body(text).is_some() || directive_like(text)
        }
    })
}

/// A comment that starts like a directive (`stepmigrates: ...`, `stepmigrate-x: ...`):
/// ignored as a plain comment, its directive would silently not apply.
fn directive_like(comment: &str) -> bool {
    // The first word, as it might be misspelled: `step-migrate`, `stepmigration`.
    let word: String = comment
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    let squashed = word.to_ascii_lowercase().replace(['-', '_'], "");
    if !squashed.starts_with("stepmigrat") {
        return false;
    }
    let rest = comment[word.len()..].trim_start();
    // `stepmigrates: ...`, or a directive's key with the colon forgotten
    // (`stepmigrate requires = 002`).
    let key: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect::<String>()
        .to_ascii_lowercase()
        .replace('_', "-");
    // Any punctuation where the colon goes (`;`, `.`, `=`, a full-width colon) is a
    // misspelled directive, not prose.
    rest.starts_with(|c: char| !c.is_alphanumeric() && !c.is_whitespace())
        || matches!(
            key.as_str(),
            "no-transaction"
                | "batch"
                | "batch-size"
                | "pause"
                | "lock-timeout"
                | "statement-timeout"
                | "requires"
                | "conflicts"
                | "irreversible"
                | "after-deploy"
                | "runner"
        )
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    // `get`: the prefix's length may end inside a character of the text (`-- Миграция`).
    s.get(..prefix.len())
        .filter(|head| head.eq_ignore_ascii_case(prefix))
        .map(|_| &s[prefix.len()..])
}

fn apply_directive(d: &mut Directives, body: &str) -> Result<(), String> {
    let (key, value) = match body.split_once('=') {
        Some((k, v)) => (k.trim(), Some(v.trim())),
        None => (body, None),
    };
    let key = key.to_ascii_lowercase().replace('_', "-");
    let given_twice = match key.as_str() {
        "lock-timeout" => d.lock_timeout.is_some(),
        "statement-timeout" => d.statement_timeout.is_some(),
        "no-transaction" => d.mode == Mode::NoTransaction,
        "batch" => d.mode == Mode::Batch,
        "batch-size" => d.batch_size.is_some(),
        "pause" => d.pause.is_some(),
        "irreversible" => d.irreversible,
        "runner" => d.runner.is_some(),
        "after-deploy" => d.after_deploy,
        "requires" => !d.requires.is_empty(),
        "conflicts" => !d.conflicts.is_empty(),
        _ => false,
    };
    if given_twice {
        return Err(format!(
            "{key} is given twice: one of them would be silently ignored{}",
            if matches!(key.as_str(), "requires" | "conflicts") {
                " (list every version on one line: `requires = 012, 015`)"
            } else {
                ""
            }
        ));
    }
    let mode_taken = |d: &Directives, wanted: Mode| {
        if d.mode != Mode::Transactional && d.mode != wanted {
            Err(
                "`batch` and `no-transaction` exclude each other: a batch migration runs each batch in a transaction of its own"
                    .to_owned(),
            )
        } else {
            Ok(())
        }
    };
    match (key.as_str(), value) {
        ("no-transaction", None) => {
            mode_taken(d, Mode::NoTransaction)?;
            d.mode = Mode::NoTransaction
        }
        ("batch", None) => {
            mode_taken(d, Mode::Batch)?;
            d.mode = Mode::Batch
        }
        ("batch-size", Some(v)) => {
            let n: u64 = v.replace('_', "").parse().map_err(|_| {
                format!("batch_size: `{v}` is not a number of rows, e.g. `batch_size = 10000`")
            })?;
            if !(1..=MAX_BATCH_SIZE).contains(&n) {
                return Err(format!("batch_size: {n} is out of range (1 to {MAX_BATCH_SIZE})"));
            }
            d.batch_size = Some(n)
        }
        ("pause", Some(v)) => d.pause = Some(crate::config::parse_duration(v).map_err(|e| format!("pause: {e}"))?),
        ("irreversible", None) => d.irreversible = true,
        ("after-deploy", None) => d.after_deploy = true,
        ("runner", Some(v)) => {
            d.runner = Some(match v.to_ascii_lowercase().as_str() {
                "task" => Runner::Task,
                "lambda" => Runner::Lambda,
                _ => return Err(format!("runner: `{v}` is not a runner: use `runner = task` (an ECS task, no time limit) or `runner = lambda`")),
            })
        }
        ("lock-timeout", Some(v)) => d.lock_timeout = Some(crate::config::parse_duration(v).map_err(|e| format!("lock_timeout: {e}"))?),
        ("statement-timeout", Some(v)) => {
            d.statement_timeout = Some(crate::config::parse_duration(v).map_err(|e| format!("statement_timeout: {e}"))?)
        }
        ("requires", Some(v)) => d.requires = version_list(&key, v)?,
        ("conflicts", Some(v)) => d.conflicts = version_list(&key, v)?,
        ("no-transaction" | "irreversible" | "batch" | "after-deploy", Some(_)) => return Err(format!("{key} takes no value")),
        ("lock-timeout" | "statement-timeout" | "pause", None) => return Err(format!("{key} needs a value, e.g. `{key} = 10s`")),
        ("runner", None) => return Err("runner needs a value: `runner = task` or `runner = lambda`".into()),
        ("batch-size", None) => return Err("batch_size needs a number of rows, e.g. `batch_size = 10000`".into()),
        ("requires" | "conflicts", None) => return Err(format!("{key} needs versions, e.g. `{key} = 012, 015`")),
        _ => {
            return Err(format!(
                "unknown directive `{body}`; known: `no-transaction`, `lock_timeout = DURATION`, `statement_timeout = DURATION`, `irreversible`, `requires = VERSION, ...`, `conflicts = VERSION, ...`, `batch`, `batch_size = ROWS`, `pause = DURATION`, `runner = task|lambda`, `after-deploy`"
            ))
        }
    }
    Ok(())
}

/// `012, 015` (commas, spaces or both between versions).
fn version_list(key: &str, value: &str) -> Result<Vec<Version>, String> {
    let mut versions: Vec<Version> = Vec::new();
    for item in value.split([',', ' ', '\t']).filter(|i| !i.is_empty()) {
        let v = Version::parse(item).ok_or_else(|| {
            format!("{key}: `{item}` is not a version (decimal digits, e.g. 012)")
        })?;
        if versions.iter().any(|x| x.number() == v.number()) {
            return Err(format!("{key}: {item} is listed twice"));
        }
        versions.push(v);
    }
    if versions.is_empty() {
        return Err(format!("{key} needs versions, e.g. `{key} = 012, 015`"));
    }
    Ok(versions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, sql: &str) -> SourceFile {
        SourceFile {
            path: PathBuf::from("m").join(name),
            bytes: sql.as_bytes().to_vec(),
        }
    }

    fn problems(files: Vec<SourceFile>) -> Vec<String> {
        match MigrationSet::from_files(Path::new("m"), files) {
            Ok(_) => vec![],
            Err(Error::InvalidMigrationSet { problems, .. }) => {
                problems.iter().map(|p| p.to_string()).collect()
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn loads_in_numeric_order_with_checksums() {
        let set = MigrationSet::from_files(
            Path::new("m"),
            vec![
                file("010_ten.sql", "SELECT 10"),
                file("002_two.sql", "SELECT 2"),
                file("001_one.sql", "SELECT 1"),
            ]
            .into_iter()
            .chain((3..=9).map(|v| file(&format!("{v:03}_n.sql"), "SELECT 1")))
            .collect(),
        )
        .unwrap();
        let versions: Vec<u64> = set
            .migrations()
            .iter()
            .map(|m| m.version.number())
            .collect();
        assert_eq!(versions, (1..=10).collect::<Vec<_>>());
        assert_eq!(set.migrations()[0].name, "001_one");
        assert_eq!(set.migrations()[0].checksum, checksum(b"SELECT 1"));
        assert_eq!(
            checksum(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn reports_every_problem_at_once_naming_files() {
        let p = problems(vec![
            file("001_ok.sql", "SELECT 1"),
            file("002_Bad-Name.sql", "SELECT 1"),
            file("02_short.sql", "SELECT 1"),
            file("003_a.sql", "SELECT 1"),
            file("0003_b.sql", "SELECT 1"),
            file("000_mine.sql", "SELECT 1"),
            file("004_empty.sql", "-- nothing here\n"),
            file("005_directive.sql", "-- stepmigrate: fast-please\nSELECT 1"),
            SourceFile {
                path: "m/006_latin1.sql".into(),
                bytes: b"SELECT '\xe9'".to_vec(),
            },
            file("008_after_gap.sql", "SELECT 1"),
            file("009_x.SQL", "SELECT 1"),
        ]);
        let joined = p.join("\n");
        for needle in [
            "002_Bad-Name.sql: malformed description",
            "02_short.sql: malformed version",
            "0003_b.sql: duplicate version 3",
            "003_a.sql: duplicate version 3",
            "000_mine.sql: version 000 is reserved",
            "004_empty.sql: the migration is empty",
            "005_directive.sql:1: unknown directive `fast-please`",
            "006_latin1.sql:1: the file is not valid UTF-8",
            "008_after_gap.sql: gap in the sequence: version 7 is missing",
            "009_x.SQL: the extension must be a lowercase .sql",
        ] {
            assert!(joined.contains(needle), "missing {needle:?} in:\n{joined}");
        }
    }

    #[test]
    fn directives_are_read_from_the_header() {
        let set = MigrationSet::from_files(
            Path::new("m"),
            vec![file(
                "001_index.sql",
                "-- Migration: index\n-- stepmigrate: no-transaction\n--stepmigrate:lock_timeout = 10s\n-- stepmigrate: statement_timeout=2min\n\nCREATE INDEX CONCURRENTLY i ON t (x);",
            )],
        )
        .unwrap();
        let d = &set.migrations()[0].directives;
        assert_eq!(d.mode, Mode::NoTransaction);
        assert_eq!(d.lock_timeout, Some(Duration::from_secs(10)));
        assert_eq!(d.statement_timeout, Some(Duration::from_secs(120)));
    }

    #[test]
    fn a_directive_written_a_little_off_is_read_or_refused_never_ignored() {
        let set = MigrationSet::from_files(
            Path::new("m"),
            vec![
                file("001_a.sql", "CREATE TABLE a (id int);"),
                file(
                    "002_b.sql",
                    "/* the backfill,\n   after the deploy */\n--- stepmigrate: after-deploy\n---stepmigrate: requires = 001\nUPDATE a SET id = id;",
                ),
            ],
        )
        .unwrap();
        let d = &set.migrations()[1].directives;
        assert!(d.after_deploy);
        assert_eq!(d.requires.len(), 1);
        for (sql, line, words) in [
            (
                "/* stepmigrate: after-deploy */\nSELECT 1;",
                1,
                "a directive is a line comment",
            ),
            (
                "-- stepmigrates: after-deploy\nSELECT 1;",
                1,
                "looks like a directive",
            ),
            (
                "-- x\n-- StepMigrate-x: batch\nSELECT 1;",
                2,
                "looks like a directive",
            ),
            (
                "-- stepmigrate requires = 002\nSELECT 1;",
                1,
                "looks like a directive",
            ),
            (
                "-- step-migrate: requires = 002\nSELECT 1;",
                1,
                "looks like a directive",
            ),
            (
                "-- stepmigration: after-deploy\nSELECT 1;",
                1,
                "looks like a directive",
            ),
            (
                "-- stepmigrate; requires = 009\nSELECT 1;",
                1,
                "looks like a directive",
            ),
            (
                "-- stepmigrate\u{ff1a} after-deploy\nSELECT 1;",
                1,
                "looks like a directive",
            ),
            (
                "/* stepmigrate requires = 002 */\nSELECT 1;",
                1,
                "a directive is a line comment",
            ),
            (
                "/* backfill */ -- stepmigrate: after-deploy\nSELECT 1;",
                1,
                "a directive is a line of its own",
            ),
            (
                "-- x\nSELECT 1; -- stepmigrate: batch\n",
                2,
                "a directive is a line of its own",
            ),
        ] {
            let Err(Error::InvalidMigrationSet { problems, .. }) =
                MigrationSet::from_files(Path::new("m"), vec![file("001_a.sql", sql)])
            else {
                panic!("{sql} was accepted");
            };
            assert_eq!(problems[0].line, Some(line), "{sql}: {problems:?}");
            assert!(problems[0].message.contains(words), "{sql}: {problems:?}");
        }
        // Comments in any script: a prefix's length may end inside one of their characters.
        for sql in [
            "-- Миграция: таблица\nCREATE TABLE t (id int);",
            "-- 日本語のコメント\nCREATE TABLE t (id int);",
            "-- stepmigrate: irreversible\n-- Добавить таблицу\n/* Миграция */ CREATE TABLE t (id int); -- ок",
        ] {
            MigrationSet::from_files(Path::new("m"), vec![file("001_a.sql", sql)])
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        // A comment that merely names the tool is a comment.
        MigrationSet::from_files(
            Path::new("m"),
            vec![file("001_a.sql", "-- stepmigrate is our runner\nSELECT 1;")],
        )
        .unwrap();
    }

    #[test]
    fn the_runner_is_the_directive_or_else_the_statement_timeout() {
        let files = vec![
            file("001_a.sql", "-- stepmigrate: runner = task\nCREATE TABLE a (id int);"),
            file("002_b.sql", "-- stepmigrate: statement_timeout = 2h\nCREATE TABLE b (id int);"),
            file("003_c.sql", "-- stepmigrate: statement_timeout = 0\nCREATE TABLE c (id int);"),
            file("004_d.sql", "-- stepmigrate: statement_timeout = 5min\nCREATE TABLE d (id int);"),
            file(
                "005_e.sql",
                "-- stepmigrate: runner = LAMBDA\n-- stepmigrate: statement_timeout = 2h\nCREATE TABLE e (id int);",
            ),
            file("006_f.sql", "CREATE TABLE f (id int);"),
        ];
        let set = MigrationSet::from_files(Path::new("m"), files).unwrap();
        let limit = Duration::from_secs(600);
        let tasks: Vec<bool> = set
            .migrations()
            .iter()
            .map(|m| m.runs_as_task(limit))
            .collect();
        assert_eq!(tasks, [true, true, true, false, false, false]);

        for (header, why) in [
            ("runner = fargate", "runner: `fargate` is not a runner"),
            ("runner", "runner needs a value"),
        ] {
            let p = problems(vec![file(
                "001_a.sql",
                &format!("-- stepmigrate: {header}\nSELECT 1;"),
            )]);
            assert!(p.iter().any(|x| x.contains(why)), "{header}: {p:?}");
        }
        let p = problems(vec![
            file("001_a.sql", "SELECT 1;"),
            file("001_a.down.sql", "-- stepmigrate: runner = task\nSELECT 1;"),
        ]);
        assert!(
            p.iter()
                .any(|x| x.contains("`runner` belongs in the migration's own file")),
            "{p:?}"
        );
    }

    #[test]
    fn after_deploy_is_a_flag_of_the_migrations_own_file() {
        let set = MigrationSet::from_files(
            Path::new("m"),
            vec![
                file(
                    "001_a.sql",
                    "-- stepmigrate: after-deploy\nCREATE TABLE a (id int);",
                ),
                file("002_b.sql", "-- stepmigrate: AFTER_DEPLOY\nSELECT 1;"),
                file("003_c.sql", "SELECT 1;"),
            ],
        )
        .unwrap();
        let flags: Vec<bool> = set
            .migrations()
            .iter()
            .map(|m| m.directives.after_deploy)
            .collect();
        assert_eq!(flags, [true, true, false]);
        let chained = MigrationSet::from_files(
            Path::new("m"),
            vec![
                file("001_a.sql", "CREATE TABLE a (id int);"),
                file("002_fill.sql", "-- stepmigrate: after-deploy\nSELECT 1;"),
                file("003_needs.sql", "-- stepmigrate: requires = 002\nSELECT 1;"),
                file("004_b.sql", "SELECT 1;"),
            ],
        )
        .unwrap();
        let v = |s: &str| Version::parse(s).unwrap();
        let predecessor = |s: &str| chained.predecessor(&v(s)).map(|m| m.name.as_str());
        // The guard's predecessor passes over what a deploy's run leaves pending.
        assert_eq!(predecessor("004"), Some("001_a"));
        assert_eq!(predecessor("003"), Some("001_a"));
        assert_eq!(predecessor("002"), Some("001_a"));
        assert_eq!(predecessor("001"), None);
        let p = problems(vec![
            file("001_a.sql", "-- stepmigrate: after-deploy = yes\nSELECT 1;"),
            file(
                "002_b.sql",
                "-- stepmigrate: after-deploy\n-- stepmigrate: after-deploy\nSELECT 1;",
            ),
            file("003_c.sql", "SELECT 1;"),
            file("003_c.down.sql", "-- stepmigrate: after-deploy\nSELECT 1;"),
        ])
        .join("\n");
        for why in [
            "001_a.sql:1: after-deploy takes no value",
            "002_b.sql:2: after-deploy is given twice",
            "003_c.down.sql: `after-deploy` belongs in the migration's own file",
        ] {
            assert!(p.contains(why), "{why}: {p}");
        }
    }

    #[test]
    fn a_directive_given_twice_is_refused() {
        let p = problems(vec![file(
            "001_a.sql",
            "-- stepmigrate: lock_timeout = 2s\n-- stepmigrate: lock_timeout = 20s\nSELECT 1;",
        )])
        .join("\n");
        assert!(
            p.contains("001_a.sql:2: lock-timeout is given twice"),
            "{p}"
        );
    }

    #[test]
    fn statements_that_break_the_transaction_are_rejected() {
        let p = problems(vec![
            file(
                "001_a.sql",
                "CREATE TABLE t (x int);\nCREATE INDEX CONCURRENTLY i ON t (x);",
            ),
            file("002_b.sql", "BEGIN;\nCREATE TABLE u (x int);\nCOMMIT;"),
            file(
                "003_c.sql",
                "CREATE TABLE v (x int);\n-- stepmigrate: no-transaction\n",
            ),
        ])
        .join("\n");
        assert!(p.contains("001_a.sql:2: an index built or dropped CONCURRENTLY cannot run inside a transaction block"), "{p}");
        assert!(
            p.contains("002_b.sql:1: `BEGIN` ends or starts a transaction"),
            "{p}"
        );
        assert!(p.contains("002_b.sql:3: `COMMIT`"), "{p}");
        assert!(
            p.contains("003_c.sql:2: directive after the first SQL statement"),
            "{p}"
        );
    }

    #[test]
    fn down_migrations_pair_with_their_migration() {
        let set = MigrationSet::from_files(
            Path::new("m"),
            vec![
                file("001_a.sql", "CREATE TABLE a (x int)"),
                file("001_a.down.sql", "DROP TABLE a"),
            ],
        )
        .unwrap();
        assert_eq!(set.migrations().len(), 1);
        assert_eq!(
            set.migrations()[0].down.as_ref().unwrap().sql,
            "DROP TABLE a"
        );
        let p = problems(vec![
            file("001_a.sql", "SELECT 1"),
            file("001_b.down.sql", "SELECT 1"),
            file("002_c.down.sql", "SELECT 1"),
        ])
        .join("\n");
        assert!(
            p.contains("001_b.down.sql: the down migration's name does not match"),
            "{p}"
        );
        assert!(
            p.contains("002_c.down.sql: down migration without a migration 002_c.sql"),
            "{p}"
        );
    }

    #[test]
    fn dependencies_and_down_files_are_validated_naming_both_files() {
        let set = MigrationSet::from_files(
            Path::new("m"),
            vec![
                file("001_a.sql", "CREATE TABLE a (x int);"),
                file("002_b.sql", "-- stepmigrate: requires = 001\n-- stepmigrate: conflicts=9\nCREATE TABLE b (x int);"),
                file("003_c.sql", "-- stepmigrate: irreversible\nDROP TABLE a;"),
                file("001_a.down.sql", "-- stepmigrate: no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS i;"),
            ],
        )
        .unwrap();
        let b = &set.migrations()[1].directives;
        assert_eq!(b.requires[0].as_str(), "001");
        assert_eq!(b.conflicts[0].number(), 9);
        assert!(set.migrations()[2].directives.irreversible);
        assert_eq!(
            set.migrations()[0].down.as_ref().unwrap().directives.mode,
            Mode::NoTransaction
        );

        let p = problems(vec![
            file(
                "001_a.sql",
                "-- stepmigrate: requires = 004, 002\nSELECT 1;",
            ),
            file("002_b.sql", "-- stepmigrate: requires = 009, x\nSELECT 1;"),
            file("003_c.sql", "-- stepmigrate: conflicts = 003\nSELECT 1;"),
            file(
                "007_g.sql",
                "-- x\n-- stepmigrate: conflicts = 001, 012\nSELECT 1;",
            ),
            file("004_d.sql", "-- stepmigrate: irreversible\nSELECT 1;"),
            file("004_d.down.sql", "SELECT 1;"),
            file(
                "005_e.sql",
                "-- stepmigrate: requires = 001\n-- stepmigrate: requires = 002\nSELECT 1;",
            ),
            file(
                "005_e.down.sql",
                "-- stepmigrate: requires = 001\nDROP INDEX CONCURRENTLY i;\nBEGIN;",
            ),
            file(
                "006_f.sql",
                "-- stepmigrate: requires\n-- stepmigrate: irreversible = yes\nSELECT 1;",
            ),
        ])
        .join("\n");
        for needle in [
            "001_a.sql: requires 004_d.sql, which does not sort before it",
            "002_b.sql:1: requires: `x` is not a version",
            "003_c.sql: conflicts with itself",
            "007_g.sql:2: conflicts with 001_a.sql, a migration of this set",
            "004_d.sql: says `irreversible` but has a down file 004_d.down.sql",
            "005_e.sql:2: requires is given twice",
            "005_e.down.sql: `requires` belongs in the migration's own file",
            "005_e.down.sql:2: an index built or dropped CONCURRENTLY cannot run inside a transaction block",
            "005_e.down.sql:3: `BEGIN` ends or starts a transaction",
            "006_f.sql:1: requires needs versions",
            "006_f.sql:2: irreversible takes no value",
        ] {
            assert!(p.contains(needle), "missing {needle:?} in:\n{p}");
        }
    }

    #[test]
    fn line_ending_changes_are_recognised() {
        let lf = b"CREATE TABLE a (x int);\nSELECT 1;\n";
        let crlf = b"CREATE TABLE a (x int);\r\nSELECT 1;\r\n";
        let bom = b"\xEF\xBB\xBFCREATE TABLE a (x int);\nSELECT 1;\n";
        assert!(differs_only_in_line_endings(crlf, &checksum(lf)));
        assert!(differs_only_in_line_endings(lf, &checksum(crlf)));
        assert!(differs_only_in_line_endings(bom, &checksum(lf)));
        let cr = b"CREATE TABLE a (x int);\rSELECT 1;\r";
        assert!(differs_only_in_line_endings(cr, &checksum(lf)));
        assert!(differs_only_in_line_endings(lf, &checksum(cr)));
        assert!(!differs_only_in_line_endings(
            b"CREATE TABLE a (x bigint);\nSELECT 1;\n",
            &checksum(lf)
        ));
    }
}
