//! Sink throughput and ack latency, in one run, against a real InfluxDB 1.x started on a free
//! loopback port (needs `influxd`, Debian's `influxdb` package):
//!
//! ```sh
//! cargo run --release -p autofactory --example sink_bench
//! ```
//!
//! Prints: points/s through the line protocol encoder alone; points/s through [`Sink`] (agent-sized
//! submissions from many concurrent writers, as sessions make them) versus POSTing the same line
//! protocol straight to InfluxDB with minreq in batches of the same size, and their ratio (the
//! goal is at least 0.8); the ack latency of a lone write (group commit, the default) against a
//! bare POST; and the cost of minreq's per-request TCP connection (`GET /ping`).
//!
//! `SINK_BENCH_POINTS` sets the points per throughput round (default 50000).

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use autofact_fbs::lineproto::{write_snapshot, Tags};
use autofact_fbs::model::Snapshot;
use autofact_tests::influx::{Influx, Json};
use autofactory::metrics::Metrics;
use autofactory::sink::{Sink, SinkConfig};
use common::snapshot;

const BATCH_POINTS: usize = 5000;
/// Snapshots per agent batch (a 10 s push interval at 1 s collection).
const SNAPSHOTS_PER_SUBMISSION: usize = 10;
/// Concurrent writers through the sink (sessions).
const WRITERS: usize = 32;
/// Timed rounds of each kind.
const ROUNDS: i64 = 12;

/// Agent batches for `points` points at least, from many hosts, every timestamp unique per host.
fn submissions(points: usize, round: i64) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut total = 0;
    let mut n = 0u64;
    while total < points {
        let host = format!("node-{:04}", n % 500);
        let tags = Tags {
            host: &host,
            region: "eu-west",
            zone: "rack-3",
            ..Default::default()
        };
        let mut lines = String::new();
        let mut p = 0;
        for s in 0..SNAPSHOTS_PER_SUBMISSION as i64 {
            // Round, batch number and snapshot make the time unique for the host.
            let t = 1_764_000_000_000_000_000
                + round * 1_000_000_000_000
                + (n as i64 / 500) * 1_000_000_000
                + s * 10_000_000;
            p += write_snapshot(&mut lines, &tags, &snapshot(t, n));
        }
        total += p;
        out.push((lines, p));
        n += 1;
    }
    out
}

/// The same lines regrouped into bodies of `BATCH_POINTS` points, as the sink batches them.
fn bodies(subs: &[(String, usize)]) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let (mut body, mut points) = (String::new(), 0);
    for (lines, p) in subs {
        if points + p > BATCH_POINTS && points > 0 {
            out.push((std::mem::take(&mut body), points));
            points = 0;
        }
        body.push_str(lines);
        points += p;
    }
    if points > 0 {
        out.push((body, points));
    }
    out
}

fn post(url: &str, body: &str) -> u16 {
    minreq::post(url)
        .with_body(body.as_bytes().to_vec())
        .with_timeout(60)
        .send()
        .map(|r| r.status_code)
        .unwrap_or(0)
}

fn bench_encoder() -> f64 {
    let snaps: Vec<Snapshot> = (0..1000)
        .map(|i| snapshot(1_764_000_000_000_000_000 + i, i as u64))
        .collect();
    let tags = Tags {
        host: "node-0001",
        region: "eu-west",
        zone: "rack-3",
        ..Default::default()
    };
    let mut out = String::with_capacity(1 << 20);
    let mut points = 0usize;
    let start = Instant::now();
    let mut rounds = 0;
    while start.elapsed() < Duration::from_secs(2) {
        for s in &snaps {
            out.clear();
            points += write_snapshot(&mut out, &tags, s);
        }
        rounds += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "encoder alone:            {:>10.0} points/s  ({} points, {} snapshots of {} points, {:.2} s)",
        points as f64 / secs,
        points,
        rounds * snaps.len(),
        points / (rounds * snaps.len()),
        secs
    );
    points as f64 / secs
}

fn bench_direct(influx: &Influx, db: &str, subs: &[(String, usize)]) -> Result<f64, String> {
    let url = format!("{}/write?db={db}&precision=ns", influx.url());
    let bodies = bodies(subs);
    let points: usize = bodies.iter().map(|b| b.1).sum();
    let start = Instant::now();
    for (body, _) in &bodies {
        let code = post(&url, body);
        if code != 204 {
            return Err(format!("direct POST answered {code}"));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "  direct POST (minreq):   {:>10.0} points/s  ({points} points in {} POSTs of <= {BATCH_POINTS}, {secs:.2} s)",
        points as f64 / secs,
        bodies.len()
    );
    Ok(points as f64 / secs)
}

fn sink_for(influx: &Influx, db: &str, metrics: Arc<Metrics>) -> Result<Sink, String> {
    let cfg = SinkConfig {
        kind: "influxdb".into(),
        url: influx.url(),
        database: db.into(),
        create_database: true,
        batch_points: BATCH_POINTS,
        ..SinkConfig::default()
    };
    Sink::start(&cfg, &std::env::temp_dir(), metrics).map_err(|e| e.to_string())
}

/// InfluxDB's count of write requests so far (`/debug/vars`, httpd `writeReq`).
fn write_requests(influx: &Influx) -> u64 {
    let Ok(r) = minreq::get(format!("{}/debug/vars", influx.url()))
        .with_timeout(10)
        .send()
    else {
        return 0;
    };
    let Ok(j) = Json::parse(r.as_str().unwrap_or("")) else {
        return 0;
    };
    match j {
        Json::Obj(members) => members
            .iter()
            .filter(|(_, v)| v.get("name").and_then(Json::as_str) == Some("httpd"))
            .filter_map(|(_, v)| v.get("values")?.get("writeReq")?.as_i64())
            .sum::<i64>() as u64,
        _ => 0,
    }
}

fn bench_sink(influx: &Influx, db: &str, subs: Vec<(String, usize)>) -> Result<f64, String> {
    let requests_before = write_requests(influx);
    let metrics = Arc::new(Metrics::default());
    let sink = sink_for(influx, db, metrics.clone())?;
    let points: usize = subs.iter().map(|s| s.1).sum();
    let n = subs.len();
    // Deal the submissions to the writers up front, so only the sink is timed.
    let mut per_writer: Vec<Vec<(String, usize)>> = (0..WRITERS).map(|_| Vec::new()).collect();
    for (i, s) in subs.into_iter().enumerate() {
        per_writer[i % WRITERS].push(s);
    }
    let start = Instant::now();
    let result = smol::block_on(async {
        let tasks: Vec<_> = per_writer
            .into_iter()
            .map(|subs| {
                let sink = sink.clone();
                smol::spawn(async move {
                    for (lines, p) in subs {
                        sink.write("bench", lines, p)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Ok::<(), String>(())
                })
            })
            .collect();
        let mut result = Ok(());
        for t in tasks {
            result = result.and(t.await);
        }
        result
    });
    let secs = start.elapsed().as_secs_f64();
    sink.shutdown();
    result?;
    let written = metrics.points_written.load(Ordering::Relaxed);
    if written != points as u64 {
        return Err(format!("the sink wrote {written} of {points} points"));
    }
    let errors = metrics.sink_errors.load(Ordering::Relaxed);
    let requests = write_requests(influx).saturating_sub(requests_before);
    println!(
        "  through the Sink:       {:>10.0} points/s  ({points} points in {n} submissions from {WRITERS} writers, {requests} POSTs, {secs:.2} s, {errors} failed attempts)",
        points as f64 / secs
    );
    Ok(points as f64 / secs)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn bench_latency(influx: &Influx) -> Result<(), String> {
    const N: usize = 200;
    let subs = submissions((2 * N + 10) * 190, 9);
    // Lone writes: the queue is empty each time, as for a quiet factory.
    let sink = sink_for(influx, "lat", Arc::new(Metrics::default()))?;
    // Warm-up; creates the database.
    smol::block_on(sink.write("bench", subs[0].0.clone(), subs[0].1)).map_err(|e| e.to_string())?;
    let mut via_sink = Vec::new();
    for (lines, p) in &subs[1..=N] {
        let t = Instant::now();
        smol::block_on(sink.write("bench", lines.clone(), *p)).map_err(|e| e.to_string())?;
        via_sink.push(t.elapsed());
    }
    sink.shutdown();
    let url = format!("{}/write?db=lat&precision=ns", influx.url());
    let mut direct = Vec::new();
    for (lines, _) in &subs[N + 1..=2 * N] {
        let t = Instant::now();
        let code = post(&url, lines);
        direct.push(t.elapsed());
        if code != 204 {
            return Err(format!("direct POST answered {code}"));
        }
    }
    let ping_url = format!("{}/ping", influx.url());
    let mut ping: Vec<Duration> = (0..N)
        .map(|_| {
            let t = Instant::now();
            let _ = minreq::get(&ping_url).with_timeout(10).send();
            t.elapsed()
        })
        .collect();
    for v in [&mut via_sink, &mut direct, &mut ping] {
        v.sort();
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "ack latency, lone write of {} points through the Sink: median {:.2} ms, p99 {:.2} ms",
        subs[1].1,
        ms(percentile(&via_sink, 0.5)),
        ms(percentile(&via_sink, 0.99))
    );
    println!(
        "same write POSTed directly:                          median {:.2} ms, p99 {:.2} ms",
        ms(percentile(&direct, 0.5)),
        ms(percentile(&direct, 0.99))
    );
    println!(
        "minreq GET /ping (a new TCP connection each):        median {:.3} ms, p99 {:.3} ms",
        ms(percentile(&ping, 0.5)),
        ms(percentile(&ping, 0.99))
    );
    // Telegraf-like fixed flush for comparison: a lone write waits for the flush interval.
    let sink = {
        let cfg = SinkConfig {
            kind: "influxdb".into(),
            url: influx.url(),
            database: "lat".into(),
            linger_ms: 1000,
            ..SinkConfig::default()
        };
        Sink::start(&cfg, &std::env::temp_dir(), Arc::new(Metrics::default()))
            .map_err(|e| e.to_string())?
    };
    let mut fixed = Vec::new();
    for (lines, p) in &subs[2 * N + 1..2 * N + 6] {
        let t = Instant::now();
        smol::block_on(sink.write("bench", lines.clone(), *p)).map_err(|e| e.to_string())?;
        fixed.push(t.elapsed());
    }
    sink.shutdown();
    fixed.sort();
    println!(
        "same lone write with linger_ms = flush_ms = 1000 (Telegraf-like): median {:.0} ms",
        ms(percentile(&fixed, 0.5))
    );
    Ok(())
}

fn main() {
    let total: usize = std::env::var("SINK_BENCH_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    bench_encoder();
    let influx = match Influx::launch() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("sink_bench: {e}");
            std::process::exit(2);
        }
    };
    // The release profile aborts on panic, which would skip Influx's Drop and leave influxd
    // running: every failure comes back as an Err instead.
    let result = run(&influx, total);
    drop(influx);
    if let Err(e) = result {
        eprintln!("sink_bench: {e}");
        std::process::exit(1);
    }
}

fn run(influx: &Influx, total: usize) -> Result<(), String> {
    for db in ["direct", "sink"] {
        influx
            .execute(&format!("CREATE DATABASE \"{db}\""))
            .map_err(|e| e.to_string())?;
    }
    // A warm-up round, not counted: the first write of each series creates it (index work that
    // later writes skip), so both databases get their series before anything is timed.
    println!("warm-up (series creation, not counted):");
    bench_direct(influx, "direct", &submissions(total, 0))?;
    bench_sink(influx, "sink", submissions(total, 0))?;
    // Then alternate, swapping who goes first each round, on fresh timestamps: InfluxDB's speed
    // drifts as its cache fills and compactions run (and with whatever else the machine does);
    // alternating keeps either side from always meeting the busier store.
    let mut ratios = Vec::new();
    let (mut d_sum, mut s_sum) = (0.0, 0.0);
    for round in 1..=ROUNDS {
        println!("round {round}:");
        let (d_subs, s_subs) = (
            submissions(total, round * 2),
            submissions(total, round * 2 + 1),
        );
        let (direct, sink) = if round % 2 == 1 {
            let d = bench_direct(influx, "direct", &d_subs)?;
            (d, bench_sink(influx, "sink", s_subs)?)
        } else {
            let s = bench_sink(influx, "sink", s_subs)?;
            (bench_direct(influx, "direct", &d_subs)?, s)
        };
        println!("  sink / direct = {:.2}", sink / direct);
        ratios.push(sink / direct);
        // Harmonic means, through total time for the same number of points.
        d_sum += 1.0 / direct;
        s_sum += 1.0 / sink;
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "RATIO sink / direct: {:.2} over {ROUNDS} rounds (total time), median {:.2}, range {:.2}..{:.2}  (goal >= 0.8)",
        d_sum / s_sum,
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    bench_latency(influx)
}
