//! Apply: writes transformed changes to the target, batched, versioned and idempotent.
//!
//! ```text
//!  Event ─▶ Transformer ─▶ pending ops ─(batch_rows)─▶ Writer: batch::groups ─▶ sql (ledger-guarded)
//!                                          │
//!  Commit of a source txn ──▶ maybe COMMIT the target txn with the progress row in it
//!                                          └─▶ FlushHandle::applied(end_lsn) → slot confirmed
//! ```
//!
//! Two parts: [`Writer`] (`writer.rs`, with `statements.rs` and `pipelined.rs`) writes ops
//! through the version rule in a transaction its caller opens — the stream, `verify --repair`,
//! `dead-letters --retry` and the resolution of deferred entries use it; [`Applier`] (this file)
//! is the stream loop: events, batching windows, pause, commit with progress, feedback.
//!
//! A target transaction holds whole source transactions only (several small ones may share it),
//! so each source transaction lands all or nothing, in commit order. The progress row commits in
//! the same target transaction as the data. Memory: at most `batch_rows` pending ops; a large
//! source transaction is flushed in pieces into one open target transaction.
//!
//! Owns the target connection's write path. Must never confirm a position before its target
//! commit returned, and never write while paused.

pub mod batch;
mod pipelined;
mod rebuild;
mod recording;
mod register;
pub mod sql;
mod statements;
mod writer;

pub use writer::{Counts, Writer};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_postgres::types::{ToSql, Type};

use crate::change::{Event, Op};
use crate::control::Control;
use crate::lsn::Lsn;
use crate::metrics::Metrics;
use crate::source::replication::pg_ts_to_unix_secs;
use crate::source::stream::FlushHandle;
use crate::transform::{TargetOp, TransformError, Transformer};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Transform(#[from] TransformError),
    #[error("the target rejected {op} of source table {table} key {key} at LSN {lsn} (target table {target}): {message}{}. Nothing after it was applied and nothing before it is lost: fix the mapping, the target schema or the source row, then restart", .detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Rejected {
        op: &'static str,
        table: String,
        key: String,
        lsn: Lsn,
        target: String,
        message: String,
        detail: Option<String>,
        sqlstate: String,
    },
    /// A rejection inside a target transaction shared by several source transactions: retry
    /// with one source transaction per target transaction up to `until`, so everything before
    /// the culprit commits and the error names exactly it.
    #[error("{inner} (retrying with each source transaction up to {until} in its own target transaction, to commit everything before it)")]
    Isolate { until: Lsn, inner: Box<ApplyError> },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    /// A `remodel.pass` message this remodel cannot read: a pass it cannot tell the tables
    /// of must not go unrecorded.
    #[error("source: the pass announcement at LSN {lsn} cannot be read ({reason}); a snapshot reader of another remodel version may be running: stop it, or upgrade this daemon")]
    PassMark { lsn: Lsn, reason: String },
    #[error("target: {what}: {source}")]
    Db {
        what: &'static str,
        #[source]
        source: crate::pgerr::PgError,
    },
    /// The target did not answer within `network.stall_timeout_ms`: a silent network cut or a
    /// hung server. The connection is abandoned (its open transaction never commits).
    #[error("target: {what} got no answer within {} ms (network.stall_timeout_ms); treating the connection as lost: nothing of the open target transaction is kept, and it is retried on a new connection", .after.as_millis())]
    Stalled { what: &'static str, after: Duration },
}

impl ApplyError {
    /// A lost or stalled target is transient; a row the mapping cannot transform or the target
    /// refuses (and the isolation retry that names it) is definite.
    pub fn is_transient(&self) -> bool {
        match self {
            ApplyError::Db { source, .. } => source.is_transient(),
            ApplyError::Stalled { .. } => true,
            ApplyError::State(e) => e.is_transient(),
            ApplyError::PassMark { .. } => false,
            ApplyError::Transform(_) | ApplyError::Rejected { .. } | ApplyError::Isolate { .. } => {
                false
            }
        }
    }
}

/// `fut` within `limit`, else [`ApplyError::Stalled`] naming `what`.
async fn within<T>(
    limit: Duration,
    what: &'static str,
    fut: impl std::future::Future<Output = Result<T, ApplyError>>,
) -> Result<T, ApplyError> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or(Err(ApplyError::Stalled { what, after: limit }))
}

impl ApplyError {
    pub fn db_error(&self) -> Option<&tokio_postgres::Error> {
        match self {
            ApplyError::Db { source, .. } => Some(&source.0),
            _ => None,
        }
    }
}

fn db(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> ApplyError {
    move |source| ApplyError::Db {
        what,
        source: source.into(),
    }
}

/// SQLSTATE classes that mean "this data cannot be written" rather than "try again".
fn is_data_rejection(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|d| {
        let c = d.code().code();
        c.starts_with("22") || c.starts_with("23") || c.starts_with("42") || c.starts_with("P0")
    })
}

#[derive(Debug, Clone)]
pub struct ApplySettings {
    pub slot: String,
    pub batch_rows: usize,
    pub max_delay: Duration,
    /// Commit every source transaction with a commit LSN up to this one on its own.
    pub isolate_until: Option<Lsn>,
    /// One step's target work (a batch, a commit) taking longer is [`ApplyError::Stalled`].
    pub stall_timeout: Duration,
    /// Child tables whose changes rebuild a list column (the reverse stream), by name.
    pub rebuilds: HashMap<String, Arc<crate::transform::rebuild::RebuildPlan>>,
    /// Tables whose rows register a key-map pair on the target (the reverse stream), by name.
    pub registrations: HashMap<String, Vec<crate::transform::inverse::Registration>>,
}

#[derive(Hash, PartialEq, Eq)]
enum StmtKey {
    Upsert(usize),
    /// Without recording versions (no pass needs them: `recording`).
    PlainUpsert(usize),
    PlainDelete(usize),
    Update(usize, Vec<usize>, bool),
    Delete(usize),
    Clear(usize),
    Children(usize),
    DeadLetters,
    Progress,
    Lock,
}

impl StmtKey {
    fn is_plain(&self) -> bool {
        matches!(self, StmtKey::PlainUpsert(_) | StmtKey::PlainDelete(_))
    }
}

struct OpenTxn {
    started: Instant,
    rows: usize,
    last_commit: Option<(Lsn, i64)>,
    source_txns: u64,
    /// Source transactions begun in this target transaction, and the last one's commit LSN.
    begun: u64,
    max_commit_lsn: Lsn,
    counts: HashMap<(Arc<str>, Op), u64>,
}

impl OpenTxn {
    fn new(max_commit_lsn: Lsn, begun: u64) -> Self {
        OpenTxn {
            started: Instant::now(),
            rows: 0,
            last_commit: None,
            source_txns: 0,
            begun,
            max_commit_lsn,
            counts: HashMap::new(),
        }
    }
}

/// The stream loop: events in, whole source transactions out through its [`Writer`], progress
/// committed with them, feedback after. The source of events (`run`'s channel) and the target
/// (the writer) are parameters: a second stream (the reverse one of a fallback) is a second
/// `Applier` over another channel and writer.
pub struct Applier {
    writer: Writer,
    settings: ApplySettings,
    transformer: Transformer,
    flush: FlushHandle,
    metrics: Arc<Metrics>,
    control: Control,
    pending: Vec<TargetOp>,
    /// Child-row changes of the open source transaction, to write back as list text at its
    /// end (the reverse stream's inverse of a split).
    rebuilds: Vec<(
        Arc<crate::transform::rebuild::RebuildPlan>,
        crate::change::Change,
    )>,
    txn: Option<OpenTxn>,
    /// Commit LSN of the source transaction being received, between Begin and Commit.
    source_txn: Option<Lsn>,
    skipping: bool,
    applied: Lsn,
    test_barrier: Option<i64>,
}

impl Applier {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        writer: Writer,
        settings: ApplySettings,
        transformer: Transformer,
        flush: FlushHandle,
        metrics: Arc<Metrics>,
        control: Control,
        applied: Lsn,
    ) -> Self {
        Applier {
            writer,
            settings,
            transformer,
            flush,
            metrics,
            control,
            pending: Vec::new(),
            rebuilds: Vec::new(),
            txn: None,
            source_txn: None,
            skipping: false,
            applied,
            test_barrier: std::env::var("REMODEL_TEST_APPLY_BARRIER")
                .ok()
                .and_then(|v| v.parse().ok()),
        }
    }

    /// Apply events until the channel closes or shutdown; commits complete work before returning.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Event>) -> Result<(), ApplyError> {
        let shutdown = self.control.shutdown_token();
        let mut paused_rx = self.control.watch_paused();
        loop {
            // Taken before any step that may fail and roll the target transaction back.
            let shared = self.shared_txn();
            let step = self.step(&mut rx, &mut paused_rx, &shutdown).await;
            match step {
                Ok(true) => continue,
                Ok(false) => return Ok(()),
                Err(e) => {
                    self.abort().await;
                    return Err(match (e, shared) {
                        (
                            e @ (ApplyError::Rejected { .. } | ApplyError::Transform(_)),
                            Some(until),
                        ) => ApplyError::Isolate {
                            until,
                            inner: Box::new(e),
                        },
                        (e, _) => e,
                    });
                }
            }
        }
    }

    /// When the open target transaction holds more than one source transaction: the last one's
    /// commit LSN (see [`ApplyError::Isolate`]).
    fn shared_txn(&self) -> Option<Lsn> {
        self.txn
            .as_ref()
            .filter(|t| t.begun > 1)
            .map(|t| t.max_commit_lsn)
    }

    /// One step of the loop; `Ok(false)` when done.
    async fn step(
        &mut self,
        rx: &mut mpsc::Receiver<Event>,
        paused_rx: &mut tokio::sync::watch::Receiver<bool>,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<bool, ApplyError> {
        let limit = self.settings.stall_timeout;
        if self.source_txn.is_none() && self.control.is_paused() {
            within(limit, "committing before a pause", self.commit()).await?;
            self.metrics.paused.set(1);
            tracing::info!(applied = %self.applied, "paused: nothing is written to the target until resumed");
            while self.control.is_paused() {
                tokio::select! {
                    _ = paused_rx.changed() => {}
                    _ = shutdown.cancelled() => {
                        self.metrics.paused.set(0);
                        return Ok(false);
                    }
                }
            }
            self.metrics.paused.set(0);
            tracing::info!("resumed");
        }
        let deadline = match (&self.txn, self.source_txn) {
            (Some(t), None) => Some(t.started + self.settings.max_delay),
            _ => None,
        };
        let ev = tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                within(limit, "committing at shutdown", self.stop()).await?;
                return Ok(false);
            }
            _ = paused_rx.changed(), if self.source_txn.is_none() => return Ok(true),
            _ = sleep_until(deadline), if deadline.is_some() => {
                within(limit, "committing a batch", self.commit()).await?;
                return Ok(true);
            }
            // Idle between transactions: passes that ended are recorded no more.
            _ = tokio::time::sleep(recording::PRUNE_EVERY), if self.txn.is_none() && self.source_txn.is_none() && self.writer.records_for_passes() => {
                within(limit, "ending finished passes", self.writer.end_finished_passes()).await?;
                return Ok(true);
            }
            ev = rx.recv() => ev,
        };
        let Some(ev) = ev else {
            within(limit, "committing at the end of the stream", self.stop()).await?;
            return Ok(false);
        };
        let idle = rx.is_empty();
        within(limit, "applying a batch", self.handle(ev, idle)).await?;
        Ok(true)
    }

    async fn handle(&mut self, ev: Event, idle: bool) -> Result<(), ApplyError> {
        match ev {
            Event::Begin { commit_lsn, .. } => {
                if commit_lsn < self.applied {
                    // Already applied before a restart: the progress row says so.
                    self.skipping = true;
                    return Ok(());
                }
                self.skipping = false;
                self.source_txn = Some(commit_lsn);
                if self.txn.is_none() {
                    if let Some(k) = self.test_barrier {
                        // Test hook (tests/it/backfill_races.rs): hold new target transactions.
                        self.writer
                            .client()
                            .batch_execute(&format!("SELECT pg_advisory_lock_shared({k}); SELECT pg_advisory_unlock_shared({k})"))
                            .await
                            .map_err(db("test barrier"))?;
                    }
                    self.writer.begin().await?;
                    self.txn = Some(OpenTxn::new(commit_lsn, 0));
                }
                if let Some(t) = self.txn.as_mut() {
                    t.begun += 1;
                    t.max_commit_lsn = t.max_commit_lsn.max(commit_lsn);
                }
            }
            Event::Change(c) => {
                if self.skipping || self.transformer.ignores(&c.rel) {
                    return Ok(());
                }
                if let Some(t) = self.txn.as_mut() {
                    *t.counts
                        .entry((Arc::from(c.rel.qualified().as_str()), c.op))
                        .or_default() += 1;
                }
                if let Some(regs) = self.settings.registrations.get(&c.rel.qualified()) {
                    register::keys(&self.writer, regs, &c).await?;
                }
                if let Some(plan) = self.settings.rebuilds.get(&c.rel.qualified()).cloned() {
                    // Written back at the source transaction's end (or every batch_rows).
                    self.rebuilds.push((plan, c));
                    if self.rebuilds.len() >= self.settings.batch_rows {
                        self.flush_rebuilds().await?;
                    }
                    return Ok(());
                }
                self.transformer.transform(&c, &mut self.pending)?;
                if self.pending.len() >= self.settings.batch_rows {
                    self.flush_pending().await?;
                }
            }
            Event::Message {
                prefix,
                content,
                commit_lsn,
            } => {
                if self.skipping || prefix != crate::state::PASS_PREFIX {
                    return Ok(());
                }
                let mark = crate::state::PassMark::decode(&content).map_err(|reason| {
                    ApplyError::PassMark {
                        lsn: commit_lsn,
                        reason,
                    }
                })?;
                if mark.slot == self.settings.slot {
                    // What came before the mark is written as it was decided.
                    self.flush_pending().await?;
                    self.writer.start_pass(&mark, commit_lsn).await?;
                    crate::failpoint::hit("apply.after_pass_mark");
                }
            }
            Event::Commit {
                commit_lsn,
                end_lsn,
                commit_ts,
            } => {
                if self.skipping {
                    self.skipping = false;
                    return Ok(());
                }
                self.flush_rebuilds().await?;
                self.source_txn = None;
                let pending = self.pending.len();
                let due = match self.txn.as_mut() {
                    Some(t) => {
                        t.last_commit = Some((end_lsn, commit_ts));
                        t.source_txns += 1;
                        t.rows + pending >= self.settings.batch_rows
                            || idle
                            || self.settings.isolate_until.is_some_and(|u| commit_lsn <= u)
                            || t.started.elapsed() >= self.settings.max_delay
                    }
                    None => false,
                };
                if due {
                    self.commit().await?;
                }
            }
        }
        Ok(())
    }

    /// Graceful stop: commit when between source transactions; inside one, roll the open target
    /// transaction back (with any complete source transactions sharing it: none is confirmed,
    /// so all are re-streamed on restart).
    async fn stop(&mut self) -> Result<(), ApplyError> {
        if self.source_txn.is_some() {
            tracing::info!("stopping inside a source transaction: rolling back its partial target transaction (it is re-streamed on restart)");
            self.abort().await;
            return Ok(());
        }
        self.commit().await
    }

    async fn abort(&mut self) {
        self.pending.clear();
        self.source_txn = None;
        self.txn = None;
        self.writer.abort().await;
    }

    async fn commit(&mut self) -> Result<(), ApplyError> {
        if self.txn.is_none() {
            return Ok(());
        }
        self.flush_pending().await?;
        let Some(t) = self.txn.take() else {
            return Ok(());
        };
        // The loop's transaction is the writer's: a commit without one would confirm what was
        // never committed.
        debug_assert!(
            self.writer.in_transaction(),
            "the stream loop holds a target transaction the writer does not"
        );
        let counts = match t.last_commit {
            Some((end, ts)) => {
                let text = sql::progress(&self.writer.state);
                let stmt = self
                    .writer
                    .prepared(
                        StmtKey::Progress,
                        &text,
                        &[Type::TEXT, Type::TEXT, Type::FLOAT8, Type::TEXT],
                        "preparing the progress update",
                    )
                    .await?;
                let (end_text, secs) = (end.to_string(), pg_ts_to_unix_secs(ts));
                let plain = self.writer.take_plain_writes();
                let params: [&(dyn ToSql + Sync); 4] =
                    [&self.settings.slot, &end_text, &secs, &plain];
                // Pipelined: the progress row and COMMIT go out together (one round trip).
                // If the progress row fails, the server turns that COMMIT into a rollback,
                // so the progress error alone decides: nothing is confirmed.
                self.writer.commit_with(Some((&stmt, &params))).await?
            }
            None => self.writer.commit().await?,
        };
        crate::failpoint::hit("apply.after_commit");
        self.metrics
            .apply_batch_seconds
            .observe(t.started.elapsed().as_secs_f64());
        if let Some((end, ts)) = t.last_commit {
            self.flush.applied(end);
            self.applied = end;
            self.metrics.applied_lsn.set(end.0 as i64);
            let now = crate::source::replication::pg_now();
            self.metrics
                .last_applied_commit_us
                .store(ts, std::sync::atomic::Ordering::Relaxed);
            self.metrics
                .lag_seconds
                .set(((now - ts) as f64 / 1e6).max(0.0));
        }
        self.metrics.transactions_applied.inc_by(t.source_txns);
        for (table, n) in counts.dead_letters {
            self.metrics
                .dead_letters
                .with_label_values(&[&table])
                .inc_by(n);
        }
        for (table, n) in counts.deferred {
            self.metrics
                .deferred_rows
                .with_label_values(&[&table])
                .inc_by(n);
        }
        for ((table, op), n) in t.counts {
            self.metrics
                .changes_applied
                .with_label_values(&[&table, op.as_str()])
                .inc_by(n);
        }
        // Between target transactions: passes that ended are recorded no more.
        self.writer.end_finished_passes().await?;
        Ok(())
    }

    /// Write the pending ops into the open target transaction.
    /// Write the buffered child-row changes back as list text (after the rows before them);
    /// what cannot be written goes to the dead letters.
    async fn flush_rebuilds(&mut self) -> Result<(), ApplyError> {
        if self.rebuilds.is_empty() {
            return Ok(());
        }
        self.flush_pending().await?;
        let buffered = std::mem::take(&mut self.rebuilds);
        let dead = rebuild::apply(&self.writer, buffered).await?;
        if !dead.is_empty() {
            tracing::warn!(rows = dead.len(), "child rows that cannot be written back as list text are kept in OLD's dead letters");
            self.pending.extend(dead);
            self.flush_pending().await?;
        }
        Ok(())
    }

    async fn flush_pending(&mut self) -> Result<(), ApplyError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let ops = std::mem::take(&mut self.pending);
        let n = ops.len();
        self.writer.write(ops).await?;
        if let Some(t) = self.txn.as_mut() {
            t.rows += n;
        }
        Ok(())
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
