//! Knowledge items and their evidence in the database: an item per fact
//! (its id from the fact's text), evidence unique per (item, user, session),
//! and links between items of a domain that say nearly the same.
//!
//! A session judged afresh replaces its evidence: what it no longer yields
//! goes, with any item left without evidence. A session judged on its new
//! turns only adds. Either way its row sums what its calls cost.

use std::collections::HashSet;

use anyhow::Result;
use chrono::Utc;

use super::items::Item;
use crate::args;
use crate::processor::{Output, Spend};
use crate::store::sql::Db;
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
    fn write(&self, db: &dyn Db, session_file: &str) -> Result<()> {
        let now = timestamp(Utc::now());
        if self.replace {
            let kept: HashSet<String> = self.items.iter().map(Item::id).collect();
            drop_evidence(db, session_file, &kept)?;
        }
        for item in &self.items {
            let id = item.id();
            let entities = serde_json::to_string(&item.entities).unwrap_or_else(|_| "[]".into());
            let created = db.execute(
                "INSERT OR IGNORE INTO knowledge_items (id, title, content, domain, entities,
                     detection_type, confidence, status, source_user, source_ref, created_at,
                     source)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?9, ?10, ?11)",
                args![
                    id,
                    item.title,
                    item.content,
                    item.domain,
                    entities,
                    item.detection_type,
                    item.confidence(),
                    self.source_user,
                    session_file,
                    now,
                    db.source()
                ],
            )?;
            db.execute(
                "INSERT OR IGNORE INTO verification_evidence (item_id, source_user, source_ref,
                     detection_type, user_quote, created_at, source)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                args![
                    id,
                    self.source_user,
                    session_file,
                    item.detection_type,
                    item.user_quote,
                    now,
                    db.source()
                ],
            )?;
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
    fn write_session(&self, db: &dyn Db, session_file: &str, now: &str) -> Result<()> {
        let s = &self.spend;
        db.execute(
            "INSERT INTO verification_sessions AS v (session_file, username, items,
                 dropped_invalid, dropped_unsupported, model, processed_at, llm_calls,
                 llm_input_tokens, llm_output_tokens, llm_cache_creation_tokens,
                 llm_cache_read_tokens, llm_cost_usd, llm_unpriced_calls, source)
             VALUES (?1, ?2,
                 (SELECT count(*) FROM verification_evidence
                  WHERE source = ?14 AND source_ref = ?1),
                 ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
             ON CONFLICT (source, session_file) DO UPDATE SET
                 username = excluded.username, items = excluded.items,
                 dropped_invalid = v.dropped_invalid + excluded.dropped_invalid,
                 dropped_unsupported = v.dropped_unsupported + excluded.dropped_unsupported,
                 model = excluded.model, processed_at = excluded.processed_at,
                 llm_calls = v.llm_calls + excluded.llm_calls,
                 llm_input_tokens = v.llm_input_tokens + excluded.llm_input_tokens,
                 llm_output_tokens = v.llm_output_tokens + excluded.llm_output_tokens,
                 llm_cache_creation_tokens =
                     v.llm_cache_creation_tokens + excluded.llm_cache_creation_tokens,
                 llm_cache_read_tokens = v.llm_cache_read_tokens + excluded.llm_cache_read_tokens,
                 llm_cost_usd = v.llm_cost_usd + excluded.llm_cost_usd,
                 llm_unpriced_calls = v.llm_unpriced_calls + excluded.llm_unpriced_calls",
            args![
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
                db.source(),
            ],
        )?;
        Ok(())
    }
}

/// Removes the session's evidence for items not in `kept`, and each of
/// those items no evidence is left for, with its similarity links.
fn drop_evidence(db: &dyn Db, session_file: &str, kept: &HashSet<String>) -> Result<()> {
    let given: Vec<String> = db.rows(
        "SELECT DISTINCT item_id FROM verification_evidence WHERE source = ?2 AND source_ref = ?1",
        args![session_file, db.source()],
        |r| r.get(0),
    )?;
    for item in given.iter().filter(|id| !kept.contains(*id)) {
        db.execute(
            "DELETE FROM verification_evidence
             WHERE item_id = ?1 AND source = ?3 AND source_ref = ?2",
            args![item, session_file, db.source()],
        )?;
        drop_if_unsupported(db, item)?;
    }
    Ok(())
}

/// Removes an item that no evidence supports any more, with its links.
fn drop_if_unsupported(db: &dyn Db, item: &str) -> Result<()> {
    let supported: bool = db.one(
        "SELECT EXISTS (SELECT 1 FROM verification_evidence WHERE item_id = ?1)",
        args![item],
    )?;
    if !supported {
        db.execute(
            "DELETE FROM knowledge_similar WHERE item_id = ?1 OR similar_id = ?1",
            args![item],
        )?;
        db.execute("DELETE FROM knowledge_items WHERE id = ?1", args![item])?;
    }
    Ok(())
}

/// Links a new item to the existing items of its domain it resembles.
fn link_similar(db: &dyn Db, id: &str, item: &Item, now: &str) -> Result<()> {
    let mine = words(&format!("{} {}", item.title, item.content));
    let others = db.rows(
        "SELECT id, title, content FROM knowledge_items WHERE domain = ?1 AND id != ?2",
        args![item.domain, id],
        |r| {
            Ok((
                r.get::<String>(0)?,
                r.get::<String>(1)?,
                r.get::<String>(2)?,
            ))
        },
    )?;
    for (other, title, content) in others {
        let score = jaccard(&mine, &words(&format!("{title} {content}")));
        if score >= SIMILAR {
            db.execute(
                "INSERT OR IGNORE INTO knowledge_similar (item_id, similar_id, score, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
                args![id, other, score, now],
            )?;
        }
    }
    Ok(())
}

/// What the calls cost that gave the sessions held now.
pub fn total_spend(db: &dyn Db) -> Result<Spend> {
    let total = db.row(
        "SELECT CAST(coalesce(sum(llm_calls), 0) AS BIGINT),
             CAST(coalesce(sum(llm_input_tokens), 0) AS BIGINT),
             CAST(coalesce(sum(llm_output_tokens), 0) AS BIGINT),
             CAST(coalesce(sum(llm_cache_creation_tokens), 0) AS BIGINT),
             CAST(coalesce(sum(llm_cache_read_tokens), 0) AS BIGINT),
             coalesce(sum(llm_cost_usd), 0.0),
             CAST(coalesce(sum(llm_unpriced_calls), 0) AS BIGINT)
         FROM verification_sessions WHERE source = ?1",
        args![db.source()],
        |r| Spend::from_columns(r, 0),
    )?;
    Ok(total.flatten().unwrap_or_default())
}

/// Removes what one session contributed: its evidence, the items left with
/// no evidence at all (and their similarity links), its session row.
pub(super) fn forget(db: &dyn Db, session_file: &str) -> Result<()> {
    drop_evidence(db, session_file, &HashSet::new())?;
    db.execute(
        "DELETE FROM verification_sessions WHERE source = ?2 AND session_file = ?1",
        args![session_file, db.source()],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgetting_a_session_removes_what_only_it_gave() {
        let store = crate::store::Store::in_memory().unwrap();
        let db = store.db();
        db.batch(
            "INSERT INTO knowledge_items VALUES
                 ('kv_shared', 't', 'c', 'data', '[]', 'correction', 0.9, 'pending', 'a', 'a/1.jsonl', 'now', ''),
                 ('kv_only', 't2', 'c2', 'data', '[]', 'correction', 0.9, 'pending', 'a', 'a/1.jsonl', 'now', '');
             INSERT INTO verification_evidence VALUES
                 ('kv_shared', 'a', 'a/1.jsonl', 'correction', 'q', 'now', ''),
                 ('kv_shared', 'b', 'b/2.jsonl', 'correction', 'q', 'now', ''),
                 ('kv_only', 'a', 'a/1.jsonl', 'correction', 'q', 'now', '');
             INSERT INTO knowledge_similar VALUES ('kv_only', 'kv_shared', 0.7, 'now');
             INSERT INTO verification_sessions (session_file, username, items, dropped_invalid,
                 dropped_unsupported, model, processed_at)
                 VALUES ('a/1.jsonl', 'a', 2, 0, 0, 'm', 'now');",
        )
        .unwrap();
        forget(db, "a/1.jsonl").unwrap();
        let count = |sql: &str| -> i64 { db.one(sql, &[]).unwrap() };
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
