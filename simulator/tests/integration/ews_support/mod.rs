//! Shared set-up for the simulated EWS tests: a server with a resource, organizers and service
//! accounts, hand-written SOAP envelopes in the documented shapes, requests through the router
//! in-process, and namespace-aware reading of the answers.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use base64::Engine as _;
use tower::ServiceExt as _;
use vmr_core::meeting::{Body as MeetingBody, Person};
use vmr_simulator::ews::{
    ExchangeOptions, ExchangeServer, MailboxKind, MailboxSpec, SendMeeting, ServiceAccount,
};

pub const NS_SOAP: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const NS_M: &str = "http://schemas.microsoft.com/exchange/services/2006/messages";
pub const NS_T: &str = "http://schemas.microsoft.com/exchange/services/2006/types";

pub const ROOM: &str = "room@contoso.com";
pub const ROOM2: &str = "room2@contoso.com";
pub const ALICE: &str = "alice@contoso.com";
pub const BOB: &str = "bob@contoso.com";
pub const SVC: &str = "svc-vmr";
pub const SVC_PASSWORD: &str = "S3rvice!";
pub const LIMITED: &str = "svc-limited";

/// 2026-03-02T10:00:00Z (a Monday).
pub const T0: i64 = 1_772_445_600_000;
pub const HOUR: i64 = 3_600_000;
pub const DAY: i64 = 24 * HOUR;

pub fn options() -> ExchangeOptions {
    ExchangeOptions {
        accounts: vec![
            ServiceAccount {
                username: SVC.to_owned(),
                password: SVC_PASSWORD.to_owned(),
                mailbox: None,
                impersonate: vec![ROOM.to_owned(), ROOM2.to_owned(), ALICE.to_owned()],
                full_access: vec![ROOM.to_owned()],
            },
            ServiceAccount {
                username: LIMITED.to_owned(),
                password: SVC_PASSWORD.to_owned(),
                mailbox: Some(BOB.to_owned()),
                impersonate: vec![ROOM2.to_owned()],
                full_access: vec![],
            },
        ],
        mailboxes: vec![
            MailboxSpec {
                email: ROOM.to_owned(),
                name: "VMR Room".to_owned(),
                kind: MailboxKind::Resource,
                automate: None,
            },
            MailboxSpec {
                email: ROOM2.to_owned(),
                name: "Second Room".to_owned(),
                kind: MailboxKind::Resource,
                automate: Some(vmr_simulator::ews::AutomateProcessing::AutoUpdate),
            },
            MailboxSpec {
                email: ALICE.to_owned(),
                name: "Alice Organizer".to_owned(),
                kind: MailboxKind::User,
                automate: None,
            },
            MailboxSpec {
                email: BOB.to_owned(),
                name: "Bob Attendee".to_owned(),
                kind: MailboxKind::User,
                automate: None,
            },
        ],
        keep_alive_interval: Duration::from_millis(200),
        connection_timeout_minute: Duration::from_millis(600),
        ..ExchangeOptions::default()
    }
}

pub fn server() -> Arc<ExchangeServer> {
    Arc::new(ExchangeServer::new(options()).expect("the EWS schema compiles (libxml2 installed?)"))
}

pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A meeting from Alice to Bob and the room, HTML body.
pub fn meeting(subject: &str, start: i64) -> SendMeeting {
    SendMeeting {
        organizer: Person {
            name: "Alice Organizer".to_owned(),
            email: ALICE.to_owned(),
        },
        subject: subject.to_owned(),
        body: MeetingBody {
            html: true,
            content: format!("<html><body><p>{subject} agenda</p></body></html>"),
        },
        start,
        end: start + HOUR / 2,
        time_zone: "W. Europe Standard Time".to_owned(),
        recurrence: None,
        required: vec![BOB.to_owned()],
        optional: vec![],
        resources: vec![ROOM.to_owned()],
    }
}

/// An envelope with `soap:`/`t:`/`m:` prefixes declared on the Envelope, as exchangelib and
/// the EWS Managed API write it; `impersonate` adds the ExchangeImpersonation header.
pub fn envelope(impersonate: Option<&str>, body: &str) -> String {
    let impersonation = impersonate
        .map(|who| {
            format!(
                "<t:ExchangeImpersonation><t:ConnectingSID><t:PrimarySmtpAddress>{who}</t:PrimarySmtpAddress></t:ConnectingSID></t:ExchangeImpersonation>"
            )
        })
        .unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"
               xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"
               xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages">
  <soap:Header>
    <t:RequestServerVersion Version="Exchange2013_SP1"/>
    {impersonation}
  </soap:Header>
  <soap:Body>
    {body}
  </soap:Body>
</soap:Envelope>"#
    )
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn doc(&self) -> roxmltree::Document<'_> {
        roxmltree::Document::parse(&self.body)
            .unwrap_or_else(|e| panic!("answer is not XML ({e}):\n{}", self.body))
    }

    /// Texts of every element `{ns}name`.
    pub fn texts(&self, ns: &str, name: &str) -> Vec<String> {
        self.doc()
            .descendants()
            .filter(|n| n.has_tag_name((ns, name)))
            .map(|n| n.text().unwrap_or("").to_owned())
            .collect()
    }

    /// The `ResponseCode` of every response message.
    pub fn codes(&self) -> Vec<String> {
        self.texts(NS_M, "ResponseCode")
    }

    /// Attribute `attr` of every element `{ns}name`.
    pub fn attrs(&self, ns: &str, name: &str, attr: &str) -> Vec<String> {
        self.doc()
            .descendants()
            .filter(|n| n.has_tag_name((ns, name)))
            .filter_map(|n| n.attribute(attr).map(str::to_owned))
            .collect()
    }

    /// The fault code text (`a:ErrorXxx`).
    pub fn fault_code(&self) -> String {
        self.doc()
            .descendants()
            .filter(|n| n.tag_name().name() == "faultcode")
            .map(|n| n.text().unwrap_or("").to_owned())
            .collect()
    }
}

pub async fn post_as(server: &Arc<ExchangeServer>, auth: Option<&str>, xml: &str) -> Answer {
    let mut request = Request::post("/EWS/Exchange.asmx")
        .header("content-type", "text/xml; charset=utf-8")
        .header("host", "mail.contoso.com");
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let response = server
        .router()
        .oneshot(request.body(Body::from(xml.to_owned())).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    Answer {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).expect("utf-8 body"),
    }
}

/// As the service account.
pub async fn post(server: &Arc<ExchangeServer>, xml: &str) -> Answer {
    post_as(server, Some(&basic(SVC, SVC_PASSWORD)), xml).await
}

/// Validates the operation response element of an answer against the vendored schema.
pub fn assert_valid_response(answer: &Answer) {
    let validator = vmr_simulator::schema_validation::SchemaValidator::load(
        &vmr_simulator::schema_validation::ews_messages_xsd(),
    )
    .expect("schema loads");
    let doc = answer.doc();
    let body = doc
        .descendants()
        .find(|n| n.has_tag_name((NS_SOAP, "Body")))
        .expect("soap Body");
    let op = body
        .children()
        .find(|n| n.is_element())
        .expect("response element");
    let text = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n{}",
        &answer.body[op.range()]
    );
    if let Err(errors) = validator.validate(&text) {
        panic!("response does not validate: {errors:?}\n{text}");
    }
}

pub const ITEM_ID_SHAPE: &str = "<m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape>";

pub fn sync_request(folder: &str, mailbox: Option<&str>, state: Option<&str>, max: u32) -> String {
    let mailbox = mailbox
        .map(|m| format!("<t:Mailbox><t:EmailAddress>{m}</t:EmailAddress></t:Mailbox>"))
        .unwrap_or_default();
    let state = state
        .map(|s| format!("<m:SyncState>{s}</m:SyncState>"))
        .unwrap_or_default();
    format!(
        "<m:SyncFolderItems>{ITEM_ID_SHAPE}<m:SyncFolderId><t:DistinguishedFolderId Id=\"{folder}\">{mailbox}</t:DistinguishedFolderId></m:SyncFolderId>{state}<m:MaxChangesReturned>{max}</m:MaxChangesReturned><m:SyncScope>NormalItems</m:SyncScope></m:SyncFolderItems>"
    )
}

/// Ids of the items a SyncFolderItems answer creates, with their element names.
pub fn created(answer: &Answer) -> Vec<(String, String)> {
    let doc = answer.doc();
    doc.descendants()
        .filter(|n| n.has_tag_name((NS_T, "Create")))
        .filter_map(|c| {
            let item = c.children().find(|n| n.is_element())?;
            let id = item
                .children()
                .find(|n| n.has_tag_name((NS_T, "ItemId")))?
                .attribute("Id")?
                .to_owned();
            Some((item.tag_name().name().to_owned(), id))
        })
        .collect()
}
