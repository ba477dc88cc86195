//! The client inventory: one fjall keyspace `clients`, key = client id (32 hex digits), value =
//! the record as nanoserde JSON. Kept in memory too (a fleet is thousands of small records) so
//! reads never touch disk; every change is written through.
//!
//! Durability: an enrollment is fsync'd before the Welcome goes out (a lost record would lock
//! the client out for good); when that cannot be done the enrollment fails and the session
//! refuses the agent with Busy, which it retries. Other updates (last seen, last acked epoch
//! and seq, hostname) go to fjall's journal without an fsync; losing the last few after a crash
//! only means a batch may be written twice, which the design allows.
//!
//! A failing disk (full, read-only, I/O errors): fjall poisons itself after a failed write, so
//! the store is dropped at the first error and the changed records are kept in memory as
//! *unsaved*. [`Inventory::retry`] (run every few seconds by the server, and before every
//! enrollment) reopens the store and writes them; no restart is needed once space is back.
//! Updates never fail: the memory copy is the truth while the disk is away. Warnings about it
//! are rate-limited (one a minute, with the count of the ones left out).
//!
//! Host tags: every client's points carry `host` = its hostname, unless another client already
//! holds that hostname; then its tag is `hostname~<first 8 hex digits of its id>`. The tag is
//! stored in the record, so it is stable across restarts and reconnects, and the first holder
//! keeps the plain name (Telegraf dashboards keep working for unique hostnames).

// nanoserde's DeJson derive expands to `match .. { Some(t) => t, None => return .. }`.
#![allow(clippy::question_mark)]

use crate::error::Error;
use crate::metrics::Metrics;
use nanoserde::{DeJson, SerJson};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What the factory knows about one client.
#[derive(Debug, Clone, Default, PartialEq, SerJson, DeJson)]
#[nserde(default)]
pub struct ClientRecord {
    /// 32 hex digits.
    pub id: String,
    /// Display name.
    pub hostname: String,
    /// Region tag.
    pub region: String,
    /// Zone tag.
    pub zone: String,
    /// uname -m.
    pub arch: String,
    /// uname -r.
    pub kernel: String,
    /// OS pretty name.
    pub os: String,
    /// CPU model / board.
    pub cpu_model: String,
    /// Total memory, bytes.
    pub mem_total: u64,
    /// The agent's version.
    pub agent_version: String,
    /// Enrollment time, unix seconds.
    pub first_seen: u64,
    /// Last Hello or batch, unix seconds.
    pub last_seen: u64,
    /// Peer address of the last connection.
    pub last_address: String,
    /// Highest acknowledged batch seq within [`ClientRecord::epoch`].
    pub last_acked_seq: u64,
    /// `buffered_batches` from the client's latest health fact, if any.
    pub backlog: Option<u64>,
    /// Hex SHA-256 of the client's secret.
    pub secret_hash: String,
    /// The installation (instance nonce) that holds this id; empty for a first-release agent,
    /// or a record from before this field until its agent presents one.
    pub installation: String,
    /// The buffer epoch of `last_acked_seq`; 0 for first-release agents.
    pub epoch: u64,
    /// The `host` tag of its points; empty in records from before host tags (= hostname).
    pub host_tag: String,
    /// Where the agent keeps unacknowledged batches (`disk`, `disk_full`, ...), as last told.
    pub buffer_state: String,
    /// The id this client was enrolled from when it was a clone; empty otherwise.
    pub cloned_from: String,
    /// `Config::hash` of the Config the agent last said it applied; 0 = not reported.
    pub config_hash: u64,
    /// `applied`, `failed` or `unknown` (a first-release agent), as last told.
    pub config_status: String,
    /// Why the agent could not apply its last Config (from its Hello); empty when it could.
    pub config_error: String,
    /// Whether the agent's clock was synchronised: `synced`, `unsynced`, `unknown`.
    pub clock_sync: String,
    /// The boot the agent last reported (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    /// Agent wall clock minus the factory's, milliseconds, as last estimated; `None` = unknown.
    pub clock_offset_ms: Option<i64>,
    /// Snapshots whose time the factory rebuilt (the agent's clock was wrong).
    pub snapshots_time_corrected: u64,
    /// Snapshots that needed it but could not be rebuilt (written tagged, or dead-lettered).
    pub snapshots_time_uncorrectable: u64,
}

impl ClientRecord {
    /// The hostname, or the id when the agent sent none.
    pub fn name(&self) -> &str {
        if self.hostname.is_empty() {
            &self.id
        } else {
            &self.hostname
        }
    }

    /// The `host` tag its points carry.
    pub fn tag(&self) -> &str {
        if self.host_tag.is_empty() {
            self.name()
        } else {
            &self.host_tag
        }
    }
}

/// The open fjall store.
struct Store {
    db: fjall::Database,
    clients: fjall::Keyspace,
}

/// Everything behind the inventory's lock.
struct State {
    cache: HashMap<String, ClientRecord>,
    /// `None` after a failure, until [`Inventory::retry`] reopens it.
    store: Option<Store>,
    /// Ids whose record (or, when no longer in the cache, whose removal) is not on disk.
    unsaved: BTreeSet<String>,
    /// The last store error, for messages while the store is closed.
    last_error: String,
    /// Failed writes since the store last worked, for the "writable again" line.
    failures: u64,
    /// A failure warning was printed since the last "writable again" line: a disk flapping
    /// between full and not-quite-full prints two lines a minute, not two per retry.
    announced: bool,
}

/// The inventory store.
pub struct Inventory {
    path: PathBuf,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// One reopen at a time.
    reopening: Mutex<()>,
    warnings: Quiet,
}

/// At most one warning a minute; the next one says how many were left out. Local to the
/// inventory: a failing disk fails every ack's update, and one line a minute says it all.
struct Quiet {
    last: AtomicU64,
    left_out: AtomicU64,
}

impl Quiet {
    const EVERY_SECS: u64 = 60;

    fn new() -> Quiet {
        Quiet {
            last: AtomicU64::new(0),
            left_out: AtomicU64::new(0),
        }
    }

    /// At unix second `now`: `Some(left out since the last one)` when a line may be printed.
    fn admit(&self, now: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        let open = last == 0 || now >= last + Self::EVERY_SECS;
        if open
            && self
                .last
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.left_out.swap(0, Ordering::Relaxed));
        }
        self.left_out.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Prints `msg` unless a warning was printed less than a minute ago; true if printed.
    fn warn(&self, msg: std::fmt::Arguments<'_>) -> bool {
        match self.admit(crate::log::unix_now()) {
            None => false,
            Some(0) => {
                crate::warn!("{msg}");
                true
            }
            Some(n) => {
                crate::warn!("{msg} ({n} more inventory warnings in the last minute left out)");
                true
            }
        }
    }
}

/// True when `e` is the disk refusing writes (full, read-only, over quota): it can come back.
fn disk_refuses(e: &fjall::Error) -> bool {
    use nix::errno::Errno;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            let refusing = [Errno::ENOSPC, Errno::EROFS, Errno::EDQUOT].map(|e| e as i32);
            return io.raw_os_error().is_some_and(|n| refusing.contains(&n));
        }
        cur = err.source();
    }
    false
}

fn open_store(path: &Path) -> Result<Store, fjall::Error> {
    let db = fjall::Database::builder(path).open()?;
    let clients = db.keyspace("clients", fjall::KeyspaceCreateOptions::default)?;
    Ok(Store { db, clients })
}

/// The host tag for `me` among the other records, and the id of the client holding its
/// hostname when that made the tag unique.
fn assign_tag(
    cache: &HashMap<String, ClientRecord>,
    me: &ClientRecord,
) -> (String, Option<String>) {
    let plain = me.name().to_string();
    let holder = cache.values().find(|r| {
        r.id != me.id
            && r.tag() == plain
            // A record from before host tags holds its name only implicitly; of two such
            // records the earlier enrolled keeps it (the later one yields when it returns).
            && !(r.host_tag.is_empty() && (r.first_seen, &r.id) > (me.first_seen, &me.id))
    });
    let Some(holder) = holder else {
        return (plain, None);
    };
    let short = format!("{plain}~{}", me.id.get(..8).unwrap_or(&me.id));
    let taken = cache.values().any(|r| r.id != me.id && r.tag() == short);
    let tag = if taken {
        format!("{plain}~{}", me.id)
    } else {
        short
    };
    (tag, Some(holder.id.clone()))
}

impl Inventory {
    /// Opens (or creates) the store under `dir` and loads every record.
    pub fn open(dir: &Path) -> Result<Inventory, Error> {
        Inventory::open_with(dir, Arc::new(Metrics::default()))
    }

    /// Like [`Inventory::open`], counting its failures in `metrics`. A disk that refuses
    /// writes (full, read-only, over quota) is waited for, retrying every 2 s with a warning a
    /// minute, rather than failing: exiting would only make its supervisor restart it in a
    /// loop. Any other error (a corrupt store, another factory holding it) fails at once.
    pub fn open_with(dir: &Path, metrics: Arc<Metrics>) -> Result<Inventory, Error> {
        let path = dir.join("inventory");
        let store_err = |source| Error::Store {
            path: path.clone(),
            source,
        };
        let waiting = Quiet::new();
        let store = loop {
            match open_store(&path) {
                Ok(store) => break store,
                Err(e) if disk_refuses(&e) => {
                    waiting.warn(format_args!(
                        "cannot open the inventory store {}: {e}; waiting for the disk (retrying every 2 s)",
                        path.display()
                    ));
                    std::thread::sleep(std::time::Duration::from_secs(2));
                }
                Err(e) => return Err(store_err(e)),
            }
        };
        let mut cache = HashMap::new();
        for guard in store.clients.iter() {
            let (k, v) = guard.into_inner().map_err(store_err)?;
            let id = String::from_utf8_lossy(&k).into_owned();
            match decode(&id, &v) {
                Ok(rec) => {
                    cache.insert(id, rec);
                }
                // One unreadable record must not take the whole factory down; that client
                // will be refused as unknown and can be re-enrolled.
                Err(e) => crate::warn!("skipping {e}"),
            }
        }
        Ok(Inventory {
            path,
            metrics,
            state: Mutex::new(State {
                cache,
                store: Some(store),
                unsaved: BTreeSet::new(),
                last_error: String::new(),
                failures: 0,
                announced: false,
            }),
            reopening: Mutex::new(()),
            warnings: Quiet::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a record half-written (we only insert
        // whole records), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn store_err(&self, source: fjall::Error) -> Error {
        Error::Store {
            path: self.path.clone(),
            source,
        }
    }

    /// The error for "the store is closed after a failure".
    fn closed_err(&self, st: &State) -> Error {
        Error::io(
            format!("write inventory store {}", self.path.display()),
            std::io::Error::other(format!(
                "closed after an error, reopened when possible: {}",
                st.last_error
            )),
        )
    }

    /// Writes `id`'s record (or its removal) through. On failure the store is taken out of
    /// `st` (returned, to be dropped after the lock: dropping joins fjall's threads) and the
    /// id stays unsaved. Never fails.
    fn save(&self, st: &mut State, id: &str) -> Option<Store> {
        let Some(store) = &st.store else {
            st.unsaved.insert(id.to_string());
            self.count_unsaved(st);
            return None;
        };
        let r = match st.cache.get(id) {
            Some(rec) => store
                .clients
                .insert(id.as_bytes(), rec.serialize_json().into_bytes()),
            None => store.clients.remove(id.as_bytes()),
        };
        match r {
            Ok(()) => {
                st.unsaved.remove(id);
                self.count_unsaved(st);
                None
            }
            Err(e) => {
                st.unsaved.insert(id.to_string());
                let dead = self.failed(st, &e);
                self.count_unsaved(st);
                dead
            }
        }
    }

    /// A write failed: count it, warn (rate-limited), and close the store (fjall poisons
    /// itself after an I/O error; only a reopen gets it back).
    /// Writes `rec` and fsyncs. On failure `rec`'s id is marked unsaved (the record in memory
    /// is written over whatever reached the journal once the store works again) and the store
    /// is closed; the closed store comes back with the error, to be dropped outside the lock.
    fn write_synced(
        &self,
        st: &mut State,
        rec: &ClientRecord,
    ) -> Result<(), (Error, Option<Store>)> {
        let Some(store) = &st.store else {
            return Err((self.closed_err(st), None));
        };
        let written = store
            .clients
            .insert(rec.id.as_bytes(), rec.serialize_json().into_bytes())
            .and_then(|()| store.db.persist(fjall::PersistMode::SyncAll));
        if let Err(e) = written {
            st.unsaved.insert(rec.id.clone());
            let dead = self.failed(st, &e);
            self.count_unsaved(st);
            return Err((self.store_err(e), dead));
        }
        Ok(())
    }

    fn failed(&self, st: &mut State, e: &fjall::Error) -> Option<Store> {
        self.metrics
            .inventory_write_errors
            .fetch_add(1, Ordering::Relaxed);
        st.failures += 1;
        st.last_error = e.to_string();
        st.announced |= self.warnings.warn(format_args!(
            "inventory store {}: write failed ({e}); keeping {} record(s) in memory and retrying; agents are still served",
            self.path.display(),
            st.unsaved.len()
        ));
        st.store.take()
    }

    fn count_unsaved(&self, st: &State) {
        self.metrics
            .inventory_unsaved
            .store(st.unsaved.len() as u64, Ordering::Relaxed);
    }

    /// Records not yet written to disk.
    pub fn unsaved(&self) -> usize {
        self.state().unsaved.len()
    }

    /// Reopens the store if it failed and writes the unsaved records; returns how many are
    /// still unsaved. Blocking (call off the executor).
    pub fn retry(&self) -> usize {
        let _one = self.reopening.lock().unwrap_or_else(|p| p.into_inner());
        let closed = {
            let st = self.state();
            if st.store.is_some() && st.unsaved.is_empty() {
                return 0;
            }
            st.store.is_none()
        };
        if closed {
            // Opened without the lock: sessions keep updating the memory copy meanwhile.
            match open_store(&self.path) {
                Ok(store) => {
                    self.metrics
                        .inventory_reopens
                        .fetch_add(1, Ordering::Relaxed);
                    self.state().store = Some(store);
                }
                Err(e) => {
                    let n = {
                        let mut st = self.state();
                        st.last_error = e.to_string();
                        st.unsaved.len()
                    };
                    let printed = self.warnings.warn(format_args!(
                        "inventory store {}: cannot reopen ({e}); {n} record(s) unsaved, retrying",
                        self.path.display()
                    ));
                    self.state().announced |= printed;
                    return n;
                }
            }
        }
        let mut st = self.state();
        let ids: Vec<String> = st.unsaved.iter().cloned().collect();
        let mut dead = None;
        for id in ids {
            dead = self.save(&mut st, &id);
            if st.store.is_none() {
                break;
            }
        }
        let left = st.unsaved.len();
        if left == 0 && st.failures > 0 {
            if st.announced {
                crate::info!(
                    "inventory store {} writable again after {} failed write(s); every record saved",
                    self.path.display(),
                    st.failures
                );
            }
            st.failures = 0;
            st.announced = false;
        }
        drop(st);
        drop(dead);
        left
    }

    /// The record of `id`.
    pub fn get(&self, id: &str) -> Option<ClientRecord> {
        self.state().cache.get(id).cloned()
    }

    /// Every record, sorted by hostname then id.
    pub fn list(&self) -> Vec<ClientRecord> {
        let mut v: Vec<ClientRecord> = self.state().cache.values().cloned().collect();
        v.sort_by(|a, b| (&a.hostname, &a.id).cmp(&(&b.hostname, &b.id)));
        v
    }

    /// Number of known clients.
    pub fn len(&self) -> usize {
        self.state().cache.len()
    }

    /// True when no client is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores a new client, with its host tag, and fsyncs; returns the stored record. Fails
    /// when it cannot be made durable (the caller refuses the agent, which retries). Blocking
    /// (call off the executor).
    pub fn enroll(&self, mut rec: ClientRecord) -> Result<ClientRecord, Error> {
        // A store closed by an earlier failure is reopened first.
        self.retry();
        let mut st = self.state();
        let (tag, holder) = assign_tag(&st.cache, &rec);
        rec.host_tag = tag;
        // On failure, whatever reached the journal must not come back as a client nobody holds.
        if let Err((e, dead)) = self.write_synced(&mut st, &rec) {
            drop(st);
            drop(dead);
            return Err(e);
        }
        if let Some(holder) = holder {
            self.duplicate(&st, &rec, &holder);
        }
        st.cache.insert(rec.id.clone(), rec.clone());
        Ok(rec)
    }

    /// The clone of `original` made for `installation`, if there is one.
    pub fn clone_of(&self, original: &str, installation: &str) -> Option<ClientRecord> {
        self.state()
            .cache
            .values()
            .find(|r| r.cloned_from == original && r.installation == installation)
            .cloned()
    }

    /// Gives `id` a new secret (its hash) and fsyncs, as an enrollment does; the record in
    /// memory changes only once it is durable. Blocking (call off the executor).
    pub fn rekey(&self, id: &str, secret_hash: String) -> Result<ClientRecord, Error> {
        self.retry();
        let mut st = self.state();
        let Some(mut rec) = st.cache.get(id).cloned() else {
            return Err(Error::Record {
                id: id.to_string(),
                detail: "not in the inventory".into(),
            });
        };
        rec.secret_hash = secret_hash;
        // On failure the journal may hold the new hash: the record in memory is written back
        // over it.
        if let Err((e, dead)) = self.write_synced(&mut st, &rec) {
            drop(st);
            drop(dead);
            return Err(e);
        }
        st.cache.insert(rec.id.clone(), rec.clone());
        Ok(rec)
    }

    /// One line per client given a unique tag: the moment the duplicate hostname is found.
    fn duplicate(&self, st: &State, rec: &ClientRecord, holder: &str) {
        self.metrics
            .host_tags_made_unique
            .fetch_add(1, Ordering::Relaxed);
        let holder_tag = st.cache.get(holder).map_or(rec.name(), |h| h.tag());
        crate::warn!(
            "duplicate hostname {:?}: client {} has it too; its points are tagged host={} ({} keeps host={holder_tag})",
            rec.name(),
            rec.id,
            rec.host_tag,
            holder
        );
    }

    /// Applies `f` to the record of `id` and writes it through; returns the updated record.
    /// A changed hostname (or a record without a host tag) gets its host tag assigned. Never
    /// fails on the store: a record that cannot be written is kept and retried.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut ClientRecord)) -> Option<ClientRecord> {
        // The write happens under the lock so two updates of one client reach fjall in the
        // order they were made (last_acked_seq must never go backwards on disk).
        let mut st = self.state();
        let rec = st.cache.get_mut(id)?;
        let before = rec.hostname.clone();
        f(rec);
        let retag = rec.host_tag.is_empty() || rec.hostname != before;
        let mut rec = rec.clone();
        if retag {
            let (tag, holder) = assign_tag(&st.cache, &rec);
            rec.host_tag = tag;
            if let Some(holder) = holder {
                if st.cache.get(id).map(|r| r.host_tag.as_str()) != Some(rec.host_tag.as_str()) {
                    self.duplicate(&st, &rec, &holder);
                }
            }
            st.cache.insert(id.to_string(), rec.clone());
        }
        let dead = self.save(&mut st, id);
        drop(st);
        drop(dead);
        Some(rec)
    }

    /// Writes what is unsaved and flushes the journal to disk (at shutdown).
    pub fn persist(&self) -> Result<(), Error> {
        let left = self.retry();
        let st = self.state();
        match &st.store {
            Some(store) if left == 0 => store
                .db
                .persist(fjall::PersistMode::SyncAll)
                .map_err(|e| self.store_err(e)),
            _ => Err(self.closed_err(&st)),
        }
    }
}

fn decode(id: &str, bytes: &[u8]) -> Result<ClientRecord, Error> {
    let bad = |detail: String| Error::Record {
        id: id.to_string(),
        detail,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| bad(format!("not UTF-8: {e}")))?;
    let rec = ClientRecord::deserialize_json(text).map_err(|e| bad(format!("{e:?}")))?;
    if rec.id != id {
        return Err(bad(format!("record names another id {:?}", rec.id)));
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "autofactory-inv-{name}-{}-{}",
            std::process::id(),
            crate::ids::new_client_id().unwrap_or_default()
        ));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn records_survive_reopen() {
        let dir = temp_dir("reopen");
        let rec = ClientRecord {
            id: "0123456789abcdef0123456789abcdef".into(),
            hostname: "pi-1 \"kitchen\"".into(),
            first_seen: 5,
            secret_hash: crate::ids::secret_hash("s"),
            ..Default::default()
        };
        {
            let inv = Inventory::open(&dir).expect("open");
            inv.enroll(rec.clone()).expect("enroll");
            inv.update(&rec.id, |r| {
                r.last_acked_seq = 42;
                r.backlog = Some(3);
            })
            .expect("known client");
            assert!(inv
                .update("ffffffffffffffffffffffffffffffff", |_| {})
                .is_none());
            inv.persist().expect("persist");
        }
        let inv = Inventory::open(&dir).expect("reopen");
        let got = inv.get(&rec.id).expect("record kept");
        assert_eq!(got.hostname, rec.hostname);
        assert_eq!(got.last_acked_seq, 42);
        assert_eq!(got.backlog, Some(3));
        assert_eq!(inv.len(), 1);
        drop(inv);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn rec(id: &str, hostname: &str, first_seen: u64, host_tag: &str) -> ClientRecord {
        ClientRecord {
            id: id.into(),
            hostname: hostname.into(),
            first_seen,
            host_tag: host_tag.into(),
            ..Default::default()
        }
    }

    fn cache(recs: &[ClientRecord]) -> HashMap<String, ClientRecord> {
        recs.iter().map(|r| (r.id.clone(), r.clone())).collect()
    }

    #[test]
    fn the_first_holder_of_a_hostname_keeps_it_and_later_ones_get_a_unique_tag() {
        let a = "aaaaaaaa000000000000000000000000";
        let b = "bbbbbbbb000000000000000000000000";
        let c = "cccccccc000000000000000000000000";
        // A unique hostname is the tag, as Telegraf would write it.
        let (t, holder) = assign_tag(&cache(&[]), &rec(a, "pi", 1, ""));
        assert_eq!((t.as_str(), holder), ("pi", None));
        // Taken: hostname~<8 hex of the id>, naming the holder.
        let held = cache(&[rec(a, "pi", 1, "pi")]);
        let (t, holder) = assign_tag(&held, &rec(b, "pi", 2, ""));
        assert_eq!((t.as_str(), holder.as_deref()), ("pi~bbbbbbbb", Some(a)));
        // The holder itself keeps its plain tag when it is retagged.
        let both = cache(&[rec(a, "pi", 1, "pi"), rec(b, "pi", 2, "pi~bbbbbbbb")]);
        assert_eq!(assign_tag(&both, &rec(a, "pi", 1, "")).0, "pi");
        // Records from before host tags: the earlier enrolled keeps the name.
        let old = cache(&[rec(a, "pi", 5, ""), rec(b, "pi", 9, "")]);
        assert_eq!(assign_tag(&old, &rec(b, "pi", 9, "")).0, "pi~bbbbbbbb");
        assert_eq!(assign_tag(&old, &rec(a, "pi", 5, "")).0, "pi");
        // A short tag already taken (a hostname that looks like one): the whole id.
        let odd = cache(&[rec(a, "pi", 1, "pi"), rec(c, "pi~bbbbbbbb", 1, "")]);
        assert_eq!(assign_tag(&odd, &rec(b, "pi", 2, "")).0, format!("pi~{b}"));
        // No hostname: the id is the name.
        assert_eq!(assign_tag(&cache(&[]), &rec(a, "", 1, "")).0, a);
    }

    #[test]
    fn warnings_are_one_a_minute_and_the_next_counts_the_ones_left_out() {
        let q = Quiet::new();
        assert_eq!(q.admit(1_000), Some(0));
        assert_eq!(q.admit(1_001), None);
        assert_eq!(q.admit(1_059), None);
        assert_eq!(q.admit(1_060), Some(2));
        assert_eq!(q.admit(1_061), None);
        assert_eq!(q.admit(1_200), Some(1));
    }

    #[test]
    fn corrupt_record_is_an_error_naming_the_id() {
        let e = decode("abc", b"{\"id\": 5").expect_err("corrupt");
        assert!(e.to_string().contains("inventory record abc"), "{e}");
        let e = decode("abc", b"{\"id\": \"other\"}").expect_err("mismatch");
        assert!(e.to_string().contains("another id"), "{e}");
        assert!(decode("abc", &[0xff, 0xfe]).is_err());
    }
}
