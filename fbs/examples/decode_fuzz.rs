//! A dependency-free mutation fuzzer for the decoder: mutates valid envelopes (bit flips, byte
//! and word overwrites, truncation, insertion, deletion, splicing) and checks that decoding
//! never panics and that whatever decodes re-encodes stably and renders as line protocol.
//!
//! Run: `cargo run --release -p autofact-fbs --example decode_fuzz -- [SECONDS] [SEED]`
//! (defaults: 60 seconds, seed 1). A panic aborts with the message; rerun with the printed
//! seed to reproduce. `cargo-fuzz` would need `libfuzzer-sys`, a crate we do not take on.
use autofact_fbs::codec::{decode, encode};
use autofact_fbs::lineproto::{write_batch, Tags};
use autofact_fbs::*;
use std::time::{Duration, Instant};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn corpus() -> Vec<Vec<u8>> {
    let cpu = |name: &str| Cpu {
        name: name.into(),
        user: 1.5,
        system: 2.5,
        idle: 90.0,
        iowait: 0.25,
        ..Cpu::default()
    };
    let snap = |i: i64| Snapshot {
        time_ns: 1_764_300_000_000_000_000 + i,
        cpu: vec![cpu("cpu-total"), cpu("cpu0")],
        kernel: Some(Kernel {
            boot_time: 1,
            context_switches: 2,
            interrupts: 3,
            processes_forked: 4,
            ..Kernel::default()
        }),
        mem: Some(Mem {
            total: 100,
            available: 50,
            used: 25,
            ..Mem::default()
        }),
        swap: Some(Swap {
            total: 10,
            used: 1,
            free: 9,
            ..Swap::default()
        }),
        system: Some(System {
            load1: 0.5,
            load5: 0.25,
            load15: 0.125,
            n_cpus: 2,
            uptime: 99,
            ..System::default()
        }),
        net: vec![Net {
            interface: "eth0".into(),
            bytes_sent: 5,
            ..Net::default()
        }],
        diskio: vec![DiskIo {
            name: "sda".into(),
            reads: 7,
            ..DiskIo::default()
        }],
        disk: vec![Disk {
            path: "/".into(),
            device: "sda1".into(),
            fstype: "ext4".into(),
            total: 10,
            free: 5,
            used: 5,
            ..Disk::default()
        }],
        temp: vec![Temp {
            sensor: "cpu-thermal".into(),
            temp: 45.5,
        }],
        health: Some(Health {
            reconnects: 3,
            ..Health::default()
        }),
        ..Snapshot::default()
    };
    let msgs = [
        Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            client_id: "0123456789abcdef0123456789abcdef".into(),
            hostname: "pi".into(),
            arch: "aarch64".into(),
            agent_clock_ns: 12345,
            ..Hello::default()
        }),
        Message::Welcome(Welcome {
            client_id: "0123456789abcdef0123456789abcdef".into(),
            secret: "s".into(),
            welcome_back: true,
            config: Config::default(),
        }),
        Message::Config(Config::default()),
        Message::Batch(Batch {
            seq: 7,
            snapshots: vec![snap(0), snap(1)],
            ..Batch::default()
        }),
        Message::Ack(Ack {
            seq: 7,
            ..Ack::default()
        }),
        Message::Reject(Reject {
            code: RejectCode::BadToken,
            message: "no".into(),
        }),
    ];
    msgs.iter().map(encode).collect()
}

fn mutate(rng: &mut XorShift, corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut b = corpus[rng.below(corpus.len())].clone();
    for _ in 0..1 + rng.below(4) {
        let len = b.len();
        match rng.below(7) {
            0 if len > 0 => {
                let at = rng.below(len);
                b[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                b[at] = rng.next() as u8;
            }
            2 if len >= 4 => {
                // Offsets and lengths are 4-byte words: small or boundary values hit the
                // verifier's range checks hardest.
                let at = rng.below(len / 4) * 4;
                let word: u32 = match rng.below(4) {
                    0 => rng.below(64) as u32,
                    1 => u32::MAX - rng.below(64) as u32,
                    2 => (len + rng.below(16)) as u32,
                    _ => rng.next() as u32,
                };
                b[at..at + 4].copy_from_slice(&word.to_le_bytes());
            }
            3 => b.truncate(rng.below(len + 1)),
            4 => {
                let at = rng.below(len + 1);
                b.insert(at, rng.next() as u8);
            }
            5 if len > 0 => {
                b.remove(rng.below(len));
            }
            _ => {
                // Splice: the head of this one with the tail of another.
                let other = &corpus[rng.below(corpus.len())];
                let cut = rng.below(len.min(other.len()) + 1);
                b.truncate(cut);
                b.extend_from_slice(&other[cut.min(other.len())..]);
            }
        }
    }
    b
}

fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(60);
    let seed: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1).max(1);
    println!("decode_fuzz: {secs} s, seed {seed}");
    let corpus = corpus();
    let mut rng = XorShift(seed);
    let tags = Tags {
        host: "h",
        region: "r",
        zone: "",
        ..Tags::default()
    };
    let (mut runs, mut ok) = (0u64, 0u64);
    let mut out = String::new();
    let start = Instant::now();
    let budget = Duration::from_secs(secs);
    while start.elapsed() < budget {
        for _ in 0..1000 {
            let input = mutate(&mut rng, &corpus);
            runs += 1;
            if let Ok(msg) = decode(&input) {
                ok += 1;
                let again = encode(&msg);
                match decode(&again) {
                    Ok(back) => assert_eq!(encode(&back), again, "unstable re-encoding"),
                    Err(e) => panic!("re-encoding of a decoded message failed: {e}: {input:?}"),
                }
                if let Message::Batch(b) = &msg {
                    out.clear();
                    write_batch(&mut out, &tags, b);
                }
            }
        }
    }
    println!(
        "decode_fuzz: {runs} inputs in {:.1} s ({:.0}/s), {ok} decoded, {} rejected, no panic",
        start.elapsed().as_secs_f64(),
        runs as f64 / start.elapsed().as_secs_f64(),
        runs - ok
    );
}
