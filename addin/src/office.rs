//! The one bridge between the pane and Office.js.
//!
//! Every Office.js access goes through here. Callback-style calls
//! (`xxxAsync(args…, callback)`) become Futures through [`call_async`], which
//! resolves with `asyncResult.value` or fails with an [`OfficeError`] carrying
//! Office's own error code, name and message. Objects are looked up fresh on
//! every call (`Office.context.mailbox.item` changes when a pinned pane moves
//! to another item). Nothing above Mailbox 1.5 is required: newer APIs are
//! used only after `isSetSupported` says they exist.

use js_sys::{Array, Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

/// An Office.js failure: `asyncResult.error`, or a missing API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfficeError {
    /// Office's numeric error code (0 when the failure is ours).
    pub code: i64,
    /// Office's error name, e.g. `GenericTokenError`.
    pub name: String,
    pub message: String,
}

impl OfficeError {
    fn local(name: &str, message: impl Into<String>) -> Self {
        OfficeError {
            code: 0,
            name: name.to_string(),
            message: message.into(),
        }
    }

    fn from_js(value: &JsValue) -> Self {
        let code = get(value, "code")
            .ok()
            .and_then(|c| c.as_f64())
            .unwrap_or(0.0) as i64;
        let name = get(value, "name")
            .ok()
            .and_then(|v| v.as_string())
            .unwrap_or_else(|| "Error".to_string());
        let message = get(value, "message")
            .ok()
            .and_then(|v| v.as_string())
            .or_else(|| value.as_string())
            .unwrap_or_else(|| "unknown Office.js error".to_string());
        OfficeError {
            code,
            name,
            message,
        }
    }
}

impl std::fmt::Display for OfficeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.name, self.code, self.message)
    }
}

fn get(target: &JsValue, key: &str) -> Result<JsValue, OfficeError> {
    if target.is_undefined() || target.is_null() {
        return Err(OfficeError::local(
            "MissingApi",
            format!("cannot read {key:?} of nothing"),
        ));
    }
    Reflect::get(target, &JsValue::from_str(key))
        .map_err(|_| OfficeError::local("MissingApi", format!("cannot read {key:?}")))
}

/// Walks a dotted path from the global object, e.g. `Office.context.mailbox`.
pub fn path(dotted: &str) -> Result<JsValue, OfficeError> {
    let mut node: JsValue = js_sys::global().into();
    for key in dotted.split('.') {
        node = get(&node, key)?;
        if node.is_undefined() || node.is_null() {
            return Err(OfficeError::local(
                "MissingApi",
                format!("{dotted} is not available (no {key})"),
            ));
        }
    }
    Ok(node)
}

/// Calls `target[method](...args, callback)` and waits for the callback.
/// Resolves with `asyncResult.value`; fails with `asyncResult.error`.
pub async fn call_async(
    target: &JsValue,
    method: &str,
    args: &[JsValue],
) -> Result<JsValue, OfficeError> {
    let function: Function = get(target, method)?
        .dyn_into()
        .map_err(|_| OfficeError::local("MissingApi", format!("{method} is not a function")))?;
    let mut resolve_reject = None;
    let promise = Promise::new(&mut |resolve, reject| resolve_reject = Some((resolve, reject)));
    let (resolve, reject) = resolve_reject
        .ok_or_else(|| OfficeError::local("Internal", "Promise executor did not run"))?;
    let callback = Closure::once_into_js(move |result: JsValue| {
        let status = get(&result, "status")
            .ok()
            .and_then(|s| s.as_string())
            .unwrap_or_default();
        if status == "succeeded" {
            let value = get(&result, "value").unwrap_or(JsValue::UNDEFINED);
            let _ = resolve.call1(&JsValue::NULL, &value);
        } else {
            let error = get(&result, "error").unwrap_or(JsValue::UNDEFINED);
            let _ = reject.call1(&JsValue::NULL, &error);
        }
    });
    let all = Array::new();
    for a in args {
        all.push(a);
    }
    all.push(&callback);
    function
        .apply(target, &all)
        .map_err(|e| OfficeError::from_js(&e))?;
    JsFuture::from(promise)
        .await
        .map_err(|e| OfficeError::from_js(&e))
}

/// Where the pane is running, from `Office.onReady`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// Office.js did not load (blocked, offline copy missing).
    NoOfficeJs,
    /// Office.js loaded but the page is not inside an Office host.
    NotInOffice,
    /// Inside an Office host; the name (`Outlook`, …).
    Office(String),
}

/// Waits for `Office.onReady` and says where we are.
pub async fn on_ready() -> Host {
    let Ok(on_ready) = path("Office.onReady") else {
        return Host::NoOfficeJs;
    };
    let Ok(on_ready) = on_ready.dyn_into::<Function>() else {
        return Host::NoOfficeJs;
    };
    let office = path("Office").unwrap_or(JsValue::UNDEFINED);
    let info = match on_ready.call0(&office) {
        Ok(p) if p.is_instance_of::<Promise>() => JsFuture::from(Promise::from(p)).await,
        _ => return Host::NoOfficeJs,
    };
    match info
        .ok()
        .and_then(|i| get(&i, "host").ok())
        .and_then(|h| h.as_string())
    {
        Some(host) => Host::Office(host),
        None => Host::NotInOffice,
    }
}

/// Waits for [`on_ready`], but never forever: gives up after `timeout_ms`,
/// or as soon as a script fails while Office.js starts (`boot.js` records
/// those), or when there is no Office.js at all. `Err` carries the reason in
/// words, with the recorded errors.
pub async fn start(timeout_ms: u32) -> Result<Host, String> {
    let ready = wasm_bindgen_futures::future_to_promise(async {
        Ok(match on_ready().await {
            Host::Office(name) => JsValue::from_str(&format!("office:{name}")),
            Host::NotInOffice => JsValue::from_str("not-in-office"),
            Host::NoOfficeJs => JsValue::from_str("no-office-js"),
        })
    });
    let failed = path("vmrBoot.failed")
        .ok()
        .and_then(|p| p.dyn_into::<Promise>().ok())
        .map(|p| {
            wasm_bindgen_futures::future_to_promise(async move {
                let _ = JsFuture::from(p).await;
                Ok(JsValue::from_str("failed"))
            })
        })
        .unwrap_or_else(|| Promise::new(&mut |_, _| {}));
    let timeout = Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_1(
                &resolve,
                timeout_ms as i32,
                &JsValue::from_str("timeout"),
            );
        }
    });
    let first = JsFuture::from(Promise::race(&Array::of3(&ready, &failed, &timeout)))
        .await
        .ok()
        .and_then(|v| v.as_string())
        .unwrap_or_default();
    let errors = boot_errors().join("; ");
    let seconds = format!("{}.{}", timeout_ms / 1000, timeout_ms % 1000 / 100);
    if let Some(name) = first.strip_prefix("office:") {
        return Ok(Host::Office(name.to_string()));
    }
    match first.as_str() {
        "not-in-office" => Ok(Host::NotInOffice),
        "timeout" if errors.is_empty() => Err(format!(
            "Office.js did not become ready within {seconds} s: Outlook did not answer its start-up handshake."
        )),
        "timeout" => Err(format!(
            "Office.js did not become ready within {seconds} s: {errors}"
        )),
        _ if errors.is_empty() => Err("Office.js is not loaded (there is no Office object).".into()),
        _ => Err(errors),
    }
}

/// What `boot.js` recorded: script errors and failed loads, then policy
/// violations.
pub fn boot_errors() -> Vec<String> {
    let list = |name: &str| -> Vec<String> {
        path(name)
            .ok()
            .map(|a| {
                Array::from(&a)
                    .iter()
                    .filter_map(|v| v.as_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut all = list("vmrBoot.errors");
    all.extend(
        list("vmrBoot.violations")
            .into_iter()
            .map(|v| format!("Content-Security-Policy: {v}")),
    );
    all
}

/// `Office.context.requirements.isSetSupported(name, version)`; false when
/// the API itself is missing.
pub fn is_set_supported(name: &str, version: &str) -> bool {
    let Ok(requirements) = path("Office.context.requirements") else {
        return false;
    };
    let Ok(f) = get(&requirements, "isSetSupported").and_then(|f| {
        f.dyn_into::<Function>()
            .map_err(|_| OfficeError::local("MissingApi", "isSetSupported"))
    }) else {
        return false;
    };
    f.call2(&requirements, &name.into(), &version.into())
        .map(|v| v.is_truthy())
        .unwrap_or(false)
}

/// Why the current item cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotCompose {
    /// No item (e.g. a pinned pane with nothing selected).
    NoItem,
    /// A message, or a meeting being read rather than organized.
    NotOrganizing,
}

/// The appointment being organized.
pub struct Appointment {
    item: JsValue,
}

/// The current item, if it is an appointment in compose (organizer) mode.
/// In compose mode `subject` is an object with `getAsync`; in read mode it
/// is a plain string.
pub fn appointment() -> Result<Appointment, NotCompose> {
    let item = path("Office.context.mailbox.item").map_err(|_| NotCompose::NoItem)?;
    let item_type = get(&item, "itemType").ok().and_then(|t| t.as_string());
    let subject = get(&item, "subject").unwrap_or(JsValue::UNDEFINED);
    if item_type.as_deref() != Some("appointment") || !subject.is_object() {
        return Err(NotCompose::NotOrganizing);
    }
    Ok(Appointment { item })
}

fn coercion_options(coercion: BodyKind) -> JsValue {
    let options = Object::new();
    let _ = Reflect::set(&options, &"coercionType".into(), &coercion.as_str().into());
    options.into()
}

/// `"html"` or `"text"`, as `Office.CoercionType` spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Html,
    Text,
}

impl BodyKind {
    fn as_str(self) -> &'static str {
        match self {
            BodyKind::Html => "html",
            BodyKind::Text => "text",
        }
    }
}

/// A name and address from Office.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailUser {
    pub display_name: String,
    pub email_address: String,
}

impl Appointment {
    fn part(&self, name: &str) -> Result<JsValue, OfficeError> {
        get(&self.item, name)
    }

    /// `body.getTypeAsync` (Mailbox 1.1).
    pub async fn body_type(&self) -> Result<BodyKind, OfficeError> {
        let body = self.part("body")?;
        let kind = call_async(&body, "getTypeAsync", &[Object::new().into()]).await?;
        Ok(if kind.as_string().as_deref() == Some("html") {
            BodyKind::Html
        } else {
            BodyKind::Text
        })
    }

    /// `body.getAsync(coercion)` (Mailbox 1.3); `None` when not supported.
    pub async fn body(&self, kind: BodyKind) -> Result<Option<String>, OfficeError> {
        if !is_set_supported("Mailbox", "1.3") {
            return Ok(None);
        }
        let body = self.part("body")?;
        let text = call_async(
            &body,
            "getAsync",
            &[kind.as_str().into(), Object::new().into()],
        )
        .await?;
        Ok(text.as_string())
    }

    /// `body.prependAsync(data, {coercionType})` (Mailbox 1.1): inserts at the top.
    pub async fn prepend(&self, data: &str, kind: BodyKind) -> Result<(), OfficeError> {
        let body = self.part("body")?;
        call_async(
            &body,
            "prependAsync",
            &[data.into(), coercion_options(kind)],
        )
        .await?;
        Ok(())
    }

    /// `subject.getAsync` (Mailbox 1.1).
    pub async fn subject(&self) -> Result<String, OfficeError> {
        let subject = self.part("subject")?;
        Ok(call_async(&subject, "getAsync", &[Object::new().into()])
            .await?
            .as_string()
            .unwrap_or_default())
    }

    /// The organizer: `organizer.getAsync` where Mailbox 1.7 exists (delegates
    /// see the calendar owner), else the signed-in user.
    pub async fn organizer(&self) -> Option<EmailUser> {
        if is_set_supported("Mailbox", "1.7") {
            if let Ok(organizer) = self.part("organizer") {
                if let Ok(v) = call_async(&organizer, "getAsync", &[Object::new().into()]).await {
                    return email_user(&v);
                }
            }
        }
        path("Office.context.mailbox.userProfile")
            .ok()
            .and_then(|p| email_user(&p))
    }

    /// `requiredAttendees.addAsync([{displayName, emailAddress}])` (Mailbox 1.1).
    pub async fn add_required_attendee(&self, name: &str, email: &str) -> Result<(), OfficeError> {
        let attendees = self.part("requiredAttendees")?;
        let person = Object::new();
        let _ = Reflect::set(&person, &"displayName".into(), &name.into());
        let _ = Reflect::set(&person, &"emailAddress".into(), &email.into());
        let list = Array::of1(&person);
        call_async(&attendees, "addAsync", &[list.into(), Object::new().into()]).await?;
        Ok(())
    }
}

fn email_user(v: &JsValue) -> Option<EmailUser> {
    let email_address = get(v, "emailAddress").ok()?.as_string()?;
    let display_name = get(v, "displayName")
        .ok()
        .and_then(|n| n.as_string())
        .unwrap_or_default();
    Some(EmailUser {
        display_name,
        email_address,
    })
}

/// `Office.context.mailbox.getUserIdentityTokenAsync` (Mailbox 1.1).
pub async fn identity_token() -> Result<String, OfficeError> {
    let mailbox = path("Office.context.mailbox")?;
    let token = call_async(&mailbox, "getUserIdentityTokenAsync", &[]).await?;
    token
        .as_string()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OfficeError::local("GenericTokenError", "Outlook returned an empty token"))
}
