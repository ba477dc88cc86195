//! Agent clocks: how far each agent's wall clock is off, and the true time of snapshots taken
//! while it was wrong (DESIGN.md, Time).
//!
//! A Raspberry Pi has no real-time clock: it boots at 1970 or at fake-hwclock's last save and
//! is wrong until NTP syncs, minutes later or never. Its `CLOCK_BOOTTIME`, though, counts
//! correctly from boot whatever the wall clock says. Every message an agent sends carries its
//! wall clock and boottime at sending; the factory notes its own wall clock on receipt. From
//! those pairs it learns, per connection:
//!
//! - the agent's **offset** (agent wall clock minus factory wall clock). A message is received
//!   after it was sent, so `agent_clock - received = offset - delay <= offset`: the largest
//!   value over recent messages is the estimate, off by the shortest one-way delay seen.
//! - the true time of the agent's **boot** (`received - boottime`, the smallest over recent
//!   messages, for the same reason). A snapshot's true time is then that plus its boottime.
//!
//! A snapshot is rebuilt when it says its clock was unsynchronised, when the agent's offset
//! exceeds the threshold (2 s by default), or when its time is outside the sanity window; it
//! can be rebuilt only within a boot the factory has a reference for (this connection's, or an
//! earlier connection's in the same boot while the factory runs). Otherwise it is written as
//! it is, counted and tagged, or, outside the sanity window, not written as it is at all.
//!
//! Only recent messages count (a window of [`WINDOW`]): an unsynchronised kernel's boottime
//! runs at the crystal's rate, which can drift by tens of parts per million from true time.

use autofact_fbs::{ClockSync, Snapshot};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Boots remembered per client, newest last.
const BOOTS_KEPT: usize = 4;

/// Each client's boot references from its earlier connections, kept in memory while the
/// factory runs (a restarted factory learns them again from the next connection of each boot).
#[derive(Debug, Default)]
pub struct BootReferences(Mutex<HashMap<String, Vec<BootReference>>>);

impl BootReferences {
    /// The references known for `client`.
    pub fn of(&self, client: &str) -> Vec<BootReference> {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(client).cloned().unwrap_or_default()
    }

    /// Keeps `r` for `client`, replacing an older reference of the same boot; the last
    /// [`BOOTS_KEPT`] boots are kept.
    pub fn remember(&self, client: &str, r: BootReference) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let boots = map.entry(client.to_string()).or_default();
        boots.retain(|b| b.boot_id != r.boot_id);
        boots.push(r);
        if boots.len() > BOOTS_KEPT {
            boots.remove(0);
        }
    }
}

/// How many recent (send, receive) samples the estimates use.
pub const WINDOW: usize = 16;

/// Unix nanoseconds of 2026-11-01T00:00:00Z: no autofact agent existed before, so no snapshot
/// can truly be older. The lower end of the sanity window.
pub const NOT_BEFORE_NS: i64 = 1_793_491_200 * 1_000_000_000;

/// The rules a factory applies; part of its config (`clock` section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockRules {
    /// An agent whose offset exceeds this (either way) has its snapshots rebuilt.
    pub threshold_ns: i64,
    /// Snapshots older than this are outside the sanity window.
    pub not_before_ns: i64,
    /// Snapshots more than this ahead of the factory's clock are outside the sanity window.
    pub max_ahead_ns: i64,
}

impl Default for ClockRules {
    fn default() -> ClockRules {
        ClockRules {
            threshold_ns: 2_000_000_000,
            not_before_ns: NOT_BEFORE_NS,
            max_ahead_ns: 86_400 * 1_000_000_000,
        }
    }
}

/// What happened to one snapshot's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fix {
    /// The agent's clock was right: the time stands.
    Untouched,
    /// Rebuilt from the boot reference; the old time is given.
    Corrected {
        /// The time the agent had stamped.
        was_ns: i64,
    },
    /// Should have been rebuilt but no reference exists for its boot: written as it is,
    /// counted and tagged.
    Uncorrectable,
    /// Outside the sanity window and no reference: must not be written as it is.
    OutOfWindow,
}

/// The true time of one boot's zero: a snapshot's true time is this plus its boottime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootReference {
    /// `/proc/sys/kernel/random/boot_id` of that boot.
    pub boot_id: String,
    /// Factory wall clock (unix ns) at the agent's boottime zero.
    pub zero_ns: i64,
}

/// One connection's view of its agent's clock.
#[derive(Debug, Clone)]
pub struct AgentClock {
    rules: ClockRules,
    boot_id: String,
    /// `agent_clock - received`, recent messages.
    offsets: VecDeque<i64>,
    /// `received - agent_boottime`, recent messages of this boot.
    zeros: VecDeque<i64>,
    /// References for earlier boots, from earlier connections.
    earlier: Vec<BootReference>,
}

impl AgentClock {
    /// A connection's clock, from its Hello: the agent's boot.
    pub fn new(rules: ClockRules, boot_id: &str) -> AgentClock {
        AgentClock {
            rules,
            boot_id: boot_id.to_owned(),
            offsets: VecDeque::with_capacity(WINDOW),
            zeros: VecDeque::with_capacity(WINDOW),
            earlier: Vec::new(),
        }
    }

    /// References for the client's earlier boots (kept by the factory across connections).
    pub fn with_earlier(mut self, earlier: &[BootReference]) -> AgentClock {
        self.earlier = earlier
            .iter()
            .filter(|r| r.boot_id != self.boot_id)
            .cloned()
            .collect();
        self
    }

    /// One message's send times (0 = not sent, as from a first-release agent) and the
    /// factory's wall clock when it arrived.
    pub fn observe(&mut self, agent_clock_ns: i64, agent_boottime_ns: i64, received_ns: i64) {
        if agent_clock_ns != 0 {
            push_window(
                &mut self.offsets,
                agent_clock_ns.saturating_sub(received_ns),
            );
        }
        if agent_boottime_ns > 0 && !self.boot_id.is_empty() {
            push_window(
                &mut self.zeros,
                received_ns.saturating_sub(agent_boottime_ns),
            );
        }
    }

    /// Agent wall clock minus factory wall clock, when known.
    pub fn offset_ns(&self) -> Option<i64> {
        self.offsets.iter().copied().max()
    }

    /// This boot's reference, to keep for later connections in the same boot.
    pub fn reference(&self) -> Option<BootReference> {
        self.zeros
            .iter()
            .copied()
            .min()
            .map(|zero_ns| BootReference {
                boot_id: self.boot_id.clone(),
                zero_ns,
            })
    }

    fn zero_for(&self, boot_id: &str) -> Option<i64> {
        if boot_id.is_empty() {
            return None;
        }
        if boot_id == self.boot_id {
            return self.zeros.iter().copied().min();
        }
        self.earlier
            .iter()
            .find(|r| r.boot_id == boot_id)
            .map(|r| r.zero_ns)
    }

    /// Decides one snapshot's time and rebuilds it when it must and can; `now_ns` is the
    /// factory's wall clock.
    pub fn correct(&self, s: &mut Snapshot, now_ns: i64) -> Fix {
        let out_of_window = s.time_ns < self.rules.not_before_ns
            || s.time_ns > now_ns.saturating_add(self.rules.max_ahead_ns);
        let unsynced = s.clock_sync == ClockSync::Unsynced;
        let off = self
            .offset_ns()
            .is_some_and(|o| o.unsigned_abs() > self.rules.threshold_ns.unsigned_abs());
        if !(out_of_window || unsynced || off) {
            return Fix::Untouched;
        }
        match self.zero_for(&s.boot_id) {
            Some(zero) if s.boottime_ns > 0 => {
                let was_ns = s.time_ns;
                s.time_ns = zero.saturating_add(s.boottime_ns);
                Fix::Corrected { was_ns }
            }
            _ if out_of_window => Fix::OutOfWindow,
            _ => Fix::Uncorrectable,
        }
    }
}

fn push_window(w: &mut VecDeque<i64>, v: i64) {
    if w.len() == WINDOW {
        w.pop_front();
    }
    w.push_back(v);
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;
    /// 2026-12-06T00:00:00Z, the factory's "now" in these tests.
    const NOW: i64 = 1_796_515_200 * S;
    const BOOT: &str = "2f0b8f9e-6c1d-4e55-9a7b-0c3d2e1f4a5b";

    fn snap(time_ns: i64, boottime_ns: i64, sync: ClockSync, boot: &str) -> Snapshot {
        Snapshot {
            time_ns,
            boottime_ns,
            clock_sync: sync,
            boot_id: boot.into(),
            ..Snapshot::default()
        }
    }

    /// An agent booted 1,000 s before NOW whose clock reads `offset` from true time; it sends a
    /// message every 10 s received after `delay`.
    fn agent(offset: i64, delay: i64) -> AgentClock {
        let mut c = AgentClock::new(ClockRules::default(), BOOT);
        let boot_true = NOW - 1_000 * S;
        for i in 0..5 {
            let sent_true = NOW - 50 * S + i * 10 * S;
            c.observe(sent_true + offset, sent_true - boot_true, sent_true + delay);
        }
        c
    }

    #[test]
    fn a_synced_agent_with_a_right_clock_is_untouched() {
        let c = agent(3_000_000, 400_000);
        let mut s = snap(NOW - 5 * S, 995 * S, ClockSync::Synced, BOOT);
        assert_eq!(c.correct(&mut s, NOW), Fix::Untouched);
        assert_eq!(s.time_ns, NOW - 5 * S);
        // The offset estimate is the true offset less the one-way delay.
        assert_eq!(c.offset_ns(), Some(3_000_000 - 400_000));
    }

    #[test]
    fn three_hours_behind_and_unsynced_lands_within_the_delay_of_true_time() {
        let behind = -3 * 3_600 * S;
        let delay = 2_000_000; // 2 ms one way
        let c = agent(behind, delay);
        let true_ns = NOW - 7 * S;
        let mut s = snap(true_ns + behind, 993 * S, ClockSync::Unsynced, BOOT);
        assert_eq!(
            c.correct(&mut s, NOW),
            Fix::Corrected {
                was_ns: true_ns + behind
            }
        );
        assert_eq!(s.time_ns - true_ns, delay, "off by the one-way delay only");
    }

    #[test]
    fn an_offset_beyond_the_threshold_is_corrected_even_when_synced() {
        let c = agent(5 * S, 0);
        let mut s = snap(NOW + 5 * S, 1_000 * S, ClockSync::Synced, BOOT);
        assert!(matches!(c.correct(&mut s, NOW), Fix::Corrected { .. }));
        assert_eq!(s.time_ns, NOW);
    }

    #[test]
    fn snapshots_taken_offline_before_the_clock_was_fixed_land_at_their_true_times() {
        // Collected unsynced at 1970-ish times during the first minutes of the boot; the
        // agent then synced and connected: its messages now carry the right clock.
        let c = agent(0, 1_000_000);
        let boot_true = NOW - 1_000 * S;
        for boottime in [30 * S, 60 * S, 90 * S] {
            let mut s = snap(boottime, boottime, ClockSync::Unsynced, BOOT);
            assert!(matches!(c.correct(&mut s, NOW), Fix::Corrected { .. }));
            assert_eq!(s.time_ns - (boot_true + boottime), 1_000_000);
        }
    }

    #[test]
    fn another_boot_without_a_reference_is_written_as_is_or_refused_outside_the_window() {
        let c = agent(0, 0);
        let other = "00000000-0000-0000-0000-000000000001";
        let mut s = snap(NOW - 100 * S, 50 * S, ClockSync::Unsynced, other);
        assert_eq!(c.correct(&mut s, NOW), Fix::Uncorrectable);
        assert_eq!(s.time_ns, NOW - 100 * S);
        let mut s = snap(12 * S, 12 * S, ClockSync::Unsynced, other);
        assert_eq!(c.correct(&mut s, NOW), Fix::OutOfWindow);
        let mut s = snap(NOW + 2 * 86_400 * S, 12 * S, ClockSync::Synced, other);
        assert_eq!(c.correct(&mut s, NOW), Fix::OutOfWindow);
    }

    #[test]
    fn an_earlier_connections_reference_serves_its_boot() {
        let old = agent(0, 0);
        let reference = old.reference().expect("a reference");
        assert_eq!(reference.zero_ns, NOW - 1_000 * S);
        // The agent rebooted; its new connection knows the new boot only.
        let c = AgentClock::new(ClockRules::default(), "new-boot").with_earlier(&[reference]);
        let mut s = snap(5 * S, 500 * S, ClockSync::Unsynced, BOOT);
        assert!(matches!(c.correct(&mut s, NOW), Fix::Corrected { .. }));
        assert_eq!(s.time_ns, NOW - 500 * S);
    }

    #[test]
    fn a_first_release_agent_is_never_touched_when_its_clock_is_plausible() {
        let mut c = AgentClock::new(ClockRules::default(), "");
        c.observe(NOW, 0, NOW);
        c.observe(0, 0, NOW + S); // batches of 0.1 carry no send times
        let mut s = snap(NOW - S, 0, ClockSync::Unknown, "");
        assert_eq!(c.correct(&mut s, NOW), Fix::Untouched);
        assert_eq!(c.offset_ns(), Some(0));
    }

    #[test]
    fn only_recent_messages_count() {
        let mut c = AgentClock::new(ClockRules::default(), BOOT);
        c.observe(NOW + 10 * S, 1, NOW); // long ago the clock was 10 s ahead
        for i in 0..WINDOW as i64 {
            c.observe(NOW + i, 2 + i, NOW + i);
        }
        assert_eq!(c.offset_ns(), Some(0));
    }
}
