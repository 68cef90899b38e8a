//! The fence: a database that is not the app's refuses the app's writes to the mapped tables,
//! while remodel's own writes go through.
//!
//! A statement trigger `remodel_fence` (BEFORE INSERT, UPDATE, DELETE, TRUNCATE) on each
//! mapped table calls `<state>.fence()`, which lets a statement through only when its session
//! is tagged with a replication origin (remodel's appliers tag theirs: `apply::Writer::
//! tag_origin`) and raises SQLSTATE 25006 (read_only_sql_transaction) otherwise. Triggers fire
//! for the table's owner too, where a REVOKE would not bind. Readers are never blocked.
//!
//! Fencing takes SHARE ROW EXCLUSIVE on each table (CREATE TRIGGER), so it waits, up to
//! `lock_timeout`, for transactions that already wrote one of them: they commit before the
//! fence, and so before its marker. A transaction open but not yet writing is refused at its
//! first write after the fence. Must never fence without the marker in the same transaction:
//! the marker is the exact point the drain waits for.

use tokio_postgres::Client;

use super::SwitchError;
use crate::lsn::Lsn;
use crate::quote::quote_ident;
use crate::state::StateSchema;

const TRIGGER: &str = "remodel_fence";

fn qualified(table: &str) -> String {
    match table.split_once('.') {
        Some((s, t)) => format!("{}.{}", quote_ident(s), quote_ident(t)),
        None => quote_ident(table),
    }
}

/// The fence function (in `state`'s schema, which must exist), owned by remodel's role and run
/// with its rights, so it may ask whether the session has a replication origin.
fn function(state: &StateSchema, side: &str) -> String {
    format!(
        "CREATE OR REPLACE FUNCTION {s}.fence() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER \
         SET search_path = pg_catalog AS $f$
         BEGIN
           IF pg_replication_origin_session_is_setup() THEN RETURN NULL; END IF;
           RAISE EXCEPTION 'remodel: %.% is fenced: this database ({side}) no longer takes the app''s writes (the app writes to the other one since the switch); the write was refused, nothing was lost', TG_TABLE_SCHEMA, TG_TABLE_NAME
             USING ERRCODE = 'read_only_sql_transaction',
                   HINT = 'point the app at the database remodel switched to; remodel status shows the phase';
         END $f$",
        s = state.quoted,
        side = side.replace('\'', "''"),
    )
}

/// Fence `tables` on `client` (the schema `state` exists there) and emit the drain marker in
/// the same transaction. Returns the marker's LSN: everything committed before the fence is
/// before it in the stream. The tables are locked in one statement: each lock waits at most
/// `lock_timeout_ms`, all of them together at most `budget_ms`, so the app's writes (which
/// queue behind a waiting lock) are held no longer than that. The trigger is ENABLE ALWAYS:
/// it fires under `session_replication_role = replica` too (pg_restore, ETL tools).
pub async fn fence(
    client: &mut Client,
    state: &StateSchema,
    side: &str,
    tables: &[String],
    lock_timeout_ms: u64,
    budget_ms: u64,
    what: &str,
) -> Result<Lsn, SwitchError> {
    let tx = client
        .transaction()
        .await
        .map_err(SwitchError::sql(format!("{side}: starting the fence")))?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = {lock_timeout_ms}; {}",
        function(state, side)
    ))
    .await
    .map_err(SwitchError::sql(format!(
        "{side}: creating the fence function {}.fence()",
        state.schema
    )))?;
    let all: Vec<String> = tables.iter().map(|t| qualified(t)).collect();
    if !all.is_empty() {
        // Every statement of the fence is bounded by the budget: the app's writes queue
        // behind these locks meanwhile.
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = {budget_ms}; LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE",
            all.join(", ")
        ))
        .await
        .map_err(SwitchError::sql(format!(
            "{side}: locking the mapped tables to fence them (transactions that wrote them must end first: each lock waits at most {lock_timeout_ms} ms, all of them {budget_ms} ms; retry at a quieter moment, or raise switch.lock_timeout_ms / --timeout)"
        )))?;
    }
    for q in &all {
        // CREATE OR REPLACE, not DROP + CREATE: DROP TRIGGER takes ACCESS EXCLUSIVE, which
        // would block the readers the fence must leave alone. Both statements here keep to
        // the SHARE ROW EXCLUSIVE lock taken above.
        tx.batch_execute(&format!(
            "CREATE OR REPLACE TRIGGER {TRIGGER} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {q} \
             FOR EACH STATEMENT EXECUTE FUNCTION {s}.fence(); \
             ALTER TABLE {q} ENABLE ALWAYS TRIGGER {TRIGGER}",
            s = state.quoted,
        ))
        .await
        .map_err(SwitchError::sql(format!("{side}: fencing {q}")))?;
    }
    let marker: String = tx
        .query_one(
            "SELECT pg_logical_emit_message(true, 'remodel.drain', $1)::text",
            &[&what],
        )
        .await
        .map_err(SwitchError::sql(format!(
            "{side}: writing the drain marker"
        )))?
        .get(0);
    tx.commit()
        .await
        .map_err(SwitchError::sql(format!("{side}: committing the fence")))?;
    Ok(marker.parse().unwrap_or_default())
}

/// The tables fenced on `client` now.
pub async fn fenced(client: &Client) -> Result<Vec<String>, SwitchError> {
    let rows = client
        .query(
            "SELECT n.nspname || '.' || c.relname FROM pg_trigger t \
             JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE t.tgname = $1 AND t.tgenabled <> 'D' ORDER BY 1",
            &[&TRIGGER],
        )
        .await
        .map_err(SwitchError::sql("listing fenced tables".into()))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Lift every fence on `client` (idempotent): the trigger is disabled, not dropped (DISABLE
/// takes SHARE ROW EXCLUSIVE, which readers pass; DROP would take ACCESS EXCLUSIVE), and the
/// next fence enables it again. Each attempt waits at most `lock_timeout_ms`; a timed-out one
/// is retried up to ten times.
pub async fn unfence(client: &Client, side: &str, lock_timeout_ms: u64) -> Result<(), SwitchError> {
    for t in fenced(client).await? {
        let sql = format!(
            "BEGIN; SET LOCAL lock_timeout = {lock_timeout_ms}; ALTER TABLE {} DISABLE TRIGGER {TRIGGER}; COMMIT",
            qualified(&t)
        );
        let mut attempt = 0;
        loop {
            match client.batch_execute(&sql).await {
                Ok(()) => break,
                Err(e) => {
                    let _ = client.batch_execute("ROLLBACK").await;
                    attempt += 1;
                    let lock = e.code().map(|c| c.code()) == Some("55P03");
                    if !lock || attempt >= 10 {
                        return Err(SwitchError::sql(format!(
                            "{side}: lifting the fence on {t} (by hand: ALTER TABLE {t} DISABLE TRIGGER {TRIGGER})"
                        ))(e));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The SQL that lifts a fence by hand (shown by `complete`).
pub fn unfence_sql(tables: &[String]) -> String {
    tables
        .iter()
        .map(|t| format!("DROP TRIGGER {TRIGGER} ON {};", qualified(t)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether this session may tag its writes with a replication origin (and so pass a fence).
pub async fn can_use_origins(client: &Client) -> Result<bool, SwitchError> {
    Ok(client
        .query_one(
            "SELECT has_function_privilege('pg_replication_origin_session_setup(text)', 'execute') \
             AND has_function_privilege('pg_replication_origin_create(text)', 'execute') \
             AND has_function_privilege('pg_replication_origin_session_is_setup()', 'execute')",
            &[],
        )
        .await
        .map_err(SwitchError::sql("checking the replication origin privileges".into()))?
        .get(0))
}
