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

use std::io;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use rusqlite::Transaction;

use crate::config::Config;
use crate::session::{self, Digest, Lines};

/// One session file, as a processor sees it.
pub struct Session<'a> {
    /// `<key>/<file>.jsonl`.
    pub file: &'a str,
    /// The user folder's name.
    pub key: &'a str,
    pub path: &'a Path,
    /// MD5 of the complete-line prefix that is to be processed.
    pub digest: &'a Digest,
    pub(crate) dev: u64,
    pub(crate) inode: u64,
}

impl Session<'_> {
    /// Streams the complete lines that `digest` covers, and nothing after.
    pub fn lines(&self) -> io::Result<Lines> {
        let file = session::open(self.path, self.dev, self.inode)?;
        Ok(Lines::new(file, self.digest.clone()))
    }
}

/// What a successful `process` returns.
pub struct Outcome {
    pub items: u64,
    /// Rows to write in the session's state transaction (built-ins only).
    pub output: Option<Box<dyn Output>>,
}

/// A built-in processor's rows for one session.
pub trait Output {
    /// Replaces whatever the processor held for `session_file` by these rows.
    fn write(&self, tx: &Transaction, session_file: &str) -> rusqlite::Result<()>;
}

pub trait Processor {
    fn name(&self) -> &str;
    /// `builtin` or `exec`.
    fn kind(&self) -> &'static str;
    /// Bumping it reprocesses every session.
    fn version(&self) -> u32;
    /// How often it is meant to run (`run --due`, `state --check`).
    fn cadence(&self) -> Duration;
    /// Why it cannot run here, if it cannot.
    fn unavailable(&self) -> Option<String> {
        None
    }
    fn process(&self, session: &Session) -> Result<Outcome>;
}

/// Every processor, built-ins first, then the configured ones by name.
pub fn registry(config: &Config) -> Vec<Box<dyn Processor>> {
    let mut all: Vec<Box<dyn Processor>> =
        vec![Box::new(usage::Usage::new(config.identities.clone()))];
    for spec in &config.exec {
        all.push(Box::new(exec::Exec::new(spec.clone())));
    }
    all
}
