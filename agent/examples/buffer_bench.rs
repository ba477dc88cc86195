//! Disk buffer benchmark: append + ack throughput, and bytes written to disk per batch and per hour.
//!
//! Run (release, as deployed):
//! ```text
//! cargo run --release -p autofact --example buffer_bench [-- BATCHES]
//! ```
//!
//! Bytes written are `write_bytes` from /proc/self/io: what this process caused to be sent to the
//! block layer (counted per page as it is dirtied, so rewriting a page after an fsync counts again, as
//! it does on the card). The file system's own journal and metadata writes are not included.

use std::path::{Path, PathBuf};
use std::time::Instant;

use autofact::buffer::{Buffer, BufferError};

/// Batch size like a real encoded Batch at a 1 s period.
const BATCH_BYTES: usize = 1500;

fn write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn dir_size(dir: &Path) -> u64 {
    // Allocated blocks, not apparent length: fjall's journal is preallocated sparse.
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_size(&p),
                Ok(m) => total += m.blocks() * 512,
                Err(_) => {}
            }
        }
    }
    total
}

fn batch(seq: u64) -> Vec<u8> {
    let mut x = seq | 1;
    (0..BATCH_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "autofact-buffer-bench-{name}-{}",
        std::process::id()
    ))
}

/// Appends `n` batches; every `ack_every` appends, reads the window and acks it (a session whose
/// factory acks promptly). `flush_every` > 0 also fsyncs that often.
fn throughput(n: u64, ack_every: u64, flush_every: u64) -> Result<(), BufferError> {
    let dir = temp("tp");
    std::fs::remove_dir_all(&dir).ok();
    let buf = Buffer::open(&dir, u64::MAX)?;
    let before = write_bytes();
    let start = Instant::now();
    let mut acked = 0;
    for i in 1..=n {
        buf.append(batch)?;
        if flush_every > 0 && i % flush_every == 0 {
            buf.flush()?;
        }
        if i % ack_every == 0 {
            let w = buf.window(acked, ack_every as usize)?;
            if let Some((last, _)) = w.last() {
                acked = *last;
                buf.ack(acked)?;
            }
        }
    }
    buf.flush()?;
    let secs = start.elapsed().as_secs_f64();
    let written = write_bytes() - before;
    println!(
        "append+ack, ack every {ack_every:>3}, fsync every {:>5}: {:>8.0} batches/s, {:>6.0} bytes written per batch ({:.2}x the payload), dir {} KiB",
        if flush_every == 0 { "end".to_string() } else { flush_every.to_string() },
        n as f64 / secs,
        written as f64 / n as f64,
        written as f64 / (n as f64 * BATCH_BYTES as f64),
        dir_size(&dir) / 1024
    );
    drop(buf);
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// One simulated hour at a 1 s period: each "second" appends one batch, flushes it (the session makes
/// a batch durable before sending it), and the factory's ack deletes it. With `flusher_between`, the
/// 1 s background flusher also fires between the ack and the next append (its worst phase: a second
/// fsync every second); without, the ack rides along with the next second's flush.
fn simulated_hour(seconds: u64, flusher_between: bool) -> Result<(), BufferError> {
    let dir = temp("hour");
    std::fs::remove_dir_all(&dir).ok();
    let buf = Buffer::open(&dir, 64 * 1024 * 1024)?;
    buf.flush()?;
    let before = write_bytes();
    let size_before = dir_size(&dir);
    let start = Instant::now();
    for _ in 0..seconds {
        let seq = buf.append(batch)?;
        buf.flush()?;
        buf.ack(seq)?;
        if flusher_between {
            buf.flush()?;
        }
    }
    buf.flush()?;
    let written = write_bytes() - before;
    let per_hour = written as f64 * 3600.0 / seconds as f64;
    println!(
        "simulated {seconds} s at a 1 s period, flusher also after each ack: {:<3} ({:.1} s real): {:.1} MiB written per hour ({:.0} bytes per batch, payload {BATCH_BYTES}); dir grew {} KiB",
        if flusher_between { "yes" } else { "no" },
        start.elapsed().as_secs_f64(),
        per_hour / (1024.0 * 1024.0),
        written as f64 / seconds as f64,
        (dir_size(&dir).saturating_sub(size_before)) / 1024
    );
    drop(buf);
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 50_000,
    };
    throughput(n, 1, 0)?;
    throughput(n, 16, 0)?;
    throughput(n, 64, 0)?;
    throughput(n / 10, 1, 1)?;
    simulated_hour(3600, false)?;
    simulated_hour(3600, true)?;
    Ok(())
}
