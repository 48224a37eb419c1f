//! The `usage` tables as a whole: identities, reprocessing, jobs, and
//! summaries that agree with their events.

use std::fs;

use serde_json::json;

use crate::usage::{Rows, assistant, events, lines, query, run_usage, summary, tool_use};
use crate::util::{Env, age, append, n};

#[test]
fn identity_map_names_users() {
    let env = Env::new();
    fs::write(
        env.path("users.csv"),
        "key,email\n# staff\nalice,alice@example.com\n",
    )
    .unwrap();
    let mut usage = toml::Table::new();
    usage.insert("identities".into(), "users.csv".into());
    let mut table = toml::Table::new();
    table.insert("usage".into(), toml::Value::Table(usage));
    env.write_config(&table);
    env.copy_fixtures("agnes-usage", "alice");
    env.copy_fixtures("agnes-usage", "bob");
    run_usage(&env);
    let users = query(
        &env,
        "SELECT DISTINCT username FROM usage_events ORDER BY 1",
    );
    assert_eq!(users[0]["username"], "alice@example.com");
    assert_eq!(users[1]["username"], "bob");
    assert_eq!(
        summary(&env, "alice/mixed.jsonl")["username"],
        "alice@example.com"
    );

    fs::write(env.path("users.csv"), "alice\n").unwrap();
    env.cmd()
        .args(["run", "usage"])
        .assert()
        .code(78)
        .stderr(predicates::str::contains("line 1: expected key,email"));
}

#[test]
fn summaries_agree_with_events_on_every_fixture() {
    let env = Env::new();
    for folder in ["agnes-usage", "claude-code-log", "sniffly"] {
        env.copy_fixtures(folder, folder);
    }
    run_usage(&env);
    let mismatches = query(
        &env,
        "SELECT s.session_file FROM usage_session_summary s
         LEFT JOIN (SELECT session_file,
                count(*) FILTER (WHERE event_type = 'tool_use') AS tool_calls,
                count(*) FILTER (WHERE event_type = 'subagent') AS subagents,
                count(*) FILTER (WHERE event_type = 'mcp_call') AS mcp,
                count(*) FILTER (WHERE event_type = 'slash_command') AS slash,
                count(*) FILTER (WHERE skill_name IS NOT NULL) AS skills,
                count(*) FILTER (WHERE is_error AND event_type != 'slash_command') AS errors,
                count(DISTINCT tool_name) AS tools,
                count(DISTINCT skill_name) AS distinct_skills
             FROM usage_events GROUP BY session_file) e USING (session_file)
         WHERE s.tool_calls != coalesce(e.tool_calls, 0)
            OR s.subagent_dispatches != coalesce(e.subagents, 0)
            OR s.mcp_calls != coalesce(e.mcp, 0)
            OR s.slash_commands != coalesce(e.slash, 0)
            OR s.skill_invocations != coalesce(e.skills, 0)
            OR s.tool_errors != coalesce(e.errors, 0)
            OR s.distinct_tools != coalesce(e.tools, 0)
            OR s.distinct_skills != coalesce(e.distinct_skills, 0)",
    );
    assert!(mismatches.is_empty(), "{mismatches:?}");
    // Request rows add up to the session's tokens, split cache writes to
    // their whole, and are one per reply with usage.
    let mismatches = query(
        &env,
        "SELECT s.session_file FROM usage_session_summary s
         LEFT JOIN (SELECT session_file, sum(input_tokens) AS i, sum(output_tokens) AS o,
                sum(cache_creation_tokens) AS cc, sum(cache_read_tokens) AS cr, count(*) AS n
             FROM usage_requests GROUP BY session_file) r USING (session_file)
         WHERE s.input_tokens != coalesce(r.i, 0) OR s.output_tokens != coalesce(r.o, 0)
            OR s.cache_creation_tokens != coalesce(r.cc, 0)
            OR s.cache_read_tokens != coalesce(r.cr, 0)
            OR s.assistant_messages < coalesce(r.n, 0)",
    );
    assert!(mismatches.is_empty(), "{mismatches:?}");
    let requests: i64 = env.scalar("SELECT count(*) FROM usage_requests");
    assert!(requests > 50, "{requests} requests");
    let files = query(&env, "SELECT count(*) AS n FROM usage_session_summary");
    assert_eq!(files[0]["n"], 17);
    let items: i64 = env.scalar(
        "SELECT sum(items_extracted) FROM session_processor_state WHERE processor_name = 'usage'",
    );
    let events: i64 = env.scalar("SELECT count(*) FROM usage_events");
    assert_eq!(items, events);
}

/// Everything the usage processor wrote, without timestamps of processing.
fn usage_tables(env: &Env) -> (Rows, Rows) {
    (
        query(env, "SELECT * FROM usage_events ORDER BY session_file, id"),
        query(
            env,
            "SELECT * FROM usage_session_summary ORDER BY session_file",
        ),
    )
}

#[test]
fn reprocessing_leaves_exactly_the_rows_of_one_fresh_run() {
    let grown = Env::new();
    grown.copy_fixtures("agnes-usage", "a");
    let path = grown.data.join("a/tool_error.jsonl");
    let full = fs::read_to_string(&path).unwrap();
    // Cut before the tool result: the error arrives in a later append.
    let cut = full.match_indices('\n').nth(1).unwrap().0 + 1;
    fs::write(&path, &full[..cut]).unwrap();
    age(&path);
    run_usage(&grown);
    assert_eq!(events(&grown, "a/tool_error.jsonl")[0]["is_error"], 0);
    run_usage(&grown);
    append(&path, &full[cut..]);
    age(&path);
    assert_eq!(n(&run_usage(&grown), "processed"), 1);
    assert_eq!(
        events(&grown, "a/tool_error.jsonl")[0]["is_error"],
        1,
        "flipped by the append"
    );
    grown
        .cmd()
        .args(["state", "requeue", "usage", "a/mixed.jsonl"])
        .assert()
        .success();
    run_usage(&grown);

    let fresh = Env::new();
    fresh.copy_fixtures("agnes-usage", "a");
    run_usage(&fresh);
    assert_eq!(usage_tables(&grown), usage_tables(&fresh));
}

#[test]
fn results_do_not_depend_on_the_number_of_jobs() {
    let tables = |jobs: &str| {
        let env = Env::new();
        for folder in ["agnes-usage", "claude-code-log", "sniffly"] {
            for key in ["a", "b", "c"] {
                env.copy_fixtures(folder, &format!("{key}-{folder}"));
            }
        }
        let report = env.run_one(&["usage", "--jobs", jobs], 0);
        assert_eq!(n(&report, "processed"), 51);
        let state = query(
            &env,
            "SELECT session_file, username, items_extracted, file_hash, bytes_processed,
                    processor_version, file_size, status, attempts
             FROM session_processor_state ORDER BY session_file",
        );
        (usage_tables(&env), state)
    };
    assert_eq!(tables("1"), tables("4"));
}

#[test]
fn an_identity_map_change_reaches_the_rows_already_written() {
    let env = Env::new();
    let session = lines(&[assistant(
        "a1",
        "2026-01-01T00:00:00Z",
        json!([tool_use("t1", "Read", json!({}))]),
    )]);
    env.session("alice/a.jsonl", &session);
    env.session("bob/b.jsonl", &session);
    run_usage(&env);
    let csv = env.path("users.csv");
    fs::write(&csv, "alice,alice@example.com\n").unwrap();
    let mut usage = toml::Table::new();
    usage.insert("identities".into(), csv.to_str().unwrap().into());
    let mut config = toml::Table::new();
    config.insert("usage".into(), toml::Value::Table(usage));
    env.write_config(&config);
    run_usage(&env);
    for table in ["usage_events", "usage_session_summary"] {
        let names: Vec<String> = env
            .db()
            .prepare(&format!("SELECT DISTINCT username FROM {table} ORDER BY 1"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(names, ["alice@example.com", "bob"], "{table}");
    }
}
