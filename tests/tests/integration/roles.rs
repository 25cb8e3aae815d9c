//! End-to-end with separate edge and management processes: the deferred
//! path (management down → placeholder + a TOK the edge signed, never the
//! user's token), and the same TOK accepted later — once, for its organizer —
//! by the function the mailbox processor uses.

use anyhow::{bail, Result};
use vmr_core::config::Config;
use vmr_e2e::{Browser, ServerProcess, ServerSetup, Sim};
use vmr_protocol::tag::{find_tag, html_to_plain, MeetingTag};
use vmr_server::app::App;
use vmr_server::tag_resolution::{resolve, MeetingFacts, ResolvedTag, TagRejection};
use vmr_simulator::outlook::ComposeScenario;

async fn add_vmr(b: &Browser, sim: &Sim, pane_url: &str, want: &str) -> Result<String> {
    b.open(sim, &ComposeScenario::new(pane_url)).await?;
    b.click_add().await?;
    b.wait_id(want).await?;
    let state = b.outlook_state().await?;
    Ok(state["body"].as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_token_is_accepted_once_management_is_back() -> Result<()> {
    let sim = Sim::start().await?;
    let mut edge = ServerSetup::with_simulator(&sim)?;
    edge.role = "edge";
    let mut management = ServerSetup::with_simulator(&sim)?;
    management.role = "management";
    // One deployment: Outlook knows only the edge's host.
    management.public_host = Some(edge.public_host());
    edge.management_url = Some(management.origin());
    // Management's certificate exists before either starts, so the edge can trust it.
    let certs = tempfile::tempdir()?;
    let (cert, key) = vmr_e2e::certificate_files(certs.path())?;
    management.tls_files = Some((cert.clone(), key));
    edge.extra_ca_files.push(cert);
    let edge_process = ServerProcess::start(edge.clone())?;
    let b = Browser::start().await?;

    // 1. Management is not running: the pane inserts placeholder + TOK.
    let body = add_vmr(&b, &sim, &edge.pane_url(), "state-management-down").await?;
    let Some(Ok(MeetingTag::Tok(tok))) = find_tag(&body, true) else {
        bail!("no TOK in {body}");
    };
    // A deferral statement (HS256, typ vmr-tok), not the user's RS256 token.
    let header = tok.split('.').next().unwrap_or_default();
    assert!(
        header.starts_with("eyJhbGciOiJIUzI1NiIs"),
        "not a statement: {tok}"
    );
    assert!(html_to_plain(&body).contains("Joining instructions will be sent"));

    // 2. Management starts; the mailbox processor's check accepts that TOK.
    let mgmt_process = ServerProcess::start(management.clone())?;
    let config = Config::load(
        Some(&mgmt_process.dir.path().join("config.toml")),
        Vec::new(),
    )?;
    let App::Management(app) = App::build(config).await? else {
        bail!("a management config builds the management role");
    };
    let integration = &app.shared.integrations["default"];
    let storage = &app.storage;
    let keys = app.deferral_keys.as_deref();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let meeting = MeetingFacts {
        uid: "e2e-meeting-1",
        organizer_email: "alice@example.com",
        delegates: &[],
    };
    match resolve(&body, true, integration, keys, storage, meeting, now).await {
        Ok(ResolvedTag::Deferred(statement)) => {
            assert_eq!(statement.email.as_deref(), Some("alice@example.com"));
        }
        other => bail!("the TOK was not accepted: {other:?}"),
    }
    // The same TOK in another meeting is refused.
    let copied = MeetingFacts {
        uid: "e2e-meeting-2",
        ..meeting
    };
    match resolve(&body, true, integration, keys, storage, copied, now).await {
        Err(TagRejection::Replayed) => {}
        other => bail!("a copied TOK must be refused: {other:?}"),
    }

    // 3. With management up, the edge forwards and a real alias comes back.
    let body = add_vmr(&b, &sim, &edge.pane_url(), "state-success").await?;
    match find_tag(&body, true) {
        Some(Ok(MeetingTag::Pxps(id))) => {
            match resolve(&body, true, integration, keys, storage, meeting, now).await {
                Ok(ResolvedTag::Alias(found)) => assert_eq!(found, id),
                other => bail!("management's own tag was refused: {other:?}"),
            }
        }
        other => bail!("no PXPS after management came back: {other:?}\n{body}"),
    }
    let log = mgmt_process.log_text();
    assert!(!log.contains("ERROR"), "{log}");
    drop(edge_process);
    b.close().await;
    Ok(())
}
