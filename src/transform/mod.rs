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
pub mod mapping;
pub mod plan;

use std::collections::HashMap;
use std::sync::Arc;

use crate::change::{Change, Datum, Op, Relation, SourceKey, Tuple};
use crate::lsn::Lsn;
pub use plan::{OutputPlan, Plan, Problem, TablePlan};

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
    /// Table-wide tombstone at `version`.
    Truncate {
        source_rel: Arc<str>,
        version: Lsn,
        outputs: Vec<Arc<OutputPlan>>,
    },
}

impl TargetOp {
    pub fn guard(&self) -> Option<&Guard> {
        match self {
            TargetOp::Upsert { guard, .. } | TargetOp::Delete { guard, .. } => Some(guard),
            TargetOp::Truncate { .. } => None,
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
    #[error("cannot transform {op} on {table} key {key} at {lsn}: {reason}")]
    Row {
        table: String,
        op: &'static str,
        key: SourceKey,
        lsn: Lsn,
        reason: String,
    },
}

struct Bound {
    rel: Arc<Relation>,
    table: Arc<TablePlan>,
    name: Arc<str>,
    key_pos: Vec<usize>,
    /// Per output, per target column: source position (None: constant).
    outputs: Vec<Vec<Option<usize>>>,
}

/// The plan bound to the relations the stream announced.
pub struct Transformer {
    plan: Arc<Plan>,
    bound: HashMap<u32, Bound>,
}

impl Transformer {
    pub fn new(plan: Arc<Plan>) -> Self {
        Transformer {
            plan,
            bound: HashMap::new(),
        }
    }

    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    fn bind(&mut self, rel: &Arc<Relation>, lsn: Lsn) -> Result<&Bound, TransformError> {
        let stale = match self.bound.get(&rel.oid) {
            Some(b) => !Arc::ptr_eq(&b.rel, rel) && *b.rel != **rel,
            None => true,
        };
        if stale {
            let name = rel.qualified();
            let table =
                self.plan
                    .tables
                    .get(&name)
                    .cloned()
                    .ok_or_else(|| TransformError::Unmapped {
                        table: name.clone(),
                        lsn,
                    })?;
            let pos = |c: &str| {
                rel.column_position(c)
                    .ok_or_else(|| TransformError::SchemaDrift {
                        table: name.clone(),
                        column: c.to_string(),
                        lsn,
                    })
            };
            if let Some(new) = rel
                .columns
                .iter()
                .find(|c| !table.known_columns.contains(&c.name))
            {
                return Err(TransformError::NewColumn {
                    table: name.clone(),
                    column: new.name.clone(),
                    lsn,
                });
            }
            let key_pos = table
                .source_key
                .iter()
                .map(|c| pos(c))
                .collect::<Result<Vec<_>, _>>()?;
            let mut outputs = Vec::new();
            for o in &table.outputs {
                let mut cols = Vec::new();
                for c in &o.columns {
                    cols.push(match &c.expr {
                        plan::Expr::Column { name, .. } => Some(pos(name)?),
                        plan::Expr::Constant(_) => None,
                    });
                }
                outputs.push(cols);
            }
            self.bound.insert(
                rel.oid,
                Bound {
                    rel: rel.clone(),
                    table,
                    name: Arc::from(name.as_str()),
                    key_pos,
                    outputs,
                },
            );
        }
        self.bound
            .get(&rel.oid)
            .ok_or_else(|| TransformError::Unmapped {
                table: rel.qualified(),
                lsn,
            })
    }

    /// Transform one change, appending its target operations to `out`.
    pub fn transform(
        &mut self,
        change: &Change,
        out: &mut Vec<TargetOp>,
    ) -> Result<(), TransformError> {
        let lsn = change.commit_lsn;
        let b = self.bind(&change.rel, lsn)?;
        let row_err = |key: &SourceKey, reason: String| TransformError::Row {
            table: b.name.to_string(),
            op: change.op.as_str(),
            key: key.clone(),
            lsn,
            reason,
        };
        match change.op {
            Op::Truncate => out.push(TargetOp::Truncate {
                source_rel: b.name.clone(),
                version: lsn,
                outputs: b.table.outputs.clone(),
            }),
            Op::Insert | Op::Update => {
                let new = change
                    .new
                    .as_ref()
                    .ok_or_else(|| row_err(&change.key, "no new tuple".into()))?;
                let new_key = key_of(&b.key_pos, new, change.old.as_ref())
                    .map_err(|r| row_err(&change.key, r))?;
                // The old tuple (a key change, or REPLICA IDENTITY FULL) names the row before.
                let old_key = match &change.old {
                    Some(old) => Some(
                        key_of(&b.key_pos, old, None)
                            .map_err(|r| row_err(&change.key, format!("old tuple: {r}")))?,
                    ),
                    None => None,
                };
                let moved = old_key.filter(|k| *k != new_key);
                for (o, cols) in b.table.outputs.iter().zip(&b.outputs) {
                    let mut row = cols
                        .iter()
                        .zip(&o.columns)
                        .map(|(p, c)| value(*p, c, new))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|r| row_err(&new_key, r))?;
                    // A full old tuple (REPLICA IDENTITY FULL) carries the unchanged values; a
                    // key-only one holds NULL placeholders outside the key.
                    if let Some(old) = change
                        .old
                        .as_ref()
                        .filter(|_| change.rel.replica_identity == b'f')
                    {
                        for (v, p) in row.iter_mut().zip(cols) {
                            if *v == Value::Unchanged {
                                match p.and_then(|p| old.get(p)) {
                                    Some(Datum::Text(s)) => *v = Value::Text(s.clone()),
                                    Some(Datum::Null) => *v = Value::Null,
                                    _ => {}
                                }
                            }
                        }
                    }
                    let guard = Guard {
                        source_rel: b.name.clone(),
                        key: new_key.clone(),
                        version: lsn,
                    };
                    let Some(old_key) = &moved else {
                        out.push(TargetOp::Upsert {
                            output: o.clone(),
                            guard,
                            row,
                            from: None,
                        });
                        continue;
                    };
                    // The key changed: the old row is gone (tombstone under the old key) and the
                    // row lives on under the new key.
                    let old = change
                        .old
                        .as_ref()
                        .ok_or_else(|| row_err(&new_key, "no old tuple".into()))?;
                    let from = old_target_key(o, cols, old).map_err(|r| row_err(old_key, r))?;
                    let partial = row.contains(&Value::Unchanged);
                    out.push(TargetOp::Upsert {
                        output: o.clone(),
                        guard,
                        row,
                        from: partial.then(|| from.clone()),
                    });
                    out.push(TargetOp::Delete {
                        output: o.clone(),
                        guard: Guard {
                            source_rel: b.name.clone(),
                            key: old_key.clone(),
                            version: lsn,
                        },
                        key: from,
                    });
                }
            }
            Op::Delete => {
                let old = change
                    .old
                    .as_ref()
                    .ok_or_else(|| row_err(&change.key, "no old tuple".into()))?;
                let key = key_of(&b.key_pos, old, None).map_err(|r| row_err(&change.key, r))?;
                push_deletes(b, &key, old, lsn, out).map_err(|r| row_err(&key, r))?;
            }
        }
        Ok(())
    }
}

fn old_target_key(
    o: &OutputPlan,
    cols: &[Option<usize>],
    old: &Tuple,
) -> Result<Vec<Value>, String> {
    o.key
        .iter()
        .map(|&i| value(cols[i], &o.columns[i], old))
        .collect()
}

fn push_deletes(
    b: &Bound,
    key: &SourceKey,
    old: &Tuple,
    lsn: Lsn,
    out: &mut Vec<TargetOp>,
) -> Result<(), String> {
    for (o, cols) in b.table.outputs.iter().zip(&b.outputs) {
        let key_values = old_target_key(o, cols, old)?;
        out.push(TargetOp::Delete {
            output: o.clone(),
            guard: Guard {
                source_rel: b.name.clone(),
                key: key.clone(),
                version: lsn,
            },
            key: key_values,
        });
    }
    Ok(())
}

/// The source key of `tuple`; an unchanged (TOASTed) key column is taken from `fallback`.
fn key_of(pos: &[usize], tuple: &Tuple, fallback: Option<&Tuple>) -> Result<SourceKey, String> {
    pos.iter()
        .map(|&i| match tuple.get(i) {
            Some(Datum::Text(s)) => Ok(Some(s.clone())),
            Some(Datum::Unchanged) => match fallback.and_then(|f| f.get(i)) {
                Some(Datum::Text(s)) => Ok(Some(s.clone())),
                _ => Err(format!(
                    "key column #{i} is an unchanged TOAST value without an old value"
                )),
            },
            Some(Datum::Null) => Err(format!("key column #{i} is NULL")),
            Some(Datum::Binary(_)) => Err("binary-format value in the stream".into()),
            None => Err(format!("tuple has no column #{i}")),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(SourceKey)
}

fn value(pos: Option<usize>, col: &plan::TargetColumn, tuple: &Tuple) -> Result<Value, String> {
    match (pos, &col.expr) {
        (None, plan::Expr::Constant(c)) => Ok(Value::Text(c.clone())),
        (Some(i), _) => match tuple.get(i) {
            Some(Datum::Null) => Ok(Value::Null),
            Some(Datum::Unchanged) => Ok(Value::Unchanged),
            Some(Datum::Text(s)) => Ok(Value::Text(s.clone())),
            Some(Datum::Binary(_)) => Err("binary-format value in the stream".into()),
            None => Err(format!("tuple has no column #{i} for {}", col.name)),
        },
        (None, _) => Err(format!("column {} has no source", col.name)),
    }
}
