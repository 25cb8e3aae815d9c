//! Types shared by the Outlook task pane (compiled to wasm32) and the server.
//!
//! Everything that crosses the wire between the pane and the edge, or between
//! the edge and management, is defined here exactly once:
//!
//! * [`api`] — the JSON bodies of `GET /api/v1/pane-config` and
//!   `POST /api/v1/alias`, and the JSON error shape every 4xx/5xx carries.
//! * [`tag`] — the meeting tags `PXPS:-…#` (an allocated alias, MAC-protected)
//!   and `TOK:-…#` (a raw Outlook token, inserted when management was
//!   unreachable), with one parser that both sides use on Outlook bodies.
//!
//! The crate has no dependency besides `serde`, so it compiles small for wasm.

pub mod api;
pub mod tag;

pub use api::*;
