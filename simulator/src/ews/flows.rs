//! Meeting flows of the simulated Exchange: what an organizer's client sends (a new meeting,
//! updates, a moved or cancelled occurrence, a cancellation), how the transport delivers it to
//! each recipient mailbox, how a mailbox's Calendar Attendant applies it (`AutomateProcessing`
//! `None` leaves requests in the Inbox; `AutoUpdate` keeps a tentative copy on the Calendar),
//! and how a resource's answers (AcceptItem, DeclineItem, RemoveItem over EWS) change both
//! mailboxes (reference §1.8 and §5).
//!
//! The organizer's calendar item is the meeting's truth; every message delivered is built from
//! it. Meetings carry a fresh PidLidCleanGlobalObjectId each (reference §1.4).

use vmr_core::meeting::{Body, ItemType, MovedOccurrence, MyResponse, Person, RequestType, UnixMs};
use vmr_core::recurrence::Series;

use super::model::{
    blank_item, normalize_email, Attendee, AutomateProcessing, FolderName, Item, ItemKind,
    MailboxKind, MeetingFields, MeetingRecord, Store,
};
use super::{
    CalendarSummary, ExchangeServer, FlowError, MeetingUpdate, MessageSummary, SendMeeting,
};

/// The constant class id that starts every PidLidGlobalObjectId.
const GOID_CLASS_ID: [u8; 16] = [
    0x04, 0x00, 0x00, 0x00, 0x82, 0x00, 0xE0, 0x00, 0x74, 0xC5, 0xB7, 0x10, 0x1A, 0x82, 0xE0, 0x08,
];

/// Milliseconds between 1601-01-01 and 1970-01-01.
const FILETIME_UNIX_OFFSET_MS: i64 = 11_644_473_600_000;

/// A fresh CleanGlobalObjectId: class id, zero instance date, FILETIME `now`, reserved zeros,
/// data size 16 and a new GUID.
pub fn new_clean_goid(now: UnixMs) -> Vec<u8> {
    let filetime = u64::try_from(now.saturating_add(FILETIME_UNIX_OFFSET_MS))
        .unwrap_or(0)
        .saturating_mul(10_000);
    let mut bytes = Vec::with_capacity(56);
    bytes.extend_from_slice(&GOID_CLASS_ID);
    bytes.extend_from_slice(&[0, 0, 0, 0]);
    bytes.extend_from_slice(&filetime.to_le_bytes());
    bytes.extend_from_slice(&[0; 8]);
    bytes.extend_from_slice(&16u32.to_le_bytes());
    bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes
}

/// Decodes an upper- or lower-case hex UID into GOID bytes.
pub fn goid_from_uid(uid: &str) -> Option<Vec<u8>> {
    if !uid.len().is_multiple_of(2) {
        return None;
    }
    (0..uid.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(uid.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A resource's answer to a meeting (EWS AcceptItem, TentativelyAcceptItem, DeclineItem).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Accept,
    Tentative,
    Decline,
}

impl Answer {
    fn my_response(self) -> MyResponse {
        match self {
            Answer::Accept => MyResponse::Accept,
            Answer::Tentative => MyResponse::Tentative,
            Answer::Decline => MyResponse::Decline,
        }
    }

    fn item_class(self) -> &'static str {
        match self {
            Answer::Accept => "IPM.Schedule.Meeting.Resp.Pos",
            Answer::Tentative => "IPM.Schedule.Meeting.Resp.Tent",
            Answer::Decline => "IPM.Schedule.Meeting.Resp.Neg",
        }
    }

    fn subject_prefix(self) -> &'static str {
        match self {
            Answer::Accept => "Accepted: ",
            Answer::Tentative => "Tentative: ",
            Answer::Decline => "Declined: ",
        }
    }
}

/// A per-message EWS error: response code and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EwsError {
    pub code: &'static str,
    pub text: String,
}

impl EwsError {
    /// `ErrorItemNotFound` with Exchange's text.
    pub fn item_not_found() -> EwsError {
        EwsError {
            code: "ErrorItemNotFound",
            text: "The specified object was not found in the store.".to_owned(),
        }
    }

    /// Any code with a text.
    pub fn new(code: &'static str, text: impl Into<String>) -> EwsError {
        EwsError {
            code,
            text: text.into(),
        }
    }
}

/// What to do with the resource's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// `SaveOnly`: record it, tell nobody.
    SaveOnly,
    /// `SendOnly`: tell the organizer.
    SendOnly,
    /// `SendAndSaveCopy`: tell the organizer and keep a copy in Sent Items.
    SendAndSaveCopy,
}

fn person_for(store: &Store, email: &str) -> Person {
    let email = normalize_email(email);
    match store.mailboxes.get(&email) {
        Some(m) => m.person(),
        None => Person {
            name: email.clone(),
            email,
        },
    }
}

/// Subject without a leading "Canceled: ".
fn plain_subject(subject: &str) -> &str {
    subject.strip_prefix("Canceled: ").unwrap_or(subject)
}

impl ExchangeServer {
    /// The organizer sends a new meeting: the organizer's calendar item (a RecurringMaster for
    /// a series) with a fresh GOID, and a `NewMeetingRequest` in every known recipient's Inbox.
    /// The organizer's mailbox is created (a user mailbox) when it does not exist. Returns the
    /// meeting's UID (hex CleanGlobalObjectId).
    pub fn send_meeting(&self, meeting: SendMeeting) -> Result<String, FlowError> {
        self.send_meeting_as(meeting, None)
    }

    /// As [`ExchangeServer::send_meeting`], sent by the organizer's delegate `delegate` (an
    /// existing mailbox) on the organizer's behalf: the requests' `Sender` is the delegate,
    /// their `From` and `Organizer` the organizer.
    pub fn send_meeting_on_behalf(
        &self,
        meeting: SendMeeting,
        delegate: &str,
    ) -> Result<String, FlowError> {
        self.send_meeting_as(meeting, Some(delegate))
    }

    fn send_meeting_as(
        &self,
        meeting: SendMeeting,
        delegate: Option<&str>,
    ) -> Result<String, FlowError> {
        if meeting.end < meeting.start {
            return Err(FlowError::Invalid(format!(
                "end {} is before start {}",
                meeting.end, meeting.start
            )));
        }
        let organizer_email = normalize_email(&meeting.organizer.email);
        if organizer_email.is_empty() {
            return Err(FlowError::Invalid(
                "the organizer has no address".to_owned(),
            ));
        }
        let now = self.now();
        let mut store = self.store();
        if !store.mailboxes.contains_key(&organizer_email) {
            let name = if meeting.organizer.name.is_empty() {
                organizer_email.clone()
            } else {
                meeting.organizer.name.clone()
            };
            store.add_mailbox(
                &organizer_email,
                &name,
                MailboxKind::User,
                AutomateProcessing::AutoUpdate,
            );
        }
        let organizer = store
            .mailboxes
            .get(&organizer_email)
            .map(|m| m.person())
            .ok_or(FlowError::UnknownMailbox(organizer_email.clone()))?;
        let sender = match delegate {
            Some(d) => {
                let d = normalize_email(d);
                Some(
                    store
                        .mailboxes
                        .get(&d)
                        .map(|m| m.person())
                        .ok_or(FlowError::UnknownMailbox(d))?,
                )
            }
            None => None,
        };
        let attendees = |list: &[String], store: &Store| -> Vec<Attendee> {
            list.iter()
                .map(|e| normalize_email(e))
                .filter(|e| !e.is_empty() && *e != organizer_email)
                .map(|e| Attendee::unanswered(person_for(store, &e)))
                .collect()
        };
        let fields = MeetingFields {
            goid: new_clean_goid(now),
            recurrence_id: None,
            item_type: if meeting.recurrence.is_some() {
                ItemType::RecurringMaster
            } else {
                ItemType::Single
            },
            start: meeting.start,
            end: meeting.end,
            time_zone: meeting.time_zone.clone(),
            location: String::new(),
            recurrence: meeting.recurrence.clone(),
            organizer: organizer.clone(),
            required: attendees(&meeting.required, &store),
            optional: attendees(&meeting.optional, &store),
            resources: attendees(&meeting.resources, &store),
            sequence: 0,
            date_time_stamp: now,
            is_cancelled: false,
            my_response: MyResponse::Organizer,
            is_organizer: true,
            moved: Vec::new(),
            deleted: Vec::new(),
        };
        if let Some(series) = series_of(&fields) {
            series
                .occurrences(meeting.start, i64::MAX, 1)
                .map_err(|e| FlowError::Invalid(e.to_string()))?;
        }
        let uid = fields.uid();
        let mut recipients: Vec<String> = Vec::new();
        for a in fields
            .required
            .iter()
            .chain(&fields.optional)
            .chain(&fields.resources)
        {
            if !recipients.contains(&a.person.email) {
                recipients.push(a.person.email.clone());
            }
        }
        let mut item = blank_item(ItemKind::CalendarItem, "IPM.Appointment", now);
        item.subject = meeting.subject.clone();
        item.body = meeting.body.clone();
        item.from = Some(organizer);
        item.is_read = true;
        item.meeting = Some(fields.clone());
        let organizer_item = store
            .create_item(&organizer_email, FolderName::Calendar, item, now)
            .ok_or(FlowError::UnknownMailbox(organizer_email.clone()))?;
        store.meetings.insert(
            uid.clone(),
            MeetingRecord {
                organizer: organizer_email,
                organizer_item,
                recipients: recipients.clone(),
                cancelled: false,
            },
        );
        deliver_request(
            &mut store,
            &recipients,
            &fields,
            &Delivery {
                subject: &meeting.subject,
                body: &meeting.body,
                request_type: RequestType::New,
                sender: sender.as_ref(),
            },
            now,
        );
        Ok(uid)
    }

    /// The organizer changes a meeting and sends the update: a change of time or recurrence
    /// bumps `AppointmentSequenceNumber` and delivers a `FullUpdate`; a subject or body change
    /// alone delivers an `InformationalUpdate` with the same sequence.
    pub fn update_meeting(&self, uid: &str, update: MeetingUpdate) -> Result<(), FlowError> {
        let now = self.now();
        let mut store = self.store();
        organizer_update(&mut store, uid, update, true, now)
    }

    /// The organizer moves one occurrence of a series: the master's `ModifiedOccurrences`
    /// lists it and every recipient gets a request for that occurrence (CalendarItemType
    /// Exception, RecurrenceId = `original_start`).
    pub fn move_occurrence(
        &self,
        uid: &str,
        original_start: UnixMs,
        start: UnixMs,
        end: UnixMs,
    ) -> Result<(), FlowError> {
        if end < start {
            return Err(FlowError::Invalid(format!(
                "end {end} is before start {start}"
            )));
        }
        let now = self.now();
        let mut store = self.store();
        let (record, master) = organizer_master(&store, uid)?;
        check_occurrence(&master, uid, original_start)?;
        let moved = MovedOccurrence {
            original_start,
            start,
            end,
        };
        store.update_item(&record.organizer_item, now, |item| {
            if let Some(m) = item.meeting.as_mut() {
                m.moved.retain(|o| o.original_start != original_start);
                m.moved.push(moved);
                m.moved.sort_by_key(|o| o.original_start);
            }
        });
        let (subject, body, mut fields) = organizer_snapshot(&store, &record)?;
        fields.as_occurrence(ItemType::Exception, original_start, start, end, now);
        deliver_request(
            &mut store,
            &record.recipients,
            &fields,
            &Delivery {
                subject: &subject,
                body: &body,
                request_type: RequestType::FullUpdate,
                sender: None,
            },
            now,
        );
        Ok(())
    }

    /// The organizer cancels one occurrence: the master's `DeletedOccurrences` lists it and
    /// every recipient gets a MeetingCancellation with its RecurrenceId (CalendarItemType
    /// Occurrence).
    pub fn cancel_occurrence(&self, uid: &str, original_start: UnixMs) -> Result<(), FlowError> {
        let now = self.now();
        let mut store = self.store();
        let (record, master) = organizer_master(&store, uid)?;
        check_occurrence(&master, uid, original_start)?;
        let master_fields = master
            .meeting
            .clone()
            .ok_or(FlowError::NotRecurring(uid.to_owned()))?;
        let (start, end) = master_fields
            .moved
            .iter()
            .find(|m| m.original_start == original_start)
            .map(|m| (m.start, m.end))
            .unwrap_or((
                original_start,
                original_start + (master_fields.end - master_fields.start),
            ));
        store.update_item(&record.organizer_item, now, |item| {
            if let Some(m) = item.meeting.as_mut() {
                m.delete_occurrence(original_start);
            }
        });
        let (subject, body, mut fields) = organizer_snapshot(&store, &record)?;
        fields.as_occurrence(ItemType::Occurrence, original_start, start, end, now);
        deliver_cancellation(
            &mut store,
            &record.recipients,
            &fields,
            &subject,
            &body,
            now,
        );
        Ok(())
    }

    /// The organizer cancels the whole meeting: it leaves the organizer's calendar and every
    /// recipient gets a MeetingCancellation.
    pub fn cancel_meeting(&self, uid: &str) -> Result<(), FlowError> {
        let now = self.now();
        let mut store = self.store();
        cancel_whole(&mut store, uid, now)
    }

    /// Messages in one folder of a mailbox, in arrival order.
    pub fn mailbox_messages(
        &self,
        email: &str,
        folder: FolderName,
    ) -> Result<Vec<MessageSummary>, FlowError> {
        let email = normalize_email(email);
        let store = self.store();
        if !store.mailboxes.contains_key(&email) {
            return Err(FlowError::UnknownMailbox(email));
        }
        Ok(store
            .folder_items(&email, folder)
            .into_iter()
            .map(|item| MessageSummary {
                item_class: item.item_class.clone(),
                subject: item.subject.clone(),
                body: item.body.clone(),
                from: item.from.clone(),
                uid: item.meeting.as_ref().map(MeetingFields::uid),
                received: item.received,
            })
            .collect())
    }

    /// How many messages in one folder of a mailbox have an item class starting with
    /// `class_prefix` (counting without copying them, for benchmarks that poll).
    pub fn count_messages(
        &self,
        email: &str,
        folder: FolderName,
        class_prefix: &str,
    ) -> Result<usize, FlowError> {
        let email = normalize_email(email);
        let store = self.store();
        if !store.mailboxes.contains_key(&email) {
            return Err(FlowError::UnknownMailbox(email));
        }
        Ok(store
            .folder_items(&email, folder)
            .into_iter()
            .filter(|item| item.item_class.starts_with(class_prefix))
            .count())
    }

    /// The calendar items (masters and singles) of a mailbox.
    pub fn calendar_items(&self, email: &str) -> Result<Vec<CalendarSummary>, FlowError> {
        let email = normalize_email(email);
        let store = self.store();
        if !store.mailboxes.contains_key(&email) {
            return Err(FlowError::UnknownMailbox(email));
        }
        Ok(store
            .folder_items(&email, FolderName::Calendar)
            .into_iter()
            .filter_map(|item| {
                let m = item.meeting.as_ref()?;
                Some(CalendarSummary {
                    uid: m.uid(),
                    subject: item.subject.clone(),
                    start: m.start,
                    end: m.end,
                    my_response: m.my_response,
                    is_cancelled: m.is_cancelled,
                    item_type: m.item_type,
                })
            })
            .collect())
    }

    /// The resource (`mailbox`) answers the meeting request or calendar item `reference_id`
    /// (EWS CreateItem AcceptItem / TentativelyAcceptItem / DeclineItem).
    pub(crate) fn answer(
        &self,
        mailbox: &str,
        reference_id: &str,
        answer: Answer,
        reply_body: Option<Body>,
        disposition: Disposition,
    ) -> Result<(), EwsError> {
        let now = self.now();
        let mut store = self.store();
        let reference = store
            .items
            .get(reference_id)
            .filter(|i| i.mailbox == mailbox)
            .cloned()
            .ok_or_else(EwsError::item_not_found)?;
        let fields = reference.meeting.clone().ok_or_else(|| {
            EwsError::new(
                "ErrorInvalidReferenceItem",
                "The reference item does not support the requested operation.",
            )
        })?;
        match reference.kind {
            ItemKind::MeetingRequest => {
                if is_out_of_date(&store, &reference) {
                    return Err(EwsError::new(
                        "ErrorCalendarMeetingRequestIsOutOfDate",
                        "The meeting request is out of date. The calendar couldn't be updated.",
                    ));
                }
            }
            ItemKind::CalendarItem => {
                if fields.is_organizer {
                    return Err(EwsError::new(
                        "ErrorCalendarIsOrganizerForAccept",
                        "The organizer can't accept or decline a meeting.",
                    ));
                }
                if fields.is_cancelled && answer != Answer::Decline {
                    return Err(EwsError::new(
                        "ErrorCalendarIsCancelledForAccept",
                        "A cancelled meeting can't be accepted.",
                    ));
                }
            }
            _ => {
                return Err(EwsError::new(
                    "ErrorInvalidReferenceItem",
                    "The reference item does not support the requested operation.",
                ))
            }
        }
        let subject = plain_subject(&reference.subject).to_owned();
        // The calendar.
        let calendar_id = match answer {
            Answer::Accept | Answer::Tentative => apply_to_calendar(
                &mut store,
                mailbox,
                &fields,
                &subject,
                &reference.body,
                Some(answer.my_response()),
                now,
            ),
            Answer::Decline => {
                remove_from_calendar(&mut store, mailbox, &fields, now);
                None
            }
        };
        // The answered request goes to Deleted Items.
        if reference.kind == ItemKind::MeetingRequest {
            store.update_item(reference_id, now, |item| {
                item.has_been_processed = true;
                item.is_read = true;
                item.response_type = Some(answer.my_response());
                item.associated_calendar_item = calendar_id.clone();
            });
            store.move_item(reference_id, FolderName::DeletedItems, now);
        }
        if disposition == Disposition::SaveOnly {
            return Ok(());
        }
        // The organizer hears about it.
        let responder = person_for(&store, mailbox);
        let Some(record) = store.meetings.get(&fields.uid()).cloned() else {
            return Ok(());
        };
        let mut response = blank_item(ItemKind::MeetingResponse, answer.item_class(), now);
        response.subject = format!("{}{subject}", answer.subject_prefix());
        response.body = reply_body.unwrap_or(Body {
            html: false,
            content: String::new(),
        });
        response.from = Some(responder.clone());
        response.to = vec![fields.organizer.clone()];
        let mut response_fields = fields.clone();
        response_fields.is_organizer = false;
        response_fields.my_response = answer.my_response();
        response.meeting = Some(response_fields);
        response.response_type = Some(answer.my_response());
        response.associated_calendar_item = Some(record.organizer_item.clone());
        if disposition == Disposition::SendAndSaveCopy {
            let mut copy = response.clone();
            copy.is_read = true;
            store.create_item(mailbox, FolderName::SentItems, copy, now);
        }
        store.create_item(&record.organizer, FolderName::Inbox, response, now);
        // The organizer's Calendar Attendant records the answer on the meeting.
        store.update_item(&record.organizer_item, now, |item| {
            if let Some(m) = item.meeting.as_mut() {
                for a in m
                    .required
                    .iter_mut()
                    .chain(m.optional.iter_mut())
                    .chain(m.resources.iter_mut())
                {
                    if a.person.email == responder.email {
                        a.response = answer.my_response();
                        a.last_response = Some(now);
                    }
                }
            }
        });
        Ok(())
    }

    /// The resource takes a cancelled meeting off its calendar (EWS CreateItem RemoveItem with
    /// a MeetingCancellation as reference); the cancellation moves to Deleted Items.
    pub(crate) fn remove_cancelled(
        &self,
        mailbox: &str,
        reference_id: &str,
    ) -> Result<(), EwsError> {
        let now = self.now();
        let mut store = self.store();
        let reference = store
            .items
            .get(reference_id)
            .filter(|i| i.mailbox == mailbox)
            .cloned()
            .ok_or_else(EwsError::item_not_found)?;
        let (ItemKind::MeetingCancellation, Some(fields)) = (reference.kind, reference.meeting)
        else {
            return Err(EwsError::new(
                "ErrorInvalidReferenceItem",
                "RemoveItem needs a meeting cancellation as its reference item.",
            ));
        };
        remove_from_calendar(&mut store, mailbox, &fields, now);
        store.update_item(reference_id, now, |item| {
            item.has_been_processed = true;
            item.is_read = true;
        });
        store.move_item(reference_id, FolderName::DeletedItems, now);
        Ok(())
    }

    /// An EWS UpdateItem on an organizer's calendar item: applies the change and, when
    /// `send` is true, delivers the update like [`ExchangeServer::update_meeting`].
    pub(crate) fn organizer_item_update(
        &self,
        uid: &str,
        update: MeetingUpdate,
        send: bool,
    ) -> Result<(), FlowError> {
        let now = self.now();
        let mut store = self.store();
        organizer_update(&mut store, uid, update, send, now)
    }

    /// An EWS DeleteItem of an organizer's meeting with cancellations sent.
    pub(crate) fn organizer_cancel(&self, uid: &str) -> Result<(), FlowError> {
        let now = self.now();
        let mut store = self.store();
        cancel_whole(&mut store, uid, now)
    }
}

/// The series a master's fields describe.
pub fn series_of(fields: &MeetingFields) -> Option<Series<'_>> {
    Some(Series {
        recurrence: fields.recurrence.as_ref()?,
        first_start: fields.start,
        first_end: fields.end,
        time_zone: Some(fields.time_zone.as_str()).filter(|z| !z.is_empty()),
        moved: &fields.moved,
        deleted: &fields.deleted,
    })
}

fn organizer_master(store: &Store, uid: &str) -> Result<(MeetingRecord, Item), FlowError> {
    let uid = uid.to_ascii_uppercase();
    let record = store
        .meetings
        .get(&uid)
        .cloned()
        .ok_or(FlowError::UnknownMeeting(uid.clone()))?;
    if record.cancelled {
        return Err(FlowError::Cancelled(uid));
    }
    let master = store
        .items
        .get(&record.organizer_item)
        .cloned()
        .ok_or(FlowError::UnknownMeeting(uid.clone()))?;
    Ok((record, master))
}

fn check_occurrence(master: &Item, uid: &str, original_start: UnixMs) -> Result<(), FlowError> {
    let fields = master
        .meeting
        .as_ref()
        .ok_or(FlowError::NotRecurring(uid.to_owned()))?;
    let recurrence = fields
        .recurrence
        .as_ref()
        .ok_or(FlowError::NotRecurring(uid.to_owned()))?;
    let zone = Some(fields.time_zone.as_str()).filter(|z| !z.is_empty());
    let found = vmr_core::recurrence::occurrences(
        recurrence,
        fields.start,
        fields.end,
        zone,
        original_start,
        original_start.saturating_add(1),
        4,
    )
    .map_err(|e| FlowError::Invalid(e.to_string()))?;
    if found.iter().any(|o| o.original_start == original_start)
        && !fields.deleted.contains(&original_start)
    {
        Ok(())
    } else {
        Err(FlowError::NoSuchOccurrence {
            uid: uid.to_owned(),
            original_start,
        })
    }
}

fn organizer_snapshot(
    store: &Store,
    record: &MeetingRecord,
) -> Result<(String, Body, MeetingFields), FlowError> {
    let item = store
        .items
        .get(&record.organizer_item)
        .ok_or(FlowError::UnknownMeeting(record.organizer_item.clone()))?;
    let fields = item
        .meeting
        .clone()
        .ok_or(FlowError::UnknownMeeting(record.organizer_item.clone()))?;
    Ok((item.subject.clone(), item.body.clone(), fields))
}

fn organizer_update(
    store: &mut Store,
    uid: &str,
    update: MeetingUpdate,
    send: bool,
    now: UnixMs,
) -> Result<(), FlowError> {
    let (record, master) = organizer_master(store, uid)?;
    let current = master
        .meeting
        .clone()
        .ok_or(FlowError::UnknownMeeting(uid.to_owned()))?;
    let start = update.start.unwrap_or(current.start);
    let end = update.end.unwrap_or(current.end);
    if end < start {
        return Err(FlowError::Invalid(format!(
            "end {end} is before start {start}"
        )));
    }
    let recurrence = update
        .recurrence
        .clone()
        .unwrap_or_else(|| current.recurrence.clone());
    let time_changed = start != current.start || end != current.end;
    let recurrence_changed = recurrence != current.recurrence;
    let full = time_changed || recurrence_changed;
    store.update_item(&record.organizer_item, now, |item| {
        if let Some(subject) = &update.subject {
            item.subject = subject.clone();
        }
        if let Some(body) = &update.body {
            item.body = body.clone();
        }
        if let Some(m) = item.meeting.as_mut() {
            m.start = start;
            m.end = end;
            if recurrence_changed {
                m.recurrence = recurrence.clone();
                m.item_type = if recurrence.is_some() {
                    ItemType::RecurringMaster
                } else {
                    ItemType::Single
                };
                m.moved.clear();
                m.deleted.clear();
            }
            if full {
                m.sequence += 1;
            }
            if send {
                m.date_time_stamp = now;
            }
        }
    });
    if !send {
        return Ok(());
    }
    let (subject, body, fields) = organizer_snapshot(store, &record)?;
    let request_type = if full {
        RequestType::FullUpdate
    } else {
        RequestType::InformationalUpdate
    };
    deliver_request(
        store,
        &record.recipients,
        &fields,
        &Delivery {
            subject: &subject,
            body: &body,
            request_type,
            sender: None,
        },
        now,
    );
    Ok(())
}

fn cancel_whole(store: &mut Store, uid: &str, now: UnixMs) -> Result<(), FlowError> {
    let (record, _) = organizer_master(store, uid)?;
    store.update_item(&record.organizer_item, now, |item| {
        if let Some(m) = item.meeting.as_mut() {
            m.is_cancelled = true;
            m.sequence += 1;
            m.date_time_stamp = now;
        }
    });
    let (subject, body, fields) = organizer_snapshot(store, &record)?;
    store.delete_item(&record.organizer_item, now);
    if let Some(r) = store.meetings.get_mut(&fields.uid()) {
        r.cancelled = true;
    }
    deliver_cancellation(store, &record.recipients, &fields, &subject, &body, now);
    Ok(())
}

/// Puts a meeting request built from the organizer's `fields` into each known recipient's
/// Inbox, applying it to the Calendar first where the Calendar Attendant runs (AutoUpdate);
/// there the attendant also applies the mailbox's [`super::CalendarProcessing`] switches to the
/// subject and body of both copies.
/// What one meeting request carries besides the meeting's fields.
struct Delivery<'a> {
    subject: &'a str,
    body: &'a Body,
    request_type: RequestType,
    /// A delegate sending on the organizer's behalf.
    sender: Option<&'a Person>,
}

fn deliver_request(
    store: &mut Store,
    recipients: &[String],
    fields: &MeetingFields,
    delivery: &Delivery<'_>,
    now: UnixMs,
) {
    let Delivery {
        subject,
        body,
        request_type,
        sender,
    } = *delivery;
    for recipient in recipients {
        let Some((automate, processing)) = store
            .mailboxes
            .get(recipient)
            .map(|m| (m.automate, m.processing))
        else {
            continue;
        };
        let mut received = fields.clone();
        received.is_organizer = false;
        received.my_response = MyResponse::NoResponseReceived;
        // The attendant strips subject and body (Set-CalendarProcessing) from what it files.
        let (subject, body) = if automate == AutomateProcessing::AutoUpdate {
            (
                processing.filed_subject(subject, &fields.organizer),
                processing.filed_body(body),
            )
        } else {
            (subject.to_owned(), body.clone())
        };
        let calendar_id = if automate == AutomateProcessing::AutoUpdate {
            apply_to_calendar(store, recipient, &received, &subject, &body, None, now)
        } else {
            None
        };
        let mut request = meeting_message(
            ItemKind::MeetingRequest,
            "IPM.Schedule.Meeting.Request",
            &subject,
            &body,
            received,
            calendar_id,
            now,
        );
        request.request_type = Some(request_type);
        request.sender = sender.cloned();
        store.create_item(recipient, FolderName::Inbox, request, now);
    }
}

/// Takes the meeting (or, for an occurrence, that occurrence) off `mailbox`'s calendar.
fn remove_from_calendar(store: &mut Store, mailbox: &str, fields: &MeetingFields, now: UnixMs) {
    let Some(existing) = store
        .calendar_item_for(mailbox, &fields.goid)
        .map(|i| i.id.clone())
    else {
        return;
    };
    match fields.recurrence_id {
        Some(rid) => {
            store.update_item(&existing, now, |item| {
                if let Some(m) = item.meeting.as_mut() {
                    m.delete_occurrence(rid);
                }
            });
        }
        None => {
            store.delete_item(&existing, now);
        }
    }
}

/// A meeting message (request or cancellation) from the organizer in `received` to its
/// attendees and resources; `calendar_id`: the recipient's calendar copy the Calendar
/// Attendant already updated, if any.
fn meeting_message(
    kind: ItemKind,
    item_class: &str,
    subject: &str,
    body: &Body,
    received: MeetingFields,
    calendar_id: Option<String>,
    now: UnixMs,
) -> Item {
    let mut message = blank_item(kind, item_class, now);
    message.subject = subject.to_owned();
    message.body = body.clone();
    message.from = Some(received.organizer.clone());
    message.to = received
        .required
        .iter()
        .chain(&received.resources)
        .map(|a| a.person.clone())
        .collect();
    message.meeting = Some(received);
    message.response_type = Some(MyResponse::NoResponseReceived);
    message.has_been_processed = calendar_id.is_some();
    message.associated_calendar_item = calendar_id;
    message
}

/// Puts a cancellation into each known recipient's Inbox, marking the calendar copy cancelled
/// where the Calendar Attendant runs.
fn deliver_cancellation(
    store: &mut Store,
    recipients: &[String],
    fields: &MeetingFields,
    subject: &str,
    body: &Body,
    now: UnixMs,
) {
    let subject = format!("Canceled: {}", plain_subject(subject));
    for recipient in recipients {
        let Some(automate) = store.mailboxes.get(recipient).map(|m| m.automate) else {
            continue;
        };
        let mut received = fields.clone();
        received.is_organizer = false;
        received.is_cancelled = true;
        received.my_response = MyResponse::NoResponseReceived;
        let mut calendar_id = None;
        if automate == AutomateProcessing::AutoUpdate {
            if let Some(existing) = store
                .calendar_item_for(recipient, &fields.goid)
                .map(|i| i.id.clone())
            {
                let occurrence = fields.recurrence_id;
                let cancelled_subject = subject.clone();
                let sequence = fields.sequence;
                store.update_item(&existing, now, |item| {
                    if let Some(m) = item.meeting.as_mut() {
                        match occurrence {
                            Some(rid) => m.delete_occurrence(rid),
                            None => {
                                m.is_cancelled = true;
                                m.sequence = sequence;
                                item.subject = cancelled_subject;
                            }
                        }
                    }
                });
                calendar_id = Some(existing);
            }
        }
        let cancellation = meeting_message(
            ItemKind::MeetingCancellation,
            "IPM.Schedule.Meeting.Canceled",
            &subject,
            body,
            received,
            calendar_id,
            now,
        );
        store.create_item(recipient, FolderName::Inbox, cancellation, now);
    }
}

/// Creates or updates `mailbox`'s calendar copy of a meeting from a received message's
/// fields. `answer`: the response to record (`None` keeps the current one, or
/// NoResponseReceived for a new tentative item). Returns the calendar item id.
fn apply_to_calendar(
    store: &mut Store,
    mailbox: &str,
    fields: &MeetingFields,
    subject: &str,
    body: &Body,
    answer: Option<MyResponse>,
    now: UnixMs,
) -> Option<String> {
    let existing = store
        .calendar_item_for(mailbox, &fields.goid)
        .map(|i| i.id.clone());
    if let Some(rid) = fields.recurrence_id {
        // An exception or occurrence message: applied to the master when there is one.
        if let Some(master) = existing {
            let moved = MovedOccurrence {
                original_start: rid,
                start: fields.start,
                end: fields.end,
            };
            store.update_item(&master, now, |item| {
                if let Some(m) = item.meeting.as_mut() {
                    m.moved.retain(|o| o.original_start != rid);
                    m.deleted.retain(|d| *d != rid);
                    m.moved.push(moved);
                    m.moved.sort_by_key(|o| o.original_start);
                }
            });
            return Some(master);
        }
    }
    match existing {
        Some(id) => {
            let fields = fields.clone();
            let subject = subject.to_owned();
            let body = body.clone();
            store.update_item(&id, now, |item| {
                let previous = item.meeting.as_ref().map(|m| m.my_response);
                let mut updated = fields;
                updated.my_response = answer
                    .or(previous)
                    .unwrap_or(MyResponse::NoResponseReceived);
                item.meeting = Some(updated);
                item.subject = subject;
                item.body = body;
            });
            Some(id)
        }
        None => {
            let mut item = blank_item(ItemKind::CalendarItem, "IPM.Appointment", now);
            item.subject = subject.to_owned();
            item.body = body.clone();
            item.from = Some(fields.organizer.clone());
            item.is_read = true;
            let mut copy = fields.clone();
            copy.my_response = answer.unwrap_or(MyResponse::NoResponseReceived);
            item.meeting = Some(copy);
            store.create_item(mailbox, FolderName::Calendar, item, now)
        }
    }
}

/// A meeting request is out of date when the mailbox's calendar already holds a newer
/// version of the meeting, or a newer message for the same meeting (and occurrence) arrived.
pub(crate) fn is_out_of_date(store: &Store, request: &Item) -> bool {
    let Some(fields) = request.meeting.as_ref() else {
        return false;
    };
    let newer = |other: &MeetingFields| {
        other.sequence > fields.sequence
            || (other.sequence == fields.sequence && other.date_time_stamp > fields.date_time_stamp)
    };
    if fields.recurrence_id.is_none() {
        if let Some(calendar) = store
            .calendar_item_for(&request.mailbox, &fields.goid)
            .and_then(|i| i.meeting.as_ref())
        {
            if newer(calendar) {
                return true;
            }
        }
    }
    store
        .items_for_goid(&request.mailbox, FolderName::Inbox, &fields.goid)
        .filter(|i| i.id != request.id)
        .filter(|i| {
            matches!(
                i.kind,
                ItemKind::MeetingRequest | ItemKind::MeetingCancellation
            )
        })
        .filter_map(|i| i.meeting.as_ref())
        .any(|m| m.goid == fields.goid && m.recurrence_id == fields.recurrence_id && newer(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn goid_layout_matches_the_reference_vector() {
        let uid = "040000008200E00074C5B7101A82E008000000007069352667BBC9010000000000000000100000000C74ABD802575A41BC09B0E12352657B";
        let bytes = goid_from_uid(uid).expect("hex");
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(&bytes),
            "BAAAAIIA4AB0xbcQGoLgCAAAAABwaTUmZ7vJAQAAAAAAAAAAEAAAAAx0q9gCV1pBvAmw4SNSZXs="
        );
        let fresh = new_clean_goid(1_767_225_600_000);
        assert_eq!(fresh.len(), 56);
        assert_eq!(&fresh[..16], &bytes[..16]);
        assert_eq!(&fresh[16..20], &[0, 0, 0, 0]);
        assert_eq!(&fresh[36..40], &16u32.to_le_bytes());
        let filetime = u64::from_le_bytes(fresh[20..28].try_into().expect("8 bytes"));
        assert_eq!(
            filetime,
            (1_767_225_600_000u64 + 11_644_473_600_000) * 10_000
        );
        assert_ne!(
            new_clean_goid(0)[40..],
            new_clean_goid(0)[40..],
            "fresh GUIDs"
        );
    }
}
