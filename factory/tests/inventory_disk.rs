//! The factory's own disk (issue 16.3): with its data dir full, inventory writes fail; agents
//! whose data the sink can still take are served all the same, a new client is refused with a
//! reason it retries (Busy), and once space is back the inventory is written again without a
//! restart. The data dir is a small tmpfs mounted by the test (root).

mod common;

use autofact_fbs::{Hello, Message, RejectCode};
use autofact_tests::harness::Tmpfs;
use common::*;

const E: u64 = 0x0123_4567_89ab_cdef;

#[test]
fn a_full_data_dir_never_refuses_agents_and_the_inventory_recovers_without_restart() {
    let dir = temp_dir("full-disk");
    let data = dir.join("data");
    let Some(disk) = Tmpfs::mount(&data, "4m", "inventory_disk") else {
        return;
    };
    let h = Harness::start(&dir, &config_text(""));
    let mut enrolled_while_full = 0;
    let w = smol::block_on(async {
        let (mut c, w) = welcome(h.addr, hello_v2("pi-disk", "inst-d", E)).await;
        assert_eq!(batch(&mut c, E, 1, vec![snapshot(1_000, 0)]).await.seq, 1);
        let filled = disk.fill();
        println!("filled {filled} bytes");

        // Every batch still reaches the sink and is acked, whatever the inventory says.
        for seq in 2..=40 {
            let a = batch(&mut c, E, seq, vec![snapshot(seq as i64 * 1_000, 0)]).await;
            assert_eq!(a.seq, seq);
        }
        assert_eq!(h.sink.points(), 40 * 3);
        drop(c);

        // A returning client is welcomed back, not closed with "internal error".
        let hello = Hello {
            client_id: w.client_id.clone(),
            secret: w.secret.clone(),
            token: String::new(),
            ..hello_v2("pi-disk", "inst-d", E)
        };
        let (mut c, back) = welcome(h.addr, hello.clone()).await;
        assert!(back.welcome_back);
        assert_eq!(
            batch(&mut c, E, 41, vec![snapshot(41_000, 0)]).await.seq,
            41
        );

        // A new client's secret must survive a restart: while its record fits in what is left
        // (a page's slack) it is enrolled; then refused with a reason it retries.
        let mut refused = None;
        for i in 0..50 {
            disk.fill();
            let mut n = Client::connect(h.addr).await;
            n.send(&Message::Hello(hello_v2(
                &format!("pi-new-{i}"),
                "inst-n",
                E,
            )))
            .await;
            match n.recv().await {
                Ok(Message::Welcome(_)) => enrolled_while_full += 1,
                Ok(Message::Reject(r)) => {
                    refused = Some(r);
                    break;
                }
                other => panic!("expected Welcome or Reject, got {other:?}"),
            }
        }
        let r = refused.expect("a new client refused while the disk is full");
        assert_eq!(r.code, RejectCode::Busy, "{r:?}");
        assert!(r.message.contains("inventory"), "{r:?}");
        println!("{enrolled_while_full} enrolled before the disk was full to the last page: {r:?}");
        let m = h.get("/metrics");
        assert!(
            metric(&m, "autofactory_inventory_write_errors_total") >= 1,
            "{m}"
        );
        assert!(
            metric(&m, "autofactory_inventory_unsaved_records") >= 1,
            "{m}"
        );

        // Space comes back: the inventory is written again, no restart.
        disk.free();
        wait_until("the inventory to be saved again", || {
            metric(&h.get("/metrics"), "autofactory_inventory_unsaved_records") == 0
        })
        .await;
        let (_n, nw) = welcome(h.addr, hello_v2("pi-new", "inst-n", E)).await;
        assert!(!nw.welcome_back);
        assert_eq!(
            batch(&mut c, E, 42, vec![snapshot(42_000, 0)]).await.seq,
            42
        );
        w
    });
    h.stop().expect("clean shutdown");
    // What was acked is on disk.
    let inv = autofactory::inventory::Inventory::open(&data).expect("reopen inventory");
    assert_eq!(inv.len(), 2 + enrolled_while_full);
    let rec = inv.get(&w.client_id).expect("record");
    assert_eq!(rec.last_acked_seq, 42);
    drop(inv);
    drop(disk);
}

#[test]
fn a_factory_started_on_a_read_only_data_dir_waits_for_it_instead_of_exiting() {
    // Exiting would make systemd restart it in a loop; it waits for the disk instead.
    let dir = temp_dir("ro-start");
    let data = dir.join("data");
    let Some(_disk) = Tmpfs::mount(&data, "4m", "inventory_disk") else {
        return;
    };
    let h = Harness::start(&dir, &config_text(""));
    let w = smol::block_on(async { welcome(h.addr, hello_v2("pi-ro", "inst-r", E)).await.1 });
    h.stop().expect("clean shutdown");
    let remount = |how: &str| {
        let st = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{how}")])
            .arg(&data)
            .status()
            .expect("mount -o remount");
        assert!(st.success(), "remount {how}");
    };
    remount("ro");
    let config_path = dir.join("autofactory.json");
    let mut cfg = autofactory::FactoryConfig::load(&config_path).expect("config");
    cfg.data_dir = data.clone();
    let opening = std::thread::spawn(move || {
        autofactory::Factory::open(autofactory::Settings {
            config: cfg,
            config_path: None,
            sink: Some(std::sync::Arc::new(MemSink::default())),
        })
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    let waited = !opening.is_finished();
    remount("rw");
    let opened = opening.join().expect("open thread");
    assert!(
        waited,
        "Factory::open returned on a read-only data dir: {:?}",
        opened.as_ref().err()
    );
    let f = opened.expect("opens once the disk is writable");
    assert!(f.inventory().get(&w.client_id).is_some());
}
