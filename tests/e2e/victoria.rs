//! The sink against VictoriaMetrics (issue 18): real agents at the settings users run, a real
//! factory whose sink is pointed at VictoriaMetrics' InfluxDB line-protocol endpoint (`/write`),
//! everything read back through VictoriaMetrics' own API (`/api/v1/export`), where each sample is
//! named `<measurement>_<field>`. A 30 s outage of VictoriaMetrics shows the acknowledge-after-2xx
//! rule holds against it too: the agents keep their batches until it is back, nothing is lost.

use crate::secs;
use autofact_tests::harness::{check_series, now_ns, Agent, AgentSpec, Factory};
use autofact_tests::poll::wait_for;
use autofact_tests::tmp::TempDir;
use autofact_tests::victoria::Victoria;
use std::time::Duration;

/// The `system` period, which the gap checker reads.
const PERIOD: Duration = Duration::from_secs(1);

/// Long enough for any wait here (10 s pushes, backoff after the outage) to be a failure.
const WAIT: Duration = Duration::from_secs(180);

/// Waits until `host`'s `system_load1` samples in VictoriaMetrics reach `until` (ns).
fn wait_until(vm: &Victoria, host: &str, until: i64) -> Result<Vec<i64>, String> {
    wait_for(
        &format!("{host}'s system_load1 to reach {until}"),
        WAIT,
        || {
            let t = vm.times("system_load1", host);
            t.last().is_some_and(|&l| l >= until).then_some(t)
        },
    )
    .map_err(|e| {
        let t = vm.times("system_load1", host);
        format!("{e}; it has {} samples, last {:?}", t.len(), t.last())
    })
}

#[test]
fn victoriametrics_sink_real_agents_every_series_complete_through_an_outage() {
    let name = "victoria";
    let Some(mut vm) = Victoria::launch_or_skip(name) else {
        return;
    };
    let dir = TempDir::new("e2e-victoria").unwrap_or_else(|e| panic!("temp dir: {e}"));
    let spec = crate::scale_out::fleet_spec();
    let factory = Factory::launch(dir.path(), &vm.url(), &spec);
    let specs = [
        AgentSpec {
            zone: "rack-1".into(),
            ..AgentSpec::new("e2e-vm-1", "eu")
        },
        AgentSpec::new("e2e-vm-2", "us"),
    ];
    let start = now_ns();
    let mut agents: Vec<Agent> = specs
        .iter()
        .map(|s| Agent::launch(dir.path(), factory.addr(), s))
        .collect();
    let outputs = |vm: &Victoria, agents: &[Agent]| {
        let mut s = format!(
            "{}\n=== victoria-metrics\n{}",
            factory.output(),
            vm.output()
        );
        for a in agents {
            s.push_str(&format!("\n--- agent {} stderr\n{}", a.host(), a.log()));
        }
        s
    };
    for s in &specs {
        if let Err(e) = wait_until(&vm, &s.hostname, start + secs(15.0)) {
            panic!("{e}\n{}", outputs(&vm, &agents));
        }
    }

    // VictoriaMetrics down for 30 s: the factory acknowledges nothing it did not answer 2xx to.
    vm.stop();
    std::thread::sleep(Duration::from_secs(30));
    if let Err(e) = vm.start() {
        panic!(
            "VictoriaMetrics did not restart: {e}\n{}",
            outputs(&vm, &agents)
        );
    }
    let up_at = now_ns();

    // Every series complete, from its start through 20 s after the outage.
    let until = up_at + secs(20.0);
    for s in &specs {
        let checked = wait_until(&vm, &s.hostname, until)
            .and_then(|t| check_series(&s.hostname, &t, PERIOD, start + secs(10.0), until, &[]));
        match checked {
            Ok(r) => println!("{r}"),
            Err(e) => panic!("{e}\n{}", outputs(&vm, &agents)),
        }
    }

    // Telegraf's names, as VictoriaMetrics spells them, with the tags as labels.
    for s in &specs {
        let names = vm
            .metric_names(&s.hostname)
            .unwrap_or_else(|e| panic!("{e}\n{}", outputs(&vm, &agents)));
        for want in [
            "cpu_usage_idle",
            "mem_used_percent",
            "system_load1",
            "net_bytes_recv",
            "autofact_buffered_batches",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing for {}: {names:?}",
                s.hostname
            );
        }
        let idle = vm
            .export(&format!(
                "cpu_usage_idle{{host=\"{}\",cpu=\"cpu-total\"}}",
                s.hostname
            ))
            .unwrap_or_else(|e| panic!("{e}"));
        let series = idle
            .first()
            .unwrap_or_else(|| panic!("no cpu_usage_idle for {}", s.hostname));
        assert_eq!(series.label("region"), Some(s.region.as_str()));
        assert_eq!(
            series.label("zone"),
            (!s.zone.is_empty()).then_some(s.zone.as_str())
        );
        assert_eq!(series.label("db"), Some(autofact_tests::harness::DB));
        assert!(
            series.values.iter().all(|v| (0.0..=100.0).contains(v)),
            "cpu_usage_idle out of range: {:?}",
            series.values
        );

        // The fleet inventory measurement, its numeric fields as metrics.
        let id = factory
            .client(&s.hostname)
            .and_then(|c| c.get("id").and_then(|v| v.as_str().map(String::from)))
            .unwrap_or_else(|| panic!("{} not in the factory's inventory", s.hostname));
        let connected = wait_for("autofact_client_connected", WAIT, || {
            let e = vm
                .export(&format!(
                    "autofact_client_connected{{host=\"{}\"}}",
                    s.hostname
                ))
                .ok()?;
            let s = e.into_iter().next()?;
            (s.values.last() == Some(&1.0)).then_some(s)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", outputs(&vm, &agents)));
        assert_eq!(connected.label("client_id"), Some(id.as_str()));
        assert!(connected.label("factory").is_some_and(|f| !f.is_empty()));
        // The agent version is a tag, so VictoriaMetrics (which keeps only numbers) has it.
        let version = factory.client(&s.hostname).and_then(|c| {
            c.get("agent_version")
                .and_then(|v| v.as_str().map(String::from))
        });
        assert_eq!(connected.label("agent_version"), version.as_deref());
    }
    for a in &mut agents {
        assert!(a.exited().is_none(), "agent {} exited", a.host());
    }
    println!("victoria: 2 agents, 30 s outage, every series complete");
}
