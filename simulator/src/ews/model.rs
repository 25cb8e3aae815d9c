//! The in-memory mailbox store behind the simulated EWS endpoint: mailboxes with their
//! distinguished folders, the items in them (messages, meeting messages, calendar items), a
//! change log per folder (what `SyncFolderItems` replays) and the notification subscriptions
//! fed by every change (what `GetEvents` and `GetStreamingEvents` deliver).
//!
//! Every mutation goes through [`Store::create_item`], [`Store::update_item`],
//! [`Store::move_item`] or [`Store::delete_item`], so the change log and the subscriptions can
//! never miss a change. Item ids and change keys are opaque base64 strings as on a real server;
//! moving an item gives it a new id, as Exchange does.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use vmr_core::meeting::{Body, ItemType, MovedOccurrence, MyResponse, Person, RequestType, UnixMs};
use vmr_core::recurrence::Recurrence;

/// How a mailbox's Calendar Attendant treats incoming meeting messages (Exchange
/// `Set-CalendarProcessing -AutomateProcessing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AutomateProcessing {
    /// Requests wait in the Inbox; nothing reaches the Calendar until someone accepts.
    None,
    /// New requests go on the Calendar as tentative; updates and cancellations are applied.
    AutoUpdate,
}

/// The `Set-CalendarProcessing` switches that change what the Calendar Attendant files in a
/// mailbox when it processes a meeting request (`AutomateProcessing` AutoUpdate or
/// AutoAccept): the body dropped (`DeleteComments`), the subject dropped (`DeleteSubject`),
/// the organizer's name put in front of it (`AddOrganizerToSubject`). All off by default, as
/// vmr-scheduler needs them; Exchange's defaults for a room turn the three on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarProcessing {
    #[serde(default)]
    pub delete_comments: bool,
    #[serde(default)]
    pub delete_subject: bool,
    #[serde(default)]
    pub add_organizer_to_subject: bool,
}

impl CalendarProcessing {
    /// The subject the attendant files for `subject` sent by `organizer`: the organizer's name
    /// alone (both subject switches), empty (`DeleteSubject`), `<name> <subject>`
    /// (`AddOrganizerToSubject`) or unchanged.
    pub fn filed_subject(&self, subject: &str, organizer: &Person) -> String {
        let name = if organizer.name.is_empty() {
            organizer.email.as_str()
        } else {
            organizer.name.as_str()
        };
        match (self.delete_subject, self.add_organizer_to_subject) {
            (true, true) => name.to_owned(),
            (true, false) => String::new(),
            (false, true) => format!("{name} {subject}"),
            (false, false) => subject.to_owned(),
        }
    }

    /// The body the attendant files: empty with `DeleteComments`, else unchanged.
    pub fn filed_body(&self, body: &Body) -> Body {
        if self.delete_comments {
            Body {
                html: body.html,
                content: String::new(),
            }
        } else {
            body.clone()
        }
    }
}

/// A user mailbox or a resource (room, equipment) mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailboxKind {
    User,
    Resource,
}

/// The distinguished folders the simulator keeps in every mailbox, in the hierarchy real
/// Exchange has: the mailbox root (`root`), under it the top of the information store
/// (`msgfolderroot`, the IPM subtree), and under that the default folders every mailbox has
/// (mail, calendar, contacts, tasks, notes, journal). Meeting flows only use the Inbox,
/// Calendar, Deleted Items and Sent Items; the others exist so that clients which look up every
/// default folder find them, as on a real server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FolderName {
    Root,
    MsgFolderRoot,
    Inbox,
    Calendar,
    DeletedItems,
    SentItems,
    Drafts,
    Outbox,
    JunkEmail,
    Contacts,
    Tasks,
    Notes,
    Journal,
}

impl FolderName {
    /// Every folder, parents before children, then in display order.
    pub const ALL: [FolderName; 13] = [
        FolderName::Root,
        FolderName::MsgFolderRoot,
        FolderName::Inbox,
        FolderName::Calendar,
        FolderName::DeletedItems,
        FolderName::SentItems,
        FolderName::Drafts,
        FolderName::Outbox,
        FolderName::JunkEmail,
        FolderName::Contacts,
        FolderName::Tasks,
        FolderName::Notes,
        FolderName::Journal,
    ];

    /// The EWS `DistinguishedFolderIdNameType` value.
    pub fn distinguished_id(self) -> &'static str {
        match self {
            FolderName::Root => "root",
            FolderName::MsgFolderRoot => "msgfolderroot",
            FolderName::Inbox => "inbox",
            FolderName::Calendar => "calendar",
            FolderName::DeletedItems => "deleteditems",
            FolderName::SentItems => "sentitems",
            FolderName::Drafts => "drafts",
            FolderName::Outbox => "outbox",
            FolderName::JunkEmail => "junkemail",
            FolderName::Contacts => "contacts",
            FolderName::Tasks => "tasks",
            FolderName::Notes => "notes",
            FolderName::Journal => "journal",
        }
    }

    /// Parses a distinguished folder id (case-sensitive, as the schema's enumeration).
    pub fn from_distinguished_id(id: &str) -> Option<FolderName> {
        FolderName::ALL
            .into_iter()
            .find(|f| f.distinguished_id() == id)
    }

    /// The folder's display name in an English mailbox (the mailbox root has none, as in
    /// MAPI, where its `PR_DISPLAY_NAME` is empty).
    pub fn display_name(self) -> &'static str {
        match self {
            FolderName::Root => "",
            FolderName::MsgFolderRoot => "Top of Information Store",
            FolderName::Inbox => "Inbox",
            FolderName::Calendar => "Calendar",
            FolderName::DeletedItems => "Deleted Items",
            FolderName::SentItems => "Sent Items",
            FolderName::Drafts => "Drafts",
            FolderName::Outbox => "Outbox",
            FolderName::JunkEmail => "Junk Email",
            FolderName::Contacts => "Contacts",
            FolderName::Tasks => "Tasks",
            FolderName::Notes => "Notes",
            FolderName::Journal => "Journal",
        }
    }

    /// The folder's container class (`PR_CONTAINER_CLASS`); the two roots have none.
    pub fn folder_class(self) -> Option<&'static str> {
        match self {
            FolderName::Root | FolderName::MsgFolderRoot => None,
            FolderName::Calendar => Some("IPF.Appointment"),
            FolderName::Contacts => Some("IPF.Contact"),
            FolderName::Tasks => Some("IPF.Task"),
            FolderName::Notes => Some("IPF.StickyNote"),
            FolderName::Journal => Some("IPF.Journal"),
            _ => Some("IPF.Note"),
        }
    }

    /// The folder that contains this one; the mailbox root has none.
    pub fn parent(self) -> Option<FolderName> {
        match self {
            FolderName::Root => None,
            FolderName::MsgFolderRoot => Some(FolderName::Root),
            _ => Some(FolderName::MsgFolderRoot),
        }
    }

    /// The folders directly below this one.
    pub fn children(self) -> impl Iterator<Item = FolderName> {
        FolderName::ALL
            .into_iter()
            .filter(move |f| f.parent() == Some(self))
    }

    /// The element a folder of this kind is written as (`t:CalendarFolder`,
    /// `t:ContactsFolder`, `t:TasksFolder`, else `t:Folder`).
    pub fn element(self) -> &'static str {
        match self {
            FolderName::Calendar => "t:CalendarFolder",
            FolderName::Contacts => "t:ContactsFolder",
            FolderName::Tasks => "t:TasksFolder",
            _ => "t:Folder",
        }
    }
}

/// What an item is, which decides its EWS element (`t:Message`, `t:CalendarItem`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemKind {
    Message,
    CalendarItem,
    MeetingRequest,
    MeetingCancellation,
    MeetingResponse,
}

impl ItemKind {
    /// The element name in `t:Items`, `t:Create` and `t:Update`.
    pub fn element(self) -> &'static str {
        match self {
            ItemKind::Message => "Message",
            ItemKind::CalendarItem => "CalendarItem",
            ItemKind::MeetingRequest => "MeetingRequest",
            ItemKind::MeetingCancellation => "MeetingCancellation",
            ItemKind::MeetingResponse => "MeetingResponse",
        }
    }
}

/// An attendee of a meeting with the answer the organizer has recorded for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attendee {
    pub person: Person,
    pub response: MyResponse,
    pub last_response: Option<UnixMs>,
}

impl Attendee {
    /// An attendee who has not answered yet.
    pub fn unanswered(person: Person) -> Attendee {
        Attendee {
            person,
            response: MyResponse::Unknown,
            last_response: None,
        }
    }
}

/// The calendar part of a calendar item or meeting message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingFields {
    /// PidLidCleanGlobalObjectId bytes (instance date zeroed).
    pub goid: Vec<u8>,
    /// For an occurrence or exception message: its original start.
    pub recurrence_id: Option<UnixMs>,
    pub item_type: ItemType,
    pub start: UnixMs,
    pub end: UnixMs,
    /// Windows time zone id.
    pub time_zone: String,
    pub location: String,
    pub recurrence: Option<Recurrence>,
    pub organizer: Person,
    pub required: Vec<Attendee>,
    pub optional: Vec<Attendee>,
    pub resources: Vec<Attendee>,
    pub sequence: u32,
    /// `DateTimeStamp`: when the organizer last sent this version.
    pub date_time_stamp: UnixMs,
    pub is_cancelled: bool,
    pub my_response: MyResponse,
    pub is_organizer: bool,
    /// Moved occurrences of a series (exceptions).
    pub moved: Vec<MovedOccurrence>,
    /// Original starts of deleted occurrences.
    pub deleted: Vec<UnixMs>,
}

impl MeetingFields {
    /// Records the occurrence that started at `original_start` as deleted from the series
    /// (and forgets any move of it).
    pub fn delete_occurrence(&mut self, original_start: UnixMs) {
        self.moved.retain(|o| o.original_start != original_start);
        if !self.deleted.contains(&original_start) {
            self.deleted.push(original_start);
            self.deleted.sort_unstable();
        }
    }

    /// These fields as one occurrence of their series (a moved occurrence's request, or a
    /// cancellation of one): `item_type`, its RecurrenceId and window, no recurrence of its own.
    pub fn as_occurrence(
        &mut self,
        item_type: ItemType,
        original_start: UnixMs,
        start: UnixMs,
        end: UnixMs,
        now: UnixMs,
    ) {
        self.item_type = item_type;
        self.recurrence_id = Some(original_start);
        self.start = start;
        self.end = end;
        self.recurrence = None;
        self.moved.clear();
        self.deleted.clear();
        self.date_time_stamp = now;
    }

    /// Upper-case hex of the CleanGlobalObjectId: EWS `calendar:UID`.
    pub fn uid(&self) -> String {
        hex_upper(&self.goid)
    }

    /// PidLidGlobalObjectId (0x03): the clean id with the instance date of `recurrence_id`
    /// (YH YL M D) filled in for an occurrence or exception.
    pub fn global_object_id(&self) -> Vec<u8> {
        let mut bytes = self.goid.clone();
        if let (Some(rid), true) = (self.recurrence_id, bytes.len() >= 20) {
            if let Some(date) = chrono::DateTime::from_timestamp_millis(rid) {
                use chrono::Datelike as _;
                let year = u16::try_from(date.year()).unwrap_or(0);
                bytes[16] = (year >> 8) as u8;
                bytes[17] = (year & 0xff) as u8;
                bytes[18] = date.month() as u8;
                bytes[19] = date.day() as u8;
            }
        }
        bytes
    }

    /// `AppointmentState` bit flags: 1 meeting, 2 received, 4 cancelled.
    pub fn appointment_state(&self) -> u32 {
        let mut state = 1;
        if !self.is_organizer {
            state |= 2;
        }
        if self.is_cancelled {
            state |= 4;
        }
        state
    }
}

/// One item in a mailbox folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: String,
    /// Store-wide item number (what ids are made of).
    pub number: u64,
    /// Goes up on every change; the change key is derived from it.
    pub version: u32,
    pub mailbox: String,
    pub folder: FolderName,
    pub kind: ItemKind,
    pub item_class: String,
    pub subject: String,
    pub body: Body,
    pub from: Option<Person>,
    /// Who sent it when not `from`: a delegate sending on the organizer's behalf (`Sender`
    /// shows the delegate, `From` the organizer).
    pub sender: Option<Person>,
    pub to: Vec<Person>,
    pub created: UnixMs,
    pub received: UnixMs,
    pub last_modified: UnixMs,
    pub is_read: bool,
    pub meeting: Option<MeetingFields>,
    /// Meeting requests: `MeetingRequestType`.
    pub request_type: Option<RequestType>,
    /// Meeting responses: the answer given; meeting messages: `ResponseType`.
    pub response_type: Option<MyResponse>,
    /// Meeting messages: the calendar item they were applied to.
    pub associated_calendar_item: Option<String>,
    pub has_been_processed: bool,
}

impl Item {
    /// The opaque change key of the current version.
    pub fn change_key(&self) -> String {
        let mut bytes = vec![0x0f, 0x00, 0x00, 0x00, 0x16];
        bytes.extend_from_slice(&self.number.to_le_bytes());
        bytes.extend_from_slice(&self.version.to_le_bytes());
        B64.encode(bytes)
    }
}

/// What one change-log entry recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Create,
    Update,
    Delete,
}

/// One entry of a folder's change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub item_id: String,
    pub change: ChangeKind,
}

/// A folder: its id, its items (in arrival order: keyed by the item's number, so taking one
/// out does not scan the folder) and its change log.
#[derive(Debug, Clone, Default)]
pub struct FolderState {
    pub id: String,
    pub items: BTreeMap<u64, String>,
    pub log: Vec<LogEntry>,
}

/// One mailbox.
#[derive(Debug, Clone)]
pub struct MailboxState {
    pub email: String,
    pub name: String,
    pub kind: MailboxKind,
    pub automate: AutomateProcessing,
    /// What the Calendar Attendant strips when it processes a request.
    pub processing: CalendarProcessing,
    pub number: u32,
    pub folders: BTreeMap<FolderName, FolderState>,
}

impl MailboxState {
    /// The mailbox owner as a [`Person`].
    pub fn person(&self) -> Person {
        Person {
            name: self.name.clone(),
            email: self.email.clone(),
        }
    }

    /// The folder state (every distinguished folder exists from creation).
    pub fn folder(&self, folder: FolderName) -> Option<&FolderState> {
        self.folders.get(&folder)
    }
}

/// The kinds of notification events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Copied,
    Created,
    Deleted,
    Modified,
    Moved,
    NewMail,
    FreeBusyChanged,
}

impl EventKind {
    /// The element name (`CreatedEvent`, …), which is also the `t:EventType` value.
    pub fn element(self) -> &'static str {
        match self {
            EventKind::Copied => "CopiedEvent",
            EventKind::Created => "CreatedEvent",
            EventKind::Deleted => "DeletedEvent",
            EventKind::Modified => "ModifiedEvent",
            EventKind::Moved => "MovedEvent",
            EventKind::NewMail => "NewMailEvent",
            EventKind::FreeBusyChanged => "FreeBusyChangedEvent",
        }
    }

    /// Parses a `t:EventType` value.
    pub fn from_event_type(value: &str) -> Option<EventKind> {
        [
            EventKind::Copied,
            EventKind::Created,
            EventKind::Deleted,
            EventKind::Modified,
            EventKind::Moved,
            EventKind::NewMail,
            EventKind::FreeBusyChanged,
        ]
        .into_iter()
        .find(|k| k.element() == value)
    }
}

/// One notification event as queued for a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position in the store's event sequence (what watermarks encode).
    pub sequence: u64,
    pub kind: EventKind,
    pub timestamp: UnixMs,
    pub item_id: String,
    pub change_key: String,
    pub parent_folder_id: String,
    pub old_item_id: Option<String>,
    pub old_parent_folder_id: Option<String>,
}

/// Pull or streaming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionKind {
    Pull,
    Streaming,
}

/// A notification subscription on one mailbox.
#[derive(Debug)]
pub struct Subscription {
    pub id: String,
    pub mailbox: String,
    pub kind: SubscriptionKind,
    /// `None`: every folder (`SubscribeToAllFolders`).
    pub folders: Option<Vec<FolderName>>,
    pub event_types: Vec<EventKind>,
    /// Events not yet delivered (streaming) or not yet acknowledged by a watermark (pull).
    pub queue: VecDeque<Event>,
    /// The last watermark handed out (pull).
    pub last_watermark: u64,
    /// Woken when an event is queued.
    pub notify: Arc<tokio::sync::Notify>,
}

/// A meeting as its organizer sent it: where the organizer's item is and who got it.
#[derive(Debug, Clone)]
pub struct MeetingRecord {
    pub organizer: String,
    pub organizer_item: String,
    pub recipients: Vec<String>,
    pub cancelled: bool,
}

/// The whole simulated Exchange organisation.
#[derive(Debug, Default)]
pub struct Store {
    pub mailboxes: BTreeMap<String, MailboxState>,
    pub items: HashMap<String, Item>,
    /// Meeting items by (mailbox, folder, GOID), in arrival order: the look-ups every reply
    /// and delivery makes, without scanning the folder.
    by_goid: HashMap<(String, FolderName, Vec<u8>), BTreeMap<u64, String>>,
    pub meetings: HashMap<String, MeetingRecord>,
    pub subscriptions: HashMap<String, Subscription>,
    next_item: u64,
    next_mailbox: u32,
    next_event: u64,
}

/// Lower-cases and trims an SMTP address.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_ascii_lowercase()
}

/// Upper-case hex.
pub fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

impl Store {
    /// Adds a mailbox (or updates the name, kind and processing of an existing one).
    pub fn add_mailbox(
        &mut self,
        email: &str,
        name: &str,
        kind: MailboxKind,
        automate: AutomateProcessing,
    ) {
        let email = normalize_email(email);
        if let Some(existing) = self.mailboxes.get_mut(&email) {
            existing.name = name.to_owned();
            existing.kind = kind;
            existing.automate = automate;
            return;
        }
        self.next_mailbox += 1;
        let number = self.next_mailbox;
        let folders = FolderName::ALL
            .into_iter()
            .map(|f| {
                let id = B64.encode(format!("AQMkA{number:04}.{}", f.distinguished_id()));
                (
                    f,
                    FolderState {
                        id,
                        ..FolderState::default()
                    },
                )
            })
            .collect();
        self.mailboxes.insert(
            email.clone(),
            MailboxState {
                email,
                name: name.to_owned(),
                kind,
                automate,
                processing: CalendarProcessing::default(),
                number,
                folders,
            },
        );
    }

    /// The folder a folder id names, with its mailbox.
    pub fn folder_by_id(&self, folder_id: &str) -> Option<(String, FolderName)> {
        self.mailboxes.values().find_map(|m| {
            m.folders
                .iter()
                .find(|(_, f)| f.id == folder_id)
                .map(|(name, _)| (m.email.clone(), *name))
        })
    }

    /// The id of a mailbox folder ("" when the mailbox is unknown).
    pub fn folder_id(&self, mailbox: &str, folder: FolderName) -> String {
        self.mailboxes
            .get(mailbox)
            .and_then(|m| m.folders.get(&folder))
            .map(|f| f.id.clone())
            .unwrap_or_default()
    }

    fn new_item_id(&mut self, mailbox_number: u32) -> (String, u64) {
        self.next_item += 1;
        let number = self.next_item;
        let mut bytes = vec![0x00, 0x00, 0x2e, 0x00];
        bytes.extend_from_slice(&mailbox_number.to_le_bytes());
        bytes.extend_from_slice(&number.to_le_bytes());
        bytes.extend_from_slice(&rand::random::<[u8; 8]>());
        (format!("AAMkA{}", B64.encode(bytes)), number)
    }

    /// Puts `item` (its id, number and folder filled in here) into `mailbox`'s `folder`,
    /// logs a Create and notifies. Returns the new id, or `None` when the mailbox is unknown.
    pub fn create_item(
        &mut self,
        mailbox: &str,
        folder: FolderName,
        mut item: Item,
        now: UnixMs,
    ) -> Option<String> {
        let mailbox_number = self.mailboxes.get(mailbox)?.number;
        let (id, number) = self.new_item_id(mailbox_number);
        item.id = id.clone();
        item.number = number;
        item.mailbox = mailbox.to_owned();
        item.folder = folder;
        let is_mail = folder == FolderName::Inbox;
        let folder_state = self.mailboxes.get_mut(mailbox)?.folders.get_mut(&folder)?;
        folder_state.items.insert(number, id.clone());
        folder_state.log.push(LogEntry {
            item_id: id.clone(),
            change: ChangeKind::Create,
        });
        let folder_id = folder_state.id.clone();
        let change_key = item.change_key();
        self.index(&item, true);
        self.items.insert(id.clone(), item);
        self.emit(
            mailbox,
            folder,
            EventKind::Created,
            now,
            &id,
            &change_key,
            &folder_id,
            None,
        );
        if is_mail {
            self.emit(
                mailbox,
                folder,
                EventKind::NewMail,
                now,
                &id,
                &change_key,
                &folder_id,
                None,
            );
        }
        Some(id)
    }

    /// Changes an item in place through `change`, bumps its version and last-modified time,
    /// logs an Update and notifies. Returns `false` when there is no such item.
    pub fn update_item(&mut self, id: &str, now: UnixMs, change: impl FnOnce(&mut Item)) -> bool {
        let Some(item) = self.items.get_mut(id) else {
            return false;
        };
        change(item);
        item.version += 1;
        item.last_modified = now;
        let (mailbox, folder, change_key) = (item.mailbox.clone(), item.folder, item.change_key());
        let Some(folder_state) = self
            .mailboxes
            .get_mut(&mailbox)
            .and_then(|m| m.folders.get_mut(&folder))
        else {
            return false;
        };
        folder_state.log.push(LogEntry {
            item_id: id.to_owned(),
            change: ChangeKind::Update,
        });
        let folder_id = folder_state.id.clone();
        self.emit(
            &mailbox,
            folder,
            EventKind::Modified,
            now,
            id,
            &change_key,
            &folder_id,
            None,
        );
        true
    }

    /// Removes an item for good, logs a Delete and notifies.
    pub fn delete_item(&mut self, id: &str, now: UnixMs) -> Option<Item> {
        let item = self.items.remove(id)?;
        self.index(&item, false);
        let folder_state = self
            .mailboxes
            .get_mut(&item.mailbox)
            .and_then(|m| m.folders.get_mut(&item.folder))?;
        folder_state.items.remove(&item.number);
        folder_state.log.push(LogEntry {
            item_id: id.to_owned(),
            change: ChangeKind::Delete,
        });
        let folder_id = folder_state.id.clone();
        let change_key = item.change_key();
        self.emit(
            &item.mailbox.clone(),
            item.folder,
            EventKind::Deleted,
            now,
            id,
            &change_key,
            &folder_id,
            None,
        );
        Some(item)
    }

    /// Moves an item to another folder of its mailbox; it gets a new id (as in Exchange).
    /// Returns the new id.
    pub fn move_item(&mut self, id: &str, to: FolderName, now: UnixMs) -> Option<String> {
        let item = self.items.get(id)?;
        if item.folder == to {
            return Some(id.to_owned());
        }
        let old_folder_id = self.folder_id(&item.mailbox, item.folder);
        let mailbox = item.mailbox.clone();
        let mut item = self.remove_quietly(id)?;
        item.version += 1;
        let mailbox_number = self.mailboxes.get(&mailbox)?.number;
        let (new_id, number) = self.new_item_id(mailbox_number);
        item.id = new_id.clone();
        item.number = number;
        item.folder = to;
        let folder_state = self.mailboxes.get_mut(&mailbox)?.folders.get_mut(&to)?;
        folder_state.items.insert(number, new_id.clone());
        folder_state.log.push(LogEntry {
            item_id: new_id.clone(),
            change: ChangeKind::Create,
        });
        let folder_id = folder_state.id.clone();
        let change_key = item.change_key();
        self.index(&item, true);
        self.items.insert(new_id.clone(), item);
        self.emit(
            &mailbox,
            to,
            EventKind::Moved,
            now,
            &new_id,
            &change_key,
            &folder_id,
            Some((id.to_owned(), old_folder_id)),
        );
        Some(new_id)
    }

    /// Takes an item out of its folder with a Delete in the log but no event (the caller
    /// reports the move).
    fn remove_quietly(&mut self, id: &str) -> Option<Item> {
        let item = self.items.remove(id)?;
        self.index(&item, false);
        if let Some(folder_state) = self
            .mailboxes
            .get_mut(&item.mailbox)
            .and_then(|m| m.folders.get_mut(&item.folder))
        {
            folder_state.items.remove(&item.number);
            folder_state.log.push(LogEntry {
                item_id: id.to_owned(),
                change: ChangeKind::Delete,
            });
        }
        Some(item)
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        mailbox: &str,
        folder: FolderName,
        kind: EventKind,
        now: UnixMs,
        item_id: &str,
        change_key: &str,
        folder_id: &str,
        moved_from: Option<(String, String)>,
    ) {
        self.next_event += 1;
        let sequence = self.next_event;
        for subscription in self.subscriptions.values_mut() {
            if subscription.mailbox != mailbox {
                continue;
            }
            let folder_matches = match &subscription.folders {
                None => true,
                Some(folders) => {
                    folders.contains(&folder)
                        || moved_from.as_ref().is_some_and(|(_, old)| {
                            folders.iter().any(|f| {
                                self.mailboxes
                                    .get(mailbox)
                                    .and_then(|m| m.folders.get(f))
                                    .is_some_and(|s| &s.id == old)
                            })
                        })
                }
            };
            if !folder_matches || !subscription.event_types.contains(&kind) {
                continue;
            }
            subscription.queue.push_back(Event {
                sequence,
                kind,
                timestamp: now,
                item_id: item_id.to_owned(),
                change_key: change_key.to_owned(),
                parent_folder_id: folder_id.to_owned(),
                old_item_id: moved_from.as_ref().map(|(id, _)| id.clone()),
                old_parent_folder_id: moved_from.as_ref().map(|(_, f)| f.clone()),
            });
            subscription.notify.notify_one();
        }
    }

    /// The current position of the event sequence (a fresh pull subscription's watermark).
    pub fn event_position(&self) -> u64 {
        self.next_event
    }

    /// Adds (`present`) or removes a meeting item in the GOID index.
    fn index(&mut self, item: &Item, present: bool) {
        let Some(meeting) = item.meeting.as_ref() else {
            return;
        };
        let key = (item.mailbox.clone(), item.folder, meeting.goid.clone());
        if present {
            self.by_goid
                .entry(key)
                .or_default()
                .insert(item.number, item.id.clone());
        } else if let Some(ids) = self.by_goid.get_mut(&key) {
            ids.remove(&item.number);
            if ids.is_empty() {
                self.by_goid.remove(&key);
            }
        }
    }

    /// The meeting items with this GOID in `mailbox`'s `folder`, in arrival order.
    pub fn items_for_goid<'a>(
        &'a self,
        mailbox: &str,
        folder: FolderName,
        goid: &[u8],
    ) -> impl Iterator<Item = &'a Item> + 'a {
        self.by_goid
            .get(&(mailbox.to_owned(), folder, goid.to_vec()))
            .into_iter()
            .flat_map(|ids| ids.values())
            .filter_map(|id| self.items.get(id))
    }

    /// The calendar item (master or single) for a meeting in `mailbox`'s calendar.
    pub fn calendar_item_for(&self, mailbox: &str, goid: &[u8]) -> Option<&Item> {
        self.items_for_goid(mailbox, FolderName::Calendar, goid)
            .next()
    }

    /// The items of a folder, in arrival order.
    pub fn folder_items(&self, mailbox: &str, folder: FolderName) -> Vec<&Item> {
        self.mailboxes
            .get(mailbox)
            .and_then(|m| m.folder(folder))
            .map(|f| {
                f.items
                    .values()
                    .filter_map(|id| self.items.get(id))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A blank item of `kind`, to be filled in and passed to [`Store::create_item`].
pub fn blank_item(kind: ItemKind, item_class: &str, now: UnixMs) -> Item {
    Item {
        id: String::new(),
        number: 0,
        version: 0,
        mailbox: String::new(),
        folder: FolderName::Inbox,
        kind,
        item_class: item_class.to_owned(),
        subject: String::new(),
        body: Body::default(),
        from: None,
        sender: None,
        to: Vec::new(),
        created: now,
        received: now,
        last_modified: now,
        is_read: false,
        meeting: None,
        request_type: None,
        response_type: None,
        associated_calendar_item: None,
        has_been_processed: false,
    }
}

/// Encodes the sync position of a folder as an opaque SyncState.
pub fn encode_sync_state(mailbox: &str, folder: FolderName, position: usize) -> String {
    let text = format!(
        "vmrsim-sync1\n{mailbox}\n{}\n{position}",
        folder.distinguished_id()
    );
    let check = text
        .bytes()
        .fold(0u32, |acc, b| acc.rotate_left(5) ^ u32::from(b));
    B64.encode(format!("{text}\n{check:08x}"))
}

/// Decodes a SyncState made by [`encode_sync_state`] for this mailbox and folder.
pub fn decode_sync_state(state: &str, mailbox: &str, folder: FolderName) -> Option<usize> {
    let bytes = B64.decode(state.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (body, check) = text.rsplit_once('\n')?;
    let expected = body
        .bytes()
        .fold(0u32, |acc, b| acc.rotate_left(5) ^ u32::from(b));
    if format!("{expected:08x}") != check {
        return None;
    }
    let mut parts = body.split('\n');
    if parts.next()? != "vmrsim-sync1"
        || parts.next()? != mailbox
        || parts.next()? != folder.distinguished_id()
    {
        return None;
    }
    parts.next()?.parse().ok()
}

/// Encodes an event-sequence position as a watermark.
pub fn encode_watermark(position: u64) -> String {
    let mut bytes = vec![0x01, 0x00, 0x00, 0x00];
    bytes.extend_from_slice(&position.to_le_bytes());
    B64.encode(bytes)
}

/// Decodes a watermark made by [`encode_watermark`].
pub fn decode_watermark(watermark: &str) -> Option<u64> {
    let bytes = B64.decode(watermark.trim()).ok()?;
    if bytes.len() != 12 || bytes[..4] != [0x01, 0x00, 0x00, 0x00] {
        return None;
    }
    let mut number = [0u8; 8];
    number.copy_from_slice(&bytes[4..]);
    Some(u64::from_le_bytes(number))
}

/// The id of one occurrence of a series: the master id and its original start.
pub fn encode_occurrence_id(master_id: &str, original_start: UnixMs) -> String {
    format!(
        "AAMkOcc{}",
        B64.encode(format!("{master_id}\n{original_start}"))
    )
}

/// Decodes an occurrence id made by [`encode_occurrence_id`].
pub fn decode_occurrence_id(id: &str) -> Option<(String, UnixMs)> {
    let rest = id.strip_prefix("AAMkOcc")?;
    let text = String::from_utf8(B64.decode(rest).ok()?).ok()?;
    let (master, start) = text.split_once('\n')?;
    Some((master.to_owned(), start.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_states_round_trip_and_reject_garbage() {
        let state = encode_sync_state("room@contoso.com", FolderName::Inbox, 42);
        assert_eq!(
            decode_sync_state(&state, "room@contoso.com", FolderName::Inbox),
            Some(42)
        );
        assert_eq!(
            decode_sync_state(&state, "room@contoso.com", FolderName::Calendar),
            None
        );
        assert_eq!(
            decode_sync_state(
                "H4sIAAAAAAAEAO29B2AcSZY==",
                "room@contoso.com",
                FolderName::Inbox
            ),
            None
        );
        let mut tampered = B64.decode(&state).expect("b64");
        let last = tampered.len() - 12;
        tampered[last] = b'9';
        assert_eq!(
            decode_sync_state(&B64.encode(tampered), "room@contoso.com", FolderName::Inbox),
            None
        );
    }

    #[test]
    fn watermarks_and_occurrence_ids_round_trip() {
        assert_eq!(decode_watermark(&encode_watermark(7)), Some(7));
        assert_eq!(decode_watermark("AAAAAGUhAAAAAAAAAQ=="), None);
        let id = encode_occurrence_id("AAMkAbc+/=", 1_700_000_000_000);
        assert_eq!(
            decode_occurrence_id(&id),
            Some(("AAMkAbc+/=".to_owned(), 1_700_000_000_000))
        );
    }
}
