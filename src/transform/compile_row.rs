//! Compiling a mapping's own output (1→1, or its part of an N→1 merge): kept, renamed and cast
//! columns, constants, computed expressions, key lookups and custom-transform columns, and the
//! target key they must fill. Read-only, like the rest of the compiler.

use std::collections::HashMap;
use std::sync::Arc;

use super::target_types::TargetTypes;

use super::catalog::Env;
use super::catalog::TableInfo;
use super::expr::{ColumnRef, Compiled, Type};
use super::mapping::{ColumnAction, ColumnSpec, TableMapping};
use super::plan::{CustomPlan, Expr, Problem, TargetColumn};
use crate::quote::quote_ident;

type Problems = Vec<super::plan::Problem>;

/// The columns and key (indices into the columns) of `m`'s own output into `t` (None after a
/// problem), and the target columns it fills either way (for the NOT NULL check across the
/// mappings feeding one target).
#[allow(clippy::too_many_arguments)]
pub(super) async fn row_output(
    m: &TableMapping,
    s: &TableInfo,
    t: &TableInfo,
    source_key: &[String],
    refs: &[ColumnRef<'_>],
    custom: Option<&CustomPlan>,
    env: &Env<'_>,
    problems: &mut Problems,
) -> (Option<(Vec<TargetColumn>, Vec<usize>)>, Vec<String>) {
    let table = s.qualified();
    let tgt_name = t.qualified();
    let before = problems.len();
    let client = env.target_types;
    let mut p = |message: String, fix: String| {
        problems.push(Problem {
            table: table.clone(),
            message,
            fix,
        })
    };
    let mut columns: Vec<TargetColumn> = Vec::new();
    let mut filled: HashMap<String, String> = HashMap::new();
    let mut fill = |tname: &str, by: String, p: &mut dyn FnMut(String, String)| {
        if let Some(prev) = filled.insert(tname.to_string(), by.clone()) {
            p(
                format!("target column {tgt_name}.{tname} is filled by both {prev} and {by}"),
                "keep one of them".into(),
            );
            return false;
        }
        true
    };
    let writable = |tname: &str, p: &mut dyn FnMut(String, String)| -> Option<String> {
        match t.column(tname) {
            None => {
                p(
                    format!("target column {tgt_name}.{tname} does not exist"),
                    format!("add the column to {tgt_name} or fix the mapping"),
                );
                None
            }
            Some(tc) if tc.generated || tc.identity_always => {
                p(format!("target column {tgt_name}.{tname} is generated/identity ALWAYS and cannot be written"), "leave it out of the mapping".into());
                None
            }
            Some(tc) => Some(tc.sql_type.clone()),
        }
    };
    for sc in &s.columns {
        let (tname, cast) = match m.columns.get(&sc.name) {
            Some(ColumnSpec::Action(ColumnAction::Drop)) => continue,
            // A generated source column is not in the change stream (PostgreSQL 15 leaves it
            // out): unless mapped explicitly, it is left to the target (which may generate
            // it too).
            None if sc.generated => continue,
            Some(_) if sc.generated => {
                p(
                    format!("source column {} is generated: the change stream does not carry it", sc.name),
                    "leave it out of [tables.columns] and compute it on the target (a generated column, or a computed column from the columns it is generated from)".to_string(),
                );
                continue;
            }
            None | Some(ColumnSpec::Action(ColumnAction::Keep)) => (sc.name.clone(), None),
            Some(ColumnSpec::Map(cm)) => (
                cm.rename.clone().unwrap_or_else(|| sc.name.clone()),
                cm.cast.clone(),
            ),
        };
        if t.column(&tname).is_none() {
            p(
                format!("column {} maps to {tgt_name}.{tname}, which does not exist", sc.name),
                format!("add the column to the target, rename it with {{ rename = \"...\" }}, or drop it with {} = \"drop\"", sc.name),
            );
            continue;
        }
        let Some(ttype) = writable(&tname, &mut p) else {
            continue;
        };
        if !fill(&tname, format!("source column {}", sc.name), &mut p) {
            continue;
        }
        if let Some(c) = &cast {
            if !same_type(c, &ttype, client).await {
                p(
                    format!(
                        "column {} casts to {c} but target column {tgt_name}.{tname} is {ttype}",
                        sc.name
                    ),
                    format!("set cast = \"{ttype}\""),
                );
                continue;
            }
        }
        let via = if sc.sql_type == ttype {
            None
        } else {
            match conversion(&sc.sql_type, &ttype, client).await {
                Ok(via) => {
                    if cast.is_none() && !assignable(&sc.sql_type, &ttype, client).await {
                        p(
                            format!(
                                "column {} is {} on the source but {tgt_name}.{tname} is {ttype}",
                                sc.name, sc.sql_type
                            ),
                            format!(
                                "declare the conversion: {} = {{ cast = \"{ttype}\" }}",
                                sc.name
                            ),
                        );
                        continue;
                    }
                    via
                }
                Err(why) => {
                    p(
                        format!(
                            "no cast from {} ({}) to {ttype} ({tgt_name}.{tname}): {why}",
                            sc.sql_type, sc.name
                        ),
                        "change the target column type or drop the column".into(),
                    );
                    continue;
                }
            }
        };
        columns.push(TargetColumn {
            name: tname,
            sql_type: ttype,
            expr: Expr::Column {
                name: sc.name.clone(),
                via,
            },
        });
    }
    for (tname, value) in &m.constants {
        let Some(ttype) = writable(tname, &mut p) else {
            continue;
        };
        if !fill(tname, "a constant".into(), &mut p) {
            continue;
        }
        if let Err(e) = client.constant(value, &ttype).await {
            p(
                format!("constant {value:?} is not a valid {ttype} for {tname}: {e}"),
                "fix the value under [tables.constants]".into(),
            );
            continue;
        }
        columns.push(TargetColumn {
            name: tname.clone(),
            sql_type: ttype,
            expr: Expr::Constant(value.clone()),
        });
    }
    for (tname, text) in &m.computed {
        let Some(ttype) = writable(tname, &mut p) else {
            continue;
        };
        if !fill(tname, format!("computed {text:?}"), &mut p) {
            continue;
        }
        let compiled = match Compiled::compile(text, refs) {
            Ok(c) => c,
            Err(e) => {
                p(
                    format!("[tables.computed] {tname}: {e}"),
                    format!("fix the expression for {tname}"),
                );
                continue;
            }
        };
        let from = type_name(compiled.result_type());
        if client.casts(from, &ttype).await.is_err() {
            p(format!("[tables.computed] {tname}: the expression gives {from}, which does not convert to {tgt_name}.{tname} ({ttype})"), format!("add a cast, e.g. ({text})::text, or change the column type"));
            continue;
        }
        columns.push(TargetColumn {
            name: tname.clone(),
            sql_type: ttype,
            expr: Expr::Computed {
                expr: Arc::new(compiled),
                text: text.clone(),
            },
        });
    }
    for (tname, l) in &m.lookups {
        let Some(ttype) = writable(tname, &mut p) else {
            continue;
        };
        if s.column(&l.from).is_none() {
            p(
                format!(
                    "[tables.lookups] {tname}: source column {} does not exist",
                    l.from
                ),
                "fix from = ...".into(),
            );
            continue;
        }
        if l.inverse && !matches!(ttype.as_str(), "uuid" | "text" | "character varying") {
            p(format!("[tables.lookups] {tname}: the original key column {tgt_name}.{tname} is {ttype}: a key born on NEW gets a uuid, which it cannot hold"), "keep original keys uuid or text, or switch with --no-fallback".into());
            continue;
        }
        if !l.inverse
            && !matches!(
                ttype.as_str(),
                "bigint" | "integer" | "smallint" | "numeric"
            )
        {
            p(format!("[tables.lookups] {tname}: target column {tgt_name}.{tname} is {ttype}, not an integer type"), "key maps give bigint values: make the column bigint (or integer)".into());
            continue;
        }
        if !fill(tname, format!("key map {}", l.map), &mut p) {
            continue;
        }
        columns.push(TargetColumn {
            name: tname.clone(),
            sql_type: ttype,
            expr: Expr::Lookup {
                map: l.map.clone(),
                from: l.from.clone(),
                state: quote_ident(env.state_schema),
                inverse: l.inverse,
            },
        });
    }
    if let Some(c) = custom {
        for (slot, tname) in c.transform.columns().iter().enumerate() {
            let Some(ttype) = writable(tname, &mut p) else {
                continue;
            };
            if !fill(tname, format!("transform {}", c.name), &mut p) {
                continue;
            }
            columns.push(TargetColumn {
                name: tname.clone(),
                sql_type: ttype,
                expr: Expr::Custom { slot },
            });
        }
    }
    let names: Vec<String> = filled.keys().cloned().collect();
    if t.primary_key.is_empty() {
        p(
            format!("target table {tgt_name} has no primary key"),
            format!("add a primary key to {tgt_name}: remodel upserts on it"),
        );
        return (None, names);
    }
    // The target key must come from source columns (or lookups of them) that every change
    // carries: the source key, or the replica identity for a merge.
    let identity: Vec<&str> = if m.merge {
        s.identity_columns.iter().map(String::as_str).collect()
    } else {
        source_key.iter().map(String::as_str).collect()
    };
    let mut key = Vec::new();
    let mut fed: Vec<&str> = Vec::new();
    for k in &t.primary_key {
        let from = columns
            .iter()
            .position(|c| &c.name == k)
            .and_then(|i| match &columns[i].expr {
                Expr::Column { name, .. } | Expr::Lookup { from: name, .. } => {
                    Some((i, name.as_str()))
                }
                _ => None,
            });
        match from {
            Some((i, name)) if identity.contains(&name) => {
                key.push(i);
                fed.push(name);
            }
            Some((_, name)) if m.merge => p(
                format!("target primary key column {tgt_name}.{k} comes from {name}, which updates and deletes of {table} do not carry (it is not in the replica identity)"),
                format!("ALTER TABLE {table} REPLICA IDENTITY FULL"),
            ),
            _ => p(
                format!("target primary key column {tgt_name}.{k} is not filled from the source key ({})", source_key.join(", ")),
                "map the source key columns (or a lookup of them) onto the target primary key".into(),
            ),
        }
    }
    if m.merge && s.replica_identity != 'f' {
        let key_fed_by_source_key = fed.len() == t.primary_key.len()
            && fed.iter().all(|f| source_key.iter().any(|k| k == f));
        if m.filter.is_some() || m.transform.is_some() || !key_fed_by_source_key {
            p(
                format!("merges into {tgt_name} with a filter, a transform or a target key that is not its own key: its updates and deletes must carry the old row to know which values to clear"),
                format!("ALTER TABLE {table} REPLICA IDENTITY FULL"),
            );
        }
    }
    if key.len() == t.primary_key.len() && !m.merge {
        let uncovered: Vec<&str> = source_key
            .iter()
            .map(String::as_str)
            .filter(|k| !fed.contains(k))
            .collect();
        if !uncovered.is_empty() {
            p(
                format!("source key column(s) {} do not feed the primary key of {tgt_name}: several source rows would share one target row", uncovered.join(", ")),
                format!("make the primary key of {tgt_name} cover the whole source key ({}), or set merge = true if this mapping only contributes columns", source_key.join(", ")),
            );
        }
    }
    if problems.len() > before {
        return (None, names);
    }
    (Some((columns, key)), names)
}

fn type_name(t: Type) -> &'static str {
    match t {
        Type::Text | Type::Null => "text",
        Type::Int => "bigint",
        Type::Numeric => "numeric",
        Type::Bool => "boolean",
        Type::Date => "date",
        Type::Timestamp => "timestamp",
        Type::Json => "jsonb",
    }
}

/// The type to cast a source column's text through on the way to `to` (see [`conversion`]);
/// None when the types match or the target lacks the source type.
pub(super) async fn via(from: &str, to: &str, client: &dyn TargetTypes) -> Option<String> {
    if from == to {
        return None;
    }
    conversion(from, to, client).await.ok().flatten()
}

async fn same_type(a: &str, b: &str, client: &dyn TargetTypes) -> bool {
    a == b || client.same_type(a, b).await
}

/// How to convert source type `from` to `to` on the target: `Ok(Some(from))` casts through
/// the source type, `Ok(None)` converts the text form directly (the target lacks `from`).
async fn conversion(
    from: &str,
    to: &str,
    client: &dyn TargetTypes,
) -> Result<Option<String>, String> {
    if client.type_known(from).await {
        client.casts(from, to).await.map(|_| Some(from.to_string()))
    } else {
        client.casts("text", to).await.map(|_| None)
    }
}

/// Whether PostgreSQL would convert `from` to `to` on assignment without an explicit cast.
async fn assignable(from: &str, to: &str, client: &dyn TargetTypes) -> bool {
    client.assignable(from, to).await
}
