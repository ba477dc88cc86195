//! CPU usage percentages from two `/proc/stat` samples, computed exactly as Telegraf's `cpu`
//! input does (plugins/inputs/cpu/cpu.go over gopsutil's times).
//!
//! The kernel's `user` already contains `guest` and `nice` contains `guest_nice`, so:
//! - the total is `user + nice + system + idle + iowait + irq + softirq + steal`, guest time
//!   counted once (inside `user`/`nice`), never added again;
//! - `usage_user` is `(Δuser - Δguest) / Δtotal` and `usage_nice` is `(Δnice - Δguest_nice) / Δtotal`;
//! - `usage_guest` and `usage_guest_nice` are their own deltas over the same total.
//!
//! A counter that went backwards (reboot, cpu hot-unplug and back, a wrap) or a total that did
//! not move gives no result at all, so no NaN or negative percentage is ever reported.

use super::stat::CpuTimes;
use autofact_fbs::Cpu;
use std::fmt::Write;

/// Fills the percentage fields of `out` from `prev` -> `cur`; returns false (and leaves `out`
/// unspecified) when the interval yields no point. `out.name` is not touched.
pub fn usage_into(prev: &CpuTimes, cur: &CpuTimes, out: &mut Cpu) -> bool {
    let pairs = [
        (prev.user, cur.user),
        (prev.nice, cur.nice),
        (prev.system, cur.system),
        (prev.idle, cur.idle),
        (prev.iowait, cur.iowait),
        (prev.irq, cur.irq),
        (prev.softirq, cur.softirq),
        (prev.steal, cur.steal),
        (prev.guest, cur.guest),
        (prev.guest_nice, cur.guest_nice),
    ];
    let mut d = [0u64; 10];
    for (i, (p, c)) in pairs.into_iter().enumerate() {
        match c.checked_sub(p) {
            Some(delta) => d[i] = delta,
            None => return false,
        }
    }
    let [user, nice, system, idle, iowait, irq, softirq, steal, guest, guest_nice] = d;
    // u128 so that no sum of u64 counters can overflow.
    let total: u128 = [user, nice, system, idle, iowait, irq, softirq, steal]
        .iter()
        .map(|&x| u128::from(x))
        .sum();
    if total == 0 {
        return false;
    }
    let total = total as f64;
    let pct = |x: u64| 100.0 * x as f64 / total;
    // guest is accounted in user at the same tick, so Δguest <= Δuser; saturate anyway so a
    // racing read cannot produce a negative share.
    out.user = pct(user.saturating_sub(guest));
    out.nice = pct(nice.saturating_sub(guest_nice));
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
    fn zero_delta_and_backwards_counters_give_no_point() {
        let a = t([5, 0, 5, 90, 0, 0, 0, 0, 0, 0]);
        assert!(usage(&a, &a).is_none());
        let mut b = a;
        b.idle += 10;
        b.iowait = 0;
        let mut back = a;
        back.iowait = 1;
        assert!(usage(&back, &b).is_none());
        assert!(usage(&a, &b).is_some());
    }

    #[test]
    fn huge_counters_do_not_overflow() {
        let prev = t([0; 10]);
        let cur = t([u64::MAX, u64::MAX, u64::MAX, u64::MAX, 0, 0, 0, 0, 0, 0]);
        let u = usage(&prev, &cur).expect("a point");
        assert!((u.user - 25.0).abs() < 1e-9);
    }
}
