//! `sessionpipe run`: processors one after another, each under its own lock.
//! One processor failing (busy, unavailable, database error) does not stop
//! the next; the exit code is the highest of theirs.

use anyhow::Result;
use chrono::Utc;

use crate::cli::RunArgs;
use crate::config::Config;
use crate::exit;
use crate::lock;
use crate::printer::Printer;
use crate::processor::Processor;
use crate::report::Report;
use crate::run::{self, Mode, Options};
use crate::signals;
use crate::store::{Need, Store, runs, timestamp};

pub fn run(args: &RunArgs, config: &Config, printer: &Printer) -> Result<i32> {
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
        // Switched off in the config: left out of --all and --due.
        chosen = all
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| config.enabled(p.name()) != Some(false))
            .collect();
    }
    config.require_data_dir()?;
    if args.shard.is_some() && config.db.file().is_some() {
        return Err(exit::fail(
            exit::USAGE,
            "--shard needs a PostgreSQL database (--db postgresql://…): hosts that \
             split a data dir share the database, and a SQLite file cannot be shared",
        ));
    }
    signals::install()?;
    crate::processor::exec::hide_this_process();
    // Opened when first needed: an unavailable processor leaves no database.
    let mut slot: Option<Store> = None;
    let mut code = exit::SUCCESS;
    let mut read_any = false;
    for p in chosen {
        if signals::received().is_some() {
            break; // the signal's code is already among the runs'
        }
        if args.due && !is_due(open(&mut slot, args, config)?, p)? {
            printer.info(format_args!("{}: not due", p.name()));
            continue;
        }
        if let Some(why) = p.unavailable() {
            code = code.max(unavailable(p, &why, explicit, args, config, printer)?);
            continue;
        }
        let opts = Options {
            max_attempts: args.max_attempts,
            max_sessions: args.max_sessions.or(p.default_max_sessions()),
            time_budget: args.time_budget.or(p.default_time_budget()),
            max_cost: args.max_cost.or(p.default_max_cost()),
            jobs: usize::from(args.jobs),
            fragment_settle: config.fragment_settle,
            shard: args.shard,
        };
        let store = open(&mut slot, args, config)?;
        if let Some(report) = run_one(store, p, &opts, args, config, printer) {
            read_any |= report.candidates > 0;
            code = code.max(emit(args, &report, printer)?);
        }
    }
    if let (Some(store), false) = (&slot, read_any) {
        // Only a cost saved: failing, the store checkpoints as it closes.
        let _ = store.checkpoint_later();
    }
    Ok(code)
}

/// A processor that cannot run here: an error when it was asked for by
/// name; under `--all` and `--due` a warning only if the config switched it
/// on, else silence (it was never asked for).
fn unavailable(
    p: &dyn Processor,
    why: &str,
    explicit: bool,
    args: &RunArgs,
    config: &Config,
    printer: &Printer,
) -> Result<i32> {
    if explicit {
        let report = refused(p, exit::UNAVAILABLE, format!("unavailable: {why}"));
        printer.error(format_args!("{}: unavailable: {why}", p.name()));
        return emit(args, &report, printer);
    }
    let message = format_args!("{}: skipped, unavailable: {why}", p.name());
    if config.enabled(p.name()) == Some(true) {
        printer.warn(message);
    } else {
        printer.info(message);
    }
    Ok(exit::SUCCESS)
}

/// The database, opened on first use. A dry run never creates one.
fn open<'s>(slot: &'s mut Option<Store>, args: &RunArgs, config: &Config) -> Result<&'s mut Store> {
    let store = match slot.take() {
        Some(store) => store,
        None if args.dry_run && !config.db.exists() => Store::in_memory()?,
        None => Store::for_config(config, Need::Current)?,
    };
    Ok(slot.insert(store))
}

/// Runs one processor under its lock (none for a dry run), whatever happens
/// returning its report; `None` under `--due` when the previous run still
/// holds the lock: it is simply not due.
fn run_one(
    store: &mut Store,
    p: &dyn Processor,
    opts: &Options,
    args: &RunArgs,
    config: &Config,
    printer: &Printer,
) -> Option<Report> {
    let data_dir = &config.data_dir;
    if args.dry_run {
        let report = run::run(store, p, Mode::DryRun, data_dir, opts, printer);
        return Some(report.unwrap_or_else(|e| failed(p, e, printer)));
    }
    let lock = match take_lock(store, p, args, config) {
        Ok(Some(lock)) => lock,
        Ok(None) if args.due => {
            printer.info(format_args!(
                "{}: not due, its last run is still going",
                p.name()
            ));
            return None;
        }
        Ok(None) => {
            let message = "another run holds the lock".to_owned();
            if args.busy_exit_code != exit::SUCCESS {
                printer.error(format_args!("{}: {message}", p.name()));
            }
            return Some(refused(p, args.busy_exit_code, message));
        }
        Err(e) => return Some(failed(p, e, printer)),
    };
    let report = run::run(store, p, Mode::Commit(&lock), data_dir, opts, printer);
    let unlocked = unlock(store, p, args);
    let report = report.and_then(|r| unlocked.map(|()| r));
    Some(report.unwrap_or_else(|e| failed(p, e, printer)))
}

/// The processor's lock: on SQLite the lock file beside the database; on
/// PostgreSQL the server's advisory locks, then the attempt journal's file
/// lock on this host. A shard's run holds the processor's lock shared and
/// its shard's exclusive, so shards run side by side and a run of the whole
/// processor excludes them all. `None` when another run holds it.
fn take_lock(
    store: &Store,
    p: &dyn Processor,
    args: &RunArgs,
    config: &Config,
) -> Result<Option<lock::ProcessorLock>> {
    let Some(file) = config.db.file() else {
        if !store.lock(p.name(), args.shard.is_some(), args.wait)? {
            return Ok(None);
        }
        let held = server_lock(store, p, args, config);
        // Whatever was taken is let go of when the run cannot go on.
        if !matches!(held, Ok(Some(_))) {
            unlock(store, p, args)?;
        }
        return held;
    };
    lock::acquire(file, p.name(), args.wait)
}

/// Under the processor's advisory lock: the shard's, then this host's
/// journal file lock.
fn server_lock(
    store: &Store,
    p: &dyn Processor,
    args: &RunArgs,
    config: &Config,
) -> Result<Option<lock::ProcessorLock>> {
    if let Some(shard) = args.shard
        && !lock_shard_count(store, p.name(), shard, args.wait)?
    {
        return Ok(None);
    }
    let own = args.shard.map(|s| s.lock_name(p.name()));
    if let Some(own) = &own
        && !store.lock(own, false, args.wait)?
    {
        return Ok(None);
    }
    let anchor = lock::journal_anchor(&config.db.to_string(), config.source.as_str())?;
    lock::acquire(&anchor, own.as_deref().unwrap_or(p.name()), args.wait)
}

/// Takes the lock all shards of `shard`'s count hold shared, unless shards
/// of another count run: checked under a short exclusive lock, so that two
/// counts starting at once cannot both pass. `false`: busy.
fn lock_shard_count(
    store: &Store,
    processor: &str,
    shard: crate::shard::Shard,
    wait: Option<std::time::Duration>,
) -> Result<bool> {
    let setup = format!("{processor}.shard-counts");
    // Held for a moment by each shard starting: waited for, whatever --wait.
    let moment = std::time::Duration::from_secs(10);
    if !store.lock(&setup, false, Some(wait.map_or(moment, |w| w.max(moment))))? {
        return Ok(false);
    }
    let others = store.any_locked(&shard.other_count_lock_names(processor));
    let taken = match others {
        Ok(false) => store.lock(&shard.count_lock_name(processor), true, None),
        Ok(true) => Err(exit::fail(
            exit::BUSY,
            format!(
                "{processor}: shards of another count than {} run: give every host the \
                 same --shard K/N",
                shard.count()
            ),
        )),
        Err(e) => Err(e),
    };
    store.unlock(&setup, false)?;
    taken
}

/// Releases the server's locks [`take_lock`] took (nothing on SQLite); a
/// lock not held is no error.
fn unlock(store: &Store, p: &dyn Processor, args: &RunArgs) -> Result<()> {
    let shard = args.shard.map(|s| {
        let own = store.unlock(&s.lock_name(p.name()), false);
        let count = store.unlock(&s.count_lock_name(p.name()), true);
        own.and(count)
    });
    let whole = store.unlock(p.name(), args.shard.is_some());
    shard.transpose()?;
    whole
}

fn failed(p: &dyn Processor, e: anyhow::Error, printer: &Printer) -> Report {
    printer.error(format_args!("{}: {e:#}", p.name()));
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
fn emit(args: &RunArgs, report: &Report, printer: &Printer) -> Result<i32> {
    if args.json {
        printer.out(serde_json::to_string(report)?)?;
    } else if let Some(list) = &report.would_process {
        for file in list {
            printer.out(format_args!("{}: would process {file}", report.processor))?;
        }
    }
    Ok(report.exit_code)
}

/// Due when the cadence has passed since the last run started (or never ran).
fn is_due(store: &Store, p: &dyn Processor) -> Result<bool> {
    let last = runs::last_started(store.db(), p.name())?;
    Ok(crate::verdict::is_due(last, p.cadence(), Utc::now()))
}
