//! Property tests over what arrives from the wire: no input makes the frame
//! reader or the manifest checks panic, and memory stays bounded.

use proptest::prelude::*;
use snapsite::base::model::{MANIFEST_FORMAT, Manifest, Member, SetKind, new_set_id};
use snapsite::wire::stream::{Frame, MAGIC, MAX_MESSAGE_FRAME, Msg, Reader, Writer};

fn ts(secs: i64, nanos: i32) -> jiff::Timestamp {
    jiff::Timestamp::new(secs, nanos).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

fn any_time() -> impl Strategy<Value = jiff::Timestamp> {
    prop_oneof![
        (-377705116800i64..=253402207200i64, 0i32..1_000_000_000).prop_map(|(s, n)| ts(s, n)),
        Just(jiff::Timestamp::MIN),
        Just(jiff::Timestamp::MAX),
        (1_700_000_000i64..1_900_000_000i64).prop_map(|s| ts(s, 0)),
    ]
}

fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,8}",
        ".{0,40}",
        Just("redolog".to_string()),
        Just("../../etc".to_string()),
        Just("a\nb\u{1b}[31m".to_string()),
    ]
}

fn any_member() -> impl Strategy<Value = Member> {
    (
        any_string(),
        any_string(),
        any_time(),
        any_time(),
        any::<Option<u32>>(),
    )
        .prop_map(|(role, snapshot, before, after, atomic_group)| Member {
            role,
            backend: "btrfs".into(),
            source: "/x".into(),
            snapshot,
            storage_id: None,
            before,
            after,
            atomic_group,
            send_options: Vec::new(),
            receipt: None,
            consistency: None,
        })
}

fn any_manifest() -> impl Strategy<Value = Manifest> {
    (
        prop_oneof![
            any_string(),
            any_time().prop_map(|t| new_set_id(t, SetKind::Full)),
            any_time().prop_map(|t| new_set_id(t, SetKind::Redolog)),
        ],
        any::<bool>(),
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(any_member(), 0..6),
        prop_oneof![any::<i64>(), Just(i64::MAX), Just(i64::MIN), 0i64..10_000],
        any::<u32>(),
    )
        .prop_map(
            |(id, full, seq, generation, members, margin, format)| Manifest {
                format: if format % 2 == 0 {
                    MANIFEST_FORMAT
                } else {
                    format
                },
                id,
                kind: if full {
                    SetKind::Full
                } else {
                    SetKind::Redolog
                },
                site: "p".into(),
                seq,
                generation,
                members,
                safety_margin_ms: margin,
                committed_at: None,
                standby_order: None,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn manifest_checks_never_panic(m in any_manifest()) {
        let ok = m.validate_shape().is_ok();
        let _ = m.from_time();
        let _ = m.completed_time();
        let _ = m.skew();
        let _ = m.from_time_with_margin(i64::MAX);
        if ok {
            // A valid manifest's times are in range: from_time is exact.
            let earliest = m.members.iter().map(|x| x.before).min().unwrap();
            prop_assert!(m.from_time() <= earliest);
            prop_assert!(earliest.duration_since(m.from_time()).as_millis() as i64 == m.safety_margin_ms);
        }
    }

    #[test]
    fn frame_reader_never_panics_on_garbage(body in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&body);
        let mut r = Reader::new(&bytes[..]);
        r.magic().unwrap();
        let mut n = 0;
        while let Ok(Some(_)) = r.next_frame() {
            n += 1;
            prop_assert!(n < 10_000);
        }
    }

    #[test]
    fn mutated_sessions_never_panic(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)
    ) {
        let mut w = Writer::new(Vec::new());
        w.magic().unwrap();
        w.msg(&Msg::Hello { protocol: 2, site: "p".into(), version: "x".into(), since: None }).unwrap();
        w.data(&[1, 2, 3]).unwrap();
        w.msg(&Msg::End { bytes: 3, blake3: "ab".into() }).unwrap();
        let mut bytes = w.into_inner();
        let clean = bytes.clone();
        for (at, x) in flips {
            let i = 8 + at % (bytes.len() - 8);
            bytes[i] ^= x | 1;
        }
        let mut r = Reader::new(&bytes[..]);
        r.magic().unwrap();
        let mut frames = Vec::new();
        let mut failed = false;
        loop {
            match r.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(_) => { failed = true; break; }
            }
        }
        // Whatever passes the checks decodes to the very messages sent
        // (only the data payload is left to the snapshot's blake3).
        if !failed && bytes != clean {
            for f in &frames {
                if let Frame::Msg(m) = f {
                    let same = matches!(m, Msg::Hello { site, .. } if site == "p")
                        || matches!(m, Msg::End { bytes: 3, blake3 } if blake3 == "ab");
                    prop_assert!(same, "a corrupted message passed the checks");
                }
            }
        }
    }
}

#[test]
fn an_oversized_frame_is_refused_before_allocation() {
    let mut bytes = MAGIC.to_vec();
    // A message frame claiming 4 GiB: refused by the header check or the bound.
    bytes.extend_from_slice(&[b'M', 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    let mut r = Reader::new(&bytes[..]);
    r.magic().unwrap();
    assert!(r.next_frame().is_err());
    const { assert!(MAX_MESSAGE_FRAME <= 16 << 20) };
}
