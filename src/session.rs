//! Reading a session file: its complete lines, handed to a processor once,
//! and the MD5 of exactly the lines handed over.
//!
//! A trailing fragment without a newline is a line still being written: it is
//! neither hashed nor handed out, so a processor never sees half a line and
//! the hash only changes once the line is whole. Memory stays bounded by one
//! line whatever the file size. Files are opened without following symlinks
//! and checked to be the very file the scan saw, so a file swapped for a link
//! between the scan and the read is never opened.
//!
//! The digest a run records is [`Session::handed_over`]: the hash of the
//! lines the processor was given, computed as they were given. A processor
//! that stops reading early is recorded as having processed that prefix,
//! never the bytes it did not see. A file over 1 MiB is hashed on a thread
//! of its own while its lines are handed out (see [`hasher`]); a smaller
//! one is read into one buffer whole, and its hash can be left to a batch
//! of such files hashed side by side (see [`batch`]).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use md5::{Digest as _, Md5};

pub use batch::{Handed, hash_all};
use hasher::Hasher;

use crate::processor::Spend;
use crate::scan::SessionFile;

/// The hash of a file's complete-line prefix, and that prefix's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub hash: String,
    pub bytes: u64,
}

/// Files larger than this stream through a buffer [`CHUNK`] long and are
/// hashed on a thread of their own (see [`hasher`]); smaller ones are read
/// into one buffer whole, and hashed in one piece.
const HASH_ON_A_THREAD_OVER: u64 = 1 << 20;
const CHUNK: usize = 256 * 1024;
/// The smallest first read: most session files are far smaller than
/// [`CHUNK`], and a buffer of their size costs less to allocate and zero.
/// A file is read into a buffer one byte longer than its size, the room in
/// which its end is seen.
const FIRST_CHUNK: usize = 4096;

/// Lines longer than this are not handed to the processor (they are still
/// hashed, and counted in [`Lines::oversized`]): memory stays bounded by it
/// whatever a file holds.
pub const MAX_LINE: usize = 8 * 1024 * 1024;

/// The file the scan saw is no longer at its name: removed, renamed, or
/// replaced (by another file or a symlink). Not the session's failure: the
/// next scan sees what is there.
#[derive(Debug)]
pub struct Gone;

impl std::fmt::Display for Gone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the file was removed or replaced after the scan")
    }
}

impl std::error::Error for Gone {}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, Gone)
}

/// Whether an error says the file the scan saw is gone.
pub fn is_gone(error: &anyhow::Error) -> bool {
    error.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<Gone>())
            || e.is::<Gone>()
    })
}

/// Opens a file for reading without following a symlink, and checks it is
/// the file `(dev, inode)` the scan saw; [`Gone`] if it is not there.
pub fn open(path: &Path, dev: u64, inode: u64) -> io::Result<File> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match (e.kind(), e.raw_os_error()) {
            (io::ErrorKind::NotFound, _) => gone(),
            // A symlink now stands where the file was.
            (_, Some(libc::ELOOP)) => gone(),
            _ => e,
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.dev() != dev || meta.ino() != inode {
        return Err(gone());
    }
    Ok(file)
}

/// Hashes the complete-line prefix of `file` in one streaming pass; with
/// `settled`, a final line without a newline counts when it is a whole
/// JSON value (see [`Lines::final_line`]).
pub fn digest(file: File, settled: Option<u64>) -> io::Result<Digest> {
    let mut lines = Lines::new(file, None);
    lines.final_line(settled);
    while lines.next_line()?.is_some() {}
    Ok(lines.finish())
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    write_hex(bytes, &mut out);
    out
}

/// Appends [`hex`] of `bytes` to `out`.
pub fn write_hex(bytes: &[u8], out: &mut String) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
}

/// One session file, as a processor sees it.
pub struct Session<'a> {
    /// `<user>/<file>.jsonl`.
    pub name: &'a str,
    /// The user folder's name.
    pub user: &'a str,
    pub path: &'a Path,
    /// MD5 and length of the complete-line prefix, when the file was hashed
    /// before processing (always, for processors that
    /// [`crate::processor::Processor::needs_digest_first`]). [`Session::lines`]
    /// then reads no further than it.
    pub digest: Option<&'a Digest>,
    dev: u64,
    inode: u64,
    /// Prefix lengths whose hash to note as the lines pass (see
    /// [`Session::probe`]).
    probes: Vec<u64>,
    /// The file has been quiet long enough for a final line without a
    /// newline to count, and its size then (see [`Lines::final_line`]).
    settled: Option<u64>,
    /// The content this processor last processed, at its current version.
    previous: Option<Digest>,
    /// What the processor's paid calls on this session cost.
    spent: Spend,
    lines: Option<Lines>,
}

impl<'a> Session<'a> {
    pub fn new(file: &'a SessionFile, digest: Option<&'a Digest>) -> Session<'a> {
        Session {
            name: &file.name,
            user: file.user(),
            path: &file.path,
            digest,
            dev: file.dev,
            inode: file.stat.inode,
            probes: Vec::new(),
            settled: None,
            previous: None,
            spent: Spend::default(),
            lines: None,
        }
    }

    /// Tells the processor what it last processed of this file (at its
    /// current version), so that it can tell growth from a rewrite: the file
    /// grew when the lines up to `previous.bytes` still hash to
    /// `previous.hash` (probe that length; see [`Lines::noted`]).
    pub fn processed_before(&mut self, previous: Option<Digest>) {
        self.previous = previous;
    }

    pub fn previous(&self) -> Option<&Digest> {
        self.previous.as_ref()
    }

    /// Records what a paid call made for this session cost: the run counts
    /// it whether the session then succeeds or fails.
    pub fn charge(&mut self, spend: &Spend) {
        self.spent.add(spend);
    }

    pub fn spent(&self) -> Spend {
        self.spent
    }

    /// The file has been quiet for the settle time: a final line without a
    /// newline that is a whole JSON value is a line. Only before the lines
    /// are first read.
    pub fn settled(&mut self, settled: Option<u64>) {
        self.settled = settled;
    }

    /// Also note the hash of the lines handed over up to each of these
    /// lengths (those that fall on a line's end): how a file that holds an
    /// earlier file's content, grown or not, is recognised under its new
    /// name. Adds to the lengths already asked for; only before the lines
    /// are first read.
    pub fn probe(&mut self, lengths: Vec<u64>) {
        self.probes.extend(lengths);
        self.probes.sort_unstable();
        self.probes.dedup();
    }

    /// The file itself, opened again and checked to be the one the scan saw:
    /// what an external command is handed, instead of a name it would
    /// resolve again.
    pub fn verified_file(&self) -> io::Result<File> {
        open(self.path, self.dev, self.inode)
    }

    /// The complete lines to process, opened on first call; later calls go
    /// on where the last one stopped.
    pub fn lines(&mut self) -> io::Result<&mut Lines> {
        match &mut self.lines {
            Some(lines) => Ok(lines),
            slot => {
                let file = open(self.path, self.dev, self.inode)?;
                let mut lines = Lines::new(file, self.digest.map(|d| d.bytes));
                lines.probes = std::mem::take(&mut self.probes).into();
                lines.final_line(self.settled);
                Ok(slot.insert(lines))
            }
        }
    }

    /// What the processor was handed: the lines it read, or, when it read
    /// none itself, the prefix it was given (an external command is handed
    /// the whole prefix). A processor that read nothing and was given
    /// nothing was handed the empty prefix.
    pub fn handed_over(self) -> Handover {
        self.hand_over().hashed()
    }

    /// [`Session::handed_over`], its hash left to [`hash_all`] when the
    /// lines were read whole into one buffer and none of them hashed yet.
    pub fn hand_over(self) -> Handed {
        match (self.lines, self.digest) {
            (Some(mut lines), _) => {
                let whole = lines.done;
                let prefixes = std::mem::take(&mut lines.prefixes);
                Handed::new(lines.finish_or_hold(), whole, prefixes)
            }
            (None, Some(digest)) => Handed::new(Ok(digest.clone()), true, Vec::new()),
            (None, None) => Handed::new(Ok(Lines::empty_digest()), false, Vec::new()),
        }
    }
}

/// The digest of what a processor was handed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    pub digest: Digest,
    /// It was the whole complete-line prefix of the file (as far as it was
    /// read), so the digest identifies the file's content.
    pub whole: bool,
    /// The digests of the shorter prefixes asked for by [`Session::probe`].
    pub prefixes: Vec<Digest>,
}

/// The complete lines of a file, streamed, hashed as they are handed out.
///
/// Lines are slices of one reused buffer: no copy, no allocation per line.
/// The hash covers exactly the lines handed out (and oversized lines skipped
/// on the way): bytes read ahead into the buffer are hashed only once the
/// line they belong to is complete and passed.
pub struct Lines {
    file: io::Take<File>,
    buf: Vec<u8>,
    /// The size of the first read: what the file holds, within bounds.
    first: usize,
    /// The next line starts here...
    start: usize,
    /// ...and has no newline before here...
    scan: usize,
    /// ...and the data read ends here.
    end: usize,
    eof: bool,
    /// The last line has been handed out.
    done: bool,
    /// The size of a settled file, whose final fragment is a line when it
    /// is a whole JSON value ending exactly there...
    final_line: Option<u64>,
    /// ...and the length of the one passed.
    last_len: usize,
    /// MD5 of every passed line before `buf[hashed]`...
    md5: Hasher,
    hashed: usize,
    /// ...which has been given some bytes (if not, the lines passed are all
    /// of `buf[..start]`, none of them hashed yet)...
    fed: bool,
    /// ...and how many bytes those passed lines hold.
    consumed: u64,
    /// Inside a line longer than [`MAX_LINE`], whose start was dropped from
    /// the buffer: the hash including the dropped part, and its length.
    skipping: Option<(Md5, u64)>,
    /// Large enough for hashing on a thread of its own to pay.
    large: bool,
    oversized: u64,
    /// Prefix lengths still to note the hash at, shortest first...
    probes: std::collections::VecDeque<u64>,
    /// ...and the digests noted.
    prefixes: Vec<Digest>,
}

impl Lines {
    /// Reads `file` from its start, no further than `limit` bytes.
    pub fn new(file: File, limit: Option<u64>) -> Lines {
        let size = file.metadata().map_or(u64::MAX, |m| m.len());
        let expected = size.min(limit.unwrap_or(u64::MAX));
        let large = expected > HASH_ON_A_THREAD_OVER;
        let first = match usize::try_from(expected.saturating_add(1)) {
            Ok(whole) if !large => whole.max(FIRST_CHUNK),
            _ => CHUNK,
        };
        Lines {
            file: file.take(limit.unwrap_or(u64::MAX)),
            buf: Vec::new(),
            first,
            large,
            start: 0,
            scan: 0,
            end: 0,
            eof: false,
            done: false,
            final_line: None,
            last_len: 0,
            md5: Hasher::new(),
            hashed: 0,
            fed: false,
            consumed: 0,
            skipping: None,
            oversized: 0,
            probes: std::collections::VecDeque::new(),
            prefixes: Vec::new(),
        }
    }

    /// The next complete line, without its newline; `None` after the last.
    /// A trailing fragment without a newline is never returned.
    pub fn next_line(&mut self) -> io::Result<Option<&[u8]>> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.scan..self.end]) {
                let (from, to) = (self.start, self.scan + i);
                self.start = to + 1;
                self.scan = self.start;
                let mut len = (to + 1 - from) as u64;
                let skipped = match self.skipping.take() {
                    Some((md5, dropped)) => {
                        // The hash already holds the dropped part; the rest
                        // of the line is hashed from the buffer, as usual.
                        self.md5 = md5.into();
                        if self.large {
                            self.md5.off_thread();
                        }
                        len += dropped;
                        true
                    }
                    None => to - from > MAX_LINE,
                };
                self.consumed += len;
                self.note_probes();
                if skipped {
                    self.oversized += 1;
                    continue;
                }
                return Ok(Some(&self.buf[from..to]));
            }
            self.scan = self.end;
            if self.eof {
                if self.take_final_line() {
                    let from = self.start - self.last_len;
                    return Ok(Some(&self.buf[from..self.start]));
                }
                self.done = true;
                return Ok(None);
            }
            self.fill()?;
        }
    }

    /// Reads the next chunk behind the pending partial line, into the room
    /// left in the buffer or, when there is none, made by hashing and
    /// dropping the lines passed; stops when a signal asks the run to end.
    fn fill(&mut self) -> io::Result<()> {
        if let Some(signal) = crate::signals::received() {
            return Err(io::Error::other(format!(
                "stopped: sessionpipe received {}",
                crate::signals::name(signal)
            )));
        }
        if self.end == self.buf.len() {
            self.make_room();
        }
        let n = loop {
            match self.file.read(&mut self.buf[self.end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        self.end += n;
        self.eof = n == 0;
        Ok(())
    }

    /// Hashes the lines passed and drops them from the buffer (and the
    /// pending line too, when it is too long to keep), then makes a chunk's
    /// room behind what is left.
    fn make_room(&mut self) {
        self.fed |= self.hashed < self.start;
        self.md5.update(&self.buf[self.hashed..self.start]);
        self.hashed = self.start;
        if self.end - self.start > MAX_LINE {
            // Too long to keep: hash what is buffered on the side (the line
            // may never end) and drop it.
            let (mut md5, dropped) = self
                .skipping
                .take()
                .unwrap_or_else(|| (self.md5.here().clone(), 0));
            md5.update(&self.buf[self.start..self.end]);
            self.skipping = Some((md5, dropped + (self.end - self.start) as u64));
            self.fed = true;
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        self.scan = self.end;
        self.hashed = 0;
        let chunk = if self.buf.is_empty() {
            if self.large {
                self.md5.off_thread();
            }
            self.first
        } else {
            CHUNK
        };
        if self.buf.len() < self.end + chunk {
            self.buf.resize(self.end + chunk, 0);
        }
    }

    /// In a file that has been quiet for its settle time, the final line
    /// may lack its newline for good (an editor, an upload that trimmed
    /// it): counted as a line when it is a whole JSON value that ends
    /// exactly at `size`, the size the file had when judged settled (so a
    /// line appended since is never taken for it). In a live file it is a
    /// line still being written, and never counted.
    pub fn final_line(&mut self, size: Option<u64>) {
        self.final_line = size;
    }

    /// Passes the final fragment as a line, if it is one; `last_len` is then
    /// its length.
    fn take_final_line(&mut self) -> bool {
        let Some(size) = self.final_line.take() else {
            return false;
        };
        let len = (self.end - self.start) as u64;
        if self.skipping.is_some() || len == 0 || self.consumed.saturating_add(len) != size {
            return false;
        }
        let fragment = &self.buf[self.start..self.end];
        if serde_json::from_slice::<serde::de::IgnoredAny>(fragment).is_err() {
            return false;
        }
        self.last_len = self.end - self.start;
        self.start = self.end;
        self.consumed += self.last_len as u64;
        self.note_probes();
        true
    }

    /// Notes the digest of the lines passed when their length is a probe. A
    /// probe may also fall just before the newline of the line just passed:
    /// a final line once counted without one, since completed.
    fn note_probes(&mut self) {
        let before_newline = self
            .consumed
            .checked_sub(1)
            .filter(|_| self.start > self.hashed && self.buf[self.start - 1] == b'\n');
        while let Some(p) = self.probes.front().copied() {
            if p == self.consumed {
                self.note(self.start, p);
            } else if Some(p) == before_newline {
                self.note(self.start - 1, p);
            } else if p > self.consumed {
                break;
            }
            self.probes.pop_front();
        }
    }

    /// Notes the digest of the lines passed up to `buf[end]`, `bytes` long.
    fn note(&mut self, end: usize, bytes: u64) {
        let mut md5 = self.md5.here().clone();
        if self.large {
            self.md5.off_thread();
        }
        md5.update(&self.buf[self.hashed..end]);
        self.prefixes.push(Digest {
            hash: hex(&md5.finalize()),
            bytes,
        });
    }

    /// How many bytes the lines passed so far hold: where the next line
    /// starts, unless an oversized line is skipped first.
    pub fn position(&self) -> u64 {
        self.consumed
    }

    /// The digests of the probed prefixes passed so far.
    pub fn noted(&self) -> &[Digest] {
        &self.prefixes
    }

    /// Lines skipped for being longer than [`MAX_LINE`].
    pub fn oversized(&self) -> u64 {
        self.oversized
    }

    /// The digest of the lines passed so far or, when none of them has been
    /// hashed yet (a file read whole into one buffer), those lines, for a
    /// batch to hash (see [`batch`]).
    fn finish_or_hold(mut self) -> Result<Digest, Vec<u8>> {
        if self.fed || self.large {
            return Ok(self.finish());
        }
        debug_assert_eq!(self.consumed, self.start as u64);
        self.buf.truncate(self.start);
        Err(std::mem::take(&mut self.buf))
    }

    /// The digest of the lines passed so far.
    pub fn finish(self) -> Digest {
        Digest {
            hash: hex(&self.md5.finish(&self.buf[self.hashed..self.start])),
            bytes: self.consumed,
        }
    }

    fn empty_digest() -> Digest {
        Digest {
            hash: hex(&Md5::new().finalize()),
            bytes: 0,
        }
    }
}

mod batch;
mod hasher;
#[cfg(test)]
mod tests;
