//! The first slice of the mapping (rename, drop, cast, constant), the shipped config examples,
//! and the `check` / `status` commands.

use std::path::Path;

use crate::support::compare::{converge_with, rows};
use crate::support::daemon::{drop_slot, free_listen, remodel_cmd, Daemon};
use crate::support::{fresh_db, pair};

const SOURCE: &str = "
CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL, email text, legacy_code text,
                        age text, signed_up timestamptz);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint, amount numeric(12,2), status text);";
const TARGET: &str = "
CREATE TABLE clients (id bigint PRIMARY KEY, full_name text NOT NULL, email text, age integer,
                      signed_up timestamptz, origin text NOT NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint, amount numeric(12,2), status text);";

/// Connection settings for running a shipped example against `db`.
fn example_env(db: &crate::support::TestDb, listen: &str) -> Vec<(String, String)> {
    crate::support::daemon::example_env(db, listen, &[])
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/examples")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn every_config_example_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            remodel::config::Config::load(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 2, "expected the identity and rename examples");
}

/// `config/examples/rename.toml`, run as shipped with only the connection settings overridden
/// from the environment.
#[tokio::test]
async fn rename_example_renames_drops_casts_and_fills_constants() {
    let db = fresh_db(pair()).await;
    db.source.batch_execute(SOURCE).await.unwrap();
    db.target.batch_execute(TARGET).await.unwrap();
    let listen = free_listen();
    let env = example_env(&db, &listen);
    let (code, out) = remodel_cmd(&["check", "--config", &example("rename.toml")], &env);
    assert_eq!(code, Some(0), "check: {out}");
    let mut d = Daemon::start_file(Path::new(&example("rename.toml")), &listen, env.clone());
    d.wait_ready().await;
    db.source
        .batch_execute(
            "INSERT INTO customers VALUES (1, 'Ada', 'ada@x', 'L1', '36', '2020-01-01 00:00+00'), (2, 'Bob', NULL, NULL, NULL, NULL);
             INSERT INTO orders VALUES (10, 1, 9.99, 'new');
             UPDATE customers SET name = 'Ada L.', age = '37' WHERE id = 1;",
        )
        .await
        .unwrap();
    converge_with(
        &db,
        "SELECT id || '|' || name || '|' || coalesce(email, '-') || '|' || coalesce(age, '-') || '|' || coalesce(signed_up::text, '-') || '|legacy-crm' FROM customers ORDER BY id",
        "SELECT id || '|' || full_name || '|' || coalesce(email, '-') || '|' || coalesce(age::text, '-') || '|' || coalesce(signed_up::text, '-') || '|' || origin FROM clients ORDER BY id",
        std::time::Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        rows(&db.target, "SELECT id || ':' || amount FROM orders").await,
        ["10:9.99"]
    );
    // status through the same example + environment.
    let (code, out) = remodel_cmd(&["status", "--config", &example("rename.toml")], &env);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("daemon    streaming") && out.contains("position  applied 0/"),
        "{out}"
    );
    // A value the cast cannot convert stops the daemon naming table, key and value.
    db.source
        .batch_execute("INSERT INTO customers VALUES (3, 'Cy', NULL, NULL, 'thirty', NULL)")
        .await
        .unwrap();
    let st = d.wait_exit(std::time::Duration::from_secs(60));
    let log = d.log();
    assert_eq!(st.code(), Some(1), "{log}");
    assert!(
        log.contains("public.customers key (3)") && log.contains("\"thirty\""),
        "{log}"
    );
    drop_slot(&db).await;
}

#[tokio::test]
async fn check_lists_every_problem_with_its_fix() {
    let db = fresh_db(pair()).await;
    db.source
        .batch_execute(
            "CREATE TABLE nopk (x int); CREATE TABLE ri (id int PRIMARY KEY); ALTER TABLE ri REPLICA IDENTITY NOTHING;
             CREATE TABLE ok (id int PRIMARY KEY, gone text)",
        )
        .await
        .unwrap();
    db.target
        .batch_execute("CREATE TABLE ok (id int PRIMARY KEY, must text NOT NULL)")
        .await
        .unwrap();
    let (code, out) = crate::support::daemon::check(&db, "");
    assert_eq!(code, Some(1), "{out}");
    for needle in [
        "public.nopk",
        "REPLICA IDENTITY NOTHING",
        "public.ok.gone, which does not exist",
        "public.ok.must is NOT NULL without a default",
        "public.ri",
        "fix:",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    // check is read-only: no slot, no publication, no state schema.
    assert_eq!(
        rows(
            &db.source,
            &format!(
                "SELECT count(*)::text FROM pg_replication_slots WHERE slot_name = '{}'",
                db.name
            )
        )
        .await,
        ["0"]
    );
    assert_eq!(
        rows(
            &db.target,
            "SELECT count(*)::text FROM pg_namespace WHERE nspname = 'remodel'"
        )
        .await,
        ["0"]
    );
}

/// `config/examples/identity.toml` as shipped (connection settings from the environment):
/// every published table streams unchanged.
#[tokio::test]
async fn identity_example_streams_every_published_table() {
    let db = fresh_db(pair()).await;
    db.on_both(SOURCE).await;
    let listen = free_listen();
    let mut d = Daemon::start_file(
        Path::new(&example("identity.toml")),
        &listen,
        example_env(&db, &listen),
    );
    d.wait_ready().await;
    db.source
        .batch_execute(
            "INSERT INTO customers VALUES (1, 'Ada', 'a@x', 'L', '36', now());
             INSERT INTO orders VALUES (1, 1, 2.50, 'new'), (2, 1, 3.00, 'paid');
             DELETE FROM orders WHERE id = 1;",
        )
        .await
        .unwrap();
    crate::support::compare::converge(
        &db,
        "SELECT (SELECT string_agg(row_to_json(c)::text, ',') FROM customers c) || (SELECT string_agg(row_to_json(o)::text, ',') FROM orders o)",
    )
    .await;
    d.stop();
    drop_slot(&db).await;
}

#[tokio::test]
async fn a_cast_postgresql_cannot_do_is_rejected_at_start() {
    let db = fresh_db(pair()).await;
    db.source
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, u uuid)")
        .await
        .unwrap();
    db.target
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, u integer)")
        .await
        .unwrap();
    let (code, out) = crate::support::daemon::check(
        &db,
        "[[tables]]\nsource = \"public.t\"\n[tables.columns]\nu = { cast = \"integer\" }\n",
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no cast from uuid (u) to integer"), "{out}");
}

#[tokio::test]
async fn a_configured_key_must_be_not_null_and_in_the_replica_identity() {
    let db = fresh_db(pair()).await;
    db.on_both("CREATE TABLE k (id int PRIMARY KEY, code text UNIQUE, v int)")
        .await;
    let (code, out) =
        crate::support::daemon::check(&db, "[[tables]]\nsource = \"public.k\"\nkey = [\"code\"]\n");
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("key column code is nullable"), "{out}");
    assert!(out.contains("not in the replica identity"), "{out}");
}
