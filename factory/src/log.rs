//! Log lines on stderr with a UTC timestamp; per-batch lines on stdout (gathered and written a
//! few times a second, see [`batch_line`]). A global level set once
//! by `main` (`--quiet`, `--verbose`) so that every module can log without carrying a handle.
//! Two limiters keep floods out of the log: [`RateLimit`] (lines per second, for rejections) and
//! [`Repeats`] (each reason once per window with a count of its repeats, for warnings that
//! recur: a store refusing lines, a full disk, a failing store; use [`warn_repeated!`](crate::warn_repeated)).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
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

/// Unix nanoseconds now (0 if the clock is before 1970).
pub fn unix_now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
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

/// Per-batch lines for stdout, gathered: thousands of sessions must not each take the stdout
/// lock and make a write(2) per batch. Appended under a short lock; written in one go when
/// past [`BATCH_LINES_FLUSH`] bytes, or by [`flush_batch_lines`] (every
/// [`BATCH_LINES_EVERY`] from the server, and at shutdown).
static BATCH_LINES: Mutex<String> = Mutex::new(String::new());

/// Held while gathered lines are written, so two flushes cannot swap their order.
static BATCH_LINES_WRITING: Mutex<()> = Mutex::new(());

/// Gathered bytes that make a flush at once.
pub const BATCH_LINES_FLUSH: usize = 32 * 1024;

/// How often the server flushes gathered lines.
pub const BATCH_LINES_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Gathers one per-batch line (printed by the next flush).
pub fn batch_line(msg: std::fmt::Arguments<'_>) {
    use std::fmt::Write;
    let full = {
        let mut b = BATCH_LINES.lock().unwrap_or_else(|p| p.into_inner());
        let _ = b.write_fmt(msg);
        b.push('\n');
        b.len() >= BATCH_LINES_FLUSH
    };
    if full {
        flush_batch_lines();
    }
}

/// Gathers text made of whole lines (the points at DEBUG).
pub fn batch_text(text: &str) {
    let full = {
        let mut b = BATCH_LINES.lock().unwrap_or_else(|p| p.into_inner());
        b.push_str(text);
        b.len() >= BATCH_LINES_FLUSH
    };
    if full {
        flush_batch_lines();
    }
}

/// Writes the gathered per-batch lines to stdout.
pub fn flush_batch_lines() {
    use std::io::Write;
    let _writing = BATCH_LINES_WRITING
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let text = std::mem::take(&mut *BATCH_LINES.lock().unwrap_or_else(|p| p.into_inner()));
    if text.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    // Nowhere to report a failed stdout; the lines are informational.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
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

/// Warnings that repeat for the same reason (a store refusing lines, a full disk, a poisoned
/// store): each reason is logged the first time, then at most once per window, that line saying
/// how many more happened since. Keys are the reason with its variable parts taken out (see
/// [`reason_key`]); at most [`Repeats::MAX_KEYS`] are remembered.
pub struct Repeats {
    window_secs: u64,
    seen: Mutex<BTreeMap<String, Seen>>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    /// When the last line for this key was written (unix seconds).
    logged_at: u64,
    /// Occurrences since, not logged yet.
    unlogged: u64,
}

impl Repeats {
    /// Reasons remembered at once; past that the oldest quiet ones are forgotten.
    pub const MAX_KEYS: usize = 1024;

    /// One line per reason per `window_secs`.
    pub const fn new(window_secs: u64) -> Repeats {
        Repeats {
            window_secs,
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// At unix second `now`, `n` occurrences of `key`: `Some(earlier)` when a line is due (the
    /// first for the key, or the first after the window), `earlier` being how many occurrences
    /// were only counted since the last line; `None` when this one is only counted.
    pub fn admit(&self, key: &str, n: u64, now: u64) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = seen.get_mut(key) {
            if now.saturating_sub(s.logged_at) < self.window_secs {
                s.unlogged += n;
                return None;
            }
            let earlier = s.unlogged;
            *s = Seen {
                logged_at: now,
                unlogged: 0,
            };
            return Some(earlier);
        }
        if seen.len() >= Repeats::MAX_KEYS {
            let window = self.window_secs;
            seen.retain(|_, s| now.saturating_sub(s.logged_at) < window || s.unlogged > 0);
            if seen.len() >= Repeats::MAX_KEYS {
                seen.clear();
            }
        }
        seen.insert(
            key.to_string(),
            Seen {
                logged_at: now,
                unlogged: 0,
            },
        );
        Some(0)
    }

    /// Writes `msg` as a warning when [`Repeats::admit`] says a line is due, with the count of
    /// the occurrences only counted since the last one.
    pub fn warn(&self, key: &str, n: u64, msg: std::fmt::Arguments<'_>) {
        if let Some(earlier) = self.admit(key, n, unix_now()) {
            if earlier > 0 {
                line(
                    "WARN",
                    format_args!(
                        "{msg} (and {earlier} more for this reason since its last line; one line per {} s)",
                        self.window_secs
                    ),
                );
            } else {
                line("WARN", msg);
            }
        }
    }
}

/// A reason with its variable parts taken out, so repeats of one cause share a key: quoted
/// text (`'...'`, the line a parser refused) becomes `'…'` and digits become `#`.
pub fn reason_key(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len().min(200));
    let mut in_quote = false;
    for c in reason.chars() {
        if c == '\'' {
            if !in_quote {
                out.push_str("'…'");
            }
            in_quote = !in_quote;
        } else if in_quote {
            continue;
        } else if c.is_ascii_digit() {
            if !out.ends_with('#') {
                out.push('#');
            }
        } else {
            out.push(c);
        }
        if out.len() >= 200 {
            break;
        }
    }
    out
}

/// Logs a warning at most once per window of `$repeats` ([`Repeats`]) for `$key`, counting `$n`
/// occurrences.
#[macro_export]
macro_rules! warn_repeated {
    ($repeats:expr, $key:expr, $n:expr, $($a:tt)*) => {
        $repeats.warn($key, $n, format_args!($($a)*))
    };
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
    fn repeats_log_each_reason_once_per_window_with_a_count() {
        let r = super::Repeats::new(60);
        assert_eq!(r.admit("full", 1, 1000), Some(0), "first line");
        assert_eq!(r.admit("full", 5, 1001), None);
        assert_eq!(
            r.admit("other", 1, 1002),
            Some(0),
            "another reason has its own line"
        );
        assert_eq!(r.admit("full", 1, 1059), None);
        assert_eq!(
            r.admit("full", 2, 1060),
            Some(6),
            "the window passed: 6 counted meanwhile"
        );
        assert_eq!(r.admit("full", 1, 1061), None);
        // Bounded: a flood of distinct keys never grows the map past its cap.
        for i in 0..(super::Repeats::MAX_KEYS as u64 * 2) {
            assert_eq!(r.admit(&format!("k{i}"), 1, 2000), Some(0));
        }
        assert!(r.seen.lock().expect("lock").len() <= super::Repeats::MAX_KEYS);
    }

    #[test]
    fn reason_keys_ignore_the_quoted_line_and_counts() {
        let a = super::reason_key(
            "partial write: unable to parse 'm v= 1': missing field value dropped=0",
        );
        let b = super::reason_key(
            "partial write: unable to parse 'cpu x= 22': missing field value dropped=0",
        );
        assert_eq!(a, b);
        assert_eq!(
            a,
            "partial write: unable to parse '…': missing field value dropped=#"
        );
        assert_ne!(
            super::reason_key("field type conflict: input field \"v\" on measurement \"m\""),
            super::reason_key("field type conflict: input field \"w\" on measurement \"m\"")
        );
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_764_329_829), "2025-11-28T11:37:09Z");
    }
}
