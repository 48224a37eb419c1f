//! Parses the command line, runs the subcommand, and turns its outcome into
//! an exit code, with the allocator set first ([`sessionpipe::allocator`]).
//! Nothing else lives here.

use clap::{CommandFactory, Parser};
use sessionpipe::env::Environment;
use sessionpipe::printer::Printer;
use sessionpipe::{cli::Cli, cmd, exit};

fn main() {
    // SAFETY: the first thing the process does; no other thread exists yet.
    unsafe { sessionpipe::allocator::keep_freed_memory() };
    // `COMPLETE=bash sessionpipe` prints the shell's completion script, and
    // the script calls back here while the user types.
    clap_complete::CompleteEnv::with_factory(Cli::command)
        .completer("sessionpipe")
        .complete();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version go to stdout, exit 0, as clap prints them.
        Err(e) if !e.use_stderr() => e.exit(),
        // Usage errors: exit 2, with the prefix of every other error.
        Err(e) => {
            let text = e.render().to_string();
            eprint!(
                "sessionpipe: {}",
                text.strip_prefix("error: ").unwrap_or(&text)
            );
            std::process::exit(exit::USAGE);
        }
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
