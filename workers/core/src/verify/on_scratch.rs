//! Scratch mode: the target's pending migrations verified on a scratch database brought to
//! the target's applied history through the normal runner; each verified in a rolled-back
//! transaction, then applied for real so that the next one sees it. The target is only read.

use std::time::Instant;

use tracing::{info_span, Instrument};

use super::catalog::{compare_catalogs, read_catalog, read_storage};
use super::empty_copy::{copy_relations, fill_target_tables, mark_empty_copy, CopyNames};
use super::report::{
    flags, ms, skipped, summary_of, Method, MigrationVerification, RoundTrip, StatementReport,
    VerifyOptions, VerifyOutcome, VerifyReport,
};
use super::round_trip::{before_up, round_trip};
use super::scratch::{copy_differences, ScratchDatabase};
use super::statements::{refused_outside_transaction, timeouts, verify_in_open_transaction};
use crate::apply::RESET_SESSION;
use crate::error::{Error, SqlError};
use crate::migration::{Migration, Version};
use crate::plan::{Scope, State};
use crate::runner::{Migrator, Quiet};
use crate::sql;

/// PostgreSQL's `invalid_transaction_termination`: a COMMIT inside a procedure called in a
/// transaction block.
const INVALID_TRANSACTION_TERMINATION: &str = "2D000";

/// Verifies `pending` (in order) on a scratch database that `migrator` applies to: before
/// each, everything before it in the set is applied through the runner; a transactional
/// migration is verified in a transaction that is rolled back, then applied for real; a
/// migration outside a transaction is applied for real and observed from the catalog. After
/// a failure the rest are skipped. The lead's `preview` uses it the same way.
pub async fn verify_pending(
    migrator: &Migrator,
    scratch: &ScratchDatabase,
    pending: &[&Migration],
    run_id: &str,
) -> Result<Vec<MigrationVerification>, Error> {
    verify_pending_with(
        migrator,
        scratch,
        pending,
        run_id,
        &VerifyOptions::default(),
    )
    .await
}

/// [`verify_pending`], with the up/down round trip of each migration when
/// `options.round_trip`: a failed round trip stops the run like a failed verification (the
/// rest are reported not run).
pub async fn verify_pending_with(
    migrator: &Migrator,
    scratch: &ScratchDatabase,
    pending: &[&Migration],
    run_id: &str,
    options: &VerifyOptions,
) -> Result<Vec<MigrationVerification>, Error> {
    let mut results = Vec::with_capacity(pending.len());
    let mut failed: Option<String> = None;
    let not_run = |reason: &str| {
        options.round_trip.then(|| RoundTrip::Skipped {
            reason: format!("not run: {reason}"),
        })
    };
    for m in pending {
        if let Some(name) = &failed {
            let reason = format!("{name} failed before it");
            results.push(MigrationVerification {
                round_trip: not_run(&reason),
                ..skipped(m, format!("not verified: {reason}"))
            });
            continue;
        }
        if let Some((why, what)) = scratch.cannot_run(m) {
            results.push(MigrationVerification {
                round_trip: not_run("not verified"),
                touches_server: Some(what.to_owned()),
                ..skipped(m, why)
            });
            failed = Some(format!("{} (not verified)", m.name));
            continue;
        }
        if let Some(refused) = refused_outside_transaction(m, false) {
            results.push(MigrationVerification {
                round_trip: not_run("not verified"),
                ..refused
            });
            failed = Some(format!("{} (not verified)", m.name));
            continue;
        }
        let span = info_span!("verify", version = m.version.as_str(), name = %m.name);
        let before = if options.round_trip {
            if let Some(previous) = migrator.set.previous(&m.version) {
                migrator_apply(migrator, &previous.version, run_id).await?;
            }
            Some(before_up(migrator).await?)
        } else {
            None
        };
        let mut result = verify_one_on_scratch(migrator, m, run_id)
            .instrument(span.clone())
            .await?;
        mark_empty_copy(&mut result, m);
        if matches!(result.outcome, VerifyOutcome::Failed { .. }) {
            failed = Some(m.name.clone());
            result.round_trip = not_run("the migration failed");
        } else if matches!(result.outcome, VerifyOutcome::Skipped { .. }) {
            // Not applied on the copy: what follows cannot be verified on it.
            failed = Some(format!("{} (not verified)", m.name));
            result.round_trip = not_run("not verified");
        } else if let Some(before) = before {
            let round_trip = round_trip(migrator, m, &before, run_id)
                .instrument(span)
                .await?;
            if round_trip.failed() {
                failed = Some(format!("the round trip of {}", m.name));
            }
            result.round_trip = Some(round_trip);
        }
        results.push(result);
    }
    Ok(results)
}

async fn verify_one_on_scratch(
    migrator: &Migrator,
    m: &Migration,
    run_id: &str,
) -> Result<MigrationVerification, Error> {
    if let Some(previous) = migrator.set.previous(&m.version) {
        migrator_apply(migrator, &previous.version, run_id).await?;
    }
    let mut conn = migrator.db.connect().await?;
    if let Some(name) = remote_extension(&mut conn).await? {
        return Ok(MigrationVerification {
            acts_outside_transaction: Some(format!("{name}: {}", sql::REMOTE_EXTENSION)),
            ..skipped(
                m,
                format!(
                    "not verified: the {name} extension is installed on the verification database ({}): any statement may reach it, by a name built at run time too, so nothing is run there (verify on a --dev-url database of a server of its own)",
                    sql::REMOTE_EXTENSION
                ),
            )
        });
    }
    if m.transactional() {
        sqlx::raw_sql("BEGIN")
            .execute(&mut *conn)
            .await
            .map_err(|e| Error::database("starting the verification", e))?;
        let verified =
            verify_in_open_transaction(&mut conn, m, timeouts(m, &migrator.settings, None), false)
                .await;
        // Whatever happened, nothing of it stays.
        let rolled_back = sqlx::raw_sql(&format!("ROLLBACK;{RESET_SESSION}"))
            .execute(&mut *conn)
            .await;
        let verified = verified?;
        rolled_back.map_err(|e| Error::database("rolling back the verification", e))?;
        drop(conn);
        if verified.outcome == VerifyOutcome::Ok {
            // For real, so the next migration sees it.
            let report = migrator
                .up(&Scope::up_to(Some(&m.version)), run_id, &mut Quiet)
                .await?;
            if let Some(f) = &report.failure {
                return Ok(MigrationVerification {
                    outcome: VerifyOutcome::Failed {
                        error: f.error.clone(),
                    },
                    ..verified
                }
                .with_server_failure());
            }
        }
        return Ok(verified.with_server_failure());
    }
    // Outside a transaction it can only run for real: through the runner, on the scratch
    // database, observed from the catalog.
    let before = read_storage(&mut conn).await?;
    drop(conn);
    let started = Instant::now();
    let report = migrator
        .up(&Scope::up_to(Some(&m.version)), run_id, &mut Quiet)
        .await?;
    let duration_ms = ms(started.elapsed());
    let mut conn = migrator.db.connect().await?;
    let after = read_catalog(&mut conn, None).await?;
    let (rewrites, mut new_indexes) = compare_catalogs(&before, &after);
    // The runner's first run on the scratch database made the ledger: its indexes are not
    // the migration's.
    let ledger = migrator.ledger_schema(&mut conn).await?;
    let ledger_tables = ["schema_migrations", "schema_migration_events"]
        .map(|table| format!("{}.{table}", crate::schema::quote_ident(ledger.name())));
    new_indexes.retain(|i| !ledger_tables.contains(&i.table));
    let statements: Vec<StatementReport> = sql::split_statements(&m.sql)
        .iter()
        .map(|s| StatementReport {
            line: s.line,
            summary: summary_of(s.text),
            duration_ms: None,
            locks: Vec::new(),
            rewrites: Vec::new(),
            depends_on_data: None,
        })
        .collect();
    let outcome = match (&report.failure, report.applied()) {
        // The runner wraps each statement in a transaction of its own here, so that the
        // server guard comes before its COMMIT: a procedure that commits cannot run so, and
        // is not known to fail where `up` runs it bare.
        (Some(f), _) if f.error.sqlstate == INVALID_TRANSACTION_TERMINATION => {
            VerifyOutcome::Skipped {
                reason: format!(
                    "not verified: line {} ends transactions (a procedure that COMMITs), which cannot run inside the transaction that keeps a change of the whole server from committing on the scratch database; `up` runs it outside one",
                    f.error.line.unwrap_or_default()
                ),
            }
        }
        (Some(f), _) => VerifyOutcome::Failed {
            error: f.error.clone(),
        },
        (None, 1) => VerifyOutcome::Ok,
        (None, _) => VerifyOutcome::Failed {
            error: SqlError {
                sqlstate: "XX000".into(),
                message: "the runner did not apply it on the scratch database".into(),
                ..SqlError::default()
            },
        },
    };
    let flags = flags(m, &statements, &rewrites);
    Ok(MigrationVerification {
        version: m.version.clone(),
        name: m.name.clone(),
        file: m.path.clone(),
        mode: m.directives.mode,
        outcome,
        duration_ms,
        statements,
        rewrites,
        new_indexes,
        flags,
        round_trip: None,
        locks_held: Vec::new(),
        unknown_on_empty_copy: false,
        target_tables: Vec::new(),
        locks_unseen: None,
        touches_server: None,
        acts_outside_transaction: None,
    }
    .with_server_failure())
}

/// An extension of [`sql::REMOTE_EXTENSIONS`] installed where `conn` is (by the replayed
/// history, a template, or a name its words did not show).
async fn remote_extension(conn: &mut sqlx::PgConnection) -> Result<Option<String>, Error> {
    sqlx::query_scalar(
        "SELECT extname::text FROM pg_catalog.pg_extension WHERE extname = ANY($1) ORDER BY 1 LIMIT 1",
    )
    .bind(&sql::REMOTE_EXTENSIONS[..])
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| Error::database("reading the verification database's extensions", e))
}

pub(super) async fn migrator_apply(
    migrator: &Migrator,
    to: &Version,
    run_id: &str,
) -> Result<(), Error> {
    let report = migrator
        .up(&Scope::up_to(Some(to)), run_id, &mut Quiet)
        .await?;
    match report.error() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

impl Migrator {
    /// The pending migrations up to `to`, as the target's ledger has them (read only): what
    /// `up` refuses on the target (drift, dirty, an unmet requirement, an applied conflict,
    /// out of order) refuses here, and nothing else.
    async fn pending_for_verify(
        &self,
        to: Option<&Version>,
    ) -> Result<(Vec<&Migration>, Vec<String>), Error> {
        let (_, plan) = self.plan(&Scope::up_to(to)).await?;
        plan.ensure_applicable(self.settings.allow_out_of_order)?;
        let mut warnings = plan.warnings.clone();
        warnings.extend(plan.deploy_order_warnings());
        let unknown = plan.count(State::UnknownApplied);
        if unknown > 0 {
            warnings.push(format!("{unknown} applied migration(s) have no file here: the scratch database cannot have them"));
        }
        let pending = plan
            .pending()
            .filter_map(|e| self.set.get(&e.version))
            .collect();
        Ok((pending, warnings))
    }

    /// Scratch mode: verifies the target's pending migrations (up to `to`) on `scratch`,
    /// which the caller created and drops. The target is only read.
    pub async fn verify_on_scratch(
        &self,
        scratch: &ScratchDatabase,
        to: Option<&Version>,
        run_id: &str,
    ) -> Result<VerifyReport, Error> {
        self.verify_on_scratch_with(scratch, to, run_id, &VerifyOptions::default())
            .await
    }

    /// [`Migrator::verify_on_scratch`] with options (the up/down round trip).
    pub async fn verify_on_scratch_with(
        &self,
        scratch: &ScratchDatabase,
        to: Option<&Version>,
        run_id: &str,
        options: &VerifyOptions,
    ) -> Result<VerifyReport, Error> {
        let started = Instant::now();
        let (pending, warnings) = self.pending_for_verify(to).await?;
        let migrator = scratch.migrator(&self.set, &self.settings);
        // The scratch database's sessions end with `ScratchDatabase::drop`.
        scratch.ensure_replayable(&self.set, pending.first().map(|m| &m.version))?;
        let copy_differs = if pending.is_empty() {
            Vec::new()
        } else {
            copy_differences(self, &migrator, run_id).await?
        };
        let before = copy_relations(&migrator.db).await?;
        let mut migrations =
            verify_pending_with(&migrator, scratch, &pending, run_id, options).await?;
        let mut warnings = warnings;
        let copy_names = CopyNames::new(&before, &copy_relations(&migrator.db).await?);
        fill_target_tables(
            &self.db,
            &pending,
            &mut migrations,
            &mut warnings,
            &copy_names,
        )
        .await;
        Ok(VerifyReport {
            run_id: run_id.to_owned(),
            method: Method::Scratch,
            database: self.db.to_string(),
            verified_on: scratch.database().to_string(),
            migrations,
            warnings,
            elapsed_ms: started.elapsed().as_millis() as u64,
            empty_copy: true,
            copy_differs,
            statistics: None,
        })
    }
}
