//! The compiled mapping plan, and the compiler that builds it from config + both live schemas.
//!
//! ```text
//!  Plan ─ by source table ─▶ TablePlan { source key, outputs: [OutputPlan] }
//!                                              │ one per target row a source row produces
//!                                              ▼ (1→1 today; a 1→N split is more outputs or
//!                                                 an output with a row generator; N→1 is several
//!                                                 TablePlans naming one target)
//!                            OutputPlan { target table, columns: [TargetColumn { expr }], key }
//! ```
//!
//! Compiling collects every problem at once (for `remodel check`). Must never touch data.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tokio_postgres::Client;

use super::catalog::TableInfo;
use super::mapping::{ColumnAction, ColumnSpec, TableMapping};
use crate::source::replication::quote_ident;

/// How a target column's value is produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// A source column's value; `via` is the source type to cast through (a real SQL cast)
    /// when source and target types differ and the target knows the source type.
    Column { name: String, via: Option<String> },
    /// A constant, as text converted by the target column type's input function.
    Constant(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetColumn {
    pub name: String,
    pub sql_type: String,
    pub expr: Expr,
}

impl TargetColumn {
    /// SQL converting the text parameter column `input` to this column's value.
    pub fn sql_value(&self, input: &str) -> String {
        match &self.expr {
            Expr::Column { via: Some(v), .. } => format!("{input}::{v}::{}", self.sql_type),
            _ => format!("{input}::{}", self.sql_type),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputPlan {
    /// Index of this output in [`Plan::outputs`]; stable for the life of the plan.
    pub id: usize,
    pub source: String,
    pub target_schema: String,
    pub target_name: String,
    pub columns: Vec<TargetColumn>,
    /// Indices into `columns` of the target's primary key.
    pub key: Vec<usize>,
}

impl OutputPlan {
    pub fn target(&self) -> String {
        format!("{}.{}", self.target_schema, self.target_name)
    }
    pub fn quoted_target(&self) -> String {
        format!(
            "{}.{}",
            quote_ident(&self.target_schema),
            quote_ident(&self.target_name)
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlan {
    pub source: String,
    /// Columns identifying a source row in the version ledger (primary key or configured key).
    pub source_key: Vec<String>,
    /// Every source column the mapping knows (kept, renamed, cast or dropped). A column outside
    /// this set appearing in the stream is schema drift.
    pub known_columns: Vec<String>,
    pub outputs: Vec<Arc<OutputPlan>>,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub tables: HashMap<String, Arc<TablePlan>>,
    pub outputs: Vec<Arc<OutputPlan>>,
}

/// One thing wrong with the mapping, with where and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub table: String,
    pub message: String,
    pub fix: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} (fix: {})", self.table, self.message, self.fix)
    }
}

fn qualify(name: &str) -> String {
    if name.contains('.') {
        name.to_string()
    } else {
        format!("public.{name}")
    }
}

/// Compile `mappings` for the tables the publication covers.
///
/// `published`: `schema.table` names in the publication. `target_client` is used to ask the
/// target server whether each needed conversion exists (by preparing a cast, not running it).
pub async fn compile(
    mappings: &[TableMapping],
    published: &[String],
    source: &HashMap<String, TableInfo>,
    target: &HashMap<String, TableInfo>,
    target_client: &Client,
) -> Result<Plan, Vec<Problem>> {
    let mut problems = Vec::new();
    let identity: Vec<TableMapping>;
    let mappings: &[TableMapping] = if mappings.is_empty() {
        identity = published
            .iter()
            .map(|t| TableMapping {
                source: t.clone(),
                target: None,
                key: None,
                columns: Default::default(),
                constants: Default::default(),
            })
            .collect();
        &identity
    } else {
        let listed: BTreeSet<String> = mappings.iter().map(|m| qualify(&m.source)).collect();
        for t in published.iter().filter(|t| !listed.contains(*t)) {
            problems.push(Problem {
                table: t.clone(),
                message: "is in the publication but has no [[tables]] mapping".into(),
                fix: format!("add a [[tables]] entry with source = \"{t}\", or remove it from the publication"),
            });
        }
        mappings
    };
    let mut plan = Plan::default();
    let mut targets_used: HashMap<String, String> = HashMap::new();
    for m in mappings {
        let src_name = qualify(&m.source);
        let tgt_name = qualify(m.target.as_deref().unwrap_or(&src_name));
        let mut p = |message: String, fix: String| {
            problems.push(Problem {
                table: src_name.clone(),
                message,
                fix,
            })
        };
        if !published.contains(&src_name) {
            p(
                "is mapped but not in the publication".into(),
                format!("ALTER PUBLICATION ... ADD TABLE {src_name} on the source"),
            );
        }
        let Some(s) = source.get(&src_name) else {
            p(
                "does not exist on the source".into(),
                "check the table name (schema.table) in [[tables]].source".into(),
            );
            continue;
        };
        let Some(t) = target.get(&tgt_name) else {
            p(
                format!("target table {tgt_name} does not exist on the target"),
                format!("create {tgt_name} in the target database (remodel never creates user tables), or set target = ..."),
            );
            continue;
        };
        if let Some(other) = targets_used.insert(tgt_name.clone(), src_name.clone()) {
            p(
                format!("target table {tgt_name} is also fed by {other}"),
                "map each source table to its own target table (N→1 merges are not supported yet)"
                    .into(),
            );
        }
        let source_key = match &m.key {
            Some(k) => {
                for c in k {
                    match s.column(c) {
                        None => p(
                            format!("key column {c} does not exist on the source"),
                            "fix [[tables]].key".into(),
                        ),
                        Some(col) if !col.not_null => p(
                            format!("key column {c} is nullable: rows with a NULL key cannot be identified or paged by backfill"),
                            format!("ALTER TABLE {src_name} ALTER COLUMN {c} SET NOT NULL, or choose a NOT NULL unique key"),
                        ),
                        Some(_) => {}
                    }
                }
                k.clone()
            }
            None if !s.primary_key.is_empty() => s.primary_key.clone(),
            None => {
                p(
                    "has no primary key, so its rows cannot be identified".into(),
                    "add a primary key on the source, or set key = [\"col\", ...] to a unique not-null key".into(),
                );
                continue;
            }
        };
        let outside: Vec<&String> = source_key
            .iter()
            .filter(|k| !s.identity_columns.contains(k))
            .collect();
        if s.replica_identity != 'n' && !outside.is_empty() {
            p(
                format!(
                    "key column(s) {} are not in the replica identity ({}), so updates and deletes cannot name the row",
                    outside.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", "),
                    if s.identity_columns.is_empty() { "none".to_string() } else { s.identity_columns.join(", ") }
                ),
                format!("ALTER TABLE {src_name} REPLICA IDENTITY FULL, or REPLICA IDENTITY USING INDEX on a unique index over the key"),
            );
        }
        if s.replica_identity == 'n' {
            p(
                "has REPLICA IDENTITY NOTHING: updates and deletes cannot be identified".into(),
                format!("ALTER TABLE {src_name} REPLICA IDENTITY DEFAULT (or FULL)"),
            );
        }
        for c in m.columns.keys().filter(|c| s.column(c).is_none()) {
            p(
                format!("mapped column {c} does not exist on the source"),
                "fix the name under [tables.columns]".into(),
            );
        }
        let mut columns: Vec<TargetColumn> = Vec::new();
        let mut filled: HashMap<String, String> = HashMap::new();
        for sc in &s.columns {
            let (tname, cast) = match m.columns.get(&sc.name) {
                Some(ColumnSpec::Action(ColumnAction::Drop)) => continue,
                None | Some(ColumnSpec::Action(ColumnAction::Keep)) => (sc.name.clone(), None),
                Some(ColumnSpec::Map(cm)) => (
                    cm.rename.clone().unwrap_or_else(|| sc.name.clone()),
                    cm.cast.clone(),
                ),
            };
            let Some(tc) = t.column(&tname) else {
                p(
                    format!("column {} maps to {tgt_name}.{tname}, which does not exist", sc.name),
                    format!("add the column to the target, rename it with {{ rename = \"...\" }}, or drop it with {} = \"drop\"", sc.name),
                );
                continue;
            };
            if tc.generated || tc.identity_always {
                p(
                    format!("target column {tgt_name}.{tname} is generated/identity ALWAYS and cannot be written"),
                    format!("drop source column {} from the mapping", sc.name),
                );
                continue;
            }
            if let Some(prev) = filled.insert(tname.clone(), sc.name.clone()) {
                p(
                    format!(
                        "target column {tname} is filled by both {prev} and {}",
                        sc.name
                    ),
                    "rename or drop one of them".into(),
                );
            }
            if let Some(c) = &cast {
                if !same_type(c, &tc.sql_type, target_client).await {
                    p(
                        format!(
                            "column {} casts to {c} but target column {tgt_name}.{tname} is {}",
                            sc.name, tc.sql_type
                        ),
                        format!("set cast = \"{}\"", tc.sql_type),
                    );
                    continue;
                }
            }
            let via = if sc.sql_type == tc.sql_type {
                None
            } else {
                match conversion(&sc.sql_type, &tc.sql_type, target_client).await {
                    Ok(via) => {
                        if cast.is_none()
                            && !assignable(&sc.sql_type, &tc.sql_type, target_client).await
                        {
                            p(
                                format!(
                                    "column {} is {} on the source but {tgt_name}.{tname} is {}",
                                    sc.name, sc.sql_type, tc.sql_type
                                ),
                                format!(
                                    "declare the conversion: {} = {{ cast = \"{}\" }}",
                                    sc.name, tc.sql_type
                                ),
                            );
                            continue;
                        }
                        via
                    }
                    Err(why) => {
                        p(
                            format!(
                                "no cast from {} ({}) to {} ({tgt_name}.{tname}): {why}",
                                sc.sql_type, sc.name, tc.sql_type
                            ),
                            "change the target column type or drop the column".into(),
                        );
                        continue;
                    }
                }
            };
            columns.push(TargetColumn {
                name: tname,
                sql_type: tc.sql_type.clone(),
                expr: Expr::Column {
                    name: sc.name.clone(),
                    via,
                },
            });
        }
        for (tname, value) in &m.constants {
            let Some(tc) = t.column(tname) else {
                p(
                    format!("constant column {tname} does not exist on {tgt_name}"),
                    "fix the name under [tables.constants]".into(),
                );
                continue;
            };
            if filled.insert(tname.clone(), "a constant".into()).is_some() {
                p(
                    format!("target column {tname} is filled by a source column and a constant"),
                    "remove one".into(),
                );
                continue;
            }
            let ok = target_client
                .query_one(&format!("SELECT $1::text::{}", tc.sql_type), &[value])
                .await;
            if let Err(e) = ok {
                p(
                    format!(
                        "constant {value:?} is not a valid {} for {tname}: {}",
                        tc.sql_type,
                        db_message(&e)
                    ),
                    "fix the value under [tables.constants]".into(),
                );
                continue;
            }
            columns.push(TargetColumn {
                name: tname.clone(),
                sql_type: tc.sql_type.clone(),
                expr: Expr::Constant(value.clone()),
            });
        }
        for tc in &t.columns {
            if tc.not_null && !tc.has_default && !tc.generated && !filled.contains_key(&tc.name) {
                p(
                    format!("target column {tgt_name}.{} is NOT NULL without a default and nothing fills it", tc.name),
                    "map a source column to it, add a constant, or give it a default".into(),
                );
            }
        }
        if t.primary_key.is_empty() {
            p(
                format!("target table {tgt_name} has no primary key"),
                format!("add a primary key to {tgt_name}: remodel upserts on it"),
            );
            continue;
        }
        let mut key = Vec::new();
        for k in &t.primary_key {
            match columns.iter().position(|c| &c.name == k) {
                Some(i) if matches!(&columns[i].expr, Expr::Column { name, .. } if source_key.contains(name)) => key.push(i),
                _ => p(
                    format!("target primary key column {tgt_name}.{k} is not filled from the source key ({})", source_key.join(", ")),
                    "map the source key columns onto the target primary key".into(),
                ),
            }
        }
        if key.len() != t.primary_key.len() {
            continue;
        }
        let fed: Vec<&str> = key
            .iter()
            .filter_map(|&i| match &columns[i].expr {
                Expr::Column { name, .. } => Some(name.as_str()),
                Expr::Constant(_) => None,
            })
            .collect();
        let uncovered: Vec<&String> = source_key
            .iter()
            .filter(|k| !fed.contains(&k.as_str()))
            .collect();
        if !uncovered.is_empty() {
            p(
                format!(
                    "source key column(s) {} do not feed the primary key of {tgt_name}: several source rows would share one target row",
                    uncovered.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
                ),
                format!("make the primary key of {tgt_name} cover the whole source key ({})", source_key.join(", ")),
            );
            continue;
        }
        let output = Arc::new(OutputPlan {
            id: plan.outputs.len(),
            source: src_name.clone(),
            target_schema: t.schema.clone(),
            target_name: t.name.clone(),
            columns,
            key,
        });
        plan.outputs.push(output.clone());
        plan.tables.insert(
            src_name.clone(),
            Arc::new(TablePlan {
                source: src_name,
                source_key,
                known_columns: s.columns.iter().map(|c| c.name.clone()).collect(),
                outputs: vec![output],
            }),
        );
    }
    if problems.is_empty() {
        Ok(plan)
    } else {
        Err(problems)
    }
}

fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

async fn same_type(a: &str, b: &str, client: &Client) -> bool {
    if a == b {
        return true;
    }
    match client
        .query_one("SELECT $1::text::regtype = $2::text::regtype", &[&a, &b])
        .await
    {
        Ok(r) => r.get(0),
        Err(_) => false,
    }
}

/// How to convert source type `from` to `to` on the target: `Ok(Some(from))` casts through
/// the source type, `Ok(None)` converts the text form directly (the target lacks `from`).
async fn conversion(from: &str, to: &str, client: &Client) -> Result<Option<String>, String> {
    let known = client
        .query_one("SELECT to_regtype($1) IS NOT NULL", &[&from])
        .await
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false);
    if known {
        client
            .prepare(&format!("SELECT NULL::{from}::{to}"))
            .await
            .map(|_| Some(from.to_string()))
            .map_err(|e| db_message(&e))
    } else {
        client
            .prepare(&format!("SELECT NULL::text::{to}"))
            .await
            .map(|_| None)
            .map_err(|e| db_message(&e))
    }
}

/// Whether PostgreSQL would convert `from` to `to` on assignment without an explicit cast.
async fn assignable(from: &str, to: &str, client: &Client) -> bool {
    client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_cast
                 WHERE castsource = to_regtype($1) AND casttarget = to_regtype($2)
                   AND castcontext IN ('i', 'a'))
                 OR to_regtype($1) = to_regtype($2)",
            &[&from, &to],
        )
        .await
        .map(|r| r.get::<_, Option<bool>>(0).unwrap_or(false))
        .unwrap_or(false)
}
