//! The way back of a merge ([`PartMapping`]): part of a source row written as a row of
//! another table, compiled as a row output of only its columns. Read-only, like the rest of
//! the compiler.

use std::sync::Arc;

use super::super::catalog::{Env, TableInfo};
use super::super::expr::ColumnRef;
use super::super::mapping::{ColumnAction, ColumnMap, ColumnSpec, PartMapping, TableMapping};
use super::super::plan::{OutputKind, OutputPlan, Plan};
use super::{output, qualify, Feeds, Problems};

/// A part of the source row written as a row of another table (the way back of a merge):
/// compiled as a row output of only its columns, present while one of its non-key columns is
/// not NULL.
pub(super) async fn part_output(
    (part, source_key, refs): (&PartMapping, &[String], &[ColumnRef<'_>]),
    m: &TableMapping,
    s: &TableInfo,
    env: &Env<'_>,
    problems: &mut Problems,
    plan: &mut Plan,
    feeds: &mut Feeds,
) -> Option<Arc<OutputPlan>> {
    let target = qualify(&part.target);
    let Some(t) = env.target.get(&target) else {
        problems.add(
            &s.qualified(),
            format!(
                "table {target}, which a part of {} is written back to, does not exist",
                s.qualified()
            ),
            format!("create {target}, or switch with --no-fallback"),
        );
        return None;
    };
    let columns = s
        .columns
        .iter()
        .map(|c| {
            let spec = match part.columns.get(&c.name) {
                Some(to) if *to == c.name => ColumnSpec::Action(ColumnAction::Keep),
                Some(to) => ColumnSpec::Map(ColumnMap {
                    rename: Some(to.clone()),
                    cast: None,
                }),
                None => ColumnSpec::Action(ColumnAction::Drop),
            };
            (c.name.clone(), spec)
        })
        .collect();
    let pm = TableMapping {
        source: m.source.clone(),
        target: Some(target),
        key: m.key.clone(),
        columns,
        ..TableMapping::default()
    };
    let (row, filled) = super::super::compile_row::row_output(
        &pm,
        s,
        t,
        source_key,
        refs,
        None,
        env,
        &mut problems.0,
    )
    .await;
    feeds
        .entry(t.qualified())
        .or_default()
        .push((s.qualified(), false, filled));
    let (cols, key) = row?;
    let present = (0..cols.len()).filter(|i| !key.contains(i)).collect();
    Some(output(
        plan,
        &s.qualified(),
        t,
        cols,
        key,
        OutputKind::Row,
        present,
    ))
}
