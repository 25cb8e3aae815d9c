//! The simulated Exchange serves a real third-party EWS client: Python's exchangelib (the
//! version `cargo xtask setup` installs into `.tools/exchangelib`). The simulator runs
//! in-process on a free port; two meetings are sent through the Rust API; the script
//! `tests/third_party/exchangelib_check.py` then does what a client does with exchangelib's
//! ordinary API, as the service account impersonating the room: it finds the folder hierarchy
//! (`root`, `msgfolderroot`, FindFolder), lists the Inbox, syncs it (SyncFolderItems with the
//! state kept), accepts one request and declines the other, lists and filters the Calendar,
//! expands the series in a CalendarView, and reads the organizer's replies. Its JSON report is
//! checked here against what the simulator holds.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use vmr_core::meeting::{Body, MyResponse, Person};
use vmr_core::recurrence::{Pattern, Range, Recurrence};
use vmr_simulator::ews::{
    FolderName, SendMeeting, DEFAULT_ORGANIZER, DEFAULT_RESOURCE, DEFAULT_SERVICE_ACCOUNT,
    DEFAULT_SERVICE_PASSWORD,
};

const ACCEPTED: &str = "Third-party check";
const DECLINED: &str = "Declined by the room";
const TAG: &str = "PXPS:-test#";
/// 2027-01-04T09:00:00Z, a Monday (10:00 in W. Europe Standard Time).
const FIRST_START: i64 = 1_799_053_200_000;
const HOUR: i64 = 3_600_000;
const WEEK: i64 = 7 * 24 * HOUR;
/// The script's whole run (a few dozen requests) takes seconds; this is the hang guard.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);

/// `<workspace>/.tools/exchangelib/bin/python`, which `cargo xtask setup` creates.
fn exchangelib_python() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the simulator crate sits in the workspace")
        .to_path_buf();
    let python = workspace.join(".tools/exchangelib/bin/python");
    assert!(
        python.exists(),
        "{} is missing: this test needs Python with exchangelib; run `cargo xtask setup` \
         (or `cargo xtask test`, which runs it)",
        python.display()
    );
    python
}

fn meeting(subject: &str, weekly_count: Option<u32>) -> SendMeeting {
    SendMeeting {
        organizer: Person {
            name: "Alice Organizer".to_owned(),
            email: DEFAULT_ORGANIZER.to_owned(),
        },
        subject: subject.to_owned(),
        body: Body {
            html: true,
            content: format!("<p>Join the meeting: {TAG}</p>"),
        },
        start: FIRST_START,
        end: FIRST_START + HOUR,
        time_zone: "W. Europe Standard Time".to_owned(),
        recurrence: weekly_count.map(|count| Recurrence {
            pattern: Pattern::Weekly {
                interval: 1,
                days: vec![chrono::Weekday::Mon],
                first_day_of_week: chrono::Weekday::Sun,
            },
            range: Range::Numbered {
                start: chrono::NaiveDate::from_ymd_opt(2027, 1, 4).expect("date"),
                count,
            },
        }),
        required: Vec::new(),
        optional: Vec::new(),
        resources: vec![DEFAULT_RESOURCE.to_owned()],
    }
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("time")
        .format("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("expected a JSON array, got {value}"))
        .iter()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        .collect()
}

fn field<'a>(items: &'a Value, name: &str) -> Vec<&'a str> {
    items
        .as_array()
        .unwrap_or_else(|| panic!("expected a JSON array, got {items}"))
        .iter()
        .map(|i| i[name].as_str().unwrap_or_default())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Python exchangelib: run by cargo xtask test"]
async fn exchangelib_lists_syncs_answers_and_views_the_room_mailbox() {
    let python = exchangelib_python();
    let running = vmr_simulator::start(
        "127.0.0.1:0".parse().expect("addr"),
        vmr_simulator::DEFAULT_TENANT,
    )
    .await
    .expect("start the simulator");
    let ews = running.simulator.ews.clone();
    let uid = ews
        .send_meeting(meeting(ACCEPTED, Some(5)))
        .expect("send the series");
    ews.send_meeting(meeting(DECLINED, None))
        .expect("send the single meeting");

    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/third_party/exchangelib_check.py");
    let mut command = tokio::process::Command::new(&python);
    command
        .arg(&script)
        .arg(running.origin())
        .env("EXL_USER", DEFAULT_SERVICE_ACCOUNT)
        .env("EXL_PASSWORD", DEFAULT_SERVICE_PASSWORD)
        .env("EXL_ROOM", DEFAULT_RESOURCE)
        .env("EXL_ORGANIZER", DEFAULT_ORGANIZER)
        .env("EXL_ACCEPT_SUBJECT", ACCEPTED)
        .env("EXL_DECLINE_SUBJECT", DECLINED)
        .env("EXL_TAG", TAG)
        .env("EXL_VIEW_START", "2027-01-01T00:00:00Z")
        .env("EXL_VIEW_END", "2027-03-01T00:00:00Z")
        .env("PYTHONWARNINGS", "ignore")
        .kill_on_drop(true);
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{} ran longer than {SCRIPT_TIMEOUT:?}", script.display()))
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exchangelib failed against the simulator ({}):\n{stderr}\n{stdout}",
        output.status
    );
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("the script's output is not JSON ({e}):\n{stdout}\n{stderr}"));
    eprintln!("{report:#}");
    assert_eq!(report["exchangelib"], "5.6.0");

    // The hierarchy: root → Top of Information Store → the default folders.
    assert_eq!(
        strings(&report["root_children"]),
        ["Top of Information Store"]
    );
    let top = strings(&report["msg_folder_root_children"]);
    for name in ["Inbox", "Calendar", "Deleted Items", "Sent Items"] {
        assert!(top.iter().any(|t| t == name), "{name} missing in {top:?}");
    }

    // The Inbox: both requests, oldest first (SortOrder honoured).
    let inbox = &report["inbox"];
    assert_eq!(field(inbox, "subject"), [ACCEPTED, DECLINED]);
    assert_eq!(field(inbox, "type"), ["MeetingRequest", "MeetingRequest"]);
    assert_eq!(
        field(inbox, "item_class"),
        [
            "IPM.Schedule.Meeting.Request",
            "IPM.Schedule.Meeting.Request"
        ]
    );
    let request = &report["request"];
    assert_eq!(request["uid"], uid.as_str(), "the GOID exchangelib read");
    assert_eq!(request["start"], iso(FIRST_START).as_str());
    assert_eq!(request["end"], iso(FIRST_START + HOUR).as_str());
    assert_eq!(request["recurrence_pattern"], "WeeklyPattern");
    assert_eq!(request["recurrence_occurrences"], 5);
    assert_eq!(request["body_has_tag"], true);
    assert_eq!(request["organizer"], DEFAULT_ORGANIZER);

    // SyncFolderItems: two creates, then nothing from the kept state, then the two requests
    // leaving the Inbox once answered.
    let sync = &report["sync"];
    assert_eq!(strings(&sync["first"]), ["create", "create"]);
    assert_eq!(sync["state_kept"], true);
    assert!(strings(&sync["second"]).is_empty(), "{sync}");
    assert_eq!(strings(&sync["after_answers"]), ["delete", "delete"]);

    // The answers: copies in Sent Items, the requests in Deleted Items.
    assert_eq!(
        strings(&report["room_sent"]),
        [
            format!("Accepted: {ACCEPTED}"),
            format!("Declined: {DECLINED}")
        ]
    );
    assert_eq!(strings(&report["room_deleted_items"]), [DECLINED, ACCEPTED]);

    // The Calendar: the accepted series only; FindItem with a restriction finds it.
    let calendar = &report["calendar_all"];
    assert_eq!(field(calendar, "subject"), [ACCEPTED]);
    assert_eq!(field(calendar, "type"), ["RecurringMaster"]);
    assert_eq!(field(calendar, "uid"), [uid.as_str()]);
    assert_eq!(field(calendar, "my_response"), ["Accept"]);
    assert_eq!(report["calendar_filter_subject"], 1);

    // The CalendarView expands the five weekly occurrences.
    let view = &report["view"];
    assert_eq!(field(view, "type"), ["Occurrence"; 5]);
    let starts: Vec<String> = (0..5).map(|i| iso(FIRST_START + i * WEEK)).collect();
    assert_eq!(field(view, "start"), starts);

    // The organizer got both replies.
    let replies = &report["organizer_inbox"];
    assert_eq!(
        field(replies, "subject"),
        [
            format!("Accepted: {ACCEPTED}"),
            format!("Declined: {DECLINED}")
        ]
    );
    assert_eq!(
        field(replies, "item_class"),
        [
            "IPM.Schedule.Meeting.Resp.Pos",
            "IPM.Schedule.Meeting.Resp.Neg"
        ]
    );

    // The simulator agrees, and every request exchangelib made was answered without a fault.
    let room_calendar = ews.calendar_items(DEFAULT_RESOURCE).expect("room calendar");
    assert_eq!(room_calendar.len(), 1);
    assert_eq!(room_calendar[0].uid, uid);
    assert_eq!(room_calendar[0].my_response, MyResponse::Accept);
    let organizer_inbox = ews
        .mailbox_messages(DEFAULT_ORGANIZER, FolderName::Inbox)
        .expect("organizer inbox");
    assert_eq!(organizer_inbox.len(), 2);
    let requests = ews.requests();
    let faults: Vec<_> = requests.iter().filter(|r| r.status != 200).collect();
    assert!(faults.is_empty(), "faults answered: {faults:#?}");
    for operation in [
        "GetFolder",
        "FindFolder",
        "FindItem",
        "GetItem",
        "SyncFolderItems",
        "CreateItem",
    ] {
        assert!(
            requests.iter().any(|r| r.operation == operation),
            "exchangelib never called {operation}"
        );
    }
    running.shutdown().await.expect("clean shutdown");
}
