//! Right timestamps from boards without a real-time clock (issue 20), raw protocol against a
//! real factory: snapshots taken while the agent's clock was wrong get their time rebuilt from
//! the agent's boottime; a right clock is left alone; what cannot be rebuilt is tagged, or kept
//! as a dead letter when its time is implausible. The expected times come from the test's own
//! model of the agent (its true boot instant and offset), never from the factory's code.

mod common;

use autofact_fbs::{Batch, ClockSync, Hello, Message, Snapshot};
use common::*;

const S: i64 = 1_000_000_000;
const BOOT: &str = "6f1c2a9e-0d7b-4c55-8e2f-3a4b5c6d7e8f";
const THREE_HOURS: i64 = 3 * 3_600 * S;

/// An agent whose wall clock reads `offset` from true time, booted `up` ago (true time).
struct Agent {
    offset: i64,
    boot_true: i64,
    sync: ClockSync,
}

impl Agent {
    fn new(offset: i64, up: i64, sync: ClockSync) -> Agent {
        Agent {
            offset,
            boot_true: now() - up,
            sync,
        }
    }

    /// What the agent's clocks read at true time `t`: (wall clock, boottime).
    fn at(&self, t: i64) -> (i64, i64) {
        (t + self.offset, t - self.boot_true)
    }

    fn hello(&self) -> Hello {
        let (wall, boottime) = self.at(now());
        Hello {
            boot_id: BOOT.into(),
            clock_sync: self.sync,
            agent_clock_ns: wall,
            agent_boottime_ns: boottime,
            installation: "clock-test-installation".into(),
            epoch: 7,
            ..new_hello(TOKEN, "pi-clock")
        }
    }

    /// A snapshot collected at true time `t` with the clock as it read then.
    fn snapshot(&self, t: i64, sync: ClockSync) -> Snapshot {
        let (wall, boottime) = self.at(t);
        Snapshot {
            boottime_ns: boottime,
            clock_sync: sync,
            boot_id: BOOT.into(),
            ..snapshot(wall, 0)
        }
    }

    /// A batch sent now.
    fn batch(&self, seq: u64, snapshots: Vec<Snapshot>) -> Batch {
        let (wall, boottime) = self.at(now());
        Batch {
            epoch: 7,
            seq,
            snapshots,
            agent_clock_ns: wall,
            agent_boottime_ns: boottime,
            ..Batch::default()
        }
    }
}

fn now() -> i64 {
    autofactory::log::unix_now_ns()
}

/// The timestamps of the sink's `system` lines, and whether each carries `clock=unverified`.
fn system_times(sink: &MemSink) -> Vec<(i64, bool)> {
    sink.text()
        .lines()
        .filter(|l| l.starts_with("system,"))
        .map(|l| {
            let ts = l.rsplit(' ').next().and_then(|t| t.parse().ok());
            let ts = ts.unwrap_or_else(|| panic!("no timestamp in {l}"));
            (ts, l.contains(",clock=unverified"))
        })
        .collect()
}

#[test]
fn an_agent_three_hours_behind_and_unsynced_lands_within_100ms_of_true_time() {
    let dir = temp_dir("clock-behind");
    let h = Harness::start(&dir, &config_text(""));
    let agent = Agent::new(-THREE_HOURS, 1_000 * S, ClockSync::Unsynced);
    let taken: Vec<i64> = (0..5).map(|i| now() - (5 - i) * S).collect();
    smol::block_on(within("the batch", async {
        let (mut c, w) = Client::hello(h.addr, agent.hello()).await;
        assert!(matches!(w, Message::Welcome(_)), "{w:?}");
        let snaps = taken
            .iter()
            .map(|&t| agent.snapshot(t, ClockSync::Unsynced))
            .collect();
        c.send_batch(agent.batch(1, snaps)).await;
    }));
    let got = system_times(&h.sink);
    assert_eq!(got.len(), taken.len(), "{}", h.sink.text());
    for ((ts, unverified), t) in got.iter().zip(&taken) {
        let off = (ts - t).abs();
        assert!(
            off < 100_000_000,
            "written {} ms from its true time",
            off / 1_000_000
        );
        assert!(!unverified, "a rebuilt time is not tagged");
    }
    let metrics = h.get("/metrics");
    assert_eq!(
        metric(&metrics, "autofactory_snapshots_time_corrected_total"),
        5
    );
    // The view knows the offset.
    let clients = h.get("/clients");
    let off = clients
        .split("\"clock_offset_ms\":")
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or_else(|| panic!("no clock_offset_ms in {clients}"));
    assert!((off + 10_800_000).abs() < 100, "offset {off} ms");
    h.stop().expect("clean stop");
}

#[test]
fn a_synced_agent_with_a_right_clock_keeps_its_timestamps_to_the_nanosecond() {
    let dir = temp_dir("clock-right");
    let h = Harness::start(&dir, &config_text(""));
    let agent = Agent::new(0, 500 * S, ClockSync::Synced);
    // Odd nanoseconds: any rounding or rebuilding would show.
    let stamped: Vec<i64> = (0..3).map(|i| now() - (3 - i) * S + 123_457).collect();
    smol::block_on(within("the batch", async {
        let (mut c, _) = Client::hello(h.addr, agent.hello()).await;
        let snaps = stamped
            .iter()
            .map(|&t| Snapshot {
                time_ns: t,
                ..agent.snapshot(t, ClockSync::Synced)
            })
            .collect();
        c.send_batch(agent.batch(1, snaps)).await;
    }));
    let got: Vec<i64> = system_times(&h.sink).into_iter().map(|(t, _)| t).collect();
    assert_eq!(got, stamped);
    assert_eq!(
        metric(
            &h.get("/metrics"),
            "autofactory_snapshots_time_corrected_total"
        ),
        0
    );
    h.stop().expect("clean stop");
}

#[test]
fn snapshots_collected_offline_before_the_clock_was_set_land_at_their_true_times() {
    let dir = temp_dir("clock-offline");
    let h = Harness::start(&dir, &config_text(""));
    // Booted 10 minutes ago at "1970" (no RTC); collected unsynced for its first minutes, then
    // NTP set the clock; now it connects with a right, synced clock.
    let agent = Agent::new(0, 600 * S, ClockSync::Synced);
    let taken: Vec<i64> = [30, 60, 90, 120]
        .iter()
        .map(|s| agent.boot_true + s * S)
        .collect();
    smol::block_on(within("the batch", async {
        let (mut c, _) = Client::hello(h.addr, agent.hello()).await;
        let snaps = taken
            .iter()
            .map(|&t| Snapshot {
                // What the unsynced clock said: seconds since 1970-01-01, as at boot.
                time_ns: t - agent.boot_true,
                ..agent.snapshot(t, ClockSync::Unsynced)
            })
            .collect();
        c.send_batch(agent.batch(1, snaps)).await;
    }));
    let got = system_times(&h.sink);
    assert_eq!(got.len(), taken.len(), "{}", h.sink.text());
    for ((ts, _), t) in got.iter().zip(&taken) {
        assert!(
            (ts - t).abs() < 100_000_000,
            "{} ms off",
            (ts - t) / 1_000_000
        );
    }
    h.stop().expect("clean stop");
}

#[test]
fn a_boot_without_a_reference_is_tagged_or_kept_as_a_dead_letter_never_written_as_1970() {
    let dir = temp_dir("clock-noref");
    let h = Harness::start_real_sink(&dir, &config_text(""));
    let agent = Agent::new(0, 100 * S, ClockSync::Synced);
    let plausible = now() - 200 * S;
    smol::block_on(within("the batch", async {
        let (mut c, _) = Client::hello(h.addr, agent.hello()).await;
        // Both taken unsynced in an earlier boot the factory never saw a message from.
        let other_boot = |time_ns: i64| Snapshot {
            time_ns,
            boottime_ns: 40 * S,
            clock_sync: ClockSync::Unsynced,
            boot_id: "00000000-1111-2222-3333-444444444444".into(),
            ..snapshot(time_ns, 0)
        };
        let snaps = vec![other_boot(plausible), other_boot(40 * S)];
        c.send_batch(agent.batch(1, snaps)).await;
    }));
    let read_dir = |sub: &str| -> String {
        let mut text = String::new();
        for e in std::fs::read_dir(dir.join("data").join(sub))
            .into_iter()
            .flatten()
            .flatten()
        {
            text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
        text
    };
    let facts = read_dir("facts");
    let system: Vec<&str> = facts.lines().filter(|l| l.starts_with("system,")).collect();
    assert_eq!(
        system.len(),
        1,
        "only the plausible one is written: {facts}"
    );
    assert!(system[0].contains(",clock=unverified"), "{}", system[0]);
    assert!(
        system[0].ends_with(&format!(" {plausible}")),
        "{}",
        system[0]
    );
    let dead = read_dir("dead-letters");
    assert!(
        dead.lines()
            .any(|l| l.starts_with("system,") && l.ends_with(&format!(" {}", 40 * S))),
        "the 1970 one is a dead letter: {dead}"
    );
    assert!(dead.contains("sanity window"), "{dead}");
    let metrics = h.get("/metrics");
    assert_eq!(
        metric(&metrics, "autofactory_snapshots_time_uncorrectable_total"),
        1
    );
    assert_eq!(
        metric(&metrics, "autofactory_snapshots_time_refused_total"),
        1
    );
    h.stop().expect("clean stop");
}
