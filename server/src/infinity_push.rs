//! Push mode: for sites that keep their VMRs in Pexip Infinity (`[infinity]`), the scheduled
//! VMRs are written into Infinity through its management API
//! (`/api/admin/configuration/v1/conference/` and `…/conference_alias/`).
//!
//! - Scheduling commits (and the lifetime sweeper) queue each conference they touch in the
//!   database (`vmr_store::push_queue`, same transaction). [`InfinityPusher::drain_once`]
//!   takes the due rows and brings Infinity in line with the conference as it is *now*: a
//!   live conference → its VMR exists (created with both generated aliases; fields patched;
//!   a missing generated alias added back; aliases an admin added are kept); a deleted one →
//!   its VMR is gone. Rows survive restarts and leave the queue only when done.
//! - Our VMRs carry `tag` = `VMR Scheduling for Exchange: <integration id>`
//!   ([`InfinityConfig::origin_tag`]); a VMR without exactly that tag is never changed or
//!   deleted (a name clash with one is reported on the row and retried later).
//! - Infinity unreachable (connection, timeout, 5xx, 429): the row stays due, the drain stops
//!   and [`run`] pauses `retry_initial_ms`, doubling up to `retry_max_secs`, so a VMR appears
//!   at most one pause after Infinity returns. Infinity refusing one VMR (4xx): that row waits
//!   `retry_max_secs` (time from the injected clock) and the others go on.
//! - [`InfinityPusher::reconcile`] (at start and every `reconcile_interval_minutes`) repairs
//!   drift both ways: each live conference whose VMR is missing or differs is queued; each VMR
//!   with our tag that matches no live conference of ours is deleted; and every VMR of an
//!   integration listed in `infinity.retired_integrations` (removed from the config, so
//!   nothing else would ever delete its VMRs) is deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{json, Map, Value};
use vmr_core::clock::SharedClock;
use vmr_core::config::{InfinityConfig, PolicyServiceOptions};
use vmr_core::secret::Secret;
use vmr_store::push_queue::PushItem;
use vmr_store::{ConferenceRecord, Storage, StorageError};

/// The configuration API under the node's URL.
pub const CONFIGURATION_API: &str = "/api/admin/configuration/v1/";
/// Most characters Infinity takes in `name`, `description` and `tag`.
const MAX_TEXT: usize = 250;
/// Rows taken per database read.
const BATCH: u32 = 50;
/// Batches one drain handles at most before giving the loop back.
const MAX_BATCHES: usize = 20;
/// Requests one push makes at most (look-up, create or patch, two aliases, a theme, a group).
const REQUESTS_PER_PUSH: u64 = 6;
/// Objects per page when listing.
const PAGE: usize = 200;

/// Why a push did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Infinity could not be reached or is failing as a whole: try again later, everything.
    #[error("Infinity unreachable: {0}")]
    Unreachable(String),
    /// Infinity refused this request (4xx): this VMR waits, the others go on.
    #[error("Infinity refused {what}: HTTP {status}: {body}")]
    Refused {
        what: String,
        status: u16,
        body: String,
    },
    /// A VMR with our conference's name exists in Infinity but was not created by us.
    #[error("a VMR named {0:?} exists in Infinity without our tag; it is left alone")]
    NotOurs(String),
    /// Infinity answered something we cannot read.
    #[error("unexpected answer from Infinity to {what}: {detail}")]
    Malformed { what: String, detail: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl PushError {
    /// Whether the failure is Infinity's as a whole (so no other push would fare better).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, PushError::Unreachable(_))
    }
}

/// A VMR as Infinity lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct InfinityVmr {
    /// `resource_uri`, e.g. `/api/admin/configuration/v1/conference/7/`.
    pub uri: String,
    pub name: String,
    pub tag: String,
    /// The alias texts.
    pub aliases: Vec<String>,
    /// The aliases' objects: text, description and resource URI.
    pub alias_objects: Vec<InfinityAlias>,
    /// Every field as returned.
    pub fields: Map<String, Value>,
}

/// One `conference_alias` of a VMR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfinityAlias {
    pub alias: String,
    pub description: String,
    /// `resource_uri` (empty when Infinity did not list one).
    pub uri: String,
}

/// How the description of an extra alias we pushed begins (admin-added in our admin page):
/// only aliases marked so are removed when the admin removes them here; aliases added in
/// Infinity itself are never touched.
pub const EXTRA_ALIAS_MARK: &str = "Extra alias (vmr-scheduler)";

impl InfinityVmr {
    fn from_json(v: &Value) -> Option<InfinityVmr> {
        let fields = v.as_object()?.clone();
        let text = |k: &str| fields.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(InfinityVmr {
            uri: text("resource_uri")?,
            name: text("name")?,
            tag: text("tag").unwrap_or_default(),
            aliases: fields
                .get("aliases")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(|a| a.get("alias").and_then(Value::as_str))
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            alias_objects: fields
                .get("aliases")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .filter_map(|a| {
                            let text = |k: &str| a.get(k).and_then(Value::as_str);
                            Some(InfinityAlias {
                                alias: text("alias")?.to_owned(),
                                description: text("description").unwrap_or_default().to_owned(),
                                uri: text("resource_uri").unwrap_or_default().to_owned(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
            fields,
        })
    }
}

/// The management API client (HTTP Basic, JSON, no redirects).
#[derive(Debug, Clone)]
pub struct InfinityClient {
    http: reqwest::Client,
    base: String,
    username: String,
    password: Secret,
}

fn encode_query(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn clip(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

impl InfinityClient {
    /// A client for the node of `config` (validated: URL, user and password present),
    /// trusting the system roots and `ca_file`.
    pub fn new(config: &InfinityConfig) -> anyhow::Result<InfinityClient> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(config.timeout_secs.min(10)))
            .timeout(Duration::from_secs(config.timeout_secs));
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("infinity.ca_file: cannot read {}", path.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("infinity.ca_file: {} is not PEM", path.display()))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(InfinityClient {
            http: builder
                .build()
                .context("building the Infinity HTTP client")?,
            base: config.base_url(),
            username: config.username.clone().unwrap_or_default(),
            password: config
                .password
                .clone()
                .context("infinity.password is not set")?,
        })
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with('/') {
            format!("{}{path}", self.base)
        } else {
            format!("{}{CONFIGURATION_API}{path}", self.base)
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<reqwest::Response, PushError> {
        let mut request = self
            .http
            .request(method, self.url(path))
            .basic_auth(&self.username, Some(self.password.expose()))
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| PushError::Unreachable(format!("{what}: {}", error_chain(&e))))?;
        let status = response.status();
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 401 {
            // 401: the account or password is wrong; nothing else will get through either.
            let body = response.text().await.unwrap_or_default();
            return Err(PushError::Unreachable(format!(
                "{what}: HTTP {status}: {}",
                clip(body.trim(), 200)
            )));
        }
        Ok(response)
    }

    async fn expect_success(
        response: reqwest::Response,
        what: &str,
    ) -> Result<reqwest::Response, PushError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.text().await.unwrap_or_default();
        Err(PushError::Refused {
            what: what.to_owned(),
            status: status.as_u16(),
            body: clip(body.trim(), 300),
        })
    }

    async fn get_json(&self, path: &str, what: &str) -> Result<Value, PushError> {
        let response = self.send(reqwest::Method::GET, path, None, what).await?;
        let response = Self::expect_success(response, what).await?;
        response.json().await.map_err(|e| PushError::Malformed {
            what: what.to_owned(),
            detail: e.to_string(),
        })
    }

    /// Every conference matching `filter` (`name=…`, `tag=…`), following `meta.next`.
    pub async fn list_conferences(&self, filter: &str) -> Result<Vec<InfinityVmr>, PushError> {
        let what = format!("listing VMRs ({filter})");
        let mut next = Some(format!("conference/?{filter}&limit={PAGE}&offset=0"));
        let mut out = Vec::new();
        let mut pages = 0usize;
        while let Some(path) = next.take() {
            let page = self.get_json(&path, &what).await?;
            let objects = page["objects"]
                .as_array()
                .ok_or_else(|| PushError::Malformed {
                    what: what.clone(),
                    detail: "no `objects` list".into(),
                })?;
            for o in objects {
                out.push(
                    InfinityVmr::from_json(o).ok_or_else(|| PushError::Malformed {
                        what: what.clone(),
                        detail: "a VMR without resource_uri or name".into(),
                    })?,
                );
            }
            next = page["meta"]["next"].as_str().map(str::to_owned);
            pages += 1;
            if pages > 100_000 {
                return Err(PushError::Malformed {
                    what,
                    detail: "`meta.next` never ends".into(),
                });
            }
        }
        Ok(out)
    }

    /// The resource URI of the `resource` object (`ivr_theme`, `identity_provider_group`)
    /// named exactly `name`, if any.
    pub async fn find_named(
        &self,
        resource: &str,
        name: &str,
    ) -> Result<Option<String>, PushError> {
        let what = format!("finding {resource} {name:?}");
        let page = self
            .get_json(
                &format!("{resource}/?name={}&limit=20", encode_query(name)),
                &what,
            )
            .await?;
        let objects = page["objects"]
            .as_array()
            .ok_or_else(|| PushError::Malformed {
                what: what.clone(),
                detail: "no `objects` list".into(),
            })?;
        Ok(objects
            .iter()
            .find(|o| o["name"].as_str() == Some(name))
            .and_then(|o| o["resource_uri"].as_str())
            .map(str::to_owned))
    }

    /// The conference named exactly `name`, if any.
    pub async fn conference_named(&self, name: &str) -> Result<Option<InfinityVmr>, PushError> {
        let found = self
            .list_conferences(&format!("name={}", encode_query(name)))
            .await?;
        Ok(found.into_iter().find(|v| v.name == name))
    }

    /// Every conference carrying exactly `tag`.
    pub async fn conferences_tagged(&self, tag: &str) -> Result<Vec<InfinityVmr>, PushError> {
        let found = self
            .list_conferences(&format!("tag={}", encode_query(tag)))
            .await?;
        Ok(found.into_iter().filter(|v| v.tag == tag).collect())
    }

    /// Creates a conference; its `Location`.
    pub async fn create_conference(&self, body: &Value, name: &str) -> Result<String, PushError> {
        let what = format!("creating VMR {name:?}");
        let response = self
            .send(reqwest::Method::POST, "conference/", Some(body), &what)
            .await?;
        let response = Self::expect_success(response, &what).await?;
        Ok(response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned())
    }

    /// Changes the given fields of the conference at `uri`.
    pub async fn patch(&self, uri: &str, body: &Value, what: &str) -> Result<(), PushError> {
        let response = self
            .send(reqwest::Method::PATCH, uri, Some(body), what)
            .await?;
        Self::expect_success(response, what).await.map(|_| ())
    }

    /// Adds `alias` to the conference at `conference_uri`.
    pub async fn add_alias(
        &self,
        conference_uri: &str,
        alias: &str,
        description: &str,
    ) -> Result<(), PushError> {
        let what = format!("adding alias {alias:?}");
        let body =
            json!({"alias": alias, "conference": conference_uri, "description": description});
        let response = self
            .send(
                reqwest::Method::POST,
                "conference_alias/",
                Some(&body),
                &what,
            )
            .await?;
        Self::expect_success(response, &what).await.map(|_| ())
    }

    /// Deletes the object at `uri` (already gone counts as done).
    pub async fn delete(&self, uri: &str, what: &str) -> Result<(), PushError> {
        let response = self.send(reqwest::Method::DELETE, uri, None, what).await?;
        if response.status().as_u16() == 404 {
            return Ok(());
        }
        Self::expect_success(response, what).await.map(|_| ())
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// What one integration's VMRs get besides the conference's own fields.
#[derive(Debug, Clone)]
pub struct PushTarget {
    /// `VMR Scheduling for Exchange: <id>`.
    pub tag: String,
    /// PIN, guest PIN, allow_guests (from `[policy]`, as the policy server would answer).
    pub service: PolicyServiceOptions,
}

/// What a drain did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Rows brought in line and removed from the queue.
    pub pushed: usize,
    /// Rows Infinity refused (they wait `retry_max_secs`).
    pub refused: usize,
    /// The drain stopped because Infinity could not be reached.
    pub unreachable: bool,
}

/// What a reconcile pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Live conferences queued because their VMR was missing or differed.
    pub queued: usize,
    /// VMRs with our tag and no live conference of ours, deleted.
    pub stale_deleted: usize,
    /// VMRs of integrations listed in `infinity.retired_integrations`, deleted.
    pub retired_deleted: usize,
}

/// How pushing went lately, for `/readyz` and the admin page (times from the injected clock).
#[derive(Debug, Default)]
pub struct PushHealth {
    state: Mutex<PushHealthState>,
}

/// A snapshot of [`PushHealth`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushHealthState {
    /// When Infinity last answered a reconcile or a push (Unix ms).
    pub last_ok_ms: Option<i64>,
    /// Since when Infinity has been unreachable, if it is now.
    pub unreachable_since_ms: Option<i64>,
    /// The last failure (unreachable or refused), as logged.
    pub last_error: Option<String>,
}

impl PushHealth {
    /// The current state.
    pub fn snapshot(&self) -> PushHealthState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether Infinity is reachable as far as the last attempt knows (true before any).
    pub fn reachable(&self) -> bool {
        self.snapshot().unreachable_since_ms.is_none()
    }

    fn reached(&self, now: i64) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.last_ok_ms = Some(now);
        s.unreachable_since_ms = None;
    }

    fn failed(&self, now: i64, error: &PushError) {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        s.last_error = Some(error.to_string());
        if error.is_unreachable() {
            s.unreachable_since_ms.get_or_insert(now);
        }
    }
}

/// Drains the push queue and reconciles (see the module documentation).
pub struct InfinityPusher {
    storage: Storage,
    client: InfinityClient,
    clock: SharedClock,
    config: InfinityConfig,
    targets: BTreeMap<String, PushTarget>,
    health: Arc<PushHealth>,
    /// Theme and group URIs by `(resource, name)`, forgotten at each drain and reconcile.
    references: Mutex<BTreeMap<(String, String), String>>,
}

impl InfinityPusher {
    /// A pusher for the integrations of `targets` (id → target).
    pub fn new(
        storage: Storage,
        client: InfinityClient,
        clock: SharedClock,
        config: InfinityConfig,
        targets: BTreeMap<String, PushTarget>,
    ) -> InfinityPusher {
        InfinityPusher {
            storage,
            client,
            clock,
            config,
            targets,
            health: Arc::default(),
            references: Mutex::default(),
        }
    }

    fn forget_references(&self) {
        self.references
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// How pushing went lately.
    pub fn health(&self) -> Arc<PushHealth> {
        self.health.clone()
    }

    /// The targets of every configured integration of `config`.
    pub fn targets_of(config: &vmr_core::config::Config) -> BTreeMap<String, PushTarget> {
        config
            .integrations
            .iter()
            .map(|i| {
                (
                    i.id.clone(),
                    PushTarget {
                        tag: InfinityConfig::origin_tag(&i.id),
                        service: config.policy.service_options(&i.id),
                    },
                )
            })
            .collect()
    }

    /// How long a claimed row is held by this instance: longer than one push can take, so a
    /// crashed instance's row is taken up again soon after.
    fn claim_ms(&self) -> i64 {
        let secs = self.config.timeout_secs.saturating_mul(REQUESTS_PER_PUSH) + 10;
        i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    fn retry_max_ms(&self) -> i64 {
        i64::try_from(self.config.retry_max_secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    /// The resource URI of the theme or group `name` (`resource`: `ivr_theme` or
    /// `identity_provider_group`), remembered for the rest of this drain or reconcile.
    async fn reference(&self, resource: &str, name: &str) -> Result<String, PushError> {
        let key = (resource.to_owned(), name.to_owned());
        if let Some(uri) = self
            .references
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(uri.clone());
        }
        let Some(uri) = self.client.find_named(resource, name).await? else {
            return Err(PushError::Refused {
                what: format!("finding {resource} {name:?}"),
                status: 404,
                body: format!("Infinity has no {resource} named {name:?}"),
            });
        };
        self.references
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, uri.clone());
        Ok(uri)
    }

    /// The VMR fields we own, as Infinity should hold them (theme and IdP group names
    /// resolved to Infinity's resource URIs).
    async fn desired_fields(
        &self,
        c: &ConferenceRecord,
        target: &PushTarget,
    ) -> Result<Map<String, Value>, PushError> {
        let mut fields = Map::new();
        if let Some(theme) = &c.theme {
            fields.insert(
                "ivr_theme".into(),
                json!(self.reference("ivr_theme", theme).await?),
            );
        }
        if let Some(group) = &c.host_identity_provider_group {
            fields.insert(
                "host_identity_provider_group".into(),
                json!(self.reference("identity_provider_group", group).await?),
            );
        }
        fields.insert("name".into(), json!(clip(&c.name, MAX_TEXT)));
        fields.insert("service_type".into(), json!("conference"));
        fields.insert("description".into(), json!(clip(&c.description, MAX_TEXT)));
        fields.insert("tag".into(), json!(clip(&target.tag, MAX_TEXT)));
        fields.insert("non_idp_participants".into(), json!(c.non_idp_participants));
        if let Some(pin) = &target.service.pin {
            fields.insert("pin".into(), json!(pin.expose()));
        }
        if let Some(pin) = &target.service.guest_pin {
            fields.insert("guest_pin".into(), json!(pin.expose()));
        }
        if let Some(allow) = target.service.allow_guests {
            fields.insert("allow_guests".into(), json!(allow));
        }
        Ok(fields)
    }

    fn generated_aliases(c: &ConferenceRecord) -> [(&str, &'static str); 2] {
        [
            (c.alias.as_str(), "Scheduled alias"),
            (c.numeric_alias.as_str(), "Scheduled numeric alias"),
        ]
    }

    /// The aliases the VMR of `c` must have: the two generated ones and those an admin added
    /// here, with their descriptions.
    async fn wanted_aliases(
        &self,
        c: &ConferenceRecord,
    ) -> Result<Vec<(String, String)>, PushError> {
        let mut wanted: Vec<(String, String)> = Self::generated_aliases(c)
            .iter()
            .map(|(a, d)| ((*a).to_owned(), (*d).to_owned()))
            .collect();
        for extra in self
            .storage
            .extra_aliases_of(std::slice::from_ref(&c.id))
            .await?
        {
            let description = if extra.description.is_empty() {
                EXTRA_ALIAS_MARK.to_owned()
            } else {
                clip(
                    &format!("{EXTRA_ALIAS_MARK}: {}", extra.description),
                    MAX_TEXT,
                )
            };
            wanted.push((extra.alias, description));
        }
        Ok(wanted)
    }

    /// Extra aliases we pushed earlier that an admin has since removed here.
    fn removed_extras<'v>(
        vmr: &'v InfinityVmr,
        wanted: &[(String, String)],
    ) -> Vec<&'v InfinityAlias> {
        vmr.alias_objects
            .iter()
            .filter(|a| a.description.starts_with(EXTRA_ALIAS_MARK) && !a.uri.is_empty())
            .filter(|a| !wanted.iter().any(|(w, _)| w.eq_ignore_ascii_case(&a.alias)))
            .collect()
    }

    /// Whether Infinity's `vmr` already matches `c` (fields, generated and extra aliases).
    async fn in_line(&self, vmr: &InfinityVmr, c: &ConferenceRecord, target: &PushTarget) -> bool {
        let (Ok(desired), Ok(wanted)) = (
            self.desired_fields(c, target).await,
            self.wanted_aliases(c).await,
        ) else {
            return false;
        };
        desired.iter().all(|(k, v)| vmr.fields.get(k) == Some(v))
            && wanted
                .iter()
                .all(|(a, _)| vmr.aliases.iter().any(|x| x.eq_ignore_ascii_case(a)))
            && Self::removed_extras(vmr, &wanted).is_empty()
    }

    /// Brings Infinity in line with conference `conference_id` as stored now.
    pub async fn push_conference(&self, conference_id: &str) -> Result<(), PushError> {
        let Some(c) = self.storage.conference(conference_id).await? else {
            return Ok(());
        };
        let Some(target) = self.targets.get(&c.integration) else {
            return Err(PushError::Refused {
                what: format!("pushing conference {conference_id}"),
                status: 0,
                body: format!("integration {:?} is not configured", c.integration),
            });
        };
        let name = clip(&c.name, MAX_TEXT);
        let existing = self.client.conference_named(&name).await?;
        if c.deletion_time.is_some() {
            return match existing {
                Some(vmr) if vmr.tag == target.tag => {
                    self.client
                        .delete(&vmr.uri, &format!("deleting VMR {name:?}"))
                        .await?;
                    tracing::info!(conference = %c.id, %name, "VMR deleted in Infinity");
                    Ok(())
                }
                // Gone already, or someone else's VMR of the same name: nothing of ours there.
                _ => Ok(()),
            };
        }
        let desired = self.desired_fields(&c, target).await?;
        let wanted = self.wanted_aliases(&c).await?;
        match existing {
            None => {
                let mut body = desired.clone();
                body.insert(
                    "aliases".into(),
                    Value::Array(
                        wanted
                            .iter()
                            .map(|(a, d)| json!({"alias": a, "description": d}))
                            .collect(),
                    ),
                );
                self.client
                    .create_conference(&Value::Object(body), &name)
                    .await?;
                tracing::info!(conference = %c.id, %name, "VMR created in Infinity");
                Ok(())
            }
            Some(vmr) if vmr.tag != target.tag => Err(PushError::NotOurs(name)),
            Some(vmr) => {
                let changes: Map<String, Value> = desired
                    .into_iter()
                    .filter(|(k, v)| vmr.fields.get(k) != Some(v))
                    .collect();
                if !changes.is_empty() {
                    self.client
                        .patch(
                            &vmr.uri,
                            &Value::Object(changes),
                            &format!("updating VMR {name:?}"),
                        )
                        .await?;
                }
                for (alias, description) in &wanted {
                    if !vmr.aliases.iter().any(|a| a.eq_ignore_ascii_case(alias)) {
                        self.client.add_alias(&vmr.uri, alias, description).await?;
                    }
                }
                for gone in Self::removed_extras(&vmr, &wanted) {
                    self.client
                        .delete(&gone.uri, &format!("removing extra alias {:?}", gone.alias))
                        .await?;
                }
                Ok(())
            }
        }
    }

    /// Pushes the due rows until none is due, Infinity is unreachable, or
    /// [`MAX_BATCHES`] batches were handled.
    pub async fn drain_once(&self) -> Result<DrainReport, StorageError> {
        self.forget_references();
        let mut report = DrainReport::default();
        for _ in 0..MAX_BATCHES {
            let now = self.clock.now_unix_ms();
            let due = self.storage.due_pushes(now, BATCH).await?;
            if due.is_empty() {
                break;
            }
            for item in due {
                let until = now.saturating_add(self.claim_ms());
                if !self.storage.claim_push(&item, until).await? {
                    continue;
                }
                let claimed = PushItem {
                    next_attempt_at: until,
                    ..item
                };
                match self.push_conference(&claimed.conference_id).await {
                    Ok(()) => {
                        self.storage.finish_push(&claimed).await?;
                        self.health.reached(self.clock.now_unix_ms());
                        report.pushed += 1;
                    }
                    Err(PushError::Storage(e)) => {
                        self.storage.release_push(&claimed, now).await?;
                        return Err(e);
                    }
                    Err(e) if e.is_unreachable() => {
                        let now = self.clock.now_unix_ms();
                        self.health.failed(now, &e);
                        self.storage
                            .retry_push(&claimed, now, &e.to_string(), now)
                            .await?;
                        tracing::warn!(conference = %claimed.conference_id, error = %e, "Infinity unreachable; pushes wait");
                        report.unreachable = true;
                        return Ok(report);
                    }
                    Err(e) => {
                        let now = self.clock.now_unix_ms();
                        self.health.failed(now, &e);
                        let at = now.saturating_add(self.retry_max_ms());
                        self.storage
                            .retry_push(&claimed, at, &e.to_string(), now)
                            .await?;
                        tracing::warn!(conference = %claimed.conference_id, error = %e, "Infinity refused a VMR; retried later");
                        report.refused += 1;
                    }
                }
            }
        }
        Ok(report)
    }

    /// Repairs drift both ways for every integration (see the module documentation).
    pub async fn reconcile(&self) -> Result<ReconcileReport, PushError> {
        self.forget_references();
        let result = self.reconcile_all().await;
        match &result {
            Ok(_) => self.health.reached(self.clock.now_unix_ms()),
            Err(e) => self.health.failed(self.clock.now_unix_ms(), e),
        }
        result
    }

    async fn reconcile_all(&self) -> Result<ReconcileReport, PushError> {
        let mut report = ReconcileReport::default();
        for (integration, target) in &self.targets {
            // Infinity first: anything there was pushed from a conference we had before we
            // read ours, so a VMR pushed meanwhile is never taken for a stale one.
            let in_infinity = self.client.conferences_tagged(&target.tag).await?;
            let ours = self.storage.conferences_of(integration, true).await?;
            let by_name: BTreeMap<&str, &InfinityVmr> =
                in_infinity.iter().map(|v| (v.name.as_str(), v)).collect();
            let mut to_queue = Vec::new();
            let mut live_names = BTreeSet::new();
            for c in &ours {
                let name = clip(&c.name, MAX_TEXT);
                let in_line = match by_name.get(name.as_str()) {
                    Some(vmr) => self.in_line(vmr, c, target).await,
                    None => false,
                };
                if !in_line {
                    to_queue.push(c.id.clone());
                }
                live_names.insert(name);
            }
            if !to_queue.is_empty() {
                let now = self.clock.now_unix_ms();
                self.storage
                    .enqueue_push(integration, &to_queue, now)
                    .await?;
                report.queued += to_queue.len();
            }
            for vmr in &in_infinity {
                if vmr.tag != target.tag || live_names.contains(&vmr.name) {
                    continue;
                }
                self.client
                    .delete(&vmr.uri, &format!("deleting stale VMR {:?}", vmr.name))
                    .await?;
                tracing::info!(%integration, name = %vmr.name, "stale VMR deleted in Infinity");
                report.stale_deleted += 1;
            }
        }
        for retired in &self.config.retired_integrations {
            let tag = InfinityConfig::origin_tag(retired);
            for vmr in self.client.conferences_tagged(&tag).await? {
                self.client
                    .delete(
                        &vmr.uri,
                        &format!(
                            "deleting VMR {:?} of retired integration {retired}",
                            vmr.name
                        ),
                    )
                    .await?;
                tracing::info!(integration = %retired, name = %vmr.name, "VMR of a retired integration deleted in Infinity");
                report.retired_deleted += 1;
            }
        }
        Ok(report)
    }
}

/// Drains and reconciles until `stop` turns true: a reconcile at start and every
/// `reconcile_interval_minutes`, the queue every `poll_interval_ms`, pauses doubling from
/// `retry_initial_ms` to `retry_max_secs` while Infinity is unreachable.
pub async fn run(pusher: Arc<InfinityPusher>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let config = pusher.config.clone();
    let poll = Duration::from_millis(config.poll_interval_ms);
    let initial = Duration::from_millis(config.retry_initial_ms);
    let max = Duration::from_secs(config.retry_max_secs).max(initial);
    let reconcile_every = Duration::from_secs(u64::from(config.reconcile_interval_minutes) * 60);
    let mut pause_after_failure = initial;
    let mut next_reconcile = tokio::time::Instant::now();
    tracing::info!(url = %config.base_url(), "pushing VMRs into Infinity");
    loop {
        if *stop.borrow() {
            break;
        }
        let mut unreachable = false;
        if tokio::time::Instant::now() >= next_reconcile {
            match pusher.reconcile().await {
                Ok(report) => {
                    next_reconcile = tokio::time::Instant::now() + reconcile_every;
                    if report != ReconcileReport::default() {
                        tracing::info!(?report, "Infinity reconciled");
                    }
                }
                Err(e) => {
                    unreachable = e.is_unreachable();
                    tracing::warn!(error = %e, "reconciling with Infinity failed; tried again soon");
                    next_reconcile = tokio::time::Instant::now() + pause_after_failure;
                }
            }
        }
        // Drained even after a failed reconcile: the first due row records why it waits.
        match pusher.drain_once().await {
            Ok(report) => {
                unreachable |= report.unreachable;
                if report.pushed + report.refused > 0 {
                    tracing::debug!(?report, "push queue drained");
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the push queue failed"),
        }
        pusher.report_queue_depth().await;
        let pause = if unreachable {
            let p = pause_after_failure;
            pause_after_failure = (pause_after_failure * 2).min(max);
            p
        } else {
            pause_after_failure = initial;
            poll
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {}
        }
    }
}

impl InfinityPusher {
    /// Sets `vmr_push_queue_depth` for every integration (0 where nothing waits).
    async fn report_queue_depth(&self) {
        match self.storage.push_queue_depth().await {
            Ok(depth) => {
                for integration in self.targets.keys() {
                    let n = depth.get(integration).copied().unwrap_or(0);
                    crate::metrics::service()
                        .set_push_queue_depth(integration, i64::try_from(n).unwrap_or(i64::MAX));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot count the push queue for /metrics"),
        }
    }
}

/// What `/readyz` sees of push mode: ready while Infinity answered the last push or
/// reconcile (or nothing has been tried yet); not ready, saying since when and why, while
/// it is unreachable.
pub struct InfinityReadiness {
    health: Arc<PushHealth>,
    storage: Storage,
}

impl InfinityReadiness {
    /// A probe over the pusher's `health` and the queue in `storage`.
    pub fn new(health: Arc<PushHealth>, storage: Storage) -> Self {
        InfinityReadiness { health, storage }
    }
}

impl crate::http::ops::ReadinessProbe for InfinityReadiness {
    fn name(&self) -> &'static str {
        "infinity"
    }

    fn check(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, String>> + Send + '_>>
    {
        Box::pin(async move {
            let state = self.health.snapshot();
            let queued: u64 = self
                .storage
                .push_queue_depth()
                .await
                .map_err(|e| format!("push queue: {e}"))?
                .values()
                .sum();
            match state.unreachable_since_ms {
                Some(since) => Err(format!(
                    "Infinity unreachable since {since} (Unix ms), {queued} pushes waiting: {}",
                    state.last_error.unwrap_or_default()
                )),
                None => Ok(json!({
                    "reachable": true,
                    "last_ok_ms": state.last_ok_ms,
                    "queued": queued,
                })),
            }
        })
    }
}

/// With `[infinity]` enabled: switches the push queue on and runs [`run`] in the background
/// for the management role (and `all`); the pusher's health, for `/readyz`.
pub fn spawn(
    state: &crate::app::ManagementState,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<Arc<PushHealth>>> {
    let config = &state.shared.config;
    if !config.infinity.enabled {
        return Ok(None);
    }
    let client = InfinityClient::new(&config.infinity)?;
    state.storage.enable_push_queue();
    let pusher = Arc::new(InfinityPusher::new(
        state.storage.clone(),
        client,
        state.shared.clock.clone(),
        config.infinity.clone(),
        InfinityPusher::targets_of(config),
    ));
    let health = pusher.health();
    tokio::spawn(run(pusher, stop));
    Ok(Some(health))
}
