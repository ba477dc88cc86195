//! `/proc/net/dev`: per-interface counters, as Telegraf's `net` fields.
//!
//! After two header lines, each line is `name: ` then 8 receive and 8 transmit counters. Long
//! counters can touch the colon (`eth0:1234`), so the name ends at the first `:`, a character
//! the kernel does not allow in interface names.

use super::{num, slot, ParseError};
use autofact_fbs::Net;

/// Every interface, loopback included.
pub fn parse(s: &str) -> Result<Vec<Net>, ParseError> {
    let mut out = Vec::new();
    let n = parse_into(s, &mut out, |_| true)?;
    out.truncate(n);
    Ok(out)
}

/// Fills `out[..n]` with the interfaces for which `keep(name)` is true and returns `n`. Elements
/// of `out` are overwritten in place so their `String`s are reused; elements past `n` are left
/// as they were (the caller truncates or recycles them).
pub fn parse_into(
    s: &str,
    out: &mut Vec<Net>,
    keep: impl Fn(&str) -> bool,
) -> Result<usize, ParseError> {
    let mut n = 0;
    let mut lines = 0;
    for (i, line) in s.lines().enumerate() {
        let lineno = i + 1;
        lines = lineno;
        if lineno <= 2 {
            // The two header lines; a file that has anything else there is not net/dev.
            if !line.contains('|') {
                return Err(ParseError::new(lineno, "expected the header line"));
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let Some((name, rest)) = line.split_once(':') else {
            return Err(ParseError::new(lineno, "no ':' after the interface name"));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(ParseError::new(lineno, "empty interface name"));
        }
        let mut v = [0u64; 16];
        let mut toks = rest.split_ascii_whitespace();
        for (k, x) in v.iter_mut().enumerate() {
            *x = num(toks.next(), lineno, FIELDS[k])?;
        }
        if !keep(name) {
            continue;
        }
        let e = slot(out, n);
        e.interface.clear();
        e.interface.push_str(name);
        e.bytes_recv = v[0];
        e.packets_recv = v[1];
        e.err_in = v[2];
        e.drop_in = v[3];
        e.bytes_sent = v[8];
        e.packets_sent = v[9];
        e.err_out = v[10];
        e.drop_out = v[11];
        n += 1;
    }
    if lines < 2 {
        return Err(ParseError::new(0, "missing the two header lines"));
    }
    Ok(n)
}

const FIELDS: [&str; 16] = [
    "rx bytes",
    "rx packets",
    "rx errs",
    "rx drop",
    "rx fifo",
    "rx frame",
    "rx compressed",
    "rx multicast",
    "tx bytes",
    "tx packets",
    "tx errs",
    "tx drop",
    "tx fifo",
    "tx colls",
    "tx carrier",
    "tx compressed",
];

#[cfg(test)]
mod tests {
    use super::*;

    const HDR: &str = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n";

    #[test]
    fn counters_touching_the_colon() {
        let s = format!("{HDR}  eth0:12345678901 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n");
        let v = parse(&s).expect("parses");
        assert_eq!(v[0].interface, "eth0");
        assert_eq!(v[0].bytes_recv, 12345678901);
        assert_eq!(v[0].drop_out, 12);
    }

    #[test]
    fn short_line_is_an_error() {
        let s = format!("{HDR}  eth0: 1 2 3\n");
        assert_eq!(parse(&s).expect_err("short").line, 3);
    }
}
