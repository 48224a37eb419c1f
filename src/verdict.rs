//! What a state row, a stat and the clock mean: every decision the run and
//! `state` make about a session file, and nothing else (no I/O, no
//! database), so that each rule has one home and one table of tests.
//!
//! The questions, in the order a run asks them:
//! 1. [`must_read`]: from `stat` alone, must the file be read at all? And
//!    for a processor that waits for a conversation to end,
//!    [`is_settling`]: must it wait longer?
//! 2. [`plan`]: hash it before processing, or hash while processing?
//! 3. [`after_hash`]: with the hash known, a free skip, attempt n, or give up
//!    (quarantine without trying again)?
//! 4. [`unreadable`] and [`after_failure`]: what a failure costs, when the
//!    next try is ([`backoff`]), and when it is quarantine.
//!
//! And for `state`: [`is_waiting`], whether the processor still owes the file
//! its current content. For the processor itself: [`processed_before`],
//! what it last processed of the file, to tell growth from a rewrite.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::scan::Stat;

/// A file whose mtime was this close to the moment it was read may have been
/// appended to in the same clock tick, invisibly to `stat`.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);
/// The first retry waits this long; each further failure doubles it...
pub const FIRST_BACKOFF: Duration = Duration::from_secs(60);
/// ...up to this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);

/// Where a (processor, session file) stands:
/// - `Ok`: the content with `file_hash` was processed at `processor_version`.
/// - `Processing`: a run died while processing it, and nothing else; the
///   attempt counts.
/// - `Suspect`: a run died while processing it beside other sessions: any
///   of them may have killed it, so none is charged until each has been
///   retried alone.
/// - `Failed`: the last attempt failed; retried at `next_attempt_at`.
/// - `Quarantined`: `attempts` failures on the same content; left alone until
///   the content changes or an operator requeues it.
/// - `Pending`: requeued by an operator.
/// - `Gone`: a scan no longer found the file; its outputs are kept (the
///   server copy is often the only record left) until `state prune`, and
///   replaced if its content turns up under another name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Processing,
    Suspect,
    Failed,
    Quarantined,
    Pending,
    Gone,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Processing => "processing",
            Status::Suspect => "suspect",
            Status::Failed => "failed",
            Status::Quarantined => "quarantined",
            Status::Pending => "pending",
            Status::Gone => "gone",
        }
    }

    pub fn parse(text: &str) -> Status {
        match text {
            "ok" => Status::Ok,
            "processing" => Status::Processing,
            "suspect" => Status::Suspect,
            "failed" => Status::Failed,
            "quarantined" => Status::Quarantined,
            "gone" => Status::Gone,
            // Unknown text can only come from a hand edit: reprocess.
            _ => Status::Pending,
        }
    }
}

/// The part of a state row that decisions are made from.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub status: Status,
    pub processor_version: u32,
    /// The content last processed successfully...
    pub file_hash: Option<String>,
    /// ...and its length.
    pub bytes: u64,
    /// The stat tuple when the file was last read.
    pub stat: Option<Stat>,
    /// That read was racy (see [`is_racy`]).
    pub racy: bool,
    /// That read left a final fragment before the file settled (see
    /// [`settled`]): read again once it has.
    pub settling: bool,
    /// Failed attempts on the content of `attempt_hash`.
    pub attempts: u32,
    /// The content the failures were on; `None` when the file was hashed
    /// while processed (the stat tuple then identifies the content) or could
    /// not be read.
    pub attempt_hash: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When a run first saw the file.
    pub first_seen_at: Option<DateTime<Utc>>,
    /// When a run first saw the file waiting to settle (see [`Settle`]);
    /// cleared by a success.
    pub waiting_since: Option<DateTime<Utc>>,
}

/// What a read saw: the stat tuple, and whether the read was racy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub stat: Stat,
    pub racy: bool,
    pub settling: bool,
}

/// Whether a read at `now` cannot be trusted to have seen every write that
/// shares the file's mtime: the mtime is within [`RACY_WINDOW`] of now. An
/// mtime further in the future (a writer's clock ahead of ours) is not
/// racy, or the file would be read again on every run.
pub fn is_racy(stat: &Stat, now: DateTime<Utc>) -> bool {
    let now_ns = now.timestamp_nanos_opt().unwrap_or(i64::MAX);
    let window = RACY_WINDOW.as_nanos() as i64;
    stat.mtime_ns.saturating_add(window) >= now_ns && stat.mtime_ns <= now_ns.saturating_add(window)
}

/// Whether a failed session's retry is still to come. A retry time further
/// off than the longest backoff can only come from a clock that was ahead
/// and has been put right: it is due now, not in hours.
pub fn retry_pending(next_attempt_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    let longest = chrono::Duration::from_std(MAX_BACKOFF).unwrap_or(chrono::Duration::MAX);
    next_attempt_at
        .is_some_and(|t| t > now && now.checked_add_signed(longest).is_none_or(|l| t <= l))
}

/// Whether a processor with this cadence is due for `run --due`, its last
/// run having started at `last`. A start in the future (the clock was
/// ahead) makes it due: waiting for the clock to catch up would stall it.
pub fn is_due(last: Option<DateTime<Utc>>, cadence: Duration, now: DateTime<Utc>) -> bool {
    let Some(last) = last else { return true };
    // A little slack: cron fires on the minute, a run starts a moment later.
    let slack = chrono::Duration::seconds(5);
    if last > now + slack {
        return true;
    }
    let cadence = chrono::Duration::from_std(cadence).unwrap_or(chrono::Duration::MAX);
    // A cadence beyond the calendar is never due again.
    last.checked_add_signed(cadence)
        .is_some_and(|due_at| now + slack >= due_at)
}

/// How a processor that waits for a conversation to end waits: a changed
/// file is processed once nothing has written to it for `quiet`, or once it
/// has waited `max_wait` since a run first saw it waiting, so that a session
/// active all day is still processed. Until then it is *settling*: neither
/// read nor attempted nor counted as unprocessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settle {
    pub quiet: Duration,
    pub max_wait: Duration,
}

/// Whether a file the prefilter picked waits to settle at `now`;
/// `waiting_since` is `None` when no run has seen it waiting yet (it then
/// starts to wait now). A file dated in the future (a writer's clock ahead
/// of ours) is not quiet: it waits, at most `max_wait`. A wait that began in
/// the future (our clock was ahead) is over: waiting for the clock to catch
/// up would stall the file.
pub fn is_settling(
    waiting_since: Option<DateTime<Utc>>,
    stat: &Stat,
    now: DateTime<Utc>,
    settle: Settle,
) -> bool {
    let now_ns = now.timestamp_nanos_opt().unwrap_or(i64::MAX);
    let quiet_ns = i64::try_from(settle.quiet.as_nanos()).unwrap_or(i64::MAX);
    if stat.mtime_ns.saturating_add(quiet_ns) <= now_ns {
        return false;
    }
    let since = waiting_since.unwrap_or(now);
    let window = chrono::Duration::from_std(RACY_WINDOW).unwrap_or(chrono::Duration::MAX);
    if now.checked_add_signed(window).is_some_and(|n| since > n) {
        return false;
    }
    let max_wait = chrono::Duration::from_std(settle.max_wait).unwrap_or(chrono::Duration::MAX);
    now.signed_duration_since(since) < max_wait
}

/// What the processor last processed of a file, when it was at the current
/// version: how it tells a file that grew from one that was rewritten.
/// `None` when there is no such content, or after a requeue (which asks for
/// the file to be processed as new).
pub fn processed_before(row: Option<&Row>, version: u32) -> Option<(&str, u64)> {
    let row = row.filter(|r| r.status != Status::Pending && r.processor_version == version)?;
    row.file_hash.as_deref().map(|hash| (hash, row.bytes))
}

/// What a read at `now` of a file with this stat records.
pub fn seen(stat: Stat, now: DateTime<Utc>) -> Seen {
    Seen {
        stat,
        racy: is_racy(&stat, now),
        settling: false,
    }
}

/// Whether a file has been quiet for `settle`: its final line, even without
/// a newline, is then finished (see [`crate::session::Lines::final_line`]).
/// An mtime further in the future than the racy window (a writer's clock
/// ahead of ours) counts as settled, or the file would wait for ever.
pub fn settled(stat: &Stat, now: DateTime<Utc>, settle: Duration) -> bool {
    let now_ns = now.timestamp_nanos_opt().unwrap_or(i64::MAX);
    let settle_ns = i64::try_from(settle.as_nanos()).unwrap_or(i64::MAX);
    let window = RACY_WINDOW.as_nanos() as i64;
    stat.mtime_ns.saturating_add(settle_ns) <= now_ns
        || stat.mtime_ns > now_ns.saturating_add(window)
}

/// What a read of `bytes` of the file records: whether it left a final
/// fragment in a file that had not settled, to be read again, once, when
/// it has.
pub fn after_read(seen: Seen, stat: &Stat, bytes: u64, settled: bool) -> Seen {
    Seen {
        settling: bytes < stat.size && !settled,
        ..seen
    }
}

/// The prefilter: must the file be read, judged from its stat and its row?
pub fn must_read(
    row: Option<&Row>,
    stat: &Stat,
    version: u32,
    now: DateTime<Utc>,
    settle: Duration,
) -> bool {
    let Some(row) = row else { return true };
    let changed =
        row.racy || row.stat.as_ref() != Some(stat) || (row.settling && settled(stat, now, settle));
    match row.status {
        Status::Ok => changed || row.processor_version != version,
        Status::Failed => changed || !retry_pending(row.next_attempt_at, now),
        Status::Quarantined => changed,
        // Back after a scan missed it: read, to tell whether it changed.
        Status::Processing | Status::Suspect | Status::Pending | Status::Gone => true,
    }
}

/// What to do about tracked files a scan did not find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vanished {
    /// Mark them gone (nothing, when none vanished).
    MarkGone,
    /// Every tracked file vanished and the tree is empty: a missing mount,
    /// not a mass deletion. Refuse, and mark nothing.
    Refuse,
}

/// `tracked`: rows not yet gone; `vanished`: how many of them the scan did
/// not find; `found`: files the scan found.
pub fn vanished(tracked: usize, vanished: usize, found: usize) -> Vanished {
    if tracked > 0 && vanished == tracked && found == 0 {
        Vanished::Refuse
    } else {
        Vanished::MarkGone
    }
}

/// Whether the file must be processed alone, with nothing else in flight:
/// a run died on it, so a second death must name it and no bystander.
pub fn is_isolated(row: Option<&Row>) -> bool {
    row.is_some_and(|r| matches!(r.status, Status::Processing | Status::Suspect))
}

/// What a session that a dead run left in flight becomes, its journal entry
/// saying this was its `attempts`th attempt and `in_flight` sessions being
/// in flight in all: charged when it was alone, suspect (and not charged)
/// when others could have been the cause.
pub fn recovered(attempts: u32, in_flight: usize) -> (Status, u32) {
    if in_flight <= 1 {
        (Status::Processing, attempts)
    } else {
        (Status::Suspect, uncharged(attempts))
    }
}

/// How a file that must be read is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to compare a hash with: process at once, hashing what the
    /// processor reads (one read for a new file).
    HashWhileProcessing,
    /// Hash first: the hash may make it a free skip, or tell which failures
    /// were on this content.
    HashFirst,
}

pub fn plan(row: Option<&Row>, version: u32, needs_digest_first: bool) -> Plan {
    let nothing_to_compare = row.is_none_or(|r| {
        (r.status == Status::Ok && r.processor_version != version) || is_unseen(Some(r))
    });
    if nothing_to_compare && !needs_digest_first {
        Plan::HashWhileProcessing
    } else {
        Plan::HashFirst
    }
}

/// Whether the file has never been processed nor attempted: no row, or only
/// the note that a run saw it.
pub fn is_unseen(row: Option<&Row>) -> bool {
    row.is_none_or(|r| {
        r.status == Status::Pending
            && r.file_hash.is_none()
            && r.attempt_hash.is_none()
            && r.attempts == 0
            && r.stat.is_none()
    })
}

/// For `state --check`: whether files have waited too long. A file waits
/// from when a run first saw it; waiting longer than `limit` is a problem
/// only when no run processed anything meanwhile (a backfill capped by
/// `--max-sessions` that keeps going is healthy).
pub fn stalled(
    oldest_seen: Option<DateTime<Utc>>,
    limit: Duration,
    processed_since_limit: u64,
    now: DateTime<Utc>,
) -> bool {
    let limit = chrono::Duration::from_std(limit).unwrap_or(chrono::Duration::MAX);
    oldest_seen.is_some_and(|t| now.signed_duration_since(t) > limit) && processed_since_limit == 0
}

/// What to do with a file once its hash is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterHash {
    /// The content is what the row already describes (or waits for its
    /// retry, or is quarantined): refresh the stat, count nothing.
    FreeSkip,
    /// Process it; this is the `attempts`th attempt on this content.
    Attempt { attempts: u32 },
    /// Earlier runs died on this content as often as it may fail:
    /// quarantine it without trying again.
    GiveUp { attempts: u32 },
}

/// Decides after hashing. `stat` is the stat the scan saw.
pub fn after_hash(
    row: Option<&Row>,
    stat: &Stat,
    hash: &str,
    version: u32,
    max_attempts: u32,
    now: DateTime<Utc>,
) -> AfterHash {
    // Failures on this very content, if the row holds any.
    let failing = row.filter(|r| {
        matches!(
            r.status,
            Status::Failed | Status::Quarantined | Status::Processing | Status::Suspect
        ) && match &r.attempt_hash {
            Some(h) => h == hash,
            // The attempt was made while reading: same stat, same content.
            None => r.stat.as_ref() == Some(stat) && !r.racy,
        }
    });
    let free = match (row, failing) {
        (Some(r), None) => {
            matches!(r.status, Status::Ok | Status::Gone)
                && r.processor_version == version
                && r.file_hash.as_deref() == Some(hash)
        }
        (_, Some(r)) => match r.status {
            Status::Quarantined => true,
            Status::Failed => retry_pending(r.next_attempt_at, now),
            _ => false,
        },
        (None, None) => false,
    };
    if free {
        return AfterHash::FreeSkip;
    }
    let previous = failing.map_or(0, |r| r.attempts);
    if previous >= max_attempts {
        AfterHash::GiveUp { attempts: previous }
    } else {
        AfterHash::Attempt {
            attempts: previous.saturating_add(1),
        }
    }
}

/// What a file that exists but cannot be read costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// Already quarantined for being unreadable: leave it.
    Skip,
    /// A failure, the `attempts`th in a row.
    Fail { attempts: u32 },
}

pub fn unreadable(row: Option<&Row>) -> Unreadable {
    match row {
        Some(r) if r.attempt_hash.is_none() && r.status == Status::Quarantined => Unreadable::Skip,
        Some(r) if r.attempt_hash.is_none() && r.status == Status::Failed => Unreadable::Fail {
            attempts: r.attempts.saturating_add(1),
        },
        _ => Unreadable::Fail { attempts: 1 },
    }
}

/// What a failed attempt leaves in the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub quarantined: bool,
    /// When the next run may try again; `None` once quarantined.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// The session's own failure, its `attempts`th on this content.
pub fn after_failure(attempts: u32, max_attempts: u32, now: DateTime<Utc>) -> Retry {
    let quarantined = attempts >= max_attempts;
    let wait = chrono::Duration::from_std(backoff(attempts)).unwrap_or(chrono::Duration::MAX);
    Retry {
        quarantined,
        next_attempt_at: (!quarantined).then(|| now.checked_add_signed(wait).unwrap_or(now)),
    }
}

/// A failure that was not the session's (see
/// [`crate::processor::Interruption`]): the attempt is not charged, and the
/// next run may try at once.
pub fn uncharged(attempts: u32) -> u32 {
    attempts.saturating_sub(1)
}

/// When a session whose processor said "not now" (a transient failure:
/// `EX_TEMPFAIL`, an LLM outage) is tried again: after the first backoff,
/// without an attempt charged, so the runs in between stay quiet.
pub fn after_transient(now: DateTime<Utc>) -> DateTime<Utc> {
    let wait = chrono::Duration::from_std(FIRST_BACKOFF).unwrap_or(chrono::Duration::MAX);
    now.checked_add_signed(wait).unwrap_or(now)
}

/// How long to wait after the `attempts`th failure: a minute, doubling, at
/// most six hours.
pub fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

/// For `state`: whether the processor has not yet dealt with the file's
/// current content (never seen, changed since, an old version, requeued, or
/// a run died on it). Failing files are counted as failing instead, and a
/// racy read alone does not count: the content was most likely processed.
pub fn is_waiting(row: Option<&Row>, stat: &Stat, version: u32) -> bool {
    let Some(row) = row else { return true };
    match row.status {
        Status::Ok => row.stat.as_ref() != Some(stat) || row.processor_version != version,
        Status::Pending | Status::Processing | Status::Suspect | Status::Gone => true,
        Status::Failed | Status::Quarantined => false,
    }
}

#[cfg(test)]
mod tests;
