//! Named crash points for the crash-safety tests.
//!
//! In debug builds (the ones `cargo test` runs), setting
//! `SESSIONPIPE_FAILPOINT=NAME` or `NAME:N` aborts the process the first (or
//! Nth) time it reaches the point called NAME, as abruptly as `kill -9`;
//! `NAME:panic` panics there instead. [`error`] points fail with an I/O
//! error instead, as a full disk would. Release builds compile every point
//! to nothing.

#[cfg(debug_assertions)]
pub fn hit(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static HITS: AtomicU64 = AtomicU64::new(0);
    let Some(spec) = crate::env::failpoint() else {
        return;
    };
    let (target, how) = spec.split_once(':').unwrap_or((spec.as_str(), "1"));
    if target != name {
        return;
    }
    if how == "panic" {
        panic!("failpoint {name}");
    }
    if HITS.fetch_add(1, Ordering::SeqCst) + 1 == how.parse().unwrap_or(1) {
        std::process::abort();
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn hit(_name: &str) {}

/// An error the Nth time (`NAME:N`, default the first) the point is reached.
#[cfg(debug_assertions)]
pub fn error(name: &str) -> std::io::Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static HITS: AtomicU64 = AtomicU64::new(0);
    let Some(spec) = crate::env::failpoint() else {
        return Ok(());
    };
    let (target, nth) = spec.split_once(':').unwrap_or((spec.as_str(), "1"));
    if target == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == nth.parse().unwrap_or(1) {
        return Err(std::io::Error::other(format!(
            "failpoint {name}: disk full"
        )));
    }
    Ok(())
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn error(_name: &str) -> std::io::Result<()> {
    Ok(())
}
