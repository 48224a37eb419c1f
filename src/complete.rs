//! Completion of processor names for the shells, while the user types:
//! the built-ins and those the config file declares (the config named by
//! `SESSIONPIPE_CONFIG`, or the default one). The shell scripts in
//! `completions/` call back into sessionpipe for these (`COMPLETE=bash
//! sessionpipe` prints the bash one).

use clap_complete::CompletionCandidate;

use crate::config::{Config, Given};
use crate::env::Environment;

/// Every processor's name, with what it does.
pub fn processors() -> Vec<CompletionCandidate> {
    let Ok(config) = Config::load(&Given::default(), &Environment::from_process()) else {
        // A config that cannot be read still leaves the built-ins.
        return ["usage", "verification"]
            .into_iter()
            .map(CompletionCandidate::new)
            .collect();
    };
    crate::processor::registry(&config)
        .iter()
        .map(|p| CompletionCandidate::new(p.name()).help(Some(p.kind().into())))
        .collect()
}
