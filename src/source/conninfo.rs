//! Connection settings parsed from a `postgresql://` URL, and the TLS configuration they imply.
//!
//! Owns: URL parsing (user, password, host, port, database, `sslmode`, `sslrootcert`,
//! `application_name`), the rustls client configuration for each sslmode, and opening ordinary
//! SQL connections (tokio-postgres) with it. The replication connection reuses the same
//! [`ConnInfo`] and TLS config. Must never print the password: `Display` and `Debug` redact it.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::Client;

/// libpq's sslmode values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "prefer" | "allow" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnInfoError {
    #[error("connection URL is not valid ({0}); expected postgresql://user:password@host:port/database?sslmode=...")]
    Url(String),
    #[error("connection URL scheme must be postgresql:// or postgres://, not {0}://")]
    Scheme(String),
    #[error("connection URL has an unknown sslmode {0:?}: use disable, prefer, require, verify-ca or verify-full")]
    SslMode(String),
    #[error("connection URL parameter {0:?} is not supported (supported: sslmode, sslrootcert, application_name, connect_timeout)")]
    Param(String),
    #[error("sslmode={mode} needs a CA certificate: set sslrootcert=/path/to/ca.pem in the URL (could not read {path}: {reason})")]
    RootCert {
        mode: &'static str,
        path: String,
        reason: String,
    },
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

/// Parsed connection settings. The password is held but never displayed.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnInfo {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    pub application_name: String,
    pub connect_timeout: Option<std::time::Duration>,
    /// TCP user timeout and keepalive budget for SQL connections (`network.stall_timeout_ms`):
    /// a peer gone without a FIN or RST is noticed by the kernel within it.
    pub stall_timeout: Option<std::time::Duration>,
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

impl ConnInfo {
    pub fn parse(url: &str) -> Result<ConnInfo, ConnInfoError> {
        let u = url::Url::parse(url).map_err(|e| ConnInfoError::Url(e.to_string()))?;
        if u.scheme() != "postgresql" && u.scheme() != "postgres" {
            return Err(ConnInfoError::Scheme(u.scheme().to_string()));
        }
        let host = match u.host_str() {
            Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_string(),
            _ => "localhost".to_string(),
        };
        let user = if u.username().is_empty() {
            std::env::var("USER").unwrap_or_else(|_| "postgres".into())
        } else {
            decode(u.username())
        };
        let dbname = match u.path().trim_start_matches('/') {
            "" => user.clone(),
            p => decode(p),
        };
        let mut info = ConnInfo {
            host,
            port: u.port().unwrap_or(5432),
            user,
            password: u.password().map(decode),
            dbname,
            sslmode: SslMode::Prefer,
            sslrootcert: None,
            application_name: "remodel".into(),
            connect_timeout: None,
            stall_timeout: None,
        };
        for (k, v) in u.query_pairs() {
            match &*k {
                "sslmode" => {
                    info.sslmode =
                        SslMode::parse(&v).ok_or_else(|| ConnInfoError::SslMode(v.to_string()))?
                }
                "sslrootcert" => info.sslrootcert = Some(PathBuf::from(v.to_string())),
                "application_name" => info.application_name = v.to_string(),
                "connect_timeout" => {
                    let secs: u64 = v
                        .parse()
                        .map_err(|_| ConnInfoError::Url(format!("connect_timeout={v}")))?;
                    info.connect_timeout = Some(std::time::Duration::from_secs(secs));
                }
                other => return Err(ConnInfoError::Param(other.to_string())),
            }
        }
        Ok(info)
    }

    /// The URL with the password replaced by `***`.
    pub fn redacted(&self) -> String {
        let pw = if self.password.is_some() { ":***" } else { "" };
        format!(
            "postgresql://{}{}@{}:{}/{}?sslmode={}",
            self.user,
            pw,
            self.host,
            self.port,
            self.dbname,
            self.sslmode.as_str()
        )
    }

    /// The rustls client configuration this sslmode needs, or `None` for `disable`.
    pub fn tls_config(&self) -> Result<Option<Arc<ClientConfig>>, ConnInfoError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConnInfoError::Tls(e.to_string()))?;
        let config = match self.sslmode {
            SslMode::Disable => return Ok(None),
            SslMode::Prefer | SslMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth(),
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = Arc::new(self.root_store()?);
                let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| ConnInfoError::Tls(e.to_string()))?;
                let verifier: Arc<dyn ServerCertVerifier> = if self.sslmode == SslMode::VerifyCa {
                    Arc::new(ChainOnly(inner))
                } else {
                    inner
                };
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(verifier)
                    .with_no_client_auth()
            }
        };
        Ok(Some(Arc::new(config)))
    }

    fn root_store(&self) -> Result<RootCertStore, ConnInfoError> {
        let path = match &self.sslrootcert {
            Some(p) => p.clone(),
            None => std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".postgresql/root.crt"))
                .unwrap_or_else(|| PathBuf::from("root.crt")),
        };
        let err = |reason: String| ConnInfoError::RootCert {
            mode: self.sslmode.as_str(),
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(&path).map_err(|e| err(e.to_string()))?;
        let mut store = RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            let cert = cert.map_err(|e| err(e.to_string()))?;
            store.add(cert).map_err(|e| err(e.to_string()))?;
        }
        if store.is_empty() {
            return Err(err("no PEM certificate in the file".into()));
        }
        Ok(store)
    }

    /// The tokio-postgres configuration (TLS is chosen by [`ConnInfo::tls_config`]).
    pub fn pg_config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name(&self.application_name)
            .ssl_mode(match self.sslmode {
                SslMode::Disable => tokio_postgres::config::SslMode::Disable,
                SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                _ => tokio_postgres::config::SslMode::Require,
            });
        if let Some(pw) = &self.password {
            c.password(pw);
        }
        if let Some(t) = self.connect_timeout {
            c.connect_timeout(t);
        }
        if let Some(t) = self.stall_timeout {
            // Keepalive probes start after a third of it, then every tenth, three tries.
            c.keepalives(true)
                .keepalives_idle((t / 3).max(std::time::Duration::from_secs(1)))
                .keepalives_interval((t / 10).max(std::time::Duration::from_secs(1)))
                .keepalives_retries(3)
                .tcp_user_timeout(t);
        }
        c
    }

    /// Open an ordinary SQL connection; its driver task is spawned on the current runtime.
    pub async fn connect(&self) -> Result<Client, ConnectError> {
        let config = self.pg_config();
        let client = match self.tls_config()? {
            None => {
                let (client, conn) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| ConnectError::Postgres(self.redacted(), e.into()))?;
                tokio::spawn(conn);
                client
            }
            Some(tls) => {
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*tls).clone());
                let (client, conn) = config
                    .connect(tls)
                    .await
                    .map_err(|e| ConnectError::Postgres(self.redacted(), e.into()))?;
                tokio::spawn(conn);
                client
            }
        };
        client
            .batch_execute("SET DateStyle = ISO; SET IntervalStyle = postgres; SET extra_float_digits = 3; SET TimeZone = 'UTC'; SET standard_conforming_strings = on; SET bytea_output = hex")
            .await
            .map_err(|e| ConnectError::Postgres(self.redacted(), e.into()))?;
        Ok(client)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Info(#[from] ConnInfoError),
    #[error("could not connect to {0}: {1}")]
    Postgres(String, #[source] crate::pgerr::PgError),
}

impl ConnectError {
    /// A bad URL is definite; a refused or lost connection is transient unless the server's
    /// SQLSTATE (authentication, unknown database) or a TLS failure says otherwise.
    pub fn is_transient(&self) -> bool {
        match self {
            ConnectError::Info(_) => false,
            ConnectError::Postgres(_, e) => e.is_transient(),
        }
    }
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `sslmode=prefer/require`: encrypt, verify nothing (libpq's behaviour).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
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

/// `sslmode=verify-ca`: the chain must lead to the given CA; the host name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_url_and_redacts_password() {
        let c = ConnInfo::parse(
            "postgresql://al%40ice:s%3Acret@db.example:6543/app?sslmode=verify-full&sslrootcert=/ca.pem",
        )
        .unwrap();
        assert_eq!(c.user, "al@ice");
        assert_eq!(c.password.as_deref(), Some("s:cret"));
        assert_eq!(c.host, "db.example");
        assert_eq!(c.port, 6543);
        assert_eq!(c.dbname, "app");
        assert_eq!(c.sslmode, SslMode::VerifyFull);
        let shown = format!("{c} {c:?}");
        assert!(
            !shown.contains("s:cret") && !shown.contains("s%3Acret"),
            "{shown}"
        );
        assert!(shown.contains("***"));
    }

    #[test]
    fn rejects_unknown_sslmode_and_params() {
        assert!(matches!(
            ConnInfo::parse("postgresql://u@h/d?sslmode=maybe"),
            Err(ConnInfoError::SslMode(_))
        ));
        assert!(matches!(
            ConnInfo::parse("postgresql://u@h/d?foo=1"),
            Err(ConnInfoError::Param(_))
        ));
        assert!(matches!(
            ConnInfo::parse("mysql://u@h/d"),
            Err(ConnInfoError::Scheme(_))
        ));
    }

    #[test]
    fn verify_modes_need_a_readable_ca() {
        let c =
            ConnInfo::parse("postgresql://u@h/d?sslmode=verify-ca&sslrootcert=/nonexistent.pem")
                .unwrap();
        let e = c.tls_config().unwrap_err().to_string();
        assert!(
            e.contains("sslrootcert") && e.contains("/nonexistent.pem"),
            "{e}"
        );
    }
}
