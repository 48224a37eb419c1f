//! Finding session files and what `stat` says about them (which of them to
//! read is [`crate::verdict::must_read`]'s decision).
//!
//! The scan lists `<data-dir>/<user>/*.jsonl` and the subagent transcripts
//! Claude Code writes beside a session, `<user>/<session>/subagents/agent-*.jsonl`
//! (nothing deeper, nothing else), and never
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
    /// `<user>/<file>.jsonl`, or `<user>/<session>/subagents/agent-<id>.jsonl`
    /// for a subagent's transcript: the file's name in every table.
    pub name: String,
    pub path: PathBuf,
    pub stat: Stat,
    /// Device, to check that the file opened later is the one scanned.
    pub dev: u64,
}

/// What a scan found.
#[derive(Debug, Default, Clone)]
pub struct Scan {
    /// Every session file, sorted by name.
    pub files: Vec<SessionFile>,
    /// User folders that could not be listed, each with why: an error of the
    /// run, never a silent gap.
    pub problems: Vec<(String, String)>,
}

impl Scan {
    /// What a processor sees: subagent transcripts (and the folders of them
    /// that could not be listed) only if it reads them.
    pub fn for_processor(mut self, p: &dyn crate::processor::Processor) -> Scan {
        if !p.reads_subagents() {
            self.files.retain(|f| subagent(&f.name).is_none());
            self.problems
                .retain(|(folder, _)| !folder.ends_with("/subagents/"));
        }
        self
    }
}

/// Lists every session file. Only the data dir itself failing is an error;
/// a user folder that cannot be listed is a [`Scan::problems`] entry. The
/// user folders are walked by a few threads at once: on a tree of a
/// thousand folders the walk is most of an unchanged run.
pub fn scan(data_dir: &Path, printer: &Printer) -> Result<Scan> {
    // Absolute paths: a command handed a path never mistakes it for an option.
    let data_dir = &std::fs::canonicalize(data_dir)
        .with_context(|| format!("cannot open data dir {}", data_dir.display()))?;
    let users = user_folders(data_dir, printer)?;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let walk = || {
        let mut found = Scan::default();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some((user, path)) = users.get(i) else {
                return found;
            };
            if let Err(e) = scan_user(path, user, &mut found.files, &mut found.problems, printer) {
                found.problems.push((format!("{user}/"), format!("{e:#}")));
            }
        }
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, WALKERS);
    let mut found = std::thread::scope(|scope| {
        // A thread that cannot start leaves its share to the others.
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| std::thread::Builder::new().spawn_scoped(scope, walk).ok())
            .collect();
        let mut found = walk();
        for helper in helpers {
            match helper.join() {
                Ok(more) => {
                    found.files.extend(more.files);
                    found.problems.extend(more.problems);
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        found
    });
    // Names are unique: an unstable sort orders them all the same.
    found.files.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    found.problems.sort();
    Ok(found)
}

/// Threads that walk user folders, at most.
const WALKERS: usize = 4;

/// The data dir's user folders (not links, UTF-8 names), with their paths.
fn user_folders(data_dir: &Path, printer: &Printer) -> Result<Vec<(String, PathBuf)>> {
    let entries = std::fs::read_dir(data_dir)
        .with_context(|| format!("cannot list data dir {}", data_dir.display()))?;
    let mut users = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", data_dir.display()))?;
        let path = entry.path();
        let Some(meta) = no_link(&entry, &path, "folder", printer) else {
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
        users.push((user, path));
    }
    Ok(users)
}

fn scan_user(
    dir: &Path,
    user: &str,
    found: &mut Vec<SessionFile>,
    problems: &mut Vec<(String, String)>,
    printer: &Printer,
) -> Result<()> {
    for Listed {
        name,
        path,
        kind,
        entry,
    } in list(dir, printer)?
    {
        if kind.is_dir() {
            if !name.ends_with(".jsonl") {
                scan_subagents(&path, user, &name, found, problems, printer);
            }
            continue;
        }
        if !name.ends_with(".jsonl") {
            continue;
        }
        if let Some(meta) = no_link(&entry, &path, "file", printer).filter(|m| m.is_file()) {
            // One allocation, without the formatting machinery: a walk
            // joins a name per file.
            found.push(SessionFile::new([user, "/", &name].concat(), path, &meta));
        }
    }
    Ok(())
}

/// `<session>/subagents/agent-<id>.jsonl` in a session folder. A folder that
/// is there but cannot be read is a problem of the run, never a silent gap.
fn scan_subagents(
    session_dir: &Path,
    user: &str,
    session: &str,
    found: &mut Vec<SessionFile>,
    problems: &mut Vec<(String, String)>,
    printer: &Printer,
) {
    let folder = session_dir.join("subagents");
    let prefix = format!("{user}/{session}/subagents/");
    match std::fs::symlink_metadata(&folder) {
        Ok(m) if m.file_type().is_symlink() => {
            printer.warn(format_args!(
                "skipping symlinked folder {}",
                folder.display()
            ));
            return;
        }
        Ok(m) if m.is_dir() => {}
        Ok(_) => return,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return;
        }
        Err(e) => {
            problems.push((prefix, format!("cannot read {}: {e}", folder.display())));
            return;
        }
    }
    let entries = match list(&folder, printer) {
        Ok(entries) => entries,
        Err(e) => {
            problems.push((prefix, format!("{e:#}")));
            return;
        }
    };
    for Listed {
        name: file,
        path,
        entry,
        ..
    } in entries
    {
        let name = [prefix.as_str(), &file].concat();
        if subagent(&name).is_none() {
            continue;
        }
        if let Some(meta) = no_link(&entry, &path, "file", printer).filter(|m| m.is_file()) {
            found.push(SessionFile::new(name, path, &meta));
        }
    }
}

/// The user folder a session file's name (`<user>/...`) is in.
pub fn user_of(name: &str) -> &str {
    name.split('/').next().unwrap_or("")
}

/// A subagent transcript's name, `<user>/<session>/subagents/agent-<id>.jsonl`,
/// as its session's file name, `<user>/<session>.jsonl`, and `<id>`.
pub fn subagent(name: &str) -> Option<(String, &str)> {
    let mut parts = name.split('/');
    let (user, session, folder, file) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let id = file.strip_prefix("agent-")?.strip_suffix(".jsonl")?;
    let whole = parts.next().is_none() && folder == "subagents" && !id.is_empty();
    let named = !user.is_empty() && !session.is_empty() && !session.ends_with(".jsonl");
    (whole && named).then(|| (format!("{user}/{session}.jsonl"), id))
}

/// The session a file belongs to: a subagent transcript's
/// (`<user>/<session>/subagents/agent-<id>.jsonl`) is `<user>/<session>.jsonl`.
pub fn session_of(file: &str) -> std::borrow::Cow<'_, str> {
    match subagent(file) {
        Some((session, _)) => session.into(),
        None => file.into(),
    }
}

/// A folder's entries with UTF-8 names and their type as listed (a link is
/// a link, never followed).
fn list(dir: &Path, printer: &Printer) -> Result<Vec<Listed>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let path = entry.path();
        // The name as listed, moved rather than copied once more: an
        // unchanged run takes one per file.
        let name = match entry.file_name().into_string() {
            Ok(name) => name,
            Err(name) => {
                if name.as_encoded_bytes().ends_with(b".jsonl") {
                    printer.warn(format_args!(
                        "skipping file with a non-UTF-8 name: {path:?}"
                    ));
                }
                continue;
            }
        };
        // Removed since the listing: not there.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink() && name.ends_with(".jsonl") {
            printer.warn(format_args!("skipping symlinked file {}", path.display()));
            continue;
        }
        out.push(Listed {
            name,
            path,
            kind,
            entry,
        });
    }
    Ok(out)
}

/// A folder entry as listed.
struct Listed {
    name: String,
    path: PathBuf,
    kind: std::fs::FileType,
    entry: std::fs::DirEntry,
}

impl SessionFile {
    /// The user folder's name.
    pub fn user(&self) -> &str {
        user_of(&self.name)
    }

    fn new(name: String, path: PathBuf, meta: &std::fs::Metadata) -> SessionFile {
        SessionFile {
            name,
            path,
            stat: Stat::of(meta),
            dev: meta.dev(),
        }
    }
}

/// The metadata of an entry just listed, unless it is a symlink (skipped
/// with a warning naming it a `what`, at `path`) or was removed since. Read
/// relative to the folder listed (`fstatat`), never following a link: no
/// walk of the whole path per file.
fn no_link(
    entry: &std::fs::DirEntry,
    path: &Path,
    what: &str,
    printer: &Printer,
) -> Option<std::fs::Metadata> {
    let meta = entry.metadata().ok()?;
    if meta.file_type().is_symlink() {
        printer.warn(format_args!("skipping symlinked {what} {}", path.display()));
        return None;
    }
    Some(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printer::Level;

    #[test]
    fn a_found_file_is_named_and_owned_by_the_user_folder_it_is_in() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for file in [
            "alice/one.jsonl",
            "alice/one/subagents/agent-7.jsonl",
            "bob.smith/two.jsonl",
            "bob.smith/two/subagents/agent-a-b.jsonl",
        ] {
            let path = root.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "{}\n").unwrap();
        }
        let found = scan(root, &Printer::new(Level::Quiet)).unwrap();
        let names: Vec<(&str, &str)> = found
            .files
            .iter()
            .map(|f| (f.name.as_str(), f.user()))
            .collect();
        assert_eq!(
            names,
            [
                ("alice/one.jsonl", "alice"),
                ("alice/one/subagents/agent-7.jsonl", "alice"),
                ("bob.smith/two.jsonl", "bob.smith"),
                ("bob.smith/two/subagents/agent-a-b.jsonl", "bob.smith"),
            ]
        );
        let canonical = std::fs::canonicalize(root).unwrap();
        for f in &found.files {
            assert_eq!(f.path, canonical.join(&f.name));
        }
    }
}
