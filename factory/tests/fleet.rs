//! Several factories, one fleet (issue 18): with a shared `fleet_key` any factory verifies any
//! client, a client enrolled before the key keeps working through its stored hash, and a factory
//! without the key behaves as before. Real factories on 127.0.0.1:0 with in-memory sinks.

mod common;

use autofact_fbs::{Message, RejectCode};
use common::*;

const KEY: &str = "fleet-key-for-tests-0123456789abcdef";

fn with_key(key: &str) -> String {
    config_text(&format!(r#""fleet_key": "{key}""#))
}

#[test]
fn a_client_enrolled_at_one_factory_is_welcomed_back_at_another_of_the_fleet() {
    let (da, db) = (temp_dir("fleet-a"), temp_dir("fleet-b"));
    let a = Harness::start(&da, &with_key(KEY));
    let b = Harness::start(&db, &with_key(KEY));
    smol::block_on(async {
        let (mut c, w) = Client::enroll(a.addr, "pi-moved").await;
        assert!(!w.welcome_back);
        // The secret is derived from the fleet key, not random.
        assert_eq!(
            Some(w.secret.as_str()),
            autofactory::ids::fleet_secret(KEY, &w.client_id).as_deref(),
            "the enrollment secret must be the fleet secret"
        );
        assert_eq!(c.batch(1, vec![snapshot(1_000, 0)]).await.seq, 1);
        drop(c);

        // B has never seen it: welcomed back under the same id, recorded in B's inventory.
        let (mut c2, answer) =
            Client::hello(b.addr, back_hello(&w.client_id, &w.secret, "pi-moved")).await;
        match answer {
            Message::Welcome(back) => {
                assert!(back.welcome_back, "B must not enroll it again");
                assert_eq!(back.client_id, w.client_id);
                assert_eq!(back.secret, "", "no new secret for a known client");
            }
            other => panic!("expected a welcome back from B, got {other:?}"),
        }
        assert_eq!(c2.batch(2, vec![snapshot(2_000, 0)]).await.seq, 2);
        let rec = b.factory.inventory().get(&w.client_id).expect("in B");
        assert_eq!(rec.hostname, "pi-moved");
        assert_eq!(
            rec.secret_hash,
            autofactory::ids::secret_hash(&w.secret),
            "B stores only the hash"
        );
        assert_eq!(rec.last_acked_seq, 2);
        drop(c2);

        // A wrong secret for that id is refused at B now that it knows it, and an unknown id
        // with a secret not valid under the key is unknown, as before.
        let wrong = "f".repeat(64);
        assert_eq!(
            refused(b.addr, back_hello(&w.client_id, &wrong, "x"))
                .await
                .0,
            RejectCode::BadSecret
        );
        let stranger = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            refused(b.addr, back_hello(stranger, &wrong, "x")).await.0,
            RejectCode::UnknownClient
        );
        assert!(b.factory.inventory().get(stranger).is_none());
    });
    // Neither factory enrolled a second client.
    assert_eq!(a.factory.inventory().len(), 1);
    assert_eq!(b.factory.inventory().len(), 1);
    assert_eq!(
        metric(&b.get("/metrics"), "autofactory_clients_enrolled_total"),
        0
    );
    a.stop().expect("clean shutdown");
    b.stop().expect("clean shutdown");
}

#[test]
fn a_fleet_client_moved_to_a_factory_where_its_hostname_is_taken_gets_its_own_series_at_once() {
    let (da, db) = (temp_dir("fleet-tag-a"), temp_dir("fleet-tag-b"));
    let a = Harness::start(&da, &with_key(KEY));
    let b = Harness::start(&db, &with_key(KEY));
    let now = autofactory::log::unix_now_ns();
    smol::block_on(async {
        // B already serves a machine called raspberrypi.
        let (mut local, _) = Client::enroll(b.addr, "raspberrypi").await;
        assert_eq!(
            local
                .batch(1, vec![snapshot(now - 2_000_000_000, 0)])
                .await
                .seq,
            1
        );
        // Another raspberrypi, enrolled at A, is moved to B by the balancer.
        let (_, w) = Client::enroll(a.addr, "raspberrypi").await;
        let (mut moved, answer) =
            Client::hello(b.addr, back_hello(&w.client_id, &w.secret, "raspberrypi")).await;
        assert!(matches!(answer, Message::Welcome(_)), "{answer:?}");
        assert_eq!(
            moved
                .batch(1, vec![snapshot(now - 1_000_000_000, 0)])
                .await
                .seq,
            1
        );
        let tag = format!("host=raspberrypi~{}", &w.client_id[..8]);
        let lines = b.sink.text();
        let moved_lines: Vec<&str> = lines
            .lines()
            .filter(|l| l.ends_with(&format!(" {}", now - 1_000_000_000)))
            .collect();
        assert!(!moved_lines.is_empty(), "{lines}");
        assert!(
            moved_lines.iter().all(|l| l.contains(&tag)),
            "its first points already carry {tag}:\n{lines}"
        );
    });
    a.stop().expect("clean shutdown");
    b.stop().expect("clean shutdown");
}

#[test]
fn another_fleet_key_or_none_does_not_know_the_client() {
    let (da, db, dc) = (
        temp_dir("fleet-key-1"),
        temp_dir("fleet-key-2"),
        temp_dir("fleet-none"),
    );
    let a = Harness::start(&da, &with_key(KEY));
    let b = Harness::start(&db, &with_key("another-fleet-key-0123456789abcdef"));
    let c = Harness::start(&dc, &config_text(""));
    smol::block_on(async {
        let (_c, w) = Client::enroll(a.addr, "pi").await;
        for other in [b.addr, c.addr] {
            assert_eq!(
                refused(other, back_hello(&w.client_id, &w.secret, "pi"))
                    .await
                    .0,
                RejectCode::UnknownClient
            );
        }
        // Without a key, enrollment secrets stay random.
        let (_c2, w2) = Client::enroll(c.addr, "pi-2").await;
        assert_ne!(
            Some(w2.secret.clone()),
            autofactory::ids::fleet_secret(KEY, &w2.client_id)
        );
        // Nor does a factory without a key write the fleet inventory measurement (its sink
        // holds the facts only, as before), while one with a key does.
        wait_until("A's fleet inventory point", || {
            a.sink.text().contains("autofact_client,")
        })
        .await;
        smol::Timer::after(autofactory::fleet::POLL * 2).await;
        assert!(
            !c.sink.text().contains("autofact_client"),
            "{}",
            c.sink.text()
        );
    });
    assert_eq!(b.factory.inventory().len(), 0);
    a.stop().expect("clean shutdown");
    b.stop().expect("clean shutdown");
    c.stop().expect("clean shutdown");
}

#[test]
fn a_client_enrolled_before_the_fleet_key_keeps_working_and_is_given_its_fleet_secret() {
    let dir = temp_dir("fleet-upgrade");
    let h = Harness::start(&dir, &config_text(""));
    let w = smol::block_on(async {
        let (_c, w) = Client::enroll(h.addr, "old-pi").await;
        w
    });
    h.stop().expect("clean shutdown");
    // The same factory (same inventory), now with a fleet key, and another factory of the fleet.
    let h = Harness::start(&dir, &with_key(KEY));
    let other_dir = temp_dir("fleet-upgrade-other");
    let other = Harness::start(&other_dir, &with_key(KEY));
    smol::block_on(async {
        // Its old secret still works where it was enrolled (the stored hash) ...
        let (c, answer) =
            Client::hello(h.addr, back_hello(&w.client_id, &w.secret, "old-pi")).await;
        let fleet = match answer {
            Message::Welcome(back) => {
                assert!(back.welcome_back);
                assert_eq!(back.client_id, w.client_id);
                // ... and the welcome back hands it its fleet secret to store.
                assert_eq!(
                    Some(back.secret.as_str()),
                    autofactory::ids::fleet_secret(KEY, &w.client_id).as_deref()
                );
                back.secret
            }
            other => panic!("expected a welcome back, got {other:?}"),
        };
        drop(c);
        // With it, any factory of the fleet knows the client; the old one is still good here.
        for (addr, secret) in [(other.addr, &fleet), (h.addr, &fleet), (h.addr, &w.secret)] {
            let (_c, answer) =
                Client::hello(addr, back_hello(&w.client_id, secret, "old-pi")).await;
            match answer {
                Message::Welcome(back) => assert!(back.welcome_back),
                other => panic!("expected a welcome back, got {other:?}"),
            }
        }
        // Presenting the fleet secret, it is not handed one again.
        let (_c, answer) = Client::hello(h.addr, back_hello(&w.client_id, &fleet, "old-pi")).await;
        match answer {
            Message::Welcome(back) => assert_eq!(back.secret, ""),
            other => panic!("expected a welcome back, got {other:?}"),
        }
    });
    h.stop().expect("clean shutdown");
    other.stop().expect("clean shutdown");
}

#[test]
fn clients_merges_the_inventories_of_several_factories_and_names_a_dead_one() {
    let (da, db) = (temp_dir("fleet-cli-a"), temp_dir("fleet-cli-b"));
    let a = Harness::start(&da, &with_key(KEY));
    let b = Harness::start(&db, &with_key(KEY));
    // A port nothing listens on: bound, then released.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .to_string();
    let bin = env!("CARGO_BIN_EXE_autofactory");
    smol::block_on(async {
        let (c, w) = Client::enroll(a.addr, "pi-moved").await;
        drop(c);
        let (_stay_a, _) = Client::enroll(a.addr, "pi-on-a").await;
        let (_on_b, answer) =
            Client::hello(b.addr, back_hello(&w.client_id, &w.secret, "pi-moved")).await;
        assert!(matches!(answer, Message::Welcome(_)), "{answer:?}");
        wait_until("B to list pi-moved as connected, A not", || {
            b.factory.connected().contains(&w.client_id)
                && !a.factory.connected().contains(&w.client_id)
        })
        .await;
        let both = format!("{},http://{}/", a.admin, b.admin);
        let out = std::process::Command::new(bin)
            .args(["clients", "--admin", &both, "--admin", &dead])
            .output()
            .expect("autofactory clients");
        let table = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(err.contains(&dead), "the dead factory is named: {err}");
        let rows: Vec<&str> = table.lines().skip(1).collect();
        assert_eq!(rows.len(), 2, "one row per client:\n{table}");
        let moved = rows
            .iter()
            .find(|r| r.starts_with("pi-moved"))
            .unwrap_or_else(|| panic!("no pi-moved row:\n{table}"));
        assert!(moved.contains(&w.client_id));
        // As B sees it (connected, B's peer address), not as A does.
        let col = table.find("CONNECTED").expect("CONNECTED column");
        assert!(
            moved.get(col..).is_some_and(|c| c.starts_with("yes")),
            "the connected view wins:\n{table}"
        );
        let b_addr = b
            .factory
            .inventory()
            .get(&w.client_id)
            .expect("in B")
            .last_address;
        assert!(moved.ends_with(&b_addr), "B's view:\n{table}");
        let out = std::process::Command::new(bin)
            .args(["clients", "--admin", &dead])
            .output()
            .expect("autofactory clients");
        assert_eq!(out.status.code(), Some(1), "no factory answered");
    });
    a.stop().expect("clean shutdown");
    b.stop().expect("clean shutdown");
}

/// The lines of measurement `autofact_client` for `id` in the sink, oldest first.
fn fleet_lines(h: &Harness, id: &str) -> Vec<String> {
    h.sink
        .text()
        .lines()
        .filter(|l| l.starts_with("autofact_client,") && l.contains(&format!(",client_id={id},")))
        .map(String::from)
        .collect()
}

#[test]
fn the_fleet_inventory_goes_to_the_sink_on_connect_and_on_disconnect() {
    let dir = temp_dir("fleet-measurement");
    let h = Harness::start(&dir, &with_key(KEY));
    smol::block_on(async {
        let (mut c, w) = Client::enroll(h.addr, "pi-listed").await;
        let id = w.client_id.clone();
        let mut b = autofact_fbs::Batch {
            seq: 1,
            snapshots: vec![snapshot(1_000, 7)],
            config_hash: 0x1234,
            ..Default::default()
        };
        b.snapshots[0]
            .health
            .as_mut()
            .expect("health")
            .dropped_batches = 2;
        c.send(&Message::Batch(b)).await;
        assert!(matches!(c.recv().await, Ok(Message::Ack(_))));
        wait_until("a connected point", || {
            fleet_lines(&h, &id)
                .iter()
                .any(|l| l.contains(" connected=1i,"))
        })
        .await;
        let first = fleet_lines(&h, &id).remove(0);
        let port = h.addr.port();
        assert!(
            first.contains(",factory=") && first.contains(&format!(":{port},host=pi-listed,")),
            "tags: {first}"
        );
        assert!(first.contains(",region=eu,zone=eu-1 "), "tags: {first}");
        assert!(
            first.starts_with("autofact_client,agent_version=0.1.0,"),
            "{first}"
        );
        // The factory's default Config carries its default message size limit (4 MiB).
        let config = autofact_fbs::Config {
            max_message_bytes: 4 * 1024 * 1024,
            ..autofact_fbs::Config::default()
        };
        let config_hash = format!("config_hash=\"{:016x}\"", config.hash());
        assert!(first.contains(&config_hash), "{first}");
        // The batch said the agent applied Config 0x1234, not the one the factory sent: a change,
        // written at once.
        wait_until("a point saying the agent's Config is not current", || {
            fleet_lines(&h, &id)
                .iter()
                .any(|l| l.contains(" connected=1i,") && l.contains(",config_current=0i,"))
        })
        .await;
        drop(c);
        wait_until("a disconnected point", || {
            fleet_lines(&h, &id)
                .iter()
                .any(|l| l.contains(" connected=0i,"))
        })
        .await;
        let last = fleet_lines(&h, &id).pop().expect("a line");
        // What the batch said: backlog, dropped and the applied Config, as of its last batch.
        for want in [
            " connected=0i,",
            "backlog=7i",
            "dropped=2i",
            "applied_config_hash=\"0000000000001234\"",
        ] {
            assert!(last.contains(want), "{want} missing in {last}");
        }
        // One point per change: nothing more while it stays away.
        let n = fleet_lines(&h, &id).len();
        smol::Timer::after(std::time::Duration::from_millis(2500)).await;
        assert_eq!(fleet_lines(&h, &id).len(), n, "{:?}", fleet_lines(&h, &id));
    });
    h.stop().expect("clean shutdown");
}
