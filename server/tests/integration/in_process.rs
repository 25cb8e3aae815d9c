//! The server as the HTTP-level integration tests run it: in this process, over HTTPS with a
//! self-signed certificate on a free loopback port, with the repository's `dist/` and
//! `static/`. A test takes [`config`], changes what it needs, and [`start`]s it; beside it,
//! the simulator ([`simulator`]) whose certificate the server is told to trust.

use std::path::PathBuf;

use vmr_core::config::{Config, Role};
use vmr_server::app::{serve, App};

/// A `role` config on a free loopback port (listen address and public host alike) over the
/// database `storage_url`.
pub fn config(role: Role, storage_url: &str) -> Config {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut config = Config {
        role,
        ..Config::default()
    };
    config.server.listen = format!("127.0.0.1:{port}").parse().expect("listen");
    config.server.public_host = format!("127.0.0.1:{port}");
    config.server.dist_dir = root.join("dist");
    config.server.static_dir = root.join("static");
    config.storage.url = storage_url.to_owned();
    config
}

/// The simulator on a free loopback port, a temporary directory, and the simulator's
/// certificate written into it (`sim.pem`, for `http_client.extra_ca_files` or `ca_file`).
pub async fn simulator() -> (vmr_simulator::RunningSimulator, tempfile::TempDir, PathBuf) {
    let sim = vmr_simulator::start(
        "127.0.0.1:0".parse().expect("addr"),
        vmr_simulator::DEFAULT_TENANT,
    )
    .await
    .expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = dir.path().join("sim.pem");
    sim.tls.write_cert_pem(&cert).expect("cert");
    (sim, dir, cert)
}

/// A running server: its origin; it stops when this is dropped.
pub struct Running {
    pub origin: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Validates `config`, builds the app and serves it in the background.
pub async fn start(config: Config) -> Running {
    config.validate().expect("valid config");
    let app = App::build(config).await.expect("app builds");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, server) = serve(app, async {
        let _ = stopped.await;
    })
    .await
    .expect("serve");
    tokio::spawn(server);
    Running {
        origin: format!("https://{addr}"),
        _stop: stop,
    }
}

/// An HTTPS client that accepts the server's self-signed certificate; with `redirects`
/// false, a redirect is returned to the test instead of followed.
pub fn client(redirects: bool) -> reqwest::Client {
    let policy = if redirects {
        reqwest::redirect::Policy::default()
    } else {
        reqwest::redirect::Policy::none()
    };
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(policy)
        .build()
        .expect("client")
}
