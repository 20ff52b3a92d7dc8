//! `migrations.sum`: the checked-in integrity file of a migration directory, like Atlas's
//! `atlas.sum`. Its first line is a hash of the whole directory and each following line a
//! file's name and a hash chained over every file before it, so two branches that each add
//! a migration change the same lines and conflict in git, instead of both reaching
//! production. Pure: the caller reads and writes the file.

use std::path::{Path, PathBuf};

use crate::error::{Error, SetProblem};
use crate::migration::{checksum, MigrationSet};

/// The file's name, in the migrations directory.
pub const SUM_FILE: &str = "migrations.sum";

/// What `stepmigrate hash` writes for a set: `h1:TOTAL`, then `FILE h1:CHAIN` per file, in
/// the set's order (each migration, then its down file).
pub fn sum_text(set: &MigrationSet) -> String {
    let files = files_of(set);
    let mut chain = String::new();
    let mut lines = Vec::with_capacity(files.len());
    for (name, file_checksum) in &files {
        chain = checksum(format!("{chain}\n{name}\n{file_checksum}").as_bytes());
        lines.push(format!("{name} h1:{chain}"));
    }
    let total = checksum(lines.join("\n").as_bytes());
    let mut text = format!("h1:{total}\n");
    for line in lines {
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// The files the sum covers, with their checksums.
fn files_of(set: &MigrationSet) -> Vec<(String, String)> {
    let name = |p: &Path| {
        p.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    };
    // The content's checksum, not the raw bytes': line endings and a byte-order mark are not
    // edits here either (the ledger's rule: `migration::canonical_content`).
    let content = |path: &Path, raw: &str| {
        set.content_checksum(path)
            .map_or_else(|| raw.to_owned(), str::to_owned)
    };
    let mut files = Vec::new();
    for m in set.migrations() {
        files.push((name(&m.path), content(&m.path, &m.checksum)));
        if let Some(down) = &m.down {
            files.push((name(&down.path), content(&down.path, &down.checksum)));
        }
    }
    files
}

/// Checks a set against the text of its `migrations.sum`; the error names what changed
/// (added, edited, renamed, removed files) and how to fix it.
pub fn verify(set: &MigrationSet, sum_path: &Path, recorded: &str) -> Result<(), Error> {
    let expected = sum_text(set);
    if normalise(recorded) == expected {
        return Ok(());
    }
    let mut problems = Vec::new();
    let mut listed: Vec<(usize, &str)> = Vec::new();
    let mut malformed = false;
    for (i, line) in recorded.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if i == 0 {
            malformed |= !line.starts_with("h1:");
            continue;
        }
        match line.rsplit_once(" h1:") {
            Some((name, _)) if !name.is_empty() => listed.push((i + 1, name)),
            _ if line.trim().is_empty() => {}
            _ => malformed = true,
        }
    }
    if malformed || recorded.trim().is_empty() {
        problems.push(SetProblem::new(
            sum_path,
            None,
            format!(
                "is not a {SUM_FILE} written by `stepmigrate hash` (a merge conflict left in it?)"
            ),
        ));
    }
    let files = files_of(set);
    // Each listed file's own checksum is not in the sum (only the chain), so an edit is told
    // apart from a rename by the names alone.
    let listed_names: Vec<&str> = listed.iter().map(|(_, n)| *n).collect();
    for (name, _) in &files {
        if !listed_names.contains(&name.as_str()) {
            problems.push(SetProblem::new(
                sum_path,
                None,
                format!("{name} is not in it (added or renamed since the last `stepmigrate hash`)"),
            ));
        }
    }
    for (line, name) in &listed {
        if !files.iter().any(|(n, _)| n == name) {
            problems.push(SetProblem::new(
                sum_path,
                Some(*line),
                format!("lists {name}, which is not in the directory (removed or renamed)"),
            ));
        }
    }
    if problems.is_empty() {
        // Same names: a file was edited (or the order changed). Name the first whose chain
        // differs: it or a file before it changed.
        let expected_lines: Vec<&str> = expected.lines().skip(1).collect();
        let first_changed = recorded
            .lines()
            .skip(1)
            .map(|l| l.trim_end_matches('\r'))
            .zip(&expected_lines)
            .position(|(a, b)| a != *b);
        let what = match first_changed {
            Some(i) => format!(
                "{} changed since the last `stepmigrate hash` (its hash differs)",
                expected_lines[i]
                    .rsplit_once(" h1:")
                    .map_or("a file", |(n, _)| n)
            ),
            None => "its total hash does not match its lines (edited by hand?)".to_owned(),
        };
        problems.push(SetProblem::new(
            sum_path,
            first_changed.map(|i| i + 2),
            what,
        ));
    }
    problems.push(SetProblem::new(
        sum_path,
        None,
        format!("is stale: review the change (on a merge, renumber the newer branch's migrations), then run `stepmigrate hash` and commit {SUM_FILE} (a sum that an older stepmigrate wrote on a checkout with CRLF line endings or byte-order marks is stale too, with no file changed: `stepmigrate hash` writes one that holds on every checkout)"),
    ));
    Err(Error::InvalidMigrationSet {
        dir: set.dir.clone(),
        problems,
    })
}

/// A sum checked out with CRLF line endings is the same sum.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        out.push_str(line.trim_end_matches('\r'));
        out.push('\n');
    }
    out
}

/// Where the sum of a directory lives.
pub fn sum_path(dir: &Path) -> PathBuf {
    dir.join(SUM_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::migration::test_set as set;

    fn problems(set: &MigrationSet, sum: &str) -> String {
        match verify(set, Path::new("m/migrations.sum"), sum) {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    const BASE: [(&str, &str); 3] = [
        ("001_a.sql", "CREATE TABLE a (x int);"),
        ("001_a.down.sql", "DROP TABLE a;"),
        ("002_b.sql", "CREATE TABLE b (x int);"),
    ];

    #[test]
    fn a_fresh_sum_verifies_and_lists_every_file() {
        let s = set(&BASE);
        let sum = sum_text(&s);
        let lines: Vec<&str> = sum.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("h1:"));
        assert!(lines[1].starts_with("001_a.sql h1:"));
        assert!(lines[2].starts_with("001_a.down.sql h1:"));
        assert!(lines[3].starts_with("002_b.sql h1:"));
        verify(&s, Path::new("m/migrations.sum"), &sum).unwrap();
        verify(
            &s,
            Path::new("m/migrations.sum"),
            &sum.replace('\n', "\r\n"),
        )
        .unwrap();
    }

    #[test]
    fn adding_editing_renaming_and_removing_make_it_stale() {
        let sum = sum_text(&set(&BASE));
        let mut added = BASE.to_vec();
        added.push(("003_c.sql", "SELECT 1;"));
        let p = problems(&set(&added), &sum);
        assert!(p.contains("003_c.sql is not in it"), "{p}");
        assert!(p.contains("run `stepmigrate hash`"), "{p}");

        let mut edited = BASE.to_vec();
        edited[2] = ("002_b.sql", "CREATE TABLE b (x bigint);");
        let p = problems(&set(&edited), &sum);
        assert!(p.contains("m/migrations.sum:4: 002_b.sql changed"), "{p}");

        let mut edited_down = BASE.to_vec();
        edited_down[1] = ("001_a.down.sql", "DROP TABLE a CASCADE;");
        let p = problems(&set(&edited_down), &sum);
        assert!(p.contains(":3: 001_a.down.sql changed"), "{p}");

        let mut renamed = BASE.to_vec();
        renamed[2] = ("002_bee.sql", "CREATE TABLE b (x int);");
        let p = problems(&set(&renamed), &sum);
        assert!(p.contains("002_bee.sql is not in it"), "{p}");
        assert!(
            p.contains("lists 002_b.sql, which is not in the directory"),
            "{p}"
        );

        let p = problems(&set(&BASE[..2]), &sum);
        assert!(p.contains("lists 002_b.sql"), "{p}");
    }

    #[test]
    fn two_branches_adding_a_migration_each_change_the_same_lines() {
        let base = sum_text(&set(&BASE));
        let mut one = BASE.to_vec();
        one.push(("003_c.sql", "SELECT 1;"));
        let mut other = BASE.to_vec();
        other.push(("003_d.sql", "SELECT 2;"));
        let (a, b) = (sum_text(&set(&one)), sum_text(&set(&other)));
        // Both rewrite the first line and add a different last line: a three-way merge of
        // either against the base cannot take both.
        let first = |s: &str| s.lines().next().unwrap().to_owned();
        assert_ne!(first(&a), first(&base));
        assert_ne!(first(&b), first(&base));
        assert_ne!(first(&a), first(&b));
        assert_ne!(a.lines().last(), b.lines().last());
    }

    #[test]
    fn line_endings_and_byte_order_marks_are_not_edits() {
        let lf = set(&[
            ("001_a.sql", "CREATE TABLE a (x int);\nSELECT 1;\n"),
            ("001_a.down.sql", "DROP TABLE a;\n"),
        ]);
        let crlf = set(&[
            (
                "001_a.sql",
                "\u{feff}CREATE TABLE a (x int);\r\nSELECT 1;\r\n",
            ),
            ("001_a.down.sql", "DROP TABLE a;\r\n"),
        ]);
        // One sum, whichever checkout wrote it, and it holds on the other.
        assert_eq!(sum_text(&lf), sum_text(&crlf));
        verify(&crlf, Path::new("m/migrations.sum"), &sum_text(&lf)).unwrap();
        verify(&lf, Path::new("m/migrations.sum"), &sum_text(&crlf)).unwrap();
        // A real edit on a CRLF checkout is still one.
        let edited = set(&[
            ("001_a.sql", "CREATE TABLE a (x bigint);\r\nSELECT 1;\r\n"),
            ("001_a.down.sql", "DROP TABLE a;\r\n"),
        ]);
        let p = problems(&edited, &sum_text(&lf));
        assert!(p.contains("001_a.sql changed"), "{p}");
    }

    #[test]
    fn a_merge_conflict_left_in_the_file_is_named() {
        let s = set(&BASE);
        let sum = format!("<<<<<<< HEAD\n{}=======\n>>>>>>> other\n", sum_text(&s));
        let p = problems(&s, &sum);
        assert!(p.contains("merge conflict"), "{p}");
    }
}
