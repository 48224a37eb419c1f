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
mod spend;
pub mod usage;
pub mod verification;

use std::time::Duration;

use crate::store::sql::Db;
use anyhow::Result;

use crate::config::Config;
pub use crate::session::Session;
pub use crate::verdict::Settle;
pub use spend::Spend;

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
    fn write(&self, db: &dyn Db, session_file: &str) -> anyhow::Result<()>;
    /// Bytes the rows hold in memory, roughly: what waits for the writer is
    /// bounded by it.
    fn held(&self) -> u64 {
        0
    }
}

pub trait Processor: Send + Sync {
    fn name(&self) -> &str;
    /// `builtin` or `exec`.
    fn kind(&self) -> &'static str {
        "builtin"
    }
    /// Bumping it reprocesses every session.
    fn version(&self) -> u32;
    /// How often it is meant to run (`run --due`, `state --check`).
    fn cadence(&self) -> Duration;
    /// Whether it also processes subagent transcripts
    /// (`<user>/<session>/subagents/agent-*.jsonl`); otherwise it never sees
    /// them. Only `usage` does: they hold tokens and tool uses, not people.
    fn reads_subagents(&self) -> bool {
        false
    }
    /// Whether `process` needs [`Session::digest`] before it reads anything
    /// (an external command is handed the hash and length up front).
    /// Otherwise a new file is read once, hashed as the processor reads it.
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
    /// `--max-cost` when `run` is not given one.
    fn default_max_cost(&self) -> Option<f64> {
        None
    }
    /// Whether it makes paid calls (see [`Session::charge`]): its runs then
    /// report what they spent.
    fn spends(&self) -> bool {
        false
    }
    /// Whether a changed file waits to be quiet before it is processed, and
    /// for how long at most (see [`Settle`]). A file that waits is neither
    /// attempted nor counted as a candidate.
    fn settle(&self) -> Option<Settle> {
        None
    }
    /// Why it cannot run here, if it cannot.
    fn unavailable(&self) -> Option<String> {
        None
    }
    /// Brings the processor's existing outputs in line with settings that
    /// changed since they were written (e.g. the identity map), before a
    /// committing run processes anything, under the processor's lock. It
    /// opens a transaction of its own only when there is something to
    /// change: an unchanged setting must not cost a cron tick a write.
    fn prepare(&self, _db: &dyn Db) -> anyhow::Result<()> {
        Ok(())
    }
    /// Removes every output a session file gave (built-ins; an external
    /// command's outputs are its own). Called inside the transaction that
    /// also removes the session's state row.
    fn forget(&self, _db: &dyn Db, _session_file: &str) -> anyhow::Result<()> {
        Ok(())
    }
    /// Processes one session. What it reads through [`Session::lines`] is
    /// what the run records as processed: a processor that stops early has
    /// processed that prefix, and any later change to the file (even a
    /// touch) brings the session back to it.
    fn process(&self, session: &mut Session) -> Result<Outcome>;
}

/// Every processor, built-ins first, then the configured ones by name.
pub fn registry(config: &Config) -> Vec<Box<dyn Processor>> {
    let mut all: Vec<Box<dyn Processor>> = vec![
        Box::new(usage::Usage::new(
            config.identities.clone(),
            config.prices.clone(),
        )),
        Box::new(verification::Verification::new(
            config.llm.clone(),
            config.verification,
            config.prices.clone(),
        )),
    ];
    for spec in &config.exec {
        let hidden = config
            .credentials
            .iter()
            .filter(|name| !spec.env.iter().any(|let_through| **name == **let_through))
            .cloned()
            .collect();
        all.push(Box::new(exec::Exec::new(
            spec.clone(),
            exec::Hidden {
                variables: hidden,
                secrets: config.secrets.clone(),
            },
            config.path.clone(),
        )));
    }
    all
}
