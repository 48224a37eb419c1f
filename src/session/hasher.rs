//! The MD5 of the lines handed out, computed on the reading thread or, for
//! a large file, on a thread of its own: hashing a gigabyte takes as long as
//! parsing it, and the two then overlap instead of adding up.
//!
//! The hash is the same either way. The rare operations that need the
//! state itself (a prefix's digest, a line too long to keep) bring it back
//! to the reading thread, which goes on from there. Memory stays bounded: at
//! most [`IN_FLIGHT`] chunks wait for the thread, and their buffers are
//! reused.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use md5::{Digest as _, Md5};

/// Chunks sent and not yet hashed, at most...
const IN_FLIGHT: usize = 2;
/// ...each this long at most, whatever one update holds (a line of
/// megabytes is sent in pieces), so that the buffers reused stay small.
const PIECE: usize = 256 * 1024;

pub(super) enum Hasher {
    Here(Md5),
    There {
        chunks: SyncSender<Vec<u8>>,
        /// Buffers the thread is done with, to fill again.
        spent: Receiver<Vec<u8>>,
        thread: JoinHandle<Md5>,
    },
    /// Only while the state moves between the two.
    Moving,
}

impl Hasher {
    pub(super) fn new() -> Hasher {
        Hasher::Here(Md5::new())
    }

    /// Goes on hashing on a thread of its own; stays here if none can start.
    pub(super) fn off_thread(&mut self) {
        let Hasher::Here(md5) = std::mem::replace(self, Hasher::Moving) else {
            return;
        };
        let (chunks, inbox) = sync_channel::<Vec<u8>>(IN_FLIGHT);
        let (give_back, spent) = sync_channel::<Vec<u8>>(IN_FLIGHT + 1);
        let state = md5.clone();
        let started = std::thread::Builder::new()
            .name("sessionpipe-md5".into())
            .spawn(move || {
                let mut md5 = state;
                for chunk in inbox {
                    md5.update(&chunk);
                    let _ = give_back.try_send(chunk);
                }
                md5
            });
        *self = match started {
            Ok(thread) => Hasher::There {
                chunks,
                spent,
                thread,
            },
            Err(_) => Hasher::Here(md5),
        };
    }

    pub(super) fn update(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let (piece, after) = rest.split_at(rest.len().min(PIECE));
            let sent = match self {
                Hasher::Here(md5) => {
                    md5.update(rest);
                    return;
                }
                Hasher::There { chunks, spent, .. } => {
                    let mut chunk = spent.try_recv().unwrap_or_default();
                    chunk.clear();
                    chunk.extend_from_slice(piece);
                    chunks.send(chunk).is_ok()
                }
                Hasher::Moving => unreachable_state(),
            };
            if !sent {
                // The thread is gone: bring back what it knows (its panic,
                // should it have had one) and hash here.
                self.here().update(rest);
                return;
            }
            rest = after;
        }
    }

    /// The state itself, on this thread from now on.
    pub(super) fn here(&mut self) -> &mut Md5 {
        if let Hasher::There { .. } = self
            && let Hasher::There { chunks, thread, .. } = std::mem::replace(self, Hasher::Moving)
        {
            drop(chunks);
            match thread.join() {
                Ok(md5) => *self = Hasher::Here(md5),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        match self {
            Hasher::Here(md5) => md5,
            _ => unreachable_state(),
        }
    }

    pub(super) fn finish(mut self, tail: &[u8]) -> [u8; 16] {
        let md5 = self.here();
        md5.update(tail);
        md5.clone().finalize().into()
    }
}

impl From<Md5> for Hasher {
    fn from(md5: Md5) -> Hasher {
        Hasher::Here(md5)
    }
}

/// `Moving` lasts only inside one method call.
fn unreachable_state() -> ! {
    unreachable!("the hasher's state is always here or on its thread")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_hash_here_on_a_thread_and_back() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let whole: [u8; 16] = Md5::digest(&data).into();
        let mut threaded = Hasher::new();
        threaded.update(&data[..1000]);
        threaded.off_thread();
        for chunk in data[1000..2_000_000].chunks(65_536) {
            threaded.update(chunk);
        }
        // A prefix's digest brings the state back; hashing goes on here.
        let prefix: [u8; 16] = threaded.here().clone().finalize().into();
        assert_eq!(prefix, <[u8; 16]>::from(Md5::digest(&data[..2_000_000])));
        threaded.update(&data[2_000_000..2_999_000]);
        assert_eq!(threaded.finish(&data[2_999_000..]), whole);
    }
}
