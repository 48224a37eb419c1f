//! The single writer: turns worker messages into state rows, outputs and
//! counts, a batch of messages per transaction, each session atomic.

use std::sync::atomic::Ordering;

use anyhow::{Result, anyhow};
use chrono::{DateTime, Utc};

use super::moves::Moves;
use super::worker::{Done, Msg};
use super::{Context, MAX_TRANSIENT_IN_A_ROW, Mode};
use crate::exit;
use crate::failpoint;
use crate::processor::Interruption;
use crate::report::{Report, SessionError};
use crate::scan::SessionFile;
use crate::session::Handover;
use crate::signals;
use crate::store::sql::Db;
use crate::store::state::{self, Failure, RowId, Success};
use crate::verdict::{self, Retry, Seen, Unreadable};

pub struct Writer<'a> {
    ctx: &'a Context<'a>,
    db: &'a dyn Db,
    report: &'a mut Report,
    /// Candidates whose visit has ended.
    ended: u64,
    stopped_with: Option<i32>,
    /// The first database error; the run ends with it.
    error: Option<anyhow::Error>,
    /// Gone files, to be replaced by their content under a new name.
    moves: Moves,
}

/// A failure to record.
struct Charge<'h> {
    hash: Option<&'h str>,
    attempts: u32,
    seen: Seen,
    error: anyhow::Error,
}

impl<'a> Writer<'a> {
    pub fn new(
        ctx: &'a Context<'a>,
        db: &'a dyn Db,
        report: &'a mut Report,
        moves: Moves,
    ) -> Writer<'a> {
        Writer {
            ctx,
            db,
            report,
            ended: 0,
            stopped_with: None,
            error: None,
            moves,
        }
    }

    pub fn ended(&self) -> u64 {
        self.ended
    }

    /// Counts what no worker reached and returns how the run ended: an error,
    /// a code of its own, or `None` for the counts to decide.
    pub fn finish(self, candidates: u64) -> Result<Option<i32>> {
        let ctx = self.ctx;
        let name = ctx.processor.name();
        // Candidates no worker reached: left by the time budget or a stop.
        self.report.capped += candidates.saturating_sub(self.ended);
        if ctx.stop.load(Ordering::SeqCst) && self.stopped_with.is_none() && self.error.is_none() {
            ctx.printer.info(format_args!("{name}: time budget spent"));
        }
        let r = &self.report;
        ctx.printer.info(format_args!(
            "{name}: {} processed, {} skipped, {} capped, {} settling, {} errors, {} quarantined",
            r.processed, r.skipped, r.capped, r.settling, r.errors, r.quarantined
        ));
        if let (None, Some(signal)) = (&self.error, signals::received()) {
            let why = format!("interrupted by {}", signals::name(signal));
            ctx.printer.error(format_args!("{name}: {why}"));
            self.report.error = Some(why);
            return Ok(Some(signals::exit_code(signal)));
        }
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.stopped_with),
        }
    }

    fn id<'f>(&self, file: &'f SessionFile) -> RowId<'f>
    where
        'a: 'f,
    {
        RowId {
            processor: self.ctx.processor.name(),
            session_file: &file.name,
            username: file.user(),
        }
    }

    /// Writes a batch of messages in one transaction; a database error stops
    /// the run, and the next run redoes what it lost.
    pub fn write_batch(&mut self, batch: Vec<Msg>) {
        self.ended += batch.len() as u64;
        if self.error.is_some() {
            self.report.capped += batch.len() as u64;
            return;
        }
        let mark = self.report.mark();
        let size = batch.len() as u64;
        if let Err(e) = self.try_batch(batch) {
            // Nothing of the batch was committed: count none of it as done.
            self.report.rewind(mark, size);
            self.ctx.stop.store(true, Ordering::SeqCst);
            self.error = Some(e);
        }
    }

    fn try_batch(&mut self, batch: Vec<Msg>) -> Result<()> {
        if let Mode::DryRun = self.ctx.mode {
            for msg in batch {
                self.handle(self.db, msg)?;
            }
            return Ok(());
        }
        let tx = self.db.transaction()?;
        for msg in batch {
            self.handle(&*tx, msg)?;
        }
        failpoint::hit("during-commit");
        failpoint::error("commit-error")?;
        tx.commit()?;
        Ok(())
    }

    fn handle(&mut self, db: &dyn Db, msg: Msg) -> Result<()> {
        match msg {
            Msg::Skip { file, seen } => {
                self.report.skipped += 1;
                match (seen, self.ctx.mode) {
                    (Some(seen), Mode::Commit(_)) => state::refresh_stat(db, self.id(file), &seen),
                    _ => Ok(()),
                }
            }
            Msg::Unreadable {
                file,
                row,
                seen,
                error,
            } => match verdict::unreadable(row) {
                Unreadable::Skip => {
                    self.report.skipped += 1;
                    Ok(())
                }
                Unreadable::Fail { attempts } => {
                    let charge = Charge {
                        hash: None,
                        attempts,
                        seen,
                        error,
                    };
                    self.fail(db, file, charge)
                }
            },
            Msg::GiveUp {
                file,
                hash,
                attempts,
                seen,
            } => {
                let error = anyhow!("interrupted: the run ended while processing this session");
                let charge = Charge {
                    hash: Some(&hash),
                    attempts,
                    seen,
                    error,
                };
                self.fail(db, file, charge)
            }
            Msg::Capped => {
                self.report.capped += 1;
                Ok(())
            }
            Msg::Stop { code, message } => {
                self.report.capped += 1;
                self.ctx
                    .printer
                    .error(format_args!("{}: {message}", self.ctx.processor.name()));
                self.stop_run(code, message);
                Ok(())
            }
            Msg::WouldProcess { file } => {
                if let Some(list) = &mut self.report.would_process {
                    list.push(file.name.clone());
                }
                Ok(())
            }
            Msg::Done(done) => self.done(db, done),
        }
    }

    fn done(&mut self, db: &dyn Db, done: Done) -> Result<()> {
        let Done {
            file,
            attempts,
            seen,
            result,
            handover,
            attempt_hash,
            streak_ended,
            new,
        } = done;
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(error) => {
                let charge = Charge {
                    hash: attempt_hash.as_deref(),
                    attempts,
                    seen,
                    error,
                };
                let stop = match Interruption::of(&charge.error) {
                    None => return self.fail(db, file, charge),
                    Some(Interruption::StopRun(code, _)) => Some(*code),
                    Some(Interruption::Transient(_)) => None,
                };
                // "Not now" waits for a backoff; a stopped run retries next run.
                let retry_at = stop.is_none().then(|| verdict::after_transient(Utc::now()));
                let message = self.uncharged(db, file, charge, retry_at)?;
                if let Some(code) = stop {
                    self.stop_run(code, message);
                } else if streak_ended {
                    let why = format!(
                        "stopped after {MAX_TRANSIENT_IN_A_ROW} transient failures in a row: {message}"
                    );
                    self.stop_run(exit::FAILURES, why);
                }
                return Ok(());
            }
        };
        failpoint::hit("before-commit");
        if let Some(output) = &outcome.output {
            output.write(db, &file.name)?;
        }
        let success = Success {
            hash: &handover.digest.hash,
            bytes: handover.digest.bytes,
            version: self.ctx.processor.version(),
            items: outcome.items,
            seen,
            now: Utc::now(),
        };
        state::record_success(db, self.id(file), &success)?;
        if new {
            self.replace_moved(db, file, &handover)?;
        }
        self.report.processed += 1;
        self.report.items_extracted = self.report.items_extracted.saturating_add(outcome.items);
        Ok(())
    }

    /// A new file that holds a gone file's processed content is that file,
    /// moved: the gone file's outputs and row go, in this transaction.
    fn replace_moved(
        &mut self,
        db: &dyn Db,
        file: &SessionFile,
        handover: &Handover,
    ) -> Result<()> {
        let processor = self.ctx.processor;
        let contents = handover.prefixes.iter().chain([&handover.digest]);
        for digest in contents {
            for old in self.moves.take(digest) {
                if old == file.name {
                    continue;
                }
                processor.forget(db, &old)?;
                state::delete(db, processor.name(), &old)?;
                self.ctx.printer.info(format_args!(
                    "{}: {old} moved to {}",
                    processor.name(),
                    file.name
                ));
            }
        }
        Ok(())
    }

    /// A failure that was not the session's: the attempt is not charged and
    /// the next run tries again. Returns the error's text.
    fn uncharged(
        &mut self,
        db: &dyn Db,
        file: &SessionFile,
        charge: Charge,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<String> {
        let attempts = verdict::uncharged(charge.attempts);
        let retry = Retry {
            quarantined: false,
            next_attempt_at: retry_at,
        };
        self.record(db, file, charge, attempts, retry)
    }

    fn stop_run(&mut self, code: i32, message: String) {
        self.ctx.stop.store(true, Ordering::SeqCst);
        if self.stopped_with.is_none() {
            self.stopped_with = Some(code);
            self.report.error = Some(message);
        }
    }

    /// The session's own failure: charged, retried with backoff, quarantined
    /// after `--max-attempts`.
    fn fail(&mut self, db: &dyn Db, file: &SessionFile, charge: Charge) -> Result<()> {
        let retry = verdict::after_failure(charge.attempts, self.ctx.opts.max_attempts, Utc::now());
        let attempts = charge.attempts;
        self.record(db, file, charge, attempts, retry).map(drop)
    }

    /// Says and records a failure with the attempts and retry it leaves, and
    /// counts it; returns the error's text.
    fn record(
        &mut self,
        db: &dyn Db,
        file: &SessionFile,
        charge: Charge,
        attempts: u32,
        retry: Retry,
    ) -> Result<String> {
        let message = format!("{:#}", charge.error);
        self.ctx.printer.error(format_args!(
            "{}: {}: {message}{}",
            self.ctx.processor.name(),
            file.name,
            if retry.quarantined {
                " (quarantined)"
            } else {
                ""
            }
        ));
        if let Mode::Commit(_) = self.ctx.mode {
            let failure = Failure {
                hash: charge.hash,
                attempts,
                quarantined: retry.quarantined,
                error: &message,
                next_attempt_at: retry.next_attempt_at,
                seen: charge.seen,
            };
            state::record_failure(db, self.id(file), &failure)?;
        }
        self.report.errors += 1;
        if retry.quarantined {
            self.report.quarantined += 1;
        }
        self.report.errors_detail.push(SessionError {
            session: file.name.clone(),
            error: message.clone(),
        });
        Ok(message)
    }
}
