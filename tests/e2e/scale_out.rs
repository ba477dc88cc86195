//! Scale-out (issue 18): two factories sharing a `fleet_key` behind a real HAProxy (TCP mode)
//! and one InfluxDB, with several real agents at the settings users run (push every 10 s,
//! periods of 1 to 10 s). One factory is stopped; every agent must reconnect through the
//! balancer to the other, keep its client id (no second enrollment anywhere), and every series
//! must be complete, with no hole at all: batches are acknowledged only once durable, so what the
//! stopped factory had not acknowledged is still on the agents' disks and goes to the other one.
//! Once with SIGTERM (a rolling upgrade), once with SIGKILL (a crash).

use crate::secs;
use autofact_tests::haproxy::Haproxy;
use autofact_tests::harness::{
    check_series, now_ns, wait_series_until, Agent, AgentSpec, Factory, FactorySpec, DB,
};

use autofact_tests::influx::{Influx, Json};
use autofact_tests::poll::wait_for;
use autofact_tests::tmp::TempDir;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The fleet inventory measurement each factory writes.
const MEASUREMENT: &str = "autofact_client";

/// Agents in the fleet.
const AGENTS: usize = 4;

/// The `system` period, which the gap checker reads.
const PERIOD: Duration = Duration::from_secs(1);

/// Long enough for any wait here (10 s pushes, reconnect backoff, a loaded machine) to be a
/// failure when it runs out.
const WAIT: Duration = Duration::from_secs(180);

/// The fleet key both factories share (at least 32 characters).
pub const FLEET_KEY: &str = "e2e-fleet-key-0123456789abcdef0123456789abcdef";

/// What users run: a push every 10 s, the fast kinds every second, the slow ones every 5-10 s,
/// the default keepalive (15 s).
pub fn fleet_spec() -> FactorySpec {
    FactorySpec {
        period_ms: 1000,
        push_interval_ms: 10_000,
        ping_interval_ms: 15_000,
        periods: r#""net_ms": 5000, "diskio_ms": 10000, "disk_ms": 10000, "temp_ms": 10000,
                    "health_ms": 10000"#
            .into(),
        fleet_key: Some(FLEET_KEY.into()),
        ..FactorySpec::default()
    }
}

/// Everything the scenario runs, dropped in field order: agents, balancer, factories, InfluxDB,
/// then the directory.
struct Fleet {
    agents: Vec<Agent>,
    lb: Haproxy,
    factories: [Factory; 2],
    influx: Influx,
    began: Instant,
    dir: TempDir,
}

impl Fleet {
    fn outputs(&self) -> String {
        let mut s = String::new();
        for (i, f) in self.factories.iter().enumerate() {
            s.push_str(&format!("\n=== factory {i}\n{}", f.output()));
        }
        s.push_str(&format!("\n=== haproxy\n{}", self.lb.output()));
        for a in &self.agents {
            s.push_str(&format!("\n--- agent {} stderr\n{}", a.host(), a.log()));
        }
        s
    }

    fn fail(&self, e: impl std::fmt::Display) -> ! {
        panic!("{e}\n{}", self.outputs())
    }

    /// Which factory (0 or 1) `host` is connected to, if any.
    fn connected_to(&self, host: &str) -> Option<usize> {
        (0..2).find(|&i| self.factories[i].connected(host))
    }

    /// `host`'s client id in factory `i`'s inventory.
    fn id_in(&self, i: usize, host: &str) -> Option<String> {
        self.factories[i]
            .client(host)?
            .get("id")?
            .as_str()
            .map(String::from)
    }

    /// Every client id in factory `i`'s inventory.
    fn ids_of(&self, i: usize) -> Result<BTreeSet<String>, String> {
        let doc = self.factories[i].clients()?;
        Ok(doc
            .get("clients")
            .map(|c| c.items())
            .unwrap_or(&[])
            .iter()
            .filter_map(|c| c.get("id").and_then(Json::as_str).map(String::from))
            .collect())
    }
}

fn hosts() -> Vec<String> {
    (0..AGENTS).map(|i| format!("e2e-scale-{i}")).collect()
}

#[test]
fn two_factories_behind_haproxy_one_stops_every_agent_moves_keeps_its_id_nothing_lost() {
    scenario("scale-out-stop", Stop::Term);
}

#[test]
fn two_factories_behind_haproxy_one_is_killed_every_agent_moves_keeps_its_id_nothing_lost() {
    scenario("scale-out-kill", Stop::Kill);
}

/// How the factory is taken away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGTERM: it drains, acks what is durable, and says goodbye (a rolling upgrade).
    Term,
    /// SIGKILL: no goodbye; its in-flight batches are unacknowledged (a crash).
    Kill,
}

fn scenario(name: &str, how: Stop) {
    let began = Instant::now();
    let Some(influx) = Influx::launch_or_skip(name) else {
        return;
    };
    let dir = TempDir::new(&format!("e2e-{name}")).unwrap_or_else(|e| panic!("temp dir: {e}"));
    let spec = fleet_spec();
    let launch = |sub: &str| {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        Factory::launch(&d, &influx.url(), &spec)
    };
    let factories = [launch("factory-a"), launch("factory-b")];
    let backends = [factories[0].addr(), factories[1].addr()];
    let Some(lb) = Haproxy::launch_or_skip(name, &backends) else {
        return;
    };
    let mut fleet = Fleet {
        agents: Vec::new(),
        lb,
        factories,
        influx,
        began,
        dir,
    };
    let start = now_ns();
    for h in hosts() {
        let a = Agent::launch(fleet.dir.path(), fleet.lb.addr(), &AgentSpec::new(&h, "eu"));
        fleet.agents.push(a);
    }

    // Every agent enrolled through the balancer, and its data flows.
    let placed = wait_for("every agent to connect through HAProxy", WAIT, || {
        hosts()
            .iter()
            .map(|h| fleet.connected_to(h).map(|i| (h.clone(), i)))
            .collect::<Option<BTreeMap<String, usize>>>()
    });
    let placed = placed.unwrap_or_else(|e| fleet.fail(e));
    for h in hosts() {
        if let Err(e) = wait_series_until(&fleet.influx, &h, start + secs(15.0), WAIT) {
            fleet.fail(e);
        }
    }
    let ids_before: BTreeMap<String, String> = placed
        .iter()
        .map(|(h, &i)| {
            let id = fleet
                .id_in(i, h)
                .unwrap_or_else(|| fleet.fail(format!("{h} not in factory {i}'s inventory")));
            (h.clone(), id)
        })
        .collect();
    // Stop the factory holding the most agents (round robin gives each about half).
    let on = |i: usize| placed.values().filter(|&&f| f == i).count();
    let (stopped, survivor) = if on(0) >= on(1) { (0, 1) } else { (1, 0) };
    let moving: Vec<String> = placed
        .iter()
        .filter(|(_, &i)| i == stopped)
        .map(|(h, _)| h.clone())
        .collect();
    assert!(
        !moving.is_empty(),
        "no agent on either factory to move: {placed:?}"
    );

    // Its inventory as it stops (a stopped factory's inventory cannot change; restarting it on
    // the same port could race with an outgoing connection given that port meanwhile).
    let stopped_ids = fleet.ids_of(stopped).unwrap_or_else(|e| fleet.fail(e));
    let stopped_at = now_ns();
    let stop_clock = Instant::now();
    match how {
        Stop::Term => {
            let status = fleet.factories[stopped].stop();
            assert!(
                status.is_some_and(|s| s.success()),
                "factory {stopped} did not stop cleanly: {status:?}\n{}",
                fleet.outputs()
            );
        }
        Stop::Kill => fleet.factories[stopped].kill(),
    }

    // Every agent ends up on the survivor, under the id it had.
    let moved = wait_for("every agent on the surviving factory", WAIT, || {
        hosts()
            .iter()
            .all(|h| fleet.factories[survivor].connected(h))
            .then(|| stop_clock.elapsed())
    });
    let moved = moved.unwrap_or_else(|e| fleet.fail(e));
    let moved_at = now_ns();
    for (h, id) in &ids_before {
        let now = fleet.id_in(survivor, h);
        assert_eq!(
            now.as_deref(),
            Some(id.as_str()),
            "{h} changed client id when the balancer moved it (it enrolled again)\n{}",
            fleet.outputs()
        );
    }
    for a in &fleet.agents {
        let enrolled = a.log().matches("enrolled with factory").count();
        assert_eq!(
            enrolled,
            1,
            "{} enrolled {enrolled} times\n{}",
            a.host(),
            fleet.outputs()
        );
    }

    // Every series complete: from its start through 20 s after the move, no hole at all.
    let until = moved_at + secs(20.0);
    for h in hosts() {
        let checked = wait_series_until(&fleet.influx, &h, until, WAIT)
            .and_then(|t| check_series(&h, &t, PERIOD, start + secs(10.0), until, &[]));
        match checked {
            Ok(r) => println!("{r}"),
            Err(e) => fleet.fail(e),
        }
    }

    // Both inventories: the survivor knows exactly the fleet's agents; the stopped factory
    // knew only ids among them. One id per agent in the whole fleet.
    let survivor_ids = fleet.ids_of(survivor).unwrap_or_else(|e| fleet.fail(e));
    let want: BTreeSet<String> = ids_before.values().cloned().collect();
    assert_eq!(
        survivor_ids, want,
        "the surviving factory's inventory is not the fleet's agents"
    );
    assert!(
        stopped_ids.is_subset(&want),
        "the stopped factory's inventory has ids beyond the fleet's agents: {stopped_ids:?}"
    );
    let all: BTreeSet<&String> = survivor_ids.union(&stopped_ids).collect();
    assert_eq!(
        all.len(),
        AGENTS,
        "{} distinct client ids for {AGENTS} agents",
        all.len()
    );

    // One fleet inventory in the store: one client_id per agent, written by both factories,
    // each client's latest point from the survivor, connected.
    let survivor_tag = format!(":{}", fleet.factories[survivor].addr().port());
    let latest = |id: &str| -> Option<(i64, String)> {
        let q = format!(
            "SELECT \"connected\", \"factory\" FROM \"{MEASUREMENT}\" WHERE \"client_id\" = '{id}' \
             ORDER BY time DESC LIMIT 1"
        );
        let s = fleet.influx.select(DB, &q).ok()?;
        let s = s.first()?;
        Some((
            s.cell(0, "connected")?.as_i64()?,
            s.cell(0, "factory")?.as_str()?.to_string(),
        ))
    };
    let settled = wait_for("the fleet inventory to show the move", WAIT, || {
        want.iter()
            .all(|id| latest(id).is_some_and(|(c, f)| c == 1 && f.ends_with(&survivor_tag)))
            .then_some(())
    });
    if let Err(e) = settled {
        let now: Vec<_> = want.iter().map(|id| (id, latest(id))).collect();
        fleet.fail(format!("{e}: latest points {now:?}"));
    }
    let tag_values = |key: &str| -> BTreeSet<String> {
        let q = format!("SHOW TAG VALUES FROM \"{MEASUREMENT}\" WITH KEY = \"{key}\"");
        match fleet.influx.select(DB, &q) {
            Ok(series) => series
                .iter()
                .flat_map(|s| s.values.iter())
                .filter_map(|row| row.get(1).and_then(Json::as_str).map(String::from))
                .collect(),
            Err(e) => fleet.fail(format!("{q}: {e}")),
        }
    };
    assert_eq!(
        tag_values("client_id"),
        want,
        "the store's fleet inventory must hold one client_id per agent"
    );
    assert_eq!(
        tag_values("factory").len(),
        2,
        "both factories wrote the fleet inventory"
    );
    for a in &mut fleet.agents {
        assert!(a.exited().is_none(), "agent {} exited", a.host());
    }
    println!(
        "scale out ({how:?}): {AGENTS} agents, {} moved from factory {stopped} to {survivor} in \
         {:.1} s after the stop, same ids, no hole; {:.1} s (stopped at {stopped_at})",
        moving.len(),
        moved.as_secs_f64(),
        fleet.began.elapsed().as_secs_f64()
    );
}

/// The value of metric `name` in Prometheus text.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn agents_enrolled_before_the_fleet_key_are_given_their_fleet_secret_and_move_without_enrolling() {
    let name = "scale-out-upgrade";
    let Some(influx) = Influx::launch_or_skip(name) else {
        return;
    };
    let dir = TempDir::new(&format!("e2e-{name}")).unwrap_or_else(|e| panic!("temp dir: {e}"));
    let sub = |s: &str| {
        let d = dir.join(s);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        d
    };
    // A factory of the first release's kind (no fleet key) with its agents, and a new factory
    // of the fleet that has never seen them.
    let plain = FactorySpec {
        fleet_key: None,
        ..fleet_spec()
    };
    let old = Factory::launch(&sub("factory-old"), &influx.url(), &plain);
    let new = Factory::launch(&sub("factory-new"), &influx.url(), &fleet_spec());
    let hosts = ["e2e-upgrade-1", "e2e-upgrade-2"];
    let mut agents: Vec<Agent> = hosts
        .iter()
        .map(|h| Agent::launch(dir.path(), old.addr(), &AgentSpec::new(h, "eu")))
        .collect();
    let outputs = |agents: &[Agent]| {
        let mut s = format!(
            "=== old factory\n{}\n=== new factory\n{}",
            old.output(),
            new.output()
        );
        for a in agents {
            s.push_str(&format!("\n--- agent {} stderr\n{}", a.host(), a.log()));
        }
        s
    };
    let id_of = |f: &Factory, h: &str| {
        f.client(h)
            .and_then(|c| c.get("id").and_then(Json::as_str).map(String::from))
    };
    if let Err(e) = wait_for("the agents on the old factory", WAIT, || {
        hosts.iter().all(|h| old.connected(h)).then_some(())
    }) {
        panic!("{e}\n{}", outputs(&agents));
    }
    let ids: Vec<String> = hosts
        .iter()
        .map(|h| id_of(&old, h).unwrap_or_else(|| panic!("{h} not in the old inventory")))
        .collect();

    // The operator gives the old factory the fleet key (SIGHUP); each agent's next session there
    // hands it its fleet secret, which it stores like an enrollment's (same id).
    old.reconfigure(&fleet_spec());
    if let Err(e) = wait_for("the reload", WAIT, || {
        old.log().contains("reload: config applied").then_some(())
    }) {
        panic!("{e}\n{}", outputs(&agents));
    }
    for a in &mut agents {
        a.kill();
        a.start();
    }
    if let Err(e) = wait_for("each agent to store its fleet secret", WAIT, || {
        agents
            .iter()
            .all(|a| a.log().matches("enrolled with factory").count() == 2)
            .then_some(())
    }) {
        panic!("{e}\n{}", outputs(&agents));
    }

    // Moved to the new factory, each is welcomed back under its id: nothing enrolls there.
    for a in &mut agents {
        a.kill();
        a.set_server(new.addr());
        a.start();
    }
    if let Err(e) = wait_for("the agents on the new factory", WAIT, || {
        hosts.iter().all(|h| new.connected(h)).then_some(())
    }) {
        panic!("{e}\n{}", outputs(&agents));
    }
    for (h, id) in hosts.iter().zip(&ids) {
        assert_eq!(
            id_of(&new, h).as_deref(),
            Some(id.as_str()),
            "{h} changed id when it moved\n{}",
            outputs(&agents)
        );
    }
    let m = new.metrics().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        metric(&m, "autofactory_clients_enrolled_total"),
        Some(0),
        "the new factory enrolled someone\n{}",
        outputs(&agents)
    );
    for a in &mut agents {
        assert!(
            !a.log().contains("unknown client id"),
            "{} was refused as unknown\n{}",
            a.host(),
            a.log()
        );
        assert!(a.exited().is_none(), "agent {} exited", a.host());
    }
}
