//! The attempt journal: what each worker is processing, written where a run
//! that dies leaves it behind, so that the next run can charge the attempt.
//!
//! The journal is the content of the processor's lock file. Each worker owns
//! a fixed slot of it. Before a processor touches a session, the worker
//! writes the attempt into its slot (one `pwrite`, no `fsync`: it survives
//! the process, which is what matters); it clears the slot when the processor
//! returns, and the next run empties the file once it has read it. A slot
//! still filled then names a session the previous run died on, and
//! [`recover`] counts that attempt, so a session that kills the process is
//! quarantined rather than retried for ever, without a database commit
//! before every session. A slot lost to a power loss only means that
//! attempt is not counted.

use std::io::Read;
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::lock::ProcessorLock;
use crate::scan::Stat;
use crate::store::sql::Db;
use crate::store::state::{self, RowId};
use crate::verdict::{self, Seen};

/// Bytes per worker slot: room for any session name and a hash.
const SLOT: usize = 4096;

/// An attempt in progress, as written in a worker's slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub session_file: String,
    pub attempts: u32,
    /// `None` when the file is hashed while processed.
    pub hash: Option<String>,
    pub stat: Stat,
}

/// The journal in a held lock's file.
#[derive(Debug, Clone, Copy)]
pub struct Journal<'a> {
    lock: &'a ProcessorLock,
}

impl<'a> Journal<'a> {
    pub fn new(lock: &'a ProcessorLock) -> Journal<'a> {
        Journal { lock }
    }

    /// The attempts a previous run left in progress when it died. Slots that
    /// cannot be read back (a torn write) are skipped.
    pub fn left_by_dead_run(&self) -> Result<Vec<Entry>> {
        let mut data = Vec::new();
        self.lock
            .file()
            .read_to_end(&mut data)
            .with_context(|| format!("cannot read {}", self.lock.path().display()))?;
        Ok(data
            .chunks(SLOT)
            .filter_map(|slot| {
                let end = slot.iter().position(|&b| b == b'\n')?;
                serde_json::from_slice(&slot[..end]).ok()
            })
            .collect())
    }

    /// Writes the attempt a worker is about to make into its slot.
    pub fn mark(&self, worker: usize, entry: &Entry) -> Result<()> {
        let mut slot = serde_json::to_vec(entry)?;
        slot.push(b'\n');
        // Cannot happen on Linux: two name components of at most 255 bytes,
        // even JSON-escaped six times over, a hash and a stat fit in a slot.
        // Refused rather than truncated, as a torn slot would count nothing.
        if slot.len() > SLOT {
            anyhow::bail!("journal entry for {} is too long", entry.session_file);
        }
        slot.resize(SLOT, 0);
        self.write_slot(worker, &slot)
    }

    /// Empties a worker's slot: its attempt has returned.
    pub fn clear(&self, worker: usize) -> Result<()> {
        self.write_slot(worker, &[0u8; SLOT])
    }

    fn write_slot(&self, worker: usize, slot: &[u8]) -> Result<()> {
        let offset = worker
            .checked_mul(SLOT)
            .context("worker number out of range")?;
        self.lock
            .file()
            .write_all_at(slot, offset as u64)
            .with_context(|| format!("cannot write {}", self.lock.path().display()))
    }

    /// Whether nothing was ever written since the journal was last emptied,
    /// as after every run that processed nothing. Asked of the open file,
    /// which changes nothing: a read would update its access time.
    pub fn is_empty(&self) -> Result<bool> {
        let meta = self
            .lock
            .file()
            .metadata()
            .with_context(|| format!("cannot read {}", self.lock.path().display()))?;
        Ok(meta.len() == 0)
    }

    /// Empties every slot: nothing is in progress.
    pub fn clear_all(&self) -> Result<()> {
        self.lock
            .file()
            .set_len(0)
            .with_context(|| format!("cannot truncate {}", self.lock.path().display()))
    }
}

/// Charges the attempts a dead run left in the journal, then empties it: a
/// session that was in flight alone is charged (`processing`); sessions in
/// flight together are all `suspect` and charged nothing, to be retried one
/// at a time (see [`crate::verdict::recovered`]).
pub fn recover(db: &dyn Db, processor: &str, journal: &Journal) -> Result<()> {
    // An empty journal, an unchanged run's, is neither read nor emptied
    // again: each would change the file's times, an update the file system
    // journals and the next run's start could wait on.
    if journal.is_empty()? {
        return Ok(());
    }
    let entries = journal.left_by_dead_run()?;
    if !entries.is_empty() {
        let tx = db.transaction()?;
        for entry in &entries {
            let (status, attempts) = verdict::recovered(entry.attempts, entries.len());
            let id = RowId {
                processor,
                session_file: &entry.session_file,
                username: entry.session_file.split('/').next().unwrap_or(""),
            };
            let seen = Seen {
                stat: entry.stat,
                racy: false,
                settling: false,
            };
            state::record_attempt(&*tx, id, status, entry.hash.as_deref(), attempts, &seen)?;
        }
        tx.commit()?;
    }
    journal.clear_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock;

    #[test]
    fn slots_survive_the_holder_and_clear() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        std::fs::write(&db, b"").unwrap();
        let entry = |n: u32| Entry {
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
        let held = lock::acquire(&db, "usage", None).unwrap().unwrap();
        let journal = Journal::new(&held);
        journal.mark(0, &entry(1)).unwrap();
        journal.mark(2, &entry(2)).unwrap();
        journal.mark(1, &entry(3)).unwrap();
        journal.clear(1).unwrap();
        drop(held); // as if the process died here
        let held = lock::acquire(&db, "usage", None).unwrap().unwrap();
        let journal = Journal::new(&held);
        assert_eq!(
            journal.left_by_dead_run().unwrap(),
            vec![entry(1), entry(2)]
        );
        journal.clear_all().unwrap();
        assert!(journal.left_by_dead_run().unwrap().is_empty());
        assert!(journal.is_empty().unwrap());
    }

    /// Recovery from an empty journal, every unchanged run's, leaves the
    /// file as it was, its times included; a journal of cleared slots is
    /// emptied.
    #[test]
    fn an_empty_journal_is_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("state.db");
        std::fs::write(&db_path, b"").unwrap();
        let store = crate::store::Store::in_memory().unwrap();
        let held = lock::acquire(&db_path, "usage", None).unwrap().unwrap();
        let journal = Journal::new(&held);
        let long_ago =
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        let times = std::fs::FileTimes::new()
            .set_accessed(long_ago)
            .set_modified(long_ago);
        held.file().set_times(times).unwrap();
        recover(store.db(), "usage", &journal).unwrap();
        let meta = std::fs::metadata(held.path()).unwrap();
        assert_eq!(
            (
                meta.len(),
                meta.modified().unwrap(),
                meta.accessed().unwrap()
            ),
            (0, long_ago, long_ago)
        );
        journal.clear(3).unwrap();
        assert!(!journal.is_empty().unwrap());
        recover(store.db(), "usage", &journal).unwrap();
        assert!(journal.is_empty().unwrap());
    }

    #[test]
    fn an_entry_too_long_for_its_slot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db"), b"").unwrap();
        let held = lock::acquire(&dir.path().join("db"), "usage", None)
            .unwrap()
            .unwrap();
        let long = Entry {
            session_file: "x".repeat(SLOT),
            attempts: 1,
            hash: None,
            stat: Stat {
                size: 0,
                mtime_ns: 0,
                ctime_ns: 0,
                inode: 0,
            },
        };
        assert!(Journal::new(&held).mark(0, &long).is_err());
    }
}
