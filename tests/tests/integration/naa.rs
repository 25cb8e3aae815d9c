//! End-to-end for Microsoft 365: an integration using NAA tokens. The pane
//! loads MSAL.js (the simulator's stand-in), gets an Entra access token for
//! the Web API, and the server validates it against the tenant's OIDC
//! metadata and JWKS before allocating.

use anyhow::{bail, Result};
use vmr_e2e::{Browser, ServerProcess, ServerSetup, Sim};
use vmr_protocol::tag::{find_tag, MeetingTag};
use vmr_simulator::outlook::ComposeScenario;

const API_APP_ID: &str = "5b1f0c2e-8d3a-4f6b-9c7e-2a4d6f8b0c1e";
const CLIENT_ID: &str = "9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naa_integration_signs_in_through_msal_and_allocates() -> Result<()> {
    let sim = Sim::start().await?;
    let mut setup = ServerSetup::with_simulator(&sim)?;
    let entra = &sim.running.simulator.entra;
    setup.extra_toml = format!(
        "method = \"NAA_TOKEN\"\n\
         naa_api_application_id = \"{API_APP_ID}\"\n\
         naa_oidc_metadata_url = \"{}\"\n\
         naa_allowed_tenants = [\"{}\"]\n\
         naa_client_id = \"{CLIENT_ID}\"\n\
         naa_msal_js = \"{}\"\n",
        entra.oidc_metadata_url(),
        entra.tenant_id(),
        sim.running.simulator.msal_js_url(),
    );
    let server = ServerProcess::start(setup)?;
    let b = Browser::start().await?;
    b.open(&sim, &ComposeScenario::new(server.setup.pane_url()))
        .await?;
    b.click_add().await?;
    if let Err(e) = b.wait_id("state-success").await {
        let detail = b.wait_id("state-error").await.unwrap_or_default();
        bail!(
            "{e}; pane says: {detail}; server log:\n{}",
            server.log_text()
        );
    }
    let state = b.outlook_state().await?;
    let body = state["body"].as_str().unwrap_or_default();
    assert!(
        matches!(find_tag(body, true), Some(Ok(MeetingTag::Pxps(_)))),
        "{body}"
    );
    b.close().await;
    Ok(())
}
