//! What a team bills from: one row per API request, and the project,
//! version and branch of each session.

use serde_json::{Value, json};

use crate::usage::{lines, query, run_usage, summary, user};
use crate::util::Env;

/// An assistant line of request `r1`.
fn reply(ts: &str, id: Option<&str>, model: &str, usage: Value) -> Value {
    let mut line = json!({"type": "assistant", "timestamp": ts, "requestId": "r1",
        "message": {"model": model, "content": [], "usage": usage}});
    if let Some(id) = id {
        line["message"]["id"] = json!(id);
    }
    line
}

/// A reply split over two lines (the second complete, in fast mode, after
/// midnight), a reply without split cache writes, one without a message id.
fn four_lines() -> Vec<Value> {
    let split = json!({"ephemeral_5m_input_tokens": 60, "ephemeral_1h_input_tokens": 40});
    vec![
        reply(
            "2026-01-01T23:59:59Z",
            Some("m1"),
            "claude-opus-4-5",
            json!({"input_tokens": 10, "output_tokens": 1,
                       "cache_creation_input_tokens": 100, "cache_creation": split}),
        ),
        // The same reply, complete, in fast mode, after midnight.
        reply(
            "2026-01-02T00:00:01Z",
            Some("m1"),
            "claude-opus-4-5",
            json!({"input_tokens": 10, "output_tokens": 50, "speed": "fast",
                       "cache_creation_input_tokens": 100, "cache_creation": split}),
        ),
        reply(
            "2026-01-02T00:00:02Z",
            Some("m2"),
            "claude-haiku-4-5",
            json!({"input_tokens": 5, "cache_creation_input_tokens": 7}),
        ),
        // No message id: a request of its own.
        reply(
            "2026-01-02T00:00:03Z",
            None,
            "claude-haiku-4-5",
            json!({"input_tokens": 1}),
        ),
    ]
}

#[test]
fn each_request_keeps_its_model_time_and_cache_lifetimes() {
    let env = Env::new();
    env.session("u/r.jsonl", &lines(&four_lines()));
    run_usage(&env);
    let rows = query(
        &env,
        "SELECT line, model, occurred_at, input_tokens, output_tokens, cache_creation_tokens,
                cache_creation_5m_tokens, cache_creation_1h_tokens, is_fast
         FROM usage_requests ORDER BY line",
    );
    let got: Vec<Vec<Value>> = rows.iter().map(|r| r.values().cloned().collect()).collect();
    // Columns in name order: cache 1h, cache 5m, cache, input, fast, line,
    // model, time, output.
    assert_eq!(
        got,
        vec![
            json!([
                40,
                60,
                100,
                10,
                1,
                1,
                "claude-opus-4-5",
                "2026-01-02T00:00:01.000Z",
                50
            ]),
            json!([
                0,
                7,
                7,
                5,
                0,
                3,
                "claude-haiku-4-5",
                "2026-01-02T00:00:02.000Z",
                0
            ]),
            json!([
                0,
                0,
                0,
                1,
                0,
                4,
                "claude-haiku-4-5",
                "2026-01-02T00:00:03.000Z",
                0
            ]),
        ]
        .into_iter()
        .map(|v| v.as_array().unwrap().clone())
        .collect::<Vec<_>>()
    );
}

#[test]
fn the_summary_names_project_version_and_branch() {
    let env = Env::new();
    let mut first = user("u1", "2026-01-01T10:00:00Z", json!("hi"));
    // An empty value is no value: the next line's counts.
    first["cwd"] = json!("");
    let mut second = user("u2", "2026-01-01T10:00:01Z", json!("again"));
    second["cwd"] = json!("/home/u/shop");
    second["version"] = json!("2.0.14");
    second["gitBranch"] = json!("main");
    let mut third = user("u3", "2026-01-01T10:00:02Z", json!("more"));
    third["cwd"] = json!("/home/u/other");
    env.session("u/p.jsonl", &lines(&[first, second, third]));
    run_usage(&env);
    let s = summary(&env, "u/p.jsonl");
    assert_eq!(
        (&s["project"], &s["claude_version"], &s["git_branch"]),
        (&json!("/home/u/shop"), &json!("2.0.14"), &json!("main"))
    );
    let s = {
        env.copy_fixtures("sniffly", "chip");
        run_usage(&env);
        summary(&env, "chip/ba79134d-b6e9-4867-af0c-6941038c9e4b.jsonl")
    };
    assert_eq!(
        (&s["project"], &s["claude_version"]),
        (&json!("/Users/chip/dev/ai-music"), &json!("1.0.17"))
    );
}
