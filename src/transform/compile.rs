//! The compiler: config `[[tables]]` + both live schemas → [`Plan`].
//!
//! Collects every problem at once (for `remodel check`): missing tables or columns, types no
//! cast covers, expressions that do not parse or type-check (with where they are), target NOT
//! NULL columns nothing fills, keys that do not identify rows, unique constraints a split could
//! violate. Reads both catalogs and asks the target to prepare casts; must never touch data.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::catalog::{Env, TableInfo};
use super::expr::{ColumnRef, Compiled};
use super::mapping::{ChildKey, SplitMapping, TableMapping};
use super::plan::{
    ChildField, CustomPlan, Expr, KeyMap, OutputKind, OutputPlan, Plan, Problem, SplitPlan,
    TablePlan, TargetColumn,
};
use super::split::{SplitSpec, Splitter};
use crate::quote::quote_ident;

mod part_output;
mod split_output;

use part_output::part_output;
use split_output::split_output;

/// remodel's default namespace for child ids (UUID v5 of "remodel.child" in the URL namespace).
pub fn default_namespace() -> uuid::Uuid {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, b"https://remodel.dev/child")
}

pub(super) fn qualify(name: &str) -> String {
    if name.contains('.') {
        name.to_string()
    } else {
        format!("public.{name}")
    }
}

/// Target table → the mappings feeding it: (source table, merge?, target columns it fills).
type Feeds = BTreeMap<String, Vec<(String, bool, Vec<String>)>>;

struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, table: &str, message: impl Into<String>, fix: impl Into<String>) {
        self.0.push(Problem {
            table: table.to_string(),
            message: message.into(),
            fix: fix.into(),
        });
    }
}

/// Compile `mappings` for the tables the publication covers.
pub async fn compile(mappings: &[TableMapping], env: &Env<'_>) -> Result<Plan, Vec<Problem>> {
    let mut problems = Problems(Vec::new());
    // remodel's own state schema is never mapped: a publication FOR ALL TABLES on a database
    // that has one (OLD gets one at a cutover, for the reverse stream) covers it too.
    let own = format!("{}.", env.state_schema);
    let published: Vec<String> = env
        .published
        .iter()
        .filter(|t| !t.starts_with(&own))
        .cloned()
        .collect();
    let env = &Env {
        published: &published,
        ..*env
    };
    let identity: Vec<TableMapping>;
    let mappings: &[TableMapping] = if mappings.is_empty() {
        identity = env
            .published
            .iter()
            .map(|t| TableMapping {
                source: t.clone(),
                ..Default::default()
            })
            .collect();
        &identity
    } else {
        let listed: BTreeSet<String> = mappings.iter().map(|m| qualify(&m.source)).collect();
        for t in env.published.iter().filter(|t| !listed.contains(*t)) {
            problems.add(
                t,
                "is in the publication but has no [[tables]] mapping",
                format!("add a [[tables]] entry with source = \"{t}\", or remove it from the publication"),
            );
        }
        mappings
    };
    let mut named: BTreeMap<String, usize> = BTreeMap::new();
    for m in mappings {
        *named
            .entry(qualify(m.target.as_deref().unwrap_or(&m.source)))
            .or_default() += 1;
        for sp in &m.split {
            *named.entry(qualify(&sp.target)).or_default() += 1;
        }
    }
    let mut plan = Plan {
        fk_tables: env.target_types.fk_tables().await,
        shared_targets: named
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(t, _)| t)
            .collect(),
        state_schema: env.state_schema.to_string(),
        ..Plan::default()
    };
    // target table → (source, merge?, columns it fills)
    let mut feeds: Feeds = BTreeMap::new();
    let mut lookups: Vec<(String, String, String)> = Vec::new(); // (map, source table, from)
    for m in mappings {
        if let Some(tp) = compile_table(m, env, &mut problems, &mut plan, &mut feeds).await {
            for o in &tp.outputs {
                for c in &o.columns {
                    if let Expr::Lookup {
                        map,
                        from,
                        inverse: false,
                        ..
                    } = &c.expr
                    {
                        lookups.push((map.clone(), tp.source.clone(), from.clone()));
                    }
                }
            }
            plan.tables.insert(tp.source.clone(), Arc::new(tp));
        }
    }
    check_shared_targets(&feeds, env, &mut problems);
    plan.keymaps = keymaps(&lookups, &plan, env, &mut problems).await;
    if problems.0.is_empty() {
        Ok(plan)
    } else {
        Err(problems.0)
    }
}

/// N→1: exactly one mapping owns a shared target; the others set `merge = true`; NOT NULL
/// columns must be fillable by whichever source writes a row first.
fn check_shared_targets(feeds: &Feeds, env: &Env<'_>, problems: &mut Problems) {
    for (target, fed) in feeds {
        let owners: Vec<&str> = fed.iter().filter(|f| !f.1).map(|f| f.0.as_str()).collect();
        if fed.len() > 1 && owners.len() != 1 {
            let names: Vec<&str> = fed.iter().map(|f| f.0.as_str()).collect();
            problems.add(
                &names.join(", "),
                format!("target table {target} is fed by {} mappings, {} of which own its rows", fed.len(), owners.len()),
                "exactly one mapping owns a merged target's rows; set merge = true on each mapping that only contributes columns",
            );
        }
        let Some(t) = env.target.get(target) else {
            continue;
        };
        let all: BTreeSet<&str> = fed
            .iter()
            .flat_map(|f| f.2.iter().map(String::as_str))
            .collect();
        for tc in &t.columns {
            if !(tc.not_null && !tc.has_default && !tc.generated) {
                continue;
            }
            if !all.contains(tc.name.as_str()) {
                problems.add(
                    &fed[0].0,
                    format!("target column {target}.{} is NOT NULL without a default and nothing fills it", tc.name),
                    "map a source column to it, add a constant or computed value, or give it a default",
                );
                continue;
            }
            if fed.len() > 1 {
                for (src, _, cols) in fed.iter().filter(|f| !f.2.contains(&tc.name)) {
                    problems.add(
                        src,
                        format!("merges into {target}, whose column {} is NOT NULL without a default, but {src} does not fill it: a row it writes before the owner's would be rejected", tc.name),
                        format!("make {target}.{} nullable or give it a default (it is filled by another mapping); {src} fills {}", tc.name, cols.join(", ")),
                    );
                }
            }
        }
    }
}

async fn compile_table(
    m: &TableMapping,
    env: &Env<'_>,
    problems: &mut Problems,
    plan: &mut Plan,
    feeds: &mut Feeds,
) -> Option<TablePlan> {
    let src_name = qualify(&m.source);
    let tgt_name = qualify(m.target.as_deref().unwrap_or(&src_name));
    let table = src_name.as_str();
    if env.source.get(&src_name).is_some_and(|s| s.unlogged) {
        problems.add(
            table,
            "is UNLOGGED: its changes never reach the WAL, so no replication stream can carry them (and no publication includes it)",
            format!("ALTER TABLE {src_name} SET LOGGED on the source (it rewrites the table), or leave it out of [[tables]]"),
        );
    } else if !env.published.contains(&src_name) {
        problems.add(
            table,
            "is mapped but not in the publication",
            format!("ALTER PUBLICATION ... ADD TABLE {src_name} on the source"),
        );
    }
    let Some(s) = env.source.get(&src_name) else {
        problems.add(
            table,
            "does not exist on the source",
            "check the table name (schema.table) in [[tables]].source",
        );
        return None;
    };
    let source_key = source_key(m, s, problems)?;
    for c in m.columns.keys().filter(|c| s.column(c).is_none()) {
        problems.add(
            table,
            format!("mapped column {c} does not exist on the source"),
            "fix the name under [tables.columns]",
        );
    }
    let columns: Vec<(String, String)> = s
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.sql_type.clone()))
        .collect();
    let refs: Vec<ColumnRef<'_>> = columns
        .iter()
        .map(|(n, t)| ColumnRef {
            name: n,
            sql_type: t,
        })
        .collect();
    let filter = match &m.filter {
        None => None,
        Some(f) => match Compiled::compile_filter(f, &refs) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                problems.add(
                    table,
                    format!("[tables] filter: {e}"),
                    "fix the expression in filter = \"...\"",
                );
                None
            }
        },
    };
    let custom = match &m.transform {
        None => None,
        Some(name) => match env.registry.get(name) {
            None => {
                problems.add(
                    table,
                    format!("transform {name:?} is not registered (registered: {:?})", env.registry.names()),
                    "register it (config.transforms.register(name, transform)) before pipeline::run, or remove transform = ...",
                );
                None
            }
            Some(t) => {
                let mut reads = Vec::new();
                for r in t.reads() {
                    match columns.iter().position(|(n, _)| *n == r) {
                        Some(i) => reads.push(i),
                        None => problems.add(
                            table,
                            format!("transform {name} reads column {r}, which the source table does not have"),
                            "fix the transform's reads()",
                        ),
                    }
                }
                let width = t.columns().len();
                Some(CustomPlan {
                    name: name.clone(),
                    transform: t,
                    reads,
                    width,
                })
            }
        },
    };
    let mut outputs = Vec::new();
    let Some(t) = env.target.get(&tgt_name) else {
        problems.add(
            table,
            format!("target table {tgt_name} does not exist on the target"),
            format!("create {tgt_name} in the target database (remodel never creates user tables), or set target = ..."),
        );
        return None;
    };
    let row = super::compile_row::row_output(
        m,
        s,
        t,
        &source_key,
        &refs,
        custom.as_ref(),
        env,
        &mut problems.0,
    )
    .await;
    let (row, filled) = row;
    feeds
        .entry(tgt_name.clone())
        .or_default()
        .push((src_name.clone(), m.merge, filled));
    if let Some((cols, key)) = row {
        outputs.push(output(
            plan,
            &src_name,
            t,
            cols,
            key,
            if m.merge {
                OutputKind::Merge
            } else {
                OutputKind::Row
            },
            Vec::new(),
        ));
    }
    for part in &m.parts {
        let parts = (part, &source_key[..], &refs[..]);
        if let Some(o) = part_output(parts, m, s, env, problems, plan, feeds).await {
            outputs.push(o);
        }
    }
    for sm in &m.split {
        let child_tgt = qualify(&sm.target);
        let Some(ct) = env.target.get(&child_tgt) else {
            problems.add(
                table,
                format!("split target table {child_tgt} does not exist on the target"),
                format!(
                    "create {child_tgt} in the target database, or fix [[tables.split]].target"
                ),
            );
            continue;
        };
        if let Some((cols, key, sp)) = split_output(sm, s, ct, &source_key, env, problems).await {
            feeds.entry(child_tgt.clone()).or_default().push((
                src_name.clone(),
                false,
                cols.iter().map(|c| c.name.clone()).collect(),
            ));
            outputs.push(output(
                plan,
                &src_name,
                ct,
                cols,
                key,
                OutputKind::Split(Arc::new(sp)),
                Vec::new(),
            ));
        }
    }
    Some(TablePlan {
        source: src_name,
        source_key,
        known_columns: s.columns.iter().map(|c| c.name.clone()).collect(),
        source_oid: s.oid,
        source_types: s
            .columns
            .iter()
            .filter(|c| !c.generated)
            .map(|c| (c.name.clone(), c.type_oid, c.typmod))
            .collect(),
        columns,
        filter,
        filter_text: m.filter.clone(),
        custom,
        on_error: m.on_error.unwrap_or_default(),
        outputs,
    })
}

pub(super) fn output(
    plan: &mut Plan,
    source: &str,
    t: &TableInfo,
    columns: Vec<TargetColumn>,
    key: Vec<usize>,
    kind: OutputKind,
    present: Vec<usize>,
) -> Arc<OutputPlan> {
    let o = Arc::new(OutputPlan {
        present,
        id: plan.outputs.len(),
        source: source.to_string(),
        target_schema: t.schema.clone(),
        target_name: t.name.clone(),
        columns,
        key,
        kind,
        linked: plan
            .fk_tables
            .as_ref()
            .is_none_or(|fk| fk.contains(&t.qualified()))
            || !t.unique_keys.is_empty()
            || plan.shared_targets.contains(&t.qualified())
            || plan.outputs.iter().any(|o| o.target() == t.qualified()),
    });
    plan.outputs.push(o.clone());
    o
}

fn source_key(m: &TableMapping, s: &TableInfo, problems: &mut Problems) -> Option<Vec<String>> {
    let table = s.qualified();
    let key = match &m.key {
        Some(k) => {
            for c in k {
                match s.column(c) {
                    None => problems.add(&table, format!("key column {c} does not exist on the source"), "fix [[tables]].key"),
                    Some(col) if !col.not_null => problems.add(
                        &table,
                        format!("key column {c} is nullable: rows with a NULL key cannot be identified or paged by backfill"),
                        format!("ALTER TABLE {table} ALTER COLUMN {c} SET NOT NULL, or choose a NOT NULL unique key"),
                    ),
                    Some(_) => {}
                }
            }
            k.clone()
        }
        None if !s.primary_key.is_empty() => s.primary_key.clone(),
        None => {
            problems.add(
                &table,
                "has no primary key, so its rows cannot be identified",
                "add a primary key on the source, or set key = [\"col\", ...] to a unique not-null key",
            );
            return None;
        }
    };
    let outside: Vec<&str> = key
        .iter()
        .filter(|k| !s.identity_columns.contains(k))
        .map(String::as_str)
        .collect();
    if s.replica_identity == 'n' {
        problems.add(
            &table,
            "has REPLICA IDENTITY NOTHING: updates and deletes cannot be identified",
            format!("ALTER TABLE {table} REPLICA IDENTITY DEFAULT (or FULL)"),
        );
    } else if !outside.is_empty() {
        problems.add(
            &table,
            format!(
                "key column(s) {} are not in the replica identity ({}), so updates and deletes cannot name the row",
                outside.join(", "),
                if s.identity_columns.is_empty() { "none".to_string() } else { s.identity_columns.join(", ") }
            ),
            format!("ALTER TABLE {table} REPLICA IDENTITY FULL, or REPLICA IDENTITY USING INDEX on a unique index over the key"),
        );
    }
    Some(key)
}

/// Resolve each key map's sequence: the target sequence of the column filled from a table's
/// own key through the map, else one remodel creates in the state schema.
async fn keymaps(
    lookups: &[(String, String, String)],
    plan: &Plan,
    env: &Env<'_>,
    problems: &mut Problems,
) -> Vec<KeyMap> {
    let mut out: Vec<KeyMap> = Vec::new();
    let names: BTreeSet<&str> = lookups.iter().map(|l| l.0.as_str()).collect();
    for name in names {
        let mut seq = None;
        for (map, src, from) in lookups.iter().filter(|l| l.0 == name) {
            let Some(tp) = plan.tables.get(src) else {
                continue;
            };
            if tp.source_key.len() != 1 || tp.source_key[0] != *from {
                continue;
            }
            for o in tp
                .outputs
                .iter()
                .filter(|o| matches!(o.kind, OutputKind::Row))
            {
                for c in &o.columns {
                    if matches!(&c.expr, Expr::Lookup { map: m2, from: f2, .. } if m2 == map && f2 == from)
                    {
                        let found = env
                            .target_types
                            .serial_sequence(&o.quoted_target(), &c.name)
                            .await;
                        if let Some(s) = found {
                            if seq.as_ref().is_some_and(|(prev, _)| *prev != s) {
                                problems.add(
                                    src,
                                    format!(
                                        "key map {name} is owned by two sequences ({} and {s})",
                                        seq.as_ref()
                                            .map(|p: &(String, bool)| p.0.clone())
                                            .unwrap_or_default()
                                    ),
                                    "use one map per key",
                                );
                            }
                            seq = Some((s, false));
                        }
                    }
                }
            }
        }
        let (seq, own) = seq.unwrap_or_else(|| {
            (
                format!(
                    "{}.{}",
                    quote_ident(env.state_schema),
                    quote_ident(&format!("keymap_{name}_seq"))
                ),
                true,
            )
        });
        out.push(KeyMap {
            name: name.to_string(),
            seq,
            own,
        });
    }
    out
}
