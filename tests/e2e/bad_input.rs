//! Bad input while good agents keep working: random bytes, truncated and oversized
//! flatbuffers, text frames, plain HTTP requests, a slowloris, and 2,000 idle connections at
//! once. The factory stays up with bounded memory, logs each rejection once with its reason,
//! and the good agents' series stay without gaps.

use crate::{secs, Site};
use async_tungstenite::tungstenite::Message as WsMessage;
use autofact_fbs::{Batch, Hello, Message, RejectCode, Snapshot, System, PROTOCOL_VERSION};
use autofact_tests::harness::{now_ns, rss_kib, wait_series_until, AgentSpec, FactorySpec};
use autofact_tests::poll::wait_for;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use smol::stream::StreamExt;
use smol::Async;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Idle connections opened at once.
const IDLE: usize = 2000;
/// The factory's handshake timeout in this scenario (short, so the idle ones go quickly).
const HANDSHAKE_MS: u64 = 3000;
/// The factory's largest message in this scenario.
const MAX_MESSAGE: usize = 64 * 1024;

/// Makes room for the idle connections in this process and in the factory (it inherits it).
fn raise_nofile(want: u64) {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
    let new = want.min(hard).max(soft);
    if new > soft {
        if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, new, hard) {
            panic!("setrlimit(RLIMIT_NOFILE, {new}): {e}");
        }
    }
    assert!(
        new >= want,
        "RLIMIT_NOFILE hard limit {hard} is below the {want} this test needs (ulimit -Hn)"
    );
}

/// Deterministic noise (xorshift64*), so a failure can be replayed.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            (seed.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// Waits until the peer closes `s` (read gives EOF or an error); false after `timeout`.
fn closed_by_peer(s: &mut TcpStream, timeout: Duration) -> bool {
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// One raw TCP attack: sends `bytes` and half-closes; returns the local port and whether the
/// factory closed the connection.
fn raw_attack(addr: SocketAddr, bytes: &[u8]) -> (u16, bool) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let port = s.local_addr().map(|a| a.port()).unwrap_or(0);
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let closed = closed_by_peer(&mut s, Duration::from_secs(10));
    (port, closed)
}

/// One websocket attack: upgrades properly, sends `frame` instead of a Hello, and returns the
/// local port and the Reject code the factory answered with (if any came before the close).
fn ws_attack(addr: SocketAddr, frame: WsMessage) -> (u16, Option<RejectCode>) {
    smol::block_on(async {
        let tcp = Async::<TcpStream>::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let port = tcp.get_ref().local_addr().map(|a| a.port()).unwrap_or(0);
        let (mut ws, _) = async_tungstenite::client_async(format!("ws://{addr}/"), tcp)
            .await
            .unwrap_or_else(|e| panic!("websocket upgrade: {e}"));
        let _ = ws.send(frame).await;
        let read = async {
            let mut code = None;
            while let Some(Ok(m)) = ws.next().await {
                if let WsMessage::Binary(b) = m {
                    if let Ok(Message::Reject(r)) = autofact_fbs::decode(&b) {
                        code = Some(r.code);
                    }
                }
            }
            code
        };
        let code = smol::future::or(read, async {
            smol::Timer::after(Duration::from_secs(10)).await;
            None
        })
        .await;
        (port, code)
    })
}

/// The factory's log lines about `port` on loopback.
fn lines_about(log: &str, port: u16) -> Vec<String> {
    let needle = format!("127.0.0.1:{port}:");
    log.lines()
        .filter(|l| l.contains(&needle))
        .map(String::from)
        .collect()
}

/// The value of a Prometheus metric line (labels included, exactly as rendered).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
}

fn rejected(site: &Site, reason: &str) -> u64 {
    let text = site
        .factory
        .metrics()
        .unwrap_or_else(|e| panic!("/metrics: {e}"));
    metric(
        &text,
        &format!("autofactory_rejected_connections_total{{reason=\"{reason}\"}}"),
    )
}

#[test]
fn bad_input_is_rejected_and_logged_while_good_agents_keep_working() {
    raise_nofile(IDLE as u64 + 2048);
    let spec = FactorySpec {
        limits: format!(
            r#""handshake_timeout_ms": {HANDSHAKE_MS}, "max_message_bytes": {MAX_MESSAGE}"#
        ),
        ..FactorySpec::default()
    };
    let Some(mut site) = Site::new("bad-input", &spec) else {
        return;
    };
    let addr = site.factory.addr();
    let good = ["e2e-bad-input-good-1", "e2e-bad-input-good-2"];
    let start = now_ns();
    for h in good {
        site.agent(&AgentSpec::new(h, "eu"));
    }
    for h in good {
        let until = now_ns() + secs(3.0);
        if let Err(e) = wait_series_until(&site.influx, h, until, Duration::from_secs(60)) {
            panic!("{e}\n{}", site.outputs());
        }
    }
    let pid = site.factory.pid().unwrap_or(0);
    let rss_before = rss_kib(pid).unwrap_or(0);

    // -- one of each kind, each from its own connection: (port, reasons accepted in the log)
    let mut expect: Vec<(&str, u16, &[&str])> = Vec::new();
    let slowloris = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect: {e}"));
        let port = s.local_addr().map(|a| a.port()).unwrap_or(0);
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: factory\r\n");
        // One header line every 500 ms, never the blank line that ends the request.
        let began = Instant::now();
        let mut closed = false;
        while began.elapsed() < Duration::from_millis(4 * HANDSHAKE_MS) {
            if s.write_all(b"X-Slow: 1\r\n").is_err()
                || closed_by_peer(&mut s, Duration::from_millis(500))
            {
                closed = true;
                break;
            }
        }
        (port, closed, began.elapsed())
    });
    let (port, closed) = raw_attack(addr, &noise(4096, 0x5eed));
    assert!(closed, "random bytes: the factory kept the connection open");
    // Random bytes end in EOF, not in a request: the upgrade fails.
    expect.push(("random bytes", port, &["ws_handshake"]));
    let (port, closed) = raw_attack(
        addr,
        b"GET /clients HTTP/1.1\r\nHost: factory\r\nAccept: */*\r\n\r\n",
    );
    assert!(closed, "plain GET: the factory kept the connection open");
    expect.push(("plain HTTP GET", port, &["ws_handshake"]));
    let (port, closed) = raw_attack(
        addr,
        b"POST /write HTTP/1.1\r\nHost: factory\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert!(closed, "plain POST: the factory kept the connection open");
    expect.push(("plain HTTP POST", port, &["ws_handshake"]));

    let hello = autofact_fbs::encode(&Message::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        token: autofact_tests::harness::TOKEN.into(),
        hostname: "e2e-bad-input-truncated".into(),
        ..Default::default()
    }));
    let big = Batch {
        seq: 1,
        snapshots: (0..4000)
            .map(|i| Snapshot {
                time_ns: i,
                system: Some(System {
                    load1: 1.0,
                    load5: 1.0,
                    load15: 1.0,
                    n_cpus: 2,
                    uptime: i as u64,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ..Batch::default()
    };
    let oversized = autofact_fbs::encode(&Message::Batch(big));
    assert!(oversized.len() > MAX_MESSAGE, "{} bytes", oversized.len());
    let ws_cases: Vec<(&str, WsMessage, RejectCode, &[&str])> = vec![
        (
            "random binary message",
            WsMessage::Binary(noise(512, 7).into()),
            RejectCode::Malformed,
            &["malformed"],
        ),
        (
            "truncated flatbuffer",
            WsMessage::Binary(hello[..hello.len() / 2].to_vec().into()),
            RejectCode::Malformed,
            &["malformed"],
        ),
        (
            "oversized flatbuffer",
            WsMessage::Binary(oversized.into()),
            RejectCode::TooLarge,
            &["too_large"],
        ),
        (
            "text frame",
            WsMessage::Text("{\"hello\": \"factory\"}".into()),
            RejectCode::Malformed,
            &["text_frame"],
        ),
    ];
    for (what, frame, want, reasons) in ws_cases {
        let (port, code) = ws_attack(addr, frame);
        assert_eq!(code, Some(want), "{what}: the factory's Reject");
        expect.push((what, port, reasons));
    }
    let (port, closed, lasted) = slowloris
        .join()
        .unwrap_or_else(|_| panic!("slowloris thread panicked"));
    assert!(
        closed,
        "slowloris: still connected after {lasted:?} (handshake timeout {HANDSHAKE_MS} ms)"
    );
    expect.push(("slowloris", port, &["handshake_timeout"]));

    // Each rejection is logged exactly once, with its reason.
    let log = wait_for("every rejection logged", Duration::from_secs(10), || {
        let log = site.factory.log();
        expect
            .iter()
            .all(|(_, p, _)| !lines_about(&log, *p).is_empty())
            .then_some(log)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", site.outputs()));
    for (what, port, reasons) in &expect {
        let lines = lines_about(&log, *port);
        assert_eq!(
            lines.len(),
            1,
            "{what}: logged {} times: {lines:?}",
            lines.len()
        );
        assert!(
            reasons
                .iter()
                .any(|r| lines[0].contains(&format!("rejected 127.0.0.1:{port}: {r}"))),
            "{what}: {:?} does not give the reason {reasons:?}",
            lines[0]
        );
        println!("{what}: {}", lines[0]);
    }

    // -- 2,000 idle connections at once: each dropped at the handshake timeout.
    let timeouts_before = rejected(&site, "handshake_timeout");
    // Ports are reused by the flood: its lines are looked for after this point of the log only.
    let log_mark = site.factory.log().len();
    let flood_began = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        match TcpStream::connect(addr) {
            Ok(s) => idle.push(s),
            Err(e) => panic!(
                "idle connection {} of {IDLE}: {e}\n{}",
                idle.len() + 1,
                site.factory.output()
            ),
        }
    }
    let opened_in = flood_began.elapsed();
    let rss_peak = rss_kib(pid).unwrap_or(0);
    let all_rejected = wait_for(
        "the idle connections to time out",
        Duration::from_secs(60),
        || {
            let n = rejected(&site, "handshake_timeout") - timeouts_before;
            (n >= IDLE as u64).then_some(n)
        },
    );
    if let Err(e) = all_rejected {
        panic!("{e}\n{}", site.factory.output());
    }
    let mut still_open = 0;
    for s in &mut idle {
        if !closed_by_peer(s, Duration::from_millis(200)) {
            still_open += 1;
        }
    }
    assert_eq!(still_open, 0, "idle connections the factory did not close");
    let ports: Vec<u16> = idle
        .iter()
        .filter_map(|s| s.local_addr().ok().map(|a| a.port()))
        .collect();
    drop(idle);
    // One more rejection a second later reports the lines the rate limit held back.
    std::thread::sleep(Duration::from_millis(1100));
    let (last, closed) = raw_attack(addr, b"GET / HTTP/1.1\r\n\r\n");
    assert!(
        closed,
        "the factory still closes a plain GET after the flood"
    );
    // Its line comes after the close (the upgrade owns the socket), and the count before it.
    let log = wait_for("the last rejection's line", Duration::from_secs(10), || {
        let log = site.factory.log().get(log_mark..).unwrap_or("").to_string();
        lines_about(&log, last)
            .iter()
            .any(|l| l.contains("ws_handshake"))
            .then_some(log)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", site.factory.log()));
    let mut logged = 0;
    for p in &ports {
        // The last GET may reuse a flood port: only the idle connections' lines count here.
        let lines: Vec<String> = lines_about(&log, *p)
            .into_iter()
            .filter(|l| !l.contains("ws_handshake"))
            .collect();
        assert!(
            lines.len() <= 1,
            "port {p} logged {} times: {lines:?}",
            lines.len()
        );
        if let Some(l) = lines.first() {
            assert!(l.contains("handshake_timeout"), "{l}");
            logged += 1;
        }
    }
    let suppressed: u64 = log
        .lines()
        .filter_map(|l| {
            let (head, _) = l.split_once(" more rejection lines suppressed")?;
            head.rsplit(' ').next()?.parse::<u64>().ok()
        })
        .sum();
    // Every rejection is either a line or counted in a "suppressed" line: none logged twice,
    // none forgotten.
    assert!(
        logged + suppressed >= IDLE as u64,
        "{logged} idle rejections logged + {suppressed} suppressed < {IDLE}"
    );

    // -- the factory is up, its memory bounded, and the good agents lost nothing.
    assert!(
        site.factory.exited().is_none(),
        "the factory died\n{}",
        site.factory.output()
    );
    let open = metric(
        &site.factory.metrics().unwrap_or_default(),
        "autofactory_open_connections",
    );
    let until = now_ns() + secs(3.0);
    for h in good {
        site.assert_nothing_lost(h, start + secs(10.0), until, &[], Duration::from_secs(60));
    }
    let rss_after = rss_kib(pid).unwrap_or(0);
    println!(
        "bad input: factory RSS {rss_before} KiB before, {rss_peak} KiB with {IDLE} idle \
         connections (opened in {opened_in:?}), {rss_after} KiB after; {logged} idle rejections \
         logged, {suppressed} suppressed by the rate limit; {open} connections open after; \
         {:.1} s",
        site.elapsed()
    );
    assert!(rss_before > 0 && rss_after > 0, "no RSS for pid {pid}");
    // Generous: connections are gone, so what stays is allocator slack, not per-connection state.
    assert!(
        rss_after <= rss_before + 64 * 1024,
        "factory RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert!(
        rss_peak <= rss_before + 256 * 1024,
        "factory RSS {rss_peak} KiB with {IDLE} idle connections (before: {rss_before} KiB)"
    );
    assert!(
        open <= good.len() as u64 + 1,
        "{open} connections still open"
    );
}
