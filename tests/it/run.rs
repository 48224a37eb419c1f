//! `run`: change detection, complete lines, budgets, output and exit codes.

use std::fs;

use crate::util::{Env, LINE, age, append, n};

fn counting_env() -> Env {
    let env = Env::new();
    env.processors(&[("count", &env.recorder("echo '{\"items\": 2}'"))]);
    env
}

#[test]
fn unchanged_tree_is_stat_only_and_silent() {
    let env = counting_env();
    env.session("alice/a.jsonl", LINE);
    env.session("bob/b.jsonl", LINE);
    env.cmd()
        .args(["run", "count"])
        .assert()
        .success()
        .stdout("")
        .stderr("");
    assert_eq!(env.calls().len(), 2);

    let out = env.cmd().args(["run", "count"]).assert().success();
    out.stdout("").stderr("");
    assert_eq!(
        env.calls().len(),
        2,
        "no processor call over an unchanged tree"
    );
    let report = env.run_one(&["count"], 0);
    assert_eq!(n(&report, "scanned"), 2);
    assert_eq!(
        n(&report, "candidates"),
        0,
        "a stable file is not even read"
    );
}

#[test]
fn json_report_has_every_field() {
    let env = counting_env();
    env.session("alice/a.jsonl", LINE);
    let report = env.run_one(&["count"], 0);
    for field in [
        "processor",
        "scanned",
        "candidates",
        "processed",
        "skipped",
        "capped",
        "errors",
        "quarantined",
        "items_extracted",
        "errors_detail",
        "started_at",
        "duration_ms",
        "exit_code",
    ] {
        assert!(report.get(field).is_some(), "{field} missing from {report}");
    }
    assert_eq!(report["processor"], "count");
    assert_eq!(n(&report, "processed"), 1);
    assert_eq!(
        n(&report, "items_extracted"),
        2,
        "items from the last stdout line"
    );
}

#[test]
fn append_reprocesses_exactly_that_session_and_touch_is_free() {
    let env = counting_env();
    let a = env.session("alice/a.jsonl", LINE);
    let b = env.session("alice/b.jsonl", LINE);
    env.session("bob/c.jsonl", LINE);
    env.run_one(&["count"], 0);
    assert_eq!(env.calls().len(), 3);

    append(&a, LINE);
    age(&a);
    let report = env.run_one(&["count"], 0);
    assert_eq!(n(&report, "processed"), 1);
    let calls = env.calls();
    assert_eq!(calls.len(), 4);
    assert_eq!(calls[3], format!("alice/a.jsonl {}", 2 * LINE.len()));

    // A touch changes the stat but not the content: a free skip, even with
    // a session cap of zero.
    let f = fs::File::options().write(true).open(&b).unwrap();
    f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
        .unwrap();
    let report = env.run_one(&["count", "--max-sessions", "0"], 0);
    assert_eq!(n(&report, "candidates"), 1);
    assert_eq!(n(&report, "skipped"), 1);
    assert_eq!(n(&report, "capped"), 0);
    assert_eq!(env.calls().len(), 4);
    // And the refreshed stat makes the next run stat-only again.
    assert_eq!(n(&env.run_one(&["count"], 0), "candidates"), 0);
}

#[test]
fn trailing_fragment_waits_for_its_newline() {
    let env = counting_env();
    let a = env.session("alice/a.jsonl", &format!("{LINE}{{\"type\":\"us"));
    env.run_one(&["count"], 0);
    assert_eq!(env.calls(), vec![format!("alice/a.jsonl {}", LINE.len())]);

    append(&a, "er\"");
    age(&a);
    let report = env.run_one(&["count"], 0);
    assert_eq!(
        n(&report, "skipped"),
        1,
        "a longer fragment changes nothing"
    );
    assert_eq!(env.calls().len(), 1);

    append(&a, "}\n");
    age(&a);
    env.run_one(&["count"], 0);
    let total = fs::metadata(&a).unwrap().len();
    assert_eq!(env.calls()[1], format!("alice/a.jsonl {total}"));
}

#[test]
fn fragment_only_file_is_processed_as_empty() {
    let env = counting_env();
    env.session("alice/a.jsonl", "{\"partial");
    env.run_one(&["count"], 0);
    assert_eq!(env.calls(), vec!["alice/a.jsonl 0".to_owned()]);
}

#[test]
fn append_in_the_same_second_is_seen() {
    let env = counting_env();
    let path = env.data.join("alice/a.jsonl");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, LINE).unwrap();
    env.run_one(&["count"], 0);
    append(&path, LINE);
    env.run_one(&["count"], 0);
    let calls = env.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[1], format!("alice/a.jsonl {}", 2 * LINE.len()));
}

#[test]
fn max_sessions_caps_and_the_rest_follows() {
    let env = counting_env();
    for i in 0..5 {
        env.session(&format!("u/{i}.jsonl"), LINE);
    }
    let report = env.run_one(&["count", "--max-sessions", "2"], 0);
    assert_eq!((n(&report, "processed"), n(&report, "capped")), (2, 3));
    let report = env.run_one(&["count", "--max-sessions", "2"], 0);
    assert_eq!((n(&report, "processed"), n(&report, "capped")), (2, 1));
    let report = env.run_one(&["count"], 0);
    assert_eq!((n(&report, "processed"), n(&report, "capped")), (1, 0));
    let mut calls = env.calls();
    calls.sort();
    calls.dedup();
    assert_eq!(calls.len(), 5, "each session exactly once");
}

#[test]
fn time_budget_stops_visiting_candidates() {
    let env = Env::new();
    env.processors(&[("slow", &env.recorder("sleep 0.4"))]);
    for i in 0..4 {
        env.session(&format!("u/{i}.jsonl"), LINE);
    }
    let report = env.run_one(&["slow", "--time-budget", "300ms"], 0);
    assert!(n(&report, "processed") >= 1);
    assert!(n(&report, "capped") >= 1, "{report}");
    assert_eq!(n(&report, "processed") + n(&report, "capped"), 4);
    let report = env.run_one(&["slow"], 0);
    assert_eq!(n(&report, "capped"), 0);
    assert_eq!(env.calls().len(), 4);
}

#[test]
fn dry_run_lists_and_changes_nothing() {
    let env = counting_env();
    env.session("alice/a.jsonl", LINE);
    env.cmd()
        .args(["run", "count", "--dry-run"])
        .assert()
        .success()
        .stdout("count: would process alice/a.jsonl\n");
    assert!(env.calls().is_empty());
    assert!(!env.db.exists(), "a dry run creates no database");
    env.run_one(&["count"], 0);
    let a = env.data.join("alice/a.jsonl");
    append(&a, LINE);
    age(&a);
    let before = fs::read(&env.db).unwrap();
    let report = env.run_one(&["count", "--dry-run"], 0);
    assert_eq!(
        report["would_process"],
        serde_json::json!(["alice/a.jsonl"])
    );
    assert_eq!(env.calls().len(), 1);
    assert_eq!(fs::read(&env.db).unwrap(), before);
    assert_eq!(n(&env.run_one(&["count"], 0), "processed"), 1);
}

#[test]
fn exec_gets_the_verified_file_and_the_session_in_its_environment() {
    let env = Env::new();
    let out = env.path("env.txt");
    let content = env.path("content.txt");
    let stdin = env.path("stdin.txt");
    env.processors(&[(
        "show",
        &format!(
            "printf '%s\\n' \"$1\" \"$SESSIONPIPE_PROCESSOR\" \"$SESSIONPIPE_SESSION_FILE\" \
             \"$SESSIONPIPE_SESSION_KEY\" \"$SESSIONPIPE_SESSION_PATH\" \"$SESSIONPIPE_FILE_HASH\" \
             \"$SESSIONPIPE_BYTES\" > '{}'; head -c \"$SESSIONPIPE_BYTES\" \"$1\" > '{}'; \
             head -c \"$SESSIONPIPE_BYTES\" > '{}'",
            out.display(),
            content.display(),
            stdin.display()
        ),
    )]);
    let path = env.session("al ice/a b.jsonl", &format!("{LINE}partial"));
    env.run_one(&["show"], 0);
    let got = fs::read_to_string(out).unwrap();
    let lines: Vec<&str> = got.lines().collect();
    let md5 = {
        use md5::Digest;
        sessionpipe::session::hex(&md5::Md5::digest(LINE.as_bytes()))
    };
    assert_eq!(
        lines,
        vec![
            "/dev/stdin",
            "show",
            "al ice/a b.jsonl",
            "al ice",
            path.to_str().unwrap(),
            md5.as_str(),
            &LINE.len().to_string(),
        ]
    );
    // The file itself, through the argument and on stdin alike.
    assert_eq!(fs::read_to_string(content).unwrap(), LINE);
    assert_eq!(fs::read_to_string(stdin).unwrap(), LINE);
}

#[test]
fn exec_timeout_kills_the_command_and_its_children() {
    let env = Env::new();
    let marker = env.path("survived");
    let script = format!("(sleep 3; touch '{}') & sleep 30", marker.display());
    let hang = crate::util::exec(&["sh", "-c", &script], &[("timeout", "500ms".into())]);
    env.write_config(&crate::util::declaring(vec![("hang", hang)]));
    env.session("u/a.jsonl", LINE);
    let started = std::time::Instant::now();
    let report = env.run_one(&["hang"], 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let error = report["errors_detail"][0]["error"].as_str().unwrap();
    assert!(error.contains("timed out after 500ms"), "{error}");
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(
        !marker.exists(),
        "a child of the timed-out command survived"
    );
}

#[test]
fn processors_run_one_after_another_and_one_failing_does_not_stop_the_next() {
    let env = Env::new();
    env.processors(&[("bad", "exit 3"), ("good", &env.recorder(""))]);
    env.session("u/a.jsonl", LINE);
    let (code, reports) = env.run_json(&["bad", "good"]);
    assert_eq!(code, 1);
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0]["exit_code"], 1);
    assert_eq!(reports[1]["exit_code"], 0);
    assert_eq!(env.calls().len(), 1);
    let (code, reports) = env.run_json(&["--all"]);
    assert_eq!(
        code, 0,
        "bad is waiting for its retry: nothing failed this time"
    );
    let names: Vec<&str> = reports
        .iter()
        .map(|r| r["processor"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["usage", "bad", "good"],
        "built-ins first, then by name"
    );
}

#[test]
fn due_runs_only_processors_whose_cadence_elapsed() {
    let env = counting_env();
    env.session("u/a.jsonl", LINE);
    let (code, reports) = env.run_json(&["--due"]);
    assert_eq!((code, reports.len()), (0, 2), "usage and count never ran");
    let (code, reports) = env.run_json(&["--due"]);
    assert_eq!((code, reports.len()), (0, 0), "ran less than a cadence ago");
    env.db()
        .execute(
            "UPDATE runs SET started_at = '2000-01-01T00:00:00.000Z' WHERE processor_name = 'count'",
            [],
        )
        .unwrap();
    let (_, reports) = env.run_json(&["--due"]);
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["processor"], "count");
}

#[test]
fn every_run_is_recorded() {
    let env = counting_env();
    env.session("u/a.jsonl", LINE);
    env.run_one(&["count"], 0);
    env.run_one(&["count"], 0);
    let (runs, finished, processed): (i64, i64, i64) = env.row("SELECT count(*), count(finished_at), sum(processed) FROM runs WHERE processor_name = 'count'", |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)));
    assert_eq!((runs, finished, processed), (2, 2, 1));
}

#[test]
fn an_unchanged_tick_leaves_its_commits_in_the_wal() {
    let env = counting_env();
    let log = env.db.with_extension("db-wal");
    // A run that creates the database checkpoints its schema, even with
    // nothing to read.
    assert_eq!(n(&env.run_one(&["count"], 0), "candidates"), 0);
    assert!(
        !log.exists(),
        "a new database's file alone holds its schema"
    );
    env.session("u/a.jsonl", LINE);
    env.run_one(&["count"], 0);
    assert!(!log.exists(), "checkpointed into the database file at exit");
    // An unchanged tree: its history row waits in the log, no fsync spent.
    assert_eq!(n(&env.run_one(&["count"], 0), "candidates"), 0);
    assert!(log.exists());
    env.session("u/b.jsonl", LINE);
    env.run_one(&["count"], 0);
    assert!(!log.exists());
    // A copy of the database file alone holds all four runs.
    let copy = env.path("copy.db");
    fs::copy(&env.db, &copy).unwrap();
    let runs: i64 = rusqlite::Connection::open(&copy)
        .unwrap()
        .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(runs, 4);
}

#[test]
fn a_file_dated_in_the_future_is_read_once_not_on_every_run() {
    let env = Env::new();
    let path = env.session("u/a.jsonl", LINE);
    let f = fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(86_400))
        .unwrap();
    assert_eq!(n(&env.run_one(&["usage"], 0), "processed"), 1);
    let again = env.run_one(&["usage"], 0);
    assert_eq!(n(&again, "candidates"), 0, "{again}");
}

#[test]
fn a_settled_final_line_without_a_newline_counts_a_live_one_waits() {
    let env = Env::new();
    let last = LINE.trim_end();
    // Quiet for an hour.
    env.session("u/settled.jsonl", &format!("{LINE}{last}"));
    // Changed half an hour ago, with a settle time of two hours: a line
    // perhaps still being written.
    let live = env.data.join("u/live.jsonl");
    fs::write(&live, format!("{LINE}{last}")).unwrap();
    fs::File::options()
        .write(true)
        .open(&live)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(1800))
        .unwrap();
    let settle = |time: &str| {
        let mut table = toml::Table::new();
        table.insert("fragment_settle".into(), time.into());
        env.write_config(&table);
    };
    settle("2h");
    // Quiet, but not JSON: never a line, and not read again for it.
    env.session("u/junk.jsonl", &format!("{LINE}{{\"half"));
    env.run_one(&["usage"], 0);
    let prompts = |file: &str| -> i64 {
        env.scalar(&format!(
            "SELECT user_prompts FROM usage_session_summary WHERE session_file = '{file}'"
        ))
    };
    assert_eq!(prompts("u/settled.jsonl"), 1, "an hour old is not past two");
    assert_eq!(prompts("u/live.jsonl"), 1);
    assert_eq!(prompts("u/junk.jsonl"), 1);
    // With the default settle of 10 minutes, both have settled, though
    // neither file changed: they are read again, and their last line counts.
    settle("10m");
    let report = env.run_one(&["usage"], 0);
    assert_eq!(n(&report, "processed"), 2, "{report}");
    assert_eq!(prompts("u/settled.jsonl"), 2);
    assert_eq!(prompts("u/live.jsonl"), 2);
    let bytes: i64 = env.scalar(
        "SELECT bytes_processed FROM session_processor_state WHERE session_file = 'u/settled.jsonl'",
    );
    assert_eq!(
        bytes as usize,
        LINE.len() + last.len(),
        "hashed with its last line"
    );
    // Settled and read: nothing is read again, the junk fragment included.
    let quiet = env.run_one(&["usage"], 0);
    assert_eq!(n(&quiet, "candidates"), 0, "{quiet}");
}
