//! Arguments, and the call each command makes into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args as ClapArgs, Parser, Subcommand};
use stepmigrate_cli::project::{self, FlagSettings, Project, Source, ENV_CONFIG};
use stepmigrate_core::config::{parse_duration, Settings};
use stepmigrate_core::db::Database;
use stepmigrate_core::migration::{MigrationSet, Version};
use stepmigrate_core::plan::Scope;
use stepmigrate_core::rollback::{RollbackPlan, RollbackTarget};
use stepmigrate_core::runner::{new_run_id, Migrator, Resolution};
use stepmigrate_core::schema::{diff, LedgerFilter, Snapshot, SnapshotOptions};
use stepmigrate_core::Error;

use crate::output::{self, Output};

#[derive(Parser)]
#[command(
    name = "stepmigrate",
    version,
    about = "Apply PostgreSQL migrations step by step, with an event-sourced ledger"
)]
pub struct Args {
    /// PostgreSQL URL, e.g. postgres://user@localhost:5432/app.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,

    /// Directory of the migration files [default: migrations, beside stepmigrate.toml when
    /// there is one, else in the working directory].
    #[arg(long, env = "STEPMIGRATE_MIGRATIONS_DIR", global = true)]
    pub migrations_dir: Option<PathBuf>,

    /// The project file [env: STEPMIGRATE_CONFIG; default: the nearest stepmigrate.toml
    /// in the working directory or a parent].
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// Print one JSON document on stdout instead of human output.
    #[arg(long, global = true)]
    pub json: bool,

    /// Print only errors (nothing on success).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Log more (-v: each step, -vv: debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(flatten)]
    pub settings: SettingsArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Overrides of the STEPMIGRATE_* variables.
#[derive(ClapArgs)]
pub struct SettingsArgs {
    /// lock_timeout of each migration [env: STEPMIGRATE_LOCK_TIMEOUT, default 5s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, global = true)]
    pub lock_timeout: Option<std::time::Duration>,
    /// statement_timeout of each migration [env: STEPMIGRATE_STATEMENT_TIMEOUT, default 15min].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, global = true)]
    pub statement_timeout: Option<std::time::Duration>,
    /// Tries after a migration hit its lock_timeout [env: STEPMIGRATE_LOCK_RETRIES, default 3].
    #[arg(long, value_name = "N", global = true)]
    pub lock_retries: Option<u32>,
    /// How long to wait for another runner [env: STEPMIGRATE_LOCK_WAIT, default 10min].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, global = true)]
    pub lock_wait: Option<std::time::Duration>,
    /// How long to wait for a connection [env: STEPMIGRATE_CONNECT_TIMEOUT, default 5s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, global = true)]
    pub connect_timeout: Option<std::time::Duration>,
    /// How long `up` holds the migration lock over a batch migration before it lets another
    /// runner go first between two batches [env: STEPMIGRATE_BATCH_BUDGET, default 2min].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, global = true)]
    pub batch_budget: Option<std::time::Duration>,
    /// Apply new migrations that sort below the newest applied one (a branch merged late)
    /// instead of refusing them [env: STEPMIGRATE_ALLOW_OUT_OF_ORDER; project file:
    /// allow_out_of_order].
    #[arg(long, global = true)]
    pub allow_out_of_order: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Every migration and its state: applied, pending, failed, dirty, drift, unknown-applied.
    Status,
    /// What `up` would apply, without applying anything (the old runner's dry run).
    Plan {
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Apply the pending migrations in order, stopping at the first failure.
    Up {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Only show what would be applied (same as `plan`).
        #[arg(long)]
        dry_run: bool,
    },
    /// Roll back applied migrations with their down scripts, newest applied first: those
    /// above --to VERSION (000: all), or the last N applied. Refuses, naming them, when one
    /// is irreversible, dirty, or required by a migration that stays applied.
    #[command(group(clap::ArgGroup::new("how_far").required(true).args(["to", "last"])))]
    Down {
        /// Keep this version and everything below it applied.
        #[arg(long, value_name = "VERSION", value_parser = parse_version)]
        to: Option<Version>,
        /// Roll back the last N migrations applied.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        last: Option<u32>,
        /// Only show what would be rolled back, and with which script.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation (needed when not on a terminal).
        #[arg(long, short)]
        yes: bool,
        /// Run the down files even where the ledger kept another script when the migration
        /// was applied (by default the kept copy runs: it matches what was applied).
        #[arg(long)]
        use_file: bool,
    },
    /// Write migrations.sum, the integrity file of the migrations directory: commit it, so
    /// that two branches adding migrations conflict in git. `up` and `check` refuse a stale one.
    Hash,
    /// Run the pending migrations in a transaction that is rolled back and report, per
    /// statement, its time, the locks it takes, rewrites and new indexes. By default on a
    /// scratch database (created on the target's server and dropped afterwards, or
    /// --dev-url) with the target's history applied; the target is only read.
    Verify {
        /// Stop at this version (inclusive).
        #[arg(long, value_name = "VERSION", value_parser = parse_version)]
        to: Option<Version>,
        /// An empty database to verify on instead of a scratch one created on the target's
        /// server (like Atlas' dev database); emptied again afterwards.
        /// (STEPMIGRATE_DEV_URL or the project file's `dev_url` stand in for it; they do not
        /// apply to --in-transaction-only.)
        #[arg(long, value_name = "URL", conflicts_with = "in_transaction_only")]
        dev_url: Option<String>,
        /// Verify on the target itself (meant for staging): all pending transactional
        /// migrations in one transaction, rolled back; a short lock_timeout (2s unless
        /// --lock-timeout); records a `verified` event per migration.
        #[arg(long)]
        in_transaction_only: bool,
        /// After each pending migration is applied on the scratch database: revert it with its
        /// down file (the schema must be the one before it), apply it again (the schema must
        /// be the same as the first time). Stops at the first failure.
        #[arg(long, conflicts_with = "in_transaction_only")]
        round_trip: bool,
    },
    /// The pull-request preview: the migrations added or edited since a base git ref, linted,
    /// verified on a scratch database that has the base's migrations, and the schema diff
    /// they make, as one Markdown comment (or JSON).
    #[cfg(feature = "check")]
    Preview {
        /// The git ref the branch merges into, e.g. origin/main.
        #[arg(long, value_name = "REF")]
        base: String,
        /// markdown: the comment a workflow posts; json: the whole report.
        #[arg(long, value_name = "FORMAT", default_value = "markdown", value_parser = ["markdown", "json"])]
        format: String,
        /// An empty database for the scratch work, instead of one created (and dropped) on
        /// DATABASE_URL's server; emptied again afterwards.
        /// (STEPMIGRATE_DEV_URL or the project file's `dev_url` stand in for it.)
        #[arg(long, value_name = "URL")]
        dev_url: Option<String>,
        /// Leave durations out (for output compared byte for byte).
        #[arg(long)]
        no_timings: bool,
    },
    /// Record what you found when checking a dirty migration by hand.
    // One of the two, named together when neither is given: the usage must not steer
    // towards recording the migration applied.
    #[command(group(clap::ArgGroup::new("finding").required(true).args(["applied", "not_applied"])))]
    Resolve {
        /// The dirty migration's version, e.g. 004.
        #[arg(value_parser = parse_version)]
        version: Version,
        /// It is fully applied: mark it applied.
        #[arg(long)]
        applied: bool,
        /// It left nothing behind (or you undid it): make it pending again.
        #[arg(long)]
        not_applied: bool,
    },
    /// Create the next-numbered migration file.
    New {
        /// snake_case description, e.g. add_user_email_index.
        description: String,
    },
    /// Review the migration files without a database: PostgreSQL's grammar and lint rules.
    #[cfg(feature = "check")]
    Check(crate::check::CheckArgs),
    /// Maintain the ledger.
    Ledger {
        #[command(subcommand)]
        action: LedgerAction,
    },
    /// Start and follow executions of the deployed state machine (AWS credentials needed).
    #[cfg(feature = "remote")]
    Remote(crate::remote::RemoteArgs),
    /// Print a JSON snapshot of the database's schema, read from its catalogs (the ledger
    /// left out).
    Snapshot {
        /// Write it to this file instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        scope: SchemaScope,
    },
    /// Compare two schemas, each a database URL or a snapshot file; exit 1 when they differ.
    Diff {
        /// A postgres:// URL or a file written by `stepmigrate snapshot`.
        from: String,
        /// A postgres:// URL or a file written by `stepmigrate snapshot`.
        to: String,
        #[command(flatten)]
        scope: SchemaScope,
    },
}

/// Which pending migrations `up` and `plan` take.
#[derive(ClapArgs, Clone)]
pub struct ScopeArgs {
    /// Stop at this version (inclusive).
    #[arg(long, value_name = "VERSION", value_parser = parse_version)]
    pub to: Option<Version>,
    /// The deploy's own run: leave `after-deploy` migrations, and those that require one,
    /// pending for a run after the deploy (a plain `up`).
    #[arg(long)]
    pub skip_after_deploy: bool,
}

impl ScopeArgs {
    fn scope(&self) -> Scope {
        Scope {
            target: self.to.clone(),
            skip_after_deploy: self.skip_after_deploy,
        }
    }
}

/// What `snapshot` and `diff` cover.
#[derive(ClapArgs, Clone)]
pub struct SchemaScope {
    /// Only this schema (repeat for several; default: every schema but the system's).
    #[arg(long = "schema", value_name = "NAME")]
    pub schemas: Vec<String>,
    /// Leave this schema out (repeat for several).
    #[arg(long = "exclude-schema", value_name = "NAME")]
    pub exclude_schemas: Vec<String>,
    /// Include privileges (GRANTs).
    #[arg(long)]
    pub grants: bool,
}

#[derive(Subcommand, Clone, Copy)]
pub enum LedgerAction {
    /// Verify that schema_migrations equals the fold of its events.
    Check,
    /// Rebuild schema_migrations from its events.
    Rebuild,
}

impl Command {
    /// Whether the command was asked for JSON by its own flag (`preview --format json`):
    /// its errors are then one JSON document too, as with `--json`.
    pub fn wants_json(&self) -> bool {
        match self {
            #[cfg(feature = "check")]
            Command::Preview { format, .. } => format == "json",
            _ => false,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Command::Status => "status",
            Command::Plan { .. } | Command::Up { dry_run: true, .. } => "plan",
            Command::Up { .. } => "up",
            Command::Down { .. } => "down",
            Command::Hash => "hash",
            Command::Verify { .. } => "verify",
            Command::Resolve { .. } => "resolve",
            Command::New { .. } => "new",
            #[cfg(feature = "check")]
            Command::Check(_) => "check",
            #[cfg(feature = "check")]
            Command::Preview { .. } => "preview",
            Command::Ledger {
                action: LedgerAction::Check,
            } => "ledger check",
            Command::Ledger {
                action: LedgerAction::Rebuild,
            } => "ledger rebuild",
            #[cfg(feature = "remote")]
            Command::Remote(remote) => remote.name(),
            Command::Snapshot { .. } => "snapshot",
            Command::Diff { .. } => "diff",
        }
    }
}

/// An empty `DATABASE_URL=` or `STEPMIGRATE_*=` is an unset one: it must neither override a
/// flag nor fail as "a value is required". Called first thing, while the process has one
/// thread.
pub fn forget_empty_variables() {
    for (name, value) in std::env::vars_os() {
        let ours = name
            .to_str()
            .is_some_and(|n| n == "DATABASE_URL" || n.starts_with("STEPMIGRATE_"));
        if ours && value.to_string_lossy().trim().is_empty() {
            std::env::remove_var(&name);
        }
    }
}

/// A version argument (`004`), checked as the library checks file names.
pub fn parse_version(text: &str) -> Result<Version, String> {
    text.parse()
}

impl Args {
    /// The project file, if one is named or found (`remote` needs none).
    fn project(&self) -> Result<Option<Project>, Error> {
        let source = Source::from_args(self.config.clone(), std::env::var_os(ENV_CONFIG));
        let cwd = std::env::current_dir()
            .map_err(|e| Error::InvalidInput(format!("cannot read the working directory: {e}")))?;
        Ok(Project::locate(&source, &cwd)?)
    }

    fn migrations_dir(&self, project: Option<&Project>) -> PathBuf {
        project::migrations_dir(self.migrations_dir.as_deref(), project)
    }

    fn settings(&self, project: Option<&Project>) -> Result<Settings, Error> {
        let a = &self.settings;
        let flags = FlagSettings {
            lock_timeout: a.lock_timeout,
            statement_timeout: a.statement_timeout,
            lock_retries: a.lock_retries,
            lock_wait: a.lock_wait,
            connect_timeout: a.connect_timeout,
            batch_budget: a.batch_budget,
            allow_out_of_order: a.allow_out_of_order,
        };
        project::layered_settings(&flags, |var| std::env::var(var).ok(), project)
    }

    /// The lock_timeout the user asked for on the command line or in the environment, if any:
    /// verify on a live database has a shorter default than `up`, which the project file's
    /// `lock_timeout` (meant for `up`) does not raise.
    fn lock_timeout_given(&self) -> Option<std::time::Duration> {
        self.settings.lock_timeout.or_else(|| {
            std::env::var(stepmigrate_core::config::ENV_LOCK_TIMEOUT)
                .ok()
                .and_then(|v| parse_duration(v.trim()).ok())
        })
    }

    /// Where the database URL came from, for its errors: the variable, or the flag when
    /// it differs from the variable.
    fn url_source(&self) -> &'static str {
        if std::env::var("DATABASE_URL").ok().as_deref() == self.database_url.as_deref() {
            "DATABASE_URL"
        } else {
            "--database-url"
        }
    }

    fn migrator(&self, project: Option<&Project>) -> Result<Migrator, Error> {
        let settings = self.settings(project)?;
        let dir = self.migrations_dir(project);
        // The ledger's own commands compare and rebuild the ledger from its events: no file
        // is needed (an empty set where the directory is not there).
        let set = match &self.command {
            Command::Ledger { .. } if !dir.exists() => {
                let mut set = MigrationSet::default();
                set.dir = dir.clone();
                set
            }
            _ => MigrationSet::load(&dir)?,
        };
        let url = self.database_url.as_deref().ok_or_else(|| Error::Config {
            variable: "DATABASE_URL".into(),
            reason: "not set; set it or pass --database-url postgres://USER@HOST:PORT/DATABASE"
                .into(),
        })?;
        let db = Database::from_url(url, self.url_source(), settings.connect_timeout)?;
        Ok(Migrator::new(db, set, settings))
    }
}

pub async fn run(args: Args, out: &Output) -> Result<ExitCode, Error> {
    match &args.command {
        Command::New { description } => {
            let project = args.project()?;
            let path =
                output::new_migration_file(&args.migrations_dir(project.as_ref()), description)?;
            out.created(&path);
            Ok(ExitCode::SUCCESS)
        }
        Command::Hash => {
            let project = args.project()?;
            let dir = args.migrations_dir(project.as_ref());
            let set = MigrationSet::load(&dir)?;
            let path = stepmigrate_core::integrity::sum_path(&dir);
            let text = stepmigrate_core::integrity::sum_text(&set);
            let unchanged = set.sum.as_deref() == Some(text.as_str());
            if !unchanged {
                std::fs::write(&path, &text).map_err(|e| {
                    Error::InvalidInput(format!("cannot write {}: {e}", path.display()))
                })?;
            }
            out.hashed(&path, set.migrations().len(), unchanged);
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "remote")]
        Command::Remote(remote) => crate::remote::run(remote, out).await,
        #[cfg(feature = "check")]
        Command::Check(check) => {
            let project = args.project()?;
            // No setting is used, but a malformed one is an error here as everywhere.
            args.settings(project.as_ref())?;
            let rules = crate::check::project_rules(project.as_ref())?;
            crate::check::run(check, &args.migrations_dir(project.as_ref()), rules, out)
        }
        #[cfg(feature = "check")]
        Command::Preview {
            base,
            format,
            dev_url,
            no_timings,
        } => {
            preview_command(
                &args,
                base,
                format == "json",
                dev_url.as_deref(),
                *no_timings,
                out,
            )
            .await
        }
        Command::Snapshot { output, scope } => {
            snapshot_command(&args, output.as_deref(), scope, out).await
        }
        Command::Diff { from, to, scope } => diff_command(&args, from, to, scope, out).await,
        command => {
            let project = args.project()?;
            let mut m = args.migrator(project.as_ref())?;
            if bounded_lock_waits(command) {
                m = m.reading_only();
            }
            let lock_timeout = args.lock_timeout_given();
            let result = run_on(&m, command, lock_timeout, project.as_ref(), out).await;
            // Every session ends with a Terminate, not a reset connection in the server log;
            // but never waits long: after an interrupt a session may be stuck mid-exchange
            // (its future dropped), and the process ending closes it just as well (the
            // server rolls back what it left open and frees its locks).
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), m.db.close()).await;
            result.map_err(|e| {
                project::attribute_error(e, project.as_ref(), |var| std::env::var(var).ok())
            })
        }
    }
}

/// The commands that work on the database.
async fn run_on(
    m: &Migrator,
    command: &Command,
    lock_timeout: Option<std::time::Duration>,
    project: Option<&Project>,
    out: &Output,
) -> Result<ExitCode, Error> {
    match command {
        Command::Status => {
            let mut progress = out.progress(&m.db);
            let (ledger, mut plan) = tokio::select! {
                r = m.watching_locks(&mut progress, m.status()) => r?,
                e = interrupted() => return Err(stop_interrupted(m, e, Work::Reads).await),
            };
            // What `plan` and `up` refuse, status says, with their exit code.
            let stale_sum = m.set.ensure_sum_current().err();
            if let Some(e) = &stale_sum {
                plan.warnings.push(format!("`up` and `plan` refuse: {e}"));
            }
            out.status(&m.db, ledger.kind, &plan);
            Ok(
                match stale_sum.map_or_else(|| plan.ensure_runnable(), Err) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => out.problem(&e),
                },
            )
        }
        Command::Plan { scope }
        | Command::Up {
            scope,
            dry_run: true,
        } => {
            // Refuses what `up` would refuse, with the same error.
            m.set.ensure_sum_current()?;
            let mut progress = out.progress(&m.db);
            let mut waiting = out.progress(&m.db);
            let scope = scope.scope();
            let (_, plan) = tokio::select! {
                r = m.watching_locks(&mut progress, m.plan_telling(&scope, &mut waiting)) => r?,
                e = interrupted() => return Err(stop_interrupted(m, e, Work::Reads).await),
            };
            plan.ensure_applicable(m.settings.allow_out_of_order)?;
            out.plan(command.name(), &m.db, &plan);
            Ok(ExitCode::SUCCESS)
        }
        Command::Up {
            scope,
            dry_run: false,
        } => {
            let run_id = new_run_id("cli");
            let mut progress = out.progress(&m.db);
            let scope = scope.scope();
            let report = tokio::select! {
                r = m.up(&scope, &run_id, &mut progress) => r?,
                e = interrupted() => {
                    let e = stop_interrupted(m, e, Work::Writes).await;
                    let e = naming_done(e, &progress.done, "applied");
                    return Err(naming_batches(e, progress.batches.as_ref()));
                }
            };
            Ok(out.up(&report))
        }
        Command::Down {
            to,
            last,
            dry_run,
            yes,
            use_file,
        } => {
            let target = match (to, last) {
                (Some(v), _) => RollbackTarget::To(v.clone()),
                (None, Some(n)) => RollbackTarget::Last(*n as usize),
                (None, None) => unreachable!("clap requires --to or --last"),
            };
            // Planned before anything is reverted: an interrupt while it waits (for another
            // runner, a locked ledger) ends the command as any other.
            let mut progress = out.progress(&m.db);
            let mut waiting = out.progress(&m.db);
            let plan = tokio::select! {
                r = m.watching_locks(&mut progress, m.rollback_plan(&target, *use_file, &mut waiting)) => r?,
                e = interrupted() => return Err(stop_interrupted(m, e, Work::Reads).await),
            };
            if *dry_run || plan.reverts.is_empty() {
                out.rollback_plan(&m.db, &plan, *dry_run);
                return Ok(ExitCode::SUCCESS);
            }
            if !*yes {
                confirm_rollback(&m.db, &plan, out)?;
            }
            // Exactly what was shown (and confirmed): under the lock the runner refuses if
            // anything was applied meanwhile.
            let mut progress = out.rollback_progress(&m.db);
            let run_id = new_run_id("down");
            let report = tokio::select! {
                r = m.down_planned(&plan, *use_file, &run_id, &mut progress) => r?,
                e = interrupted() => {
                    let e = stop_interrupted(m, e, Work::Writes).await;
                    return Err(naming_done(e, &progress.done, "rolled back"));
                }
            };
            Ok(out.down(&report))
        }
        Command::Verify {
            to,
            dev_url,
            in_transaction_only,
            round_trip,
        } => {
            let dev_url = project::dev_url(dev_url.as_deref(), |v| std::env::var(v).ok(), project);
            verify(
                m,
                to.as_ref(),
                dev_url.as_ref(),
                *in_transaction_only,
                *round_trip,
                lock_timeout,
                out,
            )
            .await
        }
        Command::Resolve {
            version, applied, ..
        } => {
            let resolution = if *applied {
                Resolution::Applied
            } else {
                Resolution::NotApplied
            };
            let mut progress = out.progress(&m.db);
            let mut waiting = out.progress(&m.db);
            let run_id = new_run_id("resolve");
            let resolving = m.resolve(version, resolution, &run_id, &mut waiting);
            let (name, resolved) = tokio::select! {
                r = m.watching_locks(&mut progress, resolving) => r?,
                e = interrupted() => return Err(stop_interrupted(m, e, Work::Reads).await),
            };
            out.resolved(&name, resolved);
            Ok(ExitCode::SUCCESS)
        }
        Command::Ledger {
            action: LedgerAction::Check,
        } => {
            let mut progress = out.progress(&m.db);
            let (kind, differences) = tokio::select! {
                r = m.watching_locks(&mut progress, m.ledger_check()) => r?,
                e = interrupted() => return Err(stop_interrupted(m, e, Work::Reads).await),
            };
            if !differences.is_empty() {
                return Err(Error::LedgerInconsistent { differences });
            }
            out.ledger_consistent(kind);
            Ok(ExitCode::SUCCESS)
        }
        Command::Ledger {
            action: LedgerAction::Rebuild,
        } => {
            let mut progress = out.progress(&m.db);
            let mut waiting = out.progress(&m.db);
            let run_id = new_run_id("rebuild");
            let rebuilding = m.ledger_rebuild(&run_id, &mut waiting);
            let rows = tokio::select! {
                r = m.watching_locks(&mut progress, rebuilding) => r?,
                e = interrupted() => return Err(stop_interrupted(m, e, Work::Reads).await),
            };
            out.ledger_rebuilt(rows);
            Ok(ExitCode::SUCCESS)
        }
        Command::New { .. } | Command::Hash => unreachable!("needs no database"),
        #[cfg(feature = "check")]
        Command::Check(_) | Command::Preview { .. } => {
            unreachable!("`check` and `preview` need no target database")
        }
        Command::Snapshot { .. } | Command::Diff { .. } => {
            unreachable!("`snapshot` and `diff` need no migration set")
        }
        #[cfg(feature = "remote")]
        Command::Remote(_) => unreachable!("`remote` works on the state machine"),
    }
}

/// Asks on the terminal before a rollback; without one (a script, CI) `--yes` must say so.
fn confirm_rollback(db: &Database, plan: &RollbackPlan, out: &Output) -> Result<(), Error> {
    use std::io::IsTerminal;
    let names: Vec<&str> = plan.reverts.iter().map(|r| r.name.as_str()).collect();
    if out.json() || !std::io::stdin().is_terminal() || !std::io::stderr().is_terminal() {
        return Err(Error::InvalidInput(format!(
            "down would roll back {} migration(s) of {db} ({}): pass --yes to confirm, or --dry-run to see the plan",
            names.len(),
            names.join(", ")
        )));
    }
    out.rollback_plan(db, plan, true);
    eprint!("Roll back {} migration(s) of {db}? [y/N] ", names.len());
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| Error::InvalidInput(format!("cannot read the answer: {e}")))?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(Error::InvalidInput(
            "not confirmed: nothing was rolled back".into(),
        ))
    }
}

// `snapshot` and `diff`: the catalog snapshot and the structural diff (no migration set).

impl SchemaScope {
    fn options(&self, settings: &Settings) -> SnapshotOptions {
        SnapshotOptions {
            include_schemas: self.schemas.clone(),
            exclude_schemas: self.exclude_schemas.clone(),
            grants: self.grants,
            ledger: match &settings.ledger_schema {
                Some(schema) => LedgerFilter::Schema(schema.clone()),
                None => LedgerFilter::Auto,
            },
            ..SnapshotOptions::default()
        }
    }
}

/// What a `diff` operand is.
#[derive(Debug, PartialEq, Eq)]
enum Operand {
    /// A database to snapshot, the scheme written `postgres://` whatever its case.
    Url(String),
    /// A snapshot file; `shown` names it in errors (not the path when the path could hold a
    /// credential).
    File {
        path: std::path::PathBuf,
        shown: std::path::PathBuf,
    },
}

/// A postgres:// (or postgresql://, any case, spaces around) URL is a database; anything
/// else that looks like a URL or a connection string (`://`, `password=`, a `scheme:` of
/// postgres) is refused without being repeated, since it may hold a password; an `@` in a
/// file's name keeps the name out of the errors too.
fn classify_operand(operand: &str, role: &str) -> Result<Operand, Error> {
    let trimmed = operand.trim();
    if let Some((scheme, rest)) = trimmed.split_once("://") {
        if scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql") {
            return Ok(Operand::Url(format!("postgres://{rest}")));
        }
    }
    let lower = trimmed.to_ascii_lowercase();
    let neither = || {
        Error::InvalidInput(format!(
            "{role} is neither a postgres:// URL nor a snapshot file (a database URL begins with postgres:// or postgresql://)"
        ))
    };
    if lower.contains("://")
        || lower.contains("password=")
        || lower.starts_with("postgres") && lower.contains(':')
    {
        return Err(neither());
    }
    let path = std::path::PathBuf::from(operand);
    if operand.contains('@') {
        // A file may be named so, but it is named in no message.
        if !path.is_file() {
            return Err(neither());
        }
        return Ok(Operand::File {
            path,
            shown: std::path::PathBuf::from(format!("the {role} file")),
        });
    }
    Ok(Operand::File {
        shown: path.clone(),
        path,
    })
}

/// A `diff` operand: a URL is a database to snapshot, anything else a snapshot file.
async fn load_schema(
    operand: &str,
    role: &str,
    options: &SnapshotOptions,
    settings: &Settings,
) -> Result<Snapshot, Error> {
    match classify_operand(operand, role)? {
        Operand::Url(url) => {
            let db = Database::from_url(&url, role, settings.connect_timeout)?;
            let result = Snapshot::capture_database(&db, options).await;
            db.close().await;
            result
        }
        Operand::File { path, shown } => {
            let rename = |e: Error| match e {
                Error::InvalidSnapshot { reason, .. } => Error::InvalidSnapshot {
                    file: shown.clone(),
                    reason,
                },
                other => other,
            };
            let mut snapshot = Snapshot::read(&path).map_err(rename)?;
            // A file taken without --grants (or before the scope was recorded) holds no
            // grants: compared with grants, every one would read as a change.
            if options.grants && !snapshot.options.as_ref().is_some_and(|o| o.grants) {
                return Err(Error::InvalidSnapshot {
                    file: shown,
                    reason: "taken without --grants, so its privileges are unknown; take it again with `stepmigrate snapshot --grants`, or diff without --grants".into(),
                });
            }
            snapshot.restrict(options);
            Ok(snapshot)
        }
    }
}

/// Narrows `snapshot` to the schemas `other` was taken with, if `other` is a file that
/// recorded them: a file of `--schema app` against a whole database compares `app` alone.
/// A file written before catalog objects were captured says nothing of them: they are left
/// out on both sides.
fn restrict_to_scope_of(snapshot: &mut Snapshot, other: &Snapshot) {
    if !other.options.as_ref().is_some_and(|o| o.objects) {
        snapshot.objects.clear();
    }
    if let Some(scope) = &other.options {
        if !scope.schemas.is_empty() || !scope.exclude_schemas.is_empty() {
            snapshot.restrict(&SnapshotOptions {
                include_schemas: scope.schemas.clone(),
                exclude_schemas: scope.exclude_schemas.clone(),
                grants: true,
                comments: true,
                ..SnapshotOptions::default()
            });
        }
    }
}

async fn snapshot_command(
    args: &Args,
    output: Option<&std::path::Path>,
    scope: &SchemaScope,
    out: &Output,
) -> Result<ExitCode, Error> {
    let settings = args.settings(args.project()?.as_ref())?;
    let url = args.database_url.as_deref().ok_or_else(|| Error::Config {
        variable: "DATABASE_URL".into(),
        reason: "not set; set it or pass --database-url postgres://USER@HOST:PORT/DATABASE".into(),
    })?;
    let db = Database::from_url(url, args.url_source(), settings.connect_timeout)?;
    let result = Snapshot::capture_database(&db, &scope.options(&settings)).await;
    db.close().await;
    let snapshot = result?;
    out.snapshot(&db, &snapshot, output)?;
    Ok(ExitCode::SUCCESS)
}

async fn diff_command(
    args: &Args,
    from: &str,
    to: &str,
    scope: &SchemaScope,
    out: &Output,
) -> Result<ExitCode, Error> {
    let settings = args.settings(args.project()?.as_ref())?;
    let options = scope.options(&settings);
    let mut old = load_schema(from, "FROM", &options, &settings).await?;
    let mut new = load_schema(to, "TO", &options, &settings).await?;
    let names = |s: &Snapshot| -> std::collections::BTreeSet<String> {
        s.schemas.iter().map(|x| x.name.clone()).collect()
    };
    let loaded: std::collections::BTreeSet<String> = &names(&old) | &names(&new);
    if let Some(missing) = options
        .include_schemas
        .iter()
        .find(|s| !loaded.contains(s.as_str()))
    {
        return Err(Error::Config {
            variable: "--schema".into(),
            reason: format!(
                "no schema {missing:?} in FROM or TO (names are case-sensitive; they hold: {})",
                loaded.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        });
    }
    let without_objects: Vec<&str> = [("FROM", &old), ("TO", &new)]
        .into_iter()
        .filter(|(_, s)| !s.options.as_ref().is_some_and(|o| o.objects))
        .map(|(side, _)| side)
        .collect();
    restrict_to_scope_of(&mut old, &new);
    restrict_to_scope_of(&mut new, &old);
    let compared: std::collections::BTreeSet<String> = &names(&old) | &names(&new);
    let left_out: Vec<String> = loaded.difference(&compared).cloned().collect();
    if compared.is_empty() && !loaded.is_empty() {
        return Err(Error::InvalidInput(format!(
            "FROM and TO were taken with scopes that share no schema ({}): nothing would be compared; take both with the same --schema/--exclude-schema",
            left_out.join(", ")
        )));
    }
    let mut warnings: Vec<String> = Vec::new();
    if !left_out.is_empty() {
        warnings.push(format!(
            "not compared (outside the scope the other side was taken with): schema(s) {}",
            left_out.join(", ")
        ));
    }
    if !without_objects.is_empty() {
        warnings.push(format!(
            "catalog objects (collations, text search, casts, publications, default privileges...) not compared: {} was written before they were captured; take it again with `stepmigrate snapshot`",
            without_objects.join(" and ")
        ));
    }
    let changes = diff(&old, &new);
    out.schema_diff(&changes, &warnings);
    // Like diff(1): 0 identical, 1 different.
    Ok(if changes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `verify`: on a scratch (or dev) database that is dropped (or emptied) on every path,
/// Ctrl-C included, or in a rolled-back transaction on the target.
async fn verify(
    m: &Migrator,
    to: Option<&Version>,
    dev_url: Option<&project::DevUrl>,
    in_transaction_only: bool,
    round_trip: bool,
    lock_timeout: Option<std::time::Duration>,
    out: &Output,
) -> Result<ExitCode, Error> {
    use stepmigrate_core::verify::{ScratchDatabase, VerifyOptions, IN_TRANSACTION_LOCK_TIMEOUT};
    let run_id = new_run_id("verify");
    if in_transaction_only {
        // Everything it runs on the target is rolled back: stopped, its backend is
        // cancelled and nothing stays (its verified events are written only at its end).
        let report = tokio::select! {
            r = m.verify_in_transaction(
                to,
                lock_timeout.unwrap_or(IN_TRANSACTION_LOCK_TIMEOUT),
                &run_id,
            ) => r,
            e = interrupted() => Err(stop_interrupted(m, e, Work::Reads).await),
        }?;
        return Ok(out.verify(&report));
    }
    let scratch = match dev_url {
        Some(dev) => {
            let dev =
                Database::from_url(dev.url.expose(), &dev.source, m.settings.connect_timeout)?;
            ScratchDatabase::dev_for(dev, &m.db).await?
        }
        None => ScratchDatabase::create(&m.db, "stepmigrate_verify").await?,
    };
    let options = VerifyOptions { round_trip };
    let mut progress = out.progress(&m.db);
    let result = tokio::select! {
        r = m.watching_locks(&mut progress, m.verify_on_scratch_with(&scratch, to, &run_id, &options)) => r,
        e = interrupted() => Err(stop_interrupted(m, e, Work::Reads).await),
    };
    let name = scratch.name().to_owned();
    if let Err(e) = scratch.drop().await {
        output::errln!("warning: could not remove the scratch database {name}: {e}");
    }
    Ok(out.verify(&result?))
}

/// `preview`: the report, then the comment (or JSON) on stdout; exit 1 when it holds an error
/// (a finding, a failed migration, an edited one), 0 otherwise, warnings included.
#[cfg(feature = "check")]
async fn preview_command(
    args: &Args,
    base: &str,
    json: bool,
    dev_url: Option<&str>,
    no_timings: bool,
    out: &Output,
) -> Result<ExitCode, Error> {
    use stepmigrate_cli::preview::{self, report::Verdict, run::Scratch};
    let project = args.project()?;
    let settings = args.settings(project.as_ref())?;
    let rules = crate::check::project_rules(project.as_ref())?;
    let dir = args.migrations_dir(project.as_ref());
    let dev = project::dev_url(dev_url, |v| std::env::var(v).ok(), project.as_ref());
    let scratch = match (&dev, args.database_url.as_deref()) {
        (Some(dev), url) => Scratch::Dev(
            Database::from_url(dev.url.expose(), &dev.source, settings.connect_timeout)?,
            url.map(|url| Database::from_url(url, args.url_source(), settings.connect_timeout))
                .transpose()?
                .map(Box::new),
        ),
        (None, Some(url)) => {
            Scratch::CreateOn(Database::from_url(url, args.url_source(), settings.connect_timeout)?)
        }
        (None, None) => {
            return Err(Error::Config {
                variable: "DATABASE_URL".into(),
                reason: "not set: preview needs a PostgreSQL server to create its scratch database on (DATABASE_URL, whose database is not touched), or an empty database of its own (--dev-url, STEPMIGRATE_DEV_URL or dev_url in stepmigrate.toml)".into(),
            })
        }
    };
    let report =
        preview::run::preview(&dir, base, &rules, &settings, scratch, interrupted()).await?;
    if json || out.json() {
        out.emit(serde_json::json!({
            "command": "preview",
            "ok": report.verdict() != Verdict::Errors,
            "verdict": report.verdict(),
            "summary": report.summary(),
            "report": report,
        }));
    } else {
        let options = preview::RenderOptions {
            timings: !no_timings,
            ..preview::RenderOptions::default()
        };
        output::outln!("{}", preview::render(&report, options));
    }
    Ok(if report.verdict() == Verdict::Errors {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The commands that change no schema (they read the target, or write only the ledger):
/// each of their sessions waits for a lock at most the lock_timeout (see
/// [`Migrator::reading_only`]), and names who holds it.
fn bounded_lock_waits(command: &Command) -> bool {
    matches!(
        command,
        Command::Status
            | Command::Plan { .. }
            | Command::Up { dry_run: true, .. }
            | Command::Down { dry_run: true, .. }
            | Command::Resolve { .. }
            | Command::Ledger { .. }
            | Command::Verify {
                in_transaction_only: false,
                ..
            }
    )
}

/// What an interrupted command's statements do on the server.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Work {
    /// Reads (`status`, `plan`, `verify`'s reads of the target): cancelled, nothing to undo.
    Reads,
    /// Migrations and reverts (`up`, `down`).
    Writes,
}

/// After a command was interrupted (its future dropped): the statement its session sent
/// runs on in the server; `up`'s or `down`'s would commit, with its ledger event, outside the
/// lock and unseen, and a read may wait behind a lock for ever. Cancels it and waits for it
/// to stop, and says which happened: the error the command ends with.
async fn stop_interrupted(m: &Migrator, interrupted: Error, work: Work) -> Error {
    let wait = std::time::Duration::from_secs(30);
    let what = match m.db.cancel_own_work(wait).await {
        Ok((cancelled, still)) if work == Work::Reads => match (cancelled.is_empty(), still.is_empty()) {
            (_, false) => format!("cancelled the read of backend {}, which is still running after {}s; it changes nothing", join_pids(&still), wait.as_secs()),
            (false, true) => format!("cancelled the read of backend {}; nothing was changed", join_pids(&cancelled)),
            (true, true) => "nothing was changed".into(),
        },
        Err(e) if work == Work::Reads => {
            format!("could not cancel its read on the server ({e}); it changes nothing")
        }
        Ok((_, still)) if !still.is_empty() => format!(
            "cancelled the statement of backend {}, which is still running after {}s; it may yet commit: run `stepmigrate status` once it ends",
            join_pids(&still),
            wait.as_secs()
        ),
        Ok((cancelled, _)) if !cancelled.is_empty() => format!(
            "cancelled the statement of backend {} and waited for it to stop: a migration (or revert) in a transaction rolled back whole (of a batch migration, the batch that ran: the batches it committed before stay, and the next `up` resumes after them), one outside a transaction is dirty; `stepmigrate status` shows what committed",
            join_pids(&cancelled)
        ),
        Ok(_) => "no statement of this run was running on the server; `stepmigrate status` shows what committed".into(),
        Err(e) => format!(
            "could not cancel the statement of this run on the server ({e}): it may still commit; `stepmigrate status` shows what committed once it ends"
        ),
    };
    match interrupted {
        Error::Interrupted(text) => Error::Interrupted(format!("{text}: {what}")),
        other => other,
    }
}

/// A batch migration the run did not finish: the batches it committed stay.
fn naming_batches(interrupted: Error, batches: Option<&(String, u64, u64)>) -> Error {
    match (interrupted, batches) {
        (Error::Interrupted(text), Some((name, batches, rows))) => Error::Interrupted(format!(
            "{text}; and it committed {batches} batch(es) of {name} ({rows} rows), which stay changed: the next `up` resumes after them"
        )),
        (other, _) => other,
    }
}

/// An interrupt drops the run's report: its error names what the run committed before it.
fn naming_done(interrupted: Error, done: &[String], verb: &str) -> Error {
    let done = if done.is_empty() {
        format!("this run {verb} nothing before the interrupt")
    } else {
        format!(
            "this run {verb} {} before the interrupt ({})",
            done.len(),
            done.join(", ")
        )
    };
    match interrupted {
        Error::Interrupted(text) => Error::Interrupted(format!("{text}; {done}")),
        other => other,
    }
}

fn join_pids(pids: &[i32]) -> String {
    pids.iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether the process was asked to stop, since [`listen_for_interrupts`]: a watch, so that a
/// signal that came before anyone waited for it is not lost.
static STOP: std::sync::OnceLock<tokio::sync::watch::Receiver<bool>> = std::sync::OnceLock::new();

/// Installs the handlers of Ctrl-C and SIGTERM (as a CI runner or a container sends it) for
/// the whole run, first thing: before it, SIGTERM would end the process at once (a scratch
/// database being created left behind), and a signal between two waits for it would be
/// lost (the run going on to its end). Must run inside the runtime.
pub fn listen_for_interrupts() {
    let (tx, rx) = tokio::sync::watch::channel(false);
    if STOP.set(rx).is_err() {
        return;
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            tokio::spawn(async move {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                let _ = tx.send(true);
            });
            return;
        }
    }
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = tx.send(true);
    });
}

/// Resolves when the process is asked to stop (see [`listen_for_interrupts`]), at once if it
/// was asked already, as the error the command ends with: the commands that made a scratch
/// database drop it first.
fn interrupted() -> impl std::future::Future<Output = Error> {
    if STOP.get().is_none() {
        listen_for_interrupts();
    }
    let stop = STOP.get().cloned();
    async move {
        let signalled = match stop {
            Some(mut rx) => rx.wait_for(|stopped| *stopped).await.is_ok(),
            None => false,
        };
        if !signalled {
            // The sender gone without a signal (no handler could be installed): never.
            std::future::pending::<()>().await
        }
        Error::Interrupted("interrupted".into())
    }
}
