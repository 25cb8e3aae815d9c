//! The edge role's half of `POST /api/v1/alias`: forward to management over
//! HTTPS with the shared secret and a short timeout; when management does not
//! answer, reply "deferred" with the placeholder instructions so the pane can
//! insert placeholder + `TOK:-…#` and the meeting can still be sent.
//!
//! Before deferring, the edge checks the token itself (signature, audience,
//! lifetime), so only a token that management will later accept ends up in a
//! meeting body. When the edge cannot reach the token issuer's metadata
//! either, it still defers; management then decides.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use vmr_protocol::{AliasResponse, ALIAS_PATH};

use crate::alias_service;
use crate::api_error::ApiFailure;
use crate::app::App;
use crate::http::EDGE_SECRET_HEADER;
use crate::integration::Integration;

/// Forwards an alias request, or answers "deferred".
pub async fn forward_alias(
    app: &App,
    integration: &Integration,
    headers: &HeaderMap,
    body: Bytes,
    token: &str,
) -> Result<Response, ApiFailure> {
    let base = app.config.management.url.as_deref().unwrap_or_default();
    let url = format!("{}{ALIAS_PATH}", base.trim_end_matches('/'));
    let secret = app
        .config
        .management
        .shared_secret
        .as_deref()
        .unwrap_or_default();
    let timeout = std::time::Duration::from_millis(app.config.management.timeout_ms);
    let mut request = app
        .http
        .post(&url)
        .timeout(timeout)
        .header(header::CONTENT_TYPE, "application/json")
        .header(EDGE_SECRET_HEADER, secret)
        .body(body);
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        request = request.header(header::AUTHORIZATION, auth.clone());
    }
    let why = match request.send().await {
        Ok(resp) if !resp.status().is_server_error() => {
            let status =
                StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let bytes = resp.bytes().await.map_err(|e| {
                ApiFailure::new(
                    StatusCode::BAD_GATEWAY,
                    "management_unreadable",
                    format!("management's answer could not be read: {e}"),
                )
            })?;
            return Ok(
                (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
            );
        }
        Ok(resp) => format!("management answered {}", resp.status()),
        Err(e) if e.is_timeout() => format!("management did not answer within {timeout:?}"),
        Err(e) => format!("management is unreachable: {e}"),
    };
    tracing::warn!(%url, reason = %why, "deferring alias allocation");
    match app
        .validator
        .validate(&integration.token_settings, token)
        .await
    {
        Ok(_) => {}
        Err(e) if e.is_client_error() => return Err(e.into()),
        Err(e) => {
            tracing::warn!(error = %e, "cannot check the token at the edge; deferring anyway")
        }
    }
    let placeholder = alias_service::placeholder(integration, &app.config.server.public_host)
        .map_err(|e| {
            ApiFailure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "template_error",
                e.to_string(),
            )
        })?;
    Ok(Json(AliasResponse::Deferred {
        placeholder,
        resource: integration.resource(),
    })
    .into_response())
}
