//! Property test: the disk buffer agrees with an in-memory model after every step of random
//! append / window / ack / set_cap / flush / reopen sequences.

use std::collections::BTreeMap;
use std::path::PathBuf;

use autofact::buffer::{Buffer, BufferError, BufferStats};

/// xorshift64*: small, deterministic, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("autofact-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// The value stored for `seq`: its length varies, its bytes depend on the seq so mix-ups show.
fn value(seq: u64, len: usize) -> Vec<u8> {
    let tag = seq.to_le_bytes();
    (0..len).map(|i| tag[i % 8] ^ (i as u8)).collect()
}

/// What the buffer should hold.
struct Model {
    map: BTreeMap<u64, Vec<u8>>,
    next_seq: u64,
    cap: u64,
    dropped: u64,
    /// Drops over the whole run (`dropped` restarts at each reopen).
    total_dropped: u64,
}

impl Model {
    fn bytes(&self) -> u64 {
        self.map.values().map(|v| v.len() as u64).sum()
    }
    fn append(&mut self, len: usize) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.map.insert(seq, value(seq, len));
        // Drop oldest past the cap, but never the batch just appended.
        while self.bytes() > self.cap && self.map.len() > 1 {
            self.map.pop_first();
            self.dropped += 1;
            self.total_dropped += 1;
        }
        seq
    }
    fn ack(&mut self, seq: u64) {
        self.map.retain(|&k, _| k > seq);
    }
    fn window(&self, after: u64, max: usize) -> Vec<(u64, Vec<u8>)> {
        self.map
            .range(after.saturating_add(1)..)
            .take(max)
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }
    fn stats(&self) -> BufferStats {
        BufferStats {
            batches: self.map.len() as u64,
            bytes: self.bytes(),
            dropped: self.dropped,
            next_seq: self.next_seq,
        }
    }
}

fn run(seed: u64, steps: usize) -> Result<(), BufferError> {
    let root = temp_dir(&format!("buffer-model-{seed}"));
    let dir = root.join("buffer");
    let mut rng = Rng(seed);
    let mut cap = 2_000 + rng.below(20_000);
    let mut buf = Buffer::open(&dir, cap)?;
    let start = buf.stats().next_seq;
    assert!(start >= 1, "seqs start at 1 or later");
    let mut model = Model {
        map: BTreeMap::new(),
        next_seq: start,
        cap,
        dropped: 0,
        total_dropped: 0,
    };
    let mut counts = [0usize; 6];

    for step in 0..steps {
        let op = rng.below(100);
        let what = match op {
            0..=44 => {
                let len = rng.below(400) as usize;
                let got = buf.append(|seq| value(seq, len))?;
                let want = model.append(len);
                assert_eq!(got, want, "seed {seed} step {step}: append seq");
                0
            }
            45..=64 => {
                // Mostly around the live range, sometimes far outside it.
                let lo = model.map.keys().next().copied().unwrap_or(model.next_seq);
                let after = match rng.below(4) {
                    0 => rng.below(lo + 3),
                    _ => lo.saturating_sub(2) + rng.below(model.next_seq - lo + 4),
                };
                let max = rng.below(40) as usize;
                assert_eq!(
                    buf.window(after, max)?,
                    model.window(after, max),
                    "seed {seed} step {step}: window({after}, {max})"
                );
                1
            }
            65..=84 => {
                let lo = model.map.keys().next().copied().unwrap_or(model.next_seq);
                let seq = match rng.below(10) {
                    0 => rng.below(lo + 1),
                    1 => model.next_seq + rng.below(5),
                    _ => lo.saturating_sub(1) + rng.below(model.next_seq - lo + 2),
                };
                buf.ack(seq)?;
                model.ack(seq);
                2
            }
            85..=89 => {
                cap = 500 + rng.below(30_000);
                buf.set_cap(cap);
                model.cap = cap;
                3
            }
            90..=95 => {
                buf.flush()?;
                4
            }
            _ => {
                drop(buf);
                buf = Buffer::open(&dir, cap)?;
                // `dropped` counts since open.
                model.dropped = 0;
                5
            }
        };
        counts[what] += 1;
        assert_eq!(
            buf.stats(),
            model.stats(),
            "seed {seed} step {step}: stats after op {what}"
        );
        if step % 25 == 0 {
            assert_eq!(
                buf.window(0, usize::MAX)?,
                model.window(0, usize::MAX),
                "seed {seed} step {step}: full contents"
            );
        }
    }
    // Every kind of operation ran, so the agreement above covers them all.
    assert!(
        counts.iter().all(|&c| c > 0),
        "seed {seed}: op counts {counts:?}"
    );
    assert!(
        model.total_dropped > 0,
        "seed {seed}: the cap never dropped anything"
    );
    drop(buf);
    std::fs::remove_dir_all(&root).ok();
    Ok(())
}

#[test]
fn buffer_agrees_with_model_seed_1() -> Result<(), BufferError> {
    run(0x9e37_79b9_7f4a_7c15, 3000)
}

#[test]
fn buffer_agrees_with_model_seed_2() -> Result<(), BufferError> {
    run(0xdead_beef_cafe_f00d, 3000)
}

#[test]
fn buffer_agrees_with_model_seed_3() -> Result<(), BufferError> {
    run(42, 3000)
}

/// After every batch was acked and deleted, a reopened buffer still never reuses a seq.
#[test]
fn next_seq_survives_ack_of_everything_and_reopen() -> Result<(), BufferError> {
    let root = temp_dir("buffer-nextseq");
    let dir = root.join("buffer");
    let buf = Buffer::open(&dir, 1 << 20)?;
    let mut last = 0;
    for _ in 0..10 {
        last = buf.append(|seq| value(seq, 100))?;
    }
    buf.ack(last)?;
    assert_eq!(buf.stats().batches, 0);
    drop(buf);
    let buf = Buffer::open(&dir, 1 << 20)?;
    assert_eq!(buf.stats().next_seq, last + 1);
    assert_eq!(buf.append(|seq| value(seq, 10))?, last + 1);
    drop(buf);
    std::fs::remove_dir_all(&root).ok();
    Ok(())
}

/// The session appends from one task and sends + acks from another: every batch is sent exactly
/// once, in order, and the queue ends empty with consistent counters.
#[test]
fn concurrent_append_and_ack() -> Result<(), BufferError> {
    let root = temp_dir("buffer-concurrent");
    let dir = root.join("buffer");
    let buf = std::sync::Arc::new(Buffer::open(&dir, u64::MAX)?);
    const N: u64 = 3000;
    let appender = {
        let buf = buf.clone();
        std::thread::spawn(move || -> Result<Vec<u64>, BufferError> {
            (0..N)
                .map(|i| buf.append(|seq| value(seq, 200 + (i % 700) as usize)))
                .collect()
        })
    };
    let mut sent = Vec::new();
    let mut after = 0;
    while (sent.len() as u64) < N {
        let w = buf.window(after, 50)?;
        for (seq, v) in &w {
            assert_eq!(*v, value(*seq, v.len()), "batch {seq} damaged");
            sent.push(*seq);
        }
        if let Some((last, _)) = w.last() {
            after = *last;
            buf.ack(after)?;
        }
    }
    let appended = match appender.join() {
        Ok(r) => r?,
        Err(_) => panic!("appender panicked"),
    };
    assert_eq!(sent, appended);
    let s = buf.stats();
    assert_eq!((s.batches, s.bytes), (0, 0));
    assert_eq!(Some(s.next_seq), appended.last().map(|l| l + 1));
    drop(buf);
    std::fs::remove_dir_all(&root).ok();
    Ok(())
}
