//! The Outlook task pane, compiled to WebAssembly by Trunk (`addin/index.html`).
//!
//! [`office`] is the only module that touches Office.js, [`naa`] the only one
//! that touches MSAL.js (Microsoft 365 sign-in); [`api`] talks to the
//! server; [`pane`] holds the states and the click flow; [`debug`] is the
//! pane's debug log. [`start`] mounts the
//! Yew component; the component itself waits for `Office.onReady`.

pub mod api;
pub mod debug;
pub mod naa;
pub mod office;
pub mod pane;

/// Mounts the pane into `<body>`.
pub fn start() {
    yew::Renderer::<pane::Pane>::new().render();
}
