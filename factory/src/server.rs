//! The factory itself: [`Factory::open`] builds the [`Context`]; [`serve`] runs the accept loop
//! with its connection limit, the admin listener and the fleet loop on one executor, and the
//! graceful shutdown sequence; reload puts a new config in force and pushes Configs through the
//! registry.

use crate::config::FactoryConfig;
use crate::context::{Context, Parts};
use crate::error::Error;
use crate::inventory::Inventory;
use crate::metrics::{Metrics, Reason};
use crate::refusal;
use crate::session;
use crate::sink::FactSink;
use crate::tls::TlsListener;
use autofact_fbs::Config;
use smol::{Async, Executor};
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long shutdown waits for in-flight sink writes before it stops the sink anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// After the drain timeout, how long sessions get to see their writes fail and close.
const LATE_DRAIN: Duration = Duration::from_secs(5);

/// Connections past `max_connections` still get a websocket upgrade and a Reject{Busy}, up to
/// this many at once; past that they are closed at TCP level without a word.
const BUSY_SLACK: u64 = 1024;

/// What the factory is started with.
pub struct Settings {
    /// The validated configuration.
    pub config: FactoryConfig,
    /// The file it came from; `reload` re-reads it. `None` = defaults, reload keeps them.
    pub config_path: Option<PathBuf>,
    /// A sink to use instead of starting the one configured (tests).
    pub sink: Option<Arc<dyn FactSink>>,
}

/// The running factory; a cheap clonable handle.
#[derive(Clone)]
pub struct Factory {
    ctx: Arc<Context>,
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
        Ok(Factory {
            ctx: Arc::new(Context::new(Parts {
                config: cfg,
                config_path: settings.config_path,
                token,
                inventory,
                sink,
                tls,
                metrics,
            })),
        })
    }

    /// The counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.ctx.metrics()
    }

    /// The inventory.
    pub fn inventory(&self) -> &Inventory {
        self.ctx.inventory()
    }

    /// The current configuration.
    pub fn config(&self) -> Arc<FactoryConfig> {
        self.ctx.config()
    }

    /// Where the facts go.
    pub fn sink_description(&self) -> String {
        self.ctx.sink().describe()
    }

    /// The enrollment token in force.
    pub fn token(&self) -> String {
        self.ctx.token()
    }

    /// Ids of the clients connected now.
    pub fn connected(&self) -> Vec<String> {
        self.ctx.registry().connected()
    }

    /// The `GET /clients` document.
    pub fn clients_doc(&self) -> crate::admin::ClientsDoc {
        crate::admin::clients_doc(&self.ctx)
    }

    /// Re-reads the config file (SIGHUP). On error the running config stays and the error is
    /// returned (and logged). Returns how many clients were sent a new Config.
    pub fn reload(&self) -> Result<usize, Error> {
        let Some(path) = self.ctx.config_path() else {
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
        let old = self.ctx.config();
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
            self.ctx.set_token(t.clone());
        }
        let cfg = Arc::new(cfg);
        self.ctx.set_config(cfg.clone());
        let changes = self
            .ctx
            .registry()
            .push_configs(|region, id| cfg.effective(region, id));
        let mut pushed = 0;
        for c in &changes {
            crate::info!(
                "config -> {} ({}): {}",
                c.hostname,
                c.id,
                describe_change(&c.old, &c.new)
            );
            if c.queued {
                pushed += 1;
            } else {
                crate::warn!("config for {} not queued: session is closing", c.id);
            }
        }
        self.ctx
            .metrics()
            .configs_pushed
            .fetch_add(pushed as u64, Ordering::Relaxed);
        crate::info!("reload: config applied, {pushed} client(s) sent a new Config");
        pushed
    }

    /// SIGHUP for TLS: re-reads the certificate (renewal without dropping agents) and takes
    /// `require_tls`. Turning TLS on or off needs a restart; a certificate that fails to load
    /// keeps the running one (and its files in `cfg`).
    fn reload_tls(&self, cfg: &mut FactoryConfig, old: &FactoryConfig) {
        let (Some(listener), Some(files)) = (self.ctx.tls(), &cfg.tls) else {
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
        self.ctx.shutdown().begin();
    }

    /// Runs the factory on the given listeners (the caller binds them, so tests can use port
    /// 0) until `shutdown` resolves or [`Factory::stop`] is called, then shuts down gracefully.
    pub async fn serve(
        &self,
        listener: Async<TcpListener>,
        admin: Option<Async<TcpListener>>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        serve(&self.ctx, listener, admin, shutdown).await
    }
}

/// The factory's one executor: the calling thread and one more per further core run it. Every
/// task of the factory runs on it: accept loops, sessions, admin requests, the fleet loop. The
/// sink's writer threads and the inventory's writer do the blocking I/O outside it.
async fn serve(
    ctx: &Arc<Context>,
    listener: Async<TcpListener>,
    admin: Option<Async<TcpListener>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let executor = Arc::new(Executor::new());
    let (threads_end, threads_rx) = smol::channel::bounded::<()>(1);
    let extra = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
    let mut threads = Vec::new();
    for i in 0..extra {
        let (ex, rx) = (executor.clone(), threads_rx.clone());
        let t = std::thread::Builder::new()
            .name(format!("autofactory-{i}"))
            .spawn(move || {
                smol::block_on(ex.run(async {
                    let _ = rx.recv().await;
                }))
            });
        match t {
            Ok(t) => threads.push(t),
            Err(e) => {
                drop(threads_end);
                return Err(Error::io("start executor thread", e));
            }
        }
    }
    let port = listener.get_ref().local_addr().map_or(0, |a| a.port());
    let main = async {
        if let Some(admin) = admin {
            let ctx = ctx.clone();
            let ex = executor.clone();
            executor
                .spawn(async move { crate::admin::serve(ctx, &ex, admin).await })
                .detach();
        }
        let fleet = executor.spawn(crate::fleet::run(
            ctx.clone(),
            crate::fleet::factory_name(port),
        ));
        let flush = async {
            loop {
                smol::Timer::after(crate::log::BATCH_LINES_EVERY).await;
                crate::log::flush_batch_lines();
            }
        };
        let accept = async {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => accepted(ctx, &executor, stream, peer),
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        crate::warn!("accept: {e}");
                        smol::Timer::after(Duration::from_millis(100)).await;
                    }
                }
            }
        };
        let stop = async {
            smol::future::or(shutdown, ctx.shutdown().begun()).await;
        };
        smol::future::or(smol::future::or(accept, flush), stop).await;
        drop(listener);
        crate::info!("shutting down: no new connections; draining sessions");
        ctx.shutdown().begin();
        let drained = ctx.shutdown().drain(DRAIN_TIMEOUT).await;
        ctx.sink().shutdown();
        if !drained {
            crate::warn!(
                "shutdown: sink writes still pending after {DRAIN_TIMEOUT:?}; sink stopped"
            );
            ctx.shutdown().drain(LATE_DRAIN).await;
        }
        fleet.await;
        crate::log::flush_batch_lines();
    };
    executor.run(main).await;
    drop(threads_end);
    for t in threads {
        let _ = t.join();
    }
    if let Err(e) = ctx.inventory().close() {
        // Not a reason to fail the shutdown: enrollments are durable already; what is lost
        // is last-seen and last-acked updates, so at worst a batch is written twice.
        crate::warn!(
            "shutdown: {} inventory record(s) not saved: {e}",
            ctx.inventory().unsaved()
        );
    }
    crate::info!("shutdown complete");
    Ok(())
}

/// One accepted connection: counted, refused without a word when far over the limit, else
/// given its session task (which refuses it with Busy when over the limit).
fn accepted(
    ctx: &Arc<Context>,
    executor: &Executor<'static>,
    stream: Async<std::net::TcpStream>,
    peer: SocketAddr,
) {
    let m = ctx.metrics();
    m.connections_accepted.fetch_add(1, Ordering::Relaxed);
    let open = m.open_connections.fetch_add(1, Ordering::Relaxed) + 1;
    let limit = ctx.config().limits.max_connections as u64;
    if open > limit + BUSY_SLACK {
        m.open_connections.fetch_sub(1, Ordering::Relaxed);
        let why = format!("{open} open connections, closed without upgrade");
        refusal::record(m, peer, Reason::Busy, why);
        return;
    }
    let busy = open > limit;
    let _ = stream.get_ref().set_nodelay(true);
    let ctx = ctx.clone();
    let guard = ctx.shutdown().session();
    executor
        .spawn(async move {
            session::run(&ctx, stream, peer, busy).await;
            ctx.metrics()
                .open_connections
                .fetch_sub(1, Ordering::Relaxed);
            drop(guard);
        })
        .detach();
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
