//! SIGKILL test: a child process appends in a loop and reports each seq once `append` returned; the
//! parent kills it at a random moment and checks that every reported batch survived, in order, no gaps.
//!
//! The child is this same test binary, re-executed with `AUTOFACT_BUFFER_KILL_CHILD=<dir>`; in that
//! mode the test function runs the append loop instead of the parent's checks. The child never flushes.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use autofact::buffer::Buffer;

const CHILD_ENV: &str = "AUTOFACT_BUFFER_KILL_CHILD";
/// Set (to anything) for the child that also acks.
const CHILD_ACKS_ENV: &str = "AUTOFACT_BUFFER_KILL_CHILD_ACKS";
const ROUNDS: usize = 5;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

/// A batch-sized value (~1.5 KB, like an encoded Batch) whose bytes depend on its seq.
fn value(seq: u64) -> Vec<u8> {
    let len = 1200 + (seq % 600) as usize;
    let tag = seq.to_le_bytes();
    (0..len).map(|i| tag[i % 8] ^ (i as u8)).collect()
}

/// The child: append forever, print each seq after `append` returned. Never flushes.
fn child(dir: &Path) -> ! {
    let code = match child_loop(dir) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("child: {e}");
            1
        }
    };
    std::process::exit(code)
}

fn child_loop(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let buf = Buffer::open(dir, u64::MAX)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "open {}", buf.stats().next_seq)?;
    out.flush()?;
    let acks = std::env::var_os(CHILD_ACKS_ENV).is_some();
    loop {
        let seq = buf.append(value)?;
        writeln!(out, "seq {seq}")?;
        out.flush()?;
        if acks && seq % 37 == 0 {
            // Mostly keep a tail; sometimes ack everything, which leaves only meta/next_seq on disk.
            let upto = if seq % 5 == 0 { seq } else { seq - 20 };
            writeln!(out, "acking {upto}")?;
            out.flush()?;
            buf.ack(upto)?;
            writeln!(out, "acked {upto}")?;
            out.flush()?;
            if upto == seq {
                // Linger in the emptied state, so the parent's kill often lands exactly here, where
                // only meta/next_seq remembers which seqs were used.
                std::thread::sleep(Duration::from_millis(30));
            }
        }
    }
}

#[test]
fn sigkill_loses_no_appended_batch() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
    }

    let seed = nanos() | 1;
    eprintln!("sigkill test seed {seed}");
    let mut rng = Rng(seed);
    let root = std::env::temp_dir().join(format!(
        "autofact-buffer-kill-{}-{seed}",
        std::process::id()
    ));
    std::fs::create_dir_all(&root)?;
    let dir: PathBuf = root.join("buffer");
    let exe = std::env::current_exe()?;

    // Every seq any child reported, over all rounds (nothing is acked, so all must stay).
    let mut reported: Vec<u64> = Vec::new();
    let mut prev_next = None;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["sigkill_loses_no_appended_batch", "--exact", "--nocapture"])
            .env(CHILD_ENV, &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no child stdout")?;
        let mut lines = BufReader::new(stdout).lines();

        // Kill after a random number of reported appends plus a random few hundred microseconds,
        // so the kill lands anywhere: mid-append, mid-memtable-flush, mid-print.
        let kill_after = 20 + rng.next() % 3000;
        let mut seen = 0;
        let mut opened_at = None;
        while seen < kill_after {
            let Some(line) = lines.next() else {
                return Err(format!("round {round}: child exited early").into());
            };
            let line = line?;
            if let Some(n) = line.strip_prefix("open ") {
                opened_at = Some(n.parse::<u64>()?);
            } else if let Some(n) = line.strip_prefix("seq ") {
                reported.push(n.parse()?);
                seen += 1;
            }
        }
        std::thread::sleep(Duration::from_micros(rng.next() % 500));
        child.kill()?; // SIGKILL on Unix
        child.wait()?;
        // Lines the child wrote before it died are still in the pipe.
        for line in lines {
            if let Some(n) = line?.strip_prefix("seq ") {
                reported.push(n.parse()?);
            }
        }
        // A restarted child continues above everything earlier children reported.
        let opened_at = opened_at.ok_or("child never reported its open")?;
        if let Some(prev) = prev_next {
            assert_eq!(
                opened_at, prev,
                "round {round}: child did not continue at next_seq"
            );
        }

        // Reopen here and check.
        let buf = Buffer::open(&dir, u64::MAX)?;
        let stored = buf.window(0, usize::MAX)?;
        let seqs: Vec<u64> = stored.iter().map(|(s, _)| *s).collect();
        for pair in seqs.windows(2) {
            assert_eq!(
                pair[1],
                pair[0] + 1,
                "round {round}: gap or disorder in stored seqs"
            );
        }
        for (seq, v) in &stored {
            assert_eq!(*v, value(*seq), "round {round}: batch {seq} damaged");
        }
        for pair in reported.windows(2) {
            assert_eq!(
                pair[1],
                pair[0] + 1,
                "round {round}: children reported a gap"
            );
        }
        let first = *reported.first().ok_or("nothing reported")?;
        let last = *reported.last().ok_or("nothing reported")?;
        assert_eq!(
            seqs.first(),
            Some(&first),
            "round {round}: oldest reported batch lost"
        );
        // The child may have appended one more batch after its last report, never fewer.
        let stored_last = *seqs.last().ok_or("buffer empty")?;
        assert!(
            stored_last == last || stored_last == last + 1,
            "round {round}: reported up to {last}, stored up to {stored_last}"
        );
        let stats = buf.stats();
        assert_eq!(stats.batches, stored.len() as u64);
        assert_eq!(
            stats.bytes,
            stored.iter().map(|(_, v)| v.len() as u64).sum::<u64>()
        );
        assert_eq!(stats.next_seq, stored_last + 1);
        prev_next = Some(stats.next_seq);
        // Keep whatever the unreported extra append left, so the next round starts consistent.
        if stored_last == last + 1 {
            reported.push(stored_last);
        }
        drop(buf);
    }
    std::fs::remove_dir_all(&root).ok();
    Ok(())
}

/// Same, with a child that also acks: an ack is atomic (it was applied entirely or not at all), every
/// batch above the acked seq is still there, and next_seq never goes back, even when the kill lands
/// right after an ack that emptied the queue.
#[test]
fn sigkill_during_acks_keeps_a_consistent_queue() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
    }

    let seed = nanos() | 1;
    eprintln!("sigkill+ack test seed {seed}");
    let mut rng = Rng(seed);
    let root = std::env::temp_dir().join(format!(
        "autofact-buffer-killack-{}-{seed}",
        std::process::id()
    ));
    std::fs::create_dir_all(&root)?;
    let dir: PathBuf = root.join("buffer");
    let exe = std::env::current_exe()?;

    let mut reported: Vec<u64> = Vec::new();
    // Highest ack known to be applied.
    let mut confirmed = 0u64;
    let mut prev_next = None;
    let mut acks_seen = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "sigkill_during_acks_keeps_a_consistent_queue",
                "--exact",
                "--nocapture",
            ])
            .env(CHILD_ENV, &dir)
            .env(CHILD_ACKS_ENV, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no child stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        // Odd rounds kill right after an ack that emptied the queue; even rounds at a random point.
        let kill_after = 50 + rng.next() % 3000;
        let after_ack_all = round % 2 == 1;
        let mut collected = Vec::new();
        let mut seen = 0;
        let mut last_seq = String::new();
        loop {
            let line = lines
                .next()
                .ok_or_else(|| format!("round {round}: child exited early"))??;
            if let Some(n) = line.strip_prefix("seq ") {
                seen += 1;
                last_seq = n.to_owned();
            }
            let emptied = line.strip_prefix("acked ") == Some(last_seq.as_str());
            collected.push(line);
            if seen >= kill_after && (!after_ack_all || emptied) {
                break;
            }
        }
        if !after_ack_all {
            std::thread::sleep(Duration::from_micros(rng.next() % 500));
        }
        child.kill()?;
        child.wait()?;
        for line in lines {
            collected.push(line?);
        }

        let mut opened_at = None;
        let mut pending = None;
        for line in &collected {
            if let Some(n) = line.strip_prefix("open ") {
                opened_at = Some(n.parse::<u64>()?);
            } else if let Some(n) = line.strip_prefix("seq ") {
                reported.push(n.parse()?);
            } else if let Some(n) = line.strip_prefix("acking ") {
                pending = Some(n.parse::<u64>()?);
            } else if let Some(n) = line.strip_prefix("acked ") {
                confirmed = n.parse()?;
                pending = None;
                acks_seen += 1;
            }
        }
        if let Some(prev) = prev_next {
            assert_eq!(opened_at, Some(prev), "round {round}: next_seq went back");
        }

        let buf = Buffer::open(&dir, u64::MAX)?;
        let stored = buf.window(0, usize::MAX)?;
        let seqs: Vec<u64> = stored.iter().map(|(s, _)| *s).collect();
        for pair in seqs.windows(2) {
            assert_eq!(pair[1], pair[0] + 1, "round {round}: gap in stored seqs");
        }
        for (seq, v) in &stored {
            assert_eq!(*v, value(*seq), "round {round}: batch {seq} damaged");
        }
        // An ack the kill interrupted was applied entirely or not at all.
        if let Some(p) = pending {
            if !seqs.iter().any(|&s| s <= p) {
                confirmed = p;
            }
        }
        assert!(
            seqs.iter().all(|&s| s > confirmed),
            "round {round}: acked batch came back"
        );
        let last = *reported.last().ok_or("nothing reported")?;
        let want: Vec<u64> = reported
            .iter()
            .copied()
            .filter(|&s| s > confirmed)
            .collect();
        // Every reported batch above the ack is there, plus at most the one unreported append.
        let extra = seqs.last() == Some(&(last + 1));
        let kept = if extra {
            &seqs[..seqs.len() - 1]
        } else {
            &seqs[..]
        };
        assert_eq!(
            kept,
            &want[..],
            "round {round}: stored != reported above ack {confirmed}"
        );
        let stats = buf.stats();
        assert_eq!(stats.batches, seqs.len() as u64);
        assert_eq!(
            stats.bytes,
            stored.iter().map(|(_, v)| v.len() as u64).sum::<u64>()
        );
        let next = if extra { last + 2 } else { last + 1 };
        assert_eq!(stats.next_seq, next, "round {round}: next_seq after reopen");
        if extra {
            reported.push(last + 1);
        }
        prev_next = Some(stats.next_seq);
        drop(buf);
    }
    // The kills must have landed among acks for this test to mean anything.
    assert!(acks_seen > 0, "no ack happened");
    std::fs::remove_dir_all(&root).ok();
    Ok(())
}
