//! The failure alert: one SNS message a person can act on without opening the console.
//! Email gets readable text; Slack, through AWS Chatbot (an `https` subscription), gets a
//! custom-notification card. Pure: `notify` publishes what this builds.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::steps::FailureReport;

/// What `notify` receives: the execution and the failure (from `record`, or the caught error
/// of a step that failed before any migration ran).
#[derive(Debug, Clone, Deserialize)]
pub struct NotifyRequest {
    /// The execution ARN (`$$.Execution.Id`).
    #[serde(default)]
    pub execution: String,
    pub failure: FailureReport,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub subject: String,
    pub text: String,
    /// The AWS Chatbot custom notification (`version` 1.0, `source` custom).
    pub chatbot: Value,
    /// SNS message attributes, for subscription filter policies.
    pub attributes: Vec<(String, String)>,
}

impl Alert {
    pub fn new(request: &NotifyRequest) -> Alert {
        let mut f = request.failure.clone();
        // A plan failure carries the caught Cause: the worker's JSON message, maybe wrapped.
        f.message = crate::steps::cause_message(&f.message);
        let f = &f;
        let console = crate::execution::console_url(&request.execution);
        // A rollback's failure says so: the migration is still applied, its down script failed.
        let failed = if f.rollback {
            format!("rollback of {}", f.name)
        } else {
            f.name.clone()
        };
        let subject = truncate(
            &format!("stepmigrate FAILED {failed} on {}", f.database),
            99,
        );

        let mut what = vec![
            if f.rollback {
                format!(
                    "Rollback of migration {} failed on database {}; it is still applied.",
                    f.name, f.database
                )
            } else {
                format!("Migration {} failed on database {}.", f.name, f.database)
            },
            String::new(),
        ];
        what.push(format!("Error: {}", f.error));
        what.push(format!("Message: {}", f.message));
        if let Some(s) = &f.sqlstate {
            what.push(format!("SQLSTATE: {s}"));
        }
        if let Some(line) = f.line {
            let ext = if f.rollback { "down.sql" } else { "sql" };
            what.push(format!("Line: {line} of {}.{ext}", f.name));
        }
        if let Some(st) = &f.statement {
            what.push(format!(
                "Statement: {}",
                truncate(&st.split_whitespace().collect::<Vec<_>>().join(" "), 500)
            ));
        }
        what.push(String::new());
        what.push(format!("Execution: {}", request.execution));
        what.push(format!("Run: {}", f.run_id));
        what.push(format!("Console: {console}"));
        what.push(String::new());
        what.push("What to do next:".to_owned());
        let steps = next_steps(f);
        for (i, s) in steps.iter().enumerate() {
            what.push(format!("  {}. {s}", i + 1));
        }
        let text = what.join("\n");

        let mut description = format!("*{}*: {}", f.error, truncate(&f.message, 600));
        if let Some(s) = &f.sqlstate {
            description.push_str(&format!("\nSQLSTATE `{s}`"));
            if let Some(line) = f.line {
                description.push_str(&format!(", line {line}"));
            }
        }
        description.push_str(&format!("\n<{console}|Open the execution>"));
        let chatbot = json!({
            "version": "1.0",
            "source": "custom",
            "id": f.run_id,
            "content": {
                "textType": "client-markdown",
                "title": format!(":rotating_light: {subject}"),
                "description": description,
                "nextSteps": steps,
            },
            "metadata": {
                "threadId": format!("stepmigrate-{}", f.database),
                "enableCustomActions": false,
                "additionalContext": { "execution": request.execution, "version": f.version, "database": f.database },
            },
        });
        let mut attributes = vec![
            ("status".to_owned(), "FAILED".to_owned()),
            ("database".to_owned(), f.database.clone()),
            ("error".to_owned(), f.error.clone()),
        ];
        if f.rollback {
            attributes.push(("action".to_owned(), "rollback".to_owned()));
        }
        Alert {
            subject,
            text,
            chatbot,
            attributes,
        }
    }

    /// The SNS message with `MessageStructure=json`: text for email and every other
    /// protocol, the Chatbot card for `https` (AWS Chatbot's subscription).
    pub fn sns_message(&self) -> String {
        json!({ "default": self.text, "email": self.text, "https": self.chatbot.to_string() })
            .to_string()
    }
}

fn next_steps(f: &FailureReport) -> Vec<String> {
    let mut steps = Vec::new();
    if f.dirty {
        steps.push(format!(
            "{} ran outside a transaction and may be half-applied: check the database, then run `stepmigrate resolve {} --applied` or `--not-applied`.",
            f.name, f.version
        ));
    }
    match f.error.as_str() {
        "LockTimeout" => steps.push("Another session held a lock the migration needed: find it in pg_stat_activity, then start the execution again.".into()),
        "ConnectionFailed" => steps.push("Check the database is up and reachable from the workers (security group, secret), then start the execution again.".into()),
        "ChecksumMismatch" => steps.push("An applied migration file was edited: restore it and put the change in a new migration.".into()),
        "RollbackRefused" => steps.push("Nothing was reverted: the message names each migration that blocks the rollback (irreversible, without a down script, or required by one that stays applied); choose another target or add the missing down scripts, then start the rollback again.".into()),
        "Dirty" => steps.push("Resolve the dirty migration with `stepmigrate resolve`, then start the execution again.".into()),
        "BatchStalled" => steps.push(format!("No batch of {} could change a row for several invocations: look for a session holding a lock on its table (pg_locks, pg_stat_activity) or a statement that no longer selects rows it has not done; its progress is kept, so start the execution again once that is fixed.", f.name)),
        "TaskFailed" => steps.push(format!("The ECS task of {} stopped before it could record anything: read its log (the message names the stream): out of memory (raise the construct's task_memory_mib), an image that could not be pulled (the task's VPC endpoints), a task stopped by hand. Unless the message says it is dirty, nothing of it is applied: start the execution again once that is fixed.", f.name)),
        "BatchLoopLimit" => steps.push(format!("{} is making progress but needs more invocations than one execution's history allows: start the execution again, it resumes where it stopped (a larger batch_size or STEPMIGRATE_BATCH_BUDGET needs fewer).", f.name)),
        _ if f.rollback => steps.push(format!("Fix migrations/{}.down.sql (or the data it trips on), deploy it, and start the rollback again; {} is still applied and nothing after it was reverted.", f.name, f.name)),
        _ => steps.push(format!("Fix migrations/{}.sql (or the data it trips on) and deploy again; nothing after it was applied.", f.name)),
    }
    steps
        .push("Check the ledger: SELECT * FROM schema_migrations ORDER BY applied_at DESC;".into());
    steps
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let mut t: String = text.chars().take(max_chars.saturating_sub(3)).collect();
    t.push_str("...");
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> FailureReport {
        FailureReport {
            run_id: "exec-1".into(),
            database: "tutor".into(),
            version: "004".into(),
            name: "004_add_new_feature".into(),
            error: "SqlFailed".into(),
            message: "004_add_new_feature failed: relation \"users\" does not exist (SQLSTATE 42P01) at line 3".into(),
            sqlstate: Some("42P01".into()),
            line: Some(3),
            statement: Some("ALTER TABLE users\n  ADD COLUMN x int".into()),
            recorded: true,
            dirty: false,
            rollback: false,
        }
    }

    #[test]
    fn email_text_can_be_acted_on() {
        let alert = Alert::new(&NotifyRequest {
            execution: "arn:aws:states:eu-west-1:123456789012:execution:Migrations:exec-1".into(),
            failure: report(),
        });
        assert_eq!(
            alert.subject,
            "stepmigrate FAILED 004_add_new_feature on tutor"
        );
        for needle in [
            "SQLSTATE: 42P01",
            "Line: 3 of 004_add_new_feature.sql",
            "Statement: ALTER TABLE users ADD COLUMN x int",
            "Execution: arn:aws:states:eu-west-1:123456789012:execution:Migrations:exec-1",
            "https://eu-west-1.console.aws.amazon.com/states/home?region=eu-west-1#/v2/executions/details/arn:aws:states:eu-west-1",
            "What to do next:",
            "Fix migrations/004_add_new_feature.sql",
        ] {
            assert!(alert.text.contains(needle), "missing {needle:?} in\n{}", alert.text);
        }
        assert!(alert
            .attributes
            .contains(&("status".into(), "FAILED".into())));
    }

    #[test]
    fn chatbot_card_and_subject_limits() {
        let mut f = report();
        f.name = format!("004_{}", "very_long_name_".repeat(10));
        f.dirty = true;
        let alert = Alert::new(&NotifyRequest {
            execution: String::new(),
            failure: f,
        });
        assert!(alert.subject.chars().count() < 100);
        assert_eq!(alert.chatbot["version"], "1.0");
        assert_eq!(alert.chatbot["source"], "custom");
        assert!(alert.chatbot["content"]["title"]
            .as_str()
            .unwrap()
            .contains("FAILED"));
        assert!(alert.chatbot["content"]["nextSteps"][0]
            .as_str()
            .unwrap()
            .contains("stepmigrate resolve 004"));
        let message: Value = serde_json::from_str(&alert.sns_message()).unwrap();
        assert_eq!(message["default"], alert.text);
        let card: Value = serde_json::from_str(message["https"].as_str().unwrap()).unwrap();
        assert_eq!(card["source"], "custom");
    }

    #[test]
    fn a_rollback_failure_says_it_was_the_rollback() {
        let mut f = report();
        f.rollback = true;
        f.message = "rollback of 004_add_new_feature failed: column \"x\" does not exist".into();
        let alert = Alert::new(&NotifyRequest {
            execution: String::new(),
            failure: f,
        });
        assert_eq!(
            alert.subject,
            "stepmigrate FAILED rollback of 004_add_new_feature on tutor"
        );
        for needle in [
            "Rollback of migration 004_add_new_feature failed on database tutor; it is still applied.",
            "Message: rollback of 004_add_new_feature failed",
            "Line: 3 of 004_add_new_feature.down.sql",
            "Fix migrations/004_add_new_feature.down.sql",
        ] {
            assert!(alert.text.contains(needle), "missing {needle:?} in\n{}", alert.text);
        }
        assert!(alert
            .attributes
            .contains(&("action".into(), "rollback".into())));
    }
}
