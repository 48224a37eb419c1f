//! The processor contract and the registry of every processor this binary
//! knows: the built-ins and those the operator declares in the config file.
//!
//! A processor sees one session at a time. Built-in processors return their
//! rows as an [`Output`], which the runner writes in the same transaction as
//! the session's state row, so outputs and state can never disagree.
//! External commands have their own side effects and must be idempotent per
//! (processor, session, hash): a crash between their success and our commit
//! runs them again.

pub mod exec;
pub mod usage;
pub mod verification;

use std::io;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use rusqlite::Connection;

use crate::config::Config;
use crate::session::{self, Digest, Lines};

/// One session file, as a processor sees it.
pub struct Session<'a> {
    /// `<key>/<file>.jsonl`.
    pub file: &'a str,
    /// The user folder's name.
    pub key: &'a str,
    pub path: &'a Path,
    /// MD5 and length of the complete-line prefix to process, when the file
    /// was hashed before processing (always, for processors that
    /// [`Processor::needs_digest_first`]). Otherwise [`Session::lines`]
    /// computes it in the same read.
    pub digest: Option<&'a Digest>,
    pub(crate) dev: u64,
    pub(crate) inode: u64,
    /// The digest computed by the first [`Lines`] read to its end.
    pub(crate) computed: Mutex<Option<Digest>>,
}

impl Session<'_> {
    /// Streams the complete lines to process. Read to its end, the reader
    /// leaves the digest of what it read for the runner to record.
    pub fn lines(&self) -> io::Result<SessionLines<'_>> {
        let file = session::open(self.path, self.dev, self.inode)?;
        Ok(SessionLines {
            lines: Lines::new(file, self.digest),
            session: self,
        })
    }
}

/// [`Lines`] that report their digest back to the session when dropped
/// after the last line.
pub struct SessionLines<'s> {
    lines: Lines,
    session: &'s Session<'s>,
}

impl SessionLines<'_> {
    pub fn next_line(&mut self) -> io::Result<Option<&[u8]>> {
        self.lines.next_line()
    }

    /// Lines skipped for being longer than [`session::MAX_LINE`].
    pub fn oversized(&self) -> u64 {
        self.lines.oversized()
    }
}

impl Drop for SessionLines<'_> {
    fn drop(&mut self) {
        if let Some(d) = self.lines.digest()
            && let Ok(mut computed) = self.session.computed.lock()
        {
            computed.get_or_insert_with(|| d.clone());
        }
    }
}

/// A failure that is not the session's fault. Returned (inside an
/// `anyhow::Error`) by `process`, it changes what the runner does:
#[derive(Debug)]
pub enum Interruption {
    /// Network trouble, a timeout, rate limiting after retries: the session
    /// is left for a later run and the attempt does not count toward
    /// quarantine. Three in a row stop the run early.
    Transient(String),
    /// The run cannot go on (e.g. the provider rejected the key): it stops at
    /// once with this exit code, and the attempt does not count.
    StopRun(i32, String),
}

impl std::fmt::Display for Interruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Interruption::Transient(m) | Interruption::StopRun(_, m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Interruption {}

impl Interruption {
    /// The interruption an error carries, if any.
    pub fn of(error: &anyhow::Error) -> Option<&Interruption> {
        error.chain().find_map(|e| e.downcast_ref::<Interruption>())
    }
}

/// What a successful `process` returns.
pub struct Outcome {
    pub items: u64,
    /// Rows to write in the session's state transaction (built-ins only).
    pub output: Option<Box<dyn Output>>,
}

/// A built-in processor's rows for one session.
pub trait Output: Send {
    /// Replaces whatever the processor held for `session_file` by these rows.
    /// Called inside the transaction that also writes the session's state.
    fn write(&self, db: &Connection, session_file: &str) -> rusqlite::Result<()>;
}

pub trait Processor: Send + Sync {
    fn name(&self) -> &str;
    /// `builtin` or `exec`.
    fn kind(&self) -> &'static str;
    /// Bumping it reprocesses every session.
    fn version(&self) -> u32;
    /// How often it is meant to run (`run --due`, `state --check`).
    fn cadence(&self) -> Duration;
    /// Whether `process` needs [`Session::digest`] before it reads anything
    /// (an external command is handed the hash and length up front).
    fn needs_digest_first(&self) -> bool {
        false
    }
    /// `--max-sessions` when `run` is not given one.
    fn default_max_sessions(&self) -> Option<u64> {
        None
    }
    /// `--time-budget` when `run` is not given one.
    fn default_time_budget(&self) -> Option<Duration> {
        None
    }
    /// Why it cannot run here, if it cannot.
    fn unavailable(&self) -> Option<String> {
        None
    }
    fn process(&self, session: &Session) -> Result<Outcome>;
}

/// Every processor, built-ins first, then the configured ones by name.
pub fn registry(config: &Config) -> Vec<Box<dyn Processor>> {
    let mut all: Vec<Box<dyn Processor>> = vec![
        Box::new(usage::Usage::new(config.identities.clone())),
        Box::new(verification::Verification::new(
            config.llm.clone(),
            config.verification,
        )),
    ];
    for spec in &config.exec {
        all.push(Box::new(exec::Exec::new(spec.clone())));
    }
    all
}
