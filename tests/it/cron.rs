//! `* * * * * sessionpipe run --due` as cron runs it: silent when healthy,
//! paths that do not depend on the working directory.

use std::fs;

use crate::util::{Env, LINE, declaring, exec};

#[test]
fn a_healthy_due_line_is_silent_minute_after_minute() {
    let env = Env::new();
    env.processors(&[("count", &env.recorder(""))]);
    env.session("u/a.jsonl", LINE);
    for minute in 0..3 {
        let out = env.cmd().args(["run", "--due"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "minute {minute}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "minute {minute}");
        assert!(out.stdout.is_empty());
    }
    assert_eq!(env.calls().len(), 1);
}

#[test]
fn a_processor_switched_off_is_left_out_of_all_and_due() {
    let env = Env::new();
    let script = env.recorder("");
    let count = exec(&["sh", "-c", &script], &[("enabled", false.into())]);
    let mut table = declaring(vec![("count", count)]);
    let mut usage = toml::Table::new();
    usage.insert("enabled".into(), false.into());
    table.insert("usage".into(), toml::Value::Table(usage));
    env.write_config(&table);
    env.session("u/a.jsonl", LINE);
    for args in [&["run", "--all"][..], &["run", "--due"]] {
        let out = env.cmd().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    }
    assert!(env.calls().is_empty());
    // Named, it runs all the same.
    env.run_one(&["count"], 0);
    assert_eq!(env.calls().len(), 1);
}

#[test]
fn under_due_a_run_still_going_is_not_due_and_says_nothing() {
    let env = Env::new();
    env.session("u/a.jsonl", LINE);
    let holder = env.hold("slow", &[]);
    // The held run's own row makes `slow` not due by cadence either: clear
    // its start so only the lock keeps it from running.
    env.db().execute("DELETE FROM runs", []).unwrap();
    for _ in 0..2 {
        let out = env.cmd().args(["run", "--due"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    }
    holder.release();
}

#[test]
fn relative_paths_in_the_config_file_are_the_config_files_own() {
    let env = Env::new();
    let conf_dir = env.path("etc");
    fs::create_dir(&conf_dir).unwrap();
    fs::create_dir_all(conf_dir.join("sessions/u")).unwrap();
    fs::write(conf_dir.join("sessions/u/a.jsonl"), LINE).unwrap();
    let config = conf_dir.join("sessionpipe.toml");
    fs::write(&config, "data_dir = \"sessions\"\ndb = \"var/state.db\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&config, fs::Permissions::from_mode(0o600)).unwrap();
    let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("sessionpipe"))
        .env_clear()
        .current_dir("/")
        .args([
            "--config",
            config.to_str().unwrap(),
            "run",
            "usage",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["processed"], 1);
    assert!(conf_dir.join("var/state.db").exists());
}
