//! The core crate's integration tests, one binary: each file below is a module.

mod recurrence;
mod scheduling;
