//! Comparing source and target tables, and a seeded random writer.

use std::time::Duration;

use rand::{rngs::StdRng, Rng, SeedableRng};
use tokio_postgres::Client;

use super::{wait_until, TestDb};

pub async fn rows(c: &Client, sql: &str) -> Vec<String> {
    c.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
        .collect()
}

/// Wait until `source_sql` on the source returns what `target_sql` returns on the target.
pub async fn converge_with(
    db: &TestDb,
    source_sql: &str,
    target_sql: &str,
    deadline: Duration,
) -> Vec<String> {
    let (s, t) = (&db.source, &db.target);
    wait_until("target = transform(source)", deadline, || async move {
        let a = rows(s, source_sql).await;
        let b = rows(t, target_sql).await;
        if a == b {
            Ok(a)
        } else {
            Err(format!(
                "source {} rows, target {} rows; first difference: {:?}",
                a.len(),
                b.len(),
                a.iter().zip(&b).find(|(x, y)| x != y)
            ))
        }
    })
    .await
}

pub async fn converge(db: &TestDb, sql: &str) -> Vec<String> {
    converge_with(db, sql, sql, Duration::from_secs(60)).await
}

/// A seed from `REMODEL_SEED` or the clock; always printed so a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("REMODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{test}: seed {seed} (replay with REMODEL_SEED={seed})");
    seed
}

pub const ACCOUNTS_DDL: &str =
    "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text)";

/// `txns` random transactions on `accounts` (ids 1..=200): inserts, updates, deletes,
/// delete-then-reinsert, several rows each.
pub async fn random_writes(c: &Client, rng: &mut StdRng, txns: usize) {
    for _ in 0..txns {
        let mut sql = String::from("BEGIN;");
        for _ in 0..rng.gen_range(1..6) {
            let id = rng.gen_range(1..=200);
            match rng.gen_range(0..4) {
                0 => sql.push_str(&format!(
                    "INSERT INTO accounts VALUES ({id}, {}, 'n{}') ON CONFLICT (id) DO UPDATE SET balance = accounts.balance + 1;",
                    rng.gen_range(0..1000),
                    rng.gen::<u32>()
                )),
                1 => sql.push_str(&format!("UPDATE accounts SET balance = balance + {}, note = note || 'u' WHERE id = {id};", rng.gen_range(1..50))),
                2 => sql.push_str(&format!("DELETE FROM accounts WHERE id = {id};")),
                _ => sql.push_str(&format!(
                    "DELETE FROM accounts WHERE id = {id}; INSERT INTO accounts VALUES ({id}, 7, 'again');"
                )),
            }
        }
        sql.push_str("COMMIT;");
        c.batch_execute(&sql).await.expect("random write");
    }
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub const ACCOUNTS_ROWS: &str = "SELECT row_to_json(a)::text FROM accounts a ORDER BY id";

/// Poll `SELECT count(*)` of `table` on `c` until it is `want` (panicking after `deadline`
/// from `started`); every distinct count seen, in order — for atomicity checks.
pub async fn counts_until(
    c: &Client,
    table: &str,
    want: i64,
    started: std::time::Instant,
    deadline: Duration,
    every: Duration,
) -> Vec<i64> {
    let sql = format!("SELECT count(*) FROM {table}");
    let mut seen = Vec::new();
    loop {
        let n: i64 = c.query_one(&sql, &[]).await.unwrap().get(0);
        if !seen.contains(&n) {
            seen.push(n);
        }
        if n == want {
            return seen;
        }
        assert!(
            started.elapsed() < deadline,
            "not applied in {deadline:?}; seen {seen:?}"
        );
        tokio::time::sleep(every).await;
    }
}

// Rows with a value stored out of line (TOAST): an update of another column sends it as
// "unchanged", so the stream cannot build the row where the target lacks it.

pub const DOCS_DDL: &str =
    "CREATE TABLE docs (id int PRIMARY KEY, v text NOT NULL, big text NOT NULL)";
pub const DOCS_ROWS: &str = "SELECT id || ':' || v || ':' || md5(big) FROM docs ORDER BY id";

/// 30 docs whose `big` is stored out of line, so an update of `v` sends `big` unchanged.
pub async fn seed_docs(db: &TestDb) {
    db.on_both(DOCS_DDL).await;
    db.source
        .batch_execute(
            "ALTER TABLE docs ALTER COLUMN big SET STORAGE EXTERNAL;
             INSERT INTO docs SELECT g, 'old ' || g,
                 (SELECT string_agg(md5(g::text || x::text), '') FROM generate_series(1, 150) x)
             FROM generate_series(1, 30) g;",
        )
        .await
        .unwrap();
}
