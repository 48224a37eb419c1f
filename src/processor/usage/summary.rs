//! The end of a session: events de-duplicated and given their ids and
//! error flags, and the session's summary row.

use std::collections::{BTreeMap, HashSet};

use sha2::{Digest as _, Sha256};

use super::extract::{Accumulator, Event, EventType};
use super::names::{Name, Names, Uuid};
use super::rows::{Rows, Summary, format_ms};
use super::{IDLE_GAP_MS, SYNTHETIC_MODEL};

impl Accumulator {
    pub(super) fn finish(mut self, session_file: &str, username: &str) -> Rows {
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
            if e.event_type == EventType::SlashCommand
                && e.event_uuid
                    .as_ref()
                    .is_some_and(|u| self.skill_commands.contains(u))
            {
                e.skill_name = e.command_name;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

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
