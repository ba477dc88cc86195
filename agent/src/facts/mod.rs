//! Facts read by hand from `/proc` and `/sys`: one module per kernel file, each with a pure
//! `parse(&str)`, thin readers ([`Procfs`], [`Sysfs`]) that add the path to errors, and the
//! [`Collector`] that turns one round of reads into a [`autofact_fbs::Snapshot`].
//!
//! # Layout
//! - [`stat`] `/proc/stat` (cpu times, kernel counters), [`cpu`] usage percentages from two samples.
//! - [`meminfo`], [`loadavg`], [`uptime`], [`netdev`] (`/proc/net/dev`), [`diskstats`].
//! - [`mounts`] `/proc/self/mounts` and filesystem usage through `statvfs`.
//! - [`thermal`] `/sys/class/hwmon/hwmon*/temp*_input`, else `/sys/class/thermal/thermal_zone*`.
//! - [`processes`] `/proc/[pid]/stat` states and threads, [`vmstat`] swap in/out pages,
//!   [`utmp`] login sessions (Telegraf's `processes`, `swap` in/out and `system` users).
//! - [`cpuinfo`], [`osrelease`], [`host`]: what the agent says about itself in `Hello`.
//! - [`collector`]: open-once files, reused buffers, one round into a `Snapshot`.
//!
//! Parsers never read files and never panic; they return [`ParseError`] with a 1-based line.
//! Kernel-version-dependent inputs (cpu lines with 7 to 10 values, diskstats with 14, 18 or 20
//! columns, meminfo without `MemAvailable`) are accepted; what is missing reads as zero or is
//! estimated as Telegraf/gopsutil do.

pub mod collector;
pub mod cpu;
pub mod cpuinfo;
pub mod diskstats;
pub mod host;
pub mod loadavg;
pub mod meminfo;
pub mod mounts;
pub mod netdev;
pub mod osrelease;
pub mod processes;
pub mod stat;
pub mod thermal;
pub mod uptime;
pub mod utmp;
pub mod vmstat;

pub use collector::{Collector, Kinds};
pub use host::HostInfo;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What was wrong in a file's text, and on which line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number; 0 when the problem is the file as a whole (e.g. it is empty).
    pub line: usize,
    /// What was wrong, for a human.
    pub what: String,
}

impl ParseError {
    /// An error at `line` (1-based).
    pub fn new(line: usize, what: impl Into<String>) -> ParseError {
        ParseError {
            line,
            what: what.into(),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.what)
        } else {
            write!(f, "line {}: {}", self.line, self.what)
        }
    }
}

impl std::error::Error for ParseError {}

/// Reading a fact failed: the file could not be read, or its text could not be parsed.
#[derive(Debug)]
pub enum FactsError {
    /// Opening or reading `path` failed.
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The text of `path` is not what the kernel writes.
    Parse {
        /// The file.
        path: PathBuf,
        /// What and where.
        source: ParseError,
    },
}

impl FactsError {
    /// The file this error is about.
    pub fn path(&self) -> &Path {
        match self {
            FactsError::Io { path, .. } | FactsError::Parse { path, .. } => path,
        }
    }

    /// True when the file does not exist: the machine simply lacks this fact.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FactsError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

impl fmt::Display for FactsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FactsError::Io { path, source } => write!(f, "{}: {}", path.display(), source),
            FactsError::Parse { path, source } => write!(f, "{}: {}", path.display(), source),
        }
    }
}

impl std::error::Error for FactsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FactsError::Io { source, .. } => Some(source),
            FactsError::Parse { source, .. } => Some(source),
        }
    }
}

/// Reads one file whole and parses it, attaching the path to any error. The read is the
/// collector's own ([`collector::Source`]: `pread` from offset 0 until it returns 0, bounded),
/// and the parsers are the ones a round calls (`parse` wraps `parse_into`): a test through
/// [`Procfs`] exercises the production read path, not a second one.
fn read_parse<T>(
    path: PathBuf,
    parse: impl FnOnce(&str) -> Result<T, ParseError>,
) -> Result<T, FactsError> {
    let mut buf = Vec::new();
    let mut source = collector::Source::new(path.clone());
    let bytes = match source.read(&mut buf) {
        Ok(Some(b)) => b,
        Ok(None) => {
            let source = io::Error::from(io::ErrorKind::NotFound);
            return Err(FactsError::Io { path, source });
        }
        Err(source) => return Err(FactsError::Io { path, source }),
    };
    // Mount points may hold bytes that are not UTF-8; a lossy view keeps the rest of the file usable.
    let text = String::from_utf8_lossy(bytes);
    parse(&text).map_err(|source| FactsError::Parse { path, source })
}

/// A `/proc` tree: the live one (`/proc`) or a captured copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Procfs {
    /// The directory that plays the role of `/proc`.
    pub root: PathBuf,
}

impl Default for Procfs {
    fn default() -> Procfs {
        Procfs {
            root: PathBuf::from("/proc"),
        }
    }
}

impl Procfs {
    /// A reader rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Procfs {
        Procfs { root: root.into() }
    }

    /// `root/rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// True for the live `/proc` of this machine.
    pub fn is_live(&self) -> bool {
        self.root == Path::new("/proc")
    }

    /// `/proc/stat`.
    pub fn stat(&self) -> Result<stat::Stat, FactsError> {
        read_parse(self.path("stat"), stat::parse)
    }

    /// `/proc/meminfo`.
    pub fn meminfo(&self) -> Result<meminfo::MemInfo, FactsError> {
        read_parse(self.path("meminfo"), meminfo::parse)
    }

    /// `/proc/loadavg`.
    pub fn loadavg(&self) -> Result<loadavg::LoadAvg, FactsError> {
        read_parse(self.path("loadavg"), loadavg::parse)
    }

    /// `/proc/uptime`.
    pub fn uptime(&self) -> Result<uptime::Uptime, FactsError> {
        read_parse(self.path("uptime"), uptime::parse)
    }

    /// `/proc/net/dev`, every interface including loopback.
    pub fn net_dev(&self) -> Result<Vec<autofact_fbs::Net>, FactsError> {
        read_parse(self.path("net/dev"), netdev::parse)
    }

    /// `/proc/diskstats`.
    pub fn diskstats(&self) -> Result<Vec<autofact_fbs::DiskIo>, FactsError> {
        read_parse(self.path("diskstats"), diskstats::parse)
    }

    /// `/proc/self/mounts`, every line, unescaped.
    pub fn mounts(&self) -> Result<Vec<mounts::Mount>, FactsError> {
        read_parse(self.path("self/mounts"), mounts::parse)
    }

    /// `/proc/cpuinfo`.
    pub fn cpuinfo(&self) -> Result<cpuinfo::CpuInfo, FactsError> {
        read_parse(self.path("cpuinfo"), cpuinfo::parse)
    }

    /// One line of `/proc/sys/kernel/<name>` (hostname, osrelease, arch), trimmed.
    pub fn kernel_string(&self, name: &str) -> Result<String, FactsError> {
        read_parse(self.path(&format!("sys/kernel/{name}")), |s| {
            Ok(s.trim().to_string())
        })
    }
}

/// A `/sys` tree: the live one (`/sys`) or a captured copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysfs {
    /// The directory that plays the role of `/sys`.
    pub root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Sysfs {
        Sysfs {
            root: PathBuf::from("/sys"),
        }
    }
}

impl Sysfs {
    /// A reader rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs { root: root.into() }
    }

    /// `root/class/thermal`.
    pub fn thermal_dir(&self) -> PathBuf {
        self.root.join("class/thermal")
    }

    /// `root/class/hwmon`.
    pub fn hwmon_dir(&self) -> PathBuf {
        self.root.join("class/hwmon")
    }

    /// Every thermal zone, in zone-number order. A missing `class/thermal` (VMs, containers)
    /// is an empty list, not an error.
    pub fn thermal_zones(&self) -> Result<Vec<autofact_fbs::Temp>, FactsError> {
        let mut out = Vec::new();
        for zone in thermal::zone_dirs(&self.thermal_dir())? {
            let sensor = read_parse(zone.join("type"), thermal::parse_type)?;
            let temp = read_parse(zone.join("temp"), thermal::parse_temp)?;
            out.push(autofact_fbs::Temp { sensor, temp });
        }
        Ok(out)
    }
}

/// Parses a decimal unsigned field; `what` names it in the error.
fn num(tok: Option<&str>, line: usize, what: &str) -> Result<u64, ParseError> {
    match tok {
        None => Err(ParseError::new(line, format!("missing {what}"))),
        Some(t) => t.parse::<u64>().map_err(|_| {
            ParseError::new(line, format!("{what}: {t:?} is not an unsigned integer"))
        }),
    }
}

/// Parses a finite, non-negative decimal field of line 1 (the one-line files loadavg and
/// uptime); `what` names it and `unit` says what it should have been, in the error.
fn non_negative(tok: Option<&str>, what: &str, unit: &str) -> Result<f64, ParseError> {
    let t = tok.ok_or_else(|| ParseError::new(1, format!("missing {what}")))?;
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(ParseError::new(1, format!("{what}: {t:?} is not {unit}"))),
    }
}

/// Returns slot `n` of `v`, growing it by one default element when `n == v.len()`. Used by the
/// `parse_into` functions so that a warm `Vec` and its `String`s are reused, not reallocated.
fn slot<T: Default>(v: &mut Vec<T>, n: usize) -> &mut T {
    if n >= v.len() {
        v.push(T::default());
    }
    let last = v.len() - 1;
    let i = n.min(last);
    &mut v[i]
}
