//! RSA signing keys and compact JWTs shared by the simulated token issuers.
//!
//! Both [`crate::exchange_identity::ExchangeIssuer`] and [`crate::entra::EntraIssuer`] sign RS256 tokens
//! with an RSA-2048 key and publish that key inside a self-signed X.509 certificate (Exchange in
//! its auth metadata document, Entra ID as the `x5c`/`x5t` of a JWKS entry). This module owns
//! that key material and the JWT encoding, so the issuers only decide *what* to sign.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rsa::pkcs1::EncodeRsaPublicKey as _;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use rsa::signature::{SignatureEncoding as _, Signer as _};
use rsa::traits::PublicKeyParts as _;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha1::{Digest as _, Sha1};
use sha2::Sha256;
use std::time::{SystemTime, UNIX_EPOCH};

/// Base64url without padding, the encoding of every JWT segment and of `x5t`/`n`/`e`.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Seconds since the Unix epoch, the unit of JWT `nbf`/`exp`/`iat`.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// An RSA-2048 signing key with a self-signed certificate that carries its public half.
pub struct RsaSigner {
    signing_key: SigningKey<Sha256>,
    public_key: RsaPublicKey,
    cert_der: Vec<u8>,
    cert_pem: String,
}

impl RsaSigner {
    /// Generates a fresh key (from the OS RNG) and a self-signed certificate whose subject
    /// common name is `common_name`.
    pub fn generate(common_name: &str) -> anyhow::Result<Self> {
        let private_key = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)?;
        let public_key = RsaPublicKey::from(&private_key);
        let pkcs8_pem = private_key.to_pkcs8_pem(LineEnding::LF)?;
        let key_pair = rcgen::KeyPair::from_pem_and_sign_algo(&pkcs8_pem, &rcgen::PKCS_RSA_SHA256)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        let mut name = rcgen::DistinguishedName::new();
        name.push(rcgen::DnType::CommonName, common_name);
        params.distinguished_name = name;
        let (not_before, not_after) = validity_window();
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key_pair)?;
        Ok(Self {
            signing_key: SigningKey::<Sha256>::new(private_key),
            public_key,
            cert_der: cert.der().to_vec(),
            cert_pem: cert.pem(),
        })
    }

    /// The DER encoding of the self-signed certificate.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The certificate in PEM form.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The certificate as standard (padded) base64 DER, the form of `x5c` and of Exchange's
    /// `keyvalue.value`.
    pub fn cert_base64(&self) -> String {
        STANDARD.encode(&self.cert_der)
    }

    /// Base64url (no padding) SHA-1 thumbprint of the DER certificate: the `x5t` value.
    pub fn x5t(&self) -> String {
        b64url(&Sha1::digest(&self.cert_der))
    }

    /// The RSA public key.
    pub fn public_key(&self) -> &RsaPublicKey {
        &self.public_key
    }

    /// The public key as PKCS#1 `RSAPublicKey` DER.
    pub fn public_key_pkcs1_der(&self) -> Vec<u8> {
        self.public_key
            .to_pkcs1_der()
            .map(|doc| doc.as_bytes().to_vec())
            .unwrap_or_default()
    }

    /// The public key as a PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
    pub fn public_key_pem(&self) -> String {
        self.public_key
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }

    /// Base64url big-endian modulus, the JWK `n`.
    pub fn modulus_b64url(&self) -> String {
        b64url(&self.public_key.n().to_bytes_be())
    }

    /// Base64url big-endian public exponent, the JWK `e`.
    pub fn exponent_b64url(&self) -> String {
        b64url(&self.public_key.e().to_bytes_be())
    }

    /// Encodes `header` and `payload` as a compact JWS and signs it with RS256
    /// (RSASSA-PKCS1-v1_5 with SHA-256), whatever the header says.
    pub fn sign_jwt(&self, header: &serde_json::Value, payload: &serde_json::Value) -> String {
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(payload.to_string().as_bytes())
        );
        let signature = self.signing_key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", b64url(&signature.to_bytes()))
    }
}

/// Validity of every simulated certificate: from one day ago to two years ahead, so clocks
/// that are slightly off still accept it and nothing expires during a long demo.
pub fn validity_window() -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (
        now - time::Duration::days(1),
        now + time::Duration::days(730),
    )
}

/// A random positive 16-byte serial number, so regenerated certificates never share an
/// issuer/serial pair (browsers reject that).
pub fn random_serial() -> rcgen::SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    rcgen::SerialNumber::from_slice(&bytes)
}
