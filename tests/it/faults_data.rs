//! Bad and unusual data through both paths (backfill and stream): special numeric and time
//! values, huge arrays, enums, domains, composites, generated columns, tables without a
//! primary key, replica identity FULL and NOTHING, partitioned tables published via their
//! root, unlogged tables.

use crate::support::compare::{converge, rows};
use crate::support::daemon::{check, config, drop_slot, free_listen, Daemon};
use crate::support::{fresh_db, pair};

const TYPES: &str = "
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TYPE pair AS (x int, y text);
CREATE TABLE odd (
    id int PRIMARY KEY,
    n numeric, f float8, r real, ts timestamp, tz timestamptz, d date,
    arr int[], m mood, p posint, c pair, j jsonb, txt text, b bytea,
    g int GENERATED ALWAYS AS (id * 2) STORED);";

/// Every column as text, generated one included (the target computes its own).
const ODD: &str = "SELECT id || '|' || concat_ws('|', n, f, r, ts, tz, d, md5(arr::text), \
                   cardinality(arr), m, p, c, j, txt, encode(b, 'hex'), g) FROM odd ORDER BY id";

fn odd_rows(from: i32, to: i32) -> String {
    format!(
        "INSERT INTO odd (id, n, f, r, ts, tz, d, arr, m, p, c, j, txt, b)
         SELECT g,
                (ARRAY['NaN', 'Infinity', '-Infinity', '0.000000000000000000001', '-123456789012345678901234567890.5'])[1 + g % 5]::numeric,
                (ARRAY['NaN', 'Infinity', '-Infinity', '1e308', '-0'])[1 + g % 5]::float8,
                (ARRAY['NaN', 'Infinity', '-Infinity', '3.4e38', '1.17549e-38'])[1 + g % 5]::real,
                (ARRAY['infinity', '-infinity', '4713-01-01 BC', '294276-12-31 23:59:59.999999'])[1 + g % 4]::timestamp,
                (ARRAY['infinity', '-infinity', '2024-02-29 12:00:00.123456+05:30'])[1 + g % 3]::timestamptz,
                (ARRAY['infinity', '-infinity', '0001-01-01'])[1 + g % 3]::date,
                CASE WHEN g % 7 = 0 THEN (SELECT array_agg(x) FROM generate_series(1, 200000) x)
                     WHEN g % 7 = 1 THEN '{{}}'::int[]
                     WHEN g % 7 = 2 THEN '{{NULL, 1, NULL}}'::int[]
                     ELSE ARRAY[g, -g] END,
                (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::mood,
                1 + g,
                ROW(g, E'a,b \"q\" \\\\ ''s'' ()')::pair,
                jsonb_build_object('k', g, 'nested', jsonb_build_array(1, 'x', NULL, 1.5e300), 'uni', E'\\u00e9\\u4e2d\\U0001F600'),
                E'tab\\there\\nnewline \\\\ backslash ''quote'' \"dq\" ' || repeat('é', g % 50),
                decode(md5(g::text), 'hex') || '\\x00ff'::bytea
         FROM generate_series({from}, {to}) g"
    )
}

#[tokio::test]
async fn unusual_values_and_types_round_trip_through_backfill_and_stream() {
    let db = fresh_db(pair()).await;
    db.on_both(TYPES).await;
    // Backfill copies these...
    db.source.batch_execute(&odd_rows(1, 30)).await.unwrap();
    let listen = free_listen();
    let d = Daemon::start(&config(&db, &listen, ""), &listen);
    d.wait_ready().await;
    // ...the stream carries these, and the updates and deletes.
    db.source.batch_execute(&odd_rows(31, 60)).await.unwrap();
    db.source
        .batch_execute(
            "UPDATE odd SET n = 'NaN', ts = '-infinity', arr = arr || 7, c = ROW(NULL, NULL) WHERE id % 4 = 0;
             UPDATE odd SET j = NULL, txt = NULL WHERE id % 9 = 0;
             DELETE FROM odd WHERE id % 11 = 0;",
        )
        .await
        .unwrap();
    let got = converge(&db, ODD).await;
    assert_eq!(got.len(), 60 - 5, "rows: {}", got.len());
    assert!(got
        .iter()
        .any(|r| r.contains("NaN") && r.contains("-Infinity")));
    d.wait_metric(
        "remodel_backfill_progress_ratio{table=\"public.odd\"}",
        |v| v == 1.0,
    )
    .await;
    converge(&db, ODD).await;
    assert!(!d.log().contains("fatal"), "{}", d.log());
    drop(d);
    drop_slot(&db).await;
}

/// A partitioned table published through its root: changes of every partition (and a row
/// moving between partitions) arrive as the root's, and backfill reads the root.
#[tokio::test]
async fn a_partitioned_table_published_via_its_root_streams_and_backfills() {
    let db = fresh_db(pair()).await;
    db.source
        .batch_execute(
            "CREATE TABLE parts (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
             CREATE TABLE parts_eu PARTITION OF parts FOR VALUES IN ('eu');
             CREATE TABLE parts_us PARTITION OF parts FOR VALUES IN ('us');
             INSERT INTO parts SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g FROM generate_series(1, 500) g;",
        )
        .await
        .unwrap();
    db.source
        .batch_execute(&format!(
            "CREATE PUBLICATION {} FOR TABLE parts WITH (publish_via_partition_root = true)",
            db.name
        ))
        .await
        .unwrap();
    db.target
        .batch_execute("CREATE TABLE parts (id int, region text, v int, PRIMARY KEY (id, region))")
        .await
        .unwrap();
    let listen = free_listen();
    let d = Daemon::start(&config(&db, &listen, ""), &listen);
    d.wait_ready().await;
    db.source
        .batch_execute(
            "INSERT INTO parts SELECT g, 'eu', g FROM generate_series(501, 600) g;
             UPDATE parts SET v = -v WHERE id % 10 = 0;
             UPDATE parts SET region = 'us' WHERE id IN (2, 4, 6);
             DELETE FROM parts WHERE id % 7 = 0;",
        )
        .await
        .unwrap();
    const PARTS: &str = "SELECT id || '|' || region || '|' || v FROM parts ORDER BY id, region";
    converge(&db, PARTS).await;
    d.wait_metric(
        "remodel_backfill_progress_ratio{table=\"public.parts\"}",
        |v| v == 1.0,
    )
    .await;
    converge(&db, PARTS).await;
    assert!(!d.log().contains("fatal"), "{}", d.log());
    drop(d);
    drop_slot(&db).await;
}

/// REPLICA IDENTITY FULL without a primary key works with a configured key; a table without
/// a usable key, an UNLOGGED table and a published REPLICA IDENTITY NOTHING table are named by
/// `check` with their fix.
#[tokio::test]
async fn keyless_unlogged_and_identity_nothing_tables_are_handled_or_named() {
    let db = fresh_db(pair()).await;
    // No primary key on the source (identity FULL, a configured key); the target's key.
    db.source
        .batch_execute(
            "CREATE TABLE full_ident (code text NOT NULL UNIQUE, v int);
             ALTER TABLE full_ident REPLICA IDENTITY FULL;",
        )
        .await
        .unwrap();
    db.target
        .batch_execute("CREATE TABLE full_ident (code text PRIMARY KEY, v int)")
        .await
        .unwrap();
    db.source
        .batch_execute("INSERT INTO full_ident SELECT 'c' || g, g FROM generate_series(1, 100) g")
        .await
        .unwrap();
    let mapping = "[[tables]]\nsource = \"public.full_ident\"\nkey = [\"code\"]\n";
    let listen = free_listen();
    let d = Daemon::start(&config(&db, &listen, mapping), &listen);
    d.wait_ready().await;
    db.source
        .batch_execute(
            "UPDATE full_ident SET v = v * 10 WHERE v % 3 = 0;
             UPDATE full_ident SET code = code || 'x' WHERE v = 5;
             DELETE FROM full_ident WHERE v % 5 = 1;",
        )
        .await
        .unwrap();
    converge(
        &db,
        "SELECT code || '|' || coalesce(v, -1) FROM full_ident ORDER BY code",
    )
    .await;
    drop(d);
    drop_slot(&db).await;

    // Now the tables check must name.
    let db = fresh_db(pair()).await;
    db.on_both(
        "CREATE TABLE nokey (a int, b text);
         CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY, v text);
         CREATE TABLE nothing (id int PRIMARY KEY, v text);
         ALTER TABLE nothing REPLICA IDENTITY NOTHING;",
    )
    .await;
    let (code, out) = check(
        &db,
        "[[tables]]\nsource = \"public.nokey\"\n[[tables]]\nsource = \"public.scratch\"\n[[tables]]\nsource = \"public.nothing\"\n",
    );
    assert_eq!(code, Some(1), "{out}");
    for want in [
        "public.nokey",
        "key",
        "public.scratch",
        "UNLOGGED",
        "SET LOGGED",
        "public.nothing",
        "REPLICA IDENTITY",
    ] {
        assert!(out.contains(want), "check output lacks {want:?}:\n{out}");
    }
    let _ = rows(&db.source, "SELECT 1::text").await;
}
