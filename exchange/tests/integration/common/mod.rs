//! A small fake Exchange for the transport tests: real HTTP on 127.0.0.1 (axum), an EWS
//! endpoint whose replies a test scripts per request, and an OAuth2 token endpoint.
//!
//! The fake records every request as it arrives (time, operation, headers, body) and counts
//! requests in flight, so tests assert on what the server saw, not just on the client's result.
//! Reply fixtures follow the real wire format (`s:`/`m:`/`t:` prefixes, SOAP 1.1, the
//! `http://` namespaces).

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;

pub const NS: &str = r#"xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages" xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types""#;

/// One request the fake EWS endpoint received.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: Instant,
    /// Local name of the first element in `soap:Body` (`SyncFolderItems`, `Subscribe`, …).
    pub operation: String,
    /// How many earlier requests had this operation.
    pub index_of_operation: usize,
    pub authorization: Option<String>,
    pub anchor_mailbox: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
}

/// One request the token endpoint received: its form fields.
pub type TokenForm = HashMap<String, String>;

/// What the fake answers.
pub enum Reply {
    /// A whole response after `delay`.
    Http {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
        delay: Duration,
    },
    /// A 200 streamed in chunks, each after its delay; then the connection stays open when
    /// `hold` (else the body ends).
    Stream {
        chunks: Vec<(Duration, String)>,
        hold: bool,
    },
}

impl Reply {
    pub fn ok(body: String) -> Reply {
        Reply::status(200, body)
    }

    pub fn status(status: u16, body: String) -> Reply {
        Reply::Http {
            status,
            headers: vec![("Content-Type".into(), "text/xml; charset=utf-8".into())],
            body,
            delay: Duration::ZERO,
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        if let Reply::Http { headers, .. } = &mut self {
            headers.push((name.into(), value.into()));
        }
        self
    }

    pub fn delayed(mut self, by: Duration) -> Reply {
        if let Reply::Http { delay, .. } = &mut self {
            *delay = by;
        }
        self
    }
}

type EwsResponder = Box<dyn Fn(&Arrival) -> Reply + Send + Sync>;
type TokenResponder = Box<dyn Fn(&TokenForm, usize) -> Reply + Send + Sync>;

pub struct FakeState {
    pub arrivals: Mutex<Vec<Arrival>>,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub token_requests: Mutex<Vec<TokenForm>>,
    ews: EwsResponder,
    token: TokenResponder,
}

/// The running fake.
pub struct FakeExchange {
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
}

impl FakeExchange {
    /// Starts a fake whose EWS endpoint answers with `ews` and token endpoint with `token`.
    pub async fn start(
        ews: impl Fn(&Arrival) -> Reply + Send + Sync + 'static,
        token: impl Fn(&TokenForm, usize) -> Reply + Send + Sync + 'static,
    ) -> FakeExchange {
        let state = Arc::new(FakeState {
            arrivals: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            token_requests: Mutex::new(Vec::new()),
            ews: Box::new(ews),
            token: Box::new(token),
        });
        let app = Router::new()
            .route("/EWS/Exchange.asmx", post(ews_endpoint))
            .route("/tenant/oauth2/v2.0/token", post(token_endpoint))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeExchange { addr, state }
    }

    /// A fake without a token endpoint answer (any token request is a test failure).
    pub async fn ews_only(ews: impl Fn(&Arrival) -> Reply + Send + Sync + 'static) -> Self {
        Self::start(ews, |_, _| panic!("unexpected token request")).await
    }

    pub fn ews_url(&self) -> String {
        format!("http://{}/EWS/Exchange.asmx", self.addr)
    }

    pub fn token_url(&self) -> String {
        format!("http://{}/tenant/oauth2/v2.0/token", self.addr)
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.state.arrivals.lock().unwrap().clone()
    }

    pub fn operations(&self) -> Vec<String> {
        self.arrivals().into_iter().map(|a| a.operation).collect()
    }

    pub fn count(&self, operation: &str) -> usize {
        self.arrivals()
            .iter()
            .filter(|a| a.operation == operation)
            .count()
    }

    pub fn token_requests(&self) -> Vec<TokenForm> {
        self.state.token_requests.lock().unwrap().clone()
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }
}

fn operation_of(body: &str) -> String {
    let Ok(doc) = roxmltree::Document::parse(body) else {
        return "<not XML>".into();
    };
    doc.root_element()
        .children()
        .find(|n| n.is_element() && n.tag_name().name() == "Body")
        .and_then(|b| b.children().find(|n| n.is_element()))
        .map(|op| op.tag_name().name().to_owned())
        .unwrap_or_else(|| "<no operation>".into())
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Decrements the in-flight count when dropped (the reply was produced or abandoned).
struct InFlight(Arc<FakeState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn ews_endpoint(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let guard = InFlight(state.clone());
    let operation = operation_of(&body);
    let arrival = {
        let mut arrivals = state.arrivals.lock().unwrap();
        let arrival = Arrival {
            at: Instant::now(),
            index_of_operation: arrivals.iter().filter(|a| a.operation == operation).count(),
            operation,
            authorization: header(&headers, "authorization"),
            anchor_mailbox: header(&headers, "x-anchormailbox"),
            content_type: header(&headers, "content-type"),
            body,
        };
        arrivals.push(arrival.clone());
        arrival
    };
    let reply = (state.ews)(&arrival);
    respond(reply, Some(guard)).await
}

async fn token_endpoint(
    State(state): State<Arc<FakeState>>,
    axum::Form(form): axum::Form<TokenForm>,
) -> Response {
    let index = {
        let mut requests = state.token_requests.lock().unwrap();
        requests.push(form.clone());
        requests.len() - 1
    };
    let reply = (state.token)(&form, index);
    respond(reply, None).await
}

async fn respond(reply: Reply, guard: Option<InFlight>) -> Response {
    match reply {
        Reply::Http {
            status,
            headers,
            body,
            delay,
        } => {
            tokio::time::sleep(delay).await;
            let mut response = Response::builder().status(StatusCode::from_u16(status).unwrap());
            for (name, value) in headers {
                response = response.header(name, value);
            }
            drop(guard);
            response.body(Body::from(body)).unwrap()
        }
        Reply::Stream { chunks, hold } => {
            let chunks = futures_util::stream::unfold(
                (chunks.into_iter(), guard, hold),
                |(mut chunks, guard, hold)| async move {
                    match chunks.next() {
                        Some((delay, text)) => {
                            tokio::time::sleep(delay).await;
                            Some((
                                Ok::<Bytes, std::io::Error>(Bytes::from(text)),
                                (chunks, guard, hold),
                            ))
                        }
                        None if hold => {
                            std::future::pending::<()>().await;
                            None
                        }
                        None => None,
                    }
                },
            );
            Response::builder()
                .status(200)
                .header("Content-Type", "text/xml; charset=utf-8")
                .body(Body::from_stream(chunks))
                .unwrap()
        }
    }
}

// ----- reply fixtures -----

/// A SOAP envelope around `body`, as Exchange 2019 writes it.
pub fn envelope(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header><h:ServerVersionInfo MajorVersion="15" MinorVersion="2" MajorBuildNumber="1544" MinorBuildNumber="4" Version="V2018_01_08" xmlns:h="http://schemas.microsoft.com/exchange/services/2006/types" xmlns="http://schemas.microsoft.com/exchange/services/2006/types" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/></s:Header><s:Body>{body}</s:Body></s:Envelope>"#
    )
}

/// A successful SyncFolderItems with one created calendar item.
pub fn sync_ok(state: &str) -> String {
    envelope(&format!(
        r#"<m:SyncFolderItemsResponse {NS}><m:ResponseMessages><m:SyncFolderItemsResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:SyncState>{state}</m:SyncState><m:IncludesLastItemInRange>true</m:IncludesLastItemInRange><m:Changes><t:Create><t:CalendarItem><t:ItemId Id="AAMkAGI1" ChangeKey="DwAAABYA"/></t:CalendarItem></t:Create></m:Changes></m:SyncFolderItemsResponseMessage></m:ResponseMessages></m:SyncFolderItemsResponse>"#
    ))
}

/// The in-band throttle (the thunderbird/ews-rs Exchange Online sample).
pub fn sync_busy_in_band(back_off_ms: u64) -> String {
    envelope(&format!(
        r#"<m:SyncFolderItemsResponse {NS}><m:ResponseMessages><m:SyncFolderItemsResponseMessage ResponseClass="Error"><m:MessageText>The server cannot service this request right now. Try again later., This operation exceeds the throttling budget for policy part 'ConcurrentSyncCalls', policy value '5',  Budget type: 'Ews'.  Suggested backoff time {back_off_ms} ms.</m:MessageText><m:ResponseCode>ErrorServerBusy</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey><m:MessageXml><t:Value Name="BackOffMilliseconds">{back_off_ms}</t:Value></m:MessageXml><m:SyncState/><m:IncludesLastItemInRange>true</m:IncludesLastItemInRange></m:SyncFolderItemsResponseMessage></m:ResponseMessages></m:SyncFolderItemsResponse>"#
    ))
}

/// The SOAP fault throttle (HTTP 500).
pub fn busy_fault(back_off_ms: u64) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode xmlns:a="http://schemas.microsoft.com/exchange/services/2006/types">a:ErrorServerBusy</faultcode><faultstring xml:lang="en-US">The server cannot service this request right now. Try again later.</faultstring><detail><e:ResponseCode xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">ErrorServerBusy</e:ResponseCode><e:Message xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">The server cannot service this request right now. Try again later.</e:Message><t:MessageXml xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><t:Value Name="BackOffMilliseconds">{back_off_ms}</t:Value></t:MessageXml></detail></s:Fault></s:Body></s:Envelope>"#
    )
}

/// A SOAP fault with `code` (HTTP 500).
pub fn fault(code: &str, text: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode xmlns:a="http://schemas.microsoft.com/exchange/services/2006/types">a:{code}</faultcode><faultstring xml:lang="en-US">{text}</faultstring><detail><e:ResponseCode xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">{code}</e:ResponseCode><e:Message xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">{text}</e:Message></detail></s:Fault></s:Body></s:Envelope>"#
    )
}

/// ASP.NET's error page that IIS serves with a 500 when EWS itself crashed.
pub const ASPNET_ERROR_PAGE: &str = "<html><head><title>Runtime Error</title></head><body><h1>Server Error in '/EWS' Application.<hr width=100% size=1 color=silver></h1><h2><i>Runtime Error</i></h2></body></html>";

/// A successful Subscribe (a pull subscription also has a watermark).
pub fn subscribe_ok(id: &str, watermark: Option<&str>) -> String {
    let watermark = watermark
        .map(|w| format!("<m:Watermark>{w}</m:Watermark>"))
        .unwrap_or_default();
    envelope(&format!(
        r#"<m:SubscribeResponse {NS}><m:ResponseMessages><m:SubscribeResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:SubscriptionId>{id}</m:SubscriptionId>{watermark}</m:SubscribeResponseMessage></m:ResponseMessages></m:SubscribeResponse>"#
    ))
}

/// A response message with an error `code` for `operation` (`Subscribe`, `GetEvents`, …).
pub fn message_error(operation: &str, code: &str, text: &str) -> String {
    envelope(&format!(
        r#"<m:{operation}Response {NS}><m:ResponseMessages><m:{operation}ResponseMessage ResponseClass="Error"><m:MessageText>{text}</m:MessageText><m:ResponseCode>{code}</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey></m:{operation}ResponseMessage></m:ResponseMessages></m:{operation}Response>"#
    ))
}

/// One event element (`CreatedEvent`, …) on an item.
pub fn item_event(kind: &str, item: &str, watermark: Option<&str>) -> String {
    let watermark = watermark
        .map(|w| format!("<t:Watermark>{w}</t:Watermark>"))
        .unwrap_or_default();
    format!(
        r#"<t:{kind}>{watermark}<t:TimeStamp>2026-03-02T09:31:29Z</t:TimeStamp><t:ItemId Id="{item}" ChangeKey="CQAAAA=="/><t:ParentFolderId Id="AQMkADAwATM0MDAAMS1" ChangeKey="AQAAAA=="/></t:{kind}>"#
    )
}

/// One GetStreamingEvents document: `events` of subscription `sub` (none: a keep-alive), and
/// whether the server closes the connection with it.
pub fn streaming_document(sub: &str, events: &[String], closed: bool) -> String {
    let notifications = if events.is_empty() {
        String::new()
    } else {
        format!(
            "<m:Notifications><m:Notification><t:SubscriptionId>{sub}</t:SubscriptionId>{}</m:Notification></m:Notifications>",
            events.concat()
        )
    };
    let status = if closed { "Closed" } else { "OK" };
    envelope(&format!(
        r#"<m:GetStreamingEventsResponse {NS}><m:ResponseMessages><m:GetStreamingEventsResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>{notifications}<m:ConnectionStatus>{status}</m:ConnectionStatus></m:GetStreamingEventsResponseMessage></m:ResponseMessages></m:GetStreamingEventsResponse>"#
    ))
}

/// The GetStreamingEvents error document for a lost subscription.
pub fn streaming_error_document(code: &str) -> String {
    envelope(&format!(
        r#"<m:GetStreamingEventsResponse {NS}><m:ResponseMessages><m:GetStreamingEventsResponseMessage ResponseClass="Error"><m:MessageText>The specified subscription was not found.</m:MessageText><m:ResponseCode>{code}</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey><m:ConnectionStatus>Closed</m:ConnectionStatus></m:GetStreamingEventsResponseMessage></m:ResponseMessages></m:GetStreamingEventsResponse>"#
    ))
}

/// A GetEvents (pull) reply with `events`.
pub fn get_events_ok(sub: &str, previous: &str, events: &[String]) -> String {
    envelope(&format!(
        r#"<m:GetEventsResponse {NS}><m:ResponseMessages><m:GetEventsResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Notification><t:SubscriptionId>{sub}</t:SubscriptionId><t:PreviousWatermark>{previous}</t:PreviousWatermark><t:MoreEvents>false</t:MoreEvents>{}</m:Notification></m:GetEventsResponseMessage></m:ResponseMessages></m:GetEventsResponse>"#,
        events.concat()
    ))
}

/// A GetItem reply: per requested id, an ordinary message or (for ids in `missing`)
/// `ErrorItemNotFound`.
pub fn get_items_reply(ids: &[String], missing: &[&str]) -> String {
    let mut messages = String::new();
    for id in ids {
        if missing.contains(&id.as_str()) {
            messages.push_str(r#"<m:GetItemResponseMessage ResponseClass="Error"><m:MessageText>The specified object was not found in the store.</m:MessageText><m:ResponseCode>ErrorItemNotFound</m:ResponseCode><m:DescriptiveLinkKey>0</m:DescriptiveLinkKey><m:Items/></m:GetItemResponseMessage>"#);
        } else {
            messages.push_str(&format!(
                r#"<m:GetItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:Items><t:Message><t:ItemId Id="{id}" ChangeKey="CQAAABYA"/><t:ItemClass>IPM.Note</t:ItemClass><t:Subject>Lunch</t:Subject></t:Message></m:Items></m:GetItemResponseMessage>"#
            ));
        }
    }
    envelope(&format!(
        r#"<m:GetItemResponse {NS}><m:ResponseMessages>{messages}</m:ResponseMessages></m:GetItemResponse>"#
    ))
}

/// The ids requested in a GetItem body, in order.
pub fn requested_ids(body: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(body).unwrap();
    doc.descendants()
        .filter(|n| n.tag_name().name() == "ItemId")
        .filter_map(|n| n.attribute("Id").map(str::to_owned))
        .collect()
}

/// A token endpoint success.
pub fn token_ok(token: &str, expires_in: u64) -> Reply {
    Reply::Http {
        status: 200,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: format!(
            r#"{{"token_type":"Bearer","expires_in":{expires_in},"ext_expires_in":{expires_in},"access_token":"{token}"}}"#
        ),
        delay: Duration::ZERO,
    }
}

/// A token endpoint refusal as Entra ID writes it.
pub fn token_error(status: u16, error: &str, description: &str) -> Reply {
    Reply::Http {
        status,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: format!(
            r#"{{"error":"{error}","error_description":"{description}","error_codes":[7000215],"timestamp":"2026-03-02 09:31:29Z","trace_id":"0d2f","correlation_id":"9b1c"}}"#
        ),
        delay: Duration::ZERO,
    }
}
