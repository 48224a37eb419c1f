//! The command-line interface, as clap types only.
//!
//! The man pages and shell completions are generated from these definitions
//! (and a test fails when the checked-in copies are stale), so every flag,
//! environment variable and exit code a user can rely on is described here.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use clap_complete::ArgValueCandidates;

use crate::config::Given;
use crate::duration;
use crate::help;
use crate::printer::Level;

/// Feeds Claude Code session transcripts through pluggable processors.
///
/// Transcripts live under `<data-dir>/<key>/*.jsonl`, one folder per user
/// key, with subagent transcripts in `<key>/<session>/subagents/` (read by
/// `usage`). Each processor keeps its own state per session file in an embedded
/// SQLite database: an unchanged file costs one stat, a changed one is read
/// once, and outputs and state are committed in one transaction.
#[derive(Debug, Parser)]
#[command(
    name = "sessionpipe",
    version,
    after_long_help = help::main()
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options accepted before or after the subcommand.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Config file (TOML); default /etc/sessionpipe/config.toml when present
    /// [env: SESSIONPIPE_CONFIG].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Folder holding <key>/*.jsonl; default /data/user_sessions
    /// [env: SESSION_DATA_DIR].
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// State database: a SQLite file (default /var/lib/sessionpipe/state.db)
    /// or a PostgreSQL address, postgresql://USER@HOST/DB
    /// [env: SESSIONPIPE_DB].
    #[arg(long, global = true, value_name = "FILE|URL")]
    pub db: Option<PathBuf>,
    /// Log what happens to stderr (a progress bar too, when stderr is a terminal).
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Print no warnings (errors are still printed).
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

impl GlobalArgs {
    pub fn given(&self) -> Given {
        Given {
            config: self.config.clone(),
            data_dir: self.data_dir.clone(),
            db: self.db.clone(),
        }
    }

    pub fn level(&self) -> Level {
        match (self.verbose, self.quiet) {
            (true, _) => Level::Verbose,
            (false, true) => Level::Quiet,
            (false, false) => Level::Normal,
        }
    }
}

// Deferred: only the subcommand given is built, its options, defaults and
// long help included, not all of them on every start.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Run processors over new and changed session files.
    Run(RunArgs),
    /// List every processor, built-in and configured, with a crontab line.
    List(ListArgs),
    /// Show processor state; requeue or reset sessions.
    State(StateArgs),
    /// Create or upgrade the database schema; import the legacy table.
    Migrate(MigrateArgs),
    /// Tokens and cost by day, week, month or session; by user, model, project.
    Report(ReportArgs),
}

#[derive(Debug, Args)]
#[command(after_long_help = help::report())]
pub struct ReportArgs {
    /// The period each row covers, or one row per session file.
    #[arg(value_enum, default_value_t = Period::Daily)]
    pub period: Period,
    /// Split each row further, by any of user, model and project.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "KEYS")]
    pub by: Vec<GroupBy>,
    /// Requests on or after this date (YYYY-MM-DD, in --tz).
    #[arg(long, value_name = "DATE")]
    pub since: Option<chrono::NaiveDate>,
    /// Requests on or before this date (YYYY-MM-DD, in --tz).
    #[arg(long, value_name = "DATE")]
    pub until: Option<chrono::NaiveDate>,
    /// The time zone days, weeks and months are counted in (IANA name, any
    /// case).
    #[arg(long, value_name = "ZONE", default_value = "UTC", value_parser = zone)]
    pub tz: jiff::tz::TimeZone,
    /// Only the sessions of this user folder.
    #[arg(long, value_name = "KEY")]
    pub user: Option<String>,
    /// Print a JSON array of rows on stdout.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV with a header line on stdout.
    #[arg(long)]
    pub csv: bool,
}

/// A `--tz` value: an IANA zone name, in any case, from the tz database
/// built in. The database's placeholders (`Factory`, `Etc/Unknown`) are
/// refused: they would count days in UTC under another name.
pub(crate) fn zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    let refused = || "not a zone of the tz database (an IANA name, e.g. Europe/Berlin)".to_owned();
    let tz = jiff::tz::TimeZone::get(name).map_err(|_| refused())?;
    if tz.is_unknown() || name.eq_ignore_ascii_case("Factory") {
        return Err(refused());
    }
    Ok(tz)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Period {
    Daily,
    Weekly,
    Monthly,
    Session,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum GroupBy {
    User,
    Model,
    Project,
}

#[derive(Debug, Args)]
#[command(after_long_help = help::run())]
pub struct RunArgs {
    /// Processors to run, one after another, each under its own lock.
    #[arg(value_name = "PROCESSOR", required_unless_present_any = ["all", "due"],
          add = ArgValueCandidates::new(crate::complete::processors))]
    pub processors: Vec<String>,
    /// Run every available processor.
    #[arg(long, conflicts_with_all = ["processors", "due"])]
    pub all: bool,
    /// Run each processor whose cadence has elapsed since its last run started.
    #[arg(long, conflicts_with = "processors")]
    pub due: bool,
    /// Wait up to DUR for a busy lock instead of exiting at once.
    #[arg(long, value_name = "DUR", value_parser = duration::parse)]
    pub wait: Option<Duration>,
    /// Exit code when another run holds the lock (like `flock -E`), 0 to 255.
    #[arg(long, value_name = "N", default_value_t = crate::exit::BUSY,
          value_parser = clap::value_parser!(i32).range(0..=255))]
    pub busy_exit_code: i32,
    /// Failed attempts on the same content before a session is quarantined.
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// Process at most N sessions (free skips of unchanged files don't count).
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<u64>,
    /// Take no new session once the run's LLM calls have cost USD dollars
    /// (calls under way finish).
    #[arg(long, value_name = "USD", value_parser = dollars)]
    pub max_cost: Option<f64>,
    /// Stop visiting new candidates once DUR has passed.
    #[arg(long, value_name = "DUR", value_parser = duration::parse)]
    pub time_budget: Option<Duration>,
    /// Sessions read and processed in parallel [default: available cores].
    #[arg(long, short = 'j', value_name = "N", default_value_t = default_jobs(),
          hide_default_value = true, value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: u16,
    /// Process only the user folders of shard K of N (PostgreSQL only): N
    /// hosts over one data dir, running shards 1/N to N/N, together process
    /// every session once. Each shard has its own lock. Not with --due: a
    /// shard's schedule is its host's crontab line.
    #[arg(long, value_name = "K/N", conflicts_with = "due")]
    pub shard: Option<crate::shard::Shard>,
    /// List what would be processed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON object per processor run on stdout.
    #[arg(long)]
    pub json: bool,
}

fn default_jobs() -> u16 {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(64) as u16)
}

#[derive(Debug, Args)]
#[command(after_long_help = help::list())]
pub struct ListArgs {
    /// Print a JSON array on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, after_long_help = help::state())]
pub struct StateArgs {
    #[command(subcommand)]
    pub action: Option<StateAction>,
    /// Show only this processor.
    #[arg(value_name = "PROCESSOR", add = ArgValueCandidates::new(crate::complete::processors))]
    pub processor: Option<String>,
    /// List failing and quarantined sessions with attempts and last error.
    #[arg(long, conflicts_with_all = ["session", "check"])]
    pub failed: bool,
    /// Show the state row of one session file (<key>/<file>.jsonl).
    #[arg(long, value_name = "FILE", conflicts_with = "check")]
    pub session: Option<String>,
    /// For monitors: exit 1 with a one-line reason when a processor is unhealthy.
    #[arg(long)]
    pub check: bool,
    /// With --check: the longest time since a finished run (default 2x cadence).
    #[arg(long, value_name = "DUR", value_parser = duration::parse, requires = "check")]
    pub max_age: Option<Duration>,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum StateAction {
    /// Clear failures so the sessions are processed on the next run.
    Requeue(RequeueArgs),
    /// Forget the state rows of a processor (gone files' stay, for prune): the next runs reprocess all.
    Reset(ResetArgs),
    /// Remove the rows and outputs of sessions whose files are gone.
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct RequeueArgs {
    #[arg(add = ArgValueCandidates::new(crate::complete::processors))]
    pub processor: String,
    /// Session files (<key>/<file>.jsonl) to requeue.
    #[arg(value_name = "FILE", required_unless_present_any = ["failed", "quarantined"])]
    pub files: Vec<String>,
    /// Requeue every failing session (quarantined ones included).
    #[arg(long, conflicts_with = "files")]
    pub failed: bool,
    /// Requeue every quarantined session.
    #[arg(long, conflicts_with_all = ["files", "failed"])]
    pub quarantined: bool,
}

#[derive(Debug, Args)]
pub struct ResetArgs {
    #[arg(add = ArgValueCandidates::new(crate::complete::processors))]
    pub processor: String,
}

/// Only files a run found gone are pruned: a present file's outputs would
/// only be made again by the next run.
#[derive(Debug, Args)]
pub struct PruneArgs {
    #[arg(add = ArgValueCandidates::new(crate::complete::processors))]
    pub processor: String,
    /// Prune the sessions whose files are gone (what prune always prunes;
    /// kept for scripts that say so).
    #[arg(long)]
    pub gone: bool,
    /// Only those last processed more than DUR ago.
    #[arg(long, value_name = "DUR", value_parser = duration::parse)]
    pub older_than: Option<Duration>,
}

#[derive(Debug, Args)]
#[command(after_long_help = help::migrate())]
pub struct MigrateArgs {
    /// Print current and target schema version and pending steps; change nothing.
    #[arg(long, conflicts_with = "from")]
    pub status: bool,
    /// Copy a SQLite database (state, run history, outputs) into the
    /// PostgreSQL database --db names, in one transaction: sqlite:PATH.
    #[arg(long, value_name = "sqlite:PATH", value_parser = sqlite_source)]
    pub from: Option<std::path::PathBuf>,
}

/// `sqlite:PATH`: the SQLite database `migrate --from` copies.
fn sqlite_source(text: &str) -> Result<std::path::PathBuf, String> {
    match text.strip_prefix("sqlite:") {
        Some(path) if !path.is_empty() => Ok(path.into()),
        _ => Err(format!("{text:?} is not sqlite:PATH")),
    }
}

/// A dollar amount: a finite number, 0 or more.
pub fn dollars(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "{text:?} is not an amount of dollars (0 or more, e.g. 2.50)"
        )),
    }
}
