//! `/proc/meminfo`: memory and swap, in bytes, with Telegraf/gopsutil's derived values.
//!
//! - `cached` is `Cached + SReclaimable` (gopsutil adds the reclaimable slab to the page cache);
//! - `used` is `total - free - buffers - cached`, saturating at 0;
//! - `available` is `MemAvailable`, or on kernels before 3.14 that lack it, the estimate
//!   `free + buffers + cached`.
//! - the rest of Telegraf's Linux `mem` fields are the kernel's keys as they are (bytes; the
//!   `HugePages_*` counts are counts), 0 when a kernel lacks the key (`HighTotal` exists only
//!   on 32-bit kernels with highmem, `WritebackTmp` since 2.6.26, ...).

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
    /// The rest of Telegraf's `mem` fields, by Telegraf's name; filled straight from their key.
    pub extra: Extra,
}

/// `/proc/meminfo` keys Telegraf reports as they are (proc(5) describes each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extra {
    /// CommitLimit
    pub commit_limit: u64,
    /// Committed_AS
    pub committed_as: u64,
    /// Dirty
    pub dirty: u64,
    /// HighFree
    pub high_free: u64,
    /// HighTotal
    pub high_total: u64,
    /// HugePages_Free (a count)
    pub huge_pages_free: u64,
    /// Hugepagesize
    pub huge_page_size: u64,
    /// HugePages_Total (a count)
    pub huge_pages_total: u64,
    /// LowFree
    pub low_free: u64,
    /// LowTotal
    pub low_total: u64,
    /// Mapped
    pub mapped: u64,
    /// PageTables
    pub page_tables: u64,
    /// SUnreclaim
    pub sunreclaim: u64,
    /// SwapCached
    pub swap_cached: u64,
    /// VmallocChunk
    pub vmalloc_chunk: u64,
    /// VmallocTotal
    pub vmalloc_total: u64,
    /// VmallocUsed
    pub vmalloc_used: u64,
    /// Writeback
    pub write_back: u64,
    /// WritebackTmp
    pub write_back_tmp: u64,
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
            commit_limit: self.extra.commit_limit,
            committed_as: self.extra.committed_as,
            dirty: self.extra.dirty,
            high_free: self.extra.high_free,
            high_total: self.extra.high_total,
            huge_pages_free: self.extra.huge_pages_free,
            huge_page_size: self.extra.huge_page_size,
            huge_pages_total: self.extra.huge_pages_total,
            low_free: self.extra.low_free,
            low_total: self.extra.low_total,
            mapped: self.extra.mapped,
            page_tables: self.extra.page_tables,
            // gopsutil reports SReclaimable on its own too (besides adding it to cached).
            sreclaimable: self.s_reclaimable,
            sunreclaim: self.extra.sunreclaim,
            swap_cached: self.extra.swap_cached,
            swap_free: self.swap_free,
            swap_total: self.swap_total,
            vmalloc_chunk: self.extra.vmalloc_chunk,
            vmalloc_total: self.extra.vmalloc_total,
            vmalloc_used: self.extra.vmalloc_used,
            write_back: self.extra.write_back,
            write_back_tmp: self.extra.write_back_tmp,
        }
    }

    /// Telegraf's `swap` fields.
    pub fn swap(&self) -> Swap {
        Swap {
            total: self.swap_total,
            used: self.swap_total.saturating_sub(self.swap_free),
            free: self.swap_free,
            // From /proc/vmstat, filled by the caller.
            sin: None,
            sout: None,
        }
    }
}

/// Parses the text of `/proc/meminfo`. `MemTotal` and `MemFree` are required; every other key
/// reads as 0 when absent (`MemAvailable` as `None`). Unknown keys are ignored.
pub fn parse(s: &str) -> Result<MemInfo, ParseError> {
    let mut m = MemInfo::default();
    let (mut total, mut free) = (false, false);
    // The number of keys matched below; a kernel prints each once.
    const KEYS: usize = 12 + 19;
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
            "CommitLimit" => &mut m.extra.commit_limit,
            "Committed_AS" => &mut m.extra.committed_as,
            "Dirty" => &mut m.extra.dirty,
            "HighFree" => &mut m.extra.high_free,
            "HighTotal" => &mut m.extra.high_total,
            "HugePages_Free" => &mut m.extra.huge_pages_free,
            "Hugepagesize" => &mut m.extra.huge_page_size,
            "HugePages_Total" => &mut m.extra.huge_pages_total,
            "LowFree" => &mut m.extra.low_free,
            "LowTotal" => &mut m.extra.low_total,
            "Mapped" => &mut m.extra.mapped,
            "PageTables" => &mut m.extra.page_tables,
            "SUnreclaim" => &mut m.extra.sunreclaim,
            "SwapCached" => &mut m.extra.swap_cached,
            "VmallocChunk" => &mut m.extra.vmalloc_chunk,
            "VmallocTotal" => &mut m.extra.vmalloc_total,
            "VmallocUsed" => &mut m.extra.vmalloc_used,
            "Writeback" => &mut m.extra.write_back,
            "WritebackTmp" => &mut m.extra.write_back_tmp,
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
