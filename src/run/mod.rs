//! One processor over the candidates of one scan: parallel reads, a single
//! writer, budgets, atomic commits, failures and quarantine.
//!
//! Guarantees:
//! - an unchanged file costs one `stat`; a touched file with the same content
//!   is a free skip that does not count against `--max-sessions`;
//! - a new file is read once: hashed while the processor reads it;
//! - `--jobs` workers ([`worker`]) read, hash and process sessions in
//!   parallel, but only the [`writer`] (this thread) writes the database;
//!   what ends up in the tables does not depend on the number of workers;
//! - a built-in processor's outputs and the state row of a session are
//!   committed in the same `BEGIN IMMEDIATE` transaction: after a crash there
//!   are both or neither;
//! - every attempt is marked in the journal before the processor runs (see
//!   [`crate::journal`]), so a session that fails, or even takes the process
//!   down, is retried with backoff and quarantined after `--max-attempts`,
//!   never retried for ever;
//! - one session failing never stops the others; a database error, a
//!   processor that asks to stop the run, or three transient failures in a
//!   row end the run, leaving the rest for the next one.
//!
//! Every decision about a file is [`crate::verdict`]'s; this module carries
//! them out.

mod backlog;
mod moves;
mod worker;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::{DateTime, Utc};

use crate::exit;
use crate::journal::{self, Journal};
use crate::lock::ProcessorLock;
use crate::printer::Printer;
use crate::processor::{Processor, Spend};
use crate::report::{Report, SessionError};
use crate::scan::{self, SessionFile};
use crate::shard::Shard;
use crate::state_rows::Rows;
use crate::store::{Store, runs, state, timestamp};
use crate::verdict::{self, Row};

/// Limits of one run.
#[derive(Debug, Clone)]
pub struct Options {
    pub max_attempts: u32,
    pub max_sessions: Option<u64>,
    pub time_budget: Option<Duration>,
    /// Dollars the processor's paid calls may cost in one run: once spent,
    /// the rest is capped (calls already under way finish).
    pub max_cost: Option<f64>,
    /// Sessions read and processed at once.
    pub jobs: usize,
    /// How long a file must be quiet for its final line without a newline
    /// to count.
    pub fragment_settle: Duration,
    /// The user folders this run is for; `None`: all.
    pub shard: Option<Shard>,
}

/// Whether the run changes anything.
#[derive(Debug, Clone, Copy)]
pub enum Mode<'a> {
    /// Process and commit, under the processor's lock (which holds the
    /// journal).
    Commit(&'a ProcessorLock),
    /// List what would be processed; write nothing.
    DryRun,
}

/// Messages written in one transaction, at most.
const BATCH: usize = 256;
/// Transient failures in a row that end a run early.
const MAX_TRANSIENT_IN_A_ROW: u32 = 3;

/// What every part of one run reads.
struct Context<'a> {
    processor: &'a dyn Processor,
    mode: Mode<'a>,
    opts: &'a Options,
    printer: &'a Printer,
    clock: Instant,
    /// Set to stop taking new candidates.
    stop: AtomicBool,
    transient: Streak,
    /// Processing attempts so far, for `--max-sessions`.
    attempts_made: AtomicU64,
    /// What the paid calls of the run have cost so far, for `--max-cost`.
    spent: Mutex<Spend>,
}

impl Context<'_> {
    /// Whether the run has spent what `--max-cost` allows. A call without a
    /// price reaches it: what it cost cannot be counted.
    fn cost_cap_reached(&self) -> bool {
        self.opts.max_cost.is_some_and(|cap| {
            self.spent.lock().map_or(true, |spent| {
                spent.cost_usd >= cap || spent.unpriced_calls > 0
            })
        })
    }

    fn charge(&self, spend: &Spend) {
        if let Ok(mut spent) = self.spent.lock() {
            spent.add(spend);
        }
    }
}

/// Transient failures in a row, counted as attempts return: the one count
/// that decides when they end the run.
#[derive(Default)]
struct Streak(AtomicU32);

impl Streak {
    /// Counts a transient failure; true when it makes too many in a row.
    fn transient(&self) -> bool {
        self.0.fetch_add(1, Ordering::SeqCst).saturating_add(1) >= MAX_TRANSIENT_IN_A_ROW
    }

    /// Anything but a transient failure breaks the streak.
    fn reset(&self) {
        self.0.store(0, Ordering::SeqCst);
    }
}

/// Runs `processor` once over the data dir and records the run.
pub fn run(
    store: &mut Store,
    processor: &dyn Processor,
    mode: Mode,
    data_dir: &Path,
    opts: &Options,
    printer: &Printer,
) -> Result<Report> {
    let started = Utc::now();
    let ctx = Context {
        processor,
        mode,
        opts,
        printer,
        clock: Instant::now(),
        stop: AtomicBool::new(false),
        transient: Streak::default(),
        attempts_made: AtomicU64::new(0),
        spent: Mutex::new(Spend::default()),
    };
    let mut report = Report {
        processor: processor.name().to_owned(),
        started_at: timestamp(started),
        ..Report::default()
    };
    if matches!(mode, Mode::DryRun) {
        report.would_process = Some(Vec::new());
    }
    let (run_id, surveyed) = begin_and_survey(&ctx, store, data_dir, started)?;
    let result = surveyed.and_then(|surveyed| execute(&ctx, store, surveyed, &mut report));
    if processor.spends() {
        report.spend = Some(ctx.spent.lock().map_or_else(|_| Spend::default(), |s| *s));
    }
    report.duration_ms = u64::try_from(ctx.clock.elapsed().as_millis()).unwrap_or(u64::MAX);
    report.exit_code = match &result {
        Ok(Some(code)) => *code,
        Ok(None) => report.outcome_code(),
        Err(e) => exit::code_of(e),
    };
    if let Some(id) = run_id {
        // Best effort after a database error: the error itself is what matters.
        let finished = runs::finish(store.db(), id, &report, Utc::now());
        result?;
        finished?;
    } else {
        result?;
    }
    Ok(report)
}

/// Processes the candidates of a survey and fills `report`. Returns
/// `Some(code)` when the run was stopped with a code of its own.
fn execute(
    ctx: &Context,
    store: &mut Store,
    (scan::Scan { files, problems }, mut rows, elsewhere): Surveyed,
    report: &mut Report,
) -> Result<Option<i32>> {
    let name = ctx.processor.name();
    let unlisted: Vec<&str> = problems.iter().map(|(folder, _)| folder.as_str()).collect();
    let commit = matches!(ctx.mode, Mode::Commit(_));
    moves::mark_vanished(store.db(), name, &files, &unlisted, &mut rows, commit)?;
    for (folder, why) in problems {
        ctx.printer.error(format_args!("{name}: {folder}: {why}"));
        report.errors += 1;
        report.errors_detail.push(SessionError {
            session: folder,
            error: why,
        });
    }
    let moves = moves::Moves::new(rows.iter().chain(elsewhere.iter()));
    let now = Utc::now();
    let version = ctx.processor.version();
    let mut cursor = rows.cursor();
    let candidates: Vec<(&SessionFile, Option<&Row>)> = files
        .iter()
        .map(|f| (f, cursor.get(&f.name)))
        .filter(|(f, row)| {
            verdict::must_read(*row, &f.stat, version, now, ctx.opts.fragment_settle)
        })
        .collect();
    let settle = ctx.processor.settle();
    let (settling, candidates): (Vec<_>, Vec<_>) = candidates.into_iter().partition(|(f, row)| {
        settle.is_some_and(|settle| {
            verdict::is_settling(row.and_then(|r| r.waiting_since), &f.stat, now, settle)
        })
    });
    if commit {
        let settling: Vec<&str> = settling.iter().map(|(f, _)| f.name.as_str()).collect();
        note_seen(store, name, &files, &rows, &settling)?;
    }
    report.settling = settling.len() as u64;
    report.scanned = files.len() as u64;
    report.candidates = candidates.len() as u64;
    ctx.printer.info(format_args!(
        "{name}: {} files, {} candidates",
        files.len(),
        candidates.len()
    ));
    // Sessions a run died on go first, one at a time: should one kill the
    // process again, it is the only one in flight and alone is charged.
    let total = candidates.len() as u64;
    let (alone, together): (Vec<_>, Vec<_>) = candidates
        .into_iter()
        .partition(|(_, row)| verdict::is_isolated(*row));
    let lengths = moves.lengths();
    let mut writer = writer::Writer::new(ctx, store.db(), report, moves);
    for (phase, jobs) in [(&alone, 1), (&together, ctx.opts.jobs)] {
        process(ctx, phase, jobs, &lengths, &mut writer, total);
    }
    ctx.printer.end_progress();
    writer.finish(total)
}

/// A committing run's start: what a dead run left is recovered, the
/// processor prepared and the run recorded; its id. `None` for a dry run.
fn begin(ctx: &Context, store: &Store, started: DateTime<Utc>) -> Result<Option<i64>> {
    let Mode::Commit(lock) = ctx.mode else {
        return Ok(None);
    };
    let name = ctx.processor.name();
    journal::recover(store.db(), name, &Journal::new(lock))?;
    ctx.processor.prepare(store.db())?;
    Ok(Some(runs::start(store.db(), name, started)?))
}

/// A survey: the processor's files, its state rows, and the other shards'
/// rows taken as gone (see [`sharded`]).
type Surveyed = (scan::Scan, Rows, Rows);

/// Begins the run ([`begin`]), then surveys it ([`sharded`]); the run's id
/// and the survey. The walk goes on while the run begins and the rows load:
/// on an unchanged tree these are the whole run, and the start's commit
/// waits on the disk. An error of the start is the outer one: the run never
/// began.
fn begin_and_survey(
    ctx: &Context,
    store: &Store,
    data_dir: &Path,
    started: DateTime<Utc>,
) -> Result<(Option<i64>, Result<Surveyed>)> {
    let name = ctx.processor.name();
    let walk = || scan::scan(data_dir, ctx.printer);
    // The rows are loaded after the start: recovery may change them.
    let ready = || -> Result<(Option<i64>, Result<Rows>)> {
        let id = begin(ctx, store, started)?;
        Ok((id, state::load(store.db(), name)))
    };
    let (scan, (id, rows)) = std::thread::scope(|scope| {
        // Without a thread to spare, one after the other (and no walk for a
        // run that never began).
        let Ok(walking) = std::thread::Builder::new().spawn_scoped(scope, walk) else {
            return ready().map(|ready| (walk(), ready));
        };
        let ready = ready();
        match walking.join() {
            Ok(scan) => ready.map(|ready| (scan, ready)),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })?;
    let surveyed = scan.and_then(|scan| rows.map(|rows| sharded(ctx, scan, rows)));
    Ok((id, surveyed))
}

/// The processor's files and rows; under `--shard` this shard's, and the
/// other shards' rows whose files the walk did not find, as gone: a user
/// folder renamed into this shard is that folder moved, not new sessions
/// (see [`moves::Moves`]).
fn sharded(ctx: &Context, scan: scan::Scan, mut rows: Rows) -> Surveyed {
    let mut scan = scan.for_processor(ctx.processor);
    let mut elsewhere = Rows::default();
    if let Some(shard) = ctx.opts.shard {
        // Another shard's folders are not this run's to process, to find
        // gone or to report.
        let found: std::collections::HashSet<&str> =
            scan.files.iter().map(|f| f.name.as_str()).collect();
        let unlisted = |name: &str| {
            scan.problems
                .iter()
                .any(|(folder, _)| name.starts_with(folder.as_str()))
        };
        let (mine, others): (Vec<_>, Vec<_>) = rows
            .into_iter()
            .partition(|(name, _)| shard.contains(scan::user_of(name)));
        elsewhere = others
            .into_iter()
            .filter(|(name, _)| !found.contains(name.as_str()) && !unlisted(name))
            .map(|(name, mut row)| {
                row.status = crate::verdict::Status::Gone;
                (name, row)
            })
            .collect();
        rows = mine.into_iter().collect();
        scan.files.retain(|f| shard.contains(f.user()));
        scan.problems
            .retain(|(folder, _)| shard.contains(scan::user_of(folder)));
    }
    (scan, rows, elsewhere)
}

/// Notes the files no run has seen before, so that `state --check` can tell
/// how long they have waited, and when the files that wait to settle began
/// to (once per file).
fn note_seen(
    store: &mut Store,
    processor: &str,
    files: &[SessionFile],
    rows: &Rows,
    settling: &[&str],
) -> Result<()> {
    let mut cursor = rows.cursor();
    let new: Vec<(&str, &str)> = files
        .iter()
        .filter(|f| cursor.index(&f.name).is_none())
        .map(|f| (f.name.as_str(), f.user()))
        .collect();
    let waiting: Vec<&str> = settling
        .iter()
        .filter(|f| rows.get(f).is_none_or(|r| r.waiting_since.is_none()))
        .copied()
        .collect();
    if !new.is_empty() || !waiting.is_empty() {
        let tx = store.db().transaction()?;
        state::note_seen(&*tx, processor, &new)?;
        state::note_waiting(&*tx, processor, &waiting)?;
        tx.commit()?;
    }
    Ok(())
}

/// Processes `candidates` with `jobs` workers, the writer on this thread.
fn process<'a>(
    ctx: &'a Context<'a>,
    candidates: &'a [(&'a SessionFile, Option<&'a Row>)],
    jobs: usize,
    lengths: &'a [u64],
    writer: &mut writer::Writer<'a>,
    total: u64,
) {
    if candidates.is_empty() {
        return;
    }
    let workers = worker::Workers::new(ctx, candidates, lengths);
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel();
        for worker in 0..jobs.clamp(1, candidates.len()) {
            let tx = tx.clone();
            let workers = &workers;
            let spawned = std::thread::Builder::new()
                .name(crate::printer::QUIET_PANIC_THREAD.to_owned())
                .spawn_scoped(scope, move || workers.work(worker, tx));
            if let Err(e) = spawned {
                // Fewer workers: the others take the candidates.
                ctx.printer.warn(format_args!("cannot start a worker: {e}"));
            }
        }
        drop(tx);
        // Should the writer panic, no worker waits for it for ever.
        let _close = backlog::CloseOnDrop(&workers.backlog);
        // Whatever the workers have sent meanwhile is written in one
        // transaction: far fewer commits, each session still atomic.
        while let Ok(first) = rx.recv() {
            let batch: Vec<_> = std::iter::once(first)
                .chain(rx.try_iter().take(BATCH - 1))
                .collect();
            let held = batch.iter().map(worker::Msg::held).sum();
            writer.write_batch(batch);
            workers.backlog.release(held);
            ctx.printer
                .progress(ctx.processor.name(), writer.ended(), total);
        }
    });
}
