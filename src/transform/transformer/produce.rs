//! Producing target operations from one bound change: the row's cells (an unchanged TOAST value
//! taken from the old tuple where it has one), the mapping's expressions and filter, and per
//! output the upserts, deletes, clears and child sets — in plan order, reversed for removals.

use super::*;

/// The row's cells by plan column; unchanged values come from `fallback` (a full old tuple).
pub(super) fn cells<'a>(
    b: &Bound,
    t: &'a Tuple,
    fallback: Option<&'a Tuple>,
) -> RowResult<Vec<Cell<'a>>> {
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
pub(super) struct Eval {
    keep: bool,
    custom: Option<Vec<Value>>,
}

pub(super) fn evaluate(b: &Bound, cells: &[Cell<'_>]) -> RowResult<Eval> {
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
            let row = crate::transform::custom::SourceRow {
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
pub(super) fn values(
    b: &Bound,
    oi: usize,
    cells: &[Cell<'_>],
    eval: &Eval,
) -> RowResult<Vec<Value>> {
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

pub(super) fn target_key(o: &OutputPlan, row: &[Value]) -> Vec<Value> {
    o.key.iter().map(|&k| row[k].clone()).collect()
}

/// The ops of one change, or the key and reason it cannot be transformed.
pub(super) fn ops(
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
                        if !removal && absent(o, &row) && moved.is_none() {
                            // A part (the way back of a merge) with nothing in it now: it goes
                            // only if it had something before (an empty part row stays).
                            let was_absent = match (&old_cells, &old_eval) {
                                (Some(c), Some(ev)) => absent(o, &values(b, oi, c, ev).map_err(e)?),
                                _ => false,
                            };
                            if was_absent || change.op == Op::Insert {
                                continue;
                            }
                        }
                        if removal || absent(o, &row) {
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

/// Whether a part's row is not there: every column that says so is NULL (an unchanged TOAST
/// value is not NULL). Always false for an output that is not a part.
pub(super) fn absent(o: &OutputPlan, row: &[Value]) -> bool {
    !o.present.is_empty() && o.present.iter().all(|&i| row[i] == Value::Null)
}

/// A merge output's non-key column values (what a Clear compares against).
pub(super) fn own_values(o: &OutputPlan, row: &[Value]) -> Vec<Value> {
    (0..o.columns.len())
        .filter(|i| !o.key.contains(i))
        .map(|i| row[i].clone())
        .collect()
}

pub(super) fn parent_values(sp: &SplitPlan, row: &[Value]) -> Vec<Value> {
    sp.parent.iter().map(|&i| row[i].clone()).collect()
}

/// The id of a split output's child: UUID v5 in `namespace` of the parent's encoded source key
/// ([`SourceKey::encode`]) and the item's normalised name or position. Deterministic, so
/// replays, restarts and backfill give a child the same id.
pub fn child_id(
    namespace: &uuid::Uuid,
    parent_key: &str,
    key: ChildKey,
    part: &crate::transform::split::Part,
) -> uuid::Uuid {
    let item = match key {
        ChildKey::Name => format!("name:{}", part.normalized),
        ChildKey::Position => format!("position:{}", part.position),
    };
    uuid::Uuid::new_v5(namespace, format!("{parent_key}\u{1f}{item}").as_bytes())
}

/// The child rows of one parent: one per item of `list`.
pub(super) fn children(
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
