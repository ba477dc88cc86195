//! One agent connection, as a state machine: websocket upgrade -> Hello (within the handshake
//! timeout) -> Welcome or Reject -> Batches, each written to the sink and then acknowledged.
//!
//! A small window of batches may be in the sink at once (`max_inflight_batches`); acks go out
//! in seq order as writes become durable. When the window is full the session stops reading
//! from the socket, so a slow or failing sink pushes back on agents (which keep their batches
//! on disk) instead of growing the factory's memory.

use crate::inventory::ClientRecord;
use crate::metrics::Reason;
use crate::server::{SessionEntry, Shared, WriteFuture};
use crate::transport::{self, Incoming, Ws};
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::Message as WsMessage;
use autofact_fbs::lineproto::{write_snapshot, Tags};
use autofact_fbs::{Ack, Batch, Config, Hello, Message, RejectCode, Welcome, PROTOCOL_VERSION};
use smol::future::{or, pending};
use smol::{Async, Timer};
use std::collections::VecDeque;
use std::future::Future;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

/// Messages to a live session from the rest of the factory.
#[derive(Debug)]
pub(crate) enum Control {
    /// The client's effective Config changed: send it.
    Config(Config),
    /// A newer connection with the same id took over: close this one.
    Replaced,
}

/// A refusal decided before or during the session.
struct Refusal {
    reason: Reason,
    code: RejectCode,
    message: String,
}

fn refusal(reason: Reason, code: RejectCode, message: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        code,
        message: message.into(),
    }
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
    shared: &Arc<Shared>,
    stream: Async<TcpStream>,
    peer: SocketAddr,
    busy: bool,
) {
    let limits = shared.config().limits;
    let deadline = Instant::now() + limits.handshake_timeout;
    let m = &shared.metrics;

    // The websocket upgrade and the Hello share one deadline: a client that connects and then
    // says nothing costs us a socket for at most the handshake timeout.
    let upgraded = or(
        async {
            let tls = shared.tls.as_deref();
            Some(transport::accept(stream, &limits, tls, peer, m).await)
        },
        async {
            Timer::at(deadline).await;
            None
        },
    )
    .await;
    let mut ws = match upgraded {
        Some(Ok(ws)) => ws,
        Some(Err(e)) => {
            e.report(peer, m);
            return;
        }
        None => {
            m.reject(Reason::HandshakeTimeout);
            crate::info_limited!(
                "rejected {peer}: handshake_timeout (no websocket upgrade in {:?})",
                limits.handshake_timeout
            );
            return;
        }
    };
    if busy {
        transport::reject(
            &mut ws,
            peer,
            m,
            Reason::Busy,
            RejectCode::Busy,
            "connection limit reached, retry later",
        )
        .await;
        return;
    }

    // Hello, skipping pings.
    let hello = loop {
        enum Ev {
            In(Incoming),
            Timeout,
            Stop,
        }
        let stop_rx = shared.stop_rx.clone();
        let ev = or(
            async { Ev::In(transport::recv(&mut ws).await) },
            or(
                async {
                    Timer::at(deadline).await;
                    Ev::Timeout
                },
                async {
                    let _ = stop_rx.recv().await;
                    Ev::Stop
                },
            ),
        )
        .await;
        match ev {
            Ev::In(Incoming::Control) => continue,
            Ev::In(Incoming::Closed(e)) => {
                crate::info_limited!(
                    "{peer} closed before Hello{}",
                    e.map(|e| format!(": {e}")).unwrap_or_default()
                );
                return;
            }
            Ev::In(frame) => match classify(frame, limits.max_message_bytes, "expected Hello") {
                Ok(Message::Hello(h)) => break h,
                Ok(other) => {
                    let msg = format!(
                        "expected Hello, got {}",
                        autofact_fbs::codec::message_kind(&other)
                    );
                    transport::reject(
                        &mut ws,
                        peer,
                        m,
                        Reason::Malformed,
                        RejectCode::Malformed,
                        &msg,
                    )
                    .await;
                    return;
                }
                Err(Some(r)) => {
                    transport::reject(&mut ws, peer, m, r.reason, r.code, &r.message).await;
                    return;
                }
                Err(None) => return,
            },
            Ev::Timeout => {
                m.reject(Reason::HandshakeTimeout);
                crate::info_limited!(
                    "rejected {peer}: handshake_timeout (no Hello in {:?})",
                    limits.handshake_timeout
                );
                transport::close(&mut ws, CloseCode::Policy, "no Hello in time").await;
                return;
            }
            Ev::Stop => {
                transport::reject(
                    &mut ws,
                    peer,
                    m,
                    Reason::ShuttingDown,
                    RejectCode::ShuttingDown,
                    "factory shutting down",
                )
                .await;
                return;
            }
        }
    };

    let (record, secret, welcome_back) = match authenticate(shared, &hello, peer).await {
        Ok(x) => x,
        Err(Some(r)) => {
            transport::reject(&mut ws, peer, m, r.reason, r.code, &r.message).await;
            return;
        }
        Err(None) => {
            transport::close(&mut ws, CloseCode::Error, "internal error").await;
            return;
        }
    };
    let id = record.id.clone();
    let hostname = if hello.hostname.is_empty() {
        id.clone()
    } else {
        hello.hostname.clone()
    };

    // Register before the Welcome so a reload from now on reaches this session; the Config is
    // computed under the same lock so it cannot miss a reload that happens meanwhile.
    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let (ctl_tx, ctl_rx) = smol::channel::unbounded();
    let config = {
        let mut sessions = shared.sessions();
        let config = shared.config().effective(&hello.region, &id);
        let old = sessions.insert(
            id.clone(),
            SessionEntry {
                conn,
                region: hello.region.clone(),
                hostname: hostname.clone(),
                config,
                tx: ctl_tx,
            },
        );
        if let Some(old) = old {
            let _ = old.tx.try_send(Control::Replaced);
        }
        config
    };
    m.connected_clients.fetch_add(1, Ordering::Relaxed);
    let welcome = Message::Welcome(Welcome {
        client_id: id.clone(),
        secret,
        welcome_back,
        config,
    });
    if transport::send(&mut ws, &welcome).await.is_ok() {
        crate::info!(
            "{} {hostname} ({id}) from {peer}, agent {}, last acked seq {}",
            if welcome_back {
                "welcome back"
            } else {
                "enrolled"
            },
            hello.agent_version,
            record.last_acked_seq
        );
        let mut live = Live {
            shared,
            ws: &mut ws,
            peer,
            id: &id,
            hostname: &hostname,
            hello: &hello,
            acked: record.last_acked_seq,
            accepted: record.last_acked_seq,
            inflight: Window::default(),
            agent_ping: config.ping_interval_ms,
        };
        live.batches(ctl_rx).await;
    }
    m.connected_clients.fetch_sub(1, Ordering::Relaxed);
    let mut sessions = shared.sessions();
    if sessions.get(&id).is_some_and(|e| e.conn == conn) {
        sessions.remove(&id);
    }
}

/// Checks the Hello; returns the client's record, the secret to send (new clients only) and
/// whether it is a welcome back. `Err(None)`: an internal failure, already logged.
async fn authenticate(
    shared: &Arc<Shared>,
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
    if h.client_id.is_empty() {
        if !crate::ids::constant_time_eq(h.token.as_bytes(), shared.token().as_bytes()) {
            return Err(Some(refusal(
                Reason::BadToken,
                RejectCode::BadToken,
                "wrong enrollment token",
            )));
        }
        let (id, secret) = match (crate::ids::new_client_id(), crate::ids::new_secret()) {
            (Ok(i), Ok(s)) => (i, s),
            (Err(e), _) | (_, Err(e)) => {
                crate::warn!("cannot enroll {peer}: /dev/urandom: {e}");
                return Err(None);
            }
        };
        let mut rec = ClientRecord {
            id,
            first_seen: now,
            secret_hash: crate::ids::secret_hash(&secret),
            ..Default::default()
        };
        fill(&mut rec, h, peer, now);
        // fsync'd before the Welcome: a client must never hold an id the factory forgot.
        let inv = shared.clone();
        let r = rec.clone();
        if let Err(e) = smol::unblock(move || inv.inventory.enroll(r)).await {
            crate::warn!("cannot enroll {peer}: {e}");
            return Err(None);
        }
        shared
            .metrics
            .clients_enrolled
            .fetch_add(1, Ordering::Relaxed);
        return Ok((rec, secret, false));
    }
    if !crate::ids::is_client_id(&h.client_id) {
        return Err(Some(refusal(
            Reason::UnknownClient,
            RejectCode::UnknownClient,
            "client id is not 32 lowercase hex digits",
        )));
    }
    let Some(rec) = shared.inventory.get(&h.client_id) else {
        return Err(Some(refusal(
            Reason::UnknownClient,
            RejectCode::UnknownClient,
            format!(
                "unknown client id {}; enroll again with an empty id and the token",
                h.client_id
            ),
        )));
    };
    let presented = crate::ids::secret_hash(&h.secret);
    if !crate::ids::constant_time_eq(presented.as_bytes(), rec.secret_hash.as_bytes()) {
        return Err(Some(refusal(
            Reason::BadSecret,
            RejectCode::BadSecret,
            format!("wrong secret for client {}", h.client_id),
        )));
    }
    match shared.inventory.update(&rec.id, |r| fill(r, h, peer, now)) {
        Ok(Some(rec)) => Ok((rec, String::new(), true)),
        Ok(None) => Ok((rec, String::new(), true)),
        Err(e) => {
            crate::warn!("inventory update for {}: {e}", rec.id);
            Err(None)
        }
    }
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
}

/// One batch handed to the sink.
struct Pending {
    seq: u64,
    /// `buffered_batches` from the batch's latest health fact.
    backlog: Option<u64>,
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
    fn push(&mut self, seq: u64, backlog: Option<u64>, write: Option<WriteFuture>) {
        let result = if write.is_none() { Some(Ok(())) } else { None };
        self.q.push_back(Pending {
            seq,
            backlog,
            write,
            result,
        });
    }

    /// Resolves with the oldest batch once its write is done. Cancel-safe: results are kept
    /// in the window, and a batch leaves it only when this resolves.
    fn next_done(&mut self) -> impl Future<Output = (u64, Option<u64>, Result<(), String>)> + '_ {
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
                    seq,
                    backlog,
                    result: Some(r),
                    ..
                }) = self.q.pop_front()
                {
                    return Poll::Ready((seq, backlog, r));
                }
            }
            Poll::Pending
        })
    }
}

/// A session past Welcome.
struct Live<'a> {
    shared: &'a Arc<Shared>,
    ws: &'a mut Ws,
    peer: SocketAddr,
    id: &'a str,
    hostname: &'a str,
    hello: &'a Hello,
    /// Highest seq acknowledged (durable).
    acked: u64,
    /// Highest seq handed to the sink.
    accepted: u64,
    /// Batches in the sink.
    inflight: Window,
    /// The agent's ping interval (ms) from its Config: it declares the link lost after twice
    /// that without a frame from us.
    agent_ping: u32,
}

enum Ev {
    Done(u64, Option<u64>, Result<(), String>),
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
    async fn batches(&mut self, ctl_rx: smol::channel::Receiver<Control>) {
        let limits = self.shared.config().limits;
        let stop_rx = self.shared.stop_rx.clone();
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
                    let (seq, backlog, r) = inflight.next_done().await;
                    Ev::Done(seq, backlog, r)
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
                        Ev::Ctl(ctl_rx.recv().await.ok())
                    } else {
                        pending().await
                    }
                };
                let stop = async {
                    if stopping {
                        pending().await
                    } else {
                        let _ = stop_rx.recv().await;
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
                Ev::Done(seq, backlog, result) => {
                    if let Err(e) = result {
                        crate::warn!(
                            "sink refused batch {seq} of {} ({}): {e}",
                            self.hostname,
                            self.id
                        );
                        break End::Close(CloseCode::Away, "sink stopped", None);
                    }
                    self.acked = seq;
                    let now = crate::log::unix_now();
                    let r = self.shared.inventory.update(self.id, |r| {
                        r.last_acked_seq = r.last_acked_seq.max(seq);
                        r.last_seen = now;
                        if backlog.is_some() {
                            r.backlog = backlog;
                        }
                    });
                    if let Err(e) = r {
                        crate::warn!("inventory: {e}");
                    }
                    if self
                        .send(&Message::Ack(Ack { seq, epoch: 0 }))
                        .await
                        .is_err()
                    {
                        // The ack is lost with the connection; the agent re-sends, we dedup.
                        break End::Gone;
                    }
                    self.shared
                        .metrics
                        .acks_sent
                        .fetch_add(1, Ordering::Relaxed);
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
                    self.finish_writes(false).await;
                    break End::Gone;
                }
                Ev::In(frame) => {
                    last_rx = Instant::now();
                    pinged = false;
                    match classify(frame, limits.max_message_bytes, "bad message") {
                        Ok(Message::Batch(b)) => {
                            if let Err(r) = self.batch(b).await {
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
        let m = &self.shared.metrics;
        match end {
            End::Refuse(r) => {
                // Writes already handed to the sink still count: finish and record them.
                self.finish_writes(true).await;
                transport::reject(self.ws, self.peer, m, r.reason, r.code, &r.message).await;
            }
            End::Close(code, why, reason) => {
                if let Some(reason) = reason {
                    m.reject(reason);
                }
                crate::info!(
                    "closing {} ({}) at {}: {why}",
                    self.hostname,
                    self.id,
                    self.peer
                );
                transport::close(self.ws, code, why).await;
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
            let (seq, backlog, result) = self.inflight.next_done().await;
            if result.is_err() {
                break;
            }
            let r = self.shared.inventory.update(self.id, |r| {
                r.last_acked_seq = r.last_acked_seq.max(seq);
                if backlog.is_some() {
                    r.backlog = backlog;
                }
            });
            if let Err(e) = r {
                crate::warn!("inventory: {e}");
            }
            if ack
                && self
                    .send(&Message::Ack(Ack { seq, epoch: 0 }))
                    .await
                    .is_err()
            {
                ack = false;
            }
        }
    }

    async fn send(&mut self, msg: &Message) -> Result<(), ()> {
        transport::send(self.ws, msg).await.map_err(|_| ())
    }

    /// One batch: dedup by seq, encode, hand to the sink (or ack again if already durable).
    async fn batch(&mut self, b: Batch) -> Result<(), Refusal> {
        let m = &self.shared.metrics;
        m.batches_received.fetch_add(1, Ordering::Relaxed);
        if b.seq <= self.acked {
            m.batches_deduplicated.fetch_add(1, Ordering::Relaxed);
            // Already durable: only the ack was lost. Ack again, write nothing.
            let ack = Message::Ack(Ack {
                seq: self.acked,
                epoch: 0,
            });
            let _ = self.send(&ack).await;
            return Ok(());
        }
        if b.seq <= self.accepted {
            // Being written right now; its ack is coming.
            m.batches_deduplicated.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let tags = Tags {
            host: self.hostname,
            region: &self.hello.region,
            zone: &self.hello.zone,
        };
        let mut lines = String::new();
        let mut points = 0;
        for s in &b.snapshots {
            points += write_snapshot(&mut lines, &tags, s);
        }
        let backlog = b
            .snapshots
            .iter()
            .rev()
            .find_map(|s| s.health.map(|h| h.buffered_batches));
        m.points_received
            .fetch_add(points as u64, Ordering::Relaxed);
        if crate::log::enabled(crate::log::INFO) {
            println!(
                "batch {} {} seq={} points={points}",
                self.hostname, self.id, b.seq
            );
        }
        if crate::log::enabled(crate::log::DEBUG) {
            print!("{lines}");
        }
        let write = (points > 0).then(|| self.shared.sink.write(lines, points));
        self.accepted = b.seq;
        self.inflight.push(b.seq, backlog, write);
        Ok(())
    }
}
