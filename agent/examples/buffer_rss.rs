//! Memory of the disk buffer: appends N batches (~1.5 KB each, like an encoded Batch), then prints
//! the process's VmRSS / VmHWM; `reopen` opens an existing buffer (an agent restarting with a backlog)
//! and walks it through the send window the way the session does.
//!
//! Run (release, as deployed):
//! ```text
//! cargo run --release -p autofact --example buffer_rss -- fill /tmp/rss-buf 100000
//! cargo run --release -p autofact --example buffer_rss -- reopen /tmp/rss-buf
//! ```

use std::path::PathBuf;
use std::time::Duration;

use autofact::buffer::Buffer;

/// (VmRSS, VmHWM, RssAnon, RssFile) in KiB, from /proc/self/status.
fn memory() -> (u64, u64, u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (
        field("VmRSS:"),
        field("VmHWM:"),
        field("RssAnon:"),
        field("RssFile:"),
    )
}

fn report(what: &str) {
    let (rss, hwm, anon, file) = memory();
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "{what:<42} VmRSS {:>6.2} MiB  VmHWM {:>6.2} MiB  (anon {:>5.2}, file {:>5.2})",
        mib(rss),
        mib(hwm),
        mib(anon),
        mib(file)
    );
}

/// A batch-sized value whose bytes vary, so nothing along the way can shrink it.
fn batch(seq: u64) -> Vec<u8> {
    let len = 1000 + (seq.wrapping_mul(2_654_435_761) % 1000) as usize;
    let mut x = seq | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let dir = PathBuf::from(args.next().ok_or("usage: buffer_rss fill|reopen DIR [N]")?);
    report("start (no buffer)");
    match mode.as_str() {
        "fill" => {
            let n: u64 = args.next().ok_or("fill needs N")?.parse()?;
            let buf = Buffer::open(&dir, u64::MAX)?;
            report("opened");
            for i in 0..n {
                buf.append(batch)?;
                if i > 0 && i % 1000 == 0 {
                    buf.flush()?;
                }
            }
            buf.flush()?;
            report(&format!("appended {n}"));
            // Let fjall's background flush of the memtables finish.
            std::thread::sleep(Duration::from_secs(3));
            let s = buf.stats();
            report(&format!(
                "settled: {} batches, {} bytes",
                s.batches, s.bytes
            ));
            println!("memtables, cache: {:?}", buf.engine_memory());
        }
        "reopen" => {
            let buf = Buffer::open(&dir, u64::MAX)?;
            let s = buf.stats();
            report(&format!(
                "reopened: {} batches, {} bytes",
                s.batches, s.bytes
            ));
            println!("memtables, cache: {:?}", buf.engine_memory());
            // Send the whole backlog in windows of 64 and ack each, like a session catching up.
            let mut after = 0;
            let mut sent = 0u64;
            loop {
                let w = buf.window(after, 64)?;
                let Some((last, _)) = w.last() else { break };
                after = *last;
                sent += w.len() as u64;
                buf.ack(after)?;
            }
            report(&format!("sent and acked {sent}"));
            println!("memtables, cache: {:?}", buf.engine_memory());
            std::thread::sleep(Duration::from_secs(3));
            report("settled");
        }
        _ => return Err("usage: buffer_rss fill|reopen DIR [N]".into()),
    }
    Ok(())
}
