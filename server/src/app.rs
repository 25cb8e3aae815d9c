//! Start-up: turns a validated [`Config`] into a running server.
//!
//! [`App::build`] does all the work that can fail before the first request,
//! and builds the state of the configured role: an [`EdgeState`] (no
//! database at all) or a [`ManagementState`] (database opened and migrated,
//! tag keys loaded or created), both around the [`Shared`] part (templates
//! compiled, the pane's `index.html` prepared, token validator, limits).
//! [`serve`] then binds and serves that role's router over HTTPS (or plain
//! HTTP when configured) until the shutdown future resolves.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use rand::RngCore;

use crate::alias_service::AliasStats;
use crate::integration::Integration;
use crate::pane_page::PanePage;
use crate::{http, tls};
use vmr_auth::TokenValidator;
use vmr_core::clock::SharedClock;
use vmr_core::config::{Config, Role};
use vmr_core::deferral::DeferralKeys;
use vmr_core::meeting_tag::TagKey;
use vmr_core::quota::AllocationLimits;
use vmr_core::templates::TemplateSet;
use vmr_store::Storage;

/// Marker in `addin/index.html` replaced by the Office.js URL.
pub const OFFICE_JS_MARKER: &str = "%OFFICE_JS_URL%";

/// What every role needs to answer a request.
pub struct Shared {
    pub config: Config,
    pub integrations: BTreeMap<String, Arc<Integration>>,
    pub validator: TokenValidator,
    /// The pane's `index.html` with the Office.js scripts in place (and its
    /// policy in local mode); `None` if not built.
    pub pane_page: Option<PanePage>,
    /// `/metrics` of this process.
    pub metrics: prometheus_client::registry::Registry,
    /// The time, for token lifetimes, TOK expiry and limits.
    pub clock: SharedClock,
    /// Per-requester and global allocation limits.
    pub limits: AllocationLimits,
}

/// The edge role: forwards alias requests to management; owns no database.
#[derive(Clone)]
pub struct EdgeState {
    pub shared: Arc<Shared>,
    /// Outgoing HTTPS to management.
    pub http: reqwest::Client,
    /// Signs deferral statements (TOK) when management cannot be reached.
    pub deferral_keys: Arc<DeferralKeys>,
}

/// The management role (and `all`): allocates aliases into its database.
#[derive(Clone)]
pub struct ManagementState {
    pub shared: Arc<Shared>,
    pub storage: Storage,
    pub stats: Arc<AliasStats>,
    /// Checks deferral statements (TOK); `None` in role `all`, where no edge
    /// ever defers.
    pub deferral_keys: Option<Arc<DeferralKeys>>,
    /// Role `management` answers only edges presenting the shared secret.
    pub require_edge_secret: bool,
    /// Infinity's external policy index (`[policy]` enabled), followed in the background.
    pub policy: Option<Arc<crate::policy::PolicyService>>,
}

/// A process, built for its role at start-up.
pub enum App {
    Edge(EdgeState),
    Management(ManagementState),
}

impl App {
    /// Prepares the app for the configured role; fails with a message naming
    /// what is wrong.
    pub async fn build(config: Config) -> Result<App> {
        Self::build_with_clock(config, vmr_core::clock::system()).await
    }

    /// [`App::build`] with the time taken from `clock` (tests move it).
    pub async fn build_with_clock(config: Config, clock: SharedClock) -> Result<App> {
        // Local Office.js: refuse to start without the files the pane needs.
        config.server.check_office_js_files()?;
        tls::install_crypto_provider();
        let http_client = tls::http_client(&config.http_client)?;
        let validator = TokenValidator::new(http_client.clone()).with_clock(clock.clone());
        let limits = AllocationLimits::new(&config.limits, clock.clone());
        let pane_page = load_pane_index(&config)?;
        let deferral_keys = DeferralKeys::from_config(&config.management)?.map(Arc::new);
        let parts = SharedParts {
            validator,
            pane_page,
            clock: clock.clone(),
            limits,
        };
        if config.role == Role::Edge {
            let deferral_keys = deferral_keys.context("management.deferral_key")?;
            let mut integrations = BTreeMap::new();
            for (i, ic) in config.integrations.iter().enumerate() {
                // An edge never issues or checks tags.
                let tag_key = TagKey::new(vec![0u8; 32]);
                integrations.insert(ic.id.clone(), integration(&config, i, ic, tag_key, 0)?);
            }
            let metrics = prometheus_client::registry::Registry::default();
            return Ok(App::Edge(EdgeState {
                shared: parts.into_shared(config, integrations, metrics),
                http: http_client,
                deferral_keys,
            }));
        }
        let storage = Storage::open(&config.storage.url, config.storage.max_connections)
            .await
            .context("storage.url")?;
        let mut integrations = BTreeMap::new();
        for (i, ic) in config.integrations.iter().enumerate() {
            let key_hex = match &ic.tag_key {
                Some(k) => k.expose().to_owned(),
                None => {
                    let mut candidate = [0u8; 32];
                    rand::rngs::OsRng.fill_bytes(&mut candidate);
                    storage
                        .tag_key(&ic.id, &hex::encode(candidate), clock.now_unix())
                        .await?
                }
            };
            let key = hex::decode(&key_hex)
                .with_context(|| format!("integration[{i}].tag_key is not hex"))?;
            let issued = storage.count_aliases(&ic.id).await?;
            integrations.insert(
                ic.id.clone(),
                integration(&config, i, ic, TagKey::new(key), issued)?,
            );
        }
        let stats = Arc::new(AliasStats::default());
        let metrics = crate::metrics::registry(stats.clone(), integrations.clone());
        let require_edge_secret = config.role == Role::Management;
        let policy = if config.policy.enabled {
            let p = crate::policy::PolicyService::load(&config, storage.clone(), clock.clone())
                .await
                .context("policy: loading the index of scheduled conferences")?;
            crate::policy::PolicyService::spawn_follower(&p);
            Some(p)
        } else {
            None
        };
        Ok(App::Management(ManagementState {
            shared: parts.into_shared(config, integrations, metrics),
            storage,
            stats,
            deferral_keys,
            require_edge_secret,
            policy,
        }))
    }

    /// What every role has.
    pub fn shared(&self) -> &Arc<Shared> {
        match self {
            App::Edge(s) => &s.shared,
            App::Management(s) => &s.shared,
        }
    }
}

/// The parts of [`Shared`] that do not depend on the role.
struct SharedParts {
    validator: TokenValidator,
    pane_page: Option<PanePage>,
    clock: SharedClock,
    limits: AllocationLimits,
}

impl SharedParts {
    fn into_shared(
        self,
        config: Config,
        integrations: BTreeMap<String, Arc<Integration>>,
        metrics: prometheus_client::registry::Registry,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            config,
            integrations,
            validator: self.validator,
            pane_page: self.pane_page,
            metrics,
            clock: self.clock,
            limits: self.limits,
        })
    }
}

/// One integration at run time, its templates compiled.
fn integration(
    config: &Config,
    i: usize,
    ic: &vmr_core::config::IntegrationConfig,
    tag_key: TagKey,
    issued: u64,
) -> Result<Arc<Integration>> {
    let templates = TemplateSet::compile(&ic.templates)
        .with_context(|| format!("integration[{i}].templates"))?;
    Ok(Arc::new(Integration::new(
        ic.clone(),
        templates,
        &config.server,
        tag_key,
        issued,
    )))
}

fn load_pane_index(config: &Config) -> Result<Option<PanePage>> {
    let path = config.server.dist_dir.join("index.html");
    match std::fs::read_to_string(&path) {
        Ok(html) => Ok(Some(
            PanePage::prepare(&html, &config.server, &config.integrations)
                .with_context(|| format!("preparing {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %path.display(), "the pane is not built; /pane/ will say so");
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Binds the configured address; returns the bound address and a future that
/// serves until `shutdown` resolves.
pub async fn serve(
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, impl Future<Output = Result<()>>)> {
    let config = &app.shared().config;
    let listen = config.server.listen;
    let plain = config.server.plain_http;
    let pem = if plain {
        None
    } else {
        Some(tls::listener_pem(&config.server)?)
    };
    let admin = match config.admin.listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("admin.listen: cannot bind {addr}"))?;
            tracing::info!(addr = %l.local_addr()?, "admin listener (plain HTTP)");
            Some((l, http::admin_router(&app)))
        }
        None => None,
    };
    let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
    // The mailbox workers of the management role (and `all`) run beside the listeners.
    if let App::Management(state) = &app {
        // Push mode switches the push queue on before any mailbox commit.
        if let Some(health) = crate::infinity_push::spawn(state, stopping.clone())? {
            crate::http::ops::register_readiness_probe(
                &state.shared,
                Arc::new(crate::infinity_push::InfinityReadiness::new(
                    health,
                    state.storage.clone(),
                )),
            );
        }
        crate::vmr_lifetime::spawn(state, stopping.clone());
        crate::mailbox_worker::spawn_all(state, stopping.clone())?;
    }
    let router = http::router(app);
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("server.listen: cannot bind {listen}"))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let handle = axum_server::Handle::new();
    let shutdown_handle = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stopping_tx.send(true);
        shutdown_handle.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });
    // The peer address reaches handlers (the policy API's `allow_from`).
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let fut = async move {
        if let Some((listener, router)) = admin {
            tokio::spawn(async move {
                let served = axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stopping.wait_for(|stop| *stop).await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::error!(error = %e, "the admin listener stopped");
                }
            });
        }
        match pem {
            None => {
                axum_server::from_tcp(listener)
                    .handle(handle)
                    .serve(service)
                    .await
            }
            Some(pem) => {
                let tls = axum_server::tls_rustls::RustlsConfig::from_pem(pem.cert, pem.key)
                    .await
                    .context("loading the TLS certificate")?;
                axum_server::from_tcp_rustls(listener, tls)
                    .handle(handle)
                    .serve(service)
                    .await
            }
        }
        .context("serving")
    };
    Ok((addr, fut))
}
