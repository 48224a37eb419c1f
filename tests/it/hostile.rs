//! Hostile names, files that change under a run, hostile content and a
//! hostile environment: each handled, counted, and never stopping the run.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;

use crate::util::{Env, LINE, age, n};
use predicates::str::contains;
use serde_json::json;

fn state_keys(env: &Env, processor: &str) -> Vec<String> {
    let conn = env.db();
    let mut stmt = conn
        .prepare(
            "SELECT session_file FROM session_processor_state WHERE processor_name = ?1 ORDER BY 1",
        )
        .unwrap();
    stmt.query_map([processor], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn odd_names_are_kept_exact_and_never_reach_a_shell() {
    let env = Env::new();
    let args = env.path("args");
    env.processors(&[(
        "args",
        &format!(
            "printf '%s\\0%s\\0' \"$1\" \"$SESSIONPIPE_SESSION_FILE\" >> '{}'",
            args.display()
        ),
    )]);
    let names = [
        "plain/a.jsonl",
        "with space/b c.jsonl",
        "-dash/-rf.jsonl",
        "quotes/it's \"q\".jsonl",
        "newline/x\ny.jsonl",
        "shell/$(touch PWNED);`touch PWNED`.jsonl",
    ];
    for name in names {
        env.session(name, LINE);
    }
    // A name that is not UTF-8 cannot be a state key: skipped with a warning.
    let bad = env.data.join(OsStr::from_bytes(b"bad\xff.jsonl"));
    fs::create_dir_all(env.data.join("plain")).unwrap();
    fs::write(
        env.data
            .join("plain")
            .join(OsStr::from_bytes(b"bad\xff.jsonl")),
        LINE,
    )
    .unwrap();
    let _ = bad;
    let out = env.cmd().args(["run", "args", "usage"]).assert().success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("non-UTF-8 name"), "{stderr}");

    let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(state_keys(&env, "args"), expected);
    assert_eq!(state_keys(&env, "usage"), expected);
    let passed = fs::read(&args).unwrap();
    let mut passed: Vec<String> = passed
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8(p.to_vec()).unwrap())
        .collect();
    passed.sort();
    // Each command gets the verified file as /dev/stdin, and the name exact.
    let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    want.extend(names.iter().map(|_| "/dev/stdin".to_owned()));
    want.sort();
    assert_eq!(passed, want, "each name arrives exact, in one variable");
    let data = fs::canonicalize(&env.data).unwrap();
    assert!(!env.dir.path().join("PWNED").exists() && !data.join("PWNED").exists());
}

#[test]
fn a_symlink_to_a_secret_never_reaches_a_processor() {
    let env = Env::new();
    env.processors(&[("cat", &env.recorder("cat \"$1\" >> /dev/null"))]);
    env.session("u/real.jsonl", LINE);
    std::os::unix::fs::symlink("/etc/shadow", env.data.join("u/shadow.jsonl")).unwrap();
    std::os::unix::fs::symlink("/etc", env.data.join("etc")).unwrap();
    fs::write(env.path("passwd.jsonl"), "{\"secret\":true}\n").unwrap();
    std::os::unix::fs::symlink(env.path("passwd.jsonl"), env.data.join("u/passwd.jsonl")).unwrap();
    env.cmd()
        .args(["-q", "run", "cat", "usage"])
        .assert()
        .success();
    assert_eq!(env.calls(), vec![format!("u/real.jsonl {}", LINE.len())]);
    assert_eq!(state_keys(&env, "usage"), vec!["u/real.jsonl"]);
}

#[test]
fn files_deleted_or_replaced_during_a_run_are_skipped_and_seen_next_time() {
    let env = Env::new();
    let (b, c) = (env.data.join("u/b.jsonl"), env.data.join("u/c.jsonl"));
    // Processing a deletes b and replaces c (a new file, a new inode).
    let script = env.recorder(&format!(
        "case \"$SESSIONPIPE_SESSION_FILE\" in */a.jsonl) rm -f '{b}'; printf '%s\\n%s\\n' '{{}}' '{{}}' > '{c}.new'; mv '{c}.new' '{c}';; esac",
        b = b.display(),
        c = c.display()
    ));
    env.processors(&[("count", &script)]);
    for name in ["a", "b", "c", "d"] {
        env.session(&format!("u/{name}.jsonl"), LINE);
    }
    let report = env.run_one(&["count", "--jobs", "1"], 0);
    assert_eq!((n(&report, "processed"), n(&report, "skipped")), (2, 2));
    let report = env.run_one(&["count", "--jobs", "1"], 0);
    assert_eq!(n(&report, "processed"), 1, "the new c");
    let calls = env.calls();
    assert_eq!(calls.last().unwrap(), "u/c.jsonl 6");
    assert!(!calls.iter().any(|c| c.starts_with("u/b.jsonl")));
}

#[test]
fn a_truncated_file_is_reprocessed_whole() {
    let env = Env::new();
    let tool = |id: &str| {
        format!(
            "{}\n",
            json!({"type": "assistant", "uuid": id, "message": {"id": id, "content": [
                {"type": "tool_use", "id": id, "name": "Bash", "input": {}}]}})
        )
    };
    let path = env.session("u/t.jsonl", &(tool("t1") + &tool("t2") + &tool("t3")));
    env.run_one(&["usage"], 0);
    fs::write(&path, tool("t9")).unwrap();
    age(&path);
    assert_eq!(n(&env.run_one(&["usage"], 0), "processed"), 1);
    let events: Vec<String> = {
        let conn = env.db();
        let mut stmt = conn.prepare("SELECT event_uuid FROM usage_events").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(events, vec!["t9"], "old outputs replaced");
}

#[test]
fn hostile_content_gets_a_clear_outcome() {
    let env = Env::new();
    let deep = format!(
        "{{\"type\":\"user\",\"message\":{{\"content\":{}{}}}}}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let mut bytes: Vec<u8> = Vec::new();
    bytes.extend_from_slice(deep.as_bytes());
    bytes.extend_from_slice(b"{\"type\":\"user\",\"message\":{\"content\":\"nul \0 inside\"}}\n");
    bytes.extend_from_slice(
        b"{\"type\":\"user\",\"message\":{\"content\":\"bad \xff\xfe utf8\"}}\n",
    );
    bytes.extend_from_slice(b"\0\0\0\0\n");
    bytes.extend_from_slice(LINE.as_bytes());
    let path = env.data.join("u/hostile.jsonl");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, &bytes).unwrap();
    age(&path);
    env.session("u/empty.jsonl", "");
    env.session("u/fragment.jsonl", "{\"type\":\"user\"");
    let report = env.run_one(&["usage"], 0);
    assert_eq!(n(&report, "processed"), 3);
    let malformed: i64 = env.scalar(
        "SELECT malformed_lines FROM usage_session_summary WHERE session_file = 'u/hostile.jsonl'",
    );
    // NUL bytes and invalid UTF-8 are malformed; the deep line is valid JSON
    // and is read without recursion.
    assert_eq!(malformed, 3);
}

#[test]
fn a_busy_database_fails_cleanly_and_loses_nothing() {
    let env = Env::new();
    let mut table = toml::Table::new();
    table.insert("busy_timeout".into(), "300ms".into());
    env.write_config(&table);
    let path = env.session("u/a.jsonl", LINE);
    env.run_one(&["usage"], 0);
    crate::util::append(&path, LINE);
    age(&path);
    let holder = env.db();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    env.cmd()
        .args(["run", "usage"])
        .assert()
        .code(74)
        .stderr(contains("database is locked"));
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    let report = env.run_one(&["usage"], 0);
    assert_eq!(n(&report, "processed"), 1, "the append is still picked up");
}

#[test]
fn a_read_only_database_location_is_74() {
    let env = Env::new();
    env.session("u/a.jsonl", LINE);
    let locked = env.db.parent().unwrap().to_path_buf();
    fs::create_dir(&locked).unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o555)).unwrap();
    env.cmd_unprivileged(&[&locked])
        .args(["run", "usage"])
        .assert()
        .code(74)
        .stderr(contains("cannot open database"))
        .stderr(contains("ermission denied"));
}

#[test]
fn a_config_owned_by_someone_else_is_refused() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return; // only root can give the file away
    }
    let env = Env::new();
    std::os::unix::fs::chown(&env.config, Some(crate::util::NOBODY), None).unwrap();
    env.cmd()
        .args(["list"])
        .assert()
        .code(78)
        .stderr(contains("owned by uid 65534"));
}

#[test]
fn numbers_out_of_range_saturate_or_are_refused_never_wrap() {
    let env = Env::new();
    let huge = u64::MAX - 1;
    let reply = |id: &str| {
        json!({"type": "assistant", "requestId": id, "message": {"id": id, "model": "m",
            "usage": {"input_tokens": huge, "output_tokens": huge,
                "cache_creation_input_tokens": huge, "cache_read_input_tokens": huge}}})
        .to_string()
    };
    env.session(
        "u/big.jsonl",
        &format!("{}\n{}\n", reply("r1"), reply("r2")),
    );
    env.run_one(&["usage"], 0);
    let (input, output): (i64, i64) = env.row(
        "SELECT input_tokens, output_tokens FROM usage_session_summary",
        |r| Ok((r.get(0)?, r.get(1)?)),
    );
    assert_eq!(
        (input, output),
        (i64::MAX, i64::MAX),
        "saturated, never negative"
    );
    for bad in ["256", "-1", "99999999999"] {
        env.cmd()
            .args(["run", "usage", "--busy-exit-code", bad])
            .assert()
            .code(2);
    }
    let mut config = toml::Table::new();
    config.insert("busy_timeout".into(), "99999999h".into());
    env.write_config(&config);
    env.cmd().args(["run", "usage"]).assert().success();
}

#[test]
fn a_byte_order_mark_does_not_cost_the_first_line() {
    let env = Env::new();
    env.session("u/bom.jsonl", &format!("\u{feff}{LINE}{LINE}"));
    env.run_one(&["usage"], 0);
    let prompts: i64 = env.scalar("SELECT user_prompts FROM usage_session_summary");
    assert_eq!(prompts, 2);
    let malformed: i64 = env.scalar("SELECT malformed_lines FROM usage_session_summary");
    assert_eq!(malformed, 0);
}

#[test]
fn a_processor_panic_is_one_session_error_without_a_backtrace() {
    let env = Env::new();
    env.session("u/a.jsonl", LINE);
    let out = env
        .cmd()
        .args(["run", "usage", "--json"])
        .env("SESSIONPIPE_FAILPOINT", "in-processor:panic")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line for the one failed session: {stderr}"
    );
    assert!(
        stderr.contains("processor panicked: failpoint in-processor"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("backtrace") && !stderr.contains("panicked at"),
        "{stderr}"
    );
}
