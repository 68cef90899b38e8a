//! Advisory-lock barriers and polling with the daemon's log: the tools of the tests that put a
//! source write at an exact place in a daemon's work (tests/it/backfill_races.rs,
//! tests/it/deferred.rs). The daemon waits on an advisory lock the test holds (its test hooks:
//! `REMODEL_TEST_BACKFILL_BARRIER`, `REMODEL_TEST_APPLY_BARRIER`,
//! `REMODEL_TEST_DEFERRED_BARRIER`); the test sees it wait in `pg_locks`, writes, releases.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::daemon::{config, free_listen, Daemon};
use super::TestDb;

/// How long any one condition may take.
pub const WAIT: Duration = Duration::from_secs(30);

/// The daemon log's last lines, without the periodic feedback lines.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("confirmed flush position"))
        .collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Poll `f` until it returns `Ok` (deadline [`WAIT`]); on timeout panic with the last
/// observation and the tail of the daemon's log.
pub async fn until<T, F, Fut>(d: &Daemon, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) if d.log().contains("remodel: fatal") => panic!(
                "the daemon stopped while waiting for {what}; last observed: {last}\n\
                 --- daemon log (tail) ---\n{}",
                tail(&d.log())
            ),
            Err(last) if started.elapsed() > WAIT => panic!(
                "timed out after {WAIT:?} waiting for {what}; last observed: {last}\n\
                 --- daemon log (tail) ---\n{}",
                tail(&d.log())
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Wait until the daemon's log contains `needle` (deadline and failure report as [`until`]).
pub async fn wait_log(d: &Daemon, what: &str, needle: &str) {
    until(d, what, || async {
        if d.log().contains(needle) {
            Ok(())
        } else {
            Err(format!("no {needle:?} in the log yet"))
        }
    })
    .await
}

pub async fn count(
    c: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> i64 {
    c.query_one(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Wait until `sql` (one bigint) on `c` returns `want`.
pub async fn wait_count(d: &Daemon, c: &Client, what: &str, sql: &str, want: i64) {
    until(d, what, || async move {
        match count(c, sql, &[]).await {
            n if n == want => Ok(()),
            n => Err(format!("{sql} -> {n}, want {want}")),
        }
    })
    .await
}

/// How many sessions wait for the advisory lock `key` in `mode` ('ShareLock' /
/// 'ExclusiveLock') in the current database.
pub async fn waiters(c: &Client, key: i64, mode: &str) -> i64 {
    count(
        c,
        "SELECT count(*) FROM pg_locks
         WHERE locktype = 'advisory' AND NOT granted AND mode = $2 AND objsubid = 1
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND classid::int8 = (($1::int8 >> 32) & 4294967295)
           AND objid::int8 = ($1::int8 & 4294967295)",
        &[&key, &mode],
    )
    .await
}

pub async fn wait_waiters(d: &Daemon, c: &Client, key: i64, mode: &str, n: i64, what: &str) {
    until(d, what, || async move {
        match waiters(c, key, mode).await {
            w if w == n => Ok(()),
            w => Err(format!(
                "{w} sessions wait for advisory lock {key} ({mode}), want {n}"
            )),
        }
    })
    .await
}

/// Take the advisory lock `key` exclusively on `c`'s session.
pub async fn hold(c: &Client, key: i64) {
    c.execute("SELECT pg_advisory_lock($1)", &[&key])
        .await
        .expect("take advisory lock");
}

pub async fn release(c: &Client, key: i64) {
    let released: bool = c
        .query_one("SELECT pg_advisory_unlock($1)", &[&key])
        .await
        .expect("release advisory lock")
        .get(0);
    assert!(released, "the test did not hold advisory lock {key}");
}

/// A running daemon and the directory holding its config file.
pub struct Run {
    pub d: Daemon,
    _config_dir: tempfile::TempDir,
}

/// Write the config for `db` (with `extra` appended) and start `remodel run` with the given
/// test hooks set, as it is: the daemon creates the publication and the slot itself.
pub fn start_unprepared(db: &TestDb, extra: &str, hooks: &[(&str, i64)]) -> Run {
    let listen = free_listen();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("remodel.toml");
    std::fs::write(&path, config(db, &listen, extra)).expect("write config");
    let env = hooks
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Run {
        d: Daemon::start_file(&path, &listen, env),
        _config_dir: dir,
    }
}

/// [`start_unprepared`] after creating the publication and the slot on the source, so that the
/// backfill, which starts beside the stream, cannot get ahead of the stream's setup: these tests
/// are about chunks against stream writes; that startup race has a test of its own
/// (`backfill_copies_existing_rows_when_it_starts_before_the_stream_has_set_up`).
pub async fn start(db: &TestDb, extra: &str, hooks: &[(&str, i64)]) -> Run {
    // Two statements: a slot cannot be created in a transaction that has written.
    db.source
        .batch_execute(&format!(
            "CREATE PUBLICATION \"{}\" FOR ALL TABLES",
            db.name
        ))
        .await
        .expect("publication");
    db.source
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&db.name],
        )
        .await
        .expect("slot");
    start_unprepared(db, extra, hooks)
}

/// (state, chunks, cursor) of `rel` in backfill_tables; None before it is registered.
pub async fn table_state(c: &Client, rel: &str) -> Option<(String, i64, Option<String>)> {
    c.query_opt(
        "SELECT state, chunks, cursor FROM remodel.backfill_tables WHERE rel = $1",
        &[&rel],
    )
    .await
    .ok()
    .flatten()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
}

/// Wait until the backfill of `rel` is done (state and metric).
pub async fn wait_backfilled(r: &Run, db: &TestDb, rel: &str) {
    let c = &db.target;
    until(&r.d, &format!("backfill of {rel} done"), || async move {
        match table_state(c, rel).await {
            Some((s, _, _)) if s == "done" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    r.d.wait_metric(
        &format!("remodel_backfill_progress_ratio{{table=\"{rel}\"}}"),
        |v| v == 1.0,
    )
    .await;
}

/// Stop the daemon and drop the test database's slot.
pub async fn finish(r: Run, db: &TestDb) {
    drop(r);
    super::daemon::drop_slot(db).await;
}
