//! HTTP routes: the pane API, the manifest, the pane's files, health.
//!
//! | route | roles | what |
//! |---|---|---|
//! | `GET /healthz` | all | liveness: `ok`, nothing else |
//! | `GET /readyz` | all | readiness: `ready` or 503 `not ready`, no detail |
//! | `GET /readyz/detail` | admin | readiness with what was checked (JSON) |
//! | `GET /metrics` | admin | Prometheus: allocations, collisions, alias space use |
//! | `GET /api/v1/pane-config?integration=…` | all | pane texts |
//! | `POST /api/v1/alias` | all | allocate (all, management) or forward (edge) |
//! | `GET /manifest.xml`, `GET /manifest/{id}.xml` | all | rendered manifest |
//! | `GET /pane/…` | all | the Trunk build, precompressed |
//! | `GET /office-js/…`, `GET /static/…` | all | local Office.js copy (+ `MicrosoftAjax.js`), icons, help |
//!
//! Request bodies are read as bytes (capped at 64 KiB) and parsed here, so
//! every malformed request gets a precise JSON error and touches nothing.
//!
//! "admin" routes are served without auth on the admin listener
//! (`admin.listen`, see [`admin_router`]) and on the main listener only with
//! `Authorization: Bearer <token>` whose SHA-256 is in
//! `admin.api_token_sha256`. Every request has a time limit and the number
//! served at once is capped (`[limits]`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tower_http::services::ServeDir;
use tower_http::set_header::SetResponseHeaderLayer;
use vmr_protocol::{AliasRequest, AliasResponse, ALIAS_PATH, MAX_REQUEST_BYTES, PANE_CONFIG_PATH};

use crate::alias_service::{self, AliasContext};
use crate::api_error::ApiFailure;
use crate::app::App;
use crate::integration::Integration;
use crate::{edge, manifest};
use vmr_core::config::Role;

/// Header carrying the edge ↔ management shared secret.
pub const EDGE_SECRET_HEADER: &str = "x-vmr-edge-secret";

/// The full router for `app`.
pub fn router(app: Arc<App>) -> Router {
    let dist = app.config.server.dist_dir.clone();
    let static_dir = app.config.server.static_dir.clone();
    let pane_files = Router::new()
        .fallback_service(
            ServeDir::new(&dist)
                .precompressed_br()
                .precompressed_gzip()
                .append_index_html_on_directories(false),
        )
        .layer(axum::middleware::map_response(cache_for_hashed_assets));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(PANE_CONFIG_PATH, get(pane_config))
        .route(ALIAS_PATH, post(alias))
        .route("/manifest.xml", get(default_manifest))
        .route("/manifest/{file}", get(manifest_by_id))
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
        .merge(
            Router::new()
                .route("/metrics", get(metrics))
                .route("/readyz/detail", get(readyz_detail))
                .route_layer(axum::middleware::from_fn_with_state(
                    app.clone(),
                    require_admin_token,
                )),
        )
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(limits_layer(&app))
        .with_state(app)
}

/// The admin listener's router (`admin.listen`): ops endpoints without auth.
pub fn admin_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/readyz/detail", get(readyz_detail))
        .route("/metrics", get(metrics))
        .layer(limits_layer(&app))
        .with_state(app)
}

/// Time limit per request and a cap on requests served at once.
fn limits_layer(
    app: &App,
) -> tower::ServiceBuilder<
    tower::layer::util::Stack<
        tower::limit::ConcurrencyLimitLayer,
        tower::layer::util::Stack<tower_http::timeout::TimeoutLayer, tower::layer::util::Identity>,
    >,
> {
    tower::ServiceBuilder::new()
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            std::time::Duration::from_millis(app.config.limits.request_timeout_ms),
        ))
        .layer(tower::limit::ConcurrencyLimitLayer::new(
            app.config.limits.max_concurrent_requests,
        ))
}

/// Lets a request through when it carries an admin API token.
async fn require_admin_token(
    State(app): State<Arc<App>>,
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
        app.config.admin.api_token_sha256.iter().any(|want| {
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

async fn healthz() -> &'static str {
    "ok"
}

/// Whether this process can serve: the database answers (management, all).
async fn readiness(app: &App) -> Result<(), String> {
    match &app.storage {
        Some(storage) => storage.ping().await.map_err(|e| e.to_string()),
        None => Ok(()),
    }
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    match readiness(&app).await {
        Ok(()) => "ready".into_response(),
        Err(detail) => {
            tracing::warn!(%detail, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
        }
    }
}

async fn readyz_detail(State(app): State<Arc<App>>) -> Response {
    let role = match app.config.role {
        Role::All => "all",
        Role::Edge => "edge",
        Role::Management => "management",
    };
    let (status, database) = match (&app.storage, readiness(&app).await) {
        (None, _) => (StatusCode::OK, serde_json::Value::Null),
        (Some(_), Ok(())) => (StatusCode::OK, "ok".into()),
        (Some(_), Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, e.into()),
    };
    let ready = status == StatusCode::OK;
    (
        status,
        Json(serde_json::json!({ "ready": ready, "role": role, "database": database })),
    )
        .into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Result<Response, ApiFailure> {
    let text = crate::metrics::render(&app.metrics)
        .map_err(|e| ApiFailure::internal("metrics_error", e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

#[derive(Deserialize)]
struct IntegrationQuery {
    integration: Option<String>,
}

fn find_integration<'a>(
    app: &'a App,
    id: Option<&str>,
) -> Result<&'a Arc<Integration>, ApiFailure> {
    let found = match id {
        Some(id) => app.integrations.get(id),
        None => app.integrations.values().next(),
    };
    found.ok_or_else(|| {
        ApiFailure::new(
            StatusCode::NOT_FOUND,
            "unknown_integration",
            format!(
                "no integration {:?} is configured here; check the add-in's URL",
                id.unwrap_or("")
            ),
        )
    })
}

async fn pane_config(
    State(app): State<Arc<App>>,
    Query(q): Query<IntegrationQuery>,
) -> Result<Response, ApiFailure> {
    let integration = find_integration(&app, q.integration.as_deref())?;
    let mut response = Json(integration.pane_config()).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
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

async fn alias(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiFailure> {
    let body = body.map_err(|e| {
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
    })?;
    if app.config.role == Role::Management {
        check_edge_secret(&app, &headers)?;
    }
    let (request, token) = parse_alias_request(&headers, &body)?;
    let integration = find_integration(&app, Some(&request.integration))?.clone();
    if app.config.role == Role::Edge {
        return edge::forward_alias(&app, &integration, &request, &headers, body, &token).await;
    }
    let identity = app
        .validator
        .validate(&integration.token_settings, &token)
        .await?;
    app.limits.check(&identity.user_id)?;
    let storage = app
        .storage
        .as_ref()
        .ok_or_else(|| ApiFailure::internal("no_storage", "this process has no database"))?;
    let ctx = AliasContext {
        identity: &identity,
        subject: &request.subject,
    };
    let response: AliasResponse = alias_service::allocate(
        storage,
        &integration,
        &ctx,
        &app.config.server.public_host,
        &app.stats,
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

fn check_edge_secret(app: &App, headers: &HeaderMap) -> Result<(), ApiFailure> {
    let given = headers
        .get(EDGE_SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let same = app
        .config
        .management
        .shared_secret
        .as_ref()
        .is_some_and(|s| s.matches(given));
    if same {
        Ok(())
    } else {
        Err(ApiFailure::new(
            StatusCode::UNAUTHORIZED,
            "edge_secret_invalid",
            "management only answers edges that present the shared secret",
        ))
    }
}

async fn default_manifest(State(app): State<Arc<App>>) -> Result<Response, ApiFailure> {
    let integration = find_integration(&app, None)?;
    manifest_response(&app, integration)
}

async fn manifest_by_id(
    State(app): State<Arc<App>>,
    Path(file): Path<String>,
) -> Result<Response, ApiFailure> {
    let id = file.strip_suffix(".xml").unwrap_or(&file);
    let integration = find_integration(&app, Some(id))?;
    manifest_response(&app, integration)
}

fn manifest_response(app: &App, integration: &Integration) -> Result<Response, ApiFailure> {
    let xml = manifest::render(&app.config.server, &integration.config)
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

/// The pane's page; with the pane config embedded when the URL names a
/// configured integration (else the pane fetches it).
async fn pane_index(
    State(app): State<Arc<App>>,
    query: Result<Query<IntegrationQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match &app.pane_index {
        Some(page) => {
            // A query that does not parse just means nothing is embedded.
            let config = query
                .ok()
                .and_then(|Query(q)| q.integration)
                .and_then(|id| app.integrations.get(&id).map(|i| i.pane_config()));
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
