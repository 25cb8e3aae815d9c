//! EWS replies in the shapes real servers send (fixtures in `tests/fixtures/ews/`, synthesised
//! from the documented captures; see `tests/fixtures/PROVENANCE.md`) are read into the
//! backend-neutral types: faults and in-band throttling with their back-off, impersonation
//! faults, mixed GetItem batches, sync pages, meeting requests, recurring masters, occurrence
//! cancellations, streaming bodies split across chunks, pull events, and malformed replies.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Weekday};
use vmr_core::meeting::{
    Body, ItemType, MeetingItem, MessageKind, MovedOccurrence, MyResponse, Person, RequestType,
};
use vmr_core::recurrence::{Pattern, Range, Recurrence};
use vmr_exchange::ews::response::{self, EwsError, ResponseClass};
use vmr_exchange::mailbox::{Change, Fetched, ItemRef, MailboxError};

/// The reference's GlobalObjectId test vector (instance date zero).
const GOID_HEX: &str = "040000008200E00074C5B7101A82E008000000007069352667BBC9010000000000000000100000000C74ABD802575A41BC09B0E12352657B";

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ews")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {} is missing: {e}", path.display()))
}

fn op(name: &str) -> vmr_exchange::xml::Element {
    response::parse_envelope(&fixture(name))
        .unwrap_or_else(|e| panic!("{name} should be a readable operation response: {e:?}"))
}

fn ms(t: &str) -> i64 {
    DateTime::parse_from_rfc3339(t)
        .unwrap_or_else(|e| panic!("{t}: {e}"))
        .timestamp_millis()
}

fn item(id: &str) -> ItemRef {
    ItemRef {
        id: id.into(),
        change_key: "ck".into(),
    }
}

fn meeting(fetched: &Fetched) -> &MeetingItem {
    match fetched {
        Fetched::Meeting(m) => m,
        other => panic!("expected a meeting, got {other:?}"),
    }
}

fn single_meeting(name: &str) -> MeetingItem {
    let results = response::parse_get_items(&op(name), &[item("requested")]);
    assert_eq!(results.len(), 1, "{name}");
    match &results[0] {
        Ok(f) => meeting(f).clone(),
        Err(e) => panic!("{name}: {e:?}"),
    }
}

fn person(name: &str, email: &str) -> Person {
    Person {
        name: name.into(),
        email: email.into(),
    }
}

#[test]
fn a_server_busy_fault_carries_its_back_off() {
    let err = response::parse_envelope(&fixture("fault-server-busy.xml"))
        .expect_err("a SOAP fault is an error");
    assert_eq!(
        err,
        EwsError::Fault {
            code: "ErrorServerBusy".into(),
            message: "The server cannot service this request right now. Try again later.".into(),
            back_off: Some(Duration::from_millis(297_749)),
        }
    );
    assert!(matches!(
        err.into_mailbox_error(),
        MailboxError::Throttled(d) if d == Duration::from_millis(297_749)
    ));
}

#[test]
fn in_band_server_busy_reads_the_back_off_from_the_messages_namespace() {
    let op = op("sync-server-busy-inband.xml");
    let messages = response::response_messages(&op);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].class, ResponseClass::Error);
    assert_eq!(messages[0].back_off, Some(Duration::from_millis(5000)));
    let err = response::parse_sync_folder_items(&op).expect_err("an error message");
    match &err {
        EwsError::Response {
            code,
            message,
            back_off,
        } => {
            assert_eq!(code, "ErrorServerBusy");
            assert!(message.contains("ConcurrentSyncCalls"), "{message}");
            assert_eq!(*back_off, Some(Duration::from_millis(5000)));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        err.into_mailbox_error(),
        MailboxError::Throttled(d) if d == Duration::from_secs(5)
    ));
}

#[test]
fn impersonation_faults_are_denials() {
    for (file, code, text) in [
        (
            "fault-impersonation-header.xml",
            "ErrorInvalidExchangeImpersonationHeaderData",
            "ExchangeImpersonation SOAP header must not exist for this type of OAuth token.",
        ),
        (
            "fault-impersonate-user-denied.xml",
            "ErrorImpersonateUserDenied",
            "The account does not have permission to impersonate the requested user.",
        ),
    ] {
        let err = response::parse_envelope(&fixture(file)).expect_err(file);
        assert_eq!(
            err,
            EwsError::Fault {
                code: code.into(),
                message: text.into(),
                back_off: None
            },
            "{file}"
        );
        match err.into_mailbox_error() {
            MailboxError::Denied(why) => assert!(why.contains(code), "{why}"),
            other => panic!("{file}: {other:?}"),
        }
    }
}

#[test]
fn a_get_item_batch_mixes_items_gone_items_other_items_and_errors() {
    let requested: Vec<ItemRef> = [
        "AAMkSingle",
        "AAMkDeleted",
        "AAMkNote",
        "AAMkTentative",
        "bad",
    ]
    .into_iter()
    .map(item)
    .collect();
    let results = response::parse_get_items(&op("get-items-mixed-batch.xml"), &requested);
    assert_eq!(results.len(), 5);

    let single = meeting(results[0].as_ref().expect("the calendar item"));
    assert_eq!(single.item_id, "AAMkSingle");
    assert_eq!(single.change_key, "DwAAABYAAAC8");
    assert_eq!(single.kind, MessageKind::CalendarItem);
    assert_eq!(single.item_type, ItemType::Single);
    assert_eq!(single.my_response, MyResponse::Tentative);
    assert_eq!(single.time_zone.as_deref(), Some("Pacific Standard Time"));
    assert_eq!(
        single.uid,
        "040000008200E00074C5B7101A82E00800000000D0E1F2A3B4C5D9010000000000000000100000000102030405060708090A0B0C0D0E0F10"
    );

    assert_eq!(
        results[1],
        Ok(Fetched::Gone {
            id: "AAMkDeleted".into()
        })
    );
    assert_eq!(
        results[2],
        Ok(Fetched::Other {
            id: "AAMkNote".into(),
            item_class: "IPM.Note".into()
        })
    );
    assert_eq!(
        results[3],
        Ok(Fetched::Other {
            id: "AAMkTentative".into(),
            item_class: "IPM.Schedule.Meeting.Resp.Tent".into()
        })
    );
    match &results[4] {
        Err(EwsError::Response { code, message, .. }) => {
            assert_eq!(code, "ErrorInvalidIdMalformed");
            assert_eq!(message, "Id is malformed.");
        }
        other => panic!("{other:?}"),
    }

    // More ids requested than messages returned: the missing ones are errors, not dropped.
    let mut more = requested.clone();
    more.push(item("AAMkNeverAnswered"));
    let results = response::parse_get_items(&op("get-items-mixed-batch.xml"), &more);
    assert_eq!(results.len(), 6);
    match &results[5] {
        Err(EwsError::Malformed(what)) => assert!(what.contains("AAMkNeverAnswered"), "{what}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_sync_page_lists_upserts_and_deletes_and_ignores_the_rest() {
    let batch = response::parse_sync_folder_items(&op("sync-folder-items-changes.xml"))
        .expect("a success page");
    assert!(!batch.complete, "IncludesLastItemInRange is false");
    assert_eq!(
        batch.state,
        "H4sIAAAAAAAEAO29B2AcSZYlJi9tynt/SvVK1+B0oQiAYBMk2JBAEOzBiM3mkuwdaUcjKasqgcplVmVdZhZAzO2dvPfee++999577733ujudTif33/8/XGZkAWz2zkrayZ4hgKrIHz9+fB8/Ip7mZbn12OfzXz7/JcDJiW5Ts/S+ZzZ7e=="
    );
    let id = |suffix: &str| {
        format!("AAMkADVhYjMzMTA3LTRmNWMtNGFiOC1iNDM5LWQzNzQwYjc1ZWZjMwBGAAAAAAB+kfzt/vVmT4C4kZt2AsO4BwC8Mt2PdAAAA{suffix}==")
    };
    let upsert = |suffix: &str, change_key: &str| {
        Change::Upsert(ItemRef {
            id: id(suffix),
            change_key: change_key.into(),
        })
    };
    assert_eq!(batch.changes.len(), 5, "{:#?}", batch.changes);
    assert_eq!(
        batch.changes[0],
        upsert("A", "CwAAABYAAAC8Mt2PdAAAAAAAAJmNyRsA")
    );
    match &batch.changes[1] {
        Change::Upsert(r) => {
            assert_eq!(r.id, id("B"));
            assert_eq!(r.change_key, "CQAAABYAAAC8Mt2PdAAAAAAAAJmNyRsB");
        }
        other => panic!("{other:?}"),
    }
    match &batch.changes[2] {
        Change::Upsert(r) => assert_eq!(r.change_key, "DwAAABYAAAC8Mt2PdAAAAAAAAJmNyRsC"),
        other => panic!("{other:?}"),
    }
    assert_eq!(batch.changes[3], Change::Delete { id: id("D") });
    assert_eq!(
        batch.changes[4],
        upsert("E", "CwAAABYAAAC8Mt2PdAAAAAAAAJmNyRsF")
    );
}

#[test]
fn a_success_page_without_a_sync_state_is_malformed() {
    let body = br#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
      <m:SyncFolderItemsResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages">
        <m:ResponseMessages><m:SyncFolderItemsResponseMessage ResponseClass="Success">
          <m:ResponseCode>NoError</m:ResponseCode><m:SyncState/>
        </m:SyncFolderItemsResponseMessage></m:ResponseMessages>
      </m:SyncFolderItemsResponse></s:Body></s:Envelope>"#;
    let op = response::parse_envelope(body).expect("an envelope");
    match response::parse_sync_folder_items(&op) {
        Err(EwsError::Malformed(what)) => assert!(what.contains("SyncState"), "{what}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_meeting_request_with_an_ex_organizer_and_a_dirty_body() {
    let bytes = fixture("get-item-meeting-request.xml");
    assert!(
        bytes.starts_with(b"\xEF\xBB\xBF"),
        "the fixture must start with a BOM"
    );
    let m = single_meeting("get-item-meeting-request.xml");
    assert_eq!(m.kind, MessageKind::Request(RequestType::New));
    assert_eq!(m.item_type, ItemType::Single);
    assert_eq!(
        m.uid,
        "040000008200E00074C5B7101A82E00800000000A0B1C2D3E4F5D9010000000000000000100000001122334455667788990AABBCCDDEEFF0"
    );
    assert_eq!(m.subject, "Quarterly review & planning — Zürich");
    assert!(m.body.html);
    assert!(
        m.body.content.contains("<p>Agenda attached.</p>"),
        "the &#x0; must be dropped: {:?}",
        m.body.content
    );
    assert!(m.body.content.contains("PXPS-v1-k1-7F3A2C91D04E"));
    assert!(!m.body.content.contains('\0'));
    assert_eq!(m.organizer, person("Alice Example", ""));
    assert_eq!(
        m.attendees,
        [
            person("Bob Smith", "bob.smith@contoso.com"),
            person("Dave Legacy", "dave@fabrikam.example"),
            person("Carol", "carol@contoso.com"),
        ]
    );
    assert_eq!(m.resources, [person("VMR Room", "vmr-room@contoso.com")]);
    assert_eq!(m.start, ms("2026-03-10T14:00:00Z"));
    assert_eq!(m.end, ms("2026-03-10T15:00:00Z"));
    assert_eq!(m.recurrence_id, None);
    assert_eq!(m.recurrence, None);
    assert_eq!(m.time_zone.as_deref(), Some("W. Europe Standard Time"));
    assert_eq!(m.sequence, 0);
    assert!(!m.is_cancelled);
    assert_eq!(m.my_response, MyResponse::NoResponseReceived);
    assert_eq!(m.last_modified, ms("2026-03-02T09:15:42.117Z"));
}

#[test]
fn a_recurring_master_with_moved_and_deleted_occurrences() {
    let m = single_meeting("get-item-recurring-master.xml");
    assert_eq!(m.kind, MessageKind::CalendarItem);
    assert_eq!(m.item_type, ItemType::RecurringMaster);
    assert_eq!(m.uid, GOID_HEX);
    assert_eq!(
        m.body,
        Body {
            html: false,
            content: "Weekly sync.\nJoin: PXPS-v1-k1-0C74ABD80257".into()
        }
    );
    assert_eq!(m.organizer, person("Alice Example", "alice@contoso.com"));
    assert_eq!(m.attendees, [person("Bob Smith", "bob.smith@contoso.com")]);
    assert_eq!(m.resources, [person("VMR Room", "vmr-room@contoso.com")]);
    assert_eq!(
        m.recurrence,
        Some(Recurrence {
            pattern: Pattern::Weekly {
                interval: 1,
                days: vec![Weekday::Mon, Weekday::Wed],
                first_day_of_week: Weekday::Mon,
            },
            range: Range::EndDate {
                start: NaiveDate::from_ymd_opt(2026, 1, 5).expect("date"),
                end: NaiveDate::from_ymd_opt(2026, 6, 29).expect("date"),
            },
        })
    );
    assert_eq!(
        m.moved_occurrences,
        [MovedOccurrence {
            original_start: ms("2026-01-14T08:00:00Z"),
            start: ms("2026-01-14T10:00:00Z"),
            end: ms("2026-01-14T10:30:00Z"),
        }]
    );
    assert_eq!(
        m.deleted_occurrences,
        [ms("2026-02-02T08:00:00Z"), ms("2026-02-04T08:00:00Z")]
    );
    assert_eq!(m.time_zone.as_deref(), Some("W. Europe Standard Time"));
    assert_eq!(m.sequence, 2);
    assert_eq!(m.my_response, MyResponse::Accept);
    assert_eq!(m.start, ms("2026-01-05T08:00:00Z"));
    assert_eq!(m.end, ms("2026-01-05T08:30:00Z"));
    assert_eq!(m.last_modified, ms("2026-01-10T09:00:00Z"));
}

#[test]
fn a_cancellation_of_one_occurrence_belongs_to_the_series() {
    let m = single_meeting("get-item-cancellation-occurrence.xml");
    assert_eq!(m.kind, MessageKind::Cancellation);
    assert_eq!(m.item_type, ItemType::Occurrence);
    // The UID carries the instance date 2026-02-04; the meeting id is the series'.
    assert_eq!(m.uid, GOID_HEX);
    assert_eq!(m.recurrence_id, Some(ms("2026-02-04T08:00:00Z")));
    assert_eq!(m.start, ms("2026-02-04T08:00:00Z"));
    assert_eq!(m.end, ms("2026-02-04T08:30:00Z"));
    // From the sender: a cancellation carries no Organizer element.
    assert_eq!(m.organizer, person("Alice Example", "alice@contoso.com"));
    assert_eq!(m.sequence, 0);
    assert_eq!(m.time_zone, None);
    assert_eq!(m.last_modified, ms("2026-02-03T16:20:05.500Z"));
    assert_eq!(m.subject, "Canceled: Weekly sync");
}

#[test]
fn a_streaming_body_yields_whole_documents_and_keeps_the_partial_one() {
    let mut buf = fixture("streaming-two-and-a-half-documents.txt");
    let documents = response::split_streaming_documents(&mut buf);
    assert_eq!(documents.len(), 2);
    assert!(
        buf.starts_with(b"\n<?xml") || buf.starts_with(b"<?xml"),
        "{:?}",
        String::from_utf8_lossy(&buf[..20])
    );
    assert!(String::from_utf8_lossy(&buf).contains("AAMkGone"));

    let keep_alive = response::parse_get_streaming_events(
        &response::parse_envelope(&documents[0]).expect("first document"),
    );
    assert!(keep_alive.notifications.is_empty());
    assert!(!keep_alive.closed);
    assert!(keep_alive.errors.is_empty());

    let events = response::parse_get_streaming_events(
        &response::parse_envelope(&documents[1]).expect("second document"),
    );
    assert!(!events.closed);
    assert!(events.errors.is_empty(), "{:?}", events.errors);
    assert_eq!(events.notifications.len(), 1);
    let n = &events.notifications[0];
    assert_eq!(
        n.subscription_id,
        "JgBibjFwcjA2bWIxNDU1LmV1cnByZDA2LnByb2Qub3V0bG9vay5jb20QAAAA"
    );
    let summary: Vec<(&str, Option<&str>, Option<&str>)> = n
        .events
        .iter()
        .map(|e| {
            (
                e.kind.as_str(),
                e.item_id.as_deref(),
                e.folder_id.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("CreatedEvent", Some("AAMkNewRequest"), Some("AQMkInbox")),
            ("NewMailEvent", Some("AAMkNewRequest"), Some("AQMkInbox")),
            ("ModifiedEvent", None, Some("AQMkInbox")),
        ]
    );

    // The rest of the third document arrives in the next chunk.
    buf.extend_from_slice(b"</t:DeletedEvent></m:Notification></m:Notifications></m:GetStreamingEventsResponseMessage></m:ResponseMessages></m:GetStreamingEventsResponse></soap:Body></soap:Envelope>");
    let documents = response::split_streaming_documents(&mut buf);
    assert_eq!(documents.len(), 1);
    assert!(buf.is_empty());
    let third = response::parse_get_streaming_events(
        &response::parse_envelope(&documents[0]).expect("third document"),
    );
    assert_eq!(third.notifications[0].events[0].kind, "DeletedEvent");
    assert_eq!(
        third.notifications[0].events[0].item_id.as_deref(),
        Some("AAMkGone")
    );
}

#[test]
fn connection_closed_and_subscription_errors_are_reported() {
    let closed = response::parse_get_streaming_events(&op("streaming-closed.xml"));
    assert!(closed.closed);
    assert!(closed.errors.is_empty());
    assert!(closed.notifications.is_empty());

    let invalid = response::parse_get_streaming_events(&op("streaming-invalid-subscription.xml"));
    assert!(invalid.closed);
    assert_eq!(
        invalid.errors,
        [EwsError::Response {
            code: "ErrorInvalidSubscription".into(),
            message: "The subscription is invalid.".into(),
            back_off: None
        }]
    );
}

#[test]
fn subscriptions_and_pull_events() {
    let streaming = response::parse_subscribe(&op("subscribe-streaming.xml")).expect("subscribed");
    assert_eq!(
        streaming.id,
        "JgBibjFwcjA2bWIxNDU1LmV1cnByZDA2LnByb2Qub3V0bG9vay5jb20QAAAA"
    );
    assert_eq!(streaming.watermark, None);
    let pull = response::parse_subscribe(&op("subscribe-pull.xml")).expect("subscribed");
    assert_eq!(pull.id, "d581ab79-9a32-4b1b-8a0e-3d7f0c1b2a44");
    assert_eq!(pull.watermark.as_deref(), Some("AAAAAGUhAAAAAAAAAQ=="));

    let n = response::parse_get_events(&op("get-events-pull.xml")).expect("events");
    assert!(n.more_events);
    assert_eq!(n.last_watermark.as_deref(), Some("AAAAAGchAAAAAAAAAQ=="));
    let kinds: Vec<_> = n.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["NewMailEvent", "MovedEvent"]);
    assert_eq!(n.events[1].folder_id.as_deref(), Some("AQMkDeleted"));
    assert_eq!(
        n.events[1].watermark.as_deref(),
        Some("AAAAAGchAAAAAAAAAQ==")
    );

    let status = response::parse_get_events(&op("get-events-status.xml")).expect("status");
    assert!(!status.more_events);
    assert_eq!(status.events.len(), 1);
    assert_eq!(status.events[0].kind, "StatusEvent");
    assert_eq!(
        status.last_watermark.as_deref(),
        Some("AAAAAGghAAAAAAAAAQ==")
    );
}

#[test]
fn replies_and_body_updates() {
    assert_eq!(
        response::parse_create_item(&op("create-item-success.xml")),
        Ok(())
    );
    let err = response::parse_create_item(&op("create-item-not-found.xml")).expect_err("not found");
    assert_eq!(err.code(), Some("ErrorItemNotFound"));
    assert!(matches!(
        err.into_mailbox_error(),
        MailboxError::NotFound(_)
    ));

    assert_eq!(
        response::parse_update_item(&op("update-item.xml")),
        Ok(ItemRef {
            id: "AAMkOrganizerCopy".into(),
            change_key: "DwAAABYAAAC8NEW".into()
        })
    );
    let err = response::parse_update_item(&op("update-item-conflict.xml")).expect_err("conflict");
    match err.into_mailbox_error() {
        MailboxError::Refused { code, .. } => assert_eq!(code, "ErrorIrresolvableConflict"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn folders_and_calendar_views() {
    let folders = response::parse_get_folder(&op("get-folder.xml"));
    assert_eq!(folders.len(), 3);
    assert_eq!(
        folders[0],
        Ok(response::FolderInfo {
            id: "AQMkInbox".into(),
            total_count: Some(12)
        })
    );
    assert_eq!(
        folders[1],
        Ok(response::FolderInfo {
            id: "AQMkCalendar".into(),
            total_count: Some(345)
        })
    );
    assert_eq!(
        folders[2].as_ref().err().and_then(EwsError::code),
        Some("ErrorFolderNotFound")
    );

    let (items, includes_last) =
        response::parse_find_items(&op("find-item-calendar-view.xml")).expect("a view");
    assert!(!includes_last);
    assert_eq!(items.len(), 2);
    let occurrence = meeting(&items[0]);
    assert_eq!(occurrence.item_type, ItemType::Occurrence);
    assert_eq!(occurrence.uid, GOID_HEX);
    assert_eq!(occurrence.recurrence_id, Some(ms("2026-01-07T08:00:00Z")));
    assert_eq!(occurrence.organizer, person("Alice Example", ""));
    let exception = meeting(&items[1]);
    assert_eq!(exception.item_type, ItemType::Exception);
    assert_eq!(exception.start, ms("2026-01-14T10:00:00Z"));
    assert_eq!(exception.recurrence_id, Some(ms("2026-01-14T08:00:00Z")));
}

#[test]
fn malformed_replies_say_what_is_wrong_and_are_transient() {
    for (file, expect) in [
        ("malformed-iis-error-page.html", "malformed XML"),
        ("malformed-truncated.xml", "truncated"),
        ("malformed-not-soap.xml", "not a SOAP 1.1 Envelope"),
        ("malformed-soap12.xml", "not a SOAP 1.1 Envelope"),
    ] {
        let err = response::parse_envelope(&fixture(file)).expect_err(file);
        match &err {
            EwsError::Malformed(what) => assert!(what.contains(expect), "{file}: {what}"),
            other => panic!("{file}: {other:?}"),
        }
        assert!(
            matches!(err.into_mailbox_error(), MailboxError::Transient(_)),
            "{file}"
        );
    }
    let empty_body = br#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body/></soap:Envelope>"#;
    assert_eq!(
        response::parse_envelope(empty_body),
        Err(EwsError::Malformed("the soap:Body is empty".into()))
    );
}
