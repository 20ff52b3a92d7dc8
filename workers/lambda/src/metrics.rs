//! Metrics as CloudWatch Embedded Metric Format log lines: the workers inside the VPC have
//! no route to CloudWatch, and need none: Lambda ships stdout to CloudWatch Logs, which turns
//! these lines into metrics. One low-cardinality dimension (`Database`); the version and the
//! run are properties, searchable in Logs Insights but not dimensions.

use serde_json::{json, Map, Value};

pub use crate::lambda::metric_namespace as namespace;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Per migration, milliseconds.
    MigrationDuration,
    /// Per migration applied: 1.
    MigrationsApplied,
    /// Per migration failed: 1.
    MigrationsFailed,
    /// Per migration a rollback execution reverted: 1.
    MigrationsRolledBack,
    /// Per run: how many migrations the plan found pending.
    PendingMigrations,
    /// Per failed run, published by `notify` with PutMetricData (alarms watch it).
    MigrationFailures,
    /// Per invocation of a batch migration: the rows its batches changed in it.
    BatchRows,
    /// Per invocation of a batch migration: the batches it committed in it.
    Batches,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::MigrationDuration => "MigrationDuration",
            Metric::MigrationsApplied => "MigrationsApplied",
            Metric::MigrationsFailed => "MigrationsFailed",
            Metric::MigrationsRolledBack => "MigrationsRolledBack",
            Metric::PendingMigrations => "PendingMigrations",
            Metric::MigrationFailures => "MigrationFailures",
            Metric::BatchRows => "BatchRows",
            Metric::Batches => "Batches",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Metric::MigrationDuration => "Milliseconds",
            _ => "Count",
        }
    }
}

/// One EMF document.
pub struct MetricLine {
    database: String,
    metrics: Vec<(Metric, f64)>,
    properties: Map<String, Value>,
}

impl MetricLine {
    pub fn new(database: &str) -> MetricLine {
        MetricLine {
            database: database.to_owned(),
            metrics: Vec::new(),
            properties: Map::new(),
        }
    }

    pub fn with(mut self, metric: Metric, value: f64) -> MetricLine {
        self.metrics.push((metric, value));
        self
    }

    pub fn property(mut self, key: &str, value: &str) -> MetricLine {
        self.properties
            .insert(key.to_owned(), Value::String(value.to_owned()));
        self
    }

    /// The line, at `timestamp_ms`.
    pub fn render(&self, timestamp_ms: i64) -> String {
        let mut doc = self.properties.clone();
        doc.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": namespace(),
                    "Dimensions": [["Database"]],
                    "Metrics": self.metrics.iter().map(|(m, _)| json!({ "Name": m.name(), "Unit": m.unit() })).collect::<Vec<_>>(),
                }],
            }),
        );
        doc.insert("Database".into(), Value::String(self.database.clone()));
        for (m, v) in &self.metrics {
            doc.insert(m.name().into(), json!(v));
        }
        Value::Object(doc).to_string()
    }

    /// Prints the line on stdout, where Lambda's log shipping picks it up. Only the workers'
    /// steps emit metrics (the command-line tool, whose stdout is its output, calls none).
    pub fn emit(&self) {
        println!("{}", self.render(chrono::Utc::now().timestamp_millis()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_embedded_metric_format() {
        let line = MetricLine::new("tutor")
            .with(Metric::MigrationDuration, 12.0)
            .with(Metric::MigrationsApplied, 1.0)
            .property("version", "004");
        let doc: Value = serde_json::from_str(&line.render(1_700_000_000_000)).unwrap();
        assert_eq!(doc["_aws"]["Timestamp"], 1_700_000_000_000i64);
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Dimensions"], json!([["Database"]]));
        assert_eq!(
            directive["Metrics"][0],
            json!({"Name": "MigrationDuration", "Unit": "Milliseconds"})
        );
        assert_eq!(doc["Database"], "tutor");
        assert_eq!(doc["MigrationDuration"], 12.0);
        assert_eq!(
            doc["version"], "004",
            "the version is a property, not a dimension"
        );
    }
}
