//! `sessionpipe run`: processors one after another, each under its own lock.
//! One processor failing (busy, unavailable, database error) does not stop
//! the next; the exit code is the highest of theirs.

use anyhow::Result;
use chrono::Utc;

use crate::cli::RunArgs;
use crate::config::Config;
use crate::exit;
use crate::lock;
use crate::log::Log;
use crate::processor::Processor;
use crate::report::Report;
use crate::runner::{self, Options};
use crate::store::{Need, Store, runs, timestamp};

pub fn run(args: &RunArgs, config: &Config, log: &Log) -> Result<i32> {
    let all = crate::processor::registry(config);
    let explicit = !args.all && !args.due;
    let mut chosen: Vec<&dyn Processor> = Vec::new();
    if explicit {
        for name in &args.processors {
            let p = super::find(&all, name)?;
            if !chosen.iter().any(|c| c.name() == p.name()) {
                chosen.push(p);
            }
        }
    } else {
        chosen = all.iter().map(|p| p.as_ref()).collect();
    }
    let data_dir = config.require_data_dir()?;
    // Opened when first needed: an unavailable processor leaves no database.
    let mut slot: Option<Store> = None;
    let mut code = exit::SUCCESS;
    for p in chosen {
        if args.due && !is_due(open(&mut slot, args, config)?, p)? {
            log.info(format_args!("{}: not due", p.name()));
            continue;
        }
        if let Some(why) = p.unavailable() {
            if explicit {
                let report = refused(p, exit::UNAVAILABLE, format!("unavailable: {why}"));
                log.error(format_args!("{}: unavailable: {why}", p.name()));
                code = code.max(emit(args, report));
            } else {
                log.warn(format_args!("{}: skipped, unavailable: {why}", p.name()));
            }
            continue;
        }
        let opts = Options {
            max_attempts: args.max_attempts,
            max_sessions: args.max_sessions.or(p.default_max_sessions()),
            time_budget: args.time_budget.or(p.default_time_budget()),
            dry_run: args.dry_run,
            jobs: usize::from(args.jobs),
        };
        let store = open(&mut slot, args, config)?;
        let report = run_one(store, p, data_dir, &opts, args, config, log);
        code = code.max(emit(args, report));
    }
    Ok(code)
}

/// The database, opened on first use. A dry run never creates one.
fn open<'s>(slot: &'s mut Option<Store>, args: &RunArgs, config: &Config) -> Result<&'s mut Store> {
    let store = match slot.take() {
        Some(store) => store,
        None if args.dry_run && !config.db.exists() => Store::in_memory()?,
        None => Store::open(&config.db, Need::Current, config.busy_timeout)?,
    };
    Ok(slot.insert(store))
}

fn run_one(
    store: &mut Store,
    p: &dyn Processor,
    data_dir: &std::path::Path,
    opts: &Options,
    args: &RunArgs,
    config: &Config,
    log: &Log,
) -> Report {
    let lock = if args.dry_run {
        None
    } else {
        match lock::acquire(&config.db, p.name(), args.wait) {
            Ok(Some(lock)) => Some(lock),
            Ok(None) => {
                let message = "another run holds the lock".to_owned();
                if args.busy_exit_code != exit::SUCCESS {
                    log.error(format_args!("{}: {message}", p.name()));
                }
                return refused(p, args.busy_exit_code, message);
            }
            Err(e) => return failed(p, e, log),
        }
    };
    match runner::run(store, p, lock.as_ref(), data_dir, opts, log) {
        Ok(report) => report,
        Err(e) => failed(p, e, log),
    }
}

fn failed(p: &dyn Processor, e: anyhow::Error, log: &Log) -> Report {
    log.error(format_args!("{}: {e:#}", p.name()));
    refused(p, exit::code_of(&e), format!("{e:#}"))
}

/// The report of a processor that did not get to run.
fn refused(p: &dyn Processor, code: i32, error: String) -> Report {
    Report {
        processor: p.name().to_owned(),
        started_at: timestamp(Utc::now()),
        exit_code: code,
        error: Some(error),
        ..Report::default()
    }
}

/// Prints what the run asked for and returns its exit code.
fn emit(args: &RunArgs, report: Report) -> i32 {
    if args.json {
        match serde_json::to_string(&report) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("sessionpipe: cannot print the report: {e}"),
        }
    } else if let Some(list) = &report.would_process {
        for file in list {
            println!("{}: would process {file}", report.processor);
        }
    }
    report.exit_code
}

/// Due when the cadence has passed since the last run started (or never ran).
fn is_due(store: &Store, p: &dyn Processor) -> Result<bool> {
    let Some(last) = runs::last_started(&store.conn, p.name())? else {
        return Ok(true);
    };
    let cadence = chrono::Duration::from_std(p.cadence()).unwrap_or(chrono::Duration::MAX);
    // A little slack: cron fires on the minute, a run starts a moment later.
    let slack = chrono::Duration::seconds(5);
    Ok(Utc::now() + slack >= last + cadence)
}
