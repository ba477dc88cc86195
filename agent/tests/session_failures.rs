//! Issue 5: an agent that cannot reach its factory for the Config's give-up time exits with
//! status 3 and keeps its buffer; an agent the factory rejects (bad token) says so clearly and
//! does not hammer the factory.

mod common;

use autofact::buffer::Buffer;
use autofact::run::Exit;
use autofact_fbs::Config;
use common::{config, settings, wait_for, Agent, Factory, Script, TempDir};
use std::time::{Duration, Instant};

#[test]
fn gives_up_with_status_3_and_keeps_the_buffer() -> Result<(), String> {
    let mut factory = Factory::start(Script {
        token: "tok".into(),
        config: Config {
            give_up_secs: 1,
            ..config(100, 200)
        },
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    let dir = TempDir::new("giveup");
    let (s, lines) = settings(factory.addr, &dir.0, "tok");
    let mut agent = Agent::start(s, lines);
    wait_for("a batch", Duration::from_secs(10), || {
        !factory.record().batches.is_empty()
    });
    factory.stop();

    wait_for("the agent to give up", Duration::from_secs(20), || {
        agent.finished()
    });
    let exit = agent.join()?;
    assert_eq!(exit, Exit::GaveUp);
    assert_eq!(exit.code(), 3);
    let log = agent.drain_lines();
    assert!(
        log.iter()
            .any(|l| l.contains("giving up") && l.contains("give_up_secs")),
        "{log:?}"
    );

    // What was collected during the outage is still on disk for the next start.
    let buffer = Buffer::open(&dir.0.join("buffer"), 1 << 24).map_err(|e| e.to_string())?;
    assert!(
        buffer.stats().batches > 0,
        "buffer kept: {:?}",
        buffer.stats()
    );
    Ok(())
}

#[test]
fn bad_token_is_reported_and_does_not_hammer() -> Result<(), String> {
    let factory = Factory::start(Script {
        token: "right".into(),
        config: config(100, 200),
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    let dir = TempDir::new("badtoken");
    let (mut s, lines) = settings(factory.addr, &dir.0, "wrong");
    // With a 1 ms base the ordinary backoff would reconnect about ten times in two seconds;
    // after a bad-token Reject the agent must wait the long delay (here 500 ms, jittered down
    // to no less than 250 ms) every time.
    s.timing.backoff_base = Duration::from_millis(1);
    s.timing.backoff_max = Duration::from_millis(500);
    let agent = Agent::start(s, lines);
    wait_for("a reject", Duration::from_secs(10), || {
        !factory.record().rejects.is_empty()
    });
    let first = Instant::now();
    let at_first = factory.record().connections;
    std::thread::sleep(Duration::from_secs(2));
    let window = first.elapsed();
    let log = agent.drain_lines();
    assert_eq!(agent.stop()?, Exit::Stopped);

    let attempts = factory.record().connections - at_first;
    let bound = (window.as_millis() / 250) as usize + 1;
    assert!(
        attempts <= bound,
        "{attempts} connections in {window:?} (bound {bound})"
    );
    assert!(attempts >= 1, "it keeps trying, slowly");
    assert!(
        log.iter()
            .any(|l| l.contains("rejected") && l.contains("bad enrollment token")),
        "{log:?}"
    );
    assert!(factory.record().welcomes.is_empty());
    let id = autofact::run::StateDir::open(&dir.0)
        .and_then(|s| s.identity())
        .map(|(id, _)| id)
        .map_err(|e| e.to_string())?;
    assert_eq!(id, None, "no identity without a Welcome");
    Ok(())
}

#[test]
fn a_silent_factory_is_detected_by_keepalive() -> Result<(), String> {
    let factory = Factory::start(Script {
        token: "tok".into(),
        config: Config {
            ping_interval_ms: 300,
            ..config(100, 200)
        },
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    let dir = TempDir::new("keepalive");
    let (s, lines) = settings(factory.addr, &dir.0, "tok");
    let agent = Agent::start(s, lines);
    wait_for("a batch", Duration::from_secs(10), || {
        !factory.record().batches.is_empty()
    });
    // The connection stays open but nothing comes back, not even a Pong: only the keepalive
    // can notice.
    factory.freeze_connections();
    wait_for("a reconnect", Duration::from_secs(10), || {
        factory.record().hellos.len() >= 2
    });
    let log = agent.drain_lines();
    assert_eq!(agent.stop()?, Exit::Stopped);
    assert!(
        log.iter().any(|l| l.contains("nothing heard from")),
        "{log:?}"
    );
    Ok(())
}
