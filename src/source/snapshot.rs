//! A source snapshot at a known position, and waiting until the stream has applied everything
//! before it. Backfill passes and verification rounds both read through one.
//!
//! ```text
//!  CREATE_REPLICATION_SLOT <tmp> TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT ─▶ (P, snapshot)
//!     readers: BEGIN REPEATABLE READ; SET TRANSACTION SNAPSHOT → every commit < P, none ≥ P
//!  pg_logical_emit_message(true, ..) after P ─▶ wait until the stream's slot is confirmed past it
//!     (the slot is confirmed only after apply committed: every commit < P is on the target)
//! ```
//!
//! Owns nothing durable. Must never report the stream as past `P` before the slot's confirmed
//! flush position is.

use std::time::{Duration, Instant};

use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::conninfo::ConnInfo;
use super::replication::{ReplicationConn, ReplicationError};
use crate::lsn::Lsn;
use crate::pgerr::PgError;
use crate::quote::quote_ident;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    #[error("unexpected reply to CREATE_REPLICATION_SLOT: {0}")]
    SlotReply(String),
    #[error("the stream's slot {slot:?} does not exist on the source; start `remodel run` first (it streams every commit after the snapshot)")]
    NoSlot { slot: String },
    #[error("{what}: {source}")]
    Sql {
        what: &'static str,
        #[source]
        source: PgError,
    },
}

impl SnapshotError {
    pub fn is_transient(&self) -> bool {
        match self {
            SnapshotError::Replication(e) => e.is_transient(),
            SnapshotError::Sql { source, .. } => source.is_transient(),
            SnapshotError::SlotReply(_) | SnapshotError::NoSlot { .. } => false,
        }
    }
}

/// A snapshot exported by a temporary slot. The snapshot can be imported while this value
/// lives; drop it once every reader has imported it.
pub struct Exported {
    pub p: Lsn,
    pub snapshot: String,
    _conn: ReplicationConn,
}

/// Export a snapshot; its consistent point is `P`.
pub async fn export(info: &ConnInfo, prefix: &str) -> Result<Exported, SnapshotError> {
    let mut repl = ReplicationConn::connect(info).await?;
    let name = format!("{prefix}_{}", rand::random::<u32>());
    let reply = repl
        .simple_query(&format!(
            "CREATE_REPLICATION_SLOT {} TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT",
            quote_ident(&name)
        ))
        .await?;
    match reply
        .first()
        .map(|r| (r.get(1).cloned().flatten(), r.get(2).cloned().flatten()))
    {
        Some((Some(p), Some(s))) => Ok(Exported {
            p: p.parse::<Lsn>()
                .map_err(|e| SnapshotError::SlotReply(e.to_string()))?,
            snapshot: s,
            _conn: repl,
        }),
        _ => Err(SnapshotError::SlotReply(format!("{reply:?}"))),
    }
}

/// `BEGIN .. READ ONLY; SET TRANSACTION SNAPSHOT ..` for a reader of `snapshot`.
pub fn import_sql(snapshot: &str, application_name: &str) -> String {
    format!(
        "SET application_name = {}; BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
        crate::quote::quote_literal(application_name),
        crate::quote::quote_literal(snapshot)
    )
}

/// Wait until the stream's slot `slot` is confirmed past a marker emitted after `p`: then every
/// commit before `p` is on the target. `Ok(false)` at the deadline or on shutdown.
pub async fn wait_for_stream(
    source: &Client,
    slot: &str,
    p: Lsn,
    deadline: Instant,
    shutdown: &CancellationToken,
    who: &str,
) -> Result<bool, SnapshotError> {
    let sql = |what: &'static str| {
        move |e: tokio_postgres::Error| SnapshotError::Sql {
            what,
            source: e.into(),
        }
    };
    // A transactional logical message reaches the stream even when the source is idle.
    let marker: String = source
        .query_one(
            "SELECT pg_logical_emit_message(true, $1, $2)::text",
            &[&format!("remodel-{who}"), &format!("snapshot at {p}")],
        )
        .await
        .map_err(sql("emitting a snapshot marker"))?
        .get(0);
    let started = Instant::now();
    let mut told = Instant::now();
    loop {
        let row = source
            .query_opt(
                "SELECT confirmed_flush_lsn >= $2::text::pg_lsn, active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot, &marker],
            )
            .await
            .map_err(sql("watching the stream's slot"))?;
        match row {
            Some(r) if r.get::<_, Option<bool>>(0) == Some(true) => return Ok(true),
            Some(r) => {
                if told.elapsed() > Duration::from_secs(10) {
                    let active: bool = r.get(1);
                    tracing::warn!(%p, slot, active, waited_s = started.elapsed().as_secs(), "{who} waits for the stream to apply everything before its snapshot{}", if active { "" } else { ": the slot is inactive — is `remodel run` streaming?" });
                    told = Instant::now();
                }
            }
            None => {
                return Err(SnapshotError::NoSlot {
                    slot: slot.to_string(),
                })
            }
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(false),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}
