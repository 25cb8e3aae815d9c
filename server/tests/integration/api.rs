//! The HTTP API against a real server (in-process, HTTPS on loopback) and the
//! simulated Exchange: good requests, and every kind of bad one — each must
//! get a precise JSON error and consume no alias.

use std::path::PathBuf;

use serde_json::{json, Value};
use vmr_core::config::{Config, Role};
use vmr_protocol::tag::{find_tag, MeetingTag};
use vmr_server::app::App;
use vmr_simulator::exchange_identity::IdentityClaims;
use vmr_simulator::RunningSimulator;
use vmr_store::Storage;

use crate::in_process;

struct Harness {
    sim: RunningSimulator,
    origin: String,
    pane_url: String,
    db_url: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    _server: in_process::Running,
}

/// Deferral key of the test deployment (edge and management share it).
const DEFERRAL_KEY: &str = "7e57d3f37e57d3f37e57d3f37e57d3f37e57d3f37e57d3f37e57d3f37e57d3f3";
/// The admin API token, and its SHA-256 as configured.
const ADMIN_TOKEN: &str = "api-test-admin-token";
const ADMIN_TOKEN_SHA256: &str = "86584a5e1549062637b2ded9a110557779568cdd0e34e8bc9fa1363fd6a5cbbb";

async fn start(role: Role, tweak: impl FnOnce(&mut Config)) -> Harness {
    let (sim, dir, cert) = in_process::simulator().await;
    let db_url = format!("sqlite://{}", dir.path().join("vmr.db").display());
    let mut config = in_process::config(role, &db_url);
    config.http_client.extra_ca_files = vec![cert];
    config.management.shared_secret = Some("a-shared-secret-of-some-length".into());
    config.management.deferral_key = Some(DEFERRAL_KEY.into());
    config.admin.api_token_sha256 = vec![ADMIN_TOKEN_SHA256.into()];
    config.integrations[0].auth.exchange_metadata = vec![sim.local_addr.to_string()];
    tweak(&mut config);
    let pane_url = config.integrations[0].pane_url(&config.server);
    let server = in_process::start(config).await;
    let client = in_process::client(true);
    Harness {
        sim,
        origin: server.origin.clone(),
        pane_url,
        db_url,
        client,
        _dir: dir,
        _server: server,
    }
}

impl Harness {
    fn token(&self, tweak: impl FnOnce(&mut IdentityClaims)) -> String {
        let mut claims = IdentityClaims::new(self.pane_url.clone(), "ann@example.com".to_string());
        tweak(&mut claims);
        self.sim.simulator.exchange.identity_token(&claims)
    }

    async fn post(&self, token: Option<&str>, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("{}/api/v1/alias", self.origin))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// `POST /api/v1/alias` with `token`, the whole response (headers too).
    async fn allocate_response(&self, token: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/api/v1/alias", self.origin))
            .header("content-type", "application/json")
            .bearer_auth(token)
            .body(request().to_string())
            .send()
            .await
            .expect("send")
    }

    async fn allocate(&self, token: Option<&str>, body: Value) -> (u16, Value) {
        self.post(token, "application/json", body.to_string().into_bytes())
            .await
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.origin))
            .send()
            .await
            .expect("GET")
    }

    async fn get_text(&self, path: &str) -> String {
        self.get(path).await.text().await.expect("text body")
    }

    /// GET with the admin API token.
    async fn get_admin(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.origin))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("GET")
    }

    async fn aliases(&self) -> u64 {
        let storage = Storage::open(&self.db_url, 1).await.expect("open db");
        storage.count_aliases("default").await.expect("count")
    }
}

fn request() -> Value {
    json!({ "integration": "default", "subject": "Weekly sync" })
}

fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["code"], want_code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.len() > 10),
        "a useful message: {body}"
    );
}

#[tokio::test]
async fn allocates_a_unique_alias_with_a_verifiable_tag() {
    // Instructions that show the subject: user data, escaped in HTML.
    let h = start(Role::All, |c| {
        c.integrations[0].templates.insert(
            "meeting_instructions".into(),
            "<p>Join {{ alias }} for {{ subject }}</p>".into(),
        );
    })
    .await;
    let token = h.token(|_| {});
    let body = json!({
        "integration": "default",
        "subject": "<script>alert(1)</script> & <b>co</b>",
        "organizer": { "name": "Bob Boss", "email": "bob@example.com" }
    });
    let (status, answer) = h.allocate(Some(&token), body.clone()).await;
    assert_eq!(status, 200, "{answer}");
    let first = &answer["allocated"];
    assert!(first.is_object(), "an allocation: {answer}");
    let numeric = first["numeric_alias"].as_str().expect("numeric");
    assert!(numeric.starts_with("88") && numeric.len() == 8, "{numeric}");
    assert_eq!(first["alias"], format!("{numeric}@vc.example.com"));
    assert_eq!(first["resource"]["email"], "vmr-scheduler@example.com");
    let html = first["instructions"]["html"].as_str().expect("html");
    let text = first["instructions"]["text"].as_str().expect("text");
    let tag = first["tag"].as_str().expect("tag");
    assert!(html.contains(tag) && text.contains(tag));
    assert!(
        html.contains(
            "&lt;script&gt;alert(1)&lt;&#x2f;script&gt; &amp; &lt;b&gt;co&lt;&#x2f;b&gt;"
        ),
        "the subject is escaped in the HTML instructions: {html}"
    );
    assert!(!html.contains("<script") && !html.contains("<b>"), "{html}");
    assert!(
        text.contains("<script>alert(1)</script> & <b>co</b>"),
        "the plain-text instructions show the subject as typed: {text}"
    );
    let Some(Ok(MeetingTag::Pxps(id))) = find_tag(html, true) else {
        panic!("no tag in {html}");
    };
    assert_eq!(id.alias_uuid, first["alias_uuid"]);
    let (_, second) = h.allocate(Some(&token), body).await;
    assert_ne!(first["numeric_alias"], second["allocated"]["numeric_alias"]);
    assert_eq!(h.aliases().await, 2);
    // The body names bob as organizer, but what is recorded is who the token
    // proves: a body can claim anything.
    let storage = Storage::open(&h.db_url, 1).await.expect("db");
    let row = storage
        .alias_by_id(first["alias_uuid"].as_str().expect("uuid"))
        .await
        .expect("read")
        .expect("row");
    assert_eq!(row.requester_email.as_deref(), Some("ann@example.com"));
    assert_eq!(row.organizer_email.as_deref(), Some("ann@example.com"));
}

#[tokio::test]
async fn bad_requests_get_json_errors_and_consume_nothing() {
    let h = start(Role::All, |_| {}).await;
    let good = h.token(|_| {});

    let (s, b) = h
        .post(
            Some(&good),
            "application/json",
            b"{\"integration\": ".to_vec(),
        )
        .await;
    assert_error(s, &b, 400, "invalid_json");
    let (s, b) = h
        .post(Some(&good), "application/json", b"[1,2]".to_vec())
        .await;
    assert_error(s, &b, 400, "invalid_json");
    let (s, b) = h
        .post(
            Some(&good),
            "text/plain",
            request().to_string().into_bytes(),
        )
        .await;
    assert_error(s, &b, 415, "unsupported_media_type");
    let big = json!({ "integration": "default", "subject": "x".repeat(70 * 1024) });
    let (s, b) = h.allocate(Some(&good), big).await;
    assert_error(s, &b, 413, "request_too_large");
    let (s, b) = h.allocate(None, request()).await;
    assert_error(s, &b, 401, "token_missing");
    let (s, b) = h.allocate(Some("not-a-token"), request()).await;
    assert_error(s, &b, 401, "token_not_jwt");
    let (s, b) = h.allocate(Some("a.b!.c"), request()).await;
    assert_error(s, &b, 401, "token_bad_base64");
    let expired = h.token(|c| {
        c.valid_from -= 20_000;
        c.valid_until -= 20_000 + 8 * 3600;
    });
    let (s, b) = h.allocate(Some(&expired), request()).await;
    assert_error(s, &b, 401, "token_expired");
    let wrong_aud = h.token(|c| c.aud = "https://elsewhere.example.com/pane".into());
    let (s, b) = h.allocate(Some(&wrong_aud), request()).await;
    assert_error(s, &b, 401, "token_wrong_audience");
    let (s, b) = h
        .allocate(Some(&good), json!({ "integration": "nope" }))
        .await;
    assert_error(s, &b, 404, "unknown_integration");

    assert_eq!(h.aliases().await, 0, "no alias consumed by any bad request");
    let (s, _) = h.allocate(Some(&good), request()).await;
    assert_eq!(s, 200);
    assert_eq!(h.aliases().await, 1);
}

#[tokio::test]
async fn management_requires_the_edge_secret() {
    let h = start(Role::Management, |_| {}).await;
    let token = h.token(|_| {});
    let (s, b) = h.allocate(Some(&token), request()).await;
    assert_error(s, &b, 401, "edge_secret_invalid");
    let resp = h
        .client
        .post(format!("{}/api/v1/alias", h.origin))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .header("x-vmr-edge-secret", "a-shared-secret-of-some-length")
        .body(request().to_string())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(h.aliases().await, 1);
}

#[tokio::test]
async fn pane_config_manifest_and_health() {
    let h = start(Role::All, |c| {
        c.integrations[0].pane.title = "Book a room".into();
    })
    .await;
    let cfg: Value = h
        .client
        .get(format!(
            "{}/api/v1/pane-config?integration=default",
            h.origin
        ))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(cfg["texts"]["title"], "Book a room");
    assert_eq!(cfg["texts"]["button_label"], "Add a Single-use VMR");
    assert_eq!(cfg["auth_method"], "EXCHANGE_USER_ID_TOKEN");
    let manifest = h.get("/manifest.xml").await;
    assert_eq!(manifest.headers()["cache-control"], "no-cache");
    assert!(manifest.headers()["content-type"]
        .to_str()
        .is_ok_and(|v| v.starts_with("application/xml")));
    let xml = manifest.text().await.expect("text");
    assert!(xml.contains(&h.pane_url.replace('&', "&amp;")));
    assert_eq!(h.get_text("/healthz").await, "ok");
    let ready = h.get("/readyz").await;
    assert_eq!(ready.status().as_u16(), 200);
    let token = h.token(|_| {});
    let (s, _) = h.allocate(Some(&token), request()).await;
    assert_eq!(s, 200);
    let metrics = h.get_admin("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.contains("vmr_aliases_allocated_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vmr_alias_space_used{integration=\"default\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vmr_alias_space_size{integration=\"default\"} 1000000"),
        "{metrics}"
    );
    assert!(metrics.contains("vmr_alias_space_nearly_exhausted{integration=\"default\"} 0"));
}

#[tokio::test]
#[ignore = "needs dist/ (the built pane): run by cargo xtask test"]
async fn pane_files_are_served_precompressed_with_cache_rules() {
    let dist = built_pane();
    let wasm = std::fs::read_dir(&dist)
        .expect("dist/ is readable")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with("_bg.wasm"))
        .unwrap_or_else(|| {
            panic!(
                "{} has no *_bg.wasm: rebuild it with `cargo xtask build-pane`",
                dist.display()
            )
        });
    let h = start(Role::All, |c| c.server.office_js = "cdn".into()).await;
    let index = h.get("/pane/index.html?integration=default").await;
    assert_eq!(index.headers()["cache-control"], "no-cache");
    let html = index.text().await.expect("text");
    assert!(html.contains("src=\"https://appsforoffice.microsoft.com/lib/1/hosted/office.js\""));
    assert!(!html.contains("%OFFICE_JS_URL%"));
    let resp = h
        .client
        .get(format!("{}/pane/{wasm}", h.origin))
        .header("accept-encoding", "br")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/wasm");
    assert_eq!(resp.headers()["content-encoding"], "br");
    assert_eq!(
        resp.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let on_disk = std::fs::metadata(dist.join(format!("{wasm}.br")))
        .expect("precompressed file")
        .len();
    assert_eq!(resp.bytes().await.expect("body").len() as u64, on_disk);
}

#[tokio::test]
#[ignore = "needs dist/ and static/office-js/: run by cargo xtask test"]
async fn local_office_js_is_used_when_configured() {
    built_pane();
    let office_js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../static/office-js/office.js");
    assert!(
        office_js.is_file(),
        "{} is missing: `cargo xtask setup` copies Office.js from the npm package \
         @microsoft/office-js (cargo xtask test runs it)",
        office_js.display()
    );
    // A static folder with the real office.js and a MicrosoftAjax.js (its
    // content does not matter here; the browser tests use a stand-in).
    let statics = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(statics.path().join("office-js")).expect("mkdir");
    std::os::unix::fs::symlink(&office_js, statics.path().join("office-js/office.js"))
        .expect("link");
    std::fs::write(
        statics.path().join("office-js/MicrosoftAjax.js"),
        "/* test file */",
    )
    .expect("write");
    let without = {
        let mut c = Config::default();
        c.server.office_js = "local".into();
        c.server.static_dir = PathBuf::from("/nonexistent");
        App::build(c).await.err().expect("local mode without files")
    };
    assert!(
        format!("{without:#}").contains("server.office_js"),
        "{without:#}"
    );
    let static_dir = statics.path().to_path_buf();
    let h = start(Role::All, move |c| {
        c.server.office_js = "local".into();
        c.server.static_dir = static_dir;
    })
    .await;
    let index = h.get("/pane/").await;
    let csp = index.headers()["content-security-policy"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        csp.contains("script-src 'self' 'wasm-unsafe-eval'"),
        "{csp}"
    );
    let html = index.text().await.expect("text");
    let local = format!("{}/office-js/office.js", h.origin);
    let ajax = format!("{}/office-js/MicrosoftAjax.js", h.origin);
    let office_at = html.find(&format!("src=\"{local}\"")).expect("office.js");
    let ajax_at = html
        .find(&format!("src=\"{ajax}\""))
        .expect("MicrosoftAjax.js");
    assert!(ajax_at < office_at, "{html}");
    for url in [local, ajax] {
        let resp = h.client.get(&url).send().await.expect("get");
        assert_eq!(resp.status().as_u16(), 200, "{url} is served");
    }
}

/// `dist/`, the Trunk build of the pane. Panics when it is not built: the
/// tests that need it are `#[ignore]`d and run by `cargo xtask test`, which
/// builds the pane first.
fn built_pane() -> PathBuf {
    let dist = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dist");
    assert!(
        dist.join("index.html").is_file(),
        "{} has no index.html: build the pane with `cargo xtask build-pane` \
         (cargo xtask test does it first)",
        dist.display()
    );
    dist
}

#[tokio::test]
async fn each_integration_has_its_own_alias_space_resource_and_key() {
    let h = start(Role::All, |c| {
        let mut second = c.integrations[0].clone();
        second.id = "lab".into();
        second.alias_prefix = "55".into();
        second.alias_domain = "lab.example.com".into();
        second.resource_email = "lab-vmr@example.com".into();
        second.addin_id = "0d5c3c52-2f7e-4b8b-9a55-7a1d2a3b4c5d".into();
        c.integrations.push(second);
    })
    .await;
    let lab_pane = h.pane_url.replace("integration=default", "integration=lab");
    let lab_token = {
        let claims = IdentityClaims::new(lab_pane, "ann@example.com".to_string());
        h.sim.simulator.exchange.identity_token(&claims)
    };
    let (s, lab) = h
        .allocate(Some(&lab_token), json!({ "integration": "lab" }))
        .await;
    assert_eq!(s, 200, "{lab}");
    let lab = &lab["allocated"];
    assert!(lab["numeric_alias"]
        .as_str()
        .is_some_and(|n| n.starts_with("55")));
    assert!(lab["alias"]
        .as_str()
        .is_some_and(|a| a.ends_with("@lab.example.com")));
    assert_eq!(lab["resource"]["email"], "lab-vmr@example.com");
    // A token for one integration's pane is not valid for another's.
    let (s, b) = h.allocate(Some(&lab_token), request()).await;
    assert_error(s, &b, 401, "token_wrong_audience");
    let default_token = h.token(|_| {});
    let (_, default) = h.allocate(Some(&default_token), request()).await;
    let default = &default["allocated"];
    // Different keys: the two tags name different key ids.
    let key_of = |v: &Value| v["tag"].as_str().map(|t| t[6..14].to_string());
    assert_ne!(key_of(lab), key_of(default));
    let manifest = h.get_text("/manifest/lab.xml").await;
    assert!(manifest.contains("0d5c3c52-2f7e-4b8b-9a55-7a1d2a3b4c5d"));
    assert!(manifest.contains("integration=lab"));
}

// ------------------------------------------------------------ hardening (issue 6)

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

/// A stand-in management that answers every alias request with `status`,
/// `body` and an optional `Retry-After`; returns its base URL.
async fn canned_management(
    status: u16,
    body: &'static str,
    retry_after: Option<&'static str>,
) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let app = axum::Router::new().fallback(move || async move {
        let mut r = axum::response::Response::new(axum::body::Body::from(body));
        *r.status_mut() = axum::http::StatusCode::from_u16(status).expect("status");
        r.headers_mut()
            .insert("content-type", "application/json".parse().expect("ct"));
        if let Some(v) = retry_after {
            r.headers_mut()
                .insert("retry-after", v.parse().expect("ra"));
        }
        r
    });
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn a_requester_over_the_limit_gets_429_with_retry_after() {
    let h = start(Role::All, |c| {
        c.limits.allocations_per_requester_per_hour = 3
    })
    .await;
    let token = h.token(|_| {});
    for _ in 0..3 {
        assert_eq!(h.allocate(Some(&token), request()).await.0, 200);
    }
    let resp = h.allocate_response(&token).await;
    assert_eq!(resp.status().as_u16(), 429);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=1200).contains(&wait), "retry after {wait} s");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["code"], "too_many_requests");
    // Someone else is not affected.
    let bob = h.token(|c| c.msexchuid = "bob-uid".into());
    assert_eq!(h.allocate(Some(&bob), request()).await.0, 200);
    assert_eq!(h.aliases().await, 4, "the refused request consumed nothing");
}

#[tokio::test]
async fn edge_defers_with_a_signed_statement_never_the_users_token() {
    let h = start(Role::Edge, |c| {
        c.management.url = Some(format!("https://127.0.0.1:{}", closed_port()));
    })
    .await;
    let token = h.token(|_| {});
    let (s, b) = h.allocate(Some(&token), request()).await;
    assert_eq!(s, 200, "{b}");
    let tok = b["deferred"]["tok"].as_str().expect("a TOK");
    assert!(b["deferred"]["placeholder"]["html"].is_string(), "{b}");
    assert!(
        !tok.contains(&token) && !token.contains(tok),
        "the user's token stays private"
    );
    let keys = vmr_core::deferral::DeferralKeys::from_config(&vmr_core::config::ManagementConfig {
        deferral_key: Some(DEFERRAL_KEY.into()),
        ..Default::default()
    })
    .expect("keys")
    .expect("configured");
    let now = vmr_core::clock::SystemClock;
    let statement = keys
        .verify(tok, vmr_core::clock::Clock::now_unix(&now))
        .expect("a statement signed with the deferral key");
    assert_eq!(statement.email.as_deref(), Some("ann@example.com"));
    assert_eq!(statement.integration, "default");
    assert!(statement.exp - statement.iat >= 7 * 86_400 - 1);
    // The TOK is no token for the pane API.
    let (s, b) = h.allocate(Some(tok), request()).await;
    assert_error(s, &b, 401, "token_unsupported_algorithm");
}

#[tokio::test]
async fn edge_passes_managements_own_refusals_through() {
    for (status, body, retry, want) in [
        (
            503,
            r#"{"code":"alias_space_exhausted","message":"the alias space is full"}"#,
            None,
            503,
        ),
        (
            429,
            r#"{"code":"too_many_requests","message":"try again in 60 s"}"#,
            Some("60"),
            429,
        ),
        (
            500,
            r#"{"code":"storage_error","message":"reference 1234"}"#,
            None,
            500,
        ),
    ] {
        let url = canned_management(status, body, retry).await;
        let h = start(Role::Edge, |c| c.management.url = Some(url)).await;
        let resp = h.allocate_response(&h.token(|_| {})).await;
        assert_eq!(resp.status().as_u16(), want, "management said {status}");
        if let Some(r) = retry {
            assert_eq!(resp.headers()["retry-after"], r);
        }
        let b: Value = resp.json().await.expect("json");
        assert!(b.get("deferred").is_none(), "{status} must not defer: {b}");
    }
    // A proxy's 502 means management is unreachable: deferred.
    let url = canned_management(502, "<html>Bad gateway</html>", None).await;
    let h = start(Role::Edge, |c| c.management.url = Some(url)).await;
    let (s, b) = h.allocate(Some(&h.token(|_| {})), request()).await;
    assert_eq!(s, 200);
    assert!(b["deferred"]["tok"].is_string(), "{b}");
}

#[tokio::test]
async fn server_side_errors_say_nothing_internal() {
    // The token's issuer is allowed but unreachable: the edge cannot check
    // it, management is down too — 503, with a reference, no internals.
    let port = closed_port();
    let h = start(Role::Edge, |c| {
        c.management.url = Some(format!("https://127.0.0.1:{}", closed_port()));
        c.integrations[0]
            .auth
            .exchange_metadata
            .push(format!("127.0.0.1:{port}"));
    })
    .await;
    let token = h.token(|c| {
        c.amurl_override = Some(format!(
            "https://127.0.0.1:{port}/autodiscover/metadata/json/1"
        ))
    });
    let resp = h.allocate_response(&token).await;
    assert_eq!(resp.status().as_u16(), 503);
    let id = resp.headers()["x-correlation-id"]
        .to_str()
        .expect("id")
        .to_owned();
    let b: Value = resp.json().await.expect("json");
    let message = b["message"].as_str().expect("message");
    assert!(message.contains(&id), "{message}");
    for secret in ["127.0.0.1", "refused", "tcp", "error trying"] {
        assert!(!message.to_lowercase().contains(secret), "{message}");
    }
    // Management answers a metadata failure with 502, equally opaque.
    let m = start(Role::All, |c| {
        c.integrations[0]
            .auth
            .exchange_metadata
            .push(format!("127.0.0.1:{port}"));
    })
    .await;
    let token = m.token(|c| {
        c.amurl_override = Some(format!(
            "https://127.0.0.1:{port}/autodiscover/metadata/json/1"
        ))
    });
    let (s, b) = m.allocate(Some(&token), request()).await;
    assert_eq!(s, 502);
    assert_eq!(b["code"], "metadata_fetch_failed");
    assert!(
        !b["message"]
            .as_str()
            .unwrap_or_default()
            .contains("127.0.0.1"),
        "{b}"
    );
    // An unknown integration does not list the configured ones.
    let (s, b) = m
        .allocate(
            Some(&m.token(|_| {})),
            json!({"integration": "nope", "subject": "x"}),
        )
        .await;
    assert_error(s, &b, 404, "unknown_integration");
    assert!(
        !b["message"]
            .as_str()
            .unwrap_or_default()
            .contains("default"),
        "{b}"
    );
}

#[tokio::test]
async fn metrics_and_detailed_readiness_are_for_admins_only() {
    let admin_port = closed_port();
    let h = start(Role::All, |c| {
        c.admin.listen = Some(format!("127.0.0.1:{admin_port}").parse().expect("addr"));
    })
    .await;
    assert_eq!(h.get_text("/healthz").await, "ok");
    assert_eq!(h.get_text("/readyz").await, "ready");
    for path in ["/metrics", "/readyz/detail"] {
        assert_eq!(
            h.get(path).await.status().as_u16(),
            401,
            "{path} without a token"
        );
        let wrong = h
            .client
            .get(format!("{}{path}", h.origin))
            .bearer_auth("not-the-admin-token")
            .send()
            .await
            .expect("GET");
        assert_eq!(wrong.status().as_u16(), 401, "{path} with a wrong token");
        assert_eq!(
            h.get_admin(path).await.status().as_u16(),
            200,
            "{path} with the token"
        );
    }
    // The admin listener serves them without a token.
    let plain = reqwest::Client::new();
    let metrics = plain
        .get(format!("http://127.0.0.1:{admin_port}/metrics"))
        .send()
        .await
        .expect("admin listener");
    assert_eq!(metrics.status().as_u16(), 200);
    assert!(metrics
        .text()
        .await
        .expect("text")
        .contains("vmr_aliases_allocated_total"));
    let detail: Value = plain
        .get(format!("http://127.0.0.1:{admin_port}/readyz/detail"))
        .send()
        .await
        .expect("admin listener")
        .json()
        .await
        .expect("json");
    assert_eq!(detail["checks"]["database"], "ok", "{detail}");
    assert_eq!(detail["role"], "all", "{detail}");
}
