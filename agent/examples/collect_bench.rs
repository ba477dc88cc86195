//! How fast is one full collection round, and does it allocate?
//!
//! Run it in release, on an otherwise quiet machine:
//!
//! ```text
//! cargo run --release -p autofact --example collect_bench [ROUNDS]
//! ```
//!
//! It prints, for `ROUNDS` rounds (default 2000) after a warm-up:
//! - the median time of one `Collector::collect(Kinds::ALL, ..)` round on the live `/proc`/`/sys`;
//! - heap allocations per round (a counting global allocator; the goal is 0 once warm);
//! - the floor, measured in the same run and interleaved with the rounds: merely opening,
//!   reading to the end and closing the same files (stat, meminfo, loadavg, uptime, net/dev,
//!   diskstats, self/mounts and each thermal zone's temp), with no parsing;
//! - the ratio round / floor (the goal is at most 1.1), and the round without the `disk` kind
//!   (whose `statvfs` calls have no counterpart in the floor) nor `processes`;
//! - a `processes`-only round (one open+read+close of `/proc/[pid]/stat` per process, which the
//!   floor does not read either), with the number of processes it counted.
// A counting allocator needs `unsafe impl GlobalAlloc`; it only forwards to the system allocator.
#![allow(unsafe_code)]

use autofact::facts::{Collector, Kinds, Procfs, Sysfs};
use autofact_fbs::Snapshot;
use std::alloc::{GlobalAlloc, Layout, System};
use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to `System`, which upholds the GlobalAlloc contract.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same layout the caller gave us.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The files a round reads, for the floor.
fn floor_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = [
        "stat",
        "meminfo",
        "loadavg",
        "uptime",
        "net/dev",
        "diskstats",
        "self/mounts",
    ]
    .iter()
    .map(|f| PathBuf::from("/proc").join(f))
    .collect();
    if let Ok(rd) = std::fs::read_dir("/sys/class/thermal") {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("thermal_zone") {
                files.push(e.path().join("temp"));
            }
        }
    }
    files
}

/// open + read to EOF + close of every file, into a reused buffer; returns bytes read.
fn floor_round(files: &[PathBuf], buf: &mut [u8]) -> usize {
    let mut total = 0;
    for path in files {
        let Ok(mut f) = File::open(path) else {
            continue;
        };
        loop {
            match f.read(buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    }
    total
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let mut c = Collector::new(&Procfs::default(), &Sysfs::default());
    let mut snap = Snapshot::default();
    let files = floor_files();
    let mut buf = vec![0u8; 64 * 1024];

    let no_disk = Kinds::CPU
        | Kinds::KERNEL
        | Kinds::MEM
        | Kinds::SWAP
        | Kinds::SYSTEM
        | Kinds::NET
        | Kinds::DISKIO
        | Kinds::TEMP
        | Kinds::HEALTH;
    // `no_disk` leaves out processes too: it is the round the first release measured.
    // Warm-up, in the same pattern as the measured loop: files opened, buffers, vectors and
    // pools grown, mount table parsed.
    for i in 0..200 {
        c.collect(Kinds::ALL, i, &mut snap);
        c.collect(no_disk, i, &mut snap);
        floor_round(&files, &mut buf);
    }

    let mut round_t = Vec::with_capacity(rounds);
    let mut floor_t = Vec::with_capacity(rounds);
    let mut nodisk_t = Vec::with_capacity(rounds);
    let mut procs_t = Vec::with_capacity(rounds);
    let mut allocs = 0u64;
    let mut max_allocs = 0u64;
    let mut bytes = 0usize;
    for i in 0..rounds {
        let t = Instant::now();
        bytes = floor_round(&files, &mut buf);
        floor_t.push(t.elapsed());

        let before = ALLOCS.load(Ordering::Relaxed);
        let t = Instant::now();
        c.collect(Kinds::ALL, i as i64, &mut snap);
        round_t.push(t.elapsed());
        let n = ALLOCS.load(Ordering::Relaxed) - before;
        allocs += n;
        max_allocs = max_allocs.max(n);

        let before = ALLOCS.load(Ordering::Relaxed);
        let t = Instant::now();
        c.collect(no_disk, i as i64, &mut snap);
        nodisk_t.push(t.elapsed());
        let n = ALLOCS.load(Ordering::Relaxed) - before;
        allocs += n;
        max_allocs = max_allocs.max(n);

        let before = ALLOCS.load(Ordering::Relaxed);
        let t = Instant::now();
        c.collect(Kinds::PROCESSES, i as i64, &mut snap);
        procs_t.push(t.elapsed());
        let n = ALLOCS.load(Ordering::Relaxed) - before;
        allocs += n;
        max_allocs = max_allocs.max(n);
    }
    // One more full round, a few ticks later so that cpu usage has moved, for the counts below.
    std::thread::sleep(Duration::from_millis(50));
    c.collect(Kinds::ALL, 0, &mut snap);
    let round = median(&mut round_t);
    let floor = median(&mut floor_t);
    let nodisk = median(&mut nodisk_t);
    let procs = median(&mut procs_t);
    println!("rounds                      {rounds} (after 200 warm-up rounds)");
    println!(
        "snapshot                    {} cpu, {} net, {} diskio, {} disk, {} temp; floor reads {} files, {bytes} bytes",
        snap.cpu.len(),
        snap.net.len(),
        snap.diskio.len(),
        snap.disk.len(),
        snap.temp.len(),
        files.len()
    );
    println!("full round, median          {:8.1} us", micros(round));
    println!("floor (open+read+close)     {:8.1} us", micros(floor));
    println!(
        "round / floor               {:8.2}",
        round.as_secs_f64() / floor.as_secs_f64().max(1e-12)
    );
    println!("round without disk, median  {:8.1} us", micros(nodisk));
    println!(
        "processes round, median     {:8.1} us ({} processes, {} threads)",
        micros(procs),
        snap.processes.map_or(0, |p| p.total),
        snap.processes.map_or(0, |p| p.total_threads)
    );
    println!(
        "allocations per round       {:8.2} (max {max_allocs} in one round, {} rounds)",
        allocs as f64 / (3 * rounds) as f64,
        3 * rounds
    );
    println!("parse errors                {:8}", c.parse_errors());
    breakdown(&files, &mut buf, rounds.min(1000));
}

/// Per file: open+read+close versus pread on a kept-open file; and one statvfs of `/`.
fn breakdown(files: &[PathBuf], buf: &mut [u8], rounds: usize) {
    use std::os::unix::fs::FileExt;
    println!("per file, median over {rounds}:   open+read+close   pread(kept open)");
    for path in files {
        let Ok(kept) = File::open(path) else { continue };
        let mut orc = Vec::with_capacity(rounds);
        let mut pr = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let t = Instant::now();
            floor_round(std::slice::from_ref(path), buf);
            orc.push(t.elapsed());
            let t = Instant::now();
            let mut off = 0;
            while let Ok(n @ 1..) = kept.read_at(&mut buf[off..], off as u64) {
                off += n;
            }
            pr.push(t.elapsed());
        }
        println!(
            "  {:28} {:8.1} us {:14.1} us",
            path.display(),
            micros(median(&mut orc)),
            micros(median(&mut pr))
        );
    }
    let mut sv = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let _ = nix::sys::statvfs::statvfs("/");
        sv.push(t.elapsed());
    }
    println!(
        "  statvfs(\"/\")                 {:8.1} us",
        micros(median(&mut sv))
    );
    parse_only(rounds);
}

/// The parsers alone over text read once: what a round adds on top of its reads.
fn parse_only(rounds: usize) {
    use autofact::facts::{diskstats, loadavg, meminfo, mounts, netdev, stat, uptime};
    let read = |f: &str| std::fs::read_to_string(format!("/proc/{f}")).unwrap_or_default();
    let (st, mi, la, up, nd, ds, mo) = (
        read("stat"),
        read("meminfo"),
        read("loadavg"),
        read("uptime"),
        read("net/dev"),
        read("diskstats"),
        read("self/mounts"),
    );
    let mut stat_out = stat::Stat::default();
    let mut net_out = Vec::new();
    let mut disk_out = Vec::new();
    let mut mount_out = Vec::new();
    let mut t_all = Vec::with_capacity(rounds);
    let mut t_mounts = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        let _ = stat::parse_into(&st, &mut stat_out);
        let _ = meminfo::parse(&mi);
        let _ = loadavg::parse(&la);
        let _ = uptime::parse(&up);
        let _ = netdev::parse_into(&nd, &mut net_out, |n| n != "lo");
        let _ = diskstats::parse_into(&ds, &mut disk_out);
        t_all.push(t.elapsed());
        let t = Instant::now();
        let _ = mounts::parse_into(&mo, &mut mount_out);
        t_mounts.push(t.elapsed());
    }
    println!(
        "parse only (no I/O), median: stat+meminfo+loadavg+uptime+net/dev+diskstats {:.1} us; mounts {:.1} us (only when the table changed)",
        micros(median(&mut t_all)),
        micros(median(&mut t_mounts))
    );
}
