//! The JSON control API of the simulated Exchange, for the demo and for processes that cannot
//! call [`ExchangeServer`] in-process: meeting flows, inspection, scenario switches (mailboxes,
//! AutomateProcessing and the other calendar-processing switches, mailbox version, fault injection,
//! Windows authentication: Extended Protection, Basic, NTLM connection events) and the request log, all under
//! `/sim/exchange/…`. Errors are `{"error": "…"}` with 400 (bad input) or 404 (unknown
//! mailbox or meeting).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use vmr_core::meeting::UnixMs;

use super::{
    AutomateProcessing, CalendarProcessing, ExchangeServer, FaultRule, FlowError, FolderName,
    MailboxKind, MailboxVersion, MeetingUpdate, SendMeeting,
};

/// The routes.
pub fn router(server: Arc<ExchangeServer>) -> Router {
    Router::new()
        .route("/sim/exchange/meetings", post(send_meeting))
        .route("/sim/exchange/meetings/{uid}/update", post(update_meeting))
        .route(
            "/sim/exchange/meetings/{uid}/move-occurrence",
            post(move_occurrence),
        )
        .route(
            "/sim/exchange/meetings/{uid}/cancel-occurrence",
            post(cancel_occurrence),
        )
        .route("/sim/exchange/meetings/{uid}/cancel", post(cancel_meeting))
        .route("/sim/exchange/mailboxes", post(add_mailbox))
        .route(
            "/sim/exchange/mailboxes/{email}/folders/{folder}",
            get(mailbox_messages),
        )
        .route(
            "/sim/exchange/mailboxes/{email}/calendar",
            get(calendar_items),
        )
        .route(
            "/sim/exchange/mailboxes/{email}/automate-processing",
            put(set_automate),
        )
        .route(
            "/sim/exchange/mailboxes/{email}/calendar-processing",
            put(set_calendar_processing),
        )
        .route("/sim/exchange/version", put(set_version))
        .route("/sim/exchange/faults", post(inject).delete(clear_faults))
        .route("/sim/exchange/requests", get(requests))
        .route("/sim/exchange/windows-auth", put(set_windows_auth))
        .route("/sim/exchange/ntlm", get(ntlm_state))
        .route("/sim/exchange/ntlm/forget", post(ntlm_forget))
        .route("/sim/exchange/ntlm/close-next", post(ntlm_close_next))
        .with_state(server)
}

fn flow_error(error: FlowError) -> Response {
    let status = match error {
        FlowError::UnknownMailbox(_) | FlowError::UnknownMeeting(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    };
    (
        status,
        Json(serde_json::json!({"error": error.to_string()})),
    )
        .into_response()
}

async fn send_meeting(
    State(server): State<Arc<ExchangeServer>>,
    Json(meeting): Json<SendMeeting>,
) -> Response {
    match server.send_meeting(meeting) {
        Ok(uid) => Json(serde_json::json!({"uid": uid})).into_response(),
        Err(e) => flow_error(e),
    }
}

async fn update_meeting(
    State(server): State<Arc<ExchangeServer>>,
    Path(uid): Path<String>,
    Json(update): Json<MeetingUpdate>,
) -> Response {
    match server.update_meeting(&uid, update) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => flow_error(e),
    }
}

/// Body of `move-occurrence`.
#[derive(Debug, Deserialize)]
pub struct MoveOccurrence {
    pub original_start: UnixMs,
    pub start: UnixMs,
    pub end: UnixMs,
}

async fn move_occurrence(
    State(server): State<Arc<ExchangeServer>>,
    Path(uid): Path<String>,
    Json(body): Json<MoveOccurrence>,
) -> Response {
    match server.move_occurrence(&uid, body.original_start, body.start, body.end) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => flow_error(e),
    }
}

/// Body of `cancel-occurrence`.
#[derive(Debug, Deserialize)]
pub struct CancelOccurrence {
    pub original_start: UnixMs,
}

async fn cancel_occurrence(
    State(server): State<Arc<ExchangeServer>>,
    Path(uid): Path<String>,
    Json(body): Json<CancelOccurrence>,
) -> Response {
    match server.cancel_occurrence(&uid, body.original_start) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => flow_error(e),
    }
}

async fn cancel_meeting(
    State(server): State<Arc<ExchangeServer>>,
    Path(uid): Path<String>,
) -> Response {
    match server.cancel_meeting(&uid) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => flow_error(e),
    }
}

/// Body of `POST /sim/exchange/mailboxes`.
#[derive(Debug, Deserialize)]
pub struct NewMailbox {
    pub email: String,
    pub name: String,
    pub kind: MailboxKind,
    #[serde(default)]
    pub automate: Option<AutomateProcessing>,
}

async fn add_mailbox(
    State(server): State<Arc<ExchangeServer>>,
    Json(body): Json<NewMailbox>,
) -> Response {
    server.add_mailbox(&body.email, &body.name, body.kind);
    if let Some(automate) = body.automate {
        if let Err(e) = server.set_automate_processing(&body.email, automate) {
            return flow_error(e);
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn mailbox_messages(
    State(server): State<Arc<ExchangeServer>>,
    Path((email, folder)): Path<(String, String)>,
) -> Response {
    let Some(folder) = FolderName::from_distinguished_id(&folder) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": format!("unknown folder {folder:?}: inbox, calendar, deleteditems or sentitems")})),
        )
            .into_response();
    };
    match server.mailbox_messages(&email, folder) {
        Ok(messages) => Json(messages).into_response(),
        Err(e) => flow_error(e),
    }
}

async fn calendar_items(
    State(server): State<Arc<ExchangeServer>>,
    Path(email): Path<String>,
) -> Response {
    match server.calendar_items(&email) {
        Ok(items) => Json(items).into_response(),
        Err(e) => flow_error(e),
    }
}

/// Body of `automate-processing`.
#[derive(Debug, Deserialize)]
pub struct SetAutomate {
    pub automate: AutomateProcessing,
}

async fn set_automate(
    State(server): State<Arc<ExchangeServer>>,
    Path(email): Path<String>,
    Json(body): Json<SetAutomate>,
) -> Response {
    match server.set_automate_processing(&email, body.automate) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => flow_error(e),
    }
}

/// `PUT …/calendar-processing` with `{"delete_comments": true, "delete_subject": false,
/// "add_organizer_to_subject": false}` (missing switches are off).
async fn set_calendar_processing(
    State(server): State<Arc<ExchangeServer>>,
    Path(email): Path<String>,
    Json(body): Json<CalendarProcessing>,
) -> Response {
    match server.set_calendar_processing(&email, body) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => flow_error(e),
    }
}

/// Body of `PUT /sim/exchange/version`.
#[derive(Debug, Deserialize)]
pub struct SetVersion {
    pub version: MailboxVersion,
}

async fn set_version(
    State(server): State<Arc<ExchangeServer>>,
    Json(body): Json<SetVersion>,
) -> Response {
    server.set_mailbox_version(body.version);
    StatusCode::NO_CONTENT.into_response()
}

async fn inject(
    State(server): State<Arc<ExchangeServer>>,
    Json(rule): Json<FaultRule>,
) -> Response {
    server.inject(rule);
    StatusCode::NO_CONTENT.into_response()
}

async fn clear_faults(State(server): State<Arc<ExchangeServer>>) -> Response {
    server.clear_faults();
    StatusCode::NO_CONTENT.into_response()
}

async fn requests(State(server): State<Arc<ExchangeServer>>) -> Response {
    Json(server.requests()).into_response()
}

/// `PUT /sim/exchange/windows-auth` with `{"extended_protection": "off" | "accept" |
/// "required", "basic": true}` (either field may be left out).
async fn set_windows_auth(
    State(server): State<Arc<ExchangeServer>>,
    Json(body): Json<super::ntlm::WindowsAuthSettings>,
) -> Response {
    server.ntlm().apply(&body);
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /sim/exchange/ntlm`: the switches and every NTLM event (challenges, authentications,
/// refusals with their reason, requests let in by their connection).
async fn ntlm_state(State(server): State<Arc<ExchangeServer>>) -> Response {
    let ntlm = server.ntlm();
    Json(serde_json::json!({
        "extended_protection": ntlm.extended_protection(),
        "basic": ntlm.basic(),
        "records": ntlm.records(),
    }))
    .into_response()
}

/// `POST /sim/exchange/ntlm/forget`: every connection must authenticate again.
async fn ntlm_forget(State(server): State<Arc<ExchangeServer>>) -> Response {
    server.ntlm().forget_connections();
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /sim/exchange/ntlm/close-next`: the next NTLM-authenticated response closes its
/// connection.
async fn ntlm_close_next(State(server): State<Arc<ExchangeServer>>) -> Response {
    server.ntlm().close_after_next_response();
    StatusCode::NO_CONTENT.into_response()
}
