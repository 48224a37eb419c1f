//! Processors declared in the config file that run an external command once
//! per session.
//!
//! No shell is involved: the command is run as given. It is handed the
//! session file sessionpipe opened and checked to be the one the scan saw, on
//! its stdin, and `/dev/stdin` as its last argument, so that a file swapped
//! for a link after the scan can never make it read anything else; the
//! session is described in `SESSIONPIPE_*` variables. Credentials of the LLM
//! are removed from its environment. The command runs in its own process
//! group so that a timeout kills it and everything it started. Exit 0 means processed; a last stdout
//! line `{"items": N}` sets the item count; exit 75 (`EX_TEMPFAIL`) means
//! "try again later" and does not count toward quarantine. Anything else is a
//! failure whose message holds the exit status and the tail of stderr.

mod child;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Result, bail};

use super::{Interruption, Outcome, Processor, Session};
use crate::config::ExecSpec;
use crate::exit;
use crate::signals;
use child::Finished;

/// The exit status (`EX_TEMPFAIL`) with which a command says "not now": the
/// session is retried by the next run and the attempt does not count.
const TEMPFAIL: i32 = 75;

/// The session file, as the command's argument: its stdin.
const STDIN_PATH: &str = "/dev/stdin";

pub struct Exec {
    spec: ExecSpec,
    hidden: Hidden,
    /// `PATH`, to find the program in.
    path: Option<OsString>,
}

/// What a command must not learn.
pub struct Hidden {
    /// Variables removed from its environment...
    pub variables: Vec<OsString>,
    /// ...and their values, redacted from what is kept of its stderr.
    pub secrets: Vec<crate::llm::ApiKey>,
}

impl Exec {
    pub fn new(spec: ExecSpec, hidden: Hidden, path: Option<OsString>) -> Exec {
        Exec { spec, hidden, path }
    }
}

/// Keeps the commands this process starts from reading its memory, its
/// environment (the LLM keys) or its descriptors (the database) through
/// `/proc`, when they run as the same user: the process is made
/// non-dumpable. A command run as root can read anything; its recorded
/// output is redacted all the same.
pub fn hide_this_process() {
    // SAFETY: PR_SET_DUMPABLE takes plain integers and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

impl Processor for Exec {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn kind(&self) -> &'static str {
        "exec"
    }

    fn version(&self) -> u32 {
        self.spec.version
    }

    fn cadence(&self) -> Duration {
        self.spec.cadence
    }

    fn needs_digest_first(&self) -> bool {
        true
    }

    fn unavailable(&self) -> Option<String> {
        program_problem(&self.spec.command[0], self.path.as_deref())
    }

    fn process(&self, session: &mut Session) -> Result<Outcome> {
        let Some(digest) = session.digest else {
            bail!("internal error: the session was not hashed before running the command");
        };
        // The command reads the file sessionpipe opened and checked, on its
        // stdin and as /dev/stdin: never a name it would resolve again.
        let file = session.verified_file()?;
        let program = &self.spec.command[0];
        let mut command = Command::new(program);
        command
            .args(&self.spec.command[1..])
            .arg(STDIN_PATH)
            .env("SESSIONPIPE_PROCESSOR", &self.spec.name)
            .env("SESSIONPIPE_SESSION_FILE", session.name)
            .env("SESSIONPIPE_SESSION_KEY", session.user)
            .env("SESSIONPIPE_SESSION_PATH", session.path)
            .env("SESSIONPIPE_FILE_HASH", &digest.hash)
            .env("SESSIONPIPE_BYTES", digest.bytes.to_string())
            .stdin(Stdio::from(file))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for name in &self.hidden.variables {
            command.env_remove(name);
        }
        let child = command.spawn().map_err(|e| match e.kind() {
            // The program went away: the processor is unavailable, not the
            // session at fault.
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                Interruption::StopRun(exit::UNAVAILABLE, format!("cannot start {program}: {e}"))
                    .into()
            }
            _ => anyhow::Error::new(e).context(format!("cannot start {program}")),
        })?;
        // A stopping signal kills the command's group at once.
        let done = child::finish(child, self.spec.timeout, &|| signals::received().is_some())?;
        if let (None, Some(signal)) = (done.status, signals::received()) {
            bail!("killed: sessionpipe received {}", signals::name(signal));
        }
        judge(&done, self.spec.timeout).map_err(|e| {
            // Whatever the command printed, no key is kept of it.
            let text = self
                .hidden
                .secrets
                .iter()
                .fold(format!("{e:#}"), |text, key| key.redact(&text));
            match Interruption::of(&e) {
                Some(Interruption::Transient(_)) => Interruption::Transient(text).into(),
                _ => anyhow::anyhow!(text),
            }
        })
    }
}

/// What a finished command's exit says.
fn judge(done: &Finished, timeout: Duration) -> Result<Outcome> {
    let Some(status) = done.status else {
        bail!(
            "timed out after {} and was killed{}",
            crate::duration::format(timeout),
            stderr_tail(&done.stderr)
        );
    };
    if status.code() == Some(TEMPFAIL) {
        return Err(Interruption::Transient(format!(
            "exited with status {TEMPFAIL} (try again later){}",
            stderr_tail(&done.stderr)
        ))
        .into());
    }
    if !status.success() {
        let how = match (status.code(), status.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "failed".to_owned(),
        };
        bail!("{how}{}", stderr_tail(&done.stderr));
    }
    Ok(Outcome {
        items: items_from(&done.stdout),
        output: None,
    })
}

/// Why `program` cannot be run, if it cannot: searched in `path` (the
/// `PATH` sessionpipe was started with) unless it names a file.
fn program_problem(program: &str, path: Option<&std::ffi::OsStr>) -> Option<String> {
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![PathBuf::from(program)]
    } else {
        std::env::split_paths(path.unwrap_or_default())
            .map(|dir| dir.join(program))
            .collect()
    };
    let runnable = |p: &PathBuf| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if candidates.iter().any(runnable) {
        return None;
    }
    Some(if program.contains('/') {
        format!("{program} does not exist or is not an executable file")
    } else {
        format!("{program} is not an executable file in PATH")
    })
}

fn stderr_tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!("; stderr: {text}")
    }
}

/// The item count from a last stdout line `{"items": N}`, else 0.
fn items_from(stdout: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(stdout);
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|v| v.get("items")?.as_u64())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_from_the_last_line() {
        assert_eq!(items_from(b"log\n{\"items\": 3}\n\n"), 3);
        assert_eq!(items_from(b"{\"items\": 3}\nlater\n"), 0);
        assert_eq!(items_from(b""), 0);
        assert_eq!(items_from(b"{\"items\": -1}"), 0);
    }
}
