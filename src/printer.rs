//! Everything sessionpipe prints, on stdout and stderr.
//!
//! Cron mails whatever a job prints, so a successful run prints nothing unless
//! asked: `-v` adds progress lines (and a progress bar when stderr is a
//! terminal), `-q` drops warnings. Errors are always printed, prefixed
//! `sessionpipe:` so they can be told apart in a cron mail.
//!
//! Results go to stdout through [`Printer::out`] only. A reader that closes
//! the pipe early (`sessionpipe list | head -1`) is no failure: from then on
//! nothing more is printed, and the command goes on to the exit code its
//! work earns (0 for `list | head -1`; a run's own code, so a cron job piping
//! `--json` into a closed reader still reports what happened).

use std::fmt::{self, Display};
use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// How much goes to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Errors only.
    Quiet,
    /// Errors and warnings.
    Normal,
    /// Errors, warnings and what happens.
    Verbose,
}

#[derive(Debug)]
pub struct Printer {
    level: Level,
    /// Draw a progress bar: verbose, on a terminal.
    bar: bool,
    /// The reader of stdout has gone.
    closed: AtomicBool,
}

impl Printer {
    pub fn new(level: Level) -> Printer {
        Printer {
            level,
            bar: level == Level::Verbose && io::stderr().is_terminal(),
            closed: AtomicBool::new(false),
        }
    }

    /// One line of results on stdout; nothing once its reader has gone.
    pub fn out(&self, line: impl Display) -> anyhow::Result<()> {
        if self.closed.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut out = io::stdout().lock();
        match writeln!(out, "{line}").and_then(|()| out.flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                self.closed.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
        }
    }

    /// A line for `-v`.
    pub fn info(&self, msg: impl Display) {
        if self.level == Level::Verbose {
            self.err_line(format_args!("{msg}"));
        }
    }

    /// Something the operator should fix that does not fail the run.
    pub fn warn(&self, msg: impl Display) {
        if self.level != Level::Quiet {
            self.err_line(format_args!("warning: {msg}"));
        }
    }

    pub fn error(&self, msg: impl Display) {
        self.err_line(format_args!("{msg}"));
    }

    fn err_line(&self, msg: fmt::Arguments) {
        let mut err = io::stderr().lock();
        if self.bar {
            // Clear a progress bar left on the line.
            let _ = write!(err, "\r\x1b[K");
        }
        // Nothing better to do when stderr itself is gone.
        let _ = writeln!(err, "sessionpipe: {msg}");
    }

    /// Redraws the progress bar (only with `-v` on a terminal).
    pub fn progress(&self, label: &str, done: u64, total: u64) {
        if !self.bar || total == 0 {
            return;
        }
        const WIDTH: u64 = 30;
        let filled = (done.min(total) * WIDTH / total) as usize;
        let _ = write!(
            io::stderr().lock(),
            "\r{label} [{}{}] {done}/{total}",
            "#".repeat(filled),
            " ".repeat(WIDTH as usize - filled)
        );
    }

    pub fn end_progress(&self) {
        if self.bar {
            let _ = write!(io::stderr().lock(), "\r\x1b[K");
        }
    }
}

/// Threads whose panics are a session's failure, reported as such by the
/// run: their panic prints nothing of its own.
pub const QUIET_PANIC_THREAD: &str = "sessionpipe-worker";

/// Replaces Rust's panic message (several lines, a backtrace hint) by one
/// `sessionpipe:` line, and by nothing on worker threads, whose panics the
/// run records as the session's error: no backtrace reaches a cron mail.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        if std::thread::current().name() == Some(QUIET_PANIC_THREAD) {
            return;
        }
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let _ = writeln!(io::stderr().lock(), "sessionpipe: internal error: {what}");
    }));
}
