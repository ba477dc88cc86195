//! The encoder: line protocol from a decoded batch and its client's tags. Each snapshot's time
//! is checked against the agent's clock first (see [`crate::clock`]): a time rebuilt from the
//! boot clock is written as rebuilt, one that cannot be rebuilt is tagged `clock=unverified`,
//! and one outside the sanity window goes to `refused` (kept as a dead letter, never sent to the
//! store).

use crate::clock::{AgentClock, Fix};
use autofact_fbs::lineproto::{write_snapshot, Tags};
use autofact_fbs::Batch;

/// One batch as line protocol.
#[derive(Debug, Default)]
pub struct Encoded {
    /// Lines for the store.
    pub lines: String,
    /// Points in `lines`.
    pub points: usize,
    /// Lines the factory refuses itself (a time outside the sanity window).
    pub refused: String,
    /// Points in `refused`.
    pub refused_points: usize,
    /// Snapshots whose time was rebuilt from the boot clock.
    pub corrected: u64,
    /// Snapshots written with their own time, tagged `clock=unverified`.
    pub uncorrectable: u64,
    /// Snapshots in `refused`.
    pub out_of_window: u64,
}

impl Encoded {
    /// True when some snapshot's time was not taken as it came.
    pub fn time_fixed(&self) -> bool {
        self.corrected + self.uncorrectable + self.out_of_window > 0
    }
}

/// Encodes every snapshot of `b` with `tags`, correcting times by `clock` as of `now_ns`.
pub fn batch(b: &mut Batch, tags: &Tags<'_>, clock: &AgentClock, now_ns: i64) -> Encoded {
    let unverified = Tags {
        clock: "unverified",
        ..*tags
    };
    let mut e = Encoded::default();
    for s in &mut b.snapshots {
        match clock.correct(s, now_ns) {
            Fix::Untouched => e.points += write_snapshot(&mut e.lines, tags, s),
            Fix::Corrected { .. } => {
                e.corrected += 1;
                e.points += write_snapshot(&mut e.lines, tags, s);
            }
            Fix::Uncorrectable => {
                e.uncorrectable += 1;
                e.points += write_snapshot(&mut e.lines, &unverified, s);
            }
            Fix::OutOfWindow => {
                e.out_of_window += 1;
                e.refused_points += write_snapshot(&mut e.refused, &unverified, s);
            }
        }
    }
    e
}
