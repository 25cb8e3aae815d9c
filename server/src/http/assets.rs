//! The pane's files: `index.html` (prepared per request: the integration's
//! pane config embedded), the Trunk build (precompressed, hashed names cached
//! forever), the local Office.js copy and the static files.

use std::sync::Arc;

use axum::extract::{FromRef, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;

use super::pane_api::IntegrationQuery;
use crate::app::Shared;
use vmr_core::config::ServerConfig;

/// The asset routes, for any state that has the [`Shared`] part.
pub fn routes<S>(server: &ServerConfig) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Shared>: FromRef<S>,
{
    let dist = server.dist_dir.clone();
    let static_dir = server.static_dir.clone();
    let pane_files = Router::new()
        .fallback_service(
            ServeDir::new(&dist)
                .precompressed_br()
                .precompressed_gzip()
                .append_index_html_on_directories(false),
        )
        .layer(axum::middleware::map_response(cache_for_hashed_assets));
    Router::new()
        .route("/pane", get(pane_index))
        .route("/pane/", get(pane_index))
        .route("/pane/index.html", get(pane_index))
        .nest("/pane", pane_files)
        .nest_service(
            "/office-js",
            ServeDir::new(static_dir.join("office-js")).precompressed_gzip(),
        )
        .nest_service(
            "/static",
            Router::new()
                .fallback_service(ServeDir::new(&static_dir))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=3600"),
                )),
        )
}

/// The pane's page; with the pane config embedded when the URL names a
/// configured integration (else the pane fetches it).
async fn pane_index(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<IntegrationQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match &shared.pane_page {
        Some(page) => {
            // A query that does not parse just means nothing is embedded.
            let config = query
                .ok()
                .and_then(|Query(q)| q.integration)
                .and_then(|id| shared.integrations.get(&id).map(|i| i.pane_config()));
            page.response(config.as_ref())
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "The pane has not been built: run `cargo xtask build-pane` (or `cargo xtask demo`).",
        )
            .into_response(),
    }
}

/// Trunk names built files `<name>-<hash>.<ext>`, the hash a 64-bit value in
/// hex without leading zeros: those never change, so they may be cached
/// forever; anything else is revalidated.
async fn cache_for_hashed_assets(uri: axum::http::Uri, mut response: Response) -> Response {
    let immutable = is_hashed_asset(uri.path());
    let value = if immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    if response.status().is_success() {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(value));
    }
    response
}

/// Whether a file name carries a Trunk content hash.
pub fn is_hashed_asset(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or("");
    let stem = name.split('.').next().unwrap_or("");
    let stem = stem.strip_suffix("_bg").unwrap_or(stem);
    stem.rsplit_once('-').is_some_and(|(_, h)| {
        (10..=16).contains(&h.len()) && h.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

#[cfg(test)]
mod tests {
    use super::is_hashed_asset;

    #[test]
    fn recognises_trunk_hashes() {
        assert!(is_hashed_asset("/vmr-addin-1a2b3c4d5e6f7a8b_bg.wasm"));
        assert!(is_hashed_asset("/vmr-addin-1a2b3c4d5e6f7a8b.js"));
        assert!(is_hashed_asset("/style-0123456789abcdef.css"));
        // Trunk drops leading zeros of the hash.
        assert!(is_hashed_asset("/vmr-addin-597d402194cb226_bg.wasm"));
        assert!(!is_hashed_asset("/vmr-addin-final.js"));
        assert!(!is_hashed_asset("/index.html"));
        assert!(!is_hashed_asset("/office-js/office.js"));
    }
}
