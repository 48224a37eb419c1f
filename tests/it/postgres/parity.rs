//! Tables and printed output equal on both engines after the same commands.

use std::path::Path;

use sessionpipe::store::Location;

use super::{COMPARED, Cell, migrate_from, on, rows, run_on, scrub};
use crate::util::pg::Cluster;
use crate::util::{Env, n};

#[test]
fn runs_on_postgres_leave_the_tables_a_sqlite_file_holds() {
    let cluster = Cluster::start();
    let address = cluster.database("team");
    let env = Env::new();
    env.fixture_corpus();
    // Sessions with subagent transcripts: their summaries are rebuilt from
    // several files, in each engine's own SQL.
    let root = Path::new(crate::util::FIXTURES).join("claude-code-log-subagents");
    for file in crate::util::walk(&root) {
        let name = file.strip_prefix(&root).unwrap().to_str().unwrap();
        if name.ends_with(".jsonl") {
            env.session(name, &std::fs::read_to_string(&file).unwrap());
        }
    }
    for args in [&["run", "usage"][..], &["run", "usage"]] {
        env.cmd()
            .args(args)
            .assert()
            .success()
            .stdout("")
            .stderr("");
        on(&env, &address)
            .args(args)
            .assert()
            .success()
            .stdout("")
            .stderr("");
    }
    let (file, server) = (
        Location::File(env.db.clone()),
        Location::Server(address.clone()),
    );
    for sql in COMPARED {
        let (a, b) = (rows(&file, sql), rows(&server, sql));
        assert!(!a.is_empty(), "{sql}: no rows");
        assert_eq!(a.len(), b.len(), "{sql}");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x, y, "{sql}");
        }
    }
    // The reports and the state agree too.
    let report = |cmd: &mut assert_cmd::Command| -> serde_json::Value {
        let out = cmd
            .args(["report", "--json", "--by", "user"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(report(&mut env.cmd()), report(&mut on(&env, &address)));
    let state = |cmd: &mut assert_cmd::Command| -> serde_json::Value {
        let out = cmd.args(["state", "usage", "--json"]).output().unwrap();
        scrub(serde_json::from_slice(&out.stdout).unwrap())
    };
    let (a, b) = (state(&mut env.cmd()), state(&mut on(&env, &address)));
    assert_eq!(a[0]["tracked"], 63, "{a}");
    assert_eq!(a, b);
    on(&env, &address)
        .args(["migrate", "--status"])
        .assert()
        .success()
        .stdout(predicates::str::contains("nothing pending"));
}

/// Texts reach PostgreSQL as written, NULLs, non-ASCII and all, except a
/// NUL character, which its `text` cannot hold: it arrives as U+FFFD rather
/// than failing the session. A session with events and no request sends
/// its requests' columns empty.
#[test]
fn texts_arrive_as_written_but_a_nul_which_postgres_cannot_hold() {
    let cluster = Cluster::start();
    let address = cluster.database("texts");
    let env = Env::new();
    env.session(
        "u/s.jsonl",
        concat!(
            r#"{"type":"assistant","uuid":"a1","sessionId":"s","cwd":"/home/zoë","timestamp":"2026-01-01T00:00:00Z","message":{"id":"m1","model":"claude-opus-4-5","content":[{"type":"tool_use","id":"t1","name":"Grep\u0000x"},{"type":"tool_use","id":"t2","name":"Ünïcødé ✓"}],"usage":{"input_tokens":1,"output_tokens":1}}}"#,
            "\n"
        ),
    );
    env.session(
        "u/quiet.jsonl",
        concat!(
            r#"{"type":"assistant","uuid":"b1","sessionId":"q","timestamp":"2026-01-01T00:00:00Z","message":{"content":[{"type":"tool_use","id":"t3","name":"Read"}]}}"#,
            "\n"
        ),
    );
    on(&env, &address)
        .args(["run", "usage"])
        .assert()
        .success()
        .stdout("")
        .stderr("");
    let server = Location::Server(address);
    let mut events = rows(
        &server,
        "SELECT tool_name, cwd, parent_uuid, event_uuid FROM usage_events",
    );
    events.sort_by_key(|r| format!("{r:?}"));
    let text = |t: &str| Cell::Text(t.to_owned());
    assert_eq!(
        events,
        [
            vec![
                text("Grep\u{fffd}x"),
                text("/home/zoë"),
                Cell::Null,
                text("a1")
            ],
            vec![text("Read"), Cell::Null, Cell::Null, text("b1")],
            vec![text("Ünïcødé ✓"), text("/home/zoë"), Cell::Null, text("a1")],
        ]
    );
    assert_eq!(
        rows(&server, "SELECT session_file, model FROM usage_requests"),
        [vec![text("u/s.jsonl"), text("claude-opus-4-5")]]
    );
}

#[test]
fn migrate_from_sqlite_copies_everything_and_nothing_is_reprocessed() {
    let cluster = Cluster::start();
    let address = cluster.database("moved");
    let env = Env::new();
    env.fixture_corpus();
    env.session("u/bad.jsonl", crate::util::LINE);
    env.processors(&[(
        "picky",
        "case \"$SESSIONPIPE_SESSION_FILE\" in u/*) exit 3;; esac",
    )]);
    env.cmd().args(["run", "usage"]).assert().success();
    env.cmd().args(["run", "picky"]).assert().code(1);
    let out = migrate_from(&env, &address, &env.db).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(said.contains("rows of usage_events"), "{said}");
    let (file, server) = (
        Location::File(env.db.clone()),
        Location::Server(address.clone()),
    );
    // Settings are not copied: the first run applies the target's own.
    let compared = COMPARED
        .iter()
        .filter(|sql| !sql.contains("processor_settings"));
    let every = [
        &compared.copied().collect::<Vec<_>>()[..],
        &[
            "SELECT * FROM runs ORDER BY id",
            "SELECT * FROM run_errors ORDER BY run_id, session_file",
            "SELECT * FROM session_processor_state ORDER BY processor_name, session_file",
        ],
    ]
    .concat();
    for sql in &every {
        let (a, b) = (rows(&file, sql), rows(&server, sql));
        assert!(!a.is_empty(), "{sql}: no rows");
        assert_eq!(a, b, "{sql}");
    }
    // Nothing to redo, and the run history goes on after the copied runs.
    let report = run_on(&env, &address, &["usage"]);
    assert_eq!(n(&report, "processed"), 0);
    assert_eq!(
        cluster.psql("moved", "SELECT count(*), count(DISTINCT id) FROM runs"),
        "3|3\n"
    );
    // A second copy would mix two histories: refused, and nothing changes.
    migrate_from(&env, &address, &env.db)
        .assert()
        .code(78)
        .stderr(predicates::str::contains("already holds rows"));
    assert_eq!(cluster.psql("moved", "SELECT count(*) FROM runs"), "3\n");
    // Into a SQLite file, or from nowhere: said, with the codes of the table.
    env.cmd()
        .args(["migrate", "--from", &format!("sqlite:{}", env.db.display())])
        .assert()
        .code(2);
    on(&env, &address)
        .args(["migrate", "--from", "sqlite:/nonexistent/state.db"])
        .assert()
        .code(78);
    on(&env, &address)
        .args(["migrate", "--from", "/some/file"])
        .assert()
        .code(2);
}

/// One operator's week on a store: first runs, reruns over an unchanged
/// tree, a grown file, failures to quarantine and requeue, budgets, a file
/// gone and pruned, a reset. Returns everything each step printed, without
/// times, for the two engines to be compared.
fn a_week_on(env: &Env, db: &Path) -> Vec<serde_json::Value> {
    let cmd = |args: &[&str]| -> serde_json::Value {
        let out = env.std_cmd_on(db).args(args).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        // One JSON document (`state`, `report`), JSON lines (`run`), or text.
        let printed: Vec<serde_json::Value> = match serde_json::from_str(&text) {
            Ok(whole) => vec![whole],
            Err(_) => text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|_| l.into()))
                .collect(),
        };
        scrub(serde_json::json!({
            "args": args,
            "code": out.status.code(),
            "out": printed,
        }))
    };
    let mut seen = Vec::new();
    seen.push(cmd(&["run", "usage", "--json"]));
    seen.push(cmd(&["run", "usage", "--json"]));
    let grown = env
        .data
        .join("ann-sniffly")
        .read_dir()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut text = std::fs::read_to_string(&grown).unwrap();
    text.push_str(crate::util::LINE);
    std::fs::write(&grown, text).unwrap();
    crate::util::age(&grown);
    seen.push(cmd(&["run", "usage", "--json"]));
    seen.push(cmd(&["run", "picky", "--max-attempts", "1", "--json"]));
    seen.push(cmd(&["state", "picky", "--failed", "--json"]));
    seen.push(cmd(&["state", "requeue", "picky", "--quarantined"]));
    seen.push(cmd(&["run", "tally", "--max-sessions", "5", "--json"]));
    seen.push(cmd(&["run", "tally", "--json"]));
    std::fs::remove_file(env.data.join("u/a.jsonl")).unwrap();
    seen.push(cmd(&["run", "usage", "--json"]));
    seen.push(cmd(&["state", "--json"]));
    seen.push(cmd(&["state", "prune", "usage"]));
    seen.push(cmd(&["state", "reset", "tally"]));
    seen.push(cmd(&["run", "tally", "--json"]));
    seen.push(cmd(&["state", "--json"]));
    seen.push(cmd(&["state", "--check"]));
    for period in ["daily", "monthly", "session"] {
        seen.push(cmd(&[
            "report", "--period", period, "--json", "--by", "user", "--by", "model",
        ]));
    }
    seen.push(cmd(&["report", "--csv", "--user", "bo-sniffly"]));
    seen
}

#[test]
fn an_operators_week_prints_the_same_on_both_engines() {
    let cluster = Cluster::start();
    let address = cluster.database("week");
    let week = |db: Option<&str>| {
        let env = Env::new();
        env.fixture_corpus();
        env.session("u/a.jsonl", crate::util::LINE);
        env.processors(&[
            (
                "picky",
                "case \"$SESSIONPIPE_SESSION_FILE\" in ann-*) exit 3;; esac",
            ),
            ("tally", &env.recorder("")),
        ]);
        let db = db.map_or_else(|| env.db.clone(), std::path::PathBuf::from);
        a_week_on(&env, &db)
    };
    let (file, server) = (week(None), week(Some(&address)));
    assert_eq!(file.len(), server.len());
    for (a, b) in file.iter().zip(&server) {
        assert_eq!(a, b);
    }
    // The week did what it says: a failure quarantined, budgets capped.
    let text = serde_json::to_string(&file).unwrap();
    assert!(text.contains("\"quarantined\":17"), "{text}");
    assert!(text.contains("\"capped\":"), "{text}");
}

#[test]
fn verification_keeps_the_same_facts_evidence_and_spend_on_both_engines() {
    use crate::util::llm::{FakeLlm, Reply};
    use crate::verification::{KEY, churn_item, churn_session, user};
    let cluster = Cluster::start();
    let address = cluster.database("facts");
    let similar = serde_json::json!({"detection_type": "unprompted_definition",
        "title": "Churn window is rolling 90 days",
        "content": "Churn is measured on a rolling 90-day window, not per calendar month!",
        "user_quote": "rolling 90 days", "domain": "finance", "entities": ["churn"]});
    let usage = serde_json::json!({"input_tokens": 1200, "output_tokens": 80,
        "cache_creation_input_tokens": 900, "cache_read_input_tokens": 0});
    let judged = |server: Option<&str>| -> (Env, Vec<serde_json::Value>) {
        let env = Env::new();
        let db = server.map_or_else(|| env.db.clone(), std::path::PathBuf::from);
        env.session("alice/s1.jsonl", &churn_session());
        env.session("bob/s2.jsonl", &churn_session());
        let llm = FakeLlm::start(vec![
            Reply::anthropic(serde_json::json!([churn_item()])).usage(usage.clone()),
            Reply::anthropic(serde_json::json!([churn_item()])).usage(usage.clone()),
            Reply::anthropic(serde_json::json!([churn_item(), similar.clone()]))
                .usage(usage.clone()),
        ]);
        let run = |args: &[&str]| -> serde_json::Value {
            let out = env
                .std_cmd_on(&db)
                .env("SESSIONPIPE_LLM_PROVIDER", "anthropic")
                .env("SESSIONPIPE_LLM_BASE_URL", &llm.url)
                .env("SESSIONPIPE_LLM_API_KEY", KEY)
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            scrub(serde_json::from_slice(&out.stdout).unwrap())
        };
        let mut seen = vec![run(&["run", "verification", "--json", "--jobs", "1"])];
        let path = env.data.join("alice/s1.jsonl");
        crate::util::append(
            &path,
            &user("Also: churn excludes trial accounts, rolling 90 days."),
        );
        crate::util::age(&path);
        seen.push(run(&["run", "verification", "--json"]));
        seen.push(run(&["state", "verification", "--json"]));
        (env, seen)
    };
    let (file_env, file_seen) = judged(None);
    let (_, server_seen) = judged(Some(&address));
    assert_eq!(file_seen, server_seen);
    let (file, server) = (
        Location::File(file_env.db.clone()),
        Location::Server(address),
    );
    for sql in [
        "SELECT id, title, content, domain, entities, detection_type, confidence, status,
             source_user, source_ref FROM knowledge_items ORDER BY id",
        "SELECT item_id, source_user, source_ref, detection_type, user_quote
         FROM verification_evidence ORDER BY item_id, source_user, source_ref",
        "SELECT item_id, similar_id, score FROM knowledge_similar ORDER BY item_id, similar_id",
        "SELECT session_file, username, items, dropped_invalid, dropped_unsupported, model,
             llm_calls, llm_input_tokens, llm_output_tokens, llm_cache_creation_tokens,
             llm_cache_read_tokens, llm_cost_usd, llm_unpriced_calls
         FROM verification_sessions ORDER BY session_file",
    ] {
        let (a, b) = (rows(&file, sql), rows(&server, sql));
        assert!(!a.is_empty(), "{sql}: no rows");
        assert_eq!(a, b, "{sql}");
    }
}

#[test]
fn each_host_brings_its_sqlite_history_under_its_own_source() {
    let cluster = Cluster::start();
    let address = cluster.database("regions");
    let region = |source: &str| {
        let env = Env::new();
        env.copy_fixtures("sniffly", "ann");
        let mut config = toml::Table::new();
        config.insert("source".into(), source.into());
        env.write_config(&config);
        env.cmd().args(["run", "usage"]).assert().success();
        let out = migrate_from(&env, &address, &env.db).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        env
    };
    let (eu, us) = (region("eu-1"), region("us-1"));
    assert_eq!(
        cluster.psql(
            "regions",
            "SELECT source, count(*) FROM session_processor_state GROUP BY source ORDER BY 1"
        ),
        "eu-1|4\nus-1|4\n"
    );
    assert_eq!(
        cluster.psql(
            "regions",
            "SELECT string_agg(source || id, ',' ORDER BY id) FROM runs"
        ),
        "eu-11,us-12\n"
    );
    for env in [&eu, &us] {
        assert_eq!(n(&run_on(env, &address, &["usage"]), "processed"), 0);
    }
    // A host without a source brings its own too, after the others ran.
    let plain = Env::new();
    plain.copy_fixtures("sniffly", "ann");
    plain.cmd().args(["run", "usage"]).assert().success();
    migrate_from(&plain, &address, &plain.db).assert().success();
    assert_eq!(n(&run_on(&plain, &address, &["usage"]), "processed"), 0);
    assert_eq!(
        cluster.psql(
            "regions",
            "SELECT source, count(*) FROM usage_session_summary GROUP BY source ORDER BY 1"
        ),
        "|4\neu-1|4\nus-1|4\n"
    );
    // A region copied twice: refused, by its source.
    migrate_from(&eu, &address, &eu.db)
        .assert()
        .code(78)
        .stderr(predicates::str::contains("rows of source eu-1"));
}
