//! Test certificates (a CA and a server certificate it signed) and the TLS-enabled source.

use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use remodel::cluster::{self, ClusterOptions, ScratchDir, TlsFiles};

use super::clusters::{self, ClusterHandle};

/// PEM files written by [`tls_certs`].
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// The CA certificate clients trust (`sslrootcert`).
    pub ca_pem_path: PathBuf,
    /// Server certificate signed by that CA; SANs `localhost` and IP `127.0.0.1`.
    pub server_cert_path: PathBuf,
    /// Server private key; mode 0600, owned by the `postgres` OS user when we are root.
    pub server_key_path: PathBuf,
}

impl TlsMaterial {
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            cert_pem: self.server_cert_path.clone(),
            key_pem: self.server_key_path.clone(),
        }
    }
}

/// Generates a fresh CA and a server certificate signed by it into `dir` (`ca.pem`,
/// `server.crt`, `server.key`). A separate CA, because rustls refuses a self-signed certificate
/// that is its own CA as a server certificate.
pub fn tls_certs(dir: &Path) -> TlsMaterial {
    let ca_key = KeyPair::generate().expect("generating the CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // A distinct name per CA: clients look issuers up by name.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, super::unique_name("remodel test CA"));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).expect("signing the CA");

    let server_key = KeyPair::generate().expect("generating the server key");
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("server params");
    server_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    server_params.is_ca = IsCa::ExplicitNoCa;
    server_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server_params
        .signed_by(&server_key, &ca_cert, &ca_key)
        .expect("signing the server certificate");

    let material = TlsMaterial {
        ca_pem_path: dir.join("ca.pem"),
        server_cert_path: dir.join("server.crt"),
        server_key_path: dir.join("server.key"),
    };
    write(&material.ca_pem_path, &ca_cert.pem(), 0o644);
    write(&material.server_cert_path, &server_cert.pem(), 0o644);
    write(
        &material.server_key_path,
        &server_key.serialize_pem(),
        0o600,
    );
    if nix::unistd::Uid::effective().is_root() {
        // PostgreSQL accepts a key owned by its own user with mode 0600.
        if let Ok(Some(pg)) = nix::unistd::User::from_name("postgres") {
            chown(
                &material.server_key_path,
                Some(pg.uid.as_raw()),
                Some(pg.gid.as_raw()),
            )
            .expect("chown of the server key to postgres");
        }
    }
    material
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// A TLS-enabled cluster (shared by the TLS tests of this binary, started on first use) and the
/// certificates it serves.
pub struct TlsSource {
    pub cluster: ClusterHandle,
    pub certs: TlsMaterial,
    /// Holds the certificate files; removed at exit.
    _dir: ScratchDir,
}

/// The TLS-enabled source cluster: `ssl = on`, roles made with
/// [`remodel::cluster::PasswordAuth::ScramTlsOnly`] must use TLS, everything else as in the
/// pair. Connect with `sslmode=verify-full sslrootcert=<certs.ca_pem_path>` to 127.0.0.1 or
/// `localhost`.
pub fn tls_source() -> &'static TlsSource {
    static TLS: OnceLock<Result<TlsSource, String>> = OnceLock::new();
    let result = TLS.get_or_init(|| {
        let dir = cluster::scratch_dir().map_err(|e| e.to_string())?;
        let certs = tls_certs(dir.path());
        let opts = ClusterOptions {
            tls: Some(certs.tls_files()),
            ..ClusterOptions::default()
        };
        let cluster = clusters::start_blocking(opts, true)?;
        Ok(TlsSource {
            cluster,
            certs,
            _dir: dir,
        })
    });
    match result {
        Ok(source) => source,
        Err(e) => panic!("could not start the TLS test cluster: {e}"),
    }
}
