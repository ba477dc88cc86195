//! `/proc/vmstat`: the swap-in and swap-out page counters behind Telegraf's `swap` `in`/`out`.
//!
//! `pswpin` and `pswpout` count pages since boot (proc(5)); Telegraf (gopsutil) reports them
//! times 4 KiB. We multiply by the kernel's page size instead, which is the same on the 4 KiB
//! kernels of Pi OS and x86_64, and right on a 16 KiB-page kernel (Pi 5's default) where a
//! fixed 4 KiB would under-report by four.

use super::ParseError;

/// The `/proc/vmstat` counters the agent uses, in pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VmStat {
    /// `pswpin`: pages swapped in since boot.
    pub pswpin: u64,
    /// `pswpout`: pages swapped out since boot.
    pub pswpout: u64,
}

/// Parses the text of `/proc/vmstat` (`name value` lines). Both keys are required: every kernel
/// since 2.6 prints them, even without swap configured.
pub fn parse(s: &str) -> Result<VmStat, ParseError> {
    let mut v = VmStat::default();
    let (mut sin, mut sout) = (false, false);
    for (i, line) in s.lines().enumerate() {
        let mut toks = line.split_ascii_whitespace();
        let (Some(key), value) = (toks.next(), toks.next()) else {
            continue;
        };
        let target = match key {
            "pswpin" => {
                sin = true;
                &mut v.pswpin
            }
            "pswpout" => {
                sout = true;
                &mut v.pswpout
            }
            _ => continue,
        };
        *target = super::num(value, i + 1, key)?;
        if sin && sout {
            // The two are near the top; the other ~170 lines would only be skipped.
            break;
        }
    }
    if !(sin && sout) {
        return Err(ParseError::new(0, "no pswpin/pswpout lines"));
    }
    Ok(v)
}

/// The kernel's page size in bytes (4096 when it cannot be asked).
pub fn page_size() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
        Ok(Some(n)) if n > 0 => n as u64,
        _ => 4096,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_counters_are_required() {
        let v = parse("nr_free_pages 5\npswpin 7\npswpout 9\n").expect("parses");
        assert_eq!((v.pswpin, v.pswpout), (7, 9));
        assert!(parse("pswpin 7\n").is_err());
        assert_eq!(parse("pswpin x\npswpout 1\n").expect_err("bad").line, 1);
    }
}
