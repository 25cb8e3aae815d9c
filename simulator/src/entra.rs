//! Simulated Microsoft Entra ID (the `login.microsoftonline.com` side of Nested App
//! Authentication).
//!
//! In Microsoft 365, where Exchange identity tokens are switched off, the pane gets a v2.0
//! access token through MSAL's nested app authentication and the server validates it against
//! the tenant's OpenID Connect metadata and JWKS. [`EntraIssuer`] holds a signing key with a
//! `kid`, issues such access tokens ([`EntraIssuer::access_token`]), signs arbitrary tokens for
//! tests ([`EntraIssuer::sign_raw`]), and [`router`] serves the same paths as
//! login.microsoftonline.com: `/{tenant}/v2.0/.well-known/openid-configuration` and
//! `/{tenant}/discovery/v2.0/keys`.

use crate::jwt::{unix_now, RsaSigner};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A simulated Entra ID tenant's token-signing identity.
pub struct EntraIssuer {
    origin: String,
    tenant_id: String,
    signer: RsaSigner,
    kid: String,
    jwks_fetches: AtomicUsize,
    /// Web sign-in (authorization code flow): [`crate::entra_sign_in`].
    pub(crate) sign_in: crate::entra_sign_in::SignInState,
}

/// What goes into one v2.0 access token. Build it with [`NaaClaims::new`] and adjust fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NaaClaims {
    /// `aud`: the API's application id URI (or client id) the token is for.
    pub aud: String,
    /// `azp`: client id of the application that asked for the token (the pane's SPA app).
    pub azp: String,
    /// `oid`: the user's object id in the tenant.
    pub oid: String,
    /// `preferred_username`: the user's sign-in name (usually the e-mail address).
    pub preferred_username: String,
    /// `name`: the user's display name.
    pub name: String,
    /// `scp`: space-separated delegated scopes.
    pub scp: String,
    /// `iat` and `nbf`, Unix seconds.
    pub valid_from: i64,
    /// `exp`, Unix seconds.
    pub valid_until: i64,
    /// Use this `tid` instead of the issuer's tenant (the `iss` keeps the issuer's tenant).
    pub tid_override: Option<String>,
    /// Use this `iss` instead of `{origin}/{tenant}/v2.0`.
    pub iss_override: Option<String>,
}

impl NaaClaims {
    /// Claims for `user` (an e-mail address) and audience `aud`: scope `access_as_user`, a
    /// stable object id derived from the address, valid from five minutes ago for one hour
    /// (Entra's default access-token lifetime is 60–90 minutes).
    pub fn new(aud: impl Into<String>, user: impl Into<String>) -> Self {
        let user = user.into();
        let now = unix_now();
        Self {
            aud: aud.into(),
            azp: "00000000-0000-0000-0000-0000000a11e5".to_owned(),
            oid: crate::exchange_identity::msexchuid_for(&format!("entra:{user}")),
            name: crate::exchange_identity::display_name_for(&user),
            preferred_username: user,
            scp: "access_as_user".to_owned(),
            valid_from: now - 300,
            valid_until: now + 3600,
            tid_override: None,
            iss_override: None,
        }
    }
}

impl EntraIssuer {
    /// Generates a tenant `tenant_id` served at `origin` (e.g. `https://127.0.0.1:9443`).
    pub fn generate(origin: &str, tenant_id: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !tenant_id.is_empty() && !tenant_id.contains(['/', '?', '#']),
            "tenant id {tenant_id:?} is not a single path segment"
        );
        let signer = RsaSigner::generate("login.microsoftonline.com simulated signing key")?;
        // Entra uses the certificate thumbprint as the key id.
        let kid = signer.x5t();
        Ok(Self {
            origin: origin.trim_end_matches('/').to_owned(),
            tenant_id: tenant_id.to_owned(),
            signer,
            kid,
            jwks_fetches: AtomicUsize::new(0),
            sign_in: Default::default(),
        })
    }

    /// The tenant id.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// The key id (`kid`) of the signing key, also its `x5t`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `{origin}/{tenant}/v2.0`: the `iss` of access tokens.
    pub fn issuer(&self) -> String {
        format!("{}/{}/v2.0", self.origin, self.tenant_id)
    }

    /// `{origin}/{tenant}/v2.0/.well-known/openid-configuration`.
    pub fn oidc_metadata_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer())
    }

    /// `{origin}/{tenant}/discovery/v2.0/keys`.
    pub fn jwks_uri(&self) -> String {
        format!("{}/{}/discovery/v2.0/keys", self.origin, self.tenant_id)
    }

    /// The signing key's public half.
    pub fn public_key(&self) -> &rsa::RsaPublicKey {
        self.signer.public_key()
    }

    /// The RSA public key as PKCS#1 DER.
    pub fn public_key_pkcs1_der(&self) -> Vec<u8> {
        self.signer.public_key_pkcs1_der()
    }

    /// The RSA public key as a SubjectPublicKeyInfo PEM.
    pub fn public_key_pem(&self) -> String {
        self.signer.public_key_pem()
    }

    /// How many times the JWKS has been served by [`router`].
    pub fn jwks_fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    /// The OpenID Connect discovery document, shaped like login.microsoftonline.com's.
    pub fn oidc_metadata(&self) -> Value {
        let base = format!("{}/{}", self.origin, self.tenant_id);
        json!({
            "token_endpoint": format!("{base}/oauth2/v2.0/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": self.jwks_uri(),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": self.issuer(),
            "request_uri_parameter_supported": false,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
            "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
            "http_logout_supported": true,
            "frontchannel_logout_supported": true,
            "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
            "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
            "kerberos_endpoint": format!("{base}/kerberos"),
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net"
        })
    }

    /// The JSON Web Key Set with the one signing key.
    pub fn jwks(&self) -> Value {
        json!({
            "keys": [{
                "kty": "RSA",
                "use": "sig",
                "kid": self.kid,
                "x5t": self.signer.x5t(),
                "n": self.signer.modulus_b64url(),
                "e": self.signer.exponent_b64url(),
                "x5c": [self.signer.cert_base64()],
                "issuer": self.issuer(),
            }]
        })
    }

    /// The JOSE header of access tokens: `{"typ":"JWT","alg":"RS256","kid":...}`.
    pub fn token_header(&self) -> Value {
        json!({ "typ": "JWT", "alg": "RS256", "kid": self.kid })
    }

    /// The payload of a v2.0 access token for `claims`.
    pub fn access_payload(&self, claims: &NaaClaims) -> Value {
        let tid = claims
            .tid_override
            .clone()
            .unwrap_or_else(|| self.tenant_id.clone());
        let iss = claims.iss_override.clone().unwrap_or_else(|| self.issuer());
        json!({
            "aud": claims.aud,
            "iss": iss,
            "iat": claims.valid_from,
            "nbf": claims.valid_from,
            "exp": claims.valid_until,
            "aio": "AWQAm/8ZAAAAsimulated",
            "azp": claims.azp,
            "azpacr": "0",
            "name": claims.name,
            "oid": claims.oid,
            "preferred_username": claims.preferred_username,
            "rh": "0.AAAAsimulated.",
            "scp": claims.scp,
            "sub": crate::exchange_identity::msexchuid_for(&format!("sub:{}:{}", claims.oid, claims.azp)),
            "tid": tid,
            "uti": uuid::Uuid::new_v4().simple().to_string(),
            "ver": "2.0",
        })
    }

    /// An RS256 v2.0 access token for `claims`.
    pub fn access_token(&self, claims: &NaaClaims) -> String {
        self.sign_raw(&self.token_header(), &self.access_payload(claims))
    }

    /// Signs any header and payload with this tenant's key (RS256, whatever `alg` says).
    pub fn sign_raw(&self, header: &Value, payload: &Value) -> String {
        self.signer.sign_jwt(header, payload)
    }
}

/// Routes of the simulated Entra ID: the tenant's OIDC discovery document and JWKS, and the
/// web sign-in endpoints ([`crate::entra_sign_in`]).
pub fn router(issuer: Arc<EntraIssuer>) -> Router {
    Router::new()
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(keys))
        .with_state(issuer.clone())
        .merge(crate::entra_sign_in::router(issuer))
}

/// Entra's answer for a tenant it does not know (AADSTS90002).
fn unknown_tenant(tenant: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({
            "error": "invalid_tenant",
            "error_description": format!("AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
            "error_codes": [90002],
        })),
    )
        .into_response()
}

async fn openid_configuration(
    State(issuer): State<Arc<EntraIssuer>>,
    Path(tenant): Path<String>,
) -> Response {
    if tenant != issuer.tenant_id {
        return unknown_tenant(&tenant);
    }
    Json(issuer.oidc_metadata()).into_response()
}

async fn keys(State(issuer): State<Arc<EntraIssuer>>, Path(tenant): Path<String>) -> Response {
    if tenant != issuer.tenant_id {
        return unknown_tenant(&tenant);
    }
    issuer.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    Json(issuer.jwks()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::signature::Verifier as _;
    use rsa::BigUint;
    use sha2::Sha256;
    use tower::ServiceExt as _;

    const TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

    #[tokio::test]
    async fn jwks_matches_key_and_token_verifies() {
        let issuer =
            Arc::new(EntraIssuer::generate("https://127.0.0.1:9443", TENANT).expect("issuer"));
        let get = |path: String| {
            let app = router(issuer.clone());
            async move {
                let response = app
                    .oneshot(
                        axum::http::Request::get(path)
                            .body(axum::body::Body::empty())
                            .expect("request"),
                    )
                    .await
                    .expect("response");
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .expect("body");
                (
                    status,
                    serde_json::from_slice::<Value>(&body).expect("json"),
                )
            }
        };

        let (status, oidc) = get(format!("/{TENANT}/v2.0/.well-known/openid-configuration")).await;
        assert_eq!(status, 200);
        assert_eq!(
            oidc["issuer"],
            format!("https://127.0.0.1:9443/{TENANT}/v2.0").as_str()
        );
        assert_eq!(oidc["jwks_uri"], issuer.jwks_uri().as_str());
        assert_eq!(
            issuer.oidc_metadata_url(),
            format!("https://127.0.0.1:9443/{TENANT}/v2.0/.well-known/openid-configuration")
        );

        let (status, jwks) = get(format!("/{TENANT}/discovery/v2.0/keys")).await;
        assert_eq!(status, 200);
        assert_eq!(issuer.jwks_fetches(), 1);
        let (status, _) = get("/other-tenant/discovery/v2.0/keys".to_owned()).await;
        assert_eq!(status, 400);

        let jwk = &jwks["keys"][0];
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["kid"], issuer.kid());
        let decode = |v: &Value| {
            BigUint::from_bytes_be(
                &URL_SAFE_NO_PAD
                    .decode(v.as_str().expect("string"))
                    .expect("b64"),
            )
        };
        use rsa::traits::PublicKeyParts as _;
        assert_eq!(decode(&jwk["n"]), *issuer.public_key().n());
        assert_eq!(decode(&jwk["e"]), *issuer.public_key().e());

        let key = rsa::RsaPublicKey::new(decode(&jwk["n"]), decode(&jwk["e"])).expect("key");
        let token = issuer.access_token(&NaaClaims::new(
            "api://addin.example.test/app",
            "alice@example.test",
        ));
        let parts: Vec<&str> = token.split('.').collect();
        let signature =
            Signature::try_from(URL_SAFE_NO_PAD.decode(parts[2]).expect("sig").as_slice())
                .expect("signature");
        VerifyingKey::<Sha256>::new(key)
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("verifies");
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
        assert_eq!(header["kid"], issuer.kid());
        let payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
        assert_eq!(payload["iss"], issuer.issuer().as_str());
        assert_eq!(payload["tid"], TENANT);
        assert_eq!(payload["ver"], "2.0");
        assert_eq!(payload["preferred_username"], "alice@example.test");
        assert_eq!(payload["scp"], "access_as_user");
    }
}
