//! The one chunk-merge path: a chunk staged on the target (as read, or as the transformer made
//! it) is merged into its outputs under the table lock and the version rule, then deferred
//! entries of its keys are folded in.
//!
//! Must never write a row whose ledger version is ≥ the pass's P, and never write while paused.

use tokio_postgres::Client;

use super::{pass_barrier, sql, BackfillError, Job, Shared};
use crate::read::copy;

/// The one chunk-merge path, for a chunk staged as it was read (`chunk::stage_plain`) or as the transformer
/// made it (`rows::stage_transformed`): the test barrier, the table lock (exclusive: no stream statement
/// of the table interleaves), a pause check, whether anything of the table is newer than P
/// (else the per-row probes go), every output's merge (`merges(probe)`), then — when the table
/// has deferred entries — every fold. All merges come before any fold: a fold records its
/// entry's version (≥ P) for the key, which would make a later output's merge skip that row.
/// False when paused meanwhile: nothing written.
pub(super) async fn merge_staged(
    shared: &Shared,
    target: &Client,
    job: &Job,
    version: &str,
    barrier: Option<i64>,
    merges: impl FnOnce(bool) -> Vec<String>,
    folds: &[String],
) -> Result<bool, BackfillError> {
    let st = &shared.state;
    pass_barrier(target, barrier).await?;
    target
        .execute(&job.sql.lock(), &[&job.rel])
        .await
        .map_err(sql("locking the table against the stream"))?;
    if shared.control.is_paused() {
        return Ok(false);
    }
    // Under the lock nothing else writes this table: if nothing of it is newer than P now, no
    // staged key is, and the per-row ledger probe can go.
    let probe: bool = target
        .query_one(&job.sql.any_newer(st), &[&job.rel, &version])
        .await
        .map_err(sql("checking the ledger"))?
        .get(0);
    for merge in merges(probe) {
        target
            .execute(&merge, &[&job.rel, &version])
            .await
            .map_err(|e| BackfillError::Copy {
                table: job.rel.clone(),
                source: copy::CopyError::Target(e.into()),
            })?;
    }
    let deferred: bool = target
        .query_one(&st.any_deferred(), &[&job.rel])
        .await
        .map_err(sql("checking deferred updates"))?
        .get(0);
    if deferred {
        for fold in folds {
            target
                .execute(fold, &[&job.rel, &version])
                .await
                .map_err(sql("folding in deferred updates"))?;
        }
    }
    Ok(true)
}
