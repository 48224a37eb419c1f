//! Bulk rows into PostgreSQL as one `INSERT … SELECT FROM unnest(…)` per
//! table and batch, the tables' inserts chained in one statement: each
//! column is sent as one array parameter, so a session's rows in every
//! table, however many, cost one round trip (a statement per row would cost
//! one each, and `COPY` two per table).

use anyhow::{Result, anyhow, bail};
use postgres::types::{ToSql, Type};

use super::Postgres;
use crate::store::sql::{Bulk, Param, Table, Value};

/// Rows sent in one statement at most: bounds what a batch holds.
const FLUSH_ROWS: usize = 10_000;

/// One column's values, typed as the column is.
enum Column {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i64>>),
    Bool(Vec<Option<bool>>),
    Real(Vec<Option<f64>>),
}

impl Column {
    fn of(ty: &Type) -> Result<(Column, &'static str)> {
        Ok(match *ty {
            Type::TEXT | Type::VARCHAR => (Column::Text(Vec::new()), "text[]"),
            Type::INT8 => (Column::Int(Vec::new()), "bigint[]"),
            Type::BOOL => (Column::Bool(Vec::new()), "boolean[]"),
            Type::FLOAT8 => (Column::Real(Vec::new()), "float8[]"),
            _ => bail!("a column of type {ty} cannot be written in bulk"),
        })
    }

    fn push(&mut self, v: Value<'_>) -> Result<()> {
        match (self, v) {
            (Column::Text(c), Value::Null) => c.push(None),
            (Column::Int(c), Value::Null) => c.push(None),
            (Column::Bool(c), Value::Null) => c.push(None),
            (Column::Real(c), Value::Null) => c.push(None),
            (Column::Text(c), Value::Text(t)) => {
                c.push(Some(super::types::storable(t).into_owned()))
            }
            (Column::Int(c), Value::Int(n)) => c.push(Some(n)),
            (Column::Bool(c), Value::Int(n)) => c.push(Some(n != 0)),
            (Column::Real(c), Value::Real(x)) => c.push(Some(x)),
            (Column::Real(c), Value::Int(n)) => c.push(Some(n as f64)),
            (_, v) => bail!("{v:?} does not fit its column"),
        }
        Ok(())
    }

    fn param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Column::Text(c) => c,
            Column::Int(c) => c,
            Column::Bool(c) => c,
            Column::Real(c) => c,
        }
    }

    fn clear(&mut self) {
        match self {
            Column::Text(c) => c.clear(),
            Column::Int(c) => c.clear(),
            Column::Bool(c) => c.clear(),
            Column::Real(c) => c.clear(),
        }
    }
}

pub struct Copy<'c> {
    pg: &'c Postgres,
    statement: String,
    /// Each table's columns, in the order of the statement's parameters.
    tables: Vec<Vec<Column>>,
    rows: usize,
}

impl<'c> Copy<'c> {
    pub fn new(pg: &'c Postgres, tables: &[Table<'_>]) -> Result<Copy<'c>> {
        let mut columns = Vec::new();
        let mut inserts = Vec::new();
        let mut n = 0usize;
        for t in tables {
            let list = t.columns.join(", ");
            // The columns' types, from a query that reads no row.
            let probe = pg.statement(&format!("SELECT {list} FROM {} LIMIT 0", t.name))?;
            let mut mine = Vec::new();
            let mut arrays = Vec::new();
            for c in probe.columns() {
                let (column, array) = Column::of(c.type_())?;
                n += 1;
                mine.push(column);
                arrays.push(format!("CAST(?{n} AS {array})"));
            }
            let keep = if t.keep_existing {
                " ON CONFLICT DO NOTHING"
            } else {
                ""
            };
            inserts.push(format!(
                "INSERT INTO {} ({list}) SELECT * FROM unnest({}){keep}",
                t.name,
                arrays.join(", ")
            ));
            columns.push(mine);
        }
        // All but the last table's insert as a data-modifying WITH clause:
        // one statement, one round trip.
        let last = inserts.pop().unwrap_or_default();
        let with: Vec<String> = inserts
            .iter()
            .enumerate()
            .map(|(i, insert)| format!("t{i} AS ({insert})"))
            .collect();
        let statement = match with.is_empty() {
            true => last,
            false => format!("WITH {} {last}", with.join(", ")),
        };
        Ok(Copy {
            pg,
            statement,
            tables: columns,
            rows: 0,
        })
    }

    fn flush(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let stmt = self.pg.statement(&self.statement)?;
        let params: Vec<&(dyn ToSql + Sync)> =
            self.tables.iter().flatten().map(Column::param).collect();
        self.pg.client()?.execute(&stmt, &params)?;
        self.tables.iter_mut().flatten().for_each(Column::clear);
        self.rows = 0;
        Ok(())
    }
}

impl Bulk for Copy<'_> {
    fn push(&mut self, table: usize, row: &[&dyn Param]) -> Result<()> {
        let columns = self
            .tables
            .get_mut(table)
            .ok_or_else(|| anyhow!("no table {table} in this bulk"))?;
        if row.len() != columns.len() {
            bail!("{} values for {} columns", row.len(), columns.len());
        }
        for (param, column) in row.iter().zip(columns.iter_mut()) {
            column
                .push(param.value())
                .map_err(|e| anyhow!("bulk row: {e}"))?;
        }
        self.rows += 1;
        if self.rows >= FLUSH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.flush()
    }
}
