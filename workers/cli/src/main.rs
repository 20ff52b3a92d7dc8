//! `stepmigrate`: the steps of the state machine, run in one process against `DATABASE_URL`.

#[cfg(feature = "check")]
mod check;
mod cli;
mod output;
#[cfg(feature = "remote")]
mod remote;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    cli::forget_empty_variables();
    let args = match cli::Args::try_parse() {
        Ok(args) => args,
        Err(e) => return output::argument_error(e),
    };
    output::init_logging(args.verbose, args.quiet);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let out = output::Output::new(args.json || args.command.wants_json(), args.quiet);
    let command = args.command.name();
    match runtime.block_on(async {
        cli::listen_for_interrupts();
        cli::run(args, &out).await
    }) {
        Ok(code) => code,
        Err(error) => out.error(command, &error),
    }
}
