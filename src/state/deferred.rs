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
}
