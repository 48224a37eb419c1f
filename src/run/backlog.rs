//! A bound on the rows waiting for the writer.
//!
//! Workers can outrun the single writer; without a bound, the rows of every
//! session read but not yet written would pile up in memory. A worker
//! reserves the bytes its session's rows hold before sending them, waiting
//! while the backlog is full, and the writer releases them once written. A
//! session larger than the whole bound still goes when the backlog is empty,
//! so nothing waits for ever; nor does a worker when the writer is gone (it
//! panicked): [`Backlog::close`] lets every worker through.

use std::sync::{Condvar, Mutex, PoisonError};

/// Bytes of rows that may wait for the writer.
pub const LIMIT: u64 = 16 << 20;

#[derive(Debug, Default)]
pub struct Backlog {
    state: Mutex<State>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    held: u64,
    closed: bool,
}

/// Closes the backlog when dropped, however the writer leaves.
pub struct CloseOnDrop<'a>(pub &'a Backlog);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl Backlog {
    /// Waits until `bytes` more fit, then counts them as waiting.
    pub fn reserve(&self, bytes: u64) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while !s.closed && s.held > 0 && s.held.saturating_add(bytes) > LIMIT {
            s = self.freed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        s.held = s.held.saturating_add(bytes);
    }

    /// The writer is done with `bytes`.
    pub fn release(&self, bytes: u64) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.held = s.held.saturating_sub(bytes);
        self.freed.notify_all();
    }

    /// The writer takes nothing more: nobody waits.
    pub fn close(&self) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.closed = true;
        self.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_backlog_waits_for_the_writer_and_a_huge_item_goes_alone() {
        let backlog = Backlog::default();
        backlog.reserve(LIMIT * 3);
        std::thread::scope(|s| {
            let waiting = s.spawn(|| backlog.reserve(1));
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(!waiting.is_finished(), "reserved past the limit");
            backlog.release(LIMIT * 3);
            waiting.join().unwrap();
        });
        assert_eq!(backlog.state.lock().unwrap().held, 1);
    }

    #[test]
    fn a_closed_backlog_lets_everyone_through() {
        let backlog = Backlog::default();
        backlog.reserve(LIMIT);
        std::thread::scope(|s| {
            let waiting = s.spawn(|| backlog.reserve(LIMIT));
            drop(CloseOnDrop(&backlog));
            waiting.join().unwrap();
        });
    }
}
