//! Simulated Nested App Authentication (NAA): the MSAL.js a pane uses in new Outlook and the
//! Entra ID token service behind it.
//!
//! In new Outlook and Outlook on the web the task pane gets a Microsoft 365 access token with
//! `@azure/msal-browser`'s `createNestablePublicClientApplication`: Outlook (the "nested app
//! authentication" broker) asks Entra ID for a v2.0 access token for the pane's SPA client id
//! and hands it back. Here `GET /msal-browser.js` ([`MSAL_JS_PATH`]) is a fake of the part of
//! MSAL.js such a pane uses (`window.msal`, see `assets/msal-browser.js`), and the fake asks
//! `POST /entra/naa-token` ([`NAA_TOKEN_PATH`]) on the simulator's origin for the token, which
//! [`issue_naa_token`] signs with the simulated tenant's [`EntraIssuer`] key — so the token
//! verifies against the tenant's JWKS like a real one.
//!
//! The token's `aud` is the API's app id taken from the requested scope
//! `api://<guid>/<scope>`, `scp` the scope names, `azp` the requesting client id and `tid` the
//! tenant. Bad requests get Entra's error shape (`error`, `error_description` with an AADSTS
//! code, `error_codes`, …) with status 400. Both routes answer cross-origin requests
//! (`Access-Control-Allow-Origin: *`; the token route also answers CORS preflights).

use crate::entra::{EntraIssuer, NaaClaims};
use crate::jwt::unix_now;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

/// The fake `@azure/msal-browser`.
pub const MSAL_JS: &str = include_str!("../assets/msal-browser.js");
/// Path of the fake MSAL.js.
pub const MSAL_JS_PATH: &str = "/msal-browser.js";
/// Path the fake MSAL.js posts token requests to.
pub const NAA_TOKEN_PATH: &str = "/entra/naa-token";
/// The signed-in user when a token request names none.
pub const DEFAULT_NAA_USER: &str = "alice@example.com";

/// Body of `POST /entra/naa-token`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NaaTokenRequest {
    /// The pane's SPA application (client) id; becomes the token's `azp`.
    #[serde(default)]
    pub client_id: String,
    /// Requested scopes. Those of form `api://<guid>/<scope>` (all for one API) decide `aud`
    /// and `scp`; OpenID scopes (`openid`, `profile`, `offline_access`, `email`) are ignored.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The signed-in user's address (default [`DEFAULT_NAA_USER`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl NaaTokenRequest {
    /// A request from client `client_id` for `scopes`, for the default user.
    pub fn new(client_id: impl Into<String>, scopes: &[&str]) -> Self {
        Self {
            client_id: client_id.into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            user: None,
        }
    }
}

/// Answer of `POST /entra/naa-token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NaaTokenResponse {
    /// The signed v2.0 access token.
    pub access_token: String,
    /// `Bearer`.
    pub token_type: String,
    /// The granted scopes, space-separated, in `api://<guid>/<scope>` form.
    pub scope: String,
    /// The user's sign-in name (`preferred_username`).
    pub username: String,
    /// The user's display name.
    pub name: String,
    /// The tenant id (`tid`).
    pub tenant_id: String,
    /// The user's object id (`oid`).
    pub oid: String,
    /// `exp` of the token, Unix seconds.
    pub expires_on: i64,
}

/// Why a token request is refused: Entra's OAuth error body (returned with status 400).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NaaTokenError {
    /// OAuth error code, e.g. `invalid_request`, `invalid_scope`.
    pub error: String,
    /// `AADSTSnnnnn: …` description.
    pub error_description: String,
    /// The AADSTS numbers.
    pub error_codes: Vec<u32>,
}

impl NaaTokenError {
    fn new(error: &str, code: u32, description: impl std::fmt::Display) -> Self {
        Self {
            error: error.to_owned(),
            error_description: format!("AADSTS{code}: {description}"),
            error_codes: vec![code],
        }
    }
}

impl std::fmt::Display for NaaTokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.error_description)
    }
}

impl std::error::Error for NaaTokenError {}

/// OpenID Connect scopes MSAL adds to every request; they say nothing about the resource.
const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "offline_access", "email"];

/// `api://<guid>/<scope>` → `(guid, scope)`; `None` for any other shape.
fn api_scope(scope: &str) -> Option<(&str, &str)> {
    let rest = scope.strip_prefix("api://")?;
    let (app_id, name) = rest.split_once('/')?;
    let well_formed = app_id.len() == 36 && uuid::Uuid::try_parse(app_id).is_ok();
    (well_formed && !name.is_empty() && !name.contains(['/', ' '])).then_some((app_id, name))
}

/// The `aud` (the API's app id) and `scp` (space-separated scope names) for `scopes`.
///
/// Every scope must be an OpenID scope or of form `api://<guid>/<scope>` for one API, and at
/// least one must be the latter. `api://<guid>/.default` stands for the scopes the API exposes
/// (in the simulated tenant, `access_as_user`) and cannot be combined with named scopes.
pub fn audience_and_scp(scopes: &[String]) -> Result<(String, String), NaaTokenError> {
    let scopes: Vec<&str> = scopes
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if scopes.is_empty() {
        return Err(NaaTokenError::new(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        ));
    }
    let mut aud: Option<&str> = None;
    let mut names: Vec<&str> = Vec::new();
    for scope in &scopes {
        if OIDC_SCOPES.iter().any(|s| s.eq_ignore_ascii_case(scope)) {
            continue;
        }
        let Some((app_id, name)) = api_scope(scope) else {
            return Err(NaaTokenError::new(
                "invalid_scope",
                70011,
                format!("The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope '{scope}' is not valid."),
            ));
        };
        match aud {
            Some(previous) if !previous.eq_ignore_ascii_case(app_id) => {
                return Err(NaaTokenError::new(
                    "invalid_request",
                    28000,
                    format!("Provided value for the input parameter scope is not valid because it contains more than one resource. Scope {} is not valid.", scopes.join(" ")),
                ));
            }
            Some(_) => {}
            None => aud = Some(app_id),
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let Some(aud) = aud else {
        return Err(NaaTokenError::new(
            "invalid_scope",
            70011,
            format!("The provided value for the input parameter 'scope' is not valid. The scope '{}' does not name a resource of form api://<application id>/<scope>.", scopes.join(" ")),
        ));
    };
    if names.contains(&".default") {
        if names.len() > 1 {
            return Err(NaaTokenError::new(
                "invalid_scope",
                70011,
                format!("The provided value for the input parameter 'scope' is not valid. The scope '{}' is not valid. static scope limit exceeded.", scopes.join(" ")),
            ));
        }
        names = vec!["access_as_user"];
    }
    Ok((aud.to_ascii_lowercase(), names.join(" ")))
}

/// Issues the access token Outlook's NAA broker would hand the pane for `request`, signed by
/// `issuer`: `aud`/`scp` from the scopes ([`audience_and_scp`]), `azp` = client id, `tid` =
/// the issuer's tenant, user [`DEFAULT_NAA_USER`] unless named, with a stable `oid` derived
/// from the address ([`NaaClaims::new`]).
pub fn issue_naa_token(
    issuer: &EntraIssuer,
    request: &NaaTokenRequest,
) -> Result<NaaTokenResponse, NaaTokenError> {
    let client_id = request.client_id.trim();
    if client_id.is_empty() {
        return Err(NaaTokenError::new(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        ));
    }
    let (aud, scp) = audience_and_scp(&request.scopes)?;
    let user = request
        .user
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .unwrap_or(DEFAULT_NAA_USER);
    if !user.contains('@') {
        return Err(NaaTokenError::new(
            "invalid_request",
            50034,
            format!("The user account {user} does not exist in the directory."),
        ));
    }
    let mut claims = NaaClaims::new(aud.clone(), user);
    claims.azp = client_id.to_owned();
    claims.scp = scp.clone();
    let access_token = issuer.access_token(&claims);
    Ok(NaaTokenResponse {
        access_token,
        token_type: "Bearer".to_owned(),
        scope: scp
            .split(' ')
            .map(|name| format!("api://{aud}/{name}"))
            .collect::<Vec<_>>()
            .join(" "),
        username: claims.preferred_username,
        name: claims.name,
        tenant_id: issuer.tenant_id().to_owned(),
        oid: claims.oid,
        expires_on: claims.valid_until,
    })
}

/// Routes of the simulated NAA: `GET /msal-browser.js` and `POST`/`OPTIONS /entra/naa-token`.
pub fn router(issuer: Arc<EntraIssuer>) -> Router {
    Router::new()
        .route(MSAL_JS_PATH, get(msal_js))
        .route(NAA_TOKEN_PATH, post(naa_token).options(preflight))
        .with_state(issuer)
}

fn allow_any_origin(response: &mut Response) {
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
}

async fn msal_js() -> Response {
    let mut response = (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        MSAL_JS,
    )
        .into_response();
    allow_any_origin(&mut response);
    response
}

async fn preflight() -> Response {
    let mut response = (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, "POST, OPTIONS"),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, "Content-Type"),
            (header::ACCESS_CONTROL_MAX_AGE, "600"),
        ],
    )
        .into_response();
    allow_any_origin(&mut response);
    response
}

fn error_response(error: &NaaTokenError) -> Response {
    let now = time::OffsetDateTime::from_unix_timestamp(unix_now())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let timestamp = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let trace_id = uuid::Uuid::new_v4().to_string();
    let correlation_id = uuid::Uuid::new_v4().to_string();
    let mut response = (
        StatusCode::BAD_REQUEST,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "error": error.error,
            "error_description": format!("{}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}", error.error_description),
            "error_codes": error.error_codes,
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
        })),
    )
        .into_response();
    allow_any_origin(&mut response);
    response
}

async fn naa_token(
    State(issuer): State<Arc<EntraIssuer>>,
    request: Result<Json<NaaTokenRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match request {
        Ok(Json(request)) => request,
        Err(rejection) => {
            return error_response(&NaaTokenError::new(
                "invalid_request",
                900144,
                format!("The request body is not a valid token request: {rejection}"),
            ))
        }
    };
    let mut response = match issue_naa_token(&issuer, &request) {
        Ok(token) => ([(header::CACHE_CONTROL, "no-store")], Json(token)).into_response(),
        Err(error) => return error_response(&error),
    };
    allow_any_origin(&mut response);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::signature::Verifier as _;
    use rsa::BigUint;
    use serde_json::Value;
    use sha2::Sha256;
    use std::sync::OnceLock;
    use tower::ServiceExt as _;

    const TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
    const API: &str = "3f2b8c1d-4e5a-4b6c-9d7e-8f9a0b1c2d3e";
    const CLIENT: &str = "7a1b2c3d-0000-4000-8000-00000000c1e7";

    fn issuer() -> Arc<EntraIssuer> {
        static ISSUER: OnceLock<Arc<EntraIssuer>> = OnceLock::new();
        ISSUER
            .get_or_init(|| {
                Arc::new(EntraIssuer::generate("https://127.0.0.1:9443", TENANT).expect("issuer"))
            })
            .clone()
    }

    async fn send(request: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
        let response = router(issuer()).oneshot(request).await.expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 22)
            .await
            .expect("body");
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    fn post(body: &str) -> Request<Body> {
        Request::post(NAA_TOKEN_PATH)
            .header(header::ORIGIN, "https://addin.example.test:8443")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .expect("request")
    }

    /// Verifies `token` with the key published in the tenant's JWKS; returns its payload.
    async fn verify_with_jwks(token: &str) -> Value {
        let response = crate::entra::router(issuer())
            .oneshot(
                Request::get(format!("/{TENANT}/discovery/v2.0/keys"))
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        let jwks: Value = serde_json::from_slice(&body).expect("json");
        let jwk = &jwks["keys"][0];
        let decode = |v: &Value| {
            BigUint::from_bytes_be(
                &URL_SAFE_NO_PAD
                    .decode(v.as_str().expect("string"))
                    .expect("b64"),
            )
        };
        let key = rsa::RsaPublicKey::new(decode(&jwk["n"]), decode(&jwk["e"])).expect("key");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
        assert_eq!(header["kid"], jwk["kid"]);
        let signature =
            Signature::try_from(URL_SAFE_NO_PAD.decode(parts[2]).expect("sig").as_slice())
                .expect("signature");
        VerifyingKey::<Sha256>::new(key)
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("verifies");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json")
    }

    #[tokio::test]
    async fn token_endpoint_issues_verifiable_naa_tokens() {
        let body = json!({
            "client_id": CLIENT,
            "scopes": [format!("api://{API}/access_as_user"), "openid", "profile"],
        });
        let (status, headers, body) = send(post(&body.to_string())).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let response: NaaTokenResponse = serde_json::from_str(&body).expect("json");
        assert_eq!(response.username, DEFAULT_NAA_USER);
        assert_eq!(response.name, "Alice");
        assert_eq!(response.tenant_id, TENANT);
        assert_eq!(response.scope, format!("api://{API}/access_as_user"));
        let payload = verify_with_jwks(&response.access_token).await;
        assert_eq!(payload["aud"], API);
        assert_eq!(payload["scp"], "access_as_user");
        assert_eq!(payload["azp"], CLIENT);
        assert_eq!(payload["tid"], TENANT);
        assert_eq!(payload["iss"], issuer().issuer().as_str());
        assert_eq!(payload["ver"], "2.0");
        assert_eq!(payload["preferred_username"], DEFAULT_NAA_USER);
        assert_eq!(payload["oid"], response.oid.as_str());
        assert_eq!(payload["exp"], response.expires_on);
        assert!(response.expires_on > unix_now());

        // The oid is stable per address; several scopes of one API are space-joined.
        let mut request = NaaTokenRequest::new(
            CLIENT,
            &[
                &format!("api://{API}/access_as_user"),
                &format!("api://{API}/Rooms.Read"),
            ],
        );
        request.user = Some("bob.jones@example.com".into());
        let first = issue_naa_token(&issuer(), &request).expect("token");
        let second = issue_naa_token(&issuer(), &request).expect("token");
        assert_eq!(first.oid, second.oid);
        assert_ne!(first.oid, response.oid);
        assert_eq!(first.name, "Bob Jones");
        let payload = verify_with_jwks(&first.access_token).await;
        assert_eq!(payload["scp"], "access_as_user Rooms.Read");
        assert_eq!(payload["preferred_username"], "bob.jones@example.com");

        let default = issue_naa_token(
            &issuer(),
            &NaaTokenRequest::new(CLIENT, &[&format!("api://{API}/.default")]),
        )
        .expect("token");
        let payload = verify_with_jwks(&default.access_token).await;
        assert_eq!(payload["scp"], "access_as_user");
    }

    #[tokio::test]
    async fn token_endpoint_rejects_bad_requests() {
        let scope = format!("api://{API}/access_as_user");
        let other = "api://0b7e6f3a-1c2d-4e5f-8a9b-0c1d2e3f4a5b/access_as_user";
        for (body, expected) in [
            (
                json!({"client_id": "", "scopes": [scope]}),
                "invalid_request",
            ),
            (json!({"scopes": [scope]}), "invalid_request"),
            (
                json!({"client_id": CLIENT, "scopes": []}),
                "invalid_request",
            ),
            (
                json!({"client_id": CLIENT, "scopes": ["openid", "profile"]}),
                "invalid_scope",
            ),
            (
                json!({"client_id": CLIENT, "scopes": ["api://not-a-guid/access_as_user"]}),
                "invalid_scope",
            ),
            (
                json!({"client_id": CLIENT, "scopes": [format!("api://{API}/")]}),
                "invalid_scope",
            ),
            (
                json!({"client_id": CLIENT, "scopes": ["https://graph.microsoft.com/User.Read"]}),
                "invalid_scope",
            ),
            (
                json!({"client_id": CLIENT, "scopes": [scope, other]}),
                "invalid_request",
            ),
            (
                json!({"client_id": CLIENT, "scopes": [scope], "user": "nobody"}),
                "invalid_request",
            ),
        ] {
            let (status, headers, text) = send(post(&body.to_string())).await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
            let error: Value = serde_json::from_str(&text).expect("json");
            assert_eq!(error["error"], expected, "{body}");
            let description = error["error_description"].as_str().expect("description");
            assert!(description.starts_with("AADSTS"), "{description}");
            assert!(error["error_codes"][0].is_u64());
        }
        let (status, _, text) = send(post("not json")).await;
        assert_eq!(status, 400);
        let error: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(error["error"], "invalid_request");
    }

    #[tokio::test]
    async fn token_endpoint_answers_cors_preflight() {
        let (status, headers, _) = send(
            Request::options(NAA_TOKEN_PATH)
                .header(header::ORIGIN, "https://addin.example.test:8443")
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
                .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "content-type")
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        assert!(status.is_success());
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let methods = headers[header::ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .expect("ascii");
        assert!(methods.contains("POST"));
        let allowed = headers[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .expect("ascii")
            .to_ascii_lowercase();
        assert!(allowed.contains("content-type"));
    }

    #[tokio::test]
    async fn serves_msal_js_cross_origin() {
        let (status, headers, js) = send(
            Request::get(format!("{MSAL_JS_PATH}?naa=fail"))
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(headers[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("application/javascript"));
        assert!(js.contains("createNestablePublicClientApplication"));
        assert!(js.contains(NAA_TOKEN_PATH));
    }
}
