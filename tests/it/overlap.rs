//! Many runs at once on one database: one holder per processor at a time,
//! the others exit 75, nothing is locked out, the tables are those of one run.

use std::process::Stdio;

use crate::util::Env;

#[test]
fn sixteen_runs_at_once_behave_as_one() {
    let single = Env::new();
    single.fixture_corpus();
    single.run_one(&["usage"], 0);

    let env = Env::new();
    env.fixture_corpus();
    let spawn = |args: &[&str]| {
        env.std_cmd()
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
    assert_eq!(env.usage_tables(), single.usage_tables());
    // Every run that got the lock is recorded, and none is left unfinished.
    let (runs, unfinished): (i64, i64) = env.row(
        "SELECT count(*), count(*) FILTER (WHERE finished_at IS NULL) FROM runs",
        |r| Ok((r.get(0)?, r.get(1)?)),
    );
    assert_eq!((runs, unfinished), (ran, 0));
}
