//! Every environment variable sessionpipe reads, named and read here only.
//!
//! The process environment is read once, at start, into an [`Environment`];
//! configuration resolves flags over it, so what a run sees cannot change
//! half-way and tests can hand in an environment of their own. The
//! exceptions: the debug-only crash hook of [`crate::failpoint`], and
//! `COMPLETE`, which the shell completion engine reads for itself (see
//! [`crate::complete`]).

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;

/// The config file, as `--config`.
pub const CONFIG: &str = "SESSIONPIPE_CONFIG";
/// The data dir, as `--data-dir` (the name the replaced pipeline used).
pub const DATA_DIR: &str = "SESSION_DATA_DIR";
/// The state database, as `--db`.
pub const DB: &str = "SESSIONPIPE_DB";
/// Override `[llm] provider`, `base_url` and `model`.
pub const LLM_PROVIDER: &str = "SESSIONPIPE_LLM_PROVIDER";
pub const LLM_BASE_URL: &str = "SESSIONPIPE_LLM_BASE_URL";
pub const LLM_MODEL: &str = "SESSIONPIPE_LLM_MODEL";
/// The LLM key, before `api_key_env` and the provider's own variable.
pub const LLM_API_KEY: &str = "SESSIONPIPE_LLM_API_KEY";
/// Where external programs are looked up.
pub const PATH: &str = "PATH";
/// The providers' own variables for an LLM key.
pub const PROVIDER_KEYS: &[&str] = &["ANTHROPIC_API_KEY", "OPENAI_API_KEY"];
/// What reaches the database: the address (which may hold a password) and
/// libpq's password variables, read the way `psql` reads them.
pub const DB_CREDENTIALS: &[&str] = &[DB, "PGPASSWORD", "PGPASSFILE", "PGSERVICEFILE"];
/// Debug builds only: the named crash point to abort at.
pub const FAILPOINT: &str = "SESSIONPIPE_FAILPOINT";

/// A snapshot of the process environment.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: HashMap<OsString, OsString>,
}

impl Environment {
    pub fn from_process() -> Environment {
        Environment {
            vars: std::env::vars_os().collect(),
        }
    }

    /// An environment holding exactly these variables.
    pub fn of<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Environment {
        Environment {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// A variable's text; unset, blank and non-UTF-8 values are absent.
    pub fn text(&self, name: &str) -> Option<String> {
        let value = self.vars.get(std::ffi::OsStr::new(name))?.to_str()?;
        (!value.trim().is_empty()).then(|| value.to_owned())
    }

    /// A variable's raw value.
    pub fn os(&self, name: &str) -> Option<&OsString> {
        self.vars.get(std::ffi::OsStr::new(name))
    }

    /// The variables that hold, or may hold, a credential: every
    /// `SESSIONPIPE_LLM_*`, the providers' own key variables and
    /// `key_variable` (`[llm] api_key_env`) for the LLM, and the database's
    /// ([`DB_CREDENTIALS`]: its address may carry a password). None of them
    /// may reach an external command unless its processor lets it through
    /// by name.
    pub fn credentials(&self, key_variable: &str) -> Vec<OsString> {
        let mut names: Vec<OsString> = self
            .vars
            .keys()
            .filter(|name| {
                let text = name.to_string_lossy();
                text.starts_with("SESSIONPIPE_LLM_")
                    || PROVIDER_KEYS.contains(&text.as_ref())
                    || DB_CREDENTIALS.contains(&text.as_ref())
                    || text == key_variable
            })
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// The values of the credential variables (see [`Environment::credentials`]),
    /// to be redacted wherever a command's output is kept.
    pub fn secrets(&self, key_variable: &str) -> Vec<String> {
        self.credentials(key_variable)
            .iter()
            .filter_map(|name| self.vars.get(name)?.to_str())
            .filter(|value| !value.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// A variable naming a file or folder, any bytes kept. Set but empty is
    /// a usage error (2), as an empty flag is: falling back to a default
    /// would hide the mistake in a crontab line.
    pub fn path(&self, name: &str) -> anyhow::Result<Option<PathBuf>> {
        match self.vars.get(std::ffi::OsStr::new(name)) {
            None => Ok(None),
            Some(value) if value.is_empty() => Err(crate::exit::fail(
                crate::exit::USAGE,
                format!("{name} is set but empty"),
            )),
            Some(value) => Ok(Some(PathBuf::from(value))),
        }
    }
}

/// The crash point to abort at, read at each hit (debug builds only).
#[cfg(debug_assertions)]
pub fn failpoint() -> Option<String> {
    std::env::var(FAILPOINT).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_text_is_absent_and_an_empty_path_an_error() {
        let env = Environment::of([(DB, ""), (LLM_MODEL, "  "), (CONFIG, "/etc/x.toml")]);
        let empty = env.path(DB).unwrap_err();
        assert_eq!(crate::exit::code_of(&empty), crate::exit::USAGE);
        assert_eq!(env.path(DATA_DIR).unwrap(), None);
        assert_eq!(env.text(LLM_MODEL), None);
        assert_eq!(
            env.path(CONFIG).unwrap(),
            Some(PathBuf::from("/etc/x.toml"))
        );
        assert_eq!(env.text("UNSET"), None);
    }

    #[test]
    fn credentials_are_every_llm_key_variable() {
        let env = Environment::of([
            (LLM_API_KEY, "k"),
            (LLM_BASE_URL, "https://x"),
            ("ANTHROPIC_API_KEY", "k"),
            ("MY_KEY", "k"),
            ("HOME", "/root"),
        ]);
        let names: Vec<String> = env
            .credentials("MY_KEY")
            .iter()
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["ANTHROPIC_API_KEY", "MY_KEY", LLM_API_KEY, LLM_BASE_URL]
        );
    }
}
