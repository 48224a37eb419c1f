//! Finding session files and deciding, from `stat` alone, which to read.
//!
//! The scan lists `<data-dir>/<key>/*.jsonl`, one level deep, and never
//! follows a symlink: a symlinked user folder or session file is skipped with
//! a warning, so nothing outside the data dir reaches a processor. Names that
//! are not UTF-8 cannot be state keys and are skipped with a warning too.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::log::Log;
use crate::store::state::{Row, Status};

/// A file whose mtime was this close to the moment it was read may have been
/// appended to in the same clock tick, invisibly to `stat`.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// What `stat` says about a file; any change means it must be read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stat {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
}

impl Stat {
    pub fn of(meta: &std::fs::Metadata) -> Stat {
        Stat {
            size: meta.size(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            inode: meta.ino(),
        }
    }

    /// Whether a read at `now_ns` cannot be trusted to have seen every write
    /// that shares this mtime.
    pub fn is_racy_at(&self, now_ns: i64) -> bool {
        self.mtime_ns + RACY_WINDOW.as_nanos() as i64 >= now_ns
    }
}

/// One session file found by the scan.
#[derive(Debug, Clone)]
pub struct SessionFile {
    /// `<key>/<file>.jsonl`: the state key.
    pub file: String,
    /// The user folder's name.
    pub key: String,
    pub path: PathBuf,
    pub stat: Stat,
    /// Device, to check that the file opened later is the one scanned.
    pub dev: u64,
}

/// Lists every session file, sorted by state key.
pub fn scan(data_dir: &Path, log: &Log) -> Result<Vec<SessionFile>> {
    // Absolute paths: a command handed a path never mistakes it for an option.
    let data_dir = &std::fs::canonicalize(data_dir)
        .with_context(|| format!("cannot open data dir {}", data_dir.display()))?;
    let mut found = Vec::new();
    let entries = std::fs::read_dir(data_dir)
        .with_context(|| format!("cannot list data dir {}", data_dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", data_dir.display()))?;
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue; // removed since listed
        };
        if meta.file_type().is_symlink() {
            log.warn(format_args!("skipping symlinked folder {}", path.display()));
            continue;
        }
        if !meta.is_dir() {
            continue;
        }
        let Some(key) = entry.file_name().to_str().map(str::to_owned) else {
            log.warn(format_args!(
                "skipping folder with a non-UTF-8 name: {path:?}"
            ));
            continue;
        };
        if let Err(e) = scan_user(&path, &key, &mut found, log) {
            log.warn(format_args!("{e:#}"));
        }
    }
    found.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(found)
}

fn scan_user(dir: &Path, key: &str, found: &mut Vec<SessionFile>, log: &Log) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            if name.as_encoded_bytes().ends_with(b".jsonl") {
                log.warn(format_args!(
                    "skipping file with a non-UTF-8 name: {path:?}"
                ));
            }
            continue;
        };
        if !name.ends_with(".jsonl") {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue; // removed since listed
        };
        if meta.file_type().is_symlink() {
            log.warn(format_args!("skipping symlinked file {}", path.display()));
            continue;
        }
        if !meta.is_file() {
            continue;
        }
        found.push(SessionFile {
            file: format!("{key}/{name}"),
            key: key.to_owned(),
            path,
            stat: Stat::of(&meta),
            dev: meta.dev(),
        });
    }
    Ok(())
}

/// The prefilter: whether a file must be read, judged from its stat and its
/// state row alone.
pub fn is_candidate(
    row: Option<&Row>,
    stat: &Stat,
    version: u32,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    let Some(row) = row else { return true };
    let changed = row.racy || row.stat.as_ref() != Some(stat);
    match row.status {
        Status::Ok => changed || row.processor_version != version,
        Status::Failed => changed || row.next_attempt_at.is_none_or(|t| t <= now),
        Status::Quarantined => changed,
        Status::Processing | Status::Pending => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn stat() -> Stat {
        Stat {
            size: 10,
            mtime_ns: 1_000_000_000_000,
            ctime_ns: 1_000_000_000_000,
            inode: 7,
        }
    }

    fn ok_row() -> Row {
        Row {
            status: Status::Ok,
            processor_version: 1,
            file_hash: Some("h".into()),
            stat: Some(stat()),
            racy: false,
            attempts: 0,
            attempt_hash: None,
            next_attempt_at: None,
        }
    }

    #[test]
    fn stable_file_is_not_a_candidate() {
        assert!(!is_candidate(Some(&ok_row()), &stat(), 1, Utc::now()));
    }

    #[test]
    fn any_stat_change_or_version_bump_is_a_candidate() {
        let row = ok_row();
        assert!(is_candidate(None, &stat(), 1, Utc::now()));
        assert!(is_candidate(Some(&row), &stat(), 2, Utc::now()));
        for changed in [
            Stat { size: 11, ..stat() },
            Stat {
                mtime_ns: 1,
                ..stat()
            },
            Stat {
                ctime_ns: 1,
                ..stat()
            },
            Stat { inode: 8, ..stat() },
        ] {
            assert!(is_candidate(Some(&row), &changed, 1, Utc::now()));
        }
    }

    #[test]
    fn racy_read_is_checked_again_even_with_the_same_stat() {
        let row = Row {
            racy: true,
            ..ok_row()
        };
        assert!(is_candidate(Some(&row), &stat(), 1, Utc::now()));
        let s = stat();
        assert!(s.is_racy_at(s.mtime_ns + 1_999_999_999));
        assert!(!s.is_racy_at(s.mtime_ns + 2_000_000_001));
    }

    #[test]
    fn failures_wait_for_their_retry_time_and_quarantine_for_a_change() {
        let now = Utc::now();
        let waiting = Row {
            status: Status::Failed,
            next_attempt_at: Some(now + chrono::Duration::minutes(1)),
            ..ok_row()
        };
        assert!(!is_candidate(Some(&waiting), &stat(), 1, now));
        let due = Row {
            next_attempt_at: Some(now - chrono::Duration::seconds(1)),
            ..waiting.clone()
        };
        assert!(is_candidate(Some(&due), &stat(), 1, now));
        let quarantined = Row {
            status: Status::Quarantined,
            ..ok_row()
        };
        assert!(!is_candidate(Some(&quarantined), &stat(), 2, now));
        assert!(is_candidate(
            Some(&quarantined),
            &Stat { size: 12, ..stat() },
            1,
            now
        ));
    }
}
