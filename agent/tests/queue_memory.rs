//! Issue 13: while the disk refuses writes the memory queue is bounded; past the bound the
//! oldest batches go, every dropped snapshot is counted, and seqs and order are kept.

use autofact::run::queue::{spawn_store, Item, Queue, StoreTiming, MEMORY_CAP_BYTES};
use autofact::run::{Log, StateDir};
use autofact_fbs::{BufferState, Message, Net, Snapshot};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn big(i: i64) -> Snapshot {
    Snapshot {
        time_ns: i,
        // About 100 KB: 120 of them are past the 8 MiB bound.
        net: vec![Net {
            interface: "x".repeat(100_000),
            ..Net::default()
        }],
        ..Snapshot::default()
    }
}

#[test]
fn the_memory_queue_is_bounded_and_counts_what_it_drops() {
    let data = std::env::temp_dir().join(format!("autofact-queue-mem-{}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("{e}"));
    // A buffer directory that cannot be created: the queue starts in memory.
    let q = Queue::open(
        Path::new("/proc/autofact-no-such-dir/buffer"),
        &data,
        1 << 30,
        Log::stderr(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let q = Arc::new(q);
    assert_ne!(q.state(), BufferState::Disk);
    let (tx, _rx) = smol::channel::bounded(1);
    let timing = StoreTiming {
        flush_every: Duration::from_secs(1),
        slow_disk: Duration::ZERO,
    };
    let state = StateDir::open(&data).unwrap_or_else(|e| panic!("{e}"));
    let (spool, store) =
        spawn_store(q.clone(), timing, tx, (0, 1 << 30), state).unwrap_or_else(|e| panic!("{e}"));
    let n = 120;
    for i in 0..n {
        spool.send_wait(Item::Snap(Box::new(big(i))));
        spool.send_wait(Item::Seal);
    }
    spool.send_wait(Item::Stop);
    store
        .join()
        .unwrap_or_else(|_| panic!("store thread panicked"));

    let st = q.stats();
    assert!(st.bytes <= MEMORY_CAP_BYTES, "{st:?}");
    assert!(st.dropped_snapshots > 0, "{st:?}");
    assert_eq!(st.dropped_snapshots + st.memory_batches, n as u64, "{st:?}");
    // What is left is the newest, in order, with increasing seqs.
    let window = q.window(0, usize::MAX);
    let times: Vec<i64> = window
        .iter()
        .filter_map(|(_, b)| match autofact_fbs::decode(b) {
            Ok(Message::Batch(b)) => Some(b.snapshots[0].time_ns),
            _ => None,
        })
        .collect();
    let first = n - times.len() as i64;
    assert_eq!(times, (first..n).collect::<Vec<_>>());
    assert!(window.windows(2).all(|w| w[0].0 < w[1].0));
    let _ = std::fs::remove_dir_all(&data);
}
