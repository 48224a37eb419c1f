//! Crashes at every named failure point and at random moments: the rerun
//! must leave exactly the tables of one uninterrupted run.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::{Env, LINE, kill_after, kill_moments};

fn reference() -> Vec<String> {
    let env = Env::new();
    env.fixture_corpus();
    env.run_one(&["usage"], 0);
    env.usage_tables()
}

/// After a crash: a clean rerun (no stale lock) gives the reference tables,
/// the database is intact, and nothing is marked processed without outputs.
fn assert_recovers(env: &Env, expected: &[String], what: &str) {
    let (code, _) = env.run_json(&["usage"]);
    assert_eq!(code, 0, "{what}: rerun");
    let integrity: String = env.scalar("PRAGMA integrity_check");
    assert_eq!(integrity, "ok", "{what}");
    let orphans: i64 = env.scalar(
        "SELECT count(*) FROM session_processor_state p
             LEFT JOIN usage_session_summary s USING (session_file)
             WHERE p.processor_name = 'usage' AND p.status = 'ok' AND s.session_file IS NULL",
    );
    assert_eq!(orphans, 0, "{what}: processed without outputs");
    assert_eq!(
        env.usage_tables(),
        expected,
        "{what}: tables differ from one uninterrupted run"
    );
}

#[test]
fn every_failure_point_recovers_exactly() {
    let expected = reference();
    // Commits come in batches, as many as the workers' pace makes: only the
    // first is sure to exist.
    let points = [
        ("after-attempt", &[1, 9, 40][..]),
        ("in-processor", &[1, 9, 40]),
        ("before-commit", &[1, 9, 40]),
        ("during-commit", &[1]),
    ];
    for (point, nths) in points {
        for &nth in nths {
            let env = Env::new();
            env.fixture_corpus();
            let out = env
                .cmd()
                .env("SESSIONPIPE_FAILPOINT", format!("{point}:{nth}"))
                .args(["run", "usage"])
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                None,
                "{point}:{nth} did not crash the run"
            );
            assert_recovers(&env, &expected, &format!("{point}:{nth}"));
        }
    }
}

#[test]
fn kill_9_at_random_moments_recovers_exactly() {
    let expected = reference();
    // How long an uninterrupted run takes here, to spread the kills over it.
    let probe = Env::new();
    probe.fixture_corpus();
    let started = Instant::now();
    probe.run_one(&["usage"], 0);
    let span = started.elapsed();

    let mut killed_mid_run = 0;
    for (round, delay) in kill_moments(span, 30).into_iter().enumerate() {
        let env = Env::new();
        env.fixture_corpus();
        if kill_after(env.std_cmd().args(["run", "usage"]), delay) {
            killed_mid_run += 1;
        }
        assert_recovers(
            &env,
            &expected,
            &format!("kill round {round} after {delay:?}"),
        );
    }
    assert!(
        killed_mid_run >= 10,
        "only {killed_mid_run} of 30 kills landed mid-run"
    );
}

#[test]
fn a_session_that_kills_the_process_is_charged_alone_and_its_bystanders_never() {
    let env = Env::new();
    // The poison session kills sessionpipe itself while the healthy ones are
    // still in their commands, beside it.
    env.processors(&[(
        "fragile",
        &env.recorder(
            "case \"$SESSIONPIPE_SESSION_FILE\" in \
             */poison.jsonl) sleep 0.2; kill -9 $PPID; sleep 5;; \
             *) sleep 0.6;; esac",
        ),
    )]);
    for name in ["a", "b", "c", "d", "poison"] {
        env.session(&format!("u/{name}.jsonl"), LINE);
    }
    for runs in 1.. {
        assert!(runs <= 6, "never quarantined");
        let _ = env
            .cmd()
            .args(["run", "fragile", "--jobs", "5", "--max-attempts", "2"])
            .output()
            .unwrap();
        if runs == 3 {
            // Deaths are counted by the next run. The first had five sessions
            // in flight and charged none; the second, the poison alone,
            // charged it once.
            let poison: (String, i64) = env.row(
                "SELECT status, attempts FROM session_processor_state WHERE session_file = 'u/poison.jsonl'",
                |r| Ok((r.get(0)?, r.get(1)?)),
            );
            assert_eq!(poison, ("processing".to_owned(), 1));
        }
        if env.status("fragile", "u/poison.jsonl").as_deref() == Some("quarantined") {
            break;
        }
    }
    for name in ["a", "b", "c", "d"] {
        let file = format!("u/{name}.jsonl");
        assert_eq!(
            env.status("fragile", &file).as_deref(),
            Some("ok"),
            "{file}"
        );
    }
    let charged: i64 = env.scalar(
        "SELECT count(*) FROM session_processor_state WHERE attempts > 0 AND session_file != 'u/poison.jsonl'",
    );
    assert_eq!(charged, 0, "a bystander was charged");
    // Once its bystanders are done, the poison is retried alone each run.
    let poison_calls = env
        .calls()
        .iter()
        .filter(|c| c.starts_with("u/poison.jsonl"))
        .count();
    assert_eq!(
        poison_calls, 3,
        "together once, then alone until quarantined"
    );
}

/// Starts `run ARGS` and waits until its journal names a session in flight.
fn start_in_flight(env: &Env, args: &[&str], processor: &str) -> std::process::Child {
    let child = env
        .std_cmd()
        .arg("run")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let journal = env.db.with_file_name(format!("state.db.{processor}.lock"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read(&journal).is_ok_and(|j| j.contains(&b'{')) {
        assert!(Instant::now() < deadline, "no session ever in flight");
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

#[test]
fn a_stopping_signal_ends_the_run_promptly_kills_commands_and_charges_nothing() {
    for (signal, code) in [
        (libc::SIGTERM, 143),
        (libc::SIGINT, 130),
        (libc::SIGHUP, 129),
    ] {
        let env = Env::new();
        let survived = env.path("survived");
        env.processors(&[(
            "long",
            &format!("(sleep 2; touch '{}') & sleep 30", survived.display()),
        )]);
        env.session("u/a.jsonl", LINE);
        env.session("u/b.jsonl", LINE);
        let child = start_in_flight(&env, &["long", "--jobs", "1"], "long");
        let pid = i32::try_from(child.id()).unwrap();
        let sent = Instant::now();
        // SAFETY: kill has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let out = child.wait_with_output().unwrap();
        assert!(sent.elapsed() < Duration::from_secs(10), "not prompt");
        assert_eq!(out.status.code(), Some(code), "signal {signal}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("interrupted by SIG"), "{stderr}");
        std::thread::sleep(Duration::from_millis(2500));
        assert!(!survived.exists(), "the command's group outlived the run");
        let charged: i64 = env.scalar(
            "SELECT count(*) FROM session_processor_state WHERE status != 'pending' OR attempts > 0",
        );
        assert_eq!(charged, 0, "nothing charged, nothing recorded as failed");
        let (finished, recorded): (Option<String>, i32) = env
            .row("SELECT finished_at, exit_code FROM runs", |r| {
                Ok((r.get(0)?, r.get(1)?))
            });
        assert!(finished.is_some(), "the run is recorded");
        assert_eq!(recorded, code);
    }
}

#[test]
fn a_stopping_signal_stops_a_built_in_in_a_long_session() {
    let env = Env::new();
    let big = crate::util::LINE.repeat(400_000);
    for name in ["a", "b"] {
        env.session(&format!("u/{name}.jsonl"), &big);
    }
    let child = start_in_flight(&env, &["usage", "--jobs", "1"], "usage");
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(
        unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGTERM) },
        0
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143));
    let failed: i64 = env.scalar(
        "SELECT count(*) FROM session_processor_state WHERE status NOT IN ('ok', 'pending') OR attempts > 0",
    );
    assert_eq!(failed, 0, "nothing charged");
    // The next run does the rest.
    let report = env.run_one(&["usage"], 0);
    assert!(report["processed"].as_u64().unwrap() >= 1);
}

#[test]
fn an_io_error_mid_run_is_74_and_the_counts_are_what_was_committed() {
    let env = Env::new();
    env.fixture_corpus();
    for nth in [1, 2, 3] {
        let out = env
            .cmd()
            .args(["run", "usage", "--json", "--jobs", "1"])
            .env("SESSIONPIPE_FAILPOINT", format!("commit-error:{nth}"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(74), "commit {nth}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let committed: i64 = env.scalar("SELECT count(*) FROM usage_session_summary");
        let recorded: i64 = env.scalar("SELECT sum(processed) FROM runs");
        let reported: i64 = env.scalar(
            "SELECT count(*) FROM session_processor_state WHERE status = 'ok' AND processor_name = 'usage'",
        );
        assert_eq!(committed, reported);
        assert_eq!(recorded, committed, "run history agrees with the tables");
        let total = ["processed", "skipped", "capped", "errors"]
            .iter()
            .map(|f| report[f].as_u64().unwrap())
            .sum::<u64>();
        assert_eq!(total, report["candidates"].as_u64().unwrap(), "{report}");
    }
    assert_recovers(
        &env,
        &{
            let fresh = Env::new();
            fresh.fixture_corpus();
            fresh.run_one(&["usage"], 0);
            fresh.usage_tables()
        },
        "after I/O errors",
    );
}
