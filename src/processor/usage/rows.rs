//! The rows one session yields and how they replace the session's old
//! rows, inside the session's state transaction.

use std::borrow::Cow;
use std::collections::BTreeSet;

use anyhow::Result;

use super::VERSION;
use super::costs::{self, ModelPrice};
use super::extract::{Event, EventType};
use super::names::{Names, Uuid};
use super::tokens::Request;
use crate::args;
use crate::prices::PriceBook;
use crate::processor::Output;
use crate::store::sql::{Bulk, Db, Dialect, Table};
use crate::store::sql_int;
use crate::texts::Texts;

/// The file's `usage_file_summary` row (the session's, for a session of one
/// file).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub session_id: String,
    pub username: String,
    /// The session's first `cwd`.
    pub project: Option<String>,
    /// The Claude Code version of its first line that names one.
    pub claude_version: Option<String>,
    pub git_branch: Option<String>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub wall_seconds: f64,
    pub active_seconds: f64,
    pub user_prompts: u64,
    pub assistant_messages: u64,
    pub tool_calls: u64,
    pub tool_errors: u64,
    pub skill_invocations: u64,
    pub subagent_dispatches: u64,
    pub mcp_calls: u64,
    pub slash_commands: u64,
    pub distinct_tools: u64,
    pub distinct_skills: u64,
    pub primary_model: Option<String>,
    pub models: Vec<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_tokens: u64,
    pub cache_read_tokens: u64,
    pub malformed_lines: u64,
}

/// The rows one session yields.
#[derive(Debug)]
pub struct Rows {
    pub summary: Summary,
    events: Events,
    /// The prices of the models the requests name (see [`Rows::price`]).
    prices: Vec<ModelPrice>,
}

/// A session's events, de-duplicated, in file order.
#[derive(Debug)]
enum Events {
    Memory {
        events: Vec<Event>,
        requests: Vec<Request>,
        names: Names,
        /// Heap bytes of the events' own strings.
        heap: usize,
        /// Per event its id, uuid, parent uuid and time ([`TEXTS_PER_EVENT`]),
        /// then per request its time, as they are written.
        texts: Texts,
    },
    /// Too many to hold: in the session's scratch databases.
    Staged(Box<dyn Staged>),
}

/// Rows kept elsewhere than in memory until they are written (see
/// [`super::scratch`]).
pub(super) trait Staged: Send + std::fmt::Debug {
    fn len(&self) -> u64;
    /// Bytes held in memory at most.
    fn held(&self) -> u64;
    fn each(&self, f: &mut dyn FnMut(&EventRow<'_>) -> Result<()>) -> Result<()>;
    fn each_request(&self, f: &mut dyn FnMut(&Request) -> Result<()>) -> Result<()>;
    /// The models the requests name, each once; asked for once, to price
    /// them, and held no longer.
    fn take_models(&mut self) -> BTreeSet<String>;
}

/// The bytes of an event's SHA-256 its id keeps: 128 bits, as 32 hex
/// digits, make a collision among a team's events as likely as none.
pub(super) const ID_BYTES: usize = 16;

/// One `usage_events` row as it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow<'a> {
    pub id: Cow<'a, str>,
    pub event_uuid: Option<Cow<'a, str>>,
    pub parent_uuid: Option<Cow<'a, str>>,
    pub event_type: EventType,
    pub tool_name: Option<&'a str>,
    pub skill_name: Option<&'a str>,
    pub subagent_type: Option<&'a str>,
    pub command_name: Option<&'a str>,
    pub model: Option<&'a str>,
    pub cwd: Option<&'a str>,
    pub is_error: bool,
    pub is_sidechain: bool,
    pub occurred_at: Option<Cow<'a, str>>,
}

/// The texts [`Texts`] holds of each event held in memory.
const TEXTS_PER_EVENT: usize = 4;

impl Rows {
    pub(super) fn in_memory(
        events: Vec<Event>,
        ids: Vec<[u8; 32]>,
        requests: Vec<Request>,
        names: Names,
        heap: usize,
        summary: Summary,
    ) -> Rows {
        let texts = texts_of(&events, &ids, &requests);
        Rows {
            summary,
            prices: Vec::new(),
            events: Events::Memory {
                events,
                requests,
                names,
                heap,
                texts,
            },
        }
    }

    pub(super) fn staged(staged: Box<dyn Staged>, summary: Summary) -> Rows {
        Rows {
            summary,
            prices: Vec::new(),
            events: Events::Staged(staged),
        }
    }

    /// The prices resolved by [`Rows::price`].
    #[cfg(test)]
    pub(super) fn prices(&self) -> &[ModelPrice] {
        &self.prices
    }

    /// Resolves the price of each model the requests name, to be written
    /// with them.
    pub fn price(&mut self, book: &PriceBook) {
        self.prices = match &mut self.events {
            Events::Memory { requests, .. } => {
                let models: BTreeSet<&str> =
                    requests.iter().filter_map(|q| q.model.as_deref()).collect();
                costs::resolve(book, models)
            }
            // Gathered as they were staged: no second pass over them.
            Events::Staged(staged) => {
                costs::resolve(book, staged.take_models().iter().map(String::as_str))
            }
        };
    }

    /// How many events.
    pub fn len(&self) -> u64 {
        match &self.events {
            Events::Memory { events, .. } => events.len() as u64,
            Events::Staged(staged) => staged.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes these rows hold in memory, roughly.
    fn held_bytes(&self) -> u64 {
        match &self.events {
            Events::Memory {
                events,
                requests,
                names,
                heap,
                texts,
                ..
            } => {
                let requests = requests.len() * std::mem::size_of::<Request>();
                (events.len() * std::mem::size_of::<Event>()
                    + requests
                    + heap
                    + names.bytes()
                    + texts.bytes()) as u64
            }
            Events::Staged(staged) => staged.held(),
        }
    }

    /// Calls `f` with each request and the text of its time, in file order.
    pub(super) fn each_request_row(
        &self,
        mut f: impl FnMut(&Request, Option<Cow<'_, str>>) -> Result<()>,
    ) -> Result<()> {
        match &self.events {
            Events::Memory {
                events,
                requests,
                texts,
                ..
            } => {
                let first = events.len().saturating_mul(TEXTS_PER_EVENT);
                requests.iter().enumerate().try_for_each(|(i, q)| {
                    let at = texts.get(first.saturating_add(i)).map(Cow::Borrowed);
                    f(q, at)
                })
            }
            Events::Staged(staged) => {
                staged.each_request(&mut |q| f(q, q.at.map(|ms| format_ms(ms).into())))
            }
        }
    }

    /// Calls `f` with each event, in file order.
    pub fn each(&self, mut f: impl FnMut(&EventRow<'_>) -> Result<()>) -> Result<()> {
        let (events, n, texts) = match &self.events {
            Events::Memory {
                events,
                names,
                texts,
                ..
            } => (events, names, texts),
            Events::Staged(staged) => return staged.each(&mut f),
        };
        for (i, e) in events.iter().enumerate() {
            let text = |k: usize| {
                i.checked_mul(TEXTS_PER_EVENT)
                    .and_then(|first| texts.get(first.saturating_add(k)))
                    .map(Cow::Borrowed)
            };
            f(&EventRow {
                id: text(0).unwrap_or_default(),
                event_uuid: text(1),
                parent_uuid: text(2),
                event_type: e.event_type,
                tool_name: n.opt(e.tool_name),
                skill_name: n.opt(e.skill_name),
                subagent_type: n.opt(e.subagent_type),
                command_name: n.opt(e.command_name),
                model: n.opt(e.model),
                cwd: n.opt(e.cwd),
                is_error: e.is_error,
                is_sidechain: e.is_sidechain,
                occurred_at: text(3),
            })?;
        }
        Ok(())
    }
}

/// A file's summary row; `?1` is its name, `?30` the source.
const FILE_SUMMARY: &str = "INSERT INTO usage_file_summary (session, session_file, session_id,
     username, started_at, ended_at, wall_seconds, active_seconds, user_prompts,
     assistant_messages, tool_calls, tool_errors, skill_invocations, subagent_dispatches,
     mcp_calls, slash_commands, distinct_tools, distinct_skills, primary_model, models,
     input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens, malformed_lines,
     processor_version, project, claude_version, git_branch, source)
     VALUES (?29, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
         ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?30)";

/// [`clear`] and [`FILE_SUMMARY`] as one PostgreSQL statement: the events
/// and requests go, and the summary row is replaced in place; when the file
/// is its session's main transcript and the session has no other file, the
/// session's summary is that row too. Returns 1 then, else 0.
fn clear_and_upsert_pg() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let file_columns = FILE_SUMMARY
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map_or("", |(columns, _)| columns);
        let session = super::sessions::SUMMARY_COLUMNS;
        format!(
            "WITH e AS (DELETE FROM usage_events WHERE source = ?30 AND session_file = ?1),
                  r AS (DELETE FROM usage_requests WHERE source = ?30 AND session_file = ?1),
                  f AS ({FILE_SUMMARY}
                        ON CONFLICT (source, session_file) DO UPDATE SET {}
                        RETURNING *),
                  s AS (INSERT INTO usage_session_summary ({session}, source)
                        SELECT {session}, source FROM f
                        WHERE f.session_file = f.session
                          AND NOT EXISTS (SELECT 1 FROM usage_file_summary AS o
                                          WHERE o.source = f.source AND o.session = f.session
                                            AND o.session_file != f.session_file)
                        ON CONFLICT (source, session_file) DO UPDATE SET {}
                        RETURNING 1)
             SELECT count(*) FROM s",
            replace_all(Dialect::Postgres, file_columns),
            replace_all(Dialect::Postgres, session)
        )
    })
}

/// An upsert's `SET` that replaces a row keyed by (source, session_file)
/// with the one proposed: every column of `columns` (a comma-separated
/// list) but the key's.
pub(super) fn replace_all(d: Dialect, columns: &str) -> String {
    let set: Vec<&str> = columns
        .split(',')
        .map(str::trim)
        .filter(|c| !matches!(*c, "session_file" | "source"))
        .collect();
    let proposed: Vec<String> = set.iter().map(|c| format!("excluded.{c}")).collect();
    let row = match d {
        Dialect::Sqlite => "",
        Dialect::Postgres => "ROW",
    };
    format!("({}) = {row}({})", set.join(", "), proposed.join(", "))
}

/// Removes a file's events, requests and summary (not its session's
/// summary).
fn clear(db: &dyn Db, session_file: &str) -> Result<()> {
    for table in CLEARED {
        db.execute(&clear_sql(table), args![session_file, db.source()])?;
    }
    Ok(())
}

/// The tables that hold a file's rows.
pub(super) const CLEARED: [&str; 3] = ["usage_events", "usage_requests", "usage_file_summary"];

/// The statement that removes a file's rows (`?1`, in source `?2`) from
/// `table`.
pub(super) fn clear_sql(table: &str) -> String {
    format!("DELETE FROM {table} WHERE source = ?2 AND session_file = ?1")
}

/// Removes every row one session file holds.
pub(super) fn forget(db: &dyn Db, session_file: &str) -> Result<()> {
    clear(db, session_file)?;
    super::sessions::rebuild(db, &crate::scan::session_of(session_file))
}

impl Output for Rows {
    fn write(&self, db: &dyn Db, session_file: &str) -> Result<()> {
        // The file's old rows go first; on PostgreSQL with the summary's
        // upsert, in one statement (each is a round trip there).
        // On PostgreSQL the same statement also writes the session's summary
        // when this file is all of the session (the common case).
        let whole_session = match db.dialect() {
            Dialect::Sqlite => {
                clear(db, session_file)?;
                self.write_summary(db, session_file, FILE_SUMMARY)?;
                super::sessions::copy_if_alone(db, session_file)?
            }
            Dialect::Postgres => self.write_summary(db, session_file, clear_and_upsert_pg())? == 1,
        };
        // Events, requests and the prices of their models: one bulk write.
        let mut bulk = db.bulk(&[
            Table {
                name: "usage_events",
                columns: &EVENT_COLUMNS,
                keep_existing: false,
            },
            Table {
                name: "usage_requests",
                columns: &REQUEST_COLUMNS,
                keep_existing: false,
            },
            costs::TABLE,
        ])?;
        self.write_events(&mut *bulk, db.source(), session_file)?;
        self.write_requests(&mut *bulk, db.source(), session_file)?;
        costs::each_row(&self.prices, |row| bulk.push(PRICES, row))?;
        bulk.finish()?;
        if whole_session {
            return Ok(());
        }
        super::sessions::rebuild(db, &crate::scan::session_of(session_file))
    }

    fn held(&self) -> u64 {
        self.held_bytes()
    }
}

impl Rows {
    fn write_events(&self, bulk: &mut dyn Bulk, source: &str, session_file: &str) -> Result<()> {
        let agent = agent_of(session_file);
        let s = &self.summary;
        self.each(|e| {
            bulk.push(
                EVENTS,
                args![
                    e.id,
                    s.session_id,
                    session_file,
                    s.username,
                    e.event_uuid,
                    e.parent_uuid,
                    e.event_type.as_str(),
                    e.tool_name,
                    e.skill_name,
                    e.subagent_type,
                    e.command_name,
                    e.is_error,
                    e.model,
                    e.cwd,
                    e.is_sidechain,
                    e.occurred_at,
                    VERSION,
                    agent,
                    source
                ],
            )
        })?;
        Ok(())
    }

    fn write_requests(&self, bulk: &mut dyn Bulk, source: &str, session_file: &str) -> Result<()> {
        let agent = agent_of(session_file);
        let s = &self.summary;
        self.each_request_row(|q, at| {
            bulk.push(
                REQUESTS,
                args![
                    session_file,
                    sql_int(q.line),
                    s.session_id,
                    s.username,
                    q.model,
                    at,
                    sql_int(q.input_tokens),
                    sql_int(q.output_tokens),
                    sql_int(q.cache_creation_tokens),
                    sql_int(q.cache_creation_5m_tokens),
                    sql_int(q.cache_creation_1h_tokens),
                    sql_int(q.cache_read_tokens),
                    q.is_sidechain,
                    q.is_fast,
                    VERSION,
                    agent,
                    q.key,
                    source
                ],
            )
        })?;
        Ok(())
    }

    /// The file's summary row, by `sql` ([`FILE_SUMMARY`] or a statement
    /// around it).
    fn write_summary(&self, db: &dyn Db, session_file: &str, sql: &str) -> Result<i64> {
        let s = &self.summary;
        let session = crate::scan::session_of(session_file);
        let changed: Option<i64> = db.row(
            sql,
            args![
                session_file,
                s.session_id,
                s.username,
                s.started_at,
                s.ended_at,
                s.wall_seconds,
                s.active_seconds,
                sql_int(s.user_prompts),
                sql_int(s.assistant_messages),
                sql_int(s.tool_calls),
                sql_int(s.tool_errors),
                sql_int(s.skill_invocations),
                sql_int(s.subagent_dispatches),
                sql_int(s.mcp_calls),
                sql_int(s.slash_commands),
                sql_int(s.distinct_tools),
                sql_int(s.distinct_skills),
                s.primary_model,
                serde_json::to_string(&s.models).unwrap_or_else(|_| "[]".into()),
                sql_int(s.input_tokens),
                sql_int(s.output_tokens),
                sql_int(s.cache_creation_tokens),
                sql_int(s.cache_read_tokens),
                sql_int(s.malformed_lines),
                VERSION,
                s.project,
                s.claude_version,
                s.git_branch,
                session,
                db.source()
            ],
            |r| r.get(0),
        )?;
        Ok(changed.unwrap_or(0))
    }
}

/// The tables of a session's bulk write, by their place in it.
const EVENTS: usize = 0;
const REQUESTS: usize = 1;
const PRICES: usize = 2;

/// The `usage_events` columns a session's events are written to, in the
/// order [`Rows::write_events`] gives them.
const EVENT_COLUMNS: [&str; 19] = [
    "id",
    "session_id",
    "session_file",
    "username",
    "event_uuid",
    "parent_uuid",
    "event_type",
    "tool_name",
    "skill_name",
    "subagent_type",
    "command_name",
    "is_error",
    "model",
    "cwd",
    "is_sidechain",
    "occurred_at",
    "processor_version",
    "agent_id",
    "source",
];

/// The `usage_requests` columns, in the order [`Rows::write_requests`]
/// gives them.
const REQUEST_COLUMNS: [&str; 18] = [
    "session_file",
    "line",
    "session_id",
    "username",
    "model",
    "occurred_at",
    "input_tokens",
    "output_tokens",
    "cache_creation_tokens",
    "cache_creation_5m_tokens",
    "cache_creation_1h_tokens",
    "cache_read_tokens",
    "is_sidechain",
    "is_fast",
    "processor_version",
    "agent_id",
    "request_key",
    "source",
];

/// The agent a subagent transcript's name gives
/// (`<user>/<session>/subagents/agent-<id>.jsonl`); `None` for a session's
/// own file.
pub(super) fn agent_of(session_file: &str) -> Option<&str> {
    crate::scan::subagent(session_file).map(|(_, id)| id)
}

/// The texts of events and requests held in memory, as [`Texts`] of
/// [`Events::Memory`] holds them.
fn texts_of(events: &[Event], ids: &[[u8; 32]], requests: &[Request]) -> Texts {
    const EVENT_BYTES: usize = 2 * ID_BYTES + 36 + 36 + 24;
    // The texts of event i start at TEXTS_PER_EVENT * i: one id per event.
    debug_assert_eq!(ids.len(), events.len());
    let mut t = Texts::with_capacity(
        events
            .len()
            .saturating_mul(TEXTS_PER_EVENT)
            .saturating_add(requests.len()),
        events
            .len()
            .saturating_mul(EVENT_BYTES)
            .saturating_add(requests.len().saturating_mul(24)),
    );
    let time = |ms, buf: &mut String| crate::store::write_timestamp_ms(ms, buf);
    for (id, e) in ids.iter().zip(events) {
        t.push_with(Some(&id[..ID_BYTES]), crate::session::write_hex);
        t.push_with(e.event_uuid.as_ref(), Uuid::write_text);
        t.push_with(e.parent_uuid.as_ref(), Uuid::write_text);
        t.push_with(e.occurred_ms, time);
    }
    for q in requests {
        t.push_with(q.at, time);
    }
    t
}

/// Epoch milliseconds as the stored timestamp text.
pub(super) fn format_ms(ms: i64) -> String {
    crate::store::timestamp_ms(ms)
}
