//! The plan bound to the relations the stream announced: one source [`Change`] in, its
//! [`TargetOp`]s out. Backfill runs its snapshot rows through the same code (as inserts at
//! version P−1), so the stream and the backfill produce identical rows.
//!
//! Per change: the row's cells (text values by plan column; with REPLICA IDENTITY FULL an
//! unchanged TOAST value is taken from the old tuple) → filter → custom transform → one or
//! more ops per output. Removals (delete, filtered out) go through the outputs in reverse
//! order, so children go before the row they reference.

use std::collections::HashMap;
use std::sync::Arc;

use super::mapping::{ChildKey, OnError};
use super::plan::{ChildField, Expr, OutputKind, OutputPlan, SplitPlan, TablePlan};
use super::{DeadLetter, Guard, Plan, TargetOp, TransformError, Value};
use crate::change::{Change, Datum, Op, Relation, SourceKey, Tuple};
use crate::lsn::Lsn;

mod produce;

pub use produce::child_id;
use produce::*;

/// One source value as the transform sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cell<'a> {
    Null,
    Unchanged,
    Text(&'a str),
}

impl<'a> Cell<'a> {
    fn text(self) -> Option<&'a str> {
        match self {
            Cell::Text(s) => Some(s),
            _ => None,
        }
    }
    fn value(self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Unchanged => Value::Unchanged,
            Cell::Text(s) => Value::Text(s.to_string()),
        }
    }
}

struct Bound {
    rel: Arc<Relation>,
    table: Arc<TablePlan>,
    name: Arc<str>,
    /// Relation positions of the source key columns.
    key_pos: Vec<usize>,
    /// Plan column (TablePlan::columns) → relation position.
    cols: Vec<Option<usize>>,
    /// Per output, per target column: the plan column it reads (Column and Lookup).
    outputs: Vec<Vec<Option<usize>>>,
    /// Per split output: the plan column of the list.
    split_col: Vec<Option<usize>>,
}

/// The plan bound to the relations the stream announced.
pub struct Transformer {
    plan: Arc<Plan>,
    bound: HashMap<u32, Bound>,
    changes: u64,
}

type RowResult<T> = Result<T, String>;

impl Transformer {
    pub fn new(plan: Arc<Plan>) -> Self {
        Transformer {
            plan,
            bound: HashMap::new(),
            changes: 0,
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
            let b = bind(&self.plan, rel, lsn)?;
            self.bound.insert(rel.oid, b);
        }
        self.bound
            .get(&rel.oid)
            .ok_or_else(|| TransformError::Unmapped {
                table: rel.qualified(),
                lsn,
            })
    }

    /// Changes to remodel's own state tables (which a publication FOR ALL TABLES carries) are
    /// not the app's data: passed over, not counted.
    pub fn ignores(&self, rel: &Relation) -> bool {
        rel.schema == self.plan.state_schema && !self.plan.tables.contains_key(&rel.qualified())
    }

    /// Transform one change, appending its target operations to `out`. A row the mapping
    /// cannot transform is an error, or (on_error = "dead_letter") one [`TargetOp::DeadLetter`].
    pub fn transform(
        &mut self,
        change: &Change,
        out: &mut Vec<TargetOp>,
    ) -> Result<(), TransformError> {
        let lsn = change.commit_lsn;
        if self.ignores(&change.rel) {
            return Ok(());
        }
        self.changes += 1;
        let seq = self.changes;
        let b = self.bind(&change.rel, lsn)?;
        let mark = out.len();
        let Err((key, reason)) = ops(b, change, seq, out) else {
            return Ok(());
        };
        out.truncate(mark);
        let key = key.unwrap_or_else(|| change.key.clone());
        if b.table.on_error == OnError::DeadLetter && change.op != Op::Truncate {
            let tuple = change.new.as_ref().or(change.old.as_ref());
            out.push(TargetOp::DeadLetter(DeadLetter {
                source_rel: b.name.clone(),
                key,
                version: lsn,
                op: change.op.as_str(),
                reason,
                row: tuple.map(|t| row_json(&b.rel, t)).unwrap_or_default(),
            }));
            return Ok(());
        }
        Err(TransformError::Row {
            table: b.name.to_string(),
            op: change.op.as_str(),
            key,
            lsn,
            reason,
        })
    }
}

/// A source tuple as a JSON object of text values (dead letters).
pub fn row_json(rel: &Relation, t: &Tuple) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (c, d) in rel.columns.iter().zip(t) {
        let v = match d {
            Datum::Text(s) => serde_json::Value::String(s.clone()),
            Datum::Null => serde_json::Value::Null,
            Datum::Unchanged => serde_json::json!({"unchanged_toast": true}),
            Datum::Binary(_) => serde_json::json!({"binary": true}),
        };
        m.insert(c.name.clone(), v);
    }
    serde_json::Value::Object(m)
}

fn bind(plan: &Plan, rel: &Arc<Relation>, lsn: Lsn) -> Result<Bound, TransformError> {
    let name = rel.qualified();
    // Written after the plan was compiled (see `Plan::compiled_at`): a difference is news.
    let news = lsn >= plan.compiled_at;
    let by_oid = || {
        plan.tables
            .values()
            .find(|t| t.source_oid == rel.oid && t.source_oid != 0)
            .cloned()
    };
    let table = match plan.tables.get(&name).cloned() {
        Some(t) => t,
        // The same table (by oid) under another name. After compiling: renamed under the
        // stream. Before: the plan already has its new name; this is its history.
        None => match by_oid() {
            Some(old) if news => {
                return Err(TransformError::RenamedTable {
                    old: old.source.clone(),
                    new: name,
                    lsn,
                })
            }
            Some(t) => t,
            None => return Err(TransformError::Unmapped { table: name, lsn }),
        },
    };
    if let Some(new) = rel
        .columns
        .iter()
        .find(|c| !table.known_columns.contains(&c.name))
    {
        // One known column gone and one unknown of the same type arrived: a rename (whose
        // "new column" fix, mapping it as drop, would silently stop filling the target).
        let gone: Vec<&(String, u32, i32)> = table
            .source_types
            .iter()
            .filter(|(n, ..)| rel.column_position(n).is_none())
            .collect();
        let unknown = rel
            .columns
            .iter()
            .filter(|c| !table.known_columns.contains(&c.name))
            .count();
        if let ([(old, oid, _)], 1, true) = (gone.as_slice(), unknown, news) {
            if *oid == new.type_oid {
                return Err(TransformError::RenamedColumn {
                    table: name.clone(),
                    old: old.clone(),
                    new: new.name.clone(),
                    lsn,
                });
            }
        }
        return Err(TransformError::NewColumn {
            table: name.clone(),
            column: new.name.clone(),
            lsn,
        });
    }
    let drift = |c: &str| TransformError::SchemaDrift {
        table: name.clone(),
        column: c.to_string(),
        lsn,
    };
    let cols: Vec<Option<usize>> = table
        .columns
        .iter()
        .map(|(c, _)| rel.column_position(c))
        .collect();
    let plan_col = |c: &str| -> Result<usize, TransformError> {
        let i = table
            .columns
            .iter()
            .position(|(n, _)| n == c)
            .ok_or_else(|| drift(c))?;
        cols[i].ok_or_else(|| drift(c))?;
        Ok(i)
    };
    let key_pos = table
        .source_key
        .iter()
        .map(|c| rel.column_position(c).ok_or_else(|| drift(c)))
        .collect::<Result<Vec<_>, _>>()?;
    // Columns expressions, the filter and the custom transform read must all be there.
    let mut used: Vec<usize> = Vec::new();
    if let Some(f) = &table.filter {
        used.extend_from_slice(f.columns_used());
    }
    if let Some(c) = &table.custom {
        used.extend_from_slice(&c.reads);
    }
    let mut outputs = Vec::new();
    let mut split_col = Vec::new();
    for o in &table.outputs {
        let mut v = Vec::new();
        for c in &o.columns {
            v.push(match &c.expr {
                Expr::Column { name, .. } | Expr::Lookup { from: name, .. } => {
                    Some(plan_col(name)?)
                }
                Expr::Computed { expr, .. } => {
                    used.extend_from_slice(expr.columns_used());
                    None
                }
                _ => None,
            });
        }
        outputs.push(v);
        split_col.push(match o.split() {
            Some(s) => Some(plan_col(&s.column)?),
            None => None,
        });
    }
    for &i in &used {
        if cols.get(i).copied().flatten().is_none() {
            return Err(drift(&table.columns[i].0));
        }
    }
    // A type changed under the stream, on a column the mapping reads: the compiled casts and
    // expressions no longer fit. Only for transactions after the plan was compiled: before
    // that, a Relation may describe history the plan already moved past (a replay after a
    // restart), and stopping there would stop forever. Type oid 0: a relation built by
    // backfill or a retry, which carries no types.
    if lsn >= plan.compiled_at {
        let mut read: Vec<&str> = table.source_key.iter().map(String::as_str).collect();
        read.extend(used.iter().map(|&i| table.columns[i].0.as_str()));
        for o in &outputs {
            read.extend(o.iter().flatten().map(|&i| table.columns[i].0.as_str()));
        }
        read.extend(
            split_col
                .iter()
                .flatten()
                .map(|&i| table.columns[i].0.as_str()),
        );
        for c in rel
            .columns
            .iter()
            .filter(|c| c.type_oid != 0 && read.contains(&c.name.as_str()))
        {
            let Some((_, oid, typmod)) = table.source_types.iter().find(|(n, ..)| *n == c.name)
            else {
                continue;
            };
            if (*oid, *typmod) != (c.type_oid, c.type_modifier) {
                let from = table
                    .columns
                    .iter()
                    .find(|(n, _)| *n == c.name)
                    .map(|(_, t)| t.clone())
                    .unwrap_or_default();
                return Err(TransformError::TypeChanged {
                    table: name.clone(),
                    column: c.name.clone(),
                    from,
                    to_oid: c.type_oid,
                    to_typmod: c.type_modifier,
                    lsn,
                });
            }
        }
    }
    Ok(Bound {
        rel: rel.clone(),
        table,
        name: Arc::from(name.as_str()),
        key_pos,
        cols,
        outputs,
        split_col,
    })
}

/// The source key of `tuple`; an unchanged (TOASTed) key column is taken from `fallback`.
fn key_of(pos: &[usize], tuple: &Tuple, fallback: Option<&Tuple>) -> RowResult<SourceKey> {
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
