//! One chunk's comparison: the transformed source rows are staged on the target (the same
//! COPY text backfill stages), compared there with the target rows in one transaction, and every
//! differing row is classified: re-check later (its source key is busy or pending), or a
//! confirmed mismatch (counted, the first ones kept with a column diff, the key kept for
//! `--repair`).
//!
//! Memory: one chunk's transformed rows and its differing rows.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use super::report::{diff_columns, Diff};
use super::sql;
use super::{q, Table, VerifyError, Why};
use crate::change::SourceKey;
use crate::lsn::Lsn;
use crate::read::rows::{self, Parents, Transformed};

/// Where a chunk's rows come from.
pub(crate) enum Source<'a> {
    /// A key range (`limit` rows at most).
    Range(sql::Range<'a>, Option<u64>),
    /// Listed keys (re-checks): every listed key is a parent, found on the source or not.
    Listed(&'a [Vec<Option<String>>]),
}

/// What a chunk read: rows, and the last key (for the next chunk).
pub(crate) struct Read {
    pub rows: u64,
    pub last_key: Option<Vec<Option<String>>>,
}

/// Read, transform, stage and compare one chunk at snapshot `p`.
pub(crate) async fn chunk(
    reader: &Client,
    target: &Client,
    t: &mut Table,
    p: Lsn,
    from: Source<'_>,
    ctx: &super::Settings,
) -> Result<Read, VerifyError> {
    let version = Lsn(p.0.saturating_sub(1));
    let copy = match &from {
        Source::Range(r, limit) => sql::copy_range(&t.ts, r, *limit),
        Source::Listed(keys) => sql::copy_listed(&t.ts, keys),
    };
    // Parents: the keys read whose rows transformed (a dead letter's target row is not
    // compared), and listed keys the source lacks (their target rows are extra).
    let mut tr: Transformed = rows::read(reader, &copy, &t.rj, version, Parents::All).await?;
    if let Source::Listed(keys) = &from {
        let read = read_keys(&tr.parents);
        let dead: std::collections::HashSet<String> =
            tr.dead.iter().map(|d| d.key.encode()).collect();
        for k in *keys {
            let skey = SourceKey(k.clone()).encode();
            if !read.contains(&skey) && !dead.contains(&skey) {
                rows::push_row(&mut tr.parents, &skey, k.iter().map(|v| v.as_deref()));
            }
        }
    }
    if !tr.dead.is_empty() {
        t.dead_letters += tr.dead.len() as u64;
    }
    target
        .batch_execute(&format!("BEGIN; {}", t.rj.create_stages()))
        .await
        .map_err(q("staging the chunk"))?;
    let result = stage_and_compare(target, t, p, &from, &mut tr, ctx).await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = target.batch_execute(end).await;
    result?;
    ended.map_err(q("ending the comparison"))?;
    Ok(Read {
        rows: tr.rows,
        last_key: tr.last_key.take(),
    })
}

async fn stage_and_compare(
    target: &Client,
    t: &mut Table,
    p: Lsn,
    from: &Source<'_>,
    tr: &mut Transformed,
    ctx: &super::Settings,
) -> Result<(), VerifyError> {
    for (i, stage) in t.rj.stages.iter().enumerate() {
        let data = std::mem::take(&mut tr.stages[i]);
        if data.is_empty() {
            continue;
        }
        let cols: Vec<String> = (0..t.outs[i].o.columns.len())
            .map(|c| format!("c{c}"))
            .collect();
        crate::read::copy::copy_in(
            target,
            &format!("COPY {stage} (skey, {}) FROM STDIN", cols.join(", ")),
            data,
        )
        .await
        .map_err(q("staging expected rows"))?;
    }
    let parents = std::mem::take(&mut tr.parents);
    if !parents.is_empty() {
        let keys: Vec<String> = (0..t.ts.key_len).map(|j| format!("k{j}")).collect();
        crate::read::copy::copy_in(
            target,
            &format!(
                "COPY {} (skey, {}) FROM STDIN",
                t.rj.parents,
                keys.join(", ")
            ),
            parents,
        )
        .await
        .map_err(q("staging source keys"))?;
    }
    let pl = p.to_string();
    let rel = t.rel.clone();
    let backfill = ctx.backfill;
    for i in 0..t.outs.len() {
        let o = t.outs[i].o.clone();
        if matches!(from, Source::Range(..)) || t.count_listed {
            t.outs[i].report.compared += o_rows(target, &t.rj.stages[i]).await?;
        }
        let rows = target
            .query(
                &sql::compare(&t.state, &o, &t.rj.stages[i]),
                &[&rel, &pl, &backfill],
            )
            .await
            .map_err(q("comparing with the target"))?;
        for r in rows {
            let skey: String = r.get(0);
            let missing: bool = r.get(1);
            let expected: Vec<Option<String>> = r.get(2);
            let actual: Option<Vec<Option<String>>> = r.get(3);
            let kind = if missing { "missing" } else { "changed" };
            let why = status(r.get(4), r.get(5));
            t.classify(i, skey, kind, Some(expected), actual, why, ctx);
        }
        if let Some(derive) = t.outs[i].derive.clone() {
            let rows = target
                .query(
                    &sql::extras(&t.state, &o, &derive, &t.rj.stages[i], &t.rj.parents),
                    &[&rel, &pl, &backfill],
                )
                .await
                .map_err(q("looking for extra target rows"))?;
            for r in rows {
                let actual: Vec<Option<String>> = r.get(1);
                let why = status(r.get(2), r.get(3));
                t.classify(i, r.get(0), "extra", None, Some(actual), why, ctx);
            }
        }
    }
    // Target rows in the chunk's key range whose source key was not read: the source may not
    // have them (or, under another collation, have them elsewhere): re-check them by key.
    if let (Source::Range(r, limit), Some(h)) = (from, t.hash.as_ref()) {
        let upper = match (r.upper, limit) {
            (Some(u), _) => Some(u.to_vec()),
            (None, Some(n)) if tr.rows >= *n => tr.last_key.clone(),
            _ => None,
        };
        let range = sql::Range {
            lower: r.lower,
            inclusive: r.inclusive,
            upper: upper.as_deref(),
        };
        let o = t.outs[0].o.clone();
        let rows = target
            .query(
                &sql::range_extras(&t.ts, &o, h, &range, &t.rj.parents, ctx.max_keys + 1),
                &[],
            )
            .await
            .map_err(q("looking for extra target rows"))?;
        for r in rows {
            t.suspect(r.get(0), ctx);
        }
    }
    Ok(())
}

/// The skeys (first field) of staged parent lines.
fn read_keys(parents: &[u8]) -> std::collections::HashSet<String> {
    parents
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let f = l.split(|&b| b == b'\t').next()?;
            crate::read::copy::unescape(f).ok().flatten()
        })
        .collect()
}

async fn o_rows(target: &Client, stage: &str) -> Result<u64, VerifyError> {
    let n: i64 = target
        .query_one(&format!("SELECT count(*) FROM {stage}"), &[])
        .await
        .map_err(q("counting staged rows"))?
        .get(0);
    Ok(n as u64)
}

fn status(busy: bool, pending: bool) -> Option<Why> {
    if busy {
        Some(Why::Busy)
    } else if pending {
        Some(Why::Pending)
    } else {
        None
    }
}

/// A confirmed difference as shown to people.
pub(crate) fn diff(
    o: &crate::transform::OutputPlan,
    skey: &str,
    kind: &'static str,
    expected: Option<&[Option<String>]>,
    actual: Option<&[Option<String>]>,
) -> Diff {
    let names: Vec<String> = o.columns.iter().map(|c| c.name.clone()).collect();
    let key = serde_json::from_str::<Vec<Option<String>>>(skey)
        .map(|k| SourceKey(k).to_string())
        .unwrap_or_else(|_| skey.to_string());
    let row = expected.or(actual).unwrap_or_default();
    let target_key = SourceKey(
        o.key
            .iter()
            .map(|&k| row.get(k).cloned().flatten())
            .collect(),
    )
    .to_string();
    Diff {
        key,
        target_key,
        kind,
        columns: diff_columns(&names, expected, actual),
    }
}

/// Keys to re-check, by encoded source key: the key values and why.
pub(crate) type Recheck = BTreeMap<String, (Vec<Option<String>>, Why)>;
