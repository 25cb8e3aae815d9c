//! Simulated Exchange Server identity-token issuer.
//!
//! On-premises Exchange signs the "Exchange identity token" that Outlook hands to an add-in
//! (`Office.context.mailbox.getUserIdentityTokenAsync`) with its auth certificate, and publishes
//! that certificate in the auth metadata document at `/autodiscover/metadata/json/1`, which the
//! token's `appctx.amurl` points at. [`ExchangeIssuer`] plays that role: it holds an RSA-2048 key
//! and a self-signed certificate, issues tokens in the documented shape (reference
//! `stack.md` §5.4), signs arbitrary (hostile) tokens for tests, and [`router`] serves the
//! metadata document while counting how often it is fetched (so tests can check the server's
//! metadata cache). The simulated Outlook compose page ([`crate::outlook`]) asks this issuer for
//! the tokens its fake Office.js returns.

use crate::jwt::{unix_now, RsaSigner};
use axum::extract::State;
use axum::http::{header, Uri};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The well-known application id of Exchange: the `serviceName` of the metadata document and
/// the part before `@` of every identity token's `iss` and `appctxsender`.
pub const EXCHANGE_APP_ID: &str = "00000002-0000-0ff1-ce00-000000000000";

/// Path of the auth metadata document, relative to the Exchange origin.
pub const METADATA_PATH: &str = "/autodiscover/metadata/json/1";

/// The `appctx.version` of an Exchange identity token.
pub const IDENTITY_TOKEN_VERSION: &str = "ExIdTok.V1";

/// A simulated Exchange server's token-signing identity.
pub struct ExchangeIssuer {
    origin: String,
    host: String,
    signer: RsaSigner,
    metadata_id: String,
    metadata_fetches: AtomicUsize,
}

/// What goes into one identity token. Build it with [`IdentityClaims::new`] and adjust fields
/// to produce the variants real deployments show (or broken ones for tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityClaims {
    /// The `aud` claim: the add-in's `SourceLocation` URL from the manifest.
    pub aud: String,
    /// `appctx.msexchuid`: Exchange's unique id of the mailbox user.
    pub msexchuid: String,
    /// The user's SMTP address, put in `appctx` as `smtp`.
    pub smtp: String,
    /// The user's display name. Real identity tokens carry no display name, so it is not
    /// emitted; it is kept with the claims for callers that describe the user elsewhere (the
    /// compose page's `userProfile`).
    pub display_name: String,
    /// `nbf`, in Unix seconds.
    pub valid_from: i64,
    /// `exp`, in Unix seconds.
    pub valid_until: i64,
    /// Serialize `appctx` as a JSON string (the form real tokens commonly have) rather than as
    /// an object (the form of the docs sample). Default `true`.
    pub appctx_as_string: bool,
    /// Serialize `nbf`/`exp` as JSON strings (as in the docs sample) rather than numbers.
    /// Default `false`.
    pub times_as_strings: bool,
    /// Use this `appctx.amurl` instead of the issuer's own metadata URL.
    pub amurl_override: Option<String>,
}

impl IdentityClaims {
    /// Claims for `smtp` (the user's e-mail address) and audience `aud`, valid from five
    /// minutes ago for eight hours (Exchange's identity-token lifetime). `msexchuid` is a GUID
    /// derived from the address, so the same user always gets the same id; the display name is
    /// derived from the local part.
    pub fn new(aud: impl Into<String>, smtp: impl Into<String>) -> Self {
        let smtp = smtp.into();
        let now = unix_now();
        Self {
            aud: aud.into(),
            msexchuid: msexchuid_for(&smtp),
            display_name: display_name_for(&smtp),
            smtp,
            valid_from: now - 300,
            valid_until: now + 8 * 3600,
            appctx_as_string: true,
            times_as_strings: false,
            amurl_override: None,
        }
    }
}

/// A stable GUID-shaped mailbox id for an address (SHA-256 of the lower-cased address).
pub fn msexchuid_for(smtp: &str) -> String {
    let digest = Sha256::digest(smtp.trim().to_ascii_lowercase().as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// "alice.smith@example.com" → "Alice Smith".
pub fn display_name_for(smtp: &str) -> String {
    let local = smtp.split('@').next().unwrap_or(smtp);
    local
        .split(['.', '_', '-'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl ExchangeIssuer {
    /// Generates a new issuer for an Exchange server reachable at `origin`
    /// (e.g. `https://127.0.0.1:9443`; no trailing path). Takes a moment: RSA-2048 key
    /// generation.
    pub fn generate(origin: &str) -> anyhow::Result<Self> {
        let origin = origin.trim_end_matches('/').to_owned();
        let uri: Uri = origin.parse()?;
        let host = uri
            .host()
            .ok_or_else(|| anyhow::anyhow!("origin {origin:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let signer = RsaSigner::generate("Microsoft Exchange Server Auth Certificate")?;
        Ok(Self {
            origin,
            host,
            signer,
            metadata_id: format!("_{}", uuid::Uuid::new_v4()),
            metadata_fetches: AtomicUsize::new(0),
        })
    }

    /// The origin this issuer was generated for.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The host part of the origin (no port), the realm after `@` in `iss`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `00000002-0000-0ff1-ce00-000000000000@<host>`: the `iss` and `appctxsender` of tokens.
    pub fn issuer(&self) -> String {
        format!("{EXCHANGE_APP_ID}@{}", self.host)
    }

    /// `{origin}/autodiscover/metadata/json/1`.
    pub fn metadata_url(&self) -> String {
        format!("{}{METADATA_PATH}", self.origin)
    }

    /// Base64url SHA-1 thumbprint of the signing certificate (the token header's `x5t`).
    pub fn x5t(&self) -> String {
        self.signer.x5t()
    }

    /// The signing certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        self.signer.cert_der()
    }

    /// The signing certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        self.signer.cert_pem()
    }

    /// The RSA public key as PKCS#1 DER (tests use it as an HMAC secret for key-confusion
    /// attacks).
    pub fn public_key_pkcs1_der(&self) -> Vec<u8> {
        self.signer.public_key_pkcs1_der()
    }

    /// The RSA public key as a SubjectPublicKeyInfo PEM.
    pub fn public_key_pem(&self) -> String {
        self.signer.public_key_pem()
    }

    /// The RSA public key.
    pub fn public_key(&self) -> &rsa::RsaPublicKey {
        self.signer.public_key()
    }

    /// The auth metadata document, in the shape Exchange serves it.
    pub fn metadata_document(&self) -> Value {
        json!({
            "id": self.metadata_id,
            "version": "1.0",
            "name": "Exchange",
            "realm": "*",
            "serviceName": EXCHANGE_APP_ID,
            "issuer": format!("{EXCHANGE_APP_ID}@*"),
            "allowedAudiences": [format!("{EXCHANGE_APP_ID}@*")],
            "keys": [{
                "usage": "signing",
                "keyinfo": { "x5t": self.x5t() },
                "keyvalue": { "type": "x509Certificate", "value": self.signer.cert_base64() }
            }],
            "endpoints": [{
                "location": self.metadata_url(),
                "protocol": "OAuth2",
                "usage": "metadata"
            }]
        })
    }

    /// The JOSE header of identity tokens: `{"typ":"JWT","alg":"RS256","x5t":...}`.
    pub fn token_header(&self) -> Value {
        json!({ "typ": "JWT", "alg": "RS256", "x5t": self.x5t() })
    }

    /// The payload of an identity token for `claims`.
    pub fn identity_payload(&self, claims: &IdentityClaims) -> Value {
        let amurl = claims
            .amurl_override
            .clone()
            .unwrap_or_else(|| self.metadata_url());
        let appctx = json!({
            "msexchuid": claims.msexchuid,
            "version": IDENTITY_TOKEN_VERSION,
            "amurl": amurl,
            "smtp": claims.smtp,
        });
        let appctx = if claims.appctx_as_string {
            Value::String(appctx.to_string())
        } else {
            appctx
        };
        let time = |t: i64| {
            if claims.times_as_strings {
                Value::String(t.to_string())
            } else {
                Value::from(t)
            }
        };
        json!({
            "aud": claims.aud,
            "iss": self.issuer(),
            "nbf": time(claims.valid_from),
            "exp": time(claims.valid_until),
            "appctxsender": self.issuer(),
            "isbrowserhostedapp": "True",
            "appctx": appctx,
        })
    }

    /// An RS256 Exchange identity token for `claims`.
    pub fn identity_token(&self, claims: &IdentityClaims) -> String {
        self.sign_raw(&self.token_header(), &self.identity_payload(claims))
    }

    /// Signs any header and payload with this issuer's key (RS256, whatever `alg` says), for
    /// building hostile tokens in tests.
    pub fn sign_raw(&self, header: &Value, payload: &Value) -> String {
        self.signer.sign_jwt(header, payload)
    }

    /// How many times the metadata document has been served by [`router`].
    pub fn metadata_fetches(&self) -> usize {
        self.metadata_fetches.load(Ordering::SeqCst)
    }
}

/// Routes of the simulated Exchange: `GET /autodiscover/metadata/json/1`.
pub fn router(issuer: Arc<ExchangeIssuer>) -> Router {
    Router::new()
        .route(METADATA_PATH, get(metadata))
        .with_state(issuer)
}

async fn metadata(State(issuer): State<Arc<ExchangeIssuer>>) -> impl IntoResponse {
    issuer.metadata_fetches.fetch_add(1, Ordering::SeqCst);
    (
        [(header::CACHE_CONTROL, "private")],
        Json(issuer.metadata_document()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine as _;
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::pkcs8::DecodePublicKey as _;
    use rsa::signature::Verifier as _;
    use sha1::Sha1;
    use sha2::Sha256;
    use std::sync::OnceLock;
    use x509_cert::der::{Decode as _, Encode as _};

    fn issuer() -> &'static ExchangeIssuer {
        static ISSUER: OnceLock<ExchangeIssuer> = OnceLock::new();
        ISSUER.get_or_init(|| {
            ExchangeIssuer::generate("https://mail.example.test:9443").expect("issuer")
        })
    }

    fn decode_segment(segment: &str) -> Value {
        let bytes = URL_SAFE_NO_PAD.decode(segment).expect("base64url");
        serde_json::from_slice(&bytes).expect("json")
    }

    /// The RSA key inside the certificate of the metadata document, the way a validator
    /// finds it.
    fn key_from_metadata(doc: &Value) -> rsa::RsaPublicKey {
        let b64 = doc["keys"][0]["keyvalue"]["value"].as_str().expect("value");
        let der = STANDARD.decode(b64).expect("base64");
        let cert = x509_cert::Certificate::from_der(&der).expect("certificate");
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .expect("spki");
        rsa::RsaPublicKey::from_public_key_der(&spki).expect("rsa key")
    }

    #[test]
    fn metadata_x5t_is_sha1_of_certificate() {
        let doc = issuer().metadata_document();
        let der = STANDARD
            .decode(doc["keys"][0]["keyvalue"]["value"].as_str().expect("value"))
            .expect("base64");
        let expected = URL_SAFE_NO_PAD.encode(Sha1::digest(&der));
        assert_eq!(doc["keys"][0]["keyinfo"]["x5t"], expected.as_str());
        assert_eq!(issuer().x5t(), expected);
        assert_eq!(doc["keys"][0]["keyvalue"]["type"], "x509Certificate");
        assert_eq!(
            doc["endpoints"][0]["location"],
            "https://mail.example.test:9443/autodiscover/metadata/json/1"
        );
        assert!(doc["id"].as_str().expect("id").starts_with('_'));
    }

    #[test]
    fn token_verifies_with_certificate_key() {
        let token = issuer().identity_token(&IdentityClaims::new(
            "https://addin.example.test/pane.html",
            "alice@example.test",
        ));
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let key = key_from_metadata(&issuer().metadata_document());
        let verifier = VerifyingKey::<Sha256>::new(key);
        let signature =
            Signature::try_from(URL_SAFE_NO_PAD.decode(parts[2]).expect("sig").as_slice())
                .expect("signature");
        let signing_input = format!("{}.{}", parts[0], parts[1]);
        verifier
            .verify(signing_input.as_bytes(), &signature)
            .expect("signature verifies");
        let header = decode_segment(parts[0]);
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["x5t"], issuer().x5t().as_str());
    }

    #[test]
    fn appctx_string_form_and_claims() {
        let claims =
            IdentityClaims::new("https://addin.example.test/pane.html", "alice@example.test");
        let token = issuer().identity_token(&claims);
        let payload = decode_segment(token.split('.').nth(1).expect("payload"));
        let iss = format!("{EXCHANGE_APP_ID}@mail.example.test");
        assert_eq!(payload["iss"], iss.as_str());
        assert_eq!(payload["appctxsender"], iss.as_str());
        assert_eq!(payload["aud"], "https://addin.example.test/pane.html");
        assert_eq!(payload["isbrowserhostedapp"], "True");
        assert!(payload["nbf"].is_i64() && payload["exp"].is_i64());
        let appctx: Value =
            serde_json::from_str(payload["appctx"].as_str().expect("appctx is a string"))
                .expect("appctx json");
        assert_eq!(appctx["version"], IDENTITY_TOKEN_VERSION);
        assert_eq!(appctx["amurl"], issuer().metadata_url().as_str());
        assert_eq!(appctx["msexchuid"], claims.msexchuid.as_str());
        assert_eq!(appctx["smtp"], "alice@example.test");
    }

    #[test]
    fn object_and_string_time_forms() {
        let mut claims = IdentityClaims::new("aud", "bob@example.test");
        claims.appctx_as_string = false;
        claims.times_as_strings = true;
        claims.amurl_override = Some("https://evil.test/m".into());
        let payload = decode_segment(
            issuer()
                .identity_token(&claims)
                .split('.')
                .nth(1)
                .expect("payload"),
        );
        assert_eq!(payload["appctx"]["amurl"], "https://evil.test/m");
        assert_eq!(payload["nbf"], claims.valid_from.to_string().as_str());
        assert_eq!(payload["exp"], claims.valid_until.to_string().as_str());
    }

    #[test]
    fn helpers() {
        assert_eq!(display_name_for("alice.smith@example.com"), "Alice Smith");
        assert_eq!(msexchuid_for("A@x.test"), msexchuid_for("a@x.test"));
        assert_ne!(msexchuid_for("a@x.test"), msexchuid_for("b@x.test"));
        let key = key_from_metadata(&issuer().metadata_document());
        assert_eq!(&key, issuer().public_key());
        assert!(issuer()
            .public_key_pem()
            .starts_with("-----BEGIN PUBLIC KEY-----"));
        assert!(!issuer().public_key_pkcs1_der().is_empty());
    }

    #[tokio::test]
    async fn router_serves_metadata_and_counts() {
        use tower::ServiceExt as _;
        let issuer = Arc::new(ExchangeIssuer::generate("https://127.0.0.1:9443").expect("issuer"));
        let app = router(issuer.clone());
        let response = app
            .oneshot(
                axum::http::Request::get(METADATA_PATH)
                    .body(axum::body::Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let doc: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(doc, issuer.metadata_document());
        assert_eq!(issuer.metadata_fetches(), 1);
        assert_eq!(issuer.host(), "127.0.0.1");
    }
}
