//! Schema creation, upgrades and the legacy import.

use crate::util::{Env, LINE, n};
use predicates::str::contains;

fn legacy_db(env: &Env) {
    std::fs::create_dir_all(env.db.parent().unwrap()).unwrap();
    let conn = env.db();
    conn.execute_batch(
        "CREATE TABLE session_extraction_state (
             session_file TEXT PRIMARY KEY, username TEXT, processed_at TEXT,
             items_extracted INTEGER, file_hash TEXT);
         INSERT INTO session_extraction_state VALUES
             ('alice/a.jsonl', 'alice', '2025-01-02T03:04:05', 3, 'abc'),
             ('bob/b.jsonl', 'bob', '2025-02-03T04:05:06', 0, 'def');",
    )
    .unwrap();
}

#[test]
fn run_refuses_an_old_schema_until_migrate() {
    let env = Env::new();
    env.processors(&[("count", "true")]);
    legacy_db(&env);
    env.cmd()
        .args(["run", "count"])
        .assert()
        .code(78)
        .stderr(contains("run `sessionpipe migrate`"));
    env.cmd()
        .args(["migrate", "--status"])
        .assert()
        .success()
        .stdout(contains("schema version 0"))
        .stdout(contains(
            "import 2 rows of legacy table session_extraction_state",
        ));
    // --status changed nothing.
    env.cmd().args(["run", "count"]).assert().code(78);
}

#[test]
fn legacy_rows_are_imported_once_as_verification() {
    let env = Env::new();
    legacy_db(&env);
    env.cmd()
        .args(["migrate"])
        .assert()
        .success()
        .stdout(contains("applied: 1:"))
        .stdout(contains("import 2 rows"));
    let rows: Vec<(String, String, String, i64, String, String)> = {
        let conn = env.db();
        let mut stmt = conn
            .prepare(
                "SELECT processor_name, session_file, username, items_extracted, file_hash,
                        processed_at FROM session_processor_state ORDER BY session_file",
            )
            .unwrap();
        stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    assert_eq!(
        rows,
        vec![
            (
                "verification".into(),
                "alice/a.jsonl".into(),
                "alice".into(),
                3,
                "abc".into(),
                "2025-01-02T03:04:05".into()
            ),
            (
                "verification".into(),
                "bob/b.jsonl".into(),
                "bob".into(),
                0,
                "def".into(),
                "2025-02-03T04:05:06".into()
            ),
        ]
    );
    let legacy: i64 =
        env.scalar("SELECT count(*) FROM sqlite_master WHERE name = 'session_extraction_state'");
    assert_eq!(legacy, 0, "the legacy table is dropped");

    // Twice in a row: nothing to do, nothing duplicated.
    env.cmd()
        .args(["migrate"])
        .assert()
        .success()
        .stdout(contains("up to date"));
    let count: i64 = env.scalar("SELECT count(*) FROM session_processor_state");
    assert_eq!(count, 2);
}

#[test]
fn a_newer_database_is_refused() {
    let env = Env::new();
    env.processors(&[("count", "true")]);
    env.session("u/a.jsonl", LINE);
    env.run_one(&["count"], 0);
    env.db().pragma_update(None, "user_version", 99).unwrap();
    for args in [
        &["run", "count"][..],
        &["migrate"],
        &["state"],
        &["migrate", "--status"],
    ] {
        env.cmd()
            .args(args)
            .assert()
            .code(78)
            .stderr(contains("newer than this sessionpipe"));
    }
}

#[test]
fn run_creates_a_missing_database() {
    let env = Env::new();
    env.processors(&[("count", "true")]);
    env.session("u/a.jsonl", LINE);
    assert!(!env.db.exists());
    assert_eq!(n(&env.run_one(&["count"], 0), "processed"), 1);
    env.cmd()
        .args(["migrate", "--status"])
        .assert()
        .success()
        .stdout(contains("nothing pending"));
}
