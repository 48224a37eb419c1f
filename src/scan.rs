//! Finding session files and what `stat` says about them (which of them to
//! read is [`crate::verdict::must_read`]'s decision).
//!
//! The scan lists `<data-dir>/<user>/*.jsonl`, one level deep, and never
//! follows a symlink: a symlinked user folder or session file is skipped with
//! a warning, so nothing outside the data dir reaches a processor. Names that
//! are not UTF-8 cannot be session names and are skipped with a warning too.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::printer::Printer;

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
            mtime_ns: nanos(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: nanos(meta.ctime(), meta.ctime_nsec()),
            inode: meta.ino(),
        }
    }
}

/// Seconds and nanoseconds as one count, saturating for times no clock shows.
fn nanos(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// One session file found by the scan.
#[derive(Debug, Clone)]
pub struct SessionFile {
    /// `<user>/<file>.jsonl`: the session's name in every table.
    pub name: String,
    /// The user folder's name.
    pub user: String,
    pub path: PathBuf,
    pub stat: Stat,
    /// Device, to check that the file opened later is the one scanned.
    pub dev: u64,
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Every session file, sorted by name.
    pub files: Vec<SessionFile>,
    /// User folders that could not be listed, each with why: an error of the
    /// run, never a silent gap.
    pub problems: Vec<(String, String)>,
}

/// Lists every session file. Only the data dir itself failing is an error;
/// a user folder that cannot be listed is a [`Scan::problems`] entry.
pub fn scan(data_dir: &Path, printer: &Printer) -> Result<Scan> {
    // Absolute paths: a command handed a path never mistakes it for an option.
    let data_dir = &std::fs::canonicalize(data_dir)
        .with_context(|| format!("cannot open data dir {}", data_dir.display()))?;
    let mut found = Scan::default();
    let entries = std::fs::read_dir(data_dir)
        .with_context(|| format!("cannot list data dir {}", data_dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", data_dir.display()))?;
        let path = entry.path();
        let Some(meta) = no_link(&path, "folder", printer) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let Some(user) = entry.file_name().to_str().map(str::to_owned) else {
            printer.warn(format_args!(
                "skipping folder with a non-UTF-8 name: {path:?}"
            ));
            continue;
        };
        if let Err(e) = scan_user(&path, &user, &mut found.files, printer) {
            found.problems.push((format!("{user}/"), format!("{e:#}")));
        }
    }
    found.files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

fn scan_user(
    dir: &Path,
    user: &str,
    found: &mut Vec<SessionFile>,
    printer: &Printer,
) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            if name.as_encoded_bytes().ends_with(b".jsonl") {
                printer.warn(format_args!(
                    "skipping file with a non-UTF-8 name: {path:?}"
                ));
            }
            continue;
        };
        if !name.ends_with(".jsonl") {
            continue;
        }
        let Some(meta) = no_link(&path, "file", printer) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        found.push(SessionFile {
            name: format!("{user}/{name}"),
            user: user.to_owned(),
            path,
            stat: Stat::of(&meta),
            dev: meta.dev(),
        });
    }
    Ok(())
}

/// The metadata of an entry just listed, unless it is a symlink (skipped
/// with a warning naming it a `what`) or was removed since.
fn no_link(path: &Path, what: &str, printer: &Printer) -> Option<std::fs::Metadata> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if meta.file_type().is_symlink() {
        printer.warn(format_args!("skipping symlinked {what} {}", path.display()));
        return None;
    }
    Some(meta)
}
