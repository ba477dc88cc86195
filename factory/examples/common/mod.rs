//! Shared by the factory's examples: a realistic snapshot of a 4-core Raspberry Pi-like node
//! (19 points), so every benchmark measures the same kind of batch.

use autofact_fbs::model::{
    Cpu, Disk, DiskIo, Health, Kernel, Mem, Net, Snapshot, Swap, System, Temp,
};

/// A Raspberry-Pi-4-like snapshot: 19 points.
pub fn snapshot(t: i64, i: u64) -> Snapshot {
    let cpu = |name: &str| Cpu {
        name: name.into(),
        user: 12.5 + (i % 7) as f64,
        system: 3.25,
        idle: 80.125,
        iowait: 0.5,
        softirq: 0.125,
        ..Cpu::default()
    };
    Snapshot {
        time_ns: t,
        cpu: vec![
            cpu("cpu-total"),
            cpu("cpu0"),
            cpu("cpu1"),
            cpu("cpu2"),
            cpu("cpu3"),
        ],
        kernel: Some(Kernel {
            boot_time: 1_764_000_000,
            context_switches: 123_456_789 + i,
            interrupts: 98_765_432 + i,
            processes_forked: 4321 + i,
            ..Default::default()
        }),
        mem: Some(Mem {
            total: 8_000_000_000,
            available: 4_000_000_000 + i,
            used: 3_000_000_000,
            free: 1_000_000_000,
            cached: 2_000_000_000,
            buffered: 100_000_000,
            active: 2_500_000_000,
            inactive: 1_500_000_000,
            slab: 200_000_000,
            shared: 50_000_000,
            ..Default::default()
        }),
        swap: Some(Swap {
            total: 1_000_000_000,
            used: 10_000,
            free: 999_990_000,
            ..Default::default()
        }),
        system: Some(System {
            load1: 0.52,
            load5: 0.61,
            load15: 0.7,
            n_cpus: 4,
            uptime: 123_456 + i,
            ..Default::default()
        }),
        net: ["eth0", "wlan0", "lo"]
            .iter()
            .map(|n| Net {
                interface: n.to_string(),
                bytes_sent: 1_000_000 + i,
                bytes_recv: 2_000_000 + i,
                packets_sent: 1000 + i,
                packets_recv: 2000 + i,
                ..Net::default()
            })
            .collect(),
        diskio: ["mmcblk0", "mmcblk0p2"]
            .iter()
            .map(|n| DiskIo {
                name: n.to_string(),
                reads: 10_000 + i,
                writes: 20_000 + i,
                read_bytes: 1 << 30,
                write_bytes: 1 << 31,
                io_time: 5000,
                ..DiskIo::default()
            })
            .collect(),
        disk: ["/", "/boot/firmware", "/mnt/usb disk"]
            .iter()
            .map(|p| Disk {
                path: p.to_string(),
                device: "mmcblk0p2".into(),
                fstype: "ext4".into(),
                total: 31_000_000_000,
                free: 20_000_000_000,
                used: 11_000_000_000,
                inodes_total: 1_900_000,
                inodes_free: 1_800_000,
                inodes_used: 100_000,
                ..Default::default()
            })
            .collect(),
        temp: vec![Temp {
            sensor: "cpu-thermal".into(),
            temp: 47.2,
        }],
        health: Some(Health {
            buffered_batches: 1,
            buffered_bytes: 4096,
            collect_us: 900,
            ..Health::default()
        }),
        ..Snapshot::default()
    }
}
