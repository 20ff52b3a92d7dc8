//! `stepmigrate remote`: start and follow the deployed state machine's executions through the
//! Step Functions API (credentials, region and endpoint as every AWS tool reads them).

use crate::output::{errln, outln};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args as ClapArgs, Subcommand, ValueEnum};
use serde_json::json;
use stepmigrate_core::runner::new_run_id;
use stepmigrate_core::Error;
use stepmigrate_lambda::execution::{console_url, execution_arn, Executions, Milestone, Summary};
use stepmigrate_lambda::steps::{Action, ExecutionInput};

use crate::cli::parse_version;
use crate::output::Output;
use stepmigrate_core::migration::Version;

const ENV_STATE_MACHINE: &str = "STEPMIGRATE_STATE_MACHINE_ARN";

#[derive(ClapArgs)]
pub struct RemoteArgs {
    /// The state machine's ARN (the stack's output `StateMachineArn`).
    #[arg(long, env = ENV_STATE_MACHINE, global = true)]
    state_machine: Option<String>,

    /// Seconds between two looks at a running execution.
    #[arg(long, default_value_t = 2.0, global = true)]
    poll: f64,

    #[command(subcommand)]
    command: RemoteCommand,
}

#[derive(Subcommand)]
enum RemoteCommand {
    /// Start an execution (`migrate` unless told otherwise) and, with --watch, follow it.
    Start {
        #[arg(long, value_enum, default_value_t = RemoteAction::Migrate)]
        action: RemoteAction,
        /// Only plan: report what would be applied (or, for a rollback, reverted).
        #[arg(long)]
        dry_run: bool,
        /// Stop at this version (inclusive). For `--action rollback`, required: the version to
        /// roll back to (the migrations applied above it are reverted; `000` reverts all).
        #[arg(long, value_name = "VERSION", value_parser = parse_version, required_if_eq("action", "rollback"))]
        to: Option<Version>,
        /// The execution's name (default: generated). Starting the same name twice while it
        /// runs returns the same execution.
        #[arg(long)]
        name: Option<String>,
        /// Follow the execution until it ends; the exit code says how it ended.
        #[arg(long)]
        watch: bool,
    },
    /// How an execution stands (the newest one unless named).
    Status {
        /// An execution ARN, or a name of the state machine's executions.
        execution: Option<String>,
    },
    /// Follow an execution (the newest one unless named) migration by migration until it ends.
    Watch {
        /// An execution ARN, or a name of the state machine's executions.
        execution: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RemoteAction {
    Migrate,
    Status,
    /// Revert the migrations applied above `--to`, newest first, one Map iteration each (an
    /// operator's action: nothing else starts it).
    Rollback,
}

impl RemoteArgs {
    pub fn name(&self) -> &'static str {
        match self.command {
            RemoteCommand::Start { .. } => "remote start",
            RemoteCommand::Status { .. } => "remote status",
            RemoteCommand::Watch { .. } => "remote watch",
        }
    }

    fn state_machine(&self) -> Result<&str, Error> {
        self.state_machine.as_deref().ok_or_else(|| Error::Config {
            variable: ENV_STATE_MACHINE.into(),
            reason:
                "not set; set it or pass --state-machine ARN (the stack's StateMachineArn output)"
                    .into(),
        })
    }

    /// An ARN as given; a name within the state machine; else the newest execution.
    async fn execution(
        &self,
        executions: &Executions,
        given: Option<&str>,
    ) -> Result<String, Error> {
        match given {
            Some(arn) if arn.starts_with("arn:") => Ok(arn.to_owned()),
            Some(name) => Ok(execution_arn(self.state_machine()?, name)),
            None => {
                let sm = self.state_machine()?;
                executions.latest(sm).await?.ok_or_else(|| {
                    Error::InvalidInput(format!("the state machine {sm} has no executions yet"))
                })
            }
        }
    }
}

pub async fn run(args: &RemoteArgs, out: &Output) -> Result<ExitCode, Error> {
    let executions = Executions::from_default_config().await;
    let poll = Duration::from_secs_f64(args.poll.clamp(0.1, 60.0));
    let command = args.name();
    match &args.command {
        RemoteCommand::Start {
            action,
            dry_run,
            to,
            name,
            watch,
        } => {
            let input = start_input(*action, *dry_run, to.clone());
            let input = serde_json::to_string(&input).expect("input serializes");
            let name = name.clone().unwrap_or_else(|| new_run_id("cli"));
            let arn = executions
                .start(args.state_machine()?, &name, &input, false)
                .await?;
            if !*watch {
                if out.json() {
                    out.emit(json!({ "command": command, "ok": true, "execution": arn, "input": serde_json::from_str::<serde_json::Value>(&input).unwrap_or_default(), "console": console_url(&arn) }));
                } else {
                    outln!("started {arn}");
                    outln!("  input:   {input}");
                    outln!("  console: {}", console_url(&arn));
                    outln!("  follow:  stepmigrate remote watch {name}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            follow(&executions, &arn, poll, command, out).await
        }
        RemoteCommand::Status { execution } => {
            let arn = args.execution(&executions, execution.as_deref()).await?;
            let summary = executions.describe(&arn).await?;
            if out.json() {
                out.emit(json!({ "command": command, "ok": summary.outcome().is_ok(), "execution": summary, "console": console_url(&arn) }));
            } else {
                print_summary(&summary);
            }
            Ok(match summary.outcome() {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => out.problem(&e),
            })
        }
        RemoteCommand::Watch { execution } => {
            let arn = args.execution(&executions, execution.as_deref()).await?;
            follow(&executions, &arn, poll, command, out).await
        }
    }
}

/// The execution input `remote start` sends: e.g. `--action rollback --to 004 --dry-run` is
/// `{"action": "rollback", "dry_run": true, "target": "004", "source": "stepmigrate remote"}`.
fn start_input(action: RemoteAction, dry_run: bool, to: Option<Version>) -> ExecutionInput {
    ExecutionInput {
        action: match action {
            RemoteAction::Migrate => Action::Migrate,
            RemoteAction::Status => Action::Status,
            RemoteAction::Rollback => Action::Rollback,
        },
        dry_run,
        target: to,
        skip_after_deploy: false,
        source: Some("stepmigrate remote".into()),
        continuation: 0,
        continued_from: None,
    }
}

async fn follow(
    executions: &Executions,
    arn: &str,
    poll: Duration,
    command: &str,
    out: &Output,
) -> Result<ExitCode, Error> {
    let human = !out.json() && !out.quiet();
    if human {
        outln!("following {arn}");
        outln!("  console: {}", console_url(arn));
    }
    let mut milestones = Vec::new();
    let mut applied = 0usize;
    let mut planned = 0u64;
    let summary = executions
        .follow(arn, poll, |m| {
            if human {
                print_milestone(m, &mut applied, planned);
            }
            if let Milestone::Planned { to_apply, .. } = m {
                planned = *to_apply;
            }
            milestones.push(m.clone());
        })
        .await?;
    if out.json() {
        out.emit(json!({ "command": command, "ok": summary.outcome().is_ok(), "execution": summary, "milestones": milestones }));
    } else if !human {
        print_summary(&summary);
    }
    Ok(match summary.outcome() {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => out.problem(&e),
    })
}

fn print_milestone(m: &Milestone, applied: &mut usize, planned: u64) {
    match m {
        Milestone::Started => outln!("  started"),
        Milestone::Planned {
            database,
            to_apply,
            pending,
            report_only,
            rollback: true,
            ..
        } => {
            if *report_only {
                outln!("  plan: {pending} migration(s) would be rolled back on {database}");
            } else {
                outln!("  plan: {to_apply} migration(s) to roll back on {database}");
            }
        }
        Milestone::Planned {
            database,
            to_apply,
            report_only,
            ..
        } => {
            let what = if *report_only {
                "would apply"
            } else {
                "to apply"
            };
            outln!("  plan: {to_apply} migration(s) {what} to {database}");
        }
        Milestone::Migration {
            name,
            outcome,
            execution_time_ms,
            ..
        } => {
            *applied += 1;
            let time = execution_time_ms.map_or(String::new(), |ms| format!(" ({ms} ms)"));
            let total = if planned > 0 {
                format!("/{planned}")
            } else {
                String::new()
            };
            outln!(
                "  [{applied}{total}] {name} ... {}{time}",
                outcome.replace('_', " ")
            );
        }
        Milestone::StepFailed { error, message } => {
            outln!("  step failed: {error}: {message} (retried if transient)")
        }
        Milestone::Succeeded {
            rolled_back_count, ..
        } if *rolled_back_count > 0 => {
            outln!("succeeded: {rolled_back_count} migration(s) rolled back")
        }
        Milestone::Succeeded { applied_count, .. } => {
            outln!("succeeded: {applied_count} migration(s) applied")
        }
        Milestone::Failed { error, message } => errln!("FAILED: {error}: {message}"),
        Milestone::TimedOut => errln!("TIMED OUT"),
        Milestone::Aborted => errln!("ABORTED"),
    }
}

fn print_summary(s: &Summary) {
    outln!("{} {}", s.arn, s.status);
    outln!("  started: {}", s.started_at);
    if let Some(stopped) = &s.stopped_at {
        outln!("  stopped: {stopped}");
    }
    if s.status == stepmigrate_lambda::execution::Status::Succeeded {
        outln!("  applied: {}", s.applied_count());
    }
    if let (Some(error), true) = (&s.error, s.outcome().is_err()) {
        outln!("  error:   {error}: {}", s.failure_message());
    }
    outln!("  console: {}", console_url(&s.arn));
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        remote: RemoteArgs,
    }

    fn start(args: &[&str]) -> Result<ExecutionInput, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("remote").chain(args.iter().copied()))?;
        match cli.remote.command {
            RemoteCommand::Start {
                action,
                dry_run,
                to,
                ..
            } => Ok(start_input(action, dry_run, to)),
            _ => panic!("not start"),
        }
    }

    #[test]
    fn start_rollback_builds_the_rollback_input() {
        let input = start(&["start", "--action", "rollback", "--to", "004", "--watch"]).unwrap();
        assert_eq!(
            serde_json::to_value(&input).unwrap(),
            json!({"action": "rollback", "dry_run": false, "target": "004", "source": "stepmigrate remote"})
        );
        let dry = start(&["start", "--action", "rollback", "--to", "000", "--dry-run"]).unwrap();
        assert!(dry.dry_run);
        assert_eq!(dry.target.as_ref().map(Version::as_str), Some("000"));
        // What the state machine's plan step accepts.
        let sent = serde_json::to_value(&dry).unwrap();
        assert_eq!(ExecutionInput::parse(&sent).unwrap(), dry);
        assert!(
            start(&["start", "--action", "rollback"]).is_err(),
            "a rollback needs --to"
        );
        assert_eq!(start(&["start"]).unwrap().action, Action::Migrate);
    }
}
