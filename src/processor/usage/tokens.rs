//! Token accounting: each API reply counted once, as ccusage counts it.
//!
//! Claude Code writes one API reply as several lines, one per content block,
//! each repeating `message.id`, `requestId` and the whole usage block, with a
//! partial `output_tokens` on the earlier lines. Each (`message.id`,
//! `requestId`) counts once, from its line with the largest total; a repeated
//! `message.id` with another `requestId` is the same reply when either line
//! is a sidechain line; a line without `message.id` counts on its own.
//! Each reply with usage becomes a request row ([`Request`]).
//!
//! Lines are kept as they come ([`TokenLine`]) and reduced at the end, in
//! (`message.id`, file order): held in memory or staged on disk, a session's
//! lines give the same replies, because both are reduced by [`Reducer`].

use std::collections::{BTreeMap, HashMap};

use super::SYNTHETIC_MODEL;
use super::names::Name;
use crate::transcript::Usage;

/// An assistant line.
#[derive(Debug)]
pub(super) struct TokenLine {
    /// A 128-bit hash of `message.id` (a collision is as likely as guessing
    /// a random 128-bit key), or [`anonymous`] for a line without one.
    pub(super) message: u128,
    pub(super) model: Option<Name>,
    pub(super) usage: Option<Counted>,
}

impl TokenLine {
    /// Takes in `next`, the token line right after this one, when the two
    /// reduce as this one alone would: the same `message.id`, and `next`
    /// without usage, or this one without, or both of the same `requestId`
    /// and side. [`Reducer`] then sees one line where Claude Code wrote one
    /// per content block, and a session holds half the lines.
    pub(super) fn absorb(&mut self, next: &TokenLine) -> bool {
        if self.message != next.message {
            return false;
        }
        match (&mut self.usage, &next.usage) {
            (_, None) => true,
            (mine @ None, Some(_)) => {
                *mine = next.usage;
                true
            }
            (Some(mine), Some(theirs)) => {
                if mine.request != theirs.request || mine.sidechain != theirs.sidechain {
                    return false;
                }
                // The reply keeps its first line, and the usage (with its
                // time) of the first line with the largest total.
                if theirs.usage.total() > mine.usage.total() {
                    mine.usage = theirs.usage;
                    mine.at = theirs.at;
                }
                true
            }
        }
    }
}

/// A line's usage, what tells its reply apart, and where it is.
#[derive(Debug, Clone, Copy)]
pub(super) struct Counted {
    /// A hash of `requestId`: only ever compared within one `message.id`.
    pub(super) request: Option<u64>,
    pub(super) sidechain: bool,
    pub(super) usage: Usage,
    /// The line's number in the file; a reply keeps its first line's.
    pub(super) line: u64,
    /// The line's timestamp, epoch milliseconds; a reply keeps that of the
    /// line whose usage it counts.
    pub(super) at: Option<i64>,
}

/// One API request: a reply with usage, as `usage_requests` stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Hashes of its `message.id` and `requestId`; none without `message.id`.
    pub key: Option<String>,
    /// The number of its first line in the file.
    pub line: u64,
    pub model: Option<String>,
    pub at: Option<i64>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// All cache writes, as they count in token totals...
    pub cache_creation_tokens: u64,
    /// ...and split by lifetime, as they are billed.
    pub cache_creation_5m_tokens: u64,
    pub cache_creation_1h_tokens: u64,
    pub cache_read_tokens: u64,
    pub is_sidechain: bool,
    pub is_fast: bool,
}

/// The key of a line without `message.id`: a reply of its own. The top bit
/// keeps it apart from line numbers; a hash equal to it is as unlikely as a
/// collision of two hashes.
pub(super) fn anonymous(line: u64) -> u128 {
    (1 << 127) | u128::from(line)
}

fn is_anonymous(key: u128) -> bool {
    key >> 64 == 1 << 63
}

/// Folds lines, given in (`message`, file order), into replies and their
/// totals. The model of a `message.id` is that of its first line.
#[derive(Debug, Default)]
pub(super) struct Reducer {
    current: Option<u128>,
    model: Option<String>,
    replies: Vec<Counted>,
    /// The first reply of each `requestId`, and the first sidechain reply:
    /// a line finds its reply in constant time, however many there are.
    by_request: HashMap<Option<u64>, usize>,
    first_sidechain: Option<usize>,
    pub(super) tally: Tally,
    /// Replies with usage, as they end; whoever reduces takes them.
    pub(super) requests: Vec<Request>,
}

/// What a session's replies add up to.
#[derive(Debug, Default)]
pub(super) struct Tally {
    /// Input, output, cache creation, cache read; saturating.
    pub(super) totals: [u64; 4],
    pub(super) replies: u64,
    /// Replies per model, `<synthetic>` left out.
    pub(super) models: BTreeMap<String, u64>,
}

impl Reducer {
    pub(super) fn push(&mut self, message: u128, model: Option<&str>, usage: Option<Counted>) {
        if self.current != Some(message) {
            self.end_message();
            self.current = Some(message);
            self.model = model.map(str::to_owned);
        }
        if let Some(line) = usage {
            self.add(line);
        }
    }

    /// A line is the reply of the first earlier line with its `requestId`,
    /// or of the first sidechain one; a sidechain line is the first reply's.
    fn add(&mut self, line: Counted) {
        let same = if line.sidechain {
            (!self.replies.is_empty()).then_some(0)
        } else {
            let by_request = self.by_request.get(&line.request).copied();
            by_request.into_iter().chain(self.first_sidechain).min()
        };
        match same {
            Some(i) => {
                let e = &mut self.replies[i];
                if line.usage.total() > e.usage.total() {
                    e.usage = line.usage;
                    e.at = line.at;
                }
                if line.sidechain && !e.sidechain {
                    e.sidechain = true;
                    self.first_sidechain = Some(self.first_sidechain.map_or(i, |j| j.min(i)));
                }
            }
            None => {
                let i = self.replies.len();
                self.by_request.entry(line.request).or_insert(i);
                if line.sidechain {
                    self.first_sidechain = self.first_sidechain.or(Some(i));
                }
                self.replies.push(line);
            }
        }
    }

    fn end_message(&mut self) {
        let Some(message) = self.current.take() else {
            return;
        };
        let model = self.model.take();
        self.tally.reply(model.as_deref());
        self.by_request.clear();
        self.first_sidechain = None;
        for reply in self.replies.drain(..) {
            let u = &reply.usage;
            self.tally.count(u);
            // The key that finds the same request in the session's other
            // files: `message.id` and `requestId`, as ccusage keys it.
            let key = (!is_anonymous(message)).then(|| match reply.request {
                Some(r) => format!("{message:032x}:{r:016x}"),
                None => format!("{message:032x}:"),
            });
            self.requests.push(Request {
                key,
                line: reply.line,
                model: model.clone(),
                at: reply.at,
                input_tokens: u.input_tokens.0,
                output_tokens: u.output_tokens.0,
                cache_creation_tokens: u.cache_creation_input_tokens.0,
                cache_creation_5m_tokens: u.cache_creation_5m(),
                cache_creation_1h_tokens: u.cache_creation_1h(),
                cache_read_tokens: u.cache_read_input_tokens.0,
                is_sidechain: reply.sidechain,
                is_fast: u.speed.0,
            });
        }
    }

    /// Ends the last message; the tally and the requests not yet taken.
    pub(super) fn finish(mut self) -> (Tally, Vec<Request>) {
        self.end_message();
        (self.tally, self.requests)
    }
}

impl Tally {
    /// One reply of `model` (each `message.id`, each line without one).
    pub(super) fn reply(&mut self, model: Option<&str>) {
        self.replies = self.replies.saturating_add(1);
        if let Some(model) = model.filter(|m| *m != SYNTHETIC_MODEL) {
            let n = self.models.entry(model.to_owned()).or_default();
            *n = n.saturating_add(1);
        }
    }

    pub(super) fn count(&mut self, u: &Usage) {
        // Saturating: hostile counts near u64::MAX cannot wrap a total.
        let t = &mut self.totals;
        t[0] = t[0].saturating_add(u.input_tokens.0);
        t[1] = t[1].saturating_add(u.output_tokens.0);
        t[2] = t[2].saturating_add(u.cache_creation_input_tokens.0);
        t[3] = t[3].saturating_add(u.cache_read_input_tokens.0);
    }

    /// The most frequent model (ties to the name that sorts first), and
    /// every model, sorted.
    pub(super) fn models(&self) -> (Option<String>, Vec<String>) {
        // max_by_key keeps the last maximum; iterate in reverse name order so
        // that the last one is the first name.
        let primary = self
            .models
            .iter()
            .rev()
            .max_by_key(|(_, n)| **n)
            .map(|(m, _)| m.clone());
        (primary, self.models.keys().cloned().collect())
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
    use super::super::names::Names;
    use super::*;
    use crate::transcript::Num;

    /// The rule as written: each line joins the first reply it matches.
    fn naive(lines: &[Counted]) -> [u64; 4] {
        let mut replies: Vec<Counted> = Vec::new();
        for line in lines {
            let same = replies
                .iter_mut()
                .find(|e| e.request == line.request || e.sidechain || line.sidechain);
            match same {
                Some(e) => {
                    if line.usage.total() > e.usage.total() {
                        e.usage = line.usage;
                    }
                    e.sidechain |= line.sidechain;
                }
                None => replies.push(*line),
            }
        }
        let mut t = Tally::default();
        replies.iter().for_each(|r| t.count(&r.usage));
        t.totals
    }

    /// Numbers below each `n` asked for, the same ones for the same seed
    /// (xorshift): cases a failure names can be run again.
    fn numbers(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        }
    }

    #[test]
    fn the_indexed_reducer_follows_the_rule_as_written() {
        let mut next = numbers(0x9e37_79b9_7f4a_7c15u64);
        for _ in 0..2000 {
            let lines: Vec<Counted> = (0..next(12))
                .map(|_| Counted {
                    request: Some(next(4)).filter(|&r| r != 3),
                    sidechain: next(5) == 0,
                    usage: Usage {
                        input_tokens: Num(next(100)),
                        output_tokens: Num(next(100)),
                        ..Default::default()
                    },
                    line: 0,
                    at: None,
                })
                .collect();
            let mut r = Reducer::default();
            lines.iter().for_each(|l| r.push(7, None, Some(*l)));
            assert_eq!(r.finish().0.totals, naive(&lines), "{lines:?}");
        }
    }

    /// The tally and requests of lines reduced in (message, file order).
    fn reduce(lines: &[TokenLine], names: &Names) -> (Tally, Vec<Request>) {
        let mut order: Vec<&TokenLine> = lines.iter().collect();
        order.sort_by_key(|l| l.message);
        let mut r = Reducer::default();
        order
            .iter()
            .for_each(|l| r.push(l.message, names.opt(l.model), l.usage));
        r.finish()
    }

    #[test]
    fn absorbed_lines_reduce_as_the_lines_themselves() {
        let mut next = numbers(0x2545_f491_4f6c_dd1du64);
        let mut names = Names::default();
        let models = ["a", "b", SYNTHETIC_MODEL].map(|m| Some(names.intern(m)));
        let mut absorbed_any = 0;
        for _ in 0..3000 {
            let lines: Vec<TokenLine> = (0..next(14))
                .map(|line| TokenLine {
                    // Some lines without `message.id`: a reply each.
                    message: match next(5) {
                        0 => anonymous(line),
                        m => u128::from(m % 3),
                    },
                    model: models.get(next(4) as usize).copied().flatten(),
                    usage: (next(4) != 0).then(|| Counted {
                        request: Some(next(3)).filter(|&r| r != 2),
                        sidechain: next(6) == 0,
                        usage: Usage {
                            input_tokens: Num(next(5)),
                            output_tokens: Num(next(5)),
                            ..Default::default()
                        },
                        line,
                        at: Some(line as i64),
                    }),
                })
                .collect();
            let mut merged: Vec<TokenLine> = Vec::new();
            for l in &lines {
                let copy = TokenLine { ..*l };
                if !merged.last_mut().is_some_and(|last| last.absorb(&copy)) {
                    merged.push(copy);
                }
            }
            absorbed_any += lines.len() - merged.len();
            let (want, want_requests) = reduce(&lines, &names);
            let (got, got_requests) = reduce(&merged, &names);
            assert_eq!(
                (got.totals, got.replies, got.models(), got_requests),
                (want.totals, want.replies, want.models(), want_requests),
                "{lines:?}"
            );
        }
        assert!(
            absorbed_any > 1000,
            "the cases absorb lines: {absorbed_any}"
        );
    }

    #[test]
    fn tokens_count_each_reply_once_from_its_largest_line() {
        let line = |request: &str, sidechain, i, o| {
            Some(Counted {
                request: Some(hash128(request) as u64),
                sidechain,
                usage: Usage {
                    input_tokens: Num(i),
                    output_tokens: Num(o),
                    ..Default::default()
                },
                line: i,
                at: Some(i as i64),
            })
        };
        let mut r = Reducer::default();
        let m = Some("claude-opus-4-5");
        r.push(1, m, line("r1", false, 10, 1));
        r.push(1, Some("other"), line("r1", false, 10, 30));
        r.push(1, m, line("r1", false, 10, 5));
        // Same message id, another request: a different reply...
        r.push(1, m, line("r2", false, 1, 1));
        // ...unless a sidechain line is involved.
        r.push(2, Some(SYNTHETIC_MODEL), line("r3", false, 2, 2));
        r.push(2, m, line("r4", true, 2, 3));
        // A message id whose lines carry no usage is still a reply.
        r.push(3, m, None);
        let (t, requests) = r.finish();
        assert_eq!(t.totals, [10 + 1 + 2, 30 + 1 + 3, 0, 0]);
        // A request per reply: its first line, the time of the line counted.
        let got: Vec<_> = requests
            .iter()
            .map(|q| (q.line, q.at, q.input_tokens))
            .collect();
        assert_eq!(
            got,
            vec![(10, Some(10), 10), (1, Some(1), 1), (2, Some(2), 2)]
        );
        assert_eq!(t.replies, 3);
        assert_eq!(
            t.models(),
            (
                Some("claude-opus-4-5".to_owned()),
                vec!["claude-opus-4-5".to_owned()]
            )
        );
    }
}
