//! The stream's side of pass-scoped recording (ADR 0012, `state::recording`): which of its
//! writes record versions in the ledger. A row group of a plain 1→1 output whose source table
//! no pass reads, and that has no dead letters or deferred entries, is written with a plain
//! set-based statement (no ledger, no sort); everything else keeps the ledger guard.
//!
//! A writer without a [`Recording`] (repair, dead-letter retry, deferred resolution, which are
//! the passes) always records. Must never write plainly a table a running pass may write.

use std::time::{Duration, Instant};

use crate::lsn::Lsn;
use crate::state::{PassMark, Recording};
use crate::transform::plan::OutputKind;
use crate::transform::OutputPlan;

use super::{db, ApplyError, Writer};

/// How often the stream asks which recorded passes ended.
const REFRESH: Duration = Duration::from_secs(1);

/// Ledger entries deleted per step of pruning a table no pass reads any more (one statement
/// between target transactions, so the stream never waits long for it).
const PRUNE_BATCH: i64 = 5_000;
/// How often a pruning batch may run; also the idle loop's tick while anything is watched.
pub(super) const PRUNE_EVERY: Duration = Duration::from_millis(200);

/// The writer's recording state (the stream's writer only).
pub(super) struct Recorded {
    pub(super) recording: Recording,
    pub(super) refreshed: Instant,
    /// Every mapped source table (what a pass of all tables read).
    tables: Vec<String>,
    /// Tables whose ledger entries are being pruned (their last pass ended).
    prune: std::collections::BTreeSet<String>,
    pruned: Instant,
}

impl Writer {
    /// Write plainly what no pass needs recorded (the stream loop's writer), starting from
    /// `recording` as stored.
    /// `tables`: every mapped source table.
    pub fn record_for_passes(&mut self, recording: Recording, tables: Vec<String>) {
        self.recorded = Some(Recorded {
            recording,
            refreshed: Instant::now(),
            tables,
            prune: Default::default(),
            pruned: Instant::now(),
        });
    }

    /// Whether passes are being recorded for (their end is to be watched).
    pub(super) fn records_for_passes(&self) -> bool {
        self.recorded
            .as_ref()
            .is_some_and(|r| !r.recording.owners().is_empty() || !r.prune.is_empty())
    }

    /// Whether a row group of `o` is written without recording versions.
    pub(super) fn plain(&self, o: &OutputPlan) -> bool {
        matches!(o.kind, OutputKind::Row)
            && self
                .recorded
                .as_ref()
                .is_some_and(|r| !r.recording.records(&o.source))
    }

    /// Note a plain row group of `rel` (its newest version), for the transaction's progress.
    pub(super) fn note_plain(&mut self, rel: &str, rows: &crate::apply::batch::GuardedRows) {
        let newest = rows.iter().map(|r| r.0.version).max().unwrap_or_default();
        if let Some(t) = self.txn.as_mut() {
            let e = t.plain.entry(rel.to_string()).or_default();
            *e = (*e).max(newest);
        }
    }

    /// The tables this transaction wrote plainly, as the progress statement's JSON (`{}`).
    pub(super) fn take_plain_writes(&mut self) -> String {
        let plain = self
            .txn
            .as_mut()
            .map(|t| std::mem::take(&mut t.plain))
            .unwrap_or_default();
        let m: serde_json::Map<String, serde_json::Value> = plain
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v.to_string())))
            .collect();
        serde_json::Value::Object(m).to_string()
    }

    /// Record `rel` for the rest of the run (it has dead letters or deferred entries now).
    pub(super) fn stick(&mut self, rel: &str) {
        if let Some(r) = self.recorded.as_mut() {
            if r.recording.stick(rel) {
                tracing::info!(table = %rel, "recording versions of this table for the rest of the run (dead letters or deferred rows)");
            }
        }
    }

    /// A pass's mark, applied in the open target transaction at its position in the stream:
    /// recorded from here on (and stored, with the transaction's progress).
    pub async fn start_pass(&mut self, mark: &PassMark, lsn: Lsn) -> Result<(), ApplyError> {
        let Some(r) = self.recorded.as_mut() else {
            return Ok(());
        };
        r.recording.start(mark);
        tracing::info!(owner = %mark.owner, tables = ?mark.tables, %lsn, "a pass started: recording versions for its tables");
        let sql = self.state.record_pass();
        self.client
            .execute(
                &sql,
                &[&mark.owner, &mark.slot, &mark.tables, &lsn.to_string()],
            )
            .await
            .map_err(db("storing a pass the stream records for"))?;
        Ok(())
    }

    /// Between target transactions, at most every [`REFRESH`]: end the recording of passes no
    /// session runs any more.
    /// Also one step of pruning, if one is due.
    pub async fn end_finished_passes(&mut self) -> Result<(), ApplyError> {
        self.prune_step().await?;
        let Some(r) = self.recorded.as_mut() else {
            return Ok(());
        };
        let owners = r.recording.owners();
        if owners.is_empty() || r.refreshed.elapsed() < REFRESH {
            return Ok(());
        }
        r.refreshed = Instant::now();
        let ended = self
            .state
            .end_finished_passes(&self.client, &owners)
            .await?;
        if ended.is_empty() {
            return Ok(());
        }
        // What the ended passes left in the dead letters or deferred entries (a backfill
        // chunk's rows the mapping refused) was committed before their locks went: those
        // tables stay recorded.
        let sticky = self.state.load_recording(&self.client, "").await?;
        if let Some(r) = self.recorded.as_mut() {
            r.recording.stick_all(&sticky);
            let mut read = Vec::new();
            for owner in ended {
                tracing::info!(%owner, "a pass ended: its tables are written without recording versions again");
                match r.recording.tables_of(&owner) {
                    Some(Some(t)) => read.extend(t),
                    Some(None) => read.extend(r.tables.iter().cloned()),
                    None => {}
                }
                r.recording.end(&owner);
            }
            // Their entries serve no reader now (a later one needs only versions after its own
            // mark): pruned, a batch at a time.
            for t in read {
                if !r.recording.records(&t) {
                    r.prune.insert(t);
                }
            }
        }
        Ok(())
    }

    /// One batch of pruning: the ledger entries of a table whose last pass ended. A table a
    /// pass records again keeps them (they are older than that pass's mark, and harmless).
    async fn prune_step(&mut self) -> Result<(), ApplyError> {
        let Some(r) = self.recorded.as_mut() else {
            return Ok(());
        };
        let Some(table) = r.prune.first().cloned() else {
            return Ok(());
        };
        // At most one batch per PRUNE_EVERY, so a busy stream's commits rarely wait for one.
        if r.pruned.elapsed() < PRUNE_EVERY {
            return Ok(());
        }
        r.pruned = Instant::now();
        if r.recording.records(&table) {
            r.prune.remove(&table);
            return Ok(());
        }
        let n = self
            .client
            .execute(&self.state.prune_unrecorded(), &[&table, &PRUNE_BATCH])
            .await
            .map_err(db("pruning the version ledger of a table no pass reads"))?;
        if (n as i64) < PRUNE_BATCH {
            if let Some(r) = self.recorded.as_mut() {
                r.prune.remove(&table);
            }
            tracing::debug!(%table, "ledger entries pruned: no pass reads the table");
        }
        Ok(())
    }
}
