//! Shared fixtures for the fbs integration tests: fully populated messages and a PRNG.
#![allow(dead_code)] // each test binary uses a different subset

use autofact_fbs::*;

/// Every field non-default and distinct, so a swapped or dropped field shows up.
pub fn full_hello() -> Hello {
    Hello {
        protocol_version: PROTOCOL_VERSION,
        client_id: "0123456789abcdef0123456789abcdef".into(),
        secret: "s3cret".into(),
        token: "enroll-me".into(),
        hostname: "pi-kitchen".into(),
        region: "eu-west".into(),
        zone: "rack 2".into(),
        arch: "aarch64".into(),
        kernel: "6.6.31+rpt-rpi-v8".into(),
        os: "Debian GNU/Linux 12 (bookworm)".into(),
        cpu_model: "Raspberry Pi 4 Model B Rev 1.4".into(),
        mem_total: 8_000_000_000,
        agent_version: "0.1.0".into(),
        boot_time: 1_700_000_000,
        agent_clock_ns: -1_700_000_000_123_456_789,
        installation: "9f8e7d6c5b4a39281706f5e4d3c2b1a0".into(),
        epoch: 0xfeed_beef_dead_c0de,
        boot_id: "2f0b8f9e-6c1d-4e55-9a7b-0c3d2e1f4a5b".into(),
        agent_boottime_ns: 12_345_678_901,
        clock_sync: ClockSync::Unsynced,
        config_hash: 0x1234_5678_9abc_def0,
        config_status: ConfigStatus::Failed,
        config_error: "period 0 for every kind".into(),
        buffer_state: BufferState::ReadOnly,
    }
}

pub fn full_config() -> Config {
    Config {
        periods: Periods {
            cpu_ms: 1,
            kernel_ms: 2,
            mem_ms: 3,
            swap_ms: 4,
            system_ms: 5,
            net_ms: 6,
            diskio_ms: 7,
            disk_ms: 8,
            temp_ms: 9,
            health_ms: 10,
            processes_ms: 14,
        },
        push_interval_ms: 11,
        ping_interval_ms: 12,
        buffer_cap_bytes: u64::MAX,
        give_up_secs: u32::MAX,
        max_message_bytes: 13,
    }
}

pub fn full_cpu(name: &str, base: f64) -> Cpu {
    Cpu {
        name: name.into(),
        user: base + 0.1,
        system: base + 0.2,
        idle: base + 0.3,
        nice: base + 0.4,
        iowait: base + 0.5,
        irq: base + 0.6,
        softirq: base + 0.7,
        steal: base + 0.8,
        guest: base + 0.9,
        guest_nice: base + 1.1,
    }
}

/// A snapshot with every fact kind, several entries in each list, every field set.
pub fn full_snapshot(i: u64) -> Snapshot {
    let b = i * 1000;
    Snapshot {
        time_ns: 1_700_000_000_000_000_000 + i as i64,
        cpu: vec![
            full_cpu("cpu-total", i as f64),
            full_cpu("cpu0", 10.0 + i as f64),
            full_cpu("cpu1", 20.0 + i as f64),
        ],
        kernel: Some(Kernel {
            boot_time: b + 1,
            context_switches: b + 2,
            interrupts: b + 3,
            processes_forked: u64::MAX - i,
            entropy_avail: Some(256 + i),
        }),
        mem: Some(Mem {
            total: b + 11,
            available: b + 12,
            used: b + 13,
            free: b + 14,
            cached: b + 15,
            buffered: b + 16,
            active: b + 17,
            inactive: b + 18,
            slab: b + 19,
            shared: b + 20,
            commit_limit: b + 101,
            committed_as: b + 102,
            dirty: b + 103,
            high_free: b + 104,
            high_total: b + 105,
            huge_pages_free: b + 106,
            huge_page_size: b + 107,
            huge_pages_total: b + 108,
            low_free: b + 109,
            low_total: b + 110,
            mapped: b + 111,
            page_tables: b + 112,
            sreclaimable: b + 113,
            sunreclaim: b + 114,
            swap_cached: b + 115,
            swap_free: b + 116,
            swap_total: b + 117,
            vmalloc_chunk: b + 118,
            vmalloc_total: b + 119,
            vmalloc_used: b + 120,
            write_back: b + 121,
            write_back_tmp: b + 122,
        }),
        swap: Some(Swap {
            total: b + 21,
            used: b + 22,
            free: b + 23,
            sin: Some(b + 24),
            sout: Some(0),
        }),
        system: Some(System {
            load1: 0.25 + i as f64,
            load5: 1.5,
            load15: 1e-300,
            n_cpus: 4,
            uptime: b + 31,
            n_users: Some(3),
            n_unique_users: Some(0),
        }),
        net: vec![
            Net {
                interface: "eth0".into(),
                bytes_sent: b + 41,
                bytes_recv: b + 42,
                packets_sent: b + 43,
                packets_recv: b + 44,
                err_in: b + 45,
                err_out: b + 46,
                drop_in: b + 47,
                drop_out: b + 48,
            },
            Net {
                interface: "wlan 0,=x".into(),
                bytes_sent: 1,
                bytes_recv: 2,
                packets_sent: 3,
                packets_recv: 4,
                err_in: 5,
                err_out: 6,
                drop_in: 7,
                drop_out: 8,
            },
        ],
        diskio: vec![
            DiskIo {
                name: "mmcblk0".into(),
                reads: b + 51,
                writes: b + 52,
                read_bytes: b + 53,
                write_bytes: b + 54,
                read_time: b + 55,
                write_time: b + 56,
                io_time: b + 57,
                weighted_io_time: b + 58,
                iops_in_progress: b + 59,
                merged_reads: b + 60,
                merged_writes: b + 61,
                io_await: Some(1.25),
                io_svctm: Some(0.0),
                io_util: Some(99.5),
            },
            DiskIo {
                name: "sda".into(),
                reads: 9,
                writes: 8,
                read_bytes: 7,
                write_bytes: 6,
                read_time: 5,
                write_time: 4,
                io_time: 3,
                weighted_io_time: 2,
                iops_in_progress: 1,
                merged_reads: 10,
                merged_writes: 11,
                ..DiskIo::default()
            },
        ],
        disk: vec![
            Disk {
                path: "/".into(),
                device: "mmcblk0p2".into(),
                fstype: "ext4".into(),
                total: b + 71,
                free: b + 72,
                used: b + 73,
                inodes_total: b + 74,
                inodes_free: b + 75,
                inodes_used: b + 76,
                mode: "rw".into(),
            },
            Disk {
                path: "/boot/firmware".into(),
                device: "mmcblk0p1".into(),
                fstype: "vfat".into(),
                total: 1,
                free: 2,
                used: 3,
                inodes_total: 4,
                inodes_free: 5,
                inodes_used: 6,
                mode: "ro".into(),
            },
        ],
        temp: vec![
            Temp {
                sensor: "cpu-thermal".into(),
                temp: 47.234,
            },
            Temp {
                sensor: "gpu-thermal".into(),
                temp: -3.5,
            },
        ],
        health: Some(Health {
            buffered_batches: b + 81,
            buffered_bytes: b + 82,
            dropped_batches: b + 83,
            reconnects: b + 84,
            collect_us: b + 85,
            parse_errors: b + 86,
            buffer_state: BufferState::DiskFull,
            memory_batches: 17,
            dead_letter_batches: 18,
            dropped_snapshots: 19,
            agent_version: "0.2.0".into(),
        }),
        boottime_ns: 1_000_000_000 + i as i64,
        clock_sync: ClockSync::Synced,
        boot_id: "2f0b8f9e-6c1d-4e55-9a7b-0c3d2e1f4a5b".into(),
        processes: Some(Processes {
            blocked: 1,
            running: 2,
            sleeping: 3 + i as u32,
            stopped: 4,
            zombies: 5,
            dead: 6,
            idle: 7,
            paging: 8,
            parked: 9,
            unknown: 10,
            total: 55,
            total_threads: b + 91,
        }),
    }
}

pub fn full_batch() -> Batch {
    Batch {
        seq: u64::MAX - 7,
        snapshots: (0..4).map(full_snapshot).collect(),
        epoch: 0x0bad_cafe_f00d_1234,
        agent_clock_ns: 1_700_000_001_000_000_000,
        agent_boottime_ns: 99_000_000_000,
        config_hash: 77,
        config_status: ConfigStatus::Applied,
        buffer_state: BufferState::DiskFailed,
    }
}

/// One fully populated instance of every message type.
pub fn all_full_messages() -> Vec<Message> {
    vec![
        Message::Hello(full_hello()),
        Message::Welcome(Welcome {
            client_id: "fedcba9876543210fedcba9876543210".into(),
            secret: "new-secret".into(),
            welcome_back: true,
            config: full_config(),
        }),
        Message::Config(full_config()),
        Message::Batch(full_batch()),
        Message::Ack(Ack {
            seq: u64::MAX,
            epoch: 3,
        }),
        Message::Reject(Reject {
            code: RejectCode::ShuttingDown,
            message: "factory stopping \"now\"".into(),
        }),
    ]
}

/// xorshift64*: deterministic, no dependency; good enough to scatter bit flips.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..n` for tests; `n` must be > 0.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Every fact kind once: as thorough as `full_batch` per byte, a quarter of its size, so
/// exhaustive bit-flip runs stay quick in debug builds.
pub fn compact_batch() -> Batch {
    let mut s = full_snapshot(1);
    s.cpu.truncate(1);
    s.net.truncate(1);
    s.diskio.truncate(1);
    s.disk.truncate(1);
    s.temp.truncate(1);
    Batch {
        seq: 77,
        snapshots: vec![s],
        ..Batch::default()
    }
}

/// `all_full_messages` with the compact batch.
pub fn all_compact_messages() -> Vec<Message> {
    all_full_messages()
        .into_iter()
        .map(|m| match m {
            Message::Batch(_) => Message::Batch(compact_batch()),
            other => other,
        })
        .collect()
}
