//! One module per subcommand; each returns the exit code of a run that went
//! as far as it could, or an error tagged with its exit code.

mod list;
mod migrate;
mod report;
mod run;
mod state;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::env::Environment;
use crate::printer::Printer;
use crate::processor::Processor;

/// Runs the subcommand `cli` names, printing through `printer`. With
/// `--json`, a failure that stops the command is also an object on stdout,
/// `{"error", "exit_code"}`, so a script reading stdout always gets one.
pub fn dispatch(cli: Cli, env: &Environment, printer: &Printer) -> Result<i32> {
    let json = match &cli.command {
        Command::Run(args) => args.json,
        Command::List(args) => args.json,
        Command::State(args) => args.json,
        Command::Migrate(_) => false,
        Command::Report(args) => args.json,
    };
    let result = Config::load(&cli.global.given(), env).and_then(|config| match cli.command {
        Command::Run(args) => run::run(&args, &config, printer),
        Command::List(args) => list::list(&args, &config, printer),
        Command::State(args) => state::state(&args, &config, printer),
        Command::Migrate(args) => migrate::migrate(&args, &config, printer),
        Command::Report(args) => report::report(&args, &config, printer),
    });
    match result {
        Err(e) if json => {
            let code = crate::exit::code_of(&e);
            printer.error(format_args!("{e:#}"));
            let object = serde_json::json!({ "error": format!("{e:#}"), "exit_code": code });
            printer.out(object)?;
            Ok(code)
        }
        other => other,
    }
}

/// Finds processors by name, or fails with a usage error listing the known ones.
fn find<'a>(all: &'a [Box<dyn Processor>], name: &str) -> Result<&'a dyn Processor> {
    all.iter()
        .find(|p| p.name() == name)
        .map(|p| p.as_ref())
        .ok_or_else(|| {
            let known: Vec<&str> = all.iter().map(|p| p.name()).collect();
            crate::exit::fail(
                crate::exit::USAGE,
                format!(
                    "unknown processor {name:?} (known: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            )
        })
}
