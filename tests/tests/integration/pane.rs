//! End-to-end: the real pane (Trunk build) in headless Chromium, inside the
//! simulated Outlook compose window, against the real server binary.
//!
//! Each test drives one pane state and asserts the exact result in the
//! simulated appointment: body contents and order, attendees, tag.

use std::time::Duration;

use anyhow::{bail, Result};
use fantoccini::Locator;
use serde_json::Value;
use vmr_e2e::{Browser, ServerProcess, ServerSetup, Sim};
use vmr_protocol::tag::{find_tag, html_to_plain, MeetingTag, TOK_WRAP_WIDTH};
use vmr_simulator::outlook::{BodyFormat, ComposeScenario, ItemKind, TokenMode};

const RESOURCE: &str = "vmr@example.com";

fn attendees(state: &Value) -> Vec<String> {
    state["requiredAttendees"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["emailAddress"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn body(state: &Value) -> String {
    state["body"].as_str().unwrap_or_default().to_string()
}

async fn setup() -> Result<(Sim, ServerProcess, Browser)> {
    let sim = Sim::start().await?;
    let server = ServerProcess::start(ServerSetup::with_simulator(&sim)?)?;
    let browser = Browser::start().await?;
    Ok((sim, server, browser))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_body_gets_instructions_tag_and_resource() -> Result<()> {
    let (sim, server, b) = setup().await?;
    let mut scenario = ComposeScenario::new(server.setup.pane_url());
    scenario.subject = "Quarterly <review> & plans".into();
    b.open(&sim, &scenario).await?;
    assert_eq!(b.wait_id("pane-title").await?, "Add a VMR");
    b.click_add().await?;
    let text = b.wait_id("state-success").await?;
    assert!(text.contains("Success"), "{text}");
    let s = b.outlook_state().await?;
    let html = body(&s);
    // Instructions first, then the tag, then what the user had typed.
    let plain = html_to_plain(&html);
    let join = plain
        .find("Join the video meeting")
        .expect("instructions inserted");
    let tag_at = plain.find("PXPS:-").expect("tag inserted");
    assert!(join < tag_at, "instructions precede the tag:\n{plain}");
    let Some(Ok(MeetingTag::Pxps(id))) = find_tag(&html, true) else {
        bail!("no valid PXPS tag in {html}");
    };
    assert_eq!(id.alias_uuid.len(), 32);
    assert!(plain.contains("@vc.example.com"), "{plain}");
    assert_eq!(attendees(&s), vec![RESOURCE.to_string()]);
    assert_eq!(s["bodyType"], "html");
    b.screenshot("html-success").await?;
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_body_gets_plain_instructions() -> Result<()> {
    let (sim, server, b) = setup().await?;
    let mut scenario = ComposeScenario::new(server.setup.pane_url());
    scenario.body = BodyFormat::Text;
    b.open(&sim, &scenario).await?;
    b.in_outlook("window.simulatedOutlook.setBody('Agenda: budget');", vec![])
        .await?;
    b.click_add().await?;
    b.wait_id("state-success").await?;
    let s = b.outlook_state().await?;
    let text = body(&s);
    assert_eq!(s["bodyType"], "text");
    assert!(text.starts_with("Join the video meeting\n"), "{text}");
    assert!(!text.contains('<'), "no markup in a text body: {text}");
    assert!(text.trim_end().ends_with("Agenda: budget"), "{text}");
    assert!(matches!(
        find_tag(&text, false),
        Some(Ok(MeetingTag::Pxps(_)))
    ));
    assert_eq!(attendees(&s), vec![RESOURCE.to_string()]);
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_tag_means_already_assigned_and_nothing_allocated() -> Result<()> {
    let (sim, server, b) = setup().await?;
    let scenario = ComposeScenario::new(server.setup.pane_url());
    b.open(&sim, &scenario).await?;
    let preset = "<p>Join</p><p>PXPS:-0a1b2c3d-00112233445566778899aabbccddeeff-ffeeddccbbaa99887766554433221100#</p>";
    b.in_outlook(
        "window.simulatedOutlook.setBody(arguments[0]); window.simulatedOutlook.clearCalls();",
        vec![Value::String(preset.into())],
    )
    .await?;
    b.click_add().await?;
    let text = b.wait_id("state-already-assigned").await?;
    assert!(text.contains("VMR already assigned"), "{text}");
    let s = b.outlook_state().await?;
    let calls: Vec<String> = serde_json::from_value(s["calls"].clone())?;
    assert!(
        !calls
            .iter()
            .any(|c| c == "getUserIdentityTokenAsync" || c == "body.prependAsync"),
        "no token, no insert: {calls:?}"
    );
    assert!(attendees(&s).is_empty());
    let metrics = vmr_e2e::insecure_client()?
        .get(format!("{}/metrics", server.origin()))
        .bearer_auth(vmr_e2e::E2E_ADMIN_TOKEN)
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("vmr_aliases_allocated_total 0"),
        "the server allocated nothing: {metrics}"
    );
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_failure_shows_error_and_retry_succeeds() -> Result<()> {
    let (sim, server, b) = setup().await?;
    let mut scenario = ComposeScenario::new(server.setup.pane_url());
    scenario.token = TokenMode::Fail;
    b.open(&sim, &scenario).await?;
    b.click_add().await?;
    let text = b.wait_id("state-error").await?;
    assert!(text.contains("Error"), "{text}");
    assert!(
        text.contains("9018"),
        "Office's error code is shown: {text}"
    );
    // Retry after Outlook recovers.
    b.client.enter_parent_frame().await?;
    b.client
        .execute(
            "window.simulatedOutlook.setScenario({token: 'ok'});",
            vec![],
        )
        .await?;
    b.client
        .find(Locator::Css("#pane-frame"))
        .await?
        .enter_frame()
        .await?;
    b.click_add().await?;
    b.wait_id("state-success").await?;
    let s = b.outlook_state().await?;
    assert_eq!(attendees(&s), vec![RESOURCE.to_string()]);
    assert_eq!(html_to_plain(&body(&s)).matches("PXPS:-").count(), 1);
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_gone_after_start_means_unavailable() -> Result<()> {
    let (sim, mut server, b) = setup().await?;
    let scenario = ComposeScenario::new(server.setup.pane_url());
    b.open(&sim, &scenario).await?;
    b.add_button().await?;
    server.stop();
    b.click_add().await?;
    let text = b.wait_id("state-unavailable").await?;
    assert!(text.contains("not available"), "{text}");
    let s = b.outlook_state().await?;
    assert!(attendees(&s).is_empty(), "nothing inserted");
    assert!(!html_to_plain(&body(&s)).contains("PXPS:-"));
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_down_inserts_placeholder_and_wrapped_token() -> Result<()> {
    let sim = Sim::start().await?;
    let mut edge = ServerSetup::with_simulator(&sim)?;
    edge.role = "edge";
    // Nothing listens on this port: management is down.
    edge.management_url = Some(format!("https://127.0.0.1:{}", vmr_e2e::free_port()?));
    let server = ServerProcess::start(edge)?;
    let b = Browser::start().await?;
    let scenario = ComposeScenario::new(server.setup.pane_url());
    b.open(&sim, &scenario).await?;
    b.click_add().await?;
    let text = b.wait_id("state-management-down").await?;
    assert!(text.contains("Cannot assign a VMR right now"), "{text}");
    let s = b.outlook_state().await?;
    let html = body(&s);
    let plain = html_to_plain(&html);
    assert!(
        plain.contains("Joining instructions will be sent to you soon"),
        "{plain}"
    );
    let Some(Ok(MeetingTag::Tok(token))) = find_tag(&html, true) else {
        bail!("no TOK tag in {html}");
    };
    assert_eq!(token.split('.').count(), 3, "a whole JWT");
    // Wrapped over several lines of at most the fixed width.
    let tok_lines: Vec<&str> = plain
        .lines()
        .skip_while(|l| !l.contains("TOK:-"))
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert!(tok_lines.len() > 2, "{tok_lines:?}");
    assert!(tok_lines
        .iter()
        .all(|l| l.chars().count() <= TOK_WRAP_WIDTH));
    b.screenshot("management-down").await?;
    assert_eq!(attendees(&s), vec![RESOURCE.to_string()]);
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_outlook_and_not_organizing_say_so() -> Result<()> {
    let (sim, server, b) = setup().await?;
    // The pane opened directly in a browser.
    b.client.goto(&server.setup.pane_url()).await?;
    let text = b.wait_id("state-not-in-outlook").await?;
    assert!(text.contains("Outlook"), "{text}");
    // A message instead of a meeting.
    let mut scenario = ComposeScenario::new(server.setup.pane_url());
    scenario.item = ItemKind::Message;
    b.open(&sim, &scenario).await?;
    let text = b.wait_id("state-not-organizing").await?;
    assert!(text.contains("meeting"), "{text}");
    assert!(b.client.find(Locator::Id("add-vmr")).await.is_err());
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn button_is_disabled_while_working_and_keyboard_operable() -> Result<()> {
    let (sim, server, b) = setup().await?;
    let mut scenario = ComposeScenario::new(server.setup.pane_url());
    scenario.delay = 400;
    b.open(&sim, &scenario).await?;
    let button = b.add_button().await?;
    // Keyboard: focus the button and press Enter.
    b.client
        .execute("document.getElementById('add-vmr').focus();", vec![])
        .await?;
    button.send_keys("\u{E007}").await?;
    let busy = b
        .client
        .wait()
        .at_most(Duration::from_secs(5))
        .for_element(Locator::Css("#add-vmr[disabled][aria-busy='true']"))
        .await;
    assert!(
        busy.is_ok(),
        "the button is disabled and aria-busy while working"
    );
    b.wait_id("state-success").await?;
    let s = b.outlook_state().await?;
    assert_eq!(
        attendees(&s),
        vec![RESOURCE.to_string()],
        "one click, one insert"
    );
    assert_eq!(html_to_plain(&body(&s)).matches("PXPS:-").count(), 1);
    b.close().await;
    Ok(())
}
