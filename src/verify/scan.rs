//! The walks over one table: a full pass in key order (hashed chunks where possible), a
//! sample from random start keys, the rows the stream wrote since an LSN, the pass over target
//! keys that finds rows the source lacks, and the re-check rounds.
//!
//! Memory: one chunk at a time, plus the bounded re-check and repair key sets of the table.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::compare::{self, Source};
use super::sql::{self, Range};
use super::{q, Ctx, Snap, Table, VerifyError};
use crate::lsn::Lsn;

/// Logs progress on long passes, at most every few seconds.
struct Progress {
    table: String,
    started: Instant,
    told: Instant,
    rows: u64,
}

impl Progress {
    fn new(table: &str) -> Progress {
        Progress {
            table: table.to_string(),
            started: Instant::now(),
            told: Instant::now(),
            rows: 0,
        }
    }
    fn add(&mut self, rows: u64) {
        self.rows += rows;
        if self.told.elapsed() >= Duration::from_secs(5) {
            let s = self.started.elapsed().as_secs_f64();
            tracing::info!(table = %self.table, rows = self.rows, rows_per_s = (self.rows as f64 / s) as u64, "verifying");
            self.told = Instant::now();
        }
    }
}

async fn fresh(ctx: &Ctx, snap: &mut Snap) -> Result<(), VerifyError> {
    ctx.check()?;
    if snap.taken.elapsed() >= ctx.settings.max_age {
        *snap = ctx.snapshot().await?;
    }
    Ok(())
}

/// Every row of the table, in key-ordered chunks; then the target keys (when not hashed).
pub(crate) async fn full(ctx: &Ctx, t: &mut Table, snap: &mut Snap) -> Result<(), VerifyError> {
    let n = ctx.settings.chunk_rows;
    let mut cursor: Option<Vec<Option<String>>> = None;
    let mut progress = Progress::new(&t.rel);
    loop {
        fresh(ctx, snap).await?;
        let range = Range {
            lower: cursor.as_deref(),
            inclusive: false,
            upper: None,
        };
        let (rows, last) = match &t.hash {
            Some(h) => {
                let o = t.outs[0].o.clone();
                let (src_sql, tgt_sql) = (
                    sql::hash_source(&t.ts, h, &range, n),
                    sql::hash_target(&t.ts, &o, h, &range, n),
                );
                let (src, tgt) = tokio::join!(
                    snap.reader.query_one(&src_sql, &[]),
                    ctx.target.query_one(&tgt_sql, &[])
                );
                let src = src.map_err(q("hashing a source chunk"))?;
                let tgt = tgt.map_err(q("hashing a target chunk"))?;
                let count = src.get::<_, i64>(0) as u64;
                let last: Option<Vec<Option<String>>> = src.get(2);
                let same = src.get::<_, i64>(0) == tgt.get::<_, i64>(0)
                    && src.get::<_, String>(1) == tgt.get::<_, String>(1)
                    && last == tgt.get::<_, Option<Vec<Option<String>>>>(2);
                if same {
                    t.outs[0].report.compared += count;
                    t.outs[0].report.hashed_chunks += 1;
                } else {
                    // Row by row over the source chunk's range (to the end for the last one).
                    let upper = if count < n { None } else { last.clone() };
                    let r = Range {
                        lower: cursor.as_deref(),
                        inclusive: false,
                        upper: upper.as_deref(),
                    };
                    compare::chunk(
                        &snap.reader,
                        &ctx.target,
                        t,
                        snap.p,
                        Source::Range(r, None),
                        &ctx.settings,
                    )
                    .await?;
                }
                (count, last)
            }
            None => {
                let read = compare::chunk(
                    &snap.reader,
                    &ctx.target,
                    t,
                    snap.p,
                    Source::Range(range, Some(n)),
                    &ctx.settings,
                )
                .await?;
                (read.rows, read.last_key)
            }
        };
        progress.add(rows);
        if rows < n {
            break;
        }
        cursor = last;
    }
    if t.hash.is_none() {
        for i in 0..t.outs.len() {
            if t.outs[i].derive.is_some() {
                reverse(ctx, t, i, snap, None).await?;
            }
        }
    }
    Ok(())
}

/// The target's rows of output `i` in key order (all, or `run` rows from each of `starts`):
/// those whose source key the source lacks are re-checked by key.
async fn reverse(
    ctx: &Ctx,
    t: &mut Table,
    i: usize,
    snap: &mut Snap,
    sample: Option<(Vec<Vec<Option<String>>>, u64)>,
) -> Result<(), VerifyError> {
    let o = t.outs[i].o.clone();
    let Some(derive) = t.outs[i].derive.clone() else {
        return Ok(());
    };
    let n = ctx.settings.chunk_rows;
    let (mut starts, run) = match sample {
        Some((s, run)) => (s.into_iter().map(Some).collect::<Vec<_>>(), Some(run)),
        None => (vec![None], None),
    };
    for start in starts.drain(..) {
        let mut cursor = start;
        let mut inclusive = cursor.is_some();
        loop {
            fresh(ctx, snap).await?;
            let limit = run.unwrap_or(n);
            let rows = ctx
                .target
                .query(
                    &sql::reverse_chunk(&t.state, &o, &derive, cursor.as_deref(), inclusive, limit),
                    &[],
                )
                .await
                .map_err(q("reading target keys"))?;
            let got = rows.len() as u64;
            let mut skeys = BTreeSet::new();
            for r in &rows {
                let skey: String = r.get(1);
                if super::parse_key(&skey).iter().any(Option::is_none) {
                    // No key-map entry: the row was not made from any source row.
                    let pk: Vec<Option<String>> = r.get(0);
                    t.orphan(i, &pk, &ctx.settings);
                    continue;
                }
                skeys.insert(skey);
            }
            let skeys: Vec<String> = skeys.into_iter().collect();
            if !skeys.is_empty() {
                let absent = snap
                    .reader
                    .query(&sql::absent_on_source(&t.ts), &[&skeys])
                    .await
                    .map_err(q("looking up source keys"))?;
                for r in absent {
                    t.suspect(r.get(0), &ctx.settings);
                }
            }
            cursor = rows.last().map(|r| r.get(0));
            inclusive = false;
            if run.is_some() || got < limit {
                break;
            }
        }
    }
    Ok(())
}

/// About `n` rows from random start keys (runs of up to 100 consecutive rows), and as many
/// target rows of each output the same way.
pub(crate) async fn sample(
    ctx: &Ctx,
    t: &mut Table,
    n: u64,
    snap: &mut Snap,
) -> Result<(), VerifyError> {
    let small: i64 = snap
        .reader
        .query_one(
            &format!(
                "SELECT count(*) FROM (SELECT 1 FROM {} LIMIT {}) s",
                t.ts.source_quoted,
                2 * n + 1
            ),
            &[],
        )
        .await
        .map_err(q("sizing the table"))?
        .get(0);
    if small as u64 <= 2 * n {
        t.outs[0].report.notes.push(format!(
            "{small} rows, under twice the sample: compared fully"
        ));
        return full(ctx, t, snap).await;
    }
    let run = n.clamp(1, 100);
    let starts = n.div_ceil(run);
    let rows = estimate(&ctx.source, &t.ts.source_quoted).await?;
    let keys = pick(
        &snap.reader,
        |pct| sql::source_starts(&t.ts, pct),
        starts,
        rows,
    )
    .await?;
    for k in &keys {
        fresh(ctx, snap).await?;
        let range = Range {
            lower: Some(k),
            inclusive: true,
            upper: None,
        };
        compare::chunk(
            &snap.reader,
            &ctx.target,
            t,
            snap.p,
            Source::Range(range, Some(run)),
            &ctx.settings,
        )
        .await?;
    }
    if t.hash.is_none() {
        for i in 0..t.outs.len() {
            if t.outs[i].derive.is_none() {
                continue;
            }
            let o = t.outs[i].o.clone();
            let est = estimate(&ctx.target, &o.quoted_target()).await?;
            let keys = pick(&ctx.target, |pct| sql::target_starts(&o, pct), starts, est).await?;
            reverse(ctx, t, i, snap, Some((keys, run))).await?;
        }
    }
    Ok(())
}

/// About `starts` random keys by TABLESAMPLE, widening the sample while it finds too few.
async fn pick(
    client: &tokio_postgres::Client,
    sql: impl Fn(f64) -> String,
    starts: u64,
    estimate: f64,
) -> Result<Vec<Vec<Option<String>>>, VerifyError> {
    let mut pct = percent(starts, estimate);
    loop {
        let keys: Vec<Vec<Option<String>>> = client
            .query(&sql(pct), &[&(starts as i64)])
            .await
            .map_err(q("choosing sample rows"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if keys.len() as u64 >= starts || pct >= 100.0 {
            return Ok(keys);
        }
        pct = (pct * 4.0).min(100.0);
    }
}

/// TABLESAMPLE SYSTEM percentage giving about three times `starts` rows to pick from.
fn percent(starts: u64, estimate: f64) -> f64 {
    (300.0 * starts as f64 / estimate).clamp(0.001, 100.0)
}

/// Rows in a table: the planner's estimate, or (never analyzed) its size at ~50 rows a page.
async fn estimate(client: &tokio_postgres::Client, quoted: &str) -> Result<f64, VerifyError> {
    let r = client
        .query_one(
            "SELECT CASE WHEN c.reltuples > 0 THEN c.reltuples::float8
                    ELSE 50.0 * pg_relation_size(c.oid) / current_setting('block_size')::float8 END
             FROM pg_class c WHERE c.oid = $1::text::regclass",
            &[&quoted],
        )
        .await
        .map_err(q("estimating the table size"))?;
    Ok(r.get::<_, f64>(0).max(1.0))
}

/// The keys the stream wrote at or after `lsn` (the ledger's per-key entries; backfilled rows
/// have none), to be compared in the rounds.
pub(crate) async fn since(ctx: &Ctx, t: &mut Table, lsn: Lsn) -> Result<(), VerifyError> {
    let rows = ctx
        .target
        .query(
            &t.state.keys_since(),
            &[
                &t.rel,
                &lsn.to_string(),
                &(ctx.settings.max_keys as i64 + 1),
            ],
        )
        .await
        .map_err(q("reading the ledger"))?;
    t.count_listed = true;
    for r in rows {
        t.suspect(r.get(0), &ctx.settings);
    }
    Ok(())
}

/// One re-check round over the table's kept keys, at `snap` (taken after the keys were kept).
pub(crate) async fn recheck(ctx: &Ctx, t: &mut Table, snap: &mut Snap) -> Result<(), VerifyError> {
    let keys: Vec<Vec<Option<String>>> = std::mem::take(&mut t.recheck)
        .into_values()
        .map(|(k, _)| k)
        .collect();
    for batch in keys.chunks(ctx.settings.chunk_rows as usize) {
        fresh(ctx, snap).await?;
        compare::chunk(
            &snap.reader,
            &ctx.target,
            t,
            snap.p,
            Source::Listed(batch),
            &ctx.settings,
        )
        .await?;
    }
    Ok(())
}

impl Table {
    /// A target row no source row can have made (its key-map entry is gone).
    fn orphan(&mut self, i: usize, pk: &[Option<String>], s: &super::Settings) {
        if self.after_repair {
            return;
        }
        let out = &mut self.outs[i];
        out.report.extra += 1;
        out.unrepairable += 1;
        if out.report.diffs.len() < s.show {
            out.report.diffs.push(super::report::Diff {
                key: "(none: no key-map entry)".into(),
                target_key: crate::change::SourceKey(pk.to_vec()).to_string(),
                kind: "extra",
                columns: Vec::new(),
            });
        }
    }
}
