//! The meeting model: what a mailbox backend (EWS now, Microsoft Graph next) reads out of the
//! resource's mailbox, in a form the scheduling decisions ([`crate::scheduling`]) can reason
//! about without knowing where it came from.
//!
//! Times are Unix milliseconds in UTC. A meeting is identified by its `uid`, the hex
//! CleanGlobalObjectId (EWS `calendar:UID`; the same for a series master and its
//! exceptions), never by a mailbox item id, which Exchange may change.

use serde::{Deserialize, Serialize};

use crate::recurrence::Recurrence;

/// Unix time in milliseconds, UTC.
pub type UnixMs = i64;

/// A mailbox address with its display name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Person {
    pub name: String,
    /// SMTP address, lower-cased. Empty when the server gave only an X.500 (`EX`) address
    /// that could not be resolved.
    pub email: String,
}

/// A message or item body.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Body {
    /// `true` for HTML, `false` for plain text.
    pub html: bool,
    pub content: String,
}

/// What kind of meeting message a request is (EWS `MeetingRequestType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestType {
    /// `NewMeetingRequest`.
    New,
    /// `FullUpdate`: time, location or recurrence changed.
    FullUpdate,
    /// `InformationalUpdate` (for example the body or attendees changed).
    InformationalUpdate,
    /// `SilentUpdate`.
    SilentUpdate,
    /// `Outdated`: a newer message superseded it.
    Outdated,
    /// `None`, `PrincipalWantsCopy` or a value we do not know.
    Other,
}

/// What the mailbox item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageKind {
    /// A meeting request or update in the Inbox (`IPM.Schedule.Meeting.Request`).
    Request(RequestType),
    /// A cancellation in the Inbox (`IPM.Schedule.Meeting.Canceled`).
    Cancellation,
    /// An item in the Calendar folder (`IPM.Appointment`), e.g. the tentative copy Exchange's
    /// Calendar Attendant makes with `AutomateProcessing AutoUpdate`.
    CalendarItem,
}

/// EWS `CalendarItemType` / Graph `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemType {
    Single,
    RecurringMaster,
    Occurrence,
    Exception,
}

/// One occurrence of a series that was moved (EWS `ModifiedOccurrences/Occurrence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovedOccurrence {
    /// When the occurrence would have started by the pattern.
    pub original_start: UnixMs,
    pub start: UnixMs,
    pub end: UnixMs,
}

/// The resource's own answer recorded on an item (EWS `MyResponseType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MyResponse {
    Unknown,
    Organizer,
    Tentative,
    Accept,
    Decline,
    NoResponseReceived,
}

/// Everything the processor needs to know about one meeting item in the resource's mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingItem {
    /// The mailbox's id for the item (informational; used to reply to it).
    pub item_id: String,
    /// The item's change key (version).
    pub change_key: String,
    pub kind: MessageKind,
    pub item_type: ItemType,
    /// Hex CleanGlobalObjectId, upper case: the meeting (series) this item belongs to.
    pub uid: String,
    /// For an occurrence or exception: the start it had by the pattern (EWS `RecurrenceId`).
    pub recurrence_id: Option<UnixMs>,
    pub subject: String,
    pub body: Body,
    pub organizer: Person,
    /// Who sent the message when not the organizer: a delegate sending on the organizer's
    /// behalf (EWS `Sender` ≠ `From`).
    #[serde(default)]
    pub sender: Option<Person>,
    /// Required and optional attendees.
    pub attendees: Vec<Person>,
    /// Resources (rooms, equipment) invited.
    pub resources: Vec<Person>,
    pub start: UnixMs,
    pub end: UnixMs,
    /// Windows time zone id the meeting was scheduled in (`StartTimeZoneId` or
    /// `StartTimeZone/@Id`), e.g. `W. Europe Standard Time`.
    pub time_zone: Option<String>,
    /// For a series: its pattern and range.
    pub recurrence: Option<Recurrence>,
    pub moved_occurrences: Vec<MovedOccurrence>,
    /// Original starts of occurrences deleted from the series.
    pub deleted_occurrences: Vec<UnixMs>,
    /// `AppointmentSequenceNumber`: goes up when the organizer changes time or recurrence.
    pub sequence: u32,
    pub is_cancelled: bool,
    pub my_response: MyResponse,
    /// When the item was last modified in the mailbox.
    pub last_modified: UnixMs,
}
