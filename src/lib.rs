//! sessionpipe feeds Claude Code session transcripts through pluggable
//! processors, each keeping its own state per session file in SQLite.
//!
//! The binary is a thin shell around [`cmd::dispatch`]; the library exists so
//! that tests can reach the CLI definition (man page and completions are
//! generated from it) and the units behind each guarantee.

pub mod allocator;
pub mod cli;
pub mod cmd;
pub mod complete;
pub mod config;
pub mod duration;
pub mod env;
pub mod exit;
pub mod failpoint;
pub mod help;
pub mod human;
pub mod identities;
pub mod journal;
pub mod llm;
pub mod lock;
pub mod prices;
pub mod printer;
pub mod processor;
pub mod report;
pub mod run;
pub mod scan;
pub mod session;
pub mod shard;
pub mod signals;
pub mod spend;
pub mod state_rows;
pub mod store;
pub mod texts;
pub mod transcript;
pub mod verdict;
