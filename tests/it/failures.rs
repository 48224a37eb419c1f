//! Failing sessions: backoff, quarantine, release; unreadable and hostile files.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::util::{Env, LINE, age, append, n};

/// A processor that fails while `fail` exists next to the database.
fn flaky_env() -> Env {
    let env = Env::new();
    let flag = env.path("fail");
    fs::write(&flag, "").unwrap();
    env.processors(&[(
        "flaky",
        &env.recorder(&format!(
            "if [ -e '{}' ]; then echo 'boom: bad session' >&2; exit 7; fi",
            flag.display()
        )),
    )]);
    env
}

#[test]
fn failure_backoff_quarantine_and_release_by_content_change() {
    let env = flaky_env();
    let a = env.session("u/a.jsonl", LINE);
    env.session("u/ok.jsonl", LINE);
    env.processors(&[(
        "flaky",
        &env.recorder(&format!(
            "case \"$SESSIONPIPE_SESSION_FILE\" in *a.jsonl) if [ -e '{}' ]; then echo 'boom: bad session' >&2; exit 7; fi;; esac",
            env.path("fail").display()
        )),
    )]);

    let out = env
        .cmd()
        .args(["run", "flaky", "--max-attempts", "3"])
        .assert()
        .code(1);
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(
        stderr.contains(
            "sessionpipe: flaky: u/a.jsonl: exited with status 7; stderr: boom: bad session"
        ),
        "{stderr}"
    );
    assert_eq!(env.status("flaky", "u/a.jsonl").as_deref(), Some("failed"));
    assert_eq!(
        env.status("flaky", "u/ok.jsonl").as_deref(),
        Some("ok"),
        "the others go on"
    );
    let processed_at: Option<String> = env.scalar(
        "SELECT processed_at FROM session_processor_state WHERE session_file = 'u/a.jsonl'",
    );
    assert_eq!(
        processed_at, None,
        "a failed session is not marked processed"
    );

    // Within the backoff: not retried.
    let report = env.run_one(&["flaky", "--max-attempts", "3"], 0);
    assert_eq!(n(&report, "candidates"), 0);
    assert_eq!(env.calls().len(), 2);

    // Due: retried, and the third failure quarantines.
    env.make_retries_due();
    let report = env.run_one(&["flaky", "--max-attempts", "3"], 1);
    assert_eq!((n(&report, "errors"), n(&report, "quarantined")), (1, 0));
    env.make_retries_due();
    let report = env.run_one(&["flaky", "--max-attempts", "3"], 1);
    assert_eq!((n(&report, "errors"), n(&report, "quarantined")), (1, 1));
    assert_eq!(
        env.status("flaky", "u/a.jsonl").as_deref(),
        Some("quarantined")
    );
    assert_eq!(env.calls().len(), 4);

    // Quarantined: left alone, even when due and touched.
    env.make_retries_due();
    let f = fs::File::options().write(true).open(&a).unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(100))
        .unwrap();
    let report = env.run_one(&["flaky", "--max-attempts", "3"], 0);
    assert_eq!(n(&report, "skipped"), 1);
    assert_eq!(env.calls().len(), 4);

    // New content releases it.
    fs::remove_file(env.path("fail")).unwrap();
    append(&a, LINE);
    age(&a);
    let report = env.run_one(&["flaky", "--max-attempts", "3"], 0);
    assert_eq!(n(&report, "processed"), 1);
    assert_eq!(env.status("flaky", "u/a.jsonl").as_deref(), Some("ok"));
}

#[test]
fn requeue_releases_quarantined_sessions() {
    let env = flaky_env();
    env.session("u/a.jsonl", LINE);
    env.run_one(&["flaky", "--max-attempts", "1"], 1);
    assert_eq!(
        env.status("flaky", "u/a.jsonl").as_deref(),
        Some("quarantined")
    );

    let out = env.cmd().args(["state", "--failed"]).assert().success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(
        text.contains("u/a.jsonl") && text.contains("quarantined after 1 attempts"),
        "{text}"
    );
    assert!(text.contains("boom: bad session"), "{text}");

    env.cmd()
        .args(["state", "requeue", "flaky", "--quarantined"])
        .assert()
        .success()
        .stdout("flaky: requeued 1 sessions\n");
    fs::remove_file(env.path("fail")).unwrap();
    let report = env.run_one(&["flaky", "--max-attempts", "1"], 0);
    assert_eq!(n(&report, "processed"), 1);
    assert_eq!(env.status("flaky", "u/a.jsonl").as_deref(), Some("ok"));

    // Requeueing a processed file by name reprocesses it.
    env.cmd()
        .args(["state", "requeue", "flaky", "u/a.jsonl"])
        .assert()
        .success();
    assert_eq!(n(&env.run_one(&["flaky"], 0), "processed"), 1);
    env.cmd()
        .args(["state", "requeue", "flaky", "u/nope.jsonl"])
        .assert()
        .code(2);
}

#[test]
fn reset_forgets_everything() {
    let env = Env::new();
    env.processors(&[("count", &env.recorder(""))]);
    env.session("u/a.jsonl", LINE);
    env.run_one(&["count"], 0);
    env.cmd()
        .args(["state", "reset", "count"])
        .assert()
        .success();
    assert_eq!(n(&env.run_one(&["count"], 0), "processed"), 1);
    assert_eq!(env.calls().len(), 2);
    // A gone file's row outlives a reset, so that prune still reaches it.
    fs::remove_file(env.data.join("u/a.jsonl")).unwrap();
    // Other content: not a rename of the gone file.
    env.session("u/b.jsonl", &format!("{LINE}{LINE}"));
    env.run_one(&["count"], 0);
    env.cmd()
        .args(["state", "reset", "count"])
        .assert()
        .success();
    assert_eq!(env.status("count", "u/a.jsonl").as_deref(), Some("gone"));
    env.cmd()
        .args(["state", "prune", "count", "--gone"])
        .assert()
        .success();
    let left: i64 =
        env.scalar("SELECT count(*) FROM session_processor_state WHERE session_file = 'u/a.jsonl'");
    assert_eq!(left, 0);
}

#[test]
fn symlinked_file_or_folder_is_never_read() {
    let env = Env::new();
    env.processors(&[("count", &env.recorder(""))]);
    let outside = env.path("secret.jsonl");
    fs::write(&outside, "{\"secret\":1}\n").unwrap();
    let outside_dir = env.path("elsewhere");
    fs::create_dir(&outside_dir).unwrap();
    fs::write(outside_dir.join("x.jsonl"), LINE).unwrap();
    env.session("u/real.jsonl", LINE);
    std::os::unix::fs::symlink(&outside, env.data.join("u/link.jsonl")).unwrap();
    std::os::unix::fs::symlink(&outside_dir, env.data.join("linked-user")).unwrap();

    let out = env.cmd().args(["run", "count"]).assert().success();
    let stderr = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(stderr.contains("skipping symlinked file"), "{stderr}");
    assert!(stderr.contains("skipping symlinked folder"), "{stderr}");
    assert_eq!(env.calls(), vec![format!("u/real.jsonl {}", LINE.len())]);
    // -q silences the warnings.
    env.cmd()
        .args(["-q", "run", "count"])
        .assert()
        .success()
        .stderr("");
}

#[test]
fn unreadable_file_is_an_error_while_the_others_are_processed() {
    let env = Env::new();
    env.processors(&[("count", &env.recorder(""))]);
    env.session("u/a.jsonl", LINE);
    let locked = env.session("u/locked.jsonl", LINE);
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();

    // Root reads anything: the run is made as nobody.
    let mut cmd = env.cmd_unprivileged(&[&locked]);
    let out = cmd.args(["run", "count", "--json"]).assert().code(1);
    let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(n(&report, "processed"), 1);
    assert_eq!(n(&report, "errors"), 1);
    assert_eq!(report["errors_detail"][0]["session"], "u/locked.jsonl");
    let error = report["errors_detail"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("cannot read the file") && error.contains("ermission denied"),
        "{error}"
    );
    assert_eq!(env.calls(), vec![format!("u/a.jsonl {}", LINE.len())]);
}

#[test]
fn an_unreadable_user_folder_is_an_error_that_names_it_even_under_q() {
    let env = Env::new();
    env.processors(&[("count", &env.recorder(""))]);
    env.session("u/a.jsonl", LINE);
    env.session("shut/b.jsonl", LINE);
    let shut = env.data.join("shut");
    env.run_one(&["count"], 0);
    crate::util::append(&env.data.join("u/a.jsonl"), LINE);
    crate::util::age(&env.data.join("u/a.jsonl"));
    // Root reads anything: the run is made as nobody.
    let mut cmd = env.cmd_unprivileged(&[]);
    fs::set_permissions(&shut, fs::Permissions::from_mode(0o000)).unwrap();
    let out = cmd.args(["-q", "run", "count", "--json"]).assert().code(1);
    let output = out.get_output();
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(n(&report, "processed"), 1);
    assert_eq!(n(&report, "errors"), 1);
    assert_eq!(report["errors_detail"][0]["session"], "shut/");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("shut") && stderr.contains("ermission denied"),
        "{stderr}"
    );
    fs::set_permissions(&shut, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn interrupted_attempts_count_toward_quarantine() {
    // A session that takes the whole process down every time must not be
    // retried for ever: the attempt is recorded before the processor runs.
    let env = Env::new();
    env.processors(&[("count", &env.recorder(""))]);
    env.session("u/a.jsonl", LINE);
    env.run_one(&["count"], 0);
    let hash: String = env.scalar("SELECT file_hash FROM session_processor_state");
    env.db()
        .execute(
            "UPDATE session_processor_state SET status = 'processing', attempts = 2, attempt_hash = ?1",
            [&hash],
        )
        .unwrap();
    let report = env.run_one(&["count", "--max-attempts", "2"], 1);
    assert_eq!(n(&report, "quarantined"), 1);
    assert!(
        report["errors_detail"][0]["error"]
            .as_str()
            .unwrap()
            .contains("interrupted")
    );
    assert_eq!(env.calls().len(), 1, "not run a third time");
}

#[test]
fn tempfail_waits_a_backoff_without_counting_and_three_in_a_row_stop_the_run() {
    let env = Env::new();
    let flag = env.path("busy");
    fs::write(&flag, "").unwrap();
    env.processors(&[(
        "remote",
        &env.recorder(&format!(
            "if [ -e '{}' ]; then echo 'upstream busy' >&2; exit 75; fi",
            flag.display()
        )),
    )]);
    for i in 0..5 {
        env.session(&format!("u/{i}.jsonl"), LINE);
    }
    let report = env.run_one(&["remote", "--jobs", "1", "--max-attempts", "1"], 1);
    assert_eq!(n(&report, "errors"), 3);
    assert_eq!(
        n(&report, "quarantined"),
        0,
        "transient failures never quarantine"
    );
    assert_eq!(n(&report, "capped"), 2, "the run stopped early");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("3 transient failures in a row")
    );
    let attempts: i64 = env.scalar("SELECT max(attempts) FROM session_processor_state");
    assert_eq!(attempts, 0);

    // The two left over are tried, and say "not now" too...
    let report = env.run_one(&["remote"], 1);
    assert_eq!(n(&report, "errors"), 2);
    // ...and until the backoff is over, the next runs leave all five alone,
    // and say nothing.
    let out = env.cmd().args(["run", "remote"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    // Then it is retried, still never charged.
    fs::remove_file(&flag).unwrap();
    env.make_retries_due();
    let report = env.run_one(&["remote", "--max-attempts", "1"], 0);
    assert_eq!(n(&report, "processed"), 5);
}

#[test]
fn running_out_of_descriptors_charges_no_session() {
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    env.processors(&[("slow", &env.recorder("sleep 0.3"))]);
    for i in 0..60 {
        env.session(&format!("u/{i}.jsonl"), LINE);
    }
    let mut cmd = env.std_cmd();
    cmd.args(["run", "slow", "--jobs", "40", "--max-attempts", "1"]);
    // SAFETY: setrlimit is async-signal-safe and only reads the struct.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 48,
                rlim_max: 48,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(74),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let charged: i64 = env.scalar(
        "SELECT count(*) FROM session_processor_state WHERE attempts > 0 OR status = 'quarantined'",
    );
    let errors: Vec<String> = env
        .db()
        .prepare(
            "SELECT last_error FROM session_processor_state WHERE attempts > 0 OR status = 'quarantined'",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        charged, 0,
        "no session charged for the machine's limits: {errors:?}"
    );
    let report = env.run_one(&["slow", "--jobs", "8"], 0);
    assert!(n(&report, "processed") > 0);
}
