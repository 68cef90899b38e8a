//! The transformed path of a backfill chunk, for tables whose rows only remodel can compute
//! (splits, expressions, filters, several outputs, custom transforms).
//!
//! ```text
//!  COPY (key > cursor ORDER BY key LIMIT n) TO STDOUT ─▶ parse rows ─▶ Transformer (as inserts at
//!  version P−1, the same code the stream runs) ─▶ per output: COPY stage (skey, c0..) FROM STDIN
//!  ─▶ lock table ─▶ guarded merge per output, in plan order (split outputs replace child sets)
//! ```
//!
//! Memory: one chunk's transformed rows (`backfill.chunk_rows` source rows and what they turn
//! into) as COPY text, per worker. Owns nothing durable; must never write a row whose source
//! key has a ledger version ≥ P.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio_postgres::Client;

use super::copy::{self, CopyError, Piped};
use super::{sql, BackfillError, Job, Shared};
use crate::change::{Change, Datum, Op, Relation, RelationColumn, SourceKey};
use crate::lsn::Lsn;
use crate::state::StateSchema;
use crate::transform::plan::{OutputKind, OutputPlan, TablePlan};
use crate::transform::{TargetOp, Transformer, Value};

/// What a table on the transformed path needs besides its [`Job`].
pub(crate) struct RowsJob {
    pub(crate) table: Arc<TablePlan>,
    pub(crate) plan: Arc<crate::transform::Plan>,
    /// The source table as the transformer sees it (columns in COPY order, key first).
    pub(crate) rel: Arc<Relation>,
    /// Stage table per output (same order as `table.outputs`) and the parents' stage.
    pub(crate) stages: Vec<String>,
    pub(crate) parents: String,
}

impl RowsJob {
    pub(crate) fn new(
        table: Arc<TablePlan>,
        plan: Arc<crate::transform::Plan>,
        columns: &[String],
        key_len: usize,
        hint: usize,
    ) -> Option<RowsJob> {
        let (schema, name) = table.source.split_once('.')?;
        let rel = Relation {
            oid: 0,
            schema: schema.to_string(),
            name: name.to_string(),
            replica_identity: b'd',
            columns: columns
                .iter()
                .enumerate()
                .map(|(i, c)| RelationColumn {
                    is_key: i < key_len,
                    name: c.clone(),
                    type_oid: 0,
                    type_modifier: -1,
                })
                .collect(),
        };
        Some(RowsJob {
            stages: (0..table.outputs.len())
                .map(|o| format!("remodel_stage_{hint}_o{o}"))
                .collect(),
            parents: format!("remodel_stage_{hint}_p"),
            table,
            plan,
            rel: Arc::new(rel),
        })
    }

    pub(crate) fn create_stages(&self) -> String {
        let mut sql = String::new();
        for (o, stage) in self.table.outputs.iter().zip(&self.stages) {
            let cols: Vec<String> = (0..o.columns.len()).map(|i| format!("c{i} text")).collect();
            sql.push_str(&format!(
                "CREATE TEMP TABLE IF NOT EXISTS {stage} (skey text, {}) ON COMMIT DELETE ROWS;",
                cols.join(", ")
            ));
        }
        let keys: Vec<String> = (0..self.table.source_key.len())
            .map(|j| format!("k{j} text"))
            .collect();
        sql.push_str(&format!(
            "CREATE TEMP TABLE IF NOT EXISTS {} (skey text, {}) ON COMMIT DELETE ROWS;",
            self.parents,
            keys.join(", ")
        ));
        sql
    }
}

/// COPY text encoding of one field.
fn push_field(buf: &mut Vec<u8>, v: Option<&str>) {
    let Some(s) = v else {
        buf.extend_from_slice(b"\\N");
        return;
    };
    for b in s.bytes() {
        match b {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            _ => buf.push(b),
        }
    }
}

pub(crate) fn push_row<'a>(
    buf: &mut Vec<u8>,
    skey: &str,
    values: impl Iterator<Item = Option<&'a str>>,
) {
    push_field(buf, Some(skey));
    for v in values {
        buf.push(b'\t');
        push_field(buf, v);
    }
    buf.push(b'\n');
}

fn text(v: &Value) -> Option<&str> {
    match v {
        Value::Text(s) => Some(s),
        _ => None,
    }
}

/// One chunk's transformed rows, as COPY text per stage.
pub(crate) struct Transformed {
    pub(crate) stages: Vec<Vec<u8>>,
    pub(crate) parents: Vec<u8>,
    pub(crate) dead: Vec<crate::transform::DeadLetter>,
    pub(crate) rows: u64,
    pub(crate) bytes: u64,
    pub(crate) last_key: Option<Vec<Option<String>>>,
}

/// One COPY text-format line as a tuple of `n` fields.
pub(crate) fn parse_tuple(line: &[u8], n: usize) -> Result<Vec<Datum>, CopyError> {
    let tuple = line
        .split(|&b| b == b'\t')
        .map(|f| copy::unescape(f).map(|v| v.map_or(Datum::Null, Datum::Text)))
        .collect::<Result<Vec<_>, _>>()?;
    if tuple.len() != n {
        return Err(CopyError::Format(format!(
            "row has {} fields, expected {n}",
            tuple.len()
        )));
    }
    Ok(tuple)
}

/// Which source keys a read stages as parents.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parents {
    /// Keys of rows with a split output (their child sets are replaced).
    Split,
    /// Every row read that is not a dead letter (verification: target rows of these keys that
    /// no transformed row accounts for are extra).
    All,
}

/// Read the chunk from the source and transform it.
pub(crate) async fn read(
    source: &Client,
    copy_out: &str,
    rj: &RowsJob,
    version: Lsn,
    parents: Parents,
) -> Result<Transformed, BackfillError> {
    let table = &rj.table.source;
    let err = |e: CopyError| BackfillError::Copy {
        table: table.clone(),
        source: e,
    };
    let out = source
        .copy_out(copy_out)
        .await
        .map_err(|e| err(CopyError::Source(e.into())))?;
    futures_util::pin_mut!(out);
    let mut transformer = Transformer::new(rj.plan.clone());
    let key_len = rj.table.source_key.len();
    let mut t = Transformed {
        stages: vec![Vec::new(); rj.stages.len()],
        parents: Vec::new(),
        dead: Vec::new(),
        rows: 0,
        bytes: 0,
        last_key: None,
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut ops: Vec<TargetOp> = Vec::new();
    while let Some(chunk) = out.next().await {
        let chunk = chunk.map_err(|e| err(CopyError::Source(e.into())))?;
        t.bytes += chunk.len() as u64;
        pending.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(n) = pending[start..].iter().position(|&b| b == b'\n') {
            let line = &pending[start..start + n];
            start += n + 1;
            let tuple = parse_tuple(line, rj.rel.columns.len()).map_err(err)?;
            let key: Vec<Option<String>> = tuple[..key_len]
                .iter()
                .map(|d| match d {
                    Datum::Text(s) => Some(s.clone()),
                    _ => None,
                })
                .collect();
            let change = Change {
                rel: rj.rel.clone(),
                op: Op::Insert,
                key: SourceKey(key.clone()),
                old: None,
                new: Some(tuple),
                commit_lsn: version,
                xid: 0,
            };
            ops.clear();
            transformer
                .transform(&change, &mut ops)
                .map_err(|e| BackfillError::Transform {
                    table: table.clone(),
                    source: e,
                })?;
            let skey = change.key.encode();
            let mut parent_staged = parents != Parents::Split;
            let dead = t.dead.len();
            for op in ops.drain(..) {
                match op {
                    TargetOp::Upsert { output, row, .. } => {
                        push_row(
                            &mut t.stages[stage_of(rj, &output)],
                            &skey,
                            row.iter().map(text),
                        );
                    }
                    TargetOp::Children { output, rows, .. } => {
                        let buf = &mut t.stages[stage_of(rj, &output)];
                        for r in &rows {
                            push_row(buf, &skey, r.iter().map(text));
                        }
                        if !parent_staged {
                            push_row(&mut t.parents, &skey, key.iter().map(|k| k.as_deref()));
                            parent_staged = true;
                        }
                    }
                    TargetOp::DeadLetter(d) => t.dead.push(d),
                    // An insert is never a delete, clear or truncate.
                    _ => {}
                }
            }
            if parents == Parents::All && t.dead.len() == dead {
                push_row(&mut t.parents, &skey, key.iter().map(|k| k.as_deref()));
            }
            t.rows += 1;
            t.last_key = Some(key);
        }
        pending.drain(..start);
    }
    Ok(t)
}

fn stage_of(rj: &RowsJob, o: &OutputPlan) -> usize {
    rj.table
        .outputs
        .iter()
        .position(|x| x.id == o.id)
        .unwrap_or(0)
}

pub(crate) async fn copy_in(
    target: &Client,
    sql: &str,
    data: Vec<u8>,
) -> Result<(), tokio_postgres::Error> {
    let sink = target.copy_in::<_, bytes::Bytes>(sql).await?;
    futures_util::pin_mut!(sink);
    sink.as_mut().send(bytes::Bytes::from(data)).await?;
    sink.as_mut().finish().await?;
    Ok(())
}

/// The whole transformed chunk: read, stage, lock, merge. None when paused meanwhile.
#[allow(clippy::too_many_arguments)]
pub(super) async fn staged(
    shared: &Shared,
    source: &Client,
    target: &Client,
    job: &Job,
    rj: &RowsJob,
    copy_out: &str,
    p: &str,
    barrier: Option<i64>,
) -> Result<Option<Piped>, BackfillError> {
    let st = &shared.state;
    let version: Lsn = p
        .parse()
        .map_err(|_| BackfillError::SlotReply(p.to_string()))?;
    let t = read(
        source,
        copy_out,
        rj,
        Lsn(version.0.saturating_sub(1)),
        Parents::Split,
    )
    .await?;
    let cerr = |e: tokio_postgres::Error| BackfillError::Copy {
        table: job.rel.clone(),
        source: CopyError::Target(e.into()),
    };
    for ((o, stage), data) in rj.table.outputs.iter().zip(&rj.stages).zip(t.stages) {
        if data.is_empty() {
            continue;
        }
        let cols: Vec<String> = (0..o.columns.len()).map(|i| format!("c{i}")).collect();
        copy_in(
            target,
            &format!("COPY {stage} (skey, {}) FROM STDIN", cols.join(", ")),
            data,
        )
        .await
        .map_err(cerr)?;
    }
    if !t.parents.is_empty() {
        let keys: Vec<String> = (0..rj.table.source_key.len())
            .map(|j| format!("k{j}"))
            .collect();
        copy_in(
            target,
            &format!("COPY {} (skey, {}) FROM STDIN", rj.parents, keys.join(", ")),
            t.parents,
        )
        .await
        .map_err(cerr)?;
    }
    super::pass_barrier(target, barrier).await?;
    target
        .execute(&job.sql.lock(), &[&job.rel])
        .await
        .map_err(sql("locking the table against the stream"))?;
    if shared.control.is_paused() {
        return Ok(None);
    }
    // Under the lock nothing else writes this table: when nothing of it is newer than P, no
    // staged key can be, and the per-row probes can go.
    let probe: bool = target
        .query_one(&job.sql.any_newer(st), &[&job.rel, &p])
        .await
        .map_err(sql("checking the ledger"))?
        .get(0);
    for (o, stage) in rj.table.outputs.iter().zip(&rj.stages) {
        let merge = match &o.kind {
            OutputKind::Split(_) => split_merge(st, o, stage, &rj.parents, probe),
            _ => row_merge(st, o, stage, probe),
        };
        target
            .execute(&merge, &[&job.rel, &p])
            .await
            .map_err(cerr)?;
    }
    // Every output's merge first: a fold records its entry's version (≥ P) for the key, which
    // would make a later output's merge (a split's child set) skip that row.
    for (o, stage) in rj.table.outputs.iter().zip(&rj.stages) {
        if !matches!(o.kind, OutputKind::Split(_)) {
            target
                .execute(&job.sql.merge_deferred_from(st, o, stage), &[&job.rel, &p])
                .await
                .map_err(sql("folding in deferred updates"))?;
        }
    }
    if !t.dead.is_empty() {
        record_dead(target, st, &t.dead).await?;
    }
    Ok(Some(Piped {
        rows: t.rows,
        bytes: t.bytes,
        last_key: t.last_key,
        dead: t.dead.len() as u64,
    }))
}

async fn record_dead(
    target: &Client,
    st: &StateSchema,
    dead: &[crate::transform::DeadLetter],
) -> Result<(), BackfillError> {
    let rels: Vec<&str> = dead.iter().map(|d| d.source_rel.as_ref()).collect();
    let keys: Vec<String> = dead.iter().map(|d| d.key.encode()).collect();
    let vers: Vec<String> = dead.iter().map(|d| d.version.to_string()).collect();
    let ops: Vec<&str> = dead.iter().map(|_| "backfill").collect();
    let why: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    let json: Vec<String> = dead.iter().map(|d| d.row.to_string()).collect();
    for d in dead {
        tracing::warn!(table = %d.source_rel, key = %d.key, snapshot = %d.version, reason = %d.reason,
            "backfill row set aside in {}.dead_letters (on_error = \"dead_letter\")", st.schema);
    }
    target
        .execute(
            &crate::apply::sql::dead_letters(st),
            &[&rels, &keys, &vers, &ops, &why, &json],
        )
        .await
        .map_err(sql("recording dead letters"))?;
    Ok(())
}

/// Whether the staged row `alias` may be written at P (`$2`): nothing of its source key is
/// newer in the ledger. (A deferred partial update of the row does not make it writable: the
/// snapshot's values of the columns the update left out may be older than the row's at the
/// update — a full write or a removal can lie between — so such an entry is folded only into a
/// row the target holds, or left for the resolution, which re-reads the whole row.) Without
/// `probe` (nothing of the table is newer than P) only the table-wide tombstone is checked.
fn writable(st: &StateSchema, alias: &str, probe: bool) -> String {
    st.writable_from_snapshot(probe.then(|| format!("{alias}.skey")).as_deref())
}

fn row_merge(st: &StateSchema, o: &OutputPlan, stage: &str, probe: bool) -> String {
    let values: Vec<String> = o
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| c.sql_value(&format!("s.c{i}")))
        .collect();
    let (targets, on_conflict) = crate::apply::sql::insert_columns_and_conflict(o);
    format!(
        "INSERT INTO {target} AS t ({targets})
         SELECT {values} FROM {stage} s WHERE {ok}
         {on_conflict}",
        target = o.quoted_target(),
        values = values.join(", "),
        ok = writable(st, "s", probe),
    )
}

fn split_merge(
    st: &StateSchema,
    o: &OutputPlan,
    stage: &str,
    parents: &str,
    probe: bool,
) -> String {
    let c = crate::apply::sql::child_sql(o, "p", "k");
    format!(
        "WITH parents AS MATERIALIZED (SELECT p.* FROM {parents} p WHERE {ok}),
         gone AS (
           DELETE FROM {target} AS t USING parents p
           WHERE {parent_match}
             AND NOT EXISTS (SELECT 1 FROM {stage} k WHERE k.skey = p.skey AND {kid_match}))
         INSERT INTO {target} AS t ({targets})
         SELECT {values} FROM {stage} k JOIN parents p ON p.skey = k.skey
         {on_conflict}",
        ok = if probe {
            writable_parent(st)
        } else {
            writable(st, "p", false)
        },
        target = o.quoted_target(),
        parent_match = c.parent_match,
        kid_match = c.kid_match,
        targets = c.targets,
        values = c.values,
        on_conflict = c.on_conflict,
    )
}

/// A parent's child set is written when nothing of the parent is newer than P.
fn writable_parent(st: &StateSchema) -> String {
    st.writable_from_snapshot(Some("p.skey"))
}
