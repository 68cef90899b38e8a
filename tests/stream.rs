//! End-to-end streaming: the real binary between two real clusters.

mod support;

use std::time::Duration;

use support::daemon::{config, free_listen, Daemon};
use support::{fresh_db, pair, wait_until, TestDb};
use tokio_postgres::Client;

const TYPES_DDL: &str = "CREATE TABLE kinds (
    id int PRIMARY KEY, big bigint, num numeric(20,6), txt text, raw bytea, doc jsonb,
    at timestamptz, uid uuid, arr int[], tags text[])";

async fn rows(c: &Client, sql: &str) -> Vec<String> {
    c.query(sql, &[])
        .await
        .expect("query")
        .iter()
        .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
        .collect()
}

/// Wait until `sql` returns the same rows on both sides.
async fn converge(db: &TestDb, sql: &str) -> Vec<String> {
    let (s, t) = (&db.source, &db.target);
    wait_until("target = source", Duration::from_secs(30), || async move {
        let a = rows(s, sql).await;
        let b = rows(t, sql).await;
        if a == b {
            Ok(a)
        } else {
            Err(format!("source {} rows, target {} rows; first diff: {:?}", a.len(), b.len(),
                a.iter().zip(&b).find(|(x, y)| x != y)))
        }
    })
    .await
}

#[tokio::test]
async fn streams_inserts_updates_deletes_of_common_types() {
    let p = pair();
    let db = fresh_db(p).await;
    db.source.batch_execute(TYPES_DDL).await.unwrap();
    db.target.batch_execute(TYPES_DDL).await.unwrap();
    let listen = free_listen();
    let d = Daemon::start(&config(&db.source_url, &db.target_url, &listen, ""), &listen);
    d.wait_ready().await;
    db.source
        .batch_execute(
            "INSERT INTO kinds VALUES
               (1, 9223372036854775807, 12345.678901, 'héllo wörld ✓ 日本', '\\xdeadbeef', '{\"a\": [1, 2, {\"b\": null}]}',
                '2024-02-29 12:34:56.789+05:30', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1,2,3}', '{\"x y\",NULL,\"q\\\"uote\"}'),
               (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
               (3, -1, -0.000001, '', '\\x', '[]', '-infinity', '00000000-0000-0000-0000-000000000000', '{}', '{}');
             UPDATE kinds SET txt = 'changed', num = 1e10 WHERE id = 1;
             DELETE FROM kinds WHERE id = 3;
             BEGIN; INSERT INTO kinds (id, txt) VALUES (4, 'four'); UPDATE kinds SET txt = 'FOUR' WHERE id = 4; COMMIT;
             UPDATE kinds SET id = 20 WHERE id = 2;",
        )
        .await
        .unwrap();
    let got = converge(&db, "SELECT row_to_json(k)::text FROM kinds k ORDER BY id").await;
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got[0].contains("héllo") == false && got[0].contains("changed"), "{got:?}");
    assert!(got[2].contains("\"id\":20"), "key change moved the row: {got:?}");
    let inserts = d.metric("remodel_changes_applied_total{op=\"insert\",table=\"public.kinds\"}").await;
    assert_eq!(inserts, 4.0);
    drop(d);
}
