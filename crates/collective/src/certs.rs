//! Development certificates for the QUIC ring: a cluster CA and per-node certificates (rcgen).
//!
//! Every node certificate is signed by the cluster CA and names `ringsam-peer` as its DNS name,
//! which is the name ranks verify: membership of the cluster *is* holding a certificate the CA
//! signed. Keys are ECDSA P-256. Production clusters should issue these from their own PKI (for
//! Kubernetes, cert-manager); `ringsam certs` is for development and `ringsam launch`.

use std::path::Path;

use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The DNS name in every node certificate, and the server name ranks verify.
pub const PEER_NAME: &str = "ringsam-peer";

/// Why certificates could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen failed.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {why}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
}

/// A cluster CA that can sign node certificates.
pub struct ClusterCa {
    key: KeyPair,
    cert: Certificate,
}

impl ClusterCa {
    /// A fresh self-signed CA.
    pub fn generate() -> Result<Self, CertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "ringsam cluster CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(ClusterCa { key, cert })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// A node certificate and its key (PEM), signed by this CA, for node `name`.
    pub fn node(&self, name: &str) -> Result<(String, String), CertError> {
        let mut p = CertificateParams::new(vec![PEER_NAME.to_string()])?;
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.cert, &self.key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Writes `ca.pem` and `node-{i}.pem` / `node-{i}.key` for `nodes` nodes into `dir`.
pub fn write_dev_certs(dir: &Path, nodes: usize) -> Result<(), CertError> {
    let io = |p: &Path| {
        let path = p.display().to_string();
        move |source| CertError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let ca = ClusterCa::generate()?;
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.cert_pem()).map_err(io(&ca_path))?;
    for i in 0..nodes {
        let (cert, key) = ca.node(&format!("node-{i}"))?;
        let (cp, kp) = (dir.join(format!("node-{i}.pem")), dir.join(format!("node-{i}.key")));
        std::fs::write(&cp, cert).map_err(io(&cp))?;
        write_private(&kp, key.as_bytes()).map_err(io(&kp))?;
    }
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(bytes)
}

/// All certificates in a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let p = path.display().to_string();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| CertError::Pem { path: p.clone(), why: e.to_string() })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem { path: p.clone(), why: e.to_string() })?;
    if certs.is_empty() {
        return Err(CertError::Pem { path: p, why: "no certificate in the file".into() });
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| CertError::Pem { path: path.display().to_string(), why: e.to_string() })
}
