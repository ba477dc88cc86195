//! Bad bytes give errors, never panics: truncations, bit flips, random and crafted buffers,
//! and the verifier limits.
mod common;

use autofact_fbs::codec::{decode, decode_with, encode, DecodeError, Limits};
use autofact_fbs::generated as fb;
use autofact_fbs::lineproto::{write_batch, Tags};
use autofact_fbs::*;
use common::*;
use flatbuffers::{FlatBufferBuilder, InvalidFlatbuffer};

/// Whatever decode makes of `bytes`, the result must be usable: an Ok message re-encodes to
/// bytes that decode to the same encoding (bit-exact, so NaNs compare too), and a batch
/// renders as line protocol. Returns whether it decoded.
fn check_any(bytes: &[u8]) -> bool {
    match decode(bytes) {
        Ok(msg) => {
            let again = encode(&msg);
            let back =
                decode(&again).unwrap_or_else(|e| panic!("re-encoding failed to decode: {e}"));
            assert_eq!(encode(&back), again, "re-encoding is not stable");
            if let Message::Batch(b) = &msg {
                let mut out = String::new();
                write_batch(
                    &mut out,
                    &Tags {
                        host: "h",
                        region: "",
                        zone: "",
                        ..Default::default()
                    },
                    b,
                );
            }
            true
        }
        Err(e) => {
            // Every error renders as one line, for the peer's log entry.
            let text = e.to_string();
            assert!(!text.is_empty() && !text.contains('\n'), "{text:?}");
            false
        }
    }
}

#[test]
fn every_truncation_is_rejected_or_only_lost_padding() {
    for msg in all_full_messages() {
        let bytes = encode(&msg);
        for n in 0..bytes.len() {
            let cut = &bytes[..n];
            if let Ok(back) = decode(cut) {
                // flatbuffers are built back to front, so the tail of the buffer holds the
                // first-written data; only alignment padding could go without a loss.
                assert_eq!(
                    back, msg,
                    "truncation to {n} decoded to a different message"
                );
                assert!(
                    bytes[n..].iter().all(|&b| b == 0),
                    "lost non-padding at {n}"
                );
            }
            check_any(cut);
        }
    }
}

#[test]
fn every_single_bit_flip_is_handled() {
    let mut decoded = 0usize;
    let mut rejected = 0usize;
    for msg in all_compact_messages() {
        let bytes = encode(&msg);
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            if check_any(&b) {
                decoded += 1;
            } else {
                rejected += 1;
            }
        }
    }
    // Flipped value bits decode (to other values); flipped offsets are caught. Both happen,
    // or the test is not exercising what it claims to.
    assert!(
        decoded > 1000 && rejected > 1000,
        "{decoded} decoded, {rejected} rejected"
    );
}

#[test]
fn thousands_of_multi_bit_flips_are_handled() {
    let mut rng = XorShift(0x0bad_f00d_dead_beef);
    let msgs = all_compact_messages();
    let mut rejected = 0usize;
    for round in 0..12_000 {
        let msg = &msgs[round % msgs.len()];
        let mut b = encode(msg);
        let flips = 2 + rng.below(16);
        for _ in 0..flips {
            let at = rng.below(b.len());
            b[at] ^= 1 << rng.below(8);
        }
        if !check_any(&b) {
            rejected += 1;
        }
    }
    assert!(rejected > 1000, "{rejected}");
}

#[test]
fn random_byte_overwrites_of_valid_buffers_are_handled() {
    // Random garbage in the middle of a valid buffer reaches deeper into the verifier than
    // fully random bytes, which mostly fail at the root offset.
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    let msgs = all_compact_messages();
    for round in 0..6_000 {
        let mut b = encode(&msgs[round % msgs.len()]);
        let start = rng.below(b.len());
        let end = (start + 1 + rng.below(16)).min(b.len());
        for x in &mut b[start..end] {
            *x = rng.next_u64() as u8;
        }
        check_any(&b);
    }
}

#[test]
fn thousands_of_random_byte_strings_are_handled() {
    let mut rng = XorShift(0xfeed_face_cafe_d00d);
    let mut rejected = 0usize;
    for round in 0..20_000 {
        let len = rng.below(if round % 10 == 0 { 4096 } else { 128 });
        let mut b: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        // Half the time, a root offset that lands inside the buffer, so verification gets past
        // the first check.
        if len >= 8 && round % 2 == 0 {
            let root = (4 + rng.below(len - 4)) as u32 & !3;
            b[..4].copy_from_slice(&root.to_le_bytes());
        }
        if !check_any(&b) {
            rejected += 1;
        }
    }
    assert!(rejected > 19_000, "{rejected}");
}

// ------------------------------------------------------------------------- crafted buffers

fn envelope(
    fbb: &mut FlatBufferBuilder<'_>,
    payload_type: fb::Payload,
    payload: Option<flatbuffers::WIPOffset<flatbuffers::UnionWIPOffset>>,
) -> Vec<u8> {
    let env = fb::Envelope::create(
        fbb,
        &fb::EnvelopeArgs {
            payload_type,
            payload,
        },
    );
    fbb.finish_minimal(env);
    fbb.finished_data().to_vec()
}

#[test]
fn envelope_without_payload_is_missing_payload() {
    let mut fbb = FlatBufferBuilder::new();
    let bytes = envelope(&mut fbb, fb::Payload::NONE, None);
    assert_eq!(decode(&bytes), Err(DecodeError::MissingPayload));
    assert_eq!(
        DecodeError::MissingPayload.to_string(),
        "envelope has no payload"
    );
}

#[test]
fn payload_type_without_payload_fails_verification() {
    let mut fbb = FlatBufferBuilder::new();
    let bytes = envelope(&mut fbb, fb::Payload::Ack, None);
    let err = decode(&bytes).expect_err("inconsistent union decoded");
    assert!(
        matches!(
            err,
            DecodeError::Invalid(InvalidFlatbuffer::InconsistentUnion { .. })
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("flatbuffers verification failed: "),
        "{err}"
    );
}

#[test]
fn unknown_payload_type_is_named() {
    // A newer peer's message: the table is there, the type is one we do not know.
    let mut fbb = FlatBufferBuilder::new();
    let ack = fb::Ack::create(
        &mut fbb,
        &fb::AckArgs {
            seq: 5,
            ..Default::default()
        },
    );
    let bytes = envelope(&mut fbb, fb::Payload(42), Some(ack.as_union_value()));
    let err = decode(&bytes).expect_err("unknown payload decoded");
    assert_eq!(err, DecodeError::UnknownPayload(42));
    assert_eq!(err.to_string(), "unknown payload type 42");
}

#[test]
fn unknown_reject_code_is_named() {
    let mut fbb = FlatBufferBuilder::new();
    let message = fbb.create_string("from the future");
    let r = fb::Reject::create(
        &mut fbb,
        &fb::RejectArgs {
            code: fb::RejectCode(200),
            message: Some(message),
        },
    );
    let bytes = envelope(&mut fbb, fb::Payload::Reject, Some(r.as_union_value()));
    let err = decode(&bytes).expect_err("unknown code decoded");
    assert_eq!(err, DecodeError::UnknownRejectCode(200));
    assert_eq!(err.to_string(), "unknown reject code 200");
}

#[test]
fn welcome_without_config_is_a_missing_field() {
    let mut fbb = FlatBufferBuilder::new();
    let id = fbb.create_string("0123456789abcdef0123456789abcdef");
    let w = fb::Welcome::create(
        &mut fbb,
        &fb::WelcomeArgs {
            client_id: Some(id),
            secret: None,
            welcome_back: true,
            config: None,
        },
    );
    let bytes = envelope(&mut fbb, fb::Payload::Welcome, Some(w.as_union_value()));
    let err = decode(&bytes).expect_err("welcome without config decoded");
    assert_eq!(err, DecodeError::MissingField("Welcome.config"));
    assert_eq!(err.to_string(), "missing required field Welcome.config");
}

#[test]
fn config_without_periods_is_a_missing_field() {
    let mut fbb = FlatBufferBuilder::new();
    let c = fb::Config::create(
        &mut fbb,
        &fb::ConfigArgs {
            periods: None,
            push_interval_ms: 1000,
            ..fb::ConfigArgs::default()
        },
    );
    let bytes = envelope(&mut fbb, fb::Payload::Config, Some(c.as_union_value()));
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::MissingField("Config.periods"))
    );

    let mut fbb = FlatBufferBuilder::new();
    let c = fb::Config::create(&mut fbb, &fb::ConfigArgs::default());
    let w = fb::Welcome::create(
        &mut fbb,
        &fb::WelcomeArgs {
            config: Some(c),
            ..fb::WelcomeArgs::default()
        },
    );
    let bytes = envelope(&mut fbb, fb::Payload::Welcome, Some(w.as_union_value()));
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::MissingField("Welcome.config.periods"))
    );
}

#[test]
fn invalid_utf8_in_a_string_fails_verification() {
    let mut b = encode(&Message::Reject(Reject {
        code: RejectCode::Busy,
        message: "busy!".into(),
    }));
    let at = b
        .windows(5)
        .position(|w| w == b"busy!")
        .unwrap_or_else(|| panic!("string not found in encoding"));
    b[at] = 0xff;
    let err = decode(&b).expect_err("bad utf-8 decoded");
    assert!(
        matches!(
            err,
            DecodeError::Invalid(InvalidFlatbuffer::Utf8Error { .. })
        ),
        "{err:?}"
    );
}

// ---------------------------------------------------------------------------------- limits

#[test]
fn default_limits_are_the_documented_ones() {
    let l = Limits::default();
    assert_eq!(l.max_bytes, 16 * 1024 * 1024);
    assert_eq!(l.max_depth, 16);
    assert_eq!(l.max_tables, 1_000_000);
    assert_eq!(l.max_apparent_size, 64 * 1024 * 1024);
}

#[test]
fn oversized_input_is_rejected_before_verification() {
    let bytes = encode(&Message::Batch(full_batch()));
    let limits = Limits {
        max_bytes: bytes.len() - 1,
        ..Limits::default()
    };
    let err = decode_with(&bytes, &limits).expect_err("oversized decoded");
    assert_eq!(
        err,
        DecodeError::TooLarge {
            len: bytes.len(),
            max: bytes.len() - 1
        }
    );
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
    // Exactly at the limit is fine.
    let at_limit = Limits {
        max_bytes: bytes.len(),
        ..Limits::default()
    };
    assert!(decode_with(&bytes, &at_limit).is_ok());

    // And the default limit: a 17 MiB buffer is refused whatever it holds.
    let huge = vec![0u8; 17 * 1024 * 1024];
    assert!(matches!(decode(&huge), Err(DecodeError::TooLarge { .. })));
}

#[test]
fn too_deep_input_is_rejected() {
    // Envelope -> Batch -> Snapshot -> Cpu is four tables deep; allow three.
    let bytes = encode(&Message::Batch(full_batch()));
    let shallow = Limits {
        max_depth: 3,
        ..Limits::default()
    };
    assert_eq!(
        decode_with(&bytes, &shallow),
        Err(DecodeError::Invalid(InvalidFlatbuffer::DepthLimitReached))
    );
    let enough = Limits {
        max_depth: 4,
        ..Limits::default()
    };
    assert!(decode_with(&bytes, &enough).is_ok());
}

#[test]
fn too_many_tables_are_rejected() {
    let bytes = encode(&Message::Batch(full_batch()));
    let few = Limits {
        max_tables: 10,
        ..Limits::default()
    };
    assert_eq!(
        decode_with(&bytes, &few),
        Err(DecodeError::Invalid(InvalidFlatbuffer::TooManyTables))
    );
}

#[test]
fn shared_subtrees_cannot_amplify_past_the_apparent_size_limit() {
    // A hostile batch: one big snapshot referenced 1000 times. The buffer stays small but
    // decoding it would build 1000 copies; the default apparent-size limit refuses it.
    let mut fbb = FlatBufferBuilder::new();
    let names: Vec<_> = (0..1000)
        .map(|i| fbb.create_string(&format!("{i:0>60}")))
        .collect();
    let temps: Vec<_> = names
        .iter()
        .map(|&n| {
            fb::Temp::create(
                &mut fbb,
                &fb::TempArgs {
                    sensor: Some(n),
                    temp: 1.0,
                },
            )
        })
        .collect();
    let temp = fbb.create_vector(&temps);
    let snap = fb::Snapshot::create(
        &mut fbb,
        &fb::SnapshotArgs {
            temp: Some(temp),
            ..fb::SnapshotArgs::default()
        },
    );
    let snaps = fbb.create_vector(&vec![snap; 1000]);
    let batch = fb::Batch::create(
        &mut fbb,
        &fb::BatchArgs {
            seq: 1,
            snapshots: Some(snaps),
            ..Default::default()
        },
    );
    let bytes = envelope(&mut fbb, fb::Payload::Batch, Some(batch.as_union_value()));
    assert!(bytes.len() < 1024 * 1024, "{}", bytes.len());
    assert_eq!(
        decode(&bytes),
        Err(DecodeError::Invalid(
            InvalidFlatbuffer::ApparentSizeTooLarge
        ))
    );
}

#[test]
fn a_realistic_batch_fits_the_default_limits_with_room() {
    let batch = Batch {
        seq: 1,
        snapshots: (0..360).map(full_snapshot).collect(),
        ..Batch::default()
    };
    let msg = Message::Batch(batch);
    let bytes = encode(&msg);
    assert_eq!(decode(&bytes).as_ref(), Ok(&msg));
}
