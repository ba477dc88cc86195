//! The factory's own disk (issue 16.3) with the real binaries: its data dir on a small tmpfs
//! that fills and empties, with a `kill -9` and restart in between. Every agent reconnects and
//! every series is complete, without a second restart; the inventory's warnings are
//! rate-limited.

use crate::{secs, Site, PERIOD};
use autofact_tests::harness::{
    check_series, now_ns, wait_series_until, AgentSpec, Factory, FactorySpec, Tmpfs,
};
use autofact_tests::influx::Influx;
use autofact_tests::poll::wait_for;
use autofact_tests::tmp::TempDir;
use std::time::{Duration, Instant};

/// Long enough for any wait here (a 10 s push, reconnect backoff) to be a failure.
const WAIT: Duration = Duration::from_secs(150);

/// A site whose factory data dir is a tmpfs; the processes are killed before the unmount,
/// and the unmount happens before the temp dir is removed.
struct DiskSite {
    site: Site,
    disk: Option<Tmpfs>,
}

impl Drop for DiskSite {
    fn drop(&mut self) {
        for a in &mut self.site.agents {
            a.kill();
        }
        self.site.factory.kill();
        self.disk.take();
    }
}

fn waits_for_series(site: &Site, host: &str, until: i64) {
    if let Err(e) = wait_series_until(&site.influx, host, until, WAIT) {
        panic!("{e}\n{}", site.outputs());
    }
}

fn unsaved(factory: &Factory) -> Option<u64> {
    let m = factory.metrics().ok()?;
    m.lines()
        .find_map(|l| l.strip_prefix("autofactory_inventory_unsaved_records "))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn a_full_factory_disk_and_a_kill_in_between_lose_nothing_and_need_no_second_restart() {
    let name = "factory-disk";
    let began = Instant::now();
    let Some(influx) = Influx::launch_or_skip(name) else {
        return;
    };
    let dir = TempDir::new(&format!("e2e-{name}")).unwrap_or_else(|e| panic!("temp dir: {e}"));
    let Some(disk) = Tmpfs::mount(&dir.join("factory-data"), "16m", name) else {
        return;
    };
    let spec = FactorySpec {
        period_ms: 1000,
        push_interval_ms: 10_000,
        ping_interval_ms: 5_000,
        ..FactorySpec::default()
    };
    let factory = Factory::launch(dir.path(), &influx.url(), &spec);
    let mut s = DiskSite {
        site: Site {
            agents: Vec::new(),
            factory,
            influx,
            began,
            dir,
        },
        disk: Some(disk),
    };
    let hosts = ["e2e-disk-1", "e2e-disk-2", "e2e-disk-3"];
    let start = now_ns();
    for h in hosts {
        s.site.agent(&AgentSpec::new(h, "eu"));
    }
    for h in hosts {
        waits_for_series(&s.site, h, start + secs(3.0));
    }

    // The factory's disk fills up, and stays full: what the factory frees, the filler takes.
    let disk = s.disk.as_ref().expect("mounted");
    let filled = disk.fill();
    let keeper = disk.keep_full();
    println!("filled {filled} bytes, {} left", disk.available());
    let full_from = now_ns();
    // Until the inventory's writes fail (what slack its journal had is used up by then)...
    let failed = wait_for("an inventory write to fail", WAIT, || {
        let log = s.site.factory.log();
        log.lines()
            .any(|l| l.contains(" WARN ") && l.contains("inventory"))
            .then_some(())
    });
    if let Err(e) = failed {
        panic!("{e}\n{}", s.site.outputs());
    }
    // ... and agents keep sending for a while after that (a push each at least).
    let failing_from = now_ns();
    for h in hosts {
        waits_for_series(&s.site, h, failing_from + secs(12.0));
    }

    // kill -9 while full, and back at once: it must start on the full disk.
    s.site.factory.kill();
    s.site.factory.start();
    let pid = s.site.factory.pid();
    let restarted = now_ns();
    let back = wait_for("every agent to reconnect", WAIT, || {
        hosts
            .iter()
            .all(|h| s.site.factory.connected(h))
            .then_some(())
    });
    if let Err(e) = back {
        panic!("{e}\n{}", s.site.outputs());
    }
    for h in hosts {
        waits_for_series(&s.site, h, restarted + secs(15.0));
    }

    // Space comes back: the inventory is written again by the same process.
    drop(keeper);
    disk.free();
    let freed = now_ns();
    let until = freed + secs(15.0);
    for h in hosts {
        let checked = wait_series_until(&s.site.influx, h, until, WAIT)
            .and_then(|t| check_series(h, &t, PERIOD, start + secs(8.0), until, &[]));
        match checked {
            Ok(r) => println!("{r}"),
            Err(e) => panic!("{e}\n{}", s.site.outputs()),
        }
    }
    if let Err(e) = wait_for("the inventory to be saved", WAIT, || {
        (unsaved(&s.site.factory)? == 0).then_some(())
    }) {
        panic!("{e}\n{}", s.site.outputs());
    }
    assert!(s.site.factory.exited().is_none(), "{}", s.site.outputs());
    assert_eq!(s.site.factory.pid(), pid, "no second restart");
    for h in hosts {
        assert!(
            s.site.factory.connected(h),
            "{h} connected\n{}",
            s.site.outputs()
        );
    }
    // Rate-limited: one warning a minute at most, not one per ack (issue 16: 94 in 60 s).
    let log = s.site.factory.log();
    let warnings = log
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("inventory"))
        .count();
    let minutes = (now_ns() - full_from) as f64 / 60e9;
    assert!(
        warnings as f64 <= 2.0 * (minutes.ceil() + 1.0),
        "{warnings} inventory warnings in {minutes:.1} min\n{log}"
    );
    assert!(
        log.contains("write failed") || log.contains("cannot reopen"),
        "the inventory's writes never failed: the disk was not full\n{log}"
    );
    println!(
        "factory disk: full {:.0} s with a kill -9, {warnings} inventory warning(s), {:.1} s",
        (freed - full_from) as f64 / 1e9,
        s.site.elapsed()
    );
}
