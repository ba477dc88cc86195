//! Log lines on stderr with a UTC timestamp; per-batch lines on stdout. A global level set once
//! by `main` (`--quiet`, `--verbose`) so that every module can log without carrying a handle.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// No per-batch lines.
pub const QUIET: u8 = 0;
/// Normal: connection events, one line per batch.
pub const INFO: u8 = 1;
/// Also the points themselves.
pub const DEBUG: u8 = 2;

static LEVEL: AtomicU8 = AtomicU8::new(INFO);

/// Sets the global level.
pub fn set_level(level: u8) {
    LEVEL.store(level, Ordering::Relaxed);
}

/// True when lines of `level` are printed.
pub fn enabled(level: u8) -> bool {
    LEVEL.load(Ordering::Relaxed) >= level
}

/// Unix seconds now (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for unix seconds (Howard Hinnant's civil-from-days).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Writes one log line to stderr.
pub fn line(level: &str, msg: std::fmt::Arguments<'_>) {
    eprintln!("{} {level} {msg}", rfc3339(unix_now()));
}

/// Rejection lines per second before the rest are only counted: a scanner or a fleet with a
/// wrong token must not bury the log (the metrics still count every rejection).
pub const REJECT_LINES_PER_SEC: u64 = 20;

/// A per-second line budget, lock-free.
pub struct RateLimit {
    per_sec: u64,
    window: AtomicU64,
    in_window: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimit {
    /// A budget of `per_sec` lines per second.
    pub const fn new(per_sec: u64) -> RateLimit {
        RateLimit {
            per_sec,
            window: AtomicU64::new(0),
            in_window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// At unix second `now`: whether this line may be written, and how many lines were
    /// suppressed in earlier seconds and not yet reported (reported once, by the first line
    /// of a new second).
    pub fn admit(&self, now: u64) -> (bool, u64) {
        let mut report = 0;
        let w = self.window.load(Ordering::Relaxed);
        if w != now
            && self
                .window
                .compare_exchange(w, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.in_window.store(0, Ordering::Relaxed);
            report = self.suppressed.swap(0, Ordering::Relaxed);
        }
        if self.in_window.fetch_add(1, Ordering::Relaxed) < self.per_sec {
            (true, report)
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            (false, report)
        }
    }
}

static REJECTIONS: RateLimit = RateLimit::new(REJECT_LINES_PER_SEC);

/// Writes an info line unless more than [`REJECT_LINES_PER_SEC`] were written this second;
/// the first line of a later second says how many were suppressed.
pub fn limited(msg: std::fmt::Arguments<'_>) {
    let (write, suppressed) = REJECTIONS.admit(unix_now());
    if suppressed > 0 {
        line(
            "INFO",
            format_args!("{suppressed} more rejection lines suppressed (counted in /metrics)"),
        );
    }
    if write {
        line("INFO", msg);
    }
}

/// Logs a rejection, rate-limited (see [`limited`]).
#[macro_export]
macro_rules! info_limited {
    ($($a:tt)*) => { $crate::log::limited(format_args!($($a)*)) };
}

/// Logs an event (connections, rejections, reloads); `--quiet` only silences per-batch lines.
#[macro_export]
macro_rules! info {
    ($($a:tt)*) => { $crate::log::line("INFO", format_args!($($a)*)) };
}

/// Logs a warning (always printed).
#[macro_export]
macro_rules! warn {
    ($($a:tt)*) => { $crate::log::line("WARN", format_args!($($a)*)) };
}

#[cfg(test)]
mod tests {
    #[test]
    fn rate_limit_admits_the_budget_then_reports_the_rest_once() {
        let r = super::RateLimit::new(3);
        let admitted: Vec<bool> = (0..5).map(|_| r.admit(100).0).collect();
        assert_eq!(admitted, vec![true, true, true, false, false]);
        assert_eq!(r.admit(101), (true, 2), "two suppressed in second 100");
        assert_eq!(r.admit(101), (true, 0), "reported once");
        assert_eq!(r.admit(101), (true, 0));
        assert_eq!(r.admit(101), (false, 0));
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_764_329_829), "2025-11-28T11:37:09Z");
    }
}
