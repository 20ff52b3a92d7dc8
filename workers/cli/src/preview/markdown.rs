//! The preview as one Markdown comment for a pull request: a hidden marker (so a workflow
//! finds and updates its own comment), a verdict, a summary table, the changes to existing
//! migrations, per-file details in collapsed blocks, the schema diff, and what a preview
//! cannot know. Always under GitHub's comment limit: when the full comment would not fit,
//! the details are cut file by file and the comment says so.

use std::fmt::Write;

use super::changes::ChangeFindingKind;
use super::report::{
    FileReport, FindingSeverity, PreviewReport, RoundTripReport, SchemaChangeKind, Summary,
    Verdict, VerifyOutcome,
};

/// The first line of every preview comment: how a workflow finds the comment to update.
pub const MARKER: &str = "<!-- stepmigrate-preview -->";

/// The most characters a comment may have: GitHub refuses more than 65,536; the margin keeps
/// a workflow's own additions (a link, a footer) safe.
pub const MAX_CHARS: usize = 65_000;

/// How to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderOptions {
    /// Show durations (off for output a test compares byte for byte).
    pub timings: bool,
    /// The size limit, in characters.
    pub max_chars: usize,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            timings: true,
            max_chars: MAX_CHARS,
        }
    }
}

/// The comment, at most `options.max_chars` characters.
pub fn render(report: &PreviewReport, options: RenderOptions) -> String {
    let mut report = report.clone();
    report.normalize();
    let summary = report.summary();
    // A report whose messages alone are far over the limit cannot fit: skip building the
    // full comment (megabytes, for a generated migration with thousands of findings).
    let messages: usize = report
        .files
        .iter()
        .flat_map(|f| &f.findings)
        .map(|f| f.message.len())
        .sum();
    if messages > 2 * options.max_chars {
        return fallback(&report, &summary, options);
    }
    let head = head(&report, &summary, options);
    let tail = cannot_know();

    let mut full = head.clone();
    full.push_str(&changes_section(&report, usize::MAX).0);
    if !report.files.is_empty() {
        full.push_str(FILES_HEADING);
    }
    for f in &report.files {
        full.push_str(&file_block(f, options, usize::MAX));
    }
    full.push_str(&schema_section(&report, usize::MAX).0);
    full.push_str(&tail);
    if chars(&full) <= options.max_chars {
        return full;
    }
    fallback(&report, &summary, options)
}

/// The comment cut to fit: the table, a note, and as much of each part as the budget allows,
/// file by file.
fn fallback(report: &PreviewReport, summary: &Summary, options: RenderOptions) -> String {
    let mut out = head(report, summary, options);
    let _ = writeln!(
        out,
        "> [!NOTE]\n> Details were cut: the full preview is longer than a comment may hold ({} characters). `stepmigrate preview --format json` prints all of it.\n",
        options.max_chars
    );
    let tail = cannot_know();
    // What is left for the parts, with room for the notes of what was cut.
    let reserve = 600;
    let mut budget = options
        .max_chars
        .saturating_sub(chars(&out) + chars(&tail) + reserve);

    let (changes, used) = changes_section(report, budget / 3);
    out.push_str(&changes);
    budget = budget.saturating_sub(used);

    let schema_budget = budget / 4;
    let mut files_budget = budget - schema_budget;
    if !report.files.is_empty() {
        out.push_str(FILES_HEADING);
    }
    let mut shown = 0;
    for (i, f) in report.files.iter().enumerate() {
        // Each remaining file gets its share, so one huge file cannot crowd out the rest.
        let share = files_budget / (report.files.len() - i);
        let block = file_block(f, options, share);
        let n = chars(&block);
        if n > files_budget {
            break;
        }
        files_budget -= n;
        out.push_str(&block);
        shown += 1;
    }
    if shown < report.files.len() {
        let _ = writeln!(
            out,
            "_… and {} more new migration(s), not shown._\n",
            report.files.len() - shown
        );
    }
    let (schema, _) = schema_section(report, schema_budget + files_budget);
    out.push_str(&schema);
    out.push_str(&tail);
    // Belt and braces: never over the limit, whatever the parts did.
    if chars(&out) > options.max_chars {
        let cut: String = out
            .chars()
            .take(options.max_chars.saturating_sub(80))
            .collect();
        out = format!("{cut}\n\n_… cut at the comment size limit._\n");
    }
    out
}

fn head(report: &PreviewReport, s: &Summary, options: RenderOptions) -> String {
    let c = &report.changes;
    let mut out = String::new();
    let _ = writeln!(out, "{MARKER}");
    let verdict = match report.verdict() {
        Verdict::Errors => format!(
            "## ❌ Migration preview: {} to fix before merging",
            plural(s.errors, "error", "errors")
        ),
        Verdict::Review => "## ⚠️ Migration preview: review before merging".to_owned(),
        Verdict::Clean if c.is_empty() => {
            "## ✅ Migration preview: no migration changed".to_owned()
        }
        Verdict::Clean => "## ✅ Migration preview: nothing found".to_owned(),
    };
    let _ = writeln!(out, "{verdict}\n");
    let commit = c.base_commit.get(..12).unwrap_or(&c.base_commit);
    let _ = writeln!(
        out,
        "Compared {} with {} ({}), on a scratch database brought to the base's schema ({}).\n",
        code(&c.dir),
        code(&c.base),
        if commit.is_empty() {
            "its commit".to_owned()
        } else {
            format!("`{commit}`")
        },
        plural(report.base_migrations_applied, "migration", "migrations"),
    );
    let _ = writeln!(out, "| | |\n| --- | --- |");
    let _ = writeln!(
        out,
        "| Files | {} added, {} edited, {} deleted, {} renamed, {} renumbered, {} unchanged |",
        c.added.len(),
        c.edited.len(),
        c.deleted.len(),
        c.renamed.len(),
        c.renumbered.len(),
        c.unchanged
    );
    let _ = writeln!(
        out,
        "| Findings | {}{}, {} |",
        if s.errors > 0 { "❌ " } else { "" },
        plural(s.errors, "error", "errors"),
        plural(s.warnings, "warning", "warnings")
    );
    let failed = if s.failed > 0 {
        format!(" ({} failed)", s.failed)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "| Verified | {} of {}{failed} |",
        report
            .files
            .iter()
            .filter(|f| f.verification.is_some())
            .count(),
        plural(report.files.len(), "new migration", "new migrations")
    );
    if s.round_trips > 0 {
        let mut cell = format!(
            "{} of {} passed",
            s.round_trips
                - s.round_trips_failed
                - s.round_trips_without_down
                - s.round_trips_unknown
                - s.round_trips_losing_data,
            s.round_trips
        );
        if s.round_trips_losing_data > 0 {
            let _ = write!(
                cell,
                "; ⚠️ {} losing data (schema restored, rows not)",
                s.round_trips_losing_data
            );
        }
        if s.round_trips_unknown > 0 {
            let _ = write!(
                cell,
                "; ❔ {} unknown on the target's rows",
                s.round_trips_unknown
            );
        }
        if s.round_trips_failed > 0 {
            let _ = write!(cell, "; ❌ {} failed", s.round_trips_failed);
        }
        if s.round_trips_without_down > 0 {
            let _ = write!(
                cell,
                "; ⚠️ {} without a down file",
                s.round_trips_without_down
            );
        }
        let _ = writeln!(out, "| Round trip (up, down, up) | {cell} |");
    }
    // Outside a transaction verify cannot read a migration's locks (each statement releases
    // them as it ends): then the count is a floor, and "none" would be a claim it cannot make.
    let unobserved = if s.non_transactional.is_empty() {
        String::new()
    } else {
        format!(
            " (not observed for {}: {} outside a transaction)",
            list_cell(&s.non_transactional),
            if s.non_transactional.len() == 1 {
                "it runs"
            } else {
                "they run"
            }
        )
    };
    let blocking = match (
        s.access_exclusive_on_existing.is_empty(),
        s.non_transactional.is_empty(),
    ) {
        // Other locks on existing tables (SHARE ROW EXCLUSIVE for a foreign key, blocking
        // writes) are in each migration's table: "none" here is of ACCESS EXCLUSIVE only.
        (true, true) => "no ACCESS EXCLUSIVE on existing tables".to_owned(),
        (true, false) => "no ACCESS EXCLUSIVE observed on existing tables".to_owned(),
        (false, _) => format!(
            "⚠️ ACCESS EXCLUSIVE on existing {}",
            list_cell(&s.access_exclusive_on_existing)
        ),
    };
    // On an empty copy, a migration whose statements depend on rows did what it does on no
    // rows: "none" is then only the copy's.
    let on_data = if s.depends_on_data.is_empty() {
        String::new()
    } else {
        format!(
            " on the empty copy; ❔ unknown for {} (what it does depends on the rows)",
            list_cell(&s.depends_on_data)
        )
    };
    let _ = writeln!(
        out,
        "| Locks | {} taken{unobserved}; {blocking}{on_data} |",
        s.locks
    );
    let _ = writeln!(
        out,
        "| Rewrites | {} |",
        if s.rewrites.is_empty() {
            format!("none{on_data}")
        } else {
            format!("⚠️ {}{on_data}", list_cell(&s.rewrites))
        }
    );
    let _ = writeln!(
        out,
        "| Non-transactional steps | {} |",
        if s.non_transactional.is_empty() {
            "none".to_owned()
        } else {
            list_cell(&s.non_transactional)
        }
    );
    if s.new_indexes_invalid > 0 {
        let _ = writeln!(out, "| Invalid indexes | ❌ {} |", s.new_indexes_invalid);
    }
    if options.timings {
        let t = &report.scratch;
        let _ = writeln!(
            out,
            "| Time on the scratch database | {} (setup {}, verify {}) |",
            ms(t.total_ms),
            ms(t.setup_ms),
            ms(t.verify_ms)
        );
    }
    out.push('\n');
    out
}

/// The findings about the change itself, and the edited, deleted and renamed migrations;
/// at most `budget` characters (then the rest is counted, not shown).
fn changes_section(report: &PreviewReport, budget: usize) -> (String, usize) {
    let findings = &report.changes.findings;
    if findings.is_empty() {
        return (String::new(), 0);
    }
    let mut out = String::from("### Changes to existing migrations\n\n");
    let mut used = chars(&out);
    let mut shown = 0;
    for f in findings {
        let icon = severity_icon(f.severity);
        let what = match f.kind {
            ChangeFindingKind::Edited => "edited",
            ChangeFindingKind::LineEndings => "line endings",
            ChangeFindingKind::Deleted => "deleted",
            ChangeFindingKind::Renamed => "renamed",
            ChangeFindingKind::Renumbered => "renumbered",
            ChangeFindingKind::OutOfOrder => "out of order",
            ChangeFindingKind::DownChanged => "down file",
            ChangeFindingKind::DeployOrder => "deploy order",
        };
        let line = format!(
            "- {icon} **{what}** {}: {}\n",
            code(&f.file),
            inline(&f.message)
        );
        let n = chars(&line);
        if used + n > budget {
            break;
        }
        used += n;
        out.push_str(&line);
        shown += 1;
    }
    if shown < findings.len() {
        let _ = writeln!(out, "- _… and {} more, not shown._", findings.len() - shown);
    }
    out.push('\n');
    let n = chars(&out);
    (out, n)
}

const FILES_HEADING: &str = "### New migrations\n\n";

/// One file's collapsed block; at most about `budget` characters (findings beyond it are
/// counted, not shown).
fn file_block(f: &FileReport, options: RenderOptions, budget: usize) -> String {
    let errors = f.count(FindingSeverity::Error);
    let warnings = f.count(FindingSeverity::Warning);
    let icon = if errors > 0 {
        "❌"
    } else if warnings > 0
        || f.verification
            .as_ref()
            .is_some_and(|v| v.access_exclusive_on_existing || !v.rewrites.is_empty())
    {
        "⚠️"
    } else {
        "✅"
    };
    let mut facts = vec![format!(
        "{}, {}",
        plural(errors, "error", "errors"),
        plural(warnings, "warning", "warnings")
    )];
    match &f.verification {
        Some(v) => {
            if v.failed() {
                facts.push("failed on the scratch database".into());
            }
            if v.round_trip_failed() {
                facts.push("round trip failed".into());
            }
            if matches!(v.round_trip, Some(RoundTripReport::NoDownFile { .. })) {
                facts.push("no down file".into());
            }
            if v.access_exclusive_on_existing {
                facts.push("ACCESS EXCLUSIVE on an existing table".into());
            }
            if !v.rewrites.is_empty() {
                facts.push("rewrites".into());
            }
            if v.non_transactional {
                facts.push("no transaction".into());
                facts.push("locks not observed".into());
            }
            if options.timings {
                facts.push(ms(v.duration_ms));
            }
        }
        None => facts.push("not run".into()),
    }
    let versions = |list: &[stepmigrate_core::migration::Version]| {
        list.iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !f.requires.is_empty() {
        facts.push(format!("requires {}", versions(&f.requires)));
    }
    if !f.conflicts.is_empty() {
        facts.push(format!("conflicts with {}", versions(&f.conflicts)));
    }
    if f.irreversible {
        facts.push("irreversible".into());
    }
    let mut out = format!(
        "<details><summary>{icon} <code>{}</code> · {}</summary>\n\n",
        html(&f.file),
        facts.join(" · ")
    );
    let closing = "\n\n</details>\n\n";

    let mut body = String::new();
    match &f.verification {
        Some(v) => {
            match &v.outcome {
                VerifyOutcome::Ok => {
                    let _ = writeln!(
                        body,
                        "**Ran** {} on the scratch database{}.\n",
                        plural(v.statements, "statement", "statements"),
                        if v.non_transactional {
                            ", for real: it runs outside a transaction, and in production a failure part way leaves it dirty"
                        } else {
                            " in a transaction that was rolled back"
                        }
                    );
                }
                VerifyOutcome::Failed { error } => {
                    let _ = writeln!(body, "**❌ Failed** on the scratch database:\n");
                    let _ = writeln!(body, "{}\n", fenced("text", error));
                }
            }
            match &v.round_trip {
                Some(RoundTripReport::Ok) => {
                    let _ = writeln!(
                        body,
                        "**Round trip:** ✅ its down gave back the schema before it, and applied again it made the same schema.\n"
                    );
                }
                Some(RoundTripReport::LosesData { what }) => {
                    let _ = writeln!(
                        body,
                        "**Round trip:** ⚠️ its down gave back the schema before it, but not the data: it drops and makes again {}, so what they held is lost (on the target too).\n",
                        inline(&what.join(", "))
                    );
                }
                Some(RoundTripReport::UnknownOnTarget { reason }) => {
                    let _ = writeln!(
                        body,
                        "**Round trip:** ❔ unknown on the target's rows: {} (on the empty copy its down gave back the schema before it, and applied again it made the same schema).\n",
                        inline(reason)
                    );
                }
                Some(RoundTripReport::Skipped { reason }) => {
                    let _ = writeln!(body, "**Round trip:** skipped ({}).\n", inline(reason));
                }
                Some(RoundTripReport::Failed { message }) => {
                    let _ = writeln!(body, "**❌ Round trip failed:** {}\n", inline(message));
                }
                Some(RoundTripReport::NoDownFile { message }) => {
                    let _ = writeln!(
                        body,
                        "**⚠️ Round trip not possible:** {}\n",
                        inline(message)
                    );
                }
                None => {}
            }
            if v.non_transactional {
                // No table (or an empty one) must not read as "takes no lock".
                let _ = writeln!(
                    body,
                    "**Locks not observed:** outside a transaction each statement releases its locks as it ends, before they can be read. It may still lock existing tables (`VACUUM FULL` and most `ALTER TABLE` take ACCESS EXCLUSIVE).\n"
                );
            }
            if !v.locks.is_empty() {
                let _ = writeln!(body, "| Lock | On | Existing |\n| --- | --- | --- |");
                for l in &v.locks {
                    let _ = writeln!(
                        body,
                        "| {}{} | {} | {} |",
                        if l.blocks_everyone() { "⚠️ " } else { "" },
                        cell(&l.mode),
                        code_cell(&l.relation),
                        if l.existing { "yes" } else { "new" }
                    );
                }
                body.push('\n');
            }
            if !v.rewrites.is_empty() {
                let _ = writeln!(
                    body,
                    "⚠️ **Rewrites** (the whole table or index is copied, holding its lock meanwhile): {}\n",
                    list(&v.rewrites)
                );
            }
            for i in &v.new_indexes {
                let _ = writeln!(
                    body,
                    "- {} index {} on {}",
                    if i.valid { "new" } else { "❌ **invalid**" },
                    code(&i.name),
                    code(&i.table)
                );
            }
            if !v.new_indexes.is_empty() {
                body.push('\n');
            }
        }
        None => {
            let _ = writeln!(
                body,
                "_Not run on the scratch database (an earlier migration failed, or it could not be verified)._\n"
            );
        }
    }
    // Counted as it grows: recounting the whole body per finding is quadratic.
    let mut used = chars(&out) + chars(&body) + chars(closing);
    let mut shown = 0;
    for finding in &f.findings {
        let mut item = format!(
            "- {} **{}** line {}:{}: {}\n",
            severity_icon(finding.severity),
            cell(&finding.rule),
            finding.line,
            finding.column,
            inline(&finding.message)
        );
        if let Some(help) = &finding.help {
            let _ = writeln!(item, "  <br>_{}_", inline(help));
        }
        let n = chars(&item);
        if used + n + 60 > budget {
            break;
        }
        used += n;
        body.push_str(&item);
        shown += 1;
    }
    if shown < f.findings.len() {
        let _ = writeln!(
            body,
            "- _… and {} more finding(s), not shown._",
            f.findings.len() - shown
        );
    }
    out.push_str(body.trim_end());
    out.push_str(closing);
    out
}

/// The structural diff as a `diff` block: `+` added, `-` dropped, `~` changed.
fn schema_section(report: &PreviewReport, budget: usize) -> (String, usize) {
    let mut out = String::from("### Schema changes\n\n");
    // A migration that failed or did not run changed nothing on the scratch database: the
    // diff is of the others only, and says so.
    let applied = report
        .files
        .iter()
        .filter(|f| f.verification.as_ref().is_some_and(|v| !v.failed()))
        .count();
    if applied < report.files.len() {
        let _ = writeln!(
            out,
            "Of the {} new migration(s), {applied} applied on the scratch database: the changes below are theirs only.\n",
            report.files.len()
        );
    }
    let on_data: Vec<String> = report
        .files
        .iter()
        .filter(|f| f.verification.as_ref().is_some_and(|v| v.depends_on_data))
        .map(|f| f.name.clone())
        .collect();
    if !on_data.is_empty() {
        let _ = writeln!(
            out,
            "❔ What {} changes depends on rows the scratch database does not hold: the changes below are an empty copy's.\n",
            list_cell(&on_data)
        );
    }
    if report.schema_diff.is_empty() {
        out.push_str("No change to the schema.\n\n");
        let n = chars(&out);
        return (out, n);
    }
    let mut lines = String::new();
    let mut used = chars(&out);
    let mut shown = 0;
    for c in &report.schema_diff {
        let sign = match c.change {
            SchemaChangeKind::Added => '+',
            SchemaChangeKind::Dropped => '-',
            SchemaChangeKind::Changed => '~',
        };
        let mut line = format!("{sign} {} {}", one_line(&c.kind), one_line(&c.name));
        if let Some(d) = &c.detail {
            let _ = write!(line, ": {}", one_line(d));
        }
        line.push('\n');
        let n = chars(&line);
        if used + n + 40 > budget {
            break;
        }
        used += n;
        lines.push_str(&line);
        shown += 1;
    }
    if shown < report.schema_diff.len() {
        let _ = writeln!(
            lines,
            "# … and {} more, not shown",
            report.schema_diff.len() - shown
        );
    }
    out.push_str(&fenced("diff", lines.trim_end()));
    out.push_str("\n\n");
    let n = chars(&out);
    (out, n)
}

fn cannot_know() -> String {
    "### What this preview cannot know\n\n\
     - **Data-dependent failures.** The scratch database has the schema, not your data: a \
     unique index over duplicates, a `NOT NULL` over nulls, a cast of a bad value or a \
     foreign key to a missing row fails only where that data is.\n\
     - **Lock waits under real traffic.** The locks are the ones taken; how long they wait \
     behind, and block, the application's queries depends on production's load. Each \
     migration's `lock_timeout` bounds the wait.\n\
     - **Statements that depend on rows.** A `DO` block or function that branches on the \
     rows, an `UPDATE` that only some rows reach: on the empty scratch database they do what \
     they do on no rows, and the locks, rewrites and schema changes shown are that (marked ❔).\n\
     - **Production-sized durations.** Times here are on empty tables: a rewrite or an index \
     build takes time in proportion to the table's size.\n"
        .to_owned()
}

fn severity_icon(s: FindingSeverity) -> &'static str {
    match s {
        FindingSeverity::Error => "❌",
        FindingSeverity::Warning => "⚠️",
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn ms(n: u64) -> String {
    if n >= 10_000 {
        format!("{:.1} s", n as f64 / 1000.0)
    } else {
        format!("{n} ms")
    }
}

/// The most items a list in the summary names: the rest are counted, so the summary itself
/// stays small whatever the report holds.
const LIST_MAX: usize = 10;

/// `a`, `b` and `c` as code, comma-separated; past [`LIST_MAX`], "and N more".
fn list(items: &[String]) -> String {
    list_with(items, code)
}

/// [`list`] for a table cell.
fn list_cell(items: &[String]) -> String {
    list_with(items, code_cell)
}

fn list_with(items: &[String], span: fn(&str) -> String) -> String {
    let mut out = items
        .iter()
        .take(LIST_MAX)
        .map(|i| span(i))
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > LIST_MAX {
        let _ = write!(out, " and {} more", items.len() - LIST_MAX);
    }
    out
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// A code span showing `s` as it is (on one line). Backticks inside are kept: the fence is
/// one backtick longer than the longest run inside, and a space pads content that starts or
/// ends with a backtick (CommonMark strips one space from each side). HTML inside a code
/// span is literal, so nothing else is escaped.
fn code(s: &str) -> String {
    let text = one_line(s);
    let fence = "`".repeat(longest_backtick_run(&text) + 1);
    let pad = if text.starts_with('`')
        || text.ends_with('`')
        || (text.starts_with(' ') && text.ends_with(' ') && !text.trim().is_empty())
    {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{text}{pad}{fence}")
}

/// [`code`] for a table cell: GitHub splits cells at `|` even inside a code span, and reads
/// `\|` there as a literal `|`.
fn code_cell(s: &str) -> String {
    code(s).replace('|', "\\|")
}

/// Text for a table cell: no pipes, no HTML.
fn cell(s: &str) -> String {
    html(&one_line(s)).replace('|', "\\|")
}

/// Text for a list item: no HTML (a migration's message may quote SQL with `<`).
fn inline(s: &str) -> String {
    html(&one_line(s))
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn one_line(s: &str) -> String {
    s.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn longest_backtick_run(text: &str) -> usize {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    longest
}

/// A fenced block whose fence is longer than any backtick run in the text.
fn fenced(lang: &str, text: &str) -> String {
    let fence = "`".repeat((longest_backtick_run(text) + 1).max(3));
    format!("{fence}{lang}\n{text}\n{fence}")
}
