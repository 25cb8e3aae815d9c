//! End-to-end: air-gapped sites (`server.office_js = "local"`), issue 10.
//!
//! The real pane (Trunk build) and the real Office.js from npm
//! (`static/office-js/`, copied by `cargo xtask setup`), served by the real
//! server binary, opened in headless Chromium the way Outlook on Windows, Mac
//! and the web open it (`_host_Info=…`). Every request Chromium makes to a
//! host other than loopback goes to a proxy that refuses and records it
//! ([`BlockingProxy`]); the page's Content-Security-Policy violations are
//! recorded by the pane's `boot.js`. Both counts are asserted.
//!
//! `MicrosoftAjax.js` cannot be downloaded here, so the "present" tests put a
//! TEST-ONLY stand-in (`tests/fixtures/MicrosoftAjax.test-stand-in.js`) into
//! a temporary static folder; the product never ships one.
//!
//! Outside a real Outlook, Office.js can load completely but cannot finish
//! its host handshake, so in every case the pane must end in its clear
//! "Office.js could not start" state with the reason, within the configured
//! timeout, instead of "Loading" forever.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use fantoccini::Locator;
use serde_json::Value;
use vmr_core::config::{MICROSOFT_AJAX_CDN, MICROSOFT_AJAX_FILE};
use vmr_e2e::blocking_proxy::BlockingProxy;
use vmr_e2e::{root, Browser, ServerProcess, ServerSetup, Sim};

/// How Outlook on each platform opens the pane (`_host_Info` query value).
const HOSTS: [(&str, &str); 3] = [
    ("win32", "Outlook$Win32$16.01$en-US$$$$0"),
    ("mac", "Outlook$Mac$16.00$en-US$$$$0"),
    ("web", "Outlook$Web$16.01$en-US$$$$0"),
];

/// `server.office_js_timeout_ms` in these tests.
const TIMEOUT_MS: u64 = 3000;

/// The final states the pane can settle in at start.
const SETTLED: &str = "#state-office-failed, #state-not-in-outlook, #state-not-organizing, \
    #state-unavailable, #add-vmr";

/// Chromium switches that silence the browser's own background traffic
/// (updates, network time, sign-in, safe browsing), so that what reaches the
/// proxy is the page's.
const QUIET: &[&str] = &[
    "--disable-client-side-phishing-detection",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-component-extensions-with-background-pages",
    "--disable-domain-reliability",
    "--no-default-browser-check",
    "--no-pings",
    "--metrics-recording-only",
    "--disable-breakpad",
    "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,Translate,MediaRouter,\
     AutofillServerCommunication,CertificateTransparencyComponentUpdater",
];

fn stand_in() -> PathBuf {
    root().join("tests/fixtures/MicrosoftAjax.test-stand-in.js")
}

/// A static folder like the repository's, whose `office-js/` holds the real
/// Office.js from npm and, if `with_ajax`, the TEST-ONLY stand-in.
fn static_dir(with_ajax: bool) -> Result<tempfile::TempDir> {
    let src = root().join("static");
    let office = src.join("office-js");
    ensure!(
        office.join("office.js").is_file(),
        "{} is missing: run `cargo xtask setup` (it copies the npm package @microsoft/office-js)",
        office.join("office.js").display()
    );
    let dir = tempfile::tempdir()?;
    for entry in std::fs::read_dir(&src)? {
        let entry = entry?;
        if entry.file_name() != "office-js" {
            std::os::unix::fs::symlink(entry.path(), dir.path().join(entry.file_name()))?;
        }
    }
    let to = dir.path().join("office-js");
    std::fs::create_dir(&to)?;
    for entry in std::fs::read_dir(&office)? {
        let entry = entry?;
        if entry.file_name() != MICROSOFT_AJAX_FILE {
            std::os::unix::fs::symlink(entry.path(), to.join(entry.file_name()))?;
        }
    }
    if with_ajax {
        std::fs::copy(stand_in(), to.join(MICROSOFT_AJAX_FILE))?;
    }
    Ok(dir)
}

fn local_setup(sim: &Sim, statics: &Path) -> Result<ServerSetup> {
    let mut setup = ServerSetup::with_simulator(sim)?;
    setup.office_js = "local".into();
    setup.static_dir = Some(statics.to_path_buf());
    setup.server_toml = format!("office_js_timeout_ms = {TIMEOUT_MS}");
    setup.integration_toml = "pane_debug_logs = true".into();
    Ok(setup)
}

/// What the pane showed after opening as one Outlook host.
#[derive(Debug)]
struct Seen {
    state: String,
    text: String,
    elapsed: Duration,
    errors: Vec<String>,
    violations: Vec<String>,
    debug_log: String,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn open_as(b: &Browser, pane_url: &str, host_info: &str) -> Result<Seen> {
    let url = format!("{pane_url}&_host_Info={host_info}");
    let started = Instant::now();
    b.client.goto(&url).await?;
    let settled = b
        .client
        .wait()
        .at_most(Duration::from_millis(TIMEOUT_MS) + Duration::from_secs(10))
        .for_element(Locator::Css(SETTLED))
        .await
        .with_context(|| format!("the pane never left \"Loading\" at {url}"))?;
    let elapsed = started.elapsed();
    let state = settled.attr("id").await?.unwrap_or_default();
    let text = settled.text().await?;
    let page = b
        .client
        .execute(
            "return { errors: window.vmrBoot.errors, violations: window.vmrBoot.violations, \
               log: (document.getElementById('debug-log') || {}).textContent || '' };",
            vec![],
        )
        .await?;
    Ok(Seen {
        state,
        text,
        elapsed,
        errors: strings(&page["errors"]),
        violations: strings(&page["violations"]),
        debug_log: page["log"].as_str().unwrap_or_default().to_string(),
    })
}

/// Hosts Chromium itself talks to in the background (updates, sign-in, its
/// search engine's start page): not the page's requests, so the proxy count
/// leaves them out. The page's own requests are counted exactly from the
/// DevTools network log ([`Browser::page_requests`]).
const BROWSER_SERVICE_HOSTS: &[&str] = &[
    "google.com",
    "googleapis.com",
    "gstatic.com",
    "duckduckgo.com",
];

/// Proxy lines that are not Chromium's own background traffic.
fn blocked_for_page(proxy: &BlockingProxy) -> Vec<String> {
    proxy
        .blocked()
        .into_iter()
        .filter(|line| {
            // `CONNECT host:443 HTTP/1.1` or `GET http://host/… HTTP/1.1`
            let target = line.split(' ').nth(1).unwrap_or("");
            let authority = target
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or("");
            let host = authority.split(':').next().unwrap_or("");
            !BROWSER_SERVICE_HOSTS
                .iter()
                .any(|s| host == *s || host.ends_with(&format!(".{s}")))
        })
        .collect()
}

/// A browser whose every non-loopback request goes to `proxy`, with the
/// DevTools network log on; the start-up traffic is drained.
async fn browser(proxy: &BlockingProxy) -> Result<Browser> {
    let mut args = proxy.chromium_args();
    args.extend(QUIET.iter().map(|a| a.to_string()));
    let b = Browser::start_with(&args, true).await?;
    b.client.goto("about:blank").await?;
    b.page_requests().await?;
    Ok(b)
}

/// Requests the page made to anything but the add-in host.
fn outside(requests: &[String], origin: &str) -> Vec<String> {
    let own = format!("{origin}/");
    requests
        .iter()
        .filter(|u| !u.starts_with(&own))
        .cloned()
        .collect()
}

fn assert_failed_in_time(name: &str, seen: &Seen) {
    assert_eq!(
        seen.state, "state-office-failed",
        "{name}: the pane must say that Office.js could not start: {seen:?}"
    );
    assert!(
        seen.text.contains("Office.js could not start") && seen.text.contains("Help"),
        "{name}: {}",
        seen.text
    );
    assert!(
        seen.elapsed < Duration::from_millis(TIMEOUT_MS) + Duration::from_secs(4),
        "{name}: the failure took {:?}, the timeout is {TIMEOUT_MS} ms",
        seen.elapsed
    );
    assert!(
        seen.debug_log.contains("Office.js could not start:"),
        "{name}: the debug log shows the detail: {}",
        seen.debug_log
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_microsoft_ajax_no_request_leaves_the_add_in_host() -> Result<()> {
    let sim = Sim::start().await?;
    let statics = static_dir(true)?;
    let server = ServerProcess::start(local_setup(&sim, statics.path())?)?;
    let origin = server.origin();

    let index = vmr_e2e::insecure_client()?
        .get(server.setup.pane_url())
        .send()
        .await?;
    let csp = index.headers()["content-security-policy"]
        .to_str()?
        .to_string();
    let html = index.text().await?;
    assert!(
        csp.starts_with("default-src 'none'; script-src 'self' 'wasm-unsafe-eval' 'sha256-"),
        "{csp}"
    );
    assert!(
        !csp.contains("'unsafe-eval'") && !csp.contains("'unsafe-inline'"),
        "{csp}"
    );
    let ajax_at = html
        .find("/office-js/MicrosoftAjax.js\"></script>")
        .context("MicrosoftAjax.js tag")?;
    let office_at = html
        .find("/office-js/office.js\"></script>")
        .context("office.js tag")?;
    assert!(
        ajax_at < office_at,
        "MicrosoftAjax.js loads before Office.js:\n{html}"
    );

    let proxy = BlockingProxy::start().await?;
    let b = browser(&proxy).await?;
    for (name, info) in HOSTS {
        proxy.clear();
        let seen = open_as(&b, &server.setup.pane_url(), info).await?;
        let requests = b.page_requests().await?;
        b.screenshot(&format!("air-gapped-{name}-with-microsoft-ajax"))
            .await?;
        eprintln!(
            "{name}: \"Office.js could not start\" after {:?}: {}",
            seen.elapsed,
            seen.errors.join("; ")
        );
        assert_failed_in_time(name, &seen);
        assert_eq!(
            outside(&requests, &origin),
            Vec::<String>::new(),
            "{name}: page requests outside the add-in host"
        );
        assert_eq!(
            seen.violations,
            Vec::<String>::new(),
            "{name}: policy violations"
        );
        assert_eq!(
            blocked_for_page(&proxy),
            Vec::<String>::new(),
            "{name}: requests that reached the blocking proxy"
        );
        // Office.js really ran: MicrosoftAjax.js and this platform's host
        // script came from the add-in host, and the reason is the missing
        // host handshake, not MicrosoftAjax.js.
        let host_script = match name {
            "win32" => "/office-js/outlook-win32-16.01.js",
            "mac" => "/office-js/outlook-mac-16.00.js",
            _ => "/office-js/outlook-web-16.01.js",
        };
        for needed in [
            "/office-js/MicrosoftAjax.js",
            "/office-js/office.js",
            host_script,
        ] {
            assert!(
                requests.contains(&format!("{origin}{needed}")),
                "{name}: {needed} was loaded: {requests:?}"
            );
        }
        assert!(
            !seen.text.contains("MicrosoftAjax"),
            "{name}: {}",
            seen.text
        );
        let help = b
            .client
            .find(Locator::Css("#state-office-failed a"))
            .await?
            .attr("href")
            .await?;
        assert_eq!(help.as_deref(), Some("/static/help.html#office-js"));
    }
    // The proxy is really in the path: a page on another host is refused there.
    let _ = b.client.goto("https://blocked.example.com/").await;
    assert!(
        proxy
            .blocked()
            .iter()
            .any(|l| l.starts_with("CONNECT blocked.example.com:443")),
        "{:?}",
        proxy.blocked()
    );
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_microsoft_ajax_check_config_and_start_up_refuse_with_the_instruction() -> Result<()>
{
    let sim = Sim::start().await?;
    let statics = static_dir(false)?;
    let setup = local_setup(&sim, statics.path())?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config.toml");
    std::fs::write(&config, setup.toml(dir.path()))?;
    let expected_path = statics.path().join("office-js").join(MICROSOFT_AJAX_FILE);
    for command in ["check-config", "serve"] {
        let out = Command::new(vmr_e2e::bin("vmr-scheduler")?)
            .arg("--config")
            .arg(&config)
            .arg(command)
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        for part in [
            "server.office_js",
            MICROSOFT_AJAX_CDN,
            &expected_path.display().to_string(),
            "VMR_MICROSOFT_AJAX_JS",
        ] {
            assert!(stderr.contains(part), "{command} names {part:?}: {stderr}");
        }
    }
    // With the file, both accept the same config.
    std::fs::copy(stand_in(), &expected_path)?;
    let out = Command::new(vmr_e2e::bin("vmr-scheduler")?)
        .arg("--config")
        .arg(&config)
        .arg("check-config")
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_microsoft_ajax_the_pane_says_why_instead_of_loading_forever() -> Result<()> {
    let sim = Sim::start().await?;
    let statics = static_dir(true)?;
    let server = ServerProcess::start(local_setup(&sim, statics.path())?)?;
    let origin = server.origin();
    // The file goes missing after start (the server refuses to start without
    // it): the pane must still end in a clear state.
    std::fs::remove_file(statics.path().join("office-js").join(MICROSOFT_AJAX_FILE))?;
    let proxy = BlockingProxy::start().await?;
    let b = browser(&proxy).await?;
    for (name, info) in HOSTS {
        proxy.clear();
        let seen = open_as(&b, &server.setup.pane_url(), info).await?;
        let requests = b.page_requests().await?;
        b.screenshot(&format!("air-gapped-{name}-without-microsoft-ajax"))
            .await?;
        eprintln!(
            "{name}: \"Office.js could not start\" after {:?}: {}",
            seen.elapsed,
            seen.errors.join("; ")
        );
        assert_failed_in_time(name, &seen);
        assert!(
            seen.text.contains(&format!(
                "could not load {origin}/office-js/MicrosoftAjax.js"
            )),
            "{name}: the reason names the missing file: {}",
            seen.text
        );
        // Office.js then reaches for Microsoft's CDN: the policy blocks it
        // before it leaves the browser, and it is counted.
        assert_eq!(
            outside(&requests, &origin),
            vec![MICROSOFT_AJAX_CDN.to_string()],
            "{name}: the one request outside the add-in host"
        );
        assert!(
            seen.violations
                .iter()
                .any(|v| v.contains("ajax.aspnetcdn.com")),
            "{name}: the CDN request is blocked by the policy: {:?}",
            seen.violations
        );
        assert_eq!(
            blocked_for_page(&proxy),
            Vec::<String>::new(),
            "{name}: nothing got past the policy"
        );
    }
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn office_js_without_microsoft_ajax_outside_local_mode_is_blocked_and_explained() -> Result<()>
{
    // The original scenario: Office.js from the add-in host but no
    // MicrosoftAjax.js and no policy (office_js is a URL, not "local").
    // Office.js asks Microsoft's CDN; the proxy refuses and counts it.
    let sim = Sim::start().await?;
    let statics = static_dir(false)?;
    let mut setup = local_setup(&sim, statics.path())?;
    setup.office_js = format!("{}/office-js/office.js", setup.origin());
    let server = ServerProcess::start(setup)?;
    let proxy = BlockingProxy::start().await?;
    let b = browser(&proxy).await?;
    for (name, info) in HOSTS {
        proxy.clear();
        let seen = open_as(&b, &server.setup.pane_url(), info).await?;
        let requests = b.page_requests().await?;
        b.screenshot(&format!("office-js-url-{name}-without-microsoft-ajax"))
            .await?;
        eprintln!(
            "{name}: \"Office.js could not start\" after {:?}: {}",
            seen.elapsed,
            seen.errors.join("; ")
        );
        assert_failed_in_time(name, &seen);
        assert!(seen.text.contains("MicrosoftAjax"), "{name}: {}", seen.text);
        assert_eq!(
            outside(&requests, &server.origin()),
            vec![MICROSOFT_AJAX_CDN.to_string()],
            "{name}"
        );
        assert_eq!(
            blocked_for_page(&proxy),
            vec!["CONNECT ajax.aspnetcdn.com:443 HTTP/1.1".to_string()],
            "{name}"
        );
    }
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn office_js_that_does_not_load_is_named() -> Result<()> {
    let sim = Sim::start().await?;
    let statics = static_dir(false)?;
    let mut setup = local_setup(&sim, statics.path())?;
    let missing = format!("{}/office-js/no-such-office.js", setup.origin());
    setup.office_js = missing.clone();
    let server = ServerProcess::start(setup)?;
    let proxy = BlockingProxy::start().await?;
    let b = browser(&proxy).await?;
    let seen = open_as(&b, &server.setup.pane_url(), HOSTS[0].1).await?;
    b.screenshot("office-js-missing").await?;
    assert_failed_in_time("win32", &seen);
    assert!(
        seen.text.contains(&format!("could not load {missing}")),
        "{}",
        seen.text
    );
    b.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outlook_slower_than_the_timeout_still_gets_its_pane() -> Result<()> {
    // TEST-ONLY fixture: an Office.js whose onReady answers after 2.5 s; the
    // pane's timeout is 1 s. The pane must say so at once, then recover.
    let sim = Sim::start().await?;
    let statics = static_dir(false)?;
    std::fs::copy(
        root().join("tests/fixtures/slow-office.test-only.js"),
        statics.path().join("slow-office.js"),
    )?;
    let mut setup = local_setup(&sim, statics.path())?;
    setup.office_js = format!("{}/static/slow-office.js?ms=2500", setup.origin());
    setup.server_toml = "office_js_timeout_ms = 1000".into();
    let server = ServerProcess::start(setup)?;
    let b = Browser::start().await?;
    let started = Instant::now();
    b.client.goto(&server.setup.pane_url()).await?;
    let reason = b.wait_id("office-failed-reason").await?;
    let failed_after = started.elapsed();
    assert!(reason.contains("within 1.0 s"), "{reason}");
    assert!(
        failed_after < Duration::from_millis(2500),
        "{failed_after:?}"
    );
    b.add_button().await?;
    let ready_after = started.elapsed();
    assert!(
        ready_after >= Duration::from_millis(2500),
        "{ready_after:?}"
    );
    let log = b.wait_id("debug-log").await?;
    assert!(log.contains("after the timeout"), "{log}");
    b.close().await;
    Ok(())
}
