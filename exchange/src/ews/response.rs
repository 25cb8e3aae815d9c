//! Reading EWS replies: the SOAP envelope and its faults, the per-message `ResponseClass` /
//! `ResponseCode` of every `*ResponseMessage`, and each operation's payload, into the
//! backend-neutral types of [`crate::mailbox`].
//!
//! Two layers can fail, and both are [`EwsError`]s: a SOAP `Fault` (HTTP 500; impersonation,
//! schema, server-wide throttling) and a response message with `ResponseClass="Error"` inside
//! a 200 reply (a batch may mix Success, Warning and Error). Throttling comes in both shapes
//! and carries `BackOffMilliseconds` in `MessageXml` — in the types namespace inside a fault's
//! `detail`, in the messages namespace inside a response message; both are read.
//!
//! Everything is matched by namespace and local name; unknown elements are ignored.

use std::time::Duration;

use crate::ews::items::read_item;
use crate::mailbox::{Change, Fetched, ItemRef, MailboxError, SyncBatch};
use crate::xml::{parse, Element, NS_ERRORS, NS_MESSAGES, NS_SOAP, NS_TYPES};

/// How long to back off after `ErrorServerBusy` when the server does not say
/// (`BackOffMilliseconds` missing): 30 seconds.
pub const DEFAULT_BUSY_BACK_OFF: Duration = Duration::from_secs(30);

/// A failure reported by the server, or a reply that could not be understood.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EwsError {
    /// SOAP Fault (HTTP 500 body): faultcode local part (e.g. "ErrorServerBusy"), message,
    /// BackOffMilliseconds if present (t:MessageXml/t:Value Name="BackOffMilliseconds").
    #[error("SOAP fault {code}: {message}")]
    Fault {
        code: String,
        message: String,
        back_off: Option<Duration>,
    },
    /// A ResponseMessage with ResponseClass="Error" (in-band), including in-band
    /// ErrorServerBusy with m:MessageXml back-off.
    #[error("EWS error {code}: {message}")]
    Response {
        code: String,
        message: String,
        back_off: Option<Duration>,
    },
    /// Not XML, not a SOAP envelope, or missing what the operation must contain: say what.
    #[error("malformed EWS reply: {0}")]
    Malformed(String),
}

impl EwsError {
    /// The response code (`ErrorServerBusy`, …), `None` for [`EwsError::Malformed`].
    pub fn code(&self) -> Option<&str> {
        match self {
            EwsError::Fault { code, .. } | EwsError::Response { code, .. } => Some(code),
            EwsError::Malformed(_) => None,
        }
    }

    /// What the worker should do about it:
    ///
    /// * `ErrorServerBusy` → [`MailboxError::Throttled`] for the server's back-off, or
    ///   [`DEFAULT_BUSY_BACK_OFF`] (30 s) when it gave none; `ErrorInternalServerError` /
    ///   `ErrorInternalServerTransientError` *with* a back-off (the docs' "200 with
    ///   ErrorInternalServerError and an inner ErrorServerBusy") → Throttled too;
    /// * `ErrorInvalidSyncStateData`, `ErrorSyncFolderNotFound` → InvalidSyncState;
    /// * `ErrorItemNotFound` → NotFound;
    /// * `ErrorImpersonateUserDenied`, `ErrorAccessDenied`, `ErrorNonExistentMailbox`,
    ///   `ErrorInvalidExchangeImpersonationHeaderData` → Denied;
    /// * `ErrorMailboxStoreUnavailable`, `ErrorMailboxMoveInProgress`,
    ///   `ErrorInternalServerError`, `ErrorInternalServerTransientError`, `ErrorTimeoutExpired`,
    ///   `ErrorTooManyObjectsOpened`, `ErrorConnectionFailed`, and any malformed reply →
    ///   Transient;
    /// * anything else → Refused with the code and text.
    pub fn into_mailbox_error(self) -> MailboxError {
        let (code, message, back_off) = match self {
            EwsError::Malformed(what) => {
                return MailboxError::Transient(format!("malformed EWS reply: {what}"))
            }
            EwsError::Fault {
                code,
                message,
                back_off,
            }
            | EwsError::Response {
                code,
                message,
                back_off,
            } => (code, message, back_off),
        };
        let described = || format!("{code}: {message}");
        match code.as_str() {
            "ErrorServerBusy" => MailboxError::Throttled(back_off.unwrap_or(DEFAULT_BUSY_BACK_OFF)),
            "ErrorInternalServerError" | "ErrorInternalServerTransientError"
                if back_off.is_some() =>
            {
                MailboxError::Throttled(back_off.unwrap_or(DEFAULT_BUSY_BACK_OFF))
            }
            "ErrorInvalidSyncStateData" | "ErrorSyncFolderNotFound" => {
                MailboxError::InvalidSyncState(described())
            }
            "ErrorItemNotFound" => MailboxError::NotFound(described()),
            "ErrorImpersonateUserDenied"
            | "ErrorAccessDenied"
            | "ErrorNonExistentMailbox"
            | "ErrorInvalidExchangeImpersonationHeaderData" => MailboxError::Denied(described()),
            "ErrorMailboxStoreUnavailable"
            | "ErrorMailboxMoveInProgress"
            | "ErrorInternalServerError"
            | "ErrorInternalServerTransientError"
            | "ErrorTimeoutExpired"
            | "ErrorTooManyObjectsOpened"
            | "ErrorConnectionFailed" => MailboxError::Transient(described()),
            _ => MailboxError::Refused { code, message },
        }
    }
}

impl From<EwsError> for MailboxError {
    fn from(e: EwsError) -> Self {
        e.into_mailbox_error()
    }
}

/// Reads a SOAP reply and returns the operation response (the first element child of
/// `soap:Body`). A `soap:Fault` becomes [`EwsError::Fault`]; anything that is not a SOAP 1.1
/// envelope with a body is [`EwsError::Malformed`].
pub fn parse_envelope(body: &[u8]) -> Result<Element, EwsError> {
    let root = parse(body).map_err(|e| EwsError::Malformed(e.to_string()))?;
    if !root.is(NS_SOAP, "Envelope") {
        return Err(EwsError::Malformed(format!(
            "the root element is {{{}}}{}, not a SOAP 1.1 Envelope",
            root.ns.as_deref().unwrap_or(""),
            root.name
        )));
    }
    let Some(soap_body) = root.children.into_iter().find(|c| c.is(NS_SOAP, "Body")) else {
        return Err(EwsError::Malformed(
            "the SOAP envelope has no soap:Body".into(),
        ));
    };
    let Some(op) = soap_body.children.into_iter().next() else {
        return Err(EwsError::Malformed("the soap:Body is empty".into()));
    };
    if op.is(NS_SOAP, "Fault") {
        return Err(read_fault(&op));
    }
    Ok(op)
}

fn read_fault(fault: &Element) -> EwsError {
    let faultcode = fault
        .child_local("faultcode")
        .map(|c| c.text.trim())
        .unwrap_or("");
    let detail = fault.child_local("detail");
    let detail_code = detail
        .and_then(|d| d.child(NS_ERRORS, "ResponseCode"))
        .map(|c| c.text.trim())
        .filter(|c| !c.is_empty());
    let code = match detail_code {
        Some(code) => code.to_owned(),
        None => faultcode
            .rsplit_once(':')
            .map_or(faultcode, |(_, local)| local)
            .to_owned(),
    };
    let message = fault
        .child_local("faultstring")
        .map(|c| c.text.trim().to_owned())
        .filter(|m| !m.is_empty())
        .or_else(|| {
            detail
                .and_then(|d| d.child(NS_ERRORS, "Message"))
                .map(|m| m.text.trim().to_owned())
        })
        .unwrap_or_default();
    let back_off = detail.and_then(back_off_in);
    EwsError::Fault {
        code: if code.is_empty() {
            "SoapFault".to_owned()
        } else {
            code
        },
        message,
        back_off,
    }
}

/// `BackOffMilliseconds` from a `MessageXml` child of `parent`, in either namespace.
fn back_off_in(parent: &Element) -> Option<Duration> {
    let message_xml = parent
        .child(NS_MESSAGES, "MessageXml")
        .or_else(|| parent.child(NS_TYPES, "MessageXml"))?;
    message_xml
        .children
        .iter()
        .filter(|v| v.name == "Value" && v.attr("Name") == Some("BackOffMilliseconds"))
        .find_map(|v| v.text.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
}

/// `ResponseClass` of a response message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseClass {
    Success,
    Warning,
    Error,
}

/// One `*ResponseMessage` of an operation response.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseMessage<'a> {
    pub class: ResponseClass,
    /// `m:ResponseCode` (`NoError` when a successful message leaves it out).
    pub code: String,
    /// `m:MessageText`, empty when absent.
    pub text: String,
    /// `m:MessageXml/t:Value[@Name="BackOffMilliseconds"]`.
    pub back_off: Option<Duration>,
    /// The message element itself.
    pub element: &'a Element,
}

impl ResponseMessage<'_> {
    /// Whether the message failed.
    pub fn is_error(&self) -> bool {
        self.class == ResponseClass::Error
    }

    /// The message as an [`EwsError::Response`].
    pub fn to_error(&self) -> EwsError {
        EwsError::Response {
            code: self.code.clone(),
            message: self.text.clone(),
            back_off: self.back_off,
        }
    }
}

/// The children of `m:ResponseMessages` whose name ends in `ResponseMessage`, in order.
/// A missing or unknown `ResponseClass` counts as `Error`.
pub fn response_messages(op: &Element) -> Vec<ResponseMessage<'_>> {
    let Some(messages) = op.child(NS_MESSAGES, "ResponseMessages") else {
        return Vec::new();
    };
    messages
        .children
        .iter()
        .filter(|m| m.ns.as_deref() == Some(NS_MESSAGES) && m.name.ends_with("ResponseMessage"))
        .map(|m| {
            let class = match m.attr("ResponseClass") {
                Some("Success") => ResponseClass::Success,
                Some("Warning") => ResponseClass::Warning,
                _ => ResponseClass::Error,
            };
            let code = m
                .child_text(NS_MESSAGES, "ResponseCode")
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .unwrap_or_else(|| match class {
                    ResponseClass::Error => "ErrorUnknown".to_owned(),
                    _ => "NoError".to_owned(),
                });
            ResponseMessage {
                class,
                code,
                text: m
                    .child_text(NS_MESSAGES, "MessageText")
                    .unwrap_or("")
                    .to_owned(),
                back_off: back_off_in(m),
                element: m,
            }
        })
        .collect()
}

/// The single response message an operation on one thing returns; an error message becomes
/// its [`EwsError`].
fn single_message<'a>(op: &'a Element, what: &str) -> Result<ResponseMessage<'a>, EwsError> {
    let message = response_messages(op).into_iter().next().ok_or_else(|| {
        EwsError::Malformed(format!("{what}: no response message in <{}>", op.name))
    })?;
    if message.is_error() {
        return Err(message.to_error());
    }
    Ok(message)
}

fn item_ref(el: &Element, what: &str) -> Result<ItemRef, EwsError> {
    let item_id = el
        .child(NS_TYPES, "ItemId")
        .ok_or_else(|| EwsError::Malformed(format!("{what}: <{}> has no t:ItemId", el.name)))?;
    let id = item_id
        .attr("Id")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| EwsError::Malformed(format!("{what}: t:ItemId has no Id")))?;
    Ok(ItemRef {
        id: id.to_owned(),
        change_key: item_id.attr("ChangeKey").unwrap_or("").to_owned(),
    })
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// Reads a `SyncFolderItemsResponse`: `t:Create`/`t:Update` (of any item element) become
/// [`Change::Upsert`], `t:Delete` becomes [`Change::Delete`], `t:ReadFlagChange` and unknown
/// elements are ignored. The sync state is required; `IncludesLastItemInRange` defaults to
/// `true` when absent.
pub fn parse_sync_folder_items(op: &Element) -> Result<SyncBatch, EwsError> {
    const WHAT: &str = "SyncFolderItems";
    let message = single_message(op, WHAT)?;
    let m = message.element;
    let state = m
        .child_text(NS_MESSAGES, "SyncState")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| EwsError::Malformed(format!("{WHAT}: no m:SyncState in a success reply")))?
        .to_owned();
    let complete = match m.child_text(NS_MESSAGES, "IncludesLastItemInRange") {
        Some(text) => parse_bool(text).ok_or_else(|| {
            EwsError::Malformed(format!("{WHAT}: IncludesLastItemInRange is {text:?}"))
        })?,
        None => true,
    };
    let mut changes = Vec::new();
    if let Some(list) = m.child(NS_MESSAGES, "Changes") {
        for change in &list.children {
            if change.ns.as_deref() != Some(NS_TYPES) {
                continue;
            }
            match change.name.as_str() {
                "Create" | "Update" => {
                    let item = change.first_element().ok_or_else(|| {
                        EwsError::Malformed(format!("{WHAT}: an empty t:{}", change.name))
                    })?;
                    changes.push(Change::Upsert(item_ref(item, WHAT)?));
                }
                "Delete" => changes.push(Change::Delete {
                    id: item_ref(change, WHAT)?.id,
                }),
                _ => {}
            }
        }
    }
    Ok(SyncBatch {
        changes,
        state,
        complete,
    })
}

/// Reads a `GetItemResponse` for the `requested` items: one result per requested item, in
/// order. `ErrorItemNotFound` becomes [`Fetched::Gone`] with the requested id; other errors
/// stay errors; an item that cannot be read is [`EwsError::Malformed`] naming the field. When
/// the server returned fewer messages than items requested, the missing ones are Malformed.
pub fn parse_get_items(op: &Element, requested: &[ItemRef]) -> Vec<Result<Fetched, EwsError>> {
    let messages = response_messages(op);
    let mut results = Vec::with_capacity(requested.len().max(messages.len()));
    for (i, message) in messages.iter().enumerate() {
        let requested_id = requested.get(i).map(|r| r.id.as_str());
        if message.is_error() {
            results.push(match (message.code.as_str(), requested_id) {
                ("ErrorItemNotFound", Some(id)) => Ok(Fetched::Gone { id: id.to_owned() }),
                _ => Err(message.to_error()),
            });
            continue;
        }
        let item = message
            .element
            .child(NS_MESSAGES, "Items")
            .and_then(Element::first_element);
        results.push(match item {
            Some(item) => read_item(item).map_err(|e| {
                EwsError::Malformed(format!(
                    "GetItem: item {} ({}): {e}",
                    i + 1,
                    requested_id.unwrap_or("not requested")
                ))
            }),
            None => Err(EwsError::Malformed(format!(
                "GetItem: response message {} holds no item",
                i + 1
            ))),
        });
    }
    for missing in requested.iter().skip(messages.len()) {
        results.push(Err(EwsError::Malformed(format!(
            "GetItem: no response message for item {}",
            missing.id
        ))));
    }
    results
}

/// A subscription the server created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub id: String,
    /// Pull subscriptions start from this watermark; streaming ones have none.
    pub watermark: Option<String>,
}

/// Reads a `SubscribeResponse`.
pub fn parse_subscribe(op: &Element) -> Result<Subscription, EwsError> {
    let message = single_message(op, "Subscribe")?;
    let id = message
        .element
        .child_text(NS_MESSAGES, "SubscriptionId")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| EwsError::Malformed("Subscribe: no m:SubscriptionId".into()))?;
    Ok(Subscription {
        id: id.to_owned(),
        watermark: message
            .element
            .child_text(NS_MESSAGES, "Watermark")
            .filter(|w| !w.is_empty())
            .map(str::to_owned),
    })
}

/// One `m:Notification`: the events of one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub subscription_id: String,
    pub events: Vec<Event>,
    /// `t:MoreEvents` (pull): call `GetEvents` again at once.
    pub more_events: bool,
    /// The last event's watermark, else `t:PreviousWatermark`: where to continue from.
    pub last_watermark: Option<String>,
}

/// One event of a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The element name: `CreatedEvent`, `ModifiedEvent`, … `StatusEvent`.
    pub kind: String,
    /// `t:ItemId/@Id` for an item event.
    pub item_id: Option<String>,
    /// `t:FolderId/@Id` for a folder event, else `t:ParentFolderId/@Id` (the folder the item
    /// is in).
    pub folder_id: Option<String>,
    pub watermark: Option<String>,
}

/// One parsed `GetStreamingEventsResponse` document.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamingResponse {
    pub notifications: Vec<Notification>,
    /// `m:ConnectionStatus` is `Closed`: the server ended the connection.
    pub closed: bool,
    /// Error messages (an expired subscription, throttling…).
    pub errors: Vec<EwsError>,
}

fn read_notification(n: &Element) -> Notification {
    let mut events = Vec::new();
    for e in &n.children {
        if e.ns.as_deref() != Some(NS_TYPES) || !e.name.ends_with("Event") {
            continue;
        }
        let id_of = |name: &str| {
            e.child(NS_TYPES, name)
                .and_then(|c| c.attr("Id"))
                .map(str::to_owned)
        };
        events.push(Event {
            kind: e.name.clone(),
            item_id: id_of("ItemId"),
            folder_id: id_of("FolderId").or_else(|| id_of("ParentFolderId")),
            watermark: e
                .child_text(NS_TYPES, "Watermark")
                .filter(|w| !w.is_empty())
                .map(str::to_owned),
        });
    }
    let last_watermark = events
        .iter()
        .rev()
        .find_map(|e| e.watermark.clone())
        .or_else(|| {
            n.child_text(NS_TYPES, "PreviousWatermark")
                .filter(|w| !w.is_empty())
                .map(str::to_owned)
        });
    Notification {
        subscription_id: n
            .child_text(NS_TYPES, "SubscriptionId")
            .unwrap_or("")
            .to_owned(),
        events,
        more_events: n
            .child_text(NS_TYPES, "MoreEvents")
            .and_then(parse_bool)
            .unwrap_or(false),
        last_watermark,
    }
}

/// Reads one `GetStreamingEventsResponse` document (see [`split_streaming_documents`]).
pub fn parse_get_streaming_events(op: &Element) -> StreamingResponse {
    let mut response = StreamingResponse {
        notifications: Vec::new(),
        closed: false,
        errors: Vec::new(),
    };
    let messages = response_messages(op);
    if messages.is_empty() {
        response.errors.push(EwsError::Malformed(format!(
            "GetStreamingEvents: no response message in <{}>",
            op.name
        )));
    }
    for message in messages {
        if message.element.child_text(NS_MESSAGES, "ConnectionStatus") == Some("Closed") {
            response.closed = true;
        }
        if message.is_error() {
            response.errors.push(message.to_error());
            continue;
        }
        if let Some(list) = message.element.child(NS_MESSAGES, "Notifications") {
            response.notifications.extend(
                list.children_named(NS_MESSAGES, "Notification")
                    .map(read_notification),
            );
        }
    }
    response
}

/// Reads a `GetEventsResponse` (pull).
pub fn parse_get_events(op: &Element) -> Result<Notification, EwsError> {
    let message = single_message(op, "GetEvents")?;
    message
        .element
        .child(NS_MESSAGES, "Notification")
        .map(read_notification)
        .ok_or_else(|| EwsError::Malformed("GetEvents: no m:Notification".into()))
}

/// Reads a `CreateItemResponse` (a meeting response): every message must succeed.
pub fn parse_create_item(op: &Element) -> Result<(), EwsError> {
    let messages = response_messages(op);
    if messages.is_empty() {
        return Err(EwsError::Malformed(
            "CreateItem: no response message".into(),
        ));
    }
    match messages.iter().find(|m| m.is_error()) {
        Some(error) => Err(error.to_error()),
        None => Ok(()),
    }
}

/// Reads a `CreateItemResponse` for `expected` items created at once: one result per item,
/// in order (a missing message is reported as malformed rather than taken for success).
pub fn parse_create_items(op: &Element, expected: usize) -> Vec<Result<(), EwsError>> {
    let messages = response_messages(op);
    (0..expected)
        .map(|i| match messages.get(i) {
            Some(m) if m.is_error() => Err(m.to_error()),
            Some(_) => Ok(()),
            None => Err(EwsError::Malformed(format!(
                "CreateItem: {} response messages for {expected} items",
                messages.len()
            ))),
        })
        .collect()
}

/// Reads an `UpdateItemResponse`: the item's id and new change key.
pub fn parse_update_item(op: &Element) -> Result<ItemRef, EwsError> {
    let message = single_message(op, "UpdateItem")?;
    let item = message
        .element
        .child(NS_MESSAGES, "Items")
        .and_then(Element::first_element)
        .ok_or_else(|| EwsError::Malformed("UpdateItem: no item in m:Items".into()))?;
    item_ref(item, "UpdateItem")
}

/// What `GetFolder` says about one folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderInfo {
    pub id: String,
    pub total_count: Option<u64>,
}

/// Reads a `GetFolderResponse`: one result per requested folder, in order.
pub fn parse_get_folder(op: &Element) -> Vec<Result<FolderInfo, EwsError>> {
    response_messages(op)
        .into_iter()
        .map(|message| {
            if message.is_error() {
                return Err(message.to_error());
            }
            let folder = message
                .element
                .child(NS_MESSAGES, "Folders")
                .and_then(Element::first_element)
                .ok_or_else(|| EwsError::Malformed("GetFolder: no folder in m:Folders".into()))?;
            let id = folder
                .child(NS_TYPES, "FolderId")
                .and_then(|f| f.attr("Id"))
                .ok_or_else(|| {
                    EwsError::Malformed(format!("GetFolder: <{}> has no t:FolderId", folder.name))
                })?;
            Ok(FolderInfo {
                id: id.to_owned(),
                total_count: folder
                    .child_text(NS_TYPES, "TotalCount")
                    .and_then(|t| t.parse().ok()),
            })
        })
        .collect()
}

/// Reads a `FindItemResponse`: the items of `m:RootFolder/t:Items` and whether the view
/// includes the last item (`IncludesLastItemInRange`, `true` when absent).
pub fn parse_find_items(op: &Element) -> Result<(Vec<Fetched>, bool), EwsError> {
    let message = single_message(op, "FindItem")?;
    let root = message
        .element
        .child(NS_MESSAGES, "RootFolder")
        .ok_or_else(|| EwsError::Malformed("FindItem: no m:RootFolder".into()))?;
    let includes_last = root
        .attr("IncludesLastItemInRange")
        .and_then(parse_bool)
        .unwrap_or(true);
    let mut items = Vec::new();
    if let Some(list) = root.child(NS_TYPES, "Items") {
        for (i, item) in list.children.iter().enumerate() {
            items.push(
                read_item(item)
                    .map_err(|e| EwsError::Malformed(format!("FindItem: item {}: {e}", i + 1)))?,
            );
        }
    }
    Ok((items, includes_last))
}

/// Splits a streaming HTTP body into complete SOAP documents: drains every complete
/// `…</X:Envelope>` (any prefix) from `buf`, leaving a partial document in place. Leading
/// whitespace between documents is dropped.
pub fn split_streaming_documents(buf: &mut Vec<u8>) -> Vec<Vec<u8>> {
    let mut documents = Vec::new();
    let mut consumed = 0;
    let mut search = 0;
    while let Some(end) = find_envelope_end(buf, search) {
        let document = &buf[consumed..end];
        let start = document
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(document.len());
        documents.push(document[start..].to_vec());
        consumed = end;
        search = end;
    }
    buf.drain(..consumed);
    documents
}

/// The index just past the first `</Envelope>` / `</prefix:Envelope >` at or after `from`.
fn find_envelope_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 1 < buf.len() {
        let rel = buf[i..].windows(2).position(|w| w == b"</")?;
        let name_start = i + rel + 2;
        let name_len = buf[name_start..]
            .iter()
            .position(|b| b.is_ascii_whitespace() || *b == b'>')
            .unwrap_or(buf.len() - name_start);
        let name = &buf[name_start..name_start + name_len];
        let local = match name.iter().rposition(|b| *b == b':') {
            Some(colon) => &name[colon + 1..],
            None => name,
        };
        if local == b"Envelope" {
            let mut j = name_start + name_len;
            while j < buf.len() && buf[j].is_ascii_whitespace() {
                j += 1;
            }
            if j < buf.len() && buf[j] == b'>' {
                return Some(j + 1);
            }
            if j >= buf.len() {
                return None;
            }
        }
        i = name_start;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_defaults_to_thirty_seconds_for_busy_without_a_hint() {
        let busy = EwsError::Response {
            code: "ErrorServerBusy".into(),
            message: "busy".into(),
            back_off: None,
        };
        assert!(matches!(
            busy.into_mailbox_error(),
            MailboxError::Throttled(d) if d == DEFAULT_BUSY_BACK_OFF
        ));
    }

    #[test]
    fn codes_map_to_what_the_worker_does() {
        let err = |code: &str| EwsError::Fault {
            code: code.into(),
            message: "m".into(),
            back_off: None,
        };
        assert!(matches!(
            err("ErrorInvalidSyncStateData").into_mailbox_error(),
            MailboxError::InvalidSyncState(_)
        ));
        assert!(matches!(
            err("ErrorSyncFolderNotFound").into_mailbox_error(),
            MailboxError::InvalidSyncState(_)
        ));
        assert!(matches!(
            err("ErrorItemNotFound").into_mailbox_error(),
            MailboxError::NotFound(_)
        ));
        for code in [
            "ErrorImpersonateUserDenied",
            "ErrorAccessDenied",
            "ErrorNonExistentMailbox",
            "ErrorInvalidExchangeImpersonationHeaderData",
        ] {
            assert!(
                matches!(err(code).into_mailbox_error(), MailboxError::Denied(_)),
                "{code}"
            );
        }
        for code in [
            "ErrorMailboxStoreUnavailable",
            "ErrorMailboxMoveInProgress",
            "ErrorInternalServerError",
            "ErrorTimeoutExpired",
            "ErrorInternalServerTransientError",
        ] {
            assert!(
                matches!(err(code).into_mailbox_error(), MailboxError::Transient(_)),
                "{code}"
            );
        }
        assert!(matches!(
            EwsError::Malformed("x".into()).into_mailbox_error(),
            MailboxError::Transient(_)
        ));
        match err("ErrorIrresolvableConflict").into_mailbox_error() {
            MailboxError::Refused { code, message } => {
                assert_eq!(code, "ErrorIrresolvableConflict");
                assert_eq!(message, "m");
            }
            other => panic!("{other:?}"),
        }
        let inner_busy = EwsError::Response {
            code: "ErrorInternalServerError".into(),
            message: "m".into(),
            back_off: Some(Duration::from_millis(1234)),
        };
        assert!(matches!(
            inner_busy.into_mailbox_error(),
            MailboxError::Throttled(d) if d == Duration::from_millis(1234)
        ));
    }

    #[test]
    fn envelope_ends_are_found_with_any_prefix() {
        let mut buf =
            b"<a:Envelope></a:Envelope >\r\n<Envelope></Envelope><s:Envelope></s:Env".to_vec();
        let docs = split_streaming_documents(&mut buf);
        assert_eq!(
            docs,
            vec![
                b"<a:Envelope></a:Envelope >".to_vec(),
                b"<Envelope></Envelope>".to_vec()
            ]
        );
        assert_eq!(buf, b"<s:Envelope></s:Env".to_vec());
        buf.extend_from_slice(b"elope>");
        let docs = split_streaming_documents(&mut buf);
        assert_eq!(docs, vec![b"<s:Envelope></s:Envelope>".to_vec()]);
        assert!(buf.is_empty());
        // A closing tag that only starts with "Envelope" does not end a document.
        let mut buf = b"<x></EnvelopeX><y></s:Envelope".to_vec();
        assert!(split_streaming_documents(&mut buf).is_empty());
        assert_eq!(buf.len(), 30);
    }
}
