//! Issue 5: every batch arrives although the factory goes away mid-stream and comes back; acks
//! delete batches from the disk buffer; a Config pushed mid-session takes effect at once.

mod common;

use autofact::buffer::Buffer;
use autofact::run::Exit;
use autofact_fbs::{Config, Periods};
use common::{config, settings, wait_for, Agent, Factory, Script, TempDir};
use std::time::Duration;

const MS: i64 = 1_000_000;

/// Asserts that `times` step by exactly `period_ms`, naming the first gap.
fn assert_evenly_spaced(times: &[i64], period_ms: i64) {
    for w in times.windows(2) {
        assert_eq!(
            w[1] - w[0],
            period_ms * MS,
            "gap between snapshots at {} and {} ns",
            w[0],
            w[1]
        );
    }
}

/// Stops collection by pushing a Config with every period 0, then waits until the factory has
/// acked everything: after that the agent's buffer must be empty.
fn quiesce(factory: &Factory) {
    factory.push_config(Config {
        periods: Periods::all(0),
        ..config(0, 100)
    });
}

#[test]
fn factory_outage_loses_nothing_and_acks_empty_the_buffer() -> Result<(), String> {
    let period = 250;
    let mut factory = Factory::start(Script {
        token: "tok".into(),
        config: config(period, 500),
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    let dir = TempDir::new("outage");
    let (s, lines) = settings(factory.addr, &dir.0, "tok");
    let agent = Agent::start(s, lines);

    wait_for("3 batches", Duration::from_secs(10), || {
        factory.record().batches.len() >= 3
    });
    // The factory dies mid-stream (no close frame); the agent keeps collecting meanwhile.
    factory.stop();
    let before = factory.record().unique_batches().len();
    std::thread::sleep(Duration::from_millis(1500));
    factory.restart().map_err(|e| e.to_string())?;
    wait_for(
        "the backlog after the outage",
        Duration::from_secs(15),
        || factory.record().unique_batches().len() >= before + 4,
    );
    quiesce(&factory);
    // Collection stopped: once the last batch is acked the factory has everything.
    std::thread::sleep(Duration::from_millis(800));
    let log = agent.drain_lines();
    assert_eq!(agent.stop()?, Exit::Stopped);

    let r = factory.record();
    assert!(r.hellos.len() >= 2, "the agent reconnected: {log:?}");
    let batches = r.unique_batches();
    for w in batches.windows(2) {
        assert_eq!(
            w[1].seq,
            w[0].seq + 1,
            "seqs must be contiguous: {:?}",
            batches.iter().map(|b| b.seq).collect::<Vec<_>>()
        );
    }
    let times = r.snapshot_times();
    assert!(times.len() >= 10, "{} snapshots", times.len());
    assert_evenly_spaced(&times, i64::from(period));
    assert!(
        batches.iter().all(|b| !b.snapshots.is_empty()),
        "no empty batch is sent"
    );
    assert!(
        times.iter().all(|t| t % (i64::from(period) * MS) == 0),
        "instants aligned to the period"
    );
    let health = batches
        .iter()
        .flat_map(|b| &b.snapshots)
        .rev()
        .find_map(|s| s.health.clone())
        .ok_or("no health fact")?;
    assert!(
        health.reconnects >= 1,
        "health counts the reconnect: {health:?}"
    );
    let last = batches.last().ok_or("no batches")?.seq;
    assert_eq!(r.acked, Some(last));
    drop(r);

    // Every acked batch is gone from disk, and the next seq continues after the last one.
    let buffer = Buffer::open(&dir.0.join("buffer"), 1 << 24).map_err(|e| e.to_string())?;
    let st = buffer.stats();
    assert_eq!(
        (st.batches, st.bytes),
        (0, 0),
        "acked batches must be deleted"
    );
    assert_eq!(st.next_seq, last + 1);
    Ok(())
}

#[test]
fn live_config_change_reschedules_without_reconnect() -> Result<(), String> {
    let factory = Factory::start(Script {
        token: "tok".into(),
        config: config(100, 300),
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    let dir = TempDir::new("liveconfig");
    let (s, lines) = settings(factory.addr, &dir.0, "tok");
    let agent = Agent::start(s, lines);

    wait_for("snapshots at 100 ms", Duration::from_secs(10), || {
        factory.record().snapshot_times().len() >= 6
    });
    let switched_at = *factory
        .record()
        .snapshot_times()
        .last()
        .ok_or("no snapshot")?;
    factory.push_config(config(400, 400));
    wait_for("snapshots at 400 ms", Duration::from_secs(15), || {
        factory
            .record()
            .snapshot_times()
            .iter()
            .filter(|&&t| t > switched_at)
            .count()
            >= 6
    });
    assert_eq!(agent.stop()?, Exit::Stopped);

    let r = factory.record();
    assert_eq!(r.hellos.len(), 1, "the change must not need a reconnect");
    let times = r.snapshot_times();
    let (old, mut new): (Vec<i64>, Vec<i64>) = times.iter().partition(|&&t| t <= switched_at);
    assert_evenly_spaced(&old, 100);
    // Snapshots collected between the test reading `switched_at` and the agent applying the
    // change are still at 100 ms; drop that transition, then the new period must hold.
    while new.len() >= 2 && new[1] - new[0] == 100 * MS {
        new.remove(0);
    }
    assert!(new.len() >= 5, "{new:?}");
    assert!(
        new[1] - new[0] <= 400 * MS,
        "transition longer than the new period"
    );
    assert_evenly_spaced(&new[1..], 400);
    assert!(
        new[1..].iter().all(|t| t % (400 * MS) == 0),
        "rescheduled onto the new period"
    );
    Ok(())
}

#[test]
fn restarted_agent_collects_offline_with_its_last_config_and_delivers_later() -> Result<(), String>
{
    let period = 200;
    let mut factory = Factory::start(Script {
        token: "tok".into(),
        config: config(period, 400),
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    let dir = TempDir::new("offline");

    // First life: receives and keeps the Config.
    let (s, lines) = settings(factory.addr, &dir.0, "tok");
    let agent = Agent::start(s, lines);
    wait_for("a batch", Duration::from_secs(10), || {
        !factory.record().batches.is_empty()
    });
    assert_eq!(agent.stop()?, Exit::Stopped);

    // Second life, factory unreachable: collects anyway, into the buffer.
    factory.stop();
    let (s, lines) = settings(factory.addr, &dir.0, "tok");
    let agent = Agent::start(s, lines);
    std::thread::sleep(Duration::from_millis(1500));
    let log = agent.drain_lines();
    assert_eq!(agent.stop()?, Exit::Stopped);
    assert!(
        !log.iter().any(|l| l.contains("collecting nothing")),
        "{log:?}"
    );
    let offline = {
        let buffer = Buffer::open(&dir.0.join("buffer"), 1 << 24).map_err(|e| e.to_string())?;
        buffer.stats().batches
    };
    assert!(offline >= 2, "{offline} batches collected offline");

    // Third life, factory back: the offline batches arrive, then collection goes on.
    factory.restart().map_err(|e| e.to_string())?;
    let (s, lines) = settings(factory.addr, &dir.0, "tok");
    let agent = Agent::start(s, lines);
    let seen = factory.record().unique_batches().len();
    wait_for("the offline batches", Duration::from_secs(10), || {
        factory.record().unique_batches().len() as u64 >= seen as u64 + offline
    });
    quiesce(&factory);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(agent.stop()?, Exit::Stopped);

    let r = factory.record();
    let batches = r.unique_batches();
    for w in batches.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "seqs contiguous across restarts");
    }
    // Each life starts on the next period boundary, so the series has gaps only where the
    // agent was not running; within each life the spacing is the period.
    let times = r.snapshot_times();
    assert!(times.windows(2).all(|w| w[1] > w[0]), "time goes forward");
    assert!(
        times
            .windows(2)
            .all(|w| (w[1] - w[0]) % (i64::from(period) * MS) == 0),
        "every instant on the period grid"
    );
    let buffer = Buffer::open(&dir.0.join("buffer"), 1 << 24).map_err(|e| e.to_string())?;
    assert_eq!(buffer.stats().batches, 0);
    Ok(())
}
