//! The mailbox loop end to end: organizers send, update and cancel meetings through the
//! simulated Exchange; the real `vmr-scheduler` process watches the resource mailbox over
//! EWS, decides, stores and replies; each test checks the reply the organizer received and
//! the state in the server's database.

use std::time::Duration;

use anyhow::{bail, Result};
use chrono::{Datelike, NaiveDate, Timelike, Weekday};
use vmr_core::recurrence::{DayKind, Pattern, Range, Recurrence, WeekIndex};
use vmr_e2e::mailbox::{
    allocate, meeting, now_ms, open_store, replies, text_of, wait_for_replies, wait_until,
    watching_setup, RESOURCE,
};
use vmr_e2e::{ServerProcess, Sim};
use vmr_simulator::ews::{AutomateProcessing, Fault, FaultRule, MeetingUpdate};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const WAIT: Duration = Duration::from_secs(30);
const ALICE: &str = "alice@example.com";

async fn start(extra_exchange: &str) -> Result<(Sim, ServerProcess)> {
    let sim = Sim::start().await?;
    let server = ServerProcess::start(watching_setup(&sim, extra_exchange)?)?;
    Ok((sim, server))
}

fn ews(sim: &Sim) -> &vmr_simulator::ews::ExchangeServer {
    &sim.running.simulator.ews
}

/// Tomorrow at 09:00 UTC, rounded to the hour (far enough ahead never to be "past").
fn tomorrow_9() -> i64 {
    (now_ms() / DAY + 1) * DAY + 9 * HOUR
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_meeting_is_accepted_rescheduled_and_cancelled() -> Result<()> {
    let (sim, server) = start("").await?;
    let a = allocate(&sim, &server, ALICE, "Planning").await?;
    let start = tomorrow_9();
    let uid = ews(&sim).send_meeting(meeting(
        ALICE,
        "Planning",
        &a.instructions_html,
        start,
        start + HOUR,
    ))?;

    // 1. New single meeting: accepted with the new-meeting template, naming the aliases.
    let got = wait_for_replies(&sim, ALICE, &uid, 1, WAIT).await?;
    assert_eq!(
        got[0].item_class, "IPM.Schedule.Meeting.Resp.Pos",
        "{got:?}"
    );
    let text = text_of(&got[0].body);
    assert!(text.contains("has been scheduled"), "{text}");
    assert!(
        text.contains(&a.alias) && text.contains(&a.numeric_alias),
        "{text}"
    );
    let store = open_store(&server).await?;
    let stored = store
        .meeting("default", &uid)
        .await?
        .expect("meeting stored");
    assert_eq!(stored.state, "accepted");
    assert_eq!(stored.alias_id.as_deref(), Some(a.alias_uuid.as_str()));
    let windows = store.windows("default", &uid).await?;
    assert_eq!(windows.len(), 1);
    assert_eq!(
        (windows[0].start_time, windows[0].end_time),
        (start, start + HOUR)
    );
    let alias = store.alias_by_id(&a.alias_uuid).await?.expect("alias");
    assert_eq!(alias.state, "bound");
    assert_eq!(alias.meeting_uid.as_deref(), Some(uid.as_str()));
    let conference = store
        .conference_for_alias(&a.alias_uuid)
        .await?
        .expect("a VMR was created");
    assert_eq!(conference.name, "Planning (Alice)");
    // The resource's calendar holds the accepted meeting.
    let calendar = ews(&sim).calendar_items(RESOURCE)?;
    assert!(calendar.iter().any(|c| c.uid == uid), "{calendar:?}");

    // 2. Time moved by two hours: rescheduled, the edited template, the window moved.
    ews(&sim).update_meeting(
        &uid,
        MeetingUpdate {
            start: Some(start + 2 * HOUR),
            end: Some(start + 3 * HOUR),
            ..MeetingUpdate::default()
        },
    )?;
    let got = wait_for_replies(&sim, ALICE, &uid, 2, WAIT).await?;
    assert!(text_of(&got[1].body).contains("rescheduled"), "{got:?}");
    let windows = store.windows("default", &uid).await?;
    assert_eq!(
        windows
            .iter()
            .map(|w| (w.start_time, w.end_time))
            .collect::<Vec<_>>(),
        vec![(start + 2 * HOUR, start + 3 * HOUR)]
    );

    // 3. Cancelled: windows gone, the VMR and its alias deleted, no reply to the organizer.
    ews(&sim).cancel_meeting(&uid)?;
    let cancelled = wait_until(WAIT, || async {
        Ok(store
            .meeting("default", &uid)
            .await?
            .filter(|m| m.state == "cancelled"))
    })
    .await;
    if let Err(e) = cancelled {
        bail!("{e}; the server's log:\n{}", server.log_text());
    }
    assert!(store.windows("default", &uid).await?.is_empty());
    let alias = store.alias_by_id(&a.alias_uuid).await?.expect("alias");
    assert_eq!(alias.state, "deleted");
    let conference = store
        .conference_for_alias(&a.alias_uuid)
        .await?
        .expect("VMR");
    assert!(conference.deletion_time.is_some());
    wait_until(WAIT, || async {
        Ok((!ews(&sim)
            .calendar_items(RESOURCE)?
            .iter()
            .any(|c| c.uid == uid))
        .then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        replies(&sim, ALICE, &uid)?.len(),
        2,
        "exactly one reply per change"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meetings_without_a_valid_tag_are_declined_with_the_right_template() -> Result<()> {
    let (sim, server) = start("").await?;
    let start = tomorrow_9();

    // No tag at all (the resource added by hand).
    let no_tag =
        ews(&sim).send_meeting(meeting(ALICE, "By hand", "<p>Hi</p>", start, start + HOUR))?;
    // A tag whose MAC was edited.
    let a = allocate(&sim, &server, ALICE, "Tampered").await?;
    let tampered_body = a.tampered_instructions();
    assert_ne!(tampered_body, a.instructions_html);
    let tampered = ews(&sim).send_meeting(meeting(
        ALICE,
        "Tampered",
        &tampered_body,
        start,
        start + HOUR,
    ))?;
    // A PXPS copied from a scheduled meeting into a second one.
    let b = allocate(&sim, &server, ALICE, "Original").await?;
    let original = ews(&sim).send_meeting(meeting(
        ALICE,
        "Original",
        &b.instructions_html,
        start,
        start + HOUR,
    ))?;
    wait_for_replies(&sim, ALICE, &original, 1, WAIT).await?;
    let copy = ews(&sim).send_meeting(meeting(
        ALICE,
        "Copy",
        &b.instructions_html,
        start,
        start + HOUR,
    ))?;
    // A meeting entirely in the past.
    let c = allocate(&sim, &server, ALICE, "Yesterday").await?;
    let yesterday = start - 2 * DAY;
    let past = ews(&sim).send_meeting(meeting(
        ALICE,
        "Yesterday",
        &c.instructions_html,
        yesterday,
        yesterday + HOUR,
    ))?;

    let cases = [
        (
            &no_tag,
            "does not carry valid scheduling data",
            "invalid_alias_id",
        ),
        (
            &tampered,
            "does not carry valid scheduling data",
            "invalid_alias_id",
        ),
        (&copy, "already in use", "alias_conflict"),
        (&past, "in the past", "single_meeting_past"),
    ];
    let store = open_store(&server).await?;
    for (uid, text, code) in cases {
        let got = wait_for_replies(&sim, ALICE, uid, 1, WAIT).await?;
        assert_eq!(
            got[0].item_class, "IPM.Schedule.Meeting.Resp.Neg",
            "{code}: {got:?}"
        );
        let body = text_of(&got[0].body);
        assert!(body.contains(text), "{code}: {body}");
        let stored = store.meeting("default", uid).await?.expect("stored");
        assert_eq!(stored.state, "declined", "{code}");
        assert!(store.windows("default", uid).await?.is_empty(), "{code}");
        let ops = store.operations("default", 100).await?;
        assert!(
            ops.iter().any(|o| o.resource_id == *uid
                && !o.operation.success
                && o.operation.error_code == code),
            "{code}: {ops:?}"
        );
    }
    // The conflict reply names the alias in use; the original keeps it.
    let conflict = text_of(&replies(&sim, ALICE, &copy)?[0].body);
    assert!(conflict.contains(&b.alias), "{conflict}");
    let alias = store.alias_by_id(&b.alias_uuid).await?.expect("alias");
    assert_eq!(alias.meeting_uid.as_deref(), Some(original.as_str()));
    // None of them is answered twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for uid in [&no_tag, &tampered, &copy, &past, &original] {
        assert_eq!(replies(&sim, ALICE, uid)?.len(), 1, "{uid}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weekly_series_with_a_moved_and_a_cancelled_occurrence() -> Result<()> {
    let (sim, server) = start("").await?;
    // Ten Mondays at 09:00 Berlin time from the first Monday at least a week ahead.
    let today = chrono::DateTime::from_timestamp_millis(now_ms())
        .expect("now")
        .date_naive();
    let mut first = today + chrono::Days::new(7);
    while first.weekday() != Weekday::Mon {
        first = first.succ_opt().expect("date");
    }
    let tz = vmr_core::windows_zones::zone("W. Europe Standard Time").expect("zone");
    let local_start = first.and_hms_opt(9, 0, 0).expect("time");
    let start = local_start
        .and_local_timezone(tz)
        .earliest()
        .expect("exists")
        .timestamp_millis();
    let a = allocate(&sim, &server, ALICE, "Weekly").await?;
    let mut m = meeting(ALICE, "Weekly", &a.instructions_html, start, start + HOUR);
    m.recurrence = Some(Recurrence {
        pattern: Pattern::Weekly {
            interval: 1,
            days: vec![Weekday::Mon],
            first_day_of_week: Weekday::Sun,
        },
        range: Range::Numbered {
            start: first,
            count: 10,
        },
    });
    let uid = ews(&sim).send_meeting(m)?;
    let got = wait_for_replies(&sim, ALICE, &uid, 1, WAIT).await?;
    assert!(
        text_of(&got[0].body).contains("recurring series has been scheduled"),
        "{got:?}"
    );
    let store = open_store(&server).await?;
    let windows = store.windows("default", &uid).await?;
    assert_eq!(windows.len(), 10, "{windows:?}");

    // The third occurrence moves to Tuesday; the fifth is cancelled.
    let third = windows[2].original_start;
    ews(&sim).move_occurrence(&uid, third, third + DAY, third + DAY + HOUR)?;
    let got = wait_for_replies(&sim, ALICE, &uid, 2, WAIT).await?;
    assert!(
        text_of(&got[1].body).contains("occurrence of the series has been rescheduled"),
        "{got:?}"
    );
    let fifth = windows[4].original_start;
    ews(&sim).cancel_occurrence(&uid, fifth)?;
    let windows = wait_until(WAIT, || async {
        let w = store.windows("default", &uid).await?;
        Ok((w.len() == 9).then_some(w))
    })
    .await?;
    let moved = windows
        .iter()
        .find(|w| w.original_start == third)
        .expect("third");
    assert_eq!(
        (moved.start_time, moved.end_time),
        (third + DAY, third + DAY + HOUR)
    );
    assert!(!windows.iter().any(|w| w.original_start == fifth));
    // One VMR, one alias for the whole series; the cancellation sends nothing.
    let stored = store.meeting("default", &uid).await?.expect("stored");
    assert!(stored.is_series);
    assert_eq!(stored.state, "accepted");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(replies(&sim, ALICE, &uid)?.len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monthly_relative_series_keeps_local_time_across_dst() -> Result<()> {
    let (sim, server) = start("").await?;
    // Second Tuesday of each month, 09:00 Pacific, six times from next January:
    // January and February are PST (17:00Z); from April on PDT (16:00Z).
    let this_year = chrono::DateTime::from_timestamp_millis(now_ms())
        .expect("now")
        .date_naive()
        .year();
    let year = this_year + 1;
    let tz = vmr_core::windows_zones::zone("Pacific Standard Time").expect("zone");
    let mut first = NaiveDate::from_ymd_opt(year, 1, 8).expect("date");
    while first.weekday() != Weekday::Tue {
        first = first.succ_opt().expect("date");
    }
    let start = first
        .and_hms_opt(9, 0, 0)
        .expect("time")
        .and_local_timezone(tz)
        .earliest()
        .expect("exists")
        .timestamp_millis();
    let a = allocate(&sim, &server, ALICE, "Monthly").await?;
    let mut m = meeting(ALICE, "Monthly", &a.instructions_html, start, start + HOUR);
    m.time_zone = "Pacific Standard Time".into();
    m.recurrence = Some(Recurrence {
        pattern: Pattern::RelativeMonthly {
            interval: 1,
            day: DayKind::Day(Weekday::Tue),
            index: WeekIndex::Second,
        },
        range: Range::Numbered {
            start: first,
            count: 6,
        },
    });
    let uid = ews(&sim).send_meeting(m)?;
    wait_for_replies(&sim, ALICE, &uid, 1, WAIT).await?;
    let store = open_store(&server).await?;
    let windows = store.windows("default", &uid).await?;
    assert_eq!(windows.len(), 6, "{windows:?}");
    for w in &windows {
        let utc = chrono::DateTime::from_timestamp_millis(w.start_time).expect("time");
        let local = utc.with_timezone(&tz);
        assert_eq!((local.weekday(), local.hour()), (Weekday::Tue, 9), "{utc}");
        assert!((8..=14).contains(&local.day()), "second Tuesday: {local}");
        let expected_utc_hour = if local.month() >= 4 && local.month() <= 10 {
            16
        } else {
            17
        };
        assert_eq!(utc.hour(), expected_utc_hour, "{local}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_mailbox_is_left_alone_for_the_back_off_and_then_processed() -> Result<()> {
    let (sim, server) = start("").await?;
    let a = allocate(&sim, &server, ALICE, "Busy").await?;
    // The next sync is refused with a fault, the next item read in-band.
    ews(&sim).inject(FaultRule {
        fault: Fault::ServerBusyFault { back_off_ms: 1500 },
        operation: Some("SyncFolderItems".into()),
        count: 1,
    });
    ews(&sim).inject(FaultRule {
        fault: Fault::ServerBusyInBand { back_off_ms: 1200 },
        operation: Some("GetItem".into()),
        count: 1,
    });
    let start = tomorrow_9();
    let uid = ews(&sim).send_meeting(meeting(
        ALICE,
        "Busy",
        &a.instructions_html,
        start,
        start + HOUR,
    ))?;
    let got = wait_for_replies(&sim, ALICE, &uid, 1, WAIT).await?;
    assert!(text_of(&got[0].body).contains("has been scheduled"));
    // Both throttles were hit, in whichever order the worker met them, and the mailbox was
    // asked again after each (the worker goes on polling).
    let log = wait_until(Duration::from_secs(15), || async {
        let log = ews(&sim).requests();
        let busy: Vec<_> = log
            .iter()
            .filter(|r| r.fault.as_deref().is_some_and(|f| f.contains("ServerBusy")))
            .collect();
        let answered = busy.iter().all(|b| log.iter().any(|r| r.at_ms > b.at_ms));
        Ok((busy.len() == 2 && answered).then_some(log))
    })
    .await?;
    assert!(
        !log.iter().any(|r| r.early),
        "a request came before the back-off ended: {log:?}"
    );
    for b in log
        .iter()
        .filter(|r| r.fault.as_deref().is_some_and(|f| f.contains("ServerBusy")))
    {
        let back_off = match b.fault.as_deref() {
            Some("ServerBusyFault") => 1500,
            _ => 1200,
        };
        let next = log
            .iter()
            .filter(|r| r.at_ms > b.at_ms)
            .map(|r| r.at_ms)
            .min()
            .unwrap_or(u64::MAX);
        assert!(
            next - b.at_ms >= back_off,
            "next request {} ms after a {back_off} ms back-off: {log:?}",
            next - b.at_ms
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(replies(&sim, ALICE, &uid)?.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_response_and_a_401_mid_run_lose_nothing() -> Result<()> {
    let (sim, server) = start("").await?;
    let start = tomorrow_9();
    let first = allocate(&sim, &server, ALICE, "Before").await?;
    let uid1 = ews(&sim).send_meeting(meeting(
        ALICE,
        "Before",
        &first.instructions_html,
        start,
        start + HOUR,
    ))?;
    wait_for_replies(&sim, ALICE, &uid1, 1, WAIT).await?;
    // Mid-run: the next item read comes back cut off, the next reply gets a 401.
    ews(&sim).inject(FaultRule {
        fault: Fault::Malformed,
        operation: Some("GetItem".into()),
        count: 1,
    });
    ews(&sim).inject(FaultRule {
        fault: Fault::Unauthorized,
        operation: Some("CreateItem".into()),
        count: 1,
    });
    let second = allocate(&sim, &server, ALICE, "After").await?;
    let uid2 = ews(&sim).send_meeting(meeting(
        ALICE,
        "After",
        &second.instructions_html,
        start,
        start + HOUR,
    ))?;
    wait_for_replies(&sim, ALICE, &uid2, 1, WAIT).await?;
    let log = ews(&sim).requests();
    for fault in ["Malformed", "Unauthorized"] {
        assert!(
            log.iter().any(|r| r.fault.as_deref() == Some(fault)),
            "{fault} not hit: {log:?}"
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(replies(&sim, ALICE, &uid1)?.len(), 1);
    assert_eq!(replies(&sim, ALICE, &uid2)?.len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_automate_processing_auto_update_the_tentative_copy_is_not_answered_twice(
) -> Result<()> {
    let (sim, server) = start("").await?;
    ews(&sim).set_automate_processing(RESOURCE, AutomateProcessing::AutoUpdate)?;
    let a = allocate(&sim, &server, ALICE, "Tentative").await?;
    let start = tomorrow_9();
    let uid = ews(&sim).send_meeting(meeting(
        ALICE,
        "Tentative",
        &a.instructions_html,
        start,
        start + HOUR,
    ))?;
    wait_for_replies(&sim, ALICE, &uid, 1, WAIT).await?;
    // Both the Inbox request and the Calendar's tentative copy have been seen by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = replies(&sim, ALICE, &uid)?;
    if got.len() != 1 {
        bail!("expected one reply, got {got:?}");
    }
    Ok(())
}
