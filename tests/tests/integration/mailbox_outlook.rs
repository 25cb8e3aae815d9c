//! The whole loop as a user meets it: in the simulated Outlook the organizer clicks the
//! add-in's button, then Send; the meeting reaches the simulated Exchange, the real server
//! accepts it as the resource over EWS, and the organizer's Inbox shows the acceptance with
//! the accept template (screenshot: `target/e2e-screenshots/mailbox-accepted.png`).

use std::time::Duration;

use anyhow::Result;
use vmr_e2e::mailbox::{open_store, text_of, wait_for_replies, watching_setup};
use vmr_e2e::{Browser, ServerProcess, Sim};
use vmr_simulator::outlook::{ComposeScenario, DEFAULT_ORGANIZER, INBOX_PATH};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_send_and_the_organizer_reads_the_acceptance() -> Result<()> {
    let sim = Sim::start().await?;
    // Polling once a minute: an answer within the 30 s wait below can only come from the
    // streaming notification the Send caused.
    let mut setup = watching_setup(&sim, "")?;
    setup.integration_toml = setup
        .integration_toml
        .replace("poll_interval_secs = 5", "poll_interval_secs = 60");
    assert!(setup.integration_toml.contains("poll_interval_secs = 60"));
    let server = ServerProcess::start(setup)?;
    let b = Browser::start().await?;
    let mut scenario = ComposeScenario::new(server.setup.pane_url());
    scenario.subject = "Quarterly review".into();
    b.open(&sim, &scenario).await?;
    b.click_add().await?;
    b.wait_id("state-success").await?;
    let sent = std::time::Instant::now();
    let uid = b.send_from_outlook().await?;
    assert!(uid.starts_with("040000008200E00074C5B7101A82E008"), "{uid}");

    let got = wait_for_replies(&sim, DEFAULT_ORGANIZER, &uid, 1, Duration::from_secs(30)).await?;
    eprintln!(
        "Send → acceptance in the organizer's Inbox: {} ms",
        sent.elapsed().as_millis()
    );
    assert_eq!(got[0].item_class, "IPM.Schedule.Meeting.Resp.Pos");
    let store = open_store(&server).await?;
    let meeting = store.meeting("default", &uid).await?.expect("stored");
    assert_eq!(meeting.state, "accepted");
    let alias = store
        .alias_by_id(meeting.alias_id.as_deref().unwrap_or_default())
        .await?
        .expect("alias");
    let text = text_of(&got[0].body);
    assert!(
        text.contains("has been scheduled") && text.contains(&alias.alias),
        "{text}"
    );

    // What the organizer sees in Outlook's Inbox.
    b.goto(&format!(
        "{}{INBOX_PATH}?mailbox={DEFAULT_ORGANIZER}",
        sim.origin()
    ))
    .await?;
    let message = b
        .wait_css(
            "article.message[data-class='IPM.Schedule.Meeting.Resp.Pos']",
            Duration::from_secs(10),
        )
        .await?;
    let subject = message
        .find(fantoccini::Locator::Css(".subject"))
        .await?
        .text()
        .await?;
    assert_eq!(subject, "Accepted: Quarterly review");
    let shot = b.screenshot("mailbox-accepted").await?;
    eprintln!("screenshot: {}", shot.display());
    b.close().await;
    Ok(())
}
