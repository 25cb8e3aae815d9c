//! Single sign-on to the admin page (`[admin.oidc]`) against the simulated Entra ID, over
//! real HTTPS on loopback: the authorization code flow with PKCE from the sign-in button to
//! the overview, and every way it must fail — a user or group not allowed, the provider's own
//! refusal, a replayed callback, a callback without (or with another) sign-in cookie, a
//! nonce that is not this sign-in's, a PKCE verifier that does not match, a wrong client
//! secret.

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use vmr_core::config::{AdminOidcConfig, Role};
use vmr_core::secret::Secret;
use vmr_server::admin_page::{OIDC_COOKIE, SESSION_COOKIE};
use vmr_simulator::RunningSimulator;

use crate::in_process;

const CLIENT_ID: &str = "5b1f3c9e-0d6a-4e1b-9f7e-admin0000001";
const CLIENT_SECRET: &str = "oidc-test-client-secret";
const ADMINS_GROUP: &str = "6f2a0c4e-admins";

struct Harness {
    sim: RunningSimulator,
    origin: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    _server: in_process::Running,
}

async fn start(client_secret: &str) -> Harness {
    let (sim, dir, cert) = in_process::simulator().await;
    let mut config = in_process::config(
        Role::All,
        &format!("sqlite://{}", dir.path().join("vmr.db").display()),
    );
    config.http_client.extra_ca_files = vec![cert];
    config.admin.oidc = Some(AdminOidcConfig {
        issuer: sim.simulator.entra.issuer(),
        client_id: CLIENT_ID.into(),
        client_secret: Some(Secret::new(client_secret)),
        allowed_users: vec!["Alice@Contoso.com".into()],
        allowed_groups: vec![ADMINS_GROUP.into()],
        button_label: Some("Sign in with Contoso".into()),
        ..AdminOidcConfig::default()
    });
    sim.simulator.entra.register_client(
        CLIENT_ID,
        CLIENT_SECRET,
        &format!("https://{}/admin/oidc/callback", config.server.public_host),
    );
    let server = in_process::start(config).await;
    Harness {
        sim,
        origin: server.origin.clone(),
        http: in_process::client(false),
        _dir: dir,
        _server: server,
    }
}

/// The full `Set-Cookie` line `response` sends for `name`.
fn set_cookie_line(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn cookie_value(line: &str) -> String {
    line.split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_owned())
        .unwrap_or_default()
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .expect("a Location")
        .to_owned()
}

/// A sign-in up to the provider's answer: the callback URL and the sign-in cookie.
async fn to_callback(h: &Harness) -> (String, String) {
    let start = h
        .http
        .get(format!("{}/admin/oidc/start", h.origin))
        .send()
        .await
        .expect("start");
    assert_eq!(start.status(), StatusCode::SEE_OTHER);
    let line = set_cookie_line(&start, OIDC_COOKIE).expect("sign-in cookie");
    assert!(
        line.contains("SameSite=Lax") && line.contains("HttpOnly") && line.contains("Secure"),
        "{line}"
    );
    let authorize = location(&start);
    assert!(
        authorize.starts_with(&format!(
            "{}/oauth2/v2.0/authorize?",
            h.sim.simulator.entra.issuer().trim_end_matches("/v2.0")
        )),
        "{authorize}"
    );
    for part in [
        "response_type=code",
        "code_challenge_method=S256",
        &format!("client_id={CLIENT_ID}"),
    ] {
        assert!(authorize.contains(part), "{part} missing in {authorize}");
    }
    let answer = h.http.get(&authorize).send().await.expect("authorize");
    assert_eq!(
        answer.status(),
        StatusCode::SEE_OTHER,
        "{:?}",
        answer.text().await
    );
    let callback = location(&answer);
    assert!(
        callback.starts_with(&format!("{}/admin/oidc/callback?", h.origin)),
        "{callback}"
    );
    (callback, cookie_value(&line))
}

/// The callback with `cookie`: status, body and the session cookie if one was set.
async fn callback(
    h: &Harness,
    url: &str,
    cookie: Option<&str>,
) -> (StatusCode, String, Option<String>) {
    let mut request = h.http.get(url);
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, format!("{OIDC_COOKIE}={cookie}"));
    }
    let response = request.send().await.expect("callback");
    let status = response.status();
    let session = set_cookie_line(&response, SESSION_COOKIE)
        .map(|l| cookie_value(&l))
        .filter(|v| !v.is_empty());
    (status, response.text().await.expect("body"), session)
}

async fn overview_as(h: &Harness, session: &str) -> String {
    let r = h
        .http
        .get(format!("{}/admin/", h.origin))
        .header(COOKIE, format!("{SESSION_COOKIE}={session}"))
        .send()
        .await
        .expect("overview");
    assert_eq!(r.status(), StatusCode::OK);
    r.text().await.expect("html")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_sign_on_signs_in_allowed_users_and_groups_only() {
    let h = start(CLIENT_SECRET).await;
    let entra = &h.sim.simulator.entra;
    let login = h
        .http
        .get(format!("{}/admin/login", h.origin))
        .send()
        .await
        .expect("login page")
        .text()
        .await
        .expect("html");
    assert!(
        login.contains("href=\"/admin/oidc/start\"") && login.contains("Sign in with Contoso"),
        "{login}"
    );

    // Alice, listed by name (in another letter case).
    entra.sign_in_as(Some(("alice@contoso.com", &[])));
    let (url, cookie) = to_callback(&h).await;
    let (status, body, session) = callback(&h, &url, Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.contains("Signed in as alice@contoso.com")
            && body.contains("http-equiv=\"refresh\" content=\"0;url=/admin/\""),
        "{body}"
    );
    let session = session.expect("a session");
    assert!(overview_as(&h, &session)
        .await
        .contains("Signed in as alice@contoso.com"));

    // The same callback again: the code was redeemed.
    let (status, body, session) = callback(&h, &url, Some(&cookie)).await;
    assert_eq!((status, session), (StatusCode::FORBIDDEN, None));
    assert!(body.contains("AADSTS70008"), "{body}");

    // Bob, by group.
    entra.sign_in_as(Some(("bob@contoso.com", &[ADMINS_GROUP])));
    let (url, cookie) = to_callback(&h).await;
    let (status, body, session) = callback(&h, &url, Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(overview_as(&h, &session.expect("session"))
        .await
        .contains("Signed in as bob@contoso.com"));

    // Mallory: a valid user of the tenant, neither listed nor in the group.
    entra.sign_in_as(Some(("mallory@contoso.com", &["6f2a0c4e-others"])));
    let (url, cookie) = to_callback(&h).await;
    let (status, body, session) = callback(&h, &url, Some(&cookie)).await;
    assert_eq!((status, session), (StatusCode::FORBIDDEN, None));
    assert!(
        body.contains("mallory@contoso.com may not administer this server"),
        "{body}"
    );

    // Carol is in the admins group, but also in 250 others: Entra leaves her groups out.
    let many: Vec<String> = (0..250).map(|i| format!("group-{i}")).collect();
    let mut carol_groups: Vec<&str> = many.iter().map(String::as_str).collect();
    carol_groups.push(ADMINS_GROUP);
    entra.sign_in_as(Some(("carol@contoso.com", &carol_groups)));
    let (url, cookie) = to_callback(&h).await;
    let (status, body, session) = callback(&h, &url, Some(&cookie)).await;
    assert_eq!((status, session), (StatusCode::FORBIDDEN, None));
    assert!(
        body.contains(
            "carol@contoso.com is not in admin.oidc.allowed_users, and the provider left"
        ),
        "{body}"
    );

    // Nobody signed in at the provider: its own refusal is shown.
    entra.sign_in_as(None);
    let (url, cookie) = to_callback(&h).await;
    let (status, body, session) = callback(&h, &url, Some(&cookie)).await;
    assert_eq!((status, session), (StatusCode::FORBIDDEN, None));
    assert!(
        body.contains("login_required") && body.contains("AADSTS50058"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_that_is_not_this_browsers_sign_in_is_refused() {
    let h = start(CLIENT_SECRET).await;
    h.sim
        .simulator
        .entra
        .sign_in_as(Some(("alice@contoso.com", &[])));
    let expired = "the sign-in expired or was started elsewhere";

    // No sign-in cookie (another browser, or a forged link).
    let (url, _) = to_callback(&h).await;
    let (status, body, session) = callback(&h, &url, None).await;
    assert_eq!((status, session), (StatusCode::FORBIDDEN, None));
    assert!(body.contains(expired), "{body}");

    // The cookie of another sign-in: its state differs.
    let (url, _) = to_callback(&h).await;
    let (_, other) = to_callback(&h).await;
    let (status, body, session) = callback(&h, &url, Some(&other)).await;
    assert_eq!((status, session), (StatusCode::FORBIDDEN, None));
    assert!(body.contains(expired), "{body}");

    // The right state with another nonce: the ID token's nonce is not this sign-in's.
    let (url, cookie) = to_callback(&h).await;
    let parts: Vec<&str> = cookie.split('.').collect();
    let other_nonce = format!("{}.{}.{}", parts[0], "bm90LXRoaXMtbm9uY2U", parts[2]);
    let (status, body, session) = callback(&h, &url, Some(&other_nonce)).await;
    assert_eq!((status, session), (StatusCode::FORBIDDEN, None));
    assert!(body.contains("nonce"), "{body}");

    // The right state with another PKCE verifier: the provider refuses the code.
    let (url, cookie) = to_callback(&h).await;
    let parts: Vec<&str> = cookie.split('.').collect();
    let other_verifier = format!("{}.{}.{}", parts[0], parts[1], "A".repeat(43));
    let (status, body, session) = callback(&h, &url, Some(&other_verifier)).await;
    assert_eq!((status, session), (StatusCode::FORBIDDEN, None));
    assert!(body.contains("AADSTS501481"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_client_secret_is_reported_not_signed_in() {
    let h = start("not-the-registered-secret").await;
    h.sim
        .simulator
        .entra
        .sign_in_as(Some(("alice@contoso.com", &[])));
    let (url, cookie) = to_callback(&h).await;
    let (status, body, session) = callback(&h, &url, Some(&cookie)).await;
    assert_eq!((status, session), (StatusCode::FORBIDDEN, None));
    assert!(
        body.contains("invalid_client") && body.contains("AADSTS7000215"),
        "{body}"
    );
}
