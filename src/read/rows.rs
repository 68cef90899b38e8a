//! Reading a chunk of a source table at a snapshot through the transformer — the same code the
//! stream runs, each row an insert at the snapshot's version — into COPY-text buffers per
//! output (backfill stages them; verify compares them with the target's rows).
//!
//! Memory: one chunk's transformed rows as COPY text. Never writes.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio_postgres::Client;

use super::copy::{self, CopyError};
use super::ReadError;
use crate::change::{Change, Datum, Op, Relation, RelationColumn, SourceKey};
use crate::lsn::Lsn;
use crate::transform::plan::{OutputPlan, TablePlan};
use crate::transform::{TargetOp, Transformer, Value};

/// A table read through the transformer (splits, expressions, filters, several outputs,
/// custom transforms): its plan, the source table as the transformer sees it, and the names
/// of the per-output stage tables backfill copies the rows into.
pub(crate) struct RowsJob {
    pub(crate) table: Arc<TablePlan>,
    pub(crate) plan: Arc<crate::transform::Plan>,
    /// The source table as the transformer sees it (columns in COPY order, key first).
    pub(crate) rel: Arc<Relation>,
    /// Stage table per output (same order as `table.outputs`) and the parents' stage.
    pub(crate) stages: Vec<String>,
    pub(crate) parents: String,
}

impl RowsJob {
    pub(crate) fn new(
        table: Arc<TablePlan>,
        plan: Arc<crate::transform::Plan>,
        columns: &[String],
        key_len: usize,
        hint: usize,
    ) -> Option<RowsJob> {
        let (schema, name) = table.source.split_once('.')?;
        let rel = Relation {
            oid: 0,
            schema: schema.to_string(),
            name: name.to_string(),
            replica_identity: b'd',
            columns: columns
                .iter()
                .enumerate()
                .map(|(i, c)| RelationColumn {
                    is_key: i < key_len,
                    name: c.clone(),
                    type_oid: 0,
                    type_modifier: -1,
                })
                .collect(),
        };
        Some(RowsJob {
            stages: (0..table.outputs.len())
                .map(|o| format!("remodel_stage_{hint}_o{o}"))
                .collect(),
            parents: format!("remodel_stage_{hint}_p"),
            table,
            plan,
            rel: Arc::new(rel),
        })
    }
}

/// COPY text encoding of one field.
pub(crate) fn push_field(buf: &mut Vec<u8>, v: Option<&str>) {
    let Some(s) = v else {
        buf.extend_from_slice(b"\\N");
        return;
    };
    for b in s.bytes() {
        match b {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            _ => buf.push(b),
        }
    }
}

pub(crate) fn push_row<'a>(
    buf: &mut Vec<u8>,
    skey: &str,
    values: impl Iterator<Item = Option<&'a str>>,
) {
    push_field(buf, Some(skey));
    for v in values {
        buf.push(b'\t');
        push_field(buf, v);
    }
    buf.push(b'\n');
}

pub(crate) fn text(v: &Value) -> Option<&str> {
    match v {
        Value::Text(s) => Some(s),
        _ => None,
    }
}

/// One chunk's transformed rows, as COPY text per stage.
pub(crate) struct Transformed {
    pub(crate) stages: Vec<Vec<u8>>,
    pub(crate) parents: Vec<u8>,
    pub(crate) dead: Vec<crate::transform::DeadLetter>,
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
    pub(crate) last_key: Option<Vec<Option<String>>>,
}

/// One COPY text-format line as a tuple of `n` fields.
pub(crate) fn parse_tuple(line: &[u8], n: usize) -> Result<Vec<Datum>, CopyError> {
    let tuple = line
        .split(|&b| b == b'\t')
        .map(|f| copy::unescape(f).map(|v| v.map_or(Datum::Null, Datum::Text)))
        .collect::<Result<Vec<_>, _>>()?;
    if tuple.len() != n {
        return Err(CopyError::Format(format!(
            "row has {} fields, expected {n}",
            tuple.len()
        )));
    }
    Ok(tuple)
}

/// Which source keys a read stages as parents.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parents {
    /// Keys of rows with a split output (their child sets are replaced).
    Split,
    /// Every row read that is not a dead letter (verification: target rows of these keys that
    /// no transformed row accounts for are extra).
    All,
}

/// Read the chunk from the source and transform it.
pub(crate) async fn read(
    source: &Client,
    copy_out: &str,
    rj: &RowsJob,
    version: Lsn,
    parents: Parents,
) -> Result<Transformed, ReadError> {
    let table = &rj.table.source;
    let err = |e: CopyError| ReadError::Copy {
        table: table.clone(),
        source: e,
    };
    let out = source
        .copy_out(copy_out)
        .await
        .map_err(|e| err(CopyError::Source(e.into())))?;
    futures_util::pin_mut!(out);
    let mut transformer = Transformer::new(rj.plan.clone());
    let key_len = rj.table.source_key.len();
    let mut t = Transformed {
        stages: vec![Vec::new(); rj.stages.len()],
        parents: Vec::new(),
        dead: Vec::new(),
        rows: 0,
        bytes: 0,
        last_key: None,
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut ops: Vec<TargetOp> = Vec::new();
    while let Some(chunk) = out.next().await {
        let chunk = chunk.map_err(|e| err(CopyError::Source(e.into())))?;
        t.bytes += chunk.len() as u64;
        pending.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(n) = pending[start..].iter().position(|&b| b == b'\n') {
            let line = &pending[start..start + n];
            start += n + 1;
            let tuple = parse_tuple(line, rj.rel.columns.len()).map_err(err)?;
            let key: Vec<Option<String>> = tuple[..key_len]
                .iter()
                .map(|d| match d {
                    Datum::Text(s) => Some(s.clone()),
                    _ => None,
                })
                .collect();
            let change = Change {
                rel: rj.rel.clone(),
                op: Op::Insert,
                key: SourceKey(key.clone()),
                old: None,
                new: Some(tuple),
                commit_lsn: version,
                xid: 0,
            };
            ops.clear();
            transformer
                .transform(&change, &mut ops)
                .map_err(|e| ReadError::Transform {
                    table: table.clone(),
                    source: e,
                })?;
            let skey = change.key.encode();
            let mut parent_staged = parents != Parents::Split;
            let dead = t.dead.len();
            for op in ops.drain(..) {
                match op {
                    TargetOp::Upsert { output, row, .. } => {
                        push_row(
                            &mut t.stages[stage_of(rj, &output)],
                            &skey,
                            row.iter().map(text),
                        );
                    }
                    TargetOp::Children { output, rows, .. } => {
                        let buf = &mut t.stages[stage_of(rj, &output)];
                        for r in &rows {
                            push_row(buf, &skey, r.iter().map(text));
                        }
                        if !parent_staged {
                            push_row(&mut t.parents, &skey, key.iter().map(|k| k.as_deref()));
                            parent_staged = true;
                        }
                    }
                    TargetOp::DeadLetter(d) => t.dead.push(d),
                    // An insert is never a delete, clear or truncate.
                    _ => {}
                }
            }
            if parents == Parents::All && t.dead.len() == dead {
                push_row(&mut t.parents, &skey, key.iter().map(|k| k.as_deref()));
            }
            t.rows += 1;
            t.last_key = Some(key);
        }
        pending.drain(..start);
    }
    Ok(t)
}

pub(crate) fn stage_of(rj: &RowsJob, o: &OutputPlan) -> usize {
    rj.table
        .outputs
        .iter()
        .position(|x| x.id == o.id)
        .unwrap_or(0)
}
