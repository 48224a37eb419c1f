//! A PostgreSQL server of the test's own: `initdb` into a temporary folder
//! (as `nobody` when the tests run as root: the server refuses root), the
//! server listening on a unix socket in that folder only, and stopped when
//! the cluster is dropped, whatever the test did.

use std::path::PathBuf;
use std::process::Command;

use tempfile::TempDir;

pub struct Cluster {
    dir: TempDir,
    bin: PathBuf,
    port: u16,
}

/// A loopback port no one listens on now: the system's pick, let go of
/// for the server to take (the socket file's name carries it too).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
    /// A server on a unix socket only, every connection trusted.
    pub fn start() -> Cluster {
        Cluster::started(false)
    }

    /// A server that also listens on 127.0.0.1, with TLS (a self-signed
    /// certificate for `localhost`, [`Cluster::ca`]) and a password
    /// ([`Cluster::PASSWORD`]) required on TCP.
    pub fn start_tls() -> Cluster {
        Cluster::started(true)
    }

    pub const PASSWORD: &str = "s3cret-pw";

    /// The CA that signed the TLS server's certificate, to trust it.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn started(tls: bool) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let bin = bin_dir();
        let port = free_port();
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
        let dir = cluster.dir.path().display().to_string();
        let options = if tls {
            cluster.tls_setup();
            format!(
                "-k {dir} -c listen_addresses=127.0.0.1 -p {} -c fsync=off -c ssl=on \
                 -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key",
                cluster.port
            )
        } else {
            format!(
                "-k {dir} -c listen_addresses='' -p {} -c fsync=off",
                cluster.port
            )
        };
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
        if tls {
            cluster.psql(
                "postgres",
                &format!("ALTER USER postgres PASSWORD '{}'", Cluster::PASSWORD),
            );
        }
        cluster
    }

    /// A certificate for `localhost` and 127.0.0.1 signed by a test CA of
    /// its own ([`Cluster::ca`]), and a password on TCP.
    fn tls_setup(&self) {
        let dir = self.dir.path();
        let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let openssl = |args: &[&str]| self.as_owner(Command::new("openssl").args(args));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=sessionpipe test CA",
            "-keyout",
            &path("ca.key"),
            "-out",
            &path("ca.crt"),
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &path("server.key"),
            "-out",
            &path("server.csr"),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &path("server.csr"),
            "-CA",
            &path("ca.crt"),
            "-CAkey",
            &path("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &path("server.ext"),
            "-out",
            &path("server.crt"),
        ]);
        std::fs::write(
            self.data().join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
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
        let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
        assert!(
            out.status.success(),
            "{cmd:?}: {}{}\nserver log:\n{log}",
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
