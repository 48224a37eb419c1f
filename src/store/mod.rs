//! The embedded SQLite state database.
//!
//! Opening never changes a file that is not already a sessionpipe database:
//! the schema version is read before anything is written, so a garbage file
//! or a database from a newer binary is refused untouched. New database files
//! are created mode 0600 (SQLite gives its `-wal` and `-shm` files the same
//! mode). Writers use WAL with `synchronous=NORMAL`: a commit survives a
//! process crash at once, and a power loss can cost only the last commits,
//! never the consistency of outputs and state, which share each transaction.

pub mod migrations;
pub mod runs;
pub mod state;

use std::fs::OpenOptions;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags};

use crate::exit;

/// How long a statement waits for another writer before failing with 74,
/// unless the config file says otherwise.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Store {
    pub conn: Connection,
}

/// What the caller needs from the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// `run`: create a missing or empty database; refuse an older schema.
    Current,
    /// `migrate`: any version this binary knows, upgraded by the caller.
    Any,
}

impl Store {
    /// Opens (creating when missing) the database at `path`; a statement
    /// waits up to `busy` for another writer.
    pub fn open(path: &Path, need: Need, busy: Duration) -> Result<Store> {
        let shown = path.display();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create folder {}", parent.display()))?;
        }
        // Create the file ourselves so that it is 0600 from its first byte;
        // non-blocking, so that a FIFO at its name is an error, not a hang.
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .with_context(|| format!("cannot open database {shown}"))?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            anyhow::bail!("database {shown} is not a regular file");
        }
        // SQLite names its -wal and -shm files after the path it is given:
        // two hard links would be two journals for one file, and writers
        // through them would corrupt it. One name, resolved, always.
        if meta.nlink() > 1 {
            anyhow::bail!(
                "database {shown} has {} hard links; use one name for it",
                meta.nlink()
            );
        }
        let resolved = std::fs::canonicalize(path)
            .with_context(|| format!("cannot resolve database {shown}"))?;
        let conn = Connection::open_with_flags(
            &resolved,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("cannot open database {shown}"))?;
        Self::prepare(conn, need, busy, &shown.to_string())
    }

    /// An empty database in memory at the current schema, for read-only
    /// commands run before any database exists.
    pub fn in_memory() -> Result<Store> {
        let conn = Connection::open_in_memory()?;
        Self::prepare(conn, Need::Current, DEFAULT_BUSY_TIMEOUT, ":memory:")
    }

    fn prepare(mut conn: Connection, need: Need, busy: Duration, shown: &str) -> Result<Store> {
        // SQLite counts the wait in milliseconds in a C int: longer saturates.
        conn.busy_timeout(busy.min(Duration::from_millis(i32::MAX as u64)))?;
        // The first read: fails on a file that is not SQLite, before any write.
        let version = migrations::user_version(&conn)
            .with_context(|| format!("{shown} is not a usable SQLite database"))?;
        let target = migrations::target_version();
        if version > target {
            return Err(exit::fail(
                exit::CONFIG,
                format!(
                    "database {shown} has schema version {version}, newer than this \
                     sessionpipe supports ({target}); upgrade sessionpipe"
                ),
            ));
        }
        set_wal(&conn, busy).with_context(|| format!("cannot set WAL mode on {shown}"))?;
        // Checkpoints (each one an fsync) every 16 MiB of WAL rather than 4.
        conn.execute_batch(
            "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; PRAGMA wal_autocheckpoint=4096;",
        )?;
        // A new database gets the schema; an old one waits for `migrate`.
        if need == Need::Current && version < target && !migrations::create_if_empty(&mut conn)? {
            return Err(exit::fail(
                exit::CONFIG,
                format!(
                    "database {shown} has schema version {version}, this sessionpipe \
                     needs {target}: run `sessionpipe migrate`"
                ),
            ));
        }
        Ok(Store { conn })
    }
}

/// Puts the database in WAL mode (kept in the file: once set, every later
/// open only reads it). Switching needs the database to itself, and SQLite
/// does not wait for that on its own: runs that create one database at the
/// same moment retry, up to the busy timeout.
fn set_wal(conn: &Connection, busy: Duration) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now().checked_add(busy);
    loop {
        let mode = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
            .and_then(|mode| {
                if mode.eq_ignore_ascii_case("wal") {
                    Ok(mode)
                } else {
                    conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
                }
            });
        match mode {
            Ok(_) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && deadline.is_none_or(|d| std::time::Instant::now() < d) =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

/// A count as SQLite's signed integer, saturating instead of wrapping.
pub fn sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Timestamps are stored as RFC 3339 UTC text with milliseconds: readable in
/// `sqlite3` and ordered as text.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
