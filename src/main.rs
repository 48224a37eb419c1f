//! Parses the command line, runs the subcommand, and turns its outcome into
//! an exit code. Nothing else lives here.

use clap::Parser;
use sessionpipe::env::Environment;
use sessionpipe::printer::Printer;
use sessionpipe::{cli::Cli, cmd, exit};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // clap prints help and version to stdout (exit 0) and usage errors
        // to stderr (exit 2).
        Err(e) => e.exit(),
    };
    sessionpipe::printer::install_panic_hook();
    let printer = Printer::new(cli.global.level());
    let code = match cmd::dispatch(cli, &Environment::from_process(), &printer) {
        Ok(code) => code,
        Err(e) => {
            printer.error(format_args!("{e:#}"));
            exit::code_of(&e)
        }
    };
    std::process::exit(code);
}
