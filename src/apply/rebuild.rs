//! Writing a split back (the reverse stream): one child row's change on NEW rebuilds its
//! parent's list text on OLD, inside the open target transaction, with the parent row locked
//! (`SELECT ... FOR UPDATE`) so the read and the write see one state.
//!
//! Must never write a parent row that is gone (the parent's own delete came first), and never
//! write text that does not split back to the list (`transform::rebuild` refuses it).

use crate::change::{Change, Op};
use crate::quote::quote_ident;
use crate::transform::rebuild::{Child, RebuildPlan};

use super::{db, ApplyError, Writer};

fn qualified(t: &str) -> String {
    match t.split_once('.') {
        Some((s, n)) => format!("{}.{}", quote_ident(s), quote_ident(n)),
        None => quote_ident(t),
    }
}

fn refused(plan: &RebuildPlan, c: &Change, message: String) -> Box<ApplyError> {
    Box::new(ApplyError::Rebuild {
        child: plan.child_table.clone(),
        parent: format!("{}.{}", plan.parent_table, plan.text_column),
        key: c.key.to_string(),
        lsn: c.commit_lsn,
        message,
    })
}

/// Apply `c` (a change to `plan`'s child table) to its parents' list text on OLD.
pub async fn apply(writer: &Writer, plan: &RebuildPlan, c: &Change) -> Result<(), ApplyError> {
    let child = |t: Option<&crate::change::Tuple>| -> Result<Option<Child>, Box<ApplyError>> {
        t.map(|t| plan.child(&c.rel, t))
            .transpose()
            .map_err(|m| refused(plan, c, m))
    };
    let (old, new) = match c.op {
        Op::Insert => (None, child(c.new.as_ref()).map_err(|e| *e)?),
        Op::Delete => (child(c.old.as_ref()).map_err(|e| *e)?, None),
        Op::Update => {
            let new = child(c.new.as_ref()).map_err(|e| *e)?;
            // Without an old row (no column of the replica identity changed), the item is
            // replaced by name.
            let old = match child(c.old.as_ref()).map_err(|e| *e)? {
                Some(o) => Some(o),
                None => new.clone(),
            };
            (old, new)
        }
        Op::Truncate => {
            return Err(*refused(
                plan,
                c,
                "a TRUNCATE of the child table cannot be written back as list text (it would empty every list); empty the lists on OLD by hand, or fall back before truncating".into(),
            ))
        }
    };
    match (old, new) {
        (Some(o), Some(n)) if o.parent == n.parent => {
            edit(writer, plan, c, &o.parent, Some(&o), Some(&n)).await
        }
        (o, n) => {
            if let Some(o) = &o {
                edit(writer, plan, c, &o.parent, Some(o), None).await?;
            }
            if let Some(n) = &n {
                edit(writer, plan, c, &n.parent, None, Some(n)).await?;
            }
            Ok(())
        }
    }
}

async fn edit(
    writer: &Writer,
    plan: &RebuildPlan,
    c: &Change,
    parent: &[String],
    remove: Option<&Child>,
    add: Option<&Child>,
) -> Result<(), ApplyError> {
    let table = qualified(&plan.parent_table);
    let col = quote_ident(&plan.text_column);
    let filter: Vec<String> = plan
        .parent_key
        .iter()
        .enumerate()
        .map(|(i, (_, k, ty))| format!("{} = ${}::text::{ty}", quote_ident(k), i + 1))
        .collect();
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = parent
        .iter()
        .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let row = writer
        .client()
        .query_opt(
            &format!(
                "SELECT {col}::text FROM {table} WHERE {} FOR UPDATE",
                filter.join(" AND ")
            ),
            &params,
        )
        .await
        .map_err(db("reading the list text to write a child row back"))?;
    let Some(row) = row else {
        // The parent is gone on OLD (its delete came first): nothing to write back.
        return Ok(());
    };
    let text: Option<String> = row.get(0);
    let next = plan
        .edit(
            text.as_deref(),
            remove.map(|r| &r.item),
            add.map(|a| &a.item),
        )
        .map_err(|m| *refused(plan, c, m))?;
    let Some(next) = next else { return Ok(()) };
    let n = parent.len() + 1;
    let mut params = params;
    params.push(&next);
    writer
        .client()
        .execute(
            &format!(
                "UPDATE {table} SET {col} = ${n} WHERE {}",
                filter.join(" AND ")
            ),
            &params,
        )
        .await
        .map_err(db("writing the list text back"))?;
    Ok(())
}
