//! Peak memory stays bounded whatever a line holds.
//!
//! A test binary of its own, apart from `tests/it`: the kernel's peak RSS
//! of a child includes the process it was spawned from, so the measuring
//! process must itself be small, not a test binary holding other tests'
//! fixtures in memory.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
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
    let config = dir.path().join("config.toml");
    fs::write(&config, "").unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    let db = dir.path().join("state.db");
    let status = Command::new(env!("CARGO_BIN_EXE_sessionpipe"))
        .env_clear()
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .arg("--db")
        .arg(&db)
        .args(["run", "usage"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
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
