//! The worker loop: take a candidate, read and hash it, decide with
//! [`crate::verdict`], run the processor (catching a panic), and tell the
//! writer what happened, in exactly one message per candidate. An attempt
//! on a small file read whole is held back, unhashed, until a batch of them
//! is hashed together (see [`crate::session::hash_all`]): a worker that stops
//! sends what it holds first.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use anyhow::{Result, anyhow};
use chrono::Utc;

use super::backlog::Backlog;
use super::{Context, Mode};
use crate::exit;
use crate::failpoint;
use crate::journal::{Entry, Journal};
use crate::processor::{Interruption, Outcome};
use crate::scan::SessionFile;
use crate::session::{self, Digest, Handed, Handover, Session};
use crate::signals;
use crate::verdict::{self, AfterHash, Plan, Row, Seen};

/// What a worker tells the writer.
pub enum Msg<'a> {
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
    GiveUp {
        file: &'a SessionFile,
        hash: String,
        attempts: u32,
        seen: Seen,
    },
    /// Left for the next run by `--max-sessions` or a stop.
    Capped,
    /// The machine, not the session, failed (out of descriptors or
    /// memory): the run stops with `code`, charging nobody.
    Stop { code: i32, message: String },
    /// A dry run: would have been processed.
    WouldProcess { file: &'a SessionFile },
    /// An attempt returned.
    Done(Done<'a>),
}

impl Msg<'_> {
    /// Bytes of rows the message holds (see [`Backlog`]).
    pub fn held(&self) -> u64 {
        match self {
            Msg::Done(Done {
                result: Ok(outcome),
                ..
            }) => outcome.output.as_ref().map_or(0, |o| o.held()),
            _ => 0,
        }
    }
}

pub struct Done<'a> {
    pub file: &'a SessionFile,
    pub attempts: u32,
    pub seen: Seen,
    pub result: Result<Outcome>,
    pub handover: Handover,
    /// The content the attempt was on, as far as it is known (see
    /// [`crate::verdict::Row::attempt_hash`]).
    pub attempt_hash: Option<String>,
    /// This transient failure was one too many in a row.
    pub streak_ended: bool,
    /// The file had no state row: it may be a gone file under a new name.
    pub new: bool,
}

/// A session to process.
struct Attempt<'a> {
    file: &'a SessionFile,
    /// Known when the file was hashed first.
    digest: Option<Digest>,
    attempts: u32,
    seen: Seen,
    /// No state row.
    new: bool,
    /// Quiet long enough for a final line without a newline to count.
    settled: bool,
    /// What the processor last processed of the file (see
    /// [`verdict::processed_before`]).
    previous: Option<Digest>,
}

/// What a visit comes to.
enum Visit<'a> {
    Settled(Msg<'a>),
    Attempt(Attempt<'a>),
}

/// What an attempt comes to: a message, or the processor's return with
/// the content it was handed, perhaps still to be hashed.
enum Attempted<'a> {
    Settled(Msg<'a>),
    Returned(Returned<'a>, Handed),
}

/// An attempt the processor returned from, but for its content's digest.
struct Returned<'a> {
    file: &'a SessionFile,
    attempts: u32,
    seen: Seen,
    settled: bool,
    attempt_hash: Option<String>,
    result: Result<Outcome>,
    streak_ended: bool,
    new: bool,
}

impl<'a> Returned<'a> {
    /// The message, once the digest of what was handed over is known.
    fn done(self, handover: Handover) -> Msg<'a> {
        let file = self.file;
        let seen = verdict::after_read(self.seen, &file.stat, handover.digest.bytes, self.settled);
        Msg::Done(Done {
            file,
            attempts: self.attempts,
            seen,
            attempt_hash: self
                .attempt_hash
                .or_else(|| handover.whole.then(|| handover.digest.hash.clone())),
            result: self.result,
            handover,
            streak_ended: self.streak_ended,
            new: self.new,
        })
    }
}

/// Returned attempts held back for their contents to be hashed together:
/// at most this many (the lanes of an AVX-512 register; more would only
/// keep the writer waiting longer)...
const HOLD_AT_MOST: usize = 16;
/// ...holding at most this many bytes of content (per worker: memory).
const HOLD_BYTES: usize = 2 << 20;

#[derive(Default)]
struct Held<'a> {
    returned: Vec<Returned<'a>>,
    handed: Vec<Handed>,
}

impl<'a> Held<'a> {
    /// Holds an attempt; whether the batch is full.
    fn hold(&mut self, returned: Returned<'a>, handed: Handed) -> bool {
        self.returned.push(returned);
        self.handed.push(handed);
        self.returned.len() >= HOLD_AT_MOST
            || self.handed.iter().map(Handed::held).sum::<usize>() >= HOLD_BYTES
    }

    /// The messages of the attempts held, their contents hashed.
    fn release(&mut self) -> Vec<Msg<'a>> {
        let handovers = session::hash_all(std::mem::take(&mut self.handed));
        std::mem::take(&mut self.returned)
            .into_iter()
            .zip(handovers)
            .map(|(returned, handover)| returned.done(handover))
            .collect()
    }
}

/// How much nicer than the writer a worker runs.
#[cfg(target_os = "linux")]
const NICER_THAN_THE_WRITER: libc::c_int = 10;

/// Lowers the calling worker's priority below the writer's, for a built-in
/// processor, whose rows the writer writes. The writer is the one part of a
/// run that cannot be shared out: when the workers and the writer want more
/// cores than the machine has, a writer held to its share falls behind, and
/// then drains the backlog alone while the other cores idle. Linux keeps a
/// nice value per thread, so this steps back the worker alone (and the
/// hashing threads it starts); other systems keep one per process, where it
/// would slow the writer too. Never for an exec processor: a process cannot
/// raise its priority again, and its commands would run niced for good.
fn step_back() {
    #[cfg(target_os = "linux")]
    // SAFETY: nice() takes a plain int and changes only the calling
    // thread's priority. It cannot fail upwards; should it fail at all, the
    // worker runs at the writer's priority, as it would elsewhere.
    unsafe {
        libc::nice(NICER_THAN_THE_WRITER);
    }
}

/// The candidates, shared by the workers.
pub struct Workers<'a> {
    ctx: &'a Context<'a>,
    /// Rows sent and not yet written.
    pub backlog: Backlog,
    candidates: &'a [(&'a SessionFile, Option<&'a Row>)],
    next: AtomicUsize,
    /// Prefix lengths of gone files, probed in new ones.
    lengths: &'a [u64],
}

impl<'a> Workers<'a> {
    pub fn new(
        ctx: &'a Context<'a>,
        candidates: &'a [(&'a SessionFile, Option<&'a Row>)],
        lengths: &'a [u64],
    ) -> Workers<'a> {
        Workers {
            ctx,
            backlog: Backlog::default(),
            candidates,
            next: AtomicUsize::new(0),
            lengths,
        }
    }

    /// Takes candidates until none are left or the run stops.
    pub fn work(&self, worker: usize, tx: mpsc::Sender<Msg<'a>>) {
        if self.ctx.processor.kind() == "builtin" {
            step_back();
        }
        let mut held = Held::default();
        if self.take(worker, &tx, &mut held) {
            self.send_all(&tx, &mut held);
        }
    }

    /// Sends a message; false when the writer is gone.
    fn send(&self, tx: &mpsc::Sender<Msg<'a>>, msg: Msg<'a>) -> bool {
        self.backlog.reserve(msg.held());
        tx.send(msg).is_ok()
    }

    fn send_all(&self, tx: &mpsc::Sender<Msg<'a>>, held: &mut Held<'a>) -> bool {
        held.release().into_iter().all(|msg| self.send(tx, msg))
    }

    /// The worker loop; false when the writer is gone.
    fn take(&self, worker: usize, tx: &mpsc::Sender<Msg<'a>>, held: &mut Held<'a>) -> bool {
        let ctx = self.ctx;
        loop {
            if ctx
                .opts
                .time_budget
                .is_some_and(|b| ctx.clock.elapsed() >= b)
            {
                ctx.stop.store(true, Ordering::SeqCst);
            }
            if ctx.stop.load(Ordering::SeqCst) || signals::received().is_some() {
                return true;
            }
            let i = self.next.fetch_add(1, Ordering::SeqCst);
            let Some(&(file, row)) = self.candidates.get(i) else {
                return true;
            };
            let msg = match self.visit(file, row) {
                Visit::Settled(msg) => msg,
                Visit::Attempt(attempt) => match self.attempt(worker, attempt) {
                    Attempted::Settled(msg) => msg,
                    Attempted::Returned(returned, handed) if handed.held() == 0 => {
                        returned.done(handed.hashed())
                    }
                    Attempted::Returned(returned, handed) => {
                        if held.hold(returned, handed) && !self.send_all(tx, held) {
                            return false;
                        }
                        continue;
                    }
                },
            };
            if !self.send(tx, msg) {
                return false;
            }
        }
    }

    /// Reads one candidate as far as needed to know whether to process it.
    fn visit(&self, file: &'a SessionFile, row: Option<&'a Row>) -> Visit<'a> {
        let processor = self.ctx.processor;
        let version = processor.version();
        let settled = verdict::settled(&file.stat, Utc::now(), self.ctx.opts.fragment_settle);
        let plan = verdict::plan(row, version, processor.needs_digest_first());
        let previous = verdict::processed_before(row, version).map(|(hash, bytes)| Digest {
            hash: hash.to_owned(),
            bytes,
        });
        if plan == Plan::HashWhileProcessing {
            return Visit::Attempt(Attempt {
                file,
                digest: None,
                attempts: 1,
                seen: verdict::seen(file.stat, Utc::now()),
                new: verdict::is_unseen(row),
                settled,
                previous,
            });
        }
        let seen = verdict::seen(file.stat, Utc::now());
        let read = session::open(&file.path, file.dev, file.stat.inode)
            .and_then(|f| session::digest(f, settled.then_some(file.stat.size)));
        let digest = match read {
            Ok(d) => d,
            Err(e) => {
                let error = anyhow!(e);
                // Gone since the scan: the next scan sees what is there.
                if session::is_gone(&error) {
                    return Visit::Settled(Msg::Skip { file, seen: None });
                }
                if is_exhaustion(&error) {
                    let message = format!("{:#}", error.context("cannot read the file"));
                    return Visit::Settled(Msg::Stop {
                        code: exit::IO,
                        message,
                    });
                }
                let error = error.context("cannot read the file");
                return Visit::Settled(Msg::Unreadable {
                    file,
                    row,
                    seen,
                    error,
                });
            }
        };
        let now = Utc::now();
        let seen = verdict::after_read(
            verdict::seen(file.stat, now),
            &file.stat,
            digest.bytes,
            settled,
        );
        let max = self.ctx.opts.max_attempts;
        match verdict::after_hash(row, &file.stat, &digest.hash, version, max, now) {
            AfterHash::FreeSkip => Visit::Settled(Msg::Skip {
                file,
                seen: Some(seen),
            }),
            AfterHash::GiveUp { attempts } => Visit::Settled(Msg::GiveUp {
                file,
                hash: digest.hash,
                attempts,
                seen,
            }),
            AfterHash::Attempt { attempts } => Visit::Attempt(Attempt {
                file,
                digest: Some(digest),
                attempts,
                seen,
                new: verdict::is_unseen(row),
                settled,
                previous,
            }),
        }
    }

    /// Makes an attempt within the session cap: marks it in the worker's
    /// journal slot, runs the processor, clears the slot.
    fn attempt(&self, worker: usize, attempt: Attempt<'a>) -> Attempted<'a> {
        let made = self.ctx.attempts_made.fetch_add(1, Ordering::SeqCst);
        if self.ctx.opts.max_sessions.is_some_and(|m| made >= m) || self.ctx.cost_cap_reached() {
            return Attempted::Settled(Msg::Capped);
        }
        let Attempt {
            file,
            digest,
            attempts,
            seen,
            new,
            settled,
            previous,
        } = attempt;
        let journal = match self.ctx.mode {
            Mode::Commit(lock) => Journal::new(lock),
            Mode::DryRun => return Attempted::Settled(Msg::WouldProcess { file }),
        };
        let attempt_hash = digest.as_ref().map(|d| d.hash.clone());
        let entry = Entry {
            session_file: file.name.clone(),
            attempts,
            hash: attempt_hash.clone(),
            stat: file.stat,
        };
        let mut session = Session::new(file, digest.as_ref());
        session.settled(settled.then_some(file.stat.size));
        session.processed_before(previous);
        if new {
            session.probe(self.lengths.to_vec());
        }
        let mut result = match journal.mark(worker, &entry) {
            Ok(()) => {
                failpoint::hit("after-attempt");
                process(self.ctx, &mut session)
            }
            Err(e) => Err(Interruption::StopRun(exit::IO, format!("{e:#}")).into()),
        };
        // The attempt has returned: whatever happens next is not its doing.
        if let Err(e) = journal.clear(worker) {
            result = Err(e);
        }
        if let Err(e) = &result
            && is_exhaustion(e)
        {
            result = Err(Interruption::StopRun(exit::IO, format!("{e:#}")).into());
        }
        // Paid for whatever becomes of the attempt.
        self.ctx.charge(&session.spent());
        let handed = session.hand_over();
        if result.as_ref().is_err_and(session::is_gone) {
            // Renamed or replaced while it waited: not this session's doing.
            return Attempted::Settled(Msg::Skip { file, seen: None });
        }
        if result.is_err() && signals::received().is_some() {
            // Cut short by a signal: charged nothing, left for the next run.
            return Attempted::Settled(Msg::Capped);
        }
        let streak_ended = self.count(&result);
        let returned = Returned {
            file,
            attempts,
            seen,
            settled,
            attempt_hash,
            result,
            streak_ended,
            new,
        };
        Attempted::Returned(returned, handed)
    }

    /// Stops taking sessions at once when the run cannot go on (the writer
    /// records why). Returns whether a transient failure ended the streak.
    fn count(&self, result: &Result<Outcome>) -> bool {
        let ctx = self.ctx;
        match result.as_ref().err().and_then(Interruption::of) {
            Some(Interruption::StopRun(..)) => {
                ctx.stop.store(true, Ordering::SeqCst);
                false
            }
            Some(Interruption::Transient(_)) => {
                let ended = ctx.transient.transient();
                if ended {
                    ctx.stop.store(true, Ordering::SeqCst);
                }
                ended
            }
            None => {
                ctx.transient.reset();
                false
            }
        }
    }
}

/// Whether an error is the machine running out of something (descriptors,
/// memory, processes): no session's fault, and no reason to charge one.
fn is_exhaustion(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(|n| [libc::EMFILE, libc::ENFILE, libc::ENOMEM, libc::EAGAIN].contains(&n))
    })
}

/// Runs the processor; a panic is that session's failure, not the run's end.
fn process(ctx: &Context, session: &mut Session) -> Result<Outcome> {
    catch_unwind(AssertUnwindSafe(|| ctx.processor.process(session))).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(anyhow!("processor panicked: {what}"))
    })
}
