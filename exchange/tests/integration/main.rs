//! The EWS client's integration tests, one binary: each file below is a module (one binary
//! links the client once, not once per file).

mod common;

mod client;
mod ntlm;
mod request_schema;
mod response_parsing;
