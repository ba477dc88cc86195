//! Field parity with Telegraf's Linux inputs (issue 19): the fields Telegraf adds beyond what the
//! first release sent, read through the production [`Collector`] from fixture trees. Expected
//! values come from the fixture files (their SOURCE.md lists them) and the kernel's documented
//! formats, never from the code under test.

use autofact::facts::{Collector, Kinds, Procfs, Sysfs};
use autofact_fbs::lineproto::{write_snapshot, Tags};
use autofact_fbs::{Processes, Snapshot};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn round(tree: &Path, kinds: Kinds) -> Snapshot {
    let mut c = Collector::new(
        &Procfs::new(tree.join("proc")),
        &Sysfs::new(tree.join("sys")),
    );
    let mut snap = Snapshot::default();
    c.collect(kinds, 1, &mut snap);
    snap
}

fn lines(snap: &Snapshot) -> String {
    let mut out = String::new();
    let tags = Tags {
        host: "h",
        ..Tags::default()
    };
    write_snapshot(&mut out, &tags, snap);
    out
}

const KB: u64 = 1024;

#[test]
fn processes_by_state_and_threads_from_proc_pid_stat() {
    let snap = round(&fixture("x86_64-debian12-kvm-6.18"), Kinds::PROCESSES);
    // SOURCE.md: pid 1 S (40 threads), 10 I, 11015 T, 11016 S, 11064 Z (1 thread each).
    assert_eq!(
        snap.processes,
        Some(Processes {
            sleeping: 2,
            idle: 1,
            stopped: 1,
            zombies: 1,
            total: 5,
            total_threads: 44,
            ..Processes::default()
        })
    );
    let out = lines(&snap);
    assert!(
        out.starts_with(
            "processes,host=h blocked=0i,running=0i,sleeping=2i,stopped=1i,zombies=1i,dead=0i,\
             idle=1i,paging=0i,parked=0i,unknown=0i,total=5i,total_threads=44i "
        ),
        "{out}"
    );
}

#[test]
fn a_tree_without_pids_has_zero_processes_and_a_missing_proc_none() {
    // The Pi tree has no pid directories: Telegraf would write zeros too.
    let snap = round(&fixture("pi4-aarch64-bookworm-nsynet"), Kinds::PROCESSES);
    assert_eq!(snap.processes, Some(Processes::default()));
    let snap = round(Path::new("/nonexistent-autofact-tree"), Kinds::PROCESSES);
    assert_eq!(snap.processes, None);
}

#[test]
fn kernel_entropy_and_swap_in_out_and_used_percent_without_swap() {
    let snap = round(
        &fixture("x86_64-debian12-kvm-6.18"),
        Kinds::KERNEL | Kinds::SWAP,
    );
    let k = snap.kernel.expect("kernel");
    assert_eq!(k.entropy_avail, Some(256));
    let s = snap.swap.expect("swap");
    // vmstat: pswpin 0, pswpout 0; meminfo: SwapTotal 0 kB.
    assert_eq!((s.total, s.sin, s.sout), (0, Some(0), Some(0)));
    let out = lines(&snap);
    assert!(
        out.contains("swap,host=h total=0i,used=0i,free=0i,used_percent=0,in=0i,out=0i "),
        "{out}"
    );
    assert!(out.contains(",entropy_avail=256i "), "{out}");
}

#[test]
fn without_vmstat_or_entropy_those_fields_are_left_out() {
    // The Pi tree has neither /proc/vmstat nor entropy_avail.
    let snap = round(
        &fixture("pi4-aarch64-bookworm-nsynet"),
        Kinds::KERNEL | Kinds::SWAP,
    );
    assert_eq!(snap.kernel.expect("kernel").entropy_avail, None);
    let s = snap.swap.expect("swap");
    assert_eq!((s.sin, s.sout), (None, None));
    let out = lines(&snap);
    assert!(
        !out.contains("entropy_avail") && !out.contains(",in="),
        "{out}"
    );
}

#[test]
fn users_from_utmp_and_none_without_it() {
    let snap = round(&fixture("x86_64-debian12-kvm-6.18"), Kinds::SYSTEM);
    let s = snap.system.expect("system");
    // utmp.txt: USER_PROCESS pi, root, pi.
    assert_eq!((s.n_users, s.n_unique_users), (Some(3), Some(2)));
    assert!(lines(&snap).contains(",n_users=3i,n_unique_users=2i "));
    let snap = round(&fixture("pi4-aarch64-bookworm-nsynet"), Kinds::SYSTEM);
    let s = snap.system.expect("system");
    assert_eq!((s.n_users, s.n_unique_users), (None, None));
    assert!(!lines(&snap).contains("n_users"));
}

#[test]
fn mem_has_every_linux_field_of_telegraf_on_a_32_bit_pi() {
    let snap = round(&fixture("pi4-armv7l-buster-gamemann-sl01"), Kinds::MEM);
    let m = snap.mem.expect("mem");
    // The fixture's lines, in kB.
    assert_eq!(m.high_total, 3_211_264 * KB);
    assert_eq!(m.high_free, 2_964_808 * KB);
    assert_eq!(m.low_total, 666_824 * KB);
    assert_eq!(m.low_free, 580_004 * KB);
    assert_eq!(m.swap_total, 102_396 * KB);
    assert_eq!(m.swap_free, 102_396 * KB);
    assert_eq!(m.swap_cached, 0);
    assert_eq!(m.mapped, 81_176 * KB);
    assert_eq!(m.sreclaimable, 12_884 * KB);
    assert_eq!(m.sunreclaim, 15_140 * KB);
    assert_eq!(m.page_tables, 1_892 * KB);
    assert_eq!(m.commit_limit, 2_041_440 * KB);
    assert_eq!(m.committed_as, 253_260 * KB);
    assert_eq!(m.vmalloc_total, 245_760 * KB);
    assert_eq!(m.vmalloc_used, 5_240 * KB);
    assert_eq!(m.vmalloc_chunk, 0);
    assert_eq!((m.dirty, m.write_back, m.write_back_tmp), (0, 0, 0));
    // No HugePages lines in this kernel's meminfo: 0, as gopsutil leaves them.
    assert_eq!((m.huge_pages_total, m.huge_page_size), (0, 0));
}

#[test]
fn mem_huge_pages_are_a_count_and_a_size_on_x86() {
    let snap = round(&fixture("x86_64-debian12-kvm-6.18"), Kinds::MEM);
    let m = snap.mem.expect("mem");
    // HugePages_Total: 0 (no unit: a count); Hugepagesize: 2048 kB.
    assert_eq!((m.huge_pages_total, m.huge_page_size), (0, 2048 * KB));
    assert_eq!(m.committed_as, 237_736 * KB);
    assert_eq!(m.sunreclaim, 32_272 * KB);
}

#[test]
fn disk_has_telegrafs_mode_tag() {
    // This machine's "/" is in the x86 tree's mounts as `rw`; statvfs runs on this machine.
    let snap = round(&fixture("x86_64-debian12-kvm-6.18"), Kinds::DISK);
    let root = snap
        .disk
        .iter()
        .find(|d| d.path == "/")
        .expect("the root filesystem");
    assert_eq!(root.mode, "rw");
    assert!(lines(&snap).contains(",mode=rw,path=/ "));
}

/// Telegraf's `io_await`, `io_svctm` (ms per completed I/O) and `io_util` from two samples.
#[test]
fn diskio_interval_figures_from_two_samples() {
    let dir = std::env::temp_dir().join(format!("autofact-diskio-{}", std::process::id()));
    let proc = dir.join("proc");
    std::fs::create_dir_all(&proc).expect("temp dir");
    let first =
        std::fs::read_to_string(fixture("pi4-aarch64-bookworm-nsynet").join("proc/diskstats"))
            .expect("fixture");
    std::fs::write(proc.join("diskstats"), &first).expect("write");
    let mut c = Collector::new(&Procfs::new(&proc), &Sysfs::new(dir.join("sys")));
    let mut snap = Snapshot::default();
    c.collect(Kinds::DISKIO, 1, &mut snap);
    let d = |s: &Snapshot| s.diskio.iter().find(|d| d.name == "mmcblk0").cloned();
    let one = d(&snap).expect("mmcblk0");
    assert_eq!(
        (one.io_await, one.io_svctm, one.io_util),
        (None, None, None)
    );
    // iostats.rst columns: reads +10, writes +5, read ms +30, write ms +45, io ms +60.
    let second = first.replace(
        "mmcblk0 11234 5120 912874 16820 4021 3890 198432 21940 0 27010",
        "mmcblk0 11244 5120 912874 16850 4026 3890 198432 21985 0 27070",
    );
    assert_ne!(first, second, "the fixture line to change");
    std::fs::write(proc.join("diskstats"), second).expect("write");
    std::thread::sleep(std::time::Duration::from_millis(20));
    c.collect(Kinds::DISKIO, 2, &mut snap);
    let two = d(&snap).expect("mmcblk0");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(two.io_await, Some(75.0 / 15.0));
    assert_eq!(two.io_svctm, Some(60.0 / 15.0));
    // 60 ms busy over at least 20 ms: a positive share (the elapsed time is not fixed).
    assert!(two.io_util.is_some_and(|u| u > 0.0), "{two:?}");
    // A device that did nothing (loop0 is all zeros in both): no await/svctm, io_util 0.
    let idle = snap
        .diskio
        .iter()
        .find(|d| d.name == "loop0")
        .expect("loop0");
    assert_eq!(
        (idle.io_await, idle.io_svctm, idle.io_util),
        (None, None, Some(0.0))
    );
}
