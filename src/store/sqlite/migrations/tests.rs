//! Every earlier schema upgrades to a new database's; released steps never change.

use super::*;

/// Every table, index and column definition, for comparing schemas.
fn schema(conn: &Connection) -> Vec<String> {
    let mut stmt = conn
        .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
        .unwrap();
    stmt.query_map([], |r| {
        Ok(format!(
            "{} {} {}",
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?.unwrap_or_default()
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn fresh() -> Connection {
    let mut conn = Connection::open_in_memory().unwrap();
    assert!(create_if_empty(&mut conn).unwrap());
    conn
}

#[test]
fn every_earlier_version_upgrades_to_the_schema_of_a_new_database() {
    let expected = schema(&fresh());
    for version in 0..target_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        apply_range(&conn, 0, version).unwrap();
        if version >= 1 {
            // The state table's name before and after step 5.
            let table = if version < 5 {
                "processor_state"
            } else {
                "session_processor_state"
            };
            conn.execute(
                &format!(
                    "INSERT INTO {table} (processor_name, session_file, username, status)
                     VALUES ('usage', 'u/a.jsonl', 'u', 'ok')"
                ),
                [],
            )
            .unwrap();
        }
        assert!(
            !create_if_empty(&mut conn).unwrap() || version == 0,
            "version {version} is refused until migrated"
        );
        let done = migrate(&mut conn).unwrap();
        assert_eq!(user_version(&conn).unwrap(), target_version());
        assert_eq!(schema(&conn), expected, "upgraded from version {version}");
        let steps = target_version() - version;
        assert!(done.len() as u32 == steps || version == 0, "{done:?}");
        let kept: i64 = conn
            .query_row("SELECT count(*) FROM session_processor_state", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(
            kept,
            i64::from(version >= 1),
            "rows kept from version {version}"
        );
        assert!(
            migrate(&mut conn).unwrap().is_empty(),
            "twice changes nothing"
        );
    }
}

#[test]
fn the_replaced_frameworks_state_table_is_imported_with_its_processors() {
    let mut conn = Connection::open_in_memory().unwrap();
    conn.execute_batch(
        "CREATE TABLE session_processor_state (
             processor_name TEXT NOT NULL, session_file TEXT NOT NULL, username TEXT,
             processed_at TEXT, items_extracted INTEGER, file_hash TEXT,
             PRIMARY KEY (processor_name, session_file));
         INSERT INTO session_processor_state VALUES
             ('usage', 'u/a.jsonl', 'u', '2026-01-01T00:00:00Z', 3, 'abc'),
             ('verification', 'u/a.jsonl', NULL, NULL, NULL, 'abc');",
    )
    .unwrap();
    assert!(!create_if_empty(&mut conn).unwrap(), "needs migrate");
    let plan = pending(&conn).unwrap();
    assert!(plan.last().unwrap().contains("import 2 rows"), "{plan:?}");
    migrate(&mut conn).unwrap();
    assert_eq!(schema(&conn), schema(&fresh()));
    let rows: Vec<(String, String, i64, String, String)> = conn
        .prepare(
            "SELECT processor_name, username, items_extracted, file_hash, status
             FROM session_processor_state ORDER BY processor_name",
        )
        .unwrap()
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let row = |p: &str, u: &str, n| (p.into(), u.into(), n, "abc".into(), "ok".into());
    assert_eq!(rows, vec![row("usage", "u", 3), row("verification", "", 0)]);
}

#[test]
fn both_engines_are_at_the_same_schema_version() {
    // `migrate --from` copies between them only at one version.
    assert_eq!(target_version(), crate::store::postgres::target_version());
}

#[test]
fn released_steps_are_never_edited() {
    // MD5 of each released step's SQL: editing or reordering one would
    // give old databases a schema new ones do not have. Append a step
    // (and its line here) instead.
    use md5::{Digest as _, Md5};
    let released: Vec<String> = STEPS
        .iter()
        .map(|(_, sql)| crate::session::hex(&Md5::digest(sql.as_bytes())))
        .collect();
    assert_eq!(released, RELEASED);
}

const RELEASED: [&str; 15] = [
    "1a06a97aca43440161031786cd4af713",
    "ba8a64bdef41d767ee2d4fad3f29362b",
    "884e7934030ae3dfda3bd66846cc0932",
    "85ed5e35f88227e73c7fa5560600f1d7",
    "a70338f6d909446c869478a18cecd92d",
    "d627727bd1a55ac21c468632dfa31b70",
    "2fca56007a0c5bc913d6af32ce3c0ed4",
    "cbf3606b38277d48b5ed3259889e9123",
    "8b68f0873aa5d6b50999402cac415880",
    "0ea9ebf31ac242e1d09994826cb83ec8",
    "344b657c4a5ff68c96868fa195bdddb3",
    "bd760ea3ce009cd7e692a1905b202e92",
    "99c48b4fd3f34e9ceed6ce7f9e6f7a66",
    "75e8184ffc75617e41da1c0c59c7886a",
    "dcd5614faf8b090684e271d103a91168",
];

#[test]
fn events_keep_their_rows_and_the_first_half_of_their_ids_in_the_leaner_table() {
    let conn = Connection::open_in_memory().unwrap();
    apply_range(&conn, 0, 11).unwrap();
    let id = "ab".repeat(32);
    conn.execute(
        "INSERT INTO usage_events (id, session_id, session_file, username, event_type,
             tool_name, skill_name, is_error, is_sidechain, occurred_at, processor_version,
             agent_id)
         VALUES (?1, 's', 'u/f.jsonl', 'u', 'tool_use', 'Skill', 'pdf', 1, 0,
             '2026-01-01T00:00:00.000Z', 4, 'a1')",
        [&id],
    )
    .unwrap();
    apply_range(&conn, 11, 12).unwrap();
    let row: (String, String, String, i64, String) = conn
        .query_row(
            "SELECT id, session_file, skill_name, is_error, agent_id FROM usage_events",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(
        row,
        (
            "ab".repeat(16),
            "u/f.jsonl".into(),
            "pdf".into(),
            1,
            "a1".into()
        )
    );
}

#[test]
fn every_row_keeps_its_values_and_gets_the_empty_source_in_its_key() {
    let conn = Connection::open_in_memory().unwrap();
    apply_range(&conn, 0, 13).unwrap();
    conn.execute_batch(
        "INSERT INTO session_processor_state (processor_name, session_file, username, status,
             file_hash, attempts)
             VALUES ('usage', 'u/f.jsonl', 'u', 'ok', 'abc', 2);
         INSERT INTO processor_settings VALUES ('usage', 'prices', 'fp');
         INSERT INTO usage_requests (session_file, line, session_id, username, model,
             input_tokens, output_tokens, cache_creation_tokens, cache_creation_5m_tokens,
             cache_creation_1h_tokens, cache_read_tokens, is_sidechain, is_fast,
             processor_version, counted)
             VALUES ('u/f.jsonl', 3, 's', 'u', 'm', 10, 20, 0, 0, 0, 5, 0, 0, 4, 0);
         INSERT INTO runs (processor_name, started_at) VALUES ('usage', 't');
         INSERT INTO knowledge_items VALUES
             ('k', 't', 'c', 'd', '[]', 'correction', 0.9, 'pending', 'u', 'u/f.jsonl', 'now');
         INSERT INTO verification_evidence VALUES
             ('k', 'u', 'u/f.jsonl', 'correction', 'q', 'now');",
    )
    .unwrap();
    apply_range(&conn, 13, 14).unwrap();
    let one = |sql: &str| -> String { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        one("SELECT source || '|' || file_hash || '|' || attempts FROM session_processor_state"),
        "|abc|2"
    );
    assert_eq!(one("SELECT source || value FROM processor_settings"), "fp");
    assert_eq!(
        one("SELECT source || line || counted || cache_read_tokens FROM usage_requests"),
        "305"
    );
    assert_eq!(one("SELECT source || processor_name FROM runs"), "usage");
    assert_eq!(
        one("SELECT source || user_quote FROM verification_evidence"),
        "q"
    );
    // The same file from another source is another row.
    conn.execute_batch(
        "INSERT INTO session_processor_state (processor_name, session_file, username, source)
             VALUES ('usage', 'u/f.jsonl', 'u', 'eu-1');",
    )
    .unwrap();
    assert_eq!(
        one("SELECT count(*) || '' FROM session_processor_state"),
        "2"
    );
    apply_range(&conn, 14, target_version()).unwrap();
    assert_eq!(schema(&conn), schema(&fresh()));
}
