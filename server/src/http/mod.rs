//! HTTP: the routers of each role, built once at start-up.
//!
//! | route | roles | what | module |
//! |---|---|---|---|
//! | `GET /healthz` | all | liveness: `ok`, nothing else | [`ops`] |
//! | `GET /readyz` | all | readiness: `ready` or 503 `not ready`, no detail | [`ops`] |
//! | `GET /readyz/detail` | admin | readiness with what was checked (JSON) | [`ops`] |
//! | `GET /metrics` | admin | Prometheus: allocations, collisions, alias space use | [`ops`] |
//! | `GET /api/v1/pane-config?integration=…` | all | pane texts | [`pane_api`] |
//! | `POST /api/v1/alias` | all | allocate (management, all) or forward (edge) | [`pane_api`] |
//! | `GET /manifest.xml`, `GET /manifest/{id}.xml` | all | rendered manifest | [`manifest`] |
//! | `GET /policy/v1/service/configuration`, `…/participant/properties` | management, all; `[policy]` basic auth / allow_from | Infinity's external policy | [`policy_api`] |
//! | `/api/admin/v1/…` | management, all; admin token | admin REST API | [`crate::admin_api`] |
//! | `/admin/…` | management, all; admin session | admin page | [`crate::admin_page`] |
//! | `GET /pane/…` | all | the Trunk build, precompressed | [`assets`] |
//! | `GET /office-js/…`, `GET /static/…` | all | local Office.js copy (+ `MicrosoftAjax.js`), icons, help | [`assets`] |
//!
//! [`router`] picks the role's router: the edge's state has no database, the
//! management state has one, so no handler asks at request time which role
//! it runs in. Routes every role serves are generic over the state and read
//! the [`Shared`] part through axum's `FromRef`.
//!
//! "admin" routes are served without auth on the admin listener
//! (`admin.listen`, see [`admin_router`]) and on the main listener only with
//! `Authorization: Bearer <token>` whose SHA-256 is in
//! `admin.api_token_sha256`. Every request has a time limit and the number
//! served at once is capped (`[limits]`).

pub mod assets;
pub mod manifest;
pub mod ops;
pub mod pane_api;
pub mod policy_api;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use vmr_protocol::{ALIAS_PATH, MAX_REQUEST_BYTES, PANE_CONFIG_PATH};

use crate::api_error::ApiFailure;
use crate::app::{App, EdgeState, ManagementState, Shared};
use crate::integration::Integration;

/// Header carrying the edge ↔ management shared secret.
pub const EDGE_SECRET_HEADER: &str = "x-vmr-edge-secret";

impl FromRef<EdgeState> for Arc<Shared> {
    fn from_ref(state: &EdgeState) -> Arc<Shared> {
        state.shared.clone()
    }
}

impl FromRef<ManagementState> for Arc<Shared> {
    fn from_ref(state: &ManagementState) -> Arc<Shared> {
        state.shared.clone()
    }
}

/// The main listener's router for `app`'s role.
pub fn router(app: App) -> Router {
    match app {
        App::Edge(state) => {
            let alias = Router::new()
                .route(ALIAS_PATH, post(pane_api::forward_alias))
                .route_layer(axum::middleware::from_fn(
                    crate::metrics::count_alias_requests,
                ));
            finish(alias, state)
        }
        App::Management(state) => {
            let mut alias = Router::new().route(ALIAS_PATH, post(pane_api::allocate_alias));
            if state.require_edge_secret {
                alias = alias.route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    pane_api::require_edge_secret,
                ));
            }
            alias = alias.route_layer(axum::middleware::from_fn(
                crate::metrics::count_alias_requests,
            ));
            // The admin API (`/api/admin/v1/`, admin token) and page (`/admin/`, session).
            alias = alias.merge(crate::admin_api::routes(&state));
            match crate::admin_page::routes(&state) {
                Ok(page) => alias = alias.merge(page),
                Err(e) => {
                    tracing::error!(error = %e, "the admin page could not be set up (templates or its single sign-on client); /admin/ is not served")
                }
            }
            // Infinity's external policy (`[policy]`: basic auth and/or allow_from).
            if let Some(policy) = &state.policy {
                let gate = policy_api::PolicyGate::new(&state.shared.config.policy);
                alias = alias.merge(policy_api::routes(policy.clone(), gate));
            }
            finish(alias, state)
        }
    }
}

/// Adds the routes every role serves, the layers, and the state.
fn finish<S>(role_routes: Router<S>, state: S) -> Router
where
    S: ops::Readiness + Clone + Send + Sync + 'static,
    Arc<Shared>: FromRef<S>,
{
    let shared = Arc::<Shared>::from_ref(&state);
    role_routes
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz::<S>))
        .route(PANE_CONFIG_PATH, get(pane_api::pane_config))
        .route("/manifest.xml", get(manifest::default_manifest))
        .route("/manifest/{file}", get(manifest::manifest_by_id))
        .merge(assets::routes(&shared.config.server))
        .merge(
            Router::new()
                .route("/metrics", get(ops::metrics::<S>))
                .route("/readyz/detail", get(ops::readyz_detail::<S>))
                .route_layer(axum::middleware::from_fn_with_state(
                    shared.clone(),
                    ops::require_admin_token,
                )),
        )
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(limits_layer(&shared))
        .with_state(state)
}

/// The admin listener's router (`admin.listen`): ops endpoints without auth.
pub fn admin_router(app: &App) -> Router {
    match app {
        App::Edge(state) => ops::routes(state.clone()),
        App::Management(state) => ops::routes(state.clone()),
    }
}

/// Time limit per request and a cap on requests served at once.
fn limits_layer(
    shared: &Shared,
) -> tower::ServiceBuilder<
    tower::layer::util::Stack<
        tower::limit::ConcurrencyLimitLayer,
        tower::layer::util::Stack<tower_http::timeout::TimeoutLayer, tower::layer::util::Identity>,
    >,
> {
    tower::ServiceBuilder::new()
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            std::time::Duration::from_millis(shared.config.limits.request_timeout_ms),
        ))
        .layer(tower::limit::ConcurrencyLimitLayer::new(
            shared.config.limits.max_concurrent_requests,
        ))
}

/// The integration `id` names (the first one when `id` is `None`).
pub fn find_integration<'a>(
    shared: &'a Shared,
    id: Option<&str>,
) -> Result<&'a Arc<Integration>, ApiFailure> {
    let found = match id {
        Some(id) => shared.integrations.get(id),
        None => shared.integrations.values().next(),
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
