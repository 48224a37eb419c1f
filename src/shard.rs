//! `run --shard K/N`: hosts that share one data dir and one database split
//! the work by user folder. A folder belongs to exactly one of the N shards,
//! by a hash of its name that does not depend on the host, the build or the
//! order of the scan, so N hosts running shards 1..N together visit every
//! session once, and a folder stays on its shard from run to run.

use std::fmt;

use md5::{Digest as _, Md5};

/// The most shards a processor can be split into.
pub const MAX: u32 = 1024;

/// Shard `index` (1-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

impl Shard {
    /// How many shards the folders are split into.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether the user folder `user` belongs to this shard.
    pub fn contains(&self, user: &str) -> bool {
        of(user, self.count) == self.index
    }

    /// The name the shard's lock goes by, beside the processor's own.
    pub fn lock_name(&self, processor: &str) -> String {
        format!("{processor}.shard-{}-of-{}", self.index, self.count)
    }

    /// The name of the lock every shard of this count holds shared, so that
    /// shards of another count (a crontab half rolled out) are refused.
    pub fn count_lock_name(&self, processor: &str) -> String {
        count_lock_name(processor, self.count)
    }

    /// [`Shard::count_lock_name`] of every other count.
    pub fn other_count_lock_names(&self, processor: &str) -> Vec<String> {
        (1..=MAX)
            .filter(|&n| n != self.count)
            .map(|n| count_lock_name(processor, n))
            .collect()
    }
}

fn count_lock_name(processor: &str, count: u32) -> String {
    format!("{processor}.shards-of-{count}")
}

/// The shard (1-based) of `count` that `user` belongs to: the first eight
/// bytes of the MD5 of the folder's name, as a big-endian number, modulo
/// `count`.
pub fn of(user: &str, count: u32) -> u32 {
    let digest = Md5::digest(user.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let n = u64::from_be_bytes(first) % u64::from(count.max(1));
    // Below `count`, which is a u32.
    u32::try_from(n).unwrap_or(0) + 1
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Shard, String> {
        let bad = || format!("{text:?} is not K/N with 1 <= K <= N <= {MAX} (e.g. 2/3)");
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let digits =
            |s: &str| !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(k) || !digits(n) {
            return Err(bad());
        }
        let (index, count) = (k.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
        if index == 0 || index > count || count > MAX {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_folder_is_in_exactly_one_shard_and_the_split_is_even() {
        for count in [1, 2, 3, 7] {
            let shards: Vec<Shard> = (1..=count)
                .map(|k| format!("{k}/{count}").parse().unwrap())
                .collect();
            let mut sizes = vec![0usize; count as usize];
            for u in 0..3000 {
                let user = format!("user{u}");
                let owners: Vec<usize> = (0..shards.len())
                    .filter(|&i| shards[i].contains(&user))
                    .collect();
                assert_eq!(owners.len(), 1, "{user} in {count} shards");
                sizes[owners[0]] += 1;
            }
            let even = 3000 / count as usize;
            assert!(sizes.iter().all(|&s| s > even * 8 / 10), "{sizes:?}");
        }
    }

    #[test]
    fn the_hash_is_fixed_so_folders_keep_their_shard_across_releases() {
        // MD5("alice") begins 6384e2b2184bcbf5, and 0x6384e2b2184bcbf5 % 7 = 4.
        assert_eq!(of("alice", 7), 5);
        assert_eq!(of("alice", 1), 1);
    }

    #[test]
    fn only_k_of_n_within_bounds_parses() {
        assert_eq!("2/3".parse::<Shard>().unwrap().to_string(), "2/3");
        for bad in [
            "0/3", "4/3", "1/0", "3", "a/b", "1/2/3", "-1/2", "1/1025", "1/ 2", "+1/2",
        ] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
