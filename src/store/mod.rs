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
        // The writer's statements, each prepared once: the default cache of
        // 16 evicts some of them on every session.
        conn.set_prepared_statement_cache_capacity(64);
        // One plan per statement, whatever is bound: otherwise SQLite
        // compiles the summary rebuild again for every session it runs on.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
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

/// [`timestamp`] of a time given in epoch milliseconds, written without
/// chrono's formatting machinery (the writer formats one per event); the
/// empty text for a time outside what chrono can hold.
pub fn timestamp_ms(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        // Rare and odd: chrono's own form (a sign, more digits).
        return DateTime::from_timestamp_millis(ms)
            .map(timestamp)
            .unwrap_or_default();
    }
    let fields = [
        (year, 4),
        (month, 2),
        (day, 2),
        (in_day / 3_600_000, 2),
        (in_day / 60_000 % 60, 2),
        (in_day / 1000 % 60, 2),
        (in_day % 1000, 3),
    ];
    let mut out = String::with_capacity(24);
    for ((value, width), sep) in fields.into_iter().zip(["-", "-", "T", ":", ":", ".", "Z"]) {
        let mut digits = [b'0'; 4];
        let mut v = value;
        for d in digits[..width].iter_mut().rev() {
            *d = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend(digits[..width].iter().map(|&b| b as char));
        out.push_str(sep);
    }
    out
}

/// The proleptic Gregorian (year, month, day) of a day counted from
/// 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days.saturating_add(719_468);
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe.saturating_add(era.saturating_mul(400)) + i64::from(month <= 2);
    (year, month, day)
}

pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    // What [`timestamp`] writes, read without the general parser: `state`
    // loads one per row of every processor.
    parse_own(text).or_else(|| {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    })
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` exactly, as [`timestamp`] writes it.
fn parse_own(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    if b.len() != 24 || b[23] != b'Z' {
        return None;
    }
    let seps = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ];
    if seps.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(num(0, 4)?).ok()?,
        u32::try_from(num(5, 7)?).ok()?,
        u32::try_from(num(8, 10)?).ok()?,
    )?;
    let time = chrono::NaiveTime::from_hms_milli_opt(
        u32::try_from(num(11, 13)?).ok()?,
        u32::try_from(num(14, 16)?).ok()?,
        u32::try_from(num(17, 19)?).ok()?,
        u32::try_from(num(20, 23)?).ok()?,
    )?;
    Some(date.and_time(time).and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_are_written_as_chrono_writes_them() {
        let chrono_text = |ms: i64| {
            DateTime::from_timestamp_millis(ms)
                .map(timestamp)
                .unwrap_or_default()
        };
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut cases = vec![
            0,
            -1,
            1,
            951_782_400_000,     // 2000-02-29
            253_402_300_799_999, // 9999-12-31T23:59:59.999
            253_402_300_800_000, // 10000-01-01
            -62_167_219_200_000, // 0000-01-01
            -62_167_219_200_001,
            i64::MAX,
            i64::MIN,
        ];
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Within ±400,000 years of 1970, and the everyday range.
            cases.push((x % 25_000_000_000_000_000) as i64 - 12_500_000_000_000_000);
            cases.push((x % 4_000_000_000_000) as i64);
        }
        for ms in cases {
            let text = timestamp_ms(ms);
            assert_eq!(text, chrono_text(ms), "{ms}");
            if text.len() == 24 {
                assert_eq!(
                    parse_timestamp(&text).map(|t| t.timestamp_millis()),
                    Some(ms),
                    "{text}"
                );
            }
        }
        for other in ["2026-01-01T00:00:00Z", "2026-01-01T01:00:00.5+01:00"] {
            assert_eq!(
                parse_timestamp(other),
                DateTime::parse_from_rfc3339(other)
                    .ok()
                    .map(|t| t.with_timezone(&Utc))
            );
        }
        for bad in [
            "2026-13-01T00:00:00.000Z",
            "2026-02-30T00:00:00.000Z",
            "2026-01-01T24:00:00.000Z",
            "+026-01-01T00:00:00.000Z",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}
