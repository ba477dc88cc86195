//! Reconnect delays: exponential backoff with jitter, so a fleet that lost its factory at the
//! same instant does not come back in lockstep.

use std::time::Duration;

/// Delays that double from `base` up to `max`, each drawn uniformly from its upper half.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    next: Duration,
    rng: u64,
}

impl Backoff {
    /// Starts at `base`.
    pub fn new(base: Duration, max: Duration) -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ (u64::from(std::process::id()) << 32);
        Backoff {
            base,
            max: max.max(base),
            next: base,
            // xorshift must not start at zero.
            rng: seed | 1,
        }
    }

    /// The delay before the next attempt; doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        self.jitter(d)
    }

    /// After a refusal the factory will refuse again: wait the longest delay.
    pub fn long(&mut self) -> Duration {
        self.next = self.max;
        self.next_delay()
    }

    /// A session was established: start again from `base`.
    pub fn reset(&mut self) {
        self.next = self.base;
    }

    /// Uniform in [d/2, d].
    fn jitter(&mut self, d: Duration) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = d / 2;
        let span = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        let extra = if span == 0 { 0 } else { self.rng % (span + 1) };
        half + Duration::from_nanos(extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_within_jitter() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(1), s(60));
        let mut nominal = s(1);
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(
                d >= nominal / 2 && d <= nominal,
                "{d:?} outside {nominal:?}"
            );
            nominal = (nominal * 2).min(s(60));
        }
        b.reset();
        assert!(b.next_delay() <= s(1));
        assert!(b.long() >= s(30));
    }
}
