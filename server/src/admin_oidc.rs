//! Single sign-on for the admin page (`[admin.oidc]`): OpenID Connect's authorization code
//! flow with PKCE against Entra ID or any other provider, beside the admin tokens.
//!
//! 1. `GET /admin/oidc/start` ([`crate::admin_page`]) makes a [`Pending`] sign-in — random
//!    `state`, `nonce` and PKCE verifier, kept in a short-lived cookie — and sends the browser
//!    to the provider's `authorization_endpoint` ([`OidcSignIn::authorization_url`]).
//! 2. The provider sends it back to `https://<public_host>/admin/oidc/callback` with `code`
//!    and `state`. [`OidcSignIn::finish`] checks `state` against the cookie, redeems the code
//!    at the `token_endpoint` with the client secret and the verifier, and checks the ID
//!    token: RS256 signature by a key of the provider's JWKS, `iss`, `aud` = client id, `exp`
//!    and `nbf` (injected clock, with the usual skew), `nonce`.
//! 3. The user (`preferred_username`, else `email`, else `upn`) must be in `allowed_users` or
//!    carry one of `allowed_groups` in `groups`. The page then starts a session under that
//!    name, which the audit log shows for their writes.
//!
//! The provider's discovery document and keys are fetched on first use and kept for an hour;
//! a token signed by a key not in the cached set fetches the keys again once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use vmr_auth::entra::{parse_jwks, Jwks};
use vmr_auth::jwt::Jwt;
use vmr_auth::{claims, TokenError};
use vmr_core::config::AdminOidcConfig;

/// The callback path, under the server's public host.
pub const CALLBACK_PATH: &str = "/admin/oidc/callback";
/// How long the provider's discovery document and keys are kept (ms).
const PROVIDER_TTL_MS: i64 = 3_600_000;
/// Most bytes read of a provider answer.
const MAX_ANSWER_BYTES: usize = 512 * 1024;

/// Why a sign-in did not succeed. The texts are shown on the sign-in page and logged.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be asked (discovery, keys or token endpoint).
    #[error("the sign-in provider could not be reached or answered badly: {0}")]
    Provider(String),
    /// The provider refused the sign-in (`error` on the callback, or the token request).
    #[error("the sign-in provider refused: {0}")]
    Refused(String),
    /// The callback does not belong to a sign-in this browser started (or it expired).
    #[error("the sign-in expired or was started elsewhere; please sign in again")]
    State,
    /// The ID token failed a check.
    #[error("the provider's ID token was not accepted: {0}")]
    Token(String),
    /// A valid user who may not administer this server.
    #[error(
        "{0} may not administer this server (not in admin.oidc.allowed_users or allowed_groups)"
    )]
    NotAllowed(String),
    /// A user whose groups the provider left out of the ID token (Entra ID does past 200
    /// groups, marking the token with `hasgroups` or `_claim_names`), not listed by name.
    #[error(
        "{0} is not in admin.oidc.allowed_users, and the provider left the user's groups out of \
         the ID token (too many groups): list the user in allowed_users, or have the app's \
         tokens carry only the groups assigned to it"
    )]
    GroupsOmitted(String),
}

/// A sign-in in progress: what the browser keeps in a cookie between the start and the
/// callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub state: String,
    pub nonce: String,
    /// The PKCE code verifier (43 base64url characters).
    pub verifier: String,
}

fn random_b64url() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Pending {
    /// A fresh sign-in: random state, nonce and verifier.
    pub fn new() -> Pending {
        Pending {
            state: random_b64url(),
            nonce: random_b64url(),
            verifier: random_b64url(),
        }
    }

    /// The cookie value: `state.nonce.verifier` (base64url, so no separator inside).
    pub fn cookie_value(&self) -> String {
        format!("{}.{}.{}", self.state, self.nonce, self.verifier)
    }

    /// Reads [`Pending::cookie_value`] back.
    pub fn from_cookie(value: &str) -> Option<Pending> {
        let mut parts = value.split('.');
        let (Some(state), Some(nonce), Some(verifier), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let fine = |p: &str| {
            !p.is_empty()
                && p.len() <= 128
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        (fine(state) && fine(nonce) && fine(verifier)).then(|| Pending {
            state: state.to_owned(),
            nonce: nonce.to_owned(),
            verifier: verifier.to_owned(),
        })
    }

    /// The PKCE challenge: base64url(SHA-256(verifier)).
    pub fn challenge(&self) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(self.verifier.as_bytes()))
    }
}

impl Default for Pending {
    fn default() -> Self {
        Pending::new()
    }
}

/// Who signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    /// The sign-in name: what the session and the audit log call them.
    pub user: String,
}

/// The provider's endpoints and keys, as fetched.
#[derive(Debug, Clone)]
struct Provider {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    keys: Jwks,
    fetched_at_ms: i64,
}

/// The admin page's OpenID Connect client.
pub struct OidcSignIn {
    config: AdminOidcConfig,
    http: reqwest::Client,
    redirect_uri: String,
    provider: Mutex<Option<Provider>>,
}

impl std::fmt::Debug for OidcSignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSignIn")
            .field("issuer", &self.config.issuer)
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

impl OidcSignIn {
    /// A client for `config`, sending the browser back to `https://{public_host}` +
    /// [`CALLBACK_PATH`], asking the provider through `http`.
    pub fn new(config: AdminOidcConfig, http: reqwest::Client, public_host: &str) -> Arc<Self> {
        Arc::new(OidcSignIn {
            config,
            http,
            redirect_uri: format!("https://{public_host}{CALLBACK_PATH}"),
            provider: Mutex::new(None),
        })
    }

    /// What the sign-in button says.
    pub fn button_label(&self) -> String {
        self.config
            .button_label
            .clone()
            .filter(|l| !l.trim().is_empty())
            .unwrap_or_else(|| "Sign in with single sign-on".to_owned())
    }

    async fn get_json(&self, url: &str, what: &str) -> Result<Value, OidcError> {
        let response = self
            .http
            .get(url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| OidcError::Provider(format!("{what} {url}: {e}")))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| OidcError::Provider(format!("{what} {url}: {e}")))?;
        if !status.is_success() {
            return Err(OidcError::Provider(format!("{what} {url}: HTTP {status}")));
        }
        if body.len() > MAX_ANSWER_BYTES {
            return Err(OidcError::Provider(format!(
                "{what} {url}: more than {MAX_ANSWER_BYTES} bytes"
            )));
        }
        serde_json::from_slice(&body)
            .map_err(|e| OidcError::Provider(format!("{what} {url} is not JSON: {e}")))
    }

    /// The provider, fetched when missing, older than an hour, or (`refresh_keys`) when a
    /// token names a key the cached set lacks.
    async fn provider(&self, now_ms: i64, refresh_keys: bool) -> Result<Provider, OidcError> {
        let mut cached = self.provider.lock().await;
        if let Some(p) = cached.as_ref() {
            if !refresh_keys && now_ms - p.fetched_at_ms < PROVIDER_TTL_MS {
                return Ok(p.clone());
            }
        }
        let issuer = self.config.issuer.trim_end_matches('/');
        let discovery_url = format!("{issuer}/.well-known/openid-configuration");
        let doc = self.get_json(&discovery_url, "discovery").await?;
        let field = |name: &str| {
            doc.get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| {
                    OidcError::Provider(format!("discovery {discovery_url}: no {name:?}"))
                })
        };
        let announced = field("issuer")?;
        if announced.trim_end_matches('/') != issuer {
            return Err(OidcError::Provider(format!(
                "discovery {discovery_url} names the issuer {announced:?}, not the configured \
                 {issuer:?} (for Entra ID use https://login.microsoftonline.com/<tenant id>/v2.0)"
            )));
        }
        let jwks_uri = field("jwks_uri")?;
        let keys_doc = self.get_json(&jwks_uri, "keys").await?;
        let keys =
            parse_jwks(&jwks_uri, &keys_doc).map_err(|e| OidcError::Provider(e.to_string()))?;
        let provider = Provider {
            issuer: announced,
            authorization_endpoint: field("authorization_endpoint")?,
            token_endpoint: field("token_endpoint")?,
            jwks_uri,
            keys,
            fetched_at_ms: now_ms,
        };
        *cached = Some(provider.clone());
        Ok(provider)
    }

    /// Where to send the browser to sign in `pending`.
    pub async fn authorization_url(
        &self,
        pending: &Pending,
        now_ms: i64,
    ) -> Result<String, OidcError> {
        let provider = self.provider(now_ms, false).await?;
        let mut url = url::Url::parse(&provider.authorization_endpoint).map_err(|e| {
            OidcError::Provider(format!(
                "authorization_endpoint {:?}: {e}",
                provider.authorization_endpoint
            ))
        })?;
        url.query_pairs_mut()
            .append_pair("client_id", &self.config.client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", &self.redirect_uri)
            .append_pair("response_mode", "query")
            .append_pair("scope", "openid profile email")
            .append_pair("state", &pending.state)
            .append_pair("nonce", &pending.nonce)
            .append_pair("code_challenge", &pending.challenge())
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    /// Completes the sign-in the callback `query` answers; `pending` is the browser's cookie.
    pub async fn finish(
        &self,
        pending: Option<&Pending>,
        query: &HashMap<String, String>,
        now_ms: i64,
    ) -> Result<SignedIn, OidcError> {
        let pending = pending.ok_or(OidcError::State)?;
        let state = query.get("state").map(String::as_str).unwrap_or("");
        if !constant_time_eq(state, &pending.state) {
            return Err(OidcError::State);
        }
        if let Some(error) = query.get("error") {
            let description = query.get("error_description").map_or("", String::as_str);
            return Err(OidcError::Refused(format!("{error}: {description}")));
        }
        let code = query
            .get("code")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| OidcError::Refused("the callback carries no code".into()))?;
        let provider = self.provider(now_ms, false).await?;
        let id_token = self.redeem(&provider, code, pending).await?;
        let jwt = Jwt::parse(&id_token).map_err(token_error)?;
        let provider = match jwt.header_str("kid") {
            Some(kid) if !provider.keys.keys.contains_key(kid) => {
                self.provider(now_ms, true).await?
            }
            _ => provider,
        };
        self.check_id_token(&provider, &jwt, pending, now_ms)
    }

    /// Redeems `code` at the token endpoint; the ID token.
    async fn redeem(
        &self,
        provider: &Provider,
        code: &str,
        pending: &Pending,
    ) -> Result<String, OidcError> {
        let secret = self
            .config
            .client_secret
            .as_ref()
            .map(|s| s.expose().to_owned())
            .unwrap_or_default();
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.redirect_uri.as_str()),
            ("client_id", self.config.client_id.as_str()),
            ("client_secret", secret.as_str()),
            ("code_verifier", pending.verifier.as_str()),
        ];
        let url = &provider.token_endpoint;
        let response = self
            .http
            .post(url)
            .timeout(Duration::from_secs(10))
            .form(&form)
            .send()
            .await
            .map_err(|e| OidcError::Provider(format!("token endpoint {url}: {e}")))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| OidcError::Provider(format!("token endpoint {url}: {e}")))?;
        if !status.is_success() {
            let text = |k: &str| body.get(k).and_then(Value::as_str).unwrap_or("");
            return Err(OidcError::Refused(format!(
                "token endpoint: HTTP {status} {} {}",
                text("error"),
                text("error_description")
            )));
        }
        body.get("id_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| OidcError::Provider(format!("token endpoint {url}: no id_token")))
    }

    fn check_id_token(
        &self,
        provider: &Provider,
        jwt: &Jwt,
        pending: &Pending,
        now_ms: i64,
    ) -> Result<SignedIn, OidcError> {
        let kid = jwt.header_str("kid").unwrap_or("");
        let key = provider.keys.keys.get(kid).ok_or_else(|| {
            OidcError::Token(format!(
                "signed with key {kid:?}, which {} does not list",
                provider.jwks_uri
            ))
        })?;
        jwt.verify_rs256(key).map_err(token_error)?;
        let iss = claims::required_str(&jwt.payload, "iss").map_err(token_error)?;
        if iss.trim_end_matches('/') != provider.issuer.trim_end_matches('/') {
            return Err(OidcError::Token(format!(
                "issued by {iss:?}, not {:?}",
                provider.issuer
            )));
        }
        claims::check_audience(
            &jwt.payload,
            &[self.config.client_id.as_str()],
            &self.config.client_id,
        )
        .map_err(token_error)?;
        claims::check_times(&jwt.payload, now_ms / 1000).map_err(token_error)?;
        let nonce = claims::optional_str(&jwt.payload, "nonce").unwrap_or_default();
        if !constant_time_eq(&nonce, &pending.nonce) {
            return Err(OidcError::Token(
                "its nonce is not this sign-in's (a replayed token?)".into(),
            ));
        }
        let user = ["preferred_username", "email", "upn"]
            .iter()
            .find_map(|k| claims::optional_str(&jwt.payload, k))
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| {
                OidcError::Token("it names no user (preferred_username, email or upn)".into())
            })?;
        let groups: Vec<String> = jwt
            .payload
            .get("groups")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if !self.config.allows(&user, &groups) {
            let omitted = jwt.payload.contains_key("hasgroups")
                || jwt
                    .payload
                    .get("_claim_names")
                    .and_then(Value::as_object)
                    .is_some_and(|names| names.contains_key("groups"));
            if omitted && !self.config.allowed_groups.is_empty() {
                return Err(OidcError::GroupsOmitted(user));
            }
            return Err(OidcError::NotAllowed(user));
        }
        Ok(SignedIn { user })
    }
}

fn token_error(e: TokenError) -> OidcError {
    OidcError::Token(e.to_string())
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    !a.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_round_trips_through_its_cookie_and_refuses_junk() {
        let p = Pending::new();
        assert_eq!(p.verifier.len(), 43);
        assert_eq!(Pending::from_cookie(&p.cookie_value()), Some(p.clone()));
        for junk in ["", "a.b", "a.b.c.d", "a..c", "a.b.c;d", "a.b.c d"] {
            assert_eq!(Pending::from_cookie(junk), None, "{junk:?}");
        }
        // RFC 7636 appendix B.
        let rfc = Pending {
            state: "s".into(),
            nonce: "n".into(),
            verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
        };
        assert_eq!(
            rfc.challenge(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
