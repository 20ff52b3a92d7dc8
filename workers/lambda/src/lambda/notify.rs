//! The notify worker's clients: the alert to SNS, the failure metric to CloudWatch.

use super::*;

/// The notify worker's clients: SNS for the alert, CloudWatch for the failure metric, and the
/// database's name (`DB_NAME`) for an alert whose input does not name it (a plan failure).
pub struct Notifier {
    pub topic_arn: String,
    pub database: Option<String>,
    pub sns: aws_sdk_sns::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
}

/// The database an alert names: the failure's, else the configured one (`DB_NAME`); None
/// when neither is known (the metric then has no `Database` to report under).
pub fn alert_database(failure: &str, configured: Option<&str>) -> Option<String> {
    [Some(failure), configured]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|d| !d.is_empty())
        .map(str::to_owned)
}

impl Notifier {
    pub async fn from_env() -> Result<Notifier, Error> {
        let topic_arn = env(ENV_TOPIC_ARN).ok_or_else(|| Error::Config {
            variable: ENV_TOPIC_ARN.into(),
            reason: "not set: the ARN of the topic that alerts go to".into(),
        })?;
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Ok(Notifier {
            topic_arn,
            database: env(ENV_DB_NAME),
            sns: aws_sdk_sns::Client::new(&config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(&config),
        })
    }

    /// Publishes the alert, then puts the `MigrationFailures` metric. Once the alert is
    /// published the step succeeds: a metric that cannot be put is logged, never an error
    /// (the state machine would run the step again and publish the alert twice). The X-Ray
    /// trace header of the invocation (`_X_AMZN_TRACE_ID`) travels with both calls.
    pub async fn notify(
        &self,
        mut request: crate::alert::NotifyRequest,
    ) -> Result<NotifyOutput, Error> {
        use aws_sdk_sns::types::MessageAttributeValue;
        let database = alert_database(&request.failure.database, self.database.as_deref());
        request.failure.database = database.clone().unwrap_or_default();
        let alert = crate::alert::Alert::new(&request);
        let mut publish = self
            .sns
            .publish()
            .topic_arn(&self.topic_arn)
            .subject(&alert.subject)
            .message_structure("json")
            .message(alert.sns_message());
        for (key, value) in alert.attributes.iter().filter(|(_, v)| !v.is_empty()) {
            let attribute = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| Error::InvalidInput(format!("message attribute {key}: {e}")))?;
            publish = publish.message_attributes(key, attribute);
        }
        let sent = publish.send().await.map_err(|e| Error::Service {
            service: "SNS".into(),
            message: aws_sdk_sns::error::DisplayErrorContext(&e).to_string(),
        })?;
        let message_id = sent.message_id().unwrap_or_default().to_owned();
        info!(message_id = %message_id, "alert published");
        let metric_reported = match database {
            Some(database) => match self.put_failure_metric(&database).await {
                Ok(()) => true,
                Err(e) => {
                    warn!(error = %e, "the alert is published, but the MigrationFailures metric could not be put");
                    false
                }
            },
            None => {
                warn!(variable = ENV_DB_NAME, "no database name (neither in the failure nor in DB_NAME): the MigrationFailures metric is not put");
                false
            }
        };
        Ok(NotifyOutput {
            message_id,
            subject: alert.subject,
            metric_reported,
        })
    }

    async fn put_failure_metric(&self, database: &str) -> Result<(), Error> {
        let datum = aws_sdk_cloudwatch::types::MetricDatum::builder()
            .metric_name(crate::metrics::Metric::MigrationFailures.name())
            .dimensions(
                aws_sdk_cloudwatch::types::Dimension::builder()
                    .name("Database")
                    .value(database)
                    .build(),
            )
            .unit(aws_sdk_cloudwatch::types::StandardUnit::Count)
            .value(1.0)
            .build();
        self.cloudwatch
            .put_metric_data()
            .namespace(crate::metrics::namespace())
            .metric_data(datum)
            .send()
            .await
            .map_err(|e| Error::Service {
                service: "CloudWatch".into(),
                message: aws_sdk_cloudwatch::error::DisplayErrorContext(&e).to_string(),
            })?;
        Ok(())
    }
}

#[derive(Debug, Serialize)]
pub struct NotifyOutput {
    pub message_id: String,
    pub subject: String,
    /// Whether the `MigrationFailures` metric was put (it is logged when it was not).
    pub metric_reported: bool,
}
