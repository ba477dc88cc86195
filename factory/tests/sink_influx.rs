//! The sink against a real InfluxDB 1.x (Debian's `influxd`, started on a free loopback port with a
//! temp data dir by `autofact_tests::influx`): exact values, tags and timestamps; escaping; a 400
//! from a real type conflict; an outage in the middle of a run; the file sink's output imported.

mod sink_common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use autofact_fbs::lineproto::{write_snapshot, Tags};
use autofact_fbs::model::{Cpu, Disk, Health, Mem, Net, Snapshot, System, Temp};
use autofact_tests::influx::{Influx, Json, Series};
use autofact_tests::poll::wait_for;
use autofact_tests::proxy::Proxy;
use autofact_tests::tmp::TempDir;
use autofactory::metrics::Metrics;
use autofactory::sink::{Sink, SinkConfig};

fn influx_sink(influx: &Influx, db: &str, batch_points: usize) -> (Sink, Arc<Metrics>) {
    let cfg = SinkConfig {
        kind: "influxdb".into(),
        url: influx.url(),
        database: db.into(),
        create_database: true,
        batch_points,
        timeout_ms: 5000,
        ..SinkConfig::default()
    };
    let metrics = Arc::new(Metrics::default());
    let sink = Sink::start(&cfg, &std::env::temp_dir(), metrics.clone()).expect("sink starts");
    (sink, metrics)
}

fn select(influx: &Influx, db: &str, q: &str) -> Vec<Series> {
    influx
        .select(db, q)
        .unwrap_or_else(|e| panic!("{q}: {e}\n{}", influx.output()))
}

fn one_series(influx: &Influx, db: &str, q: &str) -> Series {
    let mut s = select(influx, db, q);
    assert_eq!(s.len(), 1, "{q}: expected one series, got {s:?}");
    s.remove(0)
}

fn int(s: &Series, row: usize, col: &str) -> i64 {
    s.cell(row, col)
        .and_then(Json::as_i64)
        .unwrap_or_else(|| panic!("{}.{col} row {row}: not an integer in {s:?}", s.name))
}

fn float(s: &Series, row: usize, col: &str) -> f64 {
    s.cell(row, col)
        .and_then(Json::as_f64)
        .unwrap_or_else(|| panic!("{}.{col} row {row}: not a number in {s:?}", s.name))
}

fn text<'a>(s: &'a Series, row: usize, col: &str) -> &'a str {
    s.cell(row, col)
        .and_then(Json::as_str)
        .unwrap_or_else(|| panic!("{}.{col} row {row}: not a string in {s:?}", s.name))
}

const T0: i64 = 1_764_000_000_123_456_789;

fn snapshot() -> Snapshot {
    Snapshot {
        time_ns: T0,
        cpu: vec![
            Cpu {
                name: "cpu-total".into(),
                user: 12.5,
                system: 3.25,
                idle: 80.125,
                nice: 0.0,
                iowait: 1.0625,
                irq: 0.1,
                softirq: 0.2,
                steal: 0.3,
                guest: 0.0,
                guest_nice: 2.8625,
            },
            Cpu {
                name: "cpu0".into(),
                user: 99.999999,
                idle: 0.000001,
                ..Cpu::default()
            },
        ],
        mem: Some(Mem {
            total: 8_000_000_000,
            available: 4_123_456_789,
            used: 3_000_000_001,
            free: 1_000_000_000,
            cached: 2_000_000_000,
            buffered: 100_000_000,
            active: 3,
            inactive: 4,
            slab: 5,
            // Above i64::MAX: the encoder clamps, InfluxDB must hold exactly i64::MAX.
            shared: u64::MAX,
            ..Default::default()
        }),
        system: Some(System {
            load1: 0.52,
            load5: 1.0,
            load15: 12.75,
            n_cpus: 4,
            uptime: 123_456,
            ..Default::default()
        }),
        net: vec![Net {
            interface: "eth0".into(),
            bytes_sent: 1,
            bytes_recv: 2,
            packets_sent: 3,
            packets_recv: 4,
            err_in: 5,
            err_out: 6,
            drop_in: 7,
            drop_out: 8,
        }],
        disk: vec![Disk {
            path: "/".into(),
            device: "mmcblk0p2".into(),
            fstype: "ext4".into(),
            total: 31_000_000_000,
            free: 20_000_000_000,
            used: 11_000_000_000,
            inodes_total: 1_900_000,
            inodes_free: 1_800_000,
            inodes_used: 100_000,
            ..Default::default()
        }],
        temp: vec![Temp {
            sensor: "cpu-thermal".into(),
            temp: 47.236,
        }],
        health: Some(Health {
            buffered_batches: 3,
            buffered_bytes: 4096,
            collect_us: 1234,
            ..Health::default()
        }),
        ..Snapshot::default()
    }
}

#[test]
fn facts_land_with_exact_values_tags_and_timestamps() {
    let Some(influx) = Influx::launch_or_skip("facts_land_with_exact_values_tags_and_timestamps")
    else {
        return;
    };
    // The database does not exist yet: the first write meets a real 404 and creates it.
    let (sink, metrics) = influx_sink(&influx, "autofacts", 5000);
    let tags = Tags {
        host: "pi-07",
        region: "eu-west",
        zone: "rack 3",
        ..Default::default()
    };
    let mut lines = String::new();
    let points = write_snapshot(&mut lines, &tags, &snapshot());
    smol::block_on(sink.write("c1", lines, points)).expect("durable");
    sink.shutdown();
    assert_eq!(
        metrics.points_written.load(Ordering::Relaxed),
        points as u64
    );
    assert_eq!(metrics.points_dead_lettered.load(Ordering::Relaxed), 0);

    let db = "autofacts";
    let cpu = one_series(&influx, db, "SELECT * FROM cpu ORDER BY time");
    assert_eq!(cpu.values.len(), 2, "{cpu:?}");
    let row = |name: &str| {
        (0..cpu.values.len())
            .find(|r| text(&cpu, *r, "cpu") == name)
            .unwrap_or_else(|| panic!("no {name} in {cpu:?}"))
    };
    let (t, c0) = (row("cpu-total"), row("cpu0"));
    assert_eq!(int(&cpu, t, "time"), T0);
    assert_eq!(text(&cpu, t, "host"), "pi-07");
    assert_eq!(text(&cpu, t, "region"), "eu-west");
    assert_eq!(text(&cpu, t, "zone"), "rack 3");
    for (col, v) in [
        ("usage_user", 12.5),
        ("usage_system", 3.25),
        ("usage_idle", 80.125),
        ("usage_nice", 0.0),
        ("usage_iowait", 1.0625),
        ("usage_irq", 0.1),
        ("usage_softirq", 0.2),
        ("usage_steal", 0.3),
        ("usage_guest", 0.0),
        ("usage_guest_nice", 2.8625),
    ] {
        assert_eq!(float(&cpu, t, col), v, "cpu-total {col}");
    }
    assert_eq!(float(&cpu, c0, "usage_user"), 99.999999);
    assert_eq!(float(&cpu, c0, "usage_idle"), 0.000001);

    let mem = one_series(&influx, db, "SELECT * FROM mem");
    assert_eq!(mem.values.len(), 1);
    assert_eq!(int(&mem, 0, "time"), T0);
    for (col, v) in [
        ("total", 8_000_000_000),
        ("available", 4_123_456_789),
        ("used", 3_000_000_001),
        ("free", 1_000_000_000),
        ("cached", 2_000_000_000),
        ("buffered", 100_000_000),
        ("active", 3),
        ("inactive", 4),
        ("slab", 5),
        ("shared", i64::MAX),
    ] {
        assert_eq!(int(&mem, 0, col), v, "mem {col}");
    }

    let sys = one_series(&influx, db, "SELECT * FROM system");
    assert_eq!(float(&sys, 0, "load1"), 0.52);
    assert_eq!(float(&sys, 0, "load5"), 1.0);
    assert_eq!(float(&sys, 0, "load15"), 12.75);
    assert_eq!(int(&sys, 0, "n_cpus"), 4);
    assert_eq!(int(&sys, 0, "uptime"), 123_456);

    let net = one_series(&influx, db, "SELECT * FROM net");
    assert_eq!(text(&net, 0, "interface"), "eth0");
    for (i, col) in [
        "bytes_sent",
        "bytes_recv",
        "packets_sent",
        "packets_recv",
        "err_in",
        "err_out",
        "drop_in",
        "drop_out",
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(int(&net, 0, col), i as i64 + 1, "net {col}");
    }

    let disk = one_series(&influx, db, "SELECT * FROM disk");
    assert_eq!(text(&disk, 0, "path"), "/");
    assert_eq!(text(&disk, 0, "device"), "mmcblk0p2");
    assert_eq!(text(&disk, 0, "fstype"), "ext4");
    assert_eq!(int(&disk, 0, "total"), 31_000_000_000);
    assert_eq!(int(&disk, 0, "inodes_used"), 100_000);

    let temp = one_series(&influx, db, "SELECT * FROM temp");
    assert_eq!(text(&temp, 0, "sensor"), "cpu-thermal");
    assert_eq!(float(&temp, 0, "temp"), 47.236);

    let health = one_series(&influx, db, "SELECT * FROM autofact");
    assert_eq!(int(&health, 0, "buffered_batches"), 3);
    assert_eq!(int(&health, 0, "buffered_bytes"), 4096);
    assert_eq!(int(&health, 0, "collect_us"), 1234);
    assert_eq!(int(&health, 0, "time"), T0);
}

#[test]
fn escaping_edge_cases_survive_the_round_trip() {
    let Some(influx) = Influx::launch_or_skip("escaping_edge_cases_survive_the_round_trip") else {
        return;
    };
    let (sink, _metrics) = influx_sink(&influx, "esc", 5000);
    let hosts = [
        "höst-ünïcödé.example",
        "名前 with spaces",
        "a,b=c",
        "quote\"d",
        "back\\slash",
        "trailing\\",
        "=leading=",
    ];
    let ifaces = ["eth 0", "br-lan,x=y", "wlan\"0", "vëth=1", "tab\tname"];
    let mounts = [
        "/mnt/my disk",
        "/media/a,b=c",
        "/data/ünï cödé",
        "/q\"uote",
        "/back\\slash",
    ];
    let mut lines = String::new();
    let mut points = 0;
    let mut expected_net = Vec::new();
    let mut expected_disk = Vec::new();
    for (h, host) in hosts.iter().enumerate() {
        let snap = Snapshot {
            time_ns: T0 + h as i64,
            net: ifaces
                .iter()
                .enumerate()
                .map(|(i, n)| Net {
                    interface: n.to_string(),
                    bytes_sent: (h * 100 + i) as u64,
                    ..Net::default()
                })
                .collect(),
            disk: mounts
                .iter()
                .enumerate()
                .map(|(i, m)| Disk {
                    path: m.to_string(),
                    device: format!("dev {i},=ü"),
                    fstype: "fuse.sshfs".into(),
                    total: (h * 100 + i) as u64,
                    ..Disk::default()
                })
                .collect(),
            ..Snapshot::default()
        };
        let tags = Tags {
            host,
            region: "région, one",
            zone: "z=1",
            ..Default::default()
        };
        points += write_snapshot(&mut lines, &tags, &snap);
        for (i, n) in ifaces.iter().enumerate() {
            expected_net.push((
                // The encoder drops a tag value's trailing backslashes (InfluxDB refuses them).
                host.trim_end_matches('\\').to_string(),
                n.to_string(),
                (h * 100 + i) as i64,
                T0 + h as i64,
            ));
        }
        for (i, m) in mounts.iter().enumerate() {
            expected_disk.push((
                host.trim_end_matches('\\').to_string(),
                m.to_string(),
                format!("dev {i},=ü"),
                (h * 100 + i) as i64,
            ));
        }
    }
    smol::block_on(sink.write("c1", lines.clone(), points)).expect("durable");
    sink.shutdown();

    let net = one_series(&influx, "esc", "SELECT * FROM net");
    let mut got_net: Vec<_> = (0..net.values.len())
        .map(|r| {
            assert_eq!(text(&net, r, "region"), "région, one");
            assert_eq!(text(&net, r, "zone"), "z=1");
            (
                text(&net, r, "host").to_string(),
                text(&net, r, "interface").to_string(),
                int(&net, r, "bytes_sent"),
                int(&net, r, "time"),
            )
        })
        .collect();
    got_net.sort();
    expected_net.sort();
    assert_eq!(got_net, expected_net, "lines sent:\n{lines}");

    let disk = one_series(&influx, "esc", "SELECT * FROM disk");
    let mut got_disk: Vec<_> = (0..disk.values.len())
        .map(|r| {
            assert_eq!(text(&disk, r, "fstype"), "fuse.sshfs");
            (
                text(&disk, r, "host").to_string(),
                text(&disk, r, "path").to_string(),
                text(&disk, r, "device").to_string(),
                int(&disk, r, "total"),
            )
        })
        .collect();
    got_disk.sort();
    expected_disk.sort();
    assert_eq!(got_disk, expected_disk, "lines sent:\n{lines}");
}

#[test]
fn a_real_type_conflict_dead_letters_only_the_conflicting_lines_of_merged_agents() {
    let Some(influx) =
        Influx::launch_or_skip("a_real_type_conflict_dead_letters_only_the_conflicting_lines")
    else {
        return;
    };
    let data = TempDir::new("influx-conflict").expect("temp dir");
    influx
        .execute("CREATE DATABASE conflict")
        .unwrap_or_else(|e| panic!("{e}\n{}", influx.output()));
    // Someone else wrote m.v first, as an integer.
    let status = influx
        .write_lines("conflict", "m,host=other v=1i 1\n")
        .unwrap_or_else(|e| panic!("{e}\n{}", influx.output()));
    assert_eq!(status, 204);
    // The settings users run (2 writers, no linger), through a proxy the test can hold: each
    // writer's first request is held while the three agents' writes queue, so they are merged
    // into one body, as under load.
    let proxy = Proxy::start(
        format!("127.0.0.1:{}", influx.port())
            .parse()
            .expect("addr"),
    )
    .expect("proxy");
    let cfg = SinkConfig {
        kind: "influxdb".into(),
        url: format!("http://{}", proxy.addr()),
        database: "conflict".into(),
        timeout_ms: 30_000,
        ..SinkConfig::default()
    };
    let metrics = Arc::new(Metrics::default());
    let sink = Sink::start(&cfg, data.path(), metrics.clone()).expect("sink starts");
    let (a, b, c) = (
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
        "cccccccccccccccccccccccccccccccc",
    );
    let writes = [
        (a, "m,host=a v=2i 2\ncpu,host=a x=1 2\n"),
        (b, "m,host=b v=2.5 3\nm,host=b v=3i 4\n"),
        (c, "m,host=c v=\"s\" 5\ncpu,host=c x=2 5\nm,host=c v=6i 6\n"),
    ];
    let submit = |client: &str, lines: &str| {
        let (sink, client, lines) = (sink.clone(), client.to_string(), lines.to_string());
        Box::pin(async move {
            let points = lines.lines().count();
            sink.write(&client, lines, points).await
        })
    };
    proxy.cut();
    smol::block_on(async {
        let mut pending = Vec::new();
        for (i, t) in [7, 8].into_iter().enumerate() {
            let mut p = submit(a, &format!("m,host=a v={t}i {t}\n"));
            assert!(smol::future::poll_once(&mut p).await.is_none());
            pending.push(p);
            wait_for(
                "a writer's request at the proxy",
                Duration::from_secs(30),
                || (proxy.connections() == i as u64 + 1).then_some(()),
            )
            .expect("request held");
        }
        for (client, lines) in writes {
            let mut p = submit(client, lines);
            assert!(smol::future::poll_once(&mut p).await.is_none(), "queued");
            pending.push(p);
        }
        proxy.restore();
        for p in pending {
            p.await.expect("written or dead-lettered");
        }
    });
    sink.shutdown();
    let m = one_series(&influx, "conflict", "SELECT v, host FROM m");
    let got: Vec<(i64, i64, String)> = (0..m.values.len())
        .map(|r| {
            (
                int(&m, r, "time"),
                int(&m, r, "v"),
                text(&m, r, "host").to_string(),
            )
        })
        .collect();
    let want: Vec<(i64, i64, String)> = vec![
        (1, 1, "other".into()),
        (2, 2, "a".into()),
        (4, 3, "b".into()),
        (6, 6, "c".into()),
        (7, 7, "a".into()),
        (8, 8, "a".into()),
    ];
    assert_eq!(got, want);
    let cpu = one_series(&influx, "conflict", "SELECT x FROM cpu");
    assert_eq!(cpu.values.len(), 2, "{cpu:?}");
    let mut dead: Vec<(String, String)> = sink_common::dead_letters(data.path())
        .into_iter()
        .map(|(client, reason, line)| {
            assert!(reason.contains("field type conflict"), "{line}: {reason}");
            (client, line)
        })
        .collect();
    dead.sort();
    assert_eq!(
        dead,
        vec![
            (b.to_string(), "m,host=b v=2.5 3".to_string()),
            (c.to_string(), "m,host=c v=\"s\" 5".to_string()),
        ]
    );
    assert_eq!(metrics.points_written.load(Ordering::Relaxed), 7);
    assert_eq!(metrics.dead_lettered_of(b), 1);
    assert_eq!(metrics.dead_lettered_of(c), 1);
    assert_eq!(metrics.dead_lettered_of(a), 0);
}

#[test]
fn influxdb_outage_mid_run_every_write_lands_once() {
    let Some(mut influx) = Influx::launch_or_skip("influxdb_outage_mid_run_every_write_lands_once")
    else {
        return;
    };
    const WRITERS: usize = 4;
    const WRITES: usize = 60;
    const POINTS: usize = 5;
    // Small batches so the run spans many requests and the outage lands in the middle.
    let (sink, metrics) = influx_sink(&influx, "outage", 20);
    let total = (WRITERS * WRITES * POINTS) as u64;
    let run = {
        let sink = sink.clone();
        std::thread::spawn(move || {
            smol::block_on(async {
                let tasks: Vec<_> = (0..WRITERS)
                    .map(|w| {
                        let sink = sink.clone();
                        smol::spawn(async move {
                            let mut failures = Vec::new();
                            for i in 0..WRITES {
                                let mut lines = String::new();
                                for p in 0..POINTS {
                                    let ts = ((w * WRITES + i) * POINTS + p) as i64;
                                    lines.push_str(&format!("m,writer={w} v={ts}i {}\n", T0 + ts));
                                }
                                if let Err(e) = sink.write("c1", lines, POINTS).await {
                                    failures.push(format!("writer {w} write {i}: {e}"));
                                }
                                // Paced like agents, so the run outlasts the outage's start.
                                smol::Timer::after(Duration::from_millis(5)).await;
                            }
                            failures
                        })
                    })
                    .collect();
                let mut failures = Vec::new();
                for t in tasks {
                    failures.extend(t.await);
                }
                failures
            })
        })
    };

    // Stop InfluxDB once some, not all, points are in.
    wait_for("a third of the points", Duration::from_secs(60), || {
        (metrics.points_written.load(Ordering::Relaxed) >= total / 3).then_some(())
    })
    .expect("progress before the outage");
    influx.stop();
    let errors_before = metrics.sink_errors.load(Ordering::Relaxed);
    wait_for(
        "the sink to fail and retry",
        Duration::from_secs(60),
        || (metrics.sink_errors.load(Ordering::Relaxed) >= errors_before + 3).then_some(()),
    )
    .expect("failures while InfluxDB is down");
    let written_during_outage = metrics.points_written.load(Ordering::Relaxed);
    assert!(
        written_during_outage < total,
        "everything was written before the outage"
    );
    assert!(
        !run.is_finished(),
        "writes completed while InfluxDB was down"
    );
    influx
        .start()
        .expect("InfluxDB starts again on the same port");

    let failures = run.join().expect("writer thread");
    assert!(failures.is_empty(), "{failures:?}");
    sink.shutdown();
    assert_eq!(metrics.points_written.load(Ordering::Relaxed), total);
    assert!(metrics.sink_retries.load(Ordering::Relaxed) >= 3);

    let mut seen: BTreeMap<i64, (String, i64)> = BTreeMap::new();
    for s in select(&influx, "outage", "SELECT writer, v FROM m") {
        for r in 0..s.values.len() {
            let t = int(&s, r, "time");
            let prev = seen.insert(t, (text(&s, r, "writer").to_string(), int(&s, r, "v")));
            assert!(prev.is_none(), "timestamp {t} twice");
        }
    }
    assert_eq!(seen.len() as u64, total, "points in InfluxDB");
    for (t, (writer, v)) in &seen {
        let ts = t - T0;
        assert_eq!(*v, ts, "value at {t}");
        assert_eq!(writer, &((ts as usize / POINTS) / WRITES).to_string());
    }
}

#[test]
fn file_sink_output_imports_into_influxdb_as_is() {
    let Some(influx) = Influx::launch_or_skip("file_sink_output_imports_into_influxdb_as_is")
    else {
        return;
    };
    let data = TempDir::new("sink-import").expect("temp dir");
    let metrics = Arc::new(Metrics::default());
    let sink = Sink::start(&SinkConfig::default(), data.path(), metrics).expect("file sink");
    let tags = Tags {
        host: "höst a,b",
        region: "",
        zone: "",
        ..Default::default()
    };
    let mut lines = String::new();
    let points = write_snapshot(&mut lines, &tags, &snapshot());
    smol::block_on(sink.write("c1", lines, points)).expect("durable");
    sink.shutdown();
    let facts = data.join("facts");
    let files: Vec<_> = std::fs::read_dir(&facts)
        .expect("facts dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let content = std::fs::read_to_string(&files[0]).expect("facts file");
    influx
        .execute("CREATE DATABASE \"imported\"")
        .expect("create db");
    assert_eq!(influx.write_lines("imported", &content).expect("POST"), 204);
    let n: usize = select(&influx, "imported", "SELECT count(*) FROM /.*/")
        .iter()
        .map(|s| s.values.len())
        .sum();
    assert_eq!(n, 7, "one count row per measurement");
    let mem = one_series(&influx, "imported", "SELECT total, host FROM mem");
    assert_eq!(int(&mem, 0, "total"), 8_000_000_000);
    assert_eq!(text(&mem, 0, "host"), "höst a,b");
    assert_eq!(int(&mem, 0, "time"), T0);
}
