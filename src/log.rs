//! Everything sessionpipe prints to stderr.
//!
//! Cron mails whatever a job prints, so a successful run prints nothing unless
//! asked: `-v` adds progress lines (and a progress bar when stderr is a
//! terminal), `-q` drops warnings. Errors are always printed, prefixed
//! `sessionpipe:` so they can be told apart in a cron mail.

use std::fmt::Display;
use std::io::{IsTerminal, Write};

#[derive(Debug, Clone, Copy)]
pub struct Log {
    verbose: bool,
    quiet: bool,
    bar: bool,
}

impl Log {
    pub fn new(verbose: bool, quiet: bool) -> Log {
        Log {
            verbose,
            quiet,
            bar: verbose && std::io::stderr().is_terminal(),
        }
    }

    pub fn is_verbose(&self) -> bool {
        self.verbose
    }

    /// A line for `-v`.
    pub fn info(&self, msg: impl Display) {
        if self.verbose {
            self.line(format_args!("{msg}"));
        }
    }

    /// Something the operator should fix that does not fail the run.
    pub fn warn(&self, msg: impl Display) {
        if !self.quiet {
            self.line(format_args!("warning: {msg}"));
        }
    }

    pub fn error(&self, msg: impl Display) {
        self.line(format_args!("{msg}"));
    }

    fn line(&self, msg: std::fmt::Arguments) {
        let mut err = std::io::stderr().lock();
        if self.bar {
            // Clear a progress bar left on the line.
            let _ = write!(err, "\r\x1b[K");
        }
        let _ = writeln!(err, "sessionpipe: {msg}");
    }

    /// Redraws the progress bar (only with `-v` on a terminal).
    pub fn progress(&self, label: &str, done: u64, total: u64) {
        if !self.bar || total == 0 {
            return;
        }
        const WIDTH: u64 = 30;
        let filled = (done * WIDTH / total) as usize;
        let _ = write!(
            std::io::stderr().lock(),
            "\r{label} [{}{}] {done}/{total}",
            "#".repeat(filled),
            " ".repeat(WIDTH as usize - filled)
        );
    }

    pub fn end_progress(&self) {
        if self.bar {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
    }
}
