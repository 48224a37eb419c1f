//! kill -9 at random moments and at every failure point, on PostgreSQL:
//! the rerun leaves the tables of one uninterrupted run.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use sessionpipe::store::Location;

use super::{Cell, on, rows, run_on};
use crate::util::pg::Cluster;
use crate::util::{Env, kill_after, kill_moments};

/// What a usage run leaves, for comparing an interrupted store with an
/// uninterrupted one.
const AFTER_A_RUN: &[&str] = &[
    "SELECT * FROM usage_events ORDER BY session_file, id, event_type, occurred_at",
    "SELECT * FROM usage_requests ORDER BY session_file, line",
    "SELECT * FROM usage_session_summary ORDER BY session_file",
    "SELECT session_file, file_hash, items_extracted, status FROM session_processor_state
     WHERE processor_name = 'usage' ORDER BY session_file",
];

fn assert_same(reference: &Location, got: &Location, what: &str) {
    for sql in AFTER_A_RUN {
        let (a, b) = (rows(reference, sql), rows(got, sql));
        assert!(!a.is_empty(), "{what}: {sql}: no rows");
        assert_eq!(a, b, "{what}: {sql}");
    }
    let orphans = rows(
        got,
        "SELECT count(*) FROM session_processor_state p
             LEFT JOIN usage_session_summary s USING (session_file)
             WHERE p.processor_name = 'usage' AND p.status = 'ok' AND s.session_file IS NULL",
    );
    assert_eq!(
        orphans,
        [[Cell::Int(0)]],
        "{what}: processed without outputs"
    );
}

#[test]
fn kill_9_at_random_moments_and_at_every_failure_point_recovers_exactly_on_postgres() {
    let cluster = Cluster::start();
    let env = Env::new();
    env.fixture_corpus();
    let reference = cluster.database("reference");
    let started = std::time::Instant::now();
    run_on(&env, &reference, &["usage"]);
    let span = started.elapsed();
    let reference = Location::Server(reference);
    let rerun = |address: &str, what: &str| {
        // The server lets go of a killed run's lock as it sees the
        // connection close: a moment, waited for.
        let out = on(&env, address)
            .args(["run", "usage", "--wait", "20s"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{what}: rerun: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_same(&reference, &Location::Server(address.to_owned()), what);
    };
    let mut killed_mid_run = 0;
    for (round, delay) in kill_moments(span, 30).into_iter().enumerate() {
        let address = cluster.database(&format!("kill{round}"));
        if kill_after(
            env.std_cmd_on(Path::new(&address)).args(["run", "usage"]),
            delay,
        ) {
            killed_mid_run += 1;
        }
        rerun(&address, &format!("kill round {round} after {delay:?}"));
    }
    assert!(
        killed_mid_run >= 10,
        "only {killed_mid_run} of 30 kills landed mid-run"
    );
    for point in [
        "after-attempt:9",
        "in-processor:9",
        "before-commit:9",
        "during-commit:1",
    ] {
        let address = cluster.database(&format!("at_{}", point.replace([':', '-'], "_")));
        let out = on(&env, &address)
            .env("SESSIONPIPE_FAILPOINT", point)
            .args(["run", "usage"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), None, "{point} did not crash the run");
        rerun(&address, point);
    }
}

#[test]
fn a_connection_lost_mid_run_is_74_and_the_next_run_loses_nothing() {
    let cluster = Cluster::start();
    let address = cluster.database("lost");
    let env = Env::new();
    for u in 0..6 {
        env.session(&format!("u{u}/s.jsonl"), crate::util::LINE);
    }
    let (marker, release) = (env.path("inside"), env.path("release"));
    env.processors(&[(
        "slow",
        &env.recorder(&format!(
            "touch '{}'; while [ ! -e '{}' ]; do sleep 0.05; done",
            marker.display(),
            release.display()
        )),
    )]);
    let run = env
        .std_cmd_on(Path::new(&address))
        .args(["run", "slow", "--jobs", "1", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while !marker.exists() {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The server drops the run's connection (a restart, a network cut).
    assert_eq!(
        cluster.psql(
            "lost",
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = 'sessionpipe'"
        ),
        "1\n"
    );
    std::fs::write(&release, "").unwrap();
    let out = run.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(74),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sessionpipe: slow:"), "{stderr}");
    // The next run does every session the lost one did not commit.
    let report = run_on(&env, &address, &["slow"]);
    let done: u64 = cluster
        .psql(
            "lost",
            "SELECT count(*) FROM session_processor_state WHERE status = 'ok'",
        )
        .trim()
        .parse()
        .unwrap();
    assert_eq!(done, 6);
    assert!(report["processed"].as_u64().unwrap() >= 1);
}
