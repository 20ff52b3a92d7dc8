//! The preview itself: what the branch changes against its base, each new migration's lint
//! findings, the base's migrations applied to a scratch database, the new ones verified on it
//! (each rolled back, then applied so the next sees it), and the schema diff of the scratch
//! database before and after them.

use std::path::Path;
use std::time::Instant;

use stepmigrate_check::{check_script_with, learn_columns, Columns, LintRules, Script, Severity};
use stepmigrate_core::config::Settings;
use stepmigrate_core::db::Database;
use stepmigrate_core::migration::{Migration, Mode};
use stepmigrate_core::runner::new_run_id;
use stepmigrate_core::schema::{diff, ChangeType, LedgerFilter, Snapshot, SnapshotOptions};
use stepmigrate_core::verify::{
    self, verify_pending_with, MigrationVerification, RoundTrip, RoundTripStep, ScratchDatabase,
    VerifyOptions,
};
use stepmigrate_core::Error;
use tracing::{error, info};

use super::changes::{sides, AddedMigration, Sides};
use super::report::{
    FileReport, FindingSeverity, LintFinding, LockReport, NewIndex, PreviewReport, RoundTripReport,
    SchemaChange, SchemaChangeKind, ScratchTiming, Verification, VerifyOutcome,
};

/// Where the scratch database comes from.
pub enum Scratch {
    /// Created (and dropped) on this database's server.
    CreateOn(Database),
    /// An empty database of the user's (`--dev-url`), emptied again afterwards; with the
    /// database `DATABASE_URL` names, which it must not be.
    Dev(Database, Option<Box<Database>>),
}

/// Builds the whole preview of the working tree's `migrations_dir` against `base`.
pub async fn preview(
    migrations_dir: &Path,
    base: &str,
    rules: &LintRules,
    settings: &Settings,
    scratch: Scratch,
    interrupted: impl std::future::Future<Output = Error>,
) -> Result<PreviewReport, Error> {
    let started = Instant::now();
    let sides = sides(migrations_dir, base)?;
    // `up` and `check` refuse a stale `migrations.sum`: a preview must not pass what they
    // refuse (two branches that each added a migration).
    sides.working.ensure_sum_current()?;
    // Each new migration is linted on the column types the migrations before it made, as
    // `check` of the whole directory does.
    let mut columns = Columns::default();
    let mut files: Vec<FileReport> = Vec::new();
    for m in sides.working.migrations() {
        let script = Script {
            path: &m.path,
            sql: &m.sql,
            mode: m.directives.mode,
        };
        let Some(added) = sides
            .changes
            .added
            .iter()
            .find(|a| a.migration.version.number() == m.version.number())
        else {
            learn_columns(&script, rules, &mut columns);
            continue;
        };
        files.push(FileReport {
            version: m.version.clone(),
            name: m.name.clone(),
            file: added.migration.file.clone(),
            findings: lint(m, added, rules, &mut columns),
            verification: None,
            requires: m.directives.requires.clone(),
            conflicts: m.directives.conflicts.clone(),
            irreversible: m.directives.irreversible,
        });
    }

    let scratch = match scratch {
        Scratch::CreateOn(server) => {
            ScratchDatabase::create(&server, "stepmigrate_preview").await?
        }
        // Where DATABASE_URL's database cannot be reached, it cannot be the dev one either
        // (whose own errors then come from opening it).
        Scratch::Dev(db, Some(target)) => match ScratchDatabase::dev_for(db.clone(), &target).await
        {
            Ok(scratch) => scratch,
            Err(e) if e.kind() == stepmigrate_core::error::ErrorKind::InvalidInput => {
                return Err(e)
            }
            Err(_) => ScratchDatabase::dev(db).await?,
        },
        Scratch::Dev(db, None) => ScratchDatabase::dev(db).await?,
    };
    // Stopped part way, it still drops what it made.
    let outcome = tokio::select! {
        outcome = on_scratch(&scratch, &sides, settings) => outcome,
        e = interrupted => Err(e),
    };
    let name = scratch.name().to_owned();
    if let Err(e) = scratch.drop().await {
        error!(scratch = %name, error = %e, "could not remove (or empty) the scratch database: remove it by hand");
    }
    let run = outcome?;

    for file in &mut files {
        file.verification = run
            .verified
            .iter()
            .find(|v| v.version == file.version)
            .and_then(verification);
    }
    let mut report = PreviewReport {
        changes: sides.changes,
        files,
        schema_diff: run.schema_diff,
        scratch: ScratchTiming {
            setup_ms: run.setup_ms,
            verify_ms: run.verify_ms,
            total_ms: started.elapsed().as_millis() as u64,
        },
        base_migrations_applied: sides.base.migrations().len(),
    };
    report.normalize();
    Ok(report)
}

/// What the scratch database showed.
struct ScratchRun {
    verified: Vec<MigrationVerification>,
    schema_diff: Vec<SchemaChange>,
    setup_ms: u64,
    verify_ms: u64,
}

async fn on_scratch(
    scratch: &ScratchDatabase,
    sides: &Sides,
    settings: &Settings,
) -> Result<ScratchRun, Error> {
    let run_id = new_run_id("preview");
    let added: Vec<Migration> = sides
        .changes
        .added
        .iter()
        .filter_map(|a| sides.working.get(&a.migration.version).cloned())
        .collect();
    // A new migration whose version the base has already (a collision the changes report) is
    // not run: the base's stays.
    let (set, _collisions) = sides.base.with_migrations(added);
    let migrator = scratch.migrator(&set, settings);

    let setup = Instant::now();
    scratch.ensure_replayable(&sides.base, None)?;
    if let Some(newest) = sides.base.migrations().last() {
        scratch
            .apply(&migrator, &newest.version, &run_id)
            .await
            .map_err(|e| base_failed(&sides.changes.base, e))?;
    }
    let options = SnapshotOptions {
        ledger: match &settings.ledger_schema {
            Some(schema) => LedgerFilter::Schema(schema.clone()),
            None => LedgerFilter::Auto,
        },
        ..SnapshotOptions::default()
    };
    let before = Snapshot::capture_database(scratch.database(), &options).await?;
    let setup_ms = setup.elapsed().as_millis() as u64;
    info!(
        base = sides.base.migrations().len(),
        setup_ms, "the scratch database has the base's schema"
    );

    let verifying = Instant::now();
    let pending: Vec<&Migration> = sides
        .changes
        .added
        .iter()
        .filter_map(|a| set.get(&a.migration.version))
        .filter(|m| sides.base.get(&m.version).is_none())
        .collect();
    // Each new migration's up/down round trip too: its down must undo it.
    let round_trip = VerifyOptions { round_trip: true };
    let verified = verify_pending_with(&migrator, scratch, &pending, &run_id, &round_trip).await?;
    let verify_ms = verifying.elapsed().as_millis() as u64;
    let after = Snapshot::capture_database(scratch.database(), &options).await?;
    Ok(ScratchRun {
        verified,
        schema_diff: schema_changes(&before, &after),
        setup_ms,
        verify_ms,
    })
}

/// The base's own migrations must apply to an empty database: if not, the preview has
/// nothing to stand on, and says so.
fn base_failed(base: &str, e: Error) -> Error {
    Error::InvalidInput(format!(
        "the base `{base}`'s migrations do not apply to an empty scratch database, so the preview cannot start from them: {e}"
    ))
}

fn lint(
    m: &Migration,
    added: &AddedMigration,
    rules: &LintRules,
    columns: &mut Columns,
) -> Vec<LintFinding> {
    let script = Script {
        path: &m.path,
        sql: &m.sql,
        mode: m.directives.mode,
    };
    check_script_with(&script, rules, columns)
        .into_iter()
        .chain(stepmigrate_check::lint::after_deploy_findings(m, rules))
        .map(|f| LintFinding {
            // As the pull request shows it, not as it lies on this disk.
            file: added.migration.file.clone(),
            line: f.line,
            column: f.column,
            rule: f.rule,
            severity: match f.severity {
                Severity::Error => FindingSeverity::Error,
                Severity::Warning => FindingSeverity::Warning,
            },
            message: f.message,
            help: f.help,
        })
        .collect()
}

/// The report's view of a verification; none for one that was not run because an earlier one
/// failed (or could not be verified).
fn verification(v: &MigrationVerification) -> Option<Verification> {
    let outcome = match &v.outcome {
        verify::VerifyOutcome::Ok => VerifyOutcome::Ok,
        verify::VerifyOutcome::Failed { error } => VerifyOutcome::Failed {
            error: error.to_string(),
        },
        // Not run because it touches the server or acts outside its transaction: `verify`
        // fails it (exit 1), and so does the preview.
        verify::VerifyOutcome::Skipped { reason }
            if v.touches_server.is_some() || v.acts_outside_transaction.is_some() =>
        {
            VerifyOutcome::Failed {
                error: reason.clone(),
            }
        }
        verify::VerifyOutcome::Skipped { .. } => return None,
    };
    let locks = v
        .statements
        .iter()
        .flat_map(|s| &s.locks)
        .map(|l| LockReport {
            relation: l.relation.clone(),
            mode: l.mode.clone(),
            existing: l.existing,
        })
        .collect();
    Some(
        Verification::new(
            outcome,
            v.duration_ms.round() as u64,
            v.statements.len(),
            locks,
            v.rewrites.iter().map(|r| r.relation.clone()).collect(),
            v.new_indexes
                .iter()
                .map(|i| NewIndex {
                    name: i.name.clone(),
                    table: i.table.clone(),
                    valid: i.valid,
                })
                .collect(),
            v.mode == Mode::NoTransaction,
        )
        // Code (a `DO` block, a procedure or function called) may branch on rows: what it
        // did on the empty copy may not be what it does where rows are. Other statements
        // that depend on data may fail there (what the preview cannot know, said in words)
        // but do what they do.
        .depending_on_data(v.statements.iter().any(|s| {
            let verb = s
                .summary
                .split_whitespace()
                .next()
                .map(str::to_ascii_uppercase);
            match verb.as_deref() {
                Some("DO" | "CALL") => true,
                Some("SELECT" | "EXECUTE") => s.depends_on_data.is_some(),
                _ => false,
            }
        }))
        .with_round_trip(v.round_trip.as_ref().map(|r| match r {
            RoundTrip::Ok { loses_data, .. } if !loses_data.is_empty() => {
                RoundTripReport::LosesData {
                    what: loses_data.clone(),
                }
            }
            RoundTrip::Ok {
                unknown_on_target: Some(why),
                ..
            } => RoundTripReport::UnknownOnTarget {
                reason: why.clone(),
            },
            RoundTrip::Ok { .. } => RoundTripReport::Ok,
            RoundTrip::Skipped { reason } => RoundTripReport::Skipped {
                reason: reason.clone(),
            },
            RoundTrip::Failed {
                step: RoundTripStep::NoDownFile,
                message,
                ..
            } => RoundTripReport::NoDownFile {
                message: message.clone(),
            },
            RoundTrip::Failed { message, .. } => RoundTripReport::Failed {
                message: message.clone(),
            },
        })),
    )
}

fn schema_changes(before: &Snapshot, after: &Snapshot) -> Vec<SchemaChange> {
    diff(before, after)
        .changes()
        .map(|c| SchemaChange {
            change: match c.change {
                ChangeType::Added => SchemaChangeKind::Added,
                ChangeType::Dropped => SchemaChangeKind::Dropped,
                ChangeType::Changed => SchemaChangeKind::Changed,
            },
            kind: c.kind.as_str().to_owned(),
            name: c.name.clone(),
            detail: (!c.attributes.is_empty()).then(|| {
                c.attributes
                    .iter()
                    .map(|a| a.render())
                    .collect::<Vec<_>>()
                    .join("; ")
            }),
        })
        .collect()
}
