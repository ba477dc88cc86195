//! The factory itself: shared state (config, inventory, sink, live sessions), the accept loop
//! with its connection limit, reload, and the graceful shutdown sequence.

use crate::config::FactoryConfig;
use crate::error::Error;
use crate::inventory::Inventory;
use crate::metrics::{Metrics, Reason};
use crate::session::{self, Control};
use crate::tls::TlsListener;
use autofact_fbs::Config;
use smol::channel::{Receiver, Sender};
use smol::Async;
use std::collections::HashMap;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// How long shutdown waits for in-flight sink writes before it stops the sink anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections past `max_connections` still get a websocket upgrade and a Reject{Busy}, up to
/// this many at once; past that they are closed at TCP level without a word.
const BUSY_SLACK: u64 = 1024;

/// A boxed sink write.
pub type WriteFuture =
    Pin<Box<dyn Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + Send>>;

/// Where facts go. Implemented by [`crate::sink::Sink`]; tests substitute an in-memory one.
pub trait FactSink: Send + Sync + 'static {
    /// Resolves once `lines` (from client `client`) are durable -- written, or refused by the
    /// store and kept as dead letters under `client`; waits while the store is failing; an
    /// error only when the sink has shut down.
    fn write(&self, client: &str, lines: String, points: usize) -> WriteFuture;
    /// Resolves once `lines` that the factory itself refuses (never sent to the store, e.g. a
    /// timestamp it could not trust) are kept as dead letters under `client` with `reason`.
    /// Test sinks keep them with the rest by default.
    fn keep_refused(&self, client: &str, reason: &str, lines: String) -> WriteFuture {
        let _ = reason;
        let points = lines.lines().count();
        self.write(client, lines, points)
    }
    /// Drains in-flight writes, then stops.
    fn shutdown(&self);
    /// Where the facts go, for the startup line.
    fn describe(&self) -> String {
        "a test sink".to_string()
    }
}

impl FactSink for crate::sink::Sink {
    fn write(&self, client: &str, lines: String, points: usize) -> WriteFuture {
        let (sink, client) = (self.clone(), client.to_string());
        Box::pin(async move {
            sink.write(&client, lines, points)
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
    }
    fn keep_refused(&self, client: &str, reason: &str, lines: String) -> WriteFuture {
        let (sink, client, reason) = (self.clone(), client.to_string(), reason.to_string());
        Box::pin(async move {
            sink.keep_refused(&client, &reason, lines)
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        })
    }
    fn shutdown(&self) {
        crate::sink::Sink::shutdown(self)
    }
    fn describe(&self) -> String {
        crate::sink::Sink::describe(self).to_string()
    }
}

/// What the factory is started with.
pub struct Settings {
    /// The validated configuration.
    pub config: FactoryConfig,
    /// The file it came from; `reload` re-reads it. `None` = defaults, reload keeps them.
    pub config_path: Option<PathBuf>,
    /// A sink to use instead of starting the one configured (tests).
    pub sink: Option<Arc<dyn FactSink>>,
}

/// A live session as seen from outside: how to reach it and what Config it has.
pub(crate) struct SessionEntry {
    pub conn: u64,
    pub region: String,
    pub hostname: String,
    pub config: Config,
    pub tx: Sender<Control>,
}

/// State shared by the accept loop, sessions, reload and the admin listener.
pub(crate) struct Shared {
    pub config: RwLock<Arc<FactoryConfig>>,
    pub config_path: Option<PathBuf>,
    pub token: RwLock<String>,
    pub inventory: Inventory,
    pub sink: Arc<dyn FactSink>,
    /// TLS on the agent listener, when the config has a `tls` section.
    pub tls: Option<Arc<TlsListener>>,
    pub metrics: Arc<Metrics>,
    /// What batches say for the fleet inventory measurement (see [`crate::fleet`]).
    pub fleet: crate::fleet::Observed,
    /// Agents' boot references from earlier connections (see [`crate::clock`]).
    pub boots: crate::clock::BootReferences,
    pub sessions: Mutex<HashMap<String, SessionEntry>>,
    pub next_conn: AtomicU64,
    /// Dropped (set to None) to tell every session to stop: their receivers then fail.
    pub stop_tx: Mutex<Option<Sender<()>>>,
    pub stop_rx: Receiver<()>,
}

impl Shared {
    pub fn config(&self) -> Arc<FactoryConfig> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn token(&self) -> String {
        self.token.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionEntry>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running factory; a cheap clonable handle.
#[derive(Clone)]
pub struct Factory {
    pub(crate) shared: Arc<Shared>,
}

/// The enrollment token: the configured one, else the one stored in the data dir, else a new
/// random one stored there (0600). Returns the token and, when just generated, its path.
fn resolve_token(cfg: &FactoryConfig) -> Result<(String, Option<PathBuf>), Error> {
    if let Some(t) = &cfg.token {
        return Ok((t.clone(), None));
    }
    let path = cfg.data_dir.join("enrollment-token");
    match std::fs::read_to_string(&path) {
        Ok(t) if t.trim().len() >= 16 => return Ok((t.trim().to_string(), None)),
        Ok(_) => {
            return Err(Error::config(
                path.display().to_string(),
                "stored enrollment token is shorter than 16 characters",
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    }
    let token = crate::ids::new_secret().map_err(|e| Error::io("read /dev/urandom", e))?;
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(format!("{token}\n").as_bytes())?;
        f.sync_all()
    };
    write().map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    Ok((token, Some(path)))
}

impl Factory {
    /// Creates the data dir, opens the inventory, resolves the token and starts the sink.
    pub fn open(settings: Settings) -> Result<Factory, Error> {
        let cfg = settings.config;
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| Error::io(format!("create {}", cfg.data_dir.display()), e))?;
        // TLS and the sink first: a bad certificate or sink section is a config error and
        // should be reported before anything is created or generated.
        let tls = match &cfg.tls {
            Some(files) => Some(Arc::new(TlsListener::new(files, cfg.require_tls)?)),
            None => None,
        };
        let metrics = Arc::new(Metrics::default());
        let sink: Arc<dyn FactSink> = match settings.sink {
            Some(s) => s,
            None => Arc::new(crate::sink::Sink::start(
                &cfg.sink,
                &cfg.data_dir,
                metrics.clone(),
            )?),
        };
        let opened = Inventory::open_with(&cfg.data_dir, metrics.clone())
            .and_then(|inv| resolve_token(&cfg).map(|t| (inv, t)));
        let (inventory, (token, generated)) = match opened {
            Ok(x) => x,
            Err(e) => {
                sink.shutdown();
                return Err(e);
            }
        };
        if let Some(path) = generated {
            // Printed once, on stdout, so an operator can copy it into the agents' configs.
            println!("autofactory: no token configured; generated enrollment token {token}");
            println!(
                "autofactory: (stored in {}; set \"token\" in the config to choose one)",
                path.display()
            );
        } else if cfg.token.is_none() {
            crate::info!(
                "enrollment token from {}",
                cfg.data_dir.join("enrollment-token").display()
            );
        }
        let (stop_tx, stop_rx) = smol::channel::bounded(1);
        Ok(Factory {
            shared: Arc::new(Shared {
                config: RwLock::new(Arc::new(cfg)),
                config_path: settings.config_path,
                token: RwLock::new(token),
                inventory,
                sink,
                tls,
                metrics,
                fleet: Default::default(),
                boots: Default::default(),
                sessions: Mutex::new(HashMap::new()),
                next_conn: AtomicU64::new(1),
                stop_tx: Mutex::new(Some(stop_tx)),
                stop_rx,
            }),
        })
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// The inventory.
    pub fn inventory(&self) -> &Inventory {
        &self.shared.inventory
    }

    /// The current configuration.
    pub fn config(&self) -> Arc<FactoryConfig> {
        self.shared.config()
    }

    /// Where the facts go.
    pub fn sink_description(&self) -> String {
        self.shared.sink.describe()
    }

    /// The enrollment token in force.
    pub fn token(&self) -> String {
        self.shared.token()
    }

    /// Ids of the clients connected now.
    pub fn connected(&self) -> Vec<String> {
        self.shared.sessions().keys().cloned().collect()
    }

    /// Re-reads the config file (SIGHUP). On error the running config stays and the error is
    /// returned (and logged). Returns how many clients were sent a new Config.
    pub fn reload(&self) -> Result<usize, Error> {
        let Some(path) = &self.shared.config_path else {
            crate::info!("reload: no config file, nothing to re-read");
            return Ok(0);
        };
        match FactoryConfig::load(path) {
            Ok(cfg) => Ok(self.apply_config(cfg)),
            Err(e) => {
                crate::warn!("reload failed, keeping the running config: {e}");
                Err(e)
            }
        }
    }

    /// Puts `cfg` in force and pushes the changed effective Config to every connected client
    /// it concerns. Limits apply to connections accepted from now on; settings that need a
    /// restart (addresses, data dir, sink) are logged and not applied. Returns how many clients were sent a new Config.
    pub fn apply_config(&self, mut cfg: FactoryConfig) -> usize {
        let old = self.shared.config();
        if cfg.listen != old.listen
            || cfg.admin_listen != old.admin_listen
            || cfg.data_dir != old.data_dir
            || cfg.sink != old.sink
        {
            crate::warn!("reload: listen, admin_listen, data_dir and sink changes need a restart; keeping the running ones");
        }
        cfg.listen = old.listen;
        cfg.admin_listen = old.admin_listen;
        cfg.data_dir = old.data_dir.clone();
        cfg.sink = old.sink.clone();
        cfg.sink_text = old.sink_text.clone();
        self.reload_tls(&mut cfg, &old);
        if let Some(t) = &cfg.token {
            *self.shared.token.write().unwrap_or_else(|p| p.into_inner()) = t.clone();
        }
        let cfg = Arc::new(cfg);
        *self
            .shared
            .config
            .write()
            .unwrap_or_else(|p| p.into_inner()) = cfg.clone();
        let mut pushed = 0;
        let mut sessions = self.shared.sessions();
        for (id, entry) in sessions.iter_mut() {
            let new = cfg.effective(&entry.region, id);
            if new == entry.config {
                continue;
            }
            crate::info!(
                "config -> {} ({id}): {}",
                entry.hostname,
                describe_change(&entry.config, &new)
            );
            entry.config = new;
            // The control queue is unbounded (Configs are rare); sending fails only when the
            // session is already ending.
            if entry.tx.try_send(Control::Config(new)).is_ok() {
                pushed += 1;
                self.shared
                    .metrics
                    .configs_pushed
                    .fetch_add(1, Ordering::Relaxed);
            } else {
                crate::warn!("config for {id} not queued: session is closing");
            }
        }
        crate::info!("reload: config applied, {pushed} client(s) sent a new Config");
        pushed
    }

    /// SIGHUP for TLS: re-reads the certificate (renewal without dropping agents) and takes
    /// `require_tls`. Turning TLS on or off needs a restart; a certificate that fails to load
    /// keeps the running one (and its files in `cfg`).
    fn reload_tls(&self, cfg: &mut FactoryConfig, old: &FactoryConfig) {
        let (Some(listener), Some(files)) = (&self.shared.tls, &cfg.tls) else {
            if cfg.tls.is_some() != old.tls.is_some() {
                crate::warn!("reload: adding or removing the tls section needs a restart");
            }
            cfg.tls = old.tls.clone();
            cfg.require_tls = old.require_tls;
            return;
        };
        match listener.reload(files, cfg.require_tls) {
            Ok(()) => crate::info!(
                "reload: TLS certificate re-read from {} (require_tls {})",
                files.cert_file.display(),
                cfg.require_tls
            ),
            Err(e) => {
                crate::warn!("reload: keeping the running TLS certificate: {e}");
                cfg.tls = old.tls.clone();
                cfg.require_tls = old.require_tls;
            }
        }
    }

    /// Tells every session to stop (they finish in-flight writes, ack, and close with 1001).
    pub fn stop(&self) {
        self.shared
            .stop_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// Accepts agents on `listener` until `shutdown` resolves, then shuts down gracefully:
    /// stop accepting, let sessions drain their in-flight writes, stop the sink, persist.
    pub async fn serve(
        &self,
        listener: Async<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let shared = &self.shared;
        // Sessions run on our own executor with one thread per core (smol's global executor
        // has a single thread unless SMOL_THREADS says otherwise); the threads end with serve.
        let executor = Arc::new(smol::Executor::new());
        let (threads_stop, threads_rx) = smol::channel::bounded::<()>(1);
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut threads = Vec::new();
        for i in 0..n {
            let ex = executor.clone();
            let rx = threads_rx.clone();
            let t = std::thread::Builder::new()
                .name(format!("autofactory-{i}"))
                .spawn(move || {
                    smol::block_on(ex.run(async {
                        let _ = rx.recv().await;
                    }))
                })
                .map_err(|e| Error::io("start executor thread", e))?;
            threads.push(t);
        }
        // Every session task holds a clone of `alive_tx`; when all are gone `alive_rx` fails.
        let (alive_tx, alive_rx) = smol::channel::bounded::<()>(1);
        let accept = async {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        crate::warn!("accept: {e}");
                        smol::Timer::after(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                self.accepted(&executor, stream, peer, alive_tx.clone());
            }
        };
        let stop_rx = shared.stop_rx.clone();
        smol::future::or(accept, async {
            smol::future::or(shutdown, async {
                let _ = stop_rx.recv().await;
            })
            .await
        })
        .await;
        drop(listener);
        drop(alive_tx);
        crate::info!("shutting down: no new connections; draining sessions");
        self.stop();
        let drained = smol::future::or(
            async {
                let _ = alive_rx.recv().await;
                true
            },
            async {
                smol::Timer::after(DRAIN_TIMEOUT).await;
                false
            },
        )
        .await;
        shared.sink.shutdown();
        if !drained {
            crate::warn!(
                "shutdown: sink writes still pending after {DRAIN_TIMEOUT:?}; sink stopped"
            );
            let _ = smol::future::or(
                async {
                    let _ = alive_rx.recv().await;
                },
                async {
                    smol::Timer::after(Duration::from_secs(5)).await;
                },
            )
            .await;
        }
        drop(threads_stop);
        let _ = smol::unblock(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
        if let Err(e) = smol::unblock({
            let s = shared.clone();
            move || s.inventory.close()
        })
        .await
        {
            // Not a reason to fail the shutdown: enrollments are durable already; what is lost
            // is last-seen and last-acked updates, so at worst a batch is written twice.
            crate::warn!(
                "shutdown: {} inventory record(s) not saved: {e}",
                shared.inventory.unsaved()
            );
        }
        crate::info!("shutdown complete");
        Ok(())
    }

    fn accepted(
        &self,
        executor: &smol::Executor<'static>,
        stream: Async<std::net::TcpStream>,
        peer: SocketAddr,
        alive: Sender<()>,
    ) {
        let shared = self.shared.clone();
        let m = &shared.metrics;
        m.connections_accepted.fetch_add(1, Ordering::Relaxed);
        let open = m.open_connections.fetch_add(1, Ordering::Relaxed) + 1;
        let limit = shared.config().limits.max_connections as u64;
        if open > limit + BUSY_SLACK {
            m.open_connections.fetch_sub(1, Ordering::Relaxed);
            m.reject(Reason::Busy);
            crate::info_limited!(
                "rejected {peer}: busy ({open} open connections), closed without upgrade"
            );
            return;
        }
        let busy = open > limit;
        let _ = stream.get_ref().set_nodelay(true);
        executor
            .spawn(async move {
                session::run(&shared, stream, peer, busy).await;
                shared
                    .metrics
                    .open_connections
                    .fetch_sub(1, Ordering::Relaxed);
                drop(alive);
            })
            .detach();
    }
}

/// "push_interval_ms 10000->5000, periods.cpu_ms 10000->2000" for the reload log.
pub fn describe_change(old: &Config, new: &Config) -> String {
    let mut out = Vec::new();
    let mut f = |name: &str, a: u64, b: u64| {
        if a != b {
            out.push(format!("{name} {a}->{b}"));
        }
    };
    let (p, q) = (&old.periods, &new.periods);
    f("periods.cpu_ms", p.cpu_ms.into(), q.cpu_ms.into());
    f("periods.kernel_ms", p.kernel_ms.into(), q.kernel_ms.into());
    f("periods.mem_ms", p.mem_ms.into(), q.mem_ms.into());
    f("periods.swap_ms", p.swap_ms.into(), q.swap_ms.into());
    f("periods.system_ms", p.system_ms.into(), q.system_ms.into());
    f("periods.net_ms", p.net_ms.into(), q.net_ms.into());
    f("periods.diskio_ms", p.diskio_ms.into(), q.diskio_ms.into());
    f("periods.disk_ms", p.disk_ms.into(), q.disk_ms.into());
    f("periods.temp_ms", p.temp_ms.into(), q.temp_ms.into());
    f("periods.health_ms", p.health_ms.into(), q.health_ms.into());
    f(
        "push_interval_ms",
        old.push_interval_ms.into(),
        new.push_interval_ms.into(),
    );
    f(
        "ping_interval_ms",
        old.ping_interval_ms.into(),
        new.ping_interval_ms.into(),
    );
    f(
        "buffer_cap_bytes",
        old.buffer_cap_bytes,
        new.buffer_cap_bytes,
    );
    f(
        "give_up_secs",
        old.give_up_secs.into(),
        new.give_up_secs.into(),
    );
    out.join(", ")
}
