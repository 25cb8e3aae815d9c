//! Meeting flows of the simulated Exchange and what appears where (reference §5):
//! AutomateProcessing None vs AutoUpdate, updates (FullUpdate vs InformationalUpdate, sequence
//! numbers), moved and cancelled occurrences, whole cancellations, the calendar-processing
//! switches (`DeleteComments`, `DeleteSubject`, `AddOrganizerToSubject`), and the JSON control
//! API.

use crate::ews_support;

use axum::body::Body;
use axum::http::Request;
use ews_support::*;
use tower::ServiceExt as _;
use vmr_core::meeting::{ItemType, MyResponse};
use vmr_core::recurrence::{Pattern, Range, Recurrence};
use vmr_simulator::ews::{AutomateProcessing, FolderName, MeetingUpdate};

fn weekly(subject: &str) -> vmr_simulator::ews::SendMeeting {
    let mut m = meeting(subject, T0);
    m.resources = vec![ROOM.to_owned(), ROOM2.to_owned()];
    m.recurrence = Some(Recurrence {
        pattern: Pattern::Weekly {
            interval: 1,
            days: vec![chrono::Weekday::Mon],
            first_day_of_week: chrono::Weekday::Sun,
        },
        range: Range::Numbered {
            start: chrono::NaiveDate::from_ymd_opt(2026, 3, 2).expect("date"),
            count: 4,
        },
    });
    m
}

#[tokio::test]
async fn automate_processing_none_keeps_the_calendar_empty_auto_update_adds_a_tentative_item() {
    let server = server();
    let uid = server.send_meeting(weekly("Series")).expect("send");
    // room: None; room2: AutoUpdate.
    assert!(server.calendar_items(ROOM).expect("room").is_empty());
    let room2 = server.calendar_items(ROOM2).expect("room2");
    assert_eq!(room2.len(), 1);
    assert_eq!(room2[0].uid, uid);
    assert_eq!(room2[0].item_type, ItemType::RecurringMaster);
    assert_eq!(room2[0].my_response, MyResponse::NoResponseReceived);
    for mailbox in [ROOM, ROOM2] {
        let inbox = server
            .mailbox_messages(mailbox, FolderName::Inbox)
            .expect("inbox");
        assert_eq!(inbox.len(), 1);
        assert_eq!(inbox[0].item_class, "IPM.Schedule.Meeting.Request");
        assert_eq!(inbox[0].uid.as_deref(), Some(uid.as_str()));
    }
    // Organizer: a RecurringMaster with MyResponse Organizer.
    let alice = server.calendar_items(ALICE).expect("alice");
    assert_eq!(alice[0].item_type, ItemType::RecurringMaster);
    assert_eq!(alice[0].my_response, MyResponse::Organizer);

    // An update moves the AutoUpdate copy; the None room only gets a message.
    server
        .update_meeting(
            &uid,
            MeetingUpdate {
                start: Some(T0 + HOUR),
                end: Some(T0 + 2 * HOUR),
                ..Default::default()
            },
        )
        .expect("update");
    assert_eq!(
        server.calendar_items(ROOM2).expect("room2")[0].start,
        T0 + HOUR
    );
    assert!(server.calendar_items(ROOM).expect("room").is_empty());
    assert_eq!(
        server
            .mailbox_messages(ROOM, FolderName::Inbox)
            .expect("inbox")
            .len(),
        2
    );

    // Switch room to AutoUpdate: the next update reaches its calendar.
    server
        .set_automate_processing(ROOM, AutomateProcessing::AutoUpdate)
        .expect("switch");
    server
        .update_meeting(
            &uid,
            MeetingUpdate {
                subject: Some("Series (renamed)".to_owned()),
                ..Default::default()
            },
        )
        .expect("update");
    assert_eq!(
        server.calendar_items(ROOM).expect("room")[0].subject,
        "Series (renamed)"
    );

    // Cancel: AutoUpdate copies are marked cancelled with the prefix.
    server.cancel_meeting(&uid).expect("cancel");
    let room2 = server.calendar_items(ROOM2).expect("room2");
    assert!(room2[0].is_cancelled);
    assert_eq!(room2[0].subject, "Canceled: Series (renamed)");
    assert!(
        server.calendar_items(ALICE).expect("alice").is_empty(),
        "the organizer's item is gone"
    );
    assert_eq!(
        server.update_meeting(&uid, MeetingUpdate::default()),
        Err(vmr_simulator::ews::FlowError::Cancelled(uid.clone()))
    );
}

#[tokio::test]
async fn calendar_processing_switches_strip_what_the_attendant_files() {
    let server = server();
    let router = server.router();
    for room in [ROOM, ROOM2] {
        let request = Request::builder()
            .method("PUT")
            .uri(format!("/sim/exchange/mailboxes/{room}/calendar-processing"))
            .header("content-type", "application/json")
            .body(Body::from(
                serde_json::json!({"delete_comments": true, "delete_subject": true, "add_organizer_to_subject": true})
                    .to_string(),
            ))
            .expect("request");
        let response = router.clone().oneshot(request).await.expect("response");
        assert_eq!(response.status(), 204);
    }
    let uid = server.send_meeting(weekly("Series")).expect("send");
    // room2 (AutoUpdate): the attendant files the organizer's name and no body, in the
    // calendar copy and in the request.
    let room2 = server.calendar_items(ROOM2).expect("room2");
    assert_eq!(room2[0].uid, uid);
    assert_eq!(room2[0].subject, "Alice Organizer");
    let inbox = server
        .mailbox_messages(ROOM2, FolderName::Inbox)
        .expect("inbox");
    assert_eq!(inbox[0].subject, "Alice Organizer");
    assert!(inbox[0].body.content.is_empty(), "{:?}", inbox[0].body);
    // room (None): no attendant, nothing stripped.
    let inbox = server
        .mailbox_messages(ROOM, FolderName::Inbox)
        .expect("inbox");
    assert_eq!(inbox[0].subject, "Series");
    assert!(!inbox[0].body.content.is_empty());
}

#[tokio::test]
async fn updates_sequence_numbers_and_request_types() {
    let server = server();
    let uid = server.send_meeting(weekly("Seq")).expect("send");
    server
        .update_meeting(
            &uid,
            MeetingUpdate {
                body: Some(vmr_core::meeting::Body {
                    html: false,
                    content: "new body".to_owned(),
                }),
                ..Default::default()
            },
        )
        .expect("body");
    server
        .update_meeting(
            &uid,
            MeetingUpdate {
                end: Some(T0 + HOUR),
                ..Default::default()
            },
        )
        .expect("time");
    server
        .move_occurrence(
            &uid,
            T0 + 7 * DAY,
            T0 + 7 * DAY + HOUR,
            T0 + 7 * DAY + 2 * HOUR,
        )
        .expect("move");
    server
        .cancel_occurrence(&uid, T0 + 14 * DAY)
        .expect("cancel one");
    assert!(matches!(
        server.move_occurrence(&uid, T0 + 3 * DAY, T0, T0 + HOUR),
        Err(vmr_simulator::ews::FlowError::NoSuchOccurrence { .. })
    ));
    // Read them back over EWS.
    let sync = post(
        &server,
        &envelope(Some(ROOM), &sync_request("inbox", None, None, 100)),
    )
    .await;
    let ids: Vec<String> = created(&sync).into_iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), 5);
    let item_ids: String = ids
        .iter()
        .map(|id| format!("<t:ItemId Id=\"{id}\"/>"))
        .collect();
    let get = format!(
        r#"<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties>
        <t:FieldURI FieldURI="item:ItemClass"/><t:FieldURI FieldURI="meetingRequest:MeetingRequestType"/>
        <t:FieldURI FieldURI="calendar:AppointmentSequenceNumber"/><t:FieldURI FieldURI="calendar:CalendarItemType"/>
        <t:FieldURI FieldURI="calendar:RecurrenceId"/><t:FieldURI FieldURI="calendar:UID"/></t:AdditionalProperties></m:ItemShape>
        <m:ItemIds>{item_ids}</m:ItemIds></m:GetItem>"#
    );
    let answer = post(&server, &envelope(Some(ROOM), &get)).await;
    assert_valid_response(&answer);
    assert_eq!(
        answer.texts(NS_T, "ItemClass"),
        [
            "IPM.Schedule.Meeting.Request",
            "IPM.Schedule.Meeting.Request",
            "IPM.Schedule.Meeting.Request",
            "IPM.Schedule.Meeting.Request",
            "IPM.Schedule.Meeting.Canceled"
        ]
    );
    assert_eq!(
        answer.texts(NS_T, "MeetingRequestType"),
        [
            "NewMeetingRequest",
            "InformationalUpdate",
            "FullUpdate",
            "FullUpdate"
        ]
    );
    assert_eq!(
        answer.texts(NS_T, "AppointmentSequenceNumber"),
        ["0", "0", "1", "1"]
    );
    assert_eq!(
        answer.texts(NS_T, "CalendarItemType"),
        [
            "RecurringMaster",
            "RecurringMaster",
            "RecurringMaster",
            "Exception",
            "Occurrence"
        ]
    );
    assert_eq!(
        answer.texts(NS_T, "RecurrenceId"),
        ["2026-03-09T10:00:00Z", "2026-03-16T10:00:00Z"]
    );
    let uids = answer.texts(NS_T, "UID");
    assert!(
        uids.iter().all(|u| *u == uid),
        "one UID for master, exception and occurrence"
    );
    // The AutoUpdate room's master lists the exception and the deleted occurrence.
    let cal = post(
        &server,
        &envelope(Some(ROOM2), &sync_request("calendar", None, None, 100)),
    )
    .await;
    let (_, master) = created(&cal).into_iter().next().expect("room2 master");
    let get = format!(
        r#"<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties><t:FieldURI FieldURI="calendar:ModifiedOccurrences"/><t:FieldURI FieldURI="calendar:DeletedOccurrences"/></t:AdditionalProperties></m:ItemShape><m:ItemIds><t:ItemId Id="{master}"/></m:ItemIds></m:GetItem>"#
    );
    let answer = post(&server, &envelope(Some(ROOM2), &get)).await;
    assert_eq!(
        answer.texts(NS_T, "OriginalStart"),
        ["2026-03-09T10:00:00Z"]
    );
    assert_eq!(
        answer.texts(NS_T, "Start"),
        ["2026-03-09T11:00:00Z", "2026-03-16T10:00:00Z"]
    );
}

#[tokio::test]
async fn the_json_control_api_runs_the_flows() {
    let server = server();
    let router = server.router();
    let call = |method: &str, path: &str, body: serde_json::Value| {
        let router = router.clone();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .expect("request");
        async move {
            let response = router.oneshot(request).await.expect("response");
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("body");
            let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            (status, json)
        }
    };
    let (status, json) = call(
        "POST",
        "/sim/exchange/meetings",
        serde_json::to_value(meeting("Via JSON", T0)).expect("json"),
    )
    .await;
    assert_eq!(status, 200, "{json}");
    let uid = json["uid"].as_str().expect("uid").to_owned();
    let (status, _) = call(
        "POST",
        &format!("/sim/exchange/meetings/{uid}/update"),
        serde_json::json!({"subject": "Renamed"}),
    )
    .await;
    assert_eq!(status, 204);
    let (status, json) = call(
        "GET",
        &format!("/sim/exchange/mailboxes/{ROOM}/folders/inbox"),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(json.as_array().expect("list").len(), 2);
    assert_eq!(json[1]["subject"], "Renamed");
    let (status, _) = call(
        "PUT",
        &format!("/sim/exchange/mailboxes/{ROOM}/automate-processing"),
        serde_json::json!({"automate": "AutoUpdate"}),
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = call("POST", "/sim/exchange/faults", serde_json::json!({"fault": {"ServerBusyFault": {"back_off_ms": 10}}, "operation": "GetItem", "count": 2})).await;
    assert_eq!(status, 204);
    let (status, _) = call(
        "PUT",
        "/sim/exchange/version",
        serde_json::json!({"version": "ExchangeOnline"}),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(
        server.mailbox_version(),
        vmr_simulator::ews::MailboxVersion::ExchangeOnline
    );
    let (status, _) = call(
        "POST",
        &format!("/sim/exchange/meetings/{uid}/cancel"),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(status, 204);
    let (status, json) = call(
        "GET",
        &format!("/sim/exchange/mailboxes/{ALICE}/calendar"),
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(json, serde_json::json!([]));
    let (status, json) = call(
        "POST",
        "/sim/exchange/meetings/0400/cancel",
        serde_json::Value::Null,
    )
    .await;
    assert_eq!(status, 404, "{json}");
    let (status, json) = call("GET", "/sim/exchange/requests", serde_json::Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(
        json,
        serde_json::json!([]),
        "control calls are not EWS requests"
    );
}
