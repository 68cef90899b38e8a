//! End-to-end streaming: the real binary between two real clusters.

use std::time::{Duration, Instant};

use crate::support::compare::{converge, rows};
use crate::support::daemon::{config, config_with, drop_slot, free_listen, Daemon};
use crate::support::{fresh_db, pair, wait_until};

const TYPES_DDL: &str = "CREATE TABLE kinds (
    id int PRIMARY KEY, big bigint, num numeric(20,6), txt text, raw bytea, doc jsonb,
    at timestamptz, uid uuid, arr int[], tags text[])";
const KINDS: &str = "SELECT row_to_json(k)::text FROM kinds k ORDER BY id";

#[tokio::test]
async fn streams_inserts_updates_deletes_of_common_types() {
    let db = fresh_db(pair()).await;
    db.on_both(TYPES_DDL).await;
    let listen = free_listen();
    let d = Daemon::start(&config(&db, &listen, ""), &listen);
    d.wait_ready().await;
    // Five source transactions (a multi-statement simple query would be one).
    for sql in [
        "INSERT INTO kinds VALUES
           (1, 9223372036854775807, 12345.678901, 'héllo wörld ✓ 日本', '\\xdeadbeef', '{\"a\": [1, 2, {\"b\": null}]}',
            '2024-02-29 12:34:56.789+05:30', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1,2,3}', '{\"x y\",NULL,\"q\\\"uote\"}'),
           (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
           (3, -1, -0.000001, '', '\\x', '[]', '-infinity', '00000000-0000-0000-0000-000000000000', '{}', '{}')",
        "UPDATE kinds SET num = 1e10 WHERE id = 1",
        "DELETE FROM kinds WHERE id = 3",
        "BEGIN; INSERT INTO kinds (id, txt) VALUES (4, 'four'); UPDATE kinds SET txt = 'FOUR' WHERE id = 4; COMMIT",
        "UPDATE kinds SET id = 20 WHERE id = 2",
    ] {
        db.source.batch_execute(sql).await.unwrap();
    }
    let got = converge(&db, KINDS).await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got[0].contains("héllo wörld ✓ 日本") && got[0].contains("10000000000.000000"),
        "{got:?}"
    );
    assert!(got[1].contains("FOUR"), "{got:?}");
    assert!(
        got[2].starts_with("{\"id\":20,"),
        "the key change moved the row: {got:?}"
    );
    assert_eq!(
        rows(
            &db.target,
            "SELECT count(*)::text FROM kinds WHERE id IN (2, 3)"
        )
        .await,
        ["0"]
    );
    let m = |s: &'static str| d.metric(s);
    assert_eq!(
        m("remodel_changes_applied_total{op=\"insert\",table=\"public.kinds\"}").await,
        4.0
    );
    assert_eq!(
        m("remodel_changes_applied_total{op=\"delete\",table=\"public.kinds\"}").await,
        1.0
    );
    assert_eq!(
        m("remodel_changes_applied_total{op=\"update\",table=\"public.kinds\"}").await,
        3.0
    );
    // Five source transactions, plus two per backfill pass: its announcement (the stream
    // records versions from there, ADR 0012) and its marker.
    d.wait_metric("remodel_backfill_passes_total", |n| n >= 1.0)
        .await;
    let passes = d.metric("remodel_backfill_passes_total").await;
    d.wait_metric("remodel_transactions_applied_total", |n| {
        n == 5.0 + 2.0 * passes
    })
    .await;
    assert!(m("remodel_applied_lsn").await > 0.0);
    assert!(d
        .get("/metrics")
        .await
        .unwrap()
        .1
        .contains("remodel_apply_batch_seconds_count"));
    assert_eq!(d.get("/healthz").await.unwrap().0, 200);
    drop(d);
    drop_slot(&db).await;
}

#[tokio::test]
async fn truncate_empties_the_target_and_later_rows_land() {
    let db = fresh_db(pair()).await;
    for c in [&db.source, &db.target] {
        c.batch_execute("CREATE TABLE parent (id int PRIMARY KEY); CREATE TABLE child (id int PRIMARY KEY, p int REFERENCES parent)")
            .await
            .unwrap();
    }
    let listen = free_listen();
    let d = Daemon::start(&config(&db, &listen, ""), &listen);
    d.wait_ready().await;
    db.source
        .batch_execute(
            "INSERT INTO parent SELECT generate_series(1, 50); INSERT INTO child SELECT g, g FROM generate_series(1, 50) g;
             TRUNCATE parent, child;
             BEGIN; INSERT INTO parent VALUES (7); INSERT INTO child VALUES (70, 7); COMMIT;",
        )
        .await
        .unwrap();
    let sql = "SELECT (SELECT string_agg(id::text, ',' ORDER BY id) FROM parent) || '|' || (SELECT string_agg(id::text, ',' ORDER BY id) FROM child)";
    assert_eq!(converge(&db, sql).await, ["7|70"]);
    let tombstones = rows(&db.target, "SELECT count(*)::text FROM remodel.truncations").await;
    assert_eq!(tombstones, ["2"]);
    drop(d);
    drop_slot(&db).await;
}

/// A 100k-row transaction with 1 kB per row (~100 MB of row data) lands all at once, and the
/// daemon's memory stays far below the transaction's size (bounded by channel + batch).
#[tokio::test]
async fn large_transaction_lands_atomically_with_bounded_memory() {
    let db = fresh_db(pair()).await;
    let ddl = "CREATE TABLE big (id int PRIMARY KEY, payload text NOT NULL)";
    db.on_both(ddl).await;
    let listen = free_listen();
    let d = Daemon::start(
        &config_with(
            &db,
            &listen,
            "channel_capacity = 1024",
            "[apply]\nbatch_rows = 5000\n",
        ),
        &listen,
    );
    d.wait_ready().await;
    let started = Instant::now();
    db.source
        .batch_execute(
            "INSERT INTO big SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, 100000) g",
        )
        .await
        .unwrap();
    let committed = Instant::now();
    // Atomicity: the target shows 0 rows or all of them, never a part.
    let seen = crate::support::compare::counts_until(
        &db.target,
        "big",
        100_000,
        started,
        Duration::from_secs(120),
        Duration::from_millis(20),
    )
    .await;
    let applied_in = committed.elapsed();
    assert!(
        seen.iter().all(|n| *n == 0 || *n == 100_000),
        "partial transaction visible: {seen:?}"
    );
    let peak = d.peak_rss_kib();
    eprintln!(
        "100k-row transaction: applied {:.0} changes/s after source commit ({:.2} s), daemon peak RSS {} MiB",
        100_000.0 / applied_in.as_secs_f64(),
        applied_in.as_secs_f64(),
        peak / 1024
    );
    assert!(
        peak < 96 * 1024,
        "peak RSS {} MiB: the transaction (~100 MB) was buffered",
        peak / 1024
    );
    assert_eq!(
        rows(
            &db.target,
            "SELECT md5(string_agg(payload, '' ORDER BY id)) FROM big"
        )
        .await,
        rows(
            &db.source,
            "SELECT md5(string_agg(payload, '' ORDER BY id)) FROM big"
        )
        .await
    );
    drop(d);
    drop_slot(&db).await;
}

#[tokio::test]
async fn update_leaving_toasted_column_unchanged_keeps_its_value() {
    let db = fresh_db(pair()).await;
    let ddl = "CREATE TABLE docs (id int PRIMARY KEY, title text, body text)";
    db.on_both(ddl).await;
    let listen = free_listen();
    let d = Daemon::start(&config(&db, &listen, ""), &listen);
    d.wait_ready().await;
    // Incompressible 40 kB: stored out of line, so an update of `title` sends it as "unchanged".
    db.source
        .batch_execute(
            "INSERT INTO docs SELECT 1, 'v1', string_agg(md5(random()::text), '') FROM generate_series(1, 1250);
             INSERT INTO docs VALUES (2, 'small', 'x');",
        )
        .await
        .unwrap();
    let sql = "SELECT id || ':' || title || ':' || coalesce(md5(body), 'NULL') || ':' || length(body) FROM docs ORDER BY id";
    converge(&db, sql).await;
    db.source
        .batch_execute("UPDATE docs SET title = 'v2' WHERE id = 1; BEGIN; UPDATE docs SET title = 'v3' WHERE id = 1; UPDATE docs SET title = 'v4' WHERE id = 1; COMMIT;")
        .await
        .unwrap();
    let got = converge(&db, sql).await;
    assert!(
        got[0].starts_with("1:v4:") && got[0].ends_with(":40000"),
        "{got:?}"
    );
    drop(d);
    drop_slot(&db).await;
}

#[tokio::test]
async fn idle_daemon_confirms_the_slot_forward() {
    let db = fresh_db(pair()).await;
    db.on_both("CREATE TABLE a (id int PRIMARY KEY)").await;
    // Keepalives come every wal_sender_timeout / 2.
    db.source
        .batch_execute(&format!(
            "ALTER DATABASE {} SET wal_sender_timeout = '2s'",
            db.name
        ))
        .await
        .unwrap();
    let listen = free_listen();
    let d = Daemon::start(
        &config_with(&db, &listen, "tables = [\"public.a\"]", ""),
        &listen,
    );
    d.wait_ready().await;
    // WAL that touches no published table: the slot must still move past it.
    db.source.batch_execute("CREATE TABLE unpublished_noise (x int); INSERT INTO unpublished_noise SELECT generate_series(1, 1000)").await.unwrap();
    let target: String = db
        .source
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let (s, name) = (&db.source, db.name.clone());
    wait_until("slot confirmed past the noise", Duration::from_secs(30), || {
        let (name, target) = (name.clone(), target.clone());
        async move {
            let r = s
                .query_one("SELECT confirmed_flush_lsn >= $2::text::pg_lsn FROM pg_replication_slots WHERE slot_name = $1", &[&name, &target])
                .await
                .map_err(|e| e.to_string())?;
            if r.get::<_, bool>(0) { Ok(()) } else { Err("not yet".to_string()) }
        }
    })
    .await;
    drop(d);
    drop_slot(&db).await;
}
