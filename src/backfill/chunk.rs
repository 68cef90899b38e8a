//! One table's copy, chunk by chunk: throttle, lag and pause; the direct path (COPY straight
//! into the target table when that is exactly what the guarded merge would do); the staged,
//! guarded path; the cursor committed with each chunk.
//!
//! Owns the per-chunk transaction on the target. Must never write a chunk without holding the
//! table's lock, and never write a key whose ledger version is ≥ the pass's P.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::{pass_barrier, sql, test_barrier, BackfillError, Job, Shared};
use crate::change::SourceKey;
use crate::lsn::Lsn;
use crate::read::copy;

/// Wait for throttle, lag and pause; false when the pass must end (deadline, shutdown).
async fn may_copy(
    shared: &Shared,
    source: &Client,
    rows: u64,
    deadline: Instant,
) -> Result<bool, BackfillError> {
    let shutdown = shared.control.shutdown_token();
    loop {
        if Instant::now() >= deadline || shutdown.is_cancelled() {
            return Ok(false);
        }
        if shared.control.is_paused() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let t = shared.control.throttle();
        let lag: Option<i64> = source
            .query_one(
                "SELECT (pg_current_wal_insert_lsn() - confirmed_flush_lsn)::int8 FROM pg_replication_slots WHERE slot_name = $1",
                &[&shared.config.source.slot],
            )
            .await
            .map_err(sql("measuring stream lag"))?
            .get(0);
        if lag.is_some_and(|l| l as u64 > t.backfill_max_lag_bytes) {
            tracing::debug!(
                ?lag,
                max = t.backfill_max_lag_bytes,
                "backfill backs off: the stream is catching up"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        if t.backfill_rows_per_second > 0 {
            let start = {
                let mut next = shared.next_slot.lock().unwrap_or_else(|e| e.into_inner());
                let start = (*next).max(Instant::now());
                if start >= deadline {
                    // Not within this pass's snapshot age: the next pass takes these rows.
                    return Ok(false);
                }
                *next = start
                    + Duration::from_secs_f64(rows as f64 / t.backfill_rows_per_second as f64);
                start
            };
            if start > Instant::now() {
                tokio::time::sleep_until(start.into()).await;
            }
        }
        return Ok(true);
    }
}

/// One chunk's inputs, shared by the direct and the staged path.
#[derive(Clone, Copy)]
struct Chunk<'a> {
    shared: &'a Shared,
    source: &'a Client,
    target: &'a Client,
    job: &'a Job,
    cursor: Option<&'a [Option<String>]>,
    limit: u64,
    /// The pass's P, as text for the SQL parameters.
    version: &'a str,
    barrier: Option<i64>,
}

/// The fast path: when, under the table lock, nothing of the table is newer than P, nothing
/// is deferred and no TRUNCATE at ≥ P exists, the staged merge would insert every row of the
/// chunk; if the chunk also has no key the target already holds, COPY straight into the table
/// does exactly that, writing once. A unique violation (a key the target holds) rolls back to
/// the savepoint and returns None: the caller takes the staged, guarded path.
async fn try_direct(chunk: &Chunk<'_>) -> Result<Option<copy::Piped>, BackfillError> {
    let Chunk {
        shared,
        source,
        target,
        job,
        cursor,
        limit,
        version,
        barrier,
    } = *chunk;
    let Some(copy_in) = &job.direct else {
        return Ok(None);
    };
    let st = &shared.state;
    let check = st.direct_blocked();
    // Without the lock first: newer ledger rows and truncations stay for the pass, so once the
    // stream has written the table the direct path is off without blocking the stream.
    if blocked(target, &check, &job.rel, version).await? || shared.control.is_paused() {
        return Ok(None);
    }
    pass_barrier(target, barrier).await?;
    // The lock is taken inside the savepoint, so rolling back to it releases the lock too.
    target
        .batch_execute("SAVEPOINT direct")
        .await
        .map_err(sql("savepoint"))?;
    let undo = || async {
        target
            .batch_execute("ROLLBACK TO SAVEPOINT direct")
            .await
            .map_err(sql("rolling back a direct chunk"))
    };
    target
        .execute(&job.sql.lock(), &[&job.rel])
        .await
        .map_err(sql("locking the table against the stream"))?;
    if blocked(target, &check, &job.rel, version).await? || shared.control.is_paused() {
        undo().await?;
        return Ok(None);
    }
    match copy::pipe(
        source,
        &job.sql.copy_out(cursor, limit),
        target,
        copy_in,
        job.sql.key_len,
    )
    .await
    {
        Ok(piped) => {
            tracing::debug!(table = %job.rel, rows = piped.rows, "chunk copied straight into the table");
            Ok(Some(piped))
        }
        Err(copy::CopyError::Target(e)) if e.sqlstate() == Some("23505") => {
            tracing::debug!(table = %job.rel, "chunk meets rows the target holds: merging through staging");
            undo().await?;
            Ok(None)
        }
        Err(source) => Err(BackfillError::Copy {
            table: job.rel.clone(),
            source,
        }),
    }
}

async fn blocked(
    target: &Client,
    check: &str,
    rel: &str,
    version: &str,
) -> Result<bool, BackfillError> {
    target
        .query_one(check, &[&rel, &version])
        .await
        .map(|r| r.get::<_, bool>(0))
        .map_err(sql("checking for newer writes"))
}

/// The plain path (a pure column mapping): stage the chunk as read, then merge it at P−1
/// ([`merge_staged`]). None when paused meanwhile.
async fn stage_plain(chunk: &Chunk<'_>) -> Result<Option<copy::Piped>, BackfillError> {
    let Chunk {
        shared,
        source,
        target,
        job,
        cursor,
        limit,
        version,
        barrier,
    } = *chunk;
    let st = &shared.state;
    let piped = copy::pipe(
        source,
        &job.sql.copy_out(cursor, limit),
        target,
        &job.sql.copy_in(),
        job.sql.key_len,
    )
    .await
    .map_err(|source| BackfillError::Copy {
        table: job.rel.clone(),
        source,
    })?;
    let merged = super::merge::merge_staged(
        shared,
        target,
        job,
        version,
        barrier,
        |probe| {
            job.outputs
                .iter()
                .map(|o| job.sql.merge(st, o, probe))
                .collect()
        },
        &job.outputs
            .iter()
            .map(|o| job.sql.merge_deferred(st, o))
            .collect::<Vec<_>>(),
    )
    .await?;
    if !merged {
        // Paused while this chunk was staged: write nothing; it is read again later.
        return Ok(None);
    }
    Ok(Some(piped))
}

pub(super) async fn copy_table(
    shared: &Shared,
    source: &Client,
    target: &Client,
    job: &Job,
    p: Lsn,
    deadline: Instant,
) -> Result<(), BackfillError> {
    let st = &shared.state;
    let row = target
        .query_one(&st.backfill_cursor(), &[&job.rel])
        .await
        .map_err(sql("reading the cursor"))?;
    if row.get::<_, String>(1) == "done" {
        return Ok(());
    }
    let mut cursor: Option<Vec<Option<String>>> = match row.get::<_, Option<String>>(0) {
        None => None,
        Some(c) => Some(serde_json::from_str(&c).map_err(|e| BackfillError::Cursor {
            table: job.rel.clone(),
            cursor: c.clone(),
            reason: e.to_string(),
        })?),
    };
    let stages = match &job.rows {
        Some(rj) => rj.create_stages(),
        None => job.sql.create_stage(),
    };
    target
        .batch_execute(&stages)
        .await
        .map_err(sql("creating the staging table"))?;
    let version = p.to_string();
    let barrier = test_barrier();
    loop {
        let t = shared.control.throttle();
        let limit = match t.backfill_rows_per_second {
            0 => shared.config.backfill.chunk_rows,
            r => shared.config.backfill.chunk_rows.min(r.max(1)),
        };
        if !may_copy(shared, source, limit, deadline).await? {
            return Ok(());
        }
        let truncated: bool = target
            .query_one(&st.any_truncation_since(), &[&job.rel, &version])
            .await
            .map_err(sql("checking table tombstones"))?
            .get(0);
        if truncated {
            // Truncated after the snapshot: nothing of it may land; the stream has the rest.
            target
                .execute(
                    &sql::advance(st),
                    &[
                        &job.rel,
                        &cursor.as_ref().map(|c| SourceKey(c.clone()).encode()),
                        &0i64,
                        &true,
                    ],
                )
                .await
                .map_err(sql("recording the cursor"))?;
            shared.progress.done(&job.rel);
            return Ok(());
        }
        let started = Instant::now();
        // READ COMMITTED explicitly: the merge must see everything committed before it took
        // the table lock, whatever the target's default isolation.
        target
            .batch_execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await
            .map_err(sql("beginning a chunk"))?;
        let chunk = async {
            let inputs = Chunk {
                shared,
                source,
                target,
                job,
                cursor: cursor.as_deref(),
                limit,
                version: &version,
                barrier,
            };
            let written = match &job.rows {
                Some(rj) => {
                    let copy_out = job.sql.copy_out(cursor.as_deref(), limit);
                    super::rows::stage_transformed(
                        shared, source, target, job, rj, &copy_out, &version, barrier,
                    )
                    .await?
                }
                None => match try_direct(&inputs).await? {
                    Some(p) => Some(p),
                    None => stage_plain(&inputs).await?,
                },
            };
            let Some(piped) = written else {
                return Ok(None);
            };
            if shared.control.is_paused() {
                // Paused while the chunk was written: commit nothing; it is read again later.
                return Ok(None);
            }
            crate::failpoint::hit("backfill.mid_chunk");
            let done = piped.rows < limit;
            let next = piped.last_key.clone().or_else(|| cursor.clone());
            target
                .execute(
                    &sql::advance(st),
                    &[
                        &job.rel,
                        &next.as_ref().map(|c| SourceKey(c.clone()).encode()),
                        &(piped.rows as i64),
                        &done,
                    ],
                )
                .await
                .map_err(sql("recording the cursor"))?;
            target
                .batch_execute("COMMIT")
                .await
                .map_err(sql("committing a chunk"))?;
            Ok::<_, BackfillError>(Some((piped, done, next)))
        };
        let limit = shared.config.stall_timeout();
        let chunk = async {
            tokio::time::timeout(limit, chunk)
                .await
                .unwrap_or(Err(BackfillError::Stalled {
                    table: job.rel.clone(),
                    after: limit,
                }))
        };
        // ROLLBACK is bounded too: on a connection that stopped answering it would wait forever.
        let rollback = || tokio::time::timeout(limit, target.batch_execute("ROLLBACK"));
        let (piped, done, next) = match chunk.await {
            Ok(Some(v)) => v,
            Ok(None) => {
                let _ = rollback().await;
                continue;
            }
            Err(e) => {
                let _ = rollback().await;
                return Err(e);
            }
        };
        shared
            .metrics
            .backfill_chunk_seconds
            .observe(started.elapsed().as_secs_f64());
        shared.progress.add(&job.rel, piped.rows, piped.bytes);
        if piped.dead > 0 {
            // Counted once the chunk committed (a retried chunk is not counted twice).
            shared
                .metrics
                .dead_letters
                .with_label_values(&[&job.rel])
                .inc_by(piped.dead);
        }
        cursor = next;
        if done {
            shared.progress.done(&job.rel);
            tracing::info!(table = %job.rel, "backfill of table done");
            return Ok(());
        }
    }
}
