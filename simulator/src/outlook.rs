//! Simulated Outlook compose window and the fake Office.js that the task pane loads.
//!
//! The real pane runs in an iframe of Outlook's compose form and talks to Outlook through
//! Office.js. Here `GET /outlook/compose.html?pane=…` is the compose form (an appointment or
//! message, with subject, times, attendees and an HTML or text body) hosting the pane URL —
//! served by the real server on another origin — in an iframe; `GET /office.js` is the fake
//! Office.js the pane loads instead of Microsoft's, which forwards every mailbox call to the
//! compose window with `postMessage`. The compose window gets identity tokens for the pane from
//! the simulated Exchange ([`crate::exchange_identity::ExchangeIssuer`]) through
//! `POST /outlook/identity-token`. The browser-side behaviour lives in `assets/` (embedded
//! here); [`ComposeScenario`] is the typed form of the compose page's query string.

use crate::exchange_identity::{ExchangeIssuer, IdentityClaims};
use crate::jwt::unix_now;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The fake Office.js.
pub const OFFICE_JS: &str = include_str!("../assets/office.js");
/// The compose window's HTML; `__SCENARIO_JSON__` is replaced by the scenario.
const COMPOSE_HTML: &str = include_str!("../assets/compose.html");
/// The compose window's script.
const COMPOSE_JS: &str = include_str!("../assets/compose.js");
/// The compose window's styles.
const COMPOSE_CSS: &str = include_str!("../assets/compose.css");

/// Path of the compose window.
pub const COMPOSE_PATH: &str = "/outlook/compose.html";
/// Path of the fake Office.js.
pub const OFFICE_JS_PATH: &str = "/office.js";
/// Path the compose window posts identity-token requests to.
pub const IDENTITY_TOKEN_PATH: &str = "/outlook/identity-token";

/// Format of the item's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    /// HTML body (a contenteditable editor), Outlook's default.
    #[default]
    Html,
    /// Plain-text body (a textarea).
    Text,
}

/// How `getUserIdentityTokenAsync` behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenMode {
    /// A valid identity token from the simulated Exchange.
    #[default]
    Ok,
    /// A failed AsyncResult with `GenericTokenError` (9018), as Exchange Online gives today.
    Fail,
    /// A correctly signed token whose validity ended an hour ago.
    Expired,
}

/// What Outlook has open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemKind {
    /// A meeting being organised (`itemType` "appointment").
    #[default]
    Appointment,
    /// A message being written (`itemType` "message").
    Message,
    /// No item (`Office.context.mailbox.item` is `null`, as for a pinned pane).
    None,
}

/// The compose window's query string, typed. Every field but `pane` has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ComposeScenario {
    /// `pane`: URL of the add-in's task pane (the manifest `SourceLocation`); also the `aud`
    /// of identity tokens unless `aud` is given.
    pub pane: String,
    /// `body`: `html` (default) or `text`.
    pub body: BodyFormat,
    /// `token`: `ok` (default), `fail` or `expired`.
    pub token: TokenMode,
    /// `delay`: extra milliseconds before every callback (default 0).
    pub delay: u64,
    /// `organizer`: the organizer's (and signed-in user's) address.
    pub organizer: String,
    /// `name`: the organizer's display name (default derived from the address).
    pub name: Option<String>,
    /// `item`: `appointment` (default), `message` or `none`.
    pub item: ItemKind,
    /// `mailbox`: highest supported Mailbox requirement set (default `1.5`, Exchange
    /// 2016/2019). APIs of later sets are absent from the fake Office.js.
    pub mailbox: String,
    /// `subject`: the initial subject (default empty).
    pub subject: String,
    /// `aud`: put this in identity tokens' `aud` instead of the pane URL.
    pub aud: Option<String>,
}

/// The default organizer address of the compose window.
pub const DEFAULT_ORGANIZER: &str = "alice@example.com";

impl Default for ComposeScenario {
    fn default() -> Self {
        Self {
            pane: String::new(),
            body: BodyFormat::default(),
            token: TokenMode::default(),
            delay: 0,
            organizer: DEFAULT_ORGANIZER.to_owned(),
            name: None,
            item: ItemKind::default(),
            mailbox: "1.5".to_owned(),
            subject: String::new(),
            aud: None,
        }
    }
}

impl ComposeScenario {
    /// The default scenario for the pane at `pane`.
    pub fn new(pane: impl Into<String>) -> Self {
        Self {
            pane: pane.into(),
            ..Self::default()
        }
    }

    /// Checks the values a query string cannot type-check.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.pane.starts_with("https://") || self.pane.starts_with("http://")) {
            return Err("`pane` must be an absolute http(s) URL".into());
        }
        let mut parts = self.mailbox.split('.');
        let well_formed = parts.next() == Some("1")
            && parts.next().is_some_and(|minor| {
                !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit())
            })
            && parts.next().is_none();
        if !well_formed {
            return Err("`mailbox` must look like 1.5".into());
        }
        if !self.organizer.contains('@') {
            return Err("`organizer` must be an e-mail address".into());
        }
        if self.delay > 60_000 {
            return Err("`delay` must be at most 60000 ms".into());
        }
        Ok(())
    }

    /// The query string (without `?`) for this scenario; defaults are left out.
    pub fn to_query(&self) -> String {
        let defaults = Self::default();
        let mut pairs: Vec<(&str, String)> = vec![("pane", self.pane.clone())];
        let enum_name = |value: serde_json::Value| value.as_str().unwrap_or_default().to_owned();
        if self.body != defaults.body {
            pairs.push(("body", enum_name(serde_json::json!(self.body))));
        }
        if self.token != defaults.token {
            pairs.push(("token", enum_name(serde_json::json!(self.token))));
        }
        if self.delay != 0 {
            pairs.push(("delay", self.delay.to_string()));
        }
        if self.organizer != defaults.organizer {
            pairs.push(("organizer", self.organizer.clone()));
        }
        if let Some(name) = &self.name {
            pairs.push(("name", name.clone()));
        }
        if self.item != defaults.item {
            pairs.push(("item", enum_name(serde_json::json!(self.item))));
        }
        if self.mailbox != defaults.mailbox {
            pairs.push(("mailbox", self.mailbox.clone()));
        }
        if !self.subject.is_empty() {
            pairs.push(("subject", self.subject.clone()));
        }
        if let Some(aud) = &self.aud {
            pairs.push(("aud", aud.clone()));
        }
        pairs
            .into_iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(&v)))
            .collect::<Vec<_>>()
            .join("&")
    }

    /// The compose window URL for this scenario on a simulator at `origin`.
    pub fn url(&self, origin: &str) -> String {
        format!(
            "{}{COMPOSE_PATH}?{}",
            origin.trim_end_matches('/'),
            self.to_query()
        )
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Body of `POST /outlook/identity-token`.
#[derive(Debug, Clone, Deserialize)]
pub struct IdentityTokenRequest {
    /// The token's audience (the pane's `SourceLocation`).
    pub aud: String,
    /// The user's SMTP address.
    pub email: String,
    /// The user's display name.
    #[serde(default)]
    pub name: Option<String>,
    /// The user's Exchange id (`msexchuid`); derived from the address when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// Issue a token that expired an hour ago.
    #[serde(default)]
    pub expired: bool,
}

/// Answer of `POST /outlook/identity-token`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityTokenResponse {
    /// The signed identity token.
    pub token: String,
}

/// A pane with nothing in it but Office.js: marks `vmr-ready` when Office is
/// ready. `cargo xtask bench` compares the real pane's load time with it.
pub const EMPTY_PANE_PATH: &str = "/outlook/empty-pane.html";

const EMPTY_PANE_HTML: &str = "<!doctype html><html><head><meta charset=\"utf-8\">\
<script src=\"/office.js\"></script></head><body>\
<script>Office.onReady(function () { performance.mark(\"vmr-ready\"); });</script>\
</body></html>";

/// Routes of the simulated Outlook: the compose window, its assets, the fake Office.js, an
/// empty pane (the load-time baseline) and the identity-token endpoint.
pub fn router(exchange: Arc<ExchangeIssuer>) -> Router {
    Router::new()
        .route(COMPOSE_PATH, get(compose_page))
        .route(
            "/outlook/compose.js",
            get(|| async { asset("text/javascript; charset=utf-8", COMPOSE_JS) }),
        )
        .route(
            "/outlook/compose.css",
            get(|| async { asset("text/css; charset=utf-8", COMPOSE_CSS) }),
        )
        .route(OFFICE_JS_PATH, get(office_js))
        .route(
            EMPTY_PANE_PATH,
            get(|| async { asset("text/html; charset=utf-8", EMPTY_PANE_HTML) }),
        )
        .route(IDENTITY_TOKEN_PATH, post(identity_token))
        .with_state(exchange)
}

/// Path of the compose window's Send button endpoint.
pub const SEND_PATH: &str = "/outlook/send";

/// What the compose window's Send button posts: the item as the form holds it.
#[derive(Debug, Clone, Deserialize)]
pub struct SendRequest {
    /// The organizer from the scenario.
    pub organizer: vmr_core::meeting::Person,
    #[serde(default)]
    pub subject: String,
    /// The body as the editor holds it, with its type.
    #[serde(default)]
    pub body: vmr_core::meeting::Body,
    /// Unix ms; default tomorrow 10:00 UTC.
    #[serde(default)]
    pub start: Option<i64>,
    /// Unix ms; default start + 30 minutes.
    #[serde(default)]
    pub end: Option<i64>,
    /// Required attendees' addresses (known resources among them become resources).
    #[serde(default)]
    pub required: Vec<String>,
    /// Optional attendees' addresses.
    #[serde(default)]
    pub optional: Vec<String>,
}

/// Path of a mailbox's Inbox as Outlook would list it (`?mailbox=<address>`).
pub const INBOX_PATH: &str = "/outlook/inbox.html";

/// The routes backed by the simulated Exchange: the compose window's Send (the meeting goes
/// through `ExchangeServer::send_meeting`, the answer is its UID) and a mailbox's Inbox, where
/// an organizer reads the resource's replies.
pub fn mail_router(ews: Arc<crate::ews::ExchangeServer>) -> Router {
    Router::new()
        .route(SEND_PATH, post(send_item))
        .route(INBOX_PATH, get(inbox_page))
        .with_state(ews)
}

#[derive(Debug, Deserialize)]
struct InboxQuery {
    mailbox: String,
}

/// Text safe inside HTML element content and double-quoted attributes.
pub(crate) fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The Inbox, newest first: sender, subject, time, and the body — HTML bodies in a sandboxed
/// frame (no scripts, no access to this page), text bodies as text. Refreshes every 2 s.
async fn inbox_page(
    State(ews): State<Arc<crate::ews::ExchangeServer>>,
    query: Result<Query<InboxQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return bad_request("say which mailbox: ?mailbox=<address>".into());
    };
    let messages = match ews.mailbox_messages(&query.mailbox, crate::ews::FolderName::Inbox) {
        Ok(m) => m,
        Err(e) => return bad_request(e.to_string()),
    };
    let mut rows = String::new();
    for (i, m) in messages.iter().enumerate().rev() {
        let from = m
            .from
            .as_ref()
            .map(|p| format!("{} &lt;{}&gt;", escape_html(&p.name), escape_html(&p.email)))
            .unwrap_or_default();
        let received = chrono::DateTime::from_timestamp_millis(m.received)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default();
        let body = if m.body.html {
            format!(
                "<iframe sandbox title=\"body\" srcdoc=\"{}\"></iframe>",
                escape_html(&m.body.content)
            )
        } else {
            format!("<pre>{}</pre>", escape_html(&m.body.content))
        };
        rows.push_str(&format!(
            "<article class=\"message\" id=\"message-{i}\" data-class=\"{class}\">\
             <header><b class=\"subject\">{subject}</b><span class=\"from\">{from}</span>\
             <time>{received}</time></header>{body}</article>\n",
            class = escape_html(&m.item_class),
            subject = escape_html(&m.subject),
        ));
    }
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
         <title>Inbox of {mailbox}</title><style>\
         body{{font-family:Segoe UI,Arial,sans-serif;margin:0;background:#f3f2f1}}\
         h1{{font-size:16px;margin:0;padding:12px 16px;background:#0f6cbd;color:#fff}}\
         .message{{background:#fff;margin:12px 16px;padding:10px 14px;border-radius:4px;box-shadow:0 1px 2px #0002}}\
         .message header{{display:flex;gap:12px;align-items:baseline}} .from{{color:#605e5c}} time{{margin-left:auto;color:#8a8886;font-size:12px}}\
         iframe{{width:100%;height:90px;border:0}} pre{{white-space:pre-wrap}}\
         </style></head><body><h1>Inbox — {mailbox}</h1>\n<main id=\"inbox\" data-count=\"{count}\">{rows}</main></body></html>",
        mailbox = escape_html(&query.mailbox),
        count = messages.len(),
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

async fn send_item(
    State(ews): State<Arc<crate::ews::ExchangeServer>>,
    axum::Json(request): axum::Json<SendRequest>,
) -> Response {
    const DAY_MS: i64 = 86_400_000;
    let now = ews.now_unix_ms();
    let tomorrow_ten = (now.div_euclid(DAY_MS) + 1) * DAY_MS + 10 * 3_600_000;
    let start = request.start.unwrap_or(tomorrow_ten);
    let end = request.end.unwrap_or(start + 30 * 60_000);
    let (resources, required): (Vec<String>, Vec<String>) = request
        .required
        .into_iter()
        .partition(|address| ews.is_resource(address));
    let (optional_resources, optional): (Vec<String>, Vec<String>) = request
        .optional
        .into_iter()
        .partition(|address| ews.is_resource(address));
    let meeting = crate::ews::SendMeeting {
        organizer: request.organizer,
        subject: request.subject,
        body: request.body,
        start,
        end,
        time_zone: "UTC".to_owned(),
        recurrence: None,
        required,
        optional,
        resources: resources.into_iter().chain(optional_resources).collect(),
    };
    match ews.send_meeting(meeting) {
        Ok(uid) => axum::Json(serde_json::json!({ "uid": uid })).into_response(),
        Err(e) => bad_request(format!("cannot send the meeting: {e}")),
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn office_js() -> Response {
    let mut response = asset("text/javascript; charset=utf-8", OFFICE_JS);
    // The pane on another origin loads it; allow `crossorigin` script tags too.
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response()
}

/// The scenario as JSON that is safe inside a `<script>` element.
fn scenario_json(scenario: &ComposeScenario) -> String {
    let mut value = serde_json::json!(scenario);
    if let Some(object) = value.as_object_mut() {
        let name = scenario
            .name
            .clone()
            .unwrap_or_else(|| crate::exchange_identity::display_name_for(&scenario.organizer));
        object.insert("organizerName".into(), serde_json::Value::String(name));
    }
    value
        .to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

async fn compose_page(
    query: Result<Query<ComposeScenario>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let scenario = match query {
        Ok(Query(scenario)) => scenario,
        Err(rejection) => return bad_request(format!("invalid compose scenario: {rejection}")),
    };
    if let Err(message) = scenario.validate() {
        return bad_request(format!("invalid compose scenario: {message}"));
    }
    let html = COMPOSE_HTML.replace("__SCENARIO_JSON__", &scenario_json(&scenario));
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        html,
    )
        .into_response()
}

async fn identity_token(
    State(exchange): State<Arc<ExchangeIssuer>>,
    request: Result<Json<IdentityTokenRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match request {
        Ok(request) => request,
        Err(rejection) => return bad_request(format!("invalid token request: {rejection}")),
    };
    if request.aud.trim().is_empty() {
        return bad_request("invalid token request: `aud` is empty".into());
    }
    if !request.email.contains('@') {
        return bad_request("invalid token request: `email` is not an address".into());
    }
    let mut claims = IdentityClaims::new(request.aud, request.email);
    if let Some(name) = request.name {
        claims.display_name = name;
    }
    if let Some(user) = request.user {
        claims.msexchuid = user;
    }
    if request.expired {
        let now = unix_now();
        claims.valid_from = now - 9 * 3600;
        claims.valid_until = now - 3600;
    }
    let token = exchange.identity_token(&claims);
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(IdentityTokenResponse { token }),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use std::sync::OnceLock;
    use tower::ServiceExt as _;

    fn exchange() -> Arc<ExchangeIssuer> {
        static ISSUER: OnceLock<Arc<ExchangeIssuer>> = OnceLock::new();
        ISSUER
            .get_or_init(|| {
                Arc::new(ExchangeIssuer::generate("https://127.0.0.1:9443").expect("issuer"))
            })
            .clone()
    }

    async fn send(request: Request<Body>) -> (StatusCode, String) {
        let response = router(exchange()).oneshot(request).await.expect("response");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 22)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[test]
    fn scenario_query_round_trips() {
        let mut scenario = ComposeScenario::new("https://addin.example.test:8443/pane/?x=1&y=<2>");
        scenario.body = BodyFormat::Text;
        scenario.token = TokenMode::Fail;
        scenario.delay = 250;
        scenario.item = ItemKind::Message;
        scenario.mailbox = "1.8".into();
        scenario.name = Some("Zoë Q".into());
        let query = scenario.to_query();
        assert!(query.starts_with(
            "pane=https%3A%2F%2Faddin.example.test%3A8443%2Fpane%2F%3Fx%3D1%26y%3D%3C2%3E"
        ));
        let Query(parsed): Query<ComposeScenario> =
            Query::try_from_uri(&format!("/x?{query}").parse().expect("uri")).expect("parse");
        assert_eq!(parsed, scenario);
        assert!(scenario.validate().is_ok());
        assert_eq!(
            ComposeScenario::new("https://a/").to_query(),
            "pane=https%3A%2F%2Fa%2F"
        );
    }

    #[tokio::test]
    async fn compose_page_embeds_escaped_scenario() {
        let scenario = ComposeScenario::new("https://addin.example.test/pane.html?</script><b>");
        let uri = format!("{COMPOSE_PATH}?{}", scenario.to_query());
        let (status, html) = send(Request::get(uri).body(Body::empty()).expect("request")).await;
        assert_eq!(status, 200);
        assert!(!html.contains("</script><b>"));
        assert!(html.contains("\\u003c/script\\u003e"));
        assert!(html.contains("\"organizerName\":\"Alice\""));
        assert!(html.contains("/outlook/compose.js"));
    }

    #[tokio::test]
    async fn compose_page_rejects_bad_scenarios() {
        for query in [
            "",
            "pane=javascript:alert(1)",
            "pane=https%3A%2F%2Fa%2F&mailbox=2.0",
            "pane=https%3A%2F%2Fa%2F&body=rtf",
        ] {
            let (status, _) = send(
                Request::get(format!("{COMPOSE_PATH}?{query}"))
                    .body(Body::empty())
                    .expect("request"),
            )
            .await;
            assert_eq!(status, 400, "{query}");
        }
    }

    #[tokio::test]
    async fn identity_token_endpoint_issues_tokens() {
        let request = |body: &str| {
            Request::post(IDENTITY_TOKEN_PATH)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_owned()))
                .expect("request")
        };
        let (status, body) = send(request(r#"{"aud":"https://addin.example.test/pane.html","email":"alice@example.com","name":"Alice"}"#)).await;
        assert_eq!(status, 200);
        let response: IdentityTokenResponse = serde_json::from_str(&body).expect("json");
        assert_eq!(response.token.split('.').count(), 3);
        let (status, _) = send(request(r#"{"aud":"","email":"alice@example.com"}"#)).await;
        assert_eq!(status, 400);
        let (status, _) = send(request("not json")).await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn serves_office_js() {
        let (status, js) = send(
            Request::get(OFFICE_JS_PATH)
                .body(Body::empty())
                .expect("request"),
        )
        .await;
        assert_eq!(status, 200);
        assert!(js.contains("Office.onReady"));
    }
}
