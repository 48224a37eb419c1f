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
//! never the bytes it did not see.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use md5::{Digest as _, Md5};

use crate::scan::SessionFile;

/// The hash of a file's complete-line prefix, and that prefix's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub hash: String,
    pub bytes: u64,
}

const CHUNK: usize = 256 * 1024;

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

/// Hashes the complete-line prefix of `file` in one streaming pass.
pub fn digest(file: File) -> io::Result<Digest> {
    let mut lines = Lines::new(file, None);
    while lines.next_line()?.is_some() {}
    Ok(lines.finish())
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
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
    lines: Option<Lines>,
}

impl<'a> Session<'a> {
    pub fn new(file: &'a SessionFile, digest: Option<&'a Digest>) -> Session<'a> {
        Session {
            name: &file.name,
            user: &file.user,
            path: &file.path,
            digest,
            dev: file.dev,
            inode: file.stat.inode,
            probes: Vec::new(),
            lines: None,
        }
    }

    /// Also note the hash of the lines handed over up to each of these
    /// lengths (those that fall on a line's end): how a file that holds an
    /// earlier file's content, grown or not, is recognised under its new
    /// name. Only before the lines are first read.
    pub fn probe(&mut self, mut lengths: Vec<u64>) {
        lengths.sort_unstable();
        lengths.dedup();
        self.probes = lengths;
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
                Ok(slot.insert(lines))
            }
        }
    }

    /// What the processor was handed: the lines it read, or, when it read
    /// none itself, the prefix it was given (an external command is handed
    /// the whole prefix). A processor that read nothing and was given
    /// nothing was handed the empty prefix.
    pub fn handed_over(self) -> Handover {
        match (self.lines, self.digest) {
            (Some(mut lines), _) => {
                let whole = lines.done;
                let prefixes = std::mem::take(&mut lines.prefixes);
                Handover {
                    digest: lines.finish(),
                    whole,
                    prefixes,
                }
            }
            (None, Some(digest)) => Handover {
                digest: digest.clone(),
                whole: true,
                prefixes: Vec::new(),
            },
            (None, None) => Handover {
                digest: Lines::empty_digest(),
                whole: false,
                prefixes: Vec::new(),
            },
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
    /// The next line starts here...
    start: usize,
    /// ...and has no newline before here...
    scan: usize,
    /// ...and the data read ends here.
    end: usize,
    eof: bool,
    /// The last line has been handed out.
    done: bool,
    /// MD5 of every passed line before `buf[hashed]`...
    md5: Md5,
    hashed: usize,
    /// ...and how many bytes those passed lines hold.
    consumed: u64,
    /// Inside a line longer than [`MAX_LINE`], whose start was dropped from
    /// the buffer: the hash including the dropped part, and its length.
    skipping: Option<(Md5, u64)>,
    oversized: u64,
    /// Prefix lengths still to note the hash at, shortest first...
    probes: std::collections::VecDeque<u64>,
    /// ...and the digests noted.
    prefixes: Vec<Digest>,
}

impl Lines {
    /// Reads `file` from its start, no further than `limit` bytes.
    pub fn new(file: File, limit: Option<u64>) -> Lines {
        Lines {
            file: file.take(limit.unwrap_or(u64::MAX)),
            buf: Vec::new(),
            start: 0,
            scan: 0,
            end: 0,
            eof: false,
            done: false,
            md5: Md5::new(),
            hashed: 0,
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
                        self.md5 = md5;
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
                self.done = true;
                return Ok(None);
            }
            self.fill()?;
        }
    }

    /// Reads the next chunk behind the pending partial line; stops when a
    /// signal asks the run to end.
    fn fill(&mut self) -> io::Result<()> {
        if let Some(signal) = crate::signals::received() {
            return Err(io::Error::other(format!(
                "stopped: sessionpipe received {}",
                crate::signals::name(signal)
            )));
        }
        self.md5.update(&self.buf[self.hashed..self.start]);
        self.hashed = self.start;
        if self.end - self.start > MAX_LINE {
            // Too long to keep: hash what is buffered on the side (the line
            // may never end) and drop it.
            let (mut md5, dropped) = self
                .skipping
                .take()
                .unwrap_or_else(|| (self.md5.clone(), 0));
            md5.update(&self.buf[self.start..self.end]);
            self.skipping = Some((md5, dropped + (self.end - self.start) as u64));
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        self.scan = self.end;
        self.hashed = 0;
        if self.buf.len() < self.end + CHUNK {
            self.buf.resize(self.end + CHUNK, 0);
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

    /// Notes the digest of the lines passed when their length is a probe.
    fn note_probes(&mut self) {
        while self.probes.front().is_some_and(|&p| p < self.consumed) {
            self.probes.pop_front();
        }
        if self.probes.front() == Some(&self.consumed) {
            self.probes.pop_front();
            let mut md5 = self.md5.clone();
            md5.update(&self.buf[self.hashed..self.start]);
            self.prefixes.push(Digest {
                hash: hex(&md5.finalize()),
                bytes: self.consumed,
            });
        }
    }

    /// Lines skipped for being longer than [`MAX_LINE`].
    pub fn oversized(&self) -> u64 {
        self.oversized
    }

    /// The digest of the lines passed so far.
    pub fn finish(mut self) -> Digest {
        self.md5.update(&self.buf[self.hashed..self.start]);
        Digest {
            hash: hex(&self.md5.finalize()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn digest_of(content: &[u8]) -> Digest {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(content).unwrap();
        let mut f2 = f.try_clone().unwrap();
        std::io::Seek::rewind(&mut f2).unwrap();
        digest(f2).unwrap()
    }

    fn md5_hex(content: &[u8]) -> String {
        hex(&Md5::digest(content))
    }

    #[test]
    fn hashes_only_complete_lines() {
        let d = digest_of(b"a\nbb\nfragment");
        assert_eq!(d.bytes, 5);
        assert_eq!(d.hash, md5_hex(b"a\nbb\n"));
        assert_eq!(digest_of(b"a\nbb\n"), d);
    }

    #[test]
    fn fragment_only_and_empty_hash_as_empty() {
        assert_eq!(digest_of(b"no newline"), digest_of(b""));
        assert_eq!(digest_of(b"").bytes, 0);
    }

    #[test]
    fn lines_across_chunk_boundaries() {
        let mut content = Vec::new();
        for i in 0..50_000 {
            content.extend_from_slice(format!("line {i} {}\n", "x".repeat(i % 97)).as_bytes());
        }
        content.extend_from_slice(b"tail without newline");
        let d = digest_of(&content);
        let complete = &content[..content.len() - 20];
        assert_eq!(d.bytes as usize, complete.len());
        assert_eq!(d.hash, md5_hex(complete));

        for limit in [Some(d.bytes), None] {
            let mut lines = Lines::new(file_with(&content), limit);
            let mut n = 0;
            while let Some(line) = lines.next_line().unwrap() {
                assert!(line.starts_with(format!("line {n} ").as_bytes()));
                n += 1;
            }
            assert_eq!(n, 50_000);
            assert_eq!(lines.finish(), d, "the same digest, read once");
        }
    }

    #[test]
    fn stopping_early_hashes_exactly_the_lines_handed_out() {
        let mut content = Vec::new();
        for i in 0..20_000 {
            content.extend_from_slice(format!("{i} {}\n", "y".repeat(i % 50)).as_bytes());
        }
        for stop in [0, 1, 7, 5_000, 19_999] {
            let mut lines = Lines::new(file_with(&content), None);
            let mut seen = Vec::new();
            for _ in 0..stop {
                let line = lines.next_line().unwrap().unwrap();
                seen.extend_from_slice(line);
                seen.push(b'\n');
            }
            let d = lines.finish();
            assert_eq!(d.bytes as usize, seen.len(), "after {stop} lines");
            assert_eq!(d.hash, md5_hex(&seen), "after {stop} lines");
        }
    }

    fn file_with(content: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(content).unwrap();
        std::io::Seek::rewind(&mut f).unwrap();
        f
    }

    #[test]
    fn known_digest_bounds_the_read() {
        let d = digest_of(b"one\ntwo\n");
        let mut lines = Lines::new(file_with(b"one\ntwo\nthree\n"), Some(d.bytes));
        assert_eq!(lines.next_line().unwrap(), Some(&b"one"[..]));
        assert_eq!(lines.next_line().unwrap(), Some(&b"two"[..]));
        assert_eq!(lines.next_line().unwrap(), None);
    }

    #[test]
    fn oversized_lines_are_skipped_but_hashed() {
        let mut content = b"small\n".to_vec();
        content.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        content.extend_from_slice(b"\nafter\nfrag");
        let d = digest_of(&content);
        let mut lines = Lines::new(file_with(&content), None);
        assert_eq!(lines.next_line().unwrap(), Some(&b"small"[..]));
        assert_eq!(lines.next_line().unwrap(), Some(&b"after"[..]));
        assert_eq!(lines.next_line().unwrap(), None);
        assert_eq!(lines.oversized(), 1);
        assert_eq!(lines.finish(), d);
        assert_eq!(d.bytes as usize, content.len() - 4);
        assert_eq!(d.hash, md5_hex(&content[..content.len() - 4]));
    }

    #[test]
    fn an_oversized_fragment_at_the_end_is_not_hashed() {
        let mut content = b"small\n".to_vec();
        content.extend(std::iter::repeat_n(b'x', MAX_LINE + CHUNK * 3));
        let d = digest_of(&content);
        assert_eq!(d.bytes, 6);
        assert_eq!(d.hash, md5_hex(b"small\n"));
    }

    /// A file as the scan would have found it.
    fn scanned(content: &[u8]) -> (tempfile::TempDir, SessionFile) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.jsonl");
        std::fs::write(&path, content).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let file = SessionFile {
            name: "u/s.jsonl".into(),
            user: "u".into(),
            path,
            stat: crate::scan::Stat::of(&meta),
            dev: meta.dev(),
        };
        (dir, file)
    }

    #[test]
    fn a_session_records_what_it_handed_over_and_nothing_more() {
        let (_dir, file) = scanned(b"one\ntwo\nthree\nfrag");
        let path = file.path.clone();
        let whole = digest(open(&path, file.dev, file.stat.inode).unwrap()).unwrap();
        for known in [None, Some(&whole)] {
            // Stops after one line: the record is of that line only.
            let mut session = Session::new(&file, known);
            assert_eq!(
                session.lines().unwrap().next_line().unwrap(),
                Some(&b"one"[..])
            );
            let early = session.handed_over();
            assert!(!early.whole);
            assert_eq!(early.digest.hash, md5_hex(b"one\n"));
            assert_eq!(early.digest.bytes, 4);
            // Reads to the end: the whole complete-line prefix.
            let mut session = Session::new(&file, known);
            let lines = session.lines().unwrap();
            while lines.next_line().unwrap().is_some() {}
            assert_eq!(
                session.handed_over(),
                Handover {
                    digest: whole.clone(),
                    whole: true,
                    prefixes: Vec::new(),
                }
            );
        }
        // Given the digest and reading nothing itself (an external command).
        let given = Session::new(&file, Some(&whole)).handed_over();
        assert_eq!(
            given,
            Handover {
                digest: whole.clone(),
                whole: true,
                prefixes: Vec::new(),
            }
        );
        let nothing = Session::new(&file, None).handed_over();
        assert_eq!((nothing.digest.bytes, nothing.whole), (0, false));
    }

    #[test]
    fn probes_note_the_hash_of_each_prefix_that_ends_a_line() {
        let (_dir, file) = scanned(b"one\ntwo\nthree\nfrag");
        let mut session = Session::new(&file, None);
        // 4 and 8 end lines; 5 does not; 14 ends "three"; 18 is the fragment.
        session.probe(vec![8, 5, 4, 14, 18, 4]);
        let lines = session.lines().unwrap();
        while lines.next_line().unwrap().is_some() {}
        let prefixes = session.handed_over().prefixes;
        let want: Vec<Digest> = [&b"one\n"[..], b"one\ntwo\n", b"one\ntwo\nthree\n"]
            .iter()
            .map(|p| Digest {
                hash: md5_hex(p),
                bytes: p.len() as u64,
            })
            .collect();
        assert_eq!(prefixes, want);
    }

    #[test]
    fn hex_is_lowercase_pairs() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }
}
