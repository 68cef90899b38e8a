//! `remodel dead-letters [--retry]`: rows the mapping could not transform (on_error =
//! "dead_letter"), listed, and re-run through the current mapping once it is fixed.
//!
//! A retry transforms the stored source row again at its original version and applies it under
//! the same ledger guard as the stream: if the row was written since (a newer version), the
//! retry is a no-op and the dead letter is resolved as superseded. The dead letter is deleted
//! in the same target transaction as the write. Must never apply a row outside the guard.

use std::sync::Arc;

use serde::Serialize;
use tokio_postgres::Client;

use crate::apply::Writer;
use crate::change::{Change, Datum, Op, Relation, RelationColumn, SourceKey};
use crate::config::Config;
use crate::error::Error;
use crate::lsn::Lsn;
use crate::state::StateSchema;
use crate::transform::{Plan, TablePlan, TargetOp, Transformer};

#[derive(Debug, Serialize)]
pub struct DeadLetterRow {
    pub table: String,
    pub key: String,
    pub lsn: String,
    pub op: String,
    pub reason: String,
    pub attempts: i32,
    pub row: Option<serde_json::Value>,
}

fn sql(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |source| Error::Sql {
        what,
        source: source.into(),
    }
}

async fn target(config: &Config) -> Result<Client, Error> {
    Ok(config
        .target_conn()
        .map_err(crate::source::conninfo::ConnectError::from)?
        .connect()
        .await?)
}

async fn load(client: &Client, st: &StateSchema, limit: i64) -> Result<Vec<DeadLetterRow>, Error> {
    let rows = client
        .query(
            &format!(
                "SELECT rel, skey, version::text, op, reason, attempts, row FROM {} ORDER BY version, rel, skey LIMIT $1",
                st.table("dead_letters")
            ),
            &[&limit],
        )
        .await
        .map_err(sql("reading dead letters"))?;
    Ok(rows
        .iter()
        .map(|r| DeadLetterRow {
            table: r.get(0),
            key: r.get(1),
            lsn: r.get(2),
            op: r.get(3),
            reason: r.get(4),
            attempts: r.get(5),
            row: r.get(6),
        })
        .collect())
}

/// The dead letters (at most `limit`) and the count per table.
pub async fn list(
    config: &Config,
    limit: i64,
) -> Result<(Vec<DeadLetterRow>, Vec<(String, i64)>), Error> {
    let mut client = target(config).await?;
    let st = StateSchema::new(&config.target.state_schema);
    st.migrate(&mut client).await?;
    Ok((
        load(&client, &st, limit).await?,
        st.dead_letter_counts(&client).await?,
    ))
}

#[derive(Debug, Default, Serialize)]
pub struct RetryReport {
    /// Transformed and applied (or superseded by a newer write): removed from the table.
    pub resolved: u64,
    /// Still failing: left in the table with the new reason.
    pub failing: u64,
}

/// Re-run every dead letter through the current mapping.
pub async fn retry(config: &Config) -> Result<RetryReport, Error> {
    let source = config
        .source_conn()
        .map_err(crate::source::conninfo::ConnectError::from)?
        .connect()
        .await?;
    let mut client = target(config).await?;
    let st = StateSchema::new(&config.target.state_schema);
    st.migrate(&mut client).await?;
    let phase = st.phase(&client).await?.phase;
    if phase != crate::state::Phase::Forward {
        return Err(crate::switch::SwitchError::Refused(format!(
            "dead-letters --retry: the migration is {}: the target is the app's database now, and writing source rows into it would overwrite the app's writes; fall back first (remodel fallback), or carry the rows over by hand",
            phase.as_str()
        ))
        .into());
    }
    let plan =
        Arc::new(crate::transform::live::compile_live(&config.live(), &source, &client).await?);
    let letters = load(&client, &st, i64::MAX).await?;
    let mut check = target(config).await?;
    st.migrate(&mut check).await?;
    let mut applier = Writer::new(client, st.clone(), config.stall_timeout());
    let mut report = RetryReport::default();
    let delete = format!(
        "DELETE FROM {} WHERE rel = $1 AND skey = $2 AND version = $3::text::pg_lsn",
        st.table("dead_letters")
    );
    for d in letters {
        let outcome = match change_of(&plan, &d) {
            Err(why) => Err(why),
            Ok(change) => {
                let mut transformer = Transformer::new(plan.clone());
                let mut ops = Vec::new();
                match transformer.transform(&change, &mut ops) {
                    Err(e) => Err(e.to_string()),
                    Ok(()) if ops.iter().any(|o| matches!(o, TargetOp::DeadLetter(_))) => Err(ops
                        .iter()
                        .find_map(|o| match o {
                            TargetOp::DeadLetter(x) => Some(x.reason.clone()),
                            _ => None,
                        })
                        .unwrap_or_default()),
                    Ok(()) => applier
                        .apply_alone(ops, &delete, &[&d.table, &d.key, &d.lsn])
                        .await
                        .map_err(|e| e.to_string()),
                }
            }
        };
        match outcome {
            Ok(()) => {
                report.resolved += 1;
                tracing::info!(table = %d.table, key = %d.key, lsn = %d.lsn, "dead letter applied");
            }
            Err(why) => {
                report.failing += 1;
                tracing::warn!(table = %d.table, key = %d.key, lsn = %d.lsn, reason = %why, "dead letter still fails");
                check
                    .execute(
                        &format!(
                            "UPDATE {} SET reason = $4, attempts = attempts + 1, updated_at = now()
                             WHERE rel = $1 AND skey = $2 AND version = $3::text::pg_lsn",
                            st.table("dead_letters")
                        ),
                        &[&d.table, &d.key, &d.lsn, &why],
                    )
                    .await
                    .map_err(sql("recording a failed retry"))?;
            }
        }
    }
    Ok(report)
}

/// The source change a dead letter stands for, against the current plan's view of the table.
fn change_of(plan: &Plan, d: &DeadLetterRow) -> Result<Change, String> {
    let tp: &TablePlan = plan
        .tables
        .get(&d.table)
        .map(|t| t.as_ref())
        .ok_or_else(|| format!("{} is no longer mapped", d.table))?;
    let (schema, name) = d
        .table
        .split_once('.')
        .ok_or_else(|| format!("bad table name {}", d.table))?;
    let rel = Arc::new(Relation {
        oid: 0,
        schema: schema.into(),
        name: name.into(),
        replica_identity: b'd',
        columns: tp
            .columns
            .iter()
            .map(|(c, _)| RelationColumn {
                is_key: tp.source_key.contains(c),
                name: c.clone(),
                type_oid: 0,
                type_modifier: -1,
            })
            .collect(),
    });
    let row = d.row.as_ref().and_then(|r| r.as_object());
    let tuple: Vec<Datum> = tp
        .columns
        .iter()
        .map(|(c, _)| match row.and_then(|r| r.get(c)) {
            Some(serde_json::Value::String(s)) => Datum::Text(s.clone()),
            Some(serde_json::Value::Object(_)) => Datum::Unchanged,
            _ => Datum::Null,
        })
        .collect();
    let key: Vec<Option<String>> =
        serde_json::from_str(&d.key).map_err(|e| format!("unreadable key {}: {e}", d.key))?;
    let version: Lsn = d
        .lsn
        .parse()
        .map_err(|_| format!("unreadable LSN {}", d.lsn))?;
    let (op, old, new) = match d.op.as_str() {
        "delete" => (Op::Delete, Some(tuple), None),
        "update" => (Op::Update, None, Some(tuple)),
        _ => (Op::Insert, None, Some(tuple)),
    };
    Ok(Change {
        rel,
        op,
        key: SourceKey(key),
        old,
        new,
        commit_lsn: version,
        xid: 0,
    })
}
