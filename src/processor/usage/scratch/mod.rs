//! A session too large to hold in memory: its records staged in private,
//! temporary SQLite databases, so that memory stays bounded by a constant
//! whatever one session holds (a 2 GB transcript has millions of events).
//!
//! Each database is SQLite's own "empty file name" database: a file in the
//! temporary folder (`SQLITE_TMPDIR`, `TMPDIR`, then `/var/tmp`) that SQLite
//! creates with mode 0600 and without a name (`O_TMPFILE`, or unlinked at
//! once), so nobody can open it and a crash leaves nothing behind. Its page
//! cache is capped; SQLite pages and sorts on disk beyond that. A temporary
//! folder that fills up stops the run with 74, charging nobody. The events
//! are staged here, the token lines and timestamps in [`tokens`]: the two
//! are reduced at the same time, each on its own connection.
//!
//! The rules are those of a session held in memory, applied in SQL where
//! they need every record (first event per tool use id, then per event id;
//! error flags from any result; skill markers) and through the same
//! [`Reducer`](super::tokens::Reducer) and [`Span`](super::summary::Span)
//! where they fold in order. A test holds the two paths to identical rows
//! on every fixture.

mod tokens;

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use rusqlite::{Connection, params};

use super::extract::{Accumulator, EventType};
use super::names::Uuid;
use super::rows::{self, EventRow, Rows};
use super::summary::{Counts, Head, event_id};
use super::tokens::Request;
use tokens::Tokens;

/// Page cache of a scratch database, in KiB.
const CACHE_KIB: u64 = 2048;

const SCHEMA: &str = "
    CREATE TABLE ev (seq INTEGER PRIMARY KEY, tool_id TEXT, event_uuid TEXT, parent_uuid TEXT,
        event_type TEXT NOT NULL, tool_name TEXT, skill_name TEXT, subagent_type TEXT,
        command_name TEXT, model TEXT, cwd TEXT, is_sidechain INTEGER NOT NULL,
        occurred_ms INTEGER);
    CREATE TABLE errored (tool_id TEXT PRIMARY KEY) WITHOUT ROWID;
    CREATE TABLE skill_commands (uuid TEXT PRIMARY KEY) WITHOUT ROWID;
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

/// The scratch databases of one session being read: its events here, its
/// token lines and timestamps in [`tokens`].
#[derive(Debug)]
pub(super) struct Scratch {
    conn: Connection,
    tokens: Tokens,
}

/// A finished session's events and requests, waiting in its scratch
/// databases to be written.
#[derive(Debug)]
struct Staged {
    conn: Connection,
    tokens: Tokens,
    len: u64,
    models: BTreeSet<String>,
}

/// A scratch database with `schema`, its page cache capped. Nothing in it
/// outlives the run, so nothing is journaled or synced.
fn open(schema: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open("")?;
    conn.execute_batch(&format!(
        "PRAGMA cache_size = -{CACHE_KIB};
         PRAGMA journal_mode = OFF;
         PRAGMA synchronous = OFF;
         PRAGMA temp_store = FILE;"
    ))?;
    conn.execute_batch(schema)?;
    Ok(conn)
}

impl Scratch {
    pub(super) fn open() -> rusqlite::Result<Scratch> {
        Ok(Scratch {
            conn: open(SCHEMA)?,
            tokens: Tokens::open()?,
        })
    }

    /// Moves every record `acc` holds here, leaving only its scalars.
    pub(super) fn stage(&self, acc: &mut Accumulator) -> rusqlite::Result<()> {
        self.insert(acc)?;
        self.tokens
            .insert(&acc.token_lines, &acc.times, &acc.names)?;
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
        drop(insert);
        tx.commit()
    }

    /// Applies the session's rules to everything staged and builds its
    /// summary; the events and requests stay on disk until they are written.
    pub(super) fn finish(self, head: Head<'_>) -> rusqlite::Result<Rows> {
        let Scratch { conn, tokens } = self;
        // The tokens' connection is lent to a thread of its own (or used
        // here if none can start), and taken back when it is done.
        let interrupt = tokens.interrupt_handle();
        let tokens = Mutex::new(tokens);
        let tally = || {
            let tokens = tokens.lock().unwrap_or_else(PoisonError::into_inner);
            tokens.finish()
        };
        let (events, tallied) = std::thread::scope(|s| {
            let helper = std::thread::Builder::new()
                .name("sessionpipe-tally".into())
                .spawn_scoped(s, tally);
            let events = first_events(&conn, &head.session_id);
            if events.is_err() {
                // The session fails either way: the tally need not finish.
                interrupt.interrupt();
            }
            let tallied = match helper {
                Ok(thread) => thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(_) => tally(),
            };
            (events, tallied)
        });
        let (counts, len) = events?;
        let (span, tally, models) = tallied?;
        let tokens = tokens.into_inner().unwrap_or_else(PoisonError::into_inner);
        // The caches are refilled while the rows are written; until then the
        // rows wait in the writer's queue holding as little as possible.
        conn.execute_batch("PRAGMA shrink_memory")?;
        tokens.shrink()?;
        let staged = Staged {
            conn,
            tokens,
            len,
            models,
        };
        Ok(Rows::staged(
            Box::new(staged),
            head.summary(counts, span, tally),
        ))
    }
}

/// Keeps the first event of each tool use id, then of each event id, and
/// counts them.
fn first_events(conn: &Connection, session_id: &str) -> rusqlite::Result<(Counts, u64)> {
    // One transaction for all of it: outside one, each row written would be
    // a transaction of its own, and each end of one walks the whole cache.
    let tx = conn.unchecked_transaction()?;
    keep_firsts(conn, session_id)?;
    let counts = counts(conn)?;
    let len: i64 = conn.query_row("SELECT count(*) FROM kept", [], |r| r.get(0))?;
    tx.commit()?;
    Ok((counts, u64::try_from(len).unwrap_or(0)))
}

/// Keeps the first event of each tool use id, then of each event id.
fn keep_firsts(conn: &Connection, session_id: &str) -> rusqlite::Result<()> {
    // Duplicates are found by sorting, not by a search of every event's
    // key in an index: the scratch database outgrows its cache, and each
    // such search would be a read from disk. (The events are then probed
    // in file order against the few duplicates, which stay cached.)
    conn.execute_batch(
        "INSERT INTO later SELECT seq FROM
             (SELECT seq, row_number() OVER (PARTITION BY tool_id ORDER BY seq) AS n
              FROM ev WHERE tool_id IS NOT NULL)
         WHERE n > 1 ORDER BY seq",
    )?;
    {
        // The first event of each tool use id, given its id...
        let mut select = conn.prepare(
            "SELECT seq, event_uuid, tool_id, event_type, tool_name, command_name FROM ev
             WHERE seq NOT IN (SELECT seq FROM later) ORDER BY seq",
        )?;
        let mut keep = conn.prepare("INSERT INTO kept (seq, id) VALUES (?1, ?2)")?;
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
    conn.execute_batch(
        "DELETE FROM kept WHERE seq IN (SELECT seq FROM
             (SELECT seq, row_number() OVER (PARTITION BY id ORDER BY seq) AS n FROM kept)
         WHERE n > 1)",
    )?;
    Ok(())
}

/// The counts of the events kept.
fn counts(conn: &Connection) -> rusqlite::Result<Counts> {
    conn.query_row(
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

impl rows::Staged for Staged {
    fn len(&self) -> u64 {
        self.len
    }

    /// The page caches of its two databases.
    fn held(&self) -> u64 {
        2 * CACHE_KIB * 1024
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
        self.tokens.each_request(f)
    }

    fn take_models(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.models)
    }
}

fn bad_type(kind: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidParameterName(format!("staged event type {kind:?}"))
}
