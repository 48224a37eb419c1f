//! One lock per processor, so two runs of the same processor never overlap
//! while different processors run side by side.
//!
//! The lock is an advisory `flock` on `<db>.<processor>.lock`, a file beside
//! the database that is never deleted (deleting it would let two runs lock two
//! different files). The kernel drops the lock when the process dies, so a
//! crash never leaves a stale lock behind. While held, the file also carries
//! the run's attempt journal ([`crate::journal`]).

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Held until dropped.
#[derive(Debug)]
pub struct ProcessorLock {
    file: File,
    path: PathBuf,
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
    let deadline = wait.and_then(|w| Instant::now().checked_add(w));
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Some(ProcessorLock { file, path })),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        match (wait, deadline) {
            (Some(_), Some(d)) if Instant::now() < d => {}
            // A wait too long to represent is a wait for ever.
            (Some(_), None) => {}
            _ => return Ok(None),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl ProcessorLock {
    /// The locked file, which holds the journal.
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn path(&self) -> &Path {
        &self.path
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
        assert!(
            acquire(&db, "usage", Some(Duration::from_millis(120)))
                .unwrap()
                .is_none()
        );
        assert!(acquire(&db, "other", None).unwrap().is_some());
        drop(first);
        assert!(acquire(&db, "usage", None).unwrap().is_some());
        assert_eq!(
            path_for(&db, "usage"),
            dir.path().join("state.db.usage.lock")
        );
    }
}
