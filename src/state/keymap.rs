//! Key maps across a switch: copying a map's pairs between NEW's and OLD's state schemas (the
//! reverse stream resolves integers to original keys on OLD), and the statement that registers
//! the pair of a row born on NEW.
//!
//! Must never change a pair that exists: copies and registrations only add.

use std::collections::HashMap;

use tokio_postgres::Client;

use super::{StateError, StateSchema};

/// Pairs copied per round trip.
const BATCH: i64 = 10_000;

impl StateSchema {
    /// Statement: register `($1 map, $2 original key, $3 integer)`, born on NEW.
    pub fn register_key(&self) -> String {
        format!("SELECT {}.keymap_register($1, $2, $3)", self.quoted)
    }

    /// Copy the pairs of `maps` from `from` to `to` (same state schema name on both), per map
    /// those with an integer above `after[map]` (all when absent), `born_only`: only pairs
    /// born on NEW. Returns the highest integer copied per map (for a later delta) and the
    /// number of pairs. Memory: one batch of pairs.
    pub async fn copy_keymaps(
        &self,
        from: &Client,
        to: &Client,
        maps: &[String],
        after: &HashMap<String, i64>,
        born_only: bool,
    ) -> Result<(HashMap<String, i64>, u64), StateError> {
        let mut high = after.clone();
        let mut n = 0u64;
        let read = format!(
            "SELECT old, new FROM {} WHERE map = $1 AND new > $2 AND (born_on_new OR NOT $3) \
             ORDER BY new LIMIT {BATCH}",
            self.table("keymap")
        );
        let write = format!(
            "INSERT INTO {} (map, old, new, born_on_new) \
             SELECT $1, o, n, $4 FROM unnest($2::text[], $3::bigint[]) AS u(o, n) \
             ON CONFLICT (map, old) DO NOTHING",
            self.table("keymap")
        );
        for map in maps {
            let mut last = after.get(map).copied().unwrap_or(i64::MIN);
            loop {
                let rows = from
                    .query(&read, &[map, &last, &born_only])
                    .await
                    .map_err(self.err("reading key map pairs"))?;
                if rows.is_empty() {
                    break;
                }
                let olds: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
                let news: Vec<i64> = rows.iter().map(|r| r.get(1)).collect();
                last = news.iter().copied().max().unwrap_or(last);
                to.execute(&write, &[map, &olds, &news, &born_only])
                    .await
                    .map_err(self.err("writing key map pairs"))?;
                n += rows.len() as u64;
            }
            high.insert(map.clone(), last);
        }
        Ok((high, n))
    }
}
