//! Writing a split back (the reverse stream): the child-row changes of one source transaction
//! rebuild their parents' list texts on OLD, at the transaction's end (after every parent row
//! of it is written), each parent read and locked once (`SELECT ... FOR UPDATE`), edited with
//! all its changes in order, and written once — so an app's "insert the new rows, delete the
//! old ones" never passes through a list the text cannot hold.
//!
//! A change whose list cannot be written back is kept in OLD's dead letters (the fallback's
//! gate waits for them) and the stream goes on. Must never write a parent row that is gone.

use std::sync::Arc;

use tokio_postgres::types::ToSql;

use crate::change::{Change, Op};
use crate::quote::quote_ident;
use crate::transform::rebuild::{Edit, RebuildPlan};
use crate::transform::{DeadLetter, TargetOp};

use super::{db, ApplyError, Writer};

fn qualified(t: &str) -> String {
    match t.split_once('.') {
        Some((s, n)) => format!("{}.{}", quote_ident(s), quote_ident(n)),
        None => quote_ident(t),
    }
}

fn dead(plan: &RebuildPlan, c: &Change, reason: String) -> TargetOp {
    let tuple = c.new.as_ref().or(c.old.as_ref());
    TargetOp::DeadLetter(DeadLetter {
        source_rel: Arc::from(plan.child_table.as_str()),
        key: c.key.clone(),
        version: c.commit_lsn,
        op: c.op.as_str(),
        reason: format!(
            "cannot write it back into {}.{}: {reason}; set that text on OLD by hand, then delete this dead letter",
            plan.parent_table, plan.text_column
        ),
        row: tuple
            .map(|t| crate::transform::row_json(&c.rel, t))
            .unwrap_or_default(),
    })
}

/// One parent's list and the changes to it, in order.
struct List {
    plan: Arc<RebuildPlan>,
    parent: Vec<String>,
    edits: Vec<Edit>,
    /// The changes behind the edits (for a dead letter).
    changes: Vec<Change>,
}

/// Apply the buffered child-row changes (in order) to their parents' list texts on OLD, in
/// the writer's open transaction. Returns the dead letters of lists that cannot be written.
pub async fn apply(
    writer: &Writer,
    buffered: Vec<(Arc<RebuildPlan>, Change)>,
) -> Result<Vec<TargetOp>, ApplyError> {
    let mut lists: Vec<List> = Vec::new();
    let mut dead_letters = Vec::new();
    for (plan, c) in buffered {
        if c.op == Op::Truncate {
            // Every list of this child table is empty now: what came before is moot.
            flush(writer, std::mem::take(&mut lists), &mut dead_letters).await?;
            truncate(writer, &plan).await?;
            continue;
        }
        let old = c.old.as_ref().map(|t| plan.child(&c.rel, t)).transpose();
        let new = c.new.as_ref().map(|t| plan.child(&c.rel, t)).transpose();
        let (old, new) = match (old, new) {
            (Ok(o), Ok(n)) => (o, n),
            (Err(e), _) | (_, Err(e)) => {
                dead_letters.push(dead(&plan, &c, e));
                continue;
            }
        };
        if c.op == Op::Update && old.is_none() {
            let why = format!(
                "the update carries no old row: {} needs REPLICA IDENTITY FULL",
                plan.child_table
            );
            dead_letters.push(dead(&plan, &c, why));
            continue;
        }
        // The item leaves its old list and joins its new one (the same list, mostly).
        let mut add = |parent: Vec<String>, edit: Edit, c: &Change| match lists
            .iter_mut()
            .find(|l| Arc::ptr_eq(&l.plan, &plan) && l.parent == parent)
        {
            Some(l) => {
                l.edits.push(edit);
                l.changes.push(c.clone());
            }
            None => lists.push(List {
                plan: plan.clone(),
                parent,
                edits: vec![edit],
                changes: vec![c.clone()],
            }),
        };
        match (old, new) {
            (Some(o), Some(n)) if o.parent == n.parent => {
                if let Some(p) = o.parent {
                    add(p, (Some(o.item), Some(n.item)), &c);
                }
            }
            (o, n) => {
                if let Some((Some(p), item)) = o.map(|o| (o.parent, o.item)) {
                    add(p, (Some(item), None), &c);
                }
                if let Some((Some(p), item)) = n.map(|n| (n.parent, n.item)) {
                    add(p, (None, Some(item)), &c);
                }
            }
        }
    }
    flush(writer, lists, &mut dead_letters).await?;
    Ok(dead_letters)
}

fn filter(plan: &RebuildPlan) -> String {
    plan.parent_key
        .iter()
        .enumerate()
        .map(|(i, (_, k, ty))| format!("{} = ${}::text::{ty}", quote_ident(k), i + 1))
        .collect::<Vec<_>>()
        .join(" AND ")
}

async fn flush(
    writer: &Writer,
    lists: Vec<List>,
    dead_letters: &mut Vec<TargetOp>,
) -> Result<(), ApplyError> {
    for l in lists {
        let plan = &l.plan;
        let table = qualified(&plan.parent_table);
        let col = quote_ident(&plan.text_column);
        let filter = filter(plan);
        let mut params: Vec<&(dyn ToSql + Sync)> =
            l.parent.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        let row = writer
            .client()
            .query_opt(
                &format!("SELECT {col}::text FROM {table} WHERE {filter} FOR UPDATE"),
                &params,
            )
            .await
            .map_err(db("reading the list text to write child rows back"))?;
        // The parent is gone on OLD (deleted in this transaction, its children after it):
        // nothing to write back.
        let Some(row) = row else { continue };
        let text: Option<String> = row.get(0);
        let next = match plan.edit(text.as_deref(), &l.edits) {
            Ok(Some(next)) => next,
            Ok(None) => continue,
            Err(why) => {
                for c in &l.changes {
                    dead_letters.push(dead(plan, c, why.clone()));
                }
                continue;
            }
        };
        let n = params.len() + 1;
        params.push(&next);
        writer
            .client()
            .execute(
                &format!("UPDATE {table} SET {col} = ${n}::text WHERE {filter}"),
                &params,
            )
            .await
            .map_err(db("writing the list text back"))?;
    }
    Ok(())
}

/// A TRUNCATE of the child table on NEW: every list on OLD is empty.
async fn truncate(writer: &Writer, plan: &RebuildPlan) -> Result<(), ApplyError> {
    let col = quote_ident(&plan.text_column);
    writer
        .client()
        .execute(
            &format!(
                "UPDATE {} SET {col} = NULL WHERE {col} IS NOT NULL",
                qualified(&plan.parent_table)
            ),
            &[],
        )
        .await
        .map_err(db(
            "emptying the lists after a TRUNCATE of their child table",
        ))?;
    Ok(())
}
