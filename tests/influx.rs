//! A real InfluxDB 1.x (`influxd`) for tests: its own config, loopback ports and temp dirs,
//! stopped and started again at will for outage tests, always killed on drop.
//!
//! `influxd` is `$AUTOFACT_INFLUXD` when set, else `/usr/bin/influxd`, else the first on `PATH`. When it is
//! missing, [`Influx::launch_or_skip`] panics with a clear message, unless `AUTOFACT_SKIP_INFLUX=1`,
//! in which case it prints `SKIPPED` and returns `None`.

use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::poll::{free_port, wait_for};
use crate::process::Proc;
use crate::tmp::TempDir;

/// Why InfluxDB could not be started or queried.
#[derive(Debug)]
pub enum InfluxError {
    /// `influxd` is not installed.
    NotInstalled,
    /// Writing the config, creating dirs or spawning failed.
    Io(String, std::io::Error),
    /// influxd did not answer `/ping` in time; carries its output.
    NotReady(String),
    /// An HTTP request to it failed.
    Http(String),
}

impl fmt::Display for InfluxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InfluxError::NotInstalled => write!(
                f,
                "influxd not found (looked at $AUTOFACT_INFLUXD, /usr/bin/influxd, PATH): install \
                 Debian's `influxdb` package (tests/run does), or set AUTOFACT_SKIP_INFLUX=1 to skip"
            ),
            InfluxError::Io(what, e) => write!(f, "{what}: {e}"),
            InfluxError::NotReady(out) => write!(f, "influxd did not become ready:\n{out}"),
            InfluxError::Http(e) => write!(f, "InfluxDB HTTP: {e}"),
        }
    }
}

impl std::error::Error for InfluxError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InfluxError::Io(_, e) => Some(e),
            _ => None,
        }
    }
}

/// A running (or stopped) influxd with its data in a temp dir.
#[derive(Debug)]
pub struct Influx {
    bin: PathBuf,
    config: PathBuf,
    http_port: u16,
    proc: Option<Proc>,
    // Last: the directory goes after the process is killed.
    dir: TempDir,
}

/// Where influxd is, if anywhere.
pub fn influxd_path() -> Option<PathBuf> {
    crate::process::find_program("AUTOFACT_INFLUXD", "/usr/bin/influxd", "influxd")
}

impl Influx {
    /// Starts influxd on free loopback ports, with every directory in a fresh temp dir.
    pub fn launch() -> Result<Influx, InfluxError> {
        let bin = influxd_path().ok_or(InfluxError::NotInstalled)?;
        let io = |what: &'static str| move |e| InfluxError::Io(what.to_string(), e);
        let mut last = String::new();
        // A port found free can be taken by someone else before influxd binds it: try again.
        for _ in 0..3 {
            let dir = TempDir::new("influxd").map_err(io("temp dir"))?;
            let http_port = free_port().map_err(io("free port"))?;
            let rpc_port = free_port().map_err(io("free port"))?;
            let config = dir.join("influxdb.conf");
            std::fs::write(&config, config_text(&dir, http_port, rpc_port))
                .map_err(io("writing influxdb.conf"))?;
            let mut influx = Influx {
                bin: bin.clone(),
                config,
                http_port,
                proc: None,
                dir,
            };
            match influx.start() {
                Ok(()) => return Ok(influx),
                Err(e) => last = e.to_string(),
            }
        }
        Err(InfluxError::NotReady(last))
    }

    /// [`Influx::launch`], or `None` after printing SKIPPED when influxd is missing and
    /// `AUTOFACT_SKIP_INFLUX=1`. Panics with the reason otherwise: a test that needs InfluxDB
    /// must not pass silently without it.
    pub fn launch_or_skip(test: &str) -> Option<Influx> {
        match Influx::launch() {
            Ok(i) => Some(i),
            Err(InfluxError::NotInstalled)
                if std::env::var("AUTOFACT_SKIP_INFLUX").as_deref() == Ok("1") =>
            {
                println!("SKIPPED {test}: influxd not installed (AUTOFACT_SKIP_INFLUX=1)");
                None
            }
            Err(e) => panic!("{test}: cannot start InfluxDB: {e}"),
        }
    }

    /// Starts (again) on the same ports and directories; returns once `/ping` answers 204.
    pub fn start(&mut self) -> Result<(), InfluxError> {
        if self.proc.is_some() {
            return Ok(());
        }
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-config").arg(&self.config);
        let proc = Proc::spawn("influxd", cmd, self.dir.path())
            .map_err(|e| InfluxError::Io(format!("spawning {}", self.bin.display()), e))?;
        self.proc = Some(proc);
        let ping = format!("{}/ping", self.url());
        let ready = wait_for("influxd /ping", Duration::from_secs(30), || {
            if let Some(p) = self.proc.as_mut() {
                if let Ok(Some(status)) = p.try_wait() {
                    return Some(Err(format!("influxd exited with {status}")));
                }
            }
            match minreq::get(&ping).with_timeout(2).send() {
                Ok(r) if r.status_code == 204 => Some(Ok(())),
                _ => None,
            }
        });
        match ready {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) | Err(e) => {
                let out = self.proc.as_ref().map(|p| p.output()).unwrap_or_default();
                self.stop();
                Err(InfluxError::NotReady(format!("{e}\n{out}")))
            }
        }
    }

    /// Stops influxd (SIGTERM, SIGKILL after 10 s) and waits for it; data stays for `start`.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.stop(Duration::from_secs(10));
        }
    }

    /// Is influxd running (as far as we started it)?
    pub fn is_running(&self) -> bool {
        self.proc.is_some()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The HTTP port.
    pub fn port(&self) -> u16 {
        self.http_port
    }

    /// influxd's output so far, for assertion messages.
    pub fn output(&self) -> String {
        self.proc.as_ref().map(|p| p.output()).unwrap_or_default()
    }

    /// Runs an InfluxQL statement that changes things (`CREATE DATABASE ...`) through POST /query.
    pub fn execute(&self, q: &str) -> Result<String, InfluxError> {
        let url = format!("{}/query", self.url());
        let r = minreq::post(url)
            .with_header("Content-Type", "application/x-www-form-urlencoded")
            .with_body(format!("q={}", encode(q)))
            .with_timeout(30)
            .send()
            .map_err(|e| InfluxError::Http(e.to_string()))?;
        answer(r)
    }

    /// GET /query?db=..&q=..&epoch=ns; returns the JSON text.
    pub fn query(&self, db: &str, q: &str) -> Result<String, InfluxError> {
        let url = format!(
            "{}/query?db={}&epoch=ns&q={}",
            self.url(),
            encode(db),
            encode(q)
        );
        let r = minreq::get(url)
            .with_timeout(30)
            .send()
            .map_err(|e| InfluxError::Http(e.to_string()))?;
        answer(r)
    }

    /// POSTs line protocol to /write (nanosecond precision), returning the status code.
    pub fn write_lines(&self, db: &str, lines: &str) -> Result<u16, InfluxError> {
        let url = format!("{}/write?db={}&precision=ns", self.url(), encode(db));
        minreq::post(url)
            .with_body(lines.as_bytes().to_vec())
            .with_timeout(30)
            .send()
            .map(|r| r.status_code)
            .map_err(|e| InfluxError::Http(e.to_string()))
    }
}

impl Drop for Influx {
    fn drop(&mut self) {
        // Killed outright: the data dir is thrown away anyway.
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }
}

fn answer(r: minreq::Response) -> Result<String, InfluxError> {
    let body = r.as_str().unwrap_or("").to_string();
    if (200..300).contains(&r.status_code) {
        Ok(body)
    } else {
        Err(InfluxError::Http(format!("HTTP {}: {body}", r.status_code)))
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters.
pub fn encode(s: &str) -> String {
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

/// influxd 1.x config: loopback only, everything under `dir`, quiet, no phoning home.
fn config_text(dir: &TempDir, http_port: u16, rpc_port: u16) -> String {
    let p = |name: &str| dir.join(name).display().to_string();
    format!(
        r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{meta}"

[data]
  dir = "{data}"
  wal-dir = "{wal}"
  query-log-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  log-enabled = false
  auth-enabled = false

[logging]
  level = "warn"
  suppress-logo = true

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false

[subscriber]
  enabled = false
"#,
        meta = p("meta"),
        data = p("data"),
        wal = p("wal"),
    )
}

/// A JSON value from InfluxDB's `/query` answer. Numbers stay as their text so that integers
/// up to `i64::MAX` compare exactly.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number, as written.
    Num(String),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object, keys in order.
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// Parses a whole JSON text.
    pub fn parse(text: &str) -> Result<Json, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("trailing bytes at {}", p.i));
        }
        Ok(v)
    }

    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The elements of an array (empty for anything else).
    pub fn items(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            _ => &[],
        }
    }

    /// A string's text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A number as i64, when it is an integer.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Num(n) => n.parse().ok(),
            _ => None,
        }
    }

    /// A number as f64.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Num(n) => n.parse().ok(),
            _ => None,
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Result<(), String> {
        self.ws();
        if self.s.get(self.i) == Some(&b) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at byte {}", b as char, self.i))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.s.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut m = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(m));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.eat(b':')?;
                    m.push((k, self.value()?));
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(m));
                        }
                        _ => return Err(format!("bad object at byte {}", self.i)),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut a = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Arr(a));
                }
                loop {
                    a.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(a));
                        }
                        _ => return Err(format!("bad array at byte {}", self.i)),
                    }
                }
            }
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b't') if self.s[self.i..].starts_with(b"true") => {
                self.i += 4;
                Ok(Json::Bool(true))
            }
            Some(b'f') if self.s[self.i..].starts_with(b"false") => {
                self.i += 5;
                Ok(Json::Bool(false))
            }
            Some(b'n') if self.s[self.i..].starts_with(b"null") => {
                self.i += 4;
                Ok(Json::Null)
            }
            Some(c) if *c == b'-' || c.is_ascii_digit() => {
                let start = self.i;
                while self.i < self.s.len()
                    && matches!(
                        self.s[self.i],
                        b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                    )
                {
                    self.i += 1;
                }
                Ok(Json::Num(
                    String::from_utf8_lossy(&self.s[start..self.i]).into_owned(),
                ))
            }
            _ => Err(format!("unexpected byte at {}", self.i)),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        if self.s.get(self.i) != Some(&b'"') {
            return Err(format!("expected a string at byte {}", self.i));
        }
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let Some(&b) = self.s.get(self.i) else {
                return Err("unterminated string".into());
            };
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = self.s.get(self.i) else {
                        return Err("unterminated escape".into());
                    };
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let mut cp = self.hex4()?;
                            if (0xD800..0xDC00).contains(&cp)
                                && self.s[self.i..].starts_with(b"\\u")
                            {
                                self.i += 2;
                                let lo = self.hex4()?;
                                cp = 0x10000
                                    + ((cp - 0xD800) << 10)
                                    + (lo.wrapping_sub(0xDC00) & 0x3FF);
                            }
                            let c = char::from_u32(cp).unwrap_or('\u{FFFD}');
                            let mut buf = [0; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return Err(format!("bad escape at byte {}", self.i)),
                    }
                }
                _ => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|e| e.to_string())
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let h = self
            .s
            .get(self.i..self.i + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| format!("bad \\u escape at byte {}", self.i))?;
        self.i += 4;
        Ok(h)
    }
}

/// One series of a query answer: its rows as (column, value) maps.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Measurement.
    pub name: String,
    /// Column names, `time` first.
    pub columns: Vec<String>,
    /// Rows, values in column order.
    pub values: Vec<Vec<Json>>,
}

impl Series {
    /// The value of `column` in row `row`.
    pub fn cell(&self, row: usize, column: &str) -> Option<&Json> {
        let c = self.columns.iter().position(|n| n == column)?;
        self.values.get(row)?.get(c)
    }
}

impl Influx {
    /// Runs a SELECT and returns the series of its (single) statement; an error answer is Err.
    pub fn select(&self, db: &str, q: &str) -> Result<Vec<Series>, InfluxError> {
        let text = self.query(db, q)?;
        let json = Json::parse(&text).map_err(|e| InfluxError::Http(format!("{e} in {text}")))?;
        let result = json
            .get("results")
            .and_then(|r| r.items().first())
            .ok_or_else(|| InfluxError::Http(format!("no results in {text}")))?;
        if let Some(e) = result.get("error") {
            return Err(InfluxError::Http(format!("query error: {e:?}")));
        }
        let mut out = Vec::new();
        for s in result.get("series").map(|s| s.items()).unwrap_or(&[]) {
            out.push(Series {
                name: s
                    .get("name")
                    .and_then(|n| n.as_str())
                    .unwrap_or("")
                    .to_string(),
                columns: s
                    .get("columns")
                    .map(|c| c.items())
                    .unwrap_or(&[])
                    .iter()
                    .map(|c| c.as_str().unwrap_or("").to_string())
                    .collect(),
                values: s
                    .get("values")
                    .map(|v| v.items())
                    .unwrap_or(&[])
                    .iter()
                    .map(|row| row.items().to_vec())
                    .collect(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::Json;

    #[test]
    fn parses_an_influx_answer() {
        let j = Json::parse(
            r#"{"results":[{"statement_id":0,"series":[{"name":"m","columns":["time","t","v"],"values":[[1,null,1.5],[9223372036854775807,"h\u00f6st \"q\"",-2]]}]}]}"#,
        )
        .expect("valid JSON");
        let s = &j.get("results").expect("results").items()[0]
            .get("series")
            .expect("series")
            .items()[0];
        let rows = s.get("values").expect("values").items();
        assert_eq!(rows[1].items()[0].as_i64(), Some(i64::MAX));
        assert_eq!(rows[1].items()[1].as_str(), Some("höst \"q\""));
        assert_eq!(rows[0].items()[2].as_f64(), Some(1.5));
        assert_eq!(rows[0].items()[1], Json::Null);
        assert!(Json::parse("[1,").is_err());
    }
}
