//! Peak memory stays bounded whatever a line holds.
//!
//! A test binary of its own, apart from `tests/it`: the kernel's peak RSS
//! of a child includes the process it was spawned from, so the measuring
//! process must itself be small, not a test binary holding other tests'
//! fixtures in memory.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

const LINE: &str = "{\"type\":\"user\",\"message\":{\"role\":\"user\",\"content\":\"hi\"}}\n";

#[test]
fn a_200_mb_line_costs_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = data.join("u/huge-line.jsonl");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    {
        let mut f = std::io::BufWriter::new(fs::File::create(&path).unwrap());
        f.write_all(LINE.as_bytes()).unwrap();
        f.write_all(b"{\"type\":\"user\",\"message\":{\"content\":\"")
            .unwrap();
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..200 {
            f.write_all(&chunk).unwrap();
        }
        f.write_all(b"\"}}\n").unwrap();
        f.write_all(LINE.as_bytes()).unwrap();
    }
    let db = dir.path().join("state.db");
    assert_eq!(run(dir.path(), &data, &db, None), 0);
    // SAFETY: getrusage writes into the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u
    };
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (prompts, malformed): (i64, i64) = conn
        .query_row(
            "SELECT user_prompts, malformed_lines FROM usage_session_summary",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (prompts, malformed),
        (2, 1),
        "the giant line is skipped and counted"
    );
    let peak_mib = usage.ru_maxrss / 1024;
    assert!(peak_mib < 64, "peak RSS {peak_mib} MiB");
}

/// Runs `sessionpipe run usage` over `data`, its files limited to
/// `max_file_bytes` (as a full disk would stop them); the exit code.
fn run(dir: &Path, data: &Path, db: &Path, max_file_bytes: Option<u64>) -> i32 {
    run_measured(dir, data, db, max_file_bytes).0
}

/// [`run`], and the peak RSS of that run alone, in MiB.
fn run_measured(dir: &Path, data: &Path, db: &Path, max_file_bytes: Option<u64>) -> (i32, i64) {
    let config = dir.join("config.toml");
    fs::write(&config, "").unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sessionpipe"));
    cmd.env_clear()
        // The scratch databases go here, where the limit applies too.
        .env("SQLITE_TMPDIR", dir)
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(data)
        .arg("--db")
        .arg(db)
        .args(["run", "usage"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(limit) = max_file_bytes {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // A write past the limit then fails with EFBIG instead of
                // killing the process.
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let rl = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &rl) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    // Reaped by wait4 below, which also gives this child's own peak RSS.
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().unwrap();
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: wait4 writes into the status and struct it is given; the
    // child is reaped here, and `child` is never waited for again.
    let (status, usage) = unsafe {
        let mut status = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::wait4(pid, &mut status, 0, &mut usage), pid);
        (status, usage)
    };
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, usage.ru_maxrss / 1024)
}

#[test]
fn lines_of_megabytes_hashed_on_a_thread_keep_memory_near_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = data.join("u/long-results.jsonl");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    {
        let mut f = std::io::BufWriter::new(fs::File::create(&path).unwrap());
        let result = "r".repeat(6 << 20);
        for i in 0..8 {
            writeln!(
                f,
                r#"{{"type":"user","uuid":"u{i}","message":{{"content":[{{"type":"tool_result","tool_use_id":"t{i}","content":"{result}"}}]}}}}"#
            )
            .unwrap();
        }
    }
    let db = dir.path().join("state.db");
    let (code, peak_mib) = run_measured(dir.path(), &data, &db, None);
    assert_eq!(code, 0);
    // A line of 6 MiB and the chunk behind it, and little more: the
    // hashing thread's buffers stay a fraction of a line.
    assert!(peak_mib < 32, "peak RSS {peak_mib} MiB");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let hash: String = conn
        .query_row("SELECT file_hash FROM session_processor_state", [], |r| {
            r.get(0)
        })
        .unwrap();
    use md5::Digest as _;
    let want: String = md5::Md5::digest(fs::read(&path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hash, want);
}

/// A session of `n` tool uses, each its own reply of 3 input tokens (by
/// claude-opus-4-5, but one by claude-sonnet-4-5 half-way), then its first
/// 100 lines again and an error result for the first tool use.
fn many_events(path: &Path, n: usize) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let line = |i: usize| {
        let model = match i == n / 2 {
            true => "claude-sonnet-4-5",
            false => "claude-opus-4-5",
        };
        format!(
            r#"{{"type":"assistant","uuid":"a{i}","sessionId":"s","timestamp":"2026-01-01T00:00:00.{:03}Z","message":{{"id":"m{i}","model":"{model}","content":[{{"type":"tool_use","id":"t{i}","name":"Bash","input":{{"command":"ls"}}}}],"usage":{{"input_tokens":3,"output_tokens":1}}}}}}"#,
            i % 1000
        )
    };
    let mut f = std::io::BufWriter::new(fs::File::create(path).unwrap());
    for i in (0..n).chain(0..100) {
        writeln!(f, "{}", line(i)).unwrap();
    }
    writeln!(
        f,
        r#"{{"type":"user","message":{{"content":[{{"type":"tool_result","tool_use_id":"t0","is_error":true}}]}}}}"#
    )
    .unwrap();
}

#[test]
fn a_session_too_large_to_hold_is_staged_on_disk_and_written_whole() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let n = 60_000;
    many_events(&data.join("u/big.jsonl"), n);
    let db = dir.path().join("state.db");

    // A full disk while the session is staged: 74, nothing charged...
    assert_eq!(run(dir.path(), &data, &db, Some(2 << 20)), 74);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let charged: i64 = conn
        .query_row(
            "SELECT coalesce(sum(attempts), 0) FROM session_processor_state WHERE status != 'ok'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(charged, 0, "the disk, not the session, failed");
    drop(conn);

    // ...and with room, every event once, every reply once.
    assert_eq!(run(dir.path(), &data, &db, None), 0);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let got: (i64, i64, i64, i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM usage_events), tool_calls, tool_errors,
                    input_tokens, assistant_messages
             FROM usage_session_summary",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    let n = n as i64;
    assert_eq!(got, (n, n, 1, 3 * n, n));
    let flagged: String = conn
        .query_row(
            "SELECT event_uuid FROM usage_events WHERE is_error",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(flagged, "a0");
    // Both models its requests name are priced, gathered as they were staged.
    let priced: Vec<String> = conn
        .prepare("SELECT model FROM usage_model_prices ORDER BY model")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(priced, ["claude-opus-4-5", "claude-sonnet-4-5"]);
}
