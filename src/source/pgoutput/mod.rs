//! pgoutput decoder: bytes of one `XLogData` payload → one [`LogicalMessage`].
//!
//! Owns the wire format of PostgreSQL's `pgoutput` plugin, protocol versions 1 and 2
//! (v2 adds the stream-start/stop/commit/abort messages and an xid prefix on data messages
//! sent inside a stream block). It must never panic on any input: every malformed,
//! truncated or unknown message is a [`DecodeError`]. It knows nothing of mappings or targets.
//!
//! Wire facts this decoder relies on (checked against bytes captured from PostgreSQL 15, see
//! `tests/data/pgoutput/`):
//! - Inside a stream block the data messages (Relation, Type, Insert, Update, Delete, Truncate,
//!   Message) carry the xid of the (sub)transaction that made the change, which is NOT always the
//!   StreamStart xid: a change made in a subtransaction carries the subtransaction's xid. Group by
//!   the StreamStart xid; a Stream Abort with `subxid != xid` discards only that subtransaction.
//! - Origin carries no xid even when it is sent right after a StreamStart.
//! - An empty namespace on the wire means `pg_catalog`; the decoder reports `pg_catalog`.
//! - Protocol 3's two-phase messages ('b', 'P', 'K', 'r', 'p') are not decoded ([`DecodeError::UnknownTag`]).

use bytes::Bytes;

use crate::lsn::Lsn;

/// PostgreSQL timestamps on the wire: microseconds since 2000-01-01 00:00:00 UTC.
pub type PgTimestamp = i64;

pub use crate::change::{Datum, RelationColumn, Tuple};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationBody {
    pub oid: u32,
    pub namespace: String,
    pub name: String,
    /// 'd' default, 'n' nothing, 'f' full, 'i' index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

/// Which old tuple an Update/Delete carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OldKind {
    /// 'K': only the replica identity key columns are meaningful (others are Null).
    Key,
    /// 'O': the full old row (REPLICA IDENTITY FULL).
    Full,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogicalMessage {
    Begin {
        final_lsn: Lsn,
        commit_ts: PgTimestamp,
        xid: u32,
    },
    Commit {
        flags: u8,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_ts: PgTimestamp,
    },
    Origin {
        commit_lsn: Lsn,
        name: String,
    },
    Relation {
        xid: Option<u32>,
        body: RelationBody,
    },
    Type {
        xid: Option<u32>,
        oid: u32,
        namespace: String,
        name: String,
    },
    Insert {
        xid: Option<u32>,
        rel: u32,
        new: Tuple,
    },
    Update {
        xid: Option<u32>,
        rel: u32,
        old: Option<(OldKind, Tuple)>,
        new: Tuple,
    },
    Delete {
        xid: Option<u32>,
        rel: u32,
        old: (OldKind, Tuple),
    },
    Truncate {
        xid: Option<u32>,
        /// Bit 1: CASCADE, bit 2: RESTART IDENTITY.
        options: u8,
        rels: Vec<u32>,
    },
    Message {
        xid: Option<u32>,
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: Bytes,
    },
    StreamStart {
        xid: u32,
        first_segment: bool,
    },
    StreamStop,
    StreamCommit {
        xid: u32,
        flags: u8,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_ts: PgTimestamp,
    },
    StreamAbort {
        xid: u32,
        subxid: u32,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("pgoutput message truncated: needed {needed} more bytes at offset {offset} of a '{tag}' message")]
    Truncated {
        tag: char,
        offset: usize,
        needed: usize,
    },
    #[error("unknown pgoutput message tag {0:#04x}")]
    UnknownTag(u8),
    #[error("empty pgoutput message")]
    Empty,
    #[error("invalid {what} in a '{tag}' message: {detail}")]
    Invalid {
        tag: char,
        what: &'static str,
        detail: String,
    },
    #[error("{extra} unexpected trailing bytes after a '{tag}' message")]
    Trailing { tag: char, extra: usize },
}

/// Stateful decoder: v2 data messages carry an xid only between StreamStart and StreamStop.
#[derive(Debug, Clone)]
pub struct Decoder {
    protocol_version: u32,
    in_stream: bool,
}

impl Decoder {
    pub fn new(protocol_version: u32) -> Self {
        Decoder {
            protocol_version,
            in_stream: false,
        }
    }

    pub fn protocol_version(&self) -> u32 {
        self.protocol_version
    }

    /// True between a StreamStart and its StreamStop (data messages then carry an xid).
    pub fn in_stream(&self) -> bool {
        self.in_stream
    }

    /// Decode one `XLogData` payload.
    ///
    /// The stream-block state changes only when a StreamStart/StreamStop decodes successfully;
    /// an error leaves the decoder as it was. A decoder belongs to one replication connection:
    /// after a reconnect, start from a new one.
    pub fn decode(&mut self, buf: &[u8]) -> Result<LogicalMessage, DecodeError> {
        let (&tag_byte, _) = buf.split_first().ok_or(DecodeError::Empty)?;
        let tag = char::from(tag_byte);
        let mut r = Reader { buf, pos: 1, tag };
        let msg = match tag_byte {
            b'B' => {
                self.outside_stream(tag)?;
                LogicalMessage::Begin {
                    final_lsn: r.lsn()?,
                    commit_ts: r.i64()?,
                    xid: r.u32()?,
                }
            }
            b'C' => {
                self.outside_stream(tag)?;
                LogicalMessage::Commit {
                    flags: r.u8()?,
                    commit_lsn: r.lsn()?,
                    end_lsn: r.lsn()?,
                    commit_ts: r.i64()?,
                }
            }
            // Sent after Begin, and also right after a StreamStart: never with an xid.
            b'O' => LogicalMessage::Origin {
                commit_lsn: r.lsn()?,
                name: r.cstr("origin name")?,
            },
            b'R' => LogicalMessage::Relation {
                xid: self.stream_xid(&mut r)?,
                body: relation_body(&mut r)?,
            },
            b'Y' => LogicalMessage::Type {
                xid: self.stream_xid(&mut r)?,
                oid: r.u32()?,
                namespace: namespace(r.cstr("type namespace")?),
                name: r.cstr("type name")?,
            },
            b'I' => {
                let xid = self.stream_xid(&mut r)?;
                let rel = r.u32()?;
                match r.u8()? {
                    b'N' => {}
                    other => {
                        return Err(
                            r.invalid("tuple kind", format!("expected 'N', got {other:#04x}"))
                        )
                    }
                }
                LogicalMessage::Insert {
                    xid,
                    rel,
                    new: tuple(&mut r)?,
                }
            }
            b'U' => {
                let xid = self.stream_xid(&mut r)?;
                let rel = r.u32()?;
                let (old, new) = match r.u8()? {
                    b'N' => (None, tuple(&mut r)?),
                    kind @ (b'K' | b'O') => {
                        let old_kind = if kind == b'K' {
                            OldKind::Key
                        } else {
                            OldKind::Full
                        };
                        let old = tuple(&mut r)?;
                        match r.u8()? {
                            b'N' => {}
                            other => {
                                return Err(r.invalid(
                                    "tuple kind",
                                    format!("expected 'N' after the old tuple, got {other:#04x}"),
                                ))
                            }
                        }
                        (Some((old_kind, old)), tuple(&mut r)?)
                    }
                    other => {
                        return Err(r.invalid(
                            "tuple kind",
                            format!("expected 'K', 'O' or 'N', got {other:#04x}"),
                        ))
                    }
                };
                LogicalMessage::Update { xid, rel, old, new }
            }
            b'D' => {
                let xid = self.stream_xid(&mut r)?;
                let rel = r.u32()?;
                let kind = match r.u8()? {
                    b'K' => OldKind::Key,
                    b'O' => OldKind::Full,
                    other => {
                        return Err(r.invalid(
                            "tuple kind",
                            format!("expected 'K' or 'O', got {other:#04x}"),
                        ))
                    }
                };
                LogicalMessage::Delete {
                    xid,
                    rel,
                    old: (kind, tuple(&mut r)?),
                }
            }
            b'T' => {
                let xid = self.stream_xid(&mut r)?;
                let count = r.count_i32("relation count")?;
                let options = r.u8()?;
                // Each oid takes 4 bytes: never reserve more than the payload can hold.
                let mut rels = Vec::with_capacity(count.min(r.remaining() / 4));
                for _ in 0..count {
                    rels.push(r.u32()?);
                }
                LogicalMessage::Truncate { xid, options, rels }
            }
            b'M' => {
                let xid = self.stream_xid(&mut r)?;
                let flags = r.u8()?;
                let lsn = r.lsn()?;
                let prefix = r.cstr("message prefix")?;
                let len = r.count_i32("message length")?;
                let content = Bytes::copy_from_slice(r.take(len)?);
                LogicalMessage::Message {
                    xid,
                    transactional: flags & 1 != 0,
                    lsn,
                    prefix,
                    content,
                }
            }
            b'S' => {
                self.streaming_protocol(&r)?;
                self.outside_stream(tag)?;
                let xid = r.u32()?;
                let first_segment = match r.u8()? {
                    0 => false,
                    1 => true,
                    other => {
                        return Err(r.invalid(
                            "first-segment flag",
                            format!("expected 0 or 1, got {other}"),
                        ))
                    }
                };
                LogicalMessage::StreamStart { xid, first_segment }
            }
            b'E' => {
                self.streaming_protocol(&r)?;
                if !self.in_stream {
                    return Err(
                        r.invalid("message order", "Stream Stop outside a stream block".into())
                    );
                }
                LogicalMessage::StreamStop
            }
            b'c' => {
                self.streaming_protocol(&r)?;
                self.outside_stream(tag)?;
                LogicalMessage::StreamCommit {
                    xid: r.u32()?,
                    flags: r.u8()?,
                    commit_lsn: r.lsn()?,
                    end_lsn: r.lsn()?,
                    commit_ts: r.i64()?,
                }
            }
            b'A' => {
                self.streaming_protocol(&r)?;
                self.outside_stream(tag)?;
                let xid = r.u32()?;
                let subxid = r.u32()?;
                // Protocol 4 adds abort LSN and abort timestamp when streaming = parallel.
                if self.protocol_version >= 4 && r.remaining() > 0 {
                    r.lsn()?;
                    r.i64()?;
                }
                LogicalMessage::StreamAbort { xid, subxid }
            }
            other => return Err(DecodeError::UnknownTag(other)),
        };
        r.finish()?;
        match msg {
            LogicalMessage::StreamStart { .. } => self.in_stream = true,
            LogicalMessage::StreamStop => self.in_stream = false,
            _ => {}
        }
        Ok(msg)
    }

    /// The xid prefix of a data message: present only inside a stream block.
    fn stream_xid(&self, r: &mut Reader<'_>) -> Result<Option<u32>, DecodeError> {
        if self.in_stream {
            r.u32().map(Some)
        } else {
            Ok(None)
        }
    }

    fn streaming_protocol(&self, r: &Reader<'_>) -> Result<(), DecodeError> {
        if self.protocol_version < 2 {
            return Err(r.invalid(
                "message",
                format!(
                    "stream messages need protocol version 2, this connection uses {}",
                    self.protocol_version
                ),
            ));
        }
        Ok(())
    }

    fn outside_stream(&self, tag: char) -> Result<(), DecodeError> {
        if self.in_stream {
            return Err(DecodeError::Invalid {
                tag,
                what: "message order",
                detail: "message not allowed inside a stream block (no Stream Stop seen)".into(),
            });
        }
        Ok(())
    }
}

/// pgoutput writes pg_catalog as the empty string.
fn namespace(wire: String) -> String {
    if wire.is_empty() {
        "pg_catalog".to_string()
    } else {
        wire
    }
}

fn relation_body(r: &mut Reader<'_>) -> Result<RelationBody, DecodeError> {
    let oid = r.u32()?;
    let namespace = namespace(r.cstr("relation namespace")?);
    let name = r.cstr("relation name")?;
    let replica_identity = r.u8()?;
    if !matches!(replica_identity, b'd' | b'n' | b'f' | b'i') {
        return Err(r.invalid(
            "replica identity",
            format!("expected d, n, f or i, got {replica_identity:#04x}"),
        ));
    }
    let count = r.count_i16("column count")?;
    // Each column takes at least 10 bytes (flags, name NUL, type oid, typmod).
    let mut columns = Vec::with_capacity(count.min(r.remaining() / 10));
    for _ in 0..count {
        let flags = r.u8()?;
        columns.push(RelationColumn {
            is_key: flags & 1 != 0,
            name: r.cstr("column name")?,
            type_oid: r.u32()?,
            type_modifier: r.i32()?,
        });
    }
    Ok(RelationBody {
        oid,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

fn tuple(r: &mut Reader<'_>) -> Result<Tuple, DecodeError> {
    let count = r.count_i16("column count")?;
    // Each column takes at least one byte.
    let mut datums = Vec::with_capacity(count.min(r.remaining()));
    for _ in 0..count {
        let datum = match r.u8()? {
            b'n' => Datum::Null,
            b'u' => Datum::Unchanged,
            b't' => {
                let len = r.count_i32("text value length")?;
                let offset = r.pos;
                let bytes = r.take(len)?;
                match std::str::from_utf8(bytes) {
                    Ok(s) => Datum::Text(s.to_owned()),
                    Err(e) => {
                        return Err(
                            r.invalid("text value", format!("not UTF-8 at offset {offset}: {e}"))
                        );
                    }
                }
            }
            b'b' => {
                let len = r.count_i32("binary value length")?;
                Datum::Binary(Bytes::copy_from_slice(r.take(len)?))
            }
            other => {
                return Err(r.invalid(
                    "column kind",
                    format!("expected 'n', 'u', 't' or 'b', got {other:#04x}"),
                ));
            }
        };
        datums.push(datum);
    }
    Ok(datums)
}

/// A cursor over one payload. Every read is bounds-checked and reports where it ran short.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    tag: char,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        match rest.get(..n) {
            Some(bytes) => {
                self.pos += n;
                Ok(bytes)
            }
            None => Err(DecodeError::Truncated {
                tag: self.tag,
                offset: self.pos,
                needed: n.saturating_sub(rest.len()),
            }),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (offset, tag) = (self.pos, self.tag);
        self.take(N)?
            .try_into()
            .map_err(|_| DecodeError::Truncated {
                tag,
                offset,
                needed: N,
            })
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.array::<1>().map(|[b]| b)
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        self.array().map(i16::from_be_bytes)
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        self.array().map(i32::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_be_bytes)
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        self.array().map(i64::from_be_bytes)
    }

    fn lsn(&mut self) -> Result<Lsn, DecodeError> {
        self.array().map(|b| Lsn(u64::from_be_bytes(b)))
    }

    /// A NUL-terminated UTF-8 string.
    fn cstr(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            return Err(DecodeError::Truncated {
                tag: self.tag,
                offset: self.buf.len(),
                needed: 1,
            });
        };
        let offset = self.pos;
        let bytes = self.take(nul)?;
        self.take(1)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => Err(self.invalid(what, format!("not UTF-8 at offset {offset}: {e}"))),
        }
    }

    /// A non-negative Int16 count.
    fn count_i16(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.i16()?;
        usize::try_from(n).map_err(|_| self.invalid(what, format!("negative: {n}")))
    }

    /// A non-negative Int32 count or length.
    fn count_i32(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.i32()?;
        usize::try_from(n).map_err(|_| self.invalid(what, format!("negative: {n}")))
    }

    fn invalid(&self, what: &'static str, detail: String) -> DecodeError {
        DecodeError::Invalid {
            tag: self.tag,
            what,
            detail,
        }
    }

    fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::Trailing {
                tag: self.tag,
                extra,
            }),
        }
    }
}

#[cfg(test)]
mod tests;
