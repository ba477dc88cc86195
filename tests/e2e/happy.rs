//! The happy path: three agents with different hostnames, regions and zones at a 1 s period;
//! every measurement this machine has arrives with the right tags, and nothing is lost.

use crate::{secs, Site};
use autofact_tests::harness::{bins, now_ns, AgentSpec, FactorySpec, DB};
use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

/// The measurements an agent on this machine produces: those every Linux has, `temp` when
/// there are thermal zones, and whatever else one local round (`autofact collect --once`) shows
/// (disk and diskio depend on the machine having block devices and a real root fs).
fn expected_measurements() -> BTreeSet<String> {
    let mut m: BTreeSet<String> = ["cpu", "kernel", "mem", "swap", "system", "net", "autofact"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let zones = std::fs::read_dir("/sys/class/thermal")
        .map(|d| {
            d.flatten().any(|e| {
                e.file_name().to_string_lossy().starts_with("thermal_zone")
                    && std::fs::read_to_string(e.path().join("temp")).is_ok()
            })
        })
        .unwrap_or(false);
    if zones {
        m.insert("temp".into());
    }
    let out = Command::new(&bins().agent)
        .args(["collect", "--once"])
        .output()
        .unwrap_or_else(|e| panic!("autofact collect --once: {e}"));
    assert!(out.status.success(), "autofact collect --once: {out:?}");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(name) = line.split([',', ' ']).next() {
            m.insert(name.to_string());
        }
    }
    m
}

/// The values of tag `key` among `host`'s points in `measurement`.
fn tag_values(site: &Site, measurement: &str, key: &str, host: &str) -> BTreeSet<String> {
    let q = format!(
        "SHOW TAG VALUES FROM \"{measurement}\" WITH KEY = \"{key}\" WHERE \"host\" = '{host}'"
    );
    match site.influx.select(DB, &q) {
        Ok(series) => series
            .iter()
            .flat_map(|s| s.values.iter())
            .filter_map(|row| row.get(1).and_then(|v| v.as_str()).map(String::from))
            .collect(),
        Err(e) => panic!("{q}: {e}"),
    }
}

#[test]
fn happy_path_three_agents_every_measurement_tagged_nothing_lost() {
    let Some(mut site) = Site::new("happy", &FactorySpec::default()) else {
        return;
    };
    let specs = [
        AgentSpec {
            zone: "a".into(),
            ..AgentSpec::new("e2e-happy-eu-1", "eu")
        },
        AgentSpec::new("e2e-happy-us-1", "us"),
        AgentSpec {
            zone: "rack-7".into(),
            ..AgentSpec::new("e2e-happy-ap-1", "ap")
        },
    ];
    let start = now_ns();
    for s in &specs {
        site.agent(s);
    }
    let expected = expected_measurements();
    // 20 periods of data from each agent, then every series is checked over the whole run.
    let until = start + secs(20.0);
    for s in &specs {
        site.assert_nothing_lost(
            &s.hostname,
            start + secs(10.0),
            until,
            &[],
            Duration::from_secs(90),
        );
    }
    for s in &specs {
        for m in &expected {
            let hosts = tag_values(&site, m, "host", &s.hostname);
            assert_eq!(
                hosts,
                BTreeSet::from([s.hostname.clone()]),
                "measurement {m} has no points of {}\n{}",
                s.hostname,
                site.outputs()
            );
            let regions = tag_values(&site, m, "region", &s.hostname);
            assert_eq!(
                regions,
                BTreeSet::from([s.region.clone()]),
                "{m} of {}: region tags",
                s.hostname
            );
            let zones = tag_values(&site, m, "zone", &s.hostname);
            let want: BTreeSet<String> = if s.zone.is_empty() {
                BTreeSet::new()
            } else {
                BTreeSet::from([s.zone.clone()])
            };
            assert_eq!(zones, want, "{m} of {}: zone tags", s.hostname);
        }
    }
    for a in &mut site.agents {
        assert!(a.exited().is_none(), "agent {} exited", a.host());
    }
    println!(
        "happy path: measurements {expected:?} for 3 agents, {:.1} s",
        site.elapsed()
    );
}
