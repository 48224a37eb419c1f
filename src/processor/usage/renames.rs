//! Identities applied to rows already written: a user folder's rows carry
//! the name the identity map gives it, so a changed map renames them, in
//! one transaction, and an unchanged one costs a single lookup per run.

use anyhow::Result;

use crate::args;
use crate::store::sql::{Db, Dialect};

/// Renames the users of existing rows whose identity changed: each row's
/// `username` is the identity its user folder maps to, or the folder's name.
/// Only when the map differs from the one last applied (a fingerprint is
/// kept): an unchanged map costs one lookup per run.
pub(super) fn apply_identities(
    db: &dyn Db,
    identities: &std::collections::HashMap<String, String>,
) -> Result<()> {
    let mut pairs: Vec<(&String, &String)> = identities.iter().collect();
    pairs.sort();
    let fingerprint = {
        use md5::{Digest as _, Md5};
        let mut md5 = Md5::new();
        for (key, name) in pairs {
            md5.update(format!("{key}\0{name}\0").as_bytes());
        }
        crate::session::hex(&md5.finalize())
    };
    let Some(tx) = super::settings::changed(
        db,
        super::settings::Scope::Source,
        "identities",
        &fingerprint,
    )?
    else {
        return Ok(());
    };
    let folder = match tx.dialect() {
        Dialect::Sqlite => "substr(session_file, 1, instr(session_file, '/') - 1)",
        Dialect::Postgres => "split_part(session_file, '/', 1)",
    };
    let folders: Vec<String> = tx.rows(
        &format!("SELECT DISTINCT {folder} FROM usage_session_summary WHERE source = ?1"),
        args![tx.source()],
        |r| r.get(0),
    )?;
    for folder in folders {
        let name = identities.get(&folder).unwrap_or(&folder);
        for table in [
            "usage_events",
            "usage_requests",
            "usage_file_summary",
            "usage_session_summary",
        ] {
            tx.execute(
                &format!(
                    // The folder's files as a range of the primary key: '0'
                    // sorts right after '/'.
                    "UPDATE {table} SET username = ?2
                     WHERE session_file >= CAST(?1 AS TEXT) || '/'
                       AND session_file < CAST(?1 AS TEXT) || '0'
                       AND username != ?2 AND source = ?3"
                ),
                args![folder, name, tx.source()],
            )?;
        }
    }
    tx.commit()
}
