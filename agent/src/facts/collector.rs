//! One collection round: reads the kernel files for the requested fact kinds and fills a
//! [`Snapshot`], keeping everything it can between rounds so that a warm round allocates nothing.
//!
//! What is kept:
//! - every `/proc` file stays open and is re-read from offset 0 with `pread` (a procfs
//!   `seq_file` restarts its iterator when read at offset 0), into one reused buffer;
//! - the previous `/proc/stat` sample, for cpu percentages;
//! - the parsed mount table, re-parsed only when the text of `/proc/self/mounts` changed;
//! - the thermal zones, their sensor names and an open `temp` file each; the thermal directory
//!   stays open and is re-listed every `temp` round (no allocation), and the zones are found
//!   again when the set of `thermal_zoneN` entries changed (a driver loaded after start);
//! - `/proc` open as a directory for `processes`, re-listed every round: each
//!   `/proc/[pid]/stat` is opened, read into the shared buffer and closed (pids come and go);
//! - the previous `diskio` sample, for Telegraf's `io_await`, `io_svctm` and `io_util`;
//! - the `Vec`s of the caller's `Snapshot` and the `String`s inside their elements: elements a
//!   round does not need are parked in a pool and handed back on a later round.
//!
//! Failures never abort a round: a missing file skips its fact silently; a file that does not
//! parse skips its fact for that round, is counted ([`Collector::parse_errors`]) and logged once
//! per path on stderr with the line and what was wrong.

use super::mounts::{self, Mount};
use super::stat::{self, Stat};
use super::{
    cpu, diskstats, loadavg, meminfo, netdev, processes, thermal, uptime, utmp, vmstat, ParseError,
    Procfs, Sysfs,
};
use autofact_fbs::{Cpu, Disk, DiskIo, Health, Net, Periods, Processes, Snapshot, Temp};
use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::io::{Read, Seek, SeekFrom};
use std::mem::MaybeUninit;
use std::ops::BitOr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A set of fact kinds, one bit per measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Kinds(u16);

impl Kinds {
    /// Nothing.
    pub const NONE: Kinds = Kinds(0);
    /// `cpu`
    pub const CPU: Kinds = Kinds(1);
    /// `kernel`
    pub const KERNEL: Kinds = Kinds(1 << 1);
    /// `mem`
    pub const MEM: Kinds = Kinds(1 << 2);
    /// `swap`
    pub const SWAP: Kinds = Kinds(1 << 3);
    /// `system`
    pub const SYSTEM: Kinds = Kinds(1 << 4);
    /// `net`
    pub const NET: Kinds = Kinds(1 << 5);
    /// `diskio`
    pub const DISKIO: Kinds = Kinds(1 << 6);
    /// `disk`
    pub const DISK: Kinds = Kinds(1 << 7);
    /// `temp`
    pub const TEMP: Kinds = Kinds(1 << 8);
    /// `autofact` (health: the collector fills `collect_us` and `parse_errors`).
    pub const HEALTH: Kinds = Kinds(1 << 9);
    /// `processes`
    pub const PROCESSES: Kinds = Kinds(1 << 10);
    /// Every kind.
    pub const ALL: Kinds = Kinds((1 << 11) - 1);

    /// True when every kind of `other` is in `self`.
    pub fn contains(self, other: Kinds) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when some kind of `other` is in `self`.
    pub fn intersects(self, other: Kinds) -> bool {
        self.0 & other.0 != 0
    }

    /// The kind at `i` of [`autofact_fbs::FACT_KINDS`]: the bits are the table's indexes.
    pub const fn of_index(i: usize) -> Kinds {
        Kinds(1 << i)
    }

    /// The kinds whose period is not 0 (enabled by the factory's Config).
    pub fn enabled(p: &Periods) -> Kinds {
        p.slots()
            .into_iter()
            .enumerate()
            .filter(|(_, ms)| *ms != 0)
            .fold(Kinds::NONE, |acc, (i, _)| acc | Kinds::of_index(i))
    }
}

impl BitOr for Kinds {
    type Output = Kinds;
    fn bitor(self, rhs: Kinds) -> Kinds {
        Kinds(self.0 | rhs.0)
    }
}

/// The largest file a round reads; /proc/self/mounts of a container host is the biggest real
/// one and stays far below this.
const MAX_FILE: usize = 16 << 20;

/// A kernel file kept open between rounds. Also the reader behind every [`super::Procfs`] and
/// [`super::Sysfs`] method, so the tests (which read captured trees through those) read files
/// exactly as a production round does.
#[derive(Debug)]
pub(crate) struct Source {
    path: PathBuf,
    file: Option<File>,
    nonblocking: bool,
}

impl Source {
    pub(crate) fn new(path: PathBuf) -> Source {
        Source {
            path,
            file: None,
            nonblocking: false,
        }
    }

    /// A sensor file, opened `O_NONBLOCK` as Telegraf does: a sensor whose hardware sleeps (a
    /// parked disk's `drivetemp`) answers EAGAIN instead of holding up the round.
    fn sensor(path: PathBuf) -> Source {
        Source {
            nonblocking: true,
            ..Source::new(path)
        }
    }

    /// Reads the whole file into `buf` (whose `len` is its usable size and only grows);
    /// `Ok(None)` when the file does not exist. Reading loops until `pread` returns 0: a procfs
    /// `seq_file` hands out at most one page of records per call, so a short read is not the end.
    pub(crate) fn read<'b>(&mut self, buf: &'b mut Vec<u8>) -> io::Result<Option<&'b [u8]>> {
        if self.file.is_none() {
            let mut open = std::fs::OpenOptions::new();
            open.read(true);
            if self.nonblocking {
                open.custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits());
            }
            match open.open(&self.path) {
                Ok(f) => self.file = Some(f),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        let Some(file) = &self.file else {
            return Ok(None);
        };
        let mut filled = 0;
        loop {
            if filled == buf.len() {
                if filled >= MAX_FILE {
                    // Not a kernel file (a FIFO or a device in a captured tree, say): stop
                    // rather than grow without bound.
                    return Err(io::Error::other(format!(
                        "larger than {} MiB, not a kernel text file",
                        MAX_FILE >> 20
                    )));
                }
                let grown = (buf.len() * 2).max(4096);
                buf.resize(grown, 0);
            }
            let n = match file.read_at(&mut buf[filled..], filled as u64) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // The next round reopens it: the file may have been replaced (e.g. a
                    // thermal zone re-registered), or the error may be transient.
                    self.file = None;
                    if e.kind() == io::ErrorKind::NotFound
                        || e.raw_os_error() == Some(nix::errno::Errno::ENODEV as i32)
                    {
                        // The device behind a sysfs file went away.
                        return Ok(None);
                    }
                    return Err(e);
                }
            };
            if n == 0 {
                break;
            }
            filled += n;
        }
        Ok(Some(&buf[..filled]))
    }
}

/// A thermal zone, as last found.
#[derive(Debug)]
struct Zone {
    sensor: String,
    temp: Source,
}

/// A directory kept open and re-listed each round through `getdents64` into a reused buffer
/// (rustix's `RawDir` lends each name; `std::fs::read_dir` and nix's `Dir` allocate a `CString`
/// per entry, which at 300+ processes would be 300+ allocations a round).
#[derive(Debug)]
struct Listing {
    path: PathBuf,
    dir: Option<File>,
    buf: Vec<MaybeUninit<u8>>,
    buf_size: usize,
}

impl Listing {
    /// `buf_size`: bytes of `getdents64` records read per call (a record is ~24 bytes plus
    /// the name); a small directory needs little, `/proc` with 300+ pids wants more.
    fn new(path: PathBuf, buf_size: usize) -> Listing {
        Listing {
            path,
            dir: None,
            buf: Vec::new(),
            buf_size,
        }
    }

    /// Calls `f` with each entry's name; `Ok(false)` when the directory does not exist.
    fn each(&mut self, mut f: impl FnMut(&[u8])) -> io::Result<bool> {
        if self.dir.is_none() {
            match File::open(&self.path) {
                Ok(d) => self.dir = Some(d),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e),
            }
            self.buf.resize(self.buf_size, MaybeUninit::uninit());
        }
        let Some(dir) = &mut self.dir else {
            return Ok(false);
        };
        // lseek to 0 restarts a directory listing.
        let mut result = dir.seek(SeekFrom::Start(0)).map(|_| ());
        if result.is_ok() {
            let mut raw = rustix::fs::RawDir::new(&*dir, &mut self.buf);
            while let Some(entry) = raw.next() {
                match entry {
                    Ok(e) => f(e.file_name().to_bytes()),
                    Err(e) => {
                        result = Err(e.into());
                        break;
                    }
                }
            }
        }
        match result {
            Ok(()) => Ok(true),
            Err(e) => {
                // Reopened next round: the directory may have been replaced.
                self.dir = None;
                Err(e)
            }
        }
    }
}

/// The number in `thermal_zoneN`, if `name` is one.
fn zone_number(name: &[u8]) -> Option<u32> {
    std::str::from_utf8(name.strip_prefix(b"thermal_zone")?)
        .ok()?
        .parse()
        .ok()
}

/// Elements of the caller's `Snapshot` vectors not used this round, kept for later rounds.
#[derive(Debug, Default)]
struct Pools {
    cpu: Vec<Cpu>,
    net: Vec<Net>,
    diskio: Vec<DiskIo>,
    disk: Vec<Disk>,
    temp: Vec<Temp>,
}

/// Moves the pooled elements behind `v`'s used ones, so `parse_into`-style fillers reuse them.
fn unpark<T>(v: &mut Vec<T>, pool: &mut Vec<T>) {
    v.append(pool);
}

/// Keeps `v[..n]` and parks the rest in `pool`.
fn park<T>(v: &mut Vec<T>, n: usize, pool: &mut Vec<T>) {
    let n = n.min(v.len());
    pool.extend(v.drain(n..));
}

/// Errors seen, counted and logged once per path.
#[derive(Debug, Default)]
struct Log {
    parse_errors: u64,
    logged: Vec<PathBuf>,
}

impl Log {
    fn parse(&mut self, path: &Path, e: &ParseError) {
        self.parse_errors += 1;
        self.once(path, e);
    }

    fn io(&mut self, path: &Path, e: &io::Error) {
        self.once(path, e);
    }

    fn once(&mut self, path: &Path, e: &dyn std::fmt::Display) {
        if self.logged.iter().any(|p| p == path) {
            return;
        }
        eprintln!(
            "autofact: {}: {e} (further errors for this file are counted, not logged)",
            path.display()
        );
        self.logged.push(path.to_path_buf());
    }
}

/// Opens, reads and closes a small file (a `/proc/[pid]/stat`) into `buf`; `None` when it is
/// gone (the process exited: ENOENT, or ESRCH while reading) or unreadable. Allocates nothing:
/// std converts a short path to a C string on the stack.
fn read_small(path: &Path, buf: &mut [u8]) -> Option<usize> {
    let mut f = File::open(path).ok()?;
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    Some(filled)
}

/// Reads `src` into `buf` and returns its text; `None` (after logging an I/O error) when there is
/// nothing to parse. Invalid UTF-8 becomes U+FFFD, which allocates only in that case.
fn text<'b>(src: &mut Source, buf: &'b mut Vec<u8>, log: &mut Log) -> Option<Cow<'b, str>> {
    match src.read(buf) {
        Ok(Some(bytes)) => Some(String::from_utf8_lossy(bytes)),
        Ok(None) => None,
        Err(e) => {
            log.io(&src.path, &e);
            None
        }
    }
}

/// Collects facts round after round; see the module doc for what it keeps.
#[derive(Debug)]
pub struct Collector {
    sysfs: Sysfs,
    stat: Source,
    meminfo: Source,
    loadavg: Source,
    uptime: Source,
    netdev: Source,
    diskstats: Source,
    mounts: Source,
    vmstat: Source,
    entropy: Source,
    utmp: Source,
    page_size: u64,
    proc_dir: Listing,
    pid_path: Vec<u8>,
    thermal_dir: Listing,
    hwmon_dir: Listing,
    zones_seen: u64,
    prev_diskio: Vec<DiskIo>,
    prev_diskio_at: Option<Instant>,
    buf: Vec<u8>,
    prev: Stat,
    cur: Stat,
    have_prev: bool,
    n_cpus: Option<u32>,
    mount_text: Vec<u8>,
    mount_table: Vec<Mount>,
    mount_sel: Vec<usize>,
    mounts_valid: bool,
    zones: Option<Vec<Zone>>,
    pools: Pools,
    log: Log,
    last_collect_us: u64,
}

impl Collector {
    /// A collector reading `procfs` and `sysfs`. Nothing is opened until the first round.
    pub fn new(procfs: &Procfs, sysfs: &Sysfs) -> Collector {
        Collector {
            sysfs: sysfs.clone(),
            stat: Source::new(procfs.path("stat")),
            meminfo: Source::new(procfs.path("meminfo")),
            loadavg: Source::new(procfs.path("loadavg")),
            uptime: Source::new(procfs.path("uptime")),
            netdev: Source::new(procfs.path("net/dev")),
            diskstats: Source::new(procfs.path("diskstats")),
            mounts: Source::new(procfs.path("self/mounts")),
            vmstat: Source::new(procfs.path("vmstat")),
            entropy: Source::new(procfs.path("sys/kernel/random/entropy_avail")),
            // Telegraf reads /var/run/utmp; under a captured tree, <tree>/var/run/utmp.
            utmp: Source::new(
                procfs
                    .root
                    .parent()
                    .unwrap_or(Path::new("/"))
                    .join("var/run/utmp"),
            ),
            page_size: vmstat::page_size(),
            // 8 KiB: ~300 /proc entries per getdents64 call.
            proc_dir: Listing::new(procfs.root.clone(), 8192),
            pid_path: Vec::with_capacity(procfs.root.as_os_str().len() + 32),
            thermal_dir: Listing::new(sysfs.thermal_dir(), 1024),
            hwmon_dir: Listing::new(sysfs.hwmon_dir(), 1024),
            zones_seen: 0,
            prev_diskio: Vec::new(),
            prev_diskio_at: None,
            buf: vec![0; 16 * 1024],
            prev: Stat::default(),
            cur: Stat::default(),
            have_prev: false,
            n_cpus: None,
            mount_text: Vec::new(),
            mount_table: Vec::new(),
            mount_sel: Vec::new(),
            mounts_valid: false,
            zones: None,
            pools: Pools::default(),
            log: Log::default(),
            last_collect_us: 0,
        }
    }

    /// Malformed files met since the collector was made (the health fact's `parse_errors`).
    pub fn parse_errors(&self) -> u64 {
        self.log.parse_errors
    }

    /// How long the last round took, in microseconds (the health fact's `collect_us`).
    pub fn last_collect_us(&self) -> u64 {
        self.last_collect_us
    }

    /// Runs one round: fills `out` with the facts of `kinds`, stamped `time_ns`, and clears the
    /// kinds not asked for. Reuse the same `out` every round (clone what you keep) to stay free
    /// of allocations.
    ///
    /// `cpu` percentages are over the interval since the previous round that included
    /// [`Kinds::CPU`]; the first such round only takes the sample and reports no cpu points.
    /// With [`Kinds::HEALTH`] the collector sets `out.health` to a `Health` holding only its own
    /// figures (`collect_us` of this round, `parse_errors`); the agent adds the buffer's figures.
    pub fn collect(&mut self, kinds: Kinds, time_ns: i64, out: &mut Snapshot) {
        let started = Instant::now();
        out.time_ns = time_ns;

        // /proc/stat feeds cpu, kernel and the n_cpus of system.
        let mut stat_ok = false;
        if kinds.intersects(Kinds::CPU | Kinds::KERNEL | Kinds::SYSTEM) {
            if let Some(t) = text(&mut self.stat, &mut self.buf, &mut self.log) {
                match stat::parse_into(&t, &mut self.cur) {
                    Ok(()) => stat_ok = true,
                    Err(e) => self.log.parse(&self.stat.path, &e),
                }
            }
        }
        if stat_ok {
            self.n_cpus = Some(self.cur.n_cpus());
        }
        out.kernel = if stat_ok && kinds.contains(Kinds::KERNEL) {
            self.cur.kernel().map(|mut k| {
                k.entropy_avail = self.entropy_avail();
                k
            })
        } else {
            None
        };
        unpark(&mut out.cpu, &mut self.pools.cpu);
        let mut n = 0;
        if stat_ok && kinds.contains(Kinds::CPU) {
            if self.have_prev {
                n = self.cpu_usage(&mut out.cpu);
            }
            std::mem::swap(&mut self.prev, &mut self.cur);
            self.have_prev = true;
        }
        park(&mut out.cpu, n, &mut self.pools.cpu);

        // /proc/meminfo feeds mem and swap.
        out.mem = None;
        out.swap = None;
        if kinds.intersects(Kinds::MEM | Kinds::SWAP) {
            if let Some(t) = text(&mut self.meminfo, &mut self.buf, &mut self.log) {
                match meminfo::parse(&t) {
                    Ok(m) => {
                        if kinds.contains(Kinds::MEM) {
                            out.mem = Some(m.mem());
                        }
                        if kinds.contains(Kinds::SWAP) {
                            let mut swap = m.swap();
                            if let Some(v) = self.vmstat() {
                                swap.sin = Some(v.pswpin.saturating_mul(self.page_size));
                                swap.sout = Some(v.pswpout.saturating_mul(self.page_size));
                            }
                            out.swap = Some(swap);
                        }
                    }
                    Err(e) => self.log.parse(&self.meminfo.path, &e),
                }
            }
        }

        out.system = None;
        if kinds.contains(Kinds::SYSTEM) {
            out.system = self.system();
        }

        unpark(&mut out.net, &mut self.pools.net);
        let mut n = 0;
        if kinds.contains(Kinds::NET) {
            if let Some(t) = text(&mut self.netdev, &mut self.buf, &mut self.log) {
                match netdev::parse_into(&t, &mut out.net, |name| name != "lo") {
                    Ok(k) => n = k,
                    Err(e) => self.log.parse(&self.netdev.path, &e),
                }
            }
        }
        park(&mut out.net, n, &mut self.pools.net);

        unpark(&mut out.diskio, &mut self.pools.diskio);
        let mut n = 0;
        if kinds.contains(Kinds::DISKIO) {
            if let Some(t) = text(&mut self.diskstats, &mut self.buf, &mut self.log) {
                match diskstats::parse_into(&t, &mut out.diskio) {
                    Ok(k) => n = k,
                    Err(e) => self.log.parse(&self.diskstats.path, &e),
                }
            }
            if n > 0 {
                self.diskio_intervals(&mut out.diskio[..n]);
            }
        }
        park(&mut out.diskio, n, &mut self.pools.diskio);

        unpark(&mut out.disk, &mut self.pools.disk);
        let n = if kinds.contains(Kinds::DISK) {
            self.disks(&mut out.disk)
        } else {
            0
        };
        park(&mut out.disk, n, &mut self.pools.disk);

        unpark(&mut out.temp, &mut self.pools.temp);
        let n = if kinds.contains(Kinds::TEMP) {
            self.temps(&mut out.temp)
        } else {
            0
        };
        park(&mut out.temp, n, &mut self.pools.temp);

        out.processes = if kinds.contains(Kinds::PROCESSES) {
            self.processes()
        } else {
            None
        };

        let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_collect_us = us;
        out.health = if kinds.contains(Kinds::HEALTH) {
            Some(Health {
                collect_us: us,
                parse_errors: self.log.parse_errors,
                ..Health::default()
            })
        } else {
            None
        };
    }

    /// Fills `out[..n]` with usage from `self.prev` to `self.cur`, matching cpus by id (cpus can
    /// go offline between samples); returns `n`.
    fn cpu_usage(&self, out: &mut Vec<Cpu>) -> usize {
        let mut n = 0;
        for (i, cur) in self.cur.cpus.iter().enumerate() {
            // Usually at the same position; search only when cpus came or went.
            let prev = match self.prev.cpus.get(i) {
                Some(p) if p.id == cur.id => Some(p),
                _ => self.prev.cpus.iter().find(|p| p.id == cur.id),
            };
            let Some(prev) = prev else { continue };
            let slot = super::slot(out, n);
            if cpu::usage_into(prev, cur, slot) {
                cpu::write_name(cur.id, &mut slot.name);
                n += 1;
            }
        }
        n
    }

    /// `system` needs loadavg and uptime; n_cpus comes from the last good /proc/stat; the
    /// users from utmp.
    fn system(&mut self) -> Option<autofact_fbs::System> {
        let users = self.users();
        let load = {
            let t = text(&mut self.loadavg, &mut self.buf, &mut self.log)?;
            match loadavg::parse(&t) {
                Ok(l) => l,
                Err(e) => {
                    self.log.parse(&self.loadavg.path, &e);
                    return None;
                }
            }
        };
        let up = {
            let t = text(&mut self.uptime, &mut self.buf, &mut self.log)?;
            match uptime::parse(&t) {
                Ok(u) => u,
                Err(e) => {
                    self.log.parse(&self.uptime.path, &e);
                    return None;
                }
            }
        };
        Some(autofact_fbs::System {
            load1: load.load1,
            load5: load.load5,
            load15: load.load15,
            n_cpus: self.n_cpus.unwrap_or(0),
            uptime: up.secs(),
            n_users: users.map(|u| u.sessions),
            n_unique_users: users.map(|u| u.unique),
        })
    }

    /// Login sessions from utmp; `None` where there is no utmp file (Telegraf then leaves
    /// `n_users` out) or it cannot be read.
    fn users(&mut self) -> Option<utmp::Users> {
        match self.utmp.read(&mut self.buf) {
            Ok(Some(bytes)) => Some(utmp::count(bytes)),
            Ok(None) => None,
            Err(e) => {
                self.log.io(&self.utmp.path, &e);
                None
            }
        }
    }

    /// `/proc/sys/kernel/random/entropy_avail`, as Telegraf's `kernel` reads it.
    fn entropy_avail(&mut self) -> Option<u64> {
        let t = text(&mut self.entropy, &mut self.buf, &mut self.log)?;
        match super::num(Some(t.trim()), 1, "entropy_avail") {
            Ok(v) => Some(v),
            Err(e) => {
                self.log.parse(&self.entropy.path, &e);
                None
            }
        }
    }

    /// `/proc/vmstat`'s swap counters.
    fn vmstat(&mut self) -> Option<vmstat::VmStat> {
        let t = text(&mut self.vmstat, &mut self.buf, &mut self.log)?;
        match vmstat::parse(&t) {
            Ok(v) => Some(v),
            Err(e) => {
                self.log.parse(&self.vmstat.path, &e);
                None
            }
        }
    }

    /// Telegraf's `io_await`, `io_svctm` and `io_util` for each device also in the previous
    /// sample (matched by name), then keeps this sample (reusing its strings) for the next.
    /// Like Telegraf, nothing when a counter went backwards; `io_await` and `io_svctm` only
    /// when I/Os completed; `io_util` over the time between the two samples.
    fn diskio_intervals(&mut self, cur: &mut [DiskIo]) {
        let now = Instant::now();
        let elapsed_ms = self
            .prev_diskio_at
            .map(|t| now.duration_since(t).as_secs_f64() * 1000.0);
        for (i, d) in cur.iter_mut().enumerate() {
            d.io_await = None;
            d.io_svctm = None;
            d.io_util = None;
            let prev = match self.prev_diskio.get(i) {
                Some(p) if p.name == d.name => Some(p),
                _ => self.prev_diskio.iter().find(|p| p.name == d.name),
            };
            let (Some(p), Some(ms)) = (prev, elapsed_ms) else {
                continue;
            };
            let back = d.reads < p.reads
                || d.writes < p.writes
                || d.read_time < p.read_time
                || d.write_time < p.write_time
                || d.io_time < p.io_time;
            if back {
                continue;
            }
            let ios = (d.reads - p.reads + d.writes - p.writes) as f64;
            let rw_time = (d.read_time - p.read_time + d.write_time - p.write_time) as f64;
            let io_time = (d.io_time - p.io_time) as f64;
            if ios > 0.0 {
                d.io_await = Some(rw_time / ios);
                d.io_svctm = Some(io_time / ios);
            }
            if ms > 0.0 {
                d.io_util = Some(100.0 * io_time / ms);
            }
        }
        for (i, d) in cur.iter().enumerate() {
            // Field by field: a derived `clone_from` would reallocate the name.
            let p = super::slot(&mut self.prev_diskio, i);
            p.name.clone_from(&d.name);
            p.reads = d.reads;
            p.writes = d.writes;
            p.read_time = d.read_time;
            p.write_time = d.write_time;
            p.io_time = d.io_time;
        }
        self.prev_diskio.truncate(cur.len());
        self.prev_diskio_at = Some(now);
    }

    /// Counts every process of `/proc` by state (see [`processes`]). `None` when `/proc` cannot
    /// be listed.
    fn processes(&mut self) -> Option<Processes> {
        let mut p = Processes::default();
        let Collector {
            proc_dir,
            pid_path,
            buf,
            log,
            ..
        } = self;
        // <root>/<pid>/stat in a reused byte buffer; std opens it through a stack buffer.
        pid_path.clear();
        pid_path.extend_from_slice(proc_dir.path.as_os_str().as_bytes());
        pid_path.push(b'/');
        let root_len = pid_path.len();
        let listed = proc_dir.each(|name| {
            if name.is_empty() || !name.iter().all(u8::is_ascii_digit) {
                return;
            }
            pid_path.truncate(root_len);
            pid_path.extend_from_slice(name);
            pid_path.extend_from_slice(b"/stat");
            let path = Path::new(std::ffi::OsStr::from_bytes(pid_path));
            let Some(len) = read_small(path, buf) else {
                return;
            };
            // Only what follows the command name is parsed: the name is cut at 15 bytes by the
            // kernel, possibly inside a UTF-8 character, and a lossy view of it would allocate.
            let bytes = &buf[..len];
            let from = bytes.iter().rposition(|&b| b == b')').unwrap_or(0);
            let text = String::from_utf8_lossy(&bytes[from..]);
            match processes::parse_stat(&text) {
                Ok(task) => processes::add(&mut p, task),
                Err(e) => log.parse(path, &e),
            }
        });
        match listed {
            Ok(true) => Some(p),
            Ok(false) => None,
            Err(e) => {
                log.io(&self.proc_dir.path, &e);
                None
            }
        }
    }

    /// Re-parses the mount table when its text changed, then `statvfs`es each selected mount.
    /// Under a captured `/proc` tree the mount points are looked up on this machine: those that
    /// do not exist here are skipped, those that do report this machine's sizes at that path.
    fn disks(&mut self, out: &mut Vec<Disk>) -> usize {
        let Some(t) = text(&mut self.mounts, &mut self.buf, &mut self.log) else {
            return 0;
        };
        if !self.mounts_valid || t.as_bytes() != self.mount_text.as_slice() {
            self.mount_text.clear();
            self.mount_text.extend_from_slice(t.as_bytes());
            match mounts::parse_into(&t, &mut self.mount_table) {
                Ok(k) => {
                    self.mount_table.truncate(k);
                    mounts::select_into(&self.mount_table, &mut self.mount_sel);
                    self.mounts_valid = true;
                }
                Err(e) => {
                    self.mounts_valid = false;
                    self.log.parse(&self.mounts.path, &e);
                    return 0;
                }
            }
        }
        let mut n = 0;
        for &i in &self.mount_sel {
            let Some(m) = self.mount_table.get(i) else {
                continue;
            };
            let Some(u) = mounts::statvfs(Path::new(&m.path)) else {
                continue;
            };
            mounts::fill_disk(m, &u, super::slot(out, n));
            n += 1;
        }
        n
    }

    /// Reads each known sensor's temperature; finds the sensors on the first call, again when
    /// the set of `thermal_zoneN` or `hwmonN` entries changed, and after a sensor vanished.
    fn temps(&mut self, out: &mut Vec<Temp>) -> usize {
        // A cheap fingerprint of the zones and hwmon devices present (count and a mix of the
        // numbers); listing the open directories allocates nothing.
        let mut seen: u64 = 0;
        let mut mix = |salt: u64, n: u32| {
            seen = seen
                .wrapping_add(1 << 48)
                .wrapping_add((u64::from(n) ^ salt).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 16);
        };
        let listed = self.thermal_dir.each(|name| {
            if let Some(n) = zone_number(name) {
                mix(0, n);
            }
        });
        if let Err(e) = listed {
            self.log.io(&self.thermal_dir.path, &e);
        }
        let listed = self.hwmon_dir.each(|name| {
            if let Some(n) = thermal::hwmon_number(name) {
                mix(1 << 40, n);
            }
        });
        if let Err(e) = listed {
            self.log.io(&self.hwmon_dir.path, &e);
        }
        if seen != self.zones_seen {
            self.zones_seen = seen;
            self.zones = None;
        }
        if self.zones.is_none() {
            self.zones = Some(self.find_zones());
        }
        let Some(zones) = &mut self.zones else {
            return 0;
        };
        let mut n = 0;
        let mut vanished = false;
        for z in zones.iter_mut() {
            let t = match z.temp.read(&mut self.buf) {
                Ok(Some(b)) => String::from_utf8_lossy(b),
                Ok(None) => {
                    vanished = true;
                    continue;
                }
                Err(e) => {
                    // Some zones fail reads while their sensor is off; that is not malformed.
                    self.log.io(&z.temp.path, &e);
                    continue;
                }
            };
            match thermal::parse_temp(&t) {
                Ok(v) => {
                    let slot = super::slot(out, n);
                    slot.sensor.clone_from(&z.sensor);
                    slot.temp = v;
                    n += 1;
                }
                Err(e) => self.log.parse(&z.temp.path, &e),
            }
        }
        if vanished {
            self.zones = None;
        }
        n
    }

    /// Telegraf's order: the hwmon temperature inputs when there are any, else the thermal
    /// zones.
    fn find_zones(&mut self) -> Vec<Zone> {
        match thermal::hwmon_inputs(&self.sysfs.hwmon_dir()) {
            Ok(inputs) if !inputs.is_empty() => {
                let numbers: Vec<u32> = inputs.iter().map(|i| i.hwmon).collect();
                let mut names: Vec<String> = inputs.iter().map(|i| i.sensor.clone()).collect();
                thermal::distinct_names(&numbers, &mut names);
                return inputs
                    .into_iter()
                    .zip(names)
                    .map(|(i, sensor)| Zone {
                        sensor,
                        temp: Source::sensor(i.input),
                    })
                    .collect();
            }
            Ok(_) => {}
            Err(e) => {
                if let super::FactsError::Io { path, source } = &e {
                    self.log.io(path, source);
                }
            }
        }
        self.find_thermal_zones()
    }

    fn find_thermal_zones(&mut self) -> Vec<Zone> {
        let dirs = match thermal::zone_dirs(&self.sysfs.thermal_dir()) {
            Ok(d) => d,
            Err(e) => {
                if let super::FactsError::Io { path, source } = &e {
                    self.log.io(path, source);
                }
                return Vec::new();
            }
        };
        let mut zones = Vec::new();
        let mut numbers = Vec::new();
        for dir in dirs {
            let type_path = dir.join("type");
            let sensor = match std::fs::read(&type_path) {
                Ok(b) => match thermal::parse_type(&String::from_utf8_lossy(&b)) {
                    Ok(s) => s,
                    Err(e) => {
                        self.log.parse(&type_path, &e);
                        continue;
                    }
                },
                Err(e) => {
                    if e.kind() != io::ErrorKind::NotFound {
                        self.log.io(&type_path, &e);
                    }
                    continue;
                }
            };
            numbers.push(
                dir.file_name()
                    .and_then(|n| zone_number(n.as_bytes()))
                    .unwrap_or(0),
            );
            zones.push(Zone {
                sensor,
                temp: Source::sensor(dir.join("temp")),
            });
        }
        let mut names: Vec<String> = zones.iter().map(|z| z.sensor.clone()).collect();
        thermal::distinct_names(&numbers, &mut names);
        for (z, name) in zones.iter_mut().zip(names) {
            z.sensor = name;
        }
        zones
    }
}
