//! One processor's state rows, by session file, held in name order.
//!
//! An unchanged run looks up the row of every file a walk found, and a walk
//! lists its files in name order. Rows kept in the same order meet their
//! files in one pass: no hash of every name, and half the memory of a hash
//! table, whose fresh pages an unchanged run would otherwise fault in one by
//! one. Lookups in any other order are still right, by binary search.

use crate::verdict::Row;

/// State rows sorted by session file; each name once.
#[derive(Debug, Default, Clone)]
pub struct Rows(Vec<(String, Row)>);

impl Rows {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The row of `name`.
    pub fn get(&self, name: &str) -> Option<&Row> {
        self.index(name).map(|i| &self.0[i].1)
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Row> {
        self.index(name).map(|i| &mut self.0[i].1)
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.0.binary_search_by(|(n, _)| n.as_str().cmp(name)).ok()
    }

    /// Every row with its name, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Row)> {
        self.0.iter().map(|(name, row)| (name, row))
    }

    /// Lookups that are cheapest made in name order.
    pub fn cursor(&self) -> Cursor<'_> {
        Cursor {
            rows: &self.0,
            next: 0,
        }
    }
}

impl FromIterator<(String, Row)> for Rows {
    /// Sorts, in one pass when the rows come in order (as SQLite gives a
    /// primary key's). Of a name given twice, one row is kept.
    fn from_iter<I: IntoIterator<Item = (String, Row)>>(rows: I) -> Rows {
        let mut rows: Vec<(String, Row)> = rows.into_iter().collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        rows.dedup_by(|a, b| a.0 == b.0);
        Rows(rows)
    }
}

impl IntoIterator for Rows {
    type Item = (String, Row);
    type IntoIter = std::vec::IntoIter<(String, Row)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Finds rows by name, a step ahead of the last one found when the names
/// come in order, by binary search when one does not.
#[derive(Debug)]
pub struct Cursor<'r> {
    rows: &'r [(String, Row)],
    /// The first row after the last name looked up: no row before it comes
    /// after that name.
    next: usize,
}

impl<'r> Cursor<'r> {
    /// The position of `name`'s row among the rows, in name order.
    pub fn index(&mut self, name: &str) -> Option<usize> {
        let behind = self
            .next
            .checked_sub(1)
            .and_then(|i| self.rows.get(i))
            .is_some_and(|(last, _)| last.as_str() >= name);
        let from = if behind { 0 } else { self.next };
        let rest = self.rows.get(from..).unwrap_or_default();
        // In order, the name is among the next few rows; past a longer run
        // of rows no name asks for (files gone since), a search finds it.
        let at = match rest.iter().take(8).position(|(n, _)| n.as_str() >= name) {
            Some(i) => i,
            None => rest.partition_point(|(n, _)| n.as_str() < name),
        };
        let at = from.saturating_add(at);
        let found = self.rows.get(at).is_some_and(|(n, _)| n == name);
        self.next = if found { at.saturating_add(1) } else { at };
        found.then_some(at)
    }

    /// The row of `name`.
    pub fn get(&mut self, name: &str) -> Option<&'r Row> {
        let rows = self.rows;
        self.index(name).map(|i| &rows[i].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Status;

    fn row(attempts: u32) -> Row {
        Row {
            status: Status::Ok,
            processor_version: 1,
            file_hash: None,
            bytes: 0,
            stat: None,
            racy: false,
            settling: false,
            attempts,
            attempt_hash: None,
            next_attempt_at: None,
            first_seen_at: None,
            waiting_since: None,
        }
    }

    fn rows(names: &[&str]) -> Rows {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| ((*n).to_owned(), row(i as u32)))
            .collect()
    }

    /// Whatever order the rows come in and the names are asked in, each
    /// name finds its own row and only it, with names shorter, longer,
    /// between and beyond the rows'.
    #[test]
    fn a_name_finds_its_own_row_in_any_order() {
        let names = [
            "u/b.jsonl",
            "u/a.jsonl",
            "v/x.jsonl",
            "u/a.jsonl.1",
            "u/ab.jsonl",
            "w/s/subagents/agent-1.jsonl",
            "w/s.jsonl",
        ];
        let all = rows(&names);
        let sorted: Vec<&String> = all.iter().map(|(n, _)| n).collect();
        assert!(sorted.is_sorted(), "{sorted:?}");
        let attempts_of = |name: &str| names.iter().position(|n| *n == name).map(|i| i as u32);
        let mut asked: Vec<&str> = names.to_vec();
        asked.extend([
            "",
            "a",
            "u/",
            "u/a",
            "u/aa.jsonl",
            "v/y.jsonl",
            "z",
            "u/b.jsonl",
        ]);
        let orders = [
            asked.clone(),
            {
                let mut up = asked.clone();
                up.sort();
                up
            },
            {
                let mut down = asked.clone();
                down.sort();
                down.reverse();
                down
            },
        ];
        for order in orders {
            let mut cursor = all.cursor();
            for name in &order {
                let want = attempts_of(name);
                assert_eq!(
                    cursor.get(name).map(|r| r.attempts),
                    want,
                    "{name} in {order:?}"
                );
                assert_eq!(all.get(name).map(|r| r.attempts), want, "{name}");
            }
        }
    }

    /// A long run of rows no name asks for (files gone since) is stepped
    /// over, and the names after it still find theirs.
    #[test]
    fn rows_between_the_names_asked_are_stepped_over() {
        let mut names: Vec<String> = (0..100).map(|i| format!("u/{i:03}.jsonl")).collect();
        names.push("v/last.jsonl".into());
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let all = rows(&refs);
        let mut cursor = all.cursor();
        assert_eq!(cursor.index("u/000.jsonl"), Some(0));
        assert_eq!(cursor.index("u/050.jsonl"), Some(50));
        assert_eq!(cursor.index("u/051.jsonl"), Some(51));
        assert_eq!(cursor.index("u/999.jsonl"), None);
        assert_eq!(cursor.index("v/last.jsonl"), Some(100));
        assert_eq!(cursor.index("w"), None);
        assert_eq!(cursor.index("u/001.jsonl"), Some(1));
    }

    /// Rows given twice under one name keep one; a mutable lookup changes
    /// that row only.
    #[test]
    fn one_row_a_name() {
        let mut all = rows(&["u/a.jsonl", "u/a.jsonl", "u/b.jsonl"]);
        assert_eq!(all.len(), 2);
        if let Some(r) = all.get_mut("u/b.jsonl") {
            r.status = Status::Gone;
        }
        let statuses: Vec<Status> = all.iter().map(|(_, r)| r.status).collect();
        assert_eq!(statuses, [Status::Ok, Status::Gone]);
    }
}
