//! Knowledge items and their evidence in the database: an item per fact
//! (its id from the fact's text), evidence unique per (item, user, session),
//! and links between items of a domain that say nearly the same.

use std::collections::HashSet;

use chrono::Utc;
use rusqlite::{Connection, params};

use super::items::Item;
use crate::processor::Output;
use crate::store::{sql_int, timestamp};

/// Items of one domain this similar (Jaccard over word sets) are linked.
const SIMILAR: f64 = 0.6;

/// Lowercased words of a text, for similarity.
fn words(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn jaccard(a: &HashSet<String>, b: &HashSet<String>) -> f64 {
    let union = a.union(b).count();
    if union == 0 {
        return 0.0;
    }
    a.intersection(b).count() as f64 / union as f64
}

/// What one session yields.
#[derive(Debug, Default)]
pub(super) struct Rows {
    pub(super) items: Vec<Item>,
    pub(super) source_user: String,
    pub(super) model: String,
    pub(super) dropped_invalid: u64,
    pub(super) dropped_unsupported: u64,
}

impl Output for Rows {
    fn write(&self, db: &Connection, session_file: &str) -> rusqlite::Result<()> {
        let now = timestamp(Utc::now());
        for item in &self.items {
            let id = item.id();
            let entities = serde_json::to_string(&item.entities).unwrap_or_else(|_| "[]".into());
            let created = db
                .prepare_cached(
                    "INSERT OR IGNORE INTO knowledge_items (id, title, content, domain, entities,
                         detection_type, confidence, status, source_user, source_ref, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?9, ?10)",
                )?
                .execute(params![
                    id,
                    item.title,
                    item.content,
                    item.domain,
                    entities,
                    item.detection_type,
                    item.confidence(),
                    self.source_user,
                    session_file,
                    now
                ])?;
            db.prepare_cached(
                "INSERT OR IGNORE INTO verification_evidence (item_id, source_user, source_ref,
                     detection_type, user_quote, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                id,
                self.source_user,
                session_file,
                item.detection_type,
                item.user_quote,
                now
            ])?;
            if created == 1 {
                link_similar(db, &id, item, &now)?;
            }
        }
        db.prepare_cached(
            "INSERT OR REPLACE INTO verification_sessions (session_file, username, items,
                 dropped_invalid, dropped_unsupported, model, processed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            session_file,
            self.source_user,
            sql_int(self.items.len() as u64),
            sql_int(self.dropped_invalid),
            sql_int(self.dropped_unsupported),
            self.model,
            now
        ])?;
        Ok(())
    }
}

/// Links a new item to the existing items of its domain it resembles.
fn link_similar(db: &Connection, id: &str, item: &Item, now: &str) -> rusqlite::Result<()> {
    let mine = words(&format!("{} {}", item.title, item.content));
    let mut stmt = db.prepare_cached(
        "SELECT id, title, content FROM knowledge_items WHERE domain = ?1 AND id != ?2",
    )?;
    let others = stmt
        .query_map(params![item.domain, id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (other, title, content) in others {
        let score = jaccard(&mine, &words(&format!("{title} {content}")));
        if score >= SIMILAR {
            db.prepare_cached(
                "INSERT OR IGNORE INTO knowledge_similar (item_id, similar_id, score, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![id, other, score, now])?;
        }
    }
    Ok(())
}

/// Removes what one session contributed: its evidence, the items left with
/// no evidence at all (and their similarity links), its session row.
pub(super) fn forget(db: &Connection, session_file: &str) -> rusqlite::Result<()> {
    db.execute_batch("CREATE TEMP TABLE IF NOT EXISTS forgotten_items (id TEXT PRIMARY KEY)")?;
    db.execute("DELETE FROM temp.forgotten_items", [])?;
    db.execute(
        "INSERT OR IGNORE INTO temp.forgotten_items
         SELECT item_id FROM verification_evidence WHERE source_ref = ?1",
        [session_file],
    )?;
    db.execute(
        "DELETE FROM verification_evidence WHERE source_ref = ?1",
        [session_file],
    )?;
    // Only items no other session still gives evidence for.
    db.execute(
        "DELETE FROM temp.forgotten_items
         WHERE id IN (SELECT item_id FROM verification_evidence)",
        [],
    )?;
    db.execute(
        "DELETE FROM knowledge_similar
         WHERE item_id IN (SELECT id FROM temp.forgotten_items)
            OR similar_id IN (SELECT id FROM temp.forgotten_items)",
        [],
    )?;
    db.execute(
        "DELETE FROM knowledge_items WHERE id IN (SELECT id FROM temp.forgotten_items)",
        [],
    )?;
    db.execute(
        "DELETE FROM verification_sessions WHERE session_file = ?1",
        [session_file],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgetting_a_session_removes_what_only_it_gave() {
        let store = crate::store::Store::in_memory().unwrap();
        let db = &store.conn;
        db.execute_batch(
            "INSERT INTO knowledge_items VALUES
                 ('kv_shared', 't', 'c', 'data', '[]', 'correction', 0.9, 'pending', 'a', 'a/1.jsonl', 'now'),
                 ('kv_only', 't2', 'c2', 'data', '[]', 'correction', 0.9, 'pending', 'a', 'a/1.jsonl', 'now');
             INSERT INTO verification_evidence VALUES
                 ('kv_shared', 'a', 'a/1.jsonl', 'correction', 'q', 'now'),
                 ('kv_shared', 'b', 'b/2.jsonl', 'correction', 'q', 'now'),
                 ('kv_only', 'a', 'a/1.jsonl', 'correction', 'q', 'now');
             INSERT INTO knowledge_similar VALUES ('kv_only', 'kv_shared', 0.7, 'now');
             INSERT INTO verification_sessions VALUES ('a/1.jsonl', 'a', 2, 0, 0, 'm', 'now');",
        )
        .unwrap();
        forget(db, "a/1.jsonl").unwrap();
        let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(
            count("SELECT count(*) FROM knowledge_items WHERE id = 'kv_shared'"),
            1
        );
        assert_eq!(
            count("SELECT count(*) FROM knowledge_items WHERE id = 'kv_only'"),
            0
        );
        assert_eq!(count("SELECT count(*) FROM verification_evidence"), 1);
        assert_eq!(count("SELECT count(*) FROM knowledge_similar"), 0);
        assert_eq!(count("SELECT count(*) FROM verification_sessions"), 0);
    }

    #[test]
    fn similarity_over_word_sets() {
        let a = words("Churn is MRR lost divided by MRR at start");
        let b = words("churn is mrr lost divided by mrr at the start");
        let c = words("Deploys happen on Tuesdays");
        assert!(jaccard(&a, &b) >= SIMILAR);
        assert!(jaccard(&a, &c) < SIMILAR);
    }
}
