//! Admin page sessions across management instances: two servers (in-process, HTTPS on
//! loopback) on one database. A sign-in on one is honoured by the other (as behind a load
//! balancer without affinity, or after a restart), a sign-out on either ends it everywhere,
//! and the database keeps only the SHA-256 of the session id.
//!
//! Runs on SQLite always and on PostgreSQL from `VMR_TEST_POSTGRES_URL`.

use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use vmr_core::config::{AdminTokenConfig, Role};
use vmr_server::admin_page::{LOGIN_COOKIE, SESSION_COOKIE};

use crate::common;
use crate::in_process;
use common::TestDb;

const ALICE_TOKEN: &str = "admin-sessions-test-alice-token";

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// One management server on `db`.
async fn start(db: &TestDb) -> in_process::Running {
    let mut config = in_process::config(Role::All, &db.url);
    config.admin.tokens = vec![AdminTokenConfig {
        label: "alice".into(),
        sha256: sha256_hex(ALICE_TOKEN),
    }];
    in_process::start(config).await
}

/// The value `response` sets for cookie `name`.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}="))?.split(';').next())
        .map(str::to_owned)
}

/// The value of the hidden input `name` in `html`.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..]
        .split('"')
        .next()
        .expect("closing quote")
        .to_owned()
}

/// Signs in on `origin` with the admin token; the session id.
async fn sign_in(http: &reqwest::Client, origin: &str) -> String {
    let form = http
        .get(format!("{origin}/admin/login"))
        .send()
        .await
        .expect("login form");
    let login_csrf = set_cookie(&form, LOGIN_COOKIE).expect("login cookie");
    let html = form.text().await.expect("form html");
    assert_eq!(hidden(&html, "login_csrf"), login_csrf);
    let signed = http
        .post(format!("{origin}/admin/login"))
        .header(COOKIE, format!("{LOGIN_COOKIE}={login_csrf}"))
        .header(ORIGIN, origin)
        .form(&[("token", ALICE_TOKEN), ("login_csrf", &login_csrf)])
        .send()
        .await
        .expect("sign in");
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    set_cookie(&signed, SESSION_COOKIE).expect("session cookie")
}

/// `GET /admin/` with the session: the overview's HTML, or `None` when sent to sign in.
async fn overview(http: &reqwest::Client, origin: &str, session: &str) -> Option<String> {
    let r = http
        .get(format!("{origin}/admin/"))
        .header(COOKIE, format!("{SESSION_COOKIE}={session}"))
        .send()
        .await
        .expect("overview");
    if r.status() == StatusCode::SEE_OTHER {
        assert_eq!(
            r.headers().get(LOCATION).and_then(|v| v.to_str().ok()),
            Some("/admin/login")
        );
        return None;
    }
    assert_eq!(r.status(), StatusCode::OK);
    Some(r.text().await.expect("overview html"))
}

async fn a_session_is_shared_by_every_instance_and_stored_hashed(db: &TestDb) {
    let server_a = start(db).await;
    let server_b = start(db).await;
    let (a, b) = (server_a.origin.clone(), server_b.origin.clone());
    let http = in_process::client(false);
    let session = sign_in(&http, &a).await;

    // B never saw the sign-in, and honours it.
    let html = overview(&http, &b, &session)
        .await
        .expect("B signs the session in");
    assert!(html.contains("alice"), "{html}");
    assert!(overview(&http, &a, &session).await.is_some());
    assert!(overview(&http, &b, "not-a-session").await.is_none());

    // The database keeps the hash, never the id.
    let raw = db.raw().await;
    let stored: Vec<String> = sqlx::query_scalar("SELECT id_sha256 FROM admin_session")
        .fetch_all(&raw)
        .await
        .expect("sessions");
    assert_eq!(stored, [sha256_hex(&session)]);

    // Signed out on B: A sends the same cookie to sign in.
    let logout = http
        .post(format!("{b}/admin/logout"))
        .header(COOKIE, format!("{SESSION_COOKIE}={session}"))
        .header(ORIGIN, b.as_str())
        .form(&[("csrf", hidden(&html, "csrf"))])
        .send()
        .await
        .expect("sign out");
    assert_eq!(logout.status(), StatusCode::SEE_OTHER);
    assert!(overview(&http, &a, &session).await.is_none());
    assert!(overview(&http, &b, &session).await.is_none());

    // A restarted instance keeps a session made before its restart.
    let session = sign_in(&http, &a).await;
    drop(server_a);
    let restarted = start(db).await;
    assert!(overview(&http, &restarted.origin, &session).await.is_some());
}

on_both_engines!(a_session_is_shared_by_every_instance_and_stored_hashed);
