//! `migrate --from sqlite:PATH`: a SQLite database's every row (state, run
//! history, outputs) copied into a PostgreSQL database in one transaction,
//! so that a team moves to PostgreSQL without reprocessing. Either
//! everything is copied or nothing: a failure rolls the copy back.
//!
//! The rows take the source the configuration names (`source`), so each
//! host with a data dir of its own brings its history into the shared
//! database: the copy is refused only when the database already holds rows
//! of that source. Runs are numbered after the runs already there. The
//! tables every source shares (facts, their links, model prices) are
//! merged: a row already there is kept.
//!
//! The SQLite file is only read, in one read transaction: a run writing to
//! it meanwhile does not make the tables disagree.

use anyhow::{Result, bail};

use super::sql::{Db, Param, Table, Value};
use super::{Location, Store};
use crate::exit;

/// The tables, parents before the tables that refer to them. Every table
/// of the schema is here (a test holds the list against it).
pub const TABLES: &[&str] = &[
    "runs",
    "run_errors",
    "session_processor_state",
    "processor_settings",
    "usage_events",
    "usage_requests",
    "usage_file_summary",
    "usage_session_summary",
    "usage_model_prices",
    "knowledge_items",
    "verification_evidence",
    "knowledge_similar",
    "verification_sessions",
];

/// The tables all sources share, merged rather than refused.
const SHARED: &[&str] = &["usage_model_prices", "knowledge_items", "knowledge_similar"];

/// Not copied: the fingerprints of the settings the rows were last brought
/// in line with. The first run on the target applies the target's own
/// settings (identity map, price book) to the copied rows.
const NOT_COPIED: &[&str] = &["processor_settings"];

/// Copies `from` into `to`; returns each table with the rows copied.
pub fn copy(from: &Store, to: &Store, shown: &Location) -> Result<Vec<(&'static str, u64)>> {
    let source = from.db();
    // No run of this source may write while its history is copied in.
    let processors = source.rows(
        "SELECT processor_name FROM session_processor_state
         UNION SELECT processor_name FROM runs",
        &[],
        |r| r.get::<String>(0),
    )?;
    let mut held = Vec::new();
    let copied = processors
        .iter()
        .try_for_each(|p| match to.lock(p, false, None)? {
            true => {
                held.push(p);
                Ok(())
            }
            false => Err(exit::fail(
                exit::BUSY,
                format!("a run of {p} on this source holds its lock: copy once it is done"),
            )),
        })
        .and_then(|()| copy_locked(from, to, shown));
    for p in held {
        to.unlock(p, false)?;
    }
    copied
}

fn copy_locked(from: &Store, to: &Store, shown: &Location) -> Result<Vec<(&'static str, u64)>> {
    let (source, target) = (from.db(), to.db());
    let (have, want) = (from.schema_version()?, to.target_version());
    if have != want {
        return Err(exit::fail(
            exit::CONFIG,
            format!(
                "the SQLite database has schema version {have}, this sessionpipe copies \
                 version {want}: run `sessionpipe --db FILE migrate` on it first"
            ),
        ));
    }
    // One snapshot of the file for every table.
    source.batch("BEGIN")?;
    let tx = target.transaction()?;
    for table in TABLES
        .iter()
        .filter(|t| !SHARED.contains(t) && !NOT_COPIED.contains(t) && **t != "run_errors")
    {
        let rows: i64 = tx.one(
            &format!("SELECT count(*) FROM {table} WHERE source = ?1"),
            crate::args![target.source()],
        )?;
        if rows > 0 {
            let whose = match target.source() {
                "" => "rows".to_owned(),
                s => format!("rows of source {s}"),
            };
            return Err(exit::fail(
                exit::CONFIG,
                format!("{shown} already holds {whose} in {table}: nothing was copied"),
            ));
        }
    }
    // The copied runs' ids, reserved from the sequence at once: runs other
    // hosts start meanwhile take ids after them. Into a new database the
    // ids stay as they were.
    let highest: i64 = source.one("SELECT coalesce(max(id), 0) FROM runs", &[])?;
    let next: i64 = tx.one("SELECT nextval(pg_get_serial_sequence('runs', 'id'))", &[])?;
    let offset = next.saturating_sub(1);
    let last = offset.saturating_add(highest);
    if last >= next {
        tx.one::<i64>(
            "SELECT setval(pg_get_serial_sequence('runs', 'id'), ?1)",
            crate::args![last],
        )?;
    }
    let mut copied = Vec::new();
    for table in TABLES.iter().filter(|t| !NOT_COPIED.contains(t)) {
        copied.push((*table, copy_table(source, &*tx, table, offset)?));
    }
    tx.commit()?;
    source.batch("COMMIT")?;
    Ok(copied)
}

/// Copies one table's rows: with the target's source, run ids moved past
/// `offset`, shared rows already there kept.
fn copy_table(source: &dyn Db, target: &dyn Db, table: &str, offset: i64) -> Result<u64> {
    let columns = source.rows(
        &format!("SELECT name FROM pragma_table_info('{table}')"),
        &[],
        |r| r.get::<String>(0),
    )?;
    if columns.is_empty() {
        bail!("the SQLite database has no table {table}");
    }
    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut bulk = target.bulk(&[Table {
        name: table,
        columns: &names,
        keep_existing: SHARED.contains(&table),
    }])?;
    let own_source = target.source().to_owned();
    let mut n = 0u64;
    source.query(
        &format!("SELECT {} FROM {table}", names.join(", ")),
        &[],
        &mut |r| {
            let mut row: Vec<Value> = (0..r.len()).map(|i| r.value(i)).collect::<Result<_>>()?;
            for (value, name) in row.iter_mut().zip(&names) {
                match (*name, &*value) {
                    ("source", _) if !SHARED.contains(&table) || table == "knowledge_items" => {
                        *value = Value::Text(&own_source);
                    }
                    ("id", Value::Int(id)) if table == "runs" => {
                        *value = Value::Int(id.saturating_add(offset));
                    }
                    ("run_id", Value::Int(id)) => *value = Value::Int(id.saturating_add(offset)),
                    _ => {}
                }
            }
            let params: Vec<&dyn Param> = row.iter().map(|v| v as &dyn Param).collect();
            bulk.push(0, &params)?;
            n += 1;
            Ok(())
        },
    )?;
    bulk.finish()?;
    Ok(n)
}

/// Opens the SQLite database `path` to read from: never created, never
/// written.
pub fn open_source(path: &std::path::Path) -> Result<Store> {
    if !path.is_file() {
        return Err(exit::fail(
            exit::CONFIG,
            format!("no SQLite database at {}", path.display()),
        ));
    }
    Store::open_read_only(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_of_the_schema_is_copied() {
        let store = Store::in_memory().unwrap();
        let mut tables = store
            .db()
            .rows(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
                &[],
                |r| r.get::<String>(0),
            )
            .unwrap();
        let mut listed: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
        tables.sort();
        listed.sort();
        assert_eq!(tables, listed);
    }
}
