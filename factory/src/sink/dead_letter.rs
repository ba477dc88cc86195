//! Dead letters: the lines a store refused for good, kept on disk with the client they came
//! from and the store's reason, so nothing a store refuses is lost and an operator can replay
//! them (`autofactory replay FILE`) once the cause is fixed.
//!
//! # On-disk format
//! One file per UTC day of refusal, `<data_dir>/dead-letters/YYYY-MM-DD.lp` (`YYYY-MM-DD-replay.lp`
//! for the lines `autofactory replay` finds still refused), appended to and
//! fsync'd (file and, when new, directory) before the batch holding the lines is acknowledged.
//! No size cap: a store that refuses everything fills it at the rate agents send, and a failing
//! append (a full disk) keeps the batch unacknowledged, its data waiting on the agents' disks.
//! Each refusal is a header line, then the refused lines verbatim:
//!
//! ```text
//! # refused at=2026-12-06T03:04:05Z client=0123456789abcdef0123456789abcdef reason="partial write: field type conflict: ..."
//! m,host=pi-7 v="text" 1764990245000000000
//! ```
//!
//! `client` is the id of the agent that sent the lines (`-` when unknown); `reason` is the store's
//! message in double quotes, with `\` `"` and newlines escaped as `\\` `\"` `\n`. Every other
//! line starting with `#` is a comment. Line protocol parsers skip `#` lines, so the file also
//! imports as is (`curl --data-binary @FILE .../write?db=...&precision=ns`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::file::DayFiles;

/// Lines refused for one reason, all from one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The client id, or `-`.
    pub client: String,
    /// The store's reason.
    pub reason: String,
    /// When the refusal was recorded (RFC 3339), as read back; empty for new records.
    pub at: String,
    /// The lines, each ending in `\n`.
    pub lines: String,
}

impl Record {
    /// Lines in the record.
    pub fn points(&self) -> usize {
        self.lines.lines().filter(|l| !l.is_empty()).count()
    }
}

/// The dead-letter directory, shared by the sink's writer threads.
pub(crate) struct DeadLetters {
    files: Mutex<DayFiles>,
}

impl DeadLetters {
    /// Files `<day><tag>.lp` in `dir`, keeping the day files' reserve on `data_dir`'s
    /// filesystem.
    pub(crate) fn new(dir: PathBuf, data_dir: Option<PathBuf>, tag: &str) -> DeadLetters {
        DeadLetters {
            files: Mutex::new(DayFiles::new(dir, data_dir).tagged(tag)),
        }
    }

    /// Appends `records` to today's file in one write and fsyncs it; Ok carries the path, Err
    /// names it and the cause (nothing half-written stays behind).
    pub(crate) fn append(&self, records: &[Record]) -> Result<PathBuf, String> {
        let at = crate::log::rfc3339(crate::log::unix_now());
        let mut text = String::new();
        for r in records {
            text.push_str(&header(&at, &r.client, &r.reason));
            text.push_str(&r.lines);
            if !r.lines.ends_with('\n') {
                text.push('\n');
            }
        }
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .append(&text)
    }
}

/// The header line of a record, with its newline.
pub(crate) fn header(at: &str, client: &str, reason: &str) -> String {
    let client = if client.is_empty() || client.contains(char::is_whitespace) {
        "-"
    } else {
        client
    };
    let mut quoted = String::with_capacity(reason.len() + 2);
    for c in reason.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\\\""),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            c => quoted.push(c),
        }
    }
    format!("# refused at={at} client={client} reason=\"{quoted}\"\n")
}

/// Why a file is not a dead-letter file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong there.
    pub what: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.what)
    }
}

/// Reads a dead-letter file's text back into its records (consecutive headers for the same
/// client and reason stay separate records; that is harmless for replay).
pub fn parse(text: &str) -> Result<Vec<Record>, ParseError> {
    let mut out: Vec<Record> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if let Some(h) = line.strip_prefix("# refused ") {
            out.push(parse_header(h).map_err(|what| ParseError { line: n, what })?);
        } else if line.starts_with('#') || line.trim().is_empty() {
            continue;
        } else {
            let Some(r) = out.last_mut() else {
                return Err(ParseError {
                    line: n,
                    what: "a line before any `# refused` header: not a dead-letter file".into(),
                });
            };
            r.lines.push_str(line);
            r.lines.push('\n');
        }
    }
    Ok(out)
}

fn parse_header(h: &str) -> Result<Record, String> {
    let (mut at, mut client) = (String::new(), None);
    let mut rest = h;
    loop {
        rest = rest.trim_start();
        if let Some(q) = rest.strip_prefix("reason=\"") {
            let reason = unquote(q)?;
            let client = client.ok_or("header without client=")?;
            return Ok(Record {
                client,
                reason,
                at,
                lines: String::new(),
            });
        }
        let (word, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        if word.is_empty() {
            return Err("header without reason=\"...\"".into());
        }
        if let Some(v) = word.strip_prefix("at=") {
            at = v.to_string();
        } else if let Some(v) = word.strip_prefix("client=") {
            client = Some(v.to_string());
        }
        rest = tail;
    }
}

/// The inside of a quoted reason up to its closing quote, escapes undone.
fn unquote(q: &str) -> Result<String, String> {
    let mut out = String::with_capacity(q.len());
    let mut chars = q.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Ok(out),
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some(c) => out.push(c),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("reason without its closing quote".into())
}

/// The dead-letter directory under a data dir.
pub fn dir_under(data_dir: &Path) -> PathBuf {
    data_dir.join("dead-letters")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_hostile_reasons() {
        let reason = "unable to parse 'm v=\"a\\\\b\" 1': bad\nsecond \"line\" \\ end";
        let text = format!(
            "{}m v=1 1\nm v=2 2\n# a comment\n{}x y=1 3\n",
            header("2026-12-06T03:04:05Z", "c1", reason),
            header("2026-12-06T03:04:06Z", "", "r2"),
        );
        let got = parse(&text).expect("parses");
        assert_eq!(
            got,
            vec![
                Record {
                    client: "c1".into(),
                    reason: reason.into(),
                    at: "2026-12-06T03:04:05Z".into(),
                    lines: "m v=1 1\nm v=2 2\n".into()
                },
                Record {
                    client: "-".into(),
                    reason: "r2".into(),
                    at: "2026-12-06T03:04:06Z".into(),
                    lines: "x y=1 3\n".into()
                },
            ]
        );
        // Each header is one line, whatever the reason held.
        assert_eq!(
            text.lines().filter(|l| l.starts_with("# refused")).count(),
            2
        );
    }

    #[test]
    fn files_that_are_not_dead_letters_are_refused_with_the_line() {
        assert_eq!(
            parse("m v=1 1\n").map_err(|e| e.line),
            Err(1),
            "data before a header"
        );
        let e = parse("# refused at=x client=c reason=\"open\n").expect_err("unclosed");
        assert_eq!(e.line, 1);
        let e = parse("\n# refused at=x reason=\"r\"\n").expect_err("no client");
        assert_eq!(e.line, 2);
        assert_eq!(parse("").expect("empty"), vec![]);
    }
}
