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

#[test]
fn costs_follow_the_price_table_and_the_config_without_a_reprocess() {
    let env = Env::new();
    let long = json!({"input_tokens": 250_000, "output_tokens": 1000,
        "cache_creation_input_tokens": 2000, "cache_read_input_tokens": 300_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 1000}});
    let small = json!({"input_tokens": 1000, "output_tokens": 1000});
    env.session(
        "u/c.jsonl",
        &lines(&[
            reply(
                "2026-01-01T00:00:00Z",
                Some("m1"),
                "claude-sonnet-4-20250514",
                long,
            ),
            reply(
                "2026-01-01T00:00:01Z",
                Some("m2"),
                "in-house",
                small.clone(),
            ),
            reply("2026-01-01T00:00:02Z", Some("m3"), "<synthetic>", small),
        ]),
    );
    run_usage(&env);
    let costs = |env: &Env| -> Vec<Value> {
        query(
            env,
            "SELECT model, cost_usd FROM usage_request_costs ORDER BY line",
        )
        .iter()
        .map(|r| r["cost_usd"].clone())
        .collect()
    };
    // Sonnet 4 past 200,000 tokens of a kind: those tokens at the long-context
    // rate. Input 200k at $3 and 50k at $6 per million, output $15, cache
    // writes $3.75 (5 minutes) and $6 (1 hour), reads 200k at $0.30 and 100k
    // at $0.60: $1.04475. A model without a price costs NULL, never $0.
    let got = costs(&env);
    assert!((got[0].as_f64().unwrap() - 1.04475).abs() < 1e-9, "{got:?}");
    assert_eq!((&got[1], &got[2]), (&Value::Null, &Value::Null));

    // A price in the config applies to what is already stored.
    env.write_config(
        &toml::from_str::<toml::Table>("[prices.in-house]\ninput = 1.0\noutput = 2.0\n").unwrap(),
    );
    let report = run_usage(&env);
    assert_eq!(report["processed"], 0, "{report}");
    let got = costs(&env);
    assert!((got[1].as_f64().unwrap() - 0.003).abs() < 1e-12, "{got:?}");
    let source: String =
        env.scalar("SELECT source FROM usage_model_prices WHERE model = 'in-house'");
    assert_eq!(source, "config");
}

#[test]
fn a_price_that_is_no_price_is_a_config_error() {
    let env = Env::new();
    for (section, says) in [
        (
            "[prices.m]\ninput = -1.0\noutput = 1.0\n",
            "input must be from 0",
        ),
        ("[prices.m]\ninput = 1.0\n", "missing field `output`"),
        (
            "[prices.m]\ninput = 1.0\noutput = 1.0\ncache = 2.0\n",
            "unknown field `cache`",
        ),
    ] {
        env.write_config(&toml::from_str::<toml::Table>(section).unwrap());
        env.cmd()
            .args(["run", "usage"])
            .assert()
            .code(78)
            .stderr(predicates::str::contains(says));
    }
}

pub(crate) fn reference(name: &str) -> Value {
    let path = std::path::Path::new(crate::util::FIXTURES).join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub(crate) fn within_a_thousandth(ours: f64, theirs: f64, what: &str) {
    assert!(
        (ours - theirs).abs() <= theirs.abs() * 1e-3,
        "{what}: {ours} against ccusage's {theirs}"
    );
}

#[test]
fn cost_per_session_and_per_day_and_model_equals_ccusage() {
    let env = Env::new();
    env.copy_fixtures("sniffly", "chip");
    run_usage(&env);
    let sessions = reference("ccusage-sniffly.json");
    for expected in sessions["sessions"].as_array().unwrap() {
        let file = format!("chip/{}.jsonl", expected["sessionId"].as_str().unwrap());
        let cost: f64 = env.scalar(&format!(
            "SELECT sum(cost_usd) FROM usage_request_costs WHERE session_file = '{file}'"
        ));
        within_a_thousandth(cost, expected["totalCost"].as_f64().unwrap(), &file);
    }
    let daily = reference("ccusage-sniffly-daily.json");
    let ours = query(
        &env,
        "SELECT substr(occurred_at, 1, 10) AS day, model, sum(input_tokens) AS i,
                sum(output_tokens) AS o, sum(cache_creation_tokens) AS cc,
                sum(cache_read_tokens) AS cr, sum(cost_usd) AS cost
         FROM usage_request_costs WHERE model != '<synthetic>'
         GROUP BY day, model ORDER BY day, model",
    );
    let mut theirs = Vec::new();
    for day in daily["daily"].as_array().unwrap() {
        for m in day["modelBreakdowns"].as_array().unwrap() {
            theirs.push((day["date"].clone(), m.clone()));
        }
    }
    assert_eq!(ours.len(), theirs.len(), "{ours:?}");
    for (row, (date, m)) in ours.iter().zip(&theirs) {
        assert_eq!((&row["day"], &row["model"]), (date, &m["modelName"]));
        for (a, b) in [
            ("i", "inputTokens"),
            ("o", "outputTokens"),
            ("cc", "cacheCreationTokens"),
            ("cr", "cacheReadTokens"),
        ] {
            assert_eq!(row[a], m[b], "{date} {a}");
        }
        within_a_thousandth(
            row["cost"].as_f64().unwrap(),
            m["cost"].as_f64().unwrap(),
            "day",
        );
    }
}
