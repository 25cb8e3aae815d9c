//! The HTTP side of the simulated EWS endpoint: `POST /EWS/Exchange.asmx`, authentication as
//! IIS answers it (a 401 offers Negotiate, NTLM and — when enabled — Basic with an HTML body;
//! NTLM with Extended Protection is [`super::ntlm`], tied to the request's connection), the
//! `ExchangeImpersonation` header checked against the account's grants, schema validation of
//! the operation and every SOAP header (ErrorSchemaValidation faults with line and position),
//! injected faults and throttling budgets, the request log, and `GetStreamingEvents` as one
//! chunked response holding several envelopes (notifications as they happen, keep-alives,
//! `ConnectionStatus Closed` at the timeout).
//!
//! Wire note: in streaming notifications Exchange writes `m:Notification` inside
//! `m:Notifications` (documentation samples and client parsers), although `types.xsd` declares
//! that child in the types namespace; the simulator follows the servers.
//!
//! Also here: the client-credentials token endpoint `POST
//! /sim/entra/{tenant}/oauth2/v2.0/token` for `Authorization: Bearer` when an OAuth app is
//! configured.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Path, State};
use axum::http::{header, Extensions, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::model::{normalize_email, Event};
use super::ntlm::{ConnectionTag, NtlmOutcome};
use super::operations::{self, grants, Outcome, RequestContext};
use super::soap::{self, NS_T};
use super::{ExchangeServer, Fault, RequestRecord, ServiceAccount};

/// The EWS endpoint path.
pub const EWS_PATH: &str = "/EWS/Exchange.asmx";

/// The largest request body read.
const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// The EWS route (both the usual and the lower-case spelling, as IIS is case-insensitive) and
/// the token endpoint.
pub fn router(server: Arc<ExchangeServer>) -> Router {
    Router::new()
        .route(EWS_PATH, post(ews))
        .route("/ews/exchange.asmx", post(ews))
        .route("/sim/entra/{tenant}/oauth2/v2.0/token", post(token))
        .with_state(server)
}

fn xml_response(status: StatusCode, xml: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        xml,
    )
        .into_response()
}

/// The IIS 401 challenge (Basic only while it is enabled).
fn unauthorized(server: &ExchangeServer, headers: &HeaderMap) -> Response {
    let mut response = unauthorized_page();
    let h = response.headers_mut();
    h.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Negotiate"),
    );
    h.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("NTLM"));
    if server.ntlm().basic() {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.split(':').next().unwrap_or(h).to_owned())
            .unwrap_or_else(|| "localhost".to_owned());
        if let Ok(value) = HeaderValue::from_str(&format!("Basic realm=\"{host}\"")) {
            h.append(header::WWW_AUTHENTICATE, value);
        }
    }
    response
}

/// The second NTLM leg: 401 carrying the CHALLENGE message.
fn ntlm_challenge(challenge: &[u8]) -> Response {
    let mut response = unauthorized_page();
    if let Ok(value) = HeaderValue::from_str(&format!("NTLM {}", B64.encode(challenge))) {
        response
            .headers_mut()
            .append(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// IIS's 401 page, without `WWW-Authenticate`.
fn unauthorized_page() -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        "<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Strict//EN\" \"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd\">\r\n\
         <html xmlns=\"http://www.w3.org/1999/xhtml\">\r\n<head>\r\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=iso-8859-1\"/>\r\n\
         <title>401 - Unauthorized: Access is denied due to invalid credentials.</title>\r\n</head>\r\n<body>\r\n\
         <div id=\"header\"><h1>Server Error</h1></div>\r\n<div id=\"content\">\r\n <div class=\"content-container\"><fieldset>\r\n\
         <h2>401 - Unauthorized: Access is denied due to invalid credentials.</h2>\r\n\
         <h3>You do not have permission to view this directory or page using the credentials that you supplied.</h3>\r\n\
         </fieldset></div>\r\n</div>\r\n</body>\r\n</html>\r\n",
    )
        .into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    h.insert("X-Powered-By", HeaderValue::from_static("ASP.NET"));
    response
}

fn service_unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "text/html; charset=us-ascii")],
        "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01//EN\"\"http://www.w3.org/TR/html4/strict.dtd\">\r\n\
         <HTML><HEAD><TITLE>Service Unavailable</TITLE>\r\n<META HTTP-EQUIV=\"Content-Type\" Content=\"text/html; charset=us-ascii\"></HEAD>\r\n\
         <BODY><h2>Service Unavailable</h2>\r\n<hr><p>HTTP Error 503. The service is unavailable.</p>\r\n</BODY></HTML>\r\n",
    )
        .into_response()
}

/// How the caller signed in.
enum Credentials {
    Account(ServiceAccount),
    AppToken(ServiceAccount),
}

/// What authentication decided.
enum Authentication {
    /// Let in; `via_ntlm` when by the connection's NTLM authentication.
    Granted {
        credentials: Credentials,
        via_ntlm: bool,
    },
    /// The second NTLM leg.
    Challenge(Vec<u8>),
    Denied,
}

fn authenticate(
    server: &ExchangeServer,
    headers: &HeaderMap,
    connection: Option<&ConnectionTag>,
) -> Authentication {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let now = u64::try_from(server.now_unix_ms().saturating_add(11_644_473_600_000)).unwrap_or(0);
    match server
        .ntlm()
        .handle(connection, authorization, server.accounts(), now * 10_000)
    {
        NtlmOutcome::NotNtlm => {}
        NtlmOutcome::Challenge(challenge) => return Authentication::Challenge(challenge),
        NtlmOutcome::Refused => return Authentication::Denied,
        NtlmOutcome::Authenticated(username) => {
            return match server.accounts().iter().find(|a| a.username == username) {
                Some(account) => Authentication::Granted {
                    credentials: Credentials::Account(account.clone()),
                    via_ntlm: true,
                },
                None => Authentication::Denied,
            }
        }
    }
    match other_schemes(server, headers) {
        Some(credentials) => Authentication::Granted {
            credentials,
            via_ntlm: false,
        },
        None => Authentication::Denied,
    }
}

/// Basic (while enabled) and Bearer.
fn other_schemes(server: &ExchangeServer, headers: &HeaderMap) -> Option<Credentials> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("Basic") && server.ntlm().basic() {
        let decoded = String::from_utf8(B64.decode(rest.trim()).ok()?).ok()?;
        let (user, password) = decoded.split_once(':')?;
        let user = user
            .rsplit('\\')
            .next()
            .unwrap_or(user)
            .to_ascii_lowercase();
        let account = server.accounts().iter().find(|a| {
            let name = a.username.to_ascii_lowercase();
            let short = name.split('@').next().unwrap_or(&name);
            (name == user || short == user) && a.password == password
        })?;
        return Some(Credentials::Account(account.clone()));
    }
    if scheme.eq_ignore_ascii_case("Bearer") {
        let app = server.oauth()?;
        if !server.token_valid(rest.trim()) {
            return None;
        }
        let account = server
            .accounts()
            .iter()
            .find(|a| a.username.eq_ignore_ascii_case(&app.account))?;
        return Some(Credentials::AppToken(account.clone()));
    }
    None
}

/// The impersonated address in an `ExchangeImpersonation` header.
fn impersonated_address(header: roxmltree::Node) -> Option<String> {
    let sid = soap::child(header, NS_T, "ConnectingSID")?;
    ["PrimarySmtpAddress", "SmtpAddress", "PrincipalName"]
        .into_iter()
        .find_map(|name| soap::child_text(sid, NS_T, name))
        .map(normalize_email)
}

async fn ews(
    State(server): State<Arc<ExchangeServer>>,
    extensions: Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut record = RequestRecord {
        at_ms: server.elapsed_ms(),
        operation: "-".to_owned(),
        status: 200,
        fault: None,
        early: false,
        impersonated: None,
    };
    let connection = extensions
        .get::<ConnectInfo<ConnectionTag>>()
        .map(|info| &info.0);
    let (handled, via_ntlm) = match authenticate(&server, &headers, connection) {
        Authentication::Granted {
            credentials,
            via_ntlm,
        } => (
            handle(&server, credentials, &headers, &body, &mut record).await,
            via_ntlm,
        ),
        Authentication::Challenge(challenge) => (
            Handled(ntlm_challenge(&challenge), Some("NtlmChallenge".to_owned())),
            false,
        ),
        Authentication::Denied => (
            Handled(
                unauthorized(&server, &headers),
                Some("Unauthorized".to_owned()),
            ),
            false,
        ),
    };
    let (mut response, record) = handled.finish(record);
    if via_ntlm && server.ntlm().take_close() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    server.record(record);
    response
}

/// What [`handle`] decided.
struct Handled(Response, Option<String>);

impl Handled {
    fn finish(self, mut record: RequestRecord) -> (Response, RequestRecord) {
        record.status = self.0.status().as_u16();
        if self.1.is_some() {
            record.fault = self.1;
        }
        (self.0, record)
    }
}

fn fault_response(code: &'static str, text: &str) -> Handled {
    Handled(
        xml_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            soap::fault_envelope(code, text, None),
        ),
        Some(code.to_owned()),
    )
}

fn server_busy(server: &ExchangeServer, fault: Fault, op: &str, back_off_ms: u64) -> Handled {
    match fault {
        Fault::ServerBusyInBand { .. } => Handled(
            xml_response(
                StatusCode::OK,
                soap::envelope(
                    server.mailbox_version(),
                    &operations::server_busy_in_band(op, back_off_ms),
                ),
            ),
            Some("ServerBusyInBand".to_owned()),
        ),
        _ => {
            let message_xml =
                format!("<t:Value Name=\"BackOffMilliseconds\">{back_off_ms}</t:Value>");
            Handled(
                xml_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    soap::fault_envelope(
                        "ErrorServerBusy",
                        "The server cannot service this request right now. Try again later.",
                        Some(&message_xml),
                    ),
                ),
                Some("ServerBusyFault".to_owned()),
            )
        }
    }
}

async fn handle(
    server: &Arc<ExchangeServer>,
    credentials: Credentials,
    headers: &HeaderMap,
    body: &Bytes,
    record: &mut RequestRecord,
) -> Handled {
    if body.len() > MAX_REQUEST_BYTES {
        return fault_response("ErrorInvalidRequest", "The request is too large.");
    }
    let Ok(xml) = std::str::from_utf8(body) else {
        let error = soap::SoapReadError {
            line: 1,
            position: 1,
            violation: "The request is not UTF-8 text.".to_owned(),
        };
        return schema_fault(&error);
    };
    let doc = match soap::parse_document(xml) {
        Ok(doc) => doc,
        Err(error) => return schema_fault(&error),
    };
    let parsed = match soap::read_envelope(&doc) {
        Ok(parsed) => parsed,
        Err(error) => return schema_fault(&error),
    };
    let op = parsed.operation;
    let op_name = op.tag_name().name().to_owned();
    record.operation = op_name.clone();

    // Throttling: a running back-off answers ServerBusy again; then injected faults.
    if let Some((fault, left)) = server.running_back_off() {
        record.early = true;
        return server_busy(server, fault, &op_name, left);
    }
    if let Some(fault) = server.take_fault(&op_name) {
        match fault {
            Fault::ServerBusyFault { back_off_ms } | Fault::ServerBusyInBand { back_off_ms } => {
                server.start_back_off(fault, back_off_ms);
                return server_busy(server, fault, &op_name, back_off_ms);
            }
            Fault::Http503 => return Handled(service_unavailable(), Some("Http503".to_owned())),
            Fault::Unauthorized => {
                return Handled(
                    unauthorized(server, headers),
                    Some("Unauthorized".to_owned()),
                )
            }
            Fault::Malformed => {
                let full = soap::envelope(
                    server.mailbox_version(),
                    &format!(
                        "<m:{op_name}Response xmlns:m=\"{}\" xmlns:t=\"{NS_T}\"><m:ResponseMessages><m:{op_name}ResponseMessage ResponseClass=\"Success\"><m:ResponseCode>NoError</m:ResponseCode>",
                        soap::NS_M
                    ),
                );
                let cut = full.len() * 3 / 4;
                let truncated = full.get(..cut).unwrap_or(&full).to_owned();
                return Handled(
                    xml_response(StatusCode::OK, truncated),
                    Some("Malformed".to_owned()),
                );
            }
            Fault::Slow { delay_ms } => {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                record.fault = Some("Slow".to_owned());
            }
        }
    }

    // Schema validation of the operation and each header, each as its own document.
    if let Some(validator) = server.validator() {
        let mut parts = vec![op];
        parts.extend(parsed.headers.iter().copied());
        for part in parts {
            let (standalone, line) = soap::standalone(xml, &doc, part);
            if let Err(messages) = validator.validate(&standalone) {
                let first = messages.first().cloned().unwrap_or_default();
                return schema_fault(&soap::violation_from_validator(&first, line));
            }
        }
    }
    if op.tag_name().namespace() != Some(soap::NS_M) {
        return fault_response(
            "ErrorInvalidRequest",
            "The request is invalid: the SOAP Body does not hold an EWS operation.",
        );
    }

    // Impersonation.
    let (account, app_token) = match credentials {
        Credentials::Account(a) => (a, false),
        Credentials::AppToken(a) => (a, true),
    };
    let impersonation = parsed
        .headers
        .iter()
        .find(|h| h.has_tag_name((NS_T, "ExchangeImpersonation")));
    let impersonated =
        match impersonation {
            Some(header) => {
                let Some(address) = impersonated_address(*header) else {
                    return fault_response(
                        "ErrorInvalidExchangeImpersonationHeaderData",
                        "The impersonation header names no SMTP address or principal name.",
                    );
                };
                record.impersonated = Some(address.clone());
                if !server.store().mailboxes.contains_key(&address) {
                    return fault_response(
                        "ErrorNonExistentMailbox",
                        "The SMTP address has no mailbox associated with it.",
                    );
                }
                if !grants(&account.impersonate, &address) {
                    return fault_response(
                        "ErrorImpersonateUserDenied",
                        "The account does not have permission to impersonate the requested user.",
                    );
                }
                Some(address)
            }
            None if app_token => return fault_response(
                "ErrorInvalidExchangeImpersonationHeaderData",
                "ExchangeImpersonation SOAP header must be present for this type of OAuth token.",
            ),
            None => None,
        };
    let ctx = RequestContext {
        account,
        impersonated,
    };
    let fault_name = record.fault.clone();
    match operations::execute(server, &ctx, op) {
        Outcome::Response(element) => Handled(
            xml_response(
                StatusCode::OK,
                soap::envelope(server.mailbox_version(), &element),
            ),
            fault_name,
        ),
        Outcome::Fault { code, text } => fault_response(code, &text),
        Outcome::Streaming {
            subscriptions,
            minutes,
        } => Handled(stream(server.clone(), subscriptions, minutes), fault_name),
    }
}

fn schema_fault(error: &soap::SoapReadError) -> Handled {
    Handled(
        xml_response(StatusCode::INTERNAL_SERVER_ERROR, soap::schema_fault(error)),
        Some("ErrorSchemaValidation".to_owned()),
    )
}

/// Events queued for the subscriptions, taken off their queues. `None` when a subscription
/// is gone.
fn drain(server: &ExchangeServer, ids: &[String]) -> Option<Vec<(String, Vec<Event>)>> {
    let mut store = server.store();
    let mut out = Vec::new();
    for id in ids {
        let subscription = store.subscriptions.get_mut(id)?;
        if !subscription.queue.is_empty() {
            out.push((id.clone(), subscription.queue.drain(..).collect()));
        }
    }
    Some(out)
}

/// The chunked GetStreamingEvents response.
fn stream(server: Arc<ExchangeServer>, ids: Vec<String>, minutes: u32) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, Infallible>>(16);
    let version = server.mailbox_version();
    let keep_alive = server.keep_alive_interval();
    let lifetime = server.connection_timeout_minute() * minutes;
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + lifetime;
        let envelope = |element: String| soap::envelope(version, &element);
        if tx
            .send(Ok(envelope(operations::streaming_message(&[], Some("OK")))))
            .await
            .is_err()
        {
            return;
        }
        let mut next_keep_alive = tokio::time::Instant::now() + keep_alive;
        loop {
            let Some(notifications) = drain(&server, &ids) else {
                let mut r = operations::Response::new("GetStreamingEvents");
                r.error(&super::flows::EwsError::new(
                    "ErrorSubscriptionNotFound",
                    "The specified subscription was not found.",
                ));
                r.w.text("m:ConnectionStatus", "Closed");
                r.close();
                let _ = tx.send(Ok(envelope(r.finish()))).await;
                return;
            };
            if !notifications.is_empty() {
                if tx
                    .send(Ok(envelope(operations::streaming_message(
                        &notifications,
                        None,
                    ))))
                    .await
                    .is_err()
                {
                    return;
                }
                next_keep_alive = tokio::time::Instant::now() + keep_alive;
                continue;
            }
            let notifies: Vec<Arc<tokio::sync::Notify>> = {
                let store = server.store();
                ids.iter()
                    .filter_map(|id| store.subscriptions.get(id).map(|s| s.notify.clone()))
                    .collect()
            };
            let any_event =
                futures_util::future::select_all(notifies.iter().map(|n| Box::pin(n.notified())));
            tokio::select! {
                _ = any_event => {}
                _ = tokio::time::sleep_until(next_keep_alive) => {
                    if tx.send(Ok(envelope(operations::streaming_message(&[], Some("OK"))))).await.is_err() {
                        return;
                    }
                    next_keep_alive = tokio::time::Instant::now() + keep_alive;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let _ = tx.send(Ok(envelope(operations::streaming_message(&[], Some("Closed"))))).await;
                    return;
                }
                _ = tx.closed() => return,
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    response
}

/// `POST /sim/entra/{tenant}/oauth2/v2.0/token`: client credentials for the configured app.
async fn token(
    State(server): State<Arc<ExchangeServer>>,
    Path(tenant): Path<String>,
    body: String,
) -> Response {
    let fields: Vec<(String, String)> = body
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect();
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let error = |status: StatusCode, code: &str, description: &str| {
        (
            status,
            axum::Json(serde_json::json!({"error": code, "error_description": description})),
        )
            .into_response()
    };
    let Some(app) = server.oauth() else {
        return error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "AADSTS700016: No application is configured in this simulated tenant.",
        );
    };
    if tenant != app.tenant {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS90002: Tenant not found.",
        );
    }
    if get("grant_type") != Some("client_credentials") {
        return error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.",
        );
    }
    if get("client_id") != Some(app.client_id.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "AADSTS700016: Application not found in the directory.",
        );
    }
    if get("client_secret") != Some(app.client_secret.as_str()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    let token = format!(
        "eyJ0eXAiOiJKV1QifQ.{}",
        B64.encode(rand::random::<[u8; 32]>())
    );
    server.remember_token(token.clone(), server.now() + 3_599_000);
    axum::Json(serde_json::json!({
        "token_type": "Bearer",
        "expires_in": 3599,
        "ext_expires_in": 3599,
        "access_token": token,
    }))
    .into_response()
}

/// Decodes one part of a form-encoded query (`+` as space, `%XX` escapes; a malformed
/// escape is kept as text).
pub(crate) fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
