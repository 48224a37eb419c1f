//! The identity map of `[usage] identities`: which person (e.g. an email)
//! each user folder key belongs to, so usage rows can name people.
//!
//! The file holds `key,email` lines; blank lines, `#` comments and a
//! `key,email` header are skipped, and any other line is an error that names
//! the file and the line.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};

/// Reads `key,email` lines; blank lines, `#` comments and a `key,email`
/// header are skipped.
pub fn read(path: &Path) -> Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("config: usage.identities {}", path.display()))?;
    let mut map = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.eq_ignore_ascii_case("key,email") {
            continue;
        }
        match line.split_once(',') {
            Some((key, email)) if !key.trim().is_empty() && !email.trim().is_empty() => {
                map.insert(key.trim().to_owned(), email.trim().to_owned());
            }
            _ => anyhow::bail!(
                "config: usage.identities {} line {}: expected key,email",
                path.display(),
                i + 1
            ),
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_headers_comments_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.csv");
        std::fs::write(&path, "key,email\n# team\n\n alice , a@x.io \nbo,b@x.io\n").unwrap();
        let map = read(&path).unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(map["alice"], "a@x.io");
        std::fs::write(&path, "alice,a@x.io\nno comma here\n").unwrap();
        let err = format!("{:#}", read(&path).unwrap_err());
        assert!(err.contains("line 2"), "{err}");
    }
}
