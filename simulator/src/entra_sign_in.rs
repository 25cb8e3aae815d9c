//! Simulated Entra ID sign-in for web applications: the OAuth 2.0 authorization code flow with
//! PKCE, as login.microsoftonline.com runs it for an app that signs users in with OpenID
//! Connect (the admin page's single sign-on).
//!
//! - `GET /{tenant}/oauth2/v2.0/authorize`: for a registered client and one of its redirect
//!   URIs, sends the browser back with `code` and `state` — as the user the test has signed
//!   in at "Entra" ([`EntraIssuer::sign_in_as`]; the simulator shows no password form). At
//!   once by a redirect, or, with [`EntraIssuer::show_account_picker`], from a "Pick an
//!   account" page whose link the user follows: then the way back is a navigation the
//!   provider's site starts, cross-site for the application as with the real Entra. A request
//!   Entra cannot redirect (unknown client, unregistered redirect URI) gets an error page;
//!   other faults are redirected as `error` and `error_description` (AADSTS codes).
//! - `POST /{tenant}/oauth2/v2.0/token`, `grant_type=authorization_code`: the client
//!   authenticates with its secret (`client_secret_post` or HTTP Basic), the code is used once
//!   within 10 minutes, the redirect URI must match, and the PKCE verifier must hash to the
//!   challenge (S256). The answer carries an RS256 `id_token` with `aud` = client id, the
//!   request's `nonce`, `preferred_username`, `email`, `name`, `oid`, `tid` and `groups` —
//!   past 200 groups none, and the overage marker `_claim_names` instead, as Entra does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::entra::EntraIssuer;
use crate::jwt::unix_now;
use crate::outlook::escape_html;

/// How long an authorization code may be redeemed (Entra: about 10 minutes).
const CODE_SECONDS: i64 = 600;
/// Most groups Entra puts in an ID token (JWT); beyond, none and an overage marker.
const GROUPS_IN_TOKEN: usize = 200;

/// A web application registered in the tenant.
#[derive(Debug, Clone)]
struct Client {
    secret: String,
    redirect_uris: Vec<String>,
}

/// The user signed in at "Entra" in the browser.
#[derive(Debug, Clone)]
struct User {
    email: String,
    groups: Vec<String>,
}

/// A code handed out and not yet redeemed.
#[derive(Debug, Clone)]
struct PendingCode {
    client_id: String,
    redirect_uri: String,
    nonce: Option<String>,
    challenge: String,
    user: User,
    expires_at: i64,
}

/// Registered clients, the signed-in user and the codes in flight.
#[derive(Debug, Default)]
pub struct SignInState {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    clients: HashMap<String, Client>,
    user: Option<User>,
    codes: HashMap<String, PendingCode>,
    token_requests: usize,
    account_picker: bool,
}

impl SignInState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl EntraIssuer {
    /// Registers a web application that signs users in (`client_id`, its secret, a redirect
    /// URI); registering it again adds the redirect URI and replaces the secret.
    pub fn register_client(&self, client_id: &str, secret: &str, redirect_uri: &str) {
        let mut inner = self.sign_in.lock();
        let client = inner
            .clients
            .entry(client_id.to_owned())
            .or_insert_with(|| Client {
                secret: String::new(),
                redirect_uris: Vec::new(),
            });
        client.secret = secret.to_owned();
        client.redirect_uris.push(redirect_uri.to_owned());
    }

    /// The user whom the authorize endpoint signs in from now on (as if they had entered
    /// their password), with these group object ids; `None`: nobody is signed in.
    pub fn sign_in_as(&self, user: Option<(&str, &[&str])>) {
        self.sign_in.lock().user = user.map(|(email, groups)| User {
            email: email.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        });
    }

    /// Whether the authorize endpoint shows a "Pick an account" page (a link back to the
    /// application) instead of redirecting at once.
    pub fn show_account_picker(&self, show: bool) {
        self.sign_in.lock().account_picker = show;
    }

    /// How many token requests the token endpoint has answered (or refused).
    pub fn token_requests(&self) -> usize {
        self.sign_in.lock().token_requests
    }
}

/// The authorize and token endpoints (merged into [`crate::entra::router`]).
pub fn router(issuer: Arc<EntraIssuer>) -> Router {
    Router::new()
        .route("/{tenant}/oauth2/v2.0/authorize", get(authorize))
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .with_state(issuer)
}

/// A page Entra shows when it cannot send the browser back.
fn error_page(message: &str) -> Response {
    html_page(
        StatusCode::BAD_REQUEST,
        format!(
            "<!doctype html><title>Sign in</title><p>Sorry, but we're having trouble signing you in.</p><p>{}</p>",
            escape_html(message)
        ),
    )
}

fn html_page(status: StatusCode, html: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}

/// `redirect_uri` with `pairs` and the request's `state` added to its query; `None` when
/// it is not a URL.
fn back_to(redirect_uri: &str, pairs: &[(&str, &str)], state: Option<&String>) -> Option<String> {
    let mut url = url::Url::parse(redirect_uri).ok()?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
        if let Some(state) = state {
            q.append_pair("state", state);
        }
    }
    Some(url.into())
}

/// `redirect_uri?error=…&error_description=…&state=…`.
fn redirect_error(
    redirect_uri: &str,
    state: Option<&String>,
    error: &str,
    description: &str,
) -> Response {
    match back_to(
        redirect_uri,
        &[("error", error), ("error_description", description)],
        state,
    ) {
        Some(url) => Redirect::to(&url).into_response(),
        None => error_page(description),
    }
}

async fn authorize(
    State(issuer): State<Arc<EntraIssuer>>,
    Path(tenant): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if tenant != issuer.tenant_id() {
        return error_page(&format!("AADSTS90002: Tenant '{tenant}' not found."));
    }
    let client_id = q.get("client_id").cloned().unwrap_or_default();
    let redirect_uri = q.get("redirect_uri").cloned().unwrap_or_default();
    let mut inner = issuer.sign_in.lock();
    let Some(client) = inner.clients.get(&client_id) else {
        return error_page(&format!(
            "AADSTS700016: Application with identifier '{client_id}' was not found in the directory."
        ));
    };
    if !client.redirect_uris.contains(&redirect_uri) {
        return error_page(&format!(
            "AADSTS50011: The redirect URI '{redirect_uri}' specified in the request does not match the redirect URIs configured for the application '{client_id}'."
        ));
    }
    let state = q.get("state");
    if q.get("response_type").map(String::as_str) != Some("code") {
        return redirect_error(
            &redirect_uri,
            state,
            "unsupported_response_type",
            "AADSTS700054: response_type 'code' is expected.",
        );
    }
    let scopes: Vec<&str> = q
        .get("scope")
        .map(|s| s.split(' ').collect())
        .unwrap_or_default();
    if !scopes.contains(&"openid") {
        return redirect_error(
            &redirect_uri,
            state,
            "invalid_request",
            "AADSTS900144: The request body must contain the scope 'openid' for sign-in.",
        );
    }
    let challenge = q.get("code_challenge").cloned().unwrap_or_default();
    if challenge.is_empty() || q.get("code_challenge_method").map(String::as_str) != Some("S256") {
        return redirect_error(
            &redirect_uri,
            state,
            "invalid_request",
            "AADSTS50148: code_challenge with code_challenge_method S256 is required.",
        );
    }
    let Some(user) = inner.user.clone() else {
        return redirect_error(
            &redirect_uri,
            state,
            "login_required",
            "AADSTS50058: A silent sign-in request was sent but no user is signed in.",
        );
    };
    let picker = inner.account_picker;
    let email = user.email.clone();
    let code = format!("0.A{}", uuid::Uuid::new_v4().simple());
    inner.codes.insert(
        code.clone(),
        PendingCode {
            client_id,
            redirect_uri: redirect_uri.clone(),
            nonce: q.get("nonce").cloned(),
            challenge,
            user,
            expires_at: unix_now() + CODE_SECONDS,
        },
    );
    drop(inner);
    let Some(url) = back_to(&redirect_uri, &[("code", &code)], state) else {
        return error_page("the redirect URI is not a URL");
    };
    if picker {
        return html_page(
            StatusCode::OK,
            format!(
                "<!doctype html><html lang=\"en\"><title>Sign in to your account</title>\
                 <h1>Pick an account</h1><p><a id=\"continue\" href=\"{}\">Continue as {}</a></p></html>",
                escape_html(&url),
                escape_html(&email)
            ),
        );
    }
    Redirect::to(&url).into_response()
}

fn token_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// `(client_id, secret)` from HTTP Basic (`client_secret_basic`), if sent.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

async fn token(
    State(issuer): State<Arc<EntraIssuer>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut inner = issuer.sign_in.lock();
    inner.token_requests += 1;
    if tenant != issuer.tenant_id() {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            &format!("AADSTS90002: Tenant '{tenant}' not found."),
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.",
        );
    }
    let (client_id, secret) = match basic_credentials(&headers) {
        Some(basic) => basic,
        None => (
            form.get("client_id").cloned().unwrap_or_default(),
            form.get("client_secret").cloned().unwrap_or_default(),
        ),
    };
    match inner.clients.get(&client_id) {
        Some(c) if !secret.is_empty() && c.secret == secret => {}
        Some(_) => {
            return token_error(StatusCode::UNAUTHORIZED, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
        }
        None => {
            return token_error(StatusCode::BAD_REQUEST, "unauthorized_client", &format!("AADSTS700016: Application with identifier '{client_id}' was not found in the directory."))
        }
    }
    let code = form.get("code").cloned().unwrap_or_default();
    // A code is used once, whatever the outcome.
    let Some(pending) = inner.codes.remove(&code) else {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant", "AADSTS70008: The provided authorization code or refresh token has expired or was already redeemed.");
    };
    drop(inner);
    if pending.expires_at < unix_now() {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "AADSTS70008: The provided authorization code has expired.",
        );
    }
    if pending.client_id != client_id {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "AADSTS70000: The code was issued to another client.",
        );
    }
    if form.get("redirect_uri") != Some(&pending.redirect_uri) {
        return token_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "AADSTS50011: The redirect URI does not match the one the code was issued for.",
        );
    }
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != pending.challenge {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant", "AADSTS501481: The Code_Verifier does not match the code_challenge supplied in the authorization request.");
    }
    let now = unix_now();
    let oid = crate::exchange_identity::msexchuid_for(&format!("entra:{}", pending.user.email));
    let mut claims = json!({
        "aud": client_id,
        "iss": issuer.issuer(),
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "name": crate::exchange_identity::display_name_for(&pending.user.email),
        "oid": oid,
        "preferred_username": pending.user.email,
        "email": pending.user.email,
        "sub": crate::exchange_identity::msexchuid_for(&format!("sub:{oid}:{client_id}")),
        "tid": issuer.tenant_id(),
        "uti": uuid::Uuid::new_v4().simple().to_string(),
        "ver": "2.0",
    });
    // Past 200 groups Entra leaves them out and points to Graph instead (group overage).
    if pending.user.groups.len() > GROUPS_IN_TOKEN {
        claims["_claim_names"] = json!({"groups": "src1"});
        claims["_claim_sources"] = json!({"src1": {"endpoint": format!(
            "https://graph.windows.net/{}/users/{oid}/getMemberObjects",
            issuer.tenant_id()
        )}});
    } else {
        claims["groups"] = json!(pending.user.groups);
    }
    if let Some(nonce) = &pending.nonce {
        claims["nonce"] = json!(nonce);
    }
    let id_token = issuer.sign_raw(&issuer.token_header(), &claims);
    Json(json!({
        "token_type": "Bearer",
        "scope": "openid profile email",
        "expires_in": 3600,
        "id_token": id_token,
        "access_token": issuer.sign_raw(&issuer.token_header(), &json!({"aud": "00000003-0000-0000-c000-000000000000", "iss": issuer.issuer(), "exp": now + 3600})),
    }))
    .into_response()
}
