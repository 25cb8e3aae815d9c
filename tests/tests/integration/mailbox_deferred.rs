//! Deferred meetings end to end: an edge whose management is down hands the pane a
//! placeholder and a TOK; the organizer sends the meeting; the real `vmr-scheduler` watching
//! the simulated resource mailbox checks the TOK, draws the alias, rewrites the organizer's
//! own meeting (impersonating the organizer) so every attendee gets the instructions from
//! the organizer, and accepts — and refuses expired, replayed and foreign TOKs, and says why
//! when it may not act as the organizer.

use std::time::Duration;

use anyhow::{Context, Result};
use vmr_e2e::mailbox::{
    defer, deferred_block, exchange_options, meeting, mint_tok, now_ms, open_store, replies,
    text_of, wait_for_replies, wait_until, watching_setup, RESOURCE,
};
use vmr_e2e::{free_port, ServerProcess, ServerSetup, Sim};
use vmr_protocol::tag::{find_tag, MeetingTag};
use vmr_simulator::ews::{FolderName, MessageSummary};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
const WAIT: Duration = Duration::from_secs(40);
const ALICE: &str = "alice@example.com";
const BOB: &str = "bob@example.com";

/// Tomorrow at 09:00 UTC plus `hours`.
fn tomorrow(hours: i64) -> i64 {
    (now_ms() / DAY + 1) * DAY + (9 + hours) * HOUR
}

fn messages(sim: &Sim, who: &str, folder: FolderName, uid: &str) -> Result<Vec<MessageSummary>> {
    Ok(sim
        .running
        .simulator
        .ews
        .mailbox_messages(who, folder)?
        .into_iter()
        .filter(|m| m.uid.as_deref() == Some(uid))
        .collect())
}

/// The alias uuid of the PXPS tag in a body, if it carries one.
fn pxps_alias(body: &vmr_core::meeting::Body) -> Option<String> {
    match find_tag(&body.content, body.html) {
        Some(Ok(MeetingTag::Pxps(id))) => Some(id.alias_uuid),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_meeting_is_completed_as_the_organizer_and_accepted_once() -> Result<()> {
    let sim = Sim::start().await?;
    let management = ServerProcess::start(watching_setup(&sim, "")?)?;
    let mut edge_setup = ServerSetup::with_simulator(&sim)?;
    edge_setup.role = "edge";
    // Management is "down": nothing listens there.
    edge_setup.management_url = Some(format!("https://127.0.0.1:{}", free_port()?));
    let edge = ServerProcess::start(edge_setup)?;

    let deferred = defer(&sim, &edge, ALICE, "Deferred planning").await?;
    assert!(!deferred.tok.is_empty(), "{deferred:?}");
    let start = tomorrow(0);
    let uid = sim.running.simulator.ews.send_meeting(meeting(
        ALICE,
        "Deferred planning",
        &deferred_block(&deferred.placeholder_html, &deferred.tok),
        start,
        start + HOUR,
    ))?;

    // Bob gets the organizer's update carrying the instructions, from Alice.
    let update = wait_until(WAIT, || async {
        let got = messages(&sim, BOB, FolderName::Inbox, &uid)?;
        Ok(got.into_iter().find(|m| pxps_alias(&m.body).is_some()))
    })
    .await
    .context("Bob never got the update with the instructions")?;
    assert_eq!(
        update.from.as_ref().map(|p| p.email.as_str()),
        Some(ALICE),
        "{update:?}"
    );
    let alias_id = pxps_alias(&update.body).context("tag")?;
    let text = text_of(&update.body);
    assert!(!text.contains("TOK:-"), "the TOK is still there: {text}");
    assert!(
        !text.contains("Joining instructions will be sent"),
        "the placeholder is still there: {text}"
    );
    assert!(
        text.contains("Agenda to follow."),
        "the organizer's text went: {text}"
    );

    // The organizer's own copy carries them too.
    let copies = messages(&sim, ALICE, FolderName::Calendar, &uid)?;
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(
        pxps_alias(&copies[0].body).as_deref(),
        Some(alias_id.as_str())
    );

    // The resource accepts the organizer's update (same alias), once.
    let got = match wait_for_replies(&sim, ALICE, &uid, 1, WAIT).await {
        Ok(got) => got,
        Err(e) => return Err(e.context(management.log_text())),
    };
    let store = open_store(&management).await?;
    let alias = store
        .alias_by_id(&alias_id)
        .await?
        .context("alias stored")?;
    for reply in &got {
        assert_eq!(reply.item_class, "IPM.Schedule.Meeting.Resp.Pos", "{got:?}");
        assert!(
            text_of(&reply.body).contains(&alias.numeric_alias),
            "{got:?}"
        );
    }
    let stored = store.meeting("default", &uid).await?.context("meeting")?;
    assert_eq!(stored.state, "accepted");
    assert_eq!(stored.alias_id.as_deref(), Some(alias_id.as_str()));
    assert_eq!(alias.state, "bound");
    assert_eq!(alias.meeting_uid.as_deref(), Some(uid.as_str()));
    assert_eq!(
        store.count_aliases("default").await?,
        1,
        "a second alias was drawn"
    );

    // Nothing more comes: no second reply, no second update to Bob.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(replies(&sim, ALICE, &uid)?.len(), 1);
    let with_tags = messages(&sim, BOB, FolderName::Inbox, &uid)?
        .into_iter()
        .filter(|m| pxps_alias(&m.body).is_some())
        .count();
    assert_eq!(with_tags, 1);
    let resource_calendar = messages(&sim, RESOURCE, FolderName::Calendar, &uid)?;
    assert_eq!(resource_calendar.len(), 1, "{resource_calendar:?}");
    assert_eq!(
        pxps_alias(&resource_calendar[0].body).as_deref(),
        Some(alias_id.as_str()),
        "the resource's calendar lacks the instructions"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_replayed_and_foreign_toks_are_refused() -> Result<()> {
    let sim = Sim::start().await?;
    let server = ServerProcess::start(watching_setup(&sim, "")?)?;
    let ews = &sim.running.simulator.ews;
    let now = now_ms() / 1000;
    let send = |subject: &str, tok: &str, hours: i64| {
        ews.send_meeting(meeting(
            ALICE,
            subject,
            &deferred_block("<div>Instructions will follow.</div>", tok),
            tomorrow(hours),
            tomorrow(hours) + HOUR,
        ))
    };

    let expired = send(
        "Expired",
        &mint_tok(ALICE, now - 8 * 86_400, now - 86_400)?,
        0,
    )?;
    let foreign = send(
        "Foreign",
        &mint_tok("mallory@example.com", now, now + 86_400)?,
        1,
    )?;
    let valid_tok = mint_tok(ALICE, now, now + 86_400)?;
    let first = send("First use", &valid_tok, 2)?;
    // The first use is accepted before the copy is sent.
    wait_for_replies(&sim, ALICE, &first, 1, WAIT).await?;
    let replayed = send("Replayed", &valid_tok, 3)?;

    for uid in [&expired, &foreign, &replayed] {
        let got = wait_for_replies(&sim, ALICE, uid, 1, WAIT).await?;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            got[0].item_class, "IPM.Schedule.Meeting.Resp.Neg",
            "{got:?}"
        );
        let text = text_of(&got[0].body);
        assert!(
            text.contains("does not carry valid scheduling data"),
            "{text}"
        );
    }
    for reply in replies(&sim, ALICE, &first)? {
        assert_eq!(reply.item_class, "IPM.Schedule.Meeting.Resp.Pos");
    }

    let store = open_store(&server).await?;
    // Only the first use drew an alias.
    assert_eq!(store.count_aliases("default").await?, 1);
    let operations = store.operations("default", 100).await?;
    let why = |uid: &str| {
        operations
            .iter()
            .filter(|o| o.resource_id == uid && !o.operation.success)
            .map(|o| o.operation.error_description.clone())
            .collect::<Vec<_>>()
            .join(" | ")
    };
    assert!(why(&expired).contains("expired"), "{}", why(&expired));
    assert!(
        why(&foreign).contains("neither the organizer"),
        "{}",
        why(&foreign)
    );
    assert!(
        why(&replayed).contains("already used"),
        "{}",
        why(&replayed)
    );

    // The decisions are counted.
    let metrics = vmr_e2e::insecure_client()?
        .get(format!("{}/metrics", server.origin()))
        .bearer_auth(vmr_e2e::E2E_ADMIN_TOKEN)
        .send()
        .await?
        .text()
        .await?;
    for counted in [
        "vmr_meetings_processed_total{integration=\"default\",decision=\"decline\"} 3",
        "vmr_meetings_processed_total{integration=\"default\",decision=\"defer\"} 1",
    ] {
        assert!(metrics.contains(counted), "{counted} missing: {metrics}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_impersonation_of_organizers_the_meeting_is_declined_with_the_reason_logged(
) -> Result<()> {
    let mut options = exchange_options();
    // The service account may act as the resource only.
    options.accounts[0].impersonate = vec![RESOURCE.into()];
    let sim = Sim::start_with(options).await?;
    let server = ServerProcess::start(watching_setup(&sim, "")?)?;
    let now = now_ms() / 1000;
    let uid = sim.running.simulator.ews.send_meeting(meeting(
        ALICE,
        "No rights",
        &deferred_block(
            "<div>Instructions will follow.</div>",
            &mint_tok(ALICE, now, now + 86_400)?,
        ),
        tomorrow(0),
        tomorrow(0) + HOUR,
    ))?;
    let got = wait_for_replies(&sim, ALICE, &uid, 1, WAIT).await?;
    assert_eq!(
        got[0].item_class, "IPM.Schedule.Meeting.Resp.Neg",
        "{got:?}"
    );
    let text = text_of(&got[0].body);
    assert!(text.contains("could not be scheduled"), "{text}");
    assert!(text.contains("CorrelationID="), "{text}");

    let store = open_store(&server).await?;
    let stored = store.meeting("default", &uid).await?.context("meeting")?;
    assert_eq!(stored.state, "declined");
    let operation = store
        .operations("default", 100)
        .await?
        .into_iter()
        .find(|o| o.resource_id == uid && !o.operation.success)
        .context("no failed operation logged")?;
    assert_eq!(operation.operation.error_code, "general_error");
    let why = &operation.operation.error_description;
    assert!(why.contains(ALICE), "{why}");
    assert!(why.contains("ApplicationImpersonation"), "{why}");
    // Bob never got an update, and the organizer's body still holds the TOK.
    let bob = messages(&sim, BOB, FolderName::Inbox, &uid)?;
    assert!(bob.iter().all(|m| pxps_alias(&m.body).is_none()), "{bob:?}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(replies(&sim, ALICE, &uid)?.len(), 1, "declined twice");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tok_of_the_delegate_who_sent_the_meeting_on_the_organizers_behalf_is_accepted(
) -> Result<()> {
    const DAVE: &str = "dave@example.com";
    let sim = Sim::start().await?;
    let ews = &sim.running.simulator.ews;
    ews.add_mailbox(DAVE, "Dave", vmr_simulator::ews::MailboxKind::User);
    let server = ServerProcess::start(watching_setup(&sim, "")?)?;
    let now = now_ms() / 1000;
    // Dave, Alice's delegate, clicked the button (his TOK) and sends on Alice's behalf.
    let uid = ews.send_meeting_on_behalf(
        meeting(
            ALICE,
            "Booked by Dave",
            &deferred_block(
                "<div>Instructions will follow.</div>",
                &mint_tok(DAVE, now, now + 86_400)?,
            ),
            tomorrow(0),
            tomorrow(0) + HOUR,
        ),
        DAVE,
    )?;
    let got = match wait_for_replies(&sim, ALICE, &uid, 1, WAIT).await {
        Ok(got) => got,
        Err(e) => return Err(e.context(server.log_text())),
    };
    assert_eq!(
        got[0].item_class, "IPM.Schedule.Meeting.Resp.Pos",
        "{got:?}"
    );
    let update = messages(&sim, BOB, FolderName::Inbox, &uid)?
        .into_iter()
        .find(|m| pxps_alias(&m.body).is_some())
        .context("Bob got no update with the instructions")?;
    assert_eq!(update.from.map(|p| p.email).as_deref(), Some(ALICE));

    // The same kind of TOK on a meeting Alice sent herself names someone who is neither
    // the organizer nor the sender: refused.
    let own = ews.send_meeting(meeting(
        ALICE,
        "Sent by Alice",
        &deferred_block(
            "<div>Instructions will follow.</div>",
            &mint_tok(DAVE, now, now + 86_400)?,
        ),
        tomorrow(2),
        tomorrow(2) + HOUR,
    ))?;
    let got = wait_for_replies(&sim, ALICE, &own, 1, WAIT).await?;
    assert_eq!(
        got[0].item_class, "IPM.Schedule.Meeting.Resp.Neg",
        "{got:?}"
    );
    Ok(())
}
