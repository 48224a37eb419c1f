//! Processors declared in the config file that run an external command once
//! per session.
//!
//! No shell is involved: the command is run as given, with the session path
//! appended as the last argument and the session described in `SESSIONPIPE_*`
//! variables. The command runs in its own process group so that a timeout
//! kills it and everything it started. Exit 0 means processed; a last stdout
//! line `{"items": N}` sets the item count; exit 75 (`EX_TEMPFAIL`) means
//! "try again later" and does not count toward quarantine. Anything else is a
//! failure whose message holds the exit status and the tail of stderr.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Interruption, Outcome, Processor, Session};
use crate::config::ExecSpec;

/// The exit status (`EX_TEMPFAIL`) with which a command says "not now": the
/// session is retried by the next run and the attempt does not count.
const TEMPFAIL: i32 = 75;

/// How much of the command's stdout and stderr is kept (the tail).
const KEEP: usize = 4096;

pub struct Exec {
    spec: ExecSpec,
}

impl Exec {
    pub fn new(spec: ExecSpec) -> Exec {
        Exec { spec }
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

    fn process(&self, session: &mut Session) -> Result<Outcome> {
        let Some(digest) = session.digest else {
            bail!("internal error: the session was not hashed before running the command");
        };
        let program = &self.spec.command[0];
        let mut child = Command::new(program)
            .args(&self.spec.command[1..])
            .arg(session.path)
            .env("SESSIONPIPE_PROCESSOR", &self.spec.name)
            .env("SESSIONPIPE_SESSION_FILE", session.name)
            .env("SESSIONPIPE_SESSION_KEY", session.user)
            .env("SESSIONPIPE_SESSION_PATH", session.path)
            .env("SESSIONPIPE_FILE_HASH", &digest.hash)
            .env("SESSIONPIPE_BYTES", digest.bytes.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {program}"))?;
        let stdout = tail_reader(child.stdout.take());
        let stderr = tail_reader(child.stderr.take());
        let status = wait_with_timeout(&mut child, self.spec.timeout)?;
        // Anything the command left running in its group would hold the pipes
        // open and stall this run: a per-session command must not outlive it.
        kill_group(&child);
        let stdout = stdout.join().unwrap_or_default();
        let stderr = stderr.join().unwrap_or_default();
        let Some(status) = status else {
            bail!(
                "timed out after {} and was killed{}",
                crate::duration::format(self.spec.timeout),
                stderr_tail(&stderr)
            );
        };
        if status.code() == Some(TEMPFAIL) {
            return Err(Interruption::Transient(format!(
                "exited with status {TEMPFAIL} (try again later){}",
                stderr_tail(&stderr)
            ))
            .into());
        }
        if !status.success() {
            let how = match (status.code(), status.signal()) {
                (Some(code), _) => format!("exited with status {code}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                _ => "failed".to_owned(),
            };
            bail!("{how}{}", stderr_tail(&stderr));
        }
        Ok(Outcome {
            items: items_from(&stdout),
            output: None,
        })
    }
}

/// Waits for the child; on timeout kills its whole process group and returns
/// `None`.
fn wait_with_timeout(
    child: &mut Child,
    timeout: Duration,
) -> Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            kill_group(child);
            child.wait()?;
            return Ok(None);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

fn kill_group(child: &Child) {
    // SAFETY: kill has no memory-safety preconditions; a negative pid
    // addresses the process group the child leads (process_group(0)).
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
}

/// Drains a pipe on a thread (so the child never blocks on a full pipe),
/// keeping only its last [`KEEP`] bytes.
fn tail_reader(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let Some(mut pipe) = pipe else { return kept };
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > 2 * KEEP {
                kept.drain(..kept.len() - KEEP);
            }
        }
        if kept.len() > KEEP {
            kept.drain(..kept.len() - KEEP);
        }
        kept
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
