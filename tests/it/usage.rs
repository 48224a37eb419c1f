//! The `usage` processor, rule by rule, on fixtures and hand-written lines.

use std::collections::BTreeMap;
use std::fs;

use crate::util::{Env, FIXTURES, n};
use serde_json::{Value, json};
use std::path::Path;

pub(crate) fn lines(values: &[Value]) -> String {
    values.iter().map(|v| format!("{v}\n")).collect()
}

pub(crate) type Rows = Vec<BTreeMap<String, Value>>;

/// Rows of a query as JSON objects, for comparing whole tables.
pub(crate) fn query(env: &Env, sql: &str) -> Rows {
    let conn = env.db();
    let mut stmt = conn.prepare(sql).unwrap();
    let names: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    stmt.query_map([], |r| {
        let mut row = BTreeMap::new();
        for (i, name) in names.iter().enumerate() {
            let v = match r.get_ref(i)? {
                rusqlite::types::ValueRef::Null => Value::Null,
                rusqlite::types::ValueRef::Integer(n) => n.into(),
                rusqlite::types::ValueRef::Real(x) => x.into(),
                rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into(),
                rusqlite::types::ValueRef::Blob(_) => Value::Null,
            };
            row.insert(name.clone(), v);
        }
        Ok(row)
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

pub(crate) fn summary(env: &Env, file: &str) -> BTreeMap<String, Value> {
    query(
        env,
        &format!("SELECT * FROM usage_session_summary WHERE session_file = '{file}'"),
    )
    .pop()
    .unwrap_or_else(|| panic!("no summary for {file}"))
}

pub(crate) fn events(env: &Env, file: &str) -> Rows {
    query(
        env,
        &format!(
            "SELECT * FROM usage_events WHERE session_file = '{file}' ORDER BY occurred_at, event_type, tool_name"
        ),
    )
}

pub(crate) fn run_usage(env: &Env) -> Value {
    env.run_one(&["usage"], 0)
}

pub(crate) fn assistant(uuid: &str, ts: &str, content: Value) -> Value {
    json!({"type": "assistant", "uuid": uuid, "sessionId": "s1", "timestamp": ts,
           "message": {"role": "assistant", "model": "claude-sonnet-4-6", "content": content}})
}

pub(crate) fn user(uuid: &str, ts: &str, content: Value) -> Value {
    json!({"type": "user", "uuid": uuid, "timestamp": ts,
           "message": {"role": "user", "content": content}})
}

pub(crate) fn tool_use(id: &str, name: &str, input: Value) -> Value {
    json!({"type": "tool_use", "id": id, "name": name, "input": input})
}

#[test]
fn tool_uses_are_classified() {
    let env = Env::new();
    env.copy_fixtures("agnes-usage", "agnes");
    run_usage(&env);

    let ev = events(&env, "agnes/mixed.jsonl");
    let kinds: Vec<(&str, &str)> = ev
        .iter()
        .map(|e| {
            (
                e["event_type"].as_str().unwrap(),
                e["tool_name"]
                    .as_str()
                    .or(e["command_name"].as_str())
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("slash_command", "compound:debug"),
            ("tool_use", "Bash"),
            ("tool_use", "Skill"),
            ("mcp_call", "mcp__github__create_issue"),
            ("subagent", "Task"),
            ("tool_use", "Bash"),
        ]
    );
    assert_eq!(ev[2]["skill_name"], "myplug:my-skill");
    assert_eq!(ev[4]["subagent_type"], "myplug:my-agent");
    assert_eq!(ev[1]["model"], "claude-sonnet-4-6");
    assert_eq!(ev[1]["cwd"], "/workspace");
    assert_eq!(ev[1]["event_uuid"], "a1");
    assert_eq!(ev[1]["parent_uuid"], "u1");
    assert_eq!(ev[1]["occurred_at"], "2026-05-12T15:00:01.000Z");
    assert_eq!(ev[1]["username"], "agnes");
    assert_eq!(ev[1]["session_id"], "sess-mixed");
    assert_eq!(ev[1]["id"].as_str().unwrap().len(), 32);
    let s = summary(&env, "agnes/mixed.jsonl");
    assert_eq!(s["tool_calls"], 3, "tool_use events, Skill included");
    assert_eq!(
        (s["subagent_dispatches"].clone(), s["mcp_calls"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(
        (s["skill_invocations"].clone(), s["distinct_skills"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(s["distinct_tools"], 4);

    assert_eq!(
        events(&env, "agnes/skill_flea.jsonl")[0]["skill_name"],
        "flea:flea-skill-by-alice"
    );
}

#[test]
fn agent_and_skill_inputs_fall_back_to_what_is_there() {
    let env = Env::new();
    env.session(
        "u/agent.jsonl",
        &lines(&[
            assistant(
                "a1",
                "2026-01-01T00:00:00Z",
                json!([
                    tool_use("t1", "Agent", json!({"prompt": "x"})),
                    tool_use("t2", "Skill", json!({"name": "by-name"})),
                    tool_use("t3", "Read", json!({})),
                ]),
            ),
            // The same tool use repeated on a later line is one event.
            assistant(
                "a2",
                "2026-01-01T00:00:01Z",
                json!([tool_use("t3", "Read", json!({}))]),
            ),
        ]),
    );
    run_usage(&env);
    let ev = events(&env, "u/agent.jsonl");
    assert_eq!(ev.len(), 3);
    assert_eq!(ev[0]["event_type"], "subagent");
    assert_eq!(
        ev[0]["subagent_type"], "Agent",
        "no subagent_type: the tool name"
    );
    assert_eq!(
        ev[2]["skill_name"], "by-name",
        "input.name when input.skill is missing"
    );
}

/// A user line typing `/NAME` (Claude Code writes it as a `<command-name>` tag).
fn command(uuid: &str, ts: &str, name: &str) -> Value {
    let tags =
        format!("<command-message>{name}</command-message>\n<command-name>/{name}</command-name>");
    user(uuid, ts, json!(tags))
}

/// The `isMeta` line Claude Code writes under `parent` when a skill loads.
fn skill_body(parent: &str, ts: &str, text: &str) -> Value {
    let mut line = user(
        &format!("m-{parent}"),
        ts,
        json!([{"type": "text", "text": text}]),
    );
    line["isMeta"] = json!(true);
    line["parentUuid"] = json!(parent);
    line
}

#[test]
fn skills_typed_as_slash_commands_count_once() {
    let env = Env::new();
    let body = "Base directory for this skill: /home/u/.claude/skills/review-pr\n\n# Review";
    env.session(
        "u/slash.jsonl",
        &lines(&[
            // A skill typed as a command: Claude Code loads its body.
            command("c1", "2026-01-01T00:00:00Z", "review-pr"),
            skill_body("c1", "2026-01-01T00:00:00Z", body),
            // A built-in command loads nothing: no skill.
            command("c2", "2026-01-01T00:00:01Z", "clear"),
            // A command the model answers with a Skill tool use counts once,
            // as that tool use.
            command("c3", "2026-01-01T00:00:02Z", "myplug:my-skill"),
            assistant(
                "a3",
                "2026-01-01T00:00:03Z",
                json!([tool_use("t3", "Skill", json!({"skill": "myplug:my-skill"}))]),
            ),
            // The body a Skill tool use loads hangs under its result, not
            // under a command: still one invocation.
            user(
                "r3",
                "2026-01-01T00:00:04Z",
                json!([{"type": "tool_result", "tool_use_id": "t3", "content": "Launching skill"}]),
            ),
            skill_body("r3", "2026-01-01T00:00:04Z", body),
            // The same skill typed again: a note instead of the body.
            command("c4", "2026-01-01T00:00:05Z", "review-pr"),
            skill_body(
                "c4",
                "2026-01-01T00:00:05Z",
                "Skill /review-pr was loaded earlier in this conversation.",
            ),
            // Text that only looks like a marker, typed by the user.
            command("c5", "2026-01-01T00:00:06Z", "deploy"),
            user("u5", "2026-01-01T00:00:07Z", json!(body)),
        ]),
    );
    run_usage(&env);
    let skills: Vec<(String, String)> = events(&env, "u/slash.jsonl")
        .iter()
        .filter(|e| !e["skill_name"].is_null())
        .map(|e| {
            (
                e["event_type"].as_str().unwrap().into(),
                e["skill_name"].as_str().unwrap().into(),
            )
        })
        .collect();
    let pair = |t: &str, s: &str| (t.to_owned(), s.to_owned());
    assert_eq!(
        skills,
        vec![
            pair("slash_command", "review-pr"),
            pair("tool_use", "myplug:my-skill"),
            pair("slash_command", "review-pr"),
        ]
    );
    let s = summary(&env, "u/slash.jsonl");
    assert_eq!(
        (
            &s["skill_invocations"],
            &s["distinct_skills"],
            &s["slash_commands"]
        ),
        (&json!(3), &json!(2), &json!(5))
    );
}

#[test]
fn non_conversation_lines_yield_no_events_but_count_for_time() {
    let env = Env::new();
    let sneaky = json!([tool_use("t9", "Bash", json!({}))]);
    let mut all = vec![user("u1", "2026-01-01T00:00:10Z", json!("hello"))];
    for (i, kind) in [
        "system",
        "summary",
        "file-history-snapshot",
        "queue-operation",
        "progress",
    ]
    .iter()
    .enumerate()
    {
        all.push(json!({"type": kind, "uuid": format!("x{i}"), "timestamp": format!("2026-01-01T00:0{i}:00Z"),
                        "message": {"role": "assistant", "content": sneaky}}));
    }
    env.session("u/s.jsonl", &lines(&all));
    run_usage(&env);
    assert!(events(&env, "u/s.jsonl").is_empty());
    let s = summary(&env, "u/s.jsonl");
    assert_eq!(s["started_at"], "2026-01-01T00:00:00.000Z");
    assert_eq!(s["ended_at"], "2026-01-01T00:04:00.000Z");
    assert_eq!(s["wall_seconds"], 240.0);
}

#[test]
fn tool_errors_are_found_wherever_the_result_is() {
    let env = Env::new();
    env.copy_fixtures("agnes-usage", "agnes");
    env.session(
        "u/e.jsonl",
        &lines(&[
            // A result before its tool use, a legacy top-level result line in
            // each spelling, and one explicit success.
            user(
                "u0",
                "2026-01-01T00:00:00Z",
                json!([{"type": "tool_result", "tool_use_id": "t1", "is_error": true}]),
            ),
            assistant(
                "a1",
                "2026-01-01T00:00:01Z",
                json!([
                    tool_use("t1", "Bash", json!({})),
                    tool_use("t2", "Read", json!({})),
                    tool_use("t3", "Grep", json!({})),
                    tool_use("t4", "Glob", json!({})),
                ]),
            ),
            json!({"type": "tool_use_result", "tool_use_id": "t2", "is_error": true}),
            json!({"type": "tool_use_result", "toolUseId": "t3", "is_error": true}),
            user(
                "u2",
                "2026-01-01T00:00:02Z",
                json!([{"type": "tool_result", "tool_use_id": "t4", "is_error": false}]),
            ),
        ]),
    );
    run_usage(&env);
    let errors: Vec<(String, i64)> = events(&env, "u/e.jsonl")
        .iter()
        .map(|e| {
            (
                e["tool_name"].as_str().unwrap().to_owned(),
                e["is_error"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        vec![
            ("Bash".into(), 1),
            ("Glob".into(), 0),
            ("Grep".into(), 1),
            ("Read".into(), 1)
        ]
    );
    assert_eq!(summary(&env, "u/e.jsonl")["tool_errors"], 3);
    assert_eq!(events(&env, "agnes/tool_error.jsonl")[0]["is_error"], 1);
    assert_eq!(summary(&env, "agnes/tool_error.jsonl")["tool_errors"], 1);
}

#[test]
fn slash_commands_come_from_tags_only() {
    let env = Env::new();
    env.copy_fixtures("agnes-usage", "agnes");
    env.session(
        "u/c.jsonl",
        &lines(&[
            user("u1", "2026-01-01T00:00:00Z", json!("please run /foo and /bar:baz for me")),
            user("u2", "2026-01-01T00:00:01Z", json!([{"type": "text", "text": "<command-name>/review</command-name><command-args>x</command-args>"}])),
            user("u3", "2026-01-01T00:00:02Z", json!("<command-name>/9lives</command-name>")),
            user("u4", "2026-01-01T00:00:03Z", json!("<command-name>init</command-name>")),
        ]),
    );
    run_usage(&env);
    let names: Vec<Value> = events(&env, "u/c.jsonl")
        .iter()
        .map(|e| e["command_name"].clone())
        .collect();
    assert_eq!(names, vec![json!("review"), json!("init")]);
    assert_eq!(summary(&env, "u/c.jsonl")["slash_commands"], 2);
    assert_eq!(
        events(&env, "agnes/slash_command.jsonl")[0]["command_name"],
        "compound:debug"
    );
}

#[test]
fn token_totals_equal_ccusage_on_real_transcripts() {
    let env = Env::new();
    env.copy_fixtures("sniffly", "chip");
    run_usage(&env);
    let reference: Value = serde_json::from_str(
        &fs::read_to_string(Path::new(FIXTURES).join("ccusage-sniffly.json")).unwrap(),
    )
    .unwrap();
    let sessions = reference["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3);
    for expected in sessions {
        let id = expected["sessionId"].as_str().unwrap();
        let s = summary(&env, &format!("chip/{id}.jsonl"));
        for (ours, theirs) in [
            ("input_tokens", "inputTokens"),
            ("output_tokens", "outputTokens"),
            ("cache_creation_tokens", "cacheCreationTokens"),
            ("cache_read_tokens", "cacheReadTokens"),
        ] {
            assert_eq!(s[ours], expected[theirs], "{id} {ours}");
        }
        assert_eq!(s["primary_model"], expected["modelsUsed"][0]);
    }
}

#[test]
fn split_replies_and_sidechains_count_once() {
    let env = Env::new();
    let usage =
        |o: u64| json!({"input_tokens": 10, "output_tokens": o, "cache_read_input_tokens": 100});
    let line = |uuid: &str, id: Option<&str>, req: &str, side: bool, o: u64| {
        let mut message = json!({"role": "assistant", "model": "claude-opus-4", "usage": usage(o),
                                 "content": [{"type": "text", "text": "x"}]});
        if let Some(id) = id {
            message["id"] = json!(id);
        }
        json!({"type": "assistant", "uuid": uuid, "requestId": req, "isSidechain": side,
               "timestamp": "2026-01-01T00:00:00Z", "message": message})
    };
    env.session(
        "u/t.jsonl",
        &lines(&[
            line("1", Some("m1"), "r1", false, 1),
            line("2", Some("m1"), "r1", false, 40),
            line("3", Some("m1"), "r1", false, 2),
            line("4", Some("m2"), "r2", false, 5),
            line("5", Some("m2"), "r9", true, 6),
            line("6", None, "r3", false, 7),
            line("7", None, "r3", false, 7),
        ]),
    );
    run_usage(&env);
    let s = summary(&env, "u/t.jsonl");
    assert_eq!(s["input_tokens"], 40);
    assert_eq!(s["output_tokens"], 40 + 6 + 7 + 7);
    assert_eq!(s["cache_read_tokens"], 400);
    assert_eq!(
        s["assistant_messages"], 4,
        "m1, m2 and two replies without an id"
    );
}

#[test]
fn prompts_replies_time_and_models() {
    let env = Env::new();
    let reply = |uuid: &str, id: &str, model: &str, ts: &str| {
        json!({"type": "assistant", "uuid": uuid, "timestamp": ts,
               "message": {"id": id, "model": model, "content": [{"type": "text", "text": "ok"}]}})
    };
    env.session(
        "u/m.jsonl",
        &lines(&[
            user("u1", "2026-01-01T10:00:00Z", json!("first question")),
            reply("a1", "m1", "zeta", "2026-01-01T10:01:00Z"),
            reply("a1b", "m1", "zeta", "2026-01-01T10:01:01Z"),
            user(
                "u2",
                "2026-01-01T10:02:00Z",
                json!([{"type": "tool_result", "tool_use_id": "x", "content": "out"}]),
            ),
            json!({"type": "user", "isMeta": true, "timestamp": "2026-01-01T10:03:00Z",
                   "message": {"role": "user", "content": "caveat: meta"}}),
            // 47 minutes idle: a new activity block.
            user(
                "u3",
                "2026-01-01T10:50:00+00:00",
                json!([{"type": "text", "text": "second"}]),
            ),
            reply("a2", "m2", "alpha", "2026-01-01T10:51:00Z"),
            reply("a3", "m3", "<synthetic>", "2026-01-01T10:52:00Z"),
            reply("a4", "m4", "<synthetic>", "2026-01-01T10:53:00Z"),
        ]),
    );
    run_usage(&env);
    let s = summary(&env, "u/m.jsonl");
    assert_eq!(s["user_prompts"], 2, "not tool results, not isMeta");
    assert_eq!(s["assistant_messages"], 4, "distinct reply ids");
    assert_eq!(s["wall_seconds"], 53.0 * 60.0);
    assert_eq!(s["active_seconds"], (3.0 + 3.0) * 60.0);
    assert_eq!(
        s["primary_model"], "alpha",
        "a tie goes to the first name; <synthetic> ignored"
    );
    assert_eq!(s["models"], r#"["alpha","zeta"]"#);
    assert_eq!(s["session_id"], "m", "no sessionId: the file key");
}

#[test]
fn malformed_lines_and_odd_shapes_never_fail_the_session() {
    let env = Env::new();
    let mut text = lines(&[
        user("u1", "2026-01-01T00:00:00Z", json!("hi")),
        json!({"type": "assistant", "timestamp": "2026-01-01T00:00:01Z", "message": {"content": 42, "usage": "lots"}}),
        json!({"type": "assistant", "timestamp": 12, "message": null}),
        json!({"type": "user", "message": {"content": [1, "two", {"type": "text", "text": 3}]}}),
        json!({"type": "assistant", "message": {"content": [{"type": "tool_use", "id": 5, "name": "Bash", "input": "x"}]}}),
        json!([1, 2, 3]),
    ]);
    text.push_str("{not json\n\u{0}\u{1}garbage\n\n");
    text.push_str(&lines(&[assistant(
        "a9",
        "2026-01-01T00:00:02Z",
        json!([tool_use("t1", "Read", json!({}))]),
    )]));
    env.session("u/bad.jsonl", &text);
    let report = run_usage(&env);
    assert_eq!(n(&report, "processed"), 1);
    let s = summary(&env, "u/bad.jsonl");
    assert_eq!(s["malformed_lines"], 3);
    assert_eq!(s["user_prompts"], 1);
    assert_eq!(
        s["tool_calls"], 2,
        "the Bash use without a usable id still counts"
    );
}
