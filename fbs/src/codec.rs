//! Model <-> flatbuffers: the only module that touches generated types.
//!
//! Encoding builds one `Envelope` whose union payload is the message. Decoding goes only through
//! the verifying API with explicit [`Limits`]: bytes come from the network, so a hostile or
//! corrupt buffer must give a [`DecodeError`], never a panic or an out-of-bounds read.
//!
//! Empty strings and empty fact lists are not written at all (a flatbuffers field left out reads
//! back as its default), which keeps batches small; decoding maps a missing string to `""`, a
//! missing list to an empty `Vec` and a missing optional fact table to `None`.
use crate::generated as fb;
use crate::model::{
    Ack, Batch, BufferState, ClockSync, Config, ConfigStatus, Cpu, Disk, DiskIo, Health, Hello,
    Kernel, Mem, Message, Net, Periods, Processes, Reject, RejectCode, Snapshot, Swap, System,
    Temp, Welcome,
};
use flatbuffers::{FlatBufferBuilder, InvalidFlatbuffer, VerifierOptions, WIPOffset};
use std::fmt;

/// Verifier limits for [`decode_with`]. They bound the work and memory one message can cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted buffer, in bytes; checked before any verification.
    pub max_bytes: usize,
    /// Deepest table nesting. Our schema nests tables 4 deep at most (Envelope, Batch,
    /// Snapshot, fact); the default leaves room for schema growth.
    pub max_depth: usize,
    /// Most tables in one buffer.
    pub max_tables: usize,
    /// Largest size of the buffer with every shared object counted each time it is referenced;
    /// defends against small buffers whose offsets point many times at the same large object.
    pub max_apparent_size: usize,
}

impl Default for Limits {
    /// 16 MiB, depth 16, a million tables, 64 MiB apparent size: far above a real batch (a few
    /// KiB for 10 snapshots of a 4-core node), far below what would hurt the factory.
    fn default() -> Limits {
        Limits {
            max_bytes: 16 * 1024 * 1024,
            max_depth: 16,
            max_tables: 1_000_000,
            max_apparent_size: 64 * 1024 * 1024,
        }
    }
}

/// Why bytes could not be decoded into a [`Message`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The buffer is larger than [`Limits::max_bytes`].
    TooLarge {
        /// Length of the buffer.
        len: usize,
        /// The limit it exceeded.
        max: usize,
    },
    /// Flatbuffers verification failed (bad offsets, bad UTF-8, a limit reached, ...).
    Invalid(InvalidFlatbuffer),
    /// The envelope carries no payload.
    MissingPayload,
    /// The envelope's payload type is not one this build knows (a newer peer?).
    UnknownPayload(u8),
    /// A Reject carries a code this build does not know.
    UnknownRejectCode(u8),
    /// A field this build needs is absent, e.g. `Welcome.config`.
    MissingField(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds the limit of {max} bytes")
            }
            DecodeError::Invalid(e) => {
                // flatbuffers' own text spans several lines (an error trace); a log line
                // should stay one line, so newlines become "; " as it is written.
                f.write_str("flatbuffers verification failed: ")?;
                let mut one_line = OneLine {
                    out: f,
                    pending: false,
                };
                fmt::Write::write_fmt(&mut one_line, format_args!("{e}"))
            }
            DecodeError::MissingPayload => f.write_str("envelope has no payload"),
            DecodeError::UnknownPayload(t) => write!(f, "unknown payload type {t}"),
            DecodeError::UnknownRejectCode(c) => write!(f, "unknown reject code {c}"),
            DecodeError::MissingField(name) => write!(f, "missing required field {name}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Writes through to a formatter with runs of newlines replaced by "; " (none at the end).
struct OneLine<'a, 'b> {
    out: &'a mut fmt::Formatter<'b>,
    pending: bool,
}

impl fmt::Write for OneLine<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for (i, part) in s.split('\n').enumerate() {
            if i > 0 {
                self.pending = true;
            }
            let part = part.trim_end_matches('\r');
            if part.is_empty() {
                continue;
            }
            if self.pending {
                self.out.write_str("; ")?;
                self.pending = false;
            }
            self.out.write_str(part)?;
        }
        Ok(())
    }
}

/// The message's name ("Hello", "Batch", ...), for logs and metrics.
pub fn message_kind(msg: &Message) -> &'static str {
    match msg {
        Message::Hello(_) => "Hello",
        Message::Welcome(_) => "Welcome",
        Message::Config(_) => "Config",
        Message::Batch(_) => "Batch",
        Message::Ack(_) => "Ack",
        Message::Reject(_) => "Reject",
    }
}

// ------------------------------------------------------------------------------------ encode

/// Encodes one message as an envelope, in a fresh buffer.
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(initial_capacity(msg));
    encode_into(&mut fbb, msg).to_vec()
}

/// Encodes one message into a reusable builder (reset first) and returns the finished bytes,
/// which stay valid until the builder is used again. Reusing one builder avoids growing a new
/// buffer for every batch.
pub fn encode_into<'b>(fbb: &'b mut FlatBufferBuilder<'_>, msg: &Message) -> &'b [u8] {
    fbb.reset();
    let (payload_type, payload) = match msg {
        Message::Hello(h) => (fb::Payload::Hello, hello(fbb, h).as_union_value()),
        Message::Welcome(w) => (fb::Payload::Welcome, welcome(fbb, w).as_union_value()),
        Message::Config(c) => (fb::Payload::Config, config(fbb, c).as_union_value()),
        Message::Batch(b) => (fb::Payload::Batch, batch(fbb, b).as_union_value()),
        Message::Ack(a) => {
            let ack = fb::Ack::create(
                fbb,
                &fb::AckArgs {
                    seq: a.seq,
                    epoch: a.epoch,
                },
            );
            (fb::Payload::Ack, ack.as_union_value())
        }
        Message::Reject(r) => (fb::Payload::Reject, reject(fbb, r).as_union_value()),
    };
    let env = fb::Envelope::create(
        fbb,
        &fb::EnvelopeArgs {
            payload_type,
            payload: Some(payload),
        },
    );
    fbb.finish_minimal(env);
    fbb.finished_data()
}

/// A guess at the encoded size, so `encode` rarely regrows its buffer.
fn initial_capacity(msg: &Message) -> usize {
    match msg {
        Message::Batch(b) => 256 + b.snapshots.len() * 1024,
        _ => 256,
    }
}

/// Writes a string, or nothing for an empty one (reads back as ""). Strings are shared: a
/// batch repeats the same interface, device and cpu names in every snapshot, and writing each
/// once makes a 10-snapshot batch about 15% smaller.
fn opt_str<'a>(fbb: &mut FlatBufferBuilder<'a>, s: &str) -> Option<WIPOffset<&'a str>> {
    if s.is_empty() {
        None
    } else {
        Some(fbb.create_shared_string(s))
    }
}

fn hello<'a>(fbb: &mut FlatBufferBuilder<'a>, h: &Hello) -> WIPOffset<fb::Hello<'a>> {
    let args = fb::HelloArgs {
        protocol_version: h.protocol_version,
        client_id: opt_str(fbb, &h.client_id),
        secret: opt_str(fbb, &h.secret),
        token: opt_str(fbb, &h.token),
        hostname: opt_str(fbb, &h.hostname),
        region: opt_str(fbb, &h.region),
        zone: opt_str(fbb, &h.zone),
        arch: opt_str(fbb, &h.arch),
        kernel: opt_str(fbb, &h.kernel),
        os: opt_str(fbb, &h.os),
        cpu_model: opt_str(fbb, &h.cpu_model),
        mem_total: h.mem_total,
        agent_version: opt_str(fbb, &h.agent_version),
        boot_time: h.boot_time,
        agent_clock_ns: h.agent_clock_ns,
        installation: opt_str(fbb, &h.installation),
        epoch: h.epoch,
        boot_id: opt_str(fbb, &h.boot_id),
        agent_boottime_ns: h.agent_boottime_ns,
        clock_sync: clock_sync_to_fb(h.clock_sync),
        config_hash: h.config_hash,
        config_status: config_status_to_fb(h.config_status),
        config_error: opt_str(fbb, &h.config_error),
        buffer_state: buffer_state_to_fb(h.buffer_state),
    };
    fb::Hello::create(fbb, &args)
}

fn config<'a>(fbb: &mut FlatBufferBuilder<'a>, c: &Config) -> WIPOffset<fb::Config<'a>> {
    let p = &c.periods;
    let periods = fb::Periods::create(
        fbb,
        &fb::PeriodsArgs {
            cpu_ms: p.cpu_ms,
            kernel_ms: p.kernel_ms,
            mem_ms: p.mem_ms,
            swap_ms: p.swap_ms,
            system_ms: p.system_ms,
            net_ms: p.net_ms,
            diskio_ms: p.diskio_ms,
            disk_ms: p.disk_ms,
            temp_ms: p.temp_ms,
            health_ms: p.health_ms,
            processes_ms: p.processes_ms,
        },
    );
    fb::Config::create(
        fbb,
        &fb::ConfigArgs {
            periods: Some(periods),
            push_interval_ms: c.push_interval_ms,
            ping_interval_ms: c.ping_interval_ms,
            buffer_cap_bytes: c.buffer_cap_bytes,
            give_up_secs: c.give_up_secs,
            max_message_bytes: c.max_message_bytes,
        },
    )
}

fn welcome<'a>(fbb: &mut FlatBufferBuilder<'a>, w: &Welcome) -> WIPOffset<fb::Welcome<'a>> {
    let args = fb::WelcomeArgs {
        client_id: opt_str(fbb, &w.client_id),
        secret: opt_str(fbb, &w.secret),
        welcome_back: w.welcome_back,
        config: Some(config(fbb, &w.config)),
    };
    fb::Welcome::create(fbb, &args)
}

fn reject<'a>(fbb: &mut FlatBufferBuilder<'a>, r: &Reject) -> WIPOffset<fb::Reject<'a>> {
    let args = fb::RejectArgs {
        code: reject_code_to_fb(r.code),
        message: opt_str(fbb, &r.message),
    };
    fb::Reject::create(fbb, &args)
}

fn reject_code_to_fb(code: RejectCode) -> fb::RejectCode {
    match code {
        RejectCode::Malformed => fb::RejectCode::Malformed,
        RejectCode::BadToken => fb::RejectCode::BadToken,
        RejectCode::UnknownClient => fb::RejectCode::UnknownClient,
        RejectCode::BadSecret => fb::RejectCode::BadSecret,
        RejectCode::UnsupportedVersion => fb::RejectCode::UnsupportedVersion,
        RejectCode::TooLarge => fb::RejectCode::TooLarge,
        RejectCode::Busy => fb::RejectCode::Busy,
        RejectCode::Replaced => fb::RejectCode::Replaced,
        RejectCode::ShuttingDown => fb::RejectCode::ShuttingDown,
        RejectCode::TlsRequired => fb::RejectCode::TlsRequired,
    }
}

fn reject_code_from_fb(code: fb::RejectCode) -> Result<RejectCode, DecodeError> {
    Ok(match code {
        fb::RejectCode::Malformed => RejectCode::Malformed,
        fb::RejectCode::BadToken => RejectCode::BadToken,
        fb::RejectCode::UnknownClient => RejectCode::UnknownClient,
        fb::RejectCode::BadSecret => RejectCode::BadSecret,
        fb::RejectCode::UnsupportedVersion => RejectCode::UnsupportedVersion,
        fb::RejectCode::TooLarge => RejectCode::TooLarge,
        fb::RejectCode::Busy => RejectCode::Busy,
        fb::RejectCode::Replaced => RejectCode::Replaced,
        fb::RejectCode::ShuttingDown => RejectCode::ShuttingDown,
        fb::RejectCode::TlsRequired => RejectCode::TlsRequired,
        other => return Err(DecodeError::UnknownRejectCode(other.0)),
    })
}

fn clock_sync_to_fb(c: ClockSync) -> fb::ClockSync {
    match c {
        ClockSync::Unknown => fb::ClockSync::Unknown,
        ClockSync::Synced => fb::ClockSync::Synced,
        ClockSync::Unsynced => fb::ClockSync::Unsynced,
    }
}

/// A value a newer peer may add reads as Unknown: the clock state is advisory.
fn clock_sync_from_fb(c: fb::ClockSync) -> ClockSync {
    match c {
        fb::ClockSync::Synced => ClockSync::Synced,
        fb::ClockSync::Unsynced => ClockSync::Unsynced,
        _ => ClockSync::Unknown,
    }
}

fn config_status_to_fb(c: ConfigStatus) -> fb::ConfigStatus {
    match c {
        ConfigStatus::Unknown => fb::ConfigStatus::Unknown,
        ConfigStatus::Applied => fb::ConfigStatus::Applied,
        ConfigStatus::Failed => fb::ConfigStatus::Failed,
    }
}

/// A value a newer peer may add reads as Unknown.
fn config_status_from_fb(c: fb::ConfigStatus) -> ConfigStatus {
    match c {
        fb::ConfigStatus::Applied => ConfigStatus::Applied,
        fb::ConfigStatus::Failed => ConfigStatus::Failed,
        _ => ConfigStatus::Unknown,
    }
}

fn buffer_state_to_fb(b: BufferState) -> fb::BufferState {
    match b {
        BufferState::Disk => fb::BufferState::Disk,
        BufferState::DiskFull => fb::BufferState::DiskFull,
        BufferState::ReadOnly => fb::BufferState::ReadOnly,
        BufferState::DiskFailed => fb::BufferState::DiskFailed,
    }
}

/// A state a newer peer may add reads as DiskFailed: degraded, which is the safe reading.
fn buffer_state_from_fb(b: fb::BufferState) -> BufferState {
    match b {
        fb::BufferState::Disk => BufferState::Disk,
        fb::BufferState::DiskFull => BufferState::DiskFull,
        fb::BufferState::ReadOnly => BufferState::ReadOnly,
        _ => BufferState::DiskFailed,
    }
}

fn batch<'a>(fbb: &mut FlatBufferBuilder<'a>, b: &Batch) -> WIPOffset<fb::Batch<'a>> {
    let snaps: Vec<_> = b.snapshots.iter().map(|s| snapshot(fbb, s)).collect();
    let snapshots = if snaps.is_empty() {
        None
    } else {
        Some(fbb.create_vector(&snaps))
    };
    fb::Batch::create(
        fbb,
        &fb::BatchArgs {
            seq: b.seq,
            snapshots,
            epoch: b.epoch,
            agent_clock_ns: b.agent_clock_ns,
            agent_boottime_ns: b.agent_boottime_ns,
            config_hash: b.config_hash,
            config_status: config_status_to_fb(b.config_status),
            buffer_state: buffer_state_to_fb(b.buffer_state),
        },
    )
}

/// Builds each item's table, then the vector of their offsets; nothing for an empty list.
fn table_vec<'a, T, F, U>(
    fbb: &mut FlatBufferBuilder<'a>,
    items: &[T],
    mut one: F,
) -> Option<WIPOffset<flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<U>>>>
where
    F: FnMut(&mut FlatBufferBuilder<'a>, &T) -> WIPOffset<U>,
{
    if items.is_empty() {
        return None;
    }
    let offsets: Vec<WIPOffset<U>> = items.iter().map(|item| one(fbb, item)).collect();
    Some(fbb.create_vector(&offsets))
}

fn snapshot<'a>(fbb: &mut FlatBufferBuilder<'a>, s: &Snapshot) -> WIPOffset<fb::Snapshot<'a>> {
    let cpu = table_vec(fbb, &s.cpu, |fbb, c: &Cpu| {
        let args = fb::CpuArgs {
            name: opt_str(fbb, &c.name),
            user: c.user,
            system: c.system,
            idle: c.idle,
            nice: c.nice,
            iowait: c.iowait,
            irq: c.irq,
            softirq: c.softirq,
            steal: c.steal,
            guest: c.guest,
            guest_nice: c.guest_nice,
        };
        fb::Cpu::create(fbb, &args)
    });
    let kernel = s.kernel.map(|k| {
        fb::Kernel::create(
            fbb,
            &fb::KernelArgs {
                boot_time: k.boot_time,
                context_switches: k.context_switches,
                interrupts: k.interrupts,
                processes_forked: k.processes_forked,
                entropy_avail: k.entropy_avail,
            },
        )
    });
    let mem = s.mem.map(|m| {
        fb::Mem::create(
            fbb,
            &fb::MemArgs {
                total: m.total,
                available: m.available,
                used: m.used,
                free: m.free,
                cached: m.cached,
                buffered: m.buffered,
                active: m.active,
                inactive: m.inactive,
                slab: m.slab,
                shared: m.shared,
                commit_limit: m.commit_limit,
                committed_as: m.committed_as,
                dirty: m.dirty,
                high_free: m.high_free,
                high_total: m.high_total,
                huge_pages_free: m.huge_pages_free,
                huge_page_size: m.huge_page_size,
                huge_pages_total: m.huge_pages_total,
                low_free: m.low_free,
                low_total: m.low_total,
                mapped: m.mapped,
                page_tables: m.page_tables,
                sreclaimable: m.sreclaimable,
                sunreclaim: m.sunreclaim,
                swap_cached: m.swap_cached,
                swap_free: m.swap_free,
                swap_total: m.swap_total,
                vmalloc_chunk: m.vmalloc_chunk,
                vmalloc_total: m.vmalloc_total,
                vmalloc_used: m.vmalloc_used,
                write_back: m.write_back,
                write_back_tmp: m.write_back_tmp,
            },
        )
    });
    let swap = s.swap.map(|w| {
        fb::Swap::create(
            fbb,
            &fb::SwapArgs {
                total: w.total,
                used: w.used,
                free: w.free,
                in_: w.sin,
                out: w.sout,
            },
        )
    });
    let system = s.system.map(|y| {
        fb::System::create(
            fbb,
            &fb::SystemArgs {
                load1: y.load1,
                load5: y.load5,
                load15: y.load15,
                n_cpus: y.n_cpus,
                uptime: y.uptime,
                n_users: y.n_users,
                n_unique_users: y.n_unique_users,
            },
        )
    });
    let net = table_vec(fbb, &s.net, |fbb, n: &Net| {
        let args = fb::NetArgs {
            interface: opt_str(fbb, &n.interface),
            bytes_sent: n.bytes_sent,
            bytes_recv: n.bytes_recv,
            packets_sent: n.packets_sent,
            packets_recv: n.packets_recv,
            err_in: n.err_in,
            err_out: n.err_out,
            drop_in: n.drop_in,
            drop_out: n.drop_out,
        };
        fb::Net::create(fbb, &args)
    });
    let diskio = table_vec(fbb, &s.diskio, |fbb, d: &DiskIo| {
        let args = fb::DiskIoArgs {
            name: opt_str(fbb, &d.name),
            reads: d.reads,
            writes: d.writes,
            read_bytes: d.read_bytes,
            write_bytes: d.write_bytes,
            read_time: d.read_time,
            write_time: d.write_time,
            io_time: d.io_time,
            weighted_io_time: d.weighted_io_time,
            iops_in_progress: d.iops_in_progress,
            merged_reads: d.merged_reads,
            merged_writes: d.merged_writes,
            io_await: d.io_await,
            io_svctm: d.io_svctm,
            io_util: d.io_util,
        };
        fb::DiskIo::create(fbb, &args)
    });
    let disk = table_vec(fbb, &s.disk, |fbb, d: &Disk| {
        let args = fb::DiskArgs {
            path: opt_str(fbb, &d.path),
            device: opt_str(fbb, &d.device),
            fstype: opt_str(fbb, &d.fstype),
            total: d.total,
            free: d.free,
            used: d.used,
            inodes_total: d.inodes_total,
            inodes_free: d.inodes_free,
            inodes_used: d.inodes_used,
            mode: opt_str(fbb, &d.mode),
        };
        fb::Disk::create(fbb, &args)
    });
    let temp = table_vec(fbb, &s.temp, |fbb, t: &Temp| {
        let args = fb::TempArgs {
            sensor: opt_str(fbb, &t.sensor),
            temp: t.temp,
        };
        fb::Temp::create(fbb, &args)
    });
    let health = s.health.as_ref().map(|h| {
        let agent_version = opt_str(fbb, &h.agent_version);
        fb::Health::create(
            fbb,
            &fb::HealthArgs {
                buffered_batches: h.buffered_batches,
                buffered_bytes: h.buffered_bytes,
                dropped_batches: h.dropped_batches,
                reconnects: h.reconnects,
                collect_us: h.collect_us,
                parse_errors: h.parse_errors,
                buffer_state: buffer_state_to_fb(h.buffer_state),
                memory_batches: h.memory_batches,
                dead_letter_batches: h.dead_letter_batches,
                dropped_snapshots: h.dropped_snapshots,
                agent_version,
            },
        )
    });
    let processes = s.processes.map(|p| {
        fb::Processes::create(
            fbb,
            &fb::ProcessesArgs {
                blocked: p.blocked,
                running: p.running,
                sleeping: p.sleeping,
                stopped: p.stopped,
                zombies: p.zombies,
                dead: p.dead,
                idle: p.idle,
                paging: p.paging,
                parked: p.parked,
                unknown: p.unknown,
                total: p.total,
                total_threads: p.total_threads,
            },
        )
    });
    let boot_id = opt_str(fbb, &s.boot_id);
    fb::Snapshot::create(
        fbb,
        &fb::SnapshotArgs {
            time_ns: s.time_ns,
            cpu,
            kernel,
            mem,
            swap,
            system,
            net,
            diskio,
            disk,
            temp,
            health,
            boottime_ns: s.boottime_ns,
            clock_sync: clock_sync_to_fb(s.clock_sync),
            boot_id,
            processes,
        },
    )
}

// ------------------------------------------------------------------------------------ decode

/// Decodes and verifies one envelope with the default [`Limits`].
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    decode_with(bytes, &Limits::default())
}

/// Decodes and verifies one envelope with the given limits.
pub fn decode_with(bytes: &[u8], limits: &Limits) -> Result<Message, DecodeError> {
    if bytes.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: limits.max_bytes,
        });
    }
    let opts = VerifierOptions {
        max_depth: limits.max_depth,
        max_tables: limits.max_tables,
        max_apparent_size: limits.max_apparent_size,
        ignore_missing_null_terminator: false,
    };
    let env = fb::root_as_envelope_with_opts(&opts, bytes).map_err(DecodeError::Invalid)?;
    // After verification the typed accessors below only read what the verifier checked.
    let kind = env.payload_type();
    let missing = || DecodeError::MissingPayload;
    Ok(match kind {
        fb::Payload::NONE => return Err(DecodeError::MissingPayload),
        fb::Payload::Hello => {
            Message::Hello(hello_from(env.payload_as_hello().ok_or_else(missing)?))
        }
        fb::Payload::Welcome => {
            Message::Welcome(welcome_from(env.payload_as_welcome().ok_or_else(missing)?)?)
        }
        fb::Payload::Config => Message::Config(config_from(
            env.payload_as_config().ok_or_else(missing)?,
            "Config.periods",
        )?),
        fb::Payload::Batch => {
            Message::Batch(batch_from(env.payload_as_batch().ok_or_else(missing)?))
        }
        fb::Payload::Ack => {
            let a = env.payload_as_ack().ok_or_else(missing)?;
            Message::Ack(Ack {
                seq: a.seq(),
                epoch: a.epoch(),
            })
        }
        fb::Payload::Reject => {
            let r = env.payload_as_reject().ok_or_else(missing)?;
            Message::Reject(Reject {
                code: reject_code_from_fb(r.code())?,
                message: string(r.message()),
            })
        }
        other => return Err(DecodeError::UnknownPayload(other.0)),
    })
}

/// A missing string reads as "".
fn string(s: Option<&str>) -> String {
    s.unwrap_or_default().to_owned()
}

fn hello_from(h: fb::Hello<'_>) -> Hello {
    Hello {
        protocol_version: h.protocol_version(),
        client_id: string(h.client_id()),
        secret: string(h.secret()),
        token: string(h.token()),
        hostname: string(h.hostname()),
        region: string(h.region()),
        zone: string(h.zone()),
        arch: string(h.arch()),
        kernel: string(h.kernel()),
        os: string(h.os()),
        cpu_model: string(h.cpu_model()),
        mem_total: h.mem_total(),
        agent_version: string(h.agent_version()),
        boot_time: h.boot_time(),
        agent_clock_ns: h.agent_clock_ns(),
        installation: string(h.installation()),
        epoch: h.epoch(),
        boot_id: string(h.boot_id()),
        agent_boottime_ns: h.agent_boottime_ns(),
        clock_sync: clock_sync_from_fb(h.clock_sync()),
        config_hash: h.config_hash(),
        config_status: config_status_from_fb(h.config_status()),
        config_error: string(h.config_error()),
        buffer_state: buffer_state_from_fb(h.buffer_state()),
    }
}

/// `periods_field` names the absent periods table in the error, for the context it was in.
fn config_from(c: fb::Config<'_>, periods_field: &'static str) -> Result<Config, DecodeError> {
    // Periods all zero would silently disable every collector, so a missing table is an error
    // rather than a default.
    let p = c
        .periods()
        .ok_or(DecodeError::MissingField(periods_field))?;
    Ok(Config {
        periods: Periods {
            cpu_ms: p.cpu_ms(),
            kernel_ms: p.kernel_ms(),
            mem_ms: p.mem_ms(),
            swap_ms: p.swap_ms(),
            system_ms: p.system_ms(),
            net_ms: p.net_ms(),
            diskio_ms: p.diskio_ms(),
            disk_ms: p.disk_ms(),
            temp_ms: p.temp_ms(),
            health_ms: p.health_ms(),
            processes_ms: p.processes_ms(),
        },
        push_interval_ms: c.push_interval_ms(),
        ping_interval_ms: c.ping_interval_ms(),
        buffer_cap_bytes: c.buffer_cap_bytes(),
        give_up_secs: c.give_up_secs(),
        max_message_bytes: c.max_message_bytes(),
    })
}

fn welcome_from(w: fb::Welcome<'_>) -> Result<Welcome, DecodeError> {
    let c = w
        .config()
        .ok_or(DecodeError::MissingField("Welcome.config"))?;
    Ok(Welcome {
        client_id: string(w.client_id()),
        secret: string(w.secret()),
        welcome_back: w.welcome_back(),
        config: config_from(c, "Welcome.config.periods")?,
    })
}

fn batch_from(b: fb::Batch<'_>) -> Batch {
    Batch {
        seq: b.seq(),
        snapshots: b
            .snapshots()
            .map(|v| v.iter().map(snapshot_from).collect())
            .unwrap_or_default(),
        epoch: b.epoch(),
        agent_clock_ns: b.agent_clock_ns(),
        agent_boottime_ns: b.agent_boottime_ns(),
        config_hash: b.config_hash(),
        config_status: config_status_from_fb(b.config_status()),
        buffer_state: buffer_state_from_fb(b.buffer_state()),
    }
}

/// Converts every table of an optional vector; a missing vector is an empty list.
fn list<'a, T, U, F>(
    v: Option<flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<T>>>,
    f: F,
) -> Vec<U>
where
    T: flatbuffers::Follow<'a, Inner = T> + 'a,
    F: FnMut(T) -> U,
{
    v.map(|v| v.iter().map(f).collect()).unwrap_or_default()
}

fn snapshot_from(s: fb::Snapshot<'_>) -> Snapshot {
    Snapshot {
        time_ns: s.time_ns(),
        cpu: list(s.cpu(), |c| Cpu {
            name: string(c.name()),
            user: c.user(),
            system: c.system(),
            idle: c.idle(),
            nice: c.nice(),
            iowait: c.iowait(),
            irq: c.irq(),
            softirq: c.softirq(),
            steal: c.steal(),
            guest: c.guest(),
            guest_nice: c.guest_nice(),
        }),
        kernel: s.kernel().map(|k| Kernel {
            boot_time: k.boot_time(),
            context_switches: k.context_switches(),
            interrupts: k.interrupts(),
            processes_forked: k.processes_forked(),
            entropy_avail: k.entropy_avail(),
        }),
        mem: s.mem().map(|m| Mem {
            total: m.total(),
            available: m.available(),
            used: m.used(),
            free: m.free(),
            cached: m.cached(),
            buffered: m.buffered(),
            active: m.active(),
            inactive: m.inactive(),
            slab: m.slab(),
            shared: m.shared(),
            commit_limit: m.commit_limit(),
            committed_as: m.committed_as(),
            dirty: m.dirty(),
            high_free: m.high_free(),
            high_total: m.high_total(),
            huge_pages_free: m.huge_pages_free(),
            huge_page_size: m.huge_page_size(),
            huge_pages_total: m.huge_pages_total(),
            low_free: m.low_free(),
            low_total: m.low_total(),
            mapped: m.mapped(),
            page_tables: m.page_tables(),
            sreclaimable: m.sreclaimable(),
            sunreclaim: m.sunreclaim(),
            swap_cached: m.swap_cached(),
            swap_free: m.swap_free(),
            swap_total: m.swap_total(),
            vmalloc_chunk: m.vmalloc_chunk(),
            vmalloc_total: m.vmalloc_total(),
            vmalloc_used: m.vmalloc_used(),
            write_back: m.write_back(),
            write_back_tmp: m.write_back_tmp(),
        }),
        swap: s.swap().map(|w| Swap {
            total: w.total(),
            used: w.used(),
            free: w.free(),
            sin: w.in_(),
            sout: w.out(),
        }),
        system: s.system().map(|y| System {
            load1: y.load1(),
            load5: y.load5(),
            load15: y.load15(),
            n_cpus: y.n_cpus(),
            uptime: y.uptime(),
            n_users: y.n_users(),
            n_unique_users: y.n_unique_users(),
        }),
        net: list(s.net(), |n| Net {
            interface: string(n.interface()),
            bytes_sent: n.bytes_sent(),
            bytes_recv: n.bytes_recv(),
            packets_sent: n.packets_sent(),
            packets_recv: n.packets_recv(),
            err_in: n.err_in(),
            err_out: n.err_out(),
            drop_in: n.drop_in(),
            drop_out: n.drop_out(),
        }),
        diskio: list(s.diskio(), |d| DiskIo {
            name: string(d.name()),
            reads: d.reads(),
            writes: d.writes(),
            read_bytes: d.read_bytes(),
            write_bytes: d.write_bytes(),
            read_time: d.read_time(),
            write_time: d.write_time(),
            io_time: d.io_time(),
            weighted_io_time: d.weighted_io_time(),
            iops_in_progress: d.iops_in_progress(),
            merged_reads: d.merged_reads(),
            merged_writes: d.merged_writes(),
            io_await: d.io_await(),
            io_svctm: d.io_svctm(),
            io_util: d.io_util(),
        }),
        disk: list(s.disk(), |d| Disk {
            path: string(d.path()),
            device: string(d.device()),
            fstype: string(d.fstype()),
            total: d.total(),
            free: d.free(),
            used: d.used(),
            inodes_total: d.inodes_total(),
            inodes_free: d.inodes_free(),
            inodes_used: d.inodes_used(),
            mode: string(d.mode()),
        }),
        temp: list(s.temp(), |t| Temp {
            sensor: string(t.sensor()),
            temp: t.temp(),
        }),
        health: s.health().map(|h| Health {
            buffered_batches: h.buffered_batches(),
            buffered_bytes: h.buffered_bytes(),
            dropped_batches: h.dropped_batches(),
            reconnects: h.reconnects(),
            collect_us: h.collect_us(),
            parse_errors: h.parse_errors(),
            buffer_state: buffer_state_from_fb(h.buffer_state()),
            memory_batches: h.memory_batches(),
            dead_letter_batches: h.dead_letter_batches(),
            dropped_snapshots: h.dropped_snapshots(),
            agent_version: string(h.agent_version()),
        }),
        boottime_ns: s.boottime_ns(),
        clock_sync: clock_sync_from_fb(s.clock_sync()),
        boot_id: string(s.boot_id()),
        processes: s.processes().map(|p| Processes {
            blocked: p.blocked(),
            running: p.running(),
            sleeping: p.sleeping(),
            stopped: p.stopped(),
            zombies: p.zombies(),
            dead: p.dead(),
            idle: p.idle(),
            paging: p.paging(),
            parked: p.parked(),
            unknown: p.unknown(),
            total: p.total(),
            total_threads: p.total_threads(),
        }),
    }
}
