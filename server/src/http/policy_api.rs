//! Pexip Infinity's external policy API over HTTPS (management and `all`
//! roles, when `[policy]` is enabled):
//!
//! * `GET /policy/v1/service/configuration?local_alias=…&…` → the decision
//!   of [`crate::policy::PolicyService`]:
//!   `{"status":"success","action":"continue","result":{"service_type":"conference",…}}`,
//!   `{"status":"success","action":"reject"}`, or for an alias we never issued
//!   `{"status":"success","action":"continue"}` (Infinity's own configuration
//!   decides) or `reject`, per `policy.unknown_alias`. Infinity's other query
//!   fields are accepted and ignored.
//! * `GET /policy/v1/participant/properties` → `{"status":"success","action":"continue"}`.
//!
//! Both are refused unless the caller passes the configured checks: its
//! source address in `policy.allow_from` (else 403 `address_not_allowed`)
//! and HTTP basic auth with `policy.basic_auth_user` and its password (else
//! 401 `unauthorized` with `WWW-Authenticate: Basic`). Refusals are JSON
//! `{code, message}` like every other API error.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use vmr_core::config::{IpNetwork, PolicyConfig};
use vmr_core::secret::Secret;

use crate::api_error::ApiFailure;
use crate::policy::{Decision, PolicyService, ServiceConfiguration};

/// Path of the service configuration request.
pub const SERVICE_CONFIGURATION_PATH: &str = "/policy/v1/service/configuration";
/// Path of the participant properties request.
pub const PARTICIPANT_PROPERTIES_PATH: &str = "/policy/v1/participant/properties";

/// Who may ask: the checks of `[policy]`.
#[derive(Debug, Clone)]
pub struct PolicyGate {
    allow_from: Vec<IpNetwork>,
    basic: Option<BasicCredentials>,
}

#[derive(Debug, Clone)]
struct BasicCredentials {
    user: String,
    password: PasswordCheck,
}

#[derive(Debug, Clone)]
enum PasswordCheck {
    Plain(Secret),
    /// SHA-256 of the password (32 bytes).
    Sha256(Vec<u8>),
}

impl PolicyGate {
    /// The checks `policy` configures.
    pub fn new(policy: &PolicyConfig) -> PolicyGate {
        let password = match (
            &policy.basic_auth_password,
            policy
                .basic_auth_password_sha256
                .as_deref()
                .and_then(|h| hex::decode(h).ok()),
        ) {
            (Some(p), _) => Some(PasswordCheck::Plain(p.clone())),
            (None, Some(hash)) => Some(PasswordCheck::Sha256(hash)),
            (None, None) => None,
        };
        let basic = match (&policy.basic_auth_user, password) {
            (Some(user), Some(password)) => Some(BasicCredentials {
                user: user.clone(),
                password,
            }),
            _ => None,
        };
        PolicyGate {
            allow_from: policy.allow_from.clone(),
            basic,
        }
    }

    /// `Ok` when a request from `peer` with `headers` may ask.
    pub fn check(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Result<(), ApiFailure> {
        if !self.allow_from.is_empty() {
            let allowed = peer.is_some_and(|p| self.allow_from.iter().any(|n| n.contains(p.ip())));
            if !allowed {
                let shown =
                    peer.map_or_else(|| "an unknown address".to_owned(), |p| p.ip().to_string());
                return Err(ApiFailure::new(
                    StatusCode::FORBIDDEN,
                    "address_not_allowed",
                    format!("{shown} is not in policy.allow_from"),
                ));
            }
        }
        if let Some(basic) = &self.basic {
            if !basic.accepts(headers) {
                return Err(ApiFailure::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "the policy API needs HTTP basic auth with the configured user and password",
                ));
            }
        }
        Ok(())
    }
}

impl BasicCredentials {
    fn accepts(&self, headers: &HeaderMap) -> bool {
        let Some(encoded) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
            })
        else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return false;
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let user_ok: bool = user.ct_eq(self.user.as_bytes()).into();
        let password_ok = match &self.password {
            PasswordCheck::Plain(secret) => secret.matches(password),
            PasswordCheck::Sha256(hash) => {
                bool::from(Sha256::digest(password).as_slice().ct_eq(hash))
            }
        };
        user_ok & password_ok
    }
}

/// The routes, with their own state, ready to merge into the management router.
pub fn routes<S>(service: Arc<PolicyService>, gate: PolicyGate) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let gate = Arc::new(gate);
    Router::new()
        .route(SERVICE_CONFIGURATION_PATH, get(service_configuration))
        .route(PARTICIPANT_PROPERTIES_PATH, get(participant_properties))
        .route_layer(axum::middleware::from_fn_with_state(
            gate,
            require_policy_client,
        ))
        .with_state(service)
}

/// Refuses callers that fail the `[policy]` checks.
async fn require_policy_client(
    State(gate): State<Arc<PolicyGate>>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    match gate.check(peer, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            let unauthorized = refusal.status == StatusCode::UNAUTHORIZED;
            let mut response = refusal.into_response();
            if unauthorized {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Basic realm=\"vmr-scheduler policy\", charset=\"UTF-8\"",
                    ),
                );
            }
            response
        }
    }
}

/// The query fields used (Infinity sends many more; they are ignored).
#[derive(Debug, Deserialize)]
pub struct ServiceQuery {
    /// The dialled alias.
    pub local_alias: Option<String>,
}

/// Infinity's response envelope.
#[derive(Debug, Serialize)]
pub struct PolicyResponse {
    pub status: &'static str,
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Arc<ServiceConfiguration>>,
}

impl PolicyResponse {
    fn action(action: &'static str) -> PolicyResponse {
        PolicyResponse {
            status: "success",
            action,
            result: None,
        }
    }
}

async fn service_configuration(
    State(service): State<Arc<PolicyService>>,
    Query(query): Query<ServiceQuery>,
) -> Result<Json<PolicyResponse>, ApiFailure> {
    let started = Instant::now();
    let Some(alias) = query.local_alias.filter(|a| !a.trim().is_empty()) else {
        return Err(ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "missing_local_alias",
            "the request has no local_alias (the dialled alias)",
        ));
    };
    let decision = service.decide(&alias);
    let label = decision.label();
    let response = match decision {
        Decision::Service(result) => PolicyResponse {
            status: "success",
            action: "continue",
            result: Some(result),
        },
        Decision::OutsideWindow | Decision::UnknownReject => PolicyResponse::action("reject"),
        Decision::UnknownContinue => PolicyResponse::action("continue"),
    };
    crate::metrics::service().record_policy_lookup(label, started.elapsed());
    Ok(Json(response))
}

async fn participant_properties() -> Json<PolicyResponse> {
    Json(PolicyResponse::action("continue"))
}
