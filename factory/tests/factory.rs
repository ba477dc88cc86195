//! End-to-end tests of the factory (issue 6) against a real factory on 127.0.0.1:0, with a test
//! client built on the codec and async-tungstenite, and an in-memory sink.

mod common;

use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::Message as WsMessage;
use autofact_fbs::{Batch, Config, Message, RejectCode, PROTOCOL_VERSION};
use common::*;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::Async;
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn new_then_returning_client() {
    let dir = temp_dir("new-returning");
    let h = Harness::start(&dir, &config_text(""));
    smol::block_on(async {
        let (mut c, w) = Client::enroll(h.addr, "pi-kitchen").await;
        assert!(!w.welcome_back);
        assert_eq!(w.client_id.len(), 32);
        assert!(w.client_id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(w.secret.len(), 64);
        // The defaults, plus the factory's message size limit every client is told (issue 13).
        assert_eq!(
            w.config,
            Config {
                max_message_bytes: 4 * 1024 * 1024,
                ..Config::default()
            }
        );
        let ack = c
            .batch(1, vec![snapshot(1_000, 0), snapshot(2_000, 0)])
            .await;
        assert_eq!(ack.seq, 1);
        assert_eq!(h.sink.count(), 1);
        assert!(
            h.sink.text().contains("host=pi-kitchen"),
            "{}",
            h.sink.text()
        );
        assert_eq!(h.sink.points(), 6);
        drop(c);

        // Only the hash of the secret is stored.
        let rec = h
            .factory
            .inventory()
            .get(&w.client_id)
            .expect("in inventory");
        assert_ne!(rec.secret_hash, w.secret);
        assert_eq!(rec.secret_hash, autofactory::ids::secret_hash(&w.secret));
        assert_eq!(rec.hostname, "pi-kitchen");
        assert_eq!(rec.arch, "aarch64");
        assert_eq!(rec.last_acked_seq, 1);

        let (mut c2, answer) =
            Client::hello(h.addr, back_hello(&w.client_id, &w.secret, "pi-kitchen")).await;
        match answer {
            Message::Welcome(b) => {
                assert!(b.welcome_back);
                assert_eq!(b.client_id, w.client_id);
                assert_eq!(b.secret, "");
            }
            other => panic!("expected welcome back, got {other:?}"),
        }
        assert_eq!(c2.batch(2, vec![snapshot(3_000, 0)]).await.seq, 2);
    });
    assert_eq!(h.factory.inventory().len(), 1);
    h.stop().expect("clean shutdown");
}

#[test]
fn bad_credentials_and_versions_are_rejected_by_name() {
    let dir = temp_dir("credentials");
    let h = Harness::start(&dir, &config_text(""));
    smol::block_on(async {
        let (_c, w) = Client::enroll(h.addr, "known").await;

        let (code, close) = refused(h.addr, new_hello("wrong-token-000000000", "x")).await;
        assert_eq!(code, RejectCode::BadToken);
        assert_eq!(close, Some(CloseCode::Policy));
        still_serves(h.addr).await;

        let unknown = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            refused(h.addr, back_hello(unknown, &w.secret, "x")).await.0,
            RejectCode::UnknownClient
        );
        assert_eq!(
            refused(h.addr, back_hello("not-an-id", &w.secret, "x"))
                .await
                .0,
            RejectCode::UnknownClient
        );
        still_serves(h.addr).await;

        let wrong = "f".repeat(64);
        assert_eq!(
            refused(h.addr, back_hello(&w.client_id, &wrong, "x"))
                .await
                .0,
            RejectCode::BadSecret
        );
        assert_eq!(
            refused(h.addr, back_hello(&w.client_id, "", "x")).await.0,
            RejectCode::BadSecret
        );
        still_serves(h.addr).await;

        let mut old = new_hello(TOKEN, "future");
        old.protocol_version = PROTOCOL_VERSION + 1;
        assert_eq!(refused(h.addr, old).await.0, RejectCode::UnsupportedVersion);
        still_serves(h.addr).await;
    });
    let m = h.get("/metrics");
    assert_eq!(
        metric(
            &m,
            "autofactory_rejected_connections_total{reason=\"bad_token\"}"
        ),
        1
    );
    assert_eq!(
        metric(
            &m,
            "autofactory_rejected_connections_total{reason=\"unknown_client\"}"
        ),
        2
    );
    assert_eq!(
        metric(
            &m,
            "autofactory_rejected_connections_total{reason=\"bad_secret\"}"
        ),
        2
    );
    assert_eq!(
        metric(
            &m,
            "autofactory_rejected_connections_total{reason=\"unsupported_version\"}"
        ),
        1
    );
    // Refused clients are not enrolled: the known one plus four canaries.
    assert_eq!(h.factory.inventory().len(), 5);
    h.stop().expect("clean shutdown");
}

#[test]
fn bad_bytes_are_rejected_and_the_factory_keeps_serving() {
    let dir = temp_dir("bad-bytes");
    let h = Harness::start(
        &dir,
        &config_text(r#""limits": {"max_message_bytes": 65536}"#),
    );
    let mut truncated = 0;
    smol::block_on(async {
        // A text frame instead of Hello.
        let mut c = Client::connect(h.addr).await;
        c.ws.send(WsMessage::Text("hello".into()))
            .await
            .expect("send");
        let (r, close) = c.rejected().await;
        assert_eq!(r.code, RejectCode::Malformed);
        assert!(r.message.contains("text"), "{}", r.message);
        assert_eq!(close, Some(CloseCode::Unsupported));
        still_serves(h.addr).await;

        // An oversized message.
        let mut c = Client::connect(h.addr).await;
        c.send_bytes(vec![7u8; 100_000]).await;
        let (r, close) = c.rejected().await;
        assert_eq!(r.code, RejectCode::TooLarge);
        assert_eq!(close, Some(CloseCode::Size));
        still_serves(h.addr).await;

        // Random bytes.
        let mut noise = vec![0u8; 512];
        autofactory::ids::random_bytes(&mut noise).expect("urandom");
        let mut c = Client::connect(h.addr).await;
        c.send_bytes(noise).await;
        assert_eq!(c.rejected().await.0.code, RejectCode::Malformed);
        still_serves(h.addr).await;

        // A truncated flatbuffer: cuts of a real Hello. (A cut that only drops trailing
        // padding still verifies; those are not truncations of content and are skipped.)
        let full = autofact_fbs::encode(&Message::Hello(new_hello(TOKEN, "cut")));
        let cuts: Vec<usize> = [1, 4, 8, 16, full.len() / 2, full.len() - 8]
            .into_iter()
            .filter(|&cut| autofact_fbs::decode(&full[..cut]).is_err())
            .collect();
        assert!(cuts.len() >= 5, "{cuts:?}");
        truncated = cuts.len() as u64;
        for cut in cuts {
            let mut c = Client::connect(h.addr).await;
            c.send_bytes(full[..cut].to_vec()).await;
            assert_eq!(
                c.rejected().await.0.code,
                RejectCode::Malformed,
                "cut at {cut}"
            );
        }
        still_serves(h.addr).await;

        // Not Hello first: a Batch.
        let mut c = Client::connect(h.addr).await;
        c.send(&Message::Batch(Batch {
            seq: 1,
            snapshots: vec![],
            ..Batch::default()
        }))
        .await;
        let (r, _) = c.rejected().await;
        assert!(r.message.contains("expected Hello"), "{}", r.message);

        // Garbage after Welcome: a text frame mid-session.
        let (mut c, _) = Client::enroll(h.addr, "then-text").await;
        c.ws.send(WsMessage::Text("oops".into()))
            .await
            .expect("send");
        assert_eq!(c.rejected().await.0.code, RejectCode::Malformed);

        // Not a websocket at all.
        let mut raw = Async::<TcpStream>::connect(h.addr).await.expect("tcp");
        raw.write_all(b"\x16\x03\x01 this is not http\r\n\r\n")
            .await
            .expect("write");
        let mut buf = Vec::new();
        within("factory closes a non-websocket", raw.read_to_end(&mut buf))
            .await
            .ok();
        still_serves(h.addr).await;
    });
    let m = h.get("/metrics");
    assert_eq!(
        metric(
            &m,
            "autofactory_rejected_connections_total{reason=\"text_frame\"}"
        ),
        2
    );
    assert_eq!(
        metric(
            &m,
            "autofactory_rejected_connections_total{reason=\"too_large\"}"
        ),
        1
    );
    // random bytes + truncations + a Batch before Hello
    assert_eq!(
        metric(
            &m,
            "autofactory_rejected_connections_total{reason=\"malformed\"}"
        ),
        1 + truncated + 1
    );
    // The non-websocket bytes start like a TLS record (0x16): since issue 17 that is named a
    // TLS client on a plain listener.
    assert_eq!(
        metric(
            &m,
            "autofactory_rejected_connections_total{reason=\"tls_handshake\"}"
        ),
        1
    );
    h.stop().expect("clean shutdown");
}

#[test]
fn a_client_that_never_says_hello_is_dropped() {
    let dir = temp_dir("no-hello");
    let h = Harness::start(
        &dir,
        &config_text(r#""limits": {"handshake_timeout_ms": 200}"#),
    );
    smol::block_on(async {
        // Upgrades, then says nothing.
        let mut c = Client::connect(h.addr).await;
        assert_eq!(c.recv().await.err(), Some(Some(CloseCode::Policy)));
        // Does not even upgrade.
        let mut raw = Async::<TcpStream>::connect(h.addr).await.expect("tcp");
        let mut buf = Vec::new();
        within("factory drops a silent socket", raw.read_to_end(&mut buf))
            .await
            .ok();
        assert!(buf.is_empty());
        still_serves(h.addr).await;
    });
    let m = h.get("/metrics");
    assert_eq!(
        metric(
            &m,
            "autofactory_rejected_connections_total{reason=\"handshake_timeout\"}"
        ),
        2
    );
    h.stop().expect("clean shutdown");
}

#[test]
fn a_resent_seq_is_acked_again_without_writing() {
    let dir = temp_dir("dedup");
    let h = Harness::start(&dir, &config_text(""));
    smol::block_on(async {
        let (mut c, _) = Client::enroll(h.addr, "dup").await;
        assert_eq!(c.batch(1, vec![snapshot(1_000, 0)]).await.seq, 1);
        assert_eq!(c.batch(1, vec![snapshot(1_000, 0)]).await.seq, 1);
        assert_eq!(h.sink.count(), 1);
        assert_eq!(c.batch(2, vec![snapshot(2_000, 0)]).await.seq, 2);
        assert_eq!(h.sink.count(), 2);
        // An older seq after a newer one: acked with the high-water mark, not written.
        assert_eq!(c.batch(1, vec![snapshot(1_000, 0)]).await.seq, 2);
        assert_eq!(h.sink.count(), 2);
    });
    let m = h.get("/metrics");
    assert_eq!(metric(&m, "autofactory_batches_received_total"), 4);
    assert_eq!(metric(&m, "autofactory_batches_deduplicated_total"), 2);
    h.stop().expect("clean shutdown");
}

#[test]
fn same_id_twice_the_newer_wins() {
    let dir = temp_dir("replaced");
    let h = Harness::start(&dir, &config_text(""));
    smol::block_on(async {
        let (mut first, w) = Client::enroll(h.addr, "twin").await;
        let (mut second, answer) =
            Client::hello(h.addr, back_hello(&w.client_id, &w.secret, "twin")).await;
        assert!(
            matches!(answer, Message::Welcome(ref b) if b.welcome_back),
            "{answer:?}"
        );
        let (r, _) = first.rejected().await;
        assert_eq!(r.code, RejectCode::Replaced);
        assert_eq!(second.batch(1, vec![snapshot(1, 0)]).await.seq, 1);
        assert_eq!(h.factory.connected(), vec![w.client_id.clone()]);
    });
    h.stop().expect("clean shutdown");
}

#[test]
fn reload_pushes_changed_config_to_the_clients_it_concerns() {
    let dir = temp_dir("reload");
    let h = Harness::start(
        &dir,
        &config_text(r#""defaults": {"push_interval_ms": 10000}"#),
    );
    smol::block_on(async {
        let (mut eu, _) = Client::enroll(h.addr, "eu-node").await;
        let mut us_hello = new_hello(TOKEN, "us-node");
        us_hello.region = "us".into();
        let (mut us, answer) = Client::hello(h.addr, us_hello).await;
        assert!(matches!(answer, Message::Welcome(_)));

        h.write_config(&config_text(
            r#""defaults": {"push_interval_ms": 10000},
               "regions": {"eu": {"push_interval_ms": 5000, "periods": {"temp_ms": 0}}}"#,
        ));
        assert_eq!(h.factory.reload().expect("reload"), 1);
        match eu.recv().await {
            Ok(Message::Config(c)) => {
                assert_eq!(c.push_interval_ms, 5000);
                assert_eq!(c.periods.temp_ms, 0);
                assert_eq!(c.periods.cpu_ms, Config::default().periods.cpu_ms);
            }
            other => panic!("expected Config, got {other:?}"),
        }
        // The us client got nothing: its next message is the Ack of its batch.
        assert_eq!(us.batch(1, vec![]).await.seq, 1);

        // Same file again: nothing changed, nothing pushed.
        assert_eq!(h.factory.reload().expect("reload"), 0);

        // An invalid file keeps the running config.
        h.write_config(r#"{"listen": "127.0.0.1:0", "defaults": {"push_intervall_ms": 1}}"#);
        let e = h.factory.reload().expect_err("invalid file");
        assert!(e.to_string().contains("push_intervall_ms"), "{e}");
        assert_eq!(
            h.factory.config().effective("eu", "").push_interval_ms,
            5000
        );
        assert_eq!(eu.batch(1, vec![]).await.seq, 1);
    });
    let m = h.get("/metrics");
    assert_eq!(metric(&m, "autofactory_configs_pushed_total"), 1);
    h.stop().expect("clean shutdown");
}

#[test]
fn inventory_survives_a_restart() {
    let dir = temp_dir("restart");
    let h = Harness::start(&dir, &config_text(""));
    let w = smol::block_on(async {
        let (mut c, w) = Client::enroll(h.addr, "persistent").await;
        assert_eq!(c.batch(3, vec![snapshot(1, 7)]).await.seq, 3);
        w
    });
    h.stop().expect("clean shutdown");

    let h = Harness::start(&dir, &config_text(""));
    let rec = h
        .factory
        .inventory()
        .get(&w.client_id)
        .expect("record survived");
    assert_eq!(rec.hostname, "persistent");
    assert_eq!(rec.last_acked_seq, 3);
    assert_eq!(rec.backlog, Some(7));
    smol::block_on(async {
        let (mut c, answer) =
            Client::hello(h.addr, back_hello(&w.client_id, &w.secret, "persistent")).await;
        assert!(
            matches!(answer, Message::Welcome(ref b) if b.welcome_back),
            "{answer:?}"
        );
        // seq 3 was durable before the restart: acked again, not written again.
        assert_eq!(c.batch(3, vec![snapshot(1, 7)]).await.seq, 3);
        assert_eq!(h.sink.count(), 0);
    });
    h.stop().expect("clean shutdown");
}

#[test]
fn admin_serves_clients_and_metrics() {
    let dir = temp_dir("admin");
    let h = Harness::start(&dir, &config_text(""));
    smol::block_on(async {
        let (mut c, w) = Client::enroll(h.addr, "pi-garage").await;
        assert_eq!(
            c.batch(1, vec![snapshot(1, 5), snapshot(2, 4)]).await.seq,
            1
        );
        let (_gone, gone_w) = Client::enroll(h.addr, "offline").await;
        drop(_gone);
        wait_until("offline client disconnects", || {
            h.factory.connected().len() == 1
        })
        .await;

        let body = h.get("/clients");
        let doc: autofactory::admin::ClientsDoc =
            nanoserde::DeJson::deserialize_json(&body).expect("JSON inventory");
        assert_eq!(doc.clients.len(), 2);
        let live = doc
            .clients
            .iter()
            .find(|x| x.id == w.client_id)
            .expect("listed");
        assert!(live.connected);
        assert_eq!(live.hostname, "pi-garage");
        assert_eq!(live.backlog, Some(4), "the latest health fact wins");
        assert_eq!(live.last_acked_seq, 1);
        assert!(!body.contains(&w.secret) && !body.contains("secret_hash"));
        let off = doc
            .clients
            .iter()
            .find(|x| x.id == gone_w.client_id)
            .expect("listed");
        assert!(!off.connected);
        assert_eq!(off.backlog, None);

        let table = autofactory::admin::clients_table(&doc);
        assert!(table.contains("pi-garage") && table.contains("offline"));

        let m = h.get("/metrics");
        assert_eq!(metric(&m, "autofactory_connected_clients"), 1);
        assert_eq!(metric(&m, "autofactory_batches_received_total"), 1);
        assert_eq!(metric(&m, "autofactory_points_received_total"), 6);
        assert_eq!(metric(&m, "autofactory_clients_enrolled_total"), 2);
        assert!(m.contains("# TYPE autofactory_rejected_connections_total counter"));
        assert!(m.contains("autofactory_sink_errors_total 0"));

        assert!(autofactory::admin::http_get(&h.admin.to_string(), "/nope").is_err());
    });
    h.stop().expect("clean shutdown");
}

/// The admin server's request head (issue 14: httparse): what is not HTTP gets 400 with the
/// reason, a head past its bound 431, anything but GET 405; a head sent in pieces is served.
#[test]
fn admin_refuses_bad_requests_with_a_reason() {
    let dir = temp_dir("admin-bad");
    let h = Harness::start(&dir, &config_text(""));
    let ask = |pieces: &[&[u8]]| -> String {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(h.admin).expect("connect to admin");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        for p in pieces {
            // A peer that closed on a bad first piece may refuse the rest: its answer counts.
            if s.write_all(p).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let a = ask(&[b"GET /me tr\x01cs HTTP/1.1\r\n\r\n"]);
    assert!(a.starts_with("HTTP/1.1 400 Bad Request"), "{a}");
    assert!(a.contains("bad request: invalid"), "{a}");
    let a = ask(&[b"GET / HTTP/1.1\r\nX-Junk: ", &[b'a'; 9000], b"\r\n\r\n"]);
    assert!(a.starts_with("HTTP/1.1 431 "), "{a}");
    let a = ask(&[b"POST /clients HTTP/1.1\r\nContent-Length: 0\r\n\r\n"]);
    assert!(a.starts_with("HTTP/1.1 405 "), "{a}");
    let a = ask(&[b"GET /metr", b"ics HTTP/1.1\r\nHo", b"st: x\r\n\r\n"]);
    assert!(a.starts_with("HTTP/1.1 200 OK"), "{a}");
    assert!(a.contains("autofactory_connected_clients 0"), "{a}");
    h.stop().expect("clean shutdown");
}

#[test]
fn a_slow_sink_stops_reading_and_shutdown_acks_what_became_durable() {
    let dir = temp_dir("backpressure");
    let sink = MemSink::gated();
    let h = Harness::start_with(
        &dir,
        &config_text(r#""limits": {"max_inflight_batches": 2}"#),
        sink.clone(),
    );
    let factory = h.factory.clone();
    smol::block_on(async {
        let (mut c, _) = Client::enroll(h.addr, "slow").await;
        for seq in 1..=5 {
            c.send(&Message::Batch(Batch {
                seq,
                snapshots: vec![snapshot(seq as i64, 0)],
                ..Batch::default()
            }))
            .await;
        }
        wait_until("two writes reach the sink", || sink.started() == 2).await;
        // The window is full: the factory reads no further batch while the sink is stuck.
        smol::Timer::after(Duration::from_millis(300)).await;
        assert_eq!(sink.started(), 2);
        assert_eq!(
            metric(&h.get("/metrics"), "autofactory_batches_received_total"),
            2
        );

        // Shut down while writes are in flight, then let the sink finish them.
        factory.stop();
        smol::Timer::after(Duration::from_millis(100)).await;
        sink.open();
        let mut acked = Vec::new();
        let reject = loop {
            match c.recv().await {
                Ok(Message::Ack(a)) => acked.push(a.seq),
                Ok(Message::Reject(r)) => break r,
                other => panic!("expected Ack or Reject, got {other:?}"),
            }
        };
        assert_eq!(
            acked,
            vec![1, 2],
            "in-flight writes finish and are acked in order"
        );
        assert_eq!(reject.code, RejectCode::ShuttingDown);
        assert_eq!(c.recv().await.err(), Some(Some(CloseCode::Away)));
        assert_eq!(sink.count(), 2);
    });
    h.stop().expect("clean shutdown");
}

/// Regression (issue 8): a session that stops reading (backpressure) does not answer the
/// agent's pings either, so it must ping the agent itself within the agent's ping interval;
/// before, an InfluxDB outage made every agent reconnect every two ping intervals.
#[test]
fn a_backpressured_session_pings_the_agent_within_its_ping_interval() {
    let dir = temp_dir("backpressure-ping");
    let sink = MemSink::gated();
    let h = Harness::start_with(
        &dir,
        &config_text(
            r#""defaults": {"ping_interval_ms": 200}, "limits": {"max_inflight_batches": 2}"#,
        ),
        sink.clone(),
    );
    smol::block_on(async {
        let (mut c, _) = Client::enroll(h.addr, "stuck").await;
        for seq in 1..=4 {
            c.send(&Message::Batch(Batch {
                seq,
                snapshots: vec![snapshot(seq as i64, 0)],
                ..Batch::default()
            }))
            .await;
        }
        wait_until("the window is full", || sink.started() == 2).await;
        // Two seconds is ten of the agent's ping intervals: it must hear from us in that time.
        let mut pings = 0;
        let until = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < until {
            let frame = smol::future::or(
                async { Some(smol::stream::StreamExt::next(&mut c.ws).await) },
                async {
                    smol::Timer::at(until).await;
                    None
                },
            )
            .await;
            match frame {
                Some(Some(Ok(WsMessage::Ping(_)))) => pings += 1,
                Some(Some(Ok(other))) => panic!("expected only pings, got {other:?}"),
                Some(_) => panic!("the factory closed a backpressured session"),
                None => break,
            }
        }
        assert!(pings >= 2, "{pings} pings in 2 s while backpressured");
        sink.open();
    });
    h.stop().expect("clean shutdown");
}

#[test]
fn a_thousand_concurrent_clients() {
    const N: usize = 1000;
    let dir = temp_dir("thousand");
    let h = Harness::start(&dir, &config_text(""));
    let addr = h.addr;
    let clients = smol::block_on(async {
        let tasks: Vec<_> = (0..N)
            .map(|i| {
                smol::spawn(async move {
                    let (mut c, w) = Client::enroll(addr, &format!("node-{i:04}")).await;
                    let ack = c.batch(1, vec![snapshot(i as i64, 0)]).await;
                    assert_eq!(ack.seq, 1);
                    (c, w.client_id)
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(within("client task", t).await);
        }
        out
    });
    let ids: std::collections::HashSet<_> = clients.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(ids.len(), N, "every client got its own id");
    assert_eq!(h.factory.connected().len(), N);
    assert_eq!(h.factory.inventory().len(), N);
    assert_eq!(h.sink.count(), N);
    let m = h.get("/metrics");
    assert_eq!(metric(&m, "autofactory_connected_clients"), N as u64);
    drop(clients);
    h.stop().expect("clean shutdown");
}

#[test]
fn over_the_connection_limit_is_busy() {
    let dir = temp_dir("busy");
    let h = Harness::start(&dir, &config_text(r#""limits": {"max_connections": 2}"#));
    smol::block_on(async {
        let (_a, _) = Client::enroll(h.addr, "a").await;
        let (_b, _) = Client::enroll(h.addr, "b").await;
        let mut c = Client::connect(h.addr).await;
        let (r, close) = c.rejected().await;
        assert_eq!(r.code, RejectCode::Busy);
        assert_eq!(close, Some(CloseCode::Away));
    });
    let m = h.get("/metrics");
    assert_eq!(
        metric(
            &m,
            "autofactory_rejected_connections_total{reason=\"busy\"}"
        ),
        1
    );
    h.stop().expect("clean shutdown");
}

#[test]
fn a_silent_client_is_pinged_then_dropped_while_a_live_one_stays() {
    let dir = temp_dir("idle");
    let h = Harness::start(&dir, &config_text(r#""limits": {"idle_timeout_ms": 400}"#));
    smol::block_on(async {
        // `silent` never reads, so it never answers the factory's ping.
        let (_silent, sw) = Client::enroll(h.addr, "silent").await;
        let (mut live, lw) = Client::enroll(h.addr, "live").await;
        // `live` reads (tungstenite answers pings while reading) until `silent` is gone.
        let reader = async {
            loop {
                let _ = live.recv().await;
            }
        };
        let gone = wait_until("the silent client is dropped", || {
            !h.factory.connected().contains(&sw.client_id)
        });
        smol::future::or(gone, reader).await;
        assert!(h.factory.connected().contains(&lw.client_id));
    });
    let m = h.get("/metrics");
    assert_eq!(
        metric(
            &m,
            "autofactory_rejected_connections_total{reason=\"idle_timeout\"}"
        ),
        1
    );
    h.stop().expect("clean shutdown");
}

#[test]
fn with_the_real_file_sink_an_ack_means_the_lines_are_on_disk() {
    let dir = temp_dir("file-sink");
    let h = Harness::start_real_sink(&dir, &config_text(""));
    smol::block_on(async {
        let (mut c, _) = Client::enroll(h.addr, "on-disk").await;
        assert_eq!(
            c.batch(1, vec![snapshot(1_795_000_000_000_000_000, 2)])
                .await
                .seq,
            1
        );
    });
    // Acked, so durable: read what the file sink wrote, without stopping the factory.
    let facts = dir.join("data").join("facts");
    let mut text = String::new();
    for e in std::fs::read_dir(&facts).expect("facts dir").flatten() {
        text.push_str(&std::fs::read_to_string(e.path()).expect("read facts"));
    }
    assert!(
        text.contains("mem,host=on-disk,region=eu,zone=eu-1 "),
        "{text}"
    );
    assert!(text.contains(" 1795000000000000000\n"), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
    h.stop().expect("clean shutdown");
}

#[test]
fn bit_flipped_batches_get_an_ack_or_a_reject_never_a_crash() {
    let dir = temp_dir("bitflips");
    let h = Harness::start(&dir, &config_text(""));
    let good = autofact_fbs::encode(&Message::Batch(Batch {
        seq: 1,
        snapshots: vec![snapshot(1, 0), snapshot(2, 1)],
        ..Batch::default()
    }));
    let (mut acks, mut rejects) = (0, 0);
    smol::block_on(async {
        let (_c, w) = Client::enroll(h.addr, "flipper").await;
        let mut rnd = vec![0u8; 400];
        autofactory::ids::random_bytes(&mut rnd).expect("urandom");
        for pair in rnd.chunks_exact(4) {
            let mut bytes = good.clone();
            let pos = u16::from_le_bytes([pair[0], pair[1]]) as usize % bytes.len();
            bytes[pos] ^= 1 << (pair[2] % 8);
            let (mut c, answer) =
                Client::hello(h.addr, back_hello(&w.client_id, &w.secret, "flipper")).await;
            assert!(matches!(answer, Message::Welcome(_)), "{answer:?}");
            c.send_bytes(bytes).await;
            match c.recv().await {
                Ok(Message::Ack(_)) => acks += 1,
                Ok(Message::Reject(r)) => {
                    assert_eq!(r.code, RejectCode::Malformed);
                    rejects += 1;
                }
                other => panic!("expected Ack or Reject, got {other:?}"),
            }
        }
        still_serves(h.addr).await;
    });
    assert_eq!(acks + rejects, 100);
    h.stop().expect("clean shutdown");
}

#[test]
fn a_reloaded_token_replaces_the_old_one_for_new_enrollments_only() {
    let dir = temp_dir("token-reload");
    let h = Harness::start(&dir, &config_text(""));
    smol::block_on(async {
        let (_c, w) = Client::enroll(h.addr, "before").await;
        let new_token = "a-brand-new-token-42";
        h.write_config(&format!(
            r#"{{"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0", "token": "{new_token}"}}"#
        ));
        h.factory.reload().expect("reload");
        assert_eq!(
            refused(h.addr, new_hello(TOKEN, "late")).await.0,
            RejectCode::BadToken
        );
        let (_n, answer) = Client::hello(h.addr, new_hello(new_token, "new")).await;
        assert!(matches!(answer, Message::Welcome(_)), "{answer:?}");
        // Enrolled clients authenticate with their own secret, not the token.
        let (_b, answer) =
            Client::hello(h.addr, back_hello(&w.client_id, &w.secret, "before")).await;
        assert!(
            matches!(answer, Message::Welcome(ref b) if b.welcome_back),
            "{answer:?}"
        );
    });
    h.stop().expect("clean shutdown");
}
