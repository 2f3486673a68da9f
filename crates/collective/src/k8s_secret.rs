//! A Kubernetes Secret holding a fresh cluster CA and node certificates (and optionally the TCP
//! cluster secret), as YAML for `ringsam certs --k8s-secret NAME | kubectl apply -f -`: the keys
//! go from memory to the cluster and never touch a disk or the repository.
//!
//! The Secret uses `stringData` (PEM is text, so no base64 step): `ca.pem`, `node-{i}.pem`,
//! `node-{i}.key` for `i` in `0..nodes`, and `cluster-secret` when asked. A pod of an Indexed Job
//! mounts it and passes `--ca /certs/ca.pem --cert /certs/node-$(JOB_COMPLETION_INDEX).pem --key
//! /certs/node-$(JOB_COMPLETION_INDEX).key`.

use crate::certs::{CertError, ClusterCa};

/// The most node certificates one Secret holds (a Secret is limited to 1 MiB; each node's pair
/// is about 1 KB).
pub const MAX_NODES: usize = 512;

/// Why a Secret cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The name is not a valid Kubernetes object name.
    #[error(
        "--k8s-secret {0:?}: a Secret's name is lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters"
    )]
    Name(String),
    /// Too many or no nodes.
    #[error("--nodes {0}: a Secret holds 1 to {MAX_NODES} node certificates")]
    Nodes(usize),
    /// A certificate could not be made.
    #[error(transparent)]
    Cert(#[from] CertError),
}

/// Whether `name` is a DNS-1123 subdomain, what Kubernetes requires of a Secret's name.
pub fn valid_name(name: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    !name.is_empty() && name.len() <= 253 && name.chars().all(ok_char) && alnum(name.chars().next()) && alnum(name.chars().last())
}

/// The Secret manifest (see the module docs).
pub fn secret_manifest(name: &str, nodes: usize, cluster_secret: Option<&str>) -> Result<String, SecretError> {
    if !valid_name(name) {
        return Err(SecretError::Name(name.to_string()));
    }
    if nodes == 0 || nodes > MAX_NODES {
        return Err(SecretError::Nodes(nodes));
    }
    let ca = ClusterCa::generate()?;
    let mut entries = vec![("ca.pem".to_string(), ca.cert_pem())];
    for i in 0..nodes {
        let (cert, key) = ca.node(&format!("node-{i}"))?;
        entries.push((format!("node-{i}.pem"), cert));
        entries.push((format!("node-{i}.key"), key));
    }
    let mut yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  labels:\n    app.kubernetes.io/name: ringsam\n    app.kubernetes.io/component: ring-credentials\ntype: Opaque\nstringData:\n"
    );
    for (key, pem) in &entries {
        yaml.push_str(&format!("  {key}: |\n"));
        for line in pem.lines() {
            yaml.push_str(&format!("    {line}\n"));
        }
    }
    if let Some(secret) = cluster_secret {
        yaml.push_str(&format!("  cluster-secret: \"{secret}\"\n"));
    }
    Ok(yaml)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    /// The block scalar under `key`, unindented (what a YAML reader gives for `|`).
    fn block(yaml: &str, key: &str) -> String {
        let start = yaml.find(&format!("  {key}: |\n")).unwrap_or_else(|| panic!("no {key}")) + key.len() + 6;
        yaml[start..].lines().take_while(|l| l.starts_with("    ")).map(|l| format!("{}\n", &l[4..])).collect()
    }

    #[test]
    fn every_node_gets_a_certificate_and_key_that_parse_and_the_secret_is_optional() {
        let yaml = secret_manifest("ringsam-certs", 3, Some("00ff")).unwrap();
        assert!(yaml.starts_with("apiVersion: v1\nkind: Secret\nmetadata:\n  name: ringsam-certs\n"), "{yaml}");
        assert!(CertificateDer::from_pem_slice(block(&yaml, "ca.pem").as_bytes()).is_ok());
        for i in 0..3 {
            assert!(CertificateDer::from_pem_slice(block(&yaml, &format!("node-{i}.pem")).as_bytes()).is_ok(), "node {i}");
            assert!(PrivateKeyDer::from_pem_slice(block(&yaml, &format!("node-{i}.key")).as_bytes()).is_ok(), "node {i}");
        }
        assert!(!yaml.contains("node-3."));
        assert!(yaml.ends_with("  cluster-secret: \"00ff\"\n"));
        assert!(!secret_manifest("ringsam-certs", 1, None).unwrap().contains("cluster-secret"));
    }

    #[test]
    fn bad_names_and_node_counts_are_refused() {
        for bad in ["", "Ringsam", "-x", "x-", "a_b", &"a".repeat(254)] {
            assert!(matches!(secret_manifest(bad, 1, None), Err(SecretError::Name(_))), "{bad:?}");
        }
        assert!(valid_name("ringsam.certs-2"));
        assert!(matches!(secret_manifest("x", 0, None), Err(SecretError::Nodes(0))));
        assert!(matches!(secret_manifest("x", MAX_NODES + 1, None), Err(SecretError::Nodes(_))));
    }
}
