//! `vmr-simulator`: runs the simulated Exchange, Entra ID and Outlook over HTTPS for the demo
//! and for manual testing, and writes the listener's certificate where the server under test
//! and the browser can be told to trust it.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use vmr_simulator::outlook::ComposeScenario;

/// Simulated Exchange (identity tokens, auth metadata), Entra ID (NAA tokens) and Outlook
/// compose window.
#[derive(Debug, Parser)]
#[command(name = "vmr-simulator", version)]
struct Args {
    /// Address to listen on; the simulator's origin is `https://<this address>`.
    #[arg(long, default_value = "127.0.0.1:9443", env = "VMR_SIMULATOR_LISTEN")]
    listen: SocketAddr,
    /// Where to write the listener's self-signed certificate (PEM).
    #[arg(long, env = "VMR_SIMULATOR_CERT_OUT")]
    cert_out: PathBuf,
    /// Entra ID tenant id of the simulated tenant.
    #[arg(long, default_value = vmr_simulator::DEFAULT_TENANT)]
    tenant: String,
    /// Pane URL to show in the printed compose URL.
    #[arg(long, default_value = "https://127.0.0.1:8443/addin/index.html")]
    pane: String,
    /// Registers a web application for sign-in (authorization code flow):
    /// `<client id>,<client secret>,<redirect URI>`.
    #[arg(long, value_name = "ID,SECRET,REDIRECT_URI")]
    web_app: Option<String>,
    /// The user signed in at the simulated Entra ID, offered on its "Pick an account" page.
    #[arg(long, value_name = "EMAIL")]
    signed_in_user: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let running = vmr_simulator::start(args.listen, &args.tenant).await?;
    running.tls.write_cert_pem(&args.cert_out)?;
    let sim = &running.simulator;
    if let Some(app) = &args.web_app {
        let parts: Vec<&str> = app.splitn(3, ',').collect();
        let [id, secret, redirect_uri] = parts.as_slice() else {
            anyhow::bail!(
                "--web-app wants <client id>,<client secret>,<redirect URI>, got {app:?}"
            );
        };
        sim.entra.register_client(id, secret, redirect_uri);
    }
    if let Some(user) = &args.signed_in_user {
        sim.entra.sign_in_as(Some((user, &[])));
        sim.entra.show_account_picker(true);
    }
    println!("vmr-simulator listening on {}", running.origin());
    println!("certificate:        {}", args.cert_out.display());
    println!(
        "compose window:     {}",
        sim.compose_url(&ComposeScenario::new(args.pane))
    );
    println!("fake Office.js:     {}", sim.office_js_url());
    println!("fake MSAL.js (NAA): {}", sim.msal_js_url());
    println!("Exchange metadata:  {}", sim.exchange.metadata_url());
    println!("Entra OIDC metadata: {}", sim.entra.oidc_metadata_url());
    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down");
    running.shutdown().await
}
