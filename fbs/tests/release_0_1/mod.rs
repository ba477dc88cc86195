//! The first release's (0.1) wire code, kept verbatim: its schema and flatc's output for it.
//! Agents and factories of that release are in the field; `compat.rs` checks that they and
//! this release read each other. Never regenerate these files.
#![allow(
    unsafe_code,
    missing_docs,
    clippy::all,
    unused_imports,
    dead_code,
    deprecated,
    clippy::unwrap_used,
    mismatched_lifetime_syntaxes,
    non_camel_case_types
)]

#[rustfmt::skip]
mod autofact_generated;
pub use autofact_generated::autofact::wire::*;
