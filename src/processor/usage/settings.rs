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
    key: &str,
    fingerprint: &str,
) -> Result<Option<Tx<'c, 'd>>> {
    let applied: Option<String> = db.one(
        "SELECT value FROM processor_settings
         WHERE source = ?3 AND processor_name = ?1 AND key = ?2",
        args![super::NAME, key, db.source()],
    )?;
    if applied.as_deref() == Some(fingerprint) {
        return Ok(None);
    }
    // The runs of this processor exclude each other: nothing changes the
    // fingerprint between the read above and this transaction.
    let tx = db.transaction()?;
    tx.execute(
        "INSERT INTO processor_settings (processor_name, key, value, source)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (source, processor_name, key) DO UPDATE SET value = excluded.value",
        args![super::NAME, key, fingerprint, db.source()],
    )?;
    Ok(Some(tx))
}
