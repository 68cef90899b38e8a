use super::copy_both::decode_copy_data;
use super::*;

#[test]
fn decodes_xlogdata_and_keepalive_frames() {
    let mut b = BytesMut::new();
    b.put_u8(b'w');
    b.put_u64(0x10);
    b.put_u64(0x20);
    b.put_i64(0);
    b.extend_from_slice(b"Bxyz");
    match decode_copy_data(&mut b.freeze()).unwrap() {
        ReplicationMessage::XLogData {
            start,
            wal_end,
            data,
        } => {
            assert_eq!((start, wal_end), (Lsn(0x10), Lsn(0x20)));
            assert_eq!(&data[..], b"Bxyz");
        }
        m => panic!("{m:?}"),
    }
    let mut k = BytesMut::new();
    k.put_u8(b'k');
    k.put_u64(0x30);
    k.put_i64(0);
    k.put_u8(1);
    assert!(matches!(
        decode_copy_data(&mut k.freeze()).unwrap(),
        ReplicationMessage::Keepalive {
            wal_end: Lsn(0x30),
            reply_requested: true
        }
    ));
    assert!(decode_copy_data(&mut Bytes::from_static(b"w123")).is_err());
    assert!(decode_copy_data(&mut Bytes::from_static(b"k")).is_err());
    assert!(decode_copy_data(&mut Bytes::from_static(b"")).is_err());
    assert!(decode_copy_data(&mut Bytes::from_static(b"z")).is_err());
}

#[test]
fn quotes_identifiers() {
    assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
}
