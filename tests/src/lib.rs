//! End-to-end harness: starts the real `vmr-scheduler` binary (one process
//! per role), the simulator (simulated Exchange + Outlook, in-process), and
//! headless Debian Chromium through chromedriver, all on loopback.
//!
//! Used by the browser tests in `tests/tests/` and by `cargo xtask bench`.
//! The binaries must be built first (`cargo build --bins`; `cargo xtask test`
//! does it); the pane must be built into `dist/` (`cargo xtask build-pane`).

pub mod blocking_proxy;
pub mod cluster;
pub mod mailbox;
pub mod policy_load;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use fantoccini::Locator;
use vmr_simulator::outlook::ComposeScenario;
use vmr_simulator::RunningSimulator;

/// How long a browser wait may take.
const WAIT: Duration = Duration::from_secs(20);

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A built binary of this workspace (debug unless `VMR_BIN_DIR` says otherwise).
pub fn bin(name: &str) -> Result<PathBuf> {
    let dir = match std::env::var_os("VMR_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("target"))
            .join("debug"),
    };
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} is missing: build it first (`cargo build --bins`, which `cargo xtask test` runs)",
            path.display()
        );
    }
    Ok(path)
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Writes a self-signed certificate and key for 127.0.0.1 into `dir`, so a
/// process can be trusted by others before it starts; returns (cert, key).
pub fn certificate_files(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let pair = vmr_server::tls::self_signed("127.0.0.1")?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &pair.cert)?;
    std::fs::write(&key, &pair.key)?;
    Ok((cert, key))
}

/// The simulator, running in this process, with its certificate on disk.
pub struct Sim {
    pub running: RunningSimulator,
    pub cert_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sim {
    /// Starts the simulator on a free loopback port.
    pub async fn start() -> Result<Sim> {
        Self::start_with(mailbox::exchange_options()).await
    }

    /// Starts the simulator with its Exchange set up by `options` (e.g. a service account that
    /// may not impersonate the resource).
    pub async fn start_with(options: vmr_simulator::ews::ExchangeOptions) -> Result<Sim> {
        let running = vmr_simulator::start_with(
            "127.0.0.1:0".parse()?,
            vmr_simulator::DEFAULT_TENANT,
            options,
        )
        .await?;
        let dir = tempfile::tempdir()?;
        let cert_file = dir.path().join("simulator.pem");
        running.tls.write_cert_pem(&cert_file)?;
        Ok(Sim {
            running,
            cert_file,
            _dir: dir,
        })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn origin(&self) -> String {
        self.running.origin().to_string()
    }

    /// URL of the fake Office.js.
    pub fn office_js_url(&self) -> String {
        self.running.simulator.office_js_url()
    }

    /// The compose window hosting `scenario`.
    pub fn compose_url(&self, scenario: &ComposeScenario) -> String {
        self.running.simulator.compose_url(scenario)
    }
}

/// The deferral key every e2e server process shares (edges sign TOKs with it,
/// management checks them).
pub const E2E_DEFERRAL_KEY: &str =
    "d3f3aa11d3f3aa11d3f3aa11d3f3aa11d3f3aa11d3f3aa11d3f3aa11d3f3aa11";

/// Admin API token of every e2e server process (for `/metrics`), and its SHA-256.
pub const E2E_ADMIN_TOKEN: &str = "e2e-admin-token";
const E2E_ADMIN_TOKEN_SHA256: &str =
    "20357603bbd1490b9215bd7cfff9421bccf4d9131bd54e4ac53ce12caf5fbc32";

/// How to configure one server process.
#[derive(Debug, Clone)]
pub struct ServerSetup {
    pub role: &'static str,
    pub port: u16,
    /// `sqlite://…` or `postgres://…`; defaults to a file in the process dir.
    pub storage_url: Option<String>,
    pub office_js: String,
    pub exchange_metadata: Vec<String>,
    pub extra_ca_files: Vec<PathBuf>,
    pub management_url: Option<String>,
    pub shared_secret: String,
    /// Appended verbatim to the generated TOML (inside `[[integration]]`
    /// when it starts with a key, so put tables after keys).
    pub integration_toml: String,
    /// Appended verbatim after everything.
    pub extra_toml: String,
    /// Use the release build of the binary.
    pub release: bool,
    /// Host Outlook uses (all roles of one deployment share it); default
    /// `127.0.0.1:<port>`.
    pub public_host: Option<String>,
    /// Random digits per alias.
    pub alias_digits: u32,
    /// PEM certificate and key files for the listener; default self-signed.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    /// `server.static_dir`; default the repository's `static/`.
    pub static_dir: Option<PathBuf>,
    /// Extra keys inside `[server]` (e.g. `office_js_timeout_ms = 3000`).
    pub server_toml: String,
}

impl ServerSetup {
    /// A `role = "all"` server using `sim` for Office.js and tokens.
    pub fn with_simulator(sim: &Sim) -> Result<ServerSetup> {
        Ok(ServerSetup {
            role: "all",
            port: free_port()?,
            storage_url: None,
            office_js: sim.office_js_url(),
            exchange_metadata: vec![sim.running.local_addr.to_string()],
            extra_ca_files: vec![sim.cert_file.clone()],
            management_url: None,
            shared_secret: "edge-and-management-share-this".into(),
            integration_toml: String::new(),
            extra_toml: String::new(),
            release: false,
            public_host: None,
            alias_digits: 6,
            tls_files: None,
            static_dir: None,
            server_toml: String::new(),
        })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn origin(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The host in the manifest's URLs.
    pub fn public_host(&self) -> String {
        self.public_host
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{}", self.port))
    }

    /// The pane URL of the default integration (the token audience).
    pub fn pane_url(&self) -> String {
        format!(
            "https://{}/pane/index.html?integration=default",
            self.public_host()
        )
    }

    /// The config file this setup runs with (`dir` holds the SQLite file).
    pub fn toml(&self, dir: &Path) -> String {
        // TOML strings quoted by the toml crate (Rust's `{:?}` escapes differ).
        let q = |s: &str| toml::Value::from(s).to_string();
        let storage = self
            .storage_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.join("vmr.db").display()));
        let list = |v: &[String]| v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ");
        let cas: Vec<String> = self
            .extra_ca_files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let mut t = format!(
            "role = {role}\n\
             [server]\nlisten = \"127.0.0.1:{port}\"\npublic_host = {public_host}\n\
             dist_dir = {dist}\nstatic_dir = {static_dir}\noffice_js = {office}\n\
             [storage]\nurl = {storage}\n\
             [http_client]\nextra_ca_files = [{cas}]\n\
             [management]\nshared_secret = {secret}\ntimeout_ms = 1500\n\
             deferral_key = \"{deferral}\"\n\
             [admin]\napi_token_sha256 = [\"{admin}\"]\n",
            role = q(self.role),
            port = self.port,
            public_host = q(&self.public_host()),
            dist = q(&root().join("dist").display().to_string()),
            static_dir = q(&self
                .static_dir
                .clone()
                .unwrap_or_else(|| root().join("static"))
                .display()
                .to_string()),
            office = q(&self.office_js),
            storage = q(&storage),
            cas = list(&cas),
            secret = q(&self.shared_secret),
            deferral = E2E_DEFERRAL_KEY,
            admin = E2E_ADMIN_TOKEN_SHA256,
        );
        if !self.server_toml.is_empty() {
            t = t.replace("[storage]\n", &format!("{}\n[storage]\n", self.server_toml));
        }
        if let Some((cert, key)) = &self.tls_files {
            t = t.replace(
                "[storage]\n",
                &format!(
                    "tls_cert = {}\ntls_key = {}\n[storage]\n",
                    q(&cert.display().to_string()),
                    q(&key.display().to_string())
                ),
            );
        }
        if let Some(url) = &self.management_url {
            // Inside [management], whatever tables follow it.
            t = t.replacen(
                "[management]\n",
                &format!("[management]\nurl = {}\n", q(url)),
                1,
            );
        }
        t.push_str(&format!(
            "[[integration]]\nid = \"default\"\nresource_email = \"vmr@example.com\"\n\
             resource_name = \"Video Meeting Room\"\nalias_prefix = \"88\"\nalias_digits = {}\n\
             alias_domain = \"vc.example.com\"\n{}\n\
             [integration.auth]\nexchange_metadata = [{}]\n{}\n",
            self.alias_digits,
            self.integration_toml,
            list(&self.exchange_metadata),
            self.extra_toml
        ));
        t
    }
}

/// A running `vmr-scheduler` process; killed on drop.
pub struct ServerProcess {
    child: Option<Child>,
    pub setup: ServerSetup,
    pub dir: tempfile::TempDir,
    /// Standard error of the process, collected in the background.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ServerProcess {
    /// Writes the config and starts the binary; returns once it listens.
    pub fn start(setup: ServerSetup) -> Result<ServerProcess> {
        let dir = tempfile::tempdir()?;
        Self::start_in(setup, dir)
    }

    /// Like [`ServerProcess::start`], reusing a directory (and so its SQLite file).
    pub fn start_in(setup: ServerSetup, dir: tempfile::TempDir) -> Result<ServerProcess> {
        let mut process = ServerProcess {
            child: None,
            setup,
            dir,
            log: std::sync::Arc::new(std::sync::Mutex::new(String::new())),
        };
        process.spawn()?;
        Ok(process)
    }

    /// Kills the process (SIGKILL, as a crash would) and starts it again on the same
    /// directory and config; returns once it listens.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    /// Writes the config, starts the binary and waits until it listens.
    fn spawn(&mut self) -> Result<()> {
        let config = self.dir.path().join("config.toml");
        std::fs::write(&config, self.setup.toml(self.dir.path()))?;
        let binary = if self.setup.release {
            root().join("target/release/vmr-scheduler")
        } else {
            bin("vmr-scheduler")?
        };
        let mut child = Command::new(binary)
            .arg("--config")
            .arg(&config)
            // VMR_E2E_LOG=info (or debug) shows what the process did when a test fails.
            .env(
                "RUST_LOG",
                std::env::var("VMR_E2E_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting vmr-scheduler")?;
        if let Some(stderr) = child.stderr.take() {
            let log = self.log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Ok(mut l) = log.lock() {
                        l.push_str(&line);
                        l.push('\n');
                    }
                }
            });
        }
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        self.child = Some(child);
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let status = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            std::thread::sleep(Duration::from_millis(200));
            bail!(
                "vmr-scheduler did not start (exit: {status:?}); its log:\n{}",
                self.log_text()
            );
        }
        Ok(())
    }

    /// What the process wrote to stderr so far.
    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// `https://127.0.0.1:<port>`.
    pub fn origin(&self) -> String {
        self.setup.origin()
    }

    /// Stops the process (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Process id (RSS readings, naming it in messages).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An HTTP client that trusts nothing but loopback test certificates.
pub fn insecure_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// Headless Debian Chromium driven through chromedriver.
///
/// chromedriver runs in a process group of its own, which the Chromium it starts joins:
/// dropping the `Browser` kills the whole group, so a test that fails half-way (and never
/// closes its session) leaves no Chromium behind, and then removes the profile directory.
pub struct Browser {
    driver: Child,
    pub client: fantoccini::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium session.
    pub async fn start() -> Result<Browser> {
        Self::start_with(&[], false).await
    }

    /// Like [`Browser::start`], with extra Chromium command-line switches
    /// (e.g. `--proxy-server=…`) and, if `performance_log`, chromedriver's
    /// performance log (DevTools network events, read with
    /// [`Browser::page_requests`]).
    pub async fn start_with(extra: &[String], performance_log: bool) -> Result<Browser> {
        let chromedriver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .context("chromedriver is missing: run `cargo xtask setup` (Debian chromium-driver)")?;
        let port = free_port()?;
        let mut driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting chromedriver")?;
        let profile = tempfile::tempdir()?;
        let caps: serde_json::Map<String, serde_json::Value> = serde_json::from_value(
            serde_json::json!({
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--disable-quic", "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--ignore-certificate-errors",
                        "--window-size=1280,900",
                        format!("--user-data-dir={}", profile.path().display()),
                    ]
                }
            }),
        )?;
        let mut caps = caps;
        if let Some(args) = caps
            .get_mut("goog:chromeOptions")
            .and_then(|o| o.get_mut("args"))
            .and_then(|a| a.as_array_mut())
        {
            args.extend(extra.iter().cloned().map(serde_json::Value::String));
        }
        if performance_log {
            caps.insert(
                "goog:loggingPrefs".into(),
                serde_json::json!({ "performance": "ALL" }),
            );
        }
        let url = format!("http://127.0.0.1:{port}");
        let mut last = None;
        for _ in 0..100 {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match fantoccini::ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Ok(Browser {
                        driver,
                        client,
                        _profile: profile,
                    })
                }
                Err(e) => {
                    last = Some(e.to_string());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        kill_group(&mut driver);
        bail!(
            "cannot start a Chromium session: {}",
            last.unwrap_or_default()
        )
    }

    /// Opens the simulated compose window for `scenario` and enters the pane's frame.
    pub async fn open(&self, sim: &Sim, scenario: &ComposeScenario) -> Result<()> {
        self.client.goto(&sim.compose_url(scenario)).await?;
        self.client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css("#pane-frame"))
            .await?
            .enter_frame()
            .await?;
        Ok(())
    }

    /// Runs `script` in the compose window (top frame), then returns to the pane frame.
    pub async fn in_outlook(&self, script: &str, args: Vec<serde_json::Value>) -> Result<()> {
        self.client.enter_parent_frame().await?;
        self.client.execute(script, args).await?;
        self.client
            .find(Locator::Css("#pane-frame"))
            .await?
            .enter_frame()
            .await?;
        Ok(())
    }

    /// Waits for an element with `id` in the current frame; returns its text.
    pub async fn wait_id(&self, id: &str) -> Result<String> {
        let e = self
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Id(id))
            .await
            .map_err(|e| anyhow::anyhow!("#{id} did not appear: {e}"))?;
        Ok(e.text().await?)
    }

    /// Clicks the compose window's Send (the meeting goes to the simulated Exchange) and
    /// returns the meeting's UID once the window says it was sent.
    pub async fn send_from_outlook(&self) -> Result<String> {
        self.client.enter_parent_frame().await?;
        self.client.find(Locator::Id("send")).await?.click().await?;
        let sent = self
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css("#sent[data-uid]:not([hidden])"))
            .await
            .map_err(|e| anyhow::anyhow!("the compose window did not say Sent: {e}"))?;
        Ok(sent.attr("data-uid").await?.unwrap_or_default())
    }

    /// Opens `url` in the top frame.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.client.goto(url).await?;
        Ok(())
    }

    /// Waits up to `timeout` for an element matching `css` in the current frame (pages that
    /// refresh themselves are re-read until it appears).
    pub async fn wait_css(
        &self,
        css: &str,
        timeout: Duration,
    ) -> Result<fantoccini::elements::Element> {
        self.client
            .wait()
            .at_most(timeout)
            .for_element(Locator::Css(css))
            .await
            .map_err(|e| anyhow::anyhow!("{css} did not appear: {e}"))
    }

    /// Waits for the pane's add button to be enabled.
    pub async fn add_button(&self) -> Result<fantoccini::elements::Element> {
        Ok(self
            .client
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css("#add-vmr:not([disabled])"))
            .await?)
    }

    /// Waits for the add button to be enabled, then clicks it.
    pub async fn click_add(&self) -> Result<()> {
        self.add_button().await?.click().await?;
        Ok(())
    }

    /// Leaves the pane frame and returns the simulated appointment's state.
    pub async fn outlook_state(&self) -> Result<serde_json::Value> {
        self.client.enter_parent_frame().await?;
        Ok(self
            .client
            .execute("return window.simulatedOutlook.state();", vec![])
            .await?)
    }

    /// Saves a PNG of the whole window to `target/e2e-screenshots/<name>.png`
    /// (for people reviewing what the tests saw).
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let dir = root().join("target/e2e-screenshots");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, self.client.screenshot().await?)?;
        Ok(path)
    }

    /// URLs of the requests the page started (DevTools
    /// `Network.requestWillBeSent`, also for requests the browser then
    /// blocked) since the last call. Needs [`Browser::start_with`] with the
    /// performance log.
    pub async fn page_requests(&self) -> Result<Vec<String>> {
        let answer = self
            .client
            .issue_cmd(PerformanceLog)
            .await
            .context("reading chromedriver's performance log")?;
        let mut urls = Vec::new();
        for entry in answer.as_array().into_iter().flatten() {
            let Some(message) = entry["message"].as_str() else {
                continue;
            };
            let message: serde_json::Value = serde_json::from_str(message)?;
            let message = &message["message"];
            if message["method"] == "Network.requestWillBeSent" {
                if let Some(url) = message["params"]["request"]["url"].as_str() {
                    urls.push(url.to_string());
                }
            }
        }
        Ok(urls)
    }

    /// Emulates a slower link for this session (chromedriver's network
    /// conditions): `latency_ms` added to every request, `bytes_per_sec` each
    /// way.
    pub async fn throttle(&self, latency_ms: u64, bytes_per_sec: u64) -> Result<()> {
        self.client
            .issue_cmd(NetworkConditions {
                latency_ms,
                bytes_per_sec,
            })
            .await
            .context("setting chromedriver's network conditions")?;
        Ok(())
    }

    /// Ends the session and the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// chromedriver's `POST /session/{id}/se/log {"type": "performance"}`.
#[derive(Debug)]
struct PerformanceLog;

impl fantoccini::wd::WebDriverCompatibleCommand for PerformanceLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or("")))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(r#"{"type":"performance"}"#.to_string()),
        )
    }
}

/// chromedriver's `POST /session/{id}/chromium/network_conditions`.
#[derive(Debug)]
struct NetworkConditions {
    latency_ms: u64,
    bytes_per_sec: u64,
}

impl fantoccini::wd::WebDriverCompatibleCommand for NetworkConditions {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/chromium/network_conditions",
            session_id.unwrap_or("")
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = serde_json::json!({
            "network_conditions": {
                "offline": false,
                "latency": self.latency_ms,
                "download_throughput": self.bytes_per_sec,
                "upload_throughput": self.bytes_per_sec,
            }
        });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// Kills chromedriver's process group (chromedriver and every Chromium process it started)
/// and reaps chromedriver.
fn kill_group(driver: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", driver.id())])
        .stderr(Stdio::null())
        .status();
    let _ = driver.kill();
    let _ = driver.wait();
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.driver);
    }
}
