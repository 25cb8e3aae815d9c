//! End-to-end: the admin page (`/admin/`) of the real server binary in headless Chromium.
//!
//! 45 VMRs are written straight into the server's database (volume; the mailbox path that
//! creates them is covered by `mailbox.rs`). The test signs in with the admin token, checks the
//! overview (integration health, manifest download, the "Run check" button and its report),
//! lists, searches and pages the scheduled conferences, opens one, adds an extra alias using
//! the keyboard only (skip link, Tab order, visible focus, Enter), sees that the generated
//! aliases offer no way to edit them, and runs axe-core (vendored under `tests/vendor/`) on
//! every page: zero violations. A screenshot goes to `target/e2e-screenshots/admin.png`.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use fantoccini::Locator;
use serde_json::{json, Value};
use sqlx::AnyPool;
use vmr_e2e::{root, Browser, ServerProcess, ServerSetup, Sim, E2E_ADMIN_TOKEN};

const WAIT: Duration = Duration::from_secs(20);
const TAB: &str = "\u{e004}";
const ENTER: &str = "\u{e007}";
/// 2030-01-01T00:00:00Z.
const BASE: i64 = 1_893_456_000_000;
const HOUR: i64 = 3_600_000;
const CONFERENCES: i64 = 45;
/// A subject that must show as text, never run.
const HOSTILE: &str = "<img src=x onerror=\"window.pwned=1\"> Quarterly & <b>review</b>";

async fn exec(pool: &AnyPool, sql: &str, args: &[Value]) -> Result<()> {
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
    for a in args {
        q = match a {
            Value::String(s) => q.bind(s.clone()),
            Value::Number(n) => q.bind(n.as_i64().context("integer")?),
            other => bail!("unsupported bind {other}"),
        };
    }
    q.execute(pool).await.with_context(|| sql.to_owned())?;
    Ok(())
}

/// Writes `CONFERENCES` bound aliases, VMRs, meetings and windows into the server's database.
async fn seed(db_url: &str) -> Result<()> {
    sqlx::any::install_default_drivers();
    let pool = AnyPool::connect(db_url).await?;
    for i in 0..CONFERENCES {
        let id = format!("{i:03}");
        let numeric = format!("8810{i:04}");
        let alias = format!("{numeric}@vc.example.com");
        let subject = if i == 17 {
            HOSTILE.to_owned()
        } else {
            format!("Team sync #{i}")
        };
        let start = BASE + i * HOUR;
        exec(
            &pool,
            "INSERT INTO scheduled_alias (id, integration, numeric_alias, alias, state, created_at, \
             auth_method, requester_id, organizer_email, meeting_uid) \
             VALUES ($1, 'default', $2, $3, 'bound', $4, 'exchange_identity', 'r', 'ann@example.com', $5)",
            &[json!(format!("a{id}")), json!(numeric), json!(alias), json!(start), json!(format!("uid-{id}"))],
        )
        .await?;
        exec(
            &pool,
            "INSERT INTO conference (id, integration, alias_id, name, description, alias, numeric_alias, \
             non_idp_participants, created_at) VALUES ($1, 'default', $2, $3, 'Scheduled', $4, $5, 'disallow_all', $6)",
            &[json!(format!("c{id}")), json!(format!("a{id}")), json!(format!("Meeting room {id}")), json!(alias), json!(numeric), json!(start)],
        )
        .await?;
        exec(
            &pool,
            "INSERT INTO meeting (integration, uid, alias_id, conference_id, state, is_series, sequence, \
             revision, schedule_json, fingerprint, organizer_email, subject, item_id, updated_at) \
             VALUES ('default', $1, $2, $3, 'accepted', 0, 0, 1, '{}', 'f', 'ann@example.com', $4, 'item', $5)",
            &[json!(format!("uid-{id}")), json!(format!("a{id}")), json!(format!("c{id}")), json!(subject), json!(start)],
        )
        .await?;
        exec(
            &pool,
            "INSERT INTO scheduled_conference (id, integration, conference_id, meeting_uid, occurrence_index, \
             original_start, start_time, end_time, subject) VALUES ($1, 'default', $2, $3, 0, $4, $4, $5, $6)",
            &[json!(format!("w{id}")), json!(format!("c{id}")), json!(format!("uid-{id}")), json!(start), json!(start + HOUR / 2), json!(subject)],
        )
        .await?;
    }
    pool.close().await;
    Ok(())
}

/// Runs axe-core on the current page; returns the violations (id, impact, nodes).
async fn axe_violations(b: &Browser) -> Result<Vec<Value>> {
    let axe = std::fs::read_to_string(root().join("tests/vendor/axe-core/axe.min.js"))
        .context("tests/vendor/axe-core/axe.min.js is missing (see its PROVENANCE.md)")?;
    let script = format!(
        "{axe}\n;const done = arguments[arguments.length - 1];\
         const engine = window.axe || (typeof axe !== 'undefined' ? axe : null);\
         if (!engine) {{ done('ERROR axe did not load'); return; }}\
         engine.run(document, {{ resultTypes: ['violations'] }})\
           .then(r => done(JSON.stringify(r.violations.map(v => ({{ id: v.id, impact: v.impact, \
              help: v.help, nodes: v.nodes.map(n => n.target.join(' ')) }})))))\
           .catch(e => done('ERROR ' + e));"
    );
    let answer = b.client.execute_async(&script, vec![]).await?;
    let text = answer.as_str().unwrap_or_default();
    if let Some(err) = text.strip_prefix("ERROR ") {
        bail!("axe-core failed to run: {err}");
    }
    serde_json::from_str(text).with_context(|| format!("axe answer: {answer}"))
}

async fn assert_axe_clean(b: &Browser, page: &str) -> Result<()> {
    let violations = axe_violations(b).await?;
    assert!(
        violations.is_empty(),
        "axe-core found {} violation(s) on {page}: {}",
        violations.len(),
        serde_json::to_string_pretty(&violations)?
    );
    Ok(())
}

/// Waits until the element matching `css` has exactly `want` as its text (the page may be
/// navigating: stale elements are looked up again).
async fn wait_text(b: &Browser, css: &str, want: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + WAIT;
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        if let Ok(e) = b.client.find(Locator::Css(css)).await {
            if let Ok(t) = e.text().await {
                if t == want {
                    return Ok(());
                }
                last = t;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{css} never read {want:?} (last: {last:?})")
}

async fn text_of(b: &Browser, css: &str) -> Result<String> {
    Ok(b.wait_css(css, WAIT).await?.text().await?)
}

/// What has the keyboard focus: `[id, tag, text, outline-style, outline-width]`.
async fn focused(b: &Browser) -> Result<Value> {
    Ok(b.client
        .execute(
            "const e = document.activeElement; const s = getComputedStyle(e);\
             return [e.id, e.tagName, (e.innerText || e.value || '').trim(), s.outlineStyle, s.outlineWidth];",
            vec![],
        )
        .await?)
}

async fn press(b: &Browser, keys: &str) -> Result<()> {
    b.client.active_element().await?.send_keys(keys).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_page_lists_searches_pages_and_adds_an_alias_by_keyboard() -> Result<()> {
    let sim = Sim::start().await?;
    let server = ServerProcess::start(ServerSetup::with_simulator(&sim)?)?;
    seed(&format!(
        "sqlite://{}",
        server.dir.path().join("vmr.db").display()
    ))
    .await?;
    let b = Browser::start().await?;
    let origin = server.origin();

    // --- Signed out: every admin URL leads to the sign-in form.
    b.goto(&format!("{origin}/admin/conferences")).await?;
    wait_text(&b, "h1", "Sign in").await?;
    assert_axe_clean(&b, "the sign-in page").await?;
    b.client
        .find(Locator::Id("token"))
        .await?
        .send_keys("wrong-token")
        .await?;
    b.client
        .find(Locator::Css("button[type=submit]"))
        .await?
        .click()
        .await?;
    let login_error = text_of(&b, "#login-error").await?;
    assert!(
        login_error.contains("not an admin token"),
        "{login_error}\n{}",
        server.log_text()
    );
    // The session cookie is HttpOnly: scripts never see it.
    b.client
        .find(Locator::Id("token"))
        .await?
        .send_keys(E2E_ADMIN_TOKEN)
        .await?;
    b.client
        .find(Locator::Css("button[type=submit]"))
        .await?
        .click()
        .await?;
    wait_text(&b, "h1", "Overview").await?;
    let cookies = b.client.execute("return document.cookie;", vec![]).await?;
    assert_eq!(cookies, json!(""), "session cookie visible to scripts");
    let session = b
        .client
        .get_named_cookie("__Host-vmr-admin-session")
        .await?;
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(session.secure(), Some(true));
    assert_eq!(
        session.same_site().map(|s| format!("{s:?}")).as_deref(),
        Some("Strict")
    );

    // --- Overview: health, manifest download, check.
    let health = text_of(&b, "table").await?;
    assert!(
        health.contains("default") && health.contains("vmr@example.com"),
        "{health}"
    );
    assert!(
        health.contains(&format!("{CONFERENCES} of 1000000")),
        "{health}"
    );
    let manifest = b
        .wait_css("a[download][href='/manifest/default.xml']", WAIT)
        .await?;
    assert_eq!(manifest.text().await?, "Download manifest for default");
    let xml = vmr_e2e::insecure_client()?
        .get(format!("{origin}/manifest/default.xml"))
        .send()
        .await?
        .text()
        .await?;
    assert!(xml.contains("<OfficeApp"), "{xml}");
    assert_axe_clean(&b, "the overview").await?;
    b.client
        .find(Locator::Id("run-check"))
        .await?
        .click()
        .await?;
    wait_text(&b, "h1", "Check result").await?;
    let result = text_of(&b, "#check-result").await?;
    assert!(result.contains("nothing to check"), "{result}");
    assert!(!text_of(&b, "#check-report").await?.is_empty());
    assert_axe_clean(&b, "the check result").await?;

    // --- List, page, search.
    b.goto(&format!("{origin}/admin/conferences")).await?;
    wait_text(&b, "#result-count", "Showing 1–20 of 45.").await?;
    let rows = b.client.find_all(Locator::Css("tbody tr")).await?;
    assert_eq!(rows.len(), 20);
    let hostile = b
        .client
        .execute("return [window.pwned === undefined, document.querySelectorAll('tbody img, tbody b').length];", vec![])
        .await?;
    assert_eq!(hostile, json!([true, 0]), "a subject was rendered as HTML");
    assert!(
        text_of(&b, "tbody").await?.contains(HOSTILE),
        "the hostile subject is shown as text"
    );
    assert_axe_clean(&b, "the conference list").await?;
    b.client
        .find(Locator::Id("next-page"))
        .await?
        .click()
        .await?;
    wait_text(&b, "#result-count", "Showing 21–40 of 45.").await?;
    b.client
        .find(Locator::Id("next-page"))
        .await?
        .click()
        .await?;
    wait_text(&b, "#result-count", "Showing 41–45 of 45.").await?;
    assert!(
        b.client.find(Locator::Id("next-page")).await.is_err(),
        "no next page after the last"
    );
    b.client
        .find(Locator::Id("prev-page"))
        .await?
        .click()
        .await?;
    wait_text(&b, "#result-count", "Showing 21–40 of 45.").await?;
    let search = b.client.find(Locator::Id("filter-q")).await?;
    search.clear().await?;
    search.send_keys("Meeting room 03").await?;
    b.client
        .find(Locator::Css("form[role=search] button"))
        .await?
        .click()
        .await?;
    wait_text(&b, "#result-count", "Showing 1–10 of 10.").await?;
    let search = b.client.find(Locator::Id("filter-q")).await?;
    search.clear().await?;
    search.send_keys("8810004").await?;
    search.send_keys(ENTER).await?;
    b.wait_css("#result-count", WAIT).await?;
    // 88100040..=88100044 → 5 conferences.
    wait_text(&b, "#result-count", "Showing 1–5 of 5.").await?;
    let search = b.client.find(Locator::Id("filter-q")).await?;
    search.clear().await?;
    search.send_keys("Meeting room 017").await?;
    search.send_keys(ENTER).await?;
    wait_text(&b, "#result-count", "Showing 1–1 of 1.").await?;

    // --- Detail: generated aliases are read-only.
    b.client
        .find(Locator::LinkText("Meeting room 017"))
        .await?
        .click()
        .await?;
    wait_text(&b, "h1", "Conference Meeting room 017").await?;
    let generated = b.client.find_all(Locator::Css("tr.generated")).await?;
    assert_eq!(generated.len(), 2);
    for row in &generated {
        assert!(
            row.find(Locator::Css(
                "input, button, select, textarea, [contenteditable]"
            ))
            .await
            .is_err(),
            "a generated alias row offers an edit control"
        );
        assert!(row.text().await?.contains("Read-only"));
    }
    let editable_values = b
        .client
        .execute(
            "return Array.from(document.querySelectorAll('input, textarea')).map(e => e.value);",
            vec![],
        )
        .await?;
    for value in editable_values.as_array().cloned().unwrap_or_default() {
        let v = value.as_str().unwrap_or_default();
        assert!(
            !v.contains("88100017"),
            "a generated alias is in an editable field: {v}"
        );
    }
    assert_axe_clean(&b, "the conference detail").await?;

    // --- Keyboard only: skip link, then Tab to the add-alias form, type, Enter.
    let detail_url = b.client.current_url().await?.to_string();
    b.goto(&detail_url).await?;
    b.wait_css("h1", WAIT).await?;
    b.client
        .execute(
            "document.activeElement && document.activeElement.blur();",
            vec![],
        )
        .await?;
    press(&b, TAB).await?;
    let first = focused(&b).await?;
    assert_eq!(
        first[2], "Skip to main content",
        "the first Tab stop is the skip link: {first}"
    );
    assert_ne!(
        first[3], "none",
        "focus is visible on the skip link: {first}"
    );
    press(&b, ENTER).await?;
    let main = focused(&b).await?;
    assert_eq!(main[0], "main", "the skip link moves focus to main: {main}");
    let mut stops = Vec::new();
    let mut reached = false;
    for _ in 0..40 {
        press(&b, TAB).await?;
        let f = focused(&b).await?;
        assert_ne!(f[3], "none", "focus is not visible on {f}");
        stops.push(f.clone());
        if f[0] == "extra-alias" {
            reached = true;
            break;
        }
    }
    assert!(
        reached,
        "Tab never reached the extra alias field: {stops:?}"
    );
    press(&b, "Keyboard-Room@VC.example.com").await?;
    press(&b, TAB).await?;
    assert_eq!(focused(&b).await?[0], "extra-alias-description");
    press(&b, "added by keyboard").await?;
    press(&b, TAB).await?;
    assert_eq!(focused(&b).await?[0], "add-alias");
    press(&b, ENTER).await?;
    let notice = text_of(&b, "#notice").await?;
    assert_eq!(notice, "Extra alias keyboard-room@vc.example.com added.");
    let extra = text_of(&b, "tr.extra").await?;
    assert!(
        extra.contains("keyboard-room@vc.example.com") && extra.contains("token-20357603"),
        "{extra}"
    );
    assert_eq!(
        b.client.find_all(Locator::Css("tr.generated")).await?.len(),
        2
    );

    // --- Using a generated alias as an extra one is refused with a clear error.
    let field = b.client.find(Locator::Id("extra-alias")).await?;
    field.send_keys("88100017").await?;
    b.client
        .find(Locator::Id("add-alias"))
        .await?
        .click()
        .await?;
    let error = text_of(&b, "#alias-error").await?;
    assert!(error.contains("generated aliases"), "{error}");
    let invalid = b
        .client
        .find(Locator::Id("extra-alias"))
        .await?
        .attr("aria-invalid")
        .await?;
    assert_eq!(invalid.as_deref(), Some("true"));
    assert_axe_clean(&b, "the detail page with a form error").await?;

    // --- The add is in the audit log under the token's label.
    b.goto(&format!("{origin}/admin/audit")).await?;
    let audit = text_of(&b, "tbody").await?;
    assert!(
        audit.contains("token-20357603") && audit.contains("add_extra_alias"),
        "{audit}"
    );
    assert_axe_clean(&b, "the audit log").await?;
    for path in ["aliases", "recurring", "operations"] {
        b.goto(&format!("{origin}/admin/{path}")).await?;
        b.wait_css("#result-count", WAIT).await?;
        assert_axe_clean(&b, &format!("/admin/{path}")).await?;
    }

    // --- A POST without the session's CSRF token is refused (and the page's CSP blocks fetch).
    b.client
        .execute(
            "const f = document.createElement('form'); f.method = 'post';\
             f.action = '/admin/conferences/c017/aliases';\
             for (const [k, v] of [['alias', 'forged@vc.example.com'], ['csrf', 'wrong']]) {\
               const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i); }\
             document.body.appendChild(f); f.submit();",
            vec![],
        )
        .await?;
    b.client
        .wait()
        .at_most(WAIT)
        .for_url(&url::Url::parse(&format!(
            "{origin}/admin/conferences/c017/aliases"
        ))?)
        .await?;
    wait_text(&b, "h1", "Request refused").await?;

    b.goto(&detail_url).await?;
    b.wait_css("tr.extra", WAIT).await?;
    assert_eq!(
        b.client.find_all(Locator::Css("tr.extra")).await?.len(),
        1,
        "the forged POST added nothing"
    );
    let shot = b.screenshot("admin").await?;
    assert!(
        std::fs::metadata(&shot)?.len() > 10_000,
        "screenshot {shot:?} is empty"
    );
    b.close().await;
    Ok(())
}

/// Single sign-on in a real browser, with the server as `localhost` and the identity provider
/// (the simulated Entra ID) as `127.0.0.1`: different sites, as in production. The user picks
/// the account on the provider's page, so the way back to the callback is a navigation the
/// provider's site starts: cross-site. The sign-in cookie (`SameSite=Lax`) must survive it,
/// and the session cookie (`SameSite=Strict`) must be sent on the way on to the overview —
/// which a redirect from the callback, still part of that cross-site navigation, would not do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_sign_on_from_another_site_lands_on_the_overview() -> Result<()> {
    const CLIENT: &str = "0c7e5a1d-admin-sso-e2e";
    const SECRET: &str = "admin-sso-e2e-secret";
    let sim = Sim::start().await?;
    let entra = sim.running.simulator.entra.clone();
    let mut setup = ServerSetup::with_simulator(&sim)?;
    let public = format!("localhost:{}", setup.port);
    setup.public_host = Some(public.clone());
    setup.extra_toml = format!(
        "[admin.oidc]\nissuer = \"{}\"\nclient_id = \"{CLIENT}\"\nclient_secret = \"{SECRET}\"\n\
         allowed_users = [\"alice@contoso.com\"]\nbutton_label = \"Sign in with Contoso\"\n",
        entra.issuer()
    );
    assert!(entra.issuer().starts_with("https://127.0.0.1:"));
    entra.register_client(
        CLIENT,
        SECRET,
        &format!("https://{public}/admin/oidc/callback"),
    );
    entra.sign_in_as(Some(("alice@contoso.com", &[])));
    entra.show_account_picker(true);
    let server = ServerProcess::start(setup)?;
    let b = Browser::start().await?;

    b.goto(&format!("https://{public}/admin/login")).await?;
    wait_text(&b, "h1", "Sign in").await?;
    assert_axe_clean(&b, "the sign-in page with single sign-on").await?;
    b.client
        .find(Locator::LinkText("Sign in with Contoso"))
        .await?
        .click()
        .await?;
    wait_text(&b, "h1", "Pick an account").await?;
    b.client
        .find(Locator::Id("continue"))
        .await?
        .click()
        .await?;
    wait_text(&b, "h1", "Overview")
        .await
        .with_context(|| server.log_text())?;
    assert_eq!(text_of(&b, ".who").await?, "Signed in as alice@contoso.com");
    let url = b.client.current_url().await?;
    assert_eq!(url.as_str(), format!("https://{public}/admin/"));
    assert_eq!(entra.token_requests(), 1);

    // Signed out, then someone the server does not allow signs in at the provider.
    b.client
        .find(Locator::Css("form.logout button"))
        .await?
        .click()
        .await?;
    wait_text(&b, "h1", "Sign in").await?;
    entra.sign_in_as(Some(("mallory@contoso.com", &[])));
    b.client
        .find(Locator::LinkText("Sign in with Contoso"))
        .await?
        .click()
        .await?;
    wait_text(&b, "h1", "Pick an account").await?;
    b.client
        .find(Locator::Id("continue"))
        .await?
        .click()
        .await?;
    let refused = text_of(&b, "#login-error").await?;
    assert!(
        refused.contains("mallory@contoso.com may not administer this server"),
        "{refused}"
    );
    assert_axe_clean(&b, "the sign-in page with a refusal").await?;
    Ok(())
}
