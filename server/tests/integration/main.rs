//! The server crate's integration tests, one binary: each file below is a module as it was a
//! test target before (one binary links the server once, not once per file).

#[macro_use]
mod common;
mod in_process;

mod admin_api;
mod admin_oidc;
mod admin_sessions;
mod api;
mod ews_schema;
mod infinity_push;
mod mailbox_worker;
mod manifest;
mod ntlm_connect;
mod policy;
mod scheduling_store;
mod storage;
mod storage_batches;
mod tag_resolution;
