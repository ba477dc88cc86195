//! Lines a store refuses, against a fake InfluxDB 2.x that behaves like the real one (issue 16):
//! a 400 for an unparsable line refuses the whole body ("no data written", naming the first bad
//! line), a 422 partial write refuses the type-conflicting points and writes the rest. Bodies
//! merge several agents' submissions, as the sink does under load; only the refused lines are
//! dead-lettered, each under its own client, and every other point is written. Also: a 4xx the
//! sink does not know is not retried forever, and `autofactory replay` after the cause is fixed.
//! Through a real factory and the protocol: a refused line is kept under the client whose
//! session sent it.

mod common;
mod sink_common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autofact_tests::poll::wait_for;
use autofact_tests::tmp::TempDir;
use autofactory::metrics::Metrics;
use autofactory::sink::{Sink, SinkConfig};
use sink_common::{dead_letters, FakeInflux, Gate, Reply, Request};

/// Guard against hangs only.
const HANG: Duration = Duration::from_secs(60);

/// What the fake store holds and refuses.
#[derive(Default)]
struct Store {
    written: BTreeSet<String>,
    /// Lines it cannot parse (400, nothing written).
    unparsable: BTreeSet<String>,
    /// Field `v` is an integer: string values conflict (422, the rest written).
    refuse_strings: bool,
}

fn json_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// InfluxDB 2.x's `/api/v2/write`, as documented and as observed (see the module doc).
fn v2_store(store: Arc<Mutex<Store>>) -> sink_common::Handler {
    Box::new(move |req: &Request| {
        if !req.target.starts_with("/api/v2/write?") {
            return Reply::new(
                404,
                "",
                r#"{"code":"not found","message":"path not found"}"#,
            );
        }
        let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
        let lines: Vec<&str> = req.body.lines().filter(|l| !l.is_empty()).collect();
        if let Some(bad) = lines.iter().find(|l| s.unparsable.contains(**l)) {
            return Reply::new(
                400,
                "",
                &format!(
                    r#"{{"code":"invalid","message":"unable to parse '{}': missing field value"}}"#,
                    json_escape(bad)
                ),
            );
        }
        let mut dropped = 0;
        for l in lines {
            if s.refuse_strings && l.contains("v=\"") {
                dropped += 1;
            } else {
                s.written.insert(l.to_string());
            }
        }
        if dropped > 0 {
            return Reply::new(
                422,
                "",
                &format!(
                    r#"{{"code":"unprocessable entity","message":"failure writing points to database: partial write: field type conflict: input field \"v\" on measurement \"m\" is type string, already exists as type integer dropped={dropped}"}}"#
                ),
            );
        }
        Reply::new(204, "", "")
    })
}

fn v2_sink(url: &str, data: &Path) -> (Sink, Arc<Metrics>) {
    // The defaults users run: 2 writers, group commit (no linger), 5,000 points per write.
    let cfg = SinkConfig {
        kind: "influxdb".into(),
        api: "v2".into(),
        url: url.into(),
        org: "o".into(),
        bucket: "b".into(),
        token: "t".into(),
        timeout_ms: 5000,
        ..SinkConfig::default()
    };
    let metrics = Arc::new(Metrics::default());
    let sink = Sink::start(&cfg, data, metrics.clone()).expect("sink starts");
    (sink, metrics)
}

/// One agent's submission, as the session hands it to the sink.
fn submit(
    sink: &Sink,
    client: &str,
    lines: &str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>> {
    let (sink, client, lines) = (sink.clone(), client.to_string(), lines.to_string());
    Box::pin(async move {
        let points = lines.lines().count();
        sink.write(&client, lines, points)
            .await
            .map_err(|e| e.to_string())
    })
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

const C: [&str; 4] = [
    "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1",
    "c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2c2",
    "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3",
    "c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4",
];

#[test]
fn a_fake_v2_refusing_chosen_lines_in_merged_bodies_dead_letters_only_those() {
    let data = TempDir::new("refusals-v2").expect("temp dir");
    let store = Arc::new(Mutex::new(Store {
        refuse_strings: true,
        ..Store::default()
    }));
    let gate = Gate::closed();
    let server = FakeInflux::with(
        TcpListener::bind("127.0.0.1:0").expect("bind"),
        v2_store(store.clone()),
        Some(gate.clone()),
    );
    let (sink, metrics) = v2_sink(&server.url(), data.path());

    // Each client's submissions: 5 points per snapshot batch, timestamps unique per line.
    let mut subs: Vec<(usize, String)> = Vec::new();
    let mut good = BTreeSet::new();
    let mut refused: BTreeMap<String, &str> = BTreeMap::new();
    let mut t = 1_000;
    for (c, _) in C.iter().enumerate() {
        for s in 0..3 {
            let mut lines = String::new();
            for k in 0..5 {
                t += 1;
                let line = match (c, s, k) {
                    (1, 1, 2) | (3, 0, 4) => {
                        let l = format!("m,host=h{c} v= {t}");
                        store
                            .lock()
                            .expect("store lock")
                            .unparsable
                            .insert(l.clone());
                        refused.insert(l.clone(), C[c]);
                        l
                    }
                    (2, 0, 0) | (2, 2, 3) | (3, 2, 1) => {
                        let l = format!("m,host=h{c} v=\"text\" {t}");
                        refused.insert(l.clone(), C[c]);
                        l
                    }
                    _ => {
                        let l = format!("m,host=h{c} v={k}i {t}");
                        good.insert(l.clone());
                        l
                    }
                };
                lines.push_str(&line);
                lines.push('\n');
            }
            subs.push((c, lines));
        }
    }

    let results = smol::block_on(async {
        // Two clean writes hold both writers at the gate; everything else queues meanwhile and
        // is merged into the next bodies, as under load.
        let warm: Vec<String> = (0..2).map(|i| format!("m,host=h0 v=9i {i}\n")).collect();
        good.extend(warm.iter().map(|l| l.trim_end().to_string()));
        let mut pending = Vec::new();
        for (i, l) in warm.iter().enumerate() {
            // One at a time, so each writer takes one (queued together, one writer would
            // take both).
            let mut p = submit(&sink, C[0], l);
            assert!(smol::future::poll_once(&mut p).await.is_none());
            pending.push(p);
            wait_for("a writer at the gate", HANG, || {
                (gate.waiting() == i + 1).then_some(())
            })
            .expect("request held");
        }
        for (c, lines) in &subs {
            let mut p = submit(&sink, C[*c], lines);
            assert!(smol::future::poll_once(&mut p).await.is_none(), "queued");
            pending.push(p);
        }
        gate.open();
        let mut results = Vec::new();
        for p in pending {
            results.push(p.await);
        }
        results
    });
    sink.shutdown();
    for r in &results {
        assert_eq!(
            r,
            &Ok(()),
            "every write completes once written or dead-lettered"
        );
    }

    // Merging did happen: some body carried several agents' lines.
    let hosts_per_body: Vec<usize> = server
        .requests()
        .iter()
        .map(|r| {
            r.body
                .lines()
                .map(|l| l.split(' ').next().unwrap_or(""))
                .collect::<BTreeSet<_>>()
                .len()
        })
        .collect();
    assert!(
        hosts_per_body.iter().any(|n| *n >= 3),
        "no merged body: hosts per body {hosts_per_body:?}"
    );

    let written = store.lock().expect("store lock").written.clone();
    let missing: Vec<_> = good.difference(&written).collect();
    assert!(missing.is_empty(), "good points not written: {missing:?}");
    let wrongly: Vec<_> = written
        .intersection(&refused.keys().cloned().collect())
        .cloned()
        .collect::<Vec<String>>();
    assert!(wrongly.is_empty(), "{wrongly:?}");

    let dead = dead_letters(data.path());
    let got: BTreeMap<String, String> = dead
        .iter()
        .map(|(client, _, line)| (line.clone(), client.clone()))
        .collect();
    let want: BTreeMap<String, String> = refused
        .iter()
        .map(|(l, c)| (l.clone(), c.to_string()))
        .collect();
    assert_eq!(got, want, "dead letters (line -> client)");
    assert_eq!(
        dead.len(),
        refused.len(),
        "each refused line once: {dead:?}"
    );
    for (_, reason, line) in &dead {
        if line.contains("v=\"") {
            assert!(reason.contains("field type conflict"), "{line}: {reason}");
        } else {
            assert!(reason.contains("unable to parse"), "{line}: {reason}");
        }
    }
    let text = metrics.render();
    for (c, n) in [(C[0], 0), (C[1], 1), (C[2], 2), (C[3], 2)] {
        assert_eq!(
            metric(
                &text,
                &format!("autofactory_dead_lettered_points_total{{client=\"{c}\"}}")
            ),
            n,
            "{c} in\n{text}"
        );
    }
    assert_eq!(
        metrics.points_written.load(Ordering::Relaxed),
        good.len() as u64
    );
}

#[test]
fn a_4xx_the_sink_does_not_know_is_not_retried_forever() {
    let data = TempDir::new("refusals-409").expect("temp dir");
    let server = FakeInflux::with(
        TcpListener::bind("127.0.0.1:0").expect("bind"),
        Box::new(|_| Reply::new(409, "", r#"{"code":"conflict","message":"no thanks"}"#)),
        None,
    );
    let (sink, _metrics) = v2_sink(&server.url(), data.path());
    let lines = "m,host=a v=1i 1\nm,host=a v=2i 2\n";
    let done = {
        let sink = sink.clone();
        std::thread::spawn(move || smol::block_on(submit(&sink, C[0], lines)))
    };
    wait_for("the write to complete", HANG, || {
        done.is_finished().then_some(())
    })
    .expect("a 409 must not be retried forever");
    let result = done.join().expect("writer thread");
    sink.shutdown();
    assert_eq!(result, Ok(()));
    let n = server.requests().len();
    assert!((2..=10).contains(&n), "{n} requests for a 409");
    let dead = dead_letters(data.path());
    let lines_dead: Vec<&str> = dead.iter().map(|(_, _, l)| l.as_str()).collect();
    assert_eq!(lines_dead, vec!["m,host=a v=1i 1", "m,host=a v=2i 2"]);
    assert!(
        dead.iter()
            .all(|(c, r, _)| c == C[0] && r.contains("409") && r.contains("no thanks")),
        "{dead:?}"
    );
}

#[test]
fn replay_writes_dead_letters_once_the_cause_is_fixed() {
    let data = TempDir::new("refusals-replay").expect("temp dir");
    let store = Arc::new(Mutex::new(Store {
        refuse_strings: true,
        ..Store::default()
    }));
    store
        .lock()
        .expect("store lock")
        .unparsable
        .insert("m,host=b v= 4".into());
    let server = FakeInflux::with(
        TcpListener::bind("127.0.0.1:0").expect("bind"),
        v2_store(store.clone()),
        None,
    );
    let (sink, _) = v2_sink(&server.url(), data.path());
    smol::block_on(async {
        submit(&sink, C[0], "m,host=a v=1i 1\nm,host=a v=\"s\" 2\n").await?;
        submit(&sink, C[1], "m,host=b v=3i 3\nm,host=b v= 4\n").await
    })
    .expect("written or dead-lettered");
    sink.shutdown();
    let before = dead_letters(data.path());
    assert_eq!(before.len(), 2, "{before:?}");
    let file = std::fs::read_dir(data.path().join("dead-letters"))
        .expect("dead-letter dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "lp"))
        .expect("a dead-letter file");

    // The operator fixes one cause (v may be a string now); the unparsable line stays bad.
    store.lock().expect("store lock").refuse_strings = false;
    let cfg = data.join("factory.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"data_dir": "{}", "sink": {{"kind": "influxdb", "api": "v2", "url": "{}",
                "org": "o", "bucket": "b", "token": "t"}}}}"#,
            data.path().display(),
            server.url()
        ),
    )
    .expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_autofactory"))
        .args(["replay", "--config"])
        .arg(&cfg)
        .arg(&file)
        .output()
        .expect("run autofactory replay");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("2 lines") && stdout.contains("1 written") && stdout.contains("1 refused"),
        "{stdout}"
    );
    assert!(store
        .lock()
        .expect("store lock")
        .written
        .contains("m,host=a v=\"s\" 2"));
    let after = dead_letters(data.path());
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].0, C[1], "still under its own client");
    assert_eq!(after[0].2, "m,host=b v= 4");
    // Refused again into a file of the replay's own (a running factory appends to <day>.lp).
    let replay_files: Vec<PathBuf> = std::fs::read_dir(data.path().join("dead-letters"))
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with("-replay.lp"))
        .collect();
    assert_eq!(replay_files.len(), 1, "{replay_files:?}");
    // The replayed file is kept aside, renamed, not replayed twice.
    let kept: Vec<PathBuf> = std::fs::read_dir(data.path().join("dead-letters"))
        .expect("dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".replayed"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");

    // A file that is not a dead-letter file: a clear error naming it, exit 1.
    let junk = data.join("junk.lp");
    std::fs::write(&junk, "m v=1i 1\n").expect("write junk");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_autofactory"))
        .args(["replay", "--config"])
        .arg(&cfg)
        .arg(&junk)
        .output()
        .expect("run autofactory replay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("junk.lp") && stderr.contains("line 1"),
        "{stderr}"
    );
}

#[test]
fn through_the_factory_a_refused_line_is_kept_under_the_client_that_sent_it() {
    let dir = common::temp_dir("refusals-factory");
    // The store refuses pi-b's mem points (a type conflict), takes everything else.
    let written = Arc::new(Mutex::new(Vec::<String>::new()));
    let server = FakeInflux::with(
        TcpListener::bind("127.0.0.1:0").expect("bind"),
        {
            let written = written.clone();
            Box::new(move |req: &Request| {
                let mut dropped = 0;
                for l in req.body.lines() {
                    if l.starts_with("mem,host=pi-b") {
                        dropped += 1;
                    } else {
                        written.lock().expect("lock").push(l.to_string());
                    }
                }
                if dropped == 0 {
                    return Reply::new(204, "", "");
                }
                Reply::new(
                    422,
                    "",
                    &format!(
                        r#"{{"code":"unprocessable entity","message":"failure writing points to database: partial write: field type conflict: input field \"total\" on measurement \"mem\" is type integer, already exists as type float dropped={dropped}"}}"#
                    ),
                )
            })
        },
        None,
    );
    let h = common::Harness::start_real_sink(
        &dir,
        &common::config_text(&format!(
            r#""sink": {{"kind": "influxdb", "api": "v2", "url": "{}", "org": "o", "bucket": "b", "token": "t"}}"#,
            server.url()
        )),
    );
    let (ida, idb) = smol::block_on(async {
        let (mut a, wa) = common::Client::enroll(h.addr, "pi-a").await;
        let (mut b, wb) = common::Client::enroll(h.addr, "pi-b").await;
        for seq in 1..=3 {
            let t = 1_795_000_000_000_000_000 + seq as i64 * 10_000_000_000;
            assert_eq!(a.batch(seq, vec![common::snapshot(t, 0)]).await.seq, seq);
            assert_eq!(b.batch(seq, vec![common::snapshot(t, 0)]).await.seq, seq);
        }
        (wa.client_id, wb.client_id)
    });
    let metrics = h.get("/metrics");
    h.stop().expect("clean shutdown");
    let dead = dead_letters(&dir.join("data"));
    assert_eq!(dead.len(), 3, "pi-b's three mem points: {dead:?}");
    for (client, reason, line) in &dead {
        assert_eq!(client, &idb, "{line}");
        assert!(line.starts_with("mem,host=pi-b"), "{line}");
        assert!(reason.contains("field type conflict"), "{reason}");
    }
    let written = written.lock().expect("lock").clone();
    for host in ["pi-a", "pi-b"] {
        for m in ["system", "autofact"] {
            let n = written
                .iter()
                .filter(|l| l.starts_with(&format!("{m},host={host}")))
                .collect::<BTreeSet<_>>()
                .len();
            assert_eq!(n, 3, "{m} of {host} in {written:?}");
        }
    }
    assert_eq!(
        written
            .iter()
            .filter(|l| l.starts_with("mem,host=pi-a"))
            .collect::<BTreeSet<_>>()
            .len(),
        3
    );
    assert_eq!(
        metric(
            &metrics,
            &format!("autofactory_dead_lettered_points_total{{client=\"{idb}\"}}")
        ),
        3,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            &format!("autofactory_dead_lettered_points_total{{client=\"{ida}\"}}")
        ),
        0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn replay_while_the_store_is_down_says_so_and_can_be_run_again() {
    let data = TempDir::new("refusals-replay-down").expect("temp dir");
    let dir = data.path().join("dead-letters");
    std::fs::create_dir_all(&dir).expect("dead-letter dir");
    // A file in the documented format, written by hand.
    let file = dir.join("2026-12-01.lp");
    std::fs::write(
        &file,
        format!(
            "# refused at=2026-12-01T10:00:00Z client={} reason=\"HTTP 422: retention\"\nm,host=a v=1i 1\nm,host=a v=2i 2\n",
            C[0]
        ),
    )
    .expect("write dead letters");
    let port = autofact_tests::poll::free_port().expect("free port");
    let cfg = data.join("factory.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"data_dir": "{}", "sink": {{"kind": "influxdb", "api": "v2", "url": "http://127.0.0.1:{port}",
                "org": "o", "bucket": "b", "token": "t"}}}}"#,
            data.path().display()
        ),
    )
    .expect("write config");
    let replay = |path: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_autofactory"))
            .args(["replay", "--timeout", "2", "--config"])
            .arg(&cfg)
            .arg(path)
            .output()
            .expect("run autofactory replay")
    };
    let out = replay(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let aside = dir.join("2026-12-01.lp.replaying");
    assert!(
        stderr.contains("did not take every line within 2 s")
            && stderr.contains(&aside.display().to_string()),
        "{stderr}"
    );
    assert!(aside.exists() && !file.exists());

    // The store is back: the file left aside is replayed.
    let store = Arc::new(Mutex::new(Store::default()));
    let _server = FakeInflux::with(
        TcpListener::bind(("127.0.0.1", port)).expect("bind the same port"),
        v2_store(store.clone()),
        None,
    );
    let out = replay(&aside);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = store.lock().expect("store lock").written.clone();
    assert_eq!(
        written.into_iter().collect::<Vec<_>>(),
        vec!["m,host=a v=1i 1".to_string(), "m,host=a v=2i 2".to_string()]
    );
    assert!(dir.join("2026-12-01.lp.replayed").exists());
    assert!(!aside.exists());
    assert!(dead_letters(data.path()).is_empty());
}
