//! How requests to Exchange authenticate, behind one trait ([`Authenticator`]).
//!
//! The EWS client ([`crate::ews::client`]) hands every request to the authenticator, which sends
//! it: a scheme that only needs a header (Basic, Bearer) adds it and sends; a handshake scheme
//! (NTLM, [`crate::ntlm::NtlmAuth`]) runs its legs on a connection it owns inside
//! [`Authenticator::send`] without the client knowing. After a 401 the client calls [`Authenticator::invalidate`] once
//! and retries; a second 401 is reported as denied.
//!
//! Implemented here:
//! * [`BasicAuth`] — `Authorization: Basic` (on-premises EWS virtual directories that allow it);
//! * [`OAuth2ClientCredentials`] — app-only OAuth2 (Entra ID `full_access_as_app`): a token from
//!   the client-credentials grant, with a client secret or a certificate-signed client assertion
//!   (RS256 JWT with `x5t`), cached until shortly before it expires (time from the injected
//!   [`Clock`]).
//!
//! Credentials arrive as ready values ([`Secret`], [`ClientCertificate`]); reading them from
//! configuration is the caller's job. Secrets never reach logs: [`Secret`] and
//! [`ClientCertificate`] print redacted, and the `Authorization` header is marked sensitive.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding as _, Signer as _};
use rsa::RsaPrivateKey;
use sha1::{Digest as _, Sha1};
use sha2::Sha256;
use vmr_core::clock::Clock;
use vmr_core::secret::Secret;

/// The `client_assertion_type` of a certificate credential (RFC 7523).
pub const JWT_BEARER_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long a signed client assertion is valid (`exp - nbf`).
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(600);

/// A token is refreshed this long before it expires (or at half its lifetime, if that is
/// shorter), so a request never goes out with a token about to lapse.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Lifetime assumed when a token response carries no `expires_in`.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// Timeout of one request to the token endpoint.
pub const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One HTTP request as the EWS client wants it sent (always a `POST`).
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub url: String,
    /// Headers besides `Authorization`, which the authenticator adds.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Total time allowed, from connecting until the whole response body is read.
    pub timeout: Duration,
}

impl HttpRequest {
    /// The request without credentials, ready for a scheme to add its header.
    fn builder(&self, http: &reqwest::Client) -> reqwest::RequestBuilder {
        let mut builder = http
            .post(&self.url)
            .timeout(self.timeout)
            .body(self.body.clone());
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder
    }
}

/// Why a request could not be sent or authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The request to Exchange failed on the wire (connection, TLS, timeout, reading the body).
    #[error("sending to {url} failed{}: {detail}", if *timed_out { " (timed out)" } else { "" })]
    Transport {
        url: String,
        timed_out: bool,
        /// The error and its causes, `: `-separated (reqwest's own message names no cause).
        detail: String,
        #[source]
        source: reqwest::Error,
    },
    /// The token endpoint refused the client: its OAuth2 `error` and `error_description`.
    #[error("the token endpoint {url} answered HTTP {status}: {error}: {description}")]
    TokenRefused {
        url: String,
        status: u16,
        error: String,
        description: String,
    },
    /// The token endpoint could not be reached or answered something unusable; worth retrying.
    #[error("no token from {url}: {reason}")]
    TokenUnavailable { url: String, reason: String },
    /// The credential itself is unusable (a key that cannot sign, a certificate that is not PEM).
    #[error("the credential is unusable: {0}")]
    Credential(String),
    /// A connection the authenticator owns (NTLM) failed: connecting, TLS, sending, timeout.
    #[error("sending to {url} failed{}: {detail}", if *timed_out { " (timed out)" } else { "" })]
    Connection {
        url: String,
        timed_out: bool,
        detail: String,
    },
    /// The server refused a handshake scheme's credentials (NTLM: a 401 after the AUTHENTICATE
    /// message), with what the client can tell about why.
    #[error("{url} refused {scheme} authentication: {reason}")]
    Rejected {
        url: String,
        scheme: &'static str,
        reason: String,
    },
}

impl AuthError {
    /// Whether trying again later may succeed (network trouble, token endpoint down or
    /// throttling), as opposed to credentials that are wrong.
    pub fn is_transient(&self) -> bool {
        match self {
            AuthError::Transport { .. }
            | AuthError::TokenUnavailable { .. }
            | AuthError::Connection { .. } => true,
            AuthError::TokenRefused { error, .. } => {
                matches!(error.as_str(), "temporarily_unavailable" | "server_error")
            }
            AuthError::Credential(_) | AuthError::Rejected { .. } => false,
        }
    }
}

/// Sends requests with credentials, whatever the scheme needs.
#[async_trait]
pub trait Authenticator: Send + Sync + std::fmt::Debug {
    /// Sends one request, doing whatever the scheme needs (a header for Basic/Bearer; NTLM
    /// does its legs on a connection of its own here and ignores `http`). Returns the response as soon as its
    /// headers are in; the caller reads the body.
    async fn send(
        &self,
        http: &reqwest::Client,
        request: HttpRequest,
    ) -> Result<reqwest::Response, AuthError>;

    /// Called after a 401 with credentials we believed good: drop cached tokens so the next
    /// send re-authenticates.
    fn invalidate(&self);

    /// The scheme's name for logs and errors (`basic`, `oauth2`).
    fn scheme(&self) -> &'static str;
}

/// Sends a built request, classifying wire failures.
async fn send_built(
    url: &str,
    builder: reqwest::RequestBuilder,
) -> Result<reqwest::Response, AuthError> {
    builder.send().await.map_err(|source| AuthError::Transport {
        url: url.to_owned(),
        timed_out: source.is_timeout(),
        detail: error_chain(&source),
        source,
    })
}

/// An error and its causes, `: `-separated.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}

/// `Authorization: Basic` with a username and password.
#[derive(Debug, Clone)]
pub struct BasicAuth {
    pub username: String,
    pub password: Secret,
}

impl BasicAuth {
    /// Basic credentials for `username` (a UPN or `DOMAIN\user`).
    pub fn new(username: impl Into<String>, password: Secret) -> Self {
        BasicAuth {
            username: username.into(),
            password,
        }
    }
}

#[async_trait]
impl Authenticator for BasicAuth {
    async fn send(
        &self,
        http: &reqwest::Client,
        request: HttpRequest,
    ) -> Result<reqwest::Response, AuthError> {
        let builder = request
            .builder(http)
            .basic_auth(&self.username, Some(self.password.expose()));
        send_built(&request.url, builder).await
    }

    fn invalidate(&self) {
        // Nothing is cached: the same header goes out again.
    }

    fn scheme(&self) -> &'static str {
        "basic"
    }
}

/// A certificate registered on the app and the RSA key that goes with it.
#[derive(Clone)]
pub struct ClientCertificate {
    cert_der: Vec<u8>,
    signing_key: SigningKey<Sha256>,
    x5t: String,
}

impl ClientCertificate {
    /// The certificate (DER) and its private key.
    pub fn new(cert_der: Vec<u8>, key: RsaPrivateKey) -> Self {
        let x5t = URL_SAFE_NO_PAD.encode(Sha1::digest(&cert_der));
        ClientCertificate {
            cert_der,
            signing_key: SigningKey::<Sha256>::new(key),
            x5t,
        }
    }

    /// From PEM text: a `CERTIFICATE` block and an RSA key as `PRIVATE KEY` (PKCS#8) or
    /// `RSA PRIVATE KEY` (PKCS#1).
    pub fn from_pem(cert_pem: &str, key_pem: &Secret) -> Result<Self, AuthError> {
        use rsa::pkcs1::DecodeRsaPrivateKey as _;
        use rsa::pkcs8::der::pem;
        use rsa::pkcs8::DecodePrivateKey as _;

        let (label, cert_der) = pem::decode_vec(cert_pem.trim().as_bytes())
            .map_err(|e| AuthError::Credential(format!("the certificate is not PEM: {e}")))?;
        if label != "CERTIFICATE" {
            return Err(AuthError::Credential(format!(
                "expected a PEM CERTIFICATE block, found {label}"
            )));
        }
        let key_text = key_pem.expose().trim();
        let key = if key_text.contains("BEGIN RSA PRIVATE KEY") {
            RsaPrivateKey::from_pkcs1_pem(key_text)
                .map_err(|e| AuthError::Credential(format!("the PKCS#1 RSA key is invalid: {e}")))?
        } else {
            RsaPrivateKey::from_pkcs8_pem(key_text).map_err(|e| {
                AuthError::Credential(format!("the PKCS#8 private key is not an RSA key: {e}"))
            })?
        };
        Ok(ClientCertificate::new(cert_der, key))
    }

    /// The certificate in DER form.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Base64url (no padding) SHA-1 thumbprint of the DER certificate: the JWT `x5t`.
    pub fn x5t(&self) -> &str {
        &self.x5t
    }

    /// A signed client assertion for `client_id` at `token_url`, valid from `now_unix`.
    pub fn client_assertion(&self, client_id: &str, token_url: &str, now_unix: i64) -> String {
        let lifetime = i64::try_from(ASSERTION_LIFETIME.as_secs()).unwrap_or(600);
        let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "x5t": self.x5t });
        let payload = serde_json::json!({
            "aud": token_url,
            "iss": client_id,
            "sub": client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now_unix,
            "iat": now_unix,
            "exp": now_unix + lifetime,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let signature = self.signing_key.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("x5t", &self.x5t)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// How the app proves who it is at the token endpoint.
#[derive(Debug, Clone)]
pub enum ClientCredential {
    /// `client_secret`.
    Secret(Secret),
    /// `client_assertion`: an RS256 JWT signed with the certificate's key.
    Certificate(Box<ClientCertificate>),
}

/// An access token and when to stop using it.
#[derive(Clone)]
struct CachedToken {
    token: Secret,
    /// Unix ms after which a new token is fetched.
    refresh_at_ms: i64,
}

/// App-only OAuth2 (client-credentials grant): `Authorization: Bearer <token>`.
#[derive(Debug)]
pub struct OAuth2ClientCredentials {
    /// `https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token`, or an ADFS token URL.
    pub token_url: String,
    pub client_id: String,
    pub credential: ClientCredential,
    /// `https://outlook.office365.com/.default` for Exchange Online.
    pub scope: String,
    clock: Arc<dyn Clock>,
    cached: Mutex<Option<CachedToken>>,
    /// One token request at a time; others wait and use its result.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("refresh_at_ms", &self.refresh_at_ms)
            .finish_non_exhaustive()
    }
}

impl OAuth2ClientCredentials {
    /// An authenticator that fetches tokens from `token_url` for `client_id` and `scope`.
    pub fn new(
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        credential: ClientCredential,
        scope: impl Into<String>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        OAuth2ClientCredentials {
            token_url: token_url.into(),
            client_id: client_id.into(),
            credential,
            scope: scope.into(),
            clock,
            cached: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn cached_token(&self) -> Option<Secret> {
        let now = self.clock.now_unix_ms();
        let cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        cached
            .as_ref()
            .filter(|t| now < t.refresh_at_ms)
            .map(|t| t.token.clone())
    }

    /// A valid access token: the cached one, or a fresh one from the token endpoint.
    pub async fn access_token(&self, http: &reqwest::Client) -> Result<Secret, AuthError> {
        if let Some(token) = self.cached_token() {
            return Ok(token);
        }
        let _turn = self.fetching.lock().await;
        if let Some(token) = self.cached_token() {
            return Ok(token);
        }
        let fetched = self.request_token(http).await?;
        let token = fetched.token.clone();
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some(fetched);
        Ok(token)
    }

    async fn request_token(&self, http: &reqwest::Client) -> Result<CachedToken, AuthError> {
        let now_ms = self.clock.now_unix_ms();
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", self.client_id.clone()),
            ("scope", self.scope.clone()),
        ];
        match &self.credential {
            ClientCredential::Secret(secret) => {
                form.push(("client_secret", secret.expose().to_owned()));
            }
            ClientCredential::Certificate(cert) => {
                form.push((
                    "client_assertion_type",
                    JWT_BEARER_ASSERTION_TYPE.to_owned(),
                ));
                form.push((
                    "client_assertion",
                    cert.client_assertion(
                        &self.client_id,
                        &self.token_url,
                        now_ms.div_euclid(1000),
                    ),
                ));
            }
        }
        let unavailable = |reason: String| AuthError::TokenUnavailable {
            url: self.token_url.clone(),
            reason,
        };
        let response = http
            .post(&self.token_url)
            .timeout(TOKEN_REQUEST_TIMEOUT)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| unavailable(format!("request failed: {}", error_chain(&e))))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| unavailable(format!("reading the response failed: {e}")))?;
        let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        if !status.is_success() {
            let field = |name: &str| {
                json.as_ref()
                    .and_then(|j| j.get(name))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            };
            return match field("error") {
                Some(error) if status.is_client_error() => Err(AuthError::TokenRefused {
                    url: self.token_url.clone(),
                    status: status.as_u16(),
                    error,
                    description: field("error_description").unwrap_or_default(),
                }),
                _ => Err(unavailable(format!(
                    "HTTP {status}{}",
                    field("error")
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ))),
            };
        }
        let json = json.ok_or_else(|| unavailable("the token response is not JSON".to_owned()))?;
        let token = json
            .get("access_token")
            .and_then(|v| v.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unavailable("the token response has no access_token".to_owned()))?;
        if let Some(kind) = json.get("token_type").and_then(|v| v.as_str()) {
            if !kind.eq_ignore_ascii_case("bearer") {
                return Err(unavailable(format!("the token type is {kind}, not Bearer")));
            }
        }
        // Entra sends a number; some ADFS versions send a string.
        let lifetime = json
            .get("expires_in")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.trim().parse().ok()))
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        let margin = TOKEN_REFRESH_MARGIN.min(lifetime / 2);
        let usable_ms = i64::try_from((lifetime - margin).as_millis()).unwrap_or(i64::MAX);
        tracing::debug!(
            token_url = %self.token_url,
            lifetime_s = lifetime.as_secs(),
            "fetched an access token"
        );
        Ok(CachedToken {
            token: Secret::new(token),
            refresh_at_ms: now_ms.saturating_add(usable_ms),
        })
    }
}

#[async_trait]
impl Authenticator for OAuth2ClientCredentials {
    async fn send(
        &self,
        http: &reqwest::Client,
        request: HttpRequest,
    ) -> Result<reqwest::Response, AuthError> {
        let token = self.access_token(http).await?;
        let builder = request.builder(http).bearer_auth(token.expose());
        send_built(&request.url, builder).await
    }

    fn invalidate(&self) {
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn scheme(&self) -> &'static str {
        "oauth2"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1v15::VerifyingKey;
    use rsa::signature::Verifier as _;

    fn test_key() -> RsaPrivateKey {
        // 1024 bits keep the unit test quick; production keys are the caller's.
        RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).expect("key")
    }

    #[test]
    fn client_assertion_is_rs256_with_x5t_and_the_claims() {
        let key = test_key();
        let public = rsa::RsaPublicKey::from(&key);
        let cert = ClientCertificate::new(b"not really a certificate".to_vec(), key);
        let jwt = cert.client_assertion("app-1", "https://login.example/t/token", 1_700_000_000);
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        let payload: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(
            header["x5t"],
            URL_SAFE_NO_PAD.encode(Sha1::digest(b"not really a certificate"))
        );
        assert_eq!(payload["aud"], "https://login.example/t/token");
        assert_eq!(payload["iss"], "app-1");
        assert_eq!(payload["sub"], "app-1");
        assert_eq!(payload["nbf"], 1_700_000_000);
        assert_eq!(payload["exp"], 1_700_000_600);
        assert!(payload["jti"].as_str().is_some_and(|j| j.len() == 36));
        let signature = rsa::pkcs1v15::Signature::try_from(
            URL_SAFE_NO_PAD.decode(parts[2]).unwrap().as_slice(),
        )
        .unwrap();
        let verifier = VerifyingKey::<Sha256>::new(public);
        verifier
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("the signature verifies");
        // Each assertion has its own jti.
        let again = cert.client_assertion("app-1", "https://login.example/t/token", 1_700_000_000);
        assert_ne!(jwt, again);
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let cert = ClientCertificate::new(vec![1, 2, 3], test_key());
        let oauth = OAuth2ClientCredentials::new(
            "https://login.example/token",
            "app",
            ClientCredential::Secret(Secret::new("s3cr3t-value")),
            "https://outlook.office365.com/.default",
            vmr_core::clock::system(),
        );
        let basic = BasicAuth::new("svc", Secret::new("hunter2hunter2"));
        let text = format!("{cert:?} {oauth:?} {basic:?}");
        assert!(!text.contains("s3cr3t-value"), "{text}");
        assert!(!text.contains("hunter2hunter2"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    #[test]
    fn from_pem_reads_pkcs8_and_pkcs1_keys() {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        use rsa::pkcs8::{EncodePrivateKey as _, LineEnding};
        let key = test_key();
        let cert_pem = "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n";
        let pkcs8 = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        let pkcs1 = key.to_pkcs1_pem(LineEnding::LF).unwrap();
        let a = ClientCertificate::from_pem(cert_pem, &Secret::new(pkcs8.as_str())).unwrap();
        let b = ClientCertificate::from_pem(cert_pem, &Secret::new(pkcs1.as_str())).unwrap();
        assert_eq!(a.cert_der(), &[1, 2, 3]);
        assert_eq!(a.x5t(), b.x5t());
        let err = ClientCertificate::from_pem("nonsense", &Secret::new(pkcs8.as_str()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not PEM"), "{err}");
        let err = ClientCertificate::from_pem(
            cert_pem,
            &Secret::new("-----BEGIN PRIVATE KEY-----\nAQID\n-----END PRIVATE KEY-----"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("PKCS#8"), "{err}");
    }
}
