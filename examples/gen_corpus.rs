//! Writes a deterministic corpus of realistic Claude Code transcripts for
//! benchmarks: replies split one line per content block with the usage block
//! repeated, tool results, progress and file-history-snapshot lines, file
//! sizes roughly log-normal (median near 100 KB, a tail past 5 MB).
//!
//! cargo run --release --example gen_corpus -- DIR [--users N] [--files M]
//!     [--median-kb K] [--seed S] [--one-file-mb MB] [--result-words W]
//!
//! `--one-file-mb` writes a single transcript of that size instead.
//! `--result-words` is the largest tool result in words (default 6000, which
//! gives ~85 events per MB); smaller values give denser transcripts.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// xorshift64*: deterministic, dependency-free, good enough for shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A standard normal draw (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-12);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

const TOOLS: &[&str] = &[
    "Bash",
    "Read",
    "Edit",
    "Write",
    "Grep",
    "Glob",
    "TodoWrite",
    "WebFetch",
    "mcp__github__create_issue",
    "mcp__linear__search",
];
const WORDS: &[&str] = &[
    "the", "session", "file", "function", "error", "test", "build", "query", "table", "user",
    "config", "value", "return", "change", "module", "check", "result", "data", "index", "path",
];

fn words(rng: &mut Rng, n: usize) -> String {
    let mut s = String::with_capacity(n * 7);
    for i in 0..n {
        if i > 0 {
            s.push(if rng.below(12) == 0 { '\n' } else { ' ' });
        }
        s.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
    s
}

struct Writer<'a> {
    rng: &'a mut Rng,
    session: String,
    out: BufWriter<fs::File>,
    written: u64,
    t: i64,
    n: u64,
    result_words: f64,
}

impl Writer<'_> {
    fn line(&mut self, value: serde_json::Value) {
        let text = value.to_string();
        self.written += text.len() as u64 + 1;
        let _ = writeln!(self.out, "{text}");
    }

    fn stamp(&mut self) -> String {
        self.t += 1 + self.rng.below(40) as i64 * 1000 + self.rng.below(1000) as i64;
        if self.rng.below(60) == 0 {
            self.t += 20 * 60 * 1000; // an idle gap
        }
        chrono::DateTime::from_timestamp_millis(self.t)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default()
    }

    fn uuid(&mut self) -> String {
        self.n += 1;
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            self.rng.next() as u32,
            self.n & 0xffff,
            self.rng.below(4096),
            self.rng.below(4096),
            self.rng.next() & 0xffff_ffff_ffff
        )
    }

    /// One exchange: a prompt, a reply split into blocks, tool results.
    fn exchange(&mut self) {
        let prompt_uuid = self.uuid();
        let ts = self.stamp();
        let n = 5 + self.rng.below(60) as usize;
        let text = words(self.rng, n);
        let session = self.session.clone();
        self.line(serde_json::json!({
            "parentUuid": null, "isSidechain": false, "userType": "external", "cwd": "/home/dev/project",
            "sessionId": session, "version": "2.0.14", "gitBranch": "main", "type": "user",
            "message": {"role": "user", "content": text}, "uuid": prompt_uuid, "timestamp": ts
        }));
        let replies = 1 + self.rng.below(4);
        for _ in 0..replies {
            let tool_ids = self.reply(&prompt_uuid, &session);
            self.tool_results(&prompt_uuid, &session, tool_ids);
        }
        if self.rng.below(4) == 0 {
            let ts = self.stamp();
            let id = self.uuid();
            self.line(
                serde_json::json!({"type": "file-history-snapshot", "messageId": id,
                "snapshot": {"messageId": id, "trackedFileBackups": {}, "timestamp": ts},
                "isSnapshotUpdate": false}),
            );
        }
    }

    /// One API reply, written as Claude Code does: a line per content block,
    /// each repeating the usage. Returns the ids of its tool uses.
    fn reply(&mut self, prompt_uuid: &str, session: &str) -> Vec<String> {
        let msg_id = format!("msg_{:024x}", self.rng.next() as u128 * 7919);
        let req_id = format!("req_{:024x}", self.rng.next());
        let input = 10 + self.rng.below(200);
        let cache_read = self.rng.below(120_000);
        let cache_create = self.rng.below(8_000);
        let tools: Vec<String> = (0..self.rng.below(3))
            .map(|_| TOOLS[self.rng.below(TOOLS.len() as u64) as usize].to_owned())
            .collect();
        let blocks = 1 + tools.len();
        let final_output = 20 + self.rng.below(2_000);
        let mut tool_ids = Vec::new();
        for b in 0..blocks {
            let ts = self.stamp();
            let uuid = self.uuid();
            let output = if b + 1 == blocks {
                final_output
            } else {
                1 + self.rng.below(10)
            };
            let content = if b == 0 {
                let n = 20 + self.rng.below(80) as usize;
                let thinking = words(self.rng, n);
                serde_json::json!([{"type": "text", "text": thinking}])
            } else {
                let id = format!("toolu_{:022x}", self.rng.next());
                tool_ids.push(id.clone());
                let command = words(self.rng, 6);
                serde_json::json!([{"type": "tool_use", "id": id, "name": tools[b - 1],
                    "input": {"command": command, "description": "run it"}}])
            };
            self.line(serde_json::json!({
                "parentUuid": prompt_uuid, "isSidechain": false, "userType": "external",
                "cwd": "/home/dev/project", "sessionId": session, "version": "2.0.14",
                "message": {"id": msg_id, "type": "message", "role": "assistant",
                    "model": "claude-sonnet-4-5-20250929", "content": content,
                    "stop_reason": null, "usage": {"input_tokens": input,
                    "cache_creation_input_tokens": cache_create,
                    "cache_read_input_tokens": cache_read, "output_tokens": output,
                    "service_tier": "standard"}},
                "requestId": req_id, "type": "assistant", "uuid": uuid, "timestamp": ts
            }));
        }
        tool_ids
    }

    /// The results of a reply's tool uses, with a hook progress line now and then.
    fn tool_results(&mut self, prompt_uuid: &str, session: &str, tool_ids: Vec<String>) {
        for id in tool_ids {
            let ts = self.stamp();
            let uuid = self.uuid();
            // Tool output is the bulk of a real transcript.
            let size = (self.rng.unit().powi(3) * self.result_words) as usize;
            let body = words(self.rng, 5 + size);
            let is_error = self.rng.below(25) == 0;
            self.line(serde_json::json!({
                "parentUuid": prompt_uuid, "isSidechain": false, "userType": "external",
                "cwd": "/home/dev/project", "sessionId": session, "version": "2.0.14",
                "type": "user", "message": {"role": "user", "content": [{"tool_use_id": id,
                    "type": "tool_result", "content": body, "is_error": is_error}]},
                "uuid": uuid, "timestamp": ts,
                "toolUseResult": {"stdout": "", "stderr": "", "interrupted": false}
            }));
            if self.rng.below(3) == 0 {
                let ts = self.stamp();
                let uuid = self.uuid();
                self.line(
                    serde_json::json!({"type": "progress", "data": {"type": "hook_progress",
                        "hookEvent": "PostToolUse", "hookName": "PostToolUse:Bash"},
                        "toolUseID": id, "parentToolUseID": id, "timestamp": ts,
                        "sessionId": session, "uuid": uuid}),
                );
            }
        }
    }
}

fn write_session(path: &Path, target: u64, rng: &mut Rng, index: u64, result_words: f64) -> u64 {
    let file = match fs::File::create(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("gen_corpus: {}: {e}", path.display());
            std::process::exit(1);
        }
    };
    let mut w = Writer {
        session: format!(
            "{:08x}-0000-4000-8000-{:012x}",
            index,
            rng.next() & 0xffff_ffff_ffff
        ),
        out: BufWriter::with_capacity(1 << 20, file),
        written: 0,
        t: 1_760_000_000_000 + (index as i64) * 3_600_000,
        n: 0,
        rng,
        result_words,
    };
    while w.written < target {
        w.exchange();
    }
    let _ = w.out.flush();
    w.written
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut dir: Option<PathBuf> = None;
    let (mut users, mut files, mut median_kb, mut seed, mut one_mb) =
        (100u64, 2000u64, 100.0f64, 42u64, 0u64);
    let mut result_words = 6000.0;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> f64 {
            args.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("gen_corpus: {name} needs a number");
                std::process::exit(2);
            })
        };
        match arg.as_str() {
            "--users" => users = value("--users") as u64,
            "--files" => files = value("--files") as u64,
            "--median-kb" => median_kb = value("--median-kb"),
            "--seed" => seed = value("--seed") as u64,
            "--one-file-mb" => one_mb = value("--one-file-mb") as u64,
            "--result-words" => result_words = value("--result-words"),
            _ if dir.is_none() && !arg.starts_with('-') => dir = Some(PathBuf::from(arg)),
            _ => {
                eprintln!("gen_corpus: unexpected argument {arg}");
                std::process::exit(2);
            }
        }
    }
    let Some(dir) = dir else {
        eprintln!(
            "usage: gen_corpus DIR [--users N] [--files M] [--median-kb K] [--seed S] [--one-file-mb MB] [--result-words W]"
        );
        std::process::exit(2);
    };
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut total = 0u64;
    if one_mb > 0 {
        let user = dir.join("big");
        let _ = fs::create_dir_all(&user);
        total = write_session(
            &user.join("huge.jsonl"),
            one_mb << 20,
            &mut rng,
            0,
            result_words,
        );
    } else {
        for i in 0..files {
            let user = dir.join(format!("user{:04}", i % users.max(1)));
            let _ = fs::create_dir_all(&user);
            // Log-normal sizes; sigma 1.1 puts the mean near 1.8 times the median.
            let size = (median_kb * 1024.0 * (1.1 * rng.normal()).exp()) as u64;
            // A few files from the far tail, as real servers have.
            let size = if i % 500 == 499 {
                size.max(5 << 20) + (3 << 20)
            } else {
                size
            };
            total += write_session(
                &user.join(format!("session-{i:06}.jsonl")),
                size.max(2048),
                &mut rng,
                i,
                result_words,
            );
        }
    }
    println!("{} MB", total >> 20);
}
