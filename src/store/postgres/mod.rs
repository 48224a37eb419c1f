//! The PostgreSQL store, for teams whose hosts share one database: the same
//! tables as the SQLite file (see [`schema`]), reached through the store
//! interface, so that the runner, processors and commands do not know
//! which engine they write to.
//!
//! One connection per process, used by the writer thread alone, as the
//! SQLite connection is. Each session's outputs and state commit in one
//! transaction, as on SQLite; a connection lost mid-run fails the
//! statement, the run ends with 74, and the open transaction is lost whole.
//! A statement that waits for a row lock longer than the busy timeout fails
//! (`lock_timeout`) rather than hanging a cron tick.

pub mod connect;
mod copy;
pub mod schema;
mod types;

use std::cell::{RefCell, RefMut};
use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use postgres::Client;
use postgres::types::ToSql;

use super::Need;
use super::sql::{Bulk, Db, Dialect, Param, Row, Statement, Table, Value};
use crate::env::Environment;

/// A connected PostgreSQL database.
pub struct Postgres {
    client: RefCell<Client>,
    /// Statements prepared on this connection, by their shared SQL.
    prepared: RefCell<HashMap<String, postgres::Statement>>,
    /// Bulk writes' statements and column types, by their tables.
    layouts: RefCell<HashMap<String, std::rc::Rc<copy::Layout>>>,
    shown: String,
    pub(super) source: String,
}

/// Connects to the database `address` names and checks (or creates) its
/// schema as [`super::Store::open`] does for a file.
pub fn open(address: &str, need: Need, busy: Duration, env: &Environment) -> Result<Postgres> {
    let shown = connect::shown(address);
    let mut client = connect::connect(address, env, busy.min(Duration::from_secs(30)))?;
    // Milliseconds in a 32-bit setting: longer saturates.
    let ms = busy.as_millis().clamp(1, i32::MAX as u128);
    client
        .batch_execute(&format!(
            "SET lock_timeout = {ms}; SET TIME ZONE 'UTC'; SET client_min_messages = warning;
             SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10;
             SET tcp_keepalives_count = 3"
        ))
        .with_context(|| format!("cannot set up the session on {shown}"))?;
    let pg = Postgres {
        client: RefCell::new(client),
        prepared: RefCell::new(HashMap::new()),
        layouts: RefCell::new(HashMap::new()),
        shown,
        source: String::new(),
    };
    let version = pg.schema_version()?;
    let target = target_version();
    if version > target {
        return Err(super::newer_than_binary(&pg.shown, version, target));
    }
    if need == Need::Current && version < target && !pg.create_if_empty()? {
        return Err(super::needs_migrate(&pg.shown, version, target));
    }
    Ok(pg)
}

/// The schema version this binary writes.
pub fn target_version() -> u32 {
    schema::STEPS.last().map_or(0, |(v, _, _)| *v)
}

/// The two 32-bit keys of a lock's advisory lock: sessionpipe's class, then
/// the first bytes of the MD5 of the source and the lock's name (hosts of
/// different sources run the same processor side by side).
fn lock_key(source: &str, name: &str) -> (i32, i32) {
    use md5::{Digest as _, Md5};
    // The default source's keys are its names' alone.
    let d = match source {
        "" => Md5::digest(name.as_bytes()),
        _ => Md5::digest(format!("{source}\0{name}").as_bytes()),
    };
    (0x5350_4c4b, i32::from_be_bytes([d[0], d[1], d[2], d[3]]))
}

/// A key for the advisory lock that serializes schema changes.
const SCHEMA_LOCK: i64 = 0x7365_7373_696f_6e00;

impl Postgres {
    /// The address it was opened with, without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The version `sessionpipe_schema` records; 0 for a database without
    /// one (new, or not sessionpipe's).
    pub fn schema_version(&self) -> Result<u32> {
        let table = schema::VERSION_TABLE;
        let exists: bool = (self as &dyn Db).one(
            "SELECT EXISTS (SELECT 1 FROM pg_tables
                 WHERE schemaname = current_schema() AND tablename = ?1)",
            crate::args![table],
        )?;
        if !exists {
            return Ok(0);
        }
        let v: Option<i64> =
            (self as &dyn Db).one(&format!("SELECT max(version) FROM {table}"), &[])?;
        Ok(u32::try_from(v.unwrap_or(0)).unwrap_or(u32::MAX))
    }

    /// What `migrate` would apply.
    pub fn pending(&self) -> Result<Vec<String>> {
        let version = self.schema_version()?;
        Ok(schema::STEPS
            .iter()
            .filter(|(v, _, _)| *v > version)
            .map(|(v, what, _)| format!("{v}: {what}"))
            .collect())
    }

    /// Gives a database without sessionpipe's tables the schema; `false`
    /// when it has an older one, which needs `migrate`.
    fn create_if_empty(&self) -> Result<bool> {
        let tx = self.schema_transaction()?;
        let version = self.schema_version()?;
        if version == target_version() {
            return Ok(true);
        }
        if version != 0 {
            return Ok(false);
        }
        self.apply(0)?;
        tx.commit()?;
        Ok(true)
    }

    /// Applies every pending step in one transaction.
    pub fn migrate(&self) -> Result<Vec<String>> {
        let tx = self.schema_transaction()?;
        let done = self.pending()?;
        self.apply(self.schema_version()?)?;
        tx.commit()?;
        Ok(done)
    }

    /// A transaction that changes the schema: one at a time, whichever
    /// hosts start one (the lock ends with the transaction).
    fn schema_transaction(&self) -> Result<crate::store::sql::Tx<'_, '_>> {
        let db: &dyn Db = self;
        let tx = db.transaction()?;
        tx.one::<bool>(
            "SELECT pg_advisory_xact_lock(?1) IS NOT NULL",
            crate::args![SCHEMA_LOCK],
        )?;
        Ok(tx)
    }

    /// The steps after `version`, and the new version, inside the caller's
    /// transaction.
    fn apply(&self, version: u32) -> Result<()> {
        let db: &dyn Db = self;
        let table = schema::VERSION_TABLE;
        db.batch(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (version BIGINT NOT NULL)"
        ))?;
        for (v, what, sql) in schema::STEPS.iter().filter(|(v, _, _)| *v > version) {
            db.batch(sql)
                .with_context(|| format!("schema step {v}: {what}"))?;
        }
        db.execute(&format!("DELETE FROM {table}"), &[])?;
        db.execute(
            &format!("INSERT INTO {table} (version) VALUES (?1)"),
            crate::args![target_version()],
        )?;
        Ok(())
    }

    /// Takes the session-level advisory lock `name` on this connection,
    /// exclusive or `shared`, waiting up to `wait`: `false` when another
    /// connection (a run on any host) holds it in a conflicting mode. The
    /// server releases it when this connection ends, however the process
    /// ends.
    pub fn lock(&self, name: &str, shared: bool, wait: Option<Duration>) -> Result<bool> {
        use crate::lock::Try;
        let sql = if shared {
            "SELECT pg_try_advisory_lock_shared(?1, ?2)"
        } else {
            "SELECT pg_try_advisory_lock(?1, ?2)"
        };
        let (k1, k2) = lock_key(&self.source, name);
        let db: &dyn Db = self;
        let taken = crate::lock::wait_for(wait, Duration::from_millis(200), || {
            Ok(match db.one::<bool>(sql, crate::args![k1, k2])? {
                true => Try::Held(()),
                false => Try::Busy,
            })
        })?;
        Ok(taken.is_some())
    }

    /// Releases what [`Postgres::lock`] took.
    pub fn unlock(&self, name: &str, shared: bool) -> Result<()> {
        let (k1, k2) = lock_key(&self.source, name);
        let db: &dyn Db = self;
        let sql = if shared {
            "SELECT pg_advisory_unlock_shared(?1, ?2)"
        } else {
            "SELECT pg_advisory_unlock(?1, ?2)"
        };
        db.one::<bool>(sql, crate::args![k1, k2])?;
        Ok(())
    }

    /// Whether any connection holds the lock `name` now.
    pub fn is_locked(&self, name: &str) -> Result<bool> {
        self.any_locked(&[name.to_owned()])
    }

    /// Whether any connection holds one of the locks `names` now.
    pub fn any_locked(&self, names: &[String]) -> Result<bool> {
        let class = lock_key(&self.source, "").0;
        // Numbers this process computed, written into the statement: a list
        // of a thousand parameters would be a thousand binds.
        let keys: Vec<String> = names
            .iter()
            .map(|n| (i64::from(lock_key(&self.source, n).1) & 0xffff_ffff).to_string())
            .collect();
        if keys.is_empty() {
            return Ok(false);
        }
        let db: &dyn Db = self;
        db.one(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
                     AND database = (SELECT oid FROM pg_database
                                     WHERE datname = current_database())
                     AND classid = CAST(CAST(?1 AS BIGINT) & 4294967295 AS oid)
                     AND objsubid = 2
                     AND CAST(objid AS BIGINT) IN ({}))",
                keys.join(", ")
            ),
            crate::args![i64::from(class)],
        )
    }

    /// The connection, for one statement at a time.
    fn client(&self) -> Result<RefMut<'_, Client>> {
        self.client
            .try_borrow_mut()
            .map_err(|_| anyhow::anyhow!("a statement ran while another's rows were read"))
    }

    /// The statement prepared for `sql`, preparing it the first time.
    fn statement(&self, sql: &str) -> Result<postgres::Statement> {
        if let Some(s) = self.prepared.borrow().get(sql) {
            return Ok(s.clone());
        }
        let stmt = self.client()?.prepare(&types::translate(sql))?;
        self.prepared
            .borrow_mut()
            .insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }
}

fn bind<'p>(values: &'p [Value<'p>]) -> Vec<&'p (dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

struct PgRow<'r>(&'r postgres::Row);

impl Row for PgRow<'_> {
    fn value(&self, i: usize) -> Result<Value<'_>> {
        Ok(self.0.try_get::<_, Value>(i)?)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn name(&self, i: usize) -> &str {
        self.0.columns().get(i).map_or("?", |c| c.name())
    }
}

struct PgStatement<'c> {
    pg: &'c Postgres,
    stmt: postgres::Statement,
}

impl Statement for PgStatement<'_> {
    fn execute(&mut self, params: &[&dyn Param]) -> Result<u64> {
        let values: Vec<Value> = params.iter().map(|p| p.value()).collect();
        Ok(self
            .pg
            .client
            .borrow_mut()
            .execute(&self.stmt, &bind(&values))?)
    }
}

impl Db for Postgres {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }
    fn source(&self) -> &str {
        &self.source
    }
    fn execute(&self, sql: &str, params: &[&dyn Param]) -> Result<u64> {
        let stmt = self.statement(sql)?;
        let values: Vec<Value> = params.iter().map(|p| p.value()).collect();
        Ok(self.client()?.execute(&stmt, &bind(&values))?)
    }
    fn query(
        &self,
        sql: &str,
        params: &[&dyn Param],
        each: &mut dyn FnMut(&dyn Row) -> Result<()>,
    ) -> Result<()> {
        use postgres::fallible_iterator::FallibleIterator as _;
        let stmt = self.statement(sql)?;
        let values: Vec<Value> = params.iter().map(|p| p.value()).collect();
        // Streamed, as SQLite's rows are: a report over millions of
        // requests holds one at a time. The connection is busy meanwhile,
        // so `each` cannot run a statement (it would get an error).
        let mut client = self.client()?;
        let mut rows = client.query_raw(&stmt, bind(&values))?;
        while let Some(row) = rows.next()? {
            each(&PgRow(&row))?;
        }
        Ok(())
    }
    fn batch(&self, sql: &str) -> Result<()> {
        Ok(self
            .client
            .borrow_mut()
            .batch_execute(&types::translate(sql))?)
    }
    fn prepare<'s>(&'s self, sql: &str) -> Result<Box<dyn Statement + 's>> {
        Ok(Box::new(PgStatement {
            pg: self,
            stmt: self.statement(sql)?,
        }))
    }
    fn bulk<'s>(&'s self, tables: &[Table<'_>]) -> Result<Box<dyn Bulk + 's>> {
        Ok(Box::new(copy::Copy::new(self, tables)?))
    }
    fn begin(&self) -> Result<()> {
        self.batch("BEGIN")
    }
}
