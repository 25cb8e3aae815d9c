//! `vmr-simulator`: faithful stand-ins for the parts of Microsoft's stack the project cannot
//! have in development and CI.
//!
//! - [`exchange_identity`]: an Exchange server's identity-token issuer and auth metadata document.
//! - [`ews`]: the Exchange server's EWS side: a stateful EWS endpoint over in-memory resource
//!   and organizer mailboxes, the meeting flows that fill them, and a JSON control API.
//! - [`entra`]: an Entra ID tenant's OpenID configuration, JWKS and v2.0 access tokens (NAA).
//! - [`outlook`]: an Outlook compose window hosting the real task pane in an iframe, and the
//!   fake Office.js the pane loads.
//! - [`naa`]: Nested App Authentication: a fake `@azure/msal-browser` for the pane and the
//!   token endpoint behind it, signing with the [`entra`] tenant's key.
//! - [`tls`]: the HTTPS listener's self-signed certificate.
//! - [`infinity`]: Pexip Infinity's management API (VMRs and their aliases) for the push mode.
//! - [`schema_validation`]: in-process XML Schema validation with the system's libxml2, so the
//!   simulated Exchange can reject every EWS request that fails Microsoft's schema.
//!
//! [`Simulator`] bundles one of each issuer for one origin and [`Simulator::router`] serves them
//! all; [`start`] runs that router over HTTPS on a real socket (used by the `vmr-simulator`
//! binary, the demo and the end-to-end tests). Tests that only need tokens use the issuers
//! directly.

pub mod entra;
pub mod entra_sign_in;
pub mod ews;
pub mod exchange_identity;
pub mod infinity;
pub mod jwt;
pub mod naa;
pub mod outlook;
pub mod schema_validation;
pub mod tls;

use entra::EntraIssuer;
use exchange_identity::ExchangeIssuer;
use std::net::SocketAddr;
use std::sync::Arc;

/// The tenant id used when none is given.
pub const DEFAULT_TENANT: &str = "6f1c8a2e-3b7d-4c59-9e0a-5d2f4b8c1a73";

/// One simulated Exchange + Entra ID + Outlook, all served from one origin.
#[derive(Clone)]
pub struct Simulator {
    origin: String,
    /// The simulated Exchange identity-token issuer.
    pub exchange: Arc<ExchangeIssuer>,
    /// The simulated Entra ID tenant.
    pub entra: Arc<EntraIssuer>,
    /// The simulated Exchange server's EWS side (mailboxes, meeting flows, control API).
    pub ews: Arc<ews::ExchangeServer>,
    /// The simulated Pexip Infinity management API (`/api/admin/configuration/v1/…`).
    pub infinity: Arc<infinity::InfinityServer>,
}

impl Simulator {
    /// Generates fresh issuers for a simulator reachable at `origin`
    /// (e.g. `https://127.0.0.1:9443`) with Entra tenant `tenant_id`.
    pub fn generate(origin: &str, tenant_id: &str) -> anyhow::Result<Self> {
        Self::generate_with(origin, tenant_id, ews::ExchangeOptions::default())
    }

    /// Like [`Simulator::generate`], with the simulated Exchange set up by `exchange`.
    pub fn generate_with(
        origin: &str,
        tenant_id: &str,
        exchange: ews::ExchangeOptions,
    ) -> anyhow::Result<Self> {
        let origin = origin.trim_end_matches('/').to_owned();
        Ok(Self {
            exchange: Arc::new(ExchangeIssuer::generate(&origin)?),
            entra: Arc::new(EntraIssuer::generate(&origin, tenant_id)?),
            ews: Arc::new(ews::ExchangeServer::new(exchange)?),
            infinity: Arc::new(infinity::InfinityServer::default()),
            origin,
        })
    }

    /// The origin the simulator serves (and puts in its issuer URLs).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Every route: Exchange metadata, Entra discovery + JWKS, Outlook compose window, fake
    /// Office.js, the identity-token endpoint, fake MSAL.js and the NAA token endpoint.
    pub fn router(&self) -> axum::Router {
        exchange_identity::router(self.exchange.clone())
            .merge(entra::router(self.entra.clone()))
            .merge(outlook::router(self.exchange.clone()))
            .merge(naa::router(self.entra.clone()))
            .merge(self.ews.router())
            .merge(outlook::mail_router(self.ews.clone()))
            .merge(infinity::router(self.infinity.clone()))
    }

    /// URL of the simulated EWS endpoint (`{origin}/EWS/Exchange.asmx`).
    pub fn ews_url(&self) -> String {
        format!("{}{}", self.origin, ews::http::EWS_PATH)
    }

    /// URL of the compose window for `scenario`.
    pub fn compose_url(&self, scenario: &outlook::ComposeScenario) -> String {
        scenario.url(&self.origin)
    }

    /// URL of the fake Office.js (what the server's Office.js URL should point at).
    pub fn office_js_url(&self) -> String {
        format!("{}{}", self.origin, outlook::OFFICE_JS_PATH)
    }

    /// URL of the fake `@azure/msal-browser` (`{origin}/msal-browser.js`) a pane loads for
    /// Nested App Authentication; append `?naa=fail` etc. for the scenarios in [`naa`].
    pub fn msal_js_url(&self) -> String {
        format!("{}{}", self.origin, naa::MSAL_JS_PATH)
    }

    /// URL of the NAA token endpoint the fake MSAL.js posts to (`{origin}/entra/naa-token`).
    pub fn naa_token_url(&self) -> String {
        format!("{}{}", self.origin, naa::NAA_TOKEN_PATH)
    }
}

/// A simulator serving HTTPS on a socket. Dropping it stops the server.
pub struct RunningSimulator {
    /// The simulator being served.
    pub simulator: Simulator,
    /// The address actually bound (useful when asked for port 0).
    pub local_addr: SocketAddr,
    /// The listener's TLS identity (its certificate is what clients must trust).
    pub tls: tls::TlsIdentity,
    handle: axum_server::Handle,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl RunningSimulator {
    /// `https://<local addr>`.
    pub fn origin(&self) -> &str {
        self.simulator.origin()
    }

    /// Stops accepting connections and waits for the server task to end.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.handle.shutdown();
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }
}

impl Drop for RunningSimulator {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

/// Binds `listen` (port 0 picks a free port), generates issuers for `https://<bound addr>` and
/// a TLS certificate for its host, and serves [`Simulator::router`] over HTTPS in a background
/// task, each connection tagged for NTLM ([`ews::ntlm::ConnectionTag`]) and the certificate
/// handed to the channel-binding check. Must be called inside a Tokio runtime.
pub async fn start(listen: SocketAddr, tenant_id: &str) -> anyhow::Result<RunningSimulator> {
    start_with(listen, tenant_id, ews::ExchangeOptions::default()).await
}

/// Like [`start`], with the simulated Exchange set up by `exchange`.
pub async fn start_with(
    listen: SocketAddr,
    tenant_id: &str,
    exchange: ews::ExchangeOptions,
) -> anyhow::Result<RunningSimulator> {
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    let origin = format!("https://{local_addr}");
    let host = local_addr.ip().to_string();
    let tenant = tenant_id.to_owned();
    let (simulator, tls) = tokio::task::spawn_blocking(move || {
        let simulator = Simulator::generate_with(&origin, &tenant, exchange)?;
        let tls = tls::TlsIdentity::generate(&[host.as_str()])?;
        anyhow::Ok((simulator, tls))
    })
    .await??;
    let config = tls.rustls_config().await?;
    simulator.ews.ntlm().set_certificate(&tls.cert_der()?);
    let handle = axum_server::Handle::new();
    let app = simulator.router();
    let server = axum_server::from_tcp_rustls(listener, config).handle(handle.clone());
    // Each connection gets a tag: NTLM authenticates connections, not requests.
    let task = tokio::spawn(async move {
        server
            .serve(app.into_make_service_with_connect_info::<ews::ntlm::ConnectionTag>())
            .await
    });
    Ok(RunningSimulator {
        simulator,
        local_addr,
        tls,
        handle,
        task: Some(task),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_https_on_a_free_port() {
        let running = start("127.0.0.1:0".parse().expect("addr"), DEFAULT_TENANT)
            .await
            .expect("start");
        assert_ne!(running.local_addr.port(), 0);
        assert_eq!(running.origin(), format!("https://{}", running.local_addr));
        assert!(running
            .simulator
            .exchange
            .metadata_url()
            .starts_with(running.origin()));
        let stream = tokio::net::TcpStream::connect(running.local_addr)
            .await
            .expect("listening");
        drop(stream);
        running.shutdown().await.expect("clean shutdown");
    }

    #[tokio::test]
    async fn combined_router_serves_naa_routes() {
        use tower::ServiceExt as _;
        let simulator =
            Simulator::generate("https://127.0.0.1:9443/", DEFAULT_TENANT).expect("sim");
        assert_eq!(
            simulator.msal_js_url(),
            "https://127.0.0.1:9443/msal-browser.js"
        );
        assert_eq!(
            simulator.naa_token_url(),
            "https://127.0.0.1:9443/entra/naa-token"
        );
        let response = simulator
            .router()
            .oneshot(
                axum::http::Request::get(naa::MSAL_JS_PATH)
                    .body(axum::body::Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(response.status(), 200);
        let body = serde_json::json!({
            "client_id": "7a1b2c3d-0000-4000-8000-00000000c1e7",
            "scopes": ["api://3f2b8c1d-4e5a-4b6c-9d7e-8f9a0b1c2d3e/access_as_user"],
        });
        let response = simulator
            .router()
            .oneshot(
                axum::http::Request::post(naa::NAA_TOKEN_PATH)
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(body.to_string()))
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(response.status(), 200);
    }
}
