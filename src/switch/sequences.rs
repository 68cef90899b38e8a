//! Sequences: logical replication carries no sequence values, so a switch moves the sequences
//! of the database the app switches to past those of the one it leaves, with headroom, so no
//! id is handed out twice on either side.
//!
//! The pairs come from the mapping: a column of OLD that feeds a column of NEW (kept or
//! renamed), each owning a sequence (serial or identity: `pg_get_serial_sequence`). Must never
//! move a sequence backwards.

use tokio_postgres::Client;

use super::reverse::Forward;
use super::SwitchError;
use crate::transform::plan::{Expr, OutputKind};

/// (OLD table, OLD column, NEW table, NEW column) for every column the mapping carries over.
fn pairs(fwd: &Forward) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for tp in fwd.plan.tables.values() {
        for o in tp
            .outputs
            .iter()
            .filter(|o| matches!(o.kind, OutputKind::Row))
        {
            for c in &o.columns {
                if let Expr::Column { name, .. } = &c.expr {
                    out.push((tp.source.clone(), name.clone(), o.target(), c.name.clone()));
                }
            }
        }
    }
    out.sort();
    out
}

fn quoted_table(t: &str) -> String {
    match t.split_once('.') {
        Some((s, n)) => format!(
            "{}.{}",
            crate::quote::quote_ident(s),
            crate::quote::quote_ident(n)
        ),
        None => crate::quote::quote_ident(t),
    }
}

async fn owned(
    c: &Client,
    table: &str,
    column: &str,
    side: &str,
) -> Result<Option<String>, SwitchError> {
    Ok(c.query_one(
        "SELECT pg_get_serial_sequence($1, $2)",
        &[&quoted_table(table), &column],
    )
    .await
    .map_err(SwitchError::sql(format!(
        "{side}: looking for the sequence of {table}.{column}"
    )))?
    .get(0))
}

/// The last value handed out (or the start, if none was).
async fn value(c: &Client, seq: &str, side: &str) -> Result<i64, SwitchError> {
    let r = c
        .query_one(&format!("SELECT last_value, is_called FROM {seq}"), &[])
        .await
        .map_err(SwitchError::sql(format!("{side}: reading sequence {seq}")))?;
    let (last, called): (i64, bool) = (r.get(0), r.get(1));
    Ok(if called { last } else { last - 1 })
}

/// Move each sequence of `to` past its counterpart of `from` by `headroom` (`to_new`: `to` is
/// NEW). Returns one line per sequence, moved or already ahead.
pub async fn advance(
    fwd: &Forward,
    from: &Client,
    to: &Client,
    to_new: bool,
    headroom: i64,
) -> Result<Vec<String>, SwitchError> {
    let (fs, ts) = if to_new {
        ("OLD", "NEW")
    } else {
        ("NEW", "OLD")
    };
    let mut out = Vec::new();
    for (ot, oc, nt, nc) in pairs(fwd) {
        let ((ft, fc), (tt, tc)) = if to_new {
            ((&ot, &oc), (&nt, &nc))
        } else {
            ((&nt, &nc), (&ot, &oc))
        };
        let (Some(fseq), Some(tseq)) =
            (owned(from, ft, fc, fs).await?, owned(to, tt, tc, ts).await?)
        else {
            continue;
        };
        let fv = value(from, &fseq, fs).await?;
        let tv = value(to, &tseq, ts).await?;
        let want = fv.saturating_add(headroom);
        if tv >= want {
            out.push(format!(
                "{ts} {tseq} at {tv} is already past {fs} {fseq} at {fv} + {headroom}"
            ));
            continue;
        }
        to.query_one(
            "SELECT setval($1::text::regclass, $2, true)",
            &[&tseq, &want],
        )
        .await
        .map_err(SwitchError::sql(format!("{ts}: moving sequence {tseq}")))?;
        out.push(format!(
            "{ts} {tseq} moved {tv} → {want} ({fs} {fseq} at {fv}, headroom {headroom})"
        ));
    }
    Ok(out)
}
