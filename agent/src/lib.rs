//! autofact, the agent.
//!
//! # Layout
//! (grows as the modules land)
#![forbid(unsafe_code)]
pub mod buffer;
pub mod facts;
pub mod run;
