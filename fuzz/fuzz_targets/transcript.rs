//! Arbitrary bytes as a transcript: the line parser, the usage extraction
//! and the verification transcript must never panic, and a usage summary
//! must always agree with its events.
//!
//! cargo +nightly fuzz run transcript -- -max_total_time=600

#![no_main]

use libfuzzer_sys::fuzz_target;
use sessionpipe::processor::usage::{self, EventType};
use sessionpipe::processor::verification::{self, Turns};

fuzz_target!(|data: &[u8]| {
    let lines = data.split(|&b| b == b'\n');
    let rows = usage::rows_from_lines(lines.clone(), "u/f.jsonl", "u");
    let s = &rows.summary;
    let count = |t: EventType| rows.events.iter().filter(|e| e.event_type == t).count() as u64;
    assert_eq!(s.tool_calls, count(EventType::ToolUse));
    assert_eq!(s.subagent_dispatches, count(EventType::Subagent));
    assert_eq!(s.mcp_calls, count(EventType::McpCall));
    assert_eq!(s.slash_commands, count(EventType::SlashCommand));
    assert_eq!(rows.ids.len(), rows.events.len());
    assert!(s.active_seconds <= s.wall_seconds);

    let mut turns = Turns::default();
    for line in lines {
        turns.add(line);
    }
    let _ = verification::prompt(&turns.finish());
});
