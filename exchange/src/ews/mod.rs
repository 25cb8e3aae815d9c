//! Exchange Web Services (SOAP 1.1) for a resource mailbox.
//!
//! * [`request`] — every request envelope we send, built in the schema's element order;
//! * [`response`] — envelopes, SOAP faults and per-message response codes, read by namespace;
//! * [`items`] — calendar items and meeting messages into [`vmr_core::meeting::MeetingItem`];
//! * [`client`] — the HTTP transport: authentication, throttling and retries, concurrency;
//! * [`streaming`] — streaming and pull notifications;
//! * [`mailbox`] — [`EwsMailbox`](mailbox::EwsMailbox), the [`crate::mailbox::Mailbox`] over EWS.

pub mod client;
pub mod items;
pub mod mailbox;
pub mod request;
pub mod response;
pub mod streaming;
