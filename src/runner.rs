//! One processor over the candidates of one scan: budgets, atomic commits,
//! failures and quarantine.
//!
//! Guarantees:
//! - an unchanged file costs one `stat`; a touched file with the same content
//!   is a free skip that does not count against `--max-sessions`;
//! - a built-in processor's outputs and the state row are committed in one
//!   `BEGIN IMMEDIATE` transaction: after a crash there are both or neither;
//! - an attempt is recorded before the processor runs, so a session that
//!   fails, or even takes the process down, is retried with backoff and
//!   quarantined after `--max-attempts`, never retried for ever;
//! - one session failing never stops the others; only a database error
//!   ends the run.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use chrono::Utc;
use rusqlite::TransactionBehavior;

use crate::failpoint;
use crate::log::Log;
use crate::processor::{Processor, Session};
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
}

/// The first retry waits this long; each further failure doubles it...
const FIRST_BACKOFF: Duration = Duration::from_secs(60);
/// ...up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);

pub fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

/// Runs `processor` once over the data dir and records the run.
pub fn run(
    store: &mut Store,
    processor: &dyn Processor,
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
    let run_id = match opts.dry_run {
        true => None,
        false => Some(runs::start(&store.conn, processor.name(), started)?),
    };
    let mut visit = Visit {
        store,
        processor,
        opts,
        log,
        report: &mut report,
        attempts_made: 0,
    };
    let result = visit.all(data_dir, clock);
    report.duration_ms = clock.elapsed().as_millis() as u64;
    report.exit_code = match &result {
        Ok(()) => report.outcome_code(),
        Err(e) => crate::exit::code_of(e),
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

struct Visit<'a> {
    store: &'a mut Store,
    processor: &'a dyn Processor,
    opts: &'a Options,
    log: &'a Log,
    report: &'a mut Report,
    /// Processing attempts so far, for `--max-sessions`.
    attempts_made: u64,
}

impl Visit<'_> {
    fn all(&mut self, data_dir: &Path, clock: Instant) -> Result<()> {
        let name = self.processor.name();
        let files = scan::scan(data_dir, self.log)?;
        let rows = state::load(&self.store.conn, name)?;
        let now = Utc::now();
        let version = self.processor.version();
        let candidates: Vec<&SessionFile> = files
            .iter()
            .filter(|f| scan::is_candidate(rows.get(&f.file), &f.stat, version, now))
            .collect();
        self.report.scanned = files.len() as u64;
        self.report.candidates = candidates.len() as u64;
        self.log.info(format_args!(
            "{name}: {} files, {} candidates",
            files.len(),
            candidates.len()
        ));
        let total = candidates.len() as u64;
        for (i, file) in candidates.iter().enumerate() {
            if self.opts.time_budget.is_some_and(|b| clock.elapsed() >= b) {
                self.report.capped += total - i as u64;
                self.log.info(format_args!("{name}: time budget spent"));
                break;
            }
            self.log.progress(name, i as u64, total);
            self.one(file, rows.get(&file.file))?;
        }
        self.log.end_progress();
        self.log.info(format_args!(
            "{name}: {} processed, {} skipped, {} capped, {} errors, {} quarantined",
            self.report.processed,
            self.report.skipped,
            self.report.capped,
            self.report.errors,
            self.report.quarantined
        ));
        Ok(())
    }

    /// Reads one candidate and processes it unless its content is known.
    fn one(&mut self, file: &SessionFile, row: Option<&Row>) -> Result<()> {
        let key = Key {
            processor: self.processor.name(),
            session_file: &file.file,
            username: &file.key,
        };
        let read_at = Utc::now();
        let seen = Seen {
            stat: file.stat,
            racy: file
                .stat
                .is_racy_at(read_at.timestamp_nanos_opt().unwrap_or(i64::MAX)),
        };
        let digest =
            match session::open(&file.path, file.dev, file.stat.inode).and_then(session::digest) {
                Ok(d) => d,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Deleted or replaced since the scan: the next scan sees what is there.
                    self.log
                        .info(format_args!("{}: {}: {e}", key.processor, file.file));
                    self.report.skipped += 1;
                    return Ok(());
                }
                Err(e) => {
                    let e = anyhow!(e).context("cannot read the file");
                    return self.unreadable(key, row, &seen, e);
                }
            };
        let content = Some(digest.hash.as_str());
        let retrying = row.is_some_and(|r| {
            matches!(
                r.status,
                Status::Failed | Status::Quarantined | Status::Processing
            ) && r.attempt_hash.as_deref() == content
        });
        let free = match row {
            Some(r) if r.status == Status::Ok => {
                r.processor_version == self.processor.version() && r.file_hash.as_deref() == content
            }
            Some(r) if retrying => match r.status {
                Status::Quarantined => true,
                Status::Failed => r.next_attempt_at.is_some_and(|t| t > read_at),
                _ => false,
            },
            _ => false,
        };
        if free {
            self.report.skipped += 1;
            if !self.opts.dry_run {
                state::refresh_stat(&self.store.conn, key, &seen)?;
            }
            return Ok(());
        }
        let previous = match row {
            Some(r) if retrying => r.attempts,
            _ => 0,
        };
        if previous >= self.opts.max_attempts {
            // Earlier runs died on this content as often as it may fail.
            return self.fail(
                key,
                Some(&digest.hash),
                previous,
                Some(seen),
                anyhow!("interrupted: the run ended while processing this session"),
            );
        }
        if self
            .opts
            .max_sessions
            .is_some_and(|m| self.attempts_made >= m)
        {
            self.report.capped += 1;
            return Ok(());
        }
        self.attempts_made += 1;
        if let Some(list) = &mut self.report.would_process {
            list.push(file.file.clone());
            return Ok(());
        }
        self.attempt(key, file, digest, seen, previous + 1)
    }

    fn attempt(
        &mut self,
        key: Key,
        file: &SessionFile,
        digest: Digest,
        seen: Seen,
        attempts: u32,
    ) -> Result<()> {
        state::record_attempt(&self.store.conn, key, &digest.hash, attempts)?;
        failpoint::hit("after-attempt");
        let session = Session {
            file: &file.file,
            key: &file.key,
            path: &file.path,
            digest: &digest,
            dev: file.dev,
            inode: file.stat.inode,
        };
        // A panic in a processor is that session's failure, not the run's end.
        let result = catch_unwind(AssertUnwindSafe(|| self.processor.process(&session)))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(anyhow!("processor panicked: {what}"))
            });
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(e) => return self.fail(key, Some(&digest.hash), attempts, Some(seen), e),
        };
        failpoint::hit("before-commit");
        let tx = self
            .store
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(output) = &outcome.output {
            output.write(&tx, &file.file)?;
        }
        failpoint::hit("during-commit");
        state::record_success(
            &tx,
            key,
            &Success {
                hash: &digest.hash,
                bytes: digest.bytes,
                version: self.processor.version(),
                items: outcome.items,
                seen,
                now: Utc::now(),
            },
        )?;
        tx.commit()?;
        self.report.processed += 1;
        self.report.items_extracted += outcome.items;
        Ok(())
    }

    /// A file that exists but cannot be read fails like a processor would.
    fn unreadable(
        &mut self,
        key: Key,
        row: Option<&Row>,
        seen: &Seen,
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
        if self.opts.dry_run {
            self.report.errors += 1;
            return Ok(());
        }
        self.fail(key, None, previous + 1, Some(*seen), e)
    }

    fn fail(
        &mut self,
        key: Key,
        hash: Option<&str>,
        attempts: u32,
        seen: Option<Seen>,
        error: anyhow::Error,
    ) -> Result<()> {
        let quarantined = attempts >= self.opts.max_attempts;
        let message = format!("{error:#}");
        self.log.error(format_args!(
            "{}: {}: {message}{}",
            key.processor,
            key.session_file,
            if quarantined { " (quarantined)" } else { "" }
        ));
        if !self.opts.dry_run {
            let next = (!quarantined).then(|| {
                Utc::now() + chrono::Duration::from_std(backoff(attempts)).unwrap_or_default()
            });
            state::record_failure(
                &self.store.conn,
                key,
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
            session: key.session_file.to_owned(),
            error: message,
        });
        Ok(())
    }
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
