//! The hash a run records is the MD5 that coreutils' `md5sum` gives of the
//! file's complete lines, however the file was hashed: alone as it
//! streamed, on a thread of its own, or in a batch of small files hashed
//! side by side.

use std::process::Command;

use crate::util::Env;

#[test]
fn recorded_hashes_are_md5sums_of_the_complete_lines() {
    let env = Env::new();
    let mut expected = Vec::new();
    // Lengths around MD5's 64-byte block and its padding, many small files
    // (batched), and files past the one-buffer size (streamed, threaded).
    for (k, lines) in [0usize, 1, 2, 3, 5, 8, 13, 40, 300, 3_000, 12_000, 30_000]
        .iter()
        .cycle()
        .take(40)
        .enumerate()
    {
        let mut content = String::new();
        for i in 0..*lines {
            let pad = "x".repeat((i * 7 + k) % 61);
            content.push_str(&format!(
                "{{\"type\":\"user\",\"message\":{{\"role\":\"user\",\"content\":\"{k} {i} {pad}\"}}}}\n"
            ));
        }
        let complete = content.clone();
        if k % 3 == 0 {
            content.push_str("{\"type\":\"user\",\"message\":"); // still being written
        }
        let name = format!("u{}/s{k}.jsonl", k % 3);
        env.session(&name, &content);
        let whole = env.path(&format!("complete-{k}"));
        std::fs::write(&whole, &complete).unwrap();
        expected.push((name, whole));
    }
    env.cmd()
        .args(["run", "usage", "--jobs", "2"])
        .assert()
        .code(0);
    for (name, whole) in expected {
        let out = Command::new("md5sum").arg(&whole).output().unwrap();
        assert!(out.status.success(), "md5sum runs");
        let theirs = String::from_utf8(out.stdout).unwrap();
        let ours: String = env.scalar(&format!(
            "SELECT file_hash FROM session_processor_state WHERE session_file = '{name}'"
        ));
        assert_eq!(ours, theirs.split_whitespace().next().unwrap(), "{name}");
    }
}
