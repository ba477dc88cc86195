//! The registry of live sessions: who is connected now, the Config each was sent, the queue to
//! reach each one, and what their batches said beyond the inventory record. The server (reload
//! pushes Configs), sessions (register, observe) and the admin and fleet views (who is
//! connected) meet here without importing each other.

use autofact_fbs::{Batch, Config};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

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
    tx: Outbox,
}

/// A session's place in the registry; [`Registry::leave`] gives it up.
pub struct Registration {
    id: String,
    conn: u64,
    /// Configs pushed by a reload and the takeover by a newer connection.
    pub control: Inbox,
}

/// What is queued for one session: a mutex-guarded queue and the session's waker. (An async
/// channel per session is 700 bytes, cache-padded, which 10,000 sessions notice; these
/// messages are rare and have one reader.)
#[derive(Default)]
struct Mailbox {
    state: Mutex<MailboxState>,
}

#[derive(Default)]
struct MailboxState {
    queue: VecDeque<Control>,
    waker: Option<Waker>,
    /// The registry's side is gone (replaced or removed): nothing more will come.
    sender_gone: bool,
    /// The session's side is gone: nothing sent will be read.
    receiver_gone: bool,
}

impl Mailbox {
    fn state(&self) -> MutexGuard<'_, MailboxState> {
        // Each step leaves the state whole, so a poisoned lock holds nothing half-written.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The registry's end of a session's mailbox; dropping it ends the mailbox.
struct Outbox(Arc<Mailbox>);

impl Outbox {
    /// Queues `c`; false when the session no longer reads its mailbox.
    fn send(&self, c: Control) -> bool {
        let mut st = self.0.state();
        if st.receiver_gone {
            return false;
        }
        st.queue.push_back(c);
        if let Some(w) = st.waker.take() {
            w.wake();
        }
        true
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut st = self.0.state();
        st.sender_gone = true;
        if let Some(w) = st.waker.take() {
            w.wake();
        }
    }
}

/// The session's end of its mailbox.
pub struct Inbox(Arc<Mailbox>);

impl Inbox {
    /// The next message, in the order sent; None once the registry dropped this session's
    /// entry and everything queued before was read.
    pub async fn recv(&self) -> Option<Control> {
        std::future::poll_fn(|cx| {
            let mut st = self.0.state();
            if let Some(c) = st.queue.pop_front() {
                Poll::Ready(Some(c))
            } else if st.sender_gone {
                Poll::Ready(None)
            } else {
                if !st.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    st.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        })
        .await
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        let mut st = self.0.state();
        st.receiver_gone = true;
        st.queue.clear();
    }
}

/// A new mailbox's two ends.
fn mailbox() -> (Outbox, Inbox) {
    let m = Arc::new(Mailbox::default());
    (Outbox(m.clone()), Inbox(m))
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
        let (tx, control) = mailbox();
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
            old.tx.send(Control::Replaced);
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
            let queued = entry.tx.send(Control::Config(new));
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
    fn a_session_reads_its_messages_in_order_then_learns_it_was_replaced() {
        let r = Registry::default();
        let (first, _) = r.join("c1", "eu", "pi-1", Config::default);
        let changed = Config {
            push_interval_ms: 5_000,
            ..Config::default()
        };
        let pushed = r.push_configs(|_, _| changed);
        assert!(pushed.len() == 1 && pushed[0].queued);
        let (second, _) = r.join("c1", "eu", "pi-1", || changed);
        smol::block_on(async {
            assert!(matches!(first.control.recv().await, Some(Control::Config(c)) if c == changed));
            assert!(matches!(
                first.control.recv().await,
                Some(Control::Replaced)
            ));
            // The registry dropped the old entry: its mailbox ends instead of waiting forever.
            assert!(first.control.recv().await.is_none());
        });
        // The replaced session leaving does not remove the newer one.
        r.leave(first);
        assert_eq!(r.connected(), vec!["c1".to_string()]);
        // A session that is gone reads nothing: a push to it says so.
        let Registration { control, .. } = second;
        drop(control);
        let pushed = r.push_configs(|_, _| Config::default());
        assert!(pushed.len() == 1 && !pushed[0].queued);
    }

    #[test]
    fn a_waiting_session_wakes_when_a_config_is_pushed() {
        let r = std::sync::Arc::new(Registry::default());
        let (reg, _) = r.join("c1", "eu", "pi-1", Config::default);
        let pusher = r.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            pusher.push_configs(|_, _| Config {
                push_interval_ms: 2_000,
                ..Config::default()
            })
        });
        let got = smol::block_on(reg.control.recv());
        assert!(matches!(got, Some(Control::Config(c)) if c.push_interval_ms == 2_000));
        assert_eq!(t.join().expect("the pushing thread").len(), 1);
    }

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
