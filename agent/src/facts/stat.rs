//! `/proc/stat`: cumulative cpu times per cpu, and the kernel counters (`ctxt`, `btime`,
//! `processes`, first number of `intr`). See proc(5).

use super::{num, slot, ParseError};
use autofact_fbs::Kernel;

/// One `cpu` line, in USER_HZ ticks. Fields a kernel does not print read as 0:
/// `steal` appeared in 2.6.11, `guest` in 2.6.24, `guest_nice` in 2.6.33.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// `None` for the aggregate `cpu` line, `Some(n)` for `cpuN`.
    pub id: Option<u32>,
    /// Time in user mode; includes `guest`.
    pub user: u64,
    /// Time in user mode at low priority; includes `guest_nice`.
    pub nice: u64,
    /// Time in system mode.
    pub system: u64,
    /// Idle time.
    pub idle: u64,
    /// Waiting for I/O.
    pub iowait: u64,
    /// Servicing interrupts.
    pub irq: u64,
    /// Servicing softirqs.
    pub softirq: u64,
    /// Stolen by the hypervisor.
    pub steal: u64,
    /// Running a guest.
    pub guest: u64,
    /// Running a niced guest.
    pub guest_nice: u64,
}

impl CpuTimes {
    /// The ten values in the kernel's column order (user, nice, system, idle, iowait, irq,
    /// softirq, steal, guest, guest_nice); columns an old kernel lacks are 0.
    pub fn from_columns(id: Option<u32>, v: [u64; 10]) -> CpuTimes {
        CpuTimes {
            id,
            user: v[0],
            nice: v[1],
            system: v[2],
            idle: v[3],
            iowait: v[4],
            irq: v[5],
            softirq: v[6],
            steal: v[7],
            guest: v[8],
            guest_nice: v[9],
        }
    }
}

/// The parts of `/proc/stat` the agent reports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stat {
    /// The aggregate `cpu` line first (when present), then `cpuN` in file order.
    pub cpus: Vec<CpuTimes>,
    /// `ctxt`: context switches since boot.
    pub ctxt: Option<u64>,
    /// `btime`: boot time, unix seconds.
    pub btime: Option<u64>,
    /// `processes`: forks since boot.
    pub processes: Option<u64>,
    /// First number of `intr`: interrupts since boot.
    pub intr: Option<u64>,
}

impl Stat {
    /// The `kernel` fact, when all four counters are present.
    pub fn kernel(&self) -> Option<Kernel> {
        Some(Kernel {
            boot_time: self.btime?,
            context_switches: self.ctxt?,
            interrupts: self.intr?,
            processes_forked: self.processes?,
            ..Default::default()
        })
    }

    /// Number of `cpuN` lines (online cpus).
    pub fn n_cpus(&self) -> u32 {
        let n = self.cpus.iter().filter(|c| c.id.is_some()).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

/// Parses the text of `/proc/stat`.
pub fn parse(s: &str) -> Result<Stat, ParseError> {
    let mut st = Stat::default();
    parse_into(s, &mut st)?;
    Ok(st)
}

/// Parses into `st`, reusing its `cpus` allocation (the collector calls this every round).
pub fn parse_into(s: &str, st: &mut Stat) -> Result<(), ParseError> {
    st.ctxt = None;
    st.btime = None;
    st.processes = None;
    st.intr = None;
    let mut n = 0;
    for (i, line) in s.lines().enumerate() {
        let lineno = i + 1;
        let mut toks = line.split_ascii_whitespace();
        let Some(key) = toks.next() else { continue };
        if let Some(rest) = key.strip_prefix("cpu") {
            let id = if rest.is_empty() {
                None
            } else {
                match rest.parse::<u32>() {
                    Ok(id) => Some(id),
                    Err(_) => return Err(ParseError::new(lineno, format!("bad cpu name {key:?}"))),
                }
            };
            let c = slot(&mut st.cpus, n);
            *c = parse_cpu(id, toks, lineno)?;
            n += 1;
            continue;
        }
        let target = match key {
            "ctxt" => &mut st.ctxt,
            "btime" => &mut st.btime,
            "processes" => &mut st.processes,
            "intr" => &mut st.intr,
            _ => continue,
        };
        *target = Some(num(toks.next(), lineno, key)?);
    }
    st.cpus.truncate(n);
    if n == 0 {
        return Err(ParseError::new(0, "no cpu lines"));
    }
    Ok(())
}

/// The values after a `cpu`/`cpuN` key: 7 to 10 of them depending on the kernel. Later
/// kernels may append more; those are ignored.
fn parse_cpu<'a>(
    id: Option<u32>,
    toks: impl Iterator<Item = &'a str>,
    lineno: usize,
) -> Result<CpuTimes, ParseError> {
    let mut v = [0u64; 10];
    let mut count = 0;
    for t in toks {
        if count < v.len() {
            v[count] = num(Some(t), lineno, "cpu time")?;
        }
        count += 1;
    }
    if count < 7 {
        return Err(ParseError::new(
            lineno,
            format!("cpu line has {count} values, expected 7 to 10"),
        ));
    }
    Ok(CpuTimes::from_columns(id, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_value_lines_read_missing_fields_as_zero() {
        let st = parse("cpu  1 2 3 4 5 6 7\ncpu0 1 2 3 4 5 6 7\nbtime 9\n").expect("parses");
        assert_eq!(st.cpus.len(), 2);
        assert_eq!(st.cpus[0].id, None);
        assert_eq!(st.cpus[1].id, Some(0));
        assert_eq!(st.cpus[1].softirq, 7);
        assert_eq!(st.cpus[1].steal, 0);
        assert_eq!(st.btime, Some(9));
        assert_eq!(st.kernel(), None);
        assert_eq!(st.n_cpus(), 1);
    }

    #[test]
    fn short_cpu_line_is_an_error_with_its_line() {
        let e = parse("cpu  1 2 3 4 5 6 7\ncpu0 1 2 3\n").expect_err("must fail");
        assert_eq!(e.line, 2);
    }

    #[test]
    fn bad_number_is_an_error() {
        let e = parse("cpu  1 2 3 4 5 6 7\nctxt x\n").expect_err("must fail");
        assert_eq!(e.line, 2);
        assert!(e.what.contains("ctxt"), "{e}");
    }
}
