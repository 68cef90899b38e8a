//! Malformed payloads for every error variant, stream-state rules, and property tests that
//! arbitrary or mutated bytes never make the decoder panic.

use super::*;

fn err(version: u32, in_stream: bool, payload: &[u8]) -> DecodeError {
    let mut d = Decoder::new(version);
    if in_stream {
        d.decode(&[b'S', 0, 0, 0, 9, 1]).expect("stream start");
    }
    let e = d.decode(payload).expect_err("must fail");
    assert_eq!(
        d.in_stream(),
        in_stream,
        "failed decode changed the stream state"
    );
    e
}

fn invalid_what(e: DecodeError) -> &'static str {
    match e {
        DecodeError::Invalid { what, .. } => what,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn error_empty_and_unknown_tag() {
    assert_eq!(err(1, false, b""), DecodeError::Empty);
    assert_eq!(err(1, false, b"Z"), DecodeError::UnknownTag(b'Z'));
    // Protocol 3 two-phase messages are not decoded.
    for tag in [b'b', b'P', b'K', b'r', b'p'] {
        assert_eq!(err(3, false, &[tag, 0, 0]), DecodeError::UnknownTag(tag));
    }
}

#[test]
fn error_truncated() {
    assert_eq!(
        err(1, false, &[b'B', 0, 0, 0, 0]),
        DecodeError::Truncated {
            tag: 'B',
            offset: 1,
            needed: 4
        }
    );
    // A string without its NUL.
    assert_eq!(
        err(1, false, b"O\0\0\0\0\0\0\0\x01abc"),
        DecodeError::Truncated {
            tag: 'O',
            offset: 12,
            needed: 1
        }
    );
    // Text datum claiming more bytes than present.
    let mut p = b"I\0\0\x40\x07N\0\x01t\0\0\0\x05ab".to_vec();
    assert_eq!(
        err(1, false, &p),
        DecodeError::Truncated {
            tag: 'I',
            offset: 13,
            needed: 3
        }
    );
    // Huge claimed counts fail fast instead of allocating.
    assert!(matches!(
        err(1, false, b"T\x7f\xff\xff\xff\0\0\0\0\x01"),
        DecodeError::Truncated { tag: 'T', .. }
    ));
    p = b"I\0\0\x40\x07N\x7f\xff".to_vec();
    assert!(matches!(
        err(1, false, &p),
        DecodeError::Truncated {
            tag: 'I',
            offset: 8,
            needed: 1
        }
    ));
    assert!(matches!(
        err(2, true, b"R\0\0\0\x09\0\0\0\x01s\0t\0d\x7f\xff"),
        DecodeError::Truncated { tag: 'R', .. }
    ));
}

#[test]
fn error_trailing() {
    assert_eq!(
        err(2, true, b"E\0"),
        DecodeError::Trailing { tag: 'E', extra: 1 }
    );
    let commit = [&b"C"[..], &[0u8; 25], b"xy"].concat();
    assert_eq!(
        err(1, false, &commit),
        DecodeError::Trailing { tag: 'C', extra: 2 }
    );
}

#[test]
fn error_bad_utf8() {
    // 0xff is never valid UTF-8.
    assert_eq!(
        invalid_what(err(1, false, b"I\0\0\x40\x07N\0\x01t\0\0\0\x02a\xff")),
        "text value"
    );
    assert_eq!(
        invalid_what(err(1, false, b"R\0\0\0\x09s\0\xc3\0d\0\0")),
        "relation name"
    );
    assert_eq!(
        invalid_what(err(1, false, b"M\x01\0\0\0\0\0\0\0\x01\xfe\0\0\0\0\0")),
        "message prefix"
    );
}

#[test]
fn error_negative_lengths_and_bad_enums() {
    assert_eq!(
        invalid_what(err(1, false, b"I\0\0\x40\x07N\0\x01t\xff\xff\xff\xff")),
        "text value length"
    );
    assert_eq!(
        invalid_what(err(1, false, b"I\0\0\x40\x07N\0\x01b\x80\0\0\0")),
        "binary value length"
    );
    assert_eq!(
        invalid_what(err(1, false, b"I\0\0\x40\x07N\xff\xff")),
        "column count"
    );
    assert_eq!(
        invalid_what(err(1, false, b"R\0\0\0\x09s\0t\0d\xff\xfe")),
        "column count"
    );
    assert_eq!(
        invalid_what(err(2, true, b"T\0\0\0\x01\xff\xff\xff\xff\0")),
        "relation count"
    );
    assert_eq!(
        invalid_what(err(1, false, b"M\x01\0\0\0\0\0\0\0\x01p\0\xff\xff\xff\xff")),
        "message length"
    );
    assert_eq!(
        invalid_what(err(1, false, b"I\0\0\x40\x07N\0\x01x")),
        "column kind"
    );
    assert_eq!(
        invalid_what(err(1, false, b"I\0\0\x40\x07K\0\0")),
        "tuple kind"
    );
    assert_eq!(invalid_what(err(1, false, b"U\0\0\x40\x07X")), "tuple kind");
    assert_eq!(
        invalid_what(err(1, false, b"U\0\0\x40\x07K\0\0K\0\0")),
        "tuple kind"
    );
    assert_eq!(
        invalid_what(err(1, false, b"D\0\0\x40\x07N\0\0")),
        "tuple kind"
    );
    assert_eq!(
        invalid_what(err(1, false, b"R\0\0\0\x09s\0t\0x\0\0")),
        "replica identity"
    );
    assert_eq!(
        invalid_what(err(2, false, b"S\0\0\0\x09\x02")),
        "first-segment flag"
    );
}

#[test]
fn stream_state_rules() {
    // Stream messages do not exist in protocol 1.
    assert_eq!(invalid_what(err(1, false, b"S\0\0\0\x09\x01")), "message");
    assert_eq!(invalid_what(err(1, false, b"E")), "message");
    // Order: no Stop without Start, no nesting, no Begin/Commit/stream end inside a block.
    assert_eq!(invalid_what(err(2, false, b"E")), "message order");
    assert_eq!(
        invalid_what(err(2, true, b"S\0\0\0\x09\x00")),
        "message order"
    );
    assert_eq!(
        invalid_what(err(2, true, &[&b"B"[..], &[0u8; 20]].concat())),
        "message order"
    );
    assert_eq!(
        invalid_what(err(2, true, &[&b"C"[..], &[0u8; 25]].concat())),
        "message order"
    );
    assert_eq!(
        invalid_what(err(2, true, &[&b"c"[..], &[0u8; 29]].concat())),
        "message order"
    );
    assert_eq!(
        invalid_what(err(2, true, b"A\0\0\0\x09\0\0\0\x09")),
        "message order"
    );

    let mut d = Decoder::new(2);
    let ty = b"Y\0\0\0\x07\0\0\0\x2a\0mood\0";
    // Outside a block the first four bytes are the oid, then two empty strings and 8 extra bytes.
    assert_eq!(
        d.decode(ty),
        Err(DecodeError::Trailing { tag: 'Y', extra: 8 }),
        "outside a block there is no xid"
    );
    assert_eq!(
        d.decode(b"S\0\0\0\x07\x01"),
        Ok(LogicalMessage::StreamStart {
            xid: 7,
            first_segment: true
        })
    );
    assert!(d.in_stream());
    assert_eq!(
        d.decode(ty),
        Ok(LogicalMessage::Type {
            xid: Some(7),
            oid: 42,
            namespace: "pg_catalog".into(),
            name: "mood".into()
        })
    );
    // Inside: xid 7, oid 42, and an empty namespace is pg_catalog.
    // Origin never carries an xid, even inside a block.
    assert_eq!(
        d.decode(b"O\0\0\0\0\0\0\0\x05o\0"),
        Ok(LogicalMessage::Origin {
            commit_lsn: Lsn(5),
            name: "o".into()
        })
    );
    assert_eq!(d.decode(b"E"), Ok(LogicalMessage::StreamStop));
    assert!(!d.in_stream());
}

#[test]
fn stream_abort_v4_extra_fields() {
    let abort = b"A\0\0\0\x09\0\0\0\x0a";
    let with_info = [&abort[..], &[0u8; 16]].concat();
    let ok = Ok(LogicalMessage::StreamAbort { xid: 9, subxid: 10 });
    for v in 2..=4 {
        assert_eq!(Decoder::new(v).decode(abort), ok, "v{v} short form");
    }
    assert_eq!(Decoder::new(4).decode(&with_info), ok);
    for v in 2..=3 {
        assert_eq!(
            Decoder::new(v).decode(&with_info),
            Err(DecodeError::Trailing {
                tag: 'A',
                extra: 16
            })
        );
    }
    assert_eq!(
        Decoder::new(4).decode(&with_info[..with_info.len() - 8]),
        Err(DecodeError::Truncated {
            tag: 'A',
            offset: 17,
            needed: 8
        })
    );
    let too_long = [&with_info[..], b"!"].concat();
    assert_eq!(
        Decoder::new(4).decode(&too_long),
        Err(DecodeError::Trailing { tag: 'A', extra: 1 })
    );
}

/// Decoders of every protocol version, outside and inside a stream block.
fn decoders() -> Vec<Decoder> {
    let mut all = Vec::new();
    for v in 1..=4 {
        all.push(Decoder::new(v));
        if v >= 2 {
            let mut d = Decoder::new(v);
            d.decode(&[b'S', 0, 0, 0, 1, 1]).expect("stream start");
            all.push(d);
        }
    }
    all
}

fn decode_everywhere(payload: &[u8]) {
    for mut d in decoders() {
        let before = d.in_stream();
        if d.decode(payload).is_err() {
            assert_eq!(d.in_stream(), before);
        }
    }
}

fn captured() -> Vec<Vec<u8>> {
    FIXTURES.iter().flat_map(|(_, f)| payloads(f)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        decode_everywhere(&payload);
    }

    #[test]
    fn known_tag_with_arbitrary_body_never_panics(
        tag in proptest::sample::select(b"BCORYIUDTMSEcA".to_vec()),
        body in proptest::collection::vec(any::<u8>(), 0..96),
    ) {
        let payload = [&[tag][..], &body].concat();
        decode_everywhere(&payload);
    }

    #[test]
    fn mutated_captured_payloads_never_panic(
        pick in any::<proptest::sample::Index>(),
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<proptest::sample::Index>(),
        tail in proptest::collection::vec(any::<u8>(), 0..3),
    ) {
        let all = captured();
        let mut p = all[pick.index(all.len())].clone();
        for (at, byte) in edits {
            let i = at.index(p.len());
            p[i] = byte;
        }
        p.truncate(cut.index(p.len() + 1));
        p.extend_from_slice(&tail);
        decode_everywhere(&p);
    }
}
