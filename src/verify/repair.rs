//! `--repair`: rewrite the rows found different from the source, through the normal versioned
//! path, then check them again.
//!
//! ```text
//!  mismatched source keys ─▶ new snapshot P′ ─▶ COPY those rows ─▶ per key:
//!     on the source: an update (old row unknown) at version P′−1
//!     not on the source: a delete at version P′−1
//!  ─▶ Transformer ─▶ Applier (ledger-guarded statements, one target transaction per batch)
//!  ─▶ re-check the keys: still different → counted as not repaired
//! ```
//!
//! A repair can never fight the stream: a stream write of the key at C ≥ P′ carries a newer
//! version and wins whichever commits first; one at C < P′ is inside the repaired row already.
//! Must never write anything but guarded ops.

use std::collections::HashMap;

use futures_util::StreamExt;

use super::{scan, sql, Ctx, Snap, Table, VerifyError, Why};
use crate::apply::Writer;
use crate::change::{Change, Datum, Op, SourceKey, Tuple};
use crate::lsn::Lsn;
use crate::read::rows::parse_tuple;
use crate::transform::{TargetOp, Transformer};

/// Keys per repair transaction.
const BATCH: usize = 500;

pub(crate) async fn repair(ctx: &Ctx, tables: &mut [Table]) -> Result<(), VerifyError> {
    let snap = ctx.snapshot().await?;
    let version = Lsn(snap.p.0.saturating_sub(1));
    let client = ctx.tgt_info.connect().await?;
    ctx.state.hold_pass(&client, &ctx.pass_owner).await?;
    let mut applier = Writer::new(client, ctx.state.clone(), ctx.config.stall_timeout());
    let mut transformer = Transformer::new(ctx.plan.clone());
    for t in tables.iter_mut() {
        let keys: Vec<(String, Vec<Option<String>>)> =
            std::mem::take(&mut t.confirmed).into_iter().collect();
        if keys.is_empty() {
            continue;
        }
        for batch in keys.chunks(BATCH) {
            ctx.check()?;
            let listed: Vec<Vec<Option<String>>> = batch.iter().map(|(_, k)| k.clone()).collect();
            let mut ops = reread(&snap, t, &listed, version, &mut transformer).await?;
            // A row the mapping cannot transform stays a dead letter; nothing to repair with.
            // A merge's clear needs the values it clears (the old row): without them it could
            // wipe what another row wrote since, so it is left out (the row stays different).
            ops.retain(|o| !matches!(o, TargetOp::DeadLetter(_) | TargetOp::Clear { .. }));
            applier
                .apply_alone(ops, "SELECT 1", &[])
                .await
                .map_err(Box::new)?;
            crate::failpoint::hit("verify.repair");
        }
        tracing::info!(table = %t.rel, keys = keys.len(), snapshot = %snap.p, "repaired; checking again");
        t.after_repair = true;
        for (skey, k) in keys {
            t.recheck.insert(skey, (k, Why::Suspect));
        }
    }
    drop(snap);
    for _ in 0..=ctx.settings.rounds {
        if tables.iter().all(|t| t.recheck.is_empty()) {
            break;
        }
        let mut snap = ctx.snapshot().await?;
        for t in tables.iter_mut() {
            scan::recheck(ctx, t, &mut snap).await?;
        }
    }
    for t in tables.iter_mut().filter(|t| t.after_repair) {
        let unsettled = std::mem::take(&mut t.recheck).len() as u64;
        for out in &mut t.outs {
            out.report.repaired = out
                .report
                .differing()
                .saturating_sub(out.still + out.unrepairable);
        }
        if let Some(out) = t.outs.first_mut() {
            out.report.unsettled += unsettled;
        }
    }
    Ok(())
}

/// The ops that rewrite the `listed` source rows of `t` as the snapshot `snap` has them, at
/// `version` (P−1): a row the snapshot has becomes an update of its whole row (old row
/// unknown), a row it lacks a delete. Shared by `--repair` and the resolution of deferred
/// partial updates ([`super::deferred`]); the caller decides which ops to keep and writes them
/// through the ledger-guarded writer.
pub(super) async fn reread(
    snap: &Snap,
    t: &Table,
    listed: &[Vec<Option<String>>],
    version: Lsn,
    transformer: &mut Transformer,
) -> Result<Vec<TargetOp>, VerifyError> {
    let rel = t.rj.rel.clone();
    let width = rel.columns.len();
    let mut found = read(
        &snap.reader,
        &sql::copy_listed(&t.ts, listed),
        width,
        t.ts.key_len,
    )
    .await
    .map_err(|e| {
        VerifyError::Read(crate::read::ReadError::Copy {
            table: t.rel.clone(),
            source: e,
        })
    })?;
    let mut ops = Vec::new();
    for k in listed {
        let change = match found.remove(k) {
            Some(row) => Change {
                rel: rel.clone(),
                op: Op::Update,
                key: SourceKey(k.clone()),
                old: None,
                new: Some(row),
                commit_lsn: version,
                xid: 0,
            },
            None => {
                let mut old: Tuple = vec![Datum::Null; width];
                for (j, v) in k.iter().enumerate() {
                    old[j] = v.clone().map_or(Datum::Null, Datum::Text);
                }
                Change {
                    rel: rel.clone(),
                    op: Op::Delete,
                    key: SourceKey(k.clone()),
                    old: Some(old),
                    new: None,
                    commit_lsn: version,
                    xid: 0,
                }
            }
        };
        transformer
            .transform(&change, &mut ops)
            .map_err(|e| VerifyError::Transform {
                table: t.rel.clone(),
                source: e,
            })?;
    }
    Ok(ops)
}

/// The listed rows the source has, by key (the first `key_len` fields).
async fn read(
    reader: &tokio_postgres::Client,
    copy: &str,
    width: usize,
    key_len: usize,
) -> Result<HashMap<Vec<Option<String>>, Tuple>, crate::read::CopyError> {
    use crate::read::CopyError;
    let out = reader
        .copy_out(copy)
        .await
        .map_err(|e| CopyError::Source(e.into()))?;
    futures_util::pin_mut!(out);
    let mut pending: Vec<u8> = Vec::new();
    let mut rows = HashMap::new();
    while let Some(chunk) = out.next().await {
        let chunk = chunk.map_err(|e| CopyError::Source(e.into()))?;
        pending.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(n) = pending[start..].iter().position(|&b| b == b'\n') {
            let tuple = parse_tuple(&pending[start..start + n], width)?;
            start += n + 1;
            let key = tuple[..key_len]
                .iter()
                .map(|d| match d {
                    Datum::Text(s) => Some(s.clone()),
                    _ => None,
                })
                .collect();
            rows.insert(key, tuple);
        }
        pending.drain(..start);
    }
    Ok(rows)
}
