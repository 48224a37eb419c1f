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

/// `run ARGS --json` on the server: its one report, after exit 0.
fn run_on(env: &Env, address: &str, args: &[&str]) -> serde_json::Value {
    let out = on(env, address)
        .arg("run")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
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

#[test]
fn two_hosts_running_shards_one_and_two_process_every_session_once() {
    let cluster = Cluster::start();
    let address = cluster.database("shards");
    let env = Env::new();
    for u in 0..24 {
        env.session(&format!("user{u}/s.jsonl"), crate::util::LINE);
    }
    // Slow enough that the runs overlap.
    env.processors(&[("tally", &env.recorder("sleep 0.1"))]);
    // Each "host" has a temporary folder of its own: only the server is
    // shared, as between machines.
    let host = |shard: &str, tmp: &Path| {
        let mut cmd = env.std_cmd_on(Path::new(&address));
        cmd.env("TMPDIR", tmp)
            .args(["run", "tally", "--json", "--shard", shard])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };
    let (a, b, c) = (env.path("host-a"), env.path("host-b"), env.path("host-c"));
    for dir in [&a, &b, &c] {
        std::fs::create_dir(dir).unwrap();
    }
    let one = host("1/2", &a).spawn().unwrap();
    let two = host("2/2", &b).spawn().unwrap();
    // A third host on shard 1 while the first holds it: busy.
    let in_shard_one =
        |call: &String| sessionpipe::shard::of(call.split('/').next().unwrap(), 2) == 1;
    while !env.calls().iter().any(in_shard_one) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let again = host("1/2", &c).output().unwrap();
    assert_eq!(
        again.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // The whole processor, unsharded, is busy too while shards run.
    on(&env, &address).args(["run", "tally"]).assert().code(75);
    let mut processed = 0;
    for child in [one, two] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(n(&report, "processed") > 0, "a shard did nothing: {report}");
        processed += n(&report, "processed");
    }
    assert_eq!(processed, 24);
    let mut calls: Vec<String> = env
        .calls()
        .iter()
        .map(|c| c.split(' ').next().unwrap().to_owned())
        .collect();
    calls.sort();
    let expected: Vec<String> = {
        let mut all: Vec<String> = (0..24).map(|u| format!("user{u}/s.jsonl")).collect();
        all.sort();
        all
    };
    assert_eq!(calls, expected, "each session exactly once");
    // Every session is done: nothing left for the whole processor, and the
    // shards did not mark each other's files gone.
    let report = run_on(&env, &address, &["tally"]);
    assert_eq!(n(&report, "processed"), 0);
    assert_eq!(
        cluster.psql(
            "shards",
            "SELECT status, count(*) FROM session_processor_state GROUP BY status"
        ),
        "ok|24\n"
    );
}

#[test]
fn shards_are_refused_on_sqlite_and_bad_shards_are_usage_errors() {
    let env = Env::new();
    env.session("u/a.jsonl", crate::util::LINE);
    env.cmd()
        .args(["run", "usage", "--shard", "1/2"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "--shard needs a PostgreSQL database",
        ));
    for bad in ["0/2", "3/2", "1/0", "x", "1/99999"] {
        env.cmd()
            .args(["run", "usage", "--shard", bad])
            .assert()
            .code(2)
            .stderr(predicates::str::contains("K/N"));
    }
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
    let out = on(&env, &address)
        .arg("migrate")
        .arg("--from")
        .arg(format!("sqlite:{}", env.db.display()))
        .output()
        .unwrap();
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
    let every = [
        COMPARED,
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
    on(&env, &address)
        .arg("migrate")
        .arg("--from")
        .arg(format!("sqlite:{}", env.db.display()))
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
