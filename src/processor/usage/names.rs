//! Compact values for a session's events: names that repeat (tools,
//! skills, models, folders) stored once, and line UUIDs packed into 16
//! bytes. A session can hold a hundred thousand events; these keep each one
//! small without changing a byte of what is written.

use std::borrow::Cow;
use std::collections::HashMap;

/// Names that repeat across a session's events (tools, skills, models,
/// folders), stored once: an event holds their index.
#[derive(Debug, Default)]
pub struct Names {
    index: HashMap<Box<str>, u32>,
    list: Vec<Box<str>>,
    /// Bytes held, for the accumulator's memory limit.
    bytes: usize,
}

/// An index into [`Names`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(u32);

impl Names {
    pub(super) fn intern(&mut self, text: &str) -> Name {
        if let Some(&i) = self.index.get(text) {
            return Name(i);
        }
        let i = self.list.len() as u32;
        // Each name is held twice (list and index), plus their headers.
        self.bytes = self.bytes.saturating_add(2 * text.len() + 64);
        self.list.push(text.into());
        self.index.insert(text.into(), i);
        Name(i)
    }

    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn get(&self, name: Name) -> &str {
        &self.list[name.0 as usize]
    }

    pub(super) fn opt(&self, name: Option<Name>) -> Option<&str> {
        name.map(|n| self.get(n))
    }
}

/// A line's `uuid`: 16 bytes when it is a canonical lowercase UUID (as
/// Claude Code writes them), the text itself otherwise. Written back as the
/// same text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Uuid {
    Canonical([u8; 16]),
    Other(Box<str>),
}

impl Uuid {
    pub(super) fn new(text: &str) -> Uuid {
        let b = text.as_bytes();
        let canonical = b.len() == 36
            && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
            && b.iter().enumerate().all(|(i, c)| {
                matches!(i, 8 | 13 | 18 | 23) || matches!(c, b'0'..=b'9' | b'a'..=b'f')
            });
        if !canonical {
            return Uuid::Other(text.into());
        }
        let mut out = [0u8; 16];
        let digits = b.iter().filter(|&&c| c != b'-');
        for (i, c) in digits.enumerate() {
            let v = if c.is_ascii_digit() {
                c - b'0'
            } else {
                c - b'a' + 10
            };
            out[i / 2] |= v << if i % 2 == 0 { 4 } else { 0 };
        }
        Uuid::Canonical(out)
    }

    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Uuid::Other(s) => Cow::Borrowed(s),
            Uuid::Canonical(_) => {
                let mut out = String::with_capacity(36);
                self.write_text(&mut out);
                Cow::Owned(out)
            }
        }
    }

    /// Appends [`Uuid::text`] to `out`.
    pub fn write_text(&self, out: &mut String) {
        match self {
            Uuid::Other(s) => out.push_str(s),
            Uuid::Canonical(b) => {
                // 8-4-4-4-12 hex digits, built directly: one per event row.
                for (i, part) in [&b[..4], &b[4..6], &b[6..8], &b[8..10], &b[10..]]
                    .into_iter()
                    .enumerate()
                {
                    if i > 0 {
                        out.push('-');
                    }
                    crate::session::write_hex(part, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_round_trip() {
        for text in [
            "0b2ac3a5-7c4f-4e0e-9d3b-5f1b2c3d4e5f",
            "0B2AC3A5-7C4F-4E0E-9D3B-5F1B2C3D4E5F",
            "u1",
            "",
            "0b2ac3a5-7c4f-4e0e-9d3b-5f1b2c3d4e5",
            "0b2ac3a5x7c4f-4e0e-9d3b-5f1b2c3d4e5f",
        ] {
            assert_eq!(Uuid::new(text).text(), text);
        }
        assert!(matches!(
            Uuid::new("0b2ac3a5-7c4f-4e0e-9d3b-5f1b2c3d4e5f"),
            Uuid::Canonical(_)
        ));
    }
}
