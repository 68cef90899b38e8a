//! Decoder tests on payloads captured from PostgreSQL 15 (`tests/data/pgoutput/`); the
//! malformed-input and property tests are in `malformed.rs`.

use super::*;
use proptest::prelude::*;

const V1: &str = include_str!("../../../../tests/data/pgoutput/v1.hex");
const V1_BINARY: &str = include_str!("../../../../tests/data/pgoutput/v1_binary.hex");
const V2_STREAM: &str = include_str!("../../../../tests/data/pgoutput/v2_stream.hex");
const V2_STREAM_ORIGIN: &str = include_str!("../../../../tests/data/pgoutput/v2_stream_origin.hex");

/// (protocol version, fixture) for every captured sequence.
const FIXTURES: [(u32, &str); 4] = [
    (1, V1),
    (1, V1_BINARY),
    (2, V2_STREAM),
    (2, V2_STREAM_ORIGIN),
];

const OID_T: u32 = 16391;
const OID_T2: u32 = 16398;
const OID_T3: u32 = 16404;
const OID_MOOD: u32 = 16385;
/// 2020-01-01 00:00:00 UTC in PostgreSQL microseconds: captured commit times are later.
const TS_2020: PgTimestamp = 631_152_000_000_000;

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// One payload per non-comment line.
fn payloads(fixture: &str) -> Vec<Vec<u8>> {
    fixture
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(unhex)
        .collect()
}

fn decode_all(version: u32, fixture: &str) -> Vec<LogicalMessage> {
    let mut d = Decoder::new(version);
    payloads(fixture)
        .iter()
        .enumerate()
        .map(|(i, p)| d.decode(p).unwrap_or_else(|e| panic!("payload {i}: {e}")))
        .collect()
}

fn text(s: &str) -> Datum {
    Datum::Text(s.to_string())
}

fn texts(vals: &[Option<&str>]) -> Tuple {
    vals.iter().map(|v| v.map_or(Datum::Null, text)).collect()
}

fn nulls(n: usize) -> impl Iterator<Item = Datum> {
    std::iter::repeat_n(Datum::Null, n)
}

fn col(name: &str, type_oid: u32, is_key: bool, type_modifier: i32) -> RelationColumn {
    RelationColumn {
        is_key,
        name: name.to_string(),
        type_oid,
        type_modifier,
    }
}

fn rel_t2(xid: Option<u32>) -> LogicalMessage {
    LogicalMessage::Relation {
        xid,
        body: RelationBody {
            oid: OID_T2,
            namespace: "public".into(),
            name: "t2".into(),
            replica_identity: b'f',
            // REPLICA IDENTITY FULL: the server flags every column as key.
            columns: vec![col("a", 23, true, -1), col("b", 25, true, -1)],
        },
    }
}

fn rel_t3(xid: Option<u32>) -> LogicalMessage {
    LogicalMessage::Relation {
        xid,
        body: RelationBody {
            oid: OID_T3,
            namespace: "public".into(),
            name: "t3".into(),
            replica_identity: b'd',
            columns: vec![col("id", 23, true, -1), col("v", 25, false, -1)],
        },
    }
}

fn insert_t3(xid: Option<u32>, id: &str, v: &str) -> LogicalMessage {
    LogicalMessage::Insert {
        xid,
        rel: OID_T3,
        new: vec![text(id), text(v)],
    }
}

/// Checks every Begin/Commit pair: same LSN and timestamp, plausible values. Returns the xids.
fn check_transactions(msgs: &[LogicalMessage]) -> Vec<u32> {
    let mut open: Option<(Lsn, PgTimestamp, u32)> = None;
    let mut xids = Vec::new();
    for m in msgs {
        match *m {
            LogicalMessage::Begin {
                final_lsn,
                commit_ts,
                xid,
            } => {
                assert!(open.is_none(), "nested Begin");
                assert!(final_lsn > Lsn::ZERO && xid > 2);
                open = Some((final_lsn, commit_ts, xid));
                xids.push(xid);
            }
            LogicalMessage::Commit {
                flags,
                commit_lsn,
                end_lsn,
                commit_ts,
            } => {
                let (final_lsn, ts, _) = open.take().expect("Commit without Begin");
                assert_eq!(flags, 0);
                assert_eq!(commit_lsn, final_lsn);
                assert!(end_lsn > commit_lsn);
                assert_eq!(commit_ts, ts);
                assert!(commit_ts > TS_2020);
            }
            _ => {}
        }
    }
    assert!(open.is_none(), "unterminated transaction");
    xids
}

#[test]
fn captured_v1_every_message_type() {
    let m = decode_all(1, V1);
    assert_eq!(m.len(), 43);
    let xids = check_transactions(&m);
    assert_eq!(
        xids,
        (732..=742).collect::<Vec<_>>(),
        "one xid per transaction, in order"
    );

    // Transaction 1: Type for the enum, Relation for t, two inserts.
    assert!(matches!(
        m[0],
        LogicalMessage::Begin {
            final_lsn: Lsn(0x1538d20),
            xid: 732,
            ..
        }
    ));
    assert_eq!(
        m[1],
        LogicalMessage::Type {
            xid: None,
            oid: OID_MOOD,
            namespace: "public".into(),
            name: "mood".into()
        }
    );
    let LogicalMessage::Relation { xid: None, body } = &m[2] else {
        panic!("{:?}", m[2])
    };
    assert_eq!(
        (body.oid, body.namespace.as_str(), body.name.as_str()),
        (OID_T, "public", "t")
    );
    assert_eq!(body.replica_identity, b'd');
    let expected_columns = [
        col("id", 23, true, -1),
        col("big", 20, false, -1),
        col("num", 1700, false, (12 << 16 | 3) + 4), // numeric(12,3)
        col("txt", 25, false, -1),
        col("bin", 17, false, -1),
        col("js", 3802, false, -1),
        col("ts", 1184, false, -1),
        col("u", 2950, false, -1),
        col("arr", 1007, false, -1),
        col("m", OID_MOOD, false, -1),
        col("toast", 25, false, -1),
    ];
    assert_eq!(body.columns, expected_columns);

    let toasted = "T".repeat(3000);
    let mut row1 = texts(&[
        Some("1"),
        Some("9007199254740993"),
        Some("12345.678"),
        Some("héllo wörld ✓ 日本"),
        Some("\\xdeadbeef00"),
        Some(r#"{"k": [1, 2, {"z": null}]}"#),
        Some("2024-02-29 13:14:15.123456+00"),
        Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        Some("{1,NULL,3}"),
        Some("happy"),
        Some(&toasted),
    ]);
    assert_eq!(
        m[3],
        LogicalMessage::Insert {
            xid: None,
            rel: OID_T,
            new: row1.clone()
        }
    );
    let row2: Tuple = std::iter::once(text("2")).chain(nulls(10)).collect();
    assert_eq!(
        m[4],
        LogicalMessage::Insert {
            xid: None,
            rel: OID_T,
            new: row2.clone()
        }
    );
    assert!(matches!(
        m[5],
        LogicalMessage::Commit {
            commit_lsn: Lsn(0x1538d20),
            end_lsn: Lsn(0x1538d50),
            ..
        }
    ));

    // UPDATE that leaves the TOASTed column alone: no old tuple, 'u' for that column.
    row1[1] = text("9007199254740994");
    row1[10] = Datum::Unchanged;
    assert_eq!(
        m[7],
        LogicalMessage::Update {
            xid: None,
            rel: OID_T,
            old: None,
            new: row1
        }
    );

    // Key-changing UPDATE: old 'K' tuple with only the key set.
    let row10: Tuple = std::iter::once(text("10")).chain(nulls(10)).collect();
    assert_eq!(
        m[10],
        LogicalMessage::Update {
            xid: None,
            rel: OID_T,
            old: Some((OldKind::Key, row2)),
            new: row10.clone()
        }
    );

    // REPLICA IDENTITY FULL table: old 'O' tuples.
    assert_eq!(m[13], rel_t2(None));
    assert_eq!(
        m[14],
        LogicalMessage::Insert {
            xid: None,
            rel: OID_T2,
            new: texts(&[Some("7"), Some("seven")])
        }
    );
    assert_eq!(
        m[17],
        LogicalMessage::Update {
            xid: None,
            rel: OID_T2,
            old: Some((OldKind::Full, texts(&[Some("7"), Some("seven")]))),
            new: texts(&[Some("7"), Some("SEVEN")]),
        }
    );
    assert_eq!(
        m[20],
        LogicalMessage::Delete {
            xid: None,
            rel: OID_T2,
            old: (OldKind::Full, texts(&[Some("7"), Some("SEVEN")]))
        }
    );
    assert_eq!(
        m[23],
        LogicalMessage::Delete {
            xid: None,
            rel: OID_T,
            old: (OldKind::Key, row10)
        }
    );

    // Truncates: the Relation is re-sent first; CASCADE | RESTART IDENTITY = 3.
    assert_eq!(m[26], rel_t2(None));
    assert_eq!(
        m[27],
        LogicalMessage::Truncate {
            xid: None,
            options: 0,
            rels: vec![OID_T2]
        }
    );
    assert_eq!(m[30], rel_t3(None));
    assert_eq!(m[31], rel_t2(None));
    assert_eq!(
        m[32],
        LogicalMessage::Truncate {
            xid: None,
            options: 3,
            rels: vec![OID_T3, OID_T2]
        }
    );

    // Logical messages: the non-transactional one arrives outside any Begin/Commit.
    assert_eq!(
        m[35],
        LogicalMessage::Message {
            xid: None,
            transactional: true,
            lsn: Lsn(0x153b418),
            prefix: "pfx".into(),
            content: Bytes::from_static(b"hello"),
        }
    );
    assert!(matches!(m[36], LogicalMessage::Commit { .. }));
    assert_eq!(
        m[37],
        LogicalMessage::Message {
            xid: None,
            transactional: false,
            lsn: Lsn(0x153b488),
            prefix: "nontx".into(),
            content: Bytes::from_static(&[0x00, 0xff, 0x01]),
        }
    );

    // Replication origin: Begin carries the origin's commit time, Origin its LSN and name.
    assert!(matches!(
        m[38],
        LogicalMessage::Begin {
            commit_ts: 757_382_400_000_000,
            xid: 742,
            ..
        }
    ));
    assert_eq!(
        m[39],
        LogicalMessage::Origin {
            commit_lsn: Lsn(0xabcdef),
            name: "origin_a".into()
        }
    );
    assert_eq!(m[40], rel_t2(None));
    assert_eq!(
        m[41],
        LogicalMessage::Insert {
            xid: None,
            rel: OID_T2,
            new: texts(&[Some("8"), None])
        }
    );
}

#[test]
fn captured_v1_binary_values() {
    let m = decode_all(1, V1_BINARY);
    assert_eq!(m.len(), 6);
    check_transactions(&m);
    let LogicalMessage::Insert {
        xid: None,
        rel: OID_T,
        new,
    } = &m[3]
    else {
        panic!("{:?}", m[3])
    };
    let bin = |b: &[u8]| Datum::Binary(Bytes::copy_from_slice(b));
    let mut jsonb = vec![1u8]; // jsonb binary format version
    jsonb.extend_from_slice(br#"{"k": [1, 2, {"z": null}]}"#);
    let uuid = unhex("a0eebc999c0b4ef8bb6d6bb9bd380a11");
    // int4[] send format: ndim 1, has-nulls 1, elem oid 23, dim 3, lbound 1, then 1, NULL, 3.
    let arr =
        unhex("00000001000000010000001700000003000000010000000400000001ffffffff0000000400000003");
    let expected = vec![
        bin(&1i32.to_be_bytes()),
        bin(&9_007_199_254_740_993i64.to_be_bytes()),
        bin(&unhex("0003000100000003000109291a7c")), // numeric: 3 digits, weight 1, scale 3
        bin("héllo wörld ✓ 日本".as_bytes()),
        bin(&[0xde, 0xad, 0xbe, 0xef, 0x00]),
        bin(&jsonb),
        // 2024-02-29 13:14:15.123456 UTC in microseconds since 2000-01-01.
        bin(&762_527_655_123_456i64.to_be_bytes()),
        bin(&uuid),
        bin(&arr),
        bin(b"happy"),
        bin("T".repeat(3000).as_bytes()),
    ];
    assert_eq!(new, &expected);
    let row2: Tuple = std::iter::once(bin(&2i32.to_be_bytes()))
        .chain(nulls(10))
        .collect();
    assert_eq!(
        m[4],
        LogicalMessage::Insert {
            xid: None,
            rel: OID_T,
            new: row2
        }
    );
}

#[test]
fn captured_v2_stream_blocks() {
    let m = decode_all(2, V2_STREAM);
    assert_eq!(m.len(), 50);
    check_transactions(&m);

    // Outside stream blocks v2 looks exactly like v1: no xid prefix.
    assert!(matches!(m[0], LogicalMessage::Begin { xid: 0x2e7, .. }));
    assert_eq!(m[1], rel_t3(None));
    assert_eq!(m[2], insert_t3(None, "1", "small"));

    // Every data message inside a block carries an xid; none outside.
    let mut in_block: Option<u32> = None;
    for (i, msg) in m.iter().enumerate() {
        let data_xid = match msg {
            LogicalMessage::StreamStart { xid, .. } => {
                assert!(in_block.replace(*xid).is_none(), "{i}: nested StreamStart");
                continue;
            }
            LogicalMessage::StreamStop => {
                assert!(in_block.take().is_some(), "{i}: StreamStop outside a block");
                continue;
            }
            LogicalMessage::Relation { xid, .. }
            | LogicalMessage::Type { xid, .. }
            | LogicalMessage::Insert { xid, .. }
            | LogicalMessage::Update { xid, .. }
            | LogicalMessage::Delete { xid, .. }
            | LogicalMessage::Truncate { xid, .. }
            | LogicalMessage::Message { xid, .. } => *xid,
            _ => {
                assert!(in_block.is_none(), "{i}: {msg:?} inside a stream block");
                continue;
            }
        };
        assert_eq!(data_xid.is_some(), in_block.is_some(), "{i}: {msg:?}");
    }

    // Large committed transaction 0x2e8: three blocks, then Stream Commit.
    assert_eq!(
        m[4],
        LogicalMessage::StreamStart {
            xid: 0x2e8,
            first_segment: true
        }
    );
    assert_eq!(m[5], rel_t3(Some(0x2e8)));
    assert_eq!(m[6], insert_t3(Some(0x2e8), "2", "c1"));
    assert_eq!(m[8], LogicalMessage::StreamStop);
    assert_eq!(
        m[9],
        LogicalMessage::StreamStart {
            xid: 0x2e8,
            first_segment: false
        }
    );
    assert_eq!(m[10], insert_t3(Some(0x2e8), "482", "c481"));
    assert_eq!(
        m[16],
        LogicalMessage::Message {
            xid: Some(0x2e8),
            transactional: true,
            lsn: Lsn(0x1562f30),
            prefix: "inside".into(),
            content: Bytes::from_static(b"streamed"),
        }
    );
    assert_eq!(
        m[17],
        LogicalMessage::Update {
            xid: Some(0x2e8),
            rel: OID_T3,
            old: None,
            new: texts(&[Some("2"), Some("upd")])
        }
    );
    assert_eq!(
        m[18],
        LogicalMessage::Delete {
            xid: Some(0x2e8),
            rel: OID_T3,
            old: (OldKind::Key, texts(&[Some("3"), None]))
        }
    );
    assert_eq!(m[19], rel_t2(Some(0x2e8)));
    assert_eq!(
        m[20],
        LogicalMessage::Truncate {
            xid: Some(0x2e8),
            options: 0,
            rels: vec![OID_T2]
        }
    );
    assert_eq!(m[21], LogicalMessage::StreamStop);
    let LogicalMessage::StreamCommit {
        xid: 0x2e8,
        flags: 0,
        commit_lsn,
        end_lsn,
        commit_ts,
    } = m[22]
    else {
        panic!("{:?}", m[22])
    };
    assert_eq!((commit_lsn, end_lsn), (Lsn(0x1563888), Lsn(0x1563998)));
    assert!(commit_ts > TS_2020);

    // Rolled-back top-level transaction: abort with subxid == xid.
    assert_eq!(
        m[23],
        LogicalMessage::StreamStart {
            xid: 0x2e9,
            first_segment: true
        }
    );
    assert_eq!(m[25], insert_t3(Some(0x2e9), "1202", "r1"));
    assert_eq!(
        m[32],
        LogicalMessage::StreamAbort {
            xid: 0x2e9,
            subxid: 0x2e9
        }
    );

    // Aborted subtransaction: its changes carry the SUBtransaction's xid, not the block's.
    assert_eq!(
        m[33],
        LogicalMessage::StreamStart {
            xid: 0x2ea,
            first_segment: true
        }
    );
    assert_eq!(m[39], insert_t3(Some(0x2ea), "2882", "s481"));
    assert_eq!(m[41], insert_t3(Some(0x2eb), "3102", "x1"));
    assert_eq!(m[43], LogicalMessage::StreamStop);
    assert_eq!(
        m[44],
        LogicalMessage::StreamAbort {
            xid: 0x2ea,
            subxid: 0x2eb
        }
    );
    assert_eq!(
        m[45],
        LogicalMessage::StreamStart {
            xid: 0x2ea,
            first_segment: false
        }
    );
    assert_eq!(m[46], rel_t3(Some(0x2ec)));
    assert_eq!(m[47], insert_t3(Some(0x2ec), "3802", "after"));
    assert!(matches!(
        m[49],
        LogicalMessage::StreamCommit {
            xid: 0x2ea,
            flags: 0,
            ..
        }
    ));
}

#[test]
fn captured_v2_stream_with_origin() {
    let m = decode_all(2, V2_STREAM_ORIGIN);
    assert_eq!(m.len(), 11);
    assert_eq!(
        m[0],
        LogicalMessage::StreamStart {
            xid: 0x2f9,
            first_segment: true
        }
    );
    // Inside the block yet without an xid; the origin LSN is not sent here (0).
    assert_eq!(
        m[1],
        LogicalMessage::Origin {
            commit_lsn: Lsn(0),
            name: "origin_a".into()
        }
    );
    assert_eq!(m[2], rel_t3(Some(0x2f9)));
    assert_eq!(m[3], insert_t3(Some(0x2f9), "3803", "o1"));
    assert_eq!(m[5], LogicalMessage::StreamStop);
    // Later segments repeat neither the Origin nor the Relation.
    assert_eq!(
        m[6],
        LogicalMessage::StreamStart {
            xid: 0x2f9,
            first_segment: false
        }
    );
    assert_eq!(m[7], insert_t3(Some(0x2f9), "4283", "o481"));
    assert_eq!(m[9], LogicalMessage::StreamStop);
    assert_eq!(
        m[10],
        LogicalMessage::StreamCommit {
            xid: 0x2f9,
            flags: 0,
            commit_lsn: Lsn(0x161ad40),
            end_lsn: Lsn(0x161ad88),
            commit_ts: 757_382_400_000_000, // the origin's commit time, 2024-01-01
        }
    );
}

/// Every strict prefix of every captured payload is Truncated (or Empty), every payload with
/// one extra byte is Trailing, and a failed decode leaves the stream state as it was.
#[test]
fn captured_prefixes_truncate_and_suffixes_trail() {
    for (version, fixture) in FIXTURES {
        let mut d = Decoder::new(version);
        for p in payloads(fixture) {
            let before = d.in_stream();
            for cut in 0..p.len() {
                let got = d.clone().decode(&p[..cut]);
                match (cut, got) {
                    (0, Err(DecodeError::Empty)) => {}
                    (
                        _,
                        Err(DecodeError::Truncated {
                            tag,
                            offset,
                            needed,
                        }),
                    ) => {
                        assert_eq!(tag, char::from(p[0]));
                        assert!(
                            offset <= cut && needed > 0,
                            "{cut}: offset {offset} needed {needed}"
                        );
                    }
                    (_, other) => panic!("prefix {cut} of {p:02x?}: {other:?}"),
                }
            }
            let mut longer = p.clone();
            longer.push(0);
            let mut probe = d.clone();
            assert_eq!(
                probe.decode(&longer),
                Err(DecodeError::Trailing {
                    tag: char::from(p[0]),
                    extra: 1
                })
            );
            assert_eq!(
                probe.in_stream(),
                before,
                "failed decode changed the stream state"
            );
            d.decode(&p).expect("captured payload");
        }
    }
}

mod malformed;
