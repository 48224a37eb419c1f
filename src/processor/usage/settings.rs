//! The settings `usage` rows were written with (the identity map, the price
//! book), each recorded as a fingerprint in `processor_settings`, so that a
//! run whose settings did not change costs one lookup each.

use anyhow::Result;

use crate::args;
use crate::store::sql::{Db, Tx};

/// When `key`'s recorded fingerprint is not `fingerprint`: an immediate
/// transaction that has recorded it, for the caller to bring the rows in
/// line and commit. `None` when nothing changed.
pub(super) fn changed<'c, 'd>(
    db: &'c (dyn Db + 'd),
    scope: Scope,
    key: &str,
    fingerprint: &str,
) -> Result<Option<Tx<'c, 'd>>> {
    let source = match scope {
        Scope::Source => db.source(),
        // No configured source can be `*` (see `source` in the config).
        Scope::Shared => "*",
    };
    let applied: Option<String> = db.one(
        "SELECT value FROM processor_settings
         WHERE source = ?3 AND processor_name = ?1 AND key = ?2",
        args![super::NAME, key, source],
    )?;
    if applied.as_deref() == Some(fingerprint) {
        return Ok(None);
    }
    // Runs that change the same setting at once (shards, or sources of one
    // shared setting) wait for each other on its row here, and the later
    // one brings the rows in line again: the same work twice, the same end.
    let tx = db.transaction()?;
    tx.execute(
        "INSERT INTO processor_settings (processor_name, key, value, source)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (source, processor_name, key) DO UPDATE SET value = excluded.value",
        args![super::NAME, key, fingerprint, source],
    )?;
    Ok(Some(tx))
}

/// Whose rows a setting shapes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Scope {
    /// This source's (the identity map renames its users).
    Source,
    /// Every source's: `usage_model_prices` is one table for all, so its
    /// fingerprint is one too (sources sharing a database should share a
    /// price book; the last book applied wins).
    Shared,
}
