//! The built-in `usage` processor: who uses which tools, skills, subagents,
//! MCP servers and slash commands, how often they fail, and how many tokens
//! and how much time each session spent.
//!
//! Each session yields `usage_events` rows and one `usage_session_summary`
//! row, written in the session's state transaction and replacing whatever the
//! session held before, so a grown or reprocessed session never leaves stale
//! or duplicate rows. Token totals count each API reply once, however many
//! lines Claude Code split it into (see `Tokens`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use anyhow::Result;
use rusqlite::{Connection, params};
use sha2::{Digest as _, Sha256};

use super::{Outcome, Output, Processor, Session};
use crate::store::timestamp;
use crate::transcript::{self, Block, Content, Line};

pub const NAME: &str = "usage";
/// Bump when the rows a session yields change: every session is reprocessed.
pub const VERSION: u32 = 1;
const CADENCE: Duration = Duration::from_secs(10 * 60);
/// Activity blocks split where two timestamps are further apart than this.
const IDLE_GAP_MS: i64 = 10 * 60 * 1000;
/// Lines of these types carry no usage events.
const NO_EVENTS: &[&str] = &[
    "system",
    "summary",
    "file-history-snapshot",
    "queue-operation",
    "progress",
];
const SYNTHETIC_MODEL: &str = "<synthetic>";

pub struct Usage {
    /// Folder key -> identity (e.g. email) from the identity map.
    identities: HashMap<String, String>,
}

impl Usage {
    pub fn new(identities: HashMap<String, String>) -> Usage {
        Usage { identities }
    }
}

impl Processor for Usage {
    fn name(&self) -> &str {
        NAME
    }

    fn kind(&self) -> &'static str {
        "builtin"
    }

    fn version(&self) -> u32 {
        VERSION
    }

    fn cadence(&self) -> Duration {
        CADENCE
    }

    fn process(&self, session: &Session) -> Result<Outcome> {
        let mut acc = Accumulator::default();
        let mut lines = session.lines()?;
        while let Some(line) = lines.next_line()? {
            acc.add(line);
        }
        acc.malformed += lines.oversized();
        crate::failpoint::hit("in-processor");
        let username = self
            .identities
            .get(session.key)
            .cloned()
            .unwrap_or_else(|| session.key.to_owned());
        let rows = acc.finish(session.file, &username);
        Ok(Outcome {
            items: rows.events.len() as u64,
            output: Some(Box::new(rows)),
        })
    }
}

/// Names that repeat across a session's events (tools, skills, models,
/// folders), stored once: an event holds their index.
#[derive(Debug, Default)]
pub struct Names {
    index: HashMap<Box<str>, u32>,
    list: Vec<Box<str>>,
}

/// An index into [`Names`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(u32);

impl Names {
    fn intern(&mut self, text: &str) -> Name {
        if let Some(&i) = self.index.get(text) {
            return Name(i);
        }
        let i = self.list.len() as u32;
        self.list.push(text.into());
        self.index.insert(text.into(), i);
        Name(i)
    }

    pub fn get(&self, name: Name) -> &str {
        &self.list[name.0 as usize]
    }

    fn opt(&self, name: Option<Name>) -> Option<&str> {
        name.map(|n| self.get(n))
    }
}

/// A line's `uuid`: 16 bytes when it is a canonical lowercase UUID (as
/// Claude Code writes them), the text itself otherwise. Written back as the
/// same text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uuid {
    Canonical([u8; 16]),
    Other(Box<str>),
}

impl Uuid {
    fn new(text: &str) -> Uuid {
        let b = text.as_bytes();
        let canonical = b.len() == 36
            && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
            && b.iter().enumerate().all(|(i, c)| {
                matches!(i, 8 | 13 | 18 | 23) || matches!(c, b'0'..=b'9' | b'a'..=b'f')
            });
        if !canonical {
            return Uuid::Other(text.into());
        }
        let mut out = [0u8; 16];
        let digits = b.iter().filter(|&&c| c != b'-');
        for (i, c) in digits.enumerate() {
            let v = if c.is_ascii_digit() {
                c - b'0'
            } else {
                c - b'a' + 10
            };
            out[i / 2] |= v << if i % 2 == 0 { 4 } else { 0 };
        }
        Uuid::Canonical(out)
    }

    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Uuid::Other(s) => std::borrow::Cow::Borrowed(s),
            Uuid::Canonical(b) => {
                let h = crate::session::hex(b);
                std::borrow::Cow::Owned(format!(
                    "{}-{}-{}-{}-{}",
                    &h[..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..]
                ))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    ToolUse,
    Subagent,
    McpCall,
    SlashCommand,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ToolUse => "tool_use",
            EventType::Subagent => "subagent",
            EventType::McpCall => "mcp_call",
            EventType::SlashCommand => "slash_command",
        }
    }
}

/// One usage event, kept compact: a session can hold a hundred thousand.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_uuid: Option<Uuid>,
    pub parent_uuid: Option<Uuid>,
    pub tool_id: Option<Box<str>>,
    pub event_type: EventType,
    pub tool_name: Option<Name>,
    pub skill_name: Option<Name>,
    pub subagent_type: Option<Name>,
    pub command_name: Option<Name>,
    pub model: Option<Name>,
    pub cwd: Option<Name>,
    pub is_error: bool,
    pub is_sidechain: bool,
    /// Epoch milliseconds of the line's timestamp.
    pub occurred_ms: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub session_id: String,
    pub username: String,
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
    /// Events in file order, without duplicates...
    pub events: Vec<Event>,
    /// ...and their ids (SHA-256).
    pub ids: Vec<[u8; 32]>,
    pub names: Names,
    pub summary: Summary,
}

/// One API reply's usage, as the line with the largest total reported it.
#[derive(Debug)]
struct Reply {
    /// A hash of `requestId`: only ever compared within one `message.id`.
    request: Option<u64>,
    sidechain: bool,
    usage: transcript::Usage,
}

/// The lines that share one `message.id`.
#[derive(Debug)]
struct Group {
    model: Option<Name>,
    replies: Vec<Reply>,
}

/// Token accounting. Claude Code writes one API reply as several lines, one
/// per content block, each repeating `message.id`, `requestId` and the whole
/// usage block, with a partial `output_tokens` on the earlier lines. Each
/// (`message.id`, `requestId`) counts once, from its line with the largest
/// total; a repeated `message.id` with another `requestId` is the same reply
/// when either line is a sidechain line; a line without `message.id` counts
/// on its own.
#[derive(Debug, Default)]
struct Tokens {
    /// Keyed by a 128-bit hash of `message.id`: no allocation per reply, and
    /// a collision is as likely as guessing a random 128-bit key.
    groups: HashMap<u128, Group>,
    /// Usage of lines without `message.id`.
    anonymous: Vec<transcript::Usage>,
}

impl Group {
    fn add(&mut self, request_id: Option<&str>, sidechain: bool, usage: transcript::Usage) {
        let request = request_id.map(|r| hash128(r) as u64);
        let same = self
            .replies
            .iter_mut()
            .find(|e| e.request == request || e.sidechain || sidechain);
        match same {
            Some(e) => {
                if usage.total() > e.usage.total() {
                    e.usage = usage;
                }
                e.sidechain |= sidechain;
            }
            None => self.replies.push(Reply {
                request,
                sidechain,
                usage,
            }),
        }
    }
}

impl Tokens {
    fn totals(&self) -> [u64; 4] {
        let all = self
            .groups
            .values()
            .flat_map(|g| &g.replies)
            .map(|r| &r.usage)
            .chain(&self.anonymous);
        let mut t = [0u64; 4];
        for u in all {
            t[0] += u.input_tokens.0;
            t[1] += u.output_tokens.0;
            t[2] += u.cache_creation_input_tokens.0;
            t[3] += u.cache_read_input_tokens.0;
        }
        t
    }
}

#[derive(Debug, Default)]
struct Accumulator {
    session_id: Option<String>,
    /// Milliseconds since the epoch of every line's timestamp.
    times: Vec<i64>,
    events: Vec<Event>,
    names: Names,
    errored_tool_ids: HashSet<Box<str>>,
    user_prompts: u64,
    tokens: Tokens,
    /// Models of assistant lines without `message.id`: each its own reply.
    anonymous_replies: Vec<Option<Name>>,
    malformed: u64,
}

impl Accumulator {
    fn add(&mut self, raw: &[u8]) {
        if raw.trim_ascii().is_empty() {
            return;
        }
        let Some(line) = transcript::parse(raw) else {
            self.malformed += 1;
            return;
        };
        if self.session_id.is_none() {
            self.session_id = line.session_id.get().map(str::to_owned);
        }
        let at = line.timestamp.get().and_then(parse_ms);
        if let Some(ms) = at {
            self.times.push(ms);
        }
        // Legacy tool result lines can flag an error from anywhere in the file.
        if line.is_error.0
            && let Some(id) = line.tool_use_id.get().or(line.tool_use_id_camel.get())
        {
            self.errored_tool_ids.insert(id.into());
        }
        let kind = line.role().unwrap_or("");
        if NO_EVENTS.contains(&kind) {
            return;
        }
        match kind {
            "assistant" => self.assistant(&line, at),
            "user" => self.user(&line, at),
            _ => {}
        }
    }

    fn assistant(&mut self, line: &Line, at: Option<i64>) {
        let Some(message) = &line.message.0 else {
            self.anonymous_replies.push(None);
            return;
        };
        let model = message.model.get().map(|m| self.names.intern(m));
        match message.id.get() {
            Some(id) => {
                let group = self.tokens.groups.entry(hash128(id)).or_insert(Group {
                    model,
                    replies: Vec::new(),
                });
                if let Some(usage) = message.usage.0 {
                    group.add(line.request_id.get(), line.is_sidechain.0, usage);
                }
            }
            None => {
                self.anonymous_replies.push(model);
                if let Some(usage) = message.usage.0 {
                    self.tokens.anonymous.push(usage);
                }
            }
        }
        let Content::Blocks(blocks) = &message.content else {
            return;
        };
        for block in blocks {
            if block.kind.get() != Some("tool_use") {
                continue;
            }
            let Some(name) = block.name.get() else {
                continue;
            };
            let input = block.input.0.as_ref();
            let mut event = Event {
                event_type: EventType::ToolUse,
                tool_id: block.id.get().map(Into::into),
                tool_name: Some(self.names.intern(name)),
                model,
                ..self.event_base(line, at)
            };
            if name == "Skill" {
                event.skill_name = input
                    .and_then(|i| i.skill.get().or(i.name.get()))
                    .map(|s| self.names.intern(s));
            } else if name == "Task" || name == "Agent" {
                event.event_type = EventType::Subagent;
                let kind = input.and_then(|i| i.subagent_type.get()).unwrap_or(name);
                event.subagent_type = Some(self.names.intern(kind));
            } else if name.starts_with("mcp__") {
                event.event_type = EventType::McpCall;
            }
            self.events.push(event);
        }
    }

    fn user(&mut self, line: &Line, at: Option<i64>) {
        let mut human_text = false;
        let mut commands = Vec::new();
        let mut text = |t: &str| {
            human_text |= !t.trim().is_empty();
            commands.extend(slash_commands(t));
        };
        match line.content() {
            Content::Text(t) => text(t),
            Content::Blocks(blocks) => {
                for block in blocks {
                    match block.kind.get() {
                        Some("text") => text(block.text.get().unwrap_or("")),
                        Some("tool_result") => self.tool_result(block),
                        _ => {}
                    }
                }
            }
            Content::None => {}
        }
        if human_text && !line.is_meta.0 {
            self.user_prompts += 1;
        }
        for name in commands {
            let event = Event {
                event_type: EventType::SlashCommand,
                command_name: Some(self.names.intern(&name)),
                ..self.event_base(line, at)
            };
            self.events.push(event);
        }
    }

    fn tool_result(&mut self, block: &Block) {
        if block.is_error.0
            && let Some(id) = block.tool_use_id.get()
        {
            self.errored_tool_ids.insert(id.into());
        }
    }

    fn event_base(&mut self, line: &Line, at: Option<i64>) -> Event {
        Event {
            event_uuid: line.uuid.get().map(Uuid::new),
            parent_uuid: line.parent_uuid.get().map(Uuid::new),
            tool_id: None,
            event_type: EventType::ToolUse,
            tool_name: None,
            skill_name: None,
            subagent_type: None,
            command_name: None,
            model: None,
            cwd: line.cwd.get().map(|c| self.names.intern(c)),
            is_error: false,
            is_sidechain: line.is_sidechain.0,
            occurred_ms: at,
        }
    }

    fn finish(mut self, session_file: &str, username: &str) -> Rows {
        let session_id = self.session_id.take().unwrap_or_else(|| {
            let name = session_file.rsplit('/').next().unwrap_or(session_file);
            name.strip_suffix(".jsonl").unwrap_or(name).to_owned()
        });
        // One event per tool use id (the first), then per event id.
        let mut events = std::mem::take(&mut self.events);
        let keep = first_of_each(events.len(), |i| events[i].tool_id.as_ref());
        let mut kept = keep.iter();
        events.retain(|_| *kept.next().unwrap_or(&true));
        let mut ids: Vec<[u8; 32]> = events
            .iter()
            .map(|e| event_id(&session_id, e, &self.names))
            .collect();
        let keep = first_of_each(ids.len(), |i| Some(&ids[i]));
        let mut kept = keep.iter();
        events.retain(|_| *kept.next().unwrap_or(&true));
        let mut kept = keep.iter();
        ids.retain(|_| *kept.next().unwrap_or(&true));
        for e in &mut events {
            e.is_error = e
                .tool_id
                .as_ref()
                .is_some_and(|id| self.errored_tool_ids.contains(id));
        }
        let count = |t: EventType| events.iter().filter(|e| e.event_type == t).count() as u64;
        let distinct = |f: fn(&Event) -> Option<Name>| {
            events.iter().filter_map(f).collect::<HashSet<_>>().len() as u64
        };
        let (primary_model, models) = self.models();
        let [input, output, creation, read] = self.tokens.totals();
        self.times.sort_unstable();
        let summary = Summary {
            session_id,
            username: username.to_owned(),
            started_at: self.times.first().map(|&ms| format_ms(ms)),
            ended_at: self.times.last().map(|&ms| format_ms(ms)),
            wall_seconds: match (self.times.first(), self.times.last()) {
                (Some(a), Some(b)) => (b - a) as f64 / 1000.0,
                _ => 0.0,
            },
            active_seconds: active_ms(&self.times) as f64 / 1000.0,
            user_prompts: self.user_prompts,
            assistant_messages: (self.tokens.groups.len() + self.anonymous_replies.len()) as u64,
            tool_calls: count(EventType::ToolUse),
            tool_errors: events
                .iter()
                .filter(|e| e.is_error && e.event_type != EventType::SlashCommand)
                .count() as u64,
            skill_invocations: events.iter().filter(|e| e.skill_name.is_some()).count() as u64,
            subagent_dispatches: count(EventType::Subagent),
            mcp_calls: count(EventType::McpCall),
            slash_commands: count(EventType::SlashCommand),
            distinct_tools: distinct(|e| e.tool_name),
            distinct_skills: distinct(|e| e.skill_name),
            primary_model,
            models,
            input_tokens: input,
            output_tokens: output,
            cache_creation_tokens: creation,
            cache_read_tokens: read,
            malformed_lines: self.malformed,
        };
        Rows {
            events,
            ids,
            names: self.names,
            summary,
        }
    }

    /// The most frequent model over distinct replies (ties to the name that
    /// sorts first), and every model used, sorted; `<synthetic>` ignored.
    fn models(&self) -> (Option<String>, Vec<String>) {
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        let reply_models = self
            .tokens
            .groups
            .values()
            .map(|g| g.model)
            .chain(self.anonymous_replies.iter().copied());
        for model in reply_models.flatten() {
            let model = self.names.get(model);
            if model != SYNTHETIC_MODEL {
                *counts.entry(model).or_default() += 1;
            }
        }
        // max_by_key keeps the last maximum; iterate in reverse name order so
        // that the last one is the first name.
        let primary = counts
            .iter()
            .rev()
            .max_by_key(|(_, n)| **n)
            .map(|(m, _)| m.to_string());
        (primary, counts.keys().map(|m| m.to_string()).collect())
    }
}

/// Marks, for `n` items, the first of each run of equal keys (items without a
/// key are all kept). Sorting indices instead of hashing keys costs 4 bytes
/// an item, whatever the keys.
fn first_of_each<'k, K: Ord + 'k>(n: usize, key: impl Fn(usize) -> Option<&'k K>) -> Vec<bool> {
    let mut keep = vec![true; n];
    let mut order: Vec<u32> = (0..n as u32)
        .filter(|&i| key(i as usize).is_some())
        .collect();
    order.sort_by(|&a, &b| key(a as usize).cmp(&key(b as usize)).then(a.cmp(&b)));
    for pair in order.windows(2) {
        if key(pair[0] as usize) == key(pair[1] as usize) {
            keep[pair[1] as usize] = false;
        }
    }
    keep
}

/// Every `<command-name>/NAME</command-name>` tag in a user text. The slash
/// is optional (older Claude Code wrote bare names); NAME must match
/// `[A-Za-z][\w:-]*` exactly, so prose such as "/foo" is never a command.
pub fn slash_commands(text: &str) -> Vec<String> {
    const OPEN: &str = "<command-name>";
    const CLOSE: &str = "</command-name>";
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        rest = &rest[start + OPEN.len()..];
        let Some(end) = rest.find(CLOSE) else { break };
        let inner = rest[..end].trim();
        let name = inner.strip_prefix('/').unwrap_or(inner);
        let mut chars = name.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_alphanumeric() || c == '_' || c == ':' || c == '-');
        if valid {
            found.push(name.to_owned());
        }
        rest = &rest[end + CLOSE.len()..];
    }
    found
}

/// A 128-bit hash of a key, from two independent SipHash runs.
fn hash128(key: &str) -> u128 {
    use std::hash::{Hash, Hasher};
    let half = |salt: u8| {
        let mut h = std::hash::DefaultHasher::new();
        salt.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    };
    (u128::from(half(1)) << 64) | u128::from(half(2))
}

/// Stable SHA-256 of `session_id|event_uuid|tool_id|event_type|tool_name|command_name`.
fn event_id(session_id: &str, e: &Event, names: &Names) -> [u8; 32] {
    let uuid = e.event_uuid.as_ref().map(Uuid::text);
    let key = [
        session_id,
        uuid.as_deref().unwrap_or(""),
        e.tool_id.as_deref().unwrap_or(""),
        e.event_type.as_str(),
        names.opt(e.tool_name).unwrap_or(""),
        names.opt(e.command_name).unwrap_or(""),
    ]
    .join("|");
    Sha256::digest(key.as_bytes()).into()
}

/// Parses an RFC 3339 timestamp into epoch milliseconds.
fn parse_ms(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(timestamp)
        .unwrap_or_default()
}

/// Sums the spans of activity blocks in sorted timestamps, splitting where
/// two consecutive timestamps are more than [`IDLE_GAP_MS`] apart.
fn active_ms(sorted: &[i64]) -> i64 {
    let mut total = 0;
    let mut block_start = match sorted.first() {
        Some(&t) => t,
        None => return 0,
    };
    for pair in sorted.windows(2) {
        if pair[1] - pair[0] > IDLE_GAP_MS {
            total += pair[0] - block_start;
            block_start = pair[1];
        }
    }
    total + sorted[sorted.len() - 1] - block_start
}

impl Output for Rows {
    fn write(&self, db: &Connection, session_file: &str) -> rusqlite::Result<()> {
        db.prepare_cached("DELETE FROM usage_events WHERE session_file = ?1")?
            .execute([session_file])?;
        let s = &self.summary;
        let mut insert = db.prepare_cached(
            "INSERT INTO usage_events (id, session_id, session_file, username, event_uuid,
                 parent_uuid, event_type, tool_name, skill_name, subagent_type, command_name,
                 is_error, model, cwd, is_sidechain, occurred_at, processor_version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        )?;
        let n = &self.names;
        for (id, e) in self.ids.iter().zip(&self.events) {
            insert.execute(params![
                crate::session::hex(id),
                s.session_id,
                session_file,
                s.username,
                e.event_uuid.as_ref().map(Uuid::text),
                e.parent_uuid.as_ref().map(Uuid::text),
                e.event_type.as_str(),
                n.opt(e.tool_name),
                n.opt(e.skill_name),
                n.opt(e.subagent_type),
                n.opt(e.command_name),
                e.is_error,
                n.opt(e.model),
                n.opt(e.cwd),
                e.is_sidechain,
                e.occurred_ms.map(format_ms),
                VERSION
            ])?;
        }
        db.prepare_cached(
            "INSERT OR REPLACE INTO usage_session_summary (session_file, session_id, username,
                 started_at, ended_at, wall_seconds, active_seconds, user_prompts,
                 assistant_messages, tool_calls, tool_errors, skill_invocations,
                 subagent_dispatches, mcp_calls, slash_commands, distinct_tools, distinct_skills,
                 primary_model, models, input_tokens, output_tokens, cache_creation_tokens,
                 cache_read_tokens, malformed_lines, processor_version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)",
        )?
        .execute(params![
            session_file,
            s.session_id,
            s.username,
            s.started_at,
            s.ended_at,
            s.wall_seconds,
            s.active_seconds,
            s.user_prompts as i64,
            s.assistant_messages as i64,
            s.tool_calls as i64,
            s.tool_errors as i64,
            s.skill_invocations as i64,
            s.subagent_dispatches as i64,
            s.mcp_calls as i64,
            s.slash_commands as i64,
            s.distinct_tools as i64,
            s.distinct_skills as i64,
            s.primary_model,
            serde_json::to_string(&s.models).unwrap_or_else(|_| "[]".into()),
            s.input_tokens as i64,
            s.output_tokens as i64,
            s.cache_creation_tokens as i64,
            s.cache_read_tokens as i64,
            s.malformed_lines as i64,
            VERSION
        ])?;
        Ok(())
    }
}

/// Reads a session's lines into rows (for tests and the fuzz target).
pub fn rows_from_lines<'a>(
    lines: impl IntoIterator<Item = &'a [u8]>,
    session_file: &str,
    username: &str,
) -> Rows {
    let mut acc = Accumulator::default();
    for line in lines {
        acc.add(line);
    }
    acc.finish(session_file, username)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slash_command_tags_only() {
        assert_eq!(
            slash_commands(
                "<command-name>/compound:debug</command-name> and <command-name>init</command-name>"
            ),
            vec!["compound:debug", "init"]
        );
        assert!(slash_commands("please run /foo now").is_empty());
        assert!(slash_commands("<command-name>/1bad</command-name>").is_empty());
        assert!(slash_commands("<command-name>/a b</command-name>").is_empty());
        assert!(slash_commands("<command-name>/open").is_empty());
    }

    #[test]
    fn active_time_splits_on_idle_gaps() {
        let min = 60_000;
        assert_eq!(active_ms(&[]), 0);
        assert_eq!(active_ms(&[5]), 0);
        assert_eq!(active_ms(&[0, 5 * min, 10 * min]), 10 * min);
        // A gap of exactly 10 minutes keeps the block; more splits it.
        assert_eq!(active_ms(&[0, 2 * min, 13 * min, 14 * min]), 3 * min);
    }

    #[test]
    fn tokens_count_each_reply_once_from_its_largest_line() {
        let usage = |i, o| transcript::Usage {
            input_tokens: transcript::Num(i),
            output_tokens: transcript::Num(o),
            ..Default::default()
        };
        let group = || Group {
            model: None,
            replies: Vec::new(),
        };
        let (mut m1, mut m2) = (group(), group());
        m1.add(Some("r1"), false, usage(10, 1));
        m1.add(Some("r1"), false, usage(10, 30));
        m1.add(Some("r1"), false, usage(10, 5));
        // Same message id, another request: a different reply...
        m1.add(Some("r2"), false, usage(1, 1));
        // ...unless a sidechain line is involved.
        m2.add(Some("r3"), false, usage(2, 2));
        m2.add(Some("r4"), true, usage(2, 3));
        let mut t = Tokens::default();
        t.groups.insert(hash128("m1"), m1);
        t.groups.insert(hash128("m2"), m2);
        t.anonymous.push(usage(7, 7));
        t.anonymous.push(usage(7, 7));
        assert_eq!(t.totals(), [10 + 1 + 2 + 14, 30 + 1 + 3 + 14, 0, 0]);
    }

    #[test]
    fn uuids_round_trip() {
        for text in [
            "0b2ac3a5-7c4f-4e0e-9d3b-5f1b2c3d4e5f",
            "0B2AC3A5-7C4F-4E0E-9D3B-5F1B2C3D4E5F",
            "u1",
            "",
            "0b2ac3a5-7c4f-4e0e-9d3b-5f1b2c3d4e5",
            "0b2ac3a5x7c4f-4e0e-9d3b-5f1b2c3d4e5f",
        ] {
            assert_eq!(Uuid::new(text).text(), text);
        }
        assert!(matches!(
            Uuid::new("0b2ac3a5-7c4f-4e0e-9d3b-5f1b2c3d4e5f"),
            Uuid::Canonical(_)
        ));
    }
}
