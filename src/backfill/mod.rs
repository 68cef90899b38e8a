//! Backfill: copies the rows that existed before the stream's slot, while the stream applies,
//! never overwriting a newer streamed row and never resurrecting a deleted one.
//!
//! ```text
//!  pass:  CREATE_REPLICATION_SLOT .. TEMPORARY .. EXPORT_SNAPSHOT ──▶ P, snapshot
//!           │ workers (backfill.workers): BEGIN REPEATABLE READ; SET TRANSACTION SNAPSHOT
//!           │ emit a logical message; wait until the main slot is confirmed past it
//!           │   (the stream has applied every commit < P: from now on it only writes C ≥ P)
//!           ▼
//!  chunk: COPY (key > cursor ORDER BY key LIMIT n) TO STDOUT ══pipe══▶ COPY stage FROM STDIN
//!         lock table (exclusive; the stream takes it shared) → guarded merge at version P−1:
//!         skip keys whose ledger version ≥ P (newer stream write or tombstone) → fold in deferred
//!         partial updates → cursor + counts → COMMIT (resumable after kill -9)
//!  a pass ends after backfill.max_snapshot_age; the next continues from the cursor, new snapshot
//! ```
//!
//! Exactness needs no per-key ledger rows for copied rows: once the stream is past P, every
//! later stream write carries a version ≥ P > P−1 and wins; earlier ones are in the snapshot.
//! Owns the copy of existing rows and the backfill state tables. Must never write a row whose
//! ledger version is ≥ its pass's P, and never hold one snapshot past the configured age.

mod chunk;
mod merge;
pub mod progress;
pub(crate) mod rows;
pub mod sql;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tokio_postgres::Client;

use crate::config::Config;
use crate::control::Control;
use crate::lsn::Lsn;
use crate::metrics::Metrics;
use crate::pgerr::PgError;
use crate::source::conninfo::{ConnInfo, ConnectError};
use crate::source::replication::ReplicationError;
use crate::source::snapshot;
use crate::state::{StateError, StateSchema};
use crate::transform::catalog;
use crate::transform::plan::{OutputPlan, Plan};
use progress::Progress;
use sql::TableSql;

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("backfill: {what}: {source}")]
    Sql {
        what: &'static str,
        #[source]
        source: PgError,
    },
    #[error("backfill of {table}: {source}")]
    Copy {
        table: String,
        #[source]
        source: crate::read::CopyError,
    },
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("backfill: the stream's slot {slot:?} does not exist on the source. If remodel run never ran, start it first (backfill copies what the stream cannot, and writes a pass only once the stream has applied everything before it). If it ran before, the slot was dropped and the changes since are lost to remodel: see docs/troubleshooting.md#slot-lost (remodel run prints the exact recovery)")]
    NoSlot { slot: String },
    #[error("backfill: source table {table} column {column}: its type is unknown; backfill reads tables the mapping compiled against")]
    Table { table: String, column: String },
    #[error("backfill of {table}: the stored cursor {cursor:?} is unreadable ({reason}); reset it with UPDATE <state_schema>.backfill_tables SET cursor = NULL, state = 'pending' WHERE rel = '{table}' (re-copying is safe)")]
    Cursor {
        table: String,
        cursor: String,
        reason: String,
    },
    #[error("backfill of {table} (snapshot rows): {source}")]
    Transform {
        table: String,
        #[source]
        source: crate::transform::TransformError,
    },
    #[error("backfill: unexpected reply to CREATE_REPLICATION_SLOT: {0}")]
    SlotReply(String),
    #[error("backfill: {0}")]
    Snapshot(#[from] snapshot::SnapshotError),
    /// A chunk took longer than `network.stall_timeout_ms`: a silent network cut or a hung
    /// server on either side. Nothing of it committed; it is copied again.
    #[error("backfill of {table}: a chunk got no answer within {} ms (network.stall_timeout_ms); treating the connections as lost: nothing of the chunk committed, and it is copied again on new connections", .after.as_millis())]
    Stalled {
        table: String,
        after: std::time::Duration,
    },
}

impl From<crate::read::ReadError> for BackfillError {
    fn from(e: crate::read::ReadError) -> Self {
        match e {
            crate::read::ReadError::Copy { table, source } => BackfillError::Copy { table, source },
            crate::read::ReadError::Transform { table, source } => {
                BackfillError::Transform { table, source }
            }
        }
    }
}

impl BackfillError {
    /// Whether the backfill's retry loop should try again from the last committed chunk.
    pub fn is_transient(&self) -> bool {
        match self {
            BackfillError::Sql { source, .. } => source.is_transient(),
            BackfillError::Stalled { .. } => true,
            BackfillError::Copy { source, .. } => source.is_transient(),
            BackfillError::Replication(e) => e.is_transient(),
            BackfillError::Snapshot(e) => e.is_transient(),
            BackfillError::Connect(e) => e.is_transient(),
            BackfillError::State(e) => e.is_transient(),
            BackfillError::NoSlot { .. }
            | BackfillError::Table { .. }
            | BackfillError::Cursor { .. }
            | BackfillError::Transform { .. }
            | BackfillError::SlotReply(_) => false,
        }
    }
}

pub(crate) fn sql(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> BackfillError {
    move |source| BackfillError::Sql {
        what,
        source: source.into(),
    }
}

/// Test hook (see tests/it/backfill_races.rs): a worker waits on this advisory lock before it
/// writes a chunk — on the staged path after staging and before the table lock and merge; on
/// the direct path before the table lock and the read. Either way the chunk comes from the pass
/// snapshot, so writes the test makes meanwhile are newer than it.
pub(crate) fn test_barrier() -> Option<i64> {
    std::env::var("REMODEL_TEST_BACKFILL_BARRIER")
        .ok()?
        .parse()
        .ok()
}

/// Test hook: wait while a test holds the barrier lock (see [`test_barrier`]).
pub(crate) async fn pass_barrier(
    target: &Client,
    barrier: Option<i64>,
) -> Result<(), BackfillError> {
    if let Some(k) = barrier {
        target
            .batch_execute(&format!(
                "SELECT pg_advisory_lock_shared({k}); SELECT pg_advisory_unlock_shared({k})"
            ))
            .await
            .map_err(sql("test barrier"))?;
    }
    Ok(())
}

/// One table to copy: its SQL and outputs.
pub(crate) struct Job {
    pub(crate) rel: String,
    pub(crate) sql: TableSql,
    pub(crate) outputs: Vec<Arc<OutputPlan>>,
    /// Set when chunks may go straight into the target table (see `chunk::try_direct`).
    pub(crate) direct: Option<String>,
    /// Set when rows go through the transform (see `rows`).
    pub(crate) rows: Option<rows::RowsJob>,
}

/// Shared by the workers of a run.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) control: Control,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) state: StateSchema,
    jobs: HashMap<String, Arc<Job>>,
    pub(crate) progress: Progress,
    /// Token bucket for backfill.max_rows_per_second: when the next rows may start.
    pub(crate) next_slot: std::sync::Mutex<Instant>,
}

/// Run backfill until every mapped table is copied (Ok), or shutdown (Ok, resumable).
pub async fn run(
    config: &Config,
    control: &Control,
    metrics: &Arc<Metrics>,
    plan: &Arc<Plan>,
) -> Result<(), BackfillError> {
    let src_info = config.source_conn().map_err(ConnectError::from)?;
    let tgt_info = config.target_conn().map_err(ConnectError::from)?;
    let source = src_info.connect().await?;
    let mut target = tgt_info.connect().await?;
    let state = StateSchema::new(&config.target.state_schema);
    state.migrate(&mut target).await?;
    let slot_exists = source
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&config.source.slot],
        )
        .await
        .map_err(sql("looking up the stream's slot"))?
        .is_some();
    if !slot_exists {
        return Err(BackfillError::NoSlot {
            slot: config.source.slot.clone(),
        });
    }
    let tables = catalog::load(&source)
        .await
        .map_err(sql("reading the source schema"))?;
    let mut jobs = HashMap::new();
    for (i, (rel, tp)) in plan.tables.iter().enumerate() {
        let info = tables.get(rel);
        let types = |c: &str| info.and_then(|t| t.column(c)).map(|c| c.sql_type.clone());
        let all: Vec<String> = info
            .map(|t| t.columns.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        let ts = TableSql::new(tp, &types, i, (!tp.sql_only()).then_some(&all[..])).ok_or_else(
            || BackfillError::Table {
                table: rel.clone(),
                column: tp.source_key.join(", "),
            },
        )?;
        let estimate: i64 = source
            .query_one(
                "SELECT GREATEST(c.reltuples, 0)::int8 FROM pg_class c WHERE c.oid = $1::text::regclass",
                &[&ts.source_quoted],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        target
            .execute(&state.register_backfill_table(), &[rel, &estimate])
            .await
            .map_err(sql("registering tables"))?;
        let rows = if tp.sql_only() {
            None
        } else {
            rows::RowsJob::new(tp.clone(), plan.clone(), &ts.columns, ts.key_len, i)
        };
        let direct = match (&rows, shared_target(plan, tp)) {
            (None, false) => ts.direct_copy_in(&tp.outputs),
            _ => None,
        };
        jobs.insert(
            rel.clone(),
            Arc::new(Job {
                rel: rel.clone(),
                sql: ts,
                outputs: tp.outputs.clone(),
                direct,
                rows,
            }),
        );
    }
    let progress = Progress::load(&target, &state, metrics.clone()).await?;
    let shared = Arc::new(Shared {
        config: config.clone(),
        control: control.clone(),
        metrics: metrics.clone(),
        state,
        jobs,
        progress,
        next_slot: std::sync::Mutex::new(Instant::now()),
    });
    let reporter = tokio::spawn(progress::report(
        shared.progress.clone(),
        control.shutdown_token(),
    ));
    let result = passes(&shared, &source, &target, &src_info, &tgt_info).await;
    reporter.abort();
    result
}

/// Whether a table's target is also fed by another source table (N→1): a chunk may then meet
/// rows the other table wrote, so it cannot COPY straight in.
fn shared_target(plan: &Plan, tp: &crate::transform::plan::TablePlan) -> bool {
    tp.outputs.iter().any(|o| {
        plan.outputs
            .iter()
            .any(|x| x.source != o.source && x.target() == o.target())
    })
}

async fn pending(shared: &Shared, target: &Client) -> Result<Vec<String>, BackfillError> {
    let rows = target
        .query(&shared.state.pending_backfill_tables(), &[])
        .await
        .map_err(sql("reading backfill state"))?;
    Ok(rows
        .iter()
        .map(|r| r.get::<_, String>(0))
        .filter(|r| shared.jobs.contains_key(r))
        .collect())
}

async fn passes(
    shared: &Arc<Shared>,
    source: &Client,
    target: &Client,
    src_info: &ConnInfo,
    tgt_info: &ConnInfo,
) -> Result<(), BackfillError> {
    let owner = format!("{}:{}", std::process::id(), rand::random::<u32>());
    let shutdown = shared.control.shutdown_token();
    loop {
        let todo = pending(shared, target).await?;
        if todo.is_empty() {
            tracing::info!("backfill complete: every mapped table is copied");
            shared.progress.finish();
            return Ok(());
        }
        if !wait_unpaused(shared).await {
            return Ok(());
        }
        if !any_claimable(target, &todo).await? {
            // Another process is copying everything left: no snapshot, no slot, just wait.
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        if !pass(shared, source, target, src_info, tgt_info, &owner, todo).await? {
            // Another process is copying what is left: let it, and look again later.
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// Wait while paused; false on shutdown.
async fn wait_unpaused(shared: &Shared) -> bool {
    let shutdown = shared.control.shutdown_token();
    let mut rx = shared.control.watch_paused();
    while shared.control.is_paused() {
        tokio::select! {
            _ = rx.changed() => {}
            _ = shutdown.cancelled() => return false,
        }
    }
    !shutdown.is_cancelled()
}

/// One snapshot pass over the tables in `todo`.
async fn pass(
    shared: &Arc<Shared>,
    source: &Client,
    target: &Client,
    src_info: &ConnInfo,
    tgt_info: &ConnInfo,
    owner: &str,
    todo: Vec<String>,
) -> Result<bool, BackfillError> {
    let started = Instant::now();
    let deadline = started + shared.config.max_snapshot_age();
    let owner = format!("{owner}:{}", rand::random::<u32>());
    let pass_id = shared
        .state
        .register_pass(
            source,
            target,
            &owner,
            &shared.config.source.slot,
            Some(todo.clone()),
        )
        .await?;
    let exported = snapshot::export(src_info, "remodel_bf").await?;
    let (p, snapshot) = (exported.p, exported.snapshot.clone());
    let workers = shared.config.backfill.workers.min(todo.len()).max(1);
    let mut conns = Vec::with_capacity(workers);
    for _ in 0..workers {
        let s = src_info.connect().await?;
        s.batch_execute(&snapshot::import_sql(&snapshot, "remodel-backfill"))
            .await
            .map_err(sql("importing the pass snapshot"))?;
        let t = tgt_info.connect().await?;
        // The stream records for this pass while any connection it writes through lives.
        shared.state.hold_pass(&t, &owner).await?;
        conns.push((s, t));
    }
    crate::failpoint::hit("backfill.pass_switch");
    // Every worker holds the snapshot now; the exporting connection (and its slot) can go.
    drop(exported);
    target
        .execute(
            &shared.state.set_pass_version(),
            &[&pass_id, &p.to_string()],
        )
        .await
        .map_err(sql("recording the pass"))?;
    shared.metrics.backfill_passes.inc();
    tracing::info!(%p, tables = todo.len(), workers, "backfill pass started");

    let streamed = wait_for_stream(shared, source, p, deadline).await?;

    // If the stream did not get past P within the pass's age, copy nothing in this pass.
    let todo = if streamed { todo } else { Vec::new() };
    let queue = Arc::new(Mutex::new(todo.into_iter().collect::<VecDeque<_>>()));
    let claimed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (s, t) in conns {
        let (shared, queue, claimed) = (shared.clone(), queue.clone(), claimed.clone());
        tasks.push(tokio::spawn(async move {
            worker(&shared, &s, &t, &queue, &claimed, p, deadline).await
        }));
    }
    let mut first_err = None;
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(BackfillError::SlotReply(format!("worker task: {e}")));
            }
        }
    }
    target
        .execute(&shared.state.finish_pass(), &[&pass_id])
        .await
        .map_err(sql("closing the pass"))?;
    target
        .execute(
            "SELECT pg_advisory_unlock_shared(hashtextextended('remodel-pass:' || $1, 0))",
            &[&owner],
        )
        .await
        .map_err(sql("closing the pass"))?;
    if let Some(e) = first_err {
        return Err(e);
    }
    prune_tombstones(shared, target).await?;
    tracing::info!(%p, seconds = started.elapsed().as_secs_f64(), "backfill pass ended");
    Ok(claimed.load(std::sync::atomic::Ordering::Relaxed))
}

/// Whether the stream applied every commit before `p` within the pass's age.
async fn wait_for_stream(
    shared: &Shared,
    source: &Client,
    p: Lsn,
    deadline: Instant,
) -> Result<bool, BackfillError> {
    let shutdown = shared.control.shutdown_token();
    snapshot::wait_for_stream(
        source,
        &shared.config.source.slot,
        p,
        deadline,
        &shutdown,
        "backfill",
    )
    .await
    .map_err(|e| match e {
        snapshot::SnapshotError::NoSlot { slot } => BackfillError::NoSlot { slot },
        e => BackfillError::Snapshot(e),
    })
}

async fn prune_tombstones(shared: &Shared, target: &Client) -> Result<(), BackfillError> {
    let n = target
        .execute(&shared.state.prune_tombstones(), &[])
        .await
        .map_err(sql("pruning tombstones"))?;
    if n > 0 {
        tracing::debug!(pruned = n, "pruned tombstones no pass can need");
    }
    Ok(())
}

async fn worker(
    shared: &Shared,
    source: &Client,
    target: &Client,
    queue: &Mutex<VecDeque<String>>,
    claimed: &std::sync::atomic::AtomicBool,
    p: Lsn,
    deadline: Instant,
) -> Result<(), BackfillError> {
    loop {
        if Instant::now() >= deadline || shared.control.shutdown_token().is_cancelled() {
            return Ok(());
        }
        let Some(rel) = claim(queue, target).await? else {
            return Ok(());
        };
        claimed.store(true, std::sync::atomic::Ordering::Relaxed);
        let job = shared.jobs.get(&rel).cloned();
        let result = match job {
            Some(job) => chunk::copy_table(shared, source, target, &job, p, deadline).await,
            None => Ok(()),
        };
        if let Err(e @ BackfillError::Stalled { .. }) = result {
            // The connection stopped answering: send nothing more on it (the unlock would
            // queue behind the hung statement); ending the session releases the lock.
            return Err(e);
        }
        let _ = target
            .execute(
                "SELECT pg_advisory_unlock(hashtextextended('remodel-backfill:' || $1, 0))",
                &[&rel],
            )
            .await;
        result?;
    }
}

/// Whether some table in `todo` is not being copied by another session right now.
async fn any_claimable(target: &Client, todo: &[String]) -> Result<bool, BackfillError> {
    for rel in todo {
        let got: bool = target
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended('remodel-backfill:' || $1, 0))",
                &[rel],
            )
            .await
            .map_err(sql("claiming a table"))?
            .get(0);
        if got {
            target
                .execute(
                    "SELECT pg_advisory_unlock(hashtextextended('remodel-backfill:' || $1, 0))",
                    &[rel],
                )
                .await
                .map_err(sql("claiming a table"))?;
            return Ok(true);
        }
    }
    Ok(false)
}

/// Take the next table no other worker (of any process) is copying; None when none is left.
async fn claim(
    queue: &Mutex<VecDeque<String>>,
    target: &Client,
) -> Result<Option<String>, BackfillError> {
    let candidates: Vec<String> = queue.lock().await.iter().cloned().collect();
    for rel in candidates {
        let got: bool = target
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended('remodel-backfill:' || $1, 0))",
                &[&rel],
            )
            .await
            .map_err(sql("claiming a table"))?
            .get(0);
        if got {
            let mut q = queue.lock().await;
            if q.contains(&rel) {
                q.retain(|r| *r != rel);
                return Ok(Some(rel));
            }
            // Another worker of ours took it meanwhile (the lock is per session).
            drop(q);
            let _ = target
                .execute(
                    "SELECT pg_advisory_unlock(hashtextextended('remodel-backfill:' || $1, 0))",
                    &[&rel],
                )
                .await;
        }
    }
    // Whatever is left is being copied by another process (or none is left).
    Ok(None)
}
