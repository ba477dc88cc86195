//! The session state machine and the reconnect loop around it.
//!
//! One session: connect, Hello (host description plus token, or id + secret), then Welcome
//! (store the identity, apply the Config) or Reject (report, back off long). While established,
//! unacked batches go out oldest first with up to `window` in flight; an Ack deletes every
//! batch at or below its seq; a Config is applied at once; a websocket Ping goes out when the
//! link was quiet for the ping interval, and twice that without any frame means the link is
//! lost. Between sessions: exponential backoff with jitter, until the Config's give-up time.

use super::backoff::Backoff;
use super::queue::Queue;
use super::schedule::{Collect, Parts, Scheduler, Shared};
use super::state::{Identity, StateDir};
use super::transport::{self, Limits, Ws};
use super::{Error, Exit, Log, Settings, Shutdown};
use crate::clock;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::Message as Frame;
use autofact_fbs::{Config, ConfigStatus, Hello, Message, Reject, RejectCode, PROTOCOL_VERSION};
use smol::stream::StreamExt;
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How one session ended.
#[derive(Debug)]
enum Outcome {
    /// Stop requested; the buffer is flushed and the websocket closed.
    Shutdown,
    /// The factory refused this agent.
    Rejected(Reject),
    /// The link failed; `established` when a Welcome had been received.
    Lost { established: bool, why: Lost },
}

/// Why a link was lost (never fatal: the agent reconnects).
#[derive(Debug)]
enum Lost {
    Connect(transport::ConnectError),
    Ws(SocketAddr, async_tungstenite::tungstenite::Error),
    Closed(SocketAddr, Option<CloseFrame>),
    Silent(SocketAddr, Duration),
    Timeout(SocketAddr, &'static str),
    Protocol(SocketAddr, String),
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lost::Connect(e) => e.fmt(f),
            Lost::Ws(peer, e) => write!(f, "websocket to {peer} failed: {e}"),
            Lost::Closed(peer, None) => write!(f, "factory {peer} closed the connection"),
            Lost::Closed(peer, Some(c)) => {
                write!(
                    f,
                    "factory {peer} closed the connection ({}: {})",
                    c.code, c.reason
                )
            }
            Lost::Silent(peer, d) => write!(f, "nothing heard from {peer} for {d:?}: link lost"),
            Lost::Timeout(peer, what) => write!(f, "{what} to {peer} timed out"),
            Lost::Protocol(peer, what) => write!(f, "factory {peer}: {what}"),
        }
    }
}

/// Everything that lives as long as the agent.
struct Agent {
    settings: Settings,
    state: StateDir,
    queue: Arc<Queue>,
    shared: Arc<Shared>,
    sched: Scheduler,
    notify: smol::channel::Receiver<()>,
    host: Hello,
    identity: Option<Identity>,
    config: Option<Config>,
    /// This installation (see [`StateDir::installation`]).
    installation: String,
    /// After the factory refused a batch as malformed or too large, batches go one at a time
    /// until one is acked, so a second refusal names the poison batch exactly.
    probe: bool,
    /// The batches in flight when the last session ended.
    last_inflight: Vec<u64>,
    /// What Hello and every batch say about the Config (OpAMP's APPLIED / FAILED).
    report: Report,
    /// The hash of the refused Config a Hello has already reported: refusing it again (the
    /// next Welcome carries it) does not reconnect again.
    failure_told: u64,
}

/// The agent's answer to the last Config it was given.
#[derive(Debug, Clone, Default)]
struct Report {
    /// [`Config::hash`] of the Config in force, or of the one refused; 0 = none yet.
    hash: u64,
    status: ConfigStatus,
    /// Why it was refused; empty when applied.
    error: String,
}

impl Report {
    fn applied(c: Option<Config>) -> Report {
        c.map_or_else(Report::default, |c| Report {
            hash: c.hash(),
            status: ConfigStatus::Applied,
            error: String::new(),
        })
    }
}

/// Whether the agent can apply `c`; `Err` names the first value it refuses. The ranges are the
/// factory's own checks of its config file (a period is 0 = off or at least 100 ms; push and
/// ping intervals at least 100 ms; a buffer cap of at least 64 KiB), plus a push interval of at
/// most one day, so a Config from this release's factory is always applied and one from another
/// factory (release, bug, hand-made) that would make the agent spin or hoard is refused. Every
/// period 0 is valid: it stops collection (what an operator turning a node off asks for).
pub fn check_config(c: &Config) -> Result<(), String> {
    for k in super::Kind::ALL {
        let v = k.period(&c.periods);
        if v != 0 && v < 100 {
            return Err(format!(
                "periods.{}: {v} ms (must be 0 = off, or at least 100 ms)",
                k.period_key()
            ));
        }
    }
    if !(100..=86_400_000).contains(&c.push_interval_ms) {
        return Err(format!(
            "push_interval_ms: {} (must be from 100 ms to one day)",
            c.push_interval_ms
        ));
    }
    if c.ping_interval_ms != 0 && c.ping_interval_ms < 100 {
        return Err(format!(
            "ping_interval_ms: {} (must be 0 = never, or at least 100 ms)",
            c.ping_interval_ms
        ));
    }
    if c.buffer_cap_bytes < 64 * 1024 {
        return Err(format!(
            "buffer_cap_bytes: {} (must be at least 65536)",
            c.buffer_cap_bytes
        ));
    }
    Ok(())
}

fn log(a: &Agent) -> &Log {
    &a.settings.log
}

/// Starts the collection thread and runs sessions until stop or give-up.
pub(super) async fn life(
    settings: Settings,
    source: Box<dyn Collect>,
    host: Hello,
    shutdown: Shutdown,
) -> Result<Exit, Error> {
    let state = StateDir::open(&settings.config.data_dir)?;
    // Damaged state the agent can rebuild is moved aside with one line, never a crash loop.
    let (identity, said) = state.identity()?;
    if let Some(line) = said {
        settings
            .log
            .line(format_args!("{line}; enrolling again with the token"));
    }
    let (config, said) = state.config()?;
    if let Some(line) = said {
        settings
            .log
            .line(format_args!("{line}; waiting for the factory's Config"));
    }
    // A stored Config this release refuses (written by another release) is not used either.
    let config = match config.map(|c| (c, check_config(&c))) {
        Some((c, Err(why))) => {
            settings.log.line(format_args!(
                "stored Config {:016x} not applied: {why}; waiting for the factory's Config",
                c.hash()
            ));
            None
        }
        other => other.map(|(c, _)| c),
    };
    let installation = state.installation(&clock::machine_ids(&settings.proc_root));
    let cap = config.map_or(crate::buffer::DEFAULT_CAP_BYTES, |c| c.buffer_cap_bytes);
    let (dir, data_dir, qlog) = (
        state.buffer_dir(),
        settings.config.data_dir.clone(),
        settings.log.clone(),
    );
    let queue = Arc::new(smol::unblock(move || Queue::open(&dir, &data_dir, cap, qlog)).await?);
    let shared = Arc::new(Shared::default());
    let (notify_tx, notify) = smol::channel::bounded(1);
    let sched = Scheduler::spawn(
        config,
        Parts {
            source,
            queue: queue.clone(),
            shared: shared.clone(),
            state: state.clone(),
            notify: notify_tx,
            flush_every: settings.timing.flush_every,
            log: settings.log.clone(),
            slow_disk: settings.timing.slow_disk,
        },
    )
    .map_err(|e| Error::Collector(format!("cannot start: {e}")))?;
    let mut a = Agent {
        settings,
        state,
        queue,
        shared,
        sched,
        notify,
        host,
        identity,
        config,
        installation,
        probe: false,
        last_inflight: Vec::new(),
        report: Report::applied(config),
        failure_told: 0,
    };
    let result = a.reconnect_loop(&shutdown).await;
    // Whatever happened, what was collected goes to disk before the process ends.
    let stopped = a.sched.stop().await;
    let exit = result?;
    stopped?;
    Ok(exit)
}

/// Waits for `fut` unless a stop is requested first (`None`).
async fn or_stop<T>(shutdown: &Shutdown, fut: impl Future<Output = T>) -> Option<T> {
    smol::future::or(async { Some(fut.await) }, async {
        shutdown.wait().await;
        None
    })
    .await
}

impl Agent {
    async fn reconnect_loop(&mut self, shutdown: &Shutdown) -> Result<Exit, Error> {
        let t = self.settings.timing;
        let mut backoff = Backoff::new(t.backoff_base, t.backoff_max);
        let mut down_since = Instant::now();
        let mut sessions = 0u64;
        loop {
            // A disk that failed for an unknown reason and could not be reopened: one line
            // naming the buffer and exit 1, rather than running on without a disk forever.
            if let Some(why) = self.queue.fatal() {
                return Err(Error::Fatal(why));
            }
            self.last_inflight.clear();
            let delay = match self.session(shutdown, &mut sessions).await? {
                Outcome::Shutdown => return Ok(Exit::Stopped),
                Outcome::Lost { established, why } => {
                    log(self).line(&why);
                    if established {
                        backoff.reset();
                        down_since = Instant::now();
                    }
                    backoff.next_delay()
                }
                Outcome::Rejected(r) => self.rejected(&r, &mut backoff).await?,
            };
            let give_up = self
                .config
                .map_or(Config::default().give_up_secs, |c| c.give_up_secs);
            let mut delay = delay;
            if give_up > 0 {
                let limit = Duration::from_secs(u64::from(give_up));
                let left = limit.saturating_sub(down_since.elapsed());
                if left.is_zero() {
                    log(self).line(format_args!(
                        "giving up: no session with the factory at {} for {}s (give_up_secs); {} buffered batches stay in {}",
                        self.settings.config.server,
                        give_up,
                        self.queue.stats().batches,
                        self.state.buffer_dir().display()
                    ));
                    return Ok(Exit::GaveUp);
                }
                // Wake at the give-up instant rather than sleeping past it.
                delay = delay.min(left);
            }
            if or_stop(shutdown, smol::Timer::after(delay)).await.is_none() {
                return Ok(Exit::Stopped);
            }
        }
    }

    /// Reports a refusal once, clearly, and picks how long to wait: a refusal that will repeat
    /// (bad token or secret, version) waits the longest delay so the agent does not hammer.
    async fn rejected(&mut self, r: &Reject, backoff: &mut Backoff) -> Result<Duration, Error> {
        let server = &self.settings.config.server;
        let what = match r.code {
            RejectCode::BadToken => "bad enrollment token (check `token` in the config file)",
            RejectCode::BadSecret => "bad client secret (identity in data_dir does not match)",
            RejectCode::UnknownClient => "unknown client id: enrolling again with the token",
            RejectCode::UnsupportedVersion => "unsupported protocol version",
            RejectCode::Malformed => "malformed message",
            RejectCode::TooLarge => "message too large",
            RejectCode::Busy => "factory busy",
            RejectCode::Replaced => "another connection with this client id replaced this one",
            RejectCode::ShuttingDown => "factory shutting down",
            RejectCode::TlsRequired => "the factory requires TLS (use a wss:// server URL)",
        };
        // The factory's own words only when they add something.
        let detail = if r.message.is_empty() || what.starts_with(r.message.as_str()) {
            String::new()
        } else {
            format!(" ({})", r.message)
        };
        log(self).line(format_args!(
            "factory {server} rejected this agent: {what}{detail}"
        ));
        if matches!(r.code, RejectCode::Malformed | RejectCode::TooLarge) {
            match (self.probe, self.last_inflight.as_slice()) {
                // Refused again with one batch in flight: that batch is the poison.
                (true, &[seq]) => {
                    let q = self.queue.clone();
                    smol::unblock(move || q.dead_letter(seq)).await;
                    self.probe = false;
                }
                _ => self.probe = true,
            }
        }
        Ok(match r.code {
            RejectCode::UnknownClient => {
                // The factory lost its inventory (or this is another site): the token re-enrolls.
                self.state.forget_identity()?;
                self.identity = None;
                backoff.next_delay()
            }
            RejectCode::Busy
            | RejectCode::ShuttingDown
            | RejectCode::Malformed
            | RejectCode::TooLarge => backoff.next_delay(),
            RejectCode::BadToken
            | RejectCode::BadSecret
            | RejectCode::UnsupportedVersion
            | RejectCode::TlsRequired
            | RejectCode::Replaced => backoff.long(),
        })
    }

    fn hello(&self) -> Hello {
        let c = &self.settings.config;
        let mut h = self.host.clone();
        h.protocol_version = PROTOCOL_VERSION;
        if let Some(name) = &c.hostname {
            h.hostname.clone_from(name);
        }
        if let Some(id) = &self.identity {
            h.client_id.clone_from(&id.client_id);
            h.secret.clone_from(&id.secret);
        }
        // Always sent: a factory that lost its inventory can then re-enroll a known client.
        h.token.clone_from(&c.token);
        h.region.clone_from(&c.region);
        h.zone.clone_from(&c.zone);
        h.agent_version = env!("CARGO_PKG_VERSION").to_string();
        h.agent_clock_ns = clock::now_ns();
        h.agent_boottime_ns = clock::boottime_ns();
        h.clock_sync = clock::clock_sync();
        h.boot_id = clock::boot_id().to_string();
        h.installation.clone_from(&self.installation);
        h.epoch = self.queue.epoch();
        h.buffer_state = self.queue.state();
        h.config_hash = self.report.hash;
        h.config_status = self.report.status;
        h.config_error.clone_from(&self.report.error);
        h
    }

    /// Applies `c`, or refuses it (the Config in force stays, on disk too) when
    /// [`check_config`] does. `Err`: refused and no Hello has said so yet; the caller ends the
    /// session so the next Hello carries the reason (once per refused Config: no loop).
    fn apply(&mut self, c: Config) -> Result<(), String> {
        if let Err(why) = check_config(&c) {
            let hash = c.hash();
            if self.report.hash != hash || self.report.status != ConfigStatus::Failed {
                log(self).line(format_args!(
                    "config {hash:016x} refused, keeping the one in force: {why}"
                ));
            }
            self.report = Report {
                hash,
                status: ConfigStatus::Failed,
                error: why.clone(),
            };
            return if self.failure_told == hash {
                Ok(())
            } else {
                Err(why)
            };
        }
        self.report = Report::applied(Some(c));
        // A later refusal of the same bad Config is news again.
        self.failure_told = 0;
        if self.config != Some(c) {
            log(self).line(format_args!(
                "config: push every {} ms, ping every {} ms, buffer cap {} bytes, give up after {} s",
                c.push_interval_ms, c.ping_interval_ms, c.buffer_cap_bytes, c.give_up_secs
            ));
            self.config = Some(c);
            self.sched.apply(c);
        }
        Ok(())
    }

    async fn send(&self, ws: &mut Ws, peer: SocketAddr, frame: Frame) -> Result<(), Lost> {
        match transport::with_timeout(self.settings.timing.connect_timeout, ws.send(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Lost::Ws(peer, e)),
            Err(_) => Err(Lost::Timeout(peer, "send")),
        }
    }

    async fn session(&mut self, shutdown: &Shutdown, sessions: &mut u64) -> Result<Outcome, Error> {
        let t = self.settings.timing;
        let limits = Limits {
            connect_timeout: t.connect_timeout,
            max_message: t.max_message,
        };
        let server = self.settings.config.server.clone();
        let (mut ws, peer) = match or_stop(shutdown, transport::connect(&server, limits)).await {
            None => return Ok(Outcome::Shutdown),
            Some(Err(e)) => return Ok(lost(false, Lost::Connect(e))),
            Some(Ok(c)) => c,
        };
        let hello = self.hello();
        let told = (hello.config_status == ConfigStatus::Failed).then_some(hello.config_hash);
        let hello = Frame::binary(autofact_fbs::encode(&Message::Hello(hello)));
        if let Err(e) = self.send(&mut ws, peer, hello).await {
            return Ok(lost(false, e));
        }
        if let Some(hash) = told {
            self.failure_told = hash;
        }
        // The answer to Hello decides everything else.
        let first = or_stop(
            shutdown,
            transport::with_timeout(t.connect_timeout, next_message(&mut ws, peer)),
        )
        .await;
        let welcome = match first {
            None => return self.close(ws, peer).await,
            Some(Err(_)) => return Ok(lost(false, Lost::Timeout(peer, "waiting for Welcome"))),
            Some(Ok(Err(e))) => return Ok(lost(false, e)),
            Some(Ok(Ok(Message::Welcome(w)))) => w,
            Some(Ok(Ok(Message::Reject(r)))) => return Ok(Outcome::Rejected(r)),
            Some(Ok(Ok(m))) => {
                let kind = autofact_fbs::codec::message_kind(&m);
                return Ok(lost(
                    false,
                    Lost::Protocol(peer, format!("sent {kind} before Welcome")),
                ));
            }
        };
        self.welcomed(&welcome, peer).await?;
        if *sessions > 0 {
            self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        *sessions += 1;
        if let Err(why) = self.apply(welcome.config) {
            return Ok(self.report_refusal(&mut ws, peer, why).await);
        }

        match self.established(&mut ws, peer, shutdown).await? {
            Outcome::Shutdown => self.close(ws, peer).await,
            other => Ok(other),
        }
    }

    async fn welcomed(&mut self, w: &autofact_fbs::Welcome, peer: SocketAddr) -> Result<(), Error> {
        if !w.secret.is_empty() {
            let id = Identity {
                client_id: w.client_id.clone(),
                secret: w.secret.clone(),
            };
            let state = self.state.clone();
            let stored = id.clone();
            // A read-only disk keeps the identity in memory only: enrolled again next start.
            if let Err(e) = smol::unblock(move || state.save_identity(&stored)).await {
                log(self).line(format_args!("{e} (kept in memory for this run)"));
            }
            let old = self.identity.replace(id);
            match old {
                Some(old) if old.client_id != w.client_id => log(self).line(format_args!(
                    "factory {peer} enrolled this installation as a new client {} (client {} is known there from another installation: a copied data dir or cloned SD card); buffered batches go out under the new id",
                    w.client_id, old.client_id
                )),
                _ => log(self).line(format_args!(
                    "enrolled with factory {peer} as client {}",
                    w.client_id
                )),
            }
        } else {
            log(self).line(format_args!(
                "welcome back from factory {peer}, client {}",
                w.client_id
            ));
        }
        Ok(())
    }

    /// Runs an established session until the link is lost, the factory refuses, or a stop is
    /// requested (`Outcome::Shutdown`, the websocket still open for the caller to close).
    async fn established(
        &mut self,
        ws: &mut Ws,
        peer: SocketAddr,
        shutdown: &Shutdown,
    ) -> Result<Outcome, Error> {
        let window = if self.probe {
            1
        } else {
            self.settings.timing.window.max(1)
        };
        let mut inflight: VecDeque<u64> = VecDeque::new();
        let outcome = self
            .established_inner(ws, peer, shutdown, window, &mut inflight)
            .await;
        self.last_inflight = inflight.into_iter().collect();
        outcome
    }

    async fn established_inner(
        &mut self,
        ws: &mut Ws,
        peer: SocketAddr,
        shutdown: &Shutdown,
        window: usize,
        inflight: &mut VecDeque<u64>,
    ) -> Result<Outcome, Error> {
        let mut sent_upto = 0u64;
        let mut last_tx = Instant::now();
        let mut last_rx = Instant::now();
        let mut last_ping = Instant::now();
        loop {
            // Fill the window, oldest first; a batch is made durable before it is first sent so
            // its seq can never be reused for other facts after a crash.
            if let Some(why) = self.queue.fatal() {
                return Err(Error::Fatal(why));
            }
            while inflight.len() < window {
                let queue = self.queue.clone();
                let room = window - inflight.len();
                let batches = smol::unblock(move || queue.window(sent_upto, room)).await;
                if batches.is_empty() {
                    break;
                }
                for (seq, bytes) in batches {
                    let queue = self.queue.clone();
                    smol::unblock(move || queue.ensure_durable(seq)).await;
                    let bytes = stamp(bytes, self.queue.state(), &self.report);
                    let sent = or_stop(shutdown, self.send(ws, peer, Frame::binary(bytes))).await;
                    match sent {
                        None => return Ok(Outcome::Shutdown),
                        Some(Err(e)) => return Ok(lost(true, e)),
                        Some(Ok(())) => {}
                    }
                    inflight.push_back(seq);
                    sent_upto = seq;
                    last_tx = Instant::now();
                }
            }

            // Keepalive: ping when we were quiet, or when the factory was; lost when it stayed
            // silent for twice the interval (a Pong or any other frame counts).
            let ping = self.config.map_or(0, |c| c.ping_interval_ms);
            let mut wake = Instant::now() + Duration::from_secs(3600);
            if ping > 0 {
                let ping = Duration::from_millis(u64::from(ping));
                let now = Instant::now();
                if now.duration_since(last_rx) >= 2 * ping {
                    return Ok(lost(true, Lost::Silent(peer, now.duration_since(last_rx))));
                }
                if now.duration_since(last_tx) >= ping
                    || (now.duration_since(last_rx) >= ping
                        && now.duration_since(last_ping) >= ping)
                {
                    if let Err(e) = self.send(ws, peer, Frame::Ping(Default::default())).await {
                        return Ok(lost(true, e));
                    }
                    last_tx = now;
                    last_ping = now;
                }
                wake = (last_tx + ping)
                    .min(last_rx + 2 * ping)
                    .min(last_rx.max(last_ping) + ping);
            }

            enum Event {
                Frame(Option<Result<Frame, async_tungstenite::tungstenite::Error>>),
                Appended,
                Tick,
                Stop,
            }
            let event = smol::future::or(
                smol::future::or(async { Event::Frame(ws.next().await) }, async {
                    // A closed notify channel means the collection thread ended; do not spin.
                    match self.notify.recv().await {
                        Ok(()) => Event::Appended,
                        Err(_) => std::future::pending().await,
                    }
                }),
                smol::future::or(
                    async {
                        smol::Timer::at(wake).await;
                        Event::Tick
                    },
                    async {
                        shutdown.wait().await;
                        Event::Stop
                    },
                ),
            )
            .await;
            match event {
                Event::Appended | Event::Tick => {}
                Event::Stop => return Ok(Outcome::Shutdown),
                Event::Frame(None) => return Ok(lost(true, Lost::Closed(peer, None))),
                Event::Frame(Some(Err(e))) => return Ok(lost(true, Lost::Ws(peer, e))),
                Event::Frame(Some(Ok(frame))) => {
                    last_rx = Instant::now();
                    let bytes = match frame {
                        Frame::Binary(b) => b,
                        Frame::Close(c) => return Ok(lost(true, Lost::Closed(peer, c))),
                        Frame::Text(_) => {
                            return Ok(lost(true, Lost::Protocol(peer, "sent a text frame".into())))
                        }
                        // Pongs are answered by tungstenite itself; any frame proves the link.
                        Frame::Ping(_) | Frame::Pong(_) | Frame::Frame(_) => continue,
                    };
                    match autofact_fbs::decode(&bytes) {
                        Err(e) => {
                            return Ok(lost(
                                true,
                                Lost::Protocol(peer, format!("undecodable message: {e}")),
                            ))
                        }
                        Ok(Message::Ack(ack)) => {
                            while inflight.front().is_some_and(|&s| s <= ack.seq) {
                                inflight.pop_front();
                                self.probe = false;
                            }
                            // Seqs are monotonic across this buffer's epochs: a cumulative ack
                            // by seq is right whatever epoch it names (0 from old factories).
                            let queue = self.queue.clone();
                            smol::unblock(move || queue.ack(ack.seq)).await;
                        }
                        Ok(Message::Config(c))
                        | Ok(Message::Welcome(autofact_fbs::Welcome { config: c, .. })) => {
                            if let Err(why) = self.apply(c) {
                                return Ok(self.report_refusal(ws, peer, why).await);
                            }
                        }
                        Ok(Message::Reject(r)) => return Ok(Outcome::Rejected(r)),
                        Ok(m) => {
                            let kind = autofact_fbs::codec::message_kind(&m);
                            return Ok(lost(
                                true,
                                Lost::Protocol(peer, format!("sent unexpected {kind}")),
                            ));
                        }
                    }
                }
            }
        }
    }

    /// A Config was refused and no Hello has said so: close this session normally so the next
    /// Hello (after the shortest backoff) carries the reason. Batches in flight are sent again
    /// and deduplicated by the factory.
    async fn report_refusal(&mut self, ws: &mut Ws, peer: SocketAddr, why: String) -> Outcome {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "reconnecting to report a refused Config".into(),
        };
        let _ = transport::with_timeout(self.settings.timing.close_timeout, ws.close(Some(frame)))
            .await;
        lost(
            true,
            Lost::Protocol(
                peer,
                format!(
                    "sent a Config this agent cannot apply ({why}): reconnecting once to report it"
                ),
            ),
        )
    }

    /// Stop requested: make the buffer durable, then close the websocket normally and wait
    /// briefly for the factory's close reply.
    async fn close(&mut self, mut ws: Ws, peer: SocketAddr) -> Result<Outcome, Error> {
        self.sched.stop().await?;
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "agent stopping".into(),
        };
        let timeout = self.settings.timing.close_timeout;
        let _ = transport::with_timeout(timeout, async {
            if ws.close(Some(frame)).await.is_ok() {
                while let Some(Ok(_)) = ws.next().await {}
            }
        })
        .await;
        log(self).line(format_args!(
            "stopped: buffer flushed, connection to {peer} closed"
        ));
        Ok(Outcome::Shutdown)
    }
}

/// Stamps a stored batch with the moment it is sent (wall clock, boottime) and the queue's
/// state, for the factory's clock estimate (issue 20) and its view of the client. A batch that
/// does not decode goes as stored (the factory refuses it; it ends in the dead-letter file).
fn stamp(bytes: Vec<u8>, state: autofact_fbs::BufferState, report: &Report) -> Vec<u8> {
    match autofact_fbs::decode(&bytes) {
        Ok(Message::Batch(mut b)) => {
            b.agent_clock_ns = clock::now_ns();
            b.agent_boottime_ns = clock::boottime_ns();
            b.buffer_state = state;
            // The Config in force when sent (not when collected): what the factory compares.
            b.config_hash = report.hash;
            b.config_status = report.status;
            autofact_fbs::encode(&Message::Batch(b))
        }
        _ => bytes,
    }
}

fn lost(established: bool, why: Lost) -> Outcome {
    Outcome::Lost { established, why }
}

/// The next protocol message, skipping control frames.
async fn next_message(ws: &mut Ws, peer: SocketAddr) -> Result<Message, Lost> {
    loop {
        match ws.next().await {
            None => return Err(Lost::Closed(peer, None)),
            Some(Err(e)) => return Err(Lost::Ws(peer, e)),
            Some(Ok(Frame::Binary(b))) => {
                return autofact_fbs::decode(&b)
                    .map_err(|e| Lost::Protocol(peer, format!("undecodable message: {e}")))
            }
            Some(Ok(Frame::Close(c))) => return Err(Lost::Closed(peer, c)),
            Some(Ok(Frame::Text(_))) => {
                return Err(Lost::Protocol(peer, "sent a text frame".into()))
            }
            Some(Ok(_)) => {}
        }
    }
}
