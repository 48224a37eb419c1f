//! What crosses hosts: the advisory lock, shards, addresses and passwords.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::{on, run_on};
use crate::util::pg::Cluster;
use crate::util::{Env, n};

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
    // Each "host" has a state folder of its own: only the server is
    // shared, as between machines.
    let host = |shard: &str, tmp: &Path| {
        let mut cmd = env.std_cmd_on(Path::new(&address));
        cmd.env("XDG_STATE_HOME", tmp)
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
    // (Refused the same, on another host, as the journal's folder is.)
    assert_eq!(
        again.status.code(),
        Some(75),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // Shards of another count would split the folders differently: busy.
    let other = host("1/3", &c).output().unwrap();
    assert_eq!(other.status.code(), Some(75));
    assert!(String::from_utf8_lossy(&other.stderr).contains("another count than 3"));
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
    let mut expected: Vec<String> = (0..24).map(|u| format!("user{u}/s.jsonl")).collect();
    expected.sort();
    assert_eq!(sessions_called(&env), expected, "each session exactly once");
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
    env.cmd()
        .args(["run", "--due", "--shard", "1/2"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("cannot be used with"));
    for bad in ["0/2", "3/2", "1/0", "x", "1/99999"] {
        env.cmd()
            .args(["run", "usage", "--shard", bad])
            .assert()
            .code(2)
            .stderr(predicates::str::contains("K/N"));
    }
}

#[test]
fn hosts_with_data_dirs_of_their_own_share_a_database_by_source() {
    let cluster = Cluster::start();
    let address = cluster.database("sources");
    // Two hosts, the same user folder and file names in each.
    let host = |source: &str| {
        let env = Env::new();
        env.copy_fixtures("sniffly", "ann");
        let mut config = toml::Table::new();
        config.insert("source".into(), source.into());
        env.write_config(&config);
        env
    };
    let (eu, us) = (host("eu-1"), host("us-1"));
    for env in [&eu, &us] {
        assert_eq!(n(&run_on(env, &address, &["usage"]), "processed"), 4);
    }
    // Neither took the other's files for gone, nor redoes its own.
    for env in [&eu, &us] {
        let report = run_on(env, &address, &["usage"]);
        assert_eq!((n(&report, "processed"), n(&report, "skipped")), (0, 0));
        let out = on(env, &address)
            .args(["state", "usage", "--json"])
            .output()
            .unwrap();
        let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (state[0]["tracked"].as_u64(), state[0]["gone"].as_u64()),
            (Some(4), Some(0))
        );
    }
    assert_eq!(
        cluster.psql(
            "sources",
            "SELECT source, count(*) FROM usage_session_summary GROUP BY source ORDER BY source"
        ),
        "eu-1|4\nus-1|4\n"
    );
    assert_eq!(
        cluster.psql(
            "sources",
            "SELECT count(DISTINCT source) FROM usage_request_costs WHERE cost_usd > 0"
        ),
        "2\n"
    );
    // The team's report counts both hosts' sessions.
    let alone = host("solo");
    alone.cmd().args(["run", "usage"]).assert().success();
    let alone = report_tokens(&mut alone.cmd());
    assert!(alone > 0.0);
    assert_eq!(report_tokens(&mut on(&eu, &address)), 2.0 * alone);
    // A name that could not be a key is refused.
    let bad = Env::new();
    let mut config = toml::Table::new();
    config.insert("source".into(), "eu 1/x".into());
    bad.write_config(&config);
    bad.cmd()
        .args(["state"])
        .assert()
        .code(78)
        .stderr(predicates::str::contains("source"));
}

/// The tokens `report --json` counts in all.
fn report_tokens(cmd: &mut assert_cmd::Command) -> f64 {
    let out = cmd.args(["report", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["total_tokens"].as_f64().unwrap())
        .sum()
}

#[test]
fn tls_and_passwords_as_libpq_reads_them_and_no_password_in_any_message() {
    let cluster = Cluster::start_tls();
    cluster.psql("postgres", "CREATE DATABASE tls");
    let env = Env::new();
    env.session("u/a.jsonl", crate::util::LINE);
    let port = cluster.port();
    let address = |rest: &str| format!("postgresql://postgres@localhost:{port}/tls?{rest}");
    let run = |address: &str, vars: &[(&str, &str)]| {
        let mut cmd = on(&env, address);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.args(["run", "usage"]).output().unwrap()
    };
    // Encrypted, certificate unchecked; the password from PGPASSWORD.
    let out = run(
        &address("sslmode=require"),
        &[("PGPASSWORD", Cluster::PASSWORD)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The certificate checked against the file given, the password from
    // the password file.
    let pgpass = env.path("pgpass");
    std::fs::write(
        &pgpass,
        format!("localhost:{port}:tls:postgres:{}\n", Cluster::PASSWORD),
    )
    .unwrap();
    let verified = address(&format!(
        "sslmode=verify-full&sslrootcert={}",
        cluster.ca().display()
    ));
    // As libpq: a password file others can read is not used.
    let out = run(&verified, &[("PGPASSFILE", pgpass.to_str().unwrap())]);
    assert_eq!(out.status.code(), Some(74));
    assert!(String::from_utf8_lossy(&out.stderr).contains("password missing"));
    std::fs::set_permissions(&pgpass, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = run(&verified, &[("PGPASSFILE", pgpass.to_str().unwrap())]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A certificate no root vouches for: refused, 74.
    let out = run(
        &address("sslmode=verify-full"),
        &[("PGPASSWORD", Cluster::PASSWORD)],
    );
    assert_eq!(out.status.code(), Some(74));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
    // The server demands TLS: without it, refused.
    let out = run(
        &address("sslmode=disable"),
        &[("PGPASSWORD", Cluster::PASSWORD)],
    );
    assert_eq!(out.status.code(), Some(74));
    // A wrong password in the address is never repeated, here or in list's
    // crontab lines.
    let wrong = format!("postgresql://postgres:Wr0ngPass@localhost:{port}/tls?sslmode=require");
    let out = run(&wrong, &[]);
    assert_eq!(out.status.code(), Some(74));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("password authentication failed"), "{said}");
    assert!(!said.contains("Wr0ngPass"), "{said}");
    let out = on(&env, &wrong).args(["list"]).output().unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("postgresql://postgres@localhost"),
        "{listed}"
    );
    assert!(!listed.contains("Wr0ngPass"), "{listed}");
}

#[test]
fn a_journal_folder_others_can_write_to_is_refused() {
    let cluster = Cluster::start();
    let address = cluster.database("locks");
    let env = Env::new();
    env.session("u/a.jsonl", crate::util::LINE);
    // The journal's folder must be ours alone: one others can write to is
    // refused, and the refused run holds no lock on the server.
    let shared = env.path("shared-state");
    std::fs::create_dir_all(shared.join("sessionpipe")).unwrap();
    std::fs::set_permissions(
        shared.join("sessionpipe"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let out = on(&env, &address)
        .env("XDG_STATE_HOME", &shared)
        .args(["run", "usage"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(74));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a private folder"));
    assert_eq!(
        cluster.psql(
            "locks",
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        ),
        "0\n"
    );
}

#[test]
fn a_user_folder_renamed_into_another_shard_is_moved_not_counted_twice() {
    let cluster = Cluster::start();
    let address = cluster.database("renamed");
    let env = Env::new();
    let in_shard = |k: u32| {
        (0..100)
            .map(|i| format!("user{i}"))
            .find(|u| sessionpipe::shard::of(u, 2) == k)
            .unwrap()
    };
    let (from, to) = (in_shard(2), in_shard(1));
    env.copy_fixtures("sniffly", &from);
    for shard in ["1/2", "2/2"] {
        run_on(&env, &address, &["usage", "--shard", shard]);
    }
    let summaries = || cluster.psql("renamed", "SELECT count(*) FROM usage_session_summary");
    assert_eq!(summaries(), "4\n");
    std::fs::rename(env.data.join(&from), env.data.join(&to)).unwrap();
    // The new folder's shard runs first: it finds the old files' content.
    let report = run_on(&env, &address, &["usage", "--shard", "1/2", "-v"]);
    assert_eq!(n(&report, "processed"), 4);
    run_on(&env, &address, &["usage", "--shard", "2/2"]);
    assert_eq!(summaries(), "4\n");
    assert_eq!(
        cluster.psql(
            "renamed",
            &format!(
                "SELECT count(*) FROM session_processor_state WHERE session_file LIKE '{from}/%'"
            )
        ),
        "0\n"
    );
}

/// The sessions a recorder processor was called with, sorted.
fn sessions_called(env: &Env) -> Vec<String> {
    let mut calls: Vec<String> = env
        .calls()
        .iter()
        .map(|c| c.split(' ').next().unwrap_or_default().to_owned())
        .collect();
    calls.sort();
    calls
}
