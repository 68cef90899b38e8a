//! Reviewer findings: each test pins an invariant of docs/architecture.md#contract that the code broke when it
//! was written (see the comment on each test for the invariant and the failing path).

use std::time::Duration;

use crate::support::compare::rows;
use crate::support::daemon::{config, drop_slot, free_listen, Daemon};
use crate::support::{fresh_db, pair, wait_until, TestDb};

/// Wait until `sql` on the target returns exactly `want`.
async fn target_has(db: &TestDb, what: &str, sql: &str, want: &[&str]) {
    let t = &db.target;
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    wait_until(what, Duration::from_secs(30), || {
        let want = want.clone();
        async move {
            let got = rows(t, sql).await;
            if got == want {
                Ok(())
            } else {
                Err(got)
            }
        }
    })
    .await;
}

const DOCS_DDL: &str = "CREATE TABLE docs (id int PRIMARY KEY, title text, body text)";
const DOCS: &str = "SELECT id || ':' || title || ':' || coalesce(md5(body), 'NULL') || ':' || coalesce(length(body), -1) FROM docs ORDER BY id";
/// 40 kB of incompressible text: stored out of line, so an update that does not touch `body`
/// sends it as "unchanged TOAST" ('u').
const BIG_ROW: &str = "INSERT INTO docs SELECT 1, 'v1', string_agg(md5(random()::text), '') FROM generate_series(1, 1250)";

/// Invariants 1 and 7: an update that changes the primary key of a row with an unchanged
/// TOASTed column. The stream sends the old key and a new tuple with `body` = unchanged;
/// transform turns it into Delete(old key) + Upsert(new key, body unchanged), and apply runs
/// the latter as `UPDATE .. WHERE id = <new key>`, which matches nothing. The row vanishes
/// from the target without an error, and the slot is confirmed past it.
#[tokio::test]
async fn key_change_of_a_row_with_unchanged_toast_keeps_the_row() {
    let db = fresh_db(pair()).await;
    db.on_both(DOCS_DDL).await;
    let listen = free_listen();
    let d = Daemon::start(&config(&db, &listen, ""), &listen);
    d.wait_ready().await;
    db.source.batch_execute(BIG_ROW).await.unwrap();
    target_has(
        &db,
        "row 1 streamed",
        "SELECT count(*)::text FROM docs",
        &["1"],
    )
    .await;
    db.source
        .batch_execute("UPDATE docs SET id = 10 WHERE id = 1")
        .await
        .unwrap();
    // A later transaction: once it is on the target, the key change has been applied.
    db.source
        .batch_execute("INSERT INTO docs VALUES (99, 'marker', 'x')")
        .await
        .unwrap();
    target_has(
        &db,
        "marker applied",
        "SELECT count(*)::text FROM docs WHERE id = 99",
        &["1"],
    )
    .await;
    let source = rows(&db.source, DOCS).await;
    let target = rows(&db.target, DOCS).await;
    assert_eq!(
        target,
        source,
        "target lost the re-keyed row; log:\n{}",
        d.log()
    );
    drop(d);
    drop_slot(&db).await;
}

/// Invariant 7 (and invariant 2 once backfill exists): an update with an unchanged TOASTed
/// column of a row the target does not have yet writes nothing to the target but still
/// records the row's version in the ledger as live. The ledger then claims the target holds
/// the row at that version, so a backfill chunk (version P-1 < that version) would be refused
/// for this key and the row would never arrive. The design says changes to rows the target
/// does not have yet are applied as upserts; when that is impossible (no value for `body`),
/// the change must not be silently swallowed.
#[tokio::test]
async fn partial_update_of_a_row_missing_on_the_target_is_not_swallowed() {
    let db = fresh_db(pair()).await;
    db.on_both(DOCS_DDL).await;
    // Exists before the daemon starts: never streamed.
    db.source.batch_execute(BIG_ROW).await.unwrap();
    let listen = free_listen();
    // Backfill off: this pins what the stream alone does with such an update.
    let d = Daemon::start(
        &config(&db, &listen, "[backfill]\nenabled = false\n"),
        &listen,
    );
    d.wait_ready().await;
    db.source
        .batch_execute("UPDATE docs SET title = 'v2' WHERE id = 1")
        .await
        .unwrap();
    db.source
        .batch_execute("INSERT INTO docs VALUES (99, 'marker', 'x')")
        .await
        .unwrap();
    let t = &db.target;
    let status = wait_until(
        "marker applied or daemon stopped",
        Duration::from_secs(30),
        || async {
            let n = rows(t, "SELECT count(*)::text FROM docs WHERE id = 99").await;
            if n == ["1"] {
                return Ok("applied");
            }
            if d.get("/healthz").await.is_none() {
                return Ok("stopped");
            }
            Err(n)
        },
    )
    .await;
    if status == "applied" {
        let on_target = rows(t, "SELECT count(*)::text FROM docs WHERE id = 1").await;
        let ledger = rows(
            t,
            "SELECT version::text || '/' || deleted FROM remodel.ledger WHERE rel = 'public.docs' AND skey = '[\"1\"]'",
        )
        .await;
        assert!(
            !(on_target == ["0"] && ledger.iter().any(|l| l.ends_with("/false"))),
            "the update of row 1 was swallowed: the target has no row 1 but the ledger records it as live ({ledger:?}), \
             which would make a backfill skip the row; log:\n{}",
            d.log()
        );
        // Not swallowed: the update's values wait, with its version, in the deferred table.
        let deferred = rows(
            t,
            "SELECT skey || ' ' || target || ' ' || (columns->>'title') || ' ' || (columns ? 'body') FROM remodel.deferred",
        )
        .await;
        assert_eq!(deferred, ["[\"1\"] public.docs v2 false"], "{}", d.log());
        // Counted when its target transaction commits (it may share one with the marker).
        d.wait_metric("remodel_deferred_rows_total{table=\"public.docs\"}", |v| {
            v == 1.0
        })
        .await;
        assert!(d.log().contains("deferred"), "{}", d.log());
    }
    drop(d);
    drop_slot(&db).await;
}

/// Invariants 1 and 3: `key = [..]` naming columns that are not the replica identity. With
/// REPLICA IDENTITY DEFAULT (the primary key `id`), an update of `code` carries no old tuple, so
/// transform cannot see that the configured key changed: it upserts the new `code` and leaves
/// the old target row in place forever. The compiler accepts this mapping without a problem.
#[tokio::test]
async fn configured_key_outside_the_replica_identity_is_rejected_or_followed() {
    let db = fresh_db(pair()).await;
    db.source
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, code text NOT NULL UNIQUE, v int)")
        .await
        .unwrap();
    db.target
        .batch_execute("CREATE TABLE items (code text PRIMARY KEY, v int)")
        .await
        .unwrap();
    let listen = free_listen();
    let mapping = "[[tables]]\nsource = \"public.items\"\nkey = [\"code\"]\n[tables.columns]\nid = \"drop\"\n";
    let mut d = Daemon::start(&config(&db, &listen, mapping), &listen);
    // Either the mapping is refused at start (exit), or the daemon must follow key changes.
    let started = std::time::Instant::now();
    let running = loop {
        if let Some((200, _)) = d.get("/readyz").await {
            break true;
        }
        if d.child.as_mut().unwrap().try_wait().unwrap().is_some() {
            break false;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "neither ready nor exited; log:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if running {
        db.source
            .batch_execute("INSERT INTO items VALUES (1, 'a', 1)")
            .await
            .unwrap();
        target_has(&db, "row a", "SELECT code FROM items ORDER BY code", &["a"]).await;
        db.source
            .batch_execute("UPDATE items SET code = 'b' WHERE id = 1")
            .await
            .unwrap();
        target_has(
            &db,
            "row b",
            "SELECT count(*)::text FROM items WHERE code = 'b'",
            &["1"],
        )
        .await;
        let target = rows(&db.target, "SELECT code FROM items ORDER BY code").await;
        assert_eq!(
            target,
            ["b"],
            "stale row under the old key stays on the target; log:\n{}",
            d.log()
        );
    } else {
        let log = d.log();
        assert!(
            log.contains("public.items") && log.contains("code"),
            "refused without naming table and key: {log}"
        );
    }
    drop(d);
    drop_slot(&db).await;
}

/// Invariant 1 (and the N→1 refusal of the compiler): a target primary key that covers only
/// part of the source key folds several source rows into one target row. A delete of one of
/// them deletes the target row although another source row still maps to it. The compiler
/// accepts this mapping; it should refuse it like any other N→1 merge.
#[tokio::test]
async fn target_key_narrower_than_the_source_key_is_rejected() {
    let db = fresh_db(pair()).await;
    db.source
        .batch_execute("CREATE TABLE pairs (a int, b int, v int, PRIMARY KEY (a, b))")
        .await
        .unwrap();
    db.target
        .batch_execute("CREATE TABLE pairs (a int PRIMARY KEY, v int)")
        .await
        .unwrap();
    let listen = free_listen();
    let mapping = "[[tables]]\nsource = \"public.pairs\"\n[tables.columns]\nb = \"drop\"\n";
    let mut d = Daemon::start(&config(&db, &listen, mapping), &listen);
    let started = std::time::Instant::now();
    let running = loop {
        if let Some((200, _)) = d.get("/readyz").await {
            break true;
        }
        if d.child.as_mut().unwrap().try_wait().unwrap().is_some() {
            break false;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "neither ready nor exited; log:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if running {
        db.source
            .batch_execute("INSERT INTO pairs VALUES (1, 1, 10)")
            .await
            .unwrap();
        db.source
            .batch_execute("INSERT INTO pairs VALUES (1, 2, 20)")
            .await
            .unwrap();
        db.source
            .batch_execute("DELETE FROM pairs WHERE a = 1 AND b = 1")
            .await
            .unwrap();
        db.source
            .batch_execute("INSERT INTO pairs VALUES (2, 1, 99)")
            .await
            .unwrap();
        target_has(
            &db,
            "marker row a=2",
            "SELECT count(*)::text FROM pairs WHERE a = 2",
            &["1"],
        )
        .await;
        let target = rows(&db.target, "SELECT a || ':' || v FROM pairs ORDER BY a").await;
        panic!(
            "the compiler accepted a target key (a) narrower than the source key (a, b): source still has (1, 2, 20) \
             but the target now holds {target:?}; log:\n{}",
            d.log()
        );
    }
    drop(d);
    drop_slot(&db).await;
}

/// Invariants 1 and 7: a column added to the source (and the target) while the daemon runs.
/// The mapping keeps unlisted columns, but the compiled plan only knows the columns of start
/// time: transform re-binds the new Relation and silently ignores the new column, so its values
/// never reach the target (and a restart does not repair rows already applied).
#[tokio::test]
async fn column_added_while_running_is_not_silently_dropped() {
    let db = fresh_db(pair()).await;
    let ddl = "CREATE TABLE a (id int PRIMARY KEY, x int)";
    db.on_both(ddl).await;
    let listen = free_listen();
    let d = Daemon::start(&config(&db, &listen, ""), &listen);
    d.wait_ready().await;
    db.source
        .batch_execute("INSERT INTO a VALUES (1, 1)")
        .await
        .unwrap();
    target_has(&db, "row 1", "SELECT count(*)::text FROM a", &["1"]).await;
    db.target
        .batch_execute("ALTER TABLE a ADD COLUMN c text")
        .await
        .unwrap();
    db.source
        .batch_execute("ALTER TABLE a ADD COLUMN c text")
        .await
        .unwrap();
    db.source
        .batch_execute("INSERT INTO a VALUES (2, 2, 'hello')")
        .await
        .unwrap();
    let t = &db.target;
    let status = wait_until(
        "row 2 applied or daemon stopped",
        Duration::from_secs(30),
        || async {
            let n = rows(t, "SELECT count(*)::text FROM a WHERE id = 2").await;
            if n == ["1"] {
                return Ok("applied");
            }
            if d.get("/healthz").await.is_none() {
                return Ok("stopped");
            }
            Err(n)
        },
    )
    .await;
    if status == "applied" {
        let c = rows(t, "SELECT coalesce(c, 'NULL') FROM a WHERE id = 2").await;
        assert_eq!(
            c,
            ["hello"],
            "the new column's value was silently dropped; log:\n{}",
            d.log()
        );
    }
    drop(d);
    drop_slot(&db).await;
}
