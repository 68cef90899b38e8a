//! Backfill on real clusters: existing rows are copied while the stream applies, and the
//! version rule holds whatever the interleaving.

use std::time::Duration;

use crate::support::compare::{converge, rows};
use crate::support::daemon::{config, drop_slot, free_listen, remodel_cmd, Daemon};
use crate::support::{fresh_db, pair, TestDb};

const DDL: &str = "
CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, label text);
CREATE TABLE pairs (a int, b text, v numeric, PRIMARY KEY (a, b));
CREATE TABLE docs (id int PRIMARY KEY, title text, body text);";
const ALL: &str =
    "SELECT (SELECT md5(string_agg(row_to_json(i)::text, ',' ORDER BY id)) FROM items i) || '|' ||
    (SELECT md5(string_agg(row_to_json(p)::text, ',' ORDER BY a, b)) FROM pairs p) || '|' ||
    (SELECT md5(string_agg(id || title || md5(body), ',' ORDER BY id)) FROM docs)";

async fn seed(db: &TestDb) {
    db.on_both(DDL).await;
    db.source
        .batch_execute(
            "INSERT INTO items SELECT g, g % 7, 'item ' || g FROM generate_series(1, 5000) g;
             INSERT INTO pairs SELECT g % 50, 'k' || g, g / 3.0 FROM generate_series(1, 3000) g;
             INSERT INTO docs SELECT g, 't' || g, string_agg(md5(g::text || x::text), '') FROM generate_series(1, 40) g, generate_series(1, 200) x GROUP BY g;",
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn backfill_copies_existing_rows_while_the_stream_applies() {
    let db = fresh_db(pair()).await;
    seed(&db).await;
    let listen = free_listen();
    let d = Daemon::start(
        &config(&db, &listen, "[backfill]\nchunk_rows = 700\n"),
        &listen,
    );
    d.wait_ready().await;
    db.source
        .batch_execute("UPDATE items SET qty = qty + 100 WHERE id % 10 = 0; DELETE FROM pairs WHERE a = 3; INSERT INTO items VALUES (9999, 1, 'new');")
        .await
        .unwrap();
    converge(&db, ALL).await;
    d.wait_metric(
        "remodel_backfill_progress_ratio{table=\"public.items\"}",
        |v| v == 1.0,
    )
    .await;
    // The writes above land before or after the pass snapshot: both counts are right.
    let state = rows(
        &db.target,
        "SELECT string_agg(rel || ':' || state || ':' || rows_copied, ',' ORDER BY rel) FROM remodel.backfill_tables",
    )
    .await;
    let ok = [
        "public.docs:done:40,public.items:done:5000,public.pairs:done:3000",
        "public.docs:done:40,public.items:done:5001,public.pairs:done:2940",
    ];
    assert!(ok.contains(&state[0].as_str()), "{state:?}");
    assert!(
        d.metric("remodel_backfill_rows_total{table=\"public.items\"}")
            .await
            >= 5000.0
    );
    let (code, out) = remodel_cmd(
        &["status", "--config", d.config_path.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("public.items") && out.contains("done"),
        "{out}"
    );
    drop(d);
    drop_slot(&db).await;
}

#[tokio::test]
async fn remodel_backfill_runs_to_completion_beside_a_streaming_daemon() {
    let db = fresh_db(pair()).await;
    seed(&db).await;
    let listen = free_listen();
    // The daemon streams only; the separate command copies.
    let d = Daemon::start(
        &config(&db, &listen, "[backfill]\nenabled = false\n"),
        &listen,
    );
    d.wait_ready().await;
    let (code, out) = remodel_cmd(
        &["backfill", "--config", d.config_path.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("backfill complete"), "{out}");
    converge(&db, ALL).await;
    drop(d);
    drop_slot(&db).await;
    let _ = Duration::ZERO;
}

/// Throttled to need several passes: it stays correct, no backfill transaction (snapshot) on
/// the source lives much past `max_snapshot_age`, SIGHUP lifts the throttle, and tombstones
/// of rows deleted early are pruned once no pass can need them.
#[tokio::test]
async fn a_slow_throttled_backfill_takes_several_passes_within_the_snapshot_bound() {
    let db = fresh_db(pair()).await;
    seed(&db).await;
    let listen = free_listen();
    let toml = config(
        &db,
        &listen,
        "[backfill]\nworkers = 1\nchunk_rows = 100\nmax_snapshot_age = \"700ms\"\nmax_rows_per_second = 400\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, &toml).unwrap();
    let d = Daemon::start_file(&path, &listen, vec![]);
    d.wait_ready().await;
    // Deleted while the first passes run: their tombstones must go once no pass needs them.
    db.source
        .batch_execute("DELETE FROM items WHERE id > 4900")
        .await
        .unwrap();
    let (s, name) = (&db.source, db.name.clone());
    let mut oldest = 0.0f64;
    let started = std::time::Instant::now();
    // Watch the source: every backfill transaction's age, until three passes happened.
    while d.metric("remodel_backfill_passes_total").await < 3.0 {
        let age: Option<f64> = s
            .query_one(
                "SELECT max(extract(epoch FROM now() - xact_start))::float8 FROM pg_stat_activity
                 WHERE datname = $1 AND application_name = 'remodel-backfill'",
                &[&name],
            )
            .await
            .unwrap()
            .get(0);
        oldest = oldest.max(age.unwrap_or(0.0));
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "fewer than 3 passes in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // 700 ms of snapshot age, plus at most one chunk of 100 rows finishing.
    assert!(
        oldest < 1.7,
        "a backfill snapshot lived {oldest:.2} s (bound 0.7 s + one chunk)"
    );
    let ratio = d
        .metric("remodel_backfill_progress_ratio{table=\"public.items\"}")
        .await;
    assert!(
        ratio < 1.0,
        "throttled to 400 rows/s, items cannot be done yet"
    );
    // Lift the throttle: at 400 rows/s the rest would take ~15 s more.
    std::fs::write(
        &path,
        toml.replace("max_rows_per_second = 400", "max_rows_per_second = 0"),
    )
    .unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    let t0 = std::time::Instant::now();
    converge(&db, ALL).await;
    d.wait_metric(
        "remodel_backfill_progress_ratio{table=\"public.pairs\"}",
        |v| v == 1.0,
    )
    .await;
    d.wait_metric(
        "remodel_backfill_progress_ratio{table=\"public.items\"}",
        |v| v == 1.0,
    )
    .await;
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "SIGHUP did not lift the throttle"
    );
    let tombstones = rows(
        &db.target,
        "SELECT count(*)::text FROM remodel.ledger WHERE deleted AND version < (SELECT max(version) FROM remodel.backfill_passes)",
    )
    .await;
    assert_eq!(
        tombstones,
        ["0"],
        "tombstones older than every pass were not pruned"
    );
    drop(d);
    drop_slot(&db).await;
}

/// Catch-up comes first: while the stream is further behind than `backfill.max_lag`, backfill
/// copies nothing; once the stream catches up, backfill finishes.
#[tokio::test]
async fn backfill_backs_off_while_the_stream_lags() {
    const APPLY_BARRIER: i64 = 5151;
    let db = fresh_db(pair()).await;
    seed(&db).await;
    let listen = free_listen();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        config(&db, &listen, "[backfill]\nworkers = 1\nchunk_rows = 200\nmax_lag = \"256kB\"\nmax_rows_per_second = 2000\n"),
    )
    .unwrap();
    let d = Daemon::start_file(
        &path,
        &listen,
        vec![(
            "REMODEL_TEST_APPLY_BARRIER".into(),
            APPLY_BARRIER.to_string(),
        )],
    );
    d.wait_ready().await;
    d.wait_metric("remodel_backfill_rows_total{table=\"public.docs\"}", |v| {
        v > 0.0
    })
    .await;
    // Hold the stream (it cannot open a target transaction) and make it fall behind.
    db.target
        .execute("SELECT pg_advisory_lock($1)", &[&APPLY_BARRIER])
        .await
        .unwrap();
    db.source
        .batch_execute("UPDATE items SET label = label || repeat('x', 200)")
        .await
        .unwrap();
    let t = &db.target;
    crate::support::wait_until("backfill backing off", Duration::from_secs(30), || async {
        if d.log().contains("backfill backs off") {
            Ok(())
        } else {
            Err(())
        }
    })
    .await;
    let copied = |rel: &'static str| async move {
        rows(
            t,
            &format!("SELECT rows_copied::text FROM remodel.backfill_tables WHERE rel = '{rel}'"),
        )
        .await
    };
    let before = (copied("public.items").await, copied("public.pairs").await);
    // Still held: several more back-off rounds pass without a chunk.
    let n = d.log().matches("backfill backs off").count();
    crate::support::wait_until("more back-off rounds", Duration::from_secs(30), || async {
        if d.log().matches("backfill backs off").count() >= n + 5 {
            Ok(())
        } else {
            Err(())
        }
    })
    .await;
    assert_eq!(
        before,
        (copied("public.items").await, copied("public.pairs").await),
        "backfill copied while the stream lagged"
    );
    db.target
        .execute("SELECT pg_advisory_unlock($1)", &[&APPLY_BARRIER])
        .await
        .unwrap();
    converge(&db, ALL).await;
    d.wait_metric(
        "remodel_backfill_progress_ratio{table=\"public.items\"}",
        |v| v == 1.0,
    )
    .await;
    drop(d);
    drop_slot(&db).await;
}
