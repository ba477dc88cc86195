//! `autofact run`: the agent's life. It connects to the factory, takes all its behaviour from the
//! factory's Config, collects on schedule into the disk buffer whether connected or not, sends
//! what is buffered, and reconnects with backoff until told to stop or until it gives up.
//!
//! # Layout
//! - [`config`]: the agent's JSON config file (server, data_dir, token, region, zone, hostname).
//! - [`state`]: identity and last Config kept in `data_dir`, written atomically.
//! - [`transport`]: resolve, TCP connect, TLS (`wss://`, see `tls`), websocket handshake, with
//!   timeouts and size limits.
//! - [`schedule`]: the collection thread: per-kind periods, a push request per push interval.
//! - [`queue`]: the store thread (snapshots to disk at collection, batches at each push, fsync),
//!   the memory queue used while the disk refuses writes, dead letters.
//! - [`session`]: the state machine: Hello, Welcome or Reject, send window, acks, keepalive,
//!   reconnect with [`backoff`], give-up, shutdown.
//! - [`signals`]: SIGTERM/SIGINT turned into the shutdown channel.
//!
//! Threads: the caller's thread runs the session on `smol::block_on`; one dedicated thread runs
//! the collectors, so collection never waits on the network; another (the store thread) does
//! every buffer write and fsync, so collection never waits on the disk either; queue calls from
//! the session go through `smol::unblock`.

pub mod backoff;
pub mod config;
pub mod queue;
pub mod schedule;
pub mod session;
pub mod signals;
pub mod state;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;

pub use config::{AgentConfig, ConfigError, Server};
pub use schedule::{Collect, Kind};
pub use state::{Identity, StateDir, StateError};

use crate::buffer::BufferError;
use crate::facts::host::default_etc_root;
use crate::facts::{Collector, HostInfo, Kinds, Procfs, Sysfs};
use autofact_fbs::{Hello, Snapshot};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Everything `run` needs; built by `main` from the command line and the config file.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The validated config file.
    pub config: AgentConfig,
    /// Timeouts and delays; tests shorten them.
    pub timing: Timing,
    /// Where status lines go.
    pub log: Log,
    /// The `/proc` tree to read (a captured one in tests).
    pub proc_root: PathBuf,
    /// The `/sys` tree to read.
    pub sys_root: PathBuf,
}

impl Settings {
    /// Settings with production timings, logging to stderr.
    pub fn new(config: AgentConfig) -> Settings {
        let mut timing = Timing::default();
        // Test only, never set in production: every fsync of the buffer takes this many ms
        // more, so the end-to-end tests can play a slow SD card with the real binary.
        if let Some(ms) = std::env::var("AUTOFACT_TEST_SLOW_FSYNC_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            timing.slow_disk = Duration::from_millis(ms);
        }
        Settings {
            config,
            timing,
            log: Log::stderr(),
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
        }
    }
}

/// The delays and limits of the agent's network life. Behaviour the factory controls (periods,
/// ping interval, give-up) is not here: it comes in the Config.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// First reconnect delay; it doubles after each failure.
    pub backoff_base: Duration,
    /// Longest reconnect delay, also used after a Reject.
    pub backoff_max: Duration,
    /// Bounds each of resolve, TCP connect, handshake, the wait for Welcome, and one send.
    pub connect_timeout: Duration,
    /// How often the buffer is made durable in the background.
    pub flush_every: Duration,
    /// How long a normal close waits for the factory's close reply.
    pub close_timeout: Duration,
    /// Batches in flight (sent, not yet acked).
    pub window: usize,
    /// Largest message accepted from the factory.
    pub max_message: usize,
    /// Test seam: every fsync of the disk buffer takes at least this long (a slow SD card).
    /// Zero in production.
    pub slow_disk: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            flush_every: Duration::from_secs(1),
            close_timeout: Duration::from_millis(1000),
            window: 8,
            max_message: 1024 * 1024,
            slow_disk: Duration::ZERO,
        }
    }
}

/// How the agent's life ended, when it ended on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop (signal): buffer flushed, websocket closed. Exit status 0.
    Stopped,
    /// No session for the Config's give-up time. Exit status 3.
    GaveUp,
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> i32 {
        match self {
            Exit::Stopped => 0,
            Exit::GaveUp => 3,
        }
    }
}

/// Why the agent could not run at all. Network trouble is not an error: it reconnects.
#[derive(Debug)]
pub enum Error {
    /// The config file is missing or wrong (exit status 2).
    Config(ConfigError),
    /// A state file in `data_dir` could not be read or written.
    State(StateError),
    /// The disk buffer failed.
    Buffer(BufferError),
    /// The collection thread died.
    Collector(String),
    /// The disk buffer failed and could not be reopened: one line naming it (exit status 1).
    Fatal(String),
}

impl Error {
    /// The process exit status for this error.
    pub fn code(&self) -> i32 {
        match self {
            Error::Config(_) => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => e.fmt(f),
            Error::State(e) => e.fmt(f),
            Error::Buffer(e) => write!(f, "disk buffer: {e}"),
            Error::Collector(e) => write!(f, "collection thread: {e}"),
            Error::Fatal(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(e) => Some(e),
            Error::State(e) => Some(e),
            Error::Buffer(e) => Some(e),
            Error::Collector(_) | Error::Fatal(_) => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Error {
        Error::Config(e)
    }
}

impl From<StateError> for Error {
    fn from(e: StateError) -> Error {
        Error::State(e)
    }
}

impl From<BufferError> for Error {
    fn from(e: BufferError) -> Error {
        Error::Buffer(e)
    }
}

/// Where the agent's status lines go: stderr, and optionally a channel so tests can read what a
/// user would see.
#[derive(Debug, Clone, Default)]
pub struct Log {
    tap: Option<smol::channel::Sender<String>>,
}

impl Log {
    /// Lines go to stderr only.
    pub fn stderr() -> Log {
        Log { tap: None }
    }

    /// Lines go to stderr and to the returned receiver.
    pub fn tap() -> (Log, smol::channel::Receiver<String>) {
        let (tx, rx) = smol::channel::unbounded();
        (Log { tap: Some(tx) }, rx)
    }

    /// Writes one status line.
    pub fn line(&self, msg: impl fmt::Display) {
        let line = msg.to_string();
        eprintln!("autofact: {line}");
        if let Some(tap) = &self.tap {
            let _ = tap.try_send(line);
        }
    }
}

/// A stop request that stays fired once seen, whoever polled the channel first.
#[derive(Debug)]
pub struct Shutdown {
    rx: smol::channel::Receiver<()>,
    fired: AtomicBool,
}

impl Shutdown {
    /// Fires when `rx` receives a value or every sender is dropped.
    pub fn new(rx: smol::channel::Receiver<()>) -> Shutdown {
        Shutdown {
            rx,
            fired: AtomicBool::new(false),
        }
    }

    /// Resolves once a stop was requested.
    pub async fn wait(&self) {
        if !self.fired.load(Ordering::Relaxed) {
            let _ = self.rx.recv().await;
            self.fired.store(true, Ordering::Relaxed);
        }
    }
}

/// The live collectors of [`crate::facts`], behind [`Collect`].
#[derive(Debug)]
pub struct LiveFacts(pub Collector);

impl Collect for LiveFacts {
    fn collect(&mut self, kinds: &[Kind], snap: &mut Snapshot) {
        // The scheduler fills health itself, with the buffer's figures.
        let set = kinds
            .iter()
            .filter(|k| **k != Kind::Health)
            .fold(Kinds::NONE, |set, k| set | k.bit());
        let time_ns = snap.time_ns;
        self.0.collect(set, time_ns, snap);
    }

    fn parse_errors(&self) -> u64 {
        self.0.parse_errors()
    }
}

/// Runs the agent on the machine's `/proc` and `/sys` (or the roots in `settings`) until
/// `shutdown` fires (`Ok(Exit::Stopped)`) or it gives up (`Ok(Exit::GaveUp)`). Blocks the
/// calling thread.
pub fn run(settings: Settings, shutdown: smol::channel::Receiver<()>) -> Result<Exit, Error> {
    let procfs = Procfs::new(&settings.proc_root);
    let sysfs = Sysfs::new(&settings.sys_root);
    let (info, errors) = HostInfo::read(&procfs, &default_etc_root(&procfs));
    for e in errors {
        settings
            .log
            .line(format_args!("host description incomplete: {e}"));
    }
    let mut host = Hello::default();
    info.fill_hello(&mut host);
    let source = LiveFacts(Collector::new(&procfs, &sysfs));
    run_with(settings, Box::new(source), host, shutdown)
}

/// [`run`] with a chosen collector and host description (what goes into every Hello).
pub fn run_with(
    settings: Settings,
    source: Box<dyn Collect>,
    host: Hello,
    shutdown: smol::channel::Receiver<()>,
) -> Result<Exit, Error> {
    smol::block_on(session::life(
        settings,
        source,
        host,
        Shutdown::new(shutdown),
    ))
}
