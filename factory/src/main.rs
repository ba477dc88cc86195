//! The `autofactory` binary: parses the command line and config, installs signal handling,
//! runs the factory, and maps the outcome to an exit status (2: bad flags or config).
#![forbid(unsafe_code)]

use autofactory::config::FactoryConfig;
use autofactory::{admin, log, Factory, Settings};
use nix::sys::signal::{SigSet, Signal};
use smol::Async;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
autofactory: the autofact factory

usage:
  autofactory run [--config FILE] [--listen ADDR] [--admin-listen ADDR|''] [--data-dir DIR]
                  [--quiet] [--verbose]
  autofactory clients [--admin ADDR]
  autofactory --help | --version

run        accept agents (default listen 0.0.0.0:8675, admin 127.0.0.1:8676); without --config,
           safe defaults: data in ./autofactory-data (or $STATE_DIRECTORY), the file sink, and a
           generated enrollment token stored in the data dir. SIGHUP re-reads the config.
clients    print the inventory of a running factory (default --admin 127.0.0.1:8676)
--quiet    no line per batch;  --verbose: also print the points
";

/// Raw flags, as close to the command line as possible.
struct RunFlags {
    config: Option<PathBuf>,
    listen: Option<String>,
    admin_listen: Option<String>,
    data_dir: Option<PathBuf>,
    quiet: bool,
    verbose: bool,
}

fn usage_error(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("autofactory: {msg} (see autofactory --help)");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = pico_args::Arguments::from_env();
    if args.contains(["-h", "--help"]) {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if args.contains(["-V", "--version"]) {
        println!("autofactory {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    match args.subcommand() {
        Ok(Some(cmd)) if cmd == "run" => {
            let flags = (|| -> Result<RunFlags, pico_args::Error> {
                Ok(RunFlags {
                    config: args.opt_value_from_str("--config")?,
                    listen: args.opt_value_from_str("--listen")?,
                    admin_listen: args.opt_value_from_str("--admin-listen")?,
                    data_dir: args.opt_value_from_str("--data-dir")?,
                    quiet: args.contains(["-q", "--quiet"]),
                    verbose: args.contains(["-v", "--verbose"]),
                })
            })();
            let flags = match flags {
                Ok(f) => f,
                Err(e) => return usage_error(e),
            };
            if let Some(rest) = args.finish().first() {
                return usage_error(format!("unexpected argument {rest:?}"));
            }
            run(flags)
        }
        Ok(Some(cmd)) if cmd == "clients" => {
            let addr: String = match args.opt_value_from_str("--admin") {
                Ok(a) => a.unwrap_or_else(|| autofactory::config::DEFAULT_ADMIN_LISTEN.to_string()),
                Err(e) => return usage_error(e),
            };
            if let Some(rest) = args.finish().first() {
                return usage_error(format!("unexpected argument {rest:?}"));
            }
            clients(&addr)
        }
        Ok(Some(cmd)) => usage_error(format!("unknown command {cmd:?}")),
        Ok(None) => usage_error("missing command: run or clients"),
        Err(e) => usage_error(e),
    }
}

fn clients(addr: &str) -> ExitCode {
    use nanoserde::DeJson;
    let body = match admin::http_get(addr, "/clients") {
        Ok(b) => b,
        Err(e) => {
            eprintln!("autofactory: {e} (is the factory running? its admin address is set by admin_listen)");
            return ExitCode::from(1);
        }
    };
    match admin::ClientsDoc::deserialize_json(&body) {
        Ok(doc) => {
            print!("{}", admin::clients_table(&doc));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "autofactory: {addr}/clients answered something that is not the inventory: {e:?}"
            );
            ExitCode::from(1)
        }
    }
}

/// Flags and file -> validated config; every failure is a usage error (exit 2).
fn settings(flags: &RunFlags) -> Result<FactoryConfig, String> {
    let mut cfg = match &flags.config {
        Some(p) => FactoryConfig::load(p).map_err(|e| e.to_string())?,
        None => FactoryConfig::default(),
    };
    if let Some(l) = &flags.listen {
        cfg.listen = l
            .parse()
            .map_err(|_| format!("--listen: not an address:port: {l:?}"))?;
    }
    if let Some(a) = &flags.admin_listen {
        cfg.admin_listen = if a.is_empty() {
            None
        } else {
            Some(
                a.parse()
                    .map_err(|_| format!("--admin-listen: not an address:port: {a:?}"))?,
            )
        };
    }
    if let Some(d) = &flags.data_dir {
        cfg.data_dir = d.clone();
    }
    Ok(cfg)
}

fn run(flags: RunFlags) -> ExitCode {
    log::set_level(if flags.quiet {
        log::QUIET
    } else if flags.verbose {
        log::DEBUG
    } else {
        log::INFO
    });
    let cfg = match settings(&flags) {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    // Block the signals before any thread exists so every thread inherits the mask and only
    // the signal thread below ever sees them.
    let mut sigs = SigSet::empty();
    sigs.add(Signal::SIGTERM);
    sigs.add(Signal::SIGINT);
    sigs.add(Signal::SIGHUP);
    if let Err(e) = sigs.thread_block() {
        eprintln!("autofactory: cannot block signals: {e}");
        return ExitCode::from(1);
    }
    let bind = |addr: std::net::SocketAddr, what: &str| {
        TcpListener::bind(addr)
            .and_then(Async::new)
            .map_err(|e| format!("cannot listen on {addr} ({what}): {e}"))
    };
    let listener = match bind(cfg.listen, "listen") {
        Ok(l) => l,
        Err(e) => {
            eprintln!("autofactory: {e}");
            return ExitCode::from(1);
        }
    };
    let admin = match cfg
        .admin_listen
        .map(|a| bind(a, "admin_listen"))
        .transpose()
    {
        Ok(l) => l,
        Err(e) => {
            eprintln!("autofactory: {e}");
            return ExitCode::from(1);
        }
    };
    let data_dir = cfg.data_dir.clone();
    // What agents must put in `server`: both schemes are served when TLS is on, unless required.
    let schemes = match (&cfg.tls, cfg.require_tls) {
        (None, _) => "ws",
        (Some(_), false) => "plain ws:// too: require_tls is off",
        (Some(_), true) => "TLS required",
    };
    let factory = match Factory::open(Settings {
        config: cfg,
        config_path: flags.config.clone(),
        sink: None,
    }) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("autofactory: {e}");
            return ExitCode::from(if e.is_usage() { 2 } else { 1 });
        }
    };
    let addr = |l: &Async<TcpListener>| {
        l.get_ref()
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into())
    };
    if schemes == "ws" {
        println!(
            "autofactory: listening for agents on ws://{}",
            addr(&listener)
        );
    } else {
        println!(
            "autofactory: listening for agents on wss://{} ({schemes})",
            addr(&listener)
        );
    }
    match &admin {
        Some(a) => println!(
            "autofactory: admin on http://{} (/clients, /metrics)",
            addr(a)
        ),
        None => println!("autofactory: admin listener disabled"),
    }
    let data_dir = std::fs::canonicalize(&data_dir).unwrap_or(data_dir);
    println!("autofactory: inventory in {}", data_dir.display());
    println!("autofactory: facts go to {}", factory.sink_description());
    match &flags.config {
        Some(p) => println!("autofactory: config {} (SIGHUP reloads it)", p.display()),
        None => println!("autofactory: no config file: built-in defaults"),
    }

    let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
    let f = factory.clone();
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stopping: Option<std::time::Instant> = None;
            loop {
                match sigs.wait() {
                    Ok(Signal::SIGHUP) => {
                        autofactory::info!("SIGHUP: reloading the config");
                        let _ = f.reload();
                    }
                    Ok(sig) => {
                        // A second signal forces the exit, but not one in the same second:
                        // tools like timeout(1) signal the process and then its group.
                        if let Some(first) = stopping {
                            if first.elapsed() >= std::time::Duration::from_secs(1) {
                                eprintln!("autofactory: second {sig}, exiting without draining");
                                std::process::exit(1);
                            }
                            continue;
                        }
                        stopping = Some(std::time::Instant::now());
                        autofactory::info!("{sig}: shutting down");
                        let _ = stop_tx.try_send(());
                    }
                    Err(e) => {
                        eprintln!("autofactory: waiting for signals: {e}");
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        eprintln!("autofactory: cannot start the signal thread: {e}");
        return ExitCode::from(1);
    }
    let result = smol::block_on(autofactory::run(&factory, listener, admin, async {
        let _ = stop_rx.recv().await;
    }));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("autofactory: {e}");
            ExitCode::from(1)
        }
    }
}
