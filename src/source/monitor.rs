//! Periodic observation of positions for metrics: apply lag in bytes and seconds, the flush
//! position confirmed to the source, and how much WAL the slot makes the source keep.
//! Read-only; must never move a position.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::stream::FeedbackState;
use crate::metrics::Metrics;

pub async fn run(
    state: Arc<FeedbackState>,
    metrics: Arc<Metrics>,
    source: Client,
    slot: String,
    shutdown: CancellationToken,
) {
    let mut tick = 0u64;
    loop {
        let mut server = state.server_wal_end();
        if metrics.paused.get() == 1 {
            // Paused, the stream is not read, so the server's WAL end stops arriving; ask.
            if let Ok(row) = source
                .query_one("SELECT pg_current_wal_lsn()::text", &[])
                .await
            {
                if let Some(lsn) = row
                    .try_get::<_, String>(0)
                    .ok()
                    .and_then(|t| t.parse::<crate::Lsn>().ok())
                {
                    server = server.max(lsn);
                }
            }
        }
        let applied = state.applied();
        let confirmed = state.confirmed();
        metrics.server_wal_end.store(server.0, Ordering::Relaxed);
        metrics.confirmed_flush_lsn.set(confirmed.0 as i64);
        let behind = server.bytes_since(confirmed.max(applied));
        metrics.source_lag_bytes.set(behind as i64);
        if behind == 0 {
            metrics.lag_seconds.set(0.0);
        } else {
            // Behind: the oldest unapplied commit is no older than the last applied one, so its
            // age bounds the lag. Apply sets the exact figure at each commit; this keeps it
            // growing while nothing is applied (paused, stalled, reconnecting).
            let last = metrics.last_applied_commit_us.load(Ordering::Relaxed);
            if last > 0 {
                let age = (crate::source::replication::pg_now() - last) as f64 / 1e6;
                if age > metrics.lag_seconds.get() {
                    metrics.lag_seconds.set(age);
                }
            }
        }
        if tick.is_multiple_of(5) {
            let r = source
                .query_opt(
                    "SELECT (pg_current_wal_lsn() - restart_lsn)::int8 FROM pg_replication_slots WHERE slot_name = $1",
                    &[&slot],
                )
                .await;
            if let Ok(Some(row)) = r {
                if let Some(v) = row.get::<_, Option<i64>>(0) {
                    metrics.slot_retained_wal_bytes.set(v);
                }
            }
        }
        tick += 1;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
