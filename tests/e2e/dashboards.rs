//! The shipped Grafana dashboards (issue 19, item 3): every query of every panel and every
//! template variable in `dashboards/*.json`, with the variables substituted as Grafana does,
//! returns data from a real InfluxDB 1.x filled by real agents through a real factory.
//!
//! Settings are a user's: push every 10 s, collect every 2 s. One agent reads this machine's
//! `/sys`, which has no thermal zones; the other is given a Raspberry Pi's captured `/sys`
//! (`--sys-root`) so that the temperature panel has a series, as it would on a Pi.

use crate::Site;
use autofact_tests::harness::{Agent, AgentSpec, FactorySpec, DB};
use autofact_tests::influx::Json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One query of a dashboard: where it is (for the failure message) and its text.
struct Query {
    at: String,
    text: String,
}

fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new(".."))
        .join("dashboards")
}

/// Every panel target (rows' nested panels included) and every `query` variable.
fn queries_of(file: &Path) -> Vec<Query> {
    let text =
        std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    let dash = Json::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = Vec::new();
    let vars = dash.get("templating").and_then(|t| t.get("list"));
    for v in vars.map(Json::items).unwrap_or(&[]) {
        if v.get("type").and_then(Json::as_str) == Some("query") {
            let q = v.get("query").and_then(Json::as_str).unwrap_or_default();
            let var = v.get("name").and_then(Json::as_str).unwrap_or("?");
            out.push(Query {
                at: format!("{name} variable ${var}"),
                text: q.to_string(),
            });
        }
    }
    let mut panels: Vec<&Json> = dash
        .get("panels")
        .map(Json::items)
        .unwrap_or(&[])
        .iter()
        .collect();
    while let Some(p) = panels.pop() {
        panels.extend(p.get("panels").map(Json::items).unwrap_or(&[]));
        let title = p.get("title").and_then(Json::as_str).unwrap_or("?");
        for t in p.get("targets").map(Json::items).unwrap_or(&[]) {
            let q = t.get("query").and_then(Json::as_str).unwrap_or_default();
            let r = t.get("refId").and_then(Json::as_str).unwrap_or("?");
            out.push(Query {
                at: format!("{name} panel {title:?} {r}"),
                text: q.to_string(),
            });
        }
    }
    out
}

/// What Grafana's InfluxDB data source puts in place of a variable inside `/^$var$/`: a single
/// value regex-escaped, several as `(a|b)`, All as the variable's `allValue` (`.*`).
fn regex_value(values: &[&str]) -> String {
    let escape = |v: &str| {
        let mut s = String::new();
        for c in v.chars() {
            if "\\^$*+?.()|[]{}/-".contains(c) {
                s.push('\\');
            }
            s.push(c);
        }
        s
    };
    match values {
        [] => ".*".to_string(),
        [one] => escape(one),
        many => format!(
            "({})",
            many.iter().map(|v| escape(v)).collect::<Vec<_>>().join("|")
        ),
    }
}

/// Substitutes the dashboard's variables and Grafana's built-ins: the default range `now-1h`
/// as `$timeFilter` and the interval Grafana picks for an hour on a dashboard's width.
fn substitute(q: &str, region: &[&str], host: &[&str]) -> String {
    q.replace("$timeFilter", "time > now() - 1h")
        .replace("$__interval", "5s")
        .replace("$region", &regex_value(region))
        .replace("$host", &regex_value(host))
}

/// `None` when the answer holds at least one non-null value; else what came back.
fn no_data(answer: &str) -> Option<String> {
    let json = match Json::parse(answer) {
        Ok(j) => j,
        Err(e) => return Some(format!("not JSON ({e}): {answer}")),
    };
    let results = json.get("results").map(Json::items).unwrap_or(&[]);
    for r in results {
        if let Some(e) = r.get("error") {
            return Some(format!("error {e:?}"));
        }
        for s in r.get("series").map(Json::items).unwrap_or(&[]) {
            let columns = s.get("columns").map(Json::items).unwrap_or(&[]);
            for row in s.get("values").map(Json::items).unwrap_or(&[]) {
                let any = row
                    .items()
                    .iter()
                    .zip(columns)
                    .any(|(v, c)| c.as_str() != Some("time") && *v != Json::Null);
                if any {
                    return None;
                }
            }
        }
    }
    Some(format!("no data: {answer}"))
}

#[test]
fn every_dashboard_query_returns_data_from_real_agents() {
    let spec = FactorySpec {
        period_ms: 2000,
        push_interval_ms: 10_000,
        ..FactorySpec::default()
    };
    let Some(mut site) = Site::new("dashboards", &spec) else {
        return;
    };
    let pi_sys = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../agent/tests/fixtures/pi4-aarch64-bookworm-nsynet/sys");
    let agent = Agent::launch_with(
        site.dir.path(),
        site.factory.addr(),
        &AgentSpec::new("alpha", "eu"),
        "alpha",
        &["--sys-root".into(), pi_sys.into_os_string()],
    );
    site.agents.push(agent);
    site.agent(&AgentSpec::new("bravo", "us"));

    let dir = dashboards_dir();
    let fleet = queries_of(&dir.join("autofact-fleet.json"));
    let host = queries_of(&dir.join("autofact-host.json"));
    assert!(
        fleet.len() >= 15 && host.len() >= 30,
        "{} {}",
        fleet.len(),
        host.len()
    );
    // Fleet: every host of every region (All), then one region and one host picked; the host
    // dashboard: the Pi-like host, region All.
    let mut cases: Vec<(String, String)> = Vec::new();
    for (region, hosts) in [
        (vec![], vec![]),
        (vec!["eu"], vec!["alpha"]),
        (vec!["eu", "us"], vec!["alpha", "bravo"]),
    ] {
        for q in &fleet {
            cases.push((
                format!("{} (region {region:?}, host {hosts:?})", q.at),
                substitute(&q.text, &region, &hosts),
            ));
        }
    }
    for q in &host {
        cases.push((
            format!("{} (host alpha)", q.at),
            substitute(&q.text, &[], &["alpha"]),
        ));
    }

    // Rates need two 5 s buckets with data and batches come every 10 s: poll, generously.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut missing: Vec<String>;
    loop {
        missing = cases
            .iter()
            .filter_map(|(at, q)| {
                let answer = match site.influx.query(DB, q) {
                    Ok(a) => a,
                    Err(e) => return Some(format!("{at}: {e}\n  {q}")),
                };
                no_data(&answer).map(|why| format!("{at}: {why}\n  {q}"))
            })
            .collect();
        if missing.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    assert!(
        missing.is_empty(),
        "{} of {} dashboard queries returned no data after {:.0} s:\n{}\n{}",
        missing.len(),
        cases.len(),
        site.elapsed(),
        missing.join("\n"),
        site.outputs()
    );
    println!(
        "{} dashboard queries returned data after {:.0} s",
        cases.len(),
        site.elapsed()
    );

    // The variables list what the agents sent.
    let regions = site
        .influx
        .query(DB, r#"SHOW TAG VALUES FROM "system" WITH KEY = "region""#)
        .unwrap_or_default();
    assert!(
        regions.contains("\"eu\"") && regions.contains("\"us\""),
        "{regions}"
    );
}
