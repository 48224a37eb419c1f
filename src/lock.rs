//! One lock per processor, so two runs of the same processor never overlap
//! while different processors run side by side; and, inside the lock file,
//! what each worker is processing, so that a run that dies is known.
//!
//! The lock is an advisory `flock` on `<db>.<processor>.lock`, a file beside
//! the database that is never deleted (deleting it would let two runs lock two
//! different files). The kernel drops the lock when the process dies, so a
//! crash never leaves a stale lock behind.
//!
//! Each worker owns a fixed slot of the file. Before a processor touches a
//! session, the worker writes the attempt into its slot (one `pwrite`, no
//! `fsync`: it survives the process, which is what matters); it clears the
//! slot when the processor returns, and a run that ends cleanly empties the
//! file. A slot still filled when the next run takes the lock names the
//! session the previous run died on, and that attempt is counted, so a
//! session that kills the process is quarantined rather than retried for
//! ever, without a database commit before every session.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::scan::Stat;

/// Bytes per worker slot: room for any session name and a hash.
const SLOT: usize = 4096;

/// Held until dropped.
#[derive(Debug)]
pub struct ProcessorLock {
    file: File,
    path: PathBuf,
}

/// An attempt in progress, as written in a worker's slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    pub session_file: String,
    pub attempts: u32,
    pub hash: Option<String>,
    pub stat: Stat,
}

pub fn path_for(db: &Path, processor: &str) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{processor}.lock"));
    db.with_file_name(name)
}

/// Takes the lock, waiting up to `wait` for it. `Ok(None)` means another run
/// holds it.
pub fn acquire(
    db: &Path,
    processor: &str,
    wait: Option<Duration>,
) -> Result<Option<ProcessorLock>> {
    let path = path_for(db, processor);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    let deadline = wait.map(|w| Instant::now() + w);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Some(ProcessorLock { file, path })),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        match deadline {
            Some(d) if Instant::now() < d => std::thread::sleep(Duration::from_millis(50)),
            _ => return Ok(None),
        }
    }
}

impl ProcessorLock {
    /// The attempts a previous run left in progress when it died. Slots that
    /// cannot be read back (a torn write) are skipped.
    pub fn interrupted(&self) -> Result<Vec<InFlight>> {
        let mut data = Vec::new();
        (&self.file)
            .read_to_end(&mut data)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        Ok(data
            .chunks(SLOT)
            .filter_map(|slot| {
                let end = slot.iter().position(|&b| b == b'\n')?;
                serde_json::from_slice(&slot[..end]).ok()
            })
            .collect())
    }

    /// Writes the attempt a worker is about to make into its slot.
    pub fn mark(&self, worker: usize, attempt: &InFlight) -> Result<()> {
        let mut slot = serde_json::to_vec(attempt)?;
        slot.push(b'\n');
        slot.resize(SLOT, 0);
        self.file
            .write_all_at(&slot[..SLOT], (worker * SLOT) as u64)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Empties a worker's slot: its attempt has returned.
    pub fn clear(&self, worker: usize) -> Result<()> {
        self.file
            .write_all_at(&[0u8; SLOT], (worker * SLOT) as u64)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    /// Empties every slot: nothing is in progress.
    pub fn clear_all(&self) -> Result<()> {
        self.file
            .set_len(0)
            .with_context(|| format!("cannot truncate {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let first = acquire(&db, "usage", None).unwrap();
        assert!(first.is_some());
        assert!(acquire(&db, "usage", None).unwrap().is_none());
        assert!(acquire(&db, "other", None).unwrap().is_some());
        drop(first);
        assert!(acquire(&db, "usage", None).unwrap().is_some());
        assert_eq!(
            path_for(&db, "usage"),
            dir.path().join("state.db.usage.lock")
        );
    }

    #[test]
    fn slots_survive_the_holder_and_clear() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let attempt = |n: u32| InFlight {
            session_file: format!("u/{n}.jsonl"),
            attempts: n,
            hash: n.is_multiple_of(2).then(|| "ab".repeat(16)),
            stat: Stat {
                size: 1,
                mtime_ns: 2,
                ctime_ns: 3,
                inode: 4,
            },
        };
        let lock = acquire(&db, "usage", None).unwrap().unwrap();
        lock.mark(0, &attempt(1)).unwrap();
        lock.mark(2, &attempt(2)).unwrap();
        lock.mark(1, &attempt(3)).unwrap();
        lock.clear(1).unwrap();
        drop(lock); // as if the process died here
        let lock = acquire(&db, "usage", None).unwrap().unwrap();
        assert_eq!(lock.interrupted().unwrap(), vec![attempt(1), attempt(2)]);
        lock.clear_all().unwrap();
        assert!(lock.interrupted().unwrap().is_empty());
    }
}
