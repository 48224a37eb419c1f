//! The text columns of a session's rows held in memory (event ids, uuids,
//! times), formatted by the worker that read the session. The single writer
//! is the bottleneck of a cold run; here it only binds text already made,
//! while the workers format in parallel.
//!
//! All of a session's texts share one buffer: one allocation instead of
//! four per event, and what they hold is counted in the rows' memory.

/// Texts in the order they were pushed, each one or a NULL.
#[derive(Debug, Default)]
pub(super) struct Texts {
    buf: String,
    /// Where each text ends in `buf`; it starts where the one before ends.
    ends: Vec<usize>,
    /// Which of them are NULL (empty in `buf`).
    nulls: Vec<bool>,
}

impl Texts {
    pub(super) fn with_capacity(texts: usize, bytes: usize) -> Texts {
        Texts {
            buf: String::with_capacity(bytes),
            ends: Vec::with_capacity(texts),
            nulls: Vec::with_capacity(texts),
        }
    }

    /// Pushes the text `write` appends for `value`, or a NULL for `None`:
    /// formatted in place, without a string of its own.
    pub(super) fn push_with<T>(&mut self, value: Option<T>, write: impl FnOnce(T, &mut String)) {
        let null = value.is_none();
        if let Some(v) = value {
            write(v, &mut self.buf);
        }
        self.ends.push(self.buf.len());
        self.nulls.push(null);
    }

    /// The `i`th text pushed; `None` for a NULL or past the end.
    pub(super) fn get(&self, i: usize) -> Option<&str> {
        if self.nulls.get(i).copied().unwrap_or(true) {
            return None;
        }
        let start = match i.checked_sub(1) {
            Some(before) => *self.ends.get(before)?,
            None => 0,
        };
        self.buf.get(start..*self.ends.get(i)?)
    }

    /// Heap bytes held.
    pub(super) fn bytes(&self) -> usize {
        self.buf.capacity()
            + self.ends.capacity() * std::mem::size_of::<usize>()
            + self.nulls.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_and_nulls_come_back_as_pushed() {
        let mut t = Texts::default();
        for v in [Some("ab"), None, Some(""), Some("cde"), None] {
            t.push_with(v, |v, buf| buf.push_str(v));
        }
        let back: Vec<_> = (0..6).map(|i| t.get(i)).collect();
        assert_eq!(back, [Some("ab"), None, Some(""), Some("cde"), None, None]);
    }
}
