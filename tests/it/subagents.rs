//! Subagent transcripts: `<key>/<session>/subagents/agent-<id>.jsonl`,
//! exactly that pattern, read by `usage` (each file its own state row) and
//! counted in their session, as ccusage counts them.

use std::fs;
use std::os::unix::fs::symlink;

use serde_json::{Value, json};

use crate::report::report;
use crate::usage::{lines, run_usage};
use crate::util::{Env, append, n};

fn reply(id: &str, tokens: u64) -> String {
    lines(&[
        json!({"type": "assistant", "timestamp": "2026-01-01T00:00:00Z",
        "sessionId": "s1", "requestId": id, "isSidechain": true,
        "message": {"id": id, "model": "claude-haiku-4-5",
                    "usage": {"input_tokens": tokens, "output_tokens": 1}}}),
    ])
}

/// A session with two subagents, a subagent folder without its session, and
/// files and links that are not the pattern.
fn lay_out_subagents(env: &Env) {
    env.session("u/s1.jsonl", &reply("main", 1));
    for (file, tokens) in [
        ("u/s1/subagents/agent-a.jsonl", 10),
        ("u/s1/subagents/agent-b.jsonl", 20),
        // A subagent folder without its session file still counts.
        ("u/s2/subagents/agent-e.jsonl", 40),
        // Not the pattern: another name, deeper, another folder.
        ("u/s1/subagents/notes.jsonl", 1000),
        ("u/s1/subagents/deep/agent-c.jsonl", 1000),
        ("u/s1/other/agent-d.jsonl", 1000),
    ] {
        env.session(file, &reply(file, tokens));
    }
    fs::write(env.data.join("u/s1/subagents/agent-a.meta.json"), "{}").unwrap();
    // Links are never followed, to a folder or to a file.
    fs::create_dir_all(env.data.join("u/s3")).unwrap();
    symlink(
        env.data.join("u/s1/subagents"),
        env.data.join("u/s3/subagents"),
    )
    .unwrap();
    symlink(
        env.data.join("u/s1/subagents/agent-a.jsonl"),
        env.data.join("u/s1/subagents/agent-link.jsonl"),
    )
    .unwrap();
}

#[test]
fn exactly_the_subagent_pattern_is_scanned_and_only_usage_reads_it() {
    let env = Env::new();
    lay_out_subagents(&env);
    env.processors(&[("rec", &env.recorder("true"))]);
    let out = env.cmd().args(["run", "usage", "rec"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<String> = env
        .db()
        .prepare(
            "SELECT session_file FROM session_processor_state WHERE processor_name = 'usage'
             ORDER BY 1",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        files,
        [
            "u/s1.jsonl",
            "u/s1/subagents/agent-a.jsonl",
            "u/s1/subagents/agent-b.jsonl",
            "u/s2/subagents/agent-e.jsonl"
        ]
    );
    // An external command sees sessions, not subagents.
    let calls = env.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].starts_with("u/s1.jsonl "), "{calls:?}");
    // Rows name their agent.
    let agents: Vec<(String, Option<String>)> = env
        .db()
        .prepare("SELECT session_file, agent_id FROM usage_requests ORDER BY 1")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(agents[0], ("u/s1.jsonl".into(), None));
    assert_eq!(
        agents[1],
        ("u/s1/subagents/agent-a.jsonl".into(), Some("a".into()))
    );
    // A subagent folder without its session file is a session all the same.
    let orphan: i64 = env
        .scalar("SELECT input_tokens FROM usage_session_summary WHERE session_file = 'u/s2.jsonl'");
    assert_eq!(orphan, 40);
    // A session's report row counts its subagents.
    let sessions = report_sessions(&env);
    assert_eq!(
        sessions,
        [("u/s1.jsonl".into(), 31), ("u/s2.jsonl".into(), 40)]
    );
}

fn report_sessions(env: &Env) -> Vec<(String, u64)> {
    report(env, &["session"])
        .iter()
        .map(|r| {
            let file = r["session_file"].as_str().unwrap().to_owned();
            (file, r["input_tokens"].as_u64().unwrap())
        })
        .collect()
}

#[test]
fn a_change_to_one_subagent_file_reprocesses_only_that_file() {
    let env = Env::new();
    for (file, id, tokens) in [
        ("u/s1.jsonl", "main", 1),
        ("u/s1/subagents/agent-a.jsonl", "a1", 10),
        ("u/s1/subagents/agent-b.jsonl", "b1", 20),
    ] {
        crate::util::age(&env.session(file, &reply(id, tokens)));
    }
    run_usage(&env);
    append(
        &env.data.join("u/s1/subagents/agent-b.jsonl"),
        &reply("b2", 300),
    );
    let report = run_usage(&env);
    assert_eq!(n(&report, "processed"), 1, "{report}");
    assert_eq!(report_sessions(&env), [("u/s1.jsonl".into(), 331)]);
}

/// One summary per session, its subagents included (one per file below),
/// with ccusage's tokens; the subagents' events name their agent.
fn summaries_equal(env: &Env, theirs: &[Value]) {
    let files: i64 = env.scalar("SELECT count(*) FROM usage_file_summary");
    assert_eq!(files, 12);
    let explorer: i64 = env.scalar("SELECT count(*) FROM usage_events WHERE agent_id = 'a2271d1'");
    assert!(explorer > 10, "{explorer} events of the Haiku explorer");
    for expected in theirs {
        let file = format!(
            "{}/{}.jsonl",
            expected["projectPath"].as_str().unwrap(),
            expected["sessionId"].as_str().unwrap()
        );
        let got: (i64, i64, i64, i64) = env.row(
            &format!(
                "SELECT input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens
                 FROM usage_session_summary WHERE session_file = '{file}'"
            ),
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        );
        let want = |k: &str| expected[k].as_i64().unwrap();
        let want = (
            want("inputTokens"),
            want("outputTokens"),
            want("cacheCreationTokens"),
            want("cacheReadTokens"),
        );
        assert_eq!(got, want, "{file}");
    }
}

/// Per day and model, ccusage's tokens and cost.
fn days_equal(env: &Env) {
    let ours = report(env, &["--by", "model"]);
    let daily = crate::usage_requests::reference("ccusage-subagents-daily.json");
    let mut compared = 0;
    for day in daily["daily"].as_array().unwrap() {
        for m in day["modelBreakdowns"].as_array().unwrap() {
            let row = ours
                .iter()
                .find(|r| r["date"] == day["date"] && r["model"] == m["modelName"])
                .unwrap();
            assert_eq!(row["input_tokens"], m["inputTokens"]);
            assert_eq!(row["cache_read_tokens"], m["cacheReadTokens"]);
            crate::usage_requests::within_a_thousandth(
                row["cost_usd"].as_f64().unwrap(),
                m["cost"].as_f64().unwrap(),
                "day",
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 3);
}

#[test]
fn sessions_with_subagents_equal_ccusage_per_session_and_per_day_and_model() {
    let env = Env::new();
    let root = std::path::Path::new(crate::util::FIXTURES).join("claude-code-log-subagents");
    for file in crate::util::walk(&root) {
        let name = file
            .strip_prefix(&root)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        if name.ends_with(".jsonl") {
            env.session(&name, &fs::read_to_string(&file).unwrap());
        }
    }
    run_usage(&env);
    let ours = report(&env, &["session"]);
    let theirs = crate::usage_requests::reference("ccusage-subagents.json");
    let theirs = theirs["sessions"].as_array().unwrap();
    assert_eq!(ours.len(), theirs.len());
    summaries_equal(&env, theirs);
    for expected in theirs {
        let file = format!(
            "{}/{}.jsonl",
            expected["projectPath"].as_str().unwrap(),
            expected["sessionId"].as_str().unwrap()
        );
        let row = ours
            .iter()
            .find(|r| r["session_file"] == file.as_str())
            .unwrap();
        for (a, b) in [
            ("input_tokens", "inputTokens"),
            ("output_tokens", "outputTokens"),
            ("cache_creation_tokens", "cacheCreationTokens"),
            ("cache_read_tokens", "cacheReadTokens"),
        ] {
            assert_eq!(row[a], expected[b], "{file} {a}");
        }
        crate::usage_requests::within_a_thousandth(
            row["cost_usd"].as_f64().unwrap(),
            expected["totalCost"].as_f64().unwrap(),
            &file,
        );
    }
    days_equal(&env);
    // A subagent's requests belong to the folder it worked in.
    let rows = report(&env, &["monthly", "--by", "project"]);
    assert!(rows.iter().all(|r| r["project"] != ""), "{rows:?}");
}

#[test]
fn a_request_copied_into_another_file_of_the_session_counts_once() {
    let env = Env::new();
    let line = |id: &str, sidechain: bool, tokens: u64| {
        lines(&[
            json!({"type": "assistant", "timestamp": "2026-01-01T00:00:00Z",
            "requestId": id, "isSidechain": sidechain,
            "message": {"id": id, "model": "claude-haiku-4-5",
                        "usage": {"input_tokens": tokens}}}),
        ])
    };
    // The main file's copy wins over a sidechain's, however large...
    env.session("u/s1.jsonl", &line("m1", false, 100));
    env.session(
        "u/s1/subagents/agent-a.jsonl",
        &format!("{}{}", line("m1", true, 150), line("m2", true, 30)),
    );
    // ...and among sidechain copies, the largest.
    env.session("u/s1/subagents/agent-b.jsonl", &line("m2", true, 50));
    // Another session's copy is its own.
    env.session("u/s9.jsonl", &line("m1", false, 7));
    run_usage(&env);
    let input = |env: &Env, file: &str| -> i64 {
        env.scalar(&format!(
            "SELECT input_tokens FROM usage_session_summary WHERE session_file = '{file}'"
        ))
    };
    assert_eq!(
        (input(&env, "u/s1.jsonl"), input(&env, "u/s9.jsonl")),
        (150, 7)
    );
    let counted: i64 = env.scalar("SELECT sum(input_tokens) FROM usage_request_costs");
    assert_eq!(counted, 157, "the view leaves the copies out");
    assert_eq!(
        report_sessions(&env),
        [("u/s1.jsonl".into(), 150), ("u/s9.jsonl".into(), 7)]
    );
    // Without the main file, the subagent's copy is the one counted.
    fs::remove_file(env.data.join("u/s1.jsonl")).unwrap();
    run_usage(&env);
    env.cmd()
        .args(["state", "prune", "usage", "--gone"])
        .assert()
        .success();
    assert_eq!(input(&env, "u/s1.jsonl"), 200);
}

#[test]
fn odd_names_are_classified_by_the_whole_pattern() {
    let env = Env::new();
    for (file, tokens) in [
        // A session folder may itself be called "subagents".
        ("u/subagents/subagents/agent-a.jsonl", 1),
        // No agent id, or a session folder named like a file: not the pattern.
        ("u/s1/subagents/agent-.jsonl", 1000),
        ("u/x.jsonl/subagents/agent-q.jsonl", 1000),
    ] {
        env.session(file, &reply(file, tokens));
    }
    run_usage(&env);
    let rows: Vec<(String, Option<String>)> = env
        .db()
        .prepare("SELECT session_file, agent_id FROM usage_requests")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        [(
            "u/subagents/subagents/agent-a.jsonl".into(),
            Some("a".into())
        )]
    );
    assert_eq!(report_sessions(&env), [("u/subagents.jsonl".into(), 1)]);
}

#[test]
fn a_session_folder_that_cannot_be_read_is_an_error_that_names_it() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.session("u/s1.jsonl", &reply("main", 1));
    env.session("u/s1/subagents/agent-a.jsonl", &reply("a1", 10));
    env.run_one(&["usage"], 0);
    let shut = env.data.join("u/s1");
    // Root reads anything: the run is made as nobody.
    let mut cmd = env.cmd_unprivileged(&[]);
    fs::set_permissions(&shut, fs::Permissions::from_mode(0o000)).unwrap();
    let out = cmd.args(["-q", "run", "usage", "--json"]).assert().code(1);
    fs::set_permissions(&shut, fs::Permissions::from_mode(0o755)).unwrap();
    let report: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(report["errors_detail"][0]["session"], "u/s1/subagents/");
    let gone: i64 =
        env.scalar("SELECT count(*) FROM session_processor_state WHERE status = 'gone'");
    assert_eq!(gone, 0, "an unreadable folder's files are not gone");
}
