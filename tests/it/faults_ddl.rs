//! Source DDL on a mapped table while the stream runs, seen through pgoutput Relation
//! messages: compatible changes go on; incompatible ones stop with a clear error before any
//! wrong write, and the fix the error names works.

use std::time::Duration;

use crate::support::compare::{converge, rows};
use crate::support::daemon::{config, drop_slot, free_listen, Daemon};
use crate::support::{fresh_db, pair, TestDb};

const SOURCE: &str =
    "CREATE TABLE t (id int PRIMARY KEY, a int NOT NULL, b text, c varchar(10), d text)";
const TARGET: &str = "CREATE TABLE t (id int PRIMARY KEY, a int NOT NULL, b text, c varchar(10))";
/// `d` is mapped away; everything else kept.
const MAPPING: &str = "[[tables]]\nsource = \"public.t\"\n[tables.columns]\nd = \"drop\"\n";
const ROWS: &str = "SELECT id || '|' || a || '|' || coalesce(b, '-') || '|' || coalesce(c, '-') FROM t ORDER BY id";

async fn setup() -> (TestDb, Daemon) {
    let db = fresh_db(pair()).await;
    db.source.batch_execute(SOURCE).await.unwrap();
    db.target.batch_execute(TARGET).await.unwrap();
    db.source
        .batch_execute(
            "INSERT INTO t SELECT g, g, 'b' || g, 'c', 'd' FROM generate_series(1, 50) g",
        )
        .await
        .unwrap();
    let listen = free_listen();
    let d = Daemon::start(&config(&db, &listen, MAPPING), &listen);
    d.wait_ready().await;
    converge(&db, ROWS).await;
    (db, d)
}

/// The daemon stops (exit 1) with `expect` in its log, and the target has no row `id`.
async fn stops_before_writing(db: &TestDb, d: &mut Daemon, id: i32, expect: &[&str]) -> String {
    let st = tokio::task::block_in_place(|| d.wait_exit(Duration::from_secs(60)));
    let log = d.log();
    assert_eq!(st.code(), Some(1), "{log}");
    for e in expect {
        assert!(log.contains(e), "expected {e:?} in:\n{log}");
    }
    assert_eq!(
        rows(
            &db.target,
            &format!("SELECT count(*)::text FROM t WHERE id = {id}")
        )
        .await,
        ["0"],
        "a row after the DDL was written"
    );
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_column_the_mapping_drops_goes_on() {
    let (db, mut d) = setup().await;
    db.source
        .batch_execute("ALTER TABLE t DROP COLUMN d; INSERT INTO t VALUES (100, 100, 'after', 'x')")
        .await
        .unwrap();
    db.source
        .batch_execute("UPDATE t SET b = 'changed' WHERE id = 3")
        .await
        .unwrap();
    converge(&db, ROWS).await;
    assert!(!d.log().contains("fatal"), "{}", d.log());
    d.stop();
    drop_slot(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_column_the_mapping_needs_stops_before_any_write() {
    let (db, mut d) = setup().await;
    db.source
        .batch_execute("ALTER TABLE t DROP COLUMN b; INSERT INTO t VALUES (100, 100, 'x', 'd')")
        .await
        .unwrap();
    stops_before_writing(&db, &mut d, 100, &["no longer has column b"]).await;
    drop_slot(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_an_unmapped_column_stops_and_the_named_fix_works() {
    let (db, mut d) = setup().await;
    db.source
        .batch_execute(
            "ALTER TABLE t ADD COLUMN e int; INSERT INTO t VALUES (100, 100, 'x', 'y', 'd', 7)",
        )
        .await
        .unwrap();
    stops_before_writing(&db, &mut d, 100, &["gained column e", "e = \"drop\""]).await;
    // The fix: the column on the target too; the restart maps it and goes on.
    db.target
        .batch_execute("ALTER TABLE t ADD COLUMN e int")
        .await
        .unwrap();
    d.spawn();
    d.wait_ready().await;
    converge(
        &db,
        "SELECT id || '|' || coalesce(e, -1) FROM t ORDER BY id",
    )
    .await;
    converge(&db, ROWS).await;
    d.stop();
    drop_slot(&db).await;
}

/// varchar(10) → varchar(50): applied with the compiled `::varchar(10)` cast, a 30-character
/// value would be cut silently. It stops instead, and after the target follows, goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altering_a_column_type_stops_before_a_truncated_write() {
    let (db, mut d) = setup().await;
    let long = "abcdefghij0123456789ABCDEFGHIJ";
    db.source
        .batch_execute(&format!(
            "ALTER TABLE t ALTER COLUMN c TYPE varchar(50); INSERT INTO t VALUES (100, 100, 'x', '{long}', 'd')"
        ))
        .await
        .unwrap();
    stops_before_writing(
        &db,
        &mut d,
        100,
        &["column c changed type", "character varying(10)"],
    )
    .await;
    db.target
        .batch_execute("ALTER TABLE t ALTER COLUMN c TYPE varchar(50)")
        .await
        .unwrap();
    d.spawn();
    d.wait_ready().await;
    converge(&db, ROWS).await;
    assert_eq!(
        rows(&db.target, "SELECT c FROM t WHERE id = 100").await,
        [long]
    );
    d.stop();
    drop_slot(&db).await;
}

/// RENAME COLUMN would read as "a new column" (whose suggested `= "drop"` would silently stop
/// filling the target column): it is named as a rename, and the fix it names works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_a_column_is_named_as_a_rename_with_a_fix_that_works() {
    let (db, mut d) = setup().await;
    db.source
        .batch_execute("ALTER TABLE t RENAME COLUMN b TO bb; INSERT INTO t VALUES (100, 100, 'renamed', 'y', 'd')")
        .await
        .unwrap();
    stops_before_writing(
        &db,
        &mut d,
        100,
        &["column b was renamed to bb", "bb = { rename = \"b\" }"],
    )
    .await;
    let fixed = format!("{MAPPING}bb = {{ rename = \"b\" }}\n");
    let toml = std::fs::read_to_string(&d.config_path)
        .unwrap()
        .replace(MAPPING, &fixed);
    std::fs::write(&d.config_path, toml).unwrap();
    d.spawn();
    d.wait_ready().await;
    converge_renamed(&db).await;
    d.stop();
    drop_slot(&db).await;
}

async fn converge_renamed(db: &TestDb) {
    crate::support::compare::converge_with(
        db,
        "SELECT id || '|' || a || '|' || coalesce(bb, '-') || '|' || coalesce(c, '-') FROM t ORDER BY id",
        ROWS,
        Duration::from_secs(60),
    )
    .await;
}

/// RENAME TABLE would read as "a table with no mapping appeared": it is named as a rename.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_a_table_is_named_as_a_rename() {
    let (db, mut d) = setup().await;
    db.source
        .batch_execute(
            "ALTER TABLE t RENAME TO t2; INSERT INTO t2 VALUES (100, 100, 'x', 'y', 'd')",
        )
        .await
        .unwrap();
    stops_before_writing(
        &db,
        &mut d,
        100,
        &[
            "source table public.t was renamed to public.t2",
            "source = \"public.t2\"",
        ],
    )
    .await;
    drop_slot(&db).await;
}

/// The daemon is down while a row is written and the column's type then changes. On start the
/// plan is compiled for the new type, and the stream first replays the older transaction with
/// the old type in its Relation message: that is history, not a change under the stream, and
/// must not stop the daemon (it would stop on every restart, forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_replayed_from_before_a_type_change_is_not_mistaken_for_one() {
    let (db, mut d) = setup().await;
    d.stop();
    let long = "abcdefghij0123456789ABCDEFGHIJ";
    db.source
        .batch_execute("INSERT INTO t VALUES (99, 99, 'before', 'short', 'd')")
        .await
        .unwrap();
    db.source
        .batch_execute(&format!(
            "ALTER TABLE t ALTER COLUMN c TYPE varchar(50); INSERT INTO t VALUES (100, 100, 'after', '{long}', 'd')"
        ))
        .await
        .unwrap();
    db.target
        .batch_execute("ALTER TABLE t ALTER COLUMN c TYPE varchar(50)")
        .await
        .unwrap();
    d.spawn();
    d.wait_ready().await;
    converge(&db, ROWS).await;
    assert!(!d.log().contains("changed type"), "{}", d.log());
    d.stop();
    drop_slot(&db).await;
}
