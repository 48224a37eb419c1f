//! Writes a deterministic corpus of realistic Claude Code transcripts for
//! benchmarks: replies split one line per content block with the usage block
//! repeated, tool results, progress and file-history-snapshot lines, file
//! sizes roughly log-normal (median near 100 KB, a tail past 5 MB), and
//! subagent transcripts beside their sessions.
//!
//! cargo run --release --example gen_corpus -- DIR [--shape dense|real]
//!     [--users N] [--files M] [--median-kb K] [--seed S] [--one-file-mb MB]
//!     [--events-per-mb E] [--result-words W] [--blocks B] [--subagents PCT]
//!
//! The shape of a transcript is what costs a reader time per byte:
//! - `--events-per-mb`: tool uses per MiB; tool results are sized to keep
//!   the file at this density (real transcripts hold ~64, a tool-heavy
//!   session ~300). 0 (the default): results drawn up to `--result-words`.
//! - `--result-words`: the largest tool result in words (default 6000).
//! - `--blocks`: content blocks per reply at most, a text block and tool
//!   uses, each written as its own line with the usage repeated (default 3).
//! - `--subagents`: the percentage of sessions that dispatch a subagent,
//!   whose transcript is written to `<session>/subagents/agent-<id>.jsonl`.
//! - `--shape`: `dense` (300 events per MiB, 4 blocks, 5 % subagents) or
//!   `real` (64 per MiB, 3 blocks, 15 % subagents); later flags override.
//!
//! `--one-file-mb` writes a single transcript of that size instead. It prints
//! the MiB written and the tool uses in them.

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

/// What a transcript looks like (see the module docs).
#[derive(Clone, Copy)]
struct Shape {
    events_per_mb: f64,
    result_words: f64,
    blocks: u64,
    subagents: u64,
}

struct Writer<'a> {
    rng: &'a mut Rng,
    session: String,
    out: BufWriter<fs::File>,
    written: u64,
    t: i64,
    n: u64,
    shape: Shape,
    /// Tool uses written.
    events: u64,
    /// Set in a subagent's transcript: its id.
    agent: Option<String>,
    /// Whether this session dispatches a subagent...
    may_dispatch: bool,
    /// ...and the one it dispatched, to be written beside it.
    dispatched: Option<String>,
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
        let mut line = serde_json::json!({
            "parentUuid": null, "isSidechain": self.agent.is_some(), "userType": "external",
            "cwd": "/home/dev/project", "sessionId": session, "version": "2.0.14",
            "gitBranch": "main", "type": "user",
            "message": {"role": "user", "content": text}, "uuid": prompt_uuid, "timestamp": ts
        });
        if let Some(agent) = &self.agent {
            line["agentId"] = agent.clone().into();
        }
        self.line(line);
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
        let mut tools: Vec<String> = (0..self.rng.below(self.shape.blocks.max(1)))
            .map(|_| TOOLS[self.rng.below(TOOLS.len() as u64) as usize].to_owned())
            .collect();
        let dispatch = self.may_dispatch
            && self.dispatched.is_none()
            && !tools.is_empty()
            && self.rng.below(4) == 0;
        if dispatch {
            tools[0] = "Task".to_owned();
        }
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
                self.events += 1;
                let command = words(self.rng, 6);
                if tools[b - 1] == "Task" {
                    self.dispatched = Some(format!("{:016x}", self.rng.next()));
                    serde_json::json!([{"type": "tool_use", "id": id, "name": "Task",
                        "input": {"subagent_type": "general-purpose", "prompt": command,
                                  "description": "look into it"}}])
                } else {
                    serde_json::json!([{"type": "tool_use", "id": id, "name": tools[b - 1],
                        "input": {"command": command, "description": "run it"}}])
                }
            };
            let mut line = serde_json::json!({
                "parentUuid": prompt_uuid, "isSidechain": self.agent.is_some(), "userType": "external",
                "cwd": "/home/dev/project", "sessionId": session, "version": "2.0.14",
                "message": {"id": msg_id, "type": "message", "role": "assistant",
                    "model": "claude-sonnet-4-5-20250929", "content": content,
                    "stop_reason": null, "usage": {"input_tokens": input,
                    "cache_creation_input_tokens": cache_create,
                    "cache_read_input_tokens": cache_read, "output_tokens": output,
                    "service_tier": "standard"}},
                "requestId": req_id, "type": "assistant", "uuid": uuid, "timestamp": ts
            });
            if let Some(agent) = &self.agent {
                line["agentId"] = agent.clone().into();
            }
            self.line(line);
        }
        tool_ids
    }

    /// The results of a reply's tool uses, with a hook progress line now and then.
    fn tool_results(&mut self, prompt_uuid: &str, session: &str, tool_ids: Vec<String>) {
        for id in tool_ids {
            let ts = self.stamp();
            let uuid = self.uuid();
            // Tool output is the bulk of a real transcript.
            let size = self.result_size();
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

impl Writer<'_> {
    /// Words in the next tool result: drawn up to `result_words`, or, with a
    /// density to keep, what brings the bytes written to the events' share
    /// (a quarter to one and three quarters of it, so sizes vary).
    fn result_size(&mut self) -> usize {
        let cap = self.shape.result_words;
        if self.shape.events_per_mb <= 0.0 {
            return (self.rng.unit().powi(3) * cap) as usize;
        }
        let per_event = f64::from(1u32 << 20) / self.shape.events_per_mb;
        let due = self.events as f64 * per_event - self.written as f64;
        // A word and its separator take 5.7 bytes on average.
        let words = due.max(0.0) * (0.25 + 1.5 * self.rng.unit()) / 5.7;
        words.min(cap.max(1.0) * 40.0) as usize
    }
}

/// Counts of what was written.
#[derive(Default)]
struct Written {
    bytes: u64,
    events: u64,
}

impl Written {
    fn add(&mut self, other: Written) {
        self.bytes += other.bytes;
        self.events += other.events;
    }
}

fn create(path: &Path) -> fs::File {
    if let Some(parent) = path.parent() {
        let _ = fs::create_dir_all(parent);
    }
    fs::File::create(path).unwrap_or_else(|e| {
        eprintln!("gen_corpus: {}: {e}", path.display());
        std::process::exit(1);
    })
}

/// Writes one session of about `target` bytes at `path`, and the
/// transcript of a subagent it dispatched beside it.
fn write_session(path: &Path, target: u64, rng: &mut Rng, index: u64, shape: Shape) -> Written {
    let session = format!(
        "{:08x}-0000-4000-8000-{:012x}",
        index,
        rng.next() & 0xffff_ffff_ffff
    );
    let start = 1_760_000_000_000 + (index as i64) * 3_600_000;
    let (mut written, agent) = write_transcript(path, &session, None, target, rng, start, shape);
    if let Some(agent) = agent {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("session");
        let sub = path
            .with_file_name(stem)
            .join("subagents")
            .join(format!("agent-{agent}.jsonl"));
        // A subagent's transcript: a tenth to a third of its session.
        let size = (target as f64 * (0.1 + 0.23 * rng.unit())) as u64;
        let (w, _) = write_transcript(
            &sub,
            &session,
            Some(agent),
            size.max(2048),
            rng,
            start,
            shape,
        );
        written.add(w);
    }
    written
}

/// One transcript file; returns what it wrote and the subagent it dispatched.
fn write_transcript(
    path: &Path,
    session: &str,
    agent: Option<String>,
    target: u64,
    rng: &mut Rng,
    start: i64,
    shape: Shape,
) -> (Written, Option<String>) {
    let may_dispatch = agent.is_none() && rng.below(100) < shape.subagents;
    let mut w = Writer {
        session: session.to_owned(),
        out: BufWriter::with_capacity(1 << 20, create(path)),
        written: 0,
        t: start,
        n: 0,
        rng,
        shape,
        events: 0,
        may_dispatch,
        agent,
        dispatched: None,
    };
    while w.written < target {
        w.exchange();
    }
    let _ = w.out.flush();
    let written = Written {
        bytes: w.written,
        events: w.events,
    };
    (written, w.dispatched)
}

/// The options, as given.
struct Options {
    dir: PathBuf,
    users: u64,
    files: u64,
    median_kb: f64,
    seed: u64,
    one_mb: u64,
    shape: Shape,
}

const USAGE: &str = "usage: gen_corpus DIR [--shape dense|real] [--users N] [--files M] \
[--median-kb K] [--seed S] [--one-file-mb MB] [--events-per-mb E] [--result-words W] \
[--blocks B] [--subagents PCT]";

fn fail(why: &str) -> ! {
    eprintln!("gen_corpus: {why}\n{USAGE}");
    std::process::exit(2);
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let mut dir: Option<PathBuf> = None;
    let mut o = Options {
        dir: PathBuf::new(),
        users: 100,
        files: 2000,
        median_kb: 100.0,
        seed: 42,
        one_mb: 0,
        shape: Shape {
            events_per_mb: 0.0,
            result_words: 6000.0,
            blocks: 3,
            subagents: 0,
        },
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> f64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                .unwrap_or_else(|| fail(&format!("{name} needs a number, 0 or more")))
        };
        match arg.as_str() {
            "--shape" => {
                let (e, b, sub) = match args.next().as_deref() {
                    Some("dense") => (300.0, 4, 5),
                    Some("real") => (64.0, 3, 15),
                    _ => fail("--shape is dense or real"),
                };
                o.shape.events_per_mb = e;
                o.shape.blocks = b;
                o.shape.subagents = sub;
            }
            "--users" => o.users = value("--users") as u64,
            "--files" => o.files = value("--files") as u64,
            "--median-kb" => o.median_kb = value("--median-kb"),
            "--seed" => o.seed = value("--seed") as u64,
            "--one-file-mb" => o.one_mb = value("--one-file-mb") as u64,
            "--events-per-mb" => o.shape.events_per_mb = value("--events-per-mb"),
            "--result-words" => o.shape.result_words = value("--result-words"),
            "--blocks" => o.shape.blocks = value("--blocks") as u64,
            "--subagents" => o.shape.subagents = value("--subagents").min(100.0) as u64,
            _ if dir.is_none() && !arg.starts_with('-') => dir = Some(PathBuf::from(arg)),
            _ => fail(&format!("unexpected argument {arg}")),
        }
    }
    o.dir = dir.unwrap_or_else(|| fail("no DIR"));
    o
}

fn main() {
    let o = options();
    let mut rng = Rng(o.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut total = Written::default();
    if o.one_mb > 0 {
        let path = o.dir.join("big").join("huge.jsonl");
        total = write_session(&path, o.one_mb << 20, &mut rng, 0, o.shape);
    } else {
        for i in 0..o.files {
            let user = o.dir.join(format!("user{:04}", i % o.users.max(1)));
            // Log-normal sizes; sigma 1.1 puts the mean near 1.8 times the median.
            let size = (o.median_kb * 1024.0 * (1.1 * rng.normal()).exp()) as u64;
            // A few files from the far tail, as real servers have.
            let size = if i % 500 == 499 {
                size.max(5 << 20) + (3 << 20)
            } else {
                size
            };
            let path = user.join(format!("session-{i:06}.jsonl"));
            total.add(write_session(&path, size.max(2048), &mut rng, i, o.shape));
        }
    }
    println!("{} MB, {} events", total.bytes >> 20, total.events);
}
