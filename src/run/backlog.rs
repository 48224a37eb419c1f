//! A bound on the rows waiting for the writer.
//!
//! Workers can outrun the single writer; without a bound, the rows of every
//! session read but not yet written would pile up in memory. A worker
//! reserves the bytes its session's rows hold before sending them, waiting
//! while the backlog is full, and the writer releases them once written. A
//! session larger than the whole bound still goes when the backlog is empty,
//! so nothing waits for ever.

use std::sync::{Condvar, Mutex, PoisonError};

/// Bytes of rows that may wait for the writer.
pub const LIMIT: u64 = 16 << 20;

#[derive(Debug, Default)]
pub struct Backlog {
    held: Mutex<u64>,
    freed: Condvar,
}

impl Backlog {
    /// Waits until `bytes` more fit, then counts them as waiting.
    pub fn reserve(&self, bytes: u64) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        while *held > 0 && held.saturating_add(bytes) > LIMIT {
            held = self
                .freed
                .wait(held)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *held = held.saturating_add(bytes);
    }

    /// The writer is done with `bytes`.
    pub fn release(&self, bytes: u64) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        *held = held.saturating_sub(bytes);
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
        assert_eq!(*backlog.held.lock().unwrap(), 1);
    }
}
