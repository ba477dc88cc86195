//! The collection thread: collects each fact kind at its period, gathers the snapshots of one
//! push interval into a Batch appended to the disk buffer, and makes the buffer durable every
//! flush interval. It never waits on the network: the session reads the buffer on its own.
//!
//! Collection instants are aligned to multiples of the period since the Unix epoch (as
//! Telegraf's `round_interval`), so kinds with the same period share one snapshot and a series
//! has evenly spaced timestamps across restarts and reconnects. A snapshot's time is its
//! scheduled instant; a round that is late by a whole period or more (suspend, overload) skips
//! to the latest instant instead of catching up with a burst.

use super::state::StateDir;
use super::Log;
use crate::buffer::Buffer;
use autofact_fbs::{Batch, Config, Health, Message, Periods, Snapshot};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The fact kinds, one per measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Every kind.
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

    /// This kind's period in `p`, in ms; 0 = disabled.
    pub fn period(self, p: &Periods) -> u32 {
        match self {
            Kind::Cpu => p.cpu_ms,
            Kind::Kernel => p.kernel_ms,
            Kind::Mem => p.mem_ms,
            Kind::Swap => p.swap_ms,
            Kind::System => p.system_ms,
            Kind::Net => p.net_ms,
            Kind::DiskIo => p.diskio_ms,
            Kind::Disk => p.disk_ms,
            Kind::Temp => p.temp_ms,
            Kind::Health => p.health_ms,
            Kind::Processes => p.processes_ms,
        }
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
    /// Every seq below this is durable (flushed).
    pub durable_next: AtomicU64,
    /// Batches lost because the buffer refused an append.
    pub append_failures: AtomicU64,
}

/// Makes everything appended so far durable and records up to where.
pub fn flush(buffer: &Buffer, shared: &Shared) -> Result<(), crate::buffer::BufferError> {
    let next = buffer.stats().next_seq;
    buffer.flush()?;
    shared.durable_next.fetch_max(next, Ordering::AcqRel);
    Ok(())
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
    /// Where batches go.
    pub buffer: Arc<Buffer>,
    /// Counters for the health fact.
    pub shared: Arc<Shared>,
    /// Where a received Config is persisted.
    pub state: StateDir,
    /// Pinged (never blocking) after each append, so the session sends without polling.
    pub notify: smol::channel::Sender<()>,
    /// Background flush interval.
    pub flush_every: Duration,
    /// Status lines.
    pub log: Log,
}

impl Scheduler {
    /// Starts the thread with the last known Config (`None`: collect nothing until one arrives).
    pub fn spawn(config: Option<Config>, parts: Parts) -> std::io::Result<Scheduler> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("autofact-collect".into())
            .spawn(move || Worker::new(config, parts).run(rx))?;
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
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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
    pending: Vec<Snapshot>,
    last_flush: Instant,
    collect_us: u64,
}

impl Worker {
    fn new(config: Option<Config>, parts: Parts) -> Worker {
        let mut w = Worker {
            config: None,
            parts,
            due: [None; Kind::ALL.len()],
            next_push: None,
            pending: Vec::new(),
            last_flush: Instant::now(),
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
        self.parts.buffer.set_cap(c.buffer_cap_bytes);
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
            let flush_at = self.last_flush + self.parts.flush_every;
            let mut wait = flush_at.saturating_duration_since(Instant::now());
            if let Some(n) = next {
                wait = wait.min(Duration::from_millis(n.saturating_sub(now)));
            }
            match rx.recv_timeout(wait) {
                Ok(Cmd::Config(c)) => {
                    if self.config != Some(c) {
                        if let Err(e) = self.parts.state.save_config(&c) {
                            self.parts
                                .log
                                .line(format_args!("{e} (the Config is applied anyway)"));
                        }
                        self.reschedule(c, now_ms());
                    }
                    continue;
                }
                Ok(Cmd::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.push();
                    self.flush();
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
            if self.last_flush.elapsed() >= self.parts.flush_every {
                self.flush();
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
        if !kinds.is_empty() {
            let t = Instant::now();
            self.parts.source.collect(&kinds, &mut snap);
            self.collect_us = t.elapsed().as_micros() as u64;
        }
        if health {
            let s = self.parts.buffer.stats();
            let sh = &self.parts.shared;
            snap.health = Some(Health {
                buffered_batches: s.batches,
                buffered_bytes: s.bytes,
                dropped_batches: s.dropped + sh.append_failures.load(Ordering::Relaxed),
                reconnects: sh.reconnects.load(Ordering::Relaxed),
                collect_us: self.collect_us,
                parse_errors: self.parts.source.parse_errors(),
                agent_version: env!("CARGO_PKG_VERSION").into(),
                ..Health::default()
            });
        }
        self.pending.push(snap);
    }

    /// The snapshots since the last push become one batch in the buffer.
    fn push(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let snapshots = std::mem::take(&mut self.pending);
        let res = self.parts.buffer.append(|seq| {
            autofact_fbs::encode(&Message::Batch(Batch {
                seq,
                snapshots,
                ..Batch::default()
            }))
        });
        match res {
            Ok(_) => {
                let _ = self.parts.notify.try_send(());
            }
            Err(e) => {
                self.parts
                    .shared
                    .append_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.parts.log.line(format_args!("batch lost: {e}"));
            }
        }
    }

    /// Appends and acks become durable; the buffer does no I/O when nothing changed, so an idle
    /// agent does not wear its SD card.
    fn flush(&mut self) {
        self.last_flush = Instant::now();
        if let Err(e) = flush(&self.parts.buffer, &self.parts.shared) {
            self.parts
                .log
                .line(format_args!("buffer flush failed: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment() {
        assert_eq!(align_after(0, 1000), 1000);
        assert_eq!(align_after(999, 1000), 1000);
        assert_eq!(align_after(1000, 1000), 2000);
        assert_eq!(align_after(12_345, 250), 12_500);
    }
}
