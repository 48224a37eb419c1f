//! Files that move: tracked files a scan no longer finds are marked `gone`
//! (their outputs stay), and a new file that holds a gone file's processed
//! content, grown or not, under another name or in another user folder,
//! replaces it in the same transaction, so that the tables are those of a
//! fresh run over the tree as it now is: counted once, under the new name.

use std::collections::HashMap;

use anyhow::Result;

use crate::exit;
use crate::scan::SessionFile;
use crate::session::Digest;
use crate::state_rows::Rows;
use crate::store::sql::Db;
use crate::store::state;
use crate::verdict::{self, Row, Status, Vanished};

/// Marks the tracked files the scan did not find as gone, in `rows` and (in
/// a commit) in the database; refuses when the whole tree vanished. Files
/// in folders the scan could not list (`unlisted`, `"<user>/"`) are not
/// gone: they could not be looked for.
pub fn mark_vanished(
    db: &dyn Db,
    processor: &str,
    files: &[SessionFile],
    unlisted: &[&str],
    rows: &mut Rows,
    commit: bool,
) -> Result<()> {
    // Which rows a file was found for, by their place in name order.
    let mut found = vec![false; rows.len()];
    let mut cursor = rows.cursor();
    for f in files {
        if let Some(seen) = cursor.index(&f.name).and_then(|i| found.get_mut(i)) {
            *seen = true;
        }
    }
    let unlisted = |name: &str| unlisted.iter().any(|folder| name.starts_with(folder));
    let tracked: Vec<(&String, bool)> = rows
        .iter()
        .zip(found)
        .filter(|((_, r), _)| r.status != Status::Gone)
        .map(|((name, _), found)| (name, found))
        .collect();
    let vanished: Vec<String> = tracked
        .iter()
        .filter(|(name, found)| !found && !unlisted(name))
        .map(|(name, _)| (*name).clone())
        .collect();
    if verdict::vanished(tracked.len(), vanished.len(), files.len()) == Vanished::Refuse {
        return Err(exit::fail(
            exit::CONFIG,
            format!(
                "{processor}: none of the {} tracked session files is in the data dir: \
                 is it mounted? Nothing was marked gone",
                tracked.len()
            ),
        ));
    }
    if vanished.is_empty() {
        return Ok(());
    }
    if commit {
        let tx = db.transaction()?;
        let names: Vec<&str> = vanished.iter().map(String::as_str).collect();
        state::mark_gone(&*tx, processor, &names)?;
        tx.commit()?;
    }
    for name in &vanished {
        if let Some(row) = rows.get_mut(name) {
            row.status = Status::Gone;
        }
    }
    Ok(())
}

/// Gone files by the content they were last processed with.
#[derive(Debug, Default)]
pub struct Moves {
    by_content: HashMap<(u64, String), Vec<String>>,
}

impl Moves {
    pub fn new<'r>(rows: impl IntoIterator<Item = (&'r String, &'r Row)>) -> Moves {
        let mut by_content: HashMap<(u64, String), Vec<String>> = HashMap::new();
        for (name, row) in rows {
            // An empty prefix is anyone's content: never a match.
            if let (Status::Gone, Some(hash), 1..) = (row.status, &row.file_hash, row.bytes) {
                by_content
                    .entry((row.bytes, hash.clone()))
                    .or_default()
                    .push(name.clone());
            }
        }
        Moves { by_content }
    }

    /// The prefix lengths a new file's hash is worth noting at.
    pub fn lengths(&self) -> Vec<u64> {
        self.by_content.keys().map(|(bytes, _)| *bytes).collect()
    }

    /// The gone files whose processed content is `digest`; each is handed
    /// out once.
    pub fn take(&mut self, digest: &Digest) -> Vec<String> {
        self.by_content
            .remove(&(digest.bytes, digest.hash.clone()))
            .unwrap_or_default()
    }
}
