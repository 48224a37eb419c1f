//! Schema versions, kept in `PRAGMA user_version`.
//!
//! Steps are appended, never edited or reordered once released: step N takes
//! a database from version N-1 to N. All pending steps, and the import of the
//! legacy `session_extraction_state` table, run in one exclusive transaction,
//! so a crash leaves the old schema or the new one, never a mix. Running
//! `migrate` again is a no-op.

use anyhow::{Context, Result};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::steps::STEPS;

/// Tables of the system sessionpipe replaces, imported by `migrate` and then
/// dropped: its verification step's `session_extraction_state` (one row per
/// file, no processor column), and the state table of the framework it grew
/// into, `session_processor_state` (a processor column), which is found in a
/// database sessionpipe never created (no schema version) and set aside
/// under this name before sessionpipe's own table takes its name.
struct Legacy {
    table: &'static str,
    /// The processor of a row: a column, or a quoted name.
    processor: &'static str,
    what: &'static str,
}

const LEGACY: [Legacy; 2] = [
    Legacy {
        table: "session_extraction_state",
        processor: "'verification'",
        what: "as processor verification",
    },
    Legacy {
        table: "legacy_session_processor_state",
        processor: "processor_name",
        what: "(the replaced framework's session_processor_state)",
    },
];
const STATE_TABLE: &str = "session_processor_state";

/// The version legacy rows count as: the first of each processor.
const LEGACY_VERSION: u32 = 1;

pub fn target_version() -> u32 {
    STEPS.len() as u32
}

pub fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// True when the database holds no tables at all (a new file).
pub fn is_empty(conn: &Connection) -> rusqlite::Result<bool> {
    let n: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    Ok(n == 0)
}

/// What `migrate` would do, without doing it.
pub fn pending(conn: &Connection) -> Result<Vec<String>> {
    let version = user_version(conn)?;
    let mut steps: Vec<String> = STEPS
        .iter()
        .enumerate()
        .skip(version as usize)
        .map(|(i, (what, _))| format!("{}: {what}", i + 1))
        .collect();
    // The framework's table is set aside under its legacy name first.
    let framework = version == 0 && table_exists(conn, STATE_TABLE)?;
    for legacy in &LEGACY {
        let table = if framework && legacy.table == LEGACY[1].table {
            STATE_TABLE
        } else {
            legacy.table
        };
        if table_exists(conn, table)? {
            let rows = count(conn, table)?;
            steps.push(format!(
                "import {rows} rows of legacy table {} {}, then drop it",
                legacy.table, legacy.what
            ));
        }
    }
    Ok(steps)
}

fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn count(conn: &Connection, table: &str) -> rusqlite::Result<i64> {
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
}

/// Gives a database without any table the whole schema. Returns whether the
/// database is now current: `false` for an older schema, which needs
/// `migrate`. Decided inside the exclusive transaction, so runs that race to
/// create one database agree.
pub fn create_if_empty(conn: &mut Connection) -> Result<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let version = user_version(&tx)?;
    if version == target_version() {
        return Ok(true);
    }
    if version != 0 || !is_empty(&tx)? {
        return Ok(false);
    }
    apply_steps(&tx, 0)?;
    tx.commit()?;
    Ok(true)
}

/// Applies the steps after `version` and records the new version.
fn apply_steps(tx: &Connection, version: u32) -> Result<()> {
    apply_range(tx, version, target_version())
}

/// Takes a database from schema `from` to schema `to`.
fn apply_range(tx: &Connection, from: u32, to: u32) -> Result<()> {
    let steps = STEPS.iter().enumerate().skip(from as usize);
    for (i, (what, sql)) in steps.take(to.saturating_sub(from) as usize) {
        tx.execute_batch(sql)
            .with_context(|| format!("schema step {}: {what}", i + 1))?;
    }
    tx.pragma_update(None, "user_version", to)?;
    Ok(())
}

/// Applies every pending step and the legacy import in one exclusive
/// transaction. Returns what was done.
pub fn migrate(conn: &mut Connection) -> Result<Vec<String>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    // Read inside the transaction: another migrate may have run meanwhile.
    let done = pending(&tx)?;
    let version = user_version(&tx)?;
    if version == 0 && table_exists(&tx, STATE_TABLE)? {
        tx.execute_batch(&format!(
            "ALTER TABLE {STATE_TABLE} RENAME TO {}",
            LEGACY[1].table
        ))?;
    }
    apply_steps(&tx, version)?;
    for legacy in &LEGACY {
        if table_exists(&tx, legacy.table)? {
            import_legacy(&tx, legacy)
                .with_context(|| format!("importing the legacy table {}", legacy.table))?;
        }
    }
    tx.commit()?;
    Ok(done)
}

/// Legacy rows carry no stat tuple, so the first run hashes each file once;
/// a file whose hash matches is a free skip, one that changed is processed.
fn import_legacy(tx: &Connection, legacy: &Legacy) -> Result<()> {
    tx.execute(
        &format!(
            "INSERT INTO {STATE_TABLE} (processor_name, session_file, username, processed_at,
                 items_extracted, file_hash, processor_version, status)
             SELECT {}, session_file, COALESCE(username, ''), processed_at,
                 COALESCE(items_extracted, 0), file_hash, ?1, 'ok'
             FROM {} WHERE true
             ON CONFLICT (source, processor_name, session_file) DO NOTHING",
            legacy.processor, legacy.table
        ),
        [LEGACY_VERSION],
    )?;
    tx.execute_batch(&format!("DROP TABLE {}", legacy.table))?;
    Ok(())
}

#[cfg(test)]
mod tests;
