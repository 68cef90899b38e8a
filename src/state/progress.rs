//! `<schema>.progress`: per slot, the end LSN of the last source commit applied, with its commit
//! time. Written in the same target transaction as the data it stands for (the stream's
//! commit), or once when a slot is claimed; read at start to resume.
//!
//! Must never move progress outside the transaction that earned it.

use tokio_postgres::Client;

use super::{Progress, StateError, StateSchema};
use crate::lsn::Lsn;

impl StateSchema {
    /// Statement: record `$2` (an LSN as text) and `$3` (commit time, Unix seconds) as applied
    /// for slot `$1`.
    ///
    /// `$4` (a JSON object, source table → LSN) names the tables the transaction wrote
    /// without recording versions (ADR 0012), with the newest such write: kept in
    /// `<schema>.plain_writes`, so `verify --since` knows what the ledger cannot list.
    pub fn record_progress(&self) -> String {
        format!(
            "WITH w AS (
               INSERT INTO {plain} AS w (rel, lsn)
               SELECT key, value::pg_lsn FROM jsonb_each_text($4::text::jsonb)
               ON CONFLICT (rel) DO UPDATE SET lsn = GREATEST(w.lsn, EXCLUDED.lsn))
             INSERT INTO {progress} (slot, applied_lsn, commit_ts, updated_at)
             VALUES ($1, $2::text::pg_lsn, to_timestamp($3), now())
             ON CONFLICT (slot) DO UPDATE SET applied_lsn = EXCLUDED.applied_lsn,
                 commit_ts = EXCLUDED.commit_ts, updated_at = now()",
            plain = self.table("plain_writes"),
            progress = self.table("progress")
        )
    }

    /// Statement: the newest write of `$1` the stream made without recording its version.
    pub fn last_plain_write(&self) -> String {
        format!(
            "SELECT lsn::text FROM {} WHERE rel = $1",
            self.table("plain_writes")
        )
    }

    /// Record that remodel streams from `slot`, starting at `lsn`, unless it already does: a
    /// progress row exists from the moment the slot does, so a slot that later disappears
    /// while the row exists was lost, not never created.
    pub async fn claim_slot(
        &self,
        client: &Client,
        slot: &str,
        lsn: Lsn,
    ) -> Result<(), StateError> {
        client
            .execute(
                &format!(
                    "INSERT INTO {} (slot, applied_lsn, updated_at) VALUES ($1, $2::text::pg_lsn, now()) \
                     ON CONFLICT (slot) DO NOTHING",
                    self.table("progress")
                ),
                &[&slot, &lsn.to_string()],
            )
            .await
            .map_err(self.err("recording the slot's start"))?;
        Ok(())
    }

    /// Start `slot`'s progress over at `lsn`: a new slot of the same name (the reverse
    /// stream's, created at each cutover) streams from there, whatever an earlier one applied.
    pub async fn restart_progress(
        &self,
        client: &Client,
        slot: &str,
        lsn: Lsn,
    ) -> Result<(), StateError> {
        client
            .execute(
                &format!(
                    "INSERT INTO {} (slot, applied_lsn, updated_at) VALUES ($1, $2::text::pg_lsn, now()) \
                     ON CONFLICT (slot) DO UPDATE SET applied_lsn = EXCLUDED.applied_lsn, commit_ts = NULL, updated_at = now()",
                    self.table("progress")
                ),
                &[&slot, &lsn.to_string()],
            )
            .await
            .map_err(self.err("restarting a slot's progress"))?;
        Ok(())
    }

    /// The last source commit end LSN applied for `slot`, if any.
    pub async fn progress(
        &self,
        client: &Client,
        slot: &str,
    ) -> Result<Option<Progress>, StateError> {
        let row = client
            .query_opt(
                &format!(
                    "SELECT applied_lsn::text, extract(epoch from commit_ts)::float8, \
                     extract(epoch from updated_at)::float8 FROM {} WHERE slot = $1",
                    self.table("progress")
                ),
                &[&slot],
            )
            .await
            .map_err(self.err("reading progress"))?;
        Ok(row.map(|r| Progress {
            applied_lsn: r.get::<_, String>(0).parse().unwrap_or_default(),
            commit_ts_unix: r.get(1),
            updated_at_unix: r.get(2),
        }))
    }
}
