//! The end of a session: events de-duplicated and given their ids and
//! error flags, and the session's summary row. A session held in memory
//! ends here; one staged on disk ends in [`super::scratch`], which shares
//! the rules below that do not depend on where the records are.

use std::collections::HashSet;

use sha2::{Digest as _, Sha256};

use super::IDLE_GAP_MS;
use super::extract::{Accumulator, Event, EventType};
use super::names::{Name, Uuid};
use super::rows::{Rows, Summary, format_ms};
use super::tokens::{Reducer, Request, Tally};

/// The event counts of a session's summary.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Counts {
    pub(super) tool_calls: u64,
    pub(super) tool_errors: u64,
    pub(super) skill_invocations: u64,
    pub(super) subagent_dispatches: u64,
    pub(super) mcp_calls: u64,
    pub(super) slash_commands: u64,
    pub(super) distinct_tools: u64,
    pub(super) distinct_skills: u64,
}

/// First and last timestamp, and the time spent in activity blocks.
#[derive(Debug, Default)]
pub(super) struct Span {
    first: Option<i64>,
    last: Option<i64>,
    active_ms: i64,
}

impl Span {
    /// Adds the next timestamp, in ascending order. Activity blocks split
    /// where two consecutive timestamps are more than [`IDLE_GAP_MS`] apart.
    pub(super) fn push(&mut self, t: i64) {
        match self.last {
            Some(last) if t.saturating_sub(last) <= IDLE_GAP_MS => {
                self.active_ms = self.active_ms.saturating_add(t.saturating_sub(last));
            }
            _ => self.first = self.first.or(Some(t)),
        }
        self.last = Some(t);
    }
}

impl Accumulator {
    /// The session's id: that of its first line naming one, else the file's
    /// name without `.jsonl`.
    pub(super) fn session_id(&mut self, session_file: &str) -> String {
        self.session_id.take().unwrap_or_else(|| {
            let name = session_file.rsplit('/').next().unwrap_or(session_file);
            name.strip_suffix(".jsonl").unwrap_or(name).to_owned()
        })
    }

    pub(super) fn head<'u>(&mut self, session_id: String, username: &'u str) -> Head<'u> {
        Head {
            session_id,
            username,
            project: self.project.take(),
            version: self.version.take(),
            git_branch: self.git_branch.take(),
            user_prompts: self.user_prompts,
            malformed: self.malformed,
        }
    }

    pub(super) fn finish_in_memory(mut self, session_id: String, username: &str) -> Rows {
        // One event per tool use id (the first), then per event id.
        let mut events = std::mem::take(&mut self.events);
        let keep = first_of_each(events.len(), |i| events[i].tool_id.as_ref());
        let mut kept = keep.iter();
        events.retain(|_| *kept.next().unwrap_or(&true));
        let mut ids: Vec<[u8; 32]> = events
            .iter()
            .map(|e| {
                let uuid = e.event_uuid.as_ref().map(Uuid::text);
                event_id(
                    &session_id,
                    uuid.as_deref(),
                    e.tool_id.as_deref(),
                    e.event_type,
                    self.names.opt(e.tool_name),
                    self.names.opt(e.command_name),
                )
            })
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
            if e.event_type == EventType::SlashCommand
                && e.event_uuid
                    .as_ref()
                    .is_some_and(|u| self.skill_commands.contains(u))
            {
                e.skill_name = e.command_name;
            }
        }
        let counts = counts(&events);
        self.times.sort_unstable();
        let mut span = Span::default();
        self.times.iter().for_each(|&t| span.push(t));
        let (tally, requests) = self.tally();
        let head = self.head(session_id, username);
        let summary = head.summary(counts, span, tally);
        Rows::in_memory(events, ids, requests, self.names, self.heap, summary)
    }

    /// Replies and their tokens, reduced in (`message.id`, file order), and
    /// the requests in file order.
    fn tally(&self) -> (Tally, Vec<Request>) {
        let mut order: Vec<u32> = (0..self.token_lines.len() as u32).collect();
        order.sort_by_key(|&i| self.token_lines[i as usize].message);
        let mut reducer = Reducer::default();
        for i in order {
            let line = &self.token_lines[i as usize];
            reducer.push(line.message, self.names.opt(line.model), line.usage);
        }
        let (tally, mut requests) = reducer.finish();
        requests.sort_unstable_by_key(|q| q.line);
        (tally, requests)
    }
}

/// What a summary takes besides events, times and replies.
pub(super) struct Head<'a> {
    pub(super) session_id: String,
    pub(super) username: &'a str,
    pub(super) project: Option<String>,
    pub(super) version: Option<String>,
    pub(super) git_branch: Option<String>,
    pub(super) user_prompts: u64,
    pub(super) malformed: u64,
}

impl Head<'_> {
    pub(super) fn summary(self, c: Counts, span: Span, tally: Tally) -> Summary {
        let (primary_model, models) = tally.models();
        let [input, output, creation, read] = tally.totals;
        Summary {
            session_id: self.session_id,
            username: self.username.to_owned(),
            project: self.project,
            claude_version: self.version,
            git_branch: self.git_branch,
            started_at: span.first.map(format_ms),
            ended_at: span.last.map(format_ms),
            wall_seconds: match (span.first, span.last) {
                (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1000.0,
                _ => 0.0,
            },
            active_seconds: span.active_ms as f64 / 1000.0,
            user_prompts: self.user_prompts,
            assistant_messages: tally.replies,
            tool_calls: c.tool_calls,
            tool_errors: c.tool_errors,
            skill_invocations: c.skill_invocations,
            subagent_dispatches: c.subagent_dispatches,
            mcp_calls: c.mcp_calls,
            slash_commands: c.slash_commands,
            distinct_tools: c.distinct_tools,
            distinct_skills: c.distinct_skills,
            primary_model,
            models,
            input_tokens: input,
            output_tokens: output,
            cache_creation_tokens: creation,
            cache_read_tokens: read,
            malformed_lines: self.malformed,
        }
    }
}

fn counts(events: &[Event]) -> Counts {
    let count = |t: EventType| events.iter().filter(|e| e.event_type == t).count() as u64;
    let distinct = |f: fn(&Event) -> Option<Name>| {
        events.iter().filter_map(f).collect::<HashSet<_>>().len() as u64
    };
    Counts {
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

/// Stable SHA-256 of `session_id|event_uuid|tool_id|event_type|tool_name|command_name`.
pub(super) fn event_id(
    session_id: &str,
    uuid: Option<&str>,
    tool_id: Option<&str>,
    event_type: EventType,
    tool_name: Option<&str>,
    command_name: Option<&str>,
) -> [u8; 32] {
    let key = [
        session_id,
        uuid.unwrap_or(""),
        tool_id.unwrap_or(""),
        event_type.as_str(),
        tool_name.unwrap_or(""),
        command_name.unwrap_or(""),
    ]
    .join("|");
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active_ms(sorted: &[i64]) -> i64 {
        let mut span = Span::default();
        sorted.iter().for_each(|&t| span.push(t));
        span.active_ms
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
}
