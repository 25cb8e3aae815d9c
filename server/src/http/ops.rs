//! Operations endpoints: liveness, readiness, metrics, and the admin-token
//! gate in front of the detailed ones (and of the admin API).
//!
//! Readiness of the management role: the database answers; every integration
//! with a mailbox synchronised within `admin.readyz_max_mailbox_sync_age_secs`
//! (one never synchronised yet is reported, not failed: the worker may not
//! have had its first cycle); and every [`ReadinessProbe`] registered for the
//! process with [`register_readiness_probe`] passes — the Infinity push
//! registers its reachability there when it pushes. A scrape of `/metrics`
//! first refreshes what is read from the database (mailbox sync age).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

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
    /// Updates the metrics read from elsewhere (the database) before a scrape.
    fn refresh_metrics(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// An extra readiness check a part of the process registers at start-up
/// (the Infinity push: "is Infinity's management API reachable?").
pub trait ReadinessProbe: Send + Sync {
    /// Its key in `/readyz/detail`.
    fn name(&self) -> &'static str;
    /// `Ok` with what it saw, or what is wrong.
    fn check(&self)
        -> Pin<Box<dyn Future<Output = Result<serde_json::Value, String>> + Send + '_>>;
}

type ProbeList = Vec<(usize, Arc<dyn ReadinessProbe>)>;

fn probes() -> &'static Mutex<ProbeList> {
    static PROBES: std::sync::OnceLock<Mutex<ProbeList>> = std::sync::OnceLock::new();
    PROBES.get_or_init(|| Mutex::new(Vec::new()))
}

/// Adds `probe` to the readiness of the app whose [`Shared`] is `shared`.
pub fn register_readiness_probe(shared: &Arc<Shared>, probe: Arc<dyn ReadinessProbe>) {
    let key = Arc::as_ptr(shared) as usize;
    if let Ok(mut list) = probes().lock() {
        list.push((key, probe));
    }
}

fn probes_of(shared: &Arc<Shared>) -> Vec<Arc<dyn ReadinessProbe>> {
    let key = Arc::as_ptr(shared) as usize;
    probes()
        .lock()
        .map(|l| {
            l.iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, p)| p.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Runs the registered probes; `Err` names the first that failed.
async fn run_probes(
    shared: &Arc<Shared>,
    checks: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<(), String> {
    let mut failed = None;
    for probe in probes_of(shared) {
        match probe.check().await {
            Ok(v) => {
                checks.insert(probe.name().into(), v);
            }
            Err(e) => {
                checks.insert(probe.name().into(), serde_json::json!({ "error": e }));
                failed.get_or_insert_with(|| format!("{}: {e}", probe.name()));
            }
        }
    }
    failed.map_or(Ok(()), Err)
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
        self.storage
            .ping()
            .await
            .map_err(|e| format!("database: {e}"))?;
        let mut checks = serde_json::Map::new();
        checks.insert("database".into(), "ok".into());
        let (mailboxes, stale) = mailbox_sync_ages(self).await?;
        checks.insert("mailboxes".into(), mailboxes);
        let probed = run_probes(&self.shared, &mut checks).await;
        if let Some(stale) = stale {
            return Err(stale);
        }
        probed?;
        Ok(serde_json::Value::Object(checks))
    }

    async fn refresh_metrics(&self) {
        if let Err(e) = mailbox_sync_ages(self).await {
            tracing::warn!(error = %e, "cannot read the mailbox sync ages for /metrics");
        }
    }
}

/// Each watched mailbox's sync age (also set as `vmr_mailbox_sync_age_seconds`),
/// and what is too old, if anything.
async fn mailbox_sync_ages(
    state: &ManagementState,
) -> Result<(serde_json::Value, Option<String>), String> {
    let shared = &state.shared;
    let syncs = state
        .storage
        .last_syncs()
        .await
        .map_err(|e| format!("database: {e}"))?;
    let now = shared.clock.now_unix_ms();
    let max = shared.config.admin.readyz_max_mailbox_sync_age_secs;
    let mut out = serde_json::Map::new();
    let mut stale = None;
    for ic in &shared.config.integrations {
        if ic.exchange.is_none() {
            continue;
        }
        let last = syncs.iter().find(|(id, _)| *id == ic.id).map(|(_, at)| *at);
        let entry = match last {
            Some(at) => {
                let age = (now - at).max(0) as f64 / 1000.0;
                crate::metrics::service().set_mailbox_sync_age(&ic.id, age);
                let too_old = max > 0 && age > max as f64;
                if too_old {
                    stale.get_or_insert_with(|| {
                        format!(
                            "mailbox of integration {} last synchronised {age:.0} s ago \
                             (admin.readyz_max_mailbox_sync_age_secs = {max})",
                            ic.id
                        )
                    });
                }
                serde_json::json!({ "last_sync_age_secs": age, "ok": !too_old })
            }
            None => {
                serde_json::json!({ "last_sync_age_secs": null, "ok": true, "note": "never synchronised yet" })
            }
        };
        out.insert(ic.id.clone(), entry);
    }
    Ok((serde_json::Value::Object(out), stale))
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
        .route("/metrics", get(metrics::<S>))
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
pub async fn metrics<S>(State(state): State<S>) -> Result<Response, ApiFailure>
where
    S: Readiness + Clone + Send + Sync + 'static,
    Arc<Shared>: FromRef<S>,
{
    state.refresh_metrics().await;
    let shared = Arc::<Shared>::from_ref(&state);
    let text = crate::metrics::render(&shared.metrics)
        .map_err(|e| ApiFailure::internal("metrics_error", e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

/// Who an admin API token belongs to (its configured label), if it is one.
pub fn admin_label(shared: &Shared, token: &str) -> Option<String> {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    let hash = Sha256::digest(token.trim().as_bytes());
    let mut found = None;
    // Every configured hash is compared (no early exit).
    for (label, want) in shared.config.admin.token_hashes() {
        let matches =
            hex::decode(&want).is_ok_and(|want| bool::from(want.as_slice().ct_eq(hash.as_slice())));
        if matches && found.is_none() {
            found = Some(label);
        }
    }
    found
}

/// The admin a request was authenticated as (a request extension set by
/// [`require_admin_token`]): the token's label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminActor(pub String);

/// Lets a request through when it carries an admin API token, with the
/// token's label as an [`AdminActor`] extension.
pub async fn require_admin_token(
    State(shared): State<Arc<Shared>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let label = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| admin_label(&shared, t));
    match label {
        Some(label) => {
            request.extensions_mut().insert(AdminActor(label));
            next.run(request).await
        }
        None => {
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
}
