//! The store interface: what the runner, the processors and the commands
//! ask of a database, so that none of them knows whether it is the embedded
//! SQLite file or a PostgreSQL server.
//!
//! Statements are written once, in the SQL both engines share, with SQLite's
//! numbered parameters (`?1`, `?2`, …); the PostgreSQL side renumbers them
//! (`$1`) and turns `INSERT OR IGNORE` into `ON CONFLICT DO NOTHING`. The
//! few statements that need an engine's own functions ask
//! [`Db::dialect`]. Values cross the interface as four kinds (null,
//! integer, real, text), as SQLite stores them; each engine converts them to
//! and from its column types, and refuses a conversion that would change a
//! value (a fraction into an integer, an integer past a column's range)
//! instead of storing something else.

use anyhow::{Result, anyhow};

/// Which engine a statement runs on, for the statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// One value, bound or read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
}

/// What can be bound to a parameter.
pub trait Param {
    fn value(&self) -> Value<'_>;
}

impl Param for i64 {
    fn value(&self) -> Value<'_> {
        Value::Int(*self)
    }
}
impl Param for i32 {
    fn value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}
impl Param for u32 {
    fn value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}
impl Param for bool {
    fn value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}
impl Param for f64 {
    fn value(&self) -> Value<'_> {
        Value::Real(*self)
    }
}
impl Param for str {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}
impl Param for String {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}
impl Param for Value<'_> {
    fn value(&self) -> Value<'_> {
        *self
    }
}
impl Param for std::borrow::Cow<'_, str> {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}
impl<T: Param + ?Sized> Param for &T {
    fn value(&self) -> Value<'_> {
        (**self).value()
    }
}
impl<T: Param> Param for Option<T> {
    fn value(&self) -> Value<'_> {
        match self {
            Some(v) => v.value(),
            None => Value::Null,
        }
    }
}

/// The parameters of a statement, as the interface takes them.
#[macro_export]
macro_rules! args {
    ($($v:expr),* $(,)?) => {
        &[$(&$v as &dyn $crate::store::sql::Param),*][..]
    };
}

/// What a column can be read as.
pub trait FromValue: Sized {
    fn from_value(v: Value<'_>) -> Result<Self>;
}

impl FromValue for i64 {
    fn from_value(v: Value<'_>) -> Result<i64> {
        match v {
            Value::Int(n) => Ok(n),
            other => Err(anyhow!("expected an integer, found {other:?}")),
        }
    }
}
impl FromValue for u64 {
    fn from_value(v: Value<'_>) -> Result<u64> {
        let n = i64::from_value(v)?;
        u64::try_from(n).map_err(|_| anyhow!("expected a count, found {n}"))
    }
}
impl FromValue for u32 {
    fn from_value(v: Value<'_>) -> Result<u32> {
        let n = i64::from_value(v)?;
        u32::try_from(n).map_err(|_| anyhow!("expected a small count, found {n}"))
    }
}
impl FromValue for i32 {
    fn from_value(v: Value<'_>) -> Result<i32> {
        let n = i64::from_value(v)?;
        i32::try_from(n).map_err(|_| anyhow!("expected a small integer, found {n}"))
    }
}
impl FromValue for bool {
    fn from_value(v: Value<'_>) -> Result<bool> {
        Ok(i64::from_value(v)? != 0)
    }
}
impl FromValue for f64 {
    fn from_value(v: Value<'_>) -> Result<f64> {
        match v {
            Value::Real(x) => Ok(x),
            // SQLite keeps a real with no fraction as an integer.
            Value::Int(n) => Ok(n as f64),
            other => Err(anyhow!("expected a number, found {other:?}")),
        }
    }
}
impl FromValue for String {
    fn from_value(v: Value<'_>) -> Result<String> {
        match v {
            Value::Text(t) => Ok(t.to_owned()),
            other => Err(anyhow!("expected text, found {other:?}")),
        }
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: Value<'_>) -> Result<Option<T>> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// One row of a result.
pub trait Row {
    fn value(&self, i: usize) -> Result<Value<'_>>;
    fn len(&self) -> usize;
    fn name(&self, i: usize) -> &str;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl dyn Row + '_ {
    /// Column `i` as a `T`; the error names the column.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T> {
        T::from_value(self.value(i)?).map_err(|e| anyhow!("column {}: {e}", self.name(i)))
    }

    /// Column `i` as text borrowed from the row, `None` for NULL: for text
    /// that is only looked at, not kept.
    pub fn text(&self, i: usize) -> Result<Option<&str>> {
        match self.value(i)? {
            Value::Null => Ok(None),
            Value::Text(t) => Ok(Some(t)),
            other => Err(anyhow!(
                "column {}: expected text, found {other:?}",
                self.name(i)
            )),
        }
    }
}

/// A statement prepared once and run many times (a writer's inserts).
pub trait Statement {
    fn execute(&mut self, params: &[&dyn Param]) -> Result<u64>;
}

/// One table of a [`Db::bulk`]: its columns, and whether a row that is
/// already there (by a key) is kept rather than an error.
#[derive(Debug, Clone, Copy)]
pub struct Table<'a> {
    pub name: &'a str,
    pub columns: &'a [&'a str],
    pub keep_existing: bool,
}

/// Many rows into some tables (a session's events, requests and prices):
/// one prepared insert per row on SQLite, in this process; on PostgreSQL
/// all the tables' rows in one statement, since a statement is a round trip
/// there. Rows pushed are written by [`Bulk::finish`] at the latest, inside
/// the caller's transaction.
pub trait Bulk {
    /// A row of the `table`-th table.
    fn push(&mut self, table: usize, row: &[&dyn Param]) -> Result<()>;
    fn finish(self: Box<Self>) -> Result<()>;
}

/// A database of either engine.
pub trait Db {
    fn dialect(&self) -> Dialect;
    /// The source this store writes and reads the rows of (`source` in the
    /// config, `""` for none): every key has it.
    fn source(&self) -> &str;
    /// Runs one statement; returns the rows it changed.
    fn execute(&self, sql: &str, params: &[&dyn Param]) -> Result<u64>;
    /// Runs one query, handing each row to `each`.
    fn query(
        &self,
        sql: &str,
        params: &[&dyn Param],
        each: &mut dyn FnMut(&dyn Row) -> Result<()>,
    ) -> Result<()>;
    /// Runs statements without parameters (schema, transaction control).
    fn batch(&self, sql: &str) -> Result<()>;
    /// Starts writing rows into `tables`.
    fn bulk<'s>(&'s self, tables: &[Table<'_>]) -> Result<Box<dyn Bulk + 's>>;
    /// Prepares (or finds already prepared) a statement.
    fn prepare<'s>(&'s self, sql: &str) -> Result<Box<dyn Statement + 's>>;
    /// Starts a transaction that takes the write lock at once (SQLite's
    /// `BEGIN IMMEDIATE`), so that it cannot fail half-way on another
    /// writer.
    fn begin(&self) -> Result<()>;
}

impl<'d> dyn Db + 'd {
    /// Every row, mapped.
    pub fn rows<T>(
        &self,
        sql: &str,
        params: &[&dyn Param],
        mut map: impl FnMut(&dyn Row) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.query(sql, params, &mut |r| {
            out.push(map(r)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row, mapped, if there is one.
    pub fn row<T>(
        &self,
        sql: &str,
        params: &[&dyn Param],
        mut map: impl FnMut(&dyn Row) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut out = None;
        self.query(sql, params, &mut |r| {
            if out.is_none() {
                out = Some(map(r)?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// The first column of the first row (none: `T`'s null).
    pub fn one<T: FromValue>(&self, sql: &str, params: &[&dyn Param]) -> Result<T> {
        match self.row(sql, params, |r| r.get::<T>(0))? {
            Some(v) => Ok(v),
            None => T::from_value(Value::Null),
        }
    }

    /// How SQLite would run `sql`: its `EXPLAIN QUERY PLAN` details,
    /// joined by `; `, for tests that hold a statement to its index.
    #[cfg(test)]
    pub fn plan(&self, sql: &str, params: &[&dyn Param]) -> Result<String> {
        let details = self.rows(&format!("EXPLAIN QUERY PLAN {sql}"), params, |r| {
            r.get::<String>(3)
        })?;
        Ok(details.join("; "))
    }

    /// Starts a transaction, rolled back unless committed.
    pub fn transaction(&self) -> Result<Tx<'_, 'd>> {
        self.begin()?;
        Ok(Tx {
            db: self,
            done: false,
        })
    }
}

/// An open transaction: [`Tx::commit`] ends it, dropping it rolls it back.
pub struct Tx<'a, 'd> {
    db: &'a (dyn Db + 'd),
    done: bool,
}

impl<'a, 'd> Tx<'a, 'd> {
    pub fn commit(mut self) -> Result<()> {
        self.done = true;
        self.db.batch("COMMIT")
    }
}

impl<'a, 'd> std::ops::Deref for Tx<'a, 'd> {
    type Target = dyn Db + 'd;
    fn deref(&self) -> &Self::Target {
        self.db
    }
}

impl Drop for Tx<'_, '_> {
    fn drop(&mut self) {
        if !self.done {
            // Nothing more to do with an error here: the connection drops
            // the transaction when it closes, and the caller already has
            // the error that brought it here.
            let _ = self.db.batch("ROLLBACK");
        }
    }
}
