//! The pane API: `GET /api/v1/pane-config` and `POST /api/v1/alias` —
//! allocated here on management, forwarded by the edge.
//!
//! Request bodies are read as bytes (capped at 64 KiB) and parsed here, so
//! every malformed request gets a precise JSON error and touches nothing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use vmr_protocol::{AliasRequest, AliasResponse, MAX_REQUEST_BYTES};

use super::{find_integration, EDGE_SECRET_HEADER};
use crate::alias_service::{self, AliasContext, Requested};
use crate::api_error::ApiFailure;
use crate::app::{EdgeState, ManagementState, Shared};
use crate::edge;

/// `?integration=…`
#[derive(Deserialize)]
pub struct IntegrationQuery {
    /// The integration id.
    pub integration: Option<String>,
}

/// `GET /api/v1/pane-config`.
pub async fn pane_config(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<IntegrationQuery>,
) -> Result<Response, ApiFailure> {
    let integration = find_integration(&shared, q.integration.as_deref())?;
    let mut response = Json(integration.pane_config()).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// The body of a request, or why it could not be read (too large, cut off).
fn read_body(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Bytes, ApiFailure> {
    body.map_err(|e| {
        let too_large = e.status() == StatusCode::PAYLOAD_TOO_LARGE;
        ApiFailure::new(
            e.status(),
            if too_large {
                "request_too_large"
            } else {
                "bad_request"
            },
            if too_large {
                format!("the request body is larger than {MAX_REQUEST_BYTES} bytes")
            } else {
                e.body_text()
            },
        )
    })
}

/// Parses the body of `POST /api/v1/alias`, and pulls the bearer token.
pub fn parse_alias_request(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(AliasRequest, String), ApiFailure> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().map(str::trim) == Some("application/json"));
    if !is_json {
        return Err(ApiFailure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the request body must be JSON (Content-Type: application/json)",
        ));
    }
    let request: AliasRequest = serde_json::from_slice(body).map_err(|e| {
        ApiFailure::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the request body is not a valid alias request: {e}"),
        )
    })?;
    request
        .validate()
        .map_err(|e| ApiFailure::new(StatusCode::BAD_REQUEST, e.code(), e.to_string()))?;
    let token = match headers.get(header::AUTHORIZATION) {
        None => {
            return Err(ApiFailure::new(
                StatusCode::UNAUTHORIZED,
                "token_missing",
                "no Authorization header: the pane must send `Authorization: Bearer <token>`",
            ))
        }
        Some(v) => {
            let v = v.to_str().map_err(|_| {
                ApiFailure::new(
                    StatusCode::UNAUTHORIZED,
                    "token_malformed",
                    "the Authorization header is not ASCII",
                )
            })?;
            match v.strip_prefix("Bearer ") {
                Some(t) if !t.trim().is_empty() => t.trim().to_string(),
                _ => {
                    return Err(ApiFailure::new(
                        StatusCode::UNAUTHORIZED,
                        "token_missing",
                        "the Authorization header must be `Bearer <token>`",
                    ))
                }
            }
        }
    };
    Ok((request, token))
}

/// `POST /api/v1/alias` on management (and `all`): validate, limit, allocate.
pub async fn allocate_alias(
    State(state): State<ManagementState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiFailure> {
    let body = read_body(body)?;
    let shared = &state.shared;
    let (request, token) = parse_alias_request(&headers, &body)?;
    let integration = find_integration(shared, Some(&request.integration))?;
    let identity = shared
        .validator
        .validate(&integration.token_settings, &token)
        .await?;
    shared.limits.check(&identity.user_id)?;
    let ctx = AliasContext {
        identity: &identity,
        subject: &request.subject,
        now_unix: shared.clock.now_unix(),
        via: Requested::Pane,
    };
    let response: AliasResponse = alias_service::allocate(
        &state.storage,
        integration,
        &ctx,
        &shared.config.server.public_host,
        &state.stats,
    )
    .await?;
    tracing::info!(
        integration = %integration.config.id,
        requester = %identity.user_id,
        organizer = ?request.organizer.as_ref().map(|p| &p.email),
        "alias allocated"
    );
    Ok(Json(response).into_response())
}

/// `POST /api/v1/alias` on an edge: forward to management, or defer.
pub async fn forward_alias(
    State(state): State<EdgeState>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiFailure> {
    let body = read_body(body)?;
    let (request, token) = parse_alias_request(&headers, &body)?;
    let integration = find_integration(&state.shared, Some(&request.integration))?.clone();
    edge::forward_alias(&state, &integration, &request, &headers, body, &token).await
}

/// Role `management`: only edges presenting the shared secret get through.
pub async fn require_edge_secret(
    State(state): State<ManagementState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let given = request
        .headers()
        .get(EDGE_SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let same = state
        .shared
        .config
        .management
        .shared_secret
        .as_ref()
        .is_some_and(|s| s.matches(given));
    if same {
        next.run(request).await
    } else {
        ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "edge_secret_invalid",
            "management only answers edges that present the shared secret",
        )
        .into_response()
    }
}
