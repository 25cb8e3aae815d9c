//! The one bridge to MSAL.js, for Nested App Authentication (Microsoft 365).
//!
//! Where Exchange identity tokens are switched off (Exchange Online), the pane
//! signs in through MSAL.js running inside Outlook: MSAL is loaded on demand
//! from the URL in the pane config, `createNestablePublicClientApplication`
//! builds the client, and `acquireTokenSilent` (falling back to
//! `acquireTokenPopup` when interaction is needed) yields the access token
//! the server validates against the tenant's keys.

use js_sys::{Array, Function, Object, Promise, Reflect};
use vmr_protocol::NaaPaneSettings;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

/// An MSAL failure: its `errorCode` and `errorMessage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NaaError {
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for NaaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl NaaError {
    fn new(code: &str, message: impl Into<String>) -> Self {
        NaaError {
            code: code.to_string(),
            message: message.into(),
        }
    }

    fn from_js(value: &JsValue) -> Self {
        let text = |key: &str| {
            Reflect::get(value, &key.into())
                .ok()
                .and_then(|v| v.as_string())
        };
        NaaError {
            code: text("errorCode").unwrap_or_else(|| "msal_error".into()),
            message: text("errorMessage")
                .or_else(|| text("message"))
                .or_else(|| value.as_string())
                .unwrap_or_else(|| "MSAL failed".into()),
        }
    }
}

/// Loads `src` with a `<script>` element unless `window.msal` exists.
async fn load_msal(src: &str) -> Result<JsValue, NaaError> {
    let global: JsValue = js_sys::global().into();
    let existing = Reflect::get(&global, &"msal".into()).unwrap_or(JsValue::UNDEFINED);
    if existing.is_object() {
        return Ok(existing);
    }
    let document = web_sys::window()
        .and_then(|w| w.document())
        .ok_or_else(|| NaaError::new("no_document", "no document to load MSAL.js into"))?;
    let script = document
        .create_element("script")
        .map_err(|e| NaaError::from_js(&e))?;
    script
        .set_attribute("src", src)
        .map_err(|e| NaaError::from_js(&e))?;
    let loaded = Promise::new(&mut |resolve, reject| {
        let _ = Reflect::set(&script, &"onload".into(), &resolve);
        let _ = Reflect::set(&script, &"onerror".into(), &reject);
    });
    document
        .head()
        .ok_or_else(|| NaaError::new("no_document", "the page has no <head>"))?
        .append_child(&script)
        .map_err(|e| NaaError::from_js(&e))?;
    JsFuture::from(loaded).await.map_err(|_| {
        NaaError::new(
            "msal_unavailable",
            format!("MSAL.js could not be loaded from {src}"),
        )
    })?;
    Reflect::get(&global, &"msal".into())
        .ok()
        .filter(JsValue::is_object)
        .ok_or_else(|| NaaError::new("msal_unavailable", format!("{src} did not define msal")))
}

/// Calls `target[method](arg)` and awaits the Promise it returns.
async fn call_promise(target: &JsValue, method: &str, arg: &JsValue) -> Result<JsValue, NaaError> {
    let f: Function = Reflect::get(target, &method.into())
        .ok()
        .and_then(|f| f.dyn_into().ok())
        .ok_or_else(|| NaaError::new("msal_unavailable", format!("MSAL has no {method}")))?;
    let promise: Promise = f
        .call1(target, arg)
        .map_err(|e| NaaError::from_js(&e))?
        .dyn_into()
        .map_err(|_| NaaError::new("msal_error", format!("{method} did not return a Promise")))?;
    JsFuture::from(promise)
        .await
        .map_err(|e| NaaError::from_js(&e))
}

/// Gets an access token for `settings.scopes`.
pub async fn access_token(settings: &NaaPaneSettings) -> Result<String, NaaError> {
    let msal = load_msal(&settings.msal_js).await?;
    let auth = Object::new();
    let _ = Reflect::set(
        &auth,
        &"clientId".into(),
        &settings.client_id.as_str().into(),
    );
    let _ = Reflect::set(
        &auth,
        &"authority".into(),
        &settings.authority.as_str().into(),
    );
    let config = Object::new();
    let _ = Reflect::set(&config, &"auth".into(), &auth);
    let client = call_promise(&msal, "createNestablePublicClientApplication", &config).await?;
    let scopes: Array = settings
        .scopes
        .iter()
        .map(|s| JsValue::from_str(s))
        .collect();
    let request = Object::new();
    let _ = Reflect::set(&request, &"scopes".into(), &scopes);
    let result = match call_promise(&client, "acquireTokenSilent", &request).await {
        Ok(r) => r,
        // Consent or sign-in needed: MSAL shows Outlook's own prompt.
        Err(_) => call_promise(&client, "acquireTokenPopup", &request).await?,
    };
    Reflect::get(&result, &"accessToken".into())
        .ok()
        .and_then(|t| t.as_string())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| NaaError::new("no_token", "MSAL returned no access token"))
}
