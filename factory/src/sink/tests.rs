//! Unit tests: config defaults and validation, the pure helpers, and the writer's batching and
//! retry rules against a scripted in-memory backend.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::backoff::{self, Stop};
use super::config::{Api, Batching, SinkConfig, Target};
use super::dead_letter::{self, DeadLetters};
use super::file::{check_room, civil_from_days, reserve, utc_day, RESERVE_CAP};
use super::influx::{basic_auth, error_text, named_lines, parse_retry_after, url_encode};
use super::writer::{one_line, Attempt, Backend, UNEXPECTED_TRIES};
use super::{Sink, SinkError};
use crate::metrics::Metrics;

#[test]
fn empty_config_means_file_sink_under_data_dir() {
    let cfg: SinkConfig = serde_json::from_str("{}").expect("{} is a valid sink config");
    assert_eq!(cfg, SinkConfig::default());
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
    let cfg = serde_json::from_str::<SinkConfig>(
        r#"{"kind":"influxdb","url":"http://10.0.0.5:8086/","username":"u","password":"p",
            "create_database":true,"timeout_ms":2500}"#,
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
    let cfg = serde_json::from_str::<SinkConfig>(
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
        let cfg = serde_json::from_str::<SinkConfig>(json).expect("parses");
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
    assert_eq!(url_encode("db-1.x_y"), "db-1.x_y");
    // `echo -n 'user:p@ss w0rd' | base64`; padding kept.
    assert_eq!(
        basic_auth("user", "p@ss w0rd"),
        "Basic dXNlcjpwQHNzIHcwcmQ="
    );
    assert_eq!(basic_auth("u", ""), "Basic dTo=");
    // InfluxDB 1.6's own messages: every unparsable line named, matched whole.
    let body = "m v=1i 1\nbad line here\nm v= 3\nm v=4i 4\n";
    assert_eq!(
        named_lines(
            body,
            "partial write: unable to parse 'bad line here': invalid field format\nunable to parse 'm v= 3': missing field value dropped=0"
        ),
        vec![1, 2]
    );
    // 2.x names the first; a line cut short or a type conflict names none.
    assert_eq!(
        named_lines(body, "unable to parse 'm v= 3': missing field value"),
        vec![2]
    );
    assert_eq!(
        named_lines(body, "unable to parse 'bad li"),
        Vec::<usize>::new()
    );
    // A type conflict names the field, measurement and type; with dropped=N matching the lines
    // of that type, those are the ones; otherwise none.
    let body = "m v=1i 1\nm v=2.5 2\nm,t=a v=3 3\nn v=4.5 4\nm w=1,v=\"s\" 5\n";
    let conflict = |kind: &str, n: usize| {
        format!("partial write: field type conflict: input field \"v\" on measurement \"m\" is type {kind}, already exists as type integer dropped={n}")
    };
    assert_eq!(named_lines(body, &conflict("float", 2)), vec![1, 2]);
    assert_eq!(
        named_lines(body, &conflict("float", 3)),
        Vec::<usize>::new()
    );
    assert_eq!(named_lines(body, &conflict("string", 1)), vec![4]);
    assert_eq!(
        named_lines(
            body,
            "partial write: points beyond retention policy dropped=2"
        ),
        Vec::<usize>::new()
    );
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
    let at = |secs: u64| std::time::UNIX_EPOCH + Duration::from_secs(secs);
    let now = at(1_445_412_470); // 2015-10-21T07:27:50Z
    assert_eq!(parse_retry_after(" 3 ", now), Some(Duration::from_secs(3)));
    // RFC 9110's date form: 10 s after `now`; a date in the past means at once.
    assert_eq!(
        parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
        Some(Duration::from_secs(10))
    );
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
        Some(Duration::ZERO)
    );
    assert_eq!(
        parse_retry_after("Thu, 29 Feb 2024 23:59:59 GMT", at(1_709_251_189)),
        Some(Duration::from_secs(10))
    );
    for bad in [
        "",
        "soon",
        "-1",
        "Wed, 21 Oct 2015 07:28:00 CET",
        "Wed, 32 Oct 2015 07:28:00 GMT",
        "Wed, 21 Foo 2015 07:28:00 GMT",
        "Wed, 21 Oct 2015 25:28:00 GMT",
    ] {
        assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
    }
}

#[test]
fn the_day_files_leave_the_reserve_free() {
    const MIB: u64 = 1 << 20;
    // 5 % of a small filesystem, 64 MiB of a large one.
    assert_eq!(reserve(16 * MIB), 16 * MIB / 20);
    assert_eq!(reserve(100 * 1024 * MIB), RESERVE_CAP);
    assert_eq!(reserve(0), 0);
    let total = 16 * MIB;
    let keep = reserve(total);
    assert!(check_room(keep + 100, total, 100).is_ok(), "exactly fits");
    let e = check_room(keep + 99, total, 100).expect_err("one byte into the reserve");
    assert!(e.contains("for the inventory"), "{e}");
    assert!(check_room(0, total, 1).is_err());
    assert!(check_room(10, u64::MAX, u64::MAX).is_err(), "no overflow");
}

#[test]
fn field_kinds_survive_hostile_escaping() {
    use super::influx::named_lines;
    let conflict = |m: &str, f: &str, kind: &str, n: usize| {
        // Go's %q, as InfluxDB quotes the names.
        let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        format!(
            "failure writing points to database: partial write: field type conflict: input field \"{}\" on measurement \"{}\" is type {kind}, already exists as type float dropped={n}",
            q(f),
            q(m)
        )
    };
    let body = concat!(
        "my\\ m\\,x,t=a\\ b v=1i,w=\"a \\\" b, c=1i\" 1\n", // measurement "my m,x"
        "my\\ m\\,x w=\"x\",f\\=\\ k=2u 2\n",               // field "f= k" unsigned
        "my\\ m\\,x b=T,c=false 3\n",
        "my\\ m\\,x v=-1.5e3 4\n",
    );
    assert_eq!(
        named_lines(body, &conflict("my m,x", "v", "integer", 1)),
        vec![0]
    );
    assert_eq!(
        named_lines(body, &conflict("my m,x", "f= k", "unsigned", 1)),
        vec![1]
    );
    assert_eq!(
        named_lines(body, &conflict("my m,x", "c", "boolean", 1)),
        vec![2]
    );
    assert_eq!(
        named_lines(body, &conflict("my m,x", "v", "float", 1)),
        vec![3]
    );
    // "c=1i" inside the quoted string of line 0 is not a field.
    assert_eq!(
        named_lines(body, &conflict("my m,x", "c", "integer", 1)),
        Vec::<usize>::new()
    );
    assert_eq!(
        named_lines(body, &conflict("my m,x", "w", "string", 2)),
        vec![0, 1]
    );
    assert_eq!(
        named_lines(body, &conflict("other", "v", "integer", 1)),
        Vec::<usize>::new()
    );
    assert_eq!(
        named_lines("m\n\\\n=\"\n", &conflict("m", "v", "float", 1)),
        Vec::<usize>::new(),
        "no panic on junk"
    );
}

#[test]
fn logged_reasons_are_one_short_line() {
    assert_eq!(
        one_line("partial write: x dropped=1"),
        "partial write: x dropped=1"
    );
    assert_eq!(
        one_line("unable to parse 'a'\nunable to parse 'b'"),
        "unable to parse 'a'…"
    );
    let long = "é".repeat(400);
    let cut = one_line(&long);
    assert!(
        cut.len() <= 300 + '…'.len_utf8() && cut.ends_with('…'),
        "{cut}"
    );
    assert_eq!(one_line(""), "");
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
    dir: std::path::PathBuf,
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
    let dir = std::env::temp_dir().join(format!(
        "autofactory-sink-unit-{}-{}",
        std::process::id(),
        RIGS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let sink = Sink::spawn(
        1,
        move || backend.take().expect("one writer takes the one backend"),
        batching,
        metrics.clone(),
        Arc::new(DeadLetters::new(dir.clone(), None, "")),
    )
    .expect("writer thread");
    Rig {
        sink,
        dir,
        bodies,
        metrics,
        entered: entered_rx,
        release: release_tx,
    }
}

static RIGS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Rig {
    /// The dead letters as (client, reason, lines).
    fn dead(&self) -> Vec<(String, String, String)> {
        let mut files: Vec<_> = std::fs::read_dir(&self.dir)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .flat_map(|f| {
                let text = std::fs::read_to_string(f).expect("read dead letters");
                dead_letter::parse(&text).expect("a dead-letter file")
            })
            .map(|r| (r.client, r.reason, r.lines))
            .collect()
    }

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
    smol::spawn(async move { sink.write("c1", lines, points).await })
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
    smol::block_on(r.sink.write("c1", "m v=1 1\n".into(), 1)).expect("durable in the end");
    assert_eq!(r.bodies(), vec!["m v=1 1\n".to_string(); 4]);
    assert_eq!(r.metrics.sink_errors.load(Ordering::Relaxed), 3);
    assert_eq!(r.metrics.sink_retries.load(Ordering::Relaxed), 3);
    assert_eq!(r.metrics.points_written.load(Ordering::Relaxed), 1);
    r.sink.shutdown();
}

fn refused(reason: &str, named: Vec<usize>) -> Attempt {
    Attempt::Refused {
        reason: reason.into(),
        named,
    }
}

#[test]
fn named_refused_lines_are_dead_lettered_and_the_rest_sent_again() {
    let r = rig(
        vec![refused("HTTP 400: unable to parse", vec![1])],
        5000,
        false,
    );
    smol::block_on(r.sink.write("c1", "m v=1 1\nm v= 2\nm v=3 3\n".into(), 3))
        .expect("completes once written or dead-lettered");
    assert_eq!(
        r.bodies(),
        vec!["m v=1 1\nm v= 2\nm v=3 3\n", "m v=1 1\nm v=3 3\n"]
    );
    assert_eq!(
        r.dead(),
        vec![(
            "c1".into(),
            "HTTP 400: unable to parse".into(),
            "m v= 2\n".into()
        )]
    );
    assert_eq!(r.metrics.points_dead_lettered.load(Ordering::Relaxed), 1);
    assert_eq!(r.metrics.points_written.load(Ordering::Relaxed), 2);
    assert_eq!(r.metrics.sink_errors.load(Ordering::Relaxed), 0);
    r.sink.shutdown();
}

#[test]
fn unnamed_refusals_are_bisected_down_to_the_refused_lines() {
    // 4 lines, line "c" refused: whole -> (a b: ok) (c d: refused) -> c refused, d ok.
    let r = rig(
        vec![
            refused("HTTP 422: partial write dropped=1", vec![]),
            Attempt::Durable,
            refused("HTTP 422: partial write dropped=1", vec![]),
            refused("HTTP 422: partial write dropped=1", vec![]),
        ],
        5000,
        false,
    );
    smol::block_on(r.sink.write("c1", "a 1\nb 2\nc 3\nd 4\n".into(), 4)).expect("completes");
    assert_eq!(
        r.bodies(),
        vec![
            "a 1\nb 2\nc 3\nd 4\n",
            "a 1\nb 2\n",
            "c 3\nd 4\n",
            "c 3\n",
            "d 4\n"
        ]
    );
    let dead = r.dead();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].2, "c 3\n");
    assert_eq!(r.metrics.points_written.load(Ordering::Relaxed), 3);
    r.sink.shutdown();
}

#[test]
fn an_unknown_answer_is_tried_a_few_times_then_its_lines_are_refused() {
    let unexpected = || Attempt::Unexpected {
        error: "HTTP 409: no".into(),
    };
    let r = rig(vec![unexpected(); 10], 5000, false);
    smol::block_on(r.sink.write("c1", "a 1\nb 2\n".into(), 2)).expect("completes");
    assert_eq!(
        r.bodies().len(),
        UNEXPECTED_TRIES as usize,
        "not bisected either"
    );
    let dead = r.dead();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].2, "a 1\nb 2\n");
    assert!(dead[0].1.starts_with("HTTP 409: no"), "{dead:?}");
    r.sink.shutdown();
}

#[test]
fn a_refused_line_is_acknowledged_only_once_its_dead_letter_is_durable() {
    let r = rig(
        vec![refused("HTTP 400: unable to parse", vec![0])],
        5000,
        false,
    );
    // The dead-letter directory cannot be created: a file stands in its way.
    std::fs::write(&r.dir, "in the way").expect("write blocker");
    let pending = {
        let sink = r.sink.clone();
        std::thread::spawn(move || smol::block_on(sink.write("c1", "m v= 1\n".into(), 1)))
    };
    for _ in 0..3000 {
        if r.metrics.sink_errors.load(Ordering::Relaxed) >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        r.metrics.sink_errors.load(Ordering::Relaxed) >= 2,
        "retried"
    );
    assert!(
        !pending.is_finished(),
        "acknowledged before the dead letter was durable"
    );
    assert_eq!(r.metrics.points_dead_lettered.load(Ordering::Relaxed), 0);
    std::fs::remove_file(&r.dir).expect("remove blocker");
    pending
        .join()
        .expect("writer thread")
        .expect("completes once the dead letter is written");
    assert_eq!(r.dead()[0].2, "m v= 1\n");
    assert_eq!(r.metrics.dead_lettered_of("c1"), 1);
    r.sink.shutdown();
}

#[test]
fn too_large_is_written_in_halves() {
    // 4 lines: too large; 2 + 2: the first half too large again -> 1 + 1; the rest fit.
    let r = rig(vec![Attempt::TooLarge, Attempt::TooLarge], 5000, false);
    smol::block_on(r.sink.write("c1", "a 1\nb 2\nc 3\nd 4\n".into(), 4)).expect("durable");
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
    assert_eq!(r.metrics.points_dead_lettered.load(Ordering::Relaxed), 0);
    r.sink.shutdown();
}

#[test]
fn a_single_line_too_large_is_dead_lettered_not_retried_forever() {
    let r = rig(vec![Attempt::TooLarge], 5000, false);
    smol::block_on(r.sink.write("c1", "huge 1\n".into(), 1)).expect("completes");
    assert_eq!(r.bodies().len(), 1);
    assert_eq!(r.metrics.points_dead_lettered.load(Ordering::Relaxed), 1);
    assert_eq!(r.dead()[0].2, "huge 1\n");
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
            r.sink.write("c1", "c 3\n".into(), 1).await,
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
    smol::block_on(r.sink.write("c1", "a 1\n".into(), 1)).expect("durable without more writes");
    assert_eq!(r.bodies(), vec!["a 1\n".to_string()]);
    r.sink.shutdown();
}

#[test]
fn lines_the_factory_refuses_go_to_dead_letters_on_the_writer_never_to_the_store() {
    let r = rig(vec![], 5000, false);
    let ((a, b), c) = smol::block_on(async {
        // Submitted together: the refused one must not join the others' body.
        let a = r.sink.write("c1", "a 1\n".into(), 1);
        let b = r.sink.keep_refused(
            "c2",
            "timestamp outside the window",
            "old 1\nold 2\n".into(),
        );
        let c = r.sink.write("c3", "c 1\n".into(), 1);
        smol::future::zip(smol::future::zip(a, b), c).await
    });
    a.expect("a durable");
    b.expect("kept");
    c.expect("c durable");
    let sent = r.bodies().concat();
    assert!(
        !sent.contains("old"),
        "refused lines reached the store: {sent:?}"
    );
    assert_eq!(
        r.dead(),
        vec![(
            "c2".to_string(),
            "timestamp outside the window".to_string(),
            "old 1\nold 2\n".to_string()
        )]
    );
    assert_eq!(r.metrics.dead_lettered_of("c2"), 2);
    r.sink.shutdown();
    // After shutdown the writer no longer keeps them: the batch stays on the agent.
    let late = smol::block_on(r.sink.keep_refused("c2", "x", "old 3\n".into()));
    assert!(matches!(late, Err(SinkError::ShutDown)), "{late:?}");
}
