//! Checkpoints of the write-ahead log on a thread of their own.
//!
//! A checkpoint copies the pages committed to the WAL into the database and
//! fsyncs both files. SQLite's own automatic checkpoint runs inside the
//! commit that crosses its threshold, so the writer, the one thread a run
//! cannot share out, would wait for the disk every [`EVERY`] pages. Instead
//! a commit past the threshold only wakes a thread with a connection of its
//! own, which checkpoints `PASSIVE`ly: it never blocks the writer nor waits
//! for it, and copies what was committed when it began.
//!
//! Guarantees: durability is unchanged (a commit is in the WAL either way,
//! and a checkpoint fsyncs the WAL before copying from it); should the
//! thread be missing (it could not start, or its connection not open) or
//! fall [`BEHIND`] times the threshold behind, the committing thread
//! checkpoints itself, as SQLite would: the WAL stays bounded. Dropping a
//! [`Background`] stops and joins its thread, so the writer's connection,
//! closed after it, is the last one and SQLite removes the WAL.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

use rusqlite::{Connection, OpenFlags};

/// Pages of WAL (16 MiB) past which a commit asks for a checkpoint.
pub const EVERY: i32 = 4096;
/// How many times that much WAL makes the committing thread checkpoint
/// itself.
const BEHIND: i32 = 4;

/// The checkpointing thread of one connection.
pub struct Background {
    wake: SyncSender<()>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Moves the checkpoints of `conn` (the database at `path`) to a thread.
    pub fn start(conn: &mut Connection, path: PathBuf) -> rusqlite::Result<Background> {
        // One wake-up waiting is enough: the thread copies everything
        // committed by the time it starts.
        let (wake, woken) = mpsc::sync_channel(1);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("sessionpipe-checkpoints".to_owned())
                .spawn(move || checkpoint_when_woken(&path, &woken, &stop))
                .ok()
        };
        let asked = wake.clone();
        conn.wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages| {
            if pages < EVERY {
                return Ok(());
            }
            let behind = match asked.try_send(()) {
                Ok(()) => false,
                Err(TrySendError::Full(())) => pages >= EVERY.saturating_mul(BEHIND),
                Err(TrySendError::Disconnected(())) => true,
            };
            if behind {
                // As SQLite's own checkpoint: an error here would report the
                // commit, which has happened, as failed; the next one retries.
                let _ = wal.checkpoint();
            }
            Ok(())
        }))?;
        Ok(Background { wake, stop, thread })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Full means a wake-up is already waiting: the thread sees the stop.
        let _ = self.wake.try_send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread: a `PASSIVE` checkpoint at each wake-up, until stopped. Its
/// connection opens at the first wake-up; a run that writes little never
/// opens it. Returning drops the receiver: commits then checkpoint
/// themselves.
fn checkpoint_when_woken(path: &PathBuf, woken: &Receiver<()>, stop: &AtomicBool) {
    let mut conn = None;
    while woken.recv().is_ok() && !stop.load(Ordering::SeqCst) {
        if conn.is_none() {
            let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            // A connection knows the database is in WAL mode only once it
            // has read it; until then a checkpoint does nothing.
            let opened = Connection::open_with_flags(path, flags).and_then(|c| {
                c.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
                Ok(c)
            });
            match opened {
                Ok(opened) => conn = Some(opened),
                Err(_) => return,
            }
        }
        if let Some(conn) = &conn {
            // Busy (another process checkpoints) or failing (a full disk):
            // the frames stay in the WAL, as durable, for the next one.
            let _ = conn.wal_checkpoint_v2(Some("main"), rusqlite::wal::CheckpointMode::PASSIVE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that never checkpoints on its own.
    fn writer(path: &std::path::Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
             PRAGMA wal_autocheckpoint=0; CREATE TABLE t (b BLOB);",
        )
        .unwrap();
        conn
    }

    /// Commits `pages` pages of rows, a few at a time.
    fn commit_pages(conn: &Connection, pages: i32) {
        for _ in 0..pages / 16 {
            conn.execute_batch("BEGIN").unwrap();
            for _ in 0..16 {
                conn.execute("INSERT INTO t VALUES (zeroblob(4000))", [])
                    .unwrap();
            }
            conn.execute_batch("COMMIT").unwrap();
        }
    }

    fn db_pages(path: &std::path::Path) -> u64 {
        std::fs::metadata(path).unwrap().len() / 4096
    }

    #[test]
    fn commits_past_the_threshold_reach_the_database_file_from_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut conn = writer(&path);
        let background = Background::start(&mut conn, path.clone()).unwrap();
        // Past the threshold, short of where a commit checkpoints itself:
        // only the thread copies pages into the database file.
        commit_pages(&conn, EVERY + EVERY / 2);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while db_pages(&path) < EVERY as u64 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(db_pages(&path) >= EVERY as u64, "{} pages", db_pages(&path));
        // Stopped and joined: the writer's connection closes last, and
        // SQLite removes the WAL, every row in the database.
        drop(background);
        drop(conn);
        assert!(!dir.path().join("db-wal").exists());
        let rows: i64 = Connection::open(&path)
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, i64::from((EVERY + EVERY / 2) / 16 * 16));
    }

    #[test]
    fn without_the_thread_a_commit_checkpoints_itself_and_the_wal_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut conn = writer(&path);
        // A path the thread cannot open: it ends at its first wake-up.
        let background = Background::start(&mut conn, dir.path().join("no/such/db")).unwrap();
        commit_pages(&conn, EVERY * 3);
        let wal_pages = db_pages(&dir.path().join("db-wal"));
        assert!(wal_pages < EVERY as u64 * 2, "{wal_pages} pages of WAL");
        assert!(db_pages(&path) >= EVERY as u64);
        drop(background);
    }
}
