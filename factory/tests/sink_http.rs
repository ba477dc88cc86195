//! The InfluxDB sink against a scripted fake HTTP server: what each answer makes it do (401/403,
//! 404 with and without CREATE DATABASE, 413, 400, 429, 500, 503 with Retry-After, a timeout,
//! connection refused), and the exact requests it sends for the v1 and v2 APIs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use autofact_tests::poll::{free_port, wait_for};
use autofactory::metrics::Metrics;
use autofactory::sink::{Sink, SinkConfig};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: String,
    at: Instant,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One scripted answer.
#[derive(Debug, Clone)]
enum Reply {
    Status(u16, &'static str, &'static str),
    /// Read the request and never answer (until the client gives up).
    Hang,
}

/// Answers requests in order from the script, then 204 forever.
struct FakeInflux {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeInflux {
    fn start(script: Vec<Reply>) -> FakeInflux {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        FakeInflux::on(listener, script)
    }

    fn on(listener: TcpListener, script: Vec<Reply>) -> FakeInflux {
        let port = listener.local_addr().expect("local addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut script = script.into_iter();
                let mut hung = Vec::new();
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let Some(req) = read_request(&conn) else {
                        continue;
                    };
                    requests.lock().unwrap_or_else(|e| e.into_inner()).push(req);
                    match script.next().unwrap_or(Reply::Status(204, "", "")) {
                        Reply::Hang => hung.push(conn),
                        Reply::Status(code, headers, body) => answer(conn, code, headers, body),
                    }
                }
            })
        };
        FakeInflux {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for FakeInflux {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_request(conn: &TcpStream) -> Option<Request> {
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    })
}

fn answer(mut conn: TcpStream, code: u16, headers: &str, body: &str) {
    let _ = write!(
        conn,
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn sink_for(url: &str, extra: impl FnOnce(&mut SinkConfig)) -> (Sink, Arc<Metrics>) {
    let mut cfg = SinkConfig {
        kind: "influxdb".into(),
        url: url.into(),
        timeout_ms: 1000,
        ..SinkConfig::default()
    };
    extra(&mut cfg);
    let metrics = Arc::new(Metrics::default());
    let sink = Sink::start(&cfg, &std::env::temp_dir(), metrics.clone()).expect("sink starts");
    (sink, metrics)
}

fn count(m: &std::sync::atomic::AtomicU64) -> u64 {
    m.load(Ordering::Relaxed)
}

const LINES: &str = "m,host=a v=1i 1\nm,host=a v=2i 2\nm,host=a v=3i 3\nm,host=a v=4i 4\n";

#[test]
fn v1_request_carries_db_precision_and_basic_auth() {
    let server = FakeInflux::start(vec![]);
    let (sink, metrics) = sink_for(&server.url(), |c| {
        c.database = "my db&x".into();
        c.username = "user".into();
        c.password = "p@ss w0rd".into();
    });
    smol::block_on(sink.write(LINES.into(), 4)).expect("durable");
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
    let (sink, _) = sink_for(&server.url(), |c| {
        c.api = "v2".into();
        c.org = "ac me".into();
        c.bucket = "facts/raw".into();
        c.token = "s3cr3t==".into();
    });
    smol::block_on(sink.write(LINES.into(), 4)).expect("durable");
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
        Reply::Status(401, "", r#"{"error":"authorization failed"}"#),
        Reply::Status(403, "", r#"{"error":"forbidden"}"#),
    ]);
    let (sink, metrics) = sink_for(&server.url(), |_| {});
    smol::block_on(sink.write(LINES.into(), 4)).expect("durable once accepted");
    sink.shutdown();
    let reqs = server.requests();
    assert_eq!(reqs.len(), 3);
    assert!(reqs
        .iter()
        .all(|r| r.body == LINES && r.target.starts_with("/write?")));
    assert_eq!(count(&metrics.sink_errors), 2);
    assert_eq!(count(&metrics.sink_retries), 2);
    assert_eq!(count(&metrics.points_dropped_by_sink), 0);
    assert_eq!(count(&metrics.points_written), 4);
}

#[test]
fn database_not_found_is_created_when_allowed() {
    let server = FakeInflux::start(vec![
        Reply::Status(404, "", r#"{"error":"database not found: \"autofacts\""}"#),
        Reply::Status(200, "", r#"{"results":[{"statement_id":0}]}"#),
    ]);
    let (sink, metrics) = sink_for(&server.url(), |c| c.create_database = true);
    smol::block_on(sink.write(LINES.into(), 4)).expect("durable");
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
        Reply::Status(404, "", r#"{"error":"database not found: \"autofacts\""}"#),
        Reply::Status(404, "", r#"{"error":"database not found: \"autofacts\""}"#),
    ]);
    let (sink, metrics) = sink_for(&server.url(), |_| {});
    smol::block_on(sink.write(LINES.into(), 4)).expect("durable once the database exists");
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
    let server = FakeInflux::start(vec![Reply::Status(
        413,
        "",
        r#"{"error":"Request Entity Too Large"}"#,
    )]);
    let (sink, metrics) = sink_for(&server.url(), |_| {});
    smol::block_on(sink.write(LINES.into(), 4)).expect("durable");
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
fn bad_request_drops_the_refused_points_and_completes() {
    let server = FakeInflux::start(vec![Reply::Status(
        400,
        "",
        r#"{"error":"partial write: field type conflict: input field \"v\" on measurement \"m\" is type float, already exists as type integer dropped=1"}"#,
    )]);
    let (sink, metrics) = sink_for(&server.url(), |_| {});
    smol::block_on(async {
        sink.write(LINES.into(), 4)
            .await
            .expect("poison completes Ok");
        sink.write("m v=5i 5\n".into(), 1)
            .await
            .expect("next write goes through");
    });
    sink.shutdown();
    assert_eq!(server.requests().len(), 2, "the 400 batch is not retried");
    assert_eq!(count(&metrics.points_dropped_by_sink), 1);
    assert_eq!(count(&metrics.points_written), 4);
    assert_eq!(count(&metrics.sink_errors), 0);
}

#[test]
fn server_errors_back_off_and_retry_after_is_honoured() {
    let server = FakeInflux::start(vec![
        Reply::Status(
            500,
            "",
            r#"{"error":"engine: cache max memory size exceeded"}"#,
        ),
        Reply::Status(429, "", r#"{"error":"slow down"}"#),
        Reply::Status(503, "Retry-After: 2\r\n", r#"{"error":"unavailable"}"#),
    ]);
    let (sink, metrics) = sink_for(&server.url(), |_| {});
    smol::block_on(sink.write(LINES.into(), 4)).expect("durable after the errors");
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

#[test]
fn a_request_that_times_out_is_retried() {
    let server = FakeInflux::start(vec![Reply::Hang]);
    let (sink, metrics) = sink_for(&server.url(), |c| c.timeout_ms = 1000);
    smol::block_on(sink.write(LINES.into(), 4)).expect("durable on the second try");
    sink.shutdown();
    assert_eq!(server.requests().len(), 2);
    assert_eq!(count(&metrics.sink_errors), 1);
    assert_eq!(count(&metrics.points_written), 4);
}

#[test]
fn connection_refused_keeps_the_write_pending_until_influxdb_is_up() {
    let port = free_port().expect("free port");
    let (sink, metrics) = sink_for(&format!("http://127.0.0.1:{port}"), |_| {});
    let pending = {
        let sink = sink.clone();
        std::thread::spawn(move || smol::block_on(sink.write(LINES.into(), 4)))
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
    let (sink, metrics) = sink_for(&format!("http://127.0.0.1:{port}"), |_| {});
    let pending = {
        let sink = sink.clone();
        std::thread::spawn(move || smol::block_on(sink.write(LINES.into(), 4)))
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
    assert!(smol::block_on(sink.write(LINES.into(), 4)).is_err());
    assert_eq!(count(&metrics.points_written), 0);
}

#[test]
fn two_writers_keep_a_second_request_in_flight_while_one_hangs() {
    // The first request hangs until its timeout; with two writers the second submission is
    // written by the other writer meanwhile. With one writer it would queue behind the hang.
    let server = FakeInflux::start(vec![Reply::Hang]);
    let (sink, metrics) = sink_for(&server.url(), |c| {
        c.timeout_ms = 5000;
        c.writers = 2;
    });
    let done_a = Arc::new(AtomicBool::new(false));
    let a = {
        let (sink, done_a) = (sink.clone(), done_a.clone());
        std::thread::spawn(move || {
            let r = smol::block_on(sink.write(LINES.into(), 4));
            done_a.store(true, Ordering::SeqCst);
            r
        })
    };
    wait_for("the first request", Duration::from_secs(10), || {
        (server.requests().len() == 1).then_some(())
    })
    .expect("first request reached the server");
    smol::block_on(sink.write(LINES.into(), 4)).expect("second write durable");
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
