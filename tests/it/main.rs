//! The integration tests: the built binary on temporary trees, one module
//! per area, all in one test binary (one link, shared helpers in [`util`]).

mod config;
mod crash;
mod cron;
mod exec;
mod failures;
mod generated;
mod hostile;
mod locking;
mod md5sum;
mod migrate;
mod moves;
mod output;
mod overlap;
mod postgres;
mod recipes;
mod report;
mod run;
mod state;
mod subagents;
mod usage;
mod usage_requests;
mod usage_tables;
mod util;
mod verification;
mod verification_cost;
