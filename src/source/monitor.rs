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

/// WAL the source may run ahead of the confirmed position while nothing is pending for us
/// (checkpoints, other databases, between keepalives). More than this is a backlog.
const BACKLOG: u64 = 16 << 20;

pub async fn run(
    state: Arc<FeedbackState>,
    metrics: Arc<Metrics>,
    source: Client,
    slot: String,
    shutdown: CancellationToken,
) {
    let mut tick = 0u64;
    // When the stream was last seen with nothing sent but unapplied (µs, PostgreSQL epoch).
    let mut caught_up_at = crate::source::replication::pg_now();
    loop {
        let server = state.server_wal_end();
        metrics.server_wal_end.store(server.0, Ordering::Relaxed);
        let applied = state.applied();
        let confirmed = state.confirmed();
        let done = confirmed.max(applied);
        metrics.confirmed_flush_lsn.set(confirmed.0 as i64);
        metrics.received_lsn.set(state.forwarded().0 as i64);
        // Sent to us but not applied: the walsender's sent position (XLogData and keepalive
        // `wal_end`) is how far it has decoded, not the end of WAL.
        let in_flight = server.bytes_since(done);
        // The source's WAL end: what is written but not applied, backlog not yet decoded
        // included. (Idle, it runs a few bytes ahead of the confirmed position between
        // keepalives: WAL of checkpoints and other databases.)
        let current = source
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .ok()
            .and_then(|row| row.try_get::<_, String>(0).ok())
            .and_then(|t| t.parse::<crate::Lsn>().ok())
            .unwrap_or(server);
        let behind = current.max(server).bytes_since(done);
        metrics.source_lag_bytes.set(behind as i64);
        let now = crate::source::replication::pg_now();
        if in_flight == 0 && behind < BACKLOG {
            caught_up_at = now;
            metrics.lag_seconds.set(0.0);
        } else {
            // Behind. The oldest unapplied commit is younger than both the last applied commit
            // and the last moment nothing was pending, so the younger of those bounds its age.
            // Apply sets the exact figure at each commit; this keeps it growing while nothing
            // is applied (paused, stalled, a large transaction).
            let last = metrics.last_applied_commit_us.load(Ordering::Relaxed);
            let age = (now - last.max(caught_up_at)).max(0) as f64 / 1e6;
            if age > metrics.lag_seconds.get() {
                metrics.lag_seconds.set(age);
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
