//! Faults while agents send: SIGKILL of the agent and of the factory, an InfluxDB outage, a
//! network cut, and an outage long enough to fill the agent's buffer cap. Each asserts that
//! the `system` series has no hole except the one the scenario means.

use crate::{secs, Site, PERIOD};
use autofact_tests::harness::{
    last_health, max_health, now_ns, series_report, system_times, AgentSpec, FactorySpec,
};
use autofact_tests::poll::wait_for;
use autofact_tests::proxy::Proxy;
use std::time::{Duration, Instant};

/// Long enough for any wait in these scenarios (reconnect backoff, drains) to be a failure.
const WAIT: Duration = Duration::from_secs(150);

/// Waits until the agent's data up to `secs_from_now` seconds from now has arrived.
fn run_for(site: &Site, host: &str, secs_from_now: f64) {
    let until = now_ns() + secs(secs_from_now);
    if let Err(e) = autofact_tests::harness::wait_series_until(&site.influx, host, until, WAIT) {
        panic!("{e}\n{}", site.outputs());
    }
}

#[test]
fn agent_sigkill_and_immediate_restart_loses_only_the_time_it_was_down() {
    let Some(mut site) = Site::new("agent-kill", &FactorySpec::default()) else {
        return;
    };
    let host = "e2e-agent-kill";
    let start = now_ns();
    let i = site.agent(&AgentSpec::new(host, "eu"));
    run_for(&site, host, 8.0);
    let killed_at = now_ns();
    site.agents[i].kill();
    site.agents[i].start();
    let back_at = now_ns();
    // Down from the kill until the new process collects its first round: it starts collecting
    // at once with its stored Config; 2 s covers its startup and the next aligned instant.
    let allowed = (killed_at - secs(1.5), back_at + secs(2.0));
    let until = back_at + secs(10.0);
    let r = site.assert_nothing_lost(host, start + secs(10.0), until, &[allowed], WAIT);
    let down = (back_at - killed_at) as f64 / 1e9;
    let gap = r.gaps.first().map_or(0.0, |g| g.secs());
    println!(
        "agent kill: process down {down:.3} s, largest hole {gap:.1} s, {:.1} s",
        site.elapsed()
    );
}

#[test]
fn factory_sigkill_and_restart_ten_seconds_later_loses_nothing() {
    let Some(mut site) = Site::new("factory-kill", &FactorySpec::default()) else {
        return;
    };
    let hosts = ["e2e-factory-kill-1", "e2e-factory-kill-2"];
    let start = now_ns();
    for h in hosts {
        site.agent(&AgentSpec::new(h, "eu"));
    }
    for h in hosts {
        run_for(&site, h, 5.0);
    }
    site.factory.kill();
    std::thread::sleep(Duration::from_secs(10));
    site.factory.start();
    let restarted = Instant::now();
    let back_at = now_ns();
    let reconnected = wait_for("agents to reconnect", WAIT, || {
        hosts
            .iter()
            .all(|h| site.factory.connected(h))
            .then_some(())
    });
    if let Err(e) = reconnected {
        panic!("{e}\n{}", site.outputs());
    }
    let reconnect_s = restarted.elapsed().as_secs_f64();
    for h in hosts {
        site.assert_nothing_lost(h, start + secs(10.0), back_at + secs(5.0), &[], WAIT);
    }
    println!(
        "factory kill: down 10 s, agents back {reconnect_s:.1} s after the restart, {:.1} s",
        site.elapsed()
    );
}

#[test]
fn influxdb_down_thirty_seconds_loses_nothing_and_the_backlog_drains() {
    let Some(mut site) = Site::new("influx-outage", &FactorySpec::default()) else {
        return;
    };
    let host = "e2e-influx-outage";
    let start = now_ns();
    site.agent(&AgentSpec::new(host, "eu"));
    run_for(&site, host, 5.0);
    let reconnects_before = last_health(&site.influx, host, "reconnects").unwrap_or(0);
    site.influx.stop();
    std::thread::sleep(Duration::from_secs(30));
    if let Err(e) = site.influx.start() {
        panic!("InfluxDB did not restart: {e}\n{}", site.outputs());
    }
    let up_at = now_ns();
    let restarted = Instant::now();
    site.assert_nothing_lost(host, start + secs(10.0), up_at + secs(5.0), &[], WAIT);
    // The backlog built during the outage is visible, then drains back to about nothing.
    let peak = max_health(&site.influx, host, "buffered_batches").unwrap_or(0);
    assert!(
        peak >= 20,
        "the agent never had a backlog (peak buffered_batches {peak}): was InfluxDB down?"
    );
    let drained = wait_for("the backlog to drain", WAIT, || {
        let agent = last_health(&site.influx, host, "buffered_batches")?;
        let factory = site
            .factory
            .client(host)?
            .get("backlog")
            .and_then(|b| b.as_i64())?;
        (agent <= 2 && factory <= 2).then_some((agent, factory))
    });
    let (agent_backlog, factory_backlog) = match drained {
        Ok(x) => x,
        Err(e) => panic!("{e}\n{}", site.outputs()),
    };
    // The factory kept the link alive while it was not reading (backpressure): no reconnects.
    let reconnects = last_health(&site.influx, host, "reconnects").unwrap_or(0);
    assert_eq!(
        reconnects,
        reconnects_before,
        "the agent reconnected during the InfluxDB outage\n{}",
        site.outputs()
    );
    println!(
        "influx outage: 30 s, peak backlog {peak} batches, drained to {agent_backlog} (agent) / \
         {factory_backlog} (factory /clients) {:.1} s after InfluxDB came back, {:.1} s",
        restarted.elapsed().as_secs_f64(),
        site.elapsed()
    );
}

#[test]
fn network_cut_sixty_seconds_is_noticed_and_loses_nothing() {
    // A short ping interval in the pushed Config: the agent notices a dead link within 2 s.
    let spec = FactorySpec {
        ping_interval_ms: 1000,
        ..FactorySpec::default()
    };
    let Some(mut site) = Site::new("network-cut", &spec) else {
        return;
    };
    let proxy = match Proxy::start(site.factory.addr()) {
        Ok(p) => p,
        Err(e) => panic!("proxy: {e}"),
    };
    let host = "e2e-network-cut";
    let start = now_ns();
    let i = site.agent_via(proxy.addr(), &AgentSpec::new(host, "eu"));
    run_for(&site, host, 5.0);
    let welcomes = |site: &Site| site.agents[i].log().matches("welcome back").count();
    let before = welcomes(&site);
    proxy.cut();
    let cut = Instant::now();
    let noticed = wait_for(
        "the agent to notice the cut",
        Duration::from_secs(20),
        || {
            site.agents[i]
                .log()
                .contains("link lost")
                .then(|| cut.elapsed())
        },
    );
    let noticed = match noticed {
        Ok(d) => d,
        Err(e) => panic!("{e}\n{}", site.outputs()),
    };
    std::thread::sleep(Duration::from_secs(60).saturating_sub(cut.elapsed()));
    proxy.restore();
    let restored = Instant::now();
    let restored_at = now_ns();
    // A new session: the factory still lists the old one as connected (it heard nothing
    // either), so the agent's own "welcome back" is what shows it got through.
    let back = wait_for("the agent to reconnect", WAIT, || {
        (welcomes(&site) > before).then(|| restored.elapsed())
    });
    let back = match back {
        Ok(d) => d,
        Err(e) => panic!("{e}\n{}", site.outputs()),
    };
    site.assert_nothing_lost(host, start + secs(10.0), restored_at + secs(5.0), &[], WAIT);
    println!(
        "network cut: 60 s, noticed after {:.1} s, reconnected {:.1} s after the restore, {:.1} s",
        noticed.as_secs_f64(),
        back.as_secs_f64(),
        site.elapsed()
    );
}

/// The largest bytes-per-batch the agent's health points show while batches were buffered.
fn batch_bytes(site: &Site, host: &str) -> Option<u64> {
    let q = format!(
        "SELECT \"buffered_bytes\", \"buffered_batches\" FROM \"autofact\" \
         WHERE \"host\" = '{host}' AND \"buffered_batches\" > 0"
    );
    let series = site.influx.select(autofact_tests::harness::DB, &q).ok()?;
    series
        .iter()
        .flat_map(|s| s.values.iter())
        .filter_map(|row| {
            let bytes = row.get(1)?.as_i64()?;
            let batches = row.get(2)?.as_i64()?;
            (batches > 0).then(|| (bytes / batches) as u64)
        })
        .max()
}

#[test]
fn buffer_cap_during_a_long_outage_drops_the_oldest_and_keeps_the_newest() {
    const CAP: u64 = 64 * 1024;
    let spec = FactorySpec {
        buffer_cap_bytes: CAP,
        ..FactorySpec::default()
    };
    let Some(mut site) = Site::new("buffer-cap", &spec) else {
        return;
    };
    let host = "e2e-buffer-cap";
    let start = now_ns();
    site.agent(&AgentSpec::new(host, "eu"));
    run_for(&site, host, 5.0);
    // How big one batch is on this machine decides how long the cap takes to fill. A short
    // outage first shows it: the health points collected meanwhile have batches in the buffer.
    site.factory.kill();
    std::thread::sleep(Duration::from_secs(5));
    site.factory.start();
    run_for(&site, host, 0.0);
    let per_batch = batch_bytes(&site, host).unwrap_or(1000).max(1);
    let fill_secs = CAP / per_batch;
    // 20 s longer than filling the cap takes: at least those 20 s must be dropped.
    let outage = Duration::from_secs((fill_secs + 20).clamp(40, 170));
    let delivered = system_times(&site.influx, host)
        .last()
        .copied()
        .unwrap_or(0);
    site.factory.kill();
    let down_at = now_ns();
    std::thread::sleep(outage);
    site.factory.start();
    let up_at = now_ns();
    // The agent keeps collecting (and dropping the oldest) until its backoff lets it reconnect,
    // up to a minute after the restart: what it keeps is the cap's worth before that moment.
    if let Err(e) = wait_for("the agent to reconnect", WAIT, || {
        site.factory.connected(host).then_some(())
    }) {
        panic!("{e}\n{}", site.outputs());
    }
    let back_at = now_ns();
    let until = back_at + secs(5.0);
    if let Err(e) = autofact_tests::harness::wait_series_until(&site.influx, host, until, WAIT) {
        panic!("{e}\n{}", site.outputs());
    }
    let times = system_times(&site.influx, host);
    let r = series_report(host, &times, PERIOD);
    println!("{r}");
    // One hole, starting where the outage began: the oldest batches went, the newest stayed.
    assert_eq!(
        r.gaps.len(),
        1,
        "{r}: expected exactly one hole (the dropped oldest batches)\n{}",
        site.outputs()
    );
    let hole = r.gaps[0];
    // It starts at the first batch not acked before the kill: those are the oldest in the
    // buffer, so they go first (after the last point seen delivered, at most one push later).
    assert!(
        hole.from >= delivered && hole.from <= down_at + secs(3.0),
        "{r}: the hole should start where the outage began (last delivered point {delivered}, \
         factory killed at {down_at})"
    );
    // What the cap keeps: about fill_secs of the newest data before the reconnect, all of it
    // (the single hole above means everything after it arrived).
    let kept = (back_at - hole.to) as f64 / 1e9;
    assert!(
        kept >= fill_secs as f64 / 2.0,
        "{r}: only {kept:.1} s before the reconnect survived (the cap holds ~{fill_secs} s); \
         the newest batches must be kept"
    );
    assert!(
        r.first <= start + secs(10.0) && r.last >= until,
        "{r}: the series must cover the run"
    );
    let dropped = max_health(&site.influx, host, "dropped_batches").unwrap_or(0);
    assert!(
        dropped > 0,
        "dropped_batches never went above 0 in the autofact measurement\n{}",
        site.outputs()
    );
    println!(
        "buffer cap: {CAP} bytes, ~{per_batch} bytes/batch, factory down {:.0} s, hole {:.1} s, \
         {kept:.1} s kept before the reconnect ({:.1} s after the restart), dropped_batches {dropped}, {:.1} s",
        outage.as_secs_f64(),
        hole.secs(),
        (back_at - up_at) as f64 / 1e9,
        site.elapsed()
    );
}
