//! The line protocol encoder allocates nothing when the output String already has capacity.
//!
//! Counting needs a global allocator, which needs `unsafe impl GlobalAlloc`; it only forwards
//! to `System`. This binary holds a single test so no other thread allocates while it counts.
#![allow(unsafe_code)]

mod common;

use autofact_fbs::lineproto::{write_batch, Tags};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards unchanged to the System allocator; counting has no effect on
// the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn encoding_into_a_buffer_with_capacity_does_not_allocate() {
    let mut batch = common::full_batch();
    // Exercise the escaping and the left-out paths too, not only the plain fast path.
    batch.snapshots[0].net[0].interface = "we ird,=\\ \n".into();
    batch.snapshots[1].cpu[0].user = f64::NAN;
    batch.snapshots[2].temp[0].temp = f64::INFINITY;
    let tags = Tags {
        host: "pi kitchen",
        region: "eu,west",
        zone: "",
        ..Default::default()
    };
    // First pass sizes the buffer; the second must fit in it without allocating.
    let mut out = String::new();
    let points = write_batch(&mut out, &tags, &batch);
    assert!(points > 40, "{points}");
    let expected = out.clone();
    out.clear();

    let before = ALLOCS.load(Ordering::SeqCst);
    let again = write_batch(&mut out, &tags, &batch);
    let after = ALLOCS.load(Ordering::SeqCst);

    assert_eq!(again, points);
    assert_eq!(out, expected);
    assert_eq!(after - before, 0, "line protocol encoder allocated");

    // Control: the counter does see allocations, so the zero above means something.
    let probe = std::hint::black_box(String::with_capacity(16));
    assert!(ALLOCS.load(Ordering::SeqCst) > after);
    drop(probe);
}
