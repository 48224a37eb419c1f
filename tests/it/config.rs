//! Configuration, usage errors and the exit codes they map to.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::util::{Env, LINE};
use predicates::str::contains;

#[test]
fn unknown_processor_is_a_usage_error() {
    let env = Env::new();
    env.cmd()
        .args(["run", "nope"])
        .assert()
        .code(2)
        .stderr(contains("unknown processor \"nope\""));
}

#[test]
fn bad_flags_are_usage_errors() {
    let env = Env::new();
    let out = env.cmd().args(["run", "--bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("sessionpipe: unexpected argument '--bogus'"),
        "the prefix of every error: {stderr}"
    );
    env.cmd().args(["run"]).assert().code(2);
    env.cmd()
        .args(["run", "--all", "--time-budget", "soon"])
        .assert()
        .code(2);
    env.cmd()
        .args(["run", "x", "--max-attempts", "0"])
        .assert()
        .code(2);
}

#[test]
fn global_options_work_after_the_subcommand() {
    let env = Env::new();
    env.processors(&[("count", &env.recorder(""))]);
    env.session("u/a.jsonl", LINE);
    assert_cmd::Command::cargo_bin("sessionpipe")
        .unwrap()
        .args(["run", "count", "--db"])
        .arg(&env.db)
        .arg("--data-dir")
        .arg(&env.data)
        .arg("--config")
        .arg(&env.config)
        .assert()
        .success();
    assert_eq!(env.calls().len(), 1);
}

#[test]
fn environment_sets_paths_and_flags_win() {
    let env = Env::new();
    env.processors(&[("count", &env.recorder(""))]);
    env.session("u/a.jsonl", LINE);
    assert_cmd::Command::cargo_bin("sessionpipe")
        .unwrap()
        .env("SESSIONPIPE_CONFIG", &env.config)
        .env("SESSION_DATA_DIR", env.path("missing"))
        .env("SESSIONPIPE_DB", &env.db)
        .arg("--data-dir")
        .arg(&env.data)
        .args(["run", "count"])
        .assert()
        .success();
    assert_eq!(env.calls().len(), 1);
    assert!(env.db.exists());
}

#[test]
fn config_file_sets_paths() {
    let env = Env::new();
    let mut table = toml::Table::new();
    table.insert("data_dir".into(), env.data.to_str().unwrap().into());
    table.insert("db".into(), env.db.to_str().unwrap().into());
    env.write_config(&table);
    assert_cmd::Command::cargo_bin("sessionpipe")
        .unwrap()
        .arg("--config")
        .arg(&env.config)
        .args(["run", "--all"])
        .assert()
        .success();
    assert!(env.db.exists());
}

#[test]
fn missing_data_dir_is_a_config_error() {
    let env = Env::new();
    env.processors(&[("count", "true")]);
    fs::remove_dir(&env.data).unwrap();
    env.cmd()
        .args(["run", "count"])
        .assert()
        .code(78)
        .stderr(contains("data dir"));
}

#[test]
fn unknown_key_and_bad_value_are_named() {
    let env = Env::new();
    fs::write(
        &env.config,
        "[processors.x]\ncommand = [\"true\"]\ncadense = \"5m\"\n",
    )
    .unwrap();
    env.cmd()
        .args(["list"])
        .assert()
        .code(78)
        .stderr(contains("cadense"));
    fs::write(
        &env.config,
        "[processors.x]\ncommand = [\"true\"]\ntimeout = \"later\"\n",
    )
    .unwrap();
    env.cmd()
        .args(["list"])
        .assert()
        .code(78)
        .stderr(contains("later"));
    fs::write(&env.config, "not toml at all [").unwrap();
    env.cmd().args(["list"]).assert().code(78);
    fs::remove_file(&env.config).unwrap();
    env.cmd()
        .args(["list"])
        .assert()
        .code(78)
        .stderr(contains("config file"));
}

#[test]
fn writable_config_is_refused() {
    let env = Env::new();
    env.processors(&[("count", "true")]);
    fs::set_permissions(&env.config, fs::Permissions::from_mode(0o666)).unwrap();
    env.cmd()
        .args(["list"])
        .assert()
        .code(78)
        .stderr(contains("writable by group or others"));
}

#[test]
fn garbage_database_is_refused_untouched() {
    let env = Env::new();
    env.processors(&[("count", "true")]);
    env.session("u/a.jsonl", LINE);
    fs::create_dir_all(env.db.parent().unwrap()).unwrap();
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(&env.db, &garbage).unwrap();
    env.cmd()
        .args(["run", "count"])
        .assert()
        .code(74)
        .stderr(contains("not a usable SQLite database"));
    assert_eq!(fs::read(&env.db).unwrap(), garbage);
}

#[test]
fn list_shows_processors_with_crontab_lines() {
    let env = Env::new();
    env.processors(&[("scan", "true")]);
    let out = env.cmd().args(["list", "--json"]).assert().success();
    let list: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let scan = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "scan")
        .unwrap();
    assert_eq!(scan["kind"], "exec");
    assert_eq!(scan["version"], 1);
    assert_eq!(scan["cadence"], "10m");
    assert_eq!(scan["available"], true);
    let line = scan["crontab"].as_str().unwrap();
    let want = format!(
        "*/10 * * * * {} --config {} --data-dir {} --db {} run scan",
        assert_cmd::cargo::cargo_bin("sessionpipe").display(),
        env.config.display(),
        env.data.display(),
        env.db.display()
    );
    assert_eq!(line, want);
    env.cmd()
        .args(["list"])
        .assert()
        .success()
        .stdout(contains(want.as_str()));
    // Pasted into a crontab: run by sh, from elsewhere, with cron's bare
    // environment, it works.
    let command = line.splitn(6, ' ').nth(5).unwrap();
    env.session("u/a.jsonl", crate::util::LINE);
    let out = std::process::Command::new("/bin/sh")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/")
        .args(["-c", command])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.status("scan", "u/a.jsonl").as_deref(), Some("ok"));
}
