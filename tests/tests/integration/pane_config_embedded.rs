//! End-to-end: the pane config travels inside `index.html` (issue 6 §6, one
//! round trip less). The real pane in the simulated Outlook compose window,
//! the real server, headless Chromium with the DevTools network log, which
//! records every request the page (and its frames) start.

use anyhow::{Context, Result};
use serde_json::Value;
use vmr_e2e::{Browser, ServerProcess, ServerSetup, Sim};
use vmr_protocol::PANE_CONFIG_PATH;
use vmr_simulator::outlook::ComposeScenario;

fn config_requests(requests: &[String]) -> Vec<String> {
    requests
        .iter()
        .filter(|u| u.contains(PANE_CONFIG_PATH))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_config_means_no_config_request() -> Result<()> {
    let sim = Sim::start().await?;
    let server = ServerProcess::start(ServerSetup::with_simulator(&sim)?)?;
    let html = vmr_e2e::insecure_client()?
        .get(server.setup.pane_url())
        .send()
        .await?
        .text()
        .await?;
    assert!(
        html.contains("<script type=\"application/json\" id=\"vmr-pane-config\">"),
        "{html}"
    );
    assert!(
        html.contains("rel=\"preload\"") && html.contains("application/wasm"),
        "the wasm is preloaded: {html}"
    );
    let b = Browser::start_with(&[], true).await?;
    b.page_requests().await?;
    b.open(&sim, &ComposeScenario::new(server.setup.pane_url()))
        .await?;
    assert_eq!(b.wait_id("pane-title").await?, "Add a VMR");
    b.add_button().await?;
    let requests = b.page_requests().await?;
    assert!(
        requests
            .iter()
            .any(|u| u.starts_with(&format!("{}/pane/", server.origin()))),
        "the log saw the pane's own requests: {requests:?}"
    );
    assert_eq!(config_requests(&requests), Vec::<String>::new());
    // The embedded config is the real one: the click flow works with it.
    b.click_add().await?;
    b.wait_id("state-success").await?;
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_element_the_pane_fetches_its_config() -> Result<()> {
    let sim = Sim::start().await?;
    let server = ServerProcess::start(ServerSetup::with_simulator(&sim)?)?;
    // No `integration` in the URL: the server embeds nothing, the pane uses
    // the default integration and asks for its config.
    let url = format!("https://{}/pane/index.html", server.setup.public_host());
    let html = vmr_e2e::insecure_client()?
        .get(&url)
        .send()
        .await?
        .text()
        .await?;
    assert!(!html.contains("vmr-pane-config"), "{html}");
    let b = Browser::start_with(&[], true).await?;
    b.page_requests().await?;
    b.open(&sim, &ComposeScenario::new(url)).await?;
    assert_eq!(b.wait_id("pane-title").await?, "Add a VMR");
    b.add_button().await?;
    let requests = b.page_requests().await?;
    assert_eq!(
        config_requests(&requests),
        vec![format!(
            "{}{PANE_CONFIG_PATH}?integration=default",
            server.origin()
        )]
    );
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pane_texts_stay_inert() -> Result<()> {
    let hostile_title = "</script><script>window.pwned=1</script><!-- & \u{2028}";
    let hostile_description = "<img src=x onerror=\"window.pwned=2\"> </head>";
    let sim = Sim::start().await?;
    let mut setup = ServerSetup::with_simulator(&sim)?;
    setup.integration_toml = format!(
        "[integration.pane]\ntitle = {}\ndescription = {}\n",
        Value::String(hostile_title.into()),
        Value::String(hostile_description.into())
    );
    let server = ServerProcess::start(setup)?;
    let html = vmr_e2e::insecure_client()?
        .get(server.setup.pane_url())
        .send()
        .await?
        .text()
        .await?;
    let start = html
        .find("id=\"vmr-pane-config\">")
        .context("embedded element")?;
    let element = &html[start..start + html[start..].find("</script>").context("end")?];
    assert!(
        !element.contains("<script") && !element.contains("<img") && !element.contains("<!--"),
        "{element}"
    );
    let b = Browser::start_with(&[], true).await?;
    b.page_requests().await?;
    b.open(&sim, &ComposeScenario::new(server.setup.pane_url()))
        .await?;
    b.add_button().await?;
    let shown = b
        .client
        .execute(
            "return [document.getElementById('pane-title').textContent, \
               document.querySelector('.description').textContent, typeof window.pwned, \
               document.querySelectorAll('script:not([src])').length, \
               document.querySelectorAll('img').length];",
            vec![],
        )
        .await?;
    assert_eq!(shown[0], hostile_title, "the title is shown as text");
    assert_eq!(
        shown[1], hostile_description,
        "the description is shown as text"
    );
    assert_eq!(shown[2], "undefined", "no injected script ran");
    // Trunk's module script and the JSON data block: nothing injected.
    assert_eq!(shown[3], 2, "inline scripts in the page");
    assert_eq!(shown[4], 0, "no injected image");
    assert_eq!(
        config_requests(&b.page_requests().await?),
        Vec::<String>::new()
    );
    b.screenshot("pane-config-hostile-texts").await?;
    b.close().await;
    Ok(())
}
