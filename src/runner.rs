//! One processor over the candidates of one scan: parallel reads, a single
//! writer, budgets, atomic commits, failures and quarantine.
//!
//! Guarantees:
//! - an unchanged file costs one `stat`; a touched file with the same content
//!   is a free skip that does not count against `--max-sessions`;
//! - a new file is read once: hashed while the processor reads it;
//! - `--jobs` workers read, hash and process sessions in parallel, but only
//!   this thread writes the database; what ends up in the tables does not
//!   depend on the number of workers;
//! - a built-in processor's outputs and the state row of a session are
//!   committed in the same `BEGIN IMMEDIATE` transaction: after a crash there
//!   are both or neither;
//! - every attempt is marked in the lock file before the processor runs (see
//!   [`crate::lock`]), so a session that fails, or even takes the process
//!   down, is retried with backoff and quarantined after `--max-attempts`,
//!   never retried for ever;
//! - one session failing never stops the others; a database error, a
//!   processor that asks to stop the run, or three transient failures in a
//!   row end the run, leaving the rest for the next one.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::exit;
use crate::failpoint;
use crate::lock::{InFlight, ProcessorLock};
use crate::log::Log;
use crate::processor::{Interruption, Outcome, Processor, Session};
use crate::report::{Report, SessionError};
use crate::scan::{self, SessionFile};
use crate::session::{self, Digest};
use crate::store::state::{self, Failure, Key, Row, Seen, Status, Success};
use crate::store::{Store, runs, timestamp};

pub struct Options {
    pub max_attempts: u32,
    pub max_sessions: Option<u64>,
    pub time_budget: Option<Duration>,
    pub dry_run: bool,
    /// Sessions read and processed at once.
    pub jobs: usize,
}

/// The first retry waits this long; each further failure doubles it...
const FIRST_BACKOFF: Duration = Duration::from_secs(60);
/// ...up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);
/// Transient failures in a row that end a run early.
const MAX_TRANSIENT_IN_A_ROW: u32 = 3;
/// Messages written in one transaction, at most.
const BATCH: usize = 256;

pub fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

/// Runs `processor` once over the data dir and records the run. `lock` is
/// the processor's lock (`None` for a dry run, which writes nothing).
pub fn run(
    store: &mut Store,
    processor: &dyn Processor,
    lock: Option<&ProcessorLock>,
    data_dir: &Path,
    opts: &Options,
    log: &Log,
) -> Result<Report> {
    let started = Utc::now();
    let clock = Instant::now();
    let mut report = Report {
        processor: processor.name().to_owned(),
        started_at: timestamp(started),
        would_process: opts.dry_run.then(Vec::new),
        ..Report::default()
    };
    let run_id = match lock {
        Some(lock) => {
            recover(&mut store.conn, processor.name(), lock)?;
            Some(runs::start(&store.conn, processor.name(), started)?)
        }
        None => None,
    };
    let result = execute(
        store,
        processor,
        lock,
        data_dir,
        opts,
        log,
        &mut report,
        clock,
    );
    report.duration_ms = clock.elapsed().as_millis() as u64;
    report.exit_code = match &result {
        Ok(Some(code)) => *code,
        Ok(None) => report.outcome_code(),
        Err(e) => exit::code_of(e),
    };
    if let Some(id) = run_id {
        // Best effort after a database error: the error itself is what matters.
        let finished = runs::finish(&store.conn, id, &report, Utc::now());
        result?;
        finished?;
    } else {
        result?;
    }
    Ok(report)
}

/// Counts the attempts a dead run left in its lock file, then empties it.
fn recover(conn: &mut Connection, processor: &str, lock: &ProcessorLock) -> Result<()> {
    let interrupted = lock.interrupted()?;
    if !interrupted.is_empty() {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for attempt in &interrupted {
            let key = Key {
                processor,
                session_file: &attempt.session_file,
                username: attempt.session_file.split('/').next().unwrap_or(""),
            };
            let seen = Seen {
                stat: attempt.stat,
                racy: false,
            };
            state::record_attempt(&tx, key, attempt.hash.as_deref(), attempt.attempts, &seen)?;
        }
        tx.commit()?;
    }
    lock.clear_all()
}

/// What a worker tells the writer: exactly one message per candidate.
enum Msg<'a> {
    /// Nothing to process. `seen` is `None` when the file vanished.
    Skip {
        file: &'a SessionFile,
        seen: Option<Seen>,
    },
    Unreadable {
        file: &'a SessionFile,
        row: Option<&'a Row>,
        seen: Seen,
        error: anyhow::Error,
    },
    /// Earlier runs died on this content as often as it may fail.
    Interrupted {
        file: &'a SessionFile,
        hash: String,
        attempts: u32,
        seen: Seen,
    },
    /// Left for the next run by `--max-sessions` or a stop.
    Capped,
    /// `--dry-run`: would have been processed.
    WouldProcess { file: &'a SessionFile },
    Done {
        file: &'a SessionFile,
        attempts: u32,
        seen: Seen,
        result: Result<Outcome>,
        digest: Option<Digest>,
    },
}

/// Returns `Some(code)` when the run was stopped with a code of its own.
#[allow(clippy::too_many_arguments)]
fn execute(
    store: &mut Store,
    processor: &dyn Processor,
    lock: Option<&ProcessorLock>,
    data_dir: &Path,
    opts: &Options,
    log: &Log,
    report: &mut Report,
    clock: Instant,
) -> Result<Option<i32>> {
    let name = processor.name();
    let files = scan::scan(data_dir, log)?;
    let rows = state::load(&store.conn, name)?;
    let now = Utc::now();
    let version = processor.version();
    let candidates: Vec<(&SessionFile, Option<&Row>)> = files
        .iter()
        .map(|f| (f, rows.get(&f.file)))
        .filter(|(f, row)| scan::is_candidate(*row, &f.stat, version, now))
        .collect();
    report.scanned = files.len() as u64;
    report.candidates = candidates.len() as u64;
    log.info(format_args!(
        "{name}: {} files, {} candidates",
        files.len(),
        candidates.len()
    ));

    let shared = Shared {
        candidates: &candidates,
        next: AtomicUsize::new(0),
        attempts_made: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        transient_in_a_row: AtomicU32::new(0),
        processor,
        lock,
        opts,
        clock,
    };
    let mut writer = Writer {
        db: &store.conn,
        processor,
        opts,
        log,
        report,
        stop: &shared.stop,
        ended: 0,
        transient_in_a_row: 0,
        stopped_with: None,
        error: None,
    };
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel();
        for worker in 0..opts.jobs.max(1).min(candidates.len()) {
            let tx = tx.clone();
            let shared = &shared;
            scope.spawn(move || shared.work(worker, tx));
        }
        drop(tx);
        // Whatever the workers have sent meanwhile is written in one
        // transaction: far fewer commits, each session still atomic.
        while let Ok(first) = rx.recv() {
            let batch = std::iter::once(first).chain(rx.try_iter().take(BATCH - 1));
            writer.handle_batch(batch.collect());
            writer
                .log
                .progress(name, writer.ended, candidates.len() as u64);
        }
    });
    writer.log.end_progress();
    // Candidates no worker reached: left by the time budget or a stop.
    writer.report.capped += candidates.len() as u64 - writer.ended;
    if shared.stop.load(Ordering::SeqCst) && writer.stopped_with.is_none() && writer.error.is_none()
    {
        log.info(format_args!("{name}: time budget spent"));
    }
    let r = &writer.report;
    log.info(format_args!(
        "{name}: {} processed, {} skipped, {} capped, {} errors, {} quarantined",
        r.processed, r.skipped, r.capped, r.errors, r.quarantined
    ));
    match writer.error {
        Some(e) => Err(e),
        None => Ok(writer.stopped_with),
    }
}

/// What the workers share.
struct Shared<'a> {
    candidates: &'a [(&'a SessionFile, Option<&'a Row>)],
    next: AtomicUsize,
    /// Processing attempts so far, for `--max-sessions`.
    attempts_made: AtomicU64,
    /// Set to stop taking new candidates.
    stop: AtomicBool,
    transient_in_a_row: AtomicU32,
    processor: &'a dyn Processor,
    lock: Option<&'a ProcessorLock>,
    opts: &'a Options,
    clock: Instant,
}

/// A session to process.
struct Attempt<'a> {
    file: &'a SessionFile,
    /// Known when the file was hashed first; else computed while processing.
    digest: Option<Digest>,
    attempts: u32,
    seen: Seen,
}

impl<'a> Shared<'a> {
    /// Takes candidates until none are left or the run stops.
    fn work(&self, worker: usize, tx: mpsc::Sender<Msg<'a>>) {
        loop {
            if self
                .opts
                .time_budget
                .is_some_and(|b| self.clock.elapsed() >= b)
            {
                self.stop.store(true, Ordering::SeqCst);
            }
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let i = self.next.fetch_add(1, Ordering::SeqCst);
            let Some(&(file, row)) = self.candidates.get(i) else {
                return;
            };
            let msg = match self.visit(file, row) {
                Ok(msg) => msg,
                Err(attempt) => self.attempt(worker, attempt),
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
    }

    /// Reads one candidate: either it needs no processing (the message says
    /// why) or it is an attempt to make.
    fn visit(&self, file: &'a SessionFile, row: Option<&'a Row>) -> Result<Msg<'a>, Attempt<'a>> {
        let version = self.processor.version();
        let seen = seen_now(file);
        // Nothing to compare a hash with: read once, hashing as we process.
        let single_pass = !self.processor.needs_digest_first()
            && row.is_none_or(|r| r.status == Status::Ok && r.processor_version != version);
        if single_pass {
            return Err(Attempt {
                file,
                digest: None,
                attempts: 1,
                seen,
            });
        }
        let digest =
            match session::open(&file.path, file.dev, file.stat.inode).and_then(session::digest) {
                Ok(d) => d,
                // Deleted or replaced since the scan: the next scan sees what is there.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Ok(Msg::Skip { file, seen: None });
                }
                Err(e) => {
                    let error = anyhow!(e).context("cannot read the file");
                    return Ok(Msg::Unreadable {
                        file,
                        row,
                        seen,
                        error,
                    });
                }
            };
        let seen = seen_now(file);
        let retrying = row.filter(|r| {
            matches!(
                r.status,
                Status::Failed | Status::Quarantined | Status::Processing
            ) && match &r.attempt_hash {
                Some(h) => *h == digest.hash,
                // The attempt was made while reading: same stat, same content.
                None => r.stat == Some(file.stat) && !r.racy,
            }
        });
        let free = match (row, retrying) {
            (Some(r), None) => {
                r.status == Status::Ok
                    && r.processor_version == version
                    && r.file_hash.as_deref() == Some(digest.hash.as_str())
            }
            (_, Some(r)) => match r.status {
                Status::Quarantined => true,
                Status::Failed => r.next_attempt_at.is_some_and(|t| t > Utc::now()),
                _ => false,
            },
            (None, None) => false,
        };
        if free {
            return Ok(Msg::Skip {
                file,
                seen: Some(seen),
            });
        }
        let previous = retrying.map_or(0, |r| r.attempts);
        if previous >= self.opts.max_attempts {
            return Ok(Msg::Interrupted {
                file,
                hash: digest.hash,
                attempts: previous,
                seen,
            });
        }
        Err(Attempt {
            file,
            digest: Some(digest),
            attempts: previous + 1,
            seen,
        })
    }

    /// Makes an attempt within the session cap: marks it in the worker's
    /// lock slot, runs the processor, clears the slot.
    fn attempt(&self, worker: usize, attempt: Attempt<'a>) -> Msg<'a> {
        let made = self.attempts_made.fetch_add(1, Ordering::SeqCst);
        if self.opts.max_sessions.is_some_and(|m| made >= m) {
            return Msg::Capped;
        }
        let Attempt {
            file,
            digest,
            attempts,
            seen,
        } = attempt;
        let Some(lock) = self.lock else {
            return Msg::WouldProcess { file };
        };
        let in_flight = InFlight {
            session_file: file.file.clone(),
            attempts,
            hash: digest.as_ref().map(|d| d.hash.clone()),
            stat: file.stat,
        };
        if let Err(e) = lock.mark(worker, &in_flight) {
            let stop = Interruption::StopRun(exit::IO, format!("{e:#}"));
            return Msg::Done {
                file,
                attempts,
                seen,
                result: Err(stop.into()),
                digest,
            };
        }
        failpoint::hit("after-attempt");
        let session = Session {
            file: &file.file,
            key: &file.key,
            path: &file.path,
            digest: digest.as_ref(),
            dev: file.dev,
            inode: file.stat.inode,
            computed: Mutex::new(None),
        };
        // A panic in a processor is that session's failure, not the run's end.
        let mut result = catch_unwind(AssertUnwindSafe(|| self.processor.process(&session)))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(anyhow!("processor panicked: {what}"))
            });
        // The attempt has returned: whatever happens next is not its doing.
        if let Err(e) = lock.clear(worker) {
            result = Err(e);
        }
        // Stop taking sessions at once when the run cannot go on (the writer
        // records why).
        match result.as_ref().err().and_then(Interruption::of) {
            Some(Interruption::StopRun(..)) => self.stop.store(true, Ordering::SeqCst),
            Some(Interruption::Transient(_)) => {
                if self.transient_in_a_row.fetch_add(1, Ordering::SeqCst) + 1
                    >= MAX_TRANSIENT_IN_A_ROW
                {
                    self.stop.store(true, Ordering::SeqCst);
                }
            }
            None => self.transient_in_a_row.store(0, Ordering::SeqCst),
        }
        let computed = session.computed.into_inner().ok().flatten();
        let mut digest = digest.or(computed);
        if result.is_ok() && digest.is_none() {
            // The processor stopped reading early: hash the file on its own.
            match session::open(&file.path, file.dev, file.stat.inode).and_then(session::digest) {
                Ok(d) => digest = Some(d),
                Err(e) => result = Err(anyhow!(e).context("cannot read the file")),
            }
        }
        Msg::Done {
            file,
            attempts,
            seen,
            result,
            digest,
        }
    }
}

/// The stat the scan saw, and whether reading it now is racy.
fn seen_now(file: &SessionFile) -> Seen {
    let now_ns = Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    Seen {
        stat: file.stat,
        racy: file.stat.is_racy_at(now_ns),
    }
}

/// The single writer: turns worker messages into state rows and counts.
struct Writer<'a> {
    db: &'a Connection,
    processor: &'a dyn Processor,
    opts: &'a Options,
    log: &'a Log,
    report: &'a mut Report,
    stop: &'a AtomicBool,
    /// Candidates whose visit has ended.
    ended: u64,
    transient_in_a_row: u32,
    stopped_with: Option<i32>,
    /// The first database error; the run ends with it.
    error: Option<anyhow::Error>,
}

impl<'a> Writer<'a> {
    fn key<'f>(&self, file: &'f SessionFile) -> Key<'f>
    where
        'a: 'f,
    {
        Key {
            processor: self.processor.name(),
            session_file: &file.file,
            username: &file.key,
        }
    }

    /// Writes a batch of messages in one transaction.
    fn handle_batch(&mut self, batch: Vec<Msg>) {
        self.ended += batch.len() as u64;
        if self.error.is_some() {
            return; // the run is ending; the next run redoes these
        }
        if let Err(e) = self.write_batch(batch) {
            self.stop.store(true, Ordering::SeqCst);
            self.error = Some(e);
        }
    }

    fn write_batch(&mut self, batch: Vec<Msg>) -> Result<()> {
        if self.opts.dry_run {
            for msg in batch {
                self.handle(self.db, msg)?;
            }
            return Ok(());
        }
        let tx = Transaction::new_unchecked(self.db, TransactionBehavior::Immediate)?;
        for msg in batch {
            self.handle(&tx, msg)?;
        }
        failpoint::hit("during-commit");
        tx.commit()?;
        Ok(())
    }

    fn handle(&mut self, db: &Connection, msg: Msg) -> Result<()> {
        match msg {
            Msg::Skip { file, seen } => {
                self.report.skipped += 1;
                match seen {
                    Some(seen) if !self.opts.dry_run => {
                        state::refresh_stat(db, self.key(file), &seen)
                    }
                    _ => Ok(()),
                }
            }
            Msg::Unreadable {
                file,
                row,
                seen,
                error,
            } => self.unreadable(db, file, row, seen, error),
            Msg::Interrupted {
                file,
                hash,
                attempts,
                seen,
            } => self.fail(
                db,
                file,
                Some(&hash),
                attempts,
                Some(seen),
                anyhow!("interrupted: the run ended while processing this session"),
            ),
            Msg::Capped => {
                self.report.capped += 1;
                Ok(())
            }
            Msg::WouldProcess { file } => {
                if let Some(list) = &mut self.report.would_process {
                    list.push(file.file.clone());
                }
                Ok(())
            }
            Msg::Done {
                file,
                attempts,
                seen,
                result,
                digest,
            } => self.done(db, file, attempts, seen, result, digest),
        }
    }

    fn done(
        &mut self,
        db: &Connection,
        file: &SessionFile,
        attempts: u32,
        seen: Seen,
        result: Result<Outcome>,
        digest: Option<Digest>,
    ) -> Result<()> {
        let (outcome, digest) = match (result, digest) {
            (Ok(outcome), Some(digest)) => (outcome, digest),
            (Ok(_), None) => {
                let e = anyhow!("internal error: the session was processed but not hashed");
                return self.failed_attempt(db, file, None, attempts, seen, e);
            }
            (Err(e), digest) => {
                let hash = digest.as_ref().map(|d| d.hash.as_str());
                return self.failed_attempt(db, file, hash, attempts, seen, e);
            }
        };
        failpoint::hit("before-commit");
        if let Some(output) = &outcome.output {
            output.write(db, &file.file)?;
        }
        state::record_success(
            db,
            self.key(file),
            &Success {
                hash: &digest.hash,
                bytes: digest.bytes,
                version: self.processor.version(),
                items: outcome.items,
                seen,
                now: Utc::now(),
            },
        )?;
        self.transient_in_a_row = 0;
        self.report.processed += 1;
        self.report.items_extracted += outcome.items;
        Ok(())
    }

    /// A processor error: the session's, or one that interrupts the run.
    fn failed_attempt(
        &mut self,
        db: &Connection,
        file: &SessionFile,
        hash: Option<&str>,
        attempts: u32,
        seen: Seen,
        e: anyhow::Error,
    ) -> Result<()> {
        let Some(interruption) = Interruption::of(&e) else {
            self.transient_in_a_row = 0;
            return self.fail(db, file, hash, attempts, Some(seen), e);
        };
        let stop_code = match interruption {
            Interruption::StopRun(code, _) => Some(*code),
            Interruption::Transient(_) => None,
        };
        // Not the session's fault: the attempt does not count, and the
        // session is retried by the next run.
        let message = format!("{e:#}");
        self.log.error(format_args!(
            "{}: {}: {message}",
            self.processor.name(),
            file.file
        ));
        state::record_failure(
            db,
            self.key(file),
            &Failure {
                hash,
                attempts: attempts - 1,
                quarantined: false,
                error: &message,
                next_attempt_at: None,
                seen: Some(seen),
            },
        )?;
        self.report.errors += 1;
        self.report.errors_detail.push(SessionError {
            session: file.file.clone(),
            error: message.clone(),
        });
        self.transient_in_a_row += 1;
        if let Some(code) = stop_code {
            self.stop_run(code, message);
        } else if self.transient_in_a_row >= MAX_TRANSIENT_IN_A_ROW {
            self.stop_run(
                exit::FAILURES,
                format!(
                    "stopped after {MAX_TRANSIENT_IN_A_ROW} transient failures in a row: {message}"
                ),
            );
        }
        Ok(())
    }

    fn stop_run(&mut self, code: i32, message: String) {
        self.stop.store(true, Ordering::SeqCst);
        if self.stopped_with.is_none() {
            self.stopped_with = Some(code);
            self.report.error = Some(message);
        }
    }

    /// A file that exists but cannot be read fails like a processor would.
    fn unreadable(
        &mut self,
        db: &Connection,
        file: &SessionFile,
        row: Option<&Row>,
        seen: Seen,
        e: anyhow::Error,
    ) -> Result<()> {
        let previous = match row {
            Some(r) if r.attempt_hash.is_none() && r.status == Status::Quarantined => {
                self.report.skipped += 1;
                return Ok(());
            }
            Some(r) if r.attempt_hash.is_none() && r.status == Status::Failed => r.attempts,
            _ => 0,
        };
        self.fail(db, file, None, previous + 1, Some(seen), e)
    }

    fn fail(
        &mut self,
        db: &Connection,
        file: &SessionFile,
        hash: Option<&str>,
        attempts: u32,
        seen: Option<Seen>,
        error: anyhow::Error,
    ) -> Result<()> {
        let quarantined = attempts >= self.opts.max_attempts;
        let message = format!("{error:#}");
        self.log.error(format_args!(
            "{}: {}: {message}{}",
            self.processor.name(),
            file.file,
            if quarantined { " (quarantined)" } else { "" }
        ));
        if !self.opts.dry_run {
            let next = (!quarantined).then(|| retry_time(attempts));
            state::record_failure(
                db,
                self.key(file),
                &Failure {
                    hash,
                    attempts,
                    quarantined,
                    error: &message,
                    next_attempt_at: next,
                    seen,
                },
            )?;
        }
        self.report.errors += 1;
        if quarantined {
            self.report.quarantined += 1;
        }
        self.report.errors_detail.push(SessionError {
            session: file.file.clone(),
            error: message,
        });
        Ok(())
    }
}

fn retry_time(attempts: u32) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(backoff(attempts)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_minute_to_six_hours() {
        assert_eq!(backoff(1), Duration::from_secs(60));
        assert_eq!(backoff(2), Duration::from_secs(120));
        assert_eq!(backoff(4), Duration::from_secs(480));
        assert_eq!(backoff(9), Duration::from_secs(256 * 60));
        assert_eq!(backoff(10), Duration::from_secs(6 * 3600));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(6 * 3600));
    }
}
