//! End-to-end scenarios (issue 8): the real `autofactory` and `autofact` binaries and a real
//! InfluxDB 1.x, with faults and bad input; "nothing lost" checked on each agent's `system`
//! series in every scenario.
//!
//! Each scenario is one `#[test]` with its own InfluxDB, factory and temp dirs, so libtest runs
//! them in parallel threads. Everything is killed and removed on drop, also when a test fails
//! (`AUTOFACT_KEEP_TMP=1` keeps the dirs with every process's output for a post-mortem).
//! Without `influxd` the tests fail, unless `AUTOFACT_SKIP_INFLUX=1` (then they print SKIPPED).
//! The scale-out scenarios (`scale_out`) also need Debian's `haproxy` (`AUTOFACT_SKIP_HAPROXY=1`
//! skips), the store scenario (`victoria`) Debian's `victoria-metrics` (`AUTOFACT_SKIP_VICTORIA=1`).

mod agent_faults;
mod bad_input;
mod clock;
mod dashboards;
mod factory_disk;
mod faults;
mod fleet_page;
mod happy;
mod identity;
mod scale_out;
mod tls;
mod victoria;

use autofact_tests::harness::{
    check_series, now_ns, wait_series_until, Agent, AgentSpec, Factory, FactorySpec, SeriesReport,
};
use autofact_tests::influx::Influx;
use autofact_tests::tmp::TempDir;
use std::time::{Duration, Instant};

/// The collection period of every scenario.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Everything a scenario runs: dropped in field order (agents, factory, InfluxDB, then the dir).
pub struct Site {
    /// The agents, in launch order.
    pub agents: Vec<Agent>,
    /// The factory.
    pub factory: Factory,
    /// Its InfluxDB.
    pub influx: Influx,
    /// When the site was started (test clock), for durations in reports.
    pub began: Instant,
    /// Configs, data dirs and every process's output.
    pub dir: TempDir,
}

impl Site {
    /// InfluxDB and a factory with `spec`; `None` when InfluxDB is missing and skipping is allowed.
    pub fn new(name: &str, spec: &FactorySpec) -> Option<Site> {
        let began = Instant::now();
        let influx = Influx::launch_or_skip(name)?;
        let dir = TempDir::new(&format!("e2e-{name}")).unwrap_or_else(|e| panic!("temp dir: {e}"));
        let factory = Factory::launch(dir.path(), &influx.url(), spec);
        Some(Site {
            agents: Vec::new(),
            factory,
            influx,
            began,
            dir,
        })
    }

    /// Starts an agent connecting to the factory directly; returns its index.
    pub fn agent(&mut self, spec: &AgentSpec) -> usize {
        let addr = self.factory.addr();
        self.agent_via(addr, spec)
    }

    /// Starts an agent connecting to `server` (a proxy, say); returns its index.
    pub fn agent_via(&mut self, server: std::net::SocketAddr, spec: &AgentSpec) -> usize {
        self.agents
            .push(Agent::launch(self.dir.path(), server, spec));
        self.agents.len() - 1
    }

    /// Waits until `host`'s series reaches `until_ns` and checks it (see [`check_series`]);
    /// panics with the factory's and the agent's output when it fails.
    pub fn assert_nothing_lost(
        &self,
        host: &str,
        started_by: i64,
        until_ns: i64,
        allowed: &[(i64, i64)],
        timeout: Duration,
    ) -> SeriesReport {
        let checked = wait_series_until(&self.influx, host, until_ns, timeout)
            .and_then(|t| check_series(host, &t, PERIOD, started_by, until_ns, allowed));
        match checked {
            Ok(r) => {
                println!("{r}");
                r
            }
            Err(e) => panic!("{e}\n{}", self.outputs()),
        }
    }

    /// Every process's output, for failure messages.
    pub fn outputs(&self) -> String {
        let mut s = self.factory.output();
        for a in &self.agents {
            s.push_str(&format!("\n--- agent {} stderr\n{}", a.host(), a.log()));
        }
        s
    }

    /// Seconds since the site began.
    pub fn elapsed(&self) -> f64 {
        self.began.elapsed().as_secs_f64()
    }
}

/// `now + secs` in ns.
pub fn ns_after_now(secs: f64) -> i64 {
    now_ns() + (secs * 1e9) as i64
}

/// Seconds in ns.
pub fn secs(s: f64) -> i64 {
    (s * 1e9) as i64
}
