//! Pass-scoped version recording (ADR 0012): which source tables the stream records per-key
//! versions for. Outside a pass, exactly-once progress makes every stream write happen once,
//! in commit order, so the ledger is needed only by a snapshot reader (a backfill pass, a
//! verification, a repair) that writes or judges rows as of an older snapshot.
//!
//! ```text
//!  reader: lock 'remodel-pass:<owner>' ─▶ pg_logical_emit_message(true, 'remodel.pass', mark) ─▶ snapshot P
//!  stream: ... plain ... │ mark (commit order, < P) │ recorded: every commit ≥ mark ... │ lock gone │ plain
//! ```
//!
//! - A reader announces itself in-band, in its own source transaction, before its snapshot:
//!   the stream applies the mark before any commit at or after P, so every write a reader must
//!   not overwrite (or resurrect) is recorded. The mark is stored in `<schema>.recording` in the
//!   same target transaction that carries the stream's progress past it, so a restart resumes
//!   recording (or re-reads the mark).
//! - Recording ends out of band, once the reader's advisory lock is held by no session (the
//!   reader and every connection it writes through hold it): nothing it could still write.
//! - A table with dead letters (`dead-letters --retry` writes at a letter's old version) or
//!   deferred entries (their resolution reads a snapshot) is recorded for as long as the stream
//!   runs, and again after a restart while they exist.
//!
//! Must never end recording for a reader that may still write.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use super::{StateError, StateSchema};
use crate::lsn::Lsn;

/// The prefix of a pass's logical message on the source.
pub const PASS_PREFIX: &str = "remodel.pass";

/// A snapshot reader's announcement: the slot whose stream must record, the reader (its lock
/// is `hashtextextended('remodel-pass:' || owner, 0)`), and its tables (None: all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassMark {
    pub slot: String,
    pub owner: String,
    pub tables: Option<Vec<String>>,
}

impl PassMark {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
    pub fn decode(content: &[u8]) -> Result<PassMark, String> {
        serde_json::from_slice(content).map_err(|e| format!("a malformed pass mark: {e}"))
    }
}

/// The stream's view: the readers it records for, and the tables it records for regardless.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    passes: BTreeMap<String, Option<Vec<String>>>,
    sticky: BTreeSet<String>,
}

impl Recording {
    /// Whether the stream records versions for writes to source table `rel`.
    pub fn records(&self, rel: &str) -> bool {
        self.sticky.contains(rel)
            || self
                .passes
                .values()
                .any(|t| t.as_ref().is_none_or(|t| t.iter().any(|x| x == rel)))
    }
    pub fn start(&mut self, mark: &PassMark) {
        self.passes.insert(mark.owner.clone(), mark.tables.clone());
    }
    pub fn end(&mut self, owner: &str) {
        self.passes.remove(owner);
    }
    /// Record `rel` for the rest of the run.
    pub fn stick(&mut self, rel: &str) -> bool {
        self.sticky.insert(rel.to_string())
    }
    /// The tables reader `owner` reads (None: all), if the stream records for it.
    pub fn tables_of(&self, owner: &str) -> Option<Option<Vec<String>>> {
        self.passes.get(owner).cloned()
    }
    /// Also record what `other` records regardless (its sticky tables).
    pub fn stick_all(&mut self, other: &Recording) {
        self.sticky.extend(other.sticky.iter().cloned());
    }
    pub fn owners(&self) -> Vec<String> {
        self.passes.keys().cloned().collect()
    }
    pub fn is_empty(&self) -> bool {
        self.passes.is_empty() && self.sticky.is_empty()
    }
}

/// SQL: whether reader `owner` (an SQL text expression) is running: a session holds its lock.
pub(super) fn pass_running(owner: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM pg_locks l
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND ((l.classid::int8 << 32) | l.objid::int8)
                       = hashtextextended('remodel-pass:' || {owner}, 0))"
    )
}

impl StateSchema {
    /// Statement: the stream applied mark (`$1` owner, `$2` slot, `$3` tables or NULL, `$4`
    /// the mark's commit LSN as text); in the transaction that carries its progress.
    pub fn record_pass(&self) -> String {
        format!(
            "INSERT INTO {} (owner, slot, tables, since) VALUES ($1, $2, $3, $4::text::pg_lsn)
             ON CONFLICT (owner) DO NOTHING",
            self.table("recording")
        )
    }

    /// What the stream of `slot` records, as stored: the readers whose marks it applied, and
    /// the tables holding dead letters or deferred entries.
    pub async fn load_recording(
        &self,
        client: &Client,
        slot: &str,
    ) -> Result<Recording, StateError> {
        let mut r = Recording::default();
        for row in client
            .query(
                &format!(
                    "SELECT owner, tables FROM {} WHERE slot = $1",
                    self.table("recording")
                ),
                &[&slot],
            )
            .await
            .map_err(self.err("reading the passes the stream records for"))?
        {
            r.passes.insert(row.get(0), row.get(1));
        }
        for row in client
            .query(
                &format!(
                    "SELECT rel FROM {} UNION SELECT rel FROM {}",
                    self.table("dead_letters"),
                    self.table("deferred")
                ),
                &[],
            )
            .await
            .map_err(self.err("reading the tables with dead letters or deferred entries"))?
        {
            r.sticky.insert(row.get(0));
        }
        Ok(r)
    }

    /// Of `owners`, the readers no session holds the lock of any more: they write nothing
    /// more. Their rows are deleted.
    pub async fn end_finished_passes(
        &self,
        client: &Client,
        owners: &[String],
    ) -> Result<Vec<String>, StateError> {
        let rows = client
            .query(
                &format!(
                    "DELETE FROM {} r WHERE r.owner = ANY($1) AND NOT {} RETURNING r.owner",
                    self.table("recording"),
                    pass_running("r.owner")
                ),
                &[&owners],
            )
            .await
            .map_err(self.err("ending the recording of finished passes"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Statement: delete up to `$2` ledger entries of table `$1`, which no reader needs any
    /// more (no pass records it, it has no dead letters or deferred entries); returns how many.
    pub fn prune_unrecorded(&self) -> String {
        format!(
            "DELETE FROM {l} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {l} WHERE rel = $1 LIMIT $2))",
            l = self.table("ledger")
        )
    }

    /// Announce a reader on the source (its own transaction, before its snapshot): the stream
    /// records versions from the returned position on. A slot still being created (no
    /// consistent point yet) would never stream the mark: wait for it first (up to a minute).
    pub async fn announce_pass(&self, source: &Client, mark: &PassMark) -> Result<Lsn, StateError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let creating: Option<bool> = source
                .query_opt(
                    "SELECT confirmed_flush_lsn IS NULL FROM pg_replication_slots WHERE slot_name = $1",
                    &[&mark.slot],
                )
                .await
                .map_err(self.err("reading the stream's slot"))?
                .map(|r| r.get(0));
            if creating != Some(true) {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(StateError::SlotNotReady {
                    slot: mark.slot.clone(),
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let lsn: String = source
            .query_one(
                "SELECT pg_logical_emit_message(true, $1, $2)::text",
                &[&PASS_PREFIX, &mark.encode()],
            )
            .await
            .map_err(self.err("announcing the pass on the source"))?
            .get(0);
        Ok(lsn.parse().unwrap_or_default())
    }

    /// Hold reader `owner`'s lock on `client` too (a connection it writes through), shared:
    /// the stream keeps recording while any of them lives.
    pub async fn hold_pass(&self, client: &Client, owner: &str) -> Result<(), StateError> {
        client
            .execute(
                "SELECT pg_advisory_lock_shared(hashtextextended('remodel-pass:' || $1, 0))",
                &[&owner],
            )
            .await
            .map_err(self.err("marking the pass as running"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_is_recorded_while_a_pass_names_it_or_it_is_sticky() {
        let mut r = Recording::default();
        assert!(!r.records("public.a"));
        let mark = PassMark {
            slot: "s".into(),
            owner: "o1".into(),
            tables: Some(vec!["public.a".into()]),
        };
        r.start(&mark);
        assert!(r.records("public.a") && !r.records("public.b"));
        r.start(&PassMark {
            owner: "o2".into(),
            tables: None,
            ..mark.clone()
        });
        assert!(r.records("public.b"));
        r.end("o2");
        assert!(!r.records("public.b"));
        r.stick("public.b");
        r.end("o1");
        assert!(!r.records("public.a") && r.records("public.b"));
        assert_eq!(
            PassMark::decode(mark.encode().as_bytes()).as_ref(),
            Ok(&mark)
        );
        assert!(PassMark::decode(b"{").is_err());
    }
}
