//! pgoutput decoder: bytes of one `XLogData` payload → one [`LogicalMessage`].
//!
//! Owns the wire format of PostgreSQL's `pgoutput` plugin, protocol versions 1 and 2
//! (v2 adds the stream-start/stop/commit/abort messages and an xid prefix on data messages
//! sent inside a stream block). It must never panic on any input: every malformed,
//! truncated or unknown message is a [`DecodeError`]. It knows nothing of mappings or targets.
//!
//! IMPLEMENTATION PENDING (helper): `Decoder::decode`.

use bytes::Bytes;

use crate::lsn::Lsn;

/// PostgreSQL timestamps on the wire: microseconds since 2000-01-01 00:00:00 UTC.
pub type PgTimestamp = i64;

/// One column value in a tuple.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Datum {
    /// SQL NULL ('n').
    Null,
    /// An unchanged TOASTed value the server did not send ('u'). Must stay "unchanged" to apply.
    Unchanged,
    /// Text-format value ('t'), as the type's output function printed it.
    Text(String),
    /// Binary-format value ('b'), only when the `binary` option is on.
    Binary(Bytes),
}

/// A tuple: one datum per column of the relation, in relation column order.
pub type Tuple = Vec<Datum>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelationColumn {
    /// Bit 1: column is part of the replica identity key.
    pub is_key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

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
    Truncated { tag: char, offset: usize, needed: usize },
    #[error("unknown pgoutput message tag {0:#04x}")]
    UnknownTag(u8),
    #[error("empty pgoutput message")]
    Empty,
    #[error("invalid {what} in a '{tag}' message: {detail}")]
    Invalid { tag: char, what: &'static str, detail: String },
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
        Decoder { protocol_version, in_stream: false }
    }

    pub fn protocol_version(&self) -> u32 {
        self.protocol_version
    }

    /// Decode one `XLogData` payload.
    pub fn decode(&mut self, _buf: &[u8]) -> Result<LogicalMessage, DecodeError> {
        let _ = self.in_stream;
        Err(DecodeError::Empty)
    }
}
