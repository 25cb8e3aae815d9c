//! vmr-scheduler: the service behind the Outlook "add a video meeting" button.
//!
//! One binary, three roles (`all`, `edge`, `management`; see `config::Role`).
//! Start at [`app`] (start-up) and [`http`] (routes); the request path for
//! `POST /api/v1/alias` is `http` → `vmr_auth` (who is asking) →
//! [`alias_service`] (unique alias, [`meeting_tag`], [`templates`]) →
//! `vmr_store`. On an edge, `http` hands the request to [`edge`] instead.
//! `ARCHITECTURE.md` at the repository root has the full map and invariants.

pub mod admin_api;
pub mod admin_oidc;
pub mod admin_page;
pub mod alias_service;
pub mod api_error;
pub mod app;
pub mod check;
pub mod edge;
pub mod http;
pub mod infinity_push;
pub mod integration;
pub mod mailbox_worker;
pub mod manifest;
pub mod metrics;
pub mod pane_page;
pub mod policy;
pub mod recover;
pub mod tag_resolution;
pub mod tls;
pub mod vmr_lifetime;
