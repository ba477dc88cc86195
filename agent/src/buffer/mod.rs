//! The agent's persistent batch queue: every encoded Batch waits here, on disk, until the factory acks it.
//!
//! # On-disk format (version 1)
//!
//! A buffer is one directory `dir` that this module owns entirely:
//!
//! ```text
//! dir/LOCK      flock(2)ed while a Buffer is open: a second agent on the same directory gets `Locked`
//! dir/FORMAT    "autofact-buffer 1\n": the format version, written (tmp + rename + fsync) before anything else
//! dir/OPENING   present only while an open is in progress: the number of opens started and not finished
//! dir/db/       a fjall 3 database with two keyspaces:
//!                 "batches"  key = seq as 8 big-endian bytes (so key order = seq order),
//!                            value = the encoded Batch, exactly as `append`'s closure returned it
//!                 "meta"     key "next_seq" = the next seq to assign, 8 big-endian bytes
//!                            key "p" + 8 big-endian bytes (added in release 0.2) = one
//!                            collected snapshot not yet in a batch (encoded by the caller), in
//!                            collection order. In "meta" rather than a keyspace of their own:
//!                            creating a keyspace costs a new buffer about 20 fsyncs, and an older
//!                            release, which only reads "next_seq", ignores these keys.
//! ```
//!
//! A snapshot is stored as pending when it is collected ([`Buffer::add_pending`]); at each push
//! [`Buffer::seal`] turns the pending snapshots into batches and deletes them from "meta" in one
//! atomic write, so a kill between two pushes loses nothing and a snapshot is never in two batches.
//!
//! `meta/next_seq` is written when the buffer is created and in the same atomic fjall write batch as
//! every deletion (ack or drop-oldest), so after any crash `max(meta/next_seq, last key + 1)` is at
//! least every seq that was ever assigned and survived: a seq is never reused, even when every batch was
//! acked and deleted. A fresh buffer starts at the current Unix time in microseconds rather than at 1, so
//! a buffer that had to be moved aside (see below) does not restart below the seqs the factory already
//! acknowledged (it skips seqs it has acked). That holds as long as the clock was right when the buffer
//! was created; a board without an RTC that boots at 1970 can still restart low.
//!
//! # Durability
//!
//! - **Process kill (SIGKILL, panic=abort, OOM kill): no appended batch is lost.** fjall writes every
//!   commit to its journal file; with `manual_journal_persist` left `false` (fjall's default), each write
//!   batch ends with `PersistMode::Buffer`, which flushes fjall's user-space `BufWriter` into the kernel
//!   (`write(2)`) before `commit` returns. When [`Buffer::append`] returns, the batch is in the page cache,
//!   which survives the death of the process. Recovery replays the journal.
//! - **Power loss / kernel crash: at most the last flush interval is lost.** [`Buffer::flush`] calls
//!   `PersistMode::SyncData` (`fdatasync` of the journal; the journal file is preallocated, so its size
//!   never changes and fdatasync covers it; journal rotation and table writes fsync themselves). The
//!   session calls `flush` before it first sends a batch, so a batch the factory has seen is always
//!   durable, and a background task calls it every flush interval (default 1 s). fjall recovers a prefix
//!   of the journal, so what survives is always "everything up to some point", never a hole.
//!   A seq that was assigned but lost to a power cut was never sent, so reusing it is harmless.
//! - `flush` does nothing when nothing was appended since the last flush, so an idle agent does not
//!   touch the SD card. Acks are not synced on their own: after a power cut an acked batch can come
//!   back and be sent again (harmless: the factory skips seqs it already acked).
//!
//! # Corruption
//!
//! When the buffer cannot be opened (missing or garbled FORMAT, a newer format version, fjall refuses or
//! panics on its files, a stored key or meta value has the wrong shape), [`Buffer::open`] renames `dir`
//! to `dir.corrupt-<unix seconds>`, prints one line on stderr, and creates a fresh buffer. A panic inside
//! fjall is caught where panics unwind; where they abort (the release profile), the `OPENING` counter
//! catches it on the next start: after two opens that never finished, the buffer is moved aside, so the
//! agent never crash-loops on a poisoned buffer. A buffer locked by another process is an error, never
//! moved aside.
//!
//! # Size cap
//!
//! The cap counts value bytes (encoded batches). An append that would go past it first deletes the oldest
//! batches (counted in [`BufferStats::dropped`]); the batch being appended is always kept, even when it
//! alone is over the cap. [`Buffer::set_cap`] takes effect at the next append.
//!
//! # Memory
//!
//! fjall is tuned for a small board (see the constants in `store.rs`): 128 KiB block cache, 256 KiB
//! memtables with writers held back while more than 384 KiB is unflushed, 32 KiB data blocks (fewer
//! index entries per buffered batch), no bloom filters (reads are range scans), two worker threads.
//! `examples/buffer_rss.rs` measures the resulting RSS, `examples/buffer_bench.rs` the throughput and
//! the bytes written to disk.
//!
//! A full disk (ENOSPC, EDQUOT) or a read-only one (EROFS, EACCES, EPERM) met while opening is never
//! a reason to move a buffer aside: the open fails with that error ([`BufferError::fault`]) and the
//! caller retries later. `OPENING` is replaced by rename, and an unparsable count reads as 0, so a
//! write cut by a full disk never reads as crashed opens.
//!
//! # Errors
//!
//! After a failed write fjall refuses every later one ([`BufferError::is_fatal`]). The agent's store
//! thread (`run::queue`) then keeps batches in memory, drops this `Buffer` and reopens the directory
//! until the disk takes writes again.

mod error;
mod store;

pub use error::{fault_of, BufferError, DiskFault};

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use fjall::{Database, Keyspace, PersistMode};

/// Default cap until the factory pushes a Config (same as the protocol's default `buffer_cap_bytes`).
pub const DEFAULT_CAP_BYTES: u64 = 64 * 1024 * 1024;

/// How many batches one ack deletes per fjall write batch: bounds the memory an ack of a long backlog
/// needs. Each chunk is atomic on its own, and a partly applied cumulative ack is still a valid state.
const ACK_CHUNK: usize = 1024;

/// Writers wait while fjall's memtables (active + sealed, not yet flushed) hold more than this...
const WRITE_BUFFER_LIMIT: u64 = store::MEMTABLE_BYTES + store::MEMTABLE_BYTES / 2;
/// ...checking this often...
const BACKPRESSURE_STEP: std::time::Duration = std::time::Duration::from_millis(5);
/// ...for at most this long, so a stuck fjall worker slows appends down but never stops them.
const BACKPRESSURE_MAX: std::time::Duration = std::time::Duration::from_secs(2);

/// Counters describing the buffer, for the agent's health fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferStats {
    /// Batches currently stored (appended and not yet acked or dropped).
    pub batches: u64,
    /// Sum of the stored batches' encoded sizes, in bytes.
    pub bytes: u64,
    /// Batches deleted by the size cap since this `Buffer` was opened.
    pub dropped: u64,
    /// The seq the next `append` will assign.
    pub next_seq: u64,
}

/// The in-memory view of the queue, kept equal to what is on disk.
#[derive(Debug)]
struct State {
    next_seq: u64,
    /// No stored key is below this (keys below it are acked or dropped); lets scans start past the
    /// tombstones of deleted batches instead of walking over them.
    oldest: u64,
    batches: u64,
    bytes: u64,
    dropped: u64,
    cap: u64,
    /// A batch was appended since the last `flush`.
    dirty: bool,
    /// The key the next pending snapshot gets.
    pending_next: u64,
}

/// A persistent FIFO of encoded batches keyed by seq. Cheap to call, but every method except
/// [`Buffer::set_cap`] and [`Buffer::stats`] does blocking disk I/O: call it from `smol::unblock`.
pub struct Buffer {
    dir: PathBuf,
    db: Database,
    batches: Keyspace,
    meta: Keyspace,
    state: Mutex<State>,
    /// Held for the life of the buffer; declared last so it is released after fjall has closed.
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buffer")
            .field("dir", &self.dir)
            .field("stats", &self.stats())
            .finish()
    }
}

// The session shares one Buffer between its collecting and sending tasks.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Buffer>();
};

fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// The meta key of pending snapshot `k`.
fn pending_key(k: u64) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[0] = store::PENDING_PREFIX;
    out[1..].copy_from_slice(&k.to_be_bytes());
    out
}

impl Buffer {
    /// Opens or creates the queue in `dir`; a corrupt/unreadable/newer-version buffer is moved aside to
    /// `<dir>.corrupt-<unix seconds>` with one clear log line (stderr), and a fresh one is created.
    pub fn open(dir: &Path, cap_bytes: u64) -> Result<Buffer, BufferError> {
        store::open(dir, cap_bytes)
    }

    /// The buffer directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The only code that can panic under the lock is the caller's `encode`, which runs before
        // anything changes, and counters are assigned only after fjall committed: State stays valid.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// fjall flushes memtables in the background and only stops writers at 4 sealed memtables, so a
    /// burst (a backlog being acked, a benchmark) can grow them far past `MEMTABLE_BYTES`, and every
    /// commit over the limit queues a rotation request for its workers. Waiting here bounds both the
    /// RAM and that queue. At one batch a second this never waits.
    fn backpressure(&self) {
        let start = std::time::Instant::now();
        while self.db.write_buffer_size() > WRITE_BUFFER_LIMIT && start.elapsed() < BACKPRESSURE_MAX
        {
            std::thread::sleep(BACKPRESSURE_STEP);
        }
    }

    fn store_err(&self, op: &'static str) -> impl FnOnce(fjall::Error) -> BufferError + '_ {
        move |source| BufferError::Store {
            op,
            path: self.dir.clone(),
            source,
        }
    }

    fn decode_key(&self, k: &[u8]) -> Result<u64, BufferError> {
        store::decode_seq(k).ok_or_else(|| BufferError::Corrupt {
            path: self.dir.clone(),
            what: format!("a batch key is {} bytes long, not 8", k.len()),
        })
    }

    fn decode_pending_key(&self, k: &[u8]) -> Result<u64, BufferError> {
        store::decode_pending(k).ok_or_else(|| BufferError::Corrupt {
            path: self.dir.clone(),
            what: format!("a pending key is {} bytes long, not 9", k.len()),
        })
    }

    /// Assigns the next seq, stores `encode(seq)` under it, returns the seq. Drops the oldest batches
    /// when the stored bytes would pass the cap; the new batch itself is always kept.
    pub fn append(&self, encode: impl FnOnce(u64) -> Vec<u8>) -> Result<u64, BufferError> {
        let seqs = self.seal(None, |seq| vec![encode(seq)])?;
        Ok(seqs.first().copied().unwrap_or(0))
    }

    /// Stores one collected snapshot (`bytes`, encoded by the caller) until [`Buffer::seal`]
    /// gathers it into a batch: this is how a snapshot is on disk from the moment it is
    /// collected, not from the next push.
    pub fn add_pending(&self, bytes: &[u8]) -> Result<u64, BufferError> {
        self.backpressure();
        let mut st = self.lock();
        let k = st.pending_next;
        self.meta
            .insert(pending_key(k), bytes)
            .map_err(self.store_err("store collected snapshot"))?;
        st.pending_next = k + 1;
        st.dirty = true;
        Ok(k)
    }

    /// The pending snapshots, oldest first, with their keys.
    pub fn pending(&self) -> Result<Vec<(u64, Vec<u8>)>, BufferError> {
        let mut out = Vec::new();
        for item in self.meta.prefix([store::PENDING_PREFIX]) {
            let (k, v) = item.into_inner().map_err(self.store_err("read pending"))?;
            out.push((self.decode_pending_key(&k)?, v.to_vec()));
        }
        Ok(out)
    }

    /// In one atomic write: stores the batches `encode(first seq)` returns under consecutive seqs,
    /// deletes the pending snapshots with keys <= `upto` (those the batches were built from), and
    /// drops the oldest batches when the stored bytes would pass the cap (the new batches are
    /// always kept). Returns the seqs assigned.
    pub fn seal(
        &self,
        upto: Option<u64>,
        encode: impl FnOnce(u64) -> Vec<Vec<u8>>,
    ) -> Result<Vec<u64>, BufferError> {
        // Wait for fjall outside the lock, so `stats` (the health fact) never waits on it.
        self.backpressure();
        let mut st = self.lock();
        let first = st.next_seq;
        let values = encode(first);
        let len: u64 = values.iter().map(|v| v.len() as u64).sum();
        let seqs: Vec<u64> = (first..first + values.len() as u64).collect();

        // Pick the oldest batches to drop so that the new ones fit under the cap.
        let excess = (st.bytes + len).saturating_sub(st.cap);
        let mut victims = Vec::new();
        let mut freed = 0u64;
        if excess > 0 {
            for item in self.batches.range(key(st.oldest)..) {
                if freed >= excess {
                    break;
                }
                let (k, v) = item
                    .into_inner()
                    .map_err(self.store_err("scan oldest batches"))?;
                victims.push(self.decode_key(&k)?);
                freed += v.len() as u64;
            }
        }
        let mut gathered = Vec::new();
        if let Some(upto) = upto {
            for item in self.meta.range(pending_key(0)..=pending_key(upto)) {
                let k = item.key().map_err(self.store_err("scan pending"))?;
                gathered.push(self.decode_pending_key(&k)?);
            }
        }

        // One atomic write: the new batches, the snapshots they hold, the room made for them.
        let mut wb = self.db.batch();
        for (seq, value) in seqs.iter().zip(values) {
            wb.insert(&self.batches, key(*seq), value);
        }
        for v in &victims {
            wb.remove(&self.batches, key(*v));
        }
        for g in &gathered {
            wb.remove(&self.meta, pending_key(*g));
        }
        wb.commit().map_err(self.store_err("append batch"))?;

        st.next_seq = first + seqs.len() as u64;
        st.batches = st.batches + seqs.len() as u64 - victims.len() as u64;
        st.bytes = st.bytes + len - freed;
        st.dropped += victims.len() as u64;
        if let Some(last) = victims.last() {
            st.oldest = last + 1;
        }
        st.dirty = true;
        Ok(seqs)
    }

    /// Makes sure no seq below `next` is assigned from now on (batches held in memory while the
    /// disk refused writes already use them). Takes effect in memory at once and reaches the disk
    /// with the next write batch.
    pub fn reserve(&self, next: u64) {
        let mut st = self.lock();
        if next > st.next_seq {
            st.next_seq = next;
            if st.batches == 0 {
                st.oldest = next;
            }
        }
    }

    /// Up to `max` batches with seq > `after`, oldest first.
    pub fn window(&self, after: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>, BufferError> {
        let start = after.saturating_add(1).max(self.lock().oldest);
        let mut out = Vec::with_capacity(max.min(256));
        for item in self.batches.range(key(start)..).take(max) {
            let (k, v) = item.into_inner().map_err(self.store_err("read window"))?;
            out.push((self.decode_key(&k)?, v.to_vec()));
        }
        Ok(out)
    }

    /// Deletes every batch with seq <= `seq` (cumulative ack). Acking a seq that is already gone, or
    /// one that was never assigned, deletes only what exists.
    pub fn ack(&self, seq: u64) -> Result<(), BufferError> {
        loop {
            // Wait for fjall outside the lock, so `stats` (the health fact) never waits on it.
            self.backpressure();
            let mut st = self.lock();
            if st.oldest > seq {
                return Ok(());
            }
            let mut doomed = Vec::new();
            let mut freed = 0u64;
            for item in self
                .batches
                .range(key(st.oldest)..=key(seq))
                .take(ACK_CHUNK)
            {
                let (k, v) = item
                    .into_inner()
                    .map_err(self.store_err("scan acked batches"))?;
                doomed.push(self.decode_key(&k)?);
                freed += v.len() as u64;
            }
            let Some(&last) = doomed.last() else {
                // Nothing at or below `seq` is stored any more. Never move past next_seq: a
                // factory acking a seq we have not assigned yet must not hide the next batch.
                st.oldest = st.oldest.max(seq.saturating_add(1).min(st.next_seq));
                return Ok(());
            };
            // next_seq goes with the deletion, so it survives even when this empties the queue.
            let mut wb = self.db.batch();
            for d in &doomed {
                wb.remove(&self.batches, key(*d));
            }
            wb.insert(&self.meta, store::NEXT_SEQ, key(st.next_seq));
            wb.commit()
                .map_err(self.store_err("delete acked batches"))?;
            st.batches -= doomed.len() as u64;
            st.bytes -= freed;
            st.oldest = last + 1;
            // Not marked dirty: an ack alone is not worth an fsync (see `flush`).
        }
    }

    /// Sets the size cap in bytes; it takes effect at the next append.
    pub fn set_cap(&self, cap_bytes: u64) {
        self.lock().cap = cap_bytes;
    }

    /// The current counters.
    pub fn stats(&self) -> BufferStats {
        let st = self.lock();
        BufferStats {
            batches: st.batches,
            bytes: st.bytes,
            dropped: st.dropped,
            next_seq: st.next_seq,
        }
    }

    /// Bytes fjall currently holds in memtables (active and sealed, not yet flushed to disk), and in
    /// its block cache: diagnostics for memory measurements.
    pub fn engine_memory(&self) -> (u64, u64) {
        (self.db.write_buffer_size(), self.db.cache_size())
    }

    /// Makes everything appended so far durable: `fdatasync` of fjall's journal. Does no I/O when
    /// nothing was appended since the last flush. Acks are not a reason to sync: they reach the disk
    /// with the next append's flush, and an ack lost to a power cut only means its batches come back
    /// and are sent again, which the factory ignores (it skips seqs it has acked). That halves the
    /// fsyncs at a 1 s period, where the flusher would otherwise also sync each ack.
    pub fn flush(&self) -> Result<(), BufferError> {
        // Clear the flag before syncing and without holding the lock during the sync, so appends are
        // not blocked by a slow SD card; an append racing with the sync sets the flag again.
        let was_dirty = std::mem::replace(&mut self.lock().dirty, false);
        if !was_dirty {
            return Ok(());
        }
        self.db.persist(PersistMode::SyncData).map_err(|source| {
            self.lock().dirty = true;
            BufferError::Store {
                op: "flush journal",
                path: self.dir.clone(),
                source,
            }
        })
    }
}
