//! `/proc/[pid]/stat`: Telegraf's `processes` measurement, tasks counted by state.
//!
//! As Telegraf's Linux input does: every numeric directory of `/proc` is a process; its
//! `stat` gives the state letter (field 3) and `num_threads` (field 20) (proc(5)). The second
//! field, `(comm)`, may itself hold spaces and parentheses, so the fields are counted from the
//! *last* `)`. A process that exits between the directory scan and the read is simply not
//! counted (its `stat` is gone: ENOENT, or ESRCH while reading).

use super::ParseError;
use autofact_fbs::Processes;

/// The two fields the measurement needs from one `stat` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Task {
    /// The state letter: R, S, D, Z, T, t, X, I, P, W, ...
    pub state: u8,
    /// `num_threads`.
    pub threads: u64,
}

/// Parses the text of one `/proc/[pid]/stat`.
pub fn parse_stat(s: &str) -> Result<Task, ParseError> {
    let Some(close) = s.rfind(')') else {
        return Err(ParseError::new(1, "no ')' closing the command name"));
    };
    // After ") ": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
    // utime stime cutime cstime priority nice num_threads ...
    let mut toks = s[close + 1..].split_ascii_whitespace();
    let state = match toks.next() {
        Some(t) if t.len() == 1 => t.as_bytes()[0],
        Some(t) => {
            return Err(ParseError::new(
                1,
                format!("state: {t:?} is not one letter"),
            ))
        }
        None => return Err(ParseError::new(1, "missing state")),
    };
    let threads = super::num(toks.nth(16), 1, "num_threads")?;
    Ok(Task { state, threads })
}

/// Counts `task` into `p` under Telegraf's field for its state.
pub fn add(p: &mut Processes, task: Task) {
    let slot = match task.state {
        b'R' => &mut p.running,
        b'S' => &mut p.sleeping,
        b'D' => &mut p.blocked,
        b'Z' => &mut p.zombies,
        b'X' | b'x' => &mut p.dead,
        b'T' | b't' => &mut p.stopped,
        b'W' => &mut p.paging,
        b'I' => &mut p.idle,
        b'P' => &mut p.parked,
        _ => &mut p.unknown,
    };
    *slot += 1;
    p.total += 1;
    p.total_threads += task.threads;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_name_may_hold_spaces_and_parentheses() {
        // A real line of this machine's `cat /proc/self/stat`, with the name made hostile.
        let line = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 95 0 0 0 0 0 0 0 20 0 3 0 \
                    4417 6004736 226 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0\n";
        assert_eq!(
            parse_stat(line).expect("parses"),
            Task {
                state: b'S',
                threads: 3
            }
        );
        assert!(parse_stat("1 (x S 1").is_err());
        assert!(parse_stat("1 (x) S 1 2").is_err());
    }
}
