//! `/proc/loadavg`: the 1, 5 and 15 minute load averages.

use super::ParseError;

/// The load averages.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LoadAvg {
    /// 1-minute load average.
    pub load1: f64,
    /// 5-minute load average.
    pub load5: f64,
    /// 15-minute load average.
    pub load15: f64,
}

/// Parses `"0.26 0.60 0.32 1/91 9071\n"`; only the first three values are required.
pub fn parse(s: &str) -> Result<LoadAvg, ParseError> {
    let mut toks = s.split_ascii_whitespace();
    let mut next = |what: &str| super::non_negative(toks.next(), what, "a load average");
    Ok(LoadAvg {
        load1: next("load1")?,
        load5: next("load5")?,
        load15: next("load15")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let l = parse("0.26 0.60 0.32 1/91 9071\n").expect("parses");
        assert_eq!((l.load1, l.load5, l.load15), (0.26, 0.60, 0.32));
        assert!(parse("0.26 0.60\n").is_err());
        assert!(parse("nan 1 1\n").is_err());
    }
}
