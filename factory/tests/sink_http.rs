//! The InfluxDB sink against a scripted fake HTTP server: what each answer makes it do (401/403,
//! 404 with and without CREATE DATABASE, 413, 400, 429, 500, 503 with Retry-After, a timeout,
//! connection refused), and the exact requests it sends for the v1 and v2 APIs.

mod sink_common;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sink_common::{FakeInflux, Reply};

use autofact_tests::poll::{free_port, wait_for};
use autofact_tests::tmp::TempDir;
use autofactory::metrics::Metrics;
use autofactory::sink::{Sink, SinkConfig};

/// A sink with its data dir (for dead letters), which lives as long as the returned `TempDir`.
fn sink_for(url: &str, extra: impl FnOnce(&mut SinkConfig)) -> (Sink, Arc<Metrics>, TempDir) {
    let mut cfg = SinkConfig {
        kind: "influxdb".into(),
        url: url.into(),
        timeout_ms: 1000,
        ..SinkConfig::default()
    };
    extra(&mut cfg);
    let metrics = Arc::new(Metrics::default());
    let data = TempDir::new("sink-http").expect("temp dir");
    let sink = Sink::start(&cfg, data.path(), metrics.clone()).expect("sink starts");
    (sink, metrics, data)
}

fn count(m: &std::sync::atomic::AtomicU64) -> u64 {
    m.load(Ordering::Relaxed)
}

const LINES: &str = "m,host=a v=1i 1\nm,host=a v=2i 2\nm,host=a v=3i 3\nm,host=a v=4i 4\n";

#[test]
fn v1_request_carries_db_precision_and_basic_auth() {
    let server = FakeInflux::start(vec![]);
    let (sink, metrics, _data) = sink_for(&server.url(), |c| {
        c.database = "my db&x".into();
        c.username = "user".into();
        c.password = "p@ss w0rd".into();
    });
    smol::block_on(sink.write("c1", LINES.into(), 4)).expect("durable");
    sink.shutdown();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].target, "/write?db=my%20db%26x&precision=ns");
    assert_eq!(
        reqs[0].header("authorization"),
        Some("Basic dXNlcjpwQHNzIHcwcmQ=")
    );
    assert_eq!(reqs[0].body, LINES);
    assert_eq!(count(&metrics.points_written), 4);
}

#[test]
fn v2_request_carries_org_bucket_and_token() {
    let server = FakeInflux::start(vec![]);
    let (sink, _, _data) = sink_for(&server.url(), |c| {
        c.api = "v2".into();
        c.org = "ac me".into();
        c.bucket = "facts/raw".into();
        c.token = "s3cr3t==".into();
    });
    smol::block_on(sink.write("c1", LINES.into(), 4)).expect("durable");
    sink.shutdown();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].target,
        "/api/v2/write?org=ac%20me&bucket=facts%2Fraw&precision=ns"
    );
    assert_eq!(reqs[0].header("authorization"), Some("Token s3cr3t=="));
    assert_eq!(reqs[0].body, LINES);
}

#[test]
fn unauthorized_and_forbidden_are_retried_never_dropped() {
    let server = FakeInflux::start(vec![
        Reply::new(401, "", r#"{"error":"authorization failed"}"#),
        Reply::new(403, "", r#"{"error":"forbidden"}"#),
    ]);
    let (sink, metrics, _data) = sink_for(&server.url(), |_| {});
    smol::block_on(sink.write("c1", LINES.into(), 4)).expect("durable once accepted");
    sink.shutdown();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    assert!(reqs
        .iter()
        .all(|r| r.body == LINES && r.target.starts_with("/write?")));
    assert_eq!(count(&metrics.sink_errors), 2);
    assert_eq!(count(&metrics.sink_retries), 2);
    assert_eq!(count(&metrics.points_dead_lettered), 0);
    assert_eq!(count(&metrics.points_written), 4);
}

#[test]
fn database_not_found_is_created_when_allowed() {
    let server = FakeInflux::start(vec![
        Reply::new(404, "", r#"{"error":"database not found: \"autofacts\""}"#),
        Reply::new(200, "", r#"{"results":[{"statement_id":0}]}"#),
    ]);
    let (sink, metrics, _data) = sink_for(&server.url(), |c| c.create_database = true);
    smol::block_on(sink.write("c1", LINES.into(), 4)).expect("durable");
    sink.shutdown();
    let reqs = server.requests();
    let seen: Vec<_> = reqs
        .iter()
        .map(|r| (r.method.as_str(), r.target.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("POST", "/write?db=autofacts&precision=ns"),
            ("POST", "/query"),
            ("POST", "/write?db=autofacts&precision=ns"),
        ]
    );
    assert_eq!(reqs[1].body, "q=CREATE%20DATABASE%20%22autofacts%22");
    assert_eq!(
        reqs[1].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(reqs[2].body, LINES);
    assert_eq!(count(&metrics.points_written), 4);
}

#[test]
fn database_not_found_without_create_is_retried() {
    let server = FakeInflux::start(vec![
        Reply::new(404, "", r#"{"error":"database not found: \"autofacts\""}"#),
        Reply::new(404, "", r#"{"error":"database not found: \"autofacts\""}"#),
    ]);
    let (sink, metrics, _data) = sink_for(&server.url(), |_| {});
    smol::block_on(sink.write("c1", LINES.into(), 4)).expect("durable once the database exists");
    sink.shutdown();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    assert!(
        reqs.iter().all(|r| r.target.starts_with("/write?")),
        "{reqs:?}"
    );
    assert_eq!(count(&metrics.sink_errors), 2);
}

#[test]
fn too_large_is_split_in_halves() {
    let server = FakeInflux::start(vec![Reply::new(
        413,
        "",
        r#"{"error":"Request Entity Too Large"}"#,
    )]);
    let (sink, metrics, _data) = sink_for(&server.url(), |_| {});
    smol::block_on(sink.write("c1", LINES.into(), 4)).expect("durable");
    sink.shutdown();
    let bodies: Vec<_> = server.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(
        bodies,
        vec![
            LINES.to_string(),
            "m,host=a v=1i 1\nm,host=a v=2i 2\n".to_string(),
            "m,host=a v=3i 3\nm,host=a v=4i 4\n".to_string(),
        ]
    );
    assert_eq!(count(&metrics.points_written), 4);
    assert_eq!(count(&metrics.sink_errors), 0);
}

#[test]
fn a_partial_write_is_bisected_until_the_refused_line_is_dead_lettered() {
    // InfluxDB 1.x names no line for a type conflict: the halves find it (line 4 here).
    let partial = || {
        Reply::new(
            400,
            "",
            r#"{"error":"partial write: field type conflict: input field \"v\" on measurement \"m\" is type float, already exists as type integer dropped=1"}"#,
        )
    };
    let server = FakeInflux::start(vec![
        partial(),
        Reply::new(204, "", ""),
        partial(),
        Reply::new(204, "", ""),
        partial(),
    ]);
    let (sink, metrics, data) = sink_for(&server.url(), |_| {});
    smol::block_on(async {
        sink.write("c1", LINES.into(), 4)
            .await
            .expect("completes once written or dead-lettered");
        sink.write("c1", "m v=5i 5\n".into(), 1)
            .await
            .expect("next write goes through");
    });
    sink.shutdown();
    let bodies: Vec<String> = server.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(
        bodies,
        vec![
            LINES,
            "m,host=a v=1i 1\nm,host=a v=2i 2\n",
            "m,host=a v=3i 3\nm,host=a v=4i 4\n",
            "m,host=a v=3i 3\n",
            "m,host=a v=4i 4\n",
            "m v=5i 5\n",
        ]
    );
    let dead = sink_common::dead_letters(data.path());
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, "c1");
    assert_eq!(dead[0].2, "m,host=a v=4i 4");
    assert!(dead[0].1.contains("field type conflict"), "{dead:?}");
    assert_eq!(count(&metrics.points_dead_lettered), 1);
    assert_eq!(count(&metrics.points_written), 4);
    assert_eq!(count(&metrics.sink_errors), 0);
}

#[test]
fn server_errors_back_off_and_retry_after_is_honoured() {
    let server = FakeInflux::start(vec![
        Reply::new(
            500,
            "",
            r#"{"error":"engine: cache max memory size exceeded"}"#,
        ),
        Reply::new(429, "", r#"{"error":"slow down"}"#),
        Reply::new(503, "Retry-After: 2\r\n", r#"{"error":"unavailable"}"#),
    ]);
    let (sink, metrics, _data) = sink_for(&server.url(), |_| {});
    smol::block_on(sink.write("c1", LINES.into(), 4)).expect("durable after the errors");
    sink.shutdown();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 4);
    assert!(reqs.iter().all(|r| r.body == LINES));
    assert_eq!(count(&metrics.sink_errors), 3);
    assert_eq!(count(&metrics.sink_retries), 3);
    // A lower bound, not a speed check: the retry must not come before the server allowed it.
    let gap = reqs[3].at.duration_since(reqs[2].at);
    assert!(
        gap >= Duration::from_secs(2),
        "retried after {gap:?}, Retry-After was 2 s"
    );
}

/// `Retry-After` as an IMF-fixdate (RFC 9110), for unix second `secs`.
fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    // Civil date by counting, independent of the code under test.
    let (mut y, mut d) = (1970u64, days);
    loop {
        let len = if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
            366
        } else {
            365
        };
        if d < len {
            break;
        }
        d -= len;
        y += 1;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let lens = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut m = 0;
    while d >= lens[m] {
        d -= lens[m];
        m += 1;
    }
    let rem = secs % 86_400;
    format!(
        "{}, {:02} {} {y} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        d + 1,
        MONTHS[m],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[test]
fn retry_after_as_an_http_date_is_honoured() {
    assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT"); // RFC 9110's example
                                                                         // The date is computed when the request arrives: 4 s after that whole second.
    let server = FakeInflux::with(
        TcpListener::bind("127.0.0.1:0").expect("bind"),
        {
            let mut first = true;
            Box::new(move |_| {
                if !std::mem::take(&mut first) {
                    return Reply::new(204, "", "");
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock after 1970")
                    .as_secs();
                Reply::new(
                    503,
                    &format!("Retry-After: {}\r\n", http_date(now + 4)),
                    r#"{"error":"unavailable"}"#,
                )
            })
        },
        None,
    );
    let (sink, metrics, _data) = sink_for(&server.url(), |_| {});
    smol::block_on(sink.write("c1", LINES.into(), 4)).expect("durable after the 503");
    sink.shutdown();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(count(&metrics.points_written), 4);
    // A lower bound, not a speed check: at least 3 s remained until the date when it was sent.
    let gap = reqs[1].at.duration_since(reqs[0].at);
    assert!(
        gap >= Duration::from_secs(3),
        "retried after {gap:?}, Retry-After was a date 3-4 s ahead"
    );
}

#[test]
fn a_request_that_times_out_is_retried() {
    let server = FakeInflux::start(vec![Reply::Hang]);
    let (sink, metrics, _data) = sink_for(&server.url(), |c| c.timeout_ms = 1000);
    smol::block_on(sink.write("c1", LINES.into(), 4)).expect("durable on the second try");
    sink.shutdown();
    assert_eq!(server.requests().len(), 2);
    assert_eq!(count(&metrics.sink_errors), 1);
    assert_eq!(count(&metrics.points_written), 4);
}

#[test]
fn connection_refused_keeps_the_write_pending_until_influxdb_is_up() {
    let port = free_port().expect("free port");
    let (sink, metrics, _data) = sink_for(&format!("http://127.0.0.1:{port}"), |_| {});
    let pending = {
        let sink = sink.clone();
        std::thread::spawn(move || smol::block_on(sink.write("c1", LINES.into(), 4)))
    };
    wait_for("refused attempts", Duration::from_secs(30), || {
        (count(&metrics.sink_errors) >= 3).then_some(())
    })
    .expect("the sink retries");
    assert!(
        !pending.is_finished(),
        "the write completed with nothing listening"
    );
    assert_eq!(count(&metrics.points_written), 0);
    let server = FakeInflux::on(
        TcpListener::bind(("127.0.0.1", port)).expect("bind the same port"),
        vec![],
    );
    pending
        .join()
        .expect("writer")
        .expect("durable once the server is up");
    sink.shutdown();
    assert_eq!(server.requests().len(), 1);
    assert_eq!(count(&metrics.points_written), 4);
}

#[test]
fn shutdown_while_influxdb_is_down_fails_pending_writes_instead_of_hanging() {
    let port = free_port().expect("free port");
    let (sink, metrics, _data) = sink_for(&format!("http://127.0.0.1:{port}"), |_| {});
    let pending = {
        let sink = sink.clone();
        std::thread::spawn(move || smol::block_on(sink.write("c1", LINES.into(), 4)))
    };
    wait_for("a refused attempt", Duration::from_secs(30), || {
        (count(&metrics.sink_errors) >= 1).then_some(())
    })
    .expect("the sink retries");
    sink.shutdown();
    let result = pending.join().expect("writer");
    assert!(
        result.is_err(),
        "a write that never landed must not report success"
    );
    assert!(smol::block_on(sink.write("c1", LINES.into(), 4)).is_err());
    assert_eq!(count(&metrics.points_written), 0);
}

#[test]
fn two_writers_keep_a_second_request_in_flight_while_one_hangs() {
    // The first request hangs until its timeout; with two writers the second submission is
    // written by the other writer meanwhile. With one writer it would queue behind the hang.
    let server = FakeInflux::start(vec![Reply::Hang]);
    let (sink, metrics, _data) = sink_for(&server.url(), |c| {
        c.timeout_ms = 5000;
        c.writers = 2;
    });
    let done_a = Arc::new(AtomicBool::new(false));
    let a = {
        let (sink, done_a) = (sink.clone(), done_a.clone());
        std::thread::spawn(move || {
            let r = smol::block_on(sink.write("c1", LINES.into(), 4));
            done_a.store(true, Ordering::SeqCst);
            r
        })
    };
    wait_for("the first request", Duration::from_secs(10), || {
        (server.requests().len() == 1).then_some(())
    })
    .expect("first request reached the server");
    smol::block_on(sink.write("c1", LINES.into(), 4)).expect("second write durable");
    assert!(
        !done_a.load(Ordering::SeqCst),
        "the second write had to wait for the hung first one"
    );
    a.join()
        .expect("writer thread")
        .expect("first write durable after its retry");
    sink.shutdown();
    assert_eq!(count(&metrics.points_written), 8);
    assert_eq!(count(&metrics.sink_errors), 1);
}

#[test]
fn writers_out_of_range_is_a_config_error() {
    let cfg = SinkConfig {
        kind: "influxdb".into(),
        writers: 0,
        ..SinkConfig::default()
    };
    let err = Sink::start(&cfg, &std::env::temp_dir(), Arc::new(Metrics::default()))
        .expect_err("0 writers refused");
    assert!(err.to_string().contains("sink.writers"), "{err}");
}
