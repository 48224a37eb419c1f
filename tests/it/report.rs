//! `sessionpipe report`: sums equal to SQL over the request rows, days in
//! the time zone asked for, prices that are missing said so, output for
//! people, scripts and spreadsheets.

use serde_json::{Value, json};

use crate::usage::{lines, run_usage};
use crate::util::Env;

/// A request of `tokens` input tokens at `ts`.
fn request(id: &str, ts: &str, model: &str, tokens: u64) -> Value {
    json!({"type": "assistant", "timestamp": ts, "requestId": id, "cwd": "/srv/shop",
           "message": {"id": id, "model": model, "content": [],
                       "usage": {"input_tokens": tokens, "output_tokens": 1000}}})
}

/// Alice's session crosses midnight UTC; Bob uses a model without a price.
fn two_users() -> Env {
    let env = Env::new();
    let opus = "claude-opus-4-5-20251101";
    env.session(
        "alice/a.jsonl",
        &lines(&[
            request("m1", "2026-01-01T23:30:00Z", opus, 1_000_000),
            request("m2", "2026-01-02T00:30:00Z", opus, 2_000_000),
        ]),
    );
    env.session(
        "bob/b.jsonl",
        &lines(&[request("m3", "2026-01-02T12:00:00Z", "in-house", 500)]),
    );
    run_usage(&env);
    env
}

/// `report ARGS --json`, which must succeed: its rows.
pub(crate) fn report(env: &Env, args: &[&str]) -> Vec<Value> {
    let out = env
        .cmd()
        .arg("report")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn json_rows_equal_sql_sums_over_the_requests() {
    let env = two_users();
    let rows = report(&env, &["daily", "--by", "user,model"]);
    let conn = env.db();
    let mut stmt = conn
        .prepare(
            "SELECT substr(occurred_at, 1, 10), username, model, sum(input_tokens),
                    sum(output_tokens), sum(cost_usd)
             FROM usage_request_costs GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        )
        .unwrap();
    let sql: Vec<Value> = stmt
        .query_map([], |r| {
            Ok(json!([
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Option<f64>>(5)?
            ]))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let ours: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!([
                r["date"],
                r["username"],
                r["model"],
                r["input_tokens"],
                r["output_tokens"],
                r["cost_usd"]
            ])
        })
        .collect();
    assert_eq!(ours, sql);
    // Opus 4.5: $5 input, $25 output per million tokens; the model without
    // a price costs null, not $0.
    assert_eq!(rows[0]["cost_usd"], json!(5.025));
    assert_eq!(rows[0]["total_tokens"], 1_001_000);
    assert_eq!(rows[2]["cost_usd"], Value::Null);
}

#[test]
fn days_weeks_and_months_are_those_of_the_time_zone_asked_for() {
    let env = two_users();
    let days = |tz: &str| -> Vec<(Value, Value)> {
        report(&env, &["--tz", tz, "--user", "alice"])
            .iter()
            .map(|r| (r["date"].clone(), r["input_tokens"].clone()))
            .collect()
    };
    assert_eq!(
        days("UTC"),
        [
            (json!("2026-01-01"), json!(1_000_000)),
            (json!("2026-01-02"), json!(2_000_000))
        ]
    );
    assert_eq!(
        days("Asia/Tokyo"),
        [(json!("2026-01-02"), json!(3_000_000))]
    );
    assert_eq!(
        days("America/New_York"),
        [(json!("2026-01-01"), json!(3_000_000))]
    );
    let weeks = report(&env, &["weekly", "--tz", "Asia/Tokyo"]);
    assert_eq!((&weeks[0]["week"], weeks.len()), (&json!("2026-W01"), 1));
    let months = report(&env, &["monthly", "--by", "project"]);
    assert_eq!(
        (&months[0]["month"], &months[0]["project"]),
        (&json!("2026-01"), &json!("/srv/shop"))
    );
    let since = report(&env, &["--since", "2026-01-02", "--until", "2026-01-02"]);
    assert_eq!(since.len(), 1);
    assert_eq!(since[0]["input_tokens"], 2_000_500);
    let sessions = report(&env, &["session"]);
    let files: Vec<&Value> = sessions.iter().map(|r| &r["session_file"]).collect();
    assert_eq!(files, [&json!("alice/a.jsonl"), &json!("bob/b.jsonl")]);
}

#[test]
fn the_table_fits_100_columns_totals_and_says_which_models_lack_prices() {
    let env = two_users();
    // Big figures and a long folder: the folder wraps, figures never do.
    let sonnet = "claude-sonnet-4-5-20250929";
    let mut big = request("m9", "2026-01-02T13:00:00Z", sonnet, 1_234_567_890);
    big["cwd"] = json!("/home/carol/projects/a-rather-long-monorepo-name/services/billing");
    env.session("carol/c.jsonl", &lines(&[big]));
    run_usage(&env);
    let out = env
        .cmd()
        .args(["report", "--by", "user,model,project"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    for line in text.lines() {
        assert!(line.chars().count() <= 100, "{line:?}");
        assert_eq!(line, line.trim_end(), "trailing blanks");
    }
    assert!(
        text.contains("2026-01-02  carol") && text.contains("1,234,567,890"),
        "{text}"
    );
    let total = text.lines().find(|l| l.starts_with("Total")).unwrap();
    assert!(
        total.contains("1,237,568,390") && total.ends_with("n/a"),
        "{total}"
    );
    assert!(text.contains("$5.03") && text.contains("$10.03"), "{text}");
    assert!(text.contains("no price for in-house"), "{text}");

    let csv = env.cmd().args(["report", "--csv"]).output().unwrap();
    let csv = String::from_utf8(csv.stdout).unwrap();
    assert_eq!(
        csv.lines().next().unwrap(),
        "date,input_tokens,output_tokens,cache_creation_tokens,cache_read_tokens,total_tokens,cost_usd"
    );
    assert!(
        csv.lines().nth(2).unwrap().ends_with(','),
        "no price, no figure: {csv}"
    );
}

#[test]
fn bad_arguments_are_usage_errors_and_a_run_in_progress_does_not_block() {
    let env = two_users();
    for args in [
        &["--tz", "Mars/Olympus"][..],
        &["--since", "2026-13-01"],
        &["--user", "a/b"],
        &["--by", "colour"],
        &["yearly"],
    ] {
        env.cmd().arg("report").args(args).assert().code(2);
    }
    // A writer in the middle of a transaction.
    let conn = env.db();
    conn.execute_batch("BEGIN IMMEDIATE; DELETE FROM usage_requests;")
        .unwrap();
    assert_eq!(
        report(&env, &[]).len(),
        2,
        "two days, as before the writer began"
    );
    conn.execute_batch("ROLLBACK").unwrap();
}
