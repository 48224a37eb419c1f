//! External commands as an attacker and an unlucky operator meet them: a
//! session swapped for a link while runs happen, credentials in the
//! environment, a program that is not there, a daemon holding the output.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use predicates::str::contains;

use crate::util::{Env, LINE, declaring, exec};

#[test]
fn a_name_flipped_to_a_link_while_runs_happen_never_hands_over_the_target() {
    let env = Env::new();
    let secret = env.path("secret.jsonl");
    fs::write(&secret, "{\"cwd\":\"TOP-SECRET\"}\n").unwrap();
    let captured = env.path("captured");
    env.processors(&[("grab", &format!("cat \"$1\" >> '{}'", captured.display()))]);
    let name = env.data.join("u/a.jsonl");
    env.session("u/a.jsonl", LINE);
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (stop, name, secret) = (stop.clone(), name.clone(), secret.clone());
        let tmp = env.data.join("u/.flip");
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                // Atomic swaps, as `mv -T` does: a link to the secret, then a
                // regular file with new content (so every run processes it).
                let _ = fs::remove_file(&tmp);
                if i.is_multiple_of(2) {
                    let _ = std::os::unix::fs::symlink(&secret, &tmp);
                } else {
                    let _ = fs::write(&tmp, LINE.repeat((i % 7 + 1) as usize));
                }
                let _ = fs::rename(&tmp, &name);
                std::thread::sleep(Duration::from_micros(300));
            }
        })
    };
    for _ in 0..150 {
        let out = env
            .cmd()
            .args(["-q", "run", "grab", "usage"])
            .output()
            .unwrap();
        assert!(out.status.code().is_some(), "killed by a signal");
    }
    stop.store(true, Ordering::SeqCst);
    flipper.join().unwrap();
    let seen = fs::read_to_string(&captured).unwrap_or_default();
    assert!(!seen.is_empty(), "the command ran");
    assert!(
        !seen.contains("TOP-SECRET"),
        "the command read the link's target"
    );
    let leaked: i64 = env.scalar("SELECT count(*) FROM usage_events WHERE cwd = 'TOP-SECRET'");
    assert_eq!(leaked, 0);
}

#[test]
fn credentials_never_reach_a_command_unless_let_through_by_name() {
    let env = Env::new();
    let (all, some) = (env.path("all.env"), env.path("some.env"));
    let sections = [
        ("plain", &all, vec![]),
        ("needy", &some, vec!["TEAM_LLM_KEY"]),
    ]
    .into_iter()
    .map(|(name, out, env_list)| {
        let script = format!("env > '{}'", out.display());
        let let_through = toml::Value::Array(env_list.into_iter().map(Into::into).collect());
        (name, exec(&["sh", "-c", &script], &[("env", let_through)]))
    })
    .collect();
    let mut config = declaring(sections);
    let mut llm = toml::Table::new();
    llm.insert("api_key_env".into(), "TEAM_LLM_KEY".into());
    config.insert("llm".into(), toml::Value::Table(llm));
    env.write_config(&config);
    env.session("u/a.jsonl", LINE);
    env.cmd()
        .args(["run", "plain", "needy"])
        .env("SESSIONPIPE_LLM_API_KEY", "sk-one")
        .env("SESSIONPIPE_LLM_MODEL", "m")
        .env("ANTHROPIC_API_KEY", "sk-two")
        .env("OPENAI_API_KEY", "sk-three")
        .env("TEAM_LLM_KEY", "sk-four")
        .env("HARMLESS", "kept")
        .assert()
        .success();
    let plain = fs::read_to_string(&all).unwrap();
    for secret in [
        "sk-one",
        "sk-two",
        "sk-three",
        "sk-four",
        "SESSIONPIPE_LLM_",
    ] {
        assert!(!plain.contains(secret), "{secret} reached the command");
    }
    assert!(
        plain.contains("HARMLESS=kept"),
        "other variables are inherited"
    );
    assert!(plain.contains("SESSIONPIPE_SESSION_FILE=u/a.jsonl"));
    let needy = fs::read_to_string(&some).unwrap();
    assert!(
        needy.contains("TEAM_LLM_KEY=sk-four"),
        "let through by name"
    );
    assert!(!needy.contains("sk-two"));
}

#[test]
fn a_missing_or_non_executable_program_makes_the_processor_unavailable() {
    let env = Env::new();
    let program = env.path("bin/scan");
    let scan = exec(&[program.to_str().unwrap()], &[]);
    env.write_config(&declaring(vec![("scan", scan)]));
    env.session("u/a.jsonl", LINE);
    env.session("u/b.jsonl", LINE);
    for _ in 0..2 {
        env.cmd()
            .args(["run", "scan"])
            .assert()
            .code(69)
            .stderr(contains("scan: unavailable"));
    }
    env.cmd()
        .args(["list"])
        .assert()
        .success()
        .stdout(contains("does not exist or is not an executable file"));
    // `--all` skips it with one warning and charges no session.
    env.cmd().args(["run", "--all"]).assert().success();
    fs::create_dir_all(program.parent().unwrap()).unwrap();
    fs::write(&program, "#!/bin/sh\nexit 0\n").unwrap();
    env.cmd().args(["run", "scan"]).assert().code(69);
    fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
    // Installed: every session is processed at once, none was quarantined.
    let report = env.run_one(&["scan"], 0);
    assert_eq!(report["processed"], 2);
}

#[test]
fn a_daemon_holding_the_output_does_not_hold_the_run() {
    let env = Env::new();
    let spawner = exec(
        &["sh", "-c", "setsid sleep 30 & echo '{\"items\": 2}'"],
        &[("timeout", "3s".into())],
    );
    env.write_config(&declaring(vec![("spawner", spawner)]));
    env.session("u/a.jsonl", LINE);
    let started = Instant::now();
    let report = env.run_one(&["spawner"], 0);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the run waited for the daemon"
    );
    assert_eq!(report["items_extracted"], 2, "output read before the exit");
}

#[test]
fn a_command_reading_sessionpipes_own_environment_gets_no_key_kept() {
    let env = Env::new();
    env.processors(&[("peek", "tr '\\0' '\\n' < /proc/$PPID/environ >&2; exit 1")]);
    env.session("u/a.jsonl", LINE);
    // As root the command can read anything: what it printed is redacted.
    let out = env
        .cmd()
        .args(["run", "peek"])
        .env("ANTHROPIC_API_KEY", "sk-leaked-0123456789")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("sk-leaked-0123456789"), "{stderr}");
    let kept: String = env.scalar("SELECT last_error FROM session_processor_state");
    assert!(!kept.contains("sk-leaked-0123456789"), "{kept}");
    // As the same unprivileged user, it cannot read it at all.
    let mut cmd = env.cmd_unprivileged(&[]);
    env.make_retries_due();
    let out = cmd
        .args(["run", "peek"])
        .env("ANTHROPIC_API_KEY", "sk-leaked-0123456789")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("sk-leaked"), "{stderr}");
    assert!(stderr.contains("ermission denied"), "{stderr}");
}
