//! HTTPS for the simulator's listener.
//!
//! Outlook only loads add-ins over HTTPS, and the pane (served by the real server) fetches the
//! fake Office.js and Exchange metadata from the simulator, so the simulator listens with TLS.
//! [`TlsIdentity`] is a generated self-signed ECDSA certificate for the listener's host names;
//! its PEM is written to a file ([`TlsIdentity::write_cert_pem`]) that the server under test
//! and the browser are told to trust. Serving goes through `axum-server` with rustls on the
//! `ring` provider ([`install_crypto_provider`]).

use std::path::Path;

/// Installs rustls' `ring` crypto provider as the process default. Safe to call repeatedly
/// and alongside other crates that already installed it.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want anyway.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A self-signed TLS server certificate and its private key, both PEM.
#[derive(Clone)]
pub struct TlsIdentity {
    cert_pem: String,
    key_pem: String,
}

impl TlsIdentity {
    /// Generates an ECDSA P-256 certificate valid for `localhost`, `127.0.0.1`, `::1` and each
    /// of `extra_hosts` (DNS names or IP addresses).
    pub fn generate(extra_hosts: &[&str]) -> anyhow::Result<Self> {
        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        for host in extra_hosts {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if !host.is_empty() && !names.iter().any(|n| n == host) {
                names.push(host.to_owned());
            }
        }
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(names)?;
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "vmr-simulator");
        dn.push(rcgen::DnType::OrganizationName, "vmr-scheduler simulator");
        params.distinguished_name = dn;
        let (not_before, not_after) = crate::jwt::validity_window();
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(crate::jwt::random_serial());
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.self_signed(&key_pair)?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key_pair.serialize_pem(),
        })
    }

    /// The certificate, PEM: what clients must trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The certificate, DER (what channel bindings hash).
    pub fn cert_der(&self) -> anyhow::Result<Vec<u8>> {
        use rustls::pki_types::pem::PemObject as _;
        let der = rustls::pki_types::CertificateDer::from_pem_slice(self.cert_pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("the generated certificate is not PEM: {e}"))?;
        Ok(der.as_ref().to_vec())
    }

    /// The private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Writes the certificate PEM to `path` (creating parent directories).
    pub fn write_cert_pem(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, &self.cert_pem)?;
        Ok(())
    }

    /// An axum-server rustls configuration serving this identity (HTTP/1.1 and HTTP/2).
    /// Installs the crypto provider first.
    pub async fn rustls_config(&self) -> anyhow::Result<axum_server::tls_rustls::RustlsConfig> {
        install_crypto_provider();
        let config = axum_server::tls_rustls::RustlsConfig::from_pem(
            self.cert_pem.clone().into_bytes(),
            self.key_pem.clone().into_bytes(),
        )
        .await?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn generates_loadable_identity() {
        let identity = TlsIdentity::generate(&["sim.example.test", "localhost"]).expect("identity");
        assert!(identity
            .cert_pem()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(identity.key_pem().contains("PRIVATE KEY"));
        identity.rustls_config().await.expect("rustls accepts it");
        let dir = std::env::temp_dir().join(format!("vmr-sim-tls-{}", uuid::Uuid::new_v4()));
        let path = dir.join("cert.pem");
        identity.write_cert_pem(&path).expect("write");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            identity.cert_pem()
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
