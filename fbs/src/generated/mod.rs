//! flatc 25.12.19 output for `schema/autofact.fbs`. Do not edit: run `fbs/regen`.
#![allow(
    unsafe_code,
    missing_docs,
    clippy::all,
    unused_imports,
    dead_code,
    deprecated
)]
#![allow(
    clippy::unwrap_used,
    mismatched_lifetime_syntaxes,
    non_camel_case_types
)]

#[rustfmt::skip]
mod autofact_generated;
pub use autofact_generated::autofact::wire::*;
