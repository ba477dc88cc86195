//! Our own Rust types for every protocol message and fact. Only `codec` touches the
//! generated flatbuffers types; everything else in the workspace uses these.

/// The protocol version this build speaks; sent in `Hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// One websocket binary message.
// Hello is the largest variant (~400 bytes); a Message lives only while it is encoded or
// handled, once per connection for Hello, so boxing would cost more code than the bytes it saves.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// agent -> factory, first message.
    Hello(Hello),
    /// factory -> agent, answer to a good Hello.
    Welcome(Welcome),
    /// factory -> agent, a changed configuration.
    Config(Config),
    /// agent -> factory, facts.
    Batch(Batch),
    /// factory -> agent, cumulative acknowledgement.
    Ack(Ack),
    /// factory -> agent, refusal before close.
    Reject(Reject),
}

/// The agent's introduction.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hello {
    /// Protocol version the agent speaks.
    pub protocol_version: u32,
    /// 32 lowercase hex digits, empty when the agent is new.
    pub client_id: String,
    /// The secret the factory gave this client, empty when new.
    pub secret: String,
    /// The enrollment token (used when new).
    pub token: String,
    /// Hostname, the client's display name.
    pub hostname: String,
    /// Region tag, may be empty.
    pub region: String,
    /// Zone tag, may be empty.
    pub zone: String,
    /// Machine architecture (uname -m).
    pub arch: String,
    /// Kernel release (uname -r).
    pub kernel: String,
    /// `/etc/os-release` PRETTY_NAME.
    pub os: String,
    /// CPU model or board description from /proc/cpuinfo.
    pub cpu_model: String,
    /// Total memory in bytes.
    pub mem_total: u64,
    /// The agent's version.
    pub agent_version: String,
    /// Boot time, unix seconds.
    pub boot_time: u64,
    /// The agent's wall clock when it sent Hello, unix nanoseconds.
    pub agent_clock_ns: i64,
    /// Random instance nonce made at the agent's first start; empty from first-release agents.
    /// One client id presented from a second installation is a clone (DESIGN.md, Identity).
    pub installation: String,
    /// The disk buffer's random epoch; 0 from agents without epochs.
    pub epoch: u64,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// `CLOCK_BOOTTIME` when the agent sent Hello, nanoseconds; 0 = unknown.
    pub agent_boottime_ns: i64,
    /// Whether the agent's wall clock was synchronised when it sent Hello.
    pub clock_sync: ClockSync,
    /// [`Config::hash`] of the Config the agent applied; 0 = none.
    pub config_hash: u64,
    /// Whether that Config was applied.
    pub config_status: ConfigStatus,
    /// Why the last Config could not be applied; empty when it was.
    pub config_error: String,
    /// Where the agent keeps unacknowledged snapshots right now.
    pub buffer_state: BufferState,
}

/// Whether the kernel considered the wall clock synchronised (adjtimex, `STA_UNSYNC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum ClockSync {
    /// Not reported (a first-release agent) or not knowable.
    #[default]
    Unknown,
    /// Synchronised (NTP or similar has disciplined the clock).
    Synced,
    /// Not synchronised: the wall clock may be far off.
    Unsynced,
}

impl ClockSync {
    /// The name used in the inventory, `/clients` and the fleet page.
    pub fn as_str(self) -> &'static str {
        match self {
            ClockSync::Unknown => "unknown",
            ClockSync::Synced => "synced",
            ClockSync::Unsynced => "unsynced",
        }
    }
}

/// Where the agent keeps unacknowledged snapshots right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum BufferState {
    /// The disk buffer, as designed.
    #[default]
    Disk,
    /// The disk is full (ENOSPC): a bounded memory queue until writes succeed again.
    DiskFull,
    /// The disk is read-only (EROFS, EACCES): likewise.
    ReadOnly,
    /// Another I/O error: likewise.
    DiskFailed,
}

impl BufferState {
    /// The name used in logs, `/clients` and the fleet page: `disk`, `disk_full`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            BufferState::Disk => "disk",
            BufferState::DiskFull => "disk_full",
            BufferState::ReadOnly => "read_only",
            BufferState::DiskFailed => "disk_failed",
        }
    }
}

/// The agent's answer to the last Config it was given (OpAMP's APPLIED / FAILED).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum ConfigStatus {
    /// Not reported (a first-release agent), or no Config received yet.
    #[default]
    Unknown,
    /// The Config with the reported hash is in force.
    Applied,
    /// The last Config could not be applied; the error says why.
    Failed,
}

impl ConfigStatus {
    /// The name used in logs, `/clients` and the fleet page.
    pub fn as_str(self) -> &'static str {
        match self {
            ConfigStatus::Unknown => "unknown",
            ConfigStatus::Applied => "applied",
            ConfigStatus::Failed => "failed",
        }
    }
}

/// Collection periods in milliseconds; 0 disables the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Periods {
    /// `cpu` measurement.
    pub cpu_ms: u32,
    /// `kernel` measurement.
    pub kernel_ms: u32,
    /// `mem` measurement.
    pub mem_ms: u32,
    /// `swap` measurement.
    pub swap_ms: u32,
    /// `system` measurement.
    pub system_ms: u32,
    /// `net` measurement.
    pub net_ms: u32,
    /// `diskio` measurement.
    pub diskio_ms: u32,
    /// `disk` measurement.
    pub disk_ms: u32,
    /// `temp` measurement.
    pub temp_ms: u32,
    /// `autofact` (agent health) measurement.
    pub health_ms: u32,
    /// `processes` measurement (release 0.2).
    pub processes_ms: u32,
}

/// One fact kind: the measurement it writes and its key in a Config's `periods`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FactKind {
    /// The measurement (Telegraf's name; `autofact` for the agent's own health).
    pub measurement: &'static str,
    /// Its period's key in the Config (`cpu_ms`, ...), in the factory's file and the agent's
    /// stored Config.
    pub period_key: &'static str,
}

/// Every fact kind, the one table the rest derives from: [`Periods::slots`] is in this order,
/// the agent's scheduler kinds (`run::Kind`) and collector kinds (`facts::Kinds` bits) are its
/// indexes, and the factory checks its `periods` keys against it. A new kind is one line here,
/// one field in [`Periods`] (and the schema), one arm in [`Periods::slots_mut`].
pub const FACT_KINDS: [FactKind; 11] = [
    FactKind {
        measurement: "cpu",
        period_key: "cpu_ms",
    },
    FactKind {
        measurement: "kernel",
        period_key: "kernel_ms",
    },
    FactKind {
        measurement: "mem",
        period_key: "mem_ms",
    },
    FactKind {
        measurement: "swap",
        period_key: "swap_ms",
    },
    FactKind {
        measurement: "system",
        period_key: "system_ms",
    },
    FactKind {
        measurement: "net",
        period_key: "net_ms",
    },
    FactKind {
        measurement: "diskio",
        period_key: "diskio_ms",
    },
    FactKind {
        measurement: "disk",
        period_key: "disk_ms",
    },
    FactKind {
        measurement: "temp",
        period_key: "temp_ms",
    },
    FactKind {
        measurement: "autofact",
        period_key: "health_ms",
    },
    FactKind {
        measurement: "processes",
        period_key: "processes_ms",
    },
];

impl Periods {
    /// Every kind at the same period.
    pub fn all(ms: u32) -> Periods {
        let mut p = Periods::default();
        for slot in p.slots_mut() {
            *slot = ms;
        }
        p
    }

    /// The periods in [`FACT_KINDS`] order.
    pub fn slots(&self) -> [u32; 11] {
        let mut copy = *self;
        copy.slots_mut().map(|v| *v)
    }

    /// The periods in [`FACT_KINDS`] order, to set. The one place a kind's index meets its
    /// field.
    pub fn slots_mut(&mut self) -> [&mut u32; 11] {
        [
            &mut self.cpu_ms,
            &mut self.kernel_ms,
            &mut self.mem_ms,
            &mut self.swap_ms,
            &mut self.system_ms,
            &mut self.net_ms,
            &mut self.diskio_ms,
            &mut self.disk_ms,
            &mut self.temp_ms,
            &mut self.health_ms,
            &mut self.processes_ms,
        ]
    }
}

/// How an agent behaves; pushed by the factory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Collection period per fact kind.
    pub periods: Periods,
    /// How often collected facts become one Batch.
    pub push_interval_ms: u32,
    /// Websocket ping interval when idle.
    pub ping_interval_ms: u32,
    /// Disk buffer cap in bytes; oldest batches are dropped past it.
    pub buffer_cap_bytes: u64,
    /// Give up reconnecting after this many seconds; 0 = never.
    pub give_up_secs: u32,
    /// The factory's message size limit in bytes; the agent never builds a batch above it.
    /// 0 = unknown (a first-release factory): the agent then uses its own default.
    pub max_message_bytes: u32,
}

impl Config {
    /// A stable 64-bit hash of every field (FNV-1a over the fields in declaration order, each
    /// as little-endian bytes). The agent reports the hash of the Config it applied; the factory
    /// compares it with the hash of the Config it means the client to have. Never 0.
    /// `processes_ms`, added to the periods later, is hashed last.
    pub fn hash(&self) -> u64 {
        let p = &self.periods;
        let words: [u64; 16] = [
            p.cpu_ms.into(),
            p.kernel_ms.into(),
            p.mem_ms.into(),
            p.swap_ms.into(),
            p.system_ms.into(),
            p.net_ms.into(),
            p.diskio_ms.into(),
            p.disk_ms.into(),
            p.temp_ms.into(),
            p.health_ms.into(),
            self.push_interval_ms.into(),
            self.ping_interval_ms.into(),
            self.buffer_cap_bytes,
            self.give_up_secs.into(),
            self.max_message_bytes.into(),
            p.processes_ms.into(),
        ];
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for w in words {
            for b in w.to_le_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h.max(1)
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            periods: Periods::all(10_000),
            push_interval_ms: 10_000,
            ping_interval_ms: 15_000,
            buffer_cap_bytes: 64 * 1024 * 1024,
            give_up_secs: 15 * 60,
            max_message_bytes: 0,
        }
    }
}

/// The factory's answer to a good Hello.
#[derive(Debug, Clone, PartialEq)]
pub struct Welcome {
    /// The client's id (new or the one presented).
    pub client_id: String,
    /// The new secret; empty on welcome back.
    pub secret: String,
    /// True when the client was already known.
    pub welcome_back: bool,
    /// The client's effective Config.
    pub config: Config,
}

/// Facts collected since the previous batch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    /// Monotonic within the epoch, survives restarts.
    pub seq: u64,
    /// Collection instants, oldest first.
    pub snapshots: Vec<Snapshot>,
    /// The buffer's random epoch; (client, epoch, seq) is unique. 0 from first-release agents.
    pub epoch: u64,
    /// The agent's wall clock when it sent this batch, unix nanoseconds; 0 = unknown.
    pub agent_clock_ns: i64,
    /// `CLOCK_BOOTTIME` when the agent sent this batch, nanoseconds; 0 = unknown.
    pub agent_boottime_ns: i64,
    /// [`Config::hash`] of the Config applied when sent; 0 = none or unknown.
    pub config_hash: u64,
    /// Whether that Config was applied.
    pub config_status: ConfigStatus,
    /// Where the agent keeps unacknowledged snapshots right now.
    pub buffer_state: BufferState,
}

/// Cumulative acknowledgement: every seq <= `seq` is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ack {
    /// Highest durable seq.
    pub seq: u64,
    /// The epoch that seq belongs to; 0 = unspecified (a first-release factory).
    pub epoch: u64,
}

/// Why the factory refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectCode {
    /// The message could not be decoded or was not expected.
    Malformed,
    /// Wrong enrollment token.
    BadToken,
    /// The presented client id is unknown to this factory.
    UnknownClient,
    /// The presented secret does not match.
    BadSecret,
    /// Protocol version not supported.
    UnsupportedVersion,
    /// Message larger than the factory accepts.
    TooLarge,
    /// Connection limit reached.
    Busy,
    /// A newer connection with the same id replaced this one.
    Replaced,
    /// The factory is shutting down.
    ShuttingDown,
    /// A plain (ws://) connection to a factory that requires TLS.
    TlsRequired,
}

/// A refusal, sent just before the factory closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Machine-readable reason.
    pub code: RejectCode,
    /// Human-readable detail.
    pub message: String,
}

/// One collection instant; only kinds collected at that instant are present.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    /// Collection time, unix nanoseconds.
    pub time_ns: i64,
    /// `cpu`: cpu-total first, then cpu0...
    pub cpu: Vec<Cpu>,
    /// `kernel`.
    pub kernel: Option<Kernel>,
    /// `mem`.
    pub mem: Option<Mem>,
    /// `swap`.
    pub swap: Option<Swap>,
    /// `system`.
    pub system: Option<System>,
    /// `net`, one per interface.
    pub net: Vec<Net>,
    /// `diskio`, one per block device.
    pub diskio: Vec<DiskIo>,
    /// `disk`, one per filesystem.
    pub disk: Vec<Disk>,
    /// `temp`, one per thermal zone.
    pub temp: Vec<Temp>,
    /// `autofact`, the agent's own health.
    pub health: Option<Health>,
    /// `CLOCK_BOOTTIME` at collection, nanoseconds; 0 = unknown (a first-release agent).
    pub boottime_ns: i64,
    /// Whether the wall clock was synchronised at collection.
    pub clock_sync: ClockSync,
    /// The boot this snapshot was taken in (`/proc/sys/kernel/random/boot_id`); empty = unknown.
    pub boot_id: String,
    /// `processes` (release 0.2).
    pub processes: Option<Processes>,
}

/// CPU usage percentages over one interval (Telegraf `cpu`, fields `usage_*`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Cpu {
    /// `cpu-total`, `cpu0`, ...
    pub name: String,
    /// usage_user
    pub user: f64,
    /// usage_system
    pub system: f64,
    /// usage_idle
    pub idle: f64,
    /// usage_nice
    pub nice: f64,
    /// usage_iowait
    pub iowait: f64,
    /// usage_irq
    pub irq: f64,
    /// usage_softirq
    pub softirq: f64,
    /// usage_steal
    pub steal: f64,
    /// usage_guest
    pub guest: f64,
    /// usage_guest_nice
    pub guest_nice: f64,
}

/// Telegraf `kernel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Kernel {
    /// Boot time, unix seconds (`btime`).
    pub boot_time: u64,
    /// `ctxt`.
    pub context_switches: u64,
    /// First number of `intr`.
    pub interrupts: u64,
    /// `processes`.
    pub processes_forked: u64,
    /// `/proc/sys/kernel/random/entropy_avail`; `None` when unreadable.
    pub entropy_avail: Option<u64>,
}

/// Telegraf `mem`, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mem {
    /// MemTotal
    pub total: u64,
    /// MemAvailable (or an estimate on kernels before 3.14)
    pub available: u64,
    /// total - free - buffered - cached
    pub used: u64,
    /// MemFree
    pub free: u64,
    /// Cached + SReclaimable
    pub cached: u64,
    /// Buffers
    pub buffered: u64,
    /// Active
    pub active: u64,
    /// Inactive
    pub inactive: u64,
    /// Slab
    pub slab: u64,
    /// Shmem
    pub shared: u64,
    /// CommitLimit
    pub commit_limit: u64,
    /// Committed_AS
    pub committed_as: u64,
    /// Dirty
    pub dirty: u64,
    /// HighFree (32-bit kernels with highmem; 0 elsewhere)
    pub high_free: u64,
    /// HighTotal
    pub high_total: u64,
    /// HugePages_Free (a count, not bytes)
    pub huge_pages_free: u64,
    /// Hugepagesize
    pub huge_page_size: u64,
    /// HugePages_Total (a count)
    pub huge_pages_total: u64,
    /// LowFree
    pub low_free: u64,
    /// LowTotal
    pub low_total: u64,
    /// Mapped
    pub mapped: u64,
    /// PageTables
    pub page_tables: u64,
    /// SReclaimable
    pub sreclaimable: u64,
    /// SUnreclaim
    pub sunreclaim: u64,
    /// SwapCached
    pub swap_cached: u64,
    /// SwapFree
    pub swap_free: u64,
    /// SwapTotal
    pub swap_total: u64,
    /// VmallocChunk
    pub vmalloc_chunk: u64,
    /// VmallocTotal
    pub vmalloc_total: u64,
    /// VmallocUsed
    pub vmalloc_used: u64,
    /// Writeback
    pub write_back: u64,
    /// WritebackTmp
    pub write_back_tmp: u64,
}

/// Telegraf `swap`, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Swap {
    /// SwapTotal
    pub total: u64,
    /// total - free
    pub used: u64,
    /// SwapFree
    pub free: u64,
    /// Bytes swapped in since boot (`/proc/vmstat` pswpin * page size); `None` when unreadable.
    pub sin: Option<u64>,
    /// Bytes swapped out since boot (pswpout * page size); `None` when unreadable.
    pub sout: Option<u64>,
}

/// Telegraf `system`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct System {
    /// 1-minute load average.
    pub load1: f64,
    /// 5-minute load average.
    pub load5: f64,
    /// 15-minute load average.
    pub load15: f64,
    /// Number of CPUs (cpuN lines in /proc/stat).
    pub n_cpus: u32,
    /// Seconds since boot.
    pub uptime: u64,
    /// Login sessions in utmp (`USER_PROCESS` records); `None` where there is no utmp.
    pub n_users: Option<u32>,
    /// Distinct user names among those sessions.
    pub n_unique_users: Option<u32>,
}

/// Telegraf `net`, one interface.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Net {
    /// Interface name.
    pub interface: String,
    /// Transmitted bytes.
    pub bytes_sent: u64,
    /// Received bytes.
    pub bytes_recv: u64,
    /// Transmitted packets.
    pub packets_sent: u64,
    /// Received packets.
    pub packets_recv: u64,
    /// Receive errors.
    pub err_in: u64,
    /// Transmit errors.
    pub err_out: u64,
    /// Receive drops.
    pub drop_in: u64,
    /// Transmit drops.
    pub drop_out: u64,
}

/// Telegraf `diskio`, one block device.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DiskIo {
    /// Device name (sda, mmcblk0p2, ...).
    pub name: String,
    /// Reads completed.
    pub reads: u64,
    /// Writes completed.
    pub writes: u64,
    /// Sectors read * 512.
    pub read_bytes: u64,
    /// Sectors written * 512.
    pub write_bytes: u64,
    /// Milliseconds spent reading.
    pub read_time: u64,
    /// Milliseconds spent writing.
    pub write_time: u64,
    /// Milliseconds spent doing I/O.
    pub io_time: u64,
    /// Weighted milliseconds spent doing I/O.
    pub weighted_io_time: u64,
    /// I/Os currently in progress.
    pub iops_in_progress: u64,
    /// Reads merged.
    pub merged_reads: u64,
    /// Writes merged.
    pub merged_writes: u64,
    /// Milliseconds per completed I/O over the interval since the previous sample.
    pub io_await: Option<f64>,
    /// Milliseconds busy per completed I/O over that interval.
    pub io_svctm: Option<f64>,
    /// Percent of that interval the device was busy.
    pub io_util: Option<f64>,
}

/// Telegraf `disk`, one mounted filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disk {
    /// Mount point.
    pub path: String,
    /// Device, without `/dev/`.
    pub device: String,
    /// Filesystem type.
    pub fstype: String,
    /// f_blocks * f_frsize
    pub total: u64,
    /// f_bavail * f_frsize (available to unprivileged users, as Telegraf)
    pub free: u64,
    /// (f_blocks - f_bfree) * f_frsize
    pub used: u64,
    /// f_files
    pub inodes_total: u64,
    /// f_ffree
    pub inodes_free: u64,
    /// f_files - f_ffree
    pub inodes_used: u64,
    /// `rw`, `ro` or `unknown`, from the mount options (Telegraf's `mode` tag).
    pub mode: String,
}

/// Telegraf `temp`, one thermal zone.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Temp {
    /// The zone's `type`, e.g. cpu-thermal.
    pub sensor: String,
    /// Degrees Celsius.
    pub temp: f64,
}

/// Telegraf `processes`: tasks by their state letter in `/proc/[pid]/stat` (proc(5)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Processes {
    /// `D`, uninterruptible (disk) sleep.
    pub blocked: u32,
    /// `R`.
    pub running: u32,
    /// `S`.
    pub sleeping: u32,
    /// `T` and `t` (stopped, tracing stop).
    pub stopped: u32,
    /// `Z`.
    pub zombies: u32,
    /// `X`.
    pub dead: u32,
    /// `I`, idle kernel threads (Linux 4.14+).
    pub idle: u32,
    /// `W`, paging (kernels before 2.6).
    pub paging: u32,
    /// `P`, parked.
    pub parked: u32,
    /// Any other state letter.
    pub unknown: u32,
    /// Every process read.
    pub total: u32,
    /// The sum of their `num_threads`.
    pub total_threads: u64,
}

/// The agent's own health (measurement `autofact`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Health {
    /// Batches in the disk buffer, not yet acknowledged.
    pub buffered_batches: u64,
    /// Bytes of those batches.
    pub buffered_bytes: u64,
    /// Batches dropped (buffer cap) since the agent started.
    pub dropped_batches: u64,
    /// Reconnects since the agent started.
    pub reconnects: u64,
    /// Microseconds the last collection round took.
    pub collect_us: u64,
    /// Malformed files met since the agent started.
    pub parse_errors: u64,
    /// Where unacknowledged snapshots are kept right now.
    pub buffer_state: BufferState,
    /// Batches held in memory while the disk refuses writes.
    pub memory_batches: u64,
    /// Batches the factory refused for good, kept in the agent's dead-letter file.
    pub dead_letter_batches: u64,
    /// Snapshots dropped because the memory queue was full (disk refusing writes).
    pub dropped_snapshots: u64,
    /// The agent's version; empty from agents before release 0.2.
    pub agent_version: String,
}
