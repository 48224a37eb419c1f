//! What sessionpipe prints, to whom: a reader that closes the pipe early
//! stops the printing, not the work or its exit code, and the README's
//! exit-code table is the one in `src/exit.rs`.

use std::process::Stdio;

use crate::util::{Env, LINE};

/// Runs the binary with stdout a pipe whose reader is already gone.
fn with_closed_stdout(env: &Env, args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = env
        .std_cmd()
        .args(args)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn a_closed_pipe_ends_every_command_quietly() {
    let env = Env::new();
    env.session("u/a.jsonl", LINE);
    env.run_one(&["usage"], 0);
    for args in [
        &["list"][..],
        &["list", "--json"],
        &["state"],
        &["state", "--json"],
        &["state", "--session", "u/a.jsonl"],
        &["migrate", "--status"],
        &["run", "usage", "--json"],
        &["run", "usage", "--dry-run"],
    ] {
        // Each command does print something when stdout is open...
        let open = env.cmd().args(args).output().unwrap();
        let printed = !open.stdout.is_empty() || args.contains(&"--dry-run");
        assert!(printed, "{args:?} printed nothing");
        // ...and a closed stdout is no failure, and no panic.
        let (code, stderr) = with_closed_stdout(&env, args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?}");
    }
}

#[test]
fn a_closed_pipe_neither_hides_a_failure_nor_stops_the_next_processor() {
    let env = Env::new();
    env.processors(&[("bad", "exit 3"), ("good", &env.recorder(""))]);
    env.session("u/a.jsonl", LINE);
    let (code, stderr) = with_closed_stdout(&env, &["run", "bad", "good", "--json"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(env.calls().len(), 1, "good ran after bad");
}

#[test]
fn an_empty_path_variable_is_a_usage_error_unless_its_flag_is_given() {
    let env = Env::new();
    for var in ["SESSIONPIPE_DB", "SESSION_DATA_DIR"] {
        let mut cmd = env.std_cmd();
        let out = cmd.env(var, "").arg("state").output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{var}: the flag wins");
        let mut bare = std::process::Command::new(assert_cmd::cargo::cargo_bin("sessionpipe"));
        let out = bare
            .env_clear()
            .env(var, "")
            .args(["--config", env.config.to_str().unwrap(), "state"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("{var} is set but empty")),
            "{stderr}"
        );
    }
}

#[test]
fn the_readme_exit_code_table_is_the_one_in_the_code() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let (_, section) = readme.split_once("## Exit codes\n").unwrap();
    let rows: Vec<(i32, String)> = section
        .lines()
        .skip_while(|l| !l.starts_with("| 0 "))
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            (cells[0].parse().unwrap(), cells[1].to_owned())
        })
        .collect();
    let table: Vec<(i32, String)> = sessionpipe::exit::TABLE
        .iter()
        .map(|(c, m)| (*c, m.to_string()))
        .collect();
    assert_eq!(rows, table);
}

#[test]
fn with_json_every_failure_is_an_object_with_its_exit_code() {
    let env = Env::new();
    for (args, code) in [
        (
            vec!["--data-dir", "/nonexistent/data", "run", "usage", "--json"],
            78,
        ),
        (vec!["run", "nosuch", "--json"], 2),
        (vec!["--db", "/dev/null", "run", "usage", "--json"], 74),
    ] {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("sessionpipe"));
        let out = cmd
            .env_clear()
            .args(["--config", env.config.to_str().unwrap()])
            .args(if args.contains(&"--data-dir") {
                vec![]
            } else {
                vec!["--data-dir", env.data.to_str().unwrap()]
            })
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        let object: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {:?}", out.stdout));
        assert_eq!(object["exit_code"], code);
        assert!(!object["error"].as_str().unwrap().is_empty());
    }
}

#[test]
fn state_of_a_database_that_does_not_exist_says_so() {
    let env = Env::new();
    let out = env.cmd().arg("state").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no database at"), "{stderr}");
    assert!(!env.db.exists(), "reading state created nothing");
}

#[test]
fn help_names_a_subcommand() {
    let env = Env::new();
    for (args, first) in [
        (&["help", "run"][..], "Run processors"),
        (&["help", "state", "prune"], "Remove the rows"),
    ] {
        let out = env.cmd().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with(first),
            "{args:?}"
        );
    }
}
