//! A source table as the snapshot readers see it: the columns read (key first), their types,
//! and the COPY query for the next chunk of keys after a cursor. Pure string building.

use crate::quote::{quote_ident, quote_literal};
use crate::transform::plan::{Expr, TablePlan};

/// One source table as a snapshot reader reads it (backfill and verify): the columns, key
/// first, their types, and the COPY query of a key range. Backfill adds its staging and
/// merge statements (`backfill::sql`).
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

    pub(crate) fn key_list(&self) -> String {
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
}
