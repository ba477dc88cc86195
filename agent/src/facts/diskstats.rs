//! `/proc/diskstats`: per block device I/O counters, as Telegraf's `diskio` fields.
//!
//! Each line is `major minor name` and then 11 counters (before 4.18: 14 columns), 15 (4.18+,
//! discard counters: 18 columns) or 17 (5.5+, flush counters: 20 columns). 2.6 kernels printed
//! partitions with only 4 counters (7 columns: reads, sectors read, writes, sectors written);
//! those are read too, the missing counters as 0. Sectors are 512 bytes whatever the device's
//! block size (Documentation/admin-guide/iostats.rst).

use super::{num, slot, ParseError};
use autofact_fbs::DiskIo;

/// Every device line.
pub fn parse(s: &str) -> Result<Vec<DiskIo>, ParseError> {
    let mut out = Vec::new();
    let n = parse_into(s, &mut out)?;
    out.truncate(n);
    Ok(out)
}

/// Fills `out[..n]` in place (reusing the `name` strings) and returns `n`; elements past `n`
/// are left as they were.
pub fn parse_into(s: &str, out: &mut Vec<DiskIo>) -> Result<usize, ParseError> {
    let mut n = 0;
    for (i, line) in s.lines().enumerate() {
        let lineno = i + 1;
        let mut toks = line.split_ascii_whitespace();
        let Some(major) = toks.next() else { continue };
        num(Some(major), lineno, "major")?;
        num(toks.next(), lineno, "minor")?;
        let Some(name) = toks.next() else {
            return Err(ParseError::new(lineno, "missing device name"));
        };
        let mut v = [0u64; 17];
        let mut count = 0;
        for t in toks {
            if count < v.len() {
                v[count] = num(Some(t), lineno, "counter")?;
            }
            count += 1;
        }
        let e = slot(out, n);
        e.name.clear();
        e.name.push_str(name);
        match count {
            11 | 15 | 17 => {
                e.reads = v[0];
                e.merged_reads = v[1];
                e.read_bytes = v[2].saturating_mul(512);
                e.read_time = v[3];
                e.writes = v[4];
                e.merged_writes = v[5];
                e.write_bytes = v[6].saturating_mul(512);
                e.write_time = v[7];
                e.iops_in_progress = v[8];
                e.io_time = v[9];
                e.weighted_io_time = v[10];
            }
            4 => {
                *e = DiskIo {
                    name: std::mem::take(&mut e.name),
                    reads: v[0],
                    read_bytes: v[1].saturating_mul(512),
                    writes: v[2],
                    write_bytes: v[3].saturating_mul(512),
                    ..DiskIo::default()
                };
            }
            c => {
                return Err(ParseError::new(
                    lineno,
                    format!("{} columns, expected 7, 14, 18 or 20", c + 3),
                ))
            }
        }
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_counts() {
        let v = parse(
            "   8       0 sda 1 2 3 4 5 6 7 8 9 10 11\n   8       1 sda1 1 2 3 4\n 179 0 mmcblk0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n",
        )
        .expect("parses");
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].read_bytes, 3 * 512);
        assert_eq!(v[0].weighted_io_time, 11);
        assert_eq!(v[1].write_bytes, 4 * 512);
        assert_eq!(v[1].io_time, 0);
        assert_eq!(v[2].name, "mmcblk0");
        assert!(parse("8 0 sda 1 2 3 4 5\n").is_err());
    }
}
