//! Test harness for the factory: a real factory on 127.0.0.1:0 (in its own thread) with an
//! in-memory sink, and a test client built on the codec and async-tungstenite.
#![allow(dead_code)]

use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::Message as WsMessage;
use async_tungstenite::WebSocketStream;
use autofact_fbs::{
    Ack, Batch, Health, Hello, Mem, Message, Reject, RejectCode, Snapshot, System, Welcome,
    PROTOCOL_VERSION,
};
use autofactory::{FactSink, Factory, FactoryConfig, Settings, WriteFuture};
use smol::channel::{Receiver, Sender};
use smol::stream::StreamExt;
use smol::Async;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The enrollment token of test configs.
pub const TOKEN: &str = "test-token-0123456789";

/// Guard against hangs only: a test waiting this long has failed anyway.
pub const HANG: Duration = Duration::from_secs(30);

/// A fresh empty directory under the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "autofactory-test-{name}-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}

/// Awaits `f`, panicking with `what` if it hangs.
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    smol::future::or(async { Some(f.await) }, async {
        smol::Timer::after(HANG).await;
        None
    })
    .await
    .unwrap_or_else(|| panic!("hung: {what}"))
}

/// Polls `cond` every 10 ms until true; panics after [`HANG`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            smol::Timer::after(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// An in-memory sink: records every write; optionally gated (writes wait until opened).
/// Clones share the same state.
#[derive(Clone, Default)]
pub struct MemSink(Arc<MemInner>);

#[derive(Default)]
pub struct MemInner {
    pub writes: Mutex<Vec<String>>,
    pub points: AtomicUsize,
    pub started: AtomicUsize,
    gate: Mutex<Option<Receiver<()>>>,
    gate_tx: Mutex<Option<Sender<()>>>,
}

impl MemSink {
    /// A sink whose writes wait until [`MemSink::open`].
    pub fn gated() -> MemSink {
        let (tx, rx) = smol::channel::unbounded();
        let s = MemSink::default();
        *s.0.gate.lock().expect("lock") = Some(rx);
        *s.0.gate_tx.lock().expect("lock") = Some(tx);
        s
    }

    /// Lets every waiting and future write through (closing the gate channel wakes them all).
    pub fn open(&self) {
        self.0.gate_tx.lock().expect("lock").take();
    }

    /// Number of completed writes.
    pub fn count(&self) -> usize {
        self.0.writes.lock().expect("lock").len()
    }

    /// Number of writes started (including those waiting at the gate).
    pub fn started(&self) -> usize {
        self.0.started.load(Ordering::SeqCst)
    }

    /// Points written.
    pub fn points(&self) -> usize {
        self.0.points.load(Ordering::SeqCst)
    }

    /// All lines written so far.
    pub fn text(&self) -> String {
        self.0.writes.lock().expect("lock").concat()
    }
}

impl FactSink for MemSink {
    fn write(&self, _client: &str, lines: String, points: usize) -> WriteFuture {
        self.0.started.fetch_add(1, Ordering::SeqCst);
        let gate = self.0.gate.lock().expect("lock").clone();
        let me = self.0.clone();
        Box::pin(async move {
            if let Some(g) = gate {
                let _ = g.recv().await;
            }
            me.points.fetch_add(points, Ordering::SeqCst);
            me.writes.lock().expect("lock").push(lines);
            Ok(())
        })
    }
    fn shutdown(&self) {}
}

/// A running factory.
pub struct Harness {
    pub factory: Factory,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub sink: MemSink,
    stop: Sender<()>,
    thread: Option<std::thread::JoinHandle<Result<(), autofactory::Error>>>,
}

/// A config file text with the test token, loopback listeners on port 0, and `extra`
/// (more top-level members, without a leading comma; may be empty).
pub fn config_text(extra: &str) -> String {
    let sep = if extra.is_empty() { "" } else { "," };
    format!(
        r#"{{"listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0", "token": "{TOKEN}"{sep}{extra}}}"#
    )
}

impl Harness {
    /// Starts a factory with `config` (file text) in `dir`, with a fresh ungated sink.
    pub fn start(dir: &Path, config: &str) -> Harness {
        Harness::start_with(dir, config, MemSink::default())
    }

    /// Starts a factory with `config` in `dir` and the given sink.
    pub fn start_with(dir: &Path, config: &str, sink: MemSink) -> Harness {
        Harness::start_opt(dir, config, Some(sink))
    }

    /// Starts a factory with `config` in `dir` and the sink it configures (the real one).
    pub fn start_real_sink(dir: &Path, config: &str) -> Harness {
        Harness::start_opt(dir, config, None)
    }

    fn start_opt(dir: &Path, config: &str, mem: Option<MemSink>) -> Harness {
        let sink = mem.clone().unwrap_or_default();
        let config_path = dir.join("autofactory.json");
        std::fs::write(&config_path, config).expect("write config");
        let mut cfg = FactoryConfig::load(&config_path).expect("valid config");
        cfg.data_dir = dir.join("data");
        let listener = TcpListener::bind(cfg.listen).expect("bind");
        let admin = TcpListener::bind(cfg.admin_listen.expect("admin")).expect("bind admin");
        let addr = listener.local_addr().expect("addr");
        let admin_addr = admin.local_addr().expect("addr");
        // The inventory of a factory stopped a moment ago may still be closing.
        let mut factory = None;
        for _ in 0..300 {
            match Factory::open(Settings {
                config: cfg.clone(),
                config_path: Some(config_path.clone()),
                sink: mem
                    .clone()
                    .map(|m| Arc::new(m) as Arc<dyn autofactory::FactSink>),
            }) {
                Ok(f) => {
                    factory = Some(f);
                    break;
                }
                Err(e) => {
                    eprintln!("open: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        let factory = factory.expect("factory opens");
        let (stop, stop_rx) = smol::channel::bounded::<()>(1);
        let f = factory.clone();
        let thread = std::thread::spawn(move || {
            let listener = Async::new(listener).expect("async");
            let admin = Async::new(admin).expect("async");
            smol::block_on(autofactory::run(&f, listener, Some(admin), async {
                let _ = stop_rx.recv().await;
            }))
        });
        Harness {
            factory,
            addr,
            admin: admin_addr,
            dir: dir.to_path_buf(),
            config_path,
            sink,
            stop,
            thread: Some(thread),
        }
    }

    /// Rewrites the config file (for reload tests); keeps the loopback listeners.
    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config_path, text).expect("write config");
    }

    /// Shuts the factory down gracefully and waits for it; returns run's result.
    pub fn stop(mut self) -> Result<(), autofactory::Error> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> Result<(), autofactory::Error> {
        let _ = self.stop.try_send(());
        match self.thread.take() {
            Some(t) => t.join().expect("factory thread panicked"),
            None => Ok(()),
        }
    }

    /// `GET path` on the admin listener.
    pub fn get(&self, path: &str) -> String {
        autofactory::admin::http_get(&self.admin.to_string(), path).expect("admin GET")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// A test agent.
pub struct Client {
    pub ws: WebSocketStream<Async<TcpStream>>,
}

/// A Hello for a new client.
pub fn new_hello(token: &str, hostname: &str) -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        token: token.to_string(),
        hostname: hostname.to_string(),
        region: "eu".into(),
        zone: "eu-1".into(),
        arch: "aarch64".into(),
        kernel: "6.1.0".into(),
        os: "Debian GNU/Linux 12".into(),
        cpu_model: "Raspberry Pi 4 Model B".into(),
        mem_total: 4 << 30,
        agent_version: "0.1.0".into(),
        ..Default::default()
    }
}

/// A Hello for a returning client.
pub fn back_hello(id: &str, secret: &str, hostname: &str) -> Hello {
    Hello {
        client_id: id.to_string(),
        secret: secret.to_string(),
        token: String::new(),
        ..new_hello("", hostname)
    }
}

/// A Hello for a new client of this release: an installation and a buffer epoch.
pub fn hello_v2(hostname: &str, installation: &str, epoch: u64) -> Hello {
    Hello {
        installation: installation.into(),
        epoch,
        ..new_hello(TOKEN, hostname)
    }
}

/// Connects with `hello` and expects a Welcome.
pub async fn welcome(addr: SocketAddr, hello: Hello) -> (Client, Welcome) {
    match Client::hello(addr, hello).await {
        (c, Message::Welcome(w)) => (c, w),
        (_, other) => panic!("expected Welcome, got {other:?}"),
    }
}

/// Sends one batch of `epoch` and returns its Ack.
pub async fn batch(c: &mut Client, epoch: u64, seq: u64, snapshots: Vec<Snapshot>) -> Ack {
    c.send_batch(Batch {
        epoch,
        seq,
        snapshots,
        ..Batch::default()
    })
    .await
}

/// A snapshot with a mem, a system and a health fact (3 points); `backlog` = buffered_batches.
pub fn snapshot(time_ns: i64, backlog: u64) -> Snapshot {
    Snapshot {
        time_ns,
        mem: Some(Mem {
            total: 4 << 30,
            available: 2 << 30,
            used: 1 << 30,
            free: 1 << 30,
            ..Default::default()
        }),
        system: Some(System {
            load1: 0.5,
            load5: 0.25,
            load15: 0.125,
            n_cpus: 4,
            uptime: 100,
            ..Default::default()
        }),
        health: Some(Health {
            buffered_batches: backlog,
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Client {
    /// Opens a websocket to the factory.
    pub async fn connect(addr: SocketAddr) -> Client {
        let tcp = Async::<TcpStream>::connect(addr)
            .await
            .expect("tcp connect");
        let (ws, _) = async_tungstenite::client_async(format!("ws://{addr}/"), tcp)
            .await
            .expect("websocket upgrade");
        Client { ws }
    }

    /// Sends one protocol message.
    pub async fn send(&mut self, msg: &Message) {
        self.ws
            .send(WsMessage::Binary(autofact_fbs::encode(msg).into()))
            .await
            .expect("send");
    }

    /// Sends raw bytes as one binary message (may fail if the factory already closed).
    pub async fn send_bytes(&mut self, bytes: Vec<u8>) {
        let _ = self.ws.send(WsMessage::Binary(bytes.into())).await;
    }

    /// The next protocol message, or `Err(close code)` when the factory closed.
    pub async fn recv(&mut self) -> Result<Message, Option<CloseCode>> {
        within("recv", async {
            loop {
                match self.ws.next().await {
                    Some(Ok(WsMessage::Binary(b))) => {
                        return Ok(autofact_fbs::decode(&b).expect("factory sent a valid message"))
                    }
                    Some(Ok(WsMessage::Close(f))) => return Err(f.map(|f| f.code)),
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return Err(None),
                }
            }
        })
        .await
    }

    /// Connects and says Hello; returns the client and the factory's answer.
    pub async fn hello(addr: SocketAddr, hello: Hello) -> (Client, Message) {
        let mut c = Client::connect(addr).await;
        c.send(&Message::Hello(hello)).await;
        let answer = c.recv().await.expect("an answer to Hello");
        (c, answer)
    }

    /// Enrolls a new client; returns it with its Welcome.
    pub async fn enroll(addr: SocketAddr, hostname: &str) -> (Client, Welcome) {
        match Client::hello(addr, new_hello(TOKEN, hostname)).await {
            (c, Message::Welcome(w)) => (c, w),
            (_, other) => panic!("expected Welcome, got {other:?}"),
        }
    }

    /// Sends a batch of `snapshots` and returns the next message, which must be an Ack.
    pub async fn batch(&mut self, seq: u64, snapshots: Vec<Snapshot>) -> Ack {
        self.send_batch(Batch {
            seq,
            snapshots,
            ..Batch::default()
        })
        .await
    }

    /// Sends `b` and returns the Ack that answers it.
    pub async fn send_batch(&mut self, b: Batch) -> Ack {
        let (epoch, seq) = (b.epoch, b.seq);
        self.send(&Message::Batch(b)).await;
        match self.recv().await {
            Ok(Message::Ack(a)) => a,
            other => panic!("expected Ack for (epoch {epoch}, seq {seq}), got {other:?}"),
        }
    }

    /// Expects a Reject followed by a close; returns the Reject and the close code.
    pub async fn rejected(&mut self) -> (Reject, Option<CloseCode>) {
        let r = match self.recv().await {
            Ok(Message::Reject(r)) => r,
            other => panic!("expected Reject, got {other:?}"),
        };
        let code = match self.recv().await {
            Err(code) => code,
            Ok(m) => panic!("expected close after Reject, got {m:?}"),
        };
        (r, code)
    }
}

/// Connects, says `hello`, and returns the Reject code and close code the factory answered.
pub async fn refused(addr: SocketAddr, hello: Hello) -> (RejectCode, Option<CloseCode>) {
    let mut c = Client::connect(addr).await;
    c.send(&Message::Hello(hello)).await;
    let (r, code) = c.rejected().await;
    (r.code, code)
}

/// A good client still gets served: enroll and one acknowledged batch.
pub async fn still_serves(addr: SocketAddr) {
    let (mut c, w) = Client::enroll(addr, "canary").await;
    assert!(!w.welcome_back);
    let ack = c.batch(1, vec![snapshot(1_000, 0)]).await;
    assert_eq!(ack.seq, 1);
}

/// The value of a metric line `name` (with labels, exactly as rendered) in Prometheus text.
pub fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
        .trim()
        .parse()
        .expect("numeric metric")
}
