//! How fast a backlog drains: fills an agent's disk buffer with N batches (as after an outage),
//! starts a scripted factory that acks each batch as it arrives, runs the agent, and prints the
//! time until the last batch is acked, for several send windows.
//!
//! Run: `cargo run --release -p autofact --example session_drain [-- N]` (default N = 2000).

#[path = "../tests/common/mod.rs"]
mod common;

use autofact::buffer::Buffer;
use autofact::facts::{Collector, Kinds, Procfs, Sysfs};
use autofact_fbs::{Batch, Config, Message, Periods, Snapshot};
use common::{settings, wait_for, Agent, Factory, Script, TempDir};
use std::time::{Duration, Instant};

fn main() -> Result<(), String> {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(Ok(2000), |a| a.parse())
        .map_err(|e| format!("N: {e}"))?;
    // One realistic batch: 10 snapshots of every fact of this machine.
    let mut c = Collector::new(&Procfs::default(), &Sysfs::default());
    let mut snap = Snapshot::default();
    c.collect(Kinds::CPU, 0, &mut snap);
    std::thread::sleep(Duration::from_millis(50));
    let snapshots: Vec<Snapshot> = (0..10)
        .map(|i| {
            c.collect(Kinds::ALL, i * 10_000_000_000, &mut snap);
            snap.clone()
        })
        .collect();
    let size = autofact_fbs::encode(&Message::Batch(Batch {
        seq: 0,
        snapshots: snapshots.clone(),
        ..Batch::default()
    }))
    .len();
    println!("backlog: {n} batches of {size} bytes (10 snapshots of every fact)");

    for window in [1, 4, 8, 32] {
        let dir = TempDir::new("drain");
        let buffer = Buffer::open(&dir.0.join("buffer"), u64::MAX).map_err(|e| e.to_string())?;
        let mut last = 0;
        for _ in 0..n {
            last = buffer
                .append(|seq| {
                    autofact_fbs::encode(&Message::Batch(Batch {
                        seq,
                        snapshots: snapshots.clone(),
                        ..Batch::default()
                    }))
                })
                .map_err(|e| e.to_string())?;
        }
        buffer.flush().map_err(|e| e.to_string())?;
        drop(buffer);

        let factory = Factory::start(Script {
            token: "t".into(),
            // Collect nothing: only the backlog moves.
            config: Config {
                periods: Periods::all(0),
                ..Config::default()
            },
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
        let (mut s, lines) = settings(factory.addr, &dir.0, "t");
        s.timing.window = window;
        let start = Instant::now();
        let agent = Agent::start(s, lines);
        wait_for("the backlog to drain", Duration::from_secs(600), || {
            factory.record().acked == Some(last)
        });
        let took = start.elapsed();
        agent.stop()?;
        let sent = factory.record().batches.len();
        println!(
            "window {window:>2}: {n} batches acked in {:>7.1} ms = {:>8.0} batches/s, {:>6.1} MB/s ({sent} sent)",
            took.as_secs_f64() * 1e3,
            n as f64 / took.as_secs_f64(),
            (n as f64 * size as f64) / took.as_secs_f64() / 1e6
        );
    }
    Ok(())
}
