//! Backfill against the stream, one race at a time (the version rule in docs/architecture.md, invariants 1–3).
//!
//! Each test forces one interleaving of a backfill chunk and stream writes with the daemon's
//! test hooks, advisory-lock barriers on the target database:
//!
//! * `REMODEL_TEST_BACKFILL_BARRIER`: a worker waits there before it writes a chunk (on the
//!   staged path after staging, before it locks the table and merges; on the direct path —
//!   a pure column mapping with nothing newer than the pass — before it locks and reads). The
//!   chunk is read from the pass snapshot either way, so what a test writes meanwhile is newer;
//!   after the barrier the worker sees those writes and takes the staged, guarded merge;
//! * `REMODEL_TEST_APPLY_BARRIER`: the stream's apply waits there before it opens a target
//!   transaction.
//!
//! The test holds a barrier with `pg_advisory_lock` on its own target connection, sees the
//! daemon wait for it in `pg_locks`, writes on the source, and releases. A few tests also hold
//! the per-table lock the stream takes shared and a chunk merge exclusively, to order a stream
//! statement behind a merge. Nothing sleeps to synchronise: every step waits for a condition.
//!
//! A naive backfill (copy the snapshot over the target) fails each of them: it would write
//! old values over newer stream writes, bring deleted rows back, or drop rows that arrived
//! through the stream.
//!
//! Three of these tests fail deterministically against the code as written. They show real
//! bugs, not flaky tests:
//! * `a_delete_that_waited_for_a_chunk_merge_removes_the_merged_row` and
//!   `an_unchanged_toast_update_that_waited_for_a_chunk_merge_lands`: the stream takes the table
//!   lock inside its data statement (apply/sql.rs `input_cte`), so the statement's snapshot
//!   comes from before a merge it waited for committed. Its DELETE, or its UPDATE of the present
//!   columns, does not see the merged row.
//! * `backfill_copies_existing_rows_when_it_starts_before_the_stream_has_set_up`: the backfill
//!   compiles its plan and checks the slot while the stream may still be creating the
//!   publication and the slot (pipeline.rs `run` starts both at once).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::compare::{converge, converge_with, rows, seed_docs, DOCS_ROWS};
use crate::support::daemon::remodel_cmd;
use crate::support::locks::{
    count, finish, hold, release, start, start_unprepared, table_state, tail, until,
    wait_backfilled, wait_count, wait_log, wait_waiters, Run, WAIT,
};
use crate::support::{fresh_db, pair, TestDb};
use rand::Rng;
use tokio_postgres::Client;

const BACKFILL_BARRIER: &str = "REMODEL_TEST_BACKFILL_BARRIER";
const APPLY_BARRIER: &str = "REMODEL_TEST_APPLY_BARRIER";
/// Held by the tests of the backfill's own fold of deferred partial updates, so the daemon's
/// resolution of deferred entries (tests/it/deferred.rs) stays out of them: it waits there before
/// its snapshot.
const DEFERRED_BARRIER: &str = "REMODEL_TEST_DEFERRED_BARRIER";
/// Barrier keys (advisory locks are per database, and every test has its own).
const BF: i64 = 4242;
const APPLY: i64 = 4343;
const DEFERRED: i64 = 4444;

const T_DDL: &str = "CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL)";
const T_ROWS: &str = "SELECT row_to_json(t)::text FROM t ORDER BY id";
const T_ROWS_4: &str = "SELECT row_to_json(t)::text FROM t WHERE id = 4";
/// 30 rows and chunks of 10: chunk 1 is ids 1..=10, chunk 3 is ids 21..=30.
const T_CHUNKS: &str = "[backfill]\nchunk_rows = 10\nworkers = 1\n";

/// The per-table lock key (apply::sql::table_lock_key) of source table `rel`.
async fn table_lock(c: &Client, rel: &str) -> i64 {
    c.query_one(
        "SELECT hashtextextended('remodel-table:' || $1, 0)",
        &[&rel],
    )
    .await
    .expect("table lock key")
    .get(0)
}

/// Wait until the worker sits at the backfill barrier with the first chunk of `rel` staged
/// (no chunk committed yet).
async fn wait_worker_at_barrier(r: &Run, db: &TestDb, rel: &str) {
    wait_waiters(
        &r.d,
        &db.target,
        BF,
        "ShareLock",
        1,
        "a backfill worker at the barrier",
    )
    .await;
    let st = table_state(&db.target, rel).await;
    assert!(
        matches!(&st, Some((_, 0, None))),
        "no chunk of {rel} may be committed while the worker waits with the first: {st:?}"
    );
}

/// Wait until `sql` (one text row, or none) on the target returns `want`.
async fn wait_target(r: &Run, db: &TestDb, sql: &str, want: &[&str], what: &str) {
    let c = &db.target;
    until(&r.d, what, || async move {
        let got = rows(c, sql).await;
        if got == want {
            Ok(())
        } else {
            Err(format!("{sql} -> {got:?}, want {want:?}"))
        }
    })
    .await
}

/// Wait until the ledger holds an entry for `rel` / key (text values) with `deleted`, and
/// return whether its version is ≥ the P of every pass recorded so far.
async fn wait_ledger(r: &Run, db: &TestDb, rel: &str, key: &[&str], deleted: bool) -> bool {
    let c = &db.target;
    let key = serde_json::to_string(key).expect("json");
    until(
        &r.d,
        &format!("ledger entry {rel} {key} deleted={deleted}"),
        || {
            let key = key.clone();
            async move {
                let row = c
                    .query_opt(
                        "SELECT l.version >= (SELECT max(version) FROM remodel.backfill_passes)
                     FROM remodel.ledger l
                     WHERE l.rel = $1 AND l.skey::jsonb = $2::text::jsonb AND l.deleted = $3",
                        &[&rel, &key, &deleted],
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                row.map(|r| r.get::<_, Option<bool>>(0).unwrap_or(false))
                    .ok_or_else(|| "no such ledger entry".to_string())
            }
        },
    )
    .await
}

async fn seed_t(db: &TestDb, n: i32) {
    db.on_both(T_DDL).await;
    db.source
        .execute(
            "INSERT INTO t SELECT g, 'old ' || g, g FROM generate_series(1, $1) g",
            &[&n],
        )
        .await
        .expect("seed t");
}

// ---------------------------------------------------------------------------------------
// A chunk read before a stream write.

/// Chunk 1 (ids 1..=10) is staged from the snapshot; then id 3 is updated on the source and
/// the stream writes it. The merge must skip id 3: its staged row is older.
#[tokio::test]
async fn backfill_never_overwrites_a_row_updated_after_its_chunk_was_read() {
    let db = fresh_db(pair()).await;
    seed_t(&db, 30).await;
    hold(&db.target, BF).await;
    let r = start(&db, T_CHUNKS, &[(BACKFILL_BARRIER, BF)]).await;
    r.d.wait_ready().await;
    wait_worker_at_barrier(&r, &db, "public.t").await;

    db.source
        .batch_execute("UPDATE t SET v = 'new 3', n = -3 WHERE id = 3")
        .await
        .unwrap();
    let q = "SELECT v || ':' || n FROM t WHERE id = 3";
    wait_target(&r, &db, q, &["new 3:-3"], "the stream's update of id 3").await;
    assert!(
        wait_ledger(&r, &db, "public.t", &["3"], false).await,
        "a stream write after the pass began must carry a version ≥ its P"
    );

    release(&db.target, BF).await;
    wait_backfilled(&r, &db, "public.t").await;
    assert_eq!(
        rows(&db.target, q).await,
        ["new 3:-3"],
        "the chunk read before the update overwrote the newer streamed row"
    );
    converge(&db, T_ROWS).await;
    finish(r, &db).await;
}

/// Chunk 1 is staged; then id 4 (in it) and id 25 (in chunk 3, read later from the same old
/// snapshot) are deleted. Neither may come back.
#[tokio::test]
async fn backfill_never_resurrects_a_row_deleted_before_its_chunk_is_written() {
    let db = fresh_db(pair()).await;
    seed_t(&db, 30).await;
    hold(&db.target, BF).await;
    let r = start(&db, T_CHUNKS, &[(BACKFILL_BARRIER, BF)]).await;
    r.d.wait_ready().await;
    wait_worker_at_barrier(&r, &db, "public.t").await;

    db.source
        .batch_execute("DELETE FROM t WHERE id = 4; DELETE FROM t WHERE id = 25")
        .await
        .unwrap();
    for k in ["4", "25"] {
        assert!(
            wait_ledger(&r, &db, "public.t", &[k], true).await,
            "the tombstone of {k} must carry a version ≥ the pass's P"
        );
    }

    release(&db.target, BF).await;
    wait_backfilled(&r, &db, "public.t").await;
    assert_eq!(
        rows(
            &db.target,
            "SELECT id::text FROM t WHERE id IN (4, 25) ORDER BY id"
        )
        .await,
        Vec::<String>::new(),
        "a row deleted on the source came back from the backfill snapshot"
    );
    assert_eq!(count(&db.target, "SELECT count(*) FROM t", &[]).await, 28);
    converge(&db, T_ROWS).await;
    finish(r, &db).await;
}

/// Composite key (a int, b text) with text values that need quoting in COPY, SQL and JSON:
/// the merge's ledger key must match the stream's exactly, and keyset pagination must walk
/// the composite keys (chunks of 5 rows end on those values).
#[tokio::test]
async fn backfill_never_resurrects_or_overwrites_rows_with_composite_keys() {
    const WEIRD: &[&str] = &[
        "plain",
        "x\"y",
        "back\\slash",
        "tab\there",
        "new\nline",
        "ünïcødé ✓",
        "comma, (paren)",
        "{brace}",
        "NULL",
        "\\N",
        "",
        "it's",
        "ctl\u{1}char",
    ];
    let db = fresh_db(pair()).await;
    db.on_both("CREATE TABLE pairs (a int, b text, v text NOT NULL, PRIMARY KEY (a, b))")
        .await;
    for a in 1..=3i32 {
        for b in WEIRD {
            db.source
                .execute(
                    "INSERT INTO pairs VALUES ($1, $2, $3 || md5($2))",
                    &[&a, b, &format!("old {a} ")],
                )
                .await
                .unwrap();
        }
    }
    let total = (3 * WEIRD.len()) as i64;
    // Keys in the order the backfill reads them.
    let keys: Vec<(i32, String)> = db
        .source
        .query("SELECT a, b FROM pairs ORDER BY a, b", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let all = "SELECT md5(string_agg(row_to_json(p)::text, ',' ORDER BY a, b COLLATE \"C\")) FROM pairs p";

    hold(&db.target, BF).await;
    let r = start(
        &db,
        "[backfill]\nchunk_rows = 5\nworkers = 1\n",
        &[(BACKFILL_BARRIER, BF)],
    )
    .await;
    r.d.wait_ready().await;
    wait_worker_at_barrier(&r, &db, "public.pairs").await;

    // Deleted: one of the staged chunk, one of the last chunk. Updated: one staged, one later.
    let (del, upd) = ([&keys[1], &keys[keys.len() - 2]], [&keys[2], &keys[20]]);
    for (a, b) in del {
        db.source
            .execute("DELETE FROM pairs WHERE a = $1 AND b = $2", &[a, b])
            .await
            .unwrap();
    }
    for (a, b) in upd {
        db.source
            .execute(
                "UPDATE pairs SET v = 'new' WHERE a = $1 AND b = $2",
                &[a, b],
            )
            .await
            .unwrap();
    }
    for ((a, b), deleted) in del
        .iter()
        .map(|k| (k, true))
        .chain(upd.iter().map(|k| (k, false)))
    {
        let a = a.to_string();
        assert!(
            wait_ledger(&r, &db, "public.pairs", &[&a, b], deleted).await,
            "ledger entry ({a}, {b:?}) older than the pass"
        );
    }

    release(&db.target, BF).await;
    wait_backfilled(&r, &db, "public.pairs").await;
    for (a, b) in del {
        assert_eq!(
            count(
                &db.target,
                "SELECT count(*) FROM pairs WHERE a = $1 AND b = $2",
                &[a, b]
            )
            .await,
            0,
            "deleted row ({a}, {b:?}) was resurrected by the backfill"
        );
    }
    for (a, b) in upd {
        let v: String = db
            .target
            .query_one("SELECT v FROM pairs WHERE a = $1 AND b = $2", &[a, b])
            .await
            .unwrap_or_else(|e| panic!("({a}, {b:?}) missing on the target: {e}"))
            .get(0);
        assert_eq!(v, "new", "({a}, {b:?}) overwritten by the older chunk");
    }
    assert_eq!(
        count(&db.target, "SELECT count(*) FROM pairs", &[]).await,
        total - 2
    );
    let chunks = table_state(&db.target, "public.pairs").await.unwrap().1;
    assert!(
        chunks >= (total / 5),
        "{chunks} chunks for {total} rows of 5"
    );
    converge(&db, all).await;
    finish(r, &db).await;
}

// ---------------------------------------------------------------------------------------
// Rows the backfill never reads.

/// Rows inserted into ranges the cursor has passed (below, inside the committed chunk 1),
/// inside the staged chunk 2 and beyond it: they arrive through the stream, and no chunk
/// removes them.
#[tokio::test]
async fn a_row_inserted_into_an_already_copied_range_arrives() {
    let db = fresh_db(pair()).await;
    db.on_both(T_DDL).await;
    // Even ids 2..=60: chunk 1 = 2..=20, chunk 2 = 22..=40, chunk 3 = 42..=60.
    db.source
        .batch_execute("INSERT INTO t SELECT g, 'old ' || g, g FROM generate_series(2, 60, 2) g")
        .await
        .unwrap();
    hold(&db.target, BF).await;
    let r = start(&db, T_CHUNKS, &[(BACKFILL_BARRIER, BF)]).await;
    r.d.wait_ready().await;
    wait_worker_at_barrier(&r, &db, "public.t").await;

    // Let chunk 1 through and stop chunk 2. The worker's waiting shared lock is granted by
    // our unlock, so the lock taken next is ours only once the worker has passed the
    // barrier: it then merges chunk 1 and stops at the barrier with chunk 2 staged.
    release(&db.target, BF).await;
    hold(&db.target, BF).await;
    wait_waiters(
        &r.d,
        &db.target,
        BF,
        "ShareLock",
        1,
        "the worker at the barrier with chunk 2",
    )
    .await;
    let st = table_state(&db.target, "public.t").await;
    assert_eq!(
        st,
        Some(("copying".into(), 1, Some("[\"20\"]".into()))),
        "chunk 1 (ids 2..=20) committed, chunk 2 staged"
    );
    assert_eq!(count(&db.target, "SELECT count(*) FROM t", &[]).await, 10);

    db.source
        .batch_execute(
            "INSERT INTO t VALUES (1, 'below', 1);
             INSERT INTO t VALUES (7, 'inside chunk 1', 7);
             INSERT INTO t VALUES (25, 'inside staged chunk 2', 25);
             INSERT INTO t VALUES (45, 'inside chunk 3', 45);",
        )
        .await
        .unwrap();
    let q = "SELECT string_agg(id::text, ',' ORDER BY id) FROM t WHERE id % 2 = 1";
    wait_target(&r, &db, q, &["1,7,25,45"], "the stream's inserts").await;

    release(&db.target, BF).await;
    wait_backfilled(&r, &db, "public.t").await;
    assert_eq!(
        rows(&db.target, q).await,
        ["1,7,25,45"],
        "a chunk removed rows that arrived through the stream"
    );
    assert_eq!(count(&db.target, "SELECT count(*) FROM t", &[]).await, 34);
    converge(&db, T_ROWS).await;
    finish(r, &db).await;
}

/// While chunk 1 is staged: id 5 deleted and re-inserted in two transactions, id 6 in one, id
/// 15 (chunk 2, read later) in two. The re-inserted values win over the snapshot's.
#[tokio::test]
async fn a_key_deleted_and_reinserted_ends_with_the_reinserted_row() {
    let db = fresh_db(pair()).await;
    seed_t(&db, 30).await;
    hold(&db.target, BF).await;
    let r = start(&db, T_CHUNKS, &[(BACKFILL_BARRIER, BF)]).await;
    r.d.wait_ready().await;
    wait_worker_at_barrier(&r, &db, "public.t").await;

    db.source
        .batch_execute(
            "DELETE FROM t WHERE id = 5;
             INSERT INTO t VALUES (5, 'again 5', -5);
             BEGIN; DELETE FROM t WHERE id = 6; INSERT INTO t VALUES (6, 'again 6', -6); COMMIT;
             DELETE FROM t WHERE id = 15;
             INSERT INTO t VALUES (15, 'again 15', -15);",
        )
        .await
        .unwrap();
    let q = "SELECT string_agg(id || ':' || v || ':' || n, ',' ORDER BY id) FROM t WHERE id IN (5, 6, 15)";
    let want = ["5:again 5:-5,6:again 6:-6,15:again 15:-15"];
    wait_target(&r, &db, q, &want, "the re-inserted rows on the target").await;
    for k in ["5", "6", "15"] {
        assert!(wait_ledger(&r, &db, "public.t", &[k], false).await);
    }

    release(&db.target, BF).await;
    wait_backfilled(&r, &db, "public.t").await;
    assert_eq!(
        rows(&db.target, q).await,
        want,
        "the snapshot's version of a deleted and re-inserted key overwrote the re-inserted row"
    );
    converge(&db, T_ROWS).await;
    finish(r, &db).await;
}

// ---------------------------------------------------------------------------------------
// Chunk and stream write in both orders.

/// The stream has received the update of id 7 but cannot write (apply barrier) when the chunk
/// lands: the target shows the snapshot's value first, then the stream's newer one.
#[tokio::test]
async fn a_chunk_written_before_the_stream_applies_a_newer_version_ends_newer() {
    let db = fresh_db(pair()).await;
    seed_t(&db, 20).await;
    hold(&db.target, BF).await;
    let r = start(
        &db,
        "[backfill]\nchunk_rows = 100\nworkers = 1\n",
        &[(BACKFILL_BARRIER, BF), (APPLY_BARRIER, APPLY)],
    )
    .await;
    r.d.wait_ready().await;
    // The pass waited for the stream to pass its marker before copying: only now may the
    // stream be stopped.
    wait_worker_at_barrier(&r, &db, "public.t").await;
    hold(&db.target, APPLY).await;

    db.source
        .batch_execute("UPDATE t SET v = 'new 7', n = -7 WHERE id = 7")
        .await
        .unwrap();
    wait_waiters(
        &r.d,
        &db.target,
        APPLY,
        "ShareLock",
        1,
        "the stream's apply at its barrier",
    )
    .await;

    release(&db.target, BF).await;
    wait_backfilled(&r, &db, "public.t").await;
    let q = "SELECT v || ':' || n FROM t WHERE id = 7";
    assert_eq!(
        rows(&db.target, q).await,
        ["old 7:7"],
        "the chunk (snapshot value) should have landed before the stream's write"
    );
    assert_eq!(count(&db.target, "SELECT count(*) FROM t", &[]).await, 20);

    release(&db.target, APPLY).await;
    wait_target(
        &r,
        &db,
        q,
        &["new 7:-7"],
        "the stream's newer write over the chunk's row",
    )
    .await;
    assert!(wait_ledger(&r, &db, "public.t", &["7"], false).await);
    converge(&db, T_ROWS).await;
    finish(r, &db).await;
}

/// The stream writes id 25 (chunk 3) while chunk 1 is staged; chunk 3 is read afterwards from
/// the pass's old snapshot and must skip id 25.
#[tokio::test]
async fn a_chunk_written_after_the_stream_applied_a_newer_version_skips_that_row() {
    let db = fresh_db(pair()).await;
    seed_t(&db, 30).await;
    hold(&db.target, BF).await;
    let r = start(&db, T_CHUNKS, &[(BACKFILL_BARRIER, BF)]).await;
    r.d.wait_ready().await;
    wait_worker_at_barrier(&r, &db, "public.t").await;

    db.source
        .batch_execute("UPDATE t SET v = 'new 25', n = -25 WHERE id = 25")
        .await
        .unwrap();
    let q = "SELECT v || ':' || n FROM t WHERE id = 25";
    wait_target(&r, &db, q, &["new 25:-25"], "the stream's write of id 25").await;
    assert!(
        wait_ledger(&r, &db, "public.t", &["25"], false).await,
        "the stream's version must be ≥ the pass's P"
    );

    release(&db.target, BF).await;
    wait_backfilled(&r, &db, "public.t").await;
    assert_eq!(
        rows(&db.target, q).await,
        ["new 25:-25"],
        "chunk 3 (old snapshot) clobbered the newer streamed row"
    );
    converge(&db, T_ROWS).await;
    finish(r, &db).await;
}

// ---------------------------------------------------------------------------------------
// Partial updates (unchanged TOAST) of rows the target does not have yet.

/// Start with the backfill held before its first chunk and the resolution of deferred entries
/// held before its snapshot: a deferred partial update can only be folded in by a chunk.
async fn start_fold_only(db: &TestDb) -> Run {
    hold(&db.target, BF).await;
    hold(&db.target, DEFERRED).await;
    start(
        db,
        T_CHUNKS,
        &[(BACKFILL_BARRIER, BF), (DEFERRED_BARRIER, DEFERRED)],
    )
    .await
}

/// While chunk 1 is staged, id 4's `v` is updated and its TOASTed `big` left unchanged: the
/// stream cannot build the row and defers it; the merge must fold it in.
#[tokio::test]
async fn an_update_leaving_a_toasted_column_unchanged_before_its_chunk_is_merged_is_folded_in() {
    let db = fresh_db(pair()).await;
    seed_docs(&db).await;
    let r = start_fold_only(&db).await;
    r.d.wait_ready().await;
    wait_worker_at_barrier(&r, &db, "public.docs").await;

    db.source
        .batch_execute(
            "UPDATE docs SET v = 'new 4' WHERE id = 4; UPDATE docs SET v = 'new 24' WHERE id = 24",
        )
        .await
        .unwrap();
    wait_count(
        &r.d,
        &db.target,
        "two deferred partial updates",
        "SELECT count(*) FROM remodel.deferred WHERE rel = 'public.docs'",
        2,
    )
    .await;

    release(&db.target, BF).await;
    wait_backfilled(&r, &db, "public.docs").await;
    assert_eq!(
        rows(
            &db.target,
            "SELECT string_agg(v, ',' ORDER BY id) FROM docs WHERE id IN (4, 24)"
        )
        .await,
        ["new 4,new 24"],
        "a deferred partial update was not folded into the backfilled row"
    );
    assert_eq!(
        count(&db.target, "SELECT count(*) FROM remodel.deferred", &[]).await,
        0
    );
    converge(&db, DOCS_ROWS).await;
    finish(r, &db).await;
}

// ---------------------------------------------------------------------------------------
// A stream statement that waited for a chunk merge's table lock.
//
// The merge takes the table lock exclusively; the stream takes it shared inside each data
// statement. The test holds the table lock itself so that the worker (past the barrier, chunk
// staged) queues for it first and the stream's statement second: on release the merge runs,
// commits, and only then does the stream's statement go on. Whatever it does must act on the
// row the merge just wrote.

/// Order: worker queued for the table lock, then the stream's statement for `sql`; release.
async fn stream_statement_behind_a_merge(r: &Run, db: &TestDb, rel: &str, sql: &str) {
    wait_worker_at_barrier(r, db, rel).await;
    let lock = table_lock(&db.target, rel).await;
    hold(&db.target, lock).await;
    release(&db.target, BF).await;
    wait_waiters(
        &r.d,
        &db.target,
        lock,
        "ExclusiveLock",
        1,
        "the chunk merge queued for the table lock",
    )
    .await;
    db.source.batch_execute(sql).await.unwrap();
    wait_waiters(
        &r.d,
        &db.target,
        lock,
        "ShareLock",
        1,
        "the stream's statement queued behind the merge",
    )
    .await;
    release(&db.target, lock).await;
}

/// Control case: a full-row update (INSERT .. ON CONFLICT DO UPDATE) that waited for the merge
/// updates the merged row.
#[tokio::test]
async fn an_update_that_waited_for_a_chunk_merge_overwrites_the_merged_row() {
    let db = fresh_db(pair()).await;
    seed_t(&db, 30).await;
    hold(&db.target, BF).await;
    let r = start(&db, T_CHUNKS, &[(BACKFILL_BARRIER, BF)]).await;
    r.d.wait_ready().await;
    stream_statement_behind_a_merge(
        &r,
        &db,
        "public.t",
        "UPDATE t SET v = 'new 4', n = -4 WHERE id = 4",
    )
    .await;
    wait_backfilled(&r, &db, "public.t").await;
    assert!(wait_ledger(&r, &db, "public.t", &["4"], false).await);
    let q = "SELECT v || ':' || n FROM t WHERE id = 4";
    wait_target(&r, &db, q, &["new 4:-4"], "the stream's update of id 4").await;
    converge(&db, T_ROWS).await;
    finish(r, &db).await;
}

/// A delete of a staged row whose statement waited for the chunk's merge must still delete
/// the row the merge wrote (invariant 3, no resurrection).
#[tokio::test]
async fn a_delete_that_waited_for_a_chunk_merge_removes_the_merged_row() {
    let db = fresh_db(pair()).await;
    seed_t(&db, 30).await;
    hold(&db.target, BF).await;
    let r = start(&db, T_CHUNKS, &[(BACKFILL_BARRIER, BF)]).await;
    r.d.wait_ready().await;
    stream_statement_behind_a_merge(&r, &db, "public.t", "DELETE FROM t WHERE id = 4").await;
    wait_backfilled(&r, &db, "public.t").await;
    // The stream's delete has committed: its tombstone is in the ledger.
    assert!(wait_ledger(&r, &db, "public.t", &["4"], true).await);
    assert_eq!(
        rows(&db.target, T_ROWS_4).await,
        Vec::<String>::new(),
        "id 4 is deleted on the source and its tombstone (version >= P) is in the ledger, \
         but the row the chunk merged is still on the target: the stream's DELETE, queued \
         behind the merge for the table lock, did not see the merged row"
    );
    converge_with(&db, T_ROWS, T_ROWS, Duration::from_secs(10)).await;
    finish(r, &db).await;
}

/// A partial update (TOASTed column unchanged) whose statement waited for the chunk's merge
/// must update the merged row, not defer it behind a chunk that already ran (invariant 2).
#[tokio::test]
async fn an_unchanged_toast_update_that_waited_for_a_chunk_merge_lands() {
    let db = fresh_db(pair()).await;
    seed_docs(&db).await;
    let r = start_fold_only(&db).await;
    r.d.wait_ready().await;
    stream_statement_behind_a_merge(
        &r,
        &db,
        "public.docs",
        "UPDATE docs SET v = 'new 4' WHERE id = 4",
    )
    .await;
    wait_backfilled(&r, &db, "public.docs").await;
    // The stream's statement has committed: it either updated the row (ledger entry) or
    // deferred it (deferred entry).
    let c = &db.target;
    until(&r.d, "the stream's partial update of id 4 applied", || async move {
        let n = count(
            c,
            "SELECT (SELECT count(*) FROM remodel.ledger WHERE rel = 'public.docs' AND skey = '[\"4\"]')
                  + (SELECT count(*) FROM remodel.deferred WHERE rel = 'public.docs' AND skey = '[\"4\"]')",
            &[],
        )
        .await;
        if n > 0 {
            Ok(())
        } else {
            Err("neither a ledger nor a deferred entry for id 4".to_string())
        }
    })
    .await;
    let deferred = rows(
        &db.target,
        "SELECT skey || ' ' || version || ' ' || columns::text FROM remodel.deferred ORDER BY skey",
    )
    .await;
    assert_eq!(
        rows(&db.target, "SELECT v FROM docs WHERE id = 4").await,
        ["new 4"],
        "the stream's partial update of id 4 (queued behind the chunk merge for the table lock) \
         did not reach the merged row; left deferred: {deferred:?}"
    );
    assert_eq!(
        deferred,
        Vec::<String>::new(),
        "deferred after every chunk merged"
    );
    converge_with(&db, DOCS_ROWS, DOCS_ROWS, Duration::from_secs(10)).await;
    finish(r, &db).await;
}

/// A key change (4 -> 104) whose statements waited for the chunk's merge: the old row goes,
/// the new one is there.
#[tokio::test]
async fn a_key_change_that_waited_for_a_chunk_merge_moves_the_merged_row() {
    let db = fresh_db(pair()).await;
    seed_t(&db, 30).await;
    hold(&db.target, BF).await;
    let r = start(&db, T_CHUNKS, &[(BACKFILL_BARRIER, BF)]).await;
    r.d.wait_ready().await;
    stream_statement_behind_a_merge(
        &r,
        &db,
        "public.t",
        "UPDATE t SET id = 104, v = 'moved' WHERE id = 4",
    )
    .await;
    wait_backfilled(&r, &db, "public.t").await;
    assert!(wait_ledger(&r, &db, "public.t", &["4"], true).await);
    assert!(wait_ledger(&r, &db, "public.t", &["104"], false).await);
    let q = "SELECT id || ':' || v FROM t WHERE id IN (4, 104) ORDER BY id";
    assert_eq!(rows(&db.target, q).await, ["104:moved"]);
    converge_with(&db, T_ROWS, T_ROWS, Duration::from_secs(10)).await;
    finish(r, &db).await;
}

/// A key change (4 -> 104, and 25 -> 3025 in a later chunk) while chunk 1 is staged: the
/// snapshot's rows under the old keys must not come back.
#[tokio::test]
async fn a_key_changed_before_its_chunk_is_merged_leaves_no_row_under_the_old_key() {
    let db = fresh_db(pair()).await;
    seed_t(&db, 30).await;
    hold(&db.target, BF).await;
    let r = start(&db, T_CHUNKS, &[(BACKFILL_BARRIER, BF)]).await;
    r.d.wait_ready().await;
    wait_worker_at_barrier(&r, &db, "public.t").await;
    db.source
        .batch_execute(
            "UPDATE t SET id = 104, v = 'moved 4' WHERE id = 4;
             UPDATE t SET id = 3025, v = 'moved 25' WHERE id = 25;",
        )
        .await
        .unwrap();
    for k in ["4", "25"] {
        assert!(wait_ledger(&r, &db, "public.t", &[k], true).await);
    }
    release(&db.target, BF).await;
    wait_backfilled(&r, &db, "public.t").await;
    let q = "SELECT id || ':' || v FROM t WHERE id IN (4, 25, 104, 3025) ORDER BY id";
    assert_eq!(
        rows(&db.target, q).await,
        ["104:moved 4", "3025:moved 25"],
        "a row came back under the key it had before a key change"
    );
    converge(&db, T_ROWS).await;
    finish(r, &db).await;
}

// ---------------------------------------------------------------------------------------
// The backfill starting before the stream's setup.

/// `remodel run` starts the backfill beside the stream. Here the stream's CREATE PUBLICATION
/// is held back (a lock on this database's pg_publication) until the backfill has compiled its
/// plan and created the state schema; then it is let go. The backfill must still copy every
/// pre-existing row: not compile an empty plan from the not-yet-existing publication and call
/// itself complete, nor stop the daemon because the stream's slot does not exist yet.
#[tokio::test]
async fn backfill_copies_existing_rows_when_it_starts_before_the_stream_has_set_up() {
    let db = fresh_db(pair()).await;
    seed_t(&db, 30).await;
    let blocker = pair().source.client(&db.name).await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE pg_catalog.pg_publication IN SHARE MODE")
        .await
        .expect("lock pg_publication");
    let r = start_unprepared(&db, T_CHUNKS, &[]);
    let (s, t, name) = (&db.source, &db.target, &db.name);
    until(
        &r.d,
        "the stream's CREATE PUBLICATION waiting for the lock",
        || async move {
            match count(
                s,
                "SELECT count(*) FROM pg_stat_activity
             WHERE datname = $1 AND wait_event_type = 'Lock' AND query ILIKE 'CREATE PUBLICATION%'",
                &[name],
            )
            .await
            {
                1 => Ok(()),
                n => Err(format!("{n} sessions wait in CREATE PUBLICATION")),
            }
        },
    )
    .await;
    // (Before the fix, the backfill raced ahead here: it found no slot and stopped the
    // daemon, or compiled an empty plan and declared itself complete.)
    blocker.batch_execute("COMMIT").await.unwrap();

    until(&r.d, "the pre-existing rows on the target", || async move {
        let (a, b) = (rows(s, T_ROWS).await, rows(t, T_ROWS).await);
        if a == b {
            Ok(())
        } else {
            Err(format!(
                "source {} rows, target {} rows; state tables: {:?}",
                a.len(),
                b.len(),
                rows(
                    t,
                    "SELECT string_agg(tablename, ',') FROM pg_tables WHERE schemaname = 'remodel'"
                )
                .await
            ))
        }
    })
    .await;
    wait_backfilled(&r, &db, "public.t").await;
    finish(r, &db).await;
}

// ---------------------------------------------------------------------------------------
// Two backfilling processes and live writes.

const MANY_DDL: &str = "
CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL, label text);
CREATE TABLE pairs (a int, b text, v numeric, PRIMARY KEY (a, b));
CREATE TABLE notes (id bigint PRIMARY KEY, body text);";
const MANY_ALL: &str =
    "SELECT (SELECT md5(string_agg(row_to_json(i)::text, ',' ORDER BY id)) FROM items i) || '|' ||
    (SELECT md5(string_agg(row_to_json(p)::text, ',' ORDER BY a, b COLLATE \"C\")) FROM pairs p) || '|' ||
    (SELECT md5(string_agg(row_to_json(n)::text, ',' ORDER BY id)) FROM notes n) || '|' ||
    (SELECT md5(string_agg(row_to_json(a)::text, ',' ORDER BY id)) FROM accounts a)";

/// Random writes on `items`, `pairs` and `notes` (one transaction).
async fn random_table_writes(c: &Client, rng: &mut rand::rngs::StdRng) {
    let mut sql = String::from("BEGIN;");
    for _ in 0..rng.gen_range(1..5) {
        let id = rng.gen_range(1..=3200);
        match rng.gen_range(0..6) {
            0 => sql.push_str(&format!("UPDATE items SET qty = qty + 1, label = label || '+' WHERE id = {id};")),
            1 => sql.push_str(&format!("DELETE FROM items WHERE id = {id};")),
            2 => sql.push_str(&format!(
                "INSERT INTO items VALUES ({id}, -1, 'w') ON CONFLICT (id) DO UPDATE SET qty = items.qty - 1;"
            )),
            3 => sql.push_str(&format!("DELETE FROM pairs WHERE a = {} AND b = 'k{id}';", id % 50)),
            4 => sql.push_str(&format!(
                "INSERT INTO pairs VALUES ({}, 'k{id}', -{id}) ON CONFLICT (a, b) DO UPDATE SET v = pairs.v + 1;",
                id % 50
            )),
            _ => sql.push_str(&format!(
                "DELETE FROM notes WHERE id = {id}; INSERT INTO notes VALUES ({id}, 'rewritten');"
            )),
        }
    }
    sql.push_str("COMMIT;");
    c.batch_execute(&sql).await.expect("random table write");
}

/// The daemon backfills (2 workers, chunks of 200) while `remodel backfill` runs on the same
/// config and a writer changes every table; both finish and the target equals the source.
#[tokio::test]
async fn backfill_and_remodel_backfill_at_the_same_time_converge() {
    let db = fresh_db(pair()).await;
    db.on_both(MANY_DDL).await;
    db.on_both(crate::support::compare::ACCOUNTS_DDL).await;
    db.source
        .batch_execute(
            "INSERT INTO items SELECT g, g % 7, 'item ' || g FROM generate_series(1, 3000) g;
             INSERT INTO pairs SELECT g % 50, 'k' || g, g / 3.0 FROM generate_series(1, 3000) g;
             INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 2000) g;
             INSERT INTO accounts SELECT g, g * 10, 'a' || g FROM generate_series(1, 200) g;",
        )
        .await
        .unwrap();
    hold(&db.target, BF).await;
    let r = start(
        &db,
        "[backfill]\nchunk_rows = 200\nworkers = 2\n",
        &[(BACKFILL_BARRIER, BF)],
    )
    .await;
    r.d.wait_ready().await;
    // The daemon's two workers have each claimed a table and staged its first chunk.
    wait_waiters(
        &r.d,
        &db.target,
        BF,
        "ShareLock",
        2,
        "both daemon workers at the barrier",
    )
    .await;

    let path = r.d.config_path.to_str().unwrap().to_string();
    let cmd =
        tokio::task::spawn_blocking(move || remodel_cmd(&["backfill", "--config", &path], &[]));
    let stop = AtomicBool::new(false);
    let seed =
        crate::support::compare::seed("backfill_and_remodel_backfill_at_the_same_time_converge");
    let writer = async {
        let mut rng = crate::support::compare::rng(seed);
        let mut txns = 0;
        while !stop.load(Ordering::Relaxed) {
            crate::support::compare::random_writes(&db.source, &mut rng, 2).await;
            random_table_writes(&db.source, &mut rng).await;
            txns += 3;
        }
        txns
    };
    let driver = async {
        // The command copies the two tables the daemon's workers did not claim...
        let c = &db.target;
        until(
            &r.d,
            "`remodel backfill` copying beside the daemon",
            || async move {
                match count(
                    c,
                    "SELECT count(*) FROM remodel.backfill_tables WHERE chunks > 0",
                    &[],
                )
                .await
                {
                    n if n >= 1 => Ok(()),
                    n => Err(format!("{n} tables with a committed chunk")),
                }
            },
        )
        .await;
        // ...while the daemon's workers go on with theirs.
        release(&db.target, BF).await;
        let started = Instant::now();
        let mut cmd = cmd;
        let (code, out) = loop {
            if cmd.is_finished() {
                break (&mut cmd).await.expect("remodel backfill task");
            }
            assert!(
                started.elapsed() < WAIT,
                "`remodel backfill` did not finish in {WAIT:?}; daemon log:\n{}",
                tail(&r.d.log())
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(code, Some(0), "remodel backfill: {out}");
        assert!(out.contains("backfill complete"), "{out}");
        wait_log(&r.d, "the daemon's backfill complete", "backfill complete").await;
        stop.store(true, Ordering::Relaxed);
    };
    let (txns, ()) = tokio::join!(writer, driver);
    assert!(txns > 0);
    for rel in [
        "public.items",
        "public.pairs",
        "public.notes",
        "public.accounts",
    ] {
        let st = table_state(&db.target, rel).await;
        assert!(
            matches!(&st, Some((s, _, _)) if s == "done"),
            "{rel}: {st:?}"
        );
        r.d.wait_metric(
            &format!("remodel_backfill_progress_ratio{{table=\"{rel}\"}}"),
            |v| v == 1.0,
        )
        .await;
    }
    converge(&db, MANY_ALL).await;
    finish(r, &db).await;
}
