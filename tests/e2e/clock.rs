//! Right timestamps from boards without a real-time clock (issue 20), with real binaries and
//! InfluxDB at a user's settings (collect every 1 s, push every 10 s). The agent's clock is
//! made wrong through its test-only clock file (`AUTOFACT_TEST_CLOCK_FILE`: an offset and a
//! sync state, re-read at every reading), never by changing the machine's clock.
//!
//! The agent collects at instants aligned to whole periods of ITS clock; with an offset of a
//! whole number of seconds those are whole seconds of true time too. So a point written at its
//! true time lies on a whole second (within the rebuild's error: the one-way delay of the
//! fastest message), and one written as the wrong clock stamped it lies hours away.

use crate::{secs, Site};
use autofact_tests::harness::{now_ns, system_times, AgentSpec, FactorySpec};
use std::path::Path;
use std::time::Duration;

const THREE_HOURS: i64 = 3 * 3_600 * 1_000_000_000;

fn spec() -> FactorySpec {
    FactorySpec {
        push_interval_ms: 10_000,
        ..FactorySpec::default()
    }
}

fn set_clock(file: &Path, offset_ns: i64, sync: &str) {
    if let Err(e) = std::fs::write(file, format!("{offset_ns} {sync}\n")) {
        panic!("writing {}: {e}", file.display());
    }
}

fn agent_spec(host: &str, clock_file: &Path) -> AgentSpec {
    AgentSpec {
        env: vec![(
            "AUTOFACT_TEST_CLOCK_FILE".into(),
            clock_file.display().to_string(),
        )],
        ..AgentSpec::new(host, "eu")
    }
}

/// How far `t` is from the nearest whole second, ns.
fn off_second(t: i64) -> i64 {
    let r = t.rem_euclid(1_000_000_000);
    r.min(1_000_000_000 - r)
}

/// Every point lies within `[from, to]` and within 100 ms of a whole second.
fn assert_true_times(site: &Site, host: &str, times: &[i64], from: i64, to: i64) {
    for &t in times {
        assert!(
            (from..=to).contains(&t),
            "{host}: a point at {t} outside the run [{from}, {to}] ({:.0} s off): written \
             with the agent's wrong clock\n{}",
            (t - from) as f64 / 1e9,
            site.outputs()
        );
        assert!(
            off_second(t) < 100_000_000,
            "{host}: a point {} ms from its true instant",
            off_second(t) / 1_000_000
        );
    }
}

#[test]
fn an_agent_three_hours_behind_and_unsynced_lands_within_100ms_of_true_time() {
    let Some(mut site) = Site::new("clock-behind", &spec()) else {
        return;
    };
    let clock = site.dir.path().join("clock-behind.clock");
    set_clock(&clock, -THREE_HOURS, "unsynced");
    let host = "e2e-clock-behind";
    let start = now_ns();
    site.agent(&agent_spec(host, &clock));
    // Two pushes' worth; the series is complete and every point at its true time.
    let until = start + secs(22.0);
    site.assert_nothing_lost(host, start + secs(3.0), until, &[], Duration::from_secs(90));
    let times = system_times(&site.influx, host);
    assert_true_times(&site, host, &times, start - secs(1.0), now_ns());
    let m = site.factory.metrics().unwrap_or_default();
    assert!(
        m.contains("autofactory_snapshots_time_corrected_total ")
            && !m.contains("autofactory_snapshots_time_corrected_total 0\n"),
        "{m}"
    );
}

#[test]
fn points_collected_offline_before_the_clock_was_set_land_at_their_true_times() {
    let Some(mut site) = Site::new("clock-offline", &spec()) else {
        return;
    };
    // An enrolled board with a right clock...
    let clock = site.dir.path().join("clock-offline.clock");
    set_clock(&clock, 0, "synced");
    let host = "e2e-clock-offline";
    let start = now_ns();
    let a = site.agent(&agent_spec(host, &clock));
    site.assert_nothing_lost(
        host,
        start + secs(3.0),
        start + secs(12.0),
        &[],
        Duration::from_secs(60),
    );
    // ...restarts without its network and without a real-time clock: three hours behind,
    // unsynchronised, collecting from its stored Config.
    site.factory.kill();
    let down = now_ns();
    site.agents[a].kill();
    set_clock(&clock, -THREE_HOURS, "unsynced");
    site.agents[a].start();
    let up = now_ns();
    std::thread::sleep(Duration::from_secs(15));
    // NTP sets the clock; then the factory is reachable again.
    set_clock(&clock, 0, "synced");
    let synced = now_ns();
    std::thread::sleep(Duration::from_secs(3));
    site.factory.start();
    site.assert_nothing_lost(
        host,
        start + secs(3.0),
        synced + secs(15.0),
        &[(down - secs(1.0), up + secs(2.0))],
        Duration::from_secs(90),
    );
    let times = system_times(&site.influx, host);
    let offline = times.iter().filter(|&&t| t > up && t < synced).count();
    assert!(
        offline >= 10,
        "only {offline} points of the 15 s offline at their true times\n{}",
        site.outputs()
    );
    assert_true_times(&site, host, &times, start - secs(1.0), now_ns());
}

#[test]
fn a_synced_agent_with_a_right_clock_keeps_its_exact_timestamps() {
    let Some(mut site) = Site::new("clock-right", &spec()) else {
        return;
    };
    let clock = site.dir.path().join("clock-right.clock");
    set_clock(&clock, 0, "synced");
    let host = "e2e-clock-right";
    let start = now_ns();
    site.agent(&agent_spec(host, &clock));
    site.assert_nothing_lost(
        host,
        start + secs(3.0),
        start + secs(22.0),
        &[],
        Duration::from_secs(90),
    );
    // The agent stamps whole seconds; any rebuild would move them off by its error.
    for t in system_times(&site.influx, host) {
        assert_eq!(off_second(t), 0, "{t} was moved");
    }
    let m = site.factory.metrics().unwrap_or_default();
    assert!(
        m.contains("autofactory_snapshots_time_corrected_total 0\n"),
        "{m}"
    );
}
