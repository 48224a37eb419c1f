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
use std::io::{self, BufRead, BufReader, Read};
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
    // `running` has seen every byte; `complete` is its state at the last
    // newline. MD5 states are small, so cloning at each chunk's last newline
    // keeps memory constant even for a fragment of any length.
    let mut running = Md5::new();
    let mut complete = running.clone();
    let mut bytes = 0u64;
    let mut offset = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..n];
        match chunk.iter().rposition(|&b| b == b'\n') {
            Some(last) => {
                running.update(&chunk[..=last]);
                complete = running.clone();
                running.update(&chunk[last + 1..]);
                bytes = offset + last as u64 + 1;
            }
            None => running.update(chunk),
        }
        offset += n as u64;
    }
    Ok(Digest {
        hash: hex(&complete.finalize()),
        bytes,
    })
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

/// The complete lines of a session, read again for the processor. At the end
/// it checks that they hash to the digest taken before, so a processor never
/// commits outputs for content other than the hash it is recorded under.
pub struct Lines {
    reader: BufReader<io::Take<File>>,
    hasher: Md5,
    expected: Digest,
    buf: Vec<u8>,
    read: u64,
}

impl Lines {
    pub fn new(file: File, expected: Digest) -> Lines {
        Lines {
            reader: BufReader::with_capacity(CHUNK, file.take(expected.bytes)),
            hasher: Md5::new(),
            expected,
            buf: Vec::new(),
            read: 0,
        }
    }

    /// The next line, without its newline; `None` after the last one.
    pub fn next_line(&mut self) -> io::Result<Option<&[u8]>> {
        self.buf.clear();
        let n = self.reader.read_until(b'\n', &mut self.buf)?;
        if n == 0 || self.buf.last() != Some(&b'\n') {
            self.hasher.update(&self.buf);
            self.read += n as u64;
            let got = hex(&self.hasher.clone().finalize());
            if self.read != self.expected.bytes || got != self.expected.hash {
                return Err(io::Error::other(
                    "the file was rewritten while being read; it will be read again",
                ));
            }
            return Ok(None);
        }
        self.hasher.update(&self.buf);
        self.read += n as u64;
        self.buf.pop();
        Ok(Some(&self.buf))
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

        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&content).unwrap();
        std::io::Seek::rewind(&mut f).unwrap();
        let mut lines = Lines::new(f, d);
        let mut n = 0;
        while let Some(line) = lines.next_line().unwrap() {
            assert!(line.starts_with(format!("line {n} ").as_bytes()));
            n += 1;
        }
        assert_eq!(n, 50_000);
    }

    #[test]
    fn lines_detect_a_rewrite() {
        let d = digest_of(b"one\ntwo\n");
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"one\nTWO\n").unwrap();
        std::io::Seek::rewind(&mut f).unwrap();
        let mut lines = Lines::new(f, d);
        assert!(lines.next_line().unwrap().is_some());
        assert!(lines.next_line().unwrap().is_some());
        assert!(lines.next_line().is_err());
    }
}
