//! Arbitrary bytes as a transcript: the line parser, the usage extraction
//! and the verification transcript must never panic, a usage summary must
//! always agree with its events, and a session staged on disk must yield
//! the rows of one held in memory.
//!
//! cargo +nightly fuzz run transcript -- -max_total_time=600

#![no_main]

use libfuzzer_sys::fuzz_target;
use sessionpipe::processor::usage::{self, EventType};
use sessionpipe::processor::verification::{self, Turns};

fuzz_target!(|data: &[u8]| {
    let lines = data.split(|&b| b == b'\n');
    let read = |limit| {
        let rows = usage::rows_from_lines(lines.clone(), "u/f.jsonl", "u", limit).unwrap();
        let mut events = Vec::new();
        rows.each(|e| {
            events.push((e.event_type, format!("{e:?}")));
            Ok(())
        })
        .unwrap();
        (rows, events)
    };
    let (rows, events) = read(usize::MAX);
    let (staged, staged_events) = read(0);
    assert_eq!(staged_events, events);
    assert_eq!(staged.summary, rows.summary);
    let s = &rows.summary;
    let count = |t: EventType| events.iter().filter(|e| e.0 == t).count() as u64;
    assert_eq!(s.tool_calls, count(EventType::ToolUse));
    assert_eq!(s.subagent_dispatches, count(EventType::Subagent));
    assert_eq!(s.mcp_calls, count(EventType::McpCall));
    assert_eq!(s.slash_commands, count(EventType::SlashCommand));
    assert_eq!(rows.len(), events.len() as u64);
    assert!(s.active_seconds <= s.wall_seconds);

    let mut turns = Turns::default();
    for line in lines {
        turns.add(line);
    }
    let _ = verification::prompt(&turns.finish());
});
