//! `migrate --from sqlite:PATH`: a SQLite database's every row (state, run
//! history, outputs) copied into an empty PostgreSQL database in one
//! transaction, so that a team moves to PostgreSQL without reprocessing.
//! Either everything is copied or nothing: a failure rolls the copy back.

use anyhow::{Result, bail};

use super::sql::{Db, Value};
use super::{Location, Need, Store};
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

/// Copies `from` into `to`; returns each table with the rows copied.
pub fn copy(from: &Store, to: &Store, shown: &Location) -> Result<Vec<(&'static str, u64)>> {
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
    let tx = target.transaction()?;
    for table in TABLES {
        let rows: i64 = tx.one(&format!("SELECT count(*) FROM {table}"), &[])?;
        if rows > 0 {
            return Err(exit::fail(
                exit::CONFIG,
                format!("{shown} already holds rows in {table}: copy into an empty database"),
            ));
        }
    }
    let mut copied = Vec::new();
    for table in TABLES {
        copied.push((*table, copy_table(source, &*tx, table)?));
    }
    // Later runs number their rows after the copied ones.
    tx.execute(
        "SELECT setval(pg_get_serial_sequence('runs', 'id'), coalesce(max(id), 0) + 1, false)
         FROM runs",
        &[],
    )?;
    tx.commit()?;
    Ok(copied)
}

fn copy_table(source: &dyn Db, target: &dyn Db, table: &str) -> Result<u64> {
    let columns = source.rows(
        &format!("SELECT name FROM pragma_table_info('{table}')"),
        &[],
        |r| r.get::<String>(0),
    )?;
    if columns.is_empty() {
        bail!("the SQLite database has no table {table}");
    }
    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut bulk = target.bulk(table, &names)?;
    let mut n = 0u64;
    source.query(
        &format!("SELECT {} FROM {table}", names.join(", ")),
        &[],
        &mut |r| {
            let row: Vec<Value> = (0..r.len()).map(|i| r.value(i)).collect::<Result<_>>()?;
            let params: Vec<&dyn super::sql::Param> =
                row.iter().map(|v| v as &dyn super::sql::Param).collect();
            bulk.push(&params)?;
            n += 1;
            Ok(())
        },
    )?;
    bulk.finish()?;
    Ok(n)
}

/// Opens the SQLite database `path` for reading from, never creating it.
pub fn open_source(path: &std::path::Path, busy: std::time::Duration) -> Result<Store> {
    if !path.is_file() {
        return Err(exit::fail(
            exit::CONFIG,
            format!("no SQLite database at {}", path.display()),
        ));
    }
    Store::open(&Location::File(path.to_owned()), Need::Any, busy)
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
