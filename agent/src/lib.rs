//! autofact, the agent.
//!
//! # Layout
//! - [`facts`]: the `/proc` and `/sys` readers and parsers.
//! - [`buffer`]: the disk buffer (fjall): pending snapshots and batches until acked.
//! - [`run`]: `autofact run`: session, collection and store threads, state files.
//! - [`clock`]: wall clock (with its test-only offset), boottime, boot id, random numbers;
//!   a leaf used by `buffer` and `run`.
#![forbid(unsafe_code)]
pub mod buffer;
pub mod clock;
pub mod facts;
pub mod run;
