//! The fleet-wide inventory: each factory of a fleet (one with a `fleet_key`) writes its
//! connected clients into the store as the measurement `autofact_client`, so a view of the whole
//! fleet spans factories and survives any one of them (the store holds it, not a factory). A
//! factory without a `fleet_key` writes only the facts, as before (set a key to get the
//! measurement from a single factory too).
//!
//! One point per client, tagged `client_id`, `host`, `region`, `zone` (when set), `factory`
//! (this factory's `hostname:port`) and `agent_version`; fields `connected` (1 or 0),
//! `last_seen` (unix seconds), `backlog` and `dropped` (batches, from the client's latest health
//! fact, when known), `config_current` (1 when the Config the agent reports it applied is the one
//! this factory means it to have, 0 when not, absent while unknown), and as strings
//! `config_hash` (hex hash of the Config meant) and `applied_config_hash` (the agent's, when
//! known).
//!
//! Every value a fleet view needs is a number or a tag because VictoriaMetrics keeps only numbers
//! (it stores a string field as 0): the agent version is a tag (it changes rarely, so it adds a
//! series per upgrade, not per point), and `config_current` says what the two hashes would.
//!
//! When: within [`POLL`] of a client connecting, disconnecting or changing (host, region, zone,
//! agent version, either Config hash), and every [`REFRESH`] for every connected client. A
//! factory writes only its own connected clients (and the disconnect of one that leaves it),
//! never the others of its inventory: those may be connected to another factory now, and a
//! stale `connected=0` from here would contradict it.
//!
//! Reading it: a client's state is its latest point (`last()` grouped by `client_id`, whatever
//! the `factory` tag); a client whose latest point says connected but is older than two
//! refreshes lost its factory without a goodbye (SIGKILL, power loss): treat it as disconnected.
//!
//! The points go through the same sink as the facts (acknowledged when the store has them). When
//! the store is down the loop waits for its write like a session does, and catches up with the
//! state of that moment once it is back; the store misses no state, only the intermediate ones.

use crate::context::Context;
use autofact_fbs::lineproto::{write_int, write_key, write_measurement};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The measurement's name.
pub const MEASUREMENT: &str = "autofact_client";

/// How often connects, disconnects and changes are looked for.
pub const POLL: Duration = Duration::from_secs(1);

/// Every connected client is written at least this often.
pub const REFRESH: Duration = Duration::from_secs(60);

/// One client's `autofact_client` point, before its timestamp.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientPoint {
    /// `client_id` tag.
    pub id: String,
    /// `host` tag (the client id when the agent sent no hostname).
    pub host: String,
    /// `region` tag, left out when empty.
    pub region: String,
    /// `zone` tag, left out when empty.
    pub zone: String,
    /// Connected to this factory now.
    pub connected: bool,
    /// Last Hello or ack, unix seconds.
    pub last_seen: u64,
    /// Batches waiting on the agent, from its latest health fact.
    pub backlog: Option<u64>,
    /// Batches the agent dropped (buffer cap), from its latest health fact.
    pub dropped: Option<u64>,
    /// The agent's version.
    pub agent_version: String,
    /// Hash of the Config this factory means the client to have (0: not connected, unknown).
    pub config_hash: u64,
    /// Hash of the Config the agent reports it applied, when it said.
    pub applied_config_hash: Option<u64>,
    /// Agent wall clock minus the factory's, milliseconds, when known.
    pub clock_offset_ms: Option<i64>,
    /// Snapshots whose time the factory rebuilt, and those it could not (since enrollment).
    pub time_corrected: u64,
    /// See `time_corrected`.
    pub time_uncorrectable: u64,
}

impl ClientPoint {
    /// What makes a point worth writing before the next refresh.
    fn change_key(&self) -> (&str, &str, &str, bool, &str, u64, Option<u64>) {
        (
            &self.host,
            &self.region,
            &self.zone,
            self.connected,
            &self.agent_version,
            self.config_hash,
            self.applied_config_hash,
        )
    }

    /// Appends the point as one line of line protocol.
    pub fn write_line(&self, out: &mut String, factory: &str, time_ns: i64) {
        write_measurement(out, MEASUREMENT);
        // Tags in key order (what InfluxDB sorts them to anyway); empty values are left out,
        // since line protocol has no empty tag value.
        let host = if self.host.is_empty() {
            &self.id
        } else {
            &self.host
        };
        for (k, v) in [
            ("agent_version", self.agent_version.as_str()),
            ("client_id", self.id.as_str()),
            ("factory", factory),
            ("host", host.as_str()),
            ("region", self.region.as_str()),
            ("zone", self.zone.as_str()),
        ] {
            if !v.is_empty() {
                out.push(',');
                write_key(out, k);
                out.push('=');
                write_key(out, v);
            }
        }
        out.push_str(" connected=");
        write_int(out, u64::from(self.connected));
        out.push_str(",last_seen=");
        write_int(out, self.last_seen);
        if let Some(b) = self.backlog {
            out.push_str(",backlog=");
            write_int(out, b);
        }
        if let Some(d) = self.dropped {
            out.push_str(",dropped=");
            write_int(out, d);
        }
        if let (Some(applied), true) = (self.applied_config_hash, self.config_hash != 0) {
            out.push_str(",config_current=");
            write_int(out, u64::from(applied == self.config_hash));
        }
        if self.config_hash != 0 {
            let _ = write!(out, ",config_hash=\"{:016x}\"", self.config_hash);
        }
        if let Some(h) = self.applied_config_hash {
            let _ = write!(out, ",applied_config_hash=\"{h:016x}\"");
        }
        if let Some(o) = self.clock_offset_ms {
            let _ = write!(out, ",clock_offset_ms={o}i");
        }
        out.push_str(",time_corrected=");
        write_int(out, self.time_corrected);
        out.push_str(",time_uncorrectable=");
        write_int(out, self.time_uncorrectable);
        let _ = writeln!(out, " {time_ns}");
    }
}

/// What was last written per client, and when everything was last refreshed.
#[derive(Debug)]
pub struct Tracker {
    written: HashMap<String, ClientPoint>,
    last_refresh: Option<Instant>,
}

impl Default for Tracker {
    fn default() -> Tracker {
        Tracker::new()
    }
}

impl Tracker {
    /// Nothing written yet.
    pub fn new() -> Tracker {
        Tracker {
            written: HashMap::new(),
            last_refresh: None,
        }
    }

    /// The points to write now, given the clients connected now (`connected`, each with its
    /// current state): the new and changed ones and the disconnects, or all of them once
    /// `refresh` has passed since the last refresh. `disconnected(id)` gives the state of a
    /// client that left. Nothing is marked written: call [`Tracker::written`] once the store
    /// has the points.
    pub fn due(
        &self,
        now: Instant,
        refresh: Duration,
        connected: &[ClientPoint],
        disconnected: impl Fn(&ClientPoint) -> ClientPoint,
    ) -> Vec<ClientPoint> {
        let all = self
            .last_refresh
            .is_none_or(|t| now.duration_since(t) >= refresh);
        let mut out: Vec<ClientPoint> = connected
            .iter()
            .filter(|p| {
                all || self
                    .written
                    .get(&p.id)
                    .is_none_or(|w| w.change_key() != p.change_key())
            })
            .cloned()
            .collect();
        let live: std::collections::HashSet<&str> =
            connected.iter().map(|p| p.id.as_str()).collect();
        for (id, w) in &self.written {
            if w.connected && !live.contains(id.as_str()) {
                out.push(disconnected(w));
            }
        }
        out
    }

    /// Records `points` as in the store; `refreshed`: they were a full refresh made at `now`.
    pub fn written(&mut self, points: Vec<ClientPoint>, refreshed: bool, now: Instant) {
        if refreshed {
            self.last_refresh = Some(now);
        }
        for p in points {
            if p.connected {
                self.written.insert(p.id.clone(), p);
            } else {
                // Its disconnect is in the store; nothing more to say until it comes back.
                self.written.remove(&p.id);
            }
        }
    }

    /// Whether the next [`Tracker::due`] at `now` is a full refresh.
    pub fn refresh_due(&self, now: Instant, refresh: Duration) -> bool {
        self.last_refresh
            .is_none_or(|t| now.duration_since(t) >= refresh)
    }
}

/// `hostname:port` of this factory's agent listener: the `factory` tag.
pub fn factory_name(listen_port: u16) -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{listen_port}")
}

/// The clients connected to this factory, as points.
fn connected_points(ctx: &Context) -> Vec<ClientPoint> {
    // The registry gives who is connected and the Config each was sent; the inventory the
    // rest. Locks are taken one after the other, never nested.
    let live = ctx.registry().connected_configs();
    live.into_iter()
        .filter_map(|(id, config_hash)| {
            let r = ctx.inventory().get(&id)?;
            let seen = ctx.registry().seen(&id);
            Some(ClientPoint {
                host: r.hostname,
                region: r.region,
                zone: r.zone,
                connected: true,
                last_seen: r.last_seen,
                backlog: r.backlog,
                dropped: seen.dropped,
                agent_version: r.agent_version,
                config_hash,
                applied_config_hash: seen.applied_config_hash,
                clock_offset_ms: r.clock_offset_ms,
                time_corrected: r.snapshots_time_corrected,
                time_uncorrectable: r.snapshots_time_uncorrectable,
                id,
            })
        })
        .collect()
}

/// Writes `autofact_client` points into the sink until the factory stops (see the module doc).
pub(crate) async fn run(ctx: Arc<Context>, factory: String) {
    let work = async {
        let mut tracker = Tracker::new();
        loop {
            smol::Timer::after(POLL).await;
            // Looked up each round: a reload can add or remove the key.
            if ctx.config().fleet_key.is_none() {
                continue;
            }
            let now = Instant::now();
            let refreshed = tracker.refresh_due(now, REFRESH);
            let connected = connected_points(&ctx);
            let due = tracker.due(now, REFRESH, &connected, |w| {
                // Its record now (last seen, backlog as of the end of its session).
                let mut p = w.clone();
                if let Some(r) = ctx.inventory().get(&w.id) {
                    p.last_seen = r.last_seen;
                    p.backlog = r.backlog;
                }
                p.connected = false;
                p.config_hash = 0;
                p
            });
            if due.is_empty() {
                if refreshed {
                    tracker.written(Vec::new(), true, now);
                }
                continue;
            }
            let time_ns = crate::log::unix_now_ns();
            let mut lines = String::new();
            for p in &due {
                p.write_line(&mut lines, &factory, time_ns);
            }
            let n = due.len();
            // Refused inventory lines are dead-lettered under the pseudo-client `factory`.
            match ctx.sink().write("factory", lines, n).await {
                Ok(()) => tracker.written(due, refreshed, now),
                // Not marked written: the same state is due again next round. (Today only a sink
                // that has shut down answers an error, and then the stop signal ends this loop.)
                Err(e) => crate::info_limited!("fleet inventory: {n} point(s) not written: {e}"),
            }
        }
    };
    smol::future::or(work, ctx.shutdown().begun()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(id: &str, host: &str) -> ClientPoint {
        ClientPoint {
            id: id.into(),
            host: host.into(),
            region: "eu".into(),
            connected: true,
            last_seen: 1_700_000_000,
            agent_version: "0.2.0".into(),
            config_hash: 0xabc,
            ..Default::default()
        }
    }

    fn off(w: &ClientPoint) -> ClientPoint {
        ClientPoint {
            connected: false,
            ..w.clone()
        }
    }

    #[test]
    fn a_line_has_every_tag_and_field_and_escapes_them() {
        let mut p = point("0123456789abcdef0123456789abcdef", "pi 1,a=b");
        p.backlog = Some(3);
        p.dropped = Some(0);
        p.applied_config_hash = Some(0xabc);
        p.agent_version = "0.2.0 rc".into();
        p.clock_offset_ms = Some(-10_800_012);
        p.time_corrected = 5;
        p.time_uncorrectable = 1;
        let mut out = String::new();
        p.write_line(&mut out, "factory-a:8675", 42);
        assert_eq!(
            out,
            "autofact_client,agent_version=0.2.0\\ rc,client_id=0123456789abcdef0123456789abcdef,\
             factory=factory-a:8675,host=pi\\ 1\\,a\\=b,region=eu connected=1i,\
             last_seen=1700000000i,backlog=3i,dropped=0i,config_current=1i,\
             config_hash=\"0000000000000abc\",applied_config_hash=\"0000000000000abc\",\
             clock_offset_ms=-10800012i,time_corrected=5i,time_uncorrectable=1i 42\n"
        );
        // An agent on another Config than the one meant.
        p.applied_config_hash = Some(0xdef);
        let mut out = String::new();
        p.write_line(&mut out, "f:1", 1);
        assert!(out.contains(",config_current=0i,"), "{out}");
        // Unknown values are left out, and an empty host falls back to the id.
        let mut q = off(&point("ffffffffffffffffffffffffffffffff", ""));
        q.region.clear();
        q.config_hash = 0;
        let mut out = String::new();
        q.write_line(&mut out, "f:1", 7);
        assert_eq!(
            out,
            "autofact_client,agent_version=0.2.0,client_id=ffffffffffffffffffffffffffffffff,\
             factory=f:1,host=ffffffffffffffffffffffffffffffff connected=0i,\
             last_seen=1700000000i,time_corrected=0i,time_uncorrectable=0i 7\n"
        );
    }

    #[test]
    fn changes_and_disconnects_are_due_at_once_everything_at_each_refresh() {
        let t0 = Instant::now();
        let minute = Duration::from_secs(60);
        let mut t = Tracker::new();
        let (a, b) = (point("a", "host-a"), point("b", "host-b"));
        // The first round is a full refresh.
        let due = t.due(t0, minute, &[a.clone(), b.clone()], off);
        assert_eq!(due.len(), 2);
        assert!(t.refresh_due(t0, minute));
        t.written(due, true, t0);
        // Nothing changed: nothing due.
        let t1 = t0 + Duration::from_secs(1);
        assert!(t.due(t1, minute, &[a.clone(), b.clone()], off).is_empty());
        // A backlog change alone waits for the refresh; a new agent version does not.
        let mut a2 = a.clone();
        a2.backlog = Some(9);
        assert!(t.due(t1, minute, &[a2.clone(), b.clone()], off).is_empty());
        a2.agent_version = "0.2.1".into();
        let due = t.due(t1, minute, &[a2.clone(), b.clone()], off);
        assert_eq!(due, vec![a2.clone()]);
        t.written(due, false, t1);
        // b leaves: its disconnect is due, once.
        let due = t.due(t1, minute, &[a2.clone()], off);
        assert_eq!(due, vec![off(&b)]);
        t.written(due, false, t1);
        assert!(t.due(t1, minute, &[a2.clone()], off).is_empty());
        // A write that failed is not marked: the change stays due.
        let mut a3 = a2.clone();
        a3.region = "us".into();
        assert_eq!(t.due(t1, minute, &[a3.clone()], off), vec![a3.clone()]);
        // A minute after the last refresh, every connected client again.
        let t2 = t0 + minute;
        assert!(t.refresh_due(t2, minute));
        assert_eq!(t.due(t2, minute, &[a2.clone()], off), vec![a2]);
    }
}
