//! `sessionpipe state`: what each processor holds, how far behind it is, and
//! whether a monitor should worry (`--check`); `requeue` and `reset` for
//! operators.

use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cli::{StateAction, StateArgs};
use crate::config::Config;
use crate::duration;
use crate::exit;
use crate::human;
use crate::printer::Printer;
use crate::processor::Processor;
use crate::scan::{self, SessionFile};
use crate::store::state::{self as rows, Counts, Requeue};
use crate::store::{Need, Store, parse_timestamp, runs};
use crate::verdict;

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
            config.db.display()
        ));
        Store::in_memory()?
    } else {
        Store::open(&config.db, Need::Current, config.busy_timeout)?
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
fn prune(store: &mut Store, p: &dyn Processor, before: Option<DateTime<Utc>>) -> Result<usize> {
    let tx = store
        .conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let names = rows::gone(&tx, p.name(), before)?;
    for name in &names {
        p.forget(&tx, name)?;
        rows::delete(&tx, p.name(), name)?;
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
            let mut store = Store::open(&config.db, Need::Current, config.busy_timeout)?;
            let which = if r.failed {
                Requeue::Failed
            } else if r.quarantined {
                Requeue::Quarantined
            } else {
                Requeue::Files(&r.files)
            };
            let n = rows::requeue(&mut store.conn, p.name(), which)?;
            printer.out(format_args!("{}: requeued {n} sessions", p.name()))?;
            let named = if r.failed || r.quarantined {
                0
            } else {
                r.files.len()
            };
            if n < named {
                return Err(exit::fail(
                    exit::USAGE,
                    format!("{}: {} of the files have no state row", p.name(), named - n),
                ));
            }
            Ok(exit::SUCCESS)
        }
        StateAction::Prune(r) => {
            let p = super::find(all, &r.processor)?;
            let mut store = Store::open(&config.db, Need::Current, config.busy_timeout)?;
            // Older than the calendar reaches: only rows never processed.
            let before = r.older_than.map(|d| {
                chrono::Duration::from_std(d)
                    .ok()
                    .and_then(|d| Utc::now().checked_sub_signed(d))
                    .unwrap_or(DateTime::<Utc>::MIN_UTC)
            });
            let n = prune(&mut store, p, before)?;
            printer.out(format_args!("{}: pruned {n} gone sessions", p.name()))?;
            Ok(exit::SUCCESS)
        }
        StateAction::Reset(r) => {
            let p = super::find(all, &r.processor)?;
            let store = Store::open(&config.db, Need::Current, config.busy_timeout)?;
            let n = rows::reset(&store.conn, p.name())?;
            printer.out(format_args!(
                "{}: forgot {n} sessions; the next runs reprocess everything",
                p.name()
            ))?;
            Ok(exit::SUCCESS)
        }
    }
}

#[derive(Serialize)]
struct Summary {
    processor: String,
    kind: &'static str,
    version: u32,
    cadence: String,
    available: bool,
    #[serde(flatten)]
    counts: Counts,
    last_run: Option<runs::LastRun>,
    last_finished_at: Option<String>,
    /// Newest file mtime minus the last processing time, in seconds.
    lag_seconds: Option<i64>,
    /// Files changed since they were last processed (or never processed).
    unprocessed: Option<u64>,
    /// The oldest such file and how long it has waited.
    oldest_unprocessed: Option<String>,
    oldest_unprocessed_seconds: Option<i64>,
    /// `usage`: models with tokens and no price.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unpriced_models: Vec<String>,
    #[serde(skip)]
    cadence_raw: Duration,
    #[serde(skip)]
    finished_raw: Option<DateTime<Utc>>,
    /// Sessions processed by runs started within the waiting limit.
    #[serde(skip)]
    processed_in_window: u64,
}

fn summarize(
    store: &Store,
    db: &std::path::Path,
    p: &dyn Processor,
    files: Option<&[SessionFile]>,
) -> Result<Summary> {
    let counts = rows::counts(&store.conn, p.name())?;
    let finished = runs::last_finished(&store.conn, p.name())?;
    let now = Utc::now();
    let mut lag = None;
    let mut unprocessed = None;
    let mut oldest: Option<(i64, &str)> = None;
    if let Some(files) = files {
        let state = rows::load(&store.conn, p.name())?;
        // A file dated ahead of the clock counts as changed now, no later.
        let now_ns = now.timestamp_nanos_opt().unwrap_or(i64::MAX);
        let newest = files.iter().map(|f| f.stat.mtime_ns.min(now_ns)).max();
        let processed = counts
            .last_processed_at
            .as_deref()
            .and_then(parse_timestamp);
        lag = match (newest, processed) {
            (Some(newest), Some(done)) => {
                Some(((newest / 1_000_000_000) - done.timestamp()).max(0))
            }
            (Some(_), None) => None,
            (None, _) => Some(0),
        };
        let (n, first) = waiting(files, &state, p.version(), now);
        unprocessed = Some(n);
        oldest = first;
    }
    Ok(Summary {
        processor: p.name().to_owned(),
        kind: p.kind(),
        version: p.version(),
        cadence: duration::format(p.cadence()),
        available: p.unavailable().is_none(),
        counts,
        last_run: runs::last(&store.conn, p.name())?.map(|mut run| {
            if run.status == "unfinished" {
                // Running, if a run holds the lock; else it died.
                run.status = if crate::lock::is_held(db, p.name()) {
                    "running"
                } else {
                    "interrupted"
                };
            }
            run
        }),
        last_finished_at: finished.map(crate::store::timestamp),
        lag_seconds: lag,
        unprocessed,
        oldest_unprocessed: oldest.map(|(_, f)| f.to_owned()),
        oldest_unprocessed_seconds: oldest.map(|(s, _)| s.max(0)),
        unpriced_models: match p.name() {
            crate::processor::usage::NAME => crate::spend::unpriced_models(&store.conn)?,
            _ => Vec::new(),
        },
        cadence_raw: p.cadence(),
        finished_raw: finished,
        processed_in_window: runs::processed_since(
            &store.conn,
            p.name(),
            now.checked_sub_signed(
                chrono::Duration::from_std(wait_limit(p.cadence()))
                    .unwrap_or(chrono::Duration::MAX),
            )
            .unwrap_or(DateTime::<Utc>::MIN_UTC),
        )?,
    })
}

/// How many files wait for the processor, and the one that has waited
/// longest, with for how many seconds. A new file waits since a run first
/// saw it (before any run, since its mtime); a processed one since it last
/// changed.
fn waiting<'f>(
    files: &'f [SessionFile],
    state: &std::collections::HashMap<String, verdict::Row>,
    version: u32,
    now: DateTime<Utc>,
) -> (u64, Option<(i64, &'f str)>) {
    let mut count = 0;
    let mut oldest: Option<(i64, &str)> = None;
    for f in files {
        let row = state.get(&f.name);
        if !verdict::is_waiting(row, &f.stat, version) {
            continue;
        }
        count += 1;
        let mtime = f.stat.mtime_ns / 1_000_000_000;
        let since = match row {
            Some(r) if r.file_hash.is_none() => r.first_seen_at.map_or(mtime, |t| t.timestamp()),
            _ => mtime,
        };
        let secs = now.timestamp().saturating_sub(since);
        if oldest.is_none_or(|(s, _)| secs > s) {
            oldest = Some((secs, &f.name));
        }
    }
    (count, oldest)
}

/// How long a file may wait before `state --check` minds: four cadences.
fn wait_limit(cadence: Duration) -> Duration {
    cadence.saturating_mul(4)
}

fn print_summary(s: &Summary, printer: &Printer) -> Result<()> {
    let now = Utc::now();
    printer.out(format_args!(
        "{}  ({} v{}, every {}{})",
        s.processor,
        s.kind,
        s.version,
        s.cadence,
        if s.available { "" } else { ", unavailable" }
    ))?;
    let c = &s.counts;
    printer.out(format_args!(
        "  sessions   {} tracked, {} processed, {} failing, {} quarantined, {} gone",
        c.tracked, c.processed, c.failing, c.quarantined, c.gone
    ))?;
    match &s.last_run {
        None => printer.out(format_args!("  last run   never"))?,
        Some(r) => print_last_run(r, now, printer)?,
    }
    if let Some(lag) = s.lag_seconds {
        printer.out(format_args!(
            "  behind     {} (the newest change to a file, after the last processing)",
            human::duration(Duration::from_secs(lag.unsigned_abs()))
        ))?;
    }
    if let (Some(n), Some(file), Some(secs)) = (
        s.unprocessed,
        &s.oldest_unprocessed,
        s.oldest_unprocessed_seconds,
    ) {
        printer.out(format_args!(
            "  waiting    {}, the oldest {file} for {}",
            human::count(n, "file"),
            human::duration(Duration::from_secs(secs.unsigned_abs()))
        ))?;
    }
    if !s.unpriced_models.is_empty() {
        printer.out(format_args!(
            "  no price   {} (cost n/a; add [prices.\"MODEL\"] to the config)",
            s.unpriced_models.join(", ")
        ))?;
    }
    Ok(())
}

/// `  last run   <when> (<ago>), <how long>, <counts>, exit <code>`.
fn print_last_run(r: &runs::LastRun, now: DateTime<Utc>, printer: &Printer) -> Result<()> {
    let when = match parse_timestamp(&r.started_at) {
        Some(t) => format!("{} ({})", r.started_at, human::ago(t, now)),
        None => r.started_at.clone(),
    };
    let count = |n: Option<i64>, noun: &str| {
        human::count(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0), noun)
    };
    match (r.finished_at.as_ref(), r.exit_code) {
        (Some(_), Some(code)) => printer.out(format_args!(
            "  last run   {when}, took {}, {} processed, {} skipped, {} capped, {}, exit {code}",
            human::duration(Duration::from_millis(
                r.duration_ms
                    .and_then(|d| u64::try_from(d).ok())
                    .unwrap_or(0)
            )),
            r.processed.unwrap_or(0),
            r.skipped.unwrap_or(0),
            r.capped.unwrap_or(0),
            count(r.errors, "error"),
        )),
        _ if r.status == "running" => printer.out(format_args!("  last run   {when}, running")),
        _ => printer.out(format_args!(
            "  last run   {when}, interrupted: it died before it finished"
        )),
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
        let failing = rows::failed(&store.conn, p.name())?;
        for (session, error) in runs::last_errors(&store.conn, p.name())? {
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
        if let Some(row) = rows::one(&store.conn, p.name(), file)? {
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
