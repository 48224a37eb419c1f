//! Per-processor locks and crash recovery.

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::{Env, LINE, n};

#[test]
fn a_second_run_of_one_processor_is_busy_while_another_processor_runs() {
    let env = Env::new();
    env.session("u/a.jsonl", LINE);
    let holder = env.hold("slow", &[("other", &env.recorder(""))]);

    env.cmd()
        .args(["run", "slow"])
        .assert()
        .code(75)
        .stderr("sessionpipe: slow: another run holds the lock\n");
    env.cmd()
        .args(["run", "slow", "--busy-exit-code", "0"])
        .assert()
        .success()
        .stderr("");
    let report = env.run_one(&["slow", "--busy-exit-code", "9"], 9);
    assert_eq!(report["exit_code"], 9);
    assert!(report["error"].as_str().unwrap().contains("holds the lock"));
    // A different processor runs meanwhile, on the same database.
    assert_eq!(n(&env.run_one(&["other"], 0), "processed"), 1);

    // --wait gets the lock once the holder is done.
    let waiter = env
        .std_cmd()
        .args(["run", "slow", "--wait", "20s"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    holder.release();
    assert!(waiter.wait_with_output().unwrap().status.success());
}

#[test]
fn kill_9_mid_run_loses_nothing_and_leaves_no_lock() {
    let env = Env::new();
    let marker = env.path("inside");
    // With one job, sessions are processed in name order; the second one
    // hangs the first time only, and the run is killed there.
    env.processors(&[(
        "count",
        &env.recorder(&format!(
            "case \"$SESSIONPIPE_SESSION_FILE\" in *b.jsonl) if [ ! -e '{m}' ]; then touch '{m}'; sleep 30; fi;; esac",
            m = marker.display()
        )),
    )]);
    for name in ["a", "b", "c"] {
        env.session(&format!("u/{name}.jsonl"), LINE);
    }
    let mut run = env
        .std_cmd()
        .args(["run", "count", "--jobs", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    crate::util::wait_for(&marker);
    run.kill().unwrap(); // SIGKILL
    run.wait().unwrap();

    // No stale lock: the rerun takes it at once and finishes the work.
    let report = env.run_one(&["count"], 0);
    assert_eq!(
        n(&report, "processed"),
        2,
        "b and c: a was committed before the kill"
    );
    for name in ["a", "b", "c"] {
        assert_eq!(
            env.status("count", &format!("u/{name}.jsonl")).as_deref(),
            Some("ok")
        );
    }
    let calls = env.calls();
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("u/a.jsonl")).count(),
        1
    );
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("u/c.jsonl")).count(),
        1
    );
    // At least once for an external command: b ran again after the crash.
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("u/b.jsonl")).count(),
        2
    );
    let integrity: String = env.scalar("PRAGMA integrity_check");
    assert_eq!(integrity, "ok");
    // The killed run is recorded as unfinished.
    let unfinished: i64 = env.scalar("SELECT count(*) FROM runs WHERE finished_at IS NULL");
    assert_eq!(unfinished, 1);
}

#[test]
fn database_and_lock_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    env.processors(&[("count", "true")]);
    env.session("u/a.jsonl", LINE);
    env.run_one(&["count"], 0);
    for file in [env.db.clone(), env.db.with_file_name("state.db.count.lock")] {
        let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
}

#[test]
fn one_database_one_lock_whatever_its_name_and_even_without_its_lock_file() {
    let env = Env::new();
    env.session("u/a.jsonl", LINE);
    let holder = env.hold("slow", &[]);
    let alias = env.path("alias.db");
    std::os::unix::fs::symlink(&env.db, &alias).unwrap();
    let spelled = env
        .db
        .parent()
        .unwrap()
        .join("..")
        .join("db")
        .join("state.db");
    // The lock file deleted under the running holder changes nothing.
    fs::remove_file(env.db.with_file_name("state.db.slow.lock")).unwrap();
    let relative = std::path::Path::new("db/state.db");
    for db in [env.db.as_path(), &alias, &spelled, relative] {
        let mut cmd = env.std_cmd_on(db);
        // The relative spelling, from another working directory.
        cmd.current_dir(env.dir.path()).args(["run", "slow"]);
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(75), "through {}", db.display());
    }
    holder.release();
    assert_eq!(n(&env.run_one(&["slow"], 0), "processed"), 0);
}

#[test]
fn a_fifo_device_or_folder_as_database_or_config_is_an_error_not_a_hang() {
    let env = Env::new();
    env.session("u/a.jsonl", LINE);
    let fifo = env.path("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path it is given.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let folder = env.path("folder");
    fs::create_dir(&folder).unwrap();
    let started = Instant::now();
    for db in [&fifo, &folder, std::path::Path::new("/dev/null")] {
        let out = assert_cmd::Command::from_std(env.std_cmd_on(db))
            .args(["run", "usage"])
            .timeout(Duration::from_secs(20))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(74), "database {}", db.display());
    }
    for config in [&fifo, &folder, std::path::Path::new("/dev/null")] {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("sessionpipe"));
        let out = cmd
            .env_remove("SESSIONPIPE_CONFIG")
            .arg("--config")
            .arg(config)
            .arg("list")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "config {}", config.display());
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "something hung"
    );
    // Nothing group- or world-writable was left beside them.
    for path in crate::util::walk(env.dir.path()) {
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_file() {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(meta.permissions().mode() & 0o022, 0, "{}", path.display());
        }
    }
}

#[test]
fn a_hard_linked_database_is_refused() {
    let env = Env::new();
    env.session("u/a.jsonl", LINE);
    env.run_one(&["usage"], 0);
    let link = env.path("link.db");
    fs::hard_link(&env.db, &link).unwrap();
    for db in [env.db.as_path(), link.as_path()] {
        let out = env.std_cmd_on(db).args(["run", "usage"]).output().unwrap();
        assert_eq!(out.status.code(), Some(74), "{}", db.display());
        assert!(String::from_utf8_lossy(&out.stderr).contains("hard links"));
    }
}

#[test]
fn a_squatter_on_the_lock_name_cannot_lock_sessionpipe_out() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    env.session("u/a.jsonl", LINE);
    env.run_one(&["usage"], 0);
    let meta = fs::metadata(&env.db).unwrap();
    let key = {
        use md5::Digest;
        md5::Md5::digest(format!("{}:{}:usage", meta.dev(), meta.ino()).as_bytes())
    };
    let mut name = b"\0sessionpipe-lock/".to_vec();
    name.extend_from_slice(sessionpipe::session::hex(&key).as_bytes());
    // Another user binds the predictable name and sits on it.
    let mut squat = std::process::Command::new("sleep");
    squat
        .arg("20")
        .uid(crate::util::NOBODY)
        .gid(crate::util::NOBODY);
    // SAFETY: only async-signal-safe calls (socket, bind, listen) run in
    // the child between fork and exec; the socket is inherited by `sleep`.
    unsafe {
        squat.pre_exec(move || {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            for (i, b) in name.iter().enumerate() {
                addr.sun_path[i] = *b as libc::c_char;
            }
            let len = (std::mem::size_of::<libc::sa_family_t>() + name.len()) as libc::socklen_t;
            if libc::bind(fd, (&addr as *const libc::sockaddr_un).cast(), len) != 0
                || libc::listen(fd, 8) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut squatter = squat.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    crate::util::append(&env.data.join("u/a.jsonl"), LINE);
    crate::util::age(&env.data.join("u/a.jsonl"));
    let report = env.run_one(&["usage"], 0);
    assert_eq!(n(&report, "processed"), 1, "the flock alone decides");
    squatter.kill().unwrap();
    squatter.wait().unwrap();
}

#[test]
fn a_stopping_signal_ends_a_wait_for_the_lock_at_once() {
    let env = Env::new();
    env.session("u/a.jsonl", LINE);
    let holder = env.hold("slow", &[]);
    let waiter = env
        .std_cmd()
        .args(["run", "slow", "--wait", "60s"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(waiter.id() as i32, libc::SIGTERM) }, 0);
    let out = waiter.wait_with_output().unwrap();
    assert!(sent.elapsed() < Duration::from_secs(5), "waited on");
    assert_eq!(out.status.code(), Some(143));
    holder.release();
}
