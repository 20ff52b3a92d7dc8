//! Human and `--json` output, exit codes and logging of the command.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};
use stepmigrate_core::apply::Outcome;
use stepmigrate_core::db::Database;
use stepmigrate_core::error::ErrorReport;
use stepmigrate_core::ledger::LedgerKind;
use stepmigrate_core::migration::Migration;
use stepmigrate_core::plan::{Plan, State};
use stepmigrate_core::rollback::{RollbackPlan, ScriptSource};
use stepmigrate_core::runner::{MigrationResult, Progress, Resolved, UpReport};
use stepmigrate_core::verify::{
    DataKind, Method as VerifyMethod, TargetTable, VerifyOutcome, VerifyReport,
};
use stepmigrate_core::{Error, ErrorKind};

/// `println!` that never panics: a closed pipe (`stepmigrate status | head -1`) or a full
/// disk loses the rest of the output, not the run.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `eprintln!` that never panics.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}
pub(crate) use {errln, outln};

/// The exit code of each error name (documented in the README).
pub fn exit_code_number(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::SqlFailed => 1,
        ErrorKind::InvalidInput | ErrorKind::ConfigError => 2,
        ErrorKind::InvalidMigrationSet | ErrorKind::ChecksumMismatch => 3,
        ErrorKind::Dirty => 4,
        ErrorKind::ConnectionFailed => 5,
        ErrorKind::LockTimeout => 6,
        ErrorKind::LedgerInconsistent => 7,
        ErrorKind::DatabaseError => 8,
        ErrorKind::ServiceError => 9,
        ErrorKind::ExecutionFailed => 10,
        ErrorKind::RollbackRefused => 11,
        ErrorKind::DependencyNotMet => 12,
        ErrorKind::OutOfOrder => 13,
        // Raised only by the Step Functions workers (a batch migration's loop).
        ErrorKind::BatchStalled => 14,
        ErrorKind::BatchLoopLimit => 15,
        ErrorKind::TaskFailed => 16,
        // 128 + SIGINT, as a shell reports a command Ctrl-C ended.
        ErrorKind::Interrupted => 130,
    }
}

/// The error document of `--json` output: the library's one shape, with the exit code.
fn error_document(error: &Error) -> Value {
    json!(ErrorReport {
        exit_code: Some(exit_code_number(error.kind())),
        ..error.report()
    })
}

pub fn exit_code(kind: ErrorKind) -> ExitCode {
    ExitCode::from(exit_code_number(kind))
}

/// Bad arguments: clap's text for people, or, with `--json` among the arguments, one JSON
/// document on stdout like every other outcome. Help and version print as usual.
pub fn argument_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind as Clap;
    if matches!(e.kind(), Clap::DisplayHelp | Clap::DisplayVersion)
        || !std::env::args_os().any(|a| a == "--json")
    {
        let _ = e.print();
        return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
    }
    let kind = match e.kind() {
        Clap::InvalidValue | Clap::ValueValidation => ErrorKind::ConfigError,
        _ => ErrorKind::InvalidInput,
    };
    let message = e.render().to_string();
    let message = message.trim().trim_start_matches("error: ");
    Output::new(true, false).emit(json!({
        "command": null,
        "ok": false,
        "error": { "name": kind, "message": message, "exit_code": exit_code_number(kind), "details": {} },
    }));
    exit_code(kind)
}

pub fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) | (false, 0) => "error",
        (false, 1) => "stepmigrate=info",
        _ => "stepmigrate=debug,info",
    };
    use tracing_subscriber::prelude::*;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false)
                .with_filter(filter),
        )
        .with(stepmigrate_core::notices::NoticeLayer::filtered())
        .init();
}

pub use stepmigrate_core::migration::create_next as new_migration_file;

pub struct Output {
    json: bool,
    quiet: bool,
}

impl Output {
    pub fn new(json: bool, quiet: bool) -> Output {
        Output { json, quiet }
    }

    pub fn json(&self) -> bool {
        self.json
    }

    pub fn quiet(&self) -> bool {
        self.quiet
    }

    pub fn emit(&self, doc: Value) {
        let mut stdout = std::io::stdout().lock();
        let _ = serde_json::to_writer_pretty(&mut stdout, &doc);
        let _ = writeln!(stdout);
        let _ = stdout.flush();
    }

    fn say(&self, line: impl AsRef<str>) {
        if !self.json && !self.quiet {
            outln!("{}", line.as_ref());
        }
    }

    pub fn error(&self, command: &str, error: &Error) -> ExitCode {
        let code = exit_code(error.kind());
        if self.json {
            self.emit(json!({
                "command": command,
                "ok": false,
                "error": error_document(error),
            }));
        } else {
            errln!("error[{}]: {error}", error.kind());
        }
        code
    }

    /// A problem the command's document already shows: human output names it on stderr.
    pub fn problem(&self, error: &Error) -> ExitCode {
        if !self.json {
            errln!("error[{}]: {error}", error.kind());
        }
        exit_code(error.kind())
    }

    pub fn created(&self, path: &Path) {
        if self.json {
            self.emit(json!({ "command": "new", "ok": true, "path": path.to_string_lossy() }));
        } else {
            outln!(
                "created {} (write its SQL: an empty migration is rejected)",
                shown_path(path)
            );
        }
    }

    pub fn status(&self, db: &Database, ledger: LedgerKind, plan: &Plan) {
        if self.json {
            self.emit(json!({
                "command": "status",
                "ok": plan.ensure_runnable().is_ok(),
                "database": db.to_string(),
                "ledger": ledger,
                "migrations": plan.entries,
                "summary": summary(plan),
                "warnings": plan.warnings,
            }));
            return;
        }
        outln!("database {db} (ledger: {})", ledger_label(ledger));
        let width = plan.entries.iter().map(|e| e.name.len()).max().unwrap_or(0);
        for e in &plan.entries {
            let mut line = format!("  {:<width$}  {:<15}", e.name, state_label(e.state));
            if let Some(at) = e.applied_at {
                line.push_str(&format!("  {}", at.format("%Y-%m-%d %H:%M:%S UTC")));
            }
            if let (Some(ms), State::Applied | State::UnknownApplied) =
                (e.execution_time_ms, e.state)
            {
                line.push_str(&format!("  {ms} ms"));
            }
            match (e.batches, e.state) {
                (Some(b), _) if e.batches_ran_from.is_some() => line.push_str(&format!(
                    "  {}, {} rows committed from another version of its file (checksum {}): `up` refuses to resume them with this one",
                    batches_label(b.batches),
                    thousands(b.rows),
                    e.batches_ran_from.as_deref().unwrap_or_default()
                )),
                (Some(b), State::Failed) => line.push_str(&format!(
                    "  after {} ({} rows committed; `up` resumes)",
                    batches_label(b.batches),
                    thousands(b.rows)
                )),
                (Some(b), _) => line.push_str(&format!(
                    "  {}, {} rows committed; `up` resumes",
                    batches_label(b.batches),
                    thousands(b.rows)
                )),
                (None, _) => {}
            }
            if let Some(err) = e
                .error
                .as_ref()
                .filter(|_| matches!(e.state, State::Failed | State::Dirty))
            {
                line.push_str(&format!("  last error: {err}"));
            }
            if e.runs_after_deploy && matches!(e.state, State::Pending | State::Failed) {
                line.push_str("  after deploy");
            }
            if e.waits_for_build {
                line.push_str("  waits for the build in progress");
            }
            if e.state == State::Drift {
                line.push_str(&format!(
                    "  recorded {} file {}",
                    e.recorded_checksum.as_deref().unwrap_or("?"),
                    e.checksum.as_deref().unwrap_or("?")
                ));
            }
            outln!("{line}");
        }
        let s = summary(plan);
        outln!(
            "{} applied, {} pending ({} failed before), {} dirty, {} drifted, {} unknown-applied",
            s["applied"],
            s["pending"],
            s["failed"],
            s["dirty"],
            s["drift"],
            s["unknown_applied"]
        );
        warnings(&plan.warnings);
    }

    pub fn plan(&self, command: &str, db: &Database, plan: &Plan) {
        let pending: Vec<_> = plan.pending().collect();
        if self.json {
            self.emit(json!({
                "command": command,
                "ok": true,
                "dry_run": true,
                "database": db.to_string(),
                "target": plan.target,
                "pending": pending,
                "deferred": plan.deferred().map(|e| &e.name).collect::<Vec<_>>(),
                "left_to_another_runner": plan.left_to_another_runner(),
                "summary": summary(plan),
                "warnings": plan.warnings,
            }));
            return;
        }
        if self.quiet {
            return;
        }
        let left = plan.left_to_another_runner();
        if pending.is_empty() && !left.is_empty() {
            outln!("{}", not_up_to_date(&db.to_string(), &left));
        } else if pending.is_empty() && plan.deferred().next().is_some() {
            outln!("{db}: nothing to apply in this run (the deploy's own); what is left for the run after the deploy follows");
        } else if pending.is_empty() {
            let above = plan
                .entries
                .iter()
                .filter(|e| matches!(e.state, State::Pending | State::Failed))
                .count();
            match &plan.target {
                Some(target) if above > 0 => {
                    outln!("{db}: nothing to apply up to {target} ({above} pending above it)")
                }
                _ => outln!("{db} is up to date: nothing to apply"),
            }
        } else {
            outln!("would apply {} migration(s) to {db}:", pending.len());
            for e in &pending {
                let mut notes = Vec::new();
                if e.state == State::Failed {
                    notes.push("retry after a failure".to_owned());
                }
                if let Some(b) = e.batches {
                    notes.push(format!(
                        "resumes after {} ({} rows committed)",
                        batches_label(b.batches),
                        thousands(b.rows)
                    ));
                }
                if e.transactional_off {
                    notes.push("outside a transaction".to_owned());
                }
                if e.rerun {
                    notes.push("re-run".to_owned());
                } else if e.out_of_order {
                    notes.push("out of order".to_owned());
                }
                if e.runs_after_deploy {
                    notes.push("after-deploy".to_owned());
                }
                let notes = if notes.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", notes.join(", "))
                };
                outln!("  {}{notes}", e.name);
            }
        }
        let deferred: Vec<&str> = plan.deferred().map(|e| e.name.as_str()).collect();
        if !deferred.is_empty() {
            outln!(
                "left for the run after the deploy ({} migration(s), after-deploy or requiring one): {}",
                deferred.len(),
                deferred.join(", ")
            );
        }
        warnings(&plan.warnings);
    }

    pub fn progress(&self, db: &Database) -> HumanProgress {
        HumanProgress {
            enabled: !self.json && !self.quiet,
            database: db.to_string(),
            tty: std::io::stdout().is_terminal(),
            verb: ("applying", "to"),
            line: String::new(),
            batch_line_at: None,
            done: Vec::new(),
            batches: None,
        }
    }

    pub fn rollback_progress(&self, db: &Database) -> HumanProgress {
        let mut progress = self.progress(db);
        progress.verb = ("rolling back", "of");
        progress
    }

    /// `hash`: where migrations.sum is, and whether it changed.
    pub fn hashed(&self, path: &Path, migrations: usize, unchanged: bool) {
        if self.json {
            self.emit(json!({
                "command": "hash",
                "ok": true,
                "file": path.to_string_lossy(),
                "migrations": migrations,
                "changed": !unchanged,
            }));
        } else if !self.quiet {
            if unchanged {
                outln!(
                    "{} is up to date ({migrations} migration(s))",
                    shown_path(path)
                );
            } else {
                outln!(
                    "wrote {} ({migrations} migration(s)): commit it with the migrations",
                    shown_path(path)
                );
            }
        }
    }

    /// `down --dry-run` (and what a confirmation shows): each revert and its script.
    pub fn rollback_plan(&self, db: &Database, plan: &RollbackPlan, dry_run: bool) {
        if self.json {
            self.emit(json!({
                "command": "down",
                "ok": true,
                "dry_run": dry_run,
                "database": db.to_string(),
                "target": plan.target,
                "reverts": plan.reverts,
                "warnings": plan.warnings,
            }));
            return;
        }
        if plan.reverts.is_empty() {
            if !self.quiet {
                outln!("nothing to roll back in {db}");
            }
        } else {
            outln!(
                "would roll back {} migration(s) of {db}, in this order:",
                plan.reverts.len()
            );
            for r in &plan.reverts {
                let mut notes = vec![match r.source {
                    ScriptSource::File => shown_path(&r.path),
                    ScriptSource::Ledger => "the down script kept in the ledger".to_owned(),
                }];
                if !r.transactional {
                    notes.push("outside a transaction".to_owned());
                }
                if let Some(b) = r.batches {
                    notes.push(format!(
                        "partly applied: {}, {} rows committed",
                        batches_label(b.batches),
                        thousands(b.rows)
                    ));
                }
                if r.sql.trim().is_empty()
                    || stepmigrate_core::sql::split_statements(&r.sql).is_empty()
                {
                    notes.push("nothing to undo".to_owned());
                }
                outln!("  {}  ({})", r.name, notes.join(", "));
            }
        }
        warnings(&plan.warnings);
    }

    /// `down`: like `up`'s report.
    pub fn down(&self, report: &UpReport) -> ExitCode {
        let error = report.error();
        let code = error
            .as_ref()
            .map_or(ExitCode::SUCCESS, |e| exit_code(e.kind()));
        if self.json {
            let doc = json!({
                "command": "down",
                "ok": error.is_none(),
                "run_id": report.run_id,
                "database": report.database,
                "to_revert": report.pending,
                "rolled_back": report.rolled_back(),
                "results": report.results,
                "elapsed_ms": report.elapsed_ms,
                "warnings": report.warnings,
            });
            self.emit(with_run_details(doc, report, error.as_ref()));
            return code;
        }
        warnings(&report.warnings);
        if let Some(f) = &report.failure {
            let kind = error.as_ref().map_or(ErrorKind::SqlFailed, |e| e.kind());
            errln!(
                "error[{kind}]: the rollback of {} failed: {}",
                f.name,
                f.error
            );
            if let Some(statement) = &f.error.statement {
                errln!("  statement: {}", one_line(statement, 200));
            }
            if let Some(e) = &report.record_error {
                errln!("  the failure could not be recorded in the ledger: {e}");
            }
            let not_run = report.pending - report.results.len();
            let done = report.rolled_back();
            if f.is_dirty() {
                errln!("  {done} rolled back before it; {not_run} not run. It may be half rolled back and is now dirty: check the database, then `stepmigrate resolve {} --applied` (its down did not take effect: as it was before it, applied, or partly applied for a batch migration) or `--not-applied` (rolled back: nothing of it remains).", f.version);
            } else {
                errln!("  {done} rolled back before it; {not_run} not run. {} is as it was before its down (its down script rolled back whole).", f.name);
            }
        } else if let (true, Some(e)) = (report.lock_lost, &error) {
            errln!("error[{}]: {e}", e.kind());
        } else if !self.quiet {
            outln!(
                "rolled back {} migration(s) in {} ms",
                report.rolled_back(),
                report.elapsed_ms
            );
        }
        code
    }

    pub fn up(&self, report: &UpReport) -> ExitCode {
        let error = report.error();
        let code = error
            .as_ref()
            .map_or(ExitCode::SUCCESS, |e| exit_code(e.kind()));
        if self.json {
            let mut doc = json!({
                "command": "up",
                "ok": error.is_none(),
                "run_id": report.run_id,
                "database": report.database,
                "pending": report.pending,
                "applied": report.applied(),
                "results": report.results,
                "elapsed_ms": report.elapsed_ms,
                "warnings": report.warnings,
            });
            // A failed batch migration's committed totals, where an applied one has them.
            if let (Some(f), Some(progress), Some(results)) = (
                &report.failure,
                report.failure_progress,
                doc["results"].as_array_mut(),
            ) {
                for r in results
                    .iter_mut()
                    .filter(|r| r["outcome"] == "failed" && r["version"] == json!(f.version))
                {
                    r["batches"] = json!(progress);
                }
            }
            self.emit(with_run_details(doc, report, error.as_ref()));
            return code;
        }
        warnings(&report.warnings);
        match (&report.failure, report.pending) {
            (Some(f), _) => {
                let kind = error.as_ref().map_or(ErrorKind::SqlFailed, |e| e.kind());
                errln!("error[{kind}]: migration {} failed: {}", f.name, f.error);
                if let Some(statement) = &f.error.statement {
                    errln!("  statement: {}", one_line(statement, 200));
                }
                if let Some(w) = &f.error.where_ {
                    errln!("  context: {w}");
                }
                if let Some(e) = &report.record_error {
                    errln!("  the failure could not be recorded in the ledger: {e}");
                }
                let not_run = report.pending - report.results.len();
                let applied = report.applied();
                // A batch migration keeps the batches committed before the failed one.
                let committed = report.failure_progress.filter(|p| p.batches > 0);
                if f.is_dirty() {
                    errln!("  {applied} applied before it; {not_run} not run. It may be half-applied and is now dirty: check the database, then `stepmigrate resolve {} --applied` or `--not-applied`.", f.version);
                } else if let (ErrorKind::ConnectionFailed, Some(p)) = (kind, committed) {
                    errln!("  {applied} applied before it; {not_run} not run. Its session was ended under it (an operator, a failover, a timeout, or the migration itself): the batch in flight rolled back; the {} committed before it stay ({} rows changed). Run `stepmigrate up` again: it resumes after them.", batches_label(p.batches), thousands(p.rows));
                } else if kind == ErrorKind::ConnectionFailed {
                    errln!("  {applied} applied before it; {not_run} not run. Its session was ended under it (an operator, a failover, a timeout, or the migration itself); nothing of it remains. Run `stepmigrate up` again.");
                } else if let Some(p) = committed {
                    errln!(
                        "  {applied} applied before it; {not_run} not run. The failed batch rolled back; the {} committed before it stay ({} rows changed). Fix {} and run `stepmigrate up` again: it resumes after them.",
                        batches_label(p.batches),
                        thousands(p.rows),
                        f.file.display()
                    );
                } else {
                    errln!(
                        "  {applied} applied before it; {not_run} not run. Fix {} and run `stepmigrate up` again.",
                        shown_path(&f.file)
                    );
                }
            }
            (None, _) if report.lock_lost => {
                if let Some(e) = &error {
                    errln!("error[{}]: {e}", e.kind());
                }
            }
            (None, 0) if !report.left_to_another_runner.is_empty() => {
                if !self.quiet {
                    outln!(
                        "{}",
                        not_up_to_date(&report.database, &report.left_to_another_runner)
                    );
                }
            }
            (None, 0) if !report.deferred.is_empty() => {
                if !self.quiet {
                    outln!(
                        "{}: nothing to apply in this run (the deploy's own)",
                        report.database
                    );
                }
            }
            (None, 0) => {
                if !self.quiet {
                    outln!("{} is up to date: nothing to apply", report.database);
                }
            }
            (None, _) => {
                if !self.quiet {
                    // Applied meanwhile by another runner (which this one waited for): named,
                    // as the JSON document's `already_applied` outcome does.
                    let by_other: Vec<&str> = report
                        .results
                        .iter()
                        .filter(|r| r.outcome == Outcome::AlreadyApplied)
                        .map(|r| r.name.as_str())
                        .collect();
                    if !by_other.is_empty() {
                        outln!(
                            "already applied by another runner meanwhile: {}",
                            by_other.join(", ")
                        );
                    }
                    slowest(&report.results);
                    outln!(
                        "applied {} migration(s) in {} ms",
                        report.applied(),
                        report.elapsed_ms
                    );
                }
            }
        }
        if !report.deferred.is_empty() && !self.quiet && report.failure.is_none() {
            outln!(
                "left for the run after the deploy: {} (run `stepmigrate up` once the deploy completed)",
                report.deferred.join(", ")
            );
        }
        code
    }

    /// `verify`: per migration ✓/✗, its time, the locks of each statement (an ACCESS
    /// EXCLUSIVE lock on a relation that existed before flagged), rewrites and new indexes.
    pub fn verify(&self, report: &VerifyReport) -> ExitCode {
        let error = report.error();
        let code = error
            .as_ref()
            .map_or(ExitCode::SUCCESS, |e| exit_code(e.kind()));
        if self.json {
            let mut doc = json!({
                "command": "verify",
                "ok": error.is_none(),
                "report": report,
            });
            if let Some(e) = &error {
                doc["error"] = error_document(e);
            }
            self.emit(doc);
            return code;
        }
        warnings(&report.warnings);
        if !self.quiet {
            match report.method {
                VerifyMethod::Scratch => {
                    outln!(
                        "verifying {} pending migration(s) of {} on the scratch database {}",
                        report.migrations.len(),
                        report.database,
                        report.verified_on
                    );
                    if report.copy_differs.is_empty() {
                        outln!("  it has the target's schema as `diff` compares it (grants, owners and the README's other uncaptured attributes unchecked: the copy's objects are the verifying role's) and none of its data: what depends on the rows is unknown there (marked ?), and times are an empty table's");
                    } else {
                        outln!("  \u{26a0} it does NOT have the target's schema: replaying the applied migrations' files gave a schema that differs from the target's, so the results below are the replayed schema's (marked ?), not the target's:");
                        for d in &report.copy_differs {
                            outln!("    {}", shown(d));
                        }
                        outln!("  and it has none of the target's data: what depends on the rows is unknown there too, and times are an empty table's");
                    }
                }
                VerifyMethod::InTransaction => outln!(
                    "verifying {} pending migration(s) on {} itself, in one transaction that was rolled back",
                    report.migrations.len(),
                    report.database
                ),
            }
        }
        for m in &report.migrations {
            match &m.outcome {
                VerifyOutcome::Ok if self.quiet => continue,
                VerifyOutcome::Ok if !report.copy_differs.is_empty() => outln!(
                    "  ? {}  {:.1} ms  ran on the replayed schema, which differs from the target's",
                    m.name,
                    m.duration_ms
                ),
                VerifyOutcome::Ok if m.unknown_on_empty_copy => outln!(
                    "  ? {}  {:.1} ms  ran on an empty copy: unknown on the target's rows",
                    m.name,
                    m.duration_ms
                ),
                VerifyOutcome::Ok => outln!("  \u{2713} {}  {:.1} ms", m.name, m.duration_ms),
                VerifyOutcome::Failed { error } => {
                    outln!("  \u{2717} {}  FAILED: {error}", m.name);
                    if let Some(statement) = &error.statement {
                        outln!("      statement: {}", one_line(statement, 200));
                    }
                }
                VerifyOutcome::Skipped { reason } => {
                    if !self.quiet {
                        outln!("  - {}  skipped: {reason}", m.name)
                    }
                    continue;
                }
            }
            if self.quiet {
                continue;
            }
            if m.flags.non_transactional {
                outln!("      runs outside a transaction: it ran for real on the scratch database (no lock detail)");
            }
            for st in &m.statements {
                let time = st
                    .duration_ms
                    .map_or_else(String::new, |d| format!("  ({d:.1} ms)"));
                outln!(
                    "      line {}: {}{time}",
                    st.line,
                    one_line(&st.summary, 80)
                );
                for l in &st.locks {
                    let mark = if l.access_exclusive_on_existing() {
                        "  \u{26a0} ACCESS EXCLUSIVE on an existing relation"
                    } else {
                        ""
                    };
                    let new = if l.existing { "" } else { " (new)" };
                    outln!(
                        "        {} on {} {}{new}: blocks {}{mark}",
                        l.mode,
                        l.relkind,
                        shown(&l.relation),
                        l.blocks
                    );
                }
                for r in &st.rewrites {
                    outln!(
                        "        \u{26a0} rewrites {} {} here",
                        r.relkind,
                        shown(&r.relation)
                    );
                }
                match &st.depends_on_data {
                    Some(d) if d.kind == DataKind::Outcome => {
                        outln!("        ? unknown on an empty copy: {}", shown(&d.reason))
                    }
                    Some(d) => outln!("        time on an empty copy: {}", shown(&d.reason)),
                    None => {}
                }
            }
            for t in &m.target_tables {
                outln!("      on the target: {}", shown(&target_table(t)));
            }
            if let Some(why) = &m.locks_unseen {
                outln!("      ? locks unknown on an empty copy: {}", shown(why));
            }
            // A lock is held to the COMMIT, not while its statement runs.
            for h in &m.locks_held {
                outln!(
                    "      held until COMMIT: {} on {} {} from line {}, {:.1} ms: blocks {}",
                    h.mode,
                    h.relkind,
                    shown(&h.relation),
                    h.from_line,
                    h.held_ms,
                    h.blocks
                );
            }
            for r in &m.rewrites {
                outln!(
                    "      \u{26a0} rewrites {} {}",
                    r.relkind,
                    shown(&r.relation)
                );
            }
            for i in &m.new_indexes {
                let valid = if i.valid { "valid" } else { "\u{26a0} INVALID" };
                outln!(
                    "      new index {} on {} ({valid})",
                    shown(&i.name),
                    shown(&i.table)
                );
            }
            if let Some(round_trip) = &m.round_trip {
                outln!("      round trip: {}", shown(&round_trip.describe()));
            }
        }
        if let Some(stats) = &report.statistics {
            outln!(
                "\u{26a0} planner statistics were written in place from rows this check changed and rolled back (PostgreSQL does not roll them back): {}",
                stats.tables.join(", ")
            );
            match &stats.error {
                None => outln!("  verify ran ANALYZE on them after the rollback: they describe their rows again"),
                Some(e) => outln!(
                    "  \u{26a0} ANALYZE after the rollback failed ({e}): run ANALYZE on them, or the planner misjudges them until autovacuum does"
                ),
            }
        }
        if !self.quiet {
            // What verify itself wrote: what a migration does outside its transaction is
            // refused by name before it runs, and what no name shows is the README's limit.
            let analyzed = match &report.statistics {
                Some(s) if s.analyzed => ", and ANALYZE of the tables above",
                _ => "",
            };
            let committed = match report.method {
                VerifyMethod::Scratch => format!("verify wrote nothing to {} itself", report.database),
                VerifyMethod::InTransaction => format!(
                    "verify committed only its verified events to {}{analyzed} (a sequence that nextval advanced keeps its value)",
                    report.database
                ),
            };
            let unknown = report
                .migrations
                .iter()
                .filter(|m| {
                    matches!(m.outcome, VerifyOutcome::Ok)
                        && (m.unknown_on_empty_copy || !report.copy_differs.is_empty())
                })
                .count();
            let unknown = if unknown > 0 {
                format!(" ({unknown} of them ? unknown on the target)")
            } else {
                String::new()
            };
            outln!(
                "{} ran without error{unknown}, {} failed, {} skipped in {} ms; {committed}",
                report.count("ok"),
                report.count("failed"),
                report.count("skipped"),
                report.elapsed_ms,
            );
            if report.count("skipped") > 0 && error.is_none() {
                outln!(
                    "\u{26a0} {} migration(s) NOT verified (skipped, listed above): the exit code is 0 because none failed, not because they were checked",
                    report.count("skipped")
                );
            }
            if report.migrations.iter().any(|m| m.round_trip.is_some()) {
                let rt = |f: fn(&stepmigrate_core::verify::RoundTrip) -> bool| {
                    report
                        .migrations
                        .iter()
                        .filter_map(|m| m.round_trip.as_ref())
                        .filter(|r| f(r))
                        .count()
                };
                outln!(
                    "round trip: {} ok, {} losing data, {} unknown on the target's rows, {} failed, {} skipped (schemas compared as `diff` does: what the README lists as not captured is not checked)",
                    rt(
                        |r| matches!(r, stepmigrate_core::verify::RoundTrip::Ok { .. })
                            && !r.unknown_on_target()
                            && !r.loses_data()
                    ),
                    rt(|r| r.loses_data()),
                    rt(|r| r.unknown_on_target() && !r.loses_data()),
                    rt(|r| r.failed()),
                    rt(|r| matches!(r, stepmigrate_core::verify::RoundTrip::Skipped { .. })),
                );
            }
        }
        if let Some(e) = &error {
            errln!("error[{}]: {e}", e.kind());
        }
        code
    }

    pub fn resolved(&self, name: &str, resolved: Resolved) {
        if self.json {
            self.emit(
                json!({ "command": "resolve", "ok": true, "name": name, "resolution": resolved }),
            );
        } else {
            match resolved {
                Resolved::Applied => outln!("{name} is recorded as applied"),
                Resolved::PartlyApplied => outln!(
                    "{name} is partly applied again, as before its down (its committed batches stay): the next `up` resumes it, `down` reverts it"
                ),
                Resolved::NotApplied => {
                    outln!("{name} is pending again: the next `up` runs it")
                }
            }
        }
    }

    pub fn ledger_consistent(&self, kind: LedgerKind) {
        if self.json {
            self.emit(
                json!({ "command": "ledger check", "ok": true, "ledger": kind, "differences": [] }),
            );
            return;
        }
        self.say(match kind {
            LedgerKind::EventSourced => {
                "the ledger is consistent: schema_migrations equals the fold of its events"
            }
            LedgerKind::Missing => "there is no ledger in this database yet: nothing to check",
            LedgerKind::Legacy => {
                "schema_migrations is the old runner's table; the next `stepmigrate up` adopts it"
            }
        });
    }

    pub fn ledger_rebuilt(&self, rows: u64) {
        if self.json {
            self.emit(json!({ "command": "ledger rebuild", "ok": true, "rows": rows }));
        } else {
            self.say(format!(
                "rebuilt schema_migrations from its events: {rows} rows"
            ));
        }
    }
}

/// A run with nothing to apply while another runner has migrations in hand: not up to date.
fn not_up_to_date(database: &str, left: &[String]) -> String {
    format!(
        "{database} is NOT up to date: nothing to apply now, but another runner has {} in hand (it applies them; run `stepmigrate up` again once it is done)",
        left.join(", ")
    )
}

fn summary(plan: &Plan) -> Value {
    json!({
        "applied": plan.count(State::Applied),
        // Pending whoever applies them: this run, or another runner's build.
        "pending": plan.pending().count() + plan.entries.iter().filter(|e| e.waits_for_build).count(),
        "failed": plan.count(State::Failed),
        "dirty": plan.count(State::Dirty),
        "in_progress": plan.count(State::InProgress),
        "drift": plan.count(State::Drift),
        "unknown_applied": plan.count(State::UnknownApplied),
    })
}

/// `1 batch`, `6 batches`.
fn batches_label(n: u64) -> String {
    if n == 1 {
        "1 batch".to_owned()
    } else {
        format!("{} batches", thousands(n))
    }
}

fn state_label(state: State) -> &'static str {
    match state {
        State::Applied => "applied",
        State::Pending => "pending",
        State::Failed => "failed (retry)",
        State::Dirty => "DIRTY",
        State::InProgress => "in progress (another runner)",
        State::Drift => "DRIFT",
        State::UnknownApplied => "unknown-applied",
    }
}

fn ledger_label(kind: LedgerKind) -> &'static str {
    match kind {
        LedgerKind::Missing => "none yet",
        LedgerKind::Legacy => "old runner's table, adopted on the next up",
        LedgerKind::EventSourced => "event-sourced",
    }
}

fn warnings(list: &[String]) {
    // A warning's own line breaks (a list of problems) stay; any other control character
    // (from a name in the database) is shown escaped.
    for w in list {
        let lines: Vec<String> = w.split('\n').map(shown).collect();
        errln!("warning: {}", lines.join("\n"));
    }
}

/// Text from outside the program (a file name, a message quoting one) as it may be printed in
/// human output: a control character is shown escaped (`\n`, `\u{1b}`), never obeyed, so a
/// file name cannot start a line of its own (a GitHub workflow command) or move the cursor.
pub fn shown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A path as [`shown`] prints it.
pub fn shown_path(path: &Path) -> String {
    shown(&path.display().to_string())
}

/// A text on one line, at most `max` characters, with control characters (a notice's escape
/// codes) shown, not obeyed.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect();
    if flat.chars().count() > max {
        format!("{}...", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}

/// Prints each migration as it runs, with its time and the run's progress.
pub struct HumanProgress {
    enabled: bool,
    database: String,
    tty: bool,
    /// "applying ... to", "rolling back ... of".
    verb: (&'static str, &'static str),
    /// On a terminal: the current migration's line up to its outcome (`  [2/5] name ... `),
    /// redrawn with a batch migration's progress after it.
    line: String,
    /// When the last progress line of a batch migration was printed (not on a terminal:
    /// one line every few seconds, not one per batch).
    batch_line_at: Option<std::time::Instant>,
    /// The migrations this run applied or rolled back, in order: what an interrupt that
    /// drops the run's report must still name (with `--json` too).
    pub done: Vec<String>,
    /// The batches this run committed of a batch migration it has not finished: its name,
    /// batches and rows.
    pub batches: Option<(String, u64, u64)>,
}

impl Drop for HumanProgress {
    /// A run cut short (an interrupt) leaves the current migration's line open on a
    /// terminal: end it, so that the error after it starts a line of its own.
    fn drop(&mut self) {
        if self.enabled && self.tty && !self.line.is_empty() {
            outln!();
        }
    }
}

/// Between two progress lines of a batch migration in a log.
const BATCH_LINE_EVERY: Duration = Duration::from_secs(10);

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration for people: `950 ms`, `12.3 s`, `4m05s`, `2h03m`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{} ms", d.as_millis()),
        1..60 => format!("{:.1} s", d.as_secs_f64()),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// A batch migration's progress in one line: rows and batches so far, this run's rate, and
/// what is left when the table's size is known.
pub fn batch_line(report: &stepmigrate_core::batch::BatchReport) -> String {
    let p = &report.progress;
    let mut line = format!(
        "{} rows in {} batches",
        thousands(p.rows),
        thousands(p.batches)
    );
    if let Some(rate) = report.rate() {
        line.push_str(&format!(", {} rows/s", thousands(rate.round() as u64)));
    }
    match report.remaining() {
        Some((0, _)) => {}
        Some((left, time)) => line.push_str(&format!(
            ", ~{} left of ~{} (~{})",
            thousands(left),
            thousands(report.table_rows_estimate.unwrap_or_default()),
            human_duration(time)
        )),
        None => {}
    }
    line
}

impl Progress for HumanProgress {
    fn waiting_for_lock(&mut self) {
        if self.enabled {
            errln!(
                "another runner is applying migrations to {}; waiting for it to finish...",
                self.database
            );
        }
    }

    fn waiting_for_migration(&mut self, pid: i32) {
        if self.enabled {
            errln!("a migration's transaction is open in backend {pid} of {} (another runner at work, or a killed one's statement running on); waiting for it to end, up to the lock wait (--lock-wait, STEPMIGRATE_LOCK_WAIT), before planning from the ledger", self.database);
        }
    }

    fn waiting_for_session(&mut self, holder: &stepmigrate_core::lock::LockHolder) {
        if self.enabled {
            errln!("waiting for a lock on {}: {holder}; it gives up after the lock_timeout (--lock-timeout, STEPMIGRATE_LOCK_TIMEOUT; 0: never), Ctrl-C stops it", self.database);
        }
    }

    fn handing_over(&mut self, m: &Migration) {
        if self.enabled {
            errln!(
                "  {} used its batch budget (--batch-budget): letting go of the migration lock for a moment, so that a waiting runner (a deploy) goes first; then it goes on",
                m.name
            );
        }
    }

    fn starting(&mut self, index: usize, total: usize, m: &Migration) {
        if !self.enabled {
            return;
        }
        if index == 0 {
            let (verb, preposition) = self.verb;
            outln!(
                "{verb} {total} migration(s) {preposition} {}",
                self.database
            );
        }
        self.batch_line_at = None;
        if self.tty {
            self.line = format!(
                "  [{:>w$}/{total}] {} ... ",
                index + 1,
                m.name,
                w = digits(total)
            );
            let mut stdout = std::io::stdout().lock();
            let _ = write!(stdout, "{}", self.line);
            let _ = stdout.flush();
        }
    }

    fn batch(&mut self, m: &Migration, report: &stepmigrate_core::batch::BatchReport) {
        self.batches = Some((m.name.clone(), report.run_batches, report.run_rows));
        if !self.enabled {
            return;
        }
        if self.tty {
            let mut stdout = std::io::stdout().lock();
            let _ = write!(stdout, "\r\x1b[2K{}{}", self.line, batch_line(report));
            let _ = stdout.flush();
            return;
        }
        let due = self
            .batch_line_at
            .is_none_or(|at| at.elapsed() >= BATCH_LINE_EVERY);
        if due {
            self.batch_line_at = Some(std::time::Instant::now());
            outln!("      {}: {}", m.name, batch_line(report));
        }
    }

    fn retrying(&mut self, m: &Migration, attempt: u32, delay: Duration, reason: &str) {
        if self.enabled {
            errln!(
                "  {} hit {reason}; try {} in {:.1} s",
                m.name,
                attempt + 1,
                delay.as_secs_f32()
            );
        }
    }

    fn finished(&mut self, index: usize, total: usize, r: &MigrationResult) {
        if matches!(
            r.outcome,
            Outcome::Applied { .. } | Outcome::RolledBack { .. }
        ) {
            self.done.push(r.name.clone());
            if self
                .batches
                .as_ref()
                .is_some_and(|(name, _, _)| *name == r.name)
            {
                self.batches = None;
            }
        }
        if !self.enabled {
            return;
        }
        let what = match &r.outcome {
            Outcome::Applied {
                execution_time_ms,
                batches: Some(b),
                ..
            } => format!(
                "ok ({}, {} rows in {} batches)",
                human_duration(Duration::from_millis(*execution_time_ms)),
                thousands(b.rows),
                thousands(b.batches)
            ),
            Outcome::Applied {
                execution_time_ms, ..
            } => format!("ok ({execution_time_ms} ms)"),
            Outcome::Unfinished { progress } => format!(
                "paused ({} rows in {} batches so far)",
                thousands(progress.rows),
                thousands(progress.batches)
            ),
            Outcome::AlreadyApplied => "already applied by another runner".to_owned(),
            Outcome::Failed { failure } => format!("FAILED: {}", failure.error),
            Outcome::Busy => "busy".to_owned(),
            Outcome::Dirty => "DIRTY".to_owned(),
            Outcome::LockLost => "not run: the migration lock was lost".to_owned(),
            Outcome::RolledBack {
                execution_time_ms, ..
            } => format!("rolled back ({execution_time_ms} ms)"),
            Outcome::AlreadyRolledBack => "already rolled back by another runner".to_owned(),
        };
        if self.tty {
            // Over a batch migration's progress, if any was drawn.
            outln!("\r\x1b[2K{}{what}", self.line);
            self.line.clear();
        } else {
            outln!(
                "  [{:>w$}/{total}] {} ... {what}",
                index + 1,
                r.name,
                w = digits(total)
            );
        }
        let notices = match &r.outcome {
            Outcome::Applied { notices, .. } | Outcome::RolledBack { notices, .. } => {
                notices.as_slice()
            }
            Outcome::Failed { failure } => failure.notices.as_slice(),
            _ => &[],
        };
        for notice in notices {
            outln!("      {}", one_line(notice, 300));
        }
    }
}

/// After a long run the few migrations that took the time are worth a line each: the
/// progress lines are long gone from the screen.
fn slowest(results: &[MigrationResult]) {
    const LONG_RUN: usize = 20;
    const SHOWN: usize = 5;
    if results.len() < LONG_RUN {
        return;
    }
    let mut timed: Vec<(&str, u64)> = results
        .iter()
        .filter_map(|r| match r.outcome {
            Outcome::Applied {
                execution_time_ms, ..
            } => Some((r.name.as_str(), execution_time_ms)),
            _ => None,
        })
        .collect();
    timed.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    outln!("slowest:");
    for (name, ms) in timed.iter().take(SHOWN) {
        outln!("  {ms:>8} ms  {name}");
    }
}

fn digits(n: usize) -> usize {
    n.to_string().len()
}

// `snapshot` and `diff`.

impl Output {
    /// The snapshot document on stdout, or written to `file` (then, human: one line saying
    /// so; `--json`: where and how many objects).
    pub fn snapshot(
        &self,
        db: &Database,
        snapshot: &stepmigrate_core::schema::Snapshot,
        file: Option<&Path>,
    ) -> Result<(), Error> {
        let text = snapshot.to_json_pretty();
        let Some(file) = file else {
            // The document is the command's product: a write that fails (a full disk) is an
            // error; a reader that went away (`| head`) is not.
            let mut stdout = std::io::stdout().lock();
            return match stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::InvalidInput(
                    format!("cannot write the snapshot to stdout: {e}"),
                )),
                _ => Ok(()),
            };
        };
        std::fs::write(file, text).map_err(|e| {
            Error::InvalidInput(format!(
                "{}: cannot write the snapshot: {e}",
                file.display()
            ))
        })?;
        if self.json {
            self.emit(json!({
                "command": "snapshot",
                "ok": true,
                "database": db.to_string(),
                "path": file.to_string_lossy(),
                "objects": snapshot.object_count(),
            }));
        } else {
            self.say(format!(
                "wrote the schema of {db} ({} objects) to {}",
                snapshot.object_count(),
                shown_path(file)
            ));
        }
        Ok(())
    }

    /// Human: one line per change (nothing when identical, unless verbose enough to say
    /// so); `--json`: `{"changes": [...]}`.
    pub fn schema_diff(&self, diff: &stepmigrate_core::schema::SchemaDiff, warnings: &[String]) {
        if self.json {
            let mut doc = json!(diff);
            if !warnings.is_empty() {
                doc["warnings"] = json!(warnings);
            }
            self.emit(doc);
            return;
        }
        for w in warnings {
            errln!("warning: {w}");
        }
        if self.quiet {
            return;
        }
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(diff.render_text().as_bytes());
        let _ = stdout.flush();
    }
}

/// What `up` and `down` add to their JSON document when it applies: a lost lock, a failure
/// that could not be recorded, what the deploy's run left pending, the error.
fn with_run_details(mut doc: Value, report: &UpReport, error: Option<&Error>) -> Value {
    if report.lock_lost {
        doc["lock_lost"] = json!(true);
    }
    if let Some(e) = &report.record_error {
        doc["record_error"] = json!(e);
    }
    if !report.deferred.is_empty() {
        doc["deferred"] = json!(report.deferred);
    }
    if !report.left_to_another_runner.is_empty() {
        doc["left_to_another_runner"] = json!(report.left_to_another_runner);
    }
    if let Some(e) = error {
        doc["error"] = error_document(e);
    }
    doc
}

/// A table on the target, for people: `public.t: about 200,000 rows, 15.2 MB`.
fn target_table(t: &TargetTable) -> String {
    let mut parts = Vec::new();
    if let Some(rows) = t.rows {
        parts.push(format!("about {} rows", thousands(rows.max(0) as u64)));
    }
    if let Some(bytes) = t.bytes {
        parts.push(format!("{:.1} MB", bytes as f64 / 1_048_576.0));
    }
    if let Some(note) = &t.note {
        parts.push(note.clone());
    }
    format!("{}: {}", t.relation, parts.join(", "))
}
