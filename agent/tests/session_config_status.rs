//! Applied-config status (issue 19.5): every batch names the Config in force by its hash; a
//! Config the agent cannot apply is refused (the previous one stays in force), reported as
//! Failed with the reason in the next Hello (the agent reconnects once per refused Config to
//! say it), and never makes a reconnect loop. User settings: collect every 1 s, push every 10 s.

mod common;

use autofact::run::StateDir;
use autofact_fbs::{Config, ConfigStatus};
use common::{config, settings, wait_for, Agent, Factory, Script, TempDir};
use std::time::Duration;

/// Long enough for two pushes of 10 s on a loaded machine.
const PUSHES: Duration = Duration::from_secs(40);

#[test]
fn batches_report_the_applied_config_and_a_refused_one_is_reported_failed() -> Result<(), String> {
    let good = config(1000, 10_000);
    let factory = Factory::start(Script {
        token: "tok".into(),
        config: good,
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    let dir = TempDir::new("cfg-status");
    let (s, lines) = settings(factory.addr, &dir.0, "tok");
    let agent = Agent::start(s, lines);

    wait_for("a first batch", PUSHES, || {
        !factory.record().batches.is_empty()
    });
    {
        let r = factory.record();
        let b = &r.batches[0];
        assert_eq!(
            (b.config_hash, b.config_status),
            (good.hash(), ConfigStatus::Applied),
            "the first batch names the Welcome's Config"
        );
    }

    // A Config no factory of this release would send (push every 50 ms).
    let bad = Config {
        push_interval_ms: 50,
        ..good
    };
    factory.push_config(bad);
    wait_for("a Hello reporting the refusal", PUSHES, || {
        factory
            .record()
            .hellos
            .iter()
            .any(|h| h.config_status == ConfigStatus::Failed)
    });
    let connections = {
        let r = factory.record();
        let h = r
            .hellos
            .iter()
            .find(|h| h.config_status == ConfigStatus::Failed)
            .ok_or("no failed Hello")?;
        assert_eq!(h.config_hash, bad.hash());
        assert!(
            h.config_error.contains("push_interval_ms"),
            "reason names the value: {:?}",
            h.config_error
        );
        r.connections
    };
    let before = factory.record().batches.len();
    wait_for("a batch after the refusal", PUSHES, || {
        factory.record().batches.len() > before
    });
    {
        let r = factory.record();
        let b = r.batches.last().ok_or("no batch")?;
        assert_eq!(
            (b.config_hash, b.config_status),
            (bad.hash(), ConfigStatus::Failed)
        );
    }
    // The Welcome of the reconnect carried the bad Config again: refused, but already reported,
    // so no further reconnect.
    assert_eq!(factory.record().connections, connections, "reconnect loop");
    // The previous Config stays in force (and on disk for the next start).
    let stored = StateDir::open(&dir.0)
        .map_err(|e| e.to_string())?
        .config()
        .map_err(|e| e.to_string())?
        .0;
    assert_eq!(stored, Some(good));

    // A good Config again: applied and reported.
    let next = Config {
        ping_interval_ms: 3_000,
        ..good
    };
    factory.push_config(next);
    let before = factory.record().batches.len();
    wait_for("a batch naming the new Config", PUSHES, || {
        let r = factory.record();
        r.batches[before..]
            .iter()
            .any(|b| b.config_hash == next.hash() && b.config_status == ConfigStatus::Applied)
    });
    agent.stop()?;
    Ok(())
}
