//! Per-(processor, session file) state rows: reading and writing them.
//!
//! What a row means, and so what to write after each event, is decided in
//! [`crate::verdict`]; this module only moves rows in and out of SQLite.
//! `file_hash`, `processed_at` and `items_extracted` always describe the last
//! success, so a failure never hides what the outputs hold.

use anyhow::Result;
use chrono::{DateTime, Utc};

use super::sql::{Db, Param, Row as SqlRow, Table, Value};
use super::{parse_timestamp, sql_int, timestamp};
use crate::args;
use crate::scan::Stat;
use crate::state_rows::Rows;
use crate::verdict::{Row, Seen, Status};

/// Loads every row of one processor in a single query.
pub fn load(db: &dyn Db, processor: &str) -> Result<Rows> {
    // Sized once: growing to 100,000 rows would copy them many times.
    let mut rows = Vec::with_capacity(count(db, processor)?);
    db.query(
        "SELECT session_file, status, processor_version, file_hash, file_size, mtime_ns,
                ctime_ns, inode, read_racy, attempts, attempt_hash, next_attempt_at,
                bytes_processed, first_seen_at, waiting_since
         FROM session_processor_state WHERE source = ?2 AND processor_name = ?1",
        args![processor, db.source()],
        &mut |r| {
            rows.push(from_row(r)?);
            Ok(())
        },
    )?;
    Ok(rows.into_iter().collect())
}

/// One row of [`load`]'s query.
fn from_row(r: &dyn SqlRow) -> Result<(String, Row)> {
    let size: Option<i64> = r.get(4)?;
    let stat = match (size, r.get(5)?, r.get(6)?, r.get::<Option<i64>>(7)?) {
        (Some(size), Some(mtime_ns), Some(ctime_ns), Some(inode)) => Some(Stat {
            size: size as u64,
            mtime_ns,
            ctime_ns,
            inode: inode as u64,
        }),
        _ => None,
    };
    let time =
        |i: usize| -> Result<Option<DateTime<Utc>>> { Ok(r.text(i)?.and_then(parse_timestamp)) };
    let read: i64 = r.get(8)?;
    Ok((
        r.get::<String>(0)?,
        Row {
            status: Status::parse(r.text(1)?.ok_or_else(|| {
                anyhow::anyhow!("column {}: expected text, found Null", r.name(1))
            })?),
            processor_version: r.get(2)?,
            file_hash: r.get(3)?,
            bytes: u64::try_from(r.get::<i64>(12)?).unwrap_or(0),
            stat,
            racy: read & READ_RACY != 0,
            settling: read & READ_SETTLING != 0,
            attempts: r.get(9)?,
            attempt_hash: r.get(10)?,
            next_attempt_at: time(11)?,
            first_seen_at: time(13)?,
            // Text that is no time (a hand edit): the wait is over, so
            // that it cannot restart on every run.
            waiting_since: r
                .text(14)?
                .map(|text| parse_timestamp(text).unwrap_or(DateTime::<Utc>::MIN_UTC)),
        },
    ))
}

/// How many rows a processor has.
fn count(db: &dyn Db, processor: &str) -> Result<usize> {
    let n: i64 = db.one(
        "SELECT count(*) FROM session_processor_state WHERE source = ?2 AND processor_name = ?1",
        args![processor, db.source()],
    )?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Identifies one row (and names the user it belongs to).
#[derive(Debug, Clone, Copy)]
pub struct RowId<'a> {
    pub processor: &'a str,
    pub session_file: &'a str,
    pub username: &'a str,
}

/// `read_racy` holds both reasons to read a file again whose stat has not
/// changed, as bits.
const READ_RACY: i64 = 1;
const READ_SETTLING: i64 = 2;

/// Runs a statement on one row: `?1`-`?3` are the row's processor, session
/// file and user, then come `values`, then five of the stat tuple (size,
/// mtime, ctime, inode, racy), then the store's source and last the time
/// now, by this host's clock (which the verdicts compare stored times with;
/// a database server's clock may differ). Size and inode are stored bit for bit
/// (`as` both ways), so even values above `i64::MAX` compare exactly.
fn write_row(db: &dyn Db, sql: &str, id: RowId, values: &[&dyn Param], seen: &Seen) -> Result<()> {
    let stat = [
        seen.stat.size as i64,
        seen.stat.mtime_ns,
        seen.stat.ctime_ns,
        seen.stat.inode as i64,
    ];
    let mut all: Vec<&dyn Param> = vec![&id.processor, &id.session_file, &id.username];
    all.extend_from_slice(values);
    all.extend(stat.iter().map(|v| v as &dyn Param));
    let flags = i64::from(seen.racy) * READ_RACY + i64::from(seen.settling) * READ_SETTLING;
    all.push(&flags);
    let source = db.source();
    all.push(&source);
    let now = timestamp(Utc::now());
    all.push(&now);
    db.execute(sql, &all)?;
    Ok(())
}

/// Records an attempt that a run died in (read back from its journal):
/// the session is marked `status` (`processing` or `suspect`, see
/// [`crate::verdict::recovered`]) with that attempt count. `hash` is
/// `None` when the file was being hashed while processed; the stat tuple then
/// tells whether a later attempt is on the same content.
pub fn record_attempt(
    db: &dyn Db,
    id: RowId,
    status: Status,
    hash: Option<&str>,
    attempts: u32,
    seen: &Seen,
) -> Result<()> {
    write_row(
        db,
        "INSERT INTO session_processor_state (processor_name, session_file, username, status,
             attempts, attempt_hash, file_size, mtime_ns, ctime_ns, inode, read_racy,
             first_seen_at, source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?13, ?12)
         ON CONFLICT (source, processor_name, session_file) DO UPDATE SET
             status = ?4, attempts = ?5, attempt_hash = ?6, file_size = ?7,
             mtime_ns = ?8, ctime_ns = ?9, inode = ?10, read_racy = ?11",
        id,
        &[&status.as_str(), &attempts, &hash],
        seen,
    )
}

/// What a successful attempt records.
pub struct Success<'a> {
    pub hash: &'a str,
    pub bytes: u64,
    pub version: u32,
    pub items: u64,
    pub seen: Seen,
    pub now: DateTime<Utc>,
}

pub fn record_success(db: &dyn Db, id: RowId, s: &Success) -> Result<()> {
    write_row(
        db,
        "INSERT INTO session_processor_state (processor_name, session_file, username, processed_at,
             items_extracted, file_hash, bytes_processed, processor_version, file_size,
             mtime_ns, ctime_ns, inode, read_racy, status, attempts, attempt_hash,
             last_error, next_attempt_at, first_seen_at, waiting_since, source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 'ok', 0, NULL, NULL, NULL,
             ?15, NULL, ?14)
         ON CONFLICT (source, processor_name, session_file) DO UPDATE SET
             username = ?3, processed_at = ?4, items_extracted = ?5, file_hash = ?6,
             bytes_processed = ?7, processor_version = ?8, file_size = ?9, mtime_ns = ?10,
             ctime_ns = ?11, inode = ?12, read_racy = ?13, status = 'ok', attempts = 0,
             attempt_hash = NULL, last_error = NULL, next_attempt_at = NULL,
             waiting_since = NULL",
        id,
        &[
            &timestamp(s.now),
            &sql_int(s.items),
            &s.hash,
            &sql_int(s.bytes),
            &s.version,
        ],
        &s.seen,
    )
}

/// What a failed attempt records. `hash` is `None` when the file could not
/// even be read.
pub struct Failure<'a> {
    pub hash: Option<&'a str>,
    pub attempts: u32,
    pub quarantined: bool,
    pub error: &'a str,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub seen: Seen,
}

/// Records a failure; the outputs and the last success are left as they are.
/// A wait to settle is over: the next change waits afresh.
pub fn record_failure(db: &dyn Db, id: RowId, f: &Failure) -> Result<()> {
    let status = if f.quarantined {
        Status::Quarantined
    } else {
        Status::Failed
    };
    write_row(
        db,
        "INSERT INTO session_processor_state (processor_name, session_file, username, status,
             attempts, attempt_hash, last_error, next_attempt_at, file_size, mtime_ns,
             ctime_ns, inode, read_racy, first_seen_at, source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?15, ?14)
         ON CONFLICT (source, processor_name, session_file) DO UPDATE SET
             status = ?4, attempts = ?5, attempt_hash = ?6, last_error = ?7,
             next_attempt_at = ?8, file_size = ?9, mtime_ns = ?10, ctime_ns = ?11,
             inode = ?12, read_racy = ?13, waiting_since = NULL",
        id,
        &[
            &status.as_str(),
            &f.attempts,
            &f.hash,
            &f.error,
            &f.next_attempt_at.map(timestamp),
        ],
        &f.seen,
    )
}

/// A free skip: the content is what the row already describes; only the
/// stat tuple (and its raciness) is brought up to date, and a wait to settle
/// is over.
pub fn refresh_stat(db: &dyn Db, id: RowId, seen: &Seen) -> Result<()> {
    write_row(
        db,
        "UPDATE session_processor_state SET username = ?3, file_size = ?4, mtime_ns = ?5,
             ctime_ns = ?6, inode = ?7, read_racy = ?8, waiting_since = NULL,
             status = CASE status WHEN 'gone' THEN 'ok' ELSE status END,
             first_seen_at = coalesce(first_seen_at, ?10)
         WHERE source = ?9 AND processor_name = ?1 AND session_file = ?2",
        id,
        &[],
        seen,
    )
}

/// Notes, for files that have no row yet, that a run has seen them
/// (`pending`, with `first_seen_at`): how long a file has waited is
/// measured from then, not from its mtime.
///
/// One bulk write: a cold run over a PostgreSQL store sees every file anew,
/// and a statement per file would be a round trip per file.
pub fn note_seen(db: &dyn Db, processor: &str, files: &[(&str, &str)]) -> Result<()> {
    let mut bulk = db.bulk(&[Table {
        name: "session_processor_state",
        columns: &[
            "processor_name",
            "session_file",
            "username",
            "status",
            "first_seen_at",
            "source",
        ],
        keep_existing: true,
    }])?;
    let now = timestamp(Utc::now());
    for (file, user) in files {
        bulk.push(0, args![processor, file, user, "pending", now, db.source()])?;
    }
    bulk.finish()
}

/// Notes, for files that wait to settle and whose row does not say so yet,
/// that their wait begins now (once per wait: a file that stays live costs
/// no write on later runs). Their rows exist: [`note_seen`] made them.
pub fn note_waiting(db: &dyn Db, processor: &str, files: &[&str]) -> Result<()> {
    let mut stmt = db.prepare(
        "UPDATE session_processor_state SET waiting_since = ?4
         WHERE source = ?3 AND processor_name = ?1 AND session_file = ?2
           AND waiting_since IS NULL",
    )?;
    let now = timestamp(Utc::now());
    for file in files {
        stmt.execute(args![processor, file, db.source(), now])?;
    }
    Ok(())
}

/// Marks files a scan no longer found as `gone`; their outputs stay.
pub fn mark_gone(db: &dyn Db, processor: &str, files: &[&str]) -> Result<()> {
    let mut stmt = db.prepare(
        "UPDATE session_processor_state SET status = 'gone'
         WHERE source = ?3 AND processor_name = ?1 AND session_file = ?2",
    )?;
    for file in files {
        stmt.execute(args![processor, file, db.source()])?;
    }
    Ok(())
}

/// Removes one row (its outputs are the processor's to remove).
pub fn delete(db: &dyn Db, processor: &str, session_file: &str) -> Result<()> {
    db.execute(
        "DELETE FROM session_processor_state
         WHERE source = ?3 AND processor_name = ?1 AND session_file = ?2",
        args![processor, session_file, db.source()],
    )?;
    Ok(())
}

/// The gone rows `state prune` removes: all of them, or those last
/// processed before `before`.
pub fn gone(db: &dyn Db, processor: &str, before: Option<DateTime<Utc>>) -> Result<Vec<String>> {
    db.rows(
        "SELECT session_file FROM session_processor_state
         WHERE source = ?3 AND processor_name = ?1 AND status = 'gone'
           AND (CAST(?2 AS TEXT) IS NULL OR processed_at IS NULL OR processed_at < ?2)
         ORDER BY session_file",
        args![processor, before.map(timestamp), db.source()],
        |r| r.get(0),
    )
}

/// The statuses of a session that is failing but not quarantined, as SQL:
/// what `state` counts as failing, and (with `quarantined`) what
/// `--failed` lists and `requeue --failed` releases.
const FAILING: &str = "'failed', 'processing', 'suspect'";

/// Which rows `state requeue` releases.
pub enum Requeue<'a> {
    Files(&'a [String]),
    Failed,
    Quarantined,
}

/// Clears failures (and, for named files, the last success too) so the next
/// run processes those sessions. Returns how many rows changed.
pub fn requeue(db: &dyn Db, processor: &str, which: Requeue) -> Result<u64> {
    const SET: &str = "UPDATE session_processor_state SET status = 'pending', attempts = 0,
        attempt_hash = NULL, next_attempt_at = NULL, file_size = NULL
        WHERE source = ?2 AND processor_name = ?1";
    let tx = db.transaction()?;
    let n = match which {
        Requeue::Failed => tx.execute(
            &format!("{SET} AND status IN ({FAILING}, 'quarantined')"),
            args![processor, db.source()],
        )?,
        Requeue::Quarantined => tx.execute(
            &format!("{SET} AND status = 'quarantined'"),
            args![processor, db.source()],
        )?,
        Requeue::Files(files) => {
            let mut n = 0;
            for file in files {
                n += tx.execute(
                    &format!("{SET} AND session_file = ?3"),
                    args![processor, db.source(), file],
                )?;
            }
            n
        }
    };
    tx.commit()?;
    Ok(n)
}

/// Forgets every row of a processor: the next runs reprocess everything.
/// Rows of files that are gone stay: their outputs are kept, and only
/// `state prune` removes them, rows and outputs together.
pub fn reset(db: &dyn Db, processor: &str) -> Result<u64> {
    db.execute(
        "DELETE FROM session_processor_state
         WHERE source = ?2 AND processor_name = ?1 AND status != 'gone'",
        args![processor, db.source()],
    )
}

/// Counts per status, for `state`.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Counts {
    pub tracked: u64,
    pub processed: u64,
    pub failing: u64,
    pub quarantined: u64,
    pub gone: u64,
    pub last_processed_at: Option<String>,
}

pub fn counts(db: &dyn Db, processor: &str) -> Result<Counts> {
    let counts = db.row(
        &format!(
            "SELECT count(*),
                count(*) FILTER (WHERE status = 'ok'),
                count(*) FILTER (WHERE status IN ({FAILING})),
                count(*) FILTER (WHERE status = 'quarantined'),
                count(*) FILTER (WHERE status = 'gone'),
                max(processed_at)
             FROM session_processor_state WHERE source = ?2 AND processor_name = ?1"
        ),
        args![processor, db.source()],
        |r| {
            let count = |i: usize| -> Result<u64> {
                Ok(u64::try_from(r.get::<Option<i64>>(i)?.unwrap_or(0)).unwrap_or(0))
            };
            Ok(Counts {
                tracked: count(0)?,
                processed: count(1)?,
                failing: count(2)?,
                quarantined: count(3)?,
                gone: count(4)?,
                last_processed_at: r.get(5)?,
            })
        },
    )?;
    Ok(counts.unwrap_or_default())
}

/// A failing or quarantined session, for `state --failed`.
#[derive(Debug, serde::Serialize)]
pub struct FailedRow {
    pub session_file: String,
    pub status: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<String>,
}

pub fn failed(db: &dyn Db, processor: &str) -> Result<Vec<FailedRow>> {
    db.rows(
        &format!(
            "SELECT session_file, status, attempts, last_error, next_attempt_at
         FROM session_processor_state
         WHERE source = ?2 AND processor_name = ?1 AND status IN ({FAILING}, 'quarantined')
         ORDER BY session_file"
        ),
        args![processor, db.source()],
        |r| {
            Ok(FailedRow {
                session_file: r.get(0)?,
                status: r.get(1)?,
                attempts: r.get(2)?,
                last_error: r.get(3)?,
                next_attempt_at: r.get(4)?,
            })
        },
    )
}

/// Every column of one row, for `state --session`.
pub fn one(
    db: &dyn Db,
    processor: &str,
    session_file: &str,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>> {
    db.row(
        "SELECT * FROM session_processor_state
         WHERE source = ?3 AND processor_name = ?1 AND session_file = ?2",
        args![processor, session_file, db.source()],
        |r| {
            let mut map = serde_json::Map::new();
            for i in 0..r.len() {
                let value = match r.value(i)? {
                    Value::Null => serde_json::Value::Null,
                    Value::Int(n) => n.into(),
                    Value::Real(x) => x.into(),
                    Value::Text(t) => t.into(),
                };
                map.insert(r.name(i).to_owned(), value);
            }
            Ok(map)
        },
    )
}
