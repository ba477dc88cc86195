//! CPU usage percentages from two `/proc/stat` samples, computed exactly as Telegraf's `cpu`
//! input does (plugins/inputs/cpu/cpu.go over gopsutil's times).
//!
//! The kernel's `user` already contains `guest` and `nice` contains `guest_nice`, so:
//! - the total is `user + nice + system + idle + iowait + irq + softirq + steal`, guest time
//!   counted once (inside `user`/`nice`), never added again;
//! - `usage_user` is `(Δuser - Δguest) / Δtotal` and `usage_nice` is `(Δnice - Δguest_nice) / Δtotal`;
//! - `usage_guest` and `usage_guest_nice` are their own deltas over the same total.
//!
//! As in Telegraf, only the total decides whether an interval gives a point: a total that went
//! backwards (cpu hot-unplug and back, a wrap) or did not move gives none, so no NaN is ever
//! reported. A single counter that went backwards while the total moved on (iowait does on
//! tickless kernels, proc(5)) gives its negative share, as Telegraf reports it.

use super::stat::CpuTimes;
use autofact_fbs::Cpu;
use std::fmt::Write;

/// Fills the percentage fields of `out` from `prev` -> `cur`; returns false (and leaves `out`
/// unspecified) when the interval yields no point. `out.name` is not touched.
pub fn usage_into(prev: &CpuTimes, cur: &CpuTimes, out: &mut Cpu) -> bool {
    // Signed deltas: a single counter may go backwards (iowait does on tickless kernels,
    // proc(5)) and then contributes its negative share, as in Telegraf.
    let d = |p: u64, c: u64| i128::from(c) - i128::from(p);
    let user = d(prev.user, cur.user);
    let nice = d(prev.nice, cur.nice);
    let system = d(prev.system, cur.system);
    let idle = d(prev.idle, cur.idle);
    let iowait = d(prev.iowait, cur.iowait);
    let irq = d(prev.irq, cur.irq);
    let softirq = d(prev.softirq, cur.softirq);
    let steal = d(prev.steal, cur.steal);
    let guest = d(prev.guest, cur.guest);
    let guest_nice = d(prev.guest_nice, cur.guest_nice);
    // i128 so that no sum of u64 counters can overflow.
    let total = user + nice + system + idle + iowait + irq + softirq + steal;
    // Only the total decides (Telegraf's cpu input): backwards (a cpu unplugged and back, a
    // reboot under a restored state) or still, no point.
    if total <= 0 {
        return false;
    }
    let total = total as f64;
    let pct = |x: i128| 100.0 * x as f64 / total;
    out.user = pct(user - guest);
    out.nice = pct(nice - guest_nice);
    out.system = pct(system);
    out.idle = pct(idle);
    out.iowait = pct(iowait);
    out.irq = pct(irq);
    out.softirq = pct(softirq);
    out.steal = pct(steal);
    out.guest = pct(guest);
    out.guest_nice = pct(guest_nice);
    true
}

/// Usage from `prev` -> `cur` with its Telegraf name (`cpu-total`, `cpu0`, ...), or `None` when
/// the interval yields no point.
pub fn usage(prev: &CpuTimes, cur: &CpuTimes) -> Option<Cpu> {
    let mut out = Cpu::default();
    if !usage_into(prev, cur, &mut out) {
        return None;
    }
    write_name(cur.id, &mut out.name);
    Some(out)
}

/// Writes Telegraf's tag value for a cpu line into `name`, reusing its allocation.
pub fn write_name(id: Option<u32>, name: &mut String) {
    name.clear();
    match id {
        None => name.push_str("cpu-total"),
        // Writing to a String cannot fail.
        Some(n) => {
            let _ = write!(name, "cpu{n}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: [u64; 10]) -> CpuTimes {
        CpuTimes::from_columns(Some(3), v)
    }

    #[test]
    fn guest_is_taken_out_of_user_and_not_counted_twice() {
        let prev = t([0; 10]);
        // user 60 of which guest 20; nice 10 of which guest_nice 5; idle 30: total 100.
        let cur = t([60, 10, 0, 30, 0, 0, 0, 0, 20, 5]);
        let u = usage(&prev, &cur).expect("a point");
        assert_eq!(u.name, "cpu3");
        assert_eq!(u.user, 40.0);
        assert_eq!(u.nice, 5.0);
        assert_eq!(u.idle, 30.0);
        assert_eq!(u.guest, 20.0);
        assert_eq!(u.guest_nice, 5.0);
        let sum = u.user + u.nice + u.system + u.idle + u.iowait + u.irq + u.softirq + u.steal;
        assert_eq!(sum + u.guest + u.guest_nice, 100.0);
    }

    #[test]
    fn zero_delta_and_a_total_going_backwards_give_no_point() {
        let a = t([5, 0, 5, 90, 0, 0, 0, 0, 0, 0]);
        assert!(usage(&a, &a).is_none());
        // The total goes backwards (a cpu unplugged and back): no point, as Telegraf.
        let mut back = a;
        back.idle = 80;
        assert!(usage(&a, &back).is_none());
    }

    /// Issue 13 item 8: proc(5) says iowait "may decrease" on tickless kernels. Telegraf's cpu
    /// input drops a sample only when the total goes backwards; a decreasing iowait gives its
    /// (negative) share: 100 * Δiowait / Δtotal.
    #[test]
    fn iowait_going_backwards_still_gives_telegrafs_point() {
        // user system idle iowait: 10 10 70 10 -> 20 10 150 5 (Δ 10, 0, 80, -5; total 85).
        let prev = t([10, 0, 10, 70, 10, 0, 0, 0, 0, 0]);
        let cur = t([20, 0, 10, 150, 5, 0, 0, 0, 0, 0]);
        let u = usage(&prev, &cur).expect("a point although iowait went backwards");
        assert!((u.user - 100.0 * 10.0 / 85.0).abs() < 1e-9, "{u:?}");
        assert!((u.idle - 100.0 * 80.0 / 85.0).abs() < 1e-9, "{u:?}");
        assert!((u.iowait - 100.0 * -5.0 / 85.0).abs() < 1e-9, "{u:?}");
        assert_eq!(u.system, 0.0);
    }

    #[test]
    fn huge_counters_do_not_overflow() {
        let prev = t([0; 10]);
        let cur = t([u64::MAX, u64::MAX, u64::MAX, u64::MAX, 0, 0, 0, 0, 0, 0]);
        let u = usage(&prev, &cur).expect("a point");
        assert!((u.user - 25.0).abs() < 1e-9);
    }
}
