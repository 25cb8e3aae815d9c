//! `vmr-simulator`: faithful stand-ins for the parts of Microsoft's stack the project cannot
//! have in development and CI.
//!
//! - [`exchange`]: an Exchange server's identity-token issuer and auth metadata document.
//! - [`entra`]: an Entra ID tenant's OpenID configuration, JWKS and v2.0 access tokens (NAA).
//! - [`outlook`]: an Outlook compose window hosting the real task pane in an iframe, and the
//!   fake Office.js the pane loads.
//! - [`tls`]: the HTTPS listener's self-signed certificate.
//!
//! [`Simulator`] bundles one of each issuer for one origin and [`Simulator::router`] serves them
//! all; [`start`] runs that router over HTTPS on a real socket (used by the `vmr-simulator`
//! binary, the demo and the end-to-end tests). Tests that only need tokens use the issuers
//! directly.

pub mod entra;
pub mod exchange;
pub mod jwt;
pub mod outlook;
pub mod tls;

use entra::EntraIssuer;
use exchange::ExchangeIssuer;
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
}

impl Simulator {
    /// Generates fresh issuers for a simulator reachable at `origin`
    /// (e.g. `https://127.0.0.1:9443`) with Entra tenant `tenant_id`.
    pub fn generate(origin: &str, tenant_id: &str) -> anyhow::Result<Self> {
        let origin = origin.trim_end_matches('/').to_owned();
        Ok(Self {
            exchange: Arc::new(ExchangeIssuer::generate(&origin)?),
            entra: Arc::new(EntraIssuer::generate(&origin, tenant_id)?),
            origin,
        })
    }

    /// The origin the simulator serves (and puts in its issuer URLs).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Every route: Exchange metadata, Entra discovery + JWKS, Outlook compose window, fake
    /// Office.js and the identity-token endpoint.
    pub fn router(&self) -> axum::Router {
        exchange::router(self.exchange.clone())
            .merge(entra::router(self.entra.clone()))
            .merge(outlook::router(self.exchange.clone()))
    }

    /// URL of the compose window for `scenario`.
    pub fn compose_url(&self, scenario: &outlook::ComposeScenario) -> String {
        scenario.url(&self.origin)
    }

    /// URL of the fake Office.js (what the server's Office.js URL should point at).
    pub fn office_js_url(&self) -> String {
        format!("{}{}", self.origin, outlook::OFFICE_JS_PATH)
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
/// task. Must be called inside a Tokio runtime.
pub async fn start(listen: SocketAddr, tenant_id: &str) -> anyhow::Result<RunningSimulator> {
    let listener = std::net::TcpListener::bind(listen)?;
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    let origin = format!("https://{local_addr}");
    let host = local_addr.ip().to_string();
    let tenant = tenant_id.to_owned();
    let (simulator, tls) = tokio::task::spawn_blocking(move || {
        let simulator = Simulator::generate(&origin, &tenant)?;
        let tls = tls::TlsIdentity::generate(&[host.as_str()])?;
        anyhow::Ok((simulator, tls))
    })
    .await??;
    let config = tls.rustls_config().await?;
    let handle = axum_server::Handle::new();
    let app = simulator.router();
    let server = axum_server::from_tcp_rustls(listener, config).handle(handle.clone());
    let task = tokio::spawn(async move { server.serve(app.into_make_service()).await });
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
}
