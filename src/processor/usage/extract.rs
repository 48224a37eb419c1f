//! Extraction: one transcript line at a time into events, token lines,
//! timestamps and counts, in memory bounded by a limit (see [`Accumulator`]).

use std::collections::HashSet;

use super::NO_EVENTS;
use super::names::{Name, Names, Uuid};
use super::tokens::{Counted, TokenLine, anonymous, hash128};
use crate::transcript::{self, Block, Content, Line};

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

    /// The type [`EventType::as_str`] wrote.
    pub fn parse(text: &str) -> Option<EventType> {
        [
            EventType::ToolUse,
            EventType::Subagent,
            EventType::McpCall,
            EventType::SlashCommand,
        ]
        .into_iter()
        .find(|t| t.as_str() == text)
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

/// Everything a session's lines have yielded so far, in memory; the
/// [`super::Reader`] moves it to disk whenever [`Accumulator::held`] grows
/// past its limit.
#[derive(Debug)]
pub(super) struct Accumulator {
    pub(super) session_id: Option<String>,
    /// The first `cwd`, Claude Code `version` and `gitBranch` of the file.
    pub(super) project: Option<String>,
    pub(super) version: Option<String>,
    pub(super) git_branch: Option<String>,
    /// Milliseconds since the epoch of every line's timestamp.
    pub(super) times: Vec<i64>,
    pub(super) events: Vec<Event>,
    pub(super) names: Names,
    pub(super) errored_tool_ids: HashSet<Box<str>>,
    /// Lines whose slash command loaded a skill: the `uuid` a skill marker
    /// names as its parent (see [`is_skill_marker`]).
    pub(super) skill_commands: HashSet<Uuid>,
    pub(super) user_prompts: u64,
    pub(super) token_lines: Vec<TokenLine>,
    pub(super) malformed: u64,
    /// Lines fed so far: the number of the line being read.
    pub(super) lines: u64,
    /// Heap bytes of the strings held per record (tool ids, odd uuids,
    /// errored tool ids, skill commands).
    pub(super) heap: usize,
}

impl Accumulator {
    pub(super) fn new() -> Accumulator {
        Accumulator {
            session_id: None,
            project: None,
            version: None,
            git_branch: None,
            times: Vec::new(),
            events: Vec::new(),
            names: Names::default(),
            errored_tool_ids: HashSet::new(),
            skill_commands: HashSet::new(),
            user_prompts: 0,
            token_lines: Vec::new(),
            malformed: 0,
            lines: 0,
            heap: 0,
        }
    }

    /// Forgets every record held, once they are staged elsewhere; the
    /// session's scalars stay.
    pub(super) fn clear_records(&mut self) {
        self.events.clear();
        self.heap = 0;
        self.times.clear();
        self.errored_tool_ids.clear();
        self.skill_commands.clear();
        self.token_lines.clear();
        self.names = Names::default();
    }

    /// Bytes held in memory, as an estimate good to a small factor.
    pub(super) fn held(&self) -> usize {
        use std::mem::size_of;
        // A set entry: a small heap string.
        const STR: usize = 48;
        self.events.len() * size_of::<Event>()
            + self.heap
            + self.times.len() * size_of::<i64>()
            + self.token_lines.len() * size_of::<TokenLine>()
            + (self.errored_tool_ids.len() + self.skill_commands.len()) * (STR + STR)
            + self.names.bytes()
    }

    /// Adds the next line of the file.
    pub(super) fn add(&mut self, raw: &[u8]) {
        self.lines = self.lines.saturating_add(1);
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
        for (kept, field) in [
            (&mut self.project, &line.cwd),
            (&mut self.version, &line.version),
            (&mut self.git_branch, &line.git_branch),
        ] {
            if kept.is_none() {
                *kept = field.get().filter(|v| !v.is_empty()).map(str::to_owned);
            }
        }
        let at = line.timestamp.get().and_then(parse_ms);
        if let Some(ms) = at {
            self.times.push(ms);
        }
        // Legacy tool result lines can flag an error from anywhere in the file.
        if line.is_error.0
            && let Some(id) = line.tool_use_id.get().or(line.tool_use_id_camel.get())
        {
            self.heap = self.heap.saturating_add(id.len());
            self.errored_tool_ids.insert(id.into());
        }
        let kind = line.role().unwrap_or("");
        if NO_EVENTS.contains(&kind) {
            return;
        }
        if repeats_too_much(&line) {
            self.malformed += 1;
            return;
        }
        match kind {
            "assistant" => self.assistant(&line, at),
            "user" => self.user(&line, at),
            _ => {}
        }
    }

    fn assistant(&mut self, line: &Line, at: Option<i64>) {
        let number = self.lines;
        let Some(message) = &line.message.0 else {
            self.token_lines.push(TokenLine {
                message: anonymous(number),
                model: None,
                usage: None,
            });
            return;
        };
        let model = message.model.get().map(|m| self.names.intern(m));
        let id = message.id.get();
        let token_line = TokenLine {
            message: id.map_or_else(|| anonymous(number), hash128),
            model,
            usage: message.usage.0.map(|usage| Counted {
                request: line.request_id.get().map(|r| hash128(r) as u64),
                sidechain: line.is_sidechain.0,
                usage,
                line: number,
                at,
            }),
        };
        let absorbed = self
            .token_lines
            .last_mut()
            .is_some_and(|last| last.absorb(&token_line));
        if !absorbed {
            self.token_lines.push(token_line);
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
            self.push(event);
        }
    }

    fn user(&mut self, line: &Line, at: Option<i64>) {
        let mut human_text = false;
        let mut marker = false;
        let mut commands = Vec::new();
        let mut text = |t: &str| {
            human_text |= !t.trim().is_empty();
            marker |= is_skill_marker(t);
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
        if marker
            && line.is_meta.0
            && let Some(parent) = line.parent_uuid.get()
        {
            self.heap = self.heap.saturating_add(parent.len());
            self.skill_commands.insert(Uuid::new(parent));
        }
        for name in commands {
            let event = Event {
                event_type: EventType::SlashCommand,
                command_name: Some(self.names.intern(&name)),
                ..self.event_base(line, at)
            };
            self.push(event);
        }
    }

    fn tool_result(&mut self, block: &Block) {
        if block.is_error.0
            && let Some(id) = block.tool_use_id.get()
        {
            self.heap = self.heap.saturating_add(id.len());
            self.errored_tool_ids.insert(id.into());
        }
    }

    fn push(&mut self, event: Event) {
        let heap = |u: &Option<Uuid>| match u {
            Some(Uuid::Other(text)) => text.len(),
            _ => 0,
        };
        let bytes = event.tool_id.as_ref().map_or(0, |t| t.len())
            + heap(&event.event_uuid)
            + heap(&event.parent_uuid);
        self.heap = self.heap.saturating_add(bytes);
        self.events.push(event);
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

/// Text one line's events may repeat between them, at most.
const REPEAT_LIMIT: usize = 16 << 20;

/// Whether a line's events would repeat its per-line text (uuids, folder,
/// model) past [`REPEAT_LIMIT`]: a few hundred thousand tool uses on one
/// line with a megabyte-long `uuid` would cost gigabytes. No transcript
/// writes such a line; it is counted as malformed, like an oversized one.
fn repeats_too_much(line: &Line) -> bool {
    let per_event = [&line.uuid, &line.parent_uuid, &line.cwd]
        .iter()
        .map(|s| s.get().map_or(0, str::len))
        .sum::<usize>()
        + line
            .message
            .0
            .as_ref()
            .and_then(|m| m.model.get())
            .map_or(0, str::len);
    // Each slash command takes its tag's length of text at least: most
    // lines are cleared by that bound without searching their text.
    const TAG: &str = "<command-name>";
    let at_most = match line.content() {
        Content::Text(t) => t.len() / TAG.len(),
        Content::Blocks(blocks) => blocks
            .iter()
            .map(|b| 1 + b.text.get().map_or(0, |t| t.len() / TAG.len()))
            .sum(),
        Content::None => 0,
    };
    if at_most.saturating_mul(per_event) <= REPEAT_LIMIT {
        return false;
    }
    let events = match line.content() {
        Content::Text(t) => t.matches(TAG).count(),
        Content::Blocks(blocks) => blocks
            .iter()
            .map(|b| match b.kind.get() {
                Some("tool_use") => 1,
                Some("text") => b.text.get().map_or(0, |t| t.matches(TAG).count()),
                _ => 0,
            })
            .sum(),
        Content::None => 0,
    };
    events.saturating_mul(per_event) > REPEAT_LIMIT
}

/// Whether a user text is what Claude Code writes, as an `isMeta` line whose
/// parent is the command's line, when a slash command loads a skill: the
/// skill's body (`Base directory for this skill: ...`) or, for a skill loaded
/// earlier in the session, a note saying so. A slash command without such a
/// child (a built-in such as `/clear`, or one the model answers with a
/// `Skill` tool use, which counts on its own) is no skill invocation.
fn is_skill_marker(text: &str) -> bool {
    let text = text.trim_start();
    text.starts_with("Base directory for this skill:")
        || text.starts_with("(Re-invocation of /")
        || (text.starts_with("Skill /")
            && (text.contains(" was loaded earlier") || text.contains(" is already loaded above")))
}

/// Parses an RFC 3339 timestamp into epoch milliseconds.
fn parse_ms(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
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
}
