//! Publication and slot setup on the source, over an ordinary SQL connection.
//!
//! Owns creating the publication (FOR ALL TABLES or a table list) and the logical slot when they
//! are missing, and checking that existing ones fit. Must never drop or alter an existing slot
//! or publication: they may hold a position another run depends on.

use tokio_postgres::Client;

use crate::lsn::Lsn;
use crate::quote::quote_ident;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("source: {what}: {source}")]
    Sql {
        what: String,
        #[source]
        source: crate::pgerr::PgError,
    },
    #[error("source: replication slot {slot:?} exists but uses plugin {plugin:?} (remodel needs pgoutput); choose another source.slot or drop it with SELECT pg_drop_replication_slot('{slot}')")]
    WrongPlugin { slot: String, plugin: String },
    #[error("source: replication slot {slot:?} belongs to database {found:?}, not {expected:?}; choose another source.slot")]
    WrongDatabase {
        slot: String,
        found: String,
        expected: String,
    },
    #[error("source: replication slot {slot:?} is physical; remodel needs a logical slot")]
    Physical { slot: String },
    #[error("source: invalid table name {0:?} in source.tables: use schema.table")]
    TableName(String),
    /// The slot is gone but the target says remodel streamed from it: re-creating it would
    /// start after the changes in between, silently.
    #[error("source: replication slot {slot:?} does not exist, but the target's state says remodel already streamed from it up to {position}: it was dropped (or the source was restored or failed over without it). The changes committed since {position} are no longer in any slot, and re-creating it would skip them, so remodel stops. {}", recover(.slot, .state))]
    SlotLost {
        slot: String,
        position: Lsn,
        state: String,
    },
    /// PostgreSQL invalidated the slot (it retained more than `max_slot_wal_keep_size`).
    #[error("source: replication slot {slot:?} was invalidated by the server (wal_status = lost: it retained more WAL than max_slot_wal_keep_size allows, and the WAL after {position} was removed). Those changes can no longer be streamed, so remodel stops. Drop it on the source with SELECT pg_drop_replication_slot('{slot}'), consider raising max_slot_wal_keep_size, then: {}", recover(.slot, .state))]
    SlotInvalidated {
        slot: String,
        position: Lsn,
        state: String,
    },
}

impl SetupError {
    /// Only a statement that failed transiently; a wrong slot, database or table name, and a
    /// lost or invalidated slot, are definite.
    pub fn is_transient(&self) -> bool {
        match self {
            SetupError::Sql { source, .. } => source.is_transient(),
            _ => false,
        }
    }
}

/// The recovery both slot-loss errors name (docs/troubleshooting.md#slot-lost).
fn recover(slot: &str, state: &str) -> String {
    let reset = crate::state::StateSchema::reset_for_new_slot(state, slot);
    format!(
        "Recover (docs/troubleshooting.md#slot-lost): stop remodel; on the target run \
         {reset} \
         then start remodel run (a new slot; backfill copies every row again, and dead-letters \
         again whatever still cannot be transformed) and, once backfill is done, run remodel verify --repair to remove the rows deleted on the \
         source meanwhile"
    )
}

fn sql(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> SetupError {
    let what = what.into();
    move |source| SetupError::Sql {
        what,
        source: source.into(),
    }
}

/// Split `schema.table` (or `table` → `public.table`).
pub fn split_name(name: &str) -> Result<(String, String), SetupError> {
    let parts: Vec<&str> = name.split('.').collect();
    match parts.as_slice() {
        [t] if !t.is_empty() => Ok(("public".into(), (*t).into())),
        [s, t] if !s.is_empty() && !t.is_empty() => Ok(((*s).into(), (*t).into())),
        _ => Err(SetupError::TableName(name.into())),
    }
}

/// Create the publication if missing. Returns true when it was created now.
pub async fn ensure_publication(
    client: &Client,
    publication: &str,
    tables: &[String],
) -> Result<bool, SetupError> {
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(sql("looking up the publication"))?
        .is_some();
    if exists {
        return Ok(false);
    }
    let scope = if tables.is_empty() {
        "FOR ALL TABLES".to_string()
    } else {
        let mut names = Vec::new();
        for t in tables {
            let (s, n) = split_name(t)?;
            names.push(format!("{}.{}", quote_ident(&s), quote_ident(&n)));
        }
        format!("FOR TABLE {}", names.join(", "))
    };
    client
        .batch_execute(&format!(
            "CREATE PUBLICATION {} {scope}",
            quote_ident(publication)
        ))
        .await
        .map_err(sql(format!("creating publication {publication:?}")))?;
    tracing::info!(publication, %scope, "created publication");
    Ok(true)
}

/// Create the logical slot if missing; returns its confirmed flush position.
/// `streamed`: how far the target's state says remodel already streamed from `slot` (None on
/// a first start). With it, a missing or invalidated slot is fatal: never silently re-created.
/// `state`: the state schema's name (unquoted), for the recovery the error names.
pub async fn ensure_slot(
    client: &Client,
    slot: &str,
    streamed: Option<Lsn>,
    state: &str,
) -> Result<Lsn, SetupError> {
    let row = client
        .query_opt(
            "SELECT plugin, database, slot_type, confirmed_flush_lsn::text, \
             coalesce(wal_status, '') \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(sql("looking up the replication slot"))?;
    let db: String = client
        .query_one("SELECT current_database()", &[])
        .await
        .map_err(sql("reading current_database()"))?
        .get(0);
    if let Some(row) = row {
        let slot_type: String = row.get(2);
        if slot_type != "logical" {
            return Err(SetupError::Physical { slot: slot.into() });
        }
        let plugin: Option<String> = row.get(0);
        let plugin = plugin.unwrap_or_default();
        if plugin != "pgoutput" {
            return Err(SetupError::WrongPlugin {
                slot: slot.into(),
                plugin,
            });
        }
        let found: Option<String> = row.get(1);
        let found = found.unwrap_or_default();
        if found != db {
            return Err(SetupError::WrongDatabase {
                slot: slot.into(),
                found,
                expected: db,
            });
        }
        let lsn: Option<String> = row.get(3);
        let lsn = lsn.and_then(|l| l.parse().ok()).unwrap_or_default();
        let wal_status: String = row.get(4);
        if wal_status == "lost" {
            return Err(SetupError::SlotInvalidated {
                slot: slot.into(),
                position: streamed.unwrap_or(lsn).max(lsn),
                state: state.into(),
            });
        }
        return Ok(lsn);
    }
    if let Some(position) = streamed {
        return Err(SetupError::SlotLost {
            slot: slot.into(),
            position,
            state: state.into(),
        });
    }
    let lsn: String = client
        .query_one(
            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&slot],
        )
        .await
        .map_err(sql(format!("creating replication slot {slot:?}")))?
        .get(0);
    tracing::info!(slot, %lsn, "created replication slot");
    Ok(lsn.parse().unwrap_or_default())
}

/// Tables the publication covers, as `schema.table`.
pub async fn publication_tables(
    client: &Client,
    publication: &str,
) -> Result<Vec<String>, SetupError> {
    let rows = client
        .query(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables \
             WHERE pubname = $1 ORDER BY 1",
            &[&publication],
        )
        .await
        .map_err(sql("listing publication tables"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_names() {
        assert_eq!(split_name("a").unwrap(), ("public".into(), "a".into()));
        assert_eq!(split_name("s.t").unwrap(), ("s".into(), "t".into()));
        assert!(split_name("a.b.c").is_err());
        assert!(split_name(".b").is_err());
    }
}
