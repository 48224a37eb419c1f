//! Hashing the contents of many small files together.
//!
//! One MD5 stream cannot go faster than the chain of its 64 rounds per
//! block, each waiting on the last; the contents of independent files have
//! no such chain between them, and are hashed side by side in the lanes of
//! the processor's SIMD registers, several times the bytes per second of one
//! stream. A file read whole into one buffer (see [`super::Lines`]) can
//! leave its hash to such a batch: what the processor was handed is then
//! [`Handed`], which holds those bytes until [`hash_all`] turns it into the
//! [`Handover`] a stream hashed as it went would have given. The digests are
//! the same either way.

use md5::Md5Many;

use super::{Digest, Handover, hex};

/// What a processor was handed, its hash perhaps still to be computed.
pub struct Handed {
    content: Result<Digest, Vec<u8>>,
    whole: bool,
    prefixes: Vec<Digest>,
}

impl Handed {
    /// `content`: the digest, or the bytes handed over, unhashed.
    pub(super) fn new(
        content: Result<Digest, Vec<u8>>,
        whole: bool,
        prefixes: Vec<Digest>,
    ) -> Handed {
        Handed {
            content,
            whole,
            prefixes,
        }
    }

    /// Memory held until the hash is computed: the unhashed bytes' buffer.
    pub fn held(&self) -> usize {
        self.content.as_ref().err().map_or(0, Vec::capacity)
    }

    /// The handover, hashed here and now if it is not yet.
    pub fn hashed(self) -> Handover {
        let mut all = hash_all(vec![self]);
        all.pop()
            .unwrap_or_else(|| unreachable!("one handover in, one out"))
    }
}

/// The handovers, in the order given, the unhashed ones hashed together.
pub fn hash_all(handed: Vec<Handed>) -> Vec<Handover> {
    let unhashed: Vec<&[u8]> = handed
        .iter()
        .filter_map(|h| h.content.as_ref().err().map(Vec::as_slice))
        .collect();
    let mut out = vec![[0u8; 16]; unhashed.len()];
    if !unhashed.is_empty() {
        Md5Many::new().hash_many(&unhashed, &mut out);
    }
    let mut digests = out.into_iter();
    handed
        .into_iter()
        .map(|h| {
            let digest = match h.content {
                Ok(digest) => digest,
                Err(bytes) => Digest {
                    hash: hex(&digests
                        .next()
                        .unwrap_or_else(|| unreachable!("a digest for every content unhashed"))),
                    bytes: bytes.len() as u64,
                },
            };
            Handover {
                digest,
                whole: h.whole,
                prefixes: h.prefixes,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::{Digest as _, Md5};

    fn unhashed(bytes: Vec<u8>) -> Handed {
        Handed::new(Err(bytes), true, Vec::new())
    }

    #[test]
    fn a_batch_hashes_each_content_as_one_stream_would() {
        // Lengths around the 64-byte block and its padding, empty content,
        // and lanes far apart in length, mixed with handovers already hashed.
        let lengths = [
            0,
            1,
            55,
            56,
            63,
            64,
            65,
            119,
            120,
            128,
            1000,
            4096,
            300_000,
            7,
            64 * 1024 + 3,
        ];
        let contents: Vec<Vec<u8>> = lengths
            .iter()
            .enumerate()
            .map(|(k, &n)| (0..n).map(|i| (i * 31 + k * 7) as u8).collect())
            .collect();
        let known = Digest {
            hash: "given".into(),
            bytes: 9,
        };
        let mut handed = Vec::new();
        for content in &contents {
            handed.push(unhashed(content.clone()));
            handed.push(Handed::new(Ok(known.clone()), false, Vec::new()));
        }
        let all = hash_all(handed);
        assert_eq!(all.len(), contents.len() * 2);
        for (pair, content) in all.chunks(2).zip(&contents) {
            assert_eq!(pair[0].digest.hash, hex(&Md5::digest(content)));
            assert_eq!(pair[0].digest.bytes, content.len() as u64);
            assert!(pair[0].whole);
            assert_eq!(pair[1].digest, known);
            assert!(!pair[1].whole);
        }
    }

    #[test]
    fn one_alone_is_hashed_too() {
        let handover = unhashed(b"a\n".to_vec()).hashed();
        assert_eq!(handover.digest.hash, hex(&Md5::digest(b"a\n")));
        assert_eq!(unhashed(Vec::with_capacity(10)).held(), 10);
    }
}
