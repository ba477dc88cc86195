//! The `autofact` binary: parses the command line and runs the agent.
//!
//! Parsing is two steps, as in ripgrep: the raw flags as close to the command line as possible
//! ([`Raw`]), then validated settings ([`Command`]); each subcommand is one function taking its
//! settings. A bad flag prints one line on stderr naming the problem and exits with status 2.
#![forbid(unsafe_code)]

use autofact::facts::{host, Collector, Kinds, Procfs, Sysfs};
use autofact_fbs::lineproto::{write_snapshot, Tags};
use autofact_fbs::Snapshot;
use std::ffi::OsString;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const USAGE: &str = "\
usage: autofact collect --once [--proc-root DIR] [--sys-root DIR] [--interval-ms N]
       autofact run --config FILE [--proc-root DIR] [--sys-root DIR]

  collect --once     print one round of every fact as InfluxDB line protocol and exit
  --proc-root DIR    read DIR instead of /proc (a captured tree); nothing is read outside the roots,
                     except statvfs of the tree's mount points that also exist on this machine
  --sys-root DIR     read DIR instead of /sys
  --interval-ms N    milliseconds between the two /proc/stat samples for cpu usage (default 200)
  run --config FILE  run the agent: connect to the factory named in FILE (JSON: server, data_dir,
                     token, region, zone, hostname), collect and push until SIGTERM/SIGINT (exit 0);
                     exit 3 when the factory stayed unreachable for its give-up time";

/// A command line that cannot be run; the message names the problem.
#[derive(Debug)]
struct UsageError(String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<pico_args::Error> for UsageError {
    fn from(e: pico_args::Error) -> UsageError {
        UsageError(e.to_string())
    }
}

/// The flags as given, before validation.
#[derive(Debug)]
enum Raw {
    Help,
    Collect(RawCollect),
    Run(RawRun),
}

#[derive(Debug)]
struct RawRun {
    config: Option<PathBuf>,
    proc_root: Option<PathBuf>,
    sys_root: Option<PathBuf>,
}

#[derive(Debug)]
struct RawCollect {
    once: bool,
    proc_root: Option<PathBuf>,
    sys_root: Option<PathBuf>,
    interval_ms: Option<String>,
}

/// Validated settings, one variant per subcommand.
#[derive(Debug)]
enum Command {
    Help,
    Collect(CollectSettings),
    Run(Box<autofact::run::Settings>),
}

/// What `collect` needs.
#[derive(Debug)]
struct CollectSettings {
    procfs: Procfs,
    sysfs: Sysfs,
    interval: Duration,
}

fn path(s: &std::ffi::OsStr) -> Result<PathBuf, &'static str> {
    if s.is_empty() {
        return Err("empty path");
    }
    Ok(PathBuf::from(s))
}

fn parse_raw(args: Vec<OsString>) -> Result<Raw, UsageError> {
    let mut p = pico_args::Arguments::from_vec(args);
    if p.contains(["-h", "--help"]) {
        return Ok(Raw::Help);
    }
    let raw = match p.subcommand()?.as_deref() {
        Some("collect") => Raw::Collect(RawCollect {
            once: p.contains("--once"),
            proc_root: p.opt_value_from_os_str("--proc-root", path)?,
            sys_root: p.opt_value_from_os_str("--sys-root", path)?,
            interval_ms: p.opt_value_from_str("--interval-ms")?,
        }),
        Some("run") => Raw::Run(RawRun {
            config: p.opt_value_from_os_str("--config", path)?,
            proc_root: p.opt_value_from_os_str("--proc-root", path)?,
            sys_root: p.opt_value_from_os_str("--sys-root", path)?,
        }),
        Some("help") => Raw::Help,
        Some(other) => {
            return Err(UsageError(format!(
                "unknown command {other:?} (try --help)"
            )))
        }
        None => return Err(UsageError("no command given (try --help)".into())),
    };
    if let Some(extra) = p.finish().first() {
        return Err(UsageError(format!(
            "unexpected argument {:?}",
            extra.to_string_lossy()
        )));
    }
    Ok(raw)
}

fn settings(raw: Raw) -> Result<Command, UsageError> {
    match raw {
        Raw::Help => Ok(Command::Help),
        Raw::Run(r) => {
            let file = r
                .config
                .ok_or_else(|| UsageError("run needs --config FILE".into()))?;
            let config =
                autofact::run::AgentConfig::load(&file).map_err(|e| UsageError(e.to_string()))?;
            let mut s = autofact::run::Settings::new(config);
            if let Some(dir) = r.proc_root {
                s.proc_root = dir;
            }
            if let Some(dir) = r.sys_root {
                s.sys_root = dir;
            }
            Ok(Command::Run(Box::new(s)))
        }
        Raw::Collect(r) => {
            if !r.once {
                return Err(UsageError(
                    "collect needs --once (the continuous agent is `autofact run`)".into(),
                ));
            }
            let interval_ms = match r.interval_ms.as_deref().map(str::parse::<u64>) {
                None => 200,
                Some(Ok(ms)) => ms,
                Some(Err(_)) => {
                    return Err(UsageError(format!(
                        "--interval-ms {:?}: not a number of milliseconds",
                        r.interval_ms.unwrap_or_default()
                    )))
                }
            };
            if !(1..=600_000).contains(&interval_ms) {
                return Err(UsageError(format!(
                    "--interval-ms {interval_ms}: must be between 1 and 600000"
                )));
            }
            let procfs = r.proc_root.map_or_else(Procfs::default, Procfs::new);
            let sysfs = r.sys_root.map_or_else(Sysfs::default, Sysfs::new);
            for (flag, dir) in [("--proc-root", &procfs.root), ("--sys-root", &sysfs.root)] {
                if !dir.is_dir() {
                    return Err(UsageError(format!(
                        "{flag} {}: not a directory",
                        dir.display()
                    )));
                }
            }
            Ok(Command::Collect(CollectSettings {
                procfs,
                sysfs,
                interval: Duration::from_millis(interval_ms),
            }))
        }
    }
}

fn now_ns() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// `collect --once`: two cpu samples `interval` apart, then one round of every fact, printed as
/// line protocol with the host tag. Facts this machine (or tree) lacks are simply absent.
fn collect(s: &CollectSettings) -> std::io::Result<()> {
    let hostname = host::hostname(&s.procfs);
    let mut c = Collector::new(&s.procfs, &s.sysfs);
    let mut snap = Snapshot::default();
    c.collect(Kinds::CPU, now_ns(), &mut snap);
    std::thread::sleep(s.interval);
    c.collect(Kinds::ALL, now_ns(), &mut snap);
    let mut out = String::new();
    let tags = Tags {
        host: &hostname,
        ..Tags::default()
    };
    write_snapshot(&mut out, &tags, &snap);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()
}

/// `run`: the agent's life (see `autofact::run`); exit 0 on SIGTERM/SIGINT, 3 on give-up.
fn run(s: autofact::run::Settings) -> ExitCode {
    // Before any other thread exists, so every thread inherits the blocked mask.
    let shutdown = match autofact::run::signals::shutdown_on_signals() {
        Ok(rx) => rx,
        Err(e) => {
            eprintln!("autofact: cannot set up signal handling: {e}");
            return ExitCode::FAILURE;
        }
    };
    match autofact::run::run(s, shutdown) {
        Ok(exit) => ExitCode::from(exit.code() as u8),
        Err(e) => {
            eprintln!("autofact: {e}");
            ExitCode::from(e.code() as u8)
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let command = match parse_raw(args).and_then(settings) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("autofact: {e}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Run(s) => run(*s),
        Command::Collect(s) => match collect(&s) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("autofact: writing to stdout: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
