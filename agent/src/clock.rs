//! The agent's clocks and the facts about its boot: the wall clock (with a test-only offset),
//! `CLOCK_BOOTTIME`, whether the kernel considers the wall clock synchronised, the boot id, and
//! random numbers. Each snapshot, Hello and Batch is stamped from here (issue 15, issue 20).
//!
//! `AUTOFACT_TEST_CLOCK_OFFSET_NS` (test only, never set it in production): a signed number of
//! nanoseconds added to every wall-clock reading of the agent, read once at the first use. It
//! lets a test play a board whose clock is wrong before NTP (for example a new buffer made with
//! the clock set low).
//!
//! `AUTOFACT_TEST_CLOCK_FILE` (test only): a file holding `<offset ns> <synced|unsynced|unknown>`,
//! re-read at every reading and taking precedence over both, so a test can play a board whose
//! clock NTP sets while the agent runs.

use autofact_fbs::ClockSync;
use std::io::Read;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The test-only wall clock offset, in ns.
fn offset_ns() -> i64 {
    static OFFSET: OnceLock<i64> = OnceLock::new();
    *OFFSET.get_or_init(|| {
        std::env::var("AUTOFACT_TEST_CLOCK_OFFSET_NS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    })
}

/// The test-only clock file's offset and sync state, when `AUTOFACT_TEST_CLOCK_FILE` is set
/// and the file reads.
fn test_clock() -> Option<(i64, ClockSync)> {
    static PATH: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    let path = PATH
        .get_or_init(|| std::env::var_os("AUTOFACT_TEST_CLOCK_FILE").map(Into::into))
        .as_ref()?;
    let text = std::fs::read_to_string(path).ok()?;
    let mut words = text.split_whitespace();
    let offset = words.next()?.parse().ok()?;
    let sync = match words.next() {
        Some("synced") => ClockSync::Synced,
        Some("unsynced") => ClockSync::Unsynced,
        _ => ClockSync::Unknown,
    };
    Some((offset, sync))
}

/// The wall clock, unix nanoseconds (0 before 1970).
pub fn now_ns() -> i64 {
    let real = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
    let offset = test_clock().map_or_else(offset_ns, |(o, _)| o);
    real.saturating_add(offset).max(0)
}

/// The wall clock, unix milliseconds.
pub fn now_ms() -> u64 {
    u64::try_from(now_ns() / 1_000_000).unwrap_or(0)
}

/// `CLOCK_BOOTTIME` in nanoseconds (monotonic, counts suspend); 0 when unavailable.
// `time_t` and `long` are 32 bits on armv7 musl: widen before multiplying, or the product
// overflows after 2 s of uptime (the conversion is a no-op on 64-bit targets).
#[allow(clippy::useless_conversion)]
pub fn boottime_ns() -> i64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).map_or(0, |t| {
        i64::from(t.tv_sec()) * 1_000_000_000 + i64::from(t.tv_nsec())
    })
}

/// Whether the wall clock is synchronised. The kernel's answer (adjtimex `STA_UNSYNC`) needs a
/// raw syscall that this crate's `forbid(unsafe_code)` and its dependencies do not offer, so this
/// reads what systemd-timesyncd leaves behind when it has synchronised
/// (`/run/systemd/timesync/synchronized`, systemd 239+), and says `Unknown` otherwise.
pub fn clock_sync() -> ClockSync {
    if let Some((_, sync)) = test_clock() {
        return sync;
    }
    if std::path::Path::new("/run/systemd/timesync/synchronized").exists() {
        ClockSync::Synced
    } else {
        ClockSync::Unknown
    }
}

/// `/proc/sys/kernel/random/boot_id`, read once; empty when unreadable.
pub fn boot_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}

/// 64 random bits from the kernel (`/dev/urandom`); falls back to a mix of the clocks and the
/// pid, which still differs between starts.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    match read {
        Ok(()) => u64::from_ne_bytes(b),
        Err(_) => {
            let x = (now_ns() as u64) ^ (boottime_ns() as u64).rotate_left(32);
            x ^ u64::from(std::process::id()).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        }
    }
}

/// What identifies this machine (not the installation): `/etc/machine-id` and the board serial
/// from `/proc/cpuinfo` (Raspberry Pi). Both are world-readable. The DMI product UUID is left
/// out on purpose: only root can read it, so the same agent started once as root and once as
/// its service user would look like two installations (and be enrolled as a clone).
pub fn machine_ids(proc_root: &std::path::Path) -> Vec<String> {
    let mut ids = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/machine-id") {
        ids.push(t.trim().to_string());
    }
    if let Ok(t) = std::fs::read_to_string(proc_root.join("cpuinfo")) {
        if let Some(serial) = t
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == "Serial")
        {
            ids.push(serial.1.trim().to_string());
        }
    }
    ids
}
