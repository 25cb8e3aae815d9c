//! Scheduling decisions: what the resource does with one meeting item, as a pure function of
//! the item, what its tag resolved to, what we stored for the meeting before, and the time.
//!
//! The mailbox worker (`server/src/mailbox_worker/`) gathers those facts, calls [`decide`], and
//! only executes the [`Decision`]: it writes the new state and the reply in one transaction and
//! sends the reply afterwards. Nothing here performs I/O, so every rule is unit-tested directly.
//!
//! The rules follow Pexip's order (reference: pexip-secure-scheduler.md §5.2): find the tag →
//! tag valid for this integration → alias not deleted → alias not bound to another meeting →
//! not entirely in the past → create or update → accept. Each failure has its reply template.
//!
//! Idempotency: every decision that changes something carries a [`Decision::fingerprint`] of
//! the facts it answered (the schedule, the alias and the outcome). When the stored meeting
//! already carries the same fingerprint, the change has been answered and the decision is
//! [`Decision::Nothing`]: the same item seen again, in any order, after any crash, gives no
//! second reply.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::meeting::{ItemType, MeetingItem, MessageKind, MovedOccurrence, RequestType, UnixMs};
use crate::recurrence::{self, Occurrence, Recurrence, RecurrenceError};

/// When a meeting takes place: a single window, or a series with its exceptions. This is what
/// the store keeps (as JSON) and what occurrence windows are computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// The single meeting's window, or the series' first occurrence by the pattern.
    pub start: UnixMs,
    pub end: UnixMs,
    /// Windows time zone id the organizer scheduled in.
    pub time_zone: Option<String>,
    /// `Some` for a series.
    pub recurrence: Option<Recurrence>,
    /// Moved occurrences, sorted by original start, one per original start.
    pub moved: Vec<MovedOccurrence>,
    /// Original starts of deleted occurrences, sorted, unique.
    pub deleted: Vec<UnixMs>,
}

impl Schedule {
    /// The schedule an item describes on its own (exceptions included for a series item).
    pub fn of_item(item: &MeetingItem) -> Schedule {
        let mut schedule = Schedule {
            start: item.start,
            end: item.end,
            time_zone: item.time_zone.clone(),
            recurrence: item.recurrence.clone(),
            moved: Vec::new(),
            deleted: Vec::new(),
        };
        if schedule.recurrence.is_some() {
            for moved in &item.moved_occurrences {
                schedule.set_moved(*moved);
            }
            for deleted in &item.deleted_occurrences {
                schedule.set_deleted(*deleted);
            }
        }
        schedule
    }

    /// Whether this is a recurring series.
    pub fn is_series(&self) -> bool {
        self.recurrence.is_some()
    }

    /// Records (or replaces) a moved occurrence.
    pub fn set_moved(&mut self, moved: MovedOccurrence) {
        match self
            .moved
            .binary_search_by_key(&moved.original_start, |m| m.original_start)
        {
            Ok(i) => self.moved[i] = moved,
            Err(i) => self.moved.insert(i, moved),
        }
    }

    /// Records a deleted occurrence (and forgets any move of it).
    pub fn set_deleted(&mut self, original_start: UnixMs) {
        self.moved.retain(|m| m.original_start != original_start);
        if let Err(i) = self.deleted.binary_search(&original_start) {
            self.deleted.insert(i, original_start);
        }
    }

    /// The windows of the meeting that overlap `[from, until)`, at most `limit`: the meeting
    /// itself for a single meeting, the occurrences with their exceptions for a series.
    pub fn windows(
        &self,
        from: UnixMs,
        until: UnixMs,
        limit: usize,
    ) -> Result<Vec<Occurrence>, RecurrenceError> {
        let Some(rec) = &self.recurrence else {
            let single = Occurrence {
                index: 0,
                original_start: self.start,
                start: self.start,
                end: self.end,
            };
            return Ok(if single.end > from && single.start < until {
                vec![single]
            } else {
                Vec::new()
            });
        };
        self.series(rec).occurrences(from, until, limit)
    }

    fn series<'a>(&'a self, rec: &'a Recurrence) -> recurrence::Series<'a> {
        recurrence::Series {
            recurrence: rec,
            first_start: self.start,
            first_end: self.end,
            time_zone: self.time_zone.as_deref(),
            moved: &self.moved,
            deleted: &self.deleted,
        }
    }

    /// When the meeting's last window ends (`None`: a series without end).
    pub fn last_end(&self) -> Result<Option<UnixMs>, RecurrenceError> {
        let Some(rec) = &self.recurrence else {
            return Ok(Some(self.end));
        };
        self.series(rec).last_end()
    }

    /// Whether any window of the meeting ends after `now`.
    pub fn has_future_window(&self, now: UnixMs) -> Result<bool, RecurrenceError> {
        match self.last_end()? {
            Some(end) if end <= now => Ok(false),
            _ if self.recurrence.is_none() => Ok(true),
            // Every remaining occurrence may have been deleted or moved into the past.
            _ => Ok(!self.windows(now, UnixMs::MAX, 1)?.is_empty()),
        }
    }
}

/// The state of an alias, as the decision needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasState {
    /// Handed to the pane, not yet used by a meeting.
    Allocated,
    /// Used by the meeting with this uid.
    Bound { meeting_uid: String },
    /// Its VMR was deleted; it can never be used again.
    Deleted,
}

/// What the meeting's tag turned out to be (the worker resolves it; see
/// `server/src/tag_resolution.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagFinding {
    /// A PXPS tag of this integration naming this alias.
    Alias { alias_id: String, state: AliasState },
    /// No tag, an edited or foreign tag, an invalid or replayed TOK: why.
    Invalid { reason: String },
    /// A valid TOK (deferred request); completing it is the mailbox worker's second part.
    Deferred,
}

/// Where a meeting stands after its last answered change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MeetingState {
    Accepted,
    Declined,
    Cancelled,
    Deferred,
}

impl MeetingState {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            MeetingState::Accepted => "accepted",
            MeetingState::Declined => "declined",
            MeetingState::Cancelled => "cancelled",
            MeetingState::Deferred => "deferred",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<MeetingState> {
        Some(match s {
            "accepted" => MeetingState::Accepted,
            "declined" => MeetingState::Declined,
            "cancelled" => MeetingState::Cancelled,
            "deferred" => MeetingState::Deferred,
            _ => return None,
        })
    }
}

/// What we stored for a meeting before this item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMeeting {
    pub state: MeetingState,
    pub alias_id: Option<String>,
    pub sequence: u32,
    pub schedule: Schedule,
    /// Fingerprint of the last answered change ([`Decision::fingerprint`]).
    pub fingerprint: String,
}

/// The five accept templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptReply {
    NewSingle,
    EditedSingle,
    NewSeries,
    EditedSeries,
    EditedOccurrence,
}

impl AcceptReply {
    /// The template's name in [`crate::templates::TEMPLATES`].
    pub fn template(self) -> &'static str {
        match self {
            AcceptReply::NewSingle => "accept_new_single_meeting",
            AcceptReply::EditedSingle => "accept_edited_single_meeting",
            AcceptReply::NewSeries => "accept_new_recurring_series",
            AcceptReply::EditedSeries => "accept_edited_recurring_series",
            AcceptReply::EditedOccurrence => "accept_edited_occurrence",
        }
    }
}

/// The six reject templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReply {
    InvalidAliasId,
    AliasConflict,
    AliasDeleted,
    SingleMeetingPast,
    RecurringSeriesPast,
    GeneralError,
}

impl RejectReply {
    /// The template's name in [`crate::templates::TEMPLATES`].
    pub fn template(self) -> &'static str {
        match self {
            RejectReply::InvalidAliasId => "reject_invalid_alias_id",
            RejectReply::AliasConflict => "reject_alias_conflict",
            RejectReply::AliasDeleted => "reject_alias_deleted",
            RejectReply::SingleMeetingPast => "reject_single_meeting_past",
            RejectReply::RecurringSeriesPast => "reject_recurring_series_past",
            RejectReply::GeneralError => "reject_general_error",
        }
    }

    /// The error code recorded in `scheduling_operation` (≤ 50 characters).
    pub fn error_code(self) -> &'static str {
        match self {
            RejectReply::InvalidAliasId => "invalid_alias_id",
            RejectReply::AliasConflict => "alias_conflict",
            RejectReply::AliasDeleted => "alias_deleted",
            RejectReply::SingleMeetingPast => "single_meeting_past",
            RejectReply::RecurringSeriesPast => "recurring_series_past",
            RejectReply::GeneralError => "general_error",
        }
    }
}

/// What to do with one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Schedule (or reschedule) the meeting on `alias_id` and accept with `reply`.
    Accept {
        reply: AcceptReply,
        alias_id: String,
        schedule: Schedule,
        sequence: u32,
        fingerprint: String,
    },
    /// Decline with `reply`. `release`: the meeting was scheduled before, so its windows go.
    Decline {
        reply: RejectReply,
        detail: String,
        schedule: Schedule,
        sequence: u32,
        release: bool,
        fingerprint: String,
    },
    /// The whole meeting, or one occurrence, was cancelled.
    Cancel {
        /// `Some`: one occurrence went; the series' new schedule. `None`: the whole meeting.
        schedule: Option<Schedule>,
        /// Nothing of the meeting remains: delete its VMR (and retire its alias).
        delete_vmr: bool,
        fingerprint: String,
    },
    /// A valid TOK: keep the meeting waiting for the deferred completion.
    Defer {
        schedule: Schedule,
        fingerprint: String,
    },
    /// Nothing to change or answer (why, for the log).
    Nothing { why: &'static str },
}

impl Decision {
    /// The fingerprint the stored meeting takes, if this decision changes it.
    pub fn fingerprint(&self) -> Option<&str> {
        match self {
            Decision::Accept { fingerprint, .. }
            | Decision::Decline { fingerprint, .. }
            | Decision::Cancel { fingerprint, .. }
            | Decision::Defer { fingerprint, .. } => Some(fingerprint),
            Decision::Nothing { .. } => None,
        }
    }
}

/// Everything [`decide`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub item: &'a MeetingItem,
    /// The tag's meaning; `None` for items whose tag is not needed (cancellations, occurrence
    /// exceptions of a scheduled series).
    pub tag: Option<&'a TagFinding>,
    pub stored: Option<&'a StoredMeeting>,
    pub now: UnixMs,
}

/// Whether [`decide`] needs the item's tag resolved (resolving a TOK consumes its nonce, so
/// the worker resolves only when needed).
pub fn needs_tag(item: &MeetingItem) -> bool {
    !is_cancellation(item) && !is_occurrence(item)
}

fn is_cancellation(item: &MeetingItem) -> bool {
    item.kind == MessageKind::Cancellation
        || (item.kind == MessageKind::CalendarItem && item.is_cancelled)
}

fn is_occurrence(item: &MeetingItem) -> bool {
    matches!(item.item_type, ItemType::Occurrence | ItemType::Exception)
        && item.recurrence_id.is_some()
}

fn fingerprint(outcome: &str, alias: Option<&str>, schedule: Option<&Schedule>) -> String {
    let mut hash = Sha256::new();
    hash.update(outcome.as_bytes());
    hash.update(b"|");
    hash.update(alias.unwrap_or("-").as_bytes());
    hash.update(b"|");
    // Serialising a Schedule cannot fail (no maps with non-string keys, no custom impls).
    hash.update(
        schedule
            .and_then(|s| serde_json::to_vec(s).ok())
            .unwrap_or_default(),
    );
    hex::encode(&hash.finalize()[..16])
}

/// Decides what to do with one item. Pure: same facts, same decision.
pub fn decide(facts: Facts<'_>) -> Result<Decision, RecurrenceError> {
    let item = facts.item;
    if let MessageKind::Request(RequestType::Outdated) = item.kind {
        return Ok(Decision::Nothing {
            why: "the request is outdated: a newer one superseded it",
        });
    }
    // A cancellation always applies (meeting cancellations carry no sequence number).
    if is_cancellation(item) {
        return decide_cancellation(item, facts.stored, facts.now);
    }
    if let Some(stored) = facts.stored {
        if item.sequence < stored.sequence {
            return Ok(Decision::Nothing {
                why: "the item is older than the change already answered",
            });
        }
    }
    if is_occurrence(item) {
        return decide_occurrence(item, facts.stored);
    }
    let Some(tag) = facts.tag else {
        return Ok(Decision::Nothing {
            why: "the tag was not resolved",
        });
    };
    decide_meeting(item, tag, facts.stored, facts.now)
}

fn unchanged(stored: Option<&StoredMeeting>, fingerprint: &str) -> bool {
    stored.is_some_and(|s| s.fingerprint == fingerprint)
}

fn decide_meeting(
    item: &MeetingItem,
    tag: &TagFinding,
    stored: Option<&StoredMeeting>,
    now: UnixMs,
) -> Result<Decision, RecurrenceError> {
    let mut schedule = Schedule::of_item(item);
    // Exceptions learnt from occurrence requests stay unless the organizer changed the series
    // itself (a higher sequence number), which makes Outlook drop them.
    if let Some(stored) = stored {
        if stored.sequence == item.sequence && schedule.is_series() {
            for moved in &stored.schedule.moved {
                if !schedule.deleted.contains(&moved.original_start)
                    && !schedule
                        .moved
                        .iter()
                        .any(|m| m.original_start == moved.original_start)
                {
                    schedule.set_moved(*moved);
                }
            }
            for deleted in &stored.schedule.deleted {
                schedule.set_deleted(*deleted);
            }
        }
    }
    let was_scheduled = stored.is_some_and(|s| s.state == MeetingState::Accepted);
    let decline = |reply: RejectReply, detail: String, schedule: Schedule| {
        let fingerprint = fingerprint(reply.error_code(), None, Some(&schedule));
        if unchanged(stored, &fingerprint) {
            return Decision::Nothing {
                why: "this decline was already sent",
            };
        }
        Decision::Decline {
            reply,
            detail,
            schedule,
            sequence: item.sequence,
            release: was_scheduled,
            fingerprint,
        }
    };
    let alias_id = match tag {
        TagFinding::Invalid { reason } => {
            return Ok(decline(
                RejectReply::InvalidAliasId,
                reason.clone(),
                schedule,
            ))
        }
        TagFinding::Deferred => {
            let fingerprint = fingerprint("deferred", None, Some(&schedule));
            if unchanged(stored, &fingerprint) {
                return Ok(Decision::Nothing {
                    why: "the deferred meeting is already waiting",
                });
            }
            return Ok(Decision::Defer {
                schedule,
                fingerprint,
            });
        }
        TagFinding::Alias { alias_id, state } => match state {
            AliasState::Deleted => {
                return Ok(decline(
                    RejectReply::AliasDeleted,
                    format!("alias {alias_id} was deleted"),
                    schedule,
                ))
            }
            AliasState::Bound { meeting_uid } if *meeting_uid != item.uid => {
                return Ok(decline(
                    RejectReply::AliasConflict,
                    format!("alias {alias_id} is used by meeting {meeting_uid}"),
                    schedule,
                ))
            }
            _ => alias_id,
        },
    };
    if !schedule.has_future_window(now)? {
        let reply = if schedule.is_series() {
            RejectReply::RecurringSeriesPast
        } else {
            RejectReply::SingleMeetingPast
        };
        return Ok(decline(
            reply,
            "every window of the meeting has ended".into(),
            schedule,
        ));
    }
    let fingerprint = fingerprint("accepted", Some(alias_id), Some(&schedule));
    if unchanged(stored, &fingerprint) {
        return Ok(Decision::Nothing {
            why: "the meeting is already scheduled like this",
        });
    }
    let reply = match (was_scheduled, schedule.is_series()) {
        (false, false) => AcceptReply::NewSingle,
        (true, false) => AcceptReply::EditedSingle,
        (false, true) => AcceptReply::NewSeries,
        (true, true) => AcceptReply::EditedSeries,
    };
    Ok(Decision::Accept {
        reply,
        alias_id: alias_id.clone(),
        schedule,
        sequence: item.sequence,
        fingerprint,
    })
}

fn decide_occurrence(
    item: &MeetingItem,
    stored: Option<&StoredMeeting>,
) -> Result<Decision, RecurrenceError> {
    let (Some(stored), Some(original_start)) = (stored, item.recurrence_id) else {
        return Ok(Decision::Nothing {
            why: "an occurrence of a series that has not been scheduled",
        });
    };
    let (MeetingState::Accepted, Some(alias_id)) = (stored.state, stored.alias_id.as_ref()) else {
        return Ok(Decision::Nothing {
            why: "an occurrence of a series that is not scheduled",
        });
    };
    let mut schedule = stored.schedule.clone();
    schedule.set_moved(MovedOccurrence {
        original_start,
        start: item.start,
        end: item.end,
    });
    let fingerprint = fingerprint("accepted", Some(alias_id), Some(&schedule));
    if unchanged(Some(stored), &fingerprint) {
        return Ok(Decision::Nothing {
            why: "the occurrence is already scheduled like this",
        });
    }
    Ok(Decision::Accept {
        reply: AcceptReply::EditedOccurrence,
        alias_id: alias_id.clone(),
        schedule,
        sequence: stored.sequence,
        fingerprint,
    })
}

fn decide_cancellation(
    item: &MeetingItem,
    stored: Option<&StoredMeeting>,
    now: UnixMs,
) -> Result<Decision, RecurrenceError> {
    let Some(stored) = stored else {
        return Ok(Decision::Nothing {
            why: "a cancellation of a meeting that was never scheduled",
        });
    };
    if stored.state == MeetingState::Cancelled {
        return Ok(Decision::Nothing {
            why: "the meeting is already cancelled",
        });
    }
    if is_occurrence(item) && stored.schedule.is_series() {
        let Some(original_start) = item.recurrence_id else {
            return Ok(Decision::Nothing {
                why: "an occurrence cancellation without its occurrence",
            });
        };
        let mut schedule = stored.schedule.clone();
        schedule.set_deleted(original_start);
        // The series stays accepted with one window fewer: the same fingerprint as accepting
        // that schedule, so seeing the master (which now lists the deletion) again is no change.
        let fingerprint = fingerprint("accepted", stored.alias_id.as_deref(), Some(&schedule));
        if schedule == stored.schedule || unchanged(Some(stored), &fingerprint) {
            return Ok(Decision::Nothing {
                why: "the occurrence is already cancelled",
            });
        }
        let delete_vmr = !schedule.has_future_window(now)?;
        return Ok(Decision::Cancel {
            schedule: Some(schedule),
            delete_vmr,
            fingerprint,
        });
    }
    Ok(Decision::Cancel {
        schedule: None,
        delete_vmr: true,
        fingerprint: fingerprint("cancelled", stored.alias_id.as_deref(), None),
    })
}
