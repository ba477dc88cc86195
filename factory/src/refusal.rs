//! Refusals: what the factory tells a connection it will not serve, and the one place every
//! refusal is counted (by [`Reason`], in the metrics) and logged (rate-limited, with the peer).
//! Transport sends the Reject frame; sessions and the accept loop decide; only [`record`] counts
//! and logs.

use crate::metrics::{Metrics, Reason};
use autofact_fbs::RejectCode;
use std::fmt::Display;
use std::net::SocketAddr;

/// A refusal decided before or during a session: counted under `reason`, sent as `code` with
/// `message`.
#[derive(Debug)]
pub struct Refusal {
    /// What it is counted under.
    pub reason: Reason,
    /// What the agent is told.
    pub code: RejectCode,
    /// Words for the agent's log and ours.
    pub message: String,
}

impl Refusal {
    /// A refusal.
    pub fn new(reason: Reason, code: RejectCode, message: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            code,
            message: message.into(),
        }
    }

    /// The factory is stopping.
    pub fn shutting_down() -> Refusal {
        Refusal::new(
            Reason::ShuttingDown,
            RejectCode::ShuttingDown,
            "factory shutting down",
        )
    }
}

/// Counts a refusal of `peer` under `reason` and logs it with `detail` (rate-limited: a
/// scanner or a fleet with a wrong token must not bury the log; the count is always kept).
pub fn record(metrics: &Metrics, peer: SocketAddr, reason: Reason, detail: impl Display) {
    metrics.reject(reason);
    crate::info_limited!("rejected {peer}: {} ({detail})", reason.label());
}
