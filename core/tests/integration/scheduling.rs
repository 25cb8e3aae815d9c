//! The scheduling decisions, rule by rule, and their idempotency: an item answered once gives
//! `Nothing` when seen again, whatever path (request, calendar item, master) it comes by.

use chrono::Weekday;
use vmr_core::meeting::{
    Body, ItemType, MeetingItem, MessageKind, MovedOccurrence, MyResponse, Person, RequestType,
};
use vmr_core::recurrence::{Pattern, Range, Recurrence};
use vmr_core::scheduling::{
    decide, AcceptReply, AliasState, Decision, Facts, MeetingState, RejectReply, Schedule,
    StoredMeeting, TagFinding,
};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// 2027-01-04T09:00:00Z, a Monday.
const MONDAY_9: i64 = 1_799_053_200_000;
const NOW: i64 = MONDAY_9 - 7 * DAY;
const UID: &str = "040000008200E00074C5B7101A82E00800000000AAAA";

fn request(start: i64, end: i64) -> MeetingItem {
    MeetingItem {
        item_id: "req-1".into(),
        change_key: "ck-1".into(),
        kind: MessageKind::Request(RequestType::New),
        item_type: ItemType::Single,
        uid: UID.into(),
        recurrence_id: None,
        subject: "Planning".into(),
        body: Body {
            html: true,
            content: "<p>PXPS:-…#</p>".into(),
        },
        organizer: Person {
            name: "Alice".into(),
            email: "alice@example.com".into(),
        },
        sender: None,
        attendees: vec![],
        resources: vec![],
        start,
        end,
        time_zone: Some("W. Europe Standard Time".into()),
        recurrence: None,
        moved_occurrences: vec![],
        deleted_occurrences: vec![],
        sequence: 0,
        is_cancelled: false,
        my_response: MyResponse::NoResponseReceived,
        last_modified: NOW,
    }
}

fn weekly(count: u32) -> Recurrence {
    Recurrence {
        pattern: Pattern::Weekly {
            interval: 1,
            days: vec![Weekday::Mon],
            first_day_of_week: Weekday::Sun,
        },
        range: Range::Numbered {
            start: chrono::NaiveDate::from_ymd_opt(2027, 1, 4).expect("date"),
            count,
        },
    }
}

fn series_request() -> MeetingItem {
    let mut item = request(MONDAY_9, MONDAY_9 + HOUR);
    item.item_type = ItemType::RecurringMaster;
    item.recurrence = Some(weekly(10));
    item
}

fn alias(state: AliasState) -> TagFinding {
    TagFinding::Alias {
        alias_id: "alias-1".into(),
        state,
    }
}

fn decide_now(
    item: &MeetingItem,
    tag: Option<&TagFinding>,
    stored: Option<&StoredMeeting>,
) -> Decision {
    decide(Facts {
        item,
        tag,
        stored,
        now: NOW,
    })
    .expect("decision")
}

/// What the worker stores after executing `decision` (the state the next item meets).
fn stored_after(decision: &Decision, before: Option<&StoredMeeting>) -> StoredMeeting {
    match decision {
        Decision::Accept {
            alias_id,
            schedule,
            sequence,
            fingerprint,
            ..
        } => StoredMeeting {
            state: MeetingState::Accepted,
            alias_id: Some(alias_id.clone()),
            sequence: *sequence,
            schedule: schedule.clone(),
            fingerprint: fingerprint.clone(),
        },
        Decision::Decline {
            schedule,
            sequence,
            fingerprint,
            ..
        } => StoredMeeting {
            state: MeetingState::Declined,
            alias_id: before.and_then(|b| b.alias_id.clone()),
            sequence: *sequence,
            schedule: schedule.clone(),
            fingerprint: fingerprint.clone(),
        },
        Decision::Cancel {
            schedule,
            fingerprint,
            ..
        } => {
            let before = before.expect("a cancelled meeting was stored");
            StoredMeeting {
                state: if schedule.is_some() {
                    before.state
                } else {
                    MeetingState::Cancelled
                },
                schedule: schedule.clone().unwrap_or_else(|| before.schedule.clone()),
                fingerprint: fingerprint.clone(),
                ..before.clone()
            }
        }
        other => panic!("no stored state after {other:?}"),
    }
}

#[test]
fn a_new_single_meeting_is_accepted_once() {
    let item = request(MONDAY_9, MONDAY_9 + HOUR);
    let tag = alias(AliasState::Allocated);
    let first = decide_now(&item, Some(&tag), None);
    assert!(
        matches!(first, Decision::Accept { reply: AcceptReply::NewSingle, ref alias_id, .. } if alias_id == "alias-1"),
        "{first:?}"
    );
    let stored = stored_after(&first, None);
    // The same request again, or the calendar item the accept produced, bound to this meeting.
    let bound = alias(AliasState::Bound {
        meeting_uid: UID.into(),
    });
    assert!(matches!(
        decide_now(&item, Some(&bound), Some(&stored)),
        Decision::Nothing { .. }
    ));
    let mut calendar_copy = item.clone();
    calendar_copy.kind = MessageKind::CalendarItem;
    calendar_copy.my_response = MyResponse::Accept;
    assert!(matches!(
        decide_now(&calendar_copy, Some(&bound), Some(&stored)),
        Decision::Nothing { .. }
    ));
}

#[test]
fn a_time_change_is_accepted_as_edited_and_a_body_only_update_is_not_answered() {
    let item = request(MONDAY_9, MONDAY_9 + HOUR);
    let stored = stored_after(
        &decide_now(&item, Some(&alias(AliasState::Allocated)), None),
        None,
    );
    let bound = alias(AliasState::Bound {
        meeting_uid: UID.into(),
    });
    let mut body_only = item.clone();
    body_only.kind = MessageKind::Request(RequestType::InformationalUpdate);
    body_only.body.content.push_str("<p>agenda</p>");
    assert!(matches!(
        decide_now(&body_only, Some(&bound), Some(&stored)),
        Decision::Nothing { .. }
    ));
    let mut moved = item.clone();
    moved.kind = MessageKind::Request(RequestType::FullUpdate);
    moved.sequence = 1;
    moved.start += 2 * HOUR;
    moved.end += 2 * HOUR;
    let edited = decide_now(&moved, Some(&bound), Some(&stored));
    assert!(
        matches!(
            edited,
            Decision::Accept {
                reply: AcceptReply::EditedSingle,
                sequence: 1,
                ..
            }
        ),
        "{edited:?}"
    );
    // The original request, seen after the update (out of order), is outdated.
    let after = stored_after(&edited, Some(&stored));
    assert!(matches!(
        decide_now(&item, Some(&bound), Some(&after)),
        Decision::Nothing { .. }
    ));
}

#[test]
fn tag_problems_pick_their_reject_template() {
    let item = request(MONDAY_9, MONDAY_9 + HOUR);
    let cases = [
        (
            TagFinding::Invalid {
                reason: "no tag".into(),
            },
            RejectReply::InvalidAliasId,
        ),
        (alias(AliasState::Deleted), RejectReply::AliasDeleted),
        (
            alias(AliasState::Bound {
                meeting_uid: "ANOTHER".into(),
            }),
            RejectReply::AliasConflict,
        ),
    ];
    for (tag, expected) in cases {
        let decision = decide_now(&item, Some(&tag), None);
        match &decision {
            Decision::Decline { reply, release, .. } => {
                assert_eq!(*reply, expected);
                assert!(!release);
            }
            other => panic!("{tag:?}: expected a decline, got {other:?}"),
        }
        // Declined once: seeing the same request again sends nothing more.
        let stored = stored_after(&decision, None);
        assert!(matches!(
            decide_now(&item, Some(&tag), Some(&stored)),
            Decision::Nothing { .. }
        ));
    }
}

#[test]
fn meetings_in_the_past_are_declined() {
    let past = request(NOW - 2 * HOUR, NOW - HOUR);
    let decision = decide_now(&past, Some(&alias(AliasState::Allocated)), None);
    assert!(matches!(
        decision,
        Decision::Decline {
            reply: RejectReply::SingleMeetingPast,
            ..
        }
    ));
    let mut series = series_request();
    series.start = MONDAY_9 - 20 * 7 * DAY;
    series.end = series.start + HOUR;
    series.recurrence = Some(Recurrence {
        range: Range::Numbered {
            start: chrono::NaiveDate::from_ymd_opt(2026, 8, 17).expect("date"),
            count: 3,
        },
        ..weekly(3)
    });
    let decision = decide_now(&series, Some(&alias(AliasState::Allocated)), None);
    assert!(
        matches!(
            decision,
            Decision::Decline {
                reply: RejectReply::RecurringSeriesPast,
                ..
            }
        ),
        "{decision:?}"
    );
    // A meeting that has started but not ended is still accepted.
    let running = request(NOW - HOUR, NOW + HOUR);
    assert!(matches!(
        decide_now(&running, Some(&alias(AliasState::Allocated)), None),
        Decision::Accept { .. }
    ));
}

#[test]
fn a_series_with_a_moved_and_a_cancelled_occurrence() {
    let master = series_request();
    let tag = alias(AliasState::Allocated);
    let first = decide_now(&master, Some(&tag), None);
    assert!(matches!(
        first,
        Decision::Accept {
            reply: AcceptReply::NewSeries,
            ..
        }
    ));
    let stored = stored_after(&first, None);
    // The third occurrence moves by a day.
    let third = MONDAY_9 + 14 * DAY;
    let mut exception = request(third + DAY, third + DAY + HOUR);
    exception.item_type = ItemType::Exception;
    exception.recurrence_id = Some(third);
    let moved = decide_now(&exception, None, Some(&stored));
    let Decision::Accept {
        reply: AcceptReply::EditedOccurrence,
        ref schedule,
        ..
    } = moved
    else {
        panic!("{moved:?}")
    };
    let windows = schedule
        .windows(NOW, NOW + 365 * DAY, 100)
        .expect("windows");
    assert_eq!(windows.len(), 10);
    assert_eq!(windows[2].start, third + DAY);
    assert_eq!(windows[2].original_start, third);
    let stored = stored_after(&moved, Some(&stored));
    // The fifth is cancelled.
    let fifth = MONDAY_9 + 28 * DAY;
    let mut cancellation = request(fifth, fifth + HOUR);
    cancellation.kind = MessageKind::Cancellation;
    cancellation.item_type = ItemType::Occurrence;
    cancellation.recurrence_id = Some(fifth);
    let cancelled = decide_now(&cancellation, None, Some(&stored));
    let Decision::Cancel {
        schedule: Some(ref schedule),
        delete_vmr: false,
        ..
    } = cancelled
    else {
        panic!("{cancelled:?}")
    };
    assert_eq!(
        schedule
            .windows(NOW, NOW + 365 * DAY, 100)
            .expect("windows")
            .len(),
        9
    );
    let stored = stored_after(&cancelled, Some(&stored));
    // The master as the resource's calendar now shows it: both exceptions listed. No change.
    let mut calendar_master = master.clone();
    calendar_master.kind = MessageKind::CalendarItem;
    calendar_master.moved_occurrences = vec![MovedOccurrence {
        original_start: third,
        start: third + DAY,
        end: third + DAY + HOUR,
    }];
    calendar_master.deleted_occurrences = vec![fifth];
    let bound = alias(AliasState::Bound {
        meeting_uid: UID.into(),
    });
    let again = decide_now(&calendar_master, Some(&bound), Some(&stored));
    assert!(matches!(again, Decision::Nothing { .. }), "{again:?}");
    // And the exception and the cancellation seen again change nothing either.
    assert!(matches!(
        decide_now(&exception, None, Some(&stored)),
        Decision::Nothing { .. }
    ));
    assert!(matches!(
        decide_now(&cancellation, None, Some(&stored)),
        Decision::Nothing { .. }
    ));
}

#[test]
fn cancelling_the_meeting_deletes_its_vmr_once() {
    let item = request(MONDAY_9, MONDAY_9 + HOUR);
    let stored = stored_after(
        &decide_now(&item, Some(&alias(AliasState::Allocated)), None),
        None,
    );
    let mut cancellation = item.clone();
    cancellation.kind = MessageKind::Cancellation;
    let decision = decide_now(&cancellation, None, Some(&stored));
    assert!(matches!(
        decision,
        Decision::Cancel {
            schedule: None,
            delete_vmr: true,
            ..
        }
    ));
    let stored = stored_after(&decision, Some(&stored));
    assert!(matches!(
        decide_now(&cancellation, None, Some(&stored)),
        Decision::Nothing { .. }
    ));
    // A cancelled calendar item (AutomateProcessing AutoUpdate) means the same.
    let mut calendar_copy = item.clone();
    calendar_copy.kind = MessageKind::CalendarItem;
    calendar_copy.is_cancelled = true;
    assert!(matches!(
        decide_now(&calendar_copy, None, Some(&stored)),
        Decision::Nothing { .. }
    ));
}

#[test]
fn a_cancellation_of_an_unknown_meeting_changes_nothing() {
    let mut cancellation = request(MONDAY_9, MONDAY_9 + HOUR);
    cancellation.kind = MessageKind::Cancellation;
    assert!(matches!(
        decide_now(&cancellation, None, None),
        Decision::Nothing { .. }
    ));
}

#[test]
fn removing_the_tag_from_a_scheduled_meeting_declines_and_releases_it() {
    let item = request(MONDAY_9, MONDAY_9 + HOUR);
    let stored = stored_after(
        &decide_now(&item, Some(&alias(AliasState::Allocated)), None),
        None,
    );
    let mut edited = item.clone();
    edited.kind = MessageKind::Request(RequestType::InformationalUpdate);
    let decision = decide_now(
        &edited,
        Some(&TagFinding::Invalid {
            reason: "the tag was removed".into(),
        }),
        Some(&stored),
    );
    assert!(matches!(
        decision,
        Decision::Decline {
            reply: RejectReply::InvalidAliasId,
            release: true,
            ..
        }
    ));
}

#[test]
fn a_valid_deferred_request_waits_once() {
    let item = request(MONDAY_9, MONDAY_9 + HOUR);
    let decision = decide_now(&item, Some(&TagFinding::Deferred), None);
    let Decision::Defer { fingerprint, .. } = &decision else {
        panic!("{decision:?}")
    };
    let stored = StoredMeeting {
        state: MeetingState::Deferred,
        alias_id: None,
        sequence: 0,
        schedule: Schedule::of_item(&item),
        fingerprint: fingerprint.clone(),
    };
    assert!(matches!(
        decide_now(&item, Some(&TagFinding::Deferred), Some(&stored)),
        Decision::Nothing { .. }
    ));
}

#[test]
fn outdated_requests_are_ignored() {
    let mut item = request(MONDAY_9, MONDAY_9 + HOUR);
    item.kind = MessageKind::Request(RequestType::Outdated);
    assert!(matches!(
        decide_now(&item, Some(&alias(AliasState::Allocated)), None),
        Decision::Nothing { .. }
    ));
}
