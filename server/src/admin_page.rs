//! The admin page at `/admin/` (management role and `all`): server-rendered
//! HTML (minijinja templates in `server/admin_templates/`, compiled into the
//! binary, autoescaped as `.html`), no SPA; `admin.js` only disables the check
//! button while the check runs.
//!
//! | route | what |
//! |---|---|
//! | `GET/POST /admin/login` | admin token form → session cookie |
//! | `POST /admin/logout` | ends the session |
//! | `GET /admin/` | integration health, manifest downloads, the "Run check" form |
//! | `POST /admin/check` | runs [`crate::check::run`] (as `vmr-scheduler check`) and shows the report |
//! | `GET /admin/conferences`, `/aliases`, `/recurring`, `/operations`, `/audit` | lists with search and paging (the admin API's queries) |
//! | `GET /admin/conferences/{id}` | one VMR: generated aliases read-only, extra aliases, add-alias form |
//! | `POST /admin/conferences/{id}/aliases`, `…/aliases/remove` | add / remove an extra alias (audited under the token's label) |
//!
//! Login: the admin token is entered once; its label is kept server-side in a
//! session named by a random id in the `__Host-vmr-admin-session` cookie
//! (HttpOnly, Secure, SameSite=Strict, Path=/). Sessions live in the database
//! (`vmr_store::admin_sessions`, under the SHA-256 of their id), so every
//! management instance behind a load balancer honours them and a restart signs
//! nobody out. OIDC sign-in is not implemented.
//! CSRF: every POST form carries the session's token (compared in constant
//! time) and a POST whose `Origin` names another host is refused; the login
//! form is protected by a double-submit cookie. Every answer carries a strict
//! Content-Security-Policy (`'self'` only), `no-store`, `nosniff` and
//! `Referrer-Policy: same-origin` (under `no-referrer` Chromium sends `Origin: null`, which
//! the origin check refuses).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use minijinja::Environment;
use rand::RngCore;
use serde::Serialize;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use sha2::{Digest, Sha256};
use vmr_store::admin_queries::Page;
use vmr_store::{AdminSession, StorageError};

use crate::admin_api::{self, ListQuery};
use crate::admin_oidc::{self, OidcError, OidcSignIn, Pending};
use crate::api_error::ApiFailure;
use crate::app::ManagementState;
use crate::http::ops::admin_label;

/// The session cookie (the `__Host-` prefix binds it to this host, `Secure`, `Path=/`).
pub const SESSION_COOKIE: &str = "__Host-vmr-admin-session";
/// The login form's double-submit cookie.
pub const LOGIN_COOKIE: &str = "__Host-vmr-admin-login";
/// A single sign-on in progress (state, nonce, PKCE verifier).
pub const OIDC_COOKIE: &str = "__Host-vmr-admin-oidc";
/// How long a single sign-on may take, start to callback.
const OIDC_COOKIE_SECS: i64 = 600;
/// Rows per page of the lists.
pub const PAGE_ROWS: i64 = 20;

const TEMPLATES: [(&str, &str); 8] = [
    ("base.html", include_str!("../admin_templates/base.html")),
    ("login.html", include_str!("../admin_templates/login.html")),
    (
        "overview.html",
        include_str!("../admin_templates/overview.html"),
    ),
    ("check.html", include_str!("../admin_templates/check.html")),
    ("list.html", include_str!("../admin_templates/list.html")),
    (
        "detail.html",
        include_str!("../admin_templates/detail.html"),
    ),
    ("error.html", include_str!("../admin_templates/error.html")),
    (
        "signed_in.html",
        include_str!("../admin_templates/signed_in.html"),
    ),
];
const ADMIN_CSS: &str = include_str!("../admin_templates/admin.css");
const ADMIN_JS: &str = include_str!("../admin_templates/admin.js");

/// Content-Security-Policy of every admin answer.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A signed-in admin (kept in the database).
type Session = AdminSession;

/// The page's templates, and its single sign-on when `[admin.oidc]` is set.
pub struct AdminPage {
    env: Environment<'static>,
    oidc: Option<Arc<OidcSignIn>>,
}

impl std::fmt::Debug for AdminPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminPage").finish_non_exhaustive()
    }
}

impl AdminPage {
    /// Compiles the templates (they are part of the binary: a failure is a bug, reported at start).
    pub fn new(oidc: Option<Arc<OidcSignIn>>) -> Result<AdminPage, minijinja::Error> {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)?;
        }
        Ok(AdminPage { env, oidc })
    }

    fn render(&self, status: StatusCode, name: &str, ctx: Value) -> Response {
        let rendered = self
            .env
            .get_template(name)
            .and_then(|t| t.render(template_value(&ctx)));
        match rendered {
            Ok(html) => (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                html,
            )
                .into_response(),
            Err(e) => {
                tracing::error!(template = name, error = %e, "admin page template failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the admin page could not be rendered; see the server log",
                )
                    .into_response()
            }
        }
    }
}

/// A JSON value as a template value (minijinja is built without its serde feature).
fn template_value(v: &Value) -> minijinja::Value {
    match v {
        Value::Null => minijinja::Value::from(()),
        Value::Bool(b) => minijinja::Value::from(*b),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => minijinja::Value::from(i),
            (None, Some(f)) => minijinja::Value::from(f),
            (None, None) => minijinja::Value::from(n.to_string()),
        },
        Value::String(s) => minijinja::Value::from(s.as_str()),
        Value::Array(items) => {
            minijinja::Value::from(items.iter().map(template_value).collect::<Vec<_>>())
        }
        Value::Object(map) => minijinja::Value::from(
            map.iter()
                .map(|(k, v)| (k.clone(), template_value(v)))
                .collect::<std::collections::BTreeMap<String, minijinja::Value>>(),
        ),
    }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The value of cookie `name` in the request.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// A `__Host-` cookie (Secure, HttpOnly, Path=/) that stays on this site (`SameSite=Strict`).
fn set_cookie(name: &str, value: &str, max_age_secs: i64) -> HeaderValue {
    cookie_header(name, value, "Strict", max_age_secs)
}

fn cookie_header(name: &str, value: &str, same_site: &str, max_age_secs: i64) -> HeaderValue {
    let text = format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite={same_site}; Max-Age={max_age_secs}"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn same(a: &str, b: &str) -> bool {
    !a.is_empty() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A POST whose `Origin` names another host than the one asked is refused.
fn origin_ok(headers: &HeaderMap, uri: &Uri) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = uri.authority().map(|a| a.as_str().to_owned()).or_else(|| {
        headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let Some(host) = host else {
        return true;
    };
    match url::Url::parse(origin) {
        Ok(o) => {
            let port = o.port().map(|p| format!(":{p}")).unwrap_or_default();
            let origin_host = format!("{}{port}", o.host_str().unwrap_or_default());
            origin_host.eq_ignore_ascii_case(&host)
        }
        Err(_) => false,
    }
}

/// The page's routes, with its own state as an extension and security headers.
pub fn routes(state: &ManagementState) -> anyhow::Result<Router<ManagementState>> {
    let config = &state.shared.config;
    let oidc = match &config.admin.oidc {
        Some(oidc) => Some(OidcSignIn::new(
            oidc.clone(),
            crate::tls::http_client(&config.http_client)?,
            &config.server.public_host,
        )),
        None => None,
    };
    let page = Arc::new(AdminPage::new(oidc)?);
    Ok(Router::new()
        .route("/admin", get(|| async { Redirect::to("/admin/") }))
        .route("/admin/", get(overview))
        .route("/admin/login", get(login_form).post(login))
        .route("/admin/oidc/start", get(oidc_start))
        .route(admin_oidc::CALLBACK_PATH, get(oidc_callback))
        .route("/admin/logout", post(logout))
        .route("/admin/check", post(run_check))
        .route("/admin/conferences", get(conferences))
        .route("/admin/conferences/{id}", get(conference))
        .route("/admin/conferences/{id}/aliases", post(add_alias))
        .route("/admin/conferences/{id}/aliases/remove", post(remove_alias))
        .route("/admin/aliases", get(aliases))
        .route("/admin/recurring", get(recurring))
        .route("/admin/operations", get(operations))
        .route("/admin/audit", get(audit))
        .route("/admin/static/admin.css", get(css))
        .route("/admin/static/admin.js", get(js))
        .layer(axum::middleware::map_response(security_headers))
        .layer(Extension(page)))
}

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        ADMIN_CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        ADMIN_JS,
    )
        .into_response()
}

fn to_login() -> Response {
    Redirect::to("/admin/login").into_response()
}

const NAV: [(&str, &str); 6] = [
    ("/admin/", "Overview"),
    ("/admin/conferences", "Scheduled conferences"),
    ("/admin/aliases", "Aliases"),
    ("/admin/recurring", "Recurring conferences"),
    ("/admin/operations", "Operations"),
    ("/admin/audit", "Audit log"),
];

/// The context every signed-in page has, plus `extra`.
fn page_ctx(session: &Session, title: &str, current: &str, extra: Value) -> Value {
    let nav: Vec<Value> = NAV
        .iter()
        .map(|(href, label)| json!({"href": href, "label": label, "current": *href == current}))
        .collect();
    let mut ctx = json!({
        "title": title,
        "admin": session.label,
        "csrf": session.csrf,
        "nav": nav,
    });
    if let (Some(obj), Value::Object(more)) = (ctx.as_object_mut(), extra) {
        obj.extend(more);
    }
    ctx
}

fn now(state: &ManagementState) -> i64 {
    state.shared.clock.now_unix_ms()
}

/// What the database keeps of a session id: its SHA-256, in hex.
fn session_hash(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// The admin this request's session cookie signs in, or the answer to give instead: the
/// sign-in page when there is none (or it expired), an error page when the database cannot
/// say.
async fn signed_in(
    state: &ManagementState,
    page: &AdminPage,
    headers: &HeaderMap,
) -> Result<Session, Box<Response>> {
    let Some(id) = cookie(headers, SESSION_COOKIE) else {
        return Err(Box::new(to_login()));
    };
    match state
        .storage
        .admin_session(&session_hash(&id), now(state))
        .await
    {
        Ok(Some(session)) => Ok(session),
        Ok(None) => Err(Box::new(to_login())),
        Err(e) => Err(Box::new(storage_error(page, None, e))),
    }
}

async fn login_form(
    State(state): State<ManagementState>,
    Extension(page): Extension<Arc<AdminPage>>,
    headers: HeaderMap,
) -> Response {
    if signed_in(&state, &page, &headers).await.is_ok() {
        return Redirect::to("/admin/").into_response();
    }
    login_page(&state, &page, StatusCode::OK, None)
}

fn login_page(
    state: &ManagementState,
    page: &AdminPage,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let login_csrf = random_hex();
    let mut r = page.render(
        status,
        "login.html",
        json!({
            "title": "Sign in",
            "error": error,
            "login_csrf": login_csrf,
            "session_minutes": state.shared.config.admin.session_minutes,
            "oidc_label": page.oidc.as_ref().map(|o| o.button_label()),
        }),
    );
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, &login_csrf, 3600),
    );
    r
}

async fn login(
    State(state): State<ManagementState>,
    Extension(page): Extension<Arc<AdminPage>>,
    headers: HeaderMap,
    uri: Uri,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let presented = form.get("login_csrf").map(String::as_str).unwrap_or("");
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    let origin_fine = origin_ok(&headers, &uri);
    if !origin_fine || !same(presented, &expected) {
        tracing::warn!(
            origin_ok = origin_fine,
            cookie_present = !expected.is_empty(),
            field_present = !presented.is_empty(),
            "admin page: sign-in form refused (CSRF)"
        );
        return login_page(
            &state,
            &page,
            StatusCode::FORBIDDEN,
            Some("The sign-in form expired or came from another site; please try again."),
        );
    }
    let token = form.get("token").map(String::as_str).unwrap_or("");
    let Some(label) = admin_label(&state.shared, token) else {
        tracing::warn!("admin page: sign-in with an unknown token");
        return login_page(
            &state,
            &page,
            StatusCode::UNAUTHORIZED,
            Some("That is not an admin token of this server."),
        );
    };
    start_session(
        &state,
        &page,
        label,
        "token",
        Redirect::to("/admin/").into_response(),
    )
    .await
}

/// Starts a session for `label` (signed in by `method`) and sets its cookie on `response`
/// (clearing the sign-in cookies); an error page if the database refuses.
async fn start_session(
    state: &ManagementState,
    page: &AdminPage,
    label: String,
    method: &str,
    mut response: Response,
) -> Response {
    let ttl_secs = i64::from(state.shared.config.admin.session_minutes) * 60;
    let id = random_hex();
    let started = now(state);
    let session = Session {
        label,
        csrf: random_hex(),
        created_at: started,
        expires_at: started + ttl_secs * 1000,
    };
    if let Err(e) = state
        .storage
        .start_admin_session(&session_hash(&id), &session)
        .await
    {
        return storage_error(page, None, e);
    }
    tracing::info!(admin = %session.label, method, "admin page: signed in");
    let h = response.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, &id, ttl_secs),
    );
    h.append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", 0));
    h.append(header::SET_COOKIE, oidc_cookie("", 0));
    response
}

/// The cookie holding a single sign-on in progress. `SameSite=Lax`: the provider sends the
/// browser back with a cross-site navigation, which never carries `Strict` cookies.
fn oidc_cookie(value: &str, max_age_secs: i64) -> HeaderValue {
    cookie_header(OIDC_COOKIE, value, "Lax", max_age_secs)
}

/// `GET /admin/oidc/start`: off to the provider, with a fresh state, nonce and verifier.
async fn oidc_start(
    State(state): State<ManagementState>,
    Extension(page): Extension<Arc<AdminPage>>,
) -> Response {
    let Some(oidc) = page.oidc.clone() else {
        return (StatusCode::NOT_FOUND, "single sign-on is not configured").into_response();
    };
    let pending = Pending::new();
    match oidc.authorization_url(&pending, now(&state)).await {
        Ok(url) => {
            let mut r = Redirect::to(&url).into_response();
            r.headers_mut().append(
                header::SET_COOKIE,
                oidc_cookie(&pending.cookie_value(), OIDC_COOKIE_SECS),
            );
            r
        }
        Err(e) => {
            tracing::warn!(error = %e, "admin page: single sign-on could not start");
            login_page(&state, &page, StatusCode::BAD_GATEWAY, Some(&e.to_string()))
        }
    }
}

/// `GET /admin/oidc/callback`: the provider's answer. Signed in, the browser gets a page
/// that moves on to `/admin/` by itself: the session cookie is `SameSite=Strict`, and a
/// redirect here would still belong to the provider's cross-site navigation, which would
/// not send it.
async fn oidc_callback(
    State(state): State<ManagementState>,
    Extension(page): Extension<Arc<AdminPage>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(oidc) = page.oidc.clone() else {
        return (StatusCode::NOT_FOUND, "single sign-on is not configured").into_response();
    };
    let pending = cookie(&headers, OIDC_COOKIE).and_then(|v| Pending::from_cookie(&v));
    match oidc.finish(pending.as_ref(), &query, now(&state)).await {
        Ok(signed_in) => {
            let onward = page.render(
                StatusCode::OK,
                "signed_in.html",
                json!({"title": "Signed in", "user": signed_in.user}),
            );
            start_session(&state, &page, signed_in.user, "oidc", onward).await
        }
        Err(e) => {
            tracing::warn!(error = %e, "admin page: single sign-on refused");
            let status = match e {
                OidcError::Provider(_) => StatusCode::BAD_GATEWAY,
                _ => StatusCode::FORBIDDEN,
            };
            let mut r = login_page(&state, &page, status, Some(&e.to_string()));
            r.headers_mut()
                .append(header::SET_COOKIE, oidc_cookie("", 0));
            r
        }
    }
}

/// The signed-in session of a POST whose CSRF token and origin check out.
async fn checked_post(
    page: &AdminPage,
    state: &ManagementState,
    headers: &HeaderMap,
    uri: &Uri,
    form: &HashMap<String, String>,
) -> Result<Session, Box<Response>> {
    let session = signed_in(state, page, headers).await?;
    let token = form.get("csrf").map(String::as_str).unwrap_or("");
    if !origin_ok(headers, uri) || !same(token, &session.csrf) {
        return Err(Box::new(page.render(
            StatusCode::FORBIDDEN,
            "error.html",
            page_ctx(
                &session,
                "Request refused",
                "",
                json!({"message": "The form's security token did not match (an old tab, or a request from another site). Reload the page and try again."}),
            ),
        )));
    }
    Ok(session)
}

async fn logout(
    State(state): State<ManagementState>,
    Extension(page): Extension<Arc<AdminPage>>,
    headers: HeaderMap,
    uri: Uri,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = match checked_post(&page, &state, &headers, &uri, &form).await {
        Ok(session) => session,
        Err(r) => return *r,
    };
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        if let Err(e) = state.storage.end_admin_session(&session_hash(&id)).await {
            return storage_error(&page, Some(&session), e);
        }
    }
    let mut r = Redirect::to("/admin/login").into_response();
    r.headers_mut()
        .append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", 0));
    r
}

async fn overview(
    State(state): State<ManagementState>,
    Extension(page): Extension<Arc<AdminPage>>,
    headers: HeaderMap,
) -> Response {
    let session = match signed_in(&state, &page, &headers).await {
        Ok(session) => session,
        Err(r) => return *r,
    };
    let mut integrations = Vec::new();
    for id in state.shared.integrations.keys() {
        match admin_api::integration_status(&state, id).await {
            Ok(Some(v)) => integrations.push(v),
            Ok(None) => {}
            Err(e) => return storage_error(&page, Some(&session), e),
        }
    }
    page.render(
        StatusCode::OK,
        "overview.html",
        page_ctx(
            &session,
            "Overview",
            "/admin/",
            json!({ "integrations": integrations }),
        ),
    )
}

/// The error page for a database failure (with the navigation when signed in).
fn storage_error(page: &AdminPage, session: Option<&Session>, e: StorageError) -> Response {
    let id = uuid::Uuid::new_v4();
    tracing::error!(correlation_id = %id, error = %e, "admin page: database error");
    let message = json!({"message": format!(
        "The database could not be read or written. Quote reference {id} when you look at the \
         server log."
    )});
    let ctx = match session {
        Some(session) => page_ctx(session, "Error", "", message),
        None => {
            let mut ctx = message;
            ctx["title"] = json!("Error");
            ctx
        }
    };
    page.render(StatusCode::INTERNAL_SERVER_ERROR, "error.html", ctx)
}

async fn run_check(
    State(state): State<ManagementState>,
    Extension(page): Extension<Arc<AdminPage>>,
    headers: HeaderMap,
    uri: Uri,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = match checked_post(&page, &state, &headers, &uri, &form).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let options = crate::check::CheckOptions {
        organizer: form
            .get("organizer")
            .map(|o| o.trim().to_owned())
            .filter(|o| !o.is_empty()),
    };
    tracing::info!(admin = %session.label, "admin page: running the Exchange check");
    let report =
        crate::check::run(&state.shared.config, &options, state.shared.clock.clone()).await;
    page.render(
        StatusCode::OK,
        "check.html",
        page_ctx(
            &session,
            "Check result",
            "/admin/",
            json!({
                "text": report.text,
                "must_fix": report.must_fix,
                "undetermined": report.undetermined,
                "integrations": report.integrations,
            }),
        ),
    )
}

/// One table cell: text, and a link when it leads somewhere.
#[derive(Debug, Serialize)]
struct Cell {
    text: String,
    href: Option<String>,
}

fn cell(text: impl Into<String>) -> Cell {
    Cell {
        text: text.into(),
        href: None,
    }
}

fn link(text: impl Into<String>, href: String) -> Cell {
    Cell {
        text: text.into(),
        href: Some(href),
    }
}

/// A filter field of a list page.
fn field(name: &str, label: &str, params: &HashMap<String, String>) -> Value {
    json!({"name": name, "label": label, "value": params.get(name).cloned().unwrap_or_default()})
}

fn integration_field(state: &ManagementState, params: &HashMap<String, String>) -> Value {
    let mut options = vec![json!({"value": "", "label": "All integrations"})];
    options.extend(
        state
            .shared
            .integrations
            .keys()
            .map(|id| json!({"value": id, "label": id})),
    );
    json!({
        "name": "integration", "label": "Integration",
        "value": params.get("integration").cloned().unwrap_or_default(),
        "options": options,
    })
}

/// The list query of a page: its filters, `PAGE_ROWS` rows from page `page`.
fn list_query(params: &HashMap<String, String>) -> (ListQuery, i64) {
    let page_no = params
        .get("page")
        .and_then(|p| p.trim().parse::<i64>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let get = |k: &str| params.get(k).cloned();
    let q = ListQuery {
        integration: get("integration"),
        organizer: get("organizer"),
        from: get("from"),
        to: get("to"),
        q: get("q"),
        state: get("state"),
        success: get("success"),
        limit: Some(PAGE_ROWS.to_string()),
        offset: Some(((page_no - 1).saturating_mul(PAGE_ROWS)).to_string()),
    };
    (q, page_no)
}

/// `path?filters&page=n`, keeping the non-empty filters.
fn page_href(path: &str, params: &HashMap<String, String>, page_no: i64) -> String {
    let mut keys: Vec<&String> = params
        .keys()
        .filter(|k| k.as_str() != "page" && params.get(*k).is_some_and(|v| !v.is_empty()))
        .collect();
    keys.sort();
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for k in keys {
        query.append_pair(k, &params[k]);
    }
    query.append_pair("page", &page_no.to_string());
    format!("{path}?{}", query.finish())
}

/// The fixed parts of a list page.
struct ListView {
    title: &'static str,
    path: &'static str,
    caption: &'static str,
    filters: Vec<Value>,
    columns: Vec<&'static str>,
}

/// Why a list page has no rows to show.
enum ListFailure {
    /// The query's filters or paging are invalid (shown as the error page).
    Query(ApiFailure),
    Storage(StorageError),
}

impl From<ApiFailure> for ListFailure {
    fn from(e: ApiFailure) -> Self {
        ListFailure::Query(e)
    }
}

impl From<StorageError> for ListFailure {
    fn from(e: StorageError) -> Self {
        ListFailure::Storage(e)
    }
}

/// Every list page: the sign-in check, the query from `params` (`PAGE_ROWS` rows of page
/// `page`), one page of items from `fetch` (which builds its filter from the query and asks
/// storage), one table row per item from `row`, and the table with its paging.
async fn list_page<T, Fut>(
    state: &ManagementState,
    page: &AdminPage,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
    view: ListView,
    fetch: impl FnOnce(ListQuery) -> Fut,
    row: impl Fn(&T) -> Vec<Cell>,
) -> Response
where
    Fut: std::future::Future<Output = Result<Page<T>, ListFailure>>,
{
    let session = match signed_in(state, page, headers).await {
        Ok(session) => session,
        Err(r) => return *r,
    };
    let (q, page_no) = list_query(params);
    let result = match fetch(q).await {
        Ok(result) => result,
        Err(ListFailure::Query(e)) => return bad_filter(page, &session, view.title, e),
        Err(ListFailure::Storage(e)) => return storage_error(page, Some(&session), e),
    };
    let rows: Vec<Vec<Cell>> = result.items.iter().map(row).collect();
    let pages = ((result.total + PAGE_ROWS - 1) / PAGE_ROWS).max(1);
    let first = (page_no - 1) * PAGE_ROWS + 1;
    let last = (first + rows.len() as i64 - 1).max(first);
    let prev = (page_no > 1).then(|| page_href(view.path, params, (page_no - 1).min(pages)));
    let next = (page_no < pages).then(|| page_href(view.path, params, page_no + 1));
    page.render(
        StatusCode::OK,
        "list.html",
        page_ctx(
            &session,
            view.title,
            view.path,
            json!({
                "action": view.path,
                "caption": view.caption,
                "filters": view.filters,
                "columns": view.columns,
                "rows": rows,
                "total": result.total,
                "first": first,
                "last": last,
                "page": page_no,
                "pages": pages,
                "prev_href": prev,
                "next_href": next,
            }),
        ),
    )
}

fn bad_filter(page: &AdminPage, session: &Session, title: &str, failure: ApiFailure) -> Response {
    page.render(
        StatusCode::UNPROCESSABLE_ENTITY,
        "error.html",
        page_ctx(session, title, "", json!({"message": failure.message})),
    )
}

/// A filter field whose value is one of `options` (value, label).
fn select_field(
    name: &str,
    label: &str,
    params: &HashMap<String, String>,
    options: &[(&str, &str)],
) -> Value {
    let mut f = field(name, label, params);
    f["options"] = options
        .iter()
        .map(|(value, label)| json!({"value": value, "label": label}))
        .collect();
    f
}

/// A filter field with an input type (`date`, `email`) or a hint.
fn typed_field(
    name: &str,
    label: &str,
    params: &HashMap<String, String>,
    key: &str,
    value: &str,
) -> Value {
    let mut f = field(name, label, params);
    f[key] = json!(value);
    f
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "Yes"
    } else {
        "No"
    }
}

async fn conferences(
    State(state): State<ManagementState>,
    Extension(page): Extension<Arc<AdminPage>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let view = ListView {
        title: "Scheduled conferences",
        path: "/admin/conferences",
        caption: "Scheduled conferences, one row per meeting or occurrence window, by start time",
        filters: vec![
            typed_field(
                "q",
                "Search",
                &params,
                "hint",
                "Name, alias, subject or organizer",
            ),
            integration_field(&state, &params),
            typed_field("organizer", "Organizer", &params, "type", "email"),
            typed_field("from", "Ending after", &params, "type", "date"),
            typed_field("to", "Starting before", &params, "type", "date"),
        ],
        columns: vec![
            "Name",
            "Aliases",
            "Subject",
            "Organizer",
            "Start",
            "End",
            "Series",
            "Integration",
        ],
    };
    let state = &state;
    list_page(
        state,
        &page,
        &headers,
        &params,
        view,
        |q| async move {
            let filter = q.conference_filter(&state.shared)?;
            Ok(state
                .storage
                .admin_scheduled_conferences(&filter, q.paging()?)
                .await?)
        },
        |r| {
            let mut aliases = vec![r.alias.clone(), r.numeric_alias.clone()];
            aliases.extend(r.extra_aliases.iter().cloned());
            vec![
                link(
                    r.name.clone(),
                    format!("/admin/conferences/{}", r.conference_id),
                ),
                cell(aliases.join(", ")),
                cell(r.subject.clone()),
                cell(r.organizer.clone().unwrap_or_default()),
                cell(admin_api::rfc3339(r.start_time)),
                cell(admin_api::rfc3339(r.end_time)),
                cell(yes_no(r.is_series)),
                cell(r.integration.clone()),
            ]
        },
    )
    .await
}

async fn aliases(
    State(state): State<ManagementState>,
    Extension(page): Extension<Arc<AdminPage>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let view = ListView {
        title: "Aliases",
        path: "/admin/aliases",
        caption: "Aliases ever issued, newest first",
        filters: vec![
            field("q", "Search", &params),
            integration_field(&state, &params),
            select_field(
                "state",
                "State",
                &params,
                &[
                    ("", "Any state"),
                    ("allocated", "allocated"),
                    ("bound", "bound"),
                    ("deleted", "deleted"),
                ],
            ),
        ],
        columns: vec![
            "Alias",
            "Numeric alias",
            "Uuid",
            "State",
            "Conference deleted",
            "Meeting UID",
            "Integration",
        ],
    };
    let state = &state;
    list_page(
        state,
        &page,
        &headers,
        &params,
        view,
        |q| async move {
            let filter = q.alias_filter(&state.shared)?;
            Ok(state.storage.admin_aliases(&filter, q.paging()?).await?)
        },
        |a| {
            vec![
                cell(a.alias.clone()),
                cell(a.numeric_alias.clone()),
                cell(a.uuid.clone()),
                cell(a.state.clone()),
                cell(
                    a.conference_deletion_time
                        .map(admin_api::rfc3339)
                        .unwrap_or_default(),
                ),
                cell(a.meeting_uid.clone().unwrap_or_default()),
                cell(a.integration.clone()),
            ]
        },
    )
    .await
}

async fn recurring(
    State(state): State<ManagementState>,
    Extension(page): Extension<Arc<AdminPage>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let view = ListView {
        title: "Recurring conferences",
        path: "/admin/recurring",
        caption: "Series, by subject",
        filters: vec![
            field("q", "Search", &params),
            integration_field(&state, &params),
        ],
        columns: vec![
            "Name",
            "Alias",
            "Subject",
            "Organizer",
            "Current occurrence",
            "Depleted",
            "Integration",
        ],
    };
    let state = &state;
    list_page(
        state,
        &page,
        &headers,
        &params,
        view,
        |q| async move {
            let filter = q.simple_filter(&state.shared)?;
            Ok(state
                .storage
                .admin_recurring_conferences(&filter, q.paging()?)
                .await?)
        },
        |r| {
            vec![
                link(
                    r.name.clone(),
                    format!("/admin/conferences/{}", r.conference_id),
                ),
                cell(r.alias.clone()),
                cell(r.subject.clone()),
                cell(r.organizer.clone().unwrap_or_default()),
                cell(r.current_index.to_string()),
                cell(yes_no(r.is_depleted)),
                cell(r.integration.clone()),
            ]
        },
    )
    .await
}

async fn operations(
    State(state): State<ManagementState>,
    Extension(page): Extension<Arc<AdminPage>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let view = ListView {
        title: "Operations",
        path: "/admin/operations",
        caption: "The scheduling service's processing log, newest first (the transaction uuid \
                  is the correlation id quoted in declines)",
        filters: vec![
            field("q", "Search", &params),
            integration_field(&state, &params),
            select_field(
                "success",
                "Outcome",
                &params,
                &[
                    ("", "Any outcome"),
                    ("true", "Succeeded"),
                    ("false", "Failed"),
                ],
            ),
        ],
        columns: vec![
            "Transaction uuid",
            "Time",
            "Success",
            "Error code",
            "Error description",
            "Resource id",
            "Integration",
        ],
    };
    let state = &state;
    list_page(
        state,
        &page,
        &headers,
        &params,
        view,
        |q| async move {
            let filter = q.operation_filter(&state.shared)?;
            Ok(state.storage.admin_operations(&filter, q.paging()?).await?)
        },
        |o| {
            vec![
                cell(o.transaction_uuid.clone()),
                cell(admin_api::rfc3339(o.creation_time)),
                cell(yes_no(o.success)),
                cell(o.error_code.clone()),
                cell(o.error_description.clone()),
                cell(o.resource_id.clone()),
                cell(o.integration.clone()),
            ]
        },
    )
    .await
}

async fn audit(
    State(state): State<ManagementState>,
    Extension(page): Extension<Arc<AdminPage>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let view = ListView {
        title: "Audit log",
        path: "/admin/audit",
        caption:
            "Every change, newest first: admins by token name, the service as schedulingservice",
        filters: vec![
            typed_field(
                "q",
                "Search",
                &params,
                "hint",
                "User (e.g. schedulingservice), action, object or detail",
            ),
            integration_field(&state, &params),
        ],
        columns: vec!["Time", "User", "Action", "Object", "Detail"],
    };
    let state = &state;
    list_page(
        state,
        &page,
        &headers,
        &params,
        view,
        |q| async move {
            let filter = q.simple_filter(&state.shared)?;
            Ok(state.storage.admin_audit(&filter, q.paging()?).await?)
        },
        |a| {
            vec![
                cell(admin_api::rfc3339(a.at)),
                cell(a.actor.clone()),
                cell(a.action.clone()),
                cell(format!("{} {}", a.object_type, a.object_id)),
                cell(a.detail.clone()),
            ]
        },
    )
    .await
}

/// The detail page of conference `id`, with an optional notice or form error.
async fn detail_page(
    state: &ManagementState,
    page: &AdminPage,
    session: &Session,
    id: &str,
    status: StatusCode,
    extra: Value,
) -> Response {
    let detail = match state.storage.admin_conference(id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            return page.render(
                StatusCode::NOT_FOUND,
                "error.html",
                page_ctx(
                    session,
                    "Not found",
                    "",
                    json!({"message": format!("There is no conference {id}.")}),
                ),
            )
        }
        Err(e) => return storage_error(page, Some(session), e),
    };
    let c = admin_api::conference_json(&detail);
    let title = format!("Conference {}", detail.conference.name);
    let mut more = json!({ "c": c, "alias_value": "", "description_value": "" });
    if let (Some(obj), Value::Object(e)) = (more.as_object_mut(), extra) {
        obj.extend(e);
    }
    page.render(
        status,
        "detail.html",
        page_ctx(session, &title, "/admin/conferences", more),
    )
}

async fn conference(
    State(state): State<ManagementState>,
    Extension(page): Extension<Arc<AdminPage>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let session = match signed_in(&state, &page, &headers).await {
        Ok(session) => session,
        Err(r) => return *r,
    };
    let notice = if let Some(a) = params.get("added") {
        Some(format!("Extra alias {a} added."))
    } else {
        params
            .get("removed")
            .map(|a| format!("Extra alias {a} removed."))
    };
    detail_page(
        &state,
        &page,
        &session,
        &id,
        StatusCode::OK,
        json!({ "notice": notice }),
    )
    .await
}

fn after_write(id: &str, key: &str, alias: &str) -> Response {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair(key, alias);
    Redirect::to(&format!("/admin/conferences/{id}?{}", query.finish())).into_response()
}

async fn add_alias(
    State(state): State<ManagementState>,
    Extension(page): Extension<Arc<AdminPage>>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = match checked_post(&page, &state, &headers, &uri, &form).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let alias = form.get("alias").cloned().unwrap_or_default();
    let description = form.get("description").cloned().unwrap_or_default();
    match state
        .storage
        .add_extra_alias(&id, &alias, &description, &session.label, now(&state))
        .await
    {
        Ok(added) => {
            tracing::info!(conference = %id, alias = %added.alias, admin = %session.label, "extra alias added (admin page)");
            after_write(&id, "added", &added.alias)
        }
        Err(e) => {
            let failure = admin_api::write_failure(e);
            if failure.status.is_server_error() {
                return failure.into_response();
            }
            detail_page(
                &state,
                &page,
                &session,
                &id,
                failure.status,
                json!({"error": failure.message, "alias_value": alias, "description_value": description}),
            )
            .await
        }
    }
}

async fn remove_alias(
    State(state): State<ManagementState>,
    Extension(page): Extension<Arc<AdminPage>>,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let session = match checked_post(&page, &state, &headers, &uri, &form).await {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let alias = form.get("alias").cloned().unwrap_or_default();
    match state
        .storage
        .remove_extra_alias(&id, &alias, &session.label, now(&state))
        .await
    {
        Ok(()) => after_write(&id, "removed", &alias.trim().to_lowercase()),
        Err(e) => {
            let failure = admin_api::write_failure(e);
            if failure.status.is_server_error() {
                return failure.into_response();
            }
            detail_page(
                &state,
                &page,
                &session,
                &id,
                failure.status,
                json!({"error": failure.message}),
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_compile_and_escape() {
        let page = AdminPage::new(None).expect("templates compile");
        let session = Session {
            label: "<b>eve</b>".into(),
            csrf: "t".into(),
            expires_at: 1,
            created_at: 0,
        };
        let r = page
            .env
            .get_template("error.html")
            .unwrap()
            .render(template_value(&page_ctx(
                &session,
                "T",
                "",
                json!({"message": "<script>x</script>"}),
            )));
        let html = r.unwrap();
        assert!(
            html.contains("&lt;script&gt;x&lt;&#x2f;script&gt;"),
            "{html}"
        );
        assert!(html.contains("&lt;b&gt;eve&lt;&#x2f;b&gt;"), "{html}");
        assert!(!html.contains("<script>x"));
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static(
                "a=1; __Host-vmr-admin-session=abc; x__Host-vmr-admin-session=no",
            ),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "b"), None);
    }

    #[test]
    fn origins_must_match_the_host() {
        let uri: Uri = "/admin/check".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8443"));
        assert!(origin_ok(&h, &uri));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://127.0.0.1:8443"),
        );
        assert!(origin_ok(&h, &uri));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!origin_ok(&h, &uri));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!origin_ok(&h, &uri));
    }

    #[test]
    fn page_links_keep_filters() {
        let mut p = HashMap::new();
        p.insert("q".to_string(), "a&b".to_string());
        p.insert("page".to_string(), "3".to_string());
        p.insert("integration".to_string(), String::new());
        assert_eq!(
            page_href("/admin/aliases", &p, 4),
            "/admin/aliases?q=a%26b&page=4"
        );
    }
}
