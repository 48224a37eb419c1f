//! A session staged on disk yields exactly the rows of one held in memory.

use std::path::Path;

use super::rows_from_lines;

/// Every event row as text, and the summary, of `lines` read with `limit`;
/// then the prices of the models its requests name.
fn read(lines: &[&[u8]], limit: usize) -> (Vec<String>, String) {
    let mut rows = rows_from_lines(lines.iter().copied(), "u/s.jsonl", "u", limit).unwrap();
    let mut events = Vec::new();
    rows.each(|e| {
        events.push(format!("{e:?}"));
        Ok(())
    })
    .unwrap();
    assert_eq!(rows.len(), events.len() as u64);
    // With the text each request's time is written as.
    rows.each_request_row(|q, at| {
        events.push(format!("{q:?} {at:?}"));
        Ok(())
    })
    .unwrap();
    let book = crate::prices::PriceBook::new(&Default::default()).unwrap();
    rows.price(&book);
    events.extend(rows.prices().iter().map(|p| format!("{p:?}")));
    (events, format!("{:?}", rows.summary))
}

fn same_either_way(name: &str, text: &[u8]) {
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    let memory = read(&lines, usize::MAX);
    for limit in [0, 2000] {
        assert_eq!(read(&lines, limit), memory, "{name}, limit {limit}");
    }
}

#[test]
fn fixtures_give_the_same_rows_staged_or_in_memory() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for dir in ["tests/fixtures/claude-code", "examples/user_sessions"] {
        let mut stack = vec![root.join(dir)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "jsonl") {
                    same_either_way(&path.display().to_string(), &std::fs::read(&path).unwrap());
                    seen += 1;
                }
            }
        }
    }
    assert!(seen >= 20, "only {seen} fixture files found");
}

#[test]
fn rules_that_span_the_whole_file_hold_across_staging() {
    let tool = |uuid: &str, id: &str, name: &str| {
        format!(
            r#"{{"type":"assistant","uuid":"{uuid}","timestamp":"2026-01-01T00:00:0{}Z","message":{{"id":"m-{uuid}","model":"claude-opus-4-5","content":[{{"type":"tool_use","id":"{id}","name":"{name}","input":{{}}}}],"usage":{{"input_tokens":3,"output_tokens":4}}}}}}"#,
            uuid.len() % 10
        )
    };
    let text = [
        // No sessionId until later: ids use the one found.
        tool("a1", "t1", "Bash"),
        r#"{"type":"user","uuid":"c1","sessionId":"late","timestamp":"2026-01-01T00:30:00Z","message":{"content":"<command-name>/review</command-name>"}}"#.into(),
        // The same tool use again, and the same reply with a sidechain line.
        tool("a1", "t1", "Bash"),
        r#"{"type":"assistant","uuid":"a2","isSidechain":true,"requestId":"other","message":{"id":"m-a1","model":"claude-haiku-4-5","usage":{"input_tokens":9,"output_tokens":9}}}"#.into(),
        // Earlier timestamps later in the file.
        tool("a333", "t2", "mcp__x__y"),
        // An error and a skill marker for events staged long before.
        r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","is_error":true}]}}"#.into(),
        r#"{"type":"user","isMeta":true,"parentUuid":"c1","message":{"content":"Base directory for this skill: /s"}}"#.into(),
        r#"{"type":"assistant","message":{"model":"<synthetic>","usage":{"input_tokens":1}}}"#.into(),
        // Fast mode and cache writes split by lifetime survive staging.
        r#"{"type":"assistant","requestId":"q","message":{"id":"m9","model":"claude-opus-4-6","usage":{"input_tokens":2,"speed":"fast","cache_creation_input_tokens":5,"cache_creation":{"ephemeral_5m_input_tokens":2,"ephemeral_1h_input_tokens":3}}}}"#.into(),
        "not json".into(),
    ]
    .join("\n");
    same_either_way("hand-written", text.as_bytes());
    let rows = rows_from_lines(text.split('\n').map(str::as_bytes), "u/s.jsonl", "u", 0).unwrap();
    let s = &rows.summary;
    assert_eq!(
        (
            s.session_id.as_str(),
            rows.len(),
            s.tool_errors,
            s.skill_invocations
        ),
        ("late", 3, 1, 1)
    );
    assert_eq!(
        (s.input_tokens, s.assistant_messages, s.malformed_lines),
        (9 + 3 + 1 + 2, 4, 1)
    );
    let mut fast = Vec::new();
    rows.each_request_row(|q, _| {
        fast.push((
            q.is_fast,
            q.cache_creation_5m_tokens,
            q.cache_creation_1h_tokens,
        ));
        Ok(())
    })
    .unwrap();
    assert!(fast.contains(&(true, 2, 3)), "{fast:?}");
}

#[test]
fn a_line_whose_events_would_repeat_megabytes_is_malformed_not_amplified() {
    let line = |uuid: &str| {
        let uses: Vec<String> = (0..200)
            .map(|i| format!(r#"{{"type":"tool_use","id":"t{i}","name":"Bash","input":{{}}}}"#))
            .collect();
        format!(
            r#"{{"type":"assistant","uuid":"{uuid}","message":{{"content":[{}]}}}}"#,
            uses.join(",")
        )
    };
    let hostile = line(&"u".repeat(100_000));
    let normal = line("a1");
    let rows =
        rows_from_lines([hostile.as_bytes(), normal.as_bytes()], "u/s.jsonl", "u", 0).unwrap();
    // 200 events of a 100 KB uuid would be 20 MB of copies.
    assert_eq!((rows.len(), rows.summary.malformed_lines), (200, 1));
}
