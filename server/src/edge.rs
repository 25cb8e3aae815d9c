//! The edge role's half of `POST /api/v1/alias`: forward to management over
//! HTTPS with the shared secret and a short timeout; when management cannot be
//! reached, reply "deferred" with the placeholder instructions and a deferral
//! statement (TOK) the edge signs itself, so the meeting can still be sent.
//!
//! What counts as "cannot be reached": no connection, no answer within
//! `management.timeout_ms`, or a 502/504 (a proxy in between says so), or a
//! 503 that is not management's own JSON error. Everything management itself
//! answers — an allocation, `429` (limits), `503 alias_space_exhausted`, a
//! `500` — is passed through unchanged: deferring would only postpone the
//! same refusal into a declined meeting.
//!
//! Before deferring, the edge checks the organizer's token itself (signature,
//! audience, lifetime) and applies its own allocation limits; the TOK names
//! the verified identity (see [`crate::deferral`]). When the edge cannot check
//! the token (its issuer's metadata is unreachable too), nothing is signed and
//! the pane is told the service is unavailable.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use vmr_protocol::{AliasRequest, AliasResponse, ApiError, ALIAS_PATH};

use crate::alias_service;
use crate::api_error::ApiFailure;
use crate::app::EdgeState;
use crate::http::EDGE_SECRET_HEADER;
use crate::integration::Integration;

/// Forwards an alias request, or answers "deferred".
pub async fn forward_alias(
    state: &EdgeState,
    integration: &Integration,
    request: &AliasRequest,
    headers: &HeaderMap,
    body: Bytes,
    token: &str,
) -> Result<Response, ApiFailure> {
    let base = state
        .shared
        .config
        .management
        .url
        .as_deref()
        .unwrap_or_default();
    let url = format!("{}{ALIAS_PATH}", base.trim_end_matches('/'));
    let secret = state
        .shared
        .config
        .management
        .shared_secret
        .as_ref()
        .map(|s| s.expose())
        .unwrap_or_default();
    let timeout = std::time::Duration::from_millis(state.shared.config.management.timeout_ms);
    let mut forward = state
        .http
        .post(&url)
        .timeout(timeout)
        .header(header::CONTENT_TYPE, "application/json")
        .header(EDGE_SECRET_HEADER, secret)
        .body(body);
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        forward = forward.header(header::AUTHORIZATION, auth.clone());
    }
    let why = match forward.send().await {
        Ok(resp) => {
            let status =
                StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let retry_after = resp.headers().get(header::RETRY_AFTER).cloned();
            match resp.bytes().await {
                Ok(bytes) if management_answered(status, &bytes) => {
                    let mut answer = (status, [(header::CONTENT_TYPE, "application/json")], bytes)
                        .into_response();
                    if let Some(v) = retry_after {
                        answer.headers_mut().insert(header::RETRY_AFTER, v);
                    }
                    return Ok(answer);
                }
                Ok(_) => format!("management answered {status} without its own error body"),
                Err(e) => format!("management's answer could not be read: {e}"),
            }
        }
        Err(e) if e.is_timeout() => format!("management did not answer within {timeout:?}"),
        Err(e) => format!("management is unreachable: {e}"),
    };
    tracing::warn!(%url, reason = %why, "management unreachable; deferring alias allocation");
    defer(state, integration, request, token).await
}

/// Whether `status` + `body` is management's own answer (to pass through)
/// rather than a sign that management could not be reached.
fn management_answered(status: StatusCode, body: &[u8]) -> bool {
    match status {
        StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => false,
        StatusCode::SERVICE_UNAVAILABLE => serde_json::from_slice::<ApiError>(body).is_ok(),
        _ => true,
    }
}

/// Checks the token here, applies the limits, and answers placeholder + TOK.
async fn defer(
    state: &EdgeState,
    integration: &Integration,
    request: &AliasRequest,
    token: &str,
) -> Result<Response, ApiFailure> {
    let identity = match state
        .shared
        .validator
        .validate(&integration.token_settings, token)
        .await
    {
        Ok(identity) => identity,
        Err(e) if e.is_client_error() => return Err(e.into()),
        Err(e) => {
            tracing::error!(error = %e, "management is unreachable and the token cannot be checked here either");
            return Err(ApiFailure::unavailable(
                "the video meeting service cannot be reached right now",
            ));
        }
    };
    state.shared.limits.check(&identity.user_id)?;
    let keys = &state.deferral_keys;
    let statement = keys.statement(
        &integration.config.id,
        &identity,
        request.organizer.as_ref().map(|p| p.email.as_str()),
        state.shared.clock.now_unix(),
    );
    let placeholder =
        alias_service::placeholder(integration, &state.shared.config.server.public_host)
            .map_err(|e| ApiFailure::internal("template_error", e.to_string()))?;
    tracing::info!(
        integration = %integration.config.id,
        requester = %identity.user_id,
        nonce = %statement.nonce,
        expires = statement.exp,
        "deferral statement signed"
    );
    Ok(Json(AliasResponse::Deferred {
        placeholder,
        tok: keys.mint(&statement),
        resource: integration.resource(),
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreachable_management_defers() {
        let ours = br#"{"code":"alias_space_exhausted","message":"full"}"#;
        assert!(management_answered(StatusCode::SERVICE_UNAVAILABLE, ours));
        assert!(!management_answered(
            StatusCode::SERVICE_UNAVAILABLE,
            b"<html>proxy</html>"
        ));
        assert!(management_answered(StatusCode::TOO_MANY_REQUESTS, ours));
        assert!(management_answered(
            StatusCode::INTERNAL_SERVER_ERROR,
            b"{}"
        ));
        assert!(!management_answered(StatusCode::BAD_GATEWAY, ours));
        assert!(!management_answered(StatusCode::GATEWAY_TIMEOUT, b""));
        assert!(management_answered(StatusCode::OK, b"{}"));
    }
}
