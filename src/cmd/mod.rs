//! One module per subcommand; each returns the exit code of a run that went
//! as far as it could, or an error tagged with its exit code.

mod list;
mod migrate;
mod run;
mod state;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::log::Log;
use crate::processor::Processor;

pub fn dispatch(cli: Cli) -> Result<i32> {
    let log = Log::new(cli.global.verbose, cli.global.quiet);
    let config = Config::load(&cli.global)?;
    match cli.command {
        Command::Run(args) => run::run(&args, &config, &log),
        Command::List(args) => list::list(&args, &config),
        Command::State(args) => state::state(&args, &config, &log),
        Command::Migrate(args) => migrate::migrate(&args, &config),
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
