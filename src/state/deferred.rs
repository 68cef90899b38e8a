//! `<schema>.deferred`: partial updates (unchanged TOAST) of rows the target did not have when
//! the stream applied them. Written by apply's partial-update statement; ended by apply's
//! removals of their keys (a delete, a merge's clear: entries at or before its version) and by
//! TRUNCATE (older entries), and folded in (and removed when settled) by one statement that a
//! backfill chunk and a resolution round (`verify::deferred`) share,
//! `backfill::sql::TableSql::merge_deferred*`. This file holds what the resolution asks of the
//! table: what is outstanding, for which tables, and how old.
//!
//! Must never write: entries are created and removed by those statements only.

use tokio_postgres::Client;

use super::{StateError, StateSchema};
use crate::lsn::Lsn;

/// One outstanding entry: source table, source key (JSON array of its text values, as the
/// ledger keys it), the target table it is for, and its version.
#[derive(Debug, Clone, PartialEq)]
pub struct DeferredEntry {
    pub rel: String,
    pub skey: String,
    pub target: String,
    pub version: Lsn,
}

/// What is outstanding: how many entries, and the oldest one's age (0 when none).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct DeferredSummary {
    pub rows: i64,
    pub oldest_seconds: f64,
}

impl StateSchema {
    /// Count and age of the outstanding entries.
    pub async fn deferred_summary(&self, client: &Client) -> Result<DeferredSummary, StateError> {
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*), COALESCE(extract(epoch FROM now() - min(created_at))::float8, 0)
                     FROM {}",
                    self.table("deferred")
                ),
                &[],
            )
            .await
            .map_err(self.err("counting deferred updates"))?;
        Ok(DeferredSummary {
            rows: row.get(0),
            oldest_seconds: row.get::<_, f64>(1).max(0.0),
        })
    }

    /// Up to `limit` outstanding entries for the (source table, target table) pairs of `rels`
    /// and `targets` (the plan's outputs that can have entries), oldest first.
    pub async fn deferred_entries(
        &self,
        client: &Client,
        rels: &[String],
        targets: &[String],
        limit: i64,
    ) -> Result<Vec<DeferredEntry>, StateError> {
        let rows = client
            .query(
                &format!(
                    "SELECT rel, skey, target, version::text
                     FROM {} WHERE (rel, target) IN (SELECT * FROM unnest($2::text[], $3::text[]))
                     ORDER BY created_at, rel, skey LIMIT $1",
                    self.table("deferred")
                ),
                &[&limit, &rels, &targets],
            )
            .await
            .map_err(self.err("listing deferred updates"))?;
        Ok(rows
            .iter()
            .map(|r| DeferredEntry {
                rel: r.get(0),
                skey: r.get(1),
                target: r.get(2),
                version: r.get::<_, String>(3).parse().unwrap_or_default(),
            })
            .collect())
    }

    /// Outstanding entries per (source table, target table) pair that is not one of `rels` /
    /// `targets` (a mapping that no longer writes that target from that table): nothing
    /// resolves those.
    pub async fn deferred_unmapped(
        &self,
        client: &Client,
        rels: &[String],
        targets: &[String],
    ) -> Result<Vec<(String, String, i64)>, StateError> {
        let rows = client
            .query(
                &format!(
                    "SELECT rel, target, count(*) FROM {}
                     WHERE (rel, target) NOT IN (SELECT * FROM unnest($1::text[], $2::text[]))
                     GROUP BY rel, target ORDER BY rel, target",
                    self.table("deferred")
                ),
                &[&rels, &targets],
            )
            .await
            .map_err(self.err("listing deferred updates"))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// `def AS (...)`: keep the present values (`json`, a jsonb expression over `a`) of the rows
    /// of `allowed a` that the update did not find (`found` gives their keys), for output
    /// `target_lit` (an SQL literal), merged into an entry the key already has for it; returns
    /// their keys. An entry from before a removal of the key was ended by that removal
    /// ([`StateSchema::undefer_cte`]), so merging keeps only values of the row as it is now.
    pub fn defer_cte(&self, target_lit: &str, json: &str) -> String {
        format!(
            "def AS (
               INSERT INTO {deferred} AS d (rel, skey, version, target, columns)
               SELECT $1, a.skey, a.ver::pg_lsn, {target_lit}, {json}
               FROM allowed a WHERE a.skey NOT IN (SELECT skey FROM found)
               ON CONFLICT (rel, skey, target) DO UPDATE
                 SET version = EXCLUDED.version, columns = d.columns || EXCLUDED.columns
                 WHERE d.version <= EXCLUDED.version
               RETURNING d.skey)",
            deferred = self.table("deferred"),
        )
    }

    /// `undefer AS (...)`: a removal's end of its keys' entries for output `target_lit` at or
    /// before its version, for the rows of `input i` that passed `guard g`: the row they would
    /// complete is gone.
    pub fn undefer_cte(&self, target_lit: &str) -> String {
        format!(
            "undefer AS (DELETE FROM {deferred} d USING input i JOIN guard g ON g.skey = i.skey
                         WHERE d.rel = $1 AND d.skey = i.skey AND d.target = {target_lit}
                           AND d.version <= i.ver::pg_lsn)",
            deferred = self.table("deferred"),
        )
    }

    /// Statement: whether the table (`$1`) has outstanding entries.
    pub fn any_deferred(&self) -> String {
        format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE rel = $1)",
            self.table("deferred")
        )
    }

    /// Statement: whether a chunk of the table (`$1`) at snapshot `$2` must take the guarded
    /// path: something of the table is newer than the snapshot, deferred or truncated since.
    pub fn direct_blocked(&self) -> String {
        format!(
            "SELECT EXISTS (SELECT 1 FROM {ledger} WHERE rel = $1 AND version >= $2::text::pg_lsn)
                 OR EXISTS (SELECT 1 FROM {deferred} WHERE rel = $1)
                 OR EXISTS (SELECT 1 FROM {trunc} WHERE rel = $1 AND version >= $2::text::pg_lsn)",
            ledger = self.table("ledger"),
            deferred = self.table("deferred"),
            trunc = self.table("truncations"),
        )
    }

    /// Fragment: key `skey` (an SQL expression) of the table has an entry for output
    /// `target_lit`.
    pub fn key_deferred(&self, skey: &str, target_lit: &str) -> String {
        format!(
            "EXISTS (SELECT 1 FROM {} d WHERE d.rel = $1 AND d.skey = {skey} AND d.target = {target_lit})",
            self.table("deferred")
        )
    }

    /// Statement: fold the entries of the keys `staged` (a query giving `skey`) for output
    /// `target_lit` into the rows just written from a snapshot at `$2` (`$1` the source table).
    /// `update` applies `live` (columns `skey`, `version`, `columns`) to the target rows and
    /// returns the keys it found. Returns one row: how many entries went.
    ///
    /// Each entry ends in one of these ways, decided on the ledger and truncations as they
    /// were before this statement:
    /// - older than P: the snapshot row (just written at P−1, or skipped for a newer stream
    ///   write) already holds it: it goes, and P−1 is recorded for its key;
    /// - superseded: a ledger version or a TRUNCATE newer than the entry: it goes;
    /// - blocked: the key (or the table) has a version in [P, entry]: some stream write or
    ///   removal at ≥ P came first, so the row was not just written from the snapshot, and
    ///   whatever row the target holds may not carry this source row's unchanged values (a
    ///   removal and the update in one transaction; another output's write — a split's
    ///   children share the key's version; another source's row of a merge): it stays;
    /// - applied onto the row just written (its version recorded): it goes;
    /// - the row is not on the target after all: it stays.
    ///
    /// A kept entry waits for the daemon's resolution, which re-reads the whole row at a newer
    /// snapshot (`verify::deferred`). Nothing is dropped without being in a row.
    pub fn fold(&self, staged: &str, target_lit: &str, update: &str) -> String {
        let superseded = format!(
            "({} OR {})",
            self.key_newer_than("d.skey", "d.version"),
            self.truncated_after("d.version")
        );
        let blocked = format!(
            "({} OR {})",
            self.key_since("d.skey"),
            self.truncated_since()
        );
        format!(
            "WITH staged AS ({staged}),
             cand AS (SELECT d.skey, d.version, d.columns,
                             d.version < $2::text::pg_lsn AS older,
                             {superseded} AS superseded,
                             {blocked} AS blocked
                      FROM {deferred} d JOIN (SELECT DISTINCT skey FROM staged) s ON s.skey = d.skey
                      WHERE d.rel = $1 AND d.target = {target_lit}),
             live AS (SELECT c.skey, c.version, c.columns FROM cand c
                      WHERE NOT c.older AND NOT c.superseded AND NOT c.blocked),
             upd AS ({update}),
             {led},
             {older},
             gone AS (DELETE FROM {deferred} d USING cand c
                      WHERE d.rel = $1 AND d.target = {target_lit} AND d.skey = c.skey AND d.version = c.version
                        AND (c.older OR c.superseded OR c.skey IN (SELECT skey FROM upd))
                      RETURNING d.skey)
             SELECT count(*) FROM gone",
            deferred = self.table("deferred"),
            led = self.record_versions_cte(
                "led",
                "SELECT live.skey, live.version FROM live WHERE live.skey IN (SELECT skey FROM upd)"
            ),
            // An entry dropped as older than P is in the row just written at P−1, which has no
            // ledger row of its own: record P−1 for the key, so that a writer at an older
            // version (a round resolving that same entry from an older snapshot, a repair)
            // cannot overwrite the newer row. Rows whose ledger is newer stay as they are.
            older = self.record_snapshot_cte("older", "SELECT c.skey FROM cand c WHERE c.older"),
        )
    }
}
