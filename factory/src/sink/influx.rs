//! The InfluxDB sink: line protocol POSTed with minreq to the 1.x `/write` or the 2.x/3.x
//! `/api/v2/write` endpoint, and each HTTP answer mapped to what the writer must do.
//!
//! minreq 3.0.0 opens a new TCP connection for every request (`Connection::send` connects, and
//! the stream is dropped with the response): there is no way to keep one alive through its API.
//! With batches of thousands of points the loopback connect is a small share of a write; the
//! `sink_bench` example measures it against POSTing directly.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nanoserde::DeJson;

use super::config::Api;
use super::https::{self, Reply};
use super::writer::{Attempt, Backend};

/// Writes to one InfluxDB.
pub(crate) struct InfluxBackend {
    base: String,
    api: Api,
    /// Whole seconds, as minreq wants them.
    timeout_secs: u64,
    /// Prepared once: the write URL with its query string.
    write_url: String,
    /// `Authorization` header value, if any.
    auth: Option<String>,
    /// For an https `base`: requests go through [`https`] (minreq cannot take a private CA).
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    timeout: Duration,
}

impl InfluxBackend {
    pub(crate) fn new(base: String, api: Api, timeout: Duration) -> InfluxBackend {
        let (write_url, auth) = match &api {
            Api::V1 {
                database,
                username,
                password,
                ..
            } => (
                format!("{base}/write?db={}&precision=ns", url_encode(database)),
                // Basic auth rather than `u`/`p` parameters keeps the password out of URLs
                // (and so out of proxy and server access logs); InfluxDB 1.x takes either.
                (!username.is_empty() || !password.is_empty())
                    .then(|| basic_auth(username, password)),
            ),
            Api::V2 { org, bucket, token } => (
                format!(
                    "{base}/api/v2/write?org={}&bucket={}&precision=ns",
                    url_encode(org),
                    url_encode(bucket)
                ),
                (!token.is_empty()).then(|| format!("Token {token}")),
            ),
        };
        InfluxBackend {
            base,
            api,
            timeout_secs: timeout.as_millis().div_ceil(1000).max(1) as u64,
            write_url,
            auth,
            tls: None,
            timeout,
        }
    }

    /// Sends requests over TLS with this config (an https `base`).
    pub(crate) fn with_tls(mut self, tls: Option<std::sync::Arc<rustls::ClientConfig>>) -> Self {
        self.tls = tls;
        self
    }

    fn post(&self, url: &str, content_type: &str, body: &[u8]) -> Result<Reply, String> {
        if let Some(tls) = &self.tls {
            let mut headers = vec![("Content-Type", content_type)];
            if let Some(a) = &self.auth {
                headers.push(("Authorization", a.as_str()));
            }
            return https::post(tls, url, &headers, body, self.timeout);
        }
        let mut req = minreq::post(url)
            .with_header("Content-Type", content_type)
            .with_timeout(self.timeout_secs)
            .with_body(body.to_vec());
        if let Some(a) = &self.auth {
            req = req.with_header("Authorization", a.as_str());
        }
        req.send().map(Reply::from).map_err(|e| e.to_string())
    }

    /// `CREATE DATABASE` through `/query` (1.x); Err carries why it did not work.
    fn create_database(&self, database: &str) -> Result<(), String> {
        let q = format!(
            "CREATE DATABASE \"{}\"",
            database.replace('\\', "\\\\").replace('"', "\\\"")
        );
        let form = format!("q={}", url_encode(&q));
        let url = format!("{}/query", self.base);
        match self.post(&url, "application/x-www-form-urlencoded", form.as_bytes()) {
            Ok(r) if (200..300).contains(&r.status_code) => match error_message(&r) {
                // /query answers 200 with {"results":[{"error":..}]} for statement errors.
                m if m.contains("\"error\"") => Err(m),
                _ => Ok(()),
            },
            Ok(r) => Err(format!("HTTP {}: {}", r.status_code, error_message(&r))),
            Err(e) => Err(e.to_string()),
        }
    }

    /// One POST of `body`, with the database created first when allowed and missing.
    fn attempt_once(&self, body: &str, may_create: bool) -> Attempt {
        let resp = match self.post(
            &self.write_url,
            "text/plain; charset=utf-8",
            body.as_bytes(),
        ) {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Retry {
                    error: format!("POST {}: {e}", self.redacted_url()),
                    retry_after: None,
                    loud: false,
                }
            }
        };
        let status = resp.status_code;
        // The answer table (README, "InfluxDB"): what each status means for the body.
        match status {
            200..=299 => Attempt::Durable,
            // 400: unparsable lines (1.x: the others written, as a "partial write"; 2.x: the whole
            // body refused, naming the first bad line); also 1.x's type conflicts and points
            // beyond retention as partial writes. 422: 2.x's type conflicts and retention, the
            // other points written. Either way the reason is about lines, not the request.
            400 | 422 => {
                let reason = error_message(&resp);
                Attempt::Refused {
                    named: named_lines(body, &reason),
                    reason: format!("HTTP {status}: {reason}"),
                }
            }
            401 | 403 => Attempt::Retry {
                error: format!(
                    "HTTP {status}: InfluxDB refuses our credentials, fix the sink's username/password or token: {}",
                    error_message(&resp)
                ),
                retry_after: None,
                loud: true,
            },
            404 => {
                let message = error_message(&resp);
                if let Api::V1 {
                    database,
                    create_database: true,
                    ..
                } = &self.api
                {
                    if may_create {
                        return match self.create_database(database) {
                            Ok(()) => {
                                super::log(&format!("created InfluxDB database {database:?}"));
                                self.attempt_once(body, false)
                            }
                            Err(e) => Attempt::Retry {
                                error: format!("HTTP 404 ({message}); CREATE DATABASE failed: {e}"),
                                retry_after: None,
                                loud: true,
                            },
                        };
                    }
                }
                // The database or bucket is missing: the store's setup, not the lines, so the
                // data waits on the agents until an operator creates it.
                Attempt::Retry {
                    error: format!(
                        "HTTP 404: {message} (create it, or set sink.create_database for 1.x)"
                    ),
                    retry_after: None,
                    loud: true,
                }
            }
            413 => Attempt::TooLarge,
            408 | 429 => Attempt::Retry {
                error: format!("HTTP {status}: {}", error_message(&resp)),
                retry_after: resp
                    .header("retry-after")
                    .and_then(|v| parse_retry_after(v, SystemTime::now())),
                loud: false,
            },
            402..=499 => Attempt::Unexpected {
                error: format!("HTTP {status}: {}", error_message(&resp)),
            },
            // 5xx, and anything stranger (a 3xx minreq did not follow): the store or the way to
            // it is unwell; the lines wait.
            _ => Attempt::Retry {
                error: format!("HTTP {status}: {}", error_message(&resp)),
                retry_after: resp
                    .header("retry-after")
                    .and_then(|v| parse_retry_after(v, SystemTime::now())),
                loud: false,
            },
        }
    }

    /// The write URL, which holds no secret (credentials travel in a header).
    fn redacted_url(&self) -> &str {
        &self.write_url
    }
}

impl Backend for InfluxBackend {
    fn attempt(&mut self, body: &str, _points: usize) -> Attempt {
        self.attempt_once(body, true)
    }

    fn describe(&self) -> String {
        let what = match &self.api {
            Api::V1 { database, .. } => format!("database {database:?}"),
            Api::V2 { org, bucket, .. } => format!("org {org:?} bucket {bucket:?}"),
        };
        format!("InfluxDB {} {what}", self.base)
    }
}

/// An InfluxDB error body: 1.x says `{"error":".."}`, 2.x `{"code":"..","message":".."}`.
#[derive(DeJson)]
#[nserde(default)]
struct ErrorBody {
    // Strings, not Options: nanoserde's derive for Option fields trips clippy; empty = absent.
    error: String,
    message: String,
}

/// The error InfluxDB gave, from the answer.
pub(crate) fn error_message(resp: &Reply) -> String {
    error_text(
        resp.as_str().unwrap_or(""),
        resp.header("x-influxdb-error"),
        &resp.reason_phrase,
    )
}

/// The JSON `error` (1.x) or `message` (2.x) field, else the body cut to 1000 bytes, else the
/// `X-Influxdb-Error` header, else the reason phrase.
pub(crate) fn error_text(body: &str, header: Option<&str>, reason: &str) -> String {
    if let Ok(ErrorBody { error, message }) = ErrorBody::deserialize_json(body) {
        if !error.is_empty() {
            return error;
        }
        if !message.is_empty() {
            return message;
        }
    }
    let body = body.trim();
    if !body.is_empty() {
        let mut end = body.len().min(1000);
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        return body[..end].to_string();
    }
    header.unwrap_or(reason).to_string()
}

/// The lines of `body` (0-based) an InfluxDB error says it refused, when it says which:
/// - 1.x lists every unparsable line as `unable to parse '<line>': <why>`, 2.x the first;
///   lines are matched whole, so a message cut short names nothing.
/// - A type conflict (`input field "v" on measurement "m" is type float, already exists as
///   type integer ... dropped=N`) names no line, but when exactly N lines of the body carry that
///   field of that measurement with that type, those are the ones.
///
/// Otherwise nothing: the writer halves the body. Either way the writer sends the other lines
/// again, so a wrong guess can never lose a line (at worst one already written is also kept as
/// a dead letter).
pub(crate) fn named_lines(body: &str, message: &str) -> Vec<usize> {
    const PREFIX: &str = "unable to parse '";
    let lines = || body.split('\n').filter(|l| !l.is_empty()).enumerate();
    let quoted: Vec<&str> = message
        .match_indices(PREFIX)
        .map(|(i, _)| &message[i + PREFIX.len()..])
        .collect();
    if !quoted.is_empty() {
        return lines()
            .filter(|(_, line)| {
                quoted
                    .iter()
                    .any(|q| q.starts_with(line) && q[line.len()..].starts_with('\''))
            })
            .map(|(i, _)| i)
            .collect();
    }
    let Some((measurement, field, kind, dropped)) = type_conflict(message) else {
        return Vec::new();
    };
    let found: Vec<usize> = lines()
        .filter(|(_, line)| field_kind(line, &measurement, &field) == Some(kind))
        .map(|(i, _)| i)
        .collect();
    if found.len() == dropped {
        found
    } else {
        Vec::new()
    }
}

/// From `... input field "F" on measurement "M" is type T, already exists as type U ...
/// dropped=N`: (M, F, T, N). Names are Go-quoted (`%q`): `\"` and `\\` are undone.
fn type_conflict(message: &str) -> Option<(String, String, &str, usize)> {
    let rest = &message[message.find("input field \"")? + 13..];
    let (field, rest) = go_unquote(rest)?;
    let rest = rest.strip_prefix(" on measurement \"")?;
    let (measurement, rest) = go_unquote(rest)?;
    let rest = rest.strip_prefix(" is type ")?;
    let kind = rest.split(',').next()?;
    let at = message.rfind("dropped=")?;
    let dropped = message[at + 8..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((measurement, field, kind, dropped))
}

/// The inside of a Go-quoted string up to its closing quote, and what follows it.
fn go_unquote(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => out.push(chars.next()?.1),
            c => out.push(c),
        }
    }
    None
}

/// The InfluxDB type name (`float`, `integer`, `unsigned`, `string`, `boolean`) of `field` in
/// `line`, when the line is a point of `measurement` that has it. A small reader of the line
/// protocol's escaping: `\` escapes in names, double-quoted strings with `\"` and `\\`.
fn field_kind(line: &str, measurement: &str, field: &str) -> Option<&'static str> {
    let b = line.as_bytes();
    // Measurement: up to an unescaped ',' or ' '.
    let mut i = 0;
    let mut name = Vec::new();
    while i < b.len() && b[i] != b',' && b[i] != b' ' {
        if b[i] == b'\\' && i + 1 < b.len() {
            i += 1;
        }
        name.push(b[i]);
        i += 1;
    }
    if name != measurement.as_bytes() {
        return None;
    }
    // Tags: skip to the first unescaped ' '.
    while i < b.len() && b[i] != b' ' {
        if b[i] == b'\\' {
            i += 1;
        }
        i += 1;
    }
    i += 1;
    // Fields: key=value pairs separated by ',' up to an unescaped ' ' outside quotes.
    while i < b.len() {
        let mut key = Vec::new();
        while i < b.len() && b[i] != b'=' {
            if b[i] == b'\\' && i + 1 < b.len() {
                i += 1;
            }
            key.push(b[i]);
            i += 1;
        }
        i += 1;
        let start = i;
        let kind = if b.get(i) == Some(&b'"') {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            "string"
        } else {
            while i < b.len() && b[i] != b',' && b[i] != b' ' {
                i += 1;
            }
            match &line.get(start..i)? {
                v if v.ends_with('i') => "integer",
                v if v.ends_with('u') => "unsigned",
                &("t" | "T" | "true" | "True" | "TRUE" | "f" | "F" | "false" | "False"
                | "FALSE") => "boolean",
                _ => "float",
            }
        };
        if key == field.as_bytes() {
            return Some(kind);
        }
        if b.get(i) != Some(&b',') {
            return None;
        }
        i += 1;
    }
    None
}

/// `Retry-After` (RFC 9110): delay seconds, or an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`)
/// taken relative to `now` (a date in the past means now). The obsolete RFC 850 and asctime
/// forms are not read: backoff applies then.
pub(crate) fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_imf_fixdate(v)?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
    Some(Duration::from_secs_f64((at as f64 - now).max(0.0)))
}

/// Unix seconds of an IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_imf_fixdate(v: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (_weekday, rest) = v.split_once(", ")?;
    let mut parts = rest.split(' ');
    let day: u32 = parts.next()?.parse().ok()?;
    let month = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month)? as u32 + 1;
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|x| x.parse::<i64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if parts.next()? != "GMT" || parts.next().is_some() || !(1..=31).contains(&day) {
        return None;
    }
    if !(0..24).contains(&h) || !(0..60).contains(&m) || !(0..61).contains(&s) {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// RFC 3986's unreserved characters stay as they are; everything else is percent-encoded, so a
/// database, org or bucket name cannot add query parameters.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A query parameter value, percent-encoded (minreq is built without its `urlencoding` feature
/// and sends parameters as given).
pub(crate) fn url_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// The `Authorization` value for HTTP Basic auth (RFC 7617: standard base64 with padding).
pub(crate) fn basic_auth(username: &str, password: &str) -> String {
    use base64::Engine;
    let pair = format!("{username}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}
