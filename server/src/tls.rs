//! TLS for the listener and for outgoing requests.
//!
//! The listener uses the configured PEM certificate and key, or a self-signed
//! certificate generated at start for demos (Outlook only loads add-ins over
//! HTTPS). Outgoing requests (metadata documents, edge → management) trust
//! the system roots plus any extra PEM roots from config.

use std::path::Path;

use anyhow::{Context, Result};

use vmr_core::config::{HttpClientConfig, ServerConfig};

/// Installs rustls' ring provider as the process default (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Certificate chain and key in PEM.
pub struct PemPair {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

/// Loads or generates the listener certificate per config.
pub fn listener_pem(server: &ServerConfig) -> Result<PemPair> {
    match (&server.tls_cert, &server.tls_key) {
        (Some(cert), Some(key)) => {
            let cert_pem = std::fs::read(cert)
                .with_context(|| format!("server.tls_cert: cannot read {}", cert.display()))?;
            let key_pem = std::fs::read(key)
                .with_context(|| format!("server.tls_key: cannot read {}", key.display()))?;
            check_pem(&cert_pem, &key_pem, cert, key)?;
            Ok(PemPair {
                cert: cert_pem,
                key: key_pem,
            })
        }
        _ => {
            let host = server
                .public_host
                .rsplit_once(':')
                .map_or(server.public_host.as_str(), |(h, _)| h);
            let pair = self_signed(host)?;
            if let Some(out) = &server.self_signed_cert_out {
                std::fs::write(out, &pair.cert).with_context(|| {
                    format!(
                        "server.self_signed_cert_out: cannot write {}",
                        out.display()
                    )
                })?;
            }
            tracing::warn!(
                host,
                "serving a generated self-signed certificate (demo only)"
            );
            Ok(pair)
        }
    }
}

fn check_pem(cert_pem: &[u8], key_pem: &[u8], cert: &Path, key: &Path) -> Result<()> {
    let certs = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("server.tls_cert: {} is not valid PEM", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("server.tls_cert: {} holds no certificate", cert.display());
    }
    match rustls_pemfile::private_key(&mut &key_pem[..]) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => anyhow::bail!("server.tls_key: {} holds no private key", key.display()),
        Err(e) => anyhow::bail!("server.tls_key: {} is not valid PEM: {e}", key.display()),
    }
}

/// A self-signed certificate for `host`, `localhost` and the loopback addresses.
pub fn self_signed(host: &str) -> Result<PemPair> {
    let mut names = vec![host.to_string(), "localhost".to_string()];
    names.dedup();
    let mut params = rcgen::CertificateParams::new(names).context("certificate names")?;
    for ip in ["127.0.0.1", "::1"] {
        if let Ok(addr) = ip.parse() {
            params
                .subject_alt_names
                .push(rcgen::SanType::IpAddress(addr));
        }
    }
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("vmr-scheduler demo ({host})"),
    );
    let key = rcgen::KeyPair::generate().context("generating a key")?;
    let cert = params.self_signed(&key).context("self-signing")?;
    Ok(PemPair {
        cert: cert.pem().into_bytes(),
        key: key.serialize_pem().into_bytes(),
    })
}

/// The client for outgoing HTTPS.
pub fn http_client(config: &HttpClientConfig) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        // Never follow redirects: an allow-listed metadata host must not be
        // able to send the token validator somewhere else.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(15))
        .pool_max_idle_per_host(64);
    for path in &config.extra_ca_files {
        let pem = std::fs::read(path).with_context(|| {
            format!("http_client.extra_ca_files: cannot read {}", path.display())
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
            format!("http_client.extra_ca_files: {} is not PEM", path.display())
        })?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().context("building the HTTP client")
}
