//! Compiling a split (1→N) output: the list column, the splitter, the child key and the
//! child table's columns, checked against the target.

use super::*;

/// A split output: columns from the item fields and the parent, keyed per child.
pub(super) async fn split_output(
    sm: &SplitMapping,
    s: &TableInfo,
    t: &TableInfo,
    source_key: &[String],
    env: &Env<'_>,
    problems: &mut Problems,
) -> Option<(Vec<TargetColumn>, Vec<usize>, SplitPlan)> {
    let table = s.qualified();
    let tgt = t.qualified();
    let before = problems.0.len();
    if s.column(&sm.column).is_none() {
        problems.add(
            &table,
            format!("split column {} does not exist on the source", sm.column),
            "fix [[tables.split]].column",
        );
    }
    let defaults = SplitSpec::default();
    let spec = SplitSpec {
        separators: sm.separators.clone().unwrap_or(defaults.separators),
        enumerators: sm.enumerators.unwrap_or(defaults.enumerators),
        protected: sm.protected.clone().unwrap_or(defaults.protected),
        annotations: sm.annotations.clone(),
        dedupe: sm.dedupe.unwrap_or(defaults.dedupe),
    };
    let splitter = match Splitter::new(&spec) {
        Ok(sp) => Some(sp),
        Err(e) => {
            problems.add(
                &table,
                format!("split into {tgt}: {e}"),
                "fix [[tables.split]]",
            );
            None
        }
    };
    let namespace = match &sm.namespace {
        None => default_namespace(),
        Some(n) => match uuid::Uuid::parse_str(n) {
            Ok(u) => u,
            Err(e) => {
                problems.add(
                    &table,
                    format!("split into {tgt}: namespace {n:?} is not a UUID: {e}"),
                    "set namespace to a UUID, or leave it out",
                );
                default_namespace()
            }
        },
    };
    let names: Vec<String> = splitter
        .as_ref()
        .map(|s| s.annotation_names().to_vec())
        .unwrap_or_default();
    let mut columns = Vec::new();
    let mut parent: Vec<Option<usize>> = vec![None; source_key.len()];
    for (tname, what) in &sm.columns {
        let Some(tc) = t.column(tname) else {
            problems.add(
                &table,
                format!("split column {tgt}.{tname} does not exist"),
                "fix [tables.split.columns]",
            );
            continue;
        };
        let (expr, src_type) = if let Some(p) = what.strip_prefix("parent.") {
            let Some(sc) = s.column(p) else {
                problems.add(
                    &table,
                    format!("split column {tname} = {what:?}: source column {p} does not exist"),
                    "fix [tables.split.columns]",
                );
                continue;
            };
            if let Some(k) = source_key.iter().position(|k| k == p) {
                parent[k] = Some(columns.len());
            }
            let via =
                crate::transform::compile_row::via(&sc.sql_type, &tc.sql_type, env.target_types)
                    .await;
            (
                Expr::Column {
                    name: p.to_string(),
                    via,
                },
                sc.sql_type.clone(),
            )
        } else if what.len() >= 2 && what.starts_with('\'') && what.ends_with('\'') {
            (
                Expr::Constant(what[1..what.len() - 1].replace("''", "'")),
                "text".to_string(),
            )
        } else {
            let field = match what.as_str() {
                "child_id" => ChildField::Id,
                "position" => ChildField::Position,
                "name" => ChildField::Name,
                a => match names.iter().position(|n| n == a) {
                    Some(i) => ChildField::Annotation(i),
                    None => {
                        problems.add(
                            &table,
                            format!("split column {tname} = {what:?} is not child_id, position, name, an annotation ({}), parent.<column> or a 'constant'", names.join(", ")),
                            "fix [tables.split.columns]",
                        );
                        continue;
                    }
                },
            };
            let ty = match field {
                ChildField::Id => "uuid",
                ChildField::Position => "integer",
                ChildField::Name => "text",
                ChildField::Annotation(_) => "boolean",
            };
            (Expr::Child(field), ty.to_string())
        };
        if src_type != tc.sql_type && !matches!(expr, Expr::Column { .. }) {
            let ok = env
                .target_types
                .casts(&format!("{src_type}::text"), &tc.sql_type)
                .await
                .is_ok();
            if !ok {
                problems.add(
                    &table,
                    format!(
                        "split column {tgt}.{tname} is {} and cannot hold {what} ({src_type})",
                        tc.sql_type
                    ),
                    "change the column type or map another field to it",
                );
                continue;
            }
        }
        columns.push(TargetColumn {
            name: tname.clone(),
            sql_type: tc.sql_type.clone(),
            expr,
        });
    }
    let parent: Vec<usize> = match parent.iter().copied().collect::<Option<Vec<_>>>() {
        Some(p) => p,
        None => {
            problems.add(
                &table,
                format!("split into {tgt} does not map the parent key ({}) to a column, so a parent's child set cannot be found to replace or delete", source_key.iter().map(|k| format!("parent.{k}")).collect::<Vec<_>>().join(", ")),
                format!("add e.g. loan_id = \"parent.{}\" under [tables.split.columns]", source_key.first().map(String::as_str).unwrap_or("id")),
            );
            vec![]
        }
    };
    for tc in &t.columns {
        if tc.not_null
            && !tc.has_default
            && !tc.generated
            && !columns.iter().any(|c| c.name == tc.name)
        {
            problems.add(&table, format!("split target column {tgt}.{} is NOT NULL without a default and nothing fills it", tc.name), "map a field to it under [tables.split.columns], or give it a default");
        }
    }
    // What identifies one child: its id, or the parent plus its position (or its name, deduped).
    let col_of = |n: &str| columns.iter().find(|c| c.name == n);
    let identifies = |cols: &[String]| -> bool {
        let has =
            |f: &dyn Fn(&Expr) -> bool| cols.iter().any(|n| col_of(n).is_some_and(|c| f(&c.expr)));
        let all_parent =
            !parent.is_empty() && parent.iter().all(|&i| cols.contains(&columns[i].name));
        has(&|e| matches!(e, Expr::Child(ChildField::Id)))
            || (all_parent && has(&|e| matches!(e, Expr::Child(ChildField::Position))))
            || (all_parent && spec.dedupe && has(&|e| matches!(e, Expr::Child(ChildField::Name))))
    };
    if t.primary_key.is_empty() {
        problems.add(
            &table,
            format!("split target table {tgt} has no primary key"),
            format!("add a primary key to {tgt} (e.g. the child_id column)"),
        );
    } else if !identifies(&t.primary_key) {
        problems.add(
            &table,
            format!("the primary key of {tgt} ({}) does not identify a child: it must contain child_id, or the parent key with position (or name, deduped)", t.primary_key.join(", ")),
            "map child_id to the primary key column",
        );
    }
    for u in &t.unique_keys {
        if !identifies(u) {
            problems.add(
                &table,
                format!("unique index ({}) on {tgt} could be violated by the split: two items (of one parent or of different parents) can give it the same values", u.join(", ")),
                "include child_id, or the parent key with position, in that index, or drop it",
            );
        }
    }
    if sm.key == ChildKey::Name && !spec.dedupe {
        problems.add(&table, format!("split into {tgt}: key = \"name\" needs dedupe (two items with one name would get one id)"), "leave dedupe on, or set key = \"position\"");
    }
    let key: Vec<usize> = t
        .primary_key
        .iter()
        .filter_map(|k| columns.iter().position(|c| &c.name == k))
        .collect();
    if problems.0.len() > before || key.len() != t.primary_key.len() {
        return None;
    }
    Some((
        columns,
        key,
        SplitPlan {
            column: sm.column.clone(),
            splitter: splitter?,
            key: sm.key,
            namespace,
            parent,
        },
    ))
}
