//! The add-in manifest: `GET /manifest.xml` (the first integration) and
//! `GET /manifest/{id}.xml`, rendered from the config by [`crate::manifest`].

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::find_integration;
use crate::api_error::ApiFailure;
use crate::app::Shared;
use crate::integration::Integration;

/// `GET /manifest.xml`.
pub async fn default_manifest(State(shared): State<Arc<Shared>>) -> Result<Response, ApiFailure> {
    let integration = find_integration(&shared, None)?;
    manifest_response(&shared, integration)
}

/// `GET /manifest/{id}.xml`.
pub async fn manifest_by_id(
    State(shared): State<Arc<Shared>>,
    Path(file): Path<String>,
) -> Result<Response, ApiFailure> {
    let id = file.strip_suffix(".xml").unwrap_or(&file);
    let integration = find_integration(&shared, Some(id))?;
    manifest_response(&shared, integration)
}

fn manifest_response(shared: &Shared, integration: &Integration) -> Result<Response, ApiFailure> {
    let xml = crate::manifest::render(&shared.config.server, &integration.config)
        .map_err(|e| ApiFailure::internal("manifest_error", e.to_string()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/xml; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        xml,
    )
        .into_response())
}
