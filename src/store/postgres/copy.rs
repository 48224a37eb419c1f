//! Bulk rows into PostgreSQL as one `INSERT … SELECT FROM unnest(…)` per
//! table and batch, the tables' inserts chained in one statement: each
//! column is sent as one array parameter, so a session's rows in every
//! table, however many, cost one round trip (a statement per row would cost
//! one each, and `COPY` two per table).

use std::rc::Rc;

use anyhow::{Result, anyhow, bail};
use bytes::{BufMut, BytesMut};
use postgres::types::{IsNull, Kind as TypeKind, ToSql, Type, to_sql_checked};

use super::Postgres;
use crate::store::sql::{Bulk, Param, Table, Value};
use crate::texts::Texts;

/// Rows sent in one statement at most: bounds what a batch holds.
const FLUSH_ROWS: usize = 10_000;

/// One column's values, typed as the column is.
enum Column {
    Text(TextColumn),
    Int(Vec<Option<i64>>),
    Bool(Vec<Option<bool>>),
    Real(Vec<Option<f64>>),
}

/// A column's type, as far as a bulk write tells them apart.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Text,
    Int,
    Bool,
    Real,
}

impl Kind {
    fn of(ty: &Type) -> Result<(Kind, &'static str)> {
        Ok(match *ty {
            Type::TEXT | Type::VARCHAR => (Kind::Text, "text[]"),
            Type::INT8 => (Kind::Int, "bigint[]"),
            Type::BOOL => (Kind::Bool, "boolean[]"),
            Type::FLOAT8 => (Kind::Real, "float8[]"),
            _ => bail!("a column of type {ty} cannot be written in bulk"),
        })
    }
}

/// What a bulk write into some tables sends: its statement and each
/// table's column types, found once per connection (finding them is a
/// lookup per table, and every session's write is a bulk write).
#[derive(Debug)]
pub(super) struct Layout {
    statement: String,
    tables: Vec<Vec<Kind>>,
}

impl Layout {
    fn new(pg: &Postgres, tables: &[Table<'_>]) -> Result<Layout> {
        let mut kinds = Vec::new();
        let mut inserts = Vec::new();
        let mut n = 0usize;
        for t in tables {
            let list = t.columns.join(", ");
            // The columns' types, from a query that reads no row.
            let probe = pg.statement(&format!("SELECT {list} FROM {} LIMIT 0", t.name))?;
            let mut mine = Vec::new();
            let mut arrays = Vec::new();
            for c in probe.columns() {
                let (kind, array) = Kind::of(c.type_())?;
                n += 1;
                mine.push(kind);
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
            kinds.push(mine);
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
        Ok(Layout {
            statement,
            tables: kinds,
        })
    }

    /// The key a layout is kept under: the tables as the caller names them.
    fn key(tables: &[Table<'_>]) -> String {
        let mut key = String::new();
        for t in tables {
            key.push_str(t.name);
            key.push(if t.keep_existing { '+' } else { '-' });
            key.push_str(&t.columns.join(","));
            key.push(';');
        }
        key
    }
}

impl Column {
    fn new(kind: Kind) -> Column {
        match kind {
            Kind::Text => Column::Text(TextColumn::default()),
            Kind::Int => Column::Int(Vec::new()),
            Kind::Bool => Column::Bool(Vec::new()),
            Kind::Real => Column::Real(Vec::new()),
        }
    }

    fn push(&mut self, v: Value<'_>) -> Result<()> {
        match (self, v) {
            (Column::Text(c), Value::Null) => c.push(None)?,
            (Column::Int(c), Value::Null) => c.push(None),
            (Column::Bool(c), Value::Null) => c.push(None),
            (Column::Real(c), Value::Null) => c.push(None),
            (Column::Text(c), Value::Text(t)) => c.push(Some(t))?,
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

/// A text column's values end to end in one buffer ([`Texts`]), so that a
/// statement's thousands of texts cost no allocation each; sent as a
/// one-dimensional `text[]` in PostgreSQL's binary array format.
#[derive(Debug, Default)]
struct TextColumn(Texts);

impl TextColumn {
    fn push(&mut self, text: Option<&str>) -> Result<()> {
        let text = text.map(super::types::storable);
        // Each element's length is sent as an i32.
        if let Some(t) = &text
            && i32::try_from(t.len()).is_err()
        {
            bail!("a text of {} bytes is too long to send", t.len());
        }
        self.0.push_with(text.as_deref(), |t, buf| buf.push_str(t));
        Ok(())
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

impl ToSql for TextColumn {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let TypeKind::Array(member) = ty.kind() else {
            return Err(format!("texts cannot be sent as {ty}").into());
        };
        // Dimensions, whether any element is NULL, the elements' type, then
        // the one dimension's length and lower bound.
        let texts = &self.0;
        out.put_i32(1);
        out.put_i32(i32::from(texts.has_nulls()));
        out.put_u32(member.oid());
        out.put_i32(i32::try_from(texts.len())?);
        out.put_i32(1);
        for i in 0..texts.len() {
            match texts.get(i) {
                None => out.put_i32(-1),
                Some(text) => {
                    out.put_i32(i32::try_from(text.len())?);
                    out.put_slice(text.as_bytes());
                }
            }
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::TEXT_ARRAY | Type::VARCHAR_ARRAY)
    }

    to_sql_checked!();
}

pub struct Copy<'c> {
    pg: &'c Postgres,
    layout: Rc<Layout>,
    /// Each table's columns, in the order of the statement's parameters.
    tables: Vec<Vec<Column>>,
    rows: usize,
}

impl<'c> Copy<'c> {
    pub fn new(pg: &'c Postgres, tables: &[Table<'_>]) -> Result<Copy<'c>> {
        let key = Layout::key(tables);
        let known = pg.layouts.borrow().get(&key).cloned();
        let layout = match known {
            Some(layout) => layout,
            None => {
                let layout = Rc::new(Layout::new(pg, tables)?);
                pg.layouts.borrow_mut().insert(key, Rc::clone(&layout));
                layout
            }
        };
        let tables = layout
            .tables
            .iter()
            .map(|kinds| kinds.iter().map(|&k| Column::new(k)).collect())
            .collect();
        Ok(Copy {
            pg,
            layout,
            tables,
            rows: 0,
        })
    }

    fn flush(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let stmt = self.pg.statement(&self.layout.statement)?;
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
