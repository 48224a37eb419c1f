//! A temporary data dir, database and config file around the built binary.

pub mod llm;
pub mod pg;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

pub struct Env {
    pub dir: TempDir,
    pub data: PathBuf,
    pub db: PathBuf,
    pub config: PathBuf,
    /// Exec processors built by [`Env::recorder`] append one line per call here.
    pub calls: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        let env = Env {
            db: dir.path().join("db").join("state.db"),
            config: dir.path().join("config.toml"),
            calls: dir.path().join("calls.log"),
            data,
            dir,
        };
        env.write_config(&toml::Table::new());
        env
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write_config(&self, table: &toml::Table) {
        fs::write(&self.config, toml::to_string(table).unwrap()).unwrap();
        fs::set_permissions(&self.config, fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// Declares exec processors running `sh -c SCRIPT`, cadence 10m.
    pub fn processors(&self, list: &[(&str, &str)]) {
        let sections = list
            .iter()
            .map(|(name, script)| {
                let keys = [("cadence", "10m".into()), ("timeout", "20s".into())];
                (*name, exec(&["sh", "-c", script, "sh"], &keys))
            })
            .collect();
        self.write_config(&declaring(sections));
    }

    /// Declares exec processor `name`, whose command waits inside its session
    /// until released, beside the processors `others`, and starts `run name`
    /// in the background: returns once that run holds the processor's lock
    /// and is inside a session.
    pub fn hold(&self, name: &str, others: &[(&str, &str)]) -> Held {
        let marker = self.path(&format!("{name}.inside"));
        let release = self.path(&format!("{name}.release"));
        let script = format!(
            "touch '{}'; while [ ! -e '{}' ]; do sleep 0.05; done",
            marker.display(),
            release.display()
        );
        let mut all = vec![(name, script.as_str())];
        all.extend_from_slice(others);
        self.processors(&all);
        let child = self
            .std_cmd()
            .args(["run", name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for(&marker);
        Held { child, release }
    }

    /// A script that records `<file> <bytes>` for each call, then runs `then`.
    pub fn recorder(&self, then: &str) -> String {
        format!(
            "echo \"$SESSIONPIPE_SESSION_FILE $SESSIONPIPE_BYTES\" >> '{}'; {then}",
            self.calls.display()
        )
    }

    /// The calls recorded so far.
    pub fn calls(&self) -> Vec<String> {
        fs::read_to_string(&self.calls)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Writes a session file and dates it an hour back, so that it is not
    /// "racy" and a rerun can skip it on stat alone.
    pub fn session(&self, file: &str, content: &str) -> PathBuf {
        let path = self.data.join(file);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        age(&path);
        path
    }

    /// The binary on this env's config, data dir and database, without the
    /// host's variables, as a plain command (to spawn in the background).
    pub fn std_cmd(&self) -> std::process::Command {
        self.std_cmd_on(&self.db)
    }

    /// [`Env::std_cmd`] on another database path.
    pub fn std_cmd_on(&self, db: &Path) -> std::process::Command {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("sessionpipe"));
        for var in HOST_VARIABLES {
            cmd.env_remove(var);
        }
        // Where a PostgreSQL run keeps this host's journal: in the test's
        // folder, not the home of whoever runs the tests.
        cmd.env("XDG_STATE_HOME", self.dir.path().join("state"));
        cmd.arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--db")
            .arg(db);
        cmd
    }

    pub fn cmd(&self) -> Command {
        Command::from_std(self.std_cmd())
    }

    /// The binary as an unprivileged user, so that file permissions apply
    /// even when the tests run as root: everything in the test folder is
    /// handed to `nobody` except `keep` (left to root). Without root, the
    /// plain command.
    pub fn cmd_unprivileged(&self, keep: &[&Path]) -> Command {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return self.cmd();
        }
        fs::create_dir_all(self.db.parent().unwrap()).unwrap();
        for path in walk(self.dir.path()) {
            if !keep.contains(&path.as_path()) {
                std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
            }
        }
        fs::set_permissions(self.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let mut cmd = self.std_cmd();
        std::os::unix::process::CommandExt::uid(&mut cmd, NOBODY);
        std::os::unix::process::CommandExt::gid(&mut cmd, NOBODY);
        Command::from_std(cmd)
    }

    /// Runs `run ARGS --json` and returns the exit code and the reports.
    pub fn run_json(&self, args: &[&str]) -> (i32, Vec<Value>) {
        let out = self
            .cmd()
            .arg("run")
            .args(args)
            .arg("--json")
            .output()
            .unwrap();
        let reports = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (out.status.code().unwrap_or(-1), reports)
    }

    /// Runs and returns the single report, asserting the exit code.
    pub fn run_one(&self, args: &[&str], code: i32) -> Value {
        let (got, mut reports) = self.run_json(args);
        assert_eq!(got, code, "exit code of run {args:?}: {reports:?}");
        assert_eq!(reports.len(), 1, "{reports:?}");
        reports.remove(0)
    }

    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.db).unwrap()
    }

    /// The one value a query returns.
    pub fn scalar<T: rusqlite::types::FromSql>(&self, sql: &str) -> T {
        self.row(sql, |r| r.get(0))
    }

    /// The one row a query returns, as `read` takes it.
    pub fn row<T>(&self, sql: &str, read: impl FnOnce(&rusqlite::Row) -> rusqlite::Result<T>) -> T {
        self.db()
            .query_row(sql, [], read)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Copies a fixture folder into the data dir as user `key`.
    /// Copies a fixture folder's files (not its folders) as user `key`'s.
    pub fn copy_fixtures(&self, folder: &str, key: &str) {
        for entry in fs::read_dir(Path::new(FIXTURES).join(folder)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                continue;
            }
            let name = path.file_name().unwrap().to_str().unwrap();
            self.session(
                &format!("{key}/{name}"),
                &fs::read_to_string(&path).unwrap(),
            );
        }
    }

    /// 51 sessions: every usage fixture under three user keys.
    pub fn fixture_corpus(&self) {
        for key in ["ann", "bo", "cy"] {
            for folder in ["agnes-usage", "claude-code-log", "sniffly"] {
                self.copy_fixtures(folder, &format!("{key}-{folder}"));
            }
        }
    }

    /// Everything the usage processor owns, one text line per row, for
    /// comparing whole databases.
    pub fn usage_tables(&self) -> Vec<String> {
        let conn = self.db();
        let mut out = Vec::new();
        for sql in [
            "SELECT * FROM usage_events ORDER BY session_file, id",
            "SELECT * FROM usage_session_summary ORDER BY session_file",
            "SELECT session_file, file_hash, items_extracted, status FROM session_processor_state
             WHERE processor_name = 'usage' ORDER BY session_file",
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

    /// The status column of one state row.
    pub fn status(&self, processor: &str, file: &str) -> Option<String> {
        self.db()
            .query_row(
                "SELECT status FROM session_processor_state WHERE processor_name = ?1 AND session_file = ?2",
                [processor, file],
                |r| r.get(0),
            )
            .ok()
    }

    /// Makes every pending retry due now.
    pub fn make_retries_due(&self) {
        self.db()
            .execute(
                "UPDATE session_processor_state SET next_attempt_at = '2000-01-01T00:00:00.000Z'
                 WHERE next_attempt_at IS NOT NULL",
                [],
            )
            .unwrap();
    }
}

/// Waits until a command creates `marker` (for at most 20 seconds).
pub fn wait_for(marker: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !marker.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never started its command"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A run of a processor held inside a session (see [`Env::hold`]).
pub struct Held {
    pub child: std::process::Child,
    release: PathBuf,
}

impl Held {
    /// Lets the run finish, and checks it succeeded.
    pub fn release(mut self) {
        fs::write(&self.release, "").unwrap();
        assert!(self.child.wait().unwrap().success());
    }
}

/// A `[processors.NAME]` section running `command`, with more `keys`.
pub fn exec(command: &[&str], keys: &[(&str, toml::Value)]) -> toml::Value {
    let mut section = toml::Table::new();
    let words = command.iter().map(|w| toml::Value::from(*w)).collect();
    section.insert("command".into(), toml::Value::Array(words));
    for (key, value) in keys {
        section.insert((*key).into(), value.clone());
    }
    toml::Value::Table(section)
}

/// A config declaring these processors; other sections may be added to it.
pub fn declaring(sections: Vec<(&str, toml::Value)>) -> toml::Table {
    let processors = sections
        .into_iter()
        .map(|(name, section)| (name.to_owned(), section))
        .collect();
    let mut table = toml::Table::new();
    table.insert("processors".into(), toml::Value::Table(processors));
    table
}

pub const NOBODY: u32 = 65534;

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/claude-code");

/// Every path under `dir`, itself included.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.is_symlink() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Sets a file's mtime an hour back.
pub fn age(path: &Path) {
    let f = fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
}

pub fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

pub fn n(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {report}"))
}

/// Variables of the machine running the tests that would change what the
/// binary does.
pub const HOST_VARIABLES: &[&str] = &[
    "SESSION_DATA_DIR",
    "SESSIONPIPE_DB",
    "SESSIONPIPE_CONFIG",
    "SESSIONPIPE_LLM_PROVIDER",
    "SESSIONPIPE_LLM_BASE_URL",
    "SESSIONPIPE_LLM_MODEL",
    "SESSIONPIPE_LLM_API_KEY",
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "SESSIONPIPE_FAILPOINT",
];

pub const LINE: &str = "{\"type\":\"user\",\"message\":{\"role\":\"user\",\"content\":\"hi\"}}\n";

/// `n` moments spread over `span` by a fixed pseudo-random sequence, to
/// kill a run at: the same moments on every test run.
pub fn kill_moments(span: Duration, n: usize) -> Vec<Duration> {
    let span = span.as_micros().max(1000) as u64;
    let mut seed: u64 = 0x5eed;
    (0..n)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            Duration::from_micros((seed >> 33) % span)
        })
        .collect()
}

/// Starts `cmd` (output discarded), kills it with SIGKILL after `delay`;
/// whether it was still running then.
pub fn kill_after(cmd: &mut std::process::Command, delay: Duration) -> bool {
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    child.kill().unwrap();
    child.wait().unwrap().code().is_none()
}
