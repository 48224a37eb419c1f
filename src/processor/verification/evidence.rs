//! Knowledge items and their evidence in the database: an item per fact
//! (its id from the fact's text), evidence unique per (item, user, session),
//! and links between items of a domain that say nearly the same.
//!
//! A session judged afresh replaces its evidence: what it no longer yields
//! goes, with any item left without evidence. A session judged on its new
//! turns only adds. Either way its row sums what its calls cost.

use std::collections::HashSet;

use chrono::Utc;
use rusqlite::{Connection, params};

use super::items::Item;
use crate::processor::{Output, Spend};
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
    /// The session was judged afresh: evidence it gave before and not now
    /// is removed.
    pub(super) replace: bool,
    pub(super) spend: Spend,
}

impl Output for Rows {
    fn write(&self, db: &Connection, session_file: &str) -> rusqlite::Result<()> {
        let now = timestamp(Utc::now());
        if self.replace {
            let kept: HashSet<String> = self.items.iter().map(Item::id).collect();
            drop_evidence(db, session_file, &kept)?;
        }
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
        self.write_session(db, session_file, &now)
    }
}

impl Rows {
    /// The session's row: the evidence it now gives, and the sums over its
    /// calls of what was dropped and what they cost.
    fn write_session(
        &self,
        db: &Connection,
        session_file: &str,
        now: &str,
    ) -> rusqlite::Result<()> {
        let s = &self.spend;
        db.prepare_cached(
            "INSERT INTO verification_sessions (session_file, username, items,
                 dropped_invalid, dropped_unsupported, model, processed_at, llm_calls,
                 llm_input_tokens, llm_output_tokens, llm_cache_creation_tokens,
                 llm_cache_read_tokens, llm_cost_usd, llm_unpriced_calls)
             VALUES (?1, ?2,
                 (SELECT count(*) FROM verification_evidence WHERE source_ref = ?1),
                 ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT (session_file) DO UPDATE SET
                 username = excluded.username, items = excluded.items,
                 dropped_invalid = dropped_invalid + excluded.dropped_invalid,
                 dropped_unsupported = dropped_unsupported + excluded.dropped_unsupported,
                 model = excluded.model, processed_at = excluded.processed_at,
                 llm_calls = llm_calls + excluded.llm_calls,
                 llm_input_tokens = llm_input_tokens + excluded.llm_input_tokens,
                 llm_output_tokens = llm_output_tokens + excluded.llm_output_tokens,
                 llm_cache_creation_tokens =
                     llm_cache_creation_tokens + excluded.llm_cache_creation_tokens,
                 llm_cache_read_tokens = llm_cache_read_tokens + excluded.llm_cache_read_tokens,
                 llm_cost_usd = llm_cost_usd + excluded.llm_cost_usd,
                 llm_unpriced_calls = llm_unpriced_calls + excluded.llm_unpriced_calls",
        )?
        .execute(params![
            session_file,
            self.source_user,
            sql_int(self.dropped_invalid),
            sql_int(self.dropped_unsupported),
            self.model,
            now,
            sql_int(s.calls),
            sql_int(s.input_tokens),
            sql_int(s.output_tokens),
            sql_int(s.cache_creation_tokens),
            sql_int(s.cache_read_tokens),
            s.cost_usd,
            sql_int(s.unpriced_calls),
        ])?;
        Ok(())
    }
}

/// Removes the session's evidence for items not in `kept`, and each of
/// those items no evidence is left for, with its similarity links.
fn drop_evidence(
    db: &Connection,
    session_file: &str,
    kept: &HashSet<String>,
) -> rusqlite::Result<()> {
    let given: Vec<String> = db
        .prepare_cached("SELECT DISTINCT item_id FROM verification_evidence WHERE source_ref = ?1")?
        .query_map([session_file], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for item in given.iter().filter(|id| !kept.contains(*id)) {
        db.prepare_cached(
            "DELETE FROM verification_evidence WHERE item_id = ?1 AND source_ref = ?2",
        )?
        .execute([item, session_file])?;
        drop_if_unsupported(db, item)?;
    }
    Ok(())
}

/// Removes an item that no evidence supports any more, with its links.
fn drop_if_unsupported(db: &Connection, item: &str) -> rusqlite::Result<()> {
    let supported: bool = db
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM verification_evidence WHERE item_id = ?1)")?
        .query_row([item], |r| r.get(0))?;
    if !supported {
        db.prepare_cached("DELETE FROM knowledge_similar WHERE item_id = ?1 OR similar_id = ?1")?
            .execute([item])?;
        db.prepare_cached("DELETE FROM knowledge_items WHERE id = ?1")?
            .execute([item])?;
    }
    Ok(())
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

/// What the calls cost that gave the sessions held now.
pub fn total_spend(db: &Connection) -> rusqlite::Result<Spend> {
    let total = db.query_row(
        "SELECT coalesce(sum(llm_calls), 0), coalesce(sum(llm_input_tokens), 0),
             coalesce(sum(llm_output_tokens), 0), coalesce(sum(llm_cache_creation_tokens), 0),
             coalesce(sum(llm_cache_read_tokens), 0), coalesce(sum(llm_cost_usd), 0.0),
             coalesce(sum(llm_unpriced_calls), 0)
         FROM verification_sessions",
        [],
        |r| Spend::from_columns(r, 0),
    )?;
    Ok(total.unwrap_or_default())
}

/// Removes what one session contributed: its evidence, the items left with
/// no evidence at all (and their similarity links), its session row.
pub(super) fn forget(db: &Connection, session_file: &str) -> rusqlite::Result<()> {
    drop_evidence(db, session_file, &HashSet::new())?;
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
             INSERT INTO verification_sessions (session_file, username, items, dropped_invalid,
                 dropped_unsupported, model, processed_at)
                 VALUES ('a/1.jsonl', 'a', 2, 0, 0, 'm', 'now');",
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
