//! Reading a session file: the MD5 of exactly its complete lines, and those
//! same lines streamed to a processor.
//!
//! A trailing fragment without a newline is a line still being written: it is
//! neither hashed nor handed out, so a processor never sees half a line and
//! the hash only changes once the line is whole. Memory stays bounded by one
//! line whatever the file size. Files are opened without following symlinks
//! and checked to be the very file the scan saw, so a file swapped for a link
//! between the scan and the read is never opened.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use md5::{Digest as _, Md5};

/// The hash of a file's complete-line prefix, and that prefix's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub hash: String,
    pub bytes: u64,
}

const CHUNK: usize = 256 * 1024;

/// Opens a file for reading without following a symlink, and checks it is
/// the file `(dev, inode)` the scan saw.
pub fn open(path: &Path, dev: u64, inode: u64) -> io::Result<File> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.dev() != dev || meta.ino() != inode {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the file was replaced after the scan",
        ));
    }
    Ok(file)
}

/// Hashes the complete-line prefix of `file` in one streaming pass.
pub fn digest(mut file: File) -> io::Result<Digest> {
    let mut hashing = Hashing::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hashing.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(hashing.digest())
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Lines longer than this are not handed to the processor (they are still
/// hashed, and counted in [`Lines::oversized`]): memory stays bounded by it
/// whatever a file holds.
pub const MAX_LINE: usize = 8 * 1024 * 1024;

/// The complete lines of a session, streamed to a processor.
///
/// With a known [`Digest`] it reads exactly the prefix that digest covers.
/// Without one it reads to the end and hashes the complete lines as it goes,
/// so a new file is read only once; the digest is then available from
/// [`Lines::digest`] once the last line has been read. Lines are handed out
/// as slices of one reused buffer: no copy, no allocation per line.
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
    /// Inside a line longer than [`MAX_LINE`]: dropping it up to its newline.
    skipping: bool,
    hashing: Option<Hashing>,
    oversized: u64,
    done: Option<Digest>,
}

/// MD5 of everything read (`running`) and of the complete-line prefix
/// (`complete`, a copy of `running` taken at the last newline).
struct Hashing {
    running: Md5,
    complete: Md5,
    read: u64,
    complete_bytes: u64,
}

impl Hashing {
    fn new() -> Hashing {
        Hashing {
            running: Md5::new(),
            complete: Md5::new(),
            read: 0,
            complete_bytes: 0,
        }
    }

    /// Hashes a chunk; one state copy per chunk keeps this as fast as a
    /// plain hash of the file.
    fn update(&mut self, chunk: &[u8]) {
        if let Some(last) = memchr::memrchr(b'\n', chunk) {
            self.running.update(&chunk[..=last]);
            self.complete = self.running.clone();
            self.running.update(&chunk[last + 1..]);
            self.complete_bytes = self.read + last as u64 + 1;
        } else {
            self.running.update(chunk);
        }
        self.read += chunk.len() as u64;
    }

    fn digest(&self) -> Digest {
        Digest {
            hash: hex(&self.complete.clone().finalize()),
            bytes: self.complete_bytes,
        }
    }
}

impl Lines {
    pub fn new(file: File, known: Option<&Digest>) -> Lines {
        let limit = known.map_or(u64::MAX, |d| d.bytes);
        Lines {
            file: file.take(limit),
            buf: Vec::new(),
            start: 0,
            scan: 0,
            end: 0,
            eof: false,
            skipping: false,
            hashing: known.is_none().then(Hashing::new),
            oversized: 0,
            done: known.cloned(),
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
                if self.skipping || to - from > MAX_LINE {
                    self.skipping = false;
                    self.oversized += 1;
                    continue;
                }
                return Ok(Some(&self.buf[from..to]));
            }
            self.scan = self.end;
            if self.eof {
                if let Some(h) = &self.hashing {
                    self.done = Some(h.digest());
                }
                return Ok(None);
            }
            self.fill()?;
        }
    }

    /// Reads the next chunk behind the pending partial line.
    fn fill(&mut self) -> io::Result<()> {
        if self.end - self.start > MAX_LINE {
            // Too long to keep: drop what is buffered and skip to its end.
            self.skipping = true;
            self.start = 0;
            self.scan = 0;
            self.end = 0;
        } else if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.scan -= self.start;
            self.start = 0;
        }
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
        if let Some(h) = &mut self.hashing {
            h.update(&self.buf[self.end..self.end + n]);
        }
        self.end += n;
        self.eof = n == 0;
        Ok(())
    }

    /// Lines skipped for being longer than [`MAX_LINE`].
    pub fn oversized(&self) -> u64 {
        self.oversized
    }

    /// The digest of the lines read: known from the start, or computed once
    /// the last line has been read.
    pub fn digest(&self) -> Option<&Digest> {
        self.done.as_ref()
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

        for known in [Some(&d), None] {
            let mut lines = Lines::new(file_with(&content), known);
            let mut n = 0;
            while let Some(line) = lines.next_line().unwrap() {
                assert!(line.starts_with(format!("line {n} ").as_bytes()));
                n += 1;
            }
            assert_eq!(n, 50_000);
            assert_eq!(lines.digest(), Some(&d), "the same digest, read once");
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
        let mut lines = Lines::new(file_with(b"one\ntwo\nthree\n"), Some(&d));
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
        assert_eq!(lines.digest(), Some(&d));
        assert_eq!(d.bytes as usize, content.len() - 4);
    }
}
