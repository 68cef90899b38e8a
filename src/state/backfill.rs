//! `<schema>.backfill_tables` (per source table: state, cursor, counts) and
//! `<schema>.backfill_passes` (snapshot readers — backfill passes, verifications, repairs,
//! resolution rounds — with the lower bound of their snapshot): every statement on them, and
//! the pruning of tombstones that no running reader can need.
//!
//! Must never move a cursor outside the target transaction that wrote its chunk.

use super::StateSchema;

impl StateSchema {
    /// Statement: register table `$1` for backfill with its row estimate `$2` (kept state and
    /// cursor when it is already registered).
    pub fn register_backfill_table(&self) -> String {
        format!(
            "INSERT INTO {} (rel, rows_estimate) VALUES ($1, $2)
             ON CONFLICT (rel) DO UPDATE SET rows_estimate = EXCLUDED.rows_estimate",
            self.table("backfill_tables")
        )
    }

    /// Statement: the tables whose backfill is not done, by name.
    pub fn pending_backfill_tables(&self) -> String {
        format!(
            "SELECT rel FROM {} WHERE state <> 'done' ORDER BY rel",
            self.table("backfill_tables")
        )
    }

    /// Statement: table `$1`'s cursor (JSON text of the last key copied, or NULL) and state.
    pub fn backfill_cursor(&self) -> String {
        format!(
            "SELECT cursor, state FROM {} WHERE rel = $1",
            self.table("backfill_tables")
        )
    }

    /// Statement: record a chunk of table `$1`: cursor `$2` (JSON text of the last key), `$3`
    /// rows, `$4` whether the table is done.
    pub fn advance_backfill(&self) -> String {
        format!(
            "UPDATE {} SET cursor = $2, rows_copied = rows_copied + $3, chunks = chunks + 1,
                    state = CASE WHEN $4 THEN 'done' ELSE 'copying' END,
                    started_at = COALESCE(started_at, now()), updated_at = now()
             WHERE rel = $1",
            self.table("backfill_tables")
        )
    }

    /// Statement: per table, rows copied, the estimate (0 when unknown) and whether it is done.
    pub fn backfill_counts(&self) -> String {
        format!(
            "SELECT rel, rows_copied, COALESCE(rows_estimate, 0), state = 'done' FROM {}",
            self.table("backfill_tables")
        )
    }

    /// Statement: per table, state, rows copied, estimate and chunks, by name (`remodel status`).
    pub fn backfill_status(&self) -> String {
        format!(
            "SELECT rel, state, rows_copied, rows_estimate, chunks FROM {} ORDER BY rel",
            self.table("backfill_tables")
        )
    }

    /// Statement: whether table `$1`'s backfill is registered and not done (no row: not
    /// registered).
    pub fn backfill_running(&self) -> String {
        format!(
            "SELECT state <> 'done' FROM {} WHERE rel = $1",
            self.table("backfill_tables")
        )
    }

    /// Fragment: table `$1`'s backfill is registered and not done.
    pub fn backfill_unfinished(&self) -> String {
        format!(
            "EXISTS (SELECT 1 FROM {} b WHERE b.rel = $1 AND b.state <> 'done')",
            self.table("backfill_tables")
        )
    }

    /// Fragment: table `$1` has no backfill registered.
    pub fn backfill_unregistered(&self) -> String {
        format!(
            "NOT EXISTS (SELECT 1 FROM {} b WHERE b.rel = $1)",
            self.table("backfill_tables")
        )
    }

    /// Statement: set pass `$1`'s version to its snapshot `$2` (text).
    pub fn set_pass_version(&self) -> String {
        format!(
            "UPDATE {} SET version = $2::text::pg_lsn WHERE id = $1",
            self.table("backfill_passes")
        )
    }

    /// Statement: mark pass `$1` finished.
    pub fn finish_pass(&self) -> String {
        format!(
            "UPDATE {} SET finished_at = now() WHERE id = $1",
            self.table("backfill_passes")
        )
    }

    /// Statement: delete the tombstones no reader can need. A tombstone only stops a pass whose
    /// P is ≤ its version; later passes have a larger P. Kept: what a pass still running (in any
    /// process: its advisory lock is held) may need, and what an older dead letter of the key
    /// needs (`dead-letters --retry` writes at the letter's version, and only the tombstone
    /// stops it resurrecting a deleted row).
    pub fn prune_tombstones(&self) -> String {
        format!(
            "DELETE FROM {ledger} t WHERE deleted
             AND NOT EXISTS (SELECT 1 FROM {dead} d
                             WHERE d.rel = t.rel AND d.skey = t.skey AND d.version < t.version)
             AND version < COALESCE(
                 (SELECT min(p.version) FROM {passes} p
                  WHERE p.finished_at IS NULL AND EXISTS (
                      SELECT 1 FROM pg_locks l
                      WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                        AND ((l.classid::int8 << 32) | l.objid::int8)
                            = hashtextextended('remodel-pass:' || p.owner, 0))),
                 (SELECT max(version) FROM {passes}))",
            ledger = self.table("ledger"),
            passes = self.table("backfill_passes"),
            dead = self.table("dead_letters"),
        )
    }
}
