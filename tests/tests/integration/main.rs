//! The end-to-end tests, one binary: each file below is a module that starts the real
//! `vmr-scheduler` and `vmr-simulator` binaries (and Chromium) and drives them as users do.

mod admin_page;
mod air_gapped;
mod check_command;
mod infinity_push;
mod mailbox;
mod mailbox_crash;
mod mailbox_deferred;
mod mailbox_failover;
mod mailbox_outlook;
mod naa;
mod pane;
mod pane_config_embedded;
mod policy;
mod recover_command;
mod roles;
