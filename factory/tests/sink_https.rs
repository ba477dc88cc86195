//! Issue 17: the InfluxDB sink over https with a private CA (`sink.ca_file`): against an https
//! endpoint the test starts (a TLS terminator with the test's own certificate), alone and in
//! front of a real InfluxDB; a store whose certificate is not from that CA is retried, never
//! acknowledged; settings that cannot work are refused at start.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use autofact_tests::influx::Influx;
use autofact_tests::pki::Pki;
use autofact_tests::poll::wait_for;
use autofact_tests::tls_front::TlsFront;
use autofact_tests::tmp::TempDir;
use autofactory::metrics::Metrics;
use autofactory::sink::{Sink, SinkConfig};

const LINES: &str = "m,host=a v=1i 1\nm,host=a v=2i 2\nm,host=a v=3i 3\nm,host=a v=4i 4\n";

fn sink(cfg: SinkConfig) -> Result<(Sink, Arc<Metrics>), String> {
    let metrics = Arc::new(Metrics::default());
    let sink =
        Sink::start(&cfg, &std::env::temp_dir(), metrics.clone()).map_err(|e| e.to_string())?;
    Ok((sink, metrics))
}

fn https_cfg(url: String, ca: &std::path::Path) -> SinkConfig {
    SinkConfig {
        kind: "influxdb".into(),
        url,
        ca_file: ca.display().to_string(),
        username: "user".into(),
        password: "pw".into(),
        timeout_ms: 2000,
        ..SinkConfig::default()
    }
}

#[test]
fn writes_over_https_with_a_private_ca() {
    let dir = TempDir::new("sink-https").expect("temp dir");
    let pki = Pki::create(dir.path()).expect("pki");
    let front = TlsFront::start(&pki.good, None).expect("https endpoint");
    let (sink, metrics) = sink(https_cfg(front.url(), &pki.ca)).expect("sink starts");
    smol::block_on(sink.write("https-test", LINES.into(), 4)).expect("durable");
    sink.shutdown();
    let seen = front.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen[0]
            .head
            .starts_with("POST /write?db=autofacts&precision=ns HTTP/1.1\r\n"),
        "{}",
        seen[0].head
    );
    assert!(
        seen[0].head.contains("Authorization: Basic dXNlcjpwdw=="),
        "credentials travel inside TLS: {}",
        seen[0].head
    );
    assert_eq!(seen[0].body, LINES.as_bytes());
    assert_eq!(metrics.points_written.load(Ordering::Relaxed), 4);
}

#[test]
fn a_store_from_another_ca_is_retried_and_never_acknowledged() {
    let dir = TempDir::new("sink-https-ca").expect("temp dir");
    let pki = Pki::create(dir.path()).expect("pki");
    let front = TlsFront::start(&pki.other_signed, None).expect("https endpoint");
    let (sink, metrics) = sink(https_cfg(front.url(), &pki.ca)).expect("sink starts");
    // The first poll submits the write; it must still be pending after the refusals.
    let mut write = Box::pin(sink.write("https-test", LINES.into(), 4));
    assert!(smol::block_on(smol::future::poll_once(&mut write)).is_none());
    wait_for("two refused attempts", Duration::from_secs(60), || {
        (metrics.sink_retries.load(Ordering::Relaxed) >= 2).then_some(())
    })
    .expect("retried");
    assert!(
        smol::block_on(smol::future::poll_once(&mut write)).is_none(),
        "never acknowledged over a refused link"
    );
    assert_eq!(metrics.points_written.load(Ordering::Relaxed), 0);
    assert!(front.seen().is_empty(), "no request crossed a refused link");
    wait_for(
        "the endpoint to see the refusal",
        Duration::from_secs(60),
        || {
            front
                .failed()
                .iter()
                .any(|e| e.contains("UnknownCA"))
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", front.failed()));
    sink.shutdown();
}

#[test]
fn writes_to_a_real_influxdb_behind_https() {
    let Some(influx) = Influx::launch_or_skip("writes_to_a_real_influxdb_behind_https") else {
        return;
    };
    let dir = TempDir::new("sink-https-influx").expect("temp dir");
    let pki = Pki::create(dir.path()).expect("pki");
    let upstream = format!("127.0.0.1:{}", influx.port())
        .parse()
        .expect("addr");
    let front = TlsFront::start(&pki.good, Some(upstream)).expect("https endpoint");
    let mut cfg = https_cfg(front.url(), &pki.ca);
    cfg.username.clear();
    cfg.password.clear();
    cfg.database = "tls_facts".into();
    // The database does not exist: CREATE DATABASE goes through https too.
    cfg.create_database = true;
    let (sink, _) = sink(cfg).expect("sink starts");
    smol::block_on(sink.write("https-test", LINES.into(), 4)).expect("durable");
    sink.shutdown();
    let json = influx
        .query("tls_facts", "SELECT count(v) FROM m")
        .expect("query");
    assert!(json.contains("[0,4]"), "4 points in InfluxDB: {json}");
}

#[test]
fn impossible_tls_settings_are_refused_at_start() {
    let dir = TempDir::new("sink-https-cfg").expect("temp dir");
    let e = sink(https_cfg(
        "http://127.0.0.1:8086".into(),
        &dir.join("ca.pem"),
    ))
    .err()
    .unwrap_or_default();
    assert!(e.contains("sink.ca_file is set but sink.url"), "{e}");
    let e = sink(https_cfg(
        "https://localhost:8086".into(),
        &dir.join("missing-ca.pem"),
    ))
    .err()
    .unwrap_or_default();
    assert!(
        e.contains("sink.ca_file") && e.contains("missing-ca.pem"),
        "{e}"
    );
}
