//! Exit codes: the contract with crontab entries, shell scripts and monitors.
//!
//! [`TABLE`] is the one place the codes are written: the `--help` text and
//! the man page's EXIT STATUS section are generated from it, and a test holds
//! the README's table against it, so the three cannot drift apart. The
//! numbers follow BSD `sysexits.h` where one fits, so `flock`, `systemd` and
//! monitoring tools already know what they mean.

use std::fmt;

/// The run did what it was asked.
pub const SUCCESS: i32 = 0;
/// It ran, but some sessions failed or were quarantined (or `state --check`
/// found the pipeline unhealthy).
pub const FAILURES: i32 = 1;
/// Bad flag, unknown processor, bad argument.
pub const USAGE: i32 = 2;
/// The processor cannot run here (e.g. no LLM configured).
pub const UNAVAILABLE: i32 = 69;
/// Database or I/O error.
pub const IO: i32 = 74;
/// Another run of the processor holds its lock (`--busy-exit-code` overrides).
pub const BUSY: i32 = 75;
/// Configuration error: bad config file, missing data dir, schema needs
/// `migrate`, database newer than the binary.
pub const CONFIG: i32 = 78;
/// Stopped by SIGHUP, SIGINT or SIGTERM: 128 + the signal's number.
pub const HANGUP: i32 = 128 + libc::SIGHUP;
pub const INTERRUPT: i32 = 128 + libc::SIGINT;
pub const TERMINATE: i32 = 128 + libc::SIGTERM;

/// Every exit code with the sentence that documents it.
pub const TABLE: &[(i32, &str)] = &[
    (SUCCESS, "success"),
    (
        FAILURES,
        "ran, but some sessions failed or were quarantined (or `state --check` found the \
         pipeline unhealthy)",
    ),
    (USAGE, "usage error: bad flag, unknown processor"),
    (
        UNAVAILABLE,
        "processor unavailable (e.g. `verification` without an LLM API key)",
    ),
    (IO, "database or I/O error"),
    (
        BUSY,
        "another run of the processor holds its lock (`--busy-exit-code` overrides)",
    ),
    (
        CONFIG,
        "configuration error: bad config file, missing data dir, schema needs `sessionpipe \
         migrate`, database newer than this binary",
    ),
    (
        HANGUP,
        "stopped by SIGHUP: nothing charged, the run recorded, the rest left for the next run",
    ),
    (INTERRUPT, "stopped by SIGINT (Ctrl-C), likewise"),
    (
        TERMINATE,
        "stopped by SIGTERM (e.g. `systemctl stop`), likewise",
    ),
];

/// The table as the `EXIT STATUS:` block of `--help` and the man page,
/// wrapped to fit 80 columns.
pub fn help_section() -> String {
    let mut out = String::from("EXIT STATUS:\n");
    for (code, meaning) in TABLE {
        let mut line = format!("  {code:<4}");
        for word in meaning.split(' ') {
            if line.len() + word.len() + 1 > 78 && !line.trim().is_empty() {
                out.push_str(line.trim_end());
                out.push('\n');
                line = " ".repeat(6);
            }
            line.push_str(word);
            line.push(' ');
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// An error that knows which exit code it stands for.
///
/// Errors without one are database or I/O failures (74): everything that can
/// go wrong for another reason is tagged where it is detected, with
/// [`Coded::code`].
#[derive(Debug)]
pub struct CodedError {
    pub code: i32,
    pub error: anyhow::Error,
}

impl fmt::Display for CodedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)
    }
}

impl std::error::Error for CodedError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// Builds an error with an exit code from a message.
pub fn fail(code: i32, message: impl fmt::Display) -> anyhow::Error {
    CodedError {
        code,
        error: anyhow::anyhow!("{message}"),
    }
    .into()
}

/// Tags a result's error with an exit code.
pub trait Coded<T> {
    fn code(self, code: i32) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> Coded<T> for Result<T, E> {
    fn code(self, code: i32) -> anyhow::Result<T> {
        self.map_err(|e| {
            CodedError {
                code,
                error: e.into(),
            }
            .into()
        })
    }
}

/// The exit code an error stands for: the outermost tagged one, else 74.
pub fn code_of(error: &anyhow::Error) -> i32 {
    error
        .chain()
        .find_map(|e| e.downcast_ref::<CodedError>().map(|c| c.code))
        .unwrap_or(IO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_in_the_table_once_and_the_help_names_each() {
        let codes: Vec<i32> = TABLE.iter().map(|(c, _)| *c).collect();
        assert_eq!(
            codes,
            [
                SUCCESS,
                FAILURES,
                USAGE,
                UNAVAILABLE,
                IO,
                BUSY,
                CONFIG,
                HANGUP,
                INTERRUPT,
                TERMINATE
            ]
        );
        let help = help_section();
        for (code, _) in TABLE {
            assert!(help.contains(&format!("\n  {code:<4}")), "{code} in {help}");
        }
        assert!(help.lines().all(|l| l.len() <= 80), "{help}");
    }

    #[test]
    fn untagged_errors_are_io() {
        assert_eq!(code_of(&anyhow::anyhow!("disk")), IO);
        assert_eq!(code_of(&fail(CONFIG, "bad").context("loading")), CONFIG);
    }
}
