//! A key change through a switch: `config/examples/keychange.toml` as shipped (uuid keys →
//! bigints through key maps, the uuid kept as `uid`). After a cutover, an account and orders
//! born on NEW come back to OLD under their own uuids, references translated through the key
//! map; after a fallback, OLD's new order referencing that account lands on NEW with the
//! account's integer, not a newly allocated one.

use std::path::Path;
use std::time::Duration;

use crate::support::compare::rows;
use crate::support::daemon::{example_env, free_listen, Daemon};
use crate::support::{fresh_db, pair, wait_until};

use crate::mapping_keychange::{SOURCE as OLD_DDL, TARGET};

/// The reverse stream names NEW's rows by the original key (uid): its deletes must carry it.
const REPLICA_IDENTITY: &str = "
ALTER TABLE accounts REPLICA IDENTITY USING INDEX accounts_uid_key;
ALTER TABLE orders REPLICA IDENTITY USING INDEX orders_uid_key;";

const A1: &str = "10000000-0000-4000-8000-000000000001";
const A2: &str = "10000000-0000-4000-8000-000000000002";

/// OLD's orders as "order id|account id|amount", NEW's translated back the same way.
const OLD_ORDERS: &str =
    "SELECT id || '|' || coalesce(account_id::text, '-') || '|' || amount FROM orders ORDER BY 1";
const NEW_ORDERS: &str = "SELECT o.uid || '|' || coalesce(a.uid::text, '-') || '|' || o.amount \
                          FROM orders o LEFT JOIN accounts a ON a.id = o.account_id ORDER BY 1";
const OLD_ACCOUNTS: &str = "SELECT id || '|' || name FROM accounts ORDER BY 1";
const NEW_ACCOUNTS: &str = "SELECT uid || '|' || name FROM accounts ORDER BY 1";

#[tokio::test]
async fn key_maps_run_backwards_and_rows_born_on_new_keep_their_keys_across_a_fallback() {
    let db = fresh_db(pair()).await;
    db.source.batch_execute(OLD_DDL).await.unwrap();
    db.target
        .batch_execute(&format!("{TARGET}{REPLICA_IDENTITY}"))
        .await
        .unwrap();
    db.source
        .batch_execute(&format!(
            "INSERT INTO accounts VALUES ('{A1}', 'first'), ('{A2}', 'second');
             INSERT INTO orders SELECT gen_random_uuid(), '{A1}', g FROM generate_series(1, 5) g;"
        ))
        .await
        .unwrap();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/keychange.toml");
    let listen = free_listen();
    let mut d = Daemon::start_file(&file, &listen, example_env(&db, &listen, &[]));
    d.wait_ready().await;
    let (s, t) = (&db.source, &db.target);
    let same = |what: &'static str, old: &'static str, new: &'static str| async move {
        wait_until(what, Duration::from_secs(60), || async move {
            let (a, b) = (rows(s, old).await, rows(t, new).await);
            if a == b {
                Ok(a)
            } else {
                Err(format!("OLD {a:?}\nNEW {b:?}"))
            }
        })
        .await
    };
    same("accounts forward", OLD_ACCOUNTS, NEW_ACCOUNTS).await;
    same("orders forward", OLD_ORDERS, NEW_ORDERS).await;

    let (code, out) = crate::switch::cli_async(&d, &["cutover", "--verify-sample", "50"]).await;
    assert_eq!(code, Some(0), "cutover: {out}\n{}", d.log());
    assert!(out.contains("key maps"), "{out}");

    // The app on NEW: an account and an order born there, an order of an old account, an old
    // order moved to the other old account.
    let born: String = t
        .query_one(
            "INSERT INTO accounts (uid, name) VALUES (gen_random_uuid(), 'born on new') RETURNING uid::text",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    t.batch_execute(&format!(
        "INSERT INTO orders (uid, account_id, amount)
           SELECT gen_random_uuid(), id, 42 FROM accounts WHERE uid = '{born}';
         INSERT INTO orders (uid, account_id, amount)
           SELECT gen_random_uuid(), id, 43 FROM accounts WHERE uid = '{A2}';
         UPDATE orders SET account_id = (SELECT id FROM accounts WHERE uid = '{A2}')
          WHERE amount = 1;"
    ))
    .await
    .unwrap();
    let accounts = same("accounts backwards", OLD_ACCOUNTS, NEW_ACCOUNTS).await;
    assert!(
        accounts.contains(&format!("{born}|born on new")),
        "{accounts:?}"
    );
    let orders = same("orders backwards", OLD_ORDERS, NEW_ORDERS).await;
    assert!(
        orders
            .iter()
            .any(|o| o.ends_with(&format!("|{born}|42.00"))),
        "{orders:?}"
    );
    assert!(
        orders.iter().any(|o| o.ends_with(&format!("|{A2}|43.00"))),
        "{orders:?}"
    );
    assert!(
        orders.iter().any(|o| o.ends_with(&format!("|{A2}|1.00"))),
        "{orders:?}"
    );

    // Back to OLD: an order of the account born on NEW goes forward under its integer.
    let (code, out) = crate::switch::cli_async(&d, &["fallback"]).await;
    assert_eq!(code, Some(0), "fallback: {out}\n{}", d.log());
    let n_accounts: i64 = t
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    s.execute(
        "INSERT INTO orders VALUES (gen_random_uuid(), $1::text::uuid, 77)",
        &[&born],
    )
    .await
    .unwrap();
    let orders = same("orders forward again", OLD_ORDERS, NEW_ORDERS).await;
    assert!(
        orders
            .iter()
            .any(|o| o.ends_with(&format!("|{born}|77.00"))),
        "{orders:?}"
    );
    let after: i64 = t
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, n_accounts, "no account allocated twice");
    d.stop();
}
