//! Load figures for the factory: N agents connect, enroll and each send B batches (one batch in
//! flight per agent) to an in-process factory whose sink only counts, then all reconnect at once
//! with their id and secret. Prints enrolments/s, batches/s, points/s, welcome-backs/s and the
//! process's peak RSS.
//!
//! Run: `cargo run --release -p autofactory --example load [-- CLIENTS BATCHES SNAPSHOTS]`
//! (defaults 1000 20 10).

use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message as WsMessage;
use autofact_fbs::{Batch, Cpu, Health, Hello, Mem, Message, Net, Snapshot, System};
use autofactory::{FactSink, Factory, FactoryConfig, Settings, WriteFuture};
use smol::stream::StreamExt;
use smol::Async;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Counts points; durable at once.
#[derive(Default)]
struct CountSink(Arc<AtomicUsize>);

impl FactSink for CountSink {
    fn write(&self, _client: &str, _lines: String, points: usize) -> WriteFuture {
        self.0.fetch_add(points, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
    fn shutdown(&self) {}
}

fn snapshot(t: i64) -> Snapshot {
    Snapshot {
        time_ns: t,
        cpu: (0..5)
            .map(|i| Cpu {
                name: if i == 0 {
                    "cpu-total".into()
                } else {
                    format!("cpu{}", i - 1)
                },
                user: 12.5,
                system: 3.25,
                idle: 80.0,
                ..Default::default()
            })
            .collect(),
        mem: Some(Mem {
            total: 4 << 30,
            available: 2 << 30,
            ..Default::default()
        }),
        system: Some(System {
            load1: 0.5,
            load5: 0.4,
            load15: 0.3,
            n_cpus: 4,
            uptime: 1000,
            ..Default::default()
        }),
        net: vec![Net {
            interface: "eth0".into(),
            bytes_recv: 123_456,
            ..Default::default()
        }],
        health: Some(Health {
            buffered_batches: 1,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let clients = args.first().copied().unwrap_or(1000);
    let batches = args.get(1).copied().unwrap_or(20) as u64;
    let snaps = args.get(2).copied().unwrap_or(10);
    autofactory::log::set_level(autofactory::log::QUIET);

    let dir = std::env::temp_dir().join(format!("autofactory-load-{}", std::process::id()));
    let token = "load-test-token-0123456789";
    let mut cfg = FactoryConfig::parse(&format!(r#"{{"token": "{token}"}}"#), "load")?;
    cfg.data_dir = dir.clone();
    let points = Arc::new(AtomicUsize::new(0));
    let factory = Factory::open(Settings {
        config: cfg,
        config_path: None,
        sink: Some(Arc::new(CountSink(points.clone()))),
    })?;
    let listener = Async::new(TcpListener::bind("127.0.0.1:0")?)?;
    let addr = listener.get_ref().local_addr()?;
    let f = factory.clone();
    let server = std::thread::spawn(move || {
        smol::block_on(autofactory::run(
            &f,
            listener,
            None,
            smol::future::pending(),
        ))
    });

    let payload: Vec<Snapshot> = (0..snaps).map(|i| snapshot(i as i64)).collect();
    let batch_bytes = autofact_fbs::encode(&Message::Batch(Batch {
        seq: 1,
        snapshots: payload.clone(),
        ..Batch::default()
    }))
    .len();
    let enrolled = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let (t_enrolled, t_done, t_back) = smol::block_on(async {
        let (ready_tx, ready_rx) = smol::channel::unbounded::<()>();
        let tasks: Vec<_> = (0..clients)
            .map(|i| {
                let payload = payload.clone();
                let ready = ready_tx.clone();
                let enrolled = enrolled.clone();
                smol::spawn(async move {
                    // Small client buffers, so the RSS figure is mostly the factory's.
                    let small = WebSocketConfig::default()
                        .read_buffer_size(4096)
                        .write_buffer_size(4096);
                    let tcp = Async::<TcpStream>::connect(addr).await.expect("connect");
                    let (mut ws, _) = async_tungstenite::client_async_with_config(
                        format!("ws://{addr}/"),
                        tcp,
                        Some(small),
                    )
                    .await
                    .expect("upgrade");
                    let hello = Hello {
                        protocol_version: autofact_fbs::PROTOCOL_VERSION,
                        token: token.into(),
                        hostname: format!("node-{i}"),
                        ..Default::default()
                    };
                    ws.send(WsMessage::Binary(
                        autofact_fbs::encode(&Message::Hello(hello)).into(),
                    ))
                    .await
                    .expect("send");
                    let creds = match ws.next().await {
                        Some(Ok(WsMessage::Binary(b))) => match autofact_fbs::decode(&b) {
                            Ok(Message::Welcome(w)) => (w.client_id, w.secret),
                            other => panic!("expected Welcome, got {other:?}"),
                        },
                        other => panic!("expected Welcome, got {other:?}"),
                    };
                    enrolled.fetch_add(1, Ordering::Relaxed);
                    let _ = ready.send(()).await;
                    for seq in 1..=batches {
                        let b = Message::Batch(Batch {
                            seq,
                            snapshots: payload.clone(),
                            ..Batch::default()
                        });
                        ws.send(WsMessage::Binary(autofact_fbs::encode(&b).into()))
                            .await
                            .expect("send");
                        loop {
                            match ws.next().await {
                                Some(Ok(WsMessage::Binary(_))) => break,
                                Some(Ok(_)) => continue,
                                other => panic!("connection lost: {other:?}"),
                            }
                        }
                    }
                    (ws, creds)
                })
            })
            .collect();
        for _ in 0..clients {
            let _ = ready_rx.recv().await;
        }
        let t_enrolled = t0.elapsed();
        let mut keep = Vec::new();
        for t in tasks {
            keep.push(t.await);
        }
        let t_done = t0.elapsed();
        // Reconnect storm, as after a factory restart: everyone drops and comes back at once.
        let creds: Vec<(String, String)> = keep.into_iter().map(|(_, c)| c).collect();
        let t1 = Instant::now();
        let back: Vec<_> = creds
            .into_iter()
            .map(|(id, secret)| {
                smol::spawn(async move {
                    let small = WebSocketConfig::default()
                        .read_buffer_size(4096)
                        .write_buffer_size(4096);
                    let tcp = Async::<TcpStream>::connect(addr).await.expect("connect");
                    let (mut ws, _) = async_tungstenite::client_async_with_config(
                        format!("ws://{addr}/"),
                        tcp,
                        Some(small),
                    )
                    .await
                    .expect("upgrade");
                    let hello = Hello {
                        protocol_version: autofact_fbs::PROTOCOL_VERSION,
                        client_id: id,
                        secret,
                        ..Default::default()
                    };
                    ws.send(WsMessage::Binary(
                        autofact_fbs::encode(&Message::Hello(hello)).into(),
                    ))
                    .await
                    .expect("send");
                    match ws.next().await {
                        Some(Ok(WsMessage::Binary(b))) => match autofact_fbs::decode(&b) {
                            Ok(Message::Welcome(w)) => assert!(w.welcome_back),
                            other => panic!("expected Welcome, got {other:?}"),
                        },
                        other => panic!("expected Welcome, got {other:?}"),
                    }
                    ws
                })
            })
            .collect();
        let mut again = Vec::new();
        for t in back {
            again.push(t.await);
        }
        let t_back = t1.elapsed();
        (t_enrolled, t_done, t_back)
    });
    let total_batches = clients as u64 * batches;
    let p = points.load(Ordering::Relaxed);
    println!("clients {clients}, batches/client {batches}, snapshots/batch {snaps}, batch size {batch_bytes} B");
    println!(
        "enrolment: {clients} clients in {:.2} s ({:.0}/s)",
        t_enrolled.as_secs_f64(),
        clients as f64 / t_enrolled.as_secs_f64()
    );
    let secs = (t_done - t_enrolled).as_secs_f64();
    println!(
        "batches: {total_batches} in {secs:.2} s = {:.0} batches/s, {:.0} points/s, {:.1} MiB/s of flatbuffers",
        total_batches as f64 / secs,
        p as f64 / secs,
        (total_batches as f64 * batch_bytes as f64) / secs / (1 << 20) as f64
    );
    println!(
        "reconnect storm: {clients} returning clients welcomed back in {:.2} s ({:.0}/s)",
        t_back.as_secs_f64(),
        clients as f64 / t_back.as_secs_f64()
    );
    println!(
        "points written {p}; peak RSS (factory + clients in one process) {} MiB",
        peak_rss_kib() / 1024
    );
    factory.stop();
    let _ = server.join();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
