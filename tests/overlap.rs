//! Many runs at once on one database: one holder per processor at a time,
//! the others exit 75, nothing is locked out, the tables are those of one run.

mod util;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use util::{Env, HOST_VARIABLES};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/claude-code");

fn corpus(env: &Env) {
    for key in ["ann", "bo", "cy"] {
        for folder in ["agnes-usage", "claude-code-log", "sniffly"] {
            for entry in fs::read_dir(Path::new(FIXTURES).join(folder)).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_str().unwrap();
                env.session(
                    &format!("{key}/{folder}-{name}"),
                    &fs::read_to_string(&path).unwrap(),
                );
            }
        }
    }
}

fn tables(env: &Env) -> Vec<String> {
    let conn = env.db();
    let mut out = Vec::new();
    for sql in [
        "SELECT * FROM usage_events ORDER BY session_file, id",
        "SELECT * FROM usage_session_summary ORDER BY session_file",
        "SELECT session_file, file_hash, status FROM processor_state ORDER BY session_file",
    ] {
        let mut stmt = conn.prepare(sql).unwrap();
        let width = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                Ok((0..width)
                    .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .unwrap();
        out.extend(rows.map(Result::unwrap));
    }
    out
}

#[test]
fn sixteen_runs_at_once_behave_as_one() {
    let single = Env::new();
    corpus(&single);
    single.run_one(&["usage"], 0);

    let env = Env::new();
    corpus(&env);
    let spawn = |args: &[&str]| {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("sessionpipe"));
        for var in HOST_VARIABLES {
            cmd.env_remove(var);
        }
        cmd.arg("--config")
            .arg(&env.config)
            .arg("--data-dir")
            .arg(&env.data)
            .arg("--db")
            .arg(&env.db)
            .arg("-q")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut children: Vec<_> = (0..16).map(|_| spawn(&["run", "usage"])).collect();
    children.push(spawn(&["run", "--all"]));
    let mut ran = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("locked"), "{stderr}");
        match out.status.code() {
            Some(0) => ran += 1,
            Some(75) => assert!(stderr.contains("another run holds the lock"), "{stderr}"),
            other => panic!("exit {other:?}: {stderr}"),
        }
    }
    assert!(ran >= 1);
    assert_eq!(tables(&env), tables(&single));
    // Every run that got the lock is recorded, and none is left unfinished.
    let (runs, unfinished): (i64, i64) = env
        .db()
        .query_row(
            "SELECT count(*), count(*) FILTER (WHERE finished_at IS NULL) FROM runs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((runs, unfinished), (ran, 0));
}
