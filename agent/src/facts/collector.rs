//! One collection round: reads the kernel files for the requested fact kinds and fills a
//! [`Snapshot`], keeping everything it can between rounds so that a warm round allocates nothing.
//!
//! What is kept:
//! - every `/proc` file stays open and is re-read from offset 0 with `pread` (a procfs
//!   `seq_file` restarts its iterator when read at offset 0), into one reused buffer;
//! - the previous `/proc/stat` sample, for cpu percentages;
//! - the parsed mount table, re-parsed only when the text of `/proc/self/mounts` changed;
//! - the thermal zones found on the first `temp` round, their `type` and an open `temp` file;
//! - the `Vec`s of the caller's `Snapshot` and the `String`s inside their elements: elements a
//!   round does not need are parked in a pool and handed back on a later round.
//!
//! Failures never abort a round: a missing file skips its fact silently; a file that does not
//! parse skips its fact for that round, is counted ([`Collector::parse_errors`]) and logged once
//! per path on stderr with the line and what was wrong.

use super::mounts::{self, Mount};
use super::stat::{self, Stat};
use super::{cpu, diskstats, loadavg, meminfo, netdev, thermal, uptime, ParseError, Procfs, Sysfs};
use autofact_fbs::{Cpu, Disk, DiskIo, Health, Net, Periods, Snapshot, Temp};
use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::ops::BitOr;
use std::os::unix::fs::FileExt;
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
    /// Every kind.
    pub const ALL: Kinds = Kinds((1 << 10) - 1);

    /// True when every kind of `other` is in `self`.
    pub fn contains(self, other: Kinds) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when some kind of `other` is in `self`.
    pub fn intersects(self, other: Kinds) -> bool {
        self.0 & other.0 != 0
    }

    /// The kinds whose period is not 0 (enabled by the factory's Config).
    pub fn enabled(p: &Periods) -> Kinds {
        let pairs = [
            (p.cpu_ms, Kinds::CPU),
            (p.kernel_ms, Kinds::KERNEL),
            (p.mem_ms, Kinds::MEM),
            (p.swap_ms, Kinds::SWAP),
            (p.system_ms, Kinds::SYSTEM),
            (p.net_ms, Kinds::NET),
            (p.diskio_ms, Kinds::DISKIO),
            (p.disk_ms, Kinds::DISK),
            (p.temp_ms, Kinds::TEMP),
            (p.health_ms, Kinds::HEALTH),
        ];
        pairs
            .into_iter()
            .filter(|(ms, _)| *ms != 0)
            .fold(Kinds::NONE, |acc, (_, k)| acc | k)
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

/// A kernel file kept open between rounds.
#[derive(Debug)]
struct Source {
    path: PathBuf,
    file: Option<File>,
}

impl Source {
    fn new(path: PathBuf) -> Source {
        Source { path, file: None }
    }

    /// Reads the whole file into `buf` (whose `len` is its usable size and only grows);
    /// `Ok(None)` when the file does not exist. Reading loops until `pread` returns 0: a procfs
    /// `seq_file` hands out at most one page of records per call, so a short read is not the end.
    fn read<'b>(&mut self, buf: &'b mut Vec<u8>) -> io::Result<Option<&'b [u8]>> {
        if self.file.is_none() {
            match File::open(&self.path) {
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

/// A thermal zone found on the first `temp` round.
#[derive(Debug)]
struct Zone {
    sensor: String,
    temp: Source,
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
            self.cur.kernel()
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
                            out.swap = Some(m.swap());
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

    /// `system` needs loadavg and uptime; n_cpus comes from the last good /proc/stat.
    fn system(&mut self) -> Option<autofact_fbs::System> {
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
            ..Default::default()
        })
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

    /// Reads each known zone's temperature; finds the zones on the first call, and again after
    /// a zone vanished.
    fn temps(&mut self, out: &mut Vec<Temp>) -> usize {
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

    fn find_zones(&mut self) -> Vec<Zone> {
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
            zones.push(Zone {
                sensor,
                temp: Source::new(dir.join("temp")),
            });
        }
        zones
    }
}
