//! The admin REST API under `/api/admin/v1/` (management role and `all`), the
//! equivalent of Pexip's `scheduled_conference`, `scheduled_alias`,
//! `recurring_conference`, `scheduling_operation` and `exchange_scheduler`
//! status resources, plus the audit log.
//!
//! | route | what |
//! |---|---|
//! | `GET conferences` | scheduled conferences (one per window): `integration`, `organizer`, `from`, `to`, `q`, `limit`, `offset` |
//! | `GET conferences/{id}` | one VMR: generated aliases, extra aliases, meeting, windows |
//! | `PATCH conferences/{id}` | refused: 409 for `alias`/`numeric_alias` (generated), 422 otherwise |
//! | `POST conferences/{id}/aliases` | `{"alias", "description"}`: adds an extra alias (201; 409 taken or generated; 422 invalid) |
//! | `PUT`, `DELETE conferences/{id}/aliases/{alias}` | 409 for a generated alias; `DELETE` removes an extra one (204) |
//! | `GET aliases` | `scheduled_alias`: `integration`, `state`, `q` |
//! | `GET recurring_conferences` | series: `integration`, `q` |
//! | `GET operations` | processing log: `integration`, `success`, `from`, `to`, `q` |
//! | `GET integrations`, `GET integrations/{id}` | last mailbox sync, last Exchange error, alias-space use, manifest URL |
//! | `GET audit` | admin writes and, as `schedulingservice`, the service's processing log |
//!
//! Lists answer `{"items": […], "total", "limit", "offset"}`; times are
//! RFC 3339 in UTC (filters take RFC 3339 or Unix milliseconds). Every route
//! needs an admin API token (`Authorization: Bearer …`, see
//! [`crate::http::ops::require_admin_token`]); every write is audited under the
//! token's label in the same transaction as the write.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use vmr_store::admin_queries::{
    AdminWriteError, AliasFilter, ConferenceDetail, ConferenceFilter, OperationFilter, Page,
    Paging, SimpleFilter,
};
use vmr_store::StorageError;

use crate::api_error::ApiFailure;
use crate::app::{ManagementState, Shared};
use crate::http::ops::{self, AdminActor};

/// Where the API lives.
pub const PREFIX: &str = "/api/admin/v1";

/// The API's routes, behind the admin-token gate.
pub fn routes(state: &ManagementState) -> Router<ManagementState> {
    Router::new()
        .route(&format!("{PREFIX}/conferences"), get(list_conferences))
        .route(
            &format!("{PREFIX}/conferences/{{id}}"),
            get(get_conference).patch(patch_conference),
        )
        .route(
            &format!("{PREFIX}/conferences/{{id}}/aliases"),
            post(add_alias),
        )
        .route(
            &format!("{PREFIX}/conferences/{{id}}/aliases/{{alias}}"),
            put(put_alias).delete(delete_alias),
        )
        .route(&format!("{PREFIX}/aliases"), get(list_aliases))
        .route(
            &format!("{PREFIX}/recurring_conferences"),
            get(list_recurring),
        )
        .route(&format!("{PREFIX}/operations"), get(list_operations))
        .route(&format!("{PREFIX}/integrations"), get(list_integrations))
        .route(
            &format!("{PREFIX}/integrations/{{id}}"),
            get(get_integration),
        )
        .route(&format!("{PREFIX}/audit"), get(list_audit))
        .route_layer(axum::middleware::from_fn_with_state(
            state.shared.clone(),
            ops::require_admin_token,
        ))
}

/// Query parameters of every list (each list reads the ones it knows). All
/// strings, so a bad value gets an error naming the parameter.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListQuery {
    pub integration: Option<String>,
    pub organizer: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub q: Option<String>,
    pub state: Option<String>,
    pub success: Option<String>,
    pub limit: Option<String>,
    pub offset: Option<String>,
}

fn bad_parameter(name: &str, why: impl std::fmt::Display) -> ApiFailure {
    ApiFailure::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "bad_parameter",
        format!("query parameter {name}: {why}"),
    )
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A time filter: Unix milliseconds, RFC 3339, or a date (`YYYY-MM-DD`, midnight UTC).
pub fn parse_time(name: &str, value: &Option<String>) -> Result<Option<i64>, ApiFailure> {
    let Some(v) = non_empty(value) else {
        return Ok(None);
    };
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(Some(ms));
    }
    // A date alone (what `<input type="date">` sends) is midnight UTC.
    if let Ok(day) = chrono::NaiveDate::parse_from_str(&v, "%Y-%m-%d") {
        if let Some(t) = day.and_hms_opt(0, 0, 0) {
            return Ok(Some(t.and_utc().timestamp_millis()));
        }
    }
    chrono::DateTime::parse_from_rfc3339(&v)
        .map(|t| Some(t.timestamp_millis()))
        .map_err(|e| {
            bad_parameter(
                name,
                format!("{v:?} is neither Unix milliseconds nor RFC 3339 ({e})"),
            )
        })
}

impl ListQuery {
    /// `limit` (default 50, 1–500) and `offset` (default 0).
    pub fn paging(&self) -> Result<Paging, ApiFailure> {
        let number =
            |name: &str, v: &Option<String>, default: i64, min: i64, max: i64| match non_empty(v) {
                None => Ok(default),
                Some(s) => match s.parse::<i64>() {
                    Ok(n) if (min..=max).contains(&n) => Ok(n),
                    _ => Err(bad_parameter(
                        name,
                        format!("{s:?} is not a whole number from {min} to {max}"),
                    )),
                },
            };
        Ok(Paging {
            limit: number(
                "limit",
                &self.limit,
                50,
                1,
                vmr_store::admin_queries::MAX_PAGE,
            )?,
            offset: number("offset", &self.offset, 0, 0, i64::MAX)?,
        })
    }

    /// The integration filter, checked against the configuration.
    pub fn integration(&self, shared: &Shared) -> Result<Option<String>, ApiFailure> {
        match non_empty(&self.integration) {
            Some(id) if !shared.integrations.contains_key(&id) => Err(bad_parameter(
                "integration",
                format!("no integration {id:?} is configured"),
            )),
            other => Ok(other),
        }
    }

    pub fn conference_filter(&self, shared: &Shared) -> Result<ConferenceFilter, ApiFailure> {
        Ok(ConferenceFilter {
            integration: self.integration(shared)?,
            organizer: non_empty(&self.organizer),
            from: parse_time("from", &self.from)?,
            to: parse_time("to", &self.to)?,
            search: non_empty(&self.q),
        })
    }

    pub fn alias_filter(&self, shared: &Shared) -> Result<AliasFilter, ApiFailure> {
        let state = non_empty(&self.state);
        if let Some(s) = &state {
            if !matches!(s.as_str(), "allocated" | "bound" | "deleted") {
                return Err(bad_parameter(
                    "state",
                    format!("{s:?} is not one of allocated, bound, deleted"),
                ));
            }
        }
        Ok(AliasFilter {
            integration: self.integration(shared)?,
            state,
            search: non_empty(&self.q),
        })
    }

    pub fn simple_filter(&self, shared: &Shared) -> Result<SimpleFilter, ApiFailure> {
        Ok(SimpleFilter {
            integration: self.integration(shared)?,
            search: non_empty(&self.q),
        })
    }

    pub fn operation_filter(&self, shared: &Shared) -> Result<OperationFilter, ApiFailure> {
        let success = match non_empty(&self.success).as_deref() {
            None => None,
            Some("true") | Some("1") => Some(true),
            Some("false") | Some("0") => Some(false),
            Some(other) => {
                return Err(bad_parameter(
                    "success",
                    format!("{other:?} is not true or false"),
                ))
            }
        };
        Ok(OperationFilter {
            integration: self.integration(shared)?,
            success,
            from: parse_time("from", &self.from)?,
            to: parse_time("to", &self.to)?,
            search: non_empty(&self.q),
        })
    }
}

/// RFC 3339 (UTC, seconds) of Unix milliseconds.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

fn opt_time(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| Value::String(rfc3339(ms)))
}

fn storage_failure(e: StorageError) -> ApiFailure {
    ApiFailure::internal("storage_error", e.to_string())
}

/// The answer to a refused admin write.
pub fn write_failure(e: AdminWriteError) -> ApiFailure {
    let message = e.to_string();
    match e {
        AdminWriteError::NoConference(_) | AdminWriteError::NoExtraAlias { .. } => {
            ApiFailure::new(StatusCode::NOT_FOUND, "not_found", message)
        }
        AdminWriteError::GeneratedAlias(_) => {
            ApiFailure::new(StatusCode::CONFLICT, "generated_alias_immutable", message)
        }
        AdminWriteError::Taken { .. } => {
            ApiFailure::new(StatusCode::CONFLICT, "alias_taken", message)
        }
        AdminWriteError::ConferenceDeleted(_) => {
            ApiFailure::new(StatusCode::CONFLICT, "conference_deleted", message)
        }
        AdminWriteError::Invalid(_) => {
            ApiFailure::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_alias", message)
        }
        AdminWriteError::Storage(e) => storage_failure(e),
    }
}

fn page_json<T>(page: Page<T>, item: impl Fn(&T) -> Value) -> Json<Value> {
    Json(json!({
        "items": page.items.iter().map(item).collect::<Vec<_>>(),
        "total": page.total,
        "limit": page.limit,
        "offset": page.offset,
    }))
}

async fn list_conferences(
    State(state): State<ManagementState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiFailure> {
    let filter = q.conference_filter(&state.shared)?;
    let page = state
        .storage
        .admin_scheduled_conferences(&filter, q.paging()?)
        .await
        .map_err(storage_failure)?;
    Ok(page_json(page, |r| {
        json!({
            "id": r.id,
            "conference_id": r.conference_id,
            "integration": r.integration,
            "name": r.name,
            "aliases": std::iter::once(&r.alias).chain(std::iter::once(&r.numeric_alias)).chain(r.extra_aliases.iter()).collect::<Vec<_>>(),
            "alias": r.alias,
            "numeric_alias": r.numeric_alias,
            "extra_aliases": r.extra_aliases,
            "subject": r.subject,
            "organizer": r.organizer,
            "start_time": rfc3339(r.start_time),
            "end_time": rfc3339(r.end_time),
            "is_series": r.is_series,
            "occurrence_index": r.occurrence_index,
            "meeting_uid": r.meeting_uid,
            "deletion_time": opt_time(r.deletion_time),
        })
    }))
}

/// The JSON of one VMR.
pub fn conference_json(d: &ConferenceDetail) -> Value {
    let c = &d.conference;
    json!({
        "id": c.id,
        "integration": c.integration,
        "name": c.name,
        "description": c.description,
        "generated_aliases": [
            {"alias": c.alias, "kind": "alias", "editable": false},
            {"alias": c.numeric_alias, "kind": "numeric_alias", "editable": false},
        ],
        "alias": c.alias,
        "numeric_alias": c.numeric_alias,
        "alias_uuid": d.alias_uuid,
        "alias_state": d.alias_state,
        "extra_aliases": d.extra_aliases.iter().map(|x| json!({
            "alias": x.alias,
            "description": x.description,
            "created_at": rfc3339(x.created_at),
            "created_by": x.created_by,
            "editable": true,
        })).collect::<Vec<_>>(),
        "meeting_uid": d.meeting_uid,
        "organizer": d.organizer,
        "subject": d.subject,
        "meeting_state": d.meeting_state,
        "is_series": d.is_series,
        "created_at": rfc3339(c.created_at),
        "deletion_time": opt_time(c.deletion_time),
        "windows": d.windows.iter().map(|w| json!({
            "occurrence_index": w.occurrence_index,
            "start_time": rfc3339(w.start_time),
            "end_time": rfc3339(w.end_time),
            "subject": w.subject,
        })).collect::<Vec<_>>(),
    })
}

fn no_conference(id: &str) -> ApiFailure {
    ApiFailure::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no conference {id}"),
    )
}

async fn get_conference(
    State(state): State<ManagementState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiFailure> {
    let detail = state
        .storage
        .admin_conference(&id)
        .await
        .map_err(storage_failure)?
        .ok_or_else(|| no_conference(&id))?;
    Ok(Json(conference_json(&detail)))
}

async fn patch_conference(
    State(state): State<ManagementState>,
    Path(id): Path<String>,
    body: Option<Json<Value>>,
) -> Result<Response, ApiFailure> {
    state
        .storage
        .conference(&id)
        .await
        .map_err(storage_failure)?
        .ok_or_else(|| no_conference(&id))?;
    let fields: Vec<String> = body
        .as_ref()
        .and_then(|b| b.as_object())
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    if fields.iter().any(|f| f == "alias" || f == "numeric_alias") {
        return Err(ApiFailure::new(
            StatusCode::CONFLICT,
            "generated_alias_immutable",
            "alias and numeric_alias are generated by the scheduling service and cannot be changed; \
             add an extra alias with POST …/aliases instead",
        ));
    }
    Err(ApiFailure::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "not_editable",
        format!(
            "the scheduling service owns this conference's fields ({}); only extra aliases can be \
             added (POST …/aliases) or removed (DELETE …/aliases/{{alias}})",
            if fields.is_empty() {
                "none given".to_owned()
            } else {
                fields.join(", ")
            }
        ),
    ))
}

/// Body of `POST conferences/{id}/aliases`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAliasBody {
    alias: String,
    #[serde(default)]
    description: String,
}

async fn add_alias(
    State(state): State<ManagementState>,
    Extension(actor): Extension<AdminActor>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiFailure> {
    let body: NewAliasBody = serde_json::from_slice(&body).map_err(|e| {
        ApiFailure::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_body",
            format!("the body must be {{\"alias\": …, \"description\": …}}: {e}"),
        )
    })?;
    let added = state
        .storage
        .add_extra_alias(
            &id,
            &body.alias,
            &body.description,
            &actor.0,
            state.shared.clock.now_unix_ms(),
        )
        .await
        .map_err(write_failure)?;
    tracing::info!(conference = %id, alias = %added.alias, admin = %actor.0, "extra alias added");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "conference_id": added.conference_id,
            "alias": added.alias,
            "description": added.description,
            "created_at": rfc3339(added.created_at),
            "created_by": added.created_by,
        })),
    )
        .into_response())
}

async fn put_alias(
    State(state): State<ManagementState>,
    Path((id, alias)): Path<(String, String)>,
) -> Result<Response, ApiFailure> {
    state
        .storage
        .refuse_generated(&id, &alias)
        .await
        .map_err(write_failure)?;
    Err(ApiFailure::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "not_editable",
        "extra aliases are added (POST …/aliases) or removed (DELETE), not changed in place",
    ))
}

async fn delete_alias(
    State(state): State<ManagementState>,
    Extension(actor): Extension<AdminActor>,
    Path((id, alias)): Path<(String, String)>,
) -> Result<Response, ApiFailure> {
    state
        .storage
        .remove_extra_alias(&id, &alias, &actor.0, state.shared.clock.now_unix_ms())
        .await
        .map_err(write_failure)?;
    tracing::info!(conference = %id, %alias, admin = %actor.0, "extra alias removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_aliases(
    State(state): State<ManagementState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiFailure> {
    let page = state
        .storage
        .admin_aliases(&q.alias_filter(&state.shared)?, q.paging()?)
        .await
        .map_err(storage_failure)?;
    Ok(page_json(page, |a| {
        json!({
            "uuid": a.uuid,
            "integration": a.integration,
            "alias": a.alias,
            "numeric_alias": a.numeric_alias,
            "state": a.state,
            "creation_time": rfc3339(a.created_at),
            "conference_deletion_time": opt_time(a.conference_deletion_time),
            "meeting_uid": a.meeting_uid,
            "organizer": a.organizer,
        })
    }))
}

async fn list_recurring(
    State(state): State<ManagementState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiFailure> {
    let page = state
        .storage
        .admin_recurring_conferences(&q.simple_filter(&state.shared)?, q.paging()?)
        .await
        .map_err(storage_failure)?;
    Ok(page_json(page, |r| {
        json!({
            "id": r.id,
            "integration": r.integration,
            "conference_id": r.conference_id,
            "name": r.name,
            "alias": r.alias,
            "meeting_uid": r.meeting_uid,
            "subject": r.subject,
            "organizer": r.organizer,
            "current_index": r.current_index,
            "is_depleted": r.is_depleted,
        })
    }))
}

async fn list_operations(
    State(state): State<ManagementState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiFailure> {
    let page = state
        .storage
        .admin_operations(&q.operation_filter(&state.shared)?, q.paging()?)
        .await
        .map_err(storage_failure)?;
    Ok(page_json(page, |o| {
        json!({
            "transaction_uuid": o.transaction_uuid,
            "integration": o.integration,
            "creation_time": rfc3339(o.creation_time),
            "success": o.success,
            "error_code": o.error_code,
            "error_description": o.error_description,
            "resource_id": o.resource_id,
            "item_id": o.item_id,
            // Declines quote the transaction uuid to the organizer as the correlation id.
            "correlation_id": o.transaction_uuid,
        })
    }))
}

/// One integration's status as the API and the page show it.
pub async fn integration_status(
    state: &ManagementState,
    id: &str,
) -> Result<Option<Value>, StorageError> {
    let Some(integration) = state.shared.integrations.get(id) else {
        return Ok(None);
    };
    let ic = &integration.config;
    let h = state.storage.admin_integration_health(id).await?;
    let size = vmr_core::alias_space::space_size(ic.alias_digits);
    let share = h.aliases_issued as f64 / size as f64;
    let exchange_error = crate::metrics::service().last_exchange_error(id);
    let now = state.shared.clock.now_unix_ms();
    Ok(Some(json!({
        "id": ic.id,
        "resource_email": ic.resource_email,
        "mailbox": ic.watched_mailbox(),
        "processes_mailbox": ic.exchange.is_some(),
        "last_successful_sync": opt_time(h.last_sync_at),
        "last_sync_age_secs": h.last_sync_at.map(|at| (now - at).max(0) / 1000),
        "folders": h.folders.iter().map(|(f, at)| json!({"folder": f, "last_sync": rfc3339(*at)})).collect::<Vec<_>>(),
        "last_processed": opt_time(h.last_processed_at),
        "last_exchange_error": exchange_error.map(|e| json!({
            "code": e.code, "message": e.message, "time": rfc3339(e.at_ms), "source": "mailbox cycle (this instance)",
        })).or_else(|| h.last_reply_error.as_ref().map(|(msg, at)| json!({
            "code": "reply_failed", "message": msg, "time": rfc3339(*at), "source": "reply outbox",
        }))),
        "pending_replies": h.pending_replies,
        "leader": h.leader.as_ref().map(|(instance, beat)| json!({"instance": instance, "heartbeat": rfc3339(*beat)})),
        "alias_space": {
            "size": size,
            "issued": h.aliases_issued,
            "bound": h.aliases_bound,
            "deleted": h.aliases_deleted,
            "used_share": share,
            "nearly_exhausted": share >= crate::metrics::NEARLY_EXHAUSTED,
        },
        "manifest_url": format!("/manifest/{}.xml", ic.id),
    })))
}

async fn list_integrations(
    State(state): State<ManagementState>,
) -> Result<Json<Value>, ApiFailure> {
    let mut items = Vec::new();
    for id in state.shared.integrations.keys() {
        if let Some(v) = integration_status(&state, id)
            .await
            .map_err(storage_failure)?
        {
            items.push(v);
        }
    }
    Ok(Json(json!({ "items": items, "total": items.len() })))
}

async fn get_integration(
    State(state): State<ManagementState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiFailure> {
    integration_status(&state, &id)
        .await
        .map_err(storage_failure)?
        .map(Json)
        .ok_or_else(|| {
            ApiFailure::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no integration {id:?} is configured"),
            )
        })
}

async fn list_audit(
    State(state): State<ManagementState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiFailure> {
    let page = state
        .storage
        .admin_audit(&q.simple_filter(&state.shared)?, q.paging()?)
        .await
        .map_err(storage_failure)?;
    Ok(page_json(page, |a| {
        json!({
            "id": a.id,
            "time": rfc3339(a.at),
            "user": a.actor,
            "action": a.action,
            "object_type": a.object_type,
            "object_id": a.object_id,
            "detail": a.detail,
        })
    }))
}
