//! The PostgreSQL store against a real server the test starts: the same
//! tables as SQLite after the same runs, its advisory lock between runs,
//! and an address's password kept out of every message.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use sessionpipe::store::sql::Value;
use sessionpipe::store::{Location, Need, Store};

use crate::util::pg::Cluster;
use crate::util::{Env, n};

/// A value as compared across engines: reals to within rounding (SQLite's
/// julian days and PostgreSQL's epochs differ in the last bits).
#[derive(Debug)]
enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl PartialEq for Cell {
    fn eq(&self, other: &Cell) -> bool {
        match (self, other) {
            (Cell::Null, Cell::Null) => true,
            (Cell::Int(a), Cell::Int(b)) => a == b,
            (Cell::Real(a), Cell::Real(b)) => (a - b).abs() <= 1e-3_f64.max(1e-9 * a.abs()),
            (Cell::Text(a), Cell::Text(b)) => a == b,
            _ => false,
        }
    }
}

/// Every row `sql` selects, through the store interface of either engine.
fn rows(at: &Location, sql: &str) -> Vec<Vec<Cell>> {
    let store = Store::open(at, Need::Current, Duration::from_secs(5)).unwrap();
    store
        .db()
        .rows(sql, &[], |r| {
            (0..r.len())
                .map(|i| {
                    Ok(match r.value(i)? {
                        Value::Null => Cell::Null,
                        Value::Int(n) => Cell::Int(n),
                        Value::Real(x) => Cell::Real(x),
                        Value::Text(t) => Cell::Text(t.to_owned()),
                    })
                })
                .collect()
        })
        .unwrap()
}

/// What the usage processor and the state rows hold, table by table.
const COMPARED: &[&str] = &[
    "SELECT * FROM usage_events ORDER BY session_file, id, event_type, occurred_at",
    "SELECT * FROM usage_requests ORDER BY session_file, line",
    "SELECT * FROM usage_file_summary ORDER BY session_file",
    "SELECT * FROM usage_session_summary ORDER BY session_file",
    "SELECT * FROM usage_model_prices ORDER BY model",
    "SELECT session_file, line, cost_usd, price_key FROM usage_request_costs
     ORDER BY session_file, line",
    "SELECT * FROM processor_settings ORDER BY processor_name, key",
    "SELECT processor_name, session_file, username, items_extracted, file_hash,
         bytes_processed, processor_version, file_size, mtime_ns, ctime_ns, inode, read_racy,
         status, attempts, attempt_hash, last_error
     FROM session_processor_state ORDER BY processor_name, session_file",
    "SELECT processor_name, scanned, candidates, processed, skipped, capped, errors,
         quarantined, items_extracted, exit_code
     FROM runs ORDER BY id",
];

fn on(env: &Env, address: &str) -> assert_cmd::Command {
    assert_cmd::Command::from_std(env.std_cmd_on(Path::new(address)))
}

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
        let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["counts"]["last_processed_at"] = serde_json::Value::Null;
        v[0]["counts"].clone()
    };
    assert_eq!(state(&mut env.cmd()), state(&mut on(&env, &address)));
    on(&env, &address)
        .args(["migrate", "--status"])
        .assert()
        .success()
        .stdout(predicates::str::contains("nothing pending"));
}

#[test]
fn a_run_holding_the_advisory_lock_makes_another_busy_until_it_ends() {
    let cluster = Cluster::start();
    let address = cluster.database("locks");
    let env = Env::new();
    env.session("u/a.jsonl", crate::util::LINE);
    let marker = env.path("inside");
    let release = env.path("release");
    env.processors(&[(
        "slow",
        &format!(
            "touch '{}'; while [ ! -e '{}' ]; do sleep 0.05; done",
            marker.display(),
            release.display()
        ),
    )]);
    let holder = env
        .std_cmd_on(Path::new(&address))
        .args(["run", "slow"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while !marker.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    on(&env, &address)
        .args(["run", "slow"])
        .assert()
        .code(75)
        .stderr("sessionpipe: slow: another run holds the lock\n");
    let out = on(&env, &address)
        .args(["state", "slow", "--json"])
        .output()
        .unwrap();
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state[0]["last_run"]["status"], "running");
    let waiter = env
        .std_cmd_on(Path::new(&address))
        .args(["run", "slow", "--wait", "20s", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&release, "").unwrap();
    let first = holder.wait_with_output().unwrap();
    assert!(first.status.success());
    let second = waiter.wait_with_output().unwrap();
    assert!(second.status.success());
    let report: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    // The holder processed the session; the waiter found it done.
    assert_eq!(n(&report, "processed"), 0);
    assert_eq!(
        cluster.psql(
            "locks",
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        ),
        "0\n"
    );
}

#[test]
fn an_unreachable_server_is_74_and_the_password_is_never_shown() {
    let env = Env::new();
    env.session("u/a.jsonl", crate::util::LINE);
    let dir = tempfile::tempdir().unwrap();
    let address = format!(
        "postgresql://ann:s3cret@{}:5/none?sslmode=disable",
        dir.path().to_str().unwrap().replace('/', "%2F")
    );
    let out = on(&env, &address).args(["run", "usage"]).output().unwrap();
    assert_eq!(out.status.code(), Some(74));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot connect to postgresql://ann@"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
    // A mode the store cannot honour is a configuration error, said as such.
    let out = on(&env, "postgresql://h/d?sslmode=verify-ca")
        .args(["state"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(74));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sslmode=verify-ca"));
}
