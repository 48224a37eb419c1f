//! Reaching the server a `postgresql://` address names.
//!
//! The address is parsed as libpq parses it (host, port, user, database,
//! `host=/socket/dir` for a unix socket), and the password comes from the
//! address, `PGPASSWORD` or the password file (`PGPASSFILE`, else
//! `~/.pgpass`), as libpq looks for it. TLS: `sslmode=disable` never,
//! `prefer` (the default) and `require` encrypt without checking the
//! server's certificate, as libpq does, and `verify-full` checks it and its
//! host name against the Web PKI roots, or against `sslrootcert=FILE`.
//!
//! The password never reaches a message: what is shown of an address is
//! [`shown`], its host, port and database.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use postgres::config::Host;
use postgres::{Client, Config};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::env::Environment;

/// Whether a `--db` value names a PostgreSQL database.
pub fn is_address(db: &str) -> bool {
    db.starts_with("postgresql://") || db.starts_with("postgres://")
}

/// TLS as the address asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tls {
    Off,
    Unverified,
    Verified { root: Option<String> },
}

/// An address as the driver reads it, with what sessionpipe reads itself.
struct Parsed {
    config: Config,
    tls: Tls,
    /// `sslmode` as written; `None` when the address has none.
    mode: Option<String>,
    root: Option<String>,
}

/// An address without its password, for messages and suggested crontab
/// lines: rebuilt from what the driver parsed (user, hosts, port, database,
/// TLS), never cut out of the text, so that no spelling of a password can
/// survive into it.
pub fn shown(address: &str) -> String {
    let Ok(p) = parse(address, None) else {
        return "postgresql://(an address that does not parse)".into();
    };
    let encode = |text: &str| {
        text.replace('%', "%25")
            .replace('/', "%2F")
            .replace('@', "%40")
            .replace(':', "%3A")
            .replace('?', "%3F")
    };
    let hosts: Vec<String> = p
        .config
        .get_hosts()
        .iter()
        .map(|h| match h {
            // A host with an `@` is what is left of a password that had
            // one: not shown.
            Host::Tcp(name) if name.contains('@') => "(host hidden)".to_owned(),
            Host::Tcp(name) => encode(name),
            Host::Unix(path) => encode(&path.to_string_lossy()),
        })
        .collect();
    let user = p
        .config
        .get_user()
        .map(|u| format!("{}@", encode(u)))
        .unwrap_or_default();
    let port = match p.config.get_ports() {
        [] => String::new(),
        ports => format!(":{}", ports[0]),
    };
    let db = p.config.get_dbname().map(encode).unwrap_or_default();
    let mut query: Vec<String> = p.mode.iter().map(|m| format!("sslmode={m}")).collect();
    query.extend(p.root.iter().map(|r| format!("sslrootcert={r}")));
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    format!("postgresql://{user}{}{port}/{db}{query}", hosts.join(","))
}

/// Splits off what the driver does not read itself (`verify-full`,
/// `sslrootcert`) and parses the rest; `env_mode` is `PGSSLMODE`, for an
/// address that names no mode.
fn parse(address: &str, env_mode: Option<String>) -> Result<Parsed> {
    let (base, query) = address.split_once('?').unwrap_or((address, ""));
    let mut kept = Vec::new();
    let (mut mode, mut root) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", v)) => mode = Some(v.to_owned()),
            Some(("sslrootcert", v)) => root = Some(v.to_owned()),
            _ => kept.push(pair),
        }
    }
    let effective = mode.clone().or(env_mode).unwrap_or_else(|| "prefer".into());
    let mut tls = match effective.as_str() {
        "disable" => Tls::Off,
        "prefer" | "require" => Tls::Unverified,
        "verify-full" => Tls::Verified { root: root.clone() },
        other => bail!("sslmode={other} is not one of disable, prefer, require, verify-full"),
    };
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config = Config::from_str(&rest).map_err(|e| anyhow!("{e}"))?;
    // As libpq: TLS is for TCP; a unix socket ignores the mode.
    let hosts = config.get_hosts();
    if !hosts.is_empty() && hosts.iter().all(|h| matches!(h, Host::Unix(_))) {
        tls = Tls::Off;
    }
    config.ssl_mode(match tls {
        Tls::Off => postgres::config::SslMode::Disable,
        Tls::Unverified if effective == "prefer" => postgres::config::SslMode::Prefer,
        _ => postgres::config::SslMode::Require,
    });
    Ok(Parsed {
        config,
        tls,
        mode,
        root,
    })
}

/// Connects; `timeout` bounds the connection attempt. A connection that
/// goes silent is noticed within about a minute (TCP keepalives and a user
/// timeout), not the hours the system's defaults allow, so that a run
/// fails with 74 and its lock is released.
pub fn connect(address: &str, env: &Environment, timeout: Duration) -> Result<Client> {
    let shown = shown(address);
    let Parsed {
        mut config, tls, ..
    } = parse(address, env.text("PGSSLMODE"))
        .with_context(|| format!("bad database address {shown}"))?;
    if config.get_user().is_none() {
        let user = env.text("PGUSER").or_else(os_user);
        config.user(user.as_deref().unwrap_or("postgres"));
    }
    if config.get_password().is_none()
        && let Some(password) = env.text("PGPASSWORD").or_else(|| pgpass(&config, env))
    {
        config.password(password);
    }
    config
        .connect_timeout(timeout)
        .keepalives_idle(Duration::from_secs(30))
        .tcp_user_timeout(Duration::from_secs(60))
        .application_name("sessionpipe");
    let client = match tls {
        Tls::Off => config.connect(postgres::NoTls),
        tls => config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(
            &tls,
        )?)),
    };
    client.with_context(|| format!("cannot connect to {shown}"))
}

/// The name of the user this process runs as, as libpq defaults to it.
fn os_user() -> Option<String> {
    // SAFETY: getpwuid returns a pointer into static storage or null; its
    // name is a NUL-terminated string, copied before anything else runs.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() || (*pw).pw_name.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

fn tls_config(tls: &Tls) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS setup")?;
    Ok(match tls {
        Tls::Verified { root } => {
            let mut roots = rustls::RootCertStore::empty();
            match root {
                Some(file) => {
                    for cert in CertificateDer::pem_file_iter(file)
                        .with_context(|| format!("cannot read sslrootcert {file}"))?
                    {
                        roots
                            .add(cert.with_context(|| format!("bad certificate in {file}"))?)
                            .with_context(|| format!("bad certificate in {file}"))?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_no_client_auth(),
    })
}

/// `sslmode=require`: the channel is encrypted, the certificate not
/// checked (what libpq's `require` means); its signatures still are, so
/// the handshake itself is sound.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The folders libpq looks for the server's socket in by default.
const DEFAULT_SOCKET_DIRS: &[&str] = &["/var/run/postgresql", "/run/postgresql", "/tmp"];

/// The password file's password for this host, port, database and user
/// (`hostname:port:database:username:password`, `*` for any, `\` escapes).
fn pgpass(config: &Config, env: &Environment) -> Option<String> {
    let path = env
        .text("PGPASSFILE")
        .or_else(|| env.text("HOME").map(|h| format!("{h}/.pgpass")))?;
    // As libpq: a file others may read, or not a regular file, is ignored.
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() || std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077 != 0
    {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    // A socket matches its folder, and `localhost` when it is the default
    // one, as libpq matches them.
    let (host, alias) = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => (name.clone(), None),
        Some(Host::Unix(dir)) => {
            let dir = dir.to_string_lossy().into_owned();
            let default = DEFAULT_SOCKET_DIRS.contains(&dir.as_str());
            (dir, default.then_some("localhost"))
        }
        None => ("localhost".into(), None),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or("");
    let db = config.get_dbname().unwrap_or(user);
    let wanted = [port.as_str(), db, user];
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let fields = split_pgpass(line);
            let [h, p, d, u, password] = fields.as_slice() else {
                return None;
            };
            let host_fits = h == "*" || *h == host || alias.is_some_and(|a| h == a);
            let fits = [p, d, u]
                .iter()
                .zip(wanted)
                .all(|(field, want)| *field == "*" || **field == want);
            (host_fits && fits).then(|| password.clone())
        })
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(field)) = (chars.next(), fields.last_mut()) {
                    field.push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(field) = fields.last_mut() {
                    field.push(c);
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_never_shown_and_modes_are_checked() {
        for address in [
            "postgresql://ann:s3cret@db.example:6543/team?password=x&sslmode=require",
            "postgresql://ann:pa/s3cret@db.example:6543/team?sslmode=require",
            "postgresql://ann:pa?s3cret@db.example:6543/team",
            "postgresql://ann@db.example:6543/team?pass%77ord=s3cret",
            "postgresql://ann:p@ss=s3cret@127.0.0.1:1/team",
        ] {
            let shown = shown(address);
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        assert_eq!(
            shown("postgresql://ann:s3cret@db.example:6543/team?password=x&sslmode=require"),
            "postgresql://ann@db.example:6543/team?sslmode=require"
        );
        assert!(parse("postgresql://h/d?sslmode=verify-ca", None).is_err());
        let p = parse(
            "postgresql://h/d?sslmode=verify-full&sslrootcert=/ca.pem",
            None,
        )
        .unwrap();
        assert_eq!(
            p.tls,
            Tls::Verified {
                root: Some("/ca.pem".into())
            }
        );
        // A socket ignores the mode, as with libpq; PGSSLMODE is read when
        // the address names none.
        let p = parse("postgresql://u@%2Ftmp%2Fpg:5433/d?sslmode=require", None).unwrap();
        assert!(matches!(p.config.get_hosts(), [Host::Unix(_)]));
        assert_eq!(p.tls, Tls::Off);
        let p = parse("postgresql://u@h/d", Some("verify-full".into())).unwrap();
        assert_eq!(p.tls, Tls::Verified { root: None });
    }

    #[test]
    fn pgpass_lines_match_with_wildcards_and_escapes() {
        assert_eq!(
            split_pgpass(r"db\:1:*:team:ann:pa\:ss:word"),
            ["db:1", "*", "team", "ann", "pa:ss:word"]
        );
    }
}
