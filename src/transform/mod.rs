//! Transform: a compiled mapping plan turns each source [`Change`] into [`TargetOp`]s.
//!
//! ```text
//!   config [[tables]] ──compile (both live schemas)──▶ Plan
//!   Change ──Transformer (plan bound to the stream's Relation)──▶ [TargetOp { guard, row }]
//! ```
//!
//! Owns the mapping semantics. Every `TargetOp` carries the version guard of the *source* row
//! it came from, so apply can enforce the version rule whatever the shape of the mapping.
//! Must never talk to a database at run time and never drop a change silently: a change it
//! cannot transform is a [`TransformError`] naming table, key and LSN.

pub mod catalog;
pub mod compile;
mod compile_row;
#[cfg(test)]
mod compile_tests;
pub mod custom;
pub mod expr;
pub mod inverse;
pub mod live;
pub mod mapping;
pub mod plan;
pub mod rebuild;
pub mod split;
pub mod target_types;
mod transformer;

use std::sync::Arc;

use crate::change::SourceKey;
use crate::lsn::Lsn;
pub use catalog::Env;
pub use compile::compile;
pub use plan::{OutputPlan, Plan, Problem, TablePlan};
pub use transformer::{child_id, row_json, Transformer};

/// A target column value as text for the target's input functions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    Null,
    /// Unchanged TOAST on the source: the target column must be left as it is.
    Unchanged,
    Text(String),
}

/// The source row a target write derives from, and its version: the ledger guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub source_rel: Arc<str>,
    pub key: SourceKey,
    pub version: Lsn,
    /// Which transformed change this op came from (a counter per [`Transformer`]): apply may
    /// reorder ops of different changes of different keys, never ops of one key across changes.
    pub change: u64,
}

#[derive(Debug, Clone)]
pub enum TargetOp {
    /// Insert or update `row` (aligned with `output.columns`). With `from`, the row is the one
    /// currently stored under that (old) target key, updated in place to the new key: a key
    /// change whose unchanged TOAST values only the target still holds.
    Upsert {
        output: Arc<OutputPlan>,
        guard: Guard,
        row: Vec<Value>,
        from: Option<Vec<Value>>,
    },
    /// Delete the target row with these key values (aligned with `output.key`).
    Delete {
        output: Arc<OutputPlan>,
        guard: Guard,
        key: Vec<Value>,
    },
    /// A merge output's row no longer gets this source row's columns: set them to NULL in the
    /// target row with `key` — only if they still hold `values` (when known: another source
    /// row may have taken them over meanwhile).
    Clear {
        output: Arc<OutputPlan>,
        guard: Guard,
        key: Vec<Value>,
        values: Option<Vec<Value>>,
    },
    /// A split output: the children of `parent` (values of the output's parent columns) become
    /// exactly `rows` — missing ones deleted, unchanged ones left alone. `deleted`: the parent
    /// is gone (or filtered out): the ledger entry is a tombstone.
    Children {
        output: Arc<OutputPlan>,
        guard: Guard,
        parent: Vec<Value>,
        rows: Vec<Vec<Value>>,
        deleted: bool,
    },
    /// Table-wide tombstone at `version`.
    Truncate {
        source_rel: Arc<str>,
        version: Lsn,
        outputs: Vec<Arc<OutputPlan>>,
    },
    /// A row the mapping could not transform, kept in `<state>.dead_letters` (on_error =
    /// "dead_letter").
    DeadLetter(DeadLetter),
}

/// A row the mapping could not transform: enough to show it and to transform it again later.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub source_rel: Arc<str>,
    pub key: SourceKey,
    pub version: Lsn,
    pub op: &'static str,
    pub reason: String,
    /// The source row (new tuple, else old) as a JSON object of text values.
    pub row: serde_json::Value,
}

impl TargetOp {
    /// The output a row op writes (None for table-wide and dead-letter ops).
    pub fn output(&self) -> Option<&Arc<OutputPlan>> {
        match self {
            TargetOp::Upsert { output, .. }
            | TargetOp::Delete { output, .. }
            | TargetOp::Clear { output, .. }
            | TargetOp::Children { output, .. } => Some(output),
            TargetOp::Truncate { .. } | TargetOp::DeadLetter(_) => None,
        }
    }
    pub fn guard(&self) -> Option<&Guard> {
        match self {
            TargetOp::Upsert { guard, .. }
            | TargetOp::Delete { guard, .. }
            | TargetOp::Clear { guard, .. }
            | TargetOp::Children { guard, .. } => Some(guard),
            TargetOp::Truncate { .. } | TargetOp::DeadLetter(_) => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error("source table {table} appeared in the stream at {lsn} but has no mapping; add a [[tables]] entry for it (or remove it from the publication) and restart")]
    Unmapped { table: String, lsn: Lsn },
    #[error("source table {table} no longer has column {column} (stream at {lsn}); the mapping needs it: update the mapping and restart")]
    SchemaDrift {
        table: String,
        column: String,
        lsn: Lsn,
    },
    #[error("source table {table} gained column {column} (stream at {lsn}), which the mapping neither maps nor drops; add it to the target table (or map it: {column} = \"drop\") and restart")]
    NewColumn {
        table: String,
        column: String,
        lsn: Lsn,
    },
    #[error("source table {table} column {column} changed type under the stream (stream at {lsn}: the mapping was compiled for {from}, the source now sends type oid {to_oid} typmod {to_typmod}); nothing after it was written. Align the target column (and any cast or expression on it) with the new type, then restart: the mapping is compiled again from the live schemas")]
    TypeChanged {
        table: String,
        column: String,
        from: String,
        to_oid: u32,
        to_typmod: i32,
        lsn: Lsn,
    },
    #[error("source table {table} column {old} was renamed to {new} (stream at {lsn}); nothing after it was written. Map it under its new name ({new} = {{ rename = \"{old}\" }} keeps the target column {old}) and restart. Do not map {new} = \"drop\": the target column would silently stop being filled")]
    RenamedColumn {
        table: String,
        old: String,
        new: String,
        lsn: Lsn,
    },
    #[error("source table {old} was renamed to {new} (stream at {lsn}); nothing after it was written. Set source = \"{new}\" in its [[tables]] entry and restart")]
    RenamedTable { old: String, new: String, lsn: Lsn },
    #[error("cannot transform {op} on {table} key {key} at {lsn}: {reason}. Fix the mapping (or the row), or set on_error = \"dead_letter\" on the table to set such rows aside, and restart")]
    Row {
        table: String,
        op: &'static str,
        key: SourceKey,
        lsn: Lsn,
        reason: String,
    },
}
