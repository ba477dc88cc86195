//! Applied-config status (issue 19.5) on the raw protocol: a batch whose Config hash differs
//! from the Config the factory means its client to have makes the factory send that Config
//! again, once per connection per difference (a mixed-version fleet cannot loop), and the
//! inventory shows what the agent said.

mod common;

use autofact_fbs::{Batch, ConfigStatus, Message};
use common::*;

/// Sends a batch carrying the agent's config report; returns every message up to its Ack.
async fn report(
    c: &mut Client,
    seq: u64,
    hash: u64,
    status: ConfigStatus,
) -> (Vec<Message>, autofact_fbs::Ack) {
    c.send(&Message::Batch(Batch {
        seq,
        snapshots: vec![snapshot(seq as i64 * 10_000_000_000, 0)],
        config_hash: hash,
        config_status: status,
        ..Batch::default()
    }))
    .await;
    let mut before = Vec::new();
    loop {
        match c.recv().await {
            Ok(Message::Ack(a)) => return (before, a),
            Ok(m) => before.push(m),
            Err(code) => panic!("factory closed ({code:?}) before acking seq {seq}"),
        }
    }
}

fn configs(msgs: &[Message]) -> Vec<autofact_fbs::Config> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::Config(c) => Some(*c),
            _ => None,
        })
        .collect()
}

#[test]
fn a_differing_applied_hash_gets_the_config_again_once_per_difference() {
    let dir = temp_dir("cfg-resend");
    let h = Harness::start(
        &dir,
        &config_text(r#""defaults": {"push_interval_ms": 10000, "periods": {"cpu_ms": 1000}}"#),
    );
    smol::block_on(async {
        let (mut c, w) = Client::enroll(h.addr, "stale-node").await;
        let meant = w.config;

        // The agent applied what it was sent: nothing more.
        let (extra, ack) = report(&mut c, 1, meant.hash(), ConfigStatus::Applied).await;
        assert_eq!(ack.seq, 1);
        assert!(configs(&extra).is_empty(), "{extra:?}");

        // It reports another Config in force (it missed a push, or kept an older one): the
        // factory sends the meant one again, before the ack.
        let (extra, _) = report(&mut c, 2, 0xdead_beef, ConfigStatus::Applied).await;
        assert_eq!(configs(&extra), vec![meant], "Config re-sent once");
        // The same difference again (an agent that cannot apply it): not again.
        let (extra, _) = report(&mut c, 3, 0xdead_beef, ConfigStatus::Applied).await;
        assert!(configs(&extra).is_empty(), "re-sent twice: {extra:?}");
        // Another difference: once more.
        let (extra, _) = report(&mut c, 4, 0xfeed, ConfigStatus::Applied).await;
        assert_eq!(configs(&extra), vec![meant]);

        // The agent refused the meant Config: sending it again would not help.
        let (extra, _) = report(&mut c, 5, meant.hash(), ConfigStatus::Failed).await;
        assert!(configs(&extra).is_empty(), "{extra:?}");
        // A first-release agent reports nothing: nothing re-sent.
        let (extra, _) = report(&mut c, 6, 0, ConfigStatus::Unknown).await;
        assert!(configs(&extra).is_empty(), "{extra:?}");

        // What the inventory shows for the refusal.
        let doc: autofactory::admin::ClientsDoc =
            nanoserde::DeJson::deserialize_json(&h.get("/clients")).expect("JSON inventory");
        let me = doc
            .clients
            .iter()
            .find(|x| x.id == w.client_id)
            .expect("listed");
        assert_eq!(me.config_status, "failed");
        assert_eq!(me.config_hash, format!("{:016x}", meant.hash()));

        // A new connection is a new chance: the old difference is re-sent once again.
        drop(c);
        wait_until("disconnect", || h.factory.connected().is_empty()).await;
        let (mut c, answer) =
            Client::hello(h.addr, back_hello(&w.client_id, &w.secret, "stale-node")).await;
        assert!(matches!(answer, Message::Welcome(_)), "{answer:?}");
        let (extra, _) = report(&mut c, 7, 0xdead_beef, ConfigStatus::Applied).await;
        assert_eq!(configs(&extra), vec![meant]);
    });
    let m = h.get("/metrics");
    assert_eq!(metric(&m, "autofactory_configs_resent_total"), 3);
    h.stop().expect("clean shutdown");
}
