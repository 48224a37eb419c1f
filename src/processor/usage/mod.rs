//! The built-in `usage` processor: who uses which tools, skills, subagents,
//! MCP servers and slash commands, how often they fail, and how many tokens
//! and how much time each session spent.
//!
//! Each session yields `usage_events` rows and one `usage_session_summary`
//! row, written in the session's state transaction and replacing whatever the
//! session held before, so a grown or reprocessed session never leaves stale
//! or duplicate rows. Token totals count each API reply once, however many
//! lines Claude Code split it into (see [`tokens`]).

mod costs;
mod extract;
mod names;
mod renames;
mod rows;
mod scratch;
mod sessions;
mod settings;
mod summary;
mod tokens;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Result;

use super::{Outcome, Processor, Session};
use crate::prices::PriceBook;
use extract::Accumulator;
pub use extract::{Event, EventType, slash_commands};
pub use names::{Name, Names, Uuid};
pub use rows::{EventRow, Rows, Summary};
use scratch::Scratch;

pub const NAME: &str = "usage";
/// Bump when the rows a session yields change: every session is reprocessed.
pub const VERSION: u32 = 4;
const CADENCE: Duration = Duration::from_secs(10 * 60);
/// Activity blocks split where two timestamps are further apart than this.
const IDLE_GAP_MS: i64 = 10 * 60 * 1000;
/// Lines of these types carry no usage events.
const NO_EVENTS: &[&str] = &[
    "system",
    "summary",
    "file-history-snapshot",
    "queue-operation",
    "progress",
];
const SYNTHETIC_MODEL: &str = "<synthetic>";
/// Bytes of a session's records held in memory; beyond, they are staged on
/// disk (see [`scratch`]). With the writer's backlog this bounds the memory
/// of a run, whatever one session holds.
pub const MEMORY_LIMIT: usize = 8 << 20;

pub struct Usage {
    /// Folder key -> identity (e.g. email) from the identity map.
    identities: HashMap<String, String>,
    prices: PriceBook,
}

impl Usage {
    pub fn new(identities: HashMap<String, String>, prices: PriceBook) -> Usage {
        Usage { identities, prices }
    }
}

impl Processor for Usage {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> u32 {
        VERSION
    }

    fn cadence(&self) -> Duration {
        CADENCE
    }

    fn reads_subagents(&self) -> bool {
        true
    }

    fn prepare(&self, db: &dyn crate::store::sql::Db) -> Result<()> {
        renames::apply_identities(db, &self.identities)?;
        costs::apply(db, &self.prices)
    }

    fn forget(&self, db: &dyn crate::store::sql::Db, session_file: &str) -> Result<()> {
        rows::forget(db, session_file)
    }

    fn process(&self, session: &mut Session) -> Result<Outcome> {
        let mut reader = Reader::new(MEMORY_LIMIT);
        let lines = session.lines()?;
        while let Some(line) = lines.next_line()? {
            reader.feed(line).map_err(staging)?;
        }
        reader.acc.malformed += lines.oversized();
        crate::failpoint::hit("in-processor");
        let username = self
            .identities
            .get(session.user)
            .cloned()
            .unwrap_or_else(|| session.user.to_owned());
        let mut rows = reader.finish(session.name, &username).map_err(staging)?;
        rows.price(&self.prices);
        Ok(Outcome {
            items: rows.len(),
            output: Some(Box::new(rows)),
        })
    }
}

/// A scratch database that fails (a full temporary folder) is the machine's
/// fault, not the session's: the run stops with 74 and charges nobody.
fn staging(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(super::Interruption::StopRun(
        crate::exit::IO,
        format!("cannot stage a large session in the temporary folder: {e}"),
    ))
}

/// Reads a session's lines into rows, holding at most `limit` bytes in
/// memory (for tests and the fuzz target).
pub fn rows_from_lines<'a>(
    lines: impl IntoIterator<Item = &'a [u8]>,
    session_file: &str,
    username: &str,
    limit: usize,
) -> rusqlite::Result<Rows> {
    let mut reader = Reader::new(limit);
    for line in lines {
        reader.feed(line)?;
    }
    reader.finish(session_file, username)
}

/// A session being read: its records in memory up to `limit` bytes, then
/// moved to scratch databases (see [`scratch`]) each time they outgrow it.
struct Reader {
    acc: Accumulator,
    limit: usize,
    scratch: Option<Scratch>,
}

impl Reader {
    fn new(limit: usize) -> Reader {
        Reader {
            acc: Accumulator::new(),
            limit,
            scratch: None,
        }
    }

    /// Adds a line. Fails only when a scratch database does.
    fn feed(&mut self, raw: &[u8]) -> rusqlite::Result<()> {
        self.acc.add(raw);
        if self.acc.held() > self.limit {
            let scratch = match self.scratch.take() {
                Some(s) => s,
                None => Scratch::open()?,
            };
            let staged = scratch.stage(&mut self.acc);
            self.scratch = Some(scratch);
            staged?;
        }
        Ok(())
    }

    /// The session's rows, from memory or from the scratch databases.
    fn finish(mut self, session_file: &str, username: &str) -> rusqlite::Result<Rows> {
        let session_id = self.acc.session_id(session_file);
        match self.scratch.take() {
            Some(scratch) => {
                scratch.stage(&mut self.acc)?;
                scratch.finish(self.acc.head(session_id, username))
            }
            None => Ok(self.acc.finish_in_memory(session_id, username)),
        }
    }
}

#[cfg(test)]
mod tests;
