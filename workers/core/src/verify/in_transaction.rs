//! `--in-transaction-only`: on the target itself (meant for staging), every pending
//! transactional migration in one transaction that is rolled back, then one `verified` event
//! per verified migration; planner statistics written in place are restored.

use std::time::{Duration, Instant};

use sqlx::PgConnection;
use tracing::{info_span, Instrument};

use super::report::{
    skipped, Method, MigrationVerification, StatisticsRestored, VerifyOutcome, VerifyReport,
};
use super::statements::{refused_outside_transaction, timeouts, verify_in_open_transaction};
use crate::apply::RESET_SESSION;
use crate::config::pg_interval;
use crate::error::{Error, SqlError};
use crate::ledger::{self, EventKind, LedgerSchema, NewEvent};
use crate::migration::{Migration, Version};
use crate::plan::{Scope, State};
use crate::runner::{Migrator, Quiet};
use crate::sql;

impl Migrator {
    /// On the target itself (meant for staging): under the migration lock, every pending
    /// transactional migration (up to `to`) in ONE transaction, each between savepoints so the
    /// later ones see the earlier ones, all rolled back; `lock_timeout` caps each one's lock
    /// wait. A migration outside a transaction, and everything after it, is skipped. Then one
    /// `verified` event per verified migration (the fold skips them). The ledger is created or
    /// upgraded first if it is not current, as `up` would.
    pub async fn verify_in_transaction(
        &self,
        to: Option<&Version>,
        lock_timeout: Duration,
        run_id: &str,
    ) -> Result<VerifyReport, Error> {
        // On a live database nothing of verify's may queue behind another session's lock for
        // long, the ledger's own reads and writes included: the short lock_timeout is every
        // session's (each migration still sets its own, no longer), on a pool of its own that
        // ends with the verification.
        let db = self
            .db
            .with_session_setting("lock_timeout", &pg_interval(lock_timeout));
        let bounded = Migrator::new(db, self.set.clone(), self.settings.clone());
        let result = bounded
            .verify_in_one_transaction(to, lock_timeout, run_id)
            .await;
        bounded.db.close().await;
        result
    }

    async fn verify_in_one_transaction(
        &self,
        to: Option<&Version>,
        lock_timeout: Duration,
        run_id: &str,
    ) -> Result<VerifyReport, Error> {
        let span = info_span!("verify", run_id, database = %self.db, method = "in_transaction");
        async {
            let started = Instant::now();
            let mut conn = self.db.connect().await?;
            let (schema, ledger) = self.read_ledger(&mut conn).await?;
            let plan = crate::plan::Plan::new(&self.set, &ledger, to)?;
            if plan.count(State::Dirty) == 0 {
                plan.ensure_runnable()?;
            }
            let lock = self.lock(&schema, &mut Quiet).await?;
            let (migrations, warnings, statistics) = lock
                .hold(async |_| {
                    let plan = self
                        .prepare_locked(&mut conn, &schema, ledger, &Scope::up_to(to), run_id)
                        .await?;
                    let pending: Vec<&Migration> = plan
                        .pending()
                        .filter_map(|e| self.set.get(&e.version))
                        .collect();
                    let (migrations, statistics) = self
                        .verify_pending_in_one_transaction(
                            &mut conn,
                            &schema,
                            &pending,
                            lock_timeout,
                        )
                        .await?;
                    ledger::append_all(
                        &mut conn,
                        &schema,
                        &verified_events(&migrations, &pending, run_id),
                    )
                    .await?;
                    let mut warnings = plan.deploy_order_warnings();
                    warnings.splice(0..0, plan.warnings);
                    warnings.extend(one_transaction_values(&pending));
                    warnings.extend(outlasting_the_migration(&pending));
                    Ok((migrations, warnings, statistics))
                })
                .await?;
            Ok(VerifyReport {
                run_id: run_id.to_owned(),
                method: Method::InTransaction,
                database: self.db.to_string(),
                verified_on: self.db.to_string(),
                migrations,
                warnings,
                elapsed_ms: started.elapsed().as_millis() as u64,
                empty_copy: false,
                copy_differs: Vec::new(),
                statistics,
            })
        }
        .instrument(span)
        .await
    }

    async fn verify_pending_in_one_transaction(
        &self,
        conn: &mut PgConnection,
        schema: &LedgerSchema,
        pending: &[&Migration],
        lock_timeout: Duration,
    ) -> Result<(Vec<MigrationVerification>, Option<StatisticsRestored>), Error> {
        sqlx::raw_sql("BEGIN")
            .execute(&mut *conn)
            .await
            .map_err(|e| Error::database("starting the verification", e))?;
        let stats_before = crate::planner_stats::before(conn)
            .await
            .map_err(|e| Error::database("reading the planner statistics", e))?;
        let mut results = Vec::with_capacity(pending.len());
        let mut stop: Option<String> = None;
        let mut outcome = Ok(());
        for m in pending {
            if let Some(reason) = &stop {
                results.push(skipped(m, reason.clone()));
                continue;
            }
            if !m.transactional() {
                results.push(skipped(m, "runs outside a transaction: --in-transaction-only cannot verify it without running it for real (verify it on a scratch database)".into()));
                stop = Some(format!(
                    "not verified: it comes after {}, which runs outside a transaction",
                    m.name
                ));
                continue;
            }
            // One statement is one batch: the batches after it meet other rows, and its end
            // (or a runaway stop) comes only when the statement changes none; rolled back,
            // they cannot run here. A scratch database runs every batch.
            if m.is_batch() {
                results.push(skipped(m, "a batch migration: --in-transaction-only would run its statement once, its first batch only; the batches after it, on other rows, and its end are seen only where they commit (verify it on a scratch database, which runs every batch)".into()));
                stop = Some(format!(
                    "not verified: it comes after {}, a batch migration not verified here",
                    m.name
                ));
                continue;
            }
            if let Some(refused) = refused_outside_transaction(m, true) {
                results.push(refused);
                stop = Some(format!(
                    "not verified: it comes after {}, which was not verified",
                    m.name
                ));
                continue;
            }
            let mut limits = timeouts(m, &self.settings, Some(lock_timeout));
            // A deadline (a Lambda invocation's): start nothing that cannot end before it, and
            // report what was not verified rather than be stopped with nothing reported.
            let statements = sql::split_statements(&m.sql).len();
            let fit =
                crate::deadline::fit(self.settings.deadline, Instant::now(), statements, limits);
            let capped = match fit {
                crate::deadline::Fit::Unchanged => false,
                crate::deadline::Fit::Capped(statement_timeout) => {
                    limits.1 = statement_timeout;
                    true
                }
                crate::deadline::Fit::OutOfTime => {
                    results.push(skipped(m, crate::deadline::OUT_OF_TIME.into()));
                    stop = Some(crate::deadline::OUT_OF_TIME_AFTER.into());
                    continue;
                }
            };
            match verify_in_open_transaction(conn, m, limits, true).await {
                Ok(v) if capped && crate::deadline::stopped_by_cap(&v.outcome) => {
                    results.push(skipped(m, crate::deadline::OUT_OF_TIME.into()));
                    stop = Some(crate::deadline::OUT_OF_TIME_AFTER.into());
                }
                Ok(mut v) => {
                    if matches!(v.outcome, VerifyOutcome::Ok) {
                        if let Some(error) = ledger_write_fails(conn, schema, m).await? {
                            v.outcome = VerifyOutcome::Failed { error };
                        }
                    }
                    if matches!(v.outcome, VerifyOutcome::Failed { .. }) {
                        stop = Some(format!("not verified: {} failed before it", m.name));
                    }
                    results.push(v);
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        let overwritten = match outcome {
            Ok(()) => crate::planner_stats::overwritten(conn, &stats_before)
                .await
                .map_err(|e| Error::database("reading the planner statistics", e)),
            Err(e) => Err(e),
        };
        // Nothing of it commits, whatever happened.
        let rolled_back = sqlx::raw_sql(&format!("ROLLBACK;{RESET_SESSION}"))
            .execute(&mut *conn)
            .await;
        let overwritten = overwritten?;
        rolled_back.map_err(|e| Error::database("rolling back the verification", e))?;
        let statistics = if overwritten.is_empty() {
            None
        } else {
            let error =
                crate::planner_stats::analyze_again(conn, &overwritten, &pg_interval(lock_timeout))
                    .await;
            Some(StatisticsRestored {
                tables: overwritten
                    .iter()
                    .map(|t| {
                        format!(
                            "{} (reltuples written: {}, before: {})",
                            t.name, t.reltuples_after, t.reltuples_before
                        )
                    })
                    .collect(),
                analyzed: error.is_none(),
                error,
            })
        };
        Ok((results, statistics))
    }
}

/// One `verified` event per migration that ran (skipped ones have none).
/// After a migration, in its transaction: the ledger write `up` makes at its end (its event,
/// and the check that the event left its row), in a savepoint rolled back at once. A migration
/// that dropped the ledger's tables (`DROP SCHEMA public CASCADE`) or its machinery (`DROP
/// EXTENSION plpgsql CASCADE`) fails there, as `up` would: the error, else `None`.
async fn ledger_write_fails(
    conn: &mut PgConnection,
    schema: &LedgerSchema,
    m: &Migration,
) -> Result<Option<SqlError>, Error> {
    let event = NewEvent {
        run_id: "verify",
        version: m.version.as_str(),
        name: &m.name,
        kind: EventKind::Applied,
        checksum: Some(m.checksum.as_str()),
        execution_time_ms: Some("0".into()),
        dirty: false,
        error: None,
        notices: &[],
        down: None,
        progress: None,
    };
    let check = event
        .projection_check_sql(schema)
        .map(|c| format!("{c};"))
        .unwrap_or_default();
    let probe = format!(
        "SAVEPOINT stepmigrate_ledger_probe;{};{check}ROLLBACK TO SAVEPOINT stepmigrate_ledger_probe;RELEASE SAVEPOINT stepmigrate_ledger_probe",
        event.insert_sql(schema)
    );
    let said = match sqlx::raw_sql(&probe).execute(&mut *conn).await {
        Ok(_) => return Ok(None),
        Err(sqlx::Error::Database(db)) => ledger::ledger_broken(db.code().as_deref(), db.message())
            .unwrap_or_else(|| db.message().to_owned()),
        Err(e) => {
            return Err(Error::database(
                "writing the ledger's event after a migration (rolled back)",
                e,
            ))
        }
    };
    sqlx::raw_sql(
        "ROLLBACK TO SAVEPOINT stepmigrate_ledger_probe;RELEASE SAVEPOINT stepmigrate_ledger_probe",
    )
    .execute(&mut *conn)
    .await
    .map_err(|e| Error::database("rolling back the ledger's event after a migration", e))?;
    Ok(Some(SqlError {
        sqlstate: crate::ledger::LEDGER_BROKEN_SQLSTATE.into(),
        message: format!(
            "after it, the ledger's own write fails ({said}): `up` would roll it back and record it failed"
        ),
        ..SqlError::default()
    }))
}

fn verified_events<'a>(
    migrations: &'a [MigrationVerification],
    pending: &[&'a Migration],
    run_id: &'a str,
) -> Vec<NewEvent<'a>> {
    migrations
        .iter()
        .filter_map(|v| {
            let error = match &v.outcome {
                VerifyOutcome::Ok => None,
                VerifyOutcome::Failed { error } => Some(error),
                VerifyOutcome::Skipped { .. } => return None,
            };
            Some(NewEvent {
                run_id,
                version: v.version.as_str(),
                name: &v.name,
                kind: EventKind::Verified,
                checksum: pending
                    .iter()
                    .find(|m| m.version == v.version)
                    .map(|m| m.checksum.as_str()),
                execution_time_ms: Some((v.duration_ms.round() as i64).to_string()),
                dirty: false,
                error,
                notices: &[],
                down: None,
                progress: None,
            })
        })
        .collect()
}

/// The values PostgreSQL fixes per transaction (`now()`, the transaction id): in this mode's
/// one transaction they are the same in every migration, where `up` gives each migration its
/// own. A migration after the first that reads one was verified with a value `up` will not
/// give it: said, since its result may differ (a `CHECK (t >= now())` over rows an earlier
/// migration wrote passes here and fails there).
fn one_transaction_values(pending: &[&Migration]) -> Option<String> {
    const PER_TRANSACTION: [&str; 9] = [
        "now",
        "current_timestamp",
        "transaction_timestamp",
        "localtimestamp",
        "current_date",
        "current_time",
        "localtime",
        "txid_current",
        "pg_current_xact_id",
    ];
    let reads: Vec<&str> = pending
        .iter()
        .skip(1)
        .filter(|m| {
            m.sql
                .split(|c: char| !c.is_alphanumeric() && c != '_')
                .any(|w| PER_TRANSACTION.iter().any(|f| w.eq_ignore_ascii_case(f)))
        })
        .map(|m| m.name.as_str())
        .collect();
    (!reads.is_empty()).then(|| {
        format!(
            "{} read the time or the transaction id (now(), current_timestamp, txid_current...): in this one transaction they are the same in every migration, while `up` runs each in its own; where that matters, verify on a scratch copy (without --in-transaction-only)",
            reads.join(", ")
        )
    })
}

/// What a migration leaves for the rest of its transaction (`SET CONSTRAINTS`, an open cursor
/// of `DECLARE`): in this mode's one transaction it reaches the migrations after it, where
/// `up` ends it at the migration's COMMIT. Said, since what follows was verified under it.
fn outlasting_the_migration(pending: &[&Migration]) -> Option<String> {
    let last = pending.len().saturating_sub(1);
    let leaves: Vec<&str> = pending[..last]
        .iter()
        .filter(|m| {
            crate::sql::split_statements(&m.sql).iter().any(|st| {
                let k: Vec<&str> = st.keywords.iter().map(String::as_str).collect();
                matches!(k.as_slice(), ["SET", "CONSTRAINTS", ..] | ["DECLARE", ..])
            })
        })
        .map(|m| m.name.as_str())
        .collect();
    (!leaves.is_empty()).then(|| {
        format!(
            "{} set constraints' timing or open a cursor for the rest of the transaction: in this one transaction that reaches the migrations after them, while `up` ends it at each COMMIT; verify what follows on a scratch copy (without --in-transaction-only)",
            leaves.join(", ")
        )
    })
}
