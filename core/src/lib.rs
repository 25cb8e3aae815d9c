//! vmr-core: the domain logic of vmr-scheduler that needs no network, no
//! database and no HTTP framework.
//!
//! * [`alias_space`] — drawing aliases (prefix + random digits);
//! * [`body_edit`] — finding and replacing our blocks in meeting bodies Outlook rewrote;
//! * [`clock`] — time, injected: everything tests move through windows,
//!   expiries and back-offs reads a [`clock::Clock`];
//! * [`secret`] — configured secrets that never appear in logs;
//! * [`identity`] — who a validated token says is asking;
//! * [`config`] — the configuration schema, loading and validation;
//! * [`templates`] — every Pexip template field (minijinja);
//! * [`meeting_tag`] — PXPS tags under an integration's key;
//! * [`deferral`] — TOK statements an edge signs when management is down;
//! * [`quota`] — per-requester and global allocation limits;
//! * [`meeting`] — the meeting model mailbox backends produce;
//! * [`recurrence`] — series patterns and their occurrence windows, in the organizer's zone;
//! * [`scheduling`] — the pure accept/decline/cancel decisions of the mailbox worker;
//! * [`windows_zones`] — Windows time zone ids (as Exchange sends them) → IANA zones.

pub mod alias_space;
pub mod body_edit;
pub mod clock;
pub mod config;
pub mod deferral;
pub mod identity;
pub mod meeting;
pub mod meeting_tag;
pub mod quota;
pub mod recurrence;
pub mod scheduling;
pub mod secret;
pub mod templates;
pub mod windows_zones;
