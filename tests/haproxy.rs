//! A real HAProxy (Debian's `haproxy`) in TCP mode on a free loopback port, in front of the
//! factories of a scale-out test: its config and output in a temp dir, always killed on drop.
//!
//! The balancer is configured as the README recommends for a fleet: TCP mode (the websocket and
//! TLS pass through untouched), health checks so a stopped factory leaves the rotation, and
//! `option redispatch` so a connection refused by a dead factory is retried on another.
//!
//! `haproxy` is `$AUTOFACT_HAPROXY` when set, else `/usr/sbin/haproxy`, else the first on `PATH`.
//! When it is missing, [`Haproxy::launch_or_skip`] panics with a clear message, unless
//! `AUTOFACT_SKIP_HAPROXY=1`, in which case it prints `SKIPPED` and returns `None`.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::poll::{free_port, wait_for};
use crate::process::Proc;
use crate::tmp::TempDir;

/// Where haproxy is, if anywhere.
pub fn haproxy_path() -> Option<PathBuf> {
    crate::process::find_program("AUTOFACT_HAPROXY", "/usr/sbin/haproxy", "haproxy")
}

/// A running HAProxy balancing TCP connections over `backends`.
#[derive(Debug)]
pub struct Haproxy {
    addr: SocketAddr,
    proc: Option<Proc>,
    // Last: the directory goes after the process is killed.
    dir: TempDir,
}

impl Haproxy {
    /// Starts haproxy on a free loopback port in front of `backends` (round robin).
    pub fn launch(backends: &[SocketAddr]) -> Result<Haproxy, String> {
        let bin = haproxy_path().ok_or_else(|| {
            "haproxy not found (looked at $AUTOFACT_HAPROXY, /usr/sbin/haproxy, PATH): install \
             Debian's `haproxy` package (tests/run does), or set AUTOFACT_SKIP_HAPROXY=1 to skip"
                .to_string()
        })?;
        let mut last = String::new();
        // A port found free can be taken before haproxy binds it: try again on a new one.
        for _ in 0..3 {
            let dir = TempDir::new("haproxy").map_err(|e| format!("temp dir: {e}"))?;
            let port = free_port().map_err(|e| format!("free port: {e}"))?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let config = dir.join("haproxy.cfg");
            std::fs::write(&config, config_text(addr, backends))
                .map_err(|e| format!("writing {}: {e}", config.display()))?;
            // -db: stay in the foreground (no daemon), so the Proc is haproxy itself.
            let mut cmd = Command::new(&bin);
            cmd.arg("-db").arg("-f").arg(&config);
            let proc = Proc::spawn("haproxy", cmd, dir.path())
                .map_err(|e| format!("spawning {}: {e}", bin.display()))?;
            let mut h = Haproxy {
                addr,
                proc: Some(proc),
                dir,
            };
            let ready = wait_for("haproxy listening", Duration::from_secs(20), || {
                if let Some(p) = h.proc.as_mut() {
                    if let Ok(Some(status)) = p.try_wait() {
                        return Some(Err(format!("haproxy exited with {status}")));
                    }
                }
                TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                    .is_ok()
                    .then_some(Ok(()))
            });
            match ready {
                Ok(Ok(())) => return Ok(h),
                Ok(Err(e)) | Err(e) => {
                    last = format!("{e}\n{}", h.output());
                    h.kill();
                }
            }
        }
        Err(format!("haproxy did not start: {last}"))
    }

    /// [`Haproxy::launch`], or `None` after printing SKIPPED when haproxy is missing and
    /// `AUTOFACT_SKIP_HAPROXY=1`. Panics otherwise: the test must not pass silently without it.
    pub fn launch_or_skip(test: &str, backends: &[SocketAddr]) -> Option<Haproxy> {
        if haproxy_path().is_none() && std::env::var("AUTOFACT_SKIP_HAPROXY").as_deref() == Ok("1")
        {
            println!("SKIPPED {test}: haproxy not installed (AUTOFACT_SKIP_HAPROXY=1)");
            return None;
        }
        match Haproxy::launch(backends) {
            Ok(h) => Some(h),
            Err(e) => panic!("{test}: cannot start HAProxy: {e}"),
        }
    }

    /// The balancer's address: what agents connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its output so far, for assertion messages.
    pub fn output(&self) -> String {
        self.proc.as_ref().map(|p| p.output()).unwrap_or_else(|| {
            std::fs::read_to_string(self.dir.join("haproxy.err")).unwrap_or_default()
        })
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.kill();
    }
}

/// TCP mode, loopback only. Timeouts: `client`/`server` must exceed the agents' keepalive
/// (ping every `ping_interval_ms`, 15 s by default) or HAProxy would cut idle sessions; the
/// checks (every 500 ms, down after 2 failures) take a stopped factory out of the rotation within
/// about a second, and `redispatch` covers the connections tried before that.
fn config_text(addr: SocketAddr, backends: &[SocketAddr]) -> String {
    let mut servers = String::new();
    for (i, b) in backends.iter().enumerate() {
        servers.push_str(&format!(
            "  server factory{i} {b} check inter 500ms fall 2 rise 2\n"
        ));
    }
    format!(
        r#"global
  maxconn 4096

defaults
  mode tcp
  timeout connect 2s
  timeout client 5m
  timeout server 5m
  retries 3
  option redispatch

frontend agents
  bind {addr}
  default_backend factories

backend factories
  balance roundrobin
{servers}"#
    )
}
