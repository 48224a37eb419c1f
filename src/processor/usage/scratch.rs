//! A session too large to hold in memory: its records staged in a private,
//! temporary SQLite database, so that memory stays bounded by a constant
//! whatever one session holds (a 2 GB transcript has millions of events).
//!
//! The database is SQLite's own "empty file name" database: a file in the
//! temporary folder (`SQLITE_TMPDIR`, `TMPDIR`, then `/var/tmp`) that SQLite
//! creates with mode 0600 and without a name (`O_TMPFILE`, or unlinked at
//! once), so nobody can open it and a crash leaves nothing behind. Its page
//! cache is capped; SQLite pages and sorts on disk beyond that. A temporary
//! folder that fills up stops the run with 74, charging nobody.
//!
//! The rules are those of a session held in memory, applied in SQL where
//! they need every record (first event per tool use id, then per event id;
//! error flags from any result; skill markers) and through the same
//! [`Reducer`] and [`Span`] where they fold in order. A test holds the two
//! paths to identical rows on every fixture.

use rusqlite::{Connection, Row, params};

use super::extract::{Accumulator, EventType};
use super::names::Uuid;
use super::rows::{self, EventRow, Rows};
use super::summary::{Counts, Head, Span, event_id};
use super::tokens::{Counted, Reducer, Request, Tally};
use crate::transcript::{CacheCreation, Fast, Loose, Num, Usage};

/// Page cache of a scratch database, in KiB.
const CACHE_KIB: u64 = 2048;

const SCHEMA: &str = "
    PRAGMA journal_mode = OFF;
    PRAGMA synchronous = OFF;
    PRAGMA temp_store = FILE;
    CREATE TABLE ev (seq INTEGER PRIMARY KEY, tool_id TEXT, event_uuid TEXT, parent_uuid TEXT,
        event_type TEXT NOT NULL, tool_name TEXT, skill_name TEXT, subagent_type TEXT,
        command_name TEXT, model TEXT, cwd TEXT, is_sidechain INTEGER NOT NULL,
        occurred_ms INTEGER);
    CREATE TABLE times (ms INTEGER NOT NULL);
    CREATE TABLE errored (tool_id TEXT PRIMARY KEY) WITHOUT ROWID;
    CREATE TABLE skill_commands (uuid TEXT PRIMARY KEY) WITHOUT ROWID;
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
    -- Events after the first of their tool use id.
    CREATE TABLE later (seq INTEGER PRIMARY KEY);
    -- The events kept: the first of each id, in file order.
    CREATE TABLE kept (seq INTEGER PRIMARY KEY, id BLOB NOT NULL);
    CREATE VIEW final AS
        SELECT k.seq, k.id, e.event_uuid, e.parent_uuid, e.event_type, e.tool_name,
            CASE WHEN e.event_type = 'slash_command'
                      AND e.event_uuid IN (SELECT uuid FROM skill_commands)
                 THEN e.command_name ELSE e.skill_name END AS skill_name,
            e.subagent_type, e.command_name, e.model, e.cwd,
            e.tool_id IS NOT NULL AND e.tool_id IN (SELECT tool_id FROM errored) AS is_error,
            e.is_sidechain, e.occurred_ms
        FROM kept AS k JOIN ev AS e USING (seq);
";

/// The scratch database of one session being read.
#[derive(Debug)]
pub(super) struct Scratch {
    conn: Connection,
}

/// A finished session's events, waiting in its scratch database to be
/// written.
#[derive(Debug)]
struct Staged {
    conn: Connection,
    len: u64,
}

impl Scratch {
    pub(super) fn open() -> rusqlite::Result<Scratch> {
        let conn = Connection::open("")?;
        conn.execute_batch(&format!("PRAGMA cache_size = -{CACHE_KIB};"))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Scratch { conn })
    }

    /// Moves every record `acc` holds here, leaving only its scalars.
    pub(super) fn stage(&self, acc: &mut Accumulator) -> rusqlite::Result<()> {
        self.insert(acc)?;
        acc.clear_records();
        Ok(())
    }

    fn insert(&self, acc: &Accumulator) -> rusqlite::Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        let n = &acc.names;
        let mut insert = self.conn.prepare_cached(
            "INSERT INTO ev (tool_id, event_uuid, parent_uuid, event_type, tool_name, skill_name,
                 subagent_type, command_name, model, cwd, is_sidechain, occurred_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for e in &acc.events {
            insert.execute(params![
                e.tool_id.as_deref(),
                e.event_uuid.as_ref().map(Uuid::text),
                e.parent_uuid.as_ref().map(Uuid::text),
                e.event_type.as_str(),
                n.opt(e.tool_name),
                n.opt(e.skill_name),
                n.opt(e.subagent_type),
                n.opt(e.command_name),
                n.opt(e.model),
                n.opt(e.cwd),
                e.is_sidechain,
                e.occurred_ms,
            ])?;
        }
        let mut insert = self
            .conn
            .prepare_cached("INSERT INTO times (ms) VALUES (?1)")?;
        for t in &acc.times {
            insert.execute([t])?;
        }
        let mut insert = self
            .conn
            .prepare_cached("INSERT OR IGNORE INTO errored VALUES (?1)")?;
        for id in &acc.errored_tool_ids {
            insert.execute([&**id])?;
        }
        let mut insert = self
            .conn
            .prepare_cached("INSERT OR IGNORE INTO skill_commands VALUES (?1)")?;
        for uuid in &acc.skill_commands {
            insert.execute([uuid.text()])?;
        }
        let mut insert = self.conn.prepare_cached(
            "INSERT INTO token_lines (message, model, counted, request, sidechain,
                 input, output, creation, read, creation_5m, creation_1h, fast, line, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?;
        for line in &acc.token_lines {
            let c = line.usage;
            let [i, o, cc, cr, c5, c1] = bits(c.map(|c| c.usage));
            insert.execute(params![
                line.message.to_be_bytes(),
                n.opt(line.model),
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

    /// Applies the session's rules to everything staged and builds its
    /// summary; the events stay on disk until they are written.
    pub(super) fn finish(self, head: Head<'_>) -> rusqlite::Result<Rows> {
        let db = &self.conn;
        // One transaction for all of it: outside one, each row written below
        // would be a transaction of its own, and each end of one walks the
        // whole page cache.
        let tx = db.unchecked_transaction()?;
        self.keep_firsts(&head.session_id)?;
        let counts = self.counts()?;
        let mut span = Span::default();
        let mut times = db.prepare("SELECT ms FROM times ORDER BY ms")?;
        for t in times.query_map([], |r| r.get::<_, i64>(0))? {
            span.push(t?);
        }
        drop(times);
        let tally = self.tally()?;
        let len: i64 = db.query_row("SELECT count(*) FROM kept", [], |r| r.get(0))?;
        tx.commit()?;
        // The cache is refilled while the rows are written; until then the
        // rows wait in the writer's queue holding as little as possible.
        db.execute_batch("PRAGMA shrink_memory")?;
        let staged = Staged {
            conn: self.conn,
            len: u64::try_from(len).unwrap_or(0),
        };
        Ok(Rows::staged(
            Box::new(staged),
            head.summary(counts, span, tally),
        ))
    }

    /// Keeps the first event of each tool use id, then of each event id.
    fn keep_firsts(&self, session_id: &str) -> rusqlite::Result<()> {
        // Duplicates are found by sorting, not by a search of every event's
        // key in an index: the scratch database outgrows its cache, and each
        // such search would be a read from disk. (The events are then probed
        // in file order against the few duplicates, which stay cached.)
        self.conn.execute_batch(
            "INSERT INTO later SELECT seq FROM
                 (SELECT seq, row_number() OVER (PARTITION BY tool_id ORDER BY seq) AS n
                  FROM ev WHERE tool_id IS NOT NULL)
             WHERE n > 1 ORDER BY seq",
        )?;
        {
            // The first event of each tool use id, given its id...
            let mut select = self.conn.prepare(
                "SELECT seq, event_uuid, tool_id, event_type, tool_name, command_name FROM ev
                 WHERE seq NOT IN (SELECT seq FROM later) ORDER BY seq",
            )?;
            let mut keep = self
                .conn
                .prepare("INSERT INTO kept (seq, id) VALUES (?1, ?2)")?;
            let mut rows = select.query([])?;
            while let Some(r) = rows.next()? {
                let kind = r.get_ref(3)?.as_str()?;
                let id = event_id(
                    session_id,
                    r.get_ref(1)?.as_str_or_null()?,
                    r.get_ref(2)?.as_str_or_null()?,
                    EventType::parse(kind).ok_or_else(|| bad_type(kind))?,
                    r.get_ref(4)?.as_str_or_null()?,
                    r.get_ref(5)?.as_str_or_null()?,
                );
                keep.execute(params![r.get::<_, i64>(0)?, id])?;
            }
        }
        // ...then the first of each id.
        self.conn.execute_batch(
            "DELETE FROM kept WHERE seq IN (SELECT seq FROM
                 (SELECT seq, row_number() OVER (PARTITION BY id ORDER BY seq) AS n FROM kept)
             WHERE n > 1)",
        )?;
        Ok(())
    }

    /// The counts of the events kept.
    fn counts(&self) -> rusqlite::Result<Counts> {
        self.conn.query_row(
            "SELECT count(*) FILTER (WHERE event_type = 'tool_use'),
                count(*) FILTER (WHERE is_error AND event_type != 'slash_command'),
                count(*) FILTER (WHERE skill_name IS NOT NULL),
                count(*) FILTER (WHERE event_type = 'subagent'),
                count(*) FILTER (WHERE event_type = 'mcp_call'),
                count(*) FILTER (WHERE event_type = 'slash_command'),
                count(DISTINCT tool_name), count(DISTINCT skill_name)
             FROM final",
            [],
            |r| {
                let n = |i| r.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
                Ok(Counts {
                    tool_calls: n(0)?,
                    tool_errors: n(1)?,
                    skill_invocations: n(2)?,
                    subagent_dispatches: n(3)?,
                    mcp_calls: n(4)?,
                    slash_commands: n(5)?,
                    distinct_tools: n(6)?,
                    distinct_skills: n(7)?,
                })
            },
        )
    }

    /// Reduces the token lines, staging the requests as they end.
    fn tally(&self) -> rusqlite::Result<Tally> {
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
                self.stage_requests(&mut reducer.requests)?;
            }
        }
        let (tally, mut requests) = reducer.finish();
        self.stage_requests(&mut requests)?;
        // Sorted once, then appended in the order of `line`, the rowid.
        self.conn.execute_batch(
            "INSERT INTO requests SELECT * FROM ended ORDER BY line; DELETE FROM ended",
        )?;
        Ok(tally)
    }

    fn stage_requests(&self, requests: &mut Vec<Request>) -> rusqlite::Result<()> {
        let mut insert = self.conn.prepare_cached(
            "INSERT INTO ended (line, model, at, input, output, creation, creation_5m,
                 creation_1h, read, sidechain, fast, key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for q in requests.drain(..) {
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
}

impl rows::Staged for Staged {
    fn len(&self) -> u64 {
        self.len
    }

    /// Its page cache.
    fn held(&self) -> u64 {
        CACHE_KIB * 1024
    }

    fn each(&self, f: &mut dyn FnMut(&EventRow<'_>) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let mut select = self.conn.prepare(
            "SELECT id, event_uuid, parent_uuid, event_type, tool_name, skill_name,
                 subagent_type, command_name, model, cwd, is_error, is_sidechain, occurred_ms
             FROM final ORDER BY seq",
        )?;
        let mut rows = select.query([])?;
        while let Some(r) = rows.next()? {
            let id: [u8; 32] = r.get(0)?;
            let text =
                |i| -> rusqlite::Result<Option<&str>> { Ok(r.get_ref(i)?.as_str_or_null()?) };
            let kind = r.get_ref(3)?.as_str()?;
            f(&EventRow {
                id: crate::session::hex(&id[..rows::ID_BYTES]).into(),
                event_uuid: text(1)?.map(Into::into),
                parent_uuid: text(2)?.map(Into::into),
                event_type: EventType::parse(kind).ok_or_else(|| bad_type(kind))?,
                tool_name: text(4)?,
                skill_name: text(5)?,
                subagent_type: text(6)?,
                command_name: text(7)?,
                model: text(8)?,
                cwd: text(9)?,
                is_error: r.get(10)?,
                is_sidechain: r.get(11)?,
                occurred_at: r
                    .get::<_, Option<i64>>(12)?
                    .map(|ms| rows::format_ms(ms).into()),
            })?;
        }
        Ok(())
    }

    fn each_request(
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

fn bad_type(kind: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidParameterName(format!("staged event type {kind:?}"))
}
