//! A real VictoriaMetrics single node (Debian's `victoria-metrics`) for tests: a free loopback
//! port, its data in a temp dir, always killed on drop; and the queries a test reads it back
//! with (raw samples through `/api/v1/export`, label values).
//!
//! VictoriaMetrics takes InfluxDB line protocol on `/write` and names each sample
//! `<measurement>_<field>` (`system_load1`), the tags becoming labels plus `db` from the URL.
//! It keeps only numeric fields, at millisecond precision.
//!
//! The binary is `$AUTOFACT_VICTORIA` when set, else `/usr/bin/victoria-metrics`, else the first
//! on `PATH`. When it is missing, [`Victoria::launch_or_skip`] panics with a clear message,
//! unless `AUTOFACT_SKIP_VICTORIA=1`, in which case it prints `SKIPPED` and returns `None`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::influx::{encode, Json};
use crate::poll::{free_port, wait_for};
use crate::process::Proc;
use crate::tmp::TempDir;

/// Where victoria-metrics is, if anywhere.
pub fn victoria_path() -> Option<PathBuf> {
    crate::process::find_program(
        "AUTOFACT_VICTORIA",
        "/usr/bin/victoria-metrics",
        "victoria-metrics",
    )
}

/// One exported series: its labels and raw samples.
#[derive(Debug, Clone)]
pub struct Exported {
    /// `__name__` and the other labels.
    pub labels: Vec<(String, String)>,
    /// Sample timestamps, milliseconds.
    pub timestamps_ms: Vec<i64>,
    /// Sample values.
    pub values: Vec<f64>,
}

impl Exported {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A running VictoriaMetrics single node.
#[derive(Debug)]
pub struct Victoria {
    bin: PathBuf,
    port: u16,
    proc: Option<Proc>,
    // Last: the directory goes after the process is killed.
    dir: TempDir,
}

impl Victoria {
    /// Starts it on a free loopback port with its storage in a fresh temp dir; returns once
    /// `/health` answers.
    pub fn launch() -> Result<Victoria, String> {
        let bin = victoria_path().ok_or_else(|| {
            "victoria-metrics not found (looked at $AUTOFACT_VICTORIA, /usr/bin/victoria-metrics, \
             PATH): install Debian's `victoria-metrics` package (tests/run does), or set \
             AUTOFACT_SKIP_VICTORIA=1 to skip"
                .to_string()
        })?;
        let mut last = String::new();
        // A port found free can be taken before it binds it: try again on a new one.
        for _ in 0..3 {
            let dir = TempDir::new("victoria").map_err(|e| format!("temp dir: {e}"))?;
            let port = free_port().map_err(|e| format!("free port: {e}"))?;
            let mut v = Victoria {
                bin: bin.clone(),
                port,
                proc: None,
                dir,
            };
            match v.start() {
                Ok(()) => return Ok(v),
                Err(e) => last = e,
            }
        }
        Err(format!("victoria-metrics did not start: {last}"))
    }

    /// Starts it (again) on the same port and storage; returns once `/health` answers.
    pub fn start(&mut self) -> Result<(), String> {
        if self.proc.is_some() {
            return Ok(());
        }
        let mut cmd = Command::new(&self.bin);
        cmd.arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!(
                "-storageDataPath={}",
                self.dir.join("data").display()
            ))
            .arg("-loggerLevel=WARN")
            // Tests read back what was just written: no 30 s hiding of recent samples.
            .arg("-search.latencyOffset=0s");
        let proc = Proc::spawn("victoria-metrics", cmd, self.dir.path())
            .map_err(|e| format!("spawning {}: {e}", self.bin.display()))?;
        self.proc = Some(proc);
        let health = format!("{}/health", self.url());
        let ready = wait_for("victoria-metrics /health", Duration::from_secs(30), || {
            if let Some(p) = self.proc.as_mut() {
                if let Ok(Some(status)) = p.try_wait() {
                    return Some(Err(format!("victoria-metrics exited with {status}")));
                }
            }
            match minreq::get(&health).with_timeout(2).send() {
                Ok(r) if r.status_code == 200 => Some(Ok(())),
                _ => None,
            }
        });
        match ready {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) | Err(e) => {
                let out = self.output();
                self.kill();
                Err(format!("{e}\n{out}"))
            }
        }
    }

    /// Stops it (SIGTERM: it flushes what it buffered; SIGKILL after 30 s); data stays for
    /// [`Victoria::start`].
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = p.stop(Duration::from_secs(30));
        }
    }

    /// [`Victoria::launch`], or `None` after printing SKIPPED when it is missing and
    /// `AUTOFACT_SKIP_VICTORIA=1`. Panics otherwise.
    pub fn launch_or_skip(test: &str) -> Option<Victoria> {
        if victoria_path().is_none()
            && std::env::var("AUTOFACT_SKIP_VICTORIA").as_deref() == Ok("1")
        {
            println!("SKIPPED {test}: victoria-metrics not installed (AUTOFACT_SKIP_VICTORIA=1)");
            return None;
        }
        match Victoria::launch() {
            Ok(v) => Some(v),
            Err(e) => panic!("{test}: cannot start VictoriaMetrics: {e}"),
        }
    }

    /// `http://127.0.0.1:<port>`: the URL the factory's sink is given.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its output so far, for assertion messages.
    pub fn output(&self) -> String {
        self.proc.as_ref().map(|p| p.output()).unwrap_or_else(|| {
            std::fs::read_to_string(self.dir.join("victoria-metrics.err")).unwrap_or_default()
        })
    }

    /// Makes recently written samples searchable now (they are buffered for about a second).
    pub fn flush(&self) {
        let _ = minreq::get(format!("{}/internal/force_flush", self.url()))
            .with_timeout(10)
            .send();
    }

    /// Every series matching the series selector `selector`, with its raw samples.
    pub fn export(&self, selector: &str) -> Result<Vec<Exported>, String> {
        self.flush();
        let url = format!("{}/api/v1/export?match[]={}", self.url(), encode(selector));
        let r = minreq::get(&url)
            .with_timeout(30)
            .send()
            .map_err(|e| format!("GET {url}: {e}"))?;
        let body = r.as_str().unwrap_or("").to_string();
        if r.status_code != 200 {
            return Err(format!("GET {url}: HTTP {}: {body}", r.status_code));
        }
        let mut out = Vec::new();
        // One JSON object per line.
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let j = Json::parse(line).map_err(|e| format!("export line {line:?}: {e}"))?;
            let labels = match j.get("metric") {
                Some(Json::Obj(m)) => m
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect(),
                _ => Vec::new(),
            };
            let nums = |key: &str| -> Vec<Json> {
                j.get(key).map(|v| v.items().to_vec()).unwrap_or_default()
            };
            out.push(Exported {
                labels,
                timestamps_ms: nums("timestamps").iter().filter_map(Json::as_i64).collect(),
                values: nums("values").iter().filter_map(Json::as_f64).collect(),
            });
        }
        Ok(out)
    }

    /// Timestamps (ns, ascending, deduplicated) of `metric` for `host`.
    pub fn times(&self, metric: &str, host: &str) -> Vec<i64> {
        let sel = format!("{metric}{{host=\"{host}\"}}");
        let mut t: Vec<i64> = self
            .export(&sel)
            .unwrap_or_default()
            .iter()
            .flat_map(|s| s.timestamps_ms.iter().map(|ms| ms * 1_000_000))
            .collect();
        t.sort_unstable();
        t.dedup();
        t
    }

    /// The metric names VictoriaMetrics holds for `host`.
    pub fn metric_names(&self, host: &str) -> Result<Vec<String>, String> {
        let url = format!(
            "{}/api/v1/label/__name__/values?match[]={}",
            self.url(),
            encode(&format!("{{host=\"{host}\"}}"))
        );
        self.flush();
        let r = minreq::get(&url)
            .with_timeout(30)
            .send()
            .map_err(|e| format!("GET {url}: {e}"))?;
        let body = r.as_str().unwrap_or("").to_string();
        let j = Json::parse(&body).map_err(|e| format!("{url}: {e} in {body}"))?;
        Ok(j.get("data")
            .map(|d| d.items())
            .unwrap_or(&[])
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect())
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        self.kill();
    }
}
