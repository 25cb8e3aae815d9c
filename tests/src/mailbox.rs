//! Helpers for the mailbox end-to-end tests: a server configured to watch the simulated
//! Exchange's resource mailbox, aliases allocated the way the pane gets them (identity token,
//! `POST /api/v1/alias`), meetings sent as organizers, and waits on what organizers receive.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use vmr_core::meeting::{Body, Person, UnixMs};
use vmr_simulator::ews::{
    ExchangeOptions, FolderName, MailboxKind, MailboxSpec, MessageSummary, SendMeeting,
};
use vmr_simulator::exchange_identity::IdentityClaims;

use crate::{ServerProcess, ServerSetup, Sim};

/// The resource mailbox every e2e integration adds to meetings (`resource_email`).
pub const RESOURCE: &str = "vmr@example.com";
/// The simulated Exchange's service account (Basic) and its password.
pub const SERVICE_ACCOUNT: &str = vmr_simulator::ews::DEFAULT_SERVICE_ACCOUNT;
const SERVICE_PASSWORD: &str = vmr_simulator::ews::DEFAULT_SERVICE_PASSWORD;

/// The simulated Exchange of the e2e tests: the integration's resource ([`RESOURCE`],
/// `AutomateProcessing None`), the compose window's organizer and an attendee, and the service
/// account allowed to impersonate any of them.
pub fn exchange_options() -> ExchangeOptions {
    let mut options = ExchangeOptions::default();
    options.accounts[0].impersonate = vec!["*".into()];
    options.accounts[0].full_access = vec![RESOURCE.into()];
    options.mailboxes = vec![
        MailboxSpec {
            email: RESOURCE.into(),
            name: "Video Meeting Room".into(),
            kind: MailboxKind::Resource,
            automate: None,
        },
        MailboxSpec {
            email: vmr_simulator::outlook::DEFAULT_ORGANIZER.into(),
            name: "Alice".into(),
            kind: MailboxKind::User,
            automate: None,
        },
        MailboxSpec {
            email: "bob@example.com".into(),
            name: "Bob".into(),
            kind: MailboxKind::User,
            automate: None,
        },
    ];
    options
}

/// `[integration.exchange]` for a server that watches [`RESOURCE`] at the simulator's EWS
/// endpoint over HTTPS (trusting the simulator's certificate), with `extra` keys appended to
/// the table.
pub fn exchange_toml(sim: &Sim, extra: &str) -> String {
    let q = |s: &str| toml::Value::from(s).to_string();
    format!(
        "\n[integration.exchange]\news_url = {url}\nca_file = {ca}\npoll_interval_secs = 5\n\
         streaming_timeout_minutes = 1\n{extra}\n\
         [integration.exchange.auth]\nmethod = \"basic\"\nusername = {user}\npassword = {password}\n",
        url = q(&sim.running.simulator.ews_url()),
        ca = q(&sim.cert_file.display().to_string()),
        user = q(SERVICE_ACCOUNT),
        password = q(SERVICE_PASSWORD),
    )
}

/// A `role = "all"` setup watching the simulated resource mailbox.
pub fn watching_setup(sim: &Sim, extra_exchange: &str) -> Result<ServerSetup> {
    let mut setup = ServerSetup::with_simulator(sim)?;
    setup.integration_toml = exchange_toml(sim, extra_exchange);
    // Crash and backlog tests allocate hundreds of aliases for a few organizers.
    setup.extra_toml =
        "[limits]\nallocations_per_requester_per_hour = 0\nallocations_per_second = 0\n".into();
    Ok(setup)
}

/// An alias as the pane receives it.
#[derive(Debug, Clone)]
pub struct Allocated {
    pub alias: String,
    pub numeric_alias: String,
    pub alias_uuid: String,
    /// The joining instructions with the `PXPS:-…#` tag, as the pane inserts them.
    pub instructions_html: String,
    pub tag: String,
}

impl Allocated {
    /// The instructions with the tag's MAC edited (its first hex digit changed): what a user
    /// who touched the tag sends.
    pub fn tampered_instructions(&self) -> String {
        let mac = self
            .tag
            .trim_end_matches('#')
            .rsplit('-')
            .next()
            .unwrap_or_default();
        let mut flipped = String::with_capacity(mac.len());
        for (i, c) in mac.chars().enumerate() {
            flipped.push(match (i, c) {
                (0, '0') => '1',
                (0, _) => '0',
                (_, c) => c,
            });
        }
        self.instructions_html.replace(mac, &flipped)
    }
}

/// Allocates an alias for `organizer` the way the pane does (an Exchange identity token from
/// the simulator, `POST /api/v1/alias`), in the `default` integration.
pub async fn allocate(
    sim: &Sim,
    server: &ServerProcess,
    organizer: &str,
    subject: &str,
) -> Result<Allocated> {
    allocate_in(sim, server, "default", organizer, subject).await
}

/// Allocates an alias of integration `integration` for `organizer` the way the pane does.
pub async fn allocate_in(
    sim: &Sim,
    server: &ServerProcess,
    integration: &str,
    organizer: &str,
    subject: &str,
) -> Result<Allocated> {
    let (status, json) = alias_request(sim, server, integration, organizer, subject).await?;
    let Some(a) = json.get("allocated") else {
        bail!("allocation in {integration} failed ({status}): {json}");
    };
    let text = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
    Ok(Allocated {
        alias: text("alias"),
        numeric_alias: text("numeric_alias"),
        alias_uuid: text("alias_uuid"),
        instructions_html: a["instructions"]["html"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        tag: text("tag"),
    })
}

/// `POST /api/v1/alias` to `server` as the pane of `integration` sends it for `organizer`
/// (with an Exchange identity token for that integration's pane URL): status and JSON body.
async fn alias_request(
    sim: &Sim,
    server: &ServerProcess,
    integration: &str,
    organizer: &str,
    subject: &str,
) -> Result<(reqwest::StatusCode, serde_json::Value)> {
    let pane_url = format!(
        "https://{}/pane/index.html?integration={integration}",
        server.setup.public_host()
    );
    let token = sim
        .running
        .simulator
        .exchange
        .identity_token(&IdentityClaims::new(pane_url, organizer));
    let body = serde_json::json!({
        "integration": integration,
        "subject": subject,
        "organizer": { "name": vmr_simulator::exchange_identity::display_name_for(organizer), "email": organizer },
    });
    let response = crate::insecure_client()?
        .post(format!("{}/api/v1/alias", server.origin()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    Ok((status, response.json().await?))
}

/// A meeting from `organizer` to Bob and the resource, with `body_html` as its body.
pub fn meeting(
    organizer: &str,
    subject: &str,
    body_html: &str,
    start: UnixMs,
    end: UnixMs,
) -> SendMeeting {
    SendMeeting {
        organizer: Person {
            name: vmr_simulator::exchange_identity::display_name_for(organizer),
            email: organizer.to_owned(),
        },
        subject: subject.to_owned(),
        body: Body {
            html: true,
            content: format!("<html><body>{body_html}<p>Agenda to follow.</p></body></html>"),
        },
        start,
        end,
        time_zone: "W. Europe Standard Time".into(),
        recurrence: None,
        required: vec!["bob@example.com".into()],
        optional: Vec::new(),
        resources: vec![RESOURCE.into()],
    }
}

/// Now, in Unix ms.
pub fn now_ms() -> UnixMs {
    vmr_core::clock::system().now_unix_ms()
}

/// The replies (meeting responses) `organizer` received about meeting `uid`, in order.
pub fn replies(sim: &Sim, organizer: &str, uid: &str) -> Result<Vec<MessageSummary>> {
    Ok(sim
        .running
        .simulator
        .ews
        .mailbox_messages(organizer, FolderName::Inbox)?
        .into_iter()
        .filter(|m| {
            m.item_class.starts_with("IPM.Schedule.Meeting.Resp") && m.uid.as_deref() == Some(uid)
        })
        .collect())
}

/// Waits until `organizer` has `count` replies about `uid` (failing after `timeout` with what
/// arrived), then returns them.
pub async fn wait_for_replies(
    sim: &Sim,
    organizer: &str,
    uid: &str,
    count: usize,
    timeout: Duration,
) -> Result<Vec<MessageSummary>> {
    let found = wait_until(timeout, || async {
        let r = replies(sim, organizer, uid)?;
        Ok((r.len() >= count).then_some(r))
    })
    .await;
    match found {
        Ok(r) => Ok(r),
        Err(e) => {
            let got = replies(sim, organizer, uid)?;
            let subjects: Vec<_> = got.iter().map(|m| m.subject.clone()).collect();
            bail!(
                "{e}: {organizer} has {} of {count} replies about {uid}: {subjects:?}",
                got.len()
            )
        }
    }
}

/// Polls `check` every 100 ms until it yields a value or `timeout` passes.
pub async fn wait_until<T, F, Fut>(timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The server's database (its SQLite file), opened alongside the running process.
pub async fn open_store(server: &ServerProcess) -> Result<vmr_store::Storage> {
    let url = server
        .setup
        .storage_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", server.dir.path().join("vmr.db").display()));
    vmr_store::Storage::open(&url, 2)
        .await
        .with_context(|| format!("opening {url}"))
}

/// Plain text of an HTML reply body (tags dropped, entities of the templates decoded).
pub fn text_of(body: &Body) -> String {
    if body.html {
        vmr_protocol::tag::html_to_plain(&body.content)
    } else {
        body.content.clone()
    }
}

/// What an edge answers when management cannot be reached: the placeholder instructions and
/// the deferral statement (the `TOK:-…#` content).
#[derive(Debug, Clone)]
pub struct Deferred {
    pub placeholder_html: String,
    pub tok: String,
}

/// Asks `edge` (whose management is down) for an alias for `organizer`, as the pane does;
/// fails unless the answer is `deferred`.
pub async fn defer(
    sim: &Sim,
    edge: &ServerProcess,
    organizer: &str,
    subject: &str,
) -> Result<Deferred> {
    let (status, json) = alias_request(sim, edge, "default", organizer, subject).await?;
    let Some(d) = json.get("deferred") else {
        bail!("the edge did not defer ({status}): {json}");
    };
    Ok(Deferred {
        placeholder_html: d["placeholder"]["html"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        tok: d["tok"].as_str().unwrap_or_default().to_owned(),
    })
}

/// The placeholder and the wrapped `TOK:-…#` tag as the pane inserts them into an HTML body
/// (`addin/src/pane.rs`, `with_tok`).
pub fn deferred_block(placeholder_html: &str, tok: &str) -> String {
    format!(
        "{placeholder_html}<div style=\"font-family:monospace;font-size:8pt\">{}</div><br>",
        vmr_protocol::tag::tok_tag_lines(tok).join("<br>")
    )
}

/// A TOK signed with the e2e deferral key ([`crate::E2E_DEFERRAL_KEY`]) for `requester`,
/// issued at `iat` and expiring at `exp` (Unix seconds): what an edge would mint, with any
/// requester or lifetime a test needs.
pub fn mint_tok(requester: &str, iat: i64, exp: i64) -> Result<String> {
    let config = vmr_core::config::ManagementConfig {
        deferral_key: Some(vmr_core::secret::Secret::new(crate::E2E_DEFERRAL_KEY)),
        ..Default::default()
    };
    let keys = vmr_core::deferral::DeferralKeys::from_config(&config)?
        .context("the deferral key was not loaded")?;
    let identity = vmr_core::identity::Identity {
        user_id: format!("{requester}-id"),
        email: Some(requester.to_owned()),
        display_name: Some(vmr_simulator::exchange_identity::display_name_for(
            requester,
        )),
        method: vmr_protocol::AuthMethod::ExchangeUserIdToken,
        expires_at: exp,
    };
    let mut statement = keys.statement("default", &identity, Some(requester), iat);
    statement.exp = exp;
    Ok(keys.mint(&statement))
}
