//! A simulated fleet against a running factory: N agents, each with its own websocket and the real
//! protocol (Hello, Welcome, Batches of one 19-point snapshot of a 4-core node, cumulative Acks),
//! sending one batch per second each, their starts spread over a ramp. After the ramp and a warm-up
//! it measures a window and prints: connections held, batches/s and points/s acknowledged, ack
//! latency p50/p99/max, and the RSS, peak RSS and CPU of the factory process (and of influxd, and of
//! this generator) read from `/proc/<pid>/stat` and `status`. With `--influx`, it then POSTs the same
//! kind of points straight to InfluxDB for the same length of time and prints that rate and the
//! ratio. A last line starting with `RESULT` carries every figure as `key=value` for scripts.
//!
//! Run it against a factory started separately (`bench/factory_scale.sh` does all of this):
//!
//! ```sh
//! cargo run --release -p autofactory --example fleet -- --addr 127.0.0.1:8675 --token T \
//!     --clients 1000 --factory-pid PID [--admin 127.0.0.1:8676] [--seconds 30] [--ramp 5] \
//!     [--warmup 5] [--rate 1] [--threads 1] [--label TEXT] [--factory-base-kib KIB]
//!     [--influx http://127.0.0.1:8086 --influx-pid PID --direct-db direct --direct-writers 2]
//! ```
//!
//! `--direct-only` skips the fleet and only POSTs `--clients` hosts' points to `--influx` (run it
//! against a fresh influxd, so neither measurement inherits the other's series and compactions).
//!
//! `--rate 0` is the closed loop: each agent sends its next batch as soon as the previous one is
//! acknowledged (the factory's ceiling rather than a fleet's steady state). `--rate 0.1` is a
//! mostly idle fleet (one push every 10 s). Each agent needs one file descriptor here and one in
//! the factory: raise `ulimit -n` for large fleets.
//!
//! `--factory-base-kib` is the factory's RSS with no agent connected (read by the caller before
//! starting this): the RSS at the end of the window above it, per connection held, is printed as
//! KiB per agent.

mod common;

use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::Message as WsMessage;
use autofact_fbs::lineproto::{write_snapshot, Tags};
use autofact_fbs::{Batch, Hello, Message};
use common::snapshot;
use smol::stream::StreamExt;
use smol::{Async, Timer};
use std::collections::VecDeque;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Points in one [`snapshot`].
const POINTS_PER_SNAPSHOT: u64 = 19;
/// Points per direct POST: the factory sink's default `batch_points`.
const DIRECT_BATCH_POINTS: usize = 5000;
/// Linux's USER_HZ on every architecture we run on; /proc/<pid>/stat counts in these.
const CLK_TCK: f64 = 100.0;

struct Args {
    addr: SocketAddr,
    token: String,
    clients: usize,
    seconds: f64,
    ramp: f64,
    warmup: f64,
    rate: f64,
    threads: usize,
    factory_pid: Option<u32>,
    admin: Option<String>,
    influx: Option<String>,
    influx_pid: Option<u32>,
    direct_writers: usize,
    direct_db: String,
    direct_only: bool,
    label: String,
    factory_base_kib: Option<u64>,
}

fn args() -> Result<Args, Box<dyn std::error::Error>> {
    let mut a = pico_args::Arguments::from_env();
    let direct_only = a.contains("--direct-only");
    let clients: usize = a.opt_value_from_str("--clients")?.unwrap_or(1000);
    let out = Args {
        addr: a
            .opt_value_from_str("--addr")?
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8675))),
        token: a.opt_value_from_str("--token")?.unwrap_or_default(),
        clients,
        seconds: a.opt_value_from_str("--seconds")?.unwrap_or(30.0),
        // About 1,000 new connections a second: a factory restart's reconnect wave, not a flood.
        ramp: a
            .opt_value_from_str("--ramp")?
            .unwrap_or((clients as f64 / 1000.0).max(3.0)),
        warmup: a.opt_value_from_str("--warmup")?.unwrap_or(5.0),
        rate: a.opt_value_from_str("--rate")?.unwrap_or(1.0),
        threads: a.opt_value_from_str("--threads")?.unwrap_or(1),
        factory_pid: a.opt_value_from_str("--factory-pid")?,
        admin: a.opt_value_from_str("--admin")?,
        influx: a.opt_value_from_str("--influx")?,
        influx_pid: a.opt_value_from_str("--influx-pid")?,
        direct_writers: a.opt_value_from_str("--direct-writers")?.unwrap_or(2),
        direct_db: a
            .opt_value_from_str("--direct-db")?
            .unwrap_or_else(|| "direct".into()),
        direct_only,
        label: a.opt_value_from_str("--label")?.unwrap_or_default(),
        factory_base_kib: a.opt_value_from_str("--factory-base-kib")?,
    };
    let rest = a.finish();
    if !rest.is_empty() {
        return Err(format!("unexpected arguments: {rest:?}").into());
    }
    Ok(out)
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Counters shared by every simulated agent.
#[derive(Default)]
struct Stats {
    connected: AtomicU64,
    failed: AtomicU64,
    lost: AtomicU64,
    sent: AtomicU64,
    /// Batches sent inside the measurement window (acked or not).
    sent_in_window: AtomicU64,
    acked: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Stats {
    fn error(&self, e: String) {
        let mut g = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(e);
        }
    }
}

/// What one simulated agent does from its start time to `end`; returns its ack latencies (µs)
/// for the batches sent inside `window`.
async fn agent(
    i: usize,
    args: Arc<Args>,
    start: Instant,
    window: (Instant, Instant),
    end: Instant,
    st: Arc<Stats>,
) -> Vec<u32> {
    Timer::at(start).await;
    let addr = args.addr;
    // Small buffers: 10,000 of them live in this process.
    let small = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096);
    let tcp = match Async::<TcpStream>::connect(addr).await {
        Ok(t) => t,
        Err(e) => {
            st.failed.fetch_add(1, Ordering::Relaxed);
            st.error(format!("agent {i}: connect: {e}"));
            return Vec::new();
        }
    };
    let mut ws = match async_tungstenite::client_async_with_config(
        format!("ws://{addr}/"),
        tcp,
        Some(small),
    )
    .await
    {
        Ok((ws, _)) => ws,
        Err(e) => {
            st.failed.fetch_add(1, Ordering::Relaxed);
            st.error(format!("agent {i}: upgrade: {e}"));
            return Vec::new();
        }
    };
    let hostname = format!("node-{i:05}");
    let hello = Hello {
        protocol_version: autofact_fbs::PROTOCOL_VERSION,
        token: args.token.clone(),
        hostname: hostname.clone(),
        region: "bench".into(),
        arch: "aarch64".into(),
        agent_version: "fleet-sim".into(),
        agent_clock_ns: now_ns(),
        ..Default::default()
    };
    if let Err(e) = ws
        .send(WsMessage::Binary(
            autofact_fbs::encode(&Message::Hello(hello)).into(),
        ))
        .await
    {
        st.failed.fetch_add(1, Ordering::Relaxed);
        st.error(format!("agent {i}: send Hello: {e}"));
        return Vec::new();
    }
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Binary(b))) => match autofact_fbs::decode(&b) {
                Ok(Message::Welcome(_)) => break,
                other => {
                    st.failed.fetch_add(1, Ordering::Relaxed);
                    st.error(format!("agent {i}: expected Welcome, got {other:?}"));
                    return Vec::new();
                }
            },
            Some(Ok(_)) => continue,
            other => {
                st.failed.fetch_add(1, Ordering::Relaxed);
                st.error(format!("agent {i}: expected Welcome, got {other:?}"));
                return Vec::new();
            }
        }
    }
    st.connected.fetch_add(1, Ordering::Relaxed);

    let period = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let mut latencies = Vec::new();
    let mut pending: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut seq = 0u64;
    let mut next = Instant::now() + period.unwrap_or(Duration::ZERO);
    let mut lost = false;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        // Stay a moment past the window so the count of connections held is taken with all here.
        let stay = window.1 + Duration::from_secs(1);
        if now >= stay && pending.is_empty() {
            break;
        }
        let due = now < window.1
            && match period {
                Some(_) => now >= next,
                None => pending.is_empty(),
            };
        if due {
            seq += 1;
            let b = Message::Batch(Batch {
                seq,
                snapshots: vec![snapshot(now_ns(), seq)],
                ..Batch::default()
            });
            let sent_at = Instant::now();
            if let Err(e) = ws
                .send(WsMessage::Binary(autofact_fbs::encode(&b).into()))
                .await
            {
                st.error(format!("agent {i}: send batch: {e}"));
                lost = true;
                break;
            }
            pending.push_back((seq, sent_at));
            st.sent.fetch_add(1, Ordering::Relaxed);
            if sent_at >= window.0 && sent_at < window.1 {
                st.sent_in_window.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(p) = period {
                next += p;
            }
            continue;
        }
        let wake = if now < window.1 {
            match period {
                Some(_) => next.min(end),
                None => end,
            }
        } else if now < stay {
            stay
        } else {
            end
        };
        // Dropping `ws.next()` when the timer wins is fine: the stream keeps its own state.
        let event = smol::future::or(
            async {
                Timer::at(wake).await;
                None
            },
            async { Some(ws.next().await) },
        )
        .await;
        match event {
            None => continue,
            Some(Some(Ok(WsMessage::Binary(b)))) => match autofact_fbs::decode(&b) {
                Ok(Message::Ack(a)) => {
                    let at = Instant::now();
                    while let Some(&(s, t)) = pending.front() {
                        if s > a.seq {
                            break;
                        }
                        pending.pop_front();
                        st.acked.fetch_add(1, Ordering::Relaxed);
                        if t >= window.0 && t < window.1 {
                            latencies.push((at - t).as_micros().min(u32::MAX as u128) as u32);
                        }
                    }
                }
                Ok(Message::Reject(r)) => {
                    st.error(format!("agent {i}: rejected: {r:?}"));
                    lost = true;
                    break;
                }
                // Config pushes and anything else a real agent would apply.
                _ => {}
            },
            Some(Some(Ok(_))) => continue,
            Some(other) => {
                st.error(format!("agent {i}: connection lost: {other:?}"));
                lost = true;
                break;
            }
        }
    }
    if lost {
        st.lost.fetch_add(1, Ordering::Relaxed);
    }
    st.connected.fetch_sub(1, Ordering::Relaxed);
    let _ = ws.close(None).await;
    latencies
}

/// CPU ticks (utime + stime) of a process, from `/proc/<pid>/stat`.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// A `kB` value (VmRSS, VmHWM) or a count (Threads) from `/proc/<pid>/status`.
fn status_value(pid: &str, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The factory's own counters from its admin `/metrics`.
fn factory_metric(admin: &str, name: &str) -> Option<u64> {
    let r = minreq::get(format!("http://{admin}/metrics"))
        .with_timeout(5)
        .send()
        .ok()?;
    let text = r.as_str().ok()?;
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Nanoseconds all threads of a process spent runnable but waiting for a CPU (the second field
/// of `/proc/<pid>/task/*/schedstat`): how much a busy machine held the process back.
fn runqueue_wait_ns(pid: &str) -> Option<u64> {
    let mut sum = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
            sum += s
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Some(sum)
}

/// One process's CPU use over a window.
struct Cpu0 {
    pid: String,
    ticks: Option<u64>,
    wait_ns: Option<u64>,
}

impl Cpu0 {
    fn new(pid: impl ToString) -> Cpu0 {
        let pid = pid.to_string();
        Cpu0 {
            ticks: cpu_ticks(&pid),
            wait_ns: runqueue_wait_ns(&pid),
            pid,
        }
    }
    /// Percent of one core over `secs`.
    fn percent(&self, secs: f64) -> Option<f64> {
        let t1 = cpu_ticks(&self.pid)?;
        Some((t1.saturating_sub(self.ticks?)) as f64 / CLK_TCK / secs * 100.0)
    }
    /// Time spent waiting for a CPU over `secs`, in percent of one core. Threads that exited
    /// in between take their share with them, so this is a lower bound.
    fn wait_percent(&self, secs: f64) -> Option<f64> {
        let w1 = runqueue_wait_ns(&self.pid)?;
        Some(w1.saturating_sub(self.wait_ns?) as f64 / 1e9 / secs * 100.0)
    }
}

/// The `p` quantile in ms of `total` latencies of which `sorted` are known; the others were never
/// acknowledged and count as longer than any (`None`: the quantile is among them).
fn percentile(sorted: &[u32], total: usize, p: f64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let i = ((total.max(sorted.len()) as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map(|&v| v as f64 / 1000.0)
}

/// POSTs this fleet's kind of points straight to InfluxDB for `secs`; returns points/s.
fn direct(
    url: &str,
    db: &str,
    hosts: usize,
    writers: usize,
    secs: f64,
) -> Result<f64, Box<dyn std::error::Error>> {
    minreq::post(format!("{url}/query"))
        .with_header("Content-Type", "application/x-www-form-urlencoded")
        .with_body(format!("q=CREATE+DATABASE+{db}"))
        .with_timeout(30)
        .send()?;
    // One untimed round first: it creates every series, as the fleet's warm-up did for the factory.
    let base = now_ns();
    let mut body = String::new();
    let mut points = 0;
    for h in 0..hosts {
        let host = format!("node-{h:05}");
        let tags = Tags {
            host: &host,
            region: "bench",
            zone: "",
            ..Default::default()
        };
        points += write_snapshot(&mut body, &tags, &snapshot(base - 1_000_000_000, 0));
        if points >= DIRECT_BATCH_POINTS || h + 1 == hosts {
            minreq::post(format!("{url}/write?db={db}&precision=ns"))
                .with_body(std::mem::take(&mut body))
                .with_timeout(60)
                .send()?;
            points = 0;
        }
    }
    // Bodies are encoded by one thread ahead of the writers, so the writers time InfluxDB only.
    let (tx, rx) = smol::channel::bounded::<(String, usize)>(writers * 2);
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut round = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let mut body = String::new();
                let mut points = 0;
                let mut h = 0;
                while h < hosts && !stop.load(Ordering::Relaxed) {
                    let host = format!("node-{h:05}");
                    let tags = Tags {
                        host: &host,
                        region: "bench",
                        zone: "",
                        ..Default::default()
                    };
                    let snap = snapshot(base + round * 1_000_000_000, round as u64);
                    points += write_snapshot(&mut body, &tags, &snap);
                    h += 1;
                    if points >= DIRECT_BATCH_POINTS || h == hosts {
                        if tx
                            .send_blocking((std::mem::take(&mut body), points))
                            .is_err()
                        {
                            return;
                        }
                        points = 0;
                    }
                }
                round += 1;
            }
        })
    };
    let written = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(None::<String>));
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(secs);
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let rx = rx.clone();
            let written = written.clone();
            let errors = errors.clone();
            let url = format!("{url}/write?db={db}&precision=ns");
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    let Ok((body, points)) = rx.recv_blocking() else {
                        return;
                    };
                    match minreq::post(&url).with_body(body).with_timeout(30).send() {
                        Ok(r) if (200..300).contains(&r.status_code) => {
                            written.fetch_add(points as u64, Ordering::Relaxed);
                        }
                        Ok(r) => {
                            *errors.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
                                "HTTP {}: {}",
                                r.status_code,
                                r.as_str().unwrap_or("")
                            ))
                        }
                        Err(e) => {
                            *errors.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string())
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    drop(rx);
    let _ = producer.join();
    if let Some(e) = errors.lock().unwrap_or_else(|p| p.into_inner()).take() {
        eprintln!("direct POST error (last): {e}");
    }
    Ok(written.load(Ordering::Relaxed) as f64 / elapsed)
}

/// InfluxDB's own rate for this fleet's points, with one writer (the sink's shape) and with
/// `--direct-writers`; prints each and returns the best (None without `--influx`).
fn direct_phase(
    args: &Args,
    factory: Option<f64>,
) -> Result<Option<f64>, Box<dyn std::error::Error>> {
    let Some(url) = &args.influx else {
        return Ok(None);
    };
    let mut writers = vec![1];
    if args.direct_writers > 1 {
        writers.push(args.direct_writers);
    }
    let mut best: Option<f64> = None;
    for w in writers {
        let i_cpu = args.influx_pid.map(Cpu0::new);
        let t = Instant::now();
        let r = direct(
            url,
            &args.direct_db,
            args.clients,
            w,
            args.seconds.min(15.0),
        )?;
        // Over the whole call (the untimed warm-up round included).
        let d_secs = t.elapsed().as_secs_f64();
        println!(
            "direct POST to InfluxDB ({w} writer(s), {DIRECT_BATCH_POINTS}-point bodies, {} hosts): {r:.0} points/s, influxd CPU {:.1}% of a core{}",
            args.clients,
            i_cpu.and_then(|c| c.percent(d_secs)).unwrap_or(f64::NAN),
            factory.map_or(String::new(), |f| format!("; factory/direct = {:.2}", f / r))
        );
        println!(
            "RESULT label={} direct_writers={w} direct_points_s={r:.0}",
            args.label
        );
        best = Some(best.map_or(r, |b| b.max(r)));
    }
    Ok(best)
}

/// What the measurement window saw; `f_` is the factory, `i_` influxd, `g_` this generator.
struct Measured {
    held: u64,
    acked: u64,
    sent: u64,
    f_pct: Option<f64>,
    f_wait: Option<f64>,
    i_pct: Option<f64>,
    g_pct: Option<f64>,
    load_start: String,
    load_end: String,
    f_rss: Option<u64>,
    f_hwm: Option<u64>,
    f_threads: Option<u64>,
    i_rss: Option<u64>,
    written0: Option<u64>,
    written1: Option<u64>,
    f_connected: Option<u64>,
    /// Ack latencies, sorted.
    lat: Vec<u32>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Arc::new(args()?);
    if args.direct_only {
        if args.influx.is_none() {
            return Err("--direct-only needs --influx URL".into());
        }
        direct_phase(&args, None)?;
        return Ok(());
    }
    let n = args.clients;
    let st = Arc::new(Stats::default());
    let t0 = Instant::now() + Duration::from_millis(100);
    let w0 = t0 + Duration::from_secs_f64(args.ramp + args.warmup);
    let w1 = w0 + Duration::from_secs_f64(args.seconds);
    // After the window the agents stop sending and wait up to this long for the acks still
    // owed, so a slow factory's latency is measured rather than cut off.
    let end = w1 + Duration::from_secs(30);

    let ex = Arc::new(smol::Executor::<'static>::new());
    let (done_tx, done_rx) = smol::channel::bounded::<()>(1);
    let helpers: Vec<_> = (1..args.threads.max(1))
        .map(|_| {
            let ex = ex.clone();
            let rx = done_rx.clone();
            std::thread::spawn(move || {
                smol::block_on(ex.run(async {
                    let _ = rx.recv().await;
                }))
            })
        })
        .collect();

    let fpid = args.factory_pid.map(|p| p.to_string());
    let ipid = args.influx_pid.map(|p| p.to_string());
    let report = smol::block_on(ex.run(async {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let start = t0 + Duration::from_secs_f64(args.ramp * i as f64 / n as f64);
                ex.spawn(agent(i, args.clone(), start, (w0, w1), end, st.clone()))
            })
            .collect();
        // Ramp: print progress once a second until the window opens.
        while Instant::now() + Duration::from_secs(1) < w0 {
            Timer::after(Duration::from_secs(1)).await;
            eprintln!(
                "[{:5.1} s] connected {} failed {} acked {}",
                t0.elapsed().as_secs_f64(),
                st.connected.load(Ordering::Relaxed),
                st.failed.load(Ordering::Relaxed),
                st.acked.load(Ordering::Relaxed)
            );
        }
        Timer::at(w0).await;
        let admin = args.admin.clone();
        let written0 = match admin.clone() {
            Some(a) => {
                smol::unblock(move || factory_metric(&a, "autofactory_points_written_total")).await
            }
            None => None,
        };
        let acked0 = st.acked.load(Ordering::Relaxed);
        let sent0 = st.sent.load(Ordering::Relaxed);
        let f_cpu = fpid.as_ref().map(Cpu0::new);
        let i_cpu = ipid.as_ref().map(Cpu0::new);
        let g_cpu = Cpu0::new("self");
        let load_start = loadavg();
        Timer::at(w1).await;
        let secs = args.seconds;
        let held = st.connected.load(Ordering::Relaxed);
        let acked = st.acked.load(Ordering::Relaxed) - acked0;
        let sent = st.sent.load(Ordering::Relaxed) - sent0;
        let f_pct = f_cpu.as_ref().and_then(|c| c.percent(secs));
        let f_wait = f_cpu.as_ref().and_then(|c| c.wait_percent(secs));
        let i_pct = i_cpu.as_ref().and_then(|c| c.percent(secs));
        let g_pct = g_cpu.percent(secs);
        let load_end = loadavg();
        let f_rss = fpid.as_deref().and_then(|p| status_value(p, "VmRSS:"));
        let f_hwm = fpid.as_deref().and_then(|p| status_value(p, "VmHWM:"));
        let f_threads = fpid.as_deref().and_then(|p| status_value(p, "Threads:"));
        let i_rss = ipid.as_deref().and_then(|p| status_value(p, "VmRSS:"));
        let (written1, f_connected) = match admin {
            Some(a) => {
                smol::unblock(move || {
                    (
                        factory_metric(&a, "autofactory_points_written_total"),
                        factory_metric(&a, "autofactory_connected_clients"),
                    )
                })
                .await
            }
            None => (None, None),
        };
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await);
        }
        lat.sort_unstable();
        Measured {
            held,
            acked,
            sent,
            f_pct,
            f_wait,
            i_pct,
            g_pct,
            load_start,
            load_end,
            f_rss,
            f_hwm,
            f_threads,
            i_rss,
            written0,
            written1,
            f_connected,
            lat,
        }
    }));
    drop(done_tx);
    for h in helpers {
        let _ = h.join();
    }
    let Measured {
        held,
        acked,
        sent,
        f_pct,
        f_wait,
        i_pct,
        g_pct,
        load_start,
        load_end,
        f_rss,
        f_hwm,
        f_threads,
        i_rss,
        written0,
        written1,
        f_connected,
        lat,
    } = report;
    let secs = args.seconds;
    let batches_s = acked as f64 / secs;
    let points_s = batches_s * POINTS_PER_SNAPSHOT as f64;
    let durable_s = match (written0, written1) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / secs),
        _ => None,
    };
    let in_window = st.sent_in_window.load(Ordering::Relaxed) as usize;
    // Unacknowledged batches waited at least this long when the agents hung up.
    let floor_ms = (end - w1).as_secs_f64() * 1000.0;
    let q = |p: f64| percentile(&lat, in_window, p);
    // No batch sent in the window (a window shorter than the push period): no latency to show.
    let show = |v: Option<f64>| match v {
        Some(v) => format!("{v:.2}"),
        None if in_window == 0 => "-".into(),
        None => format!(">{floor_ms:.0}"),
    };
    let (p50, p99, max) = (show(q(0.5)), show(q(0.99)), show(q(1.0)));
    let mib = |k: Option<u64>| k.map_or(f64::NAN, |k| k as f64 / 1024.0);
    let pct = |p: Option<f64>| p.unwrap_or(f64::NAN);
    let offered = if args.rate > 0.0 {
        format!("{:.0} batches/s", n as f64 * args.rate)
    } else {
        "closed loop (next batch on ack)".to_string()
    };
    println!(
        "fleet {}: {n} agents, ramp {:.0} s, window {:.0} s, offered {offered}, {POINTS_PER_SNAPSHOT} points/batch",
        args.label, args.ramp, secs
    );
    println!(
        "connections held at window end: {held} (factory says {}), failed {}, lost {}",
        f_connected.map_or("?".into(), |c| c.to_string()),
        st.failed.load(Ordering::Relaxed),
        st.lost.load(Ordering::Relaxed)
    );
    if let Some(e) = st
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
    {
        println!("first error: {e}");
    }
    println!(
        "acknowledged: {batches_s:.0} batches/s, {points_s:.0} points/s (sent {:.0} batches/s; sink made {} points/s durable)",
        sent as f64 / secs,
        durable_s.map_or("?".into(), |d| format!("{d:.0}"))
    );
    println!(
        "ack latency: p50 {p50} ms, p99 {p99} ms, max {max} ms ({} of the {in_window} batches sent in the window acknowledged before the agents hung up)",
        lat.len()
    );
    println!(
        "factory: RSS {:.1} MiB, peak {:.1} MiB, CPU {:.1}% of a core, waited for a CPU {:.1}% of a core, {} threads",
        mib(f_rss),
        mib(f_hwm),
        pct(f_pct),
        pct(f_wait),
        f_threads.map_or("?".into(), |t| t.to_string())
    );
    // Memory each connection costs the factory: what it holds at the end of the window above
    // what it held with no agent (one process per run, so the base is that run's own).
    let kib_per_agent = match (f_rss, args.factory_base_kib) {
        (Some(rss), Some(base)) if held > 0 => {
            let per = (rss as f64 - base as f64) / held as f64;
            println!(
                "factory memory per agent: ({rss} KiB at window end - {base} KiB with no agent) / {held} held = {per:.1} KiB/agent"
            );
            Some(per)
        }
        _ => None,
    };
    if ipid.is_some() {
        println!(
            "influxd: RSS {:.1} MiB, CPU {:.1}% of a core",
            mib(i_rss),
            pct(i_pct)
        );
    }
    // Its peak, not its RSS now: every agent has hung up by this point.
    let g_hwm = status_value("self", "VmHWM:");
    println!(
        "generator (this process): CPU {:.1}% of a core, peak RSS {:.1} MiB; load average {load_start} -> {load_end}",
        pct(g_pct),
        mib(g_hwm)
    );
    // The factory may still be draining a backlog into InfluxDB: wait until it is done, so the
    // direct writes have InfluxDB to themselves.
    if let (Some(a), Some(_)) = (&args.admin, &args.influx) {
        let mut last = None;
        for _ in 0..120 {
            let now = factory_metric(a, "autofactory_points_written_total");
            if now.is_some() && now == last {
                break;
            }
            last = now;
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    let direct_s = direct_phase(&args, durable_s.or(Some(points_s)))?;
    println!(
        "RESULT label={} clients={n} held={held} failed={} offered_s={} batches_s={batches_s:.0} points_s={points_s:.0} durable_points_s={} p50_ms={p50} p99_ms={p99} max_ms={max} acked_in_window={}/{in_window} factory_rss_mib={:.1} factory_rss_kib={} base_kib={} kib_per_agent={} factory_hwm_mib={:.1} factory_cpu_pct={:.1} factory_wait_pct={:.1} influxd_cpu_pct={:.1} gen_cpu_pct={:.1} gen_hwm_mib={:.1} direct_points_s={} load={}",
        if args.label.is_empty() { "-" } else { &args.label },
        st.failed.load(Ordering::Relaxed),
        if args.rate > 0.0 {
            format!("{:.1}", n as f64 * args.rate)
        } else {
            "closed".into()
        },
        durable_s.map_or("nan".into(), |d| format!("{d:.0}")),
        lat.len(),
        mib(f_rss),
        f_rss.map_or("nan".into(), |k| k.to_string()),
        args.factory_base_kib
            .map_or("nan".into(), |k| k.to_string()),
        kib_per_agent.map_or("nan".into(), |k| format!("{k:.1}")),
        mib(f_hwm),
        pct(f_pct),
        pct(f_wait),
        pct(i_pct),
        pct(g_pct),
        mib(g_hwm),
        direct_s.map_or("nan".into(), |d| format!("{d:.0}")),
        load_end.replace(' ', "/"),
    );
    Ok(())
}
