//! Operations endpoints: liveness, readiness, metrics, and the admin-token
//! gate in front of the detailed ones.

use std::future::Future;
use std::sync::Arc;

use axum::extract::{FromRef, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::api_error::ApiFailure;
use crate::app::{EdgeState, ManagementState, Shared};

/// What a role checks before saying it is ready.
pub trait Readiness {
    /// The role's name in `/readyz/detail`.
    fn role(&self) -> &'static str;
    /// What was checked: `Ok` with a JSON summary, or what is wrong.
    fn check(&self) -> impl Future<Output = Result<serde_json::Value, String>> + Send;
}

impl Readiness for EdgeState {
    fn role(&self) -> &'static str {
        "edge"
    }
    async fn check(&self) -> Result<serde_json::Value, String> {
        // Nothing of its own to wait for: config, keys and pane are loaded.
        Ok(serde_json::json!({}))
    }
}

impl Readiness for ManagementState {
    fn role(&self) -> &'static str {
        if self.require_edge_secret {
            "management"
        } else {
            "all"
        }
    }
    async fn check(&self) -> Result<serde_json::Value, String> {
        self.storage.ping().await.map_err(|e| e.to_string())?;
        Ok(serde_json::json!({ "database": "ok" }))
    }
}

/// The ops routes without auth (the admin listener).
pub fn routes<S>(state: S) -> Router
where
    S: Readiness + Clone + Send + Sync + 'static,
    Arc<Shared>: FromRef<S>,
{
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<S>))
        .route("/readyz/detail", get(readyz_detail::<S>))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// `GET /healthz`.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: no detail (it is public).
pub async fn readyz<S: Readiness>(State(state): State<S>) -> Response {
    match state.check().await {
        Ok(_) => "ready".into_response(),
        Err(detail) => {
            tracing::warn!(%detail, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
        }
    }
}

/// `GET /readyz/detail` (admin).
pub async fn readyz_detail<S: Readiness>(State(state): State<S>) -> Response {
    let (status, checks) = match state.check().await {
        Ok(checks) => (StatusCode::OK, checks),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "error": e }),
        ),
    };
    (
        status,
        Json(serde_json::json!({
            "ready": status == StatusCode::OK,
            "role": state.role(),
            "checks": checks,
        })),
    )
        .into_response()
}

/// `GET /metrics` (admin).
pub async fn metrics(State(shared): State<Arc<Shared>>) -> Result<Response, ApiFailure> {
    let text = crate::metrics::render(&shared.metrics)
        .map_err(|e| ApiFailure::internal("metrics_error", e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

/// Lets a request through when it carries an admin API token.
pub async fn require_admin_token(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| Sha256::digest(t.trim().as_bytes()));
    let allowed = presented.is_some_and(|hash| {
        shared.config.admin.api_token_sha256.iter().any(|want| {
            hex::decode(want).is_ok_and(|want| bool::from(want.as_slice().ct_eq(hash.as_slice())))
        })
    });
    if allowed {
        next.run(request).await
    } else {
        let mut r = ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "admin_token_required",
            "this endpoint needs an admin API token (Authorization: Bearer …) or the admin listener",
        )
        .into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    }
}
