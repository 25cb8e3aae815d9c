//! vmr-exchange: the resource mailbox, seen through one trait ([`mailbox::Mailbox`]) that the
//! scheduling worker drives and that each Exchange backend implements.
//!
//! * [`mailbox`] — the backend-neutral trait and its types: sync a folder incrementally, fetch
//!   full items, reply as the resource, wait for change notifications;
//! * [`xml`] — a lenient, namespace-aware XML reader (quick-xml) and a small escaping writer;
//! * [`ews`] — Exchange Web Services over SOAP 1.1 (Exchange 2016/2019/SE on-premises and
//!   Exchange Online tenants that still allow EWS);
//! * [`auth`] — how requests authenticate (Basic, OAuth2 client credentials), behind a trait
//!   that handshake schemes fit into;
//! * [`ntlm`] — NTLMv2 with channel binding (Extended Protection) on connections it owns.

pub mod auth;
pub mod ews;
pub mod mailbox;
pub mod ntlm;
pub mod xml;
