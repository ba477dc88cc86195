//! Issue 5: a new agent is given an id by the factory, keeps it in data_dir (mode 0600), and
//! presents it after a restart so the factory welcomes it back.

mod common;

use autofact::run::{Exit, StateDir};
use common::{config, settings, wait_for, Agent, Factory, Script, TempDir};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

#[test]
fn new_client_gets_an_id_and_restart_reuses_it() -> Result<(), String> {
    let factory = Factory::start(Script {
        token: "let-me-in".into(),
        config: config(200, 400),
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    let dir = TempDir::new("identity");

    // First life: enrolls with the token.
    let (s, lines) = settings(factory.addr, &dir.0, "let-me-in");
    let agent = Agent::start(s, lines);
    wait_for("a welcome", Duration::from_secs(10), || {
        !factory.record().welcomes.is_empty()
    });
    wait_for("a first batch", Duration::from_secs(10), || {
        !factory.record().batches.is_empty()
    });
    assert_eq!(agent.stop()?, Exit::Stopped);

    let (id, secret) = {
        let r = factory.record();
        let h = &r.hellos[0];
        assert_eq!(h.client_id, "", "a new agent presents no id");
        assert_eq!(h.token, "let-me-in");
        assert_eq!(h.hostname, "agent-under-test");
        assert_eq!((h.region.as_str(), h.zone.as_str()), ("test", "z1"));
        assert!(
            !h.kernel.is_empty() && !h.arch.is_empty(),
            "host info in Hello: {h:?}"
        );
        assert!(!r.welcomes[0].welcome_back);
        assert_eq!(r.close_codes, [1000], "a stopping agent closes normally");
        (
            r.welcomes[0].client_id.clone(),
            r.welcomes[0].secret.clone(),
        )
    };
    let stored = StateDir::open(&dir.0)
        .and_then(|s| s.identity())
        .map(|(id, _)| id)
        .map_err(|e| e.to_string())?
        .ok_or("no identity stored")?;
    assert_eq!(
        (stored.client_id.as_str(), stored.secret.as_str()),
        (id.as_str(), secret.as_str())
    );
    let mode = std::fs::metadata(dir.0.join("identity.json"))
        .map_err(|e| e.to_string())?
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "identity file must be private");

    // Second life: presents the id and secret and is welcomed back.
    let (s, lines) = settings(factory.addr, &dir.0, "let-me-in");
    let agent = Agent::start(s, lines);
    wait_for("a second welcome", Duration::from_secs(10), || {
        factory.record().welcomes.len() >= 2
    });
    let log = agent.drain_lines();
    assert_eq!(agent.stop()?, Exit::Stopped);

    let r = factory.record();
    assert_eq!(r.hellos[1].client_id, id);
    assert_eq!(r.hellos[1].secret, secret);
    assert!(r.welcomes[1].welcome_back);
    assert_eq!(
        r.clients.len(),
        1,
        "restart must not enroll a second client"
    );
    assert!(log.iter().any(|l| l.contains("welcome back")), "{log:?}");
    Ok(())
}

#[test]
fn before_any_config_it_collects_nothing_and_says_so_once() -> Result<(), String> {
    // Nothing listens here: bind, learn the port, drop.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?;
    let dir = TempDir::new("noconfig");
    let (s, lines) = settings(addr, &dir.0, "t");
    let agent = Agent::start(s, lines);
    let mut seen = Vec::new();
    wait_for("two failed connects", Duration::from_secs(10), || {
        seen.extend(agent.drain_lines());
        seen.iter().filter(|l| l.contains("cannot connect")).count() >= 2
    });
    assert_eq!(agent.stop()?, Exit::Stopped);
    let said = seen
        .iter()
        .filter(|l| l.contains("collecting nothing"))
        .count();
    assert_eq!(said, 1, "{seen:?}");
    let buffer = autofact::buffer::Buffer::open(&dir.0.join("buffer"), 1 << 20)
        .map_err(|e| e.to_string())?;
    assert_eq!(buffer.stats().batches, 0, "no Config: nothing collected");
    Ok(())
}

#[test]
fn a_factory_that_forgot_the_client_re_enrolls_it_with_the_token() -> Result<(), String> {
    let mut factory = Factory::start(Script {
        token: "let-me-in".into(),
        config: config(200, 400),
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    let dir = TempDir::new("forgotten");
    let (s, lines) = settings(factory.addr, &dir.0, "let-me-in");
    let agent = Agent::start(s, lines);
    wait_for("a welcome", Duration::from_secs(10), || {
        !factory.record().welcomes.is_empty()
    });
    // The factory loses its inventory (a new data dir, another site behind the same name).
    factory.record().clients.clear();
    factory.restart().map_err(|e| e.to_string())?;
    wait_for("a second enrollment", Duration::from_secs(10), || {
        factory.record().welcomes.len() >= 2
    });
    let log = agent.drain_lines();
    assert_eq!(agent.stop()?, Exit::Stopped);

    let r = factory.record();
    assert!(
        r.rejects
            .iter()
            .any(|j| j.code == autofact_fbs::RejectCode::UnknownClient),
        "{:?}",
        r.rejects
    );
    let new_id = &r.welcomes[1].client_id;
    assert!(!r.welcomes[1].welcome_back);
    assert_ne!(new_id, &r.welcomes[0].client_id);
    assert!(log.iter().any(|l| l.contains("enrolling again")), "{log:?}");
    let stored = StateDir::open(&dir.0)
        .and_then(|s| s.identity())
        .map(|(id, _)| id)
        .map_err(|e| e.to_string())?
        .ok_or("no identity stored")?;
    assert_eq!(&stored.client_id, new_id);
    Ok(())
}
