//! The registry of live sessions: who is connected now, the Config each was sent, the queue to
//! reach each one, and what their batches said beyond the inventory record. The server (reload
//! pushes Configs), sessions (register, observe) and the admin and fleet views (who is
//! connected) meet here without importing each other.

use autofact_fbs::{Batch, Config};
use smol::channel::{Receiver, Sender};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Messages to a live session from the rest of the factory.
#[derive(Debug)]
pub enum Control {
    /// The client's effective Config changed: send it.
    Config(Config),
    /// A newer connection with the same id took over: close this one.
    Replaced,
}

/// A live session as seen from outside: how to reach it and what Config it has.
struct Entry {
    /// Tells this connection from a newer one of the same client.
    conn: u64,
    region: String,
    hostname: String,
    config: Config,
    tx: Sender<Control>,
}

/// A session's place in the registry; [`Registry::leave`] gives it up.
pub struct Registration {
    id: String,
    conn: u64,
    /// Configs pushed by a reload and the takeover by a newer connection.
    pub control: Receiver<Control>,
}

/// One Config change pushed to a live session, for the reload's log line.
pub struct Pushed {
    /// The client.
    pub id: String,
    /// Its hostname.
    pub hostname: String,
    /// The Config it had.
    pub old: Config,
    /// The Config it is sent.
    pub new: Config,
    /// False when the session was already closing (nothing sent).
    pub queued: bool,
}

/// Live sessions by client id, and what their batches said.
#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, Entry>>,
    next_conn: AtomicU64,
    seen: Mutex<HashMap<String, Seen>>,
}

/// What a client's batches say beyond its inventory record, kept in memory per client id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// Batches the agent dropped (buffer cap), from its latest health fact.
    pub dropped: Option<u64>,
    /// Hash of the Config the agent reports it applied.
    pub applied_config_hash: Option<u64>,
}

impl Registry {
    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // Entries are replaced whole, so a poisoned lock holds nothing half-written.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn seen_map(&self) -> MutexGuard<'_, HashMap<String, Seen>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a session of client `id`, replacing (and telling) an older one. `config`
    /// computes the Config it is to be sent; it runs under the registry's lock so a reload
    /// that happens meanwhile cannot be missed. Returns the registration and that Config.
    pub fn join(
        &self,
        id: &str,
        region: &str,
        hostname: &str,
        config: impl FnOnce() -> Config,
    ) -> (Registration, Config) {
        let conn = self.next_conn.fetch_add(1, Ordering::Relaxed);
        // Unbounded: Configs are rare and Replaced comes once.
        let (tx, control) = smol::channel::unbounded();
        let mut sessions = self.sessions();
        let config = config();
        let entry = Entry {
            conn,
            region: region.to_string(),
            hostname: hostname.to_string(),
            config,
            tx,
        };
        if let Some(old) = sessions.insert(id.to_string(), entry) {
            let _ = old.tx.try_send(Control::Replaced);
        }
        let reg = Registration {
            id: id.to_string(),
            conn,
            control,
        };
        (reg, config)
    }

    /// Removes the session of `reg`, unless a newer one of the same client took its place.
    pub fn leave(&self, reg: Registration) {
        let mut sessions = self.sessions();
        if sessions.get(&reg.id).is_some_and(|e| e.conn == reg.conn) {
            sessions.remove(&reg.id);
        }
    }

    /// Ids of the clients connected now.
    pub fn connected(&self) -> Vec<String> {
        self.sessions().keys().cloned().collect()
    }

    /// Ids of the clients connected now with the hash of the Config each was sent.
    pub fn connected_configs(&self) -> Vec<(String, u64)> {
        self.sessions()
            .iter()
            .map(|(id, e)| (id.clone(), e.config.hash()))
            .collect()
    }

    /// Computes each live session's Config with `effective(region, id)` and queues the ones
    /// that changed to their sessions; returns what changed.
    pub fn push_configs(&self, effective: impl Fn(&str, &str) -> Config) -> Vec<Pushed> {
        let mut pushed = Vec::new();
        for (id, entry) in self.sessions().iter_mut() {
            let new = effective(&entry.region, id);
            if new == entry.config {
                continue;
            }
            let old = std::mem::replace(&mut entry.config, new);
            // Fails only when the session is already ending.
            let queued = entry.tx.try_send(Control::Config(new)).is_ok();
            pushed.push(Pushed {
                id: id.clone(),
                hostname: entry.hostname.clone(),
                old,
                new,
                queued,
            });
        }
        pushed
    }

    /// Notes what batch `b` of client `id` tells: its latest dropped-batch count and the hash
    /// of the Config it applied.
    pub fn observe(&self, id: &str, b: &Batch) {
        let dropped = b
            .snapshots
            .iter()
            .rev()
            .find_map(|s| s.health.as_ref().map(|h| h.dropped_batches));
        let applied = (b.config_hash != 0).then_some(b.config_hash);
        if dropped.is_none() && applied.is_none() {
            return;
        }
        let mut seen = self.seen_map();
        let e = seen.entry(id.to_string()).or_default();
        if dropped.is_some() {
            e.dropped = dropped;
        }
        if applied.is_some() {
            e.applied_config_hash = applied;
        }
    }

    /// What client `id`'s batches said since this factory started.
    pub fn seen(&self, id: &str) -> Seen {
        self.seen_map().get(id).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observed_keeps_the_latest_health_and_config_hash() {
        use autofact_fbs::{Health, Snapshot};
        let o = Registry::default();
        let snap = |dropped| Snapshot {
            health: Some(Health {
                dropped_batches: dropped,
                ..Default::default()
            }),
            ..Default::default()
        };
        let b = Batch {
            seq: 1,
            snapshots: vec![snap(1), Snapshot::default(), snap(4)],
            config_hash: 0x55,
            ..Default::default()
        };
        o.observe("a", &b);
        assert_eq!(
            o.seen("a"),
            Seen {
                dropped: Some(4),
                applied_config_hash: Some(0x55)
            }
        );
        // A batch without health or hash keeps what was known.
        o.observe("a", &Batch::default());
        assert_eq!(o.seen("a").dropped, Some(4));
        assert_eq!(o.seen("b"), Seen::default());
    }
}
