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
    #[error("the migrations directory `{dir}` does not exist on the base `{base}`: check --migrations-dir, or compare with a base that has it")]
    DirAbsentOnBase { base: String, dir: String },
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

/// A migration that exists on the base with other content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EditedMigration {
    #[serde(flatten)]
    pub migration: MigrationRef,
    pub base_checksum: String,
    /// Only line endings or a byte-order mark changed: the runner warns, it is not drift.
    pub line_endings_only: bool,
}

/// A migration moved to another name with the same content.
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
    /// Same content under another name: where it was applied, the ledger knows the old name.
    Renamed,
    /// A new version at or below the base's newest: where the base was applied, it would
    /// run after newer migrations (or collide with the base's version).
    OutOfOrder,
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
    pub renamed: Vec<RenamedMigration>,
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
    let base_files = base_files(&repo, &commit, base, &rel, migrations_dir)?;
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
    // `ls-tree COMMIT:DIR` lists the directory itself (not recursive, like the loader), and
    // fails when there is no such directory on the base.
    let listing =
        git(repo, &["ls-tree", "-z", &spec]).map_err(|_| ChangesError::DirAbsentOnBase {
            base: base.to_owned(),
            dir: rel.to_owned(),
        })?;
    let mut entries = Vec::new();
    for entry in listing.split(|b| *b == 0).filter(|e| !e.is_empty()) {
        let entry = String::from_utf8_lossy(entry);
        let Some((meta, name)) = entry.split_once('\t') else {
            continue;
        };
        let mut meta = meta.split(' ');
        let (_mode, kind, object) = (meta.next(), meta.next(), meta.next());
        let looks_like_sql = Path::new(name)
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("sql"));
        if !looks_like_sql {
            continue;
        }
        match (kind, object) {
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
    let on_base: BTreeMap<&str, _> = base_set
        .migrations()
        .iter()
        .map(|m| (m.name.as_str(), m))
        .collect();
    let in_tree: BTreeMap<&str, _> = working
        .migrations()
        .iter()
        .map(|m| (m.name.as_str(), m))
        .collect();

    let mut added = Vec::new();
    let mut edited = Vec::new();
    let mut unchanged = 0;
    for m in working.migrations() {
        match on_base.get(m.name.as_str()) {
            None => added.push(AddedMigration {
                migration: as_ref(m),
                path: m.path.clone(),
                transactional: m.transactional(),
            }),
            Some(b) if b.checksum == m.checksum => unchanged += 1,
            Some(b) => {
                let raw = std::fs::read(&m.path).unwrap_or_else(|_| m.sql.clone().into_bytes());
                edited.push(EditedMigration {
                    migration: as_ref(m),
                    base_checksum: b.checksum.clone(),
                    line_endings_only: differs_only_in_line_endings(&raw, &b.checksum),
                })
            }
        }
    }
    let mut deleted: Vec<MigrationRef> = base_set
        .migrations()
        .iter()
        .filter(|m| !in_tree.contains_key(m.name.as_str()))
        .map(as_ref)
        .collect();
    // A deletion and an addition with the same content are one rename.
    let mut renamed = Vec::new();
    deleted.retain(|d| {
        match added
            .iter()
            .position(|a| a.migration.checksum == d.checksum)
        {
            Some(i) => {
                let a = added.remove(i);
                renamed.push(RenamedMigration {
                    from: d.clone(),
                    to: a.migration,
                });
                false
            }
            None => true,
        }
    });

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
            finding(
                ChangeFindingKind::Edited,
                FindingSeverity::Error,
                &e.migration,
                format!(
                    "edits a migration that exists on {base}: wherever it was applied this is drift, and every run there stops (checksum {} on the base, {} now); put the change in a new migration instead",
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
    for r in &renamed {
        findings.push(finding(
            ChangeFindingKind::Renamed,
            FindingSeverity::Warning,
            &r.to,
            format!(
                "renames {} with the same content: the ledger keeps the old name where it was applied",
                r.from.name
            ),
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
    findings.sort_by(|a, b| {
        (a.version.clone(), a.kind, &a.name).cmp(&(b.version.clone(), b.kind, &b.name))
    });
    renamed.sort_by(|a, b| a.to.version.cmp(&b.to.version));

    MigrationChanges {
        base: base.to_owned(),
        base_commit: base_commit.to_owned(),
        dir: dir.to_owned(),
        base_newest,
        added,
        edited,
        deleted,
        renamed,
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
    fn added_edited_deleted_and_out_of_order() {
        let r = base_repo();
        r.write(
            "db/migrations/001_users.sql",
            "CREATE TABLE users (id bigint);\n",
        );
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
        let names = |v: &[MigrationRef]| v.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
        let added: Vec<_> = c.added.iter().map(|a| a.migration.clone()).collect();
        assert_eq!(names(&added), ["003_add_email", "005_index_email"]);
        assert_eq!(added[0].file, "db/migrations/003_add_email.sql");
        assert!(c.added[0].transactional && !c.added[1].transactional);
        assert_eq!(c.edited.len(), 1);
        assert_eq!(c.edited[0].migration.name, "001_users");
        assert!(!c.edited[0].line_endings_only);
        assert_eq!(names(&c.deleted), ["003_tags"]);
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
                    "003_tags",
                    ChangeFindingKind::Deleted,
                    FindingSeverity::Warning
                ),
                (
                    "003_add_email",
                    ChangeFindingKind::OutOfOrder,
                    FindingSeverity::Error
                ),
            ]
        );
        assert!(
            c.findings[2]
                .message
                .contains("the base's 003_tags has this version"),
            "{}",
            c.findings[2].message
        );
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
    }

    #[test]
    fn unknown_refs_and_missing_directories_are_clear_errors() {
        let r = base_repo();
        let e = migration_changes(&r.dir(), "origin/nope").unwrap_err();
        assert!(matches!(e, ChangesError::UnknownRef { .. }), "{e}");
        assert!(
            e.to_string().contains("`origin/nope` does not exist"),
            "{e}"
        );
        let e = migration_changes(&r.dir(), "--output=x").unwrap_err();
        assert!(matches!(e, ChangesError::UnknownRef { .. }), "{e}");

        r.write("other/001_a.sql", "SELECT 1;\n");
        let e = migration_changes(&r.tmp.path().join("other"), "main").unwrap_err();
        assert!(matches!(e, ChangesError::DirAbsentOnBase { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("`other` does not exist on the base `main`"),
            "{e}"
        );

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
