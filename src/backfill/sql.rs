//! SQL text for backfill: the chunk query on the source, the staging table and the guarded
//! merge on the target. Pure string building; no I/O.
//!
//! A chunk merge writes a staged row only when the ledger holds nothing for its source key at a
//! version ≥ P (a stream write or tombstone newer than the pass snapshot), and when no TRUNCATE
//! at ≥ P happened (checked before the merge). Deferred partial updates of the staged keys are
//! folded in afterwards, in the same transaction.

use crate::apply::sql::table_lock_key;
use crate::quote::{quote_ident, quote_literal};
use crate::state::StateSchema;
use crate::transform::plan::{Expr, OutputPlan, TablePlan};

/// What one table's backfill reads and stages.
#[derive(Debug, Clone)]
pub struct TableSql {
    /// Source columns read, key columns first.
    pub columns: Vec<String>,
    /// Source SQL types of `columns` (for typed cursor comparison).
    pub types: Vec<String>,
    /// How many of `columns` form the key.
    pub key_len: usize,
    pub source_quoted: String,
    pub stage: String,
}

impl TableSql {
    pub fn new(
        plan: &TablePlan,
        source_types: &dyn Fn(&str) -> Option<String>,
        oid_hint: usize,
        all: Option<&[String]>,
    ) -> Option<TableSql> {
        let mut columns: Vec<String> = plan.source_key.clone();
        for c in all.unwrap_or_default() {
            if !columns.contains(c) {
                columns.push(c.clone());
            }
        }
        for o in &plan.outputs {
            for c in &o.columns {
                if let Expr::Column { name, .. } | Expr::Lookup { from: name, .. } = &c.expr {
                    if !columns.contains(name) {
                        columns.push(name.clone());
                    }
                }
            }
        }
        let types = columns
            .iter()
            .map(|c| source_types(c))
            .collect::<Option<Vec<_>>>()?;
        let (schema, name) = plan.source.split_once('.')?;
        Some(TableSql {
            key_len: plan.source_key.len(),
            source_quoted: format!("{}.{}", quote_ident(schema), quote_ident(name)),
            stage: format!("remodel_stage_{oid_hint}"),
            columns,
            types,
        })
    }

    fn key_list(&self) -> String {
        self.columns[..self.key_len]
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `COPY (SELECT .. WHERE key > cursor ORDER BY key LIMIT n) TO STDOUT` (text format).
    pub fn copy_out(&self, cursor: Option<&[Option<String>]>, limit: u64) -> String {
        let cols = self
            .columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ");
        let filter = match cursor {
            None => String::new(),
            Some(values) => {
                let lits = values
                    .iter()
                    .zip(&self.types)
                    .map(|(v, t)| match v {
                        Some(v) => format!("{}::{t}", quote_literal(v)),
                        None => format!("NULL::{t}"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(" WHERE ({}) > ({lits})", self.key_list())
            }
        };
        format!(
            "COPY (SELECT {cols} FROM {src}{filter} ORDER BY {keys} LIMIT {limit}) TO STDOUT",
            src = self.source_quoted,
            keys = self.key_list(),
        )
    }

    pub fn create_stage(&self) -> String {
        let cols = (0..self.columns.len())
            .map(|i| format!("s{i} text"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "CREATE TEMP TABLE IF NOT EXISTS {} ({cols}) ON COMMIT DELETE ROWS",
            self.stage
        )
    }

    pub fn copy_in(&self) -> String {
        let cols = (0..self.columns.len())
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("COPY {} ({cols}) FROM STDIN", self.stage)
    }

    /// The ledger key of a staged row: must equal `SourceKey::encode` (a JSON array of text).
    fn skey(&self, alias: &str) -> String {
        let parts = (0..self.key_len)
            .map(|i| format!("{alias}.s{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!("array_to_json(ARRAY[{parts}]::text[])::text")
    }

    fn staged(&self, name: &str) -> String {
        format!(
            "{alias}.s{i}",
            alias = "s",
            i = self.columns.iter().position(|c| c == name).unwrap_or(0)
        )
    }

    /// Take the table's lock exclusively (the stream takes it shared): `$1` = source table.
    pub fn lock(&self) -> String {
        format!("SELECT pg_advisory_xact_lock({})", table_lock_key("$1"))
    }

    /// `COPY target (cols) FROM STDIN` taking the chunk's columns as they come, when the plan
    /// is a pure column mapping (one output; every target column a source column converted by
    /// its type's input function; no constants): then a chunk can skip the staging table.
    pub fn direct_copy_in(&self, outputs: &[std::sync::Arc<OutputPlan>]) -> Option<String> {
        let [o] = outputs else { return None };
        // Every column read must land in exactly one target column, and every target column
        // must come from one (COPY cannot skip input columns or fill constants).
        if o.columns.len() != self.columns.len() {
            return None;
        }
        let mut targets = Vec::with_capacity(self.columns.len());
        for src in &self.columns {
            let t = o
                .columns
                .iter()
                .find(|c| matches!(&c.expr, Expr::Column { name, via: None } if name == src))?;
            targets.push(quote_ident(&t.name));
        }
        if o.columns
            .iter()
            .any(|c| !matches!(c.expr, Expr::Column { via: None, .. }))
        {
            return None;
        }
        Some(format!(
            "COPY {} ({}) FROM STDIN",
            o.quoted_target(),
            targets.join(", ")
        ))
    }

    /// Whether the ledger holds anything of the table at a version ≥ P (`$1`, `$2`): when not,
    /// under the table lock, no staged key can be newer and the per-row probe can be skipped.
    pub fn any_newer(&self, state: &StateSchema) -> String {
        state.any_since()
    }

    /// Guarded merge of the staged chunk into one output. `$1` source table, `$2` P. With
    /// `probe` false the per-key ledger check is left out (see [`TableSql::any_newer`]).
    pub fn merge(&self, state: &StateSchema, o: &OutputPlan, probe: bool) -> String {
        let values: Vec<String> = o
            .columns
            .iter()
            .map(|c| match &c.expr {
                Expr::Column { name, .. } | Expr::Lookup { from: name, .. } => {
                    c.sql_value(&self.staged(name))
                }
                Expr::Constant(v) => format!("{}::{}", quote_literal(v), c.sql_type),
                // Not on this path: tables with values computed in remodel stage transformed rows.
                _ => format!("NULL::{}", c.sql_type),
            })
            .collect();
        let (targets, on_conflict) = crate::apply::sql::insert_columns_and_conflict(o);
        let skey = self.skey("s");
        format!(
            "INSERT INTO {target} AS t ({targets})
             SELECT {values} FROM {stage} s
             WHERE {writable}
             {on_conflict}",
            target = o.quoted_target(),
            values = values.join(", "),
            stage = self.stage,
            writable = state.writable_from_snapshot(probe.then_some(skey.as_str())),
        )
    }

    /// Fold deferred partial updates of the staged keys into the rows just written: older ones
    /// are in the snapshot already (their key's ledger goes to P−1) and go; newer ones are
    /// applied onto the row just written and go, or go as superseded; an entry whose key has a
    /// version in [P, entry] (the row was not just written from the snapshot) stays for the
    /// resolution. `$1` source table, `$2` P. Returns one row: how many entries went.
    pub fn merge_deferred(&self, state: &StateSchema, o: &OutputPlan) -> String {
        let staged = format!("SELECT {} AS skey FROM {} s", self.skey("s"), self.stage);
        merge_deferred(state, o, &staged)
    }

    /// [`TableSql::merge_deferred`] for the keys in `$3` (a JSON array of source keys as the
    /// ledger stores them), just written at `$2`−1 from a snapshot at `$2`: the resolution of
    /// deferred entries (`verify::deferred`).
    pub fn merge_deferred_keys(state: &StateSchema, o: &OutputPlan) -> String {
        merge_deferred(
            state,
            o,
            "SELECT jsonb_array_elements_text($3::text::jsonb) AS skey",
        )
    }

    /// [`TableSql::merge_deferred`] for a stage of transformed rows (with an `skey` column).
    pub fn merge_deferred_from(&self, state: &StateSchema, o: &OutputPlan, stage: &str) -> String {
        merge_deferred(state, o, &format!("SELECT s.skey FROM {stage} s"))
    }
}

/// Fold deferred partial updates of the keys `staged` (a query giving `skey`) into `o`.
fn merge_deferred(state: &StateSchema, o: &OutputPlan, staged: &str) -> String {
    let from_json = |name: &str| format!("(live.columns->>{})", quote_literal(name));
    let sets: Vec<String> = o
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !o.key.contains(i))
        .map(|(_, c)| {
            format!(
                "{q} = CASE WHEN live.columns ? {lit} THEN {v} ELSE t.{q} END",
                q = quote_ident(&c.name),
                lit = quote_literal(&c.name),
                v = c.sql_value(&from_json(&c.name))
            )
        })
        .collect();
    let wheres = crate::apply::sql::match_columns(o, &o.key, |_, k| from_json(&o.columns[k].name));
    let update = if sets.is_empty() {
        format!(
            "SELECT live.skey FROM live JOIN {} t ON {}",
            o.quoted_target(),
            wheres
        )
    } else {
        format!(
            "UPDATE {} AS t SET {} FROM live WHERE {} RETURNING live.skey",
            o.quoted_target(),
            sets.join(", "),
            wheres
        )
    };
    state.fold(staged, &quote_literal(&o.target()), &update)
}

/// Record the chunk: cursor (JSON text of the last key), counts. `$1` rel, `$2` cursor,
/// `$3` rows, `$4` done.
pub fn advance(state: &StateSchema) -> String {
    state.advance_backfill()
}
