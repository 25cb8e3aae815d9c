//! The Office.js bridge in a real browser (headless Chromium via
//! wasm-bindgen-test), against a minimal fake `Office` global that behaves
//! like the real one where it matters: callbacks are always asynchronous and
//! receive `AsyncResult {status, value, error {code, name, message}}`.

#![cfg(target_arch = "wasm32")]

use vmr_addin::office::{self, BodyKind, Host, NotCompose, OfficeError};
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen(inline_js = r#"
export function install_fake(itemType, compose, mailboxVersion) {
  const ok = (value) => ({ status: "succeeded", value, error: null });
  const fail = (code, name, message) => ({ status: "failed", value: undefined, error: { code, name, message } });
  const later = (cb, r) => setTimeout(() => cb(r), 5);
  const lastCb = (args) => args.reverse().find((a) => typeof a === "function");
  let body = "<p>typed</p>";
  const attendees = [];
  const item = {
    itemType,
    subject: compose ? { getAsync: (...a) => later(lastCb(a), ok("Planning")) } : "Planning",
    body: {
      getTypeAsync: (...a) => later(lastCb(a), ok("html")),
      getAsync: (coercion, ...a) => later(lastCb(a), ok("<html><body>" + body + "</body></html>")),
      prependAsync: (data, options, cb) => {
        if (options.coercionType !== "html") { return later(cb, fail(9000, "InvalidCoercion", "wrong coercion")); }
        body = data + body; later(cb, ok(undefined));
      },
    },
    requiredAttendees: {
      addAsync: (list, options, cb) => {
        for (const p of list) {
          if (!p.emailAddress.includes("@")) { return later(cb, fail(9013, "NoValidRecipientsProvided", "bad address")); }
          attendees.push(p.emailAddress);
        }
        later(cb, ok(undefined));
      },
    },
  };
  window.Office = {
    onReady: () => Promise.resolve({ host: "Outlook", platform: "PC" }),
    context: {
      requirements: { isSetSupported: (name, v) => name === "Mailbox" && parseFloat(v) <= mailboxVersion },
      mailbox: {
        item: itemType === "none" ? null : item,
        userProfile: { displayName: "Ann Example", emailAddress: "ann@example.com" },
        getUserIdentityTokenAsync: (cb) => later(cb, fail(9018, "GenericTokenError", "token service down")),
      },
    },
  };
  window.__fake = { body: () => body, attendees: () => attendees.join(",") };
}
export function fake_body() { return window.__fake.body(); }
export function fake_attendees() { return window.__fake.attendees(); }
export function remove_office() { delete window.Office; }
"#)]
extern "C" {
    fn install_fake(item_type: &str, compose: bool, mailbox_version: f64);
    fn fake_body() -> String;
    fn fake_attendees() -> String;
    fn remove_office();
}

#[wasm_bindgen_test]
async fn no_office_js_is_reported() {
    remove_office();
    assert_eq!(office::on_ready().await, Host::NoOfficeJs);
}

#[wasm_bindgen_test]
async fn compose_appointment_round_trip() {
    install_fake("appointment", true, 1.5);
    assert_eq!(office::on_ready().await, Host::Office("Outlook".into()));
    assert!(office::is_set_supported("Mailbox", "1.3"));
    assert!(!office::is_set_supported("Mailbox", "1.7"));
    let item = office::appointment().expect("compose appointment");
    assert_eq!(item.body_type().await, Ok(BodyKind::Html));
    let body = item.body(BodyKind::Html).await.expect("read body");
    assert_eq!(
        body.as_deref(),
        Some("<html><body><p>typed</p></body></html>")
    );
    item.prepend("<b>VMR</b>", BodyKind::Html)
        .await
        .expect("prepend");
    assert_eq!(fake_body(), "<b>VMR</b><p>typed</p>");
    assert_eq!(item.subject().await, Ok("Planning".to_string()));
    // Mailbox 1.5: no organizer API, so the signed-in user is the organizer.
    let organizer = item.organizer().await.expect("organizer");
    assert_eq!(organizer.email_address, "ann@example.com");
    item.add_required_attendee("Room", "room@example.com")
        .await
        .expect("add");
    assert_eq!(fake_attendees(), "room@example.com");
}

#[wasm_bindgen_test]
async fn office_failures_carry_code_name_and_message() {
    install_fake("appointment", true, 1.5);
    let item = office::appointment().expect("compose appointment");
    let err = item
        .prepend("x", BodyKind::Text)
        .await
        .expect_err("text coercion refused");
    assert_eq!(
        err,
        OfficeError {
            code: 9000,
            name: "InvalidCoercion".into(),
            message: "wrong coercion".into()
        }
    );
    let err = item
        .add_required_attendee("x", "not-an-address")
        .await
        .expect_err("bad address");
    assert_eq!(err.code, 9013);
    let err = office::identity_token().await.expect_err("token failure");
    assert_eq!((err.code, err.name.as_str()), (9018, "GenericTokenError"));
    assert!(err.to_string().contains("token service down"));
}

#[wasm_bindgen_test]
async fn read_mode_and_messages_are_not_compose() {
    install_fake("appointment", false, 1.5);
    assert!(matches!(
        office::appointment(),
        Err(NotCompose::NotOrganizing)
    ));
    install_fake("message", true, 1.5);
    assert!(matches!(
        office::appointment(),
        Err(NotCompose::NotOrganizing)
    ));
    install_fake("none", true, 1.5);
    assert!(matches!(office::appointment(), Err(NotCompose::NoItem)));
}

#[wasm_bindgen_test]
async fn missing_apis_are_errors_not_panics() {
    install_fake("appointment", true, 1.1);
    let item = office::appointment().expect("compose appointment");
    // body.getAsync needs Mailbox 1.3: skipped, not called.
    assert_eq!(item.body(BodyKind::Html).await, Ok(None));
    let err = office::call_async(&wasm_bindgen::JsValue::NULL, "getAsync", &[])
        .await
        .expect_err("nothing to call");
    assert_eq!(err.name, "MissingApi");
}
