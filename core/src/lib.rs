//! vmr-core: the domain logic of vmr-scheduler that needs no network, no
//! database and no HTTP framework.
//!
//! * [`clock`] — time, injected: everything tests move through windows,
//!   expiries and back-offs reads a [`clock::Clock`];
//! * [`secret`] — configured secrets that never appear in logs;
//! * [`identity`] — who a validated token says is asking.

pub mod clock;
pub mod identity;
pub mod secret;
