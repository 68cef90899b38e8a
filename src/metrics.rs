//! Prometheus metrics: every name in one place ([`names`]), one registry, and the HTTP endpoint
//! (`/metrics`, `/healthz`, `/readyz`, `/status`).
//!
//! Owns metric definitions and exposition. Must never block a pipeline stage: stages only
//! touch atomics; the HTTP server runs on its own task.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio_util::sync::CancellationToken;

/// Every metric name remodel registers. Dashboards and alerts must use these.
pub mod names {
    pub const APPLIED_LSN: &str = "remodel_applied_lsn";
    pub const SOURCE_LAG_BYTES: &str = "remodel_source_lag_bytes";
    pub const LAG_SECONDS: &str = "remodel_lag_seconds";
    pub const CHANGES_APPLIED_TOTAL: &str = "remodel_changes_applied_total";
    pub const TRANSACTIONS_APPLIED_TOTAL: &str = "remodel_transactions_applied_total";
    pub const APPLY_BATCH_SECONDS: &str = "remodel_apply_batch_seconds";
    pub const PAUSED: &str = "remodel_paused";
    pub const ERRORS_TOTAL: &str = "remodel_errors_total";
    pub const SLOT_RETAINED_WAL_BYTES: &str = "remodel_slot_retained_wal_bytes";
    pub const CONFIRMED_FLUSH_LSN: &str = "remodel_confirmed_flush_lsn";
    pub const RECEIVED_LSN: &str = "remodel_received_lsn";
    pub const RESTARTS_TOTAL: &str = "remodel_restarts_total";
    pub const DEFERRED_ROWS_TOTAL: &str = "remodel_deferred_rows_total";
    pub const DEFERRED_ROWS: &str = "remodel_deferred_rows";
    pub const DEFERRED_OLDEST_SECONDS: &str = "remodel_deferred_oldest_seconds";
    pub const DEFERRED_RESOLVED_TOTAL: &str = "remodel_deferred_resolved_total";
    pub const DEAD_LETTERS_TOTAL: &str = "remodel_dead_letters_total";
    pub const BACKFILL_ROWS_TOTAL: &str = "remodel_backfill_rows_total";
    pub const BACKFILL_PROGRESS_RATIO: &str = "remodel_backfill_progress_ratio";
    pub const BACKFILL_CHUNK_SECONDS: &str = "remodel_backfill_chunk_seconds";
    pub const BACKFILL_PASSES_TOTAL: &str = "remodel_backfill_passes_total";
    pub const VERIFY_ROWS_TOTAL: &str = "remodel_verify_rows_total";
    pub const VERIFY_MISMATCHES: &str = "remodel_verify_mismatches";
    pub const VERIFY_LAST_CLEAN_TIMESTAMP_SECONDS: &str =
        "remodel_verify_last_clean_timestamp_seconds";
    pub const READY: &str = "remodel_ready";
    pub const PHASE: &str = "remodel_phase";
    pub const SWITCH_UNAVAILABLE_SECONDS: &str = "remodel_switch_unavailable_seconds";
    pub const ALL: &[&str] = &[
        APPLIED_LSN,
        SOURCE_LAG_BYTES,
        LAG_SECONDS,
        CHANGES_APPLIED_TOTAL,
        TRANSACTIONS_APPLIED_TOTAL,
        APPLY_BATCH_SECONDS,
        PAUSED,
        ERRORS_TOTAL,
        SLOT_RETAINED_WAL_BYTES,
        CONFIRMED_FLUSH_LSN,
        RECEIVED_LSN,
        RESTARTS_TOTAL,
        DEFERRED_ROWS_TOTAL,
        DEFERRED_ROWS,
        DEFERRED_OLDEST_SECONDS,
        DEFERRED_RESOLVED_TOTAL,
        DEAD_LETTERS_TOTAL,
        BACKFILL_ROWS_TOTAL,
        BACKFILL_PROGRESS_RATIO,
        BACKFILL_CHUNK_SECONDS,
        BACKFILL_PASSES_TOTAL,
        VERIFY_ROWS_TOTAL,
        VERIFY_MISMATCHES,
        VERIFY_LAST_CLEAN_TIMESTAMP_SECONDS,
        READY,
        PHASE,
        SWITCH_UNAVAILABLE_SECONDS,
    ];
}

pub struct Metrics {
    pub registry: Registry,
    pub applied_lsn: IntGauge,
    pub source_lag_bytes: IntGauge,
    pub lag_seconds: Gauge,
    pub changes_applied: IntCounterVec,
    pub transactions_applied: IntCounter,
    pub apply_batch_seconds: Histogram,
    pub paused: IntGauge,
    /// 1 for the recorded phase the daemon follows (`forward`, `switched`, ...), 0 for others.
    pub phase: IntGaugeVec,
    /// The last switch's write-unavailable time (fence to hook done).
    pub switch_unavailable_seconds: Gauge,
    pub errors: IntCounterVec,
    pub slot_retained_wal_bytes: IntGauge,
    /// End LSN of the last source commit received and handed to apply.
    pub received_lsn: IntGauge,
    pub confirmed_flush_lsn: IntGauge,
    pub restarts: IntCounter,
    pub deferred_rows: IntCounterVec,
    /// Deferred entries outstanding (read from the state table by the resolver).
    pub deferred_outstanding: IntGauge,
    /// Age of the oldest outstanding deferred entry, 0 when none.
    pub deferred_oldest_seconds: Gauge,
    pub deferred_resolved: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub backfill_rows: IntCounterVec,
    pub backfill_progress: GaugeVec,
    pub backfill_chunk_seconds: Histogram,
    pub backfill_passes: IntCounter,
    pub verify_rows: IntCounterVec,
    pub verify_mismatches: IntGaugeVec,
    pub verify_last_clean: Gauge,
    /// `remodel_ready`: the same as `ready`, for alerts.
    pub ready_gauge: IntGauge,
    /// Streaming and applying (for /readyz). Set through [`Metrics::set_ready`].
    pub ready: AtomicBool,
    /// Woken each time the pipeline becomes ready (see [`Metrics::until_ready`]).
    ready_changed: tokio::sync::Notify,
    /// Server WAL end last seen, for /status.
    pub server_wal_end: AtomicU64,
    /// Commit time (PostgreSQL µs since 2000-01-01) of the last applied source transaction;
    /// 0 before the first. The monitor ages `remodel_lag_seconds` from it while behind, so a
    /// pause or a stall shows as growing lag rather than the last value frozen.
    pub last_applied_commit_us: std::sync::atomic::AtomicI64,
    /// The slot this daemon streams from, so `remodel status` knows whose `/status` it reads.
    pub slot: std::sync::OnceLock<String>,
}

impl Metrics {
    /// Streaming and applying, or not: `/readyz` and `remodel_ready`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
        self.ready_gauge.set(i64::from(ready));
        if ready {
            self.ready_changed.notify_waiters();
        }
    }

    /// Wait until the stream streams and applies (`/readyz`); false if `shutdown` comes first.
    /// A notification, not a poll: the waiter registers before it looks, so a `set_ready`
    /// between the look and the wait is not missed.
    pub async fn until_ready(&self, shutdown: &CancellationToken) -> bool {
        loop {
            let changed = self.ready_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.ready.load(Ordering::SeqCst) {
                return true;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = changed => {}
            }
        }
    }

    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let m = Metrics {
            applied_lsn: IntGauge::new(
                names::APPLIED_LSN,
                "End LSN of the last source commit applied on the target",
            )
            .expect("valid metric"),
            source_lag_bytes: IntGauge::new(
                names::SOURCE_LAG_BYTES,
                "Source WAL bytes not yet applied on the target",
            )
            .expect("valid metric"),
            lag_seconds: Gauge::new(
                names::LAG_SECONDS,
                "0 when caught up; while behind, an upper bound on the age of the oldest unapplied source commit, growing while nothing is applied",
            )
            .expect("valid metric"),
            changes_applied: IntCounterVec::new(
                Opts::new(
                    names::CHANGES_APPLIED_TOTAL,
                    "Row changes applied, by source table and operation",
                ),
                &["table", "op"],
            )
            .expect("valid metric"),
            transactions_applied: IntCounter::new(
                names::TRANSACTIONS_APPLIED_TOTAL,
                "Source transactions applied",
            )
            .expect("valid metric"),
            apply_batch_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    names::APPLY_BATCH_SECONDS,
                    "Time to write and commit one target transaction",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
            )
            .expect("valid metric"),
            paused: IntGauge::new(names::PAUSED, "1 while paused by signal").expect("valid metric"),
            phase: IntGaugeVec::new(
                Opts::new(
                    names::PHASE,
                    "1 for the migration's recorded phase (forward, cutting_over, switched, falling_back, complete)",
                ),
                &["phase"],
            )
            .expect("valid metric"),
            switch_unavailable_seconds: Gauge::new(
                names::SWITCH_UNAVAILABLE_SECONDS,
                "The last cutover's or fallback's write-unavailable time (fence to hook done)",
            )
            .expect("valid metric"),
            errors: IntCounterVec::new(
                Opts::new(
                    names::ERRORS_TOTAL,
                    "Errors by kind (retryable ones are retried)",
                ),
                &["kind"],
            )
            .expect("valid metric"),
            slot_retained_wal_bytes: IntGauge::new(
                names::SLOT_RETAINED_WAL_BYTES,
                "WAL the source keeps for the slot (current LSN - restart_lsn)",
            )
            .expect("valid metric"),
            received_lsn: IntGauge::new(
                names::RECEIVED_LSN,
                "End LSN of the last source commit received from the source and handed to apply (applied trails it while apply is behind)",
            )
            .expect("valid metric"),
            confirmed_flush_lsn: IntGauge::new(
                names::CONFIRMED_FLUSH_LSN,
                "Flush position confirmed to the source",
            )
            .expect("valid metric"),
            restarts: IntCounter::new(
                names::RESTARTS_TOTAL,
                "Pipeline restarts after retryable errors",
            )
            .expect("valid metric"),
            deferred_rows: IntCounterVec::new(
                Opts::new(
                    names::DEFERRED_ROWS_TOTAL,
                    "Partial updates (unchanged TOAST) of rows the target lacks, kept in the deferred table",
                ),
                &["table"],
            )
            .expect("valid metric"),
            deferred_outstanding: IntGauge::new(
                names::DEFERRED_ROWS,
                "Deferred partial updates outstanding: rows the target still lacks, waiting to be re-read from the source",
            )
            .expect("valid metric"),
            deferred_oldest_seconds: Gauge::new(
                names::DEFERRED_OLDEST_SECONDS,
                "Age of the oldest outstanding deferred partial update (0 when none)",
            )
            .expect("valid metric"),
            deferred_resolved: IntCounterVec::new(
                Opts::new(
                    names::DEFERRED_RESOLVED_TOTAL,
                    "Deferred partial updates settled by a resolution round (re-read from the source), by source table",
                ),
                &["table"],
            )
            .expect("valid metric"),
            dead_letters: IntCounterVec::new(
                Opts::new(
                    names::DEAD_LETTERS_TOTAL,
                    "Rows the mapping could not transform, set aside in the dead-letter table (on_error = dead_letter)",
                ),
                &["table"],
            )
            .expect("valid metric"),
            backfill_rows: IntCounterVec::new(
                Opts::new(names::BACKFILL_ROWS_TOTAL, "Rows copied by backfill, by source table"),
                &["table"],
            )
            .expect("valid metric"),
            backfill_progress: GaugeVec::new(
                Opts::new(
                    names::BACKFILL_PROGRESS_RATIO,
                    "Backfill progress by source table: rows copied / estimated rows (1 when done)",
                ),
                &["table"],
            )
            .expect("valid metric"),
            backfill_chunk_seconds: Histogram::with_opts(
                HistogramOpts::new(names::BACKFILL_CHUNK_SECONDS, "Time to copy, merge and commit one backfill chunk")
                    .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            )
            .expect("valid metric"),
            backfill_passes: IntCounter::new(names::BACKFILL_PASSES_TOTAL, "Backfill snapshot passes started")
                .expect("valid metric"),
            verify_rows: IntCounterVec::new(
                Opts::new(names::VERIFY_ROWS_TOTAL, "Rows compared by continuous verification, by target table"),
                &["table"],
            )
            .expect("valid metric"),
            verify_mismatches: IntGaugeVec::new(
                Opts::new(
                    names::VERIFY_MISMATCHES,
                    "Rows the last continuous verification found different (changed, missing or extra), by target table",
                ),
                &["table"],
            )
            .expect("valid metric"),
            verify_last_clean: Gauge::new(
                names::VERIFY_LAST_CLEAN_TIMESTAMP_SECONDS,
                "Unix time of the last continuous verification that found target = transform(source)",
            )
            .expect("valid metric"),
            registry,
            ready_gauge: IntGauge::new(
                names::READY,
                "1 while streaming and applying (as /readyz), 0 while starting, reconnecting or stopped",
            )
            .expect("valid metric"),
            ready: AtomicBool::new(false),
            ready_changed: tokio::sync::Notify::new(),
            server_wal_end: AtomicU64::new(0),
            last_applied_commit_us: std::sync::atomic::AtomicI64::new(0),
            slot: std::sync::OnceLock::new(),
        };
        let r = &m.registry;
        for c in [
            Box::new(m.applied_lsn.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.source_lag_bytes.clone()),
            Box::new(m.lag_seconds.clone()),
            Box::new(m.changes_applied.clone()),
            Box::new(m.transactions_applied.clone()),
            Box::new(m.apply_batch_seconds.clone()),
            Box::new(m.paused.clone()),
            Box::new(m.phase.clone()),
            Box::new(m.switch_unavailable_seconds.clone()),
            Box::new(m.errors.clone()),
            Box::new(m.slot_retained_wal_bytes.clone()),
            Box::new(m.confirmed_flush_lsn.clone()),
            Box::new(m.restarts.clone()),
            Box::new(m.deferred_rows.clone()),
            Box::new(m.received_lsn.clone()),
            Box::new(m.deferred_outstanding.clone()),
            Box::new(m.deferred_oldest_seconds.clone()),
            Box::new(m.deferred_resolved.clone()),
            Box::new(m.dead_letters.clone()),
            Box::new(m.backfill_rows.clone()),
            Box::new(m.backfill_progress.clone()),
            Box::new(m.backfill_chunk_seconds.clone()),
            Box::new(m.backfill_passes.clone()),
            Box::new(m.verify_rows.clone()),
            Box::new(m.verify_mismatches.clone()),
            Box::new(m.ready_gauge.clone()),
            Box::new(m.verify_last_clean.clone()),
        ] {
            r.register(c).expect("metric names are unique");
        }
        Arc::new(m)
    }

    /// Show `rec` (the phase the daemon follows, and its last switch).
    pub fn set_phase(&self, rec: &crate::state::PhaseRecord) {
        use crate::state::Phase;
        for p in [
            Phase::Forward,
            Phase::CuttingOver,
            Phase::Switched,
            Phase::FallingBack,
            Phase::Complete,
        ] {
            self.phase
                .with_label_values(&[p.as_str()])
                .set(i64::from(p == rec.phase));
        }
        if let Some(ms) = rec
            .timings
            .as_ref()
            .and_then(|t| t.get("unavailable"))
            .and_then(|v| v.as_f64())
        {
            self.switch_unavailable_seconds.set(ms / 1000.0);
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// The daemon's view for `remodel status`.
    pub fn status_json(&self) -> serde_json::Value {
        let applied = crate::Lsn(self.applied_lsn.get() as u64);
        let server = crate::Lsn(self.server_wal_end.load(Ordering::Relaxed));
        serde_json::json!({
            "state": if self.paused.get() == 1 { "paused" } else if self.ready.load(Ordering::Relaxed) { "streaming" } else { "starting" },
            "paused": self.paused.get() == 1,
            "applied_lsn": applied.to_string(),
            "server_wal_end": server.to_string(),
            "lag_bytes": self.source_lag_bytes.get(),
            "lag_seconds": self.lag_seconds.get(),
            "transactions_applied": self.transactions_applied.get(),
            "pid": std::process::id(),
            "slot": self.slot.get(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "metrics endpoint: cannot listen on {addr}: {source}; set metrics.listen to a free address"
)]
pub struct ServeError {
    addr: String,
    #[source]
    source: std::io::Error,
}

/// Bind the endpoint now (so a taken port is a start-up error) and serve until `shutdown`.
pub async fn serve(
    metrics: Arc<Metrics>,
    addr: &str,
    shutdown: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, ServeError> {
    let addr_parsed: SocketAddr = addr.parse().map_err(|_| ServeError {
        addr: addr.into(),
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    let listener = tokio::net::TcpListener::bind(addr_parsed)
        .await
        .map_err(|source| ServeError {
            addr: addr.into(),
            source,
        })?;
    Ok(tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
            };
            let m = metrics.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let m = m.clone();
                    async move { Ok::<_, Infallible>(respond(&m, req)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    }))
}

fn respond(m: &Metrics, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match req.uri().path() {
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", m.render()),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" => {
            if m.ready.load(Ordering::Relaxed) {
                (StatusCode::OK, "text/plain", "ready\n".to_string())
            } else {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready\n".to_string(),
                )
            }
        }
        "/status" => (
            StatusCode::OK,
            "application/json",
            m.status_json().to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_family_is_named_in_names_all() {
        let m = Metrics::new();
        m.changes_applied.with_label_values(&["t", "insert"]).inc();
        m.errors.with_label_values(&["x"]).inc();
        m.deferred_rows.with_label_values(&["t"]).inc();
        m.deferred_resolved.with_label_values(&["t"]).inc();
        m.dead_letters.with_label_values(&["t"]).inc();
        m.backfill_rows.with_label_values(&["t"]).inc();
        m.backfill_progress.with_label_values(&["t"]).set(0.5);
        m.backfill_chunk_seconds.observe(0.1);
        m.apply_batch_seconds.observe(0.1);
        m.verify_rows.with_label_values(&["t"]).inc();
        m.verify_mismatches.with_label_values(&["t"]).set(1);
        m.phase.with_label_values(&["forward"]).set(1);
        let families: Vec<String> = m
            .registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        for f in &families {
            assert!(
                names::ALL.contains(&f.as_str()),
                "{f} missing from names::ALL"
            );
        }
        assert_eq!(families.len(), names::ALL.len());
    }
}
