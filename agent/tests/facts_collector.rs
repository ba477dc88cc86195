//! The Collector over fixture trees: every fact of a round with exact values, cpu percentages
//! across two rounds, and the failure rules (missing file: silent skip; malformed file: skipped
//! for the round and counted) from issue 3.

use autofact::facts::{mounts, Collector, Kinds, Procfs, Sysfs};
use autofact_fbs::{Kernel, Mem, Periods, Snapshot, Swap, Temp};
use std::path::{Path, PathBuf};

const KB: u64 = 1024;
const PI: &str = "pi4-aarch64-bookworm-nsynet";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A private copy of a fixture tree, removed on drop, that a test may change.
struct TempTree(PathBuf);

impl TempTree {
    fn copy_of(name: &str, tag: &str) -> std::io::Result<TempTree> {
        let dir = std::env::temp_dir().join(format!(
            "autofact-facts-{}-{tag}-{}",
            std::process::id(),
            name
        ));
        let _ = std::fs::remove_dir_all(&dir);
        copy_dir(&fixture(name), &dir)?;
        Ok(TempTree(dir))
    }

    fn collector(&self) -> Collector {
        Collector::new(
            &Procfs::new(self.0.join("proc")),
            &Sysfs::new(self.0.join("sys")),
        )
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dst = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dst)?;
        } else {
            std::fs::copy(entry.path(), dst)?;
        }
    }
    Ok(())
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn pi_tree_every_fact_of_one_round() -> std::io::Result<()> {
    let tree = TempTree::copy_of(PI, "round")?;
    let mut c = tree.collector();
    let mut snap = Snapshot::default();
    c.collect(Kinds::ALL, 1_700_000_000_000_000_000, &mut snap);

    assert_eq!(snap.time_ns, 1_700_000_000_000_000_000);
    // The first round only samples the cpu times.
    assert!(snap.cpu.is_empty(), "{:?}", snap.cpu);
    assert_eq!(
        snap.kernel,
        Some(Kernel {
            boot_time: 1731310462,
            context_switches: 7845121,
            interrupts: 4312887,
            processes_forked: 6093,
            ..Default::default()
        })
    );
    assert_eq!(
        snap.mem,
        Some(Mem {
            total: 3882988 * KB,
            available: 3412232 * KB,
            used: 289632 * KB,
            free: 1742228 * KB,
            cached: (1717040 + 82364) * KB,
            buffered: 51724 * KB,
            active: 960624 * KB,
            inactive: 945896 * KB,
            slab: 116120 * KB,
            shared: 103648 * KB,
            commit_limit: 2465776 * KB,
            committed_as: 1770196 * KB,
            dirty: 160 * KB,
            mapped: 216852 * KB,
            page_tables: 6504 * KB,
            sreclaimable: 82364 * KB,
            sunreclaim: 33756 * KB,
            swap_free: 524284 * KB,
            swap_total: 524284 * KB,
            vmalloc_total: 257687552 * KB,
            vmalloc_used: 13484 * KB,
            // No High*/Low* (64-bit), no HugePages lines; SwapCached, VmallocChunk, Writeback
            // and WritebackTmp are 0 in the file.
            ..Default::default()
        })
    );
    assert_eq!(
        snap.swap,
        Some(Swap {
            total: 524284 * KB,
            used: 0,
            free: 524284 * KB,
            ..Default::default()
        })
    );
    let sys = snap.system.ok_or(std::io::Error::other("no system fact"))?;
    assert_eq!(
        (sys.load1, sys.load5, sys.load15, sys.n_cpus, sys.uptime),
        (0.74, 2.50, 4.16, 4, 2893)
    );
    let ifaces: Vec<&str> = snap.net.iter().map(|n| n.interface.as_str()).collect();
    assert_eq!(ifaces, ["eth0", "wlan0", "eth1"], "loopback is skipped");
    assert_eq!(snap.net[2].bytes_sent, 99991576856);
    let devs: Vec<&str> = snap.diskio.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(devs.len(), 11);
    assert_eq!(&devs[8..], ["mmcblk0", "mmcblk0p1", "mmcblk0p2"]);
    assert_eq!(snap.diskio[8].read_bytes, 912874 * 512);
    // `/` exists on every machine, `/boot/firmware` not here: statvfs of the latter is skipped,
    // the former reports this machine's sizes under the tree's device name.
    assert_eq!(snap.disk.len(), 1, "{:?}", snap.disk);
    let d = &snap.disk[0];
    assert_eq!(
        (d.path.as_str(), d.device.as_str(), d.fstype.as_str()),
        ("/", "mmcblk0p2", "ext4")
    );
    assert!(d.total > 0 && d.used <= d.total && d.inodes_used <= d.inodes_total);
    assert_eq!(
        snap.temp,
        [Temp {
            sensor: "cpu-thermal".into(),
            temp: 47.686
        }]
    );
    let h = snap.health.ok_or(std::io::Error::other("no health"))?;
    assert_eq!(h.parse_errors, 0);
    assert_eq!(h.collect_us, c.last_collect_us());
    Ok(())
}

#[test]
fn pi_tree_cpu_percentages_over_two_rounds() -> std::io::Result<()> {
    let tree = TempTree::copy_of(PI, "cpu")?;
    let mut c = tree.collector();
    let mut snap = Snapshot::default();
    c.collect(Kinds::CPU, 1, &mut snap);
    assert!(snap.cpu.is_empty());
    // Written in place (same inode), as the kernel's file would change under the open fd.
    std::fs::write(
        tree.path("proc/stat"),
        std::fs::read(tree.path("later/proc/stat"))?,
    )?;
    c.collect(Kinds::CPU, 2, &mut snap);
    let names: Vec<&str> = snap.cpu.iter().map(|c| c.name.as_str()).collect();
    // cpu3's iowait went backwards between the samples while its total moved on: Telegraf
    // still makes its point (issue 13 item 8), with iowait's negative share.
    assert_eq!(names, ["cpu-total", "cpu0", "cpu1", "cpu2", "cpu3"]);
    let t = &snap.cpu[0];
    assert!(close(t.user, 100.0 * 310.0 / 1995.0), "{t:?}");
    assert!(close(t.system, 100.0 * 270.0 / 1995.0));
    assert!(close(t.idle, 100.0 * 1410.0 / 1995.0));
    assert!(close(t.iowait, 100.0 * 5.0 / 1995.0));
    let c0 = &snap.cpu[1];
    assert_eq!(
        (c0.user, c0.system, c0.idle, c0.iowait),
        (10.0, 4.0, 84.0, 2.0)
    );
    assert_eq!(snap.cpu[2].idle, 100.0);
    assert_eq!((snap.cpu[3].user, snap.cpu[3].system), (50.0, 50.0));
    // cpu3: user +10, idle +490, iowait -5: total 495.
    let c3 = &snap.cpu[4];
    assert!(close(c3.user, 100.0 * 10.0 / 495.0), "{c3:?}");
    assert!(close(c3.idle, 100.0 * 490.0 / 495.0), "{c3:?}");
    assert!(close(c3.iowait, 100.0 * -5.0 / 495.0), "{c3:?}");
    assert!(snap.kernel.is_none() && snap.mem.is_none() && snap.net.is_empty());
    // Same sample again: a zero delta gives no point at all, never NaN.
    c.collect(Kinds::CPU, 3, &mut snap);
    assert!(snap.cpu.is_empty(), "{:?}", snap.cpu);
    Ok(())
}

#[test]
fn malformed_file_skips_its_fact_and_is_counted() -> std::io::Result<()> {
    let tree = TempTree::copy_of(PI, "malformed")?;
    std::fs::write(
        tree.path("proc/meminfo"),
        "MemTotal:  3882988 kB\nMemFree: lots\n",
    )?;
    let mut c = tree.collector();
    let mut snap = Snapshot::default();
    c.collect(Kinds::ALL, 1, &mut snap);
    assert_eq!((snap.mem, snap.swap), (None, None));
    assert!(snap.kernel.is_some() && snap.system.is_some() && !snap.net.is_empty());
    assert_eq!(c.parse_errors(), 1);
    assert_eq!(snap.health.as_ref().map(|h| h.parse_errors), Some(1));
    c.collect(Kinds::ALL, 2, &mut snap);
    assert_eq!(c.parse_errors(), 2, "counted every round, logged once");
    // Fixed on disk: the fact comes back.
    std::fs::write(
        tree.path("proc/meminfo"),
        "MemTotal:  100 kB\nMemFree: 40 kB\n",
    )?;
    c.collect(Kinds::MEM, 3, &mut snap);
    assert_eq!(
        snap.mem.map(|m| (m.total, m.used)),
        Some((100 * KB, 60 * KB))
    );
    assert_eq!(c.parse_errors(), 2);
    Ok(())
}

#[test]
fn missing_files_skip_silently() -> std::io::Result<()> {
    let tree = TempTree::copy_of(PI, "missing")?;
    std::fs::remove_file(tree.path("proc/diskstats"))?;
    std::fs::remove_dir_all(tree.path("sys"))?;
    std::fs::remove_file(tree.path("proc/loadavg"))?;
    let mut c = tree.collector();
    let mut snap = Snapshot::default();
    c.collect(Kinds::ALL, 1, &mut snap);
    assert!(snap.diskio.is_empty() && snap.temp.is_empty());
    assert!(snap.system.is_none(), "system needs loadavg");
    assert!(snap.mem.is_some() && snap.kernel.is_some());
    assert_eq!(c.parse_errors(), 0);
    Ok(())
}

#[test]
fn only_the_asked_kinds_and_reused_vectors_stay_correct() -> std::io::Result<()> {
    let tree = TempTree::copy_of(PI, "kinds")?;
    let mut c = tree.collector();
    let mut first = Snapshot::default();
    c.collect(Kinds::ALL, 1, &mut first);
    let mut snap = first.clone();
    c.collect(Kinds::MEM | Kinds::NET, 2, &mut snap);
    assert!(snap.mem.is_some() && snap.swap.is_none() && snap.kernel.is_none());
    assert!(snap.diskio.is_empty() && snap.disk.is_empty() && snap.temp.is_empty());
    assert!(snap.health.is_none());
    assert_eq!(snap.net, first.net);
    c.collect(Kinds::NONE, 3, &mut snap);
    assert_eq!(
        snap,
        Snapshot {
            time_ns: 3,
            ..Snapshot::default()
        }
    );
    // Elements parked by the rounds above come back with the right contents.
    c.collect(Kinds::ALL, 4, &mut snap);
    assert!(snap.cpu.is_empty(), "same stat file: zero delta");
    // The interval figures depend on the previous diskio sample (none before round 1).
    let mut diskio = snap.diskio.clone();
    for d in &mut diskio {
        assert_eq!(d.io_util, Some(0.0), "the same diskstats: busy 0 %");
        d.io_util = None;
    }
    assert_eq!(
        (&snap.net, &diskio, &snap.disk.len(), &snap.temp),
        (&first.net, &first.diskio, &first.disk.len(), &first.temp)
    );
    Ok(())
}

#[test]
fn kinds_from_periods() {
    let mut p = Periods::all(0);
    assert_eq!(Kinds::enabled(&p), Kinds::NONE);
    p.cpu_ms = 1000;
    p.temp_ms = 5000;
    assert_eq!(Kinds::enabled(&p), Kinds::CPU | Kinds::TEMP);
    assert_eq!(Kinds::enabled(&Periods::all(10)), Kinds::ALL);
    assert!(Kinds::ALL.contains(Kinds::HEALTH));
}

#[test]
fn old_kernel_tree_round() -> std::io::Result<()> {
    let tree = TempTree::copy_of("linux-2.6.9-constructed", "old")?;
    let mut c = tree.collector();
    let mut snap = Snapshot::default();
    c.collect(Kinds::ALL, 1, &mut snap);
    assert_eq!(c.parse_errors(), 0);
    assert_eq!(
        snap.mem.map(|m| m.available),
        Some((20196 + 61248 + 807636) * KB)
    );
    assert_eq!(snap.system.map(|s| s.n_cpus), Some(2));
    assert_eq!(snap.diskio.len(), 4);
    assert_eq!(snap.net.len(), 1);
    // `/` exists here; `/boot` may or may not: only `/` is certain.
    assert_eq!(
        snap.disk
            .first()
            .map(|d| (d.path.as_str(), d.device.as_str())),
        Some(("/", "root"))
    );
    Ok(())
}

#[test]
fn live_proc_agrees_with_the_kernel() -> std::io::Result<()> {
    let mut c = Collector::new(&Procfs::default(), &Sysfs::default());
    let mut snap = Snapshot::default();
    c.collect(Kinds::ALL, 1, &mut snap);
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let stat = std::fs::read_to_string("/proc/stat")?;
    let field = |text: &str, key: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    assert_eq!(
        snap.mem.map(|m| m.total),
        field(&meminfo, "MemTotal:").map(|kb| kb * KB)
    );
    // btime is derived from the wall clock and can move by a second under NTP slew.
    let (ours, kernel) = (
        snap.kernel.map(|k| k.boot_time).unwrap_or(0),
        field(&stat, "btime").unwrap_or(u64::MAX),
    );
    assert!(ours.abs_diff(kernel) <= 1, "btime {ours} vs {kernel}");
    let real_root = Procfs::default()
        .mounts()
        .map(|m| mounts::select(&m).iter().any(|m| m.path == "/"))
        .unwrap_or(false);
    // A container's overlay root is skipped, like any pseudo filesystem.
    assert_eq!(
        snap.disk.iter().any(|d| d.path == "/"),
        real_root,
        "{:?}",
        snap.disk
    );
    assert!(!snap.net.iter().any(|n| n.interface == "lo"));
    assert_eq!(c.parse_errors(), 0);
    Ok(())
}
