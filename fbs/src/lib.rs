//! autofact's wire protocol, shared by the agent and the factory.
//!
//! # Layout
//! - `schema/autofact.fbs`: the flatbuffers schema (evolution rules in its header).
//! - [`generated`]: flatc's output, committed; regenerate with `fbs/regen`.
//! - [`model`]: our own Rust types for every message and fact.
//! - [`codec`]: the only code that touches generated types: `encode` and a verifying `decode`
//!   with explicit [`Limits`].
//! - [`lineproto`]: InfluxDB line protocol for facts, Telegraf's names.

pub mod codec;
pub mod generated;
pub mod lineproto;
pub mod model;

pub use codec::{decode, decode_with, encode, encode_into, message_kind, DecodeError, Limits};
pub use model::*;
