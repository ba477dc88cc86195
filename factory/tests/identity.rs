//! Client identity (issue 15), raw protocol against a real factory: buffer epochs in dedup,
//! clones told apart by their installation, one series per client even with one hostname, and
//! first-release agents (no installation, epoch 0) served as before.

mod common;

use autofact_fbs::{Batch, BufferState, Hello, Message, Welcome};
use common::*;
use std::collections::BTreeSet;

/// A returning client's Hello of this release.
fn back_v2(w: &Welcome, hostname: &str, installation: &str, epoch: u64) -> Hello {
    Hello {
        installation: installation.into(),
        epoch,
        ..back_hello(&w.client_id, &w.secret, hostname)
    }
}

/// The distinct `host` tags among the sink's `system` lines.
fn system_hosts(sink: &MemSink) -> BTreeSet<String> {
    sink.text()
        .lines()
        .filter(|l| l.starts_with("system,"))
        .filter_map(|l| {
            let tags = l.split(' ').next()?;
            tags.split(',')
                .find_map(|t| t.strip_prefix("host="))
                .map(String::from)
        })
        .collect()
}

/// Lines of the sink with timestamp `ts`.
fn lines_at(sink: &MemSink, ts: i64) -> Vec<String> {
    let suffix = format!(" {ts}");
    sink.text()
        .lines()
        .filter(|l| l.ends_with(&suffix))
        .map(String::from)
        .collect()
}

const E1: u64 = 0x1111_2222_3333_4444;
const E2: u64 = 0x5555_6666_7777_8888;

#[test]
fn a_new_epoch_starts_a_new_dedup_window_even_below_the_last_acked_seq() {
    // Issue 15.3: a fresh buffer whose seqs start far below the factory's last ack (a board
    // without a real-time clock) must be written, not acked as duplicates.
    let dir = temp_dir("epoch");
    let h = Harness::start(&dir, &config_text(""));
    let w = smol::block_on(async {
        let (mut c, w) = welcome(h.addr, hello_v2("pi-epoch", "inst-a", E1)).await;
        let a = batch(&mut c, E1, 1_000_000, vec![snapshot(1_000, 0)]).await;
        assert_eq!((a.seq, a.epoch), (1_000_000, E1));
        // The same batch again: a lost ack, written once.
        let a = batch(&mut c, E1, 1_000_000, vec![snapshot(1_000, 0)]).await;
        assert_eq!((a.seq, a.epoch), (1_000_000, E1));
        assert_eq!(h.sink.points(), 3, "a re-sent batch is not written twice");

        // The buffer was moved aside: a new epoch whose seqs are far below the last ack.
        let a = batch(&mut c, E2, 5, vec![snapshot(2_000, 0)]).await;
        assert_eq!(
            (a.seq, a.epoch),
            (5, E2),
            "the ack names the new epoch's seq"
        );
        assert_eq!(h.sink.points(), 6, "the new epoch's batch is written");
        assert_eq!(lines_at(&h.sink, 2_000).len(), 3, "{}", h.sink.text());
        // Within the new epoch, dedup works as before.
        let a = batch(&mut c, E2, 5, vec![snapshot(2_000, 0)]).await;
        assert_eq!((a.seq, a.epoch), (5, E2));
        assert_eq!(h.sink.points(), 6);
        let a = batch(&mut c, E2, 6, vec![snapshot(3_000, 0)]).await;
        assert_eq!((a.seq, a.epoch), (6, E2));
        assert_eq!(h.sink.points(), 9);
        w
    });
    // The window survives a reconnect and a restart of the factory.
    let sink = h.sink.clone();
    h.stop().expect("clean shutdown");
    let h = Harness::start_with(&dir, &config_text(""), sink);
    smol::block_on(async {
        let (mut c, back) = welcome(h.addr, back_v2(&w, "pi-epoch", "inst-a", E2)).await;
        assert!(back.welcome_back);
        let a = batch(&mut c, E2, 6, vec![snapshot(3_000, 0)]).await;
        assert_eq!((a.seq, a.epoch), (6, E2));
        assert_eq!(h.sink.points(), 9, "already acked before the restart");
        let a = batch(&mut c, E2, 7, vec![snapshot(4_000, 0)]).await;
        assert_eq!((a.seq, a.epoch), (7, E2));
        assert_eq!(h.sink.points(), 12);
    });
    let rec = h.factory.inventory().get(&w.client_id).expect("record");
    assert_eq!(rec.last_acked_seq, 7);
    let clients = h.get("/clients");
    assert!(
        clients.contains(&format!("\"epoch\":\"{E2:016x}\"")),
        "the acked epoch in /clients: {clients}"
    );
    h.stop().expect("clean shutdown");
}

#[test]
fn one_client_id_from_a_second_installation_is_enrolled_as_a_new_client() {
    // Issue 15.2: a cloned SD card (or a restored backup on another machine) presents the id
    // and secret of the original from another installation.
    let dir = temp_dir("clone");
    let h = Harness::start(&dir, &config_text(""));
    smol::block_on(async {
        let (mut orig, w) = welcome(h.addr, hello_v2("pi-orig", "inst-a", E1)).await;
        assert!(!w.welcome_back);
        assert_eq!(
            batch(&mut orig, E1, 10, vec![snapshot(1_000, 0)]).await.seq,
            10
        );
        drop(orig);

        // The clone connects first, while the original is offline: the first installation
        // keeps the id all the same.
        let (mut clone, cw) = welcome(h.addr, back_v2(&w, "pi-clone", "inst-b", E1)).await;
        assert!(!cw.welcome_back, "a clone is a new client: {cw:?}");
        assert_ne!(cw.client_id, w.client_id);
        assert_eq!(cw.client_id.len(), 32);
        assert_eq!(cw.secret.len(), 64);
        assert_ne!(cw.secret, w.secret);
        // Its buffer is a copy of the original's: same epoch, same seqs. Written all the same,
        // under the clone's own series.
        let a = batch(&mut clone, E1, 10, vec![snapshot(1_000, 0)]).await;
        assert_eq!((a.seq, a.epoch), (10, E1));
        let a = batch(&mut clone, E1, 11, vec![snapshot(2_000, 0)]).await;
        assert_eq!((a.seq, a.epoch), (11, E1));
        assert_eq!(h.sink.points(), 9, "{}", h.sink.text());
        assert_eq!(
            system_hosts(&h.sink),
            BTreeSet::from(["pi-orig".to_string(), "pi-clone".to_string()])
        );

        // The clone lost that Welcome and presents the original's id again: the same clone,
        // with a new secret, not a third client.
        drop(clone);
        let (mut clone, again) = welcome(h.addr, back_v2(&w, "pi-clone", "inst-b", E1)).await;
        assert!(!again.welcome_back);
        assert_eq!(again.client_id, cw.client_id);
        assert_ne!(again.secret, cw.secret);
        let cw = again;
        let a = batch(&mut clone, E1, 11, vec![snapshot(2_000, 0)]).await;
        assert_eq!((a.seq, a.epoch), (11, E1), "its window is kept");
        assert_eq!(h.sink.points(), 9);

        // The original comes back: still itself, and its window is its own.
        let (mut orig, back) = welcome(h.addr, back_v2(&w, "pi-orig", "inst-a", E1)).await;
        assert!(back.welcome_back);
        assert_eq!(back.client_id, w.client_id);
        let a = batch(&mut orig, E1, 11, vec![snapshot(2_000, 0)]).await;
        assert_eq!((a.seq, a.epoch), (11, E1));
        assert_eq!(h.sink.points(), 12);

        // A second clone while the original is connected: enrolled too, and the original's
        // session is not replaced.
        let (_c2, cw2) = welcome(h.addr, back_v2(&w, "pi-clone-2", "inst-c", E1)).await;
        assert!(!cw2.welcome_back);
        assert!(cw2.client_id != w.client_id && cw2.client_id != cw.client_id);
        let a = batch(&mut orig, E1, 12, vec![snapshot(3_000, 0)]).await;
        assert_eq!((a.seq, a.epoch), (12, E1));

        // The clone comes back under its new identity.
        drop(clone);
        let (_clone, cback) = welcome(h.addr, back_v2(&cw, "pi-clone", "inst-b", E1)).await;
        assert!(cback.welcome_back);
        assert_eq!(cback.client_id, cw.client_id);
    });
    let inv = h.factory.inventory();
    assert_eq!(inv.len(), 3);
    let m = h.get("/metrics");
    assert_eq!(metric(&m, "autofactory_clones_enrolled_total"), 2);
    let clients = h.get("/clients");
    for inst in ["inst-a", "inst-b", "inst-c"] {
        assert!(
            clients.contains(&format!("\"installation\":\"{inst}\"")),
            "{clients}"
        );
    }
    h.stop().expect("clean shutdown");
}

#[test]
fn two_clients_with_one_hostname_write_distinct_series() {
    // Issue 15.3 (same hostname): identical points of two machines must not overwrite each
    // other; the first holder keeps the plain name.
    let dir = temp_dir("same-host");
    let h = Harness::start(&dir, &config_text(""));
    let (w1, w2) = smol::block_on(async {
        let (mut c1, w1) = welcome(h.addr, hello_v2("raspberrypi", "inst-1", E1)).await;
        let (mut c2, w2) = welcome(h.addr, hello_v2("raspberrypi", "inst-2", E2)).await;
        let (mut c3, _) = welcome(h.addr, hello_v2("unique-pi", "inst-3", E1)).await;
        // Collection instants are aligned: the same timestamp from both machines.
        batch(&mut c1, E1, 1, vec![snapshot(1_000, 0)]).await;
        batch(&mut c2, E2, 1, vec![snapshot(1_000, 0)]).await;
        batch(&mut c3, E1, 1, vec![snapshot(1_000, 0)]).await;
        (w1, w2)
    });
    let second = format!("raspberrypi~{}", &w2.client_id[..8]);
    assert_eq!(
        system_hosts(&h.sink),
        BTreeSet::from([
            "raspberrypi".to_string(),
            second.clone(),
            "unique-pi".to_string()
        ]),
        "{}",
        h.sink.text()
    );
    let clients = h.get("/clients");
    assert!(
        clients.contains(&format!("\"host_tag\":\"{second}\"")),
        "{clients}"
    );
    let doc: autofactory::admin::ClientsDoc =
        nanoserde::DeJson::deserialize_json(&clients).expect("clients JSON");
    let table = autofactory::admin::clients_table(&doc);
    let dup_rows = table.lines().filter(|l| l.contains("(dup)")).count();
    assert_eq!(dup_rows, 2, "both raspberrypi rows flagged:\n{table}");
    assert!(
        !table
            .lines()
            .any(|l| l.starts_with("unique-pi") && l.contains("(dup)")),
        "{table}"
    );
    let page = h.get("/");
    assert!(page.contains(&second), "fleet page shows the tag:\n{page}");

    // Tags are stable across a restart and reconnects, whatever the order of return.
    let sink = h.sink.clone();
    h.stop().expect("clean shutdown");
    let h = Harness::start_with(&dir, &config_text(""), sink);
    smol::block_on(async {
        let (mut c2, _) = welcome(h.addr, back_v2(&w2, "raspberrypi", "inst-2", E2)).await;
        let (mut c1, _) = welcome(h.addr, back_v2(&w1, "raspberrypi", "inst-1", E1)).await;
        batch(&mut c2, E2, 2, vec![snapshot(2_000, 0)]).await;
        batch(&mut c1, E1, 2, vec![snapshot(2_000, 0)]).await;
    });
    let at_2000: BTreeSet<String> = lines_at(&h.sink, 2_000)
        .iter()
        .filter(|l| l.starts_with("system,"))
        .map(|l| l.split(' ').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(at_2000.len(), 2, "{at_2000:?}");
    assert!(at_2000
        .iter()
        .any(|l| l.contains(&format!("host={second}"))));
    h.stop().expect("clean shutdown");
}

#[test]
fn a_first_release_agent_without_installation_or_epoch_works_as_before() {
    // Issue 15.4: a first-release Hello has no installation and its batches epoch 0.
    let dir = temp_dir("first-release");
    let h = Harness::start(&dir, &config_text(""));
    smol::block_on(async {
        let (mut c, w) = Client::enroll(h.addr, "old-pi").await;
        assert_eq!(c.batch(1, vec![snapshot(1_000, 0)]).await.seq, 1);
        assert_eq!(c.batch(2, vec![snapshot(2_000, 0)]).await.seq, 2);
        // A re-sent seq is acked again and not written.
        let a = c.batch(2, vec![snapshot(2_000, 0)]).await;
        assert_eq!((a.seq, a.epoch), (2, 0));
        assert_eq!(h.sink.points(), 6);
        drop(c);
        let (mut c, back) = welcome(h.addr, back_hello(&w.client_id, &w.secret, "old-pi")).await;
        assert!(back.welcome_back);
        assert_eq!(c.batch(2, vec![snapshot(2_000, 0)]).await.seq, 2);
        assert_eq!(h.sink.points(), 6);
        assert_eq!(c.batch(3, vec![snapshot(3_000, 0)]).await.seq, 3);
        assert_eq!(h.sink.points(), 9);
        drop(c);

        // Upgraded: the first installation it presents becomes its own.
        let (mut c, back) = welcome(h.addr, back_v2(&w, "old-pi", "inst-new", E1)).await;
        assert!(back.welcome_back);
        assert_eq!(back.client_id, w.client_id);
        let a = batch(&mut c, E1, 1, vec![snapshot(4_000, 0)]).await;
        assert_eq!(
            (a.seq, a.epoch),
            (1, E1),
            "a new epoch after seq 3 of epoch 0"
        );
        assert_eq!(h.sink.points(), 12);
        drop(c);
        // An old agent on the same id (no installation) cannot be told apart: served as before.
        let (_c, back) = welcome(h.addr, back_hello(&w.client_id, &w.secret, "old-pi")).await;
        assert!(back.welcome_back);
        // Another installation is a clone.
        let (_c, clone) = welcome(h.addr, back_v2(&w, "old-pi", "inst-other", E1)).await;
        assert!(!clone.welcome_back);
        assert_ne!(clone.client_id, w.client_id);
    });
    assert_eq!(h.factory.inventory().len(), 2);
    h.stop().expect("clean shutdown");
}

#[test]
fn status_fields_are_in_the_clients_view() {
    // Buffer state, installation, Config status and clock, as the agent reports them.
    let dir = temp_dir("status");
    let h = Harness::start(&dir, &config_text(""));
    let hello = Hello {
        clock_sync: autofact_fbs::ClockSync::Unsynced,
        config_status: autofact_fbs::ConfigStatus::Failed,
        config_error: "periods.cpu_ms: too small".into(),
        buffer_state: BufferState::ReadOnly,
        boot_id: "b00710".into(),
        ..hello_v2("pi-full", "inst-s", E1)
    };
    let (mut c, w) = smol::block_on(welcome(h.addr, hello));
    let clients = h.get("/clients");
    for want in [
        "\"buffer_state\":\"read_only\"",
        "\"config_status\":\"failed\"",
        "\"config_error\":\"periods.cpu_ms: too small\"",
        "\"clock_sync\":\"unsynced\"",
        "\"boot_id\":\"b00710\"",
        "\"installation\":\"inst-s\"",
    ] {
        assert!(clients.contains(want), "{want} in {clients}");
    }
    smol::block_on(async {
        let mut snap = snapshot(1_000, 0);
        snap.clock_sync = autofact_fbs::ClockSync::Synced;
        c.send(&Message::Batch(Batch {
            epoch: E1,
            seq: 1,
            snapshots: vec![snap],
            buffer_state: BufferState::DiskFull,
            config_status: autofact_fbs::ConfigStatus::Applied,
            config_hash: w.config.hash(),
            ..Batch::default()
        }))
        .await;
        assert!(matches!(c.recv().await, Ok(Message::Ack(_))));
    });
    let clients = h.get("/clients");
    for want in [
        "\"buffer_state\":\"disk_full\"",
        "\"config_status\":\"applied\"",
        "\"config_error\":\"\"",
        "\"config_current\":true",
        "\"clock_sync\":\"synced\"",
    ] {
        assert!(clients.contains(want), "{want} in {clients}");
    }
    let doc: autofactory::admin::ClientsDoc =
        nanoserde::DeJson::deserialize_json(&clients).expect("clients JSON");
    let table = autofactory::admin::clients_table(&doc);
    for want in ["disk_full", "applied", "synced", "inst-s"] {
        assert!(table.contains(want), "{want} in\n{table}");
    }
    drop(c);
    h.stop().expect("clean shutdown");
}
