//! Every protocol message survives encode -> decode unchanged, fully populated and empty.
mod common;

use autofact_fbs::codec::{decode, encode, encode_into, message_kind, DecodeError};
use autofact_fbs::*;
use common::*;

fn roundtrip(msg: &Message) -> Message {
    let bytes = encode(msg);
    match decode(&bytes) {
        Ok(m) => m,
        Err(e) => panic!("{} did not decode: {e}", message_kind(msg)),
    }
}

#[test]
fn every_message_fully_populated_round_trips() {
    for msg in all_full_messages() {
        assert_eq!(roundtrip(&msg), msg, "{}", message_kind(&msg));
    }
}

#[test]
fn every_reject_code_round_trips() {
    let codes = [
        RejectCode::Malformed,
        RejectCode::BadToken,
        RejectCode::UnknownClient,
        RejectCode::BadSecret,
        RejectCode::UnsupportedVersion,
        RejectCode::TooLarge,
        RejectCode::Busy,
        RejectCode::Replaced,
        RejectCode::ShuttingDown,
    ];
    for code in codes {
        let msg = Message::Reject(Reject {
            code,
            message: format!("{code:?}"),
        });
        assert_eq!(roundtrip(&msg), msg);
    }
}

#[test]
fn defaults_and_empty_messages_round_trip() {
    let zero_config = Config {
        periods: Periods::default(),
        push_interval_ms: 0,
        ping_interval_ms: 0,
        buffer_cap_bytes: 0,
        give_up_secs: 0,
        ..Config::default()
    };
    let msgs = vec![
        Message::Hello(Hello::default()),
        Message::Welcome(Welcome {
            client_id: String::new(),
            secret: String::new(),
            welcome_back: false,
            config: zero_config,
        }),
        Message::Config(zero_config),
        Message::Config(Config::default()),
        Message::Batch(Batch::default()),
        Message::Batch(Batch {
            seq: 1,
            snapshots: vec![Snapshot::default(), Snapshot::default()],
            ..Batch::default()
        }),
        Message::Ack(Ack {
            seq: 0,
            ..Ack::default()
        }),
        Message::Reject(Reject {
            code: RejectCode::Malformed,
            message: String::new(),
        }),
    ];
    for msg in msgs {
        assert_eq!(roundtrip(&msg), msg, "{msg:?}");
    }
}

#[test]
fn partial_snapshot_keeps_absent_kinds_absent() {
    // Only some kinds collected at this instant: the others must decode as None / empty,
    // not as zero-valued facts that would be written to InfluxDB.
    let full = full_snapshot(3);
    let snap = Snapshot {
        time_ns: 42,
        mem: full.mem,
        temp: full.temp.clone(),
        ..Snapshot::default()
    };
    let msg = Message::Batch(Batch {
        seq: 9,
        snapshots: vec![snap.clone()],
        ..Batch::default()
    });
    let Message::Batch(back) = roundtrip(&msg) else {
        panic!("not a batch");
    };
    assert_eq!(back.snapshots, vec![snap]);
    assert!(back.snapshots[0].cpu.is_empty());
    assert!(back.snapshots[0].kernel.is_none());
    assert!(back.snapshots[0].health.is_none());
}

#[test]
fn extreme_values_round_trip() {
    let mut snap = full_snapshot(0);
    snap.time_ns = i64::MIN;
    snap.cpu[0].user = f64::MAX;
    snap.cpu[0].idle = f64::MIN_POSITIVE;
    snap.cpu[0].steal = f64::INFINITY;
    snap.cpu[0].guest = f64::NEG_INFINITY;
    snap.temp[0].sensor = "ünïcödé ✓ \"quoted\" \\".into();
    snap.system = Some(System {
        load1: 0.0,
        load5: -0.0,
        load15: 5e-324,
        n_cpus: u32::MAX,
        uptime: u64::MAX,
        n_users: Some(u32::MAX),
        n_unique_users: None,
    });
    let msg = Message::Batch(Batch {
        seq: u64::MAX,
        snapshots: vec![snap],
        ..Batch::default()
    });
    assert_eq!(roundtrip(&msg), msg);
}

#[test]
fn nan_survives_as_nan() {
    // NaN != NaN, so the equality tests above cannot cover it.
    let mut snap = Snapshot::default();
    snap.temp.push(Temp {
        sensor: "x".into(),
        temp: f64::NAN,
    });
    let msg = Message::Batch(Batch {
        seq: 1,
        snapshots: vec![snap],
        ..Batch::default()
    });
    let Message::Batch(back) = roundtrip(&msg) else {
        panic!("not a batch");
    };
    assert!(back.snapshots[0].temp[0].temp.is_nan());
}

#[test]
fn reused_builder_gives_the_same_bytes_as_encode() {
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    // Big message first, then small ones: a reset builder must not leak the previous message.
    for msg in all_full_messages().iter().rev() {
        let fresh = encode(msg);
        let reused = encode_into(&mut fbb, msg).to_vec();
        assert_eq!(reused, fresh, "{}", message_kind(msg));
        assert_eq!(decode(&reused).as_ref(), Ok(msg));
    }
}

#[test]
fn message_kind_names_each_message() {
    let kinds: Vec<&str> = all_full_messages().iter().map(message_kind).collect();
    assert_eq!(
        kinds,
        ["Hello", "Welcome", "Config", "Batch", "Ack", "Reject"]
    );
}

#[test]
fn empty_input_is_an_error() {
    let err = decode(&[]).expect_err("empty input decoded");
    assert!(matches!(err, DecodeError::Invalid(_)), "{err:?}");
    // Display is one line, for logs.
    assert!(!err.to_string().contains('\n'), "{err}");
}

#[test]
fn repeated_names_are_written_once() {
    // full_batch repeats "cpu-total", "eth0", "mmcblk0p2", ... in each of its 4 snapshots.
    let msg = Message::Batch(full_batch());
    let bytes = encode(&msg);
    for name in [&b"cpu-total"[..], b"eth0", b"mmcblk0p2", b"cpu-thermal"] {
        let count = bytes.windows(name.len()).filter(|w| *w == name).count();
        assert_eq!(count, 1, "{}", String::from_utf8_lossy(name));
    }
    assert_eq!(decode(&bytes), Ok(msg));
}
