//! The token lines and timestamps of a staged session, in a scratch
//! database of their own: what they reduce to (the session's token tally,
//! its requests and its span of activity) needs none of its events, so it
//! is worked out on a second connection, on a thread of its own, while the
//! events are deduplicated on the first. For a session read alone, the one
//! the other core would otherwise idle through, the end of its reading then
//! takes the longer of the two instead of both.

use std::cell::Cell;
use std::collections::BTreeSet;

use rusqlite::{Connection, Row, params};

use super::super::names::Names;
use super::super::summary::Span;
use super::super::tokens::{Counted, Reducer, Request, Tally, TokenLine};
use crate::transcript::{CacheCreation, Fast, Loose, Num, Usage};

const SCHEMA: &str = "
    CREATE TABLE times (ms INTEGER NOT NULL);
    -- Token counts are u64 stored as their i64 bit pattern: read back exact.
    CREATE TABLE token_lines (seq INTEGER PRIMARY KEY, message BLOB NOT NULL, model TEXT,
        counted INTEGER NOT NULL, request INTEGER, sidechain INTEGER NOT NULL,
        input INTEGER NOT NULL, output INTEGER NOT NULL, creation INTEGER NOT NULL,
        read INTEGER NOT NULL, creation_5m INTEGER NOT NULL, creation_1h INTEGER NOT NULL,
        fast INTEGER NOT NULL, line INTEGER NOT NULL, at INTEGER);
    -- The session's requests, as the reducer ends them (by hashed message.id)...
    CREATE TABLE ended (line INTEGER NOT NULL, key TEXT, model TEXT, at INTEGER,
        input INTEGER NOT NULL, output INTEGER NOT NULL, creation INTEGER NOT NULL,
        creation_5m INTEGER NOT NULL, creation_1h INTEGER NOT NULL, read INTEGER NOT NULL,
        sidechain INTEGER NOT NULL, fast INTEGER NOT NULL);
    -- ...and then in file order, as they are written.
    CREATE TABLE requests (line INTEGER PRIMARY KEY, key TEXT, model TEXT, at INTEGER,
        input INTEGER NOT NULL, output INTEGER NOT NULL, creation INTEGER NOT NULL,
        creation_5m INTEGER NOT NULL, creation_1h INTEGER NOT NULL, read INTEGER NOT NULL,
        sidechain INTEGER NOT NULL, fast INTEGER NOT NULL);
";

/// The scratch database of a session's token lines and timestamps.
#[derive(Debug)]
pub(super) struct Tokens {
    conn: Connection,
    /// The last timestamp staged...
    last_time: Cell<Option<i64>>,
    /// ...and whether every one came in ascending order, as a transcript's
    /// usually do: they are then read back as staged, without a sort.
    ascending: Cell<bool>,
}

impl Tokens {
    pub(super) fn open() -> rusqlite::Result<Tokens> {
        Ok(Tokens {
            conn: super::open(SCHEMA)?,
            last_time: Cell::new(None),
            ascending: Cell::new(true),
        })
    }

    /// Appends token lines (their models named in `names`) and timestamps.
    pub(super) fn insert(
        &self,
        lines: &[TokenLine],
        times: &[i64],
        names: &Names,
    ) -> rusqlite::Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        let mut insert = self
            .conn
            .prepare_cached("INSERT INTO times (ms) VALUES (?1)")?;
        for &t in times {
            if self.last_time.get().is_some_and(|last| t < last) {
                self.ascending.set(false);
            }
            self.last_time.set(Some(t));
            insert.execute([t])?;
        }
        let mut insert = self.conn.prepare_cached(
            "INSERT INTO token_lines (message, model, counted, request, sidechain,
                 input, output, creation, read, creation_5m, creation_1h, fast, line, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?;
        for line in lines {
            let c = line.usage;
            let [i, o, cc, cr, c5, c1] = bits(c.map(|c| c.usage));
            insert.execute(params![
                line.message.to_be_bytes(),
                names.opt(line.model),
                c.is_some(),
                c.and_then(|c| c.request).map(|r| r as i64),
                c.is_some_and(|c| c.sidechain),
                i,
                o,
                cc,
                cr,
                c5,
                c1,
                c.is_some_and(|c| c.usage.speed.0),
                c.map_or(0, |c| c.line as i64),
                c.and_then(|c| c.at)
            ])?;
        }
        drop(insert);
        tx.commit()
    }

    /// The session's span of activity, its token tally and the models its
    /// requests name; the requests staged in file order.
    pub(super) fn finish(&self) -> rusqlite::Result<(Span, Tally, BTreeSet<String>)> {
        // One transaction: outside one, each row written would be a
        // transaction of its own.
        let tx = self.conn.unchecked_transaction()?;
        let mut span = Span::default();
        let mut times = self.conn.prepare(match self.ascending.get() {
            true => "SELECT ms FROM times ORDER BY rowid",
            false => "SELECT ms FROM times ORDER BY ms",
        })?;
        for t in times.query_map([], |r| r.get::<_, i64>(0))? {
            span.push(t?);
        }
        drop(times);
        let mut models = BTreeSet::new();
        let tally = self.tally(&mut models)?;
        tx.commit()?;
        Ok((span, tally, models))
    }

    /// Reduces the token lines, staging the requests as they end.
    fn tally(&self, models: &mut BTreeSet<String>) -> rusqlite::Result<Tally> {
        let mut reducer = Reducer::default();
        let mut lines = self.conn.prepare(
            "SELECT message, model, counted, request, sidechain, input, output, creation, read,
                 creation_5m, creation_1h, fast, line, at
             FROM token_lines ORDER BY message, seq",
        )?;
        let mut rows = lines.query([])?;
        while let Some(r) = rows.next()? {
            let message: [u8; 16] = r.get(0)?;
            let usage = match counted(r, 2, 5)? {
                Some(usage) => Some(Counted {
                    request: r.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                    sidechain: r.get(4)?,
                    usage,
                    line: r.get::<_, i64>(12)? as u64,
                    at: r.get(13)?,
                }),
                None => None,
            };
            reducer.push(
                u128::from_be_bytes(message),
                r.get_ref(1)?.as_str_or_null()?,
                usage,
            );
            if reducer.requests.len() >= 4096 {
                self.stage_requests(&mut reducer.requests, models)?;
            }
        }
        let (tally, mut requests) = reducer.finish();
        self.stage_requests(&mut requests, models)?;
        // Sorted once, then appended in the order of `line`, the rowid.
        self.conn.execute_batch(
            "INSERT INTO requests SELECT * FROM ended ORDER BY line; DELETE FROM ended",
        )?;
        Ok(tally)
    }

    fn stage_requests(
        &self,
        requests: &mut Vec<Request>,
        models: &mut BTreeSet<String>,
    ) -> rusqlite::Result<()> {
        let mut insert = self.conn.prepare_cached(
            "INSERT INTO ended (line, model, at, input, output, creation, creation_5m,
                 creation_1h, read, sidechain, fast, key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for q in requests.drain(..) {
            if let Some(m) = &q.model
                && !models.contains(m)
            {
                models.insert(m.clone());
            }
            insert.execute(params![
                q.line as i64,
                q.model,
                q.at,
                q.input_tokens as i64,
                q.output_tokens as i64,
                q.cache_creation_tokens as i64,
                q.cache_creation_5m_tokens as i64,
                q.cache_creation_1h_tokens as i64,
                q.cache_read_tokens as i64,
                q.is_sidechain,
                q.is_fast,
                q.key
            ])?;
        }
        Ok(())
    }

    /// Stops a statement running on this connection, from another thread.
    pub(super) fn interrupt_handle(&self) -> rusqlite::InterruptHandle {
        self.conn.get_interrupt_handle()
    }

    /// Gives back what the page cache holds: the requests may wait a while
    /// in the writer's queue.
    pub(super) fn shrink(&self) -> rusqlite::Result<()> {
        self.conn.execute_batch("PRAGMA shrink_memory")
    }

    /// Each request staged, in file order.
    pub(super) fn each_request(
        &self,
        f: &mut dyn FnMut(&Request) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut select = self.conn.prepare(
            "SELECT line, model, at, input, output, creation, creation_5m, creation_1h, read,
                 sidechain, fast, key
             FROM requests ORDER BY line",
        )?;
        let mut rows = select.query([])?;
        while let Some(r) = rows.next()? {
            let n = |i| r.get::<_, i64>(i).map(|v| v as u64);
            f(&Request {
                line: n(0)?,
                model: r.get(1)?,
                at: r.get(2)?,
                input_tokens: n(3)?,
                output_tokens: n(4)?,
                cache_creation_tokens: n(5)?,
                cache_creation_5m_tokens: n(6)?,
                cache_creation_1h_tokens: n(7)?,
                cache_read_tokens: n(8)?,
                is_sidechain: r.get(9)?,
                is_fast: r.get(10)?,
                key: r.get(11)?,
            })?;
        }
        Ok(())
    }
}

/// What a usage counts, as i64 bit patterns (zeros when there is none):
/// input, output, cache creation, cache read, and the cache creation by
/// lifetime, five minutes and one hour.
fn bits(usage: Option<Usage>) -> [i64; 6] {
    let u = usage.unwrap_or_default();
    [
        u.input_tokens.0,
        u.output_tokens.0,
        u.cache_creation_input_tokens.0,
        u.cache_read_input_tokens.0,
        u.cache_creation_5m(),
        u.cache_creation_1h(),
    ]
    .map(|n| n as i64)
}

/// The usage staged at columns `first..first + 7` ([`bits`], then `fast`),
/// if column `flag` says there is one: it counts what the staged one did.
fn counted(r: &Row<'_>, flag: usize, first: usize) -> rusqlite::Result<Option<Usage>> {
    if !r.get::<_, bool>(flag)? {
        return Ok(None);
    }
    let n = |i: usize| r.get::<_, i64>(first + i).map(|v| Num(v as u64));
    Ok(Some(Usage {
        input_tokens: n(0)?,
        output_tokens: n(1)?,
        cache_creation_input_tokens: n(2)?,
        cache_read_input_tokens: n(3)?,
        cache_creation: Loose(Some(CacheCreation {
            ephemeral_5m_input_tokens: n(4)?,
            ephemeral_1h_input_tokens: n(5)?,
        })),
        speed: Fast(r.get(first + 6)?),
    }))
}
