//! The pane's `index.html` as served: the Trunk build with the Office.js
//! scripts put in place, and, in local (air-gapped) mode, the
//! Content-Security-Policy that keeps the pane on the add-in host.
//!
//! `addin/index.html` holds one placeholder element,
//! `<script src="%OFFICE_JS_URL%"></script>`, right after the pane's boot
//! script. [`PanePage::prepare`] replaces it with, in order: a `<meta>`
//! carrying the Office.js start-up timeout, `MicrosoftAjax.js` (local mode),
//! the configured additional script sources, and Office.js itself. Every
//! value is HTML-escaped.
//!
//! The policy (local mode only) allows scripts, styles, fonts, images and
//! connections from the page's own origin (`'self'`, the add-in host), the
//! inline scripts Trunk wrote (by their SHA-256), WebAssembly compilation
//! (`'wasm-unsafe-eval'`), and the origins of configured extra script
//! sources and MSAL.js (`naa_msal_js`, and the NAA authority for
//! connections). Nothing else: a dependency that would reach out fails
//! loudly (and shows up in the pane's debug log) instead of leaking.
//!
//! Per request, [`PanePage::response`] embeds the integration's pane config
//! (what `/api/v1/pane-config` answers) as a JSON data block,
//! `<script type="application/json" id="vmr-pane-config">`, so the pane
//! renders without that round trip. [`json_for_html`] escapes `<`, `>`, `&`
//! and the JavaScript line separators, so no value can end the element. The
//! wasm and its JS glue are preloaded by the `<link rel="preload">` /
//! `modulepreload` Trunk writes.

use anyhow::{bail, Result};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::manifest::xml_escape;
use vmr_core::config::{IntegrationConfig, ServerConfig};
use vmr_protocol::PaneConfig;

/// The placeholder element in `addin/index.html`.
pub const OFFICE_JS_ELEMENT: &str = r#"<script src="%OFFICE_JS_URL%"></script>"#;

/// Name of the `<meta>` that tells the pane how long to wait for Office.js.
pub const TIMEOUT_META: &str = "vmr-office-js-timeout-ms";

/// The prepared `index.html` and its policy.
#[derive(Debug, Clone)]
pub struct PanePage {
    /// The page as sent.
    pub html: String,
    /// `Content-Security-Policy` value (local mode only).
    pub csp: Option<HeaderValue>,
}

impl PanePage {
    /// Puts the scripts into `built` (the Trunk output) and computes the
    /// policy. Fails when the placeholder is missing (a stale or foreign
    /// build) or the policy is not a valid header value.
    pub fn prepare(
        built: &str,
        server: &ServerConfig,
        integrations: &[IntegrationConfig],
    ) -> Result<PanePage> {
        if !built.contains(OFFICE_JS_ELEMENT) {
            bail!(
                "the pane's index.html lacks the Office.js placeholder {OFFICE_JS_ELEMENT}: \
                 rebuild it with `cargo xtask build-pane`"
            );
        }
        let mut scripts = format!(
            "<meta name=\"{TIMEOUT_META}\" content=\"{}\">",
            server.office_js_timeout_ms
        );
        for url in server.pane_script_urls() {
            scripts.push_str(&format!(
                "\n  <script src=\"{}\"></script>",
                xml_escape(&url)
            ));
        }
        let html = built.replacen(OFFICE_JS_ELEMENT, &scripts, 1);
        let csp = if server.is_local_office_js() {
            let policy = policy(&html, server, integrations);
            Some(HeaderValue::from_str(&policy).map_err(|e| {
                anyhow::anyhow!("the Content-Security-Policy {policy:?} is not a header value: {e}")
            })?)
        } else {
            None
        };
        Ok(PanePage { html, csp })
    }

    /// The HTTP answer: the page with `config` embedded (when given), never
    /// cached (it names hashed assets), with the policy when there is one.
    pub fn response(&self, config: Option<&PaneConfig>) -> Response {
        let html = match config {
            Some(config) => embed_config(&self.html, config),
            None => self.html.clone(),
        };
        let mut response = (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            html,
        )
            .into_response();
        if let Some(csp) = &self.csp {
            response
                .headers_mut()
                .insert(header::CONTENT_SECURITY_POLICY, csp.clone());
        }
        response
    }
}

/// Id of the embedded pane config element (the pane's `api.rs` reads it).
pub const EMBEDDED_CONFIG_ID: &str = "vmr-pane-config";

/// `html` with `config` as a JSON data block at the end of `<head>` (or
/// before `<body>`/at the end when there is no `</head>`).
pub fn embed_config(html: &str, config: &PaneConfig) -> String {
    let element = format!(
        "<script type=\"application/json\" id=\"{EMBEDDED_CONFIG_ID}\">{}</script>",
        json_for_html(config)
    );
    match html.find("</head>") {
        Some(at) => format!("{}{element}{}", &html[..at], &html[at..]),
        None => format!("{html}{element}"),
    }
}

/// JSON that is safe inside a `<script>` element: `<`, `>` and `&` as
/// `\u003c`, `\u003e`, `\u0026` (so `</script>` and `<!--` cannot appear),
/// and U+2028/U+2029 escaped. Only string contents can hold these
/// characters, where the escapes mean the same.
pub fn json_for_html(value: &impl serde::Serialize) -> String {
    let json = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// The Content-Security-Policy for `html` in local mode.
pub fn policy(html: &str, server: &ServerConfig, integrations: &[IntegrationConfig]) -> String {
    let mut script = vec!["'self'".to_string(), "'wasm-unsafe-eval'".to_string()];
    script.extend(
        inline_scripts(html)
            .into_iter()
            .map(|body| format!("'sha256-{}'", sha256_base64(body))),
    );
    let mut connect = vec!["'self'".to_string()];
    for src in &server.additional_add_in_script_sources {
        push_origin(&mut script, src);
    }
    for i in integrations {
        if let Some(msal) = &i.auth.naa_msal_js {
            push_origin(&mut script, msal);
        }
        if i.auth.method == vmr_protocol::AuthMethod::NaaToken {
            push_origin(&mut connect, &i.auth.naa_authority);
        }
    }
    format!(
        "default-src 'none'; script-src {}; style-src 'self'; font-src 'self'; \
         img-src 'self' data:; connect-src {}; base-uri 'none'; form-action 'none'",
        script.join(" "),
        connect.join(" ")
    )
}

/// `https://host[:port]` of an https URL (paths stay under `'self'`);
/// skipped when already present or not a plain origin.
fn push_origin(list: &mut Vec<String>, url: &str) {
    let Some(rest) = url.strip_prefix("https://") else {
        return;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let plain = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
    let origin = format!("https://{host}");
    if plain && !list.contains(&origin) {
        list.push(origin);
    }
}

/// Bodies of the executable inline scripts (no `src`, no data-block type).
pub fn inline_scripts(html: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<script") {
        let after = &rest[start..];
        let Some(tag_end) = after.find('>') else {
            break;
        };
        let tag = &after[..tag_end];
        let body_and_more = &after[tag_end + 1..];
        let Some(close) = body_and_more.find("</script>") else {
            break;
        };
        let body = &body_and_more[..close];
        let data_block = tag.contains("application/json") || tag.contains("importmap");
        if !tag.contains(" src=") && !data_block {
            found.push(body);
        }
        rest = &body_and_more[close + "</script>".len()..];
    }
    found
}

fn sha256_base64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUILT: &str = "<head><script src=\"/pane/boot-1a2b3c4d5e6f7a8b.js\"></script>\
        <script src=\"%OFFICE_JS_URL%\"></script>\n\
        <script type=\"module\">\nimport init from '/pane/x.js';\n</script></head>";

    fn server(mode: &str) -> ServerConfig {
        ServerConfig {
            office_js: mode.into(),
            public_host: "addin.example.com".into(),
            ..ServerConfig::default()
        }
    }

    #[test]
    fn local_mode_loads_microsoft_ajax_first_and_sends_a_policy() {
        let mut s = server("local");
        s.additional_add_in_script_sources = vec![
            "/static/extra.js?a=1&b=2".into(),
            "https://scripts.example.com:8443/x.js".into(),
        ];
        let page = PanePage::prepare(BUILT, &s, &[IntegrationConfig::default()]).expect("page");
        let ajax = page.html.find("/office-js/MicrosoftAjax.js").expect("ajax");
        let extra = page
            .html
            .find("/static/extra.js?a=1&amp;b=2")
            .expect("escaped");
        let office = page.html.find("/office-js/office.js").expect("office");
        assert!(ajax < extra && extra < office, "{}", page.html);
        assert!(page
            .html
            .contains("<meta name=\"vmr-office-js-timeout-ms\" content=\"5000\">"));
        let csp = page
            .csp
            .expect("policy")
            .to_str()
            .expect("ascii")
            .to_string();
        assert!(
            csp.starts_with("default-src 'none'; script-src 'self' 'wasm-unsafe-eval' 'sha256-"),
            "{csp}"
        );
        assert!(csp.contains("https://scripts.example.com:8443"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        let body = "\nimport init from '/pane/x.js';\n";
        assert!(
            csp.contains(&format!("'sha256-{}'", sha256_base64(body))),
            "{csp}"
        );
    }

    #[test]
    fn other_modes_have_no_policy_and_no_microsoft_ajax() {
        let page = PanePage::prepare(BUILT, &server("cdn"), &[]).expect("page");
        assert!(page.csp.is_none());
        assert!(!page.html.contains("MicrosoftAjax"));
        assert!(page.html.contains(
            "<script src=\"https://appsforoffice.microsoft.com/lib/1/hosted/office.js\"></script>"
        ));
    }

    #[test]
    fn a_build_without_the_placeholder_is_refused() {
        let e = PanePage::prepare("<head></head>", &server("local"), &[]).expect_err("stale");
        assert!(e.to_string().contains("cargo xtask build-pane"), "{e}");
    }

    #[test]
    fn msal_and_authority_origins_are_allowed_for_naa() {
        let mut i = IntegrationConfig::default();
        i.auth.method = vmr_protocol::AuthMethod::NaaToken;
        i.auth.naa_msal_js = Some("https://addin.example.com/static/msal/msal.js".into());
        i.auth.naa_authority = "https://login.example.com/organizations".into();
        let csp = policy(BUILT, &server("local"), &[i]);
        assert!(
            csp.contains("script-src 'self' 'wasm-unsafe-eval'"),
            "{csp}"
        );
        assert!(csp.contains("https://addin.example.com"), "{csp}");
        assert!(
            csp.contains("connect-src 'self' https://login.example.com;"),
            "{csp}"
        );
    }

    #[test]
    fn embedded_config_is_inert_and_round_trips() {
        let mut config = vmr_protocol::PaneConfig {
            integration: "default".into(),
            auth_method: vmr_protocol::AuthMethod::ExchangeUserIdToken,
            debug_logs: false,
            texts: vmr_protocol::PaneTexts::default(),
            naa: None,
        };
        config.texts.title = "</script><script>alert(1)</script> & <!-- \u{2028}".into();
        let html = embed_config(BUILT, &config);
        let start = html.find("id=\"vmr-pane-config\">").expect("element") + 21;
        let body = &html[start..start + html[start..].find("</script>").expect("end")];
        assert!(
            !body.contains('<') && !body.contains('>') && !body.contains('&'),
            "{body}"
        );
        assert!(!body.contains('\u{2028}'), "{body}");
        let back: vmr_protocol::PaneConfig = serde_json::from_str(body).expect("JSON");
        assert_eq!(back, config);
        assert!(html.find("vmr-pane-config").expect("in") < html.find("</head>").expect("head"));
        // The data block is not script: the policy's hashes stay the same.
        assert_eq!(inline_scripts(&html), inline_scripts(BUILT));
    }

    #[test]
    fn only_executable_inline_scripts_are_hashed() {
        let html = "<script src=\"a.js\"></script><script>one</script>\
            <script type=\"application/json\" id=\"c\">{}</script><script type=\"module\">two</script>";
        assert_eq!(inline_scripts(html), ["one", "two"]);
    }
}
