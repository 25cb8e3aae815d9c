//! The pane's HTTP client for its own origin: `GET /api/v1/pane-config` and
//! `POST /api/v1/alias`, with the JSON types from `vmr_protocol`.
//!
//! The server embeds the pane config in `index.html` (a JSON
//! `<script id="vmr-pane-config">`) when the page URL names the
//! integration, so the pane usually needs no config request at all; the
//! fetch is the fallback when the element is absent or is for another
//! integration.

use vmr_protocol::{
    AliasRequest, AliasResponse, ApiError, PaneConfig, ALIAS_PATH, PANE_CONFIG_PATH,
};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestInit, Response};

/// How a request failed.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiFailure {
    /// The server could not be reached, or a proxy said it is down (502–504).
    Unreachable(String),
    /// The server answered with an error.
    Rejected { status: u16, error: ApiError },
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiFailure::Unreachable(why) => write!(f, "server unreachable: {why}"),
            ApiFailure::Rejected { status, error } => {
                write!(f, "{} ({status}): {}", error.code, error.message)
            }
        }
    }
}

fn js_text(v: &JsValue) -> String {
    v.as_string()
        .or_else(|| js_sys::JSON::stringify(v).ok().and_then(|s| s.as_string()))
        .unwrap_or_else(|| "unknown error".into())
}

/// Starts the request now (the browser sends it at once); the returned
/// future yields status and body text.
fn send(request: Request) -> impl std::future::Future<Output = Result<(u16, String), ApiFailure>> {
    let started = web_sys::window()
        .map(|w| JsFuture::from(w.fetch_with_request(&request)))
        .ok_or_else(|| ApiFailure::Unreachable("no window".into()));
    async move {
        let response: Response = started?
            .await
            .map_err(|e| ApiFailure::Unreachable(js_text(&e)))?
            .dyn_into()
            .map_err(|e| ApiFailure::Unreachable(js_text(&e)))?;
        let text = JsFuture::from(
            response
                .text()
                .map_err(|e| ApiFailure::Unreachable(js_text(&e)))?,
        )
        .await
        .map_err(|e| ApiFailure::Unreachable(js_text(&e)))?
        .as_string()
        .unwrap_or_default();
        Ok((response.status(), text))
    }
}

/// Parses JSON with the browser's own parser, then maps it onto `T` (smaller
/// than bundling a JSON parser into the wasm).
fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    let value = js_sys::JSON::parse(text).map_err(|e| js_text(&e))?;
    serde_wasm_bindgen::from_value(value).map_err(|e| e.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(status: u16, text: &str) -> Result<T, ApiFailure> {
    if (200..300).contains(&status) {
        return from_json(text).map_err(|e| ApiFailure::Rejected {
            status,
            error: ApiError {
                code: "bad_response".into(),
                message: format!("the server's answer could not be read: {e}"),
            },
        });
    }
    if matches!(status, 502..=504) {
        return Err(ApiFailure::Unreachable(format!("HTTP {status}")));
    }
    let error = from_json::<ApiError>(text).unwrap_or_else(|_| ApiError {
        code: format!("http_{status}"),
        message: text.chars().take(200).collect(),
    });
    Err(ApiFailure::Rejected { status, error })
}

/// Id of the `<script type="application/json">` element holding the
/// embedded pane config (written by the server's `pane_page.rs`).
pub const EMBEDDED_CONFIG_ID: &str = "vmr-pane-config";

/// The pane config the server embedded in the page, if it is there, parses,
/// and is for `integration`.
pub fn embedded_pane_config(integration: &str) -> Option<PaneConfig> {
    let text = web_sys::window()?
        .document()?
        .get_element_by_id(EMBEDDED_CONFIG_ID)?
        .text_content()?;
    from_json::<PaneConfig>(&text)
        .ok()
        .filter(|c| c.integration == integration)
}

/// The pane config: embedded in the page, else `GET
/// /api/v1/pane-config?integration=…`. The request leaves when this is
/// called, so the pane can wait for Office.js meanwhile.
pub fn pane_config(
    integration: &str,
) -> impl std::future::Future<Output = Result<PaneConfig, ApiFailure>> {
    let embedded = embedded_pane_config(integration);
    let sent = embedded.is_none().then(|| {
        let url = format!(
            "{PANE_CONFIG_PATH}?integration={}",
            js_sys::encode_uri_component(integration)
        );
        Request::new_with_str(&url)
            .map(send)
            .map_err(|e| ApiFailure::Unreachable(js_text(&e)))
    });
    async move {
        match (embedded, sent) {
            (Some(config), _) => Ok(config),
            (None, Some(sent)) => {
                let (status, text) = sent?.await?;
                decode(status, &text)
            }
            (None, None) => Err(ApiFailure::Unreachable("no pane config".into())),
        }
    }
}

/// `POST /api/v1/alias` with the Outlook token.
pub async fn allocate(request: &AliasRequest, token: &str) -> Result<AliasResponse, ApiFailure> {
    let encode_error = |message: String| ApiFailure::Rejected {
        status: 0,
        error: ApiError {
            code: "encode".into(),
            message,
        },
    };
    let value = serde_wasm_bindgen::to_value(request).map_err(|e| encode_error(e.to_string()))?;
    let body: String = js_sys::JSON::stringify(&value)
        .map_err(|e| encode_error(js_text(&e)))?
        .into();
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_body(&JsValue::from_str(&body));
    let request = Request::new_with_str_and_init(ALIAS_PATH, &init)
        .map_err(|e| ApiFailure::Unreachable(js_text(&e)))?;
    let headers = request.headers();
    let _ = headers.set("Content-Type", "application/json");
    let _ = headers.set("Authorization", &format!("Bearer {token}"));
    let (status, text) = send(request).await?;
    decode(status, &text)
}
