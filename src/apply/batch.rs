//! Turning an ordered list of [`TargetOp`]s into set-based statement groups.
//!
//! Order matters across tables (foreign keys) and across operations on one key, so ops are cut
//! into *runs*: maximal stretches of the same output and kind, executed in stream order. Inside
//! a run keys are distinct after merging (a later upsert of a key folds into the earlier one,
//! keeping earlier values for columns the later one left unchanged), so one statement per run
//! (per set of present columns) is equivalent to applying the ops one by one.

use std::collections::HashMap;
use std::sync::Arc;

use crate::lsn::Lsn;
use crate::transform::{DeadLetter, Guard, OutputPlan, TargetOp, Value};

/// A truncated source table: name, version, and the target outputs it feeds.
pub type TruncatedTable = (Arc<str>, Lsn, Vec<Arc<OutputPlan>>);
/// Merge-output clears: guard, target key, the values they must still hold.
pub type ClearRows = Vec<(Guard, Vec<Value>, Option<Vec<Value>>)>;
/// Rows of one statement: the version guard and the values.
pub type GuardedRows = Vec<(Guard, Vec<Value>)>;

#[derive(Debug)]
pub enum Group {
    /// Rows with every column present (INSERT .. ON CONFLICT).
    Upsert {
        output: Arc<OutputPlan>,
        rows: Vec<(Guard, Vec<Value>)>,
    },
    /// Rows with some columns unchanged: UPDATE of `present` only, found by their key or, for
    /// a key change (`from` non-empty, one per row), by their old key.
    Update {
        output: Arc<OutputPlan>,
        present: Vec<usize>,
        rows: GuardedRows,
        from: Vec<Vec<Value>>,
    },
    Delete {
        output: Arc<OutputPlan>,
        rows: Vec<(Guard, Vec<Value>)>,
    },
    Truncate {
        tables: Vec<TruncatedTable>,
    },
    /// Merge-output columns to clear: (guard, target key, values they must still hold).
    Clear {
        output: Arc<OutputPlan>,
        rows: ClearRows,
    },
    /// Child sets to replace: per parent (guard, parent values, deleted) and its rows.
    Children {
        output: Arc<OutputPlan>,
        parents: Vec<ChildSet>,
    },
    DeadLetters {
        rows: Vec<DeadLetter>,
    },
}

/// One parent's new child set.
#[derive(Debug, Clone)]
pub struct ChildSet {
    pub guard: Guard,
    pub parent: Vec<Value>,
    pub deleted: bool,
    pub rows: Vec<Vec<Value>>,
}

impl Group {
    pub fn len(&self) -> usize {
        match self {
            Group::Upsert { rows, .. }
            | Group::Update { rows, .. }
            | Group::Delete { rows, .. } => rows.len(),
            Group::Clear { rows, .. } => rows.len(),
            Group::Children { parents, .. } => parents.len(),
            Group::DeadLetters { rows } => rows.len(),
            Group::Truncate { tables } => tables.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The first row's guard, to name a key in errors.
    pub fn first_guard(&self) -> Option<&Guard> {
        match self {
            Group::Upsert { rows, .. }
            | Group::Update { rows, .. }
            | Group::Delete { rows, .. } => rows.first().map(|r| &r.0),
            Group::Clear { rows, .. } => rows.first().map(|r| &r.0),
            Group::Children { parents, .. } => parents.first().map(|p| &p.guard),
            Group::Truncate { .. } | Group::DeadLetters { .. } => None,
        }
    }
    /// One group per row (for finding the row the target rejects).
    pub fn split(&self) -> Vec<Group> {
        match self {
            Group::Upsert { output, rows } => rows
                .iter()
                .map(|r| Group::Upsert {
                    output: output.clone(),
                    rows: vec![r.clone()],
                })
                .collect(),
            Group::Update {
                output,
                present,
                rows,
                from,
            } => rows
                .iter()
                .enumerate()
                .map(|(i, r)| Group::Update {
                    output: output.clone(),
                    present: present.clone(),
                    rows: vec![r.clone()],
                    from: from.get(i).cloned().into_iter().collect(),
                })
                .collect(),
            Group::Delete { output, rows } => rows
                .iter()
                .map(|r| Group::Delete {
                    output: output.clone(),
                    rows: vec![r.clone()],
                })
                .collect(),
            Group::Clear { output, rows } => rows
                .iter()
                .map(|r| Group::Clear {
                    output: output.clone(),
                    rows: vec![r.clone()],
                })
                .collect(),
            Group::Children { output, parents } => parents
                .iter()
                .map(|p| Group::Children {
                    output: output.clone(),
                    parents: vec![p.clone()],
                })
                .collect(),
            Group::DeadLetters { rows } => rows
                .iter()
                .map(|r| Group::DeadLetters {
                    rows: vec![r.clone()],
                })
                .collect(),
            Group::Truncate { tables } => vec![Group::Truncate {
                tables: tables.clone(),
            }],
        }
    }
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum RunKind {
    Upsert(usize),
    Move(usize),
    Delete(usize),
    Clear(usize),
    Children(usize),
    DeadLetter,
    Truncate,
}

fn kind(op: &TargetOp) -> RunKind {
    match op {
        TargetOp::Upsert {
            output,
            from: Some(_),
            ..
        } => RunKind::Move(output.id),
        TargetOp::Upsert { output, .. } => RunKind::Upsert(output.id),
        TargetOp::Delete { output, .. } => RunKind::Delete(output.id),
        TargetOp::Clear { output, .. } => RunKind::Clear(output.id),
        TargetOp::Children { output, .. } => RunKind::Children(output.id),
        TargetOp::DeadLetter(_) => RunKind::DeadLetter,
        TargetOp::Truncate { .. } => RunKind::Truncate,
    }
}

/// Where an op may move inside a window: writes go first in plan order (a row before the rows
/// that reference it), removals after them in reverse plan order (children before their
/// parent). None: the op stays where it is (a window of its own).
fn phase(op: &TargetOp) -> Option<(u8, i64)> {
    match op {
        TargetOp::Upsert {
            from: None, output, ..
        } => Some((0, output.id as i64)),
        TargetOp::Children {
            deleted: false,
            output,
            ..
        } => Some((0, output.id as i64)),
        TargetOp::Children {
            deleted: true,
            output,
            ..
        }
        | TargetOp::Delete { output, .. } => Some((1, -(output.id as i64))),
        _ => None,
    }
}

/// Reorder `ops` so that many changes make few large statements instead of one per output per
/// row (a split table otherwise alternates parent and child ops; a pgbench transaction touches
/// four tables). Inside a window ops are stably sorted by [`phase`]: writes in plan order, then
/// removals in reverse plan order, which keeps each change's own order. A window holds:
/// - ops of outputs that take part in a foreign key ([`OutputPlan::linked`]) of one source
///   table only; unlinked outputs' ops of any source table (no constraint orders them);
/// - a source row in several changes only while none of them removed it: repeated writes of a
///   row keep their order (the sort is stable) and merge, last values winning, and a removal
///   after writes stays after them; a write after a removal would be moved before it, so it
///   starts a new window.
fn reorder(ops: Vec<TargetOp>) -> Vec<TargetOp> {
    let mut out = Vec::with_capacity(ops.len());
    let mut window: Vec<TargetOp> = Vec::new();
    // Per source row in the window: the last change that touched it, and whether a change removed it.
    let mut keys: HashMap<(Arc<str>, crate::change::SourceKey), (u64, bool)> = HashMap::new();
    // The one source table whose linked outputs the window holds.
    let mut linked_rel: Option<Arc<str>> = None;
    let flush = |window: &mut Vec<TargetOp>, out: &mut Vec<TargetOp>| {
        window.sort_by_key(|op| phase(op).unwrap_or((2, 0)));
        out.append(window);
    };
    for op in ops {
        let linked = op.output().is_some_and(|o| o.linked);
        let fits = match (phase(&op), op.guard()) {
            (Some((p, _)), Some(g)) => {
                let table_ok = !linked || linked_rel.as_ref().is_none_or(|r| *r == g.source_rel);
                let key_ok = keys
                    .get(&(g.source_rel.clone(), g.key.clone()))
                    .is_none_or(|&(c, removed)| c == g.change || !removed || p == 1);
                table_ok && key_ok
            }
            _ => false,
        };
        if !fits {
            flush(&mut window, &mut out);
            keys.clear();
            linked_rel = None;
            if phase(&op).is_none() {
                out.push(op);
                continue;
            }
        }
        if let (Some((p, _)), Some(g)) = (phase(&op), op.guard()) {
            let e = keys
                .entry((g.source_rel.clone(), g.key.clone()))
                .or_insert((g.change, false));
            e.0 = g.change;
            e.1 |= p == 1;
            if linked {
                linked_rel = Some(g.source_rel.clone());
            }
        }
        window.push(op);
    }
    flush(&mut window, &mut out);
    out
}

/// Cut `ops` into runs and merge each run into statement groups, preserving order (up to
/// [`reorder`]).
pub fn groups(ops: Vec<TargetOp>) -> Vec<Group> {
    let ops = reorder(ops);
    let mut out = Vec::new();
    let mut run: Vec<TargetOp> = Vec::new();
    for op in ops {
        if let Some(last) = run.last() {
            if kind(last) != kind(&op) {
                finish_run(std::mem::take(&mut run), &mut out);
            }
        }
        run.push(op);
    }
    finish_run(run, &mut out);
    out
}

fn key_of(output: &OutputPlan, row: &[Value]) -> Vec<Value> {
    output.key.iter().map(|&k| row[k].clone()).collect()
}

fn present_columns(row: &[Value]) -> Vec<usize> {
    row.iter()
        .enumerate()
        .filter(|(_, v)| **v != Value::Unchanged)
        .map(|(i, _)| i)
        .collect()
}

fn finish_run(run: Vec<TargetOp>, out: &mut Vec<Group>) {
    let Some(first) = run.first() else { return };
    match kind(first) {
        RunKind::Truncate => {
            let tables = run
                .into_iter()
                .filter_map(|op| match op {
                    TargetOp::Truncate {
                        source_rel,
                        version,
                        outputs,
                    } => Some((source_rel, version, outputs)),
                    _ => None,
                })
                .collect();
            out.push(Group::Truncate { tables });
        }
        RunKind::DeadLetter => {
            let rows = run
                .into_iter()
                .filter_map(|op| match op {
                    TargetOp::DeadLetter(d) => Some(d),
                    _ => None,
                })
                .collect();
            out.push(Group::DeadLetters { rows });
        }
        RunKind::Clear(_) => {
            // Not merged: each compares against the values it saw, in order.
            let mut output = None;
            let mut rows = Vec::new();
            for op in run {
                if let TargetOp::Clear {
                    output: o,
                    guard,
                    key,
                    values,
                } = op
                {
                    output.get_or_insert(o);
                    rows.push((guard, key, values));
                }
            }
            // One statement handles distinct keys only: cut where a key repeats.
            if let Some(output) = output {
                let mut seen = std::collections::HashSet::new();
                let mut part = Vec::new();
                for r in rows {
                    if !seen.insert(r.1.clone()) {
                        out.push(Group::Clear {
                            output: output.clone(),
                            rows: std::mem::take(&mut part),
                        });
                        seen.clear();
                        seen.insert(r.1.clone());
                    }
                    part.push(r);
                }
                out.push(Group::Clear { output, rows: part });
            }
        }
        RunKind::Children(_) => {
            // A later child set of a parent replaces an earlier one in the run.
            let mut output = None;
            let mut index: HashMap<String, usize> = HashMap::new();
            let mut parents: Vec<ChildSet> = Vec::new();
            for op in run {
                if let TargetOp::Children {
                    output: o,
                    guard,
                    parent,
                    rows,
                    deleted,
                } = op
                {
                    output.get_or_insert(o);
                    let set = ChildSet {
                        guard,
                        parent,
                        deleted,
                        rows,
                    };
                    match index.get(&set.guard.key.encode()) {
                        Some(&i) => parents[i] = set,
                        None => {
                            index.insert(set.guard.key.encode(), parents.len());
                            parents.push(set);
                        }
                    }
                }
            }
            if let Some(output) = output {
                out.push(Group::Children { output, parents });
            }
        }
        RunKind::Delete(_) => {
            let mut output = None;
            let mut index: HashMap<Vec<Value>, usize> = HashMap::new();
            let mut rows: Vec<(Guard, Vec<Value>)> = Vec::new();
            for op in run {
                if let TargetOp::Delete {
                    output: o,
                    guard,
                    key,
                } = op
                {
                    output.get_or_insert(o);
                    match index.get(&key) {
                        Some(&i) => rows[i] = (guard, key),
                        None => {
                            index.insert(key.clone(), rows.len());
                            rows.push((guard, key));
                        }
                    }
                }
            }
            if let Some(output) = output {
                out.push(Group::Delete { output, rows });
            }
        }
        RunKind::Move(_) => {
            // Key changes keep their order and are not merged (rare; each names its old row).
            for op in run {
                if let TargetOp::Upsert {
                    output,
                    guard,
                    row,
                    from: Some(from),
                } = op
                {
                    let present = present_columns(&row);
                    out.push(Group::Update {
                        output,
                        present,
                        rows: vec![(guard, row)],
                        from: vec![from],
                    });
                }
            }
        }
        RunKind::Upsert(_) => {
            let mut output: Option<Arc<OutputPlan>> = None;
            let mut index: HashMap<Vec<Value>, usize> = HashMap::new();
            let mut rows: Vec<(Guard, Vec<Value>)> = Vec::new();
            for op in run {
                if let TargetOp::Upsert {
                    output: o,
                    guard,
                    row,
                    from: None,
                } = op
                {
                    let key = key_of(&o, &row);
                    output.get_or_insert(o);
                    match index.get(&key) {
                        Some(&i) => {
                            let merged: Vec<Value> = row
                                .into_iter()
                                .zip(rows[i].1.iter())
                                .map(|(new, old)| match new {
                                    Value::Unchanged => old.clone(),
                                    v => v,
                                })
                                .collect();
                            rows[i] = (guard, merged);
                        }
                        None => {
                            index.insert(key, rows.len());
                            rows.push((guard, row));
                        }
                    }
                }
            }
            let Some(output) = output else { return };
            // Split by which columns are present, keeping the full rows together.
            let mut by_mask: Vec<(Vec<usize>, GuardedRows)> = Vec::new();
            for (g, row) in rows {
                let present = present_columns(&row);
                match by_mask.iter_mut().find(|(m, _)| *m == present) {
                    Some((_, rs)) => rs.push((g, row)),
                    None => by_mask.push((present, vec![(g, row)])),
                }
            }
            for (present, rows) in by_mask {
                if present.len() == output.columns.len() {
                    out.push(Group::Upsert {
                        output: output.clone(),
                        rows,
                    });
                } else {
                    out.push(Group::Update {
                        output: output.clone(),
                        present,
                        rows,
                        from: vec![],
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
