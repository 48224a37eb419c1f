//! Configuration: flags > environment > config file > defaults.
//!
//! This module resolves the flags over the environment ([`crate::env`]), the
//! config file and the defaults, and holds the settings types the processors
//! are built from; the `[llm]` section is resolved by [`crate::llm`] and the
//! identity map read by [`crate::identities`]. The config
//! file names commands that run as the cron user, so it is refused when
//! someone else could have written it, and any unknown key or bad value is an
//! error that names it (exit 78) rather than a silently ignored typo.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::duration;
use crate::env::{self, Environment};
use crate::exit::{self, Coded};
use crate::llm::{LlmConfig, LlmSection};
use crate::store::Location;
use crate::verdict::Settle;

pub const DEFAULT_CONFIG: &str = "/etc/sessionpipe/config.toml";
pub const DEFAULT_DATA_DIR: &str = "/data/user_sessions";
pub const DEFAULT_DB: &str = "/var/lib/sessionpipe/state.db";
/// A file quiet this long has finished its final line, newline or not.
pub const DEFAULT_FRAGMENT_SETTLE: Duration = Duration::from_secs(10 * 60);

/// The paths an invocation was given by flag (each flag's variable is read
/// only when the flag is absent).
#[derive(Debug, Clone, Default)]
pub struct Given {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub db: Option<PathBuf>,
}

/// Everything a subcommand needs to know about where things are and which
/// processors the operator declared.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub db: Location,
    pub exec: Vec<ExecSpec>,
    /// `usage`: user folder key -> identity (e.g. email), from `[usage] identities`.
    pub identities: HashMap<String, String>,
    /// `usage`: the price table with the `[prices."MODEL"]` sections over it.
    pub prices: crate::prices::PriceBook,
    /// `verification`: the model to ask, and its settings.
    pub llm: LlmConfig,
    pub verification: VerificationSettings,
    /// How long to wait for another writer of the database.
    pub busy_timeout: Duration,
    /// The name this data dir's rows carry in a database that hosts with
    /// data dirs of their own share (`source`); `""` for none.
    pub source: String,
    /// How long a file must be quiet for a final line without a newline to
    /// count as a line.
    pub fragment_settle: Duration,
    /// Variables kept from external commands (see [`Environment::credentials`])...
    pub credentials: Vec<OsString>,
    /// ...and their values, redacted from what is kept of a command's output.
    pub secrets: Vec<crate::llm::ApiKey>,
    /// `PATH`, where external programs are found.
    pub path: Option<OsString>,
    /// `enabled = ...` as the config file set it, per processor.
    enabled: BTreeMap<String, bool>,
    /// `--config`, `--data-dir` and `--db` as this invocation was given them
    /// (by flag or variable), absolute: what a crontab line must repeat.
    pub given: Vec<(&'static str, PathBuf)>,
}

/// `verification`'s settings: its per-run limits (applied unless `run` is
/// given its own), how long a conversation settles before it is sent, and
/// how much of what was sent before a grown session's call repeats.
#[derive(Debug, Clone, Copy)]
pub struct VerificationSettings {
    pub max_sessions: u64,
    pub time_budget: Duration,
    pub max_cost: Option<f64>,
    pub settle: Settle,
    pub context_turns: usize,
}

/// The most turns of context a grown session's call may repeat.
pub const MAX_CONTEXT_TURNS: u64 = 100;

impl VerificationSettings {
    /// One LLM call per session: a run is kept short, and a conversation is
    /// judged once it has ended (or after a working day).
    pub const DEFAULT: VerificationSettings = VerificationSettings {
        max_sessions: 50,
        time_budget: Duration::from_secs(10 * 60),
        max_cost: None,
        settle: Settle {
            quiet: Duration::from_secs(30 * 60),
            max_wait: Duration::from_secs(6 * 3600),
        },
        context_turns: 10,
    };
}

/// A processor that runs an external command once per session.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub name: String,
    pub command: Vec<String>,
    pub version: u32,
    pub cadence: Duration,
    pub timeout: Duration,
    /// Credential variables the command may see all the same.
    pub env: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    db: Option<PathBuf>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    busy_timeout: Option<Duration>,
    source: Option<String>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    fragment_settle: Option<Duration>,
    #[serde(default)]
    processors: BTreeMap<String, FileExec>,
    #[serde(default)]
    usage: FileUsage,
    #[serde(default)]
    prices: BTreeMap<String, crate::prices::ConfigPrice>,
    #[serde(default)]
    llm: LlmSection,
    #[serde(default)]
    verification: FileVerification,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileVerification {
    enabled: Option<bool>,
    max_sessions: Option<u64>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    time_budget: Option<Duration>,
    max_cost_per_run: Option<f64>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    settle: Option<Duration>,
    #[serde(default, deserialize_with = "duration::de_opt")]
    max_wait: Option<Duration>,
    context_turns: Option<u64>,
}

impl FileVerification {
    /// The section over `verification`'s defaults, checked.
    fn settings(&self) -> Result<VerificationSettings> {
        let defaults = VerificationSettings::DEFAULT;
        let max_cost = match self.max_cost_per_run {
            Some(v) if !(v.is_finite() && v >= 0.0) => {
                return Err(exit::fail(
                    exit::CONFIG,
                    format!(
                        "config: verification.max_cost_per_run = {v} must be 0 or more dollars"
                    ),
                ));
            }
            other => other,
        };
        let context_turns = match self.context_turns {
            Some(n) if n > MAX_CONTEXT_TURNS => {
                return Err(exit::fail(
                    exit::CONFIG,
                    format!(
                        "config: verification.context_turns = {n} is more than {MAX_CONTEXT_TURNS}"
                    ),
                ));
            }
            Some(n) => n as usize,
            None => defaults.context_turns,
        };
        Ok(VerificationSettings {
            max_sessions: self.max_sessions.unwrap_or(defaults.max_sessions),
            time_budget: self.time_budget.unwrap_or(defaults.time_budget),
            max_cost,
            settle: Settle {
                quiet: self.settle.unwrap_or(defaults.settle.quiet),
                max_wait: self.max_wait.unwrap_or(defaults.settle.max_wait),
            },
            context_turns,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUsage {
    enabled: Option<bool>,
    /// CSV of `key,email` lines, relative to the config file.
    identities: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileExec {
    command: Vec<String>,
    #[serde(default = "one")]
    version: u32,
    #[serde(default = "default_cadence", deserialize_with = "duration::de")]
    cadence: Duration,
    #[serde(default = "default_timeout", deserialize_with = "duration::de")]
    timeout: Duration,
    #[serde(default)]
    env: Vec<String>,
    enabled: Option<bool>,
}

fn one() -> u32 {
    1
}

fn default_cadence() -> Duration {
    Duration::from_secs(30 * 60)
}

fn default_timeout() -> Duration {
    Duration::from_secs(10 * 60)
}

/// Names that cannot be processors: they would collide with the built-ins or
/// with `state` subcommands.
const RESERVED: &[&str] = &["usage", "verification", "requeue", "reset"];

impl Config {
    /// Resolves the configuration from the parsed global flags over the
    /// environment, the config file and the defaults.
    pub fn load(args: &Given, env: &Environment) -> Result<Config> {
        // A flag's variable is read only when the flag is absent.
        let flag_or_env = |flag: &Option<PathBuf>, name: &str| match flag {
            Some(path) => Ok(Some(path.clone())),
            None => env.path(name),
        };
        let named = flag_or_env(&args.config, env::CONFIG)?;
        let path = match &named {
            Some(path) => Some(path.as_path()),
            None => Some(Path::new(DEFAULT_CONFIG)).filter(|p| p.exists()),
        };
        let file = match path {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        // Relative paths in the file are the file's, not the working
        // directory's: cron starts in $HOME.
        let base = path.and_then(Path::parent).unwrap_or(Path::new("."));
        let identities = match &file.usage.identities {
            Some(csv) => crate::identities::read(&base.join(csv)).code(exit::CONFIG)?,
            None => HashMap::new(),
        };
        let prices = crate::prices::PriceBook::new(&file.prices).code(exit::CONFIG)?;
        let mut enabled = BTreeMap::new();
        let mut exec = Vec::new();
        for (name, p) in file.processors {
            if let Some(on) = p.enabled {
                enabled.insert(name.clone(), on);
            }
            exec.push(exec_spec(name, p)?);
        }
        for (name, on) in [
            ("usage", file.usage.enabled),
            ("verification", file.verification.enabled),
        ] {
            if let Some(on) = on {
                enabled.insert(name.to_owned(), on);
            }
        }
        let llm = LlmConfig::resolve(&file.llm, env).code(exit::CONFIG)?;
        let credentials = env.credentials(&llm.key_variable);
        let secrets = env
            .secrets(&llm.key_variable)
            .into_iter()
            .map(crate::llm::ApiKey::new)
            .collect();
        let data_dir = flag_or_env(&args.data_dir, env::DATA_DIR)?;
        let db = flag_or_env(&args.db, env::DB)?;
        let given = [
            ("--config", &named),
            ("--data-dir", &data_dir),
            ("--db", &db),
        ]
        .into_iter()
        .filter_map(|(flag, path)| Some((flag, absolute(path.as_ref()?))))
        .collect();
        let verification = file.verification.settings()?;
        Ok(Config {
            data_dir: data_dir
                .or(file.data_dir.map(|d| base.join(d)))
                .unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            db: location(db, file.db, base)?,
            exec,
            identities,
            prices,
            llm,
            verification,
            busy_timeout: file
                .busy_timeout
                .unwrap_or(crate::store::DEFAULT_BUSY_TIMEOUT),
            fragment_settle: file.fragment_settle.unwrap_or(DEFAULT_FRAGMENT_SETTLE),
            source: source_name(file.source)?,
            credentials,
            secrets,
            path: env.os(env::PATH).cloned(),
            enabled,
            given,
        })
    }

    /// Whether the config file switched `processor` on (`Some(true)`), off
    /// (`Some(false)`), or said nothing.
    pub fn enabled(&self, processor: &str) -> Option<bool> {
        self.enabled.get(processor).copied()
    }

    /// The data dir, or exit 78 when it is missing: an empty success would
    /// hide a broken mount from cron for ever.
    pub fn require_data_dir(&self) -> Result<&Path> {
        match std::fs::metadata(&self.data_dir) {
            Ok(m) if m.is_dir() => Ok(&self.data_dir),
            Ok(_) => Err(exit::fail(
                exit::CONFIG,
                format!("data dir {} is not a directory", self.data_dir.display()),
            )),
            Err(e) => Err(exit::fail(
                exit::CONFIG,
                format!("data dir {}: {e}", self.data_dir.display()),
            )),
        }
    }
}

/// A path as seen from anywhere: cron does not start where we were.
/// The database: the flag (or variable), else the config file's `db` (a
/// path relative to the file's folder, or an address), else the default.
/// libpq's `key=value` form is refused: read as a file's name, it would put
/// a password into one.
fn location(given: Option<PathBuf>, in_file: Option<PathBuf>, base: &Path) -> Result<Location> {
    const KEYS: &[&str] = &[
        "host=",
        "hostaddr=",
        "port=",
        "dbname=",
        "user=",
        "password=",
    ];
    let in_file = in_file.map(|d| if is_address(&d) { d } else { base.join(d) });
    let db = given.or(in_file).unwrap_or_else(|| DEFAULT_DB.into());
    let text = db.to_string_lossy();
    if text
        .split_whitespace()
        .any(|word| KEYS.iter().any(|k| word.starts_with(k)))
    {
        return Err(exit::fail(
            exit::USAGE,
            "the database is a file's path or a postgresql:// address, not key=value pairs",
        ));
    }
    Ok(Location::parse(db))
}

/// A path made absolute; a database address as it is, without its
/// password (what is shown of it is pasted into crontabs).
fn absolute(path: &Path) -> PathBuf {
    if is_address(path) {
        return crate::store::postgres::connect::shown(&path.to_string_lossy()).into();
    }
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

fn is_address(path: &Path) -> bool {
    path.to_str()
        .is_some_and(crate::store::postgres::connect::is_address)
}

/// One `[processors.NAME]` section, checked.
fn exec_spec(name: String, p: FileExec) -> Result<ExecSpec> {
    validate_name(&name).code(exit::CONFIG)?;
    if p.command.is_empty() || p.command[0].is_empty() {
        return Err(exit::fail(
            exit::CONFIG,
            format!("config: processors.{name}.command must name a program"),
        ));
    }
    if p.timeout.is_zero() || p.cadence.is_zero() {
        return Err(exit::fail(
            exit::CONFIG,
            format!("config: processors.{name}: cadence and timeout must be positive"),
        ));
    }
    Ok(ExecSpec {
        name,
        command: p.command,
        version: p.version,
        cadence: p.cadence,
        timeout: p.timeout,
        env: p.env,
    })
}

/// `source`: at most 64 letters, digits, '.', '-' or '_' (it is in every
/// key, and in the names dashboards filter by).
fn source_name(source: Option<String>) -> Result<String> {
    let Some(name) = source else {
        return Ok(String::new());
    };
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !ok {
        return Err(exit::fail(
            exit::CONFIG,
            format!("config: source {name:?} must be 1 to 64 letters, digits, '.', '-' or '_'"),
        ));
    }
    Ok(name)
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        anyhow::bail!(
            "config: processor name {name:?} must be lowercase letters, digits, '-' or '_' (at most 64)"
        );
    }
    if RESERVED.contains(&name) {
        anyhow::bail!("config: processor name {name:?} is reserved");
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let shown = path.display();
    // Non-blocking, so that a FIFO is refused rather than waited on.
    let mut file = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("config file {shown}"))
        .code(exit::CONFIG)?;
    let meta = file
        .metadata()
        .with_context(|| format!("config file {shown}"))
        .code(exit::CONFIG)?;
    if !meta.is_file() {
        return Err(exit::fail(
            exit::CONFIG,
            format!("config file {shown} is not a regular file"),
        ));
    }
    check_ownership(path, &meta).code(exit::CONFIG)?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text)
        .with_context(|| format!("config file {shown}"))
        .code(exit::CONFIG)?;
    toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("config file {shown}: {}", e.to_string().trim_end()))
        .code(exit::CONFIG)
}

/// The config file names commands to run: anyone who can write it can run
/// code as the cron user, so only that user or root may own it and neither
/// group nor others may write it.
fn check_ownership(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        anyhow::bail!(
            "config file {} is owned by uid {}, not by you (uid {me}) or root",
            path.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        anyhow::bail!(
            "config file {} is writable by group or others (mode {:o}); run chmod go-w on it",
            path.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("secrets-scan").is_ok());
        assert!(validate_name("a_1").is_ok());
        for bad in ["", "Upper", "-lead", "has space", "usage", "requeue", "a/b"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = toml::from_str::<FileConfig>("data_dri = \"/x\"").unwrap_err();
        assert!(err.to_string().contains("data_dri"), "{err}");
        let err =
            toml::from_str::<FileConfig>("[processors.x]\ncommand = [\"true\"]\ncadense = \"5m\"")
                .unwrap_err();
        assert!(err.to_string().contains("cadense"), "{err}");
    }

    #[test]
    fn bad_durations_are_named() {
        let err = toml::from_str::<FileConfig>(
            "[processors.x]\ncommand = [\"true\"]\ntimeout = \"soon\"",
        )
        .unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
    }
}
