//! The up/down round trip of one migration on the scratch database: its down must give back
//! the schema before it, and its up applied again the schema of the first apply.

use std::time::Instant;

use super::report::{ms, summary_of, RoundTrip, RoundTripStep};
use super::OUTSIDE_TRANSACTION_SQLSTATE;
use crate::error::{Error, ErrorKind};
use crate::migration::Migration;
use crate::plan::Scope;
use crate::rollback::RollbackTarget;
use crate::runner::{Migrator, Quiet};
use crate::schema::{Change, ChangeType, LedgerFilter, SchemaDiff, Snapshot, SnapshotOptions};
use crate::sql;

/// The schema as the round trip compares it: comments and grants included, the ledger left
/// out.
pub(super) async fn round_trip_snapshot(migrator: &Migrator) -> Result<Snapshot, Error> {
    let options = SnapshotOptions {
        grants: true,
        comments: true,
        ledger: match &migrator.settings.ledger_schema {
            Some(schema) => LedgerFilter::Schema(schema.clone()),
            None => LedgerFilter::Auto,
        },
        ..SnapshotOptions::default()
    };
    Snapshot::capture_database(&migrator.db, &options).await
}

/// The scratch database before a migration's up: its schema, and what holds data in it.
pub(super) struct BeforeUp {
    schema: Snapshot,
    holders: Holders,
}

pub(super) async fn before_up(migrator: &Migrator) -> Result<BeforeUp, Error> {
    Ok(BeforeUp {
        schema: round_trip_snapshot(migrator).await?,
        holders: data_holders(migrator).await?,
    })
}

/// The round trip of `m`, applied on the scratch database with `before` the database before
/// it: down (its down file), compare with `before`, up again, compare with the first apply.
pub(super) async fn round_trip(
    migrator: &Migrator,
    m: &Migration,
    before: &BeforeUp,
    run_id: &str,
) -> Result<RoundTrip, Error> {
    let (holders_before, before) = (&before.holders, &before.schema);
    let failed = |step, message: String, differences: Vec<Change>| RoundTrip::Failed {
        step,
        message: format!("{}: {message}", m.name),
        differences,
    };
    if m.down.is_none() {
        if m.directives.irreversible {
            return Ok(RoundTrip::Skipped {
                reason: "irreversible".into(),
            });
        }
        return Ok(failed(
            RoundTripStep::NoDownFile,
            format!("no down file, so a rollback of it would be refused (write {}.down.sql, or mark it `irreversible`)", m.name),
            Vec::new(),
        ));
    }
    // The down runs for real on the scratch database: what would act outside it is not run,
    // as for an up.
    if let Some(down) = &m.down {
        let outside = sql::split_statements(&down.sql)
            .into_iter()
            .find_map(|s| sql::acts_outside_transaction(&s, false).map(|what| (s, what)));
        if let Some((statement, what)) = outside {
            return Ok(failed(
                RoundTripStep::Down,
                format!(
                    "its down file, line {}: {} acts outside its transaction ({what}): not run (SQLSTATE {OUTSIDE_TRANSACTION_SQLSTATE})",
                    statement.line,
                    summary_of(statement.text)
                ),
                Vec::new(),
            ));
        }
    }
    let applied = round_trip_snapshot(migrator).await?;
    let started = Instant::now();
    let target = RollbackTarget::Only(vec![m.version.clone()]);
    let report = match migrator.down(&target, true, run_id, &mut Quiet).await {
        Ok(report) => report,
        Err(e) if e.kind() == ErrorKind::RollbackRefused => {
            return Ok(failed(
                RoundTripStep::Down,
                format!("the rollback was refused: {e}"),
                Vec::new(),
            ))
        }
        Err(e) => return Err(e),
    };
    let down_ms = ms(started.elapsed());
    if let Some(e) = report.error() {
        return Ok(failed(
            RoundTripStep::Down,
            format!("its down failed: {e}"),
            Vec::new(),
        ));
    }
    if report.rolled_back() != 1 {
        return Ok(failed(
            RoundTripStep::Down,
            "the rollback did not revert it".into(),
            Vec::new(),
        ));
    }
    let reverted = round_trip_snapshot(migrator).await?;
    let down_statements = m
        .down
        .as_ref()
        .map(|down| sql::split_statements(&down.sql))
        .unwrap_or_default();
    let (mut loses_data, refilled) = remade(
        holders_before,
        &data_holders(migrator).await?,
        &down_statements,
    );
    loses_data.extend(truncated(holders_before, &down_statements));
    let differences = crate::schema::diff(before, &reverted);
    if !differences.is_empty() {
        // Applied again, so that the scratch database holds what the migration makes (what
        // a preview's schema diff shows), not what its down left; a failure to apply it
        // again leaves it as the down left it.
        let _ = migrator
            .up(&Scope::up_to(Some(&m.version)), run_id, &mut Quiet)
            .await;
        return Ok(failed(
            RoundTripStep::DownDiffers,
            describe_differences(&differences, Side::Down),
            differences.changes,
        ));
    }
    let started = Instant::now();
    let report = migrator
        .up(&Scope::up_to(Some(&m.version)), run_id, &mut Quiet)
        .await?;
    let reapply_ms = ms(started.elapsed());
    if let Some(e) = report.error() {
        return Ok(failed(
            RoundTripStep::Reapply,
            format!("applied again after its down, it failed: {e}"),
            Vec::new(),
        ));
    }
    if report.applied() != 1 {
        return Ok(failed(
            RoundTripStep::Reapply,
            "after its down, the runner did not apply it again".into(),
            Vec::new(),
        ));
    }
    let again = round_trip_snapshot(migrator).await?;
    let differences = crate::schema::diff(&applied, &again);
    if !differences.is_empty() {
        return Ok(failed(
            RoundTripStep::ReapplyDiffers,
            describe_differences(&differences, Side::Reapply),
            differences.changes,
        ));
    }
    // The copy is empty: a down statement whose outcome depends on rows proved nothing.
    let refilled = refilled.first().map(|(what, line)| {
        format!(
            "its down file, line {line}: it makes {what} again (a new one, where the one before the up is dropped) and fills it with INSERT: whether every row and value comes back depends on the target's rows"
        )
    });
    let unknown_on_target = refilled.or_else(|| {
        m.down.as_ref().and_then(|down| {
            sql::split_statements(&down.sql).iter().find_map(|s| {
                super::depends_on_data(s)
                    .filter(|d| d.kind == super::DataKind::Outcome)
                    .map(|d| {
                        format!(
                            "its down file, line {}: {}: {}",
                            s.line,
                            summary_of(s.text),
                            d.reason
                        )
                    })
            })
        })
    });
    Ok(RoundTrip::Ok {
        down_ms,
        reapply_ms,
        unknown_on_target,
        loses_data,
    })
}

/// What holds data on the scratch database, by name: each table's and materialized view's
/// oid and its columns' numbers, each sequence's oid. A down that drops and makes again an
/// object gives it a new oid (a column, a new number) while the schema compares equal.
type Holders = std::collections::BTreeMap<String, (i64, String, Vec<(String, i16)>)>;

async fn data_holders(migrator: &Migrator) -> Result<Holders, Error> {
    let mut conn = migrator.db.connect().await?;
    type Row = (String, i64, String, Vec<String>, Vec<i16>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname),
                c.oid::int8,
                c.relkind::text,
                COALESCE(array_agg(a.attname::text ORDER BY a.attnum) FILTER (WHERE a.attnum > 0), '{}'),
                COALESCE(array_agg(a.attnum ORDER BY a.attnum) FILTER (WHERE a.attnum > 0), '{}')
         FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND NOT a.attisdropped
         WHERE c.relkind IN ('r', 'm', 'S')
           AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
         GROUP BY 1, 2, 3",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| Error::database("reading the scratch database's tables", e))?;
    Ok(rows
        .into_iter()
        .map(|(name, oid, kind, columns, numbers)| {
            (
                name,
                (oid, kind, columns.into_iter().zip(numbers).collect()),
            )
        })
        .collect())
}

/// What is there before the up and after the down, but not the same one: tables,
/// materialized views and sequences made again, and columns added again to a table that
/// stayed (whatever the up did to them: renamed, dropped). Those the down fills with an
/// `INSERT` (a copy of the rows, perhaps) come second, with the line of the INSERT: their
/// loss depends on the rows.
#[allow(clippy::type_complexity)]
fn remade(
    before: &Holders,
    after: &Holders,
    down: &[sql::Statement<'_>],
) -> (Vec<String>, Vec<(String, usize)>) {
    let (mut lost, mut refilled) = (Vec::new(), Vec::new());
    for (name, (oid, kind, columns)) in before {
        let Some((oid_after, _, columns_after)) = after.get(name) else {
            continue;
        };
        let what = match kind.as_str() {
            "m" => "materialized view",
            "S" => "sequence",
            _ => "table",
        };
        if oid != oid_after {
            let filled = down.iter().find(|s| {
                s.main_verb.as_deref() == Some("INSERT")
                    && super::empty_copy::mentions_relation(s.text, name)
            });
            match filled {
                Some(s) => refilled.push((format!("{what} {name}"), s.line)),
                None => lost.push(format!("{what} {name} is made again")),
            }
            continue;
        }
        for (column, number) in columns {
            if columns_after
                .iter()
                .any(|(c, n)| c == column && n != number)
            {
                lost.push(format!("column {name}.{column} is added again"));
            }
        }
    }
    (lost, refilled)
}

/// The tables that were there before the up and that a `TRUNCATE` of the down empties
/// (matched by name, whatever the schema: a `TRUNCATE` of one of that name is enough to
/// say so).
fn truncated(before: &Holders, down: &[sql::Statement<'_>]) -> Vec<String> {
    let mut found = Vec::new();
    for s in down {
        if s.main_verb.as_deref() != Some("TRUNCATE") {
            continue;
        }
        for (name, (_, kind, _)) in before {
            if kind == "r"
                && super::empty_copy::mentions_relation(s.text, name)
                && !found.iter().any(|f: &String| f.ends_with(name.as_str()))
            {
                found.push(format!("line {}: TRUNCATE empties table {name}", s.line));
            }
        }
    }
    found
}

/// Which comparison a difference comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Before the up → after its down.
    Down,
    /// After the first up → after the second.
    Reapply,
}

/// The differences in words, each object named: `the down left index public.x_idx behind`.
/// At most 10, then how many more.
fn describe_differences(differences: &SchemaDiff, side: Side) -> String {
    const MAX: usize = 10;
    let mut parts: Vec<String> = differences
        .changes()
        .take(MAX)
        .map(|c| {
            let object = format!("{} {}", c.kind, c.name);
            let attributes = c
                .attributes
                .iter()
                .map(|a| a.render())
                .collect::<Vec<_>>()
                .join(", ");
            match (side, c.change) {
                (Side::Down, ChangeType::Added) => format!("the down left {object} behind"),
                (Side::Down, ChangeType::Dropped) => {
                    format!("the down dropped {object}, which was there before the up")
                }
                (Side::Down, ChangeType::Changed) => {
                    format!("the down left {object} different from before the up ({attributes})")
                }
                (Side::Reapply, ChangeType::Added) => {
                    format!("applied again, it made {object}, which the first apply did not")
                }
                (Side::Reapply, ChangeType::Dropped) => {
                    format!("applied again, it did not make {object}, which the first apply did")
                }
                (Side::Reapply, ChangeType::Changed) => format!(
                    "applied again, it made {object} differently from the first apply ({attributes})"
                ),
            }
        })
        .collect();
    if differences.len() > MAX {
        parts.push(format!(
            "and {} more difference(s)",
            differences.len() - MAX
        ));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_differences_name_each_object() {
        use crate::schema::{AttributeChange, ObjectKind};
        let change = |kind, name: &str, change, attributes: Vec<AttributeChange>| Change {
            kind,
            name: name.into(),
            parent: None,
            change,
            attributes,
        };
        let diff = SchemaDiff {
            changes: vec![
                change(
                    ObjectKind::Column,
                    "public.t.a",
                    ChangeType::Changed,
                    vec![AttributeChange {
                        attribute: "type".into(),
                        old: Some("integer".into()),
                        new: Some("bigint".into()),
                    }],
                ),
                change(
                    ObjectKind::Index,
                    "public.t_a_idx",
                    ChangeType::Added,
                    Vec::new(),
                ),
                change(
                    ObjectKind::View,
                    "public.v",
                    ChangeType::Dropped,
                    Vec::new(),
                ),
            ],
        };
        assert_eq!(
            describe_differences(&diff, Side::Down),
            "the down left column public.t.a different from before the up (type integer → bigint); the down left index public.t_a_idx behind; the down dropped view public.v, which was there before the up"
        );
        let text = describe_differences(&diff, Side::Reapply);
        assert!(
            text.contains(
                "applied again, it made index public.t_a_idx, which the first apply did not"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "applied again, it did not make view public.v, which the first apply did"
            ),
            "{text}"
        );
        let many = SchemaDiff {
            changes: (0..15)
                .map(|i| {
                    change(
                        ObjectKind::Table,
                        &format!("public.t{i}"),
                        ChangeType::Added,
                        Vec::new(),
                    )
                })
                .collect(),
        };
        assert!(describe_differences(&many, Side::Down).ends_with("; and 5 more difference(s)"));
    }
}
