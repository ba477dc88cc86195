//! Unit tests: config defaults and validation, the pure helpers, and the writer's batching and
//! retry rules against a scripted in-memory backend.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nanoserde::{DeJson, SerJson};

use super::backoff::{self, Stop};
use super::config::{Api, Batching, SinkConfig, Target};
use super::file::{civil_from_days, utc_day};
use super::influx::{base64, dropped_count, error_text, parse_retry_after, url_encode};
use super::writer::{split_half, Attempt, Backend};
use super::{Sink, SinkError};
use crate::metrics::Metrics;

#[test]
fn empty_config_means_file_sink_under_data_dir() {
    let cfg = SinkConfig::deserialize_json("{}").expect("{} is a valid sink config");
    assert_eq!(cfg, SinkConfig::default());
    let again = SinkConfig::deserialize_json(&cfg.serialize_json()).expect("round trip");
    assert_eq!(again, cfg);
    let (target, batching) = cfg
        .validate(Path::new("/var/lib/af"))
        .expect("defaults validate");
    assert_eq!(
        target,
        Target::File {
            dir: "/var/lib/af/facts".into()
        }
    );
    assert_eq!(
        batching,
        Batching {
            batch_points: 5000,
            flush: Duration::from_secs(1),
            linger: Duration::ZERO,
            queue: 256
        }
    );
}

#[test]
fn influx_v1_and_v2_configs_validate() {
    let cfg = SinkConfig::deserialize_json(
        r#"{"kind":"influxdb","url":"http://10.0.0.5:8086/","username":"u","password":"p",
            "create_database":true,"timeout_ms":2500,"unknown_field":1}"#,
    )
    .expect("parses");
    let (target, _) = cfg.validate(Path::new("/d")).expect("valid");
    assert_eq!(
        target,
        Target::Influx {
            base: "http://10.0.0.5:8086".into(),
            api: Api::V1 {
                database: "autofacts".into(),
                username: "u".into(),
                password: "p".into(),
                create_database: true
            },
            timeout: Duration::from_millis(2500),
            writers: 2,
            ca_file: None,
        }
    );
    let cfg = SinkConfig::deserialize_json(
        r#"{"kind":"influxdb","api":"v2","org":"acme","token":"t0k"}"#,
    )
    .expect("parses");
    let (target, _) = cfg.validate(Path::new("/d")).expect("valid");
    let Target::Influx { api, .. } = target else {
        panic!("expected an InfluxDB target, got {target:?}");
    };
    assert_eq!(
        api,
        Api::V2 {
            org: "acme".into(),
            bucket: "autofacts".into(),
            token: "t0k".into()
        }
    );
}

#[test]
fn bad_configs_name_the_field() {
    for (json, field) in [
        (r#"{"kind":"kafka"}"#, "sink.kind"),
        (r#"{"kind":"influxdb","api":"v9"}"#, "sink.api"),
        (r#"{"kind":"influxdb","url":"ftp://x:8086"}"#, "sink.url"),
        (
            r#"{"kind":"influxdb","url":"http://x:8086","ca_file":"/ca.pem"}"#,
            "sink.ca_file",
        ),
        (
            r#"{"kind":"influxdb","url":"http://x:8086/prefix"}"#,
            "sink.url",
        ),
        (r#"{"batch_points":0}"#, "sink.batch_points"),
        (r#"{"queue":0}"#, "sink.queue"),
    ] {
        let cfg = SinkConfig::deserialize_json(json).expect("parses");
        match cfg.validate(Path::new("/d")) {
            Err(SinkError::Config(m)) => assert!(m.contains(field), "{json}: {m}"),
            other => panic!("{json}: expected a config error, got {other:?}"),
        }
    }
}

#[test]
fn backoff_doubles_to_the_cap_and_honours_retry_after() {
    assert_eq!(backoff::delay(0, None, 1.0), Duration::from_millis(100));
    assert_eq!(backoff::delay(0, None, 0.0), Duration::from_millis(50));
    assert_eq!(backoff::delay(3, None, 1.0), Duration::from_millis(800));
    assert_eq!(backoff::delay(30, None, 1.0), backoff::CAP);
    assert_eq!(backoff::delay(u32::MAX, None, 0.0), backoff::CAP / 2);
    // Retry-After is a floor, itself capped.
    assert_eq!(
        backoff::delay(0, Some(Duration::from_secs(7)), 0.3),
        Duration::from_secs(7)
    );
    assert_eq!(
        backoff::delay(0, Some(Duration::from_secs(99_999)), 0.3),
        backoff::RETRY_AFTER_CAP
    );
    for _ in 0..100 {
        let j = backoff::jitter();
        assert!((0.0..1.0).contains(&j), "{j}");
    }
}

#[test]
fn stop_ends_a_sleep() {
    let stop = Arc::new(Stop::default());
    let s = stop.clone();
    let t = std::thread::spawn(move || s.sleep(Duration::from_secs(3600)));
    stop.stop();
    assert!(t.join().expect("sleeper thread"));
    assert!(stop.is_stopped());
}

#[test]
fn helpers() {
    assert_eq!(url_encode("a b&c=d/é~"), "a%20b%26c%3Dd%2F%C3%A9~");
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"user:p@ss w0rd"), "dXNlcjpwQHNzIHcwcmQ=");
    // InfluxDB 1.6's own messages.
    assert_eq!(
        dropped_count(
            "partial write: field type conflict: input field \"v\" on measurement \"m\" is type integer, already exists as type float dropped=1",
            2
        ),
        1
    );
    assert_eq!(
        dropped_count(
            "partial write: unable to parse 'bad line here': invalid field format dropped=0",
            3
        ),
        1
    );
    assert_eq!(dropped_count("field type conflict", 4), 4);
    assert_eq!(dropped_count("dropped=99", 4), 4);
    assert_eq!(
        error_text(
            r#"{"error":"database not found: \"x\""}"#,
            None,
            "Not Found"
        ),
        "database not found: \"x\""
    );
    assert_eq!(
        error_text(
            r#"{"code":"not found","message":"bucket \"b\" not found"}"#,
            None,
            "X"
        ),
        "bucket \"b\" not found"
    );
    assert_eq!(
        error_text("<html>oops</html>\n", None, "X"),
        "<html>oops</html>"
    );
    assert_eq!(
        error_text("", Some("field type conflict"), "Bad Request"),
        "field type conflict"
    );
    assert_eq!(error_text("", None, "Bad Gateway"), "Bad Gateway");
    assert_eq!(error_text(&"é".repeat(600), None, "X").len(), 1000);
    assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
    assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    assert_eq!(split_half("a\nb\nc\nd\n"), ("a\nb\n", "c\nd\n"));
    assert_eq!(split_half("a\nb\nc\n"), ("a\n", "b\nc\n"));
}

#[test]
fn utc_days() {
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    assert_eq!(civil_from_days(-1), (1969, 12, 31));
    let at = |secs: u64| utc_day(std::time::UNIX_EPOCH + Duration::from_secs(secs));
    assert_eq!(at(1_709_251_199), "2024-02-29"); // 23:59:59 UTC
    assert_eq!(at(1_709_251_200), "2024-03-01");
    assert_eq!(at(1_798_761_600), "2027-01-01");
}

/// A backend that answers from a script (then Durable), records every body, and can hold its
/// first attempt until the test releases it.
struct Scripted {
    script: VecDeque<Attempt>,
    bodies: Arc<Mutex<Vec<String>>>,
    gate: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
}

impl Backend for Scripted {
    fn attempt(&mut self, body: &str, _points: usize) -> Attempt {
        if let Some((entered, release)) = self.gate.take() {
            let _ = entered.send(());
            let _ = release.recv();
        }
        self.bodies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(body.to_string());
        self.script.pop_front().unwrap_or(Attempt::Durable)
    }

    fn describe(&self) -> String {
        "scripted".into()
    }
}

struct Rig {
    sink: Sink,
    bodies: Arc<Mutex<Vec<String>>>,
    metrics: Arc<Metrics>,
    entered: mpsc::Receiver<()>,
    release: mpsc::Sender<()>,
}

fn rig(script: Vec<Attempt>, batch_points: usize, gated: bool) -> Rig {
    rig_with(
        script,
        batch_points,
        gated,
        Duration::ZERO,
        Duration::from_secs(1),
    )
}

fn rig_with(
    script: Vec<Attempt>,
    batch_points: usize,
    gated: bool,
    linger: Duration,
    flush: Duration,
) -> Rig {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let metrics = Arc::new(Metrics::default());
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let backend = Scripted {
        script: script.into(),
        bodies: bodies.clone(),
        gate: gated.then_some((entered_tx, release_rx)),
    };
    let batching = Batching {
        batch_points,
        flush,
        linger,
        queue: 16,
    };
    let mut backend = Some(backend);
    let sink = Sink::spawn(
        1,
        move || backend.take().expect("one writer takes the one backend"),
        batching,
        metrics.clone(),
    )
    .expect("writer thread");
    Rig {
        sink,
        bodies,
        metrics,
        entered: entered_rx,
        release: release_tx,
    }
}

impl Rig {
    fn bodies(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn write(sink: &Sink, lines: &str) -> smol::Task<Result<(), SinkError>> {
    let sink = sink.clone();
    let lines = lines.to_string();
    let points = lines.lines().count();
    smol::spawn(async move { sink.write(lines, points).await })
}

/// Waits until the writer has taken `n` more submissions off the queue... by watching the queue.
fn wait_queued(sink: &Sink, n: usize) {
    for _ in 0..2000 {
        if sink.tx.len() == n {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!(
        "queue never reached {n} submissions (has {})",
        sink.tx.len()
    );
}

#[test]
fn queued_submissions_are_written_together_up_to_batch_points() {
    let r = rig(vec![], 3, true);
    smol::block_on(async {
        let a = write(&r.sink, "a v=1 1\n");
        r.entered.recv().expect("writer took a");
        // While `a` is being written, four more arrive: they form the next batches.
        let b = write(&r.sink, "b v=1 1\nb v=2 2\n");
        wait_queued(&r.sink, 1);
        let c = write(&r.sink, "c v=1 1");
        wait_queued(&r.sink, 2);
        let d = write(&r.sink, "d v=1 1\n");
        wait_queued(&r.sink, 3);
        let e = write(&r.sink, "e v=1 1\n");
        wait_queued(&r.sink, 4);
        r.release.send(()).expect("writer waits");
        for t in [a, b, c, d, e] {
            t.await.expect("durable");
        }
    });
    assert_eq!(
        r.bodies(),
        vec![
            "a v=1 1\n".to_string(),
            // b (2 points) + c (1): 3 points, the batch is full; c had no newline: one is added.
            "b v=1 1\nb v=2 2\nc v=1 1\n".to_string(),
            "d v=1 1\ne v=1 1\n".to_string(),
        ]
    );
    assert_eq!(r.metrics.points_written.load(Ordering::Relaxed), 6);
    r.sink.shutdown();
}

#[test]
fn a_failing_write_stays_pending_and_lands_after_retries() {
    let retry = || Attempt::Retry {
        error: "HTTP 500: boom".into(),
        retry_after: None,
        loud: false,
    };
    let r = rig(vec![retry(), retry(), retry()], 5000, false);
    smol::block_on(r.sink.write("m v=1 1\n".into(), 1)).expect("durable in the end");
    assert_eq!(r.bodies(), vec!["m v=1 1\n".to_string(); 4]);
    assert_eq!(r.metrics.sink_errors.load(Ordering::Relaxed), 3);
    assert_eq!(r.metrics.sink_retries.load(Ordering::Relaxed), 3);
    assert_eq!(r.metrics.points_written.load(Ordering::Relaxed), 1);
    r.sink.shutdown();
}

#[test]
fn poison_completes_ok_and_counts_the_dropped_points() {
    let r = rig(
        vec![Attempt::Poison {
            dropped: 1,
            message: "partial write: dropped=1".into(),
        }],
        5000,
        false,
    );
    smol::block_on(r.sink.write("m v=1 1\nm v=\"x\" 2\n".into(), 2)).expect("poison completes Ok");
    assert_eq!(r.metrics.points_dropped_by_sink.load(Ordering::Relaxed), 1);
    assert_eq!(r.metrics.points_written.load(Ordering::Relaxed), 1);
    assert_eq!(r.metrics.sink_errors.load(Ordering::Relaxed), 0);
    r.sink.shutdown();
}

#[test]
fn too_large_is_written_in_halves() {
    // 4 lines: too large; 2 + 2: the first half too large again -> 1 + 1; the rest fit.
    let r = rig(vec![Attempt::TooLarge, Attempt::TooLarge], 5000, false);
    smol::block_on(r.sink.write("a 1\nb 2\nc 3\nd 4\n".into(), 4)).expect("durable");
    assert_eq!(
        r.bodies(),
        vec![
            "a 1\nb 2\nc 3\nd 4\n",
            "a 1\nb 2\n",
            "a 1\n",
            "b 2\n",
            "c 3\nd 4\n"
        ]
    );
    assert_eq!(r.metrics.points_written.load(Ordering::Relaxed), 4);
    assert_eq!(r.metrics.points_dropped_by_sink.load(Ordering::Relaxed), 0);
    r.sink.shutdown();
}

#[test]
fn a_single_line_too_large_is_dropped_not_retried_forever() {
    let r = rig(vec![Attempt::TooLarge], 5000, false);
    smol::block_on(r.sink.write("huge 1\n".into(), 1)).expect("completes");
    assert_eq!(r.bodies().len(), 1);
    assert_eq!(r.metrics.points_dropped_by_sink.load(Ordering::Relaxed), 1);
    r.sink.shutdown();
}

#[test]
fn shutdown_while_failing_answers_err_and_refuses_new_writes() {
    let retry = || Attempt::Retry {
        error: "connection refused".into(),
        retry_after: Some(Duration::from_secs(3600)),
        loud: false,
    };
    let r = rig(vec![retry(), retry(), retry()], 1, false);
    smol::block_on(async {
        let a = write(&r.sink, "a 1\n");
        let b = write(&r.sink, "b 2\n");
        // Wait until `a` has failed once: the writer is now sleeping for an hour.
        for _ in 0..2000 {
            if r.metrics.sink_errors.load(Ordering::Relaxed) > 0 && r.sink.tx.len() == 1 {
                break;
            }
            smol::Timer::after(Duration::from_millis(5)).await;
        }
        assert_eq!(r.metrics.sink_errors.load(Ordering::Relaxed), 1);
        // shutdown() joins the writer: off this executor thread so `a` and `b` can finish.
        let s = r.sink.clone();
        smol::unblock(move || s.shutdown()).await;
        assert!(matches!(a.await, Err(SinkError::ShutDown)));
        assert!(matches!(b.await, Err(SinkError::ShutDown)));
        assert!(matches!(
            r.sink.write("c 3\n".into(), 1).await,
            Err(SinkError::ShutDown)
        ));
    });
    // `b` was never attempted: after the interrupted write the queue is refused at once.
    assert_eq!(r.bodies(), vec!["a 1\n".to_string()]);
    assert_eq!(r.metrics.points_written.load(Ordering::Relaxed), 0);
}

#[test]
fn shutdown_drains_queued_writes_when_healthy() {
    let r = rig(vec![], 1, true);
    smol::block_on(async {
        let a = write(&r.sink, "a 1\n");
        r.entered.recv().expect("writer took a");
        let b = write(&r.sink, "b 2\n");
        wait_queued(&r.sink, 1);
        let s = r.sink.clone();
        let stopper = smol::unblock(move || s.shutdown());
        r.release.send(()).expect("writer waits");
        stopper.await;
        a.await.expect("a durable");
        b.await
            .expect("b durable, drained before the thread stopped");
    });
    assert_eq!(r.bodies(), vec!["a 1\n".to_string(), "b 2\n".to_string()]);
}

#[test]
fn with_a_linger_the_writer_waits_for_a_full_batch() {
    // Telegraf-like: a long linger; the batch is written when full, not when the queue is empty.
    let r = rig_with(
        vec![],
        3,
        false,
        Duration::from_secs(60),
        Duration::from_secs(60),
    );
    smol::block_on(async {
        let a = write(&r.sink, "a 1\n");
        let b = write(&r.sink, "b 2\n");
        let c = write(&r.sink, "c 3\n");
        for t in [a, b, c] {
            t.await.expect("durable");
        }
    });
    let bodies = r.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let mut lines: Vec<&str> = bodies[0].lines().collect();
    lines.sort();
    assert_eq!(lines, vec!["a 1", "b 2", "c 3"]);
    r.sink.shutdown();
}

#[test]
fn with_a_linger_a_lone_write_goes_out_at_the_flush_deadline() {
    let r = rig_with(
        vec![],
        5000,
        false,
        Duration::from_millis(200),
        Duration::from_millis(200),
    );
    smol::block_on(r.sink.write("a 1\n".into(), 1)).expect("durable without more writes");
    assert_eq!(r.bodies(), vec!["a 1\n".to_string()]);
    r.sink.shutdown();
}
