//! A scripted factory for the agent's session tests: the real codec over a real websocket on
//! 127.0.0.1, with an inventory that survives its own restarts, and a record of every Hello and
//! Batch it received. Plus helpers to run the agent in-process and to wait for conditions.
#![allow(dead_code)]

use async_tungstenite::tungstenite::Message as Frame;
use autofact::run::{AgentConfig, Exit, Log, Settings, Timing};
use autofact_fbs::{Ack, Batch, Config, Hello, Message, Periods, Reject, RejectCode, Welcome};
use smol::stream::StreamExt;
use smol::Async;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the factory behaves.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// The enrollment token it accepts.
    pub token: String,
    /// The Config it gives in Welcome.
    pub config: Config,
    /// Batches it refuses (Reject, then close), like the real factory's limits.
    pub refuse: Refuse,
}

/// Which batches the scripted factory refuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Refuse {
    /// None.
    #[default]
    Nothing,
    /// A message longer than this many bytes: `TooLarge` (the real factory's max_message_bytes).
    LargerThan(usize),
    /// The first batch it receives (by seq, on every resend): `Malformed`.
    FirstBatch,
}

/// What the factory saw, across restarts.
#[derive(Debug, Default)]
pub struct Record {
    /// Every Hello, in order.
    pub hellos: Vec<Hello>,
    /// Every Welcome sent, in order.
    pub welcomes: Vec<Welcome>,
    /// Every Reject sent.
    pub rejects: Vec<Reject>,
    /// Every batch received (a batch sent twice appears twice).
    pub batches: Vec<Batch>,
    /// TCP connections accepted.
    pub connections: usize,
    /// Known clients: id -> secret.
    pub clients: HashMap<String, String>,
    /// Highest seq acked.
    pub acked: Option<u64>,
    /// The code of every close frame received from an agent.
    pub close_codes: Vec<u16>,
    /// The installation each client id was first seen from (the clone rule of issue 15).
    pub installations: HashMap<String, String>,
    /// The seq refused by `Refuse::FirstBatch`.
    pub refused_seq: Option<u64>,
    /// For each entry of `batches`, the client id its connection was welcomed as.
    pub batch_clients: Vec<String>,
}

impl Record {
    /// Received batches by seq, each once, in seq order.
    pub fn unique_batches(&self) -> Vec<Batch> {
        let mut by_seq = std::collections::BTreeMap::new();
        for b in &self.batches {
            by_seq.entry(b.seq).or_insert_with(|| b.clone());
        }
        by_seq.into_values().collect()
    }

    /// Every snapshot time (ns) of the unique batches, in order.
    pub fn snapshot_times(&self) -> Vec<i64> {
        self.unique_batches()
            .iter()
            .flat_map(|b| b.snapshots.iter().map(|s| s.time_ns))
            .collect()
    }
}

struct Running {
    stop: smol::channel::Sender<()>,
    thread: JoinHandle<()>,
}

/// The scripted factory.
pub struct Factory {
    /// Where it listens (kept across restarts).
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    record: Arc<Mutex<Record>>,
    configs: Arc<Mutex<Vec<smol::channel::Sender<Ctl>>>>,
    running: Option<Running>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Factory {
    /// Starts on a free loopback port.
    pub fn start(script: Script) -> std::io::Result<Factory> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let mut f = Factory {
            addr: listener.local_addr()?,
            script: Arc::new(Mutex::new(script)),
            record: Arc::new(Mutex::new(Record::default())),
            configs: Arc::new(Mutex::new(Vec::new())),
            running: None,
        };
        f.serve(listener)?;
        Ok(f)
    }

    /// Adds a known client, as if it had enrolled earlier.
    pub fn know(&self, id: &str, secret: &str) {
        lock(&self.record)
            .clients
            .insert(id.to_string(), secret.to_string());
    }

    /// The record so far.
    pub fn record(&self) -> MutexGuard<'_, Record> {
        lock(&self.record)
    }

    /// Stops abruptly: listener and every connection dropped, no close frame (like a crash).
    pub fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.stop.try_send(());
            let _ = r.thread.join();
        }
        lock(&self.configs).clear();
    }

    /// Comes back on the same address with the same inventory.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        // std sets SO_REUSEADDR on Unix, so the old connections' TIME_WAIT does not block this.
        let listener = TcpListener::bind(self.addr)?;
        self.serve(listener)
    }

    /// Changes the Config: pushed at once to connected agents, and given in later Welcomes.
    pub fn push_config(&self, c: Config) {
        lock(&self.script).config = c;
        for tx in lock(&self.configs).iter() {
            let _ = tx.try_send(Ctl::Config(c));
        }
    }

    /// Every current connection stops reading and answering (pings included) but stays open,
    /// like a hung peer or a silently dropped route; new connections are served normally.
    pub fn freeze_connections(&self) {
        for tx in lock(&self.configs).drain(..) {
            let _ = tx.try_send(Ctl::Freeze);
        }
    }

    fn serve(&mut self, listener: TcpListener) -> std::io::Result<()> {
        let listener = Async::new(listener)?;
        let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
        let (script, record, configs) = (
            self.script.clone(),
            self.record.clone(),
            self.configs.clone(),
        );
        let thread = std::thread::spawn(move || {
            let ex = smol::LocalExecutor::new();
            smol::block_on(ex.run(async {
                loop {
                    let accepted =
                        smol::future::or(async { Some(listener.accept().await) }, async {
                            let _ = stop_rx.recv().await;
                            None
                        })
                        .await;
                    match accepted {
                        None => break,
                        Some(Ok((stream, _))) => {
                            lock(&record).connections += 1;
                            let (tx, rx) = smol::channel::unbounded();
                            lock(&configs).push(tx);
                            let task = connection(stream, script.clone(), record.clone(), rx);
                            ex.spawn(task).detach();
                        }
                        Some(Err(_)) => break,
                    }
                }
            }));
            // Dropping the executor drops every connection task and closes their sockets.
        });
        self.running = Some(Running {
            stop: stop_tx,
            thread,
        });
        Ok(())
    }
}

impl Drop for Factory {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Orders for a connection task.
#[derive(Debug, Clone, Copy)]
enum Ctl {
    Config(Config),
    Freeze,
}

async fn send(ws: &mut async_tungstenite::WebSocketStream<Async<TcpStream>>, m: &Message) -> bool {
    ws.send(Frame::binary(autofact_fbs::encode(m)))
        .await
        .is_ok()
}

async fn connection(
    stream: Async<TcpStream>,
    script: Arc<Mutex<Script>>,
    record: Arc<Mutex<Record>>,
    configs: smol::channel::Receiver<Ctl>,
) {
    let Ok(mut ws) = async_tungstenite::accept_async(stream).await else {
        return;
    };
    let hello = loop {
        match ws.next().await {
            Some(Ok(Frame::Binary(b))) => match autofact_fbs::decode(&b) {
                Ok(Message::Hello(h)) => break h,
                _ => return,
            },
            Some(Ok(_)) => continue,
            _ => return,
        }
    };
    let script_now = lock(&script).clone();
    let answer = {
        let mut r = lock(&record);
        r.hellos.push(hello.clone());
        let known = r.clients.get(&hello.client_id).cloned();
        let seen_from = r.installations.get(&hello.client_id).cloned();
        let clone = !hello.client_id.is_empty()
            && known.as_deref() == Some(hello.secret.as_str())
            && seen_from.is_some_and(|i| !i.is_empty() && i != hello.installation);
        let answer = if clone {
            // Issue 15's clone rule: one id from a second installation is enrolled as new.
            let n = r.welcomes.iter().filter(|w| !w.welcome_back).count();
            let id = format!("{:032x}", 0xc10e_0000_u128 + n as u128);
            let secret = format!("clone-secret-{n}");
            r.clients.insert(id.clone(), secret.clone());
            r.installations
                .insert(id.clone(), hello.installation.clone());
            Message::Welcome(Welcome {
                client_id: id,
                secret,
                welcome_back: false,
                config: script_now.config,
            })
        } else if !hello.client_id.is_empty() {
            r.installations
                .entry(hello.client_id.clone())
                .or_insert_with(|| hello.installation.clone());
            match known {
                Some(secret) if secret == hello.secret => Message::Welcome(Welcome {
                    client_id: hello.client_id.clone(),
                    secret: String::new(),
                    welcome_back: true,
                    config: script_now.config,
                }),
                Some(_) => Message::Reject(Reject {
                    code: RejectCode::BadSecret,
                    message: "secret does not match".into(),
                }),
                None => Message::Reject(Reject {
                    code: RejectCode::UnknownClient,
                    message: "unknown client".into(),
                }),
            }
        } else if hello.token != script_now.token {
            Message::Reject(Reject {
                code: RejectCode::BadToken,
                message: "enrollment token not accepted".into(),
            })
        } else {
            // Counted over the factory's whole life, so a cleared inventory gives new ids.
            let n = r.welcomes.iter().filter(|w| !w.welcome_back).count();
            let id = format!("{:032x}", 0xa9e0_u128 + n as u128);
            let secret = format!("secret-{n}");
            r.clients.insert(id.clone(), secret.clone());
            r.installations
                .insert(id.clone(), hello.installation.clone());
            Message::Welcome(Welcome {
                client_id: id,
                secret,
                welcome_back: false,
                config: script_now.config,
            })
        };
        match &answer {
            Message::Welcome(w) => r.welcomes.push(w.clone()),
            Message::Reject(j) => r.rejects.push(j.clone()),
            _ => {}
        }
        answer
    };
    if !send(&mut ws, &answer).await {
        return;
    }
    if matches!(answer, Message::Reject(_)) {
        let _ = ws.close(None).await;
        return;
    }
    let client = match &answer {
        Message::Welcome(w) => w.client_id.clone(),
        _ => String::new(),
    };
    loop {
        enum Ev {
            Frame(Option<Result<Frame, async_tungstenite::tungstenite::Error>>),
            Ctl(Ctl),
        }
        let ev = smol::future::or(async { Ev::Frame(ws.next().await) }, async {
            match configs.recv().await {
                Ok(c) => Ev::Ctl(c),
                Err(_) => std::future::pending().await,
            }
        })
        .await;
        match ev {
            Ev::Ctl(Ctl::Config(c)) => {
                if !send(&mut ws, &Message::Config(c)).await {
                    return;
                }
            }
            Ev::Ctl(Ctl::Freeze) => {
                // Hold the socket open and never read it again.
                std::future::pending::<()>().await;
            }
            Ev::Frame(Some(Ok(Frame::Close(c)))) => {
                if let Some(c) = c {
                    lock(&record).close_codes.push(u16::from(c.code));
                }
                return;
            }
            Ev::Frame(Some(Ok(Frame::Binary(b)))) => {
                let Ok(Message::Batch(batch)) = autofact_fbs::decode(&b) else {
                    return;
                };
                let seq = batch.seq;
                let refused = match script_now.refuse {
                    Refuse::Nothing => None,
                    Refuse::LargerThan(n) => (b.len() > n).then_some(RejectCode::TooLarge),
                    Refuse::FirstBatch => {
                        let mut r = lock(&record);
                        (*r.refused_seq.get_or_insert(seq) == seq).then_some(RejectCode::Malformed)
                    }
                };
                if let Some(code) = refused {
                    let reject = Reject {
                        code,
                        message: format!("batch {seq} refused"),
                    };
                    lock(&record).rejects.push(reject.clone());
                    let _ = send(&mut ws, &Message::Reject(reject)).await;
                    let _ = ws.close(None).await;
                    return;
                }
                {
                    let mut r = lock(&record);
                    r.batches.push(batch);
                    r.batch_clients.push(client.clone());
                    r.acked = Some(r.acked.map_or(seq, |a| a.max(seq)));
                }
                if !send(
                    &mut ws,
                    &Message::Ack(Ack {
                        seq,
                        ..Ack::default()
                    }),
                )
                .await
                {
                    return;
                }
            }
            Ev::Frame(None) | Ev::Frame(Some(Err(_))) => return,
            Ev::Frame(Some(Ok(_))) => {}
        }
    }
}

/// A Config with `ms` for the listed kinds (others off), fast push and ping.
pub fn config(period_ms: u32, push_ms: u32) -> Config {
    Config {
        periods: Periods {
            mem_ms: period_ms,
            system_ms: period_ms,
            health_ms: period_ms,
            ..Periods::default()
        },
        push_interval_ms: push_ms,
        ping_interval_ms: 2_000,
        buffer_cap_bytes: 16 * 1024 * 1024,
        give_up_secs: 0,
        ..Config::default()
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `name` keeps parallel tests apart.
    pub fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p =
            std::env::temp_dir().join(format!("autofact-{name}-{}-{nanos}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Timings short enough for tests.
pub fn fast_timing() -> Timing {
    Timing {
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_millis(300),
        connect_timeout: Duration::from_secs(2),
        flush_every: Duration::from_millis(200),
        close_timeout: Duration::from_millis(500),
        window: 4,
        max_message: 1024 * 1024,
        slow_disk: Duration::ZERO,
    }
}

/// Settings for an agent talking to `addr` with state in `dir`.
pub fn settings(
    addr: SocketAddr,
    dir: &Path,
    token: &str,
) -> (Settings, smol::channel::Receiver<String>) {
    let text = format!(
        r#"{{"server": "{addr}", "data_dir": "{}", "token": "{token}", "region": "test", "zone": "z1", "hostname": "agent-under-test"}}"#,
        dir.display()
    );
    let config = AgentConfig::parse(&text).unwrap_or_else(|e| panic!("test config: {e}"));
    let (log, lines) = Log::tap();
    let mut s = Settings::new(config);
    s.timing = fast_timing();
    s.log = log;
    (s, lines)
}

/// An agent running in-process on its own thread.
pub struct Agent {
    stop: smol::channel::Sender<()>,
    thread: Option<JoinHandle<Result<Exit, autofact::run::Error>>>,
    /// Its status lines.
    pub lines: smol::channel::Receiver<String>,
}

impl Agent {
    /// Starts `autofact::run::run` with these settings.
    pub fn start(settings: Settings, lines: smol::channel::Receiver<String>) -> Agent {
        let (stop, rx) = smol::channel::bounded(1);
        let thread = std::thread::spawn(move || autofact::run::run(settings, rx));
        Agent {
            stop,
            thread: Some(thread),
            lines,
        }
    }

    /// Asks it to stop (as SIGTERM does) and waits for its result.
    pub fn stop(mut self) -> Result<Exit, String> {
        let _ = self.stop.try_send(());
        self.join()
    }

    /// Waits for it to end on its own.
    pub fn join(&mut self) -> Result<Exit, String> {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(Ok(exit))) => Ok(exit),
            Some(Ok(Err(e))) => Err(e.to_string()),
            Some(Err(_)) => Err("agent thread panicked".into()),
            None => Err("already joined".into()),
        }
    }

    /// True once the agent's thread has ended.
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Every status line so far.
    pub fn drain_lines(&self) -> Vec<String> {
        std::iter::from_fn(|| self.lines.try_recv().ok()).collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.stop.try_send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; panics with `what` on timeout.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
