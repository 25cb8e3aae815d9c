//! Items as EWS XML: the requested item shape (`BaseShape`, `BodyType`,
//! `AdditionalProperties` with field and extended-property paths) and the rendering of
//! messages, meeting messages and calendar items in the element order of `types.xsd`
//! (ItemType, then MessageType, MeetingMessageType, then the specific type), with only the
//! properties the shape asks for.

use std::collections::HashSet;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chrono::Weekday;
use roxmltree::Node;
use vmr_core::meeting::{Body, ItemType, MyResponse, Person, RequestType, UnixMs};
use vmr_core::recurrence::{DayKind, Pattern, Range, Recurrence, WeekIndex};

use super::flows::series_of;
use super::model::{encode_occurrence_id, Attendee, Item, ItemKind, Store};
use super::soap::{child, child_text, XmlWriter, NS_T};

/// PSETID_Meeting, as Exchange echoes it (lower case).
pub const PSETID_MEETING: &str = "6ed8da90-450b-101b-98da-00aa003f1305";

/// `BaseShape`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseShape {
    IdOnly,
    Default,
    AllProperties,
}

/// `BodyType` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyWanted {
    Best,
    Html,
    Text,
}

/// An extended property asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtendedField {
    /// The attributes as the client wrote them, echoed back.
    pub attributes: Vec<(String, String)>,
    /// PSETID_Meeting property id (3 or 35) when it names one we hold.
    pub meeting_property: Option<u32>,
}

/// The requested item shape.
#[derive(Debug, Clone)]
pub struct ItemShape {
    pub base: BaseShape,
    pub body: BodyWanted,
    pub fields: HashSet<String>,
    pub extended: Vec<ExtendedField>,
}

const DEFAULT_FIELDS: &[&str] = &[
    "ItemId",
    "Subject",
    "HasAttachments",
    "IsAssociated",
    "ToRecipients",
    "IsRead",
    "From",
    "Start",
    "End",
    "LegacyFreeBusyStatus",
    "Location",
    "CalendarItemType",
    "Organizer",
    "AppointmentSequenceNumber",
    "AppointmentState",
];

/// Properties `FindItem` and `SyncFolderItems` cannot return (reference §0.5).
const GETITEM_ONLY: &[&str] = &[
    "Body",
    "RequiredAttendees",
    "OptionalAttendees",
    "Resources",
    "ModifiedOccurrences",
    "DeletedOccurrences",
];

impl ItemShape {
    /// `IdOnly` with nothing else.
    pub fn id_only() -> ItemShape {
        ItemShape {
            base: BaseShape::IdOnly,
            body: BodyWanted::Best,
            fields: HashSet::new(),
            extended: Vec::new(),
        }
    }

    /// Reads an `ItemShape` element.
    pub fn parse(node: Node) -> ItemShape {
        let base = match child_text(node, NS_T, "BaseShape").map(str::trim) {
            Some("Default") => BaseShape::Default,
            Some("AllProperties") => BaseShape::AllProperties,
            _ => BaseShape::IdOnly,
        };
        let body = match child_text(node, NS_T, "BodyType").map(str::trim) {
            Some("HTML") => BodyWanted::Html,
            Some("Text") => BodyWanted::Text,
            _ => BodyWanted::Best,
        };
        let mut fields = HashSet::new();
        let mut extended = Vec::new();
        if let Some(additional) = child(node, NS_T, "AdditionalProperties") {
            for path in additional.children().filter(|n| n.is_element()) {
                match path.tag_name().name() {
                    "FieldURI" => {
                        if let Some(uri) = path.attribute("FieldURI") {
                            let name = uri.rsplit(':').next().unwrap_or(uri);
                            fields.insert(name.to_owned());
                        }
                    }
                    "ExtendedFieldURI" => extended.push(parse_extended(path)),
                    _ => {}
                }
            }
        }
        ItemShape {
            base,
            body,
            fields,
            extended,
        }
    }

    fn wants(&self, name: &str, find: bool) -> bool {
        if find && GETITEM_ONLY.contains(&name) {
            return false;
        }
        if name == "ItemId" || self.fields.contains(name) {
            return true;
        }
        match self.base {
            BaseShape::IdOnly => false,
            BaseShape::Default => DEFAULT_FIELDS.contains(&name),
            BaseShape::AllProperties => name != "ExtendedProperty",
        }
    }
}

/// Reads an `ExtendedFieldURI` (also used by restrictions).
pub fn parse_extended(path: Node) -> ExtendedField {
    let attributes: Vec<(String, String)> = path
        .attributes()
        .map(|a| (a.name().to_owned(), a.value().to_owned()))
        .collect();
    let get = |name: &str| path.attribute(name).map(str::to_owned);
    let is_meeting_set = get("PropertySetId")
        .is_some_and(|s| s.eq_ignore_ascii_case(PSETID_MEETING))
        || get("DistinguishedPropertySetId").as_deref() == Some("Meeting");
    let id = get("PropertyId").and_then(|v| v.parse::<u32>().ok());
    let meeting_property = match (is_meeting_set, id, get("PropertyType").as_deref()) {
        (true, Some(id @ (3 | 35)), Some("Binary")) => Some(id),
        _ => None,
    };
    ExtendedField {
        attributes,
        meeting_property,
    }
}

/// `2026-01-12T09:00:00Z`.
pub fn format_time(ms: UnixMs) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// Parses an `xs:dateTime` (with offset or `Z`; without, as UTC).
pub fn parse_time(text: &str) -> Option<UnixMs> {
    let text = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

fn bool_text(value: bool) -> &'static str {
    if value {
        "true"
    } else {
        "false"
    }
}

/// `ResponseTypeType` text.
pub fn response_text(response: MyResponse) -> &'static str {
    match response {
        MyResponse::Unknown => "Unknown",
        MyResponse::Organizer => "Organizer",
        MyResponse::Tentative => "Tentative",
        MyResponse::Accept => "Accept",
        MyResponse::Decline => "Decline",
        MyResponse::NoResponseReceived => "NoResponseReceived",
    }
}

fn item_type_text(item_type: ItemType) -> &'static str {
    match item_type {
        ItemType::Single => "Single",
        ItemType::RecurringMaster => "RecurringMaster",
        ItemType::Occurrence => "Occurrence",
        ItemType::Exception => "Exception",
    }
}

fn request_type_text(request_type: RequestType) -> &'static str {
    match request_type {
        RequestType::New => "NewMeetingRequest",
        RequestType::FullUpdate => "FullUpdate",
        RequestType::InformationalUpdate => "InformationalUpdate",
        RequestType::SilentUpdate => "SilentUpdate",
        RequestType::Outdated => "Outdated",
        RequestType::Other => "None",
    }
}

/// Text of an HTML body: tags dropped, the common entities decoded, block ends as newlines.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    let mut tag = String::new();
    for c in html.chars() {
        match (in_tag, c) {
            (false, '<') => {
                in_tag = true;
                tag.clear();
            }
            (true, '>') => {
                in_tag = false;
                let name = tag
                    .trim_start_matches('/')
                    .split(|c: char| c.is_whitespace() || c == '/')
                    .next()
                    .unwrap_or("")
                    .to_ascii_lowercase();
                if matches!(name.as_str(), "br" | "p" | "div" | "tr" | "li") && tag.starts_with('/')
                    || name == "br"
                {
                    out.push('\n');
                }
            }
            (true, c) => tag.push(c),
            (false, c) => out.push(c),
        }
    }
    out.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
        .trim()
        .to_owned()
}

/// A text body as HTML, the way Exchange converts it.
pub fn text_to_html(text: &str) -> String {
    let escaped = super::soap::escape(text)
        .replace("\r\n", "\n")
        .replace('\n', "<br>\r\n");
    format!(
        "<html>\r\n<head>\r\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">\r\n</head>\r\n<body>\r\n{escaped}\r\n</body>\r\n</html>\r\n"
    )
}

fn write_body(w: &mut XmlWriter, name: &str, body: &Body, wanted: BodyWanted) {
    let (html, content) = match (wanted, body.html) {
        (BodyWanted::Html, false) => (true, text_to_html(&body.content)),
        (BodyWanted::Text, true) => (false, html_to_text(&body.content)),
        (_, html) => (html, body.content.clone()),
    };
    w.start(
        name,
        &[
            ("BodyType", if html { "HTML" } else { "Text" }),
            ("IsTruncated", "false"),
        ],
    );
    w.raw(&super::soap::escape(&content));
    w.end(name);
}

fn write_mailbox(w: &mut XmlWriter, person: &Person) {
    w.start("t:Mailbox", &[]);
    w.text("t:Name", &person.name);
    w.text("t:EmailAddress", &person.email);
    w.text("t:RoutingType", "SMTP");
    w.text("t:MailboxType", "Mailbox");
    w.end("t:Mailbox");
}

fn write_single_recipient(w: &mut XmlWriter, name: &str, person: &Person) {
    w.start(name, &[]);
    write_mailbox(w, person);
    w.end(name);
}

fn write_attendees(w: &mut XmlWriter, name: &str, attendees: &[Attendee]) {
    if attendees.is_empty() {
        return;
    }
    w.start(name, &[]);
    for a in attendees {
        w.start("t:Attendee", &[]);
        write_mailbox(w, &a.person);
        w.text("t:ResponseType", response_text(a.response));
        if let Some(at) = a.last_response {
            w.text("t:LastResponseTime", &format_time(at));
        }
        w.end("t:Attendee");
    }
    w.end(name);
}

fn weekday_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "Monday",
        Weekday::Tue => "Tuesday",
        Weekday::Wed => "Wednesday",
        Weekday::Thu => "Thursday",
        Weekday::Fri => "Friday",
        Weekday::Sat => "Saturday",
        Weekday::Sun => "Sunday",
    }
}

fn day_kind_name(day: DayKind) -> &'static str {
    match day {
        DayKind::Day(d) => weekday_name(d),
        DayKind::AnyDay => "Day",
        DayKind::Weekday => "Weekday",
        DayKind::WeekendDay => "WeekendDay",
    }
}

fn week_index_name(index: WeekIndex) -> &'static str {
    match index {
        WeekIndex::First => "First",
        WeekIndex::Second => "Second",
        WeekIndex::Third => "Third",
        WeekIndex::Fourth => "Fourth",
        WeekIndex::Last => "Last",
    }
}

fn month_name(month: u32) -> &'static str {
    vmr_core::recurrence::MONTH_NAMES
        .get(usize::try_from(month.saturating_sub(1)).unwrap_or(0))
        .copied()
        .unwrap_or("January")
}

/// Writes `t:Recurrence` (pattern, then range; dates with the zone's offset suffix).
pub fn write_recurrence(
    w: &mut XmlWriter,
    recurrence: &Recurrence,
    time_zone: &str,
    start: UnixMs,
) {
    w.start("t:Recurrence", &[]);
    match &recurrence.pattern {
        Pattern::Daily { interval } => {
            w.start("t:DailyRecurrence", &[]);
            w.text("t:Interval", &interval.to_string());
            w.end("t:DailyRecurrence");
        }
        Pattern::Weekly {
            interval,
            days,
            first_day_of_week,
        } => {
            w.start("t:WeeklyRecurrence", &[]);
            w.text("t:Interval", &interval.to_string());
            let days: Vec<&str> = days.iter().map(|d| weekday_name(*d)).collect();
            w.text("t:DaysOfWeek", &days.join(" "));
            w.text("t:FirstDayOfWeek", weekday_name(*first_day_of_week));
            w.end("t:WeeklyRecurrence");
        }
        Pattern::AbsoluteMonthly {
            interval,
            day_of_month,
        } => {
            w.start("t:AbsoluteMonthlyRecurrence", &[]);
            w.text("t:Interval", &interval.to_string());
            w.text("t:DayOfMonth", &day_of_month.to_string());
            w.end("t:AbsoluteMonthlyRecurrence");
        }
        Pattern::RelativeMonthly {
            interval,
            day,
            index,
        } => {
            w.start("t:RelativeMonthlyRecurrence", &[]);
            w.text("t:Interval", &interval.to_string());
            w.text("t:DaysOfWeek", day_kind_name(*day));
            w.text("t:DayOfWeekIndex", week_index_name(*index));
            w.end("t:RelativeMonthlyRecurrence");
        }
        Pattern::AbsoluteYearly {
            month,
            day_of_month,
        } => {
            w.start("t:AbsoluteYearlyRecurrence", &[]);
            w.text("t:DayOfMonth", &day_of_month.to_string());
            w.text("t:Month", month_name(*month));
            w.end("t:AbsoluteYearlyRecurrence");
        }
        Pattern::RelativeYearly { month, day, index } => {
            w.start("t:RelativeYearlyRecurrence", &[]);
            w.text("t:DaysOfWeek", day_kind_name(*day));
            w.text("t:DayOfWeekIndex", week_index_name(*index));
            w.text("t:Month", month_name(*month));
            w.end("t:RelativeYearlyRecurrence");
        }
    }
    let suffix = date_suffix(time_zone, start);
    let date = |d: chrono::NaiveDate| format!("{}{suffix}", d.format("%Y-%m-%d"));
    match &recurrence.range {
        Range::NoEnd { start } => {
            w.start("t:NoEndRecurrence", &[]);
            w.text("t:StartDate", &date(*start));
            w.end("t:NoEndRecurrence");
        }
        Range::EndDate { start, end } => {
            w.start("t:EndDateRecurrence", &[]);
            w.text("t:StartDate", &date(*start));
            w.text("t:EndDate", &date(*end));
            w.end("t:EndDateRecurrence");
        }
        Range::Numbered { start, count } => {
            w.start("t:NumberedRecurrence", &[]);
            w.text("t:StartDate", &date(*start));
            w.text("t:NumberOfOccurrences", &count.to_string());
            w.end("t:NumberedRecurrence");
        }
    }
    w.end("t:Recurrence");
}

/// `Z` for UTC, else the zone's offset at `at` (`+01:00`), as real servers write xs:date.
fn date_suffix(time_zone: &str, at: UnixMs) -> String {
    let Some(zone) = vmr_core::windows_zones::zone(time_zone) else {
        return "Z".to_owned();
    };
    let Some(utc) = chrono::DateTime::from_timestamp_millis(at) else {
        return "Z".to_owned();
    };
    let local = utc.with_timezone(&zone);
    let offset = local.format("%:z").to_string();
    if offset == "+00:00" {
        "Z".to_owned()
    } else {
        offset
    }
}

/// Parses a `t:Recurrence` element (pattern and range; xs:date with optional offset suffix).
pub fn parse_recurrence(node: Node) -> Option<Recurrence> {
    let elements: Vec<Node> = node.children().filter(|n| n.is_element()).collect();
    let pattern_node = elements.first()?;
    let range_node = elements.get(1)?;
    fn text<'a>(n: Node<'a, '_>, name: &str) -> Option<&'a str> {
        child_text(n, NS_T, name).map(str::trim)
    }
    let number = |n: Node, name: &str| text(n, name).and_then(|v| v.parse::<u32>().ok());
    let weekday = |name: &str| -> Option<Weekday> {
        Some(match name {
            "Monday" => Weekday::Mon,
            "Tuesday" => Weekday::Tue,
            "Wednesday" => Weekday::Wed,
            "Thursday" => Weekday::Thu,
            "Friday" => Weekday::Fri,
            "Saturday" => Weekday::Sat,
            "Sunday" => Weekday::Sun,
            _ => return None,
        })
    };
    let day_kind = |name: &str| -> Option<DayKind> {
        Some(match name {
            "Day" => DayKind::AnyDay,
            "Weekday" => DayKind::Weekday,
            "WeekendDay" => DayKind::WeekendDay,
            other => DayKind::Day(weekday(other)?),
        })
    };
    let index = |name: &str| -> Option<WeekIndex> {
        Some(match name {
            "First" => WeekIndex::First,
            "Second" => WeekIndex::Second,
            "Third" => WeekIndex::Third,
            "Fourth" => WeekIndex::Fourth,
            "Last" => WeekIndex::Last,
            _ => return None,
        })
    };
    let month = |n: Node| -> Option<u32> {
        let name = text(n, "Month")?;
        vmr_core::recurrence::MONTH_NAMES
            .iter()
            .position(|m| *m == name)
            .and_then(|i| u32::try_from(i + 1).ok())
    };
    let pattern = match pattern_node.tag_name().name() {
        "DailyRecurrence" => Pattern::Daily {
            interval: number(*pattern_node, "Interval")?,
        },
        "WeeklyRecurrence" => Pattern::Weekly {
            interval: number(*pattern_node, "Interval")?,
            days: text(*pattern_node, "DaysOfWeek")?
                .split_whitespace()
                .map(weekday)
                .collect::<Option<Vec<_>>>()?,
            first_day_of_week: text(*pattern_node, "FirstDayOfWeek")
                .and_then(weekday)
                .unwrap_or(Weekday::Sun),
        },
        "AbsoluteMonthlyRecurrence" => Pattern::AbsoluteMonthly {
            interval: number(*pattern_node, "Interval")?,
            day_of_month: number(*pattern_node, "DayOfMonth")?,
        },
        "RelativeMonthlyRecurrence" => Pattern::RelativeMonthly {
            interval: number(*pattern_node, "Interval")?,
            day: day_kind(text(*pattern_node, "DaysOfWeek")?)?,
            index: index(text(*pattern_node, "DayOfWeekIndex")?)?,
        },
        "AbsoluteYearlyRecurrence" => Pattern::AbsoluteYearly {
            month: month(*pattern_node)?,
            day_of_month: number(*pattern_node, "DayOfMonth")?,
        },
        "RelativeYearlyRecurrence" => Pattern::RelativeYearly {
            month: month(*pattern_node)?,
            day: day_kind(text(*pattern_node, "DaysOfWeek")?)?,
            index: index(text(*pattern_node, "DayOfWeekIndex")?)?,
        },
        _ => return None,
    };
    let date = |n: Node, name: &str| -> Option<chrono::NaiveDate> {
        let value = text(n, name)?;
        chrono::NaiveDate::parse_from_str(value.get(..10)?, "%Y-%m-%d").ok()
    };
    let start = date(*range_node, "StartDate")?;
    let range = match range_node.tag_name().name() {
        "NoEndRecurrence" => Range::NoEnd { start },
        "EndDateRecurrence" => Range::EndDate {
            start,
            end: date(*range_node, "EndDate")?,
        },
        "NumberedRecurrence" => Range::Numbered {
            start,
            count: number(*range_node, "NumberOfOccurrences")?,
        },
        _ => return None,
    };
    Some(Recurrence { pattern, range })
}

const ITEM_ORDER: &[&str] = &[
    "ItemId",
    "ParentFolderId",
    "ItemClass",
    "Subject",
    "Sensitivity",
    "Body",
    "DateTimeReceived",
    "Size",
    "Importance",
    "IsSubmitted",
    "IsDraft",
    "IsFromMe",
    "IsResend",
    "IsUnmodified",
    "DateTimeSent",
    "DateTimeCreated",
    "ReminderIsSet",
    "DisplayTo",
    "HasAttachments",
    "ExtendedProperty",
    "Culture",
    "LastModifiedName",
    "LastModifiedTime",
    "IsAssociated",
];

const MESSAGE_ORDER: &[&str] = &[
    "Sender",
    "ToRecipients",
    "IsReadReceiptRequested",
    "IsDeliveryReceiptRequested",
    "ConversationTopic",
    "From",
    "IsRead",
    "IsResponseRequested",
    "ReceivedBy",
    "ReceivedRepresenting",
];

const MEETING_MESSAGE_ORDER: &[&str] = &[
    "AssociatedCalendarItemId",
    "IsDelegated",
    "IsOutOfDate",
    "HasBeenProcessed",
    "ResponseType",
    "UID",
    "RecurrenceId",
    "DateTimeStamp",
    "IsOrganizer",
];

const MEETING_REQUEST_ORDER: &[&str] = &[
    "MeetingRequestType",
    "IntendedFreeBusyStatus",
    "Start",
    "End",
    "OriginalStart",
    "IsAllDayEvent",
    "LegacyFreeBusyStatus",
    "Location",
    "IsMeeting",
    "IsCancelled",
    "IsRecurring",
    "MeetingRequestWasSent",
    "CalendarItemType",
    "MyResponseType",
    "Organizer",
    "RequiredAttendees",
    "OptionalAttendees",
    "Resources",
    "AppointmentSequenceNumber",
    "AppointmentState",
    "Recurrence",
    "FirstOccurrence",
    "LastOccurrence",
    "ModifiedOccurrences",
    "DeletedOccurrences",
    "StartTimeZoneId",
    "EndTimeZoneId",
];

const CALENDAR_ORDER: &[&str] = &[
    "UID",
    "RecurrenceId",
    "DateTimeStamp",
    "Start",
    "End",
    "OriginalStart",
    "IsAllDayEvent",
    "LegacyFreeBusyStatus",
    "Location",
    "IsMeeting",
    "IsCancelled",
    "IsRecurring",
    "MeetingRequestWasSent",
    "IsResponseRequested",
    "CalendarItemType",
    "MyResponseType",
    "Organizer",
    "RequiredAttendees",
    "OptionalAttendees",
    "Resources",
    "AppointmentSequenceNumber",
    "AppointmentState",
    "Recurrence",
    "FirstOccurrence",
    "LastOccurrence",
    "ModifiedOccurrences",
    "DeletedOccurrences",
    "StartTimeZoneId",
    "EndTimeZoneId",
    "IsOrganizer",
];

const CANCELLATION_ORDER: &[&str] = &["Start", "End", "Location", "Recurrence", "CalendarItemType"];

const RESPONSE_ORDER: &[&str] = &["Start", "End", "Location", "Recurrence", "CalendarItemType"];

fn orders(kind: ItemKind) -> Vec<&'static [&'static str]> {
    match kind {
        ItemKind::Message => vec![ITEM_ORDER, MESSAGE_ORDER],
        ItemKind::CalendarItem => vec![ITEM_ORDER, CALENDAR_ORDER],
        ItemKind::MeetingRequest => vec![
            ITEM_ORDER,
            MESSAGE_ORDER,
            MEETING_MESSAGE_ORDER,
            MEETING_REQUEST_ORDER,
        ],
        ItemKind::MeetingCancellation => vec![
            ITEM_ORDER,
            MESSAGE_ORDER,
            MEETING_MESSAGE_ORDER,
            CANCELLATION_ORDER,
        ],
        ItemKind::MeetingResponse => vec![
            ITEM_ORDER,
            MESSAGE_ORDER,
            MEETING_MESSAGE_ORDER,
            RESPONSE_ORDER,
        ],
    }
}

/// Writes `<t:{Kind}>…</t:{Kind}>` for `item` with the properties `shape` asks for, in schema
/// order. `find`: a FindItem/SyncFolderItems answer (no body, attendees, occurrence lists).
pub fn write_item(w: &mut XmlWriter, store: &Store, item: &Item, shape: &ItemShape, find: bool) {
    let element = format!("t:{}", item.kind.element());
    w.start(&element, &[]);
    for order in orders(item.kind) {
        for name in order {
            if shape.wants(name, find)
                || (*name == "ExtendedProperty" && !shape.extended.is_empty())
            {
                write_field(w, store, item, shape, name);
            }
        }
    }
    w.end(&element);
}

/// Writes the `t:ItemId` of `item`.
pub fn write_item_id(w: &mut XmlWriter, item: &Item) {
    w.empty(
        "t:ItemId",
        &[("Id", &item.id), ("ChangeKey", &item.change_key())],
    );
}

fn write_field(w: &mut XmlWriter, store: &Store, item: &Item, shape: &ItemShape, name: &str) {
    let meeting = item.meeting.as_ref();
    let is_meeting_message = matches!(
        item.kind,
        ItemKind::MeetingRequest | ItemKind::MeetingCancellation | ItemKind::MeetingResponse
    );
    match name {
        "ItemId" => write_item_id(w, item),
        "ParentFolderId" => {
            let id = store.folder_id(&item.mailbox, item.folder);
            w.empty(
                "t:ParentFolderId",
                &[("Id", &id), ("ChangeKey", "AQAAAA==")],
            );
        }
        "ItemClass" => w.text("t:ItemClass", &item.item_class),
        "Subject" => w.text("t:Subject", &item.subject),
        "Sensitivity" => w.text("t:Sensitivity", "Normal"),
        "Body" => write_body(w, "t:Body", &item.body, shape.body),
        "DateTimeReceived" => w.text("t:DateTimeReceived", &format_time(item.received)),
        "Size" => w.text(
            "t:Size",
            &(item.body.content.len() + item.subject.len() + 512).to_string(),
        ),
        "Importance" => w.text(
            "t:Importance",
            if item.kind == ItemKind::MeetingCancellation {
                "High"
            } else {
                "Normal"
            },
        ),
        "IsSubmitted" => w.text("t:IsSubmitted", "false"),
        "IsDraft" => w.text("t:IsDraft", "false"),
        "IsFromMe" => w.text(
            "t:IsFromMe",
            bool_text(item.from.as_ref().is_some_and(|f| f.email == item.mailbox)),
        ),
        "IsResend" => w.text("t:IsResend", "false"),
        "IsUnmodified" => w.text("t:IsUnmodified", bool_text(item.version == 0)),
        "DateTimeSent" => w.text("t:DateTimeSent", &format_time(item.created)),
        "DateTimeCreated" => w.text("t:DateTimeCreated", &format_time(item.created)),
        "ReminderIsSet" => w.text("t:ReminderIsSet", "false"),
        "DisplayTo" => {
            let names: Vec<&str> = item.to.iter().map(|p| p.name.as_str()).collect();
            w.text("t:DisplayTo", &names.join("; "));
        }
        "HasAttachments" => w.text("t:HasAttachments", "false"),
        "ExtendedProperty" => {
            for field in &shape.extended {
                let value = match (field.meeting_property, meeting) {
                    (Some(35), Some(m)) => B64.encode(&m.goid),
                    (Some(3), Some(m)) => B64.encode(m.global_object_id()),
                    _ => continue,
                };
                w.start("t:ExtendedProperty", &[]);
                let attrs: Vec<(&str, String)> = field
                    .attributes
                    .iter()
                    .map(|(k, v)| {
                        let value = if k == "PropertySetId" {
                            v.to_ascii_lowercase()
                        } else {
                            v.clone()
                        };
                        (k.as_str(), value)
                    })
                    .collect();
                let borrowed: Vec<(&str, &str)> =
                    attrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
                w.empty("t:ExtendedFieldURI", &borrowed);
                w.text("t:Value", &value);
                w.end("t:ExtendedProperty");
            }
        }
        "Culture" => w.text("t:Culture", "en-US"),
        "LastModifiedName" => {
            if let Some(from) = &item.from {
                w.text("t:LastModifiedName", &from.name);
            }
        }
        "LastModifiedTime" => w.text("t:LastModifiedTime", &format_time(item.last_modified)),
        "IsAssociated" => w.text("t:IsAssociated", "false"),
        // MessageType
        "Sender" => {
            if let Some(sender) = item.sender.as_ref().or(item.from.as_ref()) {
                write_single_recipient(w, "t:Sender", sender);
            }
        }
        "From" => {
            if let Some(from) = &item.from {
                write_single_recipient(w, "t:From", from);
            }
        }
        "ToRecipients" if !item.to.is_empty() => {
            w.start("t:ToRecipients", &[]);
            for p in &item.to {
                write_mailbox(w, p);
            }
            w.end("t:ToRecipients");
        }
        "IsReadReceiptRequested" => w.text("t:IsReadReceiptRequested", "false"),
        "IsDeliveryReceiptRequested" => w.text("t:IsDeliveryReceiptRequested", "false"),
        "ConversationTopic" => w.text(
            "t:ConversationTopic",
            item.subject.trim_start_matches("Canceled: "),
        ),
        "IsRead" => w.text("t:IsRead", bool_text(item.is_read)),
        "IsResponseRequested" => w.text(
            "t:IsResponseRequested",
            bool_text(
                matches!(item.kind, ItemKind::MeetingRequest | ItemKind::CalendarItem)
                    && meeting.is_some(),
            ),
        ),
        "ReceivedBy" | "ReceivedRepresenting" => {
            if let Some(mailbox) = store.mailboxes.get(&item.mailbox) {
                if item.folder != super::model::FolderName::SentItems {
                    write_single_recipient(w, &format!("t:{name}"), &mailbox.person());
                }
            }
        }
        // MeetingMessageType
        "AssociatedCalendarItemId" => {
            if let Some(calendar) = item
                .associated_calendar_item
                .as_ref()
                .and_then(|id| store.items.get(id))
            {
                w.empty(
                    "t:AssociatedCalendarItemId",
                    &[("Id", &calendar.id), ("ChangeKey", &calendar.change_key())],
                );
            }
        }
        "IsDelegated" => w.text("t:IsDelegated", "false"),
        "IsOutOfDate" => {
            let out_of_date =
                item.kind == ItemKind::MeetingRequest && super::flows::is_out_of_date(store, item);
            w.text("t:IsOutOfDate", bool_text(out_of_date));
        }
        "HasBeenProcessed" => w.text("t:HasBeenProcessed", bool_text(item.has_been_processed)),
        "ResponseType" => {
            if let Some(r) = item.response_type {
                w.text("t:ResponseType", response_text(r));
            }
        }
        "UID" => {
            if let Some(m) = meeting {
                w.text("t:UID", &m.uid());
            }
        }
        "RecurrenceId" => {
            if let Some(rid) = meeting.and_then(|m| m.recurrence_id) {
                w.text("t:RecurrenceId", &format_time(rid));
            }
        }
        "DateTimeStamp" => {
            if let Some(m) = meeting {
                w.text("t:DateTimeStamp", &format_time(m.date_time_stamp));
            }
        }
        "IsOrganizer" => {
            if let Some(m) = meeting {
                w.text("t:IsOrganizer", bool_text(m.is_organizer));
            }
        }
        // MeetingRequest / CalendarItem
        "MeetingRequestType" => {
            if let Some(t) = item.request_type {
                w.text("t:MeetingRequestType", request_type_text(t));
            }
        }
        "IntendedFreeBusyStatus" => w.text("t:IntendedFreeBusyStatus", "Busy"),
        "Start" | "End" => {
            if let Some(m) = meeting {
                let value = if name == "Start" { m.start } else { m.end };
                w.text(&format!("t:{name}"), &format_time(value));
            }
        }
        "OriginalStart" => {
            if let Some(rid) = meeting.and_then(|m| m.recurrence_id) {
                w.text("t:OriginalStart", &format_time(rid));
            }
        }
        "IsAllDayEvent" if meeting.is_some() => w.text("t:IsAllDayEvent", "false"),
        "LegacyFreeBusyStatus" => {
            if let Some(m) = meeting {
                let status = if m.is_cancelled {
                    "Free"
                } else {
                    match m.my_response {
                        MyResponse::Accept | MyResponse::Organizer => "Busy",
                        _ => "Tentative",
                    }
                };
                w.text("t:LegacyFreeBusyStatus", status);
            }
        }
        "Location" => {
            if let Some(m) = meeting {
                w.text("t:Location", &m.location);
            }
        }
        "IsMeeting" if meeting.is_some() => w.text("t:IsMeeting", "true"),
        "IsCancelled" => {
            if let Some(m) = meeting {
                w.text("t:IsCancelled", bool_text(m.is_cancelled));
            }
        }
        "IsRecurring" => {
            if let Some(m) = meeting {
                w.text("t:IsRecurring", bool_text(m.item_type != ItemType::Single));
            }
        }
        "MeetingRequestWasSent" => {
            if let Some(m) = meeting {
                w.text("t:MeetingRequestWasSent", bool_text(m.is_organizer));
            }
        }
        "CalendarItemType" => {
            if let Some(m) = meeting {
                w.text("t:CalendarItemType", item_type_text(m.item_type));
            }
        }
        "MyResponseType" => {
            if let Some(m) = meeting {
                w.text("t:MyResponseType", response_text(m.my_response));
            }
        }
        "Organizer" => {
            if let Some(m) = meeting {
                write_single_recipient(w, "t:Organizer", &m.organizer);
            }
        }
        "RequiredAttendees" => {
            if let Some(m) = meeting {
                write_attendees(w, "t:RequiredAttendees", &m.required);
            }
        }
        "OptionalAttendees" => {
            if let Some(m) = meeting {
                write_attendees(w, "t:OptionalAttendees", &m.optional);
            }
        }
        "Resources" => {
            if let Some(m) = meeting {
                write_attendees(w, "t:Resources", &m.resources);
            }
        }
        "AppointmentSequenceNumber" => {
            if let Some(m) = meeting {
                w.text("t:AppointmentSequenceNumber", &m.sequence.to_string());
            }
        }
        "AppointmentState" => {
            if let Some(m) = meeting {
                w.text("t:AppointmentState", &m.appointment_state().to_string());
            }
        }
        "Recurrence" => {
            if let Some((m, rec)) = meeting.and_then(|m| Some((m, m.recurrence.as_ref()?))) {
                write_recurrence(w, rec, &m.time_zone, m.start);
            }
        }
        "FirstOccurrence" | "LastOccurrence" => {
            if is_meeting_message {
                return;
            }
            let Some(m) = meeting else { return };
            let Some(series) = series_of(m) else { return };
            let occurrence = if name == "FirstOccurrence" {
                series
                    .occurrences(m.start - 1, i64::MAX, 1)
                    .ok()
                    .and_then(|o| o.into_iter().next())
            } else {
                match series.last_end() {
                    Ok(Some(end)) => series
                        .occurrences(m.start - 1, end, 100_000)
                        .ok()
                        .and_then(|o| o.into_iter().last()),
                    _ => None,
                }
            };
            if let Some(o) = occurrence {
                let element = format!("t:{name}");
                w.start(&element, &[]);
                w.empty(
                    "t:ItemId",
                    &[("Id", &encode_occurrence_id(&item.id, o.original_start))],
                );
                w.text("t:Start", &format_time(o.start));
                w.text("t:End", &format_time(o.end));
                w.text("t:OriginalStart", &format_time(o.original_start));
                w.end(&element);
            }
        }
        "ModifiedOccurrences" => {
            if let Some(m) = meeting.filter(|m| !m.moved.is_empty()) {
                w.start("t:ModifiedOccurrences", &[]);
                for o in &m.moved {
                    w.start("t:Occurrence", &[]);
                    w.empty(
                        "t:ItemId",
                        &[("Id", &encode_occurrence_id(&item.id, o.original_start))],
                    );
                    w.text("t:Start", &format_time(o.start));
                    w.text("t:End", &format_time(o.end));
                    w.text("t:OriginalStart", &format_time(o.original_start));
                    w.end("t:Occurrence");
                }
                w.end("t:ModifiedOccurrences");
            }
        }
        "DeletedOccurrences" => {
            if let Some(m) = meeting.filter(|m| !m.deleted.is_empty()) {
                w.start("t:DeletedOccurrences", &[]);
                for d in &m.deleted {
                    w.start("t:DeletedOccurrence", &[]);
                    w.text("t:Start", &format_time(*d));
                    w.end("t:DeletedOccurrence");
                }
                w.end("t:DeletedOccurrences");
            }
        }
        "StartTimeZoneId" | "EndTimeZoneId" => {
            if let Some(m) = meeting.filter(|m| !m.time_zone.is_empty()) {
                w.text(&format!("t:{name}"), &m.time_zone);
            }
        }
        _ => {}
    }
}
