//! Start-up: turns a validated [`Config`] into a running server.
//!
//! [`App::build`] does all the work that can fail before the first request:
//! templates compiled, database opened and migrated (management and `all`
//! roles only), tag keys loaded or created, the pane's `index.html` prepared
//! with the configured Office.js location. [`serve`] then binds and serves
//! HTTPS (or plain HTTP when configured) until the shutdown future resolves.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use rand::RngCore;

use crate::alias_service::{now_unix, AliasStats};
use crate::integration::Integration;
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

use crate::pane_page::PanePage;

/// Everything a request handler needs.
pub struct App {
    pub config: Config,
    pub integrations: BTreeMap<String, Arc<Integration>>,
    /// `None` on an edge.
    pub storage: Option<Storage>,
    pub validator: TokenValidator,
    /// Outgoing HTTPS (edge → management).
    pub http: reqwest::Client,
    /// The pane's `index.html` with the Office.js scripts in place (and its
    /// policy in local mode); `None` if not built.
    pub pane_index: Option<PanePage>,
    pub stats: Arc<AliasStats>,
    /// `/metrics`: reads `stats` and the integrations at scrape time.
    pub metrics: prometheus_client::registry::Registry,
    /// The time, for token lifetimes, TOK expiry and limits.
    pub clock: SharedClock,
    /// Keys for deferral statements (TOK); `None` in role `all`.
    pub deferral_keys: Option<DeferralKeys>,
    /// Per-requester and global allocation limits.
    pub limits: AllocationLimits,
}

impl App {
    /// Prepares the app; fails with a message naming what is wrong.
    pub async fn build(config: Config) -> Result<App> {
        // Local Office.js: refuse to start without the files the pane needs.
        config.server.check_office_js_files()?;
        tls::install_crypto_provider();
        let http_client = tls::http_client(&config.http_client)?;
        let storage = match config.role {
            Role::Edge => None,
            Role::All | Role::Management => Some(
                Storage::open(&config.storage.url, config.storage.max_connections)
                    .await
                    .context("storage.url")?,
            ),
        };
        let mut integrations = BTreeMap::new();
        for (i, ic) in config.integrations.iter().enumerate() {
            let templates = TemplateSet::compile(&ic.templates)
                .with_context(|| format!("integration[{i}].templates"))?;
            let key_hex = match (&ic.tag_key, &storage) {
                (Some(k), _) => k.expose().to_owned(),
                (None, Some(storage)) => {
                    let mut candidate = [0u8; 32];
                    rand::rngs::OsRng.fill_bytes(&mut candidate);
                    storage
                        .tag_key(&ic.id, &hex::encode(candidate), now_unix())
                        .await?
                }
                // An edge never issues or checks tags.
                (None, None) => hex::encode([0u8; 32]),
            };
            let key = hex::decode(&key_hex)
                .with_context(|| format!("integration[{i}].tag_key is not hex"))?;
            let issued = match &storage {
                Some(s) => s.count_aliases(&ic.id).await?,
                None => 0,
            };
            integrations.insert(
                ic.id.clone(),
                Arc::new(Integration::new(
                    ic.clone(),
                    templates,
                    &config.server,
                    TagKey::new(key),
                    issued,
                )),
            );
        }
        let pane_index = load_pane_index(&config)?;
        let clock = vmr_core::clock::system();
        let stats = Arc::new(AliasStats::default());
        let metrics = crate::metrics::registry(stats.clone(), integrations.clone());
        let deferral_keys = DeferralKeys::from_config(&config.management)?;
        Ok(App {
            validator: TokenValidator::new(http_client.clone()).with_clock(clock.clone()),
            limits: AllocationLimits::new(&config.limits, clock.clone()),
            deferral_keys,
            clock,
            http: http_client,
            config,
            integrations,
            storage,
            pane_index,
            stats,
            metrics,
        })
    }
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
    let listen = app.config.server.listen;
    let plain = app.config.server.plain_http;
    let pem = if plain {
        None
    } else {
        Some(tls::listener_pem(&app.config.server)?)
    };
    let app = Arc::new(app);
    let admin = match app.config.admin.listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("admin.listen: cannot bind {addr}"))?;
            tracing::info!(addr = %l.local_addr()?, "admin listener (plain HTTP)");
            Some((l, http::admin_router(app.clone())))
        }
        None => None,
    };
    let router = http::router(app);
    let listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("server.listen: cannot bind {listen}"))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let handle = axum_server::Handle::new();
    let shutdown_handle = handle.clone();
    let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stopping_tx.send(true);
        shutdown_handle.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });
    let service = router.into_make_service();
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
