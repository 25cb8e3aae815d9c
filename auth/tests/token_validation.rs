//! Integration tests of `vmr_auth`: real RS256 tokens from the simulated
//! Exchange and Entra ID issuers (`vmr_simulator`), whose metadata / OIDC / JWKS
//! documents are served over plain HTTP on 127.0.0.1 (allowed only because the
//! validator is built with `allow_insecure_loopback_metadata(true)`).
//!
//! Every refusal test asserts its own error code; the metadata fetch counters of the
//! simulators (and a bare TCP listener for the allow-list case) show when the
//! validator did — or did not — touch the network.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use vmr_auth::{TokenError, TokenSettings, TokenValidator, CLOCK_SKEW_SECS};
use vmr_core::clock::ManualClock;
use vmr_protocol::AuthMethod;
use vmr_simulator::entra::{self, EntraIssuer, NaaClaims};
use vmr_simulator::exchange_identity::{self, ExchangeIssuer, IdentityClaims};

const PANE: &str = "https://vmr.example.test/addin/pane.html";
const TENANT: &str = "6f1c2a4e-0000-4000-8000-0000000000aa";
const API_APP: &str = "3d2b5a71-1111-4000-8000-0000000000bb";
/// The pane's own client id, the `azp` of the simulator's NAA tokens.
const NAA_CLIENT: &str = "00000000-0000-0000-0000-0000000a11e5";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn validator() -> TokenValidator {
    TokenValidator::new(reqwest::Client::new()).allow_insecure_loopback_metadata(true)
}

/// A validator reading the time from a clock the test moves.
fn validator_with_clock() -> (TokenValidator, Arc<ManualClock>) {
    let clock = ManualClock::starting_now();
    (validator().with_clock(clock.clone()), clock)
}

/// Bind a loopback listener first, so the issuer can be generated for its origin.
async fn listener() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = l.local_addr().expect("addr");
    (l, format!("http://{addr}"))
}

fn serve(l: tokio::net::TcpListener, router: axum::Router) {
    tokio::spawn(async move {
        axum::serve(l, router).await.expect("serve");
    });
}

/// A simulated Exchange serving its metadata, and settings that allow it.
async fn exchange_setup() -> (Arc<ExchangeIssuer>, TokenSettings) {
    let (l, origin) = listener().await;
    let issuer = Arc::new(ExchangeIssuer::generate(&origin).expect("issuer"));
    serve(l, exchange_identity::router(issuer.clone()));
    let host_port = origin.trim_start_matches("http://").to_owned();
    (issuer, exchange_settings(vec![host_port]))
}

fn exchange_settings(allow: Vec<String>) -> TokenSettings {
    TokenSettings {
        method: AuthMethod::ExchangeUserIdToken,
        audience: PANE.to_owned(),
        exchange_metadata: allow,
        metadata_cache_ttl: Duration::from_secs(3600),
        naa_api_application_id: None,
        naa_oidc_metadata_url: None,
        naa_allowed_tenants: Vec::new(),
        naa_required_scope: String::new(),
        naa_client_id: None,
    }
}

async fn entra_setup() -> (Arc<EntraIssuer>, TokenSettings) {
    let (l, origin) = listener().await;
    let issuer = Arc::new(EntraIssuer::generate(&origin, TENANT).expect("issuer"));
    serve(l, entra::router(issuer.clone()));
    let settings = TokenSettings {
        method: AuthMethod::NaaToken,
        audience: PANE.to_owned(),
        exchange_metadata: Vec::new(),
        metadata_cache_ttl: Duration::from_secs(3600),
        naa_api_application_id: Some(API_APP.to_owned()),
        naa_oidc_metadata_url: Some(issuer.oidc_metadata_url()),
        naa_allowed_tenants: vec![TENANT.to_owned()],
        naa_required_scope: "access_as_user".to_owned(),
        naa_client_id: Some(NAA_CLIENT.to_owned()),
    };
    (issuer, settings)
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn expect_err(result: Result<vmr_auth::Identity, TokenError>, code: &str) -> TokenError {
    match result {
        Ok(id) => panic!("expected {code}, got identity {id:?}"),
        Err(e) => {
            assert_eq!(e.code(), code, "unexpected error: {e}");
            e
        }
    }
}

// ---------------------------------------------------------------- Exchange: accepted

#[tokio::test]
async fn exchange_valid_appctx_string_numeric_times() {
    let (issuer, settings) = exchange_setup().await;
    let claims = IdentityClaims::new(PANE, "alice.smith@example.test");
    assert!(claims.appctx_as_string && !claims.times_as_strings);
    let id = validator()
        .validate(&settings, &issuer.identity_token(&claims))
        .await
        .expect("valid token");
    assert_eq!(
        id.user_id,
        format!("{}@{}", claims.msexchuid, issuer.metadata_url())
    );
    assert_eq!(id.email.as_deref(), Some("alice.smith@example.test"));
    assert_eq!(id.method, AuthMethod::ExchangeUserIdToken);
    assert_eq!(id.expires_at, claims.valid_until);
}

#[tokio::test]
async fn exchange_valid_appctx_object_string_times() {
    let (issuer, settings) = exchange_setup().await;
    let mut claims = IdentityClaims::new(PANE, "bob@example.test");
    claims.appctx_as_string = false;
    claims.times_as_strings = true;
    let id = validator()
        .validate(&settings, &issuer.identity_token(&claims))
        .await
        .expect("valid token");
    assert_eq!(id.expires_at, claims.valid_until);
    assert!(id.user_id.starts_with(&claims.msexchuid));
}

#[tokio::test]
async fn exchange_full_url_allow_list_entry() {
    let (issuer, mut settings) = exchange_setup().await;
    settings.exchange_metadata = vec![issuer.metadata_url()];
    let token = issuer.identity_token(&IdentityClaims::new(PANE, "carol@example.test"));
    validator()
        .validate(&settings, &token)
        .await
        .expect("exact URL allowed");
}

// ---------------------------------------------------------------- Exchange: refused

#[tokio::test]
async fn exchange_bad_signature_when_payload_altered() {
    let (issuer, settings) = exchange_setup().await;
    let token = issuer.identity_token(&IdentityClaims::new(PANE, "alice@example.test"));
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
    let forged_exp = payload["exp"].as_i64().expect("exp") + 86_400;
    payload["exp"] = json!(forged_exp);
    let forged = format!("{}.{}.{}", parts[0], b64(&payload), parts[2]);
    let e = expect_err(
        validator().validate(&settings, &forged).await,
        "token_bad_signature",
    );
    assert!(e.is_client_error());
}

#[tokio::test]
async fn exchange_wrong_audience() {
    let (issuer, settings) = exchange_setup().await;
    let other = "https://elsewhere.example.test/pane.html";
    let token = issuer.identity_token(&IdentityClaims::new(other, "alice@example.test"));
    let e = expect_err(
        validator().validate(&settings, &token).await,
        "token_wrong_audience",
    );
    let msg = e.to_string();
    assert!(msg.contains(PANE) && msg.contains(other), "{msg}");
}

#[tokio::test]
async fn exchange_expired_with_skew() {
    let (issuer, settings) = exchange_setup().await;
    let mut claims = IdentityClaims::new(PANE, "alice@example.test");
    claims.valid_from = now() - 8 * 3600;
    claims.valid_until = now() - 3600;
    let token = issuer.identity_token(&claims);
    let (v, clock) = validator_with_clock();
    let e = expect_err(v.validate(&settings, &token).await, "token_expired");
    assert!(e.to_string().contains("expired at"), "{e}");
    // Within the 5-minute skew it is still accepted; at the edge it is not.
    let exp = claims.valid_until;
    clock.set_unix(exp + CLOCK_SKEW_SECS - 1);
    v.validate(&settings, &token).await.expect("inside skew");
    clock.set_unix(exp + CLOCK_SKEW_SECS);
    expect_err(v.validate(&settings, &token).await, "token_expired");
}

#[tokio::test]
async fn exchange_not_yet_valid() {
    let (issuer, settings) = exchange_setup().await;
    let mut claims = IdentityClaims::new(PANE, "alice@example.test");
    claims.valid_from = now() + 3600;
    claims.valid_until = now() + 7200;
    claims.times_as_strings = true;
    let e = expect_err(
        validator()
            .validate(&settings, &issuer.identity_token(&claims))
            .await,
        "token_not_yet_valid",
    );
    assert!(e.to_string().contains("not valid before"), "{e}");
}

#[tokio::test]
async fn exchange_amurl_outside_allow_list_makes_no_request() {
    let (issuer, settings) = exchange_setup().await;
    // A listener that only counts connections: the forged amurl points at it.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let trap_addr = trap.local_addr().expect("addr");
    let amurl = format!("http://{trap_addr}/autodiscover/metadata/json/1");
    let mut claims = IdentityClaims::new(PANE, "mallory@example.test");
    claims.amurl_override = Some(amurl.clone());
    let e = expect_err(
        validator()
            .validate(&settings, &issuer.identity_token(&claims))
            .await,
        "metadata_url_not_allowed",
    );
    assert!(e.to_string().contains(&amurl), "{e}");
    assert!(e.is_client_error());
    // A connection made during validation would already sit in the accept
    // queue; polling accept once (no waiting) finds it.
    let pending = tokio::time::timeout(Duration::ZERO, trap.accept()).await;
    assert!(pending.is_err(), "no request may be made");
    assert_eq!(issuer.metadata_fetches(), 0);
}

#[tokio::test]
async fn exchange_http_amurl_refused_without_loopback_flag() {
    let (issuer, settings) = exchange_setup().await;
    let token = issuer.identity_token(&IdentityClaims::new(PANE, "alice@example.test"));
    let strict = TokenValidator::new(reqwest::Client::new());
    expect_err(
        strict.validate(&settings, &token).await,
        "metadata_url_insecure",
    );
    assert_eq!(issuer.metadata_fetches(), 0);
}

#[tokio::test]
async fn exchange_unknown_x5t_after_exactly_one_refetch() {
    let (issuer, settings) = exchange_setup().await;
    // Another key pair claiming the same Exchange (same origin, so same amurl).
    let impostor = ExchangeIssuer::generate(issuer.origin()).expect("impostor");
    assert_eq!(impostor.metadata_url(), issuer.metadata_url());
    let v = validator().with_min_refetch_interval(Duration::ZERO);
    let good = issuer.identity_token(&IdentityClaims::new(PANE, "alice@example.test"));
    v.validate(&settings, &good).await.expect("valid");
    assert_eq!(issuer.metadata_fetches(), 1);
    let bad = impostor.identity_token(&IdentityClaims::new(PANE, "alice@example.test"));
    let e = expect_err(
        v.validate(&settings, &bad).await,
        "token_unknown_signing_key",
    );
    assert!(
        e.to_string()
            .contains(&format!("unknown signing key x5t={}", impostor.x5t())),
        "{e}"
    );
    assert_eq!(issuer.metadata_fetches(), 2, "exactly one refetch");
}

#[tokio::test]
async fn exchange_unknown_x5t_refetch_is_rate_limited() {
    let (issuer, settings) = exchange_setup().await;
    let impostor = ExchangeIssuer::generate(issuer.origin()).expect("impostor");
    let v = validator(); // default minimum refetch interval (30 s)
    let good = issuer.identity_token(&IdentityClaims::new(PANE, "alice@example.test"));
    v.validate(&settings, &good).await.expect("valid");
    let bad = impostor.identity_token(&IdentityClaims::new(PANE, "alice@example.test"));
    for _ in 0..5 {
        expect_err(
            v.validate(&settings, &bad).await,
            "token_unknown_signing_key",
        );
    }
    assert_eq!(issuer.metadata_fetches(), 1, "no refetch within 30 s");
}

#[tokio::test]
async fn exchange_alg_none_refused_before_any_fetch() {
    let (issuer, settings) = exchange_setup().await;
    let claims = IdentityClaims::new(PANE, "alice@example.test");
    let header = json!({"typ": "JWT", "alg": "none", "x5t": issuer.x5t()});
    let token = format!(
        "{}.{}.",
        b64(&header),
        b64(&issuer.identity_payload(&claims))
    );
    expect_err(
        validator().validate(&settings, &token).await,
        "token_unsupported_algorithm",
    );
    // Even with an RSA signature attached, "none" stays refused.
    let signed = issuer.sign_raw(&header, &issuer.identity_payload(&claims));
    expect_err(
        validator().validate(&settings, &signed).await,
        "token_unsupported_algorithm",
    );
    assert_eq!(issuer.metadata_fetches(), 0);
}

#[tokio::test]
async fn exchange_hs256_with_public_key_as_secret_refused() {
    let (issuer, settings) = exchange_setup().await;
    let claims = IdentityClaims::new(PANE, "alice@example.test");
    let header = json!({"typ": "JWT", "alg": "HS256", "x5t": issuer.x5t()});
    let signing_input = format!(
        "{}.{}",
        b64(&header),
        b64(&issuer.identity_payload(&claims))
    );
    for secret in [
        issuer.public_key_pem().into_bytes(),
        issuer.public_key_pkcs1_der(),
        issuer.cert_der().to_vec(),
    ] {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&secret).expect("hmac key");
        mac.update(signing_input.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let token = format!("{signing_input}.{sig}");
        let e = expect_err(
            validator().validate(&settings, &token).await,
            "token_unsupported_algorithm",
        );
        assert!(e.to_string().contains("HS256"), "{e}");
    }
    // RS512 (a real RSA algorithm, just not the one Exchange uses) is refused too.
    let rs512 = json!({"typ": "JWT", "alg": "RS512", "x5t": issuer.x5t()});
    expect_err(
        validator()
            .validate(
                &settings,
                &issuer.sign_raw(&rs512, &issuer.identity_payload(&claims)),
            )
            .await,
        "token_unsupported_algorithm",
    );
    assert_eq!(issuer.metadata_fetches(), 0);
}

#[tokio::test]
async fn garbled_tokens() {
    let settings = exchange_settings(vec!["mail.example.test".to_owned()]);
    let v = validator();
    let header = json!({"typ": "JWT", "alg": "RS256", "x5t": "abc"});
    let payload = json!({"aud": PANE});
    let cases: Vec<(String, &str, &str)> = vec![
        (String::new(), "token_missing", "no token"),
        ("   ".to_owned(), "token_missing", "no token"),
        (
            "abc".to_owned(),
            "token_not_jwt",
            "expected 3 dot-separated parts",
        ),
        (
            "a.b.c.d".to_owned(),
            "token_not_jwt",
            "expected 3 dot-separated parts",
        ),
        (
            format!("!!!.{}.c2ln", b64(&payload)),
            "token_bad_base64",
            "header is not base64url",
        ),
        (
            format!("{}=.{}.c2ln", b64(&header), b64(&payload)),
            "token_bad_base64",
            "header is not base64url",
        ),
        (
            format!(
                "{}.{}.c2ln",
                URL_SAFE_NO_PAD.encode("{not json"),
                b64(&payload)
            ),
            "token_bad_json",
            "header is not JSON",
        ),
        (
            format!("{}.%%%.c2ln", b64(&header)),
            "token_bad_base64",
            "payload is not base64url",
        ),
        (
            format!("{}.{}.c2ln", b64(&header), URL_SAFE_NO_PAD.encode("[1,2]")),
            "token_bad_json",
            "payload is not JSON",
        ),
        (
            format!("{}.{}.$$$", b64(&header), b64(&payload)),
            "token_bad_base64",
            "signature is not base64url",
        ),
        ("x".repeat(20_000), "token_too_large", "more than"),
    ];
    for (token, code, text) in cases {
        let e = expect_err(v.validate(&settings, &token).await, code);
        assert!(e.to_string().contains(text), "{code}: {e}");
        assert!(e.is_client_error());
    }
}

#[tokio::test]
async fn exchange_wrong_appctx_version() {
    let (issuer, settings) = exchange_setup().await;
    let claims = IdentityClaims::new(PANE, "alice@example.test");
    let mut payload = issuer.identity_payload(&claims);
    let appctx = json!({
        "msexchuid": claims.msexchuid,
        "version": "ExIdTok.V2",
        "amurl": issuer.metadata_url(),
    });
    payload["appctx"] = Value::String(appctx.to_string());
    let token = issuer.sign_raw(&issuer.token_header(), &payload);
    let e = expect_err(
        validator().validate(&settings, &token).await,
        "token_wrong_version",
    );
    assert!(e.to_string().contains("ExIdTok.V2"), "{e}");
}

#[tokio::test]
async fn exchange_metadata_is_cached() {
    let (issuer, settings) = exchange_setup().await;
    let v = validator();
    for user in ["a@example.test", "b@example.test", "c@example.test"] {
        let token = issuer.identity_token(&IdentityClaims::new(PANE, user));
        v.validate(&settings, &token).await.expect("valid");
    }
    // Clones share the cache.
    let token = issuer.identity_token(&IdentityClaims::new(PANE, "d@example.test"));
    v.clone().validate(&settings, &token).await.expect("valid");
    assert_eq!(issuer.metadata_fetches(), 1);
    // A zero TTL means every validation fetches again.
    let mut no_cache = settings.clone();
    no_cache.metadata_cache_ttl = Duration::ZERO;
    v.validate(&no_cache, &token).await.expect("valid");
    v.validate(&no_cache, &token).await.expect("valid");
    assert_eq!(issuer.metadata_fetches(), 3);
}

#[tokio::test]
async fn exchange_metadata_unreachable_or_invalid_is_server_side() {
    // Unreachable: a port that was bound and released again.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let issuer = ExchangeIssuer::generate(&format!("http://{addr}")).expect("issuer");
    let settings = exchange_settings(vec![addr.to_string()]);
    let token = issuer.identity_token(&IdentityClaims::new(PANE, "alice@example.test"));
    let e = expect_err(
        validator().validate(&settings, &token).await,
        "metadata_fetch_failed",
    );
    assert!(!e.is_client_error());

    // Reachable but not JSON.
    let (l, origin) = listener().await;
    serve(
        l,
        axum::Router::new().route(
            exchange_identity::METADATA_PATH,
            axum::routing::get(|| async { "<html>login</html>" }),
        ),
    );
    let issuer = ExchangeIssuer::generate(&origin).expect("issuer");
    let settings = exchange_settings(vec![origin.trim_start_matches("http://").to_owned()]);
    let token = issuer.identity_token(&IdentityClaims::new(PANE, "alice@example.test"));
    let e = expect_err(
        validator().validate(&settings, &token).await,
        "metadata_invalid",
    );
    assert!(!e.is_client_error());
}

#[tokio::test]
async fn token_of_the_other_kind_is_refused() {
    let (ex, ex_settings) = exchange_setup().await;
    let (en, en_settings) = entra_setup().await;
    let naa = en.access_token(&NaaClaims::new(
        format!("api://{API_APP}"),
        "alice@example.test",
    ));
    let e = expect_err(
        validator().validate(&ex_settings, &naa).await,
        "token_wrong_kind",
    );
    assert!(e.to_string().contains("Exchange identity token"), "{e}");
    let exch = ex.identity_token(&IdentityClaims::new(PANE, "alice@example.test"));
    expect_err(
        validator().validate(&en_settings, &exch).await,
        "token_wrong_kind",
    );
    assert_eq!(ex.metadata_fetches(), 0);
    assert_eq!(en.jwks_fetches(), 0);
}

// ---------------------------------------------------------------- NAA

#[tokio::test]
async fn naa_valid_token_uri_and_bare_audience() {
    let (issuer, settings) = entra_setup().await;
    let v = validator();
    let claims = NaaClaims::new(format!("api://{API_APP}"), "dora.explorer@example.test");
    let id = v
        .validate(&settings, &issuer.access_token(&claims))
        .await
        .expect("valid");
    assert_eq!(id.user_id, format!("{TENANT}/{}", claims.oid));
    assert_eq!(id.email.as_deref(), Some("dora.explorer@example.test"));
    assert_eq!(id.display_name.as_deref(), Some("Dora Explorer"));
    assert_eq!(id.method, AuthMethod::NaaToken);
    assert_eq!(id.expires_at, claims.valid_until);
    let bare = NaaClaims::new(API_APP, "dora.explorer@example.test");
    v.validate(&settings, &issuer.access_token(&bare))
        .await
        .expect("bare GUID audience");
    assert_eq!(issuer.jwks_fetches(), 1, "JWKS cached");
}

#[tokio::test]
async fn naa_wrong_tenant() {
    let (issuer, settings) = entra_setup().await;
    let mut claims = NaaClaims::new(API_APP, "eve@example.test");
    claims.tid_override = Some("99999999-0000-4000-8000-000000000000".to_owned());
    let e = expect_err(
        validator()
            .validate(&settings, &issuer.access_token(&claims))
            .await,
        "token_tenant_not_allowed",
    );
    assert!(e.to_string().contains("99999999"), "{e}");
    assert_eq!(issuer.jwks_fetches(), 0);
}

#[tokio::test]
async fn naa_missing_scope() {
    let (issuer, settings) = entra_setup().await;
    let mut claims = NaaClaims::new(API_APP, "alice@example.test");
    claims.scp = "User.Read access_as_user_not".to_owned();
    let e = expect_err(
        validator()
            .validate(&settings, &issuer.access_token(&claims))
            .await,
        "token_missing_scope",
    );
    assert!(e.to_string().contains("access_as_user"), "{e}");
}

#[tokio::test]
async fn naa_wrong_audience() {
    let (issuer, settings) = entra_setup().await;
    let claims = NaaClaims::new(
        "api://00000003-0000-0000-c000-000000000000",
        "a@example.test",
    );
    let e = expect_err(
        validator()
            .validate(&settings, &issuer.access_token(&claims))
            .await,
        "token_wrong_audience",
    );
    assert!(e.to_string().contains(API_APP), "{e}");
}

#[tokio::test]
async fn naa_wrong_issuer() {
    let (issuer, settings) = entra_setup().await;
    let mut claims = NaaClaims::new(API_APP, "a@example.test");
    claims.iss_override = Some(format!("https://sts.windows.net/{TENANT}/"));
    expect_err(
        validator()
            .validate(&settings, &issuer.access_token(&claims))
            .await,
        "token_wrong_issuer",
    );
}

#[tokio::test]
async fn naa_expired() {
    let (issuer, settings) = entra_setup().await;
    let mut claims = NaaClaims::new(API_APP, "a@example.test");
    claims.valid_from = now() - 7200;
    claims.valid_until = now() - 3600;
    expect_err(
        validator()
            .validate(&settings, &issuer.access_token(&claims))
            .await,
        "token_expired",
    );
}

#[tokio::test]
async fn naa_unknown_kid_after_exactly_one_refetch() {
    let (issuer, settings) = entra_setup().await;
    let v = validator().with_min_refetch_interval(Duration::ZERO);
    let claims = NaaClaims::new(API_APP, "a@example.test");
    v.validate(&settings, &issuer.access_token(&claims))
        .await
        .expect("valid");
    assert_eq!(issuer.jwks_fetches(), 1);
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": "rotated-key-id"});
    let token = issuer.sign_raw(&header, &issuer.access_payload(&claims));
    let e = expect_err(
        v.validate(&settings, &token).await,
        "token_unknown_signing_key",
    );
    assert!(e.to_string().contains("kid=rotated-key-id"), "{e}");
    assert_eq!(issuer.jwks_fetches(), 2, "exactly one refetch");
}

#[tokio::test]
async fn naa_signed_by_another_tenant_key_fails_signature() {
    let (issuer, settings) = entra_setup().await;
    let other = EntraIssuer::generate(&issuer.issuer(), TENANT).expect("other");
    // Same kid as the real key, but signed with another private key.
    let claims = NaaClaims::new(API_APP, "a@example.test");
    let token = other.sign_raw(&issuer.token_header(), &issuer.access_payload(&claims));
    expect_err(
        validator().validate(&settings, &token).await,
        "token_bad_signature",
    );
}

#[tokio::test]
async fn naa_not_configured_is_server_side() {
    let (issuer, mut settings) = entra_setup().await;
    settings.naa_api_application_id = None;
    let token = issuer.access_token(&NaaClaims::new(API_APP, "a@example.test"));
    let e = expect_err(
        validator().validate(&settings, &token).await,
        "token_validation_not_configured",
    );
    assert!(!e.is_client_error());
}

#[tokio::test]
async fn remembered_tokens_stay_bound_to_their_settings_and_lifetime() {
    let (issuer, settings) = exchange_setup().await;
    let claims = IdentityClaims::new(PANE, "alice@example.test");
    let token = issuer.identity_token(&claims);
    let (v, clock) = validator_with_clock();
    v.validate(&settings, &token).await.expect("valid");
    assert_eq!(issuer.metadata_fetches(), 1);
    // Remembered as valid for this audience only.
    let mut other = settings.clone();
    other.audience = "https://other.example.test/pane".into();
    expect_err(v.validate(&other, &token).await, "token_wrong_audience");
    // ... and for this allow-list only: with the issuer's host removed from it,
    // the remembered result is not used.
    let mut narrowed = settings.clone();
    narrowed.exchange_metadata = vec!["mail.elsewhere.test".into()];
    expect_err(
        v.validate(&narrowed, &token).await,
        "metadata_url_not_allowed",
    );
    // Within the metadata TTL the remembered result answers: nothing fetched.
    clock.advance(Duration::from_secs(1800));
    v.validate(&settings, &token).await.expect("remembered");
    assert_eq!(issuer.metadata_fetches(), 1);
    // Past the metadata cache lifetime it is checked again in full (the
    // metadata is fetched again).
    clock.advance(Duration::from_secs(1801));
    v.validate(&settings, &token).await.expect("valid again");
    assert_eq!(issuer.metadata_fetches(), 2);
    // And never past its own expiry.
    clock.set_unix(claims.valid_until + CLOCK_SKEW_SECS);
    expect_err(v.validate(&settings, &token).await, "token_expired");
}

// ------------------------------------------------- forged metadata URLs (amplification)

/// 10,000 forged tokens, each with a differently spelt `amurl` on the allowed
/// host (query, fragment, other paths, ports, case): at most one outbound fetch
/// of the one allowed metadata URL, a bounded cache, and every accepted spelling
/// names the same requester.
#[tokio::test]
async fn forged_amurls_cause_at_most_one_fetch_and_no_new_requesters() {
    let (issuer, settings) = exchange_setup().await;
    let (v, clock) = validator_with_clock();
    let origin = issuer.metadata_url();
    let base = origin
        .trim_end_matches("/autodiscover/metadata/json/1")
        .to_owned();
    // A forged signature is enough: the amplification happened before any
    // signature check.
    let forged = |amurl: String| {
        let mut claims = IdentityClaims::new(PANE, "mallory@example.test");
        claims.amurl_override = Some(amurl);
        let token = issuer.identity_token(&claims);
        let (signed, _) = token.rsplit_once('.').expect("jwt");
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode([7u8; 256]))
    };
    for n in 0..10_000u32 {
        let amurl = match n % 5 {
            0 => format!("{origin}?r={n}"),
            1 => format!("{origin}#{n}"),
            2 => format!("{base}/autodiscover/metadata/json/{n}"),
            3 => format!("{base}/AutoDiscover/Metadata/JSON/1/../1?{n}"),
            _ => format!("http://u{n}@{}", origin.trim_start_matches("http://")),
        };
        let _ = v.validate(&settings, &forged(amurl)).await;
        if n % 1000 == 999 {
            clock.advance(Duration::from_millis(100));
        }
    }
    assert!(
        issuer.metadata_fetches() <= 1,
        "{} fetches for forged amurls",
        issuer.metadata_fetches()
    );
    assert!(v.cached_exchange_metadata() <= 1, "one cache slot at most");

    // Real tokens with differently spelt (but allowed) amurls: one requester id.
    let mut ids = std::collections::BTreeSet::new();
    for amurl in [
        origin.clone(),
        origin.replace(
            "/autodiscover/metadata/json/1",
            "/AUTODISCOVER/metadata/json/1",
        ),
    ] {
        let mut claims = IdentityClaims::new(PANE, "alice@example.test");
        claims.amurl_override = Some(amurl);
        let id = v
            .validate(&settings, &issuer.identity_token(&claims))
            .await
            .expect("valid");
        ids.insert(id.user_id);
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(
        ids.iter().all(|id| id.ends_with(&origin)),
        "the requester names the canonical metadata URL: {ids:?}"
    );
    assert!(issuer.metadata_fetches() <= 1);
}

#[tokio::test]
async fn failed_metadata_fetches_are_remembered_with_backoff() {
    // A metadata host that answers 500: every validation would fetch again
    // without the back-off.
    let (l, origin) = listener().await;
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    serve(
        l,
        axum::Router::new().fallback(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "down")
            }
        }),
    );
    let (issuer, _) = exchange_setup().await;
    let settings = exchange_settings(vec![origin.trim_start_matches("http://").to_owned()]);
    let (v, clock) = validator_with_clock();
    let mut claims = IdentityClaims::new(PANE, "alice@example.test");
    claims.amurl_override = Some(format!("{origin}/autodiscover/metadata/json/1"));
    let token = issuer.identity_token(&claims);
    for _ in 0..50 {
        expect_err(v.validate(&settings, &token).await, "metadata_fetch_failed");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    clock.advance(Duration::from_secs(31));
    expect_err(v.validate(&settings, &token).await, "metadata_fetch_failed");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn exchange_wrong_issuer() {
    let (issuer, settings) = exchange_setup().await;
    let claims = IdentityClaims::new(PANE, "alice@example.test");
    let mut payload = issuer.identity_payload(&claims);
    payload["iss"] = json!("11111111-2222-3333-4444-555555555555@mail.example.test");
    let token = issuer.sign_raw(&issuer.token_header(), &payload);
    let e = expect_err(
        validator().validate(&settings, &token).await,
        "token_wrong_issuer",
    );
    assert!(e.to_string().contains("00000002-0000-0ff1-ce00"), "{e}");
}

#[tokio::test]
async fn naa_token_for_another_client_or_without_scp_is_refused() {
    let (issuer, settings) = entra_setup().await;
    let mut claims = NaaClaims::new(API_APP, "a@example.test");
    claims.azp = "99999999-0000-0000-0000-000000000000".into();
    expect_err(
        validator()
            .validate(&settings, &issuer.access_token(&claims))
            .await,
        "token_wrong_client",
    );
    // An app-only token (roles, no scp) is not a user asking for a room.
    let claims = NaaClaims::new(API_APP, "a@example.test");
    let (_, payload, _) = {
        let token = issuer.access_token(&claims);
        let mut parts = token.split('.').map(str::to_owned).collect::<Vec<_>>();
        (parts.remove(0), parts.remove(0), parts.remove(0))
    };
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json");
    payload.as_object_mut().expect("object").remove("scp");
    payload["roles"] = json!(["Calendars.ReadWrite"]);
    let token = issuer.sign_raw(&issuer.token_header(), &payload);
    let e = expect_err(
        validator().validate(&settings, &token).await,
        "token_missing_claim",
    );
    assert!(e.to_string().contains("scp"), "{e}");
    // An integration without a required scope is a configuration error.
    let mut no_scope = settings.clone();
    no_scope.naa_required_scope = String::new();
    let e = expect_err(
        validator()
            .validate(&no_scope, &issuer.access_token(&claims))
            .await,
        "token_validation_not_configured",
    );
    assert!(!e.is_client_error());
}
