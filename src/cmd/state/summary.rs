//! What `state` shows of one processor: its counts, its last run, how far
//! behind it is, what waits for it, and what its paid calls cost.

use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::duration;
use crate::human;
use crate::printer::Printer;
use crate::processor::{Processor, Spend};
use crate::scan::SessionFile;
use crate::store::state::{self as rows, Counts};
use crate::store::{Store, parse_timestamp, runs};
use crate::verdict;

#[derive(Serialize)]
pub(super) struct Summary {
    pub(super) processor: String,
    pub(super) kind: &'static str,
    pub(super) version: u32,
    pub(super) cadence: String,
    pub(super) available: bool,
    #[serde(flatten)]
    pub(super) counts: Counts,
    pub(super) last_run: Option<runs::LastRun>,
    pub(super) last_finished_at: Option<String>,
    /// Newest file mtime minus the last processing time, in seconds.
    pub(super) lag_seconds: Option<i64>,
    /// Files changed since they were last processed (or never processed).
    pub(super) unprocessed: Option<u64>,
    /// The oldest such file and how long it has waited.
    pub(super) oldest_unprocessed: Option<String>,
    pub(super) oldest_unprocessed_seconds: Option<i64>,
    /// Changed files that wait to settle before they are processed (not
    /// counted as unprocessed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) settling: Option<u64>,
    /// `usage`: models with tokens and no price.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) unpriced_models: Vec<String>,
    /// What the paid calls cost that gave the outputs held now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) total_spend: Option<Spend>,
    #[serde(skip)]
    pub(super) cadence_raw: Duration,
    #[serde(skip)]
    pub(super) finished_raw: Option<DateTime<Utc>>,
    /// Sessions processed by runs started within the waiting limit.
    #[serde(skip)]
    pub(super) processed_in_window: u64,
}

pub(super) fn summarize(
    store: &Store,
    db: &crate::store::Location,
    p: &dyn Processor,
    files: Option<&[SessionFile]>,
) -> Result<Summary> {
    let counts = rows::counts(store.db(), p.name())?;
    let finished = runs::last_finished(store.db(), p.name())?;
    let now = Utc::now();
    let mut lag = None;
    let mut unprocessed = None;
    let mut settling = None;
    let mut oldest: Option<(i64, &str)> = None;
    if let Some(files) = files {
        let state = rows::load(store.db(), p.name())?;
        let processed = counts
            .last_processed_at
            .as_deref()
            .and_then(parse_timestamp);
        lag = behind(files, processed, now);
        let wait = waiting(files, &state, p, now);
        unprocessed = Some(wait.count);
        settling = p.settle().map(|_| wait.settling);
        oldest = wait.oldest;
    }
    Ok(Summary {
        processor: p.name().to_owned(),
        kind: p.kind(),
        version: p.version(),
        cadence: duration::format(p.cadence()),
        available: p.unavailable().is_none(),
        counts,
        last_run: runs::last(store.db(), p.name())?.map(|mut run| {
            if run.status == "unfinished" {
                // Running, if a run holds the lock; else it died.
                let held = match (store.is_locked(p.name()), db.file()) {
                    (Ok(Some(held)), _) => held,
                    (_, Some(file)) => crate::lock::is_held(file, p.name()),
                    (_, None) => false,
                };
                run.status = if held { "running" } else { "interrupted" };
            }
            run
        }),
        last_finished_at: finished.map(crate::store::timestamp),
        lag_seconds: lag,
        unprocessed,
        oldest_unprocessed: oldest.map(|(_, f)| f.to_owned()),
        oldest_unprocessed_seconds: oldest.map(|(s, _)| s.max(0)),
        settling,
        unpriced_models: match p.name() {
            crate::processor::usage::NAME => crate::spend::unpriced_models(store.db())?,
            _ => Vec::new(),
        },
        total_spend: match p.name() {
            crate::processor::verification::NAME => {
                Some(crate::processor::verification::total_spend(store.db())?)
            }
            _ => None,
        },
        cadence_raw: p.cadence(),
        finished_raw: finished,
        processed_in_window: runs::processed_since(
            store.db(),
            p.name(),
            now.checked_sub_signed(
                chrono::Duration::from_std(wait_limit(p.cadence()))
                    .unwrap_or(chrono::Duration::MAX),
            )
            .unwrap_or(DateTime::<Utc>::MIN_UTC),
        )?,
    })
}

/// The newest change to a file after the last processing, in seconds;
/// unknown before anything was processed. A file dated ahead of the clock
/// counts as changed now, no later.
fn behind(
    files: &[SessionFile],
    processed: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<i64> {
    let now_ns = now.timestamp_nanos_opt().unwrap_or(i64::MAX);
    let newest = files.iter().map(|f| f.stat.mtime_ns.min(now_ns)).max();
    match (newest, processed) {
        (Some(newest), Some(done)) => Some(((newest / 1_000_000_000) - done.timestamp()).max(0)),
        (Some(_), None) => None,
        (None, _) => Some(0),
    }
}

/// What waits for a processor.
struct Waiting<'f> {
    /// Files it has not dealt with...
    count: u64,
    /// ...the one that has waited longest, and for how many seconds...
    oldest: Option<(i64, &'f str)>,
    /// ...and the files that wait to settle (not among them).
    settling: u64,
}

/// What waits for the processor. A new file waits since a run first saw it
/// (before any run, since its mtime); a processed one since it last
/// changed. A file that waits to settle is not unprocessed: it is not due.
fn waiting<'f>(
    files: &'f [SessionFile],
    state: &crate::state_rows::Rows,
    p: &dyn Processor,
    now: DateTime<Utc>,
) -> Waiting<'f> {
    let mut count = 0;
    let mut settling = 0;
    let mut oldest: Option<(i64, &str)> = None;
    let mut rows = state.cursor();
    for f in files {
        let row = rows.get(&f.name);
        if !verdict::is_waiting(row, &f.stat, p.version()) {
            continue;
        }
        let since = row.and_then(|r| r.waiting_since);
        if p.settle()
            .is_some_and(|s| verdict::is_settling(since, &f.stat, now, s))
        {
            settling += 1;
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
    Waiting {
        count,
        oldest,
        settling,
    }
}

/// How long a file may wait before `state --check` minds: four cadences.
pub(super) fn wait_limit(cadence: Duration) -> Duration {
    cadence.saturating_mul(4)
}

pub(super) fn print_summary(s: &Summary, printer: &Printer) -> Result<()> {
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
    if let Some(n) = s.settling.filter(|n| *n > 0) {
        printer.out(format_args!(
            "  settling   {} (still being written to; sent once quiet)",
            human::count(n, "file")
        ))?;
    }
    if !s.unpriced_models.is_empty() {
        printer.out(format_args!(
            "  no price   {} (cost n/a; add [prices.\"MODEL\"] to the config)",
            s.unpriced_models.join(", ")
        ))?;
    }
    if let Some(total) = &s.total_spend {
        let last = s.last_run.as_ref().and_then(|r| r.spend);
        printer.out(format_args!(
            "  llm spend  last run {}; all sessions held {}",
            last.as_ref().map_or_else(|| "none".to_owned(), spend),
            spend(total)
        ))?;
    }
    Ok(())
}

/// `$0.0123 (4 calls; tokens: 1200 input, 300 output, 0 cache write, 900 cache read)`.
fn spend(s: &Spend) -> String {
    let cost = match s.known_cost() {
        Some(usd) => format!("${usd:.4}"),
        None => format!(
            "${:.4} + n/a for {} without a price",
            s.cost_usd,
            human::count(s.unpriced_calls, "call")
        ),
    };
    format!(
        "{cost} ({}; tokens: {} input, {} output, {} cache write, {} cache read)",
        human::count(s.calls, "call"),
        s.input_tokens,
        s.output_tokens,
        s.cache_creation_tokens,
        s.cache_read_tokens
    )
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
