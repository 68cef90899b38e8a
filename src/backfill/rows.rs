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

use tokio_postgres::Client;

use super::{sql, BackfillError, Job, Shared};
use crate::lsn::Lsn;
use crate::read::copy::{copy_in, CopyError, Piped};
pub(crate) use crate::read::rows::RowsJob;
use crate::read::rows::{read, Parents};
use crate::state::StateSchema;
use crate::transform::plan::{OutputKind, OutputPlan};

impl RowsJob {
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

/// The transformed path: read the chunk through the transformer, stage each output's rows,
/// then merge them ([`super::merge::merge_staged`]). None when paused meanwhile.
#[allow(clippy::too_many_arguments)]
pub(super) async fn stage_transformed(
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
    let merged = super::merge::merge_staged(
        shared,
        target,
        job,
        p,
        barrier,
        |probe| {
            rj.table
                .outputs
                .iter()
                .zip(&rj.stages)
                .map(|(o, stage)| match &o.kind {
                    OutputKind::Split(_) => split_merge(st, o, stage, &rj.parents, probe),
                    _ => row_merge(st, o, stage, probe),
                })
                .collect()
        },
        &rj.table
            .outputs
            .iter()
            .zip(&rj.stages)
            .filter(|(o, _)| !matches!(o.kind, OutputKind::Split(_)))
            .map(|(o, stage)| job.sql.merge_deferred_from(st, o, stage))
            .collect::<Vec<_>>(),
    )
    .await?;
    if !merged {
        return Ok(None);
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
