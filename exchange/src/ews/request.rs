//! Every EWS request envelope the resource-mailbox backend sends, built with
//! [`XmlWriter`](crate::xml::XmlWriter) in the element order of the vendored
//! `schemas/ews/messages.xsd` (the tests validate each shape against it with `xmllint`).
//!
//! Each function returns a complete SOAP 1.1 document: the XML declaration, `soap:Envelope`
//! declaring the `soap:`, `t:` and `m:` prefixes, a `soap:Header` with
//! `t:RequestServerVersion` (and `t:ExchangeImpersonation` when impersonating), and the
//! operation in `soap:Body`. Every value passes through the writer's escaping; times are
//! written as `YYYY-MM-DDThh:mm:ssZ` (UTC).

use chrono::{DateTime, Utc};

use crate::mailbox::{Folder, ItemRef, Response};
use crate::xml::{XmlWriter, NS_MESSAGES, NS_SOAP, NS_TYPES};

/// PSETID_Meeting, the property set of the meeting-object ids.
pub const PSETID_MEETING: &str = "6ED8DA90-450B-101B-98DA-00AA003F1305";
/// PidLidCleanGlobalObjectId: the meeting's id, the same for a series and its exceptions.
pub const PROP_CLEAN_GLOBAL_OBJECT_ID: &str = "35";
/// PidLidGlobalObjectId: like the clean one, but carries the instance date of an exception.
pub const PROP_GLOBAL_OBJECT_ID: &str = "3";

/// The event types every subscription asks for.
pub const SUBSCRIBED_EVENTS: [&str; 5] = [
    "CreatedEvent",
    "ModifiedEvent",
    "DeletedEvent",
    "MovedEvent",
    "NewMailEvent",
];

/// What every request says about who is asking and for which mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// `t:RequestServerVersion/@Version`, e.g. `Exchange2013_SP1`.
    pub server_version: String,
    /// Impersonate this SMTP address (`t:ExchangeImpersonation/t:ConnectingSID/t:PrimarySmtpAddress`).
    pub impersonate: Option<String>,
    /// Delegate access: name this mailbox (`t:Mailbox/t:EmailAddress`) in every
    /// `t:DistinguishedFolderId`, as a service account without a mailbox must.
    pub folder_mailbox: Option<String>,
}

impl RequestContext {
    /// A context for `server_version` without impersonation or delegate mailbox.
    pub fn new(server_version: impl Into<String>) -> Self {
        Self {
            server_version: server_version.into(),
            impersonate: None,
            folder_mailbox: None,
        }
    }

    /// Whether the requested schema version knows `calendar:StartTimeZoneId` (introduced with
    /// Exchange 2013; `Exchange2007*` and `Exchange2010*` only know `calendar:StartTimeZone`).
    pub fn allows_start_time_zone_id(&self) -> bool {
        !(self.server_version.starts_with("Exchange2007")
            || self.server_version.starts_with("Exchange2010"))
    }
}

/// Whether [`update_item_body`] sends the updated meeting to its attendees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyUpdateSend {
    /// `SendToAllAndSaveCopy`: every attendee gets the update, a copy goes to Sent Items.
    ToAllAndSaveCopy,
    /// `SendToNone`: only the calendar item changes.
    ToNone,
}

impl BodyUpdateSend {
    fn as_str(self) -> &'static str {
        match self {
            BodyUpdateSend::ToAllAndSaveCopy => "SendToAllAndSaveCopy",
            BodyUpdateSend::ToNone => "SendToNone",
        }
    }
}

/// `SyncFolderItems`: the changes in `folder` since `state` (`None`: from the start), ids only,
/// normal items, at most `max_changes` (clamped to the schema's 1..=512).
pub fn sync_folder_items(
    ctx: &RequestContext,
    folder: Folder,
    state: Option<&str>,
    max_changes: u32,
) -> String {
    envelope(ctx, |w| {
        w.start("m:SyncFolderItems", &[]);
        w.start("m:ItemShape", &[]);
        w.leaf("t:BaseShape", &[], "IdOnly");
        w.end();
        w.start("m:SyncFolderId", &[]);
        distinguished_folder(w, ctx, folder);
        w.end();
        if let Some(state) = state.filter(|s| !s.is_empty()) {
            w.leaf("m:SyncState", &[], state);
        }
        w.leaf(
            "m:MaxChangesReturned",
            &[],
            &max_changes.clamp(1, 512).to_string(),
        );
        w.leaf("m:SyncScope", &[], "NormalItems");
        w.end();
    })
}

/// The `FieldURI`s [`get_items`] asks for (besides the extended properties). The time-zone
/// field depends on the schema version; see [`RequestContext::allows_start_time_zone_id`].
pub fn get_item_fields(ctx: &RequestContext) -> Vec<&'static str> {
    vec![
        "item:ItemClass",
        "item:Subject",
        "item:Body",
        "item:LastModifiedTime",
        "calendar:UID",
        "calendar:RecurrenceId",
        "calendar:Start",
        "calendar:End",
        "calendar:OriginalStart",
        "calendar:IsCancelled",
        "calendar:CalendarItemType",
        "calendar:MyResponseType",
        "calendar:Organizer",
        "calendar:RequiredAttendees",
        "calendar:OptionalAttendees",
        "calendar:Resources",
        "calendar:AppointmentSequenceNumber",
        "calendar:Recurrence",
        "calendar:ModifiedOccurrences",
        "calendar:DeletedOccurrences",
        if ctx.allows_start_time_zone_id() {
            "calendar:StartTimeZoneId"
        } else {
            "calendar:StartTimeZone"
        },
        "meetingRequest:MeetingRequestType",
        // A meeting cancellation has no calendar:Organizer; its sender is the organizer.
        "message:From",
        // A delegate sending on the organizer's behalf (checked against a TOK's requester).
        "message:Sender",
    ]
}

/// The `FieldURI`s [`find_calendar_view`] and [`find_by_clean_global_object_id`] ask for:
/// what `FindItem` can return (no body, attendee lists or occurrence lists).
pub const FIND_ITEM_FIELDS: [&str; 11] = [
    "item:ItemClass",
    "item:Subject",
    "item:LastModifiedTime",
    "calendar:UID",
    "calendar:RecurrenceId",
    "calendar:Start",
    "calendar:End",
    "calendar:IsCancelled",
    "calendar:CalendarItemType",
    "calendar:MyResponseType",
    "calendar:AppointmentSequenceNumber",
];

/// `GetItem` for `ids`: everything [`crate::ews::items::read_item`] reads, body as HTML.
pub fn get_items(ctx: &RequestContext, ids: &[ItemRef]) -> String {
    envelope(ctx, |w| {
        w.start("m:GetItem", &[]);
        w.start("m:ItemShape", &[]);
        w.leaf("t:BaseShape", &[], "IdOnly");
        w.leaf("t:BodyType", &[], "HTML");
        w.start("t:AdditionalProperties", &[]);
        for field in get_item_fields(ctx) {
            w.empty("t:FieldURI", &[("FieldURI", field)]);
        }
        meeting_property(w, PROP_CLEAN_GLOBAL_OBJECT_ID);
        meeting_property(w, PROP_GLOBAL_OBJECT_ID);
        w.end();
        w.end();
        w.start("m:ItemIds", &[]);
        for id in ids {
            item_id(w, "t:ItemId", id);
        }
        w.end();
        w.end();
    })
}

/// `FindItem` with a `CalendarView` of the resource's calendar from `start_ms` to `end_ms`
/// (expands occurrences), at most `max_entries` (at least 1).
pub fn find_calendar_view(
    ctx: &RequestContext,
    start_ms: i64,
    end_ms: i64,
    max_entries: u32,
) -> String {
    let max = max_entries.clamp(1, i32::MAX as u32).to_string();
    let start = ews_time(start_ms);
    let end = ews_time(end_ms);
    envelope(ctx, |w| {
        w.start("m:FindItem", &[("Traversal", "Shallow")]);
        find_item_shape(w);
        w.empty(
            "m:CalendarView",
            &[
                ("MaxEntriesReturned", &max),
                ("StartDate", &start),
                ("EndDate", &end),
            ],
        );
        w.start("m:ParentFolderIds", &[]);
        distinguished_folder(w, ctx, Folder::Calendar);
        w.end();
        w.end();
    })
}

/// `FindItem` in `folder` for the items whose CleanGlobalObjectId (PSETID_Meeting 0x23) is
/// `goid_base64` (EWS accepts no restriction on `calendar:UID`); first page of 10.
pub fn find_by_clean_global_object_id(
    ctx: &RequestContext,
    folder: Folder,
    goid_base64: &str,
) -> String {
    envelope(ctx, |w| {
        w.start("m:FindItem", &[("Traversal", "Shallow")]);
        find_item_shape(w);
        w.empty(
            "m:IndexedPageItemView",
            &[
                ("MaxEntriesReturned", "10"),
                ("Offset", "0"),
                ("BasePoint", "Beginning"),
            ],
        );
        w.start("m:Restriction", &[]);
        w.start("t:IsEqualTo", &[]);
        meeting_property(w, PROP_CLEAN_GLOBAL_OBJECT_ID);
        w.start("t:FieldURIOrConstant", &[]);
        w.empty("t:Constant", &[("Value", goid_base64)]);
        w.end();
        w.end();
        w.end();
        w.start("m:ParentFolderIds", &[]);
        distinguished_folder(w, ctx, folder);
        w.end();
        w.end();
    })
}

/// The `MessageDisposition` a reply needs: accept and decline are sent to the organizer
/// (`SendAndSaveCopy`); removing a cancelled meeting sends nothing (`SaveOnly`). One
/// `CreateItem` carries replies of one disposition only.
pub fn disposition(response: Response) -> &'static str {
    match response {
        Response::Accept | Response::Decline => "SendAndSaveCopy",
        Response::Remove => "SaveOnly",
    }
}

/// `CreateItem` answering one meeting item as the resource: `t:AcceptItem` or
/// `t:DeclineItem` with `body_html` as the reply text, or `t:RemoveItem` for a cancellation.
pub fn respond(
    ctx: &RequestContext,
    item: &ItemRef,
    response: Response,
    body_html: &str,
) -> String {
    respond_many(ctx, &[(item, response, body_html)])
}

/// `CreateItem` answering several meeting items at once (one response message per item, in
/// order). Every reply must have the same [`disposition`]; the first one's is used.
pub fn respond_many(ctx: &RequestContext, replies: &[(&ItemRef, Response, &str)]) -> String {
    let disposition = replies
        .first()
        .map_or("SendAndSaveCopy", |(_, response, _)| disposition(*response));
    envelope(ctx, |w| {
        w.start("m:CreateItem", &[("MessageDisposition", disposition)]);
        w.start("m:Items", &[]);
        for (item, response, body_html) in replies {
            let element = match response {
                Response::Accept => "t:AcceptItem",
                Response::Decline => "t:DeclineItem",
                Response::Remove => "t:RemoveItem",
            };
            w.start(element, &[]);
            if *response != Response::Remove && !body_html.is_empty() {
                w.leaf("t:Body", &[("BodyType", "HTML")], body_html);
            }
            item_id(w, "t:ReferenceItemId", item);
            w.end();
        }
        w.end();
        w.end();
    })
}

/// `UpdateItem` replacing the body of the calendar item `item` with `body_html`
/// (`ConflictResolution="AutoResolve"`), sending the update to attendees or not.
pub fn update_item_body(
    ctx: &RequestContext,
    item: &ItemRef,
    body_html: &str,
    send: BodyUpdateSend,
) -> String {
    envelope(ctx, |w| {
        w.start(
            "m:UpdateItem",
            &[
                ("MessageDisposition", "SaveOnly"),
                ("ConflictResolution", "AutoResolve"),
                ("SendMeetingInvitationsOrCancellations", send.as_str()),
            ],
        );
        w.start("m:ItemChanges", &[]);
        w.start("t:ItemChange", &[]);
        item_id(w, "t:ItemId", item);
        w.start("t:Updates", &[]);
        w.start("t:SetItemField", &[]);
        w.empty("t:FieldURI", &[("FieldURI", "item:Body")]);
        w.start("t:CalendarItem", &[]);
        w.leaf("t:Body", &[("BodyType", "HTML")], body_html);
        w.end();
        w.end();
        w.end();
        w.end();
        w.end();
        w.end();
    })
}

/// `Subscribe` with a `StreamingSubscriptionRequest` on `folders` for
/// [`SUBSCRIBED_EVENTS`].
pub fn subscribe_streaming(ctx: &RequestContext, folders: &[Folder]) -> String {
    envelope(ctx, |w| {
        w.start("m:Subscribe", &[]);
        w.start("m:StreamingSubscriptionRequest", &[]);
        subscription_folders_and_events(w, ctx, folders);
        w.end();
        w.end();
    })
}

/// `Subscribe` with a `PullSubscriptionRequest` on `folders` for [`SUBSCRIBED_EVENTS`], kept
/// alive `timeout_minutes` without `GetEvents` (clamped to the schema's 1..=1440).
pub fn subscribe_pull(ctx: &RequestContext, folders: &[Folder], timeout_minutes: u32) -> String {
    envelope(ctx, |w| {
        w.start("m:Subscribe", &[]);
        w.start("m:PullSubscriptionRequest", &[]);
        subscription_folders_and_events(w, ctx, folders);
        w.leaf(
            "t:Timeout",
            &[],
            &timeout_minutes.clamp(1, 1440).to_string(),
        );
        w.end();
        w.end();
    })
}

/// `GetStreamingEvents` on `subscription_ids`, holding the connection
/// `connection_timeout_minutes` (clamped to the schema's 1..=30).
pub fn get_streaming_events(
    ctx: &RequestContext,
    subscription_ids: &[String],
    connection_timeout_minutes: u32,
) -> String {
    envelope(ctx, |w| {
        w.start("m:GetStreamingEvents", &[]);
        w.start("m:SubscriptionIds", &[]);
        for id in subscription_ids {
            w.leaf("t:SubscriptionId", &[], id);
        }
        w.end();
        w.leaf(
            "m:ConnectionTimeout",
            &[],
            &connection_timeout_minutes.clamp(1, 30).to_string(),
        );
        w.end();
    })
}

/// `GetEvents` on a pull subscription from `watermark`.
pub fn get_events(ctx: &RequestContext, subscription_id: &str, watermark: &str) -> String {
    envelope(ctx, |w| {
        w.start("m:GetEvents", &[]);
        w.leaf("m:SubscriptionId", &[], subscription_id);
        w.leaf("m:Watermark", &[], watermark);
        w.end();
    })
}

/// `GetFolder` on `folders`: ids and `folder:TotalCount` (used by `check`).
pub fn get_folder(ctx: &RequestContext, folders: &[Folder]) -> String {
    envelope(ctx, |w| {
        w.start("m:GetFolder", &[]);
        w.start("m:FolderShape", &[]);
        w.leaf("t:BaseShape", &[], "IdOnly");
        w.start("t:AdditionalProperties", &[]);
        w.empty("t:FieldURI", &[("FieldURI", "folder:TotalCount")]);
        w.end();
        w.end();
        w.start("m:FolderIds", &[]);
        for folder in folders {
            distinguished_folder(w, ctx, *folder);
        }
        w.end();
        w.end();
    })
}

/// Unix milliseconds as an EWS UTC time, `YYYY-MM-DDThh:mm:ssZ` (milliseconds dropped).
/// Values outside years 1..=9999 (which `xs:dateTime` cannot hold in this form) are clamped.
pub fn ews_time(ms: i64) -> String {
    // 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z.
    const MIN_MS: i64 = -62_135_596_800_000;
    const MAX_MS: i64 = 253_402_300_799_000;
    let ms = ms.clamp(MIN_MS, MAX_MS);
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        None => "1970-01-01T00:00:00Z".to_owned(),
    }
}

fn envelope(ctx: &RequestContext, body: impl FnOnce(&mut XmlWriter)) -> String {
    let mut w = XmlWriter::new();
    w.start(
        "soap:Envelope",
        &[
            ("xmlns:soap", NS_SOAP),
            ("xmlns:t", NS_TYPES),
            ("xmlns:m", NS_MESSAGES),
        ],
    );
    w.start("soap:Header", &[]);
    w.empty(
        "t:RequestServerVersion",
        &[("Version", &ctx.server_version)],
    );
    if let Some(smtp) = &ctx.impersonate {
        w.start("t:ExchangeImpersonation", &[]);
        w.start("t:ConnectingSID", &[]);
        w.leaf("t:PrimarySmtpAddress", &[], smtp);
        w.end();
        w.end();
    }
    w.end();
    w.start("soap:Body", &[]);
    body(&mut w);
    w.end();
    w.end();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    out.push_str(&w.finish());
    out
}

fn distinguished_folder(w: &mut XmlWriter, ctx: &RequestContext, folder: Folder) {
    match &ctx.folder_mailbox {
        Some(mailbox) => {
            w.start("t:DistinguishedFolderId", &[("Id", folder.as_str())]);
            w.start("t:Mailbox", &[]);
            w.leaf("t:EmailAddress", &[], mailbox);
            w.end();
            w.end();
        }
        None => w.empty("t:DistinguishedFolderId", &[("Id", folder.as_str())]),
    }
}

fn item_id(w: &mut XmlWriter, tag: &str, item: &ItemRef) {
    if item.change_key.is_empty() {
        w.empty(tag, &[("Id", &item.id)]);
    } else {
        w.empty(tag, &[("Id", &item.id), ("ChangeKey", &item.change_key)]);
    }
}

fn meeting_property(w: &mut XmlWriter, property_id: &str) {
    w.empty(
        "t:ExtendedFieldURI",
        &[
            ("PropertySetId", PSETID_MEETING),
            ("PropertyId", property_id),
            ("PropertyType", "Binary"),
        ],
    );
}

fn find_item_shape(w: &mut XmlWriter) {
    w.start("m:ItemShape", &[]);
    w.leaf("t:BaseShape", &[], "IdOnly");
    w.start("t:AdditionalProperties", &[]);
    for field in FIND_ITEM_FIELDS {
        w.empty("t:FieldURI", &[("FieldURI", field)]);
    }
    meeting_property(w, PROP_CLEAN_GLOBAL_OBJECT_ID);
    w.end();
    w.end();
}

fn subscription_folders_and_events(w: &mut XmlWriter, ctx: &RequestContext, folders: &[Folder]) {
    w.start("t:FolderIds", &[]);
    for folder in folders {
        distinguished_folder(w, ctx, *folder);
    }
    w.end();
    w.start("t:EventTypes", &[]);
    for event in SUBSCRIBED_EVENTS {
        w.leaf("t:EventType", &[], event);
    }
    w.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_seconds_with_z() {
        assert_eq!(ews_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(ews_time(1_767_225_600_999), "2026-01-01T00:00:00Z");
        assert_eq!(ews_time(i64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(ews_time(i64::MIN), "0001-01-01T00:00:00Z");
    }

    #[test]
    fn the_time_zone_field_follows_the_version() {
        let old = RequestContext::new("Exchange2010_SP2");
        let new = RequestContext::new("Exchange2013_SP1");
        assert!(get_item_fields(&old).contains(&"calendar:StartTimeZone"));
        assert!(!get_item_fields(&old).contains(&"calendar:StartTimeZoneId"));
        assert!(get_item_fields(&new).contains(&"calendar:StartTimeZoneId"));
        assert!(RequestContext::new("V2016_10_10").allows_start_time_zone_id());
    }
}
