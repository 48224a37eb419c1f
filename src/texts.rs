//! Many short texts end to end in one buffer: one allocation for all of
//! them instead of one each, and what they hold is easy to count. A session
//! held in memory keeps its rows' text columns so (event ids, uuids, times,
//! formatted by the worker that read it), and a bulk write into PostgreSQL
//! gathers each text column of a statement so.

/// Texts in the order they were pushed, each one or a NULL.
#[derive(Debug, Default)]
pub struct Texts {
    buf: String,
    /// Where each text ends in `buf`; it starts where the one before ends.
    ends: Vec<usize>,
    /// Which of them are NULL (empty in `buf`).
    nulls: Vec<bool>,
}

impl Texts {
    pub fn with_capacity(texts: usize, bytes: usize) -> Texts {
        Texts {
            buf: String::with_capacity(bytes),
            ends: Vec::with_capacity(texts),
            nulls: Vec::with_capacity(texts),
        }
    }

    /// Pushes the text `write` appends for `value`, or a NULL for `None`:
    /// formatted in place, without a string of its own.
    pub fn push_with<T>(&mut self, value: Option<T>, write: impl FnOnce(T, &mut String)) {
        let null = value.is_none();
        if let Some(v) = value {
            write(v, &mut self.buf);
        }
        self.ends.push(self.buf.len());
        self.nulls.push(null);
    }

    /// The `i`th text pushed; `None` for a NULL or past the end.
    pub fn get(&self, i: usize) -> Option<&str> {
        if self.nulls.get(i).copied().unwrap_or(true) {
            return None;
        }
        let start = match i.checked_sub(1) {
            Some(before) => *self.ends.get(before)?,
            None => 0,
        };
        self.buf.get(start..*self.ends.get(i)?)
    }

    /// How many texts (NULLs included) were pushed.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Whether any of them is a NULL.
    pub fn has_nulls(&self) -> bool {
        self.nulls.contains(&true)
    }

    /// Forgets every text, keeping the memory for the next ones.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.ends.clear();
        self.nulls.clear();
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
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
        assert_eq!((t.len(), t.has_nulls()), (5, true));
        t.clear();
        t.push_with(Some("f"), |v, buf| buf.push_str(v));
        assert_eq!((t.len(), t.has_nulls(), t.get(0)), (1, false, Some("f")));
    }
}
