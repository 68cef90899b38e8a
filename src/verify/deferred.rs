//! Resolving deferred partial updates: a row the target lacks when the stream applies an update
//! that left a TOASTed column unchanged cannot be built (the server never sent that value), so
//! apply keeps the present values in `<state>.deferred`. A backfill chunk that copies the row
//! folds them in — but no chunk ever comes for a key that is not in a pass's snapshot (a key
//! change ahead of the cursor), a row a filter left out at the snapshot, a table whose backfill
//! is done, or a run without backfill. This task resolves every entry promptly instead, the
//! way `verify --repair` writes a row:
//!
//! ```text
//!  every second: count + oldest age ─▶ remodel_deferred_rows, remodel_deferred_oldest_seconds
//!  entries outstanding, not paused:
//!    register a running pass (tombstones it may meet stay) ─▶ list entries (oldest first)
//!    ─▶ snapshot P′ (exported; the stream has applied every commit < P′)
//!    ─▶ COPY the entries' source rows at P′ ─▶ per key: update of the whole row / delete, at P′−1
//!    ─▶ Transformer ─▶ ONE target transaction: the table lock a chunk merge takes (exclusive)
//!       · paused? roll back · the ledger-guarded writer · the chunk's fold of those keys'
//!       entries at P′ (older ones dropped, newer ones applied onto the rows just written or
//!       dropped as superseded; one whose row is still missing stays for the next round)
//! ```
//!
//! Exact under the version rule: every listed entry is older than P′ (the stream applied it
//! before the snapshot was taken), so the row read at P′ contains it; a stream write of the key
//! at C ≥ P′ is newer and wins (the guard skips the re-read row; a newer partial update is
//! folded onto it); a chunk of a newer pass that copied the row first left the key's ledger at
//! its P−1, which skips the round's older write; a row the snapshot no longer has was removed
//! by a commit before P′, which the stream has applied — the delete at P′−1 only moves its
//! tombstone. A row the mapping cannot transform or the target refuses stops the daemon.
//! There are no per-path triggers to miss: the task reads the table of entries itself, so an
//! entry, whatever put it there, is resolved within a round after it appears. The argument is
//! written out in docs/adr/0005-backfill-exactness.md.
//!
//! Must never write while paused, and never remove an entry without folding in what it holds
//! that its snapshot does not. (The stream's own deletes remove the entries of the rows they
//! remove, `state::deferred`.)

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

use super::{Ctx, VerifyError};
use crate::apply::Writer;
use crate::config::Config;
use crate::control::Control;
use crate::lsn::Lsn;
use crate::metrics::Metrics;
use crate::state::StateSchema;
use crate::transform::plan::OutputKind;
use crate::transform::{TargetOp, Transformer};

/// How often outstanding entries are counted (and, when there are some, resolved).
const POLL: Duration = Duration::from_secs(1);
/// Back-off ceiling after failed rounds.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Entries per round; the rest wait for the next one.
const MAX_ENTRIES: i64 = 10_000;
/// Keys per target transaction.
const BATCH: usize = 500;

/// Inside `remodel run`: count outstanding entries every second into the metrics, and resolve
/// them while the stream streams and the daemon is not paused. Ok on shutdown; Err only for a
/// definite failure (a re-read row the mapping cannot transform or the target refuses), which
/// stops the daemon. Other failed rounds are logged, counted in
/// `remodel_errors_total{kind="deferred"}` and tried again with back-off; the entries stay (and
/// stay visible in status, metrics and the alert) until a round succeeds.
pub async fn run(
    config: Config,
    control: Control,
    metrics: Arc<Metrics>,
) -> Result<(), VerifyError> {
    let shutdown = control.shutdown_token();
    let state = StateSchema::new(&config.target.state_schema);
    let mut watcher: Option<Client> = None;
    let mut wait = POLL;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
        if !metrics.ready.load(std::sync::atomic::Ordering::Relaxed) {
            continue;
        }
        let summary = match summary(&config, &state, &mut watcher).await {
            Ok(s) => s,
            Err(e) => {
                watcher = None;
                tracing::debug!(error = %e, "could not count deferred partial updates; trying again");
                continue;
            }
        };
        metrics.deferred_outstanding.set(summary.rows);
        metrics.deferred_oldest_seconds.set(summary.oldest_seconds);
        if summary.rows == 0 || control.is_paused() {
            wait = POLL;
            continue;
        }
        match round(&config, &control, &metrics).await {
            // Entries that no round can resolve (their table or target no longer mapped) are
            // not worth a round a second: back off until something changes.
            Ok(0) => wait = (wait * 2).min(MAX_BACKOFF),
            Ok(_) => wait = POLL,
            Err(VerifyError::Interrupted) => return Ok(()),
            Err(e) if definite(&e) => {
                metrics.errors.with_label_values(&["deferred"]).inc();
                return Err(e);
            }
            Err(e) => {
                metrics.errors.with_label_values(&["deferred"]).inc();
                tracing::warn!(
                    error = %e,
                    outstanding = summary.rows,
                    "could not resolve deferred partial updates (rows the target lacks); they stay in {}.deferred and are tried again",
                    config.target.state_schema
                );
                wait = (wait * 2).max(Duration::from_secs(2)).min(MAX_BACKOFF);
            }
        }
    }
}

/// A re-read row the mapping cannot transform (`on_error = "halt"`), one the target refuses,
/// a statement the target refuses for its data, a mapping that no longer fits: whatever the
/// error itself says is not transient. Retrying changes nothing, and the stream would stop on
/// the same row.
fn definite(e: &VerifyError) -> bool {
    !e.is_transient()
}

async fn summary(
    config: &Config,
    state: &StateSchema,
    watcher: &mut Option<Client>,
) -> Result<crate::state::DeferredSummary, VerifyError> {
    if watcher.is_none() {
        let info = config
            .target_conn()
            .map_err(crate::source::conninfo::ConnectError::from)?;
        *watcher = Some(info.connect().await?);
    }
    let client = watcher.as_ref().ok_or(VerifyError::Interrupted)?;
    Ok(state.deferred_summary(client).await?)
}

/// One round: resolve up to [`MAX_ENTRIES`] entries. Returns how many keys it re-read and
/// wrote (0: none it could list, e.g. only entries of outputs no longer mapped).
async fn round(config: &Config, control: &Control, metrics: &Metrics) -> Result<u64, VerifyError> {
    let ctx = super::connect(config, control.shutdown_token().child_token(), None).await?;
    let result = resolve(&ctx, control, metrics).await;
    ctx.state.forget_pass(&ctx.target, ctx.pass).await;
    result
}

type Keys = BTreeMap<String, BTreeMap<String, Vec<Option<String>>>>;

async fn resolve(ctx: &Ctx, control: &Control, metrics: &Metrics) -> Result<u64, VerifyError> {
    // The outputs that can have entries (a split's child set is never deferred).
    let (rels, targets): (Vec<String>, Vec<String>) = ctx
        .plan
        .tables
        .iter()
        .flat_map(|(rel, tp)| {
            tp.outputs
                .iter()
                .filter(|o| matches!(o.kind, OutputKind::Row | OutputKind::Merge))
                .map(move |o| (rel.clone(), o.target()))
        })
        .unzip();
    let entries = ctx
        .state
        .deferred_entries(&ctx.target, &rels, &targets, MAX_ENTRIES)
        .await?;
    let unmapped = ctx
        .state
        .deferred_unmapped(&ctx.target, &rels, &targets)
        .await?;
    for (rel, target, n) in unmapped {
        tracing::warn!(table = %rel, target = %target, entries = n,
            "deferred partial updates for a target the mapping no longer writes from this table: left in {}.deferred; \
             map it again, or delete the entries once the rows are settled by hand",
            ctx.state.schema);
    }
    let mut by_rel: Keys = BTreeMap::new();
    for e in &entries {
        match serde_json::from_str::<Vec<Option<String>>>(&e.skey) {
            Ok(k) => {
                by_rel
                    .entry(e.rel.clone())
                    .or_default()
                    .insert(e.skey.clone(), k);
            }
            Err(err) => tracing::warn!(table = %e.rel, key = %e.skey, version = %e.version,
                "a deferred partial update with an unreadable key ({err}): left in {}.deferred", ctx.state.schema),
        }
    }
    if by_rel.is_empty() {
        return Ok(0);
    }
    let rels: Vec<String> = by_rel.keys().cloned().collect();
    let tables = super::tables(ctx, &rels).await?;
    test_barrier(ctx, 0).await?;
    // Taken after the entries were listed: each of them is older than P′.
    let snap = ctx.snapshot().await?;
    let version = Lsn(snap.p.0.saturating_sub(1));
    let p = snap.p.to_string();
    let mut applier = Writer::new(
        ctx.tgt_info.connect().await?,
        ctx.state.clone(),
        ctx.config.stall_timeout(),
    );
    let mut transformer = Transformer::new(ctx.plan.clone());
    let mut resolved = 0u64;
    for t in tables.iter().filter(|t| by_rel.contains_key(&t.rel)) {
        // Fold the entries of the keys just written (those at ≥ P′ onto the re-read row, as a
        // chunk does), and remove them: one statement per output that can have entries.
        let fold: Vec<String> =
            t.rj.table
                .outputs
                .iter()
                .filter(|o| matches!(o.kind, OutputKind::Row | OutputKind::Merge))
                .map(|o| crate::apply::sql::fold_keys(&ctx.state, o))
                .collect();
        let keys: Vec<(&String, &Vec<Option<String>>)> = by_rel[&t.rel].iter().collect();
        for batch in keys.chunks(BATCH) {
            ctx.check()?;
            let listed: Vec<Vec<Option<String>>> =
                batch.iter().map(|(_, k)| (*k).clone()).collect();
            let mut ops =
                super::repair::reread(&snap, t, &listed, version, &mut transformer).await?;
            // A merge's clear needs the values it clears (the old row), which a re-read does
            // not know; a row the mapping cannot transform goes where `on_error` says, as in
            // the stream (a dead letter is a record; `halt` stops the daemon, naming the row).
            ops.retain(|o| !matches!(o, TargetOp::Clear { .. }));
            crate::failpoint::hit("deferred.resolve");
            test_barrier(ctx, 1).await?;
            let skeys = serde_json::to_string(&batch.iter().map(|(s, _)| s).collect::<Vec<_>>())
                .unwrap_or_default();
            // The table lock as a chunk merge takes it (exclusive): no merge interleaves, and
            // the stream's statements on these keys wait and then see the rows written here
            // (so they update them instead of deferring again). A pause that came meanwhile
            // still cancels the write.
            let settled = applier
                .apply_locked(
                    &crate::apply::sql::lock_exclusive(),
                    || !control.is_paused(),
                    ops,
                    &fold,
                    &[&t.rel, &p, &skeys],
                )
                .await
                .map_err(Box::new)?;
            let Some(settled) = settled else {
                tracing::info!(table = %t.rel, "paused: deferred partial updates wait for resume");
                return Ok(resolved);
            };
            resolved += batch.len() as u64;
            metrics
                .deferred_resolved
                .with_label_values(&[&t.rel])
                .inc_by(settled);
            tracing::info!(
                table = %t.rel,
                keys = ?batch.iter().take(10).map(|(s, _)| s.as_str()).collect::<Vec<_>>(),
                listed = batch.len(),
                settled,
                snapshot = %snap.p,
                "deferred partial updates re-read from the source and written through the version rule (settled: entries no longer outstanding)"
            );
        }
    }
    Ok(resolved)
}

/// Test hook (tests/it/deferred.rs): with `REMODEL_TEST_DEFERRED_BARRIER=K`, a round waits on the
/// target's advisory lock K after listing its entries and before its snapshot (`step` 0), and
/// on K+1 after reading the rows and before writing them (`step` 1), so a test can put a
/// source write at an exact place in a round. Unset, it does nothing.
async fn test_barrier(ctx: &Ctx, step: i64) -> Result<(), VerifyError> {
    let Some(k) = std::env::var("REMODEL_TEST_DEFERRED_BARRIER")
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
    else {
        return Ok(());
    };
    ctx.target
        .batch_execute(&format!(
            "SELECT pg_advisory_lock_shared({k}); SELECT pg_advisory_unlock_shared({k})",
            k = k + step
        ))
        .await
        .map_err(super::q("test barrier"))
}
