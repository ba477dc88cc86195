//! Protocol compatibility with the first release (0.1): its agents against this factory and
//! this release's agents against its factories. The 0.1 side is that release's own generated
//! code (`release_0_1/`, kept verbatim), so these are the bytes it writes and the reads it does.
mod common;
mod release_0_1;

use autofact_fbs::*;
use flatbuffers::FlatBufferBuilder;
use release_0_1 as old;

/// A 0.1 agent's Hello, built with 0.1's code.
fn old_hello_bytes() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let client_id = fbb.create_string("0123456789abcdef0123456789abcdef");
    let secret = fbb.create_string("s3cret");
    let hostname = fbb.create_string("raspberrypi");
    let hello = old::Hello::create(
        &mut fbb,
        &old::HelloArgs {
            protocol_version: 1,
            client_id: Some(client_id),
            secret: Some(secret),
            hostname: Some(hostname),
            boot_time: 1_700_000_000,
            agent_clock_ns: 1_700_000_100_000_000_000,
            ..Default::default()
        },
    );
    let env = old::Envelope::create(
        &mut fbb,
        &old::EnvelopeArgs {
            payload_type: old::Payload::Hello,
            payload: Some(hello.as_union_value()),
        },
    );
    fbb.finish_minimal(env);
    fbb.finished_data().to_vec()
}

/// A 0.1 agent's Batch of one snapshot with a health table, built with 0.1's code.
fn old_batch_bytes() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let health = old::Health::create(
        &mut fbb,
        &old::HealthArgs {
            buffered_batches: 3,
            dropped_batches: 1,
            ..Default::default()
        },
    );
    let snap = old::Snapshot::create(
        &mut fbb,
        &old::SnapshotArgs {
            time_ns: 1_700_000_000_000_000_000,
            health: Some(health),
            ..Default::default()
        },
    );
    let snaps = fbb.create_vector(&[snap]);
    let batch = old::Batch::create(
        &mut fbb,
        &old::BatchArgs {
            seq: 1_700_000_000_000_042,
            snapshots: Some(snaps),
        },
    );
    let env = old::Envelope::create(
        &mut fbb,
        &old::EnvelopeArgs {
            payload_type: old::Payload::Batch,
            payload: Some(batch.as_union_value()),
        },
    );
    fbb.finish_minimal(env);
    fbb.finished_data().to_vec()
}

#[test]
fn a_first_release_hello_reads_with_every_new_field_at_its_default() {
    let Message::Hello(h) = decode(&old_hello_bytes()).expect("0.1 Hello decodes") else {
        panic!("not a Hello");
    };
    assert_eq!(h.client_id, "0123456789abcdef0123456789abcdef");
    assert_eq!(h.hostname, "raspberrypi");
    assert_eq!(h.agent_clock_ns, 1_700_000_100_000_000_000);
    assert_eq!(
        h.installation, "",
        "no installation: the factory keeps 0.1's rules"
    );
    assert_eq!(
        h.epoch, 0,
        "no epoch: the factory dedups by seq alone, as 0.1 did"
    );
    assert_eq!(h.clock_sync, ClockSync::Unknown);
    assert_eq!(h.config_status, ConfigStatus::Unknown);
    assert_eq!(h.config_hash, 0);
    assert_eq!(h.buffer_state, BufferState::Disk);
}

#[test]
fn a_first_release_batch_reads_with_every_new_field_at_its_default() {
    let Message::Batch(b) = decode(&old_batch_bytes()).expect("0.1 Batch decodes") else {
        panic!("not a Batch");
    };
    assert_eq!(b.seq, 1_700_000_000_000_042);
    assert_eq!(b.epoch, 0);
    assert_eq!(b.agent_clock_ns, 0);
    assert_eq!(b.snapshots.len(), 1);
    let s = &b.snapshots[0];
    assert_eq!(s.time_ns, 1_700_000_000_000_000_000);
    assert_eq!((s.boottime_ns, s.clock_sync), (0, ClockSync::Unknown));
    let h = s.health.as_ref().expect("health");
    assert_eq!((h.buffered_batches, h.dropped_batches), (3, 1));
    assert_eq!(h.buffer_state, BufferState::Disk);
}

/// What a 0.1 peer does with a message: verify with its own generated code, then read.
fn old_envelope(bytes: &[u8]) -> old::Envelope<'_> {
    old::root_as_envelope(bytes).expect("a 0.1 peer verifies this release's bytes")
}

#[test]
fn a_first_release_factory_reads_this_releases_hello_and_batch() {
    let hello = common::full_hello();
    let bytes = encode(&Message::Hello(hello.clone()));
    let h = old_envelope(&bytes).payload_as_hello().expect("a Hello");
    assert_eq!(h.client_id(), Some(hello.client_id.as_str()));
    assert_eq!(h.hostname(), Some(hello.hostname.as_str()));
    assert_eq!(h.agent_clock_ns(), hello.agent_clock_ns);

    let batch = common::full_batch();
    let bytes = encode(&Message::Batch(batch.clone()));
    let b = old_envelope(&bytes).payload_as_batch().expect("a Batch");
    assert_eq!(b.seq(), batch.seq);
    let snaps = b.snapshots().expect("snapshots");
    assert_eq!(snaps.len(), batch.snapshots.len());
    let first = snaps.get(0);
    assert_eq!(first.time_ns(), batch.snapshots[0].time_ns);
    let cpu = first.cpu().expect("cpu");
    assert_eq!(
        cpu.get(0).name(),
        Some(batch.snapshots[0].cpu[0].name.as_str())
    );
    let h = first.health().expect("health");
    let want = batch.snapshots[0].health.as_ref().expect("health");
    assert_eq!(h.parse_errors(), want.parse_errors);
}

#[test]
fn a_first_release_agent_reads_this_releases_welcome_config_ack_and_reject() {
    let config = common::full_config();
    let bytes = encode(&Message::Config(config));
    let c = old_envelope(&bytes).payload_as_config().expect("a Config");
    assert_eq!(c.push_interval_ms(), config.push_interval_ms);
    assert_eq!(c.give_up_secs(), config.give_up_secs);
    assert_eq!(c.periods().expect("periods").health_ms(), 10);

    let bytes = encode(&Message::Ack(Ack { seq: 42, epoch: 7 }));
    assert_eq!(
        old_envelope(&bytes).payload_as_ack().expect("an Ack").seq(),
        42
    );

    let bytes = encode(&Message::Welcome(Welcome {
        client_id: "fedcba9876543210fedcba9876543210".into(),
        secret: "x".into(),
        welcome_back: false,
        config,
    }));
    let w = old_envelope(&bytes)
        .payload_as_welcome()
        .expect("a Welcome");
    assert_eq!(w.client_id(), Some("fedcba9876543210fedcba9876543210"));
    assert_eq!(w.config().expect("config").ping_interval_ms(), 12);

    // A reject code 0.1 does not know must still verify: its agent logs the unknown code.
    let bytes = encode(&Message::Reject(Reject {
        code: RejectCode::TlsRequired,
        message: "use wss://".into(),
    }));
    let r = old_envelope(&bytes).payload_as_reject().expect("a Reject");
    assert_eq!(r.message(), Some("use wss://"));
}

#[test]
fn config_hash_is_stable_and_sees_every_field() {
    let base = common::full_config();
    assert_eq!(base.hash(), base.hash());
    assert_ne!(base.hash(), 0);
    // The recorded value: changing the hash function makes every agent look out of date.
    assert_eq!(Config::default().hash(), RECORDED_DEFAULT_HASH);
    let mut variants = vec![base];
    let mut c = base;
    c.periods.temp_ms += 1;
    variants.push(c);
    let mut c = base;
    c.max_message_bytes += 1;
    variants.push(c);
    let mut c = base;
    c.periods.processes_ms += 1;
    variants.push(c);
    let mut c = base;
    c.buffer_cap_bytes -= 1;
    variants.push(c);
    let mut hashes: Vec<u64> = variants.iter().map(Config::hash).collect();
    hashes.sort_unstable();
    hashes.dedup();
    assert_eq!(
        hashes.len(),
        variants.len(),
        "each field change changes the hash"
    );
}

/// `Config::default().hash()` as release 0.2 computes it (with `processes_ms`, issue 19).
const RECORDED_DEFAULT_HASH: u64 = 14_259_778_155_083_896_554;
