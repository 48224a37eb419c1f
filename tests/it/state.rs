//! `state`: counts, last run, lag, one row, and `--check` for monitors.

use crate::util::{Env, LINE, n};
use predicates::str::contains;

#[test]
fn state_reports_counts_last_run_and_lag() {
    let env = Env::new();
    env.processors(&[("count", "echo '{\"items\": 1}'")]);
    env.session("u/a.jsonl", LINE);
    env.session("u/b.jsonl", LINE);
    env.run_one(&["count"], 0);
    let out = env
        .cmd()
        .args(["state", "count", "--json"])
        .assert()
        .success();
    let state: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let s = &state[0];
    assert_eq!(s["processor"], "count");
    assert_eq!(
        (
            n(s, "tracked"),
            n(s, "processed"),
            n(s, "failing"),
            n(s, "quarantined")
        ),
        (2, 2, 0, 0)
    );
    assert_eq!(s["last_run"]["processed"], 2);
    assert_eq!(s["last_run"]["exit_code"], 0);
    assert_eq!(s["lag_seconds"], 0);
    assert_eq!(s["unprocessed"], 0);

    env.cmd()
        .args(["state", "count"])
        .assert()
        .success()
        .stdout(contains("2 tracked, 2 processed, 0 failing, 0 quarantined"));
    env.cmd()
        .args(["state", "--session", "u/a.jsonl", "--json"])
        .assert()
        .success()
        .stdout(contains("\"items_extracted\": 1"));
    env.cmd()
        .args(["state", "--session", "u/zz.jsonl"])
        .assert()
        .code(2);
    env.cmd().args(["state", "nope"]).assert().code(2);
}

#[test]
fn state_without_a_database_creates_none() {
    let env = Env::new();
    env.processors(&[("count", "true")]);
    env.cmd()
        .args(["state"])
        .assert()
        .success()
        .stdout(contains("last run   never"));
    assert!(!env.db.exists());
}

#[test]
fn check_is_healthy_after_a_run_and_names_what_is_wrong() {
    let env = Env::new();
    let flag = env.path("fail");
    env.processors(&[(
        "count",
        &format!("if [ -e '{}' ]; then exit 1; fi", flag.display()),
    )]);
    env.session("u/a.jsonl", LINE);

    env.cmd()
        .args(["state", "count", "--check"])
        .assert()
        .code(1)
        .stdout(contains("count: no run finished in the last 20m (never)"));

    env.run_one(&["count"], 0);
    env.cmd()
        .args(["state", "count", "--check"])
        .assert()
        .success()
        .stdout("");

    // A new file waiting more than 4x the cadence (dated an hour back; the
    // cadence is 10 minutes) is fine while the runs make progress...
    env.session("u/new.jsonl", LINE);
    env.cmd()
        .args(["state", "count", "--check"])
        .assert()
        .success();
    // ...and unhealthy once no run has processed anything for that long.
    env.db()
        .execute(
            "UPDATE runs SET started_at = '2000-01-01T00:00:00.000Z'",
            [],
        )
        .unwrap();
    env.cmd()
        .args(["state", "count", "--check"])
        .assert()
        .code(1)
        .stdout(contains("u/new.jsonl unprocessed for"));
    env.run_one(&["count"], 0);

    // A stale last run.
    env.db()
        .execute(
            "UPDATE runs SET finished_at = '2000-01-01T00:00:00.000Z'",
            [],
        )
        .unwrap();
    env.cmd()
        .args(["state", "count", "--check"])
        .assert()
        .code(1);
    env.cmd()
        .args(["state", "count", "--check", "--max-age", "100000d"])
        .assert()
        .success();

    // Quarantined sessions.
    std::fs::write(&flag, "").unwrap();
    env.session("u/bad.jsonl", LINE);
    env.run_one(&["count", "--max-attempts", "1"], 1);
    env.cmd()
        .args(["state", "count", "--check", "--json"])
        .assert()
        .code(1)
        .stdout(contains("1 session quarantined"));
}

#[test]
fn a_clock_that_was_ahead_stalls_nothing_and_check_says_so() {
    let env = Env::new();
    env.processors(&[("flaky", &env.recorder("exit 1"))]);
    env.session("u/a.jsonl", LINE);
    env.run_one(&["flaky"], 1);
    env.run_one(&["usage"], 0);
    // A run and a retry stamped by a clock a year ahead, since put right.
    let db = env.db();
    db.execute(
        "UPDATE runs SET started_at = '2099-01-01T00:00:00.000Z', finished_at = '2099-01-01T00:00:01.000Z'",
        [],
    )
    .unwrap();
    db.execute(
        "UPDATE session_processor_state SET next_attempt_at = '2099-01-01T00:00:00.000Z'
         WHERE processor_name = 'flaky'",
        [],
    )
    .unwrap();
    env.cmd()
        .args(["state", "--check"])
        .assert()
        .code(1)
        .stdout(contains("started in the future"));
    let (_, reports) = env.run_json(&["--due"]);
    let ran: Vec<&str> = reports
        .iter()
        .filter_map(|r| r["processor"].as_str())
        .collect();
    assert!(ran.contains(&"usage") && ran.contains(&"flaky"), "{ran:?}");
    let flaky = reports.iter().find(|r| r["processor"] == "flaky").unwrap();
    assert_eq!(n(flaky, "errors"), 1, "the retry was not left for 2099");
}

#[test]
fn a_run_that_died_is_interrupted_not_running_and_check_says_so() {
    let env = Env::new();
    env.session("u/a.jsonl", LINE);
    env.run_one(&["usage"], 0);
    // A run whose process is gone left its row unfinished.
    env.db()
        .execute(
            "INSERT INTO runs (processor_name, started_at, pid)
             VALUES ('usage', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 2147483646)",
            [],
        )
        .unwrap();
    env.cmd()
        .args(["state", "usage"])
        .assert()
        .success()
        .stdout(contains("interrupted"));
    env.cmd()
        .args(["state", "usage", "--check"])
        .assert()
        .code(1)
        .stdout(contains("died before it finished"));
}

#[test]
fn the_last_runs_errors_are_kept_and_shown_by_failed() {
    let env = Env::new();
    let flag = env.path("busy");
    std::fs::write(&flag, "").unwrap();
    env.processors(&[(
        "remote",
        &format!(
            "if [ -e '{}' ]; then echo 'upstream busy' >&2; exit 75; fi",
            flag.display()
        ),
    )]);
    env.session("u/a.jsonl", LINE);
    env.run_one(&["remote"], 1);
    // Kept in the run history...
    let kept: i64 = env.scalar(
        "SELECT count(*) FROM run_errors WHERE session_file = 'u/a.jsonl' AND error LIKE '%upstream busy%'",
    );
    assert_eq!(kept, 1);
    // ...and shown, once, by --failed, even after its row is cleared.
    env.db()
        .execute(
            "UPDATE session_processor_state SET status = 'ok', last_error = NULL",
            [],
        )
        .unwrap();
    let out = env
        .cmd()
        .args(["state", "remote", "--failed", "--json"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["last_run_error"]["session"], "u/a.jsonl");
    env.cmd()
        .args(["state", "remote", "--failed"])
        .assert()
        .success()
        .stdout(contains("in the last run"));
}

#[test]
fn files_a_capped_run_saw_are_timed_from_then() {
    let env = Env::new();
    for name in ["a", "b", "c"] {
        env.session(&format!("u/{name}.jsonl"), LINE);
    }
    env.run_one(&["usage", "--max-sessions", "1"], 0);
    let seen: i64 =
        env.scalar("SELECT count(*) FROM session_processor_state WHERE first_seen_at IS NOT NULL");
    assert_eq!(seen, 3, "every file the run saw, processed or capped");
    let waiting: i64 =
        env.scalar("SELECT count(*) FROM session_processor_state WHERE status = 'pending'");
    assert_eq!(waiting, 2);
    env.run_one(&["usage"], 0);
    let ok: i64 = env.scalar("SELECT count(*) FROM session_processor_state WHERE status = 'ok'");
    assert_eq!(ok, 3);
}

#[test]
fn a_run_holding_its_lock_is_running() {
    let env = Env::new();
    env.session("u/a.jsonl", LINE);
    let held = env.hold("slow", &[]);
    env.cmd()
        .args(["state", "slow"])
        .assert()
        .success()
        .stdout(contains(", running"));
    held.release();
}
