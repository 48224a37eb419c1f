//! The store: where processor state, run history and outputs live, behind
//! one interface ([`sql::Db`]) with two engines: the embedded SQLite file
//! by default, and PostgreSQL for teams whose hosts share one database.
//! Both hold the same tables, columns and meanings; what differs (opening,
//! the schema's versioning, locking) stays inside each engine's module.

pub mod runs;
pub mod sql;
pub mod sqlite;
pub mod state;
mod time;

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

pub use sqlite::migrations;
pub use time::{parse_timestamp, sql_int, timestamp, timestamp_ms};

use crate::exit;
use sql::Db;

/// How long a statement waits for another writer before failing with 74,
/// unless the config file says otherwise.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// An open store.
pub struct Store {
    engine: Engine,
}

enum Engine {
    Sqlite(sqlite::Sqlite),
}

/// What the caller needs from the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// `run`: create a missing or empty database; refuse an older schema.
    Current,
    /// `migrate`: any version this binary knows, upgraded by the caller.
    Any,
}

impl Store {
    /// Opens (creating when missing) the database at `path`; a statement
    /// waits up to `busy` for another writer.
    pub fn open(path: &Path, need: Need, busy: Duration) -> Result<Store> {
        Ok(Store {
            engine: Engine::Sqlite(sqlite::open(path, need, busy)?),
        })
    }

    /// An empty database in memory at the current schema, for read-only
    /// commands run before any database exists.
    pub fn in_memory() -> Result<Store> {
        Ok(Store {
            engine: Engine::Sqlite(sqlite::in_memory()?),
        })
    }

    pub fn db(&self) -> &dyn Db {
        match &self.engine {
            Engine::Sqlite(s) => s,
        }
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<u32> {
        match &self.engine {
            Engine::Sqlite(s) => Ok(migrations::user_version(&s.conn)?),
        }
    }

    /// The schema version this binary writes.
    pub fn target_version(&self) -> u32 {
        match &self.engine {
            Engine::Sqlite(_) => migrations::target_version(),
        }
    }

    /// What `migrate` would do, without doing it.
    pub fn pending(&self) -> Result<Vec<String>> {
        match &self.engine {
            Engine::Sqlite(s) => migrations::pending(&s.conn),
        }
    }

    /// Applies every pending step in one transaction; returns what was done.
    pub fn migrate(&mut self) -> Result<Vec<String>> {
        match &mut self.engine {
            Engine::Sqlite(s) => migrations::migrate(&mut s.conn),
        }
    }
}

/// The refusal of a database written by a newer sessionpipe.
fn newer_than_binary(shown: &str, version: u32, target: u32) -> anyhow::Error {
    exit::fail(
        exit::CONFIG,
        format!(
            "database {shown} has schema version {version}, newer than this \
             sessionpipe supports ({target}); upgrade sessionpipe"
        ),
    )
}

/// The refusal of a database whose schema is older than this binary's.
fn needs_migrate(shown: &str, version: u32, target: u32) -> anyhow::Error {
    exit::fail(
        exit::CONFIG,
        format!(
            "database {shown} has schema version {version}, this sessionpipe \
             needs {target}: run `sessionpipe migrate`"
        ),
    )
}
