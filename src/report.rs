//! What one processor run reports: the `--json` object, the counts recorded
//! in the run history, and the exit code derived from them.

use serde::Serialize;

use crate::exit;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub processor: String,
    /// Session files found under the data dir.
    pub scanned: u64,
    /// Files the stat prefilter picked for a read.
    pub candidates: u64,
    /// Sessions processed successfully.
    pub processed: u64,
    /// Candidates whose content had not changed (or that wait for a retry).
    pub skipped: u64,
    /// Candidates left for the next run by `--max-sessions`, `--max-cost`
    /// or `--time-budget`.
    pub capped: u64,
    /// Changed files left to settle (see [`crate::verdict::Settle`]): not
    /// candidates, and not a problem.
    pub settling: u64,
    /// Failed attempts in this run.
    pub errors: u64,
    /// Sessions quarantined by this run.
    pub quarantined: u64,
    pub items_extracted: u64,
    /// What the run's paid calls cost, for a processor that makes them.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub spend: Option<crate::processor::Spend>,
    pub errors_detail: Vec<SessionError>,
    pub started_at: String,
    pub duration_ms: u64,
    pub exit_code: i32,
    /// Why the processor did not run at all (busy, unavailable, database).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With `--dry-run`: the sessions that would be processed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_process: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionError {
    pub session: String,
    pub error: String,
}

/// The counts of a report at one moment, to undo what a failed commit
/// counted.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    processed: u64,
    skipped: u64,
    capped: u64,
    errors: u64,
    quarantined: u64,
    items_extracted: u64,
    errors_detail: usize,
}

impl Report {
    pub fn mark(&self) -> Mark {
        Mark {
            processed: self.processed,
            skipped: self.skipped,
            capped: self.capped,
            errors: self.errors,
            quarantined: self.quarantined,
            items_extracted: self.items_extracted,
            errors_detail: self.errors_detail.len(),
        }
    }

    /// Forgets what was counted since `mark`: those sessions were not
    /// committed, and count as left for the next run (`lost` of them).
    pub fn rewind(&mut self, mark: Mark, lost: u64) {
        self.processed = mark.processed;
        self.skipped = mark.skipped;
        self.capped = mark.capped.saturating_add(lost);
        self.errors = mark.errors;
        self.quarantined = mark.quarantined;
        self.items_extracted = mark.items_extracted;
        self.errors_detail.truncate(mark.errors_detail);
    }

    /// 1 when any session failed or was quarantined, else 0.
    pub fn outcome_code(&self) -> i32 {
        if self.errors > 0 || self.quarantined > 0 {
            exit::FAILURES
        } else {
            exit::SUCCESS
        }
    }
}
