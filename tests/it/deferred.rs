//! Nothing parked forever (invariants 1 and 7): an update that leaves a TOASTed column unchanged,
//! for a row the target does not have, is kept in `remodel.deferred` — and resolved within
//! seconds by re-reading the row from the source, whatever put it there and whether or not a
//! backfill chunk will ever come for it.
//!
//! One test per path into `deferred` (a key change ahead of the backfill cursor, a key change of
//! a row whose chunk is staged — and of one already copied, which the stream simply moves — a filter flipping a row in ahead of the cursor and after the
//! table is done), and per race of the resolution with the stream (the row deleted before the
//! re-read, a newer stream write after it, `kill -9` between deferral and resolution). The
//! backfill and the resolution are held at advisory-lock barriers (tests/it/support/locks.rs), so
//! every interleaving is forced, none waited for with a sleep.

use std::time::Duration;

use crate::support::compare::{converge, converge_with, rows, seed_docs, DOCS_ROWS};
use crate::support::daemon::{drop_slot, remodel_cmd, remodel_json};
use crate::support::locks::{
    count, finish, hold, release, start, table_state, until, wait_backfilled, wait_count, wait_log,
    wait_waiters, Run,
};
use crate::support::{fresh_db, pair, TestDb};
use nix::sys::signal::Signal;

const BACKFILL_BARRIER: &str = "REMODEL_TEST_BACKFILL_BARRIER";
const DEFERRED_BARRIER: &str = "REMODEL_TEST_DEFERRED_BARRIER";
/// Barrier keys: the backfill's, and the resolution's (before its snapshot; +1 before writing).
const BF: i64 = 5151;
const RES: i64 = 5252;

/// Chunks of 10 rows: the 30 docs are three chunks, ids 21..=30 the last.
const CHUNKS: &str = "[backfill]\nchunk_rows = 10\nworkers = 1\n";
/// Only published docs are migrated (the flag itself is not).
const FILTERED: &str = "[backfill]\nchunk_rows = 10\nworkers = 1\n\
    [[tables]]\nsource = \"public.docs\"\nfilter = \"published\"\n\
    [tables.columns]\npublished = \"drop\"\n";
const PUBLISHED_ROWS: &str =
    "SELECT id || ':' || v || ':' || md5(big) FROM docs WHERE published ORDER BY id";

/// The docs, with even ids published (the source only has the flag).
async fn seed_published(db: &TestDb) {
    seed_docs(db).await;
    db.source
        .batch_execute(
            "ALTER TABLE docs ADD COLUMN published boolean NOT NULL DEFAULT false;
             UPDATE docs SET published = (id % 2 = 0);",
        )
        .await
        .expect("published flag");
}

async fn deferred(db: &TestDb) -> i64 {
    count(&db.target, "SELECT count(*) FROM remodel.deferred", &[]).await
}

/// Wait until the stream has deferred a partial update of `rel` (its counter moved).
async fn wait_deferred_by_stream(r: &Run, n: f64) {
    r.d.wait_metric("remodel_deferred_rows_total{table=\"public.docs\"}", |v| {
        v >= n
    })
    .await;
}

/// Wait until the target's rows for `ids` are the source's (`sql` with `{ids}`).
async fn wait_rows_as_source(r: &Run, db: &TestDb, ids: &str, what: &str) -> Vec<String> {
    let q = format!(
        "SELECT id || ':' || v || ':' || md5(big) FROM docs WHERE id IN ({ids}) ORDER BY id"
    );
    let want = rows(&db.source, &q).await;
    let (t, q) = (&db.target, q.as_str());
    let want2 = want.clone();
    until(&r.d, what, move || {
        let want = want2.clone();
        async move {
            let got = rows(t, q).await;
            if got == want {
                Ok(())
            } else {
                Err(format!("target {got:?}, source {want:?}"))
            }
        }
    })
    .await;
    want
}

async fn wait_no_deferred(r: &Run, db: &TestDb) {
    wait_count(
        &r.d,
        &db.target,
        "no deferred entry left",
        "SELECT count(*) FROM remodel.deferred",
        0,
    )
    .await;
}

/// The backfill is still held at its barrier with nothing committed: whatever reached the
/// target meanwhile was not a chunk's doing.
async fn assert_backfill_still_held(db: &TestDb) {
    let st = table_state(&db.target, "public.docs").await;
    assert!(
        matches!(&st, Some((_, 0, _))),
        "a chunk committed while the backfill was held: {st:?}"
    );
}

/// A path ahead of (or inside) the held backfill: `update` makes the stream defer a partial
/// update, and the row (`ids`) must reach the target while the backfill still waits; then the
/// backfill is let go and completes.
async fn resolved_while_backfill_held(db: &TestDb, extra: &str, update: &str, ids: &str) -> Run {
    let r = start_held(db, extra, &[]).await;
    db.source.batch_execute(update).await.unwrap();
    let updated = std::time::Instant::now();
    wait_deferred_by_stream(&r, 1.0).await;
    wait_rows_as_source(&r, db, ids, "the row re-read from the source").await;
    // Measured, not asserted: the poll is 1 s, a round a snapshot and a few statements.
    eprintln!(
        "row on the target {:?} after the source's update",
        updated.elapsed()
    );
    assert_backfill_still_held(db).await;
    release(&db.target, BF).await;
    wait_backfilled(&r, db, "public.docs").await;
    r
}

/// Start the daemon with its backfill held at the barrier before its first chunk (staged, not
/// merged): nothing is copied until the test releases it.
async fn start_held(db: &TestDb, extra: &str, hooks: &[(&str, i64)]) -> Run {
    hold(&db.target, BF).await;
    let hooks: Vec<(&str, i64)> = std::iter::once((BACKFILL_BARRIER, BF))
        .chain(hooks.iter().copied())
        .collect();
    let r = start(db, extra, &hooks).await;
    r.d.wait_ready().await;
    wait_waiters(
        &r.d,
        &db.target,
        BF,
        "ShareLock",
        1,
        "the backfill at its barrier",
    )
    .await;
    r
}

// ---------------------------------------------------------------------------------------
// Paths into `deferred`.

/// The case: a key change of a row the backfill has not reached (24 → 100024, `big`
/// unchanged). The snapshot holds 24, which the stream deleted; 100024 is in no snapshot. No
/// chunk will ever bring it: the resolution must, while the backfill still waits.
#[tokio::test]
async fn a_key_change_of_a_toasted_row_ahead_of_the_cursor_arrives_under_its_new_key() {
    let db = fresh_db(pair()).await;
    seed_docs(&db).await;
    let r = resolved_while_backfill_held(
        &db,
        CHUNKS,
        "UPDATE docs SET id = id + 100000, v = 'moved' WHERE id = 24",
        "24, 100024",
    )
    .await;
    r.d.wait_metric(
        "remodel_deferred_resolved_total{table=\"public.docs\"}",
        |v| v >= 1.0,
    )
    .await;
    assert_eq!(
        rows(
            &db.target,
            "SELECT id::text FROM docs WHERE id IN (24, 100024)"
        )
        .await,
        ["100024"]
    );
    converge(&db, DOCS_ROWS).await;
    assert_eq!(deferred(&db).await, 0);
    finish(r, &db).await;
}

/// A key change of a row whose chunk is staged but not merged (4 → 100004): the stream finds
/// neither key on the target and defers the new one; the merge then skips 4 (tombstone) and
/// folds nothing for 100004, which it never staged.
#[tokio::test]
async fn a_key_change_of_a_row_in_a_staged_chunk_arrives_under_its_new_key() {
    let db = fresh_db(pair()).await;
    seed_docs(&db).await;
    let r = resolved_while_backfill_held(
        &db,
        CHUNKS,
        "UPDATE docs SET id = 100004, v = 'moved' WHERE id = 4",
        "100004",
    )
    .await;
    assert_eq!(
        rows(
            &db.target,
            "SELECT id::text FROM docs WHERE id IN (4, 100004) ORDER BY id"
        )
        .await,
        ["100004"],
        "the staged chunk brought the old key back, or the new one is missing"
    );
    converge(&db, DOCS_ROWS).await;
    assert_eq!(deferred(&db).await, 0);
    finish(r, &db).await;
}

/// A key change of a row already copied (4 → 100004 after the backfill is done): the target
/// has the old row, so the stream moves it — no deferral, nothing to resolve.
#[tokio::test]
async fn a_key_change_of_an_already_copied_row_moves_it_without_deferring() {
    let db = fresh_db(pair()).await;
    seed_docs(&db).await;
    let r = start(&db, CHUNKS, &[]).await;
    r.d.wait_ready().await;
    wait_backfilled(&r, &db, "public.docs").await;
    db.source
        .batch_execute("UPDATE docs SET id = 100004, v = 'moved' WHERE id = 4")
        .await
        .unwrap();
    wait_rows_as_source(&r, &db, "4, 100004", "row 4 moved to 100004").await;
    converge(&db, DOCS_ROWS).await;
    assert_eq!(
        r.d.metric("remodel_deferred_rows_total{table=\"public.docs\"}")
            .await,
        0.0,
        "the stream deferred an update of a row the target had"
    );
    assert_eq!(deferred(&db).await, 0);
    finish(r, &db).await;
}

/// A filter flipping a row in (25 becomes published, `big` unchanged) before its chunk: the
/// snapshot has 25 unpublished, so its chunk leaves it out and folds nothing.
#[tokio::test]
async fn a_filter_flipping_a_row_in_ahead_of_the_cursor_brings_the_whole_row() {
    let db = fresh_db(pair()).await;
    seed_published(&db).await;
    let r = resolved_while_backfill_held(
        &db,
        FILTERED,
        "UPDATE docs SET published = true, v = 'now public' WHERE id = 25",
        "25",
    )
    .await;
    converge_with(&db, PUBLISHED_ROWS, DOCS_ROWS, Duration::from_secs(60)).await;
    assert_eq!(deferred(&db).await, 0);
    finish(r, &db).await;
}

/// The published docs, the daemon started with `extra`, its backfill held before its first
/// chunk merge, and a resolution round that listed only row 15 (flipped in) held before its
/// snapshot: a chunk released now meets whatever the stream defers next before any round does.
async fn held_before_a_chunk_and_a_round(db: &TestDb, extra: &str) -> Run {
    seed_published(db).await;
    hold(&db.target, RES).await;
    let r = start_held(db, extra, &[(DEFERRED_BARRIER, RES)]).await;
    db.source
        .batch_execute("UPDATE docs SET published = true WHERE id = 15")
        .await
        .unwrap();
    wait_deferred_by_stream(&r, 1.0).await;
    wait_waiters(
        &r.d,
        &db.target,
        RES,
        "ShareLock",
        1,
        "a round that listed row 15",
    )
    .await;
    r
}

/// A filter flipping a row out and back in within one transaction, ahead of the cursor: the
/// stream leaves a tombstone and a deferred entry at the same version (the removal came first).
/// The chunk that then stages the row must skip it (the tombstone is newer than its snapshot)
/// and must keep the entry it cannot settle for the resolution — dropping it as "deleted at
/// its own version" lost the row (found by the randomized interleavings). A round that listed
/// only another row is held meanwhile, so the chunk sees the entry first.
#[tokio::test]
async fn a_chunk_keeps_an_entry_whose_row_was_removed_and_re_added_in_one_transaction() {
    let db = fresh_db(pair()).await;
    let r = held_before_a_chunk_and_a_round(&db, FILTERED).await;
    // Row 14 (in the second chunk's snapshot) flips out and back in, in one transaction.
    db.source
        .batch_execute(
            "BEGIN;
             UPDATE docs SET published = false WHERE id = 14;
             UPDATE docs SET published = true, v = 'back' WHERE id = 14;
             COMMIT;",
        )
        .await
        .unwrap();
    wait_deferred_by_stream(&r, 2.0).await;
    release(&db.target, BF).await;
    wait_backfilled(&r, &db, "public.docs").await;
    assert_eq!(
        count(
            &db.target,
            "SELECT count(*) FROM remodel.deferred WHERE skey = '[\"14\"]'",
            &[]
        )
        .await,
        1,
        "the chunk dropped the entry of row 14, which it did not write"
    );
    release(&db.target, RES).await;
    converge_with(&db, PUBLISHED_ROWS, DOCS_ROWS, Duration::from_secs(60)).await;
    wait_no_deferred(&r, &db).await;
    finish(r, &db).await;
}

/// A partial update the stream defers, then a full write of the same row later in the same
/// source transaction (applied one change at a time: `batch_rows = 1`, so nothing merges them):
/// the full row is the newer one, and a chunk staging the row must not fold the entry's older
/// values over it. As above, a round that listed only another row is held meanwhile.
#[tokio::test]
async fn a_chunk_never_folds_an_entry_over_a_full_write_of_the_same_transaction() {
    let db = fresh_db(pair()).await;
    let r =
        held_before_a_chunk_and_a_round(&db, &format!("[apply]\nbatch_rows = 1\n{FILTERED}")).await;
    db.source
        .batch_execute(
            "BEGIN;
             UPDATE docs SET v = 'stale' WHERE id = 16;
             UPDATE docs SET v = 'fresh', big = big || 'x' WHERE id = 16;
             COMMIT;",
        )
        .await
        .unwrap();
    wait_deferred_by_stream(&r, 2.0).await;
    wait_rows_as_source(&r, &db, "16", "the full write of row 16").await;
    release(&db.target, BF).await;
    wait_backfilled(&r, &db, "public.docs").await;
    assert_eq!(
        rows(&db.target, "SELECT v FROM docs WHERE id = 16").await,
        ["fresh"],
        "the chunk folded the older deferred values over the newer full row"
    );
    release(&db.target, RES).await;
    converge_with(&db, PUBLISHED_ROWS, DOCS_ROWS, Duration::from_secs(60)).await;
    wait_no_deferred(&r, &db).await;
    finish(r, &db).await;
}

/// A table with a split output (loans whose guarantor text becomes `guarantors` rows), rows
/// ahead of the cursor, partial updates (the TOASTed `notes` unchanged) while a round that listed
/// only loan 15 is held:
/// - loan 14's guarantor text is short, so it is sent and its child set is written at the
///   update's version, which is then the key's version too — the main row's entry must not be
///   taken as superseded by it (found by review: the loan was lost);
/// - loan 16's guarantor text is TOASTed too, so no child set is written; the chunk copies the
///   loan and its children from the snapshot and folds the entry in — the fold's version must
///   not make the children's merge skip them (found by review: the children were lost).
#[tokio::test]
async fn a_split_table_keeps_its_main_row_and_children_through_a_fold() {
    let db = fresh_db(pair()).await;
    db.source
        .batch_execute(
            "CREATE TABLE loans (id int PRIMARY KEY, amount int NOT NULL, notes text, guarantor text);
             ALTER TABLE loans ALTER COLUMN notes SET STORAGE EXTERNAL;
             ALTER TABLE loans ALTER COLUMN guarantor SET STORAGE EXTERNAL;
             INSERT INTO loans SELECT g, g * 100,
                 (SELECT string_agg(md5(g::text || x::text), '') FROM generate_series(1, 150) x),
                 (SELECT string_agg('Guarantor ' || g || '-' || x, ', ')
                  FROM generate_series(1, CASE WHEN g = 16 THEN 150 ELSE 2 END) x)
             FROM generate_series(1, 30) g;",
        )
        .await
        .unwrap();
    db.target
        .batch_execute(
            "CREATE TABLE loans (id int PRIMARY KEY, amount int NOT NULL, notes text);
             CREATE TABLE guarantors (id uuid PRIMARY KEY, loan_id int NOT NULL,
                                      position int NOT NULL, name text NOT NULL);",
        )
        .await
        .unwrap();
    let mapping = "[backfill]\nchunk_rows = 10\nworkers = 1\n\
        [[tables]]\nsource = \"public.loans\"\n[tables.columns]\nguarantor = \"drop\"\n\
        [[tables.split]]\ntarget = \"public.guarantors\"\ncolumn = \"guarantor\"\nkey = \"name\"\n\
        separators = [\",\"]\n[tables.split.columns]\nid = \"child_id\"\nloan_id = \"parent.id\"\n\
        position = \"position\"\nname = \"name\"\n";
    hold(&db.target, BF).await;
    hold(&db.target, RES).await;
    let r = start(
        &db,
        mapping,
        &[(BACKFILL_BARRIER, BF), (DEFERRED_BARRIER, RES)],
    )
    .await;
    r.d.wait_ready().await;
    wait_waiters(
        &r.d,
        &db.target,
        BF,
        "ShareLock",
        1,
        "the backfill at its barrier",
    )
    .await;
    let deferred_by_stream = |n: f64| {
        r.d.wait_metric(
            "remodel_deferred_rows_total{table=\"public.loans\"}",
            move |v| v >= n,
        )
    };
    db.source
        .batch_execute("UPDATE loans SET amount = amount + 1 WHERE id = 15")
        .await
        .unwrap();
    deferred_by_stream(1.0).await;
    wait_waiters(
        &r.d,
        &db.target,
        RES,
        "ShareLock",
        1,
        "a round that listed loan 15",
    )
    .await;
    db.source
        .batch_execute("UPDATE loans SET amount = amount + 1 WHERE id IN (14, 16)")
        .await
        .unwrap();
    deferred_by_stream(3.0).await;
    release(&db.target, BF).await;
    wait_backfilled(&r, &db, "public.loans").await;
    release(&db.target, RES).await;
    let loans = "SELECT id || ':' || amount || ':' || md5(notes) FROM loans ORDER BY id";
    let kids_source = "SELECT id || ':' || trim(n) FROM loans, unnest(string_to_array(guarantor, ',')) n ORDER BY 1";
    let kids_target = "SELECT loan_id || ':' || name FROM guarantors ORDER BY 1";
    converge_with(&db, loans, loans, Duration::from_secs(60)).await;
    let kids = converge_with(&db, kids_source, kids_target, Duration::from_secs(60)).await;
    assert_eq!(kids.len(), 29 * 2 + 150);
    wait_no_deferred(&r, &db).await;
    finish(r, &db).await;
}

/// After the table's backfill is done, a filter flips row 5 in: no pass will ever come.
#[tokio::test]
async fn a_filter_flipping_a_row_in_after_the_table_is_done_brings_the_whole_row() {
    let db = fresh_db(pair()).await;
    seed_published(&db).await;
    let r = start(&db, FILTERED, &[]).await;
    r.d.wait_ready().await;
    wait_backfilled(&r, &db, "public.docs").await;
    converge_with(&db, PUBLISHED_ROWS, DOCS_ROWS, Duration::from_secs(60)).await;
    db.source
        .batch_execute("UPDATE docs SET published = true WHERE id = 5")
        .await
        .unwrap();
    wait_deferred_by_stream(&r, 1.0).await;
    wait_rows_as_source(&r, &db, "5", "row 5 re-read from the source").await;
    wait_no_deferred(&r, &db).await;
    converge_with(&db, PUBLISHED_ROWS, DOCS_ROWS, Duration::from_secs(60)).await;
    finish(r, &db).await;
}

/// A `bytea` key under a database default of `bytea_output = 'escape'` (source and target):
/// the stream's keys and the re-read's must be spelled alike, or the entry's row looks deleted
/// to the round. Rows flip in after the table is done; each must arrive, and nothing stays.
#[tokio::test]
async fn a_bytea_keyed_row_is_resolved_under_an_escape_bytea_output_default() {
    let db = fresh_db(pair()).await;
    let ddl = "CREATE TABLE blobs (k bytea PRIMARY KEY, v text NOT NULL, big text);";
    db.on_both(ddl).await;
    for c in [&db.source, &db.target] {
        c.batch_execute(&format!(
            "ALTER DATABASE \"{}\" SET bytea_output = 'escape'",
            db.name
        ))
        .await
        .unwrap();
    }
    db.source
        .batch_execute(
            "ALTER TABLE blobs ALTER COLUMN big SET STORAGE EXTERNAL;
             ALTER TABLE blobs ADD COLUMN published boolean NOT NULL DEFAULT false;
             INSERT INTO blobs SELECT decode(md5(g::text), 'hex') || '\\x00ff5c'::bytea, 'v' || g,
                 (SELECT string_agg(md5(g::text || x::text), '') FROM generate_series(1, 150) x),
                 g % 2 = 0
             FROM generate_series(1, 10) g;",
        )
        .await
        .unwrap();
    let r = start(
        &db,
        "[[tables]]\nsource = \"public.blobs\"\nfilter = \"published\"\n\
         [tables.columns]\npublished = \"drop\"\n",
        &[],
    )
    .await;
    r.d.wait_ready().await;
    wait_backfilled(&r, &db, "public.blobs").await;
    db.source
        .batch_execute("UPDATE blobs SET published = true WHERE NOT published")
        .await
        .unwrap();
    r.d.wait_metric("remodel_deferred_rows_total{table=\"public.blobs\"}", |v| {
        v >= 5.0
    })
    .await;
    let q = "SELECT encode(k, 'hex') || ':' || v || ':' || md5(big) FROM blobs ORDER BY k";
    let want = rows(&db.source, q).await;
    assert_eq!(want.len(), 10);
    wait_until_rows(&r, &db.target, q, want).await;
    wait_no_deferred(&r, &db).await;
    finish(r, &db).await;
}

/// Wait until `q` on `c` returns `want`.
async fn wait_until_rows(r: &Run, c: &tokio_postgres::Client, q: &str, want: Vec<String>) {
    until(&r.d, "the target's rows", || {
        let want = want.clone();
        async move {
            let got = rows(c, q).await;
            if got == want {
                Ok(())
            } else {
                Err(format!("target {got:?}, source {want:?}"))
            }
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// The resolution against the stream.

/// Flip row `id` in after the backfill is done, with the resolution held at `barrier`
/// (RES before its snapshot, RES + 1 before its write); returns once a round waits there.
async fn deferred_and_held(db: &TestDb, barrier: i64, id: i32) -> Run {
    hold(&db.target, barrier).await;
    let r = start(db, FILTERED, &[(DEFERRED_BARRIER, RES)]).await;
    r.d.wait_ready().await;
    wait_backfilled(&r, db, "public.docs").await;
    db.source
        .execute("UPDATE docs SET published = true WHERE id = $1", &[&id])
        .await
        .unwrap();
    wait_deferred_by_stream(&r, 1.0).await;
    wait_waiters(
        &r.d,
        &db.target,
        barrier,
        "ShareLock",
        1,
        "a resolution round at its barrier",
    )
    .await;
    r
}

/// The row is deleted on the source after it was deferred, while a round that listed it waits
/// before its snapshot: the stream's delete settles the entry itself (the row it would complete
/// is gone, in the same statement as the tombstone), and the round, let go, writes nothing.
/// While it waits, the entry and its age are in `remodel status` and the metrics.
#[tokio::test]
async fn a_row_deleted_before_the_re_read_is_settled_and_shown_while_outstanding() {
    let db = fresh_db(pair()).await;
    seed_published(&db).await;
    let r = deferred_and_held(&db, RES, 7).await;

    r.d.wait_metric("remodel_deferred_rows", |v| v == 1.0).await;
    r.d.wait_metric("remodel_deferred_oldest_seconds", |v| v > 0.0)
        .await;
    let config = r.d.config_path.display().to_string();
    let (code, st, err) = remodel_json(&["status", "--config", &config, "--json"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(st["deferred"]["rows"], 1, "status --json: {st}");
    assert!(st["deferred"]["oldest_seconds"].as_f64().is_some(), "{st}");

    db.source
        .batch_execute("DELETE FROM docs WHERE id = 7")
        .await
        .unwrap();
    wait_count(
        &r.d,
        &db.target,
        "the stream's delete of 7 (a tombstone)",
        "SELECT count(*) FROM remodel.ledger WHERE rel = 'public.docs' AND skey = '[\"7\"]' AND deleted",
        1,
    )
    .await;
    assert_eq!(
        deferred(&db).await,
        0,
        "the stream's delete left the entry of the row it removed"
    );
    release(&db.target, RES).await;
    wait_log(
        &r.d,
        "the held round to end",
        "deferred partial updates re-read",
    )
    .await;
    r.d.wait_metric("remodel_deferred_rows", |v| v == 0.0).await;
    assert!(rows(&db.target, "SELECT id::text FROM docs WHERE id = 7")
        .await
        .is_empty());
    converge_with(&db, PUBLISHED_ROWS, DOCS_ROWS, Duration::from_secs(60)).await;
    finish(r, &db).await;
}

/// A stream write of the row lands after the round read it (and before the round writes):
/// it is newer than the round's snapshot, and the re-read row must not overwrite it.
#[tokio::test]
async fn a_newer_stream_write_wins_over_the_re_read_row() {
    let db = fresh_db(pair()).await;
    seed_published(&db).await;
    let r = deferred_and_held(&db, RES + 1, 9).await;
    db.source
        .batch_execute("UPDATE docs SET v = 'newer', big = 'newer ' || big WHERE id = 9")
        .await
        .unwrap();
    let newer = wait_rows_as_source(&r, &db, "9", "the stream's newer write of 9").await;
    release(&db.target, RES + 1).await;
    wait_no_deferred(&r, &db).await;
    let q = "SELECT id || ':' || v || ':' || md5(big) FROM docs WHERE id = 9";
    assert_eq!(
        rows(&db.target, q).await,
        newer,
        "the re-read row (older than the stream's write) overwrote it"
    );
    converge_with(&db, PUBLISHED_ROWS, DOCS_ROWS, Duration::from_secs(60)).await;
    finish(r, &db).await;
}

/// `kill -9` after a round read the rows and before it wrote them: the entry survives the
/// crash, and the restarted daemon resolves it.
#[tokio::test]
async fn a_kill_between_deferral_and_resolution_resolves_after_restart() {
    let db = fresh_db(pair()).await;
    seed_published(&db).await;
    let mut r = start(&db, FILTERED, &[]).await;
    r.d.kill9();
    r.d.env
        .push(("REMODEL_FAILPOINTS".into(), "deferred.resolve".into()));
    r.d.spawn();
    r.d.wait_ready().await;
    wait_backfilled(&r, &db, "public.docs").await;
    db.source
        .batch_execute("UPDATE docs SET published = true, v = 'flipped' WHERE id = 11")
        .await
        .unwrap();
    r.d.wait_killed_at("deferred.resolve").await;
    assert_eq!(deferred(&db).await, 1, "the entry must survive the crash");
    assert!(rows(&db.target, "SELECT id::text FROM docs WHERE id = 11")
        .await
        .is_empty());
    r.d.env.retain(|(k, _)| k != "REMODEL_FAILPOINTS");
    r.d.spawn();
    r.d.wait_ready().await;
    wait_rows_as_source(&r, &db, "11", "row 11 after the restart").await;
    wait_no_deferred(&r, &db).await;
    converge_with(&db, PUBLISHED_ROWS, DOCS_ROWS, Duration::from_secs(60)).await;
    finish(r, &db).await;
}

/// Another partial update of the row is deferred after the round's snapshot (the target still
/// lacks the row): it is newer than the row the round writes, and the same round must fold it
/// in (as a chunk does), not leave it for a next round — here the next round is held back, and
/// the row must still end equal to the source with nothing deferred.
#[tokio::test]
async fn a_partial_update_deferred_after_the_snapshot_is_folded_in_by_the_same_round() {
    let db = fresh_db(pair()).await;
    seed_published(&db).await;
    let r = deferred_and_held(&db, RES + 1, 13).await;
    // The round is past its first barrier: hold it, so no later round can help.
    hold(&db.target, RES).await;
    db.source
        .batch_execute("UPDATE docs SET v = 'later' WHERE id = 13")
        .await
        .unwrap();
    wait_deferred_by_stream(&r, 2.0).await;
    release(&db.target, RES + 1).await;
    wait_rows_as_source(&r, &db, "13", "row 13 with the later partial update").await;
    wait_no_deferred(&r, &db).await;
    converge_with(&db, PUBLISHED_ROWS, DOCS_ROWS, Duration::from_secs(60)).await;
    release(&db.target, RES).await;
    finish(r, &db).await;
}

/// A backfill pass newer than a held round copies the row (and drops the entry, which its
/// snapshot contains): the round, writing from its older snapshot afterwards, must not
/// overwrite the newer copy. The chunk leaves no per-key version for a copied row; the one it
/// records for a key whose entry it drops is what stops the round.
#[tokio::test]
async fn a_round_never_overwrites_a_newer_backfill_copy_of_its_row() {
    let db = fresh_db(pair()).await;
    seed_docs(&db).await;
    hold(&db.target, RES + 1).await;
    let r = start(
        &db,
        "[backfill]\nenabled = false\nchunk_rows = 10\n",
        &[(DEFERRED_BARRIER, RES)],
    )
    .await;
    r.d.wait_ready().await;
    // No backfill in the daemon: the target lacks every row, so this update is deferred.
    db.source
        .batch_execute("UPDATE docs SET v = 'first' WHERE id = 13")
        .await
        .unwrap();
    wait_deferred_by_stream(&r, 1.0).await;
    wait_waiters(
        &r.d,
        &db.target,
        RES + 1,
        "ShareLock",
        1,
        "a round read row 13 ('first')",
    )
    .await;
    db.source
        .batch_execute("UPDATE docs SET v = 'second' WHERE id = 13")
        .await
        .unwrap();
    wait_deferred_by_stream(&r, 2.0).await;
    let path = r.d.config_path.to_str().unwrap().to_string();
    let (code, out) = tokio::task::spawn_blocking(move || {
        remodel_cmd(
            &["backfill", "--config", &path],
            &[("REMODEL__BACKFILL__ENABLED".into(), "true".into())],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "remodel backfill: {out}");
    let second = wait_rows_as_source(&r, &db, "13", "row 13 as the backfill copied it").await;
    assert_eq!(
        deferred(&db).await,
        0,
        "the backfill's fold removes the entry"
    );
    release(&db.target, RES + 1).await;
    wait_log(
        &r.d,
        "the held round to write",
        "deferred partial updates re-read",
    )
    .await;
    assert_eq!(
        rows(
            &db.target,
            "SELECT id || ':' || v || ':' || md5(big) FROM docs WHERE id = 13"
        )
        .await,
        second,
        "the round's older row overwrote the backfill's newer copy"
    );
    converge(&db, DOCS_ROWS).await;
    finish(r, &db).await;
}

/// A pause that arrives while a round waits to write: the round writes nothing, and the row
/// arrives after resume.
#[tokio::test]
async fn a_round_writes_nothing_while_paused_and_resolves_after_resume() {
    let db = fresh_db(pair()).await;
    seed_published(&db).await;
    let r = deferred_and_held(&db, RES + 1, 15).await;
    r.d.signal(Signal::SIGUSR1);
    r.d.wait_paused(true).await;
    release(&db.target, RES + 1).await;
    // The round ends one way or the other: it gives up for the pause, or (wrongly) writes.
    until(&r.d, "the round to give up for the pause", || async {
        let log = r.d.log();
        if log.contains("paused: deferred partial updates wait for resume")
            || log.contains("deferred partial updates re-read")
        {
            Ok(())
        } else {
            Err("not yet".to_string())
        }
    })
    .await;
    assert!(
        rows(&db.target, "SELECT id::text FROM docs WHERE id = 15")
            .await
            .is_empty(),
        "a round wrote while paused"
    );
    assert_eq!(deferred(&db).await, 1);
    r.d.signal(Signal::SIGUSR2);
    r.d.wait_paused(false).await;
    wait_rows_as_source(&r, &db, "15", "row 15 after resume").await;
    wait_no_deferred(&r, &db).await;
    converge_with(&db, PUBLISHED_ROWS, DOCS_ROWS, Duration::from_secs(60)).await;
    finish(r, &db).await;
}

/// A re-read row the target refuses stops the daemon naming the table, the key and the
/// target's reason, as the stream would: retrying cannot help, and an entry left to warnings
/// would hold every later one back. Here the odd docs are unpublished (filtered out, never
/// copied) and too long for the target's CHECK; row 5 flips in with `big` unchanged.
#[tokio::test]
async fn a_re_read_row_the_target_refuses_stops_the_daemon_naming_it() {
    let db = fresh_db(pair()).await;
    db.source
        .batch_execute(
            "CREATE TABLE docs (id int PRIMARY KEY, v text NOT NULL, big text NOT NULL,
                                published boolean NOT NULL);
             ALTER TABLE docs ALTER COLUMN big SET STORAGE EXTERNAL;
             INSERT INTO docs SELECT g, 'old ' || g,
                 repeat(md5(g::text), CASE WHEN g % 2 = 0 THEN 150 ELSE 250 END), g % 2 = 0
             FROM generate_series(1, 10) g;",
        )
        .await
        .unwrap();
    db.target
        .batch_execute(
            "CREATE TABLE docs (id int PRIMARY KEY, v text NOT NULL,
                                big text NOT NULL CONSTRAINT big_fits CHECK (length(big) < 6000))",
        )
        .await
        .unwrap();
    let r = start(&db, FILTERED, &[]).await;
    r.d.wait_ready().await;
    wait_backfilled(&r, &db, "public.docs").await;
    db.source
        .batch_execute("UPDATE docs SET published = true WHERE id = 5")
        .await
        .unwrap();
    let (st, r) = tokio::task::spawn_blocking(move || {
        let mut r = r;
        let st = r.d.wait_exit(Duration::from_secs(60));
        (st, r)
    })
    .await
    .unwrap();
    let log = r.d.log();
    assert_eq!(st.code(), Some(1), "expected a stop; log:\n{log}");
    assert!(
        log.contains("resolving deferred partial updates")
            && log.contains("public.docs key (5)")
            && log.contains("big_fits"),
        "the error must say it was a deferred row's re-read and name the table, key and reason; log:\n{log}"
    );
    assert_eq!(deferred(&db).await, 1, "the entry stays for after the fix");
    drop(r);
    drop_slot(&db).await;
}

/// One source transaction inserts a row and flips the filter out and back in, the TOASTed body
/// unchanged by the flips: the row must be on the target.
#[tokio::test]
async fn an_insert_then_a_filter_flip_out_and_back_in_one_transaction_keeps_the_row() {
    let db = fresh_db(pair()).await;
    seed_published(&db).await;
    let r = start(&db, FILTERED, &[]).await;
    r.d.wait_ready().await;
    wait_backfilled(&r, &db, "public.docs").await;
    db.source
        .batch_execute(
            "BEGIN;
             INSERT INTO docs VALUES (25000, 'new', repeat(md5('x'), 200), true);
             UPDATE docs SET published = NOT published WHERE id = 25000;
             UPDATE docs SET published = NOT published WHERE id = 25000;
             COMMIT;",
        )
        .await
        .unwrap();
    wait_rows_as_source(&r, &db, "25000", "row 25000 on the target").await;
    converge_with(&db, PUBLISHED_ROWS, DOCS_ROWS, Duration::from_secs(60)).await;
    finish(r, &db).await;
}
