//! What a branch changes in the migrations directory, compared with a base git ref: added,
//! edited, deleted and renamed migrations, and the findings they deserve (an edit to a
//! migration that exists on the base is drift in the making; a new version that sorts below
//! the base's newest applies out of order).
//!
//! The base's files come from git (`git ls-tree` and one `git cat-file --batch` for all their
//! contents) and go through the same loader as the working tree's
//! ([`MigrationSet::from_files`]), so both sides follow the same rules.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;
use stepmigrate_core::error::{lossy_path, SetProblem};
use stepmigrate_core::migration::{
    differs_only_in_line_endings, MigrationSet, SourceFile, Version,
};
use stepmigrate_core::Error;

use super::report::FindingSeverity;

/// Why the comparison could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ChangesError {
    #[error("{}: not inside a git repository ({message})", dir.display())]
    NotARepository { dir: PathBuf, message: String },
    #[error("the base ref `{base}` does not exist in this repository; fetch it first (in GitHub Actions: actions/checkout with `fetch-depth: 0`, then `--base origin/BRANCH`)")]
    UnknownRef { base: String },
    #[error("the migrations directory {} is outside the git repository at {}", dir.display(), repo.display())]
    OutsideRepository { dir: PathBuf, repo: PathBuf },
    #[error("`git {args}` failed: {message}")]
    Git { args: String, message: String },
    /// The base's files break the loader's rules (then the base itself was broken).
    #[error("invalid migration set on the base `{base}`:\n{}", problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    InvalidBase {
        base: String,
        problems: Vec<SetProblem>,
    },
    /// The working tree's set is invalid: the loader's own error.
    #[error(transparent)]
    WorkingTree(Error),
}

impl From<ChangesError> for Error {
    fn from(e: ChangesError) -> Error {
        match e {
            ChangesError::WorkingTree(e) => e,
            ChangesError::InvalidBase { base, problems } => Error::InvalidMigrationSet {
                dir: PathBuf::from(format!("{base} (the base)")),
                problems,
            },
            // A ref, a directory or git itself: what the caller asked for cannot be done.
            other => Error::InvalidInput(other.to_string()),
        }
    }
}

/// A migration of one side, as the comparison names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationRef {
    pub version: Version,
    pub name: String,
    /// The path relative to the repository's root, `/`-separated, as a pull request shows it.
    pub file: String,
    pub checksum: String,
}

/// A new migration of the branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddedMigration {
    #[serde(flatten)]
    pub migration: MigrationRef,
    /// Its path on disk (what `verify` and the lint read).
    #[serde(serialize_with = "lossy_path")]
    pub path: PathBuf,
    pub transactional: bool,
}

/// A version that exists on the base with other content (under any name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EditedMigration {
    #[serde(flatten)]
    pub migration: MigrationRef,
    /// The name of the base's migration of this version (it may differ).
    pub base_name: String,
    pub base_checksum: String,
    /// Only line endings or a byte-order mark changed: the runner warns, it is not drift.
    pub line_endings_only: bool,
}

/// A migration moved to another file with the same content: a rename (same version) or a
/// renumbering (another version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenamedMigration {
    pub from: MigrationRef,
    pub to: MigrationRef,
}

/// What a change means for the databases the base was applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeFindingKind {
    /// An edited migration that exists on the base: drift wherever the base was applied.
    Edited,
    /// Only line endings changed: a warning at apply time, not drift.
    LineEndings,
    /// A migration of the base is gone: where it was applied it becomes unknown-applied.
    Deleted,
    /// Same version and content under another name: where it was applied, the ledger keeps
    /// the old name.
    Renamed,
    /// Same content under another version: where the base was applied the old version is
    /// unknown-applied and the new one would run the same SQL again.
    Renumbered,
    /// A new version at or below the base's newest: where the base was applied, it would
    /// run after newer migrations (or collide with the base's version).
    OutOfOrder,
    /// The down file of a migration of the base was added, changed or deleted.
    DownChanged,
    /// A new migration that the deploy's run (`--skip-after-deploy`) applies before a new
    /// after-deploy one that comes first in version order (the preview runs them in that).
    DeployOrder,
}

/// One finding about the change itself (not about a migration's SQL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangeFinding {
    pub kind: ChangeFindingKind,
    pub severity: FindingSeverity,
    pub version: Version,
    pub name: String,
    pub file: String,
    pub message: String,
}

/// Everything a branch changes in the migrations directory, in version order everywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigrationChanges {
    /// The base ref as given, e.g. `origin/main`.
    pub base: String,
    /// The commit it names.
    pub base_commit: String,
    /// The migrations directory, relative to the repository's root.
    pub dir: String,
    /// The newest version on the base.
    pub base_newest: Option<Version>,
    pub added: Vec<AddedMigration>,
    pub edited: Vec<EditedMigration>,
    pub deleted: Vec<MigrationRef>,
    /// Only the description changed (same version, same content): a warning.
    pub renamed: Vec<RenamedMigration>,
    /// The same content under another version: an error, its SQL would run again.
    pub renumbered: Vec<RenamedMigration>,
    /// Migrations the same on both sides.
    pub unchanged: usize,
    pub findings: Vec<ChangeFinding>,
}

impl MigrationChanges {
    /// Whether anything in the directory changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.edited.is_empty()
            && self.deleted.is_empty()
            && self.renamed.is_empty()
            && self.renumbered.is_empty()
            && self.findings.is_empty()
    }
}

/// Compares the migrations of `base` (a ref or commit of the repository holding
/// `migrations_dir`) with the working tree's set in `migrations_dir`.
pub fn migration_changes(
    migrations_dir: &Path,
    base: &str,
) -> Result<MigrationChanges, ChangesError> {
    sides(migrations_dir, base).map(|s| s.changes)
}

/// Both sides of the comparison, and the comparison.
#[derive(Debug, Clone)]
pub struct Sides {
    pub changes: MigrationChanges,
    /// The base's migration set, read from git (paths as if in the working tree).
    pub base: MigrationSet,
    pub working: MigrationSet,
}

/// [`migration_changes`], keeping the two sets it compared: the preview applies the base's.
#[tracing::instrument(level = "debug", skip_all, fields(base = base))]
pub fn sides(migrations_dir: &Path, base: &str) -> Result<Sides, ChangesError> {
    let working = MigrationSet::load(migrations_dir).map_err(ChangesError::WorkingTree)?;
    let dir_abs = std::fs::canonicalize(migrations_dir).map_err(|e| {
        ChangesError::WorkingTree(Error::InvalidMigrationSet {
            dir: migrations_dir.to_owned(),
            problems: vec![SetProblem::new(
                migrations_dir,
                None,
                format!("cannot read the migrations directory: {e}"),
            )],
        })
    })?;
    let repo = git(&dir_abs, &["rev-parse", "--show-toplevel"]).map_err(|e| match e {
        ChangesError::Git { message, .. } => ChangesError::NotARepository {
            dir: dir_abs.clone(),
            message,
        },
        other => other,
    })?;
    let repo = std::fs::canonicalize(String::from_utf8_lossy(&repo).trim())
        .unwrap_or_else(|_| PathBuf::from(String::from_utf8_lossy(&repo).trim()));
    let rel = dir_abs
        .strip_prefix(&repo)
        .map_err(|_| ChangesError::OutsideRepository {
            dir: dir_abs.clone(),
            repo: repo.clone(),
        })?;
    let rel: String = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/");

    if base.starts_with('-') {
        // git would read it as an option.
        return Err(ChangesError::UnknownRef {
            base: base.to_owned(),
        });
    }
    let commit = git(
        &repo,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{base}^{{commit}}"),
        ],
    )
    .map_err(|_| ChangesError::UnknownRef {
        base: base.to_owned(),
    })?;
    let commit = String::from_utf8_lossy(&commit).trim().to_owned();
    // A pull request that moves the directory (and points `migrations_dir` or the flag at
    // its new place) compares with where the base kept them: read there, an edit of an
    // applied migration is still an edit, not an addition to an empty base.
    let base_rel = if is_tree(&repo, &commit, &rel) {
        rel.clone()
    } else {
        moved_from(&repo, &commit, &working)?.unwrap_or_else(|| rel.clone())
    };
    let base_files = base_files(&repo, &commit, base, &base_rel, migrations_dir)?;
    let base_set = MigrationSet::from_files(migrations_dir, base_files).map_err(|e| match e {
        Error::InvalidMigrationSet { problems, .. } => ChangesError::InvalidBase {
            base: base.to_owned(),
            problems,
        },
        other => ChangesError::WorkingTree(other),
    })?;
    Ok(Sides {
        changes: compare(base, &commit, &rel, &base_set, &working),
        base: base_set,
        working,
    })
}

/// Whether `rel` (the repository's root when empty) is a directory at `commit`.
fn is_tree(repo: &Path, commit: &str, rel: &str) -> bool {
    let spec = if rel.is_empty() {
        commit.to_owned()
    } else {
        format!("{commit}:{rel}")
    };
    git(repo, &["cat-file", "-t", &spec])
        .is_ok_and(|kind| String::from_utf8_lossy(&kind).trim() == "tree")
}

/// The directory the working tree's migrations were moved (or copied) from since `commit`,
/// if they were: where most of the `.sql` files deleted since then carry a version of the
/// working set, else where the base's project file kept them when the change points one at
/// a new directory. `None` when nothing was moved (a base without migrations, or a new set
/// of its own beside the base's).
fn moved_from(
    repo: &Path,
    commit: &str,
    working: &MigrationSet,
) -> Result<Option<String>, ChangesError> {
    let versions: std::collections::BTreeSet<u64> = working
        .migrations()
        .iter()
        .map(|m| m.version.number())
        .collect();
    let listing = git(
        repo,
        &["diff", "--name-status", "--no-renames", "-z", commit, "--"],
    )?;
    let fields: Vec<String> = listing
        .split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    let mut moved: BTreeMap<String, usize> = BTreeMap::new();
    let count = |path: &str, moved: &mut BTreeMap<String, usize>| {
        if !path.to_ascii_lowercase().ends_with(".sql") {
            return;
        }
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
        if digits.parse::<u64>().is_ok_and(|v| versions.contains(&v)) {
            *moved.entry(dir.to_owned()).or_default() += 1;
        }
    };
    for pair in fields.chunks(2) {
        let [status, path] = pair else { continue };
        if status == "D" {
            count(path, &mut moved);
        }
    }
    // Copied rather than moved (the old directory stays in the tree), with the project file
    // pointed at the copy: where the base's own project file (or its default) kept them.
    if moved.is_empty() {
        for pair in fields.chunks(2) {
            let [status, path] = pair else { continue };
            let named = path.rsplit('/').next() == Some(crate::project::FILE_NAME);
            if !named || !(status == "A" || status == "M") {
                continue;
            }
            let kept = base_migrations_dir(repo, commit, path, status == "M");
            if let Some(dir) = kept.filter(|d| is_tree(repo, commit, d)) {
                return Ok(Some(dir));
            }
        }
    }
    Ok(moved
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(dir, _)| dir)
        .filter(|dir| is_tree(repo, commit, dir)))
}

/// Where the project file at `path` (repository-relative) kept the migrations at `commit`:
/// its `migrations_dir` there when it existed (`existed`), else `migrations` beside it.
fn base_migrations_dir(repo: &Path, commit: &str, path: &str, existed: bool) -> Option<String> {
    let file = Path::new(path);
    let dir = if existed {
        let text = git(repo, &["show", &format!("{commit}:{path}")]).ok()?;
        let project = crate::project::Project::parse(file, &String::from_utf8_lossy(&text)).ok()?;
        crate::project::migrations_dir(None, Some(&project))
    } else {
        // No project file on the base: its runs found `migrations` in the directory they ran
        // in, which for a project laid out as now is beside the file.
        file.parent().unwrap_or(Path::new("")).join("migrations")
    };
    // Lexically, as git names trees: no `.`, `..` folded into its parent.
    let mut parts: Vec<String> = Vec::new();
    for c in dir.components() {
        match c {
            std::path::Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            std::path::Component::ParentDir => {
                parts.pop()?;
            }
            std::path::Component::CurDir => {}
            _ => return None,
        }
    }
    Some(parts.join("/"))
}

/// The `.sql` files of `rel` at `commit`, as the loader would read them from `dir`.
fn base_files(
    repo: &Path,
    commit: &str,
    base: &str,
    rel: &str,
    dir: &Path,
) -> Result<Vec<SourceFile>, ChangesError> {
    let spec = if rel.is_empty() {
        commit.to_owned()
    } else {
        format!("{commit}:{rel}")
    };
    // A base without the directory is an empty base: the pull request that adds the first
    // migrations must be previewable (the scratch database then starts empty). The ref itself
    // was checked by the caller.
    if !is_tree(repo, commit, rel) {
        tracing::debug!(
            base,
            dir = rel,
            "the migrations directory is absent on the base: an empty base"
        );
        return Ok(Vec::new());
    }
    // `ls-tree COMMIT:DIR` lists the directory itself (not recursive, like the loader).
    let listing = git(repo, &["ls-tree", "-z", &spec])?;
    let mut entries = Vec::new();
    for entry in listing.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        let entry = String::from_utf8_lossy(entry);
        let Some((meta, name)) = entry.split_once('\t') else {
            continue;
        };
        let mut meta = meta.split(' ');
        let (mode, kind, object) = (meta.next(), meta.next(), meta.next());
        let looks_like_sql = Path::new(name)
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("sql"));
        if !looks_like_sql {
            continue;
        }
        match (kind, object) {
            // A symbolic link, which the loader follows on disk: its target's content.
            (Some("blob"), Some(object)) if mode == Some("120000") => {
                let object = link_target(repo, commit, rel, object).ok_or_else(|| {
                    ChangesError::InvalidBase {
                        base: base.to_owned(),
                        problems: vec![SetProblem::new(
                            &dir.join(name),
                            None,
                            "a symbolic link on the base whose target is not a file of the base".into(),
                        )],
                    }
                })?;
                entries.push((name.to_owned(), object));
            }
            (Some("blob"), Some(object)) => entries.push((name.to_owned(), object.to_owned())),
            _ => {
                return Err(ChangesError::InvalidBase {
                    base: base.to_owned(),
                    problems: vec![SetProblem::new(
                        &dir.join(name),
                        None,
                        "not a regular file on the base (a directory or submodule named like a migration)".into(),
                    )],
                })
            }
        }
    }
    let contents = cat_blobs(repo, entries.iter().map(|(_, o)| o.as_str()))?;
    Ok(entries
        .into_iter()
        .zip(contents)
        .map(|((name, _), bytes)| SourceFile {
            path: dir.join(name),
            bytes,
        })
        .collect())
}

/// The blob a symbolic link in `rel` at `commit` points to (`object` holds the link's text,
/// relative to `rel`), following every link on the way (of a file or of a directory) up to a
/// bound, as the file system would.
fn link_target(repo: &Path, commit: &str, rel: &str, object: &str) -> Option<String> {
    let text = |object: &str| -> Option<String> {
        let bytes = git(repo, &["cat-file", "blob", object]).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        (!text.starts_with('/')).then(|| text.trim_end_matches('\n').to_owned())
    };
    let mut pending: std::collections::VecDeque<String> = rel
        .split('/')
        .chain(text(object)?.split('/'))
        .map(str::to_owned)
        .collect();
    let mut resolved: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                resolved.pop()?;
                continue;
            }
            _ => resolved.push(part),
        }
        let listing = git(repo, &["ls-tree", "-z", commit, "--", &resolved.join("/")]).ok()?;
        let entry = String::from_utf8_lossy(&listing).into_owned();
        let (meta, _) = entry.trim_end_matches('\0').split_once('\t')?;
        let meta: Vec<&str> = meta.split(' ').collect();
        match meta.as_slice() {
            ["120000", "blob", link] => {
                hops += 1;
                if hops > 16 {
                    return None;
                }
                // Relative to the link's own directory.
                resolved.pop();
                for part in text(link)?.split('/').rev() {
                    pending.push_front(part.to_owned());
                }
            }
            [_, "blob", blob] if pending.iter().all(|p| p.is_empty() || p == ".") => {
                return Some((*blob).to_owned())
            }
            [_, "tree", _] => {}
            _ => return None,
        }
    }
    None
}

/// The contents of many blobs from one `git cat-file --batch`: one process, not one per file.
fn cat_blobs<'a>(
    repo: &Path,
    objects: impl Iterator<Item = &'a str>,
) -> Result<Vec<Vec<u8>>, ChangesError> {
    let request: String = objects.map(|o| format!("{o}\n")).collect();
    if request.is_empty() {
        return Ok(Vec::new());
    }
    let failed = |message: String| ChangesError::Git {
        args: "cat-file --batch".into(),
        message,
    };
    let mut child = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("cannot run git: {e}")))?;
    // Written from a thread: git answers while we write, and a full pipe would block both.
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || stdin.write_all(request.as_bytes()));
    let output = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    let _ = writer.join();
    if !output.status.success() {
        return Err(failed(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    // Each answer: "<object> <type> <size>\n<contents>\n".
    let mut out = Vec::new();
    let mut rest = output.stdout.as_slice();
    while !rest.is_empty() {
        let header_end = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| failed("truncated answer".into()))?;
        let header = String::from_utf8_lossy(&rest[..header_end]).into_owned();
        let size: usize = header
            .rsplit(' ')
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| failed(format!("unexpected answer `{header}`")))?;
        let start = header_end + 1;
        let end = start + size;
        if rest.len() < end {
            return Err(failed("truncated answer".into()));
        }
        out.push(rest[start..end].to_vec());
        rest = rest.get(end + 1..).unwrap_or_default();
    }
    Ok(out)
}

/// Runs git in `dir`; its stdout, or its stderr as the error.
fn git(dir: &Path, args: &[&str]) -> Result<Vec<u8>, ChangesError> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ChangesError::Git {
            args: args.join(" "),
            message: format!("cannot run git: {e}"),
        })?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(ChangesError::Git {
            args: args.join(" "),
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// The comparison itself: pure.
pub fn compare(
    base: &str,
    base_commit: &str,
    dir: &str,
    base_set: &MigrationSet,
    working: &MigrationSet,
) -> MigrationChanges {
    let file_of = |name: &str| {
        if dir.is_empty() {
            format!("{name}.sql")
        } else {
            format!("{dir}/{name}.sql")
        }
    };
    let as_ref = |m: &stepmigrate_core::migration::Migration| MigrationRef {
        version: m.version.clone(),
        name: m.name.clone(),
        file: file_of(&m.name),
        checksum: m.checksum.clone(),
    };
    // Matched by version number, as the runner matches files with its ledger (plan.rs): the
    // name is only a description there, the version and the checksum are what count.
    let on_base: BTreeMap<u64, _> = base_set
        .migrations()
        .iter()
        .map(|m| (m.version.number(), m))
        .collect();
    let in_tree: BTreeMap<u64, _> = working
        .migrations()
        .iter()
        .map(|m| (m.version.number(), m))
        .collect();

    let mut added = Vec::new();
    let mut edited = Vec::new();
    let mut renamed = Vec::new();
    let mut renumbered = Vec::new();
    let mut unchanged = 0;
    for m in working.migrations() {
        match on_base.get(&m.version.number()) {
            None => added.push(AddedMigration {
                migration: as_ref(m),
                path: m.path.clone(),
                transactional: m.transactional(),
            }),
            // Same number written differently (`4` for `004`): the runner refuses it, since
            // the ledger's version no longer matches as text. A renumbering, not a rename.
            Some(b) if b.checksum == m.checksum && b.version != m.version => {
                renumbered.push(RenamedMigration {
                    from: as_ref(b),
                    to: as_ref(m),
                })
            }
            Some(b) if b.checksum == m.checksum && b.name == m.name => unchanged += 1,
            Some(b) if b.checksum == m.checksum => renamed.push(RenamedMigration {
                from: as_ref(b),
                to: as_ref(m),
            }),
            // Other content under a version of the base is an edit, whatever the names: where
            // the base was applied, the ledger's checksum for this version no longer matches.
            Some(b) => {
                let raw = std::fs::read(&m.path).unwrap_or_else(|_| m.sql.clone().into_bytes());
                edited.push(EditedMigration {
                    migration: as_ref(m),
                    base_name: b.name.clone(),
                    base_checksum: b.checksum.clone(),
                    line_endings_only: differs_only_in_line_endings(&raw, &b.checksum),
                })
            }
        }
    }
    let mut deleted: Vec<MigrationRef> = base_set
        .migrations()
        .iter()
        .filter(|m| !in_tree.contains_key(&m.version.number()))
        .map(as_ref)
        .collect();
    // A new version holding the content of a base version that is gone or now holds other
    // content was renumbered: where the base was applied, the old version is unknown-applied
    // (or drifted) and the new one would run the same SQL again. (New content that merely
    // equals a version still in place is a new migration.)
    let mut i = 0;
    while i < added.len() {
        let moved_from = base_set.migrations().iter().find(|b| {
            b.checksum == added[i].migration.checksum
                && in_tree
                    .get(&b.version.number())
                    .is_none_or(|t| t.checksum != b.checksum)
        });
        match moved_from {
            Some(b) => {
                let a = added.remove(i);
                deleted.retain(|d| d.version != b.version);
                renumbered.push(RenamedMigration {
                    from: as_ref(b),
                    to: a.migration,
                });
            }
            None => i += 1,
        }
    }

    let base_newest = base_set.migrations().last().map(|m| m.version.clone());
    let mut findings = Vec::new();
    let finding = |kind, severity, r: &MigrationRef, message: String| ChangeFinding {
        kind,
        severity,
        version: r.version.clone(),
        name: r.name.clone(),
        file: r.file.clone(),
        message,
    };
    for e in &edited {
        findings.push(if e.line_endings_only {
            finding(
                ChangeFindingKind::LineEndings,
                FindingSeverity::Warning,
                &e.migration,
                "only line endings or a byte-order mark changed; the runner warns where it is applied, it is not drift".into(),
            )
        } else {
            // The names may differ (a file moved onto a version of the base): say which
            // migration of the base is replaced, and where the new content came from.
            let replaces = if e.base_name == e.migration.name {
                String::new()
            } else {
                format!(" (the base's {} has this version)", e.base_name)
            };
            let moved = base_set
                .migrations()
                .iter()
                .find(|b| b.checksum == e.migration.checksum && b.version != e.migration.version)
                .map(|b| {
                    format!(
                        "; its content is the base's {}, moved from version {}",
                        b.name, b.version
                    )
                })
                .unwrap_or_default();
            finding(
                ChangeFindingKind::Edited,
                FindingSeverity::Error,
                &e.migration,
                format!(
                    "changes the content of version {} of {base}{replaces}: wherever it was applied this is drift, and every run there stops (checksum {} on the base, {} now){moved}; put the change in a new migration instead",
                    e.migration.version,
                    short(&e.base_checksum),
                    short(&e.migration.checksum)
                ),
            )
        });
    }
    for d in &deleted {
        findings.push(finding(
            ChangeFindingKind::Deleted,
            FindingSeverity::Warning,
            d,
            format!("deletes a migration of {base}: wherever it was applied it stays applied (reported as unknown-applied), and its schema changes stay; undo them in a new migration if that is the intent"),
        ));
    }
    // The down files of the base's migrations: a rollback of an applied one runs the copy
    // the ledger kept, so a changed file is a surprise later, and a deleted one a refusal.
    for m in working.migrations() {
        let Some(b) = on_base.get(&m.version.number()) else {
            continue;
        };
        if b.checksum != m.checksum {
            continue;
        }
        let message = match (&b.down, &m.down) {
            (Some(old), Some(new)) if old.checksum != new.checksum => format!(
                "changes the down file of a migration of {base}: where it was applied, a rollback still runs the down the ledger kept when it was applied (`down --use-file` runs this file instead)"
            ),
            (Some(_), None) if !m.directives.irreversible => format!(
                "deletes the down file of a migration of {base}: where it is applied, `down` refuses to roll it back until the file is restored (or the migration is marked `irreversible`)"
            ),
            (None, Some(_)) => format!(
                "adds a down file to a migration of {base}: where it was applied, the ledger kept no down for it, and a rollback runs this file"
            ),
            _ => continue,
        };
        let down = MigrationRef {
            file: file_of(&format!("{}.down", m.name)),
            ..as_ref(m)
        };
        findings.push(finding(
            ChangeFindingKind::DownChanged,
            FindingSeverity::Warning,
            &down,
            message,
        ));
    }
    for r in &renamed {
        findings.push(finding(
            ChangeFindingKind::Renamed,
            FindingSeverity::Warning,
            &r.to,
            format!(
                "renames {} (same version, same content): the runner matches by version and checksum, so where it was applied it stays applied, and the ledger keeps the old name",
                r.from.name
            ),
        ));
    }
    for r in &renumbered {
        let message = if r.from.version.number() == r.to.version.number() {
            format!(
                "renumbered: databases at the base recorded it as version {}, and the runner refuses {} there (versions must match as text); keep the version as it was",
                r.from.version, r.to.version
            )
        } else {
            format!(
                "renumbered: databases at the base applied it as {}; there it is unknown-applied and it would be applied again as {} (its SQL runs twice); keep it at {} and put changes in a new migration",
                r.from.version, r.to.version, r.from.version
            )
        };
        findings.push(finding(
            ChangeFindingKind::Renumbered,
            FindingSeverity::Error,
            &r.to,
            message,
        ));
    }
    if let Some(newest) = &base_newest {
        for a in &added {
            let m = &a.migration;
            if m.version <= *newest {
                let collides = base_set
                    .get(&m.version)
                    .map(|b| format!(" (the base's {} has this version)", b.name))
                    .unwrap_or_default();
                findings.push(finding(
                    ChangeFindingKind::OutOfOrder,
                    FindingSeverity::Error,
                    m,
                    format!(
                        "version {} is not above the base's newest, {newest}{collides}: wherever the base was applied it would run out of order or be refused; renumber it above {newest}",
                        m.version
                    ),
                ));
            }
        }
    }
    // The deploy's run leaves the after-deploy chain pending and applies the rest first.
    let chain = |a: &&AddedMigration| {
        working
            .get(&a.migration.version)
            .is_some_and(|m| working.in_after_deploy_chain(m))
    };
    for a in added.iter().filter(|a| !chain(a)) {
        let before: Vec<&str> = added
            .iter()
            .filter(|d| chain(d) && d.migration.version < a.migration.version)
            .map(|d| d.migration.name.as_str())
            .collect();
        if !before.is_empty() {
            findings.push(finding(
                ChangeFindingKind::DeployOrder,
                FindingSeverity::Warning,
                &a.migration,
                format!(
                    "the deploy's run (--skip-after-deploy) applies it before {}, which it leaves for the run after the deploy: the scratch database ran them in version order, so what it shows of {} holds only after them; if it needs them, give it `requires`",
                    before.join(", "),
                    a.migration.name
                ),
            ));
        }
    }
    findings.sort_by(|a, b| {
        (a.version.clone(), a.kind, &a.name).cmp(&(b.version.clone(), b.kind, &b.name))
    });
    renamed.sort_by(|a, b| a.to.version.cmp(&b.to.version));
    renumbered.sort_by(|a, b| a.to.version.cmp(&b.to.version));

    MigrationChanges {
        base: base.to_owned(),
        base_commit: base_commit.to_owned(),
        dir: dir.to_owned(),
        base_newest,
        added,
        edited,
        deleted,
        renamed,
        renumbered,
        unchanged,
        findings,
    }
}

fn short(checksum: &str) -> &str {
    checksum.get(..12).unwrap_or(checksum)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository whose base commit has `db/migrations` 001..004, then a working tree that
    /// edits 001, replaces 003 with a new 003 (below the base's newest, 004) and adds 005.
    struct Repo {
        tmp: tempfile::TempDir,
    }

    impl Repo {
        fn new() -> Repo {
            let r = Repo {
                tmp: tempfile::tempdir().unwrap(),
            };
            r.git(&["init", "-q", "-b", "main"]);
            r.git(&["config", "user.email", "t@example.com"]);
            r.git(&["config", "user.name", "t"]);
            r.git(&["config", "commit.gpgsign", "false"]);
            r
        }

        fn git(&self, args: &[&str]) {
            let out = Command::new("git")
                .arg("-C")
                .arg(self.tmp.path())
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "git {args:?}: {out:?}");
        }

        fn write(&self, path: &str, text: &str) {
            let p = self.tmp.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }

        fn remove(&self, path: &str) {
            std::fs::remove_file(self.tmp.path().join(path)).unwrap();
        }

        fn commit(&self, message: &str) {
            self.git(&["add", "-A"]);
            self.git(&["commit", "-q", "-m", message]);
        }

        fn dir(&self) -> PathBuf {
            self.tmp.path().join("db/migrations")
        }
    }

    fn base_repo() -> Repo {
        let r = Repo::new();
        r.write(
            "db/migrations/001_users.sql",
            "CREATE TABLE users (id int);\n",
        );
        r.write(
            "db/migrations/002_posts.sql",
            "CREATE TABLE posts (id int);\n",
        );
        r.write(
            "db/migrations/003_tags.sql",
            "CREATE TABLE tags (id int);\n",
        );
        r.write(
            "db/migrations/004_likes.sql",
            "CREATE TABLE likes (id int);\n",
        );
        r.write("db/migrations/README.md", "not a migration\n");
        r.commit("base");
        r.git(&["checkout", "-q", "-b", "feature"]);
        r
    }

    #[test]
    fn added_and_edited_whatever_the_name() {
        let r = base_repo();
        r.write(
            "db/migrations/001_users.sql",
            "CREATE TABLE users (id bigint);\n",
        );
        // Another file for version 003: the ledger knows 003 with other content, so this is
        // an edit (drift), not a deletion and an addition.
        r.remove("db/migrations/003_tags.sql");
        r.write(
            "db/migrations/003_add_email.sql",
            "ALTER TABLE users ADD COLUMN email text;\n",
        );
        r.write(
            "db/migrations/005_index_email.sql",
            "-- stepmigrate: no-transaction\nCREATE INDEX CONCURRENTLY users_email ON users (email);\n",
        );
        r.commit("feature"); // a committed branch and a dirty tree read the same
        let c = migration_changes(&r.dir(), "main").unwrap();
        assert_eq!(c.base, "main");
        assert_eq!(c.dir, "db/migrations");
        assert_eq!(c.base_newest.as_ref().map(|v| v.as_str()), Some("004"));
        let added: Vec<_> = c.added.iter().map(|a| a.migration.clone()).collect();
        assert_eq!(added.len(), 1);
        assert_eq!(added[0].name, "005_index_email");
        assert_eq!(added[0].file, "db/migrations/005_index_email.sql");
        assert!(!c.added[0].transactional);
        let edited: Vec<_> = c
            .edited
            .iter()
            .map(|e| (e.migration.name.as_str(), e.base_name.as_str()))
            .collect();
        assert_eq!(
            edited,
            [("001_users", "001_users"), ("003_add_email", "003_tags")]
        );
        assert!(!c.edited[0].line_endings_only);
        assert!(c.deleted.is_empty() && c.renamed.is_empty() && c.renumbered.is_empty());
        assert_eq!(c.unchanged, 2);
        let kinds: Vec<_> = c
            .findings
            .iter()
            .map(|f| (f.name.as_str(), f.kind, f.severity))
            .collect();
        assert_eq!(
            kinds,
            [
                (
                    "001_users",
                    ChangeFindingKind::Edited,
                    FindingSeverity::Error
                ),
                (
                    "003_add_email",
                    ChangeFindingKind::Edited,
                    FindingSeverity::Error
                ),
            ]
        );
        assert!(
            c.findings[1]
                .message
                .contains("the base's 003_tags has this version"),
            "{}",
            c.findings[1].message
        );
    }

    /// The hostile case: two versions swap their files. Each name looks renamed with the same
    /// content, but versions 003 and 004 now hold other content: drift on both.
    #[test]
    fn swapped_versions_are_edits_not_renames() {
        let r = base_repo();
        r.git(&["mv", "db/migrations/004_likes.sql", "db/migrations/tmp"]);
        r.git(&[
            "mv",
            "db/migrations/003_tags.sql",
            "db/migrations/004_tags.sql",
        ]);
        r.git(&["mv", "db/migrations/tmp", "db/migrations/003_likes.sql"]);
        let c = migration_changes(&r.dir(), "main").unwrap();
        assert!(c.renamed.is_empty() && c.renumbered.is_empty(), "{c:?}");
        assert!(c.added.is_empty() && c.deleted.is_empty());
        let kinds: Vec<_> = c
            .findings
            .iter()
            .map(|f| (f.name.as_str(), f.kind, f.severity))
            .collect();
        assert_eq!(
            kinds,
            [
                (
                    "003_likes",
                    ChangeFindingKind::Edited,
                    FindingSeverity::Error
                ),
                (
                    "004_tags",
                    ChangeFindingKind::Edited,
                    FindingSeverity::Error
                ),
            ]
        );
        assert!(
            c.findings[0]
                .message
                .contains("the base's 003_tags has this version")
                && c.findings[0]
                    .message
                    .contains("its content is the base's 004_likes, moved from version 004"),
            "{}",
            c.findings[0].message
        );
    }

    /// The same content under a new version: where the base was applied, the old version is
    /// unknown-applied and the new one would run its SQL again.
    #[test]
    fn a_renumbered_migration_is_an_error() {
        let r = base_repo();
        r.git(&[
            "mv",
            "db/migrations/004_likes.sql",
            "db/migrations/005_likes.sql",
        ]);
        r.write("db/migrations/004_other.sql", "SELECT 4;\n");
        let c = migration_changes(&r.dir(), "main").unwrap();
        assert_eq!(c.renumbered.len(), 1);
        assert_eq!(c.renumbered[0].from.name, "004_likes");
        assert_eq!(c.renumbered[0].to.name, "005_likes");
        assert!(c.added.is_empty() && c.deleted.is_empty() && c.renamed.is_empty());
        let f = c
            .findings
            .iter()
            .find(|f| f.kind == ChangeFindingKind::Renumbered)
            .unwrap();
        assert_eq!(f.severity, FindingSeverity::Error);
        assert_eq!(f.name, "005_likes");
        assert!(
            f.message.contains(
                "databases at the base applied it as 004; there it is unknown-applied and it would be applied again as 005"
            ),
            "{}",
            f.message
        );
        // And 004 now holds other content: an edit.
        assert!(c
            .findings
            .iter()
            .any(|f| f.kind == ChangeFindingKind::Edited && f.name == "004_other"));

        // The same number written differently: the runner refuses it, an error too.
        let r = base_repo();
        r.git(&[
            "mv",
            "db/migrations/004_likes.sql",
            "db/migrations/0004_likes.sql",
        ]);
        let c = migration_changes(&r.dir(), "main").unwrap();
        assert_eq!(c.renumbered.len(), 1, "{c:?}");
        assert_eq!(c.findings[0].kind, ChangeFindingKind::Renumbered);
        assert_eq!(c.findings[0].severity, FindingSeverity::Error);
        assert!(c.findings[0]
            .message
            .contains("versions must match as text"));
    }

    #[test]
    fn a_directory_absent_on_the_base_is_an_empty_base() {
        let r = base_repo();
        r.write("other/001_a.sql", "SELECT 1;\n");
        r.write("other/002_b.sql", "SELECT 2;\n");
        let c = migration_changes(&r.tmp.path().join("other"), "main").unwrap();
        assert_eq!(c.base_newest, None);
        let added: Vec<_> = c.added.iter().map(|a| a.migration.name.as_str()).collect();
        assert_eq!(added, ["001_a", "002_b"]);
        assert!(c.findings.is_empty(), "{:?}", c.findings);
        let s = sides(&r.tmp.path().join("other"), "main").unwrap();
        assert!(s.base.migrations().is_empty());
    }

    #[test]
    fn renames_and_line_endings_are_told_apart() {
        let r = base_repo();
        r.write(
            "db/migrations/001_users.sql",
            "CREATE TABLE users (id int);\r\n",
        );
        r.remove("db/migrations/004_likes.sql");
        r.write(
            "db/migrations/004_create_likes.sql",
            "CREATE TABLE likes (id int);\n",
        );
        // Uncommitted: the working tree is what counts.
        let c = migration_changes(&r.dir(), "main").unwrap();
        assert!(c.added.is_empty() && c.deleted.is_empty());
        assert_eq!(c.renamed.len(), 1);
        assert_eq!(c.renamed[0].from.name, "004_likes");
        assert_eq!(c.renamed[0].to.name, "004_create_likes");
        assert!(c.edited[0].line_endings_only);
        let kinds: Vec<_> = c.findings.iter().map(|f| (f.kind, f.severity)).collect();
        assert_eq!(
            kinds,
            [
                (ChangeFindingKind::LineEndings, FindingSeverity::Warning),
                (ChangeFindingKind::Renamed, FindingSeverity::Warning)
            ]
        );
        assert!(
            c.findings[1]
                .message
                .contains("renames 004_likes (same version, same content)")
                && c.findings[1]
                    .message
                    .contains("the ledger keeps the old name"),
            "{}",
            c.findings[1].message
        );
    }

    #[test]
    fn unknown_refs_and_bad_directories_are_clear_errors() {
        let r = base_repo();
        let e = migration_changes(&r.dir(), "origin/nope").unwrap_err();
        assert!(matches!(e, ChangesError::UnknownRef { .. }), "{e}");
        assert!(
            e.to_string().contains("`origin/nope` does not exist"),
            "{e}"
        );
        let e = migration_changes(&r.dir(), "--output=x").unwrap_err();
        assert!(matches!(e, ChangesError::UnknownRef { .. }), "{e}");

        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("001_a.sql"), "SELECT 1;\n").unwrap();
        let e = migration_changes(outside.path(), "main").unwrap_err();
        assert!(matches!(e, ChangesError::NotARepository { .. }), "{e}");

        r.write("db/migrations/007_gap.sql", "SELECT 1;\n");
        let e = migration_changes(&r.dir(), "main").unwrap_err();
        assert!(matches!(e, ChangesError::WorkingTree(_)), "{e}");
        let e: Error = e.into();
        assert_eq!(e.kind(), stepmigrate_core::ErrorKind::InvalidMigrationSet);
    }

    #[test]
    fn nothing_changed() {
        let r = base_repo();
        let c = migration_changes(&r.dir(), "HEAD").unwrap();
        assert!(c.is_empty() && c.findings.is_empty());
        assert_eq!(c.unchanged, 4);
    }
}
