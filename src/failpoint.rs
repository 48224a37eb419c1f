//! Named crash points for the crash-safety tests.
//!
//! In debug builds (the ones `cargo test` runs), setting
//! `SESSIONPIPE_FAILPOINT=NAME` or `NAME:N` aborts the process the first (or
//! Nth) time it reaches the point called NAME, as abruptly as `kill -9`.
//! Release builds compile every point to nothing.

#[cfg(debug_assertions)]
pub fn hit(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static HITS: AtomicU64 = AtomicU64::new(0);
    let Some(spec) = crate::env::failpoint() else {
        return;
    };
    let (target, nth) = match spec.split_once(':') {
        Some((t, n)) => (t, n.parse().unwrap_or(1)),
        None => (spec.as_str(), 1),
    };
    if target == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == nth {
        std::process::abort();
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn hit(_name: &str) {}
