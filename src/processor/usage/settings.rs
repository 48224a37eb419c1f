//! The settings `usage` rows were written with (the identity map, the price
//! book), each recorded as a fingerprint in `processor_settings`, so that a
//! run whose settings did not change costs one lookup each.

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

/// When `key`'s recorded fingerprint is not `fingerprint`: an immediate
/// transaction that has recorded it, for the caller to bring the rows in
/// line and commit. `None` when nothing changed.
pub(super) fn changed<'c>(
    db: &'c Connection,
    key: &str,
    fingerprint: &str,
) -> rusqlite::Result<Option<Transaction<'c>>> {
    let applied: Option<String> = db
        .query_row(
            "SELECT value FROM processor_settings WHERE processor_name = ?1 AND key = ?2",
            [super::NAME, key],
            |r| r.get(0),
        )
        .optional()?;
    if applied.as_deref() == Some(fingerprint) {
        return Ok(None);
    }
    // The runs of this processor exclude each other: nothing changes the
    // fingerprint between the read above and this transaction.
    let tx = Transaction::new_unchecked(db, TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT OR REPLACE INTO processor_settings (processor_name, key, value)
         VALUES (?1, ?2, ?3)",
        [super::NAME, key, fingerprint],
    )?;
    Ok(Some(tx))
}
