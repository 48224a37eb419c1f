//! What `verification` costs, and what bounds it: a live session waits to
//! settle, a grown one sends only its new turns, a rewritten one replaces
//! its evidence, and every call's tokens and dollars are recorded and capped.

use std::fs;
use std::path::Path;
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::util::llm::{FakeLlm, Reply};
use crate::util::{Env, age, append, n};
use crate::verification::{
    CORRECTION, KEY, assistant, churn_item, churn_session, count, report, run_verification, user,
};

/// Makes a file look written to just now: its conversation may go on.
fn touch_now(path: &Path) {
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now()).unwrap();
}

fn state_json(env: &Env) -> Value {
    let out = env
        .cmd()
        .env("SESSIONPIPE_LLM_API_KEY", KEY)
        .args(["state", "verification", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    serde_json::from_slice::<Value>(&out.stdout).unwrap()[0].clone()
}

fn config(env: &Env, verification: toml::Table) {
    let mut table = toml::Table::new();
    table.insert("verification".into(), verification.into());
    env.write_config(&table);
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn a_live_session_settles_silently_is_not_stalled_and_is_sent_once_quiet() {
    let env = Env::new();
    let path = env.session("alice/s1.jsonl", &churn_session());
    touch_now(&path);
    let llm = FakeLlm::start(vec![
        Reply::anthropic(json!([churn_item()])),
        Reply::anthropic(json!([])),
    ]);
    let out = run_verification(&env, &llm, "anthropic", &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = report(&out);
    assert_eq!(
        (
            n(&r, "settling"),
            n(&r, "candidates"),
            n(&r, "processed"),
            n(&r, "capped")
        ),
        (1, 0, 0, 0)
    );
    assert!(llm.requests().is_empty(), "not sent while live");
    assert_eq!(
        env.status("verification", "alice/s1.jsonl").as_deref(),
        Some("pending")
    );

    // Settling for two hours, seen for two hours: not a stalled file.
    env.db()
        .execute_batch(
            "UPDATE session_processor_state SET
                 first_seen_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-2 hours'),
                 waiting_since = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-2 hours')",
        )
        .unwrap();
    let state = state_json(&env);
    assert_eq!(
        (state["settling"].as_u64(), state["unprocessed"].as_u64()),
        (Some(1), Some(0))
    );
    let check = env
        .cmd()
        .env("SESSIONPIPE_LLM_API_KEY", KEY)
        .args(["state", "--check", "verification"])
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(0), "{check:?}");

    // Quiet now: sent, and the wait is over.
    age(&path);
    let r = report(&run_verification(&env, &llm, "anthropic", &[]));
    assert_eq!((n(&r, "processed"), n(&r, "settling")), (1, 0));
    assert_eq!(llm.requests().len(), 1);
    let waiting: Option<String> = env.scalar("SELECT waiting_since FROM session_processor_state");
    assert_eq!(waiting, None);
}

#[test]
fn a_wait_ends_with_a_free_skip_and_a_session_live_all_day_is_sent_after_the_longest_wait() {
    let env = Env::new();
    let path = env.session("alice/s1.jsonl", &churn_session());
    let llm = FakeLlm::start(vec![
        Reply::anthropic(json!([churn_item()])),
        Reply::anthropic(json!([])),
    ]);
    let r = report(&run_verification(&env, &llm, "anthropic", &[]));
    assert_eq!(n(&r, "processed"), 1);

    // Touched while live, then left alone: a free skip ends that wait, so
    // the next change waits afresh.
    touch_now(&path);
    let r = report(&run_verification(&env, &llm, "anthropic", &[]));
    assert_eq!(n(&r, "settling"), 1);
    age(&path);
    let r = report(&run_verification(&env, &llm, "anthropic", &[]));
    assert_eq!((n(&r, "skipped"), n(&r, "processed")), (1, 0));
    let waiting: Option<String> = env.scalar("SELECT waiting_since FROM session_processor_state");
    assert_eq!(waiting, None);

    // Live all day: sent once it has waited six hours, though still live.
    append(&path, &user("And churn excludes trial accounts."));
    touch_now(&path);
    let r = report(&run_verification(&env, &llm, "anthropic", &[]));
    assert_eq!((n(&r, "settling"), n(&r, "processed")), (1, 0));
    env.db()
        .execute_batch(
            "UPDATE session_processor_state
             SET waiting_since = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-6 hours', '-1 minute')",
        )
        .unwrap();
    let r = report(&run_verification(&env, &llm, "anthropic", &[]));
    assert_eq!((n(&r, "settling"), n(&r, "processed")), (0, 1));
    assert_eq!(llm.requests().len(), 2);
}

#[test]
fn settle_zero_sends_a_live_session_at_once() {
    let env = Env::new();
    config(&env, toml::toml! { settle = "0s" });
    let path = env.session("alice/s1.jsonl", &churn_session());
    touch_now(&path);
    let llm = FakeLlm::start(vec![Reply::anthropic(json!([]))]);
    let r = report(&run_verification(&env, &llm, "anthropic", &[]));
    assert_eq!((n(&r, "settling"), n(&r, "processed")), (0, 1));
}

fn turns(n: usize, tag: &str) -> String {
    (0..n)
        .map(|i| user(&format!("{tag} question {i}")) + &assistant(&format!("{tag} answer {i}")))
        .collect()
}

#[test]
fn a_grown_session_sends_its_new_turns_after_a_window_of_context_and_keeps_what_it_gave() {
    let env = Env::new();
    config(&env, toml::toml! { context_turns = 2 });
    let opening = turns(5, "EARLY") + &user("How is churn computed?");
    let path = env.session("alice/s1.jsonl", &(opening + &churn_session()));
    let trials = json!({"detection_type": "correction", "title": "Churn excludes trials",
        "content": "Trial accounts are not counted in churn.", "user_quote": "churn excludes trial accounts",
        "domain": "finance", "entities": ["churn"]});
    let llm = FakeLlm::start(vec![
        Reply::anthropic(json!([churn_item()])),
        Reply::anthropic(json!([trials, churn_item()])),
    ]);
    let r = report(&run_verification(&env, &llm, "anthropic", &[]));
    assert_eq!(n(&r, "items_extracted"), 1);

    let more = assistant("Understood.") + &user("No: churn excludes trial accounts.");
    append(&path, &(more + &assistant("Noted.")));
    age(&path);
    let r = report(&run_verification(&env, &llm, "anthropic", &[]));
    assert_eq!(n(&r, "processed"), 1);
    let body = llm.requests()[1].json();
    let prompt = body["messages"][0]["content"].as_str().unwrap();
    assert!(
        prompt.contains(
            "<turn role=\"assistant\" context=\"true\">Churn is computed per calendar month.</turn>"
        ),
        "{prompt}"
    );
    assert!(prompt.contains(&format!(
        "<turn role=\"user\" context=\"true\">{CORRECTION}</turn>"
    )));
    assert!(prompt.contains("<turn role=\"user\">No: churn excludes trial accounts.</turn>"));
    assert!(prompt.contains("<turn role=\"assistant\">Noted.</turn>"));
    assert!(
        !prompt.contains("EARLY"),
        "turns before the window stay out: {prompt}"
    );
    assert_eq!(prompt.matches("<turn ").count(), 5);
    // The earlier fact stays; a quote from a context turn is not evidence again.
    assert_eq!(
        (
            count(&env, "knowledge_items"),
            count(&env, "verification_evidence")
        ),
        (2, 2)
    );
    assert_eq!(
        env.scalar::<i64>("SELECT dropped_unsupported FROM verification_sessions"),
        1
    );

    // Only the assistant spoke since: nothing new to judge, no call.
    append(&path, &assistant("Anything else?"));
    age(&path);
    let r = report(&run_verification(&env, &llm, "anthropic", &[]));
    assert_eq!((n(&r, "processed"), n(&r, "llm_calls")), (1, 0));
    assert_eq!(llm.requests().len(), 2);
    assert_eq!(count(&env, "verification_evidence"), 2);
}

const DEPLOYS: &str = "FYI we deploy on Tuesdays only, never on Fridays.";

fn deploy_item(title: &str, content: &str) -> Value {
    json!({"detection_type": "unprompted_definition", "title": title, "content": content,
           "user_quote": "we deploy on Tuesdays only", "domain": "engineering", "entities": ["deploys"]})
}

#[test]
fn a_rewritten_session_loses_the_evidence_it_no_longer_yields_and_items_left_without_any() {
    let env = Env::new();
    let alice = env.session("alice/s1.jsonl", &(churn_session() + &user(DEPLOYS)));
    env.session("bob/s2.jsonl", &churn_session());
    let deploys = deploy_item(
        "Deploys on Tuesdays",
        "Deploys happen on Tuesdays only, never on Fridays.",
    );
    let deploys_too = deploy_item(
        "Deploys Tuesdays",
        "Deploys happen on Tuesdays only and never on Fridays.",
    );
    let llm = FakeLlm::start(vec![
        Reply::anthropic(json!([churn_item(), deploys, deploys_too])),
        Reply::anthropic(json!([churn_item()])),
        Reply::anthropic(json!([churn_item()])),
        Reply::anthropic(json!([])),
        Reply::anthropic(json!([])),
    ]);
    run_verification(&env, &llm, "anthropic", &["--jobs", "1"]);
    assert_eq!(
        (
            count(&env, "knowledge_items"),
            count(&env, "verification_evidence"),
            count(&env, "knowledge_similar")
        ),
        (3, 4, 1)
    );

    // Rewritten: the deploy remark is gone; its items and link go with it.
    fs::write(
        &alice,
        assistant("Churn is monthly, right?") + &user(CORRECTION),
    )
    .unwrap();
    age(&alice);
    let r = report(&run_verification(&env, &llm, "anthropic", &[]));
    assert_eq!(n(&r, "processed"), 1);
    assert!(
        !llm.requests()[2].json()["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("context=")
    );
    assert_eq!(
        (
            count(&env, "knowledge_items"),
            count(&env, "verification_evidence"),
            count(&env, "knowledge_similar")
        ),
        (1, 2, 0)
    );

    // Rewritten again without the fact: alice's evidence goes, the item
    // stays while bob's session still supports it.
    fs::write(&alice, user("Never mind.")).unwrap();
    age(&alice);
    run_verification(&env, &llm, "anthropic", &[]);
    let left: String = env.scalar("SELECT group_concat(source_ref) FROM verification_evidence");
    assert_eq!(left, "bob/s2.jsonl");
    assert_eq!(count(&env, "knowledge_items"), 1);

    // Requeued, nothing judged before is known: judged afresh, it only adds.
    env.cmd()
        .args(["state", "requeue", "verification", "bob/s2.jsonl"])
        .assert()
        .success();
    let r = report(&run_verification(&env, &llm, "anthropic", &[]));
    assert_eq!((n(&r, "processed"), n(&r, "items_extracted")), (1, 0));
    assert_eq!(count(&env, "verification_evidence"), 1);
    assert_eq!(
        env.scalar::<i64>("SELECT items FROM verification_sessions WHERE username = 'alice'"),
        0
    );
}

fn usage(input: u64, output: u64, write: u64, read: u64) -> Value {
    json!({"input_tokens": input, "output_tokens": output,
           "cache_creation_input_tokens": write, "cache_read_input_tokens": read})
}

#[test]
fn every_calls_tokens_and_dollars_are_summed_per_session_and_shown_by_state() {
    let env = Env::new();
    let alice = env.session("alice/s1.jsonl", &churn_session());
    let llm = FakeLlm::start(vec![
        Reply::anthropic(json!([churn_item()])).usage(usage(1000, 200, 3200, 0)),
        Reply::anthropic(json!([])).usage(usage(500, 100, 0, 3000)),
    ]);
    let r = report(&run_verification(&env, &llm, "anthropic", &[]));
    // claude-haiku-4-5: $1 in, $5 out, $1.25 cache write, $0.10 cache read per million.
    let first = (1000.0 + 1000.0 + 4000.0) / 1e6;
    assert_eq!(
        (
            n(&r, "llm_calls"),
            n(&r, "llm_input_tokens"),
            n(&r, "llm_cache_creation_tokens")
        ),
        (1, 1000, 3200)
    );
    assert!(close(r["cost_usd"].as_f64().unwrap(), first), "{r}");

    append(&alice, &user("Also churn excludes trials."));
    age(&alice);
    let second = (500.0 + 500.0 + 300.0) / 1e6;
    let r = report(&run_verification(&env, &llm, "anthropic", &[]));
    assert!(close(r["cost_usd"].as_f64().unwrap(), second), "{r}");
    let row: (i64, i64, i64, i64, i64, f64) = env.row(
        "SELECT llm_calls, llm_input_tokens, llm_output_tokens, llm_cache_creation_tokens,
                llm_cache_read_tokens, llm_cost_usd FROM verification_sessions",
        |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        },
    );
    assert_eq!(
        (row.0, row.1, row.2, row.3, row.4),
        (2, 1500, 300, 3200, 3000)
    );
    assert!(close(row.5, first + second));

    let state = state_json(&env);
    assert_eq!(state["total_spend"]["llm_calls"], 2);
    assert!(close(
        state["total_spend"]["cost_usd"].as_f64().unwrap(),
        first + second
    ));
    assert_eq!(state["last_run"]["llm_calls"], 1);
    assert!(close(
        state["last_run"]["cost_usd"].as_f64().unwrap(),
        second
    ));
    let text = env
        .cmd()
        .env("SESSIONPIPE_LLM_API_KEY", KEY)
        .args(["state", "verification"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("llm spend  last run $0.0013 (1 call;"),
        "{text}"
    );
    assert!(
        text.contains("all sessions held $0.0073 (2 calls;"),
        "{text}"
    );
}

#[test]
fn an_unusable_answer_is_paid_for_and_the_constant_prompt_is_marked_for_caching() {
    let env = Env::new();
    env.session("alice/s1.jsonl", &churn_session());
    env.session("bob/s2.jsonl", &churn_session());
    let unusable = Reply::json(
        200,
        json!({"content": [{"type": "text", "text": "no JSON"}]}),
    )
    .usage(usage(100, 10, 0, 0));
    let llm = FakeLlm::start(vec![Reply::anthropic(json!([])), unusable]);
    let out = run_verification(&env, &llm, "anthropic", &["--jobs", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let r = report(&out);
    assert_eq!(
        (
            n(&r, "errors"),
            n(&r, "llm_calls"),
            n(&r, "llm_input_tokens")
        ),
        (1, 2, 100)
    );
    assert_eq!(
        env.scalar::<i64>("SELECT sum(llm_calls) FROM verification_sessions"),
        1,
        "a session keeps the spend of the calls that gave its outputs"
    );

    // The constant part of every prompt is marked for Anthropic's cache.
    let bodies: Vec<Value> = llm.requests().iter().map(|r| r.json()).collect();
    assert_eq!(bodies.len(), 2);
    for body in &bodies {
        assert_eq!(
            body["system"][0]["cache_control"],
            json!({"type": "ephemeral"})
        );
        assert_eq!(body["system"], bodies[0]["system"]);
        assert_eq!(body["tools"], bodies[0]["tools"]);
    }
}

#[test]
fn a_dollar_cap_leaves_the_rest_of_the_run_capped() {
    let env = Env::new();
    config(&env, toml::toml! { max_cost_per_run = 0.001 });
    for user in ["a", "b", "c"] {
        env.session(&format!("{user}/s.jsonl"), &churn_session());
    }
    // $0.002 a call: the first reaches the cap.
    let llm = FakeLlm::start(
        (0..3)
            .map(|_| Reply::anthropic(json!([])).usage(usage(2000, 0, 0, 0)))
            .collect(),
    );
    let out = run_verification(&env, &llm, "anthropic", &["--jobs", "1"]);
    assert_eq!(out.status.code(), Some(0));
    let r = report(&out);
    assert_eq!(
        (n(&r, "processed"), n(&r, "capped"), n(&r, "llm_calls")),
        (1, 2, 1)
    );
    assert_eq!(llm.requests().len(), 1);

    // The flag overrides the config; a cap of nothing sends nothing.
    let r = report(&run_verification(
        &env,
        &llm,
        "anthropic",
        &["--max-cost", "0"],
    ));
    assert_eq!((n(&r, "processed"), n(&r, "capped")), (0, 2));
    let r = report(&run_verification(
        &env,
        &llm,
        "anthropic",
        &["--max-cost", "1"],
    ));
    assert_eq!((n(&r, "processed"), n(&r, "capped")), (2, 0));
    for bad in ["-1", "NaN", "inf", "two"] {
        let out = run_verification(&env, &llm, "anthropic", &["--max-cost", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
    }
}

#[test]
fn a_cap_that_cannot_be_counted_makes_verification_unavailable() {
    let env = Env::new();
    config(&env, toml::toml! { max_cost_per_run = 5 });
    env.session("alice/s1.jsonl", &churn_session());
    let llm = FakeLlm::start(vec![]);
    let out = env
        .cmd()
        .env("SESSIONPIPE_LLM_BASE_URL", &llm.url)
        .env("SESSIONPIPE_LLM_API_KEY", KEY)
        .env("SESSIONPIPE_LLM_MODEL", "house-model-7b")
        .args(["run", "verification"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("\"house-model-7b\" has no price"), "{err}");
    assert!(llm.requests().is_empty());

    // Capped by the flag alone, a call without a price reaches the cap.
    fs::write(&env.config, "").unwrap();
    env.session("bob/s2.jsonl", &churn_session());
    env.session("carol/s3.jsonl", &churn_session());
    llm.push(Reply::anthropic(json!([])));
    let out = env
        .cmd()
        .env("SESSIONPIPE_LLM_BASE_URL", &llm.url)
        .env("SESSIONPIPE_LLM_API_KEY", KEY)
        .env("SESSIONPIPE_LLM_MODEL", "house-model-7b")
        .args([
            "run",
            "verification",
            "--json",
            "--jobs",
            "1",
            "--max-cost",
            "5",
        ])
        .output()
        .unwrap();
    let r = report(&out);
    assert_eq!(
        (
            n(&r, "processed"),
            n(&r, "capped"),
            n(&r, "llm_unpriced_calls")
        ),
        (1, 2, 1)
    );
    for (key, value) in [("context_turns", "101"), ("max_cost_per_run", "-2")] {
        fs::write(&env.config, format!("[verification]\n{key} = {value}\n")).unwrap();
        let out = env.cmd().args(["run", "verification"]).output().unwrap();
        assert_eq!(out.status.code(), Some(78), "{key}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(key));
    }
}
