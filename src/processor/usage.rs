//! The built-in `usage` processor: who uses which tools, skills, subagents,
//! MCP servers and slash commands, how often they fail, and how many tokens
//! and how much time each session spent.
//!
//! Each session yields `usage_events` rows and one `usage_session_summary`
//! row, written in the session's state transaction and replacing whatever the
//! session held before, so a grown or reprocessed session never leaves stale
//! or duplicate rows. Token totals count each API reply once, however many
//! lines Claude Code split it into (see [`Tokens`]).

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

/// One usage event, before its id is known.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub id: String,
    pub event_uuid: Option<String>,
    pub parent_uuid: Option<String>,
    pub event_type: &'static str,
    pub tool_id: Option<String>,
    pub tool_name: Option<String>,
    pub skill_name: Option<String>,
    pub subagent_type: Option<String>,
    pub command_name: Option<String>,
    pub is_error: bool,
    pub model: Option<String>,
    pub cwd: Option<String>,
    pub is_sidechain: bool,
    pub occurred_at: Option<String>,
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
    pub events: Vec<Event>,
    pub summary: Summary,
}

/// One API reply's usage, as the line with the largest total reported it.
#[derive(Debug)]
struct Reply {
    request_id: Option<String>,
    sidechain: bool,
    usage: transcript::Usage,
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
    replies: HashMap<String, Vec<Reply>>,
    anonymous: Vec<transcript::Usage>,
}

impl Tokens {
    fn add(
        &mut self,
        message_id: Option<&str>,
        request_id: Option<&str>,
        sidechain: bool,
        usage: transcript::Usage,
    ) {
        let Some(id) = message_id else {
            self.anonymous.push(usage);
            return;
        };
        let entries = self.replies.entry(id.to_owned()).or_default();
        let same = entries
            .iter_mut()
            .find(|e| e.request_id.as_deref() == request_id || e.sidechain || sidechain);
        match same {
            Some(e) => {
                if usage.total() > e.usage.total() {
                    e.usage = usage;
                }
                e.sidechain |= sidechain;
            }
            None => entries.push(Reply {
                request_id: request_id.map(str::to_owned),
                sidechain,
                usage,
            }),
        }
    }

    fn totals(&self) -> [u64; 4] {
        let all = self
            .replies
            .values()
            .flatten()
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
    tool_ids: HashSet<String>,
    errored_tool_ids: HashSet<String>,
    user_prompts: u64,
    tokens: Tokens,
    /// Model of each distinct reply (`message.id`, or a line without one).
    reply_models: HashMap<String, Option<String>>,
    anonymous_replies: Vec<Option<String>>,
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
        let at = line.timestamp.get().and_then(parse_time);
        if let Some((ms, _)) = &at {
            self.times.push(*ms);
        }
        // Legacy tool result lines can flag an error from anywhere in the file.
        if line.is_error.0
            && let Some(id) = line.tool_use_id.get().or(line.tool_use_id_camel.get())
        {
            self.errored_tool_ids.insert(id.to_owned());
        }
        let kind = line.role().unwrap_or("");
        if NO_EVENTS.contains(&kind) {
            return;
        }
        let occurred_at = at.map(|(_, text)| text);
        match kind {
            "assistant" => self.assistant(&line, occurred_at),
            "user" => self.user(&line, occurred_at),
            _ => {}
        }
    }

    fn assistant(&mut self, line: &Line, occurred_at: Option<String>) {
        let Some(message) = &line.message.0 else {
            self.anonymous_replies.push(None);
            return;
        };
        let model = message.model.get().map(str::to_owned);
        match message.id.get() {
            Some(id) => {
                self.reply_models
                    .entry(id.to_owned())
                    .or_insert_with(|| model.clone());
            }
            None => self.anonymous_replies.push(model.clone()),
        }
        if let Some(usage) = message.usage.0 {
            self.tokens.add(
                message.id.get(),
                line.request_id.get(),
                line.is_sidechain.0,
                usage,
            );
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
            if let Some(id) = block.id.get()
                && !self.tool_ids.insert(id.to_owned())
            {
                continue; // the same tool use repeated on a later line
            }
            let input = block.input.0.as_ref();
            let mut event = Event {
                event_type: "tool_use",
                tool_id: block.id.get().map(str::to_owned),
                tool_name: Some(name.to_owned()),
                model: model.clone(),
                ..self.event_base(line, occurred_at.clone())
            };
            if name == "Skill" {
                event.skill_name = input
                    .and_then(|i| i.skill.get().or(i.name.get()))
                    .map(str::to_owned);
            } else if name == "Task" || name == "Agent" {
                event.event_type = "subagent";
                event.subagent_type = Some(
                    input
                        .and_then(|i| i.subagent_type.get())
                        .unwrap_or(name)
                        .to_owned(),
                );
            } else if name.starts_with("mcp__") {
                event.event_type = "mcp_call";
            }
            self.events.push(event);
        }
    }

    fn user(&mut self, line: &Line, occurred_at: Option<String>) {
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
                event_type: "slash_command",
                command_name: Some(name),
                ..self.event_base(line, occurred_at.clone())
            };
            self.events.push(event);
        }
    }

    fn tool_result(&mut self, block: &Block) {
        if block.is_error.0
            && let Some(id) = block.tool_use_id.get()
        {
            self.errored_tool_ids.insert(id.to_owned());
        }
    }

    fn event_base(&self, line: &Line, occurred_at: Option<String>) -> Event {
        Event {
            event_uuid: line.uuid.get().map(str::to_owned),
            parent_uuid: line.parent_uuid.get().map(str::to_owned),
            cwd: line.cwd.get().map(str::to_owned),
            is_sidechain: line.is_sidechain.0,
            occurred_at,
            ..Event::default()
        }
    }

    fn finish(mut self, session_file: &str, username: &str) -> Rows {
        let session_id = self.session_id.take().unwrap_or_else(|| {
            let name = session_file.rsplit('/').next().unwrap_or(session_file);
            name.strip_suffix(".jsonl").unwrap_or(name).to_owned()
        });
        let mut seen = HashSet::new();
        let mut events = Vec::with_capacity(self.events.len());
        for mut e in std::mem::take(&mut self.events) {
            e.is_error = e
                .tool_id
                .as_ref()
                .is_some_and(|id| self.errored_tool_ids.contains(id));
            e.id = event_id(&session_id, &e);
            if seen.insert(e.id.clone()) {
                events.push(e);
            }
        }
        let count = |t: &str| events.iter().filter(|e| e.event_type == t).count() as u64;
        let distinct = |f: fn(&Event) -> Option<&String>| {
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
            assistant_messages: (self.reply_models.len() + self.anonymous_replies.len()) as u64,
            tool_calls: count("tool_use"),
            tool_errors: events
                .iter()
                .filter(|e| e.is_error && e.event_type != "slash_command")
                .count() as u64,
            skill_invocations: events.iter().filter(|e| e.skill_name.is_some()).count() as u64,
            subagent_dispatches: count("subagent"),
            mcp_calls: count("mcp_call"),
            slash_commands: count("slash_command"),
            distinct_tools: distinct(|e| e.tool_name.as_ref()),
            distinct_skills: distinct(|e| e.skill_name.as_ref()),
            primary_model,
            models,
            input_tokens: input,
            output_tokens: output,
            cache_creation_tokens: creation,
            cache_read_tokens: read,
            malformed_lines: self.malformed,
        };
        Rows { events, summary }
    }

    /// The most frequent model over distinct replies (ties to the name that
    /// sorts first), and every model used, sorted; `<synthetic>` ignored.
    fn models(&self) -> (Option<String>, Vec<String>) {
        let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
        for model in self
            .reply_models
            .values()
            .chain(&self.anonymous_replies)
            .flatten()
        {
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

/// Stable hex SHA-256 of `session_id|event_uuid|tool_id|event_type|tool_name|command_name`.
fn event_id(session_id: &str, e: &Event) -> String {
    let key = [
        session_id,
        e.event_uuid.as_deref().unwrap_or(""),
        e.tool_id.as_deref().unwrap_or(""),
        e.event_type,
        e.tool_name.as_deref().unwrap_or(""),
        e.command_name.as_deref().unwrap_or(""),
    ]
    .join("|");
    crate::session::hex(&Sha256::digest(key.as_bytes()))
}

/// Parses an RFC 3339 timestamp into epoch milliseconds and its UTC text.
fn parse_time(text: &str) -> Option<(i64, String)> {
    let t = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    let utc = t.with_timezone(&chrono::Utc);
    Some((utc.timestamp_millis(), timestamp(utc)))
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
        for e in &self.events {
            insert.execute(params![
                e.id,
                s.session_id,
                session_file,
                s.username,
                e.event_uuid,
                e.parent_uuid,
                e.event_type,
                e.tool_name,
                e.skill_name,
                e.subagent_type,
                e.command_name,
                e.is_error,
                e.model,
                e.cwd,
                e.is_sidechain,
                e.occurred_at,
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
        let mut t = Tokens::default();
        t.add(Some("m1"), Some("r1"), false, usage(10, 1));
        t.add(Some("m1"), Some("r1"), false, usage(10, 30));
        t.add(Some("m1"), Some("r1"), false, usage(10, 5));
        // Same message id, another request: a different reply...
        t.add(Some("m1"), Some("r2"), false, usage(1, 1));
        // ...unless a sidechain line is involved.
        t.add(Some("m2"), Some("r3"), false, usage(2, 2));
        t.add(Some("m2"), Some("r4"), true, usage(2, 3));
        t.add(None, None, false, usage(7, 7));
        t.add(None, None, false, usage(7, 7));
        assert_eq!(t.totals(), [10 + 1 + 2 + 14, 30 + 1 + 3 + 14, 0, 0]);
    }
}
