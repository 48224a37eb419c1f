//! Peak memory stays bounded whatever a line holds, measured as the peak
//! RSS of the one run, as the kernel accounts it when the run is reaped.

use std::fs;
use std::io::Write;
use std::process::Stdio;

use crate::util::{Env, LINE, age};

/// Runs the binary with `args` and returns its exit code and peak RSS in MiB.
fn run_measured(env: &Env, args: &[&str]) -> (i32, i64) {
    let mut child = env
        .std_cmd()
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = i32::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: wait4 writes into the status and rusage it is given; the child
    // is ours and not waited for elsewhere.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        // Other tests' SIGCHLD handlers may interrupt the wait: wait again.
        while libc::wait4(pid, &mut status, 0, &mut u) != pid {
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EINTR)
            );
        }
        u
    };
    // Reaped above: std's own wait has nothing left to collect.
    assert!(child.try_wait().is_err());
    (libc::WEXITSTATUS(status), usage.ru_maxrss / 1024)
}

#[test]
fn a_200_mb_line_costs_bounded_memory() {
    let env = Env::new();
    let path = env.data.join("u/huge-line.jsonl");
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
    age(&path);
    let (code, peak_mib) = run_measured(&env, &["run", "usage"]);
    assert_eq!(code, 0);
    let processed: i64 = env.scalar("SELECT count(*) FROM processor_state WHERE status = 'ok'");
    assert_eq!(processed, 1);
    let (prompts, malformed): (i64, i64) = env.row(
        "SELECT user_prompts, malformed_lines FROM usage_session_summary",
        |r| Ok((r.get(0)?, r.get(1)?)),
    );
    assert_eq!(
        (prompts, malformed),
        (2, 1),
        "the giant line is skipped and counted"
    );
    assert!(peak_mib < 64, "peak RSS {peak_mib} MiB");
}
