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

    /// Transform one change, appending its target operations to `out`. A row the mapping
    /// cannot transform is an error, or (on_error = "dead_letter") one [`TargetOp::DeadLetter`].
    pub fn transform(
        &mut self,
        change: &Change,
        out: &mut Vec<TargetOp>,
    ) -> Result<(), TransformError> {
        let lsn = change.commit_lsn;
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

/// The row's cells by plan column; unchanged values come from `fallback` (a full old tuple).
fn cells<'a>(b: &Bound, t: &'a Tuple, fallback: Option<&'a Tuple>) -> RowResult<Vec<Cell<'a>>> {
    b.cols
        .iter()
        .map(|p| {
            let Some(p) = *p else { return Ok(Cell::Null) };
            let d = match t.get(p) {
                Some(Datum::Unchanged) => {
                    fallback.and_then(|f| f.get(p)).unwrap_or(&Datum::Unchanged)
                }
                Some(d) => d,
                None => return Err(format!("tuple has no column #{p}")),
            };
            Ok(match d {
                Datum::Null => Cell::Null,
                Datum::Unchanged => Cell::Unchanged,
                Datum::Text(s) => Cell::Text(s),
                Datum::Binary(_) => return Err("binary-format value in the stream".into()),
            })
        })
        .collect()
}

/// Whether the row is in the target: the filter and the custom transform's verdict.
struct Eval {
    keep: bool,
    custom: Option<Vec<Value>>,
}

fn evaluate(b: &Bound, cells: &[Cell<'_>]) -> RowResult<Eval> {
    let t = &b.table;
    let texts: Vec<Option<&str>> = cells.iter().map(|c| c.text()).collect();
    let mut keep = true;
    if let Some(f) = &t.filter {
        if let Some(&i) = f
            .columns_used()
            .iter()
            .find(|&&i| cells[i] == Cell::Unchanged)
        {
            return Err(format!(
                "the filter reads {}, an unchanged TOASTed value the stream did not send; set REPLICA IDENTITY FULL on the source table",
                t.columns[i].0
            ));
        }
        keep = f.eval_filter(&texts).map_err(|e| format!("filter: {e}"))?;
    }
    let mut custom = None;
    if let (true, Some(c)) = (keep, &t.custom) {
        let unchanged = c
            .reads
            .iter()
            .filter(|&&i| cells[i] == Cell::Unchanged)
            .count();
        if unchanged > 0 && unchanged < c.reads.len() {
            return Err(format!(
                "transform {} reads an unchanged TOASTed value the stream did not send, next to changed ones; set REPLICA IDENTITY FULL on the source table",
                c.name
            ));
        }
        if unchanged > 0 {
            custom = Some(vec![Value::Unchanged; c.width]);
        } else {
            let names: Vec<String> = t.columns.iter().map(|(n, _)| n.clone()).collect();
            let row = super::custom::SourceRow {
                names: &names,
                values: &texts,
            };
            let mut vals = vec![None; c.width];
            keep = c
                .transform
                .transform(&row, &mut vals)
                .map_err(|e| format!("transform {}: {e}", c.name))?;
            custom = Some(
                vals.into_iter()
                    .map(|v| v.map_or(Value::Null, Value::Text))
                    .collect(),
            );
        }
    }
    Ok(Eval { keep, custom })
}

/// The values of output `oi`'s columns for a row.
fn values(b: &Bound, oi: usize, cells: &[Cell<'_>], eval: &Eval) -> RowResult<Vec<Value>> {
    let o = &b.table.outputs[oi];
    let texts: Vec<Option<&str>> = cells.iter().map(|c| c.text()).collect();
    o.columns
        .iter()
        .zip(&b.outputs[oi])
        .map(|(c, src)| match (&c.expr, src) {
            (Expr::Column { .. } | Expr::Lookup { .. }, Some(i)) => Ok(cells[*i].value()),
            (Expr::Constant(v), _) => Ok(Value::Text(v.clone())),
            (Expr::Computed { expr, .. }, _) => {
                let used = expr.columns_used();
                let unchanged = used.iter().filter(|&&i| cells[i] == Cell::Unchanged).count();
                if unchanged > 0 && unchanged == used.len() {
                    // Nothing it reads changed: the target keeps its value.
                    return Ok(Value::Unchanged);
                }
                if unchanged > 0 {
                    return Err(format!(
                        "computing {}: it reads an unchanged TOASTed value the stream did not send, next to changed ones; set REPLICA IDENTITY FULL on the source table",
                        c.name
                    ));
                }
                match expr.eval(&texts) {
                    Ok(v) => Ok(v.map_or(Value::Null, Value::Text)),
                    Err(e) => Err(format!("computing {}: {e}", c.name)),
                }
            }
            // Filled per item by `children`.
            (Expr::Child(_), _) => Ok(Value::Null),
            (Expr::Custom { slot }, _) => Ok(eval
                .custom
                .as_ref()
                .and_then(|v| v.get(*slot).cloned())
                .unwrap_or(Value::Null)),
            _ => Err(format!("column {} has no source", c.name)),
        })
        .collect()
}

fn target_key(o: &OutputPlan, row: &[Value]) -> Vec<Value> {
    o.key.iter().map(|&k| row[k].clone()).collect()
}

/// The ops of one change, or the key and reason it cannot be transformed.
fn ops(
    b: &Bound,
    change: &Change,
    seq: u64,
    out: &mut Vec<TargetOp>,
) -> Result<(), (Option<SourceKey>, String)> {
    let lsn = change.commit_lsn;
    let guard = |key: &SourceKey| Guard {
        source_rel: b.name.clone(),
        key: key.clone(),
        version: lsn,
        change: seq,
    };
    let full = change.rel.replica_identity == b'f';
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
                .ok_or((None, "no new tuple".to_string()))?;
            let new_key = key_of(&b.key_pos, new, change.old.as_ref()).map_err(|r| (None, r))?;
            let e = |r: String| (Some(new_key.clone()), r);
            let old_key = match &change.old {
                Some(old) => {
                    Some(key_of(&b.key_pos, old, None).map_err(|r| e(format!("old tuple: {r}")))?)
                }
                None => None,
            };
            let moved = old_key.filter(|k| *k != new_key);
            let old_full = change.old.as_ref().filter(|_| full);
            let new_cells = cells(b, new, old_full).map_err(e)?;
            let eval = evaluate(b, &new_cells).map_err(e)?;
            let old_cells = match old_full {
                Some(o) => Some(cells(b, o, None).map_err(e)?),
                None => None,
            };
            let old_eval = match &old_cells {
                Some(c) => Some(evaluate(b, c).map_err(e)?),
                None => None,
            };
            let removal = !eval.keep;
            let order: Vec<usize> = if removal {
                (0..b.table.outputs.len()).rev().collect()
            } else {
                (0..b.table.outputs.len()).collect()
            };
            for oi in order {
                let o = &b.table.outputs[oi];
                let row = values(b, oi, &new_cells, &eval).map_err(e)?;
                match &o.kind {
                    OutputKind::Row => {
                        if removal {
                            if change.op == Op::Update {
                                let mut key = target_key(o, &row);
                                if let (Some(old_key), Some(old)) = (&moved, &change.old) {
                                    key = target_key(
                                        o,
                                        &values(b, oi, &cells(b, old, None).map_err(e)?, &eval)
                                            .map_err(e)?,
                                    );
                                    out.push(TargetOp::Delete {
                                        output: o.clone(),
                                        guard: guard(old_key),
                                        key,
                                    });
                                    key = target_key(o, &row);
                                }
                                out.push(TargetOp::Delete {
                                    output: o.clone(),
                                    guard: guard(&new_key),
                                    key,
                                });
                            }
                            continue;
                        }
                        let Some(old_key) = &moved else {
                            out.push(TargetOp::Upsert {
                                output: o.clone(),
                                guard: guard(&new_key),
                                row,
                                from: None,
                            });
                            continue;
                        };
                        // The key changed: the old row is gone (tombstone under the old key)
                        // and the row lives on under the new key.
                        let old = change
                            .old
                            .as_ref()
                            .ok_or_else(|| e("no old tuple".into()))?;
                        let from = target_key(
                            o,
                            &values(b, oi, &cells(b, old, None).map_err(e)?, &eval).map_err(e)?,
                        );
                        let partial = row.contains(&Value::Unchanged);
                        out.push(TargetOp::Upsert {
                            output: o.clone(),
                            guard: guard(&new_key),
                            row,
                            from: partial.then(|| from.clone()),
                        });
                        out.push(TargetOp::Delete {
                            output: o.clone(),
                            guard: guard(old_key),
                            key: from,
                        });
                    }
                    OutputKind::Merge => {
                        let new_tkey = target_key(o, &row);
                        let old_contrib = match (&old_cells, &old_eval) {
                            (Some(c), Some(ev)) if ev.keep => {
                                let r = values(b, oi, c, ev).map_err(e)?;
                                Some((target_key(o, &r), own_values(o, &r)))
                            }
                            _ => None,
                        };
                        if let Some((tkey, vals)) = old_contrib {
                            if removal || tkey != new_tkey || moved.is_some() {
                                let g = guard(moved.as_ref().unwrap_or(&new_key));
                                out.push(TargetOp::Clear {
                                    output: o.clone(),
                                    guard: g,
                                    key: tkey,
                                    values: Some(vals),
                                });
                            }
                        } else if removal && change.op == Op::Update && old_cells.is_none() {
                            out.push(TargetOp::Clear {
                                output: o.clone(),
                                guard: guard(&new_key),
                                key: new_tkey,
                                values: None,
                            });
                        }
                        if !removal {
                            out.push(TargetOp::Upsert {
                                output: o.clone(),
                                guard: guard(&new_key),
                                row,
                                from: None,
                            });
                        }
                    }
                    OutputKind::Split(sp) => {
                        if let Some(old_key) = &moved {
                            let old = change
                                .old
                                .as_ref()
                                .ok_or_else(|| e("no old tuple".into()))?;
                            let parent = parent_values(
                                sp,
                                &values(b, oi, &cells(b, old, None).map_err(e)?, &eval)
                                    .map_err(e)?,
                            );
                            out.push(TargetOp::Children {
                                output: o.clone(),
                                guard: guard(old_key),
                                parent,
                                rows: vec![],
                                deleted: true,
                            });
                        }
                        let parent = parent_values(sp, &row);
                        if removal {
                            if change.op == Op::Update {
                                out.push(TargetOp::Children {
                                    output: o.clone(),
                                    guard: guard(&new_key),
                                    parent,
                                    rows: vec![],
                                    deleted: true,
                                });
                            }
                            continue;
                        }
                        let list = b.split_col[oi].map(|i| new_cells[i]).unwrap_or(Cell::Null);
                        if list == Cell::Unchanged {
                            // The list was not sent: the child set is as the target has it.
                            continue;
                        }
                        let rows = children(o, sp, &new_key, &row, list.text());
                        out.push(TargetOp::Children {
                            output: o.clone(),
                            guard: guard(&new_key),
                            parent,
                            rows,
                            deleted: false,
                        });
                    }
                }
            }
        }
        Op::Delete => {
            let old = change
                .old
                .as_ref()
                .ok_or((None, "no old tuple".to_string()))?;
            let key = key_of(&b.key_pos, old, None).map_err(|r| (None, r))?;
            let e = |r: String| (Some(key.clone()), r);
            let old_cells = cells(b, old, None).map_err(e)?;
            let no_eval = Eval {
                keep: true,
                custom: None,
            };
            for oi in (0..b.table.outputs.len()).rev() {
                let o = &b.table.outputs[oi];
                let row = values(b, oi, &old_cells, &no_eval).map_err(e)?;
                match &o.kind {
                    OutputKind::Row => out.push(TargetOp::Delete {
                        output: o.clone(),
                        guard: guard(&key),
                        key: target_key(o, &row),
                    }),
                    OutputKind::Merge if full => {
                        let ev = evaluate(b, &old_cells).map_err(e)?;
                        if ev.keep {
                            let r = values(b, oi, &old_cells, &ev).map_err(e)?;
                            out.push(TargetOp::Clear {
                                output: o.clone(),
                                guard: guard(&key),
                                key: target_key(o, &r),
                                values: Some(own_values(o, &r)),
                            });
                        }
                    }
                    OutputKind::Merge => out.push(TargetOp::Clear {
                        output: o.clone(),
                        guard: guard(&key),
                        key: target_key(o, &row),
                        values: None,
                    }),
                    OutputKind::Split(sp) => out.push(TargetOp::Children {
                        output: o.clone(),
                        guard: guard(&key),
                        parent: parent_values(sp, &row),
                        rows: vec![],
                        deleted: true,
                    }),
                }
            }
        }
    }
    Ok(())
}

/// A merge output's non-key column values (what a Clear compares against).
fn own_values(o: &OutputPlan, row: &[Value]) -> Vec<Value> {
    (0..o.columns.len())
        .filter(|i| !o.key.contains(i))
        .map(|i| row[i].clone())
        .collect()
}

fn parent_values(sp: &SplitPlan, row: &[Value]) -> Vec<Value> {
    sp.parent.iter().map(|&i| row[i].clone()).collect()
}

/// The id of a split output's child: UUID v5 in `namespace` of the parent's encoded source key
/// ([`SourceKey::encode`]) and the item's normalised name or position. Deterministic, so
/// replays, restarts and backfill give a child the same id.
pub fn child_id(
    namespace: &uuid::Uuid,
    parent_key: &str,
    key: ChildKey,
    part: &super::split::Part,
) -> uuid::Uuid {
    let item = match key {
        ChildKey::Name => format!("name:{}", part.normalized),
        ChildKey::Position => format!("position:{}", part.position),
    };
    uuid::Uuid::new_v5(namespace, format!("{parent_key}\u{1f}{item}").as_bytes())
}

/// The child rows of one parent: one per item of `list`.
fn children(
    o: &OutputPlan,
    sp: &SplitPlan,
    parent_key: &SourceKey,
    row: &[Value],
    list: Option<&str>,
) -> Vec<Vec<Value>> {
    let parts = sp.splitter.split(list);
    let pkey = parent_key.encode();
    parts
        .iter()
        .map(|part| {
            o.columns
                .iter()
                .enumerate()
                .map(|(i, c)| match &c.expr {
                    Expr::Child(ChildField::Id) => {
                        Value::Text(child_id(&sp.namespace, &pkey, sp.key, part).to_string())
                    }
                    Expr::Child(ChildField::Position) => Value::Text(part.position.to_string()),
                    Expr::Child(ChildField::Name) => Value::Text(part.name.clone()),
                    Expr::Child(ChildField::Annotation(a)) => Value::Text(
                        if part.annotations.get(*a).copied().unwrap_or(false) {
                            "true"
                        } else {
                            "false"
                        }
                        .into(),
                    ),
                    _ => row[i].clone(),
                })
                .collect()
        })
        .collect()
}
