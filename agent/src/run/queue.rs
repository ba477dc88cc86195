//! The agent's queue of facts not yet acknowledged, and the store thread that fills it.
//!
//! The collection thread hands each snapshot to the store thread over a bounded channel and goes
//! back to collecting: it never waits on a write, an fsync or a compaction. The store thread
//! writes each snapshot to the disk buffer's `pending` keyspace as soon as it gets it (so a
//! `kill -9` between two pushes loses nothing), gathers the pending snapshots into batches at
//! each push (no batch above the factory's `max_message_bytes`), and makes the buffer durable
//! every flush interval. A slow disk therefore delays batches and acks, never collection.
//!
//! When the disk refuses a write (ENOSPC: `disk_full`; EROFS, EACCES: `read_only`; anything
//! else: `disk_failed`), the store thread keeps snapshots and batches in a bounded memory queue
//! that the session sends from, reports the state (health fact, Hello, Batch), and tries to
//! reopen the disk buffer every [`RETRY`]; once that succeeds it goes back to disk, without a
//! restart. A buffer is never moved aside for such a fault. What can be lost: snapshots over the
//! memory bound (counted in `dropped_snapshots`), and, at a power cut, the last flush interval.
//!
//! Seqs stay monotonic across disk and memory (memory batches take seqs above the disk's, and a
//! reopened buffer is moved past them), and every batch carries this run's random epoch, so an
//! (epoch, seq) pair is never reused for other facts.

use super::state::StateDir;
use super::Log;
use crate::buffer::{Buffer, BufferError, DiskFault};
use crate::clock;
use autofact_fbs::{Batch, BufferState, Message, Snapshot};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often the store thread tries the disk again while it refuses writes.
pub const RETRY: Duration = Duration::from_secs(2);
/// Snapshots waiting for the store thread; past this (a disk stuck for ten minutes at a 1 s
/// period) the newest are dropped and counted rather than growing without bound.
const SPOOL: usize = 600;
/// Bytes of batches the memory queue holds while the disk refuses writes; the oldest are dropped
/// (and their snapshots counted) past it.
pub const MEMORY_CAP_BYTES: u64 = 8 * 1024 * 1024;
/// The message size limit assumed when the factory does not say (a first-release factory sends
/// 0): far below any factory's default (4 MiB) and above a 10-snapshot batch of a large server.
pub const SAFE_MESSAGE_BYTES: u32 = 512 * 1024;
/// Room left for what the session stamps on a batch when it sends it (clock fields, state).
const STAMP_ROOM: usize = 256;
/// Failed reopens of a disk failing for an unknown reason before the agent gives up (exit 1).
const MAX_FAILED_REOPENS: u32 = 5;
/// The dead-letter file in the data dir: each record is the batch's length (8 bytes big-endian)
/// then the encoded Batch exactly as refused.
pub const DEAD_LETTER_FILE: &str = "dead-letter-batches";

/// Batches kept in memory while the disk refuses writes.
#[derive(Debug, Default)]
struct Mem {
    /// seq -> (encoded batch, snapshots in it).
    batches: BTreeMap<u64, (Vec<u8>, u64)>,
    bytes: u64,
}

/// The queue the session sends from. Shared by the store thread (which writes), the session
/// (which reads, acks and dead-letters) and the collection thread (which reads its counters).
pub struct Queue {
    dir: PathBuf,
    data_dir: PathBuf,
    epoch: u64,
    disk: Mutex<Option<Arc<Buffer>>>,
    mem: Mutex<Mem>,
    /// The seq the next memory batch gets.
    mem_next: AtomicU64,
    state: AtomicU8,
    dead_letters: AtomicU64,
    dropped_snapshots: AtomicU64,
    /// Every disk seq below this is durable.
    durable_next: AtomicU64,
    /// Disk figures as of the store thread's last write (read without touching the disk).
    disk_batches: AtomicU64,
    disk_bytes: AtomicU64,
    disk_dropped: AtomicU64,
    fatal: Mutex<Option<String>>,
    log: Log,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("dir", &self.dir).finish()
    }
}

/// Figures for the health fact.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueStats {
    /// Batches not yet acked, on disk and in memory.
    pub batches: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Batches dropped by the disk buffer's cap.
    pub dropped_batches: u64,
    /// Where new snapshots go.
    pub state: BufferState,
    /// Batches held in memory.
    pub memory_batches: u64,
    /// Batches moved to the dead-letter file.
    pub dead_letters: u64,
    /// Snapshots dropped (memory bound, or the store thread's backlog).
    pub dropped_snapshots: u64,
}

fn state_code(s: BufferState) -> u8 {
    match s {
        BufferState::Disk => 0,
        BufferState::DiskFull => 1,
        BufferState::ReadOnly => 2,
        BufferState::DiskFailed => 3,
    }
}

fn state_of(code: u8) -> BufferState {
    match code {
        1 => BufferState::DiskFull,
        2 => BufferState::ReadOnly,
        3 => BufferState::DiskFailed,
        _ => BufferState::Disk,
    }
}

fn fault_state(f: DiskFault) -> BufferState {
    match f {
        DiskFault::Full => BufferState::DiskFull,
        DiskFault::ReadOnly => BufferState::ReadOnly,
        DiskFault::Other => BufferState::DiskFailed,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Queue {
    /// Opens the disk buffer in `dir`; when the disk refuses, starts in memory (one line says
    /// why). Only a buffer locked by another agent is an error.
    pub fn open(dir: &Path, data_dir: &Path, cap: u64, log: Log) -> Result<Queue, BufferError> {
        let q = Queue {
            dir: dir.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            epoch: clock::random_u64().max(1),
            disk: Mutex::new(None),
            mem: Mutex::new(Mem::default()),
            mem_next: AtomicU64::new(0),
            state: AtomicU8::new(0),
            dead_letters: AtomicU64::new(0),
            dropped_snapshots: AtomicU64::new(0),
            durable_next: AtomicU64::new(0),
            disk_batches: AtomicU64::new(0),
            disk_bytes: AtomicU64::new(0),
            disk_dropped: AtomicU64::new(0),
            fatal: Mutex::new(None),
            log,
        };
        match Buffer::open(dir, cap) {
            Ok(b) => {
                q.set_disk(Some(Arc::new(b)));
            }
            Err(e @ BufferError::Locked { .. }) => return Err(e),
            Err(e) => {
                // As a fresh buffer would: seqs start at the clock (the epoch tells runs apart).
                let fresh = u64::try_from(clock::now_ns() / 1000).unwrap_or(1).max(1);
                q.mem_next.store(fresh, Ordering::Relaxed);
                q.to_memory(&e);
            }
        }
        Ok(q)
    }

    /// This run's random epoch, carried by every batch built in it and by Hello.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Where new snapshots go right now.
    pub fn state(&self) -> BufferState {
        state_of(self.state.load(Ordering::Relaxed))
    }

    /// The buffer directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Why the agent must stop (the disk failed and could not be reopened), once it must.
    pub fn fatal(&self) -> Option<String> {
        lock(&self.fatal).clone()
    }

    fn disk(&self) -> Option<Arc<Buffer>> {
        lock(&self.disk).clone()
    }

    fn set_disk(&self, b: Option<Arc<Buffer>>) {
        if let Some(b) = &b {
            // Memory batches already use seqs up to mem_next: the disk continues above them.
            b.reserve(self.mem_next.load(Ordering::Relaxed));
            self.refresh(b);
            self.state.store(0, Ordering::Relaxed);
        }
        *lock(&self.disk) = b;
    }

    fn refresh(&self, b: &Buffer) {
        let s = b.stats();
        self.disk_batches.store(s.batches, Ordering::Relaxed);
        self.disk_bytes.store(s.bytes, Ordering::Relaxed);
        self.disk_dropped.store(s.dropped, Ordering::Relaxed);
        self.mem_next.fetch_max(s.next_seq, Ordering::Relaxed);
    }

    /// Switches to memory after `e`; logs one line when the state changes.
    fn to_memory(&self, e: &BufferError) {
        let new = fault_state(e.fault());
        let old = state_of(self.state.swap(state_code(new), Ordering::Relaxed));
        if old != new {
            self.log.line(format_args!(
                "disk buffer {} refuses writes ({e}): keeping up to {} MiB of batches in memory and sending from there ({})",
                self.dir.display(),
                MEMORY_CAP_BYTES >> 20,
                new.as_str()
            ));
        }
    }

    /// The counters, without touching the disk.
    pub fn stats(&self) -> QueueStats {
        let mem = lock(&self.mem);
        QueueStats {
            batches: self.disk_batches.load(Ordering::Relaxed) + mem.batches.len() as u64,
            bytes: self.disk_bytes.load(Ordering::Relaxed) + mem.bytes,
            dropped_batches: self.disk_dropped.load(Ordering::Relaxed),
            state: self.state(),
            memory_batches: mem.batches.len() as u64,
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            dropped_snapshots: self.dropped_snapshots.load(Ordering::Relaxed),
        }
    }

    /// Up to `max` batches with seq > `after`, oldest first, from disk and memory. Blocking.
    pub fn window(&self, after: u64, max: usize) -> Vec<(u64, Vec<u8>)> {
        let mut out = match self.disk() {
            Some(b) => match b.window(after, max) {
                Ok(w) => w,
                Err(e) => {
                    self.log.line(format_args!("reading the disk buffer: {e}"));
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        {
            let mem = lock(&self.mem);
            out.extend(
                mem.batches
                    .range(after.saturating_add(1)..)
                    .take(max)
                    .map(|(s, (b, _))| (*s, b.clone())),
            );
        }
        out.sort_by_key(|(s, _)| *s);
        out.truncate(max);
        out
    }

    /// Makes the disk batch `seq` durable before it is first sent (a batch the factory has seen
    /// is never lost to a power cut). Blocking; a slow disk delays the send, never collection.
    pub fn ensure_durable(&self, seq: u64) {
        if seq < self.durable_next.load(Ordering::Acquire) || self.state() != BufferState::Disk {
            return;
        }
        if let Some(b) = self.disk() {
            let next = b.stats().next_seq;
            if b.flush().is_ok() {
                self.durable_next.fetch_max(next, Ordering::AcqRel);
            }
        }
    }

    /// Cumulative ack. Never fails: an ack the disk refuses only means those batches are sent
    /// again after the disk is back (the factory skips what it has). Blocking.
    pub fn ack(&self, seq: u64) {
        {
            let mut mem = lock(&self.mem);
            let keep = mem.batches.split_off(&seq.saturating_add(1));
            mem.batches = keep;
            mem.bytes = mem.batches.values().map(|(b, _)| b.len() as u64).sum();
        }
        if let Some(b) = self.disk() {
            if self.state() == BufferState::Disk {
                if let Err(e) = b.ack(seq) {
                    self.log.line(format_args!("ack not recorded: {e}"));
                }
                self.refresh(&b);
            }
        }
    }

    /// The factory refused batch `seq` for good (malformed or too large): it goes to the
    /// dead-letter file in the data dir, is counted, and leaves the queue. Blocking.
    pub fn dead_letter(&self, seq: u64) {
        let bytes = self
            .window(seq.saturating_sub(1), 1)
            .into_iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, b)| b);
        let path = self.data_dir.join(DEAD_LETTER_FILE);
        let written = bytes.as_ref().map(|b| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| {
                    f.write_all(&(b.len() as u64).to_be_bytes())?;
                    f.write_all(b)?;
                    f.sync_data()
                })
        });
        let how = match written {
            Some(Ok(())) => format!("kept in {}", path.display()),
            Some(Err(e)) => format!("could not be kept in {}: {e}", path.display()),
            None => "already gone".to_string(),
        };
        self.dead_letters.fetch_add(1, Ordering::Relaxed);
        self.log.line(format_args!(
            "the factory refused batch {seq} for good; {how}; sending the batches behind it"
        ));
        self.ack(seq);
    }

    fn drop_snapshots(&self, n: u64) {
        self.dropped_snapshots.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds memory batches, dropping the oldest past the memory bound.
    fn push_mem(&self, batches: Vec<(u64, Vec<u8>, u64)>) {
        let mut mem = lock(&self.mem);
        for (seq, b, n) in batches {
            mem.bytes += b.len() as u64;
            mem.batches.insert(seq, (b, n));
        }
        while mem.bytes > MEMORY_CAP_BYTES && mem.batches.len() > 1 {
            if let Some((_, (b, n))) = mem.batches.pop_first() {
                mem.bytes -= b.len() as u64;
                self.dropped_snapshots.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
}

/// What the collection thread sends the store thread.
#[derive(Debug)]
pub enum Item {
    /// A collected snapshot.
    Snap(Box<Snapshot>),
    /// Push: gather what is pending into batches.
    Seal,
    /// The factory's limits changed: message size (0 = not said) and buffer cap.
    Limits(u32, u64),
    /// A new Config to keep in `data_dir/config.json` for the next start.
    SaveConfig(Box<autofact_fbs::Config>),
    /// Gather, flush and end.
    Stop,
}

/// The collection thread's end of the store thread's channel.
#[derive(Debug, Clone)]
pub struct Spool {
    tx: mpsc::SyncSender<Item>,
    queue: Arc<Queue>,
}

impl Spool {
    /// Hands an item over without ever blocking; a full spool drops the snapshot and counts it.
    pub fn send(&self, item: Item) {
        if let Err(mpsc::TrySendError::Full(Item::Snap(_))) = self.tx.try_send(item) {
            self.queue.drop_snapshots(1);
        }
    }

    /// Blocking send, for the final items at stop.
    pub fn send_wait(&self, item: Item) {
        let _ = self.tx.send(item);
    }
}

/// Settings of the store thread.
#[derive(Debug, Clone, Copy)]
pub struct StoreTiming {
    /// Background flush interval.
    pub flush_every: Duration,
    /// Test seam: each fsync of the buffer takes at least this long (a slow SD card).
    pub slow_disk: Duration,
}

/// Starts the store thread; returns the spool to feed it and its handle.
pub fn spawn_store(
    queue: Arc<Queue>,
    timing: StoreTiming,
    notify: smol::channel::Sender<()>,
    limits: (u32, u64),
    state: StateDir,
) -> std::io::Result<(Spool, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::sync_channel(SPOOL);
    let spool = Spool {
        tx,
        queue: queue.clone(),
    };
    let mut store = Store {
        queue,
        timing,
        notify,
        max_bytes: limits.0,
        cap: limits.1,
        mem_pending: Vec::new(),
        disk_pending: None,
        last_flush: Instant::now(),
        last_retry: Instant::now(),
        failed_reopens: 0,
        state,
    };
    let handle = std::thread::Builder::new()
        .name("autofact-store".into())
        .spawn(move || store.run(rx))?;
    Ok((spool, handle))
}

struct Store {
    queue: Arc<Queue>,
    timing: StoreTiming,
    notify: smol::channel::Sender<()>,
    max_bytes: u32,
    cap: u64,
    /// Snapshots collected while the disk refuses writes, not yet in a memory batch.
    mem_pending: Vec<Snapshot>,
    /// The last pending key written to disk and not yet sealed.
    disk_pending: Option<u64>,
    last_flush: Instant,
    last_retry: Instant,
    failed_reopens: u32,
    state: StateDir,
}

fn one_snapshot(s: Snapshot) -> Vec<u8> {
    autofact_fbs::encode(&Message::Batch(Batch {
        snapshots: vec![s],
        ..Batch::default()
    }))
}

impl Store {
    fn run(&mut self, rx: mpsc::Receiver<Item>) {
        // Snapshots a killed agent left pending go out with the first push.
        if let Some(b) = self.queue.disk() {
            if let Ok(p) = b.pending() {
                self.disk_pending = p.last().map(|(k, _)| *k);
            }
        }
        loop {
            let wait = self.timing.flush_every.min(RETRY);
            let first = match rx.recv_timeout(wait) {
                Ok(item) => Some(item),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => Some(Item::Stop),
            };
            // Everything queued is written before the next fsync, so a slow fsync delays a
            // batch of snapshots, never piles them up one fsync each.
            let mut next = first;
            while let Some(item) = next {
                if !self.handle(item) {
                    return;
                }
                next = rx.try_recv().ok();
            }
            if self.last_flush.elapsed() >= self.timing.flush_every {
                self.flush();
            }
            if self.queue.state() != BufferState::Disk && self.last_retry.elapsed() >= RETRY {
                self.reopen();
            }
        }
    }

    /// Handles one item; false once stopped.
    fn handle(&mut self, item: Item) -> bool {
        match item {
            Item::Snap(s) => self.add(*s),
            Item::Seal => self.seal(),
            Item::Limits(max, cap) => {
                self.max_bytes = max;
                self.cap = cap;
                if let Some(b) = self.queue.disk() {
                    b.set_cap(cap);
                }
            }
            Item::SaveConfig(c) => {
                if let Err(e) = self.state.save_config(&c) {
                    self.queue
                        .log
                        .line(format_args!("{e} (the Config is applied anyway)"));
                }
            }
            Item::Stop => {
                self.seal();
                self.flush();
                return false;
            }
        }
        true
    }

    /// The disk refused a write: memory from now on, and the next reopen one [`RETRY`] later
    /// (an immediate reopen would flap between disk and memory on every write). Snapshots
    /// pending on disk stay there (they are sealed when the disk is back) and a copy goes out
    /// from memory now, so a disk that never comes back hides nothing: sent twice at worst,
    /// which writes the same points again.
    fn fail(&mut self, e: &BufferError, b: &Buffer) {
        self.queue.to_memory(e);
        self.last_retry = Instant::now();
        if self.disk_pending.take().is_some() {
            if let Ok(p) = b.pending() {
                let mut snaps: Vec<Snapshot> =
                    p.iter().flat_map(|(_, v)| decode_snaps(v)).collect();
                snaps.append(&mut self.mem_pending);
                self.mem_pending = snaps;
            }
        }
    }

    fn slow(&self) {
        if !self.timing.slow_disk.is_zero() {
            std::thread::sleep(self.timing.slow_disk);
        }
    }

    /// The disk, when it takes writes.
    fn writable(&self) -> Option<Arc<Buffer>> {
        if self.queue.state() == BufferState::Disk {
            self.queue.disk()
        } else {
            None
        }
    }

    fn add(&mut self, s: Snapshot) {
        let Some(b) = self.writable() else {
            self.mem_pending.push(s);
            return;
        };
        let bytes = one_snapshot(s.clone());
        match b.add_pending(&bytes) {
            Ok(k) => self.disk_pending = Some(k),
            Err(e) => {
                self.fail(&e, &b);
                self.mem_pending.push(s);
            }
        }
    }

    fn limit(&self) -> usize {
        let max = if self.max_bytes == 0 {
            SAFE_MESSAGE_BYTES
        } else {
            self.max_bytes
        };
        (max as usize).saturating_sub(STAMP_ROOM).max(512)
    }

    /// Splits `snaps` into groups whose batch fits the limit; a snapshot too large on its own
    /// goes to the dead-letter file.
    fn groups(&self, snaps: Vec<Snapshot>) -> Vec<Vec<Snapshot>> {
        let limit = self.limit();
        let mut out = Vec::new();
        let mut todo = vec![snaps];
        while let Some(g) = todo.pop() {
            if g.is_empty() {
                continue;
            }
            let size = self.encode(u64::MAX, g.clone()).len();
            if size <= limit {
                out.push(g);
            } else if g.len() == 1 {
                let bytes = self.encode(0, g);
                self.dead_letter_now(&bytes);
            } else {
                let mut a = g;
                let b = a.split_off(a.len() / 2);
                // Popped last-in first-out: push the later half first to keep the order.
                todo.push(b);
                todo.push(a);
            }
        }
        out
    }

    fn dead_letter_now(&self, bytes: &[u8]) {
        let path = self.queue.data_dir.join(DEAD_LETTER_FILE);
        let res = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| {
                f.write_all(&(bytes.len() as u64).to_be_bytes())?;
                f.write_all(bytes)
            });
        self.queue.dead_letters.fetch_add(1, Ordering::Relaxed);
        self.queue.log.line(format_args!(
            "one snapshot alone is larger than the factory's message limit ({} bytes): {}",
            self.limit(),
            match res {
                Ok(()) => format!("kept in {}", path.display()),
                Err(e) => format!("could not be kept in {}: {e}", path.display()),
            }
        ));
    }

    fn encode(&self, seq: u64, snapshots: Vec<Snapshot>) -> Vec<u8> {
        autofact_fbs::encode(&Message::Batch(Batch {
            seq,
            epoch: self.queue.epoch,
            snapshots,
            buffer_state: self.queue.state(),
            ..Batch::default()
        }))
    }

    /// Push: pending snapshots become batches (on disk, or in memory while it refuses).
    fn seal(&mut self) {
        if let Some(b) = self.writable() {
            if let Some(upto) = self.disk_pending {
                match self.seal_disk(&b, upto) {
                    Ok(()) => {
                        self.disk_pending = None;
                        self.queue.refresh(&b);
                    }
                    Err(e) => self.fail(&e, &b),
                }
            }
        }
        if !self.mem_pending.is_empty() {
            let snaps = std::mem::take(&mut self.mem_pending);
            let groups = self.groups(snaps);
            let batches = groups
                .into_iter()
                .map(|g| {
                    let n = g.len() as u64;
                    let seq = self.queue.mem_next.fetch_add(1, Ordering::Relaxed);
                    (seq, self.encode(seq, g), n)
                })
                .collect();
            self.queue.push_mem(batches);
        }
        let _ = self.notify.try_send(());
    }

    fn seal_disk(&self, b: &Buffer, upto: u64) -> Result<(), BufferError> {
        let pending = b.pending()?;
        let snaps: Vec<Snapshot> = pending
            .iter()
            .filter(|(k, _)| *k <= upto)
            .flat_map(|(_, v)| decode_snaps(v))
            .collect();
        let groups = self.groups(snaps);
        b.seal(Some(upto), |first| {
            groups
                .into_iter()
                .enumerate()
                .map(|(i, g)| self.encode(first + i as u64, g))
                .collect()
        })?;
        Ok(())
    }

    fn flush(&mut self) {
        self.last_flush = Instant::now();
        let Some(b) = self.writable() else { return };
        self.slow();
        let next = b.stats().next_seq;
        match b.flush() {
            Ok(()) => {
                self.queue.durable_next.fetch_max(next, Ordering::AcqRel);
            }
            Err(e) => self.fail(&e, &b),
        }
    }

    /// Tries the disk again: the old (poisoned) buffer is closed and the directory reopened.
    fn reopen(&mut self) {
        self.last_retry = Instant::now();
        // Close the failed buffer first: its lock must be free for the reopen.
        self.queue.set_disk(None);
        match Buffer::open(&self.queue.dir, self.cap) {
            Ok(b) => {
                let b = Arc::new(b);
                self.queue.set_disk(Some(b.clone()));
                self.failed_reopens = 0;
                self.disk_pending = b.pending().ok().and_then(|p| p.last().map(|(k, _)| *k));
                self.queue.log.line(format_args!(
                    "disk buffer {} accepts writes again: back to disk",
                    self.queue.dir.display()
                ));
                // Snapshots not yet in a batch go to disk; memory batches stay in memory
                // until acked (their seqs are below the disk's from now on).
                for s in std::mem::take(&mut self.mem_pending) {
                    self.add(s);
                }
            }
            Err(e) => {
                if e.fault() == DiskFault::Other && !matches!(e, BufferError::Locked { .. }) {
                    self.failed_reopens += 1;
                    if self.failed_reopens >= MAX_FAILED_REOPENS {
                        *lock(&self.queue.fatal) = Some(format!(
                            "disk buffer {} failed and could not be reopened {} times: {e}",
                            self.queue.dir.display(),
                            self.failed_reopens
                        ));
                        let _ = self.notify.try_send(());
                    }
                }
            }
        }
    }
}

fn decode_snaps(bytes: &[u8]) -> Vec<Snapshot> {
    match autofact_fbs::decode(bytes) {
        Ok(Message::Batch(b)) => b.snapshots,
        _ => Vec::new(),
    }
}
