//! SIGTERM, SIGINT and SIGHUP (systemd stopping the unit, Ctrl-C, a closing
//! terminal or cron shutting down) end a run early and cleanly: no new
//! session is started, running commands are killed with their process
//! group, reading stops, nothing is charged to the sessions in flight, the
//! run is recorded with its exit code, and sessionpipe exits with 128 + the
//! signal's number (143, 130, 129), as a shell would report it.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};

/// The signal received, 0 while none has been.
static RECEIVED: AtomicUsize = AtomicUsize::new(0);

/// The signals that stop a run.
pub const STOPPING: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// Catches the stopping signals; from now on they only set a flag.
pub fn install() -> Result<()> {
    for signal in STOPPING {
        let value = usize::try_from(signal).context("signal number")?;
        signal_hook::flag::register_usize(signal, &RECEIVED, value)
            .with_context(|| format!("cannot catch signal {signal}"))?;
    }
    Ok(())
}

/// The stopping signal received so far, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        n => i32::try_from(n).ok(),
    }
}

/// The exit code for a run ended by `signal`.
pub fn exit_code(signal: i32) -> i32 {
    128 + signal
}

/// The signal's name, for messages.
pub fn name(signal: i32) -> &'static str {
    match signal {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
