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

/// An address without its password (in the user part or a `password=`
/// parameter), for messages and suggested crontab lines.
pub fn shown(address: &str) -> String {
    let (base, query) = match address.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (address, None),
    };
    let base = match base.split_once("://") {
        Some((scheme, rest)) => {
            // The user part ends at the last `@` before the path.
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((user, host)) => {
                    let user = user.split_once(':').map_or(user, |(name, _)| name);
                    format!("{scheme}://{user}@{host}{path}")
                }
                None => base.to_owned(),
            }
        }
        None => base.to_owned(),
    };
    let kept: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("password="))
        .collect();
    if kept.is_empty() {
        base
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// Splits off what the driver does not read itself (`verify-full`,
/// `sslrootcert`) and parses the rest.
fn parse(address: &str) -> Result<(Config, Tls)> {
    let (base, query) = address.split_once('?').unwrap_or((address, ""));
    let mut kept = Vec::new();
    let mut mode = "prefer".to_owned();
    let mut root = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", v)) => mode = v.to_owned(),
            Some(("sslrootcert", v)) => root = Some(v.to_owned()),
            _ => kept.push(pair),
        }
    }
    let tls = match mode.as_str() {
        "disable" => Tls::Off,
        "prefer" | "require" => Tls::Unverified,
        "verify-full" => Tls::Verified { root },
        other => bail!("sslmode={other} is not one of disable, prefer, require, verify-full"),
    };
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config = Config::from_str(&rest).map_err(|e| anyhow!("{e}"))?;
    config.ssl_mode(match tls {
        Tls::Off => postgres::config::SslMode::Disable,
        Tls::Unverified if mode == "prefer" => postgres::config::SslMode::Prefer,
        _ => postgres::config::SslMode::Require,
    });
    Ok((config, tls))
}

/// Connects; `timeout` bounds the connection attempt.
pub fn connect(address: &str, env: &Environment, timeout: Duration) -> Result<Client> {
    let shown = shown(address);
    let (mut config, tls) =
        parse(address).with_context(|| format!("bad database address {shown}"))?;
    if config.get_user().is_none() {
        let user = env.text("PGUSER").or_else(|| env.text("USER"));
        config.user(user.as_deref().unwrap_or("postgres"));
    }
    if config.get_password().is_none()
        && let Some(password) = env.text("PGPASSWORD").or_else(|| pgpass(&config, env))
    {
        config.password(password);
    }
    config.connect_timeout(timeout);
    config.application_name("sessionpipe");
    let client = match tls {
        Tls::Off => config.connect(postgres::NoTls),
        tls => config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(
            &tls,
        )?)),
    };
    client.with_context(|| format!("cannot connect to {shown}"))
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

/// The password file's password for this host, port, database and user
/// (`hostname:port:database:username:password`, `*` for any, `\` escapes).
fn pgpass(config: &Config, env: &Environment) -> Option<String> {
    let path = env
        .text("PGPASSFILE")
        .or_else(|| env.text("HOME").map(|h| format!("{h}/.pgpass")))?;
    let text = std::fs::read_to_string(path).ok()?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        // libpq matches a socket connection as `localhost`.
        Some(Host::Unix(_)) | None => "localhost".into(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or("");
    let db = config.get_dbname().unwrap_or(user);
    let wanted = [host.as_str(), &port, db, user];
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let fields = split_pgpass(line);
            let [h, p, d, u, password] = fields.as_slice() else {
                return None;
            };
            let fits = [h, p, d, u]
                .iter()
                .zip(wanted)
                .all(|(field, want)| *field == "*" || **field == want);
            fits.then(|| password.clone())
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
        let shown =
            shown("postgresql://ann:s3cret@db.example:6543/team?password=x&sslmode=require");
        assert_eq!(
            shown,
            "postgresql://ann@db.example:6543/team?sslmode=require"
        );
        assert!(!shown.contains("s3cret"));
        assert!(parse("postgresql://h/d?sslmode=verify-ca").is_err());
        let (_, tls) = parse("postgresql://h/d?sslmode=verify-full&sslrootcert=/ca.pem").unwrap();
        assert_eq!(
            tls,
            Tls::Verified {
                root: Some("/ca.pem".into())
            }
        );
        let (config, _) = parse("postgresql://u@%2Ftmp%2Fpg:5433/d").unwrap();
        assert!(matches!(config.get_hosts(), [Host::Unix(_)]));
    }

    #[test]
    fn pgpass_lines_match_with_wildcards_and_escapes() {
        assert_eq!(
            split_pgpass(r"db\:1:*:team:ann:pa\:ss:word"),
            ["db:1", "*", "team", "ann", "pa:ss:word"]
        );
    }
}
