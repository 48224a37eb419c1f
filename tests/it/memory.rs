//! Peak memory stays bounded whatever a line holds. One test per file: the
//! measure is the largest child this test process has waited for.

use std::fs;
use std::io::Write;

use crate::util::{Env, LINE, age, n};

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
    let report = env.run_one(&["usage"], 0);
    assert_eq!(n(&report, "processed"), 1);
    let (prompts, malformed): (i64, i64) = env.row(
        "SELECT user_prompts, malformed_lines FROM usage_session_summary",
        |r| Ok((r.get(0)?, r.get(1)?)),
    );
    assert_eq!(
        (prompts, malformed),
        (2, 1),
        "the giant line is skipped and counted"
    );
    // SAFETY: getrusage writes into the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u
    };
    let peak_mib = usage.ru_maxrss / 1024;
    assert!(peak_mib < 64, "peak RSS {peak_mib} MiB");
}
