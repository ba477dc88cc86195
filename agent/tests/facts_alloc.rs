//! Once warm, a collection round allocates nothing (issue 3): checked with a counting global
//! allocator on a fixture tree, whose files do not change, so the count is deterministic.
// A counting allocator needs `unsafe impl GlobalAlloc`; it only forwards to the system allocator.
#![allow(unsafe_code)]

use autofact::facts::{Collector, Kinds, Procfs, Sysfs};
use autofact_fbs::Snapshot;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;

struct Counting;

thread_local! {
    // Per thread, so the test harness's own threads do not disturb the count.
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn bump() {
    // try_with: the slot may already be gone while a thread exits.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the GlobalAlloc contract.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        // SAFETY: same layout the caller gave us.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn warm_rounds_allocate_nothing() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pi4-aarch64-bookworm-nsynet");
    let mut c = Collector::new(
        &Procfs::new(root.join("proc")),
        &Sysfs::new(root.join("sys")),
    );
    let mut snap = Snapshot::default();
    let some = Kinds::MEM | Kinds::NET | Kinds::TEMP;
    // Warm-up in the same pattern as below: full rounds and partial ones, so that parked
    // elements and pools reach their size.
    for i in 0..3 {
        c.collect(Kinds::ALL, i, &mut snap);
        c.collect(some, i, &mut snap);
        c.collect(Kinds::NONE, i, &mut snap);
    }
    let before = allocs();
    for i in 0..50 {
        c.collect(Kinds::ALL, i, &mut snap);
        c.collect(some, i, &mut snap);
        c.collect(Kinds::NONE, i, &mut snap);
    }
    let after = allocs();
    // The rounds did produce facts: the count is not zero because nothing happened.
    c.collect(Kinds::ALL, 0, &mut snap);
    assert_eq!(snap.net.len(), 3);
    assert_eq!(snap.diskio.len(), 11);
    assert_eq!(snap.temp.len(), 1);
    assert!(snap.mem.is_some() && snap.kernel.is_some() && snap.system.is_some());
    assert_eq!(after - before, 0, "allocations in 150 warm rounds");
}

/// Issue 19: the `processes` round lists `/proc` and opens each `/proc/[pid]/stat`; with the
/// other kinds it still allocates nothing once warm (the x86 tree has five pid directories, a
/// utmp file and `/proc/vmstat`, which the Pi tree lacks).
#[test]
fn warm_rounds_with_processes_users_and_vmstat_allocate_nothing() {
    let root =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/x86_64-debian12-kvm-6.18");
    let mut c = Collector::new(
        &Procfs::new(root.join("proc")),
        &Sysfs::new(root.join("sys")),
    );
    let mut snap = Snapshot::default();
    for i in 0..3 {
        c.collect(Kinds::ALL, i, &mut snap);
    }
    let before = allocs();
    for i in 0..50 {
        c.collect(Kinds::ALL, i, &mut snap);
    }
    let after = allocs();
    let p = snap.processes.expect("processes");
    assert_eq!(p.total, 5);
    let s = snap.system.expect("system");
    assert_eq!(s.n_users, Some(3));
    assert!(snap.swap.is_some_and(|s| s.sin.is_some()));
    assert_eq!(after - before, 0, "allocations in 50 warm rounds");
}
