//! Whether a compiled plan can be run backwards (NEW → OLD) for a fallback, and why not, per
//! table and column, with the fix ([`problems`]); and the inverse mapping itself, as mapping
//! configuration NEW → OLD that the reverse stream compiles like any other ([`mappings`]).
//!
//! What inverts today: one row output per source table whose columns are source columns
//! (renamed or not), cast only along a lossless widening (the way back never loses a value the
//! forward way produced), and constants (NEW's value stays on NEW). A source column the mapping
//! drops keeps OLD's value on update; a row born on NEW needs it nullable or with a default.
//! A split comes back as list text ([`rebuilds`]), a key map through OLD's copy of it, and a
//! merge as parts of the merged row ([`PartMapping`]): each merging table gets its row back
//! from the merged row's key and its columns, and has no row while they are all NULL.
//! A custom transform runs backwards through its own [`super::custom::Transform::inverse`].
//! Refused: filters, computed columns, transforms without an inverse, merges of tables keyed
//! otherwise.
//!
//! Must never touch a database: it reads the plan and the source catalog as data.

use std::collections::HashMap;

use super::catalog::TableInfo;
use super::mapping::{ColumnAction, ColumnMap, ColumnSpec, LookupSpec, PartMapping, TableMapping};
use super::plan::{ChildField, Expr, OutputKind, OutputPlan, Plan, TablePlan};
use super::rebuild::RebuildPlan;
use super::Problem;

/// Source → target type pairs whose way back is lossless for every value the forward cast
/// produces (a widening: every source value is a target value, and converts back unchanged).
const WIDENINGS: &[(&str, &str)] = &[
    ("smallint", "integer"),
    ("smallint", "bigint"),
    ("integer", "bigint"),
    ("smallint", "numeric"),
    ("integer", "numeric"),
    ("bigint", "numeric"),
    ("real", "double precision"),
    ("character varying", "text"),
    ("character", "text"),
];

fn base(t: &str) -> &str {
    t.split('(').next().unwrap_or(t).trim()
}

/// Whether a value cast from `source` to `target` converts back to the same `source` value.
pub fn lossless(source: &str, target: &str) -> bool {
    let (s, t) = (base(source), base(target));
    (s == t && (source == target || !target.contains('('))) || WIDENINGS.contains(&(s, t))
}

/// The column of `o` that holds source column `col` as it is (kept or renamed), if any.
fn carrier<'a>(o: &'a OutputPlan, col: &str) -> Option<&'a super::plan::TargetColumn> {
    o.columns
        .iter()
        .find(|x| matches!(&x.expr, Expr::Column { name, .. } if name == col))
}

/// Source column `col`'s type in `tp`.
fn source_type<'a>(tp: &'a TablePlan, col: &str) -> Option<&'a str> {
    tp.columns
        .iter()
        .find(|(n, _)| n == col)
        .map(|(_, t)| t.as_str())
}

/// Every reason the plan cannot run backwards, per table (empty: it can).
pub fn problems(plan: &Plan, source: &HashMap<String, TableInfo>) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut tables: Vec<_> = plan.tables.iter().collect();
    tables.sort_by(|a, b| a.0.cmp(b.0));
    for (rel, tp) in tables {
        let mut p = |message: String, fix: &str| {
            out.push(Problem {
                table: rel.clone(),
                message,
                fix: fix.to_string(),
            })
        };
        if let Some(f) = &tp.filter_text {
            p(
                format!("the filter {f:?} has no inverse: rows it leaves out on OLD are not on NEW, and a row NEW changes cannot be told to pass it"),
                "remove the filter before the switch, or switch with --no-fallback",
            );
        }
        // A custom transform's inverse fills the source columns back.
        let mut filled_back: Vec<String> = Vec::new();
        if let Some(c) = &tp.custom {
            match c.transform.inverse() {
                Some(inv) => {
                    filled_back = inv.columns();
                    // What the transform consumed must come back: through its inverse, or
                    // as a column the mapping keeps.
                    let kept = |r: &str| tp.outputs.iter().any(|o| carrier(o, r).is_some());
                    let lost: Vec<String> = c
                        .transform
                        .reads()
                        .into_iter()
                        .filter(|r| !filled_back.contains(r) && !kept(r))
                        .collect();
                    if !lost.is_empty() {
                        p(
                            format!("the inverse of transform {} does not fill {} (read by the transform, not kept by the mapping)", c.name, lost.join(", ")),
                            "make Transform::inverse fill every column the transform reads, or keep the column",
                        );
                    }
                }
                None => p(
                    format!("the custom transform {} has no inverse", c.name),
                    "implement Transform::inverse for it, or switch with --no-fallback",
                ),
            }
        }
        let rows: Vec<_> = tp
            .outputs
            .iter()
            .filter(|o| matches!(o.kind, OutputKind::Row))
            .collect();
        let merges: Vec<_> = tp
            .outputs
            .iter()
            .filter(|o| matches!(o.kind, OutputKind::Merge))
            .collect();
        for o in &tp.outputs {
            match &o.kind {
                OutputKind::Row => {}
                OutputKind::Split(_) => {
                    if let Err(why) = rebuild(tp, o) {
                        p(
                            format!("the split into {}: {why}", o.target()),
                            "map the split's name (and position) to child columns, or switch with --no-fallback",
                        )
                    }
                }
                OutputKind::Merge => {
                    if let Err(why) = merge_back(tp, o) {
                        p(
                            format!("the merge into {}: {why}", o.target()),
                            "merge back only a table keyed like the merged row (its key renamed to the target's key), whose columns are kept, renamed or widened; or switch with --no-fallback",
                        )
                    }
                }
            }
        }
        if rows.len() > 1 {
            p(
                format!(
                    "{} row outputs: which one a row of OLD comes back from is ambiguous",
                    rows.len()
                ),
                "map the table to one target table, or switch with --no-fallback",
            );
        }
        let mut fed: Vec<&str> = Vec::new();
        for o in rows.iter().chain(&merges) {
            for c in &o.columns {
                let target = format!("{}.{}", o.target(), c.name);
                match &c.expr {
                    Expr::Column { name, .. } => {
                        fed.push(name);
                        let src_type = source_type(tp, name).unwrap_or("");
                        if !lossless(src_type, &c.sql_type) {
                            p(
                                format!("column {target} ({}) from {name} ({src_type}): the cast back to {src_type} can lose values", c.sql_type),
                                "keep the source type, widen only (e.g. integer to bigint), or switch with --no-fallback",
                            );
                        }
                    }
                    Expr::Constant(_) => {}
                    Expr::Computed { text, .. } => p(
                        format!("computed column {target} ({text}) has no inverse"),
                        "drop the computed column before the switch, or switch with --no-fallback",
                    ),
                    Expr::Lookup { from, .. } => {
                        // The original key comes back from a column carrying it (a key
                        // renamed to uid), or from the key map (`keymap_old`), which gives a
                        // key born on NEW a uuid: the source column must hold one.
                        let carried = carrier(o, from).is_some();
                        fed.push(from);
                        let src_type = source_type(tp, from).unwrap_or("");
                        if !carried
                            && !matches!(base(src_type), "uuid" | "text" | "character varying")
                        {
                            p(
                                format!("column {target} maps {from} ({src_type}) through a key map: a key born on NEW needs an original key, and remodel makes uuids"),
                                "keep the original key in a NEW column (rename it), or switch with --no-fallback",
                            );
                        }
                    }
                    Expr::Custom { .. } | Expr::Child(_) => {}
                }
            }
        }
        // A split's list column is written back from the child rows.
        for o in &tp.outputs {
            if let Some(sp) = o.split() {
                fed.push(&sp.column);
            }
        }
        // Source columns the mapping drops: OLD keeps them on update; an insert made on NEW
        // must be able to leave them out.
        let written = !rows.is_empty() || !merges.is_empty();
        if let (Some(info), true) = (source.get(rel.as_str()), written) {
            for c in &info.columns {
                if fed.contains(&c.name.as_str()) || filled_back.contains(&c.name) || c.generated {
                    continue;
                }
                if c.not_null && !c.has_default && !c.identity_always {
                    p(
                        format!("source column {}.{} is not mapped, NOT NULL and without a default: a row inserted on NEW cannot be written back", rel, c.name),
                        "give the column a default on OLD (ALTER TABLE ... ALTER COLUMN ... SET DEFAULT ...), or map it",
                    );
                }
            }
        }
    }
    out
}

/// How split output `o` of `tp` is written back to OLD's list column, or why it cannot be.
fn rebuild(tp: &TablePlan, o: &OutputPlan) -> Result<RebuildPlan, String> {
    let sp = o.split().ok_or("not a split")?;
    let col = |f: ChildField| {
        o.columns
            .iter()
            .find(|c| matches!(&c.expr, Expr::Child(x) if *x == f))
            .map(|c| c.name.clone())
    };
    let name = col(ChildField::Name).ok_or(
        "no child column holds the item's name: the list text cannot be rebuilt from the child rows",
    )?;
    let mut parent_key = Vec::new();
    for (j, &idx) in sp.parent.iter().enumerate() {
        let child_col = o
            .columns
            .get(idx)
            .map(|c| c.name.clone())
            .ok_or("parent key column missing")?;
        let key = tp
            .source_key
            .get(j)
            .cloned()
            .ok_or("parent key column missing")?;
        let ty = source_type(tp, &key).unwrap_or("text").to_string();
        parent_key.push((child_col, key, ty));
    }
    if parent_key.len() != tp.source_key.len() {
        return Err(format!(
            "the child rows do not carry the whole parent key ({}): map parent.<key column> to a child column",
            tp.source_key.join(", ")
        ));
    }
    let annotations = o
        .columns
        .iter()
        .filter_map(|c| match &c.expr {
            Expr::Child(ChildField::Annotation(i)) => Some((c.name.clone(), *i)),
            _ => None,
        })
        .collect();
    Ok(RebuildPlan {
        child_table: o.target(),
        parent_table: tp.source.clone(),
        text_column: sp.column.clone(),
        parent_key,
        name,
        position: col(ChildField::Position),
        annotations,
        splitter: std::sync::Arc::new(sp.splitter.clone()),
    })
}

/// Why merge output `o` of `tp` cannot be written back to `tp`'s table as a part of the
/// merged row (see [`PartMapping`]), if it cannot: every key column of `tp` must come back
/// from the merged row's key, and its other columns from kept or renamed columns.
fn merge_back(tp: &TablePlan, o: &OutputPlan) -> Result<(), String> {
    for k in &tp.source_key {
        let carried = o.key.iter().any(|&i| {
            matches!(&o.columns.get(i).map(|c| &c.expr), Some(Expr::Column { name, .. }) if name == k)
        });
        if !carried {
            return Err(format!(
                "{}'s key column {k} does not come back from {}'s key: which row a merged row comes back as cannot be told",
                tp.source,
                o.target()
            ));
        }
    }
    let contributed = (0..o.columns.len())
        .filter(|i| !o.key.contains(i))
        .filter(|&i| matches!(o.columns[i].expr, Expr::Column { .. }))
        .count();
    if contributed == 0 {
        return Err(format!(
            "it contributes no source column besides the key: whether {} has a row cannot be told",
            tp.source
        ));
    }
    for c in &o.columns {
        if let Expr::Lookup { .. } | Expr::Custom { .. } = c.expr {
            return Err(format!(
                "column {}.{} comes from a key map or a transform",
                o.target(),
                c.name
            ));
        }
    }
    Ok(())
}

/// NEW's tables that are written back as parts (merged rows): the reverse stream compares a
/// part before and after each update, so their updates must carry the old row (REPLICA
/// IDENTITY FULL, a cutover gate).
pub fn merged_tables(plan: &Plan) -> Vec<String> {
    let mut out: Vec<String> = plan
        .tables
        .values()
        .flat_map(|tp| {
            tp.outputs
                .iter()
                .filter(|o| matches!(o.kind, OutputKind::Merge) && merge_back(tp, o).is_ok())
                .map(|o| o.target())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The parts the merged row `o` (an owner's row output) is written back as: one per mapping
/// merging into it.
fn parts(plan: &Plan, o: &OutputPlan) -> Vec<PartMapping> {
    let mut tables: Vec<_> = plan.tables.values().collect();
    tables.sort_by(|a, b| a.source.cmp(&b.source));
    let mut out = Vec::new();
    for tp in tables {
        for m in tp
            .outputs
            .iter()
            .filter(|m| matches!(m.kind, OutputKind::Merge) && m.target() == o.target())
        {
            let columns = m
                .columns
                .iter()
                .filter_map(|c| match &c.expr {
                    Expr::Column { name, .. } => Some((c.name.clone(), name.clone())),
                    _ => None,
                })
                .collect();
            out.push(PartMapping {
                target: tp.source.clone(),
                columns,
            });
        }
    }
    out
}

/// How every split of `plan` is written back (for a plan [`problems`] accepted).
pub fn rebuilds(plan: &Plan) -> Vec<RebuildPlan> {
    let mut out = Vec::new();
    let mut tables: Vec<_> = plan.tables.values().collect();
    tables.sort_by(|a, b| a.source.cmp(&b.source));
    for tp in tables {
        for o in &tp.outputs {
            if let Ok(r) = rebuild(tp, o) {
                out.push(r);
            }
        }
    }
    out
}

/// The inverse of `plan` as mappings from NEW's tables (`target`: NEW's catalog) to OLD's,
/// for a plan [`problems`] found nothing wrong with: each NEW column fed by a source column
/// maps back to it (renamed back; the reverse compile casts where the types differ); a NEW
/// column that is a constant, or that the mapping does not feed, is dropped (OLD keeps its
/// own value of a column the forward mapping dropped: the reverse stream never writes it).
pub fn mappings(plan: &Plan, target: &HashMap<String, TableInfo>) -> Vec<TableMapping> {
    let mut out = Vec::new();
    let mut tables: Vec<_> = plan.tables.values().collect();
    tables.sort_by(|a, b| a.source.cmp(&b.source));
    for tp in tables {
        let Some(o) = tp
            .outputs
            .iter()
            .find(|o| matches!(o.kind, OutputKind::Row))
        else {
            continue;
        };
        let Some(info) = target.get(&o.target()) else {
            continue;
        };
        let mut columns = std::collections::BTreeMap::new();
        let mut lookups = std::collections::BTreeMap::new();
        for c in &info.columns {
            let fed = o.columns.iter().find(|t| t.name == c.name);
            // A key-mapped column whose original key no NEW column carries: the original
            // comes back through the key map.
            if let Some(Expr::Lookup { map, from, .. }) = fed.map(|t| &t.expr) {
                if carrier(o, from).is_none() {
                    lookups.insert(
                        from.clone(),
                        LookupSpec {
                            map: map.clone(),
                            from: c.name.clone(),
                            inverse: true,
                        },
                    );
                }
            }
            let spec = match fed.map(|t| &t.expr) {
                Some(Expr::Column { name, .. }) if *name == c.name => {
                    ColumnSpec::Action(ColumnAction::Keep)
                }
                Some(Expr::Column { name, .. }) => ColumnSpec::Map(ColumnMap {
                    rename: Some(name.clone()),
                    cast: None,
                }),
                _ => ColumnSpec::Action(ColumnAction::Drop),
            };
            columns.insert(c.name.clone(), spec);
        }
        // OLD's key comes back from the NEW columns carrying it; when those are not NEW's
        // primary key (a uuid key kept as `uid` next to a new integer key), they are the
        // reverse stream's row key (NEW's replica identity must then include them).
        let carriers: Vec<String> = tp
            .source_key
            .iter()
            .filter_map(|k| carrier(o, k).map(|c| c.name.clone()))
            .collect();
        let key = (carriers.len() == tp.source_key.len() && carriers != info.primary_key)
            .then_some(carriers);
        out.push(TableMapping {
            source: o.target(),
            target: Some(tp.source.clone()),
            key,
            columns,
            lookups,
            parts: parts(plan, o),
            transform: tp
                .custom
                .as_ref()
                .filter(|c| c.transform.inverse().is_some())
                .map(|c| super::custom::inverse_name(&c.name)),
            ..TableMapping::default()
        });
    }
    out
}

/// A pair the reverse stream registers in OLD's key map for each row of NEW's `table` it
/// applies: NEW's `old_col` carries the original key, `new_col` the map's integer (a key
/// renamed to uid, next to the integer key). References to a row born on NEW then resolve to
/// its own original key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub table: String,
    pub map: String,
    pub old_col: String,
    pub new_col: String,
}

/// Every registration the inverse of `plan` needs.
pub fn registrations(plan: &Plan) -> Vec<Registration> {
    let mut out = Vec::new();
    for tp in plan.tables.values() {
        for o in tp
            .outputs
            .iter()
            .filter(|o| matches!(o.kind, OutputKind::Row))
        {
            for c in &o.columns {
                let Expr::Lookup { map, from, .. } = &c.expr else {
                    continue;
                };
                if let Some(carrier) = carrier(o, from) {
                    out.push(Registration {
                        table: o.target(),
                        map: map.clone(),
                        old_col: carrier.name.clone(),
                        new_col: c.name.clone(),
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| (&a.table, &a.map).cmp(&(&b.table, &b.map)));
    out
}

/// The key maps the inverse of `plan` resolves through (copied to OLD at a cutover).
pub fn keymap_names(plan: &Plan) -> Vec<String> {
    let mut out: Vec<String> = plan
        .outputs
        .iter()
        .flat_map(|o| o.columns.iter())
        .filter_map(|c| match &c.expr {
            Expr::Lookup { map, .. } => Some(map.clone()),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::lossless;

    #[test]
    fn only_widening_casts_are_lossless_backwards() {
        assert!(lossless("integer", "integer"));
        assert!(lossless("integer", "bigint"));
        assert!(lossless("character varying(20)", "text"));
        assert!(!lossless("bigint", "integer"));
        assert!(!lossless("numeric(10,2)", "numeric(8,2)"));
        assert!(lossless("numeric(10,2)", "numeric"));
        assert!(!lossless("text", "integer"));
        assert!(!lossless("timestamp with time zone", "date"));
    }
}
