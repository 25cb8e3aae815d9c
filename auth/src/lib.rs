//! Validation of the tokens the Outlook task pane sends with `POST /api/v1/alias`.
//!
//! The pane gets one of two kinds of token and sends it as `Authorization: Bearer …`:
//!
//! * an **Exchange identity token** (`getUserIdentityTokenAsync`, Exchange on-prem),
//!   an RS256 JWT whose signing certificate is published in the Exchange auth
//!   metadata document named by the token's own `appctx.amurl` — see [`exchange`];
//! * an **NAA access token** (nested app authentication, Microsoft 365), an Entra ID
//!   v2 RS256 JWT whose keys are in the tenant JWKS named by the OIDC metadata
//!   document the admin configured — see [`entra`].
//!
//! The integration's [`TokenSettings`] (built by the server from its configuration)
//! say which kind is expected; a token of the other kind is refused. Both paths share
//! the hand-written compact-JWT parser and RS256 verification in [`jwt`], the
//! claim helpers in [`claims`] and the TTL cache of fetched metadata in [`cache`].
//!
//! Only `RS256` is ever accepted, and the algorithm is checked right after the header
//! is decoded, before any key lookup or network request. For Exchange tokens the
//! `amurl` is checked against the admin's allow-list before anything is fetched, so a
//! forged token cannot make the server call arbitrary URLs.
//!
//! Every failure is a [`TokenError`] with a stable [`TokenError::code`] and a message
//! precise enough for an admin reading the log; [`TokenError::is_client_error`] tells
//! the HTTP layer whether to answer 401 (bad token) or 502 (metadata trouble).

pub mod cache;
pub mod claims;
pub mod entra;
pub mod exchange;
pub mod jwt;

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use vmr_protocol::AuthMethod;

use cache::{LookupPolicy, UrlCache};
use vmr_core::clock::SharedClock;
pub use vmr_core::clock::CLOCK_SKEW_SECS;
pub use vmr_core::identity::Identity;

/// Longest token accepted, in bytes; anything longer is refused without parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Default timeout of one metadata / JWKS request.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Default minimum interval between two fetches of the same metadata URL caused by an
/// unknown key id (stops the server being used as a request amplifier).
pub const DEFAULT_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Largest metadata / JWKS document accepted, in bytes.
pub const MAX_METADATA_BYTES: usize = 1024 * 1024;

/// How tokens of one integration are validated; built by the server from its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    /// Which kind of token the pane of this integration sends.
    pub method: AuthMethod,
    /// Exchange: the pane URL (manifest `SourceLocation`); must equal `aud` exactly.
    pub audience: String,
    /// Exchange metadata allow-list: full URLs (matched exactly, after URL
    /// normalisation) or bare host names / `host:port` (match any URL on that host,
    /// and port if given).
    pub exchange_metadata: Vec<String>,
    /// How long a fetched metadata / OIDC / JWKS document is trusted.
    pub metadata_cache_ttl: Duration,
    /// NAA: the Web API application (client) id; `aud` may be the bare GUID or
    /// `api://<guid>`.
    pub naa_api_application_id: Option<String>,
    /// NAA: the OIDC metadata document URL
    /// (`https://login.microsoftonline.com/<tenant>/v2.0/.well-known/openid-configuration`).
    pub naa_oidc_metadata_url: Option<String>,
    /// NAA: tenant ids (`tid`) whose users are accepted. May be empty only when the
    /// OIDC metadata is tenant-specific (its issuer has no `{tenantid}` placeholder).
    pub naa_allowed_tenants: Vec<String>,
    /// NAA: scope that must appear in the space-separated `scp` claim (required:
    /// an empty scope is a configuration error).
    pub naa_required_scope: String,
    /// NAA: the add-in's own (SPA) client id; the token's `azp` (or `appid`) must
    /// equal it when set.
    pub naa_client_id: Option<String>,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No token at all (empty `Authorization` value).
    #[error("no token was sent")]
    Missing,
    /// The token is longer than [`MAX_TOKEN_BYTES`].
    #[error("token is {len} bytes long, more than the {max} accepted")]
    TooLarge {
        /// Length of the token received.
        len: usize,
        /// Largest length accepted.
        max: usize,
    },
    /// Not three dot-separated parts.
    #[error("not a JWT: expected 3 dot-separated parts, found {parts}")]
    NotAJwt {
        /// Number of parts found.
        parts: usize,
    },
    /// A part is not unpadded base64url.
    #[error("{part} is not base64url: {detail}")]
    BadBase64 {
        /// `header`, `payload` or `signature`.
        part: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// The header or payload is not a JSON object.
    #[error("{part} is not JSON: {detail}")]
    BadJson {
        /// `header` or `payload`.
        part: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// `alg` is anything but `RS256` (including `none` and HMAC algorithms).
    #[error("unsupported algorithm {alg:?}: only RS256 is accepted")]
    UnsupportedAlgorithm {
        /// The `alg` header value (or `<missing>`).
        alg: String,
    },
    /// The token is of the other kind than the integration expects.
    #[error("wrong kind of token: expected {expected}, got what looks like {found}")]
    WrongKind {
        /// The kind the integration is configured for.
        expected: &'static str,
        /// The kind the token looks like.
        found: &'static str,
    },
    /// A required claim or header field is absent.
    #[error("token has no {claim} claim")]
    MissingClaim {
        /// Name of the claim.
        claim: &'static str,
    },
    /// A claim is present but has the wrong type or shape.
    #[error("token claim {claim} is invalid: {detail}")]
    InvalidClaim {
        /// Name of the claim.
        claim: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// The Exchange token's `amurl` is not in the integration's metadata allow-list.
    #[error("Exchange metadata URL {amurl} (token amurl) is not in the allowed Exchange metadata domains/URLs")]
    MetadataUrlNotAllowed {
        /// The token's `amurl`.
        amurl: String,
    },
    /// The Exchange token's `amurl` is allowed but not `https`.
    #[error("Exchange metadata URL {url} must use https")]
    MetadataUrlInsecure {
        /// The offending URL.
        url: String,
    },
    /// No key in the (refreshed) metadata has the token's key id.
    #[error("unknown signing key {kind}={id}")]
    UnknownSigningKey {
        /// `x5t` (Exchange) or `kid` (Entra).
        kind: &'static str,
        /// The key id from the token header.
        id: String,
    },
    /// The RS256 signature does not verify.
    #[error("signature verification failed")]
    BadSignature,
    /// `aud` is not the expected audience.
    #[error("wrong audience: expected {expected}, found {found}")]
    WrongAudience {
        /// What the integration expects.
        expected: String,
        /// What the token says.
        found: String,
    },
    /// `iss` is not the expected issuer.
    #[error("wrong issuer: expected {expected}, found {found}")]
    WrongIssuer {
        /// What the metadata says.
        expected: String,
        /// What the token says.
        found: String,
    },
    /// The Exchange `appctx.version` is not `ExIdTok.V1`.
    #[error("unsupported Exchange identity token version {found:?}: expected \"ExIdTok.V1\"")]
    WrongVersion {
        /// The version found.
        found: String,
    },
    /// `exp` is in the past (beyond the clock skew).
    #[error("token expired at {} (now {}, {CLOCK_SKEW_SECS} s clock skew allowed)", claims::fmt_unix(*.exp), claims::fmt_unix(*.now))]
    Expired {
        /// The token's `exp`.
        exp: i64,
        /// Our clock.
        now: i64,
    },
    /// `nbf` is in the future (beyond the clock skew).
    #[error("token not valid before {} (now {}, {CLOCK_SKEW_SECS} s clock skew allowed)", claims::fmt_unix(*.nbf), claims::fmt_unix(*.now))]
    NotYetValid {
        /// The token's `nbf`.
        nbf: i64,
        /// Our clock.
        now: i64,
    },
    /// The NAA token's tenant is not allowed for this integration.
    #[error("tenant {tid} is not allowed for this integration")]
    TenantNotAllowed {
        /// The token's `tid`.
        tid: String,
    },
    /// The NAA token lacks the required delegated scope.
    #[error("token scopes {found:?} do not include the required scope {required:?}")]
    MissingScope {
        /// The configured scope.
        required: String,
        /// The token's `scp` (empty if absent).
        found: String,
    },
    /// The NAA token was issued to another client application than the add-in.
    #[error("token was issued to client {found}, not to the add-in ({expected})")]
    WrongClient {
        /// The configured add-in client id.
        expected: String,
        /// The token's `azp` / `appid`.
        found: String,
    },
    /// The metadata / OIDC / JWKS document could not be fetched.
    #[error("fetching {url} failed: {detail}")]
    MetadataFetch {
        /// The URL fetched.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// The metadata / OIDC / JWKS document was fetched but is unusable.
    #[error("document at {url} is not valid metadata: {detail}")]
    MetadataInvalid {
        /// The URL fetched.
        url: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The integration's token settings are incomplete or wrong.
    #[error("token validation is not configured correctly: {detail}")]
    NotConfigured {
        /// What is missing or wrong.
        detail: String,
    },
}

impl TokenError {
    /// Stable snake_case code for API error bodies and logs.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Missing => "token_missing",
            TokenError::TooLarge { .. } => "token_too_large",
            TokenError::NotAJwt { .. } => "token_not_jwt",
            TokenError::BadBase64 { .. } => "token_bad_base64",
            TokenError::BadJson { .. } => "token_bad_json",
            TokenError::UnsupportedAlgorithm { .. } => "token_unsupported_algorithm",
            TokenError::WrongKind { .. } => "token_wrong_kind",
            TokenError::MissingClaim { .. } => "token_missing_claim",
            TokenError::InvalidClaim { .. } => "token_invalid_claim",
            TokenError::MetadataUrlNotAllowed { .. } => "metadata_url_not_allowed",
            TokenError::MetadataUrlInsecure { .. } => "metadata_url_insecure",
            TokenError::UnknownSigningKey { .. } => "token_unknown_signing_key",
            TokenError::BadSignature => "token_bad_signature",
            TokenError::WrongAudience { .. } => "token_wrong_audience",
            TokenError::WrongIssuer { .. } => "token_wrong_issuer",
            TokenError::WrongVersion { .. } => "token_wrong_version",
            TokenError::Expired { .. } => "token_expired",
            TokenError::NotYetValid { .. } => "token_not_yet_valid",
            TokenError::TenantNotAllowed { .. } => "token_tenant_not_allowed",
            TokenError::MissingScope { .. } => "token_missing_scope",
            TokenError::WrongClient { .. } => "token_wrong_client",
            TokenError::MetadataFetch { .. } => "metadata_fetch_failed",
            TokenError::MetadataInvalid { .. } => "metadata_invalid",
            TokenError::NotConfigured { .. } => "token_validation_not_configured",
        }
    }

    /// `true` when the token (i.e. the client) is at fault (answer 401);
    /// `false` when the server could not do its part (metadata unreachable or
    /// invalid, settings incomplete: answer 502/500).
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            TokenError::MetadataFetch { .. }
                | TokenError::MetadataInvalid { .. }
                | TokenError::NotConfigured { .. }
        )
    }
}

/// Caches shared by all clones of one [`TokenValidator`].
#[derive(Default)]
struct Caches {
    exchange: UrlCache<exchange::ExchangeKeys>,
    oidc: UrlCache<entra::OidcMetadata>,
    jwks: UrlCache<entra::Jwks>,
    verified: std::sync::Mutex<std::collections::HashMap<[u8; 32], Verified>>,
}

/// Most tokens remembered as verified; the map is emptied when it is full.
const MAX_VERIFIED: usize = 20_000;

/// A token that passed every check: who it proves, and since when.
#[derive(Clone)]
struct Verified {
    identity: Identity,
    checked_at: i64,
}

/// Cache key: the token together with everything in the settings that its
/// validity depends on.
fn verified_key(settings: &TokenSettings, raw: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    // `Debug` of the settings lists every field, so a change to any of them
    // (allow-list, tenants, scope, audience, …) gives a different key.
    h.update(format!("{settings:?}").as_bytes());
    h.update([0]);
    h.update(raw.as_bytes());
    h.finalize().into()
}

/// Validates pane tokens; cheap to clone (clones share the metadata / JWKS cache).
#[derive(Clone)]
pub struct TokenValidator {
    http: reqwest::Client,
    insecure_loopback: bool,
    fetch_timeout: Duration,
    min_refetch_interval: Duration,
    clock: SharedClock,
    caches: Arc<Caches>,
}

impl std::fmt::Debug for TokenValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenValidator")
            .field("insecure_loopback", &self.insecure_loopback)
            .field("fetch_timeout", &self.fetch_timeout)
            .field("min_refetch_interval", &self.min_refetch_interval)
            .finish_non_exhaustive()
    }
}

impl TokenValidator {
    /// A validator that fetches metadata with `http` (5 s timeout per request).
    pub fn new(http: reqwest::Client) -> Self {
        TokenValidator {
            http,
            insecure_loopback: false,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            min_refetch_interval: DEFAULT_MIN_REFETCH_INTERVAL,
            clock: vmr_core::clock::system(),
            caches: Arc::new(Caches::default()),
        }
    }

    /// Read the time from `clock` (tests move it; production uses the system clock).
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Number of Exchange metadata documents cached (bounded by [`cache::MAX_SLOTS`]).
    pub fn cached_exchange_metadata(&self) -> usize {
        self.caches.exchange.len()
    }

    /// Tests and local demos only: also accept `http://` metadata URLs whose host is
    /// a loopback address (`127.0.0.1`, `::1`, `localhost`). Production requires https.
    pub fn allow_insecure_loopback_metadata(mut self, allow: bool) -> Self {
        self.insecure_loopback = allow;
        self
    }

    /// Timeout of one metadata / JWKS request (default 5 s).
    pub fn with_fetch_timeout(mut self, timeout: Duration) -> Self {
        self.fetch_timeout = timeout;
        self
    }

    /// Minimum interval between refetches of one metadata URL triggered by an
    /// unknown key id (default 30 s).
    pub fn with_min_refetch_interval(mut self, interval: Duration) -> Self {
        self.min_refetch_interval = interval;
        self
    }

    /// Validate `raw` against `settings` at the validator clock's current time.
    pub async fn validate(
        &self,
        settings: &TokenSettings,
        raw: &str,
    ) -> Result<Identity, TokenError> {
        let now_unix = self.clock.now_unix();
        // Outlook hands out the same token for a while, so a user adding rooms
        // to several meetings sends it again: remember tokens that passed, for
        // no longer than their own lifetime and the metadata cache TTL.
        let key = verified_key(settings, raw);
        if let Some(hit) = self.verified(&key, settings, now_unix) {
            return Ok(hit);
        }
        let jwt = jwt::Jwt::parse(raw)?;
        let result = match settings.method {
            AuthMethod::ExchangeUserIdToken => {
                exchange::validate(self, settings, &jwt, now_unix).await
            }
            AuthMethod::NaaToken => entra::validate(self, settings, &jwt, now_unix).await,
        };
        match &result {
            Err(e) => tracing::debug!(code = e.code(), error = %e, "token refused"),
            Ok(identity) => {
                if let Ok(mut map) = self.caches.verified.lock() {
                    if map.len() >= MAX_VERIFIED {
                        map.clear();
                    }
                    map.insert(
                        key,
                        Verified {
                            identity: identity.clone(),
                            checked_at: now_unix,
                        },
                    );
                }
            }
        }
        result
    }

    /// A remembered verification of this token that still holds at `now_unix`.
    fn verified(
        &self,
        key: &[u8; 32],
        settings: &TokenSettings,
        now_unix: i64,
    ) -> Option<Identity> {
        let map = self.caches.verified.lock().ok()?;
        let hit = map.get(key)?;
        let ttl = i64::try_from(settings.metadata_cache_ttl.as_secs()).unwrap_or(i64::MAX);
        let fresh = now_unix >= hit.checked_at
            && now_unix < hit.identity.expires_at.saturating_add(CLOCK_SKEW_SECS)
            && now_unix < hit.checked_at.saturating_add(ttl);
        fresh.then(|| hit.identity.clone())
    }

    /// Finds something with `find` in the document at `url` kept in `cache`,
    /// fetching it and reading it with `parse` when the cache says so (see
    /// [`cache`]: TTL, refetch interval, back-off, per-host cap).
    async fn cached_document<T, R>(
        &self,
        cache: &UrlCache<T>,
        url: &Url,
        settings: &TokenSettings,
        find: impl Fn(&T) -> Option<R>,
        parse: fn(&str, &serde_json::Value) -> Result<T, TokenError>,
    ) -> Result<Option<R>, TokenError> {
        // `host:port`, the unit of the per-host fetch cap.
        let host = format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        );
        cache
            .lookup(
                url.as_str(),
                &host,
                LookupPolicy {
                    ttl: settings.metadata_cache_ttl,
                    min_refetch: self.min_refetch_interval,
                    now_ms: self.clock.now_unix_ms(),
                },
                find,
                || async {
                    let doc = self.fetch_json(url).await?;
                    parse(url.as_str(), &doc)
                },
            )
            .await
    }

    /// Parse a URL we are about to fetch and insist on https (or loopback http when
    /// [`Self::allow_insecure_loopback_metadata`] is set). `None` if not acceptable.
    fn fetchable_url(&self, url: &str) -> Option<Url> {
        let parsed = Url::parse(url).ok()?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return None;
        }
        match parsed.scheme() {
            "https" => Some(parsed),
            "http" if self.insecure_loopback && is_loopback(&parsed) => Some(parsed),
            _ => None,
        }
    }

    /// GET `url` and parse the body as JSON (timeout, size cap, status check).
    async fn fetch_json(&self, url: &Url) -> Result<serde_json::Value, TokenError> {
        let fetch_err = |detail: String| TokenError::MetadataFetch {
            url: url.to_string(),
            detail,
        };
        tracing::debug!(%url, "fetching token metadata");
        let mut response = self
            .http
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.fetch_timeout)
            .send()
            .await
            .map_err(|e| fetch_err(error_chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(fetch_err(format!("HTTP status {status}")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| fetch_err(error_chain(&e)))?
        {
            if body.len() + chunk.len() > MAX_METADATA_BYTES {
                return Err(fetch_err(format!(
                    "response larger than {MAX_METADATA_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| TokenError::MetadataInvalid {
            url: url.to_string(),
            detail: format!("not JSON: {e}"),
        })
    }
}

/// `true` for `127.0.0.0/8`, `::1` and `localhost`.
fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// An error and its sources on one line (reqwest hides the useful part in sources).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
