//! Identity (issue 15) with the real binaries, at the settings users run (push every 10 s,
//! period 1 s): an enrolled agent's whole data dir copied to a second agent (a cloned SD card)
//! becomes a second client with its own complete series; two agents with one hostname both
//! keep every point, and the duplicate is flagged.

use crate::{secs, Site, PERIOD};
use autofact_tests::harness::{
    bins, check_series, now_ns, wait_series_until, Agent, AgentSpec, FactorySpec,
};
use autofact_tests::influx::Json;
use autofact_tests::poll::wait_for;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Long enough for any wait here (a 10 s push, reconnect backoff) to be a failure.
const WAIT: Duration = Duration::from_secs(150);

/// What users run: every fact each second, a batch every 10 s.
fn users_spec() -> FactorySpec {
    FactorySpec {
        period_ms: 1000,
        push_interval_ms: 10_000,
        ping_interval_ms: 5_000,
        ..FactorySpec::default()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    let out = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .unwrap_or_else(|e| panic!("cp -a {} {}: {e}", from.display(), to.display()));
    assert!(
        out.status.success(),
        "cp -a {} {}: {out:?}",
        from.display(),
        to.display()
    );
}

fn str_of(c: &Json, key: &str) -> String {
    c.get(key)
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Checks the series of host tag `tag` up to `until` (waiting for it), with `allowed` holes.
fn assert_complete(site: &Site, tag: &str, started_by: i64, until: i64, allowed: &[(i64, i64)]) {
    let checked = wait_series_until(&site.influx, tag, until, WAIT)
        .and_then(|t| check_series(tag, &t, PERIOD, started_by, until, allowed));
    match checked {
        Ok(r) => println!("{r}"),
        Err(e) => panic!("{e}\n{}", site.outputs()),
    }
}

#[test]
fn a_copied_data_dir_becomes_a_second_client_and_both_series_are_complete() {
    // Needs the agent's installation (agent/ of this release): a copied data dir must present
    // another installation than the original.
    let Some(mut site) = Site::new("clone", &users_spec()) else {
        return;
    };
    let (a_host, b_host) = ("e2e-clone-orig", "e2e-clone-copy");
    let start = now_ns();
    let a = site.agent(&AgentSpec::new(a_host, "eu"));
    // Enrolled, and some batches acked: the copy carries an id, a secret and acked seqs.
    if let Err(e) = wait_series_until(&site.influx, a_host, start + secs(3.0), WAIT) {
        panic!("{e}\n{}", site.outputs());
    }
    let original_id = site
        .factory
        .client(a_host)
        .map(|c| str_of(&c, "id"))
        .unwrap_or_default();
    assert_eq!(original_id.len(), 32, "{}", site.outputs());

    // The SD card is cloned from a machine that lost power: kill -9, copy, start both.
    let copied_at = now_ns();
    site.agents[a].kill();
    let from = site.agents[a].data_dir();
    copy_dir(&from, &site.dir.join(&format!("{b_host}-data")));
    site.agents[a].start();
    let a_back = now_ns();
    let b_spec = AgentSpec::new(b_host, "eu");
    site.agents
        .push(Agent::launch(site.dir.path(), site.factory.addr(), &b_spec));
    let b_started = now_ns();

    let until = b_started + secs(30.0);
    // The original: complete but for the kill.
    assert_complete(
        &site,
        a_host,
        start + secs(5.0),
        until,
        &[(copied_at - secs(1.5), a_back + secs(2.0))],
    );
    // The copy has its own series from its start (and, before it, the original's batches
    // that were not yet acked when the card was copied: written under the copy's tag too).
    let b_tag = wait_for("the copy to be a client of its own", WAIT, || {
        let c = site.factory.client(b_host)?;
        (str_of(&c, "id") != original_id).then(|| str_of(&c, "host_tag"))
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", site.factory.clients(), site.outputs()));
    assert_eq!(b_tag, b_host);
    assert_complete(
        &site,
        b_host,
        b_started + secs(5.0),
        until,
        &[(i64::MIN, b_started + secs(2.0))],
    );

    let clients = site.factory.clients().expect("/clients");
    let all = clients
        .get("clients")
        .map(|c| c.items().to_vec())
        .unwrap_or_default();
    assert_eq!(all.len(), 2, "two clients: {clients:?}");
    let copy = site.factory.client(b_host).expect("the copy in /clients");
    assert_eq!(str_of(&copy, "cloned_from"), original_id, "{copy:?}");
    assert_ne!(
        str_of(&copy, "installation"),
        site.factory
            .client(a_host)
            .map(|c| str_of(&c, "installation"))
            .unwrap_or_default()
    );
    let metrics = site.factory.metrics().expect("/metrics");
    assert!(
        metrics.contains("autofactory_clones_enrolled_total 1\n"),
        "{metrics}"
    );
    let lines = site
        .factory
        .log()
        .lines()
        .filter(|l| l.contains("presented from a second installation"))
        .count();
    assert_eq!(lines, 1, "one log line for the clone\n{}", site.outputs());
    println!(
        "clone: two clients, both series complete, {:.1} s",
        site.elapsed()
    );
}

#[test]
fn two_agents_with_one_hostname_keep_every_point_and_are_flagged() {
    let Some(mut site) = Site::new("same-host", &users_spec()) else {
        return;
    };
    let host = "e2e-raspberrypi";
    let spec = AgentSpec::new(host, "eu");
    let start = now_ns();
    for name in ["same-host-1", "same-host-2"] {
        let a = Agent::launch_named(site.dir.path(), site.factory.addr(), &spec, name);
        site.agents.push(a);
    }
    // Both enrolled, each with its own host tag.
    let tags = wait_for("two clients named e2e-raspberrypi", WAIT, || {
        let c = site.factory.clients_named(host);
        let tags: Vec<String> = c.iter().map(|c| str_of(c, "host_tag")).collect();
        (tags.len() == 2 && tags.iter().all(|t| !t.is_empty())).then_some((c, tags))
    });
    let (clients, tags) = match tags {
        Ok(x) => x,
        Err(e) => panic!("{e}: {:?}\n{}", site.factory.clients(), site.outputs()),
    };
    assert!(
        tags.contains(&host.to_string()),
        "the first keeps the plain name: {tags:?}"
    );
    let other = tags
        .iter()
        .find(|t| *t != host)
        .cloned()
        .unwrap_or_default();
    let second_id = clients
        .iter()
        .find(|c| str_of(c, "host_tag") == other)
        .map(|c| str_of(c, "id"))
        .unwrap_or_default();
    assert_eq!(other, format!("{host}~{}", &second_id[..8]), "{clients:?}");
    for c in &clients {
        assert_eq!(
            c.get("duplicate_hostname"),
            Some(&Json::Bool(true)),
            "{c:?}"
        );
    }

    // Every point of both machines: two complete series.
    let until = now_ns() + secs(25.0);
    for tag in &tags {
        assert_complete(&site, tag, start + secs(8.0), until, &[]);
    }

    // Flagged in the log (once), `autofactory clients` and the fleet page.
    let warned = site
        .factory
        .log()
        .lines()
        .filter(|l| l.contains("duplicate hostname"))
        .count();
    assert_eq!(warned, 1, "one log line\n{}", site.outputs());
    let out = Command::new(&bins().factory)
        .args(["clients", "--admin", &site.factory.admin().to_string()])
        .output()
        .unwrap_or_else(|e| panic!("autofactory clients: {e}"));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "autofactory clients: {out:?}");
    assert_eq!(
        table.matches(&format!("{host} (dup)")).count(),
        2,
        "{table}"
    );
    assert!(table.contains(&other), "{table}");
    let page = autofact_tests::harness::admin_get(site.factory.admin(), "/")
        .unwrap_or_else(|e| panic!("fleet page: {e}"));
    assert!(page.contains(&other) && page.contains("(dup)"), "{page}");
    println!(
        "same hostname: tags {tags:?}, both complete, {:.1} s",
        site.elapsed()
    );
}

/// Issue 15.3: a board without a real-time clock moves its buffer aside (damaged, say) before
/// NTP has run. Its new buffer's seqs come from a clock a day low, far below the factory's last
/// acknowledged seq; its new epoch makes them a new window, so every point is written (at its
/// true time: the factory rebuilds the low clock's times, issue 20).
#[test]
fn a_buffer_moved_aside_with_the_clock_set_low_has_every_point_written() {
    let Some(mut site) = Site::new("id-lowclock", &users_spec()) else {
        return;
    };
    let clock = site.dir.path().join("lowclock.clock");
    let set_clock = |text: &str| {
        if let Err(e) = std::fs::write(&clock, text) {
            panic!("writing {}: {e}", clock.display());
        }
    };
    set_clock("0 synced\n");
    let host = "e2e-id-lowclock";
    let start = now_ns();
    let a = site.agent(&AgentSpec {
        env: vec![(
            "AUTOFACT_TEST_CLOCK_FILE".into(),
            clock.display().to_string(),
        )],
        ..AgentSpec::new(host, "eu")
    });
    // Two pushes acknowledged: the factory's last seq is now (in µs) of a right clock.
    site.assert_nothing_lost(host, start + secs(3.0), start + secs(22.0), &[], WAIT);
    site.agents[a].kill();
    let down = now_ns();
    let data = site.agents[a].data_dir();
    if let Err(e) = std::fs::rename(data.join("buffer"), data.join("buffer.aside")) {
        panic!("moving {}/buffer aside: {e}", data.display());
    }
    set_clock("-86400000000000 unsynced\n");
    site.agents[a].start();
    let up = now_ns();
    site.assert_nothing_lost(
        host,
        start + secs(3.0),
        up + secs(25.0),
        &[(down - secs(1.0), up + secs(2.0))],
        WAIT,
    );
}
