//! `/proc/uptime`: seconds since boot, and idle seconds summed over cpus.

use super::ParseError;

/// The two values of `/proc/uptime`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Uptime {
    /// Seconds since boot.
    pub up: f64,
    /// Idle seconds, summed over all cpus.
    pub idle: f64,
}

impl Uptime {
    /// Whole seconds since boot, as Telegraf's `system.uptime`.
    pub fn secs(&self) -> u64 {
        // `as` saturates for finite non-negative values, which parse guarantees.
        self.up.floor() as u64
    }
}

/// Parses `"393.33 468.37\n"`.
pub fn parse(s: &str) -> Result<Uptime, ParseError> {
    let mut toks = s.split_ascii_whitespace();
    let mut next = |what: &str| super::non_negative(toks.next(), what, "a number of seconds");
    Ok(Uptime {
        up: next("uptime")?,
        idle: next("idle time")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let u = parse("393.99 468.37\n").expect("parses");
        assert_eq!(u.secs(), 393);
        assert!(parse("393.99\n").is_err());
        assert!(parse("-1 2\n").is_err());
    }
}
