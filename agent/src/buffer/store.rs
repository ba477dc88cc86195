//! Opening a buffer directory: format marker, fjall tuning for small devices, recovery scan, and moving
//! a buffer that cannot be opened out of the way.

use std::fs;
use std::io::{self, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fjall::config::{BlockSizePolicy, FilterPolicy, FilterPolicyEntry, PinningPolicy};
use fjall::{Database, KeyspaceCreateOptions};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::{key, Buffer, BufferError, State};

/// The format this code writes and reads.
pub(super) const FORMAT_VERSION: u32 = 1;
const FORMAT_FILE: &str = "FORMAT";
const FORMAT_MAGIC: &str = "autofact-buffer";
const OPENING_FILE: &str = "OPENING";
const LOCK_FILE: &str = "LOCK";
const DB_DIR: &str = "db";
const BATCHES: &str = "batches";
const META: &str = "meta";
/// The first byte of a pending snapshot's key in "meta" (release 0.2; see the module doc).
pub(super) const PENDING_PREFIX: u8 = b'p';
pub(super) const NEXT_SEQ: &[u8] = b"next_seq";

/// After this many opens that started and never finished (each one killed or aborted during recovery),
/// the buffer is treated as corrupt: this is what stops a crash loop when fjall aborts on bad files.
const MAX_UNFINISHED_OPENS: u32 = 2;

// fjall tuning for a board with little RAM. fjall's defaults (32 MiB block cache, 64 MiB memtables,
// one worker per core up to 4) are sized for servers. The queue is written in key order and read
// front to back, so caching buys little: the OS page cache already holds the hot tail of the files.
/// Block cache: a few 32 KiB data blocks, enough for front-to-back scans.
const CACHE_BYTES: u64 = 128 * 1024;
/// The memtable holds the newest batches in RAM until it is flushed to a table file.
pub(super) const MEMTABLE_BYTES: u64 = 256 * 1024;
/// fjall's minimum: fjall asserts >= 64 MiB. The journal file is preallocated sparse, so this is an
/// upper bound on disk use, not RAM.
const JOURNAL_BYTES: u64 = 64 * 1024 * 1024;
/// Data block size: every table keeps one index entry per block in RAM, so bigger blocks mean less
/// RAM per buffered batch.
const DATA_BLOCK_BYTES: u32 = 32 * 1024;
/// Background flush/compaction threads. Not 1: fjall 3.1.13's lone worker can block forever sending
/// itself a flush message when writers have filled its 1000-slot queue with rotation requests (seen
/// here at full write speed: the memtable then grows without bound). A second worker drains the queue.
const WORKER_THREADS: usize = 2;
/// Open table files kept in fjall's descriptor cache (fjall's minimum is 10).
const MAX_CACHED_FILES: usize = 10;

/// Why an open attempt failed: `Corrupt` moves the directory aside, `Fatal` is returned to the caller.
enum Failure {
    Corrupt(String),
    Fatal(BufferError),
}

pub(super) fn decode_pending(k: &[u8]) -> Option<u64> {
    match k.split_first() {
        Some((&PENDING_PREFIX, rest)) => decode_seq(rest),
        _ => None,
    }
}

pub(super) fn decode_seq(k: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(k).ok().map(u64::from_be_bytes)
}

fn unix_now() -> std::time::Duration {
    // The agent's wall clock (with its test-only offset, see `crate::clock`): a fresh buffer's
    // seqs start at it. A clock before 1970 only changes that start; 0 is a fine fallback.
    std::time::Duration::from_nanos(u64::try_from(crate::clock::now_ns()).unwrap_or(0))
}
fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> BufferError + 'a {
    move |source| BufferError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Opens the buffer in `dir`, moving it aside once if it cannot be opened.
pub(super) fn open(dir: &Path, cap: u64) -> Result<Buffer, BufferError> {
    let reason = match try_open(dir, cap) {
        Ok(b) => return Ok(b),
        Err(Failure::Fatal(e)) => return Err(e),
        Err(Failure::Corrupt(reason)) => reason,
    };
    let aside = move_aside(dir)?;
    eprintln!(
        "autofact: disk buffer {} cannot be opened ({reason}); moved it to {} and started an empty buffer",
        dir.display(),
        aside.display()
    );
    // A second failure on a fresh directory is not the data's fault: report it instead of looping.
    try_open(dir, cap).map_err(|f| {
        let source = match f {
            Failure::Fatal(e) => e,
            Failure::Corrupt(what) => BufferError::Corrupt {
                path: dir.to_path_buf(),
                what,
            },
        };
        BufferError::Unrecoverable {
            path: dir.to_path_buf(),
            source: Box::new(source),
        }
    })
}

/// Renames `dir` to `dir.corrupt-<unix seconds>` (with `-N` appended if that name is taken).
fn move_aside(dir: &Path) -> Result<PathBuf, BufferError> {
    let secs = unix_now().as_secs();
    let mut name = dir.as_os_str().to_os_string();
    name.push(format!(".corrupt-{secs}"));
    let mut aside = PathBuf::from(&name);
    let mut n = 1;
    while aside.exists() {
        n += 1;
        let mut again = name.clone();
        again.push(format!("-{n}"));
        aside = PathBuf::from(again);
    }
    fs::rename(dir, &aside).map_err(io_err("move corrupt buffer aside", dir))?;
    Ok(aside)
}

fn classify_io(op: &'static str, path: &Path, e: io::Error) -> Failure {
    // Permissions, a full or a read-only disk are the disk's problem, not the data's: moving the
    // buffer aside would not help (and would hide its data from the factory).
    if super::fault_of(&e) != super::DiskFault::Other {
        Failure::Fatal(io_err(op, path)(e))
    } else {
        Failure::Corrupt(format!("{op} {}: {e}", path.display()))
    }
}

/// Writes `contents` to `path` so that a crash leaves either the old file or the whole new one.
fn write_atomic(dir: &Path, path: &Path, contents: &[u8]) -> Result<(), BufferError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(contents).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("fsync", &tmp))?;
    fs::rename(&tmp, path).map_err(io_err("rename into place", path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Checks `dir/FORMAT`, creating it for a new buffer.
fn check_format(dir: &Path) -> Result<(), Failure> {
    let path = dir.join(FORMAT_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let version = text
                .trim_end()
                .strip_prefix(FORMAT_MAGIC)
                .and_then(|v| v.strip_prefix(' '))
                .and_then(|v| v.parse::<u32>().ok());
            match version {
                Some(FORMAT_VERSION) => Ok(()),
                Some(v) if v > FORMAT_VERSION => Err(Failure::Corrupt(format!(
                    "format version {v} is newer than this agent's {FORMAT_VERSION}"
                ))),
                _ => Err(Failure::Corrupt(format!(
                    "{} does not hold a known format marker",
                    path.display()
                ))),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // The marker is written before the database, so a database without it is not ours.
            if dir.join(DB_DIR).exists() {
                return Err(Failure::Corrupt(format!("{} is missing", path.display())));
            }
            let text = format!("{FORMAT_MAGIC} {FORMAT_VERSION}\n");
            write_atomic(dir, &path, text.as_bytes()).map_err(Failure::Fatal)
        }
        Err(e) => Err(classify_io("read", &path, e)),
    }
}

/// Counts this open in `dir/OPENING`; fails when earlier opens died during recovery too often.
fn begin_open(dir: &Path) -> Result<(), Failure> {
    let path = dir.join(OPENING_FILE);
    let started = match fs::read_to_string(&path) {
        // The counter is replaced by rename, so a torn write cannot happen; a file that still
        // does not parse (an older release's write cut by a full disk) is not a crashed start.
        Ok(text) => text.trim().parse::<u32>().unwrap_or(0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(classify_io("read", &path, e)),
    };
    if started >= MAX_UNFINISHED_OPENS {
        return Err(Failure::Corrupt(format!(
            "the last {started} attempts to open it died during recovery"
        )));
    }
    // Only a process kill must be survived here, so the page cache is enough: no fsync. Written
    // to a temp file and renamed, so a full disk leaves the old count, never a cut one.
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, format!("{}\n", started + 1))
        .and_then(|()| fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Failure::Fatal(io_err("write", &path)(e))
        })
}

fn end_open(dir: &Path) -> Result<(), BufferError> {
    let path = dir.join(OPENING_FILE);
    fs::remove_file(&path).map_err(io_err("remove", &path))
}

fn batches_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
        .max_memtable_size(MEMTABLE_BYTES)
        // Reads are range scans from the front, which bloom filters do not help; skip building them.
        .filter_policy(FilterPolicy::all(FilterPolicyEntry::None))
        .expect_point_read_hits(true)
        // Let index blocks live in the (small) block cache rather than pinned in RAM per table.
        .index_block_pinning_policy(PinningPolicy::all(false))
        .filter_block_pinning_policy(PinningPolicy::all(false))
        .data_block_size_policy(BlockSizePolicy::all(DATA_BLOCK_BYTES))
}

fn meta_options() -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
        .max_memtable_size(64 * 1024)
        .filter_policy(FilterPolicy::all(FilterPolicyEntry::None))
}

/// Takes `dir/LOCK` before anything else is read, so a second agent on the same directory gets
/// `Locked` and can never judge a live buffer corrupt and move it away from under the first.
fn lock(dir: &Path) -> Result<Flock<fs::File>, Failure> {
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Failure::Fatal(io_err("open", &path)(e)))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == Errno::EWOULDBLOCK {
            Failure::Fatal(BufferError::Locked {
                path: dir.to_path_buf(),
            })
        } else {
            Failure::Fatal(io_err("lock", &path)(errno.into()))
        }
    })
}

fn try_open(dir: &Path, cap: u64) -> Result<Buffer, Failure> {
    if fs::symlink_metadata(dir).is_ok_and(|m| !m.is_dir()) {
        return Err(Failure::Corrupt(format!(
            "{} is a file, not a buffer directory",
            dir.display()
        )));
    }
    fs::create_dir_all(dir).map_err(|e| Failure::Fatal(io_err("create directory", dir)(e)))?;
    let lock = lock(dir)?;
    check_format(dir)?;
    begin_open(dir)?;

    let db_path = dir.join(DB_DIR);
    let store = |op: &'static str| {
        let path = db_path.clone();
        move |e: fjall::Error| match e {
            fjall::Error::Locked => Failure::Fatal(BufferError::Locked { path }),
            other => {
                let err = BufferError::Store {
                    op,
                    path,
                    source: other,
                };
                // ENOSPC, EROFS, EACCES while opening say nothing about the data: never move
                // a buffer aside for them (the agent runs from memory until the disk is back).
                if err.fault() == super::DiskFault::Other {
                    Failure::Corrupt(err.to_string())
                } else {
                    Failure::Fatal(err)
                }
            }
        }
    };
    // fjall may panic on some corrupt files (it `expect`s its own metadata); where panics unwind,
    // treat that as corruption too. Where they abort, `begin_open` catches it on the next start.
    let opened = catch_unwind(AssertUnwindSafe(|| -> Result<_, Failure> {
        let db = Database::builder(&db_path)
            .cache_size(CACHE_BYTES)
            .worker_threads(WORKER_THREADS)
            .max_cached_files(Some(MAX_CACHED_FILES))
            .max_journaling_size(JOURNAL_BYTES)
            .open()
            .map_err(store("open database"))?;
        let batches = db
            .keyspace(BATCHES, batches_options)
            .map_err(store("open batches"))?;
        let meta = db
            .keyspace(META, meta_options)
            .map_err(store("open meta"))?;
        let (mut state, saved_next) = recover(&batches, &meta, cap)?;
        state.pending_next = match meta.prefix([PENDING_PREFIX]).next_back() {
            Some(kv) => {
                let k = kv.key().map_err(store("read pending"))?;
                decode_pending(&k).map_or(0, |k| k + 1)
            }
            None => 0,
        };
        Ok((db, batches, meta, state, saved_next))
    }))
    .map_err(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        Failure::Corrupt(format!("fjall panicked while opening: {msg}"))
    })?;
    let (db, batches, meta, state, saved_next) = opened?;

    let buffer = Buffer {
        dir: dir.to_path_buf(),
        db,
        batches,
        meta,
        state: Mutex::new(state),
        _lock: lock,
    };
    if saved_next.is_none() {
        // A brand-new buffer: record where its seqs start.
        let mut st = buffer.lock();
        buffer
            .meta
            .insert(NEXT_SEQ, key(st.next_seq))
            .map_err(store("write next_seq"))?;
        st.dirty = true;
    }
    end_open(dir).map_err(Failure::Fatal)?;
    Ok(buffer)
}

/// Rebuilds the in-memory counters from disk: one scan of the stored batches.
fn recover(
    batches: &fjall::Keyspace,
    meta: &fjall::Keyspace,
    cap: u64,
) -> Result<(State, Option<u64>), Failure> {
    let corrupt = |what: String| Failure::Corrupt(what);
    let saved = meta
        .get(NEXT_SEQ)
        .map_err(|e| corrupt(format!("read next_seq: {e}")))?
        .map(|v| {
            decode_seq(&v).ok_or_else(|| corrupt(format!("next_seq is {} bytes, not 8", v.len())))
        })
        .transpose()?;

    let mut count = 0u64;
    let mut bytes = 0u64;
    let mut first = None;
    let mut last = None;
    for item in batches.iter() {
        let (k, v) = item
            .into_inner()
            .map_err(|e| corrupt(format!("scan batches: {e}")))?;
        let seq = decode_seq(&k)
            .ok_or_else(|| corrupt(format!("a batch key is {} bytes, not 8", k.len())))?;
        first.get_or_insert(seq);
        last = Some(seq);
        count += 1;
        bytes += v.len() as u64;
    }

    // A fresh buffer starts at the clock (see the module doc) so it never restarts below old seqs.
    let fresh = u64::try_from(unix_now().as_micros()).unwrap_or(1);
    let next_seq = saved.unwrap_or(fresh).max(last.map_or(0, |l| l + 1)).max(1);
    let state = State {
        next_seq,
        oldest: first.unwrap_or(next_seq),
        batches: count,
        bytes,
        dropped: 0,
        cap,
        dirty: false,
        pending_next: 0,
    };
    Ok((state, saved))
}
