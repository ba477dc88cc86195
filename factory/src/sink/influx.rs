//! The InfluxDB sink: line protocol POSTed with minreq to the 1.x `/write` or the 2.x/3.x
//! `/api/v2/write` endpoint, and each HTTP answer mapped to what the writer must do.
//!
//! minreq 3.0.0 opens a new TCP connection for every request (`Connection::send` connects, and
//! the stream is dropped with the response): there is no way to keep one alive through its API.
//! With batches of thousands of points the loopback connect is a small share of a write; the
//! `sink_bench` example measures it against POSTing directly.

use std::time::Duration;

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
                (!username.is_empty() || !password.is_empty()).then(|| {
                    format!(
                        "Basic {}",
                        base64(format!("{username}:{password}").as_bytes())
                    )
                }),
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
    fn attempt_once(&self, body: &str, points: usize, may_create: bool) -> Attempt {
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
        match status {
            200..=299 => Attempt::Durable,
            400 => {
                let message = error_message(&resp);
                Attempt::Poison {
                    dropped: dropped_count(&message, points),
                    message,
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
                                self.attempt_once(body, points, false)
                            }
                            Err(e) => Attempt::Retry {
                                error: format!("HTTP 404 ({message}); CREATE DATABASE failed: {e}"),
                                retry_after: None,
                                loud: false,
                            },
                        };
                    }
                }
                Attempt::Retry {
                    error: format!("HTTP 404: {message} (create it, or set sink.create_database)"),
                    retry_after: None,
                    loud: false,
                }
            }
            413 => Attempt::TooLarge,
            _ => Attempt::Retry {
                error: format!("HTTP {status}: {}", error_message(&resp)),
                retry_after: resp.header("retry-after").and_then(parse_retry_after),
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
    fn attempt(&mut self, body: &str, points: usize) -> Attempt {
        self.attempt_once(body, points, true)
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

/// How many of `points` a 400 dropped. InfluxDB 1.x says `partial write: ... dropped=N` when it
/// wrote the rest, where N counts points refused after parsing (field type conflicts) but not the
/// lines it could not parse, each named by an `unable to parse '...'`. Any other 400 (a type
/// conflict inside the batch itself, say) refused the whole batch.
pub(crate) fn dropped_count(message: &str, points: usize) -> usize {
    let Some(at) = message.rfind("dropped=") else {
        return points;
    };
    let digits: String = message[at + 8..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    match digits.parse::<usize>() {
        Ok(n) => (n + message.matches("unable to parse '").count()).min(points),
        Err(_) => points,
    }
}

/// `Retry-After` in seconds; the HTTP-date form is not worth a date parser (backoff applies).
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Percent-encodes everything but RFC 3986's unreserved characters (minreq is built without its
/// `urlencoding` feature and sends parameters as given).
pub(crate) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Standard base64 with padding, for the Basic auth header.
pub(crate) fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}
