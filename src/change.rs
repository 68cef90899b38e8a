//! The one `Change` type that crosses every stage boundary (source → transform → apply), plus
//! the transaction framing events around it.
//!
//! Owns the shape of a decoded row change. Must never hold raw protocol bytes or SQL text:
//! stages exchange typed values only.

use std::fmt;

use bytes::Bytes;
use std::sync::Arc;

use crate::lsn::Lsn;

/// One column value in a tuple, as decoded from the stream or read from a snapshot.
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

/// A source table as the replication stream described it (pgoutput `Relation`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

impl Relation {
    /// `schema.name`, unquoted, as used in config and messages.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// Positions of the replica identity key columns.
    pub fn key_positions(&self) -> Vec<usize> {
        self.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_key)
            .map(|(i, _)| i)
            .collect()
    }

    pub fn column_position(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Insert,
    Update,
    Delete,
    Truncate,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Truncate => "truncate",
        }
    }
}

/// The identity of a source row: its replica-identity key values in the source's text form.
/// This is what the version ledger keys on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey(pub Vec<Option<String>>);

impl SourceKey {
    /// Canonical encoding stored in the ledger: a JSON array of the key's text values.
    pub fn encode(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for SourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(")?;
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            match v {
                Some(s) => write!(f, "{s}")?,
                None => write!(f, "NULL")?,
            }
        }
        write!(f, ")")
    }
}

/// One row change of one source transaction.
#[derive(Clone, Debug)]
pub struct Change {
    pub rel: Arc<Relation>,
    pub op: Op,
    /// The key of the row this change identifies (for an update that changes its key: the old
    /// key). Empty for `Truncate`.
    pub key: SourceKey,
    /// Old tuple when the server sent one (update/delete; key-only or full).
    pub old: Option<Tuple>,
    /// New tuple (insert/update). May contain `Datum::Unchanged` for TOASTed columns.
    pub new: Option<Tuple>,
    /// The version of this change: its transaction's commit LSN (Begin.final_lsn).
    pub commit_lsn: Lsn,
    pub xid: u32,
}

/// What flows from source to apply, in commit order.
#[derive(Clone, Debug)]
pub enum Event {
    Begin {
        xid: u32,
        commit_lsn: Lsn,
        /// Microseconds since 2000-01-01 UTC.
        commit_ts: i64,
    },
    Change(Change),
    /// A transactional logical message of remodel's (`prefix` starting `remodel.`), in its
    /// transaction: a snapshot reader's announcement (`state::PassMark`).
    Message {
        prefix: String,
        content: Vec<u8>,
        commit_lsn: Lsn,
    },
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_ts: i64,
    },
}
