//! Launchers for the real `autofactory` and `autofact` binaries (JSON configs written into temp
//! dirs, output kept in files), the "nothing lost" series-gap checker over InfluxDB answers, and
//! small probes of a running process (RSS).
//!
//! The binaries are built once per test process with `cargo build -p autofact -p autofactory`
//! into the target directory the test executable lives in (a no-op when `cargo test --workspace`
//! already built them), so a test never runs stale binaries. `AUTOFACT_E2E_BIN_DIR` points at
//! prebuilt binaries instead and skips the build.

use std::fmt;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::influx::{Influx, Json};
use crate::poll::{free_port, wait_for};
use crate::process::Proc;

/// The enrollment token every e2e factory and agent uses.
pub const TOKEN: &str = "e2e-enrollment-token-0123456789";

/// The InfluxDB database the factories write to.
pub const DB: &str = "autofacts";

/// Paths of the two binaries under test.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `autofact`, the agent.
    pub agent: PathBuf,
    /// `autofactory`, the factory.
    pub factory: PathBuf,
}

/// The binaries, built on first use. Panics with the build output when they cannot be had:
/// every e2e test needs them.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Result<Bins, String>> = OnceLock::new();
    match BINS.get_or_init(build_bins) {
        Ok(b) => b,
        Err(e) => panic!("e2e: the binaries under test are not available: {e}"),
    }
}

fn build_bins() -> Result<Bins, String> {
    let in_dir = |dir: &Path| -> Result<Bins, String> {
        let b = Bins {
            agent: dir.join("autofact"),
            factory: dir.join("autofactory"),
        };
        for p in [&b.agent, &b.factory] {
            if !p.is_file() {
                return Err(format!("{} is missing", p.display()));
            }
        }
        Ok(b)
    };
    if let Some(dir) = std::env::var_os("AUTOFACT_E2E_BIN_DIR") {
        return in_dir(Path::new(&dir));
    }
    // <target>/<profile>/deps/<test exe>: the binaries go to <target>/<profile>.
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("unexpected test executable path {}", exe.display()))?;
    let target = profile_dir
        .parent()
        .ok_or_else(|| format!("no target dir above {}", profile_dir.display()))?;
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace above the tests crate")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .env("CARGO_TARGET_DIR", target)
        .args(["build", "--quiet", "-p", "autofact", "-p", "autofactory"]);
    if release {
        cmd.arg("--release");
    }
    let out = cmd
        .output()
        .map_err(|e| format!("running cargo build: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p autofact -p autofactory failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    in_dir(profile_dir)
}

/// Unix time now in nanoseconds.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// What goes into a factory's JSON config. Periods apply to every fact kind.
#[derive(Debug, Clone)]
pub struct FactorySpec {
    /// Collection period of every kind, ms.
    pub period_ms: u32,
    /// How often agents push a batch, ms.
    pub push_interval_ms: u32,
    /// Agent keepalive ping interval, ms.
    pub ping_interval_ms: u32,
    /// Agent disk buffer cap, bytes (at least 65536).
    pub buffer_cap_bytes: u64,
    /// The `limits` object's members, as JSON text without braces (empty: defaults).
    pub limits: String,
    /// Members of the `periods` object replacing `period_ms` for those kinds, as JSON text
    /// without braces (`"disk_ms": 10000`), so a test can run the periods users run (1-10 s).
    pub periods: String,
    /// The fleet key shared by the factories of a scale-out test (`None`: no `fleet_key`).
    pub fleet_key: Option<String>,
    /// TLS on the agent listener (`tls` and `require_tls`); `None` = plain.
    pub tls: Option<FactoryTls>,
    /// The sink's `ca_file`, for an https InfluxDB URL.
    pub sink_ca_file: Option<PathBuf>,
}

/// The factory's `tls` section and `require_tls`.
#[derive(Debug, Clone)]
pub struct FactoryTls {
    /// Certificate chain, PEM.
    pub cert_file: PathBuf,
    /// Private key, PEM.
    pub key_file: PathBuf,
    /// Refuse plain agents.
    pub require_tls: bool,
}

impl Default for FactorySpec {
    fn default() -> FactorySpec {
        FactorySpec {
            period_ms: 1000,
            push_interval_ms: 1000,
            ping_interval_ms: 1000,
            buffer_cap_bytes: 64 * 1024 * 1024,
            limits: String::new(),
            periods: String::new(),
            fleet_key: None,
            tls: None,
            sink_ca_file: None,
        }
    }
}

/// A real `autofactory run --config <dir>/factory.json` writing to an InfluxDB.
#[derive(Debug)]
pub struct Factory {
    dir: PathBuf,
    config: PathBuf,
    influx_url: String,
    listen: SocketAddr,
    admin: SocketAddr,
    proc: Option<Proc>,
}

impl Factory {
    /// Writes the config into `dir` (data in `dir/factory-data`) and starts the factory on free
    /// loopback ports, writing to `influx_url`. Returns once it accepts connections.
    pub fn launch(dir: &Path, influx_url: &str, spec: &FactorySpec) -> Factory {
        let mut last = String::new();
        // A port found free can be taken before the factory binds it: try again on new ports.
        for _ in 0..3 {
            let (listen, admin) = match (free_port(), free_port()) {
                (Ok(a), Ok(b)) if a != b => (
                    SocketAddr::from(([127, 0, 0, 1], a)),
                    SocketAddr::from(([127, 0, 0, 1], b)),
                ),
                _ => continue,
            };
            let config = dir.join("factory.json");
            let text = factory_config(dir, listen, admin, influx_url, spec);
            if let Err(e) = std::fs::write(&config, text) {
                panic!("writing {}: {e}", config.display());
            }
            let mut f = Factory {
                dir: dir.to_path_buf(),
                config,
                influx_url: influx_url.to_string(),
                listen,
                admin,
                proc: None,
            };
            match f.try_start() {
                Ok(()) => return f,
                Err(e) => last = e,
            }
        }
        panic!("factory did not start: {last}");
    }

    /// Starts it again on the same ports and data dir (after [`Factory::kill`]).
    pub fn start(&mut self) {
        if let Err(e) = self.try_start() {
            panic!("factory did not restart: {e}");
        }
    }

    fn try_start(&mut self) -> Result<(), String> {
        if self.proc.is_some() {
            return Ok(());
        }
        let mut cmd = Command::new(&bins().factory);
        cmd.arg("run").arg("--config").arg(&self.config);
        let proc = Proc::spawn("factory", cmd, &self.dir)
            .map_err(|e| format!("spawning {}: {e}", bins().factory.display()))?;
        self.proc = Some(proc);
        let (listen, admin) = (self.listen, self.admin);
        let proc = &mut self.proc;
        let ready = wait_for("factory listening", Duration::from_secs(30), || {
            if let Some(p) = proc.as_mut() {
                if let Ok(Some(status)) = p.try_wait() {
                    return Some(Err(format!("factory exited with {status}")));
                }
            }
            let up = TcpStream::connect_timeout(&listen, Duration::from_secs(1)).is_ok()
                && admin_get(admin, "/metrics").is_ok();
            up.then_some(Ok(()))
        });
        match ready {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) | Err(e) => {
                let out = self.output();
                if let Some(mut p) = self.proc.take() {
                    p.kill();
                }
                Err(format!("{e}\n{out}"))
            }
        }
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Rewrites its config file with `spec` (same ports, data dir and store) and sends SIGHUP,
    /// as an operator changes a running factory.
    pub fn reconfigure(&self, spec: &FactorySpec) {
        let text = factory_config(&self.dir, self.listen, self.admin, &self.influx_url, spec);
        if let Err(e) = std::fs::write(&self.config, text) {
            panic!("writing {}: {e}", self.config.display());
        }
        if let Some(p) = &self.proc {
            if let Err(e) = p.signal(nix::sys::signal::Signal::SIGHUP) {
                panic!("SIGHUP to the factory: {e}");
            }
        }
    }

    /// SIGTERM, as an operator stops it: waits up to a minute for the drain, then SIGKILL.
    /// Returns the exit status of a clean stop.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut p = self.proc.take()?;
        p.stop(Duration::from_secs(60)).ok().flatten()
    }

    /// The running factory's pid.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().and_then(Proc::pid)
    }

    /// Has it exited on its own? Returns the status if so.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.as_mut().and_then(|p| p.try_wait().ok().flatten())
    }

    /// The websocket listen address.
    pub fn addr(&self) -> SocketAddr {
        self.listen
    }

    /// The admin listen address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// Its log lines (stderr) across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("factory.err")).unwrap_or_default()
    }

    /// Both outputs, for assertion messages (stdout has a line per batch: only its tail).
    pub fn output(&self) -> String {
        let out = std::fs::read_to_string(self.dir.join("factory.out")).unwrap_or_default();
        format!(
            "--- factory stderr\n{}\n--- factory stdout (tail)\n{}",
            self.log(),
            tail(&out, 20)
        )
    }

    /// `GET /clients`, parsed.
    pub fn clients(&self) -> Result<Json, String> {
        let text = admin_get(self.admin, "/clients")?;
        Json::parse(&text).map_err(|e| format!("/clients: {e} in {text}"))
    }

    /// Every `/clients` entry whose hostname is `host` (several when clients share it).
    pub fn clients_named(&self, host: &str) -> Vec<Json> {
        let Ok(doc) = self.clients() else {
            return Vec::new();
        };
        doc.get("clients")
            .map(|c| c.items().to_vec())
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.get("hostname").and_then(Json::as_str) == Some(host))
            .collect()
    }

    /// The `/clients` entry whose hostname is `host`.
    pub fn client(&self, host: &str) -> Option<Json> {
        let doc = self.clients().ok()?;
        doc.get("clients")?
            .items()
            .iter()
            .find(|c| c.get("hostname").and_then(Json::as_str) == Some(host))
            .cloned()
    }

    /// Is the agent named `host` connected now?
    pub fn connected(&self, host: &str) -> bool {
        self.client(host)
            .and_then(|c| c.get("connected").cloned())
            .is_some_and(|v| v == Json::Bool(true))
    }

    /// `GET /metrics` (Prometheus text).
    pub fn metrics(&self) -> Result<String, String> {
        admin_get(self.admin, "/metrics")
    }
}

impl Drop for Factory {
    fn drop(&mut self) {
        self.kill();
    }
}

fn factory_config(
    dir: &Path,
    listen: SocketAddr,
    admin: SocketAddr,
    influx_url: &str,
    s: &FactorySpec,
) -> String {
    let p = s.period_ms;
    let mut periods = format!(
        r#""cpu_ms": {p}, "kernel_ms": {p}, "mem_ms": {p}, "swap_ms": {p}, "system_ms": {p},
                 "net_ms": {p}, "diskio_ms": {p}, "disk_ms": {p}, "temp_ms": {p}, "health_ms": {p},
                 "processes_ms": {p}"#
    );
    // Later members win in nanoserde, but the factory refuses duplicate keys: keep only the
    // kinds the override does not name.
    if !s.periods.is_empty() {
        let named: Vec<&str> = s
            .periods
            .split(',')
            .filter_map(|m| m.split(':').next())
            .map(|k| k.trim().trim_matches('"'))
            .collect();
        let kept: Vec<&str> = periods
            .split(',')
            .filter(|m| {
                let k = m.split(':').next().unwrap_or("").trim().trim_matches('"');
                !named.contains(&k)
            })
            .collect();
        periods = kept.join(",");
        if !periods.trim().is_empty() {
            periods.push(',');
        }
        periods.push_str(&s.periods);
    }
    let fleet_key = s
        .fleet_key
        .as_ref()
        .map(|k| format!(r#""fleet_key": "{k}","#))
        .unwrap_or_default();
    let tls = match &s.tls {
        Some(t) => format!(
            r#""tls": {{ "cert_file": "{}", "key_file": "{}" }}, "require_tls": {},"#,
            t.cert_file.display(),
            t.key_file.display(),
            t.require_tls
        ),
        None => String::new(),
    };
    let sink_ca = match &s.sink_ca_file {
        Some(f) => format!(r#", "ca_file": "{}""#, f.display()),
        None => String::new(),
    };
    format!(
        r#"{{
  "listen": "{listen}",
  "admin_listen": "{admin}",
  "data_dir": "{data}",
  "token": "{TOKEN}",{fleet_key}
  {tls}
  "sink": {{ "kind": "influxdb", "url": "{influx_url}", "database": "{DB}", "create_database": true,
            "timeout_ms": 5000{sink_ca} }},
  "defaults": {{
    "periods": {{ {periods} }},
    "push_interval_ms": {push}, "ping_interval_ms": {ping}, "buffer_cap_bytes": {cap},
    "give_up_secs": 0
  }},
  "limits": {{ {limits} }}
}}
"#,
        data = dir.join("factory-data").display(),
        push = s.push_interval_ms,
        ping = s.ping_interval_ms,
        cap = s.buffer_cap_bytes,
        limits = s.limits,
    )
}

/// GET `path` from an admin listener; the body of a 200.
pub fn admin_get(admin: SocketAddr, path: &str) -> Result<String, String> {
    let r = minreq::get(format!("http://{admin}{path}"))
        .with_timeout(5)
        .send()
        .map_err(|e| format!("GET {path}: {e}"))?;
    if r.status_code != 200 {
        return Err(format!("GET {path}: HTTP {}", r.status_code));
    }
    Ok(r.as_str().unwrap_or("").to_string())
}

/// One agent's identity in a test.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// Hostname override: the `host` tag.
    pub hostname: String,
    /// `region` tag.
    pub region: String,
    /// `zone` tag (may be empty).
    pub zone: String,
    /// Extra environment of the agent process (its test-only seams, e.g. a slow fsync).
    pub env: Vec<(String, String)>,
    /// `wss://localhost:PORT` with this `ca_file` (and `pin_sha256`); `None` = plain `ws`.
    pub tls: Option<AgentTls>,
}

/// What a `wss://` agent trusts.
#[derive(Debug, Clone)]
pub struct AgentTls {
    /// The CA bundle, PEM.
    pub ca_file: PathBuf,
    /// `pin_sha256` when set.
    pub pin_sha256: Option<String>,
}

impl AgentSpec {
    /// A spec with these tags and no zone.
    pub fn new(hostname: &str, region: &str) -> AgentSpec {
        AgentSpec {
            hostname: hostname.into(),
            region: region.into(),
            zone: String::new(),
            env: Vec::new(),
            tls: None,
        }
    }
}

/// A real `autofact run --config <dir>/<hostname>.json`, its data in `<dir>/<hostname>-data`.
#[derive(Debug)]
pub struct Agent {
    dir: PathBuf,
    name: String,
    config: PathBuf,
    /// Extra `autofact run` flags (`--sys-root DIR`, say).
    args: Vec<std::ffi::OsString>,
    env: Vec<(String, String)>,
    proc: Option<Proc>,
}

impl Agent {
    /// Writes the config (server `server`, e.g. a factory or a proxy) and starts the agent.
    pub fn launch(dir: &Path, server: SocketAddr, spec: &AgentSpec) -> Agent {
        Agent::launch_with(dir, server, spec, &spec.hostname, &[])
    }

    /// Like [`Agent::launch`], with files named after `name` instead of the hostname (two
    /// agents with one hostname): `<dir>/<name>.json`, `<dir>/<name>-data`, `<dir>/<name>.err`.
    pub fn launch_named(dir: &Path, server: SocketAddr, spec: &AgentSpec, name: &str) -> Agent {
        Agent::launch_with(dir, server, spec, name, &[])
    }

    /// [`Agent::launch_named`] with extra `autofact run` flags, e.g. `--sys-root` pointing at
    /// a captured `/sys` so that a machine without thermal zones reports a Pi's.
    pub fn launch_with(
        dir: &Path,
        server: SocketAddr,
        spec: &AgentSpec,
        name: &str,
        args: &[std::ffi::OsString],
    ) -> Agent {
        let name = name.to_string();
        let config = dir.join(format!("{name}.json"));
        // The certificate names `localhost`: a wss:// agent uses that name, checked by TLS.
        let (server, trust) = match &spec.tls {
            Some(t) => (
                format!("wss://localhost:{}", server.port()),
                format!(
                    r#", "ca_file": "{}"{}"#,
                    t.ca_file.display(),
                    t.pin_sha256
                        .as_ref()
                        .map(|p| format!(r#", "pin_sha256": "{p}""#))
                        .unwrap_or_default()
                ),
            ),
            None => (server.to_string(), String::new()),
        };
        let text = format!(
            r#"{{ "server": "{server}", "data_dir": "{data}", "token": "{TOKEN}",
  "region": "{region}", "zone": "{zone}", "hostname": "{hostname}"{trust} }}
"#,
            data = dir.join(format!("{name}-data")).display(),
            region = spec.region,
            zone = spec.zone,
            hostname = spec.hostname,
        );
        if let Err(e) = std::fs::write(&config, text) {
            panic!("writing {}: {e}", config.display());
        }
        let mut a = Agent {
            dir: dir.to_path_buf(),
            name,
            config,
            args: args.to_vec(),
            env: spec.env.clone(),
            proc: None,
        };
        a.start();
        a
    }

    /// Starts it (again) with the same config and data dir.
    pub fn start(&mut self) {
        if self.proc.is_some() {
            return;
        }
        let mut cmd = Command::new(&bins().agent);
        cmd.arg("run").arg("--config").arg(&self.config);
        cmd.args(&self.args);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        match Proc::spawn(&self.name, cmd, &self.dir) {
            Ok(p) => self.proc = Some(p),
            Err(e) => panic!("spawning {}: {e}", bins().agent.display()),
        }
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Points its config at another factory (or balancer); takes effect at its next start.
    pub fn set_server(&self, server: SocketAddr) {
        let text = match std::fs::read_to_string(&self.config) {
            Ok(t) => t,
            Err(e) => panic!("reading {}: {e}", self.config.display()),
        };
        let start = text
            .find(r#""server": ""#)
            .map(|i| i + r#""server": ""#.len());
        let Some(start) = start else {
            panic!("no server in {}", self.config.display());
        };
        let end = start + text[start..].find('"').unwrap_or(0);
        let new = format!("{}{server}{}", &text[..start], &text[end..]);
        if let Err(e) = std::fs::write(&self.config, new) {
            panic!("writing {}: {e}", self.config.display());
        }
    }

    /// Has it exited on its own? Returns the status if so.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.proc.as_mut().and_then(|p| p.try_wait().ok().flatten())
    }

    /// The name its files carry: its hostname, unless launched with [`Agent::launch_named`].
    pub fn host(&self) -> &str {
        &self.name
    }

    /// Its data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join(format!("{}-data", self.name))
    }

    /// Its log (stderr) across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.err", self.name))).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A tmpfs mounted by the test (it runs as root) at a path: a small disk to fill and empty.
/// Always unmounted on drop (lazily, so it returns at once even while a process still has a
/// file open there).
#[derive(Debug)]
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount's syntax: `16m`) at `path`, creating it. Without root
    /// the test fails, unless `AUTOFACT_SKIP_TMPFS=1`: then it prints SKIPPED and gets `None`.
    pub fn mount(path: &Path, size: &str, test: &str) -> Option<Tmpfs> {
        if let Err(e) = std::fs::create_dir_all(path) {
            panic!("{test}: creating {}: {e}", path.display());
        }
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(path)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs {
                path: path.to_path_buf(),
            }),
            other => {
                let why = format!("mount -t tmpfs at {}: {other:?}", path.display());
                if std::env::var("AUTOFACT_SKIP_TMPFS").as_deref() == Ok("1") {
                    println!("SKIPPED {test}: {why} (needs root; AUTOFACT_SKIP_TMPFS=1)");
                    None
                } else {
                    panic!("{test}: {why}: this test needs root (AUTOFACT_SKIP_TMPFS=1 skips it)");
                }
            }
        }
    }

    /// Fills it: appends to a filler file until ENOSPC (again: whatever was freed meanwhile).
    /// Returns the bytes written.
    pub fn fill(&self) -> u64 {
        fill_up(&self.path)
    }

    /// Keeps it full until the guard is dropped: fills again every 100 ms, taking whatever
    /// another process frees (a store deleting an old journal), as other writers on a full
    /// disk would.
    pub fn keep_full(&self) -> KeepFull {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, path) = (stop.clone(), self.path.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                fill_up(&path);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        KeepFull {
            stop,
            thread: Some(thread),
        }
    }

    /// Frees what [`Tmpfs::fill`] took.
    pub fn free(&self) {
        let path = self.path.join("filler");
        if let Err(e) = std::fs::remove_file(&path) {
            panic!("removing {}: {e}", path.display());
        }
    }

    /// Bytes available, from statvfs.
    pub fn available(&self) -> u64 {
        nix::sys::statvfs::statvfs(&self.path)
            // The field types differ by target (u32 on 32-bit); the tests run on 64-bit Linux.
            .map(|s| s.blocks_available() * s.fragment_size())
            .unwrap_or(0)
    }
}

/// Stops [`Tmpfs::keep_full`]'s filler when dropped.
#[derive(Debug)]
pub struct KeepFull {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for KeepFull {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Appends to `<dir>/filler` until ENOSPC; returns the bytes written.
fn fill_up(dir: &Path) -> u64 {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        Ok(f) => f,
        // Already so full that not even the file can be created: full.
        Err(e) if e.raw_os_error() == Some(28) => return 0,
        Err(e) => panic!("opening {}: {e}", path.display()),
    };
    let chunk = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    n
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Resident set size of `pid` in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Timestamps (ns, ascending) of `host`'s points in `measurement`, read through `field`.
pub fn times(influx: &Influx, measurement: &str, field: &str, host: &str) -> Vec<i64> {
    let q = format!("SELECT \"{field}\" FROM \"{measurement}\" WHERE \"host\" = '{host}'");
    let mut out: Vec<i64> = match influx.select(DB, &q) {
        Ok(series) => series
            .iter()
            .flat_map(|s| s.values.iter())
            .filter_map(|row| row.first().and_then(Json::as_i64))
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort_unstable();
    out
}

/// The `system` series of `host`: one point per collection period when nothing was lost.
pub fn system_times(influx: &Influx, host: &str) -> Vec<i64> {
    times(influx, "system", "load1", host)
}

/// The latest value of an integer `field` of `host`'s `autofact` (health) points.
pub fn last_health(influx: &Influx, host: &str, field: &str) -> Option<i64> {
    let q = format!("SELECT last(\"{field}\") FROM \"autofact\" WHERE \"host\" = '{host}'");
    let s = influx.select(DB, &q).ok()?;
    s.first()?.cell(0, "last")?.as_i64()
}

/// The largest value of an integer `field` of `host`'s `autofact` points.
pub fn max_health(influx: &Influx, host: &str, field: &str) -> Option<i64> {
    let q = format!("SELECT max(\"{field}\") FROM \"autofact\" WHERE \"host\" = '{host}'");
    let s = influx.select(DB, &q).ok()?;
    s.first()?.cell(0, "max")?.as_i64()
}

/// Waits until `host`'s `system` series reaches `until_ns` (everything collected up to then
/// arrived, as far as the latest point shows); returns the series.
pub fn wait_series_until(
    influx: &Influx,
    host: &str,
    until_ns: i64,
    timeout: Duration,
) -> Result<Vec<i64>, String> {
    wait_for(
        &format!("{host}'s system series to reach {until_ns}"),
        timeout,
        || {
            let t = system_times(influx, host);
            t.last().is_some_and(|&l| l >= until_ns).then_some(t)
        },
    )
    .map_err(|e| {
        let t = system_times(influx, host);
        format!("{e}; it has {} points, last {:?}", t.len(), t.last())
    })
}

/// A hole in a series: no point strictly between `from` and `to` (ns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The point before the hole.
    pub from: i64,
    /// The point after it.
    pub to: i64,
}

impl Gap {
    /// Its length in seconds.
    pub fn secs(&self) -> f64 {
        (self.to - self.from) as f64 / 1e9
    }
}

/// What the gap checker found in one series.
#[derive(Debug, Clone)]
pub struct SeriesReport {
    /// Host of the series.
    pub host: String,
    /// Points in it.
    pub points: usize,
    /// First and last timestamp, ns.
    pub first: i64,
    /// Last timestamp, ns.
    pub last: i64,
    /// Points expected at one per period from first to last.
    pub expected: usize,
    /// Holes longer than 1.5 periods.
    pub gaps: Vec<Gap>,
}

impl fmt::Display for SeriesReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} points over {:.1} s (expected {}), {} gap(s)",
            self.host,
            self.points,
            (self.last - self.first) as f64 / 1e9,
            self.expected,
            self.gaps.len()
        )?;
        for g in &self.gaps {
            write!(f, " [{:.1} s from {}]", g.secs(), g.from)?;
        }
        Ok(())
    }
}

/// Every hole longer than one and a half periods in `times` (ascending), with counts.
pub fn series_report(host: &str, times: &[i64], period: Duration) -> SeriesReport {
    let p = period.as_nanos() as i64;
    let limit = p + p / 2;
    let gaps = times
        .windows(2)
        .filter(|w| w[1] - w[0] > limit)
        .map(|w| Gap {
            from: w[0],
            to: w[1],
        })
        .collect();
    let (first, last) = match (times.first(), times.last()) {
        (Some(&a), Some(&b)) => (a, b),
        _ => (0, 0),
    };
    SeriesReport {
        host: host.to_string(),
        points: times.len(),
        first,
        last,
        expected: if times.is_empty() {
            0
        } else {
            ((last - first + p / 2) / p) as usize + 1
        },
        gaps,
    }
}

/// "Nothing lost": the series starts by `started_by` (ns), reaches `until` (ns), has one point
/// per period, and every hole longer than 1.5 periods lies inside one of `allowed` (ns ranges,
/// the times the scenario means to lose). Returns the report, or why it fails.
pub fn check_series(
    host: &str,
    times: &[i64],
    period: Duration,
    started_by: i64,
    until: i64,
    allowed: &[(i64, i64)],
) -> Result<SeriesReport, String> {
    let r = series_report(host, times, period);
    if r.points == 0 {
        return Err(format!("{host}: no points at all"));
    }
    if r.first > started_by {
        return Err(format!(
            "{r}: first point {:.1} s after it should have started",
            (r.first - started_by) as f64 / 1e9
        ));
    }
    if r.last < until {
        return Err(format!(
            "{r}: last point {:.1} s before the end of the run",
            (until - r.last) as f64 / 1e9
        ));
    }
    let unexpected: Vec<&Gap> = r
        .gaps
        .iter()
        .filter(|g| !allowed.iter().any(|&(a, b)| g.from >= a && g.to <= b))
        .collect();
    if !unexpected.is_empty() {
        return Err(format!("{r}: unexpected gap(s) {unexpected:?}"));
    }
    let missing: usize = r
        .gaps
        .iter()
        .map(|g| ((g.to - g.from) / period.as_nanos() as i64) as usize - 1)
        .sum();
    // No duplicates are possible (same timestamp = same point), so count = span minus holes.
    if r.points + missing + 1 < r.expected {
        return Err(format!("{r}: fewer points than periods"));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn gaps_longer_than_one_and_a_half_periods_are_found() {
        let t: Vec<i64> = [0, 1, 2, 3, 6, 7, 8].iter().map(|x| x * S).collect();
        let r = series_report("h", &t, Duration::from_secs(1));
        assert_eq!(
            r.gaps,
            vec![Gap {
                from: 3 * S,
                to: 6 * S
            }]
        );
        assert_eq!((r.points, r.expected), (7, 9));
        // A point 1.4 periods late is jitter, not a hole.
        let t = [0, S, 2 * S + 4 * S / 10];
        assert!(series_report("h", &t, Duration::from_secs(1))
            .gaps
            .is_empty());
    }

    #[test]
    fn check_series_allows_only_the_intended_holes() {
        let t: Vec<i64> = [10, 11, 12, 20, 21, 22].iter().map(|x| x * S).collect();
        let p = Duration::from_secs(1);
        assert!(check_series("h", &t, p, 10 * S, 22 * S, &[]).is_err());
        assert!(check_series("h", &t, p, 10 * S, 22 * S, &[(11 * S, 21 * S)]).is_ok());
        // Window too narrow: the hole starts before it.
        assert!(check_series("h", &t, p, 10 * S, 22 * S, &[(12 * S + 1, 21 * S)]).is_err());
        // Started late, or stopped early.
        let full: Vec<i64> = (10..=22).map(|x| x * S).collect();
        assert!(check_series("h", &full, p, 9 * S, 22 * S, &[]).is_err());
        assert!(check_series("h", &full, p, 10 * S, 23 * S, &[]).is_err());
        assert!(check_series("h", &full, p, 10 * S, 22 * S, &[]).is_ok());
        assert!(check_series("h", &[], p, 0, 0, &[]).is_err());
    }
}
