//! One agent connection, as a state machine: websocket upgrade -> Hello (within the handshake
//! timeout) -> Welcome or Reject -> Batches, each written to the sink and then acknowledged.
//!
//! Identity (DESIGN.md, Identity): a client is its id plus its installation. A known id with
//! its valid secret from a second installation (a cloned SD card, a restored backup) is
//! enrolled as a new client; the first installation keeps the id. A first-release agent sends
//! no installation and is served as before.
//!
//! Dedup is on (client, epoch, seq): the factory keeps the last acknowledged (epoch, seq) per
//! client; a batch of the same epoch at or below it was written already (its ack was lost) and
//! is acked again; a batch of another epoch (a new buffer) starts a new window and is written.
//! First-release agents send epoch 0: one window, seq-only dedup as before.
//!
//! A small window of batches may be in the sink at once (`max_inflight_batches`); acks go out
//! in arrival order as writes become durable, each naming its batch's epoch. When the window
//! is full the session stops reading from the socket, so a slow or failing sink pushes back on
//! agents (which keep their batches on disk) instead of growing the factory's memory.

use crate::clock::AgentClock;
use crate::context::Context;
use crate::inventory::ClientRecord;
use crate::log::unix_now_ns;
use crate::metrics::{Metrics, Reason};
use crate::refusal::{self, Refusal};
use crate::registry::{Control, Registration};
use crate::sink::{encode, WriteFuture};
use crate::transport::{self, Incoming, Ws};
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::Message as WsMessage;
use autofact_fbs::lineproto::Tags;
use autofact_fbs::{
    Ack, Batch, BufferState, ClockSync, Config, ConfigStatus, Hello, Message, RejectCode, Welcome,
    PROTOCOL_VERSION,
};
use smol::future::{or, pending};
use smol::{Async, Timer};
use std::collections::VecDeque;
use std::future::Future;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

fn refusal(reason: Reason, code: RejectCode, message: impl Into<String>) -> Refusal {
    Refusal::new(reason, code, message)
}

/// Records a refusal (counted and logged in one place) and sends it.
async fn refuse(ws: &mut Ws, peer: SocketAddr, metrics: &Metrics, r: Refusal) {
    refusal::record(metrics, peer, r.reason, &r.message);
    transport::refuse(ws, &r).await;
}

/// Maps a frame that is not a good envelope to its refusal; `Ok` carries the decoded message.
fn classify(frame: Incoming, max_bytes: usize, stage: &str) -> Result<Message, Option<Refusal>> {
    match frame {
        Incoming::Binary(b) => {
            let limits = autofact_fbs::codec::Limits {
                max_bytes,
                ..Default::default()
            };
            autofact_fbs::codec::decode_with(&b, &limits).map_err(|e| {
                Some(refusal(
                    Reason::Malformed,
                    RejectCode::Malformed,
                    format!("{stage}: {e}"),
                ))
            })
        }
        Incoming::Text => Err(Some(refusal(
            Reason::TextFrame,
            RejectCode::Malformed,
            "text frames are not part of the protocol; send binary flatbuffers",
        ))),
        Incoming::TooLarge => Err(Some(refusal(
            Reason::TooLarge,
            RejectCode::TooLarge,
            "message larger than the factory's max_message_bytes",
        ))),
        Incoming::Control | Incoming::Closed(_) => Err(None),
    }
}

/// Runs one connection to its end. `busy`: over the connection limit, refuse after upgrade.
pub(crate) async fn run(
    ctx: &Arc<Context>,
    stream: Async<TcpStream>,
    peer: SocketAddr,
    busy: bool,
) {
    // Everything before the Welcome runs as its own boxed future: its state (the TLS and
    // websocket handshakes, the Hello, an enrollment) is freed once the client is known, so
    // what a connection keeps for its life is only what serving its batches needs.
    if let Some(started) = Box::pin(start(ctx, stream, peer, busy)).await {
        serve(ctx, peer, started).await;
    }
}

/// A connection whose client is known, ready for its Welcome.
struct Started {
    ws: Ws,
    hello: Hello,
    /// When the Hello came, by the factory's clock.
    hello_at: i64,
    id: String,
    hostname: String,
    host_tag: String,
    /// Last acknowledged (epoch, seq) on record.
    last: (u64, u64),
    /// For a new client, its secret.
    secret: String,
    welcome_back: bool,
}

/// Upgrade, Hello and authentication; `None` when the connection was refused or closed.
async fn start(
    ctx: &Arc<Context>,
    stream: Async<TcpStream>,
    peer: SocketAddr,
    busy: bool,
) -> Option<Box<Started>> {
    let limits = ctx.config().limits;
    let deadline = Instant::now() + limits.handshake_timeout;
    let m = ctx.metrics();

    // The websocket upgrade and the Hello share one deadline: a client that connects and then
    // says nothing costs us a socket for at most the handshake timeout.
    let upgraded = or(
        async { Some(transport::accept(stream, &limits, ctx.tls()).await) },
        async {
            Timer::at(deadline).await;
            None
        },
    )
    .await;
    let mut ws = match upgraded {
        Some(Ok(transport::Accepted::Ws(ws))) => ws,
        Some(Ok(transport::Accepted::PlainWhereTlsRequired(mut ws))) => {
            let r = refusal(
                Reason::TlsRequired,
                RejectCode::TlsRequired,
                "this factory requires TLS: use a wss:// server URL and a ca_file",
            );
            refuse(&mut ws, peer, m, r).await;
            return None;
        }
        Some(Err(e)) => {
            refusal::record(m, peer, e.reason(), &e);
            return None;
        }
        None => {
            let why = format!("no websocket upgrade in {:?}", limits.handshake_timeout);
            refusal::record(m, peer, Reason::HandshakeTimeout, why);
            return None;
        }
    };
    if busy {
        let r = refusal(
            Reason::Busy,
            RejectCode::Busy,
            "connection limit reached, retry later",
        );
        refuse(&mut ws, peer, m, r).await;
        return None;
    }

    // Hello, skipping pings; noted with the factory's clock when it came.
    let (hello, hello_at) = loop {
        enum Ev {
            In(Incoming),
            Timeout,
            Stop,
        }
        let ev = or(
            async { Ev::In(transport::recv(&mut ws).await) },
            or(
                async {
                    Timer::at(deadline).await;
                    Ev::Timeout
                },
                async {
                    ctx.shutdown().begun().await;
                    Ev::Stop
                },
            ),
        )
        .await;
        let refused = match ev {
            Ev::In(Incoming::Control) => continue,
            Ev::In(Incoming::Closed(e)) => {
                crate::info_limited!(
                    "{peer} closed before Hello{}",
                    e.map(|e| format!(": {e}")).unwrap_or_default()
                );
                return None;
            }
            Ev::In(frame) => match classify(frame, limits.max_message_bytes, "expected Hello") {
                Ok(Message::Hello(h)) => break (h, unix_now_ns()),
                Ok(other) => refusal(
                    Reason::Malformed,
                    RejectCode::Malformed,
                    format!(
                        "expected Hello, got {}",
                        autofact_fbs::codec::message_kind(&other)
                    ),
                ),
                Err(Some(r)) => r,
                Err(None) => return None,
            },
            Ev::Timeout => {
                let why = format!("no Hello in {:?}", limits.handshake_timeout);
                refusal::record(m, peer, Reason::HandshakeTimeout, why);
                transport::close(&mut ws, CloseCode::Policy, "no Hello in time").await;
                return None;
            }
            Ev::Stop => Refusal::shutting_down(),
        };
        refuse(&mut ws, peer, m, refused).await;
        return None;
    };

    let (record, secret, welcome_back) = match authenticate(ctx, &hello, peer).await {
        Ok(x) => x,
        Err(Some(r)) => {
            refuse(&mut ws, peer, m, r).await;
            return None;
        }
        Err(None) => {
            transport::close(&mut ws, CloseCode::Error, "internal error").await;
            return None;
        }
    };
    Some(Box::new(Started {
        ws,
        hostname: record.name().to_string(),
        host_tag: record.tag().to_string(),
        last: (record.epoch, record.last_acked_seq),
        id: record.id,
        hello,
        hello_at,
        secret,
        welcome_back,
    }))
}

/// Welcome, then batches until the connection ends. `s` stays boxed: the task keeps one copy
/// of what the connection needs, not the moved-out parts beside it.
async fn serve(ctx: &Arc<Context>, peer: SocketAddr, mut s: Box<Started>) {
    let m = ctx.metrics();
    // Registered before the Welcome so a reload from now on reaches this session.
    let (registration, config) = ctx
        .registry()
        .join(&s.id, &s.hello.region, &s.hostname, || {
            ctx.config().effective(&s.hello.region, &s.id)
        });
    m.connected_clients.fetch_add(1, Ordering::Relaxed);
    let welcome = Message::Welcome(Welcome {
        client_id: s.id.clone(),
        secret: std::mem::take(&mut s.secret),
        welcome_back: s.welcome_back,
        config,
    });
    if Box::pin(transport::send(&mut s.ws, &welcome)).await.is_ok() {
        drop(welcome);
        let s = &mut *s;
        crate::info!(
            "{} {} ({}) from {peer}, agent {}, last acked epoch {:016x} seq {}{}",
            if s.welcome_back {
                "welcome back"
            } else {
                "enrolled"
            },
            s.hostname,
            s.id,
            s.hello.agent_version,
            s.last.0,
            s.last.1,
            if s.host_tag == s.hostname {
                String::new()
            } else {
                format!(", host tag {}", s.host_tag)
            }
        );
        let mut clock = AgentClock::new(ctx.config().clock, &s.hello.boot_id)
            .with_earlier(&ctx.boots().of(&s.id));
        clock.observe(
            s.hello.agent_clock_ns,
            s.hello.agent_boottime_ns,
            s.hello_at,
        );
        let mut live = Live {
            ctx,
            ws: &mut s.ws,
            peer,
            id: &s.id,
            hostname: &s.hostname,
            host_tag: &s.host_tag,
            hello: &s.hello,
            acked: s.last,
            accepted: s.last,
            inflight: Window::default(),
            agent_ping: config.ping_interval_ms,
            clock,
            meant: config,
            resent: Vec::new(),
        };
        live.batches(&registration).await;
        // A later connection in the same boot (a reconnect) can rebuild snapshots this one's
        // reference covers, even if it has too few messages of its own yet.
        if let Some(r) = live.clock.reference() {
            ctx.boots().remember(&s.id, r);
        }
    }
    m.connected_clients.fetch_sub(1, Ordering::Relaxed);
    ctx.registry().leave(registration);
}

/// Checks the Hello; returns the client's record, the secret to send (new clients only) and
/// whether it is a welcome back. `Err(None)`: an internal failure, already logged.
async fn authenticate(
    ctx: &Arc<Context>,
    h: &Hello,
    peer: SocketAddr,
) -> Result<(ClientRecord, String, bool), Option<Refusal>> {
    if h.protocol_version != PROTOCOL_VERSION {
        return Err(Some(refusal(
            Reason::UnsupportedVersion,
            RejectCode::UnsupportedVersion,
            format!(
                "factory speaks protocol version {PROTOCOL_VERSION}, agent sent {}",
                h.protocol_version
            ),
        )));
    }
    let now = crate::log::unix_now();
    let fleet_key = ctx.config().fleet_key.clone();
    if h.client_id.is_empty() {
        if !crate::ids::constant_time_eq(h.token.as_bytes(), ctx.token().as_bytes()) {
            return Err(Some(refusal(
                Reason::BadToken,
                RejectCode::BadToken,
                "wrong enrollment token",
            )));
        }
        let (rec, secret) = enroll(ctx, h, peer, now, "").await?;
        return Ok((rec, secret, false));
    }
    if !crate::ids::is_client_id(&h.client_id) {
        return Err(Some(refusal(
            Reason::UnknownClient,
            RejectCode::UnknownClient,
            "client id is not 32 lowercase hex digits",
        )));
    }
    let known = ctx.inventory().get(&h.client_id);
    let stored = known.as_ref().map(|r| r.secret_hash.as_str());
    let valid = crate::ids::secret_valid(stored, fleet_key.as_deref(), &h.client_id, &h.secret);
    let Some(rec) = known else {
        if valid {
            // A client of the fleet that this factory has not met (the balancer moved it): its
            // fleet secret proves it. Recorded here (fsync'd like an enrollment), welcomed back.
            let hash = crate::ids::secret_hash(&h.secret);
            let rec = store_new(ctx, h, peer, now, h.client_id.clone(), hash, "").await?;
            return Ok((rec, String::new(), true));
        }
        return Err(Some(refusal(
            Reason::UnknownClient,
            RejectCode::UnknownClient,
            format!(
                "unknown client id {}; enroll again with an empty id and the token",
                h.client_id
            ),
        )));
    };
    if !valid {
        return Err(Some(refusal(
            Reason::BadSecret,
            RejectCode::BadSecret,
            format!("wrong secret for client {}", h.client_id),
        )));
    }
    // The installation is checked and adopted under the inventory's lock, so two machines
    // presenting a record without one at the same moment cannot both become its owner.
    let mut other = None;
    let updated = ctx.inventory().update(&rec.id, |r| {
        if !h.installation.is_empty()
            && !r.installation.is_empty()
            && r.installation != h.installation
        {
            other = Some(r.installation.clone());
            return;
        }
        if r.installation.is_empty() {
            // A client enrolled before installations existed: the first one it presents.
            r.installation = h.installation.clone();
        }
        fill(r, h, peer, now);
    });
    let Some(owner) = other else {
        // Enrolled before the fleet key: hand it its fleet secret, so every factory knows it.
        let rekey = crate::ids::fleet_rekey(fleet_key.as_deref(), &h.client_id, &h.secret);
        return Ok((updated.unwrap_or(rec), rekey, true));
    };
    // A clone: the id belongs to the first installation. This one gets its own id, secret
    // and series; its buffered batches are written under the new id.
    if let Some(known) = ctx.inventory().clone_of(&rec.id, &h.installation) {
        // Enrolled before, but the Welcome never reached it (it still presents the original's
        // id): the same clone record with a new secret, not one more client.
        let secret = match crate::ids::enrollment_secret(fleet_key.as_deref(), &known.id) {
            Ok(s) => s,
            Err(e) => {
                crate::warn!("cannot re-key {} for {peer}: getrandom: {e}", known.id);
                return Err(None);
            }
        };
        let hash = crate::ids::secret_hash(&secret);
        return match ctx.inventory().rekey(&known.id, hash).await {
            Ok(rec) => {
                crate::info!(
                    "clone {} of {} presented the original's id again (its Welcome was lost): new secret",
                    rec.id,
                    rec.cloned_from
                );
                Ok((rec, secret, false))
            }
            Err(e) => Err(Some(refusal(
                Reason::Busy,
                RejectCode::Busy,
                format!(
                    "the factory cannot store a client's secret now (inventory: {e}); retry later"
                ),
            ))),
        };
    }
    let (new, secret) = enroll(ctx, h, peer, now, &rec.id).await?;
    ctx.metrics()
        .clones_enrolled
        .fetch_add(1, Ordering::Relaxed);
    crate::warn!(
        "client {} ({}) presented from a second installation {:?} (it belongs to {:?}): a cloned disk or a restored backup; enrolled as new client {} ({}) from {peer}",
        rec.id,
        rec.name(),
        h.installation,
        owner,
        new.id,
        new.tag()
    );
    Ok((new, secret, false))
}

/// Enrolls a new client (`cloned_from`: the id it was a clone of, or empty); returns its
/// record and secret. A record that cannot be made durable refuses the agent with Busy.
async fn enroll(
    ctx: &Arc<Context>,
    h: &Hello,
    peer: SocketAddr,
    now: u64,
    cloned_from: &str,
) -> Result<(ClientRecord, String), Option<Refusal>> {
    // With a fleet key the secret is derived from it, so every factory of the fleet verifies it.
    let fleet_key = ctx.config().fleet_key.clone();
    let (id, secret) = match crate::ids::new_identity(fleet_key.as_deref()) {
        Ok(x) => x,
        Err(e) => {
            crate::warn!("cannot enroll {peer}: getrandom: {e}");
            return Err(None);
        }
    };
    let hash = crate::ids::secret_hash(&secret);
    let rec = store_new(ctx, h, peer, now, id, hash, cloned_from).await?;
    ctx.metrics()
        .clients_enrolled
        .fetch_add(1, Ordering::Relaxed);
    Ok((rec, secret))
}

/// Records a client this factory has no record of (a new one, a clone, or a fleet client the
/// balancer moved here) and returns the record as stored, with the host tag the inventory gave
/// it. fsync'd before the Welcome: a client must never hold an id the factory forgot. A record
/// that cannot be made durable refuses the agent with Busy.
async fn store_new(
    ctx: &Arc<Context>,
    h: &Hello,
    peer: SocketAddr,
    now: u64,
    id: String,
    secret_hash: String,
    cloned_from: &str,
) -> Result<ClientRecord, Option<Refusal>> {
    let mut rec = ClientRecord {
        id,
        first_seen: now,
        secret_hash,
        installation: h.installation.clone(),
        cloned_from: cloned_from.to_string(),
        ..Default::default()
    };
    fill(&mut rec, h, peer, now);
    ctx.inventory().enroll(rec).await.map_err(|e| {
        // The rejection line (rate-limited) names the cause; the inventory warned once.
        Some(refusal(
            Reason::Busy,
            RejectCode::Busy,
            format!("the factory cannot store a new client now (inventory: {e}); retry later"),
        ))
    })
}

/// Copies what the Hello says about the machine into its record.
fn fill(r: &mut ClientRecord, h: &Hello, peer: SocketAddr, now: u64) {
    r.hostname = h.hostname.clone();
    r.region = h.region.clone();
    r.zone = h.zone.clone();
    r.arch = h.arch.clone();
    r.kernel = h.kernel.clone();
    r.os = h.os.clone();
    r.cpu_model = h.cpu_model.clone();
    r.mem_total = h.mem_total;
    r.agent_version = h.agent_version.clone();
    r.last_seen = now;
    r.last_address = peer.to_string();
    r.buffer_state = h.buffer_state.as_str().to_string();
    r.config_hash = h.config_hash;
    r.config_status = h.config_status.as_str().to_string();
    r.config_error = h.config_error.clone();
    r.clock_sync = h.clock_sync.as_str().to_string();
    r.boot_id = h.boot_id.clone();
}

/// What a batch says about its client, kept until its ack.
struct BatchInfo {
    epoch: u64,
    seq: u64,
    /// `buffered_batches` from the batch's latest health fact.
    backlog: Option<u64>,
    buffer_state: BufferState,
    config_hash: u64,
    config_status: ConfigStatus,
    /// From the batch's latest snapshot that says.
    clock_sync: ClockSync,
    boot_id: Option<String>,
    /// The agent's clock offset when the batch came, milliseconds.
    clock_offset_ms: Option<i64>,
    /// Snapshots whose time was rebuilt, and those that needed it but could not be.
    time_corrected: u64,
    time_uncorrectable: u64,
}

/// One batch handed to the sink.
struct Pending {
    info: BatchInfo,
    write: Option<WriteFuture>,
    result: Option<Result<(), String>>,
}

/// The batches of one session in the sink, oldest first. The writes are polled from the
/// session's own task (no task per write), all of them each time, so they progress together
/// while acks still come out in seq order.
#[derive(Default)]
struct Window {
    q: VecDeque<Pending>,
}

impl Window {
    fn len(&self) -> usize {
        self.q.len()
    }

    fn is_empty(&self) -> bool {
        self.q.is_empty()
    }

    /// `write: None` means nothing to write (no points): done at once.
    fn push(&mut self, info: BatchInfo, write: Option<WriteFuture>) {
        let result = if write.is_none() { Some(Ok(())) } else { None };
        // Grown one slot at a time (VecDeque's first step is 4): a session usually has one
        // batch in the sink, and the window is bounded by max_inflight_batches.
        if self.q.len() == self.q.capacity() {
            self.q.reserve_exact(1);
        }
        self.q.push_back(Pending {
            info,
            write,
            result,
        });
    }

    /// Resolves with the oldest batch once its write is done. Cancel-safe: results are kept
    /// in the window, and a batch leaves it only when this resolves.
    fn next_done(&mut self) -> impl Future<Output = (BatchInfo, Result<(), String>)> + '_ {
        std::future::poll_fn(move |cx| {
            for p in self.q.iter_mut() {
                if let Some(w) = &mut p.write {
                    if let Poll::Ready(r) = w.as_mut().poll(cx) {
                        p.result = Some(r.map_err(|e| e.to_string()));
                        p.write = None;
                    }
                }
            }
            if self.q.front().is_some_and(|p| p.result.is_some()) {
                if let Some(Pending {
                    info,
                    result: Some(r),
                    ..
                }) = self.q.pop_front()
                {
                    return Poll::Ready((info, r));
                }
            }
            Poll::Pending
        })
    }
}

/// A session past Welcome.
struct Live<'a> {
    ctx: &'a Arc<Context>,
    ws: &'a mut Ws,
    peer: SocketAddr,
    id: &'a str,
    hostname: &'a str,
    /// The `host` tag of its points (the hostname unless another client holds it).
    host_tag: &'a str,
    hello: &'a Hello,
    /// Last (epoch, seq) acknowledged (durable).
    acked: (u64, u64),
    /// Last (epoch, seq) handed to the sink.
    accepted: (u64, u64),
    /// Batches in the sink.
    inflight: Window,
    /// The agent's ping interval (ms) from its Config: it declares the link lost after twice
    /// that without a frame from us.
    agent_ping: u32,
    /// The agent's clock as this connection sees it (see [`crate::clock`]).
    clock: AgentClock,
    /// The Config this client should have now (Welcome's, then each pushed one).
    meant: Config,
    /// (reported hash, meant hash) pairs already answered with the meant Config on this
    /// connection: each difference is re-sent once, so an agent that keeps reporting another
    /// hash (an older release, a Config it refuses) cannot make a loop.
    resent: Vec<(u64, u64)>,
}

enum Ev {
    Done(BatchInfo, Result<(), String>),
    In(Incoming),
    Ctl(Option<Control>),
    Stop,
    Tick,
}

enum End {
    /// Close with a refusal.
    Refuse(Refusal),
    /// Close with this code (and count `reason` if given).
    Close(CloseCode, &'static str, Option<Reason>),
    /// The peer is gone: nothing to send.
    Gone,
}

impl Live<'_> {
    async fn batches(&mut self, registration: &Registration) {
        let limits = self.ctx.config().limits;
        let ctl_rx = &registration.control;
        let mut last_rx = Instant::now();
        let mut pinged = false;
        let mut stopping = false;
        let mut ctl_open = true;
        let mut replaced = false;
        let end = loop {
            let full = self.inflight.len() >= limits.max_inflight_batches;
            // While backpressured we answer nothing, so we must ping the agent ourselves within
            // its ping interval or it declares the link dead and reconnects.
            let mut tick_every = limits.idle_timeout / 4;
            if full && self.agent_ping > 0 {
                tick_every = tick_every.min(Duration::from_millis(u64::from(self.agent_ping) / 2));
            }
            let ev = {
                let inflight = &mut self.inflight;
                let ws = &mut *self.ws;
                let done = async {
                    let (info, r) = inflight.next_done().await;
                    Ev::Done(info, r)
                };
                // Not reading while the window is full is the backpressure; not reading while
                // stopping or replaced is the drain.
                let read = async {
                    if full || stopping || replaced {
                        pending().await
                    } else {
                        Ev::In(transport::recv(ws).await)
                    }
                };
                let ctl = async {
                    if ctl_open {
                        Ev::Ctl(ctl_rx.recv().await)
                    } else {
                        pending().await
                    }
                };
                let stop = async {
                    if stopping {
                        pending().await
                    } else {
                        self.ctx.shutdown().begun().await;
                        Ev::Stop
                    }
                };
                let tick = async {
                    Timer::after(tick_every).await;
                    Ev::Tick
                };
                or(done, or(ctl, or(stop, or(read, tick)))).await
            };
            match ev {
                Ev::Done(info, result) => {
                    if let Err(e) = result {
                        crate::warn!(
                            "sink refused batch {} of {} ({}): {e}",
                            info.seq,
                            self.hostname,
                            self.id
                        );
                        break End::Close(CloseCode::Away, "sink stopped", None);
                    }
                    // The ack goes out whatever the inventory's disk says: the data is in the
                    // sink; a record that cannot be written now is kept and retried.
                    self.acked = (info.epoch, info.seq);
                    self.record_ack(&info, true);
                    let ack = Ack {
                        seq: info.seq,
                        epoch: info.epoch,
                    };
                    if self.send(&Message::Ack(ack)).await.is_err() {
                        // The ack is lost with the connection; the agent re-sends, we dedup.
                        break End::Gone;
                    }
                    self.ctx.metrics().acks_sent.fetch_add(1, Ordering::Relaxed);
                    if (stopping || replaced) && self.inflight.is_empty() {
                        break self.drained_end(stopping);
                    }
                    last_rx = Instant::now();
                }
                Ev::In(Incoming::Control) => {
                    last_rx = Instant::now();
                    pinged = false;
                }
                Ev::In(Incoming::Closed(e)) => {
                    crate::info!(
                        "{} ({}) at {} disconnected{}",
                        self.hostname,
                        self.id,
                        self.peer,
                        e.map(|e| format!(": {e}")).unwrap_or_default()
                    );
                    Box::pin(self.finish_writes(false)).await;
                    break End::Gone;
                }
                Ev::In(frame) => {
                    last_rx = Instant::now();
                    pinged = false;
                    match classify(frame, limits.max_message_bytes, "bad message") {
                        Ok(Message::Batch(b)) => {
                            // Boxed, like the other rare or large steps below: the session's
                            // task keeps only the loop's own state between batches.
                            if let Err(r) = Box::pin(self.batch(b)).await {
                                break End::Refuse(r);
                            }
                        }
                        Ok(other) => {
                            break End::Refuse(refusal(
                                Reason::Malformed,
                                RejectCode::Malformed,
                                format!(
                                    "expected Batch, got {}",
                                    autofact_fbs::codec::message_kind(&other)
                                ),
                            ))
                        }
                        Err(Some(r)) => break End::Refuse(r),
                        Err(None) => break End::Gone,
                    }
                }
                Ev::Ctl(None) => ctl_open = false,
                Ev::Ctl(Some(Control::Config(c))) => {
                    self.agent_ping = c.ping_interval_ms;
                    // Batches already on the way still report the previous Config: not a
                    // difference to answer.
                    let pair = (self.meant.hash(), c.hash());
                    self.resent.push(pair);
                    self.meant = c;
                    if self.send(&Message::Config(c)).await.is_err() {
                        break End::Gone;
                    }
                }
                Ev::Ctl(Some(Control::Replaced)) => {
                    replaced = true;
                    if self.inflight.is_empty() {
                        break self.drained_end(stopping);
                    }
                }
                Ev::Stop => {
                    stopping = true;
                    if self.inflight.is_empty() {
                        break self.drained_end(stopping);
                    }
                }
                Ev::Tick => {
                    // Silence while we are not reading (backpressure, drain) is ours, not theirs.
                    if !self.inflight.is_empty() || stopping || replaced {
                        last_rx = Instant::now();
                        // Backpressure: not reading means the agent's pings go unanswered; a
                        // ping of ours shows the link is alive (issue 8, InfluxDB outage).
                        if full
                            && !stopping
                            && !replaced
                            && self
                                .ws
                                .send(WsMessage::Ping(Vec::new().into()))
                                .await
                                .is_err()
                        {
                            break End::Gone;
                        }
                        continue;
                    }
                    let idle = last_rx.elapsed();
                    if idle >= limits.idle_timeout {
                        break End::Close(
                            CloseCode::Away,
                            "idle timeout",
                            Some(Reason::IdleTimeout),
                        );
                    }
                    if idle >= limits.idle_timeout / 2 && !pinged {
                        pinged = true;
                        if self
                            .ws
                            .send(WsMessage::Ping(Vec::new().into()))
                            .await
                            .is_err()
                        {
                            break End::Gone;
                        }
                    }
                }
            }
        };
        let m = self.ctx.metrics();
        match end {
            End::Refuse(r) => {
                // Writes already handed to the sink still count: finish and record them.
                Box::pin(self.finish_writes(true)).await;
                Box::pin(refuse(self.ws, self.peer, m, r)).await;
            }
            End::Close(code, why, reason) => {
                let what = format!("{} ({}): {why}", self.hostname, self.id);
                match reason {
                    Some(reason) => refusal::record(m, self.peer, reason, what),
                    None => crate::info!("closing {what} at {}", self.peer),
                }
                Box::pin(transport::close(self.ws, code, why)).await;
            }
            End::Gone => {}
        }
    }

    fn drained_end(&self, stopping: bool) -> End {
        if stopping {
            End::Refuse(refusal(
                Reason::ShuttingDown,
                RejectCode::ShuttingDown,
                "factory shutting down",
            ))
        } else {
            End::Refuse(refusal(
                Reason::Replaced,
                RejectCode::Replaced,
                "a newer connection with this client id took over",
            ))
        }
    }

    /// Waits for the writes in flight and records what became durable; acks them too when the
    /// socket is still usable (`ack`), so the agent can drop them before it reconnects.
    async fn finish_writes(&mut self, ack: bool) {
        let mut ack = ack;
        while !self.inflight.is_empty() {
            let (info, result) = self.inflight.next_done().await;
            if result.is_err() {
                break;
            }
            self.acked = (info.epoch, info.seq);
            self.record_ack(&info, false);
            let msg = Message::Ack(Ack {
                seq: info.seq,
                epoch: info.epoch,
            });
            if ack && self.send(&msg).await.is_err() {
                ack = false;
            }
        }
    }

    /// Records a durable batch in the inventory: the last acked (epoch, seq) and what the
    /// batch said about the client. `seen`: also update last seen.
    fn record_ack(&self, info: &BatchInfo, seen: bool) {
        let now = crate::log::unix_now();
        self.ctx.inventory().update(self.id, |r| {
            if r.epoch == info.epoch {
                // Another session of this client may have acked further meanwhile.
                r.last_acked_seq = r.last_acked_seq.max(info.seq);
            } else {
                r.epoch = info.epoch;
                r.last_acked_seq = info.seq;
            }
            if seen {
                r.last_seen = now;
            }
            if info.backlog.is_some() {
                r.backlog = info.backlog;
            }
            r.buffer_state = info.buffer_state.as_str().to_string();
            // A first-release agent reports none of these: keep what its Hello said.
            if info.config_status != ConfigStatus::Unknown {
                if info.config_status == ConfigStatus::Applied {
                    r.config_error.clear();
                }
                r.config_status = info.config_status.as_str().to_string();
                r.config_hash = info.config_hash;
            }
            if info.clock_sync != ClockSync::Unknown {
                r.clock_sync = info.clock_sync.as_str().to_string();
            }
            if let Some(b) = &info.boot_id {
                r.boot_id.clone_from(b);
            }
            if info.clock_offset_ms.is_some() {
                r.clock_offset_ms = info.clock_offset_ms;
            }
            r.snapshots_time_corrected += info.time_corrected;
            r.snapshots_time_uncorrectable += info.time_uncorrectable;
        });
    }

    async fn send(&mut self, msg: &Message) -> Result<(), ()> {
        transport::send(self.ws, msg).await.map_err(|_| ())
    }

    /// Sends the meant Config again when the batch reports another one in force (applied, or
    /// refused), once per connection per (reported, meant) pair. A refusal of the meant Config
    /// itself is not answered (the same Config would be refused again), nor is a batch that
    /// reports nothing (a first-release agent). `Err`: the socket failed (the caller's next
    /// read sees it).
    async fn resend_config(&mut self, b: &Batch) -> Result<(), ()> {
        let meant = self.meant.hash();
        if b.config_status == ConfigStatus::Unknown || b.config_hash == meant {
            return Ok(());
        }
        let pair = (b.config_hash, meant);
        if self.resent.contains(&pair) {
            return Ok(());
        }
        // Bounded: an agent inventing hashes gets at most one Config per batch it sends.
        if self.resent.len() >= 16 {
            self.resent.remove(0);
        }
        self.resent.push(pair);
        crate::info!(
            "{} ({}) reports Config {:016x} {}, meant {meant:016x}: sending it again",
            self.hostname,
            self.id,
            b.config_hash,
            b.config_status.as_str()
        );
        self.ctx
            .metrics()
            .configs_resent
            .fetch_add(1, Ordering::Relaxed);
        let c = self.meant;
        self.send(&Message::Config(c)).await
    }

    /// One batch: dedup by (epoch, seq), encode, hand to the sink (or ack again if already
    /// durable).
    async fn batch(&mut self, mut b: Batch) -> Result<(), Refusal> {
        let now = unix_now_ns();
        self.clock
            .observe(b.agent_clock_ns, b.agent_boottime_ns, now);
        let m = self.ctx.metrics();
        m.batches_received.fetch_add(1, Ordering::Relaxed);
        self.ctx.registry().observe(self.id, &b);
        if self.resend_config(&b).await.is_err() {
            return Ok(());
        }
        if b.epoch == self.acked.0 && b.seq <= self.acked.1 {
            m.batches_deduplicated.fetch_add(1, Ordering::Relaxed);
            // Already durable: only the ack was lost. Ack again, write nothing.
            let ack = Message::Ack(Ack {
                seq: self.acked.1,
                epoch: self.acked.0,
            });
            let _ = self.send(&ack).await;
            return Ok(());
        }
        if b.epoch == self.accepted.0 && b.seq <= self.accepted.1 {
            // Being written right now; its ack is coming.
            m.batches_deduplicated.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if b.epoch != self.accepted.0 && self.accepted != (0, 0) {
            // A new buffer (moved aside, restored, another release): a new window, whatever
            // its seqs; at worst a batch is written twice, never dropped.
            m.epochs_started.fetch_add(1, Ordering::Relaxed);
            crate::info!(
                "{} ({}): new buffer epoch {:016x} at seq {} (last acked epoch {:016x} seq {})",
                self.hostname,
                self.id,
                b.epoch,
                b.seq,
                self.acked.0,
                self.acked.1
            );
        }
        let tags = Tags {
            host: self.host_tag,
            region: &self.hello.region,
            zone: &self.hello.zone,
            ..Default::default()
        };
        // Snapshots taken with a wrong clock get their time rebuilt (see crate::clock); those
        // that cannot be are tagged, or kept as dead letters when their time is implausible.
        let e = encode::batch(&mut b, &tags, &self.clock, now);
        if e.time_fixed() {
            m.snapshots_time_corrected
                .fetch_add(e.corrected, Ordering::Relaxed);
            m.snapshots_time_uncorrectable
                .fetch_add(e.uncorrectable, Ordering::Relaxed);
            m.snapshots_time_refused
                .fetch_add(e.out_of_window, Ordering::Relaxed);
            crate::info_limited!(
                "{} ({}): clock offset {} ms: {} snapshot time(s) rebuilt from boottime, {} written as they were (tagged clock=unverified), {} outside the sanity window kept as dead letters",
                self.hostname,
                self.id,
                self.clock.offset_ns().map_or("unknown".to_string(), |o| (o / 1_000_000).to_string()),
                e.corrected,
                e.uncorrectable,
                e.out_of_window,
            );
        }
        let backlog = b
            .snapshots
            .iter()
            .rev()
            .find_map(|s| s.health.as_ref().map(|h| h.buffered_batches));
        m.points_received
            .fetch_add((e.points + e.refused_points) as u64, Ordering::Relaxed);
        if crate::log::enabled(crate::log::INFO) {
            crate::log::batch_line(format_args!(
                "batch {} {} seq={} points={}",
                self.hostname, self.id, b.seq, e.points
            ));
        }
        if crate::log::enabled(crate::log::DEBUG) {
            crate::log::batch_text(&e.lines);
        }
        let sink = self.ctx.sink();
        let write = (e.points > 0).then(|| sink.write(self.id, e.lines, e.points));
        let keep = (!e.refused.is_empty()).then(|| {
            sink.keep_refused(
                self.id,
                "timestamp outside the sanity window (agent clock wrong, no reference for its boot)",
                e.refused,
            )
        });
        // Acknowledged once both are durable: the written points and the refused ones.
        let write = match (write, keep) {
            (Some(w), Some(k)) => Some(Box::pin(async move {
                w.await?;
                k.await
            }) as WriteFuture),
            (w, None) => w,
            (None, k) => k,
        };
        self.accepted = (b.epoch, b.seq);
        let latest = b.snapshots.last();
        let info = BatchInfo {
            epoch: b.epoch,
            seq: b.seq,
            backlog,
            buffer_state: b.buffer_state,
            config_hash: b.config_hash,
            config_status: b.config_status,
            clock_sync: latest.map_or(ClockSync::Unknown, |s| s.clock_sync),
            boot_id: latest
                .filter(|s| !s.boot_id.is_empty())
                .map(|s| s.boot_id.clone()),
            clock_offset_ms: self.clock.offset_ns().map(|o| o / 1_000_000),
            time_corrected: e.corrected,
            time_uncorrectable: e.uncorrectable + e.out_of_window,
        };
        self.inflight.push(info, write);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What each connection keeps for its life is mostly the session task's future: its size
    /// is printed (and bounded, so a change that makes it balloon is seen).
    #[test]
    fn a_session_task_stays_small() {
        fn returned<A, B, C, D, Fut: Future>(_: &impl Fn(A, B, C, D) -> Fut) -> usize {
            std::mem::size_of::<Fut>()
        }
        let run_size = returned(&|c: &'static Arc<Context>,
                                  s: Async<TcpStream>,
                                  p: SocketAddr,
                                  b: bool| { run(c, s, p, b) });
        println!("session task future: {run_size} bytes");
        let serve_size = returned(&|c: &'static Arc<Context>,
                                    p: SocketAddr,
                                    s: Box<Started>,
                                    _: ()| serve(c, p, s));
        println!("serve: {serve_size}");
        let batches_size = returned(&|l: &'static mut Live<'static>,
                                      r: &'static Registration,
                                      _: (),
                                      _: ()| l.batches(r));
        println!("batches: {batches_size}");
        // 6,128 bytes before the handshakes and the Welcome were boxed (debug build).
        assert!(run_size <= 3072, "session future is {run_size} bytes");
    }
}
