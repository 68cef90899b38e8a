//! The version rule, spelled once: `<schema>.ledger` (per source key, the newest version written
//! to the target and whether it was a removal) and `<schema>.truncations` (per source table, the
//! newest TRUNCATE). Every statement and SQL fragment that reads or writes them is here; the
//! stream's writer, the backfill's merges, verification and repair compose these fragments with
//! their own SQL on the user's tables.
//!
//! The rule: a write of a source key at version V takes effect only if the ledger holds nothing
//! newer for the key and no TRUNCATE of its table is newer; a stream write records V (a removal,
//! a tombstone), a backfill row written from a snapshot at P stands for P−1 and records nothing
//! unless a deferred entry older than P is folded into it. Parameters follow one convention:
//! `$1` is the source table's name, `$2` (where a position is compared) the position as text.
//!
//! Must never touch a user table, and never decide whether to write: it only says what wins.

use super::StateSchema;

impl StateSchema {
    /// `guard AS (...)`: record each row of `input` (columns `skey`, `ver`) at its version
    /// where that wins (the ledger holds nothing newer for the key, no TRUNCATE of the table is
    /// newer), one per key (the newest), with `deleted` (an SQL boolean over `i`) as its
    /// tombstone flag; returns the keys that passed (`skey`). `input` is a FROM item aliased `i`.
    pub fn guard_cte(&self, input: &str, deleted: &str) -> String {
        format!(
            "guard AS (
               INSERT INTO {ledger} AS l (rel, skey, version, deleted)
               SELECT DISTINCT ON (i.skey) $1, i.skey, i.ver::pg_lsn, {deleted} FROM {input}
               WHERE i.ver::pg_lsn >= COALESCE(
                   (SELECT tr.version FROM {trunc} tr WHERE tr.rel = $1), '0/0'::pg_lsn)
               ORDER BY i.skey, i.ver::pg_lsn DESC
               ON CONFLICT (rel, skey) DO UPDATE
                 SET version = EXCLUDED.version, deleted = EXCLUDED.deleted
                 WHERE l.version <= EXCLUDED.version
               RETURNING l.skey)",
            ledger = self.table("ledger"),
            trunc = self.table("truncations"),
        )
    }

    /// `allowed AS (...)`: the rows of `input i` (columns `skey`, `ver`, ...) whose version
    /// wins, one per key (the newest), without recording anything yet (a partial update
    /// records only the rows it found: [`StateSchema::record_versions_cte`]).
    pub fn allowed_cte(&self) -> String {
        format!(
            "allowed AS (
               SELECT DISTINCT ON (i.skey) i.* FROM input i
               WHERE i.ver::pg_lsn >= COALESCE(
                   (SELECT tr.version FROM {trunc} tr WHERE tr.rel = $1), '0/0'::pg_lsn)
                 AND NOT EXISTS (SELECT 1 FROM {ledger} l
                                 WHERE l.rel = $1 AND l.skey = i.skey AND l.version > i.ver::pg_lsn)
               ORDER BY i.skey, i.ver::pg_lsn DESC)",
            ledger = self.table("ledger"),
            trunc = self.table("truncations"),
        )
    }

    /// `<name> AS (...)`: record the rows of `select` (giving `skey`, `version`) as written
    /// (not removed), where the ledger holds nothing newer.
    pub fn record_versions_cte(&self, name: &str, select: &str) -> String {
        format!(
            "{name} AS (
               INSERT INTO {ledger} AS l (rel, skey, version, deleted)
               SELECT $1, r.skey, r.version, false FROM ({select}) r
               ON CONFLICT (rel, skey) DO UPDATE SET version = EXCLUDED.version, deleted = false
                 WHERE l.version <= EXCLUDED.version)",
            ledger = self.table("ledger"),
        )
    }

    /// `<name> AS (...)`: record the keys of `select` (giving `skey`) at `$2`−1 — a row just
    /// written from a snapshot at `$2` — where the ledger holds something older (or nothing).
    pub fn record_snapshot_cte(&self, name: &str, select: &str) -> String {
        format!(
            "{name} AS (
               INSERT INTO {ledger} AS l (rel, skey, version, deleted)
               SELECT $1, r.skey, $2::text::pg_lsn - 1, false FROM ({select}) r
               ON CONFLICT (rel, skey) DO UPDATE SET version = EXCLUDED.version, deleted = false
                 WHERE l.version < EXCLUDED.version)",
            ledger = self.table("ledger"),
        )
    }

    /// Fragment: the ledger holds a version of key `skey` (an SQL expression) newer than
    /// `version` (an SQL pg_lsn expression).
    pub fn key_newer_than(&self, skey: &str, version: &str) -> String {
        format!(
            "EXISTS (SELECT 1 FROM {} l WHERE l.rel = $1 AND l.skey = {skey} AND l.version > {version})",
            self.table("ledger")
        )
    }

    /// Fragment: the ledger holds a version of key `skey` at or after `$2`.
    pub fn key_since(&self, skey: &str) -> String {
        format!(
            "EXISTS (SELECT 1 FROM {} l WHERE l.rel = $1 AND l.skey = {skey} AND l.version >= $2::text::pg_lsn)",
            self.table("ledger")
        )
    }

    /// Fragment: the ledger holds any version of key `skey`.
    pub fn key_known(&self, skey: &str) -> String {
        format!(
            "EXISTS (SELECT 1 FROM {} l WHERE l.rel = $1 AND l.skey = {skey})",
            self.table("ledger")
        )
    }

    /// Fragment: a TRUNCATE of the table is newer than `version` (an SQL pg_lsn expression).
    pub fn truncated_after(&self, version: &str) -> String {
        format!(
            "EXISTS (SELECT 1 FROM {} tr WHERE tr.rel = $1 AND tr.version > {version})",
            self.table("truncations")
        )
    }

    /// Fragment: a TRUNCATE of the table at or after `$2`.
    pub fn truncated_since(&self) -> String {
        format!(
            "EXISTS (SELECT 1 FROM {} tr WHERE tr.rel = $1 AND tr.version >= $2::text::pg_lsn)",
            self.table("truncations")
        )
    }

    /// Fragment: a row of key `skey` read at snapshot `$2` may be written (as of `$2`−1): the
    /// ledger holds nothing of the key at or after `$2`, and no TRUNCATE of the table is. With
    /// `skey` None only the TRUNCATE is checked (the caller knows nothing of the table is newer).
    pub fn writable_from_snapshot(&self, skey: Option<&str>) -> String {
        match skey {
            Some(k) => format!(
                "NOT {} AND NOT {}",
                self.key_since(k),
                self.truncated_since()
            ),
            None => format!("NOT {}", self.truncated_since()),
        }
    }

    /// Statement: whether the table has a TRUNCATE at or after `$2`.
    pub fn any_truncation_since(&self) -> String {
        format!("SELECT {}", self.truncated_since())
    }

    /// Statement: whether the ledger holds anything of the table at or after `$2`.
    pub fn any_since(&self) -> String {
        format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE rel = $1 AND version >= $2::text::pg_lsn)",
            self.table("ledger")
        )
    }

    /// Statement: whether the ledger holds anything of the table newer than `$2` (a replayed
    /// TRUNCATE is older than what the stream already wrote after it).
    pub fn any_newer(&self) -> String {
        format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE rel = $1 AND version > $2::text::pg_lsn)",
            self.table("ledger")
        )
    }

    /// Statement: a TRUNCATE of the table at `$2`: its table-wide version, and the end of the
    /// older per-key versions and deferred entries it makes meaningless.
    pub fn record_truncation(&self) -> String {
        format!(
            "WITH t AS (INSERT INTO {trunc} AS tr (rel, version) VALUES ($1, $2::text::pg_lsn)
                        ON CONFLICT (rel) DO UPDATE SET version = GREATEST(tr.version, EXCLUDED.version)),
                  d AS (DELETE FROM {deferred} WHERE rel = $1 AND version < $2::text::pg_lsn)
             DELETE FROM {ledger} WHERE rel = $1 AND version < $2::text::pg_lsn",
            trunc = self.table("truncations"),
            deferred = self.table("deferred"),
            ledger = self.table("ledger"),
        )
    }

    /// Statement: the keys of the table the stream wrote at or after `$2`, oldest first, at
    /// most `$3` (backfilled rows have no entry).
    pub fn keys_since(&self) -> String {
        format!(
            "SELECT skey FROM {} WHERE rel = $1 AND version >= $2::text::pg_lsn ORDER BY version LIMIT $3",
            self.table("ledger")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_name_the_schema_and_follow_the_parameter_convention() {
        let s = StateSchema::new("mig");
        let g = s.guard_cte("input i", "true");
        assert!(g.contains(&s.table("ledger")) && g.contains(&s.table("truncations")));
        assert!(g.contains("WHERE l.version <= EXCLUDED.version"));
        assert!(s
            .key_since("s.skey")
            .contains("l.version >= $2::text::pg_lsn"));
        assert!(s.any_newer().contains("version > $2"));
        assert!(s.any_since().contains("version >= $2"));
    }
}
