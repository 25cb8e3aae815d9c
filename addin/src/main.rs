//! The Outlook task pane, compiled to WebAssembly by Trunk (`addin/index.html`).
//!
//! [`office`] is the only module that touches Office.js; [`api`] talks to the
//! server; [`pane`] holds the states and the click flow. `main` just mounts
//! the Yew component; the component itself waits for `Office.onReady`.

mod api;
mod office;
mod pane;

fn main() {
    yew::Renderer::<pane::Pane>::new().render();
}
