//! `cargo xtask demo`: the whole thing on loopback with embedded defaults —
//! SQLite, self-signed HTTPS, simulated Exchange and Outlook — so it can be
//! tried with no tenant. Runs until Ctrl-C.
//!
//! Layout: the simulator on https://localhost:9443 (Exchange metadata and
//! identity tokens, the EWS endpoint with the resource mailbox
//! `vmr-room@contoso.com`, the Outlook compose window with its Send button and
//! the organizer's Inbox, the fake Office.js), the server on
//! https://localhost:8443 with its state in `demo-data/`, watching that
//! mailbox: click, Send, and the Inbox shows the resource's acceptance. The
//! admin page takes the printed token, or single sign-on through the simulated
//! Entra ID as `admin@contoso.com` (its "Pick an account" page, then back).
//!
//! The URLs are printed only once both answer: the simulator's Exchange
//! metadata document and the server's `/readyz` are polled until they return
//! 200 (or the process exits, or [`START_TIMEOUT`] passes).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{cmd, pane, root, setup};
use vmr_simulator::ews;

const SERVER_PORT: u16 = 8443;
const SIMULATOR_PORT: u16 = 9443;
/// The demo server's admin listener (`/metrics`, `/readyz/detail`), loopback only.
const ADMIN_PORT: u16 = 8444;
/// The admin page's web app at the simulated Entra ID, and the user signed in there.
const SSO_CLIENT_ID: &str = "5e1f0c2a-0000-4000-8000-00000000ad31";
const SSO_USER: &str = "admin@contoso.com";
/// How long each process may take to answer its readiness URL.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two readiness polls.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Builds what is needed and runs the demo.
/// 16 random bytes in hex: the demo's admin token and single sign-on secret.
fn random_hex() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub fn run() -> Result<()> {
    setup::run()?;
    pane::build()?;
    // The same build as `cargo xtask test`, so nothing compiles twice.
    cmd("cargo", &["build", "--workspace", "--bins"], None)?;
    let data = root().join("demo-data");
    std::fs::create_dir_all(&data)?;
    let sim_cert = data.join("simulator.pem");
    let _ = std::fs::remove_file(&sim_cert);
    let pane_url = format!("https://localhost:{SERVER_PORT}/pane/index.html?integration=default");
    let bin = root().join("target/debug");
    // Single sign-on to the admin page through the simulated Entra ID: a web app with a
    // fresh secret per run, and a user signed in there who may administer.
    let sso_secret = random_hex();
    let mut simulator = Killed(
        Command::new(bin.join("vmr-simulator"))
            .args(["--listen", &format!("127.0.0.1:{SIMULATOR_PORT}")])
            .arg("--cert-out")
            .arg(&sim_cert)
            .args(["--pane", &pane_url])
            .arg("--web-app")
            .arg(format!(
                "{SSO_CLIENT_ID},{sso_secret},https://localhost:{SERVER_PORT}/admin/oidc/callback"
            ))
            .args(["--signed-in-user", SSO_USER])
            .stdout(Stdio::inherit())
            .spawn()
            .context("starting vmr-simulator")?,
    );
    // The simulator writes its certificate right after it starts listening.
    let sim_ready = format!(
        "https://localhost:{SIMULATOR_PORT}{}",
        vmr_simulator::exchange_identity::METADATA_PATH
    );
    wait_ready(&mut simulator.0, "vmr-simulator", &sim_ready)?;
    if !sim_cert.is_file() {
        bail!(
            "the simulator answers but did not write its certificate to {}",
            sim_cert.display()
        );
    }
    let config = data.join("config.toml");
    // A fresh admin token per run, for the admin page (only its hash goes into the config).
    let admin_token = random_hex();
    let admin_token_sha256 = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(admin_token.as_bytes()))
    };
    // TOML strings quoted by the toml crate (paths may hold any character).
    let q = |s: String| toml::Value::from(s).to_string();
    std::fs::write(
        &config,
        format!(
            "# Written by `cargo xtask demo`: embedded defaults plus the simulator.\n\
             [server]\nlisten = \"127.0.0.1:{SERVER_PORT}\"\npublic_host = \"localhost:{SERVER_PORT}\"\n\
             self_signed_cert_out = {server_cert}\ndist_dir = {dist}\nstatic_dir = {static_dir}\n\
             # The simulated Outlook provides Office.js; a real deployment uses \"local\" or \"cdn\".\n\
             office_js = \"https://localhost:{SIMULATOR_PORT}/office.js\"\n\
             [storage]\nurl = {db}\n\
             [http_client]\nextra_ca_files = [{sim_cert}]\n\
             [admin]\nlisten = \"127.0.0.1:{ADMIN_PORT}\"\napi_token_sha256 = [\"{admin_token_sha256}\"]\n\
             [admin.oidc]\nissuer = \"https://127.0.0.1:{SIMULATOR_PORT}/{tenant}/v2.0\"\n\
             client_id = \"{SSO_CLIENT_ID}\"\nclient_secret = \"{sso_secret}\"\n\
             allowed_users = [\"{SSO_USER}\"]\nbutton_label = \"Sign in with the simulated Entra ID\"\n\
             # Infinity may ask the policy server from this machine only.\n\
             [policy]\nallow_from = [\"127.0.0.1/32\", \"::1/128\"]\n\
             [[integration]]\nid = \"default\"\nresource_email = {resource}\nresource_name = \"VMR Room\"\n\
             [integration.auth]\nexchange_metadata = [\"localhost:{SIMULATOR_PORT}\", \"127.0.0.1:{SIMULATOR_PORT}\"]\n\
             # The resource mailbox, watched over EWS at the simulated Exchange.\n\
             [integration.exchange]\news_url = \"https://localhost:{SIMULATOR_PORT}/EWS/Exchange.asmx\"\n\
             ca_file = {sim_cert}\npoll_interval_secs = 10\n\
             [integration.exchange.auth]\nmethod = \"basic\"\nusername = {account}\npassword = {password}\n",
            resource = q(ews::DEFAULT_RESOURCE.to_owned()),
            account = q(ews::DEFAULT_SERVICE_ACCOUNT.to_owned()),
            password = q(ews::DEFAULT_SERVICE_PASSWORD.to_owned()),
            server_cert = q(data.join("server.pem").display().to_string()),
            dist = q(root().join("dist").display().to_string()),
            static_dir = q(root().join("static").display().to_string()),
            db = q(format!("sqlite://{}", data.join("vmr-scheduler.db").display())),
            sim_cert = q(sim_cert.display().to_string()),
            tenant = vmr_simulator::DEFAULT_TENANT,
        ),
    )?;
    let mut server = Killed(
        Command::new(bin.join("vmr-scheduler"))
            .arg("--config")
            .arg(&config)
            .spawn()
            .context("starting vmr-scheduler")?,
    );
    let server_ready = format!("https://localhost:{SERVER_PORT}/readyz");
    wait_ready(&mut server.0, "vmr-scheduler", &server_ready)?;
    let compose = format!(
        "https://localhost:{SIMULATOR_PORT}/outlook/compose.html?pane={}",
        percent(&pane_url)
    );
    let inbox = format!(
        "https://localhost:{SIMULATOR_PORT}{}?mailbox={}",
        vmr_simulator::outlook::INBOX_PATH,
        vmr_simulator::outlook::DEFAULT_ORGANIZER
    );
    println!(
        "\nvmr-scheduler demo is running (Ctrl-C stops it). Both use self-signed certificates:\n\
         accept them in the browser, once per port.\n\n\
         In the simulated Outlook, click the task pane's button, then Send: the resource\n\
         {resource} accepts within seconds, and the organizer's Inbox shows its reply.\n\n\
         \x20 simulated Outlook, new meeting:  {compose}\n\
         \x20 the organizer's Inbox:           {inbox}\n\
         \x20 the same with a plain-text body: {compose}&body=text\n\
         \x20 add-in manifest:                 https://localhost:{SERVER_PORT}/manifest.xml\n\
         \x20 task pane alone:                 {pane_url}\n\
         \x20 health:                          https://localhost:{SERVER_PORT}/healthz\n\
         \x20 metrics (admin listener):        http://127.0.0.1:{ADMIN_PORT}/metrics\n\
         \x20 admin page:                      https://localhost:{SERVER_PORT}/admin/ (token {admin_token},\n\
         \x20                                  or single sign-on as {SSO_USER})\n\
         \x20 Infinity policy (loopback only): https://localhost:{SERVER_PORT}/policy/v1/service/configuration?local_alias=<an alias>\n\
         \x20 config and database:             {}\n",
        data.display(),
        resource = ews::DEFAULT_RESOURCE,
    );
    let status = server.0.wait()?;
    if !status.success() {
        bail!("vmr-scheduler exited with {status}");
    }
    Ok(())
}

/// A child process that is killed when this goes out of scope, on every path
/// out of [`run`] (errors and panics included).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Polls `url` (self-signed HTTPS accepted) until it answers 200. Fails when
/// `child` exits first or [`START_TIMEOUT`] passes.
fn wait_ready(child: &mut Child, name: &str, url: &str) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(2))
        .build()?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("{name} exited with {status} before it was ready");
        }
        // reqwest's futures need the runtime from the moment they are made.
        let last = match runtime.block_on(async { http.get(url).send().await }) {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("HTTP {}", r.status()),
            Err(e) => e.to_string(),
        };
        if started.elapsed() > START_TIMEOUT {
            bail!(
                "{name} was not ready within {} s: {url} gave {last}",
                START_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
