//! SQL text for backfill: the chunk query on the source, the staging table and the guarded
//! merge on the target. Pure string building; no I/O.
//!
//! A chunk merge writes a staged row only when the ledger holds nothing for its source key at a
//! version ≥ P (a stream write or tombstone newer than the pass snapshot), and when no TRUNCATE
//! at ≥ P happened (checked before the merge). Deferred partial updates of the staged keys are
//! folded in afterwards, in the same transaction.

use crate::quote::{quote_ident, quote_literal};
pub use crate::read::TableSql;
use crate::state::StateSchema;
use crate::transform::plan::{Expr, OutputPlan};

impl TableSql {
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
        crate::apply::sql::lock_exclusive()
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
        crate::apply::sql::fold(state, o, &staged)
    }

    /// [`TableSql::merge_deferred`] for the keys in `$3` (a JSON array of source keys as the
    /// ledger stores them), just written at `$2`−1 from a snapshot at `$2`: the resolution of
    /// deferred entries (`verify::deferred`).
    pub fn merge_deferred_keys(state: &StateSchema, o: &OutputPlan) -> String {
        crate::apply::sql::fold_keys(state, o)
    }

    /// [`TableSql::merge_deferred`] for a stage of transformed rows (with an `skey` column).
    pub fn merge_deferred_from(&self, state: &StateSchema, o: &OutputPlan, stage: &str) -> String {
        crate::apply::sql::fold(state, o, &format!("SELECT s.skey FROM {stage} s"))
    }
}

/// Record the chunk: cursor (JSON text of the last key), counts. `$1` rel, `$2` cursor,
/// `$3` rows, `$4` done.
pub fn advance(state: &StateSchema) -> String {
    state.advance_backfill()
}
