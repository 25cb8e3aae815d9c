//! The simulated Exchange server's EWS side: a stateful EWS endpoint (`POST
//! /EWS/Exchange.asmx`) over an in-memory organisation of user and resource mailboxes, plus the
//! meeting flows that put things in those mailboxes (an organizer sends, updates and cancels;
//! a resource accepts, declines or removes) and a JSON control API (`/sim/exchange/…`) for
//! processes that cannot call Rust.
//!
//! - [`model`]: mailboxes, folders, items, change logs, subscriptions.
//! - [`flows`]: the meeting flows and Calendar Attendant behaviour (`AutomateProcessing`).
//! - [`soap`]: request parsing by namespace, schema validation, response writing.
//! - [`items_xml`]: items rendered in schema element order, honouring the requested shape.
//! - [`operations`]: one handler per EWS operation.
//! - [`http`]: the route, Basic authentication as IIS does it, faults, streaming bodies.
//! - [`ntlm`]: NTLMv2 per connection with Extended Protection (channel binding), as IIS.
//! - [`control`]: the JSON control routes.
//!
//! Everything follows real Exchange's wire format (reference §1), not any one client's habits:
//! clients such as exchangelib can be pointed at it.

pub mod control;
pub mod flows;
pub mod http;
pub mod items_xml;
pub mod model;
pub mod ntlm;
pub mod operations;
pub mod soap;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vmr_core::clock::SharedClock;
use vmr_core::meeting::{Body, ItemType, MyResponse, Person, UnixMs};
use vmr_core::recurrence::Recurrence;

use crate::schema_validation::{ews_messages_xsd, SchemaValidator};
pub use model::{AutomateProcessing, CalendarProcessing, FolderName, MailboxKind};

/// Which Exchange the server claims to be (`ServerVersionInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailboxVersion {
    /// Exchange Server 2016 (15.1).
    Exchange2016,
    /// Exchange Server 2019 (15.2).
    Exchange2019,
    /// Exchange Online (15.20, `V2018_01_08`).
    ExchangeOnline,
}

impl MailboxVersion {
    /// `(MajorVersion, MinorVersion, MajorBuildNumber, MinorBuildNumber, Version)`.
    pub fn server_version_info(self) -> (u32, u32, u32, u32, &'static str) {
        match self {
            MailboxVersion::Exchange2016 => (15, 1, 2507, 6, "V2017_07_11"),
            MailboxVersion::Exchange2019 => (15, 2, 1118, 7, "V2017_07_11"),
            MailboxVersion::ExchangeOnline => (15, 20, 7452, 28, "V2018_01_08"),
        }
    }
}

/// An account that may sign in to EWS, and what it may reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAccount {
    /// User name as sent in Basic auth (`svc-vmr`, `CONTOSO\svc-vmr` and `svc-vmr@contoso.com`
    /// all match an account named `svc-vmr` or `svc-vmr@contoso.com`).
    pub username: String,
    pub password: String,
    /// The account's own mailbox, if it has one.
    pub mailbox: Option<String>,
    /// Mailboxes it may impersonate (ApplicationImpersonation scope); `*` for all.
    pub impersonate: Vec<String>,
    /// Mailboxes it has full access to (delegate access with `t:Mailbox`); `*` for all.
    pub full_access: Vec<String>,
}

/// A mailbox that exists from the start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxSpec {
    pub email: String,
    pub name: String,
    pub kind: MailboxKind,
    /// `None` → `None` for resources, `AutoUpdate` for users.
    pub automate: Option<AutomateProcessing>,
}

/// Client-credentials OAuth for `Authorization: Bearer` (tokens from
/// `POST /sim/entra/{tenant}/oauth2/v2.0/token`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthApp {
    pub tenant: String,
    pub client_id: String,
    pub client_secret: String,
    /// The service account whose grants the app's tokens carry.
    pub account: String,
}

/// How the simulated Exchange is set up.
#[derive(Debug, Clone)]
pub struct ExchangeOptions {
    pub accounts: Vec<ServiceAccount>,
    pub mailboxes: Vec<MailboxSpec>,
    pub mailbox_version: MailboxVersion,
    /// Validate every request against `schemas/ews/messages.xsd` (on by default).
    pub validate_requests: bool,
    /// Interval of keep-alive envelopes on an open `GetStreamingEvents` response.
    pub keep_alive_interval: Duration,
    /// How long one minute of `ConnectionTimeout` lasts (tests shorten it).
    pub connection_timeout_minute: Duration,
    /// The time items, GOIDs and throttling budgets read.
    pub clock: SharedClock,
    pub oauth: Option<OAuthApp>,
}

/// The service account of [`ExchangeOptions::default`].
pub const DEFAULT_SERVICE_ACCOUNT: &str = "svc-vmr@contoso.com";
/// Its password.
pub const DEFAULT_SERVICE_PASSWORD: &str = "Simulated-Passw0rd";
/// The resource mailbox of [`ExchangeOptions::default`].
pub const DEFAULT_RESOURCE: &str = "vmr-room@contoso.com";
/// The organizer mailbox of [`ExchangeOptions::default`].
pub const DEFAULT_ORGANIZER: &str = "alice@contoso.com";

impl Default for ExchangeOptions {
    /// One resource (`vmr-room@contoso.com`, AutomateProcessing None), two users (Alice, Bob)
    /// and a service account that may impersonate all three.
    fn default() -> Self {
        ExchangeOptions {
            accounts: vec![ServiceAccount {
                username: DEFAULT_SERVICE_ACCOUNT.to_owned(),
                password: DEFAULT_SERVICE_PASSWORD.to_owned(),
                mailbox: None,
                impersonate: vec![
                    DEFAULT_RESOURCE.to_owned(),
                    DEFAULT_ORGANIZER.to_owned(),
                    "bob@contoso.com".to_owned(),
                ],
                full_access: vec![DEFAULT_RESOURCE.to_owned()],
            }],
            mailboxes: vec![
                MailboxSpec {
                    email: DEFAULT_RESOURCE.to_owned(),
                    name: "VMR Room".to_owned(),
                    kind: MailboxKind::Resource,
                    automate: None,
                },
                MailboxSpec {
                    email: DEFAULT_ORGANIZER.to_owned(),
                    name: "Alice Organizer".to_owned(),
                    kind: MailboxKind::User,
                    automate: None,
                },
                MailboxSpec {
                    email: "bob@contoso.com".to_owned(),
                    name: "Bob Attendee".to_owned(),
                    kind: MailboxKind::User,
                    automate: None,
                },
            ],
            mailbox_version: MailboxVersion::Exchange2019,
            validate_requests: true,
            keep_alive_interval: Duration::from_secs(30),
            connection_timeout_minute: Duration::from_secs(60),
            clock: vmr_core::clock::system(),
            oauth: None,
        }
    }
}

/// What an organizer sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMeeting {
    pub organizer: Person,
    pub subject: String,
    pub body: Body,
    pub start: UnixMs,
    pub end: UnixMs,
    /// Windows time zone id (e.g. `W. Europe Standard Time`).
    pub time_zone: String,
    #[serde(default)]
    pub recurrence: Option<Recurrence>,
    #[serde(default)]
    pub required: Vec<String>,
    #[serde(default)]
    pub optional: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
}

/// What an organizer changes in a meeting; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingUpdate {
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub body: Option<Body>,
    #[serde(default)]
    pub start: Option<UnixMs>,
    #[serde(default)]
    pub end: Option<UnixMs>,
    /// `Some(None)` turns a series into a single meeting.
    #[serde(default)]
    pub recurrence: Option<Option<Recurrence>>,
}

/// Why a meeting flow could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    #[error("no mailbox {0} in the simulated Exchange")]
    UnknownMailbox(String),
    #[error("no meeting with UID {0}")]
    UnknownMeeting(String),
    #[error("meeting {0} was cancelled")]
    Cancelled(String),
    #[error("meeting {0} is not a recurring series")]
    NotRecurring(String),
    #[error("meeting {uid} has no occurrence starting at {original_start} ms")]
    NoSuchOccurrence { uid: String, original_start: UnixMs },
    #[error("invalid meeting: {0}")]
    Invalid(String),
}

/// One message in a mailbox folder, for inspection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSummary {
    pub item_class: String,
    pub subject: String,
    pub body: Body,
    pub from: Option<Person>,
    /// The meeting's UID for meeting messages and calendar items.
    pub uid: Option<String>,
    pub received: UnixMs,
}

/// One calendar item, for inspection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarSummary {
    pub uid: String,
    pub subject: String,
    pub start: UnixMs,
    pub end: UnixMs,
    pub my_response: MyResponse,
    pub is_cancelled: bool,
    pub item_type: ItemType,
}

/// A fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// HTTP 500 SOAP Fault `ErrorServerBusy` with `BackOffMilliseconds`.
    ServerBusyFault { back_off_ms: u64 },
    /// HTTP 200 with `ResponseClass="Error"` `ErrorServerBusy` in the response message.
    ServerBusyInBand { back_off_ms: u64 },
    /// HTTP 503 from IIS.
    Http503,
    /// Answer normally after a delay.
    Slow { delay_ms: u64 },
    /// HTTP 200 with a cut-off XML body.
    Malformed,
    /// HTTP 401 although the credentials are good (EWS sometimes throttles this way).
    Unauthorized,
}

impl Fault {
    /// A short name for the request log.
    pub fn name(self) -> &'static str {
        match self {
            Fault::ServerBusyFault { .. } => "ServerBusyFault",
            Fault::ServerBusyInBand { .. } => "ServerBusyInBand",
            Fault::Http503 => "Http503",
            Fault::Slow { .. } => "Slow",
            Fault::Malformed => "Malformed",
            Fault::Unauthorized => "Unauthorized",
        }
    }
}

/// Applies `fault` to the next `count` requests for `operation` (any operation when `None`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    pub fault: Fault,
    #[serde(default)]
    pub operation: Option<String>,
    pub count: u32,
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Milliseconds since the server started (monotonic).
    pub at_ms: u64,
    /// The operation element's local name (`-` when the request could not be read).
    pub operation: String,
    /// HTTP status answered.
    pub status: u16,
    /// The fault answered (injected fault name or the SOAP fault's response code).
    pub fault: Option<String>,
    /// Arrived while a ServerBusy back-off was still running.
    pub early: bool,
    /// The impersonated mailbox.
    pub impersonated: Option<String>,
}

/// Why the server could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot load the EWS schema for request validation: {0}")]
    Schema(String),
}

/// A running ServerBusy back-off.
#[derive(Debug, Clone, Copy)]
struct Throttle {
    until: UnixMs,
    fault: Fault,
}

/// The simulated Exchange server (EWS side).
pub struct ExchangeServer {
    store: Mutex<model::Store>,
    accounts: Vec<ServiceAccount>,
    version: Mutex<MailboxVersion>,
    faults: Mutex<Vec<FaultRule>>,
    throttle: Mutex<Option<Throttle>>,
    log: Mutex<Vec<RequestRecord>>,
    started: Instant,
    validator: Option<SchemaValidator>,
    keep_alive_interval: Duration,
    connection_timeout_minute: Duration,
    clock: SharedClock,
    oauth: Option<OAuthApp>,
    tokens: Mutex<Vec<(String, UnixMs)>>,
    ntlm: ntlm::NtlmServer,
}

impl std::fmt::Debug for ExchangeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeServer").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ExchangeServer {
    /// Builds the server: mailboxes from `options`, the schema compiled when validation is on.
    pub fn new(options: ExchangeOptions) -> Result<ExchangeServer, ServerError> {
        let validator = if options.validate_requests {
            Some(
                SchemaValidator::load(&ews_messages_xsd())
                    .map_err(|e| ServerError::Schema(e.to_string()))?,
            )
        } else {
            None
        };
        let mut store = model::Store::default();
        for spec in &options.mailboxes {
            let automate = spec.automate.unwrap_or(match spec.kind {
                MailboxKind::Resource => AutomateProcessing::None,
                MailboxKind::User => AutomateProcessing::AutoUpdate,
            });
            store.add_mailbox(&spec.email, &spec.name, spec.kind, automate);
        }
        Ok(ExchangeServer {
            store: Mutex::new(store),
            accounts: options.accounts,
            version: Mutex::new(options.mailbox_version),
            faults: Mutex::new(Vec::new()),
            throttle: Mutex::new(None),
            log: Mutex::new(Vec::new()),
            started: Instant::now(),
            validator,
            keep_alive_interval: options.keep_alive_interval,
            connection_timeout_minute: options.connection_timeout_minute,
            clock: options.clock,
            oauth: options.oauth,
            tokens: Mutex::new(Vec::new()),
            ntlm: ntlm::NtlmServer::default(),
        })
    }

    pub(crate) fn store(&self) -> MutexGuard<'_, model::Store> {
        lock(&self.store)
    }

    pub(crate) fn now(&self) -> UnixMs {
        self.clock.now_unix_ms()
    }

    /// The time the server's clock reads (Unix ms).
    pub fn now_unix_ms(&self) -> UnixMs {
        self.clock.now_unix_ms()
    }

    /// Adds a mailbox (or changes an existing one's name, kind and processing).
    pub fn add_mailbox(&self, email: &str, name: &str, kind: MailboxKind) {
        let automate = match kind {
            MailboxKind::Resource => AutomateProcessing::None,
            MailboxKind::User => AutomateProcessing::AutoUpdate,
        };
        self.store().add_mailbox(email, name, kind, automate);
    }

    /// Applies `change` to the settings of mailbox `email`.
    fn change_mailbox(
        &self,
        email: &str,
        change: impl FnOnce(&mut model::MailboxState),
    ) -> Result<(), FlowError> {
        let email = model::normalize_email(email);
        let mut store = self.store();
        let mailbox = store
            .mailboxes
            .get_mut(&email)
            .ok_or(FlowError::UnknownMailbox(email.clone()))?;
        change(mailbox);
        Ok(())
    }

    /// Sets a mailbox's `AutomateProcessing`.
    pub fn set_automate_processing(
        &self,
        email: &str,
        automate: AutomateProcessing,
    ) -> Result<(), FlowError> {
        self.change_mailbox(email, |mailbox| mailbox.automate = automate)
    }

    /// Sets a mailbox's `DeleteComments`, `DeleteSubject` and `AddOrganizerToSubject`
    /// (applied by the Calendar Attendant, so only with `AutomateProcessing` AutoUpdate).
    pub fn set_calendar_processing(
        &self,
        email: &str,
        processing: CalendarProcessing,
    ) -> Result<(), FlowError> {
        self.change_mailbox(email, |mailbox| mailbox.processing = processing)
    }

    /// Whether `email` is a resource mailbox of this organisation.
    pub fn is_resource(&self, email: &str) -> bool {
        self.store()
            .mailboxes
            .get(&model::normalize_email(email))
            .is_some_and(|m| m.kind == MailboxKind::Resource)
    }

    /// Switches the `ServerVersionInfo` the server answers with.
    pub fn set_mailbox_version(&self, version: MailboxVersion) {
        *lock(&self.version) = version;
    }

    /// The version currently claimed.
    pub fn mailbox_version(&self) -> MailboxVersion {
        *lock(&self.version)
    }

    /// Adds a fault rule (rules are consumed in the order added).
    pub fn inject(&self, rule: FaultRule) {
        lock(&self.faults).push(rule);
    }

    /// Drops every pending fault rule and any running back-off.
    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
        *lock(&self.throttle) = None;
    }

    /// Every EWS request so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.log).clone()
    }

    pub(crate) fn record(&self, record: RequestRecord) {
        lock(&self.log).push(record);
    }

    pub(crate) fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Takes the first rule matching `operation`, consuming one of its uses.
    pub(crate) fn take_fault(&self, operation: &str) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let index = faults.iter().position(|rule| {
            rule.count > 0
                && rule
                    .operation
                    .as_deref()
                    .is_none_or(|op| op.eq_ignore_ascii_case(operation))
        })?;
        let rule = &mut faults[index];
        rule.count -= 1;
        let fault = rule.fault;
        if rule.count == 0 {
            faults.remove(index);
        }
        Some(fault)
    }

    /// A running back-off: the fault to answer again and the milliseconds left.
    pub(crate) fn running_back_off(&self) -> Option<(Fault, u64)> {
        let now = self.now();
        let mut throttle = lock(&self.throttle);
        match *throttle {
            Some(t) if t.until > now => Some((t.fault, u64::try_from(t.until - now).unwrap_or(1))),
            Some(_) => {
                *throttle = None;
                None
            }
            None => None,
        }
    }

    pub(crate) fn start_back_off(&self, fault: Fault, back_off_ms: u64) {
        let until = self
            .now()
            .saturating_add(i64::try_from(back_off_ms).unwrap_or(i64::MAX));
        *lock(&self.throttle) = Some(Throttle { until, fault });
    }

    pub(crate) fn accounts(&self) -> &[ServiceAccount] {
        &self.accounts
    }

    pub(crate) fn validator(&self) -> Option<&SchemaValidator> {
        self.validator.as_ref()
    }

    pub(crate) fn keep_alive_interval(&self) -> Duration {
        self.keep_alive_interval
    }

    pub(crate) fn connection_timeout_minute(&self) -> Duration {
        self.connection_timeout_minute
    }

    pub(crate) fn oauth(&self) -> Option<&OAuthApp> {
        self.oauth.as_ref()
    }

    pub(crate) fn remember_token(&self, token: String, expires: UnixMs) {
        lock(&self.tokens).push((token, expires));
    }

    pub(crate) fn token_valid(&self, token: &str) -> bool {
        let now = self.now();
        lock(&self.tokens)
            .iter()
            .any(|(t, expires)| t == token && *expires > now)
    }

    /// Windows authentication (NTLM, Extended Protection, the Basic switch).
    pub fn ntlm(&self) -> &ntlm::NtlmServer {
        &self.ntlm
    }

    /// The router: the EWS endpoint and the JSON control routes.
    pub fn router(self: &std::sync::Arc<Self>) -> axum::Router {
        http::router(self.clone()).merge(control::router(self.clone()))
    }
}
