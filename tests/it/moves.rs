//! Files that move, vanish and come back: counted once, under the name they
//! have now; kept when deleted, until pruned on purpose.

use std::fs;

use predicates::str::contains;

use crate::util::{Env, LINE, age, append};

/// The usage tables of a fresh run over `env`'s data dir as it is now.
fn fresh_tables(env: &Env) -> Vec<String> {
    let fresh = Env::new();
    fs::remove_dir(&fresh.data).unwrap();
    copy_tree(&env.data, &fresh.data);
    fresh.run_one(&["usage"], 0);
    fresh.usage_tables()
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            fs::copy(&path, &target).unwrap();
            age(&target);
        }
    }
}

#[test]
fn a_renamed_file_or_folder_is_counted_once_under_its_new_name() {
    let env = Env::new();
    env.copy_fixtures("sniffly", "ann");
    env.copy_fixtures("agnes-usage", "bo");
    env.run_one(&["usage"], 0);
    let ann = env.data.join("ann");
    let first = fs::read_dir(&ann).unwrap().next().unwrap().unwrap().path();
    // A file renamed in place; a user folder renamed; a file moved by copy
    // and delete (a new inode), after growing.
    fs::rename(&first, ann.join("renamed.jsonl")).unwrap();
    fs::rename(env.data.join("bo"), env.data.join("bo-new")).unwrap();
    let moved = fs::read_dir(&ann)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| !p.ends_with("renamed.jsonl"))
        .unwrap();
    let copy = env.data.join("ann").join("copied.jsonl");
    fs::copy(&moved, &copy).unwrap();
    fs::remove_file(&moved).unwrap();
    append(&copy, LINE);
    age(&copy);
    env.run_one(&["usage"], 0);
    assert_eq!(env.usage_tables(), fresh_tables(&env));
    let gone: i64 =
        env.scalar("SELECT count(*) FROM session_processor_state WHERE status = 'gone'");
    assert_eq!(gone, 0, "every vanished file was found again");
}

#[test]
fn a_deleted_file_keeps_its_outputs_until_pruned() {
    let env = Env::new();
    env.session("u/a.jsonl", LINE);
    let b = env.session("u/b.jsonl", &format!("{LINE}{LINE}"));
    env.run_one(&["usage"], 0);
    fs::remove_file(&b).unwrap();
    env.run_one(&["usage"], 0);
    assert_eq!(env.status("usage", "u/b.jsonl").as_deref(), Some("gone"));
    let kept: i64 =
        env.scalar("SELECT count(*) FROM usage_session_summary WHERE session_file = 'u/b.jsonl'");
    assert_eq!(kept, 1, "the outputs of a deleted file stay");
    env.cmd()
        .args(["state", "usage"])
        .assert()
        .success()
        .stdout(contains("1 gone"));
    env.cmd()
        .args(["state", "prune", "usage", "--gone", "--older-than", "30d"])
        .assert()
        .success()
        .stdout(contains("pruned 0"));
    env.cmd()
        .args(["state", "prune", "usage", "--gone"])
        .assert()
        .success()
        .stdout(contains("pruned 1"));
    let left: i64 =
        env.scalar("SELECT count(*) FROM usage_session_summary WHERE session_file = 'u/b.jsonl'");
    assert_eq!(left, 0);
    assert_eq!(env.status("usage", "u/b.jsonl"), None);
    assert_eq!(env.status("usage", "u/a.jsonl").as_deref(), Some("ok"));
}

#[test]
fn a_tree_that_vanishes_whole_is_refused_and_marks_nothing_gone() {
    let env = Env::new();
    env.session("u/a.jsonl", LINE);
    env.session("v/b.jsonl", LINE);
    env.run_one(&["usage"], 0);
    let hidden = env.path("hidden");
    fs::rename(&env.data, &hidden).unwrap();
    fs::create_dir(&env.data).unwrap();
    env.cmd()
        .args(["run", "usage"])
        .assert()
        .code(78)
        .stderr(contains("none of the 2 tracked session files"));
    let gone: i64 =
        env.scalar("SELECT count(*) FROM session_processor_state WHERE status = 'gone'");
    assert_eq!(gone, 0);
    // The mount is back: nothing to do.
    fs::remove_dir(&env.data).unwrap();
    fs::rename(&hidden, &env.data).unwrap();
    let report = env.run_one(&["usage"], 0);
    assert_eq!(report["processed"], 0);
}

#[test]
fn a_gone_file_that_comes_back_unchanged_is_not_processed_again() {
    let env = Env::new();
    env.session("u/a.jsonl", LINE);
    let b = env.session("u/b.jsonl", LINE);
    env.run_one(&["usage"], 0);
    let aside = env.path("b.jsonl");
    fs::rename(&b, &aside).unwrap();
    env.run_one(&["usage"], 0);
    assert_eq!(env.status("usage", "u/b.jsonl").as_deref(), Some("gone"));
    fs::rename(&aside, &b).unwrap();
    let report = env.run_one(&["usage"], 0);
    assert_eq!(
        (report["processed"].as_u64(), report["skipped"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(env.status("usage", "u/b.jsonl").as_deref(), Some("ok"));
}
