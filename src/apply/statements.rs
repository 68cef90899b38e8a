//! The statements of one target transaction: each [`Group`] kind's prepared, ledger-guarded
//! statement with its array parameters, and the per-table shared lock taken before it.
//!
//! Owns nothing but the statement cache of its [`Writer`]; never commits, never confirms a
//! position (that is the stream loop's, `Applier::commit`, after the target's COMMIT returned).

use std::sync::Arc;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Statement;

use super::batch::{self, Group};
use super::writer::Writer;
use super::{sql, StmtKey};
use crate::quote::quote_ident;
use crate::state::StateSchema;
use crate::transform::{Guard, OutputPlan, Value};

impl Writer {
    /// The prepared shared-lock statement (see sql::lock_shared).
    pub(super) async fn lock_stmt(&mut self) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.stmts.get(&StmtKey::Lock) {
            return Ok(s.clone());
        }
        let s = self
            .client
            .prepare_typed(&sql::lock_shared(), &[Type::TEXT])
            .await?;
        self.stmts.insert(StmtKey::Lock, s.clone());
        Ok(s)
    }

    /// Of `rels`, those whose lock this target transaction does not hold yet; they are marked
    /// held (the caller takes them before anything else of its statement runs).
    pub(super) fn locks_needed(&mut self, rels: &[String]) -> Vec<String> {
        let Some(t) = self.txn.as_mut() else {
            return rels.to_vec();
        };
        rels.iter()
            .filter(|r| t.locked.insert(r.to_string()))
            .cloned()
            .collect()
    }

    pub(super) async fn exec(&mut self, group: &Group) -> Result<(), tokio_postgres::Error> {
        let rels: Vec<String> = match group {
            Group::Upsert { output, .. }
            | Group::Update { output, .. }
            | Group::Delete { output, .. }
            | Group::Clear { output, .. }
            | Group::Children { output, .. } => vec![output.source.clone()],
            Group::Truncate { tables } => tables.iter().map(|t| t.0.to_string()).collect(),
            Group::DeadLetters { .. } => vec![],
        };
        let mut need = self.locks_needed(&rels);
        let mut lock = if need.is_empty() {
            None
        } else {
            Some(self.lock_stmt().await?)
        };
        let pipelined = matches!(
            group,
            Group::Upsert { .. } | Group::Update { .. } | Group::Delete { .. }
        ) && need.len() == 1;
        if !pipelined {
            if let Some(lock) = lock.take() {
                for rel in need.drain(..) {
                    self.client.execute(&lock, &[&rel]).await?;
                }
            }
        }
        let (output, key, cols, from, rows) = match group {
            Group::Truncate { tables } => return self.truncate(tables).await,
            Group::Clear { output, rows } => return self.clear(output, rows).await,
            Group::Children { output, parents } => return self.children(output, parents).await,
            Group::DeadLetters { rows } => return self.dead_letters(rows).await,
            Group::Upsert { .. } | Group::Update { .. } | Group::Delete { .. } => {
                match data_parts(group, |o| self.plain(o)) {
                    Some(parts) => parts,
                    None => return Ok(()),
                }
            }
        };
        let state = self.state.clone();
        let n = 3 + cols.len() + from.first().map_or(0, Vec::len);
        let plain = key.is_plain();
        if plain {
            self.note_plain(&output.source, rows);
        }
        let text = |key: &StmtKey| stmt_text(&state, output, key);
        let stmt = self.stmt(key, text, n).await?;
        // Only partial updates return rows: the keys they had to defer. The table lock (one
        // source table here) is its own statement, pipelined just before (same round trip).
        // (Flushes send stretches of row groups through exec_pipelined; this path serves the
        // other kinds and diagnose's one-row groups.)
        let run = self.run_rows(&stmt, &output.source, rows, &cols, from, plain);
        let deferred = match (&lock, need.first()) {
            (Some(lock), Some(rel)) => {
                let p: [&(dyn ToSql + Sync); 1] = [rel];
                let (locked, deferred) = tokio::join!(self.client.execute(lock, &p), run);
                locked?;
                deferred?
            }
            _ => run.await?,
        };
        self.note_deferred(output, rows, &deferred);
        Ok(())
    }

    /// Partial updates whose rows the target does not have: counted and logged (the statement
    /// already kept them in `<state>.deferred`).
    pub(super) fn note_deferred(
        &mut self,
        output: &OutputPlan,
        rows: &[(Guard, Vec<Value>)],
        deferred: &[String],
    ) {
        if deferred.is_empty() {
            return;
        }
        // Their resolution reads a snapshot: the table's writes are recorded from now on.
        self.stick(&output.source);
        if let Some(t) = self.txn.as_mut() {
            *t.counts.deferred.entry(output.source.clone()).or_default() += deferred.len() as u64;
        }
        tracing::info!(
            table = %output.source,
            keys = ?deferred.iter().take(10).collect::<Vec<_>>(),
            count = deferred.len(),
            lsn = %rows.first().map(|r| r.0.version).unwrap_or_default(),
            "update with unchanged TOASTed columns for rows the target does not have: \
             kept in {}.deferred; the daemon re-reads those rows from the source within seconds \
             (remodel_deferred_rows)",
            self.state.schema
        );
    }

    pub(super) async fn stmt(
        &mut self,
        key: StmtKey,
        text: impl FnOnce(&StmtKey) -> String,
        n: usize,
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(s) = self.stmts.get(&key) {
            return Ok(s.clone());
        }
        let mut types = vec![Type::TEXT];
        types.extend(std::iter::repeat_n(Type::TEXT_ARRAY, n - 1));
        let s = self.client.prepare_typed(&text(&key), &types).await?;
        self.stmts.insert(key, s.clone());
        Ok(s)
    }

    pub(super) async fn clear(
        &mut self,
        o: &Arc<crate::transform::OutputPlan>,
        rows: &batch::ClearRows,
    ) -> Result<(), tokio_postgres::Error> {
        let own = o.columns.len() - o.key.len();
        let n = 4 + o.key.len() + own;
        let state = self.state.clone();
        let stmt = self
            .stmt(StmtKey::Clear(o.id), |_| sql::clear(&state, o), n)
            .await?;
        let skeys: Vec<String> = rows.iter().map(|r| r.0.key.encode()).collect();
        let vers: Vec<String> = rows.iter().map(|r| r.0.version.to_string()).collect();
        let cmp: Vec<&str> = rows
            .iter()
            .map(|r| if r.2.is_some() { "t" } else { "f" })
            .collect();
        let mut cols: Vec<Vec<Option<&str>>> = (0..o.key.len())
            .map(|j| rows.iter().map(|r| text_of(r.1.get(j))).collect())
            .collect();
        for j in 0..own {
            cols.push(
                rows.iter()
                    .map(|r| r.2.as_ref().and_then(|v| text_of(v.get(j))))
                    .collect(),
            );
        }
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&o.source, &skeys, &vers, &cmp];
        for c in &cols {
            params.push(c);
        }
        self.client.execute(&stmt, &params).await?;
        Ok(())
    }

    pub(super) async fn children(
        &mut self,
        o: &Arc<crate::transform::OutputPlan>,
        parents: &[batch::ChildSet],
    ) -> Result<(), tokio_postgres::Error> {
        let np = o.split().map_or(0, |s| s.parent.len());
        let n = 4 + np + 1 + o.columns.len();
        let state = self.state.clone();
        let stmt = self
            .stmt(StmtKey::Children(o.id), |_| sql::children(&state, o), n)
            .await?;
        let skeys: Vec<String> = parents.iter().map(|p| p.guard.key.encode()).collect();
        let vers: Vec<String> = parents
            .iter()
            .map(|p| p.guard.version.to_string())
            .collect();
        let del: Vec<&str> = parents
            .iter()
            .map(|p| if p.deleted { "t" } else { "f" })
            .collect();
        let pcols: Vec<Vec<Option<&str>>> = (0..np)
            .map(|j| parents.iter().map(|p| text_of(p.parent.get(j))).collect())
            .collect();
        let kid_skeys: Vec<&str> = parents
            .iter()
            .zip(&skeys)
            .flat_map(|(p, k)| std::iter::repeat_n(k.as_str(), p.rows.len()))
            .collect();
        let kcols: Vec<Vec<Option<&str>>> = (0..o.columns.len())
            .map(|i| {
                parents
                    .iter()
                    .flat_map(|p| p.rows.iter().map(move |r| text_of(r.get(i))))
                    .collect()
            })
            .collect();
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&o.source, &skeys, &vers, &del];
        for c in &pcols {
            params.push(c);
        }
        params.push(&kid_skeys);
        for c in &kcols {
            params.push(c);
        }
        self.client.execute(&stmt, &params).await?;
        Ok(())
    }

    pub(super) async fn dead_letters(
        &mut self,
        rows: &[crate::transform::DeadLetter],
    ) -> Result<(), tokio_postgres::Error> {
        let stmt = match self.stmts.get(&StmtKey::DeadLetters) {
            Some(s) => s.clone(),
            None => {
                let s = self
                    .client
                    .prepare_typed(&sql::dead_letters(&self.state), &[Type::TEXT_ARRAY; 6])
                    .await?;
                self.stmts.insert(StmtKey::DeadLetters, s.clone());
                s
            }
        };
        let rels: Vec<&str> = rows.iter().map(|d| d.source_rel.as_ref()).collect();
        let keys: Vec<String> = rows.iter().map(|d| d.key.encode()).collect();
        let vers: Vec<String> = rows.iter().map(|d| d.version.to_string()).collect();
        let ops: Vec<&str> = rows.iter().map(|d| d.op).collect();
        let why: Vec<&str> = rows.iter().map(|d| d.reason.as_str()).collect();
        let json: Vec<String> = rows.iter().map(|d| d.row.to_string()).collect();
        self.client
            .execute(&stmt, &[&rels, &keys, &vers, &ops, &why, &json])
            .await?;
        for d in rows {
            // `dead-letters --retry` writes at the letter's version: later writes of the
            // table must be recorded for it to see them.
            self.stick(&d.source_rel);
            tracing::warn!(table = %d.source_rel, key = %d.key, lsn = %d.version, reason = %d.reason,
                "row set aside in {}.dead_letters (on_error = \"dead_letter\")", self.state.schema);
            if let Some(t) = self.txn.as_mut() {
                *t.counts
                    .dead_letters
                    .entry(d.source_rel.clone())
                    .or_default() += 1;
            }
        }
        Ok(())
    }

    pub(super) async fn run_rows(
        &self,
        stmt: &Statement,
        rel: &str,
        rows: &[(Guard, Vec<Value>)],
        cols: &[usize],
        from: &[Vec<Value>],
        plain: bool,
    ) -> Result<Vec<String>, tokio_postgres::Error> {
        let params = RowParams::new(rows, cols, from, plain);
        let out = self.client.query(stmt, &params.refs(&rel)).await?;
        Ok(deferred_keys(&out))
    }

    pub(super) async fn truncate(
        &self,
        tables: &[batch::TruncatedTable],
    ) -> Result<(), tokio_postgres::Error> {
        let mut targets = Vec::new();
        let mut recorded = Vec::new();
        for (rel, version, outputs) in tables {
            let newer: bool = self
                .client
                .query_one(
                    &sql::newer_than(&self.state),
                    &[&rel.as_ref(), &version.to_string()],
                )
                .await?
                .get(0);
            if newer {
                tracing::warn!(table = %rel, %version, "skipping a TRUNCATE older than rows already applied (replay)");
                continue;
            }
            for o in outputs {
                if matches!(o.kind, crate::transform::plan::OutputKind::Merge) {
                    // A merged target's rows belong to another table: clear this one's columns.
                    let sets: Vec<String> = (0..o.columns.len())
                        .filter(|i| !o.key.contains(i))
                        .map(|i| format!("{} = NULL", quote_ident(&o.columns[i].name)))
                        .collect();
                    if !sets.is_empty() {
                        self.client
                            .batch_execute(&format!(
                                "UPDATE {} SET {}",
                                o.quoted_target(),
                                sets.join(", ")
                            ))
                            .await?;
                    }
                    continue;
                }
                let t = o.quoted_target();
                if !targets.contains(&t) {
                    targets.push(t);
                }
            }
            recorded.push((rel, version));
        }
        if !targets.is_empty() {
            self.client
                .batch_execute(&format!("TRUNCATE {}", targets.join(", ")))
                .await?;
        }
        for (rel, version) in recorded {
            self.client
                .execute(
                    &sql::record_truncation(&self.state),
                    &[&rel.as_ref(), &version.to_string()],
                )
                .await?;
        }
        Ok(())
    }
}

pub(super) fn text_of(v: Option<&Value>) -> Option<&str> {
    match v {
        Some(Value::Text(s)) => Some(s.as_str()),
        _ => None,
    }
}

/// The parts of a row group's statement: output, statement key, the row columns it sends, the
/// old keys of moved rows, and the rows. None for the other group kinds. `plain`: whether the
/// group's output is written without recording versions.
#[allow(clippy::type_complexity)]
pub(super) fn data_parts(
    group: &Group,
    plain: impl Fn(&OutputPlan) -> bool,
) -> Option<(
    &Arc<OutputPlan>,
    StmtKey,
    Vec<usize>,
    &[Vec<Value>],
    &batch::GuardedRows,
)> {
    match group {
        Group::Upsert { output, rows } => Some((
            output,
            if plain(output) {
                StmtKey::PlainUpsert(output.id)
            } else {
                StmtKey::Upsert(output.id)
            },
            (0..output.columns.len()).collect(),
            &[][..],
            rows,
        )),
        Group::Update {
            output,
            present,
            rows,
            from,
        } => Some((
            output,
            StmtKey::Update(output.id, present.clone(), !from.is_empty()),
            present.clone(),
            &from[..],
            rows,
        )),
        Group::Delete { output, rows } => Some((
            output,
            if plain(output) {
                StmtKey::PlainDelete(output.id)
            } else {
                StmtKey::Delete(output.id)
            },
            (0..output.key.len()).collect(),
            &[][..],
            rows,
        )),
        _ => None,
    }
}

/// The SQL of a row group's statement.
pub(super) fn stmt_text(state: &StateSchema, output: &OutputPlan, key: &StmtKey) -> String {
    match key {
        StmtKey::Upsert(_) => sql::upsert(state, output),
        StmtKey::Update(_, present, moved) => sql::update_present(state, output, present, *moved),
        StmtKey::Delete(_) => sql::delete(state, output),
        StmtKey::PlainUpsert(_) => sql::plain_upsert(output),
        StmtKey::PlainDelete(_) => sql::plain_delete(output),
        // Prepared by their own methods (clear, children, dead_letters, commit, locks).
        StmtKey::Clear(_)
        | StmtKey::Children(_)
        | StmtKey::DeadLetters
        | StmtKey::Progress
        | StmtKey::Lock => String::new(),
    }
}

/// A row group's array parameters (`$2..`; `$1` is the source table), owned so that a request
/// can borrow them while it is in flight.
pub(super) struct RowParams<'a> {
    skeys: Vec<String>,
    vers: Vec<String>,
    columns: Vec<Vec<Option<&'a str>>>,
    from_cols: Vec<Vec<Option<String>>>,
}

impl<'a> RowParams<'a> {
    /// `plain`: the statement reads no keys or versions (sent empty).
    pub(super) fn new(
        rows: &'a [(Guard, Vec<Value>)],
        cols: &[usize],
        from: &[Vec<Value>],
        plain: bool,
    ) -> Self {
        let text = |v: &Value| match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        };
        RowParams {
            skeys: match plain {
                true => Vec::new(),
                false => rows.iter().map(|(g, _)| g.key.encode()).collect(),
            },
            vers: match plain {
                true => Vec::new(),
                false => rows.iter().map(|(g, _)| g.version.to_string()).collect(),
            },
            columns: cols
                .iter()
                .map(|&c| rows.iter().map(|(_, r)| text_of(r.get(c))).collect())
                .collect(),
            from_cols: match from.first() {
                Some(first) => (0..first.len())
                    .map(|j| from.iter().map(|k| k.get(j).and_then(text)).collect())
                    .collect(),
                None => vec![],
            },
        }
    }

    pub(super) fn refs<'b>(&'b self, rel: &'b &'b str) -> Vec<&'b (dyn ToSql + Sync)> {
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![rel, &self.skeys, &self.vers];
        for c in &self.columns {
            params.push(c);
        }
        for c in &self.from_cols {
            params.push(c);
        }
        params
    }
}

/// The keys a partial update returned (rows it had to defer).
pub(super) fn deferred_keys(rows: &[tokio_postgres::Row]) -> Vec<String> {
    rows.iter()
        .filter_map(|r| r.try_get::<_, String>(0).ok())
        .collect()
}
