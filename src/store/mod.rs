//! The store: where processor state, run history and outputs live, behind
//! one interface ([`sql::Db`]) with two engines: the embedded SQLite file
//! by default, and PostgreSQL for teams whose hosts share one database.
//! Both hold the same tables, columns and meanings; what differs (opening,
//! the schema's versioning, locking) stays inside each engine's module.

pub mod copy;
pub mod postgres;
pub mod runs;
pub mod sql;
pub mod sqlite;
pub mod state;
mod time;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

pub use sqlite::migrations;
pub use time::{parse_timestamp, sql_int, timestamp, timestamp_ms, write_timestamp_ms};

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
    Postgres(Box<postgres::Postgres>),
}

/// Where the store is: a SQLite file, or a PostgreSQL server's database
/// (`postgresql://…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    Server(String),
}

impl Location {
    /// A `--db` value: an address, else a file's path.
    pub fn parse(value: PathBuf) -> Location {
        match value.to_str() {
            Some(text) if postgres::connect::is_address(text) => Location::Server(text.to_owned()),
            _ => Location::File(value),
        }
    }

    /// Whether there is a database to read. A server is asked when opened.
    pub fn exists(&self) -> bool {
        match self {
            Location::File(path) => path.exists(),
            Location::Server(_) => true,
        }
    }

    /// The file, for what lives beside it.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Location::File(path) => Some(path),
            Location::Server(_) => None,
        }
    }
}

impl std::fmt::Display for Location {
    /// A file's path, or an address without its password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::File(path) => write!(f, "{}", path.display()),
            Location::Server(address) => f.write_str(&postgres::connect::shown(address)),
        }
    }
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
    /// Opens (creating when missing) the database at `at`; a statement
    /// waits up to `busy` for another writer.
    pub fn open(at: &Location, need: Need, busy: Duration) -> Result<Store> {
        let engine = match at {
            Location::File(path) => Engine::Sqlite(sqlite::open(path, need, busy)?),
            Location::Server(address) => {
                let env = crate::env::Environment::from_process();
                Engine::Postgres(Box::new(postgres::open(address, need, busy, &env)?))
            }
        };
        Ok(Store { engine })
    }

    /// The store `config` names, serving its source.
    pub fn for_config(config: &crate::config::Config, need: Need) -> Result<Store> {
        let mut store = Store::open(&config.db, need, config.busy_timeout)?;
        let source = config.source.clone();
        match &mut store.engine {
            Engine::Sqlite(s) => s.source = source,
            Engine::Postgres(p) => p.source = source,
        }
        Ok(store)
    }

    /// The SQLite file at `path`, read only (`migrate --from`).
    pub fn open_read_only(path: &Path) -> Result<Store> {
        Ok(Store {
            engine: Engine::Sqlite(sqlite::open_read_only(path)?),
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
            Engine::Postgres(p) => p.as_ref(),
        }
    }

    /// Leaves what was committed in SQLite's write-ahead log when the store
    /// closes, for the next checkpoint, instead of copying it into the
    /// database file and removing the log (two fsyncs, and the log created
    /// afresh, with one more, by the next run). For runs that read no
    /// session: a cron tick over an unchanged tree commits little more than
    /// its history row. A database this open created is checkpointed all
    /// the same, so that its file alone holds its schema. Nothing changes on
    /// PostgreSQL.
    pub fn checkpoint_later(&self) -> Result<()> {
        if let Engine::Sqlite(s) = &self.engine
            && !s.created
        {
            s.conn.set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                true,
            )?;
        }
        Ok(())
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<u32> {
        match &self.engine {
            Engine::Sqlite(s) => Ok(migrations::user_version(&s.conn)?),
            Engine::Postgres(p) => p.schema_version(),
        }
    }

    /// The schema version this binary writes.
    pub fn target_version(&self) -> u32 {
        match &self.engine {
            Engine::Sqlite(_) => migrations::target_version(),
            Engine::Postgres(_) => postgres::target_version(),
        }
    }

    /// What `migrate` would do, without doing it.
    pub fn pending(&self) -> Result<Vec<String>> {
        match &self.engine {
            Engine::Sqlite(s) => migrations::pending(&s.conn),
            Engine::Postgres(p) => p.pending(),
        }
    }

    /// On PostgreSQL, takes the advisory lock `name`, exclusive or
    /// `shared` (see [`postgres::Postgres::lock`]); `false` when a run
    /// elsewhere holds it. On SQLite always `true`: the lock file beside
    /// the database ([`crate::lock`]) is the lock.
    pub fn lock(&self, name: &str, shared: bool, wait: Option<Duration>) -> Result<bool> {
        match &self.engine {
            Engine::Sqlite(_) => Ok(true),
            Engine::Postgres(p) => p.lock(name, shared, wait),
        }
    }

    /// Releases what [`Store::lock`] took.
    pub fn unlock(&self, name: &str, shared: bool) -> Result<()> {
        match &self.engine {
            Engine::Sqlite(_) => Ok(()),
            Engine::Postgres(p) => p.unlock(name, shared),
        }
    }

    /// Whether any run holds one of the locks `names` now (PostgreSQL only;
    /// on SQLite `false`).
    pub fn any_locked(&self, names: &[String]) -> Result<bool> {
        match &self.engine {
            Engine::Sqlite(_) => Ok(false),
            Engine::Postgres(p) => p.any_locked(names),
        }
    }

    /// Whether a run of `processor` holds its lock now: on PostgreSQL the
    /// server's word; on SQLite `None` (ask [`crate::lock::is_held`]).
    pub fn is_locked(&self, processor: &str) -> Result<Option<bool>> {
        match &self.engine {
            Engine::Sqlite(_) => Ok(None),
            Engine::Postgres(p) => p.is_locked(processor).map(Some),
        }
    }

    /// Applies every pending step in one transaction; returns what was done.
    pub fn migrate(&mut self) -> Result<Vec<String>> {
        match &mut self.engine {
            Engine::Sqlite(s) => migrations::migrate(&mut s.conn),
            Engine::Postgres(p) => p.migrate(),
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
