//! The `sink` section of the factory config, and its validation into a target (file or InfluxDB).

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::SinkError;

/// Where facts go: the `sink` field of the factory config. Every field has a default, so `{}`
/// (or no `sink` section at all) means the file sink under the data directory.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkConfig {
    /// `"file"` (the default) or `"influxdb"`.
    pub kind: String,
    /// InfluxDB base URL: `http://host:port` or `https://host[:port]`.
    pub url: String,
    /// For an https `url`: the PEM file of the CA that signed the store's certificate; empty =
    /// the system's CA bundle.
    pub ca_file: String,
    /// `"v1"` (InfluxDB 1.x `/write`) or `"v2"` (2.x and 3.x `/api/v2/write`).
    pub api: String,
    /// v1 database.
    pub database: String,
    /// v1 user, sent as the `u` query parameter when not empty.
    pub username: String,
    /// v1 password, sent as the `p` query parameter.
    pub password: String,
    /// v2 organisation.
    pub org: String,
    /// v2 bucket; empty means `database`.
    pub bucket: String,
    /// v2 token, sent as `Authorization: Token ...`.
    pub token: String,
    /// v1: on "database not found", run `CREATE DATABASE` through `/query`.
    pub create_database: bool,
    /// A batch is written once it holds this many points.
    pub batch_points: usize,
    /// Upper bound on how long a batch stays open to gather more submissions (see `linger_ms`).
    pub flush_ms: u64,
    /// How long the writer waits for more submissions once its queue is empty. 0 (the default)
    /// writes as soon as the queue is drained ("group commit"): a lone write costs one round trip,
    /// and under load batches grow by themselves while the previous write is in flight. Set it to
    /// `flush_ms` for Telegraf's behaviour (fewer, larger writes; up to `flush_ms` more ack latency).
    pub linger_ms: u64,
    /// Per-request timeout, milliseconds (minreq counts whole seconds: rounded up).
    pub timeout_ms: u64,
    /// Submissions queued for the writer before `write` waits (backpressure towards the sessions).
    pub queue: usize,
    /// File sink directory; empty means `<data_dir>/facts`.
    pub dir: String,
    /// InfluxDB: writer threads, each with one request in flight. One request at a time caps the
    /// rate at one batch per InfluxDB round trip; InfluxDB takes concurrent writes faster (see
    /// bench/RESULTS.md). The file sink always has one writer (one ordered append stream).
    pub writers: usize,
}

// The defaults, one function each, named for the field (serde's container `default` takes
// them through `Default`).
fn d_kind() -> String {
    "file".into()
}
fn d_url() -> String {
    "http://127.0.0.1:8086".into()
}
fn d_api() -> String {
    "v1".into()
}
fn d_database() -> String {
    "autofacts".into()
}
fn d_batch_points() -> usize {
    5000
}
fn d_flush_ms() -> u64 {
    1000
}
fn d_timeout_ms() -> u64 {
    10_000
}
fn d_queue() -> usize {
    256
}
fn d_writers() -> usize {
    2
}

impl Default for SinkConfig {
    fn default() -> SinkConfig {
        SinkConfig {
            kind: d_kind(),
            url: d_url(),
            ca_file: String::new(),
            api: d_api(),
            database: d_database(),
            username: String::new(),
            password: String::new(),
            org: String::new(),
            bucket: String::new(),
            token: String::new(),
            create_database: false,
            batch_points: d_batch_points(),
            flush_ms: d_flush_ms(),
            linger_ms: 0,
            timeout_ms: d_timeout_ms(),
            queue: d_queue(),
            dir: String::new(),
            writers: d_writers(),
        }
    }
}

/// Which InfluxDB HTTP API to speak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Api {
    /// 1.x: `/write?db=..`, user and password as query parameters.
    V1 {
        database: String,
        username: String,
        password: String,
        create_database: bool,
    },
    /// 2.x / 3.x: `/api/v2/write?org=..&bucket=..`, token header.
    V2 {
        org: String,
        bucket: String,
        token: String,
    },
}

/// A validated sink target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// Line protocol files in this directory.
    File { dir: PathBuf },
    /// InfluxDB at `base` (scheme, host and port, no trailing slash).
    Influx {
        base: String,
        api: Api,
        timeout: Duration,
        /// Writer threads, each with one request in flight.
        writers: usize,
        /// For https: the CA to trust instead of the system's bundle.
        ca_file: Option<PathBuf>,
    },
}

/// Batching knobs shared by every target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Batching {
    pub batch_points: usize,
    pub flush: Duration,
    pub linger: Duration,
    pub queue: usize,
}

impl SinkConfig {
    /// Checks the settings; `data_dir` anchors the file sink's default directory.
    pub(crate) fn validate(&self, data_dir: &Path) -> Result<(Target, Batching), SinkError> {
        let bad = |what: String| Err(SinkError::Config(what));
        if self.batch_points == 0 {
            return bad("sink.batch_points must be at least 1".into());
        }
        if self.queue == 0 {
            return bad("sink.queue must be at least 1".into());
        }
        let batching = Batching {
            batch_points: self.batch_points,
            flush: Duration::from_millis(self.flush_ms),
            linger: Duration::from_millis(self.linger_ms.min(self.flush_ms)),
            queue: self.queue,
        };
        let target = match self.kind.as_str() {
            "file" | "" => Target::File {
                dir: if self.dir.is_empty() {
                    data_dir.join("facts")
                } else {
                    PathBuf::from(&self.dir)
                },
            },
            "influxdb" => {
                let base = self.url.trim_end_matches('/');
                let Some(rest) = base
                    .strip_prefix("http://")
                    .or_else(|| base.strip_prefix("https://"))
                else {
                    return bad(format!(
                        "sink.url {:?}: expected http:// or https://",
                        self.url
                    ));
                };
                if rest.is_empty() || rest.contains('/') || rest.contains('?') {
                    return bad(format!(
                        "sink.url {:?}: expected http(s)://host:port with no path",
                        self.url
                    ));
                }
                if !self.ca_file.is_empty() && !base.starts_with("https://") {
                    return bad(format!(
                        "sink.ca_file is set but sink.url {:?} is not https://",
                        self.url
                    ));
                }
                if self.timeout_ms == 0 {
                    return bad("sink.timeout_ms must be at least 1".into());
                }
                if !(1..=16).contains(&self.writers) {
                    return bad(format!(
                        "sink.writers must be between 1 and 16, got {}",
                        self.writers
                    ));
                }
                let api = match self.api.as_str() {
                    "v1" | "" => {
                        if self.database.is_empty() {
                            return bad("sink.database must not be empty".into());
                        }
                        Api::V1 {
                            database: self.database.clone(),
                            username: self.username.clone(),
                            password: self.password.clone(),
                            create_database: self.create_database,
                        }
                    }
                    "v2" | "v3" => {
                        let bucket = if self.bucket.is_empty() {
                            self.database.clone()
                        } else {
                            self.bucket.clone()
                        };
                        if bucket.is_empty() {
                            return bad("sink.bucket must not be empty".into());
                        }
                        Api::V2 {
                            org: self.org.clone(),
                            bucket,
                            token: self.token.clone(),
                        }
                    }
                    other => return bad(format!("sink.api {other:?}: expected \"v1\" or \"v2\"")),
                };
                Target::Influx {
                    base: base.to_string(),
                    api,
                    timeout: Duration::from_millis(self.timeout_ms),
                    writers: self.writers,
                    ca_file: (!self.ca_file.is_empty()).then(|| PathBuf::from(&self.ca_file)),
                }
            }
            other => {
                return bad(format!(
                    "sink.kind {other:?}: expected \"file\" or \"influxdb\""
                ))
            }
        };
        Ok((target, batching))
    }
}
