//! Issue 17 end to end: agents over `wss://` (CA file, one of them pinned) to a factory that
//! requires TLS, the factory writing to InfluxDB over https (a TLS terminator with the test's
//! certificate in front of the real InfluxDB, trusted through `sink.ca_file`). The happy path,
//! and one fault: the factory killed, its certificate renewed with a new key while it is down,
//! and restarted; the agents reconnect (the pinned one pins both keys, as in a rotation) and
//! nothing is lost.

use crate::{secs, Site};
use autofact_tests::harness::{now_ns, AgentSpec, AgentTls, Factory, FactorySpec, FactoryTls};
use autofact_tests::influx::Influx;
use autofact_tests::pki::Pki;
use autofact_tests::poll::wait_for;
use autofact_tests::tls_front::TlsFront;
use autofact_tests::tmp::TempDir;
use std::time::{Duration, Instant};

/// Long enough for any wait here (reconnect backoff, drains) to be a failure.
const WAIT: Duration = Duration::from_secs(150);

/// A site whose every link is TLS; the front must outlive the factory (it is the store's door).
fn tls_site(name: &str, pki_dir: &TempDir) -> Option<(Site, TlsFront, Pki)> {
    let began = Instant::now();
    let influx = Influx::launch_or_skip(name)?;
    let pki = Pki::create(pki_dir.path()).unwrap_or_else(|e| panic!("pki: {e}"));
    // The factory's files are copies, so the fault test can renew them in place.
    let cert = pki_dir.join("factory.pem");
    let key = pki_dir.join("factory.key");
    for (from, to) in [(&pki.good.cert, &cert), (&pki.good.key, &key)] {
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    }
    let upstream = format!("127.0.0.1:{}", influx.port())
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let front = TlsFront::start(&pki.good, Some(upstream)).unwrap_or_else(|e| panic!("{e}"));
    let dir = TempDir::new(&format!("e2e-{name}")).unwrap_or_else(|e| panic!("temp dir: {e}"));
    let spec = FactorySpec {
        // What users run: a 10 s push, 1 s periods.
        push_interval_ms: 10_000,
        ping_interval_ms: 15_000,
        tls: Some(FactoryTls {
            cert_file: cert,
            key_file: key,
            require_tls: true,
        }),
        sink_ca_file: Some(pki.ca.clone()),
        ..FactorySpec::default()
    };
    let factory = Factory::launch(dir.path(), &front.url(), &spec);
    let site = Site {
        agents: Vec::new(),
        factory,
        influx,
        began,
        dir,
    };
    Some((site, front, pki))
}

fn wss(pki: &Pki, pin: Option<String>) -> Option<AgentTls> {
    Some(AgentTls {
        ca_file: pki.ca.clone(),
        pin_sha256: pin,
    })
}

#[test]
fn tls_everywhere_happy_path_nothing_lost() {
    let pki_dir = TempDir::new("e2e-tls-pki").unwrap_or_else(|e| panic!("{e}"));
    let Some((mut site, front, pki)) = tls_site("tls-happy", &pki_dir) else {
        return;
    };
    let hosts = ["e2e-tls-pinned", "e2e-tls-ca-only"];
    let start = now_ns();
    site.agent(&AgentSpec {
        tls: wss(&pki, Some(pki.good.spki_sha256.clone())),
        ..AgentSpec::new(hosts[0], "eu")
    });
    site.agent(&AgentSpec {
        tls: wss(&pki, None),
        ..AgentSpec::new(hosts[1], "us")
    });
    let until = start + secs(25.0);
    for h in hosts {
        if let Err(e) = autofact_tests::harness::wait_series_until(&site.influx, h, until, WAIT) {
            panic!(
                "{e}\nfront failures: {:?}\n{}",
                front.failed(),
                site.outputs()
            );
        }
        site.assert_nothing_lost(h, start + secs(10.0), until, &[], WAIT);
    }
    // Everything crossed the https door: no write reached InfluxDB another way.
    assert!(!front.seen().is_empty(), "the sink wrote through https");
    let m = site.factory.metrics().unwrap_or_default();
    for reason in ["tls_handshake", "tls_required"] {
        let name = format!("autofactory_rejected_connections_total{{reason=\"{reason}\"}} ");
        let value = m.lines().find_map(|l| l.strip_prefix(name.as_str()));
        assert_eq!(value, Some("0"), "no {reason} refusals:\n{m}");
    }
    println!("tls happy path: {:.1} s", site.elapsed());
}

#[test]
fn tls_factory_killed_and_renewed_certificate_loses_nothing() {
    let pki_dir = TempDir::new("e2e-tls-renew-pki").unwrap_or_else(|e| panic!("{e}"));
    let Some((mut site, _front, pki)) = tls_site("tls-renew", &pki_dir) else {
        return;
    };
    let hosts = ["e2e-tls-renew-pinned", "e2e-tls-renew-ca-only"];
    let start = now_ns();
    // Pinned to the current key and the next one: the rotation is rolled out before the renewal.
    let pins = format!("{},{}", pki.good.spki_sha256, pki.renewed.spki_sha256);
    site.agent(&AgentSpec {
        tls: wss(&pki, Some(pins)),
        ..AgentSpec::new(hosts[0], "eu")
    });
    site.agent(&AgentSpec {
        tls: wss(&pki, None),
        ..AgentSpec::new(hosts[1], "eu")
    });
    for h in hosts {
        if let Err(e) =
            autofact_tests::harness::wait_series_until(&site.influx, h, now_ns() + secs(5.0), WAIT)
        {
            panic!("{e}\n{}", site.outputs());
        }
    }
    site.factory.kill();
    // The renewal lands while the factory is down: a new key, same CA and names.
    for (from, to) in [
        (&pki.renewed.cert, pki_dir.join("factory.pem")),
        (&pki.renewed.key, pki_dir.join("factory.key")),
    ] {
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", to.display()));
    }
    std::thread::sleep(Duration::from_secs(10));
    site.factory.start();
    let back_at = now_ns();
    let reconnected = wait_for("agents to reconnect over wss", WAIT, || {
        hosts
            .iter()
            .all(|h| site.factory.connected(h))
            .then_some(())
    });
    if let Err(e) = reconnected {
        panic!("{e}\n{}", site.outputs());
    }
    for h in hosts {
        site.assert_nothing_lost(h, start + secs(10.0), back_at + secs(5.0), &[], WAIT);
    }
    println!(
        "tls factory kill + renewal: down 10 s, nothing lost, {:.1} s",
        site.elapsed()
    );
}
