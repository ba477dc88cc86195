//! The collection thread: collects each fact kind at its period and hands each snapshot to the
//! store thread ([`super::queue`]), which puts it on disk at once; at each push instant it asks
//! the store thread to gather the pending snapshots into batches. It never waits on the disk
//! or on the network: the store thread writes, the session reads the queue on its own.
//!
//! Collection instants are aligned to multiples of the period since the Unix epoch (as
//! Telegraf's `round_interval`), so kinds with the same period share one snapshot and a series
//! has evenly spaced timestamps across restarts and reconnects. A snapshot's time is its
//! scheduled instant; a round that is late by a whole period or more (suspend, overload) skips
//! to the latest instant instead of catching up with a burst.

use super::queue::{self, Item, Queue, Spool, StoreTiming};
use super::state::StateDir;
use super::Log;
use crate::clock;
use crate::facts::Kinds;
use autofact_fbs::{Config, FactKind, Health, Periods, Snapshot, FACT_KINDS};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The fact kinds, one per measurement: the indexes of [`autofact_fbs::FACT_KINDS`] (the
/// table the Config's periods, the collector's [`Kinds`] bits and the factory's keys come
/// from), in its order; `kinds_follow_the_fact_table` checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// `cpu`
    Cpu,
    /// `kernel`
    Kernel,
    /// `mem`
    Mem,
    /// `swap`
    Swap,
    /// `system`
    System,
    /// `net`
    Net,
    /// `diskio`
    DiskIo,
    /// `disk`
    Disk,
    /// `temp`
    Temp,
    /// `autofact`, the agent's own health; filled by the scheduler, not by [`Collect`].
    Health,
    /// `processes`
    Processes,
}

impl Kind {
    /// Every kind, in [`autofact_fbs::FACT_KINDS`] order.
    pub const ALL: [Kind; 11] = [
        Kind::Cpu,
        Kind::Kernel,
        Kind::Mem,
        Kind::Swap,
        Kind::System,
        Kind::Net,
        Kind::DiskIo,
        Kind::Disk,
        Kind::Temp,
        Kind::Health,
        Kind::Processes,
    ];

    /// Its row of the fact table.
    pub fn fact(self) -> &'static FactKind {
        &FACT_KINDS[self as usize]
    }

    /// This kind's key in the Config's `periods` (`cpu_ms`, ...).
    pub fn period_key(self) -> &'static str {
        self.fact().period_key
    }

    /// This kind's period in `p`, in ms; 0 = disabled.
    pub fn period(self, p: &Periods) -> u32 {
        p.slots()[self as usize]
    }

    /// Its bit in the collector's set.
    pub fn bit(self) -> Kinds {
        Kinds::of_index(self as usize)
    }
}

/// One collection round for a set of kinds. The real implementation reads `/proc` and `/sys`.
pub trait Collect: Send + 'static {
    /// Fills `snap` with the kinds in `kinds` (never [`Kind::Health`]); a kind that cannot be
    /// read is left out and counted in [`Collect::parse_errors`].
    fn collect(&mut self, kinds: &[Kind], snap: &mut Snapshot);
    /// Malformed or unreadable files met so far.
    fn parse_errors(&self) -> u64;
}

/// Counters shared between the session and the collection thread.
#[derive(Debug, Default)]
pub struct Shared {
    /// Sessions established after the first one.
    pub reconnects: AtomicU64,
}

enum Cmd {
    Config(Config),
    Stop,
}

/// Handle on the collection thread.
#[derive(Debug)]
pub struct Scheduler {
    tx: mpsc::Sender<Cmd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the collection thread works with.
pub struct Parts {
    /// The collectors.
    pub source: Box<dyn Collect>,
    /// Where snapshots go (through the store thread this scheduler starts).
    pub queue: Arc<Queue>,
    /// Counters for the health fact.
    pub shared: Arc<Shared>,
    /// Where a received Config is persisted.
    pub state: StateDir,
    /// Pinged (never blocking) after each new batch, so the session sends without polling.
    pub notify: smol::channel::Sender<()>,
    /// Background flush interval.
    pub flush_every: Duration,
    /// Status lines.
    pub log: Log,
    /// Test seam (see `Timing::slow_disk`).
    pub slow_disk: Duration,
}

impl Scheduler {
    /// Starts the thread with the last known Config (`None`: collect nothing until one arrives).
    pub fn spawn(config: Option<Config>, parts: Parts) -> std::io::Result<Scheduler> {
        let (tx, rx) = mpsc::channel();
        let limits = config.map_or((0, crate::buffer::DEFAULT_CAP_BYTES), |c| {
            (c.max_message_bytes, c.buffer_cap_bytes)
        });
        let (spool, store) = queue::spawn_store(
            parts.queue.clone(),
            StoreTiming {
                flush_every: parts.flush_every,
                slow_disk: parts.slow_disk,
            },
            parts.notify.clone(),
            limits,
            parts.state.clone(),
        )?;
        let thread = std::thread::Builder::new()
            .name("autofact-collect".into())
            .spawn(move || Worker::new(config, parts, spool, store).run(rx))?;
        Ok(Scheduler {
            tx,
            thread: Some(thread),
        })
    }

    /// Applies a Config at once: changed periods are rescheduled, the buffer cap is set, and the
    /// Config is persisted for the next start.
    pub fn apply(&self, config: Config) {
        let _ = self.tx.send(Cmd::Config(config));
    }

    /// Stops collecting, turns what was collected since the last push into a final batch, and
    /// flushes the buffer. Idempotent.
    pub async fn stop(&mut self) -> Result<(), super::Error> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let _ = self.tx.send(Cmd::Stop);
        smol::unblock(move || thread.join())
            .await
            .map_err(|_| super::Error::Collector("panicked".into()))
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        // The thread ends when the channel closes; it is not joined here (no blocking in drop).
        let _ = self.tx.send(Cmd::Stop);
    }
}

fn now_ms() -> u64 {
    clock::now_ms()
}

/// The first multiple of `period` strictly after `now`.
fn align_after(now: u64, period: u64) -> u64 {
    (now / period + 1) * period
}

struct Worker {
    config: Option<Config>,
    parts: Parts,
    /// Next instant (unix ms) per kind, `None` when disabled.
    due: [Option<u64>; Kind::ALL.len()],
    next_push: Option<u64>,
    /// Snapshots collected since the last push (a push with none is skipped).
    unsealed: usize,
    spool: Spool,
    store: Option<std::thread::JoinHandle<()>>,
    collect_us: u64,
}

impl Worker {
    fn new(
        config: Option<Config>,
        parts: Parts,
        spool: Spool,
        store: std::thread::JoinHandle<()>,
    ) -> Worker {
        let mut w = Worker {
            config: None,
            parts,
            due: [None; Kind::ALL.len()],
            next_push: None,
            // Snapshots a killed agent left pending are gathered at the first push.
            unsealed: 1,
            spool,
            store: Some(store),
            collect_us: 0,
        };
        match config {
            Some(c) => w.reschedule(c, now_ms()),
            None => w.parts.log.line(
                "no Config received from the factory yet: collecting nothing until one arrives",
            ),
        }
        w
    }

    /// Applies `c`; only kinds whose period changed move, so a Config that changes one period
    /// does not disturb the others.
    fn reschedule(&mut self, c: Config, now: u64) {
        let old = self.config.map(|o| o.periods);
        for (i, kind) in Kind::ALL.iter().enumerate() {
            let p = u64::from(kind.period(&c.periods));
            let changed = old.is_none_or(|o| u64::from(kind.period(&o)) != p);
            if changed {
                self.due[i] = (p > 0).then(|| align_after(now, p));
            }
        }
        if self
            .config
            .is_none_or(|o| o.push_interval_ms != c.push_interval_ms)
        {
            let p = u64::from(c.push_interval_ms);
            self.next_push = (p > 0).then(|| align_after(now, p));
        }
        self.spool
            .send(Item::Limits(c.max_message_bytes, c.buffer_cap_bytes));
        self.config = Some(c);
    }

    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        loop {
            let now = now_ms();
            self.repair_clock_jump(now);
            let next = self
                .due
                .iter()
                .flatten()
                .chain(self.next_push.iter())
                .min()
                .copied();
            let mut wait = Duration::from_secs(3600);
            if let Some(n) = next {
                wait = wait.min(Duration::from_millis(n.saturating_sub(now)));
            }
            match rx.recv_timeout(wait) {
                Ok(Cmd::Config(c)) => {
                    if self.config != Some(c) {
                        // Persisted by the store thread: an fsync never delays collection (and
                        // a store thread stuck that long misses it; the factory sends it again
                        // at every connection).
                        self.spool.send(Item::SaveConfig(Box::new(c)));
                        self.reschedule(c, now_ms());
                    }
                    continue;
                }
                Ok(Cmd::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // The store thread gathers what is pending, flushes, and ends.
                    self.spool.send_wait(Item::Stop);
                    if let Some(t) = self.store.take() {
                        let _ = t.join();
                    }
                    return;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            let now = now_ms();
            self.collect_due(now);
            if self.next_push.is_some_and(|p| p <= now)
                || (self.config.is_some_and(|c| c.push_interval_ms == 0))
            {
                self.push();
                if let (Some(c), Some(_)) = (self.config, self.next_push) {
                    self.next_push = Some(align_after(now, u64::from(c.push_interval_ms)));
                }
            }
        }
    }

    /// After the wall clock moved back, instants far in the future would stall collection.
    fn repair_clock_jump(&mut self, now: u64) {
        let Some(c) = self.config else { return };
        for (i, kind) in Kind::ALL.iter().enumerate() {
            let p = u64::from(kind.period(&c.periods));
            if self.due[i].is_some_and(|d| d > now + p) {
                self.due[i] = Some(align_after(now, p));
            }
        }
        let p = u64::from(c.push_interval_ms);
        if self.next_push.is_some_and(|d| d > now + p) {
            self.next_push = Some(align_after(now, p));
        }
    }

    /// The shortest enabled period (ms), the most a round can be late without skipping.
    fn min_period_ms(&self, c: &Config) -> u64 {
        Kind::ALL
            .iter()
            .map(|k| u64::from(k.period(&c.periods)))
            .filter(|p| *p > 0)
            .min()
            .unwrap_or(0)
    }

    fn collect_due(&mut self, now: u64) {
        let Some(c) = self.config else { return };
        let mut kinds = Vec::new();
        let mut at = 0;
        let mut health = false;
        for (i, kind) in Kind::ALL.iter().enumerate() {
            let Some(d) = self.due[i] else { continue };
            if d > now {
                continue;
            }
            let p = u64::from(kind.period(&c.periods));
            // Late by a period or more: skip to the latest instant rather than replaying.
            let d = if now - d >= p { now - now % p } else { d };
            at = at.max(d);
            self.due[i] = Some(d + p);
            if *kind == Kind::Health {
                health = true;
            } else {
                kinds.push(*kind);
            }
        }
        if kinds.is_empty() && !health {
            return;
        }
        let mut snap = Snapshot {
            time_ns: i64::try_from(at).unwrap_or(i64::MAX / 1_000_000) * 1_000_000,
            ..Snapshot::default()
        };
        // The boottime of the scheduled instant that time_ns names, not of the moment this round
        // runs (a few ms later, more on a loaded board): the factory rebuilds a wrong clock's
        // times from it. A lateness beyond one period means the wall clock moved meanwhile
        // (NTP stepped it): then the round's own boottime is the better answer.
        let (wall, boot) = (clock::now_ns(), clock::boottime_ns());
        let late = wall.saturating_sub(snap.time_ns);
        let period_ns = i64::try_from(self.min_period_ms(&c)).unwrap_or(0) * 1_000_000;
        snap.boottime_ns = if (0..=period_ns).contains(&late) {
            boot - late
        } else {
            boot
        };
        if !kinds.is_empty() {
            let t = Instant::now();
            self.parts.source.collect(&kinds, &mut snap);
            self.collect_us = t.elapsed().as_micros() as u64;
        }
        if health {
            // Counters only: reading them never waits on the disk.
            let s = self.parts.queue.stats();
            let sh = &self.parts.shared;
            snap.health = Some(Health {
                buffered_batches: s.batches,
                buffered_bytes: s.bytes,
                dropped_batches: s.dropped_batches,
                reconnects: sh.reconnects.load(Ordering::Relaxed),
                collect_us: self.collect_us,
                parse_errors: self.parts.source.parse_errors(),
                buffer_state: s.state,
                memory_batches: s.memory_batches,
                dead_letter_batches: s.dead_letters,
                dropped_snapshots: s.dropped_snapshots,
                agent_version: env!("CARGO_PKG_VERSION").into(),
            });
        }
        snap.clock_sync = clock::clock_sync();
        snap.boot_id = clock::boot_id().to_string();
        self.unsealed += 1;
        self.spool.send(Item::Snap(Box::new(snap)));
    }

    /// The snapshots since the last push become batches (the store thread builds them).
    fn push(&mut self) {
        if self.unsealed == 0 {
            return;
        }
        self.unsealed = 0;
        self.spool.send(Item::Seal);
    }
}

#[cfg(test)]
mod tests {
    /// The scheduler's kinds, the collector's bits and the fact table are one list.
    #[test]
    fn kinds_follow_the_fact_table() {
        assert_eq!(Kind::ALL.len(), autofact_fbs::FACT_KINDS.len());
        for (i, k) in Kind::ALL.into_iter().enumerate() {
            assert_eq!(k as usize, i);
            let mut p = Periods::default();
            *p.slots_mut()[i] = 1234;
            assert_eq!(k.period(&p), 1234);
            assert_eq!(crate::facts::Kinds::enabled(&p), k.bit(), "{k:?}");
        }
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.fact().measurement).collect();
        assert_eq!(
            names,
            [
                "cpu",
                "kernel",
                "mem",
                "swap",
                "system",
                "net",
                "diskio",
                "disk",
                "temp",
                "autofact",
                "processes"
            ]
        );
        assert_eq!(crate::facts::Kinds::CPU, Kind::Cpu.bit());
        assert_eq!(crate::facts::Kinds::HEALTH, Kind::Health.bit());
        assert_eq!(crate::facts::Kinds::PROCESSES, Kind::Processes.bit());
    }

    use super::*;

    #[test]
    fn alignment() {
        assert_eq!(align_after(0, 1000), 1000);
        assert_eq!(align_after(999, 1000), 1000);
        assert_eq!(align_after(1000, 1000), 2000);
        assert_eq!(align_after(12_345, 250), 12_500);
    }
}
