//! Round trips of every EWS operation of the simulated Exchange with hand-written requests in
//! the documented shapes (reference §1), prefixes of several spellings and a default
//! namespace; every successful answer is checked against the vendored schema.

use crate::ews_support;

use base64::Engine as _;
use ews_support::*;
use vmr_simulator::ews::FolderName;

#[tokio::test]
async fn get_folder_counts_items_and_answers_in_schema_order() {
    let server = server();
    for i in 0..3 {
        server
            .send_meeting(meeting(&format!("M{i}"), T0 + i * DAY))
            .expect("send");
    }
    let request = envelope(
        Some(ROOM),
        r#"<m:GetFolder><m:FolderShape><t:BaseShape>Default</t:BaseShape></m:FolderShape>
           <m:FolderIds><t:DistinguishedFolderId Id="inbox"/><t:DistinguishedFolderId Id="calendar"/></m:FolderIds></m:GetFolder>"#,
    );
    let answer = post(&server, &request).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.codes(), ["NoError", "NoError"]);
    assert_eq!(answer.texts(NS_T, "TotalCount"), ["3", "0"]);
    assert_eq!(answer.texts(NS_T, "UnreadCount"), ["3"]);
    assert!(answer
        .body
        .contains("<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\">"));
    assert!(answer.body.contains("<h:ServerVersionInfo MajorVersion=\"15\" MinorVersion=\"2\" MajorBuildNumber=\"1118\" MinorBuildNumber=\"7\" Version=\"V2017_07_11\""));
    assert!(answer.body.contains("<m:GetFolderResponse xmlns:m="));
    assert_valid_response(&answer);
}

#[tokio::test]
async fn the_folder_hierarchy_is_reachable_from_root_by_get_folder_and_find_folder() {
    let server = server();
    server.send_meeting(meeting("Hierarchy", T0)).expect("send");
    let shape = r#"<m:FolderShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties>
        <t:FieldURI FieldURI="folder:ParentFolderId"/><t:FieldURI FieldURI="folder:DisplayName"/>
        <t:FieldURI FieldURI="folder:ChildFolderCount"/><t:FieldURI FieldURI="folder:EffectiveRights"/>
        <t:FieldURI FieldURI="folder:DistinguishedFolderId"/><t:FieldURI FieldURI="folder:FolderClass"/>
        <t:FieldURI FieldURI="folder:UnreadCount"/></t:AdditionalProperties></m:FolderShape>"#;
    let get = envelope(
        Some(ROOM),
        &format!(
            r#"<m:GetFolder>{shape}<m:FolderIds><t:DistinguishedFolderId Id="root"/>
               <t:DistinguishedFolderId Id="msgfolderroot"/><t:DistinguishedFolderId Id="inbox"/></m:FolderIds></m:GetFolder>"#
        ),
    );
    let answer = post(&server, &get).await;
    assert_eq!(answer.codes(), ["NoError"; 3], "{}", answer.body);
    assert_valid_response(&answer);
    assert_eq!(
        answer.texts(NS_T, "DistinguishedFolderId"),
        ["root", "msgfolderroot", "inbox"]
    );
    assert_eq!(
        answer.texts(NS_T, "DisplayName"),
        ["", "Top of Information Store", "Inbox"]
    );
    assert_eq!(answer.texts(NS_T, "ChildFolderCount"), ["1", "11", "0"]);
    assert_eq!(
        answer.texts(NS_T, "FolderClass"),
        ["IPF.Note"],
        "the roots have none"
    );
    assert_eq!(answer.texts(NS_T, "UnreadCount"), ["0", "0", "1"]);
    assert_eq!(answer.texts(NS_T, "Read"), ["true"; 3]);
    // root is its own parent; msgfolderroot's parent is root; the Inbox's is msgfolderroot.
    let ids = answer.attrs(NS_T, "FolderId", "Id");
    let parents = answer.attrs(NS_T, "ParentFolderId", "Id");
    assert_eq!(parents, [ids[0].clone(), ids[0].clone(), ids[1].clone()]);

    let find = |traversal: &str, parent: &str, view: &str| {
        envelope(
            Some(ROOM),
            &format!(
                r#"<m:FindFolder Traversal="{traversal}">{shape}{view}<m:ParentFolderIds>
                   <t:DistinguishedFolderId Id="{parent}"/></m:ParentFolderIds></m:FindFolder>"#
            ),
        )
    };
    let answer = post(&server, &find("Shallow", "root", "")).await;
    assert_eq!(answer.codes(), ["NoError"], "{}", answer.body);
    assert_valid_response(&answer);
    assert_eq!(
        answer.texts(NS_T, "DisplayName"),
        ["Top of Information Store"]
    );
    let answer = post(&server, &find("Deep", "root", "")).await;
    assert_valid_response(&answer);
    let names = answer.texts(NS_T, "DisplayName");
    assert_eq!(names.len(), 12, "{names:?}");
    assert_eq!(
        names[..3],
        ["Top of Information Store", "Inbox", "Calendar"]
    );
    assert_eq!(answer.attrs(NS_M, "RootFolder", "TotalItemsInView"), ["12"]);
    assert_eq!(answer.texts(NS_T, "CalendarFolder").len(), 1);
    assert_eq!(answer.texts(NS_T, "ContactsFolder").len(), 1);
    assert_eq!(answer.texts(NS_T, "TasksFolder").len(), 1);
    let paged =
        r#"<m:IndexedPageFolderView MaxEntriesReturned="5" Offset="10" BasePoint="Beginning"/>"#;
    let answer = post(&server, &find("Deep", "root", paged)).await;
    assert_valid_response(&answer);
    assert_eq!(answer.texts(NS_T, "DisplayName").len(), 2);
    assert_eq!(
        answer.attrs(NS_M, "RootFolder", "IndexedPagingOffset"),
        ["12"]
    );
    assert_eq!(
        answer.attrs(NS_M, "RootFolder", "IncludesLastItemInRange"),
        ["true"]
    );
    let answer = post(&server, &find("Shallow", "inbox", "")).await;
    assert_eq!(answer.attrs(NS_M, "RootFolder", "TotalItemsInView"), ["0"]);
}

#[tokio::test]
async fn find_item_honours_sort_order() {
    let server = server();
    for (i, subject) in ["B first", "A second", "C third"].iter().enumerate() {
        server
            .send_meeting(meeting(subject, T0 + i as i64 * DAY))
            .expect("send");
    }
    let find = |order: &str| {
        envelope(
            Some(ROOM),
            &format!(
                r#"<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape>
                   <t:AdditionalProperties><t:FieldURI FieldURI="item:Subject"/></t:AdditionalProperties></m:ItemShape>
                   {order}<m:ParentFolderIds><t:DistinguishedFolderId Id="inbox"/></m:ParentFolderIds></m:FindItem>"#
            ),
        )
    };
    let answer = post(&server, &find("")).await;
    assert_eq!(
        answer.texts(NS_T, "Subject"),
        ["C third", "A second", "B first"],
        "newest first"
    );
    let ascending = r#"<m:SortOrder><t:FieldOrder Order="Ascending"><t:FieldURI FieldURI="item:DateTimeReceived"/></t:FieldOrder></m:SortOrder>"#;
    let answer = post(&server, &find(ascending)).await;
    assert_valid_response(&answer);
    assert_eq!(
        answer.texts(NS_T, "Subject"),
        ["B first", "A second", "C third"]
    );
    let by_subject = r#"<m:SortOrder><t:FieldOrder Order="Descending"><t:FieldURI FieldURI="item:Subject"/></t:FieldOrder></m:SortOrder>"#;
    let answer = post(&server, &find(by_subject)).await;
    assert_eq!(
        answer.texts(NS_T, "Subject"),
        ["C third", "B first", "A second"]
    );
    let unsupported = r#"<m:SortOrder><t:FieldOrder Order="Ascending"><t:FieldURI FieldURI="item:Size"/></t:FieldOrder></m:SortOrder>"#;
    let answer = post(&server, &find(unsupported)).await;
    assert_eq!(answer.codes(), ["ErrorUnsupportedPathForSortGroup"]);
}

#[tokio::test]
async fn a_default_namespace_and_other_prefixes_are_read_by_namespace() {
    let server = server();
    server.send_meeting(meeting("Prefixes", T0)).expect("send");
    let request = r#"<?xml version="1.0" encoding="utf-8"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">
  <s:Header>
    <RequestServerVersion xmlns="http://schemas.microsoft.com/exchange/services/2006/types" Version="Exchange2016"/>
  </s:Header>
  <s:Body>
    <GetFolder xmlns="http://schemas.microsoft.com/exchange/services/2006/messages"
               xmlns:typ="http://schemas.microsoft.com/exchange/services/2006/types">
      <FolderShape><typ:BaseShape>IdOnly</typ:BaseShape>
        <typ:AdditionalProperties><typ:FieldURI FieldURI="folder:TotalCount"/></typ:AdditionalProperties></FolderShape>
      <FolderIds><typ:DistinguishedFolderId Id="inbox"><typ:Mailbox><typ:EmailAddress>room@contoso.com</typ:EmailAddress></typ:Mailbox></typ:DistinguishedFolderId></FolderIds>
    </GetFolder>
  </s:Body>
</s:Envelope>"#;
    let answer = post(&server, request).await;
    assert_eq!(answer.codes(), ["NoError"], "{}", answer.body);
    assert_eq!(answer.texts(NS_T, "TotalCount"), ["1"]);
    assert!(
        answer.texts(NS_T, "DisplayName").is_empty(),
        "IdOnly + TotalCount only"
    );
    assert_valid_response(&answer);
}

#[tokio::test]
async fn sync_pages_25_requests_in_pages_of_10_and_then_reports_nothing_new() {
    let server = server();
    for i in 0..25 {
        server
            .send_meeting(meeting(&format!("M{i}"), T0 + i * HOUR))
            .expect("send");
    }
    let mut state: Option<String> = None;
    let mut pages = Vec::new();
    let mut all = Vec::new();
    loop {
        let answer = post(
            &server,
            &envelope(
                Some(ROOM),
                &sync_request("inbox", None, state.as_deref(), 10),
            ),
        )
        .await;
        assert_eq!(answer.codes(), ["NoError"], "{}", answer.body);
        assert_valid_response(&answer);
        let created = created(&answer);
        assert!(
            created.iter().all(|(kind, _)| kind == "MeetingRequest"),
            "{created:?}"
        );
        pages.push(created.len());
        all.extend(created.into_iter().map(|(_, id)| id));
        state = answer.texts(NS_M, "SyncState").into_iter().next();
        if answer.texts(NS_M, "IncludesLastItemInRange") == ["true"] {
            break;
        }
        assert!(pages.len() < 10, "sync never completes");
    }
    assert_eq!(pages, [10, 10, 5]);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 25);
    // Nothing new: an empty page, complete.
    let answer = post(
        &server,
        &envelope(
            Some(ROOM),
            &sync_request("inbox", None, state.as_deref(), 10),
        ),
    )
    .await;
    assert!(created(&answer).is_empty());
    assert_eq!(answer.texts(NS_M, "IncludesLastItemInRange"), ["true"]);
    // A garbage state is refused.
    let answer = post(
        &server,
        &envelope(
            Some(ROOM),
            &sync_request("inbox", None, Some("H4sIAAAAAAAEAO29B2AcSZY=="), 10),
        ),
    )
    .await;
    assert_eq!(answer.codes(), ["ErrorInvalidSyncStateData"]);
    assert_valid_response(&answer);
    // A state of the inbox is not one of the calendar.
    let answer = post(
        &server,
        &envelope(
            Some(ROOM),
            &sync_request("calendar", None, state.as_deref(), 10),
        ),
    )
    .await;
    assert_eq!(answer.codes(), ["ErrorInvalidSyncStateData"]);
}

#[tokio::test]
async fn get_item_returns_only_what_was_asked_and_errors_per_item() {
    let server = server();
    let uid = server
        .send_meeting(meeting("Weekly sync", T0))
        .expect("send");
    let sync = post(
        &server,
        &envelope(None, &sync_request("inbox", Some(ROOM), None, 100)),
    )
    .await;
    let (_, id) = created(&sync)
        .into_iter()
        .next()
        .expect("a request in the room inbox");
    let get = |body_type: &str| {
        format!(
            r#"<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:BodyType>{body_type}</t:BodyType>
            <t:AdditionalProperties>
              <t:FieldURI FieldURI="item:ItemClass"/><t:FieldURI FieldURI="item:Subject"/><t:FieldURI FieldURI="item:Body"/>
              <t:FieldURI FieldURI="calendar:UID"/><t:FieldURI FieldURI="calendar:Start"/><t:FieldURI FieldURI="calendar:End"/>
              <t:FieldURI FieldURI="calendar:Organizer"/><t:FieldURI FieldURI="calendar:Resources"/>
              <t:FieldURI FieldURI="calendar:AppointmentSequenceNumber"/><t:FieldURI FieldURI="meetingRequest:MeetingRequestType"/>
              <t:FieldURI FieldURI="calendar:StartTimeZoneId"/>
              <t:ExtendedFieldURI PropertySetId="6ED8DA90-450B-101B-98DA-00AA003F1305" PropertyId="35" PropertyType="Binary"/>
              <t:ExtendedFieldURI PropertySetId="6ED8DA90-450B-101B-98DA-00AA003F1305" PropertyId="3" PropertyType="Binary"/>
            </t:AdditionalProperties></m:ItemShape>
            <m:ItemIds><t:ItemId Id="{id}"/><t:ItemId Id="AAMkAGone"/></m:ItemIds></m:GetItem>"#
        )
    };
    let answer = post(&server, &envelope(Some(ROOM), &get("HTML"))).await;
    assert_eq!(
        answer.codes(),
        ["NoError", "ErrorItemNotFound"],
        "{}",
        answer.body
    );
    assert_eq!(
        answer.texts(NS_M, "MessageText"),
        ["The specified object was not found in the store."]
    );
    assert_valid_response(&answer);
    assert_eq!(
        answer.texts(NS_T, "ItemClass"),
        ["IPM.Schedule.Meeting.Request"]
    );
    assert_eq!(answer.texts(NS_T, "UID"), std::slice::from_ref(&uid));
    assert_eq!(
        answer.texts(NS_T, "MeetingRequestType"),
        ["NewMeetingRequest"]
    );
    assert_eq!(answer.texts(NS_T, "AppointmentSequenceNumber"), ["0"]);
    assert_eq!(answer.texts(NS_T, "Start"), ["2026-03-02T10:00:00Z"]);
    assert_eq!(
        answer.texts(NS_T, "StartTimeZoneId"),
        ["W. Europe Standard Time"]
    );
    assert_eq!(answer.attrs(NS_T, "Body", "BodyType"), ["HTML"]);
    assert!(answer.texts(NS_T, "Body")[0].contains("<p>Weekly sync agenda</p>"));
    assert!(
        answer.texts(NS_T, "DateTimeReceived").is_empty(),
        "not asked for"
    );
    assert!(
        answer.texts(NS_T, "RequiredAttendees").is_empty(),
        "not asked for"
    );
    let values = answer.texts(NS_T, "Value");
    let clean = base64::engine::general_purpose::STANDARD
        .decode(&values[0])
        .expect("b64");
    let hex: String = clean.iter().map(|b| format!("{b:02X}")).collect();
    assert_eq!(hex, uid, "0x23 is the UID's bytes");
    assert_eq!(
        values[0], values[1],
        "a single meeting's 0x03 has no instance date"
    );
    assert_eq!(
        answer.attrs(NS_T, "ExtendedFieldURI", "PropertySetId")[0],
        "6ed8da90-450b-101b-98da-00aa003f1305"
    );
    let answer = post(&server, &envelope(Some(ROOM), &get("Text"))).await;
    assert_eq!(answer.attrs(NS_T, "Body", "BodyType"), ["Text"]);
    assert_eq!(answer.texts(NS_T, "Body"), ["Weekly sync agenda"]);
}

#[tokio::test]
async fn find_item_expands_a_series_and_finds_the_organizers_item_by_clean_goid() {
    use vmr_core::recurrence::{Pattern, Range, Recurrence};
    let server = server();
    let mut series = meeting("Daily stand-up", T0);
    series.recurrence = Some(Recurrence {
        pattern: Pattern::Daily { interval: 1 },
        range: Range::Numbered {
            start: chrono::NaiveDate::from_ymd_opt(2026, 3, 2).expect("date"),
            count: 5,
        },
    });
    let uid = server.send_meeting(series).expect("send");
    server
        .move_occurrence(&uid, T0 + DAY, T0 + DAY + 2 * HOUR, T0 + DAY + 3 * HOUR)
        .expect("move");
    server
        .cancel_occurrence(&uid, T0 + 2 * DAY)
        .expect("cancel one");
    let view = r#"<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties>
        <t:FieldURI FieldURI="item:Subject"/><t:FieldURI FieldURI="calendar:Start"/><t:FieldURI FieldURI="calendar:CalendarItemType"/>
        <t:FieldURI FieldURI="calendar:UID"/></t:AdditionalProperties></m:ItemShape>
        <m:CalendarView MaxEntriesReturned="100" StartDate="2026-03-01T00:00:00Z" EndDate="2026-03-31T00:00:00Z"/>
        <m:ParentFolderIds><t:DistinguishedFolderId Id="calendar"/></m:ParentFolderIds></m:FindItem>"#;
    let answer = post(&server, &envelope(Some(ALICE), view)).await;
    assert_eq!(answer.codes(), ["NoError"], "{}", answer.body);
    assert_valid_response(&answer);
    assert_eq!(
        answer.texts(NS_T, "CalendarItemType"),
        ["Occurrence", "Exception", "Occurrence", "Occurrence"]
    );
    assert_eq!(
        answer.texts(NS_T, "Start"),
        [
            "2026-03-02T10:00:00Z",
            "2026-03-03T12:00:00Z",
            "2026-03-05T10:00:00Z",
            "2026-03-06T10:00:00Z"
        ]
    );
    assert_eq!(answer.attrs(NS_M, "RootFolder", "TotalItemsInView"), ["4"]);
    // An occurrence id from the view opens the occurrence.
    let occurrence_id = answer.attrs(NS_T, "ItemId", "Id")[1].clone();
    let get = format!(
        r#"<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties><t:FieldURI FieldURI="calendar:RecurrenceId"/><t:FieldURI FieldURI="calendar:CalendarItemType"/></t:AdditionalProperties></m:ItemShape><m:ItemIds><t:ItemId Id="{occurrence_id}"/></m:ItemIds></m:GetItem>"#
    );
    let answer = post(&server, &envelope(Some(ALICE), &get)).await;
    assert_eq!(answer.texts(NS_T, "RecurrenceId"), ["2026-03-03T10:00:00Z"]);
    assert_eq!(answer.texts(NS_T, "CalendarItemType"), ["Exception"]);
    // Truncated view.
    let small = view.replace("MaxEntriesReturned=\"100\"", "MaxEntriesReturned=\"2\"");
    let answer = post(&server, &envelope(Some(ALICE), &small)).await;
    assert_eq!(
        answer.attrs(NS_M, "RootFolder", "IncludesLastItemInRange"),
        ["false"]
    );
    assert_eq!(answer.texts(NS_T, "Start").len(), 2);
    // The organizer's master by CleanGlobalObjectId.
    let goid = vmr_simulator::ews::flows::goid_from_uid(&uid).expect("hex");
    let value = base64::engine::general_purpose::STANDARD.encode(goid);
    let find = format!(
        r#"<m:FindItem Traversal="Shallow"><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties><t:FieldURI FieldURI="calendar:CalendarItemType"/><t:FieldURI FieldURI="calendar:IsOrganizer"/></t:AdditionalProperties></m:ItemShape>
        <m:IndexedPageItemView MaxEntriesReturned="10" Offset="0" BasePoint="Beginning"/>
        <m:Restriction><t:IsEqualTo><t:ExtendedFieldURI PropertySetId="6ED8DA90-450B-101B-98DA-00AA003F1305" PropertyId="35" PropertyType="Binary"/>
        <t:FieldURIOrConstant><t:Constant Value="{value}"/></t:FieldURIOrConstant></t:IsEqualTo></m:Restriction>
        <m:ParentFolderIds><t:DistinguishedFolderId Id="calendar"/></m:ParentFolderIds></m:FindItem>"#
    );
    let answer = post(&server, &envelope(Some(ALICE), &find)).await;
    assert_eq!(answer.codes(), ["NoError"], "{}", answer.body);
    assert_valid_response(&answer);
    assert_eq!(answer.texts(NS_T, "CalendarItemType"), ["RecurringMaster"]);
    assert_eq!(answer.texts(NS_T, "IsOrganizer"), ["true"]);
    // ModifiedOccurrences/DeletedOccurrences on the master (GetItem), and InstanceIndex.
    let master = answer.attrs(NS_T, "ItemId", "Id")[0].clone();
    let get = format!(
        r#"<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties><t:FieldURI FieldURI="calendar:ModifiedOccurrences"/><t:FieldURI FieldURI="calendar:DeletedOccurrences"/><t:FieldURI FieldURI="calendar:Recurrence"/><t:FieldURI FieldURI="calendar:Start"/></t:AdditionalProperties></m:ItemShape>
        <m:ItemIds><t:ItemId Id="{master}"/><t:OccurrenceItemId RecurringMasterId="{master}" InstanceIndex="4"/><t:OccurrenceItemId RecurringMasterId="{master}" InstanceIndex="3"/></m:ItemIds></m:GetItem>"#
    );
    let answer = post(&server, &envelope(Some(ALICE), &get)).await;
    assert_eq!(
        answer.codes(),
        [
            "NoError",
            "NoError",
            "ErrorCalendarOccurrenceIsDeletedFromRecurrence"
        ],
        "{}",
        answer.body
    );
    assert_valid_response(&answer);
    assert_eq!(
        answer.texts(NS_T, "OriginalStart"),
        ["2026-03-03T10:00:00Z"]
    );
    assert!(
        answer
            .texts(NS_T, "Start")
            .contains(&"2026-03-04T10:00:00Z".to_owned()),
        "DeletedOccurrence"
    );
    assert!(
        answer
            .texts(NS_T, "Start")
            .contains(&"2026-03-05T10:00:00Z".to_owned()),
        "4th instance"
    );
    assert_eq!(answer.texts(NS_T, "NumberOfOccurrences"), ["5"]);
    assert_eq!(answer.texts(NS_T, "StartDate"), ["2026-03-02+01:00"]);
    // A restriction on calendar:UID is refused, as by Exchange.
    let by_uid = find.replace(
        r#"<t:ExtendedFieldURI PropertySetId="6ED8DA90-450B-101B-98DA-00AA003F1305" PropertyId="35" PropertyType="Binary"/>"#,
        r#"<t:FieldURI FieldURI="calendar:UID"/>"#,
    );
    let answer = post(&server, &envelope(Some(ALICE), &by_uid)).await;
    assert_eq!(answer.codes(), ["ErrorUnsupportedPathForQuery"]);
}

fn respond(kind: &str, id: &str, disposition: &str, body: &str) -> String {
    format!(
        r#"<m:CreateItem MessageDisposition="{disposition}"><m:Items><t:{kind}><t:Body BodyType="Text">{body}</t:Body><t:ReferenceItemId Id="{id}"/></t:{kind}></m:Items></m:CreateItem>"#
    )
}

#[tokio::test]
async fn accept_decline_and_remove_change_both_mailboxes() {
    let server = server();
    let uid = server.send_meeting(meeting("Board", T0)).expect("send");
    assert!(
        server.calendar_items(ROOM).expect("room").is_empty(),
        "AutomateProcessing None: nothing on the calendar yet"
    );
    let sync = post(
        &server,
        &envelope(Some(ROOM), &sync_request("inbox", None, None, 100)),
    )
    .await;
    let (_, request) = created(&sync).into_iter().next().expect("request");
    let answer = post(
        &server,
        &envelope(
            Some(ROOM),
            &respond(
                "AcceptItem",
                &request,
                "SendAndSaveCopy",
                "Video room reserved",
            ),
        ),
    )
    .await;
    assert_eq!(answer.codes(), ["NoError"], "{}", answer.body);
    assert_valid_response(&answer);
    let calendar = server.calendar_items(ROOM).expect("room");
    assert_eq!(calendar.len(), 1);
    assert_eq!(calendar[0].uid, uid);
    assert_eq!(
        calendar[0].my_response,
        vmr_core::meeting::MyResponse::Accept
    );
    assert!(server
        .mailbox_messages(ROOM, FolderName::Inbox)
        .expect("inbox")
        .is_empty());
    let deleted = server
        .mailbox_messages(ROOM, FolderName::DeletedItems)
        .expect("deleted");
    assert_eq!(deleted[0].item_class, "IPM.Schedule.Meeting.Request");
    let alice = server
        .mailbox_messages(ALICE, FolderName::Inbox)
        .expect("alice");
    let reply = alice
        .iter()
        .find(|m| m.item_class == "IPM.Schedule.Meeting.Resp.Pos")
        .expect("Accepted reply");
    assert_eq!(reply.subject, "Accepted: Board");
    assert_eq!(reply.body.content, "Video room reserved");
    assert_eq!(reply.uid.as_deref(), Some(uid.as_str()));
    // Answering the moved request again: gone from the inbox.
    let again = post(
        &server,
        &envelope(
            Some(ROOM),
            &respond("AcceptItem", &request, "SendAndSaveCopy", "x"),
        ),
    )
    .await;
    assert_eq!(again.codes(), ["ErrorItemNotFound"]);
    assert_valid_response(&again);

    // Cancellation → RemoveItem takes it off the calendar.
    server.cancel_meeting(&uid).expect("cancel");
    assert_eq!(
        server.calendar_items(ROOM).expect("room").len(),
        1,
        "None: the cancellation waits in the inbox"
    );
    let inbox = post(
        &server,
        &envelope(Some(ROOM), &sync_request("inbox", None, None, 100)),
    )
    .await;
    let (kind, cancellation) = created(&inbox).into_iter().next().expect("cancellation");
    assert_eq!(kind, "MeetingCancellation");
    let answer = post(
        &server,
        &envelope(
            Some(ROOM),
            &respond("RemoveItem", &cancellation, "SendAndSaveCopy", "")
                .replace("<t:Body BodyType=\"Text\"></t:Body>", ""),
        ),
    )
    .await;
    assert_eq!(answer.codes(), ["NoError"], "{}", answer.body);
    assert!(server.calendar_items(ROOM).expect("room").is_empty());
    assert_eq!(
        server
            .mailbox_messages(ROOM, FolderName::DeletedItems)
            .expect("deleted")
            .len(),
        2
    );

    // Decline.
    server
        .send_meeting(meeting("Declined one", T0 + DAY))
        .expect("send");
    let inbox = post(
        &server,
        &envelope(Some(ROOM), &sync_request("inbox", None, None, 100)),
    )
    .await;
    let (_, request) = created(&inbox).into_iter().next().expect("request");
    let answer = post(
        &server,
        &envelope(
            Some(ROOM),
            &respond(
                "DeclineItem",
                &request,
                "SendAndSaveCopy",
                "No VMR capacity",
            ),
        ),
    )
    .await;
    assert_eq!(answer.codes(), ["NoError"]);
    assert!(server.calendar_items(ROOM).expect("room").is_empty());
    let alice = server
        .mailbox_messages(ALICE, FolderName::Inbox)
        .expect("alice");
    let reply = alice
        .iter()
        .find(|m| m.item_class == "IPM.Schedule.Meeting.Resp.Neg")
        .expect("Declined reply");
    assert_eq!(reply.subject, "Declined: Declined one");
    assert_eq!(reply.body.content, "No VMR capacity");
}

#[tokio::test]
async fn an_out_of_date_request_cannot_be_accepted() {
    let server = server();
    let uid = server.send_meeting(meeting("Moving", T0)).expect("send");
    let inbox = post(
        &server,
        &envelope(Some(ROOM), &sync_request("inbox", None, None, 100)),
    )
    .await;
    let (_, first) = created(&inbox).into_iter().next().expect("request");
    server
        .update_meeting(
            &uid,
            vmr_simulator::ews::MeetingUpdate {
                start: Some(T0 + HOUR),
                end: Some(T0 + 2 * HOUR),
                ..Default::default()
            },
        )
        .expect("update");
    let answer = post(
        &server,
        &envelope(
            Some(ROOM),
            &respond("AcceptItem", &first, "SendAndSaveCopy", "ok"),
        ),
    )
    .await;
    assert_eq!(
        answer.codes(),
        ["ErrorCalendarMeetingRequestIsOutOfDate"],
        "{}",
        answer.body
    );
    assert_valid_response(&answer);
}

#[tokio::test]
async fn update_item_on_the_organizers_item_sends_an_informational_update() {
    let server = server();
    let uid = server
        .send_meeting(meeting("Rewrite me", T0))
        .expect("send");
    let cal = post(
        &server,
        &envelope(Some(ALICE), &sync_request("calendar", None, None, 100)),
    )
    .await;
    let (_, organizer_item) = created(&cal).into_iter().next().expect("organizer item");
    let update = format!(
        r#"<m:UpdateItem MessageDisposition="SaveOnly" ConflictResolution="AutoResolve" SendMeetingInvitationsOrCancellations="SendToAllAndSaveCopy">
        <m:ItemChanges><t:ItemChange><t:ItemId Id="{organizer_item}"/><t:Updates><t:SetItemField><t:FieldURI FieldURI="item:Body"/>
        <t:CalendarItem><t:Body BodyType="HTML">&lt;html&gt;&lt;body&gt;Join video: PXPS-1234&lt;/body&gt;&lt;/html&gt;</t:Body></t:CalendarItem>
        </t:SetItemField></t:Updates></t:ItemChange></m:ItemChanges></m:UpdateItem>"#
    );
    let answer = post(&server, &envelope(Some(ALICE), &update)).await;
    assert_eq!(answer.codes(), ["NoError"], "{}", answer.body);
    assert_eq!(answer.texts(NS_T, "Count"), ["0"]);
    assert_valid_response(&answer);
    let room = server
        .mailbox_messages(ROOM, FolderName::Inbox)
        .expect("room");
    assert_eq!(room.len(), 2);
    assert!(room[1].body.content.contains("PXPS-1234"));
    let inbox = post(
        &server,
        &envelope(Some(ROOM), &sync_request("inbox", None, None, 100)),
    )
    .await;
    let ids: Vec<String> = created(&inbox).into_iter().map(|(_, id)| id).collect();
    let get = format!(
        r#"<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape><t:AdditionalProperties><t:FieldURI FieldURI="meetingRequest:MeetingRequestType"/><t:FieldURI FieldURI="calendar:AppointmentSequenceNumber"/><t:FieldURI FieldURI="meeting:IsOutOfDate"/></t:AdditionalProperties></m:ItemShape><m:ItemIds><t:ItemId Id="{}"/><t:ItemId Id="{}"/></m:ItemIds></m:GetItem>"#,
        ids[0], ids[1]
    );
    let answer = post(&server, &envelope(Some(ROOM), &get)).await;
    assert_eq!(
        answer.texts(NS_T, "MeetingRequestType"),
        ["NewMeetingRequest", "InformationalUpdate"]
    );
    assert_eq!(answer.texts(NS_T, "AppointmentSequenceNumber"), ["0", "0"]);
    assert_eq!(answer.texts(NS_T, "IsOutOfDate"), ["true", "false"]);
    assert_valid_response(&answer);
    // Stale change key with NeverOverwrite.
    let stale = update
        .replace(
            "ConflictResolution=\"AutoResolve\"",
            "ConflictResolution=\"NeverOverwrite\"",
        )
        .replace(
            &format!("Id=\"{organizer_item}\""),
            &format!("Id=\"{organizer_item}\" ChangeKey=\"DwAAABYAAAA=\""),
        );
    let answer = post(&server, &envelope(Some(ALICE), &stale)).await;
    assert_eq!(answer.codes(), ["ErrorIrresolvableConflict"]);
    let _ = uid;
}

#[tokio::test]
async fn delete_item_moves_to_deleted_items_and_cancels_the_organizers_meeting() {
    let server = server();
    server.send_meeting(meeting("Delete", T0)).expect("send");
    let inbox = post(
        &server,
        &envelope(Some(ROOM), &sync_request("inbox", None, None, 100)),
    )
    .await;
    let (_, request) = created(&inbox).into_iter().next().expect("request");
    let delete = format!(
        r#"<m:DeleteItem DeleteType="MoveToDeletedItems"><m:ItemIds><t:ItemId Id="{request}"/></m:ItemIds></m:DeleteItem>"#
    );
    let answer = post(&server, &envelope(Some(ROOM), &delete)).await;
    assert_eq!(answer.codes(), ["NoError"], "{}", answer.body);
    assert_valid_response(&answer);
    assert_eq!(
        server
            .mailbox_messages(ROOM, FolderName::DeletedItems)
            .expect("deleted")
            .len(),
        1
    );
    let cal = post(
        &server,
        &envelope(Some(ALICE), &sync_request("calendar", None, None, 100)),
    )
    .await;
    let (_, organizer_item) = created(&cal).into_iter().next().expect("organizer item");
    let cancel = format!(
        r#"<m:DeleteItem DeleteType="MoveToDeletedItems" SendMeetingCancellations="SendToAllAndSaveCopy"><m:ItemIds><t:ItemId Id="{organizer_item}"/></m:ItemIds></m:DeleteItem>"#
    );
    let answer = post(&server, &envelope(Some(ALICE), &cancel)).await;
    assert_eq!(answer.codes(), ["NoError"]);
    let room = server
        .mailbox_messages(ROOM, FolderName::Inbox)
        .expect("room");
    assert_eq!(
        room.last().map(|m| m.item_class.as_str()),
        Some("IPM.Schedule.Meeting.Canceled")
    );
    assert_eq!(
        room.last().map(|m| m.subject.as_str()),
        Some("Canceled: Delete")
    );
}

#[tokio::test]
async fn pull_notifications_carry_watermarks_and_more_events() {
    let server = server();
    let subscribe = r#"<m:Subscribe><m:PullSubscriptionRequest><t:FolderIds><t:DistinguishedFolderId Id="inbox"/><t:DistinguishedFolderId Id="calendar"/></t:FolderIds>
        <t:EventTypes><t:EventType>CreatedEvent</t:EventType><t:EventType>NewMailEvent</t:EventType><t:EventType>ModifiedEvent</t:EventType></t:EventTypes><t:Timeout>10</t:Timeout></m:PullSubscriptionRequest></m:Subscribe>"#;
    let answer = post(&server, &envelope(Some(ROOM), subscribe)).await;
    assert_eq!(answer.codes(), ["NoError"], "{}", answer.body);
    assert_valid_response(&answer);
    let id = answer.texts(NS_M, "SubscriptionId")[0].clone();
    let mut watermark = answer.texts(NS_M, "Watermark")[0].clone();
    for i in 0..30 {
        server
            .send_meeting(meeting(&format!("N{i}"), T0 + i * HOUR))
            .expect("send");
    }
    let mut events = 0;
    let mut calls = 0;
    loop {
        let get = format!("<m:GetEvents><m:SubscriptionId>{id}</m:SubscriptionId><m:Watermark>{watermark}</m:Watermark></m:GetEvents>");
        let answer = post(&server, &envelope(Some(ROOM), &get)).await;
        assert_eq!(answer.codes(), ["NoError"], "{}", answer.body);
        assert_valid_response(&answer);
        calls += 1;
        events +=
            answer.texts(NS_T, "CreatedEvent").len() + answer.texts(NS_T, "NewMailEvent").len();
        watermark = answer
            .texts(NS_T, "Watermark")
            .last()
            .cloned()
            .expect("watermark");
        if answer.texts(NS_T, "MoreEvents") == ["false"] {
            break;
        }
        assert!(calls < 10);
    }
    assert_eq!(events, 60, "a CreatedEvent and a NewMailEvent per request");
    assert_eq!(calls, 2, "50 events per call, then MoreEvents false");
    let bad = format!("<m:GetEvents><m:SubscriptionId>{id}</m:SubscriptionId><m:Watermark>AAAA</m:Watermark></m:GetEvents>");
    assert_eq!(
        post(&server, &envelope(Some(ROOM), &bad)).await.codes(),
        ["ErrorInvalidWatermark"]
    );
    let unsubscribe =
        format!("<m:Unsubscribe><m:SubscriptionId>{id}</m:SubscriptionId></m:Unsubscribe>");
    let answer = post(&server, &envelope(Some(ROOM), &unsubscribe)).await;
    assert_eq!(answer.codes(), ["NoError"]);
    assert_valid_response(&answer);
    let get = format!("<m:GetEvents><m:SubscriptionId>{id}</m:SubscriptionId><m:Watermark>{watermark}</m:Watermark></m:GetEvents>");
    assert_eq!(
        post(&server, &envelope(Some(ROOM), &get)).await.codes(),
        ["ErrorSubscriptionNotFound"]
    );
}

#[tokio::test]
async fn an_unimplemented_operation_is_a_fault() {
    let server = server();
    let request = envelope(
        Some(ROOM),
        r#"<m:ResolveNames ReturnFullContactData="false"><m:UnresolvedEntry>alice</m:UnresolvedEntry></m:ResolveNames>"#,
    );
    let answer = post(&server, &request).await;
    assert_eq!(answer.status, 500);
    assert_eq!(answer.fault_code(), "a:ErrorInvalidRequest");
}

#[tokio::test]
async fn the_mailbox_version_switch_changes_server_version_info() {
    let server = server();
    server.set_mailbox_version(vmr_simulator::ews::MailboxVersion::ExchangeOnline);
    let request = envelope(
        Some(ROOM),
        r#"<m:GetFolder><m:FolderShape><t:BaseShape>IdOnly</t:BaseShape></m:FolderShape><m:FolderIds><t:DistinguishedFolderId Id="inbox"/></m:FolderIds></m:GetFolder>"#,
    );
    let answer = post(&server, &request).await;
    assert_eq!(
        answer.attrs(NS_T, "ServerVersionInfo", "MinorVersion"),
        ["20"]
    );
    assert_eq!(
        answer.attrs(NS_T, "ServerVersionInfo", "Version"),
        ["V2018_01_08"]
    );
    server.set_mailbox_version(vmr_simulator::ews::MailboxVersion::Exchange2016);
    let answer = post(&server, &request).await;
    assert_eq!(
        answer.attrs(NS_T, "ServerVersionInfo", "MinorVersion"),
        ["1"]
    );
}
