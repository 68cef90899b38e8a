//! Memory stays bounded under the two shapes that grow it: one source transaction of two
//! million rows (applied atomically in batches into one target transaction, never held
//! whole), and one 200 MB jsonb value (held once in flight, never copied per row of work).
//! Peak RSS is printed for docs/reliability.md.

use std::time::{Duration, Instant};

use crate::support::compare::rows;
use crate::support::daemon::{config, drop_slot, free_listen, Daemon};
use crate::support::{fresh_db, pair};

const MIB: u64 = 1024;

#[tokio::test]
async fn a_two_million_row_transaction_lands_atomically_in_bounded_memory() {
    let db = fresh_db(pair()).await;
    db.on_both("CREATE TABLE big (id int PRIMARY KEY, v int NOT NULL, t text NOT NULL)")
        .await;
    let listen = free_listen();
    let d = Daemon::start(&config(&db, &listen, ""), &listen);
    d.wait_ready().await;
    let started = Instant::now();
    db.source
        .batch_execute(
            "INSERT INTO big SELECT g, g % 1000, md5(g::text) FROM generate_series(1, 2000000) g",
        )
        .await
        .unwrap();
    let committed = started.elapsed();
    let seen = crate::support::compare::counts_until(
        &db.target,
        "big",
        2_000_000,
        started,
        Duration::from_secs(600),
        Duration::from_millis(200),
    )
    .await;
    let applied = started.elapsed() - committed;
    let peak = d.peak_rss_kib();
    eprintln!(
        "2M-row transaction: committed on the source in {:.1} s, applied {:.1} s later ({:.0} rows/s), daemon peak RSS {} MiB",
        committed.as_secs_f64(),
        applied.as_secs_f64(),
        2e6 / applied.as_secs_f64(),
        peak / MIB
    );
    assert!(
        seen.iter().all(|n| *n == 0 || *n == 2_000_000),
        "partial transaction visible: {seen:?}"
    );
    // ~200 MB of row data went through; the bound is channel + one batch, far below it.
    assert!(peak < 128 * MIB, "peak RSS {} MiB", peak / MIB);
    assert_eq!(
        rows(
            &db.target,
            "SELECT sum(v)::text || md5(string_agg(t, '' ORDER BY id)) FROM big"
        )
        .await,
        rows(
            &db.source,
            "SELECT sum(v)::text || md5(string_agg(t, '' ORDER BY id)) FROM big"
        )
        .await
    );
    drop(d);
    drop_slot(&db).await;
}

#[tokio::test]
async fn a_200_mb_jsonb_value_is_applied_with_memory_a_small_multiple_of_it() {
    let db = fresh_db(pair()).await;
    db.on_both("CREATE TABLE blob (id int PRIMARY KEY, doc jsonb NOT NULL)")
        .await;
    let listen = free_listen();
    let d = Daemon::start(&config(&db, &listen, ""), &listen);
    d.wait_ready().await;
    let before = d.peak_rss_kib();
    // 200 MiB of string inside one jsonb value (compressible on disk, 200 MiB in the stream).
    db.source
        .batch_execute(
            "INSERT INTO blob SELECT 1, jsonb_build_object('data', repeat('0123456789abcdef', 200 * 65536), 'n', 1)",
        )
        .await
        .unwrap();
    const SAME: &str = "SELECT md5(doc::text) || ':' || length(doc->>'data') FROM blob";
    crate::support::compare::converge_with(&db, SAME, SAME, Duration::from_secs(300)).await;
    let peak = d.peak_rss_kib();
    eprintln!(
        "200 MiB jsonb value: daemon peak RSS {} MiB (before it: {} MiB)",
        peak / MIB,
        before / MIB
    );
    // The value is held as received and as sent: a few copies, never one per batch row.
    assert!(
        peak < 1200 * MIB,
        "peak RSS {} MiB for a 200 MiB value",
        peak / MIB
    );
    // Changing the value again sends all 200 MiB again; memory is reused, not grown.
    db.source
        .batch_execute("UPDATE blob SET doc = doc || '{\"n\": 2}' WHERE id = 1")
        .await
        .unwrap();
    crate::support::compare::converge_with(&db, SAME, SAME, Duration::from_secs(300)).await;
    drop(d);
    drop_slot(&db).await;
}
