//! The one error type HTTP handlers return: a status plus the JSON body
//! `{code, message}` from `vmr_protocol::ApiError`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use vmr_protocol::ApiError;

use crate::alias_service::AllocateError;
use crate::token::TokenError;

/// An error answer.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiFailure {
    /// An error with status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiFailure {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let body = ApiError {
            code: self.code.to_string(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
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

impl From<AllocateError> for ApiFailure {
    fn from(e: AllocateError) -> Self {
        match &e {
            AllocateError::SpaceExhausted { .. } => ApiFailure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "alias_space_exhausted",
                e.to_string(),
            ),
            AllocateError::Storage(_) => {
                tracing::error!(error = %e, "alias allocation failed");
                ApiFailure::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage_error",
                    e.to_string(),
                )
            }
            AllocateError::Template(_) => {
                tracing::error!(error = %e, "alias allocation failed");
                ApiFailure::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "template_error",
                    e.to_string(),
                )
            }
        }
    }
}
