//! Pass-scoped version recording (ADR 0012): the stream writes the ledger only for tables a
//! running snapshot reader announced, from the reader's in-band mark on, until no session
//! holds the reader's lock; across a kill -9 between the mark and the first write after it.
//!
//! A reader is played by the test: a target session holding the lock a pass holds, and the
//! mark a pass commits on the source (`StateSchema::register_pass` does both).

use tokio_postgres::Client;

use crate::support::daemon::{config, free_listen, Daemon};
use crate::support::locks::wait_count;
use crate::support::{fresh_db, pair, TestDb};

const DDL: &str = "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL);
                   CREATE TABLE other (id int PRIMARY KEY)";

/// Play a reader of `tables` (a JSON array, or `null` for all): hold its lock, commit its
/// mark, and wait until the stream records for it. Recording ends once the client is dropped.
pub async fn reader(db: &TestDb, d: &Daemon, owner: &str, tables: &str) -> Client {
    let c = hold(db, owner).await;
    db.source
        .batch_execute(&mark_sql(db, owner, tables))
        .await
        .unwrap();
    let sql = format!("SELECT count(*) FROM remodel.recording WHERE owner = '{owner}'");
    wait_count(d, &db.target, "the stream records for the reader", &sql, 1).await;
    c
}

/// Take reader `owner`'s lock on a session of its own (kept while the client lives).
async fn hold(db: &TestDb, owner: &str) -> Client {
    let c = pair().target.client(&db.name).await;
    c.execute(
        "SELECT pg_advisory_lock_shared(hashtextextended('remodel-pass:' || $1, 0))",
        &[&owner],
    )
    .await
    .unwrap();
    c
}

fn mark_sql(db: &TestDb, owner: &str, tables: &str) -> String {
    format!(
        "SELECT pg_logical_emit_message(true, 'remodel.pass', \
         '{{\"slot\": \"{}\", \"owner\": \"{owner}\", \"tables\": {tables}}}')",
        db.name
    )
}

/// The source's WAL position now: every later commit is at or after it.
async fn now(db: &TestDb) -> String {
    db.source
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap()
        .get(0)
}

/// Update rows 1..=n of t, one transaction, and wait until the target has them.
async fn update(db: &TestDb, d: &Daemon, n: i32, v: i32) {
    db.source
        .execute("UPDATE t SET v = $2 WHERE id <= $1", &[&n, &v])
        .await
        .unwrap();
    let sql = format!("SELECT count(*) FROM t WHERE id <= {n} AND v = {v}");
    wait_count(d, &db.target, "the update applied", &sql, i64::from(n)).await;
}

/// Ledger entries of t at or after `since`.
async fn recorded_since(db: &TestDb, since: &str) -> i64 {
    db.target
        .query_one(
            "SELECT count(*) FROM remodel.ledger WHERE rel = 'public.t' AND version >= $1::text::pg_lsn",
            &[&since],
        )
        .await
        .unwrap()
        .get(0)
}

async fn wait_recording(db: &TestDb, d: &Daemon, owners: i64) {
    let sql = "SELECT count(*) FROM remodel.recording";
    wait_count(d, &db.target, "recording rows", sql, owners).await;
}

async fn start(db: &TestDb, env: Vec<(String, String)>) -> Daemon {
    db.on_both(DDL).await;
    db.source
        .batch_execute("INSERT INTO t SELECT g, 0 FROM generate_series(1, 50) g")
        .await
        .unwrap();
    let listen = free_listen();
    let d = Daemon::start_env(&config(db, &listen, ""), &listen, env);
    d.wait_ready().await;
    crate::switch::backfill_done(db).await;
    // The backfill pass ended: nothing is recorded for it any more.
    wait_recording(db, &d, 0).await;
    d
}

#[tokio::test]
async fn a_pass_mark_starts_recording_for_its_tables_and_its_lock_going_ends_it() {
    let db = fresh_db(pair()).await;
    let mut d = start(&db, vec![]).await;

    // No reader: the stream writes without versions.
    let since = now(&db).await;
    update(&db, &d, 10, 1).await;
    assert_eq!(recorded_since(&db, &since).await, 0, "no pass, no versions");
    // So the ledger cannot list them: `verify --since` says so instead of comparing nothing.
    let (code, out) = crate::switch::cli_async(&d, &["verify", "--since", &since]).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("public.t") && out.contains("without recording their versions"),
        "{out}"
    );
    // verify announced itself too (every table); its recording ends with it.
    wait_recording(&db, &d, 0).await;

    // A reader of another table: t is still written plainly.
    let other = hold(&db, "reader-other").await;
    db.source
        .batch_execute(&mark_sql(&db, "reader-other", "[\"public.other\"]"))
        .await
        .unwrap();
    wait_recording(&db, &d, 1).await;
    let since = now(&db).await;
    update(&db, &d, 10, 2).await;
    assert_eq!(
        recorded_since(&db, &since).await,
        0,
        "a pass of another table"
    );

    // A reader of t: every write after its mark is recorded.
    let reader = hold(&db, "reader-t").await;
    db.source
        .batch_execute(&mark_sql(&db, "reader-t", "[\"public.t\"]"))
        .await
        .unwrap();
    let since = now(&db).await;
    update(&db, &d, 10, 3).await;
    assert_eq!(
        recorded_since(&db, &since).await,
        10,
        "a pass of t: recorded"
    );
    let (code, out) =
        crate::switch::cli_async(&d, &["verify", "--since", &since, "--table", "t", "--json"])
            .await;
    assert_eq!(code, Some(0), "every write since was recorded: {out}");
    wait_recording(&db, &d, 2).await;

    // The readers' sessions end: recording ends (within the stream's refresh), nothing more
    // is recorded.
    drop(other);
    drop(reader);
    wait_recording(&db, &d, 0).await;
    let since = now(&db).await;
    update(&db, &d, 10, 4).await;
    assert_eq!(recorded_since(&db, &since).await, 0, "the pass ended");
    // And what it recorded is pruned: no reader needs it.
    let sql = "SELECT count(*) FROM remodel.ledger WHERE rel = 'public.t'";
    wait_count(&d, &db.target, "t's ledger entries pruned", sql, 0).await;
    d.stop();
}

#[tokio::test]
async fn a_kill_between_a_pass_mark_and_the_writes_after_it_keeps_them_recorded() {
    let db = fresh_db(pair()).await;
    let mut d = start(&db, vec![]).await;
    // Armed once the backfill pass (whose mark would hit it first) is over.
    d.stop();
    d.env
        .push(("REMODEL_FAILPOINTS".into(), "apply.after_pass_mark".into()));
    d.spawn();
    d.wait_ready().await;
    let _reader = hold(&db, "reader-t").await;
    // The mark and a write of t in one source transaction: the daemon dies right after the
    // mark, before the write, with nothing of the transaction committed on the target.
    let since = now(&db).await;
    db.source
        .batch_execute(&format!(
            "BEGIN; {}; UPDATE t SET v = 7 WHERE id <= 5; COMMIT",
            mark_sql(&db, "reader-t", "null")
        ))
        .await
        .unwrap();
    d.wait_killed_at("apply.after_pass_mark").await;
    d.env.retain(|(k, _)| k != "REMODEL_FAILPOINTS");
    d.spawn();
    d.wait_ready().await;
    update(&db, &d, 5, 7).await;
    assert_eq!(
        recorded_since(&db, &since).await,
        5,
        "the mark was streamed again"
    );
    wait_recording(&db, &d, 1).await;

    // After a kill -9 once the mark committed, the stored mark keeps recording.
    d.kill9();
    d.spawn();
    d.wait_ready().await;
    let since = now(&db).await;
    update(&db, &d, 8, 8).await;
    assert_eq!(recorded_since(&db, &since).await, 8, "the stored mark");
    d.stop();
}
