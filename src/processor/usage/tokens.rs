//! Token accounting: each API reply counted once, as ccusage counts it.
//!
//! Claude Code writes one API reply as several lines, one per content block,
//! each repeating `message.id`, `requestId` and the whole usage block, with a
//! partial `output_tokens` on the earlier lines. Each (`message.id`,
//! `requestId`) counts once, from its line with the largest total; a repeated
//! `message.id` with another `requestId` is the same reply when either line
//! is a sidechain line; a line without `message.id` counts on its own.

use std::collections::HashMap;

use super::names::Name;
use crate::transcript;

#[derive(Debug)]
pub(super) struct Reply {
    /// A hash of `requestId`: only ever compared within one `message.id`.
    pub(super) request: Option<u64>,
    pub(super) sidechain: bool,
    pub(super) usage: transcript::Usage,
}

/// The lines that share one `message.id`.
#[derive(Debug)]
pub(super) struct Group {
    pub(super) model: Option<Name>,
    pub(super) replies: Vec<Reply>,
}

/// Every reply of a session, de-duplicated.
#[derive(Debug, Default)]
pub(super) struct Tokens {
    /// Keyed by a 128-bit hash of `message.id`: no allocation per reply, and
    /// a collision is as likely as guessing a random 128-bit key.
    pub(super) groups: HashMap<u128, Group>,
    /// Usage of lines without `message.id`.
    pub(super) anonymous: Vec<transcript::Usage>,
}

impl Group {
    pub(super) fn add(
        &mut self,
        request_id: Option<&str>,
        sidechain: bool,
        usage: transcript::Usage,
    ) {
        let request = request_id.map(|r| hash128(r) as u64);
        let same = self
            .replies
            .iter_mut()
            .find(|e| e.request == request || e.sidechain || sidechain);
        match same {
            Some(e) => {
                if usage.total() > e.usage.total() {
                    e.usage = usage;
                }
                e.sidechain |= sidechain;
            }
            None => self.replies.push(Reply {
                request,
                sidechain,
                usage,
            }),
        }
    }
}

impl Tokens {
    pub(super) fn totals(&self) -> [u64; 4] {
        let all = self
            .groups
            .values()
            .flat_map(|g| &g.replies)
            .map(|r| &r.usage)
            .chain(&self.anonymous);
        let mut t = [0u64; 4];
        for u in all {
            // Saturating: hostile counts near u64::MAX cannot wrap a total.
            t[0] = t[0].saturating_add(u.input_tokens.0);
            t[1] = t[1].saturating_add(u.output_tokens.0);
            t[2] = t[2].saturating_add(u.cache_creation_input_tokens.0);
            t[3] = t[3].saturating_add(u.cache_read_input_tokens.0);
        }
        t
    }
}

/// A 128-bit hash of a key, from two independent SipHash runs.
pub(super) fn hash128(key: &str) -> u128 {
    use std::hash::{Hash, Hasher};
    let half = |salt: u8| {
        let mut h = std::hash::DefaultHasher::new();
        salt.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    };
    (u128::from(half(1)) << 64) | u128::from(half(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_count_each_reply_once_from_its_largest_line() {
        let usage = |i, o| transcript::Usage {
            input_tokens: transcript::Num(i),
            output_tokens: transcript::Num(o),
            ..Default::default()
        };
        let group = || Group {
            model: None,
            replies: Vec::new(),
        };
        let (mut m1, mut m2) = (group(), group());
        m1.add(Some("r1"), false, usage(10, 1));
        m1.add(Some("r1"), false, usage(10, 30));
        m1.add(Some("r1"), false, usage(10, 5));
        // Same message id, another request: a different reply...
        m1.add(Some("r2"), false, usage(1, 1));
        // ...unless a sidechain line is involved.
        m2.add(Some("r3"), false, usage(2, 2));
        m2.add(Some("r4"), true, usage(2, 3));
        let mut t = Tokens::default();
        t.groups.insert(hash128("m1"), m1);
        t.groups.insert(hash128("m2"), m2);
        t.anonymous.push(usage(7, 7));
        t.anonymous.push(usage(7, 7));
        assert_eq!(t.totals(), [10 + 1 + 2 + 14, 30 + 1 + 3 + 14, 0, 0]);
    }
}
