//! The deploy-time trigger: the handler of the CDK `custom_resources.Provider` that runs the
//! migrations during `cdk deploy`. One binary serves both of the Provider's functions
//! (`STEPMIGRATE_TRIGGER_HANDLER` says which):
//!
//! - `on_event`: Create and Update start an execution whose name is derived from the stack,
//!   the resource, the migration set's hash and the CloudFormation request, so a request
//!   delivered twice starts one execution while every deploy gets a fresh one. Delete does
//!   nothing: migrations outlive the stack's resources. An Update sent while the stack rolls
//!   back starts nothing, so a rollback never fails on the database.
//! - `is_complete`: describes the execution. Running is not complete; succeeded is complete
//!   with the applied count as data; failed, timed out or aborted is an error whose message
//!   (shown by CloudFormation) names the migration and the database's error. A transient
//!   failure to describe it (throttling, a 5xx, the network) is not complete yet, logged; a
//!   permanent one (the execution does not exist, access denied) fails.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tracing::{info, warn, Instrument};

use crate::error::Error;
use crate::execution::{console_url, Executions};
use crate::migration::checksum;

pub const ENV_HANDLER: &str = "STEPMIGRATE_TRIGGER_HANDLER";

/// What the execution is asked to do on deploy: the migrations, but those marked
/// `after-deploy` (and those that require one), which the execution the construct's
/// EventBridge rule starts once the stack's deploy completed applies (a plain migrate): a
/// deploy never waits for a long data migration.
pub const EXECUTION_INPUT: &str = r#"{"action":"migrate","skip_after_deploy":true,"source":"cdk"}"#;

/// The deploy's run when the after-deploy rule is new in this deploy (the stack's first deploy,
/// or the one that turned the rule on): EventBridge applies a new rule eventually, so it may miss
/// this very deploy's completion, and the migrations it would have applied would wait with no
/// alarm. That deploy runs them all instead: nothing deferred.
pub const EXECUTION_INPUT_NEW_RULE: &str = r#"{"action":"migrate","source":"cdk"}"#;

/// Which of the Provider's two functions this instance is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    OnEvent,
    IsComplete,
}

impl Handler {
    pub fn from_env_value(value: Option<&str>) -> Result<Handler, Error> {
        match value.map(str::trim) {
            Some("on_event") => Ok(Handler::OnEvent),
            Some("is_complete") => Ok(Handler::IsComplete),
            other => Err(Error::Config {
                variable: ENV_HANDLER.into(),
                reason: format!(
                    "{}: must be `on_event` or `is_complete` (the Provider's onEvent and isComplete functions)",
                    other.map_or("not set".to_owned(), |v| format!("`{v}` is not a handler"))
                ),
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RequestType {
    Create,
    Update,
    Delete,
}

/// The custom resource's properties, as the construct sets them.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TriggerProperties {
    #[serde(default)]
    pub state_machine_arn: String,
    #[serde(default)]
    pub migration_set_hash: String,
    /// The ARN of the construct's after-deploy rule, empty (or absent) without one.
    #[serde(default)]
    pub after_deploy_rule: String,
}

/// A CloudFormation custom resource request as the Provider framework hands it on; the
/// isComplete function also gets what onEvent returned (`PhysicalResourceId`, `Data`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ResourceEvent {
    pub request_type: RequestType,
    #[serde(default)]
    pub request_id: String,
    #[serde(default)]
    pub stack_id: String,
    #[serde(default)]
    pub logical_resource_id: String,
    #[serde(default)]
    pub physical_resource_id: Option<String>,
    pub resource_properties: TriggerProperties,
    /// An Update's previous properties.
    #[serde(default)]
    pub old_resource_properties: Option<TriggerProperties>,
    #[serde(default)]
    pub data: Option<Map<String, Value>>,
}

impl ResourceEvent {
    fn properties(&self) -> Result<&TriggerProperties, Error> {
        let p = &self.resource_properties;
        let missing = |field: &str| {
            Error::InvalidInput(format!(
                "ResourceProperties.{field} is missing: the StepMigrate construct sets StateMachineArn and MigrationSetHash"
            ))
        };
        if p.state_machine_arn.trim().is_empty() {
            return Err(missing("StateMachineArn"));
        }
        if p.migration_set_hash.trim().is_empty() {
            return Err(missing("MigrationSetHash"));
        }
        Ok(p)
    }

    /// The physical id: stable for the resource's life, so CloudFormation never sees a
    /// replacement (and never sends a Delete for an old one).
    fn physical_id(&self) -> String {
        self.physical_resource_id
            .clone()
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| {
                format!(
                    "stepmigrate:{}:{}",
                    stack_name(&self.stack_id),
                    self.logical_resource_id
                )
            })
    }

    fn data(&self, key: &str) -> Option<&str> {
        self.data.as_ref()?.get(key)?.as_str()
    }

    /// The deploy's execution input: the after-deploy migrations are deferred to the rule's
    /// run, unless the rule is new in this deploy ([`EXECUTION_INPUT_NEW_RULE`]). Without a rule
    /// they are deferred too (they wait for an operator's run, as documented).
    pub fn execution_input(&self) -> &'static str {
        let rule = self.resource_properties.after_deploy_rule.trim();
        let old_rule = self
            .old_resource_properties
            .as_ref()
            .map(|old| old.after_deploy_rule.trim());
        let rule_is_new = !rule.is_empty()
            && (self.request_type == RequestType::Create || old_rule != Some(rule));
        if rule_is_new {
            EXECUTION_INPUT_NEW_RULE
        } else {
            EXECUTION_INPUT
        }
    }
}

/// The Provider's answer to onEvent.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct OnEventResponse {
    pub physical_resource_id: String,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub data: Map<String, Value>,
}

/// The Provider's answer to isComplete. `Data` is only allowed once complete.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IsCompleteResponse {
    pub is_complete: bool,
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub data: Map<String, Value>,
}

/// The stack's name, from its id (`arn:aws:cloudformation:REGION:ACCOUNT:stack/NAME/UUID`).
pub fn stack_name(stack_id: &str) -> &str {
    stack_id
        .split_once(":stack/")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(rest))
        .unwrap_or(stack_id)
}

/// A valid execution name (at most 80 of `A-Za-z0-9-_`) that is the same for every delivery
/// of one CloudFormation request and differs between requests: the stack, the resource and
/// the set's hash say what it is for; the request's hash makes each deploy a new run, so a
/// redeploy after a failure runs again instead of finding the failed execution.
pub fn execution_name(
    stack_id: &str,
    logical_id: &str,
    set_hash: &str,
    request_id: &str,
) -> String {
    let request = checksum(format!("{stack_id}\n{logical_id}\n{request_id}").as_bytes());
    format!(
        "{}-{}-{}-{}",
        clean(stack_name(stack_id), 30),
        clean(logical_id, 22),
        clean(set_hash, 12),
        &request[..12]
    )
}

fn clean(text: &str, max: usize) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(max)
        .collect();
    if cleaned.is_empty() {
        "x".to_owned()
    } else {
        cleaned
    }
}

/// Whether CloudFormation is rolling the stack back (an Update then restores the previous
/// properties: older code, whose set the database is already past).
pub fn is_rolling_back(stack_status: &str) -> bool {
    stack_status.ends_with("ROLLBACK_IN_PROGRESS")
}

/// The trigger's AWS clients.
pub struct Trigger {
    executions: Executions,
    cloudformation: aws_sdk_cloudformation::Client,
    handler: Handler,
}

impl Trigger {
    pub async fn from_env() -> Result<Trigger, Error> {
        let handler = Handler::from_env_value(crate::lambda::env(ENV_HANDLER).as_deref())?;
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Ok(Trigger {
            executions: Executions::new(&config),
            cloudformation: aws_sdk_cloudformation::Client::new(&config),
            handler,
        })
    }

    pub async fn handle(&self, event: ResourceEvent) -> Result<Value, Error> {
        let span = tracing::info_span!("custom_resource", request = ?event.request_type, request_id = %event.request_id, logical_id = %event.logical_resource_id);
        async {
            Ok(match self.handler {
                // Boxed: the SDK's futures nest deep enough to overflow the compiler's layout
                // depth, and a heap future keeps the runtime's stack small.
                Handler::OnEvent => to_value(Box::pin(self.on_event(&event)).await?),
                Handler::IsComplete => to_value(Box::pin(self.is_complete(&event)).await?),
            })
        }
        .instrument(span)
        .await
    }

    pub async fn on_event(&self, event: &ResourceEvent) -> Result<OnEventResponse, Error> {
        let physical_resource_id = event.physical_id();
        let mut data = Map::new();
        let rolling_back = match event.request_type {
            RequestType::Delete => false,
            // On Create a failed lookup fails the deploy: a missing permission shows on the
            // first deploy, not in the middle of a rollback.
            RequestType::Create => self.stack_rolling_back(&event.stack_id).await?,
            RequestType::Update => self
                .stack_rolling_back(&event.stack_id)
                .await
                .unwrap_or_else(|e| {
                    warn!(error = %e, "cannot tell whether the stack is rolling back; running (the older code's run finds nothing to do)");
                    false
                }),
        };
        match event.request_type {
            RequestType::Delete => {
                info!("delete: nothing to do (migrations stay applied)");
            }
            RequestType::Update | RequestType::Create if rolling_back => {
                info!("request during a rollback: no execution (the database keeps its newer migrations; the older code sees them as unknown-applied)");
                // The same attributes as a run's, so that nothing reading them fails the rollback.
                data.insert("ExecutionArn".into(), json!(""));
                data.insert("ExecutionName".into(), json!(""));
                data.insert("AppliedCount".into(), json!("0"));
                data.insert("Skipped".into(), json!("rollback"));
            }
            RequestType::Create | RequestType::Update => {
                let props = event.properties()?;
                let name = execution_name(
                    &event.stack_id,
                    &event.logical_resource_id,
                    &props.migration_set_hash,
                    &event.request_id,
                );
                let arn = self
                    .executions
                    .start(
                        &props.state_machine_arn,
                        &name,
                        event.execution_input(),
                        true,
                    )
                    .await?;
                info!(execution = %arn, console = %console_url(&arn), "migration run started");
                data.insert("ExecutionArn".into(), json!(arn));
                data.insert("ExecutionName".into(), json!(name));
            }
        }
        Ok(OnEventResponse {
            physical_resource_id,
            data,
        })
    }

    pub async fn is_complete(&self, event: &ResourceEvent) -> Result<IsCompleteResponse, Error> {
        let done = |data: Map<String, Value>| IsCompleteResponse {
            is_complete: true,
            data,
        };
        let Some(arn) = event
            .data("ExecutionArn")
            .filter(|arn| !arn.is_empty() && event.request_type != RequestType::Delete)
        else {
            return Ok(done(Map::new()));
        };
        let summary = match self.executions.describe_classified(arn).await {
            Ok(summary) => summary,
            // Throttling, a 5xx, a lost connection: ask again at the next poll (the Provider
            // gives up after its total timeout) rather than fail the deployment.
            Err(failure) if failure.transient => {
                warn!(execution = %arn, error = %failure.error, "cannot describe the execution for now; asking again at the next poll");
                return Ok(IsCompleteResponse {
                    is_complete: false,
                    data: Map::new(),
                });
            }
            Err(failure) => return Err(failure.error),
        };
        match summary.outcome() {
            Ok(None) => Ok(IsCompleteResponse {
                is_complete: false,
                data: Map::new(),
            }),
            Ok(Some(_)) => {
                let run = summary.run_output();
                info!(execution = %arn, applied = run.applied_count, deferred = ?run.deferred, "migration run succeeded");
                if !run.deferred.is_empty() {
                    info!(
                        "{} migration(s) wait for the execution started once the deploy completes: {}",
                        run.deferred.len(),
                        run.deferred.join(", ")
                    );
                }
                let mut data = Map::new();
                data.insert("ExecutionArn".into(), json!(arn));
                data.insert("AppliedCount".into(), json!(run.applied_count.to_string()));
                data.insert(
                    "DeferredCount".into(),
                    json!(run.deferred.len().to_string()),
                );
                Ok(done(data))
            }
            Err(e) => {
                warn!(execution = %arn, console = %console_url(arn), error = %e, "migration run did not succeed");
                Err(e)
            }
        }
    }

    /// Whether the stack is rolling back, from its status (cloudformation:DescribeStacks on
    /// the stack's own ARN).
    async fn stack_rolling_back(&self, stack_id: &str) -> Result<bool, Error> {
        if stack_id.is_empty() {
            return Err(Error::InvalidInput("the request has no StackId".into()));
        }
        let out = self
            .cloudformation
            .describe_stacks()
            .stack_name(stack_id)
            .send()
            .await
            .map_err(|e| Error::Service {
                service: "CloudFormation".into(),
                message: format!(
                    "cannot read the status of stack {} (the trigger needs cloudformation:DescribeStacks on it): {}",
                    stack_name(stack_id),
                    aws_sdk_cloudformation::error::DisplayErrorContext(&e)
                ),
            })?;
        Ok(out
            .stacks()
            .first()
            .and_then(|s| s.stack_status())
            .is_some_and(|status| is_rolling_back(status.as_str())))
    }
}

fn to_value<T: Serialize>(response: T) -> Value {
    serde_json::to_value(response).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STACK: &str =
        "arn:aws:cloudformation:eu-west-1:123456789012:stack/BackendStack-dev/5a3e9b10-0000-11ef-9c1a-0a1b2c3d4e5f";

    fn valid(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 80
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    }

    #[test]
    fn the_name_is_stable_per_request_and_new_per_deploy() {
        let a = execution_name(STACK, "MigrationsApplied1A2B", "9f86d081884c7d65", "req-1");
        assert_eq!(
            a,
            execution_name(STACK, "MigrationsApplied1A2B", "9f86d081884c7d65", "req-1")
        );
        assert_ne!(
            a,
            execution_name(STACK, "MigrationsApplied1A2B", "9f86d081884c7d65", "req-2")
        );
        assert!(
            a.starts_with("BackendStack-dev-MigrationsApplied1A2B-9f86d081884c-"),
            "{a}"
        );
        assert!(valid(&a), "{a}");
    }

    #[test]
    fn the_name_is_valid_whatever_the_ids() {
        let long = format!("arn:aws:cloudformation:r:1:stack/{}/u", "S".repeat(128));
        for name in [
            execution_name(&long, &"L".repeat(255), &"f".repeat(64), "r"),
            execution_name("", "", "", ""),
            execution_name("not an arn", "a.b c", "h/ash", "x"),
        ] {
            assert!(valid(&name), "{name}");
        }
    }

    #[test]
    fn stack_name_comes_from_the_stack_id() {
        assert_eq!(stack_name(STACK), "BackendStack-dev");
        assert_eq!(stack_name("plain"), "plain");
    }

    #[test]
    fn rollback_statuses() {
        assert!(is_rolling_back("UPDATE_ROLLBACK_IN_PROGRESS"));
        assert!(is_rolling_back("ROLLBACK_IN_PROGRESS"));
        assert!(!is_rolling_back("UPDATE_IN_PROGRESS"));
        assert!(!is_rolling_back("UPDATE_ROLLBACK_COMPLETE"));
        assert!(!is_rolling_back("CREATE_IN_PROGRESS"));
    }

    #[test]
    fn handler_comes_from_the_environment() {
        assert_eq!(
            Handler::from_env_value(Some("on_event")).unwrap(),
            Handler::OnEvent
        );
        assert_eq!(
            Handler::from_env_value(Some("is_complete")).unwrap(),
            Handler::IsComplete
        );
        let err = Handler::from_env_value(Some("both")).unwrap_err();
        assert!(err.to_string().contains(ENV_HANDLER), "{err}");
        assert!(Handler::from_env_value(None).is_err());
    }

    #[test]
    fn events_parse_and_missing_properties_are_named() {
        let event: ResourceEvent = serde_json::from_value(json!({
            "RequestType": "Create",
            "RequestId": "r-1",
            "StackId": STACK,
            "LogicalResourceId": "Migrations",
            "ResourceType": "Custom::StepMigrate",
            "ResponseURL": "https://example.invalid",
            "ServiceToken": "arn:aws:lambda:...",
            "ResourceProperties": {"ServiceToken": "arn:aws:lambda:...", "StateMachineArn": ""}
        }))
        .unwrap();
        assert_eq!(
            event.physical_id(),
            "stepmigrate:BackendStack-dev:Migrations"
        );
        let err = event.properties().unwrap_err();
        assert!(
            err.to_string()
                .contains("ResourceProperties.StateMachineArn"),
            "{err}"
        );
    }

    #[test]
    fn a_deploy_that_creates_the_after_deploy_rule_defers_nothing() {
        let event = |kind: &str, rule: Option<&str>, old: Option<Value>| -> ResourceEvent {
            let mut props = json!({"StateMachineArn": "arn:sm", "MigrationSetHash": "h"});
            if let Some(rule) = rule {
                props["AfterDeployRule"] = json!(rule);
            }
            let mut e = json!({"RequestType": kind, "StackId": STACK, "ResourceProperties": props});
            if let Some(old) = old {
                e["OldResourceProperties"] = old;
            }
            serde_json::from_value(e).unwrap()
        };
        let rule = "arn:aws:events:eu-west-1:123456789012:rule/AfterDeploy";
        let with_rule =
            json!({"StateMachineArn": "arn:sm", "MigrationSetHash": "g", "AfterDeployRule": rule});
        let without = json!({"StateMachineArn": "arn:sm", "MigrationSetHash": "g"});
        // The first deploy, and the deploy that adds the rule: nothing deferred.
        assert_eq!(
            event("Create", Some(rule), None).execution_input(),
            EXECUTION_INPUT_NEW_RULE
        );
        assert_eq!(
            event("Update", Some(rule), Some(without.clone())).execution_input(),
            EXECUTION_INPUT_NEW_RULE
        );
        // The rule was there before: the deploy defers to it.
        assert_eq!(
            event("Update", Some(rule), Some(with_rule)).execution_input(),
            EXECUTION_INPUT
        );
        // No rule: deferred for an operator's run, as before.
        assert_eq!(
            event("Create", None, None).execution_input(),
            EXECUTION_INPUT
        );
        assert_eq!(
            event("Update", Some(""), Some(without)).execution_input(),
            EXECUTION_INPUT
        );
        let new_rule: Value = serde_json::from_str(EXECUTION_INPUT_NEW_RULE).unwrap();
        assert_eq!(new_rule, json!({"action": "migrate", "source": "cdk"}));
    }

    #[test]
    fn responses_have_the_providers_shape() {
        let r = IsCompleteResponse {
            is_complete: false,
            data: Map::new(),
        };
        assert_eq!(to_value(r), json!({"IsComplete": false}));
        let mut data = Map::new();
        data.insert("ExecutionArn".into(), json!("arn"));
        let r = OnEventResponse {
            physical_resource_id: "id".into(),
            data,
        };
        assert_eq!(
            to_value(r),
            json!({"PhysicalResourceId": "id", "Data": {"ExecutionArn": "arn"}})
        );
    }
}
