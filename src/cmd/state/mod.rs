//! `sessionpipe state`: what each processor holds, how far behind it is, and
//! whether a monitor should worry (`--check`); `requeue` and `reset` for
//! operators.

use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::cli::{StateAction, StateArgs};
use crate::config::Config;
use crate::duration;
use crate::exit;
use crate::human;
use crate::printer::Printer;
use crate::processor::Processor;
use crate::scan;
use crate::store::state::{self as rows, Requeue};
use crate::store::{Need, Store, parse_timestamp, runs};
use crate::verdict;
use summary::{Summary, print_summary, summarize, wait_limit};

mod summary;

pub fn state(args: &StateArgs, config: &Config, printer: &Printer) -> Result<i32> {
    let all = crate::processor::registry(config);
    if let Some(action) = &args.action {
        return act(action, &all, config, printer);
    }
    let chosen: Vec<&dyn Processor> = match &args.processor {
        Some(name) => vec![super::find(&all, name)?],
        None => all.iter().map(|p| p.as_ref()).collect(),
    };
    // Reading state never creates a database; a missing one is said, so
    // that a mistyped --db does not look like an empty install.
    let missing = !config.db.exists();
    let store = if missing {
        printer.warn(format_args!(
            "no database at {}: no run has used it yet",
            config.db
        ));
        Store::in_memory()?
    } else {
        Store::for_config(config, Need::Current)?
    };
    if args.failed {
        return failed(&store, &chosen, args.json, printer);
    }
    if let Some(file) = &args.session {
        return session(&store, &chosen, file, args.json, printer);
    }
    // Lag needs the files' stats; without a data dir it is simply unknown.
    let files = match config.require_data_dir() {
        Ok(dir) => {
            let scan = scan::scan(dir, printer)?;
            for (folder, why) in &scan.problems {
                printer.warn(format_args!("{folder}: {why}"));
            }
            Some(scan)
        }
        Err(e) => {
            printer.warn(format_args!("{e:#}"));
            None
        }
    };
    let summaries = chosen
        .iter()
        .map(|p| {
            let mine = files.clone().map(|scan| scan.for_processor(*p).files);
            summarize(&store, &config.db, *p, mine.as_deref())
        })
        .collect::<Result<Vec<_>>>()?;
    if args.check {
        return check(&summaries, args, printer);
    }
    if args.json {
        printer.out(format_args!(
            "{}",
            serde_json::to_string_pretty(&summaries)?
        ))?;
    } else {
        for s in &summaries {
            print_summary(s, printer)?;
        }
    }
    Ok(exit::SUCCESS)
}

/// Why one processor is unhealthy, if it is.
fn unhealthy(s: &Summary, args: &StateArgs, now: DateTime<Utc>) -> Vec<String> {
    let mut reasons = Vec::new();
    let max_age = args.max_age.unwrap_or(s.cadence_raw.saturating_mul(2));
    let too_old = match s.finished_raw {
        None => true,
        Some(t) => now - t > chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX),
    };
    if too_old {
        reasons.push(format!(
            "{}: no run finished in the last {}{}",
            s.processor,
            duration::format(max_age),
            s.last_finished_at
                .as_ref()
                .map(|t| format!(" (last at {t})"))
                .unwrap_or_else(|| " (never)".to_owned())
        ));
    }
    if let Some(run) = s.last_run.as_ref().filter(|r| r.status == "interrupted") {
        reasons.push(format!(
            "{}: its last run (started {}) died before it finished",
            s.processor, run.started_at
        ));
    }
    let started = s
        .last_run
        .as_ref()
        .and_then(|r| parse_timestamp(&r.started_at));
    if started.is_some_and(|t| t > now + chrono::Duration::minutes(1)) {
        reasons.push(format!(
            "{}: its last run started in the future; the clock was ahead or is behind",
            s.processor
        ));
    }
    if s.counts.quarantined > 0 {
        reasons.push(format!(
            "{}: {} quarantined (see `sessionpipe state --failed`)",
            s.processor,
            human::count(s.counts.quarantined, "session")
        ));
    }
    let limit = wait_limit(s.cadence_raw);
    let seen = s
        .oldest_unprocessed_seconds
        .and_then(|secs| now.checked_sub_signed(chrono::Duration::seconds(secs)));
    if let (Some(file), Some(secs)) = (&s.oldest_unprocessed, s.oldest_unprocessed_seconds)
        && verdict::stalled(seen, limit, s.processed_in_window, now)
    {
        reasons.push(format!(
            "{}: {file} unprocessed for {}, and no run processed anything in 4x the {} cadence",
            s.processor,
            human::duration(Duration::from_secs(secs.unsigned_abs())),
            s.cadence
        ));
    }
    reasons
}

/// Removes the gone sessions (processed before `before`), rows and outputs,
/// in one transaction.
fn prune(store: &Store, p: &dyn Processor, before: Option<DateTime<Utc>>) -> Result<usize> {
    let tx = store.db().transaction()?;
    let names = rows::gone(&*tx, p.name(), before)?;
    for name in &names {
        p.forget(&*tx, name)?;
        rows::delete(&*tx, p.name(), name)?;
    }
    tx.commit()?;
    Ok(names.len())
}

/// `state requeue`, `state reset` and `state prune`.
fn act(
    action: &StateAction,
    all: &[Box<dyn Processor>],
    config: &Config,
    printer: &Printer,
) -> Result<i32> {
    match action {
        StateAction::Requeue(r) => {
            let p = super::find(all, &r.processor)?;
            let store = Store::for_config(config, Need::Current)?;
            let which = if r.failed {
                Requeue::Failed
            } else if r.quarantined {
                Requeue::Quarantined
            } else {
                Requeue::Files(&r.files)
            };
            let n = rows::requeue(store.db(), p.name(), which)?;
            printer.out(format_args!("{}: requeued {n} sessions", p.name()))?;
            let named = if r.failed || r.quarantined {
                0
            } else {
                r.files.len()
            };
            if n < named as u64 {
                return Err(exit::fail(
                    exit::USAGE,
                    format!(
                        "{}: {} of the files have no state row",
                        p.name(),
                        named as u64 - n
                    ),
                ));
            }
            Ok(exit::SUCCESS)
        }
        StateAction::Prune(r) => {
            let p = super::find(all, &r.processor)?;
            let store = Store::for_config(config, Need::Current)?;
            // Older than the calendar reaches: only rows never processed.
            let before = r.older_than.map(|d| {
                chrono::Duration::from_std(d)
                    .ok()
                    .and_then(|d| Utc::now().checked_sub_signed(d))
                    .unwrap_or(DateTime::<Utc>::MIN_UTC)
            });
            let n = prune(&store, p, before)?;
            printer.out(format_args!("{}: pruned {n} gone sessions", p.name()))?;
            Ok(exit::SUCCESS)
        }
        StateAction::Reset(r) => {
            let p = super::find(all, &r.processor)?;
            let store = Store::for_config(config, Need::Current)?;
            let n = rows::reset(store.db(), p.name())?;
            printer.out(format_args!(
                "{}: forgot {n} sessions; the next runs reprocess everything",
                p.name()
            ))?;
            Ok(exit::SUCCESS)
        }
    }
}

fn check(summaries: &[Summary], args: &StateArgs, printer: &Printer) -> Result<i32> {
    let now = Utc::now();
    let mut reasons = Vec::new();
    for s in summaries {
        // An unavailable processor is reported by `list`, not failed here,
        // unless it was asked about by name.
        if s.available || args.processor.is_some() {
            reasons.extend(unhealthy(s, args, now));
        }
    }
    if args.json {
        printer.out(format_args!(
            "{}",
            serde_json::json!({ "healthy": reasons.is_empty(), "reasons": reasons })
        ))?;
    } else if !reasons.is_empty() {
        printer.out(format_args!("{}", reasons.join("; ")))?;
    }
    Ok(if reasons.is_empty() {
        exit::SUCCESS
    } else {
        exit::FAILURES
    })
}

/// Failing and quarantined sessions, then the errors of each processor's
/// last run that no failing row already shows (a "not now", a folder that
/// could not be listed).
fn failed(store: &Store, chosen: &[&dyn Processor], json: bool, printer: &Printer) -> Result<i32> {
    let mut all = Vec::new();
    let mut last = Vec::new();
    for p in chosen {
        let failing = rows::failed(store.db(), p.name())?;
        for (session, error) in runs::last_errors(store.db(), p.name())? {
            if !failing.iter().any(|r| r.session_file == session) {
                last.push((p.name(), session, error));
            }
        }
        all.extend(failing.into_iter().map(|row| (p.name(), row)));
    }
    if json {
        let list: Vec<_> = all
            .iter()
            .map(|(p, r)| serde_json::json!({ "processor": p, "session": r }))
            .chain(last.iter().map(|(p, session, error)| {
                serde_json::json!({ "processor": p,
                    "last_run_error": { "session": session, "error": error } })
            }))
            .collect();
        printer.out(format_args!("{}", serde_json::to_string_pretty(&list)?))?;
        return Ok(exit::SUCCESS);
    }
    for (p, r) in &all {
        printer.out(format_args!(
            "{p}\t{}\t{} after {} attempts{}\n\t{}",
            r.session_file,
            r.status,
            r.attempts,
            r.next_attempt_at
                .as_ref()
                .map(|t| format!(", next at {t}"))
                .unwrap_or_default(),
            r.last_error.as_deref().unwrap_or("")
        ))?;
    }
    for (p, session, error) in &last {
        printer.out(format_args!("{p}\t{session}\tin the last run\n\t{error}"))?;
    }
    Ok(exit::SUCCESS)
}

fn session(
    store: &Store,
    chosen: &[&dyn Processor],
    file: &str,
    json: bool,
    printer: &Printer,
) -> Result<i32> {
    let mut found = Vec::new();
    for p in chosen {
        if let Some(row) = rows::one(store.db(), p.name(), file)? {
            found.push((*p, row));
        }
    }
    if found.is_empty() {
        return Err(exit::fail(
            exit::USAGE,
            format!("no state row for session {file:?}"),
        ));
    }
    if json {
        let rows: Vec<_> = found.iter().map(|(_, row)| row).collect();
        printer.out(format_args!("{}", serde_json::to_string_pretty(&rows)?))?;
        return Ok(exit::SUCCESS);
    }
    for (p, row) in &found {
        print_row(*p, row, printer)?;
        printer.out("")?;
    }
    Ok(exit::SUCCESS)
}

/// The columns of a state row in the order an operator asks about them;
/// the others follow.
const ROW_ORDER: &[&str] = &[
    "processor_name",
    "session_file",
    "status",
    "processed_at",
    "items_extracted",
    "attempts",
    "last_error",
    "next_attempt_at",
    "first_seen_at",
    "processor_version",
    "file_hash",
    "bytes_processed",
];

/// One state row for a person: readable order, times with how long ago,
/// the version beside this binary's.
fn print_row(
    p: &dyn Processor,
    row: &serde_json::Map<String, serde_json::Value>,
    printer: &Printer,
) -> Result<()> {
    let now = Utc::now();
    let rest = row.keys().filter(|k| !ROW_ORDER.contains(&k.as_str()));
    for key in ROW_ORDER.iter().copied().chain(rest.map(String::as_str)) {
        let Some(value) = row.get(key) else { continue };
        let text = match value {
            serde_json::Value::String(t) => t.clone(),
            serde_json::Value::Null => "-".to_owned(),
            other => other.to_string(),
        };
        let note = match (key, value) {
            (k, serde_json::Value::String(t)) if k.ends_with("_at") => parse_timestamp(t)
                .map(|t| format!(" ({})", human::ago(t, now)))
                .unwrap_or_default(),
            ("processor_version", _) => format!(" (this sessionpipe: v{})", p.version()),
            _ => String::new(),
        };
        printer.out(format_args!("{key:<18} {text}{note}"))?;
    }
    Ok(())
}
