//! The simulator's integration tests, one binary: each file below is a module (one binary
//! links the simulator once, not once per file).

mod ews_support;

mod ews_auth_faults;
mod ews_flows;
mod ews_operations;
mod ews_outlook_send;
mod ews_streaming;
mod ews_third_party;
mod infinity_api;
mod schema_validation;
