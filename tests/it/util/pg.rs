//! A PostgreSQL server of the test's own: `initdb` into a temporary folder
//! (as `nobody` when the tests run as root: the server refuses root), the
//! server listening on a unix socket in that folder only, and stopped when
//! the cluster is dropped, whatever the test did.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};

use tempfile::TempDir;

pub struct Cluster {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
}

/// Ports differ per cluster: the socket file's name carries the port, and
/// clusters of one test run share nothing else.
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// The server's programs: Debian keeps them out of `PATH`.
fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server is not installed (apt-get install -y postgresql)")
        .map(|e| e.unwrap().path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().expect("no initdb under /usr/lib/postgresql")
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let bin = bin_dir();
        let base = 20_000 + (std::process::id() % 2_000) as u16 * 10;
        let port = base + NEXT_PORT.fetch_add(1, Ordering::SeqCst) % 10;
        let cluster = Cluster { dir, bin, port };
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            std::os::unix::fs::chown(cluster.dir.path(), Some(super::NOBODY), Some(super::NOBODY))
                .unwrap();
        }
        let data = cluster.data();
        cluster.as_owner(
            Command::new(cluster.bin.join("initdb"))
                .args([
                    "-D",
                    data.to_str().unwrap(),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                ])
                .args(["--no-sync"]),
        );
        let options = format!(
            "-k {} -c listen_addresses='' -p {} -c fsync=off",
            cluster.dir.path().display(),
            cluster.port
        );
        cluster.as_owner(Command::new(cluster.bin.join("pg_ctl")).args([
            "start",
            "-w",
            "-D",
            data.to_str().unwrap(),
            "-l",
            cluster.dir.path().join("log").to_str().unwrap(),
            "-o",
            &options,
        ]));
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs a server program as the cluster's owner; panics with its output
    /// when it fails.
    fn as_owner(&self, cmd: &mut Command) {
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::process::CommandExt::uid(cmd, super::NOBODY);
            std::os::unix::process::CommandExt::gid(cmd, super::NOBODY);
        }
        let out = cmd.current_dir(self.dir.path()).output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The socket folder, percent-encoded for an address.
    fn host(&self) -> String {
        self.dir.path().to_str().unwrap().replace('/', "%2F")
    }

    /// A new, empty database on this server; returns its address.
    pub fn database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.address(name)
    }

    pub fn address(&self, name: &str) -> String {
        format!("postgresql://postgres@{}:{}/{name}", self.host(), self.port)
    }

    /// Runs SQL with `psql` in database `db`; returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                self.dir.path().to_str().unwrap(),
                "-p",
                &self.port.to_string(),
            ])
            .args(["-U", "postgres", "-d", db, "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut stop = Command::new(self.bin.join("pg_ctl"));
        stop.args([
            "stop",
            "-m",
            "immediate",
            "-D",
            self.data().to_str().unwrap(),
        ]);
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::process::CommandExt::uid(&mut stop, super::NOBODY);
            std::os::unix::process::CommandExt::gid(&mut stop, super::NOBODY);
        }
        let _ = stop.current_dir(self.dir.path()).output();
    }
}
