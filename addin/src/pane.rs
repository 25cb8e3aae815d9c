//! The task pane: what it shows in each state, and the click flow.
//!
//! Start: wait for Office.js (never longer than the server's timeout: then,
//! or when a script fails while it starts, the pane says "Office.js could not
//! start" and why) and the pane texts (`/api/v1/pane-config`), then check
//! that an appointment is being organized. Click ([`add_vmr`]): read the
//! body; if it already holds a tag, stop ("already assigned"); otherwise get
//! a token, ask for an alias, insert instructions + tag (or placeholder +
//! `TOK:-…#` when management is down) at the top of the body in the body's own
//! format, and add the equipment resource as a required attendee.

use vmr_protocol::tag::{has_tag_marker, tok_tag_lines};
use vmr_protocol::{AliasRequest, AliasResponse, AuthMethod, Instructions, PaneConfig, Person};
use yew::prelude::*;

use crate::api::{self, ApiFailure};
use crate::debug;
use crate::office::{self, BodyKind, Host, NotCompose};

/// How long to wait for Office.js when the page does not say (milliseconds).
const DEFAULT_OFFICE_TIMEOUT_MS: u32 = 5000;

/// Where the pane explains its messages.
const HELP_URL: &str = "/static/help.html#office-js";

/// Everything the pane can be showing.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    Loading,
    /// Not inside Outlook; the reason.
    NotInOutlook(String),
    /// Office.js did not start (missing, blocked, threw, or no answer from
    /// Outlook within the timeout); the reason.
    OfficeFailed(String),
    /// Inside Outlook but not organizing an appointment.
    NotOrganizing,
    /// The server could not be reached.
    Unavailable,
    Ready,
    Working,
    Success,
    AlreadyAssigned,
    ManagementDown,
    /// Something failed; the user may retry. The detail is shown in small print.
    Error(String),
}

/// Outcome of one click.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success,
    AlreadyAssigned,
    ManagementDown,
    Unavailable,
    Error(String),
}

fn integration_from_location() -> String {
    web_sys::window()
        .and_then(|w| w.location().search().ok())
        .and_then(|search| {
            search
                .trim_start_matches('?')
                .split('&')
                .find_map(|kv| kv.strip_prefix("integration=").map(str::to_string))
        })
        .and_then(|v| {
            js_sys::decode_uri_component(&v)
                .ok()
                .and_then(|s| s.as_string())
        })
        .unwrap_or_else(|| "default".to_string())
}

/// The Office.js start-up timeout the server put into the page
/// (`<meta name="vmr-office-js-timeout-ms">`).
fn office_timeout_ms() -> u32 {
    web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| {
            d.query_selector("meta[name=vmr-office-js-timeout-ms]")
                .ok()
                .flatten()
        })
        .and_then(|m| m.get_attribute("content"))
        .and_then(|c| c.parse().ok())
        .unwrap_or(DEFAULT_OFFICE_TIMEOUT_MS)
}

/// The click flow, independent of rendering.
pub async fn add_vmr(config: &PaneConfig) -> Outcome {
    let item = match office::appointment() {
        Ok(item) => item,
        Err(_) => return Outcome::Error("this is not a meeting being organized".into()),
    };
    let kind = match item.body_type().await {
        Ok(k) => k,
        Err(e) => return Outcome::Error(format!("reading the body type failed: {e}")),
    };
    match item.body(kind).await {
        Ok(Some(body)) if has_tag_marker(&body, kind == BodyKind::Html) => {
            return Outcome::AlreadyAssigned
        }
        Ok(_) => {}
        Err(e) => return Outcome::Error(format!("reading the body failed: {e}")),
    }
    let token = match config.auth_method {
        AuthMethod::ExchangeUserIdToken => match office::identity_token().await {
            Ok(t) => t,
            Err(e) => return Outcome::Error(format!("Outlook did not give a token: {e}")),
        },
        AuthMethod::NaaToken => {
            let Some(naa) = &config.naa else {
                return Outcome::Error("the server sent no NAA sign-in settings".into());
            };
            match crate::naa::access_token(naa).await {
                Ok(t) => t,
                Err(e) => return Outcome::Error(format!("signing in failed: {e}")),
            }
        }
    };
    let subject = item.subject().await.unwrap_or_default();
    let organizer = item.organizer().await.map(|u| Person {
        name: u.display_name,
        email: u.email_address,
    });
    let request = AliasRequest {
        integration: config.integration.clone(),
        subject,
        organizer,
    };
    let (text, resource, outcome) = match api::allocate(&request, &token).await {
        Ok(AliasResponse::Allocated {
            instructions,
            resource,
            ..
        }) => (pick(&instructions, kind), resource, Outcome::Success),
        Ok(AliasResponse::Deferred {
            placeholder,
            tok,
            resource,
        }) => (
            with_tok(&placeholder, &tok, kind),
            resource,
            Outcome::ManagementDown,
        ),
        Err(ApiFailure::Unreachable(_)) => return Outcome::Unavailable,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    if let Err(e) = item.prepend(&text, kind).await {
        return Outcome::Error(format!("inserting the joining instructions failed: {e}"));
    }
    if let Err(e) = item
        .add_required_attendee(&resource.name, &resource.email)
        .await
    {
        return Outcome::Error(format!("adding {} failed: {e}", resource.email));
    }
    outcome
}

fn pick(instructions: &Instructions, kind: BodyKind) -> String {
    match kind {
        BodyKind::Html => format!("{}<br>", instructions.html),
        BodyKind::Text => format!("{}\n", instructions.text),
    }
}

/// Placeholder plus the edge's deferral statement as a `TOK:-…#` tag wrapped
/// over several lines (never the user's own token).
pub fn with_tok(placeholder: &Instructions, tok: &str, kind: BodyKind) -> String {
    let lines = tok_tag_lines(tok);
    match kind {
        BodyKind::Html => format!(
            "{}<div style=\"font-family:monospace;font-size:8pt\">{}</div><br>",
            placeholder.html,
            lines.join("<br>")
        ),
        BodyKind::Text => format!("{}\n{}\n\n", placeholder.text.trim_end(), lines.join("\n")),
    }
}

/// The pane component.
#[function_component(Pane)]
pub fn pane() -> Html {
    let phase = use_state(|| Phase::Loading);
    let config = use_state(|| None::<PaneConfig>);
    {
        let phase = phase.clone();
        let config = config.clone();
        use_effect_with((), move |_| {
            wasm_bindgen_futures::spawn_local(async move {
                let integration = integration_from_location();
                // The config request is already on its way while Office.js starts.
                let fetched = api::pane_config(&integration);
                let timeout = office_timeout_ms();
                if let Some(search) = web_sys::window().and_then(|w| w.location().search().ok()) {
                    debug::log(format!(
                        "page query {search}; waiting up to {timeout} ms for Office.js"
                    ));
                }
                let host = office::start(timeout).await;
                debug::log(match &host {
                    Ok(Host::Office(name)) => format!("Office.js ready in {name}"),
                    Ok(_) => "Office.js ready outside Office".to_string(),
                    Err(why) => format!("Office.js could not start: {why}"),
                });
                let fetched = fetched.await;
                if let Err(e) = &fetched {
                    debug::log(format!("pane config: {e}"));
                }
                let next = phase_for(&host, fetched.is_ok());
                let loaded = fetched.is_ok();
                config.set(fetched.ok());
                phase.set(next);
                if host.is_err() {
                    // An Outlook slower than the timeout still gets its pane.
                    let late = office::on_ready().await;
                    if let Host::Office(name) = &late {
                        debug::log(format!("Office.js ready in {name}, after the timeout"));
                        phase.set(phase_for(&Ok(late), loaded));
                    }
                }
            });
        });
    }
    let onclick = {
        let phase = phase.clone();
        let config = config.clone();
        Callback::from(move |_: MouseEvent| {
            let Some(cfg) = (*config).clone() else { return };
            if *phase == Phase::Working {
                return;
            }
            phase.set(Phase::Working);
            mark("vmr-click");
            let phase = phase.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let outcome = add_vmr(&cfg).await;
                mark("vmr-done");
                phase.set(match outcome {
                    Outcome::Success => Phase::Success,
                    Outcome::AlreadyAssigned => Phase::AlreadyAssigned,
                    Outcome::ManagementDown => Phase::ManagementDown,
                    Outcome::Unavailable => Phase::Unavailable,
                    Outcome::Error(detail) => Phase::Error(detail),
                });
            });
        })
    };
    view(&phase, config.as_ref(), onclick)
}

/// What to show once Office.js has started (or not) and the config is known.
fn phase_for(host: &Result<Host, String>, config_loaded: bool) -> Phase {
    let next = match host {
        Err(why) => Phase::OfficeFailed(why.clone()),
        Ok(Host::NoOfficeJs) => Phase::OfficeFailed("Office.js is not loaded.".into()),
        Ok(Host::NotInOffice) => Phase::NotInOutlook(
            "This page is an Outlook add-in: open it from a meeting in Outlook.".into(),
        ),
        Ok(Host::Office(_)) if !config_loaded => Phase::Unavailable,
        Ok(Host::Office(_)) => match office::appointment() {
            Ok(_) => Phase::Ready,
            Err(NotCompose::NoItem | NotCompose::NotOrganizing) => Phase::NotOrganizing,
        },
    };
    if next == Phase::Ready {
        mark("vmr-ready");
    }
    next
}

/// A `performance.mark` (read by `cargo xtask bench`; harmless elsewhere).
fn mark(name: &str) {
    if let Some(performance) = web_sys::window().and_then(|w| w.performance()) {
        let _ = performance.mark(name);
    }
}

fn view(phase: &Phase, config: Option<&PaneConfig>, onclick: Callback<MouseEvent>) -> Html {
    let log = if config.is_some_and(|c| c.debug_logs) {
        html! {
            <details id="debug-log" class="detail" open=true>
                <summary>{ "Debug log" }</summary>
                <pre>{ debug::lines().join("\n") }</pre>
            </details>
        }
    } else {
        Html::default()
    };
    html! { <>{ view_state(phase, config, onclick) }{ log }</> }
}

/// "Office.js could not start", the reason, and where to read more.
fn office_failed(why: &str) -> Html {
    html! {
        <div id="state-office-failed" class="status error" role="alert">
            <h2>{ "Office.js could not start" }</h2>
            <p>{ "The add-in cannot talk to Outlook, so it cannot add a video meeting. Close and reopen the meeting; if this keeps happening, tell your help desk what is shown below." }</p>
            <p class="detail" id="office-failed-reason">{ why }</p>
            <p><a href={HELP_URL} target="_blank" rel="noopener">{ "Help" }</a></p>
        </div>
    }
}

fn view_state(phase: &Phase, config: Option<&PaneConfig>, onclick: Callback<MouseEvent>) -> Html {
    if let Phase::OfficeFailed(why) = phase {
        return office_failed(why);
    }
    let Some(c) = config.map(|c| &c.texts) else {
        return match phase {
            Phase::NotInOutlook(why) => status("Not in Outlook", why, "state-not-in-outlook"),
            Phase::Loading => status("Loading", "Starting…", "state-loading"),
            _ => status(
                "Add-in not available",
                "The video meeting add-in is not available right now. Please try again later.",
                "state-unavailable",
            ),
        };
    };
    let busy = *phase == Phase::Working;
    let button = |label: &str| {
        html! {
            <button id="add-vmr" class="primary" type="button" disabled={busy}
                    aria-busy={busy.to_string()} onclick={onclick.clone()}>
                { if busy { "Working…".to_string() } else { label.to_string() } }
            </button>
        }
    };
    let body = match phase {
        Phase::Loading => status("Loading", "Starting…", "state-loading"),
        Phase::NotInOutlook(why) => status("Not in Outlook", why, "state-not-in-outlook"),
        Phase::OfficeFailed(why) => office_failed(why),
        Phase::NotOrganizing => status(
            "Open a meeting you organize",
            "This add-in works in a meeting that you are organizing. Open or create a meeting, then select the button again.",
            "state-not-organizing",
        ),
        Phase::Unavailable => status(&c.unavailable_heading, &c.unavailable_message, "state-unavailable"),
        Phase::Ready | Phase::Working => button(&c.button_label),
        Phase::Success => status(&c.success_heading, &c.success_message, "state-success"),
        Phase::AlreadyAssigned => status(
            &c.already_assigned_heading,
            &c.already_assigned_message,
            "state-already-assigned",
        ),
        Phase::ManagementDown => status(
            &c.management_down_heading,
            &c.management_down_message,
            "state-management-down",
        ),
        Phase::Error(detail) => html! {
            <>
                <div id="state-error" class="status error" role="alert">
                    <h2>{ &c.general_error_heading }</h2>
                    <p>{ &c.general_error_message }</p>
                    <p class="detail">{ detail }</p>
                </div>
                { button(&c.button_label) }
            </>
        },
    };
    html! {
        <main aria-labelledby="pane-title">
            <h1 id="pane-title">{ &c.title }</h1>
            <p class="description">{ &c.description }</p>
            <div aria-live="polite">{ body }</div>
        </main>
    }
}

fn status(heading: &str, message: &str, id: &'static str) -> Html {
    html! {
        <div id={id} class="status" role="status">
            <h2>{ heading }</h2>
            <p>{ message }</p>
        </div>
    }
}
