//! `/proc/meminfo`: memory and swap, in bytes, with Telegraf/gopsutil's derived values.
//!
//! - `cached` is `Cached + SReclaimable` (gopsutil adds the reclaimable slab to the page cache);
//! - `used` is `total - free - buffers - cached`, saturating at 0;
//! - `available` is `MemAvailable`, or on kernels before 3.14 that lack it, the estimate
//!   `free + buffers + cached`.

use super::ParseError;
use autofact_fbs::{Mem, Swap};

/// The `/proc/meminfo` values the agent uses, converted to bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemInfo {
    /// MemTotal
    pub mem_total: u64,
    /// MemFree
    pub mem_free: u64,
    /// MemAvailable; `None` before Linux 3.14.
    pub mem_available: Option<u64>,
    /// Buffers
    pub buffers: u64,
    /// Cached
    pub cached: u64,
    /// SReclaimable (0 before 2.6.19)
    pub s_reclaimable: u64,
    /// Active
    pub active: u64,
    /// Inactive
    pub inactive: u64,
    /// Slab
    pub slab: u64,
    /// Shmem (0 before 2.6.32)
    pub shmem: u64,
    /// SwapTotal
    pub swap_total: u64,
    /// SwapFree
    pub swap_free: u64,
}

impl MemInfo {
    /// Telegraf's `mem` fields.
    pub fn mem(&self) -> Mem {
        let cached = self.cached.saturating_add(self.s_reclaimable);
        let used = self
            .mem_total
            .saturating_sub(self.mem_free)
            .saturating_sub(self.buffers)
            .saturating_sub(cached);
        let available = self.mem_available.unwrap_or_else(|| {
            self.mem_free
                .saturating_add(self.buffers)
                .saturating_add(cached)
        });
        Mem {
            total: self.mem_total,
            available,
            used,
            free: self.mem_free,
            cached,
            buffered: self.buffers,
            active: self.active,
            inactive: self.inactive,
            slab: self.slab,
            shared: self.shmem,
        }
    }

    /// Telegraf's `swap` fields.
    pub fn swap(&self) -> Swap {
        Swap {
            total: self.swap_total,
            used: self.swap_total.saturating_sub(self.swap_free),
            free: self.swap_free,
        }
    }
}

/// Parses the text of `/proc/meminfo`. `MemTotal` and `MemFree` are required; every other key
/// reads as 0 when absent (`MemAvailable` as `None`). Unknown keys are ignored.
pub fn parse(s: &str) -> Result<MemInfo, ParseError> {
    let mut m = MemInfo::default();
    let (mut total, mut free) = (false, false);
    // The number of keys matched below; a kernel prints each once.
    const KEYS: usize = 12;
    let mut found = 0;
    for (i, line) in s.lines().enumerate() {
        let lineno = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, rest)) = line.split_once(':') else {
            return Err(ParseError::new(lineno, "no ':' after the key"));
        };
        let target = match key {
            "MemTotal" => {
                total = true;
                &mut m.mem_total
            }
            "MemFree" => {
                free = true;
                &mut m.mem_free
            }
            "MemAvailable" => m.mem_available.insert(0),
            "Buffers" => &mut m.buffers,
            "Cached" => &mut m.cached,
            "SReclaimable" => &mut m.s_reclaimable,
            "Active" => &mut m.active,
            "Inactive" => &mut m.inactive,
            "Slab" => &mut m.slab,
            "Shmem" => &mut m.shmem,
            "SwapTotal" => &mut m.swap_total,
            "SwapFree" => &mut m.swap_free,
            _ => continue,
        };
        *target = value(rest, lineno, key)?;
        found += 1;
        if found == KEYS {
            // Every key we use is in; the remaining ~30 lines would only be scanned and skipped.
            break;
        }
    }
    if !total {
        return Err(ParseError::new(0, "no MemTotal line"));
    }
    if !free {
        return Err(ParseError::new(0, "no MemFree line"));
    }
    Ok(m)
}

/// `"   1234 kB"` -> 1234 * 1024; a number without unit is taken as is.
fn value(rest: &str, lineno: usize, key: &str) -> Result<u64, ParseError> {
    let mut toks = rest.split_ascii_whitespace();
    let n: u64 = match toks.next().map(str::parse) {
        Some(Ok(n)) => n,
        _ => {
            return Err(ParseError::new(
                lineno,
                format!("{key}: not an unsigned integer"),
            ))
        }
    };
    match toks.next() {
        None => Ok(n),
        Some("kB") => Ok(n.saturating_mul(1024)),
        Some(u) => Err(ParseError::new(
            lineno,
            format!("{key}: unknown unit {u:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_mem_available_the_estimate_is_free_buffers_cached() {
        let m = parse(
            "MemTotal: 100 kB\nMemFree: 10 kB\nBuffers: 5 kB\nCached: 20 kB\nSReclaimable: 3 kB\n",
        )
        .expect("parses");
        let mem = m.mem();
        assert_eq!(mem.cached, 23 * 1024);
        assert_eq!(mem.available, 38 * 1024);
        assert_eq!(mem.used, 62 * 1024);
    }

    #[test]
    fn used_saturates() {
        let m = parse("MemTotal: 10 kB\nMemFree: 20 kB\n").expect("parses");
        assert_eq!(m.mem().used, 0);
    }

    #[test]
    fn missing_total_is_an_error() {
        assert!(parse("MemFree: 20 kB\n").is_err());
        assert_eq!(parse("MemTotal 20 kB\n").expect_err("no colon").line, 1);
    }
}
