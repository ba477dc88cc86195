//! autofact, the factory.
//!
//! # Layout
//! (grows as the modules land)
#![forbid(unsafe_code)]
