//! Running one command to completion, whatever it does: output drained on
//! threads so it never blocks, a timeout that kills its whole process group,
//! and a wait that ends when the command does, even if something it left
//! behind still holds its stdout or stderr.

use std::io::Read;
use std::process::{Child, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Result;

/// How much of the command's stdout and stderr is kept (the tail).
pub const KEEP: usize = 4096;
/// After the command has exited, how long its output may take to drain
/// before the run goes on without the rest (a daemon it started may hold the
/// pipe for ever).
const DRAIN: Duration = Duration::from_millis(500);

/// What a finished command left.
pub struct Finished {
    /// `None` when the timeout killed it.
    pub status: Option<ExitStatus>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Waits for `child` (spawned in its own process group) for at most
/// `timeout`; then, or once it has exited, kills its process group so that
/// nothing it started outlives it.
pub fn finish(mut child: Child, timeout: Duration, stop: &dyn Fn() -> bool) -> Result<Finished> {
    let stdout = tail_reader(child.stdout.take());
    let stderr = tail_reader(child.stderr.take());
    let status = wait_with_timeout(&mut child, timeout, stop);
    kill_group(&child);
    let status = status?;
    let deadline = Instant::now() + DRAIN;
    Ok(Finished {
        status,
        stdout: collect(&stdout, deadline),
        stderr: collect(&stderr, deadline),
    })
}

/// Waits for the child; on timeout (or when `stop` says so) kills its whole
/// process group and returns `None`.
fn wait_with_timeout(
    child: &mut Child,
    timeout: Duration,
    stop: &dyn Fn() -> bool,
) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now().checked_add(timeout);
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) || stop() {
            kill_group(child);
            child.wait()?;
            return Ok(None);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

pub fn kill_group(child: &Child) {
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill has no memory-safety preconditions; a negative pid
    // addresses the process group the child leads (process_group(0)).
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

/// Drains a pipe on a thread (so the child never blocks on a full pipe),
/// sending what it reads; the thread ends at end of file.
fn tail_reader(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
    }
    rx
}

/// The last [`KEEP`] bytes a reader sent, up to its end of file or the
/// deadline, whichever comes first.
fn collect(rx: &mpsc::Receiver<Vec<u8>>, deadline: Instant) -> Vec<u8> {
    let mut kept = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => {
                kept.extend_from_slice(&chunk);
                if kept.len() > 2 * KEEP {
                    kept.drain(..kept.len() - KEEP);
                }
            }
            // End of file, or the rest is held by something left behind.
            Err(_) => break,
        }
    }
    if kept.len() > KEEP {
        kept.drain(..kept.len() - KEEP);
    }
    kept
}
