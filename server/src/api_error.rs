//! The one error type HTTP handlers return: a status plus the JSON body
//! `{code, message}` from `vmr_protocol::ApiError`.
//!
//! Client errors (4xx) describe the caller's own request and are answered as
//! they are. Server-side errors (5xx) may carry internals — fetch error chains,
//! database errors, file paths — so their detail goes to the log only, under a
//! fresh correlation id; the caller gets the stable code, a generic message
//! naming that id, and the id in the `X-Correlation-Id` header.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use vmr_protocol::ApiError;

use crate::alias_service::AllocateError;
use vmr_auth::TokenError;
use vmr_core::quota::LimitExceeded;

/// Header carrying the correlation id of a server-side error.
pub const CORRELATION_ID_HEADER: &str = "x-correlation-id";

/// An error answer.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub code: &'static str,
    /// For 4xx: what the caller is told. For 5xx: what the log is told.
    pub message: String,
    /// Sent as `Retry-After` (whole seconds, at least 1).
    pub retry_after: Option<Duration>,
}

impl ApiFailure {
    /// An error with status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiFailure {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A 500 whose `detail` is logged, never sent.
    pub fn internal(code: &'static str, detail: impl Into<String>) -> Self {
        ApiFailure::new(StatusCode::INTERNAL_SERVER_ERROR, code, detail)
    }

    /// A 503 `unavailable`.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        ApiFailure::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let mut correlation = None;
        let message = if self.status.is_server_error() {
            let id = uuid::Uuid::new_v4().to_string();
            tracing::error!(
                correlation_id = %id,
                status = self.status.as_u16(),
                code = self.code,
                detail = %self.message,
                "request failed on the server side"
            );
            let text = format!(
                "The video meeting service could not complete the request. \
                 Quote reference {id} to your administrator."
            );
            correlation = Some(id);
            text
        } else {
            self.message
        };
        let body = ApiError {
            code: self.code.to_string(),
            message,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(id) = correlation.and_then(|id| HeaderValue::from_str(&id).ok()) {
            response.headers_mut().insert(CORRELATION_ID_HEADER, id);
        }
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

impl From<TokenError> for ApiFailure {
    fn from(e: TokenError) -> Self {
        let status = if e.is_client_error() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_GATEWAY
        };
        ApiFailure::new(status, e.code(), e.to_string())
    }
}

impl From<LimitExceeded> for ApiFailure {
    fn from(e: LimitExceeded) -> Self {
        let code = match e {
            LimitExceeded::Requester { .. } => "too_many_requests",
            LimitExceeded::Global { .. } => "service_busy",
        };
        ApiFailure {
            retry_after: Some(e.retry_after()),
            ..ApiFailure::new(StatusCode::TOO_MANY_REQUESTS, code, e.to_string())
        }
    }
}

impl From<AllocateError> for ApiFailure {
    fn from(e: AllocateError) -> Self {
        match &e {
            AllocateError::SpaceExhausted { .. } => ApiFailure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "alias_space_exhausted",
                e.to_string(),
            ),
            AllocateError::Storage(_) => ApiFailure::internal("storage_error", e.to_string()),
            AllocateError::Template(_) => ApiFailure::internal("template_error", e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn server_errors_hide_their_detail_behind_a_correlation_id() {
        let r = ApiFailure::internal("storage_error", "pq: relation at /var/lib/secret failed")
            .into_response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let id = r
            .headers()
            .get(CORRELATION_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .expect("correlation id");
        let body = axum::body::to_bytes(r.into_body(), 10_000).await.unwrap();
        let body: ApiError = serde_json::from_slice(&body).unwrap();
        assert_eq!(body.code, "storage_error");
        assert!(!body.message.contains("secret"), "{}", body.message);
        assert!(body.message.contains(&id), "{}", body.message);
    }

    #[tokio::test]
    async fn client_errors_keep_their_message_and_limits_say_when() {
        let r = ApiFailure::from(LimitExceeded::Requester {
            retry_after: Duration::from_millis(59_500),
        })
        .into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "60");
        assert!(r.headers().get(CORRELATION_ID_HEADER).is_none());
    }
}
