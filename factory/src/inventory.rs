//! The client inventory: one fjall keyspace `clients`, key = client id (32 hex digits), value =
//! the record as nanoserde JSON. Kept in memory too (a fleet is thousands of small records) so
//! reads never touch disk.
//!
//! One writer thread (`inventory`) owns the store; nothing else touches the disk. A change made
//! by [`Inventory::update`] (every Hello and every acknowledged batch) changes the memory copy
//! under the lock, marks the client dirty and returns; the writer takes the dirty clients (and
//! copies of their records) under the lock and writes them without it, as one fjall batch, at
//! most every 100 ms. Each client changed within a round is one write of its latest record, so
//! its `last_acked_seq` never goes backwards on disk. The batch reaches fjall's journal and the
//! OS (fjall's default durability, no fsync) within a round: a crash of the factory loses
//! nothing written, a crash of the machine the changes since the OS last flushed.
//!
//! Durability of enrollments: [`Inventory::enroll`] and [`Inventory::rekey`] return futures at
//! once; the writer writes every enrollment and re-key waiting for it (rounds 10 ms apart while
//! they wait) with one fsync, and only then resolves them, so an enrollment is fsync'd before
//! the Welcome goes out (a lost record would lock the client out for good). When that cannot
//! be done the enrollment fails and the session refuses the agent with Busy, which it retries;
//! the failed record is not kept, and its id is written as a removal once the store works, so
//! whatever reached the journal cannot come back as a client nobody holds.
//!
//! A failing disk (full, read-only, I/O errors): fjall poisons itself after a failed write, so
//! the writer drops the store at the first error and the changed records stay in memory as
//! *unsaved*; it reopens the store every 2 s (at once when an enrollment waits) and writes
//! them; no restart is needed once space is back. Updates never fail: the memory copy is the
//! truth while the disk is away. Warnings about it are rate-limited (one a minute, with the
//! count of the ones left out). [`Inventory::close`] (at shutdown) writes what is left, fsyncs
//! and stops the writer.
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
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

/// The open fjall store; only the writer thread holds it.
struct Store {
    db: fjall::Database,
    clients: fjall::Keyspace,
}

/// When the writer runs a round.
#[derive(Debug, Clone, Copy)]
struct Rounds {
    /// Least time between two rounds that write only updates: every update of a client made
    /// within it is one write (a client acking ten batches a second is written once).
    updates: Duration,
    /// Least time between two rounds with enrollments or re-keys waiting: the ones arriving
    /// meanwhile share one fsync, and a lone enrollment waits no longer than this.
    enrollments: Duration,
    /// Between attempts to reopen a store closed by a failure, when only updates wait.
    retry: Duration,
}

/// Updates every second: an agent acked once a second (the busiest setting users run) is
/// written once a second, whatever its batches; what a crash can cost is a second of last-seen
/// and last-acked updates (at worst a batch written twice, never one lost).
const ROUNDS: Rounds = Rounds {
    updates: Duration::from_secs(1),
    enrollments: Duration::from_millis(10),
    retry: Duration::from_secs(2),
};

/// A change that must be fsync'd before its caller hears of it.
enum Change {
    /// A new client (its record with its host tag); `holder`: the client holding its hostname.
    Enroll {
        rec: Box<ClientRecord>,
        holder: Option<String>,
    },
    /// A new secret hash for a known client.
    Rekey { secret_hash: String },
}

/// A change waiting for the writer, and where its result goes.
struct Job {
    id: String,
    change: Change,
    reply: smol::channel::Sender<Result<ClientRecord, Error>>,
}

/// Everything behind the inventory's lock: memory only, never held across disk I/O.
struct State {
    cache: HashMap<String, ClientRecord>,
    /// Enrollments waiting for their fsync, by id: not served by `get` yet, but their host tags
    /// and clone links are taken (two enrollments of one hostname get distinct tags).
    enrolling: HashMap<String, ClientRecord>,
    /// Enrollments and re-keys for the writer's next round, in arrival order.
    jobs: Vec<Job>,
    /// Ids whose record (or, when no longer in the cache, whose removal) is not in the store.
    dirty: HashSet<String>,
    /// The store was closed by a failure; what is dirty is *unsaved* until it reopens.
    closed: bool,
    /// The last store error, for messages while the store is closed.
    last_error: String,
    /// Failed writes since the store last worked, for the "writable again" line.
    failures: u64,
    /// A failure warning was printed since the last "writable again" line: a disk flapping
    /// between full and not-quite-full prints two lines a minute, not two per retry.
    announced: bool,
    /// [`Inventory::close`] (or drop) asked the writer to write what is left and stop.
    stopping: bool,
}

/// What the inventory and its writer thread share.
struct Core {
    path: PathBuf,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// Wakes the writer: the first update after a round, every job, and stopping.
    wake: Condvar,
    warnings: Quiet,
    rounds: Rounds,
}

/// The inventory store.
pub struct Inventory {
    core: Arc<Core>,
    /// The writer thread; `None` once closed.
    writer: Mutex<Option<JoinHandle<Result<(), Error>>>>,
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

/// The in-memory write buffer of the inventory (fjall's default is 64 MiB): a record is
/// rewritten on every round its client acked in, so the memtable would grow to its limit at
/// any fleet size, and a full one is kept while it is flushed beside the next. 2 MiB is flushed
/// more often (fjall's own threads do it; the factory's CPU at 10,000 agents did not change)
/// and keeps the factory's memory per agent what its sessions need.
const MEMTABLE_BYTES: u64 = 2 * 1024 * 1024;

fn open_store(path: &Path) -> Result<Store, fjall::Error> {
    let db = fjall::Database::builder(path).open()?;
    let clients = db.keyspace("clients", || {
        fjall::KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
    })?;
    Ok(Store { db, clients })
}

/// The host tag for `me` among `others` (the stored records and the pending enrollments), and
/// the id of the client holding its hostname when that made the tag unique.
fn assign_tag<'a>(
    others: impl Iterator<Item = &'a ClientRecord> + Clone,
    me: &ClientRecord,
) -> (String, Option<String>) {
    let plain = me.name().to_string();
    let holder = others.clone().find(|r| {
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
    let taken = others.clone().any(|r| r.id != me.id && r.tag() == short);
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

    /// Like [`Inventory::open`], counting its writes and failures in `metrics`, and starts the
    /// writer thread. A disk that refuses writes (full, read-only, over quota) is waited for,
    /// retrying every 2 s with a warning a minute, rather than failing: exiting would only make
    /// its supervisor restart it in a loop. Any other error (a corrupt store, another factory
    /// holding it) fails at once.
    pub fn open_with(dir: &Path, metrics: Arc<Metrics>) -> Result<Inventory, Error> {
        Inventory::start(dir, metrics, ROUNDS)
    }

    fn start(dir: &Path, metrics: Arc<Metrics>, rounds: Rounds) -> Result<Inventory, Error> {
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
                    std::thread::sleep(rounds.retry);
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
        let core = Arc::new(Core {
            path,
            metrics,
            state: Mutex::new(State {
                cache,
                enrolling: HashMap::new(),
                jobs: Vec::new(),
                dirty: HashSet::new(),
                closed: false,
                last_error: String::new(),
                failures: 0,
                announced: false,
                stopping: false,
            }),
            wake: Condvar::new(),
            warnings: Quiet::new(),
            rounds,
        });
        let writer = std::thread::Builder::new()
            .name("inventory".into())
            .spawn({
                let core = core.clone();
                move || core.run(store)
            })
            .map_err(|e| Error::io("start the inventory writer thread", e))?;
        Ok(Inventory {
            core,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Records the store failed to take, kept in memory until it reopens (0 while it works:
    /// then every change reaches its journal within a round).
    pub fn unsaved(&self) -> usize {
        self.core.state().unsaved()
    }

    /// The record of `id`.
    pub fn get(&self, id: &str) -> Option<ClientRecord> {
        self.core.state().cache.get(id).cloned()
    }

    /// Every record, sorted by hostname then id.
    pub fn list(&self) -> Vec<ClientRecord> {
        let mut v: Vec<ClientRecord> = self.core.state().cache.values().cloned().collect();
        v.sort_by(|a, b| (&a.hostname, &a.id).cmp(&(&b.hostname, &b.id)));
        v
    }

    /// Number of known clients.
    pub fn len(&self) -> usize {
        self.core.state().cache.len()
    }

    /// True when no client is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores a new client, with its host tag, fsync'd; resolves to the stored record. Fails
    /// when it cannot be made durable (the caller refuses the agent, which retries). Returns at
    /// once: the writer thread groups the enrollments waiting for it into one fsync.
    pub fn enroll(
        &self,
        mut rec: ClientRecord,
    ) -> impl Future<Output = Result<ClientRecord, Error>> + Send + 'static {
        let (reply, result) = smol::channel::bounded(1);
        let refused = {
            let mut st = self.core.state();
            if st.stopping {
                Some(self.core.stopped_err())
            } else {
                let (tag, holder) =
                    assign_tag(st.cache.values().chain(st.enrolling.values()), &rec);
                rec.host_tag = tag;
                st.enrolling.insert(rec.id.clone(), rec.clone());
                let id = rec.id.clone();
                let change = Change::Enroll {
                    rec: Box::new(rec),
                    holder,
                };
                st.jobs.push(Job { id, change, reply });
                None
            }
        };
        self.core.wake.notify_one();
        self.core.answer(refused, result)
    }

    /// The clone of `original` made for `installation`, if there is one (stored, or being
    /// enrolled).
    pub fn clone_of(&self, original: &str, installation: &str) -> Option<ClientRecord> {
        let st = self.core.state();
        st.cache
            .values()
            .chain(st.enrolling.values())
            .find(|r| r.cloned_from == original && r.installation == installation)
            .cloned()
    }

    /// Gives `id` a new secret (its hash), fsync'd as an enrollment is; the record in memory
    /// changes only once it is durable. Returns at once, like [`Inventory::enroll`].
    pub fn rekey(
        &self,
        id: &str,
        secret_hash: String,
    ) -> impl Future<Output = Result<ClientRecord, Error>> + Send + 'static {
        let (reply, result) = smol::channel::bounded(1);
        let refused = {
            let mut st = self.core.state();
            if st.stopping {
                Some(self.core.stopped_err())
            } else if !st.cache.contains_key(id) {
                Some(not_known(id))
            } else {
                let change = Change::Rekey { secret_hash };
                let id = id.to_string();
                st.jobs.push(Job { id, change, reply });
                None
            }
        };
        self.core.wake.notify_one();
        self.core.answer(refused, result)
    }

    /// Applies `f` to the record of `id` in memory and returns the updated record; the writer
    /// thread writes it within a round (every update of it meanwhile is one write). A changed
    /// hostname (or a record without a host tag) gets its host tag assigned. Never touches the
    /// disk and never fails on it: a record that cannot be written is kept and retried.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut ClientRecord)) -> Option<ClientRecord> {
        let mut st = self.core.state();
        let st = &mut *st;
        let rec = st.cache.get_mut(id)?;
        let before = rec.hostname.clone();
        f(rec);
        let retag = rec.host_tag.is_empty() || rec.hostname != before;
        let mut rec = rec.clone();
        if retag {
            let (tag, holder) = assign_tag(st.cache.values().chain(st.enrolling.values()), &rec);
            rec.host_tag = tag;
            if let Some(holder) = holder {
                if st.cache.get(id).map(|r| r.host_tag.as_str()) != Some(rec.host_tag.as_str()) {
                    self.core.duplicate(st, &rec, &holder);
                }
            }
            st.cache.insert(id.to_string(), rec.clone());
        }
        // Only the first change after a round wakes the writer; it comes at its own pace.
        if st.dirty.insert(id.to_string()) && st.dirty.len() == 1 {
            self.core.wake.notify_one();
        }
        if st.closed {
            self.core.count_unsaved(st);
        }
        Some(rec)
    }

    /// Writes everything changed, fsyncs, and stops the writer thread (at shutdown). Fails when
    /// something could not be made durable (the store is closed by a failure). Blocking.
    pub fn close(&self) -> Result<(), Error> {
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(writer) = writer else {
            return Ok(());
        };
        self.core.state().stopping = true;
        self.core.wake.notify_one();
        writer.join().unwrap_or_else(|_| {
            Err(Error::io(
                format!("inventory writer of {}", self.core.path.display()),
                std::io::Error::other("panicked"),
            ))
        })
    }
}

impl Drop for Inventory {
    /// Stops the writer thread after its last round (errors were warned about already).
    fn drop(&mut self) {
        let _ = self.close();
    }
}

fn not_known(id: &str) -> Error {
    Error::Record {
        id: id.to_string(),
        detail: "not in the inventory".into(),
    }
}

impl State {
    fn unsaved(&self) -> usize {
        if self.closed {
            self.dirty.len()
        } else {
            0
        }
    }
}

impl Core {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a record half-changed for the disk (the
        // writer only ever writes whole records), so a poisoned lock is still safe to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The error for "the store is closed after a failure".
    fn closed_err(&self, last_error: &str) -> Error {
        Error::io(
            format!("write inventory store {}", self.path.display()),
            std::io::Error::other(format!(
                "closed after an error, reopened when possible: {last_error}"
            )),
        )
    }

    fn stopped_err(&self) -> Error {
        Error::io(
            format!("write inventory store {}", self.path.display()),
            std::io::Error::other("the inventory is closed (the factory is stopping)"),
        )
    }

    /// The future of a job: its refusal, or what the writer answers.
    fn answer(
        &self,
        refused: Option<Error>,
        result: smol::channel::Receiver<Result<ClientRecord, Error>>,
    ) -> impl Future<Output = Result<ClientRecord, Error>> + Send + 'static {
        // Only if the writer is gone without answering (it answers every job it took).
        let gone = self.stopped_err();
        async move {
            if let Some(e) = refused {
                return Err(e);
            }
            result.recv().await.unwrap_or(Err(gone))
        }
    }

    fn count_unsaved(&self, st: &State) {
        self.metrics
            .inventory_unsaved
            .store(st.unsaved() as u64, Ordering::Relaxed);
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

    /// The writer thread: waits for changes, runs a round at most every `rounds.updates`
    /// (`rounds.enrollments` when a job waits), and at stop writes what is left and fsyncs.
    fn run(&self, store: Store) -> Result<(), Error> {
        let mut store = Some(store);
        let mut last: Option<Instant> = None;
        loop {
            {
                let mut st = self.state();
                loop {
                    if st.stopping {
                        drop(st);
                        return self.round(&mut store, true);
                    }
                    let gap = if !st.jobs.is_empty() {
                        // A closed store is reopened for them at most every `updates`: a
                        // full disk must not be reopened hundreds of times a second.
                        Some(if st.closed {
                            self.rounds.updates
                        } else {
                            self.rounds.enrollments
                        })
                    } else if !st.dirty.is_empty() {
                        Some(if st.closed {
                            self.rounds.retry
                        } else {
                            self.rounds.updates
                        })
                    } else {
                        None
                    };
                    let now = Instant::now();
                    let wait = match (gap, last) {
                        (None, _) => None,
                        (Some(_), None) => break,
                        (Some(gap), Some(last)) => match (last + gap).checked_duration_since(now) {
                            Some(left) if !left.is_zero() => Some(left),
                            _ => break,
                        },
                    };
                    st = match wait {
                        None => self.wake.wait(st).unwrap_or_else(|p| p.into_inner()),
                        Some(left) => {
                            self.wake
                                .wait_timeout(st, left)
                                .unwrap_or_else(|p| p.into_inner())
                                .0
                        }
                    };
                }
            }
            last = Some(Instant::now());
            // Errors are answered to the jobs and warned about; the next round retries.
            let _ = self.round(&mut store, false);
        }
    }

    /// One round: takes what is dirty and the waiting jobs under the lock, writes them as one
    /// batch without it, fsyncs when a job (or `last`) needs it, then answers the jobs. On a
    /// failure the store is closed and everything taken is dirty again (a failed enrollment's
    /// id as a removal: whatever reached the journal must not come back as a client nobody
    /// holds; a failed re-key's as the record in memory, with its old secret).
    fn round(&self, store: &mut Option<Store>, last: bool) -> Result<(), Error> {
        let mut writes: HashMap<String, Option<ClientRecord>> = HashMap::new();
        let mut jobs = Vec::new();
        let mut refused = Vec::new();
        {
            let mut st = self.state();
            let st = &mut *st;
            for id in std::mem::take(&mut st.dirty) {
                let rec = st.cache.get(&id).cloned();
                writes.insert(id, rec);
            }
            for job in std::mem::take(&mut st.jobs) {
                match &job.change {
                    Change::Enroll { rec, .. } => {
                        writes.insert(job.id.clone(), Some(ClientRecord::clone(rec)));
                    }
                    Change::Rekey { secret_hash } => match st.cache.get(&job.id) {
                        Some(rec) => {
                            let rec = ClientRecord {
                                secret_hash: secret_hash.clone(),
                                ..rec.clone()
                            };
                            writes.insert(job.id.clone(), Some(rec));
                        }
                        None => {
                            refused.push((not_known(&job.id), job));
                            continue;
                        }
                    },
                }
                jobs.push(job);
            }
        }
        for (e, job) in refused {
            let _ = job.reply.try_send(Err(e));
        }
        if writes.is_empty() && jobs.is_empty() && !last {
            return Ok(());
        }
        let written = self.write(store, &writes, !jobs.is_empty() || last);
        let mut guard = self.state();
        let st = &mut *guard;
        let dead = match &written {
            Ok(()) => {
                st.closed = false;
                if st.failures > 0 {
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
                None
            }
            Err((e, reopen)) => {
                st.dirty.extend(writes.into_keys());
                st.closed = true;
                st.last_error = e.to_string();
                if *reopen {
                    let printed = self.warnings.warn(format_args!(
                        "inventory store {}: cannot reopen ({e}); {} record(s) unsaved, retrying",
                        self.path.display(),
                        st.dirty.len()
                    ));
                    st.announced |= printed;
                } else {
                    self.metrics
                        .inventory_write_errors
                        .fetch_add(1, Ordering::Relaxed);
                    st.failures += 1;
                    st.announced |= self.warnings.warn(format_args!(
                        "inventory store {}: write failed ({e}); keeping {} record(s) in memory and retrying; agents are still served",
                        self.path.display(),
                        st.dirty.len()
                    ));
                }
                // fjall poisons itself after an I/O error; only a reopen gets it back. Dropped
                // after the lock: dropping joins fjall's threads.
                store.take()
            }
        };
        let mut answers = Vec::with_capacity(jobs.len());
        for job in jobs {
            if let Change::Enroll { .. } = job.change {
                st.enrolling.remove(&job.id);
            }
            let answer = match (&written, job.change) {
                (Ok(()), Change::Enroll { rec, holder }) => {
                    if let Some(holder) = holder {
                        self.duplicate(st, &rec, &holder);
                    }
                    st.cache.insert(job.id, ClientRecord::clone(&rec));
                    Ok(*rec)
                }
                (Ok(()), Change::Rekey { secret_hash }) => match st.cache.get_mut(&job.id) {
                    Some(rec) => {
                        rec.secret_hash = secret_hash;
                        Ok(rec.clone())
                    }
                    None => Err(not_known(&job.id)),
                },
                (Err((_, true)), _) => Err(self.closed_err(&st.last_error)),
                (Err((e, false)), _) => Err(Error::io(
                    format!("write inventory store {}", self.path.display()),
                    std::io::Error::other(e.to_string()),
                )),
            };
            answers.push((job.reply, answer));
        }
        self.count_unsaved(st);
        let result = match &written {
            Ok(()) => Ok(()),
            Err(_) => Err(self.closed_err(&st.last_error)),
        };
        drop(guard);
        drop(dead);
        for (reply, answer) in answers {
            let _ = reply.try_send(answer);
        }
        result
    }

    /// Writes `writes` (`None`: a removal) in one batch, reopening a closed store first, and
    /// fsyncs if `sync`. The error says whether it was the reopen that failed.
    fn write(
        &self,
        store: &mut Option<Store>,
        writes: &HashMap<String, Option<ClientRecord>>,
        sync: bool,
    ) -> Result<(), (fjall::Error, bool)> {
        let s = match store {
            Some(s) => &*s,
            None => {
                let reopened = open_store(&self.path).map_err(|e| (e, true))?;
                self.metrics
                    .inventory_reopens
                    .fetch_add(1, Ordering::Relaxed);
                &*store.insert(reopened)
            }
        };
        // `batch()` flushes the journal to the OS on commit (fjall's default durability,
        // `PersistMode::Buffer`): an update survives the factory's crash, only the machine's
        // loses it, as when every update was an insert of its own.
        let mut batch = s.db.batch();
        for (id, rec) in writes {
            match rec {
                Some(rec) => {
                    batch.insert(&s.clients, id.as_bytes(), rec.serialize_json().into_bytes())
                }
                None => batch.remove(&s.clients, id.as_bytes()),
            }
        }
        batch.commit().map_err(|e| (e, false))?;
        self.metrics
            .inventory_writes
            .fetch_add(writes.len() as u64, Ordering::Relaxed);
        if sync {
            s.db.persist(fjall::PersistMode::SyncAll)
                .map_err(|e| (e, false))?;
            self.metrics
                .inventory_fsyncs
                .fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
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
            smol::block_on(inv.enroll(rec.clone())).expect("enroll");
            inv.update(&rec.id, |r| {
                r.last_acked_seq = 42;
                r.backlog = Some(3);
            })
            .expect("known client");
            assert!(inv
                .update("ffffffffffffffffffffffffffffffff", |_| {})
                .is_none());
            inv.close().expect("close");
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
        let (t, holder) = assign_tag(cache(&[]).values(), &rec(a, "pi", 1, ""));
        assert_eq!((t.as_str(), holder), ("pi", None));
        // Taken: hostname~<8 hex of the id>, naming the holder.
        let held = cache(&[rec(a, "pi", 1, "pi")]);
        let (t, holder) = assign_tag(held.values(), &rec(b, "pi", 2, ""));
        assert_eq!((t.as_str(), holder.as_deref()), ("pi~bbbbbbbb", Some(a)));
        // The holder itself keeps its plain tag when it is retagged.
        let both = cache(&[rec(a, "pi", 1, "pi"), rec(b, "pi", 2, "pi~bbbbbbbb")]);
        assert_eq!(assign_tag(both.values(), &rec(a, "pi", 1, "")).0, "pi");
        // Records from before host tags: the earlier enrolled keeps the name.
        let old = cache(&[rec(a, "pi", 5, ""), rec(b, "pi", 9, "")]);
        assert_eq!(
            assign_tag(old.values(), &rec(b, "pi", 9, "")).0,
            "pi~bbbbbbbb"
        );
        assert_eq!(assign_tag(old.values(), &rec(a, "pi", 5, "")).0, "pi");
        // A short tag already taken (a hostname that looks like one): the whole id.
        let odd = cache(&[rec(a, "pi", 1, "pi"), rec(c, "pi~bbbbbbbb", 1, "")]);
        assert_eq!(
            assign_tag(odd.values(), &rec(b, "pi", 2, "")).0,
            format!("pi~{b}")
        );
        // No hostname: the id is the name.
        assert_eq!(assign_tag(cache(&[]).values(), &rec(a, "", 1, "")).0, a);
    }

    fn client(n: usize, hostname: &str) -> ClientRecord {
        ClientRecord {
            id: format!("{n:032x}"),
            hostname: hostname.into(),
            first_seen: 1,
            secret_hash: crate::ids::secret_hash(&format!("secret {n}")),
            ..Default::default()
        }
    }

    fn counts(m: &Metrics) -> (u64, u64) {
        (
            m.inventory_writes.load(Ordering::Relaxed),
            m.inventory_fsyncs.load(Ordering::Relaxed),
        )
    }

    /// Rounds far apart: what happens between two of them is decided by the test, not the clock.
    const SLOW: Rounds = Rounds {
        updates: Duration::from_secs(3600),
        enrollments: Duration::from_secs(3600),
        retry: Duration::from_secs(3600),
    };

    #[test]
    fn many_updates_of_one_client_between_two_rounds_are_one_write() {
        let dir = temp_dir("coalesce");
        let m = Arc::new(Metrics::default());
        let inv = Inventory::start(&dir, m.clone(), SLOW).expect("open");
        let id = client(1, "pi").id;
        // The first round after opening runs at once; the next one not within the test.
        smol::block_on(inv.enroll(client(1, "pi"))).expect("enroll");
        assert_eq!(counts(&m), (1, 1));
        for seq in 1..=1_000 {
            inv.update(&id, |r| r.last_acked_seq = seq).expect("known");
        }
        assert_eq!(inv.get(&id).expect("known").last_acked_seq, 1_000);
        inv.close().expect("close");
        // 1,000 updates: one write (and the fsync of closing).
        assert_eq!(counts(&m), (2, 2));
        drop(inv);
        let inv = Inventory::open(&dir).expect("reopen");
        assert_eq!(inv.get(&id).expect("kept").last_acked_seq, 1_000);
        drop(inv);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn concurrent_enrollments_share_fsyncs_and_all_reach_the_disk() {
        let dir = temp_dir("group");
        let m = Arc::new(Metrics::default());
        let inv = Arc::new(Inventory::open_with(&dir, m.clone()).expect("open"));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let inv = inv.clone();
                std::thread::spawn(move || {
                    let pending: Vec<_> = (0..50)
                        .map(|i| inv.enroll(client(t * 50 + i, &format!("pi-{t}-{i}"))))
                        .collect();
                    smol::block_on(async {
                        for p in pending {
                            p.await.expect("enrolled");
                        }
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().expect("enrolling thread");
        }
        let (writes, fsyncs) = counts(&m);
        println!("200 enrollments: {writes} writes, {fsyncs} fsyncs");
        assert_eq!(writes, 200);
        assert!(fsyncs < 50, "{fsyncs} fsyncs for 200 enrollments");
        assert_eq!(inv.len(), 200);
        drop(inv);
        let inv = Inventory::open(&dir).expect("reopen");
        assert_eq!(inv.len(), 200);
        for n in 0..200 {
            let stored = inv.get(&client(n, "").id).expect("on disk");
            assert_eq!(stored.secret_hash, client(n, "").secret_hash);
        }
        drop(inv);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn enrollments_of_one_hostname_in_one_group_get_distinct_tags() {
        let dir = temp_dir("tags");
        let m = Arc::new(Metrics::default());
        let inv = Inventory::start(&dir, m.clone(), SLOW).expect("open");
        smol::block_on(inv.enroll(client(0, "other"))).expect("enroll");
        // Waiting together for the next round (here: the one of closing).
        let pending: Vec<_> = (1..=3).map(|n| inv.enroll(client(n, "pi"))).collect();
        let mut clone = client(4, "pi");
        clone.cloned_from = client(1, "").id;
        clone.installation = "copy".into();
        let clone_pending = inv.enroll(clone);
        assert!(
            inv.get(&client(1, "").id).is_none(),
            "served before its fsync"
        );
        assert_eq!(
            inv.clone_of(&client(1, "").id, "copy").map(|r| r.id),
            Some(client(4, "").id),
            "a clone being enrolled is found"
        );
        inv.close().expect("close");
        assert_eq!(counts(&m).1, 2, "one fsync for the group");
        let mut tags: Vec<String> = smol::block_on(async {
            let mut tags = Vec::new();
            for p in pending.into_iter().chain([clone_pending]) {
                tags.push(p.await.expect("enrolled").host_tag);
            }
            tags
        });
        tags.sort();
        assert_eq!(
            tags,
            [
                "pi",
                &format!("pi~{}", &client(2, "").id[..8]),
                &format!("pi~{}", client(3, "").id),
                &format!("pi~{}", client(4, "").id),
            ]
        );
        drop(inv);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_update_is_on_disk_after_close() {
        let dir = temp_dir("close");
        let inv = Inventory::open(&dir).expect("open");
        let id = client(7, "pi").id;
        smol::block_on(inv.enroll(client(7, "pi"))).expect("enroll");
        inv.update(&id, |r| {
            r.epoch = 9;
            r.last_acked_seq = 77;
            r.hostname = "pi-renamed".into();
        })
        .expect("known");
        inv.close().expect("close");
        // Closed: a new enrollment is refused, not lost.
        assert!(smol::block_on(inv.enroll(client(8, "x"))).is_err());
        drop(inv);
        let inv = Inventory::open(&dir).expect("reopen");
        let got = inv.get(&id).expect("kept");
        assert_eq!((got.epoch, got.last_acked_seq), (9, 77));
        assert_eq!(
            (got.hostname.as_str(), got.tag()),
            ("pi-renamed", "pi-renamed")
        );
        drop(inv);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn threads_now() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Threads:"))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Peak thread count while `f` runs, sampled every 5 ms.
    fn peak_threads<T>(f: impl FnOnce() -> T) -> (T, u64) {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = std::thread::spawn({
            let done = done.clone();
            move || {
                let mut peak = 0;
                while !done.load(Ordering::Relaxed) {
                    peak = peak.max(threads_now());
                    std::thread::sleep(Duration::from_millis(5));
                }
                peak
            }
        });
        let out = f();
        done.store(true, Ordering::Relaxed);
        (out, sampler.join().unwrap_or(0))
    }

    /// Enrollment rate, grouped fsyncs vs the former one fsync per client through the blocking
    /// pool. Prints figures; run with
    /// `cargo test -p autofactory --release --lib enrollment_rate -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn enrollment_rate_grouped_vs_one_fsync_each() {
        const N: usize = 10_000;
        // Grouped: the writer thread.
        let dir = temp_dir("rate-grouped");
        let m = Arc::new(Metrics::default());
        let inv = Inventory::open_with(&dir, m.clone()).expect("open");
        let start = Instant::now();
        let (_, peak) = peak_threads(|| {
            let pending: Vec<_> = (0..N)
                .map(|n| inv.enroll(client(n, &format!("pi-{n}"))))
                .collect();
            smol::block_on(async {
                for p in pending {
                    p.await.expect("enrolled");
                }
            })
        });
        let took = start.elapsed();
        println!(
            "grouped: {N} enrollments in {took:?} = {:.0}/s, {} fsyncs, peak {peak} threads",
            N as f64 / took.as_secs_f64(),
            counts(&m).1
        );
        drop(inv);
        let _ = std::fs::remove_dir_all(&dir);

        // Before: every enrollment its host tag, an insert and an fsync under the one lock,
        // through smol::unblock (as `enroll` was until the writer thread).
        let dir = temp_dir("rate-each");
        let store = open_store(&dir.join("inventory")).expect("open");
        let store = Arc::new(Mutex::new((HashMap::new(), store)));
        let start = Instant::now();
        let (fsyncs, peak) = peak_threads(|| {
            let pending: Vec<_> = (0..N)
                .map(|n| {
                    let store = store.clone();
                    smol::unblock(move || {
                        let mut rec = client(n, &format!("pi-{n}"));
                        let mut guard = store.lock().unwrap_or_else(|p| p.into_inner());
                        let (cache, s) = &mut *guard;
                        rec.host_tag = assign_tag(cache.values(), &rec).0;
                        s.clients
                            .insert(rec.id.as_bytes(), rec.serialize_json().into_bytes())
                            .and_then(|()| s.db.persist(fjall::PersistMode::SyncAll))
                            .expect("write");
                        cache.insert(rec.id.clone(), rec);
                    })
                })
                .collect();
            smol::block_on(async {
                for p in pending {
                    p.await;
                }
            });
            N
        });
        let took = start.elapsed();
        println!(
            "one fsync each: {N} enrollments in {took:?} = {:.0}/s, {fsyncs} fsyncs, peak {peak} threads",
            N as f64 / took.as_secs_f64(),
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Acks' updates of 10,000 clients from two threads, through the writer vs the former
    /// insert per update under the lock. Prints figures; run with
    /// `cargo test -p autofactory --lib update_rate -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn update_rate_coalesced_vs_one_insert_each() {
        const CLIENTS: usize = 10_000;
        const UPDATES: u64 = 200_000;
        let dir = temp_dir("upd-writer");
        let m = Arc::new(Metrics::default());
        let inv = Arc::new(Inventory::open_with(&dir, m.clone()).expect("open"));
        smol::block_on(async {
            let pending: Vec<_> = (0..CLIENTS)
                .map(|n| inv.enroll(client(n, &format!("pi-{n}"))))
                .collect();
            for p in pending {
                p.await.expect("enrolled");
            }
        });
        let before = counts(&m).0;
        let start = Instant::now();
        let threads: Vec<_> = (0..2u64)
            .map(|t| {
                let inv = inv.clone();
                std::thread::spawn(move || {
                    for u in (t..UPDATES).step_by(2) {
                        let id = client(u as usize % CLIENTS, "").id;
                        inv.update(&id, |r| r.last_acked_seq = u);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("updating thread");
        }
        let took = start.elapsed();
        inv.close().expect("close");
        println!(
            "writer: {UPDATES} updates of {CLIENTS} clients in {took:?} = {:.0}/s, {} writes",
            UPDATES as f64 / took.as_secs_f64(),
            counts(&m).0 - before
        );
        drop(inv);
        let _ = std::fs::remove_dir_all(&dir);

        let dir = temp_dir("upd-each");
        let store = open_store(&dir.join("inventory")).expect("open");
        let cache: HashMap<String, ClientRecord> = (0..CLIENTS)
            .map(|n| (client(n, "").id, client(n, &format!("pi-{n}"))))
            .collect();
        let state = Arc::new(Mutex::new((cache, store)));
        let start = Instant::now();
        let threads: Vec<_> = (0..2u64)
            .map(|t| {
                let state = state.clone();
                std::thread::spawn(move || {
                    for u in (t..UPDATES).step_by(2) {
                        let id = client(u as usize % CLIENTS, "").id;
                        let mut guard = state.lock().unwrap_or_else(|p| p.into_inner());
                        let (cache, s) = &mut *guard;
                        let rec = cache.get_mut(&id).expect("known");
                        rec.last_acked_seq = u;
                        s.clients
                            .insert(id.as_bytes(), rec.serialize_json().into_bytes())
                            .expect("write");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("updating thread");
        }
        let took = start.elapsed();
        println!(
            "one insert each: {UPDATES} updates of {CLIENTS} clients in {took:?} = {:.0}/s, {UPDATES} writes",
            UPDATES as f64 / took.as_secs_f64(),
        );
        drop(state);
        let _ = std::fs::remove_dir_all(&dir);
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
