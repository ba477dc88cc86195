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
  autofactory clients [--admin ADDR[,ADDR...]]...
  autofactory replay [--config FILE] [--data-dir DIR] [--timeout SECS] DEAD-LETTER-FILE...
  autofactory --help | --version

run        accept agents (default listen 0.0.0.0:8675, admin 127.0.0.1:8676); without --config,
           safe defaults: data in ./autofactory-data (or $STATE_DIRECTORY), the file sink, and a
           generated enrollment token stored in the data dir. SIGHUP re-reads the config.
clients    print the inventory of a running factory (default --admin 127.0.0.1:8676); with
           several --admin (or a comma list), of every factory of a fleet, merged by client id
replay     write dead-letter files (<data dir>/dead-letters/*.lp, lines the store refused) to the
           configured sink again, once the cause is fixed; lines still refused are dead-lettered
           again; each file is renamed FILE.replayed when done (--timeout: give up after SECS,
           default 120, if the store does not take the lines)
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
            let given: Vec<String> = match args.values_from_str("--admin") {
                Ok(a) => a,
                Err(e) => return usage_error(e),
            };
            let mut addrs: Vec<String> = given
                .iter()
                .flat_map(|a| a.split(','))
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(String::from)
                .collect();
            if addrs.is_empty() {
                addrs.push(autofactory::config::DEFAULT_ADMIN_LISTEN.to_string());
            }
            if let Some(rest) = args.finish().first() {
                return usage_error(format!("unexpected argument {rest:?}"));
            }
            clients(&addrs)
        }
        Ok(Some(cmd)) if cmd == "replay" => {
            let flags = (|| -> Result<_, pico_args::Error> {
                Ok((
                    args.opt_value_from_str::<_, PathBuf>("--config")?,
                    args.opt_value_from_str::<_, PathBuf>("--data-dir")?,
                    args.opt_value_from_str::<_, String>("--timeout")?,
                ))
            })();
            let (config, data_dir, timeout) = match flags {
                Ok(f) => f,
                Err(e) => return usage_error(e),
            };
            let timeout = match timeout.map(|t| t.parse::<u64>().map_err(|_| t)).transpose() {
                Ok(t) => t,
                Err(t) => return usage_error(format!("--timeout: not a number of seconds: {t:?}")),
            };
            let files: Vec<PathBuf> = args.finish().into_iter().map(PathBuf::from).collect();
            if files.is_empty() {
                return usage_error(
                    "replay: which dead-letter file? (e.g. <data dir>/dead-letters/2026-12-06.lp)",
                );
            }
            if let Some(f) = files.iter().find(|f| f.to_string_lossy().starts_with('-')) {
                return usage_error(format!("replay: unknown flag {f:?}"));
            }
            replay(config, data_dir, timeout.unwrap_or(120), &files)
        }
        Ok(Some(cmd)) => usage_error(format!("unknown command {cmd:?}")),
        Ok(None) => usage_error("missing command: run, clients or replay"),
        Err(e) => usage_error(e),
    }
}

/// Prints the merged inventory of the factories at `addrs`. A factory that does not answer is
/// named on stderr and left out; the exit status is 1 only when none answered.
fn clients(addrs: &[String]) -> ExitCode {
    let (docs, failed) = admin::fetch_clients(addrs);
    for (addr, e) in &failed {
        eprintln!("autofactory: {addr}: {e} (is the factory running? its admin address is set by admin_listen)");
    }
    if docs.is_empty() {
        return ExitCode::from(1);
    }
    if !failed.is_empty() {
        eprintln!(
            "autofactory: {} of {} factories answered; the table shows only theirs",
            docs.len(),
            addrs.len()
        );
    }
    print!("{}", admin::clients_table(&admin::merge_clients(docs)));
    ExitCode::SUCCESS
}

/// `autofactory replay`: each file in turn through the configured sink; exit 1 at the first
/// that fails (the others are left as they are).
fn replay(
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    timeout_secs: u64,
    files: &[PathBuf],
) -> ExitCode {
    let mut cfg = match &config {
        Some(p) => match FactoryConfig::load(p) {
            Ok(c) => c,
            Err(e) => return usage_error(e),
        },
        None => FactoryConfig::default(),
    };
    if let Some(d) = data_dir {
        cfg.data_dir = d;
    }
    for file in files {
        match autofactory::sink::replay::replay(
            &cfg.sink,
            &cfg.data_dir,
            file,
            std::time::Duration::from_secs(timeout_secs),
        ) {
            Ok(s) => println!(
                "autofactory: replayed {} lines from {}: {} written, {} refused again (kept in {}); the file is now {}",
                s.lines,
                file.display(),
                s.written,
                s.refused,
                s.dead_dir.display(),
                s.kept.display()
            ),
            Err(autofactory::sink::replay::ReplayError::Sink(e @ autofactory::sink::SinkError::Config(_))) => {
                return usage_error(e)
            }
            Err(e) => {
                eprintln!("autofactory: replay: {e}");
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
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
