//! Retry pacing: capped exponential backoff with jitter, and a sleep that shutdown interrupts.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// First retry delay.
pub(crate) const BASE: Duration = Duration::from_millis(100);
/// Longest delay we choose ourselves.
pub(crate) const CAP: Duration = Duration::from_secs(10);
/// Longest `Retry-After` we honour: a server asking for an hour is more likely wrong than right,
/// and the agents are waiting for their acks.
pub(crate) const RETRY_AFTER_CAP: Duration = Duration::from_secs(300);

/// The delay before retry number `attempt` (0 = the first retry): `BASE * 2^attempt` capped at
/// `CAP`, then "equal jitter" (a uniform pick in its upper half) so factories restarted together
/// do not hammer InfluxDB in lock step, yet never retry in a tight loop. A server's Retry-After is
/// a floor.
pub(crate) fn delay(attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    let exp = BASE
        .checked_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
        .unwrap_or(CAP)
        .min(CAP);
    let jittered = exp.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
    match retry_after {
        Some(ra) => jittered.max(ra.min(RETRY_AFTER_CAP)),
        None => jittered,
    }
}

/// A uniform pick in [0, 1). Std's `RandomState` is randomly keyed per instance, which is all
/// the randomness jitter needs, without another crate.
pub(crate) fn jitter() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The writer thread's stop flag: set by `Sink::shutdown`, it ends any backoff sleep at once.
#[derive(Debug, Default)]
pub(crate) struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    /// Asks the writer to stop retrying.
    pub(crate) fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }

    /// Has shutdown been asked for?
    pub(crate) fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps `d`, or less when stopped; returns true when stopped.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if *stopped {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            stopped = match self.wake.wait_timeout(stopped, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}
