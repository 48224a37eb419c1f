//! The embedded SQLite store.
//!
//! Opening never changes a file that is not already a sessionpipe database:
//! the schema version is read before anything is written, so a garbage file
//! or a database from a newer binary is refused untouched. New database files
//! are created mode 0600 (SQLite gives its `-wal` and `-shm` files the same
//! mode). Writers use WAL with `synchronous=NORMAL`: a commit survives a
//! process crash at once, and a power loss can cost only the last commits,
//! never the consistency of outputs and state, which share each transaction.

pub mod migrations;
mod steps;

use std::fs::OpenOptions;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, params_from_iter};

use super::Need;
use super::sql::{Bulk, Db, Dialect, Param, Row, Statement, Table, Value};

/// An open SQLite database.
pub struct Sqlite {
    pub(super) conn: Connection,
    pub(super) source: String,
    /// Whether this open created the schema.
    pub(super) created: bool,
}

/// Opens (creating when missing) the database at `path`; a statement waits
/// up to `busy` for another writer.
pub fn open(path: &Path, need: Need, busy: Duration) -> Result<Sqlite> {
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
    let resolved =
        std::fs::canonicalize(path).with_context(|| format!("cannot resolve database {shown}"))?;
    let conn = Connection::open_with_flags(
        &resolved,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open database {shown}"))?;
    prepare(conn, need, busy, &shown.to_string())
}

/// The database at `path`, read only: nothing in it changes, not even its
/// journal mode.
pub fn open_read_only(path: &Path) -> Result<Sqlite> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open database {}", path.display()))?;
    conn.busy_timeout(super::DEFAULT_BUSY_TIMEOUT)?;
    migrations::user_version(&conn)
        .with_context(|| format!("{} is not a usable SQLite database", path.display()))?;
    Ok(Sqlite {
        conn,
        source: String::new(),
        created: false,
    })
}

/// An empty database in memory at the current schema, for read-only
/// commands run before any database exists.
pub fn in_memory() -> Result<Sqlite> {
    let conn = Connection::open_in_memory()?;
    prepare(conn, Need::Current, super::DEFAULT_BUSY_TIMEOUT, ":memory:")
}

fn prepare(mut conn: Connection, need: Need, busy: Duration, shown: &str) -> Result<Sqlite> {
    // SQLite counts the wait in milliseconds in a C int: longer saturates.
    conn.busy_timeout(busy.min(Duration::from_millis(i32::MAX as u64)))?;
    // The first read: fails on a file that is not SQLite, before any write.
    let version = migrations::user_version(&conn)
        .with_context(|| format!("{shown} is not a usable SQLite database"))?;
    let target = migrations::target_version();
    if version > target {
        return Err(super::newer_than_binary(shown, version, target));
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
    let created = need == Need::Current && version < target;
    if created && !migrations::create_if_empty(&mut conn)? {
        return Err(super::needs_migrate(shown, version, target));
    }
    Ok(Sqlite {
        conn,
        source: String::new(),
        created,
    })
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

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Null => ValueRef::Null,
            Value::Int(n) => ValueRef::Integer(n),
            Value::Real(x) => ValueRef::Real(x),
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
        }))
    }
}

fn bind<'p>(params: &'p [&'p dyn Param]) -> impl Iterator<Item = Value<'p>> + 'p {
    params.iter().map(|p| p.value())
}

struct SqliteRow<'s, 'r> {
    row: &'r rusqlite::Row<'s>,
    names: &'r [String],
}

impl Row for SqliteRow<'_, '_> {
    fn value(&self, i: usize) -> Result<Value<'_>> {
        Ok(match self.row.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(n) => Value::Int(n),
            ValueRef::Real(x) => Value::Real(x),
            ValueRef::Text(t) => Value::Text(
                std::str::from_utf8(t).map_err(|_| anyhow!("column {i} is not UTF-8 text"))?,
            ),
            ValueRef::Blob(_) => anyhow::bail!("column {i} holds a blob"),
        })
    }
    fn len(&self) -> usize {
        self.names.len()
    }
    fn name(&self, i: usize) -> &str {
        self.names.get(i).map_or("?", String::as_str)
    }
}

struct SqliteStatement<'c>(rusqlite::CachedStatement<'c>);

impl Statement for SqliteStatement<'_> {
    fn execute(&mut self, params: &[&dyn Param]) -> Result<u64> {
        Ok(self.0.execute(params_from_iter(bind(params)))? as u64)
    }
}

/// Rows inserted one statement at a time: SQLite is in this process, so a
/// statement costs no round trip.
struct SqliteBulk<'c>(Vec<rusqlite::CachedStatement<'c>>);

impl Bulk for SqliteBulk<'_> {
    fn push(&mut self, table: usize, row: &[&dyn Param]) -> Result<()> {
        let insert = self
            .0
            .get_mut(table)
            .ok_or_else(|| anyhow!("no table {table} in this bulk"))?;
        insert.execute(params_from_iter(bind(row)))?;
        Ok(())
    }
    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

impl Db for Sqlite {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }
    fn source(&self) -> &str {
        &self.source
    }
    fn execute(&self, sql: &str, params: &[&dyn Param]) -> Result<u64> {
        Ok(self
            .conn
            .prepare_cached(sql)?
            .execute(params_from_iter(bind(params)))? as u64)
    }
    fn query(
        &self,
        sql: &str,
        params: &[&dyn Param],
        each: &mut dyn FnMut(&dyn Row) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let names: Vec<String> = stmt.column_names().map(str::to_owned).collect();
        let mut rows = stmt.query(params_from_iter(bind(params)))?;
        while let Some(row) = rows.next()? {
            each(&SqliteRow { row, names: &names })?;
        }
        Ok(())
    }
    fn batch(&self, sql: &str) -> Result<()> {
        Ok(self.conn.execute_batch(sql)?)
    }
    fn prepare<'s>(&'s self, sql: &str) -> Result<Box<dyn Statement + 's>> {
        Ok(Box::new(SqliteStatement(self.conn.prepare_cached(sql)?)))
    }
    fn bulk<'s>(&'s self, tables: &[Table<'_>]) -> Result<Box<dyn Bulk + 's>> {
        let inserts = tables
            .iter()
            .map(|t| {
                let marks: Vec<String> = (1..=t.columns.len()).map(|i| format!("?{i}")).collect();
                let or = if t.keep_existing { " OR IGNORE" } else { "" };
                let sql = format!(
                    "INSERT{or} INTO {} ({}) VALUES ({})",
                    t.name,
                    t.columns.join(", "),
                    marks.join(", ")
                );
                self.conn.prepare_cached(&sql)
            })
            .collect::<rusqlite::Result<_>>()?;
        Ok(Box::new(SqliteBulk(inserts)))
    }
    fn begin(&self) -> Result<()> {
        self.batch("BEGIN IMMEDIATE")
    }
}
